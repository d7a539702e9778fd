/* Unit tests: config push decoding on both ends - skiff-proxy's control
 * section, stream lines and snapshot cache (px_push.h), skiff-control's
 * ACK/NACK body and node names (ctl_push.h). */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_push.h"
#include "px_push.h"
#include "skiff/err.h"

static int parse_opts(const char *json, px_push_opts_t *o, char *first_err, size_t len) {
  json_t *v = json_loads(json, 0, NULL);
  assert_non_null(v);
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  int rc = px_push_opts_parse(v, NULL, "proxy.yaml", o, &errs);
  if (first_err) {
    first_err[0] = 0;
    if (errs.n) sk_config_errors_format(&errs, 0, first_err, len);
  }
  if (rc < 0) assert_true(errs.n > 0);
  sk_config_errors_done(&errs);
  json_decref(v);
  return rc;
}

static void test_opts(void **state) {
  (void)state;
  px_push_opts_t o;
  char err[600];
  assert_int_equal(parse_opts("{\"url\":\"http://127.0.0.1:7400\",\"node\":\"edge-1\"}", &o, err, sizeof err), 0);
  assert_string_equal(o.host, "127.0.0.1");
  assert_int_equal(o.port, 7400);
  assert_int_equal(o.tls, 0);
  assert_int_equal(o.backoff_initial_ms, 200);
  assert_int_equal(o.backoff_max_ms, 30000);
  px_push_opts_done(&o);

  assert_int_equal(parse_opts("{\"url\":\"https://[::1]\",\"ca\":\"/ca.pem\",\"backoff\":{\"initial\":\"50ms\","
                              "\"max\":\"2s\"},\"http2\":true,\"cache\":\"/c\"}",
                              &o, err, sizeof err),
                   0);
  assert_string_equal(o.host, "::1");
  assert_int_equal(o.port, 443);
  assert_int_equal(o.tls, 1);
  assert_int_equal(o.http2, 1);
  assert_int_equal(o.backoff_initial_ms, 50);
  assert_int_equal(o.backoff_max_ms, 2000);
  assert_non_null(o.node); /* the host name by default */
  px_push_opts_done(&o);

  static const struct {
    const char *json, *want;
  } bad[] = {
      {"{\"node\":\"x\"}", "control.url: required"},
      {"{\"url\":\"ftp://x\"}", "control.url: must start with http"},
      {"{\"url\":\"http://x:0\"}", "control.url: expected"},
      {"{\"url\":\"http://x/api\"}", "control.url: expected"},
      {"{\"url\":\"http://x\",\"node\":\"a b\"}", "control.node:"},
      {"{\"url\":\"http://x\",\"nope\":1}", "control.nope: unknown key"},
      {"{\"url\":\"http://x\",\"backoff\":{\"initial\":\"5s\",\"max\":\"1s\"}}", "control.backoff.max:"},
      {"{\"url\":\"http://x\",\"backoff\":{\"initial\":\"soon\"}}", "control.backoff.initial:"},
      {"{\"url\":\"http://x\",\"ca\":\"/ca.pem\"}", "need an https:// url"},
      {"{\"url\":\"https://x\",\"cert\":\"/c.pem\"}", "control.key: cert and key go together"},
      {"{\"url\":\"http://x\",\"http2\":\"yes\"}", "control.http2:"},
      {"[1]", "control: a mapping is expected"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = parse_opts(bad[i].json, &o, err, sizeof err);
    if (rc != SK_ECONFIG || !strstr(err, bad[i].want)) fail_msg("%s: got %d '%s'", bad[i].json, rc, err);
    assert_int_equal(strncmp(err, "proxy.yaml", 10), 0); /* the file is named */
  }
}

static void test_decode(void **state) {
  (void)state;
  px_push_msg_t m;
  char err[300];
  const char *snap = "{\"type\":\"SNAPSHOT\",\"version\":7,\"config\":{\"clusters\":[],\"routes\":[]},\"warnings\":[]}";
  assert_int_equal(px_push_decode(snap, strlen(snap), &m, err, sizeof err), 0);
  assert_int_equal(m.type, PX_PUSH_SNAPSHOT);
  assert_int_equal(m.version, 7);
  assert_non_null(json_object_get(m.config, "routes"));
  json_decref(m.config);
  const char *hb = "{\"type\":\"HEARTBEAT\",\"version\":7}";
  assert_int_equal(px_push_decode(hb, strlen(hb), &m, err, sizeof err), 0);
  assert_int_equal(m.type, PX_PUSH_HEARTBEAT);
  assert_null(m.config);

  static const struct {
    const char *line, *want;
  } bad[] = {
      {"{\"type\":\"SNAPSHOT\",\"version\":1", "snapshot stream:"},
      {"[]", "a JSON object per line"},
      {"{\"version\":1}", "type:"},
      {"{\"type\":\"SNAPSHOT\",\"version\":-1,\"config\":{}}", "version:"},
      {"{\"type\":\"PATCH\",\"version\":1}", "unknown 'PATCH'"},
      {"{\"type\":\"SNAPSHOT\",\"version\":1}", "config: an object"},
      {"{\"type\":\"SNAPSHOT\",\"version\":1,\"config\":{\"listeners\":[]}}", "unknown key 'listeners'"},
      {"{\"type\":\"SNAPSHOT\",\"version\":1,\"config\":{\"routes\":{}}}", "routes: a list"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = px_push_decode(bad[i].line, strlen(bad[i].line), &m, err, sizeof err);
    if (rc >= 0 || !strstr(err, bad[i].want)) fail_msg("%s: got %d '%s'", bad[i].line, rc, err);
    assert_null(m.config);
  }
  /* deep nesting is bounded */
  char deep[400];
  size_t k = 0;
  k += (size_t)snprintf(deep, sizeof deep, "{\"type\":\"SNAPSHOT\",\"version\":1,\"config\":{\"routes\":");
  for (int i = 0; i < 40; i++) deep[k++] = '[';
  for (int i = 0; i < 40; i++) deep[k++] = ']';
  deep[k++] = '}';
  deep[k++] = '}';
  assert_true(px_push_decode(deep, k, &m, err, sizeof err) < 0);
}

static void test_cache_load(void **state) {
  (void)state;
  const char *dir = sk_test_tmpdir();
  char path[512], err[600];
  json_t *cfg = NULL;
  int64_t v = 0;
  snprintf(path, sizeof path, "%s/none", dir);
  assert_int_equal(px_push_cache_load(path, &cfg, &v, err, sizeof err), SK_ENOTFOUND);
  assert_int_equal(px_push_cache_load("", &cfg, &v, err, sizeof err), SK_ENOTFOUND);
  snprintf(path, sizeof path, "%s/cache", dir);
  FILE *f = fopen(path, "w");
  fputs("{\"type\":\"SNAPSHOT\",\"version\":42,\"config\":{\"clusters\":[],\"routes\":[]}}\n", f);
  fclose(f);
  assert_int_equal(px_push_cache_load(path, &cfg, &v, err, sizeof err), 0);
  assert_int_equal(v, 42);
  assert_true(json_is_array(json_object_get(cfg, "clusters")));
  json_decref(cfg);
  f = fopen(path, "w");
  fputs("{\"type\":\"HEARTBEAT\",\"version\":42}\n", f);
  fclose(f);
  assert_true(px_push_cache_load(path, &cfg, &v, err, sizeof err) < 0);
  assert_non_null(strstr(err, path));
  assert_null(cfg);
}

static void test_ack(void **state) {
  (void)state;
  sk_pool_t *pool = sk_pool_new();
  int64_t v;
  const char *e;
  char msg[256];
  const char *ack = "{\"version\":12,\"error\":null}";
  assert_int_equal(ctl_push_parse_ack(ack, strlen(ack), pool, &v, &e, msg, sizeof msg), 0);
  assert_int_equal(v, 12);
  assert_null(e);
  const char *ack2 = "{\"version\":3}";
  assert_int_equal(ctl_push_parse_ack(ack2, strlen(ack2), pool, &v, &e, msg, sizeof msg), 0);
  assert_null(e);
  const char *nack = "{\"version\":13,\"error\":\"routes[1].match.path.regex: bad regex\"}";
  assert_int_equal(ctl_push_parse_ack(nack, strlen(nack), pool, &v, &e, msg, sizeof msg), 0);
  assert_string_equal(e, "routes[1].match.path.regex: bad regex");
  /* a long error is kept up to CTL_PUSH_MAX_ERROR bytes */
  size_t big = CTL_PUSH_MAX_ERROR * 2;
  char *b = malloc(big + 64);
  int n = snprintf(b, 64, "{\"version\":1,\"error\":\"");
  memset(b + n, 'x', big);
  strcpy(b + n + big, "\"}");
  assert_int_equal(ctl_push_parse_ack(b, strlen(b), pool, &v, &e, msg, sizeof msg), 0);
  assert_int_equal(strlen(e), CTL_PUSH_MAX_ERROR);
  free(b);

  static const struct {
    const char *body, *want;
  } bad[] = {
      {"", "empty"},
      {"{\"version\":", "body:"},
      {"[]", "a JSON object"},
      {"{\"version\":\"1\"}", "version:"},
      {"{\"version\":-5}", "version:"},
      {"{\"version\":1,\"error\":5}", "error: null or a string"},
      {"{\"version\":1,\"error\":\"\"}", "error: an empty string"},
      {"{\"version\":1,\"extra\":true}", "unknown field 'extra'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = ctl_push_parse_ack(bad[i].body, strlen(bad[i].body), pool, &v, &e, msg, sizeof msg);
    if (rc != SK_EINVAL || !strstr(msg, bad[i].want)) fail_msg("%s: got %d '%s'", bad[i].body, rc, msg);
  }
  sk_pool_free(pool);

  assert_true(ctl_push_valid_node("edge-1.eu_west"));
  assert_false(ctl_push_valid_node(""));
  assert_false(ctl_push_valid_node("a/b"));
  assert_false(ctl_push_valid_node("a b"));
  char longn[200];
  memset(longn, 'a', 129);
  longn[129] = 0;
  assert_false(ctl_push_valid_node(longn));
  longn[128] = 0;
  assert_true(ctl_push_valid_node(longn));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opts),
      cmocka_unit_test(test_decode),
      cmocka_unit_test(test_cache_load),
      cmocka_unit_test(test_ack),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
