/* Connections and listeners on libuv TCP, with TLS through memory BIOs.
 *
 * Bytes from the socket go into the SSL's input BIO; whatever the SSL
 * wants to send lands in its output BIO and is queued on the uv stream.
 * A connection owns three uv handles (the TCP stream, one timer and one
 * prepare handle) and, while resolving a name, a getaddrinfo request; it is
 * freed once all of them have been closed, right after on_close. The timer
 * serves one purpose per state: the connect/handshake deadline, then a
 * zero-delay "pump" that delivers plaintext left inside the SSL after a
 * read_stop/read_start, then the deadline of a graceful close.
 *
 * Writes are coalesced per connection: while the connection is open, small
 * writes (plaintext, or what the SSL produced) are appended to a pending
 * buffer that the prepare handle flushes right before the loop polls again
 * (after this turn's callbacks and the next turn's timers), so an HTTP/1.1
 * response head and body, or a request and its body, leave in one write(2).
 * A prepare handle is started and stopped in constant time, where a
 * zero-delay timer costs two heap operations per flush. A buffer past
 * SK_NET_COALESCE_MAX, large writes, a graceful close and every write in
 * another state flush at once, keeping the byte order. */
#include "skiff/net.h"

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net_int.h"
#include "skiff/err.h"
#include "skiff/mem.h"

#define SK_NET_DEFAULT_TIMEOUT_MS 10000
#define SK_NET_CLOSE_LINGER_MS 5000 /* flush + wait for the peer's FIN */
#define SK_NET_READ_BUF (64 * 1024)
#define SK_NET_TLS_CHUNK (16 * 1024)
#define SK_NET_COALESCE_MAX SK_CONN_LOW_WATER /* flush the pending buffer now beyond this */
/* The first pending buffer, header included, is 1 KiB: small enough for
 * malloc's per-thread cache (it comes and goes with every flush), large
 * enough for a typical HTTP/1.1 head and a small body; it doubles beyond. */
#define SK_NET_PEND_FIRST 1024

enum sk__conn_state {
  SK__C_CONNECTING = 0, /* resolving / connecting (client) */
  SK__C_HANDSHAKE,      /* TLS handshake */
  SK__C_OPEN,
  SK__C_CLOSING, /* flushing, then waiting for the peer's FIN */
  SK__C_CLOSED,  /* handles closing */
};

struct sk__wreq;

struct sk_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_prepare_t flush; /* runs the coalesced write before the loop polls */
  uv_shutdown_t shut;
  struct sk__conn_dial *dial; /* connecting (client) only: the requests */
  uv_loop_t *loop;
  int state;
  int pending; /* open handles + requests that must finish before free */
  unsigned tcp_live : 1, visible : 1, user_paused : 1, reading : 1, eof : 1, shut_pending : 1,
      shut_done : 1, hs_done : 1, need_drain : 1, tls_fatal : 1, err_set : 1, flush_armed : 1,
      pump_armed : 1;
  int err;
  sk_conn_cbs_t cbs;
  void (*on_eof)(sk_conn_t *c);
  void *ud;
  SSL *ssl;
  BIO *net_in, *net_out;
  size_t queued;           /* in uv_write requests */
  struct sk__wreq *pend;   /* coalesced, not yet handed to the socket */
  size_t pend_cap;
  char *alpn, *spiffe;
  char peer[64];
  /* accepted: the listener while the handshake runs */
  sk_listener_t *l;
  sk_conn_t *lprev, *lnext;
  /* connecting */
  sk_connect_fn cfn;
  void *cud;
  struct addrinfo *ai_list, *ai_next;
  int last_err;
};

struct sk_listener {
  uv_tcp_t tcp;
  uv_loop_t *loop;
  sk_tls_ctx_t *tls;
  sk__tls_alpn_t alpn;
  sk_accept_fn fn;
  void *ud;
  int port;
  uint64_t hs_ms;
  int stopping, closed, freed;
  sk_conn_t *pending; /* accepted, handshake not done */
};

/* What only an outgoing connection needs (256 bytes an accepted one does
 * not carry); freed with the connection, after both requests ended. */
struct sk__conn_dial {
  uv_connect_t creq;
  uv_getaddrinfo_t gai;
};

struct sk__wreq {
  uv_write_t req;
  sk_conn_t *c;
  size_t len;
  char data[];
};

static void sk__conn_start_close(sk_conn_t *c);
static void sk__conn_tls_pump(sk_conn_t *c);
static void sk__conn_try_next(sk_conn_t *c);

/* ---------------- lifetime ---------------- */

/* libuv writes with write(2): a write to a peer that has gone away would
 * raise SIGPIPE and, at its default disposition, kill the process. Since a
 * half-closed peer (on_eof) is answered after its FIN, that is an ordinary
 * event here, so SIGPIPE is ignored unless the program installed its own
 * handler; the write then fails with EPIPE and the connection closes. */
static void sk__net_sigpipe_once(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL &&
      !(sa.sa_flags & SA_SIGINFO)) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

