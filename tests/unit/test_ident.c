/* Unit tests of the runtime identity module (skiff/ident.h) without a CA:
 * config to options (SPIFFE ID, validation), the key + CSR it makes (checked
 * with the openssl CLI), atomic writes, the renewal due time, reload of
 * contexts by file name, and the start path with a fresh certificate on
 * disk (no request at all). Talking to control's CA: itest_ident. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "skiff/config.h"
#include "skiff/err.h"
#include "skiff/ident.h"
#include "skiff/tls.h"

static void cfg_defaults(sk_ident_cfg_t *c) {
  char err[256];
  memset(c, 0, sizeof *c);
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  (void)err;
  assert_int_equal(sk_config_load_string(&sk_ident_schema, c, "t.yaml", "{}", 2, NULL, &errs), 0);
  assert_int_equal(errs.n, 0);
  sk_config_errors_done(&errs);
}

static void test_opts_from_cfg(void **state) {
  (void)state;
  sk_ident_cfg_t c;
  sk_ident_opts_t o;
  char id[SK_IDENT_ID_MAX], err[256];
  cfg_defaults(&c);
  /* off while control is empty */
  assert_int_equal(sk_ident_opts_from_cfg(&c, "policy", &o, id, sizeof id, err, sizeof err), 1);
  free(c.control);
  c.control = strdup("https://127.0.0.1:7400");
  free(c.dir);
  c.dir = strdup("/tmp/x");
  assert_int_equal(sk_ident_opts_from_cfg(&c, "policy", &o, id, sizeof id, err, sizeof err), 0);
  assert_string_equal(o.spiffe_id, "spiffe://skiff.local/region/local/daemon/policy");
  assert_string_equal(o.url, "https://127.0.0.1:7400");
  assert_int_equal(o.ndns, 1);
  assert_string_equal(o.dns[0], "localhost");
  /* the env fallbacks */
  setenv("SKIFF_JOIN_TOKEN_FILE", "/run/tok", 1);
  setenv("SKIFF_CA", "/run/ca.pem", 1);
  assert_int_equal(sk_ident_opts_from_cfg(&c, "policy", &o, id, sizeof id, err, sizeof err), 0);
  assert_string_equal(o.join_token_file, "/run/tok");
  assert_string_equal(o.bundle, "/run/ca.pem");
  unsetenv("SKIFF_JOIN_TOKEN_FILE");
  unsetenv("SKIFF_CA");
  /* bad parts are named */
  free(c.kind);
  c.kind = strdup("admin");
  assert_int_equal(sk_ident_opts_from_cfg(&c, "policy", &o, id, sizeof id, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "identity.kind"));
  free(c.kind);
  c.kind = strdup("proxy");
  assert_int_equal(sk_ident_opts_from_cfg(&c, "a/b", &o, id, sizeof id, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "identity.name"));
  free(c.region);
  c.region = strdup("US_East");
  assert_int_equal(sk_ident_opts_from_cfg(&c, "p", &o, id, sizeof id, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "identity.region"));
  sk_config_free(&sk_ident_schema, &c);
}

static void test_control_url_checked(void **state) {
  (void)state;
  sk_ident_cfg_t c;
  memset(&c, 0, sizeof c);
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  const char *text = "control: ftp://x\nttl: soon\n";
  sk_config_load_string(&sk_ident_schema, &c, "t.yaml", text, strlen(text), NULL, &errs);
  assert_int_equal(errs.n, 2);
  char line[512];
  sk_config_errors_format(&errs, 0, line, sizeof line);
  assert_non_null(strstr(line, "t.yaml:1:"));
  sk_config_errors_done(&errs);
  sk_config_free(&sk_ident_schema, &c);
  /* the section check names the bad part at load time (so --check sees it) */
  memset(&c, 0, sizeof c);
  sk_config_errors_init(&errs);
  const char *t2 = "kind: admin\n";
  sk_config_load_string(&sk_ident_schema, &c, "t.yaml", t2, strlen(t2), NULL, &errs);
  assert_int_equal(errs.n, 1);
  sk_config_errors_format(&errs, 0, line, sizeof line);
  assert_non_null(strstr(line, "identity.kind 'admin'"));
  sk_config_errors_done(&errs);
  sk_config_free(&sk_ident_schema, &c);
}

