/* px_trace.c - skiff-proxy's distributed tracing: the `tracing` config
 * section, a SERVER span per downstream request and a CLIENT span per
 * upstream try, with the W3C traceparent sent upstream carrying the try's
 * span id. Spans go to the runtime's OTLP exporter (skiff/trace.h): one
 * exporter thread for all workers, fed through its bounded queue. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_int.h"
#include "skiff/err.h"
#include "skiff/ident.h"

#define PX_TRACE_MAX_QUEUE 1000000

static void terr(sk_config_errors_t *errs, const sk_cfg_json_t *j, const char *file, const char *path,
                 const char *msg) {
  int line = 0, col = 0;
  sk_cfg_json_where(j, path, &line, &col);
  if (errs) sk_config_errors_add(errs, file ? file : "<config>", line, col, "%s: %s", path, msg);
}

/* A string member: NULL when absent; *bad on a wrong type. */
static const char *tstr(const json_t *o, const char *key, const sk_cfg_json_t *j, const char *file,
                        sk_config_errors_t *errs, int *bad) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return NULL;
  char p[64];
  snprintf(p, sizeof p, "tracing.%s", key);
  if (!json_is_string(v) || json_string_length(v) > 1024 || strlen(json_string_value(v)) != json_string_length(v)) {
    terr(errs, j, file, p, "expected a string of at most 1024 bytes");
    *bad = 1;
    return NULL;
  }
  return json_string_value(v);
}

