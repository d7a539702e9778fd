/* Manifests: multi-document YAML files into resources that remember where
 * they came from (file:line), ordered by sync wave then kind; the
 * normalised comparison of a desired document with the live object; and
 * health from a live object's status. */
#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gitops.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

void gx_resset_init(gx_resset_t *s) { memset(s, 0, sizeof *s); }

void gx_resset_done(gx_resset_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) json_decref(s->v[i].doc);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* Where each document of a stream starts (1-based lines): documents are
 * separated by "---" lines; a stream that opens with "---" starts its first
 * document after it. */
static size_t doc_lines(const char *text, size_t len, int *lines, size_t max) {
  size_t n = 0;
  int line = 1, seen_content = 0;
  size_t i = 0;
  while (i < len) {
    size_t e = i;
    while (e < len && text[e] != '\n') e++;
    int sep = e - i >= 3 && !strncmp(text + i, "---", 3) && (e - i == 3 || isspace((unsigned char)text[i + 3]) ||
                                                              text[i + 3] == '#');
    if (sep) { /* the next document starts after the separator */
      if (n < max) lines[n++] = line + 1;
      seen_content = 1;
    } else if (!seen_content) { /* the first document starts at its first content line */
      const char *p = text + i;
      while (p < text + e && isspace((unsigned char)*p)) p++;
      if (p < text + e && *p != '#') {
        if (n < max) lines[n++] = line;
        seen_content = 1;
      }
    }
    line++;
    i = e + 1;
  }
  return n;
}

static int kind_rank(const char *kind) {
  static const char *const order[] = {"Namespace", "ClusterPolicy", "Policy",      "Secret",      "ConfigMap",
                                      "Service",   "Route",         "HTTPRoute",   "Canary",      "FeatureFlag",
                                      "SLO",       "AlertRoute",    "ChaosExperiment", NULL};
  for (int i = 0; order[i]; i++)
    if (!strcmp(order[i], kind)) return i;
  if (!strcmp(kind, "Application")) return 100;
  return 50;
}

static int parse_wave(const char *s, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  while (*end == ' ') end++;
  if (!*s || *end || errno || v < -1000000 || v > 1000000) return SK_EINVAL;
  *out = (int)v;
  return 0;
}

int gx_manifest_load(gx_resset_t *s, const char *name, const char *text, size_t len, const char *default_ns,
                     char *err, size_t errlen) {
  json_t *all = NULL;
  char yerr[512];
  sk_yaml_opts_t yo = {.max_bytes = GX_MAX_FILE_BYTES, .max_depth = 32, .max_docs = GX_MAX_DOCS};
  int rc = sk_yaml_load_all(text, len, &yo, &all, yerr, sizeof yerr);
  if (rc < 0) {
    snprintf(err, errlen, "%s:%s", name, yerr);
    return rc;
  }
  size_t nd = json_array_size(all);
  int *lines = sk_xcalloc(nd + 1, sizeof *lines);
  size_t nl = doc_lines(text, len, lines, nd + 1);
  size_t i;
  json_t *d;
  json_array_foreach(all, i, d) {
    int line = i < nl ? lines[i] : 1;
    if (json_is_null(d)) continue;
    if (s->n >= GX_MAX_DOCS) {
      snprintf(err, errlen, "%s:%d: more than %d documents in the application", name, line, GX_MAX_DOCS);
      rc = SK_ELIMIT;
      break;
    }
    if (!json_is_object(d)) {
      snprintf(err, errlen, "%s:%d: the document is not a mapping", name, line);
      rc = SK_EINVAL;
      break;
    }
    const char *av = sk_json_get_str(d, "apiVersion", NULL), *kd = sk_json_get_str(d, "kind", NULL);
    const char *nm = sk_json_get_str(d, "metadata.name", NULL);
    const char *missing = !av ? "apiVersion" : !kd ? "kind" : !nm ? "metadata.name" : NULL;
    if (missing) {
      snprintf(err, errlen, "%s:%d: %s is required", name, line, missing);
      rc = SK_EINVAL;
      break;
    }
    if (strlen(av) >= 128 || strlen(kd) >= 64 || strlen(nm) > 253) {
      snprintf(err, errlen, "%s:%d: apiVersion, kind or metadata.name too long", name, line);
      rc = SK_EINVAL;
      break;
    }
    json_t *m = json_object_get(d, "metadata");
    const char *ns = sk_json_get_str(m, "namespace", NULL);
    if (!ns && default_ns && *default_ns) json_object_set_new(m, "namespace", json_string(default_ns));
    ns = sk_json_get_str(m, "namespace", "default");
    if (strlen(ns) >= 64) {
      snprintf(err, errlen, "%s:%d: metadata.namespace too long", name, line);
      rc = SK_EINVAL;
      break;
    }
    int wave = 0;
    const char *ws = gx_annotation(d, GX_ANN_WAVE);
    if (!ws) ws = gx_annotation(d, GX_ANN_ARGO_WAVE);
    if (ws && parse_wave(ws, &wave) < 0) {
      snprintf(err, errlen, "%s:%d: %s/%s: sync wave '%s' is not an integer", name, line, kd, nm, ws);
      rc = SK_EINVAL;
      break;
    }
    if (s->n == s->cap) {
      s->cap = s->cap ? s->cap * 2 : 64;
      s->v = sk_xrealloc(s->v, s->cap * sizeof *s->v);
    }
    gx_res_t *r = &s->v[s->n];
    memset(r, 0, sizeof *r);
    r->doc = json_incref(d);
    snprintf(r->src, sizeof r->src, "%s:%d", name, line);
    snprintf(r->api_version, sizeof r->api_version, "%s", av);
    snprintf(r->kind, sizeof r->kind, "%s", kd);
    snprintf(r->ns, sizeof r->ns, "%s", ns);
    snprintf(r->name, sizeof r->name, "%s", nm);
    r->wave = wave;
    r->kind_rank = kind_rank(kd);
    r->index = s->n;
    s->n++;
  }
  free(lines);
  json_decref(all);
  return rc;
}

