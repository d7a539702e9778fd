/* daemon.c - the fixed lifecycle: flags, config, logging, pid file, admin
 * listener, signals (drain with a deadline, reload), readiness. */
#include "skiff/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/ident.h"
#include "skiff/mem.h"

#define SK_DAEMON_MAX_DRAIN_MS (3600u * 1000u)

static const char *const admin_client_auth_names[] = {"optional", "require", NULL};
static const sk_config_entry_t admin_tls_entries[] = {
    SK_CFG_BOOL_E("identity", "false", sk_daemon_admin_tls_cfg_t, identity,
                  "serve HTTPS with the daemon's identity (needs identity.control)"),
    SK_CFG_STRING_E("cert", "", sk_daemon_admin_tls_cfg_t, cert, "PEM certificate chain; set = HTTPS"),
    SK_CFG_STRING_E("key", "", sk_daemon_admin_tls_cfg_t, key, "PEM private key"),
    SK_CFG_STRING_E("ca", "", sk_daemon_admin_tls_cfg_t, ca, "PEM bundle that verifies client certificates"),
    SK_CFG_ENUM_E("client_auth", "optional", admin_client_auth_names, sk_daemon_admin_tls_cfg_t, client_auth,
                  "optional: /healthz, /readyz open, other routes need a client certificate; require: all"),
    SK_CFG_END_E};
static const sk_config_schema_t admin_tls_schema =
    SK_CFG_SCHEMA("tls", sk_daemon_admin_tls_cfg_t, admin_tls_entries);

static const sk_config_entry_t admin_entries[] = {
    SK_CFG_BOOL_E("enabled", "true", sk_daemon_admin_cfg_t, enabled, "run the admin listener"),
    SK_CFG_ADDR_E("listen", "127.0.0.1:9901", sk_daemon_admin_cfg_t, listen,
                  "admin listener address (/healthz, /readyz, /metrics); port 0 picks one"),
    SK_CFG_SECTION_E("tls", &admin_tls_schema, sk_daemon_admin_cfg_t, tls,
                     "HTTPS for the admin listener (docs/runtime/metrics-admin-store.md)"),
    SK_CFG_END_E};
static const sk_config_schema_t admin_schema = SK_CFG_SCHEMA("admin", sk_daemon_admin_cfg_t, admin_entries);

static const sk_config_entry_t log_entries[] = {
    SK_CFG_ENUM_E("level", "info", sk_log_level_names, sk_daemon_log_cfg_t, level, "lowest level written"),
    SK_CFG_ENUM_E("format", "text", sk_log_format_names, sk_daemon_log_cfg_t, format,
                  "text lines or JSON lines"),
    SK_CFG_STRING_E("file", "", sk_daemon_log_cfg_t, file, "log file (appended); empty = stderr"),
    SK_CFG_END_E};
static const sk_config_schema_t log_schema = SK_CFG_SCHEMA("log", sk_daemon_log_cfg_t, log_entries);

static const sk_config_entry_t common_entries[] = {
    SK_CFG_SECTION_E("admin", &admin_schema, sk_daemon_common_t, admin, "admin listener"),
    SK_CFG_SECTION_E("log", &log_schema, sk_daemon_common_t, log, "logging"),
    {.key = "drain_timeout",
     .type = SK_CFG_DURATION,
     .def = "10s",
     .offset = offsetof(sk_daemon_common_t, drain_timeout_ms),
     .help = "how long SIGTERM waits for in-flight work",
     .max = SK_DAEMON_MAX_DRAIN_MS},
    SK_CFG_STRING_E("pid_file", "", sk_daemon_common_t, pid_file, "write the process id here; empty = none"),
    SK_CFG_STRING_E("state_dir", "", sk_daemon_common_t, state_dir, "directory for the daemon's state; empty = none"),
    SK_CFG_SECTION_E("identity", &sk_ident_schema, sk_daemon_common_t, identity,
                     "certificate from skiff-control's CA, renewed at 2/3 of its lifetime (skiff/ident.h)"),
    SK_CFG_END_E};
const sk_config_schema_t sk_daemon_common_schema = SK_CFG_SCHEMA("common", sk_daemon_common_t, common_entries);

