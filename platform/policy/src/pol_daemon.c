/* skiff-policy: the admission webhook server, config and lifecycle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

struct pol_app {
  uv_loop_t *loop;
  const pol_config_t *cfg;
  pol_set_t *set;
  sk_http_server_t *srv;
  sk_tls_ctx_t *tls;
  sk_logger_t *log;
  sk_mfamily_t *reviews;    /* skiff_policy_reviews_total{endpoint,result} */
  sk_mfamily_t *duration;   /* skiff_policy_review_duration_seconds{endpoint} */
  sk_gauge_t *rules;        /* skiff_policy_rules */
  sk_gauge_t *policies;     /* skiff_policy_policies */
  sk_mfamily_t *verify;     /* skiff_policy_image_verifications_total{result} */
  void (*drain_cb)(void *ud);
  void *drain_ud;
  pol_images_t *images;     /* verifyImages: registry access and cache */
  size_t inflight;          /* reviews evaluated on worker threads */
  pol_set_t **retired;      /* replaced sets still used by those */
  size_t nretired;
  pol_bg_t *bg;             /* background scans (background.control set) */
};

/* A review evaluated off the loop (its policies verify image signatures,
 * which means registry round trips). */
typedef struct pol_work {
  uv_work_t w;
  pol_app_t *a;
  sk_http_req_t *req;
  const pol_set_t *set;
  json_t *review;
  pol_report_t rep;
  sk_buf_t out;
  int mutate, rc, aborted;
  const char *endpoint;
} pol_work_t;

static const double review_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                        0.005,   0.01,   0.025,   0.05,   0.1,   1};

static void record(pol_app_t *a, const char *endpoint, const char *result, const sk_http_req_t *req) {
  const char *vals[2] = {endpoint, result};
  sk_counter_t *c = NULL;
  if (a->reviews && sk_counter_with(a->reviews, vals, &c) == 0) sk_counter_inc(c);
  sk_histogram_t *h = NULL;
  if (a->duration && sk_histogram_with(a->duration, vals, &h) == 0)
    sk_histogram_observe(h, (double)(uv_hrtime() - req->start_ns) / 1e9);
}

static void reply_text(pol_app_t *a, sk_http_req_t *req, const char *endpoint, int status, const char *msg) {
  record(a, endpoint, status == 400 || status == 413 ? "invalid" : "other", req);
  char *body = sk_pool_printf(req->pool, "%s\n", msg);
  sk_http_respond_text(req, status, "text/plain; charset=utf-8", body);
}

static void answer(pol_app_t *a, sk_http_req_t *req, const char *endpoint, int rc, const json_t *review,
                   const pol_report_t *rep, const sk_buf_t *b) {
  const json_t *r = json_object_get(review, "request");
  if (rc < 0) {
    reply_text(a, req, endpoint, 500, "cannot evaluate the review");
    return;
  }
  int denied = pol_report_denied(rep);
  record(a, endpoint, denied ? "denied" : "allowed", req);
  for (size_t i = 0; a->verify && i < rep->n; i++) { /* verifyImages outcomes, one per rule */
    const pol_result_t *x = &rep->v[i];
    if (x->type != POL_RULE_VERIFY || x->status == POL_SKIP) continue;
    const char *v[1] = {x->status == POL_PASS ? "verified" : x->status == POL_ERROR ? "error" : "failed"};
    sk_counter_t *c = NULL;
    if (sk_counter_with(a->verify, v, &c) == 0) sk_counter_inc(c);
  }
  if (denied && a->log && sk_log_enabled(a->log, SK_LOG_INFO))
    sk_log_kv(a->log, SK_LOG_INFO, "denied", "uid", sk_json_get_str(r, "uid", ""), "kind",
              sk_json_get_str(r, "kind.kind", ""), "name", sk_json_get_str(r, "name", ""), "dry_run",
              sk_json_get_bool(r, "dryRun", 0) ? "true" : "false", NULL);
  static const sk_http_header_t h[] = {{"content-type", "application/json"}};
  sk_http_respond(req, 200, h, 1, b->data, b->len);
}

static pol_images_t *make_images(const pol_config_t *cfg);

static void free_retired(pol_app_t *a) {
  if (a->inflight) return;
  for (size_t i = 0; i < a->nretired; i++) {
    pol_set_done(a->retired[i]);
    free(a->retired[i]);
  }
  free(a->retired);
  a->retired = NULL;
  a->nretired = 0;
}

