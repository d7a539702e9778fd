/* skiff-policy background scans: control's objects evaluated against the
 * background policies, kept as wgpolicyk8s.io/v1alpha2 PolicyReports.
 *
 * On the daemon's loop a timer starts a scan: each configured kind is listed
 * from control (GET /api/v1/{kind}?limit=500, following metadata.continue)
 * over mutual TLS with the daemon's identity. The objects then go to a
 * worker thread (verifyImages rules may talk to registries) that builds one
 * PolicyReport per namespace and one ClusterPolicyReport with
 * pol_policy_report; back on the loop the new set replaces the old one.
 * A failed scan keeps the previous reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/ident.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#define BG_PAGE 500
#define BG_MAX_PAGES 10000

struct pol_bg {
  uv_loop_t *loop;
  pol_app_t *app;
  sk_logger_t *log;
  sk_http_client_t *cl;
  sk_tls_ctx_t *tls;
  char host[256];
  int port;
  char **kinds;
  size_t nkinds;
  uint64_t interval_ms;
  size_t max_results, max_objects;
  uv_timer_t timer;
  int timer_open;
  /* the scan in progress */
  int scanning;
  size_t kind_i, pages;
  char *cont;
  json_t *items;
  uint64_t t0;
  int truncated;
  /* its evaluation on a worker thread */
  uv_work_t work;
  int working;
  const pol_set_t *set;
  json_t *new_reports;
  size_t counts[5];
  /* results */
  json_t *reports; /* array of the latest reports */
  long last_scan;
  int closing;
  int client_alive; /* until the client's gate reports every connection gone */
  void (*drain_cb)(void *ud);
  void *drain_ud;
  sk_mfamily_t *scans;     /* skiff_policy_background_scans_total{result} */
  sk_histogram_t *dur;     /* skiff_policy_background_scan_duration_seconds */
  sk_mfamily_t *results;   /* skiff_policy_background_results{result} */
  sk_gauge_t *objects;     /* skiff_policy_background_objects */
};

static const double scan_buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60};

static void maybe_free(pol_bg_t *b);

/* Draining ends once no evaluation runs and the client is gone: a list
 * answer still arriving must not leave a connection to the lifecycle's
 * final handle walk. */
static void drain_check(pol_bg_t *b) {
  if (!b->closing || !b->drain_cb || b->working || b->client_alive) return;
  void (*cb)(void *) = b->drain_cb;
  b->drain_cb = NULL;
  cb(b->drain_ud);
}
static void next_request(pol_bg_t *b);

static void count_scan(pol_bg_t *b, const char *result) {
  const char *v[1] = {result};
  sk_counter_t *c = NULL;
  if (b->scans && sk_counter_with(b->scans, v, &c) == 0) sk_counter_inc(c);
}

static void scan_reset(pol_bg_t *b) {
  json_decref(b->items);
  b->items = NULL;
  free(b->cont);
  b->cont = NULL;
  b->scanning = 0;
}

static void scan_failed(pol_bg_t *b, const char *what) {
  count_scan(b, "error");
  if (b->log)
    sk_log_kv(b->log, SK_LOG_WARN, "background scan failed, keeping the previous reports", "error", what, NULL);
  scan_reset(b);
}

/* ---- evaluation (worker thread) ---- */

static void add_counts(pol_bg_t *b, const json_t *rep) {
  static const char *const names[5] = {"pass", "fail", "warn", "error", "skip"};
  const json_t *sum = json_object_get(rep, "summary");
  for (int i = 0; i < 5; i++) b->counts[i] += (size_t)json_integer_value(json_object_get(sum, names[i]));
}

static void work_run(uv_work_t *w) {
  pol_bg_t *b = w->data;
  json_t *out = json_array(), *nss = json_object();
  size_t i;
  json_t *obj;
  int cluster = 0;
  json_array_foreach(b->items, i, obj) {
    const char *ns = sk_json_get_str(obj, "metadata.namespace", NULL);
    if (ns) json_object_set_new(nss, ns, json_true());
    else cluster = 1;
  }
  /* namespaces in name order, so the answer is stable */
  size_t n = json_object_size(nss), k = 0;
  const char **names = sk_xcalloc(n ? n : 1, sizeof *names);
  const char *key;
  json_t *v;
  json_object_foreach(nss, key, v) names[k++] = key;
  for (size_t x = 1; x < n; x++)
    for (size_t y = x; y > 0 && strcmp(names[y - 1], names[y]) > 0; y--) {
      const char *t = names[y];
      names[y] = names[y - 1];
      names[y - 1] = t;
    }
  memset(b->counts, 0, sizeof b->counts);
  for (k = 0; k < n; k++) {
    json_t *rep = pol_policy_report(b->set, b->items, names[k], b->max_results);
    add_counts(b, rep);
    json_array_append_new(out, rep);
  }
  if (cluster) {
    json_t *rep = pol_policy_report(b->set, b->items, NULL, b->max_results);
    add_counts(b, rep);
    json_array_append_new(out, rep);
  }
  free(names);
  json_decref(nss);
  b->new_reports = out;
}

