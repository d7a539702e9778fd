/* cli_int.h - the skiff CLI and its local supervisor (prefix cli_).
 *
 * cli_config.c  skiff.yaml -> cli_config_t (daemons, state_dir)
 * cli_graph.c   dependency order, cycle detection, restart backoff
 * cli_state.c   the state directory: lock, pid file, status.json, logs
 * cli_super.c   `skiff up`: spawn, probe readiness, restart, stop in order
 * cli_cmd.c     verbs and argument parsing (cli_main) */
#ifndef SKIFF_CLI_INT_H
#define SKIFF_CLI_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "skiff/config.h"

#define CLI_MAX_DAEMONS 64
#define CLI_MAX_LIST 64       /* args, env, depends_on entries per daemon */
#define CLI_NAME_MAX 64

typedef enum cli_restart {
  CLI_RESTART_ALWAYS = 0,
  CLI_RESTART_ON_FAILURE = 1,
  CLI_RESTART_NEVER = 2,
} cli_restart_t;

typedef struct cli_pos {
  int line, col; /* 1-based; 0 when unknown */
} cli_pos_t;

/* One entry of `daemons:`. The first fields are filled by the config
 * schema (cli_config.c); pos and dep_pos are looked up afterwards. */
typedef struct cli_daemon_spec {
  char *name;
  char *command;        /* as written; default = name */
  char *config;         /* passed as --config <path> when set */
  char *ready_url;      /* "" = http://<admin>/readyz, or none without admin */
  char *url;            /* the daemon's main endpoint, printed once all are ready */
  sk_cfg_addr_t admin;  /* port 0 = not set */
  sk_cfg_strlist_t args;
  sk_cfg_strlist_t env; /* "K=V" */
  sk_cfg_strlist_t deps;
  int restart;          /* cli_restart_t */
  uint64_t start_timeout_ms;
  uint64_t stop_timeout_ms;
  cli_pos_t pos;        /* of the entry */
  cli_pos_t *dep_pos;   /* deps.n positions, or NULL */
  char *identity;       /* "" = none; else a join token is minted before each start */
  bool admin_tls;       /* the admin listener speaks HTTPS (admin.tls in the daemon's
                           config): ready_url defaults to https://<admin>/readyz */
} cli_daemon_spec_t;

/* identity: how `skiff up` asks skiff-control for join tokens (cli_ident.c) */
typedef struct cli_ident_cfg {
  char *control;        /* https://127.0.0.1:7400; "" = daemons get no join tokens */
  char *admin_token;    /* file with an admin bearer token */
  char *ca;             /* control's trust bundle */
  char *trust_domain;
  char *region;
  uint64_t token_ttl_ms;
} cli_ident_cfg_t;

typedef struct cli_config {
  char *state_dir;      /* from the file ("" = not set) */
  sk_cfg_list_t daemons;
  cli_ident_cfg_t ident;
  /* set after loading */
  char *path;           /* file it was read from */
  char *dir;            /* its directory (relative paths resolve here) */
  cli_daemon_spec_t *d; /* = daemons.v */
  size_t n;
} cli_config_t;

/* ---- cli_config.c ---- */
/* Reads and validates path. On failure returns SK_ECONFIG (or an I/O code)
 * and writes every problem as "file:line:col: message" lines into err. */
int cli_config_load(const char *path, cli_config_t **out, char *err, size_t errlen);
/* The same from text; path names it in messages and gives the directory. */
int cli_config_parse(const char *path, const char *text, size_t len, cli_config_t **out,
                     char *err, size_t errlen);
/* The effective readiness URL into out ("" when there is none). */
void cli_daemon_ready_url(const cli_daemon_spec_t *d, char *out, size_t outlen);
void cli_config_free(cli_config_t *c);
/* Index of the daemon named name, or -1. */
int cli_config_find(const cli_config_t *c, const char *name);
int cli_restart_parse(const char *s, cli_restart_t *out);
const char *cli_restart_name(cli_restart_t r);

