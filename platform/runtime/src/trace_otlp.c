/* trace_otlp.c - OTLP/HTTP protobuf encoding of spans (a small hand-written
 * wire-format writer; field numbers from opentelemetry/proto/trace/v1 and
 * common/v1) and the batch exporter: one bounded queue fed by any thread,
 * one exporter thread with its own loop and HTTP client. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/trace.h"
#include "trace_int.h"

/* ---- wire format ----
 * Each writer reserves its room once and stores bytes directly: spans are
 * encoded on the proxy's request path, and a call per byte showed up. */

static inline uint8_t *pb_room(sk_buf_t *b, size_t n) {
  if (b->cap - b->len <= n) sk_buf_reserve(b, n);
  return (uint8_t *)b->data + b->len;
}

static inline size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v > 0x7f) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

void sk__pb_varint(sk_buf_t *b, uint64_t v) { b->len += put_varint(pb_room(b, 10), v); }

void sk__pb_tag(sk_buf_t *b, unsigned field, unsigned wt) { sk__pb_varint(b, (uint64_t)field << 3 | wt); }

void sk__pb_uint(sk_buf_t *b, unsigned field, uint64_t v) {
  uint8_t *p = pb_room(b, 20);
  size_t n = put_varint(p, (uint64_t)field << 3 | SK__PB_VARINT);
  b->len += n + put_varint(p + n, v);
}

void sk__pb_fixed64(sk_buf_t *b, unsigned field, uint64_t v) {
  uint8_t *p = pb_room(b, 18);
  size_t n = put_varint(p, (uint64_t)field << 3 | SK__PB_I64);
  for (int i = 0; i < 8; i++) p[n + i] = (uint8_t)(v >> (8 * i));
  b->len += n + 8;
}

void sk__pb_fixed32(sk_buf_t *b, unsigned field, uint32_t v) {
  uint8_t *p = pb_room(b, 14);
  size_t n = put_varint(p, (uint64_t)field << 3 | SK__PB_I32);
  for (int i = 0; i < 4; i++) p[n + i] = (uint8_t)(v >> (8 * i));
  b->len += n + 4;
}

void sk__pb_bytes(sk_buf_t *b, unsigned field, const void *data, size_t len) {
  uint8_t *p = pb_room(b, 20 + len);
  size_t n = put_varint(p, (uint64_t)field << 3 | SK__PB_LEN);
  n += put_varint(p + n, len);
  if (len) memcpy(p + n, data, len);
  b->len += n + len;
}

void sk__pb_str(sk_buf_t *b, unsigned field, const char *s) { sk__pb_bytes(b, field, s, strlen(s)); }

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v > 0x7f) {
    v >>= 7;
    n++;
  }
  return n;
}

/* KeyValue{key=1, value=2 AnyValue{<vfield>: payload}} as field `field`,
 * payload already encoded (pay_len bytes, wire type wt). */
static void kv_any(sk_buf_t *b, unsigned field, const char *k, unsigned vfield, unsigned wt, const void *pay,
                   size_t pay_len) {
  size_t kl = strlen(k);
  size_t any = varint_len((uint64_t)vfield << 3 | wt) + (wt == SK__PB_LEN ? varint_len(pay_len) : 0) + pay_len;
  size_t kv = 1 + varint_len(kl) + kl + 1 + varint_len(any) + any;
  uint8_t *p = pb_room(b, 10 + varint_len(kv) + kv);
  size_t n = put_varint(p, (uint64_t)field << 3 | SK__PB_LEN);
  n += put_varint(p + n, kv);
  p[n++] = 1 << 3 | SK__PB_LEN; /* key */
  n += put_varint(p + n, kl);
  memcpy(p + n, k, kl);
  n += kl;
  p[n++] = 2 << 3 | SK__PB_LEN; /* value */
  n += put_varint(p + n, any);
  n += put_varint(p + n, (uint64_t)vfield << 3 | wt);
  if (wt == SK__PB_LEN) n += put_varint(p + n, pay_len);
  memcpy(p + n, pay, pay_len);
  b->len += n + pay_len;
}