static int key_cmp(const void *x, const void *y) {
  const gx_res_t *a = *(const gx_res_t *const *)x, *b = *(const gx_res_t *const *)y;
  int c = strcmp(a->kind, b->kind);
  if (!c) c = strcmp(a->ns, b->ns);
  if (!c) c = strcmp(a->name, b->name);
  if (!c) c = a->index < b->index ? -1 : a->index > b->index;
  return c;
}

int gx_manifest_check_dups(const gx_resset_t *s, char *err, size_t errlen) {
  size_t n = s->n;
  const gx_res_t **v = sk_xmalloc((n + 1) * sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = &s->v[i];
  qsort(v, n, sizeof *v, key_cmp);
  int rc = 0;
  for (size_t i = 1; i < n; i++) {
    const gx_res_t *a = v[i - 1], *b = v[i];
    if (!strcmp(a->kind, b->kind) && !strcmp(a->ns, b->ns) && !strcmp(a->name, b->name)) {
      snprintf(err, errlen, "%s: %s %s/%s is also defined at %s", b->src, b->kind, b->ns, b->name, a->src);
      rc = SK_EEXIST;
      break;
    }
  }
  free(v);
  return rc;
}

static int res_cmp(const void *x, const void *y) {
  const gx_res_t *a = x, *b = y;
  if (a->wave != b->wave) return a->wave < b->wave ? -1 : 1;
  if (a->kind_rank != b->kind_rank) return a->kind_rank < b->kind_rank ? -1 : 1;
  return a->index < b->index ? -1 : a->index > b->index;
}

void gx_manifest_sort(gx_resset_t *s) {
  if (s->n > 1) qsort(s->v, s->n, sizeof *s->v, res_cmp);
}

static int one_glob(const char *g, size_t glen, const char *path) {
  char pat[1024];
  if (!glen || glen >= sizeof pat) return 0;
  memcpy(pat, g, glen);
  pat[glen] = 0;
  if (fnmatch(pat, path, 0) == 0) return 1;
  /* "*.yaml" also matches files in subdirectories (by base name) */
  const char *base = strrchr(path, '/');
  return !strchr(pat, '/') && base && fnmatch(pat, base + 1, 0) == 0;
}

int gx_glob_match(const char *globs, const char *path) {
  size_t n = strlen(globs);
  if (n >= 2 && globs[0] == '{' && globs[n - 1] == '}') {
    const char *p = globs + 1, *end = globs + n - 1;
    while (p < end) {
      const char *c = memchr(p, ',', (size_t)(end - p));
      if (!c) c = end;
      if (one_glob(p, (size_t)(c - p), path)) return 1;
      p = c + 1;
    }
    return 0;
  }
  return one_glob(globs, n, path);
}

const char *gx_annotation(const json_t *obj, const char *key) {
  const json_t *a = json_object_get(json_object_get(obj, "metadata"), "annotations");
  const json_t *v = json_object_get(a, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- comparison ---- */

static int subset(const json_t *d, const json_t *l, char *where, size_t wlen, const char *path) {
  char sub[512];
  if (json_is_object(d)) {
    if (!json_is_object(l)) goto diff;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)d, k, v) {
      snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", k);
      json_t *lv = json_object_get(l, k);
      if (json_is_null(v)) {
        if (lv && !json_is_null(lv)) {
          snprintf(where, wlen, "%s", sub);
          return 0;
        }
        continue;
      }
      if (!lv) {
        /* an empty desired collection equals an absent one */
        if ((json_is_object(v) && !json_object_size(v)) || (json_is_array(v) && !json_array_size(v))) continue;
        snprintf(where, wlen, "%s", sub);
        return 0;
      }
      if (!subset(v, lv, where, wlen, sub)) return 0;
    }
    return 1;
  }
  if (json_is_array(d)) {
    if (!json_is_array(l) || json_array_size(d) != json_array_size(l)) goto diff;
    for (size_t i = 0; i < json_array_size(d); i++) {
      snprintf(sub, sizeof sub, "%s[%zu]", path, i);
      if (!subset(json_array_get(d, i), json_array_get(l, i), where, wlen, sub)) return 0;
    }
    return 1;
  }
  if (json_is_number(d) && json_is_number(l)) {
    if (json_number_value(d) == json_number_value(l)) return 1;
    goto diff;
  }
  if (json_equal((json_t *)d, (json_t *)l)) return 1;
diff:
  snprintf(where, wlen, "%s", *path ? path : "(document)");
  return 0;
}

int gx_doc_in_sync(const json_t *desired, const json_t *live, char *where, size_t wlen) {
  if (wlen) where[0] = 0;
  if (!live) {
    snprintf(where, wlen, "(missing)");
    return 0;
  }
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)desired, k, v) {
    if (!strcmp(k, "apiVersion") || !strcmp(k, "kind") || !strcmp(k, "status")) continue;
    if (!strcmp(k, "metadata")) {
      static const char *const keys[] = {"labels", "annotations", NULL};
      for (size_t i = 0; keys[i]; i++) {
        json_t *dv = json_object_get(v, keys[i]);
        if (!dv) continue;
        char p[64];
        snprintf(p, sizeof p, "metadata.%s", keys[i]);
        if (!subset(dv, sk_json_get(live, p), where, wlen, p)) return 0;
      }
      continue;
    }
    if (!subset(v, json_object_get(live, k), where, wlen, k)) return 0;
  }
  return 1;
}

