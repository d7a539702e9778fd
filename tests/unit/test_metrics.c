/* Unit tests: metrics registry and Prometheus text exposition. */
#include "sk_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/err.h"
#include "skiff/metrics.h"

static char *render(sk_metrics_t *m) {
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_metrics_render(m, &b), 0);
  char *s = sk_xstrdup(sk_buf_cstr(&b));
  sk_buf_done(&b);
  return s;
}

static void expect_render(sk_metrics_t *m, const char *want) {
  char *got = render(m);
  assert_string_equal(got, want);
  free(got);
}

static void test_empty(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  expect_render(m, "");
  sk_metrics_free(m);
  sk_metrics_free(NULL);
}

static void test_counter_gauge_exact(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_counter_t *c;
  sk_gauge_t *g;
  assert_int_equal(sk_metrics_counter(m, "zz_requests_total", "Requests served.", &c), 0);
  assert_int_equal(sk_metrics_gauge(m, "aa_temperature", "Current temperature.", &g), 0);
  sk_counter_inc(c);
  sk_counter_add(c, 2.5);
  sk_counter_add(c, -10); /* ignored */
  sk_counter_add(c, NAN); /* ignored */
  sk_gauge_set(g, -3.25);
  sk_gauge_inc(g);
  sk_gauge_dec(g);
  sk_gauge_add(g, 0.5);
  assert_true(sk_counter_value(c) == 3.5);
  assert_true(sk_gauge_value(g) == -2.75);

  sk_mfamily_t *f;
  const char *labels[] = {"method", "code"};
  assert_int_equal(sk_metrics_counter_family(m, "http_requests_total", "HTTP requests.", labels, 2, &f), 0);
  sk_counter_t *c1, *c2, *c3;
  assert_int_equal(sk_counter_with(f, (const char *[]){"POST", "200"}, &c1), 0);
  assert_int_equal(sk_counter_with(f, (const char *[]){"GET", "500"}, &c2), 0);
  assert_int_equal(sk_counter_with(f, (const char *[]){"GET", "200"}, &c3), 0);
  sk_counter_t *again;
  assert_int_equal(sk_counter_with(f, (const char *[]){"GET", "500"}, &again), 0);
  assert_ptr_equal(again, c2);
  sk_counter_add(c1, 4);
  sk_counter_inc(c2);
  sk_counter_add(c3, 1e20);
  /* families by name, children by label values */
  expect_render(m,
                "# HELP aa_temperature Current temperature.\n"
                "# TYPE aa_temperature gauge\n"
                "aa_temperature -2.75\n"
                "# HELP http_requests_total HTTP requests.\n"
                "# TYPE http_requests_total counter\n"
                "http_requests_total{method=\"GET\",code=\"200\"} 1e+20\n"
                "http_requests_total{method=\"GET\",code=\"500\"} 1\n"
                "http_requests_total{method=\"POST\",code=\"200\"} 4\n"
                "# HELP zz_requests_total Requests served.\n"
                "# TYPE zz_requests_total counter\n"
                "zz_requests_total 3.5\n");
  sk_metrics_free(m);
}

static void test_escaping(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_mfamily_t *f;
  const char *labels[] = {"path"};
  assert_int_equal(sk_metrics_gauge_family(m, "esc", "Help with \\ backslash\nand newline \"q\".", labels, 1, &f), 0);
  sk_gauge_t *g;
  assert_int_equal(sk_gauge_with(f, (const char *[]){"a\\b\"c\nd"}, &g), 0);
  sk_gauge_set(g, 1);
  assert_int_equal(sk_gauge_with(f, (const char *[]){"caf\xc3\xa9"}, &g), 0);
  sk_gauge_set(g, INFINITY);
  assert_int_equal(sk_gauge_with(f, (const char *[]){""}, &g), 0);
  sk_gauge_set(g, NAN);
  expect_render(m,
                "# HELP esc Help with \\\\ backslash\\nand newline \"q\".\n"
                "# TYPE esc gauge\n"
                "esc{path=\"\"} NaN\n"
                "esc{path=\"a\\\\b\\\"c\\nd\"} 1\n"
                "esc{path=\"caf\xc3\xa9\"} +Inf\n");
  /* invalid UTF-8 and oversized values are refused */
  assert_int_equal(sk_gauge_with(f, (const char *[]){"\xff\xfe"}, &g), SK_EINVAL);
  assert_null(g);
  assert_int_equal(sk_gauge_with(f, (const char *[]){"\xc0\xaf"}, &g), SK_EINVAL);
  assert_int_equal(sk_gauge_with(f, (const char *[]){NULL}, &g), SK_EINVAL);
  assert_int_equal(sk_gauge_with(f, NULL, &g), SK_EINVAL);
  char big[SK_METRICS_MAX_VALUE_LEN + 2];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = 0;
  assert_int_equal(sk_gauge_with(f, (const char *[]){big}, &g), SK_E2BIG);
  sk_metrics_free(m);
}