void sk__pb_kv_str(sk_buf_t *b, unsigned field, const char *k, const char *v, size_t vlen) {
  kv_any(b, field, k, 1, SK__PB_LEN, v, vlen);
}

void sk__pb_kv_scalar(sk_buf_t *b, unsigned field, const char *k, unsigned vfield, int fixed64, uint64_t raw) {
  uint8_t pay[10];
  size_t n;
  if (fixed64) {
    for (int i = 0; i < 8; i++) pay[i] = (uint8_t)(raw >> (8 * i));
    n = 8;
  } else {
    n = put_varint(pay, raw);
  }
  kv_any(b, field, k, vfield, fixed64 ? SK__PB_I64 : SK__PB_VARINT, pay, n);
}

void sk_otlp_trace_request(sk_buf_t *out, const char *service_name, const char *service_version,
                           const void *spans_pb, size_t spans_len) {
  sk_buf_t res, scope, ss, rs;
  sk_buf_init(&res);
  sk_buf_init(&scope);
  sk_buf_init(&ss);
  sk_buf_init(&rs);
  /* Resource{attributes=1} */
  const char *svc = service_name ? service_name : "unknown_service";
  sk__pb_kv_str(&res, 1, "service.name", svc, strlen(svc));
  if (service_version && *service_version)
    sk__pb_kv_str(&res, 1, "service.version", service_version, strlen(service_version));
  sk__pb_kv_str(&res, 1, "telemetry.sdk.name", "skiff", 5);
  sk__pb_kv_str(&res, 1, "telemetry.sdk.language", "c", 1);
  /* InstrumentationScope{name=1, version=2} */
  sk__pb_str(&scope, 1, "skiff");
  if (service_version && *service_version) sk__pb_str(&scope, 2, service_version);
  /* ScopeSpans{scope=1, spans=2 (already encoded)} */
  sk__pb_bytes(&ss, 1, scope.data, scope.len);
  if (spans_len) sk_buf_append(&ss, spans_pb, spans_len);
  /* ResourceSpans{resource=1, scope_spans=2} */
  sk__pb_bytes(&rs, 1, res.data, res.len);
  sk__pb_bytes(&rs, 2, ss.data, ss.len);
  /* ExportTraceServiceRequest{resource_spans=1} */
  sk__pb_bytes(out, 1, rs.data, rs.len);
  sk_buf_done(&res);
  sk_buf_done(&scope);
  sk_buf_done(&ss);
  sk_buf_done(&rs);
}

/* ---- the tracer ----
 *
 * Spans travel: worker thread -> its own stage (a small buffer with its own
 * mutex, found through a thread-local) -> every stage_max spans, or when the
 * exporter collects on its tick, the shared queue -> a request body. So
 * workers never wait on each other; the shared mutex is taken once per
 * stage_max spans. `pending` (staged + queued) enforces max_queue. */

#define SK_TRACE_STAGE_SPANS 32
#define SK_TRACE_MAX_STAGES 256

typedef struct trace_stage {
  uv_mutex_t mu;
  sk_buf_t buf; /* "spans" fields, as in the queue */
  size_t n;
  struct trace_stage *next;
} trace_stage_t;

static _Atomic uint64_t tracer_ids;
static _Thread_local struct {
  uint64_t id; /* the tracer the stage belongs to (ids are never reused) */
  trace_stage_t *st;
} tl_stage;

struct sk_tracer {
  uint64_t id;
  uv_mutex_t stages_mu;
  trace_stage_t *stages;
  size_t nstages, stage_max;
  _Atomic size_t pending;
  char *service_name, *service_version;
  char *host, *path;
  int port, has_endpoint;
  sk_tls_ctx_t *tls;
  double ratio;
  size_t max_queue, max_batch;
  uint64_t flush_ms, timeout_ms, max_backoff_ms;
  unsigned max_retries;
  /* the queue: "spans" fields (tag 2, length, Span) back to back */
  uv_mutex_t mu;
  sk_buf_t q;
  size_t qn;
  /* the exporter thread */
  int started;
  uv_thread_t thr;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t tick, retry, stop_timer;
  sk_http_client_t *cl;
  atomic_int stop, flush_now;
  int stopping, closing, inflight, backoff;
  sk_buf_t body;   /* the request being sent (kept for retries) */
  size_t body_n;   /* spans in it */
  unsigned tries;
  /* stats */
  _Atomic uint64_t ended, exported, dropped, requests, failures;
};

