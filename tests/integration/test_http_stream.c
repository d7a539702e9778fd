/* Integration tests: the client's streaming responses
 * (sk_http_client_stream) against the in-process server, over HTTP/1.1
 * (chunked and content-length) and HTTP/2 (h2c prior knowledge): pieces
 * arrive before the response ends, bodies far above max_body_bytes pass,
 * the idle timeout fires on a silent stream, and cancel from inside a
 * callback stops the stream and lets the server see the abort; a raw
 * server's close-delimited HTTP/1.1 body streams too. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/net.h"

#define BIG_LEN (3u * 1024u * 1024u + 77u)
#define MAX_BODY (64u * 1024u)
#define WAIT_MS 30000

typedef struct fx {
  uv_loop_t loop;
  sk_http_server_t *srv;
  int port;
  int naborted, nended;
  struct ticker *tickers[64]; /* freed at teardown, after the loop drained */
  int ntickers;
} fx_t;

static uint8_t big_byte(size_t i) { return (uint8_t)((i * 7u) ^ (i >> 10)); }

/* ---------------- server ---------------- */

typedef struct ticker {
  uv_timer_t timer;
  sk_http_req_t *req;
  fx_t *fx;
  int tick, ticks;
  int hang; /* after the first line: silence */
} ticker_t;

static void ticker_stop(ticker_t *t) {
  t->req = NULL;
  uv_timer_stop(&t->timer);
  /* the teardown's loop drain may have closed it first */
  if (!uv_is_closing((uv_handle_t *)&t->timer)) uv_close((uv_handle_t *)&t->timer, NULL);
}

static void ticker_abort(sk_http_req_t *req, void *ud) {
  ticker_t *t = ud;
  t->fx->naborted++;
  ticker_stop(t);
}

static void ticker_tick(uv_timer_t *tm) {
  ticker_t *t = tm->data;
  if (!t->req) return;
  if (t->tick < t->ticks) {
    char line[32];
    int n = snprintf(line, sizeof line, "line %d\n", t->tick++);
    assert_int_equal(sk_http_resp_write(t->req, line, (size_t)n), 0);
    if (t->hang) uv_timer_stop(tm);
    return;
  }
  t->fx->nended++;
  sk_http_req_t *req = t->req;
  ticker_stop(t); /* before end: end may free req and run the abort path no more */
  sk_http_req_on_abort(req, NULL, NULL);
  assert_int_equal(sk_http_resp_end(req), 0);
}

static void handler(sk_http_req_t *req, void *ud) {
  fx_t *f = ud;
  if (!strcmp(req->path, "/big")) {
    uint8_t *b = malloc(BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++) b[i] = big_byte(i);
    char cl[32];
    snprintf(cl, sizeof cl, "%u", BIG_LEN);
    sk_http_header_t h[] = {{"content-type", "application/octet-stream"}, {"content-length", cl}};
    sk_http_respond(req, 200, h, 2, b, BIG_LEN);
    free(b);
    return;
  }
  if (!strcmp(req->path, "/ticks") || !strcmp(req->path, "/hang")) {
    assert_true(f->ntickers < 64);
    ticker_t *t = calloc(1, sizeof *t);
    f->tickers[f->ntickers++] = t;
    t->req = req;
    t->fx = f;
    t->ticks = req->query ? atoi(req->query) : 5;
    t->hang = !strcmp(req->path, "/hang");
    uv_timer_init(&f->loop, &t->timer);
    t->timer.data = t;
    sk_http_header_t h = {"content-type", "application/x-ndjson"};
    assert_int_equal(sk_http_resp_start(req, 200, &h, 1), 0);
    sk_http_req_on_abort(req, ticker_abort, t);
    uv_timer_start(&t->timer, ticker_tick, 5, 5);
    return;
  }
  sk_http_respond_text(req, 404, "text/plain", "no\n");
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  uv_loop_init(&f->loop);
  sk_http_server_opts_t o = {.host = "127.0.0.1", .port = 0};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &f->srv), 0);
  f->port = sk_http_server_port(f->srv);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  sk_http_server_free(f->srv);
  /* let both ends close their connections through their own callbacks
   * before the drain closes whatever is left (bounded) */
  for (int i = 0; i < 3000 && uv_loop_alive(&f->loop); i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (uv_loop_alive(&f->loop)) uv_sleep(1);
  }
  sk_test_loop_drain(&f->loop);
  for (int i = 0; i < f->ntickers; i++) free(f->tickers[i]);
  free(f);
  return 0;
}

/* ---------------- client side ---------------- */

typedef struct sres {
  int status, heads, ended, err;
  size_t pieces, bytes;
  size_t bad_at; /* first byte differing from /big, or SIZE_MAX */
  int pieces_before_end;
  char text[4096];
  size_t cancel_after; /* cancel from on_data once this many pieces came */
  sk_http_stream_t *h;
  int canceled;
} sres_t;

static void s_head(sk_http_stream_t *st, const sk_http_resp_t *head, void *ud) {
  sres_t *r = ud;
  r->heads++;
  r->status = head->status;
  assert_null(head->body);
}

