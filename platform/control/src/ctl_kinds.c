/* The kind registry and the built-in kinds: Service and Route
 * (skiff.dev/v1), and Gateway API HTTPRoute (gateway.networking.k8s.io/v1)
 * which is stored as a Route (see ctl_httproute.c for the conversion). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl_kinds_int.h"
#include "skiff/config.h"
#include "skiff/err.h"
#include "skiff/json.h"

/* ---- field helpers ---- */

/* Field paths name a field in messages; one that does not fit is cut and
 * ends in "..." rather than naming another field. */
static void path_cut(char *out, size_t len, int w) {
  if ((w < 0 || (size_t)w >= len) && len > 4) memcpy(out + len - 4, "...", 4);
}

void ctl__path(char *out, size_t len, const char *base, const char *key) {
  path_cut(out, len, snprintf(out, len, "%s%s%s", base, *base ? "." : "", key));
}

void ctl__index(char *out, size_t len, const char *base, size_t i) {
  path_cut(out, len, snprintf(out, len, "%s[%zu]", base, i));
}

/* msg at field.key. */
static void key_err(ctl_errs_t *errs, const char *field, const char *key, const char *msg) {
  char f[CTL_FIELD_MAX];
  ctl__path(f, sizeof f, field, key);
  ctl_errs_add(errs, f, "%s", msg);
}

void ctl__known_keys(const json_t *obj, const char *field, const char *const *keys, ctl_errs_t *errs) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    int ok = 0;
    for (size_t i = 0; keys[i]; i++)
      if (!strcmp(keys[i], k)) ok = 1;
    if (!ok) key_err(errs, field, k, "unknown or unsupported field");
  }
}

/* obj.key (its path in f) when it is there and of json type want; NULL
 * with "required" when absent but required, with type_msg when of
 * another type. */
static const json_t *typed(const json_t *obj, const char *field, const char *key, int required,
                           json_type want, const char *type_msg, char f[CTL_FIELD_MAX],
                           ctl_errs_t *errs) {
  ctl__path(f, CTL_FIELD_MAX, field, key);
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    if (required) ctl_errs_add(errs, f, "required");
    return NULL;
  }
  if (json_typeof(v) != want) {
    ctl_errs_add(errs, f, "%s", type_msg);
    return NULL;
  }
  return v;
}

/* String field: required or optional, bounded, optionally one of a set. */
const char *ctl__str(const json_t *obj, const char *field, const char *key, int required, size_t maxlen,
                     ctl_errs_t *errs) {
  char f[CTL_FIELD_MAX];
  const json_t *v = typed(obj, field, key, required, JSON_STRING, "must be a string", f, errs);
  if (!v) return NULL;
  const char *s = json_string_value(v);
  if (required && !*s) {
    ctl_errs_add(errs, f, "must not be empty");
    return NULL;
  }
  if (strlen(s) > maxlen) {
    ctl_errs_add(errs, f, "at most %zu characters", maxlen);
    return NULL;
  }
  return s;
}

const char *ctl__enum(const json_t *obj, const char *field, const char *key, const char *const *names,
                      const char *def, ctl_errs_t *errs) {
  const char *s = ctl__str(obj, field, key, 0, 64, errs);
  if (!s) return json_object_get(obj, key) ? NULL : def;
  for (size_t i = 0; names[i]; i++)
    if (!strcmp(names[i], s)) return s;
  char f[CTL_FIELD_MAX], list[256] = "";
  ctl__path(f, sizeof f, field, key);
  for (size_t i = 0; names[i]; i++) {
    strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
    strncat(list, names[i], sizeof list - strlen(list) - 1);
  }
  ctl_errs_add(errs, f, "must be one of %s", list);
  return NULL;
}

/* An array field (absent = empty); returns it or NULL. */
const json_t *ctl__array(const json_t *obj, const char *field, const char *key, size_t min, size_t max,
                         ctl_errs_t *errs) {
  char f[CTL_FIELD_MAX];
  ctl__path(f, sizeof f, field, key);
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    if (min) ctl_errs_add(errs, f, "required (at least %zu)", min);
    return NULL;
  }
  if (!json_is_array(v)) {
    ctl_errs_add(errs, f, "must be a list");
    return NULL;
  }
  size_t n = json_array_size(v);
  if (n < min) ctl_errs_add(errs, f, "at least %zu required", min);
  if (n > max) {
    ctl_errs_add(errs, f, "at most %zu entries", max);
    return NULL;
  }
  return v;
}

