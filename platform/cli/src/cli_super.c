/* `skiff up`: the local supervisor.
 *
 * One libuv loop. Daemons start in dependency order: a daemon is spawned
 * once every daemon it depends on has answered its readiness URL with 200.
 * Each child runs in its own session (so a terminal's Ctrl-C reaches only the
 * supervisor, which then stops the children in reverse order), with stdout
 * and stderr appended to <state_dir>/logs/<name>.log. An exited child is
 * restarted after an exponential backoff (cli_backoff_t). status.json is
 * rewritten (temp file + rename) on every change. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "cli_int.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/mem.h"

extern char **environ;

#define PROBE_START_MS 200     /* probe period while starting */
#define PROBE_READY_MS 2000    /* probe period once ready */
#define PROBE_FAILS_UNREADY 3  /* consecutive failures before "not ready" */
#define BACKOFF_BASE_MS 500
#define BACKOFF_CAP_MS 30000
#define BACKOFF_RESET_MS 30000

typedef enum dstate {
  DS_WAITING = 0, /* not started yet: dependencies not ready */
  DS_STARTING,    /* spawned, not ready yet */
  DS_RUNNING,     /* spawned and ready at least once */
  DS_BACKOFF,     /* exited, restart timer armed */
  DS_EXITED,      /* exited, restart policy says stay down */
  DS_STOPPING,    /* SIGTERM sent, waiting */
  DS_STOPPED,     /* stopped by the supervisor */
} dstate_t;

static const char *const dstate_names[] = {"waiting", "starting", "running", "backoff",
                                           "exited",  "stopping", "stopped"};

typedef struct sup sup_t;

typedef struct sdaemon {
  sup_t *sup;
  const cli_daemon_spec_t *spec;
  char *exe;
  char url[512];
  char host[256];
  int port;
  char path[256];
  uv_process_t proc;
  int proc_open;      /* proc handle initialised and not closed */
  int running;        /* process alive */
  uv_timer_t timer;   /* restart backoff / kill deadline */
  uv_timer_t probe;
  sk_http_client_t *client;
  int https;          /* ready_url is https://: verified with identity.ca */
  sk_tls_ctx_t *tls;
  int probe_inflight;
  unsigned probe_gen;  /* bumps on every spawn: stale probe answers are ignored */
  int probe_fails;
  dstate_t state;
  int ready;
  int ever_ready;     /* since this spawn */
  int was_ready;      /* ready at least once since supervisor start */
  long pid;
  unsigned restarts;
  uint64_t started_ms;   /* uv_now at spawn */
  time_t started_wall;
  int64_t last_exit;     /* exit status, or -1 */
  int last_signal;
  cli_backoff_t backoff;
} sdaemon_t;

struct sup {
  uv_loop_t *loop;
  const cli_up_opts_t *o;
  const cli_config_t *cfg;
  sdaemon_t *d;
  size_t n;
  size_t order[CLI_MAX_DAEMONS];
  uv_signal_t sigint, sigterm, sighup;
  int stopping;
  int finished;       /* every daemon stopped */
  int stop_pos;       /* index into order while stopping, counting down */
  int all_ready_announced;
  int exit_code;
  time_t started_wall;
  char status_path[PATH_MAX];
  char logs_dir[PATH_MAX];
};