int px_tracing_build(const sk_cfg_json_t *j, const char *file, sk_config_errors_t *errs, sk_ident_t *ident,
                     sk_tracer_t **out) {
  if (out) *out = NULL;
  const json_t *o = j ? j->value : NULL;
  if (!o || json_is_null(o)) return 0;
  if (!json_is_object(o)) {
    terr(errs, j, file, "tracing", "expected a mapping");
    return SK_ECONFIG;
  }
  int bad = 0;
  static const char *const known[] = {"otlp_endpoint", "sample_ratio", "service_name", "tls",
                                      "max_queue",     "batch_size",   "flush_interval", NULL};
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    int ok = 0;
    for (size_t i = 0; known[i]; i++) ok |= !strcmp(known[i], k);
    if (!ok) {
      char p[300];
      snprintf(p, sizeof p, "tracing.%.200s", k);
      terr(errs, j, file, p, "unknown key");
      bad = 1;
    }
  }
  sk_tracer_opts_t to = {.service_name = "skiff-proxy", .sample_ratio = 1.0, .service_version = SKIFF_VERSION};
  to.endpoint = tstr(o, "otlp_endpoint", j, file, errs, &bad);
  const char *svc = tstr(o, "service_name", j, file, errs, &bad);
  if (svc) {
    if (!*svc) {
      terr(errs, j, file, "tracing.service_name", "must not be empty");
      bad = 1;
    }
    to.service_name = svc;
  }
  json_t *r = json_object_get(o, "sample_ratio");
  if (r && !json_is_null(r)) {
    if (!json_is_number(r) || json_number_value(r) < 0 || json_number_value(r) > 1) {
      terr(errs, j, file, "tracing.sample_ratio", "expected a number from 0 to 1");
      bad = 1;
    } else {
      to.sample_ratio = json_number_value(r);
    }
  }
  static const char *const nk[] = {"max_queue", "batch_size"};
  size_t *nv[] = {&to.max_queue, &to.max_batch};
  for (int i = 0; i < 2; i++) {
    json_t *x = json_object_get(o, nk[i]);
    if (!x || json_is_null(x)) continue;
    char p[64];
    snprintf(p, sizeof p, "tracing.%s", nk[i]);
    if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > PX_TRACE_MAX_QUEUE) {
      terr(errs, j, file, p, "expected an integer from 1 to 1000000");
      bad = 1;
    } else {
      *nv[i] = (size_t)json_integer_value(x);
    }
  }
  const char *fi = tstr(o, "flush_interval", j, file, errs, &bad);
  if (fi) {
    char msg[200];
    if (sk_config_parse_duration(fi, &to.flush_interval_ms, msg, sizeof msg) < 0 || to.flush_interval_ms == 0) {
      terr(errs, j, file, "tracing.flush_interval", "expected a duration above zero like 500ms or 2s");
      bad = 1;
    }
  }
  if (to.endpoint && *to.endpoint && strncmp(to.endpoint, "http://", 7) && strncmp(to.endpoint, "https://", 8)) {
    terr(errs, j, file, "tracing.otlp_endpoint", "expected http://host:port[/path] or https://...");
    bad = 1;
  }
  /* tls: {ca, cert, key, verify} or {identity: true[, ca]}, for an https://
   * endpoint. With identity the files are the daemon's identity's, which
   * exist only once it has its certificate: validation (out NULL) checks
   * the keys only, and the context, built from those files at start, is
   * reloaded in place on every renewal (sk_tls_ctx_reload_files). */
  sk_tls_ctx_t *tls = NULL;
  int tls_later = 0;
  json_t *t = json_object_get(o, "tls");
  if (t && !json_is_null(t)) {
    if (!json_is_object(t)) {
      terr(errs, j, file, "tracing.tls", "expected a mapping");
      bad = 1;
    } else {
      json_object_foreach(t, k, v) {
        if (strcmp(k, "ca") && strcmp(k, "cert") && strcmp(k, "key") && strcmp(k, "verify") && strcmp(k, "identity")) {
          char p[300];
          snprintf(p, sizeof p, "tracing.tls.%.200s", k);
          terr(errs, j, file, p, "unknown key");
          bad = 1;
        }
      }
      json_t *ca = json_object_get(t, "ca"), *cert = json_object_get(t, "cert"), *key = json_object_get(t, "key");
      json_t *idj = json_object_get(t, "identity");
      int use_id = json_is_true(idj);
      if ((ca && !json_is_string(ca)) || (cert && !json_is_string(cert)) || (key && !json_is_string(key))) {
        terr(errs, j, file, "tracing.tls", "ca, cert and key are file paths");
        bad = 1;
      } else if (idj && !json_is_boolean(idj)) {
        terr(errs, j, file, "tracing.tls.identity", "expected true or false");
        bad = 1;
      } else if (use_id && (cert || key)) {
        terr(errs, j, file, "tracing.tls.identity", "identity: true takes the identity's cert and key: leave them out");
        bad = 1;
      } else if (use_id && !out) {
        tls_later = 1; /* validation only: the identity's files may not exist yet */
      } else if (use_id && !ident) {
        terr(errs, j, file, "tracing.tls.identity", "needs the daemon's identity: section (identity.control)");
        bad = 1;
      } else if (use_id && !bad) {
        sk_tls_opts_t so = {.cert_file = sk_ident_cert_path(ident),
                            .key_file = sk_ident_key_path(ident),
                            .ca_file = ca ? json_string_value(ca) : sk_ident_bundle_path(ident),
                            .verify = json_is_false(json_object_get(t, "verify")) ? SK_TLS_VERIFY_NONE
                                                                                  : SK_TLS_VERIFY_REQUIRE};
        char err[512] = "";
        if (sk_tls_ctx_new(&so, &tls, err, sizeof err) < 0) {
          terr(errs, j, file, "tracing.tls", err[0] ? err : "cannot create TLS context");
          bad = 1;
          tls = NULL;
        }
      } else if (!cert != !key) {
        terr(errs, j, file, "tracing.tls", "cert and key go together");
        bad = 1;
      } else if (!bad) {
        sk_tls_opts_t so = {.cert_file = cert ? json_string_value(cert) : NULL,
                            .key_file = key ? json_string_value(key) : NULL,
                            .ca_file = ca ? json_string_value(ca) : NULL,
                            .verify = json_is_false(json_object_get(t, "verify")) ? SK_TLS_VERIFY_NONE
                                      : ca                                      ? SK_TLS_VERIFY_REQUIRE
                                                                                : SK_TLS_VERIFY_NONE};
        char err[512] = "";
        if (sk_tls_ctx_new(&so, &tls, err, sizeof err) < 0) {
          terr(errs, j, file, "tracing.tls", err[0] ? err : "cannot create TLS context");
          bad = 1;
          tls = NULL;
        }
      }
    }
  }
  if (!bad && to.endpoint && !strncmp(to.endpoint, "https://", 8) && !tls && !tls_later) {
    terr(errs, j, file, "tracing.otlp_endpoint", "an https endpoint needs tracing.tls (at least a ca)");
    bad = 1;
  }
  if (bad) {
    sk_tls_ctx_unref(tls);
    return SK_ECONFIG;
  }
  if (tls_later && !tls) {
    /* validation of an identity-backed https endpoint: a bare client
     * context so that sk_tracer_new checks the URL; no span is sent */
    sk_tls_opts_t so = {.verify = SK_TLS_VERIFY_NONE};
    if (sk_tls_ctx_new(&so, &tls, NULL, 0) < 0) tls = NULL;
  }
  to.tls = tls;
  sk_tracer_t *tr = NULL;
  int rc = sk_tracer_new(&to, &tr); /* --check too: the URL is only fully checked here */
  sk_tls_ctx_unref(tls);
  if (rc < 0) {
    terr(errs, j, file, "tracing.otlp_endpoint", "invalid endpoint URL (http://host:port[/path])");
    return SK_ECONFIG;
  }
  if (out) *out = tr;
  else sk_tracer_free(tr);
  return 0;
}

