/* skiff-telemetry: OTLP forwarding to other OTLP/HTTP receivers.
 *
 * What was stored and acknowledged here is handed, as OTLP protobuf, to
 * every `forward` target that takes its signal. Per target and signal:
 *
 *   - a bounded FIFO of encoded Export*ServiceRequest messages
 *     (max_queue_bytes per target; a message that does not fit is dropped
 *     and counted, reason "queue_full");
 *   - batching: messages are concatenated into one request of at most
 *     max_batch_bytes (protobuf concatenation of two messages of the same
 *     type merges their repeated fields, so the batch is itself one valid
 *     request); a partial batch leaves after batch_delay;
 *   - one request in flight; 2xx completes it; 429, 5xx and transport
 *     failures retry with exponential backoff (min_backoff doubling up to
 *     max_backoff), or after Retry-After seconds when the answer has one;
 *     a batch still failing after max_retry_time is dropped
 *     ("retries_exhausted"); any other answer drops it ("rejected").
 *
 * The queue lives in memory: forwarding is best effort and what is queued
 * at shutdown or crash is not sent (it is on this instance's disk). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/tls.h"
#include "tl_int.h"

static const char *const fw_sig_names[TL_FWD_SIG_N] = {"traces", "metrics", "logs"};
static const char *const fw_paths[TL_FWD_SIG_N] = {"/v1/traces", "/v1/metrics", "/v1/logs"};

typedef struct fw_item {
  struct fw_item *next;
  size_t len, items;
  uint8_t data[];
} fw_item_t;

typedef struct fw_target fw_target_t;

typedef struct fw_sig {
  fw_target_t *t;
  int sig;
  int enabled;
  fw_item_t *head, *tail;
  size_t nqueued;
  /* the batch being sent */
  uint8_t *batch;
  size_t batch_len, batch_items;
  int busy;           /* a batch exists (in flight or waiting for a retry) */
  int in_flight;      /* a request is outstanding */
  uint64_t first_try; /* loop time of the batch's first attempt */
  uint64_t backoff;
  uv_timer_t timer; /* batch delay, then retry delay */
  int timer_for_retry;
  sk_counter_t *sent, *retries;
  sk_counter_t *dropped[3]; /* queue_full, rejected, retries_exhausted */
} fw_sig_t;

enum { DROP_QUEUE_FULL, DROP_REJECTED, DROP_EXHAUSTED };
static const char *const drop_reasons[3] = {"queue_full", "rejected", "retries_exhausted"};

struct fw_target {
  tl_forwarder_t *fw;
  const tl_forward_cfg_t *cfg;
  char host[256];
  int port;
  char prefix[512];
  int tls;
  sk_tls_ctx_t *tls_ctx;
  char *auth; /* "Bearer <token>" or NULL */
  sk_http_client_t *client;
  size_t queued_bytes;
  sk_gauge_t *g_queued;
  fw_sig_t sig[TL_FWD_SIG_N];
};

struct tl_forwarder {
  uv_loop_t *loop;
  sk_logger_t *log;
  fw_target_t *t;
  size_t nt;
  int closing;
  int open_timers;
};

/* "http[s]://host[:port][/prefix]" -> parts; 0 or SK_EINVAL with a message. */
static int parse_endpoint(const char *s, char *host, size_t hostlen, int *port, int *tls, char *prefix, size_t plen,
                          char *msg, size_t msglen) {
  int https = s && !strncmp(s, "https://", 8);
  if (!s || (strncmp(s, "http://", 7) && !https)) {
    snprintf(msg, msglen, "must be http://host:port[/path] or https://... (got \"%s\")", s ? s : "");
    return SK_EINVAL;
  }
  *tls = https;
  const char *h = s + (https ? 8 : 7), *slash = strchr(h, '/'), *end = slash ? slash : h + strlen(h);
  const char *colon = NULL;
  if (*h == '[') {
    const char *rb = memchr(h, ']', (size_t)(end - h));
    if (!rb) goto bad;
    if ((size_t)(rb - h - 1) >= hostlen) goto bad;
    memcpy(host, h + 1, (size_t)(rb - h - 1));
    host[rb - h - 1] = 0;
    colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
  } else {
    for (const char *p = h; p < end; p++)
      if (*p == ':') colon = p;
    const char *he = colon ? colon : end;
    if (he == h || (size_t)(he - h) >= hostlen) goto bad;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = 0;
  }
  *port = https ? 443 : 80;
  if (colon) {
    char *e = NULL;
    long p = strtol(colon + 1, &e, 10);
    if (e != end || p < 1 || p > 65535) goto bad;
    *port = (int)p;
  }
  size_t pl = slash ? strlen(slash) : 0;
  while (pl && slash[pl - 1] == '/') pl--; /* "http://h:1/" and "http://h:1" are the same */
  if (pl >= plen) goto bad;
  if (pl) memcpy(prefix, slash, pl);
  prefix[pl] = 0;
  return 0;
bad:
  snprintf(msg, msglen, "bad endpoint \"%s\": want http[s]://host:port[/path]", s);
  return SK_EINVAL;
}

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

