/* skiff-telemetry: Prometheus-style scraping.
 *
 * Targets come from scrape_configs (job, targets, interval, timeout,
 * metrics_path, sample_limit), from a skiff.yaml named by
 * scrape_skiff_config (every daemons[].admin, job = the daemon's name) and
 * from self_scrape (the daemon's own admin /metrics, job
 * "skiff-telemetry"). Every scrape stores the target's samples with job and
 * instance labels (a scraped job/instance label is kept as
 * exported_job/exported_instance) plus up, scrape_duration_seconds and
 * scrape_samples_scraped. A failed scrape or an unparsable body stores
 * up 0 and nothing else.
 *
 * https:// targets (and skiff.yaml daemons with admin_tls: true) are
 * scraped over TLS with one client context from scrape_tls: the server is
 * verified against scrape_tls.ca and scrape_tls.cert/key are presented as
 * the client certificate (an admin listener's /metrics requires one). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"
#include "tl_int.h"

#define TL_SCRAPE_MAX_TARGETS 1024

typedef struct target target_t;

struct tl_scraper {
  uv_loop_t *loop;
  tl_scrape_sink_fn sink;
  void *ud;
  target_t *targets;
  const tl_scrape_tls_cfg_t *tls_cfg;
  sk_tls_ctx_t *tls; /* built at the first https target */
};

struct target {
  tl_scraper_t *s;
  char *job, *host, *path, *instance;
  int port;
  uint64_t interval_ms, timeout_ms, sample_limit;
  sk_http_client_t *cl;
  uv_timer_t timer;
  uint64_t started_ns;
  int in_flight, closing;
  target_t *next;
};

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void finish(target_t *t, sk_pool_t *pool, tl_samples_t *s, int up, size_t scraped, int64_t ts) {
  double dur = (double)(uv_hrtime() - t->started_ns) / 1e9;
  tl_label_t l[3] = {{"__name__", "up"}, {"job", t->job}, {"instance", t->instance}};
  tl_samples_add(pool, s, l, 3, ts, up);
  l[0].value = "scrape_duration_seconds";
  tl_samples_add(pool, s, l, 3, ts, dur);
  l[0].value = "scrape_samples_scraped";
  tl_samples_add(pool, s, l, 3, ts, (double)scraped);
  t->s->sink(t->s->ud, pool, s);
}

static void scrape_done(int err, sk_http_resp_t *resp, void *ud) {
  target_t *t = ud;
  t->in_flight = 0;
  if (t->closing) return;
  sk_pool_t *pool = sk_pool_new();
  tl_samples_t s = {0};
  int64_t ts = now_ms();
  if (err < 0 || !resp || resp->status != 200) {
    finish(t, pool, &s, 0, 0, ts);
    return;
  }
  tl_samples_t raw = {0};
  tl_expo_opts_t o = {.max_samples = t->sample_limit ? (size_t)t->sample_limit : 100000, .default_ts_ms = ts};
  char perr[200];
  if (tl_expo_parse(pool, (const char *)resp->body, resp->body_len, &o, &raw, perr, sizeof perr) < 0) {
    finish(t, pool, &s, 0, 0, ts);
    return;
  }
  for (size_t i = 0; i < raw.n; i++) {
    tl_label_t l[TL_TSDB_MAX_LABELS];
    size_t n = 0;
    for (size_t k = 0; k < raw.v[i].nlabels && n < TL_TSDB_MAX_LABELS - 2; k++) {
      l[n] = raw.v[i].labels[k];
      if (!strcmp(l[n].name, "job")) l[n].name = "exported_job";
      else if (!strcmp(l[n].name, "instance")) l[n].name = "exported_instance";
      n++;
    }
    l[n++] = (tl_label_t){"job", t->job};
    l[n++] = (tl_label_t){"instance", t->instance};
    tl_samples_add(pool, &s, l, n, raw.v[i].ts_ms, raw.v[i].v);
  }
  finish(t, pool, &s, 1, raw.n, ts);
}

static void tick(uv_timer_t *h) {
  target_t *t = h->data;
  if (t->in_flight || t->closing) return;
  sk_http_header_t hd[] = {{"accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1"}};
  t->started_ns = uv_hrtime();
  t->in_flight = 1;
  int rc = sk_http_client_request(t->cl, "GET", t->path, hd, 1, NULL, 0, scrape_done, t);
  if (rc < 0) scrape_done(rc, NULL, t);
}

