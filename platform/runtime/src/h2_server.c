/* HTTP/2 server side (RFC 9113) on libnghttp2: one nghttp2 session per
 * connection, one sk_http_req_t per stream.
 *
 * Input: the core feeds every byte read through h2s_on_data, which runs
 * nghttp2_session_mem_recv; nghttp2 validates framing, HPACK, pseudo-headers
 * and content-length and answers protocol errors itself (RST_STREAM or
 * GOAWAY). A request is dispatched once its END_STREAM arrived, with the
 * body buffered in the stream up to max_body_bytes.
 *
 * Output: the response ops only queue (nghttp2_submit_response, bytes
 * appended to the stream's out buffer, nghttp2_session_resume_data); frames
 * are produced by h2s_flush, which runs after each read, from a uv_idle
 * handle for responses written outside a read (asynchronous handlers), and
 * from on_writable when the transport's queue drained. Production pauses
 * while the transport holds more than SK__H2S_WRITE_HWM bytes.
 *
 * Lifetime: a stream (and its request) is released in nghttp2's
 * on_stream_close callback, which only runs inside mem_recv/mem_send, never
 * inside a response op, so the core's wrappers may touch the request after
 * an op returns. The connection state is freed once the transport is gone
 * and the uv handles have closed. */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h1_int.h"
#include "http_int.h"
#include "skiff/err.h"

#define SK__H2S_WRITE_HWM (256u * 1024u)   /* pause producing frames above this */
#define SK__H2S_SEND_BATCH (64u * 1024u)   /* coalesce frames into writes of this size */
#define SK__H2S_CONN_WINDOW (1 << 20)      /* connection-level receive window */
#define SK__H2S_DRAIN_GRACE_MS 2000        /* shutdown notice -> final GOAWAY at the latest */
#define SK__H2S_HDR_OVERHEAD 4             /* ": " and CRLF, so limits match HTTP/1.1 */
/* After an early answer (413), request DATA up to this much is read and
 * dropped so the client can finish its upload and see the answer; beyond
 * it the stream is reset. */
#define SK__H2S_DISCARD_MAX (1u << 20)

static const uint8_t sk__h2s_drain_ping[8] = {'s', 'k', 'd', 'r', 'a', 'i', 'n', '!'};

typedef struct sk__h2s sk__h2s_t;
typedef struct sk__h2s_stream sk__h2s_stream_t;

struct sk__h2s_stream {
  sk__h2s_t *h;
  int32_t id;
  sk_http_req_t *req;   /* NULL once released */
  sk_buf_t body;        /* request body as received */
  size_t hdr_bytes, nhdrs;
  int reject;           /* status answered instead of dispatching (400, 413, 431) */
  int rst_sent;
  int rst_after;        /* reset once the early answer is out, whatever was announced */
  int headers_done;     /* the request's header block is complete */
  uint64_t start_ms;    /* uv_now when HEADERS began */
  int64_t content_length; /* announced, or -1 */
  uint64_t recv_bytes;    /* request DATA received */
  uint64_t reject_at;     /* recv_bytes when the early answer was decided */
  int remote_closed;    /* END_STREAM received */
  int dispatched;
  /* response */
  int started, submitted, ended, deferred, no_body;
  int status;
  nghttp2_nv *nv;       /* kept (in the request pool) until submitted */
  size_t nnv;
  sk_buf_t out;         /* response bytes not yet framed */
  size_t out_off;
  sk__h2s_stream_t *prev, *next;
};

struct sk__h2s {
  sk__http_conn_t *hc;  /* NULL once the transport is gone */
  nghttp2_session *session;
  const sk_http_server_opts_t *opts;
  sk__h2s_stream_t *streams;
  size_t nstreams;
  sk_buf_t wbuf;
  uv_idle_t flush_idle;
  uv_timer_t idle_timer;   /* no stream open for idle_timeout_ms -> GOAWAY, close */
  uv_timer_t drain_timer;  /* shutdown notice sent -> final GOAWAY */
  uv_timer_t req_timer;    /* ticks while some request is still arriving */
  int handles_open;         /* closes h2s_teardown requested, not yet run */
  int foreign_closed;       /* some handle was closed by someone else */
  int busy;                /* nesting depth of our own entry points */
  int in_recv, in_send;
  int closing;             /* sk_conn_close/abort called */
  int gone;                /* transport gone: tear down when busy == 0 */
  int torn_down;
  int draining, drain_final;
};

