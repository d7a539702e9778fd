/* Integration tests: HTTP/2 server (h2c prior knowledge and h2 over TLS via
 * ALPN) in-process, driven by real clients: curl, nghttp and h2load, plus
 * Skiff's own client with version 20. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/tls.h"

#define BIG_LEN (6u * 1024u * 1024u + 123u) /* several MiB, not a multiple of a frame */
#define MAX_BODY (64u * 1024u)
#define WAIT_MS 60000

typedef struct fx {
  uv_loop_t loop;
  sk_tls_ctx_t *tls;
  sk_http_server_t *plain, *secure;
  int plain_port, tls_port;
  int nreq, nasync_done, naborted;
  char peers[64][64]; /* peer address of each request (up to 64) */
  int drained;
  char dir[200];
} fx_t;

static uint8_t *big_body;

static uint8_t big_byte(size_t i) { return (uint8_t)((i * 131u) ^ (i >> 12)); }

/* ---------------- handlers ---------------- */

typedef struct async_resp {
  uv_timer_t timer;
  sk_http_req_t *req;
  fx_t *fx;
  int tick;
  int ticks;
} async_resp_t;

static void async_closed(uv_handle_t *h) { free(h->data); }

static void async_abort(sk_http_req_t *req, void *ud) {
  async_resp_t *a = ud;
  a->fx->naborted++;
  a->req = NULL;
  uv_timer_stop(&a->timer);
  uv_close((uv_handle_t *)&a->timer, async_closed);
}

static void async_tick(uv_timer_t *t) {
  async_resp_t *a = t->data;
  if (!a->req) return;
  if (a->tick == 0) {
    sk_http_header_t h = {"Content-Type", "text/plain"};
    assert_int_equal(sk_http_resp_start(a->req, 200, &h, 1), 0);
  }
  if (a->tick < a->ticks) {
    char line[32];
    snprintf(line, sizeof line, "chunk%d\n", a->tick);
    assert_int_equal(sk_http_resp_write(a->req, line, strlen(line)), 0);
    a->tick++;
    return;
  }
  assert_int_equal(sk_http_resp_end(a->req), 0);
  a->fx->nasync_done++;
  a->req = NULL;
  uv_timer_stop(t);
  uv_close((uv_handle_t *)t, async_closed);
}

static void hang_abort(sk_http_req_t *req, void *ud) { ((fx_t *)ud)->naborted++; }

static void handler(sk_http_req_t *req, void *ud) {
  fx_t *f = ud;
  if (f->nreq < 64) snprintf(f->peers[f->nreq], sizeof f->peers[0], "%s", req->peer_addr);
  f->nreq++;
  if (!strcmp(req->path, "/hello")) {
    sk_http_respond_text(req, 200, NULL, "hello h2\n");
  } else if (!strcmp(req->path, "/info")) {
    const char *ua = sk_http_headers_get(&req->headers, "user-agent");
    const char *x = sk_http_headers_get(&req->headers, "x-test");
    char *t = sk_pool_printf(req->pool,
                             "method=%s path=%s query=%s authority=%s scheme=%s version=%d "
                             "body=%zu ua=%s x-test=%s\n",
                             req->method, req->path, req->query ? req->query : "-",
                             req->authority ? req->authority : "-", req->scheme, req->version,
                             req->body_len, ua ? "yes" : "no", x ? x : "-");
    sk_http_header_t h[] = {{"X-Reply", "Mixed-Case"}, {"Connection", "keep-alive"},
                            {"Transfer-Encoding", "chunked"}};
    sk_http_respond(req, 200, h, 3, t, strlen(t));
  } else if (!strcmp(req->path, "/echo")) {
    sk_http_header_t h = {"content-type", "application/octet-stream"};
    sk_http_respond(req, 200, &h, 1, req->body, req->body_len);
  } else if (!strcmp(req->path, "/big")) {
    sk_http_respond(req, 200, NULL, 0, big_body, BIG_LEN);
  } else if (!strcmp(req->path, "/async")) {
    async_resp_t *a = calloc(1, sizeof *a);
    a->req = req;
    a->fx = f;
    a->ticks = req->query && !strcmp(req->query, "slow") ? 40 : 5;
    a->timer.data = a;
    uv_timer_init(&f->loop, &a->timer);
    uv_timer_start(&a->timer, async_tick, 20, 50);
    sk_http_req_on_abort(req, async_abort, a);
  } else if (!strcmp(req->path, "/hang")) {
    sk_http_req_on_abort(req, hang_abort, f); /* never answered */
  } else {
    sk_http_respond_text(req, 404, NULL, "not found\n");
  }
}