static void test_make_csr(void **state) {
  (void)state;
  char *key = NULL, *csr = NULL, out[4096];
  const char *dns[] = {"localhost", "127.0.0.1", "::1"};
  assert_int_equal(sk_ident_make_csr("spiffe://skiff.test/region/local/daemon/x", dns, 3, &key, &csr), 0);
  char path[512];
  snprintf(path, sizeof path, "%s/x.csr", sk_test_tmpdir());
  FILE *f = fopen(path, "w");
  fputs(csr, f);
  fclose(f);
  assert_int_equal(sk_test_sh(out, sizeof out, "openssl req -in '%s' -noout -verify -text 2>&1", path), 0);
  assert_non_null(strstr(out, "verify OK"));
  assert_non_null(strstr(out, "URI:spiffe://skiff.test/region/local/daemon/x"));
  assert_non_null(strstr(out, "DNS:localhost"));
  assert_non_null(strstr(out, "IP Address:127.0.0.1"));
  assert_non_null(strstr(out, "IP Address:0:0:0:0:0:0:0:1"));
  assert_non_null(strstr(out, "prime256v1"));
  assert_non_null(strstr(key, "BEGIN PRIVATE KEY"));
  free(key);
  free(csr);
  assert_int_equal(sk_ident_make_csr(NULL, NULL, 0, &key, &csr), SK_EINVAL);
}

