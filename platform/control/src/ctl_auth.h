/* ctl_auth.h - skiff-control authentication and authorization.
 *
 * Two ways to prove who you are:
 *   - a bearer token "Authorization: Bearer skiff_<43 base64url chars>"
 *     (256 random bits). Only its SHA-256 is stored; each token has a name,
 *     a role, a creation time, an optional expiry and can be revoked;
 *   - a verified client certificate from skiff-control's CA: its SPIFFE ID
 *     (req->peer_spiffe) is mapped to a role by ordered patterns.
 *
 * Roles: viewer (get/list/watch), operator (viewer + create/update/patch/
 * delete on resource kinds), admin (everything, including the admin-only
 * kinds Token, CA and Audit). Kinds are the strings control routes on
 * ("Service", "Route", ...); admin-only kinds can be added.
 *
 * Tables (created if missing in the store given at open; no migration
 * needed in control's list): ctl_tokens.
 *
 * Error responses written by this module are JSON:
 *   {"code":401,"reason":"Unauthorized","message":"..."}
 * with "www-authenticate: Bearer" on 401. */
#ifndef SKIFF_CTL_AUTH_H
#define SKIFF_CTL_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "skiff/http.h"
#include "ctl_backend.h"
#include "skiff/store.h"

typedef struct ctl_auth ctl_auth_t;
typedef struct ctl_audit ctl_audit_t; /* ctl_audit.h */

typedef enum ctl_role {
  CTL_ROLE_NONE = 0, /* authenticated (mTLS) but mapped to no role: every call is 403 */
  CTL_ROLE_VIEWER = 1,
  CTL_ROLE_OPERATOR = 2,
  CTL_ROLE_ADMIN = 3,
} ctl_role_t;

typedef enum ctl_via {
  CTL_VIA_NONE = 0,
  CTL_VIA_TOKEN = 1,
  CTL_VIA_MTLS = 2,
} ctl_via_t;

typedef enum ctl_verb {
  CTL_VERB_GET = 0,
  CTL_VERB_LIST,
  CTL_VERB_WATCH,
  CTL_VERB_CREATE,
  CTL_VERB_UPDATE,
  CTL_VERB_PATCH,
  CTL_VERB_DELETE,
  CTL_VERB__COUNT,
} ctl_verb_t;

/* Pseudo-kinds for the security endpoints (admin only by default). */
#define CTL_KIND_TOKEN "Token"
#define CTL_KIND_CA "CA"
#define CTL_KIND_AUDIT "Audit"

#define CTL_TOKEN_PREFIX "skiff_"
#define CTL_TOKEN_LEN 49 /* "skiff_" + 43 base64url characters */
#define CTL_NAME_MAX 512

typedef struct ctl_principal {
  char name[CTL_NAME_MAX]; /* token name, or the SPIFFE ID for mTLS */
  char id[32];             /* token id ("tok_..."), "" for mTLS */
  ctl_role_t role;
  ctl_via_t via;
} ctl_principal_t;

typedef struct ctl_auth_mtls_rule {
  /* SPIFFE ID pattern: '*' matches within one path segment (no '/'),
   * "**" matches anything. "spiffe://skiff.local/region/ * /daemon/ *"
   * (without the spaces) matches every daemon of the trust domain. */
  const char *pattern;
  ctl_role_t role;
} ctl_auth_mtls_rule_t;

typedef struct ctl_auth_opts {
  sk_store_t *store;        /* holds ctl_tokens (required unless backend has token ops) */
  struct ctl_backend *backend; /* when its ops have token_add (PostgreSQL), tokens live there,
                                  shared by the replicas; store is then unused */
  const char *state_dir;    /* for ctl_auth_bootstrap's admin.token; NULL = no bootstrap file */
  const char *trust_domain; /* for the default mTLS rules; default "skiff.local" */
  /* First match wins. NULL = defaults: .../region/ * /daemon/ * -> admin,
   * .../region/ * /proxy/ * -> viewer; any other identity -> CTL_ROLE_NONE. */
  const ctl_auth_mtls_rule_t *mtls_rules;
  size_t nmtls_rules;
  int mtls_defaults; /* with mtls_rules: the default rules still follow them */
  size_t max_tokens; /* live (unrevoked) tokens allowed; default 10000 */
} ctl_auth_opts_t;