static void sk__net_ignore_sigpipe(void) {
  static uv_once_t once = UV_ONCE_INIT;
  uv_once(&once, sk__net_sigpipe_once);
}

static void sk__set_err(sk_conn_t *c, int err) {
  if (c->err_set) return;
  c->err = err;
  c->err_set = 1;
}

static void sk__conn_destroy(sk_conn_t *c) {
  if (c->visible && c->cbs.on_close) c->cbs.on_close(c, c->err);
  if (c->ssl) SSL_free(c->ssl); /* a plain connection never touches OpenSSL (ossl_lazy.c) */
  free(c->pend);
  free(c->dial);
  if (c->ai_list) uv_freeaddrinfo(c->ai_list);
  free(c->alpn);
  free(c->spiffe);
  free(c);
}

static void sk__conn_handle_closed(uv_handle_t *h) {
  sk_conn_t *c = h->data;
  if (h == (uv_handle_t *)&c->tcp) c->tcp_live = 0;
  if (--c->pending == 0) sk__conn_destroy(c);
}

static void sk__listener_unlink(sk_conn_t *c) {
  sk_listener_t *l = c->l;
  if (!l) return;
  if (c->lprev) c->lprev->lnext = c->lnext;
  else l->pending = c->lnext;
  if (c->lnext) c->lnext->lprev = c->lprev;
  c->l = NULL;
  c->lprev = c->lnext = NULL;
}

/* Closes the handles; the memory goes in the last close callback. */
static void sk__conn_finish(sk_conn_t *c) {
  c->state = SK__C_CLOSED;
  sk__listener_unlink(c);
  uv_timer_stop(&c->timer);
  if (!uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, sk__conn_handle_closed);
  if (!uv_is_closing((uv_handle_t *)&c->flush))
    uv_close((uv_handle_t *)&c->flush, sk__conn_handle_closed);
  if (c->tcp_live && !uv_is_closing((uv_handle_t *)&c->tcp))
    uv_close((uv_handle_t *)&c->tcp, sk__conn_handle_closed);
}

/* A connection the user has not been given yet tells its connect callback. */
static void sk__conn_notify_connect_fail(sk_conn_t *c) {
  sk_connect_fn fn = c->cfn;
  if (!fn) return;
  c->cfn = NULL;
  fn(NULL, c->err, c->cud);
}

static void sk__conn_fail(sk_conn_t *c, int err) {
  if (c->state == SK__C_CLOSED) return;
  sk__set_err(c, err);
  sk__conn_finish(c);
  sk__conn_notify_connect_fail(c);
}

/* Fails, but lets the queued bytes (a TLS alert) go out first. */
static void sk__conn_fail_flush(sk_conn_t *c, int err) {
  if (c->state >= SK__C_CLOSING) return;
  sk__set_err(c, err);
  sk__listener_unlink(c);
  c->tls_fatal = 1;
  sk__conn_start_close(c);
  sk__conn_notify_connect_fail(c);
}

static sk_conn_t *sk__conn_alloc(uv_loop_t *loop) {
  sk__net_ignore_sigpipe();
  sk_conn_t *c = sk_xcalloc(1, sizeof *c);
  c->loop = loop;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_prepare_init(loop, &c->flush);
  c->flush.data = c;
  c->pending = 2;
  return c;
}

static int sk__conn_tcp_init(sk_conn_t *c) {
  int r = uv_tcp_init(c->loop, &c->tcp);
  if (r < 0) return sk_err_from_uv(r);
  c->tcp.data = c;
  c->tcp_live = 1;
  c->pending++;
  return 0;
}

static void sk__conn_fill_peer(sk_conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "";
  c->peer[0] = 0;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) { /* IPv4 on a dual-stack socket */
      const uint8_t *b = a->sin6_addr.s6_addr + 12;
      snprintf(c->peer, sizeof c->peer, "%u.%u.%u.%u:%u", b[0], b[1], b[2], b[3],
               (unsigned)ntohs(a->sin6_port));
      return;
    }
    uv_ip6_name(a, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
  }
}

/* ---------------- writing ---------------- */

size_t sk_conn_write_queued(const sk_conn_t *c) {
  return c ? c->queued + (c->pend ? c->pend->len : 0) : 0;
}


static void sk__conn_maybe_drain(sk_conn_t *c) {
  if (c->need_drain && sk_conn_write_queued(c) <= SK_CONN_LOW_WATER && c->state == SK__C_OPEN) {
    c->need_drain = 0;
    if (c->cbs.on_drain) c->cbs.on_drain(c);
  }
}

static void sk__conn_on_write(uv_write_t *req, int status) {
  struct sk__wreq *w = (struct sk__wreq *)req;
  sk_conn_t *c = w->c;
  c->queued -= w->len;
  free(w);
  if (status < 0) {
    if (c->state < SK__C_CLOSING) sk__conn_fail(c, sk_err_from_uv(status));
    return;
  }
  sk__conn_maybe_drain(c);
}

