/* skiff-telemetry in-process: OTLP/HTTP (protobuf built with the generated
 * protobuf-c code, and JSON), gzip, limits, errors, traces/search/service
 * graph, OTLP logs + Loki push/query, remote-write into the tsdb, the
 * exposition parser via a scrape of a local server, driven by curl. */
#include "sk_test.h"

#include <snappy-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "skiff/err.h"
#include "skiff/mem.h"
#include "skiff/metrics.h"
#include "tl_int.h"
#include "tl_sigdb_int.h"

typedef struct fixture {
  uv_loop_t loop;
  tl_config_t cfg;
  sk_metrics_t *reg;
  tl_app_t *app;
  uv_timer_t tick;
  int port, qport;
  char dir[512];
} fixture_t;

static void tick(uv_timer_t *t) { (void)t; }

static fixture_t *start_with(void (*tweak)(tl_config_t *)) {
  fixture_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  assert_int_equal(sk_config_defaults(&tl_config_schema, &f->cfg, NULL), 0);
  f->cfg.listen.port = 0;
  f->cfg.query_listen.port = 0;
  f->cfg.self_scrape = false;
  f->cfg.no_sync = true;
  snprintf(f->dir, sizeof f->dir, "%s/tl-%d", sk_test_tmpdir(), rand());
  free(f->cfg.data_dir);
  f->cfg.data_dir = strdup(f->dir);
  if (tweak) tweak(&f->cfg);
  assert_int_equal(sk_metrics_new(&f->reg), 0);
  char err[512] = "";
  int rc = tl_app_new(&f->loop, &f->cfg, f->reg, NULL, 0, &f->app, err, sizeof err);
  if (rc < 0) fprintf(stderr, "tl_app_new: %s\n", err);
  assert_int_equal(rc, 0);
  f->port = tl_app_port(f->app);
  f->qport = tl_app_query_port(f->app);
  return f;
}

static fixture_t *start(void) { return start_with(NULL); }

static void drained(void *ud) { *(int *)ud = 1; }

/* other: a second loop to keep serving while the app drains (test_scrape) */
static void stop_with(fixture_t *f, uv_loop_t *other) {
  int done = 0;
  tl_app_drain(f->app, drained, &done);
  uv_timer_start(&f->tick, tick, 5, 5);
  if (other) {
    for (int i = 0; i < 2000 && !done; i++) {
      uv_run(other, UV_RUN_NOWAIT);
      uv_run(&f->loop, UV_RUN_ONCE);
    }
    for (int i = 0; i < 50; i++) {
      uv_run(other, UV_RUN_NOWAIT);
      uv_run(&f->loop, UV_RUN_NOWAIT);
      usleep(1000);
    }
  }
  sk_test_run_until(&f->loop, &done, 10000);
  uv_timer_stop(&f->tick);
  tl_app_free(f->app);
  uv_close((uv_handle_t *)&f->tick, NULL);
  sk_test_loop_drain(&f->loop);
  sk_metrics_free(f->reg);
  sk_config_free(&tl_config_schema, &f->cfg);
  free(f);
}

static void stop(fixture_t *f) { stop_with(f, NULL); }

static int run(fixture_t *f, sk_test_job_t *job) {
  uv_timer_start(&f->tick, tick, 10, 10);
  int rc = sk_test_run_until(&f->loop, &job->done, 60000);
  uv_timer_stop(&f->tick);
  if (rc < 0) sk_test_run_until(&f->loop, &job->done, 30000);
  sk_test_job_join(job);
  assert_int_equal(rc, 0);
  return job->status;
}

/* Runs a shell command (curl) while the loop serves; output in job->out. */
static sk_test_job_t *sh(fixture_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static sk_test_job_t *sh(fixture_t *f, const char *fmt, ...) {
  sk_test_job_t *job = calloc(1, sizeof *job);
  char cmd[4000];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  sk_test_job_start(job, "%s", cmd);
  run(f, job);
  return job;
}

static const char *write_file(const char *name, const void *data, size_t len) {
  static char path[8][600];
  static int k;
  char *p = path[k++ % 8];
  snprintf(p, 600, "%s/%s", sk_test_tmpdir(), name);
  FILE *fp = fopen(p, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, len, fp), len);
  fclose(fp);
  return p;
}

/* ---- building OTLP protobuf payloads ---- */

static Otlp__KeyValue *kv_str(const char *k, const char *v) {
  Otlp__KeyValue *kv = calloc(1, sizeof *kv);
  Otlp__AnyValue *av = calloc(1, sizeof *av);
  *kv = (Otlp__KeyValue)OTLP__KEY_VALUE__INIT;
  *av = (Otlp__AnyValue)OTLP__ANY_VALUE__INIT;
  av->value_case = OTLP__ANY_VALUE__VALUE_STRING_VALUE;
  av->string_value = (char *)v;
  kv->key = (char *)k;
  kv->value = av;
  return kv;
}

static void kv_free(Otlp__KeyValue *kv) {
  free(kv->value);
  free(kv);
}

typedef struct span_spec {
  const char *service, *name;
  uint8_t tid[16], sid[8], pid[8];
  int has_parent, status;
  uint64_t start, dur;
} span_spec_t;

/* One ResourceSpans per span (simple and enough). */
static uint8_t *build_traces(const span_spec_t *sp, size_t n, size_t *len) {
  Otlp__ExportTraceServiceRequest req = OTLP__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  Otlp__ResourceSpans **rs = calloc(n, sizeof *rs);
  for (size_t i = 0; i < n; i++) {
    rs[i] = calloc(1, sizeof **rs);
    *rs[i] = (Otlp__ResourceSpans)OTLP__RESOURCE_SPANS__INIT;
    Otlp__Resource *res = calloc(1, sizeof *res);
    *res = (Otlp__Resource)OTLP__RESOURCE__INIT;
    res->n_attributes = 1;
    res->attributes = calloc(1, sizeof(Otlp__KeyValue *));
    res->attributes[0] = kv_str("service.name", sp[i].service);
    rs[i]->resource = res;
    Otlp__ScopeSpans *ss = calloc(1, sizeof *ss);
    *ss = (Otlp__ScopeSpans)OTLP__SCOPE_SPANS__INIT;
    Otlp__Span *s = calloc(1, sizeof *s);
    *s = (Otlp__Span)OTLP__SPAN__INIT;
    s->has_trace_id = s->has_span_id = 1;
    s->trace_id = (ProtobufCBinaryData){16, (uint8_t *)sp[i].tid};
    s->span_id = (ProtobufCBinaryData){8, (uint8_t *)sp[i].sid};
    if (sp[i].has_parent) {
      s->has_parent_span_id = 1;
      s->parent_span_id = (ProtobufCBinaryData){8, (uint8_t *)sp[i].pid};
    }
    s->name = (char *)sp[i].name;
    s->has_kind = 1;
    s->kind = 2;
    s->has_start_time_unix_nano = s->has_end_time_unix_nano = 1;
    s->start_time_unix_nano = sp[i].start;
    s->end_time_unix_nano = sp[i].start + sp[i].dur;
    s->n_attributes = 1;
    s->attributes = calloc(1, sizeof(Otlp__KeyValue *));
    s->attributes[0] = kv_str("http.route", "/checkout");
    Otlp__Status *st = calloc(1, sizeof *st);
    *st = (Otlp__Status)OTLP__STATUS__INIT;
    st->has_code = 1;
    st->code = sp[i].status;
    s->status = st;
    ss->n_spans = 1;
    ss->spans = calloc(1, sizeof(Otlp__Span *));
    ss->spans[0] = s;
    rs[i]->n_scope_spans = 1;
    rs[i]->scope_spans = calloc(1, sizeof(Otlp__ScopeSpans *));
    rs[i]->scope_spans[0] = ss;
  }
  req.n_resource_spans = n;
  req.resource_spans = rs;
  *len = protobuf_c_message_get_packed_size(&req.base);
  uint8_t *buf = malloc(*len + 1);
  protobuf_c_message_pack(&req.base, buf);
  for (size_t i = 0; i < n; i++) {
    Otlp__ScopeSpans *ss = rs[i]->scope_spans[0];
    Otlp__Span *s = ss->spans[0];
    kv_free(s->attributes[0]);
    free(s->attributes);
    free(s->status);
    free(s);
    free(ss->spans);
    free(ss);
    free(rs[i]->scope_spans);
    kv_free(rs[i]->resource->attributes[0]);
    free(rs[i]->resource->attributes);
    free(rs[i]->resource);
    free(rs[i]);
  }
  free(rs);
  return buf;
}