/* ---------------- fixture ---------------- */

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  if (!big_body) {
    big_body = malloc(BIG_LEN);
    for (size_t i = 0; i < BIG_LEN; i++) big_body[i] = big_byte(i);
  }
  snprintf(f->dir, sizeof f->dir, "%s", sk_test_tmpdir());

  char err[256];
  sk_tls_opts_t to = {.is_server = 1,
                      .cert_file = sk_test_cert("server.pem"),
                      .key_file = sk_test_cert("server.key")};
  assert_int_equal(sk_tls_ctx_new(&to, &f->tls, err, sizeof err), 0);

  sk_http_server_opts_t o = {.port = 0, .max_body_bytes = MAX_BODY, .server_name = "skiff-test"};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &f->plain), 0);
  o.tls = f->tls;
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &f->secure), 0);
  f->plain_port = sk_http_server_port(f->plain);
  f->tls_port = sk_http_server_port(f->secure);
  assert_true(f->plain_port > 0 && f->tls_port > 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  sk_http_server_free(f->plain);
  sk_http_server_free(f->secure);
  sk_tls_ctx_unref(f->tls);
  for (int i = 0; i < 100 && uv_run(&f->loop, UV_RUN_NOWAIT); i++) {
  }
  sk_test_loop_drain(&f->loop);
  free(f);
  return 0;
}

/* The job thread sets its flag without waking the loop: a ticking timer
 * makes sk_test_run_until look at it again. */
static void tick_cb(uv_timer_t *t) {}

static int run_until(fx_t *f, volatile int *flag) {
  uv_timer_t tick;
  uv_timer_init(&f->loop, &tick);
  uv_timer_start(&tick, tick_cb, 10, 10);
  int rc = sk_test_run_until(&f->loop, flag, WAIT_MS);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  return rc;
}

/* Runs a shell command on a thread while the loop serves; returns its exit
 * status, output in job->out. */
static int run_job(fx_t *f, sk_test_job_t *job, const char *cmd) {
  sk_test_job_start(job, "%s", cmd);
  int rc = run_until(f, &job->done);
  sk_test_job_join(job);
  if (rc != 0) fail_msg("command did not finish: %s", cmd);
  return job->status;
}

#define CURL "curl -sS --max-time 30 "

/* ---------------- tests ---------------- */

static void test_h2c_get(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           CURL "--http2-prior-knowledge -D - -w 'v=%%{http_version}\\n' "
                "'http://127.0.0.1:%d/info?a=1' -H 'X-Test: Hello'",
           f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "HTTP/2 200"));
  assert_non_null(strstr(j.out, "method=GET path=/info query=a=1"));
  char auth[64];
  snprintf(auth, sizeof auth, "authority=127.0.0.1:%d scheme=http version=20", f->plain_port);
  assert_non_null(strstr(j.out, auth));
  assert_non_null(strstr(j.out, "ua=yes x-test=Hello"));
  /* names lower case on the wire, connection-specific headers dropped */
  assert_non_null(strstr(j.out, "x-reply: Mixed-Case"));
  assert_non_null(strstr(j.out, "server: skiff-test"));
  assert_null(strstr(j.out, "transfer-encoding"));
  assert_null(strstr(j.out, "connection:"));
  assert_non_null(strstr(j.out, "v=2\n"));
}

static void test_h2c_post_body(void **state) {
  fx_t *f = *state;
  char path[256], cmd[4096];
  snprintf(path, sizeof path, "%s/post.bin", f->dir);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  for (int i = 0; i < 40000; i++) fputc('a' + i % 26, fp);
  fclose(fp);
  sk_test_job_t j;
  snprintf(cmd, sizeof cmd,
           CURL "--http2-prior-knowledge --data-binary @%s http://127.0.0.1:%d/echo -o %s.out "
                "-w '%%{http_code} %%{http_version}' && cmp %s %s.out && echo SAME",
           path, f->plain_port, path, path, path);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "200 2"));
  assert_non_null(strstr(j.out, "SAME"));

  /* and a request body sent without content-length (streamed from stdin) */
  snprintf(cmd, sizeof cmd,
           "head -c 30000 %s | " CURL "--http2-prior-knowledge -H 'Transfer-Encoding:' "
           "-H 'Content-Length:' -T - -X POST http://127.0.0.1:%d/info",
           path, f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "method=POST"));
  assert_non_null(strstr(j.out, "body=30000"));
}

