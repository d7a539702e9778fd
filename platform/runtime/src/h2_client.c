/* HTTP/2 client side (RFC 9113) on libnghttp2: one session per connection
 * multiplexing the client core's requests.
 *
 * The session owns the connection's callbacks. Requests are submitted with
 * a data provider over the request body (copied in the request's pool by
 * the core); the response head and body are collected into an
 * sk_http_resp_t allocated from the same pool, and the exchange ends in
 * nghttp2's on_stream_close with sk__http_creq_complete. A streaming
 * request gets its head when the response HEADERS frame is complete and
 * each DATA chunk as nghttp2 hands it over (the window is given back as it
 * is consumed, so nothing piles up here).
 *
 * Frames are produced synchronously after each call into the session,
 * except while nghttp2 is running one of our callbacks (a user callback
 * submitting a new request from inside a completion): then the flush
 * happens when nghttp2 returns. The session memory is freed once the
 * connection is gone, never from inside a callback. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_int.h"
#include "skiff/err.h"

#define SK__H2C_WRITE_HWM (256u * 1024u)
#define SK__H2C_SEND_BATCH (64u * 1024u)
#define SK__H2C_STREAM_WINDOW (1 << 20)
#define SK__H2C_CONN_WINDOW (8 << 20)
#define SK__H2C_MAX_HEADER_BYTES (64u * 1024u) /* response head limit */
#define SK__H2C_MAX_HEADERS 256

typedef struct sk__h2c_stream sk__h2c_stream_t;

struct sk__h2c_stream {
  sk__h2_client_t *s;
  int32_t id;
  sk__http_creq_t *creq; /* NULL once completed or canceled */
  size_t body_off;       /* request body bytes handed to nghttp2 */
  sk_http_resp_t *resp;
  sk_buf_t body;         /* response body */
  size_t hdr_bytes;
  int end_stream;        /* END_STREAM received */
  int failed;            /* error decided locally (limit) */
  int head_sent;         /* streaming: the final head went to the request */
  sk__h2c_stream_t *prev, *next;
};

struct sk__h2_client {
  sk_conn_t *conn; /* NULL once gone */
  nghttp2_session *session;
  size_t max_body;
  void (*on_gone)(sk__h2_client_t *s, void *ud);
  void *ud;
  sk__h2c_stream_t *streams;
  size_t nstreams;
  sk_buf_t wbuf;
  int32_t goaway_last_id;
  int goaway;       /* GOAWAY received */
  int busy, in_ng;  /* our entry depth; inside an nghttp2 call */
  int want_flush;
  int closing;      /* connection close requested */
  int gone_called;
  int core_closed;  /* sk__h2_client_close was called */
  int proto_error;  /* nghttp2 ended the session over the peer's protocol error */
  int dead;         /* transport gone: free when busy == 0 */
};

static void h2c_flush(sk__h2_client_t *s);

/* ---------------- lifetime ---------------- */

static void h2c_stream_free(sk__h2c_stream_t *st) {
  sk__h2_client_t *s = st->s;
  if (st->prev) st->prev->next = st->next;
  else s->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  s->nstreams--;
  if (s->session) nghttp2_session_set_stream_user_data(s->session, st->id, NULL);
  sk_buf_done(&st->body);
  free(st);
}

/* Detaches the request from its stream and completes it. */
static void h2c_complete(sk__h2c_stream_t *st, int err, sk_http_resp_t *resp) {
  sk__http_creq_t *r = st->creq;
  if (!r) return;
  st->creq = NULL;
  r->cancel = NULL;
  r->proto = NULL;
  sk__http_creq_complete(r, err, resp);
}

/* Completes every open request; callbacks may cancel others meanwhile. */
static void h2c_fail_all(sk__h2_client_t *s, int err) {
  for (;;) {
    sk__h2c_stream_t *st = s->streams;
    while (st && !st->creq) st = st->next;
    if (!st) break;
    h2c_complete(st, err, NULL);
  }
}

