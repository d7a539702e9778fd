/* Mutation: RFC 6902 JSON Patch (apply and diff, RFC 6901 pointers) and
 * Kyverno's patchStrategicMerge with +(), (), <() anchors. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define POL_MAX_PTR_TOKENS 128
#define POL_MAX_PATCH_OPS 10000

/* ---- RFC 6901 pointers ---- */

typedef struct ptr {
  char *tok[POL_MAX_PTR_TOKENS];
  size_t len[POL_MAX_PTR_TOKENS];
  size_t n;
  char *buf;
} ptr_t;

static void ptr_done(ptr_t *p) { free(p->buf); }

static int ptr_parse(const char *s, ptr_t *p, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  if (!s) {
    snprintf(err, errlen, "missing path");
    return SK_EINVAL;
  }
  if (!*s) return 0;
  if (*s != '/') {
    snprintf(err, errlen, "path \"%.200s\" must start with /", s);
    return SK_EINVAL;
  }
  size_t n = strlen(s);
  p->buf = sk_xmalloc(n + 1);
  char *w = p->buf;
  for (const char *c = s; *c;) {
    c++; /* the '/' */
    if (p->n >= POL_MAX_PTR_TOKENS) {
      snprintf(err, errlen, "path deeper than %d", POL_MAX_PTR_TOKENS);
      return SK_ELIMIT;
    }
    p->tok[p->n] = w;
    while (*c && *c != '/') {
      if (*c == '~') {
        if (c[1] == '0') *w++ = '~';
        else if (c[1] == '1') *w++ = '/';
        else {
          snprintf(err, errlen, "path \"%.200s\": ~ must be followed by 0 or 1", s);
          return SK_EINVAL;
        }
        c += 2;
      } else {
        *w++ = *c++;
      }
    }
    p->len[p->n] = (size_t)(w - p->tok[p->n]);
    *w++ = 0;
    p->n++;
  }
  return 0;
}

/* Array index token: digits without leading zeros. -1 otherwise. */
static long ptr_index(const char *t, size_t n) {
  if (!n || n > 18) return -1;
  if (n > 1 && t[0] == '0') return -1;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)t[i])) return -1;
    v = v * 10 + (t[i] - '0');
  }
  return v;
}

/* The value at tokens [0, n), or NULL. */
static json_t *ptr_get(json_t *doc, const ptr_t *p, size_t n) {
  json_t *cur = doc;
  for (size_t i = 0; i < n && cur; i++) {
    if (json_is_object(cur)) cur = json_object_getn(cur, p->tok[i], p->len[i]);
    else if (json_is_array(cur)) {
      long idx = ptr_index(p->tok[i], p->len[i]);
      cur = idx < 0 ? NULL : json_array_get(cur, (size_t)idx);
    } else cur = NULL;
  }
  return cur;
}

static int num_equal(const json_t *a, const json_t *b, int depth);

static int num_equal(const json_t *a, const json_t *b, int depth) {
  if (depth > POL_MAX_DEPTH) return 0;
  if (json_is_number(a) && json_is_number(b)) return json_number_value(a) == json_number_value(b);
  if (json_typeof(a) != json_typeof(b)) return 0;
  if (json_is_object(a)) {
    if (json_object_size(a) != json_object_size(b)) return 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v) {
      json_t *o = json_object_get(b, k);
      if (!o || !num_equal(v, o, depth + 1)) return 0;
    }
    return 1;
  }
  if (json_is_array(a)) {
    if (json_array_size(a) != json_array_size(b)) return 0;
    for (size_t i = 0; i < json_array_size(a); i++)
      if (!num_equal(json_array_get(a, i), json_array_get(b, i), depth + 1)) return 0;
    return 1;
  }
  return json_equal(a, b);
}

