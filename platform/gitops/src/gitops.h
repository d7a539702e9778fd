/* gitops.h - skiff-gitops (prefix gx_): Git -> desired state -> skiff-control.
 *
 *   gx_daemon.c    config schema, lifecycle, the webhook listener and the
 *                  reconciler thread that does all blocking work
 *   gx_webhook.c   GitHub / GitLab push payloads and their signatures
 *   gx_git.c       libgit2: fetch into a cache dir (connect probe, ssh keys
 *                  and known_hosts), resolve revisions, read manifest files
 *                  from a commit's tree
 *   gx_manifest.c  multi-document YAML into resources with file:line, sync
 *                  waves and kind order, normalised comparison, health
 *   gx_ctl.c       a blocking client of skiff-control's API (private loop,
 *                  keep-alive, pipelined batches)
 *   gx_sync.c      one Application's reconcile: diff, dry run, apply in
 *                  waves, prune, health, status and history
 *   gx_options.c   sync options, retry backoff, ignoreDifferences (JSON
 *                  pointers) and the three-way merge of an apply
 *   gx_cli.c       skiff app list|get|sync|diff|history|rollback|suspend|resume
 * See docs/gitops.md. */
#ifndef SKIFF_GITOPS_H
#define SKIFF_GITOPS_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "skiff/config.h"
#include "skiff/daemon.h"
#include "skiff/http.h"
#include "skiff/mem.h"

#define GX_LABEL_APP "gitops.skiff.dev/app"
#define GX_ANN_TRACKING "gitops.skiff.dev/tracking-id"
#define GX_ANN_REFRESH "gitops.skiff.dev/refresh"
#define GX_ANN_ROLLBACK "gitops.skiff.dev/rollback"
#define GX_ANN_SUSPENDED "gitops.skiff.dev/suspended"
#define GX_ANN_PRUNE "gitops.skiff.dev/prune"
#define GX_ANN_WAVE "gitops.skiff.dev/sync-wave"
#define GX_ANN_ARGO_WAVE "argocd.argoproj.io/sync-wave"
#define GX_ANN_ARGO_OPTIONS "argocd.argoproj.io/sync-options"
/* the field names (no values) of the document last applied from Git: a
 * field Git drops is removed from the live object by the next apply, a
 * field someone else added live is kept (kubectl apply's three-way merge) */
#define GX_ANN_APPLIED_FIELDS "gitops.skiff.dev/applied-fields"

#define GX_MAX_FILE_BYTES (4u << 20)
#define GX_MAX_FILES 4096
#define GX_MAX_DOCS 20000
#define GX_MAX_WEBHOOK_BYTES (4u << 20)

/* ---- configuration ---- */

typedef struct gx_repo_cred {
  char *url;           /* repository URL prefix the credentials are for */
  char *username;
  char *password_file; /* password or token, read at use (never logged) */
  char *ssh_key_file;  /* ssh:// private key (OpenSSH or PEM), read by libssh2 */
  char *known_hosts_file; /* ssh:// host keys accepted (OpenSSH known_hosts) */
} gx_repo_cred_t;

typedef struct gx_config {
  sk_cfg_addr_t listen;
  char *control;          /* http://127.0.0.1:7400 */
  char *token_file;       /* bearer token for control */
  char *control_ca;       /* PEM bundle verifying an https control */
  char *cache_dir;        /* default <state_dir>/git-cache */
  uint64_t poll_ms;       /* git polling interval, default 30s (jittered +-10%) */
  uint64_t resync_ms;     /* live vs desired comparison (self-heal), default 5s */
  uint64_t app_refresh_ms; /* how often the Application list is read, default 1s */
  uint64_t connect_timeout_ms; /* TCP connect probe before a fetch, default 10s */
  uint64_t fetch_timeout_ms;   /* a whole fetch, default 10m */
  char *github_secret_file;
  char *gitlab_token_file;
  sk_cfg_list_t credentials; /* gx_repo_cred_t */
  char *kafka_brokers;    /* sync events to Kafka too ("" = local log only) */
} gx_config_t;

extern const sk_config_schema_t gx_config_schema;
extern const sk_daemon_desc_t gx_daemon_desc;

/* ---- webhooks (gx_webhook.c) ---- */

typedef enum gx_hook_provider { GX_HOOK_GITHUB = 1, GX_HOOK_GITLAB = 2 } gx_hook_provider_t;

#define GX_HOOK_MAX_URLS 8

