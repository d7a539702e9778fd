/* HTTP/1.1 server protocol: one request at a time per connection, read
 * with the codec in h1_parse.c, bodies buffered whole before the handler
 * runs, responses framed by content-length, chunked or (HTTP/1.0) by close.
 *
 * A connection is in one of four states: reading a head, reading a body,
 * waiting for the handler's response, or closing. Bytes that arrive while
 * the handler works (pipelined requests) stay buffered, bounded, and are
 * parsed only after the response ended. One uv timer serves the state:
 * header deadline (408), body deadline (408), keep-alive idle (silent
 * close). The timer is re-armed lazily: a change of state records the new
 * deadline and leaves an armed timer alone when it fires no later, and the
 * callback re-arms for what is left, so a keep-alive request costs no
 * timer operation at all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "h1_int.h"
#include "http_int.h"
#include "skiff/err.h"

#define H1_WRITE_HIGH (1024 * 1024)  /* stop reading above this many queued bytes */
#define H1_PIPELINE_SLACK (64 * 1024) /* buffered input beyond one head while busy */
#define H1_MAX_FIELDS_CAP 4096
/* Up to this many header fields are parsed into an array on h1_process's
 * stack instead of one kept per connection (100 fields are 3.2 KB, most of
 * an idle keep-alive connection's memory); the fields are copied into the
 * request's pool before the handler runs, so nothing refers to them later. */
#define H1_STACK_FIELDS 128

enum { S_HEAD = 0, S_BODY, S_HANDLER, S_CLOSING };
enum { T_NONE = 0, T_IDLE, T_HEADER, T_BODY };

typedef struct h1s {
  sk__http_conn_t *hc;
  sk_conn_t *conn;
  const sk_http_server_opts_t *o;
  uv_timer_t timer;
  int timer_kind;
  uint64_t due;                /* loop time (ms) when timer_kind's deadline passes */
  int state;
  sk_buf_t in;                 /* received, not yet consumed */
  sk__h1_parser_t parser;
  sk__h1_field_t *fields;      /* only when max_headers > H1_STACK_FIELDS */
  int in_process;              /* h1_process() is on the stack */
  int paused_in, paused_out;   /* reading stopped for buffering / write backpressure */
  int draining;
  int peer_eof;                /* the client half-closed: answer what came, then close */
  /* the request being read or handled */
  sk_http_req_t *req;
  int version, keep_alive, is_head;
  int body_kind;
  uint64_t body_left;
  sk__h1_chunked_t ch;
  sk_buf_t body;
  /* its response */
  int resp_nobody, resp_chunked, resp_fixed, close_after;
  uint64_t resp_left;
} h1s_t;

static void h1_process(h1s_t *s);

static const char *const h1_continue = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---------------- timers and flow control ---------------- */

static void h1_timer_cb(uv_timer_t *t);

static void h1_set_timer(h1s_t *s, int kind) {
  uint64_t ms = 0;
  if (s->timer_kind == kind) return;
  s->timer_kind = kind;
  switch (kind) {
  case T_IDLE: ms = s->o->idle_timeout_ms; break;
  case T_HEADER: ms = s->o->header_timeout_ms; break;
  case T_BODY: ms = s->o->body_timeout_ms; break;
  default: return; /* T_NONE: an armed timer finds nothing to do */
  }
  s->due = uv_now(s->timer.loop) + ms;
  if (uv_is_active((uv_handle_t *)&s->timer) && uv_timer_get_due_in(&s->timer) <= ms) return;
  uv_timer_start(&s->timer, h1_timer_cb, ms, 0);
}

static void h1_update_reading(h1s_t *s) {
  if (s->state == S_CLOSING) return;
  int want_pause = s->paused_out ||
                   (s->state == S_HANDLER && s->in.len > s->o->max_header_bytes + H1_PIPELINE_SLACK);
  if (want_pause && !s->paused_in) {
    sk_conn_read_stop(s->conn);
    s->paused_in = 1;
  } else if (!want_pause && s->paused_in) {
    s->paused_in = 0;
    sk_conn_read_start(s->conn);
  }
}

static void h1_after_write(h1s_t *s) {
  if (!s->paused_out && sk_conn_write_queued(s->conn) > H1_WRITE_HIGH) {
    s->paused_out = 1;
    h1_update_reading(s);
  }
}

/* ---------------- closing and errors ---------------- */

static void h1_drop_request(h1s_t *s) {
  if (s->req) sk__http_req_free(s->req);
  s->req = NULL;
  sk_buf_reset(&s->body);
}

