/* Bounded write queues for long-lived responses.
 *
 * 1. The runtime server: a client on a raw socket (small SO_RCVBUF) asks
 *    for a stream and reads nothing, over HTTP/1.1 and h2c. The handler
 *    writes until sk_http_resp_write refuses with SK_EAGAIN at the server's
 *    max_resp_queued_bytes; sk_http_resp_queued shows the unsent bytes
 *    staying near that bound (one write past it at most).
 * 2. The bus's SSE streams: one reader stops reading while curl -N reads
 *    normally; events are published until the stalled stream is ended. The
 *    stalled one is closed (skiff_bus_sse_slow_closed_total 1) with a
 *    bounded number of bytes ever sent to it, and what it got is a gapless
 *    prefix it could resume from; curl got every event. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "sk_test.h"
#include "skiff/bus.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/metrics.h"
#include "skiff/store.h"

#define WAIT_MS 30000
#define RAW_LIMIT (512u * 1024u)
#define RAW_CHUNK (64u * 1024u)
#define SSE_LIMIT (256u * 1024u)

/* Turns the loop for about ms milliseconds (wall clock). */
static void spin(uv_loop_t *loop, int ms) {
  for (int i = 0; i < ms; i++) {
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

/* A client that connects, sends what it is given and then reads nothing. */
static int raw_client(int port, const void *req, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int rcv = 4096;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(write(fd, req, len), (ssize_t)len);
  return fd;
}

/* Reads what has arrived (non-blocking, for up to ms) into out. */
static size_t raw_drain(int fd, uv_loop_t *loop, char *out, size_t cap, int ms, const char *until) {
  size_t n = 0;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (int i = 0; i < ms; i++) {
    for (;;) {
      char tmp[65536];
      ssize_t r = read(fd, tmp, sizeof tmp);
      if (r <= 0) break;
      size_t take = (size_t)r < cap - n - 1 ? (size_t)r : cap - n - 1;
      memcpy(out + n, tmp, take);
      n += take;
      out[n] = 0;
    }
    if (until && n >= strlen(until) && !memcmp(out + n - strlen(until), until, strlen(until))) break;
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  return n;
}

/* ---------------- 1: the runtime server ---------------- */

typedef struct rfx {
  uv_loop_t loop;
  sk_http_server_t *srv;
  sk_http_req_t *req; /* the stream being written */
  int aborted;
} rfx_t;

static void raw_abort(sk_http_req_t *req, void *ud) {
  (void)req;
  rfx_t *f = ud;
  f->req = NULL;
  f->aborted = 1;
}

static void raw_handler(sk_http_req_t *req, void *ud) {
  rfx_t *f = ud;
  assert_int_equal(sk_http_resp_start(req, 200, NULL, 0), 0);
  assert_int_equal(sk_http_resp_queued(req) < RAW_LIMIT, 1);
  sk_http_req_on_abort(req, raw_abort, f);
  f->req = req;
}

static void run_raw(int h2) {
  rfx_t f;
  memset(&f, 0, sizeof f);
  uv_loop_init(&f.loop);
  sk_http_server_opts_t ho = {.port = 0, .max_resp_queued_bytes = RAW_LIMIT};
  assert_int_equal(sk_http_server_new(&f.loop, &ho, raw_handler, &f, &f.srv), 0);
  int port = sk_http_server_port(f.srv);
  int fd;
  if (h2) {
    /* preface, empty SETTINGS, HEADERS (stream 1, END_STREAM|END_HEADERS):
     * :method GET, :scheme http, :path / from the static table */
    static const uint8_t h2req[] = {'P', 'R', 'I', ' ', '*', ' ', 'H', 'T', 'T', 'P', '/', '2', '.', '0', '\r',
                                    '\n', '\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n',
                                    0, 0, 0, 4, 0, 0, 0, 0, 0,              /* SETTINGS */
                                    0, 0, 9, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, /* HEADERS */
                                    0x01, 4, 't', 'e', 's', 't'};
    fd = raw_client(port, h2req, sizeof h2req);
  } else {
    static const char h1req[] = "GET /stream HTTP/1.1\r\nhost: test\r\n\r\n";
    fd = raw_client(port, h1req, sizeof h1req - 1);
  }
  for (int i = 0; i < WAIT_MS && !f.req; i++) spin(&f.loop, 1);
  assert_non_null(f.req);
  char *chunk = malloc(RAW_CHUNK);
  memset(chunk, 'x', RAW_CHUNK);
  size_t written = 0, max_q = 0;
  int rc = 0;
  /* the reader takes nothing: the queue must reach the bound and stop there */
  for (int i = 0; i < 4096 && f.req; i++) {
    rc = sk_http_resp_write(f.req, chunk, RAW_CHUNK);
    if (rc == SK_EAGAIN) break;
    assert_int_equal(rc, 0);
    written += RAW_CHUNK;
    size_t q = sk_http_resp_queued(f.req);
    if (q > max_q) max_q = q;
    spin(&f.loop, 2);
  }
  assert_int_equal(rc, SK_EAGAIN);
  assert_non_null(f.req);
  size_t q = sk_http_resp_queued(f.req);
  assert_true(q >= RAW_LIMIT);
  assert_true(max_q < RAW_LIMIT + RAW_CHUNK + 64);
  /* what the kernel took plus what is queued is all that was accepted */
  assert_true(written < 64u * 1024u * 1024u);
  /* refusing queued nothing more */
  assert_int_equal(sk_http_resp_write(f.req, chunk, RAW_CHUNK), SK_EAGAIN);
  assert_int_equal(sk_http_resp_queued(f.req), q);
  free(chunk);
  sk_http_req_on_abort(f.req, NULL, NULL);
  assert_int_equal(sk_http_resp_end(f.req), 0);
  f.req = NULL;
  close(fd);
  spin(&f.loop, 20);
  sk_http_server_free(f.srv);
  sk_test_loop_drain(&f.loop);
}

static void test_server_bound_h1(void **state) {
  (void)state;
  run_raw(0);
}

static void test_server_bound_h2(void **state) {
  (void)state;
  run_raw(1);
}

/* ---------------- 2: the bus's event streams ---------------- */

typedef struct bfx {
  uv_loop_t loop;
  sk_store_t *st;
  sk_bus_t *bus;
  sk_metrics_t *m;
  sk_http_server_t *srv;
} bfx_t;

static void sse_handler(sk_http_req_t *req, void *ud) {
  bfx_t *f = ud;
  sk_bus_sse_opts_t o = {.heartbeat_ms = 60000};
  sk_bus_sse_serve(f->bus, req, &o);
}

/* Whether the file's last 8 KiB hold needle. */
static int file_has(const char *path, const char *needle) {
  FILE *fp = fopen(path, "r");
  if (!fp) return 0;
  char buf[8192];
  if (fseek(fp, -(long)(sizeof buf - 1), SEEK_END) < 0) rewind(fp);
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = 0;
  return strstr(buf, needle) != NULL;
}

static void test_bus_slow_reader(void **state) {
  (void)state;
  bfx_t f;
  memset(&f, 0, sizeof f);
  uv_loop_init(&f.loop);
  sk_store_opts_t so = {.path = ":memory:", .non_durable = 1};
  assert_int_equal(sk_store_open(&so, &f.st), 0);
  assert_int_equal(sk_metrics_new(&f.m), 0);
  sk_bus_opts_t bo = {.store = f.st, .tick_ms = 100, .metrics = f.m, .sse_max_queued = SSE_LIMIT};
  char err[256];
  assert_int_equal(sk_bus_new(&f.loop, &bo, &f.bus, err, sizeof err), 0);
  sk_http_server_opts_t ho = {.port = 0};
  assert_int_equal(sk_http_server_new(&f.loop, &ho, sse_handler, &f, &f.srv), 0);
  int port = sk_http_server_port(f.srv);

  char dir[] = "/tmp/skbpXXXXXX";
  assert_non_null(mkdtemp(dir));
  char outp[64];
  snprintf(outp, sizeof outp, "%s/curl.out", dir);
  sk_test_job_t job;
  sk_test_job_start(&job, "curl -sN --max-time 120 -o '%s' 'http://127.0.0.1:%d/events'", outp, port);
  for (int i = 0; i < WAIT_MS && sk_bus_sse_count(f.bus) != 1; i++) spin(&f.loop, 1);
  assert_int_equal(sk_bus_sse_count(f.bus), 1);
  static const char h1req[] = "GET /events HTTP/1.1\r\nhost: test\r\n\r\n";
  int fd = raw_client(port, h1req, sizeof h1req - 1);
  for (int i = 0; i < WAIT_MS && sk_bus_sse_count(f.bus) != 2; i++) spin(&f.loop, 1);
  assert_int_equal(sk_bus_sse_count(f.bus), 2);

  /* ~1 KiB events in batches; curl keeps up (we wait for it), the raw
   * reader does not */
  char data[1100];
  int len = snprintf(data, sizeof data, "{\"pad\":\"");
  memset(data + len, 'p', 1000);
  snprintf(data + len + 1000, sizeof data - (size_t)len - 1000, "\"}");
  int64_t last = 0;
  int after = -1; /* batches published once the stalled stream was ended */
  for (int batches = 0; batches < 2000 && after < 20; batches++) {
    for (int i = 0; i < 64; i++) assert_true((last = sk_bus_publish(f.bus, "resource", "k", data)) > 0);
    char want[48];
    snprintf(want, sizeof want, "id: %lld\n", (long long)last);
    for (int i = 0; i < WAIT_MS && !file_has(outp, want) && !job.done; i++) spin(&f.loop, 1);
    assert_true(file_has(outp, want));
    if (after >= 0) after++;
    else if (sk_bus_sse_count(f.bus) == 1) after = 0;
  }
  assert_int_equal(after, 20);
  /* the stalled stream was ended; the reading one was not */
  assert_int_equal(sk_bus_sse_count(f.bus), 1);
  sk_buf_t mb;
  sk_buf_init(&mb);
  assert_int_equal(sk_metrics_render(f.m, &mb), 0);
  assert_non_null(strstr(sk_buf_cstr(&mb), "skiff_bus_sse_slow_closed_total 1\n"));
  sk_buf_done(&mb);

  /* the stalled reader now reads: a gapless prefix, then the end of the
   * chunked body; far less than was published */
  size_t cap = 64u << 20;
  char *got = malloc(cap);
  size_t n = raw_drain(fd, &f.loop, got, cap, WAIT_MS, "\r\n0\r\n\r\n");
  assert_true(n > 0);
  assert_true(n >= 7 && !memcmp(got + n - 7, "\r\n0\r\n\r\n", 7));
  assert_true((int64_t)n < last * 1000);
  long long expect = 1;
  for (const char *p = got; (p = strstr(p, "\nid: ")); p += 5) {
    assert_int_equal(atoll(p + 5), expect);
    expect++;
  }
  assert_true(expect > 1);
  assert_true(expect - 1 <= last - 20 * 64); /* nothing was queued for it once it was ended */
  free(got);
  close(fd);

  /* curl got every event, then the drain ends its stream cleanly */
  sk_bus_sse_end_all(f.bus);
  assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
  sk_test_job_join(&job);
  assert_int_equal(job.status, 0);
  char want[48];
  snprintf(want, sizeof want, "id: %lld\n", (long long)last);
  assert_true(file_has(outp, want));
  unlink(outp);
  rmdir(dir);

  sk_bus_free(f.bus, 0);
  sk_http_server_free(f.srv);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  sk_store_close(f.st);
  sk_metrics_free(f.m);
  sk_test_loop_drain(&f.loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_server_bound_h1), cmocka_unit_test(test_server_bound_h2),
                                     cmocka_unit_test(test_bus_slow_reader)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