/* add: takes the reference to v. */
static int op_add(json_t **doc, const ptr_t *p, json_t *v, const char *path, char *err, size_t errlen) {
  if (p->n == 0) {
    json_decref(*doc);
    *doc = v;
    return 0;
  }
  json_t *parent = ptr_get(*doc, p, p->n - 1);
  const char *t = p->tok[p->n - 1];
  size_t tl = p->len[p->n - 1];
  if (json_is_object(parent)) {
    json_object_setn_new(parent, t, tl, v);
    return 0;
  }
  if (json_is_array(parent)) {
    size_t n = json_array_size(parent);
    if (tl == 1 && t[0] == '-') {
      json_array_append_new(parent, v);
      return 0;
    }
    long idx = ptr_index(t, tl);
    if (idx >= 0 && (size_t)idx <= n) {
      json_array_insert_new(parent, (size_t)idx, v);
      return 0;
    }
    snprintf(err, errlen, "path \"%.200s\": array index out of range", path);
  } else {
    snprintf(err, errlen, "path \"%.200s\": parent does not exist", path);
  }
  json_decref(v);
  return SK_ENOTFOUND;
}

static int op_remove(json_t *doc, const ptr_t *p, const char *path, char *err, size_t errlen) {
  if (p->n == 0) {
    snprintf(err, errlen, "cannot remove the whole document");
    return SK_EINVAL;
  }
  json_t *parent = ptr_get(doc, p, p->n - 1);
  const char *t = p->tok[p->n - 1];
  size_t tl = p->len[p->n - 1];
  if (json_is_object(parent) && json_object_getn(parent, t, tl)) {
    char *k = sk_xstrndup(t, tl);
    json_object_del(parent, k);
    free(k);
    return 0;
  }
  if (json_is_array(parent)) {
    long idx = ptr_index(t, tl);
    if (idx >= 0 && (size_t)idx < json_array_size(parent)) {
      json_array_remove(parent, (size_t)idx);
      return 0;
    }
  }
  snprintf(err, errlen, "path \"%.200s\" does not exist", path);
  return SK_ENOTFOUND;
}

static int apply_one(json_t **doc, const json_t *op, size_t i, char *err, size_t errlen) {
  const char *name = json_string_value(json_object_get(op, "op"));
  const char *path = json_string_value(json_object_get(op, "path"));
  const char *from = json_string_value(json_object_get(op, "from"));
  json_t *value = json_object_get(op, "value");
  ptr_t p, f;
  int rc;
  char e[256] = "";
  memset(&f, 0, sizeof f);
  if (!json_is_object(op) || !name) {
    snprintf(err, errlen, "operation %zu: missing \"op\"", i);
    return SK_EINVAL;
  }
  if ((rc = ptr_parse(path, &p, e, sizeof e)) < 0) goto out;
  if (!strcmp(name, "add") || !strcmp(name, "replace") || !strcmp(name, "test")) {
    if (!value) {
      snprintf(e, sizeof e, "missing \"value\"");
      rc = SK_EINVAL;
      goto out;
    }
  }
  if (!strcmp(name, "add")) {
    rc = op_add(doc, &p, json_deep_copy(value), path, e, sizeof e);
  } else if (!strcmp(name, "remove")) {
    rc = op_remove(*doc, &p, path, e, sizeof e);
  } else if (!strcmp(name, "replace")) {
    if (!ptr_get(*doc, &p, p.n)) {
      snprintf(e, sizeof e, "path \"%.200s\" does not exist", path);
      rc = SK_ENOTFOUND;
    } else if (p.n && (rc = op_remove(*doc, &p, path, e, sizeof e)) < 0) {
    } else {
      rc = op_add(doc, &p, json_deep_copy(value), path, e, sizeof e);
    }
  } else if (!strcmp(name, "move") || !strcmp(name, "copy")) {
    if ((rc = ptr_parse(from, &f, e, sizeof e)) < 0) goto out;
    json_t *src = ptr_get(*doc, &f, f.n);
    if (!src) {
      snprintf(e, sizeof e, "from \"%.200s\" does not exist", from);
      rc = SK_ENOTFOUND;
      goto out;
    }
    if (name[0] == 'm') {
      size_t fl = strlen(from);
      if (!strncmp(path, from, fl) && path[fl] == '/') {
        snprintf(e, sizeof e, "cannot move \"%.100s\" into its own child", from);
        rc = SK_EINVAL;
        goto out;
      }
      if (!strcmp(path, from)) goto out;
      json_incref(src);
      if (f.n == 0) {
        rc = op_add(doc, &p, src, path, e, sizeof e);
        goto out;
      }
      if ((rc = op_remove(*doc, &f, from, e, sizeof e)) < 0) {
        json_decref(src);
        goto out;
      }
      rc = op_add(doc, &p, src, path, e, sizeof e);
    } else {
      rc = op_add(doc, &p, json_deep_copy(src), path, e, sizeof e);
    }
  } else if (!strcmp(name, "test")) {
    json_t *cur = ptr_get(*doc, &p, p.n);
    if (!cur || !num_equal(cur, value, 0)) {
      snprintf(e, sizeof e, "test failed at \"%.200s\"", path);
      rc = SK_ECONFLICT;
    }
  } else {
    snprintf(e, sizeof e, "unknown op \"%.32s\"", name);
    rc = SK_EINVAL;
  }
out:
  if (rc < 0) snprintf(err, errlen, "operation %zu (%s): %s", i, name, e);
  ptr_done(&p);
  ptr_done(&f);
  return rc;
}

