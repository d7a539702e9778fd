/* px_daemon.c - skiff-proxy's config schema and daemon lifecycle hooks:
 * init, SIGHUP reload (build, then swap or keep the old), SIGTERM drain,
 * admin routes /config_dump and /clusters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_int.h"
#include "px_push.h"
#include "skiff/err.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

int px_config_from_daemon(const px_daemon_cfg_t *dc, const char *file, uint64_t version, sk_config_errors_t *errs,
                          px_config_t **out) {
  json_t *doc = json_object();
  json_t *where = json_object();
  const sk_cfg_json_t *parts[4] = {&dc->listeners, &dc->routes, &dc->clusters, &dc->access_log};
  static const char *const names[4] = {"listeners", "routes", "clusters", "access_log"};
  for (int i = 0; i < 4; i++) {
    if (parts[i]->value) json_object_set(doc, names[i], parts[i]->value);
    if (parts[i]->where) json_object_update(where, parts[i]->where);
  }
  int rc = px_config_build(doc, where, file, version, errs, out);
  json_decref(doc);
  json_decref(where);
  return rc;
}

/* Section check: the whole model is built once to validate (also --check). */
static int check_model(const void *section, char *msg, size_t msglen) {
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  px_config_t *c = NULL;
  int rc = px_config_from_daemon(section, "", 0, &errs, &c);
  px_config_unref(c);
  if (px_tracing_build(&((const px_daemon_cfg_t *)section)->tracing, "", &errs, NULL, NULL) < 0) rc = SK_ECONFIG;
  const sk_cfg_json_t *ctl = &((const px_daemon_cfg_t *)section)->control;
  if (ctl->value) {
    px_push_opts_t po;
    if (px_push_opts_parse(ctl->value, ctl->where, "", &po, &errs) < 0) rc = SK_ECONFIG;
    else px_push_opts_done(&po);
  }
  if (rc < 0) {
    size_t off = 0;
    msg[0] = 0;
    for (size_t i = 0; i < errs.n && off + 1 < msglen; i++) {
      const sk_config_error_t *e = &errs.v[i];
      int n = e->line ? snprintf(msg + off, msglen - off, "%s%d:%d: %s", i ? "; " : "", e->line, e->col, e->msg)
                      : snprintf(msg + off, msglen - off, "%s%s", i ? "; " : "", e->msg);
      if (n < 0) break;
      off += (size_t)n;
    }
    if (off >= msglen && msglen > 4) memcpy(msg + msglen - 4, "...", 4);
  }
  sk_config_errors_done(&errs);
  return rc < 0 ? SK_ECONFIG : 0;
}

static const sk_config_entry_t px_entries[] = {
    SK_CFG_INT_E("workers", "1", 1, PX_MAX_WORKERS, px_daemon_cfg_t, workers,
                 "worker threads, each with its own loop and SO_REUSEPORT listeners (restart to change)"),
    SK_CFG_JSON_E("listeners", px_daemon_cfg_t, listeners, "listeners (see docs/proxy.md)"),
    SK_CFG_JSON_E("routes", px_daemon_cfg_t, routes, "routes, first match wins (see docs/proxy.md)"),
    SK_CFG_JSON_E("clusters", px_daemon_cfg_t, clusters, "upstream clusters (see docs/proxy.md)"),
    SK_CFG_JSON_E("access_log", px_daemon_cfg_t, access_log, "{path: \"-\"|file|\"\", fields: [...]}"),
    SK_CFG_JSON_E("tracing", px_daemon_cfg_t, tracing,
                  "{otlp_endpoint, sample_ratio, service_name, tls, ...}: OTLP span export (restart to change)"),
    SK_CFG_JSON_E("control", px_daemon_cfg_t, control,
                  "{url, node, token_file, ca, cert, key, backoff, cache}: clusters and routes from skiff-control "
                  "(see docs/proxy.md; restart to change)"),
    SK_CFG_END_E};

const sk_config_schema_t px_daemon_schema = {
    .name = "proxy", .size = sizeof(px_daemon_cfg_t), .entries = px_entries, .check = check_model};

typedef struct px_daemon_state {
  px_proxy_t *p;
  uint64_t version;
  int workers;
  sk_tracer_t *tracer; /* px_trace.c; NULL = tracing off */
  px_push_t *push;       /* px_push.c; NULL = no control section */
  json_t *ctl_config;    /* the running control snapshot's {clusters, routes}, or NULL */
  const px_daemon_cfg_t *dc; /* the config in force (listeners, access_log) */
} px_daemon_state_t;

/* The model from the local file plus control's snapshot: control's
 * clusters and routes first, the file's after them (its routes a fallback
 * for what control does not match; names must not clash: control's carry
 * a '/', "ns/name..."). */
