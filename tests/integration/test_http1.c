/* Integration tests: the HTTP/1.1 server driven by real curl and by raw
 * sockets (smuggling attempts, pipelining, timeouts), and the HTTP/1.1
 * client against it. */
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
#include "skiff/http.h"

static uv_loop_t g_loop;
static sk_http_server_t *g_srv;
static int g_port;
static int g_aborts;
static char g_peers[64][64];
static int g_npeers;

static void note_peer(const char *p) {
  for (int i = 0; i < g_npeers; i++)
    if (!strcmp(g_peers[i], p)) return;
  if (g_npeers < 64) snprintf(g_peers[g_npeers++], sizeof g_peers[0], "%s", p);
}

static void on_abort(sk_http_req_t *req, void *ud) { g_aborts++; }
static void relay_handler(sk_http_req_t *req);

static void later_closed(uv_handle_t *h) { free(h); }
static void later_cb(uv_timer_t *t) {
  sk_http_req_t *req = t->data;
  sk_http_respond_text(req, 200, NULL, "later\n");
  uv_close((uv_handle_t *)t, later_closed);
}

static void handler(sk_http_req_t *req, void *ud) {
  note_peer(req->peer_addr);
  if (!strcmp(req->path, "/hello")) {
    sk_http_header_t h[] = {{"X-Mixed-Case", "Yes"}, {"content-type", "text/plain"}};
    char *b = sk_pool_printf(req->pool, "hello %s\n", req->query ? req->query : "");
    sk_http_respond(req, 200, h, 2, b, strlen(b));
  } else if (!strcmp(req->path, "/echo")) {
    sk_http_header_t h[] = {{"X-Body-Len", sk_pool_printf(req->pool, "%zu", req->body_len)}};
    sk_http_respond(req, 200, h, 1, req->body, req->body_len);
  } else if (!strcmp(req->path, "/chunked")) {
    sk_http_resp_start(req, 200, NULL, 0);
    sk_http_resp_write(req, "part1", 5);
    sk_http_resp_write(req, "part2", 5);
    sk_http_resp_write(req, "part3", 5);
    sk_http_resp_end(req);
  } else if (!strcmp(req->path, "/later")) { /* answers from a timer */
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(&g_loop, t);
    t->data = req;
    uv_timer_start(t, later_cb, 50, 0);
  } else if (!strcmp(req->path, "/relay")) {
    relay_handler(req);
  } else if (!strcmp(req->path, "/never")) {
    sk_http_req_on_abort(req, on_abort, NULL);
  } else {
    sk_http_respond_text(req, 404, NULL, "not found\n");
  }
}

static int setup(void **state) {
  uv_loop_init(&g_loop);
  sk_http_server_opts_t o = {
      .port = 0,
      .max_header_bytes = 8192,
      .max_headers = 50,
      .max_body_bytes = 256 * 1024,
      .header_timeout_ms = 700,
      .body_timeout_ms = 700,
      .idle_timeout_ms = 3000, /* ends mangled-but-valid keep-alive exchanges */
  };
  int rc = sk_http_server_new(&g_loop, &o, handler, NULL, &g_srv);
  if (rc < 0) return -1;
  g_port = sk_http_server_port(g_srv);
  return 0;
}

static void stop_cb(uv_timer_t *t) { uv_stop(t->loop); }

static int teardown(void **state) {
  sk_http_server_free(g_srv);
  /* let connections finish closing (bounded by an unreferenced timer) */
  uv_timer_t t;
  uv_timer_init(&g_loop, &t);
  uv_timer_start(&t, stop_cb, 10000, 0);
  uv_unref((uv_handle_t *)&t);
  uv_run(&g_loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  sk_test_loop_drain(&g_loop);
  return 0;
}

/* Runs a shell command while the loop serves; returns its exit status. */
static int run_job(sk_test_job_t *job) {
  assert_int_equal(sk_test_run_until(&g_loop, &job->done, 30000), 0);
  sk_test_job_join(job);
  return job->status;
}

/* ---- raw socket client on a thread ---- */

typedef struct raw_job {
  int port;
  int half_close; /* shutdown(SHUT_WR) after sending, then read the answers */
  int eof;        /* the server closed (not a receive timeout or error) */
  char req[16384];
  size_t reqlen;
  char out[65536];
  size_t outlen;
  volatile int done;
  uv_thread_t th;
} raw_job_t;

static void raw_main(void *arg) {
  raw_job_t *j = arg;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)j->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = 10};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
    size_t off = 0;
    while (off < j->reqlen) {
      ssize_t n = send(fd, j->req + off, j->reqlen - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += (size_t)n;
    }
    if (j->half_close) shutdown(fd, SHUT_WR);
    for (;;) {
      ssize_t n = recv(fd, j->out + j->outlen, sizeof j->out - 1 - j->outlen, 0);
      if (n == 0) j->eof = 1;
      if (n <= 0) break;
      j->outlen += (size_t)n;
      if (j->outlen >= sizeof j->out - 1) break;
    }
  }
  j->out[j->outlen] = 0;
  close(fd);
  __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
}