static void h1_close(h1s_t *s) {
  if (s->state == S_CLOSING) return;
  s->state = S_CLOSING;
  uv_timer_stop(&s->timer);
  s->timer_kind = T_NONE;
  sk_conn_close(s->conn); /* flushes what is queued first */
}

/* Answers a request that never reached the handler, then closes. */
static void h1_fail(h1s_t *s, int status, const char *why) {
  if (s->state == S_CLOSING) return;
  char body[320], head[256];
  int bl = snprintf(body, sizeof body, "%d %s: %s\n", status, sk_http_status_text(status),
                    why ? why : "error");
  if (bl < 0) bl = 0;
  if ((size_t)bl >= sizeof body) bl = (int)sizeof body - 1;
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    "content-length: %d\r\nconnection: close\r\n\r\n",
                    status, sk_http_status_text(status), bl);
  if (s->req && s->req->_int->dispatched) {
    /* cannot happen: errors are found before dispatch */
    h1_close(s);
    return;
  }
  h1_drop_request(s);
  if (hl > 0 && (size_t)hl < sizeof head && sk_conn_write(s->conn, head, (size_t)hl) >= 0)
    sk_conn_write(s->conn, body, (size_t)bl);
  h1_close(s);
}

static void h1_timer_cb(uv_timer_t *t) {
  h1s_t *s = t->data;
  int kind = s->timer_kind;
  if (kind == T_NONE) return; /* armed again when a deadline is set */
  uint64_t now = uv_now(t->loop);
  if (now < s->due) { /* fired for an earlier deadline: wait for the rest */
    uv_timer_start(t, h1_timer_cb, s->due - now, 0);
    return;
  }
  s->timer_kind = T_NONE;
  switch (kind) {
  case T_IDLE: h1_close(s); break;
  case T_HEADER:
    if (s->in.len) h1_fail(s, 408, "timed out reading the request head");
    else h1_close(s);
    break;
  case T_BODY: h1_fail(s, 408, "timed out reading the request body"); break;
  default: break;
  }
}

/* ---------------- response ops ---------------- */

static int h1_write(h1s_t *s, const void *d, size_t n) {
  int rc = sk_conn_write(s->conn, d, n);
  if (rc >= 0) h1_after_write(s);
  return rc;
}

/* The Date value, formatted once a second per thread. */
static size_t h1_date(char out[40]) {
  static _Thread_local time_t last = -1;
  static _Thread_local char cached[40];
  static _Thread_local size_t clen;
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    clen = strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  memcpy(out, cached, clen + 1);
  return clen;
}

static int h1_parse_u64(const char *v, uint64_t *out) {
  uint64_t x = 0;
  if (!v || !*v) return -1;
  for (; *v; v++) {
    if (*v < '0' || *v > '9' || x > (UINT64_MAX - 9) / 10) return -1;
    x = x * 10 + (uint64_t)(*v - '0');
  }
  *out = x;
  return 0;
}

/* The response head is assembled with memcpy on the stack (no printf, no
 * allocation for heads up to this size) and queued with one write. */
#define H1_HEAD_STACK 2048