static void h2c_free(sk__h2_client_t *s) {
  while (s->streams) h2c_stream_free(s->streams);
  nghttp2_session_del(s->session);
  sk_buf_done(&s->wbuf);
  free(s);
}

static void h2c_enter(sk__h2_client_t *s) { s->busy++; }

static void h2c_leave(sk__h2_client_t *s) {
  if (--s->busy == 0 && s->dead) h2c_free(s);
}

static void h2c_gone(sk__h2_client_t *s) {
  if (s->gone_called) return;
  s->gone_called = 1;
  if (s->on_gone) s->on_gone(s, s->ud);
}

/* After a GOAWAY with nothing left open, or on a session error. */
static void h2c_close_conn(sk__h2_client_t *s) {
  if (s->closing || s->dead) return;
  s->closing = 1;
  sk_conn_close(s->conn);
}

/* The session cannot go on: fail what is open, tell the core, close. */
static void h2c_session_error(sk__h2_client_t *s, int err) {
  if (s->dead || s->closing) return;
  s->closing = 1;
  h2c_fail_all(s, err);
  h2c_gone(s);
  sk_conn_close(s->conn);
}

static void h2c_check_done(sk__h2_client_t *s) {
  if (s->dead || s->closing) return;
  int idle_goaway = s->goaway && s->nstreams == 0;
  int finished = !nghttp2_session_want_read(s->session) && !nghttp2_session_want_write(s->session);
  if (idle_goaway || finished) {
    h2c_gone(s);
    h2c_close_conn(s);
  }
}

/* ---------------- output ---------------- */

static void h2c_write_batch(sk__h2_client_t *s) {
  if (!s->wbuf.len) return;
  if (!s->closing && !s->dead && sk_conn_write(s->conn, s->wbuf.data, s->wbuf.len) < 0) {
    s->closing = 1;
    sk_conn_abort(s->conn);
  }
  sk_buf_reset(&s->wbuf);
}

static void h2c_flush(sk__h2_client_t *s) {
  if (s->in_ng) {
    s->want_flush = 1;
    return;
  }
  if (s->closing || s->dead || !s->session) return;
  h2c_enter(s);
  int fatal = 0;
  do {
    s->want_flush = 0;
    s->in_ng = 1;
    for (;;) {
      if (s->closing || s->dead) break;
      if (sk_conn_write_queued(s->conn) + s->wbuf.len >= SK__H2C_WRITE_HWM) break;
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(s->session, &data);
      if (n < 0) {
        fatal = 1;
        break;
      }
      if (n == 0) break;
      sk_buf_append(&s->wbuf, data, (size_t)n);
      if (s->wbuf.len >= SK__H2C_SEND_BATCH) h2c_write_batch(s);
    }
    s->in_ng = 0;
    h2c_write_batch(s);
  } while (s->want_flush && !fatal && !s->closing && !s->dead);
  if (fatal) h2c_session_error(s, SK_EHTTP);
  else h2c_check_done(s);
  h2c_leave(s);
}

/* ---------------- request body ---------------- */

static ssize_t h2c_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                           size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                           void *ud) {
  sk__h2c_stream_t *st = source->ptr;
  if (!st->creq) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
  size_t left = st->creq->body_len - st->body_off;
  size_t n = left < length ? left : length;
  if (n) memcpy(buf, st->creq->body + st->body_off, n);
  st->body_off += n;
  if (st->body_off == st->creq->body_len) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* ---------------- nghttp2 callbacks ---------------- */

static int h2c_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sk__h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st || !st->creq || st->resp) return 0;
  st->resp = sk_pool_calloc(st->creq->pool, sizeof *st->resp);
  st->resp->version = 20;
  st->resp->pool = st->creq->pool;
  return 0;
}

