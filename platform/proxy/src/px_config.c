/* px_config.c - JSON document -> immutable, refcounted proxy config model. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_config.h"
#include "skiff/err.h"
#include "skiff/mem.h"

const char *const px_log_field_names[] = {
    "ts",     "method",      "authority",  "path",       "protocol", "status",     "reason",
    "route",  "cluster",     "endpoint",   "duration_ms", "upstream_ms", "bytes",   "request_id",
    "trace_id", "peer",      "peer_spiffe", "attempts",  "listener", "span_id", NULL};

typedef struct bctx {
  const json_t *where;
  const char *file;
  sk_config_errors_t *errs;
  int bad;
} bctx_t;

static void berr(bctx_t *b, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void berr(bctx_t *b, const char *path, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  int line = 0, col = 0;
  sk_cfg_json_t j = {.where = (json_t *)b->where};
  if (b->where) sk_cfg_json_where(&j, path, &line, &col);
  b->bad = 1;
  if (b->errs) sk_config_errors_add(b->errs, b->file ? b->file : "<config>", line, col, "%s: %s", path, msg);
}

/* Errors from resil's parsers already start with the path. */
static void berr_raw(bctx_t *b, const char *path, const char *msg) {
  int line = 0, col = 0;
  sk_cfg_json_t j = {.where = (json_t *)b->where};
  if (b->where) sk_cfg_json_where(&j, path, &line, &col);
  b->bad = 1;
  if (b->errs) sk_config_errors_add(b->errs, b->file ? b->file : "<config>", line, col, "%s", msg);
}

/* Paths locate errors in the document (sk_cfg_json_where walks a path up to
 * the nearest recorded key), so a path is never cut short: a cut path could
 * name a sibling. subpath() writes parent + suffix into p (PX_PATH_MAX bytes);
 * when that does not fit it records the error at the parent, leaves the parent
 * in p (errors below are then reported there) and returns -1. No valid document
 * gets near the limit: only unknown keys and header names (at most 256 bytes)
 * are free text in a path. */
#define PX_PATH_MAX 512

static int subpath(bctx_t *b, char *p, const char *parent, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int subpath(bctx_t *b, char *p, const char *parent, const char *fmt, ...) {
  char tmp[PX_PATH_MAX];
  size_t pl = strnlen(parent, PX_PATH_MAX);
  int n = -1;
  if (pl < PX_PATH_MAX) {
    memcpy(tmp, parent, pl);
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(tmp + pl, sizeof tmp - pl, fmt, ap);
    va_end(ap);
  }
  if (n < 0 || (size_t)n >= sizeof tmp - pl) {
    if (pl >= PX_PATH_MAX) pl = PX_PATH_MAX - 1;
    memmove(p, parent, pl);
    p[pl] = 0;
    berr(b, p, "a key path longer than %d bytes (a key name is too long)", PX_PATH_MAX - 1);
    return -1;
  }
  memcpy(p, tmp, pl + (size_t)n + 1);
  return 0;
}

static void keys(bctx_t *b, const json_t *o, const char *path, const char *const *known) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    int ok = 0;
    for (size_t i = 0; known[i]; i++)
      if (!strcmp(known[i], k)) ok = 1;
    if (!ok) {
      char p[PX_PATH_MAX];
      size_t kl = strlen(k);
      if (strlen(path) + 1 + kl >= sizeof p) /* too long for a path: report it at the parent */
        berr(b, path, "unknown key '%.64s...' (%zu bytes)", k, kl);
      else if (subpath(b, p, path, ".%s", k) == 0)
        berr(b, p, "unknown key");
    }
  }
}

static int valid_text(const char *s, int allow_space) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x20 || c == 0x7f) return 0;
    if (c == ' ' && !allow_space) return 0;
  }
  return 1;
}

static int valid_token(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s))) return 0;
  return 1;
}

/* String member (copied), or NULL when absent. */
static char *str(bctx_t *b, const json_t *o, const char *path, const char *key, int required, size_t maxlen) {
  json_t *v = json_object_get(o, key);
  char p[PX_PATH_MAX];
  subpath(b, p, path, ".%s", key);
  if (!v || json_is_null(v)) {
    if (required) berr(b, path, "missing required key '%s'", key);
    return NULL;
  }
  if (!json_is_string(v)) {
    berr(b, p, "expected a string");
    return NULL;
  }
  size_t n = json_string_length(v);
  if (n > (maxlen ? maxlen : PX_MAX_STR) || strlen(json_string_value(v)) != n) {
    berr(b, p, "string too long or contains NUL");
    return NULL;
  }
  if (!valid_text(json_string_value(v), 1)) {
    berr(b, p, "control characters are not allowed");
    return NULL;
  }
  return sk_xstrdup(json_string_value(v));
}

static const json_t *obj(bctx_t *b, const json_t *o, const char *path, const char *key) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return NULL;
  if (!json_is_object(v)) {
    char p[PX_PATH_MAX];
    subpath(b, p, path, ".%s", key);
    berr(b, p, "expected a mapping");
    return NULL;
  }
  return v;
}

