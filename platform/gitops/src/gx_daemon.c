/* skiff-gitops: config schema, lifecycle, the webhook listener (loop
 * thread) and the reconciler thread.
 *
 * Everything that blocks - libgit2 fetches, reading trees, the calls to
 * skiff-control - runs on one reconciler thread, so the loop thread only
 * accepts webhooks. The two share a small mutex-protected record: the
 * repositories webhooks named since the last round (and a wake-up), and the
 * repository URLs the reconciler knows (to tell a webhook how many
 * Applications it touched). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "gitops.h"
#include "skiff/bus.h"
#include "skiff/err.h"
#include "skiff/ident.h"
#include "skiff/json.h"
#include "skiff/store.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

#define GX_MAX_PENDING 256
#define GX_MAX_APPS 4096

static const sk_config_entry_t cred_entries[] = {
    {SK_CFG_E_("url", SK_CFG_STRING, NULL, gx_repo_cred_t, url, "repository URL (or prefix) these are for"),
     .flags = SK_CFG_REQUIRED},
    SK_CFG_STRING_E("username", "git", gx_repo_cred_t, username,
                    "user name for HTTP basic auth; for ssh when the URL names none"),
    SK_CFG_STRING_E("password_file", "", gx_repo_cred_t, password_file,
                    "file holding the password or token for http(s) (read at each fetch, never logged)"),
    SK_CFG_STRING_E("ssh_key_file", "", gx_repo_cred_t, ssh_key_file,
                    "private key for ssh:// and user@host:path repositories (no passphrase)"),
    SK_CFG_STRING_E("known_hosts_file", "", gx_repo_cred_t, known_hosts_file,
                    "OpenSSH known_hosts file with the ssh server's host key (unknown hosts are refused)"),
    SK_CFG_END_E};
static const sk_config_schema_t cred_schema = SK_CFG_SCHEMA("credential", gx_repo_cred_t, cred_entries);

static int check_poll(const void *field, char *msg, size_t msglen) {
  uint64_t v = *(const uint64_t *)field;
  if (v < 100 || v > 24ull * 3600 * 1000) {
    snprintf(msg, msglen, "between 100ms and 24h");
    return SK_ERANGE;
  }
  return 0;
}

static const sk_config_entry_t gx_entries[] = {
    SK_CFG_ADDR_E("listen", "127.0.0.1:7401", gx_config_t, listen, "webhook listener (HTTP/1.1, h2c)"),
    SK_CFG_STRING_E("control", "http://127.0.0.1:7400", gx_config_t, control, "skiff-control's API"),
    SK_CFG_STRING_E("token_file", "", gx_config_t, token_file,
                    "file with the bearer token for skiff-control (operator role or above)"),
    SK_CFG_STRING_E("control_ca", "", gx_config_t, control_ca,
                    "PEM bundle that verifies control's certificate when control is https://"),
    SK_CFG_STRING_E("cache_dir", "", gx_config_t, cache_dir, "git cache; default <state_dir>/git-cache"),
    {SK_CFG_E_("poll_interval", SK_CFG_DURATION, "30s", gx_config_t, poll_ms,
               "how often each repository is fetched (+-10% jitter)"),
     .validate = check_poll},
    {SK_CFG_E_("resync_interval", SK_CFG_DURATION, "5s", gx_config_t, resync_ms,
               "how often live objects are compared with Git (self-heal, sync status)"),
     .validate = check_poll},
    {SK_CFG_E_("app_refresh", SK_CFG_DURATION, "1s", gx_config_t, app_refresh_ms,
               "how often the Application list is read from control"),
     .validate = check_poll},
    {SK_CFG_E_("connect_timeout", SK_CFG_DURATION, "10s", gx_config_t, connect_timeout_ms,
               "TCP connect timeout to a repository's host before each fetch"),
     .validate = check_poll},
    {SK_CFG_E_("fetch_timeout", SK_CFG_DURATION, "10m", gx_config_t, fetch_timeout_ms,
               "longest a fetch may take once connected"),
     .validate = check_poll},
    SK_CFG_STRING_E("github_secret_file", "", gx_config_t, github_secret_file,
                    "file with the GitHub webhook secret (X-Hub-Signature-256); unset = GitHub webhooks refused"),
    SK_CFG_STRING_E("gitlab_token_file", "", gx_config_t, gitlab_token_file,
                    "file with the GitLab webhook token (X-Gitlab-Token); unset = GitLab webhooks refused"),
    SK_CFG_STRING_E("kafka_brokers", "", gx_config_t, kafka_brokers,
                    "sync events also go to Kafka topic skiff.gitops.sync (bootstrap servers)"),
    SK_CFG_LIST_E("credentials", 256, &cred_schema, gx_config_t, credentials,
                  "credentials per repository URL prefix (HTTP password/token or ssh key)"),
    SK_CFG_END_E};

const sk_config_schema_t gx_config_schema = SK_CFG_SCHEMA("gitops", gx_config_t, gx_entries);

/* ---- state ---- */

typedef struct appstate {
  char key[320];
  char refresh[128];  /* last handled gitops.skiff.dev/refresh */
  char rollback[128]; /* last handled gitops.skiff.dev/rollback */
  uint64_t next_poll, next_resync;
  char synced_rev[41];
  int64_t synced_gen;
  char failed_rev[41]; /* an automated sync of this revision failed: not retried */
  int64_t failed_gen;  /* until a push, a spec change or a manual sync */
  int64_t seen_gen;    /* generation handled last (a spec change fetches again) */
  int retry_count;     /* syncPolicy.retry: retries of failed_rev so far */
  uint64_t retry_at;   /* the next one (monotonic ms), 0 none */
  int seen;
} appstate_t;

