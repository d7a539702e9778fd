/* Unit tests: skiff-proxy resilience modules (retry, breaker, outlier,
 * health check schedule, rate limit, fault injection) with injected time
 * and a seeded RNG, so every result is exact. */
#include "sk_test.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "px_resil.h"
#include "skiff/err.h"

#define S(x) ((uint64_t)(x) * UINT64_C(1000000000))
#define MS(x) ((uint64_t)(x) * PX_MS)
#define T0 S(1000) /* an arbitrary origin, like uv_hrtime() */

static json_t *js(const char *text) {
  json_error_t e;
  json_t *j = json_loads(text, 0, &e);
  if (!j) fail_msg("bad test json: %s: %s", text, e.text);
  return j;
}

/* parses text with fn and expects SK_ECONFIG with exactly `want` */
#define EXPECT_ERR(fn, cfgtype, path, text, want)                                          \
  do {                                                                                     \
    json_t *j_ = js(text);                                                                 \
    cfgtype c_;                                                                            \
    char e_[256] = "";                                                                     \
    assert_int_equal(fn(j_, path, &c_, e_, sizeof e_), SK_ECONFIG);                        \
    assert_string_equal(e_, want);                                                         \
    json_decref(j_);                                                                       \
  } while (0)

/* ---- rng ---- */

static void test_rng(void **state) {
  px_rng_t a, b;
  px_rng_seed(&a, 42);
  px_rng_seed(&b, 42);
  for (int i = 0; i < 1000; i++) assert_true(px_rng_next(&a) == px_rng_next(&b));
  px_rng_seed(&b, 43);
  assert_true(px_rng_next(&a) != px_rng_next(&b));
  px_rng_seed(&a, 0); /* zero seed still yields a moving stream */
  uint64_t x = px_rng_next(&a);
  assert_true(x != px_rng_next(&a));
  uint64_t hist[10] = {0};
  for (int i = 0; i < 100000; i++) {
    uint64_t v = px_rng_below(&a, 10);
    assert_true(v < 10);
    hist[v]++;
  }
  for (int i = 0; i < 10; i++) assert_true(hist[i] > 9500 && hist[i] < 10500);
  assert_int_equal(px_rng_below(&a, 0), 0);
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(px_rng_chance(&a, 0), 0);
    assert_int_equal(px_rng_chance(&a, PX_PPM_ALL), 1);
  }
}

/* ---- shared config readers ---- */

static void test_conf_readers(void **state) {
  json_t *j = js("{\"a\":\"1s500ms\",\"b\":250,\"c\":\"soon\",\"d\":-1,\"p\":\"12.5%\",\"q\":100.5,"
                 "\"u\":7,\"r\":7.5,\"s\":\"x\",\"n\":null}");
  char err[256];
  uint64_t ms = 99, u = 0;
  uint32_t ppm = 0;
  assert_int_equal(px_conf_duration(j, "x", "a", &ms, err, sizeof err), 0);
  assert_true(ms == 1500);
  assert_int_equal(px_conf_duration(j, "x", "b", &ms, err, sizeof err), 0);
  assert_true(ms == 250);
  assert_int_equal(px_conf_duration(j, "x", "missing", &ms, err, sizeof err), 1);
  assert_int_equal(px_conf_duration(j, "x", "n", &ms, err, sizeof err), 1);
  assert_true(ms == 250);
  assert_int_equal(px_conf_duration(j, "x", "c", &ms, err, sizeof err), SK_ECONFIG);
  assert_string_equal(err, "x.c: expected a duration like 250ms");
  assert_int_equal(px_conf_duration(j, "x", "d", &ms, err, sizeof err), SK_ECONFIG);
  assert_int_equal(px_conf_percent(j, "x", "p", &ppm, err, sizeof err), 0);
  assert_int_equal(ppm, 125000);
  assert_int_equal(px_conf_percent(j, "x", "q", &ppm, err, sizeof err), SK_ECONFIG);
  assert_string_equal(err, "x.q: expected a percentage between 0 and 100");
  assert_int_equal(px_conf_uint(j, "x", "u", 1, 10, &u, err, sizeof err), 0);
  assert_true(u == 7);
  assert_int_equal(px_conf_uint(j, "x", "u", 8, 10, &u, err, sizeof err), SK_ECONFIG);
  assert_string_equal(err, "x.u: 7 is out of range [8, 10]");
  assert_int_equal(px_conf_uint(j, "x", "r", 1, 10, &u, err, sizeof err), SK_ECONFIG);
  assert_int_equal(px_conf_uint(j, "x", "s", 1, 10, &u, err, sizeof err), SK_ECONFIG);
  static const char *const known[] = {"a", "b", NULL};
  assert_int_equal(px_conf_keys(j, "routes[0]", known, err, sizeof err), SK_ECONFIG);
  assert_non_null(strstr(err, ": unknown key"));
  assert_int_equal(strncmp(err, "routes[0].", 10), 0);
  json_t *arr = js("[1]");
  assert_int_equal(px_conf_keys(arr, "routes[0].retry", known, err, sizeof err), SK_ECONFIG);
  assert_string_equal(err, "routes[0].retry: expected an object");
  json_decref(arr);
  json_decref(j);

  assert_int_equal(px_outcome_from_err(SK_ECONNREFUSED, 0), PX_OUT_CONNECT_FAILURE);
  assert_int_equal(px_outcome_from_err(SK_ETIMEDOUT, 0), PX_OUT_CONNECT_FAILURE);
  assert_int_equal(px_outcome_from_err(SK_ETIMEDOUT, 1), PX_OUT_TIMEOUT);
  assert_int_equal(px_outcome_from_err(SK_ECONNRESET, 1), PX_OUT_RESET);
  assert_string_equal(px_outcome_name(PX_OUT_RESET), "reset");
}

/* ---- retry ---- */

