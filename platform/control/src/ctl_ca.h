/* ctl_ca.h - skiff-control's certificate authority.
 *
 * A root and an intermediate CA (ECDSA P-256) live in <state_dir>/ca/:
 *   root.pem root.key intermediate.pem intermediate.key bundle.pem
 * (keys 0600, directory 0700). ctl_ca_open creates them on first start and
 * loads them afterwards; bundle.pem (the root) is the trust bundle every
 * Skiff TLS context uses as ca_file.
 *
 * Leaf certificates are short-lived (default 24 h), carry exactly one
 * SPIFFE URI SAN spiffe://<trust-domain>/region/<r>/<kind>/<name>, are
 * signed by the intermediate, have a random 128-bit serial, CA:FALSE and
 * serverAuth+clientAuth. The chain handed out is leaf + intermediate.
 *
 * Who may get which identity through the CSR endpoint:
 *   - a join token (prefix "skiffjoin_"), created by an admin, bound to one
 *     SPIFFE ID, with an expiry and a number of uses; stored hashed;
 *   - the same identity already: a verified client certificate whose
 *     SPIFFE ID equals the requested one (renewal). The listener serving
 *     the endpoint must use this CA's bundle as ca_file so that only this
 *     CA's certificates are verified;
 *   - an admin (bearer token or mTLS) may request any valid identity.
 *
 * Tables (created if missing): ctl_join_tokens. */
#ifndef SKIFF_CTL_CA_H
#define SKIFF_CTL_CA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "ctl_backend.h"
#include "ctl_auth.h"
#include "skiff/http.h"
#include "skiff/store.h"
#include "skiff/tls.h"

typedef struct ctl_ca ctl_ca_t;

#define CTL_CA_DEFAULT_TTL_S (24 * 3600)
#define CTL_CA_MAX_CSR_BYTES 16384
#define CTL_SPIFFE_MAX 512
#define CTL_JOIN_PREFIX "skiffjoin_"
#define CTL_JOIN_LEN 53 /* "skiffjoin_" + 43 base64url characters */

typedef struct ctl_ca_opts {
  const char *state_dir;    /* required; CA files go to <state_dir>/ca/ */
  const char *trust_domain; /* default "skiff.local"; [a-z0-9.-], 1..255 */
  sk_store_t *store;        /* join tokens; NULL (and no backend) = join tokens disabled */
  struct ctl_backend *backend; /* when its ops have join_add (PostgreSQL), join tokens live there */
  int64_t leaf_ttl_s;       /* default CTL_CA_DEFAULT_TTL_S */
  int64_t max_leaf_ttl_s;   /* cap for a requested ttl; default 7 days */
  int64_t root_ttl_s;       /* at creation; default 10 years */
  int64_t intermediate_ttl_s; /* default 1 year; re-issued from the root
                                 at open when less than a tenth remains */
  size_t max_csr_bytes;     /* default CTL_CA_MAX_CSR_BYTES */
  /* DNS SANs a CSR may ask for (besides the SPIFFE URI): "localhost" and
   * names under "<trust-domain>" always; plus these suffixes (".example.com"
   * matches below it, "host.example.com" exactly). IP SANs: loopback
   * only unless allow_ip_sans. */
  const char *const *dns_suffixes;
  size_t ndns_suffixes;
  int allow_ip_sans;
} ctl_ca_opts_t;

int ctl_ca_open(const ctl_ca_opts_t *o, ctl_ca_t **out, char *err, size_t errlen);
void ctl_ca_free(ctl_ca_t *ca); /* accepts NULL */

const char *ctl_ca_trust_domain(const ctl_ca_t *ca);
/* The trust bundle (root certificate) as PEM, and the path of bundle.pem. */
const char *ctl_ca_bundle_pem(const ctl_ca_t *ca);
const char *ctl_ca_bundle_path(const ctl_ca_t *ca);

/* ---- SPIFFE IDs ---- */

typedef struct ctl_spiffe {
  char region[64];
  char kind[32];  /* daemon | proxy | workload | client */
  char name[129];
} ctl_spiffe_t;

/* Checks "spiffe://<td>/region/<r>/<kind>/<name>": td equal to
 * trust_domain, region [a-z0-9-] 1..63, kind one of daemon, proxy,
 * workload, client, name [A-Za-z0-9._-] 1..128 (no "." or ".."). out may be
 * NULL. SK_EINVAL with a reason otherwise. */
int ctl_spiffe_parse(const char *id, const char *trust_domain, ctl_spiffe_t *out, char *err,
                     size_t errlen);