/* Sends raw bytes, returns what the server answered before closing. */
static const char *raw_ex(raw_job_t *j, const char *req, size_t len, int half_close) {
  memset(j, 0, sizeof *j);
  j->port = g_port;
  j->half_close = half_close;
  memcpy(j->req, req, len);
  j->reqlen = len;
  uv_thread_create(&j->th, raw_main, j);
  assert_int_equal(sk_test_run_until(&g_loop, &j->done, 30000), 0);
  uv_thread_join(&j->th);
  return j->out;
}
static const char *raw(raw_job_t *j, const char *req, size_t len) { return raw_ex(j, req, len, 0); }
#define RAW(j, lit) raw(j, lit, sizeof(lit) - 1)
/* The same, with the write side shut (FIN) right after the request. */
#define RAW_HALF(j, lit) raw_ex(j, lit, sizeof(lit) - 1, 1)

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

static void expect_normal_curl(void) {
  sk_test_job_t job;
  sk_test_job_start(&job, "curl -s -m 10 http://127.0.0.1:%d/hello?ok", g_port);
  assert_int_equal(run_job(&job), 0);
  assert_string_equal(job.out, "hello ok\n");
}

/* ---------------- curl ---------------- */

static void test_keepalive_and_case(void **state) {
  sk_test_job_t job;
  g_npeers = 0;
  sk_test_job_start(&job, "curl -sv -m 10 http://127.0.0.1:%d/hello?a http://127.0.0.1:%d/hello?b 2>&1",
                    g_port, g_port);
  assert_int_equal(run_job(&job), 0);
  assert_non_null(strstr(job.out, "hello a\n"));
  assert_non_null(strstr(job.out, "hello b\n"));
  assert_non_null(strstr(job.out, "Re-using existing connection"));
  assert_non_null(strstr(job.out, "< X-Mixed-Case: Yes"));
  assert_non_null(strstr(job.out, "< date: "));
  assert_int_equal(g_npeers, 1); /* both requests came over one connection */
}

static void test_chunked_both_ways(void **state) {
  const char *dir = sk_test_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/up.bin", dir);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  for (int i = 0; i < 20000; i++) fprintf(f, "%05d\n", i); /* 120000 bytes */
  fclose(f);
  sk_test_job_t job;
  sk_test_job_start(&job,
                    "curl -s -m 10 -H 'Transfer-Encoding: chunked' --data-binary @%s "
                    "http://127.0.0.1:%d/echo | cmp - %s && echo SAME",
                    path, g_port, path);
  assert_int_equal(run_job(&job), 0);
  assert_string_equal(job.out, "SAME\n");
  sk_test_job_start(&job, "curl -sv -m 10 http://127.0.0.1:%d/chunked 2>&1", g_port);
  assert_int_equal(run_job(&job), 0);
  assert_non_null(strstr(job.out, "< transfer-encoding: chunked"));
  assert_non_null(strstr(job.out, "part1part2part3"));
}

static void test_expect_continue(void **state) {
  const char *dir = sk_test_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/expect.bin", dir);
  FILE *f = fopen(path, "wb");
  for (int i = 0; i < 10000; i++) fputs("0123456789", f); /* 100000 bytes */
  fclose(f);
  sk_test_job_t job;
  sk_test_job_start(&job,
                    "curl -sv -m 10 -H 'Expect: 100-continue' --expect100-timeout 5 "
                    "--data-binary @%s http://127.0.0.1:%d/echo 2>&1",
                    path, g_port);
  assert_int_equal(run_job(&job), 0);
  assert_non_null(strstr(job.out, "HTTP/1.1 100 Continue"));
  assert_non_null(strstr(job.out, "< X-Body-Len: 100000"));
  /* too large: 413 without 100 Continue */
  f = fopen(path, "wb");
  for (int i = 0; i < 30000; i++) fputs("0123456789", f); /* 300000 > 256 KiB */
  fclose(f);
  sk_test_job_start(&job,
                    "curl -sv -m 10 -H 'Expect: 100-continue' --expect100-timeout 5 "
                    "--data-binary @%s http://127.0.0.1:%d/echo 2>&1",
                    path, g_port);
  run_job(&job);
  assert_non_null(strstr(job.out, "< HTTP/1.1 413"));
  assert_null(strstr(job.out, "100 Continue"));
}