static void fill_id(uint8_t *b, size_t n, int seed) {
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(seed * 31 + (int)i + 1);
}

static void test_otlp_traces_protobuf(void **state) {
  fixture_t *f = start();
  uint64_t now = (uint64_t)time(NULL) * 1000000000ull;
  span_spec_t sp[3];
  memset(sp, 0, sizeof sp);
  /* frontend (root) -> checkout -> payments (error) */
  sp[0] = (span_spec_t){.service = "frontend", .name = "GET /", .start = now, .dur = 50000000};
  sp[1] = (span_spec_t){.service = "checkout", .name = "checkout", .has_parent = 1, .start = now + 1000,
                        .dur = 20000000};
  sp[2] = (span_spec_t){.service = "payments", .name = "charge", .has_parent = 1, .status = 2,
                        .start = now + 2000, .dur = 5000000};
  for (int i = 0; i < 3; i++) {
    fill_id(sp[i].tid, 16, 7);
    fill_id(sp[i].sid, 8, 100 + i);
    if (i) fill_id(sp[i].pid, 8, 100 + i - 1);
  }
  size_t len;
  uint8_t *pb = build_traces(sp, 3, &len);
  const char *path = write_file("traces.pb", pb, len);
  free(pb);
  char tid[33];
  tl_hex(sp[0].tid, 16, tid);

  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -o /dev/null -w '%%{http_code} %%{content_type}\\n' -H 'Content-Type: "
                        "application/x-protobuf' --data-binary @%s http://127.0.0.1:%d/v1/traces && "
                        "curl -m 20 -sS http://127.0.0.1:%d/api/traces/%s",
                        path, f->port, f->qport, tid);
  assert_non_null(strstr(j->out, "200 application/x-protobuf"));
  assert_non_null(strstr(j->out, "\"resourceSpans\""));
  assert_non_null(strstr(j->out, "\"stringValue\":\"payments\""));
  assert_non_null(strstr(j->out, "\"name\":\"charge\""));
  assert_non_null(strstr(j->out, tid));
  assert_non_null(strstr(j->out, "\"http.route\""));
  free(j);

  /* search: errors in payments; minDuration filters */
  j = sh(f,
         "curl -m 20 -sS 'http://127.0.0.1:%d/api/search?service=payments&status=error'; echo; "
         "curl -m 20 -sS 'http://127.0.0.1:%d/api/search?operation=GET%%20/&minDuration=40ms'; echo; "
         "curl -m 20 -sS 'http://127.0.0.1:%d/api/search?service=frontend&minDuration=60ms'; echo; "
         "curl -m 20 -sS 'http://127.0.0.1:%d/api/v1/service-graph'",
         f->qport, f->qport, f->qport, f->qport);
  char *l1 = j->out, *l2 = strchr(l1, '\n');
  assert_non_null(l2);
  *l2++ = 0;
  char *l3 = strchr(l2, '\n');
  assert_non_null(l3);
  *l3++ = 0;
  char *l4 = strchr(l3, '\n');
  assert_non_null(l4);
  *l4++ = 0;
  assert_non_null(strstr(l1, tid));
  assert_non_null(strstr(l1, "\"rootServiceName\":\"frontend\""));
  assert_non_null(strstr(l2, tid));
  assert_null(strstr(l3, tid));
  assert_non_null(strstr(l4, "\"source\":\"frontend\",\"target\":\"checkout\",\"requests\":1,\"errors\":0"));
  assert_non_null(strstr(l4, "\"source\":\"checkout\",\"target\":\"payments\",\"requests\":1,\"errors\":1"));
  assert_non_null(strstr(l4, "\"errorRate\":1.0"));
  assert_non_null(strstr(l4, "\"latencyP50Ms\":5.0"));
  free(j);

  /* unknown trace: 404; bad span ids: partial success in protobuf */
  j = sh(f, "curl -m 20 -sS -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/api/traces/abcdef", f->qport);
  assert_string_equal(j->out, "404");
  free(j);
  stop(f);
}

static void test_otlp_json_gzip_errors(void **state) {
  fixture_t *f = start();
  const char *json =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
      "\"jsonsvc\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"test\"},\"spans\":[{\"traceId\":"
      "\"5b8efff798038103d269b633813fc60c\",\"spanId\":\"eee19b7ec3c1b174\",\"name\":\"json-span\",\"kind\":2,"
      "\"startTimeUnixNano\":\"1700000000000000000\",\"endTimeUnixNano\":1700000000100000000,\"attributes\":[{"
      "\"key\":\"n\",\"value\":{\"intValue\":\"42\"}}],\"unknownField\":{\"x\":1},\"status\":{\"code\":1}},"
      "{\"traceId\":\"00\",\"spanId\":\"eee19b7ec3c1b175\",\"name\":\"bad\"}]}]}]}";
  const char *p = write_file("t.json", json, strlen(json));
  /* gzip copy */
  char gz[700];
  snprintf(gz, sizeof gz, "%s.gz", p);
  gzFile g = gzopen(gz, "wb");
  assert_non_null(g);
  gzwrite(g, json, (unsigned)strlen(json));
  gzclose(g);

  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -w ' %%{http_code} %%{content_type}\\n' -H 'Content-Type: application/json' "
                        "--data-binary @%s http://127.0.0.1:%d/v1/traces; "
                        "curl -m 20 -sS -w ' %%{http_code}\\n' -H 'Content-Type: application/json' -H "
                        "'Content-Encoding: gzip' --data-binary @%s http://127.0.0.1:%d/v1/traces; "
                        "curl -m 20 -sS http://127.0.0.1:%d/api/traces/5b8efff798038103d269b633813fc60c",
                        p, f->port, gz, f->port, f->qport);
  assert_non_null(strstr(j->out, "{\"partialSuccess\":{\"rejectedSpans\":\"1\""));
  assert_non_null(strstr(j->out, " 200 application/json\n"));
  assert_non_null(strstr(j->out, "\"name\":\"json-span\""));
  assert_non_null(strstr(j->out, "\"intValue\":\"42\""));
  assert_non_null(strstr(j->out, "\"startTimeUnixNano\":\"1700000000000000000\""));
  assert_non_null(strstr(j->out, "\"endTimeUnixNano\":\"1700000000100000000\""));
  free(j);

  /* malformed: 400 with a google.rpc.Status body (JSON and protobuf) */
  const char *bad = "{\"resourceSpans\": [ {";
  const char *bp = write_file("bad.json", bad, strlen(bad));
  const uint8_t badpb[] = {0x0a, 0x10, 0x01};
  const char *bpp = write_file("bad.pb", badpb, sizeof badpb);
  j = sh(f,
         "curl -m 20 -sS -w ' %%{http_code}\\n' -H 'Content-Type: application/json' --data-binary @%s "
         "http://127.0.0.1:%d/v1/traces; "
         "curl -m 20 -sS -o %s.out -w '%%{http_code} %%{content_type}\\n' -H 'Content-Type: application/x-protobuf' "
         "--data-binary @%s http://127.0.0.1:%d/v1/metrics; "
         "curl -m 20 -sS -o /dev/null -w '%%{http_code}\\n' -H 'Content-Type: text/plain' -d x "
         "http://127.0.0.1:%d/v1/logs",
         bp, f->port, bpp, bpp, f->port, f->port);
  assert_non_null(strstr(j->out, "{\"code\":3,\"message\":"));
  assert_non_null(strstr(j->out, " 400\n400 application/x-protobuf\n415\n"));
  free(j);
  /* the protobuf error body decodes as a google.rpc.Status */
  char outp[700];
  snprintf(outp, sizeof outp, "%s.out", bpp);
  FILE *fp = fopen(outp, "rb");
  assert_non_null(fp);
  uint8_t buf[1024];
  size_t n = fread(buf, 1, sizeof buf, fp);
  fclose(fp);
  Rpc__Status *st = rpc__status__unpack(NULL, n, buf);
  assert_non_null(st);
  assert_int_equal(st->code, 3);
  assert_non_null(strstr(st->message, "protobuf"));
  rpc__status__free_unpacked(st, NULL);
  stop(f);
}

