/* Integration test: the runtime identity module (skiff/ident.h) against
 * skiff-control's CA served in-process over TLS.
 *
 *   - a daemon identity is obtained with a join token, with a 30 s lifetime;
 *   - a "daemon" listener (mTLS required) serves with those files while a
 *     curl loop with a client certificate from the same CA hammers it;
 *   - the identity renews at two thirds of the lifetime by itself (timer,
 *     proving who it is with the current certificate), the listener's
 *     context reloads, the serial openssl s_client sees changes, and not one
 *     request fails;
 *   - a used-up join token and an expired one are refused, nothing written. */
#include "sk_test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_audit.h"
#include "ctl_auth.h"
#include "ctl_ca.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/ident.h"
#include "skiff/store.h"
#include "skiff/tls.h"

#define WAIT_MS 120000
#define TD "skiff.test"
#define CTL_ID "spiffe://" TD "/region/local/daemon/control"
#define DAEMON_ID "spiffe://" TD "/region/local/daemon/testd"
#define CLIENT_ID "spiffe://" TD "/region/local/workload/hammer"

typedef struct fx {
  uv_loop_t loop;
  uv_timer_t tick, watch;
  sk_store_t *st;
  ctl_ca_t *ca;
  ctl_auth_t *auth;
  ctl_audit_t *au;
  sk_tls_ctx_t *ctl_tls, *d_tls;
  sk_http_server_t *ctl_srv, *d_srv;
  int ctl_port, d_port;
  char dir[512];
  char url[64];
  sk_test_job_t job;
  /* events */
  volatile int ready, last_err, nevents;
  sk_ident_t *id;
  uint64_t renew_seen_ms;
  char stopfile[700];
} fx_t;

static fx_t *F;

static void ctl_handler(sk_http_req_t *req, void *ud) {
  fx_t *f = ud;
  if (ctl_ca_http_route(f->ca, f->auth, f->au, req)) return;
  ctl_http_error(req, 404, "not found");
}

static void d_handler(sk_http_req_t *req, void *ud) {
  (void)ud;
  sk_http_respond_text(req, 200, "text/plain", req->peer_spiffe ? req->peer_spiffe : "anonymous");
}

static void tick(uv_timer_t *t) { (void)t; }

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

static void on_event(sk_ident_t *id, int err, const char *msg, void *ud) {
  (void)id;
  fx_t *f = ud;
  fprintf(stderr, "ident: %s\n", msg);
  f->last_err = err < 0 ? err : 1;
  f->nevents++;
}

static void on_ready(sk_ident_t *id, void *ud) {
  (void)id;
  ((fx_t *)ud)->ready = 1;
}