static int h1_start(sk_http_req_t *r, int status, const sk_http_header_t *h, size_t n) {
  h1s_t *s = r->_int->proto;
  if (s->state == S_CLOSING) return SK_ECLOSED;
  if (status < 200 || status > 999) return SK_EINVAL; /* interim responses are not offered */
  char stack[H1_HEAD_STACK];
  sk__h1_out_t b;
  sk__h1_out_init(&b, stack, sizeof stack);
  int have_date = 0, have_server = 0, rc;
  s->resp_nobody = s->is_head || status == 204 || status == 304;
  s->resp_fixed = s->resp_chunked = 0;
  s->resp_left = 0;
  if (!s->keep_alive || s->draining || sk__http_server_draining(s->hc->srv)) s->close_after = 1;
  if (s->peer_eof && s->in.len == 0) s->close_after = 1; /* nothing else will come */
  /* "HTTP/1.1 200 OK\r\n" */
  char sl[16] = "HTTP/1.1 ";
  sl[9] = (char)('0' + status / 100);
  sl[10] = (char)('0' + status / 10 % 10);
  sl[11] = (char)('0' + status % 10);
  sl[12] = ' ';
  sk__h1_out_add(&b, sl, 13);
  const char *why = sk_http_status_text(status);
  sk__h1_out_add(&b, why, strlen(why));
  SK__H1_OUT_LIT(&b, "\r\n");
  for (size_t i = 0; i < n; i++) {
    const char *name = h[i].name, *value = h[i].value ? h[i].value : "";
    long nl = sk__h1_name_len(name), vl = sk__h1_value_len(value);
    if (nl <= 0 || vl < 0) continue; /* never split */
    switch (nl) {
    case 4:
      if (sk__h1_ieq_lit(name, "date", 4)) have_date = 1;
      break;
    case 6:
      if (sk__h1_ieq_lit(name, "server", 6)) have_server = 1;
      break;
    case 10:
      if (sk__h1_ieq_lit(name, "keep-alive", 10)) continue;
      if (sk__h1_ieq_lit(name, "connection", 10)) {
        if (sk__h1_list_has(value, (size_t)vl, "close")) s->close_after = 1;
        continue;
      }
      break;
    case 14:
      if (sk__h1_ieq_lit(name, "content-length", 14)) {
        uint64_t cl;
        if (s->resp_fixed || h1_parse_u64(value, &cl) < 0) continue;
        s->resp_fixed = 1;
        s->resp_left = cl;
      }
      break;
    case 17:
      if (sk__h1_ieq_lit(name, "transfer-encoding", 17)) continue;
      break;
    default: break;
    }
    sk__h1_out_field(&b, name, (size_t)nl, value, (size_t)vl);
  }
  if (!have_date) {
    char d[40];
    size_t dl = h1_date(d);
    sk__h1_out_field(&b, "date", 4, d, dl);
  }
  if (!have_server && s->o->server_name)
    sk__h1_out_field(&b, "server", 6, s->o->server_name, strlen(s->o->server_name));
  if (s->resp_nobody) {
    if (s->is_head) s->resp_left = 0; /* the length describes the GET body */
  } else if (!s->resp_fixed) {
    if (s->version >= 11) {
      s->resp_chunked = 1;
      SK__H1_OUT_LIT(&b, "transfer-encoding: chunked\r\n");
    } else {
      s->close_after = 1; /* close-delimited */
    }
  }
  if (s->close_after) SK__H1_OUT_LIT(&b, "connection: close\r\n");
  else if (s->version < 11) SK__H1_OUT_LIT(&b, "connection: keep-alive\r\n");
  SK__H1_OUT_LIT(&b, "\r\n");
  rc = h1_write(s, b.d, b.len);
  sk__h1_out_done(&b);
  return rc < 0 ? rc : 0;
}

static int h1_resp_write(sk_http_req_t *r, const void *d, size_t n) {
  h1s_t *s = r->_int->proto;
  if (s->state == S_CLOSING) return SK_ECLOSED;
  if (s->resp_nobody || n == 0) return 0;
  if (s->resp_fixed) {
    if (n > s->resp_left) {
      /* more than announced: send what fits, then the connection must go */
      size_t fit = (size_t)s->resp_left;
      s->resp_left = 0;
      s->close_after = 1;
      if (fit) h1_write(s, d, fit);
      return SK_E2BIG;
    }
    s->resp_left -= n;
    return h1_write(s, d, n);
  }
  if (s->resp_chunked) {
    char ch[24];
    size_t hl = sk__h1_chunk_head(ch, n);
    int rc = sk_conn_write(s->conn, ch, hl);
    if (rc >= 0) rc = sk_conn_write(s->conn, d, n);
    if (rc >= 0) rc = h1_write(s, SK__H1_CRLF, 2);
    return rc;
  }
  return h1_write(s, d, n);
}

static int h1_end(sk_http_req_t *r) {
  h1s_t *s = r->_int->proto;
  int rc = 0;
  if (s->state != S_CLOSING) {
    if (s->resp_chunked) rc = h1_write(s, SK__H1_LAST_CHUNK, 5);
    else if (s->resp_fixed && s->resp_left > 0) s->close_after = 1; /* short body: framing lost */
  }
  h1_drop_request(s); /* r is gone from here */
  if (s->state == S_CLOSING) return rc;
  if (s->close_after) {
    h1_close(s);
    return rc;
  }
  s->state = S_HEAD;
  sk__h1_parser_reset(&s->parser);
  /* an idle keep-alive connection keeps no buffers (a large upload's body
   * buffer would otherwise stay with the connection) */
  sk_buf_done(&s->body);
  if (s->in.len == 0) sk_buf_done(&s->in);
  h1_set_timer(s, s->in.len ? T_HEADER : T_IDLE);
  h1_update_reading(s);
  if (!s->in_process) h1_process(s);
  return rc;
}

/* One response at a time per connection: everything queued is this one's. */
static size_t h1_queued(const sk_http_req_t *r) {
  const h1s_t *s = r->_int->proto;
  if (s->state == S_CLOSING) return 0;
  return sk_conn_write_queued(s->conn);
}

