/* px_headers.c - request/response header rewriting on the way through:
 * hop-by-hop removal, x-forwarded-*, x-request-id, W3C trace context,
 * route header operations and path rewrite. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "px_int.h"

static const char *const hop[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
                                  "te", "trailer", "proxy-authenticate", "proxy-authorization", "http2-settings",
                                  NULL};

/* Is name one of the comma-separated tokens of list? */
static int in_token_list(const char *list, const char *name) {
  size_t nl = strlen(name);
  const char *p = list;
  while (p && *p) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
    if ((size_t)(t - p) == nl && !strncasecmp(p, name, nl)) return 1;
    p = e;
  }
  return 0;
}

int px_hdr_is_hop(const char *name, const char *connection) {
  for (size_t i = 0; hop[i]; i++)
    if (!strcasecmp(name, hop[i])) return 1;
  return connection && in_token_list(connection, name);
}

static int in_list(char *const *v, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcasecmp(v[i], name)) return 1;
  return 0;
}

static int added(const px_hdr_ops_t *ops, const char *name) {
  for (size_t i = 0; ops && i < ops->nadd; i++)
    if (!strcasecmp(ops->add[i].name, name)) return 1;
  return 0;
}

void px_hex_random(px_rng_t *rng, char *out, size_t nhex) {
  static const char hx[] = "0123456789abcdef";
  uint64_t x = 0;
  for (size_t i = 0; i < nhex; i++) {
    if (i % 16 == 0) x = px_rng_next(rng);
    out[i] = hx[x & 15];
    x >>= 4;
  }
  out[nhex] = 0;
}

static int all_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static int all_zero(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != '0') return 0;
  return 1;
}

/* version "00" form: 2-32-16-2 lower-case hex with dashes (later versions
 * may append fields; the first 55 characters are read the same way). */
static int parse_traceparent(const char *v, px_trace_t *t) {
  size_t n = strlen(v);
  if (n < 55 || (n > 55 && (v[55] != '-' || !strncmp(v, "00", 2)))) return -1;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return -1;
  if (!all_hex(v, 2) || !strncmp(v, "ff", 2) || !all_hex(v + 3, 32) || !all_hex(v + 36, 16) ||
      !all_hex(v + 53, 2))
    return -1;
  if (all_zero(v + 3, 32) || all_zero(v + 36, 16)) return -1;
  memcpy(t->trace_id, v + 3, 32);
  t->trace_id[32] = 0;
  memcpy(t->flags, v + 53, 2);
  t->flags[2] = 0;
  return 0;
}

static int valid_request_id(const char *v) {
  size_t n = strlen(v);
  if (n == 0 || n > 128) return 0;
  for (size_t i = 0; i < n; i++)
    if (!isgraph((unsigned char)v[i])) return 0;
  return 1;
}

/* "1.2.3.4:5678" -> "1.2.3.4", "[::1]:5678" -> "::1" */
static const char *peer_ip(const char *peer, sk_pool_t *pool) {
  if (!peer) return NULL;
  if (*peer == '[') {
    const char *e = strchr(peer, ']');
    return e ? sk_pool_strndup(pool, peer + 1, (size_t)(e - peer - 1)) : peer;
  }
  const char *c = strrchr(peer, ':');
  return c ? sk_pool_strndup(pool, peer, (size_t)(c - peer)) : peer;
}

