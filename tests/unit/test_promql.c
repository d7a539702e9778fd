/* PromQL: parse errors with columns, and every supported function and
 * operator against hand-computed expectations. */
#include "sk_test.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/mem.h"
#include "tl_promql.h"

static tl_tsdb_t *db;

/* Data, one sample every 15 s from t=0 to t=600 s:
 *   http_requests_total{job="api",instance="a",code="200"} = t      (rate 1/s)
 *   http_requests_total{job="api",instance="b",code="500"} = 2t     (rate 2/s)
 *   http_requests_total{job="db", instance="c",code="200"} = 3t     (rate 3/s)
 *   temp{instance="a"|"b"|"c"} = 10 | 20 | 30
 *   lat_bucket{le="0.1"|"1"|"+Inf"} = t | 3t | 4t
 *   owner{instance="a",team="x"} = 1, owner{instance="b",team="y"} = 1
 *   resetting{} = t mod 100 (counter resets) */
static int setup(void **state) {
  char dir[1024], err[256];
  snprintf(dir, sizeof dir, "%s/promql", sk_test_tmpdir());
  if (tl_tsdb_open(dir, NULL, &db, err, sizeof err) < 0) return -1;
  for (int t = 0; t <= 600; t += 15) {
    int64_t ms = (int64_t)t * 1000;
    const char *inst[3] = {"a", "b", "c"}, *job[3] = {"api", "api", "db"}, *code[3] = {"200", "500", "200"};
    for (int i = 0; i < 3; i++) {
      tl_label_t l[4] = {{"__name__", "http_requests_total"}, {"job", job[i]}, {"instance", inst[i]}, {"code", code[i]}};
      tl_tsdb_append(db, l, 4, ms, (double)t * (i + 1));
      tl_label_t g[2] = {{"__name__", "temp"}, {"instance", inst[i]}};
      tl_tsdb_append(db, g, 2, ms, 10.0 * (i + 1));
    }
    const char *le[3] = {"0.1", "1", "+Inf"};
    double mul[3] = {1, 3, 4};
    for (int i = 0; i < 3; i++) {
      tl_label_t l[2] = {{"__name__", "lat_bucket"}, {"le", le[i]}};
      tl_tsdb_append(db, l, 2, ms, t * mul[i]);
    }
    tl_label_t o1[3] = {{"__name__", "owner"}, {"instance", "a"}, {"team", "x"}};
    tl_label_t o2[3] = {{"__name__", "owner"}, {"instance", "b"}, {"team", "y"}};
    tl_tsdb_append(db, o1, 3, ms, 1);
    tl_tsdb_append(db, o2, 3, ms, 1);
    tl_label_t r[1] = {{"__name__", "resetting"}};
    tl_tsdb_append(db, r, 1, ms, t % 100);
  }
  return tl_tsdb_commit(db);
}

static int teardown(void **state) {
  tl_tsdb_close(db);
  return 0;
}

static int line_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Result as sorted lines "{name=value,...} v" joined by "; ". */
static char *run_at(const char *q, int64_t t_ms, int *rc_out, char *err, size_t errlen) {
  tl_promql_expr_t *e;
  int rc = tl_promql_parse(q, strlen(q), &e, err, errlen);
  if (rc < 0) {
    *rc_out = rc;
    return NULL;
  }
  sk_pool_t *p = sk_pool_new();
  tl_promql_result_t r;
  rc = tl_promql_eval_instant(db, p, e, t_ms, NULL, &r, err, errlen);
  *rc_out = rc;
  char *out = NULL;
  if (rc == 0) {
    sk_buf_t b;
    sk_buf_init(&b);
    if (r.type == TL_PQ_SCALAR) {
      sk_buf_printf(&b, "scalar %.10g", r.scalar);
    } else if (r.type == TL_PQ_STRING) {
      sk_buf_printf(&b, "string %s", r.str);
    } else {
      char **lines = calloc(r.nseries + 1, sizeof *lines);
      for (size_t i = 0; i < r.nseries; i++) {
        sk_buf_t l;
        sk_buf_init(&l);
        sk_buf_puts(&l, "{");
        for (size_t j = 0; j < r.series[i].nlabels; j++)
          sk_buf_printf(&l, "%s%s=%s", j ? "," : "", r.series[i].labels[j].name, r.series[i].labels[j].value);
        sk_buf_puts(&l, "}");
        for (size_t j = 0; j < r.series[i].n; j++) sk_buf_printf(&l, " %.10g", r.series[i].v[j]);
        lines[i] = strdup(sk_buf_cstr(&l));
        sk_buf_done(&l);
      }
      qsort(lines, r.nseries, sizeof *lines, line_cmp);
      for (size_t i = 0; i < r.nseries; i++) {
        sk_buf_printf(&b, "%s%s", i ? "; " : "", lines[i]);
        free(lines[i]);
      }
      free(lines);
    }
    out = strdup(b.data ? sk_buf_cstr(&b) : "");
    sk_buf_done(&b);
  }
  sk_pool_free(p);
  tl_promql_free(e);
  return out;
}

