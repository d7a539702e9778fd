/* px_route.c - route matching: first match wins, in the listener's order. */
#include <string.h>
#include <strings.h>

#include "px_int.h"

int px_query_get(const char *q, const char *name, char *out, size_t outlen) {
  size_t nl = strlen(name);
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t len = amp ? (size_t)(amp - q) : strlen(q);
    const char *eq = memchr(q, '=', len);
    size_t kl = eq ? (size_t)(eq - q) : len;
    if (kl == nl && !memcmp(q, name, nl)) {
      if (out && outlen) {
        size_t vl = eq ? len - kl - 1 : 0;
        if (vl >= outlen) vl = outlen - 1;
        if (vl) memcpy(out, eq + 1, vl);
        out[vl] = 0;
      }
      return 1;
    }
    q = amp ? amp + 1 : NULL;
  }
  return 0;
}

static int str_match(const px_str_match_t *m, const char *v) {
  switch (m->kind) {
  case PX_SM_EXACT: return m->value && !strcmp(v, m->value);
  case PX_SM_PREFIX: return m->value && !strncmp(v, m->value, m->len);
  case PX_SM_REGEX: return m->has_re && regexec(&m->re, v, 0, NULL, 0) == 0;
  case PX_SM_PRESENT: return 1;
  default: return 0;
  }
}

/* authority without the port, compared case-insensitively */
static int host_match(const px_match_t *m, const char *authority) {
  if (!m->host) return 1;
  if (!authority) return 0;
  const char *a = authority;
  size_t n;
  if (*a == '[') {
    const char *close = strchr(a, ']');
    if (!close) return 0;
    n = (size_t)(close - a) + 1;
  } else {
    const char *colon = strchr(a, ':');
    n = colon ? (size_t)(colon - a) : strlen(a);
  }
  if (m->host_wild) {
    size_t sl = strlen(m->host) - 1; /* ".example.com" */
    return n > sl && !strncasecmp(a + n - sl, m->host + 1, sl);
  }
  return strlen(m->host) == n && !strncasecmp(a, m->host, n);
}

int px_route_matches(const px_route_t *rt, const px_match_req_t *r) {
  const px_match_t *m = &rt->match;
  if (!host_match(m, r->authority)) return 0;
  if (m->has_path && !str_match(&m->path, r->path ? r->path : "")) return 0;
  if (m->has_spiffe && !(r->spiffe && str_match(&m->spiffe, r->spiffe))) return 0;
  if (m->nmethods) {
    int ok = 0;
    for (size_t i = 0; i < m->nmethods && !ok; i++) ok = !strcmp(m->methods[i], r->method ? r->method : "");
    if (!ok) return 0;
  }
  for (size_t i = 0; i < m->nheaders; i++) {
    const px_kv_match_t *k = &m->headers[i];
    const char *v = r->headers ? sk_http_headers_get(r->headers, k->name) : NULL;
    if (k->m.kind == PX_SM_ABSENT) {
      if (v) return 0;
      continue;
    }
    if (!v || !str_match(&k->m, v)) return 0;
  }
  for (size_t i = 0; i < m->nquery; i++) {
    const px_kv_match_t *k = &m->query[i];
    char buf[1024];
    int present = px_query_get(r->query, k->name, buf, sizeof buf);
    if (k->m.kind == PX_SM_ABSENT) {
      if (present) return 0;
      continue;
    }
    if (!present || !str_match(&k->m, buf)) return 0;
  }
  return 1;
}

const px_route_t *px_route_match(const px_config_t *c, const px_listener_t *l, const px_match_req_t *r) {
  if (!c) return NULL;
  if (l && l->routes) {
    for (size_t i = 0; i < l->nroutes; i++) {
      const px_route_t *rt = &c->routes[l->routes[i]];
      if (px_route_matches(rt, r)) return rt;
    }
    return NULL;
  }
  for (size_t i = 0; i < c->nroutes; i++)
    if (px_route_matches(&c->routes[i], r)) return &c->routes[i];
  return NULL;
}