typedef struct gx_hook_event {
  gx_hook_provider_t provider;
  int is_push;                /* 0 for ping and other events (answered, ignored) */
  char ref[256];              /* "refs/heads/main" */
  char *urls[GX_HOOK_MAX_URLS]; /* the repository's URLs (malloc'd) */
  size_t nurls;
} gx_hook_event_t;

/* HMAC-SHA256 of body with secret, compared in constant time with a
 * "sha256=<hex>" header value. 0 = good, SK_EUNAUTH otherwise. */
int gx_hook_verify_github(const char *secret, const char *header, const void *body, size_t len);
/* Constant-time comparison of the X-Gitlab-Token header. */
int gx_hook_verify_gitlab(const char *token, const char *header);
/* Parses a push payload (JSON, bounded). event: X-GitHub-Event or
 * X-Gitlab-Event value. SK_EPARSE with a message. */
int gx_hook_parse(gx_hook_provider_t p, const char *event, const void *body, size_t len, gx_hook_event_t *out,
                  char *err, size_t errlen);
void gx_hook_event_done(gx_hook_event_t *ev);
/* Repository URLs compared the way people write them: scheme and host
 * lower-cased, credentials dropped, trailing "/" and ".git" removed. */
void gx_url_normalize(const char *in, char *out, size_t len);

/* ---- manifests (gx_manifest.c) ---- */

typedef struct gx_res {
  json_t *doc;          /* the document as in Git (namespace filled in) */
  char src[512];        /* "path/file.yaml:12" (document start) */
  char api_version[128];
  char kind[64];
  char ns[64];
  char name[254];
  int wave;             /* sync wave, default 0 */
  int kind_rank;        /* kind order inside a wave */
  size_t index;         /* position in Git (stable tie breaker) */
} gx_res_t;

typedef struct gx_resset {
  gx_res_t *v;
  size_t n, cap;
} gx_resset_t;

void gx_resset_init(gx_resset_t *s);
void gx_resset_done(gx_resset_t *s); /* accepts NULL */

/* Every document of one file's text into s. name is the path shown in
 * errors; default_ns fills namespace-less documents. SK_EPARSE/SK_ELIMIT/
 * SK_EINVAL with "name:line[:col]: message" in err. */
int gx_manifest_load(gx_resset_t *s, const char *name, const char *text, size_t len, const char *default_ns,
                     char *err, size_t errlen);
/* Duplicate kind/ns/name across the set: SK_EEXIST with both places. */
int gx_manifest_check_dups(const gx_resset_t *s, char *err, size_t errlen);
/* Sorts by (wave, kind rank, index). */
void gx_manifest_sort(gx_resset_t *s);
/* Glob list as Argo writes it: "*.yaml" or "{a.yaml,dir/x*}". 1 = matches. */
int gx_glob_match(const char *globs, const char *path);

/* metadata.annotations[key] of obj (keys contain dots, so no path), or NULL. */
const char *gx_annotation(const json_t *obj, const char *key);

/* desired is contained in live (live may carry server-managed fields,
 * defaults and status). On a difference, where names the first differing
 * field path. */
int gx_doc_in_sync(const json_t *desired, const json_t *live, char *where, size_t wlen);
/* Health of a live object from its status: Healthy, Progressing, Degraded,
 * Suspended or Unknown (Missing is the caller's). */
const char *gx_health_of(const json_t *live);
/* Rank for "worst of": Healthy < Suspended < Progressing < Missing <
 * Degraded < Unknown. */
int gx_health_rank(const char *h);

/* JSON pointer (RFC 6901) into v: the value or NULL. */
json_t *gx_json_pointer_get(const json_t *v, const char *ptr);
/* Sets (val non-NULL, reference stolen) or removes (val NULL) the value at
 * ptr; the parent must exist. 0, or SK_ENOTFOUND. */
int gx_json_pointer_put(json_t *v, const char *ptr, json_t *val);
/* ignoreDifferences rules (Argo CD's {group, kind, name, namespace,
 * jsonPointers}) that match a document: calls fn for each pointer. */
void gx_ignore_foreach(const json_t *rules, const char *api_version, const char *kind, const char *ns,
                       const char *name, void (*fn)(const char *ptr, void *ud), void *ud);
/* The field names of doc (objects recursed, every other value a leaf 1),
 * without status and server-managed metadata: GX_ANN_APPLIED_FIELDS. */
json_t *gx_field_set(const json_t *doc);
/* Three-way merge for an apply: live with desired laid over it (objects
 * merged, anything else replaced), minus the fields last (a field set)
 * had and desired no longer has. New reference. */
