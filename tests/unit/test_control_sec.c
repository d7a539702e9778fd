/* Unit tests: skiff-control's CA (create/load, CSR checks, issuance,
 * chains checked with the openssl CLI, join tokens, renewal timing), bearer
 * tokens and the role matrix, and the audit log (records, filters,
 * retention, transactions, merge diffs). */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ctl_audit.h"
#include "ctl_auth.h"
#include "ctl_ca.h"
#include "skiff/err.h"
#include "skiff/ident.h"
#include "skiff/json.h"
#include "skiff/mem.h"
#include "skiff/store.h"

#define TD "skiff.test"
#define ID_A "spiffe://skiff.test/region/local/workload/a"

static int dir_seq;

static const char *fresh_dir(void) {
  static char d[512];
  snprintf(d, sizeof d, "%s/s%d", sk_test_tmpdir(), ++dir_seq);
  mkdir(d, 0700);
  return d;
}

static ctl_ca_t *open_ca(const char *dir, sk_store_t *st) {
  ctl_ca_opts_t o = {.state_dir = dir, .trust_domain = TD, .store = st};
  ctl_ca_t *ca = NULL;
  char err[512];
  int rc = ctl_ca_open(&o, &ca, err, sizeof err);
  if (rc < 0) fail_msg("ctl_ca_open: %s", err);
  return ca;
}

static sk_store_t *mem_store(void) {
  sk_store_opts_t o = {.path = ":memory:"};
  sk_store_t *s = NULL;
  assert_int_equal(sk_store_open(&o, &s), 0);
  return s;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *b = calloc(1, 1 << 16);
  size_t n = fread(b, 1, (1 << 16) - 1, f);
  b[n] = 0;
  fclose(f);
  return b;
}

/* Makes a CSR with the openssl CLI; extra is appended to "openssl req". */
static char *cli_csr(const char *dir, const char *keyopt, const char *extra) {
  char path[600], out[256];
  snprintf(path, sizeof path, "%s/req.csr", dir);
  int rc = sk_test_sh(out, sizeof out,
                      "openssl req -new -newkey %s -nodes -keyout '%s/req.key' -subj /CN=t %s "
                      "-out '%s' 2>&1",
                      keyopt, dir, extra, path);
  if (rc != 0) fail_msg("openssl req failed: %s", out);
  return slurp(path);
}

#define EC "ec -pkeyopt ec_paramgen_curve:P-256"

/* ---------------- CA ---------------- */

static void test_ca_create_and_load(void **state) {
  const char *dir = fresh_dir();
  ctl_ca_t *ca = open_ca(dir, NULL);
  char p[600];
  struct stat st;
  const char *keys[] = {"root.key", "intermediate.key"};
  for (int i = 0; i < 2; i++) {
    snprintf(p, sizeof p, "%s/ca/%s", dir, keys[i]);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
  }
  snprintf(p, sizeof p, "%s/ca", dir);
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  char *bundle1 = strdup(ctl_ca_bundle_pem(ca));
  assert_non_null(strstr(bundle1, "BEGIN CERTIFICATE"));
  char *onfile = slurp(ctl_ca_bundle_path(ca));
  assert_string_equal(onfile, bundle1);
  free(onfile);
  ctl_ca_free(ca);
  /* reopening loads the same root */
  ca = open_ca(dir, NULL);
  assert_string_equal(ctl_ca_bundle_pem(ca), bundle1);
  ctl_ca_free(ca);
  /* a readable key is refused */
  snprintf(p, sizeof p, "%s/ca/root.key", dir);
  chmod(p, 0644);
  ctl_ca_opts_t o = {.state_dir = dir, .trust_domain = TD};
  char err[512];
  assert_int_equal(ctl_ca_open(&o, &ca, err, sizeof err), SK_EACCES);
  assert_non_null(strstr(err, "root.key"));
  chmod(p, 0600);
  /* a bad trust domain */
  o.trust_domain = "Bad_Domain";
  assert_int_equal(ctl_ca_open(&o, &ca, err, sizeof err), SK_EINVAL);
  free(bundle1);
}

static void write_str(const char *path, const char *s) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(s, f);
  fclose(f);
}

static X509 *pem_cert(const char *pem) {
  BIO *b = BIO_new_mem_buf(pem, -1);
  X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
  BIO_free(b);
  assert_non_null(x);
  return x;
}