static void test_limits(void **state) {
  sk_test_job_t job;
  /* a 10000-byte header over the 8192 limit */
  const char *dir = sk_test_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/hdr.txt", dir);
  FILE *f = fopen(path, "wb");
  fputs("X-Big: ", f);
  for (int i = 0; i < 10000; i++) fputc('a', f);
  fputs("\n", f);
  fclose(f);
  sk_test_job_start(&job, "curl -s -m 10 -o /dev/null -w '%%{http_code}' -H @%s http://127.0.0.1:%d/hello",
                    path, g_port);
  run_job(&job);
  assert_string_equal(job.out, "431");
  /* 60 headers over the 50 limit */
  char hdrs[2048] = "";
  for (int i = 0; i < 60; i++)
    snprintf(hdrs + strlen(hdrs), sizeof hdrs - strlen(hdrs), " -H 'X-H%d: v'", i);
  sk_test_job_start(&job, "curl -s -m 10 -o /dev/null -w '%%{http_code}'%s http://127.0.0.1:%d/hello", hdrs,
                    g_port);
  run_job(&job);
  assert_string_equal(job.out, "431");
  /* body over 256 KiB, content-length and chunked */
  snprintf(path, sizeof path, "%s/big.bin", dir);
  f = fopen(path, "wb");
  for (int i = 0; i < 40000; i++) fputs("0123456789", f);
  fclose(f);
  sk_test_job_start(&job, "curl -s -m 10 -o /dev/null -w '%%{http_code}' -H 'Expect:' --data-binary @%s http://127.0.0.1:%d/echo",
                    path, g_port);
  run_job(&job);
  assert_string_equal(job.out, "413");
  sk_test_job_start(&job,
                    "curl -s -m 10 -o /dev/null -w '%%{http_code}' -H 'Transfer-Encoding: chunked' "
                    "--data-binary @%s http://127.0.0.1:%d/echo",
                    path, g_port);
  run_job(&job);
  assert_string_equal(job.out, "413");
  expect_normal_curl();
}

/* ---------------- raw sockets ---------------- */

static void test_smuggling(void **state) {
  static raw_job_t j;
  const char *o;
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
              "0\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 Bad Request\r\n"));
  assert_non_null(strstr(o, "400 Bad Request: both Content-Length and Transfer-Encoding"));
  assert_non_null(strstr(o, "connection: close"));
  assert_null(strstr(o, "hello")); /* the smuggled request was not served */
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 501 "));
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  assert_non_null(strstr(o, "whitespace"));
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  assert_non_null(strstr(o, "obs-fold"));
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 10\r\n\r\nabc");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  o = RAW(&j, "GET /hello HTTP/1.1\nHost: a\n\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  o = RAW(&j, "GET /hello HTTP/2.0\r\nHost: a\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 505 "));
  o = RAW(&j, "\x01\x02garbage\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  expect_normal_curl();
}

