/* ctl_ident.c - skiff-control's own serving certificate, from its own CA,
 * kept and renewed by the runtime's identity module (skiff/ident.h) with an
 * in-process issuer instead of a request to itself. */
#include <stdlib.h>
#include <string.h>

#include "ctl_ca.h"
#include "ctl_ident.h"
#include "skiff/err.h"

static int issue_cb(void *ud, const char *csr, const char *spiffe_id, int64_t ttl_s, char **chain, char *err,
                    size_t errlen) {
  ctl_ca_t *ca = ud;
  ctl_ca_cert_t c;
  memset(&c, 0, sizeof c);
  int rc = ctl_ca_issue_csr(ca, csr, strlen(csr), spiffe_id, ttl_s, &c, err, errlen);
  if (rc >= 0) {
    *chain = c.chain_pem;
    c.chain_pem = NULL;
  }
  ctl_ca_cert_done(&c);
  return rc < 0 ? rc : 0;
}

static void on_event(sk_ident_t *id, int err, const char *msg, void *ud) {
  (void)id;
  sk_logger_t *log = ud;
  if (!log) return;
  if (err == 0)
    sk_log_kv(log, SK_LOG_INFO, "API certificate renewed", "detail", msg, NULL);
  else
    sk_log_kv(log, SK_LOG_WARN, "API certificate renewal failed", "error", msg, NULL);
}

int ctl_ident_open(uv_loop_t *loop, ctl_ca_t *ca, const char *state_dir, int64_t ttl_s, sk_logger_t *log,
                   sk_ident_t **out, char *err, size_t errlen) {
  char dir[4096], id[SK_IDENT_ID_MAX];
  *out = NULL;
  if ((size_t)snprintf(dir, sizeof dir, "%s/identity", state_dir) >= sizeof dir) return SK_ENAMETOOLONG;
  int rc = ctl_spiffe_format(ctl_ca_trust_domain(ca), "local", "daemon", "control", id, sizeof id);
  if (rc < 0) {
    snprintf(err, errlen, "cannot form control's SPIFFE ID");
    return rc;
  }
  static const char *const sans[] = {"localhost", "127.0.0.1", "::1"};
  sk_ident_opts_t o = {.issue = issue_cb,
                       .issue_ud = ca,
                       .dir = dir,
                       .spiffe_id = id,
                       .dns = sans,
                       .ndns = 3,
                       .ttl_s = ttl_s,
                       .bundle = ctl_ca_bundle_path(ca), /* <dir>/bundle.pem: the admin listener's client CA */
                       .on_event = on_event,
                       .ud = log};
  if ((rc = sk_ident_new(loop, &o, out, err, errlen)) < 0) return rc;
  sk_ident_start(*out, NULL, NULL); /* in-process: the first issuance happens here */
  if (sk_ident_current(*out, NULL, 0, NULL, NULL) < 0) {
    snprintf(err, errlen, "cannot issue control's own API certificate into %s", dir);
    sk_ident_free(*out);
    *out = NULL;
    return SK_ETLS;
  }
  return 0;
}