int pol_jsonpatch_apply(json_t **doc, const json_t *ops, char *err, size_t errlen) {
  if (!json_is_array(ops)) {
    snprintf(err, errlen, "a JSON patch must be a list of operations");
    return SK_EINVAL;
  }
  if (json_array_size(ops) > POL_MAX_PATCH_OPS) {
    snprintf(err, errlen, "more than %d patch operations", POL_MAX_PATCH_OPS);
    return SK_ELIMIT;
  }
  /* all or nothing: work on a copy */
  json_t *work = *doc ? json_deep_copy(*doc) : json_null();
  size_t i;
  json_t *op;
  json_array_foreach(ops, i, op) {
    int rc = apply_one(&work, op, i, err, errlen);
    if (rc < 0) {
      json_decref(work);
      return rc;
    }
  }
  json_decref(*doc);
  *doc = work;
  return 0;
}

/* ---- diff ---- */

static void ptr_append(sk_buf_t *b, const char *k, size_t n) {
  sk_buf_append(b, "/", 1);
  size_t run = 0; /* bytes from here on need no escape */
  for (size_t i = 0; i < n; i++) {
    if (k[i] != '~' && k[i] != '/') continue;
    sk_buf_append(b, k + run, i - run);
    sk_buf_append(b, k[i] == '~' ? "~0" : "~1", 2);
    run = i + 1;
  }
  sk_buf_append(b, k + run, n - run);
}

static void emit(json_t *ops, const char *op, sk_buf_t *path, const json_t *v) {
  json_t *o = json_object();
  json_object_set_new(o, "op", json_string(op));
  json_object_set_new(o, "path", json_stringn(path->data ? path->data : "", path->len));
  if (v) json_object_set_new(o, "value", json_deep_copy(v));
  json_array_append_new(ops, o);
}

/* An array index as a pointer token (what "%zu" gives, without printf). */
static size_t idx_token(char *buf, size_t i) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + i % 10);
    i /= 10;
  } while (i);
  for (size_t k = 0; k < n; k++) buf[k] = tmp[n - 1 - k];
  return n;
}

static void diff(json_t *ops, sk_buf_t *path, const json_t *a, const json_t *b, int depth) {
  if (num_equal(a, b, 0)) return;
  size_t keep = path->len;
  if (depth < POL_MAX_DEPTH && json_is_object(a) && json_is_object(b)) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)a, k, v) {
      json_t *o = json_object_get(b, k);
      ptr_append(path, k, strlen(k));
      if (!o) emit(ops, "remove", path, NULL);
      else diff(ops, path, v, o, depth + 1);
      path->len = keep;
    }
    json_object_foreach((json_t *)b, k, v) {
      if (json_object_get(a, k)) continue;
      ptr_append(path, k, strlen(k));
      emit(ops, "add", path, v);
      path->len = keep;
    }
    return;
  }
  if (depth < POL_MAX_DEPTH && json_is_array(a) && json_is_array(b)) {
    size_t na = json_array_size(a), nb = json_array_size(b), n = na < nb ? na : nb;
    char idx[24];
    for (size_t i = 0; i < n; i++) {
      ptr_append(path, idx, idx_token(idx, i));
      diff(ops, path, json_array_get(a, i), json_array_get(b, i), depth + 1);
      path->len = keep;
    }
    for (size_t i = n; i < nb; i++) {
      ptr_append(path, idx, idx_token(idx, i));
      emit(ops, "add", path, json_array_get(b, i));
      path->len = keep;
    }
    for (size_t i = na; i > nb; i--) {
      ptr_append(path, idx, idx_token(idx, i - 1));
      emit(ops, "remove", path, NULL);
      path->len = keep;
    }
    return;
  }
  emit(ops, "replace", path, b);
}