static void test_ca_issue_and_verify(void **state) {
  const char *dir = fresh_dir();
  ctl_ca_t *ca = open_ca(dir, NULL);
  char *csr = cli_csr(dir, EC, "-addext subjectAltName=URI:" ID_A);
  char id[CTL_SPIFFE_MAX], err[512];
  assert_int_equal(ctl_ca_csr_check(ca, csr, strlen(csr), id, sizeof id, err, sizeof err), 0);
  assert_string_equal(id, ID_A);
  ctl_ca_cert_t c;
  int64_t before = time(NULL);
  assert_int_equal(ctl_ca_issue_csr(ca, csr, strlen(csr), ID_A, 0, &c, err, sizeof err), 0);
  assert_string_equal(c.spiffe_id, ID_A);
  assert_true(strlen(c.serial) >= 24);
  assert_true(c.not_after - before >= 24 * 3600 - 5 && c.not_after - before <= 24 * 3600 + 5);
  assert_null(c.key_pem);
  /* the chain is leaf + intermediate */
  assert_ptr_equal(strstr(c.chain_pem, c.cert_pem), c.chain_pem);
  assert_non_null(strstr(c.chain_pem + strlen(c.cert_pem), "BEGIN CERTIFICATE"));

  X509 *x = pem_cert(c.cert_pem);
  char got[CTL_SPIFFE_MAX];
  assert_true(sk_tls_cert_spiffe_id(x, got, sizeof got) > 0);
  assert_string_equal(got, ID_A);
  assert_int_equal(X509_check_ca(x), 0);
  assert_true(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
  assert_true(X509_get_extended_key_usage(x) & XKU_SSL_SERVER);
  X509_free(x);

  /* the real openssl tool verifies the chain */
  char leaf[600], inter[600], out[1024];
  snprintf(leaf, sizeof leaf, "%s/leaf.pem", dir);
  snprintf(inter, sizeof inter, "%s/ca/intermediate.pem", dir);
  write_str(leaf, c.cert_pem);
  int rc = sk_test_sh(out, sizeof out, "openssl verify -purpose sslclient -CAfile '%s' -untrusted '%s' '%s' 2>&1",
                      ctl_ca_bundle_path(ca), inter, leaf);
  assert_int_equal(rc, 0);
  assert_non_null(strstr(out, ": OK"));
  /* and refuses it without the intermediate */
  rc = sk_test_sh(out, sizeof out, "openssl verify -CAfile '%s' '%s' 2>&1", ctl_ca_bundle_path(ca),
                  leaf);
  assert_int_not_equal(rc, 0);
  /* the issued certificate's key is the CSR's */
  rc = sk_test_sh(out, sizeof out,
                  "a=$(openssl x509 -in '%s' -noout -pubkey); b=$(openssl pkey -in '%s/req.key' -pubout);"
                  " [ \"$a\" = \"$b\" ] && echo same",
                  leaf, dir);
  assert_string_equal(out, "same\n");

  /* a different wanted identity is refused */
  ctl_ca_cert_t c2;
  assert_int_equal(ctl_ca_issue_csr(ca, csr, strlen(csr),
                                    "spiffe://skiff.test/region/local/workload/b", 0, &c2, err,
                                    sizeof err),
                   SK_EFORBID);
  /* ttl: asked, and capped at the maximum */
  assert_int_equal(ctl_ca_issue_csr(ca, csr, strlen(csr), NULL, 3600, &c2, err, sizeof err), 0);
  assert_true(c2.not_after - time(NULL) <= 3600 && c2.not_after - time(NULL) >= 3590);
  assert_string_not_equal(c2.serial, c.serial);
  ctl_ca_cert_done(&c2);
  assert_int_equal(ctl_ca_issue_csr(ca, csr, strlen(csr), NULL, 365 * 86400, &c2, err, sizeof err), 0);
  assert_true(c2.not_after - time(NULL) <= 7 * 86400);
  ctl_ca_cert_done(&c2);

  ctl_ca_cert_done(&c);
  free(csr);
  ctl_ca_free(ca);
}

typedef struct bad_csr {
  const char *keyopt, *extra, *want;
  int rc;
} bad_csr_t;

static void test_ca_csr_rejects(void **state) {
  const char *dir = fresh_dir();
  ctl_ca_t *ca = open_ca(dir, NULL);
  const bad_csr_t cases[] = {
      {EC, "", "no subjectAltName", SK_EINVAL},
      {EC, "-addext subjectAltName=URI:spiffe://other.test/region/local/workload/a", "trust domain",
       SK_EINVAL},
      {EC, "-addext subjectAltName=URI:spiffe://skiff.test/region/local/root/a", "kind", SK_EINVAL},
      {EC, "-addext subjectAltName=URI:spiffe://skiff.test/workload/a", "expected", SK_EINVAL},
      {EC, "-addext subjectAltName=URI:spiffe://skiff.test/region/local/workload/..", "name",
       SK_EINVAL},
      {EC, "-addext subjectAltName=URI:" ID_A ",URI:spiffe://skiff.test/region/local/workload/b",
       "more than one URI", SK_EINVAL},
      {EC, "-addext subjectAltName=URI:" ID_A " -addext basicConstraints=critical,CA:TRUE",
       "CA:TRUE", SK_EFORBID},
      {EC, "-addext subjectAltName=URI:" ID_A ",DNS:evil.example.com", "not allowed", SK_EFORBID},
      {EC, "-addext subjectAltName=URI:" ID_A ",DNS:*.skiff.test", "wildcard", SK_EINVAL},
      {EC, "-addext subjectAltName=URI:" ID_A ",IP:10.1.2.3", "loopback", SK_EFORBID},
      {EC, "-addext subjectAltName=URI:" ID_A ",email:a@b.c", "SAN type", SK_EINVAL},
      {"rsa:1024", "-addext subjectAltName=URI:" ID_A, "RSA key", SK_EINVAL},
      {"ec -pkeyopt ec_paramgen_curve:secp256k1", "-addext subjectAltName=URI:" ID_A, "curve",
       SK_EINVAL},
  };
  char err[512];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *csr = cli_csr(dir, cases[i].keyopt, cases[i].extra);
    err[0] = 0;
    int rc = ctl_ca_csr_check(ca, csr, strlen(csr), NULL, 0, err, sizeof err);
    if (rc != cases[i].rc || !strstr(err, cases[i].want))
      fail_msg("case %zu (%s): rc %d err '%s'", i, cases[i].extra, rc, err);
    free(csr);
  }
  /* allowed extras: DNS under the trust domain, localhost, loopback IPs */
  char *csr = cli_csr(dir, EC,
                      "-addext subjectAltName=URI:" ID_A
                      ",DNS:localhost,DNS:api.skiff.test,IP:127.0.0.1,IP:::1");
  assert_int_equal(ctl_ca_csr_check(ca, csr, strlen(csr), NULL, 0, err, sizeof err), 0);

  /* garbage, empty, oversize, two blocks */
  assert_int_equal(ctl_ca_csr_check(ca, "hello", 5, NULL, 0, err, sizeof err), SK_EINVAL);
  assert_int_equal(ctl_ca_csr_check(ca, "", 0, NULL, 0, err, sizeof err), SK_EINVAL);
  char *big = calloc(1, CTL_CA_MAX_CSR_BYTES + 10);
  memset(big, 'A', CTL_CA_MAX_CSR_BYTES + 1);
  assert_int_equal(ctl_ca_csr_check(ca, big, strlen(big), NULL, 0, err, sizeof err), SK_ELIMIT);
  free(big);
  size_t l = strlen(csr);
  char *two = malloc(2 * l + 1);
  memcpy(two, csr, l);
  memcpy(two + l, csr, l + 1);
  assert_int_equal(ctl_ca_csr_check(ca, two, 2 * l, NULL, 0, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "more than one PEM"));
  free(two);

  /* a broken signature: flip the last byte of the DER (inside the signature) */
  BIO *b = BIO_new_mem_buf(csr, -1);
  X509_REQ *req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
  BIO_free(b);
  assert_non_null(req);
  unsigned char *der = NULL;
  int dl = i2d_X509_REQ(req, &der);
  assert_true(dl > 0);
  der[dl - 1] ^= 0x01;
  const unsigned char *dp = der;
  X509_REQ *bad = d2i_X509_REQ(NULL, &dp, dl);
  assert_non_null(bad);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(b, bad);
  char *pd;
  long pl = BIO_get_mem_data(b, &pd);
  assert_int_equal(ctl_ca_csr_check(ca, pd, (size_t)pl, NULL, 0, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "signature"));
  BIO_free(b);
  X509_REQ_free(bad);
  X509_REQ_free(req);
  OPENSSL_free(der);
  free(csr);
  ctl_ca_free(ca);
}

