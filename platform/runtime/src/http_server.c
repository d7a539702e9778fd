/* The HTTP server core: the listener, the choice of protocol for each
 * accepted connection, the list of live connections and graceful drain,
 * plus the protocol-independent half of a request (allocation, dispatch to
 * the handler, the response state machine) and small helpers.
 *
 * Protocol choice: TLS with ALPN "h2" -> HTTP/2; TLS otherwise -> HTTP/1;
 * plaintext with h2c allowed -> the first bytes are compared with the
 * HTTP/2 client preface, and the first byte that differs means HTTP/1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h1_int.h"
#include "http_int.h"
#include "skiff/err.h"
#include "skiff/http.h"

static const char sk__h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define SK__H2_PREFACE_LEN (sizeof sk__h2_preface - 1)

/* The core's view of a connection: the shared part plus when it came. */
typedef struct sk__srv_conn {
  sk__http_conn_t hc;
  uint64_t accepted_ms;
} sk__srv_conn_t;

struct sk_http_server {
  uv_loop_t *loop;
  uv_timer_t sweep; /* closes connections that stay silent while sniffed */
  int sweep_closed;
  sk_http_server_opts_t opts; /* defaults resolved; strings owned */
  sk_listener_t *listener;
  sk_http_handler_fn fn;
  void *ud;
  sk__http_conn_t *conns;
  size_t nconns;
  int draining, freeing;
  void (*drain_cb)(sk_http_server_t *s, void *ud);
  void *drain_ud;
};

/* ---------------- helpers ---------------- */

const char *sk_http_headers_get(const sk_http_headers_t *h, const char *name) {
  if (!h || !name) return NULL;
  unsigned char c0 = sk__h1_lc((unsigned char)name[0]);
  for (size_t i = 0; i < h->n; i++) {
    const char *n = h->v[i].name;
    if (n && sk__h1_lc((unsigned char)n[0]) == c0 && !strcasecmp(n, name)) return h->v[i].value;
  }
  return NULL;
}

void sk_http_headers_add(sk_http_headers_t *h, sk_pool_t *pool, const char *name,
                         const char *value) {
  if (!h || !pool || !name) return;
  if (h->n == h->cap) {
    size_t ncap = h->cap ? h->cap * 2 : 16;
    sk_http_header_t *nv = sk_pool_alloc(pool, ncap * sizeof *nv);
    if (h->n) memcpy(nv, h->v, h->n * sizeof *nv);
    h->v = nv; /* the old array stays in the pool until it is freed */
    h->cap = ncap;
  }
  h->v[h->n].name = sk_pool_strdup(pool, name);
  h->v[h->n].value = sk_pool_strdup(pool, value ? value : "");
  h->n++;
}

const char *sk_http_status_text(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 203: return "Non-Authoritative Information";
  case 204: return "No Content";
  case 205: return "Reset Content";
  case 206: return "Partial Content";
  case 300: return "Multiple Choices";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 407: return "Proxy Authentication Required";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 421: return "Misdirected Request";
  case 422: return "Unprocessable Content";
  case 425: return "Too Early";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 451: return "Unavailable For Legal Reasons";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  case 507: return "Insufficient Storage";
  case 511: return "Network Authentication Required";
  default:
    if (status >= 100 && status < 200) return "Informational";
    if (status >= 200 && status < 300) return "Success";
    if (status >= 300 && status < 400) return "Redirection";
    if (status >= 400 && status < 500) return "Client Error";
    if (status >= 500 && status < 600) return "Server Error";
    return "Unknown";
  }
}

static int sk__lowhex(const char *s, size_t n) {
  int nonzero = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return -1;
    if (ch != '0') nonzero = 1;
  }
  return nonzero;
}

/* version "-" trace-id(32) "-" parent-id(16) "-" flags(2): 55 characters
 * for version 00. A later version may append "-..." fields; "ff" is never
 * valid. Upper-case hex and all-zero ids are rejected. */