struct sk_daemon {
  const sk_daemon_desc_t *desc;
  uv_loop_t loop;
  sk_log_sink_t *sink;
  sk_logger_t *log;
  char *config_path;
  sk_daemon_common_t common;
  void *cfg;
  void *data;
  sk_metrics_t *metrics;
  sk_admin_t *admin;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t drain_timer, finish_timer;
  int flag_level, flag_format; /* -1 = from config */
  int ready, ever_ready, draining, finishing;
  int exit_code;
  int pid_written;
  int init_called;
  sk_ident_t *ident;
  int ident_borrowed; /* set by sk_daemon_set_ident: the daemon frees it */
  sk_gauge_t *g_ident_expiry;
  sk_counter_t *c_ident_ok, *c_ident_err;
};

uv_loop_t *sk_daemon_loop(sk_daemon_t *d) { return &d->loop; }
sk_logger_t *sk_daemon_log(sk_daemon_t *d) { return d->log; }
sk_logger_t *sk_daemon_logger(sk_daemon_t *d, const char *component) { return sk_logger_new(d->sink, component); }
void *sk_daemon_config(sk_daemon_t *d) { return d->cfg; }
const sk_daemon_common_t *sk_daemon_common(sk_daemon_t *d) { return &d->common; }
const sk_daemon_desc_t *sk_daemon_desc(sk_daemon_t *d) { return d->desc; }
const char *sk_daemon_config_path(sk_daemon_t *d) { return d->config_path; }
void sk_daemon_set_data(sk_daemon_t *d, void *data) { d->data = data; }
void *sk_daemon_get_data(sk_daemon_t *d) { return d->data; }
const char *sk_daemon_state_dir(sk_daemon_t *d) {
  return d->common.state_dir && d->common.state_dir[0] ? d->common.state_dir : NULL;
}
int sk_daemon_admin_port(sk_daemon_t *d) { return d->admin ? sk_admin_port(d->admin) : -1; }
sk_metrics_t *sk_daemon_metrics(sk_daemon_t *d) { return d->metrics; }
sk_admin_t *sk_daemon_admin(sk_daemon_t *d) { return d->admin; }
sk_ident_t *sk_daemon_ident(sk_daemon_t *d) { return d->ident; }
void sk_daemon_set_ident(sk_daemon_t *d, sk_ident_t *id) {
  if (d->ident && !d->ident_borrowed) return;
  d->ident = id;
  d->ident_borrowed = id != NULL;
}

/* The lifecycle's identity goes; a borrowed one only forgets the pointer
 * (its owner freed it in fini). */
static void drop_ident(sk_daemon_t *d) {
  if (!d->ident_borrowed) sk_ident_free(d->ident);
  d->ident = NULL;
  d->ident_borrowed = 0;
}
int sk_daemon_is_ready(sk_daemon_t *d) { return d->ready; }
int sk_daemon_is_draining(sk_daemon_t *d) { return d->draining; }

static void report_ready_fd(sk_daemon_t *d) {
  const char *s = getenv("SKIFF_READY_FD");
  if (!s || !*s) return;
  char *end;
  long fd = strtol(s, &end, 10);
  if (*end || fd < 0 || fd > 65535) {
    sk_log_kv(d->log, SK_LOG_WARN, "ignoring invalid SKIFF_READY_FD", "value", s, NULL);
    return;
  }
  static const char msg[] = "READY=1\n";
  ssize_t w;
  do {
    w = write((int)fd, msg, sizeof msg - 1);
  } while (w < 0 && errno == EINTR);
  if (w != (ssize_t)(sizeof msg - 1))
    sk_log_kv(d->log, SK_LOG_WARN, "cannot report readiness to SKIFF_READY_FD", "error", strerror(errno), NULL);
  if (fd > 2) close((int)fd);
  unsetenv("SKIFF_READY_FD");
}

void sk_daemon_set_ready(sk_daemon_t *d, int ready) {
  if (ready && d->draining) return;
  d->ready = !!ready;
  if (d->admin) sk_admin_set_ready(d->admin, d->ready);
  if (d->ready && !d->ever_ready) {
    d->ever_ready = 1;
    report_ready_fd(d);
    sk_log(d->log, SK_LOG_INFO, "ready");
  }
}