static void sup_say(sup_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sup_say(sup_t *s, const char *fmt, ...) {
  FILE *f = s->o->out ? s->o->out : stdout;
  char ts[32];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%H:%M:%S", &tm);
  fprintf(f, "%s skiff: ", ts);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fflush(f);
}

/* ---- command resolution ---- */

static int is_exec(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0;
}

int cli_resolve_command(const char *command, const char *config_dir, const char *self_dir,
                        char **out) {
  char buf[PATH_MAX];
  *out = NULL;
  if (!command || !*command) return SK_EINVAL;
  if (strchr(command, '/')) {
    if (command[0] == '/' || !config_dir)
      snprintf(buf, sizeof buf, "%s", command);
    else if (snprintf(buf, sizeof buf, "%s/%s", config_dir, command) >= (int)sizeof buf)
      return SK_ENAMETOOLONG;
    if (!is_exec(buf)) return SK_ENOENT;
    *out = sk_xstrdup(buf);
    return 0;
  }
  if (self_dir && snprintf(buf, sizeof buf, "%s/%s", self_dir, command) < (int)sizeof buf &&
      is_exec(buf)) {
    *out = sk_xstrdup(buf);
    return 0;
  }
  const char *path = getenv("PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t len = colon ? (size_t)(colon - path) : strlen(path);
    if (len > 0 && len < sizeof buf - 2 &&
        snprintf(buf, sizeof buf, "%.*s/%s", (int)len, path, command) < (int)sizeof buf &&
        is_exec(buf)) {
      *out = sk_xstrdup(buf);
      return 0;
    }
    path += len;
    if (*path == ':') path++;
  }
  return SK_ENOENT;
}

static void log_path(const sup_t *s, const char *name, char *out, size_t outlen) {
  if (snprintf(out, outlen, "%s/%s.log", s->logs_dir, name) >= (int)outlen) out[0] = 0;
}

/* ---- status.json ---- */

static void write_status(sup_t *s) {
  json_t *root = json_object();
  json_object_set_new(root, "pid", json_integer(getpid()));
  json_object_set_new(root, "config", json_string(s->cfg->path));
  json_object_set_new(root, "started_at", json_integer((json_int_t)s->started_wall));
  json_object_set_new(root, "updated_at", json_integer((json_int_t)time(NULL)));
  json_object_set_new(root, "state",
                      json_string(s->finished ? "stopped" : s->stopping ? "stopping" : "running"));
  json_t *arr = json_array();
  for (size_t k = 0; k < s->n; k++) {
    sdaemon_t *d = &s->d[s->order[k]];
    json_t *o = json_object();
    char logp[PATH_MAX];
    log_path(s, d->spec->name, logp, sizeof logp);
    json_object_set_new(o, "name", json_string(d->spec->name));
    json_object_set_new(o, "state", json_string(dstate_names[d->state]));
    json_object_set_new(o, "pid", d->running ? json_integer(d->pid) : json_null());
    json_object_set_new(o, "ready", json_boolean(d->running && d->ready));
    json_object_set_new(o, "restarts", json_integer(d->restarts));
    json_object_set_new(o, "started_at",
                        d->running ? json_integer((json_int_t)d->started_wall) : json_null());
    json_object_set_new(o, "last_exit", d->last_exit >= 0 ? json_integer(d->last_exit) : json_null());
    json_object_set_new(o, "last_signal", d->last_signal ? json_integer(d->last_signal) : json_null());
    json_object_set_new(o, "exe", d->exe ? json_string(d->exe) : json_null());
    json_object_set_new(o, "ready_url", d->url[0] ? json_string(d->url) : json_null());
    json_object_set_new(o, "url", d->spec->url && *d->spec->url ? json_string(d->spec->url) : json_null());
    json_object_set_new(o, "log", json_string(logp));
    json_array_append_new(arr, o);
  }
  json_object_set_new(root, "daemons", arr);
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (!text) return;
  size_t len = strlen(text);
  char *withnl = sk_xmalloc(len + 2);
  memcpy(withnl, text, len);
  withnl[len] = '\n';
  int rc = cli_write_atomic(s->status_path, withnl, len + 1);
  if (rc < 0) sup_say(s, "cannot write %s: %s", s->status_path, sk_strerror(rc));
  free(withnl);
  free(text);
}

/* ---- readiness ---- */

static int parse_url(sdaemon_t *d) {
  const char *u = d->url;
  d->https = strncmp(u, "https://", 8) == 0;
  if (!d->https && strncmp(u, "http://", 7) != 0) return SK_EINVAL;
  u += d->https ? 8 : 7;
  const char *slash = strchr(u, '/');
  size_t hp = slash ? (size_t)(slash - u) : strlen(u);
  snprintf(d->path, sizeof d->path, "%s", slash ? slash : "/");
  char hostport[300];
  if (hp == 0 || hp >= sizeof hostport) return SK_EINVAL;
  memcpy(hostport, u, hp);
  hostport[hp] = 0;
  sk_cfg_addr_t a;
  char msg[200];
  if (sk_config_parse_addr(hostport, &a, msg, sizeof msg) < 0) {
    /* host without a port */
    if (strchr(hostport, ':')) return SK_EINVAL;
    if (strlen(hostport) >= sizeof d->host) return SK_EINVAL;
    memcpy(d->host, hostport, strlen(hostport) + 1);
    d->port = d->https ? 443 : 80;
    return 0;
  }
  snprintf(d->host, sizeof d->host, "%s", a.host);
  d->port = a.port;
  return d->port > 0 ? 0 : SK_EINVAL;
}

static void sup_schedule(sup_t *s);
static void daemon_set_ready(sdaemon_t *d, int ready);
static void daemon_kill(sdaemon_t *d, int sig);
static void kill_deadline(uv_timer_t *t);

typedef struct probe_req {
  sdaemon_t *d;
  unsigned gen;
} probe_req_t;

static void probe_done(int err, sk_http_resp_t *resp, void *ud) {
  probe_req_t *pr = ud;
  sdaemon_t *d = pr->d;
  unsigned gen = pr->gen;
  free(pr);
  if (gen != d->probe_gen) return; /* answer for an older process */
  d->probe_inflight = 0;
  if (err == SK_ECANCELED) return;
  int ok = err >= 0 && resp && resp->status == 200;
  if (ok) {
    d->probe_fails = 0;
    if (!d->ready) daemon_set_ready(d, 1);
  } else if (d->ready && ++d->probe_fails >= PROBE_FAILS_UNREADY) {
    daemon_set_ready(d, 0);
  }
}

static void probe_tick(uv_timer_t *t) {
  sdaemon_t *d = t->data;
  sup_t *s = d->sup;
  if (!d->running || s->stopping) return;
  if (d->state == DS_STARTING && uv_now(s->loop) - d->started_ms > d->spec->start_timeout_ms) {
    char dur[32];
    cli_fmt_duration(d->spec->start_timeout_ms / 1000, dur, sizeof dur);
    sup_say(s, "%s: not ready within %s (%s); stopping it", d->spec->name, dur, d->url);
    daemon_kill(d, SIGTERM);
    uv_timer_stop(&d->probe);
    uv_timer_start(&d->timer, kill_deadline, d->spec->stop_timeout_ms, 0);
    return;
  }
  if (d->probe_inflight) return;
  if (d->https && !d->tls) {
    /* control's bundle (identity.ca) may appear only once control runs:
     * retried on every tick until it can be read */
    char terr[256];
    sk_tls_opts_t to = {.ca_file = s->cfg->ident.ca, .verify = SK_TLS_VERIFY_REQUIRE, .alpn = "http/1.1"};
    if (!s->cfg->ident.ca || !*s->cfg->ident.ca || sk_tls_ctx_new(&to, &d->tls, terr, sizeof terr) < 0) {
      d->tls = NULL;
      return;
    }
  }
  if (!d->client) {
    sk_http_client_opts_t co = {.host = d->host, .port = d->port, .tls = d->tls, .max_conns = 1,
                                .connect_timeout_ms = 1000, .request_timeout_ms = 2000,
                                .max_body_bytes = 64 * 1024, .idle_timeout_ms = 10000};
    if (sk_http_client_new(s->loop, &co, &d->client) < 0) {
      d->client = NULL;
      return;
    }
  }
  probe_req_t *pr = sk_xmalloc(sizeof *pr);
  pr->d = d;
  pr->gen = d->probe_gen;
  d->probe_inflight = 1;
  int rc = sk_http_client_request(d->client, "GET", d->path, NULL, 0, NULL, 0, probe_done, pr);
  if (rc < 0 && d->probe_inflight) {
    /* the callback did not run (it clears probe_inflight): the request
     * never started and pr is still ours */
    d->probe_inflight = 0;
    free(pr);
  }
}

static void probe_stop(sdaemon_t *d) {
  uv_timer_stop(&d->probe);
  d->probe_gen++;
  d->probe_inflight = 0;
  if (d->client) {
    sk_http_client_free(d->client);
    d->client = NULL;
  }
  sk_tls_ctx_unref(d->tls); /* identity.ca is read again on the next start */
  d->tls = NULL;
}

static void announce_all_ready(sup_t *s) {
  if (s->all_ready_announced) return;
  for (size_t i = 0; i < s->n; i++)
    if (!s->d[i].was_ready) return;
  s->all_ready_announced = 1;
  FILE *f = s->o->out ? s->o->out : stdout;
  sup_say(s, "all %zu daemon%s ready (state in %s)", s->n, s->n == 1 ? "" : "s", s->o->state_dir);
  for (size_t k = 0; k < s->n; k++) {
    sdaemon_t *d = &s->d[s->order[k]];
    fprintf(f, "  %-20s %-32s %s%s\n", d->spec->name, d->spec->url && *d->spec->url ? d->spec->url : "-",
            d->url[0] ? "ready: " : "", d->url);
  }
  fprintf(f, "  stop with Ctrl-C or `skiff down --state-dir %s`\n", s->o->state_dir);
  fflush(f);
}

static void daemon_set_ready(sdaemon_t *d, int ready) {
  sup_t *s = d->sup;
  d->ready = ready;
  if (ready) {
    uint64_t took = uv_now(s->loop) - d->started_ms;
    if (!d->ever_ready)
      sup_say(s, "%s ready (pid %ld, %" PRIu64 "ms)", d->spec->name, d->pid, took);
    else
      sup_say(s, "%s ready again", d->spec->name);
    d->ever_ready = 1;
    d->was_ready = 1;
    if (d->state == DS_STARTING) d->state = DS_RUNNING;
    if (d->url[0]) uv_timer_start(&d->probe, probe_tick, PROBE_READY_MS, PROBE_READY_MS);
  } else {
    sup_say(s, "%s stopped answering %s", d->spec->name, d->url);
  }
  write_status(s);
  if (ready) {
    sup_schedule(s);
    announce_all_ready(s);
  }
}

/* ---- processes ---- */

static void sup_stop_next(sup_t *s);
static void daemon_spawn(sdaemon_t *d);

static void proc_closed(uv_handle_t *h) {
  sdaemon_t *d = h->data;
  d->proc_open = 0;
}

static void restart_fire(uv_timer_t *t) {
  sdaemon_t *d = t->data;
  if (d->sup->stopping || d->state != DS_BACKOFF) return;
  d->restarts++;
  daemon_spawn(d);
}

static void proc_exit(uv_process_t *p, int64_t status, int sig) {
  sdaemon_t *d = p->data;
  sup_t *s = d->sup;
  uint64_t up = uv_now(s->loop) - d->started_ms;
  d->running = 0;
  d->ready = 0;
  d->last_exit = sig ? -1 : status;
  d->last_signal = sig;
  probe_stop(d);
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->proc, proc_closed);
  if (sig)
    sup_say(s, "%s (pid %ld) killed by signal %d", d->spec->name, d->pid, sig);
  else
    sup_say(s, "%s (pid %ld) exited with status %" PRId64, d->spec->name, d->pid, status);
  if (s->stopping) {
    d->state = DS_STOPPED;
    write_status(s);
    sup_stop_next(s);
    return;
  }
  int failed = sig != 0 || status != 0;
  cli_restart_t pol = (cli_restart_t)d->spec->restart;
  if (pol == CLI_RESTART_ALWAYS || (pol == CLI_RESTART_ON_FAILURE && failed)) {
    uint64_t delay = cli_backoff_delay(&d->backoff, up);
    d->state = DS_BACKOFF;
    sup_say(s, "%s: restarting in %" PRIu64 "ms", d->spec->name, delay);
    uv_timer_start(&d->timer, restart_fire, delay, 0);
  } else {
    d->state = DS_EXITED;
    sup_say(s, "%s: restart policy '%s': leaving it down", d->spec->name, cli_restart_name(pol));
  }
  write_status(s);
}