static const struct sk__http_req_ops h1_ops = {
    .start = h1_start,
    .write = h1_resp_write,
    .end = h1_end,
    .queued = h1_queued,
};

/* ---------------- reading requests ---------------- */

static void h1_dispatch(h1s_t *s) {
  sk_http_req_t *r = s->req;
  s->state = S_HANDLER;
  s->timer_kind = T_NONE; /* the timer may stay armed: it will find nothing to do */
  r->body = s->body.len ? (const uint8_t *)s->body.data : (const uint8_t *)"";
  r->body_len = s->body.len;
  sk__http_req_dispatch(r); /* may respond and end at once */
}

/* A complete head of head_len bytes is at the start of s->in. */
static void h1_begin_request(h1s_t *s, const sk__h1_head_t *hd) {
  sk_http_req_t *r = sk__http_req_new(s->hc, &h1_ops, s);
  s->req = r;
  r->method = sk_pool_strndup(r->pool, hd->method, hd->method_len);
  r->target = sk_pool_strndup(r->pool, hd->target, hd->target_len);
  r->version = hd->version;
  sk__http_headers_from_h1(&r->headers, hd, r->pool);
  s->version = hd->version;
  s->keep_alive = hd->keep_alive;
  s->is_head = hd->method_len == 4 && memcmp(hd->method, "HEAD", 4) == 0;
  s->body_kind = hd->body;
  s->body_left = hd->content_length;
  s->close_after = 0;
  sk_buf_reset(&s->body);
  int expect = hd->expect_continue;
  sk_buf_consume(&s->in, hd->head_len);

  if (s->body_kind == SK__H1_BODY_NONE) {
    h1_dispatch(s);
    return;
  }
  if (s->body_kind == SK__H1_BODY_LENGTH && s->body_left > s->o->max_body_bytes) {
    h1_fail(s, 413, "request body larger than the server accepts");
    return;
  }
  if (s->body_kind == SK__H1_BODY_CHUNKED) sk__h1_chunked_init(&s->ch);
  s->state = S_BODY;
  h1_set_timer(s, T_BODY);
  if (expect && s->in.len == 0 && h1_write(s, h1_continue, strlen(h1_continue)) < 0) h1_close(s);
}

/* Moves body bytes from s->in; dispatches when the body is complete. */
static void h1_read_body(h1s_t *s) {
  if (s->body_kind == SK__H1_BODY_LENGTH) {
    size_t take = s->in.len < s->body_left ? s->in.len : (size_t)s->body_left;
    sk_buf_append(&s->body, s->in.data, take);
    sk_buf_consume(&s->in, take);
    s->body_left -= take;
    if (s->body_left == 0) h1_dispatch(s);
    return;
  }
  size_t off = 0;
  int done = 0;
  while (off < s->in.len) {
    size_t used, dl;
    const uint8_t *d;
    int r = sk__h1_chunked_decode(&s->ch, (const uint8_t *)s->in.data + off, s->in.len - off, &used,
                                  &d, &dl);
    if (r < 0) {
      h1_fail(s, 400, s->ch.error);
      return;
    }
    off += used;
    if (dl) {
      if (s->body.len + dl > s->o->max_body_bytes) {
        h1_fail(s, 413, "request body larger than the server accepts");
        return;
      }
      sk_buf_append(&s->body, d, dl);
    }
    if (r == 1) {
      done = 1;
      break;
    }
  }
  sk_buf_consume(&s->in, off);
  if (done) h1_dispatch(s);
}

static void h1_process(h1s_t *s) {
  sk__h1_field_t stack_fields[H1_STACK_FIELDS];
  s->in_process = 1;
  for (;;) {
    if (s->state == S_HEAD) {
      if (s->draining) {
        h1_close(s);
        break;
      }
      if (s->in.len == 0) {
        if (s->peer_eof) h1_close(s); /* every request was answered */
        break;
      }
      sk__h1_head_t hd;
      s->parser.fields = s->fields ? s->fields : stack_fields;
      int r = sk__h1_parse_request(&s->parser, s->in.data, s->in.len, &hd);
      if (r == 0) {
        if (s->peer_eof) h1_close(s); /* a head that can never complete */
        else h1_set_timer(s, T_HEADER);
        break;
      }
      if (r < 0) {
        h1_fail(s, s->parser.status, s->parser.error);
        break;
      }
      h1_begin_request(s, &hd);
    } else if (s->state == S_BODY) {
      if (s->in.len > 0) h1_read_body(s);
      if (s->state == S_BODY) { /* needs more */
        if (s->peer_eof) h1_fail(s, 400, "request body cut short by the client's end of stream");
        break;
      }
    } else {
      break; /* S_HANDLER: the response decides; S_CLOSING */
    }
  }
  s->in_process = 0;
  s->parser.fields = s->fields; /* never left pointing at this stack frame */
  h1_update_reading(s);
}

