/* test_yaml_json.c - YAML streams into jansson values, and the json helpers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"
#include "sk_test.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

#define assert_has(hay, needle)                                                                                 \
  do {                                                                                                          \
    if (!strstr((hay), (needle))) fail_msg("missing '%s' in:\n%s", (needle), (hay));                           \
  } while (0)

static json_t *yload(const char *text) {
  json_t *v = NULL;
  char err[256];
  int rc = sk_yaml_load(text, strlen(text), NULL, &v, err, sizeof err);
  if (rc) fail_msg("yaml: %s", err);
  return v;
}

static char *dump(const json_t *v) {
  static char out[4096];
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_json_dump_buf(v, &b), 0);
  snprintf(out, sizeof out, "%s", sk_buf_cstr(&b));
  sk_buf_done(&b);
  return out;
}

static void test_scalars_core_schema(void **state) {
  json_t *v = yload("a: 1\nb: -7\nc: 0x1f\nd: 1.5\ne: .5\nf: 1e3\ng: true\nh: False\ni: ~\nj: null\nk:\n"
                 "l: \"1\"\nm: 'true'\nn: hello world\no: 1.2.3\np: .inf\nq: 99999999999999999999\nr: 0o17\n"
                 "s: |\n  line1\n  line2\n");
  assert_string_equal(dump(v), "{\"a\":1,\"b\":-7,\"c\":31,\"d\":1.5,\"e\":0.5,\"f\":1000.0,\"g\":true,\"h\":false,"
                               "\"i\":null,\"j\":null,\"k\":null,\"l\":\"1\",\"m\":\"true\",\"n\":\"hello world\","
                               "\"o\":\"1.2.3\",\"p\":\".inf\",\"q\":1e20,\"r\":15,\"s\":\"line1\\nline2\\n\"}");
  json_decref(v);
}

static void test_stream_and_resource(void **state) {
  const char *y = "apiVersion: skiff.dev/v1\n"
                  "kind: Service\n"
                  "metadata:\n"
                  "  name: shop\n"
                  "  labels: {app: shop, tier: web}\n"
                  "spec:\n"
                  "  ports:\n"
                  "    - port: 80\n"
                  "      name: http\n"
                  "---\n"
                  "---\n"
                  "kind: Route\n";
  json_t *all = NULL;
  char err[256];
  assert_int_equal(sk_yaml_load_all(y, strlen(y), NULL, &all, err, sizeof err), 0);
  assert_int_equal(json_array_size(all), 3);
  json_t *svc = json_array_get(all, 0);
  assert_string_equal(sk_json_get_str(svc, "metadata.name", NULL), "shop");
  assert_string_equal(sk_json_get_str(svc, "metadata.labels.tier", NULL), "web");
  assert_int_equal(sk_json_get_int(svc, "spec.ports.0.port", -1), 80);
  assert_string_equal(sk_json_get_str(svc, "spec.ports.0.name", "x"), "http");
  assert_string_equal(sk_json_get_str(svc, "spec.ports.1.name", "dflt"), "dflt");
  assert_int_equal(sk_json_get_int(svc, "metadata.name", 5), 5); /* wrong type -> default */
  assert_true(json_is_null(json_array_get(all, 1)));
  assert_string_equal(sk_json_get_str(json_array_get(all, 2), "kind", NULL), "Route");
  json_decref(all);

  /* load (one) rejects several documents, accepts empty */
  json_t *v = NULL;
  assert_int_equal(sk_yaml_load(y, strlen(y), NULL, &v, err, sizeof err), SK_EPARSE);
  assert_has(err, "11:1: expected one YAML document, got 3");
  assert_null(v);
  assert_int_equal(sk_yaml_load("", 0, NULL, &v, err, sizeof err), 0);
  assert_true(json_is_null(v));
  json_decref(v);
  assert_int_equal(sk_yaml_load_all("", 0, NULL, &v, err, sizeof err), 0);
  assert_int_equal(json_array_size(v), 0);
  json_decref(v);
}