int ctl_spiffe_format(const char *trust_domain, const char *region, const char *kind,
                      const char *name, char *out, size_t outlen);

/* ---- issuing ---- */

typedef struct ctl_ca_cert {
  char *cert_pem;  /* the leaf */
  char *chain_pem; /* leaf + intermediate */
  char *key_pem;   /* ctl_ca_issue_for only (PKCS#8, unencrypted) */
  char spiffe_id[CTL_SPIFFE_MAX];
  char serial[33]; /* hex */
  int64_t not_before, not_after; /* unix seconds */
} ctl_ca_cert_t;
void ctl_ca_cert_done(ctl_ca_cert_t *c); /* frees the strings; accepts NULL */

/* Validates a PEM CSR: size bound, one CSR, self-signature, key EC
 * P-256/P-384 or RSA >= 2048, exactly one URI SAN that parses as a SPIFFE
 * ID of this trust domain, allowed DNS/IP SANs only, no CA:TRUE request.
 * Fills *id with the requested identity. */
int ctl_ca_csr_check(const ctl_ca_t *ca, const char *pem, size_t len, char *id, size_t idlen,
                     char *err, size_t errlen);
/* Checks the CSR, then (when want_id != NULL) that it asks for exactly
 * want_id, and signs it. ttl_s 0 = default; capped at max_leaf_ttl_s and at
 * the intermediate's own expiry. SK_EINVAL / SK_ELIMIT / SK_EFORBID with a
 * reason. */
int ctl_ca_issue_csr(ctl_ca_t *ca, const char *pem, size_t len, const char *want_id,
                     int64_t ttl_s, ctl_ca_cert_t *out, char *err, size_t errlen);
/* For control's own daemons (skiff up): makes a fresh P-256 key and a
 * certificate for spiffe_id with the given DNS and IP SANs (trusted caller:
 * no SAN policy beyond syntax). */
int ctl_ca_issue_for(ctl_ca_t *ca, const char *spiffe_id, const char *const *dns, size_t ndns,
                     const char *const *ips, size_t nips, int64_t ttl_s, ctl_ca_cert_t *out,
                     char *err, size_t errlen);
/* Writes chain_pem to cert_path and key_pem to key_path (0600), each
 * through a temporary file, fsync and rename. */
int ctl_ca_cert_write(const ctl_ca_cert_t *c, const char *cert_path, const char *key_path,
                      char *err, size_t errlen);

/* ---- join tokens ---- */

/* secret_out >= CTL_JOIN_LEN + 1 bytes. ttl_s 0 = 1 hour; uses 0 = 1. */
int ctl_ca_join_token_create(ctl_ca_t *ca, const char *spiffe_id, int64_t ttl_s, int uses,
                             char *secret_out, size_t secretlen, int64_t *expires);
/* Consumes one use of secret for spiffe_id at time now: SK_EUNAUTH
 * (unknown, expired or used up) or SK_EFORBID (bound to another identity). */
int ctl_ca_join_token_use(ctl_ca_t *ca, const char *secret, const char *spiffe_id, int64_t now,
                          char *err, size_t errlen);

/* ---- HTTP ----
 *   POST /api/v1/ca/csr          {"csr":PEM,"token"?:..,"ttl"?:seconds} ->
 *        200 {"spiffeId","certificate","chain","serial","expires" (RFC 3339),
 *             "notAfter" (unix s)}
 *   GET  /api/v1/ca/bundle       200 application/x-pem-file (the root)
 *   POST /api/v1/ca/join-tokens  admin: {"spiffeId","ttl"?,"uses"?} ->
 *        201 {"token","spiffeId","expires"}
 * auth may be NULL (then only join tokens and renewal authorize a CSR);
 * audit may be NULL. Returns 1 when req->path is under /api/v1/ca (a
 * response was sent), 0 otherwise. */
int ctl_ca_http_route(ctl_ca_t *ca, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req);

/* Decodes a CSR request body (bounded; for the handler and the fuzzer).
 * On success *csr and *token point into a pool copy (token may be NULL);
 * *ttl_s is 0 when absent. */
int ctl_ca_csr_req_decode(const void *body, size_t len, sk_pool_t *pool, const char **csr,
                          size_t *csr_len, const char **token, int64_t *ttl_s, char *err,
                          size_t errlen);

/* The daemon side (when to renew, CSR, atomic files, reload) lives in the
 * runtime: skiff/ident.h. */

#endif
