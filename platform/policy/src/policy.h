/* policy.h - skiff-policy's engine (prefix pol_), usable by any daemon.
 *
 * Loads Kyverno ClusterPolicy / Policy (kyverno.io/v1) and Skiff Policy
 * (skiff.dev/v1) documents and evaluates them against admission requests
 * shaped like AdmissionReview.request (admission.k8s.io/v1):
 *   {uid, kind:{group,version,kind}, namespace, name, operation,
 *    userInfo:{username,groups}, object, oldObject, dryRun}
 * Everything is plain jansson values; nothing here logs or does I/O except
 * the loaders that read files. See docs/policy.md for the supported subset. */
#ifndef SKIFF_POLICY_H
#define SKIFF_POLICY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"

#define POL_MAX_POLICIES 4096
#define POL_MAX_RULES 256          /* per policy */
#define POL_MAX_RESULTS 65536      /* per report */
#define POL_MAX_VAR_OUT (64 * 1024) /* bytes a substituted string may grow to */
#define POL_MAX_DEPTH 64           /* nesting of patterns, patches and values walked */

typedef enum pol_status { POL_PASS = 0, POL_FAIL, POL_WARN, POL_ERROR, POL_SKIP } pol_status_t;
typedef enum pol_action { POL_AUDIT = 0, POL_ENFORCE = 1 } pol_action_t;
typedef enum pol_rule_type { POL_RULE_VALIDATE = 1, POL_RULE_MUTATE = 2, POL_RULE_VERIFY = 3 } pol_rule_type_t;

typedef struct pol_imgrule pol_imgrule_t; /* a parsed verifyImages entry (pol_images.c) */
typedef struct pol_images pol_images_t;   /* registry access + verified-digest cache */

const char *pol_status_name(pol_status_t s); /* "pass", "fail", ... */

typedef struct pol_rule {
  char *name;
  pol_rule_type_t type;
  pol_action_t action;   /* validate rules: rule-level failureAction or the policy's */
  json_t *match;         /* borrowed from the policy document (may be NULL) */
  json_t *exclude;
  json_t *preconditions;
  json_t *validate;      /* the validate block, or NULL */
  json_t *mutate;        /* the mutate block, or NULL */
  json_t *json6902;      /* parsed patchesJson6902 (an array), or NULL */
  pol_imgrule_t *images; /* verifyImages entries (type POL_RULE_VERIFY), owned */
  size_t nimages;
} pol_rule_t;

typedef struct pol_policy {
  char *name;
  char *namespace;       /* Policy (namespaced) kind; NULL for cluster-wide */
  char *source;          /* "file#doc" it came from */
  pol_action_t action;   /* spec.validationFailureAction (default Audit) */
  int background;
  int ignore_errors;     /* spec.failurePolicy: Ignore (registry errors warn instead of deny) */
  pol_rule_t *rules;
  size_t nrules;
  json_t *doc;           /* owned */
} pol_policy_t;

typedef struct pol_set {
  pol_policy_t *v;
  size_t n, cap;
  size_t nverify;        /* verifyImages rules (they need a registry) */
  pol_images_t *images;  /* borrowed; NULL = verifyImages rules answer an error */
} pol_set_t;

void pol_set_init(pol_set_t *s);
void pol_set_done(pol_set_t *s); /* accepts NULL */
/* Adds every policy document of a YAML/JSON stream (other kinds are an
 * error). name labels errors: "name: document 2: spec.rules[0].validate:
 * reason". Nothing is added when any document is bad. */
int pol_set_load_text(pol_set_t *s, const char *name, const char *text, size_t len, char *err, size_t errlen);
/* A file, or a directory whose *.yaml / *.yml / *.json files are loaded in
 * name order (not recursive). */
int pol_set_load_path(pol_set_t *s, const char *path, char *err, size_t errlen);
/* Adds one already-parsed policy document (a new reference is taken). */
int pol_set_add_doc(pol_set_t *s, json_t *doc, const char *source, char *err, size_t errlen);
size_t pol_set_rule_count(const pol_set_t *s);

/* ---- results ---- */

typedef struct pol_result {
  const char *policy;  /* borrowed from the set */
  const char *rule;
  pol_rule_type_t type;
  pol_status_t status;
  pol_action_t action;
  char *message;       /* malloc'd, may be NULL */
} pol_result_t;

typedef struct pol_report {
  pol_result_t *v;
  size_t n, cap;
  size_t dropped;      /* results beyond POL_MAX_RESULTS */
  json_t *patched;     /* the object after mutation (mutate only), owned */
  json_t *patch;       /* RFC 6902 ops from original to patched (mutate only), owned */
} pol_report_t;

void pol_report_init(pol_report_t *r);
void pol_report_done(pol_report_t *r); /* accepts NULL */
/* 1 when an Enforce rule failed or errored (the request must be denied). */
int pol_report_denied(const pol_report_t *r);

/* Validate rules of every policy against req (AdmissionReview.request
 * shape). Returns 0 (the outcome is in the report) or a negative code for a
 * malformed request. */
