/* skiff/ident.h - a daemon's identity from skiff-control's CA: get it,
 * keep it, renew it without a restart.
 *
 * An identity is a short-lived certificate with one SPIFFE URI SAN
 * (spiffe://<trust-domain>/region/<r>/<kind>/<name>) kept in a directory:
 *
 *   <dir>/cert.pem    leaf + intermediate (0644)
 *   <dir>/key.pem     P-256 private key (0600)
 *   <dir>/bundle.pem  the trust bundle (control's root), refreshed on renewal
 *
 * sk_ident_start():
 *   - a certificate in <dir> that matches the key, carries the wanted
 *     identity and has not reached two thirds of its lifetime is used as is;
 *   - otherwise a new P-256 key and CSR are made and posted to control's
 *     POST /api/v1/ca/csr, proving who asks with the current certificate
 *     (mTLS, while it is still valid) or else the join token;
 *   - the answer is checked (our key, our identity), the key then the chain
 *     are written through a temporary file, fsync and rename, the bundle is
 *     fetched from GET /api/v1/ca/bundle, and every TLS context that uses
 *     these files is reloaded (sk_tls_ctx_reload: live connections keep
 *     their certificate, new handshakes get the new one);
 *   - a timer fires at two thirds of the lifetime for the next renewal; a
 *     failed attempt is retried with a doubling backoff (1 s .. 60 s, never
 *     beyond the expiry).
 *
 * The issuer is control over HTTPS (opts.url) or, for skiff-control itself,
 * a function in the same process (opts.issue).
 *
 * Library code does not log: every outcome goes to opts.on_event. */
#ifndef SKIFF_IDENT_H
#define SKIFF_IDENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "skiff/config.h"
#include "skiff/tls.h"

typedef struct sk_ident sk_ident_t;

#define SK_IDENT_ID_MAX 512

/* The `identity:` section every daemon accepts (skiff/daemon.h). The
 * identity is off while `control` is empty. */
typedef struct sk_ident_cfg {
  char *control;         /* https://host:port of skiff-control's API */
  char *join_token_file; /* first certificate; default $SKIFF_JOIN_TOKEN_FILE */
  char *dir;             /* where cert.pem, key.pem, bundle.pem live */
  char *bundle;          /* trust for the first contact; default $SKIFF_CA, else <dir>/bundle.pem */
  char *name;            /* identity name; default the daemon's name */
  char *kind;            /* daemon | proxy | workload */
  char *region;
  char *trust_domain;
  sk_cfg_strlist_t dns;  /* DNS SANs asked for (default: localhost) */
  uint64_t ttl_ms;       /* lifetime asked for; 0 = the CA's default */
} sk_ident_cfg_t;

extern const sk_config_schema_t sk_ident_schema;

/* In-process issuer: sign csr_pem (PEM) for spiffe_id; *chain_pem (leaf +
 * intermediate, malloc'd) on success; negative code and err otherwise. */
typedef int (*sk_ident_issue_fn)(void *ud, const char *csr_pem, const char *spiffe_id, int64_t ttl_s,
                                 char **chain_pem, char *err, size_t errlen);

/* Outcome of an attempt: err 0 = new certificate in place (msg holds the
 * serial and expiry), else the failure and when the next attempt runs. */
typedef void (*sk_ident_event_fn)(sk_ident_t *id, int err, const char *msg, void *ud);

typedef struct sk_ident_opts {
  const char *url;             /* https://host:port (or http:// for tests); or issue */
  sk_ident_issue_fn issue;
  void *issue_ud;
  const char *dir;             /* required; created 0700 */
  const char *spiffe_id;       /* required */
  const char *join_token_file; /* optional */
  const char *bundle;          /* first-contact trust bundle (copied into dir) */
  const char *const *dns;      /* DNS SANs; NULL/0 = none */
  size_t ndns;
  int64_t ttl_s;               /* 0 = the CA's default */
  uint64_t timeout_ms;         /* per request, default 10000 */
  sk_ident_event_fn on_event;
  void *ud;
} sk_ident_opts_t;

/* Builds the SPIFFE ID and the options from a config section (strings
 * point into cfg and idbuf). default_name is used when cfg->name is empty.
 * Returns 0 when the identity is configured, 1 when it is off (control is
 * empty), SK_EINVAL with a message otherwise. */
int sk_ident_opts_from_cfg(const sk_ident_cfg_t *cfg, const char *default_name, sk_ident_opts_t *o,
                           char *idbuf, size_t idlen, char *err, size_t errlen);

int sk_ident_new(uv_loop_t *loop, const sk_ident_opts_t *o, sk_ident_t **out, char *err, size_t errlen);
/* Frees once the timer handle is closed; a renewal in flight is canceled.
 * Accepts NULL. */
void sk_ident_free(sk_ident_t *id);

/* Starts: ready(id, 0, ud) as soon as a usable certificate is in place
 * (at once when <dir> already holds one; with an in-process issuer the
 * first issuance happens inside this call). Until then failures are
 * retried with backoff and reported through on_event; ready is called
 * once. */
typedef void (*sk_ident_ready_fn)(sk_ident_t *id, void *ud);
int sk_ident_start(sk_ident_t *id, sk_ident_ready_fn ready, void *ud);
/* Starts a renewal now (tests, operators); SK_EBUSY when one is running. */
int sk_ident_renew_now(sk_ident_t *id);

/* Contexts to reload after every renewal, in addition to every live
 * context whose files are this identity's (sk_tls_ctx_reload_files). */
void sk_ident_add_tls(sk_ident_t *id, sk_tls_ctx_t *ctx);

const char *sk_ident_cert_path(const sk_ident_t *id);
const char *sk_ident_key_path(const sk_ident_t *id);
const char *sk_ident_bundle_path(const sk_ident_t *id);
const char *sk_ident_spiffe_id(const sk_ident_t *id);
/* Current certificate: hex serial (>= 65 bytes), notAfter, renewal time;
 * SK_ENOENT before the first one. */
int sk_ident_current(const sk_ident_t *id, char *serial, size_t seriallen, int64_t *not_after, int64_t *due_at);
/* Successful renewals since start. */
uint64_t sk_ident_renewals(const sk_ident_t *id);

/* ---- helpers (also used by control and the CLI) ---- */

/* 1 when now has reached notBefore + 2/3 (notAfter - notBefore) or the
 * certificate expired; cert NULL = 1. */
int sk_ident_renew_due(X509 *cert, time_t now);
/* Same for the first certificate of a PEM file; *due_at (may be NULL) gets
 * the renewal time. SK_ENOENT / SK_EPARSE when the file is unusable. */
int sk_ident_renew_due_file(const char *cert_path, time_t now, int64_t *due_at);
/* A new P-256 key (PEM, PKCS#8) and a CSR for spiffe_id with DNS SANs;
 * both malloc'd. */
int sk_ident_make_csr(const char *spiffe_id, const char *const *dns, size_t ndns, char **key_pem,
                      char **csr_pem);
/* Writes data to path through path.tmp, fsync, rename (mode applied). */
int sk_ident_write_file(const char *path, const void *data, size_t len, int mode, char *err, size_t errlen);

#endif