typedef struct repostate {
  char url[2048];
  char norm[2048];
  gx_git_t *git;
  int fetched;        /* this round */
  int fetch_rc;
  const char *reason; /* condition reason when the fetch failed */
  char err[1024];
  uint64_t last_fetch;
} repostate_t;

typedef struct gx_app {
  sk_daemon_t *d;
  const gx_config_t *cfg;
  sk_logger_t *log;
  sk_http_server_t *srv;
  char cache_dir[1024];
  char *github_secret, *gitlab_token, *token;
  /* control client TLS: control_ca or the identity's bundle; the identity's
   * certificate and key when the daemon has one (mTLS, no bearer token) */
  char ctl_ca[1024], ctl_cert[1024], ctl_key[1024];
  /* shared with the webhook side */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char *pending[GX_MAX_PENDING];
  size_t npending;
  int wake;
  char **known;  /* normalised repo URLs of the Applications */
  size_t nknown;
  volatile int stop_flag; /* mirrors stop for libgit2's progress callback */
  atomic_int stop, done;
  pthread_t th;
  int th_started;
  uv_timer_t drain_timer;
  int drain_timer_on;
  /* sync events: the reconciler queues them, the loop publishes them on the
   * bus (a local log in <state_dir>/gitops.db, plus Kafka when configured) */
  sk_store_t *db;
  sk_bus_t *bus;
  uv_async_t ev_async;
  int ev_async_on;
  json_t *ev_queue; /* under mu */
  int closing;      /* handles still to close in fini */
  int git_inited;
  /* reconciler-only */
  appstate_t *apps;
  size_t napps, capps;
  repostate_t *repos;
  size_t nrepos, crepos;
  gx_kindinfo_t kinds[64];
  size_t nkinds;
  uint64_t kinds_at;
  int control_down_logged;
  /* metrics */
  sk_mfamily_t *m_syncs, *m_fetches, *m_hooks;
  sk_histogram_t *m_dur;
  sk_counter_t *m_drift, *m_reconciles;
  sk_gauge_t *m_apps;
} gx_app_t;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void count(sk_mfamily_t *f, const char *v) {
  if (!f) return;
  const char *vals[1] = {v};
  sk_counter_t *c = NULL;
  if (sk_counter_with(f, vals, &c) == 0) sk_counter_inc(c);
}

static char *read_secret(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
  if (!n) {
    snprintf(err, errlen, "%s: empty", path);
    return NULL;
  }
  char *s = sk_xstrdup(buf);
  memset(buf, 0, sizeof buf);
  return s;
}

static void free_secret(char *s) {
  if (!s) return;
  memset(s, 0, strlen(s));
  free(s);
}

/* ---- events ---- */

static void queue_event(gx_app_t *a, const char *key, json_t *data) {
  if (!a->ev_async_on) {
    json_decref(data);
    return;
  }
  pthread_mutex_lock(&a->mu);
  if (json_array_size(a->ev_queue) < 10000) json_array_append_new(a->ev_queue, json_pack("{s:s, s:o}", "key", key, "data", data));
  else json_decref(data);
  pthread_mutex_unlock(&a->mu);
  uv_async_send(&a->ev_async);
}

static void on_ev_async(uv_async_t *h) {
  gx_app_t *a = h->data;
  pthread_mutex_lock(&a->mu);
  json_t *q = a->ev_queue;
  a->ev_queue = json_array();
  pthread_mutex_unlock(&a->mu);
  size_t i;
  json_t *e;
  json_array_foreach(q, i, e) {
    if (a->bus && sk_bus_publish_json(a->bus, "gitops.sync", sk_json_get_str(e, "key", ""), json_object_get(e, "data")) < 0)
      sk_log_warn(a->log, "sync event not recorded on the bus");
  }
  json_decref(q);
}

/* ---- reconciler ---- */

static appstate_t *app_state(gx_app_t *a, const json_t *app) {
  char key[320];
  snprintf(key, sizeof key, "%s/%s", sk_json_get_str(app, "metadata.namespace", ""),
           sk_json_get_str(app, "metadata.name", ""));
  for (size_t i = 0; i < a->napps; i++)
    if (!strcmp(a->apps[i].key, key)) return &a->apps[i];
  if (a->napps == a->capps) {
    a->capps = a->capps ? a->capps * 2 : 16;
    a->apps = sk_xrealloc(a->apps, a->capps * sizeof *a->apps);
  }
  appstate_t *s = &a->apps[a->napps++];
  memset(s, 0, sizeof *s);
  snprintf(s->key, sizeof s->key, "%s", key);
  /* what the last run of this daemon (or another replica) left */
  if (!strcmp(sk_json_get_str(app, "status.operationState.phase", ""), "Succeeded")) {
    snprintf(s->synced_rev, sizeof s->synced_rev, "%s", sk_json_get_str(app, "status.sync.revision", ""));
    s->synced_gen = sk_json_get_int(app, "status.observedGeneration", 0);
  }
  /* requests answered before a restart are not run again */
  snprintf(s->refresh, sizeof s->refresh, "%s", sk_json_get_str(app, "status.handledRequests.refresh", ""));
  snprintf(s->rollback, sizeof s->rollback, "%s", sk_json_get_str(app, "status.handledRequests.rollback", ""));
  return s;
}