double sk_tracer_sample_ratio(const sk_tracer_t *t) { return t ? t->ratio : 0; }

/* This thread's stage for t, made on first use; NULL past the limit. */
static trace_stage_t *my_stage(sk_tracer_t *t) {
  if (tl_stage.id == t->id) return tl_stage.st;
  trace_stage_t *st = NULL;
  uv_mutex_lock(&t->stages_mu);
  if (t->nstages < SK_TRACE_MAX_STAGES) {
    st = sk_xcalloc(1, sizeof *st);
    uv_mutex_init(&st->mu);
    sk_buf_init(&st->buf);
    st->next = t->stages;
    t->stages = st;
    t->nstages++;
  }
  uv_mutex_unlock(&t->stages_mu);
  if (st) {
    tl_stage.id = t->id;
    tl_stage.st = st;
  }
  return st;
}

/* Moves a stage's spans to the queue: caller holds st->mu. 1 when the
 * queue just reached a batch. */
static int stage_hand_over(sk_tracer_t *t, trace_stage_t *st) {
  if (!st->n) return 0;
  uv_mutex_lock(&t->mu);
  size_t before = t->qn;
  sk_buf_append(&t->q, st->buf.data, st->buf.len);
  t->qn += st->n;
  int full = before < t->max_batch && t->qn >= t->max_batch;
  uv_mutex_unlock(&t->mu);
  sk_buf_reset(&st->buf);
  st->n = 0;
  return full;
}

