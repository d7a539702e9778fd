/* What an Application asks of a sync beyond "make live equal Git":
 * Argo CD's sync options, syncPolicy.retry with backoff, ignoreDifferences
 * (JSON pointers), and the three-way merge an apply does unless
 * Replace=true. Pure functions (unit-tested in tests/unit/test_gitops.c). */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gitops.h"
#include "skiff/config.h"
#include "skiff/err.h"
#include "skiff/json.h"

/* ---- JSON pointers (RFC 6901) ---- */

/* The next reference token of *p (after its '/'), unescaped into tok. */
static int next_token(const char **p, char *tok, size_t len) {
  if (**p != '/') return SK_EINVAL;
  const char *s = *p + 1;
  size_t n = 0;
  while (*s && *s != '/') {
    char c = *s++;
    if (c == '~') {
      if (*s == '0') c = '~';
      else if (*s == '1') c = '/';
      else return SK_EINVAL;
      s++;
    }
    if (n + 1 >= len) return SK_ELIMIT;
    tok[n++] = c;
  }
  tok[n] = 0;
  *p = s;
  return 0;
}

static int array_index(const char *tok, size_t *out) {
  if (!*tok || strlen(tok) > 9 || (tok[0] == '0' && tok[1])) return SK_EINVAL;
  for (const char *c = tok; *c; c++)
    if (!isdigit((unsigned char)*c)) return SK_EINVAL;
  *out = (size_t)strtoul(tok, NULL, 10);
  return 0;
}

static json_t *child(const json_t *v, const char *tok) {
  if (json_is_object(v)) return json_object_get(v, tok);
  size_t i;
  if (json_is_array(v) && array_index(tok, &i) == 0) return json_array_get(v, i);
  return NULL;
}

json_t *gx_json_pointer_get(const json_t *v, const char *ptr) {
  if (!ptr) return NULL;
  if (!*ptr) return (json_t *)v;
  const char *p = ptr;
  char tok[256];
  json_t *cur = (json_t *)v;
  while (*p && cur) {
    if (next_token(&p, tok, sizeof tok) < 0) return NULL;
    cur = child(cur, tok);
  }
  return cur;
}

int gx_json_pointer_put(json_t *v, const char *ptr, json_t *val) {
  int rc = SK_ENOTFOUND;
  const char *last = ptr ? strrchr(ptr, '/') : NULL;
  char parent_ptr[1024], tok[256];
  if (!last || (size_t)(last - ptr) >= sizeof parent_ptr) goto out;
  memcpy(parent_ptr, ptr, (size_t)(last - ptr));
  parent_ptr[last - ptr] = 0;
  json_t *parent = gx_json_pointer_get(v, parent_ptr);
  const char *p = last;
  if (!parent || next_token(&p, tok, sizeof tok) < 0) goto out;
  if (json_is_object(parent)) {
    if (val) {
      json_object_set_new(parent, tok, val);
      val = NULL;
      rc = 0;
    } else {
      rc = json_object_del(parent, tok) == 0 ? 0 : SK_ENOTFOUND;
    }
  } else if (json_is_array(parent)) {
    size_t i;
    if (array_index(tok, &i) < 0 || i >= json_array_size(parent)) goto out;
    if (val) {
      json_array_set_new(parent, i, val);
      val = NULL;
    } else {
      json_array_remove(parent, i);
    }
    rc = 0;
  }
out:
  json_decref(val);
  return rc;
}

/* ---- ignoreDifferences ---- */

void gx_ignore_foreach(const json_t *rules, const char *api_version, const char *kind, const char *ns,
                       const char *name, void (*fn)(const char *ptr, void *ud), void *ud) {
  const char *slash = strchr(api_version, '/');
  size_t glen = slash ? (size_t)(slash - api_version) : 0; /* "v1" is the core group "" */
  size_t i;
  json_t *r;
  json_array_foreach(rules, i, r) {
    const char *k = sk_json_get_str(r, "kind", "");
    const char *g = sk_json_get_str(r, "group", NULL);
    const char *n = sk_json_get_str(r, "name", "");
    const char *s = sk_json_get_str(r, "namespace", "");
    if (strcmp(k, kind)) continue;
    if (g && (strlen(g) != glen || strncmp(g, api_version, glen))) continue;
    if (*n && strcmp(n, name)) continue;
    if (*s && strcmp(s, ns)) continue;
    size_t j;
    json_t *p;
    json_array_foreach(json_object_get(r, "jsonPointers"), j, p) {
      if (json_is_string(p)) fn(json_string_value(p), ud);
    }
  }
}

