/* test_policy_images.c - verifyImages building blocks: image references,
 * WWW-Authenticate challenges, cosign payloads and ECDSA signatures (checked
 * against `openssl dgst`, an independent implementation), verifyImages
 * loading errors, and the engine's answers without a reachable registry.
 * The registry round trips live in tests/integration/policy_images.sh. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy.h"
#include "sk_test.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define assert_has(hay, needle)                                                                        \
  do {                                                                                                 \
    const char *h_ = (hay);                                                                            \
    if (!h_ || !strstr(h_, (needle))) fail_msg("missing '%s' in:\n%s", (needle), h_ ? h_ : "(null)"); \
  } while (0)

static char pubkey_pem[1024];

static void test_imgref(void **st) {
  (void)st;
  pol_imgref_t r;
  char err[256];
  assert_int_equal(pol_imgref_parse("nginx", &r, err, sizeof err), 0);
  assert_string_equal(r.registry, "docker.io");
  assert_string_equal(r.repo, "library/nginx");
  assert_string_equal(r.tag, "latest");
  assert_int_equal(pol_imgref_parse("localhost:5000/shop/app:1.2", &r, err, sizeof err), 0);
  assert_string_equal(r.registry, "localhost:5000");
  assert_string_equal(r.repo, "shop/app");
  assert_string_equal(r.tag, "1.2");
  const char *d = "sha256:c7f5e8d16e4aa9bc3b5b599499b1902dca34f483a2bb2c8be51fc3a75d1615b6";
  char buf[300];
  snprintf(buf, sizeof buf, "ghcr.io/org/app:v1@%s", d);
  assert_int_equal(pol_imgref_parse(buf, &r, err, sizeof err), 0);
  assert_string_equal(r.registry, "ghcr.io");
  assert_string_equal(r.repo, "org/app");
  assert_string_equal(r.tag, "v1");
  assert_string_equal(r.digest, d);
  snprintf(buf, sizeof buf, "org/app@%s", d);
  assert_int_equal(pol_imgref_parse(buf, &r, err, sizeof err), 0);
  assert_string_equal(r.registry, "docker.io");
  assert_string_equal(r.repo, "org/app");
  assert_string_equal(r.tag, "");
  assert_int_equal(pol_imgref_parse("ghcr.io/Org/app", &r, err, sizeof err), SK_EINVAL);
  assert_has(err, "invalid character in repository name");
  assert_int_equal(pol_imgref_parse("app@sha256:abc", &r, err, sizeof err), SK_EINVAL);
  assert_has(err, "digest must be sha256");
  assert_int_equal(pol_imgref_parse("", &r, err, sizeof err), SK_EINVAL);
  assert_int_equal(pol_imgref_parse("app:", &r, err, sizeof err), SK_EINVAL);
}

static void test_www_auth(void **st) {
  (void)st;
  pol_www_auth_t w;
  const char *h = "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                  "scope=\"repository:library/nginx:pull\"";
  assert_int_equal(pol_www_auth_parse(h, strlen(h), &w), 0);
  assert_string_equal(w.scheme, "Bearer");
  assert_string_equal(w.realm, "https://auth.docker.io/token");
  assert_string_equal(w.service, "registry.docker.io");
  assert_string_equal(w.scope, "repository:library/nginx:pull");
  h = "Basic realm=\"basic-realm\"";
  assert_int_equal(pol_www_auth_parse(h, strlen(h), &w), 0);
  assert_string_equal(w.scheme, "Basic");
  h = "Bearer realm=\"unterminated";
  assert_true(pol_www_auth_parse(h, strlen(h), &w) < 0);
  h = "Bearer service=x"; /* no realm */
  assert_true(pol_www_auth_parse(h, strlen(h), &w) < 0);
  h = "Negotiate abc";
  assert_true(pol_www_auth_parse(h, strlen(h), &w) < 0);
}

static size_t slurp(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = 0;
  fclose(f);
  return n;
}