static void test_retry_config(void **state) {
  px_retry_config_t c;
  char err[256];
  assert_int_equal(px_retry_config_parse(NULL, "routes[0].retry", &c, err, sizeof err), 0);
  assert_int_equal(c.enabled, 0);
  assert_int_equal(c.attempts, 1);
  assert_int_equal(c.budget_percent, 20);
  assert_int_equal(c.budget_min_concurrency, 3);

  json_t *j = js("{}");
  assert_int_equal(px_retry_config_parse(j, "r", &c, err, sizeof err), 0);
  assert_int_equal(c.enabled, 1);
  assert_int_equal(c.attempts, 2);
  assert_true(c.retry_on ==
              (PX_RETRY_ON_GATEWAY_ERROR | PX_RETRY_ON_CONNECT_FAILURE | PX_RETRY_ON_RESET));
  assert_true(c.backoff_base_ms == 25 && c.backoff_max_ms == 250);
  assert_true(c.per_try_timeout_ms == 0);
  json_decref(j);

  j = js("{\"attempts\":4,\"retry_on\":[\"5xx\",\"reset\"],\"retriable_status_codes\":[409],"
         "\"per_try_timeout\":\"250ms\",\"backoff\":{\"base\":\"10ms\"},"
         "\"budget\":{\"percent\":50,\"min_concurrency\":1}}");
  assert_int_equal(px_retry_config_parse(j, "r", &c, err, sizeof err), 0);
  assert_int_equal(c.attempts, 4);
  assert_true(c.retry_on == (PX_RETRY_ON_5XX | PX_RETRY_ON_RESET | PX_RETRY_ON_RETRIABLE_STATUS));
  assert_int_equal(c.nstatuses, 1);
  assert_int_equal(c.statuses[0], 409);
  assert_true(c.per_try_timeout_ms == 250);
  assert_true(c.backoff_base_ms == 10 && c.backoff_max_ms == 100);
  assert_int_equal(c.budget_percent, 50);
  assert_int_equal(c.budget_min_concurrency, 1);
  json_decref(j);

  j = js("{\"retry_on\":\"connect-failure, timeout\"}");
  assert_int_equal(px_retry_config_parse(j, "r", &c, err, sizeof err), 0);
  assert_true(c.retry_on == (PX_RETRY_ON_CONNECT_FAILURE | PX_RETRY_ON_TIMEOUT));
  json_decref(j);

  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[2].retry", "{\"per_try_timeout\":\"fast\"}",
             "routes[2].retry.per_try_timeout: expected a duration like 250ms");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[2].retry", "{\"atempts\":3}",
             "routes[2].retry.atempts: unknown key");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[2].retry", "{\"attempts\":11}",
             "routes[2].retry.attempts: 11 is out of range [1, 10]");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[0].retry",
             "{\"retry_on\":[\"5xx\",\"sometimes\"]}",
             "routes[0].retry.retry_on[1]: expected a list of 5xx, gateway-error, reset, "
             "connect-failure, retriable-status-codes, timeout");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[0].retry",
             "{\"retriable_status_codes\":[409,700]}",
             "routes[0].retry.retriable_status_codes[1]: expected a status code 100..599");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[0].retry",
             "{\"backoff\":{\"base\":\"1s\",\"max\":\"10ms\"}}",
             "routes[0].retry.backoff.max: must not be less than base");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[0].retry",
             "{\"budget\":{\"percent\":150}}",
             "routes[0].retry.budget.percent: expected a percentage between 0 and 100");
  EXPECT_ERR(px_retry_config_parse, px_retry_config_t, "routes[0].retry", "{\"backoff\":{\"jitter\":1}}",
             "routes[0].retry.backoff.jitter: unknown key");
}

static void test_retry_should(void **state) {
  px_retry_config_t c;
  json_t *j = js("{\"attempts\":3}");
  char err[256];
  assert_int_equal(px_retry_config_parse(j, "r", &c, err, sizeof err), 0);
  json_decref(j);
  px_retry_budget_t b = {0};
  px_budget_request_start(&b);
  /* default retry_on: gateway-error, connect-failure, reset */
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 200, &b), PX_RETRY_NO);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 500, &b), PX_RETRY_NO);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 404, &b), PX_RETRY_NO);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &b), PX_RETRY_YES);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 502, &b), PX_RETRY_YES);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_CONNECT_FAILURE, 0, &b), PX_RETRY_YES);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESET, 0, &b), PX_RETRY_YES);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_TIMEOUT, 0, &b), PX_RETRY_YES);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_LOCAL, 0, &b), PX_RETRY_NO);
  assert_int_equal(px_retry_should(&c, 2, PX_OUT_RESPONSE, 503, &b), PX_RETRY_YES);
  assert_int_equal(px_retry_should(&c, 3, PX_OUT_RESPONSE, 503, &b), PX_RETRY_EXHAUSTED);
  assert_int_equal(px_retry_should(&c, 3, PX_OUT_RESPONSE, 200, &b), PX_RETRY_NO);
  assert_string_equal(px_retry_decision_name(PX_RETRY_BUDGET), "budget");

  c.retry_on = PX_RETRY_ON_5XX;
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESPONSE, 500), 1);
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESPONSE, 599), 1);
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESPONSE, 429), 0);
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESET, 0), 1);
  c.retry_on = PX_RETRY_ON_RESET;
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESPONSE, 503), 0);
  assert_int_equal(px_retry_retriable(&c, PX_OUT_CONNECT_FAILURE, 0), 0);
  assert_int_equal(px_retry_retriable(&c, PX_OUT_TIMEOUT, 0), 0);
  c.retry_on = PX_RETRY_ON_RETRIABLE_STATUS;
  c.statuses[0] = 429;
  c.nstatuses = 1;
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESPONSE, 429), 1);
  assert_int_equal(px_retry_retriable(&c, PX_OUT_RESPONSE, 503), 0);
}

static void test_retry_budget(void **state) {
  px_retry_config_t c;
  px_retry_config_default(&c);
  c.enabled = 1;
  c.attempts = 5;
  c.budget_percent = 20;
  c.budget_min_concurrency = 0;
  px_retry_budget_t b = {0};
  for (int i = 0; i < 10; i++) px_budget_request_start(&b);
  assert_int_equal(px_budget_limit(&c, &b), 2);
  /* retries in flight may reach 20% of the 10 active requests, no more */
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &b), PX_RETRY_YES);
  px_budget_retry_start(&b);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &b), PX_RETRY_YES);
  px_budget_retry_start(&b);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &b), PX_RETRY_BUDGET);
  /* non-retriable outcomes are NO, not BUDGET */
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 200, &b), PX_RETRY_NO);
  px_budget_retry_end(&b);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &b), PX_RETRY_YES);
  /* more traffic raises the limit */
  for (int i = 0; i < 10; i++) px_budget_request_start(&b);
  assert_int_equal(px_budget_limit(&c, &b), 4);
  /* min_concurrency is a floor when traffic is low */
  c.budget_min_concurrency = 3;
  px_retry_budget_t low = {.active_requests = 1, .active_retries = 2};
  assert_int_equal(px_budget_limit(&c, &low), 3);
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &low), PX_RETRY_YES);
  low.active_retries = 3;
  assert_int_equal(px_retry_should(&c, 1, PX_OUT_RESPONSE, 503, &low), PX_RETRY_BUDGET);
  /* counters never wrap below zero */
  px_retry_budget_t z = {0};
  px_budget_request_end(&z);
  px_budget_retry_end(&z);
  assert_int_equal(z.active_requests, 0);
  assert_int_equal(z.active_retries, 0);
}

