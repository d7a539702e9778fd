/* tl_query_api.c - the Prometheus HTTP API v1 (query side) over tl_tsdb. */
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_promql_int.h"
#include "tl_tsdb_int.h"

#define MAX_POINTS 11000
#define MAX_PARAMS 256

typedef struct param {
  const char *k, *v;
} param_t;

typedef struct params {
  param_t p[MAX_PARAMS];
  size_t n;
} params_t;

static int hexv(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static char *url_decode(sk_pool_t *pool, const char *s, size_t n) {
  char *o = sk_pool_alloc(pool, n + 1);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '+') {
      o[k++] = ' ';
    } else if (s[i] == '%' && i + 2 < n && hexv(s[i + 1]) >= 0 && hexv(s[i + 2]) >= 0) {
      o[k++] = (char)(hexv(s[i + 1]) * 16 + hexv(s[i + 2]));
      i += 2;
    } else {
      o[k++] = s[i];
    }
  }
  o[k] = 0;
  return o;
}

static void parse_form(params_t *ps, sk_pool_t *pool, const char *s, size_t len) {
  size_t i = 0;
  while (i < len && ps->n < MAX_PARAMS) {
    size_t j = i;
    while (j < len && s[j] != '&') j++;
    size_t eq = i;
    while (eq < j && s[eq] != '=') eq++;
    if (j > i) {
      ps->p[ps->n].k = url_decode(pool, s + i, eq - i);
      ps->p[ps->n].v = eq < j ? url_decode(pool, s + eq + 1, j - eq - 1) : "";
      ps->n++;
    }
    i = j + 1;
  }
}

static const char *pget(const params_t *ps, const char *k) {
  for (size_t i = 0; i < ps->n; i++)
    if (!strcmp(ps->p[i].k, k)) return ps->p[i].v;
  return NULL;
}

/* ---- time and durations ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Unix seconds (float) or RFC 3339. */
static int parse_time(const char *s, int64_t *ms) {
  if (!s || !*s) return SK_EINVAL;
  char *end;
  double f = strtod(s, &end);
  if (*end == 0 && end != s && isfinite(f)) {
    if (fabs(f) > 9.2e15) return SK_ERANGE;
    *ms = (int64_t)llround(f * 1000.0);
    return 0;
  }
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return SK_EINVAL;
  int64_t frac = 0;
  if (*p == '.') {
    p++;
    int digits = 0;
    while (isdigit((unsigned char)*p)) {
      if (digits < 3) frac = frac * 10 + (*p - '0');
      digits++;
      p++;
    }
    if (!digits) return SK_EINVAL;
    for (; digits < 3; digits++) frac *= 10;
  }
  int64_t off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1;
    if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != ':' ||
        !isdigit((unsigned char)p[4]) || !isdigit((unsigned char)p[5]))
      return SK_EINVAL;
    off = sign * (((p[1] - '0') * 10 + (p[2] - '0')) * 3600 + ((p[4] - '0') * 10 + (p[5] - '0')) * 60);
    p += 6;
  } else {
    return SK_EINVAL;
  }
  if (*p) return SK_EINVAL;
  time_t t = timegm(&tm);
  *ms = ((int64_t)t - off) * 1000 + frac;
  return 0;
}

/* Float seconds or a PromQL duration. */
static int parse_dur(const char *s, int64_t *ms) {
  if (!s || !*s) return SK_EINVAL;
  char *end;
  double f = strtod(s, &end);
  if (*end == 0 && end != s) {
    if (!isfinite(f) || fabs(f) > 9.2e15) return SK_ERANGE;
    *ms = (int64_t)llround(f * 1000.0);
    return 0;
  }
  return tl_promql_parse_duration(s, strlen(s), ms);
}

/* ---- output ---- */

/* Decimal digits of v (|v| < 2^63) into the end of tmp[24]; returns the
 * start. Query answers are mostly integers (timestamps, counters), and
 * printf was half the cost of a raw-series range query. */
static char *fmt_i64(char tmp[24], int64_t v) {
  char *p = tmp + 24;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  return p;
}

static void put_i64(sk_buf_t *b, int64_t v) {
  char tmp[24], *p = fmt_i64(tmp, v);
  sk_buf_append(b, p, (size_t)(tmp + 24 - p));
}

