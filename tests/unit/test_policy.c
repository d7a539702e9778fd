/* test_policy.c - skiff-policy's engine: patterns and anchors, variables,
 * operators, JSON patches (checked with python3's jsonpatch, an independent
 * RFC 6902 implementation), policy loading, the example policies against
 * AdmissionReviews as the API server sends them, the CLI and reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy.h"
#include "sk_test.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

#define assert_has(hay, needle)                                                                                 \
  do {                                                                                                          \
    const char *h_ = (hay);                                                                                     \
    if (!h_ || !strstr(h_, (needle))) fail_msg("missing '%s' in:\n%s", (needle), h_ ? h_ : "(null)");          \
  } while (0)

static json_t *Y(const char *text) {
  json_t *v = NULL;
  char err[256];
  if (sk_yaml_load(text, strlen(text), NULL, &v, err, sizeof err)) fail_msg("yaml: %s\n%s", err, text);
  return v;
}

static char *dump(const json_t *v) {
  static char out[4][16384];
  static int k;
  char *o = out[k++ & 3];
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(v, &b);
  snprintf(o, sizeof out[0], "%s", sk_buf_cstr(&b));
  sk_buf_done(&b);
  return o;
}

static void load_text(pol_set_t *s, const char *text) {
  char err[1024];
  if (pol_set_load_text(s, "inline", text, strlen(text), err, sizeof err)) fail_msg("load: %s", err);
}

static void load_example(pol_set_t *s, const char *file) {
  char path[1024], err[1024];
  const char *src = getenv("SKIFF_SRC_DIR");
  snprintf(path, sizeof path, "%s/examples/policies/%s", src ? src : ".", file);
  if (pol_set_load_path(s, path, err, sizeof err)) fail_msg("load %s: %s", path, err);
}

/* An AdmissionReview as the API server sends it for obj (and old). */
static json_t *review(const char *op, const char *obj_yaml, const char *old_yaml, int dry_run, const char *user) {
  json_t *obj = obj_yaml ? Y(obj_yaml) : json_null();
  json_t *old = old_yaml ? Y(old_yaml) : json_null();
  const json_t *o = json_is_object(obj) ? obj : old;
  const char *api = sk_json_get_str(o, "apiVersion", "v1");
  const char *slash = strchr(api, '/');
  char group[64] = "";
  if (slash) snprintf(group, sizeof group, "%.*s", (int)(slash - api), api);
  const char *kind = sk_json_get_str(o, "kind", "Pod");
  char resource[64];
  snprintf(resource, sizeof resource, "%ss", kind);
  for (char *c = resource; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
  const char *optkind = !strcmp(op, "CREATE") ? "CreateOptions" : !strcmp(op, "UPDATE") ? "UpdateOptions" : "DeleteOptions";
  json_t *gvk = json_pack("{s:s,s:s,s:s}", "group", group, "version", slash ? slash + 1 : api, "kind", kind);
  json_t *gvr = json_pack("{s:s,s:s,s:s}", "group", group, "version", slash ? slash + 1 : api, "resource", resource);
  json_t *req = json_pack("{s:s,s:O,s:O,s:O,s:O,s:s,s:s,s:{s:s,s:s,s:[s,s]},s:o,s:o,s:b,s:{s:s,s:s}}", "uid",
                          "705ab4f5-6393-11e8-b7cc-42010a800002", "kind", gvk, "resource", gvr, "requestKind", gvk,
                          "requestResource", gvr, "name", sk_json_get_str(o, "metadata.name", ""), "operation", op,
                          "userInfo", "username", user ? user : "kubernetes-admin", "uid", "014fbff9a07c", "groups",
                          "system:masters", "system:authenticated", "object", obj, "oldObject", old, "dryRun", dry_run,
                          "options", "apiVersion", "meta.k8s.io/v1", "kind", optkind);
  const char *ns = sk_json_get_str(o, "metadata.namespace", NULL);
  if (ns) json_object_set_new(req, "namespace", json_string(ns));
  json_decref(gvk);
  json_decref(gvr);
  return json_pack("{s:s,s:s,s:o}", "apiVersion", "admission.k8s.io/v1", "kind", "AdmissionReview", "request", req);
}

/* The webhook path: serialise, decode, evaluate, encode, parse the answer. */
static json_t *answer(const pol_set_t *s, json_t *rev, int mutate) {
  sk_buf_t in, out;
  sk_buf_init(&in);
  sk_buf_init(&out);
  sk_json_dump_buf(rev, &in);
  json_t *decoded = NULL;
  char err[512];
  if (pol_review_decode(in.data, in.len, 0, 0, &decoded, err, sizeof err)) fail_msg("decode: %s", err);
  pol_report_t r;
  pol_report_init(&r);
  const json_t *req = json_object_get(decoded, "request");
  assert_int_equal(mutate ? pol_mutate(s, req, &r) : pol_validate(s, req, &r), 0);
  assert_int_equal(pol_review_encode(decoded, &r, mutate, &out), 0);
  json_t *resp = NULL;
  assert_int_equal(sk_json_parse(out.data, out.len, 0, 0, &resp, err, sizeof err), 0);
  assert_string_equal(sk_json_get_str(resp, "apiVersion", ""), "admission.k8s.io/v1");
  assert_string_equal(sk_json_get_str(resp, "kind", ""), "AdmissionReview");
  assert_string_equal(sk_json_get_str(resp, "response.uid", ""), "705ab4f5-6393-11e8-b7cc-42010a800002");
  pol_report_done(&r);
  json_decref(decoded);
  sk_buf_done(&in);
  sk_buf_done(&out);
  return resp;
}

static int allowed(const pol_set_t *s, const char *op, const char *obj, const char *old, json_t **resp_out) {
  json_t *rev = review(op, obj, old, 0, NULL);
  json_t *resp = answer(s, rev, 0);
  json_decref(rev);
  int a = sk_json_get_bool(resp, "response.allowed", -1);
  assert_true(a == 0 || a == 1);
  if (!a) assert_int_equal(sk_json_get_int(resp, "response.status.code", 0), 403);
  if (resp_out) *resp_out = resp;
  else json_decref(resp);
  return a;
}

static const char *warnings(const json_t *resp) {
  static char buf[8192];
  buf[0] = 0;
  size_t i;
  json_t *w;
  json_array_foreach(sk_json_get(resp, "response.warnings"), i, w)
      snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s\n", json_string_value(w));
  return buf;
}

/* ---- base64 and an independent JSON Patch (python3 jsonpatch) ---- */

static size_t unbase64(const char *s, unsigned char *out, size_t cap) {
  size_t n = 0;
  unsigned v = 0;
  int bits = 0;
  for (; *s && *s != '='; s++) {
    const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = strchr(t, *s);
    if (!p) fail_msg("bad base64 char %c", *s);
    v = (v << 6) | (unsigned)(p - t);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n + 1 >= cap) fail_msg("base64 too long");
      out[n++] = (unsigned char)(v >> bits);
    }
  }
  out[n] = 0;
  return n;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

/* Applies patch to doc with python3's jsonpatch and returns the result. */
static json_t *py_apply(const json_t *doc, const json_t *patch) {
  const char *dir = sk_test_tmpdir();
  char dp[512], pp[512];
  snprintf(dp, sizeof dp, "%s/doc.json", dir);
  snprintf(pp, sizeof pp, "%s/patch.json", dir);
  write_file(dp, dump(doc));
  write_file(pp, dump(patch));
  static char out[65536];
  int st = sk_test_sh(out, sizeof out,
                      "python3 -c 'import json,sys,jsonpatch; d=json.load(open(sys.argv[1])); "
                      "p=jsonpatch.JsonPatch(json.load(open(sys.argv[2]))); print(json.dumps(p.apply(d)))' %s %s",
                      dp, pp);
  if (st != 0) fail_msg("python3 jsonpatch failed (%d) for patch %s", st, dump(patch));
  json_t *v = NULL;
  char err[256];
  if (sk_json_parse(out, strlen(out), 0, 0, &v, err, sizeof err)) fail_msg("python output: %s", out);
  return v;
}

/* Decodes the answer's patch, applies it to the original object with the
 * independent implementation and compares with the expected object. */
static void check_patch(const json_t *resp, const char *obj_yaml, const char *expect_yaml) {
  json_t *obj = Y(obj_yaml), *expect = Y(expect_yaml);
  const char *b64 = sk_json_get_str(resp, "response.patch", NULL);
  if (json_equal(obj, expect)) {
    assert_null(b64);
  } else {
    assert_non_null(b64);
    assert_string_equal(sk_json_get_str(resp, "response.patchType", ""), "JSONPatch");
    static unsigned char raw[65536];
    size_t n = unbase64(b64, raw, sizeof raw);
    json_t *patch = NULL;
    char err[256];
    assert_int_equal(sk_json_parse((char *)raw, n, 0, 0, &patch, err, sizeof err), 0);
    json_t *got = py_apply(obj, patch);
    if (!json_equal(got, expect)) fail_msg("patched object\n%s\nexpected\n%s\npatch %s", dump(got), dump(expect), dump(patch));
    json_decref(got);
    json_decref(patch);
  }
  json_decref(obj);
  json_decref(expect);
}