json_t *gx_merge_apply(const json_t *last, const json_t *desired, const json_t *live);

/* Sync options, Argo CD's names ("Name=value", on the Application's
 * syncPolicy.syncOptions or comma-separated in a resource's
 * argocd.argoproj.io/sync-options annotation). -1 = not given. */
typedef struct gx_sync_opts {
  int prune;            /* Prune=false: never pruned */
  int prune_last;       /* PruneLast=true: pruned after every wave */
  int apply_oos_only;   /* ApplyOutOfSyncOnly (always the case in Skiff) */
  int replace;          /* Replace=true: the live object becomes Git's document */
  int validate;         /* Validate=false: accepted, never honoured */
  int create_namespace; /* CreateNamespace: namespaces are not objects in Skiff */
  int respect_ignore;   /* RespectIgnoreDifferences=true: ignored fields keep their live value on apply */
} gx_sync_opts_t;

void gx_sync_opts_init(gx_sync_opts_t *o);
/* One "Name=value" (surrounding spaces allowed) into o. SK_EINVAL with a
 * message for an unknown name or a value other than true/false. */
int gx_sync_opt_parse(gx_sync_opts_t *o, const char *opt, size_t len, char *err, size_t errlen);
/* A comma-separated list (the annotation's form): every option parsed;
 * the messages of the bad ones joined in err. Count of bad ones. */
int gx_sync_opts_parse_list(gx_sync_opts_t *o, const char *list, char *err, size_t errlen);

/* syncPolicy.retry (Argo CD): limit (0 none, -1 unlimited), backoff
 * {duration (default 5s), factor (2), maxDuration (3m)}; durations as a
 * number of seconds or "30s"/"2m"/"1h". */
typedef struct gx_retry {
  int64_t limit;
  uint64_t duration_ms, max_ms;
  int64_t factor;
} gx_retry_t;
/* spec.syncPolicy.retry into r; 0 when absent or limit 0 (no retries). */
int gx_retry_from_spec(const json_t *retry, gx_retry_t *r);
/* Wait before retry number attempt (1 = the first retry). */
uint64_t gx_retry_delay_ms(const gx_retry_t *r, int attempt);

/* ---- git (gx_git.c) ---- */

typedef struct gx_git gx_git_t;

typedef struct gx_git_cred {
  const char *username;
  const char *password;    /* NULL: no credentials */
  const char *ssh_key_file;     /* ssh:// key (NULL: none) */
  const char *known_hosts_file; /* ssh:// host keys; NULL refuses every host */
  const volatile int *cancel; /* non-zero stops a transfer in progress (drain); may be NULL */
  uint64_t connect_timeout_ms;  /* TCP connect probe before the fetch (0: none) */
  uint64_t fetch_timeout_ms;    /* whole fetch deadline (0: none) */
} gx_git_cred_t;

int gx_git_global_init(void);
/* Releases libgit2's global state (one call per successful init). */
void gx_git_global_done(void);
/* Opens (or creates) the bare cache repository for url under cache_dir. */
int gx_git_open(const char *cache_dir, const char *url, gx_git_t **out, char *err, size_t errlen);
void gx_git_free(gx_git_t *g);
/* The host and port a fetch of url connects to (git:// 9418, http 80,
 * https 443, ssh 22, scp-like user@host:path 22). SK_ENOTSUP for file://
 * and local paths, SK_EINVAL when unparsable. */
int gx_git_url_endpoint(const char *url, char *host, size_t hostlen, int *port);
/* TCP connect to host:port within timeout_ms (every address tried; cancel
 * checked every 100 ms). SK_ETIMEDOUT / SK_EIO with a message. */
int gx_git_probe(const char *host, int port, uint64_t timeout_ms, const volatile int *cancel, char *err,
                 size_t errlen);
/* Fetches every branch and tag (incremental). err names the repository. */
int gx_git_fetch(gx_git_t *g, const gx_git_cred_t *cred, char *err, size_t errlen);
/* "HEAD", "" (default branch), a branch, a tag or a (short) commit id into
 * a 40-hex id. SK_ENOTFOUND with a message. */
int gx_git_resolve(gx_git_t *g, const char *rev, char oid[41], char *err, size_t errlen);
/* The commit's author ("Name <mail>"), first line of the message. */
int gx_git_commit_info(gx_git_t *g, const char *oid, char *author, size_t alen, char *msg, size_t mlen);
/* Every .yaml, .yml and .json file under path (recursively when recurse)
 * matching include/exclude, loaded into s in path order. */