static int sk__conn_queue(sk_conn_t *c, struct sk__wreq *w) {
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
  w->c = c;
  if (c->queued == 0 && !c->shut_pending) {
    /* nothing queued: let the kernel take what it can right now */
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)w->len) {
      free(w);
      return 0;
    }
    if (n > 0) { /* queue the rest */
      w->len -= (size_t)n;
      b = uv_buf_init(w->data + n, (unsigned)w->len);
    } else if (n != UV_EAGAIN && n != UV_ENOSYS) {
      free(w);
      return sk_err_from_uv(n);
    }
  }
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, sk__conn_on_write);
  if (r < 0) {
    free(w);
    return sk_err_from_uv(r);
  }
  c->queued += w->len;
  if (sk_conn_write_queued(c) > SK_CONN_LOW_WATER) c->need_drain = 1;
  return 0;
}

/* Hands the pending buffer to the socket (one write), keeping it behind
 * whatever uv_write requests are already in flight. */
static int sk__conn_flush(sk_conn_t *c) {
  struct sk__wreq *w = c->pend;
  if (!w) return 0;
  c->pend = NULL;
  c->pend_cap = 0;
  if (c->flush_armed) {
    c->flush_armed = 0;
    uv_prepare_stop(&c->flush);
  }
  if (w->len == 0 || !c->tcp_live || c->shut_pending || c->shut_done ||
      c->state == SK__C_CLOSED || c->state == SK__C_CONNECTING) {
    free(w); /* nothing to send, or the write side is already gone */
    return 0;
  }
  return sk__conn_queue(c, w);
}

static void sk__conn_on_timer(uv_timer_t *t);

/* Before the loop polls, while open: the coalesced bytes go out. */
static void sk__conn_turn_flush(sk_conn_t *c) {
  if (!c->flush_armed) return;
  int r = sk__conn_flush(c);
  if (r < 0) {
    sk__conn_fail(c, r);
    return;
  }
  sk__conn_maybe_drain(c); /* it all went at once: no write callback will */
}

/* Set while a flush runs in the loop's prepare phase. A prepare handle
 * started from there (by a write in an on_drain callback) would only run
 * on the next turn, after the loop has polled, maybe for long: such a
 * write arms the connection's timer with zero delay instead, which keeps
 * the poll from blocking and flushes first thing on the next turn. */
static _Thread_local int sk__tl_in_prepare;

static void sk__conn_on_prepare(uv_prepare_t *h) {
  sk_conn_t *c = h->data;
  if (c->state == SK__C_OPEN) {
    sk__tl_in_prepare++;
    sk__conn_turn_flush(c);
    sk__tl_in_prepare--;
  } else if (c->flush_armed) { /* cannot happen: other states flush at once */
    c->flush_armed = 0;
    uv_prepare_stop(h);
  }
}

/* Makes room for n more pending bytes and returns where they go. */
static char *sk__conn_pend_room(sk_conn_t *c, size_t n) {
  size_t used = c->pend ? c->pend->len : 0;
  if (!c->pend || used + n > c->pend_cap) {
    size_t cap = c->pend_cap ? c->pend_cap * 2 : SK_NET_PEND_FIRST - sizeof(struct sk__wreq);
    while (cap < used + n) cap *= 2;
    struct sk__wreq *w = sk_xrealloc(c->pend, sizeof *w + cap);
    if (!c->pend) w->len = 0;
    c->pend = w;
    c->pend_cap = cap;
  }
  return c->pend->data + used;
}

/* After bytes were added to the pending buffer: flush now when it is big,
 * otherwise once this loop turn is over. */
static int sk__conn_pend_added(sk_conn_t *c) {
  /* no coalescing in the other states: the bytes go at once */
  if (c->pend->len >= SK_NET_COALESCE_MAX || c->state != SK__C_OPEN) return sk__conn_flush(c);
  if (!c->flush_armed) {
    c->flush_armed = 1;
    if (sk__tl_in_prepare) uv_timer_start(&c->timer, sk__conn_on_timer, 0, 0);
    else uv_prepare_start(&c->flush, sk__conn_on_prepare);
  }
  if (sk_conn_write_queued(c) > SK_CONN_LOW_WATER) c->need_drain = 1;
  return 0;
}

/* Moves what the SSL produced into the pending buffer. */
static int sk__conn_tls_flush(sk_conn_t *c) {
  size_t n;
  int added = 0;
  while (c->tcp_live && (n = BIO_ctrl_pending(c->net_out)) > 0) {
    char *dst = sk__conn_pend_room(c, n);
    int got = BIO_read(c->net_out, dst, (int)n);
    if (got <= 0) return SK_ETLS;
    c->pend->len += (size_t)got;
    added = 1;
    if (c->pend->len >= SK_NET_COALESCE_MAX) {
      int r = sk__conn_flush(c);
      if (r < 0) return r;
      added = 0;
    }
  }
  return added && c->pend ? sk__conn_pend_added(c) : 0;
}

/* Encrypts into the output BIO, moving it out whenever it holds a read
 * buffer's worth, so the BIO never grows large. */
