/* admin.c - the admin listener: health, readiness, metrics and the routes
 * a daemon adds, on one small HTTP server. */
#include "skiff/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/mem.h"

struct sk_admin_route {
  char *method;
  char *path;
  sk_http_handler_fn fn;
  void *ud;
  int builtin;
  int open; /* answers clients without a verified certificate under TLS */
};

struct sk_admin {
  uv_loop_t *loop;
  sk_http_server_t *srv;
  sk_tls_ctx_t *tls;
  sk_metrics_t *reg;
  char *daemon;
  int ready;
  int draining;
  struct sk_admin_route routes[SK_ADMIN_MAX_ROUTES];
  size_t nroutes;
  void (*drain_cb)(sk_admin_t *a, void *ud);
  void *drain_ud;
};

#define TEXT_PLAIN "text/plain; charset=utf-8"

static void h_healthz(sk_http_req_t *req, void *ud) {
  sk_http_respond_text(req, 200, TEXT_PLAIN, "ok\n");
}

static void h_readyz(sk_http_req_t *req, void *ud) {
  sk_admin_t *a = ud;
  if (a->draining)
    sk_http_respond_text(req, 503, TEXT_PLAIN, "draining\n");
  else if (!a->ready)
    sk_http_respond_text(req, 503, TEXT_PLAIN, "not ready\n");
  else
    sk_http_respond_text(req, 200, TEXT_PLAIN, "ready\n");
}

static void h_metrics(sk_http_req_t *req, void *ud) {
  sk_admin_t *a = ud;
  sk_buf_t b;
  sk_buf_init(&b);
  if (sk_metrics_render(a->reg, &b) < 0) {
    sk_http_respond_text(req, 500, TEXT_PLAIN, "metrics unavailable\n");
  } else {
    const sk_http_header_t h[] = {{"content-type", SK_METRICS_CONTENT_TYPE}};
    sk_http_respond(req, 200, h, 1, b.data, b.len);
  }
  sk_buf_done(&b);
}

static int method_matches(const char *route, const char *req) {
  if (strcmp(route, req) == 0) return 1;
  return strcmp(req, "HEAD") == 0 && strcmp(route, "GET") == 0;
}