static void s_data(sk_http_stream_t *st, const uint8_t *d, size_t n, void *ud) {
  sres_t *r = ud;
  assert_int_equal(r->heads, 1);
  assert_int_equal(r->ended, 0);
  for (size_t i = 0; i < n; i++)
    if (r->bad_at == SIZE_MAX && d[i] != big_byte(r->bytes + i)) r->bad_at = r->bytes + i;
  size_t room = sizeof r->text - 1 - strlen(r->text);
  strncat(r->text, (const char *)d, n < room ? n : room);
  r->bytes += n;
  r->pieces++;
  if (r->cancel_after && r->pieces == r->cancel_after) {
    assert_ptr_equal(st, r->h);
    sk_http_stream_cancel(st);
    r->canceled = 1;
  }
}

static void s_end(sk_http_stream_t *st, int err, void *ud) {
  sres_t *r = ud;
  r->ended++;
  r->err = err;
}

static const sk_http_stream_cbs_t scbs = {s_head, s_data, s_end};

static void sres_init(sres_t *r) {
  memset(r, 0, sizeof *r);
  r->bad_at = SIZE_MAX;
}

static sk_http_client_t *mk_client_t(fx_t *f, int version, uint64_t idle_ms, uint64_t request_ms) {
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = f->port, .version = version,
                             .max_body_bytes = MAX_BODY, .request_timeout_ms = request_ms,
                             .stream_idle_timeout_ms = idle_ms};
  sk_http_client_t *cl = NULL;
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  return cl;
}

/* request_timeout_ms 200: streams are not bound by it, only by idle */
static sk_http_client_t *mk_client(fx_t *f, int version, uint64_t idle_ms) {
  return mk_client_t(f, version, idle_ms, 200);
}

typedef struct whole {
  int done, err, status;
} whole_t;

static void whole_cb(int err, sk_http_resp_t *resp, void *ud) {
  whole_t *w = ud;
  w->done = 1;
  w->err = err;
  w->status = resp ? resp->status : 0;
}

static void run_stream_basics(fx_t *f, int version) {
  /* request_timeout_ms is 200: streams are not bound by it, only by idle */
  sk_http_client_t *cl = mk_client(f, version, 5000);

  /* pieces as they come, longer than the request timeout in total */
  sres_t a;
  sres_init(&a);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/ticks?60", NULL, 0, NULL, 0, &scbs, &a, &a.h), 0);
  assert_non_null(a.h);
  assert_int_equal(sk_test_run_until(&f->loop, &a.ended, WAIT_MS), 0);
  assert_int_equal(a.err, 0);
  assert_int_equal(a.status, 200);
  assert_true(a.pieces >= 2); /* really streamed, not one buffered body */
  assert_non_null(strstr(a.text, "line 0\n"));
  assert_non_null(strstr(a.text, "line 59\n"));

  /* far above max_body_bytes, content-length framed on HTTP/1.1 */
  sres_t b;
  sres_init(&b);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/big", NULL, 0, NULL, 0, &scbs, &b, NULL), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &b.ended, WAIT_MS), 0);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.bytes, BIG_LEN);
  assert_int_equal(b.bad_at, SIZE_MAX);

  /* the whole-response API keeps its limit (a client with the same
   * max_body_bytes, and a request timeout a loaded machine cannot hit) */
  sk_http_client_t *whole_cl = mk_client_t(f, version, 5000, WAIT_MS);
  whole_t w = {0};
  assert_int_equal(sk_http_client_request(whole_cl, "GET", "/big", NULL, 0, NULL, 0, whole_cb, &w), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &w.done, WAIT_MS), 0);
  assert_int_equal(w.err, SK_E2BIG);
  sk_http_client_free(whole_cl);

  /* cancel from inside on_data: no on_end, the server sees the abort */
  int aborted = f->naborted;
  sres_t c;
  sres_init(&c);
  c.cancel_after = 3;
  assert_int_equal(sk_http_client_stream(cl, "GET", "/ticks?100000", NULL, 0, NULL, 0, &scbs, &c, &c.h), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &c.canceled, WAIT_MS), 0);
  volatile int srv_saw = 0;
  for (int i = 0; i < 3000 && !srv_saw; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    srv_saw = f->naborted > aborted;
    if (!srv_saw) uv_sleep(1);
  }
  assert_true(srv_saw);
  assert_int_equal(c.ended, 0);
  assert_int_equal(c.pieces, 3);

  /* the client still works afterwards */
  sres_t d;
  sres_init(&d);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/ticks?2", NULL, 0, NULL, 0, &scbs, &d, NULL), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &d.ended, WAIT_MS), 0);
  assert_int_equal(d.err, 0);
  assert_string_equal(d.text, "line 0\nline 1\n");

  /* 404 is a head and a body like any other */
  sres_t e;
  sres_init(&e);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/nope", NULL, 0, NULL, 0, &scbs, &e, NULL), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &e.ended, WAIT_MS), 0);
  assert_int_equal(e.err, 0);
  assert_int_equal(e.status, 404);
  assert_string_equal(e.text, "no\n");

  sk_http_client_free(cl);
}

