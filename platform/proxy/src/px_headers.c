/* px_headers.c - request/response header rewriting on the way through:
 * hop-by-hop removal, x-forwarded-*, x-request-id, W3C trace context,
 * route header operations and path rewrite. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "px_int.h"

/* ASCII case-insensitive: s[0..n) against a lower-case literal of length n */
static inline int ieq_lit(const char *s, const char *lit, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((unsigned)c - 'A' < 26u) c |= 0x20;
    if (c != (unsigned char)lit[i]) return 0;
  }
  return 1;
}
#define IS(name, nl, lit) ((nl) == sizeof(lit) - 1 && ieq_lit((name), (lit), sizeof(lit) - 1))

/* The hop-by-hop fields (RFC 9110 7.6.1, plus the legacy and h2c ones),
 * by length first: one comparison for most names. */
static int hop_name(const char *name, size_t nl) {
  switch (nl) {
  case 2: return ieq_lit(name, "te", 2);
  case 7: return ieq_lit(name, "upgrade", 7) || ieq_lit(name, "trailer", 7);
  case 10: return ieq_lit(name, "connection", 10) || ieq_lit(name, "keep-alive", 10);
  case 14: return ieq_lit(name, "http2-settings", 14);
  case 16: return ieq_lit(name, "proxy-connection", 16);
  case 17: return ieq_lit(name, "transfer-encoding", 17);
  case 18: return ieq_lit(name, "proxy-authenticate", 18);
  case 19: return ieq_lit(name, "proxy-authorization", 19);
  default: return 0;
  }
}