static void on_closed(uv_handle_t *h) {}

static void close_handle(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h)) uv_close(h, on_closed);
}

/* Runs from the loop (never inside desc->drain or a signal callback's
 * caller chain): fini, admin, our own handles. */
static void finish_cb(uv_timer_t *t) {
  sk_daemon_t *d = t->data;
  if (d->finishing) return;
  d->finishing = 1;
  uv_timer_stop(&d->drain_timer);
  if (d->desc->fini && d->init_called) d->desc->fini(d);
  drop_ident(d);
  sk_admin_free(d->admin);
  d->admin = NULL;
  close_handle((uv_handle_t *)&d->sig_term);
  close_handle((uv_handle_t *)&d->sig_int);
  close_handle((uv_handle_t *)&d->sig_hup);
  close_handle((uv_handle_t *)&d->drain_timer);
  close_handle((uv_handle_t *)&d->finish_timer);
  /* leave uv_run even if the daemon forgot a handle; the leftovers are
   * closed by sk_daemon_main */
  uv_stop(&d->loop);
}

static void close_walk_cb(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) {
    if (arg) (*(int *)arg)++;
    uv_close(h, on_closed);
  }
}

static void schedule_finish(sk_daemon_t *d) {
  if (d->finishing || uv_is_closing((uv_handle_t *)&d->finish_timer)) return;
  uv_timer_start(&d->finish_timer, finish_cb, 0, 0);
}

void sk_daemon_drained(sk_daemon_t *d) {
  if (!d->draining || d->finishing) return;
  sk_log(d->log, SK_LOG_INFO, "drained");
  uv_timer_stop(&d->drain_timer);
  schedule_finish(d);
}

static void drain_deadline_cb(uv_timer_t *t) {
  sk_daemon_t *d = t->data;
  sk_log_fields(d->log, SK_LOG_WARN, "drain deadline passed; stopping anyway",
                (sk_log_field_t[]){SK_LF_U("drain_timeout_ms", d->common.drain_timeout_ms)}, 1);
  d->exit_code = 1;
  schedule_finish(d);
}

static void begin_drain(sk_daemon_t *d, const char *why) {
  if (d->draining) return;
  d->draining = 1;
  d->ready = 0;
  if (d->admin) sk_admin_set_draining(d->admin);
  sk_log_fields(d->log, SK_LOG_INFO, "draining",
                (sk_log_field_t[]){SK_LF_S("reason", why), SK_LF_U("timeout_ms", d->common.drain_timeout_ms)}, 2);
  uv_timer_start(&d->drain_timer, drain_deadline_cb, d->common.drain_timeout_ms, 0);
  if (d->desc->drain && d->init_called)
    d->desc->drain(d);
  else
    sk_daemon_drained(d);
}

void sk_daemon_stop(sk_daemon_t *d, int exit_code) {
  if (exit_code > d->exit_code) d->exit_code = exit_code;
  begin_drain(d, "stop requested");
}

static int start_admin(sk_daemon_t *d);

static void run_init(sk_daemon_t *d) {
  d->init_called = 1;
  int rc = d->desc->init ? d->desc->init(d, d->cfg) : 0;
  if (rc < 0) {
    sk_log_kv(d->log, SK_LOG_ERROR, "init failed", "error", sk_strerror(rc), NULL);
    d->exit_code = 1;
    d->draining = 1;
    schedule_finish(d);
    return;
  }
  /* desc->own_identity: the identity came from init (sk_daemon_set_ident) */
  if (!d->admin && !d->draining && d->common.admin.enabled && d->common.admin.tls.identity) {
    if (!d->ident)
      sk_log(d->log, SK_LOG_ERROR, "admin.tls.identity: the daemon set up no identity of its own");
    if (!d->ident || start_admin(d) < 0) {
      d->exit_code = 1;
      d->draining = 1;
      schedule_finish(d);
    }
  }
}