static void work_aborted(sk_http_req_t *req, void *ud) {
  (void)req;
  ((pol_work_t *)ud)->aborted = 1;
}

static void work_run(uv_work_t *uw) {
  pol_work_t *w = uw->data;
  const json_t *r = json_object_get(w->review, "request");
  w->rc = w->mutate ? pol_mutate(w->set, r, &w->rep) : pol_validate(w->set, r, &w->rep);
  if (w->rc >= 0) w->rc = pol_review_encode(w->review, &w->rep, w->mutate, &w->out);
}

static void work_done(uv_work_t *uw, int status) {
  pol_work_t *w = uw->data;
  pol_app_t *a = w->a;
  if (!w->aborted) {
    sk_http_req_on_abort(w->req, NULL, NULL);
    answer(a, w->req, w->endpoint, status < 0 ? SK_ECANCELED : w->rc, w->review, &w->rep, &w->out);
  }
  sk_buf_done(&w->out);
  pol_report_done(&w->rep);
  json_decref(w->review);
  free(w);
  a->inflight--;
  free_retired(a);
}

static void handle(sk_http_req_t *req, void *ud) {
  pol_app_t *a = ud;
  int mutate;
  const char *endpoint;
  if (!strcmp(req->path, "/validate")) mutate = 0, endpoint = "validate";
  else if (!strcmp(req->path, "/mutate")) mutate = 1, endpoint = "mutate";
  else {
    char *msg = sk_pool_printf(req->pool, "not found: %.200s (the webhook serves POST /validate and POST /mutate)",
                               req->path);
    reply_text(a, req, "other", 404, msg);
    return;
  }
  if (strcmp(req->method, "POST")) {
    static const sk_http_header_t allow[] = {{"allow", "POST"}, {"content-type", "text/plain; charset=utf-8"}};
    record(a, endpoint, "other", req);
    sk_http_respond(req, 405, allow, 2, "method not allowed: use POST\n", 29);
    return;
  }
  json_t *review = NULL;
  char err[512];
  int rc = pol_review_decode((const char *)req->body, req->body_len, (size_t)a->cfg->max_body, a->cfg->max_depth,
                             &review, err, sizeof err);
  if (rc < 0) {
    char *msg = sk_pool_printf(req->pool, "invalid AdmissionReview: %s", err);
    reply_text(a, req, endpoint, 400, msg);
    return;
  }
  if (a->set->nverify) {
    /* image signatures need the registry: evaluate on a worker thread */
    pol_work_t *w = sk_xcalloc(1, sizeof *w);
    w->a = a;
    w->req = req;
    w->set = a->set;
    w->review = review;
    w->mutate = mutate;
    w->endpoint = endpoint;
    w->w.data = w;
    pol_report_init(&w->rep);
    sk_buf_init(&w->out);
    sk_http_req_on_abort(req, work_aborted, w);
    a->inflight++;
    if (uv_queue_work(a->loop, &w->w, work_run, work_done) == 0) return;
    a->inflight--;
    sk_http_req_on_abort(req, NULL, NULL);
    sk_buf_done(&w->out);
    free(w);
  }
  const json_t *r = json_object_get(review, "request");
  pol_report_t rep;
  pol_report_init(&rep);
  rc = mutate ? pol_mutate(a->set, r, &rep) : pol_validate(a->set, r, &rep);
  sk_buf_t b;
  sk_buf_init(&b);
  if (rc >= 0) rc = pol_review_encode(review, &rep, mutate, &b);
  answer(a, req, endpoint, rc, review, &rep, &b);
  sk_buf_done(&b);
  pol_report_done(&rep);
  json_decref(review);
}

static void count_set(pol_app_t *a) {
  sk_gauge_set(a->policies, (double)a->set->n);
  sk_gauge_set(a->rules, (double)pol_set_rule_count(a->set));
}