static void test_tls_alpn(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           CURL "--http2 --cacert %s -w ' v=%%{http_version}' https://localhost:%d/info",
           sk_test_cert("ca.pem"), f->tls_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "scheme=https version=20"));
  assert_non_null(strstr(j.out, " v=2"));

  /* HTTP/1.1 through ALPN on the same port */
  snprintf(cmd, sizeof cmd,
           CURL "--http1.1 --cacert %s -w ' v=%%{http_version}' https://localhost:%d/info",
           sk_test_cert("ca.pem"), f->tls_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "scheme=https version=11"));
  assert_non_null(strstr(j.out, " v=1.1"));
}

static void test_nghttp_settings(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "nghttp -nv http://127.0.0.1:%d/hello", f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "recv SETTINGS frame"));
  assert_non_null(strstr(j.out, "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100"));
  assert_non_null(strstr(j.out, "SETTINGS_INITIAL_WINDOW_SIZE(0x04):65535"));
  assert_non_null(strstr(j.out, ":status: 200"));
  assert_non_null(strstr(j.out, "content-length: 9"));
}

static void test_nghttp_multiplex(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "nghttp -v -m 20 http://127.0.0.1:%d/hello", f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_int_equal(f->nreq, 20);
  for (int i = 1; i < 20; i++) assert_string_equal(f->peers[i], f->peers[0]); /* one connection */
  int n = 0;
  for (const char *p = j.out; (p = strstr(p, "hello h2")); p++) n++;
  assert_int_equal(n, 20);
  int sent = 0, ok = 0;
  for (const char *p = j.out; (p = strstr(p, "send HEADERS frame")); p++) sent++;
  for (const char *p = j.out; (p = strstr(p, ":status: 200")); p++) ok++;
  assert_int_equal(sent, 20);
  assert_int_equal(ok, 20);
}

static void test_async_stream(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd, CURL "--http2-prior-knowledge http://127.0.0.1:%d/async",
           f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_string_equal(j.out, "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n");
  assert_int_equal(f->nasync_done, 1);

  /* several asynchronous streams interleaved on one connection */
  snprintf(cmd, sizeof cmd, "nghttp -m 4 http://127.0.0.1:%d/async", f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  int n = 0;
  for (const char *p = j.out; (p = strstr(p, "chunk4\n")); p++) n++;
  assert_int_equal(n, 4);
  assert_int_equal(f->nasync_done, 5);
}

static void test_big_response(void **state) {
  fx_t *f = *state;
  char path[256], cmd[8192];
  snprintf(path, sizeof path, "%s/big.expected", f->dir);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(big_body, 1, BIG_LEN, fp), BIG_LEN);
  fclose(fp);
  sk_test_job_t j;
  /* h2c and h2, each with a small client window so flow control is exercised */
  snprintf(cmd, sizeof cmd,
           CURL "--http2-prior-knowledge http://127.0.0.1:%d/big -o %s.got && cmp %s %s.got && "
                "echo SAME1 && nghttp -w 16 -W 16 http://127.0.0.1:%d/big > %s.got2 && "
                "cmp %s %s.got2 && echo SAME2 && " CURL
                "--http2 --cacert %s https://localhost:%d/big -o %s.got3 && cmp %s %s.got3 && "
                "echo SAME3",
           f->plain_port, path, path, path, f->plain_port, path, path, path,
           sk_test_cert("ca.pem"), f->tls_port, path, path, path);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "SAME1"));
  assert_non_null(strstr(j.out, "SAME2"));
  assert_non_null(strstr(j.out, "SAME3"));
}

static void test_limits(void **state) {
  fx_t *f = *state;
  char path[256], cmd[8192];
  snprintf(path, sizeof path, "%s/toolarge.bin", f->dir);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  for (unsigned i = 0; i < MAX_BODY * 3; i++) fputc('z', fp);
  fclose(fp);
  sk_test_job_t j;
  /* announced by content-length */
  snprintf(cmd, sizeof cmd,
           CURL "--http2-prior-knowledge --data-binary @%s -w ' code=%%{http_code}' "
                "http://127.0.0.1:%d/echo",
           path, f->plain_port);
  run_job(f, &j, cmd);
  assert_non_null(strstr(j.out, "code=413"));
  /* discovered while streaming (no content-length) */
  snprintf(cmd, sizeof cmd,
           "cat %s | " CURL "--http2-prior-knowledge -H 'Content-Length:' -T - -X POST "
           "-w ' code=%%{http_code}' http://127.0.0.1:%d/echo",
           path, f->plain_port);
  run_job(f, &j, cmd);
  assert_non_null(strstr(j.out, "code=413"));
  /* too many header bytes */
  char *big = malloc(20001);
  memset(big, 'h', 20000);
  big[20000] = 0;
  snprintf(cmd, sizeof cmd,
           CURL "--http2-prior-knowledge -H \"x-big: $(head -c 20000 /dev/zero | tr '\\0' h)\" "
                "-w ' code=%%{http_code}' http://127.0.0.1:%d/hello",
           f->plain_port);
  free(big);
  run_job(f, &j, cmd);
  assert_non_null(strstr(j.out, "code=431"));
  assert_int_equal(f->nreq, 0); /* none reached the handler */
  /* the server still serves */
  snprintf(cmd, sizeof cmd, CURL "--http2-prior-knowledge http://127.0.0.1:%d/hello",
           f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_string_equal(j.out, "hello h2\n");
}

static void test_client_abort(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "curl -s --max-time 1 --http2-prior-knowledge http://127.0.0.1:%d/hang; "
           "curl -s --max-time 1 --http2-prior-knowledge http://127.0.0.1:%d/async?slow",
           f->plain_port, f->plain_port);
  run_job(f, &j, cmd);
  volatile int two = 0;
  for (int i = 0; i < 200 && f->naborted < 2; i++) {
    /* the close may reach the server just after curl exits */
    sk_test_run_until(&f->loop, &two, 10);
  }
  assert_int_equal(f->naborted, 2);
  assert_int_equal(f->nasync_done, 0);
}