static char **build_env(const cli_daemon_spec_t *spec, char *const *extra, size_t nextra) {
  size_t n = 0;
  while (environ && environ[n]) n++;
  char **env = sk_xcalloc(n + spec->env.n + nextra + 1, sizeof(char *));
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    int overridden = 0;
    for (size_t j = 0; j < spec->env.n && !overridden; j++)
      if (!strncmp(spec->env.v[j], environ[i], nl) && spec->env.v[j][nl] == '=') overridden = 1;
    for (size_t j = 0; j < nextra && !overridden; j++)
      if (!strncmp(extra[j], environ[i], nl) && extra[j][nl] == '=') overridden = 1;
    if (!overridden) env[k++] = environ[i];
  }
  for (size_t j = 0; j < nextra; j++) env[k++] = extra[j];
  for (size_t j = 0; j < spec->env.n; j++) env[k++] = spec->env.v[j];
  env[k] = NULL;
  return env;
}

static void log_marker(sup_t *s, int fd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void log_marker(sup_t *s, int fd, const char *fmt, ...) {
  char line[600];
  char ts[40];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  int n = snprintf(line, sizeof line, "%s ---- skiff: ", ts);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  if (write(fd, line, (size_t)n) < 0) { /* best effort */
  }
  (void)s;
}

static void daemon_spawn(sdaemon_t *d) {
  sup_t *s = d->sup;
  const cli_daemon_spec_t *spec = d->spec;
  char logp[PATH_MAX], cfgp[PATH_MAX];
  char *argv[CLI_MAX_LIST + 4];
  char **env = NULL;
  int fd = -1, rc;
  size_t a = 0;

  log_path(s, spec->name, logp, sizeof logp);
  fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    rc = sk_err_from_errno(errno);
    goto fail;
  }
  if (!d->exe) {
    rc = cli_resolve_command(spec->command && *spec->command ? spec->command : spec->name,
                             s->cfg->dir, s->o->self_exe, &d->exe);
    if (rc < 0) goto fail;
  }
  argv[a++] = d->exe;
  if (spec->config && *spec->config) {
    if (spec->config[0] == '/')
      snprintf(cfgp, sizeof cfgp, "%s", spec->config);
    else
      snprintf(cfgp, sizeof cfgp, "%s/%s", s->cfg->dir, spec->config);
    argv[a++] = "--config";
    argv[a++] = cfgp;
  }
  for (size_t i = 0; i < spec->args.n && a < CLI_MAX_LIST + 3; i++) argv[a++] = spec->args.v[i];
  argv[a] = NULL;
  /* identity: a fresh one-use join token from control for this start (a
   * daemon that still holds a valid certificate renews with it instead) */
  char jt_env[PATH_MAX + 32], ca_env[PATH_MAX + 16];
  char *extra[2];
  size_t nextra = 0;
  if (spec->identity && *spec->identity && s->cfg->ident.control && *s->cfg->ident.control) {
    char idir[PATH_MAX], jt[PATH_MAX], ierr[600];
    if (cli_state_path(s->o->state_dir, "identity", idir, sizeof idir) == 0 &&
        (mkdir(idir, 0700) == 0 || errno == EEXIST) &&
        snprintf(jt, sizeof jt, "%s/%s.join", idir, spec->name) < (int)sizeof jt) {
      if (cli_mint_join_token(s->cfg, spec->identity, jt, ierr, sizeof ierr) < 0) {
        sup_say(s, "%s: no join token (%s); it starts with the certificate it has, if any", spec->name, ierr);
        log_marker(s, fd, "no join token: %s", ierr);
      }
      snprintf(jt_env, sizeof jt_env, "SKIFF_JOIN_TOKEN_FILE=%s", jt);
      extra[nextra++] = jt_env;
    }
    snprintf(ca_env, sizeof ca_env, "SKIFF_CA=%s", s->cfg->ident.ca);
    extra[nextra++] = ca_env;
  }
  env = build_env(spec, extra, nextra);

  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = fd;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = fd;
  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.file = d->exe;
  po.args = argv;
  po.env = env;
  po.exit_cb = proc_exit;
  po.flags = UV_PROCESS_DETACHED; /* own session: Ctrl-C reaches only the supervisor */
  po.stdio_count = 3;
  po.stdio = stdio;
  d->proc.data = d;
  log_marker(s, fd, "starting %s (restart %u)", d->exe, d->restarts);
  rc = uv_spawn(s->loop, &d->proc, &po);
  d->proc_open = 1; /* uv_spawn initialises the handle even when it fails */
  if (rc < 0) {
    uv_close((uv_handle_t *)&d->proc, proc_closed);
    rc = sk_err_from_uv(rc);
    goto fail;
  }
  d->running = 1;
  d->pid = d->proc.pid;
  d->ready = 0;
  d->ever_ready = 0;
  d->probe_fails = 0;
  d->started_ms = uv_now(s->loop);
  d->started_wall = time(NULL);
  d->state = DS_STARTING;
  d->probe_gen++;
  sup_say(s, "started %s (pid %ld)%s", spec->name, d->pid, d->restarts ? " after a restart" : "");
  if (d->url[0])
    uv_timer_start(&d->probe, probe_tick, 50, PROBE_START_MS);
  else
    daemon_set_ready(d, 1);
  write_status(s);
  close(fd);
  free(env);
  return;
fail:
  if (fd >= 0) {
    log_marker(s, fd, "cannot start %s: %s", spec->name, sk_strerror(rc));
    close(fd);
  }
  free(env);
  sup_say(s, "%s: cannot start %s: %s", spec->name,
          d->exe ? d->exe : (spec->command && *spec->command ? spec->command : spec->name), sk_strerror(rc));
  d->last_exit = 127;
  d->last_signal = 0;
  uint64_t delay = cli_backoff_delay(&d->backoff, 0);
  d->state = DS_BACKOFF;
  uv_timer_start(&d->timer, restart_fire, delay, 0);
  write_status(s);
}