static void test_histogram_exact(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_mfamily_t *f;
  const char *labels[] = {"route"};
  const double b[] = {0.1, 0.5, 1};
  assert_int_equal(sk_metrics_histogram_family(m, "req_seconds", "Request latency.", labels, 1, b, 3, &f), 0);
  sk_histogram_t *h;
  assert_int_equal(sk_histogram_with(f, (const char *[]){"/api"}, &h), 0);
  sk_histogram_observe(h, 0.05);
  sk_histogram_observe(h, 0.1); /* le is inclusive */
  sk_histogram_observe(h, 0.7);
  sk_histogram_observe(h, 3);
  sk_histogram_observe(h, NAN); /* ignored */
  assert_int_equal(sk_histogram_count(h), 4);
  assert_true(fabs(sk_histogram_sum(h) - 3.85) < 1e-9);
  sk_histogram_t *u;
  assert_int_equal(sk_metrics_histogram(m, "plain_seconds", "Defaults.", NULL, 0, &u), 0);
  sk_histogram_observe(u, 0.3);
  expect_render(m,
                "# HELP plain_seconds Defaults.\n"
                "# TYPE plain_seconds histogram\n"
                "plain_seconds_bucket{le=\"0.005\"} 0\n"
                "plain_seconds_bucket{le=\"0.01\"} 0\n"
                "plain_seconds_bucket{le=\"0.025\"} 0\n"
                "plain_seconds_bucket{le=\"0.05\"} 0\n"
                "plain_seconds_bucket{le=\"0.1\"} 0\n"
                "plain_seconds_bucket{le=\"0.25\"} 0\n"
                "plain_seconds_bucket{le=\"0.5\"} 1\n"
                "plain_seconds_bucket{le=\"1\"} 1\n"
                "plain_seconds_bucket{le=\"2.5\"} 1\n"
                "plain_seconds_bucket{le=\"5\"} 1\n"
                "plain_seconds_bucket{le=\"10\"} 1\n"
                "plain_seconds_bucket{le=\"+Inf\"} 1\n"
                "plain_seconds_sum 0.3\n"
                "plain_seconds_count 1\n"
                "# HELP req_seconds Request latency.\n"
                "# TYPE req_seconds histogram\n"
                "req_seconds_bucket{route=\"/api\",le=\"0.1\"} 2\n"
                "req_seconds_bucket{route=\"/api\",le=\"0.5\"} 2\n"
                "req_seconds_bucket{route=\"/api\",le=\"1\"} 3\n"
                "req_seconds_bucket{route=\"/api\",le=\"+Inf\"} 4\n"
                "req_seconds_sum{route=\"/api\"} 3.85\n"
                "req_seconds_count{route=\"/api\"} 4\n"
                );
  sk_metrics_free(m);
}

static void test_histogram_labels_in_sum(void **state) {
  /* _sum and _count carry the child's labels */
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_mfamily_t *f;
  const double b[] = {1};
  assert_int_equal(sk_metrics_histogram_family(m, "h", "", (const char *[]){"a"}, 1, b, 1, &f), 0);
  sk_histogram_t *h;
  assert_int_equal(sk_histogram_with(f, (const char *[]){"x"}, &h), 0);
  sk_histogram_observe(h, 2);
  expect_render(m,
                "# HELP h \n"
                "# TYPE h histogram\n"
                "h_bucket{a=\"x\",le=\"1\"} 0\n"
                "h_bucket{a=\"x\",le=\"+Inf\"} 1\n"
                "h_sum{a=\"x\"} 2\n"
                "h_count{a=\"x\"} 1\n");
  sk_metrics_free(m);
}