static void on_drained(sk_http_server_t *s, void *ud) { ((fx_t *)ud)->drained = 1; }

static void test_drain_goaway(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "nghttp -v http://127.0.0.1:%d/async?slow", f->plain_port);
  sk_test_job_start(&j, "%s", cmd);
  assert_int_equal(run_until(f, (volatile int *)&f->nreq), 0);
  sk_http_server_drain(f->plain, on_drained, f);
  assert_int_equal(run_until(f, &j.done), 0);
  sk_test_job_join(&j);
  assert_int_equal(j.status, 0);
  assert_non_null(strstr(j.out, "recv GOAWAY frame"));
  /* first the shutdown notice, then the real last stream id (nghttp's
   * first request is stream 13) */
  const char *notice = strstr(j.out, "last_stream_id=2147483647");
  assert_non_null(notice);
  assert_non_null(strstr(notice, "last_stream_id=13,"));
  assert_non_null(strstr(j.out, "chunk39")); /* the stream in flight completed */
  assert_int_equal(run_until(f, &f->drained), 0);
  assert_int_equal(sk_http_server_conn_count(f->plain), 0);
}

static void test_h2load(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "h2load -n 2000 -c 4 -m 10 http://127.0.0.1:%d/hello",
           f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed"));
  assert_int_equal(f->nreq, 2000);
  snprintf(cmd, sizeof cmd, "h2load -n 400 -c 2 -m 10 https://localhost:%d/echo -d /etc/hostname",
           f->tls_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "400 succeeded, 0 failed"));
}

