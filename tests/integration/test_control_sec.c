/* Integration test: skiff-control's CA, tokens and audit endpoints served
 * in-process over TLS (a server certificate issued by the CA itself) and
 * driven by real clients: the trust bundle fetched with curl, a key and CSR
 * made by openssl req and posted with a join token, the issued certificate
 * accepted by an mTLS-REQUIRE listener trusting the fetched bundle,
 * renewal by the same identity (curl and the runtime identity module),
 * bearer tokens with roles, and refused calls found in the audit log. */
#include "sk_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "ctl_audit.h"
#include "ctl_auth.h"
#include "ctl_ca.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/ident.h"
#include "skiff/json.h"
#include "skiff/store.h"
#include "skiff/tls.h"

#define WAIT_MS 30000
#define TD "skiff.test"
#define CTL_ID "spiffe://" TD "/region/local/daemon/control"
#define CURL_ID "spiffe://" TD "/region/local/workload/curl"
#define OTHER_ID "spiffe://" TD "/region/local/workload/other"

typedef struct fx {
  uv_loop_t loop;
  uv_timer_t tick;
  sk_store_t *st;
  ctl_ca_t *ca;
  ctl_auth_t *auth;
  ctl_audit_t *au;
  sk_tls_ctx_t *tls, *tls_req;
  sk_http_server_t *srv, *srv_req;
  int port, port_req;
  char dir[512];
  sk_test_job_t job;
} fx_t;

static fx_t *F;

static void handler(sk_http_req_t *req, void *ud) {
  fx_t *f = ud;
  if (ctl_ca_http_route(f->ca, f->auth, f->au, req)) return;
  if (ctl_auth_http_route(f->auth, f->au, req)) return;
  if (ctl_audit_http_route(f->au, f->auth, req)) return;
  if (!strcmp(req->path, "/whoami")) {
    ctl_principal_t p;
    if (ctl_auth_guard(f->auth, f->au, req, CTL_VERB_GET, "Service", "default", "whoami", &p) < 0)
      return;
    char *b = sk_pool_printf(req->pool, "%s %s %s\n", p.name, ctl_role_name(p.role),
                             ctl_via_name(p.via));
    sk_http_respond_text(req, 200, "text/plain", b);
    return;
  }
  ctl_http_error(req, 404, "not found");
}

static void tick(uv_timer_t *t) {}

/* Runs a shell command on a thread while the loop serves; returns its
 * exit status, output in F->job.out. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  sk_test_job_start(&F->job, "%s", cmd);
  uv_timer_start(&F->tick, tick, 10, 10);
  int rc = sk_test_run_until(&F->loop, &F->job.done, WAIT_MS);
  uv_timer_stop(&F->tick);
  sk_test_job_join(&F->job);
  assert_int_equal(rc, 0);
  return F->job.status;
}

static sk_tls_ctx_t *server_ctx(const char *cert, const char *key, const char *ca,
                                sk_tls_verify_t v) {
  sk_tls_opts_t to = {.is_server = 1, .cert_file = cert, .key_file = key, .ca_file = ca, .verify = v};
  sk_tls_ctx_t *t = NULL;
  char err[512];
  if (sk_tls_ctx_new(&to, &t, err, sizeof err) < 0) fail_msg("tls: %s", err);
  return t;
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  F = f;
  snprintf(f->dir, sizeof f->dir, "%s/ctl", sk_test_tmpdir());
  char err[512], p[600];
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  snprintf(p, sizeof p, "mkdir -p '%s'", f->dir);
  char out[64];
  assert_int_equal(sk_test_sh(out, sizeof out, "%s", p), 0);
  snprintf(p, sizeof p, "%s/control.db", f->dir);
  sk_store_opts_t so = {.path = p};
  assert_int_equal(sk_store_open(&so, &f->st), 0);
  ctl_ca_opts_t co = {.state_dir = f->dir, .trust_domain = TD, .store = f->st};
  if (ctl_ca_open(&co, &f->ca, err, sizeof err) < 0) fail_msg("ca: %s", err);
  ctl_auth_mtls_rule_t rules[] = {
      {"spiffe://" TD "/region/*/daemon/*", CTL_ROLE_ADMIN},
      {CURL_ID, CTL_ROLE_OPERATOR},
  };
  ctl_auth_opts_t ao = {.store = f->st, .state_dir = f->dir, .mtls_rules = rules, .nmtls_rules = 2};
  if (ctl_auth_open(&ao, &f->auth, err, sizeof err) < 0) fail_msg("auth: %s", err);
  assert_int_equal(ctl_auth_bootstrap(f->auth, NULL, 0), 1);
  ctl_audit_opts_t uo = {.store = f->st};
  if (ctl_audit_open(&uo, &f->au, err, sizeof err) < 0) fail_msg("audit: %s", err);

  /* control serves with a certificate from its own CA */
  ctl_ca_cert_t c;
  const char *dns[] = {"localhost"};
  const char *ips[] = {"127.0.0.1"};
  if (ctl_ca_issue_for(f->ca, CTL_ID, dns, 1, ips, 1, 0, &c, err, sizeof err) < 0)
    fail_msg("issue_for: %s", err);
  char cp[600], kp[600];
  snprintf(cp, sizeof cp, "%s/control.pem", f->dir);
  snprintf(kp, sizeof kp, "%s/control.key", f->dir);
  assert_int_equal(ctl_ca_cert_write(&c, cp, kp, err, sizeof err), 0);
  ctl_ca_cert_done(&c);
  f->tls = server_ctx(cp, kp, ctl_ca_bundle_path(f->ca), SK_TLS_VERIFY_OPTIONAL);
  sk_http_server_opts_t o = {.tls = f->tls};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &f->srv), 0);
  f->port = sk_http_server_port(f->srv);
  *state = f;
  return 0;
}