static void test_ca_issue_for_and_renew_due(void **state) {
  const char *dir = fresh_dir();
  ctl_ca_t *ca = open_ca(dir, NULL);
  const char *dns[] = {"localhost"};
  const char *ips[] = {"127.0.0.1", "::1"};
  ctl_ca_cert_t c;
  char err[512];
  assert_int_equal(ctl_ca_issue_for(ca, "spiffe://skiff.test/region/local/daemon/control", dns, 1,
                                    ips, 2, 3000, &c, err, sizeof err),
                   0);
  assert_non_null(c.key_pem);
  char cp[600], kp[600], out[2048];
  snprintf(cp, sizeof cp, "%s/control.pem", dir);
  snprintf(kp, sizeof kp, "%s/control.key", dir);
  assert_int_equal(ctl_ca_cert_write(&c, cp, kp, err, sizeof err), 0);
  struct stat st;
  assert_int_equal(stat(kp, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  /* usable as a TLS server identity */
  sk_tls_opts_t to = {.is_server = 1, .cert_file = cp, .key_file = kp,
                      .ca_file = ctl_ca_bundle_path(ca), .verify = SK_TLS_VERIFY_OPTIONAL};
  sk_tls_ctx_t *tls = NULL;
  assert_int_equal(sk_tls_ctx_new(&to, &tls, err, sizeof err), 0);
  sk_tls_ctx_unref(tls);
  assert_int_equal(sk_test_sh(out, sizeof out, "openssl x509 -in '%s' -noout -ext subjectAltName", cp), 0);
  assert_non_null(strstr(out, "DNS:localhost"));
  assert_non_null(strstr(out, "IP Address:127.0.0.1"));
  assert_non_null(strstr(out, "URI:spiffe://skiff.test/region/local/daemon/control"));

  /* renewal is due at two thirds of the lifetime */
  X509 *x = pem_cert(c.cert_pem);
  int64_t life = c.not_after - c.not_before;
  int64_t due = c.not_before + life * 2 / 3;
  assert_int_equal(sk_ident_renew_due(x, (time_t)(due - 1)), 0);
  assert_int_equal(sk_ident_renew_due(x, (time_t)due), 1);
  assert_int_equal(sk_ident_renew_due(x, (time_t)(c.not_after + 10)), 1);
  int64_t due_at = 0;
  assert_int_equal(sk_ident_renew_due_file(cp, time(NULL), &due_at), 0);
  assert_int_equal(due_at, due);
  assert_int_equal(sk_ident_renew_due_file("/nonexistent/x.pem", time(NULL), NULL), SK_ENOENT);
  X509_free(x);
  ctl_ca_cert_done(&c);

  /* bad identities and SANs from a trusted caller are still refused */
  assert_int_equal(ctl_ca_issue_for(ca, "spiffe://other/region/a/daemon/x", NULL, 0, NULL, 0, 0,
                                    &c, err, sizeof err),
                   SK_EINVAL);
  const char *badip[] = {"not-an-ip"};
  assert_int_equal(ctl_ca_issue_for(ca, "spiffe://skiff.test/region/a/daemon/x", NULL, 0, badip, 1,
                                    0, &c, err, sizeof err),
                   SK_EINVAL);
  ctl_ca_free(ca);
}

static void test_spiffe_ids(void **state) {
  ctl_spiffe_t s;
  char err[256];
  assert_int_equal(ctl_spiffe_parse("spiffe://skiff.test/region/aws-us-east-1/proxy/edge-1.a_b",
                                    TD, &s, err, sizeof err),
                   0);
  assert_string_equal(s.region, "aws-us-east-1");
  assert_string_equal(s.kind, "proxy");
  assert_string_equal(s.name, "edge-1.a_b");
  const char *bad[] = {
      "spiffe://skiff.test/region/r/proxy",         "spiffe://skiff.test/region/r/proxy/a/b",
      "spiffe://skiff.test/region//proxy/a",        "spiffe://skiff.test/region/R/proxy/a",
      "spiffe://skiff.test/region/r/proxy/",        "spiffe://skiff.test/zone/r/proxy/a",
      "http://skiff.test/region/r/proxy/a",         "spiffe://skiff.testx/region/r/proxy/a",
      "spiffe://skiff.test/region/r/proxy/a%2fb",   "spiffe://skiff.test/region/r/proxy/a?x",
      "spiffe://skiff.test",                        "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (ctl_spiffe_parse(bad[i], TD, NULL, err, sizeof err) != SK_EINVAL) fail_msg("accepted %s", bad[i]);
  char id[CTL_SPIFFE_MAX];
  assert_true(ctl_spiffe_format(TD, "local", "daemon", "control", id, sizeof id) > 0);
  assert_string_equal(id, "spiffe://skiff.test/region/local/daemon/control");
  assert_int_equal(ctl_spiffe_format(TD, "local", "boss", "x", id, sizeof id), SK_EINVAL);
}

static void test_join_tokens(void **state) {
  const char *dir = fresh_dir();
  sk_store_t *st = mem_store();
  ctl_ca_t *ca = open_ca(dir, st);
  char tok[CTL_JOIN_LEN + 1], err[256];
  int64_t exp = 0;
  assert_int_equal(ctl_ca_join_token_create(ca, ID_A, 600, 2, tok, sizeof tok, &exp), 0);
  assert_int_equal(strlen(tok), CTL_JOIN_LEN);
  assert_int_equal(strncmp(tok, CTL_JOIN_PREFIX, strlen(CTL_JOIN_PREFIX)), 0);
  /* stored hashed only */
  unsigned char h[32];
  ctl__sha256(tok, strlen(tok), h);
  int64_t n = -1;
  assert_int_equal(sk_store_query_int64(st, "SELECT count(*) FROM ctl_join_tokens WHERE hash = ?1",
                                        SK_SQL_ARGS(SK_SQL_BLOB(h, 32)), &n), 0);
  assert_int_equal(n, 1);
  int64_t now = time(NULL);
  assert_int_equal(ctl_ca_join_token_use(ca, tok, "spiffe://skiff.test/region/local/workload/b",
                                         now, err, sizeof err),
                   SK_EFORBID);
  assert_int_equal(ctl_ca_join_token_use(ca, tok, ID_A, exp, err, sizeof err), SK_EUNAUTH);
  assert_non_null(strstr(err, "expired"));
  assert_int_equal(ctl_ca_join_token_use(ca, tok, ID_A, now, err, sizeof err), 0);
  assert_int_equal(ctl_ca_join_token_use(ca, tok, ID_A, now, err, sizeof err), 0);
  assert_int_equal(ctl_ca_join_token_use(ca, tok, ID_A, now, err, sizeof err), SK_EUNAUTH);
  assert_non_null(strstr(err, "used"));
  tok[20] ^= 1;
  assert_int_equal(ctl_ca_join_token_use(ca, tok, ID_A, now, err, sizeof err), SK_EUNAUTH);
  assert_int_equal(ctl_ca_join_token_use(ca, "skiffjoin_short", ID_A, now, err, sizeof err),
                   SK_EUNAUTH);
  assert_int_equal(ctl_ca_join_token_create(ca, "spiffe://nope/region/a/daemon/b", 0, 0, tok,
                                            sizeof tok, NULL),
                   SK_EINVAL);
  ctl_ca_free(ca);
  sk_store_close(st);
}

static void test_csr_req_decode(void **state) {
  sk_pool_t *p = sk_pool_new();
  const char *csr, *tok;
  size_t cl;
  int64_t ttl;
  char err[256];
  const char *ok = "{\"csr\":\"-----BEGIN CERTIFICATE REQUEST-----\\nAA\\n\",\"token\":\"t\",\"ttl\":\"2h\"}";
  assert_int_equal(ctl_ca_csr_req_decode(ok, strlen(ok), p, &csr, &cl, &tok, &ttl, err, sizeof err), 0);
  assert_string_equal(tok, "t");
  assert_int_equal(ttl, 7200);
  assert_int_equal(cl, strlen(csr));
  const char *bad[] = {"", "[]", "{}", "{\"csr\":1}", "{\"csr\":\"\"}", "{\"csr\":\"x\",\"token\":5}",
                       "{\"csr\":\"x\",\"ttl\":-1}", "{\"csr\":\"a\\u0000b\"}", "{\"csr\":\"x\"",
                       "{\"csr\":\"x\",\"ttl\":\"forever\"}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    if (ctl_ca_csr_req_decode(bad[i], strlen(bad[i]), p, &csr, &cl, &tok, &ttl, err, sizeof err) >= 0)
      fail_msg("accepted %s", bad[i]);
  sk_pool_free(p);
}

/* ---------------- tokens and roles ---------------- */

static ctl_auth_t *open_auth(sk_store_t *st, const char *dir) {
  ctl_auth_opts_t o = {.store = st, .state_dir = dir, .trust_domain = TD};
  ctl_auth_t *a = NULL;
  char err[256];
  if (ctl_auth_open(&o, &a, err, sizeof err) < 0) fail_msg("auth: %s", err);
  return a;
}

static void fake_req(sk_http_req_t *r, sk_pool_t *p, const char *authz, const char *spiffe) {
  memset(r, 0, sizeof *r);
  r->pool = p;
  r->method = "GET";
  r->path = "/api/v1/services";
  r->peer_addr = "127.0.0.1:1234";
  r->peer_spiffe = spiffe;
  if (authz) sk_http_headers_add(&r->headers, p, "Authorization", authz);
}

static void test_tokens(void **state) {
  sk_store_t *st = mem_store();
  const char *dir = fresh_dir();
  ctl_auth_t *a = open_auth(st, dir);
  char secret[CTL_TOKEN_LEN + 1], reason[256];
  ctl_token_info_t info;
  assert_int_equal(ctl_auth_token_create(a, "ci-bot", CTL_ROLE_OPERATOR, 3600, secret,
                                         sizeof secret, &info),
                   0);
  assert_int_equal(strlen(secret), CTL_TOKEN_LEN);
  assert_int_equal(strncmp(secret, "skiff_", 6), 0);
  assert_int_equal(strncmp(info.id, "tok_", 4), 0);
  /* only the SHA-256 is stored; the secret appears nowhere */
  unsigned char h[32];
  ctl__sha256(secret, strlen(secret), h);
  int64_t n = 0;
  assert_int_equal(sk_store_query_int64(st, "SELECT count(*) FROM ctl_tokens WHERE hash = ?1",
                                        SK_SQL_ARGS(SK_SQL_BLOB(h, 32)), &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(sk_store_query_int64(st,
                                        "SELECT count(*) FROM ctl_tokens WHERE instr(id || name ||"
                                        " CAST(hash AS TEXT), ?1) > 0",
                                        SK_SQL_ARGS(SK_SQL_TEXT(secret + 6)), &n), 0);
  assert_int_equal(n, 0);

  ctl_principal_t p;
  int64_t now = time(NULL);
  assert_int_equal(ctl_auth_token_check(a, secret, now, &p, reason, sizeof reason), 0);
  assert_string_equal(p.name, "ci-bot");
  assert_int_equal(p.role, CTL_ROLE_OPERATOR);
  assert_int_equal(p.via, CTL_VIA_TOKEN);
  /* expiry */
  assert_int_equal(ctl_auth_token_check(a, secret, now + 3601, &p, reason, sizeof reason), SK_EUNAUTH);
  assert_non_null(strstr(reason, "expired"));
  /* a wrong secret of the right shape, and malformed ones */
  char wrong[CTL_TOKEN_LEN + 1];
  memcpy(wrong, secret, sizeof wrong);
  wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
  assert_int_equal(ctl_auth_token_check(a, wrong, now, &p, reason, sizeof reason), SK_EUNAUTH);
  assert_non_null(strstr(reason, "unknown"));
  assert_int_equal(ctl_auth_token_check(a, "skiff_x", now, &p, reason, sizeof reason), SK_EUNAUTH);
  assert_int_equal(ctl_auth_token_check(a, "", now, &p, reason, sizeof reason), SK_EUNAUTH);

  /* list: no secrets */
  json_t *list = NULL;
  assert_int_equal(ctl_auth_token_list(a, &list), 0);
  assert_int_equal(json_array_size(list), 1);
  char *dump = json_dumps(list, 0);
  assert_null(strstr(dump, secret + 6));
  assert_non_null(strstr(dump, "\"role\": \"operator\""));
  free(dump);
  json_decref(list);

  /* revoke by name */
  assert_int_equal(ctl_auth_token_revoke(a, "ci-bot"), 1);
  assert_int_equal(ctl_auth_token_check(a, secret, now, &p, reason, sizeof reason), SK_EUNAUTH);
  assert_non_null(strstr(reason, "revoked"));
  assert_int_equal(ctl_auth_token_revoke(a, "ci-bot"), SK_ENOTFOUND);
  assert_int_equal(ctl_auth_token_create(a, "bad name!", CTL_ROLE_VIEWER, 0, secret, sizeof secret, NULL),
                   SK_EINVAL);

  /* authenticate from requests */
  assert_int_equal(ctl_auth_token_create(a, "viewer1", CTL_ROLE_VIEWER, 0, secret, sizeof secret, NULL), 0);
  sk_pool_t *pool = sk_pool_new();
  sk_http_req_t r;
  char hdr[128];
  snprintf(hdr, sizeof hdr, "Bearer %s", secret);
  fake_req(&r, pool, hdr, NULL);
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_VIEWER);
  fake_req(&r, pool, "Basic dXNlcjpwdw==", NULL);
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), SK_EUNAUTH);
  fake_req(&r, pool, NULL, NULL);
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), SK_EUNAUTH);
  /* a bad token loses even with a good certificate */
  fake_req(&r, pool, "Bearer skiff_nope", "spiffe://skiff.test/region/local/daemon/gitops");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), SK_EUNAUTH);
  /* mTLS identities by pattern */
  fake_req(&r, pool, NULL, "spiffe://skiff.test/region/local/daemon/gitops");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.via, CTL_VIA_MTLS);
  assert_int_equal(p.role, CTL_ROLE_ADMIN);
  fake_req(&r, pool, NULL, "spiffe://skiff.test/region/local/proxy/edge");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_VIEWER);
  fake_req(&r, pool, NULL, "spiffe://skiff.test/region/local/workload/app");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_NONE);
  assert_int_equal(ctl_auth_authorize(a, &p, CTL_VERB_GET, "Service", reason, sizeof reason), SK_EFORBID);
  fake_req(&r, pool, NULL, "spiffe://skiff.test/region/local/daemon/a/extra");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_NONE); /* '*' does not cross '/' */
  sk_pool_free(pool);
  ctl_auth_free(a);

  /* configured rules, "**" */
  ctl_auth_mtls_rule_t rules[] = {{"spiffe://skiff.test/**/ops-*", CTL_ROLE_OPERATOR}};
  ctl_auth_opts_t o = {.store = st, .mtls_rules = rules, .nmtls_rules = 1};
  assert_int_equal(ctl_auth_open(&o, &a, reason, sizeof reason), 0);
  pool = sk_pool_new();
  fake_req(&r, pool, NULL, "spiffe://skiff.test/region/x/client/ops-alice");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_OPERATOR);
  fake_req(&r, pool, NULL, "spiffe://skiff.test/region/local/daemon/gitops");
  assert_int_equal(ctl_auth_authenticate(a, &r, &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_NONE);
  sk_pool_free(pool);
  ctl_auth_free(a);
  sk_store_close(st);
}