static void test_pipelining_and_http10(void **state) {
  static raw_job_t j;
  const char *o = RAW(&j, "GET /hello?1 HTTP/1.1\r\nHost: a\r\n\r\n"
                          "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"
                          "GET /hello?3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  const char *a = strstr(o, "hello 1\n"), *b = strstr(o, "\r\n\r\nbody"), *c = strstr(o, "hello 3\n");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_true(a < b && b < c);
  /* an asynchronous answer holds back the pipelined request after it */
  o = RAW(&j, "GET /later HTTP/1.1\r\nHost: a\r\n\r\nGET /hello?2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  a = strstr(o, "later\n");
  b = strstr(o, "hello 2\n");
  assert_non_null(a);
  assert_non_null(b);
  assert_true(a < b);
  /* HTTP/1.0: close-delimited streaming response */
  o = RAW(&j, "GET /chunked HTTP/1.0\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
  assert_null(strstr(o, "transfer-encoding"));
  assert_non_null(strstr(o, "connection: close"));
  assert_non_null(strstr(o, "\r\n\r\npart1part2part3"));
  /* HEAD: headers only */
  o = RAW(&j, "HEAD /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  assert_non_null(strstr(o, "content-length: 7\r\n"));
  assert_non_null(strstr(o, "\r\n\r\n"));
  assert_string_equal(strstr(o, "\r\n\r\n"), "\r\n\r\n");
}

static void test_header_timeout(void **state) {
  static raw_job_t j;
  const char *o = RAW(&j, "GET /hello HTTP/1.1\r\nHost: a\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 408 "));
  /* body timeout too */
  o = RAW(&j, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
  assert_non_null(strstr(o, "HTTP/1.1 408 "));
  expect_normal_curl();
}

/* Mangled requests on many connections at once: whatever each gets, the
 * server survives and keeps answering normal requests. */
static void test_garbage(void **state) {
  static const char *const seeds[] = {
      "GET /hello?g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
      "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /hello HTTP/1.1\r\n"
      "Host: a\r\nConnection: close\r\n\r\n",
      "GET /later HTTP/1.0\r\n\r\n",
  };
  enum { N = 32 };
  static raw_job_t jobs[N];
  uint32_t rnd = 12345;
  for (int i = 0; i < N; i++) {
    raw_job_t *j = &jobs[i];
    memset(j, 0, sizeof *j);
    j->port = g_port;
    const char *seed = seeds[i % 4];
    j->reqlen = strlen(seed);
    memcpy(j->req, seed, j->reqlen);
    int flips = 1 + i % 4;
    for (int k = 0; k < flips && i >= 4; k++) {
      rnd = rnd * 1103515245u + 12345u;
      size_t pos = (rnd >> 8) % j->reqlen;
      rnd = rnd * 1103515245u + 12345u;
      j->req[pos] = (char)(rnd >> 16);
    }
    uv_thread_create(&j->th, raw_main, j);
  }
  for (int i = 0; i < N; i++) {
    assert_int_equal(sk_test_run_until(&g_loop, &jobs[i].done, 30000), 0);
    uv_thread_join(&jobs[i].th);
  }
  /* the unmangled ones got their answers */
  assert_non_null(strstr(jobs[0].out, "hello g\n"));
  assert_non_null(strstr(jobs[1].out, "helloabc"));
  assert_non_null(strstr(jobs[2].out, "hello \n"));
  assert_non_null(strstr(jobs[3].out, "later\n"));
  for (int i = 4; i < N; i++) assert_true(jobs[i].outlen == 0 || !strncmp(jobs[i].out, "HTTP/1.1 ", 9));
  expect_normal_curl();
}

/* ---------------- client ---------------- */

typedef struct cres {
  volatile int done;
  int err, status;
  char body[256];
  size_t body_len;
  char cl[32];
} cres_t;

static void client_cb(int err, sk_http_resp_t *resp, void *ud) {
  cres_t *r = ud;
  r->err = err;
  if (resp) {
    r->status = resp->status;
    r->body_len = resp->body_len;
    snprintf(r->body, sizeof r->body, "%.*s", (int)resp->body_len, (const char *)resp->body);
    const char *cl = sk_http_headers_get(&resp->headers, "content-length");
    snprintf(r->cl, sizeof r->cl, "%s", cl ? cl : "");
  }
  r->done = 1;
}

static void creq(sk_http_client_t *cl, const char *m, const char *p, const char *body, cres_t *r) {
  memset(r, 0, sizeof *r);
  assert_int_equal(sk_http_client_request(cl, m, p, NULL, 0, body, body ? strlen(body) : 0, client_cb, r), 0);
  assert_int_equal(sk_test_run_until(&g_loop, &r->done, 20000), 0);
}

static void test_client(void **state) {
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = g_port, .request_timeout_ms = 400};
  assert_int_equal(sk_http_client_new(&g_loop, &o, &cl), 0);
  cres_t r;
  g_npeers = 0;
  creq(cl, "GET", "/hello?c1", NULL, &r);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "hello c1\n");
  creq(cl, "POST", "/echo", "payload", &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "payload");
  creq(cl, "GET", "/chunked", NULL, &r);
  assert_string_equal(r.body, "part1part2part3");
  creq(cl, "HEAD", "/hello", NULL, &r);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body_len, 0);
  assert_string_equal(r.cl, "7");
  creq(cl, "GET", "/missing", NULL, &r);
  assert_int_equal(r.status, 404);
  assert_int_equal(g_npeers, 1); /* one pooled keep-alive connection */
  /* timeout: the handler never answers */
  g_aborts = 0;
  creq(cl, "GET", "/never", NULL, &r);
  assert_int_equal(r.err, SK_ETIMEDOUT);
  volatile int *ab = &g_aborts;
  sk_test_run_until(&g_loop, ab, 5000);
  assert_int_equal(g_aborts, 1);
  /* still usable afterwards (a new connection) */
  creq(cl, "GET", "/hello?after", NULL, &r);
  assert_string_equal(r.body, "hello after\n");
  /* several at once share at most max_conns connections */
  cres_t many[12];
  for (int i = 0; i < 12; i++) {
    memset(&many[i], 0, sizeof many[i]);
    assert_int_equal(sk_http_client_request(cl, "GET", "/hello?m", NULL, 0, NULL, 0, client_cb, &many[i]), 0);
  }
  for (int i = 0; i < 12; i++) {
    assert_int_equal(sk_test_run_until(&g_loop, &many[i].done, 20000), 0);
    assert_int_equal(many[i].status, 200);
  }
  /* freeing with a request pending fails it with ECANCELED */
  memset(&r, 0, sizeof r);
  assert_int_equal(sk_http_client_request(cl, "GET", "/never", NULL, 0, NULL, 0, client_cb, &r), 0);
  sk_http_client_free(cl);
  assert_int_equal(r.done, 1);
  assert_int_equal(r.err, SK_ECANCELED);
  sk_test_run_until(&g_loop, ab, 5000);
}

static void test_client_refused(void **state) {
  /* a port nothing listens on */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = ntohs(a.sin_port)};
  assert_int_equal(sk_http_client_new(&g_loop, &o, &cl), 0);
  cres_t r;
  creq(cl, "GET", "/", NULL, &r);
  assert_int_equal(r.err, SK_ECONNREFUSED);
  sk_http_client_free(cl);
}