static repostate_t *repo_state(gx_app_t *a, const char *url) {
  char norm[2048];
  gx_url_normalize(url, norm, sizeof norm);
  for (size_t i = 0; i < a->nrepos; i++)
    if (!strcmp(a->repos[i].norm, norm)) return &a->repos[i];
  if (a->nrepos == a->crepos) {
    a->crepos = a->crepos ? a->crepos * 2 : 8;
    a->repos = sk_xrealloc(a->repos, a->crepos * sizeof *a->repos);
  }
  repostate_t *r = &a->repos[a->nrepos++];
  memset(r, 0, sizeof *r);
  snprintf(r->url, sizeof r->url, "%s", url);
  snprintf(r->norm, sizeof r->norm, "%s", norm);
  return r;
}

static int load_kinds(gx_app_t *a, gx_ctl_t *ctl, char *err, size_t errlen) {
  json_t *d = NULL;
  int rc = gx_ctl_get_json(ctl, "/api/v1", &d, err, errlen);
  if (rc < 0) return rc;
  a->nkinds = 0;
  size_t i;
  json_t *k;
  json_array_foreach(json_object_get(d, "resources"), i, k) {
    if (a->nkinds >= sizeof a->kinds / sizeof a->kinds[0]) break;
    gx_kindinfo_t *ki = &a->kinds[a->nkinds++];
    snprintf(ki->plural, sizeof ki->plural, "%s", sk_json_get_str(k, "name", ""));
    snprintf(ki->kind, sizeof ki->kind, "%s", sk_json_get_str(k, "kind", ""));
    snprintf(ki->api_version, sizeof ki->api_version, "%s", sk_json_get_str(k, "apiVersion", ""));
    snprintf(ki->stored_as, sizeof ki->stored_as, "%s", sk_json_get_str(k, "storedAs", ki->kind));
    ki->namespaced = sk_json_get_bool(k, "namespaced", 1);
  }
  json_decref(d);
  return 0;
}

static const gx_repo_cred_t *cred_for(const gx_config_t *cfg, const char *url) {
  for (size_t i = 0; i < cfg->credentials.n; i++) {
    const gx_repo_cred_t *c = SK_CFG_LIST_AT(cfg->credentials, gx_repo_cred_t, i);
    if (c->url && !strncmp(url, c->url, strlen(c->url))) return c;
  }
  return NULL;
}

static int fetch_repo(gx_app_t *a, repostate_t *r) {
  if (r->fetched) return r->fetch_rc;
  r->fetched = 1;
  int rc = 0;
  if (!r->git && (rc = gx_git_open(a->cache_dir, r->url, &r->git, r->err, sizeof r->err)) < 0) goto out;
  const gx_repo_cred_t *c = cred_for(a->cfg, r->url);
  gx_git_cred_t cred = {.cancel = &a->stop_flag,
                        .connect_timeout_ms = a->cfg->connect_timeout_ms,
                        .fetch_timeout_ms = a->cfg->fetch_timeout_ms};
  char *pw = NULL;
  if (c) {
    char e[512];
    if (c->password_file && *c->password_file) {
      pw = read_secret(c->password_file, e, sizeof e);
      if (!pw) sk_log_warn(a->log, "credentials for %s: %s", c->url, e);
    }
    cred.username = c->username;
    cred.password = pw;
    cred.ssh_key_file = c->ssh_key_file && *c->ssh_key_file ? c->ssh_key_file : NULL;
    cred.known_hosts_file = c->known_hosts_file && *c->known_hosts_file ? c->known_hosts_file : NULL;
  }
  rc = gx_git_fetch(r->git, &cred, r->err, sizeof r->err);
  free_secret(pw);
out:
  r->fetch_rc = rc;
  r->reason = rc == SK_EUNAUTH ? "AuthenticationFailed" : rc == SK_EFORBID ? "HostKeyVerificationFailed"
              : rc == SK_ETIMEDOUT ? "FetchTimeout" : "FetchFailed";
  r->last_fetch = now_ms();
  count(a->m_fetches, rc < 0 ? "failed" : "ok");
  if (rc < 0) sk_log_kv(a->log, SK_LOG_WARN, "fetch failed", "repo", r->url, "error", r->err, NULL);
  return rc;
}

static uint64_t jitter(uint64_t ms) {
  uint64_t span = ms / 10;
  if (!span) return ms;
  return ms - span + (uint64_t)(rand() % (int)(2 * span + 1));
}