static void test_sign_verify(void **st) {
  (void)st;
  const char *dir = sk_test_tmpdir();
  char priv[300], pub[300], err[512];
  snprintf(priv, sizeof priv, "%s/k.key", dir);
  snprintf(pub, sizeof pub, "%s/k.pub", dir);
  assert_int_equal(pol_key_generate(priv, pub, err, sizeof err), 0);
  assert_int_equal(pol_key_generate(priv, pub, err, sizeof err), SK_EEXIST); /* never overwrites */
  char pem_priv[2048];
  size_t l1 = slurp(priv, pem_priv, sizeof pem_priv);
  size_t l2 = slurp(pub, pubkey_pem, sizeof pubkey_pem);
  EVP_PKEY *k = NULL, *p = NULL;
  assert_int_equal(pol_key_parse_private(pem_priv, l1, &k, err, sizeof err), 0);
  assert_true(pol_key_parse_public(pem_priv, l1, &p, err, sizeof err) < 0);
  assert_int_equal(pol_key_parse_public(pubkey_pem, l2, &p, err, sizeof err), 0);
  const char *enc = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
  EVP_PKEY *e = NULL;
  assert_int_equal(pol_key_parse_private(enc, strlen(enc), &e, err, sizeof err), SK_ENOTSUP);
  assert_has(err, "encrypted cosign private keys are not supported");

  const char *d = "sha256:c7f5e8d16e4aa9bc3b5b599499b1902dca34f483a2bb2c8be51fc3a75d1615b6";
  char *payload = pol_cosign_payload("127.0.0.1:5000/shop/app", d);
  assert_non_null(payload);
  assert_int_equal(pol_cosign_payload_check(payload, strlen(payload), d, err, sizeof err), 0);
  assert_int_equal(pol_cosign_payload_check(payload, strlen(payload),
                                            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                                            err, sizeof err),
                   SK_EPERM);
  assert_has(err, "signature payload is for sha256:c7f5");
  assert_true(pol_cosign_payload_check("{\"critical\":{}}", 15, d, err, sizeof err) < 0);
  assert_has(err, "critical.type");

  sk_buf_t sig;
  sk_buf_init(&sig);
  assert_int_equal(pol_sig_sign(k, payload, strlen(payload), &sig), 0);
  assert_int_equal(pol_sig_verify(p, payload, strlen(payload), sk_buf_cstr(&sig)), 0);
  payload[10] ^= 1; /* one bit changed: no longer verifies */
  assert_int_equal(pol_sig_verify(p, payload, strlen(payload), sk_buf_cstr(&sig)), SK_EPERM);
  payload[10] ^= 1;
  assert_true(pol_sig_verify(p, payload, strlen(payload), "not base64!") < 0);

  /* openssl dgst verifies our signature (DER ECDSA over SHA-256)... */
  char path[400], out[4096];
  snprintf(path, sizeof path, "%s/payload", dir);
  FILE *f = fopen(path, "w");
  fputs(payload, f);
  fclose(f);
  snprintf(path, sizeof path, "%s/sig.b64", dir);
  f = fopen(path, "w");
  fprintf(f, "%s\n", sk_buf_cstr(&sig));
  fclose(f);
  assert_int_equal(sk_test_sh(out, sizeof out,
                              "cd %s && base64 -d sig.b64 > sig.der && "
                              "openssl dgst -sha256 -verify k.pub -signature sig.der payload",
                              dir),
                   0);
  assert_has(out, "Verified OK");
  /* ...and we verify what openssl signs */
  assert_int_equal(sk_test_sh(out, sizeof out,
                              "cd %s && openssl dgst -sha256 -sign k.key -out o.der payload && base64 -w0 o.der", dir),
                   0);
  out[strcspn(out, "\n")] = 0;
  assert_int_equal(pol_sig_verify(p, payload, strlen(payload), out), 0);
  sk_buf_done(&sig);
  free(payload);
  EVP_PKEY_free(k);
  EVP_PKEY_free(p);
}

#define POLICY_FMT \
    "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: sigs}\nspec:\n"                                \
    "  validationFailureAction: Enforce\n%s  rules:\n  - name: verify\n"        \
    "    match: {any: [{resources: {kinds: [Pod]}}]}\n    verifyImages:\n"     \
    "    - imageReferences: ['%s']\n%s"

