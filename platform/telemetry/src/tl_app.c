/* skiff-telemetry: listeners, routing, the serial ingest writer, self
 * metrics.
 *
 * Ingest requests become jobs on one FIFO. A single job at a time runs on
 * libuv's thread pool: it inflates and decodes the body, then writes it
 * (tsdb append + commit, or one sqlite transaction) and prepares the reply;
 * the loop sends the reply after the job finished, so a 200 always means
 * the data is on disk. A full queue (max_queue jobs or max_queue_bytes
 * bodies) answers 429 with Retry-After. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"
#include "tl_promql.h"

enum {
  TL_SIG_TRACES = 0,
  TL_SIG_METRICS,
  TL_SIG_LOGS,
  TL_SIG_N
};

typedef enum tl_job_kind {
  TL_JOB_OTLP_TRACES,
  TL_JOB_OTLP_METRICS,
  TL_JOB_OTLP_LOGS,
  TL_JOB_REMOTE_WRITE,
  TL_JOB_LOKI_PUSH,
  TL_JOB_SAMPLES, /* scraped samples */
  TL_JOB_MAINTAIN,
} tl_job_kind_t;

typedef struct tl_job tl_job_t;
struct tl_job {
  tl_app_t *app;
  tl_job_kind_t kind;
  sk_http_req_t *req; /* NULL once the client left, or for internal jobs */
  sk_pool_t *pool;
  const uint8_t *body;
  size_t len;
  int json;   /* request (and reply) in JSON */
  int gzip;
  tl_samples_t samples; /* TL_JOB_SAMPLES */
  /* results */
  int status;
  const char *ctype;
  const uint8_t *resp;
  size_t resp_len;
  const char *retry_after;
  size_t accepted, rejected;
  const uint8_t *fwd; /* the request as OTLP protobuf, to forward once stored */
  size_t fwd_len;
  char err[512];
  uv_work_t work;
  tl_job_t *next;
};

struct tl_app {
  uv_loop_t *loop;
  const tl_config_t *cfg;
  sk_logger_t *log;
  sk_metrics_t *reg;
  tl_tsdb_t *tsdb;
  tl_sigdb_t *sig;
  sk_http_server_t *otlp, *query;
  tl_query_api_opts_t qopts;
  tl_scraper_t *scraper;
  tl_forwarder_t *fwd;
  tl_kafka_t *kafka;
  tl_job_t *head, *tail;
  size_t depth, bytes;
  int running;
  uv_timer_t maint;
  int maint_pending;
  /* drain */
  int draining, drained_servers;
  void (*drain_cb)(void *ud);
  void *drain_ud;
  /* self metrics */
  sk_counter_t *accepted[TL_SIG_N], *rejected[TL_SIG_N];
  sk_mfamily_t *refused; /* {reason} */
  sk_gauge_t *g_queue, *g_queue_bytes, *g_disk, *g_series, *g_head_samples;
  sk_counter_t *c_samples_appended;
};

static const char *sig_names[TL_SIG_N] = {"traces", "metrics", "logs"};

/* ---- self metrics ---- */

static void collect(sk_metrics_t *m, void *ud) {
  tl_app_t *a = ud;
  tl_tsdb_stats_t st;
  memset(&st, 0, sizeof st);
  if (a->tsdb) tl_tsdb_stats(a->tsdb, &st);
  sk_gauge_set(a->g_queue, (double)a->depth);
  sk_gauge_set(a->g_queue_bytes, (double)a->bytes);
  sk_gauge_set(a->g_series, (double)st.series);
  sk_gauge_set(a->g_head_samples, (double)st.head_samples);
  sk_gauge_set(a->g_disk, (double)(st.disk_bytes + (a->sig ? tl_sigdb_disk_bytes(a->sig) : 0)));
}