static void work_done(uv_work_t *w, int status) {
  pol_bg_t *b = w->data;
  b->working = 0;
  if (b->app) pol_app_release_set(b->app);
  b->set = NULL;
  if (status == 0 && b->new_reports && !b->closing) {
    static const char *const names[5] = {"pass", "fail", "warn", "error", "skip"};
    json_decref(b->reports);
    b->reports = b->new_reports;
    b->new_reports = NULL;
    b->last_scan = (long)time(NULL);
    count_scan(b, b->truncated ? "truncated" : "ok");
    if (b->dur) sk_histogram_observe(b->dur, (double)(uv_hrtime() - b->t0) / 1e9);
    for (int i = 0; i < 5; i++) {
      const char *lv[1] = {names[i]};
      sk_gauge_t *g = NULL;
      if (b->results && sk_gauge_with(b->results, lv, &g) == 0) sk_gauge_set(g, (double)b->counts[i]);
    }
    if (b->objects) sk_gauge_set(b->objects, (double)json_array_size(b->items));
  }
  json_decref(b->new_reports);
  b->new_reports = NULL;
  scan_reset(b);
  if (b->closing) {
    drain_check(b);
    maybe_free(b);
  }
}

static void evaluate(pol_bg_t *b) {
  b->set = pol_app_hold_set(b->app);
  b->work.data = b;
  b->working = 1;
  if (uv_queue_work(b->loop, &b->work, work_run, work_done) != 0) {
    b->working = 0;
    pol_app_release_set(b->app);
    b->set = NULL;
    scan_failed(b, "cannot queue the evaluation");
  }
}

/* ---- listing (loop) ---- */

static int unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

static void on_list(int err, sk_http_resp_t *resp, void *ud) {
  pol_bg_t *b = ud;
  char what[512];
  json_t *doc = NULL;
  if (b->closing) {
    scan_reset(b);
    maybe_free(b);
    return;
  }
  const char *kind = b->kinds[b->kind_i];
  if (err < 0 || !resp) {
    snprintf(what, sizeof what, "GET %s: control unreachable: %s", kind, sk_strerror(err < 0 ? err : SK_EIO));
    goto fail;
  }
  if (resp->status != 200) {
    snprintf(what, sizeof what, "GET %s: HTTP %d: %.300s", kind, resp->status,
             resp->body_len ? (const char *)resp->body : "");
    goto fail;
  }
  json_error_t je;
  doc = json_loadb((const char *)resp->body, resp->body_len, 0, &je);
  const json_t *items = json_object_get(doc, "items");
  if (!json_is_array(items)) {
    snprintf(what, sizeof what, "GET %s: not a list: %s", kind, doc ? "no items" : je.text);
    goto fail;
  }
  size_t i;
  json_t *o;
  json_array_foreach(items, i, o) {
    if (json_array_size(b->items) >= b->max_objects) {
      b->truncated = 1;
      break;
    }
    if (json_is_object(o)) json_array_append(b->items, o);
  }
  free(b->cont);
  b->cont = NULL;
  const char *c = sk_json_get_str(doc, "metadata.continue", NULL);
  if (c && *c && !b->truncated && ++b->pages < BG_MAX_PAGES) b->cont = sk_xstrdup(c);
  else {
    b->kind_i++;
    b->pages = 0;
  }
  json_decref(doc);
  next_request(b);
  return;
fail:
  json_decref(doc);
  scan_failed(b, what);
}

static void next_request(pol_bg_t *b) {
  if (b->kind_i >= b->nkinds || b->truncated) {
    if (b->truncated && b->log)
      sk_log_warn(b->log, "background scan: more than max_objects (%zu) objects, the rest is not reported",
                  b->max_objects);
    evaluate(b);
    return;
  }
  sk_buf_t p;
  sk_buf_init(&p);
  sk_buf_printf(&p, "/api/v1/%s?limit=%d", b->kinds[b->kind_i], BG_PAGE);
  if (b->cont) {
    sk_buf_append(&p, "&continue=", 10);
    for (const unsigned char *s = (const unsigned char *)b->cont; *s; s++) {
      if (unreserved(*s)) sk_buf_append(&p, s, 1);
      else sk_buf_printf(&p, "%%%02X", *s);
    }
  }
  sk_buf_append(&p, "", 1);
  static const sk_http_header_t h[] = {{"accept", "application/json"}};
  int rc = sk_http_client_request(b->cl, "GET", (const char *)p.data, h, 1, NULL, 0, on_list, b);
  sk_buf_done(&p);
  if (rc < 0) {
    char what[256];
    snprintf(what, sizeof what, "GET %s: %s", b->kinds[b->kind_i], sk_strerror(rc));
    scan_failed(b, what);
  }
}