/* Seconds, as Prometheus writes them: whole seconds bare, otherwise with
 * 3 decimals in vectors and matrices (12, 12.500, -0.250) and the shortest
 * decimals in a scalar result (12.5; its own encoder there). */
static void put_time(sk_buf_t *b, int64_t ms, int shortest) {
  uint64_t u = (uint64_t)ms;
  if (ms < 0) {
    sk_buf_append(b, "-", 1);
    u = (uint64_t)0 - u;
  }
  uint64_t frac = u % 1000;
  put_i64(b, (int64_t)(u / 1000));
  if (frac == 0) return;
  char f[4] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10), (char)('0' + frac % 10)};
  size_t n = 4;
  while (shortest && f[n - 1] == '0') n--;
  sk_buf_append(b, f, n);
}

/* A sample value as Prometheus's JSON writes it: the shortest digits that
 * read back as the same double, in plain notation for 1e-6 <= |v| < 1e21
 * (0.000025, 100000000000000000000) and as d.ddde+XX outside (1e-07,
 * 1.5e+300), or always plain in a scalar result (plain); NaN, +Inf, -Inf,
 * and -0 keeps its sign. Integers below 2^53 skip printf (most answers are
 * counters and timestamps). */
static void put_value(sk_buf_t *b, double v, int plain) {
  if (isnan(v)) {
    sk_buf_append(b, "NaN", 3);
    return;
  }
  if (isinf(v)) {
    sk_buf_append(b, v > 0 ? "+Inf" : "-Inf", 4);
    return;
  }
  if (v == 0) {
    sk_buf_puts(b, signbit(v) ? "-0" : "0");
    return;
  }
  if (fabs(v) < 9007199254740992.0 && v == trunc(v)) {
    put_i64(b, (int64_t)v);
    return;
  }
  /* Shortest round trip: if 15 significant digits read back, no shorter
   * form differs from them but by trailing zeros (any decimal of at most 15
   * digits survives the trip through a double), so 15, 16, 17 suffice;
   * subnormals hold fewer digits and take the long way. */
  char e[40];
  for (int prec = fabs(v) < DBL_MIN ? 0 : 14; prec <= 16; prec++) {
    snprintf(e, sizeof e, "%.*e", prec, v);
    if (strtod(e, NULL) == v) break;
  }
  const char *p = e;
  int neg = *p == '-';
  if (neg) p++;
  char dig[20];
  size_t nd = 0;
  for (; *p && *p != 'e'; p++)
    if (*p != '.') dig[nd++] = *p;
  int x = atoi(p + 1);
  while (nd > 1 && dig[nd - 1] == '0') nd--;
  if (neg) sk_buf_append(b, "-", 1);
  double a = fabs(v);
  if (plain || (a >= 1e-6 && a < 1e21)) {
    if (x < 0) {
      sk_buf_append(b, "0.", 2);
      for (int i = -1; i > x; i--) sk_buf_append(b, "0", 1);
      sk_buf_append(b, dig, nd);
    } else if ((size_t)x + 1 >= nd) {
      sk_buf_append(b, dig, nd);
      for (size_t i = nd; i < (size_t)x + 1; i++) sk_buf_append(b, "0", 1);
    } else {
      sk_buf_append(b, dig, (size_t)x + 1);
      sk_buf_append(b, ".", 1);
      sk_buf_append(b, dig + x + 1, nd - (size_t)x - 1);
    }
    return;
  }
  sk_buf_append(b, dig, 1);
  if (nd > 1) {
    sk_buf_append(b, ".", 1);
    sk_buf_append(b, dig + 1, nd - 1);
  }
  char ex[8];
  int n = snprintf(ex, sizeof ex, "e%c%02d", x < 0 ? '-' : '+', x < 0 ? -x : x);
  sk_buf_append(b, ex, (size_t)n);
}

static void put_str(sk_buf_t *b, const char *s) {
  sk_buf_puts(b, "\"");
  sk_json_escape(b, s, strlen(s));
  sk_buf_puts(b, "\"");
}

static void put_point(sk_buf_t *b, int64_t t, double v, int scalar) {
  sk_buf_append(b, "[", 1);
  put_time(b, t, scalar);
  sk_buf_append(b, ",\"", 2);
  put_value(b, v, scalar);
  sk_buf_append(b, "\"]", 2);
}