static void test_retry_backoff(void **state) {
  px_retry_config_t c;
  px_retry_config_default(&c); /* base 25, max 250 */
  px_rng_t r;
  px_rng_seed(&r, 7);
  uint64_t caps[] = {0, 25, 50, 100, 200, 250, 250, 250};
  for (uint32_t a = 1; a < 8; a++) {
    uint64_t mx = 0;
    double sum = 0;
    for (int i = 0; i < 20000; i++) {
      uint64_t v = px_retry_backoff_ms(&c, a, &r);
      assert_true(v <= caps[a]);
      if (v > mx) mx = v;
      sum += (double)v;
    }
    /* full jitter: the whole range is used, mean near cap / 2 */
    assert_true(mx == caps[a]);
    double mean = sum / 20000;
    assert_true(fabs(mean - (double)caps[a] / 2) < (double)caps[a] * 0.05);
  }
  assert_true(px_retry_backoff_ms(&c, 0, &r) <= 25);
  assert_true(px_retry_backoff_ms(&c, 1000000, &r) <= 250);
  c.backoff_base_ms = 0;
  c.backoff_max_ms = 0;
  assert_true(px_retry_backoff_ms(&c, 3, &r) == 0);
}

/* ---- circuit breaker ---- */

static void test_breaker(void **state) {
  px_breaker_config_t c;
  char err[256];
  json_t *j = js("{\"max_requests\":2,\"max_pending_requests\":0}");
  assert_int_equal(px_breaker_config_parse(j, "clusters[1].circuit_breaker", &c, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(c.enabled, 1);
  assert_int_equal(c.max[PX_BRK_CONNECTIONS], 1024);
  assert_int_equal(c.max[PX_BRK_REQUESTS], 2);
  assert_int_equal(c.max[PX_BRK_PENDING], 0);
  assert_int_equal(c.max[PX_BRK_RETRIES], 3);
  px_breaker_t b;
  px_breaker_init(&b, &c);
  assert_int_equal(px_breaker_is_open(&b, PX_BRK_REQUESTS), 0);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_REQUESTS), 0);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_REQUESTS), 0);
  /* at the limit: open, further requests are refused and counted */
  assert_int_equal(px_breaker_is_open(&b, PX_BRK_REQUESTS), 1);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_REQUESTS), SK_ELIMIT);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_REQUESTS), SK_ELIMIT);
  assert_true(px_breaker_overflows(&b, PX_BRK_REQUESTS) == 2);
  assert_int_equal(px_breaker_current(&b, PX_BRK_REQUESTS), 2);
  /* a release closes it again */
  px_breaker_release(&b, PX_BRK_REQUESTS);
  assert_int_equal(px_breaker_is_open(&b, PX_BRK_REQUESTS), 0);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_REQUESTS), 0);
  px_breaker_release(&b, PX_BRK_REQUESTS);
  px_breaker_release(&b, PX_BRK_REQUESTS);
  px_breaker_release(&b, PX_BRK_REQUESTS); /* extra release does not wrap */
  assert_int_equal(px_breaker_current(&b, PX_BRK_REQUESTS), 0);
  /* 0 = unlimited */
  for (int i = 0; i < 5000; i++) assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_PENDING), 0);
  assert_int_equal(px_breaker_is_open(&b, PX_BRK_PENDING), 0);
  /* kinds are independent */
  for (int i = 0; i < 3; i++) assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_RETRIES), 0);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_RETRIES), SK_ELIMIT);
  assert_int_equal(px_breaker_try_acquire(&b, PX_BRK_CONNECTIONS), 0);
  assert_string_equal(px_brk_kind_name(PX_BRK_PENDING), "pending");
  assert_int_equal(px_breaker_try_acquire(&b, (px_brk_kind_t)9), SK_EINVAL);

  EXPECT_ERR(px_breaker_config_parse, px_breaker_config_t, "clusters[1].circuit_breaker",
             "{\"max_requests\":-1}",
             "clusters[1].circuit_breaker.max_requests: -1 is out of range [0, 100000000]");
  EXPECT_ERR(px_breaker_config_parse, px_breaker_config_t, "clusters[1].circuit_breaker",
             "{\"max_request\":1}", "clusters[1].circuit_breaker.max_request: unknown key");
}

typedef struct brk_thread_arg {
  px_breaker_t *b;
  int got;
} brk_thread_arg_t;

static void brk_thread(void *p) {
  brk_thread_arg_t *a = p;
  for (int i = 0; i < 200000; i++) {
    if (px_breaker_try_acquire(a->b, PX_BRK_REQUESTS) == 0) {
      a->got++;
      assert_true(px_breaker_current(a->b, PX_BRK_REQUESTS) <= 3);
      px_breaker_release(a->b, PX_BRK_REQUESTS);
    }
  }
}

/* a breaker shared by two threads never goes past its limit */
static void test_breaker_shared(void **state) {
  px_breaker_config_t c;
  px_breaker_config_default(&c);
  c.max[PX_BRK_REQUESTS] = 3;
  px_breaker_t b;
  px_breaker_init(&b, &c);
  brk_thread_arg_t a1 = {&b, 0}, a2 = {&b, 0};
  uv_thread_t t1, t2;
  assert_int_equal(uv_thread_create(&t1, brk_thread, &a1), 0);
  assert_int_equal(uv_thread_create(&t2, brk_thread, &a2), 0);
  uv_thread_join(&t1);
  uv_thread_join(&t2);
  assert_int_equal(px_breaker_current(&b, PX_BRK_REQUESTS), 0);
  assert_true(a1.got > 0 && a2.got > 0);
}

/* ---- outlier detection ---- */

static px_outlier_t outlier_new(const char *text, size_t n) {
  px_outlier_config_t c;
  char err[256];
  json_t *j = js(text);
  assert_int_equal(px_outlier_config_parse(j, "clusters[0].outlier_detection", &c, err, sizeof err), 0);
  json_decref(j);
  px_outlier_t o;
  assert_int_equal(px_outlier_init(&o, &c, n), 0);
  return o;
}

static void test_outlier_eject_and_return(void **state) {
  px_outlier_t o = outlier_new("{\"consecutive_5xx\":3,\"base_ejection_time\":\"10s\","
                               "\"interval\":\"5s\",\"max_ejection_percent\":50}",
                               4);
  uint64_t t = T0;
  /* a success in between resets the run */
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 503, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 200, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESET, 0, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t), 0);
  /* 4xx is not a server error; local outcomes are ignored */
  assert_int_equal(px_outlier_on_result(&o, 1, PX_OUT_RESPONSE, 404, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_LOCAL, 0, t), PX_OUTLIER_NONE);
  /* third in a row */
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_CONNECT_FAILURE, 0, t), PX_OUTLIER_EJECTED);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t), 1);
  assert_int_equal(px_outlier_ejected_count(&o), 1);
  assert_int_equal(px_outlier_is_ejected(&o, 1, t), 0);
  /* late results while ejected change nothing */
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, t + S(1)), PX_OUTLIER_NONE);
  /* first ejection: base (10s) */
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(10) - 1), 1);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(10)), 0);
  assert_int_equal(px_outlier_ejected_count(&o), 0);
  /* fails again at once: second ejection lasts 2 x base */
  t += S(10);
  for (int i = 0; i < 2; i++) assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 502, t), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 502, t), PX_OUTLIER_EJECTED);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(20) - 1), 1);
  /* the sweep brings it back */
  assert_int_equal(px_outlier_sweep(&o, t + S(19)), 0);
  assert_int_equal(px_outlier_sweep(&o, t + S(20)), 1);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(20)), 0);
  t += S(20);
  /* third time: 3 x base */
  for (int i = 0; i < 3; i++) px_outlier_on_result(&o, 0, PX_OUT_TIMEOUT, 0, t);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(30) - 1), 1);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(30)), 0);
  assert_true(o.ep[0].total_ejections == 3);
  assert_int_equal(o.ep[0].ejections, 3);
  t += S(30);
  /* healthy for two intervals (5s each): the multiplier decays by two */
  px_outlier_sweep(&o, t + S(10));
  assert_int_equal(o.ep[0].ejections, 1);
  t += S(10);
  for (int i = 0; i < 3; i++) px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, t);
  assert_int_equal(o.ep[0].ejections, 2);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(20) - 1), 1);
  assert_int_equal(px_outlier_is_ejected(&o, 0, t + S(20)), 0);
  px_outlier_done(&o);
  px_outlier_done(&o);
}