json_t *pol_jsonpatch_diff(const json_t *a, const json_t *b) {
  json_t *ops = json_array();
  sk_buf_t path;
  sk_buf_init(&path);
  if (!a) a = json_null();
  if (!b) b = json_null();
  if (json_typeof(a) != json_typeof(b) && !(json_is_number(a) && json_is_number(b)) && path.len == 0) {
    if (!num_equal(a, b, 0)) emit(ops, json_is_null(a) ? "add" : "replace", &path, b);
  } else {
    diff(ops, &path, a, b, 0);
  }
  sk_buf_done(&path);
  return ops;
}

/* ---- patchStrategicMerge ---- */

/* A copy of a patch value without its anchors: +(k) becomes k, condition
 * keys are dropped. */
static json_t *strip(const json_t *v, int depth) {
  if (depth > POL_MAX_DEPTH) return json_null();
  if (json_is_object(v)) {
    json_t *o = json_object();
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)v, k, e) {
      const char *in;
      size_t n;
      int a = pol_anchor(k, &in, &n);
      if (a != POL_ANCHOR_NONE && a != POL_ANCHOR_ADD) continue;
      json_object_setn_new(o, in, n, strip(e, depth + 1));
    }
    return o;
  }
  if (json_is_array(v)) {
    json_t *arr = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      json_t *s = strip(e, depth + 1);
      if (json_is_object(e) && json_object_size(e) && !json_object_size(s)) json_decref(s); /* only anchors */
      else json_array_append_new(arr, s);
    }
    return arr;
  }
  return json_deep_copy(v);
}

static int has_anchor(const json_t *o, int type) {
  const char *k;
  json_t *e;
  if (!json_is_object(o)) return 0;
  json_object_foreach((json_t *)o, k, e) {
    const char *in;
    size_t n;
    int a = pol_anchor(k, &in, &n);
    if (type ? a == type : (a == POL_ANCHOR_COND || a == POL_ANCHOR_GLOBAL)) return 1;
  }
  return 0;
}

static int has_global(const json_t *v, int depth) {
  if (depth > POL_MAX_DEPTH) return 0;
  const char *k;
  json_t *e;
  size_t i;
  if (json_is_object(v)) {
    if (has_anchor(v, POL_ANCHOR_GLOBAL)) return 1;
    json_object_foreach((json_t *)v, k, e) if (has_global(e, depth + 1)) return 1;
  } else if (json_is_array(v)) {
    json_array_foreach(v, i, e) if (has_global(e, depth + 1)) return 1;
  }
  return 0;
}

/* Every global anchor of patch holds on res. */
static int global_ok(const json_t *patch, const json_t *res, int depth) {
  if (depth > POL_MAX_DEPTH) return 0;
  const char *k;
  json_t *pv;
  size_t i;
  if (json_is_object(patch)) {
    json_object_foreach((json_t *)patch, k, pv) {
      const char *in;
      size_t n;
      int a = pol_anchor(k, &in, &n);
      json_t *rv = json_is_object(res) ? json_object_getn(res, in, n) : NULL;
      if (a == POL_ANCHOR_GLOBAL) {
        if (!rv || pol_pattern_match(pv, rv, NULL, 0) != POL_M_OK) return 0;
      } else if (has_global(pv, depth + 1)) {
        if (!rv || !global_ok(pv, rv, depth + 1)) return 0;
      }
    }
    return 1;
  }
  if (json_is_array(patch)) {
    json_t *pe;
    json_array_foreach(patch, i, pe) {
      if (!has_global(pe, depth + 1)) continue;
      if (!json_is_array(res)) return 0;
      size_t j;
      json_t *re;
      int any = 0;
      json_array_foreach(res, j, re) if (global_ok(pe, re, depth + 1)) {
        any = 1;
        break;
      }
      if (!any) return 0;
    }
  }
  return 1;
}

static int smp_object(json_t *res, const json_t *patch, int depth);