/* A gate shared by two clients: 1 connection, 3 waiting requests. */
typedef struct gate_state {
  int conns, max_conns_seen, conn_refused;
  int waits, wait_refused;
  volatile int done;
} gate_state_t;

static int g_conn_open(void *ud) {
  gate_state_t *g = ud;
  if (g->conns >= 1) {
    g->conn_refused++;
    return SK_ELIMIT;
  }
  if (++g->conns > g->max_conns_seen) g->max_conns_seen = g->conns;
  return 0;
}
static void g_conn_closed(void *ud) { ((gate_state_t *)ud)->conns--; }
static int g_wait_start(void *ud) {
  gate_state_t *g = ud;
  if (g->waits >= 3) {
    g->wait_refused++;
    return SK_ELIMIT;
  }
  g->waits++;
  return 0;
}
static void g_wait_end(void *ud) { ((gate_state_t *)ud)->waits--; }
static void g_done(void *ud) { ((gate_state_t *)ud)->done++; }

static void test_client_gate(void **state) {
  gate_state_t gs = {0};
  sk_http_client_gate_t gate = {g_conn_open, g_conn_closed, g_wait_start, g_wait_end, g_done, &gs, 5};
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = g_port, .max_conns = 4, .gate = &gate};
  sk_http_client_t *a, *b;
  assert_int_equal(sk_http_client_new(&g_loop, &o, &a), 0);
  assert_int_equal(sk_http_client_new(&g_loop, &o, &b), 0);
  cres_t ra[2], rb;
  memset(ra, 0, sizeof ra);
  memset(&rb, 0, sizeof rb);
  /* a: two requests wait (one connection allowed, the second refused) */
  for (int i = 0; i < 2; i++)
    assert_int_equal(sk_http_client_request(a, "GET", "/later", NULL, 0, NULL, 0, client_cb, &ra[i]), 0);
  assert_int_equal(gs.waits, 2);
  assert_int_equal(gs.conns, 1);
  assert_true(gs.conn_refused >= 1);
  /* b: a third may wait; its pool has no connection and gets none */
  assert_int_equal(sk_http_client_request(b, "GET", "/hello?b", NULL, 0, NULL, 0, client_cb, &rb), 0);
  assert_int_equal(gs.waits, 3);
  /* a fourth may not: refused at once, no callback */
  cres_t rx = {0};
  assert_int_equal(sk_http_client_request(a, "GET", "/hello", NULL, 0, NULL, 0, client_cb, &rx), SK_ELIMIT);
  assert_int_equal(gs.wait_refused, 1);
  /* a's two go out one after the other on its one connection */
  for (int i = 0; i < 2; i++) {
    assert_int_equal(sk_test_run_until(&g_loop, &ra[i].done, 20000), 0);
    assert_int_equal(ra[i].status, 200);
  }
  assert_int_equal(rx.done, 0);
  /* a's idle connection keeps the one slot: b still waits, asking again */
  volatile int never = 0;
  sk_test_run_until(&g_loop, &never, 100);
  assert_int_equal(rb.done, 0);
  assert_int_equal(gs.waits, 1);
  /* a lets its idle connection go: b gets the slot */
  sk_http_client_close_idle(a);
  assert_int_equal(sk_test_run_until(&g_loop, &rb.done, 20000), 0);
  assert_int_equal(rb.err, 0);
  assert_string_equal(rb.body, "hello b\n");
  assert_int_equal(gs.max_conns_seen, 1);
  assert_int_equal(gs.waits, 0);
  sk_http_client_free(a);
  sk_http_client_free(b);
  volatile int *done = &gs.done;
  for (int i = 0; i < 200 && gs.done < 2; i++) sk_test_run_until(&g_loop, &never, 10);
  assert_int_equal(gs.done, 2); /* done once per client, after its connections */
  assert_int_equal(gs.conns, 0);
  (void)done;
}