static void put_metric(sk_buf_t *b, const tl_label_t *l, size_t n) {
  sk_buf_puts(b, "{");
  for (size_t i = 0; i < n; i++) {
    if (i) sk_buf_puts(b, ",");
    put_str(b, l[i].name);
    sk_buf_puts(b, ":");
    put_str(b, l[i].value);
  }
  sk_buf_puts(b, "}");
}

static void respond_json(sk_http_req_t *req, int status, sk_buf_t *b) {
  sk_http_header_t h[] = {{"content-type", "application/json"}};
  sk_http_respond(req, status, h, 1, b->data ? b->data : "", b->len);
}

static void respond_error(sk_http_req_t *req, const char *type, const char *msg) {
  int status = !strcmp(type, "bad_data")    ? 400
               : !strcmp(type, "execution") ? 422
               : !strcmp(type, "timeout")   ? 503
               : !strcmp(type, "not_found") ? 404
                                            : 500;
  sk_buf_t b;
  sk_buf_init(&b);
  sk_buf_puts(&b, "{\"status\":\"error\",\"errorType\":");
  put_str(&b, type);
  sk_buf_puts(&b, ",\"error\":");
  put_str(&b, msg);
  sk_buf_puts(&b, "}");
  respond_json(req, status, &b);
  sk_buf_done(&b);
}

static void begin_success(sk_buf_t *b) { sk_buf_puts(b, "{\"status\":\"success\",\"data\":"); }

static void put_result(sk_buf_t *b, const tl_promql_result_t *r) {
  switch (r->type) {
  case TL_PQ_SCALAR:
    sk_buf_puts(b, "{\"resultType\":\"scalar\",\"result\":");
    put_point(b, r->t, r->scalar, 1);
    break;
  case TL_PQ_STRING:
    sk_buf_puts(b, "{\"resultType\":\"string\",\"result\":[");
    put_time(b, r->t, 1);
    sk_buf_puts(b, ",");
    put_str(b, r->str);
    sk_buf_puts(b, "]");
    break;
  case TL_PQ_VECTOR:
    sk_buf_puts(b, "{\"resultType\":\"vector\",\"result\":[");
    for (size_t i = 0; i < r->nseries; i++) {
      if (i) sk_buf_puts(b, ",");
      sk_buf_puts(b, "{\"metric\":");
      put_metric(b, r->series[i].labels, r->series[i].nlabels);
      sk_buf_puts(b, ",\"value\":");
      put_point(b, r->series[i].ts[0], r->series[i].v[0], 0);
      sk_buf_puts(b, "}");
    }
    sk_buf_puts(b, "]");
    break;
  case TL_PQ_MATRIX:
    sk_buf_puts(b, "{\"resultType\":\"matrix\",\"result\":[");
    for (size_t i = 0; i < r->nseries; i++) {
      if (i) sk_buf_puts(b, ",");
      sk_buf_puts(b, "{\"metric\":");
      put_metric(b, r->series[i].labels, r->series[i].nlabels);
      sk_buf_puts(b, ",\"values\":[");
      for (size_t j = 0; j < r->series[i].n; j++) {
        if (j) sk_buf_append(b, ",", 1);
        put_point(b, r->series[i].ts[j], r->series[i].v[j], 0);
      }
      sk_buf_puts(b, "]}");
    }
    sk_buf_puts(b, "]");
    break;
  }
  sk_buf_puts(b, "}");
}

/* ---- handlers ---- */

/* The query parsed, so whatever fails now is an evaluation error
 * ("execution", 422, as in Prometheus: duplicate label sets, many-to-many
 * matching, bad function arguments, limits), or a timeout. */
static void eval_error(sk_http_req_t *req, int rc, const char *msg) {
  if (rc == SK_ETIMEDOUT)
    respond_error(req, "timeout", msg);
  else
    respond_error(req, "execution", msg);
}

