/* The skiff verbs: up, down, status, logs, check, version, help. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli_int.h"
#include "control.h"
#include "gitops.h"
#include "policy.h"
#include "skiff/err.h"
#include "skiff/mem.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

#define DEFAULT_CONFIG "skiff.yaml"
#define DEFAULT_STATE ".skiff"

static const char usage_text[] =
    "usage: skiff <command> [options]\n"
    "\n"
    "commands:\n"
    "  up     [-f FILE] [--state-dir DIR]       run the daemons of FILE (default skiff.yaml)\n"
    "                                           in the foreground until Ctrl-C or `skiff down`\n"
    "  down   [--state-dir DIR] [--timeout D]   stop the running supervisor and its daemons\n"
    "  status [--state-dir DIR] [--json]        daemons, pids, uptime, restarts, readiness\n"
    "  logs   DAEMON [-f] [-n LINES] [--state-dir DIR]\n"
    "                                           print (or follow) a daemon's log\n"
    "  check  [-f FILE]                         validate FILE without starting anything\n"
    "  policy test POLICIES RESOURCES...        evaluate manifests against policies (docs/policy.md)\n"
    "  sign   --key KEY IMAGE | --generate-key  sign an image, cosign's layout (docs/policy.md)\n"
    "  verify --key PUB IMAGE                   check an image's signature with a public key\n"
    "  apply -f FILE|DIR | get KIND [NAME] | delete KIND NAME | diff -f FILE\n"
    "                                           resources on skiff-control (docs/control.md)\n"
    "  token create --role ROLE --name NAME [--ttl D] | token list | token revoke NAME|ID\n"
    "                                           API tokens on skiff-control (admin only)\n"
    "  proxies [-o json|wide]                   proxies following skiff-control and their acked config versions\n"
    "  app list|get|sync|diff|history|rollback|suspend|resume\n"
    "                                           GitOps Applications (docs/gitops.md)\n"
    "  version                                  print the version\n"
    "  help   [COMMAND]                         this text\n"
    "\n"
    "The state directory defaults to $SKIFF_STATE_DIR, then the config's state_dir\n"
    "(with -f), then ./.skiff. See docs/cli.md.\n";

static void usage(FILE *f) { fputs(usage_text, f); }

static int usage_error(const char *verb, const char *what, const char *arg) {
  fprintf(stderr, "skiff%s%s: %s%s%s%s\nrun 'skiff help' for usage\n", verb ? " " : "", verb ? verb : "",
          what, arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
  return 2;
}

typedef struct cmd_opts {
  const char *file;
  const char *state_dir;
  const char *timeout;
  const char *lines;
  const char *daemon;
  int json;
  int follow;
  int help;
} cmd_opts_t;

/* Matches "-x VALUE", "--long VALUE" or "--long=VALUE". Returns 1 when a
 * matched (and *i advanced past a separate value), -1 when the value is
 * missing, 0 when a is another option. */
static int take_value(int argc, char **argv, int *i, const char *shortf, const char *longf,
                      const char **dst) {
  const char *a = argv[*i];
  size_t ll = strlen(longf);
  if ((shortf && !strcmp(a, shortf)) || !strcmp(a, longf)) {
    if (*i + 1 >= argc) return -1;
    *dst = argv[++*i];
    return 1;
  }
  if (!strncmp(a, longf, ll) && a[ll] == '=') {
    *dst = a + ll + 1;
    return 1;
  }
  return 0;
}

/* Parses the options of one verb, refusing unknown ones. allowed holds
 * letters: f=-f FILE, s=--state-dir, t=--timeout, j=--json, F=-f/--follow
 * (logs), n=-n LINES, p=one positional (the daemon). */