int ctl__int(const json_t *obj, const char *field, const char *key, int64_t lo, int64_t hi, int64_t *out,
             ctl_errs_t *errs) {
  char f[CTL_FIELD_MAX];
  ctl__path(f, sizeof f, field, key);
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  int64_t n;
  if (json_is_integer(v)) n = json_integer_value(v);
  else {
    ctl_errs_add(errs, f, "must be an integer %lld..%lld", (long long)lo, (long long)hi);
    return -1;
  }
  if (n < lo || n > hi) {
    ctl_errs_add(errs, f, "must be %lld..%lld", (long long)lo, (long long)hi);
    return -1;
  }
  if (out) *out = n;
  return 1;
}

void ctl__duration(const json_t *obj, const char *field, const char *key, ctl_errs_t *errs) {
  const char *s = ctl__str(obj, field, key, 0, 32, errs);
  if (!s) return;
  uint64_t ms;
  char msg[128];
  if (sk_config_parse_duration(s, &ms, msg, sizeof msg) < 0) {
    key_err(errs, field, key, msg);
  }
}

const json_t *ctl__obj(const json_t *obj, const char *field, const char *key, int required, ctl_errs_t *errs) {
  char f[CTL_FIELD_MAX];
  return typed(obj, field, key, required, JSON_OBJECT, "must be a mapping", f, errs);
}

/* host:port with a port 1..65535. */
static int hostport_ok(const char *s) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s) return 0;
  char *end = NULL;
  long p = strtol(colon + 1, &end, 10);
  if (!colon[1] || *end || p < 1 || p > 65535) return 0;
  for (const char *c = s; c < colon; c++)
    if (!(isalnum((unsigned char)*c) || strchr(".-_:[]", *c))) return 0;
  return 1;
}

/* ---- Service ---- */

static void validate_service(const json_t *obj, ctl_errs_t *errs) {
  const json_t *spec = ctl__obj(obj, "", "spec", 1, errs);
  if (!spec) return;
  static const char *const keys[] = {"endpoints", "protocol", "lb", "connectTimeout", "requestTimeout",
                                     "healthCheck", "maxConnections", NULL};
  ctl__known_keys(spec, "spec", keys, errs);
  const json_t *eps = ctl__array(spec, "spec", "endpoints", 1, 256, errs);
  size_t i;
  json_t *e;
  json_array_foreach(eps, i, e) {
    char f[CTL_FIELD_MAX];
    ctl__index(f, sizeof f, "spec.endpoints", i);
    if (!json_is_string(e) || !hostport_ok(json_string_value(e)) || strlen(json_string_value(e)) > 300)
      ctl_errs_add(errs, f, "must be \"host:port\" with a port 1..65535");
  }
  static const char *const protos[] = {"http1", "h2", NULL};
  static const char *const lbs[] = {"round_robin", "least_request", NULL};
  ctl__enum(spec, "spec", "protocol", protos, "http1", errs);
  ctl__enum(spec, "spec", "lb", lbs, "round_robin", errs);
  ctl__duration(spec, "spec", "connectTimeout", errs);
  ctl__duration(spec, "spec", "requestTimeout", errs);
  ctl__int(spec, "spec", "maxConnections", 1, 65536, NULL, errs);
  const json_t *hc = ctl__obj(spec, "spec", "healthCheck", 0, errs);
  if (hc) {
    static const char *const hk[] = {"path", "interval", "timeout", "unhealthyThreshold", "healthyThreshold", NULL};
    ctl__known_keys(hc, "spec.healthCheck", hk, errs);
    const char *p = ctl__str(hc, "spec.healthCheck", "path", 1, 1024, errs);
    if (p && p[0] != '/') ctl_errs_add(errs, "spec.healthCheck.path", "must start with '/'");
    ctl__duration(hc, "spec.healthCheck", "interval", errs);
    ctl__duration(hc, "spec.healthCheck", "timeout", errs);
    ctl__int(hc, "spec.healthCheck", "unhealthyThreshold", 1, 100, NULL, errs);
    ctl__int(hc, "spec.healthCheck", "healthyThreshold", 1, 100, NULL, errs);
  }
}

/* ---- Route (and the HTTPRoute subset: the same spec shape) ---- */

static int header_name_ok(const char *s) {
  if (!*s || strlen(s) > 256) return 0;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s))) return 0;
  return 1;
}