int pol_app_new(uv_loop_t *loop, const pol_config_t *cfg, pol_set_t *set, sk_metrics_t *reg, sk_logger_t *log,
                pol_app_t **out, char *err, size_t errlen) {
  pol_app_t *a = sk_xcalloc(1, sizeof *a);
  int rc;
  *out = NULL;
  a->loop = loop;
  a->cfg = cfg;
  a->set = set;
  a->log = log;
  a->images = make_images(cfg);
  set->images = a->images;
  if (reg) {
    static const char *const l2[] = {"endpoint", "result"};
    static const char *const l1[] = {"result"};
    if ((rc = sk_metrics_counter_family(reg, "skiff_policy_reviews_total",
                                        "Admission reviews answered, by endpoint and result.", l2, 2, &a->reviews)) < 0 ||
        (rc = sk_metrics_histogram_family(reg, "skiff_policy_review_duration_seconds",
                                          "Time from request start to the answer.", l2, 2, review_buckets,
                                          sizeof review_buckets / sizeof review_buckets[0], &a->duration)) < 0 ||
        (rc = sk_metrics_gauge(reg, "skiff_policy_policies", "Policies loaded.", &a->policies)) < 0 ||
        (rc = sk_metrics_gauge(reg, "skiff_policy_rules", "Rules loaded.", &a->rules)) < 0 ||
        (rc = sk_metrics_counter_family(reg, "skiff_policy_image_verifications_total",
                                        "verifyImages rule outcomes: verified, failed (signature), error (registry).",
                                        l1, 1, &a->verify)) < 0) {
      snprintf(err, errlen, "metrics: %s", sk_strerror(rc));
      goto fail;
    }
  }
  if (cfg->tls.cert && *cfg->tls.cert) {
    sk_tls_opts_t to = {.is_server = 1,
                        .cert_file = cfg->tls.cert,
                        .key_file = cfg->tls.key,
                        .ca_file = cfg->tls.ca && *cfg->tls.ca ? cfg->tls.ca : NULL,
                        .verify = (sk_tls_verify_t)cfg->tls.client_auth};
    if ((rc = sk_tls_ctx_new(&to, &a->tls, err, errlen)) < 0) goto fail;
  }
  sk_http_server_opts_t so = {
      .host = cfg->listen.host[0] ? cfg->listen.host : "127.0.0.1",
      .port = cfg->listen.port,
      .tls = a->tls,
      .max_body_bytes = cfg->max_body ? (size_t)cfg->max_body : POL_REVIEW_MAX_BYTES,
      .server_name = "skiff-policy",
  };
  if ((rc = sk_http_server_new(loop, &so, handle, a, &a->srv)) < 0) {
    char addr[300];
    sk_config_format_addr(&cfg->listen, addr, sizeof addr);
    snprintf(err, errlen, "cannot listen on %s: %s", addr, sk_strerror(rc));
    goto fail;
  }
  count_set(a);
  *out = a;
  return 0;
fail:
  sk_tls_ctx_unref(a->tls);
  pol_images_free(a->images);
  set->images = NULL;
  free(a);
  return rc;
}

int pol_app_port(const pol_app_t *a) { return a && a->srv ? sk_http_server_port(a->srv) : -1; }

const pol_set_t *pol_app_hold_set(pol_app_t *a) {
  a->inflight++;
  return a->set;
}

void pol_app_release_set(pol_app_t *a) {
  a->inflight--;
  free_retired(a);
}

void pol_app_set_policies(pol_app_t *a, pol_set_t *set) {
  if (a->inflight) { /* worker threads still read it */
    a->retired = sk_xrealloc(a->retired, (a->nretired + 1) * sizeof *a->retired);
    a->retired[a->nretired++] = a->set;
  } else {
    pol_set_done(a->set);
    free(a->set);
  }
  a->set = set;
  set->images = a->images;
  count_set(a);
}

/* The verifier from the registry section (replaced on reload: the old one
 * stays until no worker uses it). */
static pol_images_t *make_images(const pol_config_t *cfg) {
  const pol_reg_config_t *rc = &cfg->registry;
  pol_registry_opts_t o = {.insecure = (const char *const *)rc->insecure.v,
                           .ninsecure = rc->insecure.n,
                           .ca_file = rc->ca,
                           .timeout_ms = rc->timeout_ms,
                           .username = rc->username,
                           .password = rc->password};
  pol_images_t *v = NULL;
  pol_images_new(&o, rc->cache_ttl_ms, (size_t)rc->cache_size, &v);
  return v;
}

static void drained(sk_http_server_t *s, void *ud) {
  pol_app_t *a = ud;
  void (*cb)(void *) = a->drain_cb;
  a->drain_cb = NULL;
  if (cb) cb(a->drain_ud);
}