static int load(const char *spec_extra, const char *glob, const char *rule_extra, pol_set_t *s, char *err,
                size_t errlen) {
  char text[8192];
  snprintf(text, sizeof text, POLICY_FMT, spec_extra, glob, rule_extra);
  pol_set_init(s);
  return pol_set_load_text(s, "p.yaml", text, strlen(text), err, errlen);
}

/* An attestors block with the generated public key, plus extra key lines. */
static const char *attestor(const char *extra) {
  static char buf[4096];
  char ind[2048] = "";
  size_t off = 0;
  for (const char *p = pubkey_pem; *p;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    int w = snprintf(ind + off, sizeof ind - off, "              %.*s\n", (int)n, p);
    assert_true(w >= 0 && (size_t)w < sizeof ind - off);
    off += (size_t)w;
    p = nl ? nl + 1 : p + n;
  }
  snprintf(buf, sizeof buf, "      attestors:\n      - entries:\n        - keys:\n            publicKeys: |-\n%s%s", ind,
           extra);
  return buf;
}

static void test_load(void **st) {
  (void)st;
  if (!pubkey_pem[0]) skip();
  pol_set_t s;
  char err[1024];
  assert_int_equal(load("", "reg.example/*", attestor(""), &s, err, sizeof err), 0);
  assert_int_equal(s.nverify, 1);
  assert_int_equal(s.v[0].rules[0].type, POL_RULE_VERIFY);
  pol_set_done(&s);
  assert_int_equal(load("", "reg.example/*", "      attestors: []\n", &s, err, sizeof err), SK_EINVAL);
  assert_has(err, "spec.rules[0].verifyImages[0].attestors: must be a non-empty list");
  pol_set_done(&s);
  assert_int_equal(load("", "reg.example/*", "      mutateDigest: sometimes\n", &s, err, sizeof err), SK_EINVAL);
  assert_has(err, "mutateDigest: must be true or false");
  pol_set_done(&s);
  assert_int_equal(load("", "reg.example/*", attestor("            rekor: {url: https://rekor.sigstore.dev}\n"), &s,
                        err, sizeof err),
                   SK_EINVAL);
  assert_has(err, "transparency logs are not checked by skiff-policy: set rekor.ignoreTlog: true");
  pol_set_done(&s);
  assert_int_equal(load("", "reg.example/*", "      attestors:\n      - entries:\n        - keyless: {subject: me}\n",
                        &s, err, sizeof err),
                   SK_EINVAL);
  assert_has(err, "keyless is not supported");
  pol_set_done(&s);
  assert_int_equal(load("", "reg.example/*", "      attestors:\n      - entries:\n        - keys: {publicKeys: nope}\n",
                        &s, err, sizeof err),
                   SK_EINVAL);
  assert_has(err, "entries[0].keys.publicKeys: not a PEM public key");
  pol_set_done(&s);
  assert_int_equal(load("  failurePolicy: Sometimes\n", "reg.example/*", attestor(""), &s, err, sizeof err), SK_EINVAL);
  assert_has(err, "spec.failurePolicy: must be Fail or Ignore");
  pol_set_done(&s);
}

static json_t *pod_req(const char *image) {
  json_t *pod = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:[{s:s,s:s}]}}", "apiVersion", "v1", "kind", "Pod", "metadata",
                          "name", "web", "namespace", "shop", "spec", "containers", "name", "a", "image", image);
  json_t *req = pol_request_for(pod, NULL, "CREATE", "alice");
  json_decref(pod);
  return req;
}