/* "host:port", "http://host:port/path", "https://host:port/path" */
static int parse_target(const char *s, char *host, size_t hostlen, int *port, char *path, size_t pathlen,
                        int *https) {
  *https = 0;
  if (!strncmp(s, "http://", 7)) s += 7;
  else if (!strncmp(s, "https://", 8)) s += 8, *https = 1;
  else if (strstr(s, "://")) return SK_EINVAL;
  const char *slash = strchr(s, '/');
  char hp[300];
  size_t n = slash ? (size_t)(slash - s) : strlen(s);
  if (n == 0 || n >= sizeof hp) return SK_EINVAL;
  memcpy(hp, s, n);
  hp[n] = 0;
  if (slash) snprintf(path, pathlen, "%s", slash);
  sk_cfg_addr_t a;
  char msg[100];
  if (sk_config_parse_addr(hp, &a, msg, sizeof msg) < 0 || a.port <= 0) return SK_EINVAL;
  snprintf(host, hostlen, "%s", a.host);
  *port = a.port;
  return 0;
}

static void target_closed(uv_handle_t *h) {
  target_t *t = h->data;
  free(t->job);
  free(t->host);
  free(t->path);
  free(t->instance);
  free(t);
}

static int add_target(tl_scraper_t *s, const char *job, const char *spec, const char *mpath, uint64_t interval,
                      uint64_t timeout, uint64_t limit, char *err, size_t errlen) {
  char host[256], path[1024] = "";
  int port = 0, https = 0;
  if (parse_target(spec, host, sizeof host, &port, path, sizeof path, &https) < 0) {
    snprintf(err, errlen, "scrape target \"%s\": expected host:port or http[s]://host:port/path", spec);
    return SK_ECONFIG;
  }
  if (https && !s->tls) {
    const tl_scrape_tls_cfg_t *tc = s->tls_cfg;
    if (!tc || !tc->ca || !*tc->ca) {
      snprintf(err, errlen, "scrape target %s: https needs scrape_tls.ca (or scrape_tls.identity)", spec);
      return SK_ECONFIG;
    }
    sk_tls_opts_t to = {.ca_file = tc->ca, .verify = SK_TLS_VERIFY_REQUIRE, .alpn = "http/1.1"};
    if (tc->cert && *tc->cert) {
      to.cert_file = tc->cert;
      to.key_file = tc->key && *tc->key ? tc->key : tc->cert;
    }
    char terr[400];
    int trc = sk_tls_ctx_new(&to, &s->tls, terr, sizeof terr);
    if (trc < 0) {
      s->tls = NULL;
      snprintf(err, errlen, "scrape_tls: %s", terr);
      return trc;
    }
  }
  size_t count = 0;
  for (target_t *x = s->targets; x; x = x->next) count++;
  if (count >= TL_SCRAPE_MAX_TARGETS) {
    snprintf(err, errlen, "more than %d scrape targets", TL_SCRAPE_MAX_TARGETS);
    return SK_ELIMIT;
  }
  target_t *t = sk_xcalloc(1, sizeof *t);
  t->s = s;
  t->job = sk_xstrdup(job && *job ? job : "skiff");
  t->host = sk_xstrdup(host);
  t->port = port;
  t->path = sk_xstrdup(path[0] ? path : mpath && *mpath ? mpath : "/metrics");
  char inst[300];
  snprintf(inst, sizeof inst, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
  t->instance = sk_xstrdup(inst);
  t->interval_ms = interval ? interval : 15000;
  t->timeout_ms = timeout ? timeout : 10000;
  if (t->timeout_ms > t->interval_ms) t->timeout_ms = t->interval_ms;
  t->sample_limit = limit;
  sk_http_client_opts_t co = {.host = t->host, .port = port, .tls = https ? s->tls : NULL, .max_conns = 1,
                              .max_body_bytes = 64u << 20,
                              .connect_timeout_ms = t->timeout_ms, .request_timeout_ms = t->timeout_ms};
  int rc = sk_http_client_new(s->loop, &co, &t->cl);
  if (rc < 0) {
    snprintf(err, errlen, "scrape target %s: %s", spec, sk_strerror(rc));
    target_closed(&(uv_handle_t){.data = t});
    return rc;
  }
  uv_timer_init(s->loop, &t->timer);
  t->timer.data = t;
  /* first scrape soon, spread a little by the list position */
  uv_timer_start(&t->timer, tick, 50 + (count % 20) * 10, t->interval_ms);
  t->next = s->targets;
  s->targets = t;
  return 0;
}

static int add_from_skiff_yaml(tl_scraper_t *s, const char *path, uint64_t interval, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "scrape_skiff_config %s: cannot open", path);
    return SK_ECONFIG;
  }
  char *buf = sk_xmalloc(1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  fclose(f);
  buf[n] = 0;
  json_t *doc = NULL;
  char yerr[200];
  int rc = sk_yaml_load(buf, n, NULL, &doc, yerr, sizeof yerr);
  free(buf);
  if (rc < 0) {
    snprintf(err, errlen, "scrape_skiff_config %s: %s", path, yerr);
    return SK_ECONFIG;
  }
  json_t *ds = json_object_get(doc, "daemons");
  size_t i;
  json_t *d;
  rc = 0;
  json_array_foreach(ds, i, d) {
    const char *admin = sk_json_get_str(d, "admin", NULL);
    const char *name = sk_json_get_str(d, "name", "skiff");
    if (!admin || !*admin) continue;
    json_t *at = json_object_get(d, "admin_tls");
    char spec[400];
    /* the YAML loader may keep an unquoted true as a string */
    int tls = json_is_true(at) || (json_is_string(at) && !strcmp(json_string_value(at), "true"));
    snprintf(spec, sizeof spec, "%s%s", tls ? "https://" : "", admin);
    if ((rc = add_target(s, name, spec, "/metrics", interval, 0, 0, err, errlen)) < 0) break;
  }
  json_decref(doc);
  return rc;
}