static void h2c_stream_fail(sk__h2c_stream_t *st, int err) {
  if (st->failed) return;
  st->failed = 1;
  nghttp2_submit_rst_stream(st->s->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
  h2c_complete(st, err, NULL);
}

static int h2c_on_header(nghttp2_session *session, const nghttp2_frame *frame,
                         const uint8_t *name, size_t namelen, const uint8_t *value,
                         size_t valuelen, uint8_t flags, void *ud) {
  sk__h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!st || !st->creq || !st->resp || frame->hd.type != NGHTTP2_HEADERS) return 0;
  st->hdr_bytes += namelen + valuelen + 4;
  if (st->hdr_bytes > SK__H2C_MAX_HEADER_BYTES || st->resp->headers.n >= SK__H2C_MAX_HEADERS) {
    h2c_stream_fail(st, SK_E2BIG);
    return 0;
  }
  const char *n = (const char *)name, *v = (const char *)value;
  if (n[0] == ':') {
    if (!strcmp(n, ":status")) {
      /* a final status after 1xx responses: forget the interim fields */
      st->resp->status = atoi(v);
      st->resp->headers.n = 0;
      st->hdr_bytes = namelen + valuelen + 4;
    }
    return 0;
  }
  sk_http_headers_add(&st->resp->headers, st->creq->pool, n, v);
  return 0;
}

static int h2c_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                             const uint8_t *data, size_t len, void *ud) {
  sk__h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
  if (!st || !st->creq || st->failed) return 0;
  if (sk__http_creq_streaming(st->creq)) { /* handed over, not kept */
    if (st->head_sent) sk__http_creq_data(st->creq, data, len);
    return 0;
  }
  if (st->body.len + len > st->s->max_body) {
    h2c_stream_fail(st, SK_E2BIG);
    return 0;
  }
  sk_buf_append(&st->body, data, len);
  return 0;
}

static int h2c_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sk__h2_client_t *s = ud;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    s->goaway = 1;
    s->goaway_last_id = frame->goaway.last_stream_id;
    return 0;
  }
  if (frame->hd.type == NGHTTP2_HEADERS) {
    sk__h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st && st->creq && !st->failed && !st->head_sent && st->resp &&
        st->resp->status >= 200 && sk__http_creq_streaming(st->creq)) {
      st->head_sent = 1;
      sk__http_creq_head(st->creq, st->resp); /* may cancel: st->creq is then NULL */
      st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
      if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) st->end_stream = 1;
      return 0;
    }
  }
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    sk__h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st) st->end_stream = 1;
  }
  return 0;
}

static int h2c_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sk__h2_client_t *s = ud;
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
    s->proto_error = 1;
  return 0;
}

static int h2c_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                               void *ud) {
  sk__h2_client_t *s = ud;
  sk__h2c_stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
  if (!st) return 0;
  sk__http_creq_t *r = st->creq;
  sk_http_resp_t *resp = st->resp;
  int err;
  if (r && st->end_stream && resp && resp->status >= 200 &&
      (error_code == NGHTTP2_NO_ERROR || error_code == NGHTTP2_CANCEL)) {
    /* RST_STREAM(NO_ERROR) after a complete response is fine (RFC 9113 8.1) */
    err = 0;
    /* never NULL, and NUL-terminated for text bodies (not counted) */
    uint8_t *b = sk_pool_alloc(resp->pool, st->body.len + 1);
    if (st->body.len) memcpy(b, st->body.data, st->body.len);
    b[st->body.len] = 0;
    resp->body = b;
    resp->body_len = st->body.len;
  } else if (s->goaway && stream_id > s->goaway_last_id) {
    err = SK_EDRAIN; /* the server is going away and never processed it */
  } else if (error_code == NGHTTP2_REFUSED_STREAM) {
    err = SK_ECONNREFUSED; /* not processed; safe to retry */
  } else if (error_code == NGHTTP2_NO_ERROR || error_code == NGHTTP2_CANCEL ||
             error_code == NGHTTP2_INTERNAL_ERROR) {
    err = SK_ECONNRESET;
  } else {
    err = SK_EHTTP;
  }
  if (r) {
    st->creq = NULL;
    r->cancel = NULL;
    r->proto = NULL;
  }
  /* the slot is free before the core's callback asks for another stream */
  h2c_stream_free(st);
  if (r) sk__http_creq_complete(r, err, err < 0 ? NULL : resp);
  return 0;
}

