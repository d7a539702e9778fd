/* HTTP/1.1 client connection: one exchange at a time on a keep-alive
 * connection owned by the pool in http_client.c. Responses framed by
 * content-length, chunked or connection close; 1xx interim responses are
 * skipped; bodies are buffered up to the client's max_body_bytes, or, for
 * a streaming request, handed to it piece by piece as read. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h1_int.h"
#include "http_int.h"
#include "skiff/err.h"

#define H1C_MAX_HEAD (64 * 1024)
#define H1C_MAX_FIELDS 256
#define H1C_HEAD_STACK 2048 /* request heads up to this size are built on the stack */

enum { C_IDLE = 0, C_HEAD, C_BODY, C_CLOSING, C_DEAD };

struct sk__h1_client {
  sk_http_client_t *cl;
  sk_conn_t *conn;
  void (*on_idle)(sk__h1_client_t *h, void *ud);
  void (*on_gone)(sk__h1_client_t *h, void *ud);
  void *ud;
  uv_timer_t idle;    /* re-armed lazily: see h1c_idle_cb */
  uint64_t idle_since; /* loop time (ms) the connection last went idle */
  int state;
  sk__http_creq_t *cur;
  int is_head, req_close;
  unsigned exchanges; /* completed on this connection */
  sk_buf_t in;
  sk__h1_parser_t parser;
  sk__h1_field_t fields[H1C_MAX_FIELDS];
  sk_http_resp_t *resp;
  int body_kind, keep_alive;
  uint64_t body_left;
  sk__h1_chunked_t ch;
  sk_buf_t body;
  size_t max_body;
};

static void h1c_close_conn(sk__h1_client_t *h, int abort_it) {
  if (h->state >= C_CLOSING) return;
  h->state = C_CLOSING;
  uv_timer_stop(&h->idle);
  if (abort_it) sk_conn_abort(h->conn);
  else sk_conn_close(h->conn);
}

/* Detaches the request in flight and completes it. */
static void h1c_complete(sk__h1_client_t *h, int err, sk_http_resp_t *resp) {
  sk__http_creq_t *r = h->cur;
  if (!r) return;
  h->cur = NULL;
  r->cancel = NULL;
  r->proto = NULL;
  sk__http_creq_complete(r, err, resp);
}

static void h1c_fail(sk__h1_client_t *h, int err) {
  h1c_close_conn(h, 1);
  h1c_complete(h, err, NULL);
}

/* The idle timer is left armed while a request runs and when the
 * connection goes idle again; it only counts once it fires. */
static void h1c_idle_cb(uv_timer_t *t) {
  sk__h1_client_t *h = t->data;
  if (h->state != C_IDLE) return; /* busy: armed again when it next goes idle */
  uint64_t ms = sk__http_client_idle_ms(h->cl), idle = uv_now(t->loop) - h->idle_since;
  if (idle < ms) {
    uv_timer_start(t, h1c_idle_cb, ms - idle, 0);
    return;
  }
  h1c_close_conn(h, 0);
}

static void h1c_finish(sk__h1_client_t *h) {
  sk_http_resp_t *resp = h->resp;
  sk__http_creq_t *r = h->cur;
  uint8_t *b = sk_pool_alloc(r->pool, h->body.len + 1);
  if (h->body.len) memcpy(b, h->body.data, h->body.len);
  b[h->body.len] = 0;
  resp->body = b;
  resp->body_len = h->body.len;
  h->resp = NULL;
  h->exchanges++;
  sk_buf_reset(&h->body);
  int keep = h->keep_alive && !h->req_close && h->in.len == 0 && h->state == C_BODY;
  if (keep) {
    h->state = C_IDLE;
    h->idle_since = uv_now(h->idle.loop);
    if (!uv_is_active((uv_handle_t *)&h->idle)) /* else it fires earlier and re-arms */
      uv_timer_start(&h->idle, h1c_idle_cb, sk__http_client_idle_ms(h->cl), 0);
  } else {
    h1c_close_conn(h, 0);
  }
  h->cur = NULL;
  r->cancel = NULL;
  r->proto = NULL;
  if (keep) h->on_idle(h, h->ud); /* the pool may send the next request now */
  sk__http_creq_complete(r, 0, resp);
}

static int h1c_body_add(sk__h1_client_t *h, const void *d, size_t n) {
  sk__http_creq_t *r = h->cur;
  if (sk__http_creq_streaming(r)) { /* handed over, not kept */
    sk__http_creq_data(r, d, n);
    return h->cur == r && h->state == C_BODY ? 0 : -1;
  }
  if (h->body.len + n > h->max_body) {
    h1c_fail(h, SK_E2BIG);
    return -1;
  }
  sk_buf_append(&h->body, d, n);
  return 0;
}