/* First line of path as "Bearer <token>" (path "" = none). */
static int read_token(const char *path, char **out, char *msg, size_t msglen) {
  *out = NULL;
  if (!path || !*path) return 0;
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(msg, msglen, "cannot open %s", path);
    return SK_EINVAL;
  }
  char tok[4096];
  int rc = 0;
  if (!fgets(tok, sizeof tok, f)) tok[0] = 0;
  fclose(f);
  size_t n = strcspn(tok, "\r\n");
  tok[n] = 0;
  if (!n) {
    snprintf(msg, msglen, "%s holds no token", path);
    rc = SK_EINVAL;
  } else {
    size_t len = n + 8;
    *out = sk_xmalloc(len);
    snprintf(*out, len, "Bearer %s", tok);
  }
  memset(tok, 0, sizeof tok);
  return rc;
}

int tl_forward_check_endpoint(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  char host[256], prefix[512];
  int port, tls;
  return parse_endpoint(s, host, sizeof host, &port, &tls, prefix, sizeof prefix, msg, msglen);
}

int tl_forward_check_signals(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  for (size_t i = 0; i < l->n; i++) {
    int ok = 0;
    for (int s = 0; s < TL_FWD_SIG_N; s++) ok |= !strcmp(l->v[i], fw_sig_names[s]);
    if (!ok) {
      snprintf(msg, msglen, "unknown signal \"%s\" (traces, metrics, logs)", l->v[i]);
      return SK_EINVAL;
    }
  }
  return 0;
}

static void drop(fw_sig_t *s, int reason, size_t items) {
  if (s->dropped[reason]) sk_counter_add(s->dropped[reason], (double)(items ? items : 1));
}

static void send_batch(fw_sig_t *s);
static void kick(fw_sig_t *s);

static void batch_done(fw_sig_t *s) {
  free(s->batch);
  s->batch = NULL;
  s->batch_len = s->batch_items = 0;
  s->busy = 0;
}

static void timer_cb(uv_timer_t *tm) {
  fw_sig_t *s = tm->data;
  if (s->t->fw->closing) return;
  /* a retry resends the current batch; the batch delay ended: send what is queued */
  if (!s->busy || s->timer_for_retry) send_batch(s);
}

static void arm(fw_sig_t *s, uint64_t ms, int retry) {
  s->timer_for_retry = retry;
  uv_timer_start(&s->timer, timer_cb, ms, 0);
}

static uint64_t retry_after_ms(const sk_http_resp_t *r) {
  const char *v = r ? sk_http_headers_get(&r->headers, "retry-after") : NULL;
  if (!v) return 0;
  char *e = NULL;
  unsigned long long n = strtoull(v, &e, 10);
  if (e == v || *e) return 0; /* an HTTP date: fall back to the backoff */
  return n > 3600 ? 3600000ull : (uint64_t)n * 1000;
}