static void drained_cb(sk_http_server_t *s, void *ud) { (*(int *)ud)--; }

static int teardown(void **state) {
  fx_t *f = F;
  int left = 0;
  sk_http_server_t *srvs[] = {f->srv, f->srv_req};
  for (int i = 0; i < 2; i++)
    if (srvs[i]) {
      left++;
      sk_http_server_drain(srvs[i], drained_cb, &left);
    }
  uv_timer_start(&f->tick, tick, 10, 10);
  volatile int done = 0;
  for (int i = 0; i < 3000 && left > 0; i++) uv_run(&f->loop, UV_RUN_ONCE);
  (void)done;
  uv_timer_stop(&f->tick);
  for (int i = 0; i < 2; i++) sk_http_server_free(srvs[i]);
  uv_close((uv_handle_t *)&f->tick, NULL);
  for (int i = 0; i < 100; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
  sk_test_loop_drain(&f->loop);
  sk_tls_ctx_unref(f->tls);
  sk_tls_ctx_unref(f->tls_req);
  ctl_audit_free(f->au);
  ctl_auth_free(f->auth);
  ctl_ca_free(f->ca);
  sk_store_close(f->st);
  free(f);
  return 0;
}

/* The trust bundle, a join token, a CSR from openssl, and mTLS with the result. */
static void test_csr_flow_and_mtls(void **state) {
  fx_t *f = F;
  const char *d = f->dir;
  /* trust on first use: fetch the bundle, then trust only it */
  assert_int_equal(run("curl -sS -m 10 -k -o '%s/fetched.pem' https://127.0.0.1:%d/api/v1/ca/bundle"
                       " && cat '%s/fetched.pem'", d, f->port, d), 0);
  assert_string_equal(f->job.out, ctl_ca_bundle_pem(f->ca));
  /* the server's own certificate verifies against it by name */
  assert_int_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' -o /dev/null -w '%%{http_code}'"
                       " https://localhost:%d/api/v1/ca/bundle", d, f->port), 0);
  assert_string_equal(f->job.out, "200");

  /* an admin makes a join token for the identity */
  assert_int_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' -H \"Authorization: Bearer $(cat '%s/admin.token')\""
                       " -d '{\"spiffeId\":\"" CURL_ID "\",\"ttl\":\"10m\"}'"
                       " https://localhost:%d/api/v1/ca/join-tokens | jq -r .token | tee '%s/join.txt'",
                       d, d, f->port, d), 0);
  assert_int_equal(strncmp(f->job.out, "skiffjoin_", 10), 0);

  /* openssl req | curl POST */