static const json_t *arr(bctx_t *b, const json_t *o, const char *path, const char *key, size_t max) {
  json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) return NULL;
  char p[PX_PATH_MAX];
  subpath(b, p, path, ".%s", key);
  if (!json_is_array(v)) {
    berr(b, p, "expected a sequence");
    return NULL;
  }
  if (json_array_size(v) > max) {
    berr(b, p, "%zu elements, more than the limit of %zu", json_array_size(v), max);
    return NULL;
  }
  return v;
}

static int dur(bctx_t *b, const json_t *o, const char *path, const char *key, uint64_t *ms) {
  char err[600];
  int rc = px_conf_duration(o, path, key, ms, err, sizeof err);
  if (rc < 0) {
    char p[PX_PATH_MAX];
    subpath(b, p, path, ".%s", key);
    berr_raw(b, p, err);
  }
  return rc;
}

static int uintv(bctx_t *b, const json_t *o, const char *path, const char *key, uint64_t lo, uint64_t hi,
                 uint64_t *out) {
  char err[600];
  int rc = px_conf_uint(o, path, key, lo, hi, out, err, sizeof err);
  if (rc < 0) {
    char p[PX_PATH_MAX];
    subpath(b, p, path, ".%s", key);
    berr_raw(b, p, err);
  }
  return rc;
}

static int pct(bctx_t *b, const json_t *o, const char *path, const char *key, uint32_t *ppm) {
  char err[600];
  int rc = px_conf_percent(o, path, key, ppm, err, sizeof err);
  if (rc < 0) {
    char p[PX_PATH_MAX];
    subpath(b, p, path, ".%s", key);
    berr_raw(b, p, err);
  }
  return rc;
}

/* ---- string matchers ---- */

static void sm_free(px_str_match_t *m) {
  free(m->value);
  if (m->has_re) regfree(&m->re);
  memset(m, 0, sizeof *m);
}

static int compile_re(bctx_t *b, const char *path, const char *pat, regex_t *re) {
  if (strlen(pat) > PX_MAX_REGEX) {
    berr(b, path, "regex longer than %d bytes", PX_MAX_REGEX);
    return -1;
  }
  int rc = regcomp(re, pat, REG_EXTENDED | REG_NOSUB);
  if (rc != 0) {
    char msg[256];
    regerror(rc, re, msg, sizeof msg);
    berr(b, path, "bad regex: %s", msg);
    return -1;
  }
  return 0;
}

/* {exact|prefix|regex|present: ...}: exactly one. */
static void sm_parse(bctx_t *b, const json_t *o, const char *path, px_str_match_t *m, int allow_prefix,
                     int allow_present) {
  static const char *const k_all[] = {"exact", "prefix", "regex", "present", NULL};
  static const char *const k_nopre[] = {"exact", "regex", "present", NULL};
  static const char *const k_path[] = {"exact", "prefix", "regex", NULL};
  keys(b, o, path, allow_prefix ? (allow_present ? k_all : k_path) : k_nopre);
  int n = 0;
  char p[PX_PATH_MAX];
  json_t *v;
  if ((v = json_object_get(o, "exact"))) {
    n++;
    m->kind = PX_SM_EXACT;
    m->value = str(b, o, path, "exact", 1, 0);
  }
  if (allow_prefix && (v = json_object_get(o, "prefix"))) {
    n++;
    m->kind = PX_SM_PREFIX;
    free(m->value); /* more than one kind given: an error below, but no leak */
    m->value = str(b, o, path, "prefix", 1, 0);
  }
  if ((v = json_object_get(o, "regex"))) {
    n++;
    m->kind = PX_SM_REGEX;
    char *pat = str(b, o, path, "regex", 1, PX_MAX_REGEX);
    subpath(b, p, path, ".regex");
    if (pat && compile_re(b, p, pat, &m->re) == 0) m->has_re = 1;
    free(m->value);
    m->value = pat;
  }
  if (allow_present && (v = json_object_get(o, "present"))) {
    n++;
    subpath(b, p, path, ".present");
    if (!json_is_boolean(v)) berr(b, p, "expected true or false");
    m->kind = json_is_false(v) ? PX_SM_ABSENT : PX_SM_PRESENT;
  }
  if (n != 1) berr(b, path, "give exactly one of exact, %sregex%s", allow_prefix ? "prefix, " : "",
                   allow_present ? ", present" : "");
  if (m->value) m->len = strlen(m->value);
  if (m->kind == PX_SM_PREFIX && m->value && m->value[0] != '/') berr(b, path, "a path prefix starts with '/'");
}

static px_kv_match_t *kv_list(bctx_t *b, const json_t *o, const char *path, const char *key, size_t *n,
                              int is_header) {
  const json_t *a = arr(b, o, path, key, PX_MAX_MATCHERS);
  *n = 0;
  if (!a) return NULL;
  px_kv_match_t *v = sk_xcalloc(json_array_size(a) + 1, sizeof *v);
  size_t i;
  json_t *e;
  json_array_foreach(a, i, e) {
    char p[PX_PATH_MAX];
    subpath(b, p, path, ".%s[%zu]", key, i);
    if (!json_is_object(e)) {
      berr(b, p, "expected a mapping");
      continue;
    }
    px_kv_match_t *m = &v[(*n)++];
    m->name = str(b, e, p, "name", 1, 256);
    if (m->name && is_header && !valid_token(m->name)) berr(b, p, "bad header name '%s'", m->name);
    json_t *copy = json_copy(e);
    json_object_del(copy, "name");
    if (json_object_size(copy) == 0) {
      m->m.kind = PX_SM_PRESENT;
    } else {
      sm_parse(b, copy, p, &m->m, 0, 1);
    }
    json_decref(copy);
  }
  return v;
}