static int parse_opts(const char *verb, int argc, char **argv, const char *allowed, cmd_opts_t *o) {
  static const struct {
    char letter;
    const char *shortf, *longf;
    size_t off;
  } valued[] = {
      {'f', "-f", "--file", offsetof(cmd_opts_t, file)},
      {'s', NULL, "--state-dir", offsetof(cmd_opts_t, state_dir)},
      {'t', NULL, "--timeout", offsetof(cmd_opts_t, timeout)},
      {'n', "-n", "--lines", offsetof(cmd_opts_t, lines)},
  };
  memset(o, 0, sizeof *o);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      o->help = 1;
      continue;
    }
    if (strchr(allowed, 'F') && (!strcmp(a, "-f") || !strcmp(a, "--follow"))) {
      o->follow = 1;
      continue;
    }
    if (strchr(allowed, 'j') && !strcmp(a, "--json")) {
      o->json = 1;
      continue;
    }
    int matched = 0;
    for (size_t k = 0; k < sizeof valued / sizeof valued[0] && !matched; k++) {
      if (!strchr(allowed, valued[k].letter)) continue;
      const char **dst = (const char **)((char *)o + valued[k].off);
      int r = take_value(argc, argv, &i, valued[k].shortf, valued[k].longf, dst);
      if (r < 0) return usage_error(verb, "this option needs a value:", a);
      matched = r;
    }
    if (matched) continue;
    if (a[0] == '-' && a[1]) return usage_error(verb, "unknown option", a);
    if (strchr(allowed, 'p') && !o->daemon) {
      o->daemon = a;
      continue;
    }
    return usage_error(verb, "unexpected argument", a);
  }
  return 0;
}

/* parse_opts, then --help: -1 when the verb goes on, otherwise its exit
 * code (a usage error, or the help text was printed). */
static int cmd_start(const char *verb, int argc, char **argv, const char *allowed, cmd_opts_t *o) {
  int rc = parse_opts(verb, argc, argv, allowed, o);
  if (rc) return rc;
  if (o->help) {
    usage(stdout);
    return 0;
  }
  return -1;
}

/* cli_config_load, its errors printed to stderr. */
static int load_config(const char *file, cli_config_t **cfg) {
  char err[8192];
  if (cli_config_load(file, cfg, err, sizeof err) < 0) {
    fputs(err, stderr);
    return -1;
  }
  return 0;
}

/* --state-dir, $SKIFF_STATE_DIR, the config's state_dir (relative to the
 * config file), ./.skiff. */
static void resolve_state_dir(const cmd_opts_t *o, const cli_config_t *cfg, char *out, size_t outlen) {
  const char *env = getenv("SKIFF_STATE_DIR");
  if (o->state_dir && *o->state_dir)
    snprintf(out, outlen, "%s", o->state_dir);
  else if (env && *env)
    snprintf(out, outlen, "%s", env);
  else if (cfg && cfg->state_dir && *cfg->state_dir) {
    if (cfg->state_dir[0] == '/')
      snprintf(out, outlen, "%s", cfg->state_dir);
    else
      snprintf(out, outlen, "%s/%s", cfg->dir, cfg->state_dir);
  } else
    snprintf(out, outlen, "%s", DEFAULT_STATE);
  /* drop trailing slashes (but keep "/") */
  size_t n = strlen(out);
  while (n > 1 && out[n - 1] == '/') out[--n] = 0;
}

/* With -f FILE the state dir may come from the file. */
static int state_dir_for(const cmd_opts_t *o, char *out, size_t outlen) {
  cli_config_t *cfg = NULL;
  if (o->file && !(o->state_dir && *o->state_dir) && load_config(o->file, &cfg) < 0) return 1;
  resolve_state_dir(o, cfg, out, outlen);
  cli_config_free(cfg);
  return 0;
}

static void self_dir(char *out, size_t outlen) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  out[0] = 0;
  if (n <= 0) return;
  exe[n] = 0;
  char *slash = strrchr(exe, '/');
  if (!slash) return;
  *slash = 0;
  snprintf(out, outlen, "%s", exe[0] ? exe : "/");
}

/* ---- up ---- */