static int hostname_ok(const char *s) {
  if (!strncmp(s, "*.", 2)) s += 2;
  return ctl_valid_name(s);
}

typedef void (*entry_check_fn)(const json_t *entry, const char *field, int opt, ctl_errs_t *errs);

/* The array at obj.key (min..max entries): "must be a mapping" for an
 * entry that is not one, check(entry, "field.key[i]", opt) for the others. */
static void each_mapping(const json_t *obj, const char *field, const char *key, size_t min, size_t max,
                         entry_check_fn check, int opt, ctl_errs_t *errs) {
  char base[CTL_FIELD_MAX];
  ctl__path(base, sizeof base, field, key);
  const json_t *arr = ctl__array(obj, field, key, min, max, errs);
  size_t i;
  json_t *x;
  json_array_foreach(arr, i, x) {
    char f[CTL_FIELD_MAX];
    ctl__index(f, sizeof f, base, i);
    if (!json_is_object(x)) ctl_errs_add(errs, f, "must be a mapping");
    else check(x, f, opt, errs);
  }
}

static void check_name_value(const json_t *h, const char *f, int with_type, ctl_errs_t *errs) {
  static const char *const k1[] = {"type", "name", "value", NULL};
  static const char *const k2[] = {"name", "value", NULL};
  ctl__known_keys(h, f, with_type ? k1 : k2, errs);
  const char *n = ctl__str(h, f, "name", 1, 256, errs);
  if (n && !header_name_ok(n)) key_err(errs, f, "name", "not a valid header/parameter name");
  ctl__str(h, f, "value", 1, 4096, errs);
  if (with_type) {
    static const char *const types[] = {"Exact", "RegularExpression", NULL};
    ctl__enum(h, f, "type", types, "Exact", errs);
  }
}

static void check_name_value_list(const json_t *m, const char *field, const char *key, int with_type, size_t max,
                                  ctl_errs_t *errs) {
  each_mapping(m, field, key, 0, max, check_name_value, with_type, errs);
}

static void check_match(const json_t *m, const char *f, int unused, ctl_errs_t *errs) {
  (void)unused;
  static const char *const keys[] = {"path", "headers", "queryParams", "method", NULL};
  ctl__known_keys(m, f, keys, errs);
  const json_t *p = ctl__obj(m, f, "path", 0, errs);
  if (p) {
    char pf[CTL_FIELD_MAX];
    ctl__path(pf, sizeof pf, f, "path");
    static const char *const pk[] = {"type", "value", NULL};
    ctl__known_keys(p, pf, pk, errs);
    static const char *const types[] = {"Exact", "PathPrefix", "RegularExpression", NULL};
    const char *t = ctl__enum(p, pf, "type", types, "PathPrefix", errs);
    const char *v = ctl__str(p, pf, "value", 0, 1024, errs);
    if (v && t && strcmp(t, "RegularExpression") && v[0] != '/') {
      key_err(errs, pf, "value", "must start with '/'");
    }
  }
  check_name_value_list(m, f, "headers", 1, 16, errs);
  check_name_value_list(m, f, "queryParams", 1, 16, errs);
  static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                        "PATCH", NULL};
  ctl__enum(m, f, "method", methods, NULL, errs);
}