static int metrics_init(tl_app_t *a) {
  sk_metrics_t *r = a->reg;
  int rc;
  static const char *const sig_l[] = {"signal"}, *const reason_l[] = {"reason"};
  sk_mfamily_t *acc, *rej;
  if ((rc = sk_metrics_counter_family(r, "skiff_telemetry_accepted_total",
                                      "Items stored and acknowledged (spans, samples, log lines).", sig_l, 1, &acc)) < 0)
    return rc;
  if ((rc = sk_metrics_counter_family(r, "skiff_telemetry_rejected_total",
                                      "Items refused as invalid or over a limit (reported as partial success).",
                                      sig_l, 1, &rej)) < 0)
    return rc;
  for (int i = 0; i < TL_SIG_N; i++) {
    const char *v[] = {sig_names[i]};
    if ((rc = sk_counter_with(acc, v, &a->accepted[i])) < 0) return rc;
    if ((rc = sk_counter_with(rej, v, &a->rejected[i])) < 0) return rc;
  }
  if ((rc = sk_metrics_counter_family(r, "skiff_telemetry_dropped_requests_total",
                                      "Ingest requests answered without storing anything, by reason "
                                      "(queue_full, draining, too_large, bad_request, storage).",
                                      reason_l, 1, &a->refused)) < 0)
    return rc;
  if ((rc = sk_metrics_gauge(r, "skiff_telemetry_queue_depth", "Ingest jobs waiting for or in the writer.",
                             &a->g_queue)) < 0)
    return rc;
  if ((rc = sk_metrics_gauge(r, "skiff_telemetry_queue_bytes", "Request bytes held by queued ingest jobs.",
                             &a->g_queue_bytes)) < 0)
    return rc;
  if ((rc = sk_metrics_gauge(r, "skiff_telemetry_storage_bytes",
                             "Bytes on disk: metrics WAL and files plus the span/log database.", &a->g_disk)) < 0)
    return rc;
  if ((rc = sk_metrics_gauge(r, "skiff_telemetry_series", "Live metric series in the store.", &a->g_series)) < 0)
    return rc;
  if ((rc = sk_metrics_gauge(r, "skiff_telemetry_head_samples", "Metric samples held in memory.",
                             &a->g_head_samples)) < 0)
    return rc;
  return sk_metrics_on_collect(r, collect, a);
}

static void count_refused(tl_app_t *a, const char *reason) {
  sk_counter_t *c = NULL;
  const char *v[] = {reason};
  if (a->refused && sk_counter_with(a->refused, v, &c) == 0) sk_counter_inc(c);
}

/* ---- replies prepared on the worker ---- */

static void set_reply(tl_job_t *j, int status, const char *ctype, const void *body, size_t len) {
  j->status = status;
  j->ctype = ctype;
  j->resp = body;
  j->resp_len = len;
}