void pol_bg_scan_now(pol_bg_t *b) {
  if (!b || b->scanning || b->working || b->closing) return;
  b->scanning = 1;
  b->kind_i = 0;
  b->pages = 0;
  b->truncated = 0;
  b->items = json_array();
  b->t0 = uv_hrtime();
  next_request(b);
}

static void on_timer(uv_timer_t *t) { pol_bg_scan_now(t->data); }

static void client_gone(void *ud) {
  pol_bg_t *b = ud;
  b->client_alive = 0;
  drain_check(b);
  maybe_free(b);
}

/* ---- GET /reports ---- */

static void serve_reports(sk_http_req_t *req, void *ud) {
  pol_bg_t *b = ud;
  const char *want = NULL;
  char nsbuf[256];
  for (const char *q = req->query; q && *q;) {
    const char *amp = strchr(q, '&');
    size_t len = amp ? (size_t)(amp - q) : strlen(q);
    if (len > 10 && !strncmp(q, "namespace=", 10)) {
      size_t vl = len - 10;
      if (vl >= sizeof nsbuf) vl = sizeof nsbuf - 1;
      memcpy(nsbuf, q + 10, vl);
      nsbuf[vl] = 0;
      want = nsbuf;
    }
    q = amp ? amp + 1 : NULL;
  }
  if (want)
    for (const char *s = want; *s; s++)
      if (!(*s >= 'a' && *s <= 'z') && !(*s >= '0' && *s <= '9') && *s != '-' && *s != '.') {
        static const char msg[] = "bad namespace: lowercase letters, digits, '-' and '.'\n";
        static const sk_http_header_t th[] = {{"content-type", "text/plain; charset=utf-8"}};
        sk_http_respond(req, 400, th, 1, msg, sizeof msg - 1);
        return;
      }
  json_t *items = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(b->reports, i, r) {
    const char *ns = sk_json_get_str(r, "metadata.namespace", NULL);
    if (!want || (ns && !strcmp(ns, want))) json_array_append(items, r);
  }
  json_t *doc = json_pack("{s:s,s:s,s:{s:I},s:o}", "apiVersion", "wgpolicyk8s.io/v1alpha2", "kind", "PolicyReportList",
                          "metadata", "lastScan", (json_int_t)b->last_scan, "items", items);
  char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  static const sk_http_header_t h[] = {{"content-type", "application/json"}};
  if (!s) {
    static const char msg[] = "cannot encode the reports\n";
    sk_http_respond(req, 500, h, 1, msg, sizeof msg - 1);
    return;
  }
  sk_http_respond(req, 200, h, 1, s, strlen(s));
  free(s);
}

/* ---- lifecycle ---- */

