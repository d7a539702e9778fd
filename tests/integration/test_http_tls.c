/* Integration tests: the HTTP server core. curl over https (HTTP/1.1 and
 * h2 by ALPN) and plaintext (HTTP/1.1 and h2c prior knowledge), mutual TLS
 * with curl --cert, graceful drain of idle keep-alive connections, the
 * response state checks, and the small helpers (traceparent, headers). */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/mem.h"
#include "skiff/net.h"
#include "skiff/tls.h"

#define WAIT_MS 30000

typedef struct fx {
  uv_loop_t loop;
  uv_timer_t tick;
  sk_http_server_t *srv;
  sk_tls_ctx_t *tls;
  int port;
  int misuse_checked;
} fx_t;

/* "<method> <path> <query> <peer_spiffe|-> <scheme> <version> <trace_id|->" */
static void handler(sk_http_req_t *req, void *ud) {
  fx_t *f = ud;
  if (!strcmp(req->path, "/misuse")) {
    /* state checks: nothing may be written before the head */
    assert_int_equal(sk_http_resp_write(req, "x", 1), SK_EINVAL);
    assert_int_equal(sk_http_resp_end(req), SK_EINVAL);
    sk_http_header_t h = {"content-type", "text/plain"};
    assert_int_equal(sk_http_resp_start(req, 200, &h, 1), 0);
    assert_int_equal(sk_http_resp_start(req, 200, &h, 1), SK_EINVAL);
    assert_int_equal(sk_http_respond_text(req, 200, NULL, "again"), SK_EINVAL);
    assert_int_equal(sk_http_resp_write(req, "streamed", 8), 0);
    assert_int_equal(sk_http_resp_write(req, NULL, 0), 0);
    f->misuse_checked = 1;
    assert_int_equal(sk_http_resp_end(req), 0);
    return;
  }
  if (!strncmp(req->path, "/abs", 4)) {
    char *b = sk_pool_printf(req->pool, "%s|%s|%s\n", req->authority ? req->authority : "-",
                             req->path, req->query ? req->query : "-");
    assert_int_equal(sk_http_respond_text(req, 200, NULL, b), 0);
    return;
  }
  char *body = sk_pool_printf(req->pool, "%s %s %s %s %s %d %s\n", req->method, req->path,
                              req->query ? req->query : "-",
                              req->peer_spiffe ? req->peer_spiffe : "-", req->scheme,
                              req->version, req->trace_id ? req->trace_id : "-");
  assert_int_equal(sk_http_respond_text(req, 200, NULL, body), 0);
}

static void tick(uv_timer_t *t) {}

static fx_t *start_with(sk_tls_verify_t verify, int tls, uint64_t header_timeout_ms) {
  fx_t *f = calloc(1, sizeof *f);
  char err[512];
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  if (tls) {
    sk_tls_opts_t to = {.is_server = 1,
                        .cert_file = sk_test_cert("server.pem"),
                        .key_file = sk_test_cert("server.key"),
                        .ca_file = sk_test_cert("ca.pem"),
                        .verify = verify};
    if (sk_tls_ctx_new(&to, &f->tls, err, sizeof err) < 0) fail_msg("tls: %s", err);
  }
  sk_http_server_opts_t o = {
      .tls = f->tls, .idle_timeout_ms = 60000, .header_timeout_ms = header_timeout_ms};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &f->srv), 0);
  f->port = sk_http_server_port(f->srv);
  assert_true(f->port > 0);
  return f;
}

static fx_t *start(sk_tls_verify_t verify, int tls) { return start_with(verify, tls, 0); }

static void drained_cb(sk_http_server_t *s, void *ud) { *(int *)ud = 1; }