/* ---- field sets and the three-way merge ---- */

static json_t *fields_of(const json_t *v) {
  if (!json_is_object(v)) return json_integer(1);
  json_t *o = json_object();
  const char *k;
  json_t *c;
  json_object_foreach((json_t *)v, k, c) json_object_set_new(o, k, fields_of(c));
  return o;
}

json_t *gx_field_set(const json_t *doc) {
  json_t *fs = json_object();
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)doc, k, v) {
    if (!strcmp(k, "status") || !strcmp(k, "apiVersion") || !strcmp(k, "kind")) continue;
    if (!strcmp(k, "metadata")) {
      json_t *m = json_object();
      static const char *const keys[] = {"labels", "annotations", NULL};
      for (size_t i = 0; keys[i]; i++) {
        json_t *sub = json_object_get(v, keys[i]);
        if (!json_is_object(sub)) continue;
        json_t *f = fields_of(sub);
        /* the bookkeeping annotation never removes itself */
        if (!strcmp(keys[i], "annotations")) json_object_del(f, GX_ANN_APPLIED_FIELDS);
        json_object_set_new(m, keys[i], f);
      }
      json_object_set_new(fs, k, m);
      continue;
    }
    json_object_set_new(fs, k, fields_of(v));
  }
  return fs;
}

static json_t *merge(const json_t *last, const json_t *desired, const json_t *live) {
  if (!json_is_object(desired) || !json_is_object(live)) return json_deep_copy(desired);
  json_t *out = json_deep_copy(live);
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)desired, k, v)
      json_object_set_new(out, k, merge(json_object_get(last, k), v, json_object_get(live, k)));
  if (json_is_object(last)) json_object_foreach((json_t *)last, k, v) {
      if (!json_object_get(desired, k)) json_object_del(out, k);
    }
  return out;
}

json_t *gx_merge_apply(const json_t *last, const json_t *desired, const json_t *live) {
  if (!json_is_object(live)) return json_deep_copy(desired);
  json_t *out = json_deep_copy(desired);
  const char *k;
  json_t *v;
  /* top-level fields other than metadata: merged with live's */
  json_object_foreach((json_t *)live, k, v) {
    if (!strcmp(k, "metadata") || !strcmp(k, "status") || !strcmp(k, "apiVersion") || !strcmp(k, "kind")) continue;
    const json_t *d = json_object_get(desired, k);
    const json_t *l = json_object_get(last, k);
    if (d) json_object_set_new(out, k, merge(l, d, v));
    else if (!l) json_object_set_new(out, k, json_deep_copy(v)); /* someone else's field */
  }
  /* metadata: Git's, with live's labels and annotations merged in (the
   * server-managed fields are control's, never sent back) */
  json_t *om = json_object_get(out, "metadata");
  const json_t *lm = json_object_get(live, "metadata"), *last_m = json_object_get(last, "metadata");
  static const char *const keys[] = {"labels", "annotations", NULL};
  for (size_t i = 0; json_is_object(om) && keys[i]; i++) {
    const json_t *lv = json_object_get(lm, keys[i]);
    if (!json_is_object(lv)) continue;
    const json_t *dv = json_object_get(om, keys[i]);
    json_t *empty = json_object();
    json_object_set_new(om, keys[i], merge(json_object_get(last_m, keys[i]), dv ? dv : empty, lv));
    json_decref(empty);
  }
  return out;
}

/* ---- sync options ---- */

void gx_sync_opts_init(gx_sync_opts_t *o) {
  o->prune = o->prune_last = o->apply_oos_only = o->replace = o->validate = o->create_namespace =
      o->respect_ignore = -1;
}

