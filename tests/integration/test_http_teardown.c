/* Integration tests: tearing the HTTP server down while a harness closes
 * every handle on the loop (sk_test_loop_drain walks the loop and closes
 * what is not closing yet). The protocols' own handles (HTTP/2's timers
 * and idle handle, HTTP/1's timer) are then already closing when the
 * connection's close reaches them: they must not be closed twice, and
 * their memory must still be freed exactly once (the ASan build checks
 * both). */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/mem.h"
#include "skiff/net.h"

#define WAIT_MS 20000

static void handler(sk_http_req_t *req, void *ud) { sk_http_respond_text(req, 200, NULL, "ok\n"); }

typedef struct peer {
  sk_conn_t *c;
  const char *send;
  size_t send_len;
  size_t got;
  int got_any, closed;
} peer_t;

static void peer_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  peer_t *p = sk_conn_get_data(c);
  p->got += n;
  p->got_any = 1;
}

static void peer_close(sk_conn_t *c, int err) {
  peer_t *p = sk_conn_get_data(c);
  p->c = NULL;
  p->closed = 1;
}

static void peer_connected(sk_conn_t *c, int err, void *ud) {
  peer_t *p = ud;
  assert_non_null(c);
  p->c = c;
  sk_conn_cbs_t cbs = {.on_data = peer_data, .on_close = peer_close};
  sk_conn_set_cbs(c, &cbs, p);
  assert_int_equal(sk_conn_write(c, p->send, p->send_len), 0);
}

/* The h2c client preface and an empty SETTINGS frame. */
static const char h2_hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                               "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
#define H2_HELLO_LEN (sizeof h2_hello - 1)

static void connect_peer(uv_loop_t *loop, int port, peer_t *p, const char *send, size_t len) {
  memset(p, 0, sizeof *p);
  p->send = send;
  p->send_len = len;
  sk_connect_opts_t o = {.host = "127.0.0.1", .port = port, .timeout_ms = 5000};
  assert_int_equal(sk_conn_connect(loop, &o, peer_connected, p), 0);
}

static int g_served;

static void count_handler(sk_http_req_t *req, void *ud) {
  g_served++;
  handler(req, ud);
}

/* h2 and h1 connections open (an idle h2 session with its timers, an h1
 * connection with a partial head and its header timer), then the server
 * is freed and the harness closes every handle. */
static void test_free_then_walk(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_http_server_t *srv;
  sk_http_server_opts_t o = {.port = 0};
  assert_int_equal(sk_http_server_new(&loop, &o, count_handler, NULL, &srv), 0);
  int port = sk_http_server_port(srv);

  static peer_t h2, h1, h1done;
  connect_peer(&loop, port, &h2, h2_hello, H2_HELLO_LEN);
  static const char partial[] = "GET / HTTP/1.1\r\nHost: x\r\n";
  connect_peer(&loop, port, &h1, partial, sizeof partial - 1);
  static const char full[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  connect_peer(&loop, port, &h1done, full, sizeof full - 1);
  /* the server's SETTINGS reached the h2 peer: its session exists */
  volatile int *f = &h2.got_any;
  assert_int_equal(sk_test_run_until(&loop, f, WAIT_MS), 0);
  f = &h1done.got_any; /* an answered h1 request: the h1 protocol is attached */
  assert_int_equal(sk_test_run_until(&loop, f, WAIT_MS), 0);
  assert_int_equal(g_served, 1);
  assert_int_equal(sk_http_server_conn_count(srv), 3);

  sk_http_server_free(srv);
  /* our own ends go the ordinary way (net.c's own close callbacks) */
  sk_conn_abort(h2.c);
  sk_conn_abort(h1.c);
  sk_conn_abort(h1done.c);
  /* the harness: close whatever is still open, run dry, loop closes */
  sk_test_loop_drain(&loop);
  assert_true(h2.closed && h1.closed && h1done.closed);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_free_then_walk),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
