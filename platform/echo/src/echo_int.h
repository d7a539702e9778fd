/* echo_int.h - skiff-echo, the demo upstream (prefix echo_).
 *
 * An HTTP/1.1 + h2c server that reports what it received, with injected
 * latency and errors for exercising the proxy, canaries and SLOs. The logic
 * is a plain object on a loop (echo_app_t) so tests run it in-process; the
 * daemon descriptor (echo_daemon_desc) wires it to sk_daemon_main. */
#ifndef SKIFF_ECHO_INT_H
#define SKIFF_ECHO_INT_H

#include <stdint.h>
#include <uv.h>

#include "skiff/config.h"
#include "skiff/daemon.h"
#include "skiff/http.h"
#include "skiff/log.h"
#include "skiff/metrics.h"

#define ECHO_MAX_DELAY_MS 60000 /* /delay/<d> and ?latency= are capped here */

typedef struct echo_config {
  sk_cfg_addr_t listen;
  char *name;             /* reported as "name" */
  char *version;          /* x-skiff-version and "version" */
  char *message;
  uint64_t latency_ms;    /* added to every response */
  uint64_t latency_jitter_ms; /* plus uniform [0, jitter] */
  double error_rate;      /* 0..1: share of requests answered with error_status */
  int error_status;
  uint64_t max_body;      /* request body limit in bytes */
  bool query_overrides;   /* honour ?latency= and ?error_rate= */
} echo_config_t;

extern const sk_config_schema_t echo_config_schema;
extern const sk_daemon_desc_t echo_daemon_desc;

typedef struct echo_app echo_app_t;

/* Starts the listener (cfg->listen; port 0 = ephemeral). cfg must outlive
 * the app or be replaced with echo_app_set_config. reg and log may be NULL. */
int echo_app_new(uv_loop_t *loop, const echo_config_t *cfg, sk_metrics_t *reg, sk_logger_t *log,
                 echo_app_t **out);
int echo_app_port(const echo_app_t *a);
/* Switches to a new config (version, message, latency, errors apply to new
 * requests at once; listen and max_body need a restart). */
void echo_app_set_config(echo_app_t *a, const echo_config_t *cfg);
/* Stops accepting, lets in-flight requests finish, then calls cb. */
void echo_app_drain(echo_app_t *a, void (*cb)(void *ud), void *ud);
/* Closes everything; memory goes once the loop has run the closes. */
void echo_app_free(echo_app_t *a);

#endif
