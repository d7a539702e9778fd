/* skiff/daemon.h - the fixed lifecycle every Skiff daemon runs.
 *
 * A daemon is a descriptor plus a main() of a few lines:
 *
 *   static const sk_daemon_desc_t desc = {
 *     .name = "skiff-proxy", .version = SKIFF_VERSION,
 *     .schema = &px_config_schema, .init = px_init, .reload = px_reload,
 *     .drain = px_drain, .fini = px_fini};
 *   int main(int argc, char **argv) { return sk_daemon_main(&desc, argc, argv); }
 *
 * sk_daemon_main():
 *   1. parses the common flags: --config FILE, --check, --log-level L,
 *      --log-format text|json, --version, --help;
 *   2. loads the config: the common keys (sk_daemon_common_t, below) and the
 *      daemon's own schema from one YAML mapping; every error is printed as
 *      file:line:col and the process exits 1 (with --check: exit 1 on errors,
 *      else prints "config ok" and exits 0 without serving);
 *   3. sets up logging, writes pid_file, creates state_dir, starts the admin
 *      listener (admin.listen; /healthz, /readyz, /metrics), installs signal
 *      handlers, then calls desc->init(d, cfg);
 *   4. runs the loop. The daemon calls sk_daemon_set_ready(d, 1) when it
 *      serves: /readyz turns 200, "READY=1\n" is written to the fd named by
 *      the environment variable SKIFF_READY_FD (if set), and "ready" is logged;
 *   5. SIGHUP: re-reads and validates the config file; errors are logged and
 *      the old config kept; otherwise desc->reload(d, new_cfg) is called
 *      (NULL reload = not supported, logged). Log level/format/file changes
 *      apply at once; a changed admin.listen needs a restart (warned);
 *   6. SIGTERM/SIGINT: readiness drops, desc->drain(d) is called (NULL =
 *      drained at once); the daemon calls sk_daemon_drained(d) when in-flight
 *      work is done. If drain_timeout passes first the daemon stops anyway.
 *      A second SIGTERM/SIGINT stops at once;
 *   7. desc->fini(d) (close the daemon's handles there), the admin listener
 *      stops, leftover handles are closed, pid_file removed. Exit code 0
 *      when drained in time, 1 when the drain deadline hit or init failed. */
#ifndef SKIFF_DAEMON_H
#define SKIFF_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "skiff/admin.h"
#include "skiff/config.h"
#include "skiff/ident.h"
#include "skiff/log.h"
#include "skiff/metrics.h"

typedef struct sk_daemon sk_daemon_t;

/* Keys every daemon accepts at the top level of its config, next to its own:
 *   admin:         {listen: "127.0.0.1:9901", enabled: true,
 *                   tls: {identity: false, cert: "", key: "", ca: "",
 *                         client_auth: optional}}
 *   log:           {level: info, format: text, file: ""}
 *   drain_timeout: 10s
 *   pid_file:      ""   (none)
 *   state_dir:     ""   (none; created 0750 when set)
 *   identity:      {control: ""}  (off; with control set, the daemon first
 *                  obtains a certificate from skiff-control's CA into
 *                  identity.dir (default <state_dir>/identity), then calls
 *                  init; the certificate renews at 2/3 of its lifetime and
 *                  every TLS context built from its files reloads) */
/* admin.tls (docs/runtime/metrics-admin-store.md): identity: true serves HTTPS with the
 * daemon's identity files (cert.pem, key.pem, bundle.pem; reloaded on
 * renewal) - the listener then starts once the identity is in place (for
 * a desc->own_identity daemon: right after init, sk_daemon_set_ident); or
 * cert/key/ca name the files. client_auth: optional (default: /healthz and
 * /readyz open, other routes need a verified client certificate) or
 * require (the handshake refuses clients without one). */
typedef struct sk_daemon_admin_tls_cfg {
  bool identity;
  char *cert, *key, *ca;
  int client_auth; /* 0 optional, 1 require */
} sk_daemon_admin_tls_cfg_t;

typedef struct sk_daemon_admin_cfg {
  bool enabled;
  sk_cfg_addr_t listen;
  sk_daemon_admin_tls_cfg_t tls;
} sk_daemon_admin_cfg_t;

typedef struct sk_daemon_log_cfg {
  int level;  /* sk_log_level_t */
  int format; /* sk_log_format_t */
  char *file; /* "" = stderr */
} sk_daemon_log_cfg_t;

typedef struct sk_daemon_common {
  sk_daemon_admin_cfg_t admin;
  sk_daemon_log_cfg_t log;
  uint64_t drain_timeout_ms;
  char *pid_file;
  char *state_dir;
  sk_ident_cfg_t identity; /* identity: {control: https://..., ...}; see skiff/ident.h */
} sk_daemon_common_t;