static void test_role_matrix(void **state) {
  sk_store_t *st = mem_store();
  ctl_auth_t *a = open_auth(st, NULL);
  ctl_auth_add_admin_kind(a, "Region");
  const char *kinds[] = {"Service", "Route", CTL_KIND_TOKEN, CTL_KIND_CA, CTL_KIND_AUDIT, "Region"};
  /* expected[role][kind] as a bitmask of allowed verbs (get list watch create update patch delete) */
  const unsigned want[4][6] = {
      {0, 0, 0, 0, 0, 0},
      {0x07, 0x07, 0, 0, 0, 0},
      {0x7f, 0x7f, 0, 0, 0, 0},
      {0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f},
  };
  char reason[256];
  for (int role = 0; role <= 3; role++) {
    ctl_principal_t p = {.role = (ctl_role_t)role, .via = CTL_VIA_TOKEN};
    snprintf(p.name, sizeof p.name, "r%d", role);
    for (int k = 0; k < 6; k++) {
      for (int v = 0; v < CTL_VERB__COUNT; v++) {
        int ok = ctl_auth_authorize(a, &p, (ctl_verb_t)v, kinds[k], reason, sizeof reason) == 0;
        int exp = (want[role][k] >> v) & 1;
        if (ok != exp)
          fail_msg("role %s verb %s kind %s: got %d want %d", ctl_role_name((ctl_role_t)role),
                   ctl_verb_name((ctl_verb_t)v), kinds[k], ok, exp);
        if (!ok) assert_true(strlen(reason) > 0);
      }
    }
  }
  ctl_verb_t v;
  assert_int_equal(ctl_verb_from_method("GET", 0, 1, &v), 0);
  assert_int_equal(v, CTL_VERB_WATCH);
  assert_int_equal(ctl_verb_from_method("GET", 1, 0, &v), 0);
  assert_int_equal(v, CTL_VERB_GET);
  assert_int_equal(ctl_verb_from_method("PATCH", 1, 0, &v), 0);
  assert_int_equal(v, CTL_VERB_PATCH);
  assert_int_equal(ctl_verb_from_method("TRACE", 1, 0, &v), SK_EINVAL);
  ctl_role_t r;
  assert_int_equal(ctl_role_parse("operator", &r), 0);
  assert_int_equal(r, CTL_ROLE_OPERATOR);
  assert_int_equal(ctl_role_parse("root", &r), SK_EINVAL);
  ctl_auth_free(a);
  sk_store_close(st);
}