/* ---------------- proto ---------------- */

static void h1_on_data(sk__http_conn_t *hc, const uint8_t *d, size_t n) {
  h1s_t *s = hc->proto_data;
  if (!s || s->state == S_CLOSING || n == 0) return;
  sk_buf_append(&s->in, d, n);
  /* a head that does not complete in this read gets the header deadline
   * from h1_process; a complete one costs no timer change */
  if (s->in_process) { /* cannot happen with libuv callbacks, but stay safe */
    if (s->state == S_HEAD && s->timer_kind == T_IDLE) h1_set_timer(s, T_HEADER);
    return;
  }
  h1_process(s);
}

static void h1_free(void *arg) {
  h1s_t *s = arg;
  sk_buf_done(&s->in);
  sk_buf_done(&s->body);
  free(s->fields);
  free(s);
}

static void h1_timer_closed(uv_handle_t *h) { h1_free(h->data); }

static void h1_on_close(sk__http_conn_t *hc, int err) {
  h1s_t *s = hc->proto_data;
  if (!s) return;
  hc->proto_data = NULL;
  s->state = S_CLOSING;
  if (s->req) {
    sk_http_req_t *r = s->req;
    s->req = NULL;
    sk__http_req_abort(r); /* runs the abort callback when dispatched, frees */
  }
  s->hc = NULL;
  s->conn = NULL;
  uv_timer_stop(&s->timer);
  if (!uv_is_closing((uv_handle_t *)&s->timer))
    uv_close((uv_handle_t *)&s->timer, h1_timer_closed);
  else /* closed by someone else (a harness walking the loop) */
    sk__http_after_closes(s->timer.loop, h1_free, s);
}

/* The client sent FIN (shutdown of its write side, HTTP/1.0 tools, nc -N).
 * Requests already received, pipelined ones included, are still answered
 * in order; the connection closes after the last one. A request cut short
 * gets nothing more (a partial head) or a 400 (a partial body). */
static void h1_on_eof(sk__http_conn_t *hc) {
  h1s_t *s = hc->proto_data;
  if (!s || s->state == S_CLOSING) return;
  s->peer_eof = 1;
  if (s->state == S_HANDLER) {
    if (s->in.len == 0) s->close_after = 1; /* in case the head is not sent yet */
    return; /* h1_end goes on with what is buffered, then closes */
  }
  if (!s->in_process) h1_process(s);
}

static void h1_on_writable(sk__http_conn_t *hc) {
  h1s_t *s = hc->proto_data;
  if (!s || !s->paused_out) return;
  s->paused_out = 0;
  h1_update_reading(s);
}

static void h1_drain(sk__http_conn_t *hc) {
  h1s_t *s = hc->proto_data;
  if (!s) return;
  s->draining = 1;
  if (s->state == S_HEAD) h1_close(s); /* idle or only a partial head */
  else s->close_after = 1;
}

static const struct sk__http_proto h1_proto = {
    .name = "http/1.1",
    .on_data = h1_on_data,
    .on_close = h1_on_close,
    .on_writable = h1_on_writable,
    .drain = h1_drain,
    .on_eof = h1_on_eof,
};

void sk__h1_server_attach(sk__http_conn_t *hc) {
  h1s_t *s = sk_xcalloc(1, sizeof *s);
  s->hc = hc;
  s->conn = hc->conn;
  s->o = sk__http_server_opts(hc->srv);
  size_t nf = s->o->max_headers;
  if (nf > H1_MAX_FIELDS_CAP) nf = H1_MAX_FIELDS_CAP;
  if (nf == 0) nf = 1;
  s->fields = nf > H1_STACK_FIELDS ? sk_xcalloc(nf, sizeof *s->fields) : NULL;
  sk__h1_parser_init(&s->parser, s->o->max_header_bytes, nf, s->fields);
  sk_buf_init(&s->in);
  sk_buf_init(&s->body);
  uv_timer_init(sk_conn_loop(hc->conn), &s->timer);
  s->timer.data = s;
  s->state = S_HEAD;
  hc->proto = &h1_proto;
  hc->proto_data = s;
  h1_set_timer(s, T_HEADER);
}