typedef struct fetch_job {
  char url[256];
  int rc, status;
  char body[64];
  volatile int done;
} fetch_job_t;

static void fetch_main(void *arg) {
  fetch_job_t *j = arg;
  sk_http_resp_t *resp = NULL;
  j->rc = sk_http_fetch("POST", j->url, NULL, "fetched", 7, 10000, &resp);
  if (resp) {
    j->status = resp->status;
    snprintf(j->body, sizeof j->body, "%.*s", (int)resp->body_len, (const char *)resp->body);
  }
  sk_http_resp_free(resp);
  __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
}

static void test_fetch(void **state) {
  fetch_job_t j = {0};
  snprintf(j.url, sizeof j.url, "http://127.0.0.1:%d/echo", g_port);
  uv_thread_t th;
  uv_thread_create(&th, fetch_main, &j);
  assert_int_equal(sk_test_run_until(&g_loop, &j.done, 20000), 0);
  uv_thread_join(&th);
  assert_int_equal(j.rc, 0);
  assert_int_equal(j.status, 200);
  assert_string_equal(j.body, "fetched");
  sk_http_resp_t *resp = NULL;
  assert_int_equal(sk_http_fetch("GET", "ftp://x/", NULL, NULL, 0, 1000, &resp), SK_EINVAL);
  assert_null(resp);
}

static int g_drained;
static void drained(sk_http_server_t *s, void *ud) { g_drained = 1; }

/* Drain closes an idle keep-alive connection at once and a busy one after
 * its response, which says "connection: close". */
static void test_drain(void **state) {
  sk_http_server_t *srv;
  sk_http_server_opts_t so = {.port = 0};
  assert_int_equal(sk_http_server_new(&g_loop, &so, handler, NULL, &srv), 0);
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = sk_http_server_port(srv)};
  assert_int_equal(sk_http_client_new(&g_loop, &o, &cl), 0);
  cres_t r;
  creq(cl, "GET", "/hello?d", NULL, &r);
  assert_int_equal(r.status, 200);
  assert_int_equal(sk_http_server_conn_count(srv), 1);
  g_drained = 0;
  sk_http_server_drain(srv, drained, NULL);
  assert_int_equal(sk_test_run_until(&g_loop, &g_drained, 10000), 0);
  assert_int_equal(sk_http_server_conn_count(srv), 0);
  sk_http_client_free(cl);
  sk_http_server_free(srv);
}

static sk_http_server_t *g_watch_srv;
static int g_no_conns;
static void watch_cb(uv_timer_t *t) {
  if (sk_http_server_conn_count(g_watch_srv) == 0) {
    g_no_conns = 1;
    uv_timer_stop(t);
  }
}

/* A keep-alive connection left idle is closed by the server, silently. */
static void test_idle_timeout(void **state) {
  sk_http_server_t *srv;
  sk_http_server_opts_t so = {.port = 0, .idle_timeout_ms = 200};
  assert_int_equal(sk_http_server_new(&g_loop, &so, handler, NULL, &srv), 0);
  static raw_job_t j;
  memset(&j, 0, sizeof j);
  j.port = sk_http_server_port(srv);
  const char *req = "GET /hello?idle HTTP/1.1\r\nHost: a\r\n\r\n";
  memcpy(j.req, req, strlen(req));
  j.reqlen = strlen(req);
  uv_thread_create(&j.th, raw_main, &j); /* reads until the server closes */
  assert_int_equal(sk_test_run_until(&g_loop, &j.done, 20000), 0);
  uv_thread_join(&j.th);
  assert_non_null(strstr(j.out, "hello idle\n"));
  assert_null(strstr(j.out, "408")); /* nothing after the response */
  g_watch_srv = srv;
  g_no_conns = 0;
  static uv_timer_t t;
  uv_timer_init(&g_loop, &t);
  uv_timer_start(&t, watch_cb, 10, 10);
  assert_int_equal(sk_test_run_until(&g_loop, &g_no_conns, 10000), 0);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&g_loop, UV_RUN_NOWAIT);
  sk_http_server_free(srv);
}