static void test_bootstrap(void **state) {
  const char *dir = fresh_dir();
  char dbp[600];
  snprintf(dbp, sizeof dbp, "%s/control.db", dir);
  sk_store_opts_t so = {.path = dbp};
  sk_store_t *st = NULL;
  assert_int_equal(sk_store_open(&so, &st), 0);
  ctl_auth_t *a = open_auth(st, dir);
  char path[600];
  assert_int_equal(ctl_auth_bootstrap(a, path, sizeof path), 1);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0600);
  char *tok = slurp(path);
  assert_int_equal(strlen(tok), CTL_TOKEN_LEN + 1);
  tok[CTL_TOKEN_LEN] = 0;
  ctl_principal_t p;
  char reason[256];
  assert_int_equal(ctl_auth_token_check(a, tok, time(NULL), &p, reason, sizeof reason), 0);
  assert_int_equal(p.role, CTL_ROLE_ADMIN);
  /* the secret is not in the database file */
  char out[64];
  assert_int_equal(sk_test_sh(out, sizeof out, "cat '%s'* | grep -c -a -F -e '%s' || true", dbp, tok + 6), 0);
  assert_string_equal(out, "0\n");
  /* second start: nothing new */
  assert_int_equal(ctl_auth_bootstrap(a, path, sizeof path), 0);
  /* once revoked, the next start makes a new one */
  assert_int_equal(ctl_auth_token_revoke(a, "bootstrap-admin"), 1);
  assert_int_equal(ctl_auth_bootstrap(a, path, sizeof path), 1);
  char *tok2 = slurp(path);
  assert_string_not_equal(tok, tok2);
  free(tok);
  free(tok2);
  ctl_auth_free(a);
  sk_store_close(st);
}