/* Is name (nl bytes) one of the comma-separated tokens of list? */
static int in_token_list(const char *list, const char *name, size_t nl) {
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

static int is_hop(const char *name, size_t nl, const char *connection) {
  return hop_name(name, nl) || (connection && in_token_list(connection, name, nl));
}

int px_hdr_is_hop(const char *name, const char *connection) { return is_hop(name, strlen(name), connection); }

/* The Connection value as far as it names fields to drop: NULL when it
 * only holds "close" and "keep-alive" (hop-by-hop anyway), the usual case,
 * so the fields need not each be looked up in it. */
static const char *conn_fields(const char *conn) {
  for (const char *p = conn; p && *p;) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    const char *e = p;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
    size_t n = (size_t)(t - p);
    if (n && !IS(p, n, "close") && !IS(p, n, "keep-alive")) return conn;
    p = e;
  }
  return NULL;
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

/* The 8 nibbles of v as 8 lower-case hex digits, lowest nibble in the
 * lowest byte: spread one nibble per byte, then add '0', and 39 more
 * where the nibble is 10 or above ('a' - '0' - 10). */
static inline uint64_t hex8(uint32_t v32) {
  uint64_t v = v32;
  v = (v | (v << 16)) & 0x0000ffff0000ffffull;
  v = (v | (v << 8)) & 0x00ff00ff00ff00ffull;
  v = (v | (v << 4)) & 0x0f0f0f0f0f0f0f0full;
  uint64_t ge10 = ((v + 0x0606060606060606ull) >> 4) & 0x0101010101010101ull;
  return v + 0x3030303030303030ull + ge10 * 39;
}

void px_hex_random(px_rng_t *rng, char *out, size_t nhex) {
  for (size_t i = 0; i < nhex; i += 16) { /* 16 digits per 64 random bits */
    uint64_t x = px_rng_next(rng), d[2] = {hex8((uint32_t)x), hex8((uint32_t)(x >> 32))};
    memcpy(out + i, d, nhex - i < 16 ? nhex - i : 16);
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

static char *put_hex(char *p, const char *hx, size_t n) {
  memcpy(p, hx, n);
  return p + n;
}

size_t px_upstream_headers(const sk_http_req_t *req, const px_hdr_ops_t *ops, int xfcc, px_rng_t *rng,
                           sk_pool_t *pool, sk_http_header_t **out, const char **request_id, px_trace_t *trace) {
  size_t cap = req->headers.n + (ops ? ops->nadd : 0) + 7;
  sk_http_header_t *h = sk_pool_alloc(pool, cap * sizeof *h);
  size_t n = 0;
  const char *conn = conn_fields(sk_http_headers_get(&req->headers, "connection"));
  const char *xff = NULL, *rid = NULL, *xfcc_in = NULL;
  int have_trace = 0, have_ops = ops && (ops->nremove || ops->nadd);
  for (size_t i = 0; i < req->headers.n; i++) {
    const char *name = req->headers.v[i].name, *val = req->headers.v[i].value ? req->headers.v[i].value : "";
    if (!name || !*name || name[0] == ':') continue;
    size_t nl = strlen(name);
    if (is_hop(name, nl, conn)) continue;
    if (IS(name, nl, "host")) continue; /* from req->authority below */
    if (have_ops && (in_list(ops->remove, ops->nremove, name) || added(ops, name))) continue;
    if (IS(name, nl, "x-forwarded-for")) {
      if (!xff) xff = val; /* joined below */
      continue;
    }
    if (IS(name, nl, "x-forwarded-proto")) continue;
    if (IS(name, nl, "x-forwarded-client-cert")) {
      /* kept only when forwarding; several fields are joined below */
      if (xfcc == PX_XFCC_FORWARD || xfcc == PX_XFCC_APPEND_FORWARD)
        xfcc_in = xfcc_in ? sk_pool_printf(pool, "%s,%s", xfcc_in, val) : val;
      continue;
    }
    if (IS(name, nl, "x-request-id")) {
      if (!rid && valid_request_id(val)) rid = val;
      continue;
    }
    if (IS(name, nl, "traceparent")) {
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
  const char *me = (xfcc == PX_XFCC_APPEND_FORWARD || xfcc == PX_XFCC_SANITIZE_SET) && req->peer_spiffe &&
                           *req->peer_spiffe
                       ? sk_pool_printf(pool, "URI=%s", req->peer_spiffe)
                       : NULL;
  if (xfcc_in && me) h[n++] = (sk_http_header_t){"x-forwarded-client-cert", sk_pool_printf(pool, "%s,%s", xfcc_in, me)};
  else if (xfcc_in || me) h[n++] = (sk_http_header_t){"x-forwarded-client-cert", xfcc_in ? xfcc_in : me};
  if (!rid) {
    /* a version 4 UUID: 8-4-4-4-12 hex digits, version nibble 4, variant 10xx */
    char hx[33];
    px_hex_random(rng, hx, 32);
    char *u = sk_pool_alloc(pool, 37), *p = u;
    p = put_hex(p, hx, 8);
    *p++ = '-';
    p = put_hex(p, hx + 8, 4);
    *p++ = '-';
    *p++ = '4';
    p = put_hex(p, hx + 12, 3);
    *p++ = '-';
    *p++ = "89ab"[hx[15] & 3];
    p = put_hex(p, hx + 16, 3);
    *p++ = '-';
    p = put_hex(p, hx + 20, 12);
    *p = 0;
    rid = u;
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
  /* "00-" trace-id "-" parent-id "-" flags */
  char *tp = sk_pool_alloc(pool, 56), *p = tp;
  memcpy(p, "00-", 3);
  p = put_hex(p + 3, trace->trace_id, 32);
  *p++ = '-';
  p = put_hex(p, trace->parent_id, 16);
  *p++ = '-';
  p = put_hex(p, trace->flags, 2);
  *p = 0;
  h[n++] = (sk_http_header_t){"traceparent", tp};
  for (size_t i = 0; ops && i < ops->nadd; i++) h[n++] = ops->add[i];
  *out = h;
  return n;
}

size_t px_downstream_headers(const sk_http_headers_t *in, const px_hdr_ops_t *ops, sk_pool_t *pool,
                             sk_http_header_t **out) {
  size_t cap = in->n + (ops ? ops->nadd : 0) + 1;
  sk_http_header_t *h = sk_pool_alloc(pool, cap * sizeof *h);
  size_t n = 0;
  const char *conn = conn_fields(sk_http_headers_get(in, "connection"));
  int have_ops = ops && (ops->nremove || ops->nadd);
  for (size_t i = 0; i < in->n; i++) {
    const char *name = in->v[i].name;
    if (!name || !*name || name[0] == ':') continue;
    size_t nl = strlen(name);
    if (is_hop(name, nl, conn) || IS(name, nl, "content-length")) continue;
    if (have_ops && (in_list(ops->remove, ops->nremove, name) || added(ops, name))) continue;
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
