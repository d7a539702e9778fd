/* Unit tests: TLS contexts, ALPN encoding, SPIFFE IDs, certificate reload. */
#include "sk_test.h"

#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "net_int.h"
#include "skiff/err.h"
#include "skiff/tls.h"

static X509 *load_cert(const char *name) {
  FILE *f = fopen(sk_test_cert(name), "r");
  assert_non_null(f);
  X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  assert_non_null(x);
  return x;
}

/* Common name of the certificate the context currently serves. */
static void ctx_cert_cn(sk_tls_ctx_t *c, char *out, size_t n) {
  SSL_CTX *ctx = sk_tls_ctx_get_ssl_ctx(c);
  assert_non_null(ctx);
  X509 *x = SSL_CTX_get0_certificate(ctx);
  assert_non_null(x);
  X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)n);
  SSL_CTX_free(ctx);
}

static void test_server_and_client_ctx(void **state) {
  char err[256];
  sk_tls_ctx_t *s = NULL, *c = NULL;
  sk_tls_opts_t so = {.is_server = 1,
                      .cert_file = sk_test_cert("server.pem"),
                      .key_file = sk_test_cert("server.key"),
                      .ca_file = sk_test_cert("ca.pem"),
                      .verify = SK_TLS_VERIFY_REQUIRE,
                      .alpn = "h2,http/1.1"};
  assert_int_equal(sk_tls_ctx_new(&so, &s, err, sizeof err), 0);
  assert_true(sk_tls_ctx_is_server(s));
  SSL_CTX *ctx = sk_tls_ctx_get_ssl_ctx(s);
  assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
  SSL_CTX_free(ctx);

  sk_tls_opts_t co = {.cert_file = sk_test_cert("client.pem"),
                      .key_file = sk_test_cert("client.key"),
                      .ca_file = sk_test_cert("ca.pem"),
                      .alpn = "http/1.1",
                      .min_version = "1.3"};
  assert_int_equal(sk_tls_ctx_new(&co, &c, err, sizeof err), 0);
  assert_false(sk_tls_ctx_is_server(c));
  ctx = sk_tls_ctx_get_ssl_ctx(c);
  assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_3_VERSION);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER); /* ca_file => verify */
  SSL_CTX_free(ctx);

  assert_ptr_equal(sk_tls_ctx_ref(c), c);
  sk_tls_ctx_unref(c);
  sk_tls_ctx_unref(c);
  sk_tls_ctx_unref(s);
  sk_tls_ctx_unref(NULL);
}

static void test_bad_options(void **state) {
  char err[512];
  sk_tls_ctx_t *c = (sk_tls_ctx_t *)1;
  sk_tls_opts_t o = {.is_server = 1, .cert_file = "/nonexistent/skiff-cert.pem",
                     .key_file = sk_test_cert("server.key")};
  assert_true(sk_tls_ctx_new(&o, &c, err, sizeof err) < 0);
  assert_null(c);
  assert_non_null(strstr(err, "/nonexistent/skiff-cert.pem"));

  /* a file that exists but is not a certificate */
  o.cert_file = sk_test_cert("server.key");
  assert_int_equal(sk_tls_ctx_new(&o, &c, err, sizeof err), SK_ETLS);
  assert_non_null(strstr(err, "server.key"));
  assert_non_null(strstr(err, "cert_file"));

  /* key that does not match the certificate */
  o.cert_file = sk_test_cert("server.pem");
  o.key_file = sk_test_cert("client.key");
  assert_int_equal(sk_tls_ctx_new(&o, &c, err, sizeof err), SK_ETLS);
  assert_non_null(strstr(err, "client.key"));

  /* missing CA bundle */
  o.key_file = sk_test_cert("server.key");
  o.ca_file = "/nonexistent/ca-bundle.pem";
  o.verify = SK_TLS_VERIFY_OPTIONAL;
  assert_true(sk_tls_ctx_new(&o, &c, err, sizeof err) < 0);
  assert_non_null(strstr(err, "/nonexistent/ca-bundle.pem"));

  /* mTLS without a CA, a server without a certificate, bad versions and ALPN */
  o.ca_file = NULL;
  assert_int_equal(sk_tls_ctx_new(&o, &c, err, sizeof err), SK_EINVAL);
  sk_tls_opts_t o2 = {.is_server = 1};
  assert_int_equal(sk_tls_ctx_new(&o2, &c, err, sizeof err), SK_EINVAL);
  sk_tls_opts_t o3 = {.min_version = "1.1"};
  assert_int_equal(sk_tls_ctx_new(&o3, &c, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "1.1"));
  sk_tls_opts_t o4 = {.alpn = "h2,,http/1.1"};
  assert_int_equal(sk_tls_ctx_new(&o4, &c, err, sizeof err), SK_EINVAL);
  assert_null(c);
}