static const struct sk__http_req_ops sk__h2s_req_ops;
static void h2s_flush(sk__h2s_t *h);

/* ---------------- small helpers ---------------- */

/* Connection-specific fields (RFC 9113 8.2.2), by length first. */
static int h2s_is_conn_header(const char *n) {
  switch (strlen(n)) {
  case 7: return sk__h1_ieq_lit(n, "upgrade", 7);
  case 10: return sk__h1_ieq_lit(n, "connection", 10) || sk__h1_ieq_lit(n, "keep-alive", 10);
  case 16: return sk__h1_ieq_lit(n, "proxy-connection", 16);
  case 17: return sk__h1_ieq_lit(n, "transfer-encoding", 17);
  default: return 0;
  }
}

static char *h2s_lower_dup(sk_pool_t *p, const char *s, size_t *len) {
  size_t n = strlen(s);
  char *d = sk_pool_alloc(p, n + 1);
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    d[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  d[n] = 0;
  *len = n;
  return d;
}

static void h2s_nv(nghttp2_nv *nv, const char *name, size_t nlen, const char *value, size_t vlen) {
  nv->name = (uint8_t *)(uintptr_t)name;
  nv->namelen = nlen;
  nv->value = (uint8_t *)(uintptr_t)value;
  nv->valuelen = vlen;
  nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void h2s_enter(sk__h2s_t *h) { h->busy++; }

static void h2s_free(void *arg) { free(arg); }

/* One of the handles h2s_teardown closed. When some handle had been closed
 * by someone else, its close may still be queued behind ours: the memory
 * goes once every close requested so far has run. */
static void h2s_handle_closed(uv_handle_t *uh) {
  sk__h2s_t *h = uh->data;
  if (--h->handles_open > 0) return;
  if (h->foreign_closed) sk__http_after_closes(uh->loop, h2s_free, h);
  else free(h);
}

/* Closes hd unless it is closing already (a harness walking the loop). */
static void h2s_close_handle(sk__h2s_t *h, uv_handle_t *hd) {
  if (uv_is_closing(hd)) {
    h->foreign_closed = 1;
    return;
  }
  h->handles_open++;
  uv_close(hd, h2s_handle_closed);
}

static void h2s_stream_release(sk__h2s_stream_t *st);

/* Everything but the memory of h (freed when the uv handles have closed). */
static void h2s_teardown(sk__h2s_t *h) {
  if (h->torn_down) return;
  h->torn_down = 1;
  h->busy++; /* user abort callbacks must not recurse into a teardown */
  while (h->streams) h2s_stream_release(h->streams);
  h->busy--;
  nghttp2_session_del(h->session);
  h->session = NULL;
  sk_buf_done(&h->wbuf);
  uv_loop_t *loop = h->flush_idle.loop;
  h->handles_open = 0; /* counts the closes requested here */
  h2s_close_handle(h, (uv_handle_t *)&h->flush_idle);
  h2s_close_handle(h, (uv_handle_t *)&h->idle_timer);
  h2s_close_handle(h, (uv_handle_t *)&h->drain_timer);
  h2s_close_handle(h, (uv_handle_t *)&h->req_timer);
  if (h->handles_open == 0) sk__http_after_closes(loop, h2s_free, h); /* all closed by others */
}

static void h2s_leave(sk__h2s_t *h) {
  if (--h->busy == 0 && h->gone) h2s_teardown(h);
}

/* Ends the transport; h2s_on_close follows (from the core). */
static void h2s_close(sk__h2s_t *h, int graceful) {
  if (h->closing || h->gone) return;
  h->closing = 1;
  uv_idle_stop(&h->flush_idle);
  uv_timer_stop(&h->idle_timer);
  uv_timer_stop(&h->drain_timer);
  uv_timer_stop(&h->req_timer);
  if (graceful) sk_conn_close(h->hc->conn);
  else sk_conn_abort(h->hc->conn);
}

static void h2s_flush_idle_cb(uv_idle_t *i) {
  sk__h2s_t *h = i->data;
  uv_idle_stop(i);
  h2s_flush(h);
}

/* Frames are produced after the current read, or on the next loop turn. */
static void h2s_schedule(sk__h2s_t *h) {
  if (h->closing || h->gone || h->in_recv) return;
  uv_idle_start(&h->flush_idle, h2s_flush_idle_cb);
}

static void h2s_idle_timer_cb(uv_timer_t *t) {
  sk__h2s_t *h = t->data;
  if (h->nstreams || h->closing || h->gone) return;
  h2s_enter(h);
  nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
  h2s_flush(h);
  h2s_close(h, 1);
  h2s_leave(h);
}

static void h2s_idle_timer_update(sk__h2s_t *h) {
  if (h->closing || h->gone) return;
  if (h->nstreams || !h->opts->idle_timeout_ms) uv_timer_stop(&h->idle_timer);
  else uv_timer_start(&h->idle_timer, h2s_idle_timer_cb, h->opts->idle_timeout_ms, 0);
}

static void h2s_goaway_final(sk__h2s_t *h) {
  if (h->drain_final || !h->session) return;
  h->drain_final = 1;
  uv_timer_stop(&h->drain_timer);
  nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(h->session), NGHTTP2_NO_ERROR,
                        NULL, 0);
}

static void h2s_drain_timer_cb(uv_timer_t *t) {
  sk__h2s_t *h = t->data;
  h2s_enter(h);
  h2s_goaway_final(h);
  h2s_flush(h);
  h2s_leave(h);
}

/* ---------------- output ---------------- */

static void h2s_write_batch(sk__h2s_t *h) {
  if (!h->wbuf.len) return;
  if (!h->closing && !h->gone && sk_conn_write(h->hc->conn, h->wbuf.data, h->wbuf.len) < 0)
    h2s_close(h, 0);
  sk_buf_reset(&h->wbuf);
}

static void h2s_flush(sk__h2s_t *h) {
  if (h->in_send || h->in_recv || h->closing || h->gone || !h->session) return;
  h2s_enter(h);
  h->in_send = 1;
  for (;;) {
    if (h->closing || h->gone) break;
    if (sk_conn_write_queued(h->hc->conn) + h->wbuf.len >= SK__H2S_WRITE_HWM) break;
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(h->session, &data);
    if (n < 0) {
      h->in_send = 0;
      h2s_write_batch(h);
      h2s_close(h, 0);
      goto out;
    }
    if (n == 0) break;
    sk_buf_append(&h->wbuf, data, (size_t)n);
    if (h->wbuf.len >= SK__H2S_SEND_BATCH) h2s_write_batch(h);
  }
  h->in_send = 0;
  h2s_write_batch(h);
  if (!h->closing && !h->gone && !nghttp2_session_want_read(h->session) &&
      !nghttp2_session_want_write(h->session))
    h2s_close(h, 1);
  else
    h2s_idle_timer_update(h);
out:
  h2s_leave(h);
}

static ssize_t h2s_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                           size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                           void *ud) {
  sk__h2s_stream_t *st = source->ptr;
  size_t avail = st->out.len - st->out_off;
  if (!avail) {
    if (st->ended) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    st->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = avail < length ? avail : length;
  memcpy(buf, st->out.data + st->out_off, n);
  st->out_off += n;
  if (st->out_off == st->out.len) {
    sk_buf_reset(&st->out);
    st->out_off = 0;
    if (st->ended) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  } else if (st->out_off >= SK__H2S_SEND_BATCH && st->out_off * 2 >= st->out.len) {
    sk_buf_consume(&st->out, st->out_off);
    st->out_off = 0;
  }
  return (ssize_t)n;
}

static int h2s_submit(sk__h2s_stream_t *st) {
  sk__h2s_t *h = st->h;
  nghttp2_data_provider prd = {.source = {.ptr = st}, .read_callback = h2s_read_cb};
  int with_body = !(st->no_body || (st->ended && st->out.len == st->out_off));
  int rv = nghttp2_submit_response(h->session, st->id, st->nv, st->nnv, with_body ? &prd : NULL);
  st->nv = NULL;
  st->nnv = 0;
  if (rv != 0) return SK_EHTTP;
  st->submitted = 1;
  return 0;
}

/* Builds the response head for st (header names lower-cased, connection
 * headers dropped) and submits it unless the response has no body, in which
 * case it goes out with END_STREAM at end. */
static int h2s_start(sk__h2s_stream_t *st, sk_pool_t *pool, int status,
                     const sk_http_header_t *hdrs, size_t n) {
  sk__h2s_t *h = st->h;
  if (status < 200 || status > 999) return SK_EINVAL;
  if (n > 4096) return SK_E2BIG;
  nghttp2_nv *nv = sk_pool_alloc(pool, (n + 2) * sizeof *nv);
  size_t k = 0;
  char *sv = sk_pool_alloc(pool, 4); /* 200..999 */
  size_t svl = sk__h1_u64(sv, (uint64_t)status);
  sv[svl] = 0;
  h2s_nv(&nv[k++], ":status", 7, sv, svl);
  int have_server = 0;
  for (size_t i = 0; i < n; i++) {
    if (!hdrs[i].name || !hdrs[i].value || hdrs[i].name[0] == ':') continue;
    if (h2s_is_conn_header(hdrs[i].name)) continue;
    const char *hn = hdrs[i].name;
    if (sk__h1_lc((unsigned char)hn[0]) == 't' && sk__h1_lc((unsigned char)hn[1]) == 'e' && !hn[2] &&
        strcasecmp(hdrs[i].value, "trailers"))
      continue;
    size_t nl, vl = strlen(hdrs[i].value);
    char *lname = h2s_lower_dup(pool, hdrs[i].name, &nl);
    if (!nghttp2_check_header_name((const uint8_t *)lname, nl) ||
        !nghttp2_check_header_value((const uint8_t *)hdrs[i].value, vl))
      continue; /* never put a field on the wire the peer must reject */
    if (!strcmp(lname, "server")) have_server = 1;
    h2s_nv(&nv[k++], lname, nl, hdrs[i].value, vl);
  }
  if (!have_server && h->opts->server_name && *h->opts->server_name)
    h2s_nv(&nv[k++], "server", 6, h->opts->server_name, strlen(h->opts->server_name));
  st->nv = nv;
  st->nnv = k;
  st->status = status;
  st->started = 1;
  const char *m = st->req ? st->req->method : NULL;
  st->no_body = status == 204 || status == 304 || (m && !strcmp(m, "HEAD"));
  if (!st->no_body) {
    int rv = h2s_submit(st);
    if (rv < 0) return rv;
  }
  h2s_schedule(h);
  return 0;
}

static int h2s_write(sk__h2s_stream_t *st, const void *d, size_t n) {
  if (!st->started || st->ended) return SK_EINVAL;
  if (st->no_body || !n) return 0;
  sk_buf_append(&st->out, d, n);
  if (st->deferred && st->submitted) {
    st->deferred = 0;
    nghttp2_session_resume_data(st->h->session, st->id);
  }
  h2s_schedule(st->h);
  return 0;
}

static int h2s_end(sk__h2s_stream_t *st) {
  if (!st->started || st->ended) return SK_EINVAL;
  st->ended = 1;
  if (!st->submitted) {
    int rv = h2s_submit(st);
    if (rv < 0) return rv;
  } else if (st->deferred) {
    st->deferred = 0;
    nghttp2_session_resume_data(st->h->session, st->id);
  }
  h2s_schedule(st->h);
  return 0;
}

/* A response Skiff writes itself (the request never reaches the handler). */
static void h2s_reject(sk__h2s_stream_t *st, int status) {
  if (st->reject || st->dispatched || st->started) return;
  st->reject = status;
  st->reject_at = st->recv_bytes;
  sk_buf_done(&st->body);
  const char *reason = sk_http_status_text(status);
  sk_pool_t *pool = st->req->pool;
  char *text = sk_pool_printf(pool, "%d %s\n", status, reason ? reason : "");
  char *len = sk_pool_printf(pool, "%zu", strlen(text));
  sk_http_header_t hdrs[2] = {{"content-type", "text/plain; charset=utf-8"},
                              {"content-length", len}};
  if (h2s_start(st, pool, status, hdrs, 2) < 0) {
    nghttp2_submit_rst_stream(st->h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    return;
  }
  h2s_write(st, text, strlen(text));
  h2s_end(st);
}

/* ---------------- request ops (called by the core's sk_http_resp_*) ---------------- */

static sk__h2s_stream_t *h2s_req_stream(sk_http_req_t *r) {
  sk__h2s_stream_t *st = r && r->_int ? r->_int->proto : NULL;
  if (!st || !st->req || st->h->closing || st->h->gone) return NULL;
  return st;
}

static int h2s_op_start(sk_http_req_t *r, int status, const sk_http_header_t *h, size_t n) {
  sk__h2s_stream_t *st = h2s_req_stream(r);
  if (!st) return SK_ECLOSED;
  if (st->started) return SK_EINVAL;
  int rv = h2s_start(st, r->pool, status, h, n);
  if (rv == 0) r->_int->state = SK__REQ_STARTED;
  return rv;
}

static int h2s_op_write(sk_http_req_t *r, const void *d, size_t n) {
  sk__h2s_stream_t *st = h2s_req_stream(r);
  if (!st) return SK_ECLOSED;
  return h2s_write(st, d, n);
}

static int h2s_op_end(sk_http_req_t *r) {
  sk__h2s_stream_t *st = h2s_req_stream(r);
  if (!st) return SK_ECLOSED;
  int rv = h2s_end(st);
  if (rv == 0) r->_int->state = SK__REQ_ENDED;
  return rv;
}

/* The stream's data not yet framed: what flow control or a full
 * transport holds back. The connection's own write queue is shared by
 * every stream and bounded by SK__H2S_WRITE_HWM, so it is not counted. */
static size_t h2s_op_queued(const sk_http_req_t *r) {
  const sk__h2s_stream_t *st = r->_int->proto;
  if (!st || !st->req) return 0;
  return st->out.len - st->out_off;
}

static const struct sk__http_req_ops sk__h2s_req_ops = {
    .start = h2s_op_start,
    .write = h2s_op_write,
    .end = h2s_op_end,
    .queued = h2s_op_queued,
};

/* ---------------- request timeouts ---------------- */

/* A request whose header block is not complete after header_timeout_ms
 * stalls the whole connection (nothing may interleave a header block):
 * the connection goes. One whose body is not complete after
 * body_timeout_ms is answered 408 and reset; so is a client that stops
 * sending after an early answer. Requests the handler has are its own. */
static void h2s_req_timer_cb(uv_timer_t *t) {
  sk__h2s_t *h = t->data;
  if (h->closing || h->gone || !h->session) return;
  h2s_enter(h);
  uint64_t now = uv_now(t->loop);
  int pending = 0, kill = 0;
  for (sk__h2s_stream_t *st = h->streams; st; st = st->next) {
    if (st->remote_closed || st->dispatched || st->rst_sent) continue;
    uint64_t age = now - st->start_ms;
    if (!st->headers_done) {
      if (age >= h->opts->header_timeout_ms) kill = 1;
      pending = 1;
    } else if (age >= h->opts->body_timeout_ms) {
      if (!st->reject) {
        st->rst_after = 1;
        h2s_reject(st, 408);
      } else {
        st->rst_sent = 1;
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
      }
    } else {
      pending = 1;
    }
  }
  if (kill) {
    nghttp2_session_terminate_session(h->session, NGHTTP2_PROTOCOL_ERROR);
    h2s_flush(h);
    h2s_close(h, 1);
  } else {
    if (!pending) uv_timer_stop(t);
    h2s_flush(h);
  }
  h2s_leave(h);
}

static void h2s_req_timer_arm(sk__h2s_t *h) {
  if (uv_is_active((uv_handle_t *)&h->req_timer)) return;
  uint64_t tick = h->opts->header_timeout_ms < h->opts->body_timeout_ms
                      ? h->opts->header_timeout_ms
                      : h->opts->body_timeout_ms;
  tick /= 4;
  if (tick < 25) tick = 25;
  if (tick > 1000) tick = 1000;
  uv_timer_start(&h->req_timer, h2s_req_timer_cb, tick, tick);
}

/* ---------------- streams ---------------- */

static sk__h2s_stream_t *h2s_stream_new(sk__h2s_t *h, int32_t id) {
  sk__h2s_stream_t *st = sk_xcalloc(1, sizeof *st);
  st->h = h;
  st->id = id;
  sk_buf_init(&st->body);
  sk_buf_init(&st->out);
  st->content_length = -1;
  st->start_ms = uv_now(sk_conn_loop(h->hc->conn));
  st->req = sk__http_req_new(h->hc, &sk__h2s_req_ops, st);
  st->req->version = 20;
  st->next = h->streams;
  if (h->streams) h->streams->prev = st;
  h->streams = st;
  h->nstreams++;
  uv_timer_stop(&h->idle_timer);
  h2s_req_timer_arm(h);
  return st;
}

/* Frees the stream; its request is aborted when the handler has it and has
 * not ended the response, freed otherwise. */
static void h2s_stream_release(sk__h2s_stream_t *st) {
  sk__h2s_t *h = st->h;
  if (st->prev) st->prev->next = st->next;
  else h->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  h->nstreams--;
  if (h->session) nghttp2_session_set_stream_user_data(h->session, st->id, NULL);
  sk_http_req_t *r = st->req;
  st->req = NULL;
  if (r) {
    if (r->_int) r->_int->proto = NULL;
    if (st->dispatched && !st->ended) sk__http_req_abort(r);
    else sk__http_req_free(r);
  }
  sk_buf_done(&st->body);
  sk_buf_done(&st->out);
  free(st);
}

static sk__h2s_stream_t *h2s_stream_get(sk__h2s_t *h, int32_t id) {
  return nghttp2_session_get_stream_user_data(h->session, id);
}

/* END_STREAM received: hand the complete request to the core. */
static void h2s_request_complete(sk__h2s_stream_t *st) {
  st->remote_closed = 1;
  if (st->reject || st->dispatched || st->started || !st->req) return;
  sk_http_req_t *r = st->req;
  if (!r->method || (!r->target && strcmp(r->method, "CONNECT"))) {
    h2s_reject(st, 400);
    return;
  }
  if (!r->target) r->target = r->authority ? r->authority : "";
  if (r->authority && !sk_http_headers_get(&r->headers, "host"))
    sk_http_headers_add(&r->headers, r->pool, "host", r->authority);
  if (st->body.len) {
    r->body = (const uint8_t *)st->body.data;
    r->body_len = st->body.len;
  }
  st->dispatched = 1;
  sk__http_req_dispatch(r);
}

/* ---------------- nghttp2 callbacks ---------------- */

static int h2s_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sk__h2s_t *h = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  sk__h2s_stream_t *st = h2s_stream_new(h, frame->hd.stream_id);
  if (nghttp2_session_set_stream_user_data(session, st->id, st) != 0) {
    h2s_stream_release(st);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return 0;
}

static int h2s_on_header(nghttp2_session *session, const nghttp2_frame *frame,
                         const uint8_t *name, size_t namelen, const uint8_t *value,
                         size_t valuelen, uint8_t flags, void *ud) {
  sk__h2s_t *h = ud;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  sk__h2s_stream_t *st = h2s_stream_get(h, frame->hd.stream_id);
  if (!st || !st->req) return 0;
  st->hdr_bytes += namelen + valuelen + SK__H2S_HDR_OVERHEAD;
  st->nhdrs++;
  if (st->hdr_bytes > h->opts->max_header_bytes || st->nhdrs > h->opts->max_headers + 4) {
    /* keep decoding (HPACK state is shared), answer 431 at the end of the block */
    if (!st->reject) st->reject = -431;
    return 0;
  }
  if (st->reject || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers dropped */
  sk_http_req_t *r = st->req;
  const char *n = (const char *)name, *v = (const char *)value;
  if (n[0] == ':') {
    if (!strcmp(n, ":method")) r->method = sk_pool_strndup(r->pool, v, valuelen);
    else if (!strcmp(n, ":path")) r->target = sk_pool_strndup(r->pool, v, valuelen);
    else if (!strcmp(n, ":authority")) r->authority = sk_pool_strndup(r->pool, v, valuelen);
    else if (!strcmp(n, ":scheme")) {
      if (!strcmp(v, "http")) r->scheme = "http";
      else if (!strcmp(v, "https")) r->scheme = "https";
    }
    return 0;
  }
  if (!strcmp(n, "cookie")) { /* RFC 9113 8.2.3: rejoin split cookies */
    for (size_t i = 0; i < r->headers.n; i++) {
      if (!strcmp(r->headers.v[i].name, "cookie")) {
        r->headers.v[i].value = sk_pool_printf(r->pool, "%s; %s", r->headers.v[i].value, v);
        return 0;
      }
    }
  }
  if (!strcmp(n, "content-length")) {
    /* nghttp2 has checked the digits and that DATA matches */
    unsigned long long cl = strtoull(v, NULL, 10);
    st->content_length = cl > INT64_MAX ? INT64_MAX : (int64_t)cl;
    if (cl > h->opts->max_body_bytes) st->reject = -413;
  }
  sk_http_headers_add(&r->headers, r->pool, n, v);
  return 0;
}

static int h2s_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sk__h2s_t *h = ud;
  sk__h2s_stream_t *st;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
  case NGHTTP2_DATA:
    st = h2s_stream_get(h, frame->hd.stream_id);
    if (!st || !st->req) break;
    if (frame->hd.type == NGHTTP2_HEADERS) st->headers_done = 1;
    if (frame->hd.type == NGHTTP2_HEADERS && st->reject < 0) {
      int status = -st->reject;
      st->reject = 0;
      h2s_reject(st, status);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) h2s_request_complete(st);
    break;
  case NGHTTP2_PING:
    if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h->draining &&
        !memcmp(frame->ping.opaque_data, sk__h2s_drain_ping, 8))
      h2s_goaway_final(h);
    break;
  default:
    break;
  }
  return 0;
}