/* The client's HTTP/2 path (h2c prior knowledge) against the same server. */
static void test_client_h2c(void **state) {
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = g_port, .version = 20};
  assert_int_equal(sk_http_client_new(&g_loop, &o, &cl), 0);
  cres_t r;
  creq(cl, "POST", "/echo", "over h2", &r);
  assert_int_equal(r.err, 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "over h2");
  creq(cl, "GET", "/chunked", NULL, &r);
  assert_string_equal(r.body, "part1part2part3");
  sk_http_client_free(cl);
}

/* HTTP/1.1 over TLS: curl with ALPN http/1.1, and the client. */
static void test_tls(void **state) {
  char err[256];
  sk_tls_ctx_t *stls, *ctls;
  sk_tls_opts_t so = {.is_server = 1, .cert_file = sk_test_cert("server.pem"),
                      .key_file = sk_test_cert("server.key")};
  assert_int_equal(sk_tls_ctx_new(&so, &stls, err, sizeof err), 0);
  sk_tls_opts_t co = {.is_server = 0, .ca_file = sk_test_cert("ca.pem"), .alpn = "http/1.1"};
  assert_int_equal(sk_tls_ctx_new(&co, &ctls, err, sizeof err), 0);
  sk_http_server_t *srv;
  sk_http_server_opts_t o = {.port = 0, .tls = stls};
  assert_int_equal(sk_http_server_new(&g_loop, &o, handler, NULL, &srv), 0);
  int port = sk_http_server_port(srv);
  sk_test_job_t job;
  sk_test_job_start(&job,
                    "curl -sv -m 10 --http1.1 --cacert %s https://localhost:%d/hello?t "
                    "https://localhost:%d/chunked 2>&1",
                    sk_test_cert("ca.pem"), port, port);
  assert_int_equal(run_job(&job), 0);
  assert_non_null(strstr(job.out, "hello t\n"));
  assert_non_null(strstr(job.out, "part1part2part3"));
  assert_non_null(strstr(job.out, "Re-using existing connection"));
  assert_non_null(strstr(job.out, "< X-Mixed-Case: Yes"));
  sk_http_client_t *cl;
  sk_http_client_opts_t copt = {.host = "127.0.0.1", .port = port, .tls = ctls, .sni = "localhost"};
  assert_int_equal(sk_http_client_new(&g_loop, &copt, &cl), 0);
  cres_t r;
  creq(cl, "POST", "/echo", "secret", &r);
  assert_int_equal(r.err, 0);
  assert_string_equal(r.body, "secret");
  creq(cl, "GET", "/chunked", NULL, &r);
  assert_string_equal(r.body, "part1part2part3");
  sk_http_client_free(cl);
  sk_http_server_free(srv);
  sk_tls_ctx_unref(stls);
  sk_tls_ctx_unref(ctls);
}

static void test_client_body_limit(void **state) {
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = g_port, .max_body_bytes = 10};
  assert_int_equal(sk_http_client_new(&g_loop, &o, &cl), 0);
  cres_t r;
  creq(cl, "GET", "/hello?0123456789", NULL, &r); /* content-length over the limit */
  assert_int_equal(r.err, SK_E2BIG);
  creq(cl, "GET", "/chunked", NULL, &r); /* chunked over the limit */
  assert_int_equal(r.err, SK_E2BIG);
  creq(cl, "GET", "/hello?x", NULL, &r); /* within */
  assert_int_equal(r.err, 0);
  assert_string_equal(r.body, "hello x\n");
  sk_http_client_free(cl);
}

/* ---------------- half-close (client FIN after its requests) ---------------- */