/* ---- spans ---- */

static sk_http_header_t *find_tp(sk_http_header_t *h, size_t n) {
  for (size_t i = n; i-- > 0;)
    if (h[i].name && !strcasecmp(h[i].name, "traceparent")) return &h[i];
  return NULL;
}

static const char *proto_version(int v) { return v == 20 ? "2" : v == 10 ? "1.0" : "1.1"; }

/* "host:port" / "[v6]:port" -> host (pool), port */
static const char *split_hostport(sk_pool_t *pool, const char *a, int *port) {
  *port = 0;
  if (!a) return NULL;
  const char *c = NULL;
  if (*a == '[') {
    const char *rb = strchr(a, ']');
    if (!rb) return a;
    if (rb[1] == ':') *port = atoi(rb + 2);
    return sk_pool_strndup(pool, a + 1, (size_t)(rb - a - 1));
  }
  c = strrchr(a, ':');
  if (!c) return a;
  *port = atoi(c + 1);
  return sk_pool_strndup(pool, a, (size_t)(c - a));
}

void px_trace_server_begin(px_worker_t *w, const sk_http_req_t *req, const px_route_t *rt, sk_span_t *s,
                           px_trace_t *tr, sk_http_header_t *hdrs, size_t nh) {
  sk_tracer_t *t = w->p->o.tracer;
  if (!t) return;
  sk_trace_ctx_t parent;
  const char *tp = sk_http_headers_get(&req->headers, "traceparent");
  int has_parent = tp && sk_traceparent_parse(tp, &parent) == 0;
  char state[SK_TRACESTATE_MAX + 1];
  const char *ts = has_parent ? sk_http_headers_get(&req->headers, "tracestate") : NULL;
  if (ts && sk_tracestate_parse(ts, state, sizeof state) < 0) ts = NULL;
  const char *name = rt ? sk_pool_printf(req->pool, "%s %s", req->method, rt->name) : req->method;
  sk_span_begin(s, t, name, SK_SPAN_SERVER, has_parent ? &parent : NULL, ts ? state : NULL, 0);
  /* the trace id the access log shows is the span's */
  sk_trace_id_hex(s->ctx.trace_id, tr->trace_id);
  sk_span_id_hex(s->ctx.span_id, tr->parent_id);
  snprintf(tr->flags, sizeof tr->flags, "%02x", s->ctx.flags);
  sk_http_header_t *h = find_tp(hdrs, nh);
  if (h) {
    char *v = sk_pool_alloc(req->pool, SK_TRACEPARENT_LEN + 1);
    sk_traceparent_format(&s->ctx, v);
    h->value = v;
  }
  if (!s->recording) return;
  int port = 0;
  const char *host = split_hostport(req->pool, req->authority, &port);
  sk_span_attr_str(s, "http.request.method", req->method);
  sk_span_attr_str(s, "url.path", req->path);
  if (req->query) sk_span_attr_str(s, "url.query", req->query);
  sk_span_attr_str(s, "url.scheme", req->scheme ? req->scheme : "http");
  if (host) sk_span_attr_str(s, "server.address", host);
  if (port) sk_span_attr_int(s, "server.port", port);
  sk_span_attr_str(s, "network.protocol.version", proto_version(req->version));
  if (req->peer_addr) {
    const char *peer = split_hostport(req->pool, req->peer_addr, &port);
    sk_span_attr_str(s, "client.address", peer);
  }
  const char *ua = sk_http_headers_get(&req->headers, "user-agent");
  if (ua) sk_span_attr_str(s, "user_agent.original", ua);
  if (rt) sk_span_attr_str(s, "skiff.route", rt->name);
  if (req->peer_spiffe) sk_span_attr_str(s, "skiff.peer_spiffe", req->peer_spiffe);
}