/* Starts the admin listener (HTTPS when admin.tls asks for it). */
static int start_admin(sk_daemon_t *d) {
  const sk_daemon_admin_cfg_t *ac = &d->common.admin;
  char addr[SK_CFG_HOST_MAX + 16], err[512] = "";
  sk_tls_ctx_t *tls = NULL;
  int rc = 0;
  sk_config_format_addr(&ac->listen, addr, sizeof addr);
  if (ac->tls.identity || (ac->tls.cert && *ac->tls.cert)) {
    sk_tls_opts_t to = {.is_server = 1,
                        .cert_file = ac->tls.cert,
                        .key_file = ac->tls.key,
                        .ca_file = ac->tls.ca,
                        .verify = ac->tls.client_auth == 1 ? SK_TLS_VERIFY_REQUIRE : SK_TLS_VERIFY_OPTIONAL};
    if (ac->tls.identity) {
      to.cert_file = sk_ident_cert_path(d->ident);
      to.key_file = sk_ident_key_path(d->ident);
      to.ca_file = sk_ident_bundle_path(d->ident);
    }
    if (!to.ca_file || !*to.ca_file) {
      snprintf(err, sizeof err, "admin.tls.ca is required to verify client certificates");
      rc = SK_ECONFIG;
    } else {
      rc = sk_tls_ctx_new(&to, &tls, err, sizeof err);
    }
    if (rc < 0) {
      sk_log_kv(d->log, SK_LOG_ERROR, "cannot set up the admin listener's TLS", "addr", addr, "error", err, NULL);
      return rc;
    }
  }
  sk_admin_opts_t o = {.host = ac->listen.host, .port = ac->listen.port, .reg = d->metrics,
                       .daemon_name = d->desc->name, .tls = tls};
  rc = sk_admin_new_opts(&d->loop, &o, &d->admin);
  sk_tls_ctx_unref(tls);
  if (rc < 0) {
    sk_log_kv(d->log, SK_LOG_ERROR, "cannot start the admin listener", "addr", addr, "error", sk_strerror(rc), NULL);
    return rc;
  }
  sk_cfg_addr_t bound = ac->listen;
  bound.port = sk_admin_port(d->admin);
  sk_config_format_addr(&bound, addr, sizeof addr);
  sk_log_kv(d->log, SK_LOG_INFO, "admin listening", "addr", addr, "scheme", tls ? "https" : "http", NULL);
  if (d->ready) sk_admin_set_ready(d->admin, d->ready);
  return 0;
}

static void ident_event(sk_ident_t *id, int err, const char *msg, void *ud) {
  sk_daemon_t *d = ud;
  int64_t not_after = 0;
  if (sk_ident_current(id, NULL, 0, &not_after, NULL) == 0) sk_gauge_set(d->g_ident_expiry, (double)not_after);
  sk_counter_inc(err == 0 ? d->c_ident_ok : d->c_ident_err);
  if (err == 0)
    sk_log_kv(d->log, SK_LOG_INFO, "identity renewed", "detail", msg, NULL);
  else
    sk_log_kv(d->log, SK_LOG_WARN, "identity renewal failed", "error", msg, NULL);
}

static void ident_ready(sk_ident_t *id, void *ud) {
  sk_daemon_t *d = ud;
  char serial[80] = "";
  sk_ident_current(id, serial, sizeof serial, NULL, NULL);
  sk_log_kv(d->log, SK_LOG_INFO, "identity", "spiffe_id", sk_ident_spiffe_id(id), "cert", sk_ident_cert_path(id),
            "serial", serial, NULL);
  if (!d->admin && !d->draining && d->common.admin.enabled && start_admin(d) < 0) {
    d->exit_code = 1;
    d->draining = 1;
    schedule_finish(d);
    return;
  }
  if (!d->draining && !d->init_called) run_init(d);
}

/* 1: no identity configured; 0: started (init runs once it is ready);
 * negative: cannot. */