static void h1c_process(sk__h1_client_t *h) {
  while (h->cur && (h->state == C_HEAD || h->state == C_BODY)) {
    if (h->state == C_HEAD) {
      sk__h1_head_t hd;
      int r = sk__h1_parse_response(&h->parser, h->in.data, h->in.len, h->is_head, &hd);
      if (r == 0) return;
      if (r < 0) {
        h1c_fail(h, SK_EPROTO);
        return;
      }
      if (hd.status < 200) {
        if (hd.status == 101) { /* no upgrades offered, none accepted */
          h1c_fail(h, SK_EPROTO);
          return;
        }
        sk_buf_consume(&h->in, hd.head_len);
        sk__h1_parser_reset(&h->parser);
        continue;
      }
      sk_pool_t *pool = h->cur->pool;
      sk_http_resp_t *resp = sk_pool_calloc(pool, sizeof *resp);
      resp->pool = pool;
      resp->status = hd.status;
      resp->version = hd.version;
      sk__http_headers_from_h1(&resp->headers, &hd, pool);
      h->resp = resp;
      h->body_kind = hd.body;
      h->body_left = hd.content_length;
      h->keep_alive = hd.keep_alive;
      sk_buf_reset(&h->body);
      sk_buf_consume(&h->in, hd.head_len);
      if (hd.body == SK__H1_BODY_LENGTH && hd.content_length > h->max_body &&
          !sk__http_creq_streaming(h->cur)) {
        h1c_fail(h, SK_E2BIG);
        return;
      }
      if (hd.body == SK__H1_BODY_CHUNKED) sk__h1_chunked_init(&h->ch);
      h->state = C_BODY;
      if (sk__http_creq_streaming(h->cur)) {
        sk__http_creq_t *sr = h->cur;
        sk__http_creq_head(sr, resp);
        if (h->cur != sr || h->state != C_BODY) return; /* canceled */
      }
      if (hd.body == SK__H1_BODY_NONE) {
        h1c_finish(h);
        return;
      }
      continue;
    }
    /* C_BODY */
    if (h->body_kind == SK__H1_BODY_LENGTH) {
      size_t take = h->in.len < h->body_left ? h->in.len : (size_t)h->body_left;
      if (h1c_body_add(h, h->in.data, take) < 0) return;
      sk_buf_consume(&h->in, take);
      h->body_left -= take;
      if (h->body_left == 0) h1c_finish(h);
      return;
    }
    if (h->body_kind == SK__H1_BODY_CLOSE) {
      if (h1c_body_add(h, h->in.data, h->in.len) < 0) return;
      sk_buf_reset(&h->in);
      return;
    }
    size_t off = 0;
    while (off < h->in.len) {
      size_t used, dl;
      const uint8_t *d;
      int r = sk__h1_chunked_decode(&h->ch, (const uint8_t *)h->in.data + off, h->in.len - off,
                                    &used, &d, &dl);
      if (r < 0) {
        h1c_fail(h, SK_EPROTO);
        return;
      }
      off += used;
      if (dl && h1c_body_add(h, d, dl) < 0) return;
      if (r == 1) {
        sk_buf_consume(&h->in, off);
        h1c_finish(h);
        return;
      }
    }
    sk_buf_consume(&h->in, off);
    return;
  }
}

static void h1c_on_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  sk__h1_client_t *h = sk_conn_get_data(c);
  if (!h || h->state >= C_CLOSING) return;
  if (h->state == C_IDLE || !h->cur) { /* nothing was asked */
    h1c_close_conn(h, 1);
    return;
  }
  sk_buf_append(&h->in, d, n);
  h1c_process(h);
}

static void h1c_freed(uv_handle_t *t) {
  sk__h1_client_t *h = t->data;
  sk_buf_done(&h->in);
  sk_buf_done(&h->body);
  free(h);
}