/* ---------------- audit ---------------- */

static ctl_audit_t *open_audit(sk_store_t *st, int64_t max_rows) {
  ctl_audit_opts_t o = {.store = st, .max_rows = max_rows};
  ctl_audit_t *au = NULL;
  char err[256];
  if (ctl_audit_open(&o, &au, err, sizeof err) < 0) fail_msg("audit: %s", err);
  return au;
}

static void test_audit_records_and_filters(void **state) {
  sk_store_t *st = mem_store();
  ctl_audit_t *au = open_audit(st, 0);
  ctl_principal_t alice = {.role = CTL_ROLE_OPERATOR, .via = CTL_VIA_TOKEN};
  strcpy(alice.name, "alice");
  ctl_principal_t bob = {.role = CTL_ROLE_ADMIN, .via = CTL_VIA_MTLS};
  strcpy(bob.name, "spiffe://skiff.test/region/local/daemon/gitops");
  json_t *o1 = json_loads("{\"spec\":{\"port\":80,\"host\":\"a\"},\"metadata\":{\"name\":\"web\"}}", 0, NULL);
  json_t *o2 = json_loads("{\"spec\":{\"port\":8080,\"host\":\"a\"},\"metadata\":{\"name\":\"web\"}}", 0, NULL);
  assert_int_equal(ctl_audit_record_change(au, NULL, &alice, CTL_VERB_CREATE, "Service", "default",
                                           "web", 1, 201, NULL, o1), 0);
  assert_int_equal(ctl_audit_record_change(au, NULL, &alice, CTL_VERB_UPDATE, "Service", "default",
                                           "web", 2, 200, o1, o2), 0);
  assert_int_equal(ctl_audit_record_change(au, NULL, &bob, CTL_VERB_DELETE, "Route", "default",
                                           "r1", 3, 200, o2, NULL), 0);
  ctl_audit_entry_t refused = {.verb = "delete", .kind = "Service", .ns = "default", .name = "web",
                               .code = 401, .source = "10.0.0.9:5555", .message = "no credentials",
                               .ts_ms = 1000};
  assert_int_equal(ctl_audit_record(au, &refused), 0);

  json_t *rows = NULL;
  assert_int_equal(ctl_audit_query(au, NULL, &rows), 0);
  assert_int_equal(json_array_size(rows), 4);
  /* newest first */
  assert_int_equal(sk_json_get_int(rows, "0.code", 0), 401);
  assert_true(json_is_null(sk_json_get(rows, "0.user")));
  assert_string_equal(sk_json_get_str(rows, "0.source", ""), "10.0.0.9:5555");
  assert_string_equal(sk_json_get_str(rows, "0.message", ""), "no credentials");
  /* the update's diff is the merge patch */
  assert_string_equal(sk_json_get_str(rows, "2.verb", ""), "update");
  assert_int_equal(sk_json_get_int(rows, "2.diff.spec.port", 0), 8080);
  assert_null(sk_json_get(rows, "2.diff.spec.host"));
  assert_null(sk_json_get(rows, "2.diff.metadata"));
  assert_int_equal(sk_json_get_int(rows, "2.resourceVersion", 0), 2);
  assert_string_equal(sk_json_get_str(rows, "2.role", ""), "operator");
  assert_string_equal(sk_json_get_str(rows, "2.via", ""), "token");
  /* create: the whole object */
  assert_string_equal(sk_json_get_str(rows, "3.diff.metadata.name", ""), "web");
  json_decref(rows);

  ctl_audit_filter_t f = {.kind = "Service"};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_int_equal(json_array_size(rows), 3);
  json_decref(rows);
  f = (ctl_audit_filter_t){.user = "alice", .name = "web"};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_int_equal(json_array_size(rows), 2);
  json_decref(rows);
  f = (ctl_audit_filter_t){.since_ms = 5000};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_int_equal(json_array_size(rows), 3); /* the ts=1000 row is older */
  json_decref(rows);
  f = (ctl_audit_filter_t){.limit = 2};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_int_equal(json_array_size(rows), 2);
  int64_t last = sk_json_get_int(rows, "1.id", 0);
  json_decref(rows);
  f = (ctl_audit_filter_t){.limit = 2, .before_id = last};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_int_equal(json_array_size(rows), 2);
  assert_string_equal(sk_json_get_str(rows, "1.verb", ""), "create");
  json_decref(rows);
  f = (ctl_audit_filter_t){.kind = "Service'; DROP TABLE ctl_audit; --"};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_int_equal(json_array_size(rows), 0);
  json_decref(rows);

  json_decref(o1);
  json_decref(o2);
  ctl_audit_free(au);
  sk_store_close(st);
}

