/* Pattern matching for validate.pattern: Kyverno's anchors, wildcards,
 * numeric comparisons with Kubernetes quantities, '|' and '&'. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"

const char *pol_status_name(pol_status_t s) {
  switch (s) {
  case POL_PASS: return "pass";
  case POL_FAIL: return "fail";
  case POL_WARN: return "warn";
  case POL_ERROR: return "error";
  case POL_SKIP: return "skip";
  }
  return "?";
}

int pol_wildcard(const char *p, const char *s) {
  const char *star = NULL, *resume = NULL;
  while (*s) {
    if (*p == '?' || (*p && *p == *s)) {
      p++;
      s++;
    } else if (*p == '*') {
      star = p++;
      resume = s;
    } else if (star) {
      p = star + 1;
      s = ++resume;
    } else {
      return 0;
    }
  }
  while (*p == '*') p++;
  return *p == 0;
}

int pol_quantity(const char *s, double *out) {
  if (!s) return -1;
  while (*s == ' ') s++;
  if (!*s) return -1;
  char *end = NULL;
  double v = strtod(s, &end);
  if (end == s || !isfinite(v)) return -1;
  /* strtod accepts "inf", "nan", hex: only plain decimals here */
  for (const char *c = s; c < end; c++)
    if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || *c == '+' || *c == 'e' || *c == 'E'))
      return -1;
  static const struct {
    const char *sfx;
    double mul;
  } units[] = {{"Ki", 1024.0},
               {"Mi", 1048576.0},
               {"Gi", 1073741824.0},
               {"Ti", 1099511627776.0},
               {"Pi", 1125899906842624.0},
               {"Ei", 1152921504606846976.0},
               {"n", 1e-9},
               {"u", 1e-6},
               {"m", 1e-3},
               {"k", 1e3},
               {"M", 1e6},
               {"G", 1e9},
               {"T", 1e12},
               {"P", 1e15},
               {"E", 1e18},
               {"", 1.0}};
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (!strcmp(end, units[i].sfx)) {
      *out = v * units[i].mul;
      return 0;
    }
  }
  return -1;
}

/* A scalar value as text for wildcard comparison; NULL for containers. */
static const char *scalar_text(const json_t *v, char *buf, size_t len) {
  switch (json_typeof(v)) {
  case JSON_STRING: return json_string_value(v);
  case JSON_INTEGER: snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return buf;
  case JSON_REAL: snprintf(buf, len, "%.17g", json_real_value(v)); return buf;
  case JSON_TRUE: return "true";
  case JSON_FALSE: return "false";
  case JSON_NULL: return "";
  default: return NULL;
  }
}

static int value_number(const json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 0;
  }
  if (json_is_string(v)) return pol_quantity(json_string_value(v), out);
  return -1;
}

static int is_empty(const json_t *v) {
  if (!v || json_is_null(v)) return 1;
  if (json_is_string(v)) return json_string_length(v) == 0;
  if (json_is_integer(v)) return json_integer_value(v) == 0;
  if (json_is_real(v)) return json_real_value(v) == 0;
  if (json_is_false(v)) return 1;
  if (json_is_object(v)) return json_object_size(v) == 0;
  if (json_is_array(v)) return json_array_size(v) == 0;
  return 0;
}

/* One operand of a string pattern: "[op]text" with op in >= <= > < !. */
static int atom_match(const char *a, size_t n, const json_t *value) {
  char tmp[512], buf[64];
  while (n && a[0] == ' ') a++, n--;
  while (n && a[n - 1] == ' ') n--;
  if (n >= sizeof tmp) return 0;
  int op = 0; /* 1 >=, 2 <=, 3 >, 4 <, 5 ! */
  if (n >= 2 && a[0] == '>' && a[1] == '=') op = 1, a += 2, n -= 2;
  else if (n >= 2 && a[0] == '<' && a[1] == '=') op = 2, a += 2, n -= 2;
  else if (n >= 1 && a[0] == '>') op = 3, a++, n--;
  else if (n >= 1 && a[0] == '<') op = 4, a++, n--;
  else if (n >= 1 && a[0] == '!') op = 5, a++, n--;
  memcpy(tmp, a, n);
  tmp[n] = 0;
  if (op >= 1 && op <= 4) {
    double pv, rv;
    if (pol_quantity(tmp, &pv) < 0 || value_number(value, &rv) < 0) return 0;
    switch (op) {
    case 1: return rv >= pv;
    case 2: return rv <= pv;
    case 3: return rv > pv;
    default: return rv < pv;
    }
  }
  const char *s = scalar_text(value, buf, sizeof buf);
  if (!s) return 0;
  int eq;
  double pv, rv;
  if (!strpbrk(tmp, "*?") && pol_quantity(tmp, &pv) == 0 && value_number(value, &rv) == 0)
    eq = fabs(pv - rv) <= 1e-9 * fmax(1.0, fabs(pv));
  else
    eq = pol_wildcard(tmp, s);
  return op == 5 ? !eq : eq;
}