static void small_request(tl_config_t *c) { c->max_request = 100000; }

static void test_oversize_413(void **state) {
  fixture_t *f = start_with(small_request);
  /* 1 MB of JSON whitespace gzips to ~1 KB: accepted by the server's body
   * limit, refused after decompression */
  size_t big = 1000000;
  char *s = malloc(big + 3);
  s[0] = '{';
  memset(s + 1, ' ', big);
  s[big + 1] = '}';
  s[big + 2] = 0;
  char gz[700];
  snprintf(gz, sizeof gz, "%s/big.json.gz", sk_test_tmpdir());
  gzFile g = gzopen(gz, "wb");
  gzwrite(g, s, (unsigned)(big + 2));
  gzclose(g);
  const char *raw = write_file("big.json", s, big + 2);
  free(s);
  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -w ' %%{http_code}\\n' -H 'Content-Type: application/json' -H "
                        "'Content-Encoding: gzip' --data-binary @%s http://127.0.0.1:%d/v1/logs; "
                        "curl -m 20 -sS -o /dev/null -w '%%{http_code}\\n' -H 'Content-Type: application/json' "
                        "--data-binary @%s http://127.0.0.1:%d/v1/logs",
                        gz, f->port, raw, f->port);
  assert_non_null(strstr(j->out, "after decompression\"} 413\n"));
  assert_non_null(strstr(j->out, "\n413\n"));
  free(j);
  stop(f);
}

/* ---- backpressure: a request that does not fit the queue gets 429 + Retry-After ---- */

static void small_queue(tl_config_t *c) { c->max_queue_bytes = 2000; }

static void test_backpressure_429(void **state) {
  fixture_t *f = start_with(small_queue);
  long long ns = (long long)time(NULL) * 1000000000LL;
  char body[4200];
  int n = snprintf(body, sizeof body,
                   "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                   "\"value\":{\"stringValue\":\"bp\"}}]},\"scopeMetrics\":[{\"metrics\":[{\"name\":"
                   "\"bp_gauge\",\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":\"%lld\",\"asDouble\":1.5}]}}]}]}]}",
                   ns);
  const char *small = write_file("bp-small.json", body, (size_t)n);
  /* the same document padded past max_queue_bytes with JSON whitespace */
  memset(body + n, ' ', 3000);
  const char *big = write_file("bp-big.json", body, (size_t)n + 3000);
  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -o /dev/null -w '%%{http_code} [%%header{retry-after}]\n' "
                        "-H 'Content-Type: application/json' --data-binary @%s http://127.0.0.1:%d/v1/metrics; "
                        "curl -m 20 -sS -w ' %%{http_code} [%%header{retry-after}]\n' "
                        "-H 'Content-Type: application/json' --data-binary @%s http://127.0.0.1:%d/v1/metrics",
                        small, f->port, big, f->port);
  /* the small one is stored, the big one refused with a retry hint */
  assert_non_null(strstr(j->out, "200 []\n"));
  assert_non_null(strstr(j->out, "ingest queue full, retry later\n 429 [1]\n"));
  free(j);

  /* self-observability: the refusal, the queue, the store */
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_metrics_render(f->reg, &b), 0);
  const char *text = sk_buf_cstr(&b);
  assert_non_null(strstr(text, "skiff_telemetry_dropped_requests_total{reason=\"queue_full\"} 1\n"));
  assert_non_null(strstr(text, "skiff_telemetry_accepted_total{signal=\"metrics\"} 1\n"));
  assert_non_null(strstr(text, "skiff_telemetry_queue_depth 0\n"));
  assert_non_null(strstr(text, "skiff_telemetry_queue_bytes 0\n"));
  assert_non_null(strstr(text, "skiff_telemetry_series 1\n"));
  const char *sb = strstr(text, "\nskiff_telemetry_storage_bytes ");
  assert_non_null(sb);
  assert_true(atof(sb + strlen("\nskiff_telemetry_storage_bytes ")) > 0);
  sk_buf_done(&b);
  stop(f);
}

/* ---- the series limit per metric, seen by a sender ---- */

static size_t select_count(fixture_t *f, const char *name, const char *lname, const char *lval, double *last);

static void series_limit(tl_config_t *c) { c->max_series_per_metric = 2; }

static void test_series_limit(void **state) {
  fixture_t *f = start_with(series_limit);
  long long ns = (long long)time(NULL) * 1000000000LL;
  char body[2000], pts[3][200];
  for (int i = 0; i < 3; i++)
    snprintf(pts[i], sizeof pts[i],
             "{\"attributes\":[{\"key\":\"shard\",\"value\":{\"stringValue\":\"s%d\"}}],"
             "\"timeUnixNano\":\"%lld\",\"asDouble\":%d}",
             i, ns, i + 1);
  int n = snprintf(body, sizeof body,
                   "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
                   "\"value\":{\"stringValue\":\"lim\"}}]},\"scopeMetrics\":[{\"metrics\":[{\"name\":"
                   "\"lim_gauge\",\"gauge\":{\"dataPoints\":[%s,%s,%s]}}]}]}]}",
                   pts[0], pts[1], pts[2]);
  const char *p = write_file("lim.json", body, (size_t)n);
  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -w ' %%{http_code}\n' -H 'Content-Type: application/json' "
                        "--data-binary @%s http://127.0.0.1:%d/v1/metrics",
                        p, f->port);
  /* two series stored, the third point refused by name, in partial success */
  assert_non_null(strstr(j->out, "\"rejectedDataPoints\":\"1\""));
  assert_non_null(strstr(j->out, "series limit per metric reached: metric \\\"lim_gauge\\\" has 2 series"));
  assert_non_null(strstr(j->out, "} 200\n"));
  free(j);
  assert_int_equal(select_count(f, "lim_gauge", "shard", "s0", NULL), 1);
  assert_int_equal(select_count(f, "lim_gauge", "shard", "s1", NULL), 1);
  assert_int_equal(select_count(f, "lim_gauge", "shard", "s2", NULL), 0);
  /* remote-write: three series of one metric; Prometheus is told 400 (do not
   * retry) with the reason, the first two are stored */
  Prometheus__WriteRequest wr = PROMETHEUS__WRITE_REQUEST__INIT;
  Prometheus__TimeSeries ts[3], *tsp[3];
  Prometheus__Label nm[3], sh_[3], *ls[3][2];
  Prometheus__Sample smp[3], *sp[3];
  static const char *shards[] = {"r0", "r1", "r2"};
  for (int i = 0; i < 3; i++) {
    ts[i] = (Prometheus__TimeSeries)PROMETHEUS__TIME_SERIES__INIT;
    nm[i] = (Prometheus__Label)PROMETHEUS__LABEL__INIT;
    sh_[i] = (Prometheus__Label)PROMETHEUS__LABEL__INIT;
    smp[i] = (Prometheus__Sample)PROMETHEUS__SAMPLE__INIT;
    nm[i].name = "__name__", nm[i].value = "lim_rw";
    sh_[i].name = "shard", sh_[i].value = (char *)shards[i];
    ls[i][0] = &nm[i], ls[i][1] = &sh_[i];
    smp[i].has_value = smp[i].has_timestamp = 1;
    smp[i].value = i, smp[i].timestamp = ns / 1000000;
    sp[i] = &smp[i];
    ts[i].n_labels = 2, ts[i].labels = ls[i], ts[i].n_samples = 1, ts[i].samples = &sp[i];
    tsp[i] = &ts[i];
  }
  wr.n_timeseries = 3, wr.timeseries = tsp;
  size_t plen = protobuf_c_message_get_packed_size(&wr.base);
  uint8_t *raw = malloc(plen);
  protobuf_c_message_pack(&wr.base, raw);
  size_t clen = snappy_max_compressed_length(plen);
  char *comp = malloc(clen);
  assert_int_equal(snappy_compress((const char *)raw, plen, comp, &clen), SNAPPY_OK);
  const char *rp = write_file("lim-rw.bin", comp, clen);
  free(raw);
  free(comp);
  j = sh(f,
         "curl -m 20 -sS -w ' %%{http_code}\n' -H 'Content-Type: application/x-protobuf' -H "
         "'Content-Encoding: snappy' -H 'X-Prometheus-Remote-Write-Version: 0.1.0' --data-binary @%s "
         "http://127.0.0.1:%d/api/v1/write",
         rp, f->qport);
  /* the reason whole (it was once formatted over itself and came out garbled) */
  assert_string_equal(j->out, "partial write: 1 samples rejected: series limit per metric reached: metric "
                              "\"lim_rw\" has 2 series (max_series_per_metric)\n 400\n");
  free(j);
  assert_int_equal(select_count(f, "lim_rw", "shard", "r0", NULL), 1);
  assert_int_equal(select_count(f, "lim_rw", "shard", "r1", NULL), 1);
  assert_int_equal(select_count(f, "lim_rw", "shard", "r2", NULL), 0);

  /* the same OTLP request again is answered the same way: the daemon keeps serving */
  j = sh(f,
         "curl -m 20 -sS -o /dev/null -w '%%{http_code}\n' -H 'Content-Type: application/json' "
         "--data-binary @%s http://127.0.0.1:%d/v1/metrics",
         p, f->port);
  assert_string_equal(j->out, "200\n");
  free(j);
  stop(f);
}

