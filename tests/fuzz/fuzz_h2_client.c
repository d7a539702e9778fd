/* Fuzz target: the HTTP/2 client (h2_client.c over nghttp2) reading
 * arbitrary server frames. Skiff's client (version 20, h2c) sends three
 * requests (streams 1, 3 and 5; the second with a body) to a raw loopback
 * socket that answers with the input and closes. Every request must
 * complete exactly once, without crash, leak or hang. */
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

#include "skiff/err.h"
#include "skiff/http.h"

#define FUZZ_MAX_INPUT (64 * 1024)
#define FUZZ_DEADLINE_MS 5000
#define NREQ 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t *loop;
static int lfd = -1, port;

static void setup_once(void) {
  if (loop) return;
  loop = calloc(1, sizeof *loop);
  uv_loop_init(loop);
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 16) != 0 ||
      getsockname(lfd, (struct sockaddr *)&a, &alen) != 0)
    abort();
  fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
  port = ntohs(a.sin_port);
}

static int ndone;

static void on_resp(int err, sk_http_resp_t *resp, void *ud) {
  int *calls = ud;
  (*calls)++;
  if (getenv("FUZZ_H2_VERBOSE"))
    fprintf(stderr, "fuzz_h2_client: %s status %d body %zu\n", err < 0 ? sk_err_name(err) : "ok",
            resp ? resp->status : 0, resp ? resp->body_len : 0);
  if (err == 0 && (!resp || !resp->body)) abort(); /* success always has a body pointer */
  ndone++;
}

typedef struct peer {
  uv_poll_t poll;
  int fd;
} peer_t;

static void on_peer(uv_poll_t *p, int status, int events) {
  peer_t *pe = p->data;
  char buf[16384];
  while (read(pe->fd, buf, sizeof buf) > 0) {
  }
}

static void deadline_cb(uv_timer_t *t) { *(int *)t->data = 1; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > FUZZ_MAX_INPUT) return 0;
  setup_once();
  sk_http_client_t *cl;
  sk_http_client_opts_t o = {.host = "127.0.0.1",
                             .port = port,
                             .version = 20,
                             .max_body_bytes = 8192,
                             .request_timeout_ms = 4000};
  if (sk_http_client_new(loop, &o, &cl) < 0) abort();
  int calls[NREQ] = {0};
  ndone = 0;
  sk_http_header_t h = {"X-Fuzz", "1"};
  sk_http_client_request(cl, "GET", "/a", &h, 1, NULL, 0, on_resp, &calls[0]);
  sk_http_client_request(cl, "POST", "/b", NULL, 0, "body", 4, on_resp, &calls[1]);
  sk_http_client_request(cl, "HEAD", "/c", NULL, 0, NULL, 0, on_resp, &calls[2]);

  int expired = 0;
  uv_timer_t deadline;
  uv_timer_init(loop, &deadline);
  deadline.data = &expired;
  uv_timer_start(&deadline, deadline_cb, FUZZ_DEADLINE_MS, 0);
  int fd = -1;
  while (fd < 0 && !expired && ndone < NREQ) {
    uv_run(loop, UV_RUN_NOWAIT);
    fd = accept(lfd, NULL, NULL);
    if (fd < 0 && errno != EAGAIN && errno != EWOULDBLOCK) abort();
  }
  if (fd < 0) {
    if (ndone < NREQ) abort(); /* neither connected nor failed */
    sk_http_client_free(cl);
    uv_close((uv_handle_t *)&deadline, NULL);
    for (int i = 0; i < 1000 && uv_run(loop, UV_RUN_NOWAIT); i++) {
    }
    return 0;
  }
  /* a SETTINGS frame first (the server preface), then the input */
  static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
  if (send(fd, settings, sizeof settings, MSG_NOSIGNAL) < 0 ||
      (size && send(fd, data, size, MSG_NOSIGNAL) < 0)) {
  }
  shutdown(fd, SHUT_WR);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  peer_t pe = {.fd = fd};
  uv_poll_init(loop, &pe.poll, fd);
  pe.poll.data = &pe;
  uv_poll_start(&pe.poll, UV_READABLE, on_peer);
  while (ndone < NREQ && !expired) uv_run(loop, UV_RUN_ONCE);
  if (expired) {
    fprintf(stderr, "fuzz_h2_client: requests did not complete\n");
    abort();
  }
  for (int i = 0; i < NREQ; i++)
    if (calls[i] != 1) abort();
  sk_http_client_free(cl);
  uv_timer_stop(&deadline);
  uv_close((uv_handle_t *)&deadline, NULL);
  uv_poll_stop(&pe.poll);
  uv_close((uv_handle_t *)&pe.poll, NULL);
  struct linger lg = {.l_onoff = 1, .l_linger = 0}; /* no TIME_WAIT: ports last */
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  /* the client's connection finishes closing */
  for (int i = 0; i < 1000 && uv_run(loop, UV_RUN_NOWAIT); i++) {
  }
  return 0;
}