/* A malformed frame after a valid preface: GOAWAY, and the server lives on. */
static void test_malformed(void **state) {
  fx_t *f = *state;
  sk_test_job_t j;
  char cmd[4096];
  /* preface, empty SETTINGS, then a HEADERS frame on stream 2 (even: invalid
   * from a client) and garbage */
  snprintf(cmd, sizeof cmd,
           "python3 -c \"import socket,sys\n"
           "s=socket.create_connection(('127.0.0.1',%d))\n"
           "s.sendall(b'PRI * HTTP/2.0\\\\r\\\\n\\\\r\\\\nSM\\\\r\\\\n\\\\r\\\\n'+bytes([0,0,0,4,0,0,0,0,0])"
           "+bytes([0,0,3,1,5,0,0,0,2,0x82,0x86,0x84])+b'\\\\xff'*64)\n"
           "s.settimeout(10)\n"
           "d=b''\n"
           "while True:\n"
           "  try:\n"
           "    c=s.recv(4096)\n"
           "  except Exception:\n"
           "    break\n"
           "  if not c: break\n"
           "  d+=c\n"
           "i=0\n"
           "while i+9<=len(d):\n"
           "  n=int.from_bytes(d[i:i+3],'big'); print('frame', d[i+3]); i+=9+n\n"
           "\"",
           f->plain_port);
  run_job(f, &j, cmd);
  assert_non_null(strstr(j.out, "frame 4\n")); /* SETTINGS */
  assert_non_null(strstr(j.out, "frame 7\n")); /* GOAWAY */
  snprintf(cmd, sizeof cmd, CURL "--http2-prior-knowledge http://127.0.0.1:%d/hello",
           f->plain_port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_string_equal(j.out, "hello h2\n");
}


/* A raw client that opens 4 streams at once against a limit of 2, before
 * or after acknowledging the server's SETTINGS; prints RST_STREAM and
 * GOAWAY frames it gets back. */
static const char limit_py[] =
    "import socket, sys, time\n"
    "port = int(sys.argv[1]); ack = sys.argv[2] == \"ack\"\n"
    "s = socket.create_connection(('127.0.0.1', port))\n"
    "def frame(t, f, sid, payload=b''):\n"
    "    return len(payload).to_bytes(3, 'big') + bytes([t, f]) + sid.to_bytes(4, 'big') + payload\n"
    "s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + frame(4, 0, 0))\n"
    "s.settimeout(2)\n"
    "buf = b''\n"
    "def frames():\n"
    "    global buf\n"
    "    out = []\n"
    "    while len(buf) >= 9:\n"
    "        n = int.from_bytes(buf[0:3], 'big')\n"
    "        if len(buf) < 9 + n: break\n"
    "        out.append((buf[3], buf[4], int.from_bytes(buf[5:9], 'big') & 0x7fffffff, buf[9:9+n]))\n"
    "        buf = buf[9+n:]\n"
    "    return out\n"
    "if ack:\n"
    "    while True:\n"
    "        buf += s.recv(4096)\n"
    "        fs = frames()\n"
    "        if any(t == 4 and not (f & 1) for t, f, _, _ in fs): break\n"
    "    s.sendall(frame(4, 1, 0))\n"
    "    time.sleep(0.2)\n"
    "# :method GET (0x82), :scheme http (0x86), :path / (0x84) -> literal path /hang\n"
    "path = b'/hang'\n"
    "hb = bytes([0x82, 0x86, 0x04, len(path)]) + path + bytes([0x41, 9]) + b'localhost'\n"
    "req = b''.join(frame(1, 5, sid, hb) for sid in (1, 3, 5, 7))\n"
    "s.sendall(req)\n"
    "end = time.time() + 1.5\n"
    "while time.time() < end:\n"
    "    try:\n"
    "        c = s.recv(4096)\n"
    "    except socket.timeout:\n"
    "        break\n"
    "    if not c: break\n"
    "    buf += c\n"
    "for t, f, sid, p in frames():\n"
    "    if t == 3: print('RST', sid, int.from_bytes(p, 'big'))\n"
    "    if t == 7: print('GOAWAY', int.from_bytes(p[4:8], 'big'))\n";

/* Streams over SETTINGS_MAX_CONCURRENT_STREAMS: before the client has
 * acknowledged the setting nghttp2 refuses them (RST_STREAM REFUSED_STREAM);
 * after, it treats the overflow as a connection error (GOAWAY
 * PROTOCOL_ERROR) while the streams within the limit carry on. */
static void test_stream_limit(void **state) {
  fx_t *f = *state;
  sk_http_server_t *srv;
  sk_http_server_opts_t o = {.port = 0, .h2_max_concurrent_streams = 2};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &srv), 0);
  int port = sk_http_server_port(srv);
  char path[256], cmd[4096];
  snprintf(path, sizeof path, "%s/limit.py", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(limit_py, fp);
  fclose(fp);
  sk_test_job_t j;
  snprintf(cmd, sizeof cmd, "python3 %s %d noack", path, port);
  run_job(f, &j, cmd);
  assert_null(strstr(j.out, "RST 1 "));
  assert_null(strstr(j.out, "RST 3 "));
  assert_non_null(strstr(j.out, "RST 5 7\n")); /* REFUSED_STREAM */
  assert_non_null(strstr(j.out, "RST 7 7\n"));
  assert_null(strstr(j.out, "GOAWAY"));
  snprintf(cmd, sizeof cmd, "python3 %s %d ack", path, port);
  run_job(f, &j, cmd);
  assert_null(strstr(j.out, "RST 1 "));
  assert_null(strstr(j.out, "RST 3 "));
  assert_true(strstr(j.out, "RST 5 7\n") || strstr(j.out, "GOAWAY 1\n"));
  assert_int_equal(f->nreq, 4); /* two streams per connection reached the handler */
  sk_http_server_free(srv);
}

/* A raw client that starts a header block and never finishes it; prints
 * the GOAWAY it gets and whether the server closed. */
static const char stall_py[] =
    "import socket, sys\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
    "def fr(t, f, sid, p=b''):\n"
    "    return len(p).to_bytes(3, 'big') + bytes([t, f]) + sid.to_bytes(4, 'big') + p\n"
    "s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n' + fr(4, 0, 0) + fr(1, 0, 1, bytes([0x82, 0x86])))\n"
    "s.settimeout(20)\n"
    "d = b''\n"
    "while True:\n"
    "    c = s.recv(4096)\n"
    "    if not c: break\n"
    "    d += c\n"
    "i = 0\n"
    "while i + 9 <= len(d):\n"
    "    n = int.from_bytes(d[i:i+3], 'big')\n"
    "    if d[i+3] == 7: print('GOAWAY', int.from_bytes(d[i+13:i+17], 'big'))\n"
    "    i += 9 + n\n"
    "print('closed')\n";