static void reconcile_app(gx_app_t *a, gx_ctl_t *ctl, const json_t *app, const char **hooks, size_t nhooks) {
  const gx_config_t *cfg = a->cfg;
  appstate_t *s = app_state(a, app);
  s->seen = 1;
  uint64_t now = now_ms();
  const char *url = sk_json_get_str(app, "spec.source.repoURL", "");
  const char *refresh = gx_annotation(app, GX_ANN_REFRESH);
  const char *rollback = gx_annotation(app, GX_ANN_ROLLBACK);
  const char *susp = gx_annotation(app, GX_ANN_SUSPENDED);
  if (!refresh) refresh = "";
  if (!rollback) rollback = "";
  int suspended = susp && !strcmp(susp, "true");
  int64_t gen = sk_json_get_int(app, "metadata.generation", 0);
  char norm[2048];
  gx_url_normalize(url, norm, sizeof norm);
  int hooked = 0;
  for (size_t i = 0; i < nhooks; i++)
    if (!strcmp(hooks[i], norm)) hooked = 1;
  int manual_sync = *refresh && strcmp(refresh, s->refresh);
  int do_rollback = *rollback && strcmp(rollback, s->rollback);
  int first = s->next_poll == 0;
  int need_fetch = first || hooked || now >= s->next_poll || manual_sync || do_rollback || gen != s->seen_gen;
  s->seen_gen = gen;
  int resync = now >= s->next_resync;
  int retry_due = s->retry_at && now >= s->retry_at;
  if (suspended) {
    snprintf(s->refresh, sizeof s->refresh, "%s", refresh);
    snprintf(s->rollback, sizeof s->rollback, "%s", rollback);
    return;
  }
  if (!need_fetch && !resync && !retry_due) return;
  gx_sync_env_t env = {.ctl = ctl, .kinds = a->kinds, .nkinds = a->nkinds};
  repostate_t *r = repo_state(a, url);
  if (need_fetch || !r->git) {
    fetch_repo(a, r);
    s->next_poll = now + jitter(cfg->poll_ms);
  }
  s->next_resync = now + cfg->resync_ms;
  if (r->fetch_rc < 0) { /* the last fetch failed: retried at the next poll, webhook or request */
    gx_sync_status_error(&env, app, "ComparisonError", r->reason ? r->reason : "FetchFailed", r->err, NULL);
    return;
  }
  const json_t *automated = sk_json_get(app, "spec.syncPolicy.automated");
  int is_auto = json_is_object(automated);
  int prune = sk_json_get_bool(automated, "prune", 0);
  int self_heal = sk_json_get_bool(automated, "selfHeal", 0);
  const char *want = sk_json_get_str(app, "spec.source.targetRevision", "HEAD");
  char oid[41], err[2048], rb_rev[128];
  gx_sync_mode_t mode = GX_SYNC_COMPARE;
  const char *why = "compare";
  if (do_rollback) {
    snprintf(s->rollback, sizeof s->rollback, "%s", rollback);
    if (is_auto) {
      gx_sync_status_error(&env, app, "RollbackError", "AutomatedSyncOn",
                           "rollback refused: automated sync is on (turn syncPolicy.automated off first)", NULL);
      return;
    }
    snprintf(rb_rev, sizeof rb_rev, "%s", rollback);
    rb_rev[strcspn(rb_rev, "@")] = 0; /* "REVISION@nonce" */
    want = rb_rev;
    mode = GX_SYNC_APPLY;
    prune = 1;
    why = "rollback";
  } else if (manual_sync) {
    mode = GX_SYNC_APPLY;
    prune = prune || !is_auto;
    why = "manual";
  }
  if (manual_sync) snprintf(s->refresh, sizeof s->refresh, "%s", refresh);
  if (gx_git_resolve(r->git, want, oid, err, sizeof err) < 0) {
    gx_sync_status_error(&env, app, "ComparisonError", "RevisionNotFound", err, NULL);
    return;
  }
  int failed_before = !strcmp(oid, s->failed_rev) && gen == s->failed_gen && !hooked;
  if (!failed_before) { /* a new revision, spec or push starts a new series of retries */
    s->retry_count = 0;
    s->retry_at = 0;
  }
  gx_retry_t retry;
  int has_retry = gx_retry_from_spec(sk_json_get(app, "spec.syncPolicy.retry"), &retry);
  if (mode == GX_SYNC_COMPARE && is_auto && !failed_before) {
    if (strcmp(oid, s->synced_rev) || gen != s->synced_gen) {
      mode = GX_SYNC_APPLY;
      why = "automated";
    } else if (self_heal) {
      mode = GX_SYNC_APPLY;
      why = "self-heal";
    }
  } else if (mode == GX_SYNC_COMPARE && is_auto && has_retry && s->retry_at && now >= s->retry_at) {
    /* syncPolicy.retry: the failed automated sync again, with backoff */
    mode = GX_SYNC_APPLY;
    why = "retry";
    s->retry_count++;
    s->retry_at = 0;
  }
  if (!is_auto || !has_retry) s->retry_at = 0;
  if (mode == GX_SYNC_APPLY && is_auto && has_retry && strcmp(why, "manual") && strcmp(why, "rollback") &&
      (retry.limit < 0 || s->retry_count < retry.limit))
    env.retry_next_ms = gx_retry_delay_ms(&retry, s->retry_count + 1);
  env.retry_count = !strcmp(why, "retry") ? s->retry_count : 0;
  /* a manual app after a rollback stays on the rolled-back revision until
   * the next manual sync; the comparison is still against targetRevision */
  const json_t *src = sk_json_get(app, "spec.source");
  const char *ns = sk_json_get_str(app, "spec.destination.namespace", "");
  gx_resset_t set;
  gx_resset_init(&set);
  uint64_t t0 = now_ms();
  int rc = gx_git_load(r->git, oid, sk_json_get_str(src, "path", ""), sk_json_get_bool(src, "directory.recurse", 0),
                       sk_json_get_str(src, "directory.include", NULL), sk_json_get_str(src, "directory.exclude", NULL),
                       *ns ? ns : "default", &set, err, sizeof err);
  if (rc >= 0) rc = gx_manifest_check_dups(&set, err, sizeof err);
  if (rc < 0) {
    gx_sync_status_error(&env, app, "ComparisonError", "InvalidManifests", err, oid);
    if (mode == GX_SYNC_APPLY) {
      count(a->m_syncs, "failed");
      snprintf(s->failed_rev, sizeof s->failed_rev, "%s", oid);
      s->failed_gen = gen;
      char key[400];
      snprintf(key, sizeof key, "Application/%s", s->key);
      queue_event(a, key,
                  json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s}", "application", s->key, "revision", oid,
                            "trigger", why, "result", "Failed", "author", "", "applied", 0, "pruned", 0, "error", err));
    }
    sk_log_kv(a->log, SK_LOG_WARN, "manifests rejected", "app", s->key, "revision", oid, "error", err, NULL);
    gx_resset_done(&set);
    return;
  }
  gx_manifest_sort(&set);
  char author[256] = "", msg[512] = "";
  gx_git_commit_info(r->git, oid, author, sizeof author, msg, sizeof msg);
  gx_sync_result_t res;
  rc = gx_sync_app(&env, app, &set, oid, author, msg, mode, prune, &res);
  if (a->m_reconciles) sk_counter_inc(a->m_reconciles);
  gx_resset_done(&set);
  if (mode == GX_SYNC_APPLY) {
    double secs = (double)(now_ms() - t0) / 1000.0;
    if (a->m_dur) sk_histogram_observe(a->m_dur, secs);
    count(a->m_syncs, rc < 0 ? "failed" : "succeeded");
    int drift = !strcmp(why, "self-heal") && (res.applied || res.pruned);
    if (rc < 0 || res.applied || res.pruned || strcmp(why, "self-heal")) {
      char key[400];
      snprintf(key, sizeof key, "Application/%s", s->key);
      queue_event(a, key,
                  json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:s}", "application", s->key, "revision", oid,
                            "author", author, "message", msg, "trigger", why, "result", rc < 0 ? "Failed" : "Succeeded",
                            "applied", res.applied, "pruned", res.pruned, "durationMs", (json_int_t)(now_ms() - t0),
                            "error", rc < 0 ? res.message : ""));
    }
    if (drift && a->m_drift) sk_counter_add(a->m_drift, (double)(res.applied + res.pruned));
    if (rc < 0) {
      snprintf(s->failed_rev, sizeof s->failed_rev, "%s", oid);
      s->failed_gen = gen;
      if (env.retry_next_ms) s->retry_at = now_ms() + env.retry_next_ms;
      sk_log_kv(a->log, SK_LOG_WARN, "sync failed", "app", s->key, "revision", oid, "trigger", why, "error",
                res.message, NULL);
    } else {
      s->failed_rev[0] = 0;
      s->retry_count = 0;
      s->retry_at = 0;
      snprintf(s->synced_rev, sizeof s->synced_rev, "%s", oid);
      s->synced_gen = gen;
      if (res.applied || res.pruned || strcmp(why, "self-heal")) {
        char ap[16], pr[16];
        snprintf(ap, sizeof ap, "%d", res.applied);
        snprintf(pr, sizeof pr, "%d", res.pruned);
        sk_log_kv(a->log, SK_LOG_INFO, drift ? "drift corrected" : "synced", "app", s->key, "revision", oid,
                  "trigger", why, "applied", ap, "pruned", pr, NULL);
      }
    }
  }
}