static void test_logs_loki(void **state) {
  fixture_t *f = start();
  time_t now = time(NULL);
  char body[2000];
  snprintf(body, sizeof body,
           "{\"streams\":[{\"stream\":{\"app\":\"shop\",\"env\":\"dev\"},\"values\":["
           "[\"%lld000000001\",\"GET / 200\"],[\"%lld000000002\",\"error: payment failed "
           "trace_id=4bf92f3577b34da6a3ce929d0e0e4736\"],[\"%lld000000003\",\"ERROR timeout\"]]},"
           "{\"stream\":{\"app\":\"other\"},\"values\":[[\"%lld000000004\",\"error elsewhere\"]]}]}",
           (long long)now, (long long)now, (long long)now, (long long)now);
  const char *p = write_file("push.json", body, strlen(body));
  const char *otlp =
      "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
      "\"api\"}}]},\"scopeLogs\":[{\"logRecords\":[{\"severityNumber\":17,\"severityText\":\"ERROR\",\"body\":{"
      "\"stringValue\":\"db down\"},\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"spanId\":"
      "\"00f067aa0ba902b7\"}]}]}]}";
  const char *op = write_file("logs.json", otlp, strlen(otlp));
  sk_test_job_t *j = sh(
      f,
      "curl -m 20 -sS -o /dev/null -w '%%{http_code}\\n' -H 'Content-Type: application/json' --data-binary @%s "
      "http://127.0.0.1:%d/loki/api/v1/push; "
      "curl -m 20 -sS -w ' %%{http_code}\\n' -H 'Content-Type: application/json' --data-binary @%s "
      "http://127.0.0.1:%d/v1/logs; "
      "curl -m 20 -sS -G --data-urlencode 'query={app=\"shop\"} |= \"error\"' "
      "--data-urlencode 'start=%lld' --data-urlencode 'end=%lld' http://127.0.0.1:%d/loki/api/v1/query_range; echo; "
      "curl -m 20 -sS -G --data-urlencode 'query={app=~\"sh.*\"} |~ \"(?i)error|ERROR\" != \"payment\"' "
      "--data-urlencode 'direction=forward' http://127.0.0.1:%d/loki/api/v1/query_range; echo; "
      "curl -m 20 -sS http://127.0.0.1:%d/api/traces/4bf92f3577b34da6a3ce929d0e0e4736/logs; echo; "
      "curl -m 20 -sS -G --data-urlencode 'query={service_name=\"api\"}' http://127.0.0.1:%d/loki/api/v1/query_range; "
      "echo; curl -m 20 -sS -w ' %%{http_code}' -G --data-urlencode 'query={app=\"shop\"' "
      "http://127.0.0.1:%d/loki/api/v1/query_range",
      p, f->qport, op, f->port, (long long)now - 60, (long long)now + 60, f->qport, f->qport, f->qport, f->qport,
      f->qport);
  char *lines[8] = {0};
  int nl = 0;
  for (char *s = j->out; s && nl < 8; nl++) {
    lines[nl] = s;
    s = strchr(s, '\n');
    if (s) *s++ = 0;
  }
  assert_true(nl >= 7);
  assert_string_equal(lines[0], "204");
  assert_string_equal(lines[1], "{} 200");
  assert_non_null(strstr(lines[2], "\"resultType\":\"streams\""));
  assert_non_null(strstr(lines[2], "\"stream\":{\"app\":\"shop\",\"env\":\"dev\"}"));
  assert_non_null(strstr(lines[2], "payment failed"));
  assert_null(strstr(lines[2], "GET / 200"));
  assert_null(strstr(lines[2], "elsewhere"));
  assert_null(strstr(lines[2], "ERROR timeout")); /* |= is case-sensitive */
  /* regex filter + negative filter, forward */
  assert_non_null(strstr(lines[3], "ERROR timeout"));
  assert_null(strstr(lines[3], "payment"));
  /* trace correlation: the Loki line (trace_id= in the text) and the OTLP record */
  assert_non_null(strstr(lines[4], "payment failed"));
  assert_non_null(strstr(lines[4], "db down"));
  assert_non_null(strstr(lines[4], "\"spanId\":\"00f067aa0ba902b7\""));
  assert_non_null(strstr(lines[5], "\"level\":\"ERROR\""));
  assert_non_null(strstr(lines[5], "db down"));
  assert_non_null(strstr(lines[6], "parse error"));
  assert_non_null(strstr(lines[6], " 400"));
  free(j);
  stop(f);
}

/* Series with __name__ = name in the tsdb: number of samples of the first. */
static size_t select_count(fixture_t *f, const char *name, const char *lname, const char *lval, double *last) {
  sk_pool_t *pool = sk_pool_new();
  tl_matcher_t m[2];
  char err[100];
  size_t nm = 1;
  assert_int_equal(tl_matcher_init(&m[0], TL_MATCH_EQ, "__name__", name, err, sizeof err), 0);
  if (lname) {
    assert_int_equal(tl_matcher_init(&m[1], TL_MATCH_EQ, lname, lval, err, sizeof err), 0);
    nm = 2;
  }
  tl_series_t *s = NULL;
  size_t n = 0, samples = 0;
  assert_true(tl_tsdb_select(tl_app_tsdb(f->app), pool, m, nm, 0, INT64_MAX, 0, 0, &s, &n) >= 0);
  if (n) {
    samples = s[0].n;
    if (last && s[0].n) *last = s[0].v[s[0].n - 1];
  }
  for (size_t i = 0; i < nm; i++) tl_matcher_done(&m[i]);
  sk_pool_free(pool);
  return samples;
}