static int start_identity(sk_daemon_t *d) {
  sk_ident_cfg_t c = d->common.identity;
  char dir[4096], id[SK_IDENT_ID_MAX], err[512] = "";
  if (!c.control || !*c.control) return 1;
  if ((!c.dir || !*c.dir) && sk_daemon_state_dir(d)) {
    snprintf(dir, sizeof dir, "%s/identity", d->common.state_dir);
    c.dir = dir;
  }
  const char *name = d->desc->name;
  if (!strncmp(name, "skiff-", 6)) name += 6;
  sk_ident_opts_t o;
  int rc = sk_ident_opts_from_cfg(&c, name, &o, id, sizeof id, err, sizeof err);
  if (rc == 0) {
    static const char *const lbl[] = {"result"};
    sk_mfamily_t *fam = NULL;
    sk_metrics_gauge(d->metrics, "skiff_identity_not_after_seconds",
                     "Expiry (unix time) of the daemon's certificate from control's CA.", &d->g_ident_expiry);
    if (sk_metrics_counter_family(d->metrics, "skiff_identity_renewals_total",
                                  "Certificate issuance attempts from control's CA by result.", lbl, 1, &fam) >= 0) {
      sk_counter_with(fam, (const char *const[]){"ok"}, &d->c_ident_ok);
      sk_counter_with(fam, (const char *const[]){"error"}, &d->c_ident_err);
    }
    o.on_event = ident_event;
    o.ud = d;
    rc = sk_ident_new(&d->loop, &o, &d->ident, err, sizeof err);
  }
  if (rc < 0) {
    sk_log_kv(d->log, SK_LOG_ERROR, "cannot set up the identity", "error", err, NULL);
    return rc;
  }
  sk_ident_start(d->ident, ident_ready, d);
  if (!d->init_called)
    sk_log_kv(d->log, SK_LOG_INFO, "waiting for an identity from control", "spiffe_id", id, "control", c.control,
              NULL);
  return 0;
}

static void log_config_errors(sk_daemon_t *d, const sk_config_errors_t *errs, const char *what) {
  char line[1024];
  for (size_t i = 0; i < errs->n; i++) {
    sk_config_errors_format(errs, i, line, sizeof line);
    sk_log_kv(d->log, SK_LOG_ERROR, what, "error", line, NULL);
  }
}

static void common_free(sk_daemon_common_t *c) { sk_config_free(&sk_daemon_common_schema, c); }

static int load_config(const sk_daemon_desc_t *desc, const char *path, sk_daemon_common_t *common, void **cfg,
                       sk_config_errors_t *errs) {
  *cfg = desc->schema ? sk_xcalloc(1, desc->schema->size ? desc->schema->size : 1) : NULL;
  sk_config_part_t parts[2] = {{&sk_daemon_common_schema, common}, {desc->schema, *cfg}};
  size_t n = desc->schema ? 2 : 1;
  if (path) return sk_config_load_parts_file(parts, n, path, NULL, errs);
  int rc = 0;
  for (size_t i = 0; i < n; i++)
    if (sk_config_defaults(parts[i].schema, parts[i].obj, errs) < 0) rc = SK_ECONFIG;
  return rc;
}

static void cfg_free(const sk_daemon_desc_t *desc, void *cfg) {
  if (!cfg) return;
  if (desc->schema) sk_config_free(desc->schema, cfg);
  free(cfg);
}

static void apply_log_settings(sk_daemon_t *d) {
  sk_log_sink_set_level(d->sink, d->flag_level >= 0 ? d->flag_level : d->common.log.level);
  sk_log_sink_set_format(d->sink, d->flag_format >= 0 ? d->flag_format : d->common.log.format);
}

static int same_str(const char *a, const char *b) { return strcmp(a ? a : "", b ? b : "") == 0; }

