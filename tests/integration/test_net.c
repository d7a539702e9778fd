/* Integration tests: sk_listener / sk_conn over loopback, plaintext and
 * TLS, in-process clients and `openssl s_client` as a real one. */
#include "sk_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/mem.h"
#include "skiff/net.h"
#include "skiff/tls.h"

#define WAIT_MS 20000

/* ---------------- an echo server ---------------- */

typedef struct srv {
  int accepts, closes, last_err, drains;
  char alpn[32], spiffe[256], peer[64];
  int tls;
  int close_on_newline; /* reply "echo:<line>" and close (for s_client) */
  int half_close;       /* collect, answer "got:<all>" on the peer's FIN, close */
  int eofs;
  sk_buf_t line;
} srv_t;

static void srv_on_eof(sk_conn_t *c) {
  srv_t *s = sk_conn_get_data(c);
  s->eofs++;
  assert_int_equal(sk_conn_write(c, "got:", 4), 0);
  assert_int_equal(sk_conn_write(c, s->line.data, s->line.len), 0);
  sk_buf_reset(&s->line);
  sk_conn_close(c);
}

static void srv_on_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  srv_t *s = sk_conn_get_data(c);
  if (s->half_close) {
    sk_buf_append(&s->line, d, n);
    return;
  }
  if (!s->close_on_newline) {
    assert_int_equal(sk_conn_write(c, d, n), 0);
    if (sk_conn_write_queued(c) > 256 * 1024) sk_conn_read_stop(c); /* backpressure */
    return;
  }
  sk_buf_append(&s->line, d, n);
  if (memchr(s->line.data, '\n', s->line.len)) {
    sk_conn_write(c, "echo:", 5);
    sk_conn_write(c, s->line.data, s->line.len);
    sk_buf_reset(&s->line);
    sk_conn_close(c);
  }
}

static void srv_on_drain(sk_conn_t *c) {
  srv_t *s = sk_conn_get_data(c);
  s->drains++;
  sk_conn_read_start(c);
}

static void srv_on_close(sk_conn_t *c, int err) {
  srv_t *s = sk_conn_get_data(c);
  s->closes++;
  s->last_err = err;
}

static void srv_accept(sk_listener_t *l, sk_conn_t *c, void *ud) {
  srv_t *s = ud;
  s->accepts++;
  s->tls = sk_conn_is_tls(c);
  snprintf(s->alpn, sizeof s->alpn, "%s", sk_conn_alpn(c) ? sk_conn_alpn(c) : "");
  snprintf(s->spiffe, sizeof s->spiffe, "%s", sk_conn_peer_spiffe(c) ? sk_conn_peer_spiffe(c) : "");
  snprintf(s->peer, sizeof s->peer, "%s", sk_conn_peer_addr(c));
  sk_conn_cbs_t cbs = {.on_data = srv_on_data, .on_close = srv_on_close, .on_drain = srv_on_drain};
  sk_conn_set_cbs(c, &cbs, s);
  if (s->half_close) sk_conn_set_on_eof(c, srv_on_eof);
}

/* ---------------- an in-process client ---------------- */

typedef struct cli {
  sk_conn_t *c;
  int connected, conn_err, done, close_err;
  char alpn[32], spiffe[256], peer[64];
  uint8_t *send;
  size_t send_len, want;
  sk_buf_t got;
} cli_t;

static void cli_on_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  cli_t *k = sk_conn_get_data(c);
  sk_buf_append(&k->got, d, n);
  if (k->got.len >= k->want) sk_conn_close(c);
}

static void cli_on_close(sk_conn_t *c, int err) {
  cli_t *k = sk_conn_get_data(c);
  k->close_err = err;
  k->c = NULL;
  k->done = 1;
}