static void bg_drained(void *ud) {
  pol_app_t *a = ud;
  sk_http_server_drain(a->srv, drained, a);
}

void pol_app_drain(pol_app_t *a, void (*cb)(void *ud), void *ud) {
  a->drain_cb = cb;
  a->drain_ud = ud;
  pol_bg_drain(a->bg, bg_drained, a);
}

void pol_app_free(pol_app_t *a) {
  if (!a) return;
  pol_bg_free(a->bg);
  sk_http_server_free(a->srv);
  sk_tls_ctx_unref(a->tls);
  pol_set_done(a->set);
  free(a->set);
  free_retired(a);
  pol_images_free(a->images);
  free(a);
}

int pol_load_config_policies(const pol_config_t *cfg, pol_set_t **out, char *err, size_t errlen) {
  pol_set_t *s = sk_xcalloc(1, sizeof *s);
  pol_set_init(s);
  for (size_t i = 0; i < cfg->policies.n; i++) {
    int rc = pol_set_load_path(s, cfg->policies.v[i], err, errlen);
    if (rc < 0) {
      pol_set_done(s);
      free(s);
      *out = NULL;
      return rc;
    }
  }
  *out = s;
  return 0;
}

/* ---- config and lifecycle ---- */

static const char *const client_auth_names[] = {"none", "optional", "require", NULL};

static const sk_config_entry_t pol_tls_entries[] = {
    SK_CFG_STRING_E("cert", "", pol_tls_config_t, cert, "PEM certificate chain; empty = plain HTTP (tests only)"),
    SK_CFG_STRING_E("key", "", pol_tls_config_t, key, "PEM private key"),
    SK_CFG_STRING_E("ca", "", pol_tls_config_t, ca, "CA bundle for client certificates (mTLS)"),
    SK_CFG_ENUM_E("client_auth", "none", client_auth_names, pol_tls_config_t, client_auth,
                  "client certificates: none, optional or require"),
    SK_CFG_END_E};
static const sk_config_schema_t pol_tls_schema = SK_CFG_SCHEMA("policy.tls", pol_tls_config_t, pol_tls_entries);

static int check_body(const void *field, char *msg, size_t msglen) {
  uint64_t v = *(const uint64_t *)field;
  if (v < 1024 || v > (64u << 20)) {
    snprintf(msg, msglen, "between 1KiB and 64MiB");
    return SK_ERANGE;
  }
  return 0;
}

static int check_tls(const void *section, char *msg, size_t msglen) {
  const pol_config_t *c = section;
  int has_cert = c->tls.cert && *c->tls.cert, has_key = c->tls.key && *c->tls.key;
  if (has_cert != has_key) {
    snprintf(msg, msglen, "tls.cert and tls.key go together");
    return SK_EINVAL;
  }
  if (c->tls.client_auth && !(c->tls.ca && *c->tls.ca)) {
    snprintf(msg, msglen, "tls.client_auth needs tls.ca");
    return SK_EINVAL;
  }
  return 0;
}

/* So that --check (and a SIGHUP reload) also proves every policy loads. */
static int check_policies(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  for (size_t i = 0; i < l->n; i++) {
    pol_set_t s;
    pol_set_init(&s);
    int rc = pol_set_load_path(&s, l->v[i], msg, msglen);
    pol_set_done(&s);
    if (rc < 0) return rc;
  }
  return 0;
}

static int check_insecure(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  for (size_t i = 0; i < l->n; i++) {
    const char *h = l->v[i];
    if (strncmp(h, "127.", 4) && strncmp(h, "localhost:", 10) && strncmp(h, "[::1]:", 6) && strcmp(h, "localhost")) {
      snprintf(msg, msglen, "%.200s: plain http is only allowed for loopback registries (127.x, localhost, [::1])", h);
      return SK_EINVAL;
    }
  }
  return 0;
}