static void reload(sk_daemon_t *d) {
  if (!d->config_path) {
    sk_log(d->log, SK_LOG_WARN, "SIGHUP: running without a config file; nothing to reload");
    return;
  }
  sk_log_sink_reopen(d->sink);
  sk_daemon_common_t nc;
  void *ncfg = NULL;
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  int rc = load_config(d->desc, d->config_path, &nc, &ncfg, &errs);
  if (rc < 0 || errs.n) {
    log_config_errors(d, &errs, "config reload failed; keeping the running config");
    goto drop;
  }
  if (!d->init_called) {
    /* still waiting for the identity: the daemon reads its config at init */
    sk_log(d->log, SK_LOG_WARN, "SIGHUP before the daemon started serving: restart it to apply config changes");
    goto drop;
  }
  if (d->desc->reload) {
    rc = d->desc->reload(d, ncfg);
    if (rc < 0) {
      sk_log_kv(d->log, SK_LOG_ERROR, "config reload refused; keeping the running config", "error", sk_strerror(rc),
                NULL);
      goto drop;
    }
    cfg_free(d->desc, d->cfg);
    d->cfg = ncfg;
    ncfg = NULL;
  } else if (d->desc->schema) {
    sk_log(d->log, SK_LOG_WARN, "this daemon cannot reload its own keys; only log settings were applied");
  }
  /* common keys: log level/format and drain_timeout apply now; the rest
   * needs a restart */
  if (nc.admin.enabled != d->common.admin.enabled || nc.admin.listen.port != d->common.admin.listen.port ||
      strcmp(nc.admin.listen.host, d->common.admin.listen.host) != 0 || !same_str(nc.pid_file, d->common.pid_file) ||
      nc.admin.tls.identity != d->common.admin.tls.identity || nc.admin.tls.client_auth != d->common.admin.tls.client_auth ||
      !same_str(nc.admin.tls.cert, d->common.admin.tls.cert) || !same_str(nc.admin.tls.key, d->common.admin.tls.key) ||
      !same_str(nc.admin.tls.ca, d->common.admin.tls.ca) ||
      !same_str(nc.state_dir, d->common.state_dir) || !same_str(nc.log.file, d->common.log.file) ||
      !same_str(nc.identity.control, d->common.identity.control) || !same_str(nc.identity.dir, d->common.identity.dir) ||
      !same_str(nc.identity.name, d->common.identity.name))
    sk_log(d->log, SK_LOG_WARN, "admin, log.file, pid_file, state_dir and identity changes apply after a restart");
  d->common.log.level = nc.log.level;
  d->common.log.format = nc.log.format;
  d->common.drain_timeout_ms = nc.drain_timeout_ms;
  apply_log_settings(d);
  sk_log_kv(d->log, SK_LOG_INFO, "config reloaded", "config", d->config_path, NULL);
drop:
  common_free(&nc);
  cfg_free(d->desc, ncfg);
  sk_config_errors_done(&errs);
}

static void on_signal(uv_signal_t *h, int signum) {
  sk_daemon_t *d = h->data;
  if (signum == SIGHUP) {
    sk_log(d->log, SK_LOG_INFO, "SIGHUP: reloading config");
    reload(d);
    return;
  }
  if (d->draining) {
    sk_log(d->log, SK_LOG_WARN, "second stop signal; stopping now");
    d->exit_code = 1;
    schedule_finish(d);
    return;
  }
  begin_drain(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static int write_pid_file(const char *path) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return SK_ENAMETOOLONG;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sk_err_from_errno(errno);
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  int rc = 0;
  if (write(fd, buf, (size_t)n) != n) rc = sk_err_from_errno(errno ? errno : EIO);
  if (close(fd) < 0 && rc == 0) rc = sk_err_from_errno(errno);
  if (rc == 0 && rename(tmp, path) < 0) rc = sk_err_from_errno(errno);
  if (rc < 0) unlink(tmp);
  return rc;
}

static int mkdir_p(const char *path) {
  char p[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof p) return SK_ENAMETOOLONG;
  memcpy(p, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] == '/' || p[i] == 0) {
      char c = p[i];
      p[i] = 0;
      if (mkdir(p, 0750) < 0 && errno != EEXIST) return sk_err_from_errno(errno);
      p[i] = c;
    }
  }
  struct stat st;
  if (stat(path, &st) < 0) return sk_err_from_errno(errno);
  return S_ISDIR(st.st_mode) ? 0 : SK_EEXIST;
}