/* ---- cli_graph.c ---- */
/* Fills order[0..c->n) with daemon indexes such that every daemon comes
 * after its dependencies (declaration order among independent ones).
 * Unknown dependencies, self-dependencies and cycles are SK_ECONFIG with a
 * "file:line:col: ..." message naming the cycle. */
int cli_order(const cli_config_t *c, size_t *order, char *err, size_t errlen);

typedef struct cli_backoff {
  uint64_t base_ms;     /* first delay (500) */
  uint64_t cap_ms;      /* largest delay (30000) */
  uint64_t reset_ms;    /* an uptime this long forgets earlier failures (30000) */
  uint64_t next_ms;     /* delay the next restart will use */
} cli_backoff_t;

void cli_backoff_init(cli_backoff_t *b, uint64_t base_ms, uint64_t cap_ms, uint64_t reset_ms);
/* The delay before restarting a process that ran for uptime_ms, and
 * advances the backoff (doubling up to the cap). */
uint64_t cli_backoff_delay(cli_backoff_t *b, uint64_t uptime_ms);

/* ---- cli_state.c ---- */
typedef struct cli_state {
  char dir[512];
  int lock_fd;          /* held by the running supervisor */
} cli_state_t;

/* Joins the state dir and a relative name into out (SK_ENAMETOOLONG when it
 * does not fit). */
int cli_state_path(const char *dir, const char *name, char *out, size_t outlen);
/* mkdir -p for dir and dir/logs. */
int cli_state_prepare(const char *dir);
/* Takes the supervisor lock: SK_EBUSY when another supervisor holds it
 * (its pid is stored in *other when known). */
int cli_state_lock(cli_state_t *st, const char *dir, pid_t *other);
void cli_state_unlock(cli_state_t *st);
/* The pid recorded in skiff.pid when that process is alive, else 0. */
pid_t cli_state_live_pid(const char *dir);
/* Stops daemons that status.json lists as running when no supervisor holds
 * the directory (the previous one was killed): SIGTERM, then SIGKILL after
 * timeout_ms. Only pids still running the recorded executable are touched.
 * Returns how many were found. */
int cli_state_reap_orphans(const char *dir, uint64_t timeout_ms, FILE *out);
/* Writes data to path through path.tmp + fsync + rename. */
int cli_write_atomic(const char *path, const void *data, size_t len);
/* Reads a whole file (up to max bytes) into a malloc'd NUL-terminated buffer. */
int cli_read_file(const char *path, size_t max, char **out, size_t *outlen);
/* Formats seconds as "3s", "4m12s", "2h5m", "3d4h". */
void cli_fmt_duration(uint64_t secs, char *out, size_t outlen);
/* Parses "500ms", "2s", "1m", "1h", or a bare number of seconds. */
int cli_parse_duration_ms(const char *s, uint64_t *out);

/* ---- cli_super.c ---- */
typedef struct cli_up_opts {
  const char *config_path;
  const char *state_dir;   /* resolved already */
  const char *self_exe;    /* directory to look for daemon binaries first */
  FILE *out;               /* progress lines */
} cli_up_opts_t;

/* Runs the supervisor until SIGINT/SIGTERM; returns the exit status. */
int cli_up(const cli_up_opts_t *o, const cli_config_t *cfg);

/* ---- cli_ident.c ---- */
/* Mints a one-use join token for spiffe://<td>/region/<r>/daemon/<name>
 * (name "proxy/x": .../proxy/x)
 * through cfg->ident.control with the admin token and writes it to out_path
 * (0600). Blocks up to ~8 s (a private loop). */
int cli_mint_join_token(const cli_config_t *cfg, const char *name, const char *out_path, char *err,
                        size_t errlen);
/* Resolves a daemon command to an executable path (malloc'd). */
int cli_resolve_command(const char *command, const char *config_dir, const char *self_dir,
                        char **out);

/* ---- cli_cmd.c ---- */
int cli_main(int argc, char **argv);

#endif