static void test_cardinality_limit(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_mfamily_t *f;
  assert_int_equal(sk_metrics_counter_family(m, "by_user_total", "x", (const char *[]){"user"}, 1, &f), 0);
  assert_int_equal(sk_mfamily_set_max_children(f, 3), 0);
  assert_int_equal(sk_mfamily_set_max_children(f, 0), SK_EINVAL);
  sk_counter_t *c;
  char v[16];
  for (int i = 0; i < 3; i++) {
    snprintf(v, sizeof v, "u%d", i);
    assert_int_equal(sk_counter_with(f, (const char *[]){v}, &c), 0);
    sk_counter_inc(c);
  }
  assert_int_equal(sk_counter_with(f, (const char *[]){"u3"}, &c), SK_ELIMIT);
  assert_null(c);
  sk_counter_inc(c); /* harmless on NULL */
  /* existing children are still reachable */
  assert_int_equal(sk_counter_with(f, (const char *[]){"u1"}, &c), 0);
  assert_int_equal(sk_mfamily_child_count(f), 3);
  /* default cap */
  sk_mfamily_t *g;
  assert_int_equal(sk_metrics_gauge_family(m, "many", "x", (const char *[]){"k"}, 1, &g), 0);
  int rc = 0, n;
  for (n = 0; n < SK_METRICS_DEFAULT_MAX_CHILDREN + 5; n++) {
    snprintf(v, sizeof v, "%d", n);
    sk_gauge_t *gg;
    rc = sk_gauge_with(g, (const char *[]){v}, &gg);
    if (rc < 0) break;
  }
  assert_int_equal(rc, SK_ELIMIT);
  assert_int_equal(n, SK_METRICS_DEFAULT_MAX_CHILDREN);
  sk_metrics_free(m);
}

static void test_name_validation(void **state) {
  assert_true(sk_metrics_valid_name("a"));
  assert_true(sk_metrics_valid_name("job:rate5m"));
  assert_true(sk_metrics_valid_name("_x9"));
  assert_false(sk_metrics_valid_name(""));
  assert_false(sk_metrics_valid_name("9abc"));
  assert_false(sk_metrics_valid_name("a-b"));
  assert_false(sk_metrics_valid_name("a b"));
  assert_false(sk_metrics_valid_name("caf\xc3\xa9"));
  assert_false(sk_metrics_valid_name(NULL));
  assert_true(sk_metrics_valid_label("code"));
  assert_false(sk_metrics_valid_label("__name__"));
  assert_false(sk_metrics_valid_label("a:b"));
  assert_false(sk_metrics_valid_label("1a"));

  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_mfamily_t *f;
  sk_counter_t *c;
  assert_int_equal(sk_metrics_counter(m, "bad-name", "x", &c), SK_EINVAL);
  assert_null(c);
  assert_int_equal(sk_metrics_counter_family(m, "ok", "x", (const char *[]){"bad label"}, 1, &f), SK_EINVAL);
  assert_int_equal(sk_metrics_counter_family(m, "ok", "x", (const char *[]){"a", "a"}, 2, &f), SK_EINVAL);
  assert_int_equal(sk_metrics_counter_family(m, "ok", "x", (const char *[]){"__x"}, 1, &f), SK_EINVAL);
  assert_int_equal(sk_metrics_histogram_family(m, "h", "x", (const char *[]){"le"}, 1, NULL, 0, &f), SK_EINVAL);
  const double unsorted[] = {1, 0.5};
  assert_int_equal(sk_metrics_histogram_family(m, "h", "x", NULL, 0, unsorted, 2, &f), SK_EINVAL);
  const double inf[] = {1, INFINITY};
  assert_int_equal(sk_metrics_histogram_family(m, "h", "x", NULL, 0, inf, 2, &f), SK_EINVAL);
  const char *nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  assert_int_equal(sk_metrics_counter_family(m, "ok", "x", nine, 9, &f), SK_ELIMIT);

  /* same shape again returns the same family; a different shape is EEXIST */
  sk_mfamily_t *f1, *f2;
  assert_int_equal(sk_metrics_counter_family(m, "shared_total", "x", (const char *[]){"a"}, 1, &f1), 0);
  assert_int_equal(sk_metrics_counter_family(m, "shared_total", "x", (const char *[]){"a"}, 1, &f2), 0);
  assert_ptr_equal(f1, f2);
  assert_int_equal(sk_metrics_gauge_family(m, "shared_total", "x", (const char *[]){"a"}, 1, &f2), SK_EEXIST);
  assert_int_equal(sk_metrics_counter_family(m, "shared_total", "x", (const char *[]){"b"}, 1, &f2), SK_EEXIST);
  /* wrong child type */
  sk_gauge_t *g;
  assert_int_equal(sk_gauge_with(f1, (const char *[]){"v"}, &g), SK_EINVAL);
  sk_metrics_free(m);
}