int sk__http_traceparent_trace_id(const char *v, char out[33]) {
  if (!v) return SK_EINVAL;
  size_t n = strnlen(v, 512);
  if (n < 55) return SK_EPARSE;
  if (sk__lowhex(v, 2) < 0 || !strncmp(v, "ff", 2)) return SK_EPARSE;
  if (!strncmp(v, "00", 2) ? n != 55 : (n > 55 && v[55] != '-')) return SK_EPARSE;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return SK_EPARSE;
  if (sk__lowhex(v + 3, 32) != 1) return SK_EPARSE;
  if (sk__lowhex(v + 36, 16) != 1) return SK_EPARSE;
  if (sk__lowhex(v + 53, 2) < 0) return SK_EPARSE;
  memcpy(out, v + 3, 32);
  out[32] = 0;
  return 0;
}

void sk__http_headers_from_h1(sk_http_headers_t *hs, const sk__h1_head_t *h, sk_pool_t *pool) {
  size_t n = h->nfields, bytes = 0;
  for (size_t i = 0; i < n; i++) bytes += h->fields[i].name_len + h->fields[i].value_len + 2;
  hs->v = sk_pool_alloc(pool, (n ? n : 1) * sizeof *hs->v);
  hs->cap = n;
  hs->n = n;
  char *d = n ? sk_pool_alloc(pool, bytes) : NULL;
  for (size_t i = 0; i < n; i++) {
    const sk__h1_field_t *f = &h->fields[i];
    hs->v[i].name = d;
    memcpy(d, f->name, f->name_len);
    d += f->name_len;
    *d++ = 0;
    hs->v[i].value = d;
    memcpy(d, f->value, f->value_len);
    d += f->value_len;
    *d++ = 0;
  }
}

/* ---------------- requests ---------------- */

sk_http_req_t *sk__http_req_new(sk__http_conn_t *hc, const struct sk__http_req_ops *ops,
                                void *proto) {
  sk_pool_t *pool = sk_pool_new();
  sk_http_req_t *r = sk_pool_calloc(pool, sizeof *r);
  r->pool = pool;
  r->_int = sk_pool_calloc(pool, sizeof *r->_int);
  r->_int->ops = ops;
  r->_int->proto = proto;
  r->_int->hc = hc;
  r->_int->state = SK__REQ_HANDLER;
  r->start_ns = uv_hrtime();
  r->scheme = "http";
  r->peer_addr = "";
  if (hc) {
    r->server = hc->srv;
    if (hc->conn) {
      r->scheme = sk_conn_is_tls(hc->conn) ? "https" : "http";
      r->peer_addr = sk_pool_strdup(pool, sk_conn_peer_addr(hc->conn));
      const char *spiffe = sk_conn_peer_spiffe(hc->conn);
      if (spiffe) r->peer_spiffe = sk_pool_strdup(pool, spiffe);
    }
  }
  return r;
}

void sk__http_req_dispatch(sk_http_req_t *r) {
  if (!r) return;
  if (!r->method) r->method = "GET";
  if (!r->target) r->target = "/";
  const char *t = r->target;
  /* absolute-form (RFC 9112 3.2.2): its authority wins over Host */
  size_t skip = t[0] == '/'                     ? 0 /* origin-form, the usual case */
                : !strncasecmp(t, "http://", 7)  ? 7
                : !strncasecmp(t, "https://", 8) ? 8
                                                 : 0;
  if (skip) {
    const char *a = t + skip;
    size_t alen = strcspn(a, "/?#");
    if (alen) r->authority = sk_pool_strndup(r->pool, a, alen);
    t = a + alen;
  }
  const char *q = strchr(t, '?');
  size_t plen = q ? (size_t)(q - t) : strlen(t);
  r->query = q ? q + 1 : NULL;
  if (plen == 0) r->path = "/"; /* "http://host" or "?x" */
  else if (q || t != r->target) r->path = sk_pool_strndup(r->pool, t, plen);
  else r->path = t;
  if (!r->authority) r->authority = sk_http_headers_get(&r->headers, "host");
  const char *tp = sk_http_headers_get(&r->headers, "traceparent");
  char tid[33];
  if (tp && sk__http_traceparent_trace_id(tp, tid) == 0) r->trace_id = sk_pool_strdup(r->pool, tid);
  r->_int->dispatched = 1;
  sk_http_server_t *s = r->server;
  if (s && s->fn) s->fn(r, s->ud); /* r may be gone once the handler returns */
}