int gx_sync_opt_parse(gx_sync_opts_t *o, const char *opt, size_t len, char *err, size_t errlen) {
  while (len && isspace((unsigned char)*opt)) opt++, len--;
  while (len && isspace((unsigned char)opt[len - 1])) len--;
  char buf[128];
  if (len >= sizeof buf) {
    snprintf(err, errlen, "sync option '%.40s...' is too long", opt);
    return SK_EINVAL;
  }
  memcpy(buf, opt, len);
  buf[len] = 0;
  char *eq = strchr(buf, '=');
  if (!eq) {
    snprintf(err, errlen, "sync option '%s' is not Name=value", buf);
    return SK_EINVAL;
  }
  *eq = 0;
  const char *val = eq + 1;
  static const struct {
    const char *name;
    size_t off;
  } known[] = {
      {"Prune", offsetof(gx_sync_opts_t, prune)},
      {"PruneLast", offsetof(gx_sync_opts_t, prune_last)},
      {"ApplyOutOfSyncOnly", offsetof(gx_sync_opts_t, apply_oos_only)},
      {"Replace", offsetof(gx_sync_opts_t, replace)},
      {"Validate", offsetof(gx_sync_opts_t, validate)},
      {"CreateNamespace", offsetof(gx_sync_opts_t, create_namespace)},
      {"RespectIgnoreDifferences", offsetof(gx_sync_opts_t, respect_ignore)},
  };
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (strcmp(buf, known[i].name)) continue;
    int b;
    if (!strcasecmp(val, "true")) b = 1;
    else if (!strcasecmp(val, "false")) b = 0;
    else {
      snprintf(err, errlen, "sync option %s=%s: the value must be true or false", buf, val);
      return SK_EINVAL;
    }
    *(int *)((char *)o + known[i].off) = b;
    return 0;
  }
  snprintf(err, errlen,
           "unknown sync option '%s=%s' (supported: Prune, PruneLast, ApplyOutOfSyncOnly, Replace, Validate, "
           "CreateNamespace, RespectIgnoreDifferences)",
           buf, val);
  return SK_EINVAL;
}

int gx_sync_opts_parse_list(gx_sync_opts_t *o, const char *list, char *err, size_t errlen) {
  int bad = 0;
  if (errlen) err[0] = 0;
  if (!list) return 0;
  const char *p = list;
  while (*p) {
    size_t n = strcspn(p, ",");
    size_t k = 0;
    while (k < n && isspace((unsigned char)p[k])) k++;
    if (k < n) {
      char e[256];
      if (gx_sync_opt_parse(o, p, n, e, sizeof e) < 0) {
        size_t used = strlen(err);
        if (used < errlen) snprintf(err + used, errlen - used, "%s%s", bad ? "; " : "", e);
        bad++;
      }
    }
    p += n;
    if (*p == ',') p++;
  }
  return bad;
}

/* ---- retry ---- */

static uint64_t argo_duration_ms(const char *s, uint64_t def) {
  if (!s || !*s) return def;
  size_t n = strlen(s), i = 0;
  while (i < n && isdigit((unsigned char)s[i])) i++;
  if (i == n && n <= 9) return (uint64_t)strtoull(s, NULL, 10) * 1000; /* bare seconds */
  uint64_t ms;
  char msg[64];
  return sk_config_parse_duration(s, &ms, msg, sizeof msg) == 0 ? ms : def;
}

int gx_retry_from_spec(const json_t *retry, gx_retry_t *r) {
  memset(r, 0, sizeof *r);
  if (!json_is_object(retry)) return 0;
  r->limit = sk_json_get_int(retry, "limit", 0);
  const json_t *b = json_object_get(retry, "backoff");
  r->duration_ms = argo_duration_ms(sk_json_get_str(b, "duration", NULL), 5000);
  r->max_ms = argo_duration_ms(sk_json_get_str(b, "maxDuration", NULL), 180000);
  r->factor = sk_json_get_int(b, "factor", 2);
  if (r->factor < 1) r->factor = 1;
  if (!r->duration_ms) r->duration_ms = 1;
  return r->limit != 0;
}

uint64_t gx_retry_delay_ms(const gx_retry_t *r, int attempt) {
  uint64_t d = r->duration_ms;
  for (int i = 1; i < attempt && d < r->max_ms; i++) d *= (uint64_t)r->factor;
  return r->max_ms && d > r->max_ms ? r->max_ms : d;
}