static int cmd_up(int argc, char **argv) {
  cmd_opts_t o;
  int rc = cmd_start("up", argc, argv, "fs", &o);
  if (rc >= 0) return rc;
  const char *file = o.file ? o.file : DEFAULT_CONFIG;
  cli_config_t *cfg = NULL;
  if (load_config(file, &cfg) < 0) {
    if (!o.file && access(file, F_OK) != 0)
      fprintf(stderr, "skiff up: no %s here; pass one with -f FILE (see examples/skiff.yaml)\n", file);
    return 1;
  }
  char sd[PATH_MAX - 64], abs_sd[PATH_MAX];
  resolve_state_dir(&o, cfg, sd, sizeof sd);
  if ((rc = cli_state_prepare(sd)) < 0) {
    fprintf(stderr, "skiff up: cannot create state dir %s: %s\n", sd, sk_strerror(rc));
    cli_config_free(cfg);
    return 1;
  }
  if (!realpath(sd, abs_sd)) snprintf(abs_sd, sizeof abs_sd, "%s", sd);
  cli_state_t st;
  pid_t other = 0;
  rc = cli_state_lock(&st, abs_sd, &other);
  if (rc == SK_EBUSY) {
    if (other)
      fprintf(stderr, "skiff up: another supervisor (pid %ld) is running for %s; use `skiff down` first\n",
              (long)other, abs_sd);
    else
      fprintf(stderr, "skiff up: another supervisor is running for %s\n", abs_sd);
    cli_config_free(cfg);
    return 1;
  }
  if (rc < 0) {
    fprintf(stderr, "skiff up: cannot lock %s: %s\n", abs_sd, sk_strerror(rc));
    cli_config_free(cfg);
    return 1;
  }
  cli_state_reap_orphans(abs_sd, 10000, stdout);
  char self[PATH_MAX];
  self_dir(self, sizeof self);
  cli_up_opts_t uo = {.config_path = file, .state_dir = abs_sd, .self_exe = self[0] ? self : NULL,
                      .out = stdout};
  rc = cli_up(&uo, cfg);
  cli_state_unlock(&st);
  cli_config_free(cfg);
  return rc;
}

/* ---- down ---- */

static int lock_free(const char *dir) {
  char path[PATH_MAX];
  if (cli_state_path(dir, "skiff.lock", path, sizeof path) < 0) return 1;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  int ok = flock(fd, LOCK_SH | LOCK_NB) == 0;
  close(fd);
  return ok;
}

static int cmd_down(int argc, char **argv) {
  cmd_opts_t o;
  int rc = cmd_start("down", argc, argv, "fst", &o);
  if (rc >= 0) return rc;
  uint64_t timeout_ms = 60000;
  if (o.timeout && cli_parse_duration_ms(o.timeout, &timeout_ms) < 0)
    return usage_error("down", "bad --timeout (e.g. 30s):", o.timeout);
  char sd[PATH_MAX - 64];
  if (state_dir_for(&o, sd, sizeof sd)) return 1;
  pid_t pid = cli_state_live_pid(sd);
  if (pid <= 0 || lock_free(sd)) {
    printf("skiff: no supervisor running for %s\n", sd);
    return 0;
  }
  if (kill(pid, SIGTERM) < 0) {
    fprintf(stderr, "skiff down: cannot signal pid %ld: %s\n", (long)pid, strerror(errno));
    return 1;
  }
  printf("skiff: stopping supervisor pid %ld...\n", (long)pid);
  fflush(stdout);
  for (uint64_t waited = 0; waited < timeout_ms; waited += 100) {
    if (lock_free(sd) || (kill(pid, 0) < 0 && errno == ESRCH)) {
      printf("skiff: stopped\n");
      return 0;
    }
    usleep(100 * 1000);
  }
  fprintf(stderr, "skiff down: supervisor pid %ld still running after %" PRIu64 "ms\n", (long)pid,
          timeout_ms);
  return 1;
}

/* ---- status ---- */