void sk__http_req_free(sk_http_req_t *r) {
  if (!r) return;
  sk_pool_free(r->pool); /* r itself lives in its pool */
}

void sk__http_req_abort(sk_http_req_t *r) {
  if (!r) return;
  struct sk__http_req_int *ri = r->_int;
  if (ri->dispatched && ri->state != SK__REQ_ENDED && ri->abort_fn) {
    sk_http_abort_fn fn = ri->abort_fn;
    ri->abort_fn = NULL;
    fn(r, ri->abort_ud);
  }
  sk__http_req_free(r);
}

void sk_http_req_on_abort(sk_http_req_t *req, sk_http_abort_fn fn, void *ud) {
  if (!req) return;
  req->_int->abort_fn = fn;
  req->_int->abort_ud = ud;
}

int sk_http_resp_start(sk_http_req_t *req, int status, const sk_http_header_t *hdrs,
                       size_t nhdrs) {
  if (!req || !req->_int->ops || req->_int->state != SK__REQ_HANDLER) return SK_EINVAL;
  if (status < 100 || status > 999 || (nhdrs && !hdrs)) return SK_EINVAL;
  int rc = req->_int->ops->start(req, status, hdrs, nhdrs);
  if (rc >= 0) req->_int->state = SK__REQ_STARTED;
  return rc;
}

int sk_http_resp_write(sk_http_req_t *req, const void *data, size_t len) {
  if (!req || req->_int->state != SK__REQ_STARTED || (len && !data)) return SK_EINVAL;
  if (len == 0) return 0;
  size_t lim = req->server ? req->server->opts.max_resp_queued_bytes : 0;
  if (lim && sk_http_resp_queued(req) >= lim) return SK_EAGAIN;
  return req->_int->ops->write(req, data, len);
}

size_t sk_http_resp_queued(const sk_http_req_t *req) {
  if (!req || !req->_int || !req->_int->ops || !req->_int->ops->queued) return 0;
  if (req->_int->state != SK__REQ_STARTED) return 0;
  return req->_int->ops->queued(req);
}

int sk_http_resp_end(sk_http_req_t *req) {
  if (!req || req->_int->state != SK__REQ_STARTED) return SK_EINVAL;
  req->_int->state = SK__REQ_ENDED; /* before end(): the protocol may free req */
  return req->_int->ops->end(req);
}

int sk_http_respond(sk_http_req_t *req, int status, const sk_http_header_t *hdrs, size_t nhdrs,
                    const void *body, size_t len) {
  if (!req || req->_int->state != SK__REQ_HANDLER || (nhdrs && !hdrs) || (len && !body))
    return SK_EINVAL;
  /* no content-length on 1xx and 204 (RFC 9110 8.6); ours replaces any given */
  int with_cl = !(status < 200 || status == 204);
  sk_http_header_t *h = sk_pool_alloc(req->pool, (nhdrs + 1) * sizeof *h);
  size_t n = 0;
  for (size_t i = 0; i < nhdrs; i++) {
    const char *hn = hdrs[i].name;
    if (hn && sk__h1_lc((unsigned char)hn[0]) == 'c' && !strcasecmp(hn, "content-length")) continue;
    h[n++] = hdrs[i];
  }
  if (with_cl) {
    char *v = sk_pool_alloc(req->pool, 21);
    v[sk__h1_u64(v, len)] = 0;
    h[n].name = "content-length";
    h[n].value = v;
    n++;
  }
  int rc = sk_http_resp_start(req, status, h, n);
  if (rc < 0) return rc;
  if (len && with_cl) { /* a whole body: not subject to max_resp_queued_bytes */
    rc = req->_int->ops->write(req, body, len);
    if (rc < 0) return rc;
  }
  return sk_http_resp_end(req);
}