/* ---- building blocks ---- */

static void test_wildcard_quantity(void **state) {
  assert_true(pol_wildcard("*", ""));
  assert_true(pol_wildcard("?*", "a"));
  assert_false(pol_wildcard("?*", ""));
  assert_true(pol_wildcard("*:*", "nginx:1.25"));
  assert_false(pol_wildcard("*:*", "nginx"));
  assert_true(pol_wildcard("eu.foo.io/*", "eu.foo.io/app:1"));
  assert_true(pol_wildcard("a?c*d", "abcxxd"));
  assert_false(pol_wildcard("a?c", "ac"));
  double v;
  assert_int_equal(pol_quantity("100m", &v), 0);
  assert_true(v > 0.0999 && v < 0.1001);
  assert_int_equal(pol_quantity("1Gi", &v), 0);
  assert_true(v == 1073741824.0);
  assert_int_equal(pol_quantity("512Mi", &v), 0);
  assert_true(v == 536870912.0);
  assert_int_equal(pol_quantity("2k", &v), 0);
  assert_true(v == 2000.0);
  assert_int_equal(pol_quantity("1e3", &v), 0);
  assert_true(v == 1000.0);
  assert_int_equal(pol_quantity("1.5", &v), 0);
  assert_int_equal(pol_quantity("1Gb", &v), -1);
  assert_int_equal(pol_quantity("abc", &v), -1);
  assert_int_equal(pol_quantity("", &v), -1);
  assert_int_equal(pol_quantity("nan", &v), -1);
  assert_int_equal(pol_quantity("0x10", &v), -1);
}

static int sm(const char *pattern_json, const char *value_json) {
  json_t *p = json_loads(pattern_json, JSON_DECODE_ANY, NULL), *v = json_loads(value_json, JSON_DECODE_ANY, NULL);
  assert_non_null(p);
  assert_non_null(v);
  int r = pol_scalar_match(p, v);
  json_decref(p);
  json_decref(v);
  return r;
}

static void test_scalar_patterns(void **state) {
  assert_true(sm("\"?*\"", "\"x\""));
  assert_false(sm("\"?*\"", "\"\""));
  assert_true(sm("\"*\"", "\"\""));
  assert_true(sm("\">=100m\"", "\"200m\""));
  assert_true(sm("\">=100m\"", "\"0.1\""));
  assert_false(sm("\">100m\"", "\"100m\""));
  assert_true(sm("\"<=2Gi\"", "\"1024Mi\""));
  assert_false(sm("\"<=2Gi\"", "\"3Gi\""));
  assert_true(sm("\"<2Gi\"", "\"2000Mi\""));
  assert_true(sm("\">1\"", "2"));
  assert_false(sm("\">1\"", "\"abc\""));
  assert_true(sm("\"!*:latest\"", "\"nginx:1.2\""));
  assert_false(sm("\"!*:latest\"", "\"nginx:latest\""));
  assert_true(sm("\"eu.foo.io/* | bar.io/*\"", "\"bar.io/x:1\""));
  assert_false(sm("\"eu.foo.io/* | bar.io/*\"", "\"docker.io/x:1\""));
  assert_true(sm("\">1 & <5\"", "3"));
  assert_false(sm("\">1 & <5\"", "7"));
  assert_true(sm("\"1Gi\"", "\"1024Mi\"")); /* quantities compare by value */
  assert_true(sm("\"false\"", "false"));    /* strings against booleans as Kyverno does */
  assert_false(sm("\"false\"", "true"));
  assert_true(sm("false", "false"));
  assert_false(sm("false", "\"no\""));
  assert_true(sm("3", "\"3\""));
  assert_true(sm("3", "3.0"));
  assert_false(sm("3", "4"));
  assert_true(sm("null", "\"\""));
  assert_true(sm("null", "{}"));
  assert_false(sm("null", "\"x\""));
  assert_false(sm("\"*\"", "{\"a\":1}"));
  assert_true(sm("\"!0\"", "1"));
}

static pol_match_rc_t pm(const char *pattern_yaml, const char *value_yaml, char *path) {
  json_t *p = Y(pattern_yaml), *v = Y(value_yaml);
  char buf[512];
  pol_match_rc_t r = pol_pattern_match(p, v, path ? path : buf, 512);
  json_decref(p);
  json_decref(v);
  return r;
}

static void test_anchor_conditional(void **state) {
  const char *pat = "spec:\n  containers:\n  - (image): '*:latest'\n    imagePullPolicy: Always\n";
  char path[512];
  /* condition holds, requirement fails */
  assert_int_equal(pm(pat, "spec: {containers: [{image: 'nginx:latest', imagePullPolicy: IfNotPresent}]}", path),
                   POL_M_FAIL);
  assert_string_equal(path, "/spec/containers/0/imagePullPolicy/");
  assert_int_equal(pm(pat, "spec: {containers: [{image: 'nginx:latest', imagePullPolicy: Always}]}", NULL), POL_M_OK);
  /* condition does not hold anywhere: skip */
  assert_int_equal(pm(pat, "spec: {containers: [{image: 'nginx:1.2'}]}", NULL), POL_M_SKIP);
  /* mixed: the non-matching element is skipped, the other one checked */
  assert_int_equal(pm(pat, "spec: {containers: [{image: 'a:1'}, {image: 'b:latest', imagePullPolicy: Never}]}", path),
                   POL_M_FAIL);
  assert_string_equal(path, "/spec/containers/1/imagePullPolicy/");
  /* missing key under a conditional anchor: skip */
  assert_int_equal(pm("(kind): Pod\nspec: {x: 1}\n", "spec: {x: 2}", NULL), POL_M_SKIP);
}

static void test_anchor_equality(void **state) {
  const char *pat = "spec:\n  =(hostNetwork): false\n  containers:\n  - =(securityContext):\n      =(privileged): 'false'\n";
  char path[512];
  assert_int_equal(pm(pat, "spec: {containers: [{name: a}]}", NULL), POL_M_OK);
  assert_int_equal(pm(pat, "spec: {hostNetwork: false, containers: [{securityContext: {privileged: false}}]}", NULL),
                   POL_M_OK);
  assert_int_equal(pm(pat, "spec: {hostNetwork: true, containers: [{name: a}]}", path), POL_M_FAIL);
  assert_string_equal(path, "/spec/hostNetwork/");
  assert_int_equal(pm(pat, "spec: {containers: [{name: a}, {securityContext: {privileged: true}}]}", path), POL_M_FAIL);
  assert_string_equal(path, "/spec/containers/1/securityContext/privileged/");
  /* a plain key must exist */
  assert_int_equal(pm(pat, "spec: {hostNetwork: false}", path), POL_M_FAIL);
  assert_string_equal(path, "/spec/containers/");
}

static void test_anchor_existence_negation_global(void **state) {
  const char *ex = "spec:\n  ^(containers):\n  - image: 'registry.skiff.dev/*'\n";
  assert_int_equal(pm(ex, "spec: {containers: [{image: 'a/b'}, {image: 'registry.skiff.dev/x'}]}", NULL), POL_M_OK);
  assert_int_equal(pm(ex, "spec: {containers: [{image: 'a/b'}]}", NULL), POL_M_FAIL);
  assert_int_equal(pm(ex, "spec: {}", NULL), POL_M_FAIL);
  const char *neg = "metadata:\n  =(annotations):\n    X(skiff.dev/unsafe): 'null'\n";
  char path[512];
  assert_int_equal(pm(neg, "metadata: {annotations: {a: b}}", NULL), POL_M_OK);
  assert_int_equal(pm(neg, "metadata: {}", NULL), POL_M_OK);
  assert_int_equal(pm(neg, "metadata: {annotations: {skiff.dev/unsafe: 'yes'}}", path), POL_M_FAIL);
  assert_string_equal(path, "/metadata/annotations/skiff.dev/unsafe/");
  /* a global anchor that does not hold skips the whole pattern */
  const char *gl = "spec:\n  containers:\n  - <(image): 'corp/*'\n  imagePullSecrets:\n  - name: regcred\n";
  assert_int_equal(pm(gl, "spec: {containers: [{image: 'nginx'}]}", NULL), POL_M_GSKIP);
  assert_int_equal(pm(gl, "spec: {containers: [{image: 'corp/x'}], imagePullSecrets: [{name: regcred}]}", NULL),
                   POL_M_OK);
  assert_int_equal(pm(gl, "spec: {containers: [{image: 'corp/x'}]}", path), POL_M_FAIL);
  /* depth is bounded */
  json_t *deep = json_object(), *cur = deep;
  for (int i = 0; i < 200; i++) {
    json_t *n = json_object();
    json_object_set_new(cur, "a", n);
    cur = n;
  }
  assert_int_equal(pol_pattern_match(deep, deep, NULL, 0), POL_M_FAIL);
  json_decref(deep);
}

