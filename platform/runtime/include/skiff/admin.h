/* skiff/admin.h - the admin listener every Skiff daemon runs.
 *
 * A small HTTP server (skiff/http.h, HTTP/1.1 and h2c) with:
 *   GET /healthz  200 "ok\n" while the loop runs (liveness)
 *   GET /readyz   503 "not ready\n" until sk_admin_set_ready(a, 1), then
 *                 200 "ready\n"; 503 "draining\n" once draining
 *   GET /metrics  the registry in Prometheus text format 0.0.4
 *   anything else 404 "not found: <path>\n"; a known path with another
 *                 method gets 405 with an Allow header.
 * HEAD is accepted wherever GET is. Daemons add their own routes
 * (/config_dump, ...) with sk_admin_add_route(). Single-threaded: every
 * call happens on the loop's thread.
 *
 * TLS (sk_admin_new_opts): with a server context the listener speaks only
 * HTTPS. Client certificates are then checked per route: /healthz and
 * /readyz answer anyone (a prober needs only the CA bundle), every other
 * path - /metrics, the daemon's own routes, unknown paths - answers 403
 * (before any 404/405) unless the client presented a certificate the
 * context's CA verified and that carries a SPIFFE ID (req->peer_spiffe). A context built with SK_TLS_VERIFY_REQUIRE
 * refuses certificate-less clients already in the handshake. */
#ifndef SKIFF_ADMIN_H
#define SKIFF_ADMIN_H

#include <uv.h>

#include "skiff/http.h"
#include "skiff/metrics.h"

#define SK_ADMIN_MAX_ROUTES 64

typedef struct sk_admin sk_admin_t;

/* Starts listening on host:port (host NULL = "127.0.0.1", port 0 = an
 * ephemeral port, see sk_admin_port). reg NULL = sk_metrics_default().
 * Registers the process metrics and skiff_build_info{daemon=daemon_name}
 * in reg. */
int sk_admin_new(uv_loop_t *loop, const char *host, int port, sk_metrics_t *reg,
                 const char *daemon_name, sk_admin_t **out);

typedef struct sk_admin_opts {
  const char *host;        /* NULL = "127.0.0.1" */
  int port;                /* 0 = ephemeral */
  sk_metrics_t *reg;       /* NULL = sk_metrics_default() */
  const char *daemon_name;
  sk_tls_ctx_t *tls;       /* NULL = plain HTTP; else a server context (the
                              admin takes its own reference); its verify mode
                              should be OPTIONAL or REQUIRE with a ca_file */
} sk_admin_opts_t;

/* sk_admin_new with TLS: see the header comment for the route policy. */
int sk_admin_new_opts(uv_loop_t *loop, const sk_admin_opts_t *o, sk_admin_t **out);
/* 1 when the listener speaks HTTPS. */
int sk_admin_is_tls(const sk_admin_t *a);
int sk_admin_port(const sk_admin_t *a);
sk_metrics_t *sk_admin_metrics(const sk_admin_t *a);
void sk_admin_set_ready(sk_admin_t *a, int ready);
int sk_admin_is_ready(const sk_admin_t *a);

/* Adds a handler for an exact path (no query) and method ("GET", "POST",
 * ...). The built-in paths may be overridden. SK_EEXIST for a duplicate
 * (method, path), SK_ELIMIT past SK_ADMIN_MAX_ROUTES, SK_EINVAL for a path
 * not starting with '/'. The strings are copied. */
int sk_admin_add_route(sk_admin_t *a, const char *method, const char *path, sk_http_handler_fn fn,
                       void *ud);

/* Marks the daemon as draining (/readyz turns 503) without closing the
 * listener, so a load balancer sees it leave while in-flight work ends. */
void sk_admin_set_draining(sk_admin_t *a);
/* Marks draining and gracefully drains the admin server itself; cb (may be
 * NULL) runs once no admin connection is left. */
void sk_admin_drain(sk_admin_t *a, void (*cb)(sk_admin_t *a, void *ud), void *ud);
/* Closes the listener and every connection; accepts NULL. Memory goes once
 * the loop has run the closes. */
void sk_admin_free(sk_admin_t *a);

#endif