#define csr_cmd \
      "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '%s/%s.key'" \
      " -subj /CN=curl -addext subjectAltName=URI:%s 2>/dev/null" \
      " | jq -Rs --arg t \"%s\" 'if $t == \"\" then {csr: .} else {csr: ., token: $t} end'" \
      " | curl -sS -m 10 --cacert '%s/fetched.pem' %s -H 'content-type: application/json'" \
      " --data-binary @- -o '%s/%s.json' -w '%%{http_code}' https://localhost:%d/api/v1/ca/csr"
  char tok[128];
  snprintf(tok, sizeof tok, "%.*s", (int)strcspn(f->job.out, "\n"), f->job.out);
  assert_int_equal(run(csr_cmd, d, "curl", CURL_ID, tok, d, "", d, "resp1", f->port), 0);
  assert_string_equal(f->job.out, "200");
  assert_int_equal(run("jq -r .chain '%s/resp1.json' > '%s/curl.pem' && jq -r .spiffeId '%s/resp1.json'",
                       d, d, d), 0);
  assert_string_equal(f->job.out, CURL_ID "\n");
  /* the chain verifies with the openssl tool */
  assert_int_equal(run("openssl verify -CAfile '%s/fetched.pem' -untrusted '%s/curl.pem' '%s/curl.pem' 2>&1",
                       d, d, d), 0);
  assert_non_null(strstr(f->job.out, ": OK"));

  /* the same join token again: refused */
  assert_int_equal(run(csr_cmd, d, "again", CURL_ID, tok, d, "", d, "again", f->port), 0);
  assert_string_equal(f->job.out, "401");
  /* no credential at all: refused */
  assert_int_equal(run(csr_cmd, d, "none", CURL_ID, "", d, "", d, "none", f->port), 0);
  assert_string_equal(f->job.out, "401");

  /* an mTLS-REQUIRE listener trusting the fetched bundle accepts the new certificate */
  char cp[600], kp[600], bp[600];
  snprintf(cp, sizeof cp, "%s/control.pem", d);
  snprintf(kp, sizeof kp, "%s/control.key", d);
  snprintf(bp, sizeof bp, "%s/fetched.pem", d);
  f->tls_req = server_ctx(cp, kp, bp, SK_TLS_VERIFY_REQUIRE);
  sk_http_server_opts_t o = {.tls = f->tls_req};
  assert_int_equal(sk_http_server_new(&f->loop, &o, handler, f, &f->srv_req), 0);
  f->port_req = sk_http_server_port(f->srv_req);
  assert_int_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' --cert '%s/curl.pem' --key '%s/curl.key'"
                       " https://localhost:%d/whoami", d, d, d, f->port_req), 0);
  assert_string_equal(f->job.out, CURL_ID " operator mtls\n");
  /* without a certificate, or with one from another CA, the handshake fails */
  assert_int_not_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' https://localhost:%d/whoami 2>&1",
                           d, f->port_req), 0);
  assert_int_not_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' --cert '%s' --key '%s'"
                           " https://localhost:%d/whoami 2>&1",
                           d, sk_test_cert("client.pem"), sk_test_cert("client.key"), f->port_req), 0);
}

/* Renewal: the holder of a certificate gets a new one for the same identity. */
static void ident_event(sk_ident_t *id, int err, const char *msg, void *ud) {
  (void)id;
  int *r = ud;
  if (err < 0) fprintf(stderr, "renew: %s (%s)\n", msg, sk_strerror(err));
  *r = err < 0 ? err : 1;
}