static void test_timeouts(void **state) {
  fx_t *f = *state;
  sk_http_server_t *srv;
  sk_http_server_opts_t o = {.port = 0, .header_timeout_ms = 300, .body_timeout_ms = 300};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &srv), 0);
  int port = sk_http_server_port(srv);
  sk_test_job_t j;
  char path[256], cmd[4096];
  /* a body that stops arriving: 408, and the server resets the upload */
  snprintf(cmd, sizeof cmd,
           "(printf abc; sleep 3) | " CURL "--http2-prior-knowledge -T - -X POST "
           "-w ' code=%%{http_code}' http://127.0.0.1:%d/echo",
           port);
  run_job(f, &j, cmd);
  assert_non_null(strstr(j.out, "408 Request Timeout"));
  assert_non_null(strstr(j.out, "code=408"));
  /* a header block that never ends: GOAWAY and close */
  snprintf(path, sizeof path, "%s/stall.py", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(stall_py, fp);
  fclose(fp);
  snprintf(cmd, sizeof cmd, "python3 %s %d", path, port);
  assert_int_equal(run_job(f, &j, cmd), 0);
  assert_non_null(strstr(j.out, "GOAWAY 1\nclosed\n")); /* PROTOCOL_ERROR */
  assert_int_equal(f->nreq, 0);
  sk_http_server_free(srv);
}

/* ---------------- Skiff's own client, version 20 ---------------- */

typedef struct cres {
  fx_t *f;
  int done, err, status, version;
  size_t len;
  const uint8_t *expect; /* body the response must equal, when set */
  size_t expect_len;
  int body_ok;
  char text[1024];
} cres_t;

static int ndone, ntarget;
static volatile int all_done;

static void client_cb(int err, sk_http_resp_t *resp, void *ud) {
  cres_t *c = ud;
  c->done = 1;
  c->err = err;
  if (resp) {
    c->status = resp->status;
    c->version = resp->version;
    c->len = resp->body_len;
    c->body_ok = c->expect ? resp->body_len == c->expect_len &&
                                 !memcmp(resp->body, c->expect, c->expect_len)
                           : 1;
    size_t n = resp->body_len < sizeof c->text - 1 ? resp->body_len : sizeof c->text - 1;
    if (n) memcpy(c->text, resp->body, n);
    c->text[n] = 0;
  }
  if (++ndone == ntarget) all_done = 1;
}

static void wait_clients(fx_t *f, int target) {
  ntarget = target;
  if (ndone < target) assert_int_equal(run_until(f, &all_done), 0);
  assert_int_equal(ndone, target);
  ndone = 0;
  all_done = 0;
}

static void client_round(fx_t *f, sk_http_client_t *cl, const char *scheme) {
  enum { N = 12 };
  cres_t r[N];
  memset(r, 0, sizeof r);
  static uint8_t post[50000];
  for (size_t i = 0; i < sizeof post; i++) post[i] = (uint8_t)(i * 7);
  f->nreq = 0;
  for (int i = 0; i < 6; i++)
    assert_int_equal(sk_http_client_request(cl, "GET", "/hello", NULL, 0, NULL, 0, client_cb, &r[i]), 0);
  r[6].expect = post;
  r[6].expect_len = sizeof post;
  assert_int_equal(sk_http_client_request(cl, "POST", "/echo", NULL, 0, post, sizeof post, client_cb, &r[6]), 0);
  sk_http_header_t h[] = {{"X-Test", "from-client"}, {"Connection", "close"}};
  assert_int_equal(sk_http_client_request(cl, "PUT", "/info?q=2", h, 2, "abc", 3, client_cb, &r[7]), 0);
  r[8].expect = big_body;
  r[8].expect_len = BIG_LEN;
  assert_int_equal(sk_http_client_request(cl, "GET", "/big", NULL, 0, NULL, 0, client_cb, &r[8]), 0);
  assert_int_equal(sk_http_client_request(cl, "GET", "/async", NULL, 0, NULL, 0, client_cb, &r[9]), 0);
  assert_int_equal(sk_http_client_request(cl, "HEAD", "/hello", NULL, 0, NULL, 0, client_cb, &r[10]), 0);
  assert_int_equal(sk_http_client_request(cl, "GET", "/nope", NULL, 0, NULL, 0, client_cb, &r[11]), 0);
  wait_clients(f, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(r[i].err, 0);
    assert_int_equal(r[i].version, 20);
    if (!r[i].body_ok) fail_msg("request %d: body differs (len %zu)", i, r[i].len);
  }
  for (int i = 0; i < 6; i++) assert_string_equal(r[i].text, "hello h2\n");
  assert_int_equal(r[6].status, 200);
  char want[128];
  snprintf(want, sizeof want, "method=PUT path=/info query=q=2 authority=127.0.0.1:%d scheme=%s version=20 body=3",
           !strcmp(scheme, "https") ? f->tls_port : f->plain_port, scheme);
  assert_non_null(strstr(r[7].text, want));
  assert_non_null(strstr(r[7].text, "x-test=from-client"));
  assert_int_equal(r[8].len, BIG_LEN);
  assert_string_equal(r[9].text, "chunk0\nchunk1\nchunk2\nchunk3\nchunk4\n");
  assert_int_equal(r[10].status, 200);
  assert_int_equal(r[10].len, 0);
  assert_int_equal(r[11].status, 404);
  /* all multiplexed over one connection */
  assert_int_equal(f->nreq, N);
  for (int i = 1; i < N; i++) assert_string_equal(f->peers[i], f->peers[0]);
}