static int h2s_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                             const uint8_t *data, size_t len, void *ud) {
  sk__h2s_t *h = ud;
  sk__h2s_stream_t *st = h2s_stream_get(h, stream_id);
  if (!st || !st->req) return 0;
  st->recv_bytes += len;
  if (st->reject) {
    if (!st->rst_sent && st->recv_bytes - st->reject_at > SK__H2S_DISCARD_MAX) {
      st->rst_sent = 1;
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
  }
  if (st->dispatched) return 0;
  if (st->body.len + len > h->opts->max_body_bytes) {
    h2s_reject(st, 413);
    return 0;
  }
  sk_buf_append(&st->body, data, len);
  return 0;
}

static int h2s_on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *ud) {
  sk__h2s_t *h = ud;
  if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    sk__h2s_stream_t *st = h2s_stream_get(h, frame->hd.stream_id);
    /* Answered before the request was complete (413, 431): tell the client
     * to stop sending (RFC 9113 8.1), unless what it announced is little
     * enough to read and drop (some clients fail on a reset upload). */
    if (st && !st->remote_closed && !st->rst_sent &&
        (st->rst_after || (st->content_length >= 0 &&
                           (uint64_t)st->content_length - st->reject_at > SK__H2S_DISCARD_MAX))) {
      st->rst_sent = 1;
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
  }
  return 0;
}