static int h1c_idempotent(const sk__http_creq_t *r) {
  static const char *const m[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
    if (!strcmp(r->method, m[i])) return 1;
  return 0;
}

static void h1c_on_close(sk_conn_t *c, int err) {
  sk__h1_client_t *h = sk_conn_get_data(c);
  if (!h) return;
  int was = h->state;
  h->state = C_DEAD;
  h->conn = NULL;
  if (h->cur) {
    if (was == C_BODY && h->body_kind == SK__H1_BODY_CLOSE && (err == 0 || err == SK_ECLOSED)) {
      h->state = C_BODY; /* finish reads it: complete, no reuse */
      h->keep_alive = 0;
      h1c_finish(h);
      h->state = C_DEAD;
    } else if (was == C_HEAD && h->exchanges > 0 && h->in.len == 0 && h1c_idempotent(h->cur)) {
      /* a reused connection the server had already given up on: the
       * request was not processed, so it may go again (RFC 9112 9.3.1) */
      sk__http_creq_t *r = h->cur;
      h->cur = NULL;
      sk__http_client_requeue(h->cl, r);
    } else {
      int e = err == 0 || err == SK_ECLOSED ? SK_ECONNRESET : err;
      h1c_complete(h, e, NULL);
    }
  }
  h->on_gone(h, h->ud);
  uv_timer_stop(&h->idle);
  uv_close((uv_handle_t *)&h->idle, h1c_freed);
}

static void h1c_cancel(sk__http_creq_t *r) {
  sk__h1_client_t *h = r->proto;
  r->cancel = NULL;
  r->proto = NULL;
  if (!h || h->cur != r) return;
  h->cur = NULL;
  h1c_close_conn(h, 1); /* the exchange is half done: the connection cannot be reused */
}

static const sk_conn_cbs_t h1c_cbs = {.on_data = h1c_on_data, .on_close = h1c_on_close};

sk__h1_client_t *sk__h1_client_new(sk_conn_t *c, sk_http_client_t *cl,
                                   void (*on_idle)(sk__h1_client_t *h, void *ud),
                                   void (*on_gone)(sk__h1_client_t *h, void *ud), void *ud) {
  sk__h1_client_t *h = sk_xcalloc(1, sizeof *h);
  h->cl = cl;
  h->conn = c;
  h->on_idle = on_idle;
  h->on_gone = on_gone;
  h->ud = ud;
  h->max_body = sk__http_client_max_body(cl);
  sk_buf_init(&h->in);
  sk_buf_init(&h->body);
  sk__h1_parser_init(&h->parser, H1C_MAX_HEAD, H1C_MAX_FIELDS, h->fields);
  uv_timer_init(sk_conn_loop(c), &h->idle);
  h->idle.data = h;
  h->state = C_IDLE;
  sk_conn_set_cbs(c, &h1c_cbs, h);
  return h;
}

int sk__h1_client_submit(sk__h1_client_t *h, sk__http_creq_t *r) {
  if (!h || h->state >= C_CLOSING) return SK_ECLOSED;
  if (h->state != C_IDLE || h->cur) return SK_EBUSY;
  char stack[H1C_HEAD_STACK];
  sk__h1_out_t b;
  sk__h1_out_init(&b, stack, sizeof stack);
  int have_host = 0;
  h->req_close = 0;
  size_t ml = strlen(r->method), pl = strlen(r->path);
  sk__h1_out_add(&b, r->method, ml);
  SK__H1_OUT_LIT(&b, " ");
  sk__h1_out_add(&b, r->path, pl);
  SK__H1_OUT_LIT(&b, " HTTP/1.1\r\n");
  for (size_t i = 0; i < r->headers.n; i++) {
    const char *n = r->headers.v[i].name, *v = r->headers.v[i].value;
    long nl = sk__h1_name_len(n), vl = sk__h1_value_len(v);
    if (nl <= 0 || vl < 0) continue;
    if (nl == 14 && sk__h1_ieq_lit(n, "content-length", 14)) continue;
    if (nl == 17 && sk__h1_ieq_lit(n, "transfer-encoding", 17)) continue;
    if (nl == 4 && sk__h1_ieq_lit(n, "host", 4)) have_host = 1;
    if (nl == 10 && sk__h1_ieq_lit(n, "connection", 10) && sk__h1_list_has(v, (size_t)vl, "close"))
      h->req_close = 1;
    sk__h1_out_field(&b, n, (size_t)nl, v, (size_t)vl);
  }
  if (!have_host && r->authority) sk__h1_out_field(&b, "host", 4, r->authority, strlen(r->authority));
  int needs_len = r->body_len || (ml == 4 && !memcmp(r->method, "POST", 4)) ||
                  (ml == 3 && !memcmp(r->method, "PUT", 3)) || (ml == 5 && !memcmp(r->method, "PATCH", 5));
  if (needs_len) {
    char num[20];
    sk__h1_out_field(&b, "content-length", 14, num, sk__h1_u64(num, r->body_len));
  }
  SK__H1_OUT_LIT(&b, "\r\n");
  int rc = sk_conn_write(h->conn, b.d, b.len);
  sk__h1_out_done(&b);
  if (rc >= 0 && r->body_len) rc = sk_conn_write(h->conn, r->body, r->body_len);
  if (rc < 0) return rc;
  h->cur = r;
  h->is_head = ml == 4 && !memcmp(r->method, "HEAD", 4);
  h->state = C_HEAD;
  sk__h1_parser_reset(&h->parser);
  r->proto = h;
  r->cancel = h1c_cancel;
  return 0;
}

void sk__h1_client_close(sk__h1_client_t *h) {
  if (!h) return;
  h1c_close_conn(h, h->cur != NULL);
  h1c_complete(h, SK_ECANCELED, NULL);
}