static void sup_schedule(sup_t *s) {
  if (s->stopping) return;
  for (size_t k = 0; k < s->n; k++) {
    sdaemon_t *d = &s->d[s->order[k]];
    if (d->state != DS_WAITING) continue;
    int ok = 1;
    for (size_t j = 0; j < d->spec->deps.n && ok; j++) {
      int dep = cli_config_find(s->cfg, d->spec->deps.v[j]);
      if (dep >= 0 && !s->d[dep].was_ready) ok = 0;
    }
    if (ok) daemon_spawn(d);
  }
}

/* ---- stopping ---- */

static void kill_deadline(uv_timer_t *t) {
  sdaemon_t *d = t->data;
  if (!d->running) return;
  sup_say(d->sup, "%s (pid %ld) still running after %" PRIu64 "ms: SIGKILL", d->spec->name, d->pid,
          d->spec->stop_timeout_ms);
  daemon_kill(d, SIGKILL);
}

static void daemon_kill(sdaemon_t *d, int sig) {
  if (!d->running) return;
  if (uv_process_kill(&d->proc, sig) < 0 && d->pid > 0) kill((pid_t)d->pid, sig);
}

static void sup_finish(sup_t *s) {
  s->finished = 1;
  write_status(s);
  sup_say(s, "all daemons stopped");
  uv_close((uv_handle_t *)&s->sigint, NULL);
  uv_close((uv_handle_t *)&s->sigterm, NULL);
  uv_close((uv_handle_t *)&s->sighup, NULL);
  for (size_t i = 0; i < s->n; i++) {
    probe_stop(&s->d[i]);
    uv_close((uv_handle_t *)&s->d[i].timer, NULL);
    uv_close((uv_handle_t *)&s->d[i].probe, NULL);
  }
}