static void resp_cb(int err, sk_http_resp_t *resp, void *ud) {
  fw_sig_t *s = ud;
  fw_target_t *t = s->t;
  tl_forwarder_t *fw = t->fw;
  s->in_flight = 0;
  if (fw->closing) {
    batch_done(s);
    return;
  }
  int status = err < 0 || !resp ? 0 : resp->status;
  if (status >= 200 && status < 300) {
    sk_counter_add(s->sent, (double)s->batch_items);
    batch_done(s);
    kick(s);
    return;
  }
  if (status && status != 429 && status < 500) {
    if (fw->log)
      sk_log_warn(fw->log, "forward to %s: %s batch of %zu items refused with HTTP %d, dropped", t->cfg->endpoint,
                  fw_sig_names[s->sig], s->batch_items, status);
    drop(s, DROP_REJECTED, s->batch_items);
    batch_done(s);
    kick(s);
    return;
  }
  uint64_t now = uv_now(fw->loop), delay = retry_after_ms(resp);
  if (!delay) {
    delay = s->backoff;
    s->backoff = s->backoff * 2 > t->cfg->max_backoff_ms ? t->cfg->max_backoff_ms : s->backoff * 2;
  }
  if (now + delay - s->first_try > t->cfg->max_retry_time_ms) {
    char last[64];
    if (status) snprintf(last, sizeof last, "HTTP %d", status);
    else snprintf(last, sizeof last, "%s", sk_strerror(err));
    if (fw->log)
      sk_log_warn(fw->log, "forward to %s: %s batch of %zu items dropped after retrying for %llu ms (last: %s)",
                  t->cfg->endpoint, fw_sig_names[s->sig], s->batch_items,
                  (unsigned long long)(now - s->first_try), last);
    drop(s, DROP_EXHAUSTED, s->batch_items);
    batch_done(s);
    kick(s);
    return;
  }
  sk_counter_inc(s->retries);
  arm(s, delay ? delay : 1, 1);
}

/* (Re)sends the current batch, building it from the queue first if needed. */
static void send_batch(fw_sig_t *s) {
  fw_target_t *t = s->t;
  if (!s->busy) {
    if (!s->head) return;
    size_t max = t->cfg->max_batch_bytes ? (size_t)t->cfg->max_batch_bytes : (4u << 20);
    size_t len = 0, n = 0;
    for (fw_item_t *it = s->head; it && (n == 0 || len + it->len <= max); it = it->next) {
      len += it->len;
      n++;
    }
    s->batch = sk_xmalloc(len ? len : 1);
    s->batch_len = 0;
    s->batch_items = 0;
    while (n--) {
      fw_item_t *it = s->head;
      s->head = it->next;
      if (!s->head) s->tail = NULL;
      s->nqueued -= it->len;
      t->queued_bytes -= it->len;
      sk_gauge_set(t->g_queued, (double)t->queued_bytes);
      memcpy(s->batch + s->batch_len, it->data, it->len);
      s->batch_len += it->len;
      s->batch_items += it->items;
      free(it);
    }
    s->busy = 1;
    s->first_try = uv_now(t->fw->loop);
    s->backoff = t->cfg->min_backoff_ms ? t->cfg->min_backoff_ms : 100;
  }
  char path[600];
  snprintf(path, sizeof path, "%s%s", t->prefix, fw_paths[s->sig]);
  sk_http_header_t h[] = {{"content-type", "application/x-protobuf"}, {"authorization", t->auth}};
  s->in_flight = 1;
  int rc = sk_http_client_request(t->client, "POST", path, h, t->auth ? 2 : 1, s->batch, s->batch_len, resp_cb, s);
  if (rc < 0) resp_cb(rc, NULL, s);
}

/* Sends when a full batch is waiting, else waits batch_delay for more. */
static void kick(fw_sig_t *s) {
  if (s->busy || !s->head || s->t->fw->closing) return;
  size_t max = s->t->cfg->max_batch_bytes ? (size_t)s->t->cfg->max_batch_bytes : (4u << 20);
  if (s->nqueued >= max || !s->t->cfg->batch_delay_ms) {
    uv_timer_stop(&s->timer);
    send_batch(s);
    return;
  }
  if (!uv_is_active((uv_handle_t *)&s->timer)) arm(s, s->t->cfg->batch_delay_ms, 0);
}