static void check_filter(const json_t *fl, const char *f, int unused, ctl_errs_t *errs) {
  (void)unused;
  static const char *const types[] = {"RequestHeaderModifier", "URLRewrite", NULL};
  static const char *const keys[] = {"type", "requestHeaderModifier", "urlRewrite", NULL};
  ctl__known_keys(fl, f, keys, errs);
  const char *t = ctl__str(fl, f, "type", 1, 64, errs);
  if (!t) return;
  if (!ctl__enum(fl, f, "type", types, NULL, errs)) return;
  if (!strcmp(t, "RequestHeaderModifier")) {
    char mf[CTL_FIELD_MAX];
    ctl__path(mf, sizeof mf, f, "requestHeaderModifier");
    const json_t *m = ctl__obj(fl, f, "requestHeaderModifier", 1, errs);
    if (!m) return;
    static const char *const mk[] = {"set", "add", "remove", NULL};
    ctl__known_keys(m, mf, mk, errs);
    check_name_value_list(m, mf, "set", 0, 16, errs);
    check_name_value_list(m, mf, "add", 0, 16, errs);
    const json_t *rm = ctl__array(m, mf, "remove", 0, 16, errs);
    size_t i;
    json_t *r;
    json_array_foreach(rm, i, r) {
      if (!json_is_string(r) || !header_name_ok(json_string_value(r))) {
        char rf[CTL_FIELD_MAX], base[CTL_FIELD_MAX];
        ctl__path(base, sizeof base, mf, "remove");
        ctl__index(rf, sizeof rf, base, i);
        ctl_errs_add(errs, rf, "must be a header name");
      }
    }
  } else {
    char uf[CTL_FIELD_MAX];
    ctl__path(uf, sizeof uf, f, "urlRewrite");
    const json_t *u = ctl__obj(fl, f, "urlRewrite", 1, errs);
    if (!u) return;
    static const char *const uk[] = {"hostname", "path", NULL};
    ctl__known_keys(u, uf, uk, errs);
    const char *h = ctl__str(u, uf, "hostname", 0, 253, errs);
    if (h && !ctl_valid_name(h)) {
      key_err(errs, uf, "hostname", "must be a DNS name");
    }
    const json_t *p = ctl__obj(u, uf, "path", 0, errs);
    if (p) {
      char pf[CTL_FIELD_MAX];
      ctl__path(pf, sizeof pf, uf, "path");
      static const char *const pk[] = {"type", "replaceFullPath", "replacePrefixMatch", NULL};
      static const char *const pt[] = {"ReplaceFullPath", "ReplacePrefixMatch", NULL};
      ctl__known_keys(p, pf, pk, errs);
      const char *t2 = ctl__enum(p, pf, "type", pt, NULL, errs);
      if (!json_object_get(p, "type")) ctl_errs_add(errs, pf, "type is required");
      if (t2) {
        const char *key = !strcmp(t2, "ReplaceFullPath") ? "replaceFullPath" : "replacePrefixMatch";
        const char *v = ctl__str(p, pf, key, 1, 1024, errs);
        if (v && v[0] != '/') {
          key_err(errs, pf, key, "must start with '/'");
        }
      }
    }
  }
}

static void check_parent_ref(const json_t *x, const char *f, int unused, ctl_errs_t *errs) {
  (void)unused;
  static const char *const pk[] = {"group", "kind", "name", "namespace", "sectionName", "port", NULL};
  ctl__known_keys(x, f, pk, errs);
  ctl__str(x, f, "name", 1, 253, errs);
  ctl__str(x, f, "namespace", 0, 63, errs);
  ctl__str(x, f, "sectionName", 0, 253, errs);
  ctl__str(x, f, "group", 0, 253, errs);
  ctl__str(x, f, "kind", 0, 63, errs);
  ctl__int(x, f, "port", 1, 65535, NULL, errs);
}

static void check_backend_ref(const json_t *y, const char *f, int unused, ctl_errs_t *errs) {
  (void)unused;
  static const char *const bk[] = {"group", "kind", "name", "namespace", "port", "weight", NULL};
  ctl__known_keys(y, f, bk, errs);
  const char *n = ctl__str(y, f, "name", 1, 253, errs);
  if (n && !ctl_valid_name(n)) key_err(errs, f, "name", "must be a Service name (DNS subdomain)");
  const char *ns = ctl__str(y, f, "namespace", 0, 63, errs);
  if (ns && !ctl_valid_ns(ns)) key_err(errs, f, "namespace", "must be a DNS label");
  const char *kd = ctl__str(y, f, "kind", 0, 63, errs);
  if (kd && strcmp(kd, "Service")) key_err(errs, f, "kind", "only Service backends are supported");
  ctl__str(y, f, "group", 0, 253, errs);
  ctl__int(y, f, "port", 1, 65535, NULL, errs);
  ctl__int(y, f, "weight", 0, 1000000, NULL, errs);
}

static void check_rule(const json_t *x, const char *rf, int httproute, ctl_errs_t *errs) {
  static const char *const k_route[] = {"matches", "filters", "backendRefs", "timeout", NULL};
  static const char *const k_http[] = {"matches", "filters", "backendRefs", "timeouts", NULL};
  ctl__known_keys(x, rf, httproute ? k_http : k_route, errs);
  each_mapping(x, rf, "matches", 0, 8, check_match, 0, errs);
  each_mapping(x, rf, "filters", 0, 16, check_filter, 0, errs);
  each_mapping(x, rf, "backendRefs", 1, 32, check_backend_ref, 0, errs);
  if (httproute) {
    const json_t *t = ctl__obj(x, rf, "timeouts", 0, errs);
    if (t) {
      char tf[CTL_FIELD_MAX];
      ctl__path(tf, sizeof tf, rf, "timeouts");
      static const char *const tk[] = {"request", NULL};
      ctl__known_keys(t, tf, tk, errs);
      ctl__duration(t, tf, "request", errs);
    }
  } else {
    ctl__duration(x, rf, "timeout", errs);
  }
}

