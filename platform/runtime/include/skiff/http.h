/* skiff/http.h - HTTP/1.1 and HTTP/2 servers and clients.
 *
 * One request/response API whatever the protocol: HTTP/1.1 (keep-alive,
 * pipelining, chunked both ways, Expect: 100-continue), h2 over TLS via
 * ALPN, and h2c with prior knowledge. Header names keep the case they were
 * received with (HTTP/2 names are lower case on the wire). */
#ifndef SKIFF_HTTP_H
#define SKIFF_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "skiff/mem.h"
#include "skiff/net.h"
#include "skiff/tls.h"

typedef struct sk_http_header {
  const char *name; /* NUL-terminated, case as received */
  const char *value;
} sk_http_header_t;

typedef struct sk_http_headers {
  sk_http_header_t *v;
  size_t n, cap;
} sk_http_headers_t;

/* Case-insensitive lookup of the first header with that name, or NULL. */
const char *sk_http_headers_get(const sk_http_headers_t *h, const char *name);
/* Appends; name and value are copied into pool. */
void sk_http_headers_add(sk_http_headers_t *h, sk_pool_t *pool, const char *name, const char *value);
const char *sk_http_status_text(int status);

typedef struct sk_http_server sk_http_server_t;
typedef struct sk_http_req sk_http_req_t;

struct sk_http_req {
  sk_pool_t *pool;      /* freed with the request */
  const char *method;   /* "GET" */
  const char *target;   /* request-target as received: "/a/b?x=1" */
  const char *path;     /* target before '?' */
  const char *query;    /* after '?', or NULL */
  const char *authority; /* Host or :authority, or NULL */
  const char *scheme;   /* "http" or "https" */
  int version;          /* 10, 11 or 20 */
  sk_http_headers_t headers;
  const uint8_t *body;  /* the whole body (buffered up to max_body_bytes) */
  size_t body_len;
  const char *peer_addr;
  const char *peer_spiffe; /* verified client certificate's SPIFFE ID, or NULL */
  const char *trace_id;    /* from a valid traceparent header, or NULL */
  uint64_t start_ns;       /* uv_hrtime() when the request began */
  sk_http_server_t *server;
  void *user;              /* free for the handler */
  struct sk__http_req_int *_int; /* protocol internals */
};

/* Called once per request with the body complete. The handler must end the
 * response, now or later from the same loop (sk_http_respond or
 * sk_http_resp_start/write/end). */
typedef void (*sk_http_handler_fn)(sk_http_req_t *req, void *ud);
/* Called if the client goes away before the response ended; after it
 * returns the request is freed and must not be touched. */
typedef void (*sk_http_abort_fn)(sk_http_req_t *req, void *ud);

typedef struct sk_http_server_opts {
  const char *host;            /* default "127.0.0.1" */
  int port;                    /* 0 = ephemeral (see sk_http_server_port) */
  sk_tls_ctx_t *tls;           /* NULL = plaintext; ALPN "h2,http/1.1" is set by the server */
  int h2c;                     /* accept h2c prior knowledge on plaintext (default on: pass -1 to refuse) */
  int reuseport;
  size_t max_header_bytes;     /* request line + headers; default 16384 -> 431 */
  size_t max_headers;          /* default 100 -> 431 */
  size_t max_body_bytes;       /* default 1 MiB -> 413 */
  uint64_t header_timeout_ms;  /* first byte to end of headers; default 10000 -> 408 */
  uint64_t body_timeout_ms;    /* default 30000 -> 408 */
  uint64_t idle_timeout_ms;    /* keep-alive idle; default 60000 -> close */
  uint32_t h2_max_concurrent_streams; /* default 100 */
  uint32_t h2_initial_window;  /* default 65535 */
  const char *server_name;     /* "server" response header; default none */
  /* Bound on a response's unsent bytes (sk_http_resp_queued): while a
   * response holds this many or more, sk_http_resp_write fails with
   * SK_EAGAIN and queues nothing (sk_http_respond's whole body is never
   * refused). 0 = no bound (the default). */
  size_t max_resp_queued_bytes;
  /* Optional: the server adds 1 here per accepted connection and takes 1
   * off when it closes, with atomic operations, so another thread may read
   * it (__atomic_load_n) for an open-connections gauge. Must outlive every
   * connection of the server. */
  long *conn_gauge;
} sk_http_server_opts_t;

int sk_http_server_new(uv_loop_t *loop, const sk_http_server_opts_t *o, sk_http_handler_fn fn,
                       void *ud, sk_http_server_t **out);
int sk_http_server_port(const sk_http_server_t *s);
uv_loop_t *sk_http_server_loop(const sk_http_server_t *s);
/* Graceful drain: stop accepting, send GOAWAY on h2, close idle h1
 * connections and every other one once its in-flight responses are done.
 * cb runs when no connection is left (or immediately if none). */
