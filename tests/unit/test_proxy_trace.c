/* Unit tests: skiff-proxy's `tracing` section (px_trace.c): a good section
 * makes a tracer with its settings, a bad one fails with every error named
 * by its path, an absent one means tracing off. */
#include "sk_test.h"

#include <stdlib.h>
#include <string.h>

#include "px_int.h"
#include "skiff/err.h"

static int has_err(const sk_config_errors_t *e, const char *want) {
  char buf[1024];
  for (size_t i = 0; i < e->n; i++) {
    sk_config_errors_format(e, i, buf, sizeof buf);
    if (strstr(buf, want)) return 1;
  }
  return 0;
}

/* Builds the section from JSON text; the tracer in *out when asked. */
static int build(const char *text, sk_config_errors_t *errs, sk_tracer_t **out) {
  json_error_t je;
  sk_cfg_json_t j = {.value = text ? json_loads(text, JSON_DECODE_ANY, &je) : NULL, .where = NULL};
  if (text && !j.value) fail_msg("bad test json: %s", text);
  int rc = px_tracing_build(&j, "test.yaml", errs, NULL, out);
  json_decref(j.value);
  return rc;
}

static void test_off(void **state) {
  (void)state;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  sk_tracer_t *t = (sk_tracer_t *)1;
  assert_int_equal(build(NULL, &e, &t), 0);
  assert_null(t);
  assert_int_equal(build("null", &e, &t), 0);
  assert_null(t);
  assert_int_equal(e.n, 0);
  sk_config_errors_done(&e);
}

static void test_good(void **state) {
  (void)state;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  sk_tracer_t *t = NULL;
  assert_int_equal(build("{\"otlp_endpoint\": \"http://127.0.0.1:1/custom\", \"sample_ratio\": 0.25,"
                         " \"service_name\": \"edge\", \"max_queue\": 10, \"batch_size\": 5,"
                         " \"flush_interval\": \"250ms\"}",
                         &e, &t),
                   0);
  assert_int_equal(e.n, 0);
  assert_non_null(t);
  assert_true(sk_tracer_sample_ratio(t) == 0.25);
  sk_tracer_free(t);
  /* no endpoint: a tracer that samples and counts, but sends nothing */
  t = NULL;
  assert_int_equal(build("{\"sample_ratio\": 0}", &e, &t), 0);
  assert_non_null(t);
  assert_true(sk_tracer_sample_ratio(t) == 0);
  sk_tracer_free(t);
  /* validate only */
  assert_int_equal(build("{\"otlp_endpoint\": \"http://127.0.0.1:4318\"}", &e, NULL), 0);
  sk_config_errors_done(&e);
}

static void test_bad(void **state) {
  (void)state;
  static const struct {
    const char *json, *want;
  } cases[] = {
      {"[1]", "tracing: expected a mapping"},
      {"{\"colour\": 1}", "tracing.colour: unknown key"},
      {"{\"sample_ratio\": 1.5}", "tracing.sample_ratio: expected a number from 0 to 1"},
      {"{\"sample_ratio\": \"all\"}", "tracing.sample_ratio: expected a number from 0 to 1"},
      {"{\"otlp_endpoint\": \"ftp://x\"}", "tracing.otlp_endpoint: expected http://host:port[/path]"},
      {"{\"otlp_endpoint\": \"http://127.0.0.1:0\"}", "tracing.otlp_endpoint: invalid endpoint URL"},
      {"{\"otlp_endpoint\": \"https://127.0.0.1:4318\"}", "an https endpoint needs tracing.tls"},
      {"{\"otlp_endpoint\": 4318}", "tracing.otlp_endpoint: expected a string"},
      {"{\"service_name\": \"\"}", "tracing.service_name: must not be empty"},
      {"{\"max_queue\": 0}", "tracing.max_queue: expected an integer from 1 to 1000000"},
      {"{\"batch_size\": 2000000}", "tracing.batch_size: expected an integer from 1 to 1000000"},
      {"{\"flush_interval\": \"soon\"}", "tracing.flush_interval: expected a duration"},
      {"{\"flush_interval\": \"0s\"}", "tracing.flush_interval: expected a duration"},
      {"{\"tls\": 1}", "tracing.tls: expected a mapping"},
      {"{\"tls\": {\"cert\": \"/x.pem\"}}", "tracing.tls: cert and key go together"},
      {"{\"tls\": {\"ca\": \"/nonexistent/ca.pem\"}}", "tracing.tls: "},
      {"{\"tls\": {\"pin\": 1}}", "tracing.tls.pin: unknown key"},
      {"{\"tls\": {\"identity\": \"yes\"}}", "tracing.tls.identity: expected true or false"},
      {"{\"tls\": {\"identity\": true, \"cert\": \"/c.pem\", \"key\": \"/k.pem\"}}",
       "tracing.tls.identity: identity: true takes the identity's cert and key"},
      /* building (not validating) without an identity section */
      {"{\"otlp_endpoint\": \"https://127.0.0.1:4318\", \"tls\": {\"identity\": true}}",
       "tracing.tls.identity: needs the daemon's identity: section"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    sk_config_errors_t e;
    sk_config_errors_init(&e);
    sk_tracer_t *t = NULL;
    int rc = build(cases[i].json, &e, &t);
    if (rc != SK_ECONFIG || !has_err(&e, cases[i].want) || t) {
      char buf[1024] = "";
      if (e.n) sk_config_errors_format(&e, 0, buf, sizeof buf);
      fail_msg("%s: rc %d, wanted '%s', got '%s'", cases[i].json, rc, cases[i].want, buf);
    }
    assert_true(has_err(&e, "test.yaml"));
    sk_config_errors_done(&e);
  }
  /* every error of a section in one run */
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  assert_int_equal(build("{\"a\": 1, \"sample_ratio\": -1, \"max_queue\": \"x\"}", &e, NULL), SK_ECONFIG);
  assert_true(e.n >= 3);
  sk_config_errors_done(&e);
}

static void test_tls_ok(void **state) {
  (void)state;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  char text[2048];
  snprintf(text, sizeof text,
           "{\"otlp_endpoint\": \"https://127.0.0.1:4318\", \"tls\": {\"ca\": \"%s\", \"cert\": \"%s\", \"key\": \"%s\"}}",
           sk_test_cert("ca.pem"), sk_test_cert("client.pem"), sk_test_cert("client.key"));
  sk_tracer_t *t = NULL;
  assert_int_equal(build(text, &e, &t), 0);
  assert_non_null(t);
  sk_tracer_free(t);
  /* identity: validation passes before the identity's files exist (the
   * context is built at start from them) */
  assert_int_equal(build("{\"otlp_endpoint\": \"https://127.0.0.1:4318\", \"tls\": {\"identity\": true}}", &e, NULL),
                   0);
  assert_int_equal(build("{\"otlp_endpoint\": \"https://127.0.0.1:0\", \"tls\": {\"identity\": true}}", &e, NULL),
                   SK_ECONFIG);
  assert_true(has_err(&e, "tracing.otlp_endpoint: invalid endpoint URL"));
  sk_config_errors_done(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_off),
      cmocka_unit_test(test_good),
      cmocka_unit_test(test_bad),
      cmocka_unit_test(test_tls_ok),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