static void test_format_value(void **state) {
  struct {
    double v;
    const char *s;
  } cases[] = {
      {0, "0"}, {-0.0, "0"}, {1, "1"}, {-7, "-7"}, {0.1, "0.1"}, {1.0 / 3, "0.3333333333333333"},
      {123456789012, "123456789012"}, {1e300, "1e+300"}, {2.5e-7, "2.5e-07"},
      {INFINITY, "+Inf"}, {-INFINITY, "-Inf"}, {NAN, "NaN"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sk_buf_t b;
    sk_buf_init(&b);
    sk_metrics_format_value(&b, cases[i].v);
    assert_string_equal(sk_buf_cstr(&b), cases[i].s);
    sk_buf_done(&b);
  }
}

static void collect_hook(sk_metrics_t *m, void *ud) { sk_gauge_set(ud, 42); }

static void test_process_and_hooks(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  assert_int_equal(sk_metrics_add_process(m, "skiff-test"), 0);
  assert_int_equal(sk_metrics_add_process(m, "skiff-test"), 0); /* idempotent */
  sk_gauge_t *g;
  assert_int_equal(sk_metrics_gauge(m, "hooked", "x", &g), 0);
  assert_int_equal(sk_metrics_on_collect(m, collect_hook, g), 0);
  char *s = render(m);
  assert_non_null(strstr(s, "# TYPE process_cpu_seconds_total counter\n"));
  assert_non_null(strstr(s, "# TYPE process_start_time_seconds gauge\n"));
  assert_non_null(strstr(s, "skiff_build_info{daemon=\"skiff-test\",version=\"" SKIFF_VERSION "\"} 1\n"));
  assert_non_null(strstr(s, "hooked 42\n"));
  /* values are real: resident memory and open fds are positive, start time recent */
  char *p = strstr(s, "\nprocess_resident_memory_bytes ");
  assert_non_null(p);
  assert_true(strtod(p + strlen("\nprocess_resident_memory_bytes "), NULL) > 1e5);
  p = strstr(s, "\nprocess_open_fds ");
  assert_non_null(p);
  assert_true(strtod(p + strlen("\nprocess_open_fds "), NULL) >= 3);
  p = strstr(s, "\nprocess_start_time_seconds ");
  assert_non_null(p);
  assert_true(strtod(p + strlen("\nprocess_start_time_seconds "), NULL) > 1.6e9);
  /* sorted: every family name is >= the one before */
  char prev[256] = "";
  for (char *line = s; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    char name[256];
    if (sscanf(line, "# TYPE %255s", name) == 1) {
      assert_true(strcmp(prev, name) < 0);
      strcpy(prev, name);
    }
  }
  free(s);
  sk_metrics_free(m);
  assert_non_null(sk_metrics_default());
  assert_ptr_equal(sk_metrics_default(), sk_metrics_default());
}

/* Concurrent updates from several threads lose nothing. */
struct thr_arg {
  sk_counter_t *c;
  sk_histogram_t *h;
  sk_mfamily_t *f;
};

static void thr_main(void *p) {
  struct thr_arg *a = p;
  for (int i = 0; i < 20000; i++) {
    sk_counter_inc(a->c);
    sk_histogram_observe(a->h, (i % 3) * 0.5);
    if (i % 100 == 0) {
      char v[16];
      snprintf(v, sizeof v, "%d", i % 700);
      sk_counter_t *c;
      sk_counter_with(a->f, (const char *[]){v}, &c);
      sk_counter_inc(c);
    }
  }
}

static void test_threads(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  struct thr_arg a;
  assert_int_equal(sk_metrics_counter(m, "c_total", "x", &a.c), 0);
  assert_int_equal(sk_metrics_histogram(m, "h", "x", (const double[]){0.5}, 1, &a.h), 0);
  assert_int_equal(sk_metrics_counter_family(m, "f_total", "x", (const char *[]){"k"}, 1, &a.f), 0);
  uv_thread_t t[4];
  for (int i = 0; i < 4; i++) uv_thread_create(&t[i], thr_main, &a);
  for (int i = 0; i < 20; i++) free(render(m)); /* rendering alongside the writers */
  for (int i = 0; i < 4; i++) uv_thread_join(&t[i]);
  assert_true(sk_counter_value(a.c) == 80000);
  assert_int_equal(sk_histogram_count(a.h), 80000);
  assert_int_equal(sk_mfamily_child_count(a.f), 7);
  sk_metrics_free(m);
}

static void test_remove(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  sk_mfamily_t *f, *h;
  assert_int_equal(sk_metrics_counter_family(m, "rq_total", "x", (const char *[]){"ep"}, 1, &f), 0);
  assert_int_equal(sk_metrics_histogram_family(m, "d", "x", (const char *[]){"ep"}, 1, (const double[]){1}, 1, &h), 0);
  assert_int_equal(sk_mfamily_set_max_children(f, 2), 0);
  sk_counter_t *a, *b, *c;
  sk_histogram_t *ha;
  assert_int_equal(sk_counter_with(f, (const char *[]){"a"}, &a), 0);
  assert_int_equal(sk_counter_with(f, (const char *[]){"b"}, &b), 0);
  assert_int_equal(sk_histogram_with(h, (const char *[]){"a"}, &ha), 0);
  sk_counter_add(a, 3);
  sk_counter_add(b, 5);
  sk_histogram_observe(ha, 0.5);
  assert_int_equal(sk_counter_with(f, (const char *[]){"c"}, &c), SK_ELIMIT);
  assert_int_equal(sk_mfamily_remove(f, (const char *[]){"a"}), 0);
  assert_int_equal(sk_mfamily_remove(h, (const char *[]){"a"}), 0);
  assert_int_equal(sk_mfamily_remove(f, (const char *[]){"a"}), SK_ENOTFOUND);
  assert_int_equal(sk_mfamily_remove(f, (const char *[]){"zz"}), SK_ENOTFOUND);
  assert_int_equal(sk_mfamily_child_count(f), 1);
  expect_render(m, "# HELP rq_total x\n# TYPE rq_total counter\nrq_total{ep=\"b\"} 5\n");
  /* the freed slot takes a new child; the old one comes back at zero */
  assert_int_equal(sk_counter_with(f, (const char *[]){"a"}, &a), 0);
  assert_true(sk_counter_value(a) == 0);
  assert_int_equal(sk_counter_with(f, (const char *[]){"c"}, &c), SK_ELIMIT);
  /* unlabelled families have one child for good */
  sk_counter_t *u;
  assert_int_equal(sk_metrics_counter(m, "u_total", "x", &u), 0);
  sk_mfamily_t *uf;
  assert_int_equal(sk_metrics_counter_family(m, "u_total", "x", NULL, 0, &uf), 0);
  assert_int_equal(sk_mfamily_remove(uf, NULL), SK_EINVAL);
  assert_int_equal(sk_mfamily_remove(NULL, (const char *[]){"a"}), SK_EINVAL);
  sk_metrics_free(m);
}

struct churn_arg {
  sk_mfamily_t *f;
  int id; /* each thread its own children: only their user may remove them */
  int *stop;
};

static void churn_main(void *p) {
  struct churn_arg *a = p;
  char v[16];
  for (int i = 0; i < 20000 && !__atomic_load_n(a->stop, __ATOMIC_ACQUIRE); i++) {
    snprintf(v, sizeof v, "t%d-e%d", a->id, i % 25);
    sk_histogram_t *h;
    if (sk_histogram_with(a->f, (const char *[]){v}, &h) == 0) sk_histogram_observe(h, 0.1);
    snprintf(v, sizeof v, "t%d-e%d", a->id, (i + 12) % 25);
    sk_mfamily_remove(a->f, (const char *[]){v});
  }
}

/* Children come and go while renders read them (run under ASan / TSan). */
static void test_remove_while_rendering(void **state) {
  sk_metrics_t *m;
  assert_int_equal(sk_metrics_new(&m), 0);
  int stop = 0;
  sk_mfamily_t *f;
  assert_int_equal(sk_metrics_histogram_family(m, "h", "x", (const char *[]){"ep"}, 1, NULL, 0, &f), 0);
  struct churn_arg a[2] = {{f, 0, &stop}, {f, 1, &stop}};
  uv_thread_t t[2];
  for (int i = 0; i < 2; i++) uv_thread_create(&t[i], churn_main, &a[i]);
  for (int i = 0; i < 200; i++) free(render(m));
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  for (int i = 0; i < 2; i++) uv_thread_join(&t[i]);
  assert_true(sk_mfamily_child_count(f) <= 50);
  sk_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_counter_gauge_exact),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_histogram_exact),
      cmocka_unit_test(test_histogram_labels_in_sum),
      cmocka_unit_test(test_cardinality_limit),
      cmocka_unit_test(test_name_validation),
      cmocka_unit_test(test_format_value),
      cmocka_unit_test(test_process_and_hooks),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_remove),
      cmocka_unit_test(test_remove_while_rendering),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