static void test_variables(void **state) {
  json_t *ctx = Y("request:\n  operation: CREATE\n  userInfo: {username: alice}\n  object:\n    metadata:\n"
                  "      name: web\n      labels: {app.kubernetes.io/name: shop, n: '3'}\n"
                  "    spec:\n      replicas: 3\n      containers: [{name: a, image: 'x:1', args: [p]}, {name: b, image: 'y:2', args: [q, r]}]\n");
  json_t *out = NULL;
  char err[256];
  json_t *in = Y("a: '{{ request.object.metadata.name }}'\n"
                 "b: 'user {{request.userInfo.username}} did {{ request.operation }}'\n"
                 "c: '{{ request.object.spec.replicas }}'\n"
                 "d: '{{ request.object.metadata.labels.\"app.kubernetes.io/name\" }}'\n"
                 "e: '{{ request.object.spec.containers[1].image }}'\n"
                 "f: '{{ request.object.spec.containers[].name }}'\n"
                 "g: '{{ request.object.metadata.labels.missing || ''none'' }}'\n"
                 "h: 'n={{ request.object.spec.replicas }}'\n"
                 "i: 'literal \\{{ kept }}'\n"
                 "j: [1, true, '{{ request.object.spec.containers[-1].name }}']\n");
  assert_int_equal(pol_substitute(in, ctx, &out, err, sizeof err), 0);
  assert_string_equal(dump(out), "{\"a\":\"web\",\"b\":\"user alice did CREATE\",\"c\":3,\"d\":\"shop\",\"e\":\"y:2\","
                                 "\"f\":[\"a\",\"b\"],\"g\":\"none\",\"h\":\"n=3\",\"i\":\"literal {{ kept }}\","
                                 "\"j\":[1,true,\"b\"]}");
  json_decref(out);
  json_decref(in);
  /* JSON literals after ||, and nested projections flatten */
  in = Y("a: '{{ request.object.spec.nothing || `[1, 2]` }}'\nb: '{{ request.object.spec.containers[].args[] }}'\n");
  assert_int_equal(pol_substitute(in, ctx, &out, err, sizeof err), 0);
  assert_string_equal(dump(out), "{\"a\":[1,2],\"b\":[\"p\",\"q\",\"r\"]}");
  json_decref(out);
  json_decref(in);
  /* missing variables are errors */
  in = json_string("{{ request.object.metadata.namespace }}");
  assert_int_equal(pol_substitute(in, ctx, &out, err, sizeof err), SK_ENOTFOUND);
  assert_has(err, "request.object.metadata.namespace not found");
  json_decref(in);
  in = json_string("x {{ request.oldObject.metadata.name }} y");
  assert_int_equal(pol_substitute(in, ctx, &out, err, sizeof err), SK_ENOTFOUND);
  json_decref(in);
  in = json_string("{{ request.object[ }}");
  assert_true(pol_substitute(in, ctx, &out, err, sizeof err) < 0);
  assert_has(err, "not a supported expression");
  json_decref(in);
  /* bounded: too many variables in one string */
  sk_buf_t b;
  sk_buf_init(&b);
  for (int i = 0; i < 100; i++) sk_buf_puts(&b, "{{request.operation}}");
  in = json_string(sk_buf_cstr(&b));
  assert_int_equal(pol_substitute(in, ctx, &out, err, sizeof err), SK_ELIMIT);
  json_decref(in);
  sk_buf_done(&b);
  /* no variables: the same value comes back */
  in = Y("{a: [1, 2], b: plain}");
  assert_int_equal(pol_substitute(in, ctx, &out, err, sizeof err), 0);
  assert_ptr_equal(in, out);
  json_decref(out);
  json_decref(in);
  json_decref(ctx);
}

static int op(const char *name, const char *key_json, const char *value_json) {
  json_t *k = json_loads(key_json, JSON_DECODE_ANY, NULL), *v = json_loads(value_json, JSON_DECODE_ANY, NULL);
  assert_non_null(k);
  assert_non_null(v);
  char err[128];
  int r = pol_operator(name, k, v, err, sizeof err);
  json_decref(k);
  json_decref(v);
  return r;
}

static void test_operators(void **state) {
  assert_int_equal(op("Equals", "\"CREATE\"", "\"CREATE\""), 1);
  assert_int_equal(op("Equals", "\"nginx:1\"", "\"nginx:*\""), 1);
  assert_int_equal(op("Equals", "3", "\"3\""), 1);
  assert_int_equal(op("Equals", "\"1Gi\"", "\"1024Mi\""), 1);
  assert_int_equal(op("Equals", "{\"a\":1}", "{\"a\":1}"), 1);
  assert_int_equal(op("Equals", "true", "\"true\""), 1);
  assert_int_equal(op("Equals", "\"a\"", "\"b\""), 0);
  assert_int_equal(op("NotEquals", "\"a\"", "\"b\""), 1);
  assert_int_equal(op("NotEquals", "\"a\"", "\"a\""), 0);
  assert_int_equal(op("In", "\"b\"", "[\"a\",\"b\"]"), 1);
  assert_int_equal(op("In", "\"c\"", "[\"a\",\"b\"]"), 0);
  assert_int_equal(op("In", "[\"a\",\"b\"]", "[\"a\",\"b\",\"c\"]"), 1);
  assert_int_equal(op("NotIn", "\"c\"", "[\"a\",\"b\"]"), 1);
  assert_int_equal(op("NotIn", "\"a\"", "[\"a\",\"b\"]"), 0);
  assert_int_equal(op("AnyIn", "[\"x\",\"b\"]", "[\"a\",\"b\"]"), 1);
  assert_int_equal(op("AnyIn", "[\"x\",\"y\"]", "[\"a\",\"b\"]"), 0);
  assert_int_equal(op("AnyIn", "\"kube-system\"", "[\"kube-*\"]"), 1);
  assert_int_equal(op("AllIn", "[\"a\",\"b\"]", "[\"a\",\"b\",\"c\"]"), 1);
  assert_int_equal(op("AllIn", "[\"a\",\"x\"]", "[\"a\",\"b\"]"), 0);
  assert_int_equal(op("AnyNotIn", "[\"a\",\"x\"]", "[\"a\",\"b\"]"), 1);
  assert_int_equal(op("AnyNotIn", "[\"a\",\"b\"]", "[\"a\",\"b\"]"), 0);
  assert_int_equal(op("AllNotIn", "[\"x\",\"y\"]", "[\"a\",\"b\"]"), 1);
  assert_int_equal(op("AllNotIn", "[\"a\",\"y\"]", "[\"a\",\"b\"]"), 0);
  assert_int_equal(op("GreaterThan", "11", "10"), 1);
  assert_int_equal(op("GreaterThan", "10", "10"), 0);
  assert_int_equal(op("GreaterThan", "\"2Gi\"", "\"1Gi\""), 1);
  assert_int_equal(op("GreaterThanOrEquals", "10", "10"), 1);
  assert_int_equal(op("GreaterThanOrEquals", "\"100m\"", "\"0.2\""), 0);
  assert_int_equal(op("LessThan", "\"500m\"", "1"), 1);
  assert_int_equal(op("LessThan", "\"2h\"", "\"90m\""), 0);
  assert_int_equal(op("LessThanOrEquals", "\"30s\"", "\"30s\""), 1);
  assert_int_equal(op("LessThanOrEquals", "\"abc\"", "1"), 0);
  assert_true(op("Frobnicates", "1", "1") < 0);
}

static void test_conditions_any_all(void **state) {
  json_t *ctx = Y("request: {operation: UPDATE, object: {spec: {replicas: 12}}, userInfo: {username: bob}}");
  char err[256];
  json_t *c = Y("any:\n- {key: '{{ request.operation }}', operator: Equals, value: DELETE}\n"
                "- {key: '{{ request.object.spec.replicas }}', operator: GreaterThan, value: 10}\n");
  assert_int_equal(pol_conditions(c, ctx, err, sizeof err), 1);
  json_decref(c);
  c = Y("all:\n- {key: '{{ request.operation }}', operator: Equals, value: UPDATE}\n"
        "- {key: '{{ request.userInfo.username }}', operator: AnyIn, value: [alice]}\n");
  assert_int_equal(pol_conditions(c, ctx, err, sizeof err), 0);
  json_decref(c);
  c = Y("any: [{key: a, operator: Equals, value: a}]\nall: [{key: a, operator: Equals, value: b}]\n");
  assert_int_equal(pol_conditions(c, ctx, err, sizeof err), 0);
  json_decref(c);
  c = Y("- {key: '{{ request.object.spec.replicas }}', operator: LessThan, value: 20}\n");
  assert_int_equal(pol_conditions(c, ctx, err, sizeof err), 1);
  json_decref(c);
  c = Y("all: [{key: '{{ request.object.missing }}', operator: Equals, value: x}]");
  assert_true(pol_conditions(c, ctx, err, sizeof err) < 0);
  assert_has(err, "not found");
  json_decref(c);
  json_decref(ctx);
}

static void patch_ok(const char *doc, const char *ops, const char *expect) {
  json_t *d = json_loads(doc, JSON_DECODE_ANY, NULL), *o = json_loads(ops, 0, NULL), *e = json_loads(expect, JSON_DECODE_ANY, NULL);
  assert_non_null(d);
  assert_non_null(o);
  assert_non_null(e);
  char err[256];
  if (pol_jsonpatch_apply(&d, o, err, sizeof err)) fail_msg("patch %s: %s", ops, err);
  if (!json_equal(d, e)) fail_msg("got %s want %s", dump(d), expect);
  json_decref(d);
  json_decref(o);
  json_decref(e);
}

