/* Unit tests: W3C traceparent/tracestate, sampling, span encoding (decoded
 * back with a protobuf reader written here from the wire-format rules) and
 * the OTLP/HTTP batch exporter against an in-process HTTP server
 * (retries on 503 with Retry-After, bounded queue, 4xx drop). */
#include "sk_test.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/trace.h"

/* ---- a protobuf reader for the checks ---- */

typedef struct pbf {
  unsigned field, wt;
  uint64_t v;          /* varint / fixed */
  const uint8_t *p;    /* LEN payload */
  size_t n;
} pbf_t;

static int rd_var(const uint8_t **p, const uint8_t *e, uint64_t *v) {
  uint64_t x = 0;
  for (int sh = 0; sh < 64 && *p < e; sh += 7) {
    uint8_t c = *(*p)++;
    x |= (uint64_t)(c & 0x7f) << sh;
    if (!(c & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

/* Next field of a message; 1 = got one, 0 = end; fails the test on junk. */
static int pb_next(const uint8_t **p, const uint8_t *e, pbf_t *f) {
  if (*p >= e) return 0;
  uint64_t tag = 0;
  assert_int_equal(rd_var(p, e, &tag), 0);
  f->field = (unsigned)(tag >> 3);
  f->wt = (unsigned)(tag & 7);
  f->p = NULL;
  f->n = 0;
  f->v = 0;
  switch (f->wt) {
  case 0: assert_int_equal(rd_var(p, e, &f->v), 0); break;
  case 1:
    assert_true(e - *p >= 8);
    for (int i = 0; i < 8; i++) f->v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 8;
    break;
  case 5:
    assert_true(e - *p >= 4);
    for (int i = 0; i < 4; i++) f->v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 4;
    break;
  case 2: {
    uint64_t n = 0;
    assert_int_equal(rd_var(p, e, &n), 0);
    assert_true(n <= (uint64_t)(e - *p));
    f->p = *p;
    f->n = (size_t)n;
    *p += n;
    break;
  }
  default: fail_msg("wire type %u", f->wt);
  }
  return 1;
}

/* The nth (0-based) occurrence of field in the message. */
static int pb_get(const uint8_t *m, size_t n, unsigned field, int nth, pbf_t *out) {
  const uint8_t *p = m, *e = m + n;
  pbf_t f;
  while (pb_next(&p, e, &f))
    if (f.field == field && nth-- == 0) {
      *out = f;
      return 1;
    }
  return 0;
}

static int pb_count(const uint8_t *m, size_t n, unsigned field) {
  const uint8_t *p = m, *e = m + n;
  pbf_t f;
  int c = 0;
  while (pb_next(&p, e, &f)) c += f.field == field;
  return c;
}

/* KeyValue list (field) lookup: the AnyValue of key. */
static int pb_attr(const uint8_t *m, size_t n, unsigned field, const char *key, pbf_t *any) {
  pbf_t kv, k;
  for (int i = 0; pb_get(m, n, field, i, &kv); i++) {
    assert_int_equal(kv.wt, 2);
    if (pb_get(kv.p, kv.n, 1, 0, &k) && k.n == strlen(key) && !memcmp(k.p, key, k.n)) {
      assert_true(pb_get(kv.p, kv.n, 2, 0, any));
      return 1;
    }
  }
  return 0;
}

static int pb_attr_str_eq(const uint8_t *m, size_t n, unsigned field, const char *key, const char *want) {
  pbf_t any, s;
  if (!pb_attr(m, n, field, key, &any)) return 0;
  if (!pb_get(any.p, any.n, 1, 0, &s)) return 0;
  return s.n == strlen(want) && !memcmp(s.p, want, s.n);
}

/* ---- traceparent ---- */

static void test_traceparent(void **state) {
  (void)state;
  sk_trace_ctx_t c;
  const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  assert_int_equal(sk_traceparent_parse(ok, &c), 0);
  assert_int_equal(c.trace_id[0], 0x4b);
  assert_int_equal(c.trace_id[15], 0x36);
  assert_int_equal(c.span_id[0], 0x00);
  assert_int_equal(c.span_id[7], 0xb7);
  assert_int_equal(c.flags, 1);
  char out[SK_TRACEPARENT_LEN + 1];
  sk_traceparent_format(&c, out);
  assert_string_equal(out, ok);
  char h[33];
  sk_trace_id_hex(c.trace_id, h);
  assert_string_equal(h, "4bf92f3577b34da6a3ce929d0e0e4736");
  /* not sampled; unknown flag bits are not kept */
  assert_int_equal(sk_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe", &c), 0);
  assert_int_equal(c.flags, 0);
  /* a later version may carry more fields */
  assert_int_equal(sk_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", &c), 0);
  assert_int_equal(sk_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c), 0);
  static const char *const bad[] = {
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",     /* 00 must be exact */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      /* version ff */
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",      /* upper case */
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",      /* zero trace */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      /* zero parent */
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",     /* later version, no dash */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(sk_traceparent_parse(bad[i], &c), SK_EPARSE);
  assert_int_equal(sk_traceparent_parse(NULL, &c), SK_EPARSE);
}

static void test_tracestate(void **state) {
  (void)state;
  char out[SK_TRACESTATE_MAX + 1];
  assert_int_equal(sk_tracestate_parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", out, sizeof out), 39);
  assert_string_equal(out, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
  /* OWS and empty members are dropped in the normal form */
  assert_true(sk_tracestate_parse(" a=1 ,\t, b@sys=x y ,", out, sizeof out) > 0);
  assert_string_equal(out, "a=1,b@sys=x y");
  assert_int_equal(sk_tracestate_parse("", out, sizeof out), 0);
  assert_string_equal(out, "");
  assert_true(sk_tracestate_parse("1tenant@vendor=v", out, sizeof out) > 0);
  static const char *const bad[] = {
      "A=1",          /* upper-case key */
      "a=1,a=2",      /* duplicate */
      "a",            /* no '=' */
      "a=",           /* empty value */
      "a=x ",         /* value ends in a blank (trailing blank is OWS: fine) - see below */
      "a=b=c",        /* '=' in value */
      "@v=1",         /* empty tenant */
      "t@=1",         /* empty system */
      "t@1sys=1",     /* system must start with a letter */
      "t@abcdefghijklmno=1", /* system id over 14 */
      "a=\x7f",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (i == 4) {
      assert_int_equal(sk_tracestate_parse(bad[i], out, sizeof out), 3); /* "a=x" */
      continue;
    }
    assert_int_equal(sk_tracestate_parse(bad[i], out, sizeof out), SK_EPARSE);
  }
  /* 33 members are too many */
  sk_buf_t b;
  sk_buf_init(&b);
  for (int i = 0; i < 33; i++) sk_buf_printf(&b, "%sk%d=v", i ? "," : "", i);
  assert_int_equal(sk_tracestate_parse(sk_buf_cstr(&b), out, sizeof out), SK_EPARSE);
  /* too long: a member over 128 goes first, then the last ones */
  sk_buf_reset(&b);
  char big[201];
  memset(big, 'x', 200);
  big[200] = 0;
  sk_buf_printf(&b, "a=%s,b=short,c=%s,d=tail", big, big);
  int n = sk_tracestate_parse(sk_buf_cstr(&b), out, 64);
  assert_true(n > 0 && n < 64);
  assert_string_equal(out, "b=short,d=tail");
  sk_buf_done(&b);
}

static void test_sampling(void **state) {
  (void)state;
  uint8_t id[16] = {0};
  sk_trace_ctx_t p = {.flags = SK_TRACE_FLAG_SAMPLED};
  assert_int_equal(sk_trace_should_sample(0, &p, id), 1); /* the parent decides */
  p.flags = 0;
  assert_int_equal(sk_trace_should_sample(1, &p, id), 0);
  assert_int_equal(sk_trace_should_sample(0, NULL, id), 0);
  assert_int_equal(sk_trace_should_sample(1, NULL, id), 1);
  /* the ratio is applied to the trace id: about half of random ids at 0.5 */
  int yes = 0;
  for (int i = 0; i < 4000; i++) {
    sk_trace_random(id, sizeof id);
    yes += sk_trace_should_sample(0.5, NULL, id);
  }
  assert_true(yes > 1600 && yes < 2400);
  memset(id, 0xff, sizeof id);
  assert_int_equal(sk_trace_should_sample(0.999, NULL, id), 0);
  memset(id + 8, 0, 8);
  assert_int_equal(sk_trace_should_sample(0.001, NULL, id), 1);
}

/* ---- encoding ---- */

typedef struct decoded {
  pbf_t rs, res, ss, scope;
  int nspans;
} decoded_t;

static void decode_request(const uint8_t *b, size_t n, decoded_t *d, const char *svc) {
  assert_int_equal(pb_count(b, n, 1), 1);
  assert_true(pb_get(b, n, 1, 0, &d->rs));
  assert_true(pb_get(d->rs.p, d->rs.n, 1, 0, &d->res));
  assert_true(pb_attr_str_eq(d->res.p, d->res.n, 1, "service.name", svc));
  assert_true(pb_get(d->rs.p, d->rs.n, 2, 0, &d->ss));
  assert_true(pb_get(d->ss.p, d->ss.n, 1, 0, &d->scope));
  pbf_t sn = {0};
  assert_true(pb_get(d->scope.p, d->scope.n, 1, 0, &sn));
  assert_int_equal(sn.n, 5);
  d->nspans = pb_count(d->ss.p, d->ss.n, 2);
}

static void test_span_encoding(void **state) {
  (void)state;
  sk_tracer_opts_t o = {.service_name = "svc-a", .sample_ratio = 1};
  sk_tracer_t *t;
  assert_int_equal(sk_tracer_new(&o, &t), 0); /* no endpoint: counted, not sent */
  sk_trace_ctx_t parent;
  assert_int_equal(sk_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &parent), 0);
  sk_span_t s;
  sk_span_begin(&s, t, "GET /x", SK_SPAN_SERVER, &parent, "rojo=1", 1000);
  assert_true(s.recording);
  assert_memory_equal(s.ctx.trace_id, parent.trace_id, 16);
  assert_memory_not_equal(s.ctx.span_id, parent.span_id, 8);
  sk_span_attr_str(&s, "http.request.method", "GET");
  sk_span_attr_int(&s, "http.response.status_code", 503);
  sk_span_attr_int(&s, "neg", -5);
  sk_span_attr_bool(&s, "ok", 1);
  sk_span_attr_double(&s, "ratio", 0.25);
  sk_span_event(&s, "retry", 1500, "skiff.reason", "upstream_reset");
  sk_span_set_status(&s, SK_SPAN_STATUS_ERROR, "upstream_reset");
  /* end by hand, to look at the Span bytes: they are s.pb plus the ids */
  sk_buf_t span;
  sk_buf_init(&span);
  sk_buf_append(&span, s.pb.data, s.pb.len);
  sk_span_end(&s, 3000);
  assert_false(s.recording);
  sk_tracer_stats_t st;
  sk_tracer_stats(t, &st);
  assert_int_equal(st.spans_ended, 1);
  assert_int_equal(st.spans_dropped, 1);

  /* the fields recorded before the end */
  const uint8_t *m = (const uint8_t *)span.data;
  size_t n = span.len;
  pbf_t f = {0}, any = {0};
  assert_true(pb_get(m, n, 5, 0, &f));
  assert_int_equal(f.n, 6);
  assert_memory_equal(f.p, "GET /x", 6);
  assert_true(pb_get(m, n, 6, 0, &f));
  assert_int_equal(f.v, 2);
  assert_true(pb_get(m, n, 3, 0, &f));
  assert_memory_equal(f.p, "rojo=1", 6);
  assert_true(pb_attr_str_eq(m, n, 9, "http.request.method", "GET"));
  assert_true(pb_attr(m, n, 9, "http.response.status_code", &any));
  assert_true(pb_get(any.p, any.n, 3, 0, &f));
  assert_int_equal(f.v, 503);
  assert_true(pb_attr(m, n, 9, "neg", &any));
  assert_true(pb_get(any.p, any.n, 3, 0, &f));
  assert_int_equal((int64_t)f.v, -5);
  assert_true(pb_attr(m, n, 9, "ok", &any));
  assert_true(pb_get(any.p, any.n, 2, 0, &f));
  assert_int_equal(f.v, 1);
  assert_true(pb_attr(m, n, 9, "ratio", &any));
  assert_true(pb_get(any.p, any.n, 4, 0, &f));
  assert_int_equal(f.wt, 1);
  double d;
  memcpy(&d, &f.v, sizeof d);
  assert_true(d == 0.25);
  assert_true(pb_get(m, n, 11, 0, &f)); /* event */
  pbf_t g = {0};
  assert_true(pb_get(f.p, f.n, 1, 0, &g));
  assert_int_equal(g.wt, 1);
  assert_int_equal(g.v, 1500);
  assert_true(pb_attr_str_eq(f.p, f.n, 3, "skiff.reason", "upstream_reset"));
  assert_true(pb_get(m, n, 15, 0, &f)); /* status */
  assert_true(pb_get(f.p, f.n, 3, 0, &g));
  assert_int_equal(g.v, 2);
  assert_true(pb_get(f.p, f.n, 2, 0, &g));
  assert_memory_equal(g.p, "upstream_reset", 14);
  sk_buf_done(&span);

  /* a whole request around two spans */
  sk_buf_t one, req;
  sk_buf_init(&one);
  sk_buf_init(&req);
  const uint8_t fake_span[] = {0x2a, 0x01, 'x'}; /* name "x" */
  for (int i = 0; i < 2; i++) {
    uint8_t hdr[2] = {0x12, sizeof fake_span};
    sk_buf_append(&one, hdr, 2);
    sk_buf_append(&one, fake_span, sizeof fake_span);
  }
  sk_otlp_trace_request(&req, "svc-a", "1.2.3", one.data, one.len);
  decoded_t dd;
  decode_request((const uint8_t *)req.data, req.len, &dd, "svc-a");
  assert_int_equal(dd.nspans, 2);
  assert_true(pb_attr_str_eq(dd.res.p, dd.res.n, 1, "service.version", "1.2.3"));
  sk_buf_done(&one);
  sk_buf_done(&req);

  /* not sampled: no recording, ids still made, flag clear */
  sk_trace_ctx_t unsampled = parent;
  unsampled.flags = 0;
  sk_span_begin(&s, t, "n", SK_SPAN_CLIENT, &unsampled, NULL, 0);
  assert_false(s.recording);
  assert_int_equal(s.ctx.flags, 0);
  sk_span_attr_str(&s, "a", "b"); /* ignored */
  sk_span_end(&s, 0);
  sk_span_discard(&s);
  /* a root span gets a fresh, valid trace id */
  sk_span_begin(&s, t, "root", SK_SPAN_INTERNAL, NULL, NULL, 0);
  assert_true(sk_trace_id_is_valid(s.ctx.trace_id));
  assert_false(s.has_parent);
  sk_span_discard(&s);
  sk_tracer_free(t);
  sk_tracer_free(NULL);
}

static void test_tracer_opts(void **state) {
  (void)state;
  sk_tracer_t *t = NULL;
  sk_tracer_opts_t o = {.service_name = "s", .endpoint = "ftp://x"};
  assert_int_equal(sk_tracer_new(&o, &t), SK_EINVAL);
  o.endpoint = "https://127.0.0.1:4318"; /* https needs a TLS context */
  assert_int_equal(sk_tracer_new(&o, &t), SK_EINVAL);
  o.endpoint = "http://127.0.0.1:99999";
  assert_int_equal(sk_tracer_new(&o, &t), SK_EINVAL);
  o.endpoint = "http://:80";
  assert_int_equal(sk_tracer_new(&o, &t), SK_EINVAL);
  o.endpoint = NULL;
  o.sample_ratio = 1.5;
  assert_int_equal(sk_tracer_new(&o, &t), SK_EINVAL);
  o.sample_ratio = 0;
  o.service_name = NULL;
  assert_int_equal(sk_tracer_new(&o, &t), SK_EINVAL);
  assert_null(t);
}

/* ---- the exporter against a local OTLP-ish server ---- */

typedef struct srv_state {
  int calls, fail_first, status_fail;
  char path[64], ctype[64], spiffe[128];
  sk_buf_t last;
  int spans_seen;
} srv_state_t;

static void otlp_handler(sk_http_req_t *req, void *ud) {
  srv_state_t *s = ud;
  s->calls++;
  snprintf(s->path, sizeof s->path, "%s", req->path);
  const char *ct = sk_http_headers_get(&req->headers, "content-type");
  snprintf(s->ctype, sizeof s->ctype, "%s", ct ? ct : "");
  snprintf(s->spiffe, sizeof s->spiffe, "%s", req->peer_spiffe ? req->peer_spiffe : "");
  if (s->calls <= s->fail_first) {
    sk_http_header_t h = {"retry-after", "0"};
    sk_http_respond(req, s->status_fail, &h, 1, "busy", 4);
    return;
  }
  sk_buf_reset(&s->last);
  sk_buf_append(&s->last, req->body, req->body_len);
  decoded_t d;
  decode_request(req->body, req->body_len, &d, "svc-b");
  s->spans_seen += d.nspans;
  sk_http_header_t h = {"content-type", "application/x-protobuf"};
  sk_http_respond(req, 200, &h, 1, "", 0);
}

typedef struct waiter {
  uv_timer_t tm;
  sk_tracer_t *t;
  uint64_t want_exported, want_dropped;
  volatile int done;
} waiter_t;

static void poll_stats(uv_timer_t *h) {
  waiter_t *w = h->data;
  sk_tracer_stats_t st;
  sk_tracer_stats(w->t, &st);
  if (st.spans_exported >= w->want_exported && st.spans_dropped >= w->want_dropped) w->done = 1;
}

static void wait_stats(uv_loop_t *loop, sk_tracer_t *t, uint64_t exported, uint64_t dropped) {
  waiter_t w = {.t = t, .want_exported = exported, .want_dropped = dropped};
  uv_timer_init(loop, &w.tm);
  w.tm.data = &w;
  uv_timer_start(&w.tm, poll_stats, 5, 5);
  assert_int_equal(sk_test_run_until(loop, &w.done, 20000), 0);
  uv_close((uv_handle_t *)&w.tm, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void end_spans(sk_tracer_t *t, int n) {
  for (int i = 0; i < n; i++) {
    sk_span_t s;
    sk_span_begin(&s, t, "op", SK_SPAN_INTERNAL, NULL, NULL, 0);
    sk_span_attr_int(&s, "i", i);
    sk_span_end(&s, 0);
  }
}

typedef struct free_job {
  sk_tracer_t *t;
  volatile int done;
} free_job_t;

static void free_tracer(void *arg) {
  free_job_t *j = arg;
  sk_tracer_free(j->t);
  __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
}

static void test_exporter(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_state_t ss = {.fail_first = 2, .status_fail = 503};
  sk_buf_init(&ss.last);
  sk_http_server_opts_t so = {.host = "127.0.0.1"};
  sk_http_server_t *srv;
  assert_int_equal(sk_http_server_new(&loop, &so, otlp_handler, &ss, &srv), 0);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", sk_http_server_port(srv));
  sk_tracer_opts_t o = {.service_name = "svc-b", .endpoint = url, .sample_ratio = 1, .max_batch = 4,
                        .flush_interval_ms = 50, .max_backoff_ms = 200};
  sk_tracer_t *t;
  assert_int_equal(sk_tracer_new(&o, &t), 0);
  /* 10 spans: batches of at most 4; the first two requests get 503 and are retried */
  end_spans(t, 10);
  wait_stats(&loop, t, 10, 0);
  sk_tracer_stats_t st;
  sk_tracer_stats(t, &st);
  assert_int_equal(st.spans_exported, 10);
  assert_int_equal(st.spans_dropped, 0);
  assert_int_equal(st.export_failures, 2);
  assert_int_equal(ss.spans_seen, 10);
  assert_true(ss.calls >= 2 + 3); /* two 503s, then batches of at most 4 */
  assert_string_equal(ss.path, "/v1/traces");
  assert_string_equal(ss.ctype, "application/x-protobuf");
  /* a refused batch (400) is dropped, not retried */
  ss.fail_first = ss.calls + 1;
  ss.status_fail = 400;
  end_spans(t, 1);
  wait_stats(&loop, t, 10, 1);
  sk_tracer_stats(t, &st);
  assert_int_equal(st.spans_dropped, 1);
  /* the exporter keeps going after a refused batch */
  end_spans(t, 3);
  wait_stats(&loop, t, 13, 1);
  /* free on a helper thread while this loop keeps serving: the exporter
   * closes its connection and may wait for the server's side of it */
  free_job_t fj = {.t = t};
  uv_thread_t th;
  uv_thread_create(&th, free_tracer, &fj);
  assert_int_equal(sk_test_run_until(&loop, &fj.done, 20000), 0);
  uv_thread_join(&th);
  sk_http_server_free(srv);
  sk_test_loop_drain(&loop);
  sk_buf_done(&ss.last);
}

/* https with a client certificate (mTLS): the receiver requires one */
static void test_exporter_mtls(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_state_t ss = {0};
  sk_buf_init(&ss.last);
  sk_tls_opts_t sto = {.is_server = 1,
                       .cert_file = sk_test_cert("server.pem"),
                       .key_file = sk_test_cert("server.key"),
                       .ca_file = sk_test_cert("ca.pem"),
                       .verify = SK_TLS_VERIFY_REQUIRE};
  sk_tls_ctx_t *stls = NULL, *ctls = NULL, *nocert = NULL;
  char err[512];
  assert_int_equal(sk_tls_ctx_new(&sto, &stls, err, sizeof err), 0);
  sk_http_server_opts_t so = {.host = "127.0.0.1", .tls = stls};
  sk_http_server_t *srv;
  assert_int_equal(sk_http_server_new(&loop, &so, otlp_handler, &ss, &srv), 0);
  sk_tls_opts_t cto = {.cert_file = sk_test_cert("client.pem"),
                       .key_file = sk_test_cert("client.key"),
                       .ca_file = sk_test_cert("ca.pem"),
                       .verify = SK_TLS_VERIFY_REQUIRE};
  assert_int_equal(sk_tls_ctx_new(&cto, &ctls, err, sizeof err), 0);
  char url[64];
  snprintf(url, sizeof url, "https://127.0.0.1:%d", sk_http_server_port(srv));
  sk_tracer_opts_t o = {.service_name = "svc-b", .endpoint = url, .tls = ctls, .sample_ratio = 1,
                        .flush_interval_ms = 20};
  sk_tracer_t *t;
  assert_int_equal(sk_tracer_new(&o, &t), 0);
  end_spans(t, 3);
  wait_stats(&loop, t, 3, 0);
  assert_int_equal(ss.spans_seen, 3);
  assert_true(strncmp(ss.spiffe, "spiffe://", 9) == 0); /* the receiver saw our certificate */
  free_job_t fj = {.t = t};
  uv_thread_t th;
  uv_thread_create(&th, free_tracer, &fj);
  assert_int_equal(sk_test_run_until(&loop, &fj.done, 20000), 0);
  uv_thread_join(&th);
  /* without a client certificate the handshake fails: retried, then dropped */
  cto.cert_file = cto.key_file = NULL;
  assert_int_equal(sk_tls_ctx_new(&cto, &nocert, err, sizeof err), 0);
  o.tls = nocert;
  o.max_retries = 1;
  o.max_backoff_ms = 10;
  assert_int_equal(sk_tracer_new(&o, &t), 0);
  end_spans(t, 2);
  wait_stats(&loop, t, 0, 2);
  sk_tracer_stats_t st;
  sk_tracer_stats(t, &st);
  assert_int_equal(st.spans_exported, 0);
  assert_int_equal(ss.spans_seen, 3);
  fj = (free_job_t){.t = t};
  uv_thread_create(&th, free_tracer, &fj);
  assert_int_equal(sk_test_run_until(&loop, &fj.done, 20000), 0);
  uv_thread_join(&th);
  sk_tls_ctx_unref(ctls); /* the tracers held their own references */
  sk_tls_ctx_unref(nocert);
  sk_http_server_free(srv);
  sk_tls_ctx_unref(stls);
  sk_test_loop_drain(&loop);
  sk_buf_done(&ss.last);
}

static void test_queue_bound(void **state) {
  (void)state;
  /* nothing listens: spans beyond max_queue are dropped and counted */
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t probe;
  uv_tcp_init(&loop, &probe);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  assert_int_equal(uv_tcp_bind(&probe, (struct sockaddr *)&a, 0), 0);
  int len = sizeof a;
  uv_tcp_getsockname(&probe, (struct sockaddr *)&a, &len);
  int port = ntohs(a.sin_port);
  uv_close((uv_handle_t *)&probe, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/custom/path", port);
  sk_tracer_opts_t o = {.service_name = "svc-c", .endpoint = url, .sample_ratio = 1, .max_queue = 4,
                        .max_batch = 100, .flush_interval_ms = 60000, .max_retries = 1, .max_backoff_ms = 10};
  sk_tracer_t *t;
  assert_int_equal(sk_tracer_new(&o, &t), 0);
  end_spans(t, 10);
  sk_tracer_stats_t st;
  sk_tracer_stats(t, &st);
  assert_int_equal(st.spans_ended, 10);
  assert_int_equal(st.spans_dropped, 6);
  assert_int_equal(st.queued, 4);
  sk_tracer_flush(t);
  wait_stats(&loop, t, 0, 10); /* connection refused, one retry, then dropped */
  sk_tracer_stats(t, &st);
  assert_int_equal(st.spans_exported, 0);
  assert_true(st.export_failures >= 1); /* refused, retried once (unless a stranger took the port) */
  sk_tracer_free(t);
  sk_test_loop_drain(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_traceparent),   cmocka_unit_test(test_tracestate),
      cmocka_unit_test(test_sampling),      cmocka_unit_test(test_span_encoding),
      cmocka_unit_test(test_tracer_opts),   cmocka_unit_test(test_exporter),
      cmocka_unit_test(test_exporter_mtls),
      cmocka_unit_test(test_queue_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