void ctl__validate_route_spec(const json_t *spec, int httproute, ctl_errs_t *errs) {
  static const char *const rkeys[] = {"parentRefs", "hostnames", "rules", NULL};
  ctl__known_keys(spec, "spec", rkeys, errs);
  each_mapping(spec, "spec", "parentRefs", 0, 32, check_parent_ref, 0, errs);
  const json_t *hosts = ctl__array(spec, "spec", "hostnames", 0, 16, errs);
  size_t i;
  json_t *x;
  json_array_foreach(hosts, i, x) {
    char f[CTL_FIELD_MAX];
    ctl__index(f, sizeof f, "spec.hostnames", i);
    if (!json_is_string(x) || !hostname_ok(json_string_value(x)))
      ctl_errs_add(errs, f, "must be a DNS name, optionally starting with '*.'");
  }
  each_mapping(spec, "spec", "rules", 1, 64, check_rule, httproute, errs);
}

static void validate_route(const json_t *obj, ctl_errs_t *errs) {
  const json_t *spec = ctl__obj(obj, "", "spec", 1, errs);
  if (spec) ctl__validate_route_spec(spec, 0, errs);
}

static void validate_httproute(const json_t *obj, ctl_errs_t *errs) {
  const json_t *spec = ctl__obj(obj, "", "spec", 1, errs);
  if (spec) ctl__validate_route_spec(spec, 1, errs);
}

/* ---- the registry ---- */

static const ctl_kind_t kind_service = {
    .kind = "Service", .plural = "services", .api_version = "skiff.dev/v1", .namespaced = 1,
    .validate = validate_service, .short_cols = "ENDPOINTS,PROTOCOL"};
static const ctl_kind_t kind_route = {
    .kind = "Route", .plural = "routes", .api_version = "skiff.dev/v1", .namespaced = 1,
    .validate = validate_route, .short_cols = "HOSTNAMES,RULES"};
static const ctl_kind_t kind_httproute = {
    .kind = "HTTPRoute", .plural = "httproutes", .api_version = "gateway.networking.k8s.io/v1", .namespaced = 1,
    .validate = validate_httproute, .stored_as = "Route", .to_stored = ctl__httproute_to_route,
    .from_stored = ctl__route_to_httproute, .short_cols = "HOSTNAMES,RULES"};

static const ctl_kind_t *kinds[CTL_MAX_KINDS] = {&kind_service, &kind_route, &kind_httproute,
                                                  &ctl__kind_application, &ctl__kind_argo_application};
static size_t nkinds = 5;

int ctl_kind_register(const ctl_kind_t *k) {
  if (!k || !k->kind || !k->plural || !k->api_version) return SK_EINVAL;
  for (size_t i = 0; i < nkinds; i++)
    if (!strcasecmp(kinds[i]->kind, k->kind) || !strcasecmp(kinds[i]->plural, k->plural)) return SK_EEXIST;
  if (nkinds >= CTL_MAX_KINDS) return SK_ELIMIT;
  kinds[nkinds++] = k;
  return 0;
}

const ctl_kind_t *ctl_kind_find(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < nkinds; i++) {
    const ctl_kind_t *k = kinds[i];
    if (!strcasecmp(k->kind, name) || !strcasecmp(k->plural, name)) return k;
  }
  return NULL;
}

const ctl_kind_t *ctl_kind_for_doc(const char *api_version, const char *kind) {
  if (!api_version || !kind) return NULL;
  for (size_t i = 0; i < nkinds; i++)
    if (!strcmp(kinds[i]->kind, kind) && !strcmp(kinds[i]->api_version, api_version)) return kinds[i];
  return NULL;
}

size_t ctl_kind_count(void) { return nkinds; }

const ctl_kind_t *ctl_kind_at(size_t i) { return i < nkinds ? kinds[i] : NULL; }

const ctl_kind_t *ctl_kind_storage(const ctl_kind_t *k) {
  if (!k || !k->stored_as) return k;
  const ctl_kind_t *s = ctl_kind_find(k->stored_as);
  return s ? s : k;
}