void sk__tracer_enqueue(sk_tracer_t *t, const void *span_pb, size_t len) {
  if (!t) return;
  atomic_fetch_add_explicit(&t->ended, 1, memory_order_relaxed);
  if (!t->has_endpoint ||
      atomic_fetch_add_explicit(&t->pending, 1, memory_order_relaxed) >= t->max_queue) {
    if (t->has_endpoint) atomic_fetch_sub_explicit(&t->pending, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
    return;
  }
  int kick = 0;
  trace_stage_t *st = my_stage(t);
  if (st) {
    uv_mutex_lock(&st->mu); /* only the exporter's collection ever waits here */
    sk__pb_bytes(&st->buf, 2, span_pb, len);
    if (++st->n >= t->stage_max) kick = stage_hand_over(t, st);
    uv_mutex_unlock(&st->mu);
  } else { /* more threads than stages: straight to the queue */
    uv_mutex_lock(&t->mu);
    sk__pb_bytes(&t->q, 2, span_pb, len);
    kick = ++t->qn == t->max_batch;
    uv_mutex_unlock(&t->mu);
  }
  if (kick && t->started && !atomic_load(&t->stop)) uv_async_send(&t->wake);
}

/* The exporter's side: every stage's spans into the queue. */
static void collect_stages(sk_tracer_t *t) {
  uv_mutex_lock(&t->stages_mu);
  for (trace_stage_t *st = t->stages; st; st = st->next) {
    uv_mutex_lock(&st->mu);
    stage_hand_over(t, st);
    uv_mutex_unlock(&st->mu);
  }
  uv_mutex_unlock(&t->stages_mu);
}

void sk_tracer_stats(sk_tracer_t *t, sk_tracer_stats_t *o) {
  memset(o, 0, sizeof *o);
  if (!t) return;
  o->spans_ended = atomic_load(&t->ended);
  o->spans_exported = atomic_load(&t->exported);
  o->spans_dropped = atomic_load(&t->dropped);
  o->export_requests = atomic_load(&t->requests);
  o->export_failures = atomic_load(&t->failures);
  o->queued = atomic_load(&t->pending);
}

void sk_tracer_flush(sk_tracer_t *t) {
  if (!t || !t->started) return;
  atomic_store(&t->flush_now, 1);
  uv_async_send(&t->wake);
}

/* Reads one varint at *p (bounded by end); 0 on success. */
static int rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (int sh = 0; sh < 64 && *p < end; sh += 7) {
    uint8_t c = *(*p)++;
    x |= (uint64_t)(c & 0x7f) << sh;
    if (!(c & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

static void send_body(sk_tracer_t *t);
static void shutdown_exporter(sk_tracer_t *t);

/* Takes up to max_batch spans from the queue into a request body. */
static void kick(sk_tracer_t *t) {
  if (t->inflight || t->backoff || t->closing || !t->cl) return;
  collect_stages(t);
  uv_mutex_lock(&t->mu);
  if (!t->qn) {
    uv_mutex_unlock(&t->mu);
    if (t->stopping) shutdown_exporter(t);
    return;
  }
  size_t take = t->qn < t->max_batch ? t->qn : t->max_batch, bytes = t->q.len;
  if (take < t->qn) {
    const uint8_t *p = (const uint8_t *)t->q.data, *end = p + t->q.len;
    for (size_t i = 0; i < take; i++) {
      uint64_t tag, len;
      if (rd_varint(&p, end, &tag) < 0 || rd_varint(&p, end, &len) < 0 || len > (uint64_t)(end - p)) break;
      p += len;
    }
    bytes = (size_t)(p - (const uint8_t *)t->q.data);
  }
  sk_buf_reset(&t->body);
  sk_otlp_trace_request(&t->body, t->service_name, t->service_version, t->q.data, bytes);
  sk_buf_consume(&t->q, bytes);
  t->qn -= take;
  uv_mutex_unlock(&t->mu);
  atomic_fetch_sub(&t->pending, take);
  t->body_n = take;
  t->tries = 0;
  send_body(t);
}

static uint64_t retry_after_ms(const sk_http_resp_t *r) {
  const char *v = r ? sk_http_headers_get(&r->headers, "retry-after") : NULL;
  if (!v || !*v) return 0;
  char *e;
  unsigned long long s = strtoull(v, &e, 10);
  if (*e || s > 86400) return 0; /* an HTTP-date or junk: use our own backoff */
  return (uint64_t)s * 1000;
}

static void on_retry(uv_timer_t *h) {
  sk_tracer_t *t = h->data;
  t->backoff = 0;
  if (t->closing) return;
  send_body(t);
}

static void batch_done(sk_tracer_t *t, int ok) {
  if (ok) atomic_fetch_add(&t->exported, t->body_n);
  else atomic_fetch_add(&t->dropped, t->body_n);
  t->body_n = 0;
  sk_buf_reset(&t->body);
}

static void on_export(int err, sk_http_resp_t *resp, void *ud) {
  sk_tracer_t *t = ud;
  t->inflight = 0;
  int status = resp ? resp->status : 0;
  if (err == 0 && status >= 200 && status < 300) {
    batch_done(t, 1);
  } else {
    atomic_fetch_add(&t->failures, 1);
    int retryable = err < 0 || status == 429 || status == 502 || status == 503 || status == 504;
    if (!retryable || t->closing || t->stopping || t->tries >= t->max_retries) {
      batch_done(t, 0);
    } else {
      uint64_t ms = 100ull << (t->tries < 10 ? t->tries : 10);
      uint64_t jitter;
      sk_trace_random(&jitter, sizeof jitter);
      ms += jitter % (ms / 2 + 1);
      uint64_t ra = retry_after_ms(resp);
      if (ra) ms = ra;
      if (ms > t->max_backoff_ms) ms = t->max_backoff_ms;
      t->tries++;
      t->backoff = 1;
      uv_timer_start(&t->retry, on_retry, ms, 0);
      return;
    }
  }
  if (t->closing) return;
  uv_mutex_lock(&t->mu);
  int more = t->qn >= t->max_batch || (t->stopping && t->qn > 0);
  uv_mutex_unlock(&t->mu);
  if (more || t->stopping) kick(t);
}

static void send_body(sk_tracer_t *t) {
  sk_http_header_t h = {"content-type", "application/x-protobuf"};
  atomic_fetch_add(&t->requests, 1);
  t->inflight = 1;
  int rc = sk_http_client_request(t->cl, "POST", t->path, &h, 1, t->body.data, t->body.len, on_export, t);
  if (rc < 0) on_export(rc, NULL, t);
}

static void on_tick(uv_timer_t *h) { kick(h->data); }

static void on_close(uv_handle_t *h) { (void)h; }

static void shutdown_exporter(sk_tracer_t *t) {
  if (t->closing) return;
  t->closing = 1;
  sk_http_client_t *cl = t->cl;
  t->cl = NULL;
  sk_http_client_free(cl); /* an in-flight request ends with SK_ECANCELED: dropped */
  if (t->body_n) batch_done(t, 0);
  uv_close((uv_handle_t *)&t->wake, on_close);
  uv_close((uv_handle_t *)&t->tick, on_close);
  uv_close((uv_handle_t *)&t->retry, on_close);
  uv_close((uv_handle_t *)&t->stop_timer, on_close);
}

static void on_stop_timeout(uv_timer_t *h) { shutdown_exporter(h->data); }

static void on_wake(uv_async_t *a) {
  sk_tracer_t *t = a->data;
  if (atomic_load(&t->stop) && !t->stopping) {
    t->stopping = 1;
    uv_timer_stop(&t->tick);
    uv_timer_start(&t->stop_timer, on_stop_timeout, t->timeout_ms, 0);
    if (t->backoff) { /* no more retries: give the queue its one last chance */
      uv_timer_stop(&t->retry);
      t->backoff = 0;
      batch_done(t, 0);
    }
    if (!t->inflight) kick(t);
    return;
  }
  if (atomic_exchange(&t->flush_now, 0) || !t->stopping) kick(t);
}

static void exporter_main(void *arg) {
  sk_tracer_t *t = arg;
  uv_run(&t->loop, UV_RUN_DEFAULT);
}

/* "http://h:p/path", "https://[::1]:p". */
static int parse_endpoint(sk_tracer_t *t, const char *url) {
  int tls;
  const char *p;
  if (!strncmp(url, "http://", 7)) {
    tls = 0;
    p = url + 7;
  } else if (!strncmp(url, "https://", 8)) {
    tls = 1;
    p = url + 8;
  } else {
    return SK_EINVAL;
  }
  if (tls && !t->tls) return SK_EINVAL;
  if (!tls && t->tls) {
    sk_tls_ctx_unref(t->tls);
    t->tls = NULL;
  }
  const char *slash = strchr(p, '/');
  size_t hl = slash ? (size_t)(slash - p) : strlen(p);
  const char *hp = p, *colon = NULL;
  size_t hostlen;
  if (*hp == '[') {
    const char *rb = memchr(hp, ']', hl);
    if (!rb) return SK_EINVAL;
    hostlen = (size_t)(rb - hp - 1);
    hp++;
    if (rb + 1 < p + hl) {
      if (rb[1] != ':') return SK_EINVAL;
      colon = rb + 1;
    }
  } else {
    colon = memchr(hp, ':', hl);
    hostlen = colon ? (size_t)(colon - hp) : hl;
  }
  if (hostlen == 0 || hostlen > 255) return SK_EINVAL;
  int port = tls ? 443 : 4318;
  if (colon) {
    char *e;
    long v = strtol(colon + 1, &e, 10);
    if (e != p + hl || v <= 0 || v > 65535) return SK_EINVAL;
    port = (int)v;
  }
  t->host = sk_xstrndup(hp, hostlen);
  t->port = port;
  t->path = sk_xstrdup(slash && slash[1] ? slash : "/v1/traces");
  return 0;
}

int sk_tracer_new(const sk_tracer_opts_t *o, sk_tracer_t **out) {
  if (!o || !out || !o->service_name || !*o->service_name) return SK_EINVAL;
  if (o->sample_ratio > 1 || o->sample_ratio != o->sample_ratio) return SK_EINVAL;
  int rc = 0;
  sk_tracer_t *t = sk_xcalloc(1, sizeof *t);
  t->service_name = sk_xstrdup(o->service_name);
  t->service_version = o->service_version ? sk_xstrdup(o->service_version) : NULL;
  t->ratio = o->sample_ratio < 0 ? 1.0 : o->sample_ratio;
  t->max_queue = o->max_queue ? o->max_queue : 2048;
  t->max_batch = o->max_batch ? o->max_batch : 512;
  t->flush_ms = o->flush_interval_ms ? o->flush_interval_ms : 1000;
  t->timeout_ms = o->timeout_ms ? o->timeout_ms : 10000;
  t->max_retries = o->max_retries ? o->max_retries : 5;
  t->max_backoff_ms = o->max_backoff_ms ? o->max_backoff_ms : 30000;
  t->tls = o->tls ? sk_tls_ctx_ref(o->tls) : NULL;
  uv_mutex_init(&t->mu);
  uv_mutex_init(&t->stages_mu);
  t->id = atomic_fetch_add(&tracer_ids, 1) + 1;
  t->stage_max = t->max_batch < SK_TRACE_STAGE_SPANS ? t->max_batch : SK_TRACE_STAGE_SPANS;
  sk_buf_init(&t->q);
  sk_buf_init(&t->body);
  if (!o->endpoint || !*o->endpoint) goto out;
  rc = parse_endpoint(t, o->endpoint);
  if (rc < 0) goto out;
  t->has_endpoint = 1;
  /* room for a full queue of typical spans up front, so a burst never
   * reallocates (and copies) the queue while workers wait on the mutex;
   * untouched pages cost no memory */
  size_t want = t->max_queue < (64u << 20) / 384 ? t->max_queue * 384 : (64u << 20);
  sk_buf_reserve(&t->q, want);
  rc = uv_loop_init(&t->loop);
  if (rc < 0) {
    rc = SK_ENOMEM;
    goto out;
  }
  sk_http_client_opts_t co = {.host = t->host,
                              .port = t->port,
                              .tls = t->tls,
                              .sni = t->tls ? t->host : NULL,
                              .max_conns = 2,
                              .request_timeout_ms = t->timeout_ms,
                              .connect_timeout_ms = t->timeout_ms < 5000 ? t->timeout_ms : 5000};
  rc = sk_http_client_new(&t->loop, &co, &t->cl);
  if (rc < 0) {
    uv_loop_close(&t->loop);
    goto out;
  }
  uv_async_init(&t->loop, &t->wake, on_wake);
  uv_timer_init(&t->loop, &t->tick);
  uv_timer_init(&t->loop, &t->retry);
  uv_timer_init(&t->loop, &t->stop_timer);
  t->wake.data = t->tick.data = t->retry.data = t->stop_timer.data = t;
  uv_timer_start(&t->tick, on_tick, t->flush_ms, t->flush_ms);
  if (uv_thread_create(&t->thr, exporter_main, t) != 0) {
    shutdown_exporter(t);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    rc = SK_ENOMEM;
    goto out;
  }
  t->started = 1;
out:
  if (rc < 0) {
    t->has_endpoint = 0;
    sk_tracer_free(t);
    t = NULL;
  }
  *out = t;
  return rc;
}

void sk_tracer_free(sk_tracer_t *t) {
  if (!t) return;
  if (t->started) {
    atomic_store(&t->stop, 1);
    uv_async_send(&t->wake);
    uv_thread_join(&t->thr);
    uv_loop_close(&t->loop);
  }
  size_t left = atomic_load(&t->pending); /* staged or queued, never sent */
  if (left) atomic_fetch_add(&t->dropped, left);
  for (trace_stage_t *st = t->stages, *nx; st; st = nx) {
    nx = st->next;
    sk_buf_done(&st->buf);
    uv_mutex_destroy(&st->mu);
    free(st);
  }
  uv_mutex_destroy(&t->stages_mu);
  t->qn = 0;
  sk_buf_done(&t->q);
  sk_buf_done(&t->body);
  uv_mutex_destroy(&t->mu);
  sk_tls_ctx_unref(t->tls);
  free(t->service_name);
  free(t->service_version);
  free(t->host);
  free(t->path);
  free(t);
}
