/* http_int.h - internals shared by the HTTP server core (http_server.c),
 * the client core (http_client.c), HTTP/1 (h1_*.c) and HTTP/2 (h2_*.c).
 * Not a public header. */
#ifndef SKIFF_HTTP_INT_H
#define SKIFF_HTTP_INT_H

#include "skiff/http.h"
#include "skiff/mem.h"
#include "skiff/net.h"

/* ---------------- server side ---------------- */

typedef struct sk__http_conn sk__http_conn_t;

/* A protocol driving one accepted connection. */
struct sk__http_proto {
  const char *name; /* "http/1.1", "h2" */
  void (*on_data)(sk__http_conn_t *hc, const uint8_t *d, size_t n);
  /* Transport gone: abort live requests (sk__http_req_abort) and free
   * proto_data. The core frees hc afterwards. */
  void (*on_close)(sk__http_conn_t *hc, int err);
  /* Transport write queue drained (resume producing). May be NULL. */
  void (*on_writable)(sk__http_conn_t *hc);
  /* Server drain: h2 sends GOAWAY and closes when its streams are done;
   * h1 closes now if idle, else after the response in flight (and sends
   * "connection: close" on it). */
  void (*drain)(sk__http_conn_t *hc);
  /* The peer half-closed a plaintext connection (no more input; output
   * still possible). The protocol must end the connection once it has
   * answered what it received (sk_conn_close). NULL: the core closes. */
  void (*on_eof)(sk__http_conn_t *hc);
};

/* Runs fn(arg) once every uv_close() already requested on the loop has
 * run its close callback, whoever requested it: for state that embeds
 * handles someone else (a test harness walking the loop) may have
 * closed. */
void sk__http_after_closes(uv_loop_t *loop, void (*fn)(void *arg), void *arg);

struct sk__http_conn {
  sk_conn_t *conn;
  sk_http_server_t *srv;
  const struct sk__http_proto *proto; /* NULL while sniffing for the h2c preface */
  void *proto_data;
  sk_buf_t sniff;
  sk__http_conn_t *prev, *next; /* server's list of live connections */
};

/* Set hc->proto and hc->proto_data. The core then feeds the bytes read so
 * far through proto->on_data. */
void sk__h1_server_attach(sk__http_conn_t *hc);
void sk__h2_server_attach(sk__http_conn_t *hc);

/* Options with every default resolved. */
const sk_http_server_opts_t *sk__http_server_opts(const sk_http_server_t *s);
int sk__http_server_draining(const sk_http_server_t *s);

/* Response operations a protocol implements for its requests. */
struct sk__http_req_ops {
  int (*start)(sk_http_req_t *r, int status, const sk_http_header_t *h, size_t n);
  int (*write)(sk_http_req_t *r, const void *d, size_t n);
  int (*end)(sk_http_req_t *r);
  /* unsent response bytes (sk_http_resp_queued) */
  size_t (*queued)(const sk_http_req_t *r);
};

enum sk__http_req_state {
  SK__REQ_HANDLER = 0, /* waiting for the handler to respond */
  SK__REQ_STARTED = 1, /* status and headers sent */
  SK__REQ_ENDED = 2,   /* response complete */
};

struct sk__http_req_int {
  const struct sk__http_req_ops *ops;
  void *proto;    /* the h1 connection or the h2 stream */
  sk__http_conn_t *hc;
  int state;
  int dispatched; /* handler has been called */
  sk_http_abort_fn abort_fn;
  void *abort_ud;
};

/* Allocates a request with its pool and fills peer_addr, peer_spiffe,
 * scheme, start_ns, server. */
sk_http_req_t *sk__http_req_new(sk__http_conn_t *hc, const struct sk__http_req_ops *ops, void *proto);
/* After method/target/headers/body are set: derives path, query,
 * authority (Host), trace_id (traceparent), then calls the handler. */
void sk__http_req_dispatch(sk_http_req_t *r);
/* The connection went away before the response ended: runs the abort
 * callback and frees the request. */
void sk__http_req_abort(sk_http_req_t *r);
void sk__http_req_free(sk_http_req_t *r);

