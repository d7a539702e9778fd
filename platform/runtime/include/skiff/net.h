/* skiff/net.h - byte-stream connections on libuv: TCP, optionally TLS.
 *
 * A connection delivers plaintext to on_data and takes plaintext in
 * sk_conn_write(); TLS (memory BIOs over the uv stream) is invisible above
 * this layer except through sk_conn_alpn() and sk_conn_peer_spiffe().
 * HTTP/1, HTTP/2 and the proxy's L4 mode all sit on this. Single-threaded:
 * every call happens on the loop's thread. The first connection sets
 * SIGPIPE to SIG_IGN if it is still at its default (a write to a vanished
 * peer then fails with EPIPE instead of killing the process). */
#ifndef SKIFF_NET_H
#define SKIFF_NET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "skiff/tls.h"

typedef struct sk_conn sk_conn_t;
typedef struct sk_listener sk_listener_t;

/* on_drain fires when a write queue that grew past this many bytes has
 * gone back down to it (writers pause on sk_conn_write_queued()). */
#define SK_CONN_LOW_WATER (16 * 1024)

typedef struct sk_conn_cbs {
  /* Plaintext bytes from the peer. Valid during the call only. */
  void (*on_data)(sk_conn_t *c, const uint8_t *data, size_t len);
  /* Called exactly once when the connection is gone (err == 0 for a clean
   * close by either side, SK_ECLOSED for peer EOF, or the error). The
   * connection memory is released after this returns. Precisely: 0 after
   * sk_conn_close() or a TLS close_notify from the peer, SK_ECLOSED for a
   * TCP EOF without close_notify, SK_ECANCELED after sk_conn_abort(), else
   * the transport or TLS error (SK_ETLS, SK_ECONNRESET, SK_ETIMEDOUT...). */
  void (*on_close)(sk_conn_t *c, int err);
  /* Optional: the write queue has drained below the low-water mark. */
  void (*on_drain)(sk_conn_t *c);
} sk_conn_cbs_t;

typedef struct sk_listener_opts {
  const char *host;     /* "127.0.0.1", "::", "0.0.0.0" */
  int port;             /* 0 = pick one (see sk_listener_port) */
  sk_tls_ctx_t *tls;    /* NULL = plaintext */
  int reuseport;        /* SO_REUSEPORT for one listener per worker thread */
  int backlog;          /* default 511 */
  uint64_t handshake_timeout_ms; /* TLS handshake deadline, default 10000 */
  const char *alpn;     /* TLS: this listener's ALPN preference ("h2,http/1.1"),
                           overriding the context's list; NULL = the context's */
} sk_listener_opts_t;

/* Called with a connection whose TLS handshake (if any) is complete. The
 * callee must set callbacks with sk_conn_set_cbs() before returning. */
typedef void (*sk_accept_fn)(sk_listener_t *l, sk_conn_t *c, void *ud);

int sk_listener_new(uv_loop_t *loop, const sk_listener_opts_t *o, sk_accept_fn fn, void *ud,
                    sk_listener_t **out);
int sk_listener_port(const sk_listener_t *l);
/* Stops accepting; live connections are unaffected. */
void sk_listener_stop(sk_listener_t *l);
/* Closes the socket; memory is released from the loop (accepts NULL). */
void sk_listener_free(sk_listener_t *l);

typedef void (*sk_connect_fn)(sk_conn_t *c, int err, void *ud); /* c == NULL on error */

typedef struct sk_connect_opts {
  const char *host; /* name or address; resolved with uv_getaddrinfo */
  int port;
  sk_tls_ctx_t *tls; /* NULL = plaintext */
  const char *sni;   /* server name for SNI and verification; default host */
  uint64_t timeout_ms; /* connect + handshake deadline, default 10000 */
} sk_connect_opts_t;

int sk_conn_connect(uv_loop_t *loop, const sk_connect_opts_t *o, sk_connect_fn fn, void *ud);

void sk_conn_set_cbs(sk_conn_t *c, const sk_conn_cbs_t *cbs, void *ud);
/* Optional half-close handling, set after sk_conn_set_cbs() (which resets
 * it). By default a peer EOF closes the connection and on_close gets
 * SK_ECLOSED. With on_eof set, on a plaintext connection the peer's FIN
 * (shutdown of its write side) is a read-side event: on_eof runs once,
 * after every byte before the FIN went to on_data; reading has ended for
 * good, writing still works, and the callee must end the connection itself
 * (sk_conn_close() once its answers are queued, or sk_conn_abort()). TLS
 * connections never call it (an EOF or close_notify closes there). A
 * setter rather than a member of sk_conn_cbs_t so that positional
 * initializers of that struct stay complete. */
void sk_conn_set_on_eof(sk_conn_t *c, void (*on_eof)(sk_conn_t *c));
void *sk_conn_get_data(const sk_conn_t *c);
uv_loop_t *sk_conn_loop(const sk_conn_t *c);

/* Copies and queues; returns SK_ECLOSED once closing. */
int sk_conn_write(sk_conn_t *c, const void *data, size_t len);
/* The same for several pieces, sent as one write (one TLS flush): a
 * response head and its body in one segment. */
int sk_conn_writev(sk_conn_t *c, const uv_buf_t *bufs, size_t n);
size_t sk_conn_write_queued(const sk_conn_t *c);
void sk_conn_read_stop(sk_conn_t *c);
void sk_conn_read_start(sk_conn_t *c);
/* Flushes queued writes (TLS close_notify included), then closes. */
void sk_conn_close(sk_conn_t *c);
/* Closes now, dropping queued writes (TCP RST where possible). */
void sk_conn_abort(sk_conn_t *c);

int sk_conn_is_tls(const sk_conn_t *c);
/* Negotiated ALPN protocol ("h2", "http/1.1") or NULL. */
const char *sk_conn_alpn(const sk_conn_t *c);
/* SPIFFE URI SAN of the verified peer certificate, or NULL. */
const char *sk_conn_peer_spiffe(const sk_conn_t *c);
/* "1.2.3.4:5678" / "[::1]:5678" */
const char *sk_conn_peer_addr(const sk_conn_t *c);

#endif