static void patch_err(const char *doc, const char *ops, const char *msg) {
  json_t *d = json_loads(doc, JSON_DECODE_ANY, NULL), *o = json_loads(ops, 0, NULL);
  assert_non_null(o);
  json_t *before = json_deep_copy(d);
  char err[256];
  assert_true(pol_jsonpatch_apply(&d, o, err, sizeof err) < 0);
  assert_has(err, msg);
  assert_true(json_equal(d, before)); /* all or nothing */
  json_decref(d);
  json_decref(before);
  json_decref(o);
}

static void test_jsonpatch_rfc6902(void **state) {
  /* the examples of RFC 6902 appendix A */
  patch_ok("{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/baz\",\"value\":\"qux\"}]", "{\"baz\":\"qux\",\"foo\":\"bar\"}");
  patch_ok("{\"foo\":[\"bar\",\"baz\"]}", "[{\"op\":\"add\",\"path\":\"/foo/1\",\"value\":\"qux\"}]",
           "{\"foo\":[\"bar\",\"qux\",\"baz\"]}");
  patch_ok("{\"baz\":\"qux\",\"foo\":\"bar\"}", "[{\"op\":\"remove\",\"path\":\"/baz\"}]", "{\"foo\":\"bar\"}");
  patch_ok("{\"foo\":[\"bar\",\"qux\",\"baz\"]}", "[{\"op\":\"remove\",\"path\":\"/foo/1\"}]", "{\"foo\":[\"bar\",\"baz\"]}");
  patch_ok("{\"baz\":\"qux\",\"foo\":\"bar\"}", "[{\"op\":\"replace\",\"path\":\"/baz\",\"value\":\"boo\"}]",
           "{\"baz\":\"boo\",\"foo\":\"bar\"}");
  patch_ok("{\"foo\":{\"bar\":\"baz\",\"waldo\":\"fred\"},\"qux\":{\"corge\":\"grault\"}}",
           "[{\"op\":\"move\",\"from\":\"/foo/waldo\",\"path\":\"/qux/thud\"}]",
           "{\"foo\":{\"bar\":\"baz\"},\"qux\":{\"corge\":\"grault\",\"thud\":\"fred\"}}");
  patch_ok("{\"foo\":[\"all\",\"grass\",\"cows\",\"eat\"]}", "[{\"op\":\"move\",\"from\":\"/foo/1\",\"path\":\"/foo/3\"}]",
           "{\"foo\":[\"all\",\"cows\",\"eat\",\"grass\"]}");
  patch_ok("{\"baz\":\"qux\",\"foo\":[\"a\",2,\"c\"]}",
           "[{\"op\":\"test\",\"path\":\"/baz\",\"value\":\"qux\"},{\"op\":\"test\",\"path\":\"/foo/1\",\"value\":2}]",
           "{\"baz\":\"qux\",\"foo\":[\"a\",2,\"c\"]}");
  patch_err("{\"baz\":\"qux\"}", "[{\"op\":\"test\",\"path\":\"/baz\",\"value\":\"bar\"}]", "test failed");
  patch_ok("{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/child\",\"value\":{\"grandchild\":{}}}]",
           "{\"foo\":\"bar\",\"child\":{\"grandchild\":{}}}");
  patch_err("{\"foo\":\"bar\"}", "[{\"op\":\"add\",\"path\":\"/baz/bat\",\"value\":\"qux\"}]", "parent does not exist");
  patch_ok("{\"/\":9,\"~1\":10}", "[{\"op\":\"test\",\"path\":\"/~01\",\"value\":10}]", "{\"/\":9,\"~1\":10}");
  patch_ok("{\"/\":9,\"~1\":10}", "[{\"op\":\"replace\",\"path\":\"/~1\",\"value\":1}]", "{\"/\":1,\"~1\":10}");
  patch_err("{\"/\":9,\"~1\":10}", "[{\"op\":\"test\",\"path\":\"/~01\",\"value\":\"10\"}]", "test failed");
  patch_ok("{\"foo\":[\"bar\"]}", "[{\"op\":\"add\",\"path\":\"/foo/-\",\"value\":[\"abc\",\"def\"]}]",
           "{\"foo\":[\"bar\",[\"abc\",\"def\"]]}");
  patch_ok("{\"a\":{\"b\":1}}", "[{\"op\":\"copy\",\"from\":\"/a\",\"path\":\"/c\"},{\"op\":\"replace\",\"path\":\"/c/b\",\"value\":2}]",
           "{\"a\":{\"b\":1},\"c\":{\"b\":2}}");
  patch_ok("{\"a\":1}", "[{\"op\":\"replace\",\"path\":\"\",\"value\":[1]}]", "[1]");
  patch_ok("{\"n\":1}", "[{\"op\":\"test\",\"path\":\"/n\",\"value\":1.0}]", "{\"n\":1}");
  /* errors */
  patch_err("{\"a\":[1]}", "[{\"op\":\"add\",\"path\":\"/a/2\",\"value\":1}]", "out of range");
  patch_err("{\"a\":[1,2]}", "[{\"op\":\"remove\",\"path\":\"/a/01\"}]", "does not exist");
  patch_err("{\"a\":1}", "[{\"op\":\"remove\",\"path\":\"/b\"}]", "does not exist");
  patch_err("{\"a\":1}", "[{\"op\":\"replace\",\"path\":\"/b\",\"value\":1}]", "does not exist");
  patch_err("{\"a\":{\"b\":1}}", "[{\"op\":\"move\",\"from\":\"/a\",\"path\":\"/a/b/c\"}]", "own child");
  patch_err("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"a\",\"value\":1}]", "must start with /");
  patch_err("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"/~2\",\"value\":1}]", "~ must be followed");
  patch_err("{\"a\":1}", "[{\"op\":\"frob\",\"path\":\"/a\"}]", "unknown op");
  patch_err("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"/b\"}]", "missing \"value\"");
  patch_err("{\"a\":1}", "[{\"op\":\"add\",\"path\":\"/b\",\"value\":1},{\"op\":\"remove\",\"path\":\"/zz\"}]",
            "operation 1");
}

static void diff_roundtrip(const char *a_yaml, const char *b_yaml) {
  json_t *a = Y(a_yaml), *b = Y(b_yaml);
  json_t *ops = pol_jsonpatch_diff(a, b);
  json_t *got = py_apply(a, ops);
  if (!json_equal(got, b)) fail_msg("diff %s applied by python gives %s, want %s", dump(ops), dump(got), dump(b));
  json_t *mine = json_deep_copy(a);
  char err[256];
  assert_int_equal(pol_jsonpatch_apply(&mine, ops, err, sizeof err), 0);
  assert_true(json_equal(mine, b));
  json_decref(mine);
  json_decref(got);
  json_decref(ops);
  json_decref(a);
  json_decref(b);
}

static void test_jsonpatch_diff(void **state) {
  diff_roundtrip("{a: 1, b: {c: [1, 2, 3]}}", "{a: 2, b: {c: [1, 3]}, d: x}");
  diff_roundtrip("{metadata: {labels: {app: x}}}", "{metadata: {labels: {app: x, a/b: '1', t~x: '2'}}}");
  diff_roundtrip("{l: [1]}", "{l: [1, {x: 1}, [2]]}");
  diff_roundtrip("{l: [1, 2, 3, 4]}", "{l: []}");
  diff_roundtrip("{a: {b: 1}}", "{a: [1]}");
  diff_roundtrip("{a: 1}", "{a: 1}");
  /* indexes past 9, keys with several escapes */
  diff_roundtrip("{l: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}", "{l: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 21]}");
  diff_roundtrip("{m: {'~/a//b~~': 1, n: 2.0}}", "{m: {'~/a//b~~': 3, n: 2.5, '/~': {x: [y]}}}");
}

static void test_smp_anchors(void **state) {
  char err[256];
  json_t *d = Y("metadata: {labels: {foo: keep}}\nspec: {containers: [{name: a, image: 'x:latest'}, {name: b, image: 'y:1'}]}");
  json_t *p = Y("metadata:\n  labels:\n    +(foo): bar\n    +(team): core\n"
                "spec:\n  containers:\n  - (image): '*:latest'\n    imagePullPolicy: Always\n");
  assert_int_equal(pol_smp_apply(&d, p, err, sizeof err), 1);
  assert_string_equal(dump(d), "{\"metadata\":{\"labels\":{\"foo\":\"keep\",\"team\":\"core\"}},\"spec\":{\"containers\":"
                               "[{\"name\":\"a\",\"image\":\"x:latest\",\"imagePullPolicy\":\"Always\"},"
                               "{\"name\":\"b\",\"image\":\"y:1\"}]}}");
  json_decref(p);
  /* merge by name, add a new element, delete with null */
  p = Y("spec:\n  containers:\n  - name: b\n    image: 'y:2'\n  - name: c\n    image: 'z:1'\nmetadata: {labels: {foo: null}}\n");
  assert_int_equal(pol_smp_apply(&d, p, err, sizeof err), 1);
  assert_string_equal(dump(d), "{\"metadata\":{\"labels\":{\"team\":\"core\"}},\"spec\":{\"containers\":"
                               "[{\"name\":\"a\",\"image\":\"x:latest\",\"imagePullPolicy\":\"Always\"},"
                               "{\"name\":\"b\",\"image\":\"y:2\"},{\"name\":\"c\",\"image\":\"z:1\"}]}}");
  json_decref(p);
  /* a top-level condition that fails skips the patch */
  p = Y("(metadata):\n  labels:\n    team: other\nspec: {x: 1}\n");
  assert_int_equal(pol_smp_apply(&d, p, err, sizeof err), 0);
  json_decref(p);
  json_decref(d);
}