static int string_pattern(const char *p, const json_t *value) {
  /* alternatives '|', each a conjunction of '&' */
  const char *alt = p;
  for (;;) {
    const char *bar = strchr(alt, '|');
    size_t alen = bar ? (size_t)(bar - alt) : strlen(alt);
    int all = 1;
    const char *c = alt, *aend = alt + alen;
    while (c <= aend) {
      const char *amp = memchr(c, '&', (size_t)(aend - c));
      size_t clen = amp ? (size_t)(amp - c) : (size_t)(aend - c);
      if (!atom_match(c, clen, value)) {
        all = 0;
        break;
      }
      if (!amp) break;
      c = amp + 1;
    }
    if (all) return 1;
    if (!bar) return 0;
    alt = bar + 1;
  }
}

int pol_scalar_match(const json_t *pattern, const json_t *value) {
  if (!value) value = json_null();
  switch (json_typeof(pattern)) {
  case JSON_NULL: return is_empty(value);
  case JSON_TRUE:
  case JSON_FALSE:
    if (json_is_boolean(value)) return json_boolean_value(value) == json_boolean_value(pattern);
    if (json_is_string(value)) return !strcmp(json_string_value(value), json_is_true(pattern) ? "true" : "false");
    return 0;
  case JSON_INTEGER:
  case JSON_REAL: {
    double rv;
    if (value_number(value, &rv) < 0) return 0;
    return rv == json_number_value(pattern);
  }
  case JSON_STRING:
    if (json_is_object(value) || json_is_array(value)) return 0;
    return string_pattern(json_string_value(pattern), value);
  default: return 0;
  }
}

/* ---- anchors ---- */

int pol_anchor(const char *key, const char **inner, size_t *len) {
  size_t n = strlen(key);
  int type = POL_ANCHOR_NONE;
  size_t skip = 0;
  if (n >= 3 && key[n - 1] == ')') {
    if (key[0] == '(') type = POL_ANCHOR_COND, skip = 1;
    else if (key[1] == '(') {
      switch (key[0]) {
      case '=': type = POL_ANCHOR_EQUAL; break;
      case '^': type = POL_ANCHOR_EXIST; break;
      case 'X': type = POL_ANCHOR_NEG; break;
      case '<': type = POL_ANCHOR_GLOBAL; break;
      case '+': type = POL_ANCHOR_ADD; break;
      default: break;
      }
      if (type) skip = 2;
    }
  }
  if (!type) {
    *inner = key;
    *len = n;
    return POL_ANCHOR_NONE;
  }
  *inner = key + skip;
  *len = n - skip - 1;
  return type;
}

typedef struct pm {
  char *path;
  size_t cap;
  int depth;
  int failed_path_set;
} pm_t;

static size_t path_push(pm_t *m, size_t at, const char *seg, size_t n) {
  if (!m->path || at + n + 2 >= m->cap) return at;
  memcpy(m->path + at, seg, n);
  m->path[at + n] = '/';
  m->path[at + n + 1] = 0;
  return at + n + 1;
}

static pol_match_rc_t pm_match(pm_t *m, size_t at, const json_t *p, const json_t *v);

static pol_match_rc_t fail_at(pm_t *m, size_t at) {
  (void)at;
  m->failed_path_set = 1;
  return POL_M_FAIL;
}