int pol_validate(const pol_set_t *s, const json_t *req, pol_report_t *out);
/* Mutate rules in order; out->patched and out->patch are set (patch may be
 * an empty array). */
int pol_mutate(const pol_set_t *s, const json_t *req, pol_report_t *out);
/* Mutate then validate the mutated object, as the API server would. */
int pol_evaluate(const pol_set_t *s, const json_t *req, pol_report_t *out);

/* A request for a resource outside admission (CLI, control's pre-apply):
 * kind/namespace/name from the object, userInfo username (may be NULL).
 * operation "CREATE", "UPDATE" (old may be given) or "DELETE" (object
 * NULL, old the object being deleted). dryRun is false; a caller checking
 * a dry run sets it to true (control does for ?dryRun=All). */
json_t *pol_request_for(const json_t *object, const json_t *old, const char *operation, const char *username);

/* The denial text listing every failed Enforce rule ("resource Pod/ns/n was
 * blocked due to the following policies ..."), malloc'd; NULL if none. */
char *pol_report_denial(const pol_report_t *r, const json_t *req);

/* ---- building blocks (exposed for tests and fuzzing) ---- */

typedef enum pol_match_rc { POL_M_OK = 0, POL_M_FAIL = 1, POL_M_SKIP = 2, POL_M_GSKIP = 3 } pol_match_rc_t;

/* Kyverno validate.pattern semantics. On POL_M_FAIL the JSON-pointer-ish
 * path of the first mismatch is written to path ("/spec/containers/0/image/"). */
pol_match_rc_t pol_pattern_match(const json_t *pattern, const json_t *value, char *path, size_t pathlen);
/* A scalar pattern ("?*", ">=100m", "a|b", "!x", "*:latest") against a value. */
int pol_scalar_match(const json_t *pattern, const json_t *value);
/* '*' and '?' wildcards. */
int pol_wildcard(const char *pattern, const char *s);
/* Kubernetes quantity or plain number ("100m", "1Gi", "2.5", "1e3") to a
 * double; 0 on success, -1 if not a quantity. */
int pol_quantity(const char *s, double *out);

/* Replaces {{ expr }} in every string of v (a new value is returned in
 * *out). A string that is exactly one {{ expr }} takes the expression's JSON
 * value. expr: a dotted path (request.object.metadata.name, labels."a/b",
 * spec.containers[0].image, spec.containers[].image) optionally followed by
 * "|| 'default'". A missing variable is SK_ENOTFOUND with a message. */
int pol_substitute(const json_t *v, const json_t *ctx, json_t **out, char *err, size_t errlen);
/* Looks one expression up in ctx; *out is a new reference. */
int pol_var_lookup(const json_t *ctx, const char *expr, size_t len, json_t **out);

/* deny / preconditions: {any:[...], all:[...]} or a plain list (all).
 * Returns 1 true, 0 false, negative on a bad condition (message in err). */
int pol_conditions(const json_t *conds, const json_t *ctx, char *err, size_t errlen);
int pol_operator(const char *op, const json_t *key, const json_t *value, char *err, size_t errlen);

/* RFC 6902 on doc in place (*doc may be replaced: a patch on ""). */
int pol_jsonpatch_apply(json_t **doc, const json_t *ops, char *err, size_t errlen);
/* RFC 6902 ops turning a into b. */
json_t *pol_jsonpatch_diff(const json_t *a, const json_t *b);
/* patchStrategicMerge with Kyverno's anchors on *doc (in place). Returns 1
 * applied, 0 skipped by a conditional anchor, negative on error. */
int pol_smp_apply(json_t **doc, const json_t *patch, char *err, size_t errlen);

/* ---- AdmissionReview ---- */

#define POL_REVIEW_MAX_BYTES (3u * 1024 * 1024)
#define POL_REVIEW_MAX_DEPTH 64

/* Parses and checks an AdmissionReview body; *review is the whole document
 * (its "request" is what pol_validate wants). SK_EPARSE / SK_EINVAL /
 * SK_ELIMIT with a message for the 400 answer. */
int pol_review_decode(const char *body, size_t len, size_t max_bytes, int max_depth, json_t **review,
                      char *err, size_t errlen);
/* The AdmissionReview answer for req from a report (mutate = 1 adds the
 * patch). Serialised into b. */
int pol_review_encode(const json_t *review, const pol_report_t *r, int mutate, sk_buf_t *b);

/* ---- image signatures (verifyImages, skiff sign / verify) ---- */

typedef struct pol_imgref {
  char registry[256]; /* host[:port]; "docker.io" for Docker Hub */
  char repo[512];     /* "library/nginx" */
  char tag[129];      /* "" when only a digest was given */
  char digest[72];    /* "sha256:<hex>" or "" */
} pol_imgref_t;
/* Parses "[registry/]repo[:tag][@sha256:hex]" (Docker Hub names get
 * docker.io and library/; no tag and no digest means :latest). */
