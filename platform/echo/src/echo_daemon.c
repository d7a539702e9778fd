/* skiff-echo: config schema and the daemon lifecycle hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "echo_int.h"
#include "skiff/err.h"
#include "skiff/mem.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

/* Goes into a response header: visible ASCII and spaces only. */
static int check_label(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  if (!s) return 0;
  size_t n = strlen(s);
  if (n > 128) {
    snprintf(msg, msglen, "at most 128 characters");
    return SK_EINVAL;
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) {
      snprintf(msg, msglen, "printable ASCII only");
      return SK_EINVAL;
    }
  return 0;
}

static int check_rate(const void *field, char *msg, size_t msglen) {
  double r = *(const double *)field;
  if (!(r >= 0.0 && r <= 1.0)) {
    snprintf(msg, msglen, "must be between 0 and 1");
    return SK_ERANGE;
  }
  return 0;
}

static int check_delay(const void *field, char *msg, size_t msglen) {
  if (*(const uint64_t *)field > ECHO_MAX_DELAY_MS) {
    snprintf(msg, msglen, "at most 60s");
    return SK_ERANGE;
  }
  return 0;
}

static int check_body(const void *field, char *msg, size_t msglen) {
  uint64_t v = *(const uint64_t *)field;
  if (v < 1 || v > (64u << 20)) {
    snprintf(msg, msglen, "between 1 byte and 64MiB");
    return SK_ERANGE;
  }
  return 0;
}

static const sk_config_entry_t echo_entries[] = {
    SK_CFG_ADDR_E("listen", "127.0.0.1:8081", echo_config_t, listen, "HTTP/1.1 and h2c listener"),
    {SK_CFG_E_("name", SK_CFG_STRING, "skiff-echo", echo_config_t, name, "name reported by GET /"),
     .validate = check_label},
    {SK_CFG_E_("version", SK_CFG_STRING, "v1", echo_config_t, version,
               "version label: x-skiff-version header and GET / (reloadable)"),
     .validate = check_label},
    SK_CFG_STRING_E("message", "greetings from skiff-echo", echo_config_t, message,
                    "message reported by GET / (reloadable)"),
    {SK_CFG_E_("latency", SK_CFG_DURATION, "0", echo_config_t, latency_ms,
               "added to every response, on a timer (reloadable)"),
     .validate = check_delay},
    {SK_CFG_E_("latency_jitter", SK_CFG_DURATION, "0", echo_config_t, latency_jitter_ms,
               "plus a uniform random extra up to this much (reloadable)"),
     .validate = check_delay},
    {SK_CFG_E_("error_rate", SK_CFG_DOUBLE, "0", echo_config_t, error_rate,
               "share of requests answered with error_status, 0..1 (reloadable)"),
     .validate = check_rate},
    SK_CFG_INT_E("error_status", "503", 400, 599, echo_config_t, error_status,
                 "status of injected errors (reloadable)"),
    {SK_CFG_E_("max_body", SK_CFG_SIZE, "1MiB", echo_config_t, max_body, "request body limit"),
     .validate = check_body},
    SK_CFG_BOOL_E("query_overrides", "true", echo_config_t, query_overrides,
                  "honour ?latency=<duration> and ?error_rate=<0..1> on any request"),
    SK_CFG_END_E};

const sk_config_schema_t echo_config_schema = SK_CFG_SCHEMA("echo", echo_config_t, echo_entries);

static int echo_init(sk_daemon_t *d, void *cfgp) {
  echo_config_t *cfg = cfgp;
  echo_app_t *a = NULL;
  int rc = echo_app_new(sk_daemon_loop(d), cfg, sk_daemon_metrics(d), sk_daemon_log(d), &a);
  if (rc < 0) {
    char addr[300];
    sk_config_format_addr(&cfg->listen, addr, sizeof addr);
    sk_log_error(sk_daemon_log(d), "cannot listen on %s: %s", addr, sk_strerror(rc));
    return rc;
  }
  sk_daemon_set_data(d, a);
  char addr[300];
  sk_cfg_addr_t shown = cfg->listen;
  shown.port = echo_app_port(a);
  sk_config_format_addr(&shown, addr, sizeof addr);
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "serving", "addr", addr, "version", cfg->version, NULL);
  sk_daemon_set_ready(d, 1);
  return 0;
}

static int echo_reload(sk_daemon_t *d, void *new_cfgp) {
  echo_app_t *a = sk_daemon_get_data(d);
  const echo_config_t *old = sk_daemon_config(d);
  echo_config_t *cfg = new_cfgp;
  if (old && (strcmp(old->listen.host, cfg->listen.host) || old->listen.port != cfg->listen.port))
    sk_log_warn(sk_daemon_log(d), "listen changed: takes effect after a restart");
  if (old && old->max_body != cfg->max_body)
    sk_log_warn(sk_daemon_log(d), "max_body changed: takes effect after a restart");
  if (a) echo_app_set_config(a, cfg);
  char lat[32];
  snprintf(lat, sizeof lat, "%llums", (unsigned long long)cfg->latency_ms);
  char rate[32];
  snprintf(rate, sizeof rate, "%g", cfg->error_rate);
  sk_log_kv(sk_daemon_log(d), SK_LOG_INFO, "reloaded", "version", cfg->version, "latency", lat,
            "error_rate", rate, NULL);
  return 0;
}

static void drained_cb(void *ud) { sk_daemon_drained(ud); }

static void echo_drain(sk_daemon_t *d) {
  echo_app_t *a = sk_daemon_get_data(d);
  if (!a) {
    sk_daemon_drained(d);
    return;
  }
  echo_app_drain(a, drained_cb, d);
}

static void echo_fini(sk_daemon_t *d) {
  echo_app_free(sk_daemon_get_data(d));
  sk_daemon_set_data(d, NULL);
}

const sk_daemon_desc_t echo_daemon_desc = {
    .name = "skiff-echo",
    .version = SKIFF_VERSION,
    .summary = "demo upstream: echoes requests, with injectable latency and errors",
    .schema = &echo_config_schema,
    .init = echo_init,
    .reload = echo_reload,
    .drain = echo_drain,
    .fini = echo_fini,
};