static void test_yaml_errors(void **state) {
  json_t *v = NULL;
  char err[256];
  const char *y = "a: 1\nb: [1, 2\n";
  assert_int_equal(sk_yaml_load(y, strlen(y), NULL, &v, err, sizeof err), SK_EPARSE);
  assert_has(err, "YAML syntax error");
  y = "a: 1\nb: 2\na: 3\n";
  assert_int_equal(sk_yaml_load(y, strlen(y), NULL, &v, err, sizeof err), SK_EPARSE);
  assert_string_equal(err, "3:1: duplicate key 'a'");
  y = "a: &x [1]\nb: *x\n";
  assert_int_equal(sk_yaml_load(y, strlen(y), NULL, &v, err, sizeof err), SK_EPARSE);
  assert_string_equal(err, "2:4: YAML aliases (*x) are not supported");
  y = "? [a]\n: 1\n";
  assert_int_equal(sk_yaml_load(y, strlen(y), NULL, &v, err, sizeof err), SK_EPARSE);
  assert_string_equal(err, "1:3: mapping keys must be scalars, got a sequence");
  sk_yaml_opts_t o = {.max_depth = 4};
  y = "a: [[[[[1]]]]]\n";
  assert_int_equal(sk_yaml_load(y, strlen(y), &o, &v, err, sizeof err), SK_ELIMIT);
  assert_has(err, "nesting deeper than 4 levels");
  sk_yaml_opts_t o2 = {.max_bytes = 4};
  assert_int_equal(sk_yaml_load(y, strlen(y), &o2, &v, err, sizeof err), SK_ELIMIT);
  sk_yaml_opts_t o3 = {.max_docs = 2};
  y = "1\n---\n2\n---\n3\n";
  assert_int_equal(sk_yaml_load_all(y, strlen(y), &o3, &v, err, sizeof err), SK_ELIMIT);
  assert_has(err, "more than 2 documents");
  sk_yaml_opts_t o4 = {.max_nodes = 3};
  y = "[1, 2, 3, 4]\n";
  assert_int_equal(sk_yaml_load(y, strlen(y), &o4, &v, err, sizeof err), SK_ELIMIT);
  assert_null(v);
}

static void test_json_helpers(void **state) {
  json_t *v = NULL;
  char err[256];
  const char *j = "{\"a\":{\"b\":[{\"c\":\"x\"},2.0,3.5,true]},\"n\":null}";
  assert_int_equal(sk_json_parse(j, strlen(j), 0, 0, &v, err, sizeof err), 0);
  assert_string_equal(sk_json_get_str(v, "a.b.0.c", NULL), "x");
  assert_int_equal(sk_json_get_int(v, "a.b.1", 0), 2);
  assert_int_equal(sk_json_get_int(v, "a.b.2", -1), -1); /* not integral */
  assert_true(sk_json_get_real(v, "a.b.2", 0) == 3.5);
  assert_int_equal(sk_json_get_bool(v, "a.b.3", 0), 1);
  assert_int_equal(sk_json_get_bool(v, "a.b.9", 7), 7);
  assert_null(sk_json_get(v, "a.b.x"));
  assert_null(sk_json_get(v, "n.deeper"));
  assert_non_null(sk_json_get(v, "n"));
  assert_int_equal(sk_json_depth(v), 4);
  assert_string_equal(dump(v), j);
  json_decref(v);

  assert_int_equal(sk_json_parse("{\"a\":1,\"a\":2}", 13, 0, 0, &v, err, sizeof err), SK_EPARSE);
  assert_has(err, "1:");
  assert_int_equal(sk_json_parse("[[[[1]]]]", 9, 0, 3, &v, err, sizeof err), SK_ELIMIT);
  assert_string_equal(err, "1:4: nesting deeper than 3");
  assert_int_equal(sk_json_parse("\"[[[[\"", 6, 0, 3, &v, err, sizeof err), 0); /* brackets in strings */
  json_decref(v);
  assert_int_equal(sk_json_parse("[1]", 3, 2, 0, &v, err, sizeof err), SK_ELIMIT);
  assert_int_equal(sk_json_parse("{\n  \"a\": tru\n}", 14, 0, 0, &v, err, sizeof err), SK_EPARSE);
  assert_has(err, "2:");
}