typedef struct txctx {
  ctl_audit_t *au;
  int fail;
} txctx_t;

static int tx_fn(sk_store_t *s, void *ud) {
  txctx_t *t = ud;
  ctl_audit_entry_t e = {.verb = "create", .kind = "Service", .name = "tx", .code = 201};
  int rc = ctl_audit_record(t->au, &e);
  if (rc < 0) return rc;
  return t->fail ? SK_ECONFLICT : 0;
}

static void test_audit_tx_and_retention(void **state) {
  sk_store_t *st = mem_store();
  ctl_audit_t *au = open_audit(st, 5);
  txctx_t t = {.au = au, .fail = 1};
  assert_int_equal(sk_store_tx(st, tx_fn, &t), SK_ECONFLICT);
  int64_t n = -1;
  assert_int_equal(sk_store_query_int64(st, "SELECT count(*) FROM ctl_audit", NULL, 0, &n), 0);
  assert_int_equal(n, 0); /* rolled back with the mutation */
  t.fail = 0;
  assert_int_equal(sk_store_tx(st, tx_fn, &t), 0);
  assert_int_equal(sk_store_query_int64(st, "SELECT count(*) FROM ctl_audit", NULL, 0, &n), 0);
  assert_int_equal(n, 1);
  for (int i = 0; i < 20; i++) {
    ctl_audit_entry_t e = {.verb = "update", .kind = "Route", .code = 200};
    assert_int_equal(ctl_audit_record(au, &e), 0);
  }
  assert_int_equal(ctl_audit_prune(au, ctl__now_ms()), 16);
  assert_int_equal(sk_store_query_int64(st, "SELECT count(*) FROM ctl_audit", NULL, 0, &n), 0);
  assert_int_equal(n, 5);
  ctl_audit_free(au);

  /* by age */
  ctl_audit_opts_t o = {.store = st, .max_age_s = 60};
  char err[128];
  assert_int_equal(ctl_audit_open(&o, &au, err, sizeof err), 0);
  ctl_audit_entry_t old = {.verb = "update", .kind = "Route", .code = 200,
                           .ts_ms = ctl__now_ms() - 3600 * 1000};
  assert_int_equal(ctl_audit_record(au, &old), 0);
  assert_int_equal(ctl_audit_prune(au, ctl__now_ms()), 1);
  /* a huge diff is stored as a marker */
  char *big = malloc(70000);
  memset(big, 'x', 69999);
  big[0] = '"';
  big[69998] = '"';
  big[69999] = 0;
  ctl_audit_entry_t e = {.verb = "create", .kind = "Big", .code = 201, .diff = big};
  assert_int_equal(ctl_audit_record(au, &e), 0);
  json_t *rows = NULL;
  ctl_audit_filter_t f = {.kind = "Big"};
  assert_int_equal(ctl_audit_query(au, &f, &rows), 0);
  assert_true(json_is_true(sk_json_get(rows, "0.diff.truncated")));
  json_decref(rows);
  free(big);
  ctl_audit_free(au);
  sk_store_close(st);
}