void tl_forward_push(tl_forwarder_t *fw, int sig, const uint8_t *data, size_t len, size_t items) {
  if (!fw || fw->closing || sig < 0 || sig >= TL_FWD_SIG_N || !len) return;
  for (size_t i = 0; i < fw->nt; i++) {
    fw_target_t *t = &fw->t[i];
    fw_sig_t *s = &t->sig[sig];
    if (!s->enabled) continue;
    if (t->queued_bytes + len > t->cfg->max_queue_bytes) {
      drop(s, DROP_QUEUE_FULL, items);
      continue;
    }
    fw_item_t *it = sk_xmalloc(sizeof *it + len);
    it->next = NULL;
    it->len = len;
    it->items = items;
    memcpy(it->data, data, len);
    if (s->tail) s->tail->next = it;
    else s->head = it;
    s->tail = it;
    s->nqueued += len;
    t->queued_bytes += len;
    sk_gauge_set(t->g_queued, (double)t->queued_bytes);
    kick(s);
  }
}

int tl_forward_wants(const tl_forwarder_t *fw, int sig) {
  if (!fw || sig < 0 || sig >= TL_FWD_SIG_N) return 0;
  for (size_t i = 0; i < fw->nt; i++)
    if (fw->t[i].sig[sig].enabled) return 1;
  return 0;
}

static int metrics_init(tl_forwarder_t *fw, sk_metrics_t *reg) {
  static const char *const l2[] = {"endpoint", "signal"}, *const l3[] = {"endpoint", "signal", "reason"},
                           *const l1[] = {"endpoint"};
  sk_mfamily_t *sent, *retries, *dropped, *queued;
  int rc;
  if ((rc = sk_metrics_counter_family(reg, "skiff_telemetry_forward_sent_total",
                                      "Items (spans, samples, log lines) forwarded and acknowledged by the target.",
                                      l2, 2, &sent)) < 0 ||
      (rc = sk_metrics_counter_family(reg, "skiff_telemetry_forward_retries_total",
                                      "Forward requests retried after 429, 5xx or a transport error.", l2, 2,
                                      &retries)) < 0 ||
      (rc = sk_metrics_counter_family(reg, "skiff_telemetry_forward_dropped_total",
                                      "Items not forwarded, by reason (queue_full, rejected, retries_exhausted).",
                                      l3, 3, &dropped)) < 0 ||
      (rc = sk_metrics_gauge_family(reg, "skiff_telemetry_forward_queue_bytes",
                                    "Encoded OTLP bytes waiting to be forwarded.", l1, 1, &queued)) < 0)
    return rc;
  for (size_t i = 0; i < fw->nt; i++) {
    fw_target_t *t = &fw->t[i];
    const char *ev[] = {t->cfg->endpoint};
    if ((rc = sk_gauge_with(queued, ev, &t->g_queued)) < 0) return rc;
    for (int s = 0; s < TL_FWD_SIG_N; s++) {
      if (!t->sig[s].enabled) continue;
      const char *v[] = {t->cfg->endpoint, fw_sig_names[s], NULL};
      if ((rc = sk_counter_with(sent, v, &t->sig[s].sent)) < 0) return rc;
      if ((rc = sk_counter_with(retries, v, &t->sig[s].retries)) < 0) return rc;
      for (int r = 0; r < 3; r++) {
        v[2] = drop_reasons[r];
        if ((rc = sk_counter_with(dropped, v, &t->sig[s].dropped[r])) < 0) return rc;
      }
    }
  }
  return 0;
}