/* The fast reader behind sk_json_parse: the same tree as jansson for what
 * it takes, and everything unusual handed back (jansson then decides). */
static void test_json_fast_reader(void **state) {
  static const char *const same[] = {
      /* one document split over two lines: the parentheses say so (clang -Wstring-concatenation) */
      ("{\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\",\"dryRun\":false,\"oldObject\":null,"
       "\"object\":{\"spec\":{\"replicas\":3,\"ratio\":0.25,\"big\":-9223372036854775808,\"e\":1E+2,\"z\":-0}}}}"),
      " [ 1 , [ ] , { } , \"\" , true , false , null ] \r\n",
      "\"tab\\there \\\"q\\\" \\/ \\b\\f\\n\\r \\u00e9\\u20AC \\ud83d\\ude00 \\u003c/a\\u003e\"",
      "{\"caf\xc3\xa9\":\"\xe2\x82\xac\xf0\x9f\x98\x80\",\"k\\n\":{\"k\\n\":1}}",
      "[0.1,1e-400,123456789012345678,1234567890123456789,-1.5e308]",
  };
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
    json_t *fast = NULL, *ref = json_loadb(same[i], strlen(same[i]), JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(ref);
    if (sk__json_parse_fast(same[i], strlen(same[i]), 64, &fast) != 0) fail_msg("fast reader refused: %s", same[i]);
    char *a = json_dumps(fast, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    char *b = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    assert_string_equal(a, b);
    free(a);
    free(b);
    json_decref(fast);
    json_decref(ref);
  }
  /* handed back: errors, duplicates, NUL, overflow, raw control bytes, bad
   * UTF-8, lone surrogates, leading zeros, trailing bytes, depth */
  static const char *const back[] = {
      "{\"a\":1,\"a\":2}", "\"a\\u0000b\"", "1e400", "9223372036854775808", "\"a\tb\"", "\"\xc0\xaf\"",
      "\"\xed\xa0\x80\"", "\"\\udc00\"", "\"\\ud800x\"", "01", "1.", "-", "[1,]", "{\"a\"}", "[1] x", "tru", "",
      "[[[[1]]]]",
  };
  for (size_t i = 0; i < sizeof back / sizeof back[0]; i++) {
    json_t *fast = (json_t *)1;
    if (sk__json_parse_fast(back[i], strlen(back[i]), 3, &fast) == 0) fail_msg("fast reader took: %s", back[i]);
    assert_null(fast);
  }
  /* what it hands back still parses when jansson takes it */
  json_t *v = NULL;
  char err[256];
  assert_int_equal(sk_json_parse("[\"a\\u0000b\"]", 12, 0, 0, &v, err, sizeof err), 0);
  assert_int_equal(json_string_length(json_array_get(v, 0)), 3);
  json_decref(v);
  assert_int_equal(sk_json_parse("1e400", 5, 0, 0, &v, err, sizeof err), SK_EPARSE);
  assert_has(err, "1:");
}

static void test_escape(void **state) {
  sk_buf_t b;
  sk_buf_init(&b);
  const char s[] = "q\"b\\s\n\r\t\b\f\x1f\x7f é \xe2\x82\xac \xf0\x9f\x98\x80 \xc3 \xed\xa0\x80 end";
  sk_json_escape(&b, s, sizeof s - 1);
  assert_string_equal(sk_buf_cstr(&b), "q\\\"b\\\\s\\n\\r\\t\\b\\f\\u001f\\u007f é € \xf0\x9f\x98\x80 \xef\xbf\xbd "
                                       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd end");
  sk_buf_done(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scalars_core_schema), cmocka_unit_test(test_stream_and_resource),
      cmocka_unit_test(test_yaml_errors),         cmocka_unit_test(test_json_helpers),
      cmocka_unit_test(test_escape),              cmocka_unit_test(test_json_fast_reader),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