void sk_http_server_drain(sk_http_server_t *s, void (*cb)(sk_http_server_t *s, void *ud), void *ud);
size_t sk_http_server_conn_count(const sk_http_server_t *s);
/* Closes everything now; memory goes once the loop has run the closes. */
void sk_http_server_free(sk_http_server_t *s);

/* Responses. hdrs may be NULL. A "content-length" header in hdrs makes
 * sk_http_resp_start send a fixed-length body; otherwise HTTP/1.1 uses
 * chunked encoding (HTTP/1.0: close-delimited).
 *
 * Pitfall: sk_http_respond() and sk_http_resp_end() may free req (and its
 * pool: method, path, headers, body, anything allocated from req->pool)
 * before they return. On HTTP/1.1 they do so at once, and may even run
 * the handler for the next pipelined request on that connection before
 * returning. Copy what you still need first, and do not touch req after
 * the call. */
int sk_http_respond(sk_http_req_t *req, int status, const sk_http_header_t *hdrs, size_t nhdrs,
                    const void *body, size_t len);
int sk_http_respond_text(sk_http_req_t *req, int status, const char *content_type, const char *text);
int sk_http_resp_start(sk_http_req_t *req, int status, const sk_http_header_t *hdrs, size_t nhdrs);
int sk_http_resp_write(sk_http_req_t *req, const void *data, size_t len);
int sk_http_resp_end(sk_http_req_t *req);
/* Bytes of this response accepted by sk_http_resp_write but not yet
 * handed to the socket: on HTTP/1 the connection's write queue (which
 * only this response uses), on HTTP/2 the stream's data not yet framed
 * (held back by flow control or a full transport). A long-lived stream whose reader stopped
 * reading shows up as a value that only grows; producers compare it with
 * their own bound and close such a consumer. 0 for a NULL or finished
 * response. */
size_t sk_http_resp_queued(const sk_http_req_t *req);
void sk_http_req_on_abort(sk_http_req_t *req, sk_http_abort_fn fn, void *ud);

/* ---- client ---- */

typedef struct sk_http_client sk_http_client_t;

typedef struct sk_http_resp {
  int status;
  int version; /* 10, 11, 20 */
  sk_http_headers_t headers;
  const uint8_t *body;
  size_t body_len;
  sk_pool_t *pool; /* owns everything above; freed after the callback */
} sk_http_resp_t;

/* err < 0 and resp == NULL on failure (connect, TLS, timeout, protocol).
 *
 * The callback runs from inside the client's read of the response, but the
 * connection is already settled when it does: the response is detached,
 * and an HTTP/1.1 keep-alive connection is back in the pool (it may even
 * be carrying the next queued request already). So the callback may free
 * the client, issue new requests, or answer a server request downstream;
 * note that answering downstream can synchronously run the next pipelined
 * request's handler, which may submit its own request on the connection
 * that just finished, all before the callback returns. resp and its pool
 * are freed when the callback returns: copy what must outlive it. */
typedef void (*sk_http_client_cb)(int err, sk_http_resp_t *resp, void *ud);

typedef struct sk_http_client_opts {
  const char *host;
  int port;
  sk_tls_ctx_t *tls;          /* NULL = plaintext */
  const char *sni;
  int version;                /* 11 (default) or 20: h2 via ALPN with tls, else h2c prior knowledge */
  size_t max_conns;           /* HTTP/1.1 pool size, default 8 */
  size_t max_body_bytes;      /* default 16 MiB */
  uint64_t connect_timeout_ms; /* default 5000 */
  uint64_t request_timeout_ms; /* whole exchange, default 30000 */
  uint64_t idle_timeout_ms;   /* pooled idle connection lifetime, default 30000 */
  uint64_t stream_idle_timeout_ms; /* sk_http_client_stream: longest silence, default 60000 */
  const struct sk_http_client_gate *gate; /* optional admission limits (below); copied */
  /* Optional: +1 per connection established (HTTP/1.1 or h2), -1 when it
   * is gone, with atomic operations (another thread may read it). Must
   * outlive every connection of the client. */
  long *conn_gauge;
} sk_http_client_opts_t;

/* Admission limits a client asks before it opens a connection and before a
 * request starts waiting for one: for caps shared by many clients (all the
 * pools of one upstream cluster, on every thread), which the user counts.
 * Every hook may be NULL; they run on the client's loop thread, so a gate
 * shared across threads must be thread-safe (atomics).
 *
 * conn_open: a connection is about to be opened. 0 = go ahead (the slot is
 *   held until conn_closed); anything else = not now: the requests stay
 *   queued and the client asks again every retry_ms while they wait (its
 *   own connections finishing also take them).
 * conn_closed: a connection conn_open allowed is gone (or never connected).
 * wait_start: a request cannot go out at once (no idle connection, no free
 *   h2 stream) and would queue. 0 = it may wait (held until wait_end);
 *   anything else = sk_http_client_request/_stream return SK_ELIMIT at
 *   once, no callback.
 * wait_end: that request left the queue (sent, failed, timed out, ...).
 * done: the client and all its connections are gone; no hook runs after. */