static void test_stream_h1(void **state) { run_stream_basics(*state, 11); }
static void test_stream_h2(void **state) { run_stream_basics(*state, 20); }

static void run_idle_timeout(fx_t *f, int version) {
  sk_http_client_t *cl = mk_client(f, version, 1500); /* long enough for a loaded machine to deliver the head */
  sres_t a;
  sres_init(&a);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/hang?3", NULL, 0, NULL, 0, &scbs, &a, NULL), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &a.ended, WAIT_MS), 0);
  assert_int_equal(a.err, SK_ETIMEDOUT);
  assert_int_equal(a.heads, 1);
  assert_string_equal(a.text, "line 0\n");
  sk_http_client_free(cl);
}

static void test_idle_timeout_h1(void **state) { run_idle_timeout(*state, 11); }
static void test_idle_timeout_h2(void **state) { run_idle_timeout(*state, 20); }

/* Freeing the client ends open streams with SK_ECANCELED. */
static void test_client_free_ends_stream(void **state) {
  fx_t *f = *state;
  for (int version = 11; version <= 20; version += 9) {
    sk_http_client_t *cl = mk_client(f, version, 5000);
    sres_t a;
    sres_init(&a);
    assert_int_equal(sk_http_client_stream(cl, "GET", "/ticks?100000", NULL, 0, NULL, 0, &scbs, &a, NULL), 0);
    volatile int got = 0;
    for (int i = 0; i < 10000 && !got; i++) {
      uv_run(&f->loop, UV_RUN_ONCE);
      got = a.pieces >= 2;
    }
    assert_true(got);
    int aborted = f->naborted;
    sk_http_client_free(cl);
    assert_int_equal(a.ended, 1);
    assert_int_equal(a.err, SK_ECANCELED);
    /* the connection really goes: the server's stream is aborted */
    for (int i = 0; i < 5000 && f->naborted == aborted; i++) {
      uv_run(&f->loop, UV_RUN_NOWAIT);
      if (f->naborted == aborted) uv_sleep(1);
    }
    assert_true(f->naborted > aborted);
    for (int i = 0; i < 20; i++) uv_run(&f->loop, UV_RUN_NOWAIT); /* the client's closes finish */
  }
}

/* A refused connection ends the stream with an error, head never seen. */
static void test_connect_refused(void **state) {
  fx_t *f = *state;
  uv_loop_t *loop = &f->loop;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = 1, .connect_timeout_ms = 2000};
  sk_http_client_t *cl = NULL;
  assert_int_equal(sk_http_client_new(loop, &o, &cl), 0);
  sres_t a;
  sres_init(&a);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/", NULL, 0, NULL, 0, &scbs, &a, NULL), 0);
  assert_int_equal(sk_test_run_until(loop, &a.ended, WAIT_MS), 0);
  assert_true(a.err < 0);
  assert_int_equal(a.heads, 0);
  sk_http_client_free(cl);
}

/* A raw HTTP/1.1 server whose response is delimited by closing the
 * connection (no content-length, no chunking), in two writes. */
static void raw_on_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  sk_buf_t *in = sk_conn_get_data(c);
  sk_buf_append(in, d, n);
  if (!memmem(in->data, in->len, "\r\n\r\n", 4)) return;
  static const char head[] = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nfirst ";
  sk_conn_write(c, head, sizeof head - 1);
  sk_conn_write(c, "second", 6);
  sk_conn_close(c);
}

static void raw_on_close(sk_conn_t *c, int err) {
  sk_buf_t *in = sk_conn_get_data(c);
  sk_buf_done(in);
  free(in);
}

static void raw_accept(sk_listener_t *l, sk_conn_t *c, void *ud) {
  sk_buf_t *in = calloc(1, sizeof *in);
  sk_buf_init(in);
  sk_conn_cbs_t cbs = {.on_data = raw_on_data, .on_close = raw_on_close};
  sk_conn_set_cbs(c, &cbs, in);
}

static void test_close_delimited(void **state) {
  fx_t *f = *state;
  sk_listener_opts_t lo = {.host = "127.0.0.1", .port = 0};
  sk_listener_t *l = NULL;
  assert_int_equal(sk_listener_new(&f->loop, &lo, raw_accept, NULL, &l), 0);
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = sk_listener_port(l), .stream_idle_timeout_ms = 5000};
  sk_http_client_t *cl = NULL;
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  sres_t a;
  sres_init(&a);
  assert_int_equal(sk_http_client_stream(cl, "GET", "/", NULL, 0, NULL, 0, &scbs, &a, NULL), 0);
  assert_int_equal(sk_test_run_until(&f->loop, &a.ended, WAIT_MS), 0);
  assert_int_equal(a.err, 0);
  assert_int_equal(a.status, 200);
  assert_string_equal(a.text, "first second");
  sk_http_client_free(cl);
  sk_listener_free(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stream_h1, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_h2, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_timeout_h1, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_timeout_h2, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_free_ends_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_delimited, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