/* ---- loading ---- */

static void load_err(const char *text, const char *msg) {
  pol_set_t s;
  pol_set_init(&s);
  char err[1024];
  assert_true(pol_set_load_text(&s, "p.yaml", text, strlen(text), err, sizeof err) < 0);
  assert_has(err, msg);
  assert_int_equal(s.n, 0);
  pol_set_done(&s);
}

static void test_load_errors(void **state) {
  const char *good = "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: ok}\nspec:\n  rules:\n"
                     "  - name: r\n    match: {resources: {kinds: [Pod]}}\n    validate: {pattern: {a: b}}\n";
  pol_set_t s;
  pol_set_init(&s);
  load_text(&s, good);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.v[0].action, POL_AUDIT);
  pol_set_done(&s);
  char buf[4096];
  snprintf(buf, sizeof buf, "%s---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", good);
  load_err(buf, "p.yaml: document 2: apiVersion: v1 is not a policy");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec:\n  rules:\n"
           "  - name: r\n    match: {any: [{resources: {kinds: [Pod], namespaceSelector: {}}}]}\n"
           "    validate: {pattern: {a: b}}\n",
           "document 1: spec.rules[0].match.any[0].resources.namespaceSelector: namespaceSelector is not supported");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec:\n  validationFailureAction: Block\n"
           "  rules: [{name: r, match: {resources: {kinds: [Pod]}}, validate: {pattern: {}}}]\n",
           "spec.validationFailureAction: must be Enforce or Audit");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec:\n"
           "  rules: [{name: r, match: {resources: {kinds: [Pod]}}, generate: {kind: X}}]\n",
           "spec.rules[0].generate: generate is not supported");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec:\n"
           "  rules: [{name: r, match: {resources: {kinds: [Pod]}}, mutate: {patchesJson6902: '- op: bogus'}}]\n",
           "spec.rules[0].mutate: patchesJson6902[0]: op must be");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec: {rules: []}\n",
           "spec.rules: must be a non-empty list");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {}\nspec: {rules: []}\n", "metadata.name: is required");
  load_err("a: [\n", "p.yaml:");
  load_err("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec:\n"
           "  rules: [{name: r, match: {resources: {kinds: [Pod]}}, validate: {pattern: {}, deny: {}}}]\n",
           "exactly one of pattern, anyPattern or deny");
  /* the same policy twice */
  snprintf(buf, sizeof buf, "%s---\n%s", good, good);
  load_err(buf, "document 2: policy ok is already loaded");
  /* skiff.dev/v1 Policy is the same spec */
  pol_set_init(&s);
  load_text(&s, "apiVersion: skiff.dev/v1\nkind: Policy\nmetadata: {name: sk}\nspec:\n  validationFailureAction: enforce\n"
                "  rules:\n  - name: r\n    match: {resources: {kinds: [Pod]}}\n    validate: {pattern: {a: b}}\n");
  assert_int_equal(s.v[0].action, POL_ENFORCE);
  assert_null(s.v[0].namespace);
  pol_set_done(&s);
  /* a directory */
  pol_set_init(&s);
  load_example(&s, "");
  assert_true(s.n >= 11);
  pol_set_done(&s);
}

/* ---- the example policies, as Kyverno documents them ---- */

#define POD(labels, spec)                                                                                           \
  "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\n  namespace: default\n  labels: " labels "\nspec: " spec "\n"