static void test_client_h2c(void **state) {
  fx_t *f = *state;
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = f->plain_port, .version = 20};
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  client_round(f, cl, "http");
  client_round(f, cl, "http"); /* the session is reused */
  assert_int_equal(sk_http_server_conn_count(f->plain), 1);
  sk_http_client_free(cl);
}

static void test_client_tls(void **state) {
  fx_t *f = *state;
  char err[256];
  sk_tls_ctx_t *ctls;
  sk_tls_opts_t to = {.ca_file = sk_test_cert("ca.pem"), .alpn = "h2"};
  assert_int_equal(sk_tls_ctx_new(&to, &ctls, err, sizeof err), 0);
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = f->tls_port, .version = 20,
                             .tls = ctls};
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  client_round(f, cl, "https");
  sk_http_client_free(cl);
  sk_tls_ctx_unref(ctls);
}

static void test_client_errors(void **state) {
  fx_t *f = *state;
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = f->plain_port, .version = 20,
                             .max_body_bytes = 1 << 20, .request_timeout_ms = 300};
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  cres_t r[3];
  memset(r, 0, sizeof r);
  /* a response over the client's body limit */
  assert_int_equal(sk_http_client_request(cl, "GET", "/big", NULL, 0, NULL, 0, client_cb, &r[0]), 0);
  /* no answer: the request times out, the stream is canceled, and the
   * server's handler sees the abort */
  assert_int_equal(sk_http_client_request(cl, "GET", "/hang", NULL, 0, NULL, 0, client_cb, &r[1]), 0);
  /* the server's 413 arrives as a response */
  static uint8_t body[MAX_BODY + 1];
  assert_int_equal(sk_http_client_request(cl, "POST", "/echo", NULL, 0, body, sizeof body, client_cb, &r[2]), 0);
  wait_clients(f, 3);
  assert_int_equal(r[0].err, SK_E2BIG);
  assert_int_equal(r[1].err, SK_ETIMEDOUT);
  assert_int_equal(r[2].err, 0);
  assert_int_equal(r[2].status, 413);
  volatile int never = 0;
  for (int i = 0; i < 200 && f->naborted < 1; i++) sk_test_run_until(&f->loop, &never, 10);
  assert_int_equal(f->naborted, 1);
  /* the session still works */
  assert_int_equal(sk_http_client_request(cl, "GET", "/hello", NULL, 0, NULL, 0, client_cb, &r[0]), 0);
  wait_clients(f, 1);
  assert_int_equal(r[0].err, 0);
  assert_string_equal(r[0].text, "hello h2\n");
  sk_http_client_free(cl);
}

static void test_client_goaway(void **state) {
  fx_t *f = *state;
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = f->plain_port, .version = 20};
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  cres_t r[2];
  memset(r, 0, sizeof r);
  assert_int_equal(sk_http_client_request(cl, "GET", "/async?slow", NULL, 0, NULL, 0, client_cb, &r[0]), 0);
  assert_int_equal(run_until(f, (volatile int *)&f->nreq), 0);
  sk_http_server_drain(f->plain, on_drained, f);
  wait_clients(f, 1);
  assert_int_equal(r[0].err, 0); /* the request in flight completes */
  assert_int_equal(r[0].status, 200);
  assert_non_null(strstr(r[0].text, "chunk39"));
  assert_int_equal(run_until(f, &f->drained), 0);
  /* the server has gone away: a new request cannot connect */
  assert_int_equal(sk_http_client_request(cl, "GET", "/hello", NULL, 0, NULL, 0, client_cb, &r[1]), 0);
  wait_clients(f, 1);
  assert_true(r[1].err < 0);
  sk_http_client_free(cl);
}