static void test_half_close(void **state) {
  static raw_job_t j;
  /* one keep-alive request, then FIN: answered, then closed (whether the
   * answer says "connection: close" depends on whether the FIN was read
   * before the handler answered) */
  const char *o = RAW_HALF(&j, "GET /hello?hc HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_non_null(strstr(o, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(o, "\r\n\r\nhello hc\n"));
  assert_true(j.eof);
  /* an asynchronous answer: the FIN came first, so the answer says close */
  o = RAW_HALF(&j, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_non_null(strstr(o, "connection: close\r\n"));
  assert_non_null(strstr(o, "\r\n\r\nlater\n"));
  assert_true(j.eof);
  /* HTTP/1.0 tools do the same */
  o = RAW_HALF(&j, "GET /hello?ten HTTP/1.0\r\n\r\n");
  assert_non_null(strstr(o, "\r\n\r\nhello ten\n"));
  assert_true(j.eof);
  /* pipelined requests already buffered, one answered asynchronously,
   * are all answered in order before the close */
  o = RAW_HALF(&j, "GET /hello?p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                   "GET /later HTTP/1.1\r\nHost: x\r\n\r\n"
                   "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nbody3"
                   "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n");
  const char *a = strstr(o, "hello p1\n"), *b = strstr(o, "later\n"), *c = strstr(o, "body3"),
             *d = strstr(o, "5\r\npart3\r\n0\r\n\r\n");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_non_null(d);
  assert_true(a < b && b < c && c < d);
  assert_int_equal(count(o, "HTTP/1.1 200 OK\r\n"), 4);
  assert_int_equal(count(o, "connection: close\r\n"), 1); /* on the last one only */
  assert_true(strstr(o, "connection: close\r\n") > c);
  assert_true(j.eof);
  /* a body cut short by the FIN: 400, not a hang */
  o = RAW_HALF(&j, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
  assert_non_null(strstr(o, "HTTP/1.1 400 "));
  assert_true(j.eof);
  /* a head cut short: closed without an answer (and without waiting for
   * the header timeout: the raw client would see a 408 then) */
  o = RAW_HALF(&j, "GET /hello HTTP/1.1\r\nHost: x\r\n");
  assert_string_equal(o, "");
  assert_true(j.eof);
  /* an empty connection that half-closes is closed */
  o = raw_ex(&j, "", 0, 1);
  assert_string_equal(o, "");
  expect_normal_curl();
}

/* The same with a real netcat (OpenBSD's, whose -N shuts the socket down
 * after stdin's end), when it is installed. */
static void test_half_close_nc(void **state) {
  char out[256];
  if (sk_test_sh(out, sizeof out, "nc -h 2>&1 | grep -q -- ' -N ' && echo yes") != 0 ||
      strncmp(out, "yes", 3) != 0) {
    skip();
  }
  sk_test_job_t job;
  sk_test_job_start(&job,
                    "printf 'GET /hello?nc HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' | "
                    "timeout 10 nc -N 127.0.0.1 %d",
                    g_port);
  assert_int_equal(run_job(&job), 0);
  assert_non_null(strstr(job.out, "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(job.out, "\r\n\r\nhello nc\n"));
}

/* ---------------- client callbacks that answer downstream ---------------- */

/* A handler that forwards to the server itself through a client and
 * answers downstream from the client's callback. With pipelined requests
 * downstream, that answer runs the next request's handler at once, which
 * submits its upstream request from inside the client's callback, on the
 * connection that just finished its exchange. */
static sk_http_client_t *g_relay_cl;

static void relay_done(int err, sk_http_resp_t *resp, void *ud) {
  sk_http_req_t *down = ud;
  if (err < 0) {
    sk_http_respond_text(down, 502, NULL, sk_strerror(err));
    return;
  }
  char *b = sk_pool_printf(down->pool, "relayed %d %.*s", resp->status, (int)resp->body_len,
                           (const char *)resp->body);
  sk_http_respond_text(down, 200, NULL, b); /* down is gone after this */
}

static void relay_handler(sk_http_req_t *req) {
  const char *q = req->query ? req->query : "";
  char path[64];
  snprintf(path, sizeof path, "/hello?up%s", q);
  if (sk_http_client_request(g_relay_cl, "GET", path, NULL, 0, NULL, 0, relay_done, req) < 0)
    sk_http_respond_text(req, 500, NULL, "request failed\n");
}

static void test_client_cb_responds_downstream(void **state) {
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = g_port, .max_conns = 1};
  assert_int_equal(sk_http_client_new(&g_loop, &o, &g_relay_cl), 0);
  static raw_job_t j;
  g_npeers = 0;
  const char *out = RAW(&j, "GET /relay?1 HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /relay?2 HTTP/1.1\r\nHost: x\r\n\r\n"
                            "GET /relay?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const char *a = strstr(out, "relayed 200 hello up1\n"), *b = strstr(out, "relayed 200 hello up2\n"),
             *c = strstr(out, "relayed 200 hello up3\n");
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_true(a < b && b < c);
  /* the raw client and one pooled upstream connection, reused */
  assert_int_equal(g_npeers, 2);
  sk_http_client_free(g_relay_cl);
  g_relay_cl = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keepalive_and_case),
      cmocka_unit_test(test_chunked_both_ways),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_smuggling),
      cmocka_unit_test(test_pipelining_and_http10),
      cmocka_unit_test(test_header_timeout),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_client),
      cmocka_unit_test(test_client_refused),
      cmocka_unit_test(test_client_gate),
      cmocka_unit_test(test_fetch),
      cmocka_unit_test(test_drain),
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_client_h2c),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_client_body_limit),
      cmocka_unit_test(test_half_close),
      cmocka_unit_test(test_half_close_nc),
      cmocka_unit_test(test_client_cb_responds_downstream),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