static void query_opts(const tl_query_api_opts_t *o, const params_t *ps, tl_promql_opts_t *qo, int64_t *timeout) {
  memset(qo, 0, sizeof *qo);
  qo->lookback_ms = o->lookback_ms;
  qo->max_series = o->max_series;
  qo->max_samples = o->max_samples;
  *timeout = o->default_timeout_ms ? (int64_t)o->default_timeout_ms : 120000;
  int64_t t;
  const char *ts = pget(ps, "timeout");
  if (ts && parse_dur(ts, &t) == 0 && t > 0 && t < *timeout) *timeout = t;
  qo->deadline_ns = uv_hrtime() + (uint64_t)*timeout * 1000000ULL;
}

static void h_query(tl_tsdb_t *db, const tl_query_api_opts_t *o, sk_http_req_t *req, const params_t *ps, int range) {
  char err[512], msg[600];
  const char *q = pget(ps, "query");
  const char *ts = NULL;
  int64_t t = 0, start = 0, end = 0, step = 0, timeout;
  if (!range) {
    ts = pget(ps, "time");
    if (ts && *ts) {
      if (parse_time(ts, &t) < 0) {
        snprintf(msg, sizeof msg, "invalid parameter \"time\": cannot parse \"%.200s\" to a valid timestamp", ts);
        respond_error(req, "bad_data", msg);
        return;
      }
    } else {
      t = now_ms();
    }
  } else {
    static const char *const names[] = {"start", "end"};
    int64_t *dst[] = {&start, &end};
    for (int i = 0; i < 2; i++) {
      const char *v = pget(ps, names[i]);
      if (!v || parse_time(v, dst[i]) < 0) {
        snprintf(msg, sizeof msg, "invalid parameter \"%s\": cannot parse \"%.200s\" to a valid timestamp", names[i],
                 v ? v : "");
        respond_error(req, "bad_data", msg);
        return;
      }
    }
    if (end < start) {
      respond_error(req, "bad_data", "invalid parameter \"end\": end timestamp must not be before start time");
      return;
    }
    const char *sv = pget(ps, "step");
    if (!sv || parse_dur(sv, &step) < 0) {
      snprintf(msg, sizeof msg, "invalid parameter \"step\": cannot parse \"%.200s\" to a valid duration", sv ? sv : "");
      respond_error(req, "bad_data", msg);
      return;
    }
    if (step <= 0) {
      respond_error(req, "bad_data",
                    "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. "
                    "Try a positive integer");
      return;
    }
    if ((end - start) / step > MAX_POINTS) {
      respond_error(req, "bad_data",
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query "
                    "resolution (?step=XX)");
      return;
    }
  }
  tl_promql_expr_t *e = NULL;
  if (tl_promql_parse(q ? q : "", q ? strlen(q) : 0, &e, err, sizeof err) < 0) {
    snprintf(msg, sizeof msg, "invalid parameter \"query\": %s", err);
    respond_error(req, "bad_data", msg);
    return;
  }
  tl_promql_opts_t qo;
  query_opts(o, ps, &qo, &timeout);
  sk_pool_t *pool = sk_pool_new();
  tl_promql_result_t r;
  int rc = range ? tl_promql_eval_range(db, pool, e, start, end, step, &qo, &r, err, sizeof err)
                 : tl_promql_eval_instant(db, pool, e, t, &qo, &r, err, sizeof err);
  if (rc < 0) {
    eval_error(req, rc, err);
  } else {
    sk_buf_t b;
    sk_buf_init(&b);
    begin_success(&b);
    put_result(&b, &r);
    sk_buf_puts(&b, "}");
    respond_json(req, 200, &b);
    sk_buf_done(&b);
  }
  sk_pool_free(pool);
  tl_promql_free(e);
}

/* Parses every match[] into selectors; returns count or -1 after answering. */
static int parse_matches(sk_http_req_t *req, const params_t *ps, tl_promql_expr_t **out, size_t max) {
  size_t n = 0;
  char err[512], msg[600];
  for (size_t i = 0; i < ps->n; i++) {
    if (strcmp(ps->p[i].k, "match[]")) continue;
    if (n >= max) {
      respond_error(req, "bad_data", "too many match[] parameters");
      goto fail;
    }
    tl_promql_expr_t *e;
    if (tl_promql_parse(ps->p[i].v, strlen(ps->p[i].v), &e, err, sizeof err) < 0) {
      snprintf(msg, sizeof msg, "invalid parameter \"match[]\": %s", err);
      respond_error(req, "bad_data", msg);
      goto fail;
    }
    out[n++] = e;
    if (e->root->kind != PQ_VSEL) {
      respond_error(req, "bad_data", "invalid parameter \"match[]\": not a series selector");
      goto fail;
    }
  }
  return (int)n;
fail:
  for (size_t i = 0; i < n; i++) tl_promql_free(out[i]);
  return -1;
}