static int sk__conn_tls_write(sk_conn_t *c, const char *p, size_t len) {
  while (len > 0) {
    int chunk = len > SK_NET_TLS_CHUNK ? SK_NET_TLS_CHUNK : (int)len;
    ERR_clear_error(); /* SSL_get_error() looks at this thread's queue */
    int n = SSL_write(c->ssl, p, chunk);
    if (n <= 0) {
      ERR_clear_error();
      return SK_ETLS;
    }
    p += n;
    len -= (size_t)n;
    if (BIO_ctrl_pending(c->net_out) >= SK_NET_READ_BUF) {
      int r = sk__conn_tls_flush(c);
      if (r < 0) return r;
    }
  }
  return 0;
}

static int sk__conn_plain_write(sk_conn_t *c, const uv_buf_t *bufs, size_t n, size_t total) {
  if (total < SK_NET_COALESCE_MAX) { /* small: coalesce with what else this turn writes */
    char *dst = sk__conn_pend_room(c, total);
    for (size_t i = 0; i < n; i++) {
      if (bufs[i].len) memcpy(dst, bufs[i].base, bufs[i].len);
      dst += bufs[i].len;
    }
    c->pend->len += total;
    return sk__conn_pend_added(c);
  }
  int r = sk__conn_flush(c); /* what came before goes first */
  if (r < 0) return r;
  struct sk__wreq *w = sk_xmalloc(sizeof *w + total);
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    if (bufs[i].len) memcpy(w->data + off, bufs[i].base, bufs[i].len);
    off += bufs[i].len;
  }
  w->len = total;
  return sk__conn_queue(c, w);
}

int sk_conn_writev(sk_conn_t *c, const uv_buf_t *bufs, size_t n) {
  if (!c || c->state != SK__C_OPEN) return SK_ECLOSED;
  if (n && !bufs) return SK_EINVAL;
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (bufs[i].len > (1u << 30) || total > (1u << 30)) { /* uv_buf_t lengths are 32-bit */
      total = SIZE_MAX;
      break;
    }
    total += bufs[i].len;
  }
  if (total == 0) return 0;
  int r = 0;
  if (c->ssl) {
    for (size_t i = 0; i < n && r >= 0; i++) r = sk__conn_tls_write(c, bufs[i].base, bufs[i].len);
    if (r >= 0) r = sk__conn_tls_flush(c);
  } else if (total <= (1u << 30)) {
    r = sk__conn_plain_write(c, bufs, n, total);
  } else {
    for (size_t i = 0; i < n && r >= 0; i++) {
      const char *p = bufs[i].base;
      size_t left = bufs[i].len;
      while (left > 0 && r >= 0) {
        uv_buf_t piece = uv_buf_init((char *)p, (unsigned)(left > (1u << 30) ? (1u << 30) : left));
        r = sk__conn_plain_write(c, &piece, 1, piece.len);
        p += piece.len;
        left -= piece.len;
      }
    }
  }
  if (r < 0) sk__conn_fail(c, r);
  return r;
}

int sk_conn_write(sk_conn_t *c, const void *data, size_t len) {
  if (len > (1u << 30)) { /* split below the 32-bit uv_buf_t limit */
    const char *p = data;
    int r = 0;
    while (len > 0 && r >= 0) {
      size_t chunk = len > (1u << 30) ? (1u << 30) : len;
      r = sk_conn_write(c, p, chunk);
      p += chunk;
      len -= chunk;
    }
    return r;
  }
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  return sk_conn_writev(c, &b, 1);
}



/* ---------------- reading ---------------- */

/* Each thread reads into one buffer for the socket's bytes and one for
 * TLS plaintext, allocated at its first read and freed when it exits. As
 * static thread-local arrays they were zeroed for every thread when it
 * started: 80 KiB of memory per thread before any connection. */
typedef struct sk__net_bufs {
  char rbuf[SK_NET_READ_BUF];
  uint8_t plain[SK_NET_TLS_CHUNK];
} sk__net_bufs_t;

static _Thread_local sk__net_bufs_t *sk__tl_bufs;
static pthread_key_t sk__bufs_key;
static pthread_once_t sk__bufs_once = PTHREAD_ONCE_INIT;
static int sk__bufs_key_ok;

static void sk__net_bufs_done(void *arg) {
  if (sk__tl_bufs == arg) sk__tl_bufs = NULL;
  free(arg);
}

static void sk__net_bufs_key(void) {
  sk__bufs_key_ok = pthread_key_create(&sk__bufs_key, sk__net_bufs_done) == 0;
}

static sk__net_bufs_t *sk__net_bufs(void) {
  if (sk__tl_bufs) return sk__tl_bufs;
  pthread_once(&sk__bufs_once, sk__net_bufs_key);
  sk__net_bufs_t *b = sk_xmalloc(sizeof *b);
  if (sk__bufs_key_ok) pthread_setspecific(sk__bufs_key, b);
  sk__tl_bufs = b;
  return b;
}

static void sk__conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  sk__net_bufs_t *b = sk__net_bufs();
  buf->base = b->rbuf;
  buf->len = sizeof b->rbuf;
}