int tl_forward_new(uv_loop_t *loop, const sk_cfg_list_t *cfgs, sk_metrics_t *reg, sk_logger_t *log,
                   tl_forwarder_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfgs || !cfgs->n) return 0;
  tl_forwarder_t *fw = sk_xcalloc(1, sizeof *fw);
  int rc = 0;
  fw->loop = loop;
  fw->log = log;
  fw->t = sk_xcalloc(cfgs->n, sizeof *fw->t);
  fw->nt = cfgs->n;
  for (size_t i = 0; i < cfgs->n; i++) {
    fw_target_t *t = &fw->t[i];
    t->fw = fw;
    t->cfg = SK_CFG_LIST_AT(*cfgs, tl_forward_cfg_t, i);
    char msg[300];
    if ((rc = parse_endpoint(t->cfg->endpoint, t->host, sizeof t->host, &t->port, &t->tls, t->prefix,
                             sizeof t->prefix, msg, sizeof msg)) < 0) {
      snprintf(err, errlen, "forward[%zu].endpoint: %s", i, msg);
      goto fail;
    }
    if ((rc = read_token(t->cfg->bearer_token_file, &t->auth, msg, sizeof msg)) < 0) {
      snprintf(err, errlen, "forward[%zu].bearer_token_file: %s", i, msg);
      goto fail;
    }
    if (t->tls) {
      sk_tls_opts_t to = {.is_server = 0,
                          .ca_file = nonempty(t->cfg->ca_file),
                          .cert_file = nonempty(t->cfg->cert_file),
                          .key_file = nonempty(t->cfg->key_file),
                          .verify = SK_TLS_VERIFY_REQUIRE};
      if ((rc = sk_tls_ctx_new(&to, &t->tls_ctx, msg, sizeof msg)) < 0) {
        snprintf(err, errlen, "forward[%zu]: %s", i, msg);
        goto fail;
      }
    }
    for (int s = 0; s < TL_FWD_SIG_N; s++) {
      fw_sig_t *fs = &t->sig[s];
      fs->t = t;
      fs->sig = s;
      fs->enabled = t->cfg->signals.n == 0;
      for (size_t k = 0; k < t->cfg->signals.n; k++)
        if (!strcmp(t->cfg->signals.v[k], fw_sig_names[s])) fs->enabled = 1;
      uv_timer_init(loop, &fs->timer);
      fs->timer.data = fs;
      fw->open_timers++;
    }
    sk_http_client_opts_t co = {.host = t->host,
                                .port = t->port,
                                .tls = t->tls_ctx,
                                .sni = t->tls ? t->host : NULL, /* also the name the certificate must carry */
                                .max_conns = TL_FWD_SIG_N,
                                .request_timeout_ms = t->cfg->timeout_ms ? t->cfg->timeout_ms : 10000};
    if ((rc = sk_http_client_new(loop, &co, &t->client)) < 0) {
      snprintf(err, errlen, "forward[%zu]: http client: %s", i, sk_strerror(rc));
      goto fail;
    }
  }
  if (reg && (rc = metrics_init(fw, reg)) < 0) {
    snprintf(err, errlen, "forward metrics: %s", sk_strerror(rc));
    goto fail;
  }
  *out = fw;
  return 0;
fail:
  tl_forward_free(fw);
  return rc;
}

static void timer_closed(uv_handle_t *h) {
  fw_sig_t *s = h->data;
  tl_forwarder_t *fw = s->t->fw;
  if (--fw->open_timers == 0) {
    free(fw->t);
    free(fw);
  }
}

void tl_forward_free(tl_forwarder_t *fw) {
  if (!fw) return;
  fw->closing = 1;
  for (size_t i = 0; i < fw->nt; i++) {
    fw_target_t *t = &fw->t[i];
    sk_http_client_free(t->client); /* runs resp_cb with SK_ECANCELED for a request in flight */
    t->client = NULL;
    sk_tls_ctx_unref(t->tls_ctx);
    t->tls_ctx = NULL;
    if (t->auth) {
      memset(t->auth, 0, strlen(t->auth));
      free(t->auth);
      t->auth = NULL;
    }
    for (int s = 0; s < TL_FWD_SIG_N; s++) {
      fw_sig_t *fs = &t->sig[s];
      batch_done(fs);
      while (fs->head) {
        fw_item_t *it = fs->head;
        fs->head = it->next;
        free(it);
      }
      fs->tail = NULL;
    }
  }
  int any = 0;
  for (size_t i = 0; i < fw->nt; i++)
    for (int s = 0; s < TL_FWD_SIG_N; s++)
      if (fw->t[i].sig[s].timer.data) {
        any = 1;
        uv_timer_stop(&fw->t[i].sig[s].timer);
        uv_close((uv_handle_t *)&fw->t[i].sig[s].timer, timer_closed);
      }
  if (!any) {
    free(fw->t);
    free(fw);
  }
}