void sk_daemon_usage(const sk_daemon_desc_t *desc, FILE *out) {
  fprintf(out,
          "Usage: %s [--config FILE] [--check] [--log-level LEVEL] [--log-format text|json]\n"
          "       %s --version | --help\n",
          desc->name, desc->name);
  if (desc->summary) fprintf(out, "\n%s\n", desc->summary);
  fprintf(out, "\nOptions:\n"
               "  -c, --config FILE        YAML configuration file (defaults apply without one)\n"
               "      --check              validate the configuration, print every error, exit\n"
               "      --log-level LEVEL    trace, debug, info, warn or error (overrides log.level)\n"
               "      --log-format FORMAT  text or json (overrides log.format)\n"
               "  -V, --version            print the version\n"
               "  -h, --help               this text\n"
               "\nSignals: SIGTERM/SIGINT drain and stop (drain_timeout), SIGHUP reloads the config.\n"
               "Readiness: /readyz on the admin listener, READY=1 on $SKIFF_READY_FD, the log line \"ready\".\n"
               "\nConfiguration keys (key, type, default, description):\n");
  sk_buf_t b;
  sk_buf_init(&b);
  sk_config_schema_doc(&sk_daemon_common_schema, NULL, &b);
  if (desc->schema) sk_config_schema_doc(desc->schema, NULL, &b);
  fwrite(b.data ? b.data : "", 1, b.len, out);
  sk_buf_done(&b);
}

enum { OPT_CHECK = 256, OPT_LOG_LEVEL, OPT_LOG_FORMAT };