int sk_http_respond_text(sk_http_req_t *req, int status, const char *content_type,
                         const char *text) {
  sk_http_header_t h = {"content-type", content_type ? content_type : "text/plain; charset=utf-8"};
  return sk_http_respond(req, status, &h, 1, text, text ? strlen(text) : 0);
}

/* ---------------- connections ---------------- */

static void sk__hc_attach(sk__http_conn_t *hc, int h2) {
  if (h2) sk__h2_server_attach(hc);
  else sk__h1_server_attach(hc);
  if (!hc->proto) {
    sk_conn_abort(hc->conn);
    return;
  }
  if (hc->srv->draining && hc->proto->drain) hc->proto->drain(hc);
}

static void sk__hc_on_data(sk_conn_t *c, const uint8_t *d, size_t n) {
  sk__http_conn_t *hc = sk_conn_get_data(c);
  if (hc->proto) {
    hc->proto->on_data(hc, d, n);
    return;
  }
  /* sniffing for the h2c prior-knowledge preface */
  size_t have = hc->sniff.len;
  size_t cmp = n < SK__H2_PREFACE_LEN - have ? n : SK__H2_PREFACE_LEN - have;
  int h2 = memcmp(d, sk__h2_preface + have, cmp) == 0;
  if (h2 && have + cmp < SK__H2_PREFACE_LEN) {
    sk_buf_append(&hc->sniff, d, n);
    return;
  }
  sk__hc_attach(hc, h2);
  if (!hc->proto) return;
  if (!hc->sniff.len) {
    hc->proto->on_data(hc, d, n);
    return;
  }
  sk_buf_t b = hc->sniff; /* everything read so far, in one piece */
  sk_buf_init(&hc->sniff);
  sk_buf_append(&b, d, n);
  hc->proto->on_data(hc, (const uint8_t *)b.data, b.len);
  sk_buf_done(&b);
}

static void sk__server_destroy(sk_http_server_t *s) {
  free((char *)s->opts.host);
  free((char *)s->opts.server_name);
  free(s);
}

static void sk__hc_on_close(sk_conn_t *c, int err) {
  sk__http_conn_t *hc = sk_conn_get_data(c);
  sk_http_server_t *s = hc->srv;
  if (hc->proto && hc->proto->on_close) hc->proto->on_close(hc, err);
  if (hc->prev) hc->prev->next = hc->next;
  else s->conns = hc->next;
  if (hc->next) hc->next->prev = hc->prev;
  sk_buf_done(&hc->sniff);
  free((sk__srv_conn_t *)hc);
  s->nconns--;
  if (s->opts.conn_gauge) __atomic_sub_fetch(s->opts.conn_gauge, 1, __ATOMIC_RELAXED);
  if (s->nconns > 0) return;
  if (s->freeing) {
    if (s->sweep_closed) sk__server_destroy(s);
    return;
  }
  if (s->draining && s->drain_cb) {
    void (*cb)(sk_http_server_t *, void *) = s->drain_cb;
    s->drain_cb = NULL;
    cb(s, s->drain_ud);
  }
}

static void sk__hc_on_drain(sk_conn_t *c) {
  sk__http_conn_t *hc = sk_conn_get_data(c);
  if (hc->proto && hc->proto->on_writable) hc->proto->on_writable(hc);
}

/* The peer half-closed: HTTP/1 still answers what it received; while
 * sniffing (an incomplete h2c preface) and on h2 the connection goes. */
static void sk__hc_on_eof(sk_conn_t *c) {
  sk__http_conn_t *hc = sk_conn_get_data(c);
  if (hc->proto && hc->proto->on_eof) hc->proto->on_eof(hc);
  else sk_conn_close(c);
}

static const sk_conn_cbs_t sk__hc_cbs = {
    .on_data = sk__hc_on_data, .on_close = sk__hc_on_close, .on_drain = sk__hc_on_drain};

/* ---------------- deferred frees ---------------- */

