/* Variables: {{ request.object.metadata.name }} lookups and substitution. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define POL_MAX_VARS_PER_STRING 64

static int ident_char(char c) {
  return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '$' || c == '@';
}

/* Evaluates path [p, end) from cur. *out is a new reference or NULL when the
 * path leads nowhere. Returns SK_EINVAL for syntax errors. */
static int path_eval(const json_t *cur, const char *p, const char *end, int depth, json_t **out) {
  char key[256];
  *out = NULL;
  if (depth > POL_MAX_DEPTH) return SK_ELIMIT;
  while (p < end) {
    if (!cur) return 0;
    if (*p == '.') {
      p++;
      if (p == end) return SK_EINVAL;
      continue;
    }
    if (*p == '[') {
      const char *close = memchr(p, ']', (size_t)(end - p));
      if (!close) return SK_EINVAL;
      if (close == p + 1 || (close == p + 2 && p[1] == '*')) {
        /* projection: the rest of the path on every element */
        if (!json_is_array(cur)) return 0;
        json_t *arr = json_array();
        /* a further projection in the rest flattens one level, as in JMESPath */
        int flatten = memmem(close + 1, (size_t)(end - close - 1), "[]", 2) || memmem(close + 1, (size_t)(end - close - 1), "[*]", 3);
        size_t i;
        json_t *e;
        json_array_foreach((json_t *)cur, i, e) {
          json_t *r = NULL;
          int rc = path_eval(e, close + 1, end, depth + 1, &r);
          if (rc < 0) {
            json_decref(arr);
            return rc;
          }
          if (r && json_is_array(r) && flatten) json_array_extend(arr, r);
          if (r && !json_is_null(r) && !(json_is_array(r) && flatten)) json_array_append(arr, r);
          json_decref(r);
        }
        *out = arr;
        return 0;
      }
      char *ie = NULL;
      long idx = strtol(p + 1, &ie, 10);
      if (ie != close) return SK_EINVAL;
      if (!json_is_array(cur)) return 0;
      long n = (long)json_array_size(cur);
      if (idx < 0) idx += n;
      if (idx < 0 || idx >= n) return 0;
      cur = json_array_get(cur, (size_t)idx);
      p = close + 1;
      continue;
    }
    size_t kl = 0;
    if (*p == '"') {
      p++;
      while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end) p++;
        if (kl + 1 >= sizeof key) return SK_EINVAL;
        key[kl++] = *p++;
      }
      if (p >= end) return SK_EINVAL;
      p++;
    } else {
      while (p < end && ident_char(*p)) {
        if (kl + 1 >= sizeof key) return SK_EINVAL;
        key[kl++] = *p++;
      }
      if (!kl) return SK_EINVAL;
    }
    if (p < end && *p != '.' && *p != '[') return SK_EINVAL;
    cur = json_is_object(cur) ? json_object_getn(cur, key, kl) : NULL;
  }
  *out = cur ? json_incref((json_t *)cur) : NULL;
  return 0;
}

/* A literal after "||": 'text', a number, true/false/null, or another path. */
static int literal_or_path(const json_t *ctx, const char *p, const char *end, json_t **out) {
  size_t n = (size_t)(end - p);
  if (n >= 2 && p[0] == '`' && end[-1] == '`') { /* a JSON literal: `[]`, `{"a":1}`, `3` */
    *out = json_loadb(p + 1, n - 2, JSON_DECODE_ANY, NULL);
    if (!*out) *out = json_stringn(p + 1, n - 2);
    return *out ? 0 : SK_EINVAL;
  }
  if (n >= 2 && p[0] == '\'' && end[-1] == '\'') {
    *out = json_stringn(p + 1, n - 2);
    return *out ? 0 : SK_EINVAL;
  }
  if (n == 4 && !memcmp(p, "true", 4)) return *out = json_true(), 0;
  if (n == 5 && !memcmp(p, "false", 5)) return *out = json_false(), 0;
  if (n == 4 && !memcmp(p, "null", 4)) return *out = json_null(), 0;
  if (n && n < 64 && (isdigit((unsigned char)p[0]) || p[0] == '-')) {
    char tmp[64];
    memcpy(tmp, p, n);
    tmp[n] = 0;
    char *e = NULL;
    double d = strtod(tmp, &e);
    if (e && !*e) {
      int integral = isfinite(d) && d >= -9e15 && d <= 9e15 && d == (double)(json_int_t)d;
      *out = integral ? json_integer((json_int_t)d) : json_real(d);
      return 0;
    }
  }
  return path_eval(ctx, p, end, 0, out);
}

int pol_var_lookup(const json_t *ctx, const char *expr, size_t len, json_t **out) {
  const char *p = expr, *end = expr + len;
  *out = NULL;
  while (p < end && isspace((unsigned char)*p)) p++;
  while (end > p && isspace((unsigned char)end[-1])) end--;
  if (p == end) return SK_EINVAL;
  /* a || b || ...: the first that exists and is not null */
  for (;;) {
    const char *bar = NULL;
    int inq = 0;
    for (const char *c = p; c + 1 < end; c++) {
      if (*c == '"' || *c == '\'') inq = inq ? (inq == *c ? 0 : inq) : *c;
      if (!inq && c[0] == '|' && c[1] == '|') {
        bar = c;
        break;
      }
    }
    const char *e = bar ? bar : end;
    while (e > p && isspace((unsigned char)e[-1])) e--;
    json_t *v = NULL;
    int rc = literal_or_path(ctx, p, e, &v);
    if (rc < 0) return rc;
    if (v && !json_is_null(v)) {
      *out = v;
      return 0;
    }
    if (!bar) {
      if (v) { /* the last alternative may be an explicit null */
        *out = v;
        return 0;
      }
      return SK_ENOTFOUND;
    }
    json_decref(v);
    p = bar + 2;
    while (p < end && isspace((unsigned char)*p)) p++;
  }
}