void px_trace_server_end(sk_span_t *s, int status, const char *reason, const char *cluster) {
  if (!s->recording) return;
  sk_span_attr_int(s, "http.response.status_code", status);
  if (cluster) sk_span_attr_str(s, "skiff.cluster", cluster);
  if (reason) sk_span_attr_str(s, "skiff.reason", reason);
  if (status >= 500) {
    char et[16];
    snprintf(et, sizeof et, "%d", status);
    sk_span_attr_str(s, "error.type", reason ? reason : et);
    sk_span_set_status(s, SK_SPAN_STATUS_ERROR, reason);
  }
  sk_span_end(s, 0);
}

void px_trace_server_abort(sk_span_t *s) {
  if (!s->recording) return;
  sk_span_attr_str(s, "skiff.reason", "client_abort");
  sk_span_attr_str(s, "error.type", "client_abort");
  sk_span_set_status(s, SK_SPAN_STATUS_ERROR, "client went away");
  sk_span_end(s, 0);
}

void px_trace_try_begin(px_worker_t *w, sk_span_t *s, const sk_span_t *srv, const sk_http_req_t *req,
                        const px_route_t *rt, const px_cluster_t *c, const char *endpoint, uint32_t attempt,
                        sk_http_header_t *hdrs, size_t nh) {
  sk_tracer_t *t = w->p->o.tracer;
  if (!t) return;
  sk_span_begin(s, t, req->method, SK_SPAN_CLIENT, &srv->ctx, NULL, 0);
  sk_http_header_t *h = find_tp(hdrs, nh);
  if (h) {
    char *v = sk_pool_alloc(req->pool, SK_TRACEPARENT_LEN + 1);
    sk_traceparent_format(&s->ctx, v);
    h->value = v;
  }
  if (!s->recording) return;
  int port = 0;
  const char *host = split_hostport(req->pool, endpoint, &port);
  sk_span_attr_str(s, "http.request.method", req->method);
  sk_span_attr_str(s, "url.path", req->path);
  if (host) sk_span_attr_str(s, "server.address", host);
  if (port) sk_span_attr_int(s, "server.port", port);
  sk_span_attr_str(s, "network.protocol.version", c->h2 ? "2" : "1.1");
  if (rt) sk_span_attr_str(s, "skiff.route", rt->name);
  sk_span_attr_str(s, "skiff.cluster", c->name);
  if (attempt > 1) sk_span_attr_int(s, "http.request.resend_count", attempt - 1);
}

void px_trace_try_end(sk_span_t *s, int status, const char *reason) {
  if (!s->recording) return;
  if (status) sk_span_attr_int(s, "http.response.status_code", status);
  if (reason) {
    sk_span_attr_str(s, "skiff.reason", reason);
    sk_span_attr_str(s, "error.type", reason);
    sk_span_set_status(s, SK_SPAN_STATUS_ERROR, reason);
  } else if (status >= 400) {
    char et[16];
    snprintf(et, sizeof et, "%d", status);
    sk_span_attr_str(s, "error.type", et);
    sk_span_set_status(s, SK_SPAN_STATUS_ERROR, NULL);
  }
  sk_span_end(s, 0);
}