static void test_merge_diff(void **state) {
  json_t *a = json_loads("{\"a\":1,\"b\":{\"c\":2,\"d\":[1,2]},\"e\":\"x\"}", 0, NULL);
  json_t *b = json_loads("{\"a\":1,\"b\":{\"c\":3,\"d\":[1,2]},\"f\":true}", 0, NULL);
  json_t *d = NULL;
  assert_int_equal(ctl_audit_merge_diff(a, b, &d), 0);
  char *s = json_dumps(d, JSON_SORT_KEYS | JSON_COMPACT);
  assert_string_equal(s, "{\"b\":{\"c\":3},\"e\":null,\"f\":true}");
  free(s);
  json_decref(d);
  assert_int_equal(ctl_audit_merge_diff(a, a, &d), 0);
  assert_int_equal(json_object_size(d), 0);
  json_decref(d);
  assert_int_equal(ctl_audit_merge_diff(a, NULL, &d), 0);
  assert_true(json_is_null(d));
  json_decref(d);
  json_decref(a);
  json_decref(b);
}

static void test_helpers(void **state) {
  int64_t v;
  assert_int_equal(ctl__parse_duration("24h", &v), 0);
  assert_int_equal(v, 86400);
  assert_int_equal(ctl__parse_duration("90", &v), 0);
  assert_int_equal(v, 90);
  assert_int_equal(ctl__parse_duration("7d", &v), 0);
  assert_int_equal(v, 7 * 86400);
  assert_int_equal(ctl__parse_duration("h", &v), SK_EINVAL);
  assert_int_equal(ctl__parse_duration("1w", &v), SK_EINVAL);
  assert_int_equal(ctl__parse_duration("99999999999999999999", &v), SK_EINVAL);
  sk_pool_t *p = sk_pool_new();
  assert_string_equal(ctl__query_get("a=1&kind=Se%72vice&x", "kind", p), "Service");
  assert_string_equal(ctl__query_get("a=1&user=a+b&x", "user", p), "a b");
  assert_string_equal(ctl__query_get("x&a=%", "a", p), "%");
  assert_null(ctl__query_get("a=%00", "a", p));
  assert_null(ctl__query_get("ab=1", "a", p));
  assert_string_equal(ctl__query_get("a", "a", p), "");
  sk_pool_free(p);
  char t[40];
  ctl__rfc3339(0, 5, t, sizeof t);
  assert_string_equal(t, "1970-01-01T00:00:00.005Z");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ca_create_and_load),
      cmocka_unit_test(test_ca_issue_and_verify),
      cmocka_unit_test(test_ca_csr_rejects),
      cmocka_unit_test(test_ca_issue_for_and_renew_due),
      cmocka_unit_test(test_spiffe_ids),
      cmocka_unit_test(test_join_tokens),
      cmocka_unit_test(test_csr_req_decode),
      cmocka_unit_test(test_tokens),
      cmocka_unit_test(test_role_matrix),
      cmocka_unit_test(test_bootstrap),
      cmocka_unit_test(test_audit_records_and_filters),
      cmocka_unit_test(test_audit_tx_and_retention),
      cmocka_unit_test(test_merge_diff),
      cmocka_unit_test(test_helpers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