static int build_model(const px_daemon_cfg_t *dc, const json_t *ctl, const char *file, uint64_t version,
                       sk_config_errors_t *errs, px_config_t **out) {
  if (!ctl) return px_config_from_daemon(dc, file, version, errs, out);
  json_t *doc = json_object();
  json_t *where = json_object();
  if (dc->listeners.value) json_object_set(doc, "listeners", dc->listeners.value);
  if (dc->access_log.value) json_object_set(doc, "access_log", dc->access_log.value);
  if (dc->listeners.where) json_object_update(where, dc->listeners.where);
  if (dc->access_log.where) json_object_update(where, dc->access_log.where);
  static const char *const keys[2] = {"clusters", "routes"};
  const sk_cfg_json_t *local[2] = {&dc->clusters, &dc->routes};
  for (int i = 0; i < 2; i++) {
    json_t *all = json_array();
    json_t *v = json_object_get(ctl, keys[i]);
    if (json_is_array(v)) json_array_extend(all, v); /* px_push_decode let only lists through */
    if (json_is_array(local[i]->value)) json_array_extend(all, local[i]->value);
    json_object_set_new(doc, keys[i], all);
  }
  int rc = px_config_build(doc, where, file, version, errs, out);
  json_decref(doc);
  json_decref(where);
  return rc;
}

/* px_push's apply: build next to the local listeners, swap on success. */
static int push_apply(const json_t *config, int64_t cversion, char *err, size_t errlen, void *ud) {
  px_daemon_state_t *st = ud;
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  px_config_t *c = NULL;
  char file[64];
  snprintf(file, sizeof file, "control snapshot %lld", (long long)cversion);
  int rc = build_model(st->dc, config, file, st->version + 1, &errs, &c);
  if (rc < 0) {
    size_t off = 0;
    err[0] = 0;
    for (size_t i = 0; i < errs.n && off + 3 < errlen; i++) {
      char buf[1200];
      sk_config_errors_format(&errs, i, buf, sizeof buf);
      int n = snprintf(err + off, errlen - off, "%s%s", i ? "; " : "", buf);
      if (n < 0) break;
      off += (size_t)n;
    }
    sk_config_errors_done(&errs);
    sk_counter_inc(st->p->c_reload_errors);
    return rc;
  }
  sk_config_errors_done(&errs);
  st->version++;
  px_proxy_set_config(st->p, c);
  sk_counter_inc(st->p->c_reloads);
  json_decref(st->ctl_config);
  st->ctl_config = json_deep_copy(config);
  return 0;
}

static void send_json(sk_http_req_t *req, json_t *o) {
  char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(o);
  sk_http_header_t h = {"content-type", "application/json"};
  sk_http_respond(req, 200, &h, 1, s ? s : "{}", s ? strlen(s) : 2);
  free(s);
}

static void admin_config_dump(sk_http_req_t *req, void *ud) {
  px_daemon_state_t *st = ud;
  px_config_t *c = px_proxy_config(st->p);
  send_json(req, px_config_dump(c));
  px_config_unref(c);
}

static void admin_clusters(sk_http_req_t *req, void *ud) {
  px_daemon_state_t *st = ud;
  send_json(req, px_proxy_clusters_json(st->p));
}

static void log_errors(sk_daemon_t *d, sk_config_errors_t *errs, const char *what) {
  for (size_t i = 0; i < errs->n; i++) {
    char buf[1200];
    sk_config_errors_format(errs, i, buf, sizeof buf);
    sk_log_kv(sk_daemon_log(d), SK_LOG_ERROR, what, "error", buf, NULL);
  }
}