static void test_renewal(void **state) {
  fx_t *f = F;
  const char *d = f->dir;
  assert_int_equal(run("openssl x509 -in '%s/curl.pem' -noout -serial", d), 0);
  char serial1[128];
  snprintf(serial1, sizeof serial1, "%.100s", f->job.out);
  /* curl: new key + CSR, authenticated by the current certificate */
#define renew_cmd \
      "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '%s/new.key'" \
      " -subj /CN=curl -addext subjectAltName=URI:%s 2>/dev/null | jq -Rs '{csr: .}'" \
      " | curl -sS -m 10 --cacert '%s/fetched.pem' --cert '%s/curl.pem' --key '%s/curl.key'" \
      " --data-binary @- -o '%s/renew.json' -w '%%{http_code}' https://localhost:%d/api/v1/ca/csr"
  assert_int_equal(run(renew_cmd, d, CURL_ID, d, d, d, d, f->port), 0);
  assert_string_equal(f->job.out, "200");
  assert_int_equal(run("jq -r .chain '%s/renew.json' > '%s/new.pem' && "
                       "openssl x509 -in '%s/new.pem' -noout -serial", d, d, d), 0);
  assert_string_not_equal(f->job.out, serial1);
  assert_int_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' --cert '%s/new.pem' --key '%s/new.key'"
                       " https://localhost:%d/whoami", d, d, d, f->port_req), 0);
  assert_string_equal(f->job.out, CURL_ID " operator mtls\n");
  /* a certificate may not be used to get another identity */
  assert_int_equal(run(renew_cmd, d, OTHER_ID, d, d, d, d, f->port), 0);
  assert_string_equal(f->job.out, "403");
  /* an admin bearer token may ask for any valid identity */
  assert_int_equal(run("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
                       " -keyout '%s/other.key' -subj /CN=o -addext subjectAltName=URI:" OTHER_ID
                       " 2>/dev/null | jq -Rs '{csr: ., ttl: 600}' | curl -sS -m 10 --cacert '%s/fetched.pem'"
                       " -H \"Authorization: Bearer $(cat '%s/admin.token')\" --data-binary @-"
                       " https://localhost:%d/api/v1/ca/csr | jq -r '[.spiffeId, .notAfter - now < 700] | @tsv'",
                       d, d, d, f->port), 0);
  assert_string_equal(f->job.out, OTHER_ID "\ttrue\n");

  /* the daemon side (runtime identity module): renews the files in place
   * and reloads every context built from them */
  char idir[600], url[100], err[512];
  snprintf(idir, sizeof idir, "%s/ident-curl", d);
  assert_int_equal(run("mkdir -p '%s' && cp '%s/curl.pem' '%s/cert.pem' && cp '%s/curl.key' '%s/key.pem' && "
                       "cp '%s/fetched.pem' '%s/bundle.pem'", idir, d, idir, d, idir, d, idir), 0);
  snprintf(url, sizeof url, "https://localhost:%d", f->port);
  char cp[700], kp[700], bp[700];
  snprintf(cp, sizeof cp, "%s/cert.pem", idir);
  snprintf(kp, sizeof kp, "%s/key.pem", idir);
  snprintf(bp, sizeof bp, "%s/bundle.pem", idir);
  sk_tls_opts_t to = {.cert_file = cp, .key_file = kp, .ca_file = bp, .alpn = "http/1.1"};
  sk_tls_ctx_t *cli = NULL;
  if (sk_tls_ctx_new(&to, &cli, err, sizeof err) < 0) fail_msg("client tls: %s", err);
  volatile int result = 0;
  sk_ident_opts_t io = {.url = url, .dir = idir, .spiffe_id = CURL_ID, .on_event = ident_event, .ud = (void *)&result};
  sk_ident_t *id = NULL;
  if (sk_ident_new(&f->loop, &io, &id, err, sizeof err) < 0) fail_msg("ident: %s", err);
  assert_int_equal(sk_ident_start(id, NULL, NULL), 0);
  char s0[80], s1[80];
  assert_int_equal(sk_ident_current(id, s0, sizeof s0, NULL, NULL), 0); /* the copied one, still fresh */
  assert_int_equal(sk_ident_renew_now(id), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &result, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  assert_int_equal(result, 1);
  assert_int_equal(sk_ident_current(id, s1, sizeof s1, NULL, NULL), 0);
  assert_string_not_equal(s0, s1);
  assert_int_equal(sk_ident_renewals(id), 1);
  sk_ident_free(id);
  /* the context was reloaded by file name: its certificate is the new one */
  SSL_CTX *sc = sk_tls_ctx_get_ssl_ctx(cli);
  X509 *leaf = SSL_CTX_get0_certificate(sc);
  char hex[80] = "";
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf), NULL);
  char *h = BN_bn2hex(bn);
  snprintf(hex, sizeof hex, "%s", h);
  OPENSSL_free(h);
  BN_free(bn);
  SSL_CTX_free(sc);
  assert_string_equal(hex, s1);
  sk_tls_ctx_unref(cli);
  assert_int_equal(run("openssl x509 -in '%s' -noout -serial", cp), 0);
  assert_string_not_equal(f->job.out, serial1);
  assert_int_equal(run("stat -c %%a '%s'", kp), 0);
  assert_string_equal(f->job.out, "600\n");
  assert_int_equal(run("curl -sS -m 10 --cacert '%s/fetched.pem' --cert '%s' --key '%s'"
                       " https://localhost:%d/whoami", d, cp, kp, f->port_req), 0);
  assert_string_equal(f->job.out, CURL_ID " operator mtls\n");
  /* no certificate and a join token control does not know: refused
   * cleanly, nothing written */
  snprintf(idir, sizeof idir, "%s/ident-never", d);
  char tokp[700];
  snprintf(tokp, sizeof tokp, "%s/bogus.token", d);
  assert_int_equal(run("printf 'skiffjoin_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\\n' > '%s'", tokp), 0);
  sk_ident_opts_t io2 = {.url = url, .dir = idir, .spiffe_id = CURL_ID, .bundle = bp, .join_token_file = tokp,
                         .on_event = ident_event, .ud = (void *)&result};
  if (sk_ident_new(&f->loop, &io2, &id, err, sizeof err) < 0) fail_msg("ident: %s", err);
  result = 0;
  assert_int_equal(sk_ident_start(id, NULL, NULL), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &result, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  assert_int_equal(result, SK_EUNAUTH);
  sk_ident_free(id);
  assert_int_not_equal(run("test -e '%s/cert.pem'", idir), 0);
}