static void test_eval_without_registry(void **st) {
  (void)st;
  if (!pubkey_pem[0]) skip();
  pol_set_t s;
  char err[1024];
  assert_int_equal(load("", "reg.example/*", attestor(""), &s, err, sizeof err), 0);
  /* no verifier: an Enforce rule denies with the reason, nothing is patched */
  json_t *req = pod_req("reg.example/shop/app:1");
  pol_report_t r;
  pol_report_init(&r);
  assert_int_equal(pol_mutate(&s, req, &r), 0);
  assert_int_equal(pol_report_denied(&r), 1);
  char *msg = pol_report_denial(&r, req);
  assert_has(msg, "image verification failed for reg.example/shop/app:1: image verification is not configured");
  free(msg);
  assert_int_equal(json_array_size(r.patch), 0);
  pol_report_done(&r);
  json_decref(req);
  /* images outside imageReferences: the rule is skipped */
  req = pod_req("other.example/app:1");
  pol_report_init(&r);
  assert_int_equal(pol_validate(&s, req, &r), 0);
  assert_int_equal(pol_report_denied(&r), 0);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.v[0].status, POL_SKIP);
  pol_report_done(&r);
  json_decref(req);
  pol_set_done(&s);

  /* nobody listens on 127.0.0.1:1: the error names the registry; with
   * failurePolicy Ignore it is a warning, with Fail a denial */
  pol_images_t *v = NULL;
  pol_registry_opts_t o = {.timeout_ms = 2000};
  pol_images_new(&o, 1000, 16, &v);
  for (int ignore = 0; ignore < 2; ignore++) {
    assert_int_equal(load(ignore ? "  failurePolicy: Ignore\n" : "", "127.0.0.1:*", attestor(""), &s, err, sizeof err),
                     0);
    s.images = v;
    req = pod_req("127.0.0.1:1/shop/app:1");
    pol_report_init(&r);
    assert_int_equal(pol_mutate(&s, req, &r), 0);
    assert_int_equal(pol_report_denied(&r), !ignore);
    assert_int_equal(r.v[0].status, POL_ERROR);
    assert_int_equal(r.v[0].action, ignore ? POL_AUDIT : POL_ENFORCE);
    assert_has(r.v[0].message, "image verification failed for 127.0.0.1:1/shop/app:1: registry 127.0.0.1:1 unreachable");
    pol_report_done(&r);
    json_decref(req);
    pol_set_done(&s);
  }
  pol_images_free(v);
}

/* Images of pod controllers and CronJobs are found in their pod template. */
static void test_controllers(void **st) {
  (void)st;
  if (!pubkey_pem[0]) skip();
  char text[8192], err[1024];
  snprintf(text, sizeof text, POLICY_FMT, "", "reg.example/*", attestor(""));
  char *k = strstr(text, "kinds: [Pod]");
  assert_non_null(k);
  char fixed[8192];
  snprintf(fixed, sizeof fixed, "%.*skinds: [Deployment, CronJob]%s", (int)(k - text), text, k + strlen("kinds: [Pod]"));
  pol_set_t s;
  pol_set_init(&s);
  assert_int_equal(pol_set_load_text(&s, "p.yaml", fixed, strlen(fixed), err, sizeof err), 0);
  const char *objs[] = {
      "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"d\",\"namespace\":\"n\"},"
      "\"spec\":{\"template\":{\"spec\":{\"initContainers\":[{\"name\":\"i\",\"image\":\"reg.example/init:1\"}],"
      "\"containers\":[{\"name\":\"a\",\"image\":\"other.example/a:1\"}]}}}}",
      "{\"apiVersion\":\"batch/v1\",\"kind\":\"CronJob\",\"metadata\":{\"name\":\"c\",\"namespace\":\"n\"},"
      "\"spec\":{\"jobTemplate\":{\"spec\":{\"template\":{\"spec\":{\"containers\":"
      "[{\"name\":\"a\",\"image\":\"reg.example/job:2\"}]}}}}}}"};
  const char *want[] = {"image verification failed for reg.example/init:1:", "image verification failed for reg.example/job:2:"};
  for (int i = 0; i < 2; i++) {
    json_t *o = json_loads(objs[i], 0, NULL);
    assert_non_null(o);
    json_t *req = pol_request_for(o, NULL, "CREATE", "alice");
    pol_report_t r;
    pol_report_init(&r);
    assert_int_equal(pol_validate(&s, req, &r), 0);
    assert_int_equal(r.n, 1);
    assert_has(r.v[0].message, want[i]);
    pol_report_done(&r);
    json_decref(req);
    json_decref(o);
  }
  pol_set_done(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_imgref),
      cmocka_unit_test(test_www_auth),
      cmocka_unit_test(test_sign_verify),
      cmocka_unit_test(test_load),
      cmocka_unit_test(test_eval_without_registry),
      cmocka_unit_test(test_controllers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
