/* Fuzz target: the HTTP/2 server (h2_server.c over nghttp2) with arbitrary
 * frames after a valid client preface. The input goes over a real loopback
 * connection to an in-process sk_http_server, so the whole path runs: the
 * core's h2c sniffing, the nghttp2 session, our callbacks, request dispatch
 * (synchronous, streamed and asynchronous responses), aborts and closes.
 * The server must never crash, leak or hang; the run ends when the server
 * has closed the connection. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "skiff/http.h"

#define FUZZ_MAX_INPUT (64 * 1024)
#define FUZZ_DEADLINE_MS 3000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t *loop;
static sk_http_server_t *srv;
static int port;

typedef struct later {
  uv_timer_t t;
  sk_http_req_t *req;
} later_t;

static void later_closed(uv_handle_t *h) { free(h->data); }

static void later_abort(sk_http_req_t *req, void *ud) {
  later_t *l = ud;
  l->req = NULL;
  uv_close((uv_handle_t *)&l->t, later_closed);
}

static void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  if (!l->req) return;
  /* on failure (connection closing) the abort callback follows and closes */
  if (sk_http_resp_start(l->req, 200, NULL, 0) < 0 || sk_http_resp_write(l->req, "late\n", 5) < 0 ||
      sk_http_resp_end(l->req) < 0)
    return;
  l->req = NULL;
  uv_close((uv_handle_t *)t, later_closed);
}

static unsigned long nrequests;

static void report(void) {
  if (getenv("FUZZ_H2_VERBOSE")) fprintf(stderr, "fuzz_h2_server: %lu requests\n", nrequests);
}

static void handler(sk_http_req_t *req, void *ud) {
  nrequests++;
  const char *p = req->path ? req->path : "";
  if (!strncmp(p, "/a", 2)) { /* answered from the loop later */
    later_t *l = calloc(1, sizeof *l);
    l->req = req;
    l->t.data = l;
    uv_timer_init(loop, &l->t);
    uv_timer_start(&l->t, later_fire, 0, 0);
    sk_http_req_on_abort(req, later_abort, l);
  } else if (!strncmp(p, "/s", 2)) { /* streamed */
    sk_http_header_t h = {"X-Stream", "yes"};
    sk_http_resp_start(req, 200, &h, 1);
    for (int i = 0; i < 4; i++) sk_http_resp_write(req, "0123456789abcdef", 16);
    sk_http_resp_end(req);
  } else {
    sk_http_respond(req, 200, NULL, 0, req->body, req->body_len);
  }
}

static void setup_once(void) {
  if (loop) return;
  loop = calloc(1, sizeof *loop);
  uv_loop_init(loop);
  sk_http_server_opts_t o = {.port = 0,
                             .max_body_bytes = 4096,
                             .max_header_bytes = 2048,
                             .max_headers = 20,
                             .h2_max_concurrent_streams = 8,
                             .idle_timeout_ms = 2000};
  if (sk_http_server_new(loop, &o, handler, NULL, &srv) < 0) abort();
  port = sk_http_server_port(srv);
  atexit(report);
}

typedef struct client {
  uv_poll_t poll;
  int fd;
  int eof;
} client_t;

static void on_readable(uv_poll_t *p, int status, int events) {
  client_t *c = p->data;
  char buf[16384];
  for (;;) {
    ssize_t n = read(c->fd, buf, sizeof buf);
    if (n > 0) continue;
    if (n == 0 || status < 0) c->eof = 1;
    else if (errno != EAGAIN && errno != EWOULDBLOCK) c->eof = 1;
    break;
  }
  if (c->eof) uv_poll_stop(p);
}

static void deadline_cb(uv_timer_t *t) { *(int *)t->data = 1; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  if (size > FUZZ_MAX_INPUT) return 0;
  setup_once();
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) abort();
  /* The server closes first, so its side keeps each address pair in
   * TIME_WAIT: rotate the client's source address over 127.1.0.0/16 so a
   * long run does not run out of ports. */
  static uint32_t nconn;
  struct sockaddr_in src = {.sin_family = AF_INET};
  src.sin_addr.s_addr = htonl(0x7f010000u | (nconn++ & 0xffffu));
  if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { /* default source */
  }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd); /* out of local ports: skip rather than report a false crash */
    return 0;
  }
  /* the kernel buffers all of it: loopback, at most 64 KiB */
  if (send(fd, preface, sizeof preface - 1, MSG_NOSIGNAL) < 0 ||
      (size && send(fd, data, size, MSG_NOSIGNAL) < 0)) {
    /* the server may already have closed: fine */
  }
  shutdown(fd, SHUT_WR);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

  client_t c = {.fd = fd};
  uv_poll_init(loop, &c.poll, fd);
  c.poll.data = &c;
  uv_poll_start(&c.poll, UV_READABLE | UV_DISCONNECT, on_readable);
  int expired = 0;
  uv_timer_t deadline;
  uv_timer_init(loop, &deadline);
  deadline.data = &expired;
  uv_timer_start(&deadline, deadline_cb, FUZZ_DEADLINE_MS, 0);
  while (!c.eof && !expired) uv_run(loop, UV_RUN_ONCE);
  if (expired) {
    fprintf(stderr, "fuzz_h2_server: the server did not close the connection\n");
    abort();
  }
  /* until the server has released the connection */
  uv_timer_start(&deadline, deadline_cb, FUZZ_DEADLINE_MS, 0);
  while (sk_http_server_conn_count(srv) > 0 && !expired) uv_run(loop, UV_RUN_ONCE);
  if (expired) abort();
  uv_timer_stop(&deadline);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_close((uv_handle_t *)&c.poll, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  close(fd);
  return 0;
}