static void set_text(tl_job_t *j, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_text(tl_job_t *j, int status, const char *fmt, ...) {
  /* formatted aside first: callers pass j->err itself as an argument */
  char m[sizeof j->err];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  memcpy(j->err, m, sizeof m);
  char *b = sk_pool_printf(j->pool, "%s\n", j->err);
  set_reply(j, status, "text/plain; charset=utf-8", b, strlen(b));
}

/* OTLP error: a google.rpc.Status in the request's encoding. grpc codes:
 * 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE. */
static void set_status(tl_job_t *j, int http, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void set_status(tl_job_t *j, int http, int code, const char *fmt, ...) {
  char m[sizeof j->err]; /* as in set_text: the arguments may be j->err */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(m, sizeof m, fmt, ap);
  va_end(ap);
  memcpy(j->err, m, sizeof m);
  Rpc__Status st = RPC__STATUS__INIT;
  st.has_code = 1;
  st.code = code;
  st.message = j->err;
  if (j->json) {
    json_t *o = tl_pb_to_json(&st.base);
    sk_buf_t b;
    sk_buf_init(&b);
    sk_json_dump_buf(o, &b);
    json_decref(o);
    set_reply(j, http, "application/json", sk_pool_memdup(j->pool, b.data ? b.data : "", b.len), b.len);
    sk_buf_done(&b);
  } else {
    size_t n;
    uint8_t *p = tl_pb_pack(j->pool, &st.base, &n);
    set_reply(j, http, "application/x-protobuf", p, n);
  }
}

static void set_otlp_ok(tl_job_t *j, ProtobufCMessage *resp) {
  if (j->json) {
    json_t *o = tl_pb_to_json(resp);
    sk_buf_t b;
    sk_buf_init(&b);
    sk_json_dump_buf(o, &b);
    json_decref(o);
    set_reply(j, 200, "application/json", sk_pool_memdup(j->pool, b.data ? b.data : "", b.len), b.len);
    sk_buf_done(&b);
  } else {
    size_t n;
    uint8_t *p = tl_pb_pack(j->pool, resp, &n);
    set_reply(j, 200, "application/x-protobuf", p, n);
  }
}

/* Keeps the decoded request as protobuf for the forwarder (the body as
 * received when it already is protobuf). Worker thread. */
static void keep_for_forward(tl_job_t *j, int sig, const ProtobufCMessage *m, const uint8_t *body, size_t len) {
  if (!tl_forward_wants(j->app->fwd, sig) && !tl_kafka_wants(j->app->kafka, sig)) return;
  if (j->json) j->fwd = tl_pb_pack(j->pool, m, &j->fwd_len);
  else {
    j->fwd = body;
    j->fwd_len = len;
  }
}

/* Samples -> tsdb, then commit. Returns < 0 when the commit failed. */
static int store_samples(tl_job_t *j, tl_samples_t *s) {
  tl_app_t *a = j->app;
  tl_append_result_t res;
  memset(&res, 0, sizeof res);
  if (s->n) tl_tsdb_append_batch(a->tsdb, s->v, s->n, &res);
  j->accepted = res.accepted;
  j->rejected = s->rejected + res.rejected_limit + res.rejected_invalid + res.rejected_order;
  if (!j->err[0]) snprintf(j->err, sizeof j->err, "%s", s->rejected ? s->first_error : res.first_error);
  int rc = tl_tsdb_commit(a->tsdb);
  if (rc < 0) {
    char m[256];
    tl_tsdb_errmsg(a->tsdb, m, sizeof m);
    snprintf(j->err, sizeof j->err, "metrics store commit failed: %s", m);
    j->accepted = 0;
  }
  return rc;
}

/* Age cutoff in ns for spans or logs: their own retention, else the
 * metrics one, else the 15d default; 0 when now is too early to matter. */
static int64_t sig_cutoff_ns(const tl_config_t *cfg, uint64_t own_ms, int64_t now_ms) {
  uint64_t ms = own_ms ? own_ms : cfg->retention_ms ? cfg->retention_ms : 15ull * 24 * 3600 * 1000;
  if (ms > (uint64_t)INT64_MAX / 1000000 || (int64_t)ms >= now_ms) return 0;
  return (now_ms - (int64_t)ms) * 1000000;
}

int tl_app_maintain(tl_app_t *a, int64_t now_ms, char *err, size_t errlen) {
  tl_tsdb_maintain(a->tsdb, now_ms);
  if (now_ms > INT64_MAX / 1000000) now_ms = INT64_MAX / 1000000;
  tl_sigdb_expired_t ex;
  return tl_sigdb_expire(a->sig, sig_cutoff_ns(a->cfg, a->cfg->trace_retention_ms, now_ms),
                           sig_cutoff_ns(a->cfg, a->cfg->log_retention_ms, now_ms), TL_SIGDB_EXPIRE_BATCH,
                           TL_SIGDB_EXPIRE_MAX_BATCHES, &ex, err, errlen);
}

static void work_cb(uv_work_t *w) {
  tl_job_t *j = w->data;
  tl_app_t *a = j->app;
  size_t max = a->cfg->max_request ? (size_t)a->cfg->max_request : TL_MAX_BODY_DEFAULT;
  const uint8_t *body = j->body;
  size_t len = j->len;
  int otlp = j->kind <= TL_JOB_OTLP_LOGS;
  int rc;

  if (j->kind == TL_JOB_MAINTAIN) {
    j->status = tl_app_maintain(a, (int64_t)time(NULL) * 1000, j->err, sizeof j->err) < 0 ? 500 : 0;
    return;
  }
  if (j->kind == TL_JOB_SAMPLES) {
    store_samples(j, &j->samples);
    return;
  }
  if (j->gzip) {
    uint8_t *out = NULL;
    size_t outlen = 0;
    rc = tl_gunzip(j->pool, body, len, max, &out, &outlen);
    if (rc == SK_E2BIG) {
      if (otlp) set_status(j, 413, 3, "request body larger than %zu bytes after decompression", max);
      else set_text(j, 413, "request body larger than %zu bytes after decompression", max);
      return;
    }
    if (rc < 0) {
      if (otlp) set_status(j, 400, 3, "gzip body could not be decompressed");
      else set_text(j, 400, "gzip body could not be decompressed");
      return;
    }
    body = out;
    len = outlen;
  }
  char err[300] = "";
  switch (j->kind) {
  case TL_JOB_OTLP_TRACES: {
    /* protobuf bodies go straight to rows (tl_span_rows.c); JSON bodies,
     * and the protobuf ones that decoder leaves, through protobuf-c structs */
    Otlp__ExportTraceServiceRequest *r = NULL;
    tl_span_rows_t rows = {.json = tl_sigdb_row_buf(a->sig)};
    rc = 0;
    if (j->json) rc = tl_otlp_json_traces(j->pool, (const char *)body, len, &r, err, sizeof err);
    else if (!tl_span_rows_from_wire(j->pool, body, len, &rows)) {
      r = (Otlp__ExportTraceServiceRequest *)tl_pb_unpack(j->pool, &otlp__export_trace_service_request__descriptor,
                                                          body, len, err, sizeof err);
      rc = r ? 0 : SK_EPARSE;
    }
    if (rc < 0) {
      set_status(j, 400, 3, "%s", err);
      return;
    }
    if (r) tl_span_rows_from_msg(j->pool, r, &rows);
    if (tl_sigdb_put_rows(a->sig, &rows, err, sizeof err) < 0) {
      j->accepted = 0;
      set_status(j, 503, 14, "%s", err);
      j->retry_after = "5";
      return;
    }
    j->accepted = rows.n;
    j->rejected = rows.rejected;
    Otlp__ExportTraceServiceResponse resp = OTLP__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
    Otlp__ExportTracePartialSuccess ps = OTLP__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
    if (j->rejected) {
      ps.has_rejected_spans = 1;
      ps.rejected_spans = (int64_t)j->rejected;
      ps.error_message = "spans need a 16-byte trace_id and an 8-byte span_id, not all zero";
      resp.partial_success = &ps;
    }
    keep_for_forward(j, TL_FWD_TRACES, r ? &r->base : NULL, body, len); /* r is NULL only for protobuf */
    set_otlp_ok(j, &resp.base);
    return;
  }
  case TL_JOB_OTLP_METRICS: {
    Otlp__ExportMetricsServiceRequest *r = NULL;
    if (j->json) rc = tl_otlp_json_metrics(j->pool, (const char *)body, len, &r, err, sizeof err);
    else {
      r = (Otlp__ExportMetricsServiceRequest *)tl_pb_unpack(
          j->pool, &otlp__export_metrics_service_request__descriptor, body, len, err, sizeof err);
      rc = r ? 0 : SK_EPARSE;
    }
    if (rc < 0) {
      set_status(j, 400, 3, "%s", err);
      return;
    }
    tl_samples_t s = {0};
    tl_otlp_metrics_map(j->pool, r, &s);
    if (store_samples(j, &s) < 0) {
      set_status(j, 503, 14, "%s", j->err);
      j->retry_after = "5";
      return;
    }
    Otlp__ExportMetricsServiceResponse resp = OTLP__EXPORT_METRICS_SERVICE_RESPONSE__INIT;
    Otlp__ExportMetricsPartialSuccess ps = OTLP__EXPORT_METRICS_PARTIAL_SUCCESS__INIT;
    if (j->rejected) {
      ps.has_rejected_data_points = 1;
      ps.rejected_data_points = (int64_t)j->rejected;
      ps.error_message = j->err;
      resp.partial_success = &ps;
    }
    keep_for_forward(j, TL_FWD_METRICS, &r->base, body, len);
    set_otlp_ok(j, &resp.base);
    return;
  }
  case TL_JOB_OTLP_LOGS: {
    Otlp__ExportLogsServiceRequest *r = NULL;
    if (j->json) rc = tl_otlp_json_logs(j->pool, (const char *)body, len, &r, err, sizeof err);
    else {
      r = (Otlp__ExportLogsServiceRequest *)tl_pb_unpack(j->pool, &otlp__export_logs_service_request__descriptor,
                                                         body, len, err, sizeof err);
      rc = r ? 0 : SK_EPARSE;
    }
    if (rc < 0) {
      set_status(j, 400, 3, "%s", err);
      return;
    }
    tl_logline_t *lines = NULL;
    size_t n = 0, rej = 0;
    tl_otlp_logs_lines(j->pool, r, &lines, &n, &rej);
    if (n && tl_sigdb_put_logs(a->sig, lines, n, err, sizeof err) < 0) {
      set_status(j, 503, 14, "%s", err);
      j->retry_after = "5";
      return;
    }
    j->accepted = n;
    j->rejected = rej;
    Otlp__ExportLogsServiceResponse resp = OTLP__EXPORT_LOGS_SERVICE_RESPONSE__INIT;
    Otlp__ExportLogsPartialSuccess ps = OTLP__EXPORT_LOGS_PARTIAL_SUCCESS__INIT;
    if (rej) {
      ps.has_rejected_log_records = 1;
      ps.rejected_log_records = (int64_t)rej;
      ps.error_message = "empty log records";
      resp.partial_success = &ps;
    }
    keep_for_forward(j, TL_FWD_LOGS, &r->base, body, len);
    set_otlp_ok(j, &resp.base);
    return;
  }
  case TL_JOB_REMOTE_WRITE: {
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    rc = tl_snappy_decode(j->pool, body, len, max, &raw, &rawlen);
    if (rc == SK_E2BIG) {
      set_text(j, 413, "write request larger than %zu bytes uncompressed", max);
      return;
    }
    if (rc < 0) {
      set_text(j, 400, "body is not snappy block-compressed data");
      return;
    }
    Prometheus__WriteRequest *wr = (Prometheus__WriteRequest *)tl_pb_unpack(
        j->pool, &prometheus__write_request__descriptor, raw, rawlen, err, sizeof err);
    if (!wr) {
      set_text(j, 400, "%s", err);
      return;
    }
    tl_samples_t s = {0};
    tl_remote_write_map(j->pool, wr, &s);
    if (store_samples(j, &s) < 0) {
      set_text(j, 503, "%s", j->err);
      j->retry_after = "5";
      return;
    }
    /* Prometheus retries 5xx and drops 4xx; a partially bad batch is still a
     * 400 so the sender logs why (the good samples were stored) */
    if (j->rejected && !j->accepted) set_text(j, 400, "%s", j->err);
    else if (j->rejected) set_text(j, 400, "partial write: %zu samples rejected: %s", j->rejected, j->err);
    else set_reply(j, 204, NULL, "", 0);
    return;
  }
  case TL_JOB_LOKI_PUSH: {
    tl_logline_t *lines = NULL;
    size_t n = 0;
    if (tl_loki_push_decode(j->pool, (const char *)body, len, &lines, &n, err, sizeof err) < 0) {
      set_text(j, 400, "%s", err);
      return;
    }
    if (n && tl_sigdb_put_logs(a->sig, lines, n, err, sizeof err) < 0) {
      set_text(j, 503, "%s", err);
      j->retry_after = "5";
      return;
    }
    j->accepted = n;
    set_reply(j, 204, NULL, "", 0);
    return;
  }
  default:
    return;
  }
}

static void job_abort(sk_http_req_t *req, void *ud) {
  tl_job_t *j = ud;
  (void)req;
  j->req = NULL;
}

static void run_next(tl_app_t *a);
static void maybe_drained(tl_app_t *a);

static int job_signal(const tl_job_t *j) {
  switch (j->kind) {
  case TL_JOB_OTLP_TRACES: return TL_SIG_TRACES;
  case TL_JOB_OTLP_LOGS: case TL_JOB_LOKI_PUSH: return TL_SIG_LOGS;
  default: return TL_SIG_METRICS;
  }
}

static void after_cb(uv_work_t *w, int status) {
  tl_job_t *j = w->data;
  tl_app_t *a = j->app;
  a->running = 0;
  a->depth--;
  a->bytes -= j->len;
  if (j->kind != TL_JOB_MAINTAIN) {
    int sig = job_signal(j);
    if (j->status < 300 || j->kind == TL_JOB_SAMPLES) sk_counter_add(a->accepted[sig], (double)j->accepted);
    sk_counter_add(a->rejected[sig], (double)j->rejected);
    if (j->status >= 400 && j->kind != TL_JOB_SAMPLES)
      count_refused(a, j->status == 413 ? "too_large" : j->status >= 500 ? "storage" : "bad_request");
    if (j->status >= 500 && a->log) sk_log_warn(a->log, "ingest failed: %s", j->err);
    if (j->fwd && j->status >= 200 && j->status < 300) {
      tl_forward_push(a->fwd, sig, j->fwd, j->fwd_len, j->accepted + j->rejected);
      tl_kafka_push(a->kafka, sig, j->fwd, j->fwd_len, j->accepted + j->rejected);
    }
  } else {
    a->maint_pending = 0;
    if (j->status >= 500 && a->log) sk_log_warn(a->log, "maintenance failed: %s", j->err);
  }
  if (j->req) {
    sk_http_req_on_abort(j->req, NULL, NULL);
    sk_http_header_t h[2];
    size_t n = 0;
    if (j->ctype) h[n++] = (sk_http_header_t){"content-type", j->ctype};
    if (j->retry_after) h[n++] = (sk_http_header_t){"retry-after", j->retry_after};
    if (status < 0 || !j->status) {
      sk_http_respond_text(j->req, 503, "text/plain; charset=utf-8", "canceled\n");
    } else {
      sk_http_respond(j->req, j->status, h, n, j->resp, j->resp_len);
    }
  }
  sk_pool_free(j->pool);
  free(j);
  run_next(a);
  maybe_drained(a);
}

static void run_next(tl_app_t *a) {
  if (a->running || !a->head) return;
  tl_job_t *j = a->head;
  a->head = j->next;
  if (!a->head) a->tail = NULL;
  a->running = 1;
  j->work.data = j;
  if (uv_queue_work(a->loop, &j->work, work_cb, after_cb) < 0) {
    /* cannot happen with a live loop; answer and drop */
    a->running = 0;
    after_cb(&j->work, UV_ECANCELED);
  }
}

static void enqueue(tl_app_t *a, tl_job_t *j) {
  j->next = NULL;
  if (a->tail) a->tail->next = j;
  else a->head = j;
  a->tail = j;
  a->depth++;
  a->bytes += j->len;
  run_next(a);
}

static tl_job_t *job_new(tl_app_t *a, tl_job_kind_t kind) {
  tl_job_t *j = sk_xcalloc(1, sizeof *j);
  j->app = a;
  j->kind = kind;
  j->pool = sk_pool_new();
  return j;
}

/* ---- HTTP ---- */

static int ctype_is(const char *ct, const char *want) {
  if (!ct) return 0;
  while (*ct == ' ') ct++;
  size_t n = strlen(want);
  return !strncasecmp(ct, want, n) && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

static void ingest(tl_app_t *a, sk_http_req_t *req, tl_job_kind_t kind) {
  const char *ct = sk_http_headers_get(&req->headers, "content-type");
  const char *ce = sk_http_headers_get(&req->headers, "content-encoding");
  int json = 0, gzip = 0;
  int otlp = kind <= TL_JOB_OTLP_LOGS;
  if (otlp) {
    if (ctype_is(ct, "application/json")) json = 1;
    else if (ctype_is(ct, "application/x-protobuf") || ctype_is(ct, "application/protobuf")) json = 0;
    else {
      count_refused(a, "bad_request");
      sk_http_respond_text(req, 415, "text/plain; charset=utf-8",
                           "content-type must be application/x-protobuf or application/json\n");
      return;
    }
  } else if (kind == TL_JOB_LOKI_PUSH) {
    if (ct && !ctype_is(ct, "application/json")) {
      count_refused(a, "bad_request");
      sk_http_respond_text(req, 415, "text/plain; charset=utf-8",
                           "only JSON pushes are supported (content-type: application/json)\n");
      return;
    }
    json = 1;
  }
  if (ce && *ce && strcasecmp(ce, "identity")) {
    if (!strcasecmp(ce, "gzip") || !strcasecmp(ce, "deflate")) gzip = 1;
    else if (kind == TL_JOB_REMOTE_WRITE && !strcasecmp(ce, "snappy")) gzip = 0;
    else {
      count_refused(a, "bad_request");
      sk_http_respond_text(req, 415, "text/plain; charset=utf-8", "unsupported content-encoding\n");
      return;
    }
  }
  size_t max_bytes = a->cfg->max_queue_bytes ? (size_t)a->cfg->max_queue_bytes : (256u << 20);
  if (a->draining || a->depth >= (size_t)(a->cfg->max_queue > 0 ? a->cfg->max_queue : 64) ||
      a->bytes + req->body_len > max_bytes) {
    count_refused(a, a->draining ? "draining" : "queue_full");
    sk_http_header_t h[] = {{"retry-after", "1"}, {"content-type", "text/plain; charset=utf-8"}};
    const char *msg = a->draining ? "shutting down\n" : "ingest queue full, retry later\n";
    sk_http_respond(req, a->draining ? 503 : 429, h, 2, msg, strlen(msg));
    return;
  }
  tl_job_t *j = job_new(a, kind);
  j->req = req;
  j->json = json;
  j->gzip = gzip;
  j->body = sk_pool_memdup(j->pool, req->body ? (const void *)req->body : "", req->body_len + 1);
  j->len = req->body_len;
  sk_http_req_on_abort(req, job_abort, j);
  enqueue(a, j);
}

static void handle(sk_http_req_t *req, void *ud) {
  tl_app_t *a = ud;
  const char *path = req->path;
  int post = !strcmp(req->method, "POST"), get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");

  if (!strcmp(path, "/v1/traces") || !strcmp(path, "/v1/metrics") || !strcmp(path, "/v1/logs") ||
      !strcmp(path, "/api/v1/write") || !strcmp(path, "/loki/api/v1/push") ||
      !strcmp(path, "/api/prom/push")) {
    if (!post) {
      sk_http_header_t h[] = {{"allow", "POST"}};
      sk_http_respond(req, 405, h, 1, "method not allowed\n", 19);
      return;
    }
    tl_job_kind_t k = !strcmp(path, "/v1/traces")    ? TL_JOB_OTLP_TRACES
                      : !strcmp(path, "/v1/metrics") ? TL_JOB_OTLP_METRICS
                      : !strcmp(path, "/v1/logs")    ? TL_JOB_OTLP_LOGS
                      : !strcmp(path, "/api/v1/write") ? TL_JOB_REMOTE_WRITE
                                                       : TL_JOB_LOKI_PUSH;
    ingest(a, req, k);
    return;
  }
  if (get && !strncmp(path, "/api/traces/", 12)) {
    const char *id = path + 12;
    const char *slash = strchr(id, '/');
    if (slash && !strcmp(slash, "/logs")) {
      tl_traces_logs(a->sig, req, sk_pool_strndup(req->pool, id, (size_t)(slash - id)));
      return;
    }
    if (!slash) {
      tl_traces_get(a->sig, req, id);
      return;
    }
  }
  if (get && !strncmp(path, "/api/v2/traces/", 15) && !strchr(path + 15, '/')) {
    tl_traces_get(a->sig, req, path + 15);
    return;
  }
  if (get && (!strcmp(path, "/api/search") || !strcmp(path, "/api/v2/search"))) {
    tl_traces_search(a->sig, req);
    return;
  }
  if (get && !strcmp(path, "/api/v1/service-graph")) {
    tl_service_graph(a->sig, req);
    return;
  }
  if ((get || post) && !strcmp(path, "/loki/api/v1/query_range")) {
    tl_loki_query_range(a->sig, req, 0);
    return;
  }
  if ((get || post) && !strcmp(path, "/loki/api/v1/query")) {
    tl_loki_query_range(a->sig, req, 1);
    return;
  }
  if (get && !strcmp(path, "/loki/api/v1/labels")) {
    tl_loki_labels(a->sig, req, NULL);
    return;
  }
  if (get && !strncmp(path, "/loki/api/v1/label/", 19)) {
    const char *n = path + 19;
    const char *e = strstr(n, "/values");
    if (e && !strcmp(e, "/values") && e > n) {
      tl_loki_labels(a->sig, req, sk_pool_strndup(req->pool, n, (size_t)(e - n)));
      return;
    }
  }
  if (get && !strcmp(path, "/ready")) {
    sk_http_respond_text(req, a->draining ? 503 : 200, "text/plain; charset=utf-8",
                         a->draining ? "draining\n" : "ready\n");
    return;
  }
  if (tl_query_api_handle(a->tsdb, &a->qopts, req)) return;
  char *body = sk_pool_printf(req->pool, "not found: %.200s\n", path);
  sk_http_respond_text(req, 404, "text/plain; charset=utf-8", body);
}

/* ---- scraping and maintenance feed the same queue ---- */

static void scrape_sink(void *ud, sk_pool_t *pool, tl_samples_t *s) {
  tl_app_t *a = ud;
  if (a->draining || a->depth >= (size_t)(a->cfg->max_queue > 0 ? a->cfg->max_queue : 64) * 2) {
    count_refused(a, a->draining ? "draining" : "queue_full");
    sk_pool_free(pool);
    return;
  }
  tl_job_t *j = job_new(a, TL_JOB_SAMPLES);
  sk_pool_free(j->pool);
  j->pool = pool; /* the samples live there */
  j->samples = *s;
  enqueue(a, j);
}

static void maint_tick(uv_timer_t *t) {
  tl_app_t *a = t->data;
  if (a->maint_pending || a->draining) return;
  a->maint_pending = 1;
  enqueue(a, job_new(a, TL_JOB_MAINTAIN));
}

/* ---- lifecycle ---- */

static int mkdir_p(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(tmp, 0750);
      *p = '/';
    }
  if (mkdir(tmp, 0750) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
  return 0;
}

int tl_app_new(uv_loop_t *loop, const tl_config_t *cfg, sk_metrics_t *reg, sk_logger_t *log, int admin_port,
               tl_app_t **out, char *err, size_t errlen) {
  tl_app_t *a = sk_xcalloc(1, sizeof *a);
  int rc;
  char path[4200];
  *out = NULL;
  a->loop = loop;
  a->cfg = cfg;
  a->log = log;
  if (!reg) {
    if ((rc = sk_metrics_new(&a->reg)) < 0) goto fail;
  }
  a->reg = reg ? reg : a->reg;
  const char *dir = cfg->data_dir && *cfg->data_dir ? cfg->data_dir : "telemetry-data";
  if ((rc = mkdir_p(dir)) < 0) {
    snprintf(err, errlen, "cannot create %s: %s", dir, sk_strerror(rc));
    goto fail;
  }
  snprintf(path, sizeof path, "%s/metrics", dir);
  tl_tsdb_opts_t to = {.retention_ms = (int64_t)cfg->retention_ms,
                       .max_series_per_metric = (size_t)cfg->max_series_per_metric,
                       .max_series = (size_t)cfg->max_series,
                       .no_sync = cfg->no_sync};
  if ((rc = tl_tsdb_open(path, &to, &a->tsdb, err, errlen)) < 0) goto fail;
  snprintf(path, sizeof path, "%s/signals.sqlite", dir);
  if ((rc = tl_sigdb_open(path, cfg->no_sync, &a->sig, err, errlen)) < 0) goto fail;
  if ((rc = metrics_init(a)) < 0) {
    snprintf(err, errlen, "metrics registry: %s", sk_strerror(rc));
    goto fail;
  }
  a->qopts.ready = 1;
  a->qopts.version = SKIFF_VERSION;
  size_t max_body = cfg->max_request ? (size_t)cfg->max_request : TL_MAX_BODY_DEFAULT;
  sk_http_server_opts_t so = {
      .host = cfg->listen.host[0] ? cfg->listen.host : "127.0.0.1",
      .port = cfg->listen.port,
      .max_body_bytes = max_body,
      .server_name = "skiff-telemetry",
      .tls = cfg->listen_tls_ctx,
  };
  if ((rc = sk_http_server_new(loop, &so, handle, a, &a->otlp)) < 0) {
    snprintf(err, errlen, "OTLP listener %s:%d: %s", so.host, so.port, sk_strerror(rc));
    goto fail;
  }
  so.host = cfg->query_listen.host[0] ? cfg->query_listen.host : "127.0.0.1";
  so.port = cfg->query_listen.port;
  so.tls = cfg->query_tls_ctx;
  if ((rc = sk_http_server_new(loop, &so, handle, a, &a->query)) < 0) {
    snprintf(err, errlen, "query listener %s:%d: %s", so.host, so.port, sk_strerror(rc));
    goto fail;
  }
  if ((rc = tl_scraper_new(loop, cfg, cfg->self_scrape ? admin_port : 0, scrape_sink, a, &a->scraper, err,
                           errlen)) < 0)
    goto fail;
  if ((rc = tl_forward_new(loop, &cfg->forward, a->reg, log, &a->fwd, err, errlen)) < 0) goto fail;
  if ((rc = tl_kafka_new(loop, &cfg->kafka, a->reg, log, &a->kafka, err, errlen)) < 0) goto fail;
  uv_timer_init(loop, &a->maint);
  a->maint.data = a;
  uv_timer_start(&a->maint, maint_tick, 60000, 60000);
  *out = a;
  return 0;
fail:
  tl_kafka_free(a->kafka);
  tl_forward_free(a->fwd);
  tl_scraper_free(a->scraper);
  sk_http_server_free(a->otlp);
  sk_http_server_free(a->query);
  tl_sigdb_close(a->sig);
  tl_tsdb_close(a->tsdb);
  if (!reg) sk_metrics_free(a->reg);
  free(a);
  return rc;
}

int tl_app_port(const tl_app_t *a) { return a && a->otlp ? sk_http_server_port(a->otlp) : -1; }
int tl_app_query_port(const tl_app_t *a) { return a && a->query ? sk_http_server_port(a->query) : -1; }
tl_tsdb_t *tl_app_tsdb(tl_app_t *a) { return a->tsdb; }
struct tl_sigdb *tl_app_sigdb(tl_app_t *a) { return a->sig; }
size_t tl_app_queue_depth(const tl_app_t *a) { return a->depth; }

static void maybe_drained(tl_app_t *a) {
  if (!a->draining || a->drained_servers < 2 || a->depth || !a->drain_cb) return;
  void (*cb)(void *) = a->drain_cb;
  a->drain_cb = NULL;
  cb(a->drain_ud);
}

static void server_drained(sk_http_server_t *s, void *ud) {
  tl_app_t *a = ud;
  a->drained_servers++;
  maybe_drained(a);
}

void tl_app_drain(tl_app_t *a, void (*cb)(void *ud), void *ud) {
  a->draining = 1;
  a->drain_cb = cb;
  a->drain_ud = ud;
  a->qopts.ready = 0;
  tl_scraper_free(a->scraper);
  a->scraper = NULL;
  uv_timer_stop(&a->maint);
  sk_http_server_drain(a->otlp, server_drained, a);
  sk_http_server_drain(a->query, server_drained, a);
}

static void maint_closed(uv_handle_t *h) {
  tl_app_t *a = h->data;
  tl_sigdb_close(a->sig);
  tl_tsdb_close(a->tsdb);
  free(a);
}

void tl_app_free(tl_app_t *a) {
  if (!a) return;
  /* queued jobs that never ran: answer nothing (the servers are going) */
  while (a->head) {
    tl_job_t *j = a->head;
    a->head = j->next;
    if (j->req) sk_http_req_on_abort(j->req, NULL, NULL);
    sk_pool_free(j->pool);
    free(j);
  }
  a->tail = NULL;
  if (a->running) {
    /* the worker still holds the stores: wait for it, bounded by the job */
    while (a->running) uv_run(a->loop, UV_RUN_ONCE);
  }
  tl_scraper_free(a->scraper);
  tl_forward_free(a->fwd);
  a->fwd = NULL;
  tl_kafka_free(a->kafka);
  a->kafka = NULL;
  sk_http_server_free(a->otlp);
  sk_http_server_free(a->query);
  uv_timer_stop(&a->maint);
  uv_close((uv_handle_t *)&a->maint, maint_closed);
}
