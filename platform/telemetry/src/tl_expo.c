/* skiff-telemetry: the Prometheus text exposition format (0.0.4) parser used
 * by the scraper. Bounded: line length, labels per sample, samples per
 * scrape. Comments (# HELP / # TYPE) are skipped; the type does not change
 * how samples are stored. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "tl_int.h"

static int name_start(int c) { return isalpha(c) || c == '_' || c == ':'; }
static int name_char(int c) { return isalnum(c) || c == '_' || c == ':'; }

static void skip_ws(const char **p, const char *end) {
  while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
}

/* One sample line [p, end). */
static int parse_line(sk_pool_t *pool, const char *p, const char *end, const tl_expo_opts_t *o,
                      tl_samples_t *out, const char **why) {
  tl_label_t l[TL_TSDB_MAX_LABELS];
  size_t n = 0;
  const char *s = p;
  if (p >= end || !name_start((unsigned char)*p)) return *why = "metric name expected", SK_EPARSE;
  while (p < end && name_char((unsigned char)*p)) p++;
  l[n++] = (tl_label_t){"__name__", sk_pool_strndup(pool, s, (size_t)(p - s))};
  skip_ws(&p, end);
  if (p < end && *p == '{') {
    p++;
    for (;;) {
      skip_ws(&p, end);
      if (p < end && *p == '}') {
        p++;
        break;
      }
      if (p >= end || !(isalpha((unsigned char)*p) || *p == '_')) return *why = "label name expected", SK_EPARSE;
      const char *ls = p;
      while (p < end && (isalnum((unsigned char)*p) || *p == '_')) p++;
      const char *lname = sk_pool_strndup(pool, ls, (size_t)(p - ls));
      skip_ws(&p, end);
      if (p >= end || *p != '=') return *why = "'=' expected after label name", SK_EPARSE;
      p++;
      skip_ws(&p, end);
      if (p >= end || *p != '"') return *why = "'\"' expected to open label value", SK_EPARSE;
      p++;
      char *v = sk_pool_alloc(pool, (size_t)(end - p) + 1);
      size_t vn = 0;
      for (;;) {
        if (p >= end) return *why = "unterminated label value", SK_EPARSE;
        if (*p == '"') {
          p++;
          break;
        }
        if (*p == '\\') {
          if (p + 1 >= end) return *why = "unterminated escape", SK_EPARSE;
          char c = p[1];
          v[vn++] = c == 'n' ? '\n' : c;
          p += 2;
          continue;
        }
        v[vn++] = *p++;
      }
      v[vn] = 0;
      if (n >= TL_TSDB_MAX_LABELS) return *why = "too many labels", SK_EPARSE;
      l[n++] = (tl_label_t){lname, v};
      skip_ws(&p, end);
      if (p < end && *p == ',') {
        p++;
        continue;
      }
      if (p < end && *p == '}') {
        p++;
        break;
      }
      return *why = "',' or '}' expected in label set", SK_EPARSE;
    }
  }
  skip_ws(&p, end);
  if (p >= end) return *why = "value expected", SK_EPARSE;
  char num[64];
  const char *vs = p;
  while (p < end && *p != ' ' && *p != '\t') p++;
  size_t vl = (size_t)(p - vs);
  if (vl == 0 || vl >= sizeof num) return *why = "bad value", SK_EPARSE;
  memcpy(num, vs, vl);
  num[vl] = 0;
  double v;
  if (!strcmp(num, "+Inf") || !strcmp(num, "Inf")) v = INFINITY;
  else if (!strcmp(num, "-Inf")) v = -INFINITY;
  else if (!strcmp(num, "NaN")) v = NAN;
  else {
    char *e = NULL;
    v = strtod(num, &e);
    if (*e || isalpha((unsigned char)num[vl - 1])) return *why = "bad value", SK_EPARSE;
  }
  int64_t ts = o->default_ts_ms;
  skip_ws(&p, end);
  if (p < end) {
    const char *ts_s = p;
    while (p < end && *p != ' ' && *p != '\t') p++;
    size_t tl = (size_t)(p - ts_s);
    if (tl >= sizeof num) return *why = "bad timestamp", SK_EPARSE;
    memcpy(num, ts_s, tl);
    num[tl] = 0;
    char *e = NULL;
    errno = 0;
    long long t = strtoll(num, &e, 10);
    if (*e || errno || !tl) return *why = "bad timestamp", SK_EPARSE;
    ts = t;
    skip_ws(&p, end);
    if (p < end) return *why = "unexpected text after timestamp", SK_EPARSE;
  }
  size_t max = o->max_samples ? o->max_samples : 100000;
  if (out->n >= max) return *why = "sample limit exceeded", SK_ELIMIT;
  tl_samples_add(pool, out, l, n, ts, v);
  return 0;
}

int tl_expo_parse(sk_pool_t *pool, const char *text, size_t len, const tl_expo_opts_t *o, tl_samples_t *out,
                  char *err, size_t errlen) {
  tl_expo_opts_t def = {0};
  if (!o) o = &def;
  size_t max_line = o->max_line ? o->max_line : 65536;
  const char *p = text, *end = text + len;
  size_t lineno = 0;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    lineno++;
    if ((size_t)(le - p) > max_line) {
      snprintf(err, errlen, "line %zu: longer than %zu bytes", lineno, max_line);
      return SK_ELIMIT;
    }
    const char *e = le;
    if (e > p && e[-1] == '\r') e--;
    const char *q = p;
    skip_ws(&q, e);
    if (q < e && *q != '#') {
      const char *why = "";
      int rc = parse_line(pool, q, e, o, out, &why);
      if (rc < 0) {
        snprintf(err, errlen, "line %zu: %s", lineno, why);
        return rc;
      }
    }
    p = nl ? nl + 1 : end;
  }
  return 0;
}