static int px_init(sk_daemon_t *d, void *cfgp) {
  px_daemon_cfg_t *dc = cfgp;
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  px_config_t *c = NULL;
  const char *file = sk_daemon_config_path(d);
  px_push_opts_t po = {0};
  json_t *cached = NULL; /* control.cache: the last good snapshot, so a restart without control routes */
  int64_t cached_v = 0;
  if (dc->control.value) {
    if (px_push_opts_parse(dc->control.value, dc->control.where, file ? file : "<defaults>", &po, &errs) < 0) {
      log_errors(d, &errs, "invalid proxy config");
      sk_config_errors_done(&errs);
      return SK_ECONFIG;
    }
    char cerr[600];
    int lr = px_push_cache_load(po.cache, &cached, &cached_v, cerr, sizeof cerr);
    if (lr < 0 && lr != SK_ENOTFOUND)
      sk_log_kv(sk_daemon_log(d), SK_LOG_WARN, "ignoring the control snapshot cache", "error", cerr, NULL);
  }
  int rc = build_model(dc, cached, file ? file : "<defaults>", 1, &errs, &c);
  if (rc < 0 && cached) {
    log_errors(d, &errs, "cached control snapshot refused; starting from the local file");
    sk_config_errors_done(&errs);
    sk_config_errors_init(&errs);
    json_decref(cached);
    cached = NULL;
    rc = px_config_from_daemon(dc, file ? file : "<defaults>", 1, &errs, &c);
  }
  if (rc < 0) {
    log_errors(d, &errs, "invalid proxy config");
    sk_config_errors_done(&errs);
    px_push_opts_done(&po);
    json_decref(cached);
    return rc;
  }
  sk_config_errors_done(&errs);
  sk_tracer_t *tracer = NULL;
  sk_config_errors_init(&errs);
  rc = px_tracing_build(&dc->tracing, file ? file : "<defaults>", &errs, sk_daemon_ident(d), &tracer);
  if (rc < 0) {
    log_errors(d, &errs, "invalid proxy config");
    sk_config_errors_done(&errs);
    px_config_unref(c);
    px_push_opts_done(&po);
    json_decref(cached);
    return rc;
  }
  sk_config_errors_done(&errs);
  px_daemon_state_t *st = sk_xcalloc(1, sizeof *st);
  st->version = 1;
  st->workers = dc->workers;
  st->tracer = tracer;
  px_opts_t o = {.workers = dc->workers, .metrics = sk_daemon_metrics(d), .log = sk_daemon_log(d), .tracer = tracer};
  rc = px_proxy_new(sk_daemon_loop(d), c, &o, &st->p);
  if (rc < 0) {
    sk_log_kv(sk_daemon_log(d), SK_LOG_ERROR, "cannot start listeners", "error", sk_strerror(rc), NULL);
    px_config_unref(c);
    sk_tracer_free(tracer);
    free(st);
    px_push_opts_done(&po);
    json_decref(cached);
    return rc;
  }
  st->dc = dc;
  st->ctl_config = cached;
  sk_daemon_set_data(d, st);
  if (dc->control.value) {
    rc = px_push_new(sk_daemon_loop(d), &po, sk_daemon_metrics(d), sk_daemon_log(d), push_apply, st, &st->push);
    px_push_opts_done(&po);
    if (rc < 0) {
      sk_log_kv(sk_daemon_log(d), SK_LOG_ERROR, "cannot set up the control stream", "error", sk_strerror(rc), NULL);
      return rc;
    }
    if (cached) {
      char v[24];
      snprintf(v, sizeof v, "%lld", (long long)cached_v);
      sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "serving the cached control snapshot until control answers",
                "version", v, NULL);
      px_push_set_applied(st->push, cached_v);
    }
    px_push_start(st->push);
  }
  sk_admin_t *a = sk_daemon_admin(d);
  if (a) {
    sk_admin_add_route(a, "GET", "/config_dump", admin_config_dump, st);
    sk_admin_add_route(a, "GET", "/clusters", admin_clusters, st);
  }
  for (size_t i = 0; i < c->nlisteners; i++) {
    char port[16];
    snprintf(port, sizeof port, "%d", px_proxy_listener_port(st->p, c->listeners[i].name));
    sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "listening", "listener", c->listeners[i].name, "host",
              c->listeners[i].addr.host, "port", port, "protocol",
              c->listeners[i].proto == PX_PROTO_TCP ? "tcp" : "http", NULL);
  }
  sk_daemon_set_ready(d, 1);
  return 0;
}

static int px_reload(sk_daemon_t *d, void *new_cfgp) {
  px_daemon_state_t *st = sk_daemon_get_data(d);
  px_daemon_cfg_t *dc = new_cfgp;
  if (!st) return SK_EINVAL;
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  px_config_t *c = NULL;
  const char *file = sk_daemon_config_path(d);
  int rc = build_model(dc, st->ctl_config, file ? file : "<defaults>", st->version + 1, &errs, &c);
  if (rc < 0) {
    log_errors(d, &errs, "proxy config refused; keeping the running one");
    sk_config_errors_done(&errs);
    sk_counter_inc(st->p->c_reload_errors);
    return rc;
  }
  sk_config_errors_done(&errs);
  if (dc->workers != st->workers)
    sk_log_warn(sk_daemon_log(d), "workers changed from %d to %d: takes effect after a restart", st->workers,
                dc->workers);
  if (!json_equal(dc->control.value, st->dc->control.value) && (dc->control.value || st->dc->control.value))
    sk_log_warn(sk_daemon_log(d), "the control section changed: takes effect after a restart");
  st->version++;
  st->dc = dc;
  px_proxy_set_config(st->p, c);
  sk_counter_inc(st->p->c_reloads);
  char v[24];
  snprintf(v, sizeof v, "%llu", (unsigned long long)st->version);
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "proxy config applied", "version", v, NULL);
  return 0;
}

static void drained_cb(void *ud) { sk_daemon_drained(ud); }

static void px_drain(sk_daemon_t *d) {
  px_daemon_state_t *st = sk_daemon_get_data(d);
  if (!st) {
    sk_daemon_drained(d);
    return;
  }
  px_push_free(st->push); /* control sees the proxy go */
  st->push = NULL;
  px_proxy_drain(st->p, drained_cb, d);
}

static void px_fini(sk_daemon_t *d) {
  px_daemon_state_t *st = sk_daemon_get_data(d);
  if (!st) return;
  px_push_free(st->push);
  json_decref(st->ctl_config);
  px_proxy_free(st->p);
  sk_tracer_free(st->tracer); /* after the workers: sends what they queued */
  free(st);
  sk_daemon_set_data(d, NULL);
}

const sk_daemon_desc_t px_daemon_desc = {
    .name = "skiff-proxy",
    .version = SKIFF_VERSION,
    .summary = "the data plane: L7/L4 proxy with routing, resilience and observability",
    .schema = &px_daemon_schema,
    .init = px_init,
    .reload = px_reload,
    .drain = px_drain,
    .fini = px_fini,
};