int pol_bg_new(sk_daemon_t *d, pol_app_t *app, const pol_bg_config_t *cfg, pol_bg_t **out, char *err,
               size_t errlen) {
  *out = NULL;
  sk_ident_t *ident = sk_daemon_ident(d);
  sk_http_url_t u;
  int rc = sk_http_url_parse(cfg->control, &u);
  if (rc < 0 || !u.tls) {
    snprintf(err, errlen, "background.control: an https:// URL of skiff-control is needed, not '%.200s'",
             cfg->control);
    return rc < 0 ? rc : SK_ECONFIG;
  }
  if (!ident) {
    snprintf(err, errlen, "background.control: the daemon needs an identity (identity:) to authenticate to control");
    return SK_ECONFIG;
  }
  pol_bg_t *b = sk_xcalloc(1, sizeof *b);
  b->loop = sk_daemon_loop(d);
  b->app = app;
  b->log = sk_daemon_log(d);
  snprintf(b->host, sizeof b->host, "%s", u.host);
  b->port = u.port ? u.port : 7400;
  b->interval_ms = cfg->interval_ms;
  b->max_results = (size_t)cfg->max_results;
  b->max_objects = (size_t)cfg->max_objects;
  b->reports = json_array();
  static const char *const defaults[] = {"services", "routes"};
  b->nkinds = cfg->kinds.n ? cfg->kinds.n : 2;
  b->kinds = sk_xcalloc(b->nkinds, sizeof *b->kinds);
  for (size_t i = 0; i < b->nkinds; i++) b->kinds[i] = sk_xstrdup(cfg->kinds.n ? cfg->kinds.v[i] : defaults[i]);
  /* built from the identity's files: renewed certificates are picked up */
  sk_tls_opts_t to = {.is_server = 0,
                      .ca_file = cfg->control_ca && *cfg->control_ca ? cfg->control_ca : sk_ident_bundle_path(ident),
                      .verify = SK_TLS_VERIFY_REQUIRE,
                      .alpn = "http/1.1",
                      .cert_file = sk_ident_cert_path(ident),
                      .key_file = sk_ident_key_path(ident)};
  if ((rc = sk_tls_ctx_new(&to, &b->tls, err, errlen)) < 0) goto fail;
  sk_http_client_gate_t gate = {.done = client_gone, .ud = b};
  sk_http_client_opts_t co = {.host = b->host,
                              .port = b->port,
                              .tls = b->tls,
                              .sni = b->host,
                              .request_timeout_ms = cfg->timeout_ms,
                              .max_conns = 2,
                              .gate = &gate};
  if ((rc = sk_http_client_new(b->loop, &co, &b->cl)) < 0) {
    snprintf(err, errlen, "background: cannot create the HTTP client: %s", sk_strerror(rc));
    goto fail;
  }
  b->client_alive = 1;
  sk_metrics_t *reg = sk_daemon_metrics(d);
  if (reg) {
    static const char *const l1[] = {"result"};
    if ((rc = sk_metrics_counter_family(reg, "skiff_policy_background_scans_total",
                                        "Background scans, by result: ok, truncated (max_objects) or error.", l1, 1,
                                        &b->scans)) < 0 ||
        (rc = sk_metrics_histogram(reg, "skiff_policy_background_scan_duration_seconds",
                                   "Time of a background scan, listing and evaluation.", scan_buckets,
                                   sizeof scan_buckets / sizeof scan_buckets[0], &b->dur)) < 0 ||
        (rc = sk_metrics_gauge_family(reg, "skiff_policy_background_results",
                                      "Rule results of the last background scan, by outcome.", l1, 1, &b->results)) <
            0 ||
        (rc = sk_metrics_gauge(reg, "skiff_policy_background_objects", "Objects evaluated by the last background scan.",
                               &b->objects)) < 0) {
      snprintf(err, errlen, "metrics: %s", sk_strerror(rc));
      goto fail;
    }
  }
  sk_admin_t *adm = sk_daemon_admin(d);
  if (adm && (rc = sk_admin_add_route(adm, "GET", "/reports", serve_reports, b)) < 0) {
    snprintf(err, errlen, "admin route /reports: %s", sk_strerror(rc));
    goto fail;
  }
  uv_timer_init(b->loop, &b->timer);
  b->timer.data = b;
  b->timer_open = 1;
  /* the first scan soon after start (the identity is there by now) */
  uv_timer_start(&b->timer, on_timer, 1000, b->interval_ms);
  *out = b;
  return 0;
fail:
  if (b->cl) { /* the memory goes when the client's gate reports it gone */
    sk_http_client_t *cl = b->cl;
    b->cl = NULL;
    b->closing = 1;
    b->app = NULL;
    sk_http_client_free(cl);
    return rc;
  }
  sk_tls_ctx_unref(b->tls);
  for (size_t i = 0; i < b->nkinds; i++) free(b->kinds[i]);
  free(b->kinds);
  json_decref(b->reports);
  free(b);
  return rc;
}

static void timer_closed(uv_handle_t *h) {
  pol_bg_t *b = h->data;
  b->timer_open = 0;
  maybe_free(b);
}

static void stop(pol_bg_t *b) {
  if (b->closing) return;
  b->closing = 1;
  if (b->timer_open && !uv_is_closing((uv_handle_t *)&b->timer)) uv_close((uv_handle_t *)&b->timer, timer_closed);
  sk_http_client_t *cl = b->cl;
  b->cl = NULL;
  sk_http_client_free(cl); /* a pending list answers SK_ECANCELED */
  if (b->scanning && !b->working) scan_reset(b);
}

void pol_bg_drain(pol_bg_t *b, void (*cb)(void *ud), void *ud) {
  if (!b) {
    cb(ud);
    return;
  }
  b->drain_cb = cb;
  b->drain_ud = ud;
  stop(b);
  drain_check(b);
}

static void maybe_free(pol_bg_t *b) {
  if (!b->closing || b->timer_open || b->working || b->client_alive || b->app) return;
  sk_tls_ctx_unref(b->tls);
  for (size_t i = 0; i < b->nkinds; i++) free(b->kinds[i]);
  free(b->kinds);
  json_decref(b->reports);
  json_decref(b->items);
  free(b->cont);
  free(b);
}

/* The memory goes once the timer is closed and no evaluation runs (the
 * daemon drains first, so none does). */
void pol_bg_free(pol_bg_t *b) {
  if (!b) return;
  stop(b);
  b->app = NULL;
  maybe_free(b);
}