static void stop(fx_t *f) {
  int done = 0;
  sk_http_server_drain(f->srv, drained_cb, &done);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &done, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  sk_http_server_free(f->srv);
  uv_close((uv_handle_t *)&f->tick, NULL);
  for (int i = 0; i < 100; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
  sk_test_loop_drain(&f->loop);
  sk_tls_ctx_unref(f->tls);
  free(f);
}

/* Runs a shell command on a thread while the loop serves. */
static int sh(fx_t *f, sk_test_job_t *j) {
  uv_timer_start(&f->tick, tick, 10, 10);
  int rc = sk_test_run_until(&f->loop, &j->done, WAIT_MS);
  uv_timer_stop(&f->tick);
  sk_test_job_join(j);
  assert_int_equal(rc, 0);
  return j->status;
}

static void test_https_h1_and_h2(void **state) {
  fx_t *f = start(SK_TLS_VERIFY_NONE, 1);
  sk_test_job_t *j = malloc(sizeof *j);
  const char *ca = sk_test_cert("ca.pem");
  sk_test_job_start(j, "curl -sS -m 10 --http1.1 --cacert '%s' 'https://localhost:%d/hello/world?x=1'",
                    ca, f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "GET /hello/world x=1 - https 11 -\n");

  sk_test_job_start(j,
                    "curl -sS -m 10 --http2 --cacert '%s' -H 'traceparent: "
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' "
                    "-d 'a=b' 'https://127.0.0.1:%d/post'",
                    ca, f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "POST /post - - https 20 4bf92f3577b34da6a3ce929d0e0e4736\n");

  /* a client that does not trust the server's CA gives up */
  sk_test_job_start(j, "curl -sS -m 10 'https://localhost:%d/' 2>&1", f->port);
  assert_int_not_equal(sh(f, j), 0);
  free(j);
  stop(f);
}

static void test_plain_h1_and_h2c(void **state) {
  fx_t *f = start(SK_TLS_VERIFY_NONE, 0);
  sk_test_job_t *j = malloc(sizeof *j);
  sk_test_job_start(j, "curl -sS -m 10 'http://127.0.0.1:%d/a?b'", f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "GET /a b - http 11 -\n");
  sk_test_job_start(j, "curl -sS -m 10 --http2-prior-knowledge 'http://127.0.0.1:%d/h2c'", f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "GET /h2c - - http 20 -\n");
  /* an upper-case trace id is not a valid traceparent */
  sk_test_job_start(j,
                    "curl -sS -m 10 -H 'traceparent: "
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01' "
                    "'http://127.0.0.1:%d/t'",
                    f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "GET /t - - http 11 -\n");
  /* absolute-form, as a forward proxy receives it */
  sk_test_job_start(j, "curl -sS -m 10 --proxy http://127.0.0.1:%d 'http://example.test:8080/abs?q=1'",
                    f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "example.test:8080|/abs|q=1\n");
  sk_test_job_start(j, "curl -sS -m 10 -H 'Host: h.test' 'http://127.0.0.1:%d/abs'", f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out, "h.test|/abs|-\n");
  sk_test_job_start(j, "curl -sS -m 10 -i 'http://127.0.0.1:%d/misuse'", f->port);
  assert_int_equal(sh(f, j), 0);
  assert_true(f->misuse_checked);
  assert_non_null(strstr(j->out, "200"));
  assert_non_null(strstr(j->out, "streamed"));
  free(j);
  stop(f);
}

static void test_mtls_curl(void **state) {
  fx_t *f = start(SK_TLS_VERIFY_REQUIRE, 1);
  sk_test_job_t *j = malloc(sizeof *j);
  const char *ca = sk_test_cert("ca.pem");
  sk_test_job_start(j, "curl -sS -m 10 --cacert '%s' --cert '%s' --key '%s' 'https://localhost:%d/who'",
                    ca, sk_test_cert("client.pem"), sk_test_cert("client.key"), f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out,
                      "GET /who - spiffe://skiff.test/region/local/workload/client https 20 -\n");
  sk_test_job_start(j,
                    "curl -sS -m 10 --http1.1 --cacert '%s' --cert '%s' --key '%s' "
                    "'https://localhost:%d/who'",
                    ca, sk_test_cert("client.pem"), sk_test_cert("client.key"), f->port);
  assert_int_equal(sh(f, j), 0);
  assert_string_equal(j->out,
                      "GET /who - spiffe://skiff.test/region/local/workload/client https 11 -\n");

  /* no certificate, and one from an untrusted CA: refused, nothing served */
  sk_test_job_start(j, "curl -sS -m 10 --cacert '%s' 'https://localhost:%d/who' 2>&1", ca, f->port);
  assert_int_not_equal(sh(f, j), 0);
  assert_null(strstr(j->out, "GET /who"));
  sk_test_job_start(j, "curl -sS -m 10 --cacert '%s' --cert '%s' --key '%s' 'https://localhost:%d/who' 2>&1",
                    ca, sk_test_cert("rogue.pem"), sk_test_cert("rogue.key"), f->port);
  assert_int_not_equal(sh(f, j), 0);
  assert_null(strstr(j->out, "GET /who"));
  free(j);
  stop(f);
}

/* ---------------- drain with an idle keep-alive connection ---------------- */

typedef struct idle_cli {
  sk_conn_t *c;
  sk_buf_t got;
  volatile int connected, responded, closed;
  int close_err;
} idle_cli_t;

static void idle_on_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  idle_cli_t *k = sk_conn_get_data(c);
  sk_buf_append(&k->got, d, n);
  if (strstr(sk_buf_cstr(&k->got), "- http 11 -\n")) k->responded = 1;
}