static void sk__conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void sk__conn_ensure_reading(sk_conn_t *c) {
  if (c->reading || !c->tcp_live || c->eof || c->state == SK__C_CLOSED) return;
  if (c->user_paused && c->state == SK__C_OPEN) return;
  if (uv_read_start((uv_stream_t *)&c->tcp, sk__conn_alloc_cb, sk__conn_on_read) == 0)
    c->reading = 1;
}

static void sk__conn_deliver(sk_conn_t *c, const uint8_t *d, size_t n) {
  if (c->cbs.on_data) c->cbs.on_data(c, d, n);
}

static void sk__conn_peer_eof(sk_conn_t *c) {
  c->eof = 1;
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
  switch (c->state) {
  case SK__C_OPEN:
    if (!c->ssl && c->on_eof) { /* a half-close: the user decides */
      c->on_eof(c);
      break;
    }
    sk__set_err(c, SK_ECLOSED);
    sk__conn_start_close(c);
    break;
  case SK__C_CLOSING:
    if (!c->shut_pending) sk__conn_finish(c);
    break;
  case SK__C_CLOSED:
    break;
  default:
    sk__conn_fail(c, SK_ECLOSED);
  }
}

static void sk__conn_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  sk_conn_t *c = s->data;
  if (n == 0) return;
  if (n < 0) {
    if (n == UV_EOF) sk__conn_peer_eof(c);
    else if (c->state == SK__C_CLOSING) sk__conn_finish(c);
    else sk__conn_fail(c, sk_err_from_uv((int)n));
    return;
  }
  if (c->state == SK__C_CLOSING || c->state == SK__C_CLOSED) return; /* discarded */
  if (!c->ssl) {
    sk__conn_deliver(c, (const uint8_t *)buf->base, (size_t)n);
    return;
  }
  if (BIO_write(c->net_in, buf->base, (int)n) != (int)n) {
    sk__conn_fail(c, SK_ENOMEM);
    return;
  }
  sk__conn_tls_pump(c);
}

static void sk__conn_start_pump(sk_conn_t *c);

/* The connection is ready: hand it to the listener's or connect's callback. */
static void sk__conn_open(sk_conn_t *c) {
  c->state = SK__C_OPEN;
  uv_timer_stop(&c->timer);
  c->visible = 1;
  if (c->l) {
    sk_listener_t *l = c->l;
    sk__listener_unlink(c);
    l->fn(l, c, l->ud);
  } else if (c->cfn) {
    sk_connect_fn fn = c->cfn;
    c->cfn = NULL;
    fn(c, 0, c->cud);
  }
  if (c->state == SK__C_OPEN) sk__conn_ensure_reading(c);
}

static void sk__conn_tls_handshake_done(sk_conn_t *c) {
  const unsigned char *proto = NULL;
  unsigned int plen = 0;
  c->hs_done = 1;
  SSL_get0_alpn_selected(c->ssl, &proto, &plen);
  if (proto && plen) c->alpn = sk_xstrndup((const char *)proto, plen);
  X509 *peer = SSL_get0_peer_certificate(c->ssl);
  if (peer && (SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER) &&
      SSL_get_verify_result(c->ssl) == X509_V_OK) {
    char id[2048];
    if (sk_tls_cert_spiffe_id(peer, id, sizeof id) > 0) c->spiffe = sk_xstrdup(id);
  }
  sk__conn_open(c);
}

static void sk__conn_tls_read(sk_conn_t *c) {
  uint8_t *plain = sk__net_bufs()->plain;
  while (c->state == SK__C_OPEN && !c->user_paused) {
    ERR_clear_error();
    int r = SSL_read(c->ssl, plain, SK_NET_TLS_CHUNK);
    if (r > 0) {
      sk__conn_deliver(c, plain, (size_t)r);
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: a clean close */
      sk__set_err(c, 0);
      sk__conn_start_close(c);
      break;
    }
    ERR_clear_error();
    sk__conn_fail_flush(c, SK_ETLS);
    break;
  }
  if (c->state == SK__C_OPEN || c->state == SK__C_CLOSING) {
    int r = sk__conn_tls_flush(c); /* tickets, key updates */
    if (r < 0) sk__conn_fail(c, r);
  }
}

static void sk__conn_tls_pump(sk_conn_t *c) {
  if (c->state == SK__C_HANDSHAKE) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    int fr = sk__conn_tls_flush(c);
    if (fr < 0) {
      sk__conn_fail(c, fr);
      return;
    }
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      ERR_clear_error();
      sk__conn_fail_flush(c, SK_ETLS);
      return;
    }
    sk__conn_tls_handshake_done(c);
  }
  if (c->state == SK__C_OPEN) sk__conn_tls_read(c);
}

static void sk__conn_on_timer(uv_timer_t *t) {
  sk_conn_t *c = t->data;
  switch (c->state) {
  case SK__C_CONNECTING:
  case SK__C_HANDSHAKE:
    sk__conn_fail(c, SK_ETIMEDOUT);
    break;
  case SK__C_OPEN: {
    int pump = c->pump_armed;
    c->pump_armed = 0;
    sk__conn_turn_flush(c); /* armed from a prepare-phase callback */
    if (pump && c->state == SK__C_OPEN && c->ssl && !c->user_paused) sk__conn_tls_read(c);
    break;
  }
  case SK__C_CLOSING:
    sk__conn_finish(c);
    break;
  default:
    break;
  }
}