static void sup_stop_next(sup_t *s) {
  while (s->stop_pos >= 0) {
    sdaemon_t *d = &s->d[s->order[s->stop_pos]];
    if (d->running) {
      if (d->state != DS_STOPPING) {
        d->state = DS_STOPPING;
        sup_say(s, "stopping %s (pid %ld)", d->spec->name, d->pid);
        daemon_kill(d, SIGTERM);
        uv_timer_start(&d->timer, kill_deadline, d->spec->stop_timeout_ms, 0);
        write_status(s);
      }
      return; /* proc_exit calls back here */
    }
    if (d->state != DS_WAITING) d->state = DS_STOPPED;
    s->stop_pos--;
  }
  sup_finish(s);
}

static void sup_stop(sup_t *s) {
  if (s->stopping) return;
  s->stopping = 1;
  sup_say(s, "stopping %zu daemon%s", s->n, s->n == 1 ? "" : "s");
  for (size_t i = 0; i < s->n; i++) {
    sdaemon_t *d = &s->d[i];
    uv_timer_stop(&d->timer);
    probe_stop(d);
    if (d->state == DS_BACKOFF) d->state = DS_STOPPED;
  }
  s->stop_pos = (int)s->n - 1;
  write_status(s);
  sup_stop_next(s);
}