static void cli_connected(sk_conn_t *c, int err, void *ud) {
  cli_t *k = ud;
  if (!c) {
    assert_true(err < 0);
    k->conn_err = err;
    k->done = 1;
    return;
  }
  k->connected = 1;
  k->c = c;
  snprintf(k->alpn, sizeof k->alpn, "%s", sk_conn_alpn(c) ? sk_conn_alpn(c) : "");
  snprintf(k->spiffe, sizeof k->spiffe, "%s", sk_conn_peer_spiffe(c) ? sk_conn_peer_spiffe(c) : "");
  snprintf(k->peer, sizeof k->peer, "%s", sk_conn_peer_addr(c));
  sk_conn_cbs_t cbs = {.on_data = cli_on_data, .on_close = cli_on_close};
  sk_conn_set_cbs(c, &cbs, k);
  if (k->send_len >= 3) { /* three uneven pieces, one write */
    size_t a = k->send_len / 7 + 1, b = k->send_len / 2;
    uv_buf_t v[4] = {uv_buf_init((char *)k->send, (unsigned)a), uv_buf_init(NULL, 0),
                     uv_buf_init((char *)k->send + a, (unsigned)(b - a)),
                     uv_buf_init((char *)k->send + b, (unsigned)(k->send_len - b))};
    assert_int_equal(sk_conn_writev(c, v, 4), 0);
  } else if (k->send_len) {
    assert_int_equal(sk_conn_write(c, k->send, k->send_len), 0);
  }
}

static void cli_run(uv_loop_t *loop, cli_t *k, const char *host, int port, sk_tls_ctx_t *tls,
                    const char *sni) {
  sk_connect_opts_t o = {.host = host, .port = port, .tls = tls, .sni = sni, .timeout_ms = 5000};
  assert_int_equal(sk_conn_connect(loop, &o, cli_connected, k), 0);
  assert_int_equal(sk_test_run_until(loop, &k->done, WAIT_MS), 0);
}

static sk_tls_ctx_t *tls_ctx(int server, const char *cert, const char *ca, sk_tls_verify_t v,
                             const char *alpn) {
  char err[512], certf[256], keyf[256];
  sk_tls_ctx_t *c = NULL;
  sk_tls_opts_t o = {.is_server = server, .verify = v, .alpn = alpn};
  if (cert) {
    snprintf(certf, sizeof certf, "%s.pem", cert);
    snprintf(keyf, sizeof keyf, "%s.key", cert);
    o.cert_file = sk_test_cert(certf);
    o.key_file = sk_test_cert(keyf);
  }
  if (ca) o.ca_file = sk_test_cert(ca);
  int rc = sk_tls_ctx_new(&o, &c, err, sizeof err);
  if (rc < 0) fail_msg("tls ctx: %s", err);
  return c;
}

static sk_listener_t *listen_on(uv_loop_t *loop, const char *host, sk_tls_ctx_t *tls,
                                const char *alpn, srv_t *s) {
  sk_listener_t *l = NULL;
  sk_listener_opts_t o = {.host = host, .tls = tls, .alpn = alpn, .handshake_timeout_ms = 5000};
  assert_int_equal(sk_listener_new(loop, &o, srv_accept, s, &l), 0);
  assert_true(sk_listener_port(l) > 0);
  return l;
}

static uint8_t *pattern(size_t n) {
  uint8_t *p = malloc(n);
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131u + (i >> 9));
  return p;
}

static void finish(uv_loop_t *loop, sk_listener_t *l) {
  sk_listener_free(l);
  sk_test_loop_drain(loop);
}

/* ---------------- tests ---------------- */

static void test_plain_roundtrip(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_t s = {0};
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", NULL, NULL, &s);

  cli_t k = {0};
  k.send = (uint8_t *)"hello, skiff";
  k.send_len = k.want = 12;
  cli_run(&loop, &k, "127.0.0.1", sk_listener_port(l), NULL, NULL);
  assert_true(k.connected);
  assert_int_equal(k.close_err, 0);
  assert_int_equal(k.got.len, 12);
  assert_memory_equal(k.got.data, "hello, skiff", 12);
  assert_int_equal(s.accepts, 1);
  assert_false(s.tls);
  assert_string_equal(s.alpn, "");
  assert_int_equal(strncmp(s.peer, "127.0.0.1:", 10), 0);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", sk_listener_port(l));
  assert_string_equal(k.peer, want);
  /* the server sees our FIN: a plain EOF, after which it closes too */
  volatile int *closes = &s.closes;
  assert_int_equal(sk_test_run_until(&loop, closes, WAIT_MS), 0);
  assert_int_equal(s.last_err, SK_ECLOSED);
  sk_buf_done(&k.got);
  finish(&loop, l);
}