static void test_outlier_limits(void **state) {
  px_outlier_t o = outlier_new("{\"consecutive_5xx\":2,\"base_ejection_time\":\"10s\","
                               "\"max_ejection_time\":\"25s\",\"max_ejection_percent\":50}",
                               4);
  uint64_t t = T0;
  /* 50% of 4 = 2 endpoints at most */
  for (size_t e = 0; e < 3; e++) px_outlier_on_result(&o, e, PX_OUT_RESPONSE, 500, t);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_EJECTED);
  assert_int_equal(px_outlier_on_result(&o, 1, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_EJECTED);
  assert_int_equal(px_outlier_on_result(&o, 2, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_SUPPRESSED);
  assert_int_equal(px_outlier_is_ejected(&o, 2, t), 0);
  assert_int_equal(px_outlier_ejected_count(&o), 2);
  /* once one returns there is room again */
  t += S(10);
  px_outlier_on_result(&o, 2, PX_OUT_RESPONSE, 500, t);
  assert_int_equal(px_outlier_on_result(&o, 2, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_EJECTED);
  assert_int_equal(px_outlier_ejected_count(&o), 1);
  /* ejection time is capped by max_ejection_time */
  for (int k = 0; k < 5; k++) {
    px_outlier_on_result(&o, 3, PX_OUT_RESPONSE, 500, t);
    assert_int_equal(px_outlier_on_result(&o, 3, PX_OUT_RESPONSE, 500, t), PX_OUTLIER_EJECTED);
    uint64_t len = o.ep[3].ejected_until - t;
    uint64_t want = S(10) * (uint64_t)(k + 1);
    if (want > S(25)) want = S(25);
    assert_true(len == want);
    t += len;
    assert_int_equal(px_outlier_is_ejected(&o, 3, t), 0);
  }
  px_outlier_done(&o);

  /* 2 endpoints at 10%: never eject (strict percentage) */
  o = outlier_new("{\"consecutive_5xx\":1,\"max_ejection_percent\":10}", 2);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, T0), PX_OUTLIER_SUPPRESSED);
  px_outlier_done(&o);

  /* gateway errors: 500 does not count, 502/503/504 and transport errors do */
  o = outlier_new("{\"consecutive_5xx\":0,\"consecutive_gateway_errors\":3}", 2);
  px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 503, T0);
  px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, T0);
  px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 504, T0);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 502, T0), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_CONNECT_FAILURE, 0, T0), PX_OUTLIER_EJECTED);
  assert_true(o.ep[0].ejected_until == T0 + S(30)); /* default base */
  px_outlier_done(&o);

  /* disabled (section absent): nothing is ever ejected */
  px_outlier_config_t c;
  char err[256];
  assert_int_equal(px_outlier_config_parse(NULL, "x", &c, err, sizeof err), 0);
  assert_int_equal(px_outlier_init(&o, &c, 2), 0);
  for (int i = 0; i < 20; i++) assert_int_equal(px_outlier_on_result(&o, 0, PX_OUT_RESPONSE, 500, T0), PX_OUTLIER_NONE);
  assert_int_equal(px_outlier_is_ejected(&o, 0, T0), 0);
  px_outlier_done(&o);

  EXPECT_ERR(px_outlier_config_parse, px_outlier_config_t, "clusters[3].outlier_detection",
             "{\"base_ejection_time\":true}",
             "clusters[3].outlier_detection.base_ejection_time: expected a duration like 250ms");
  EXPECT_ERR(px_outlier_config_parse, px_outlier_config_t, "clusters[3].outlier_detection",
             "{\"max_ejection_percent\":101}",
             "clusters[3].outlier_detection.max_ejection_percent: 101 is out of range [0, 100]");
  EXPECT_ERR(px_outlier_config_parse, px_outlier_config_t, "clusters[3].outlier_detection",
             "{\"interval\":0}", "clusters[3].outlier_detection.interval: must be more than 0");
}

/* ---- health checks ---- */