static void test_otlp_metrics_and_remote_write(void **state) {
  fixture_t *f = start();
  long long now_ms = (long long)time(NULL) * 1000;
  char body[3000];
  snprintf(body, sizeof body,
           "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{"
           "\"stringValue\":\"shop\"}},{\"key\":\"service.instance.id\",\"value\":{\"stringValue\":\"i-1\"}}]},"
           "\"scopeMetrics\":[{\"metrics\":["
           "{\"name\":\"http.requests\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[{"
           "\"attributes\":[{\"key\":\"http.method\",\"value\":{\"stringValue\":\"GET\"}}],\"timeUnixNano\":\"%lld000000\","
           "\"asInt\":\"7\"}]}},"
           "{\"name\":\"latency\",\"histogram\":{\"aggregationTemporality\":2,\"dataPoints\":[{\"timeUnixNano\":"
           "\"%lld000000\",\"count\":\"4\",\"sum\":1.5,\"bucketCounts\":[\"1\",\"2\",\"1\"],\"explicitBounds\":[0.1,0.5]}]}},"
           "{\"name\":\"temp\",\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":\"%lld000000\",\"asDouble\":21.5}]}},"
           "{\"name\":\"deltas\",\"sum\":{\"aggregationTemporality\":1,\"dataPoints\":[{\"timeUnixNano\":\"%lld000000\","
           "\"asInt\":\"1\"}]}}]}]}]}",
           now_ms, now_ms, now_ms, now_ms);
  const char *p = write_file("metrics.json", body, strlen(body));

  /* remote-write: one series, three samples, snappy block format */
  Prometheus__WriteRequest wr = PROMETHEUS__WRITE_REQUEST__INIT;
  Prometheus__TimeSeries ts = PROMETHEUS__TIME_SERIES__INIT;
  Prometheus__Label l0 = PROMETHEUS__LABEL__INIT, l1 = PROMETHEUS__LABEL__INIT;
  l0.name = "__name__", l0.value = "rw_metric";
  l1.name = "job", l1.value = "rw";
  Prometheus__Label *ls[] = {&l0, &l1};
  Prometheus__Sample s0 = PROMETHEUS__SAMPLE__INIT, s1 = PROMETHEUS__SAMPLE__INIT, s2 = PROMETHEUS__SAMPLE__INIT;
  s0.has_value = s0.has_timestamp = s1.has_value = s1.has_timestamp = s2.has_value = s2.has_timestamp = 1;
  s0.value = 1, s0.timestamp = now_ms - 2000;
  s1.value = 2, s1.timestamp = now_ms - 1000;
  s2.value = 3, s2.timestamp = now_ms;
  Prometheus__Sample *ss[] = {&s0, &s1, &s2};
  ts.n_labels = 2, ts.labels = ls, ts.n_samples = 3, ts.samples = ss;
  Prometheus__TimeSeries *tss[] = {&ts};
  wr.n_timeseries = 1, wr.timeseries = tss;
  size_t plen = protobuf_c_message_get_packed_size(&wr.base);
  uint8_t *raw = malloc(plen);
  protobuf_c_message_pack(&wr.base, raw);
  size_t clen = snappy_max_compressed_length(plen);
  char *comp = malloc(clen);
  assert_int_equal(snappy_compress((const char *)raw, plen, comp, &clen), SNAPPY_OK);
  const char *rp = write_file("rw.bin", comp, clen);
  free(raw);
  free(comp);

  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -w ' %%{http_code}\\n' -H 'Content-Type: application/json' --data-binary @%s "
                        "http://127.0.0.1:%d/v1/metrics; "
                        "curl -m 20 -sS -w '%%{http_code}\\n' -H 'Content-Type: application/x-protobuf' -H "
                        "'Content-Encoding: snappy' -H 'X-Prometheus-Remote-Write-Version: 0.1.0' --data-binary @%s "
                        "http://127.0.0.1:%d/api/v1/write; "
                        "curl -m 20 -sS -w ' %%{http_code}\\n' --data-binary 'not snappy' "
                        "http://127.0.0.1:%d/api/v1/write",
                        p, f->port, rp, f->qport, f->qport);
  assert_non_null(strstr(j->out, "\"rejectedDataPoints\":\"1\""));
  assert_non_null(strstr(j->out, "delta temporality"));
  assert_non_null(strstr(j->out, " 200\n204\n"));
  assert_non_null(strstr(j->out, "snappy"));
  assert_non_null(strstr(j->out, " 400\n"));
  free(j);

  double v = 0;
  assert_int_equal(select_count(f, "http_requests_total", "job", "shop", &v), 1);
  assert_true(v == 7);
  assert_int_equal(select_count(f, "http_requests_total", "instance", "i-1", NULL), 1);
  assert_int_equal(select_count(f, "http_requests_total", "http_method", "GET", NULL), 1);
  assert_int_equal(select_count(f, "latency_bucket", "le", "0.5", &v), 1);
  assert_true(v == 3);
  assert_int_equal(select_count(f, "latency_bucket", "le", "+Inf", &v), 1);
  assert_true(v == 4);
  assert_int_equal(select_count(f, "latency_count", NULL, NULL, &v), 1);
  assert_true(v == 4);
  assert_int_equal(select_count(f, "latency_sum", NULL, NULL, &v), 1);
  assert_true(v == 1.5);
  assert_int_equal(select_count(f, "temp", NULL, NULL, &v), 1);
  assert_true(v == 21.5);
  assert_int_equal(select_count(f, "deltas", NULL, NULL, NULL), 0);
  assert_int_equal(select_count(f, "rw_metric", "job", "rw", &v), 3);
  assert_true(v == 3);
  stop(f);
}

/* A scrape target: a tiny HTTP server serving an exposition body. */
static void expo_handler(sk_http_req_t *req, void *ud) {
  const char *body =
      "# HELP shop_orders_total Orders.\n# TYPE shop_orders_total counter\n"
      "shop_orders_total{kind=\"book\",job=\"inner\"} 12\n"
      "shop_temp 3.5e1\nshop_esc{path=\"a\\\"b\\\\c\\n\"} +Inf\n";
  sk_http_respond_text(req, 200, SK_METRICS_CONTENT_TYPE, body);
}

static int g_target_port;
static void scrape_cfg(tl_config_t *c) {
  static tl_scrape_cfg_t sc;
  static char *targets[2];
  static char t0[64];
  snprintf(t0, sizeof t0, "127.0.0.1:%d", g_target_port);
  targets[0] = t0;
  targets[1] = "127.0.0.1:1"; /* nothing listens: up 0 */
  memset(&sc, 0, sizeof sc);
  sc.job = "shop";
  sc.targets.v = targets;
  sc.targets.n = 2;
  sc.interval_ms = 200;
  sc.timeout_ms = 1000;
  sc.metrics_path = "/metrics";
  c->scrape_configs.v = &sc;
  c->scrape_configs.n = 1;
}

static void test_scrape(void **state) {
  uv_loop_t tmp;
  (void)tmp;
  fixture_t *f = NULL;
  /* the target runs on the same loop as the app */
  uv_loop_t *loop = malloc(sizeof *loop);
  uv_loop_init(loop);
  sk_http_server_t *srv = NULL;
  sk_http_server_opts_t so = {.host = "127.0.0.1", .port = 0};
  assert_int_equal(sk_http_server_new(loop, &so, expo_handler, NULL, &srv), 0);
  g_target_port = sk_http_server_port(srv);
  f = start_with(scrape_cfg);
  /* move the target onto the app's loop: simplest is to run both loops */
  int found = 0;
  for (int i = 0; i < 200 && !found; i++) {
    uv_run(loop, UV_RUN_NOWAIT);
    uv_timer_start(&f->tick, tick, 10, 0);
    uv_run(&f->loop, UV_RUN_ONCE);
    uv_run(loop, UV_RUN_NOWAIT);
    double up = -1;
    if (select_count(f, "shop_orders_total", NULL, NULL, NULL) > 0 &&
        select_count(f, "up", "instance", "127.0.0.1:1", &up) > 0)
      found = 1;
    usleep(10000);
  }
  assert_true(found);
  double v = 0;
  assert_true(select_count(f, "shop_orders_total", "exported_job", "inner", &v) > 0);
  assert_true(v == 12);
  assert_true(select_count(f, "shop_temp", "job", "shop", &v) > 0);
  assert_true(v == 35);
  assert_true(select_count(f, "shop_esc", "path", "a\"b\\c\n", NULL) > 0);
  char inst[64];
  snprintf(inst, sizeof inst, "127.0.0.1:%d", g_target_port);
  assert_true(select_count(f, "up", "instance", inst, &v) > 0);
  assert_true(v == 1);
  assert_true(select_count(f, "up", "instance", "127.0.0.1:1", &v) > 0);
  assert_true(v == 0);
  assert_true(select_count(f, "scrape_duration_seconds", "instance", inst, NULL) > 0);
  f->cfg.scrape_configs.v = NULL; /* static, not ours to free */
  f->cfg.scrape_configs.n = 0;
  stop_with(f, loop);
  sk_http_server_free(srv);
  for (int i = 0; i < 1000 && uv_run(loop, UV_RUN_NOWAIT); i++) usleep(1000);
  sk_test_loop_drain(loop);
  free(loop);
}

static void test_expo_parser(void **state) {
  sk_pool_t *pool = sk_pool_new();
  tl_samples_t s = {0};
  char err[200];
  const char *ok = "a 1\n# comment\n\nb{x=\"1\",y=\"2\",} 2 1700000000000\r\nc NaN\nd -Inf\n";
  assert_int_equal(tl_expo_parse(pool, ok, strlen(ok), NULL, &s, err, sizeof err), 0);
  assert_int_equal(s.n, 4);
  assert_int_equal(s.v[1].ts_ms, 1700000000000LL);
  assert_int_equal(s.v[1].nlabels, 3);
  const char *bad[] = {"a{x=1} 1\n", "a{x=\"1\" 1\n", "a\n", "1a 2\n", "a 1 2 3\n", "a{=\"x\"} 1\n", "a zz\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tl_samples_t t = {0};
    assert_true(tl_expo_parse(pool, bad[i], strlen(bad[i]), NULL, &t, err, sizeof err) < 0);
    assert_non_null(strstr(err, "line 1:"));
  }
  tl_samples_t t = {0};
  tl_expo_opts_t o = {.max_samples = 2};
  assert_int_equal(tl_expo_parse(pool, ok, strlen(ok), &o, &t, err, sizeof err), SK_ELIMIT);
  sk_pool_free(pool);
}