int tl_scraper_new(uv_loop_t *loop, const tl_config_t *cfg, int self_admin_port, tl_scrape_sink_fn sink,
                   void *ud, tl_scraper_t **out, char *err, size_t errlen) {
  tl_scraper_t *s = sk_xcalloc(1, sizeof *s);
  s->loop = loop;
  s->sink = sink;
  s->ud = ud;
  s->tls_cfg = &cfg->scrape_tls;
  int rc = 0;
  for (size_t i = 0; i < cfg->scrape_configs.n && rc >= 0; i++) {
    const tl_scrape_cfg_t *c = SK_CFG_LIST_AT(cfg->scrape_configs, tl_scrape_cfg_t, i);
    for (size_t k = 0; k < c->targets.n && rc >= 0; k++)
      rc = add_target(s, c->job, c->targets.v[k], c->metrics_path, c->interval_ms, c->timeout_ms,
                      c->sample_limit, err, errlen);
  }
  if (rc >= 0 && cfg->scrape_skiff_config && *cfg->scrape_skiff_config)
    rc = add_from_skiff_yaml(s, cfg->scrape_skiff_config, cfg->self_scrape_interval_ms, err, errlen);
  if (rc >= 0 && self_admin_port > 0) {
    char spec[64];
    snprintf(spec, sizeof spec, "%s127.0.0.1:%d", cfg->self_scrape_tls ? "https://" : "", self_admin_port);
    rc = add_target(s, "skiff-telemetry", spec, "/metrics", cfg->self_scrape_interval_ms, 0, 0, err, errlen);
  }
  s->tls_cfg = NULL; /* only read while the targets are added */
  if (rc < 0) {
    tl_scraper_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

size_t tl_scraper_target_count(const tl_scraper_t *s) {
  size_t n = 0;
  for (target_t *t = s ? s->targets : NULL; t; t = t->next) n++;
  return n;
}

void tl_scraper_free(tl_scraper_t *s) {
  if (!s) return;
  for (target_t *t = s->targets, *next; t; t = next) {
    next = t->next;
    t->closing = 1;
    uv_timer_stop(&t->timer);
    sk_http_client_free(t->cl);
    uv_close((uv_handle_t *)&t->timer, target_closed);
  }
  sk_tls_ctx_unref(s->tls);
  free(s);
}