/* Bearer tokens and roles over the API, refusals in the audit log. */
static void test_tokens_and_audit(void **state) {
  fx_t *f = F;
  const char *d = f->dir;
  char base[700];
  snprintf(base, sizeof base, "curl -sS -m 10 --cacert '%s/fetched.pem'", d);
  char adm[700];
  snprintf(adm, sizeof adm, "-H \"Authorization: Bearer $(cat '%s/admin.token')\"", d);

  /* no credentials: 401 with a Bearer challenge */
  assert_int_equal(run("%s -i https://localhost:%d/whoami | tee '%s/401.txt'", base, f->port, d), 0);
  assert_non_null(strstr(f->job.out, " 401"));
  assert_non_null(strstr(f->job.out, "www-authenticate: Bearer"));
  assert_non_null(strstr(f->job.out, "\"code\":401"));
  /* the body is a Kubernetes Status naming what is missing */
  assert_int_equal(run("sed '1,/^\r$/d' '%s/401.txt' | jq -c '[.kind,.apiVersion,.status,.reason,.code,"
                       "(.message|test(\"no credentials\"))]'", d), 0);
  assert_string_equal(f->job.out, "[\"Status\",\"v1\",\"Failure\",\"Unauthorized\",401,true]\n");

  /* the admin creates a viewer token; the secret is shown once */
  assert_int_equal(run("%s %s -d '{\"name\":\"dash\",\"role\":\"viewer\",\"ttl\":\"1h\"}'"
                       " https://localhost:%d/api/v1/tokens | tee '%s/viewer.json' | jq -r .token",
                       base, adm, f->port, d), 0);
  assert_int_equal(strncmp(f->job.out, "skiff_", 6), 0);
  char vtok[128];
  snprintf(vtok, sizeof vtok, "%.*s", (int)strcspn(f->job.out, "\n"), f->job.out);
  assert_int_equal(run("%s -H 'Authorization: Bearer %s' https://localhost:%d/whoami", base, vtok,
                       f->port), 0);
  assert_string_equal(f->job.out, "dash viewer token\n");
  /* the viewer may not read the audit log nor manage tokens */
  assert_int_equal(run("%s -o '%s/403.json' -w '%%{http_code}' -H 'Authorization: Bearer %s'"
                       " https://localhost:%d/api/v1/audit", base, d, vtok, f->port), 0);
  assert_string_equal(f->job.out, "403");
  assert_int_equal(run("jq -c '[.kind,.apiVersion,.status,.reason,.code,.message]' '%s/403.json'", d), 0);
  assert_non_null(strstr(f->job.out, "[\"Status\",\"v1\",\"Failure\",\"Forbidden\",403,\"dash (role viewer) may not"));
  assert_int_equal(run("%s -o /dev/null -w '%%{http_code}' -X DELETE -H 'Authorization: Bearer %s'"
                       " https://localhost:%d/api/v1/tokens/dash", base, vtok, f->port), 0);
  assert_string_equal(f->job.out, "403");
  /* the list shows no secret */
  assert_int_equal(run("%s %s https://localhost:%d/api/v1/tokens", base, adm, f->port), 0);
  assert_non_null(strstr(f->job.out, "\"name\":\"dash\""));
  assert_null(strstr(f->job.out, vtok));
  assert_null(strstr(f->job.out, "skiff_"));
  /* revoke: the token stops working */
  assert_int_equal(run("%s %s -X DELETE https://localhost:%d/api/v1/tokens/dash", base, adm, f->port), 0);
  assert_string_equal(f->job.out, "{\"revoked\":1}\n");
  assert_int_equal(run("%s -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %s'"
                       " https://localhost:%d/whoami", base, vtok, f->port), 0);
  assert_string_equal(f->job.out, "401");

  /* the audit log, filtered */
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?kind=Audit'"
                       " | jq -c '[.items[] | [.user, .code, .verb]]'", base, adm, f->port), 0);
  assert_string_equal(f->job.out, "[[\"dash\",403,\"list\"]]\n");
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?kind=Service&name=whoami'"
                       " | jq -c '[.items[] | [.user, .code]]'", base, adm, f->port), 0);
  assert_string_equal(f->job.out, "[[null,401],[null,401]]\n");
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?kind=Token&since=1h'"
                       " | jq -c '[.items[] | [.user, .verb, .code]]'", base, adm, f->port), 0);
  assert_string_equal(f->job.out,
                      "[[\"bootstrap-admin\",\"delete\",200],[\"dash\",\"delete\",403],"
                      "[\"bootstrap-admin\",\"create\",201]]\n");
  /* CA issuance is audited too, with how the identity was proven */
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?kind=CA&name=" CURL_ID "&limit=10'"
                       " | jq -c '[.items[] | [.code, .diff.via]]'", base, adm, f->port), 0);
  /* newest first: the credential-less client renewal, two renewals, the
   * reused and the missing join token, the first issuance, the join token */
  assert_string_equal(f->job.out, "[[401,null],[200,\"renewal\"],[200,\"renewal\"],[401,null],"
                                  "[401,null],[200,\"join-token\"],[201,null]]\n");
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?kind=CA&name=" OTHER_ID "'"
                       " | jq -c '[.items[] | [.user, .code, .diff.via]]'", base, adm, f->port), 0);
  assert_string_equal(f->job.out, "[[\"bootstrap-admin\",200,\"admin\"],[\"" CURL_ID "\",403,null]]\n");
  /* since: RFC 3339 both ways, and pagination */
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?since=2000-01-01T00:00:00Z&limit=2'"
                       " | jq -c '[(.items | length), (.next > 0)]'", base, adm, f->port), 0);
  assert_string_equal(f->job.out, "[2,true]\n");
  assert_int_equal(run("%s %s 'https://localhost:%d/api/v1/audit?since=2999-01-01T00:00:00%%2B01:00'"
                       " | jq -c '[(.items | length), .next]'", base, adm, f->port), 0);
  assert_string_equal(f->job.out, "[0,null]\n");
  assert_int_equal(run("%s -o /dev/null -w '%%{http_code}' %s 'https://localhost:%d/api/v1/audit?since=yesterday'",
                       base, adm, f->port), 0);
  assert_string_equal(f->job.out, "400");
  assert_int_equal(run("%s -o /dev/null -w '%%{http_code}' %s 'https://localhost:%d/api/v1/audit?limit=0'",
                       base, adm, f->port), 0);
  assert_string_equal(f->job.out, "400");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_csr_flow_and_mtls),
      cmocka_unit_test(test_renewal),
      cmocka_unit_test(test_tokens_and_audit),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