/* ---- health ---- */

static const char *phase_health(const char *p) {
  static const struct {
    const char *phase, *health;
  } map[] = {{"Healthy", "Healthy"},         {"Running", "Healthy"},       {"Succeeded", "Healthy"},
             {"Ready", "Healthy"},           {"Active", "Healthy"},        {"Bound", "Healthy"},
             {"Synced", "Healthy"},          {"Progressing", "Progressing"}, {"Pending", "Progressing"},
             {"Initializing", "Progressing"}, {"Promoting", "Progressing"}, {"Degraded", "Degraded"},
             {"Failed", "Degraded"},         {"Error", "Degraded"},        {"Suspended", "Suspended"},
             {"Paused", "Suspended"},        {"Missing", "Missing"},       {"Unknown", "Unknown"}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
    if (!strcasecmp(map[i].phase, p)) return map[i].health;
  return NULL;
}

const char *gx_health_of(const json_t *live) {
  const json_t *st = json_object_get(live, "status");
  if (!json_is_object(st)) return "Healthy"; /* nothing to judge: like a ConfigMap */
  const char *h = sk_json_get_str(st, "health.status", NULL);
  if (h && phase_health(h)) return phase_health(h);
  const char *ph = sk_json_get_str(st, "phase", NULL);
  if (ph && phase_health(ph)) return phase_health(ph);
  const json_t *conds = json_object_get(st, "conditions");
  size_t i;
  json_t *c;
  json_array_foreach(conds, i, c) {
    const char *type = sk_json_get_str(c, "type", ""), *cs = sk_json_get_str(c, "status", "");
    if (strcmp(type, "Ready") && strcmp(type, "Available") && strcmp(type, "Healthy")) continue;
    if (!strcmp(cs, "True")) return "Healthy";
    const char *reason = sk_json_get_str(c, "reason", "");
    if (strstr(reason, "Progress") || strstr(reason, "Pending")) return "Progressing";
    return !strcmp(cs, "Unknown") ? "Progressing" : "Degraded";
  }
  if (sk_json_get_bool(st, "suspended", 0) || sk_json_get_bool(st, "paused", 0)) return "Suspended";
  return "Healthy";
}

int gx_health_rank(const char *h) {
  static const char *const order[] = {"Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown", NULL};
  for (int i = 0; order[i]; i++)
    if (!strcmp(order[i], h)) return i;
  return 5;
}