int sk_daemon_main(const sk_daemon_desc_t *desc, int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"check", no_argument, NULL, OPT_CHECK},
                                       {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
                                       {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
                                       {"version", no_argument, NULL, 'V'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *config = NULL;
  int check = 0, level = -1, format = -1, c;
  optind = 1;
  opterr = 1;
  while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
    switch (c) {
    case 'c': config = optarg; break;
    case OPT_CHECK: check = 1; break;
    case OPT_LOG_LEVEL:
      level = sk_log_level_parse(optarg);
      if (level < 0) {
        fprintf(stderr, "%s: unknown log level '%s' (trace, debug, info, warn, error, off)\n", desc->name, optarg);
        return 2;
      }
      break;
    case OPT_LOG_FORMAT:
      format = sk_log_format_parse(optarg);
      if (format < 0) {
        fprintf(stderr, "%s: unknown log format '%s' (text, json)\n", desc->name, optarg);
        return 2;
      }
      break;
    case 'V': printf("%s %s\n", desc->name, desc->version ? desc->version : "unknown"); return 0;
    case 'h': sk_daemon_usage(desc, stdout); return 0;
    default: fprintf(stderr, "Try '%s --help'.\n", desc->name); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", desc->name, argv[optind], desc->name);
    return 2;
  }
  if (check) {
    if (!config) {
      fprintf(stderr, "%s: --check needs --config FILE\n", desc->name);
      return 2;
    }
    const sk_config_schema_t *schemas[2] = {&sk_daemon_common_schema, desc->schema};
    return sk_config_check_file(schemas, desc->schema ? 2 : 1, config, NULL, stdout);
  }

  sk_daemon_t *d = sk_xcalloc(1, sizeof(*d));
  d->desc = desc;
  d->flag_level = level;
  d->flag_format = format;
  d->config_path = config ? sk_xstrdup(config) : NULL;
  int rc, loop_ok = 0;
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  rc = load_config(desc, config, &d->common, &d->cfg, &errs);
  if (rc < 0 || errs.n) {
    sk_config_errors_print(&errs, stderr);
    fprintf(stderr, "%s: invalid configuration (%zu error%s)\n", desc->name, errs.n, errs.n == 1 ? "" : "s");
    d->exit_code = 1;
    goto out;
  }
  rc = sk_log_sink_new(d->common.log.file, SK_LOG_INFO, SK_LOG_TEXT, &d->sink);
  if (rc < 0) {
    fprintf(stderr, "%s: cannot open log file '%s': %s\n", desc->name, d->common.log.file, sk_strerror(rc));
    d->exit_code = 1;
    goto out;
  }
  apply_log_settings(d);
  d->log = sk_logger_new(d->sink, desc->name);
  signal(SIGPIPE, SIG_IGN);

  rc = uv_loop_init(&d->loop);
  if (rc < 0) {
    sk_log_kv(d->log, SK_LOG_ERROR, "cannot create the event loop", "error", uv_strerror(rc), NULL);
    d->exit_code = 1;
    goto out;
  }
  loop_ok = 1;
  sk_log_kv(d->log, SK_LOG_INFO, "starting", "version", desc->version ? desc->version : "unknown", "config",
            config ? config : "(defaults)", NULL);

  if (d->common.pid_file && d->common.pid_file[0]) {
    rc = write_pid_file(d->common.pid_file);
    if (rc < 0) {
      sk_log_kv(d->log, SK_LOG_ERROR, "cannot write pid file", "path", d->common.pid_file, "error", sk_strerror(rc),
                NULL);
      d->exit_code = 1;
      goto out;
    }
    d->pid_written = 1;
  }
  if (sk_daemon_state_dir(d)) {
    rc = mkdir_p(d->common.state_dir);
    if (rc < 0) {
      sk_log_kv(d->log, SK_LOG_ERROR, "cannot create state_dir", "path", d->common.state_dir, "error",
                sk_strerror(rc), NULL);
      d->exit_code = 1;
      goto out;
    }
  }

  rc = sk_metrics_new(&d->metrics);
  if (rc < 0) {
    sk_log_kv(d->log, SK_LOG_ERROR, "cannot create the metrics registry", "error", sk_strerror(rc), NULL);
    d->exit_code = 1;
    goto out;
  }
  if (d->common.admin.enabled && d->common.admin.tls.identity && !desc->own_identity &&
      (!d->common.identity.control || !*d->common.identity.control)) {
    sk_log(d->log, SK_LOG_ERROR, "admin.tls.identity needs identity.control (the daemon has no identity)");
    d->exit_code = 1;
    goto out;
  }
  /* with admin.tls.identity the listener starts once the identity is in
   * place (ident_ready) */
  if (d->common.admin.enabled && !d->common.admin.tls.identity && start_admin(d) < 0) {
    d->exit_code = 1;
    goto out;
  }

  uv_signal_init(&d->loop, &d->sig_term);
  uv_signal_init(&d->loop, &d->sig_int);
  uv_signal_init(&d->loop, &d->sig_hup);
  uv_timer_init(&d->loop, &d->drain_timer);
  uv_timer_init(&d->loop, &d->finish_timer);
  d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
  d->drain_timer.data = d->finish_timer.data = d;
  uv_signal_start(&d->sig_term, on_signal, SIGTERM);
  uv_signal_start(&d->sig_int, on_signal, SIGINT);
  uv_signal_start(&d->sig_hup, on_signal, SIGHUP);

  rc = start_identity(d);
  if (rc < 0) {
    d->exit_code = 1;
    d->draining = 1;
    schedule_finish(d);
  } else if (rc > 0) {
    run_init(d);
  }
  uv_run(&d->loop, UV_RUN_DEFAULT);

out:
  if (loop_ok) {
    if (!d->finishing) {
      /* reached only on early errors: nothing of the daemon's runs yet */
      if (d->init_called && desc->fini) desc->fini(d);
      drop_ident(d);
      sk_admin_free(d->admin);
      d->admin = NULL;
      uv_walk(&d->loop, close_walk_cb, NULL);
    } else {
      int left = 0;
      uv_walk(&d->loop, close_walk_cb, &left);
      if (left)
        sk_log_fields(d->log, SK_LOG_DEBUG, "closed handles left open after fini",
                      (sk_log_field_t[]){SK_LF_I("count", left)}, 1);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d->loop) != 0) sk_log(d->log, SK_LOG_WARN, "event loop did not close cleanly");
  }
  if (d->pid_written) unlink(d->common.pid_file);
  if (d->log && d->exit_code == 0) sk_log(d->log, SK_LOG_INFO, "stopped");
  if (d->log && d->exit_code != 0)
    sk_log_fields(d->log, SK_LOG_WARN, "stopped", (sk_log_field_t[]){SK_LF_I("exit_code", d->exit_code)}, 1);
  int code = d->exit_code;
  sk_metrics_free(d->metrics);
  sk_logger_free(d->log);
  sk_log_sink_free(d->sink);
  cfg_free(desc, d->cfg);
  common_free(&d->common);
  sk_config_errors_done(&errs);
  free(d->config_path);
  free(d);
  return code;
}