static const sk_config_entry_t pol_reg_entries[] = {
    {SK_CFG_E_("insecure", SK_CFG_STRLIST, NULL, pol_reg_config_t, insecure,
               "host:port of loopback registries spoken to over plain http"),
     .validate = check_insecure},
    SK_CFG_STRING_E("ca", "", pol_reg_config_t, ca, "CA bundle for https registries (default: the system's)"),
    SK_CFG_DURATION_E("timeout", "10s", pol_reg_config_t, timeout_ms, "per registry request"),
    SK_CFG_DURATION_E("cache_ttl", "5m", pol_reg_config_t, cache_ttl_ms, "how long a verified digest is trusted"),
    SK_CFG_INT_E("cache_size", "4096", 16, 1000000, pol_reg_config_t, cache_size, "verified digests kept"),
    SK_CFG_STRING_E("username", "", pol_reg_config_t, username, "registry user (Basic or token service)"),
    {SK_CFG_E_("password", SK_CFG_STRING, "", pol_reg_config_t, password, "registry password (use ${ENV})"),
     .flags = SK_CFG_SECRET},
    SK_CFG_END_E};
static const sk_config_schema_t pol_reg_schema = SK_CFG_SCHEMA("policy.registry", pol_reg_config_t, pol_reg_entries);

static int check_control(const void *field, char *msg, size_t msglen) {
  const char *u = *(char *const *)field;
  if (u && *u && strncmp(u, "https://", 8)) {
    snprintf(msg, msglen, "an https:// URL of skiff-control (mutual TLS with the daemon's identity)");
    return SK_EINVAL;
  }
  return 0;
}

static int check_interval(const void *field, char *msg, size_t msglen) {
  if (*(const uint64_t *)field < 1000) {
    snprintf(msg, msglen, "at least 1s");
    return SK_ERANGE;
  }
  return 0;
}

static const sk_config_entry_t pol_bg_entries[] = {
    {SK_CFG_E_("control", SK_CFG_STRING, "", pol_bg_config_t, control,
               "skiff-control's API, https://host:port; empty = no background scans"),
     .validate = check_control},
    SK_CFG_STRING_E("control_ca", "", pol_bg_config_t, control_ca, "CA bundle for control (default: the identity's)"),
    {SK_CFG_E_("interval", SK_CFG_DURATION, "60s", pol_bg_config_t, interval_ms, "time between scans"),
     .validate = check_interval},
    {SK_CFG_E_("timeout", SK_CFG_DURATION, "30s", pol_bg_config_t, timeout_ms, "per list request to control"),
     .validate = check_interval},
    SK_CFG_STRLIST_E("kinds", NULL, pol_bg_config_t, kinds, "kinds listed and evaluated (default: services, routes)"),
    SK_CFG_INT_E("max_results", "1000", 1, 100000, pol_bg_config_t, max_results,
                 "results kept per report; the summary still counts all of them"),
    SK_CFG_INT_E("max_objects", "100000", 1, 10000000, pol_bg_config_t, max_objects, "objects listed per scan"),
    SK_CFG_END_E};
static const sk_config_schema_t pol_bg_schema = SK_CFG_SCHEMA("policy.background", pol_bg_config_t, pol_bg_entries);

static const sk_config_entry_t pol_entries[] = {
    SK_CFG_ADDR_E("listen", "127.0.0.1:8443", pol_config_t, listen, "HTTPS listener for POST /validate and /mutate"),
    SK_CFG_SECTION_E("tls", &pol_tls_schema, pol_config_t, tls, "server certificate (from control's CA)"),
    SK_CFG_SECTION_E("registry", &pol_reg_schema, pol_config_t, registry,
                     "image registries for verifyImages (signatures, digests)"),
    {SK_CFG_E_("policies", SK_CFG_STRLIST, NULL, pol_config_t, policies,
               "policy files or directories (*.yaml, *.yml, *.json); reloaded on SIGHUP"),
     .validate = check_policies},
    {SK_CFG_E_("max_body", SK_CFG_SIZE, "3MiB", pol_config_t, max_body, "AdmissionReview size limit"),
     .validate = check_body},
    SK_CFG_INT_E("max_depth", "64", 8, 256, pol_config_t, max_depth, "JSON nesting limit of a review"),
    SK_CFG_SECTION_E("background", &pol_bg_schema, pol_config_t, background,
                     "periodic audit of control's objects into PolicyReports (GET /reports on the admin listener)"),
    SK_CFG_END_E};

const sk_config_schema_t pol_config_schema = {.name = "policy",
                                              .size = sizeof(pol_config_t),
                                              .entries = pol_entries,
                                              .check = check_tls};