/* start/end of series, labels and label values: optional (all time when
 * absent); a value that is not a time is an error, as in Prometheus.
 * Returns 1 when either was given, 0 when neither, -1 after answering 400. */
static int time_bounds(sk_http_req_t *req, const params_t *ps, int64_t *start, int64_t *end) {
  *start = INT64_MIN / 2;
  *end = INT64_MAX / 2;
  const char *names[] = {"start", "end"};
  int64_t *dst[] = {start, end};
  int given = 0;
  for (int i = 0; i < 2; i++) {
    const char *v = pget(ps, names[i]);
    if (!v || !*v) continue;
    given = 1;
    if (parse_time(v, dst[i]) < 0) {
      char msg[400];
      snprintf(msg, sizeof msg, "invalid parameter \"%s\": cannot parse \"%.200s\" to a valid timestamp", names[i], v);
      respond_error(req, "bad_data", msg);
      return -1;
    }
  }
  if (*end < *start) {
    respond_error(req, "bad_data", "invalid parameter \"end\": end timestamp must not be before start time");
    return -1;
  }
  return given;
}

/* Label names, or values of label `name`, of the series matching m that
 * have samples in [start, end]: from the series themselves (the label
 * index has no time). */
static int labels_in_range(tl_tsdb_t *db, sk_pool_t *pool, const char *name, const tl_matcher_t *m, size_t nm,
                           int64_t start, int64_t end, const char ***out, size_t *nout) {
  tl_matcher_t any;
  char err[128];
  int rc;
  if (!nm) {
    if ((rc = tl_matcher_init(&any, TL_MATCH_RE, "__name__", ".+", err, sizeof err)) < 0) return rc;
    m = &any;
    nm = 1;
  }
  tl_series_t *s = NULL;
  size_t ns = 0, n = 0, cap = 0;
  const char **v = NULL;
  rc = tl_tsdb_select(db, pool, m, nm, start, end, TL_SELECT_NO_SAMPLES, 0, &s, &ns);
  if (m == &any) tl_matcher_done(&any);
  if (rc < 0) return rc;
  for (size_t i = 0; i < ns; i++)
    for (size_t j = 0; j < s[i].nlabels; j++) {
      const char *x = NULL;
      if (!name) x = s[i].labels[j].name;
      else if (!strcmp(s[i].labels[j].name, name)) x = s[i].labels[j].value;
      if (!x) continue;
      if (n == cap) {
        cap = cap ? cap * 2 : 64;
        const char **nv = sk_pool_alloc(pool, cap * sizeof *nv);
        if (n) memcpy(nv, v, n * sizeof *nv);
        v = nv;
      }
      v[n++] = x;
    }
  *out = v;
  *nout = n;
  return 0;
}