static void test_hc_config(void **state) {
  px_hc_config_t c;
  char err[256];
  assert_int_equal(px_hc_config_parse(NULL, "x", &c, err, sizeof err), 0);
  assert_int_equal(c.enabled, 0);
  json_t *j = js("{}");
  assert_int_equal(px_hc_config_parse(j, "x", &c, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(c.enabled, 1);
  assert_string_equal(c.path, "/healthz");
  assert_true(c.interval_ms == 5000 && c.timeout_ms == 1000);
  assert_int_equal(c.healthy_threshold, 2);
  assert_int_equal(c.unhealthy_threshold, 3);
  assert_int_equal(px_hc_status_ok(&c, 200), 1);
  assert_int_equal(px_hc_status_ok(&c, 299), 1);
  assert_int_equal(px_hc_status_ok(&c, 301), 0);
  j = js("{\"path\":\"/readyz\",\"interval\":\"2s\",\"timeout\":500,\"healthy_threshold\":1,"
         "\"expected_statuses\":[204,\"300-302\"]}");
  assert_int_equal(px_hc_config_parse(j, "x", &c, err, sizeof err), 0);
  json_decref(j);
  assert_string_equal(c.path, "/readyz");
  assert_true(c.interval_ms == 2000 && c.timeout_ms == 500);
  assert_int_equal(px_hc_status_ok(&c, 204), 1);
  assert_int_equal(px_hc_status_ok(&c, 200), 0);
  assert_int_equal(px_hc_status_ok(&c, 301), 1);
  assert_int_equal(px_hc_status_ok(&c, 303), 0);
  EXPECT_ERR(px_hc_config_parse, px_hc_config_t, "clusters[0].health_check", "{\"path\":\"healthz\"}",
             "clusters[0].health_check.path: must start with /");
  EXPECT_ERR(px_hc_config_parse, px_hc_config_t, "clusters[0].health_check",
             "{\"expected_statuses\":[200,\"299-200\"]}",
             "clusters[0].health_check.expected_statuses[1]: expected a status like 200 or a range like \"200-299\"");
  EXPECT_ERR(px_hc_config_parse, px_hc_config_t, "clusters[0].health_check", "{\"unhealthy_threshold\":0}",
             "clusters[0].health_check.unhealthy_threshold: 0 is out of range [1, 1000]");
  EXPECT_ERR(px_hc_config_parse, px_hc_config_t, "clusters[0].health_check", "{\"interval\":\"often\"}",
             "clusters[0].health_check.interval: expected a duration like 250ms");
}

static void test_hc_schedule(void **state) {
  px_hc_config_t c;
  px_hc_config_default(&c);
  c.enabled = 1;
  c.interval_ms = 1000;
  px_rng_t rng;
  px_rng_seed(&rng, 1);
  px_hc_t h;
  uint64_t t = T0;
  assert_int_equal(px_hc_init(&h, &c, 3, t, &rng), 0);
  /* first probes are spread over one interval */
  for (size_t i = 0; i < 3; i++) {
    assert_true(h.ep[i].next_ns >= t && h.ep[i].next_ns < t + S(1));
    assert_int_equal(px_hc_is_healthy(&h, i), 1);
  }
  uint64_t first = px_hc_next_deadline(&h);
  assert_true(first < t + S(1));
  assert_int_equal(px_hc_due(&h, first - 1), -1);
  long i = px_hc_due(&h, first);
  assert_true(i >= 0);
  px_hc_probe_start(&h, (size_t)i, first);
  /* in flight: not due again, and not counted for the deadline */
  assert_true(px_hc_due(&h, first) != i);
  t += S(1);
  size_t started = 1;
  long k;
  while ((k = px_hc_due(&h, t)) >= 0) {
    px_hc_probe_start(&h, (size_t)k, t);
    started++;
  }
  assert_int_equal(started, 3);
  assert_true(px_hc_next_deadline(&h) == UINT64_MAX);
  /* results schedule the next probe one interval (+ up to 10%) later */
  for (size_t e = 0; e < 3; e++) assert_int_equal(px_hc_on_result(&h, e, 1, t, &rng), PX_HC_SAME);
  for (size_t e = 0; e < 3; e++) assert_true(h.ep[e].next_ns >= t + S(1) && h.ep[e].next_ns <= t + MS(1100));
  /* thresholds: 3 failures to go unhealthy, 2 successes to come back */
  assert_int_equal(px_hc_on_result(&h, 1, 0, t, NULL), PX_HC_SAME);
  assert_int_equal(px_hc_on_result(&h, 1, 0, t, NULL), PX_HC_SAME);
  assert_int_equal(px_hc_on_result(&h, 1, 1, t, NULL), PX_HC_SAME); /* run broken */
  assert_int_equal(px_hc_on_result(&h, 1, 0, t, NULL), PX_HC_SAME);
  assert_int_equal(px_hc_on_result(&h, 1, 0, t, NULL), PX_HC_SAME);
  assert_int_equal(px_hc_on_result(&h, 1, 0, t, NULL), PX_HC_BECAME_UNHEALTHY);
  assert_int_equal(px_hc_is_healthy(&h, 1), 0);
  assert_int_equal(px_hc_on_result(&h, 1, 0, t, NULL), PX_HC_SAME);
  assert_int_equal(px_hc_on_result(&h, 1, 1, t, NULL), PX_HC_SAME);
  assert_int_equal(px_hc_on_result(&h, 1, 1, t, NULL), PX_HC_BECAME_HEALTHY);
  assert_int_equal(px_hc_is_healthy(&h, 1), 1);
  assert_true(h.ep[1].next_ns == t + S(1)); /* no rng: no jitter */
  assert_true(h.ep[1].failures == 6);
  px_hc_done(&h);

  /* disabled: never due, always healthy */
  px_hc_config_default(&c);
  assert_int_equal(px_hc_init(&h, &c, 2, T0, NULL), 0);
  assert_int_equal(px_hc_due(&h, T0 + S(100)), -1);
  assert_true(px_hc_next_deadline(&h) == UINT64_MAX);
  assert_int_equal(px_hc_is_healthy(&h, 0), 1);
  px_hc_done(&h);
}

/* ---- rate limit ---- */

static void test_ratelimit_bucket(void **state) {
  px_ratelimit_config_t c;
  char err[256];
  json_t *j = js("{\"requests_per_unit\":10,\"burst\":5}");
  assert_int_equal(px_ratelimit_config_parse(j, "routes[0].rate_limit", &c, err, sizeof err), 0);
  json_decref(j);
  assert_true(c.unit_ms == 1000);
  px_ratelimit_t rl;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  uint64_t t = T0;
  uint32_t ra = 0;
  /* a full bucket of 5 */
  assert_true(fabs(px_ratelimit_tokens(&rl, "", t) - 5.0) < 1e-9);
  for (int i = 0; i < 5; i++) assert_int_equal(px_ratelimit_allow(&rl, "", t, &ra), 1);
  assert_true(fabs(px_ratelimit_tokens(&rl, "", t)) < 1e-9);
  assert_int_equal(px_ratelimit_allow(&rl, "", t, &ra), 0);
  assert_int_equal(ra, 1);
  /* refills at 10/s: one token per 100ms, fractions in between */
  assert_true(fabs(px_ratelimit_tokens(&rl, "", t + MS(250)) - 2.5) < 1e-9);
  assert_int_equal(px_ratelimit_allow(&rl, "", t + MS(99), &ra), 0);
  assert_int_equal(px_ratelimit_allow(&rl, "", t + MS(100), &ra), 1);
  assert_int_equal(px_ratelimit_allow(&rl, "", t + MS(100), &ra), 0);
  /* never more than burst, however long it rested */
  t += S(3600);
  assert_true(fabs(px_ratelimit_tokens(&rl, "", t) - 5.0) < 1e-9);
  int ok = 0;
  for (int i = 0; i < 20; i++) ok += px_ratelimit_allow(&rl, "", t, NULL);
  assert_int_equal(ok, 5);
  /* sustained rate over 10s at 1 request per ms: 5 + 10 * 10 */
  ok = 0;
  t += S(100);
  for (int ms = 0; ms < 10000; ms++) ok += px_ratelimit_allow(&rl, "", t + MS(ms), NULL);
  assert_int_equal(ok, 5 + 100 - 1); /* the last token arrives at exactly 10s */
  px_ratelimit_done(&rl);

  /* per minute: retry-after counts the whole wait */
  px_ratelimit_config_default(&c);
  c.enabled = 1;
  c.requests_per_unit = 2;
  c.burst = 1;
  c.unit_ms = 60000;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  assert_int_equal(px_ratelimit_allow(&rl, "", T0, &ra), 1);
  assert_int_equal(px_ratelimit_allow(&rl, "", T0, &ra), 0);
  assert_int_equal(ra, 30);
  assert_int_equal(px_ratelimit_allow(&rl, "", T0 + S(29) + MS(500), &ra), 0);
  assert_int_equal(ra, 1);
  assert_int_equal(px_ratelimit_allow(&rl, "", T0 + S(30), &ra), 1);
  px_ratelimit_done(&rl);

  /* disabled: everything passes */
  px_ratelimit_config_default(&c);
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  for (int i = 0; i < 100; i++) assert_int_equal(px_ratelimit_allow(&rl, "", T0, NULL), 1);
  px_ratelimit_done(&rl);
}

static void test_ratelimit_clients(void **state) {
  px_ratelimit_config_t c;
  char err[256];
  json_t *j = js("{\"requests_per_unit\":1,\"unit\":\"minute\",\"per_client\":\"header\","
                 "\"header\":\"x-api-key\",\"max_clients\":2}");
  assert_int_equal(px_ratelimit_config_parse(j, "r", &c, err, sizeof err), 0);
  json_decref(j);
  assert_true(c.burst == 1 && c.unit_ms == 60000);
  px_ratelimit_t rl;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  uint32_t ra;
  assert_int_equal(px_ratelimit_allow(&rl, "alice", T0, &ra), 1);
  assert_int_equal(px_ratelimit_allow(&rl, "alice", T0, &ra), 0);
  assert_int_equal(ra, 60);
  assert_int_equal(px_ratelimit_allow(&rl, "bob", T0, &ra), 1); /* own bucket */
  assert_int_equal(px_ratelimit_allow(&rl, "bob", T0, &ra), 0);
  assert_int_equal(rl.nclients, 2);
  /* touch alice so bob is the least recently used, then a third evicts bob */
  assert_int_equal(px_ratelimit_allow(&rl, "alice", T0 + S(1), &ra), 0);
  assert_int_equal(px_ratelimit_allow(&rl, "carol", T0 + S(1), &ra), 1);
  assert_int_equal(rl.nclients, 2);
  assert_true(rl.evictions == 1);
  assert_int_equal(px_ratelimit_allow(&rl, "alice", T0 + S(1), &ra), 0); /* kept */
  assert_int_equal(px_ratelimit_allow(&rl, "bob", T0 + S(2), &ra), 1);   /* forgotten: fresh */
  /* long keys are bounded */
  char big[2000];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = 0;
  assert_int_equal(px_ratelimit_allow(&rl, big, T0, &ra), 1);
  assert_int_equal(px_ratelimit_allow(&rl, big, T0, &ra), 0);
  px_ratelimit_done(&rl);

  /* the table grows with the clients and still finds every one of them */
  c.max_clients = 1000;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  assert_true(rl.nslots < 1000);
  char k[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof k, "client-%d", i);
    assert_int_equal(px_ratelimit_allow(&rl, k, T0, &ra), 1);
  }
  assert_true(rl.nslots >= 1000);
  assert_int_equal(rl.nclients, 1000);
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof k, "client-%d", i);
    assert_int_equal(px_ratelimit_allow(&rl, k, T0, &ra), 0);
  }
  assert_true(rl.evictions == 0);
  /* one more evicts the least recently seen (client-0), and only it */
  assert_int_equal(px_ratelimit_allow(&rl, "newcomer", T0, &ra), 1);
  assert_true(rl.evictions == 1);
  assert_int_equal(px_ratelimit_allow(&rl, "client-1", T0, &ra), 0);
  assert_int_equal(px_ratelimit_allow(&rl, "client-0", T0, &ra), 1);
  px_ratelimit_done(&rl);
  c.max_clients = 2;

  /* keys from a request */
  sk_pool_t *pool = sk_pool_new();
  sk_http_req_t req;
  memset(&req, 0, sizeof req);
  req.pool = pool;
  req.peer_addr = "10.1.2.3:5555";
  char buf[300];
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "");
  sk_http_headers_add(&req.headers, pool, "X-Api-Key", "k1");
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "k1");
  c.per_client = PX_RL_KEY_ADDRESS;
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "10.1.2.3");
  req.peer_addr = "[::1]:8080";
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "::1");
  c.per_client = PX_RL_KEY_SPIFFE;
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "::1"); /* no identity */
  req.peer_spiffe = "spiffe://skiff.local/region/r1/svc/a";
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "spiffe://skiff.local/region/r1/svc/a");
  c.per_client = PX_RL_KEY_NONE;
  assert_string_equal(px_ratelimit_key(&c, &req, buf, sizeof buf), "");
  sk_pool_free(pool);

  EXPECT_ERR(px_ratelimit_config_parse, px_ratelimit_config_t, "routes[4].rate_limit", "{\"unit\":\"second\"}",
             "routes[4].rate_limit.requests_per_unit: is required");
  EXPECT_ERR(px_ratelimit_config_parse, px_ratelimit_config_t, "routes[4].rate_limit",
             "{\"requests_per_unit\":5,\"unit\":\"day\"}",
             "routes[4].rate_limit.unit: expected second, minute or hour");
  EXPECT_ERR(px_ratelimit_config_parse, px_ratelimit_config_t, "routes[4].rate_limit",
             "{\"requests_per_unit\":5,\"per_client\":\"header\"}",
             "routes[4].rate_limit.header: is required when per_client is header");
  EXPECT_ERR(px_ratelimit_config_parse, px_ratelimit_config_t, "routes[4].rate_limit",
             "{\"requests_per_unit\":0}", "routes[4].rate_limit.requests_per_unit: 0 is out of range [1, 1000000000]");
  EXPECT_ERR(px_ratelimit_config_parse, px_ratelimit_config_t, "routes[4].rate_limit",
             "{\"requests_per_unit\":5,\"per_client\":\"header\",\"header\":\"bad header\"}",
             "routes[4].rate_limit.header: not a header name");
}