static void interval_log(sk_daemon_t *d, const pol_config_t *cfg) {
  char iv[32];
  snprintf(iv, sizeof iv, "%llums", (unsigned long long)cfg->background.interval_ms);
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "background scans", "control", cfg->background.control, "interval", iv,
            NULL);
}

static int pol_init(sk_daemon_t *d, void *cfgp) {
  pol_config_t *cfg = cfgp;
  char err[1024];
  pol_set_t *set = NULL;
  int rc = pol_load_config_policies(cfg, &set, err, sizeof err);
  if (rc < 0) {
    sk_log_error(sk_daemon_log(d), "policies: %s", err);
    return rc;
  }
  pol_app_t *a = NULL;
  if ((rc = pol_app_new(sk_daemon_loop(d), cfg, set, sk_daemon_metrics(d), sk_daemon_log(d), &a, err, sizeof err)) <
      0) {
    pol_set_done(set);
    free(set);
    sk_log_error(sk_daemon_log(d), "%s", err);
    return rc;
  }
  sk_daemon_set_data(d, a);
  if (cfg->background.control && *cfg->background.control) {
    if ((rc = pol_bg_new(d, a, &cfg->background, &a->bg, err, sizeof err)) < 0) {
      sk_log_error(sk_daemon_log(d), "%s", err);
      return rc;
    }
    interval_log(d, cfg);
  }
  char addr[300], np[32], nr[32];
  sk_cfg_addr_t shown = cfg->listen;
  shown.port = pol_app_port(a);
  sk_config_format_addr(&shown, addr, sizeof addr);
  snprintf(np, sizeof np, "%zu", set->n);
  snprintf(nr, sizeof nr, "%zu", pol_set_rule_count(set));
  if (!cfg->tls.cert || !*cfg->tls.cert)
    sk_log_warn(sk_daemon_log(d), "no tls.cert: serving plain HTTP (the API server needs HTTPS)");
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "serving", "addr", addr, "tls", cfg->tls.cert && *cfg->tls.cert ? "on" : "off",
            "policies", np, "rules", nr, NULL);
  sk_daemon_set_ready(d, 1);
  return 0;
}

static int pol_reload(sk_daemon_t *d, void *new_cfgp) {
  pol_app_t *a = sk_daemon_get_data(d);
  pol_config_t *cfg = new_cfgp;
  const pol_config_t *old = sk_daemon_config(d);
  char err[1024];
  pol_set_t *set = NULL;
  int rc = pol_load_config_policies(cfg, &set, err, sizeof err);
  if (rc < 0) {
    sk_log_error(sk_daemon_log(d), "reload refused, keeping the current policies: %s", err);
    return rc;
  }
  if (old && (strcmp(old->listen.host, cfg->listen.host) || old->listen.port != cfg->listen.port))
    sk_log_warn(sk_daemon_log(d), "listen changed: takes effect after a restart");
  if (a) {
    if (a->tls && sk_tls_ctx_reload(a->tls, err, sizeof err) < 0)
      sk_log_warn(sk_daemon_log(d), "tls reload failed, keeping the current certificate: %s", err);
    a->cfg = cfg;
    if (a->inflight == 0) { /* registry settings take effect when no review is using them */
      pol_images_free(a->images);
      a->images = make_images(cfg);
    }
    pol_app_set_policies(a, set);
  } else {
    pol_set_done(set);
    free(set);
  }
  char np[32];
  snprintf(np, sizeof np, "%zu", a ? a->set->n : 0);
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "reloaded", "policies", np, NULL);
  return 0;
}

static void drained_cb(void *ud) { sk_daemon_drained(ud); }

static void pol_drain(sk_daemon_t *d) {
  pol_app_t *a = sk_daemon_get_data(d);
  if (!a) {
    sk_daemon_drained(d);
    return;
  }
  pol_app_drain(a, drained_cb, d);
}

static void pol_fini(sk_daemon_t *d) {
  pol_app_free(sk_daemon_get_data(d));
  sk_daemon_set_data(d, NULL);
}

const sk_daemon_desc_t pol_daemon_desc = {
    .name = "skiff-policy",
    .version = SKIFF_VERSION,
    .summary = "admission webhook and policy engine (Kyverno policies)",
    .schema = &pol_config_schema,
    .init = pol_init,
    .reload = pol_reload,
    .drain = pol_drain,
    .fini = pol_fini,
};