static void h_series(tl_tsdb_t *db, sk_http_req_t *req, const params_t *ps) {
  tl_promql_expr_t *m[32];
  int nm = parse_matches(req, ps, m, 32);
  if (nm < 0) return;
  if (nm == 0) {
    respond_error(req, "bad_data", "no match[] parameter provided");
    return;
  }
  int64_t start, end;
  if (time_bounds(req, ps, &start, &end) < 0) {
    for (int i = 0; i < nm; i++) tl_promql_free(m[i]);
    return;
  }
  sk_pool_t *pool = sk_pool_new();
  sk_buf_t b, key;
  sk_buf_init(&b);
  sk_buf_init(&key);
  begin_success(&b);
  sk_buf_puts(&b, "[");
  /* union of every selector, without duplicates */
  size_t count = 0;
  int rc = 0;
  char err[256] = "";
  tl__hmap_t seen = {0}; /* series already written, when several match[] can overlap */
  for (int i = 0; i < nm && rc >= 0; i++) {
    tl_series_t *s;
    size_t ns;
    rc = tl_tsdb_select(db, pool, m[i]->root->m, m[i]->root->nm, start, end, TL_SELECT_NO_SAMPLES, 0, &s, &ns);
    if (rc < 0) {
      tl_tsdb_errmsg(db, err, sizeof err);
      break;
    }
    for (size_t j = 0; j < ns; j++) {
      sk_buf_reset(&key);
      put_metric(&key, s[j].labels, s[j].nlabels);
      const char *k = sk_buf_cstr(&key);
      if (nm > 1) {
        if (tl__hmap_get(&seen, k, key.len)) continue;
        tl__hmap_put(&seen, sk_pool_strdup(pool, k), key.len, &seen);
      }
      if (count++) sk_buf_puts(&b, ",");
      sk_buf_append(&b, key.data, key.len);
    }
  }
  sk_buf_puts(&b, "]}");
  if (rc < 0)
    respond_error(req, "execution", err);
  else
    respond_json(req, 200, &b);
  tl__hmap_free(&seen);
  sk_buf_done(&b);
  sk_buf_done(&key);
  sk_pool_free(pool);
  for (int i = 0; i < nm; i++) tl_promql_free(m[i]);
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static void h_labels(tl_tsdb_t *db, sk_http_req_t *req, const params_t *ps, const char *name) {
  tl_promql_expr_t *m[32];
  int nm = parse_matches(req, ps, m, 32);
  if (nm < 0) return;
  int64_t start, end;
  int ranged = time_bounds(req, ps, &start, &end);
  if (ranged < 0) {
    for (int i = 0; i < nm; i++) tl_promql_free(m[i]);
    return;
  }
  sk_pool_t *pool = sk_pool_new();
  const char **all = NULL;
  size_t nall = 0, cap = 0;
  int rc = 0;
  char err[256] = "";
  for (int i = 0; i < (nm ? nm : 1) && rc >= 0; i++) {
    const char **v;
    size_t n;
    const tl_matcher_t *mm = nm ? m[i]->root->m : NULL;
    size_t nmm = nm ? m[i]->root->nm : 0;
    if (ranged)
      rc = labels_in_range(db, pool, name, mm, nmm, start, end, &v, &n);
    else
      rc = name ? tl_tsdb_label_values(db, pool, name, mm, nmm, &v, &n)
                : tl_tsdb_label_names(db, pool, mm, nmm, &v, &n);
    if (rc < 0) {
      tl_tsdb_errmsg(db, err, sizeof err);
      break;
    }
    for (size_t j = 0; j < n; j++) {
      if (nall == cap) {
        cap = cap ? cap * 2 : 64;
        const char **na = sk_pool_alloc(pool, cap * sizeof *na);
        if (nall) memcpy(na, all, nall * sizeof *na);
        all = na;
      }
      all[nall++] = v[j];
    }
  }
  if (rc < 0) {
    respond_error(req, "execution", err);
  } else {
    /* merge: sort and drop duplicates (several match[], or one entry per series with a time range) */
    if (nall > 1) qsort(all, nall, sizeof *all, str_cmp);
    sk_buf_t b;
    sk_buf_init(&b);
    begin_success(&b);
    sk_buf_puts(&b, "[");
    size_t k = 0;
    for (size_t i = 0; i < nall; i++) {
      if (i && !strcmp(all[i], all[i - 1])) continue;
      if (k++) sk_buf_puts(&b, ",");
      put_str(&b, all[i]);
    }
    sk_buf_puts(&b, "]}");
    respond_json(req, 200, &b);
    sk_buf_done(&b);
  }
  sk_pool_free(pool);
  for (int i = 0; i < nm; i++) tl_promql_free(m[i]);
}

static void h_buildinfo(const tl_query_api_opts_t *o, sk_http_req_t *req) {
  sk_buf_t b;
  sk_buf_init(&b);
  begin_success(&b);
  sk_buf_puts(&b, "{\"version\":");
  /* Grafana reads the version to pick features; claim the Prometheus API
   * level Skiff implements. */
  put_str(&b, "2.42.0");
  sk_buf_puts(&b, ",\"revision\":");
  put_str(&b, o->version ? o->version : SKIFF_VERSION);
  sk_buf_puts(&b, ",\"branch\":\"skiff\",\"buildUser\":\"skiff\",\"buildDate\":\"\",\"goVersion\":\"none\"}}");
  respond_json(req, 200, &b);
  sk_buf_done(&b);
}

static int ct_is_form(const sk_http_req_t *req) {
  const char *ct = sk_http_headers_get(&req->headers, "content-type");
  return ct && !strncasecmp(ct, "application/x-www-form-urlencoded", 33);
}

int tl_query_api_handle(tl_tsdb_t *db, const tl_query_api_opts_t *o, sk_http_req_t *req) {
  const char *path = req->path ? req->path : "";
  static const tl_query_api_opts_t defaults = {0};
  if (!o) o = &defaults;
  if (!strcmp(path, "/-/healthy") || !strcmp(path, "/-/ready")) {
    int ready = path[3] == 'r' ? o->ready : 1;
    sk_http_respond_text(req, ready ? 200 : 503, "text/plain; charset=utf-8",
                         path[3] == 'h' ? "Skiff is Healthy.\n" : ready ? "Skiff is Ready.\n" : "Service Unavailable\n");
    return 1;
  }
  if (strncmp(path, "/api/v1/", 8)) return 0;
  const char *rest = path + 8;
  enum { Q, QR, SERIES, LABELS, VALUES, BUILD, META, RUNTIME, NONE } which = NONE;
  const char *label = NULL;
  if (!strcmp(rest, "query"))
    which = Q;
  else if (!strcmp(rest, "query_range"))
    which = QR;
  else if (!strcmp(rest, "series"))
    which = SERIES;
  else if (!strcmp(rest, "labels"))
    which = LABELS;
  else if (!strcmp(rest, "status/buildinfo"))
    which = BUILD;
  else if (!strcmp(rest, "metadata"))
    which = META;
  else if (!strcmp(rest, "status/runtimeinfo"))
    which = RUNTIME;
  else if (!strncmp(rest, "label/", 6)) {
    const char *n = rest + 6, *slash = strchr(n, '/');
    if (slash && !strcmp(slash, "/values") && slash > n) {
      which = VALUES;
      label = url_decode(req->pool, n, (size_t)(slash - n));
    }
  }
  if (which == NONE) return 0;
  int is_post = !strcmp(req->method, "POST");
  if (!is_post && strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
    sk_http_header_t h[] = {{"allow", "GET, POST"}};
    sk_http_respond(req, 405, h, 1, "method not allowed\n", 19);
    return 1;
  }
  params_t *ps = sk_pool_calloc(req->pool, sizeof *ps);
  if (req->query) parse_form(ps, req->pool, req->query, strlen(req->query));
  if (is_post && ct_is_form(req) && req->body) parse_form(ps, req->pool, (const char *)req->body, req->body_len);
  switch (which) {
  case Q: h_query(db, o, req, ps, 0); break;
  case QR: h_query(db, o, req, ps, 1); break;
  case SERIES: h_series(db, req, ps); break;
  case LABELS: h_labels(db, req, ps, NULL); break;
  case VALUES: {
    int ok = *label != 0;
    for (const char *p = label; *p; p++)
      if (!(isalnum((unsigned char)*p) || *p == '_')) ok = 0;
    if (!ok) {
      char msg[300];
      snprintf(msg, sizeof msg, "invalid label name: \"%.200s\"", label);
      respond_error(req, "bad_data", msg);
      break;
    }
    h_labels(db, req, ps, label);
    break;
  }
  case BUILD: h_buildinfo(o, req); break;
  case META: {
    sk_buf_t b;
    sk_buf_init(&b);
    begin_success(&b);
    sk_buf_puts(&b, "{}}");
    respond_json(req, 200, &b);
    sk_buf_done(&b);
    break;
  }
  case RUNTIME: {
    tl_tsdb_stats_t st;
    tl_tsdb_stats(db, &st);
    sk_buf_t b;
    sk_buf_init(&b);
    begin_success(&b);
    sk_buf_printf(&b, "{\"storageRetention\":\"\",\"timeSeriesCount\":%llu}}", (unsigned long long)st.series);
    respond_json(req, 200, &b);
    sk_buf_done(&b);
    break;
  }
  default: break;
  }
  return 1;
}

void tl_query_api_http_handler(sk_http_req_t *req, void *ud) {
  tl_query_api_t *api = ud;
  if (!tl_query_api_handle(api->db, &api->opts, req)) sk_http_respond_text(req, 404, "text/plain", "404 page not found\n");
}