static int h2s_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                               void *ud) {
  sk__h2s_t *h = ud;
  sk__h2s_stream_t *st = h2s_stream_get(h, stream_id);
  if (st) h2s_stream_release(st);
  return 0;
}

/* ---------------- the protocol ---------------- */

static void h2s_on_data(sk__http_conn_t *hc, const uint8_t *d, size_t n) {
  sk__h2s_t *h = hc->proto_data;
  if (!h || h->closing || h->gone || !h->session) return;
  h2s_enter(h);
  h->in_recv = 1;
  ssize_t rv = nghttp2_session_mem_recv(h->session, d, n);
  h->in_recv = 0;
  if (rv < 0) {
    /* Fatal for the session (bad preface, flooding, out of memory): the
     * session must not be used again; what is already queued still goes. */
    h2s_close(h, rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC);
    goto out;
  }
  h2s_flush(h);
out:
  h2s_leave(h);
}

static void h2s_on_close(sk__http_conn_t *hc, int err) {
  sk__h2s_t *h = hc->proto_data;
  if (!h) return;
  hc->proto_data = NULL;
  h->gone = 1;
  h->closing = 1;
  h->hc = NULL;
  if (h->busy == 0) h2s_teardown(h);
}

static void h2s_on_writable(sk__http_conn_t *hc) {
  sk__h2s_t *h = hc->proto_data;
  if (h) h2s_flush(h);
}