static pol_match_rc_t pm_object(pm_t *m, size_t at, const json_t *p, const json_t *v) {
  if (!json_is_object(v)) return fail_at(m, at);
  const char *k;
  json_t *pv;
  /* conditions first: a conditional anchor that does not hold skips this
   * object, a global one skips the whole rule */
  json_object_foreach((json_t *)p, k, pv) {
    const char *in;
    size_t n;
    int a = pol_anchor(k, &in, &n);
    if (a != POL_ANCHOR_COND && a != POL_ANCHOR_GLOBAL) continue;
    json_t *rv = json_object_getn(v, in, n);
    pol_match_rc_t r = rv ? pm_match(m, path_push(m, at, in, n), pv, rv) : POL_M_FAIL;
    if (r == POL_M_GSKIP) return r;
    if (r != POL_M_OK) {
      if (m->path) m->path[at] = 0;
      return a == POL_ANCHOR_GLOBAL ? POL_M_GSKIP : POL_M_SKIP;
    }
  }
  int plain = 0, plain_skipped = 0;
  json_object_foreach((json_t *)p, k, pv) {
    const char *in;
    size_t n;
    int a = pol_anchor(k, &in, &n);
    if (a == POL_ANCHOR_COND || a == POL_ANCHOR_GLOBAL || a == POL_ANCHOR_ADD) continue;
    json_t *rv = json_object_getn(v, in, n);
    size_t sub = path_push(m, at, in, n);
    pol_match_rc_t r;
    switch (a) {
    case POL_ANCHOR_NEG:
      if (rv) return fail_at(m, sub);
      break;
    case POL_ANCHOR_EQUAL:
      if (!rv) break;
      r = pm_match(m, sub, pv, rv);
      if (r == POL_M_FAIL || r == POL_M_GSKIP) return r;
      break;
    case POL_ANCHOR_EXIST: {
      if (!json_is_array(rv)) return fail_at(m, sub);
      const json_t *ep = json_is_array(pv) ? json_array_get(pv, 0) : pv;
      if (!ep) break;
      size_t i;
      json_t *e;
      int found = 0;
      json_array_foreach(rv, i, e) {
        char save = m->path ? m->path[sub] : 0;
        r = pm_match(m, sub, ep, e);
        if (m->path) m->path[sub] = save;
        if (r == POL_M_GSKIP) return r;
        if (r == POL_M_OK) {
          found = 1;
          break;
        }
      }
      if (!found) return fail_at(m, sub);
      break;
    }
    default:
      plain++;
      if (!rv) {
        if (json_is_null(pv)) break;
        return fail_at(m, sub);
      }
      r = pm_match(m, sub, pv, rv);
      if (r == POL_M_FAIL || r == POL_M_GSKIP) return r;
      if (r == POL_M_SKIP) plain_skipped++;
      break;
    }
  }
  if (m->path) m->path[at] = 0;
  return plain && plain_skipped == plain ? POL_M_SKIP : POL_M_OK;
}

static pol_match_rc_t pm_array(pm_t *m, size_t at, const json_t *p, const json_t *v) {
  if (!json_is_array(v)) return fail_at(m, at);
  size_t np = json_array_size(p), nv = json_array_size(v);
  if (np == 0 || nv == 0) return POL_M_OK;
  const json_t *p0 = json_array_get(p, 0);
  if (json_is_object(p0) || json_is_array(p0)) {
    size_t skipped = 0, i;
    json_t *e;
    json_array_foreach(v, i, e) {
      char idx[24];
      int il = snprintf(idx, sizeof idx, "%zu", i);
      size_t sub = path_push(m, at, idx, (size_t)il);
      pol_match_rc_t r = pm_match(m, sub, p0, e);
      if (r == POL_M_FAIL || r == POL_M_GSKIP) return r;
      if (r == POL_M_SKIP) skipped++;
      if (m->path) m->path[at] = 0;
    }
    return skipped == nv ? POL_M_SKIP : POL_M_OK;
  }
  if (np > nv) return fail_at(m, at);
  for (size_t i = 0; i < np; i++) {
    char idx[24];
    int il = snprintf(idx, sizeof idx, "%zu", i);
    size_t sub = path_push(m, at, idx, (size_t)il);
    pol_match_rc_t r = pm_match(m, sub, json_array_get(p, i), json_array_get(v, i));
    if (r != POL_M_OK) return r;
    if (m->path) m->path[at] = 0;
  }
  return POL_M_OK;
}

static pol_match_rc_t pm_match(pm_t *m, size_t at, const json_t *p, const json_t *v) {
  if (m->depth >= POL_MAX_DEPTH) return fail_at(m, at);
  m->depth++;
  pol_match_rc_t r;
  if (json_is_object(p)) r = pm_object(m, at, p, v);
  else if (json_is_array(p)) r = pm_array(m, at, p, v);
  else r = pol_scalar_match(p, v) ? POL_M_OK : fail_at(m, at);
  m->depth--;
  return r;
}

pol_match_rc_t pol_pattern_match(const json_t *pattern, const json_t *value, char *path, size_t pathlen) {
  pm_t m = {.path = pathlen >= 2 ? path : NULL, .cap = pathlen};
  if (m.path) {
    m.path[0] = '/';
    m.path[1] = 0;
  }
  if (!pattern) return POL_M_OK;
  if (!value) value = json_null();
  return pm_match(&m, m.path ? 1 : 0, pattern, value);
}