static void kv_free(px_kv_match_t *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].name);
    sm_free(&v[i].m);
  }
  free(v);
}

/* ---- header operations ---- */

static void hdr_ops(bctx_t *b, const json_t *o, const char *path, px_hdr_ops_t *h) {
  if (!o) return;
  static const char *const k[] = {"add", "remove", NULL};
  keys(b, o, path, k);
  const json_t *add = obj(b, o, path, "add");
  char p[PX_PATH_MAX];
  if (add) {
    if (json_object_size(add) > PX_MAX_HDR_OPS) berr(b, path, "more than %d headers to add", PX_MAX_HDR_OPS);
    char addp[PX_PATH_MAX];
    subpath(b, addp, path, ".add");
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)add, name, v) {
      if (h->nadd >= PX_MAX_HDR_OPS) break;
      if (strlen(name) > 256) {
        berr(b, addp, "header name longer than 256 bytes ('%.64s...')", name);
        continue;
      }
      if (!valid_token(name)) {
        if (subpath(b, p, addp, ".%s", name) == 0) berr(b, p, "bad header name");
        continue;
      }
      char *val = str(b, add, addp, name, 1, PX_MAX_STR);
      if (!val) continue;
      h->add[h->nadd].name = sk_xstrdup(name);
      h->add[h->nadd].value = val;
      h->nadd++;
    }
  }
  const json_t *rm = arr(b, o, path, "remove", PX_MAX_HDR_OPS);
  size_t i;
  json_t *v;
  if (rm) json_array_foreach(rm, i, v) {
      subpath(b, p, path, ".remove[%zu]", i);
      if (!json_is_string(v) || !valid_token(json_string_value(v)) || json_string_length(v) > 256) {
        berr(b, p, "expected a header name");
        continue;
      }
      h->remove[h->nremove++] = sk_xstrdup(json_string_value(v));
    }
}

static void hdr_ops_free(px_hdr_ops_t *h) {
  for (size_t i = 0; i < h->nadd; i++) {
    free((char *)h->add[i].name);
    free((char *)h->add[i].value);
  }
  for (size_t i = 0; i < h->nremove; i++) free(h->remove[i]);
}

/* ---- TLS ---- */

static sk_tls_ctx_t *tls_ctx(bctx_t *b, const json_t *t, const char *path, int server, char **sig, int *client_auth,
                             char **sni) {
  static const char *const ks[] = {"cert", "key", "ca", "client_auth", NULL};
  static const char *const kc[] = {"cert", "key", "ca", "sni", "verify", NULL};
  keys(b, t, path, server ? ks : kc);
  char *cert = str(b, t, path, "cert", server, 1024);
  char *key = str(b, t, path, "key", server, 1024);
  char *ca = str(b, t, path, "ca", 0, 1024);
  char *ca_s = str(b, t, path, "client_auth", 0, 16);
  char *sni_s = server ? NULL : str(b, t, path, "sni", 0, 255);
  sk_tls_verify_t verify = server ? SK_TLS_VERIFY_NONE : (ca ? SK_TLS_VERIFY_REQUIRE : SK_TLS_VERIFY_NONE);
  char p[PX_PATH_MAX];
  if (ca_s) {
    subpath(b, p, path, ".client_auth");
    if (!strcmp(ca_s, "none")) verify = SK_TLS_VERIFY_NONE;
    else if (!strcmp(ca_s, "optional")) verify = SK_TLS_VERIFY_OPTIONAL;
    else if (!strcmp(ca_s, "require")) verify = SK_TLS_VERIFY_REQUIRE;
    else berr(b, p, "expected none, optional or require");
    if (verify != SK_TLS_VERIFY_NONE && !ca) berr(b, path, "client_auth %s needs a ca", ca_s);
  }
  if (!server && json_is_false(json_object_get(t, "verify"))) verify = SK_TLS_VERIFY_NONE;
  if ((cert == NULL) != (key == NULL)) berr(b, path, "cert and key go together");
  sk_tls_ctx_t *ctx = NULL;
  if (!b->bad) {
    sk_tls_opts_t o = {.is_server = server,
                       .cert_file = cert,
                       .key_file = key,
                       .ca_file = ca,
                       .verify = verify,
                       .alpn = server ? "h2,http/1.1" : NULL};
    char err[512] = "";
    if (sk_tls_ctx_new(&o, &ctx, err, sizeof err) < 0) {
      berr(b, path, "%s", err[0] ? err : "cannot create TLS context");
      ctx = NULL;
    }
  }
  char buf[4200];
  snprintf(buf, sizeof buf, "%s|%s|%s|%d|%s", cert ? cert : "", key ? key : "", ca ? ca : "", (int)verify,
           sni_s ? sni_s : "");
  *sig = sk_xstrdup(buf);
  if (client_auth) *client_auth = (int)verify;
  if (sni) *sni = sni_s;
  else free(sni_s);
  free(cert);
  free(key);
  free(ca);
  free(ca_s);
  return ctx;
}