static void sk__conn_start_pump(sk_conn_t *c) {
  if (c->ssl && (SSL_pending(c->ssl) > 0 || BIO_ctrl_pending(c->net_in) > 0)) {
    c->pump_armed = 1;
    uv_timer_start(&c->timer, sk__conn_on_timer, 0, 0);
  }
}

void sk_conn_read_stop(sk_conn_t *c) {
  if (!c) return;
  c->user_paused = 1;
  if (c->state == SK__C_OPEN && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

void sk_conn_read_start(sk_conn_t *c) {
  if (!c) return;
  c->user_paused = 0;
  if (c->state != SK__C_OPEN) return;
  sk__conn_ensure_reading(c);
  sk__conn_start_pump(c);
}

/* ---------------- closing ---------------- */

static void sk__conn_on_shutdown(uv_shutdown_t *req, int status) {
  sk_conn_t *c = req->data;
  c->shut_pending = 0;
  c->shut_done = 1;
  if (c->state == SK__C_CLOSED) return;
  /* after our FIN, wait (bounded) for the peer's so unread input does not
   * turn into a reset that could destroy the response we just sent */
  if (status < 0 || c->eof) sk__conn_finish(c);
}

static void sk__conn_start_close(sk_conn_t *c) {
  if (c->state >= SK__C_CLOSING) return;
  c->state = SK__C_CLOSING;
  if (c->ssl && c->hs_done && !c->tls_fatal) {
    if (SSL_shutdown(c->ssl) < 0) ERR_clear_error();
    if (sk__conn_tls_flush(c) < 0) {
      sk__conn_finish(c);
      return;
    }
  }
  if (!c->tcp_live) {
    sk__conn_finish(c);
    return;
  }
  uv_timer_stop(&c->timer);
  uv_timer_start(&c->timer, sk__conn_on_timer, SK_NET_CLOSE_LINGER_MS, 0);
  sk__conn_ensure_reading(c); /* discard input until the peer's FIN */
  if (sk__conn_flush(c) < 0) { /* the pending bytes go before our FIN */
    sk__conn_finish(c);
    return;
  }
  c->shut.data = c;
  if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, sk__conn_on_shutdown) < 0) {
    sk__conn_finish(c);
    return;
  }
  c->shut_pending = 1;
}

void sk_conn_close(sk_conn_t *c) {
  if (!c || c->state >= SK__C_CLOSING) return;
  if (c->state != SK__C_OPEN) {
    sk__conn_fail(c, SK_ECANCELED);
    return;
  }
  sk__set_err(c, 0);
  sk__conn_start_close(c);
}

void sk_conn_abort(sk_conn_t *c) {
  if (!c || c->state == SK__C_CLOSED) return;
  sk__set_err(c, SK_ECANCELED);
  if (c->tcp_live && !c->shut_pending && !uv_is_closing((uv_handle_t *)&c->tcp)) {
    if (uv_tcp_close_reset(&c->tcp, sk__conn_handle_closed) != 0)
      uv_close((uv_handle_t *)&c->tcp, sk__conn_handle_closed);
  }
  sk__conn_finish(c);
  sk__conn_notify_connect_fail(c);
}

/* ---------------- accessors ---------------- */

void sk_conn_set_cbs(sk_conn_t *c, const sk_conn_cbs_t *cbs, void *ud) {
  if (!c) return;
  if (cbs) c->cbs = *cbs;
  else memset(&c->cbs, 0, sizeof c->cbs);
  c->on_eof = NULL;
  c->ud = ud;
}

void sk_conn_set_on_eof(sk_conn_t *c, void (*on_eof)(sk_conn_t *c)) {
  if (c) c->on_eof = on_eof;
}

void *sk_conn_get_data(const sk_conn_t *c) { return c ? c->ud : NULL; }
uv_loop_t *sk_conn_loop(const sk_conn_t *c) { return c ? c->loop : NULL; }
int sk_conn_is_tls(const sk_conn_t *c) { return c && c->ssl ? 1 : 0; }
const char *sk_conn_alpn(const sk_conn_t *c) { return c ? c->alpn : NULL; }
const char *sk_conn_peer_spiffe(const sk_conn_t *c) { return c ? c->spiffe : NULL; }
const char *sk_conn_peer_addr(const sk_conn_t *c) { return c ? c->peer : ""; }

/* ---------------- TLS setup ---------------- */