static void not_found(sk_http_req_t *req) {
  /* Echo the path back, bounded and with control bytes replaced. */
  char path[201];
  size_t n = 0;
  for (const char *p = req->path ? req->path : ""; *p && n < sizeof path - 1; p++)
    path[n++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
  path[n] = 0;
  char *body = sk_pool_printf(req->pool, "not found: %s\n", path);
  sk_http_respond_text(req, 404, TEXT_PLAIN, body);
}

static void dispatch(sk_http_req_t *req, void *ud) {
  sk_admin_t *a = ud;
  const char *path = req->path ? req->path : "";
  const char *method = req->method ? req->method : "";
  int path_known = 0;
  if (a->tls && !req->peer_spiffe) {
    /* without a verified client certificate only the open paths (health,
     * readiness) are served; nothing else, not even 404s, is revealed */
    int open = 0;
    for (size_t i = 0; i < a->nroutes && !open; i++)
      open = a->routes[i].open && !strcmp(a->routes[i].path, path) && method_matches(a->routes[i].method, method);
    if (!open) {
      sk_http_respond_text(req, 403, TEXT_PLAIN,
                           "forbidden: this admin route needs a client certificate from the CA (SPIFFE ID)\n");
      return;
    }
  }
  for (size_t i = 0; i < a->nroutes; i++) {
    struct sk_admin_route *r = &a->routes[i];
    if (strcmp(r->path, path) != 0) continue;
    path_known = 1;
    if (method_matches(r->method, method)) {
      r->fn(req, r->ud);
      return;
    }
  }
  if (!path_known) {
    not_found(req);
    return;
  }
  sk_buf_t allow;
  sk_buf_init(&allow);
  for (size_t i = 0; i < a->nroutes; i++) {
    struct sk_admin_route *r = &a->routes[i];
    if (strcmp(r->path, path) != 0) continue;
    if (allow.len) sk_buf_puts(&allow, ", ");
    sk_buf_puts(&allow, r->method);
    if (strcmp(r->method, "GET") == 0) sk_buf_puts(&allow, ", HEAD");
  }
  char *allow_s = sk_pool_strdup(req->pool, sk_buf_cstr(&allow));
  sk_buf_done(&allow);
  char *body = sk_pool_printf(req->pool, "method %s not allowed; allowed: %s\n", method, allow_s);
  const sk_http_header_t h[] = {{"content-type", TEXT_PLAIN}, {"allow", allow_s}};
  sk_http_respond(req, 405, h, 2, body, strlen(body));
}

static int route_valid_method(const char *m) {
  if (!m || !*m || strlen(m) > 16) return 0;
  for (const char *p = m; *p; p++)
    if (*p < 'A' || *p > 'Z') return 0;
  return 1;
}

static int route_add(sk_admin_t *a, const char *method, const char *path, sk_http_handler_fn fn,
                     void *ud, int builtin) {
  if (!a || !fn || !route_valid_method(method) || !path || path[0] != '/' || strlen(path) > 512 ||
      strchr(path, '?'))
    return SK_EINVAL;
  for (size_t i = 0; i < a->nroutes; i++) {
    struct sk_admin_route *r = &a->routes[i];
    if (strcmp(r->method, method) != 0 || strcmp(r->path, path) != 0) continue;
    if (!r->builtin) return SK_EEXIST;
    r->fn = fn; /* a daemon overrides a built-in */
    r->ud = ud;
    r->builtin = builtin;
    if (!builtin) r->open = 0;
    return 0;
  }
  if (a->nroutes >= SK_ADMIN_MAX_ROUTES) return SK_ELIMIT;
  struct sk_admin_route *r = &a->routes[a->nroutes++];
  r->method = sk_xstrdup(method);
  r->path = sk_xstrdup(path);
  r->fn = fn;
  r->ud = ud;
  r->builtin = builtin;
  r->open = builtin && (!strcmp(path, "/healthz") || !strcmp(path, "/readyz"));
  return 0;
}

int sk_admin_add_route(sk_admin_t *a, const char *method, const char *path, sk_http_handler_fn fn,
                       void *ud) {
  return route_add(a, method, path, fn, ud, 0);
}

static void admin_release(sk_admin_t *a) {
  for (size_t i = 0; i < a->nroutes; i++) {
    free(a->routes[i].method);
    free(a->routes[i].path);
  }
  free(a->daemon);
  sk_tls_ctx_unref(a->tls);
  free(a);
}

int sk_admin_new(uv_loop_t *loop, const char *host, int port, sk_metrics_t *reg,
                 const char *daemon_name, sk_admin_t **out) {
  sk_admin_opts_t o = {.host = host, .port = port, .reg = reg, .daemon_name = daemon_name};
  return sk_admin_new_opts(loop, &o, out);
}

int sk_admin_new_opts(uv_loop_t *loop, const sk_admin_opts_t *ao, sk_admin_t **out) {
  if (!out) return SK_EINVAL;
  *out = NULL;
  if (!loop || !ao || ao->port < 0 || ao->port > 65535) return SK_EINVAL;
  if (ao->tls && !sk_tls_ctx_is_server(ao->tls)) return SK_EINVAL;
  const char *host = ao->host;
  sk_admin_t *a = sk_xcalloc(1, sizeof *a);
  a->loop = loop;
  a->reg = ao->reg ? ao->reg : sk_metrics_default();
  a->daemon = sk_xstrdup(ao->daemon_name && *ao->daemon_name ? ao->daemon_name : "unknown");
  a->tls = ao->tls ? sk_tls_ctx_ref(ao->tls) : NULL;
  int rc;
  if ((rc = sk_metrics_add_process(a->reg, a->daemon)) < 0) goto fail;
  if ((rc = route_add(a, "GET", "/healthz", h_healthz, a, 1)) < 0 ||
      (rc = route_add(a, "GET", "/readyz", h_readyz, a, 1)) < 0 ||
      (rc = route_add(a, "GET", "/metrics", h_metrics, a, 1)) < 0)
    goto fail;
  sk_http_server_opts_t o;
  memset(&o, 0, sizeof o);
  o.host = host && *host ? host : "127.0.0.1";
  o.port = ao->port;
  o.max_body_bytes = 64 * 1024;
  o.tls = a->tls;
  if ((rc = sk_http_server_new(loop, &o, dispatch, a, &a->srv)) < 0) goto fail;
  *out = a;
  return 0;
fail:
  admin_release(a);
  return rc;
}

int sk_admin_port(const sk_admin_t *a) { return a && a->srv ? sk_http_server_port(a->srv) : -1; }
sk_metrics_t *sk_admin_metrics(const sk_admin_t *a) { return a ? a->reg : NULL; }
int sk_admin_is_tls(const sk_admin_t *a) { return a && a->tls; }

void sk_admin_set_ready(sk_admin_t *a, int ready) {
  if (a) a->ready = ready ? 1 : 0;
}

int sk_admin_is_ready(const sk_admin_t *a) { return a && a->ready && !a->draining; }

void sk_admin_set_draining(sk_admin_t *a) {
  if (a) a->draining = 1;
}

static void drained(sk_http_server_t *s, void *ud) {
  sk_admin_t *a = ud;
  void (*cb)(sk_admin_t *, void *) = a->drain_cb;
  a->drain_cb = NULL;
  if (cb) cb(a, a->drain_ud);
}

void sk_admin_drain(sk_admin_t *a, void (*cb)(sk_admin_t *a, void *ud), void *ud) {
  if (!a) return;
  a->draining = 1;
  a->drain_cb = cb;
  a->drain_ud = ud;
  sk_http_server_drain(a->srv, drained, a);
}

void sk_admin_free(sk_admin_t *a) {
  if (!a) return;
  sk_http_server_free(a->srv);
  admin_release(a);
}