static int cmd_status(int argc, char **argv) {
  cmd_opts_t o;
  int rc = cmd_start("status", argc, argv, "fsj", &o);
  if (rc >= 0) return rc;
  char sd[PATH_MAX - 64], path[PATH_MAX];
  if (state_dir_for(&o, sd, sizeof sd)) return 1;
  pid_t pid = cli_state_live_pid(sd);
  int live = pid > 0 && !lock_free(sd);
  cli_state_path(sd, "status.json", path, sizeof path);
  char *text = NULL;
  json_t *root = NULL;
  if (cli_read_file(path, 4u << 20, &text, NULL) == 0) root = json_loads(text, 0, NULL);
  free(text);
  if (o.json) {
    if (!root) root = json_object();
    json_object_set_new(root, "running", json_boolean(live));
    json_object_set_new(root, "state_dir", json_string(sd));
    if (!live) {
      json_t *arr = json_object_get(root, "daemons");
      size_t i;
      json_t *d;
      json_array_foreach(arr, i, d) {
        json_object_set_new(d, "pid", json_null());
        json_object_set_new(d, "ready", json_false());
      }
    }
    char *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (out) puts(out);
    free(out);
    json_decref(root);
    return live ? 0 : 3;
  }
  if (!live) {
    printf("skiff: no supervisor running for %s\n", sd);
    json_decref(root);
    return 3;
  }
  if (!root) {
    printf("skiff: supervisor pid %ld is running, no status yet\n", (long)pid);
    return 0;
  }
  time_t now = time(NULL);
  json_int_t sstart = json_integer_value(json_object_get(root, "started_at"));
  char up[32];
  cli_fmt_duration(sstart > 0 && now > sstart ? (uint64_t)(now - sstart) : 0, up, sizeof up);
  printf("supervisor pid %ld, up %s, config %s\n", (long)pid, up,
         json_string_value(json_object_get(root, "config")) ? json_string_value(json_object_get(root, "config"))
                                                            : "?");
  printf("%-20s %-8s %-9s %-8s %-6s %s\n", "DAEMON", "PID", "UPTIME", "RESTARTS", "READY", "STATE");
  size_t i;
  json_t *d;
  json_array_foreach(json_object_get(root, "daemons"), i, d) {
    const char *name = json_string_value(json_object_get(d, "name"));
    const char *state = json_string_value(json_object_get(d, "state"));
    json_t *jp = json_object_get(d, "pid");
    json_int_t started = json_integer_value(json_object_get(d, "started_at"));
    char pidb[24] = "-", upb[32] = "-";
    if (json_is_integer(jp)) {
      snprintf(pidb, sizeof pidb, "%" JSON_INTEGER_FORMAT, json_integer_value(jp));
      cli_fmt_duration(started > 0 && now > started ? (uint64_t)(now - started) : 0, upb, sizeof upb);
    }
    printf("%-20s %-8s %-9s %-8" JSON_INTEGER_FORMAT " %-6s %s\n", name ? name : "?", pidb, upb,
           json_integer_value(json_object_get(d, "restarts")),
           json_is_true(json_object_get(d, "ready")) ? "yes" : "no", state ? state : "?");
  }
  json_decref(root);
  return 0;
}

/* ---- logs ---- */

static volatile sig_atomic_t logs_interrupted;
static void logs_sigint(int sig) {
  (void)sig;
  logs_interrupted = 1;
}

static int valid_daemon_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > CLI_NAME_MAX || s[0] == '.' || s[0] == '-') return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.'))
      return 0;
  }
  return 1;
}

static int copy_out(int fd, off_t *pos) {
  char buf[65536];
  for (;;) {
    ssize_t n = pread(fd, buf, sizeof buf, *pos);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) return 0;
    if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n) return -1;
    *pos += n;
  }
}

/* Offset where the last `lines` lines start. */
static off_t tail_offset(int fd, off_t size, long lines) {
  char buf[8192];
  off_t pos = size;
  long seen = 0;
  while (pos > 0) {
    size_t chunk = pos > (off_t)sizeof buf ? sizeof buf : (size_t)pos;
    pos -= (off_t)chunk;
    if (pread(fd, buf, chunk, pos) != (ssize_t)chunk) return 0;
    for (size_t i = chunk; i-- > 0;) {
      if (buf[i] != '\n') continue;
      if (pos + (off_t)i == size - 1) continue; /* the final newline */
      if (++seen == lines) return pos + (off_t)i + 1;
    }
  }
  return 0;
}