/* A raw socket client on a thread: sends, shuts its write side down,
 * reads until the server closes. */
typedef struct half_job {
  int port;
  const char *send;
  char out[4096];
  size_t outlen;
  volatile int done;
  uv_thread_t th;
} half_job_t;

static void half_main(void *arg) {
  half_job_t *j = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)j->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    size_t len = strlen(j->send), off = 0;
    while (off < len) {
      ssize_t n = send(fd, j->send + off, len - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    for (;;) {
      ssize_t n = recv(fd, j->out + j->outlen, sizeof j->out - 1 - j->outlen, 0);
      if (n <= 0) break;
      j->outlen += (size_t)n;
      if (j->outlen >= sizeof j->out - 1) break;
    }
  }
  j->out[j->outlen] = 0;
  close(fd);
  __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
}

static void half_run(uv_loop_t *loop, half_job_t *j, int port, const char *send) {
  memset(j, 0, sizeof *j);
  j->port = port;
  j->send = send;
  uv_thread_create(&j->th, half_main, j);
  assert_int_equal(sk_test_run_until(loop, &j->done, WAIT_MS), 0);
  uv_thread_join(&j->th);
}

/* With on_eof, a peer's FIN is a read-side event: the server still
 * answers and closes when it wants (err 0: our own close). Without it the
 * connection closes at the FIN (SK_ECLOSED) and nothing is answered. */
static void test_half_close(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_t s = {0};
  s.half_close = 1;
  sk_buf_init(&s.line);
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", NULL, NULL, &s);
  static half_job_t j;
  half_run(&loop, &j, sk_listener_port(l), "question one, question two");
  assert_string_equal(j.out, "got:question one, question two");
  volatile int *closes = &s.closes;
  assert_int_equal(sk_test_run_until(&loop, closes, WAIT_MS), 0);
  assert_int_equal(s.eofs, 1);
  assert_int_equal(s.last_err, 0);
  /* the default, for comparison: closed at the FIN, nothing sent */
  s.half_close = 0;
  s.close_on_newline = 1;
  s.closes = 0;
  half_run(&loop, &j, sk_listener_port(l), "no newline");
  assert_string_equal(j.out, "");
  assert_int_equal(sk_test_run_until(&loop, closes, WAIT_MS), 0);
  assert_int_equal(s.last_err, SK_ECLOSED);
  assert_int_equal(s.eofs, 1);
  sk_buf_done(&s.line);
  finish(&loop, l);
}

static void test_plain_large_ipv6(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_t s = {0};
  sk_listener_t *l = NULL;
  sk_listener_opts_t o = {.host = "::1"};
  if (sk_listener_new(&loop, &o, srv_accept, &s, &l) < 0) {
    skip(); /* no IPv6 loopback here */
  }
  size_t n = 4 * 1024 * 1024;
  cli_t k = {0};
  k.send = pattern(n);
  k.send_len = k.want = n;
  cli_run(&loop, &k, "::1", sk_listener_port(l), NULL, NULL);
  assert_int_equal(k.got.len, n);
  assert_memory_equal(k.got.data, k.send, n);
  assert_int_equal(strncmp(s.peer, "[::1]:", 6), 0);
  free(k.send);
  sk_buf_done(&k.got);
  finish(&loop, l);
}

static void test_connect_errors(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_t s = {0};
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", NULL, NULL, &s);
  int port = sk_listener_port(l);
  sk_listener_free(l); /* nobody listens there any more */
  uv_run(&loop, UV_RUN_NOWAIT);
  cli_t k = {0};
  cli_run(&loop, &k, "127.0.0.1", port, NULL, NULL);
  assert_false(k.connected);
  assert_int_equal(k.conn_err, SK_ECONNREFUSED);

  /* resolved by name */
  srv_t s2 = {0};
  l = listen_on(&loop, "127.0.0.1", NULL, NULL, &s2);
  cli_t k2 = {0};
  k2.send = (uint8_t *)"x";
  k2.send_len = k2.want = 1;
  cli_run(&loop, &k2, "localhost", sk_listener_port(l), NULL, NULL);
  /* localhost may resolve to ::1 first: the next address is tried */
  assert_true(k2.connected);
  assert_int_equal(k2.got.len, 1);
  sk_buf_done(&k2.got);

  sk_connect_opts_t bad = {.host = "127.0.0.1", .port = 0};
  assert_int_equal(sk_conn_connect(&loop, &bad, cli_connected, &k), SK_EINVAL);
  sk_listener_opts_t lo = {.host = "not-an-address"};
  sk_listener_t *l2 = NULL;
  assert_int_equal(sk_listener_new(&loop, &lo, srv_accept, &s, &l2), SK_EINVAL);
  finish(&loop, l);
}