static void expect_at(const char *q, int64_t t_ms, const char *want) {
  char err[512] = "";
  int rc;
  char *got = run_at(q, t_ms, &rc, err, sizeof err);
  if (rc < 0) fail_msg("%s: error %d: %s", q, rc, err);
  if (strcmp(got, want)) {
    print_error("query: %s\n  want: %s\n  got:  %s\n", q, want, got);
    free(got);
    fail();
  }
  free(got);
}

static void expect(const char *q, const char *want) { expect_at(q, 600000, want); }

static void expect_err(const char *q, int code, const char *substr) {
  char err[512] = "";
  int rc;
  char *got = run_at(q, 600000, &rc, err, sizeof err);
  free(got);
  if (rc != code || !strstr(err, substr)) fail_msg("%s: want error %d containing '%s', got %d '%s'", q, code, substr, rc, err);
}

static void test_selectors(void **state) {
  expect("temp", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("temp{instance=~\"a|b\"}", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20");
  expect("temp{instance!=\"a\",instance!~\"c\"}", "{__name__=temp,instance=b} 20");
  expect("{__name__=\"temp\",instance=\"c\"}", "{__name__=temp,instance=c} 30");
  expect("http_requests_total{instance=\"b\"} offset 5m", "{__name__=http_requests_total,code=500,instance=b,job=api} 600");
  /* lookback: the last sample (600 s) is found until 900 s inclusive */
  expect_at("temp{instance=\"a\"}", 900000, "{__name__=temp,instance=a} 10");
  expect_at("temp{instance=\"a\"}", 900001, "");
  expect_at("temp{instance=\"a\"}", 7000, "{__name__=temp,instance=a} 10");
  expect_at("temp{instance=\"a\"}", -1, "");
  /* a range selector at the top level of an instant query: [540, 600] */
  expect("temp{instance=\"a\"}[1m]", "{__name__=temp,instance=a} 10 10 10 10 10");
  expect("nothing_here", "");
}

static void test_literals(void **state) {
  expect("1 + 2 * 3", "scalar 7");
  expect("(1 + 2) * 3", "scalar 9");
  expect("2 ^ 3 ^ 2", "scalar 512");
  expect("-2 ^ 2", "scalar -4");
  expect("7 % 4", "scalar 3");
  expect("10 / 4 - 1", "scalar 1.5");
  expect("1 == bool 1", "scalar 1");
  expect("2 < bool 1", "scalar 0");
  expect("0x10 + 1e2 + .5", "scalar 116.5");
  expect("Inf", "scalar inf");
  expect("-inf", "scalar -inf");
  expect("\"hello\\tworld\"", "string hello\tworld");
  expect("'single'", "string single");
  expect("`raw\\n`", "string raw\\n");
  expect("time()", "scalar 600");
  expect("vector(5)", "{} 5");
  expect("scalar(temp{instance=\"a\"})", "scalar 10");
  expect("scalar(temp)", "scalar nan");
  expect("# comment\n 1", "scalar 1");
}

static void test_rate_family(void **state) {
  expect("rate(http_requests_total[5m])",
         "{code=200,instance=a,job=api} 1; {code=200,instance=c,job=db} 3; {code=500,instance=b,job=api} 2");
  expect("increase(http_requests_total{instance=\"a\"}[5m])", "{code=200,instance=a,job=api} 300");
  expect("irate(http_requests_total{instance=\"b\"}[1m])", "{code=500,instance=b,job=api} 2");
  expect("delta(temp{instance=\"a\"}[5m])", "{instance=a} 0");
  expect("idelta(http_requests_total{instance=\"c\"}[1m])", "{code=200,instance=c,job=db} 45");
  expect("deriv(http_requests_total{instance=\"c\"}[5m])", "{code=200,instance=c,job=db} 3");
  /* the line 3t evaluated at t=600 plus 100 s; a constant predicts itself */
  expect("predict_linear(http_requests_total{instance=\"c\"}[5m], 100)", "{code=200,instance=c,job=db} 2100");
  expect("predict_linear(temp{instance=\"b\"}[5m], 3600)", "{instance=b} 20");
  expect("predict_linear(temp{instance=\"b\"}[15s] offset 1h, 60)", "");
  /* extrapolation: window [290, 590] holds samples 300..585 (20 samples,
   * 285 s apart); 10 s to the start is below 1.1 * 15 s, extrapolated; 5 s
   * to the end likewise: increase = 285 * (285 + 10 + 5) / 285 = 300 */
  expect_at("increase(http_requests_total{instance=\"a\"}[5m])", 590000, "{code=200,instance=a,job=api} 300");
  /* the counter starts at 0 at t=0: extrapolation stops at zero.
   * window [-240, 60]: samples 0..60, to_start = 240 s but the zero point is
   * 0 s before the first sample: increase = 60 * (60 + 0 + 0) / 60 = 60 */
  expect_at("increase(http_requests_total{instance=\"a\"}[5m])", 60000, "{code=200,instance=a,job=api} 60");
  /* counter resets: t mod 100 over [300, 600] */
  expect("resets(resetting[5m])", "{} 3");
  expect("changes(temp{instance=\"a\"}[5m])", "{instance=a} 0");
  /* a single sample gives no rate */
  expect_at("rate(http_requests_total[5m])", 0, "");
}

static void test_over_time(void **state) {
  expect("avg_over_time(temp[5m])", "{instance=a} 10; {instance=b} 20; {instance=c} 30");
  expect("max_over_time(http_requests_total{instance=\"a\"}[5m])", "{code=200,instance=a,job=api} 600");
  expect("min_over_time(http_requests_total{instance=\"a\"}[5m])", "{code=200,instance=a,job=api} 300");
  expect("count_over_time(temp{instance=\"a\"}[5m])", "{instance=a} 21");
  expect("sum_over_time(temp{instance=\"a\"}[1m])", "{instance=a} 50");
  expect("last_over_time(temp{instance=\"a\"}[5m])", "{__name__=temp,instance=a} 10");
  expect("stddev_over_time(temp{instance=\"a\"}[5m])", "{instance=a} 0");
  expect("quantile_over_time(0.5, http_requests_total{instance=\"a\"}[1m])", "{code=200,instance=a,job=api} 570");
  expect("avg_over_time(http_requests_total{instance=\"a\"}[1m])", "{code=200,instance=a,job=api} 570");
  expect("present_over_time(temp{instance=\"a\"}[1m])", "{instance=a} 1");
  expect("absent_over_time(nope{job=\"x\"}[1m])", "{job=x} 1");
}

static void test_aggregations(void **state) {
  expect("sum(rate(http_requests_total[5m]))", "{} 6");
  expect("sum by (job) (rate(http_requests_total[5m]))", "{job=api} 3; {job=db} 3");
  expect("sum(rate(http_requests_total[5m])) by (job)", "{job=api} 3; {job=db} 3");
  expect("sum without (instance, code) (rate(http_requests_total[5m]))", "{job=api} 3; {job=db} 3");
  expect("sum by (code, job) (http_requests_total)",
         "{code=200,job=api} 600; {code=200,job=db} 1800; {code=500,job=api} 1200");
  expect("avg(temp)", "{} 20");
  expect("min(temp)", "{} 10");
  expect("max(temp)", "{} 30");
  expect("count(temp)", "{} 3");
  expect("group(temp)", "{} 1");
  expect("stddev(temp)", "{} 8.164965809");
  expect("stdvar(temp)", "{} 66.66666667");
  expect("quantile(0.5, temp)", "{} 20");
  expect("topk(2, temp)", "{__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("bottomk(1, temp)", "{__name__=temp,instance=a} 10");
  expect("topk by (job) (1, http_requests_total)",
         "{__name__=http_requests_total,code=200,instance=c,job=db} 1800; "
         "{__name__=http_requests_total,code=500,instance=b,job=api} 1200");
  expect("topk(0, temp)", "");
  expect("count without (instance) (temp)", "{} 3");
}

static void test_functions(void **state) {
  expect("histogram_quantile(0.5, rate(lat_bucket[5m]))", "{} 0.55");
  expect("histogram_quantile(0.9, rate(lat_bucket[5m]))", "{} 1");
  expect("histogram_quantile(0.1, rate(lat_bucket[5m]))", "{} 0.04");
  expect("histogram_quantile(0.5, sum by (le) (rate(lat_bucket[5m])))", "{} 0.55");
  expect("abs(-temp)", "{instance=a} 10; {instance=b} 20; {instance=c} 30");
  expect("clamp_min(temp, 15)", "{instance=a} 15; {instance=b} 20; {instance=c} 30");
  expect("clamp_max(temp, 15)", "{instance=a} 10; {instance=b} 15; {instance=c} 15");
  expect("clamp(temp, 12, 25)", "{instance=a} 12; {instance=b} 20; {instance=c} 25");
  expect("ceil(temp / 7)", "{instance=a} 2; {instance=b} 3; {instance=c} 5");
  expect("floor(temp / 7)", "{instance=a} 1; {instance=b} 2; {instance=c} 4");
  expect("round(temp / 7)", "{instance=a} 1; {instance=b} 3; {instance=c} 4");
  expect("round(temp{instance=\"a\"} / 3, 0.5)", "{instance=a} 3.5");
  expect("sqrt(temp{instance=\"a\"} * 10)", "{instance=a} 10");
  expect("timestamp(temp{instance=\"a\"})", "{instance=a} 600");
  expect_at("timestamp(temp{instance=\"a\"})", 610000, "{instance=a} 600");
  expect("absent(nope{job=\"x\",a=~\"y\"})", "{job=x} 1");
  expect("absent(temp)", "");
  expect("label_replace(temp{instance=\"a\"}, \"host\", \"h-$1\", \"instance\", \"(.*)\")",
         "{__name__=temp,host=h-a,instance=a} 10");
  expect("sort_desc(temp)", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
}

static void test_binary_ops(void **state) {
  expect("temp * 2", "{instance=a} 20; {instance=b} 40; {instance=c} 60");
  expect("2 * temp", "{instance=a} 20; {instance=b} 40; {instance=c} 60");
  expect("temp % 7", "{instance=a} 3; {instance=b} 6; {instance=c} 2");
  expect("temp{instance=\"a\"} / 0", "{instance=a} inf");
  expect("temp{instance=\"a\"} ^ 2", "{instance=a} 100");
  expect("temp > 15", "{__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("15 < temp", "{__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("temp > bool 15", "{instance=a} 0; {instance=b} 1; {instance=c} 1");
  expect("temp == 20", "{__name__=temp,instance=b} 20");
  expect("temp != 20", "{__name__=temp,instance=a} 10; {__name__=temp,instance=c} 30");
  expect("temp >= 20", "{__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("temp <= 20", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20");
  expect("temp + temp", "{instance=a} 20; {instance=b} 40; {instance=c} 60");
  expect("temp > temp", "");
  expect("temp >= bool temp", "{instance=a} 1; {instance=b} 1; {instance=c} 1");
  expect("-temp{instance=\"b\"}", "{instance=b} -20");
  /* on / ignoring / group_left / group_right */
  expect("http_requests_total * on(instance) group_left(team) owner",
         "{code=200,instance=a,job=api,team=x} 600; {code=500,instance=b,job=api,team=y} 1200");
  expect("owner * on(instance) group_right(team) http_requests_total",
         "{code=200,instance=a,job=api,team=x} 600; {code=500,instance=b,job=api,team=y} 1200");
  expect("temp - on(instance) http_requests_total", "{instance=a} -590; {instance=b} -1180; {instance=c} -1770");
  expect("temp - ignoring(job, code) http_requests_total", "{instance=a} -590; {instance=b} -1180; {instance=c} -1770");
  expect("http_requests_total / ignoring(code, job) group_left temp",
         "{code=200,instance=a,job=api} 60; {code=200,instance=c,job=db} 60; {code=500,instance=b,job=api} 60");
  /* set operators */
  expect("temp and temp{instance=\"a\"}", "{__name__=temp,instance=a} 10");
  expect("temp unless temp{instance=\"a\"}", "{__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("temp{instance=\"a\"} or temp{instance=\"b\"}", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20");
  expect("temp and on() vector(1)", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20; {__name__=temp,instance=c} 30");
  expect("temp and on(instance) owner", "{__name__=temp,instance=a} 10; {__name__=temp,instance=b} 20");
  expect("vector(1) or temp{instance=\"a\"}", "{__name__=temp,instance=a} 10; {} 1");
  /* precedence: and binds tighter than or */
  expect("temp{instance=\"a\"} or temp{instance=\"b\"} and temp{instance=\"c\"}", "{__name__=temp,instance=a} 10");
  /* errors at evaluation */
  expect_err("temp + on() temp", SK_EINVAL, "duplicate series");
  expect_err("http_requests_total + on(job) http_requests_total", SK_EINVAL, "duplicate series");
}

static void test_range_query(void **state) {
  tl_promql_expr_t *e;
  char err[256];
  const char *q = "rate(http_requests_total{instance=\"a\"}[5m]) * 60";
  assert_int_equal(tl_promql_parse(q, strlen(q), &e, err, sizeof err), 0);
  sk_pool_t *p = sk_pool_new();
  tl_promql_result_t r;
  assert_int_equal(tl_promql_eval_range(db, p, e, 600000, 660000, 30000, NULL, &r, err, sizeof err), 0);
  assert_int_equal(r.type, TL_PQ_MATRIX);
  assert_int_equal(r.nseries, 1);
  assert_int_equal(r.series[0].n, 3);
  assert_true(r.series[0].ts[0] == 600000 && r.series[0].ts[2] == 660000);
  assert_true(fabs(r.series[0].v[0] - 60) < 1e-9);
  /* at 660 s the window [360, 660] ends 60 s after the last sample: only
   * half an interval (7.5 s) is extrapolated: 240 * 247.5 / 240 / 300 * 60 */
  assert_true(fabs(r.series[0].v[2] - 49.5) < 1e-9);
  tl_promql_free(e);
  /* a scalar expression is one series without labels */
  q = "time()";
  assert_int_equal(tl_promql_parse(q, strlen(q), &e, err, sizeof err), 0);
  assert_int_equal(tl_promql_eval_range(db, p, e, 0, 30000, 15000, NULL, &r, err, sizeof err), 0);
  assert_int_equal(r.nseries, 1);
  assert_int_equal(r.series[0].nlabels, 0);
  assert_true(r.series[0].n == 3 && r.series[0].v[2] == 30);
  tl_promql_free(e);
  /* series appear and disappear across steps */
  q = "temp > 15";
  assert_int_equal(tl_promql_parse(q, strlen(q), &e, err, sizeof err), 0);
  assert_int_equal(tl_promql_eval_range(db, p, e, 0, 1200000, 60000, NULL, &r, err, sizeof err), 0);
  assert_int_equal(r.nseries, 2);
  assert_int_equal(r.series[0].n, 16); /* 0..900 s every minute */
  tl_promql_free(e);
  /* a range vector is refused */
  q = "temp[5m]";
  assert_int_equal(tl_promql_parse(q, strlen(q), &e, err, sizeof err), 0);
  assert_int_equal(tl_promql_eval_range(db, p, e, 0, 1, 1, NULL, &r, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "range query"));
  tl_promql_free(e);
  sk_pool_free(p);
}

static void parse_err(const char *q, const char *want) {
  tl_promql_expr_t *e = NULL;
  char err[512];
  int rc = tl_promql_parse(q, strlen(q), &e, err, sizeof err);
  if (rc != SK_EPARSE) {
    tl_promql_free(e);
    fail_msg("%s: parsed, expected error %s", q, want);
  }
  if (!strstr(err, want)) fail_msg("%s:\n  want: %s\n  got:  %s", q, want, err);
}

static void test_parse_errors(void **state) {
  parse_err("rate(foo[5m]))", "parse error at col 14: unexpected ')'");
  parse_err("sum(rate(foo[5m])", "parse error at col 18: unexpected end of input, expected ')'");
  parse_err("foo{a=1}", "parse error at col 7: unexpected number '1', expected string");
  parse_err("foo{a=\"x\"", "parse error at col 10: unexpected end of input");
  parse_err("rate(foo)", "parse error at col 6: expected type range vector in call to function \"rate\", got instant vector");
  parse_err("nofunc(foo)", "parse error at col 1: unknown function with name \"nofunc\"");
  parse_err("1 > 2", "parse error at col 3: comparisons between scalars must use BOOL modifier");
  parse_err("{}", "vector selector must contain at least one non-empty matcher");
  parse_err("{a=~\".*\"}", "vector selector must contain at least one non-empty matcher");
  parse_err("foo{a=~\"(\"}", "invalid regular expression");
  parse_err("sum(foo[5m])", "expected type instant vector in aggregation expression, got range vector");
  parse_err("foo[5m][5m]", "ranges only allowed for vector selectors");
  parse_err("foo[5x]", "parse error at col 5");
  parse_err("sum(foo)[5m]", "ranges only allowed for vector selectors");
  parse_err("foo[5m:0s]", "zero or negative subquery step");
  parse_err("(1)[5m:1m]", "subquery is only allowed on instant vector, got scalar");
  parse_err("foo[5m:1m] @ 10 @ 20", "may not be set multiple times");
  parse_err("1 and 2", "set operator \"and\" not allowed in binary scalar expression");
  parse_err("foo + bool bar", "bool modifier can only be used on comparison operators");
  parse_err("1 + on(a) foo", "vector matching only allowed between instant vectors");
  parse_err("", "no expression found in input");
  parse_err("foo bar", "parse error at col 5: unexpected 'bar'");
  parse_err("\"unterminated", "parse error at col 1: unterminated quoted string");
  parse_err("topk(foo, bar)", "expected type scalar in aggregation parameter");
  parse_err("sum by (a) (foo) by (b)", "only contain one grouping clause");
  parse_err("histogram_quantile(0.9)", "expected 2 argument(s) in call to \"histogram_quantile\", got 1");
  parse_err("foo offset", "expected duration");
  parse_err("(1 + 2", "parse error at col 7: unexpected end of input, expected ')'");
  parse_err("foo{__name__=\"x\"}", "metric name must not be set twice");
  parse_err("foo @ bar", "col 7: unexpected 'bar', expected number, start() or end()");
  parse_err("foo ! bar", "parse error at col 5");
  /* deep nesting is bounded */
  char deep[1200];
  memset(deep, '(', 600);
  strcpy(deep + 600, "1");
  parse_err(deep, "nesting too deep");
}

static void test_durations(void **state) {
  int64_t ms;
  assert_int_equal(tl_promql_parse_duration("1h30m", 5, &ms), 0);
  assert_true(ms == 5400000);
  assert_int_equal(tl_promql_parse_duration("250ms", 5, &ms), 0);
  assert_true(ms == 250);
  assert_int_equal(tl_promql_parse_duration("2d", 2, &ms), 0);
  assert_true(ms == 2LL * 86400000);
  assert_int_equal(tl_promql_parse_duration("1w1y", 4, &ms), 0);
  assert_true(ms == 7LL * 86400000 + 365LL * 86400000);
  assert_true(tl_promql_parse_duration("5", 1, &ms) < 0);
  assert_true(tl_promql_parse_duration("m", 1, &ms) < 0);
  assert_true(tl_promql_parse_duration("99999999999999999999y", 21, &ms) < 0);
}

static int re_full(const char *re, const char *s) {
  regex_t rx;
  char err[256];
  if (tl_re_compile(&rx, re, TL_RE_ANCHOR | TL_RE_NOSUB, NULL, 0, err, sizeof err) < 0) fail_msg("%s: %s", re, err);
  int hit = regexec(&rx, s, 0, NULL, 0) == 0;
  regfree(&rx);
  return hit;
}

/* RE2 syntax on POSIX regcomp (tl_regex.c) */
static void test_regex_syntax(void **state) {
  assert_true(re_full("a\\d+", "a123"));
  assert_false(re_full("a\\d+", "ad"));
  assert_true(re_full("\\w+\\s\\S", "ab_1 x"));
  assert_false(re_full("\\W", "a"));
  assert_true(re_full("[\\d.]+", "1.2.3"));
  assert_true(re_full("[\\]x]+", "]x]"));
  assert_true(re_full("[a\\-z]+", "-az"));
  assert_false(re_full("[a\\-z]", "b"));
  assert_true(re_full("[\\^]", "^"));
  assert_true(re_full("[^\\d]", "x"));
  assert_true(re_full("a\\.b\\/c\\-d", "a.b/c-d"));
  assert_false(re_full("a\\.b", "axb"));
  assert_true(re_full("(?i)ab(?:c|d)", "ABd"));
  assert_true(re_full("(?P<x>a)(?<y>b)*?", "abb"));
  assert_true(re_full("a\\tb", "a\tb"));
  assert_true(re_full("\\bfoo\\b", "foo"));
  int groups[4];
  regex_t rx;
  char err[256];
  assert_int_equal(tl_re_compile(&rx, "(?:x)(a)(?P<n>b)", TL_RE_ANCHOR, groups, 4, err, sizeof err), 0);
  assert_int_equal(groups[0], 1);
  assert_int_equal(groups[1], 3);
  assert_int_equal(groups[2], 4);
  assert_int_equal(groups[3], -1);
  regfree(&rx);
  const char *bad[] = {"\\pL", "\\x41", "(?s).", "a(?i)b", "[\\pL]", "abc\\", "[abc", "(?P<x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    assert_int_equal(tl_re_compile(&rx, bad[i], TL_RE_ANCHOR, NULL, 0, err, sizeof err), SK_EINVAL);
    assert_non_null(strstr(err, "invalid regular expression"));
  }
}

/* label_join, count_values, holt_winters, date functions, duplicate label sets */
static void test_more_functions(void **state) {
  expect("label_join(temp{instance=\"a\"}, \"x\", \"-\", \"instance\", \"missing\", \"instance\")",
         "{__name__=temp,instance=a,x=a--a} 10");
  expect("label_join(temp{instance=\"a\"}, \"instance\", \",\")", "{__name__=temp} 10");
  expect("count_values(\"v\", temp)", "{v=10} 1; {v=20} 1; {v=30} 1");
  expect("count_values(\"v\", owner)", "{v=1} 2");
  expect("count_values by (team) (\"v\", owner)", "{team=x,v=1} 1; {team=y,v=1} 1");
  expect("count_values(\"v\", temp / 3)", "{v=10} 1; {v=3.3333333333333335} 1; {v=6.666666666666667} 1");
  expect_err("count_values(\"1x\", temp)", SK_EINVAL, "invalid label name");
  /* a constant and a straight line are smoothed to themselves */
  expect("holt_winters(temp{instance=\"a\"}[5m], 0.5, 0.5)", "{instance=a} 10");
  expect("holt_winters(http_requests_total{instance=\"a\"}[5m], 0.3, 0.6)", "{code=200,instance=a,job=api} 600");
  expect_err("holt_winters(temp[5m], 1, 0.5)", SK_EINVAL, "invalid smoothing factor");
  expect("year(vector(1700000000))", "{} 2023");
  expect("month(vector(1700000000))", "{} 11");
  expect("day_of_week(vector(1700000000))", "{} 2");
  expect("day_of_month(vector(1709164800))", "{} 29");
  expect("days_in_month(vector(1709164800))", "{} 29");
  expect("days_in_month(vector(1700000000))", "{} 30");
  expect("hour(vector(1700000000))", "{} 22");
  expect("minute()", "{} 10"); /* t = 600 s */
  expect("minute(temp{instance=\"a\"} * 60)", "{instance=a} 10");
  /* subqueries: inner steps at multiples of the step inside [t - range, t] */
  expect("count_over_time(temp{instance=\"a\"}[5m:1m])", "{instance=a} 6");
  expect("max_over_time(rate(http_requests_total{instance=\"c\"}[1m])[5m:30s])", "{code=200,instance=c,job=db} 3");
  expect("sum_over_time(vector(1)[2m:30s] offset 1m)", "{} 5");
  expect("rate(sum(http_requests_total)[5m:15s])", "{} 6");
  expect_at("max_over_time(temp{instance=\"b\"}[5m:1m] @ 300)", 9000000, "{instance=b} 20");
  expect_at("sum_over_time(http_requests_total{instance=\"a\"}[1m:30s] @ 120 offset 1m)", 9000000,
            "{code=200,instance=a,job=api} 90");
  expect_err("count_over_time(vector(1)[1d:1s])", SK_ELIMIT, "more than 11000 steps");
  /* an error inside a subquery unwinds through it (ASan checks nothing leaks) */
  expect_err("max_over_time(label_replace(temp, \"instance\", \"\", \"\", \"\")[5m:1m])", SK_EINVAL, "same labelset");
  /* @ modifier: evaluated at a fixed time, whatever the query time */
  expect("http_requests_total{instance=\"a\"} @ 100", "{__name__=http_requests_total,code=200,instance=a,job=api} 90");
  expect_at("rate(http_requests_total{instance=\"b\"}[1m] @ 300)", 9000000, "{code=500,instance=b,job=api} 2");
  expect("temp{instance=\"c\"} @ 300 offset 1m", "{__name__=temp,instance=c} 30");
  expect("resetting @ start()", "{__name__=resetting} 0");
  expect_err("temp @ 1 @ 2", SK_EPARSE, "may not be set multiple times");
  expect_err("sum(temp) @ 1", SK_EPARSE, "@ modifier must be preceded");
  expect_err("temp @ foo", SK_EPARSE, "unexpected");
  expect("deg(vector(pi()))", "{} 180");
  expect("sin(vector(0)) + cos(vector(0)) + tanh(vector(0))", "{} 1");
  expect("rad(temp{instance=\"a\"} * 18)", "{instance=a} 3.141592654");
  expect("pi() > bool 3.14", "scalar 1");
  expect_err("label_replace(temp, \"instance\", \"\", \"\", \"\")", SK_EINVAL, "same labelset");
  expect_err("abs(label_replace(temp, \"instance\", \"\", \"\", \"\"))", SK_EINVAL, "same labelset");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_selectors),   cmocka_unit_test(test_literals),   cmocka_unit_test(test_rate_family),
      cmocka_unit_test(test_over_time),   cmocka_unit_test(test_aggregations), cmocka_unit_test(test_functions),
      cmocka_unit_test(test_binary_ops),  cmocka_unit_test(test_range_query), cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_durations),   cmocka_unit_test(test_more_functions),
      cmocka_unit_test(test_regex_syntax),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