/* ---------------- connection callbacks ---------------- */

static void h2c_conn_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  sk__h2_client_t *s = sk_conn_get_data(c);
  if (!s || s->closing || s->dead) return;
  h2c_enter(s);
  s->in_ng = 1;
  ssize_t rv = nghttp2_session_mem_recv(s->session, d, n);
  s->in_ng = 0;
  if (rv < 0) {
    h2c_session_error(s, SK_EHTTP);
  } else {
    h2c_flush(s);
  }
  h2c_leave(s);
}

static void h2c_conn_close(sk_conn_t *c, int err) {
  sk__h2_client_t *s = sk_conn_get_data(c);
  if (!s) return;
  h2c_enter(s);
  s->dead = 1;
  s->conn = NULL;
  /* streams above a GOAWAY's last id were already failed with SK_EDRAIN;
   * the rest may have been processed */
  int e = s->proto_error ? SK_EHTTP : err < 0 && err != SK_ECLOSED ? err : SK_ECONNRESET;
  h2c_fail_all(s, e);
  h2c_gone(s);
  h2c_leave(s);
}

static void h2c_conn_drain(sk_conn_t *c) {
  sk__h2_client_t *s = sk_conn_get_data(c);
  if (s) h2c_flush(s);
}

/* ---------------- API ---------------- */

sk__h2_client_t *sk__h2_client_new(sk_conn_t *c, sk_http_client_t *cl,
                                   void (*on_gone)(sk__h2_client_t *s, void *ud), void *ud) {
  sk__h2_client_t *s = sk_xcalloc(1, sizeof *s);
  s->conn = c;
  s->max_body = cl ? sk__http_client_max_body(cl) : (16u << 20);
  s->on_gone = on_gone;
  s->ud = ud;
  sk_buf_init(&s->wbuf);

  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) abort();
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2c_on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, h2c_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2c_on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2c_on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2c_on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2c_on_frame_send);
  if (nghttp2_session_client_new(&s->session, cbs, s) != 0) abort();
  nghttp2_session_callbacks_del(cbs);

  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, SK__H2C_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, SK__H2C_MAX_HEADER_BYTES + 32 * SK__H2C_MAX_HEADERS},
  };
  nghttp2_submit_settings(s->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(s->session, NGHTTP2_FLAG_NONE, 0, SK__H2C_CONN_WINDOW);

  sk_conn_cbs_t ccbs = {.on_data = h2c_conn_data, .on_close = h2c_conn_close,
                        .on_drain = h2c_conn_drain};
  sk_conn_set_cbs(c, &ccbs, s);
  h2c_flush(s); /* preface and SETTINGS */
  return s;
}

size_t sk__h2_client_open_streams(const sk__h2_client_t *s) { return s ? s->nstreams : 0; }