/* ---- span and log retention, driven by a chosen "now" ---- */

static void retention_cfg(tl_config_t *c) {
  c->retention_ms = 2 * 3600 * 1000;  /* logs follow this (log_retention 0) */
  c->trace_retention_ms = 3600 * 1000; /* spans: 1h */
}

static void put_span(tl_sigdb_t *db, int i, int64_t start_ns) {
  char tid[33], sid[17];
  snprintf(tid, sizeof tid, "%032x", i + 1);
  snprintf(sid, sizeof sid, "%016x", i + 1);
  assert_int_equal(sk_store_exec(db->w,
                                 "INSERT INTO spans(trace_id, span_id, service, name, start_ns, end_ns)"
                                 " VALUES(?,?,'svc','op',?,?)",
                                 SK_SQL_ARGS(SK_SQL_TEXT(tid), SK_SQL_TEXT(sid), SK_SQL_INT(start_ns),
                                             SK_SQL_INT(start_ns + 1000))),
                   1);
}

static int64_t count_sql(tl_sigdb_t *db, const char *sql) {
  int64_t v = -1;
  assert_true(sk_store_query_int64(db->r, sql, NULL, 0, &v) >= 0);
  return v;
}

static void put_log(tl_sigdb_t *db, const char *labels, const char *body, int64_t ts_ns) {
  tl_logline_t l = {.ts_ns = ts_ns, .observed_ns = ts_ns, .labels_json = labels, .body = body};
  char err[256] = "";
  assert_int_equal(tl_sigdb_put_logs(db, &l, 1, err, sizeof err), 0);
}

static void test_span_log_retention(void **state) {
  (void)state;
  fixture_t *f = start_with(retention_cfg);
  tl_sigdb_t *db = tl_app_sigdb(f->app);
  const int64_t now_ms = 1760000000000LL, ms = 1000000, h = 3600000LL * ms;
  const int64_t now_ns = now_ms * ms;
  /* spans: 1h retention; logs: 2h (from retention) */
  put_span(db, 1, now_ns - 3 * h);
  put_span(db, 2, now_ns - h - 1000 * ms);
  put_span(db, 3, now_ns - h + 60000 * ms); /* 59 minutes old: stays */
  put_span(db, 4, now_ns);
  put_log(db, "{\"app\":\"gone\"}", "ancient", now_ns - 5 * h);
  put_log(db, "{\"app\":\"shop\"}", "old line", now_ns - 2 * h - ms);
  put_log(db, "{\"app\":\"shop\"}", "recent line", now_ns - 90 * 60000 * ms); /* 1h30 old: stays */
  put_log(db, "{\"app\":\"shop\"}", "new line", now_ns);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM streams"), 2);

  char err[256] = "";
  /* an earlier "now" expires nothing */
  assert_int_equal(tl_app_maintain(f->app, now_ms - 6 * 3600000LL, err, sizeof err), 0);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 4);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM logs"), 4);

  assert_int_equal(tl_app_maintain(f->app, now_ms, err, sizeof err), 0);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 2);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans WHERE span_id IN ('0000000000000004',"
                                 " '0000000000000005')"),
                   2);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM logs"), 2);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM logs WHERE body IN ('recent line', 'new line')"), 2);
  /* the stream whose lines all expired is gone, the live one stays */
  assert_int_equal(count_sql(db, "SELECT count(*) FROM streams"), 1);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM streams WHERE labels = '{\"app\":\"shop\"}'"), 1);

  /* the recent data is still served by the query API */
  sk_test_job_t *j = sh(f,
                        "curl -m 20 -sS -w ' %%{http_code}' http://127.0.0.1:%d/api/traces/"
                        "00000000000000000000000000000005",
                        f->qport);
  assert_non_null(strstr(j->out, " 200"));
  assert_non_null(strstr(j->out, "0000000000000005"));
  free(j);
  stop(f);
}

static void test_retention_batches(void **state) {
  (void)state;
  char path[600], err[256] = "";
  snprintf(path, sizeof path, "%s/sigdb-%d.sqlite", sk_test_tmpdir(), rand());
  tl_sigdb_t *db = NULL;
  assert_int_equal(tl_sigdb_open(path, 1, &db, err, sizeof err), 0);
  for (int i = 0; i < 10; i++) put_span(db, i, 1000 + i);
  put_span(db, 10, 5000);
  for (int i = 0; i < 7; i++) put_log(db, "{\"a\":\"b\"}", "x", 100 + i);
  put_log(db, "{\"a\":\"c\"}", "keep", 9000);
  tl_sigdb_expired_t ex;
  /* 3 rows a batch, at most 2 batches a call: 6 spans, 6 lines, then more */
  assert_int_equal(tl_sigdb_expire(db, 4000, 4000, 3, 2, &ex, err, sizeof err), 0);
  assert_int_equal(ex.spans, 6);
  assert_int_equal(ex.logs, 6);
  assert_int_equal(ex.streams, 0);
  assert_true(ex.more);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 5);
  /* the oldest went first */
  assert_int_equal(count_sql(db, "SELECT min(start_ns) FROM spans"), 1006);
  assert_int_equal(tl_sigdb_expire(db, 4000, 4000, 3, 2, &ex, err, sizeof err), 0);
  assert_int_equal(ex.spans, 4);
  assert_int_equal(ex.logs, 1);
  assert_int_equal(ex.streams, 1);
  assert_false(ex.more);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 1);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM logs WHERE body = 'keep'"), 1);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM streams"), 1);
  /* cutoffs <= 0 keep everything */
  assert_int_equal(tl_sigdb_expire(db, 0, -1, 3, 2, &ex, err, sizeof err), 0);
  assert_int_equal(ex.spans + ex.logs, 0);
  tl_sigdb_close(db);
  unlink(path);
}

/* ---- the span store's JSON writer and schema ---- */

/* attributes as a JSON array through the writer */
static void attrs_write(sk_buf_t *b, Otlp__KeyValue *const *kv, size_t n) {
  int first = 1;
  sk_buf_append(b, "[", 1);
  for (size_t i = 0; i < n; i++) {
    if (!kv[i]) continue;
    if (!first) sk_buf_append(b, ",", 1);
    first = 0;
    tl_pb_json_write(b, &kv[i]->base);
  }
  sk_buf_append(b, "]", 1);
}

/* writer output parses to the same document as the jansson tree */
static void assert_same_json(sk_buf_t *b, json_t *tree) {
  json_error_t je;
  json_t *got = json_loadb(b->data ? b->data : "", b->len, JSON_DECODE_ANY, &je);
  if (!got) fail_msg("writer output does not parse: %s: %.*s", je.text, (int)b->len, b->data);
  if (!json_equal(got, tree)) {
    char *t = json_dumps(tree, JSON_COMPACT | JSON_ENCODE_ANY);
    fail_msg("writer %.*s\ntree   %s", (int)b->len, b->data, t);
  }
  json_decref(got);
  json_decref(tree);
}