/* The fields of a parsed HTTP/1 head (h1_int.h) copied into pool as
 * NUL-terminated strings, all in one piece: fills hs (n, cap, v). */
struct sk__h1_head;
void sk__http_headers_from_h1(sk_http_headers_t *hs, const struct sk__h1_head *h, sk_pool_t *pool);

/* Parse a W3C traceparent value; on success copies the 32 hex trace id
 * (lower case) into out[33] and returns 0. */
int sk__http_traceparent_trace_id(const char *v, char out[33]);

/* ---------------- client side ---------------- */

typedef struct sk__http_creq sk__http_creq_t;

/* One request in flight from sk_http_client_request(). */
struct sk__http_creq {
  sk_http_client_t *cl;
  sk_pool_t *pool;          /* request copies; handed to the response */
  const char *method, *path, *authority, *scheme;
  sk_http_headers_t headers;
  const uint8_t *body;
  size_t body_len;
  sk_http_client_cb cb;
  void *ud;
  uv_timer_t *timer;        /* streams: idle timeout, owned by the client core */
  /* plain requests: the deadline, on the client's list in start order
   * (every plain request of a client has the same timeout) */
  uint64_t due;
  sk__http_creq_t *dl_prev, *dl_next;
  int on_dl, queued;
  int gate_wait;            /* counted by the client's gate.wait_start while queued */
  /* Set by the protocol that carries the request, so the core can cancel
   * it (timeout, client freed); the protocol must not call complete after. */
  void (*cancel)(sk__http_creq_t *r);
  void *proto;
  sk__http_creq_t *next;
  /* streaming (sk_http_client_stream): the protocol hands the head and
   * each piece of body over as they arrive instead of collecting them */
  const sk_http_stream_cbs_t *scbs;
  void *sud;
};

/* Streaming requests: the protocol reports the final head and body bytes.
 * The user's callback may cancel the request (or free the client), which
 * detaches it from the protocol through r->cancel: after either call the
 * protocol must check that r is still its request before touching it. */
void sk__http_creq_head(sk__http_creq_t *r, sk_http_resp_t *head);
void sk__http_creq_data(sk__http_creq_t *r, const uint8_t *d, size_t n);
static inline int sk__http_creq_streaming(const sk__http_creq_t *r) { return r && r->scbs; }

/* The protocol finished the exchange: resp (allocated from r->pool, or NULL
 * when err < 0) goes to the user's callback, then everything is freed. */
void sk__http_creq_complete(sk__http_creq_t *r, int err, sk_http_resp_t *resp);
size_t sk__http_client_max_body(const sk_http_client_t *cl);

/* HTTP/2 client session on an established connection (ALPN h2 or h2c
 * prior knowledge). The session takes over the connection's callbacks.
 * on_gone runs once when the connection closes or the peer's GOAWAY leaves
 * no stream open; requests still open then are completed with an error.
 * on_gone runs exactly once, also after sk__h2_client_close; the session's
 * memory goes once the connection has closed, so do not use s after
 * on_gone. Requests the peer's GOAWAY left unprocessed fail with
 * SK_EDRAIN, a REFUSED_STREAM with SK_ECONNREFUSED (both safe to retry),
 * a response over sk__http_client_max_body with SK_E2BIG. */
typedef struct sk__h2_client sk__h2_client_t;
sk__h2_client_t *sk__h2_client_new(sk_conn_t *c, sk_http_client_t *cl,
                                   void (*on_gone)(sk__h2_client_t *s, void *ud), void *ud);
/* 1 if another stream can be opened now (no GOAWAY, below the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS). */
int sk__h2_client_can_submit(const sk__h2_client_t *s);
int sk__h2_client_submit(sk__h2_client_t *s, sk__http_creq_t *r);
/* Streams open on the session (0 = the connection is idle). */
size_t sk__h2_client_open_streams(const sk__h2_client_t *s);
/* Fails open requests with SK_ECANCELED and closes the connection. */
void sk__h2_client_close(sk__h2_client_t *s);

#endif