static int setup(void **state) {
  (void)state;
  fx_t *f = calloc(1, sizeof *f);
  F = f;
  snprintf(f->dir, sizeof f->dir, "%s/ident", sk_test_tmpdir());
  char err[512], p[700], out[64];
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  uv_timer_init(&f->loop, &f->watch);
  assert_int_equal(sk_test_sh(out, sizeof out, "mkdir -p '%s/ctl'", f->dir), 0);
  snprintf(p, sizeof p, "%s/ctl/control.db", f->dir);
  sk_store_opts_t so = {.path = p};
  assert_int_equal(sk_store_open(&so, &f->st), 0);
  snprintf(p, sizeof p, "%s/ctl", f->dir);
  ctl_ca_opts_t co = {.state_dir = p, .trust_domain = TD, .store = f->st};
  if (ctl_ca_open(&co, &f->ca, err, sizeof err) < 0) fail_msg("ca: %s", err);
  ctl_auth_opts_t ao = {.store = f->st, .state_dir = p, .trust_domain = TD};
  if (ctl_auth_open(&ao, &f->auth, err, sizeof err) < 0) fail_msg("auth: %s", err);
  ctl_audit_opts_t uo = {.store = f->st};
  if (ctl_audit_open(&uo, &f->au, err, sizeof err) < 0) fail_msg("audit: %s", err);
  /* control serves the CA endpoints with a certificate from its own CA */
  ctl_ca_cert_t c;
  const char *dns[] = {"localhost"};
  const char *ips[] = {"127.0.0.1"};
  if (ctl_ca_issue_for(f->ca, CTL_ID, dns, 1, ips, 1, 0, &c, err, sizeof err) < 0) fail_msg("issue: %s", err);
  char cp[700], kp[700];
  snprintf(cp, sizeof cp, "%s/ctl/api.pem", f->dir);
  snprintf(kp, sizeof kp, "%s/ctl/api.key", f->dir);
  assert_int_equal(ctl_ca_cert_write(&c, cp, kp, err, sizeof err), 0);
  ctl_ca_cert_done(&c);
  /* the hammering client's certificate */
  if (ctl_ca_issue_for(f->ca, CLIENT_ID, NULL, 0, NULL, 0, 3600, &c, err, sizeof err) < 0)
    fail_msg("issue: %s", err);
  char hp[700], hk[700];
  snprintf(hp, sizeof hp, "%s/hammer.pem", f->dir);
  snprintf(hk, sizeof hk, "%s/hammer.key", f->dir);
  assert_int_equal(ctl_ca_cert_write(&c, hp, hk, err, sizeof err), 0);
  ctl_ca_cert_done(&c);
  sk_tls_opts_t to = {.is_server = 1, .cert_file = cp, .key_file = kp, .ca_file = ctl_ca_bundle_path(f->ca),
                      .verify = SK_TLS_VERIFY_OPTIONAL};
  if (sk_tls_ctx_new(&to, &f->ctl_tls, err, sizeof err) < 0) fail_msg("tls: %s", err);
  sk_http_server_opts_t o = {.host = "127.0.0.1", .tls = f->ctl_tls};
  assert_int_equal(sk_http_server_new(&f->loop, &o, ctl_handler, f, &f->ctl_srv), 0);
  f->ctl_port = sk_http_server_port(f->ctl_srv);
  snprintf(f->url, sizeof f->url, "https://localhost:%d", f->ctl_port);
  *state = f;
  return 0;
}

static void drained_cb(sk_http_server_t *s, void *ud) {
  (void)s;
  (*(int *)ud)--;
}

static int teardown(void **state) {
  (void)state;
  fx_t *f = F;
  sk_ident_free(f->id);
  int left = 0;
  sk_http_server_t *srvs[] = {f->ctl_srv, f->d_srv};
  for (int i = 0; i < 2; i++)
    if (srvs[i]) {
      left++;
      sk_http_server_drain(srvs[i], drained_cb, &left);
    }
  uv_timer_start(&f->tick, tick, 10, 10);
  for (int i = 0; i < 3000 && left > 0; i++) uv_run(&f->loop, UV_RUN_ONCE);
  uv_timer_stop(&f->tick);
  for (int i = 0; i < 2; i++) sk_http_server_free(srvs[i]);
  uv_close((uv_handle_t *)&f->tick, NULL);
  uv_close((uv_handle_t *)&f->watch, NULL);
  for (int i = 0; i < 100; i++) uv_run(&f->loop, UV_RUN_NOWAIT);
  sk_test_loop_drain(&f->loop);
  sk_tls_ctx_unref(f->ctl_tls);
  sk_tls_ctx_unref(f->d_tls);
  ctl_audit_free(f->au);
  ctl_auth_free(f->auth);
  ctl_ca_free(f->ca);
  sk_store_close(f->st);
  free(f);
  return 0;
}

static void write_token(const char *path, const char *id, int64_t ttl, int uses) {
  char secret[CTL_JOIN_LEN + 1], out[16];
  int64_t exp;
  assert_int_equal(ctl_ca_join_token_create(F->ca, id, ttl, uses, secret, sizeof secret, &exp), 0);
  assert_int_equal(sk_test_sh(out, sizeof out, "umask 077; printf '%%s\\n' '%s' > '%s'", secret, path), 0);
}