/* ---- clusters ---- */

static void cluster_parse(bctx_t *b, const json_t *o, const char *path, px_cluster_t *c) {
  static const char *const k[] = {"name", "endpoints", "lb", "protocol", "tls", "connect_timeout", "idle_timeout",
                                  "request_timeout", "max_connections", "circuit_breaker", "outlier",
                                  "health_check", NULL};
  keys(b, o, path, k);
  c->name = str(b, o, path, "name", 1, 128);
  c->connect_timeout_ms = 5000;
  c->idle_timeout_ms = 30000;
  c->request_timeout_ms = 60000;
  c->max_conns = 256;
  const json_t *eps = arr(b, o, path, "endpoints", PX_MAX_ENDPOINTS);
  char p[PX_PATH_MAX];
  if (!eps || json_array_size(eps) == 0) berr(b, path, "endpoints: at least one \"host:port\" is needed");
  size_t i;
  json_t *e;
  if (eps) json_array_foreach(eps, i, e) {
      subpath(b, p, path, ".endpoints[%zu]", i);
      sk_cfg_addr_t a;
      char msg[256];
      if (!json_is_string(e) || sk_config_parse_addr(json_string_value(e), &a, msg, sizeof msg) < 0 || a.port == 0) {
        berr(b, p, "expected \"host:port\"");
        continue;
      }
      px_endpoint_t *ep = &c->endpoints[c->nendpoints++];
      ep->host = sk_xstrdup(a.host);
      ep->port = a.port;
      ep->addr = sk_xstrdup(json_string_value(e));
    }
  char *lb = str(b, o, path, "lb", 0, 32);
  if (lb) {
    subpath(b, p, path, ".lb");
    if (!strcmp(lb, "round_robin")) c->lb = PX_LB_ROUND_ROBIN;
    else if (!strcmp(lb, "least_request")) c->lb = PX_LB_LEAST_REQUEST;
    else berr(b, p, "expected round_robin or least_request");
    free(lb);
  }
  char *proto = str(b, o, path, "protocol", 0, 32);
  if (proto) {
    subpath(b, p, path, ".protocol");
    if (!strcmp(proto, "http1")) c->h2 = 0;
    else if (!strcmp(proto, "h2")) c->h2 = 1;
    else berr(b, p, "expected http1 or h2");
    free(proto);
  }
  dur(b, o, path, "connect_timeout", &c->connect_timeout_ms);
  dur(b, o, path, "idle_timeout", &c->idle_timeout_ms);
  dur(b, o, path, "request_timeout", &c->request_timeout_ms);
  uint64_t mc = c->max_conns;
  uintv(b, o, path, "max_connections", 1, 100000, &mc);
  c->max_conns = (uint32_t)mc;
  const json_t *t = obj(b, o, path, "tls");
  if (t) {
    subpath(b, p, path, ".tls");
    c->tls = tls_ctx(b, t, p, 0, &c->tls_sig, NULL, &c->sni);
  } else {
    c->tls_sig = sk_xstrdup("");
  }
  char err[600];
  subpath(b, p, path, ".circuit_breaker");
  if (px_breaker_config_parse(json_object_get(o, "circuit_breaker"), p, &c->breaker, err, sizeof err) < 0)
    berr_raw(b, p, err);
  subpath(b, p, path, ".outlier");
  if (px_outlier_config_parse(json_object_get(o, "outlier"), p, &c->outlier, err, sizeof err) < 0) berr_raw(b, p, err);
  subpath(b, p, path, ".health_check");
  if (px_hc_config_parse(json_object_get(o, "health_check"), p, &c->health, err, sizeof err) < 0) berr_raw(b, p, err);
}

static void cluster_free(px_cluster_t *c) {
  free(c->name);
  for (size_t i = 0; i < c->nendpoints; i++) {
    free(c->endpoints[i].host);
    free(c->endpoints[i].addr);
  }
  sk_tls_ctx_unref(c->tls);
  free(c->sni);
  free(c->tls_sig);
}

int px_config_find_cluster(const px_config_t *c, const char *name) {
  for (size_t i = 0; c && name && i < c->nclusters; i++)
    if (c->clusters[i].name && !strcmp(c->clusters[i].name, name)) return (int)i;
  return -1;
}

int px_config_find_listener(const px_config_t *c, const char *name) {
  for (size_t i = 0; c && name && i < c->nlisteners; i++)
    if (c->listeners[i].name && !strcmp(c->listeners[i].name, name)) return (int)i;
  return -1;
}

static int cluster_ref(bctx_t *b, const px_config_t *c, const json_t *o, const char *path, const char *key) {
  char *name = str(b, o, path, key, 1, 128);
  if (!name) return -1;
  int idx = px_config_find_cluster(c, name);
  if (idx < 0) {
    char p[PX_PATH_MAX];
    subpath(b, p, path, ".%s", key);
    berr(b, p, "unknown cluster '%s'", name);
  }
  free(name);
  return idx;
}

/* ---- routes ---- */

/* match.spiffe: the client certificate's SPIFFE ID, a bare string (exact)
 * or {exact|prefix: ...}; either way it must look like a SPIFFE ID */