static int sk__conn_tls_setup(sk_conn_t *c, sk_tls_ctx_t *tls) {
  SSL_CTX *ctx = sk_tls_ctx_get_ssl_ctx(tls);
  if (!ctx) return SK_ETLS;
  c->ssl = SSL_new(ctx);
  SSL_CTX_free(ctx); /* the SSL holds its own reference */
  if (!c->ssl) goto fail;
  c->net_in = BIO_new(BIO_s_mem());
  c->net_out = BIO_new(BIO_s_mem());
  if (!c->net_in || !c->net_out) {
    BIO_free(c->net_in);
    BIO_free(c->net_out);
    c->net_in = c->net_out = NULL;
    goto fail;
  }
  BIO_set_mem_eof_return(c->net_in, -1);
  BIO_set_mem_eof_return(c->net_out, -1);
  SSL_set_bio(c->ssl, c->net_in, c->net_out);
  return 0;
fail:
  ERR_clear_error();
  SSL_free(c->ssl);
  c->ssl = NULL;
  return SK_ETLS;
}

/* ---------------- listener ---------------- */

static void sk__listener_destroy(sk_listener_t *l) {
  sk_tls_ctx_unref(l->tls);
  free(l);
}

static void sk__listener_closed(uv_handle_t *h) {
  sk_listener_t *l = h->data;
  l->closed = 1;
  if (l->freed) sk__listener_destroy(l);
}