static int conditions_hold(const json_t *res, const json_t *patch) {
  const char *k;
  json_t *pv;
  json_object_foreach((json_t *)patch, k, pv) {
    const char *in;
    size_t n;
    if (pol_anchor(k, &in, &n) != POL_ANCHOR_COND) continue;
    json_t *rv = json_object_getn(res, in, n);
    if (!rv || pol_pattern_match(pv, rv, NULL, 0) != POL_M_OK) return 0;
  }
  return 1;
}

static json_t *plain_get(const json_t *o, const char *key) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    const char *in;
    size_t n;
    if (pol_anchor(k, &in, &n) == POL_ANCHOR_NONE && n == strlen(key) && !memcmp(in, key, n)) return v;
  }
  return NULL;
}

static void smp_array(json_t *res, const char *k, size_t kl, const json_t *pv, int depth) {
  json_t *rv = json_object_getn(res, k, kl);
  size_t i;
  json_t *pe;
  int objects = json_array_size(pv) > 0, keyed = 0, anchored = 0;
  json_array_foreach(pv, i, pe) {
    if (!json_is_object(pe)) objects = 0;
    else if (has_anchor(pe, 0) || has_global(pe, depth + 1)) anchored = 1;
    else if (json_is_string(plain_get(pe, "name"))) keyed = 1;
  }
  if (!objects || (!keyed && !anchored) || !json_is_array(rv)) {
    json_t *s = strip(pv, depth + 1);
    if (json_array_size(s) || !anchored) json_object_setn_new(res, k, kl, s);
    else json_decref(s);
    return;
  }
  json_array_foreach(pv, i, pe) {
    if (has_anchor(pe, 0) || has_global(pe, depth + 1)) {
      size_t j;
      json_t *re;
      json_array_foreach(rv, j, re) if (json_is_object(re)) smp_object(re, pe, depth + 1);
      continue;
    }
    json_t *name = plain_get(pe, "name");
    json_t *target = NULL;
    if (json_is_string(name)) {
      size_t j;
      json_t *re;
      json_array_foreach(rv, j, re) {
        if (json_is_object(re) && json_equal(json_object_get(re, "name"), name)) {
          target = re;
          break;
        }
      }
    }
    if (target) smp_object(target, pe, depth + 1);
    else json_array_append_new(rv, strip(pe, depth + 1));
  }
}

/* 1 applied, 0 skipped by a condition. */
static int smp_object(json_t *res, const json_t *patch, int depth) {
  if (depth > POL_MAX_DEPTH) return 0;
  if (!conditions_hold(res, patch)) return 0;
  const char *k;
  json_t *pv;
  json_object_foreach((json_t *)patch, k, pv) {
    const char *in;
    size_t n;
    int a = pol_anchor(k, &in, &n);
    json_t *rv = json_object_getn(res, in, n);
    if (a == POL_ANCHOR_ADD) {
      if (!rv) json_object_setn_new(res, in, n, strip(pv, depth + 1));
      continue;
    }
    if (a != POL_ANCHOR_NONE) continue;
    if (json_is_null(pv)) {
      char *key = sk_xstrndup(in, n);
      json_object_del(res, key);
      free(key);
    } else if (json_is_object(pv)) {
      if (json_is_object(rv)) {
        smp_object(rv, pv, depth + 1);
      } else {
        json_t *fresh = json_object();
        if (smp_object(fresh, pv, depth + 1) && (json_object_size(fresh) || !json_object_size(pv)))
          json_object_setn_new(res, in, n, fresh);
        else json_decref(fresh);
      }
    } else if (json_is_array(pv)) {
      smp_array(res, in, n, pv, depth);
    } else {
      json_object_setn_new(res, in, n, json_deep_copy(pv));
    }
  }
  return 1;
}

int pol_smp_apply(json_t **doc, const json_t *patch, char *err, size_t errlen) {
  if (!json_is_object(patch)) {
    snprintf(err, errlen, "patchStrategicMerge must be a mapping");
    return SK_EINVAL;
  }
  if (!json_is_object(*doc)) {
    snprintf(err, errlen, "the resource is not an object");
    return SK_EINVAL;
  }
  if (!global_ok(patch, *doc, 0)) return 0;
  return smp_object(*doc, patch, 0);
}