static void spiffe_parse(bctx_t *b, const json_t *o, const char *path, px_str_match_t *m) {
  static const char *const k[] = {"exact", "prefix", NULL};
  const json_t *v = json_object_get(o, "spiffe");
  char p[PX_PATH_MAX];
  subpath(b, p, path, ".spiffe");
  if (json_is_string(v)) {
    m->kind = PX_SM_EXACT;
    m->value = str(b, o, path, "spiffe", 1, 2048);
  } else if (json_is_object(v)) {
    keys(b, v, p, k);
    int ne = json_object_get(v, "exact") != NULL, np = json_object_get(v, "prefix") != NULL;
    if (ne + np != 1) {
      berr(b, p, "give exactly one of exact, prefix");
      return;
    }
    m->kind = ne ? PX_SM_EXACT : PX_SM_PREFIX;
    m->value = str(b, v, p, ne ? "exact" : "prefix", 1, 2048);
  } else {
    berr(b, p, "expected a SPIFFE ID or a mapping {exact|prefix: spiffe://...}");
    return;
  }
  if (!m->value) return;
  m->len = strlen(m->value);
  if (strncmp(m->value, "spiffe://", 9) != 0 || m->len == 9)
    berr(b, p, "'%.64s' is not a SPIFFE ID (spiffe://trust-domain/...)", m->value);
}

static void match_parse(bctx_t *b, const json_t *o, const char *path, px_match_t *m) {
  static const char *const k[] = {"host", "path", "method", "headers", "query", "spiffe", NULL};
  keys(b, o, path, k);
  char p[PX_PATH_MAX];
  m->host = str(b, o, path, "host", 0, 255);
  if (m->host) {
    if (!strncmp(m->host, "*.", 2)) m->host_wild = 1;
    if (!strcmp(m->host, "*")) {
      free(m->host);
      m->host = NULL;
    }
  }
  const json_t *pm = json_object_get(o, "path");
  if (pm) {
    subpath(b, p, path, ".path");
    if (json_is_string(pm)) { /* shorthand: a prefix */
      m->has_path = 1;
      m->path.kind = PX_SM_PREFIX;
      m->path.value = str(b, o, path, "path", 1, 0);
      if (m->path.value) m->path.len = strlen(m->path.value);
      if (m->path.value && m->path.value[0] != '/') berr(b, p, "a path starts with '/'");
    } else if (json_is_object(pm)) {
      m->has_path = 1;
      sm_parse(b, pm, p, &m->path, 1, 0);
    } else {
      berr(b, p, "expected a mapping {exact|prefix|regex: ...}");
    }
  }
  json_t *mv = json_object_get(o, "method");
  if (mv) {
    subpath(b, p, path, ".method");
    if (json_is_string(mv)) {
      if (!valid_token(json_string_value(mv))) berr(b, p, "bad method");
      else m->methods[m->nmethods++] = sk_xstrdup(json_string_value(mv));
    } else if (json_is_array(mv) && json_array_size(mv) <= PX_MAX_METHODS) {
      size_t i;
      json_t *e;
      json_array_foreach(mv, i, e) {
        if (!json_is_string(e) || !valid_token(json_string_value(e))) berr(b, p, "bad method");
        else m->methods[m->nmethods++] = sk_xstrdup(json_string_value(e));
      }
    } else {
      berr(b, p, "expected a method or a list of at most %d", PX_MAX_METHODS);
    }
  }
  m->headers = kv_list(b, o, path, "headers", &m->nheaders, 1);
  m->query = kv_list(b, o, path, "query", &m->nquery, 0);
  if (json_object_get(o, "spiffe")) {
    m->has_spiffe = 1;
    spiffe_parse(b, o, path, &m->spiffe);
  }
}

static void match_free(px_match_t *m) {
  free(m->host);
  sm_free(&m->path);
  sm_free(&m->spiffe);
  for (size_t i = 0; i < m->nmethods; i++) free(m->methods[i]);
  kv_free(m->headers, m->nheaders);
  kv_free(m->query, m->nquery);
}