static int cmd_logs(int argc, char **argv) {
  cmd_opts_t o;
  int rc = cmd_start("logs", argc, argv, "sFnp", &o);
  if (rc >= 0) return rc;
  if (!o.daemon) return usage_error("logs", "which daemon? usage: skiff logs DAEMON [-f]", NULL);
  if (!valid_daemon_name(o.daemon)) return usage_error("logs", "bad daemon name", o.daemon);
  long lines = -1;
  if (o.lines) {
    char *end = NULL;
    lines = strtol(o.lines, &end, 10);
    if (!end || *end || lines < 0 || lines > 10000000)
      return usage_error("logs", "bad line count", o.lines);
  }
  char sd[PATH_MAX - 128], path[PATH_MAX], name[128];
  resolve_state_dir(&o, NULL, sd, sizeof sd);
  snprintf(name, sizeof name, "logs/%s.log", o.daemon);
  cli_state_path(sd, name, path, sizeof path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "skiff logs: no log for '%s' in %s/logs\n", o.daemon, sd);
    return 1;
  }
  struct stat stt;
  off_t pos = 0;
  if (lines >= 0 && fstat(fd, &stt) == 0) pos = lines == 0 ? stt.st_size : tail_offset(fd, stt.st_size, lines);
  if (copy_out(fd, &pos) < 0) {
    close(fd);
    return 1;
  }
  fflush(stdout);
  if (!o.follow) {
    close(fd);
    return 0;
  }
  /* follow until Ctrl-C or until the supervisor is gone */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = logs_sigint;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int ticks = 0;
  while (!logs_interrupted) {
    usleep(200 * 1000);
    if (fstat(fd, &stt) == 0 && stt.st_size < pos) pos = 0; /* truncated */
    if (copy_out(fd, &pos) < 0) break;
    fflush(stdout);
    if (++ticks % 5 == 0) {
      pid_t pid = cli_state_live_pid(sd);
      if (pid <= 0 || lock_free(sd)) {
        copy_out(fd, &pos);
        fflush(stdout);
        break;
      }
    }
  }
  close(fd);
  return 0;
}

/* ---- check ---- */

static int cmd_check(int argc, char **argv) {
  cmd_opts_t o;
  int rc = cmd_start("check", argc, argv, "f", &o);
  if (rc >= 0) return rc;
  const char *file = o.file ? o.file : DEFAULT_CONFIG;
  cli_config_t *cfg = NULL;
  if (load_config(file, &cfg) < 0) return 1;
  char err[8192];
  size_t order[CLI_MAX_DAEMONS];
  cli_order(cfg, order, err, sizeof err);
  printf("%s: ok, %zu daemon%s, start order:", file, cfg->n, cfg->n == 1 ? "" : "s");
  for (size_t i = 0; i < cfg->n; i++) printf(" %s", cfg->d[order[i]].name);
  printf("\n");
  cli_config_free(cfg);
  return 0;
}

int cli_main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *verb = argv[1];
  int n = argc - 2;
  char **rest = argv + 2;
  if (!strcmp(verb, "up")) return cmd_up(n, rest);
  if (!strcmp(verb, "down")) return cmd_down(n, rest);
  if (!strcmp(verb, "status")) return cmd_status(n, rest);
  if (!strcmp(verb, "logs")) return cmd_logs(n, rest);
  if (!strcmp(verb, "check")) return cmd_check(n, rest);
  if (!strcmp(verb, "policy")) { /* skiff-policy's engine (platform/policy) */
    if (n >= 1 && !strcmp(rest[0], "test")) return pol_cli_test(n, rest);
    return usage_error("policy", "unknown subcommand (try: skiff policy test POLICIES RESOURCES...)",
                       n >= 1 ? rest[0] : NULL);
  }
  if (!strcmp(verb, "app")) return gx_cli_main(argc - 1, argv + 1); /* skiff-gitops (platform/gitops) */
  if (!strcmp(verb, "sign")) return pol_cli_sign(n + 1, argv + 1);     /* image signatures (platform/policy) */
  if (!strcmp(verb, "verify")) return pol_cli_verify(n + 1, argv + 1);
  /* apply/get/delete/diff/token: skiff-control (platform/control) */
  if (ctl_cli_is_verb(verb)) return ctl_cli_main(argc - 1, argv + 1);
  if (!strcmp(verb, "version") || !strcmp(verb, "--version")) {
    printf("skiff %s\n", SKIFF_VERSION);
    return 0;
  }
  if (!strcmp(verb, "help") || !strcmp(verb, "-h") || !strcmp(verb, "--help")) {
    usage(stdout);
    return 0;
  }
  return usage_error(NULL, "unknown command", verb);
}