static void on_signal(uv_signal_t *h, int signum) {
  sup_t *s = h->data;
  if (signum == SIGHUP) {
    sup_say(s, "SIGHUP: restart the supervisor to apply config changes");
    return;
  }
  if (!s->stopping) {
    sup_say(s, "%s received", signum == SIGINT ? "interrupt" : "SIGTERM");
    sup_stop(s);
    return;
  }
  sup_say(s, "second signal: killing every daemon now");
  for (size_t i = 0; i < s->n; i++) daemon_kill(&s->d[i], SIGKILL);
}

int cli_up(const cli_up_opts_t *o, const cli_config_t *cfg) {
  sup_t s;
  uv_loop_t loop;
  int rc;
  char err[512];
  memset(&s, 0, sizeof s);
  s.o = o;
  s.cfg = cfg;
  s.n = cfg->n;
  s.started_wall = time(NULL);
  if ((rc = cli_order(cfg, s.order, err, sizeof err)) < 0) {
    fputs(err, stderr);
    return 1;
  }
  if (cli_state_path(o->state_dir, "status.json", s.status_path, sizeof s.status_path) < 0 ||
      cli_state_path(o->state_dir, "logs", s.logs_dir, sizeof s.logs_dir) < 0) {
    fprintf(stderr, "skiff: state dir path too long\n");
    return 1;
  }
  /* fail early on commands that cannot be found */
  s.d = sk_xcalloc(s.n ? s.n : 1, sizeof *s.d);
  int bad = 0;
  for (size_t i = 0; i < s.n; i++) {
    sdaemon_t *d = &s.d[i];
    d->spec = &cfg->d[i];
    const char *cmd = d->spec->command && *d->spec->command ? d->spec->command : d->spec->name;
    if (cli_resolve_command(cmd, cfg->dir, o->self_exe, &d->exe) < 0) {
      fprintf(stderr, "%s:%d:%d: daemon '%s': command '%s' not found (looked next to skiff%s and on PATH)\n",
              cfg->path, d->spec->pos.line, d->spec->pos.col, d->spec->name, cmd,
              strchr(cmd, '/') ? ", relative to the config" : "");
      bad = 1;
    }
    cli_daemon_ready_url(d->spec, d->url, sizeof d->url);
    if (d->url[0] && parse_url(d) < 0) {
      fprintf(stderr, "%s:%d:%d: daemon '%s': cannot use ready_url '%s'\n", cfg->path,
              d->spec->pos.line, d->spec->pos.col, d->spec->name, d->url);
      bad = 1;
    }
  }
  if (bad) {
    for (size_t i = 0; i < s.n; i++) free(s.d[i].exe);
    free(s.d);
    return 1;
  }

  uv_loop_init(&loop);
  s.loop = &loop;
  signal(SIGPIPE, SIG_IGN);
  uv_signal_init(&loop, &s.sigint);
  uv_signal_init(&loop, &s.sigterm);
  uv_signal_init(&loop, &s.sighup);
  s.sigint.data = s.sigterm.data = s.sighup.data = &s;
  uv_signal_start(&s.sigint, on_signal, SIGINT);
  uv_signal_start(&s.sigterm, on_signal, SIGTERM);
  uv_signal_start(&s.sighup, on_signal, SIGHUP);
  for (size_t i = 0; i < s.n; i++) {
    sdaemon_t *d = &s.d[i];
    d->sup = &s;
    d->last_exit = -1;
    cli_backoff_init(&d->backoff, BACKOFF_BASE_MS, BACKOFF_CAP_MS, BACKOFF_RESET_MS);
    uv_timer_init(&loop, &d->timer);
    uv_timer_init(&loop, &d->probe);
    d->timer.data = d->probe.data = d;
  }
  sup_say(&s, "supervisor pid %ld, %zu daemon%s from %s", (long)getpid(), s.n, s.n == 1 ? "" : "s",
          cfg->path);
  write_status(&s);
  if (s.n == 0) {
    sup_stop(&s);
  } else {
    sup_schedule(&s);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  /* every handle is closed by sup_finish; run once more for the callbacks */
  uv_run(&loop, UV_RUN_NOWAIT);
  rc = uv_loop_close(&loop);
  if (rc == UV_EBUSY) {
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  for (size_t i = 0; i < s.n; i++) free(s.d[i].exe);
  free(s.d);
  return s.exit_code;
}