int ctl_auth_open(const ctl_auth_opts_t *o, ctl_auth_t **out, char *err, size_t errlen);
void ctl_auth_free(ctl_auth_t *a); /* accepts NULL */

/* First start: if no unrevoked, unexpired admin token exists, creates one
 * named "bootstrap-admin" and writes the secret to <state_dir>/admin.token
 * (mode 0600, atomically). Returns 1 if created (path copied to path_out
 * when given), 0 if an admin token already existed. The secret is never
 * returned to the caller, so it cannot end up in a log. */
int ctl_auth_bootstrap(ctl_auth_t *a, char *path_out, size_t pathlen);

/* Makes kind admin-only (besides Token, CA and Audit). */
int ctl_auth_add_admin_kind(ctl_auth_t *a, const char *kind);

const char *ctl_role_name(ctl_role_t r);       /* "viewer", "operator", "admin", "none" */
int ctl_role_parse(const char *s, ctl_role_t *out); /* SK_EINVAL when unknown */
const char *ctl_verb_name(ctl_verb_t v);       /* "get", "list", ... */
const char *ctl_via_name(ctl_via_t v);         /* "token", "mtls", "none" */
/* GET on a collection -> list (watch=true -> watch), GET on one object -> get,
 * POST -> create, PUT -> update, PATCH -> patch, DELETE -> delete.
 * SK_EINVAL for other methods. */
int ctl_verb_from_method(const char *method, int has_name, int watch, ctl_verb_t *out);

/* ---- tokens ---- */

typedef struct ctl_token_info {
  char id[32];
  char name[CTL_NAME_MAX];
  ctl_role_t role;
  int64_t created;  /* unix seconds */
  int64_t expires;  /* unix seconds, 0 = never */
  int64_t revoked;  /* unix seconds, 0 = live */
} ctl_token_info_t;

/* Creates a token; the secret (CTL_TOKEN_LEN chars + NUL) is written to
 * secret_out, which must hold at least CTL_TOKEN_LEN + 1 bytes. ttl_s 0 =
 * no expiry. name: 1..128 of [A-Za-z0-9._:@-]. info may be NULL. */
int ctl_auth_token_create(ctl_auth_t *a, const char *name, ctl_role_t role, int64_t ttl_s,
                          char *secret_out, size_t secretlen, ctl_token_info_t *info);
/* Revokes by id or name (every live token with that name). SK_ENOTFOUND
 * when nothing live matched. */
int ctl_auth_token_revoke(ctl_auth_t *a, const char *id_or_name);
/* JSON array of token infos (never secrets or hashes), newest first. */
int ctl_auth_token_list(ctl_auth_t *a, json_t **out);
/* Checks a presented secret at time now (unix seconds). 0 and *p filled, or
 * SK_EUNAUTH with the reason ("token expired", "token revoked", ...). */
int ctl_auth_token_check(ctl_auth_t *a, const char *secret, int64_t now, ctl_principal_t *p,
                         char *reason, size_t reasonlen);

/* ---- per request ---- */

/* A bearer token wins over the client certificate when both are present
 * (a bad token is a 401 even with a good certificate). Returns 0 with *p
 * filled, or SK_EUNAUTH with a reason. */
int ctl_auth_authenticate(ctl_auth_t *a, const sk_http_req_t *req, ctl_principal_t *p,
                          char *reason, size_t reasonlen);
/* 0 when p may do verb on kind, SK_EFORBID with a reason otherwise. */
int ctl_auth_authorize(const ctl_auth_t *a, const ctl_principal_t *p, ctl_verb_t verb,
                       const char *kind, char *reason, size_t reasonlen);