typedef struct sk_http_client_gate {
  int (*conn_open)(void *ud);
  void (*conn_closed)(void *ud);
  int (*wait_start)(void *ud);
  void (*wait_end)(void *ud);
  void (*done)(void *ud);
  void *ud;
  uint64_t retry_ms; /* default 10 */
} sk_http_client_gate_t;

int sk_http_client_new(uv_loop_t *loop, const sk_http_client_opts_t *o, sk_http_client_t **out);
/* Sends a request on a pooled or new connection. Headers, path and body are
 * copied. Host/:authority is filled in from opts when absent. */
int sk_http_client_request(sk_http_client_t *cl, const char *method, const char *path,
                           const sk_http_header_t *hdrs, size_t nhdrs, const void *body,
                           size_t len, sk_http_client_cb cb, void *ud);
/* Streaming responses (long polls, watch streams, large downloads).
 *
 * sk_http_client_stream() sends a request like sk_http_client_request()
 * but delivers the response as it arrives: on_head once with the final
 * status and headers (head->body is NULL), on_data for each piece of body
 * as read (HTTP/1.1 content-length, chunked or close-delimited; HTTP/2
 * DATA frames), then on_end exactly once: err 0 after the whole body, else
 * the failure (SK_ETIMEDOUT when nothing arrived for
 * stream_idle_timeout_ms, SK_ECANCELED when the client is freed, ...).
 * There is no whole-response timeout and no max_body_bytes limit; the
 * client holds no more than one read of body at a time (bytes handed to
 * on_data are not kept), so a consumer that must buffer bounds its own
 * buffer. on_head and on_data may be NULL.
 *
 * on_end may run before the call returns (a connect that fails at once).
 * *out (may be NULL) is a handle valid until on_end runs or until
 * sk_http_stream_cancel() returns; cancel is allowed from inside on_head
 * and on_data, and no callback runs after it. An HTTP/1.1 connection
 * carrying a stream that did not end cleanly is closed, never reused. */
typedef struct sk__http_creq sk_http_stream_t;
typedef struct sk_http_stream_cbs {
  void (*on_head)(sk_http_stream_t *st, const sk_http_resp_t *head, void *ud);
  void (*on_data)(sk_http_stream_t *st, const uint8_t *data, size_t len, void *ud);
  void (*on_end)(sk_http_stream_t *st, int err, void *ud);
} sk_http_stream_cbs_t;

int sk_http_client_stream(sk_http_client_t *cl, const char *method, const char *path,
                          const sk_http_header_t *hdrs, size_t nhdrs, const void *body,
                          size_t len, const sk_http_stream_cbs_t *cbs, void *ud,
                          sk_http_stream_t **out);
void sk_http_stream_cancel(sk_http_stream_t *st);

/* Closes the connections that carry no request now: idle HTTP/1.1
 * keep-alive connections, an h2 connection with no stream open (their gate
 * slots come back as they close); busy ones are left alone. For a gate
 * user whose shared connection limit is held by idle connections while
 * another client waits for a slot. */
void sk_http_client_close_idle(sk_http_client_t *cl);
/* Fails pending requests with SK_ECANCELED and closes every connection. */
void sk_http_client_free(sk_http_client_t *cl);

/* Convenience for CLIs and tests: runs a private loop until done.
 * url: http://host:port/path or https://...; *resp must be freed with
 * sk_http_resp_free. */
int sk_http_fetch(const char *method, const char *url, sk_tls_ctx_t *tls, const void *body,
                  size_t len, uint64_t timeout_ms, sk_http_resp_t **resp);
void sk_http_resp_free(sk_http_resp_t *resp);
/* A copy of resp in its own pool (body NUL-terminated), for client
 * callbacks whose response must outlive the call; free with
 * sk_http_resp_free. */
sk_http_resp_t *sk_http_resp_dup(const sk_http_resp_t *resp);

/* http[s]://host[:port][/path]; host may be [v6]. port is 0 when the URL
 * has none (the caller picks its default); path is "/" when absent and
 * points into url otherwise. SK_EINVAL for anything else. */
typedef struct sk_http_url {
  int tls;
  char host[256];
  int port;
  const char *path;
} sk_http_url_t;
int sk_http_url_parse(const char *url, sk_http_url_t *out);

#endif