static const char rich_traces[] =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
      "\"w\\u00e9b \\\"q\\\" \\\\ \\n\\t\\u0001 \\u2603\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"s\",\"version\":"
      "\"1\"},\"spans\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"1112131415161718\","
      "\"parentSpanId\":\"2122232425262728\",\"traceState\":\"k=v\",\"name\":\"op\",\"kind\":2,"
      "\"startTimeUnixNano\":\"1700000000000000000\",\"endTimeUnixNano\":\"18446744073709551615\","
      "\"attributes\":[{\"key\":\"i\",\"value\":{\"intValue\":\"-9223372036854775808\"}},"
      "{\"key\":\"d\",\"value\":{\"doubleValue\":1}},{\"key\":\"d2\",\"value\":{\"doubleValue\":0.1}},"
      "{\"key\":\"d3\",\"value\":{\"doubleValue\":-1e300}},{\"key\":\"nan\",\"value\":{\"doubleValue\":\"NaN\"}},"
      "{\"key\":\"inf\",\"value\":{\"doubleValue\":\"-Infinity\"}},{\"key\":\"b\",\"value\":{\"boolValue\":false}},"
      "{\"key\":\"t\",\"value\":{\"boolValue\":true}},{\"key\":\"y\",\"value\":{\"bytesValue\":\"AQID/w==\"}},"
      "{\"key\":\"y1\",\"value\":{\"bytesValue\":\"AQ==\"}},{\"key\":\"y0\",\"value\":{\"bytesValue\":\"\"}},"
      "{\"key\":\"a\",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":\"x\"},{\"intValue\":3},"
      "{\"arrayValue\":{}},{\"kvlistValue\":{\"values\":[{\"key\":\"n\",\"value\":{}}]}}]}}},"
      "{\"key\":\"empty\",\"value\":{}},{\"key\":\"nokey-next\"},{\"value\":{\"stringValue\":\"no key\"}}],"
      "\"droppedAttributesCount\":2,"
      "\"events\":[{\"timeUnixNano\":\"1700000000000000001\",\"name\":\"ev\",\"attributes\":[{\"key\":\"e\","
      "\"value\":{\"stringValue\":\"v\"}}]},{}],"
      "\"links\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f11\",\"spanId\":\"3132333435363738\","
      "\"traceState\":\"a=b\",\"flags\":1,\"attributes\":[{\"key\":\"l\",\"value\":{\"doubleValue\":2.5}}]}],"
      "\"status\":{\"code\":2,\"message\":\"boom\"}}]}]}]}";

static void test_span_json_writer(void **state) {
  (void)state;
  const char *doc = rich_traces;
  sk_pool_t *pool = sk_pool_new();
  char err[256] = "";
  Otlp__ExportTraceServiceRequest *r = NULL;
  assert_int_equal(tl_otlp_json_traces(pool, doc, strlen(doc), &r, err, sizeof err), 0);
  sk_buf_t b;
  sk_buf_init(&b);
  /* the whole request through the descriptor-driven writer */
  tl_pb_json_write(&b, &r->base);
  assert_same_json(&b, tl_pb_to_json(&r->base));
  Otlp__Span *sp = r->resource_spans[0]->scope_spans[0]->spans[0];
  sk_buf_reset(&b);
  attrs_write(&b, sp->attributes, sp->n_attributes);
  assert_same_json(&b, tl_otlp_attrs_json(sp->attributes, sp->n_attributes));
  Otlp__KeyValue **ra = r->resource_spans[0]->resource->attributes;
  sk_buf_reset(&b);
  attrs_write(&b, ra, 1);
  assert_same_json(&b, tl_otlp_attrs_json(ra, 1));
  for (size_t i = 0; i < sp->n_events; i++) {
    sk_buf_reset(&b);
    tl_pb_json_write(&b, &sp->events[i]->base);
    assert_same_json(&b, tl_pb_to_json(&sp->events[i]->base));
  }
  /* invalid UTF-8 and DEL, which no JSON document can carry: U+FFFD, as the tree */
  Otlp__AnyValue v = OTLP__ANY_VALUE__INIT;
  v.value_case = OTLP__ANY_VALUE__VALUE_STRING_VALUE;
  v.string_value = "a\xff\xc3(b\x7f\xed\xa0\x80z";
  Otlp__KeyValue kv = OTLP__KEY_VALUE__INIT, *kvp[2] = {&kv, NULL};
  kv.key = "bad\xe2\x82";
  kv.value = &v;
  sk_buf_reset(&b);
  attrs_write(&b, kvp, 2);
  assert_same_json(&b, tl_otlp_attrs_json(kvp, 1));
  /* the common case, byte for byte */
  v.string_value = "GET";
  kv.key = "http.request.method";
  sk_buf_reset(&b);
  attrs_write(&b, kvp, 1);
  assert_int_equal(b.len, strlen("[{\"key\":\"http.request.method\",\"value\":{\"stringValue\":\"GET\"}}]"));
  assert_memory_equal(b.data, "[{\"key\":\"http.request.method\",\"value\":{\"stringValue\":\"GET\"}}]", b.len);
  sk_buf_done(&b);
  sk_pool_free(pool);
}

static int same_rows(const tl_span_rows_t *a, const tl_span_rows_t *b) {
  if (a->n != b->n || a->rejected != b->rejected) return 0;
  for (size_t i = 0; i < a->n; i++) {
    const tl_span_row_t *x = &a->v[i], *y = &b->v[i];
    const tl_str_t sx[] = {x->service, x->name, x->scope, x->scope_version, x->trace_state, x->status_msg};
    const tl_str_t sy[] = {y->service, y->name, y->scope, y->scope_version, y->trace_state, y->status_msg};
    for (int k = 0; k < 6; k++)
      if (!sx[k].p != !sy[k].p || sx[k].len != sy[k].len || (sx[k].p && memcmp(sx[k].p, sy[k].p, (size_t)sx[k].len)))
        return 0;
    const size_t ox[] = {x->res_off, x->attrs_off, x->events_off, x->links_off};
    const size_t oy[] = {y->res_off, y->attrs_off, y->events_off, y->links_off};
    const int lx[] = {x->res_len, x->attrs_len, x->events_len, x->links_len};
    const int ly[] = {y->res_len, y->attrs_len, y->events_len, y->links_len};
    for (int k = 0; k < 4; k++) /* byte for byte: JSON in the schema's field order, protobuf canonical */
      if (lx[k] != ly[k] || (lx[k] > 0 && memcmp(a->json->data + ox[k], b->json->data + oy[k], (size_t)lx[k])))
        return 0;
    if (strcmp(x->tid, y->tid) || strcmp(x->sid, y->sid) || strcmp(x->pid, y->pid) || x->kind != y->kind ||
        x->status != y->status || x->start_ns != y->start_ns || x->end_ns != y->end_ns)
      return 0;
  }
  return 1;
}

/* Rows read straight from protobuf bytes are those of the decoded message;
 * what that decoder does not take is left to protobuf-c. */
static void test_span_rows_from_wire(void **state) {
  (void)state;
  sk_pool_t *pool = sk_pool_new();
  char err[256] = "";
  Otlp__ExportTraceServiceRequest *r = NULL;
  assert_int_equal(tl_otlp_json_traces(pool, rich_traces, strlen(rich_traces), &r, err, sizeof err), 0);
  /* a second span with bad ids (rejected) and a root span in another scope */
  Otlp__ScopeSpans *ss = r->resource_spans[0]->scope_spans[0];
  Otlp__Span bad = OTLP__SPAN__INIT, root = OTLP__SPAN__INIT;
  uint8_t tid[16] = {9}, sid[8] = {7};
  root.trace_id = (ProtobufCBinaryData){16, tid};
  root.has_trace_id = 1;
  root.span_id = (ProtobufCBinaryData){8, sid};
  root.has_span_id = 1;
  Otlp__Span *spans[3] = {ss->spans[0], &bad, &root};
  ss->spans = spans;
  ss->n_spans = 3;
  size_t len;
  uint8_t *pb = tl_pb_pack(pool, &r->base, &len);
  sk_buf_t ja, jb;
  sk_buf_init(&ja);
  sk_buf_init(&jb);
  tl_span_rows_t a = {.json = &ja}, b = {.json = &jb};
  assert_int_equal(tl_span_rows_from_wire(pool, pb, len, &a), 1);
  Otlp__ExportTraceServiceRequest *back = (Otlp__ExportTraceServiceRequest *)tl_pb_unpack(
      pool, &otlp__export_trace_service_request__descriptor, pb, len, err, sizeof err);
  assert_non_null(back);
  tl_span_rows_from_msg(pool, back, &b);
  assert_int_equal(a.n, 2);
  assert_int_equal(a.rejected, 1);
  assert_true(same_rows(&a, &b));
  assert_string_equal(a.v[0].pid, "2122232425262728");
  assert_string_equal(a.v[1].pid, "");
  assert_int_equal(a.v[0].events_len > 0 && a.v[0].links_len > 0 && a.v[1].events_len < 0, 1);

  /* left to protobuf-c: a string with a NUL, a status given twice, bad framing */
  static const uint8_t nul_name[] = {0x0a, 0x24, 0x12, 0x22, 0x12, 0x20, 0x0a, 0x10, 1, 2, 3, 4, 5, 6, 7, 8,
                                     9, 10, 11, 12, 13, 14, 15, 16, 0x12, 0x08, 1, 2, 3, 4, 5, 6, 7, 8,
                                     0x2a, 0x02, 'a', 0};
  static const uint8_t two_status[] = {0x0a, 0x0c, 0x12, 0x0a, 0x12, 0x08, 0x7a, 0x02, 0x18, 0x02,
                                       0x7a, 0x02, 0x18, 0x01};
  static const uint8_t truncated[] = {0x0a, 0x10, 0x12, 0x05};
  const struct {
    const uint8_t *p;
    size_t n;
  } left[] = {{nul_name, sizeof nul_name}, {two_status, sizeof two_status}, {truncated, sizeof truncated}};
  for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
    sk_buf_reset(&ja);
    tl_span_rows_t c = {.json = &ja};
    assert_int_equal(tl_span_rows_from_wire(pool, left[i].p, left[i].n, &c), 0);
    assert_int_equal(c.n + c.rejected + ja.len, 0);
    /* protobuf-c takes the first two (and so the request is stored) */
    ProtobufCMessage *m = tl_pb_unpack(pool, &otlp__export_trace_service_request__descriptor, left[i].p,
                                       left[i].n, err, sizeof err);
    if (i < 2) assert_non_null(m);
    else assert_null(m);
  }
  sk_buf_done(&ja);
  sk_buf_done(&jb);
  sk_pool_free(pool);
}