/* ---- fault injection ---- */

static void test_fault_percentages(void **state) {
  px_fault_config_t c;
  char err[256];
  json_t *j = js("{\"delay\":{\"percent\":10,\"fixed_delay\":\"200ms\"},"
                 "\"abort\":{\"percent\":5,\"status\":503}}");
  assert_int_equal(px_fault_config_parse(j, "routes[1].fault", &c, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(c.enabled, 1);
  assert_int_equal(c.delay_ppm, 100000);
  assert_true(c.delay_ms == 200);
  assert_int_equal(c.abort_ppm, 50000);
  px_rng_t rng;
  px_rng_seed(&rng, 12345);
  int delays = 0, aborts = 0, both = 0;
  const int n = 100000;
  for (int i = 0; i < n; i++) {
    px_fault_decision_t d;
    int any = px_fault_decide(&c, &rng, &d);
    assert_int_equal(any, d.delay_ms || d.abort_status);
    if (d.delay_ms) {
      assert_true(d.delay_ms == 200);
      delays++;
    }
    if (d.abort_status) {
      assert_int_equal(d.abort_status, 503);
      aborts++;
    }
    if (d.delay_ms && d.abort_status) both++;
  }
  /* within 0.5 points of the configured share over 100k decisions */
  assert_true(abs(delays - 10000) < 500);
  assert_true(abs(aborts - 5000) < 500);
  /* independent draws: about 0.5% get both */
  assert_true(abs(both - 500) < 150);

  /* fractional percentages and the extremes */
  j = js("{\"abort\":{\"percent\":0.5,\"status\":429}}");
  assert_int_equal(px_fault_config_parse(j, "f", &c, err, sizeof err), 0);
  json_decref(j);
  aborts = 0;
  for (int i = 0; i < n; i++) {
    px_fault_decision_t d;
    px_fault_decide(&c, &rng, &d);
    assert_true(d.delay_ms == 0);
    aborts += d.abort_status == 429;
  }
  assert_true(abs(aborts - 500) < 120);
  j = js("{\"abort\":{\"status\":500}}"); /* percent defaults to 100 */
  assert_int_equal(px_fault_config_parse(j, "f", &c, err, sizeof err), 0);
  json_decref(j);
  for (int i = 0; i < 1000; i++) {
    px_fault_decision_t d;
    assert_int_equal(px_fault_decide(&c, &rng, &d), 1);
    assert_int_equal(d.abort_status, 500);
  }
  j = js("{\"delay\":{\"percent\":0,\"fixed_delay\":\"1s\"}}");
  assert_int_equal(px_fault_config_parse(j, "f", &c, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(c.enabled, 0);
  for (int i = 0; i < 1000; i++) {
    px_fault_decision_t d;
    assert_int_equal(px_fault_decide(&c, &rng, &d), 0);
  }
  /* same seed, same decisions */
  px_rng_t a, b;
  px_rng_seed(&a, 99);
  px_rng_seed(&b, 99);
  j = js("{\"delay\":{\"percent\":33,\"fixed_delay\":5},\"abort\":{\"percent\":33}}");
  assert_int_equal(px_fault_config_parse(j, "f", &c, err, sizeof err), 0);
  json_decref(j);
  for (int i = 0; i < 1000; i++) {
    px_fault_decision_t d1, d2;
    px_fault_decide(&c, &a, &d1);
    px_fault_decide(&c, &b, &d2);
    assert_true(d1.delay_ms == d2.delay_ms && d1.abort_status == d2.abort_status);
  }

  EXPECT_ERR(px_fault_config_parse, px_fault_config_t, "routes[1].fault", "{\"abort\":{\"status\":42}}",
             "routes[1].fault.abort.status: 42 is out of range [200, 599]");
  EXPECT_ERR(px_fault_config_parse, px_fault_config_t, "routes[1].fault",
             "{\"delay\":{\"percent\":\"lots\",\"fixed_delay\":\"1s\"}}",
             "routes[1].fault.delay.percent: expected a percentage between 0 and 100");
  EXPECT_ERR(px_fault_config_parse, px_fault_config_t, "routes[1].fault", "{\"delay\":{\"percent\":5}}",
             "routes[1].fault.delay.fixed_delay: is required");
  EXPECT_ERR(px_fault_config_parse, px_fault_config_t, "routes[1].fault", "{\"dealy\":{}}",
             "routes[1].fault.dealy: unknown key");
}

static void test_fault_l4(void **state) {
  px_l4_fault_config_t c;
  char err[256];
  json_t *j = js("{\"delay\":\"50ms\",\"delay_percent\":50,\"drop_percent\":20,\"close_percent\":1,"
                 "\"bandwidth\":\"1MiB\"}");
  assert_int_equal(px_l4_fault_config_parse(j, "listeners[0].fault", &c, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(c.enabled, 1);
  assert_true(c.bandwidth_bps == 1048576);
  px_rng_t rng;
  px_rng_seed(&rng, 5);
  int drops = 0, closes = 0, delays = 0;
  for (int i = 0; i < 100000; i++) {
    drops += px_l4_fault_drop(&c, &rng);
    px_l4_decision_t d;
    px_l4_fault_chunk(&c, &rng, &d);
    closes += d.close;
    if (d.delay_ms) {
      assert_true(d.delay_ms == 50 && !d.close);
      delays++;
    }
  }
  assert_true(abs(drops - 20000) < 600);
  assert_true(abs(closes - 1000) < 200);
  assert_true(abs(delays - 49500) < 700); /* 50% of the 99% not closed */
  /* pacing: 1 MiB/s, 512 KiB chunks leave half a second apart */
  uint64_t next = 0;
  assert_true(px_l4_fault_pace(&c, &next, 524288, T0) == T0);
  assert_true(px_l4_fault_pace(&c, &next, 524288, T0) == T0 + MS(500));
  assert_true(px_l4_fault_pace(&c, &next, 10, T0 + S(5)) == T0 + S(5)); /* idle link: no debt */
  c.bandwidth_bps = 0;
  assert_true(px_l4_fault_pace(&c, &next, 1 << 20, T0) == T0);
  EXPECT_ERR(px_l4_fault_config_parse, px_l4_fault_config_t, "listeners[0].fault", "{\"bandwidth\":\"fast\"}",
             "listeners[0].fault.bandwidth: expected bytes per second like 1MiB");
  EXPECT_ERR(px_l4_fault_config_parse, px_l4_fault_config_t, "listeners[0].fault", "{\"drop_percent\":-3}",
             "listeners[0].fault.drop_percent: expected a percentage between 0 and 100");
}

/* ---- state shared by worker threads (the proxy keeps one per process) ---- */

#define SH_THREADS 4

typedef struct rl_thread_arg {
  px_ratelimit_t *rl;
  int id;
  int allowed;
} rl_thread_arg_t;

static void rl_route_thread(void *p) {
  rl_thread_arg_t *a = p;
  for (int i = 0; i < 50000; i++) a->allowed += px_ratelimit_allow(a->rl, "", T0 + (uint64_t)i, NULL);
}

static void rl_client_thread(void *p) {
  rl_thread_arg_t *a = p;
  char k[16];
  for (int i = 0; i < 20000; i++) {
    snprintf(k, sizeof k, "k%d", (i + a->id * 7) % 50);
    a->allowed += px_ratelimit_allow(a->rl, k, T0, NULL);
  }
}

static int run_rl_threads(px_ratelimit_t *rl, void (*fn)(void *)) {
  rl_thread_arg_t a[SH_THREADS];
  uv_thread_t t[SH_THREADS];
  for (int i = 0; i < SH_THREADS; i++) {
    a[i] = (rl_thread_arg_t){rl, i, 0};
    assert_int_equal(uv_thread_create(&t[i], fn, &a[i]), 0);
  }
  int total = 0;
  for (int i = 0; i < SH_THREADS; i++) {
    uv_thread_join(&t[i]);
    total += a[i].allowed;
  }
  return total;
}

/* One bucket hammered by 4 threads admits exactly its burst (the rate is
 * 1/hour, so the 50us the threads span adds nothing): a lost CAS update
 * would let more through. Per-client buckets in the shared table: exactly
 * burst per client, however the threads interleave. */
static void test_ratelimit_shared(void **state) {
  px_ratelimit_config_t c;
  px_ratelimit_config_default(&c);
  c.enabled = 1;
  c.requests_per_unit = 1;
  c.unit_ms = 3600000;
  c.burst = 5000;
  px_ratelimit_t rl;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  assert_int_equal(run_rl_threads(&rl, rl_route_thread), 5000);
  assert_int_equal(px_ratelimit_allow(&rl, "", T0, NULL), 0);
  px_ratelimit_done(&rl);

  c.per_client = PX_RL_KEY_HEADER;
  snprintf(c.header, sizeof c.header, "x-api-key");
  c.burst = 10;
  c.max_clients = 64;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  assert_int_equal(run_rl_threads(&rl, rl_client_thread), 50 * 10);
  assert_int_equal(rl.nclients, 50);
  for (int i = 0; i < 50; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    assert_true(px_ratelimit_tokens(&rl, k, T0) < 1e-9);
  }
  px_ratelimit_done(&rl);

  /* a table smaller than the clients: evictions under contention stay bounded */
  c.max_clients = 8;
  assert_int_equal(px_ratelimit_init(&rl, &c), 0);
  int got = run_rl_threads(&rl, rl_client_thread);
  assert_true(got >= 50 * 10);
  assert_true(rl.nclients <= 8);
  assert_true(rl.evictions > 0);
  px_ratelimit_done(&rl);
}

typedef struct budget_thread_arg {
  px_retry_budget_t *b;
  const px_retry_config_t *c;
  int over; /* times the limit was seen below the retries this thread holds */
} budget_thread_arg_t;

static void budget_thread(void *p) {
  budget_thread_arg_t *a = p;
  for (int i = 0; i < 100000; i++) {
    px_budget_request_start(a->b);
    px_budget_retry_start(a->b);
    if (px_budget_limit(a->c, a->b) < 1) a->over++;
    px_budget_retry_end(a->b);
    px_budget_request_end(a->b);
  }
}

/* The route's budget counts every worker's requests and retries: after
 * 4 x 100000 start/end pairs from 4 threads both counters are back at 0 (a
 * non-atomic ++/-- loses updates and drifts). */
static void test_budget_shared(void **state) {
  px_retry_config_t c;
  px_retry_config_default(&c);
  c.budget_percent = 100;
  c.budget_min_concurrency = 0;
  px_retry_budget_t b = {0};
  budget_thread_arg_t a[SH_THREADS];
  uv_thread_t t[SH_THREADS];
  for (int i = 0; i < SH_THREADS; i++) {
    a[i] = (budget_thread_arg_t){&b, &c, 0};
    assert_int_equal(uv_thread_create(&t[i], budget_thread, &a[i]), 0);
  }
  for (int i = 0; i < SH_THREADS; i++) {
    uv_thread_join(&t[i]);
    assert_int_equal(a[i].over, 0); /* each thread's own request is always counted */
  }
  assert_int_equal(atomic_load(&b.active_requests), 0);
  assert_int_equal(atomic_load(&b.active_retries), 0);
}

#define OUT_ROUNDS 300

typedef struct out_thread_arg {
  px_outlier_t *o;
  uv_barrier_t *bar;
  _Atomic int *ejected; /* EJECTED events per round */
} out_thread_arg_t;

static void outlier_thread(void *p) {
  out_thread_arg_t *a = p;
  for (int r = 0; r < OUT_ROUNDS; r++) {
    uint64_t now = T0 + (uint64_t)r * S(1000); /* past any ejection of the round before */
    uv_barrier_wait(a->bar);
    for (int i = 0; i < 1000; i++) { /* the run crosses 2000 while all four are at it */
      px_outlier_event_t ev = px_outlier_on_result(a->o, 0, PX_OUT_RESPONSE, 503, now);
      if (ev == PX_OUTLIER_EJECTED) atomic_fetch_add(&a->ejected[r], 1);
    }
  }
}

/* One outlier table fed by 4 threads: every round their 5xx answers for an
 * endpoint together reach the threshold; exactly one of them ejects it,
 * whatever the interleaving (never zero, never two). */
static void test_outlier_shared(void **state) {
  px_outlier_t o = outlier_new("{\"consecutive_5xx\":2000,\"base_ejection_time\":\"10s\","
                               "\"max_ejection_time\":\"10s\",\"max_ejection_percent\":100}",
                               2); /* room for two ejections: only the re-check under the lock stops a second */
  static _Atomic int ejected[OUT_ROUNDS];
  for (int r = 0; r < OUT_ROUNDS; r++) atomic_init(&ejected[r], 0);
  uv_barrier_t bar;
  assert_int_equal(uv_barrier_init(&bar, SH_THREADS), 0);
  out_thread_arg_t a = {&o, &bar, ejected};
  uv_thread_t t[SH_THREADS];
  for (int i = 0; i < SH_THREADS; i++) assert_int_equal(uv_thread_create(&t[i], outlier_thread, &a), 0);
  for (int i = 0; i < SH_THREADS; i++) uv_thread_join(&t[i]);
  uv_barrier_destroy(&bar);
  for (int r = 0; r < OUT_ROUNDS; r++) {
    if (atomic_load(&ejected[r]) != 1) fail_msg("round %d: %d ejections", r, atomic_load(&ejected[r]));
  }
  assert_true(o.ep[0].total_ejections == OUT_ROUNDS);
  assert_int_equal(px_outlier_ejected_count(&o), 1);
  assert_int_equal(px_outlier_is_ejected(&o, 0, T0 + (uint64_t)(OUT_ROUNDS - 1) * S(1000)), 1);
  px_outlier_done(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rng),
      cmocka_unit_test(test_conf_readers),
      cmocka_unit_test(test_retry_config),
      cmocka_unit_test(test_retry_should),
      cmocka_unit_test(test_retry_budget),
      cmocka_unit_test(test_retry_backoff),
      cmocka_unit_test(test_breaker),
      cmocka_unit_test(test_breaker_shared),
      cmocka_unit_test(test_outlier_eject_and_return),
      cmocka_unit_test(test_outlier_limits),
      cmocka_unit_test(test_hc_config),
      cmocka_unit_test(test_hc_schedule),
      cmocka_unit_test(test_ratelimit_bucket),
      cmocka_unit_test(test_ratelimit_clients),
      cmocka_unit_test(test_fault_percentages),
      cmocka_unit_test(test_fault_l4),
      cmocka_unit_test(test_ratelimit_shared),
      cmocka_unit_test(test_budget_shared),
      cmocka_unit_test(test_outlier_shared),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