static sk_ident_t *new_ident(const char *sub, const char *tokfile, int64_t ttl) {
  char dir[700], err[512];
  snprintf(dir, sizeof dir, "%s/%s", F->dir, sub);
  sk_ident_opts_t o = {.url = F->url,
                       .dir = dir,
                       .spiffe_id = DAEMON_ID,
                       .join_token_file = tokfile,
                       .bundle = ctl_ca_bundle_path(F->ca),
                       .dns = (const char *const[]){"localhost", "127.0.0.1"},
                       .ndns = 2,
                       .ttl_s = ttl,
                       .on_event = on_event,
                       .ud = F};
  sk_ident_t *id = NULL;
  if (sk_ident_new(&F->loop, &o, &id, err, sizeof err) < 0) fail_msg("ident: %s", err);
  return id;
}

/* Creates the stop file for the hammer a few seconds after the first
 * renewal (so that handshakes on both sides of the swap are counted). */
static void watch_cb(uv_timer_t *t) {
  fx_t *f = t->data;
  if (!f->id || sk_ident_renewals(f->id) < 2) return; /* 1 = the first issuance */
  if (!f->renew_seen_ms) f->renew_seen_ms = uv_now(&f->loop);
  if (uv_now(&f->loop) - f->renew_seen_ms >= 3000) {
    FILE *fp = fopen(f->stopfile, "w");
    if (fp) fclose(fp);
    uv_timer_stop(t);
  }
}

static void serial_of_listener(char *out, size_t outlen) {
  fx_t *f = F;
  assert_int_equal(run("openssl s_client -connect 127.0.0.1:%d -servername localhost -CAfile '%s'"
                       " -cert '%s/hammer.pem' -key '%s/hammer.key' </dev/null 2>/dev/null"
                       " | openssl x509 -noout -serial | cut -d= -f2",
                       f->d_port, ctl_ca_bundle_path(f->ca), f->dir, f->dir),
                   0);
  size_t n = strcspn(f->job.out, "\n"); /* the serial's line */
  assert_true(n < outlen);
  memcpy(out, f->job.out, n);
  out[n] = 0;
}