extern const sk_config_schema_t sk_daemon_common_schema;

typedef struct sk_daemon_desc {
  const char *name;    /* "skiff-proxy"; also the logger component */
  const char *version; /* printed by --version */
  const char *summary; /* one line for --help; optional */
  const sk_config_schema_t *schema; /* the daemon's own keys; NULL = none */
  /* Called once the loop, logging, admin listener and config exist. cfg is
   * the daemon's struct (schema->size bytes), owned by the lifecycle.
   * Negative return: logged, the daemon exits 1. */
  int (*init)(sk_daemon_t *d, void *cfg);
  /* SIGHUP with a valid new config. Return 0 to accept it (the old struct is
   * then freed and sk_daemon_config() returns new_cfg), negative to refuse
   * (new_cfg is freed, the old one kept). NULL = reload not supported. */
  int (*reload)(sk_daemon_t *d, void *new_cfg);
  /* Stop accepting, finish in-flight work, then call sk_daemon_drained(d)
   * (now or later from the loop). NULL = nothing to drain. */
  void (*drain)(sk_daemon_t *d);
  /* Release everything init made; close the daemon's uv handles. Called
   * once, also after a failed init. Optional. */
  void (*fini)(sk_daemon_t *d);
  /* The daemon issues its own identity in-process (skiff-control, which is
   * the CA): admin.tls.identity then needs no identity.control; init hands
   * the identity over with sk_daemon_set_ident() and the admin listener
   * starts right after init returns. */
  bool own_identity;
} sk_daemon_desc_t;

/* The whole lifecycle; returns the process exit code. */
int sk_daemon_main(const sk_daemon_desc_t *desc, int argc, char **argv);

uv_loop_t *sk_daemon_loop(sk_daemon_t *d);
/* The daemon's logger (component = desc->name). */
sk_logger_t *sk_daemon_log(sk_daemon_t *d);
/* A new logger on the daemon's sink for a sub-component ("proxy.upstream");
 * free with sk_logger_free before fini returns. */
sk_logger_t *sk_daemon_logger(sk_daemon_t *d, const char *component);
/* The daemon's own config struct (current one: changes after a reload). */
void *sk_daemon_config(sk_daemon_t *d);
const sk_daemon_common_t *sk_daemon_common(sk_daemon_t *d);
const sk_daemon_desc_t *sk_daemon_desc(sk_daemon_t *d);
/* Path of the config file, or NULL when running on defaults. */
const char *sk_daemon_config_path(sk_daemon_t *d);
void sk_daemon_set_data(sk_daemon_t *d, void *data);
void *sk_daemon_get_data(sk_daemon_t *d);
/* state_dir from the config, or NULL when not set. */
const char *sk_daemon_state_dir(sk_daemon_t *d);
/* Port the admin listener is bound to (useful with port 0), or -1. */
int sk_daemon_admin_port(sk_daemon_t *d);

/* Readiness: 1 = serving. The first transition to 1 also writes READY=1 to
 * $SKIFF_READY_FD and logs "ready". */
void sk_daemon_set_ready(sk_daemon_t *d, int ready);
int sk_daemon_is_ready(sk_daemon_t *d);
/* The daemon finished draining (after desc->drain); safe to call when not
 * draining (ignored). */
void sk_daemon_drained(sk_daemon_t *d);
int sk_daemon_is_draining(sk_daemon_t *d);
/* Asks the daemon to stop as if SIGTERM arrived (exit_code used if the
 * drain finishes in time, e.g. 1 after a fatal error). */
void sk_daemon_stop(sk_daemon_t *d, int exit_code);

/* --help text: usage, common flags, and the documented keys of the common
 * and the daemon's schema. */
void sk_daemon_usage(const sk_daemon_desc_t *desc, FILE *out);

/* The daemon's metrics registry (its own, not sk_metrics_default()), served
 * on the admin listener's /metrics. Never NULL after init starts. */
sk_metrics_t *sk_daemon_metrics(sk_daemon_t *d);
/* The admin listener, for sk_admin_add_route(); NULL when admin.enabled is
 * false. */
sk_admin_t *sk_daemon_admin(sk_daemon_t *d);
/* The daemon's identity (identity.control set), or NULL. Valid from init
 * until fini returns: cert/key/bundle paths for the daemon's TLS contexts. */
sk_ident_t *sk_daemon_ident(sk_daemon_t *d);
/* For a daemon with desc->own_identity, called from init: the identity it
 * keeps (the daemon stays its owner and frees it in fini). admin.tls.identity
 * then serves with its files, reloaded on every renewal like any other
 * daemon's. Ignored when the lifecycle already holds an identity. */
void sk_daemon_set_ident(sk_daemon_t *d, sk_ident_t *id);

#endif