static void test_alpn_wire(void **state) {
  unsigned char w[64];
  assert_int_equal(sk__tls_alpn_wire("h2,http/1.1", w, sizeof w), 12);
  assert_memory_equal(w, "\x02h2\x08http/1.1", 12);
  assert_int_equal(sk__tls_alpn_wire(" h2 , http/1.1 ", w, sizeof w), 12);
  assert_int_equal(sk__tls_alpn_wire(NULL, w, sizeof w), 0);
  assert_int_equal(sk__tls_alpn_wire("h2,", w, sizeof w), SK_EINVAL);
  assert_int_equal(sk__tls_alpn_wire(",", w, sizeof w), SK_EINVAL);
  assert_int_equal(sk__tls_alpn_wire("abcdefgh", w, 5), SK_EINVAL);
  char big[300];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = 0;
  assert_int_equal(sk__tls_alpn_wire(big, w, sizeof w), SK_EINVAL);
}

static void test_spiffe_id(void **state) {
  char id[256];
  X509 *x = load_cert("server.pem");
  const char *want = "spiffe://skiff.test/region/local/daemon/server";
  assert_int_equal(sk_tls_cert_spiffe_id(x, id, sizeof id), (int)strlen(want));
  assert_string_equal(id, want);
  assert_int_equal(sk_tls_cert_spiffe_id(x, id, 10), SK_E2BIG);
  X509_free(x);

  x = load_cert("client.pem");
  assert_true(sk_tls_cert_spiffe_id(x, id, sizeof id) > 0);
  assert_string_equal(id, "spiffe://skiff.test/region/local/workload/client");
  X509_free(x);

  x = load_cert("ca.pem"); /* no SAN at all */
  assert_int_equal(sk_tls_cert_spiffe_id(x, id, sizeof id), SK_ENOTFOUND);
  X509_free(x);
}

static void copy_file(const char *from, const char *to) {
  char out[64];
  assert_int_equal(sk_test_sh(out, sizeof out, "cp '%s' '%s'", from, to), 0);
}

static void test_reload(void **state) {
  char err[512], cn[128], cert[512], key[512];
  snprintf(cert, sizeof cert, "%s/live.pem", sk_test_tmpdir());
  snprintf(key, sizeof key, "%s/live.key", sk_test_tmpdir());
  copy_file(sk_test_cert("server.pem"), cert);
  copy_file(sk_test_cert("server.key"), key);

  sk_tls_ctx_t *c = NULL;
  sk_tls_opts_t o = {.is_server = 1, .cert_file = cert, .key_file = key};
  assert_int_equal(sk_tls_ctx_new(&o, &c, err, sizeof err), 0);
  ctx_cert_cn(c, cn, sizeof cn);
  assert_string_equal(cn, "localhost");

  /* a connection's reference survives the swap */
  SSL_CTX *held = sk_tls_ctx_get_ssl_ctx(c);

  copy_file(sk_test_cert("server2.pem"), cert);
  copy_file(sk_test_cert("server2.key"), key);
  assert_int_equal(sk_tls_ctx_reload(c, err, sizeof err), 0);
  ctx_cert_cn(c, cn, sizeof cn);
  assert_string_equal(cn, "localhost-2");

  X509_NAME_get_text_by_NID(X509_get_subject_name(SSL_CTX_get0_certificate(held)),
                            NID_commonName, cn, sizeof cn);
  assert_string_equal(cn, "localhost");
  SSL_CTX_free(held);

  /* a missing file: error names it, the old certificate stays */
  assert_int_equal(sk_test_sh(NULL, 0, "rm -f '%s'", key), 0);
  assert_true(sk_tls_ctx_reload(c, err, sizeof err) < 0);
  assert_non_null(strstr(err, key));
  ctx_cert_cn(c, cn, sizeof cn);
  assert_string_equal(cn, "localhost-2");

  /* a mismatched pair fails too and keeps the old one */
  copy_file(sk_test_cert("server.key"), key);
  assert_int_equal(sk_tls_ctx_reload(c, err, sizeof err), SK_ETLS);
  ctx_cert_cn(c, cn, sizeof cn);
  assert_string_equal(cn, "localhost-2");
  sk_tls_ctx_unref(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_server_and_client_ctx),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_alpn_wire),
      cmocka_unit_test(test_spiffe_id),
      cmocka_unit_test(test_reload),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