static void test_example_require_labels(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_example(&s, "require-labels.yaml");
  json_t *resp;
  assert_false(allowed(&s, "CREATE", POD("{app: nginx}", "{containers: [{name: nginx, image: 'nginx:1.25'}]}"), NULL, &resp));
  const char *msg = sk_json_get_str(resp, "response.status.message", "");
  assert_has(msg, "resource Pod/default/nginx was blocked due to the following policies");
  assert_has(msg, "require-labels:\n  check-for-labels: validation error: label 'app.kubernetes.io/name' is required. "
                  "rule check-for-labels failed at path /metadata/labels/app.kubernetes.io/name/");
  json_decref(resp);
  assert_true(allowed(&s, "CREATE", POD("{app.kubernetes.io/name: web}", "{containers: [{name: nginx, image: 'nginx'}]}"), NULL, NULL));
  /* empty value: ?* needs at least one character */
  assert_false(allowed(&s, "CREATE", POD("{app.kubernetes.io/name: ''}", "{containers: []}"), NULL, NULL));
  /* UPDATE removing the label is denied; oldObject present */
  assert_false(allowed(&s, "UPDATE", POD("{}", "{containers: []}"), POD("{app.kubernetes.io/name: web}", "{containers: []}"), NULL));
  /* other kinds are not matched */
  assert_true(allowed(&s, "CREATE", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\n", NULL, NULL));
  /* DELETE: pattern rules do not apply */
  assert_true(allowed(&s, "DELETE", NULL, POD("{}", "{containers: []}"), NULL));
  /* dryRun: the same answer */
  json_t *rev = review("CREATE", POD("{app: x}", "{containers: []}"), NULL, 1, NULL);
  json_t *r1 = answer(&s, rev, 0);
  assert_false(sk_json_get_bool(r1, "response.allowed", 1));
  json_t *rev2 = review("CREATE", POD("{app: x}", "{containers: []}"), NULL, 0, NULL);
  json_t *r2 = answer(&s, rev2, 0);
  assert_true(json_equal(r1, r2));
  json_decref(r1);
  json_decref(r2);
  json_decref(rev);
  json_decref(rev2);
  pol_set_done(&s);
}

/* examples/policies-platform (what control enforces under `skiff up`):
 * Skiff's Service, Route and the HTTPRoute it accepts need a team label. */
static void test_example_platform_team_label(void **state) {
  (void)state;
  pol_set_t s;
  pol_set_init(&s);
  char path[1024], err[1024];
  const char *src = getenv("SKIFF_SRC_DIR");
  snprintf(path, sizeof path, "%s/examples/policies-platform", src ? src : ".");
  if (pol_set_load_path(&s, path, err, sizeof err)) fail_msg("load %s: %s", path, err);
  json_t *resp;
  assert_false(allowed(&s, "CREATE",
                       "apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: web, namespace: default, labels: {app: web}}\n"
                       "spec: {endpoints: ['127.0.0.1:8081']}\n",
                       NULL, &resp));
  const char *msg = sk_json_get_str(resp, "response.status.message", "");
  assert_has(msg, "resource Service/default/web was blocked due to the following policies");
  assert_has(msg, "require-team-label:\n  check-team-label: validation error: label 'team' is required on every Service, "
                  "Route and HTTPRoute: name the team that owns it.");
  json_decref(resp);
  assert_true(allowed(&s, "CREATE",
                      "apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: web, namespace: default, labels: {team: shop}}\n"
                      "spec: {endpoints: ['127.0.0.1:8081']}\n",
                      NULL, NULL));
  assert_false(allowed(&s, "CREATE", "apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: r, namespace: default, labels: {team: ''}}\n",
                       NULL, NULL));
  assert_false(allowed(&s, "CREATE",
                       "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h, namespace: default}\n", NULL,
                       NULL));
  /* an UPDATE dropping the label is refused too; other kinds are not matched */
  assert_false(allowed(&s, "UPDATE", "apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: r, namespace: default}\n",
                       "apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: r, namespace: default, labels: {team: a}}\n", NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a, namespace: argocd}\n", NULL,
                      NULL));
  pol_set_done(&s);
}

static void test_example_image_policies(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_example(&s, "disallow-latest-tag.yaml");
  load_example(&s, "restrict-image-registries.yaml");
  json_t *resp;
  assert_false(allowed(&s, "CREATE", POD("{}", "{containers: [{name: a, image: 'bar.io/nginx:latest'}]}"), NULL, &resp));
  const char *msg = sk_json_get_str(resp, "response.status.message", "");
  assert_has(msg, "validate-image-tag: validation error: Using a mutable image tag e.g. 'latest' is not allowed. "
                  "rule validate-image-tag failed at path /spec/containers/0/image/");
  assert_null(strstr(msg, "restrict-image-registries"));
  json_decref(resp);
  assert_false(allowed(&s, "CREATE", POD("{}", "{containers: [{name: a, image: 'bar.io/nginx'}]}"), NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "An image tag is required.");
  json_decref(resp);
  assert_false(allowed(&s, "CREATE", POD("{}", "{containers: [{name: a, image: 'docker.io/nginx:1'}]}"), NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "restrict-image-registries:\n  validate-registries: validation error: Unknown image registry.");
  json_decref(resp);
  assert_false(allowed(&s, "CREATE",
                       POD("{}", "{initContainers: [{name: i, image: 'evil.io/x:1'}], containers: [{name: a, image: 'eu.foo.io/x:1'}]}"),
                       NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "/spec/initContainers/0/image/");
  json_decref(resp);
  assert_true(allowed(&s, "CREATE", POD("{}", "{containers: [{name: a, image: 'eu.foo.io/x:1.2'}, {name: b, image: 'bar.io/y:2'}]}"), NULL, NULL));
  pol_set_done(&s);
}

static void test_example_pod_security(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_example(&s, "disallow-privileged-containers.yaml");
  load_example(&s, "disallow-host-namespaces.yaml");
  load_example(&s, "require-requests-limits.yaml");
  const char *res = "resources: {requests: {memory: 64Mi, cpu: 100m}, limits: {memory: 128Mi}}";
  char spec[1024], pod[2048];
  snprintf(spec, sizeof spec, "{containers: [{name: a, image: 'x:1', %s}]}", res);
  snprintf(pod, sizeof pod, POD("{}", "%s"), spec);
  assert_true(allowed(&s, "CREATE", pod, NULL, NULL));
  /* privileged */
  snprintf(spec, sizeof spec, "{containers: [{name: a, image: 'x:1', securityContext: {privileged: true}, %s}]}", res);
  snprintf(pod, sizeof pod, POD("{}", "%s"), spec);
  json_t *resp;
  assert_false(allowed(&s, "CREATE", pod, NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""),
             "privileged-containers: validation error: Privileged mode is disallowed.");
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "/spec/containers/0/securityContext/privileged/");
  json_decref(resp);
  snprintf(spec, sizeof spec, "{containers: [{name: a, image: 'x:1', securityContext: {privileged: false}, %s}]}", res);
  snprintf(pod, sizeof pod, POD("{}", "%s"), spec);
  assert_true(allowed(&s, "CREATE", pod, NULL, NULL));
  /* host namespaces */
  snprintf(spec, sizeof spec, "{hostNetwork: true, containers: [{name: a, image: 'x:1', %s}]}", res);
  snprintf(pod, sizeof pod, POD("{}", "%s"), spec);
  assert_false(allowed(&s, "CREATE", pod, NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "host-namespaces: validation error: Sharing the host namespaces is disallowed.");
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "/spec/hostNetwork/");
  json_decref(resp);
  snprintf(spec, sizeof spec, "{hostPID: false, hostIPC: false, containers: [{name: a, image: 'x:1', %s}]}", res);
  snprintf(pod, sizeof pod, POD("{}", "%s"), spec);
  assert_true(allowed(&s, "CREATE", pod, NULL, NULL));
  /* requests/limits */
  assert_false(allowed(&s, "CREATE", POD("{}", "{containers: [{name: a, image: 'x:1', resources: {requests: {cpu: 1}}}]}"), NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "CPU and memory resource requests and limits are required.");
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "/spec/containers/0/resources/requests/memory/");
  json_decref(resp);
  /* the Audit rule: allowed, with a warning */
  assert_true(allowed(&s, "CREATE",
                      POD("{}", "{containers: [{name: a, image: 'x:1', resources: {requests: {memory: 1Gi, cpu: '2'}, limits: {memory: 4Gi}}}]}"),
                      NULL, &resp));
  assert_has(warnings(resp), "policy require-requests-limits.memory-limit-at-most-2gi: validation error: memory limits above 2Gi need a review.");
  json_decref(resp);
  assert_true(allowed(&s, "CREATE",
                      POD("{}", "{containers: [{name: a, image: 'x:1', resources: {requests: {memory: 1Gi, cpu: '2'}, limits: {memory: 2048Mi}}}]}"),
                      NULL, &resp));
  assert_null(sk_json_get(resp, "response.warnings"));
  json_decref(resp);
  pol_set_done(&s);
}

static void test_example_deny_delete_and_audit(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_example(&s, "block-protected-deletes.yaml");
  load_example(&s, "limit-replicas.yaml");
  const char *cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: prod, labels: {protected: 'true'}}\n";
  json_t *resp;
  assert_false(allowed(&s, "DELETE", NULL, cm, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""),
             "block-deletes-for-protected: Deleting ConfigMap/settings is not allowed: it is protected.");
  json_decref(resp);
  /* the same object may be created and updated */
  assert_true(allowed(&s, "CREATE", cm, NULL, NULL));
  assert_true(allowed(&s, "UPDATE", cm, cm, NULL));
  /* unprotected deletes pass; the exclude block lets admins through */
  assert_true(allowed(&s, "DELETE", NULL, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: prod}\n", NULL));
  json_t *rev = review("DELETE", NULL, cm, 0, "admin:ops");
  resp = answer(&s, rev, 0);
  assert_true(sk_json_get_bool(resp, "response.allowed", 0));
  json_decref(resp);
  json_decref(rev);
  /* Audit: allowed with a warning carrying the substituted message */
  const char *dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: prod}\nspec: {replicas: 12}\n";
  assert_true(allowed(&s, "CREATE", dep, NULL, &resp));
  assert_has(warnings(resp), "policy limit-replicas.max-ten-replicas: Deployment web asks for 12 replicas; at most 10 are allowed.");
  json_decref(resp);
  assert_true(allowed(&s, "UPDATE", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: prod}\nspec: {replicas: 3}\n",
                      dep, &resp));
  assert_null(sk_json_get(resp, "response.warnings"));
  json_decref(resp);
  pol_set_done(&s);
}

static json_t *mutate_answer(const pol_set_t *s, const char *obj) {
  json_t *rev = review("CREATE", obj, NULL, 0, "jane");
  json_t *resp = answer(s, rev, 1);
  json_decref(rev);
  assert_true(sk_json_get_bool(resp, "response.allowed", 0));
  return resp;
}

static void test_example_mutations(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_example(&s, "add-default-labels.yaml");
  load_example(&s, "add-safe-to-evict.yaml");
  load_example(&s, "add-tolerations.yaml");
  /* add-labels: adds foo=bar, keeps an existing foo */
  const char *p1 = POD("{app: web}", "{containers: [{name: a, image: 'x:1'}]}");
  json_t *resp = mutate_answer(&s, p1);
  check_patch(resp, p1, POD("{app: web, foo: bar}", "{containers: [{name: a, image: 'x:1'}]}"));
  json_decref(resp);
  const char *p2 = POD("{foo: mine}", "{containers: [{name: a, image: 'x:1'}]}");
  resp = mutate_answer(&s, p2);
  check_patch(resp, p2, p2);
  json_decref(resp);
  /* a Pod without labels gets the map */
  const char *p3 = "apiVersion: v1\nkind: Pod\nmetadata: {name: n, namespace: default}\nspec: {containers: []}\n";
  resp = mutate_answer(&s, p3);
  check_patch(resp, p3, "apiVersion: v1\nkind: Pod\nmetadata: {name: n, namespace: default, labels: {foo: bar}}\nspec: {containers: []}\n");
  json_decref(resp);
  /* safe-to-evict: only with an emptyDir or hostPath volume */
  const char *p4 = POD("{foo: x}", "{containers: [{name: a, image: 'x:1'}], volumes: [{name: cache, emptyDir: {}}]}");
  resp = mutate_answer(&s, p4);
  check_patch(resp, p4,
              "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\n  namespace: default\n  labels: {foo: x}\n"
              "  annotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: 'true'}\n"
              "spec: {containers: [{name: a, image: 'x:1'}], volumes: [{name: cache, emptyDir: {}}]}\n");
  json_decref(resp);
  const char *p5 = POD("{foo: x}", "{containers: [{name: a, image: 'x:1'}], volumes: [{name: h, hostPath: {path: /data}}]}");
  resp = mutate_answer(&s, p5);
  check_patch(resp, p5,
              "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\n  namespace: default\n  labels: {foo: x}\n"
              "  annotations: {cluster-autoscaler.kubernetes.io/safe-to-evict: 'true'}\n"
              "spec: {containers: [{name: a, image: 'x:1'}], volumes: [{name: h, hostPath: {path: /data}}]}\n");
  json_decref(resp);
  const char *p6 = POD("{foo: x}", "{containers: [{name: a, image: 'x:1'}], volumes: [{name: c, configMap: {name: x}}]}");
  resp = mutate_answer(&s, p6);
  check_patch(resp, p6, p6);
  json_decref(resp);
  /* patchesJson6902 with a variable and ~1 escaping, only for batch Pods */
  const char *p7 = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  namespace: default\n"
                   "  labels: {foo: x, app.kubernetes.io/component: batch}\n  annotations: {a: b}\n"
                   "spec: {containers: [{name: a, image: 'x:1'}], tolerations: []}\n";
  resp = mutate_answer(&s, p7);
  check_patch(resp, p7,
              "apiVersion: v1\nkind: Pod\nmetadata:\n  name: job\n  namespace: default\n"
              "  labels: {foo: x, app.kubernetes.io/component: batch}\n"
              "  annotations: {a: b, skiff.dev/tolerated-by: jane}\n"
              "spec:\n  containers: [{name: a, image: 'x:1'}]\n"
              "  tolerations: [{key: dedicated, operator: Equal, value: batch, effect: NoSchedule}]\n");
  json_decref(resp);
  /* DELETE is never mutated */
  json_t *rev = review("DELETE", NULL, p1, 0, NULL);
  resp = answer(&s, rev, 1);
  assert_null(sk_json_get(resp, "response.patch"));
  json_decref(resp);
  json_decref(rev);
  pol_set_done(&s);
}

static void test_match_exclude(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_text(&s, "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: m}\nspec:\n"
                "  validationFailureAction: Enforce\n  rules:\n"
                "  - name: deny-all\n    match:\n      all:\n      - resources:\n"
                "          kinds: ['apps/v1/Deployment', 'batch/*/Job', 'v1/Pod']\n"
                "          names: ['web-*', 'job-?']\n          namespaces: ['prod-*']\n"
                "          operations: [CREATE]\n          selector:\n            matchLabels: {tier: front*}\n"
                "            matchExpressions:\n            - {key: env, operator: In, values: [prod, stage]}\n"
                "            - {key: legacy, operator: DoesNotExist}\n"
                "    exclude:\n      any:\n      - subjects: [{kind: Group, name: 'system:nodes'}]\n"
                "      - subjects: [{kind: ServiceAccount, name: deployer, namespace: ci}]\n"
                "    validate: {message: no, deny: {}}\n"
                "---\napiVersion: kyverno.io/v1\nkind: Policy\nmetadata: {name: ns-only, namespace: team-a}\nspec:\n"
                "  validationFailureAction: Enforce\n  rules:\n  - name: r\n    match: {resources: {kinds: ['*']}}\n"
                "    validate: {deny: {conditions: [{key: '{{ request.operation }}', operator: Equals, value: CREATE}]}}\n");
  const char *dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-1, namespace: prod-eu, labels: {tier: frontend, env: prod}}\n";
  assert_false(allowed(&s, "CREATE", dep, NULL, NULL));
  assert_true(allowed(&s, "UPDATE", dep, dep, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api-1, namespace: prod-eu, labels: {tier: frontend, env: prod}}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-1, namespace: dev, labels: {tier: frontend, env: prod}}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-1, namespace: prod-eu, labels: {tier: back, env: prod}}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-1, namespace: prod-eu, labels: {tier: frontend, env: dev}}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web-1, namespace: prod-eu, labels: {tier: frontend, env: prod, legacy: 'y'}}\n", NULL, NULL));
  assert_false(allowed(&s, "CREATE", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: job-1, namespace: prod-x, labels: {tier: front, env: stage}}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: job-12, namespace: prod-x, labels: {tier: front, env: stage}}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web-1, namespace: prod-eu, labels: {tier: frontend, env: prod}}\n", NULL, NULL));
  /* excluded subjects */
  json_t *rev = review("CREATE", dep, NULL, 0, "system:serviceaccount:ci:deployer");
  json_t *resp = answer(&s, rev, 0);
  assert_true(sk_json_get_bool(resp, "response.allowed", 0));
  json_decref(resp);
  json_decref(rev);
  /* a namespaced Policy only sees its namespace */
  assert_false(allowed(&s, "CREATE", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team-a}\n", NULL, NULL));
  assert_true(allowed(&s, "CREATE", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: team-b}\n", NULL, NULL));
  pol_set_done(&s);
}

/* Which operations a rule sees (Kyverno's defaults when a rule lists none:
 * validate rules every operation, mutate rules CREATE and UPDATE), and the
 * request control builds for a DELETE (pol_request_for) and a dry run. */
static void test_operations_and_delete_request(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_text(&s, "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: ops}\nspec:\n"
                "  validationFailureAction: Enforce\n  rules:\n"
                "  - name: no-ops-listed\n    match: {any: [{resources: {kinds: [ConfigMap], namespaces: [a]}}]}\n"
                "    validate:\n      message: 'seen {{ request.operation }} of {{ request.oldObject.metadata.name }}'\n"
                "      deny: {conditions: [{key: '{{ request.operation }}', operator: Equals, value: DELETE}]}\n"
                "  - name: create-update-only\n"
                "    match: {any: [{resources: {kinds: [ConfigMap], namespaces: [b], operations: [CREATE, UPDATE]}}]}\n"
                "    validate: {message: never, deny: {}}\n"
                "  - name: pattern\n    match: {any: [{resources: {kinds: [ConfigMap], namespaces: [c]}}]}\n"
                "    validate: {message: needs team, pattern: {metadata: {labels: {team: '?*'}}}}\n"
                "  - name: dry\n    match: {any: [{resources: {kinds: [ConfigMap], namespaces: [d]}}]}\n"
                "    validate:\n      message: 'dry {{ request.dryRun }}'\n"
                "      deny: {conditions: [{key: '{{ request.dryRun }}', operator: Equals, value: true}]}\n"
                "  - name: stamp\n    match: {any: [{resources: {kinds: [ConfigMap]}}]}\n"
                "    mutate: {patchStrategicMerge: {metadata: {labels: {stamped: 'yes'}}}}\n"
                "  - name: stamp-delete\n"
                "    match: {any: [{resources: {kinds: [ConfigMap], operations: [DELETE, CONNECT]}}]}\n"
                "    mutate: {patchStrategicMerge: {metadata: {labels: {deleted: 'yes'}}}}\n");
  const char *cm_a = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n";
  const char *cm_b = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: b}\n";
  const char *cm_c = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: c}\n";
  json_t *resp;
  /* no operations: the validate rule sees the DELETE, with oldObject */
  assert_false(allowed(&s, "DELETE", NULL, cm_a, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "no-ops-listed: seen DELETE of x");
  json_decref(resp);
  assert_true(allowed(&s, "CREATE", cm_a, NULL, NULL));
  /* operations without DELETE: deletes pass, updates do not */
  assert_true(allowed(&s, "DELETE", NULL, cm_b, NULL));
  assert_false(allowed(&s, "UPDATE", cm_b, cm_b, NULL));
  /* pattern rules skip DELETE */
  assert_true(allowed(&s, "DELETE", NULL, cm_c, NULL));
  assert_false(allowed(&s, "CREATE", cm_c, NULL, NULL));

  /* control's request for a DELETE: no object, the stored one as oldObject */
  json_t *old = Y(cm_a);
  json_t *req = pol_request_for(NULL, old, "DELETE", "alice");
  assert_true(json_is_null(json_object_get(req, "object")));
  assert_true(json_equal(json_object_get(req, "oldObject"), old));
  assert_string_equal(sk_json_get_str(req, "operation", ""), "DELETE");
  assert_string_equal(sk_json_get_str(req, "kind.kind", ""), "ConfigMap");
  assert_string_equal(sk_json_get_str(req, "name", ""), "x");
  assert_string_equal(sk_json_get_str(req, "namespace", ""), "a");
  assert_string_equal(sk_json_get_str(req, "userInfo.username", ""), "alice");
  assert_true(json_is_false(json_object_get(req, "dryRun")));
  pol_report_t r;
  pol_report_init(&r);
  assert_int_equal(pol_evaluate(&s, req, &r), 0);
  assert_true(pol_report_denied(&r));
  /* mutate rules never change a delete, whatever their operations say */
  assert_true(json_is_null(r.patched));
  for (size_t i = 0; i < r.n; i++) assert_true(r.v[i].type != POL_RULE_MUTATE);
  pol_report_done(&r);
  json_decref(req);
  json_decref(old);
  /* ... nor a CONNECT; a CREATE gets only the default-operations rule */
  json_t *rev = review("CONNECT", cm_b, NULL, 0, NULL);
  resp = answer(&s, rev, 1);
  assert_null(sk_json_get(resp, "response.patch"));
  json_decref(resp);
  json_decref(rev);
  resp = mutate_answer(&s, cm_b);
  check_patch(resp, cm_b, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: b, labels: {stamped: 'yes'}}\n");
  json_decref(resp);

  /* request.dryRun as the caller sets it */
  json_t *cm_d = Y("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: d}\n");
  const char *ops[] = {"CREATE", "DELETE"};
  for (int k = 0; k < 2; k++) {
    int del = !strcmp(ops[k], "DELETE");
    req = pol_request_for(del ? NULL : cm_d, del ? cm_d : NULL, ops[k], NULL);
    pol_report_init(&r);
    assert_int_equal(pol_evaluate(&s, req, &r), 0);
    assert_false(pol_report_denied(&r));
    pol_report_done(&r);
    json_object_set_new(req, "dryRun", json_true());
    pol_report_init(&r);
    assert_int_equal(pol_evaluate(&s, req, &r), 0);
    assert_true(pol_report_denied(&r));
    char *m = pol_report_denial(&r, req);
    assert_has(m, "dry: dry true");
    free(m);
    pol_report_done(&r);
    json_decref(req);
  }
  json_decref(cm_d);
  pol_set_done(&s);
}