static void test_reuseport(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_t s = {0};
  sk_listener_t *a = NULL, *b = NULL, *c = NULL;
  sk_listener_opts_t o = {.host = "127.0.0.1", .reuseport = 1};
  assert_int_equal(sk_listener_new(&loop, &o, srv_accept, &s, &a), 0);
  o.port = sk_listener_port(a);
  assert_int_equal(sk_listener_new(&loop, &o, srv_accept, &s, &b), 0); /* shares the port */
  assert_int_equal(sk_listener_port(b), o.port);
  o.reuseport = 0;
  assert_int_equal(sk_listener_new(&loop, &o, srv_accept, &s, &c), SK_EADDRINUSE);
  assert_null(c);
  cli_t k = {0};
  k.send = (uint8_t *)"rp";
  k.send_len = k.want = 2;
  cli_run(&loop, &k, "127.0.0.1", o.port, NULL, NULL);
  assert_int_equal(k.got.len, 2);
  assert_int_equal(s.accepts, 1);
  sk_buf_done(&k.got);
  sk_listener_free(b);
  finish(&loop, a);
}

static void test_tls_roundtrip(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_tls_ctx_t *sctx = tls_ctx(1, "server", NULL, SK_TLS_VERIFY_NONE, "http/1.1");
  sk_tls_ctx_t *cctx = tls_ctx(0, NULL, "ca.pem", SK_TLS_VERIFY_REQUIRE, "foo,h2");
  srv_t s = {0};
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", sctx, "h2,http/1.1", &s);

  size_t n = 2 * 1024 * 1024;
  cli_t k = {0};
  k.send = pattern(n);
  k.send_len = k.want = n;
  cli_run(&loop, &k, "127.0.0.1", sk_listener_port(l), cctx, "localhost");
  assert_true(k.connected);
  assert_int_equal(k.close_err, 0);
  assert_int_equal(k.got.len, n);
  assert_memory_equal(k.got.data, k.send, n);
  assert_true(s.tls);
  assert_string_equal(s.alpn, "h2"); /* listener's list overrides the context's */
  assert_string_equal(k.alpn, "h2");
  assert_string_equal(k.spiffe, "spiffe://skiff.test/region/local/daemon/server");
  assert_string_equal(s.spiffe, ""); /* no client certificate asked */
  volatile int *closes = &s.closes;
  assert_int_equal(sk_test_run_until(&loop, closes, WAIT_MS), 0);
  assert_int_equal(s.last_err, 0); /* close_notify: a clean close */
  free(k.send);
  sk_buf_done(&k.got);

  /* verification by IP address SAN, no SNI */
  cli_t k2 = {0};
  k2.send = (uint8_t *)"ip";
  k2.send_len = k2.want = 2;
  cli_run(&loop, &k2, "127.0.0.1", sk_listener_port(l), cctx, NULL);
  assert_int_equal(k2.got.len, 2);
  sk_buf_done(&k2.got);

  /* the wrong name: the client refuses the server */
  cli_t k3 = {0};
  cli_run(&loop, &k3, "127.0.0.1", sk_listener_port(l), cctx, "wrong.example");
  assert_false(k3.connected);
  assert_int_equal(k3.conn_err, SK_ETLS);

  /* a client trusting another CA refuses it too */
  sk_tls_ctx_t *rogue_trust = tls_ctx(0, NULL, "rogue-ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  cli_t k4 = {0};
  cli_run(&loop, &k4, "127.0.0.1", sk_listener_port(l), rogue_trust, "localhost");
  assert_false(k4.connected);
  assert_int_equal(k4.conn_err, SK_ETLS);
  assert_int_equal(s.accepts, 2);

  /* plaintext to a TLS listener: never accepted */
  cli_t k5 = {0};
  k5.send = (uint8_t *)"GET / HTTP/1.1\r\n\r\n";
  k5.send_len = 18;
  k5.want = 1;
  cli_run(&loop, &k5, "127.0.0.1", sk_listener_port(l), NULL, NULL);
  assert_int_equal(s.accepts, 2);
  assert_true(k5.close_err != 0);
  sk_buf_done(&k5.got);

  sk_tls_ctx_unref(rogue_trust);
  sk_tls_ctx_unref(cctx);
  sk_tls_ctx_unref(sctx);
  finish(&loop, l);
}

static void test_mtls_require(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_tls_ctx_t *sctx = tls_ctx(1, "server", "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  srv_t s = {0};
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", sctx, NULL, &s);
  int port = sk_listener_port(l);

  sk_tls_ctx_t *good = tls_ctx(0, "client", "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  cli_t k = {0};
  k.send = (uint8_t *)"mtls";
  k.send_len = k.want = 4;
  cli_run(&loop, &k, "localhost", port, good, NULL);
  assert_int_equal(k.got.len, 4);
  assert_int_equal(s.accepts, 1);
  assert_string_equal(s.spiffe, "spiffe://skiff.test/region/local/workload/client");
  assert_string_equal(k.spiffe, "spiffe://skiff.test/region/local/daemon/server");
  sk_buf_done(&k.got);

  /* a certificate from an untrusted CA, and no certificate: refused. With
   * TLS 1.3 the client may finish its side first and learn of the refusal
   * from the alert; either way nothing is echoed and nothing accepted. */
  const char *who[] = {"rogue", NULL};
  for (int i = 0; i < 2; i++) {
    sk_tls_ctx_t *bad = tls_ctx(0, who[i], "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
    cli_t kb = {0};
    kb.send = (uint8_t *)"nope";
    kb.send_len = kb.want = 4;
    cli_run(&loop, &kb, "127.0.0.1", port, bad, "localhost");
    assert_int_equal(kb.got.len, 0);
    assert_true(kb.conn_err < 0 || kb.close_err < 0);
    assert_int_equal(s.accepts, 1);
    sk_buf_done(&kb.got);
    sk_tls_ctx_unref(bad);
  }

  sk_tls_ctx_unref(good);
  sk_tls_ctx_unref(sctx);
  finish(&loop, l);
}

static void test_mtls_optional(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_tls_ctx_t *sctx = tls_ctx(1, "server", "ca.pem", SK_TLS_VERIFY_OPTIONAL, NULL);
  srv_t s = {0};
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", sctx, NULL, &s);
  sk_tls_ctx_t *anon = tls_ctx(0, NULL, "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  sk_tls_ctx_t *good = tls_ctx(0, "client", "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  cli_t k = {0};
  k.send = (uint8_t *)"a";
  k.send_len = k.want = 1;
  cli_run(&loop, &k, "127.0.0.1", sk_listener_port(l), anon, "localhost");
  assert_int_equal(k.got.len, 1);
  assert_string_equal(s.spiffe, "");
  cli_t k2 = {0};
  k2.send = (uint8_t *)"b";
  k2.send_len = k2.want = 1;
  cli_run(&loop, &k2, "127.0.0.1", sk_listener_port(l), good, "localhost");
  assert_int_equal(k2.got.len, 1);
  assert_string_equal(s.spiffe, "spiffe://skiff.test/region/local/workload/client");
  assert_int_equal(s.accepts, 2);
  /* a certificate that is sent must verify */
  sk_tls_ctx_t *rogue = tls_ctx(0, "rogue", "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  cli_t k3 = {0};
  k3.send = (uint8_t *)"c";
  k3.send_len = k3.want = 1;
  cli_run(&loop, &k3, "127.0.0.1", sk_listener_port(l), rogue, "localhost");
  assert_int_equal(k3.got.len, 0);
  assert_true(k3.conn_err < 0 || k3.close_err < 0);
  assert_int_equal(s.accepts, 2);
  sk_tls_ctx_unref(rogue);
  sk_buf_done(&k.got);
  sk_buf_done(&k2.got);
  sk_tls_ctx_unref(anon);
  sk_tls_ctx_unref(good);
  sk_tls_ctx_unref(sctx);
  finish(&loop, l);
}

static void test_handshake_timeout(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_tls_ctx_t *sctx = tls_ctx(1, "server", NULL, SK_TLS_VERIFY_NONE, NULL);
  srv_t s = {0};
  sk_listener_t *l = NULL;
  sk_listener_opts_t o = {.host = "127.0.0.1", .tls = sctx, .handshake_timeout_ms = 200};
  assert_int_equal(sk_listener_new(&loop, &o, srv_accept, &s, &l), 0);
  /* a plaintext client that says nothing: the server hangs up on it */
  cli_t k = {0};
  k.want = 1;
  cli_run(&loop, &k, "127.0.0.1", sk_listener_port(l), NULL, NULL);
  assert_true(k.connected);
  assert_int_equal(k.got.len, 0);
  assert_int_equal(s.accepts, 0);
  sk_tls_ctx_unref(sctx);
  finish(&loop, l);
}

static void mute_accept(sk_listener_t *l, sk_conn_t *c, void *ud) { ++*(int *)ud; }

static void test_client_deadline(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  /* a plaintext server that never answers the ClientHello */
  int accepts = 0;
  sk_listener_t *l = NULL;
  sk_listener_opts_t o = {.host = "127.0.0.1"};
  assert_int_equal(sk_listener_new(&loop, &o, mute_accept, &accepts, &l), 0);
  sk_tls_ctx_t *cctx = tls_ctx(0, NULL, "ca.pem", SK_TLS_VERIFY_REQUIRE, NULL);
  cli_t k = {0};
  sk_connect_opts_t co = {.host = "127.0.0.1", .port = sk_listener_port(l), .tls = cctx,
                          .sni = "localhost", .timeout_ms = 200};
  assert_int_equal(sk_conn_connect(&loop, &co, cli_connected, &k), 0);
  assert_int_equal(sk_test_run_until(&loop, &k.done, WAIT_MS), 0);
  assert_false(k.connected);
  assert_int_equal(k.conn_err, SK_ETIMEDOUT);
  assert_int_equal(accepts, 1);
  sk_tls_ctx_unref(cctx);
  finish(&loop, l);
}

static void test_dual_stack_peer(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  srv_t s = {0};
  sk_listener_t *l = NULL;
  sk_listener_opts_t o = {.host = "::"};
  if (sk_listener_new(&loop, &o, srv_accept, &s, &l) < 0) skip();
  cli_t k = {0};
  k.send = (uint8_t *)"v4";
  k.send_len = k.want = 2;
  cli_run(&loop, &k, "127.0.0.1", sk_listener_port(l), NULL, NULL);
  if (!k.connected) skip(); /* an IPv6-only socket here */
  assert_int_equal(strncmp(s.peer, "127.0.0.1:", 10), 0);
  sk_buf_done(&k.got);
  finish(&loop, l);
}

/* ---------------- openssl s_client as the client ---------------- */

static void tick(uv_timer_t *t) {}

/* The job's thread cannot wake the loop: a short repeating timer makes
 * sure the done flag is looked at soon after it is set. */
static void run_job(uv_loop_t *loop, sk_test_job_t *j) {
  uv_timer_t t;
  uv_timer_init(loop, &t);
  uv_timer_start(&t, tick, 10, 10);
  int rc = sk_test_run_until(loop, &j->done, WAIT_MS);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  assert_int_equal(rc, 0);
  sk_test_job_join(j);
}

static void test_s_client(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[512], cert[512], key[512];
  snprintf(cert, sizeof cert, "%s/srv.pem", sk_test_tmpdir());
  snprintf(key, sizeof key, "%s/srv.key", sk_test_tmpdir());
  assert_int_equal(sk_test_sh(NULL, 0, "cp '%s' '%s' && cp '%s' '%s'", sk_test_cert("server.pem"),
                              cert, sk_test_cert("server.key"), key), 0);
  sk_tls_ctx_t *sctx = NULL;
  sk_tls_opts_t to = {.is_server = 1, .cert_file = cert, .key_file = key};
  assert_int_equal(sk_tls_ctx_new(&to, &sctx, err, sizeof err), 0);
  srv_t s = {.close_on_newline = 1};
  sk_listener_t *l = listen_on(&loop, "127.0.0.1", sctx, "h2,http/1.1", &s);
  int port = sk_listener_port(l);
  const char *ca = sk_test_cert("ca.pem");

  sk_test_job_t *j = malloc(sizeof *j);
  sk_test_job_start(j,
                    "echo ping | timeout 15 openssl s_client -connect 127.0.0.1:%d "
                    "-servername localhost -CAfile '%s' -verify_return_error -alpn h2 "
                    "-ign_eof 2>&1",
                    port, ca);
  run_job(&loop, j);
  assert_int_equal(j->status, 0);
  assert_non_null(strstr(j->out, "ALPN protocol: h2"));
  assert_non_null(strstr(j->out, "Verify return code: 0 (ok)"));
  assert_non_null(strstr(j->out, "CN = localhost\n"));
  assert_non_null(strstr(j->out, "echo:ping"));
  assert_int_equal(s.accepts, 1);
  assert_string_equal(s.alpn, "h2");

  /* http/1.1 only */
  sk_test_job_start(j,
                    "echo ping | timeout 15 openssl s_client -connect 127.0.0.1:%d "
                    "-CAfile '%s' -alpn http/1.1 -tls1_2 -ign_eof 2>&1",
                    port, ca);
  run_job(&loop, j);
  assert_non_null(strstr(j->out, "ALPN protocol: http/1.1"));
  assert_non_null(strstr(j->out, "Protocol  : TLSv1.2"));
  assert_non_null(strstr(j->out, "echo:ping"));

  /* TLS 1.1 is refused by the server (the client is allowed to try) */
  sk_test_job_start(j,
                    "echo ping | timeout 15 openssl s_client -connect 127.0.0.1:%d -tls1_1 "
                    "-cipher 'DEFAULT@SECLEVEL=0' -ign_eof 2>&1",
                    port);
  run_job(&loop, j);
  assert_int_not_equal(j->status, 0);
  assert_non_null(strstr(j->out, "protocol version"));
  assert_null(strstr(j->out, "echo:ping"));
  assert_int_equal(s.accepts, 2);

  /* swap the certificate on disk and reload: the next client sees it
   * without the listener being restarted */
  assert_int_equal(sk_test_sh(NULL, 0, "cp '%s' '%s' && cp '%s' '%s'",
                              sk_test_cert("server2.pem"), cert, sk_test_cert("server2.key"), key),
                   0);
  assert_int_equal(sk_tls_ctx_reload(sctx, err, sizeof err), 0);
  sk_test_job_start(j,
                    "echo ping | timeout 15 openssl s_client -connect 127.0.0.1:%d "
                    "-servername localhost -CAfile '%s' -verify_return_error -ign_eof 2>&1",
                    port, ca);
  run_job(&loop, j);
  assert_int_equal(j->status, 0);
  assert_non_null(strstr(j->out, "CN = localhost-2"));
  assert_non_null(strstr(j->out, "echo:ping"));

  /* a broken reload keeps serving the reloaded certificate */
  assert_int_equal(sk_test_sh(NULL, 0, "rm -f '%s'", cert), 0);
  assert_true(sk_tls_ctx_reload(sctx, err, sizeof err) < 0);
  assert_non_null(strstr(err, cert));
  sk_test_job_start(j,
                    "echo ping | timeout 15 openssl s_client -connect 127.0.0.1:%d "
                    "-CAfile '%s' -ign_eof 2>&1",
                    port, ca);
  run_job(&loop, j);
  assert_non_null(strstr(j->out, "CN = localhost-2"));
  assert_non_null(strstr(j->out, "echo:ping"));
  assert_int_equal(s.accepts, 4);

  free(j);
  sk_buf_done(&s.line);
  sk_tls_ctx_unref(sctx);
  finish(&loop, l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_roundtrip),  cmocka_unit_test(test_half_close),
      cmocka_unit_test(test_plain_large_ipv6),
      cmocka_unit_test(test_connect_errors),   cmocka_unit_test(test_reuseport),
      cmocka_unit_test(test_tls_roundtrip),
      cmocka_unit_test(test_mtls_require),     cmocka_unit_test(test_mtls_optional),
      cmocka_unit_test(test_handshake_timeout),
      cmocka_unit_test(test_client_deadline),  cmocka_unit_test(test_dual_stack_peer), cmocka_unit_test(test_s_client),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