static void test_renew_under_traffic(void **state) {
  (void)state;
  fx_t *f = F;
  char tok[700], err[512];
  snprintf(tok, sizeof tok, "%s/join.token", f->dir);
  write_token(tok, DAEMON_ID, 600, 1);
  f->id = new_ident("testd", tok, 30);
  assert_int_equal(sk_ident_start(f->id, on_ready, f), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &f->ready, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  assert_int_equal(f->last_err, 1);
  char serial1[80];
  int64_t not_after, due;
  assert_int_equal(sk_ident_current(f->id, serial1, sizeof serial1, &not_after, &due), 0);
  int64_t now = (int64_t)time(NULL);
  assert_true(not_after - now <= 31);
  assert_true(due > now);

  /* the daemon's listener: mTLS required, files of the identity */
  sk_tls_opts_t to = {.is_server = 1,
                      .cert_file = sk_ident_cert_path(f->id),
                      .key_file = sk_ident_key_path(f->id),
                      .ca_file = sk_ident_bundle_path(f->id),
                      .verify = SK_TLS_VERIFY_REQUIRE};
  if (sk_tls_ctx_new(&to, &f->d_tls, err, sizeof err) < 0) fail_msg("tls: %s", err);
  sk_http_server_opts_t o = {.host = "127.0.0.1", .tls = f->d_tls};
  assert_int_equal(sk_http_server_new(&f->loop, &o, d_handler, f, &f->d_srv), 0);
  f->d_port = sk_http_server_port(f->d_srv);
  char s_before[80];
  serial_of_listener(s_before, sizeof s_before);
  assert_string_equal(s_before, serial1);

  /* hammer: every curl is a new handshake with 3 requests on it; count
   * answers that are not 200 (curl's %{http_code} is 000 on a failed
   * connection or handshake) */
  snprintf(f->stopfile, sizeof f->stopfile, "%s/stop", f->dir);
  f->watch.data = f;
  uv_timer_start(&f->watch, watch_cb, 100, 100);
  char urls[300];
  snprintf(urls, sizeof urls, "https://localhost:%d/ https://localhost:%d/ https://localhost:%d/", f->d_port,
           f->d_port, f->d_port);
  char full[3200];
  snprintf(full, sizeof full,
           "n=0; bad=0; end=$(($(date +%%s)+90)); while [ ! -e '%s' ] && [ $(date +%%s) -lt $end ]; do"
           " for c in $(curl -s -m 10 --cacert '%s' --cert '%s/hammer.pem' --key '%s/hammer.key'"
           " -o /dev/null -o /dev/null -o /dev/null -w '%%{http_code}\\n' %s); do n=$((n+1)); [ \"$c\" = 200 ] || bad=$((bad+1)); done;"
           " done; echo \"$n $bad\"",
           f->stopfile, ctl_ca_bundle_path(f->ca), f->dir, f->dir, urls);
  assert_int_equal(run("%s", full), 0);
  uv_timer_stop(&f->watch);
  int n = 0, bad = -1;
  assert_int_equal(sscanf(f->job.out, "%d %d", &n, &bad), 2);
  fprintf(stderr, "hammer: %d requests, %d failed\n", n, bad);
  assert_true(sk_ident_renewals(f->id) >= 2); /* renewed by its own timer */
  assert_true(n > 0);
  assert_int_equal(bad, 0);

  /* the listener now serves the renewed certificate */
  char serial2[80], s_after[80];
  assert_int_equal(sk_ident_current(f->id, serial2, sizeof serial2, NULL, NULL), 0);
  assert_string_not_equal(serial1, serial2);
  serial_of_listener(s_after, sizeof s_after);
  assert_string_equal(s_after, serial2);
  /* and the renewal proved the identity with the certificate, not the
   * (used up) join token: control's audit says so */
  assert_int_equal(run("test -s '%s/testd/bundle.pem' && stat -c %%a '%s/testd/key.pem'", f->dir, f->dir), 0);
  assert_string_equal(f->job.out, "600\n");
}

static void test_join_token_refused(void **state) {
  (void)state;
  fx_t *f = F;
  char tok[700];
  /* used up: one use, spent by a first identity */
  snprintf(tok, sizeof tok, "%s/once.token", f->dir);
  write_token(tok, DAEMON_ID, 600, 1);
  f->id = new_ident("first", tok, 60);
  f->ready = 0;
  assert_int_equal(sk_ident_start(f->id, on_ready, f), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &f->ready, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  sk_ident_free(f->id);
  f->id = NULL;
  f->id = new_ident("second", tok, 60);
  f->ready = 0;
  f->last_err = 0;
  assert_int_equal(sk_ident_start(f->id, on_ready, f), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &f->last_err, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  assert_int_equal(f->last_err, SK_EUNAUTH);
  assert_int_equal(f->ready, 0);
  sk_ident_free(f->id);
  f->id = NULL;
  assert_int_not_equal(run("test -e '%s/second/cert.pem'", f->dir), 0);

  /* expired: valid for one second */
  snprintf(tok, sizeof tok, "%s/short.token", f->dir);
  write_token(tok, DAEMON_ID, 1, 5);
  assert_int_equal(run("sleep 2"), 0);
  f->id = new_ident("third", tok, 60);
  f->last_err = 0;
  assert_int_equal(sk_ident_start(f->id, on_ready, f), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &f->last_err, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  assert_int_equal(f->last_err, SK_EUNAUTH);
  assert_int_equal(f->ready, 0);
  assert_int_not_equal(run("test -e '%s/third/cert.pem'", f->dir), 0);
  /* a token bound to another identity is refused too (403) */
  sk_ident_free(f->id);
  snprintf(tok, sizeof tok, "%s/other.token", f->dir);
  write_token(tok, "spiffe://" TD "/region/local/daemon/other", 600, 1);
  f->id = new_ident("fourth", tok, 60);
  f->last_err = 0;
  assert_int_equal(sk_ident_start(f->id, on_ready, f), 0);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_test_run_until(&f->loop, &f->last_err, WAIT_MS), 0);
  uv_timer_stop(&f->tick);
  assert_int_equal(f->last_err, SK_EFORBID);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_join_token_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_renew_under_traffic, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