/* A raw HTTP/2 server: reads three requests, sends GOAWAY with
 * last_stream_id=1, answers stream 1 and closes. */
static const char goaway_srv_py[] =
    "import socket, sys, time\n"
    "l = socket.socket()\n"
    "l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "l.bind(('127.0.0.1', int(sys.argv[1])))\n"
    "l.listen(1)\n"
    "open(sys.argv[2], 'w').close()\n"
    "l.settimeout(20)\n"
    "c, _ = l.accept()\n"
    "c.settimeout(20)\n"
    "def fr(t, f, sid, p=b''):\n"
    "    return len(p).to_bytes(3, 'big') + bytes([t, f]) + sid.to_bytes(4, 'big') + p\n"
    "c.sendall(fr(4, 0, 0))\n"
    "d = b''\n"
    "seen = set()\n"
    "while len(seen) < 3:\n"
    "    x = c.recv(4096)\n"
    "    if not x: sys.exit(1)\n"
    "    d += x\n"
    "    i = 24 if d.startswith(b'PRI') else 0\n"
    "    while i + 9 <= len(d):\n"
    "        n = int.from_bytes(d[i:i+3], 'big')\n"
    "        if i + 9 + n > len(d): break\n"
    "        if d[i+3] == 1: seen.add(int.from_bytes(d[i+5:i+9], 'big'))\n"
    "        i += 9 + n\n"
    "c.sendall(fr(4, 1, 0) + fr(7, 0, 0, (1).to_bytes(4, 'big') + bytes(4)) +\n"
    "          fr(1, 4, 1, bytes([0x88])) + fr(0, 1, 1, b'ok'))\n"
    "time.sleep(0.5)\n"
    "c.close()\n"
    "print('served', sorted(seen))\n";

static void test_client_goaway_unprocessed(void **state) {
  fx_t *f = *state;
  /* a free port for the raw server */
  uv_tcp_t probe;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&f->loop, &probe);
  assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&a, 0), 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&probe, (struct sockaddr *)&ss, &len);
  int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&probe, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);

  char path[256], cmd[4096];
  snprintf(path, sizeof path, "%s/goaway_srv.py", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(goaway_srv_py, fp);
  fclose(fp);
  sk_test_job_t j;
  snprintf(cmd, sizeof cmd, "python3 %s %d %s.ready", path, port, path);
  sk_test_job_start(&j, "%s", cmd);

  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1", .port = port, .version = 20,
                             .connect_timeout_ms = 20000};
  assert_int_equal(sk_http_client_new(&f->loop, &o, &cl), 0);
  cres_t r[3];
  memset(r, 0, sizeof r);
  /* wait until the raw server listens */
  char ready[300];
  snprintf(ready, sizeof ready, "%s.ready", path);
  for (int i = 0; i < 400 && access(ready, F_OK) != 0; i++) {
    volatile int never = 0;
    sk_test_run_until(&f->loop, &never, 50);
  }
  assert_int_equal(access(ready, F_OK), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(sk_http_client_request(cl, "GET", "/", NULL, 0, NULL, 0, client_cb, &r[i]), 0);
  wait_clients(f, 3);
  assert_int_equal(run_until(f, &j.done), 0);
  sk_test_job_join(&j);
  assert_non_null(strstr(j.out, "served [1, 3, 5]"));
  assert_int_equal(r[0].err, 0);
  assert_int_equal(r[0].status, 200);
  assert_string_equal(r[0].text, "ok");
  assert_int_equal(r[1].err, SK_EDRAIN); /* above last_stream_id: never processed */
  assert_int_equal(r[2].err, SK_EDRAIN);
  sk_http_client_free(cl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_h2c_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_h2c_post_body, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tls_alpn, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nghttp_settings, setup, teardown),
      cmocka_unit_test_setup_teardown(test_nghttp_multiplex, setup, teardown),
      cmocka_unit_test_setup_teardown(test_async_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_big_response, setup, teardown),
      cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_abort, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain_goaway, setup, teardown),
      cmocka_unit_test_setup_teardown(test_h2load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_h2c, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_tls, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_errors, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_goaway, setup, teardown),
      cmocka_unit_test_setup_teardown(test_client_goaway_unprocessed, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  free(big_body);
  return rc;
}