static void route_parse(bctx_t *b, const px_config_t *c, const json_t *o, const char *path, px_route_t *r) {
  static const char *const k[] = {"name", "match", "backends", "cluster", "overrides", "request_headers",
                                  "response_headers", "rewrite", "mirror", "timeout", "retry", "fault",
                                  "rate_limit", NULL};
  keys(b, o, path, k);
  char p[PX_PATH_MAX], err[600];
  r->name = str(b, o, path, "name", 1, 128);
  r->mirror_cluster = -1;
  r->timeout_ms = 15000;
  const json_t *m = obj(b, o, path, "match");
  if (m) {
    subpath(b, p, path, ".match");
    match_parse(b, m, p, &r->match);
  }
  const json_t *bk = arr(b, o, path, "backends", PX_MAX_BACKENDS);
  if (json_object_get(o, "cluster")) {
    if (bk) berr(b, path, "give either cluster or backends");
    r->backends[0].cluster = cluster_ref(b, c, o, path, "cluster");
    r->backends[0].weight = 1;
    r->nbackends = 1;
  } else if (bk && json_array_size(bk)) {
    size_t i;
    json_t *e;
    json_array_foreach(bk, i, e) {
      subpath(b, p, path, ".backends[%zu]", i);
      if (!json_is_object(e)) {
        berr(b, p, "expected a mapping {cluster, weight}");
        continue;
      }
      static const char *const kb[] = {"cluster", "weight", NULL};
      keys(b, e, p, kb);
      px_backend_t *be = &r->backends[r->nbackends++];
      be->cluster = cluster_ref(b, c, e, p, "cluster");
      uint64_t w = 1;
      uintv(b, e, p, "weight", 0, 1000000, &w);
      be->weight = (uint32_t)w;
      r->total_weight += be->weight;
    }
    if (r->total_weight == 0) berr(b, path, "backends: the weights add up to 0");
  } else {
    berr(b, path, "missing backends (or cluster)");
  }
  if (r->nbackends == 1) r->total_weight = r->backends[0].weight ? r->backends[0].weight : 1;
  const json_t *ov = arr(b, o, path, "overrides", PX_MAX_OVERRIDES);
  size_t i;
  json_t *e;
  if (ov) json_array_foreach(ov, i, e) {
      subpath(b, p, path, ".overrides[%zu]", i);
      if (!json_is_object(e)) {
        berr(b, p, "expected a mapping {header, value, cluster}");
        continue;
      }
      static const char *const ko[] = {"header", "value", "cluster", NULL};
      keys(b, e, p, ko);
      px_override_t *x = &r->overrides[r->noverrides++];
      x->header = str(b, e, p, "header", 1, 256);
      if (x->header && !valid_token(x->header)) berr(b, p, "bad header name");
      x->value = str(b, e, p, "value", 0, PX_MAX_STR);
      x->cluster = cluster_ref(b, c, e, p, "cluster");
    }
  subpath(b, p, path, ".request_headers");
  hdr_ops(b, obj(b, o, path, "request_headers"), p, &r->req_hdrs);
  subpath(b, p, path, ".response_headers");
  hdr_ops(b, obj(b, o, path, "response_headers"), p, &r->resp_hdrs);
  const json_t *rw = obj(b, o, path, "rewrite");
  if (rw) {
    subpath(b, p, path, ".rewrite");
    static const char *const kr[] = {"prefix", "path", NULL};
    keys(b, rw, p, kr);
    r->rewrite_prefix = str(b, rw, p, "prefix", 0, 0);
    r->rewrite_path = str(b, rw, p, "path", 0, 0);
    if (!!r->rewrite_prefix == !!r->rewrite_path) berr(b, p, "give exactly one of prefix, path");
    if (r->rewrite_prefix && !(r->match.has_path && r->match.path.kind == PX_SM_PREFIX))
      berr(b, p, "rewrite.prefix needs match.path.prefix");
    const char *x = r->rewrite_prefix ? r->rewrite_prefix : r->rewrite_path;
    if (x && (x[0] != '/' || !valid_text(x, 0))) berr(b, p, "a path starts with '/' and has no spaces");
  }
  const json_t *mi = obj(b, o, path, "mirror");
  if (mi) {
    subpath(b, p, path, ".mirror");
    static const char *const km[] = {"cluster", "percent", NULL};
    keys(b, mi, p, km);
    r->mirror_cluster = cluster_ref(b, c, mi, p, "cluster");
    r->mirror_ppm = PX_PPM_ALL;
    pct(b, mi, p, "percent", &r->mirror_ppm);
  }
  dur(b, o, path, "timeout", &r->timeout_ms);
  subpath(b, p, path, ".retry");
  if (px_retry_config_parse(json_object_get(o, "retry"), p, &r->retry, err, sizeof err) < 0) berr_raw(b, p, err);
  subpath(b, p, path, ".fault");
  if (px_fault_config_parse(json_object_get(o, "fault"), p, &r->fault, err, sizeof err) < 0) berr_raw(b, p, err);
  subpath(b, p, path, ".rate_limit");
  if (px_ratelimit_config_parse(json_object_get(o, "rate_limit"), p, &r->rate_limit, err, sizeof err) < 0)
    berr_raw(b, p, err);
}

static void route_free(px_route_t *r) {
  free(r->name);
  match_free(&r->match);
  for (size_t i = 0; i < r->noverrides; i++) {
    free(r->overrides[i].header);
    free(r->overrides[i].value);
  }
  hdr_ops_free(&r->req_hdrs);
  hdr_ops_free(&r->resp_hdrs);
  free(r->rewrite_prefix);
  free(r->rewrite_path);
}

/* ---- listeners ---- */