/* A database written by the first span schema (WITHOUT ROWID spans, an
 * index on service) is migrated when opened: rows kept, then replaced and
 * added through the new path. */
static void test_span_schema_migration(void **state) {
  (void)state;
  static const char *const v1[] = {
      "CREATE TABLE spans(trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT NOT NULL DEFAULT '',"
      " service TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL DEFAULT 0,"
      " start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
      " status_msg TEXT, trace_state TEXT, scope_name TEXT, scope_version TEXT, attrs TEXT, resource TEXT,"
      " events TEXT, links TEXT, PRIMARY KEY(trace_id, span_id)) WITHOUT ROWID;"
      "CREATE INDEX spans_start ON spans(start_ns);"
      "CREATE INDEX spans_svc ON spans(service, start_ns);"
      "CREATE TABLE streams(id INTEGER PRIMARY KEY, labels TEXT NOT NULL UNIQUE);"
      "CREATE TABLE logs(id INTEGER PRIMARY KEY, stream INTEGER NOT NULL, ts_ns INTEGER NOT NULL,"
      " observed_ns INTEGER, severity INTEGER, severity_text TEXT, body TEXT NOT NULL, trace_id TEXT,"
      " span_id TEXT, attrs TEXT);"
      "CREATE INDEX logs_ts ON logs(ts_ns);"
      "CREATE INDEX logs_stream_ts ON logs(stream, ts_ns);"
      "CREATE INDEX logs_trace ON logs(trace_id) WHERE trace_id IS NOT NULL;"};
  char path[600], err[256] = "";
  snprintf(path, sizeof path, "%s/sigdb-v1-%d.sqlite", sk_test_tmpdir(), rand());
  sk_store_t *old = NULL;
  sk_store_opts_t o = {.path = path, .non_durable = 1, .migrations = v1, .nmigrations = 1};
  assert_int_equal(sk_store_open(&o, &old), 0);
  for (int i = 0; i < 3; i++) {
    char sid[17];
    snprintf(sid, sizeof sid, "%016x", i + 1);
    assert_int_equal(sk_store_exec(old,
                                   "INSERT INTO spans(trace_id, span_id, service, name, start_ns, end_ns, attrs,"
                                   " resource) VALUES('0102030405060708090a0b0c0d0e0f10',?,'old','op',?,?,"
                                   " '[{\"key\":\"k\",\"value\":{\"stringValue\":\"v1\"}}]', '[]')",
                                   SK_SQL_ARGS(SK_SQL_TEXT(sid), SK_SQL_INT(3000 - i), SK_SQL_INT(4000))),
                     1);
  }
  sk_store_close(old);

  tl_sigdb_t *db = NULL;
  assert_int_equal(tl_sigdb_open(path, 1, &db, err, sizeof err), 0);
  assert_int_equal(sk_store_schema_version(db->w), 2);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 3);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM pragma_index_list('spans') WHERE name = 'spans_svc'"), 0);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans WHERE service = 'old' AND attrs LIKE '%v1%'"), 3);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans WHERE end_ns = 4000 AND start_ns BETWEEN 2998 AND 3000"), 3);

  /* span 1 again (replaced) and a new span 4 */
  static const char doc[] =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":"
      "\"new\"}}]},\"scopeSpans\":[{\"spans\":[{\"traceId\":\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":"
      "\"0000000000000001\",\"name\":\"op\",\"startTimeUnixNano\":\"5000\",\"endTimeUnixNano\":\"6000\","
      "\"attributes\":[{\"key\":\"k\",\"value\":{\"stringValue\":\"v2\"}}]},{\"traceId\":"
      "\"0102030405060708090a0b0c0d0e0f10\",\"spanId\":\"0000000000000004\",\"name\":\"op\","
      "\"startTimeUnixNano\":\"5001\",\"endTimeUnixNano\":\"6000\"},{\"traceId\":\"00\",\"spanId\":\"01\"}]}]}]}";
  sk_pool_t *pool = sk_pool_new();
  Otlp__ExportTraceServiceRequest *r = NULL;
  assert_int_equal(tl_otlp_json_traces(pool, doc, strlen(doc), &r, err, sizeof err), 0);
  size_t acc = 0, rej = 0;
  assert_int_equal(tl_sigdb_put_spans(db, pool, r, &acc, &rej, err, sizeof err), 0);
  assert_int_equal(acc, 2);
  assert_int_equal(rej, 1);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 4);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans WHERE span_id = '0000000000000001' AND service = 'new'"
                                 " AND typeof(attrs) = 'blob' AND typeof(resource) = 'blob' AND events IS NULL"
                                 " AND links IS NULL"),
                   1);
  /* attributes are stored as an OTLP KeyValueList */
  sk_stmt_t *st = NULL;
  assert_int_equal(sk_store_prepare(db->r, "SELECT attrs FROM spans WHERE span_id = '0000000000000001'", &st), 0);
  assert_int_equal(sk_stmt_step(st), 1);
  size_t blen = 0;
  const void *blob = sk_stmt_blob(st, 0, &blen);
  Otlp__KeyValueList *kvl = (Otlp__KeyValueList *)tl_pb_unpack(pool, &otlp__key_value_list__descriptor, blob, blen,
                                                               err, sizeof err);
  assert_non_null(kvl);
  sk_stmt_done(st);
  json_t *aj = tl_otlp_attrs_json(kvl->values, kvl->n_values);
  char *as = json_dumps(aj, JSON_COMPACT);
  assert_string_equal(as, "[{\"key\":\"k\",\"value\":{\"stringValue\":\"v2\"}}]");
  free(as);
  json_decref(aj);
  /* retention over the migrated table */
  tl_sigdb_expired_t ex;
  assert_int_equal(tl_sigdb_expire(db, 4500, 0, 10, 1, &ex, err, sizeof err), 0);
  assert_int_equal(ex.spans, 2);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 2);
  sk_pool_free(pool);
  tl_sigdb_close(db);

  /* reopening applies nothing more */
  assert_int_equal(tl_sigdb_open(path, 1, &db, err, sizeof err), 0);
  assert_int_equal(sk_store_schema_version(db->w), 2);
  assert_int_equal(count_sql(db, "SELECT count(*) FROM spans"), 2);
  tl_sigdb_close(db);
  unlink(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_otlp_traces_protobuf), cmocka_unit_test(test_otlp_json_gzip_errors),
      cmocka_unit_test(test_oversize_413),         cmocka_unit_test(test_backpressure_429),
      cmocka_unit_test(test_series_limit),         cmocka_unit_test(test_logs_loki),
      cmocka_unit_test(test_otlp_metrics_and_remote_write), cmocka_unit_test(test_scrape),
      cmocka_unit_test(test_expo_parser),          cmocka_unit_test(test_span_log_retention),
      cmocka_unit_test(test_retention_batches),   cmocka_unit_test(test_span_json_writer),
      cmocka_unit_test(test_span_schema_migration), cmocka_unit_test(test_span_rows_from_wire),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