/* Authenticate + authorize in one call for control's handlers. On success
 * returns 0 and fills *p (p may be NULL). On refusal it answers the request
 * itself (401 or 403, JSON), records the refusal in audit (when audit !=
 * NULL; ns and name may be NULL) and returns SK_EUNAUTH or SK_EFORBID:
 * the caller must then just return. */
int ctl_auth_guard(ctl_auth_t *a, ctl_audit_t *audit, sk_http_req_t *req, ctl_verb_t verb,
                   const char *kind, const char *ns, const char *name, ctl_principal_t *p);

/* Answers a Kubernetes Status object ({kind: Status, apiVersion: v1,
 * status: Failure, message, reason, code}; reason Unauthorized for 401,
 * Forbidden for 403). 401 adds "www-authenticate: Bearer realm=skiff". */
int ctl_http_error(sk_http_req_t *req, int status, const char *message);

/* ---- HTTP: /api/v1/tokens ----
 *   POST   /api/v1/tokens        {"name":..,"role":..,"ttl":"24h"|seconds} ->
 *                                201 {"token":"skiff_...", id, name, role, created, expires}
 *   GET    /api/v1/tokens        200 {"items":[...]} (no secrets)
 *   DELETE /api/v1/tokens/{id|name}  200 {"revoked":N}
 * Admin only (kind Token); every call audited. Returns 1 when req->path is
 * under /api/v1/tokens (a response was sent), 0 otherwise (untouched). */
int ctl_auth_http_route(ctl_auth_t *a, ctl_audit_t *audit, sk_http_req_t *req);

/* ---- internal helpers shared by ctl_auth.c, ctl_ca.c, ctl_audit.c ---- */

/* nbytes random bytes as unpadded base64url into out (needs
 * 4*nbytes/3 + 2 bytes). */
int ctl__random_b64url(char *out, size_t outlen, size_t nbytes);
void ctl__sha256(const void *data, size_t len, unsigned char out[32]);
/* 1 if s is prefix followed by base64url characters, total bytes long. */
int ctl__token_shape_ok(const char *s, const char *prefix, size_t total);
/* A new secret: prefix followed by 43 random base64url characters into out
 * (outlen > strlen(prefix) + 43), and its SHA-256 into hash. */
int ctl__secret_new(const char *prefix, char *out, size_t outlen, unsigned char hash[32]);
/* SHA-256 of secret into hash when it has the shape ctl__secret_new gives
 * (total bytes); otherwise SK_EUNAUTH and "malformed <what> (expected
 * <prefix> followed by 43 characters)" in err. */
int ctl__secret_hash(const char *secret, const char *prefix, size_t total, const char *what,
                     unsigned char hash[32], char *err, size_t errlen);
/* vsnprintf into err (nothing when err is NULL or errlen 0). */
void ctl__seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* tmp file + fsync + rename (+ directory fsync); mode e.g. 0600. */
int ctl__write_file_atomic(const char *path, const void *data, size_t len, int mode, char *err,
                           size_t errlen);
int64_t ctl__now_s(void);
int64_t ctl__now_ms(void);
/* "2024-05-01T10:00:00Z" (ms >= 0 adds ".123"); out >= 32 bytes. */
void ctl__rfc3339(int64_t s, int ms, char *out, size_t outlen);
/* "90", "90s", "15m", "24h", "7d" -> seconds; SK_EINVAL otherwise. */
int ctl__parse_duration(const char *s, int64_t *out);
/* Value of key in an x-www-form-urlencoded query (percent- and '+'-decoded
 * into pool), or NULL. */
const char *ctl__query_get(const char *query, const char *key, sk_pool_t *pool);
/* Serialises v (reference kept by the caller) as the JSON response body. */
int ctl__respond_json(sk_http_req_t *req, int status, const json_t *v);
/* Parses a request body as a JSON object (bounded size and depth). */
int ctl__body_json(const sk_http_req_t *req, size_t max_bytes, json_t **out, char *err,
                   size_t errlen);

#endif
