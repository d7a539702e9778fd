/* openloop.c - open-loop HTTP/1.1 latency probe for bench/proxy/run.sh.
 *
 *   openloop HOST PORT PATH RATE SECONDS [CONNS] [WARMUP_SECONDS]
 *
 * Sends GET PATH at a fixed RATE per second for SECONDS over up to CONNS
 * keep-alive connections (one request in flight per connection, no
 * pipelining). Request i is due at t0 + i/RATE; latency is measured from
 * that scheduled time, so a stall counts against every request it delays
 * (no coordinated omission). Requests due in the first WARMUP_SECONDS
 * (default 1) are sent but not recorded. Prints one line:
 *   sent=N ok=N err=N backlog=N p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=..
 * Plain sockets and epoll only, so it builds with `cc -O2`. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFSZ 65536

typedef struct conn {
  int fd;
  int busy;
  uint64_t sched_ns;
  int record;
  char buf[BUFSZ];
  size_t len;
} conn_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int conn_open(const char *host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Length of a complete response at the start of buf, 0 if incomplete,
 * -1 if it cannot be parsed. */
static long resp_complete(const char *buf, size_t len) {
  const char *end = memmem(buf, len, "\r\n\r\n", 4);
  if (!end) return len > BUFSZ - 1024 ? -1 : 0;
  size_t hlen = (size_t)(end - buf) + 4;
  long clen = -1;
  int chunked = 0;
  for (const char *p = buf; p < end;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) nl = end;
    if ((size_t)(nl - p) > 15 && !strncasecmp(p, "content-length:", 15)) clen = strtol(p + 15, NULL, 10);
    if ((size_t)(nl - p) > 18 && !strncasecmp(p, "transfer-encoding:", 18) && memmem(p, (size_t)(nl - p), "chunked", 7))
      chunked = 1;
    p = nl + 1;
  }
  if (chunked) {
    const char *z = memmem(buf + hlen, len - hlen, "0\r\n\r\n", 5);
    return z ? (long)(z - buf) + 5 : 0;
  }
  if (clen < 0) clen = 0;
  return len >= hlen + (size_t)clen ? (long)(hlen + (size_t)clen) : 0;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: openloop HOST PORT PATH RATE SECONDS [CONNS] [WARMUP_SECONDS]\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  const char *path = argv[3];
  double rate = atof(argv[4]);
  double secs = atof(argv[5]);
  int nconns = argc > 6 ? atoi(argv[6]) : 64;
  double warm = argc > 7 ? atof(argv[7]) : 1.0;
  if (rate <= 0 || secs <= 0 || nconns <= 0 || nconns > 4096) return 2;
  char req[1024];
  int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: skiff-openloop\r\n\r\n", path,
                        host, port);
  uint64_t total = (uint64_t)(rate * (secs + warm));
  uint64_t nwarm = (uint64_t)(rate * warm);
  uint64_t interval = (uint64_t)(1e9 / rate);
  uint32_t *lat = calloc(total + 1, sizeof *lat);
  uint64_t *queue = calloc(total + 1, sizeof *queue); /* scheduled times not yet sent */
  conn_t *c = calloc((size_t)nconns, sizeof *c);
  int ep = epoll_create1(0);
  if (!lat || !queue || !c || ep < 0) return 1;
  for (int i = 0; i < nconns; i++) {
    c[i].fd = conn_open(host, port);
    if (c[i].fd < 0) {
      fprintf(stderr, "openloop: connect %s:%d: %s\n", host, port, strerror(errno));
      return 1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
  }
  uint64_t next_i = 0, qhead = 0, qtail = 0, nlat = 0, ok = 0, err = 0, late = 0, done = 0;
  uint64_t t0 = now_ns() + 10000000u;
  int idle_hint = 0;
  while (done < total) {
    uint64_t now = now_ns();
    while (next_i < total && t0 + next_i * interval <= now) queue[qtail++] = next_i++;
    /* hand due requests to idle connections */
    for (int k = 0; k < nconns && qhead < qtail; k++) {
      int i = (idle_hint + k) % nconns;
      if (c[i].busy || c[i].fd < 0) continue;
      uint64_t idx = queue[qhead++];
      c[i].busy = 1;
      c[i].sched_ns = t0 + idx * interval;
      c[i].record = idx >= nwarm;
      c[i].len = 0;
      if (write(c[i].fd, req, (size_t)reqlen) != reqlen) {
        err++;
        done++;
        c[i].busy = 0;
      }
      idle_hint = i + 1;
    }
    if (qhead < qtail) late++;
    /* sleep until the next request is due (ns resolution: no busy loop,
     * the generator shares a CPU with the upstream) */
    struct timespec to = {0, 0};
    if (next_i < total) {
      uint64_t due = t0 + next_i * interval;
      now = now_ns();
      if (due > now) to.tv_nsec = (long)(due - now);
    } else if (next_i >= total) {
      to.tv_nsec = 100000000;
    }
    struct epoll_event evs[256];
    int n = epoll_pwait2(ep, evs, 256, &to, NULL);
    for (int e = 0; e < n; e++) {
      conn_t *x = &c[evs[e].data.u32];
      ssize_t r = read(x->fd, x->buf + x->len, BUFSZ - x->len);
      if (r <= 0) {
        if (r < 0 && errno == EAGAIN) continue;
        epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
        close(x->fd);
        if (x->busy) {
          err++;
          done++;
        }
        x->busy = 0;
        x->fd = conn_open(host, port);
        if (x->fd >= 0) {
          struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
          epoll_ctl(ep, EPOLL_CTL_ADD, x->fd, &ev);
        }
        continue;
      }
      x->len += (size_t)r;
      long full = resp_complete(x->buf, x->len);
      if (full == 0) continue;
      uint64_t t = now_ns();
      if (full < 0 || !x->busy) {
        err++;
      } else {
        int status = x->len > 12 ? atoi(x->buf + 9) : 0;
        if (status >= 200 && status < 300) ok++;
        else err++;
        if (x->record) lat[nlat++] = (uint32_t)((t - x->sched_ns) / 1000u);
      }
      if (x->busy) done++;
      x->busy = 0;
      x->len = 0;
    }
    if (now_ns() > t0 + (uint64_t)((secs + warm + 10.0) * 1e9)) break; /* safety bound */
  }
  qsort(lat, nlat, sizeof *lat, cmp_u32);
#define PCT(p) (nlat ? lat[(size_t)((double)(nlat - 1) * (p))] : 0)
  printf("sent=%llu ok=%llu err=%llu backlog=%llu p50_us=%u p90_us=%u p99_us=%u p999_us=%u max_us=%u\n",
         (unsigned long long)next_i, (unsigned long long)ok, (unsigned long long)err, (unsigned long long)late,
         PCT(0.50), PCT(0.90), PCT(0.99), PCT(0.999), nlat ? lat[nlat - 1] : 0);
  for (int i = 0; i < nconns; i++)
    if (c[i].fd >= 0) close(c[i].fd);
  free(lat);
  free(queue);
  free(c);
  return err ? 1 : 0;
}