static int has_vars(const json_t *v, int depth) {
  if (depth > POL_MAX_DEPTH) return 1; /* let substitution report the limit */
  const char *k;
  json_t *e;
  size_t i;
  switch (json_typeof(v)) {
  case JSON_STRING: return strstr(json_string_value(v), "{{") != NULL;
  case JSON_OBJECT:
    json_object_foreach((json_t *)v, k, e) if (has_vars(e, depth + 1)) return 1;
    return 0;
  case JSON_ARRAY:
    json_array_foreach(v, i, e) if (has_vars(e, depth + 1)) return 1;
    return 0;
  default: return 0;
  }
}

/* "variable <expr> not found" with the expression trimmed. */
static void var_error(char *err, size_t errlen, const char *e, size_t n, int rc) {
  while (n && isspace((unsigned char)*e)) e++, n--;
  while (n && isspace((unsigned char)e[n - 1])) n--;
  snprintf(err, errlen, "variable %.*s %s", (int)(n > 200 ? 200 : n), e,
           rc == SK_ENOTFOUND ? "not found" : "is not a supported expression");
}

static int subst_string(const char *s, const json_t *ctx, json_t **out, char *err, size_t errlen) {
  const char *open = strstr(s, "{{");
  if (!open) {
    *out = json_string(s);
    return *out ? 0 : SK_EINVAL;
  }
  /* exactly one variable, nothing around it: keeps the value's type */
  const char *t = s;
  while (isspace((unsigned char)*t)) t++;
  if (t == open && (open == s || open[-1] != '\\')) {
    const char *close = strstr(open + 2, "}}");
    if (close) {
      const char *after = close + 2;
      while (isspace((unsigned char)*after)) after++;
      if (!*after && !memmem(open + 2, (size_t)(close - open - 2), "{{", 2)) {
        int rc = pol_var_lookup(ctx, open + 2, (size_t)(close - open - 2), out);
        if (rc < 0) {
          var_error(err, errlen, open + 2, (size_t)(close - open - 2), rc);
          return rc;
        }
        return 0;
      }
    }
  }
  sk_buf_t b;
  sk_buf_init(&b);
  int rc = 0, count = 0;
  const char *p = s;
  while ((open = strstr(p, "{{"))) {
    if (open > p && open[-1] == '\\') { /* escaped: kept literally, backslash dropped */
      sk_buf_append(&b, p, (size_t)(open - p - 1));
      sk_buf_append(&b, "{{", 2);
      p = open + 2;
      continue;
    }
    const char *close = strstr(open + 2, "}}");
    if (!close) break;
    if (++count > POL_MAX_VARS_PER_STRING) {
      snprintf(err, errlen, "more than %d variables in one string", POL_MAX_VARS_PER_STRING);
      rc = SK_ELIMIT;
      goto out;
    }
    sk_buf_append(&b, p, (size_t)(open - p));
    json_t *v = NULL;
    rc = pol_var_lookup(ctx, open + 2, (size_t)(close - open - 2), &v);
    if (rc < 0) {
      var_error(err, errlen, open + 2, (size_t)(close - open - 2), rc);
      goto out;
    }
    if (json_is_string(v)) sk_buf_append(&b, json_string_value(v), json_string_length(v));
    else if (!json_is_null(v)) sk_json_dump_buf(v, &b);
    json_decref(v);
    if (b.len > POL_MAX_VAR_OUT) {
      snprintf(err, errlen, "substituted string longer than %d bytes", POL_MAX_VAR_OUT);
      rc = SK_ELIMIT;
      goto out;
    }
    p = close + 2;
  }
  sk_buf_puts(&b, p);
  *out = json_stringn(b.data ? b.data : "", b.len);
  if (!*out) {
    snprintf(err, errlen, "substituted string is not valid UTF-8");
    rc = SK_EINVAL;
  }
out:
  sk_buf_done(&b);
  return rc;
}

static int subst(const json_t *v, const json_t *ctx, int depth, json_t **out, char *err, size_t errlen) {
  const char *k;
  json_t *e;
  size_t i;
  int rc;
  *out = NULL;
  if (depth > POL_MAX_DEPTH) {
    snprintf(err, errlen, "nesting deeper than %d", POL_MAX_DEPTH);
    return SK_ELIMIT;
  }
  switch (json_typeof(v)) {
  case JSON_STRING: return subst_string(json_string_value(v), ctx, out, err, errlen);
  case JSON_OBJECT: {
    json_t *o = json_object();
    json_object_foreach((json_t *)v, k, e) {
      json_t *r;
      if ((rc = subst(e, ctx, depth + 1, &r, err, errlen)) < 0) {
        json_decref(o);
        return rc;
      }
      json_object_set_new(o, k, r);
    }
    *out = o;
    return 0;
  }
  case JSON_ARRAY: {
    json_t *a = json_array();
    json_array_foreach(v, i, e) {
      json_t *r;
      if ((rc = subst(e, ctx, depth + 1, &r, err, errlen)) < 0) {
        json_decref(a);
        return rc;
      }
      json_array_append_new(a, r);
    }
    *out = a;
    return 0;
  }
  default: *out = json_incref((json_t *)v); return 0;
  }
}

int pol_substitute(const json_t *v, const json_t *ctx, json_t **out, char *err, size_t errlen) {
  if (!v) {
    *out = NULL;
    return 0;
  }
  if (!has_vars(v, 0)) {
    *out = json_incref((json_t *)v);
    return 0;
  }
  return subst(v, ctx, 0, out, err, errlen);
}