static void round_once(gx_app_t *a, gx_ctl_t *ctl) {
  char err[1024];
  /* webhook triggers of this round */
  char *hooks[GX_MAX_PENDING];
  size_t nhooks = 0;
  pthread_mutex_lock(&a->mu);
  for (size_t i = 0; i < a->npending; i++) hooks[nhooks++] = a->pending[i];
  a->npending = 0;
  a->wake = 0;
  pthread_mutex_unlock(&a->mu);
  uint64_t now = now_ms();
  if (!a->nkinds || now - a->kinds_at > 30000) {
    if (load_kinds(a, ctl, err, sizeof err) < 0) {
      if (!a->control_down_logged++) sk_log_kv(a->log, SK_LOG_WARN, "control unavailable", "error", err, NULL);
      goto out;
    }
    a->kinds_at = now;
  }
  json_t *lst = NULL;
  if (gx_ctl_get_json(ctl, "/api/v1/applications", &lst, err, sizeof err) < 0) {
    if (!a->control_down_logged++) sk_log_kv(a->log, SK_LOG_WARN, "control unavailable", "error", err, NULL);
    goto out;
  }
  if (a->control_down_logged) sk_log_info(a->log, "control reachable again");
  a->control_down_logged = 0;
  for (size_t i = 0; i < a->nrepos; i++) a->repos[i].fetched = 0;
  json_t *items = json_object_get(lst, "items");
  if (a->m_apps) sk_gauge_set(a->m_apps, (double)json_array_size(items));
  /* publish the repositories for the webhook side */
  char **known = sk_xcalloc(json_array_size(items) + 1, sizeof *known);
  size_t nknown = 0;
  size_t i;
  json_t *app;
  json_array_foreach(items, i, app) {
    char norm[2048];
    gx_url_normalize(sk_json_get_str(app, "spec.source.repoURL", ""), norm, sizeof norm);
    known[nknown++] = sk_xstrdup(norm);
  }
  pthread_mutex_lock(&a->mu);
  for (size_t k = 0; k < a->nknown; k++) free(a->known[k]);
  free(a->known);
  a->known = known;
  a->nknown = nknown;
  pthread_mutex_unlock(&a->mu);
  for (size_t k = 0; k < a->napps; k++) a->apps[k].seen = 0;
  json_array_foreach(items, i, app) {
    if (atomic_load(&a->stop)) break;
    reconcile_app(a, ctl, app, (const char **)hooks, nhooks);
  }
  /* forget deleted Applications */
  for (size_t k = 0; k < a->napps;) {
    if (!a->apps[k].seen && !atomic_load(&a->stop)) a->apps[k] = a->apps[--a->napps];
    else k++;
  }
  json_decref(lst);
out:
  for (size_t k = 0; k < nhooks; k++) free(hooks[k]);
}