static void idle_on_close(sk_conn_t *c, int err) {
  idle_cli_t *k = sk_conn_get_data(c);
  k->closed = 1;
  k->close_err = err;
}

static void idle_connected(sk_conn_t *c, int err, void *ud) {
  idle_cli_t *k = ud;
  if (!c) {
    k->closed = 1;
    k->close_err = err;
    return;
  }
  k->c = c;
  k->connected = 1;
  sk_conn_cbs_t cbs = {.on_data = idle_on_data, .on_close = idle_on_close};
  sk_conn_set_cbs(c, &cbs, k);
  /* the request arrives in two pieces: the h2c sniffing must cope */
  static const char req[] = "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(sk_conn_write(c, req, 3), 0);
  assert_int_equal(sk_conn_write(c, req + 3, sizeof req - 4), 0);
}

static void silent_connected(sk_conn_t *c, int err, void *ud) {
  idle_cli_t *k = ud;
  if (!c) {
    k->closed = 1;
    k->close_err = err;
    return;
  }
  k->c = c;
  k->connected = 1;
  sk_conn_cbs_t cbs = {.on_data = idle_on_data, .on_close = idle_on_close};
  sk_conn_set_cbs(c, &cbs, k);
}

static void test_drain_idle_keepalive(void **state) {
  fx_t *f = start(SK_TLS_VERIFY_NONE, 0);
  idle_cli_t k = {0};
  sk_connect_opts_t co = {.host = "127.0.0.1", .port = f->port};
  assert_int_equal(sk_conn_connect(&f->loop, &co, idle_connected, &k), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &k.responded, WAIT_MS), 0);
  assert_non_null(strstr(k.got.data, "GET /idle - - http 11 -"));
  assert_false(k.closed);
  assert_int_equal(sk_http_server_conn_count(f->srv), 1);

  /* a connection that never sends a byte (still being sniffed for the
   * h2c preface) is closed by the drain too */
  idle_cli_t silent = {0};
  assert_int_equal(sk_conn_connect(&f->loop, &co, silent_connected, &silent), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &silent.connected, WAIT_MS), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  for (int i = 0; i < 1000 && sk_http_server_conn_count(f->srv) < 2; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->tick);
  assert_int_equal(sk_http_server_conn_count(f->srv), 2);

  int drained = 0;
  sk_http_server_drain(f->srv, drained_cb, &drained);
  assert_int_equal(sk_test_run_until(&f->loop, &drained, WAIT_MS), 0);
  assert_int_equal(sk_http_server_conn_count(f->srv), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &k.closed, WAIT_MS), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &silent.closed, WAIT_MS), 0);

  /* no longer accepting */
  idle_cli_t late = {0};
  assert_int_equal(sk_conn_connect(&f->loop, &co, idle_connected, &late), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &late.closed, WAIT_MS), 0);
  assert_false(late.connected);
  assert_int_equal(late.close_err, SK_ECONNREFUSED);

  sk_buf_done(&k.got);
  sk_buf_done(&silent.got);
  stop(f); /* a second drain on an empty server calls back at once */
}