static void sk__listener_on_connection(uv_stream_t *server, int status) {
  sk_listener_t *l = server->data;
  if (status < 0 || l->stopping) return;
  sk_conn_t *c = sk__conn_alloc(l->loop);
  if (sk__conn_tcp_init(c) < 0 || uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    sk__conn_finish(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  sk__conn_fill_peer(c);
  c->l = l;
  c->lnext = l->pending;
  if (l->pending) l->pending->lprev = c;
  l->pending = c;
  if (!l->tls) {
    sk__conn_open(c);
    return;
  }
  if (sk__conn_tls_setup(c, l->tls) < 0) {
    sk__conn_finish(c);
    return;
  }
  if (l->alpn.len) sk__tls_ssl_set_alpn(c->ssl, &l->alpn);
  SSL_set_accept_state(c->ssl);
  c->state = SK__C_HANDSHAKE;
  uv_timer_start(&c->timer, sk__conn_on_timer, l->hs_ms, 0);
  sk__conn_ensure_reading(c);
}

static int sk__parse_addr(const char *host, int port, struct sockaddr_storage *ss) {
  if (!host || !*host || !strcmp(host, "localhost")) host = "127.0.0.1";
  char buf[64];
  size_t n = strlen(host);
  if (host[0] == '[' && n > 2 && n < sizeof buf && host[n - 1] == ']') {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = 0;
    host = buf;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return SK_EINVAL;
}

int sk_listener_new(uv_loop_t *loop, const sk_listener_opts_t *o, sk_accept_fn fn, void *ud,
                    sk_listener_t **out) {
  int rc;
  struct sockaddr_storage ss;
  if (!loop || !o || !fn || !out || o->port < 0 || o->port > 65535) return SK_EINVAL;
  *out = NULL;
  if (o->tls && !sk_tls_ctx_is_server(o->tls)) return SK_EINVAL;
  memset(&ss, 0, sizeof ss);
  if ((rc = sk__parse_addr(o->host, o->port, &ss)) < 0) return rc;
  sk_listener_t *l = sk_xcalloc(1, sizeof *l);
  l->loop = loop;
  l->fn = fn;
  l->ud = ud;
  l->hs_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms : SK_NET_DEFAULT_TIMEOUT_MS;
  if (o->alpn) {
    rc = sk__tls_alpn_wire(o->alpn, l->alpn.wire, sizeof l->alpn.wire);
    if (rc < 0) {
      free(l);
      return rc;
    }
    l->alpn.len = (size_t)rc;
  }
  rc = uv_tcp_init_ex(loop, &l->tcp, ss.ss_family);
  if (rc < 0) {
    free(l);
    return sk_err_from_uv(rc);
  }
  l->tcp.data = l;
  if (o->reuseport) {
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      rc = sk_err_from_errno(errno);
      goto fail;
    }
  }
  if ((rc = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, 0)) < 0 ||
      (rc = uv_listen((uv_stream_t *)&l->tcp, o->backlog > 0 ? o->backlog : 511,
                      sk__listener_on_connection)) < 0) {
    rc = sk_err_from_uv(rc);
    goto fail;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  if ((rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &blen)) < 0) {
    rc = sk_err_from_uv(rc);
    goto fail;
  }
  l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
  l->tls = sk_tls_ctx_ref(o->tls);
  *out = l;
  return 0;
fail:
  l->freed = 1;
  l->stopping = 1;
  uv_close((uv_handle_t *)&l->tcp, sk__listener_closed);
  return rc;
}

int sk_listener_port(const sk_listener_t *l) { return l ? l->port : SK_EINVAL; }

void sk_listener_stop(sk_listener_t *l) {
  if (!l || l->stopping) return;
  l->stopping = 1;
  if (!uv_is_closing((uv_handle_t *)&l->tcp)) uv_close((uv_handle_t *)&l->tcp, sk__listener_closed);
}

void sk_listener_free(sk_listener_t *l) {
  if (!l) return;
  /* handshakes still running belong to the listener: end them */
  while (l->pending) sk__conn_fail(l->pending, SK_ECANCELED);
  l->freed = 1;
  if (!l->stopping) sk_listener_stop(l);
  else if (l->closed) sk__listener_destroy(l);
}

/* ---------------- connect ---------------- */

static void sk__conn_on_connect(uv_connect_t *req, int status) {
  sk_conn_t *c = req->data;
  if (c->state == SK__C_CLOSED) return;
  if (status < 0) {
    c->last_err = sk_err_from_uv(status);
    c->ai_next = c->ai_next ? c->ai_next->ai_next : NULL;
    sk__conn_try_next(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  sk__conn_fill_peer(c);
  if (!c->ssl) {
    sk__conn_open(c);
    return;
  }
  c->state = SK__C_HANDSHAKE;
  sk__conn_ensure_reading(c);
  sk__conn_tls_pump(c);
}

static void sk__conn_retry_closed(uv_handle_t *h) {
  sk_conn_t *c = h->data;
  c->tcp_live = 0;
  if (--c->pending == 0) {
    sk__conn_destroy(c);
    return;
  }
  if (c->state != SK__C_CLOSED) sk__conn_try_next(c);
}

static void sk__conn_try_next(sk_conn_t *c) {
  if (c->tcp_live) { /* a failed attempt: close it, then go on */
    uv_close((uv_handle_t *)&c->tcp, sk__conn_retry_closed);
    return;
  }
  while (c->ai_next && c->ai_next->ai_family != AF_INET && c->ai_next->ai_family != AF_INET6)
    c->ai_next = c->ai_next->ai_next;
  if (!c->ai_next) {
    sk__conn_fail(c, c->last_err ? c->last_err : SK_ECONNREFUSED);
    return;
  }
  int r = sk__conn_tcp_init(c);
  if (r < 0) {
    sk__conn_fail(c, r);
    return;
  }
  c->dial->creq.data = c;
  r = uv_tcp_connect(&c->dial->creq, &c->tcp, c->ai_next->ai_addr, sk__conn_on_connect);
  if (r < 0) {
    c->last_err = sk_err_from_uv(r);
    c->ai_next = c->ai_next->ai_next;
    sk__conn_try_next(c);
  }
}

static void sk__conn_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  sk_conn_t *c = req->data;
  c->pending--;
  if (c->state == SK__C_CLOSED) {
    if (res) uv_freeaddrinfo(res);
    if (c->pending == 0) sk__conn_destroy(c);
    return;
  }
  if (status < 0) {
    sk__conn_fail(c, status == UV_EAI_NONAME || status == UV_EAI_NODATA ? SK_ENOTFOUND
                                                                         : sk_err_from_uv(status));
    return;
  }
  c->ai_list = c->ai_next = res;
  sk__conn_try_next(c);
}

int sk_conn_connect(uv_loop_t *loop, const sk_connect_opts_t *o, sk_connect_fn fn, void *ud) {
  int rc;
  if (!loop || !o || !o->host || !*o->host || !fn || o->port <= 0 || o->port > 65535)
    return SK_EINVAL;
  if (o->tls && sk_tls_ctx_is_server(o->tls)) return SK_EINVAL;
  sk_conn_t *c = sk__conn_alloc(loop);
  c->dial = sk_xcalloc(1, sizeof *c->dial);
  if (o->tls) {
    if ((rc = sk__conn_tls_setup(c, o->tls)) < 0) goto fail;
    SSL_set_connect_state(c->ssl);
    if ((rc = sk__tls_ssl_set_peer_name(c->ssl, o->sni ? o->sni : o->host)) < 0) goto fail;
  }
  c->state = SK__C_CONNECTING;
  c->cfn = fn;
  c->cud = ud;
  uv_timer_start(&c->timer, sk__conn_on_timer,
                 o->timeout_ms ? o->timeout_ms : SK_NET_DEFAULT_TIMEOUT_MS, 0);
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (sk__parse_addr(o->host, o->port, &ss) == 0) {
    /* an address literal: no resolver round trip */
    struct addrinfo *ai = sk_xcalloc(1, sizeof *ai + sizeof ss);
    ai->ai_family = ss.ss_family;
    ai->ai_socktype = SOCK_STREAM;
    ai->ai_addr = (struct sockaddr *)(ai + 1);
    ai->ai_addrlen = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    memcpy(ai->ai_addr, &ss, sizeof ss);
    c->ai_next = ai;
    c->dial->creq.data = c;
    if ((rc = sk__conn_tcp_init(c)) == 0) {
      rc = uv_tcp_connect(&c->dial->creq, &c->tcp, ai->ai_addr, sk__conn_on_connect);
      rc = sk_err_from_uv(rc);
    }
    c->ai_next = NULL; /* one address only */
    free(ai);
    if (rc < 0) goto fail;
    return 0;
  }
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%d", o->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->dial->gai.data = c;
  rc = uv_getaddrinfo(loop, &c->dial->gai, sk__conn_on_resolved, o->host, portstr, &hints);
  if (rc < 0) {
    rc = sk_err_from_uv(rc);
    goto fail;
  }
  c->pending++;
  return 0;
fail:
  c->cfn = NULL; /* reported by the return value */
  sk__conn_fail(c, rc);
  return rc;
}