static void *reconciler(void *ud) {
  gx_app_t *a = ud;
  gx_ctl_t *ctl = NULL;
  char err[512];
  if (gx_ctl_new(a->cfg->control, a->token, a->ctl_ca, a->ctl_cert, a->ctl_key, &ctl, err, sizeof err) < 0) {
    sk_log_error(a->log, "control client: %s", err);
    atomic_store(&a->done, 1);
    return NULL;
  }
  while (!atomic_load(&a->stop)) {
    round_once(a, ctl);
    pthread_mutex_lock(&a->mu);
    if (!a->wake && !atomic_load(&a->stop)) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      uint64_t ms = a->cfg->app_refresh_ms;
      ts.tv_sec += (time_t)(ms / 1000);
      ts.tv_nsec += (long)(ms % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
  }
  gx_ctl_free(ctl);
  atomic_store(&a->done, 1);
  return NULL;
}

/* ---- webhooks (loop thread) ---- */

static void respond_json(sk_http_req_t *req, int status, json_t *o) {
  char *s = json_dumps(o, JSON_COMPACT);
  sk_http_header_t h[1] = {{"content-type", "application/json"}};
  sk_http_respond(req, status, h, 1, s, strlen(s));
  free(s);
  json_decref(o);
}

static void respond_err(sk_http_req_t *req, int status, const char *msg) {
  respond_json(req, status, json_pack("{s:i, s:s}", "code", status, "message", msg));
}

static void on_webhook(gx_app_t *a, sk_http_req_t *req) {
  const char *gh = sk_http_headers_get(&req->headers, "x-github-event");
  const char *gl = sk_http_headers_get(&req->headers, "x-gitlab-event");
  gx_hook_provider_t p;
  if (gh) {
    p = GX_HOOK_GITHUB;
    if (!a->github_secret) {
      count(a->m_hooks, "unauthorized");
      respond_err(req, 403, "GitHub webhooks are not enabled (github_secret_file is not set)");
      return;
    }
    if (gx_hook_verify_github(a->github_secret, sk_http_headers_get(&req->headers, "x-hub-signature-256"), req->body,
                              req->body_len) < 0) {
      count(a->m_hooks, "unauthorized");
      sk_log_kv(a->log, SK_LOG_WARN, "webhook refused: bad signature", "provider", "github", "peer", req->peer_addr,
                NULL);
      respond_err(req, 401, "X-Hub-Signature-256 is missing or does not match the payload");
      return;
    }
  } else if (gl) {
    p = GX_HOOK_GITLAB;
    if (!a->gitlab_token) {
      count(a->m_hooks, "unauthorized");
      respond_err(req, 403, "GitLab webhooks are not enabled (gitlab_token_file is not set)");
      return;
    }
    if (gx_hook_verify_gitlab(a->gitlab_token, sk_http_headers_get(&req->headers, "x-gitlab-token")) < 0) {
      count(a->m_hooks, "unauthorized");
      sk_log_kv(a->log, SK_LOG_WARN, "webhook refused: bad token", "provider", "gitlab", "peer", req->peer_addr,
                NULL);
      respond_err(req, 401, "X-Gitlab-Token is missing or wrong");
      return;
    }
  } else {
    count(a->m_hooks, "bad_request");
    respond_err(req, 400, "not a GitHub (X-GitHub-Event) or GitLab (X-Gitlab-Event) webhook");
    return;
  }
  gx_hook_event_t ev;
  char err[512];
  if (gx_hook_parse(p, gh ? gh : gl, req->body, req->body_len, &ev, err, sizeof err) < 0) {
    count(a->m_hooks, "bad_request");
    respond_err(req, 400, err);
    return;
  }
  if (!ev.is_push) {
    count(a->m_hooks, "ignored");
    gx_hook_event_done(&ev);
    respond_json(req, 200, json_pack("{s:s}", "result", "ignored (not a push event)"));
    return;
  }
  size_t matched = 0;
  json_t *urls = json_array();
  pthread_mutex_lock(&a->mu);
  for (size_t i = 0; i < ev.nurls; i++) {
    char norm[2048];
    gx_url_normalize(ev.urls[i], norm, sizeof norm);
    int dup = 0; /* clone_url and html_url are often the same repository */
    for (size_t k = 0; k < json_array_size(urls); k++)
      if (!strcmp(json_string_value(json_array_get(urls, k)), norm)) dup = 1;
    if (dup) continue;
    json_array_append_new(urls, json_string(norm));
    for (size_t k = 0; k < a->nknown; k++)
      if (!strcmp(a->known[k], norm)) matched++;
    if (a->npending < GX_MAX_PENDING) a->pending[a->npending++] = sk_xstrdup(norm);
  }
  a->wake = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
  count(a->m_hooks, "accepted");
  sk_log_kv(a->log, SK_LOG_INFO, "webhook", "provider", p == GX_HOOK_GITHUB ? "github" : "gitlab", "ref", ev.ref,
            NULL);
  gx_hook_event_done(&ev);
  respond_json(req, 202, json_pack("{s:s, s:o, s:I}", "result", "queued", "repositories", urls, "applications",
                                   (json_int_t)matched));
}

static void on_request(sk_http_req_t *req, void *ud) {
  gx_app_t *a = ud;
  if (!strcmp(req->path, "/api/webhook") || !strcmp(req->path, "/api/v1/webhook")) {
    if (strcmp(req->method, "POST")) {
      respond_err(req, 405, "POST only");
      return;
    }
    on_webhook(a, req);
    return;
  }
  if (!strcmp(req->path, "/healthz")) {
    sk_http_respond_text(req, 200, "text/plain", "ok\n");
    return;
  }
  respond_err(req, 404, "not found (webhooks: POST /api/webhook)");
}

/* ---- lifecycle ---- */

static void app_free(gx_app_t *a) {
  if (!a) return;
  free_secret(a->github_secret);
  free_secret(a->gitlab_token);
  free_secret(a->token);
  for (size_t i = 0; i < a->nknown; i++) free(a->known[i]);
  free(a->known);
  for (size_t i = 0; i < a->npending; i++) free(a->pending[i]);
  for (size_t i = 0; i < a->nrepos; i++) gx_git_free(a->repos[i].git);
  if (a->git_inited) gx_git_global_done();
  free(a->repos);
  free(a->apps);
  json_decref(a->ev_queue);
  sk_bus_free(a->bus, 1000);
  sk_store_close(a->db);
  pthread_mutex_destroy(&a->mu);
  pthread_cond_destroy(&a->cv);
  free(a);
}

static int gx_init(sk_daemon_t *d, void *cfgp) {
  gx_config_t *cfg = cfgp;
  sk_logger_t *log = sk_daemon_log(d);
  gx_app_t *a = sk_xcalloc(1, sizeof *a);
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  a->d = d;
  a->cfg = cfg;
  a->log = log;
  char err[1024];
  int rc = 0;
  if (cfg->cache_dir && *cfg->cache_dir) snprintf(a->cache_dir, sizeof a->cache_dir, "%s", cfg->cache_dir);
  else if (sk_daemon_state_dir(d)) snprintf(a->cache_dir, sizeof a->cache_dir, "%s/git-cache", sk_daemon_state_dir(d));
  else {
    sk_log_error(log, "set cache_dir or state_dir: the git cache needs a directory");
    rc = SK_ECONFIG;
    goto fail;
  }
  /* with an identity and an https control, gitops authenticates with its
   * certificate (control maps .../daemon/<name> to a role); the bearer token
   * is the fallback of a gitops without identity */
  sk_ident_t *ident = sk_daemon_ident(d);
  int ctl_https = cfg->control && !strncasecmp(cfg->control, "https://", 8);
  snprintf(a->ctl_ca, sizeof a->ctl_ca, "%s",
           cfg->control_ca && *cfg->control_ca ? cfg->control_ca : ident ? sk_ident_bundle_path(ident) : "");
  if (ident && ctl_https) {
    snprintf(a->ctl_cert, sizeof a->ctl_cert, "%s", sk_ident_cert_path(ident));
    snprintf(a->ctl_key, sizeof a->ctl_key, "%s", sk_ident_key_path(ident));
    if (cfg->token_file && *cfg->token_file)
      sk_log_warn(log, "token_file is not used: calls to control authenticate with the identity %s (mTLS)",
                  sk_ident_spiffe_id(ident));
  } else if (cfg->token_file && *cfg->token_file &&
             !(a->token = read_secret(cfg->token_file, err, sizeof err))) {
    sk_log_error(log, "token_file: %s", err);
    rc = SK_ECONFIG;
    goto fail;
  }
  if (cfg->github_secret_file && *cfg->github_secret_file &&
      !(a->github_secret = read_secret(cfg->github_secret_file, err, sizeof err))) {
    sk_log_error(log, "github_secret_file: %s", err);
    rc = SK_ECONFIG;
    goto fail;
  }
  if (cfg->gitlab_token_file && *cfg->gitlab_token_file &&
      !(a->gitlab_token = read_secret(cfg->gitlab_token_file, err, sizeof err))) {
    sk_log_error(log, "gitlab_token_file: %s", err);
    rc = SK_ECONFIG;
    goto fail;
  }
  for (size_t i = 0; i < cfg->credentials.n; i++) {
    const gx_repo_cred_t *c = SK_CFG_LIST_AT(cfg->credentials, gx_repo_cred_t, i);
    int pw = c->password_file && *c->password_file, key = c->ssh_key_file && *c->ssh_key_file;
    if (pw == key) {
      sk_log_error(log, "credentials[%zu] (%s): set exactly one of password_file (http) and ssh_key_file (ssh)", i,
                   c->url);
      rc = SK_ECONFIG;
      goto fail;
    }
    if (key && access(c->ssh_key_file, R_OK) < 0) {
      sk_log_error(log, "credentials[%zu] (%s): ssh_key_file %s: %s", i, c->url, c->ssh_key_file, strerror(errno));
      rc = SK_ECONFIG;
      goto fail;
    }
    if (key && (!c->known_hosts_file || !*c->known_hosts_file))
      sk_log_warn(log, "credentials[%zu] (%s): no known_hosts_file: every ssh host will be refused", i, c->url);
  }
  a->ev_queue = json_array();
  srand((unsigned)time(NULL) ^ (unsigned)getpid()); /* poll jitter differs between replicas */
  if (sk_daemon_state_dir(d)) {
    char path[1200];
    snprintf(path, sizeof path, "%s/gitops.db", sk_daemon_state_dir(d));
    sk_store_opts_t so = {.path = path};
    if ((rc = sk_store_open(&so, &a->db)) < 0) {
      sk_log_error(log, "%s: %s", path, sk_store_open_errmsg());
      goto fail;
    }
    sk_bus_opts_t bo = {.store = a->db, .metrics = sk_daemon_metrics(d),
                        .kafka = {.brokers = cfg->kafka_brokers}};
    if ((rc = sk_bus_new(sk_daemon_loop(d), &bo, &a->bus, err, sizeof err)) < 0) {
      sk_log_error(log, "event bus: %s", err);
      goto fail;
    }
    uv_async_init(sk_daemon_loop(d), &a->ev_async, on_ev_async);
    a->ev_async.data = a;
    a->ev_async_on = 1;
  }
  if ((rc = gx_git_global_init()) < 0) {
    sk_log_error(log, "libgit2 init failed");
    goto fail;
  }
  a->git_inited = 1;
  sk_metrics_t *m = sk_daemon_metrics(d);
  static const char *const lr[] = {"result"};
  sk_metrics_counter_family(m, "skiff_gitops_syncs_total", "Sync operations by result.", lr, 1, &a->m_syncs);
  sk_metrics_counter_family(m, "skiff_gitops_fetches_total", "Git fetches by result.", lr, 1, &a->m_fetches);
  sk_metrics_counter_family(m, "skiff_gitops_webhooks_total", "Webhook requests by result.", lr, 1, &a->m_hooks);
  sk_metrics_histogram(m, "skiff_gitops_sync_duration_seconds", "Time to load, dry-run and apply one sync.", NULL, 0,
                       &a->m_dur);
  sk_metrics_counter(m, "skiff_gitops_drift_corrections_total", "Live objects put back to their Git state.",
                     &a->m_drift);
  sk_metrics_counter(m, "skiff_gitops_reconciles_total", "Comparisons of an Application with Git (any outcome).",
                     &a->m_reconciles);
  sk_metrics_gauge(m, "skiff_gitops_applications", "Applications known to the reconciler.", &a->m_apps);
  sk_http_server_opts_t ho = {.host = cfg->listen.host,
                              .port = cfg->listen.port,
                              .max_body_bytes = GX_MAX_WEBHOOK_BYTES,
                              .server_name = "skiff-gitops"};
  if ((rc = sk_http_server_new(sk_daemon_loop(d), &ho, on_request, a, &a->srv)) < 0) {
    char addr[300];
    sk_config_format_addr(&cfg->listen, addr, sizeof addr);
    sk_log_error(log, "cannot listen on %s: %s", addr, sk_strerror(rc));
    goto fail;
  }
  if (pthread_create(&a->th, NULL, reconciler, a) != 0) {
    rc = SK_ENOMEM;
    goto fail;
  }
  a->th_started = 1;
  sk_daemon_set_data(d, a);
  char addr[300];
  sk_cfg_addr_t shown = cfg->listen;
  shown.port = sk_http_server_port(a->srv);
  sk_config_format_addr(&shown, addr, sizeof addr);
  sk_log_kv(log, SK_LOG_INFO, "serving", "addr", addr, "control", cfg->control, "control_auth",
            a->ctl_cert[0] ? "mtls" : a->token ? "token" : "none", "cache", a->cache_dir, NULL);
  sk_daemon_set_ready(d, 1);
  return 0;
fail:
  if (a->srv) sk_http_server_free(a->srv);
  if (a->ev_async_on) {
    /* the handle is closed (and a freed) by fini's path */
    sk_daemon_set_data(d, a);
    return rc < 0 ? rc : SK_EINVAL;
  }
  app_free(a);
  return rc < 0 ? rc : SK_EINVAL;
}

static void stop_thread(gx_app_t *a) {
  if (!a->th_started) return;
  atomic_store(&a->stop, 1);
  a->stop_flag = 1;
  pthread_mutex_lock(&a->mu);
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

static void drain_tick(uv_timer_t *t) {
  gx_app_t *a = t->data;
  if (!atomic_load(&a->done)) return;
  uv_timer_stop(t);
  sk_daemon_drained(a->d);
}

static void gx_drain(sk_daemon_t *d) {
  gx_app_t *a = sk_daemon_get_data(d);
  if (!a) {
    sk_daemon_drained(d);
    return;
  }
  stop_thread(a);
  uv_timer_init(sk_daemon_loop(d), &a->drain_timer);
  a->drain_timer.data = a;
  a->drain_timer_on = 1;
  uv_timer_start(&a->drain_timer, drain_tick, 0, 20);
}

static void handle_closed(uv_handle_t *h) {
  gx_app_t *a = h->data;
  if (--a->closing == 0) app_free(a);
}

static void gx_fini(sk_daemon_t *d) {
  gx_app_t *a = sk_daemon_get_data(d);
  if (!a) return;
  sk_daemon_set_data(d, NULL);
  stop_thread(a);
  if (a->th_started) pthread_join(a->th, NULL);
  a->th_started = 0;
  if (a->srv) sk_http_server_free(a->srv);
  a->srv = NULL;
  if (a->ev_async_on) on_ev_async(&a->ev_async); /* what the last round queued */
  a->closing = 1; /* held until both closes are started */
  if (a->drain_timer_on) {
    a->closing++;
    uv_close((uv_handle_t *)&a->drain_timer, handle_closed);
  }
  if (a->ev_async_on) {
    a->closing++;
    a->ev_async_on = 0;
    uv_close((uv_handle_t *)&a->ev_async, handle_closed);
  }
  if (--a->closing == 0) app_free(a);
}

static int gx_reload(sk_daemon_t *d, void *new_cfgp) {
  (void)new_cfgp;
  sk_log_warn(sk_daemon_log(d), "configuration changes take effect after a restart");
  return SK_ENOTSUP;
}

const sk_daemon_desc_t gx_daemon_desc = {
    .name = "skiff-gitops",
    .version = SKIFF_VERSION,
    .summary = "GitOps reconciler: Git repositories -> skiff-control, with webhooks, self-heal and prune",
    .schema = &gx_config_schema,
    .init = gx_init,
    .reload = gx_reload,
    .drain = gx_drain,
    .fini = gx_fini,
};