static void h2s_drain(sk__http_conn_t *hc) {
  sk__h2s_t *h = hc->proto_data;
  if (!h || h->draining || h->closing || h->gone) return;
  h2s_enter(h);
  h->draining = 1;
  /* RFC 9113 6.8: a GOAWAY with the largest id first, the real last
   * stream id once the client had a round trip to see it. */
  nghttp2_submit_shutdown_notice(h->session);
  nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, sk__h2s_drain_ping);
  uv_timer_start(&h->drain_timer, h2s_drain_timer_cb, SK__H2S_DRAIN_GRACE_MS, 0);
  if (h->in_recv) goto out;
  h2s_flush(h);
out:
  h2s_leave(h);
}

static const struct sk__http_proto sk__h2s_proto = {
    .name = "h2",
    .on_data = h2s_on_data,
    .on_close = h2s_on_close,
    .on_writable = h2s_on_writable,
    .drain = h2s_drain,
};

void sk__h2_server_attach(sk__http_conn_t *hc) {
  sk__h2s_t *h = sk_xcalloc(1, sizeof *h);
  h->hc = hc;
  h->opts = sk__http_server_opts(hc->srv);
  sk_buf_init(&h->wbuf);

  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) abort();
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, h2s_on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, h2s_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2s_on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2s_on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, h2s_on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2s_on_stream_close);
  nghttp2_option *opt;
  if (nghttp2_option_new(&opt) != 0) abort();
  /* headers beyond our own limit are counted in on_header; this only stops
   * nghttp2 from buffering absurd blocks before we see them */
  nghttp2_option_set_max_send_header_block_length(opt, 64 * 1024);
  if (nghttp2_session_server_new2(&h->session, cbs, h, opt) != 0) abort();
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);

  uint32_t maxs = h->opts->h2_max_concurrent_streams ? h->opts->h2_max_concurrent_streams : 100;
  uint32_t win = h->opts->h2_initial_window ? h->opts->h2_initial_window : 65535;
  if (win > NGHTTP2_MAX_WINDOW_SIZE) win = NGHTTP2_MAX_WINDOW_SIZE;
  size_t hlist = h->opts->max_header_bytes + 32 * (h->opts->max_headers + 4);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, maxs},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, win},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hlist > UINT32_MAX ? UINT32_MAX : (uint32_t)hlist},
  };
  nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
  if (win < SK__H2S_CONN_WINDOW)
    nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, SK__H2S_CONN_WINDOW);

  uv_loop_t *loop = sk_conn_loop(hc->conn);
  uv_idle_init(loop, &h->flush_idle);
  uv_timer_init(loop, &h->idle_timer);
  uv_timer_init(loop, &h->drain_timer);
  h->flush_idle.data = h->idle_timer.data = h->drain_timer.data = h;
  uv_timer_init(loop, &h->req_timer);
  h->req_timer.data = h;

  hc->proto = &sk__h2s_proto;
  hc->proto_data = h;
  h2s_schedule(h); /* our SETTINGS go out without waiting for the preface */
  h2s_idle_timer_update(h);
  if (sk__http_server_draining(hc->srv)) h2s_drain(hc);
}