int gx_git_load(gx_git_t *g, const char *oid, const char *path, int recurse, const char *include,
                const char *exclude, const char *default_ns, gx_resset_t *s, char *err, size_t errlen);

/* ---- control client (gx_ctl.c) ---- */

typedef struct gx_ctl gx_ctl_t;

typedef struct gx_ctl_resp {
  int err;      /* < 0: transport failure */
  int status;
  char result[32]; /* x-skiff-result */
  sk_buf_t body;
} gx_ctl_resp_t;

typedef struct gx_ctl_req {
  const char *method;
  char *path;       /* malloc'd by the caller, freed by gx_ctl_batch_done */
  char *body;       /* malloc'd or NULL */
  const char *ctype;
  gx_ctl_resp_t resp;
} gx_ctl_req_t;

/* server: http://host:port or https://host:port (then ca_file, a PEM
 * bundle, verifies it; cert_file/key_file, when set, are the client
 * certificate: the daemon's identity, so control authenticates it by mTLS
 * and a renewal reloads the context in place). token (may be NULL) is sent
 * as a bearer token. */
int gx_ctl_new(const char *server, const char *token, const char *ca_file, const char *cert_file,
               const char *key_file, gx_ctl_t **out, char *err, size_t errlen);
void gx_ctl_free(gx_ctl_t *c);
void gx_ctl_set_token(gx_ctl_t *c, const char *token);
/* One request, blocking. resp->body must be released (gx_ctl_resp_done). */
int gx_ctl_call(gx_ctl_t *c, const char *method, const char *path, const char *ctype, const void *body,
                size_t len, gx_ctl_resp_t *resp);
/* Many requests at once (pipelined over up to 8 connections). */
int gx_ctl_batch(gx_ctl_t *c, gx_ctl_req_t *reqs, size_t n);
void gx_ctl_batch_done(gx_ctl_req_t *reqs, size_t n);
void gx_ctl_resp_done(gx_ctl_resp_t *r);
/* The "message" of a Status body, or the body itself (pointer into r or a
 * static string; valid while r lives). Copies into out. */
void gx_ctl_message(const gx_ctl_resp_t *r, char *out, size_t len);
/* GET path into a parsed JSON value (new reference). */
int gx_ctl_get_json(gx_ctl_t *c, const char *path, json_t **out, char *err, size_t errlen);

/* ---- reconcile (gx_sync.c) ---- */

typedef struct gx_kindinfo {
  char plural[96];
  char kind[64];
  char api_version[128];
  char stored_as[64];
  int namespaced;
} gx_kindinfo_t;

typedef struct gx_sync_env {
  gx_ctl_t *ctl;
  const gx_kindinfo_t *kinds;
  size_t nkinds;
  int retry_count;     /* automated retries of this revision so far (status.operationState.retryCount) */
  uint64_t retry_next_ms; /* when this sync fails: the next retry in that many ms (0: none left) */
} gx_sync_env_t;

typedef struct gx_sync_result {
  int ok;            /* 1 = synced (or nothing to do) */
  int applied;       /* resources created/updated */
  int pruned;
  int out_of_sync;   /* resources that differ after the run (manual apps) */
  int drift;         /* changes to live objects of an already synced revision */
  char message[2048];
} gx_sync_result_t;

typedef enum gx_sync_mode {
  GX_SYNC_COMPARE = 0, /* compare only: status, no writes */
  GX_SYNC_APPLY = 1,   /* dry run, then apply (and prune when allowed) */
} gx_sync_mode_t;

/* Reconciles app (the Application as read from control) to the resources
 * in desired (already loaded from the revision). Writes the Application's
 * status through control. */
int gx_sync_app(gx_sync_env_t *env, const json_t *app, gx_resset_t *desired, const char *revision,
                const char *author, const char *commit_msg, gx_sync_mode_t mode, int prune, gx_sync_result_t *res);
/* Writes only status fields (an error condition: fetch failure, bad YAML). */
/* type: ComparisonError, RollbackError, ...; reason: a CamelCase word
 * (FetchFailed, RevisionNotFound, InvalidManifests, ...). */
int gx_sync_status_error(gx_sync_env_t *env, const json_t *app, const char *type, const char *reason,
                         const char *message,
                         const char *revision);

/* ---- CLI ---- */

int gx_cli_main(int argc, char **argv);

#endif