int pol_imgref_parse(const char *s, pol_imgref_t *out, char *err, size_t errlen);
int pol_is_digest(const char *s);
void pol_sha256_hex(const void *data, size_t len, char out[72]);

/* A WWW-Authenticate challenge (Bearer realm=..,service=..,scope=.. or Basic). */
typedef struct pol_www_auth {
  char scheme[16], realm[512], service[256], scope[256];
} pol_www_auth_t;
int pol_www_auth_parse(const char *h, size_t len, pol_www_auth_t *out);

typedef struct sk_tls_ctx sk_tls_ctx_t;
typedef struct pol_registry_opts {
  const char *const *insecure; /* host:port allowed over plain http (loopback hosts only) */
  size_t ninsecure;
  const char *ca_file;         /* trust bundle for https registries (default: the system's) */
  sk_tls_ctx_t *tls;           /* or a ready client context (borrowed) */
  uint64_t timeout_ms;         /* per request, default 10 s */
  const char *username, *password; /* for Basic challenges and token services */
} pol_registry_opts_t;

typedef struct pol_registry pol_registry_t;
/* Blocking Docker Registry HTTP API v2 client for one repository (push = 1
 * asks token services for pull,push). opts must outlive it. */
int pol_registry_open(const pol_registry_opts_t *opts, const pol_imgref_t *ref, int push, pol_registry_t **out,
                      char *err, size_t errlen);
void pol_registry_close(pol_registry_t *r); /* accepts NULL */
/* GET a manifest (tag or digest): *manifest parsed, digest = sha256 of the
 * bytes (checked against a digest reference). SK_ENOTFOUND on 404. */
int pol_registry_manifest(pol_registry_t *r, const char *reference, json_t **manifest, char digest[72], char *err,
                          size_t errlen);
/* Checks an image manifest / index body (schemaVersion 2, descriptors). */
int pol_manifest_parse(const char *body, size_t len, json_t **out, char *err, size_t errlen);
int pol_registry_blob(pol_registry_t *r, const char *digest, size_t max, sk_buf_t *out, char *err, size_t errlen);
int pol_registry_push_blob(pol_registry_t *r, const void *data, size_t len, char digest[72], char *err, size_t errlen);
int pol_registry_put_manifest(pol_registry_t *r, const char *tag, const char *media_type, const void *data, size_t len,
                              char *err, size_t errlen);

/* cosign keys and signatures (ECDSA P-256 + SHA-256). */
typedef struct evp_pkey_st EVP_PKEY;
int pol_key_parse_public(const char *pem, size_t len, EVP_PKEY **out, char *err, size_t errlen);
int pol_key_parse_private(const char *pem, size_t len, EVP_PKEY **out, char *err, size_t errlen);
int pol_key_generate(const char *priv_path, const char *pub_path, char *err, size_t errlen);
/* The simple-signing payload (malloc'd JSON) and its check against digest. */
char *pol_cosign_payload(const char *docker_reference, const char *digest);
int pol_cosign_payload_check(const char *payload, size_t len, const char *digest, char *err, size_t errlen);
int pol_sig_sign(EVP_PKEY *key, const void *data, size_t len, sk_buf_t *b64);
int pol_sig_verify(EVP_PKEY *key, const void *data, size_t len, const char *b64sig);
/* 0 when a signature of digest in r's repository verifies with one of keys;
 * SK_EPERM with the reason (no signatures, invalid signature, payload for
 * another digest); other codes for registry errors. */
int pol_cosign_verify(pol_registry_t *r, const char *digest, EVP_PKEY *const *keys, size_t nkeys, char *err,
                      size_t errlen);
/* Pushes a signature of digest (adds a layer to an existing sha256-H.sig). */
int pol_cosign_sign(pol_registry_t *r, const char *docker_reference, const char *digest, EVP_PKEY *key, char *err,
                    size_t errlen);

/* The verifier behind verifyImages rules: registry options and a cache of
 * verified digests (ttl_ms, at most max_entries). Thread-safe. */
int pol_images_new(const pol_registry_opts_t *opts, uint64_t ttl_ms, size_t max_entries, pol_images_t **out);
void pol_images_free(pol_images_t *v); /* accepts NULL */
/* skiff sign / skiff verify (see docs/policy.md). */
int pol_cli_sign(int argc, char **argv);
int pol_cli_verify(int argc, char **argv);

/* ---- shift-left CLI and reports ---- */

/* skiff policy test POLICY... -- RESOURCE... (see docs/policy.md). Exit
 * code: 0 clean, 1 Enforce violations, 2 usage or load errors. */
int pol_cli_test(int argc, char **argv);
/* A wgpolicyk8s.io/v1alpha2 PolicyReport (namespace != NULL) or
 * ClusterPolicyReport for the given resources, at most max_results results
 * (the summary still counts all). */
json_t *pol_policy_report(const pol_set_t *s, const json_t *resources, const char *namespace,
                          size_t max_results);

#endif