static void listener_parse(bctx_t *b, const px_config_t *c, const json_t *o, const char *path, px_listener_t *l) {
  static const char *const k[] = {"name",     "address",      "protocol",           "tls", "routes", "cluster",
                                  "fault",    "max_body",     "idle_timeout",       "forward_client_cert", NULL};
  keys(b, o, path, k);
  char p[PX_PATH_MAX], err[600];
  l->name = str(b, o, path, "name", 1, 128);
  l->cluster = -1;
  l->max_body = 1024 * 1024;
  l->idle_timeout_ms = 60000;
  char *addr = str(b, o, path, "address", 1, 300);
  if (addr) {
    subpath(b, p, path, ".address");
    char msg[256];
    if (sk_config_parse_addr(addr, &l->addr, msg, sizeof msg) < 0) berr(b, p, "%s", msg);
    free(addr);
  }
  char *proto = str(b, o, path, "protocol", 0, 16);
  if (proto) {
    subpath(b, p, path, ".protocol");
    if (!strcmp(proto, "http")) l->proto = PX_PROTO_HTTP;
    else if (!strcmp(proto, "tcp")) l->proto = PX_PROTO_TCP;
    else berr(b, p, "expected http or tcp");
    free(proto);
  }
  const json_t *t = obj(b, o, path, "tls");
  if (t) {
    subpath(b, p, path, ".tls");
    l->tls = tls_ctx(b, t, p, 1, &l->tls_sig, &l->client_auth, NULL);
  } else {
    l->tls_sig = sk_xstrdup("");
  }
  uint64_t mb = l->max_body;
  json_t *mbv = json_object_get(o, "max_body");
  if (mbv) {
    subpath(b, p, path, ".max_body");
    char msg[256];
    if (json_is_integer(mbv) && json_integer_value(mbv) > 0) mb = (uint64_t)json_integer_value(mbv);
    else if (!json_is_string(mbv) || sk_config_parse_size(json_string_value(mbv), &mb, msg, sizeof msg) < 0)
      berr(b, p, "expected a size like 1MiB");
    if (mb > (256u << 20)) berr(b, p, "at most 256MiB");
  }
  l->max_body = mb;
  dur(b, o, path, "idle_timeout", &l->idle_timeout_ms);
  char *xf = str(b, o, path, "forward_client_cert", 0, 32);
  if (xf) {
    static const char *const modes[] = {"sanitize", "forward", "append_forward", "sanitize_set"};
    l->xfcc = -1;
    for (int i = 0; i < 4; i++)
      if (!strcmp(xf, modes[i])) l->xfcc = i;
    subpath(b, p, path, ".forward_client_cert");
    if (l->xfcc < 0) {
      berr(b, p, "expected sanitize, forward, append_forward or sanitize_set");
      l->xfcc = PX_XFCC_SANITIZE;
    }
    free(xf);
  }
  if (l->proto == PX_PROTO_TCP) {
    l->cluster = cluster_ref(b, c, o, path, "cluster");
    if (json_object_get(o, "routes")) berr(b, path, "a tcp listener takes a cluster, not routes");
    subpath(b, p, path, ".fault");
    if (px_l4_fault_config_parse(json_object_get(o, "fault"), p, &l->l4_fault, err, sizeof err) < 0)
      berr_raw(b, p, err);
  } else {
    if (json_object_get(o, "cluster")) berr(b, path, "an http listener takes routes, not a cluster");
    if (json_object_get(o, "fault")) berr(b, path, "fault on an http listener: put it on a route");
    const json_t *rs = arr(b, o, path, "routes", PX_MAX_ROUTES);
    if (rs) {
      l->routes = sk_xcalloc(json_array_size(rs) + 1, sizeof(int));
      size_t i;
      json_t *e;
      json_array_foreach(rs, i, e) {
        subpath(b, p, path, ".routes[%zu]", i);
        int idx = -1;
        for (size_t j = 0; json_is_string(e) && j < c->nroutes; j++)
          if (c->routes[j].name && !strcmp(c->routes[j].name, json_string_value(e))) idx = (int)j;
        if (idx < 0) berr(b, p, "unknown route");
        else l->routes[l->nroutes++] = idx;
      }
    }
  }
  px_l4_fault_config_t dflt;
  if (l->proto != PX_PROTO_TCP) {
    px_l4_fault_config_default(&dflt);
    l->l4_fault = dflt;
  }
}

static void listener_free(px_listener_t *l) {
  free(l->name);
  sk_tls_ctx_unref(l->tls);
  free(l->tls_sig);
  free(l->routes);
}

/* ---- whole document ---- */

static int unique(bctx_t *b, const char *path, char *const *names, size_t n, size_t i) {
  for (size_t j = 0; j < i; j++)
    if (names[i] && names[j] && !strcmp(names[i], names[j])) {
      berr(b, path, "duplicate name '%s'", names[i]);
      return 0;
    }
  return 1;
}