static void test_rule_errors_and_anypattern(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_text(&s, "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: e}\nspec:\n"
                "  validationFailureAction: Enforce\n  rules:\n"
                "  - name: needs-var\n    match: {any: [{resources: {kinds: [Pod]}}]}\n"
                "    validate:\n      message: x\n      pattern: {metadata: {name: '{{ request.object.spec.nothere }}'}}\n"
                "  - name: either\n    match: {any: [{resources: {kinds: [ConfigMap]}}]}\n"
                "    validate:\n      message: need a or b\n      anyPattern:\n      - data: {a: '?*'}\n      - data: {b: '?*'}\n");
  json_t *resp;
  assert_false(allowed(&s, "CREATE", POD("{}", "{containers: []}"), NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""),
             "needs-var: variable substitution failed: variable request.object.spec.nothere not found");
  json_decref(resp);
  assert_true(allowed(&s, "CREATE", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: d}\ndata: {b: '1'}\n", NULL, NULL));
  assert_false(allowed(&s, "CREATE", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: d}\ndata: {c: '1'}\n", NULL, &resp));
  assert_has(sk_json_get_str(resp, "response.status.message", ""), "need a or b. rule either[0] failed at path /data/a/; rule either[1] failed at path /data/b/");
  json_decref(resp);
  pol_set_done(&s);
}

static void test_review_decode_errors(void **state) {
  json_t *v = NULL;
  char err[512];
  struct {
    const char *body, *msg;
  } cases[] = {
      {"not json", "body is not valid JSON"},
      {"[1,2]", "expected a JSON object"},
      {"{\"apiVersion\":\"v1\",\"kind\":\"AdmissionReview\",\"request\":{}}", "apiVersion must be admission.k8s.io/v1"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\",\"request\":{}}", "kind must be AdmissionReview"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "request is missing"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"operation\":\"CREATE\"}}",
       "request.uid is missing"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"operation\":\"EXPLODE\"}}",
       "request.operation must be"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"a\\u0000b\",\"operation\":\"CREATE\"}}",
       "without NUL"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"operation\":\"CREATE\",\"kind\":{\"kind\":\"Pod\"}}}",
       "request.object is missing for CREATE"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"u\",\"operation\":\"DELETE\",\"kind\":{\"kind\":\"Pod\"},\"object\":null}}",
       "request.oldObject is missing for DELETE"},
      {"", "empty body"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_true(pol_review_decode(cases[i].body, strlen(cases[i].body), 0, 0, &v, err, sizeof err) < 0);
    assert_null(v);
    assert_has(err, cases[i].msg);
  }
  /* bounded depth and size */
  sk_buf_t b;
  sk_buf_init(&b);
  for (int i = 0; i < 100; i++) sk_buf_puts(&b, "[");
  for (int i = 0; i < 100; i++) sk_buf_puts(&b, "]");
  assert_int_equal(pol_review_decode(b.data, b.len, 0, 0, &v, err, sizeof err), SK_ELIMIT);
  assert_int_equal(pol_review_decode(b.data, b.len, 50, 0, &v, err, sizeof err), SK_ELIMIT);
  assert_has(err, "larger than 50 bytes");
  sk_buf_done(&b);
}

/* ---- CLI and reports ---- */

static int run_cli(char *out, size_t outlen, int argc, char **argv) {
  fflush(stdout);
  const char *dir = sk_test_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/cli.out", dir);
  int saved = dup(1);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  dup2(fileno(f), 1);
  int rc = pol_cli_test(argc, argv);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  fclose(f);
  f = fopen(path, "r");
  size_t n = fread(out, 1, outlen - 1, f);
  out[n] = 0;
  fclose(f);
  return rc;
}

static void test_cli_test(void **state) {
  const char *dir = sk_test_tmpdir();
  char pols[512], bad[512], good[512], broken[512];
  const char *src = getenv("SKIFF_SRC_DIR");
  snprintf(pols, sizeof pols, "%s/examples/policies", src ? src : ".");
  snprintf(bad, sizeof bad, "%s/bad.yaml", dir);
  snprintf(good, sizeof good, "%s/good.yaml", dir);
  snprintf(broken, sizeof broken, "%s/broken.yaml", dir);
  write_file(bad, "# rendered chart\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: d}\n---\n"
                  "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app.kubernetes.io/name: web}}\n"
                  "spec:\n  containers:\n  - name: a\n    image: nginx:latest\n"
                  "    resources: {requests: {cpu: 100m, memory: 1Gi}, limits: {memory: 1Gi}}\n");
  write_file(good, "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app.kubernetes.io/name: web}}\n"
                   "spec:\n  containers:\n  - name: a\n    image: bar.io/nginx:1.25\n"
                   "    resources: {requests: {cpu: 100m, memory: 1Gi}, limits: {memory: 4Gi}}\n"
                   "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: big, namespace: shop}\nspec: {replicas: 50}\n");
  write_file(broken, "a: [\n");
  static char out[65536];
  char *a1[] = {"test", pols, bad, NULL};
  assert_int_equal(run_cli(out, sizeof out, 3, a1), 1);
  assert_has(out, "bad.yaml: document 2: Pod/shop/web: disallow-latest-tag/validate-image-tag: fail: validation error: "
                  "Using a mutable image tag e.g. 'latest' is not allowed.");
  assert_has(out, "bad.yaml: document 2: Pod/shop/web: restrict-image-registries/validate-registries: fail:");
  assert_has(out, "2 resources");
  char *a2[] = {"test", pols, good, NULL};
  assert_int_equal(run_cli(out, sizeof out, 3, a2), 0);
  assert_has(out, "good.yaml: document 2: Deployment/shop/big: limit-replicas/max-ten-replicas: warn: Deployment big asks for 50 replicas");
  assert_has(out, "memory-limit-at-most-2gi: warn:");
  char *a3[] = {"test", pols, broken, NULL};
  assert_int_equal(run_cli(out, sizeof out, 3, a3), 2);
  char *a4[] = {"test", pols, NULL};
  assert_int_equal(run_cli(out, sizeof out, 2, a4), 2);
}

static void test_policy_report(void **state) {
  pol_set_t s;
  pol_set_init(&s);
  load_example(&s, "require-labels.yaml");
  load_example(&s, "disallow-latest-tag.yaml");
  json_t *res = json_array();
  for (int i = 0; i < 5; i++) {
    char y[512];
    snprintf(y, sizeof y, "apiVersion: v1\nkind: Pod\nmetadata: {name: p%d, namespace: shop%s}\nspec: {containers: [{name: a, image: 'x:%s'}]}\n",
             i, i == 0 ? ", labels: {app.kubernetes.io/name: a}" : "", i < 2 ? "1" : "latest");
    json_array_append_new(res, Y(y));
  }
  json_array_append_new(res, Y("apiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: elsewhere}\nspec: {containers: []}\n"));
  json_t *rep = pol_policy_report(&s, res, "shop", 4);
  assert_string_equal(sk_json_get_str(rep, "apiVersion", ""), "wgpolicyk8s.io/v1alpha2");
  assert_string_equal(sk_json_get_str(rep, "kind", ""), "PolicyReport");
  assert_string_equal(sk_json_get_str(rep, "metadata.namespace", ""), "shop");
  /* 5 pods x 3 rules: p0 passes all; p1 fails labels; p2-4 fail labels and latest */
  assert_int_equal(sk_json_get_int(rep, "summary.pass", -1), 3 + 2 + 3);
  assert_int_equal(sk_json_get_int(rep, "summary.fail", -1), 1 + 1 + 3 + 2);
  assert_int_equal(json_array_size(sk_json_get(rep, "results")), 4);
  assert_string_equal(json_string_value(json_object_get(sk_json_get(rep, "metadata.annotations"), "skiff.dev/results-dropped")),
                      "11");
  assert_string_equal(sk_json_get_str(rep, "results.0.resources.0.name", ""), "p0");
  json_decref(rep);
  rep = pol_policy_report(&s, res, NULL, 100);
  assert_string_equal(sk_json_get_str(rep, "kind", ""), "ClusterPolicyReport");
  assert_int_equal(json_array_size(sk_json_get(rep, "results")), 0);
  json_decref(rep);
  json_decref(res);
  pol_set_done(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wildcard_quantity),
      cmocka_unit_test(test_scalar_patterns),
      cmocka_unit_test(test_anchor_conditional),
      cmocka_unit_test(test_anchor_equality),
      cmocka_unit_test(test_anchor_existence_negation_global),
      cmocka_unit_test(test_variables),
      cmocka_unit_test(test_operators),
      cmocka_unit_test(test_conditions_any_all),
      cmocka_unit_test(test_jsonpatch_rfc6902),
      cmocka_unit_test(test_jsonpatch_diff),
      cmocka_unit_test(test_smp_anchors),
      cmocka_unit_test(test_load_errors),
      cmocka_unit_test(test_example_require_labels),
      cmocka_unit_test(test_example_platform_team_label),
      cmocka_unit_test(test_example_image_policies),
      cmocka_unit_test(test_example_pod_security),
      cmocka_unit_test(test_example_deny_delete_and_audit),
      cmocka_unit_test(test_example_mutations),
      cmocka_unit_test(test_match_exclude),
      cmocka_unit_test(test_operations_and_delete_request),
      cmocka_unit_test(test_rule_errors_and_anypattern),
      cmocka_unit_test(test_review_decode_errors),
      cmocka_unit_test(test_cli_test),
      cmocka_unit_test(test_policy_report),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