/* uv_close() queues handles on the loop's closing list, newest first, and
 * the loop runs the whole list in one go. A close requested now may thus
 * run before one requested earlier in the same turn; a close requested
 * from a close callback runs on the next turn, after all of them. So two
 * closes in a row, the second from the first's callback, come after every
 * close requested before the first. */
typedef struct sk__after_closes {
  uv_timer_t a, b;
  void (*fn)(void *arg);
  void *arg;
} sk__after_closes_t;

static void sk__after_closes_b(uv_handle_t *h) {
  sk__after_closes_t *ac = h->data;
  ac->fn(ac->arg);
  free(ac);
}

static void sk__after_closes_a(uv_handle_t *h) {
  sk__after_closes_t *ac = h->data;
  uv_timer_init(h->loop, &ac->b);
  ac->b.data = ac;
  uv_close((uv_handle_t *)&ac->b, sk__after_closes_b);
}

void sk__http_after_closes(uv_loop_t *loop, void (*fn)(void *arg), void *arg) {
  sk__after_closes_t *ac = sk_xcalloc(1, sizeof *ac);
  ac->fn = fn;
  ac->arg = arg;
  uv_timer_init(loop, &ac->a);
  ac->a.data = ac;
  uv_close((uv_handle_t *)&ac->a, sk__after_closes_a);
}

/* A plaintext connection must show its first bytes within the header
 * timeout, like any request head. */
static void sk__server_sweep(uv_timer_t *t) {
  sk_http_server_t *s = t->data;
  uint64_t now = uv_now(s->loop);
  int sniffing = 0;
  for (sk__http_conn_t *hc = s->conns; hc; hc = hc->next) {
    if (hc->proto) continue;
    sk__srv_conn_t *sc = (sk__srv_conn_t *)hc;
    if (now - sc->accepted_ms >= s->opts.header_timeout_ms) sk_conn_close(hc->conn);
    else sniffing = 1;
  }
  if (!sniffing) uv_timer_stop(t);
}

static void sk__server_on_accept(sk_listener_t *l, sk_conn_t *c, void *ud) {
  sk_http_server_t *s = ud;
  sk__srv_conn_t *sc = sk_xcalloc(1, sizeof *sc);
  sk__http_conn_t *hc = &sc->hc;
  sc->accepted_ms = uv_now(s->loop);
  hc->conn = c;
  hc->srv = s;
  sk_buf_init(&hc->sniff);
  hc->next = s->conns;
  if (s->conns) s->conns->prev = hc;
  s->conns = hc;
  s->nconns++;
  if (s->opts.conn_gauge) __atomic_add_fetch(s->opts.conn_gauge, 1, __ATOMIC_RELAXED);
  sk_conn_set_cbs(c, &sk__hc_cbs, hc);
  sk_conn_set_on_eof(c, sk__hc_on_eof);
  if (s->draining || s->freeing) {
    sk_conn_close(c);
    return;
  }
  if (sk_conn_is_tls(c)) {
    const char *alpn = sk_conn_alpn(c);
    sk__hc_attach(hc, alpn && !strcmp(alpn, "h2"));
  } else if (s->opts.h2c < 0) {
    sk__hc_attach(hc, 0);
  } else if (!uv_is_active((uv_handle_t *)&s->sweep)) {
    /* plaintext with h2c allowed: the first bytes decide */
    uint64_t every = s->opts.header_timeout_ms < 1000 ? s->opts.header_timeout_ms : 1000;
    uv_timer_start(&s->sweep, sk__server_sweep, every, every);
  }
}

/* ---------------- server ---------------- */