size_t px_upstream_headers(const sk_http_req_t *req, const px_hdr_ops_t *ops, px_rng_t *rng, sk_pool_t *pool,
                           sk_http_header_t **out, const char **request_id, px_trace_t *trace) {
  size_t cap = req->headers.n + (ops ? ops->nadd : 0) + 6;
  sk_http_header_t *h = sk_pool_alloc(pool, cap * sizeof *h);
  size_t n = 0;
  const char *conn = sk_http_headers_get(&req->headers, "connection");
  const char *xff = NULL, *rid = NULL;
  int have_trace = 0;
  for (size_t i = 0; i < req->headers.n; i++) {
    const char *name = req->headers.v[i].name, *val = req->headers.v[i].value ? req->headers.v[i].value : "";
    if (!name || !*name || name[0] == ':') continue;
    if (px_hdr_is_hop(name, conn)) continue;
    if (!strcasecmp(name, "host")) continue; /* from req->authority below */
    if (ops && (in_list(ops->remove, ops->nremove, name) || added(ops, name))) continue;
    if (!strcasecmp(name, "x-forwarded-for")) {
      if (!xff) xff = val; /* joined below */
      continue;
    }
    if (!strcasecmp(name, "x-forwarded-proto")) continue;
    if (!strcasecmp(name, "x-request-id")) {
      if (!rid && valid_request_id(val)) rid = val;
      continue;
    }
    if (!strcasecmp(name, "traceparent")) {
      if (!have_trace && parse_traceparent(val, trace) == 0) have_trace = 1;
      continue;
    }
    h[n++] = req->headers.v[i];
  }
  if (req->authority) h[n++] = (sk_http_header_t){"host", req->authority};
  const char *ip = peer_ip(req->peer_addr, pool);
  if (ip) h[n++] = (sk_http_header_t){"x-forwarded-for", xff ? sk_pool_printf(pool, "%s, %s", xff, ip) : ip};
  else if (xff) h[n++] = (sk_http_header_t){"x-forwarded-for", xff};
  h[n++] = (sk_http_header_t){"x-forwarded-proto", req->scheme ? req->scheme : "http"};
  if (!rid) {
    char u[37];
    char hx[33];
    px_hex_random(rng, hx, 32);
    /* a version 4 UUID */
    snprintf(u, sizeof u, "%.8s-%.4s-4%.3s-%c%.3s-%.12s", hx, hx + 8, hx + 12, "89ab"[hx[15] & 3], hx + 16,
             hx + 20);
    rid = sk_pool_strdup(pool, u);
  }
  h[n++] = (sk_http_header_t){"x-request-id", rid};
  *request_id = rid;
  if (!have_trace) {
    px_hex_random(rng, trace->trace_id, 32);
    if (all_zero(trace->trace_id, 32)) trace->trace_id[0] = '1';
    memcpy(trace->flags, "01", 3);
  }
  px_hex_random(rng, trace->parent_id, 16);
  if (all_zero(trace->parent_id, 16)) trace->parent_id[0] = '1';
  h[n++] = (sk_http_header_t){"traceparent",
                              sk_pool_printf(pool, "00-%s-%s-%s", trace->trace_id, trace->parent_id, trace->flags)};
  for (size_t i = 0; ops && i < ops->nadd; i++) h[n++] = ops->add[i];
  *out = h;
  return n;
}

size_t px_downstream_headers(const sk_http_headers_t *in, const px_hdr_ops_t *ops, sk_pool_t *pool,
                             sk_http_header_t **out) {
  size_t cap = in->n + (ops ? ops->nadd : 0) + 1;
  sk_http_header_t *h = sk_pool_alloc(pool, cap * sizeof *h);
  size_t n = 0;
  const char *conn = sk_http_headers_get(in, "connection");
  for (size_t i = 0; i < in->n; i++) {
    const char *name = in->v[i].name;
    if (!name || !*name || name[0] == ':') continue;
    if (px_hdr_is_hop(name, conn) || !strcasecmp(name, "content-length")) continue;
    if (ops && (in_list(ops->remove, ops->nremove, name) || added(ops, name))) continue;
    h[n++] = in->v[i];
  }
  for (size_t i = 0; ops && i < ops->nadd; i++) h[n++] = ops->add[i];
  *out = h;
  return n;
}

const char *px_rewrite_target(const px_route_t *rt, const sk_http_req_t *req, sk_pool_t *pool) {
  const char *q = req->query;
  if (rt->rewrite_path)
    return q ? sk_pool_printf(pool, "%s?%s", rt->rewrite_path, q) : rt->rewrite_path;
  if (rt->rewrite_prefix && rt->match.path.kind == PX_SM_PREFIX) {
    const char *rest = req->path + (strlen(req->path) >= rt->match.path.len ? rt->match.path.len : strlen(req->path));
    /* "/api" -> "/" on "/api/x": avoid a doubled slash */
    const char *pre = rt->rewrite_prefix;
    size_t pl = strlen(pre);
    if (pl && pre[pl - 1] == '/' && rest[0] == '/') rest++;
    if (!pre[0] && rest[0] != '/') pre = "/";
    return q ? sk_pool_printf(pool, "%s%s?%s", pre, rest, q) : sk_pool_printf(pool, "%s%s", pre, rest);
  }
  return req->target;
}