int sk__h2_client_can_submit(const sk__h2_client_t *s) {
  if (!s || s->goaway || s->closing || s->dead || s->gone_called || s->core_closed) return 0;
  uint32_t maxs = nghttp2_session_get_remote_settings(s->session,
                                                      NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  if (s->nstreams >= maxs) return 0;
  return nghttp2_session_get_next_stream_id(s->session) <= INT32_MAX;
}

static int h2c_is_conn_header(const char *n) {
  return !strcasecmp(n, "connection") || !strcasecmp(n, "keep-alive") ||
         !strcasecmp(n, "transfer-encoding") || !strcasecmp(n, "upgrade") ||
         !strcasecmp(n, "proxy-connection") || !strcasecmp(n, "host");
}

static void h2c_nv(nghttp2_nv *nv, const char *name, const char *value) {
  nv->name = (uint8_t *)(uintptr_t)name;
  nv->namelen = strlen(name);
  nv->value = (uint8_t *)(uintptr_t)value;
  nv->valuelen = strlen(value);
  nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void h2c_cancel(sk__http_creq_t *r) {
  sk__h2c_stream_t *st = r->proto;
  r->cancel = NULL;
  r->proto = NULL;
  if (!st) return;
  st->creq = NULL;
  sk__h2_client_t *s = st->s;
  if (s->dead || s->closing) return;
  nghttp2_submit_rst_stream(s->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
  h2c_flush(s);
}

int sk__h2_client_submit(sk__h2_client_t *s, sk__http_creq_t *r) {
  if (!s || s->dead || s->closing || s->gone_called || s->core_closed) return SK_ECLOSED;
  if (s->goaway) return SK_EDRAIN;
  if (!sk__h2_client_can_submit(s)) return SK_EBUSY;
  if (!r->method || !r->path) return SK_EINVAL;
  if (r->headers.n > 1024) return SK_E2BIG;
  const char *authority = r->authority ? r->authority : sk_http_headers_get(&r->headers, "host");
  const char *scheme = r->scheme ? r->scheme : (sk_conn_is_tls(s->conn) ? "https" : "http");
  nghttp2_nv *nv = sk_pool_alloc(r->pool, (r->headers.n + 4) * sizeof *nv);
  size_t k = 0;
  h2c_nv(&nv[k++], ":method", r->method);
  h2c_nv(&nv[k++], ":scheme", scheme);
  if (authority) h2c_nv(&nv[k++], ":authority", authority);
  h2c_nv(&nv[k++], ":path", r->path);
  for (size_t i = 0; i < r->headers.n; i++) {
    const char *n = r->headers.v[i].name, *v = r->headers.v[i].value;
    if (!n || !v || n[0] == ':' || h2c_is_conn_header(n)) continue;
    if (!strcasecmp(n, "te") && strcasecmp(v, "trailers")) continue;
    size_t len = strlen(n);
    char *lname = sk_pool_alloc(r->pool, len + 1);
    for (size_t j = 0; j <= len; j++)
      lname[j] = (n[j] >= 'A' && n[j] <= 'Z') ? (char)(n[j] - 'A' + 'a') : n[j];
    if (!nghttp2_check_header_name((const uint8_t *)lname, len) ||
        !nghttp2_check_header_value((const uint8_t *)v, strlen(v)))
      return SK_EINVAL;
    h2c_nv(&nv[k++], lname, v);
  }

  sk__h2c_stream_t *st = sk_xcalloc(1, sizeof *st);
  st->s = s;
  st->creq = r;
  sk_buf_init(&st->body);
  nghttp2_data_provider prd = {.source = {.ptr = st}, .read_callback = h2c_read_cb};
  int has_body = r->body_len > 0;
  int32_t id = nghttp2_submit_request(s->session, NULL, nv, k, has_body ? &prd : NULL, st);
  if (id < 0) {
    sk_buf_done(&st->body);
    free(st);
    return id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? SK_EBUSY : SK_EHTTP;
  }
  st->id = id;
  st->next = s->streams;
  if (s->streams) s->streams->prev = st;
  s->streams = st;
  s->nstreams++;
  r->proto = st;
  r->cancel = h2c_cancel;
  h2c_flush(s);
  return 0;
}

void sk__h2_client_close(sk__h2_client_t *s) {
  if (!s) return;
  h2c_enter(s);
  s->core_closed = 1;
  h2c_fail_all(s, SK_ECANCELED);
  if (!s->dead && !s->closing) {
    nghttp2_session_terminate_session(s->session, NGHTTP2_NO_ERROR);
    h2c_flush(s);
    h2c_close_conn(s);
  }
  h2c_leave(s);
}