int px_config_build(const json_t *doc, const json_t *where, const char *file, uint64_t version,
                    sk_config_errors_t *errs, px_config_t **out) {
  bctx_t b = {.where = where, .file = file, .errs = errs};
  *out = NULL;
  px_config_t *c = sk_xcalloc(1, sizeof *c);
  atomic_store(&c->refs, 1);
  c->version = version;
  c->source = doc ? json_deep_copy(doc) : json_object();
  c->access_log.path = sk_xstrdup("-");
  static const int deflt[] = {PX_LF_TS,       PX_LF_METHOD,      PX_LF_AUTHORITY,  PX_LF_PATH,
                              PX_LF_PROTOCOL, PX_LF_STATUS,      PX_LF_REASON,     PX_LF_ROUTE,
                              PX_LF_CLUSTER,  PX_LF_ENDPOINT,    PX_LF_DURATION_MS, PX_LF_UPSTREAM_MS,
                              PX_LF_BYTES,    PX_LF_REQUEST_ID,  PX_LF_TRACE_ID,   PX_LF_PEER_SPIFFE,
                              PX_LF_SPAN_ID};
  memcpy(c->access_log.fields, deflt, sizeof deflt);
  c->access_log.nfields = sizeof deflt / sizeof deflt[0];
  if (!json_is_object(c->source)) {
    berr(&b, "config", "expected a mapping");
    goto out;
  }
  static const char *const k[] = {"listeners", "routes", "clusters", "access_log", NULL};
  keys(&b, c->source, "", k);
  const json_t *doc2 = c->source;
  char p[PX_PATH_MAX];
  size_t i;
  json_t *e;
  const json_t *cl = arr(&b, doc2, "", "clusters", PX_MAX_CLUSTERS);
  if (cl) {
    c->clusters = sk_xcalloc(json_array_size(cl) + 1, sizeof *c->clusters);
    json_array_foreach(cl, i, e) {
      snprintf(p, sizeof p, "clusters[%zu]", i);
      if (!json_is_object(e)) {
        berr(&b, p, "expected a mapping");
        continue;
      }
      px_cluster_t *x = &c->clusters[c->nclusters];
      x->index = (int)c->nclusters++;
      cluster_parse(&b, e, p, x);
      char *names[PX_MAX_CLUSTERS];
      for (size_t j = 0; j < c->nclusters; j++) names[j] = c->clusters[j].name;
      unique(&b, p, names, c->nclusters, c->nclusters - 1);
    }
  }
  const json_t *rs = arr(&b, doc2, "", "routes", PX_MAX_ROUTES);
  if (rs) {
    c->routes = sk_xcalloc(json_array_size(rs) + 1, sizeof *c->routes);
    json_array_foreach(rs, i, e) {
      snprintf(p, sizeof p, "routes[%zu]", i);
      if (!json_is_object(e)) {
        berr(&b, p, "expected a mapping");
        continue;
      }
      px_route_t *x = &c->routes[c->nroutes];
      x->index = (int)c->nroutes++;
      route_parse(&b, c, e, p, x);
      for (size_t j = 0; j + 1 < c->nroutes; j++)
        if (x->name && c->routes[j].name && !strcmp(x->name, c->routes[j].name))
          berr(&b, p, "duplicate route name '%s'", x->name);
    }
  }
  const json_t *ls = arr(&b, doc2, "", "listeners", PX_MAX_LISTENERS);
  if (ls) {
    c->listeners = sk_xcalloc(json_array_size(ls) + 1, sizeof *c->listeners);
    json_array_foreach(ls, i, e) {
      snprintf(p, sizeof p, "listeners[%zu]", i);
      if (!json_is_object(e)) {
        berr(&b, p, "expected a mapping");
        continue;
      }
      px_listener_t *x = &c->listeners[c->nlisteners++];
      listener_parse(&b, c, e, p, x);
      for (size_t j = 0; j + 1 < c->nlisteners; j++) {
        if (x->name && c->listeners[j].name && !strcmp(x->name, c->listeners[j].name))
          berr(&b, p, "duplicate listener name '%s'", x->name);
        else if (x->addr.port && x->addr.port == c->listeners[j].addr.port && !strcmp(x->addr.host, c->listeners[j].addr.host))
          berr(&b, p, "address already used by listener '%s'", c->listeners[j].name);
      }
    }
  }
  const json_t *al = obj(&b, doc2, "", "access_log");
  if (al) {
    static const char *const ka[] = {"path", "fields", NULL};
    keys(&b, al, "access_log", ka);
    char *path = str(&b, al, "access_log", "path", 0, 1024);
    if (path) {
      free(c->access_log.path);
      c->access_log.path = path;
    }
    const json_t *f = arr(&b, al, "access_log", "fields", PX_MAX_LOG_FIELDS);
    if (f) {
      c->access_log.nfields = 0;
      json_array_foreach(f, i, e) {
        snprintf(p, sizeof p, "access_log.fields[%zu]", i);
        int idx = -1;
        for (int j = 0; json_is_string(e) && px_log_field_names[j]; j++)
          if (!strcmp(px_log_field_names[j], json_string_value(e))) idx = j;
        if (idx < 0) berr(&b, p, "unknown field (see docs/proxy.md)");
        else c->access_log.fields[c->access_log.nfields++] = idx;
      }
    }
  }
out:
  if (b.bad) {
    px_config_unref(c);
    return SK_ECONFIG;
  }
  *out = c;
  return 0;
}

px_config_t *px_config_ref(px_config_t *c) {
  if (c) atomic_fetch_add(&c->refs, 1);
  return c;
}

void px_config_unref(px_config_t *c) {
  if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
  for (size_t i = 0; i < c->nlisteners; i++) listener_free(&c->listeners[i]);
  for (size_t i = 0; i < c->nroutes; i++) route_free(&c->routes[i]);
  for (size_t i = 0; i < c->nclusters; i++) cluster_free(&c->clusters[i]);
  free(c->listeners);
  free(c->routes);
  free(c->clusters);
  free(c->access_log.path);
  json_decref(c->source);
  free(c);
}

json_t *px_config_dump(const px_config_t *c) {
  json_t *o = json_object();
  json_object_set_new(o, "version", json_integer((json_int_t)(c ? c->version : 0)));
  json_object_set_new(o, "config", c && c->source ? json_deep_copy(c->source) : json_object());
  return o;
}