static void test_free_with_live_conns(void **state) {
  fx_t *f = start(SK_TLS_VERIFY_NONE, 0);
  idle_cli_t k = {0}, silent = {0};
  sk_connect_opts_t co = {.host = "127.0.0.1", .port = f->port};
  assert_int_equal(sk_conn_connect(&f->loop, &co, idle_connected, &k), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &k.responded, WAIT_MS), 0);
  assert_int_equal(sk_conn_connect(&f->loop, &co, silent_connected, &silent), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &silent.connected, WAIT_MS), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  for (int i = 0; i < 1000 && sk_http_server_conn_count(f->srv) < 2; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(sk_http_server_conn_count(f->srv), 2);
  /* no drain: everything is cut now, the memory goes with the closes */
  sk_http_server_free(f->srv);
  assert_int_equal(sk_test_run_until(&f->loop, &k.closed, WAIT_MS), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &silent.closed, WAIT_MS), 0);
  assert_true(k.close_err != 0);
  uv_timer_stop(&f->tick);
  uv_close((uv_handle_t *)&f->tick, NULL);
  sk_buf_done(&k.got);
  sk_test_loop_drain(&f->loop);
  free(f);
}

static void test_silent_conn_timeout(void **state) {
  fx_t *f = start_with(SK_TLS_VERIFY_NONE, 0, 300);
  idle_cli_t silent = {0};
  sk_connect_opts_t co = {.host = "127.0.0.1", .port = f->port};
  assert_int_equal(sk_conn_connect(&f->loop, &co, silent_connected, &silent), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &silent.closed, WAIT_MS), 0);
  assert_true(silent.connected);
  assert_int_equal(silent.got.len, 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  for (int i = 0; i < 1000 && sk_http_server_conn_count(f->srv) > 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->tick);
  assert_int_equal(sk_http_server_conn_count(f->srv), 0);
  stop(f);
}

/* ---------------- helpers ---------------- */

static void test_traceparent(void **state) {
  char id[33];
  assert_int_equal(
      sk__http_traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id), 0);
  assert_string_equal(id, "4bf92f3577b34da6a3ce929d0e0e4736");
  /* wrong length, upper case, all-zero ids, bad separators, version ff */
  assert_true(sk__http_traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", id) < 0);
  assert_true(sk__http_traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", id) < 0);
  assert_true(sk__http_traceparent_trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", id) < 0);
  assert_true(sk__http_traceparent_trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01", id) < 0);
  assert_true(sk__http_traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", id) < 0);
  assert_true(sk__http_traceparent_trace_id("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id) < 0);
  assert_true(sk__http_traceparent_trace_id("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", id) < 0);
  assert_true(sk__http_traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", id) < 0);
  assert_true(sk__http_traceparent_trace_id("", id) < 0);
  assert_true(sk__http_traceparent_trace_id(NULL, id) < 0);
  /* a later version may carry more fields after a dash */
  assert_int_equal(sk__http_traceparent_trace_id(
                       "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", id), 0);
}

static void test_headers_and_status(void **state) {
  sk_pool_t *p = sk_pool_new();
  sk_http_headers_t h = {0};
  char name[16];
  for (int i = 0; i < 40; i++) {
    snprintf(name, sizeof name, "X-H%d", i);
    sk_http_headers_add(&h, p, name, "v");
  }
  sk_http_headers_add(&h, p, "Content-Type", "text/plain");
  sk_http_headers_add(&h, p, "content-type", "second");
  assert_int_equal(h.n, 42);
  assert_string_equal(sk_http_headers_get(&h, "CONTENT-TYPE"), "text/plain");
  assert_string_equal(sk_http_headers_get(&h, "x-h39"), "v");
  assert_null(sk_http_headers_get(&h, "missing"));
  assert_null(sk_http_headers_get(NULL, "x"));
  sk_pool_free(p);
  assert_string_equal(sk_http_status_text(200), "OK");
  assert_string_equal(sk_http_status_text(431), "Request Header Fields Too Large");
  assert_string_equal(sk_http_status_text(413), "Content Too Large");
  assert_string_equal(sk_http_status_text(599), "Server Error");
  assert_string_equal(sk_http_status_text(42), "Unknown");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_traceparent),     cmocka_unit_test(test_headers_and_status),
      cmocka_unit_test(test_https_h1_and_h2), cmocka_unit_test(test_plain_h1_and_h2c),
      cmocka_unit_test(test_mtls_curl),       cmocka_unit_test(test_drain_idle_keepalive),
      cmocka_unit_test(test_silent_conn_timeout), cmocka_unit_test(test_free_with_live_conns),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