static void test_write_file(void **state) {
  (void)state;
  char path[512], err[256];
  snprintf(path, sizeof path, "%s/secret.pem", sk_test_tmpdir());
  assert_int_equal(sk_ident_write_file(path, "abc", 3, 0600, err, sizeof err), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(st.st_size, 3);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_not_equal(stat(tmp, &st), 0);
  assert_true(sk_ident_write_file("/nonexistent-dir/x.pem", "a", 1, 0600, err, sizeof err) < 0);
  assert_non_null(strstr(err, "/nonexistent-dir/x.pem"));
}

static void test_renew_due(void **state) {
  (void)state;
  FILE *f = fopen(sk_test_cert("server.pem"), "r");
  X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  assert_non_null(x);
  int64_t due = 0;
  assert_int_equal(sk_ident_renew_due_file(sk_test_cert("server.pem"), time(NULL), &due), 0);
  assert_int_equal(sk_ident_renew_due(x, (time_t)(due - 1)), 0);
  assert_int_equal(sk_ident_renew_due(x, (time_t)due), 1);
  assert_int_equal(sk_ident_renew_due(NULL, time(NULL)), 1);
  assert_int_equal(sk_ident_renew_due_file("/nonexistent/x.pem", time(NULL), NULL), SK_ENOENT);
  assert_int_equal(sk_ident_renew_due_file(sk_test_cert("server.key"), time(NULL), NULL), SK_EPARSE);
  X509_free(x);
}

static void served_cn(sk_tls_ctx_t *c, char *out, size_t n) {
  SSL_CTX *ctx = sk_tls_ctx_get_ssl_ctx(c);
  X509_NAME_get_text_by_NID(X509_get_subject_name(SSL_CTX_get0_certificate(ctx)), NID_commonName, out, (int)n);
  SSL_CTX_free(ctx);
}

/* Contexts are found by file name: replacing the files and calling
 * sk_tls_ctx_reload_files swaps what they serve; others are untouched. */
static void test_reload_files(void **state) {
  (void)state;
  char d[512], out[256], err[256];
  snprintf(d, sizeof d, "%s/reload", sk_test_tmpdir());
  assert_int_equal(sk_test_sh(out, sizeof out, "mkdir -p '%s' && cp '%s' '%s/cert.pem' && cp '%s' '%s/key.pem'", d,
                              sk_test_cert("server.pem"), d, sk_test_cert("server.key"), d),
                   0);
  char cp[600], kp[600];
  snprintf(cp, sizeof cp, "%s/cert.pem", d);
  snprintf(kp, sizeof kp, "%s/key.pem", d);
  sk_tls_ctx_t *a = NULL, *b = NULL;
  sk_tls_opts_t ao = {.is_server = 1, .cert_file = cp, .key_file = kp};
  sk_tls_opts_t bo = {.is_server = 1, .cert_file = sk_test_cert("server.pem"), .key_file = sk_test_cert("server.key")};
  assert_int_equal(sk_tls_ctx_new(&ao, &a, err, sizeof err), 0);
  assert_int_equal(sk_tls_ctx_new(&bo, &b, err, sizeof err), 0);
  served_cn(a, out, sizeof out);
  assert_string_equal(out, "localhost");
  assert_int_equal(sk_test_sh(out, sizeof out, "cp '%s' '%s/key.pem' && cp '%s' '%s/cert.pem'",
                              sk_test_cert("server2.key"), d, sk_test_cert("server2.pem"), d),
                   0);
  /* a relative spelling of the same file matches too */
  char rel[700];
  snprintf(rel, sizeof rel, "%s/../reload/cert.pem", d);
  const char *paths[] = {rel};
  assert_int_equal(sk_tls_ctx_reload_files(paths, 1, err, sizeof err), 1);
  served_cn(a, out, sizeof out);
  assert_string_equal(out, "localhost-2");
  served_cn(b, out, sizeof out);
  assert_string_equal(out, "localhost");
  /* a broken file: the error is returned, the old certificate stays */
  assert_int_equal(sk_test_sh(out, sizeof out, "echo junk > '%s/cert.pem'", d), 0);
  assert_true(sk_tls_ctx_reload_files(paths, 1, err, sizeof err) < 0);
  served_cn(a, out, sizeof out);
  assert_string_equal(out, "localhost-2");
  sk_tls_ctx_unref(a);
  sk_tls_ctx_unref(b);
  /* a freed context is no longer found */
  const char *nothing[] = {sk_test_cert("server.pem")};
  assert_int_equal(sk_tls_ctx_reload_files(nothing, 1, err, sizeof err), 0);
}

static void on_ready(sk_ident_t *id, void *ud) {
  (void)id;
  *(int *)ud = 1;
}

/* A fresh certificate on disk for the wanted identity is used as it is:
 * ready at once, nothing requested (the URL points nowhere). */
static void test_start_with_fresh_certificate(void **state) {
  (void)state;
  char d[512], out[256], err[256];
  snprintf(d, sizeof d, "%s/fresh", sk_test_tmpdir());
  assert_int_equal(sk_test_sh(out, sizeof out,
                              "mkdir -p '%s' && cp '%s' '%s/cert.pem' && cp '%s' '%s/key.pem' && cp '%s' '%s/bundle.pem'", d,
                              sk_test_cert("server2.pem"), d, sk_test_cert("server2.key"), d, sk_test_cert("ca.pem"), d),
                   0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_ident_opts_t o = {.url = "https://127.0.0.1:1", .dir = d,
                       .spiffe_id = "spiffe://skiff.test/region/local/daemon/server2"};
  sk_ident_t *id = NULL;
  assert_int_equal(sk_ident_new(&loop, &o, &id, err, sizeof err), 0);
  int ready = 0;
  assert_int_equal(sk_ident_start(id, on_ready, &ready), 0);
  assert_int_equal(ready, 1);
  char serial[80];
  int64_t na, due;
  assert_int_equal(sk_ident_current(id, serial, sizeof serial, &na, &due), 0);
  assert_true(due < na);
  assert_true(strlen(serial) > 0);
  assert_int_equal(sk_ident_renewals(id), 0);
  sk_ident_free(id);
  /* another identity wanted: the certificate on disk is not used */
  sk_ident_opts_t o2 = o;
  o2.spiffe_id = "spiffe://skiff.test/region/local/daemon/other";
  assert_int_equal(sk_ident_new(&loop, &o2, &id, err, sizeof err), 0);
  assert_int_equal(sk_ident_current(id, NULL, 0, NULL, NULL), SK_ENOENT);
  sk_ident_free(id);
  /* bad options are refused with a message */
  sk_ident_opts_t bad = {.dir = d, .spiffe_id = "not-spiffe", .url = "https://x:1"};
  assert_int_equal(sk_ident_new(&loop, &bad, &id, err, sizeof err), SK_EINVAL);
  sk_ident_opts_t badurl = {.dir = d, .spiffe_id = "spiffe://a/region/b/daemon/c", .url = "ftp://x"};
  assert_int_equal(sk_ident_new(&loop, &badurl, &id, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "identity.control"));
  sk_test_loop_drain(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_opts_from_cfg),
      cmocka_unit_test(test_control_url_checked),
      cmocka_unit_test(test_make_csr),
      cmocka_unit_test(test_write_file),
      cmocka_unit_test(test_renew_due),
      cmocka_unit_test(test_reload_files),
      cmocka_unit_test(test_start_with_fresh_certificate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