int sk_http_server_new(uv_loop_t *loop, const sk_http_server_opts_t *o, sk_http_handler_fn fn,
                       void *ud, sk_http_server_t **out) {
  if (!loop || !fn || !out) return SK_EINVAL;
  *out = NULL;
  sk_http_server_opts_t def;
  memset(&def, 0, sizeof def);
  if (!o) o = &def;
  if (o->tls && !sk_tls_ctx_is_server(o->tls)) return SK_EINVAL;
  sk_http_server_t *s = sk_xcalloc(1, sizeof *s);
  s->loop = loop;
  s->fn = fn;
  s->ud = ud;
  s->opts = *o;
  s->opts.host = sk_xstrdup(o->host && *o->host ? o->host : "127.0.0.1");
  s->opts.server_name = o->server_name ? sk_xstrdup(o->server_name) : NULL;
  s->opts.h2c = o->h2c < 0 ? -1 : 1;
  if (!s->opts.max_header_bytes) s->opts.max_header_bytes = 16384;
  if (!s->opts.max_headers) s->opts.max_headers = 100;
  if (!s->opts.max_body_bytes) s->opts.max_body_bytes = 1024 * 1024;
  if (!s->opts.header_timeout_ms) s->opts.header_timeout_ms = 10000;
  if (!s->opts.body_timeout_ms) s->opts.body_timeout_ms = 30000;
  if (!s->opts.idle_timeout_ms) s->opts.idle_timeout_ms = 60000;
  if (!s->opts.h2_max_concurrent_streams) s->opts.h2_max_concurrent_streams = 100;
  if (!s->opts.h2_initial_window) s->opts.h2_initial_window = 65535;

  sk_listener_opts_t lo = {
      .host = s->opts.host,
      .port = o->port,
      .tls = o->tls,
      .reuseport = o->reuseport,
      .handshake_timeout_ms = s->opts.header_timeout_ms,
      .alpn = o->tls ? "h2,http/1.1" : NULL,
  };
  int rc = sk_listener_new(loop, &lo, sk__server_on_accept, s, &s->listener);
  if (rc < 0) {
    sk__server_destroy(s);
    return rc;
  }
  uv_timer_init(loop, &s->sweep);
  s->sweep.data = s;
  uv_unref((uv_handle_t *)&s->sweep);
  *out = s;
  return 0;
}

int sk_http_server_port(const sk_http_server_t *s) {
  return s ? sk_listener_port(s->listener) : SK_EINVAL;
}

uv_loop_t *sk_http_server_loop(const sk_http_server_t *s) { return s ? s->loop : NULL; }

const sk_http_server_opts_t *sk__http_server_opts(const sk_http_server_t *s) {
  return s ? &s->opts : NULL;
}

int sk__http_server_draining(const sk_http_server_t *s) { return s ? s->draining : 0; }

size_t sk_http_server_conn_count(const sk_http_server_t *s) { return s ? s->nconns : 0; }

void sk_http_server_drain(sk_http_server_t *s, void (*cb)(sk_http_server_t *s, void *ud),
                          void *ud) {
  if (!s || s->freeing) return;
  s->drain_cb = cb;
  s->drain_ud = ud;
  if (!s->draining) {
    s->draining = 1;
    sk_listener_stop(s->listener);
    for (sk__http_conn_t *hc = s->conns, *next; hc; hc = next) {
      next = hc->next; /* closes complete later, but stay safe */
      if (hc->proto && hc->proto->drain) hc->proto->drain(hc);
      else if (!hc->proto) sk_conn_close(hc->conn); /* nothing received yet */
    }
  }
  if (s->nconns == 0 && s->drain_cb) {
    s->drain_cb = NULL;
    cb(s, ud);
  }
}

static void sk__server_sweep_done(void *arg) {
  sk_http_server_t *s = arg;
  s->sweep_closed = 1;
  if (s->nconns == 0) sk__server_destroy(s);
}

static void sk__server_sweep_closed(uv_handle_t *h) { sk__server_sweep_done(h->data); }

void sk_http_server_free(sk_http_server_t *s) {
  if (!s || s->freeing) return;
  s->freeing = 1;
  s->drain_cb = NULL;
  sk_listener_free(s->listener);
  s->listener = NULL;
  for (sk__http_conn_t *hc = s->conns; hc; hc = hc->next) sk_conn_abort(hc->conn);
  if (!uv_is_closing((uv_handle_t *)&s->sweep))
    uv_close((uv_handle_t *)&s->sweep, sk__server_sweep_closed);
  else /* someone else closed it (a harness walking the loop) */
    sk__http_after_closes(s->loop, sk__server_sweep_done, s);
}
