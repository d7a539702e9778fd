/* px_push.h - skiff-proxy following skiff-control (prefix px_push_).
 *
 * With a `control:` section the proxy keeps a long-lived stream to
 * control (GET /api/v1/proxyconfig?watch=true&node=<node>, see
 * platform/control/src/ctl_push.h), receives versioned snapshots of
 * {clusters, routes}, has each one applied by the daemon (built with
 * px_config_build next to the local listeners, swapped in atomically) and
 * answers ACK, or NACK with the build errors while the old config keeps
 * serving. When the stream fails it reconnects with exponential backoff
 * and full jitter; the proxy serves its last good config meanwhile. The
 * last good snapshot can be kept in a file (control.cache) so that a
 * restart while control is away still routes.
 *
 *   control:
 *     url: http://127.0.0.1:7400        # or https://
 *     node: edge-1                      # default: the host name
 *     token_file: path                  # bearer token, re-read at every connect
 *     ca: path                          # https: trust bundle (default: system)
 *     cert: path                        # https: client certificate (mTLS)
 *     key: path
 *     http2: false                      # h2 (ALPN on https, prior knowledge on http)
 *     backoff: {initial: 200ms, max: 30s}
 *     idle_timeout: 90s                 # no line (snapshot or heartbeat) for this long: reconnect
 *     cache: path                       # last good snapshot, "" = none
 */
#ifndef SKIFF_PX_PUSH_H
#define SKIFF_PX_PUSH_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "skiff/config.h"
#include "skiff/log.h"
#include "skiff/metrics.h"

typedef struct px_push_opts {
  char *url;
  char *host;
  int port;
  int tls;
  char *node;
  char *token_file;
  char *ca, *cert, *key;
  int http2;
  uint64_t backoff_initial_ms, backoff_max_ms;
  uint64_t idle_timeout_ms;
  char *cache;
} px_push_opts_t;

/* Reads the control section (a JSON object as the config loader keeps it;
 * where gives line:col). Every problem goes to errs as
 * "control.<field>: ...". Returns 0 or SK_ECONFIG. */
int px_push_opts_parse(const json_t *v, const json_t *where, const char *file, px_push_opts_t *o,
                       sk_config_errors_t *errs);
void px_push_opts_done(px_push_opts_t *o);

/* One decoded line of the stream. */
typedef enum px_push_msg_type { PX_PUSH_SNAPSHOT = 1, PX_PUSH_HEARTBEAT = 2 } px_push_msg_type_t;
typedef struct px_push_msg {
  int type;
  int64_t version;
  json_t *config; /* SNAPSHOT: {clusters, routes} (a new reference) */
} px_push_msg_t;

/* Decodes one line (outside input, bounded: PX_PUSH_MAX_LINE bytes, depth
 * 32). 0 and *m filled (the caller json_decref()s m->config), or SK_EPARSE
 * / SK_EINVAL with the reason in err. Unknown message types are SK_EINVAL. */
#define PX_PUSH_MAX_LINE (16u << 20)
int px_push_decode(const char *line, size_t len, px_push_msg_t *m, char *err, size_t errlen);

/* Applies a snapshot's config: 0 when swapped in, else negative with the
 * reason (sent as the NACK's error) in err. */
typedef int (*px_push_apply_fn)(const json_t *config, int64_t version, char *err, size_t errlen, void *ud);

typedef struct px_push px_push_t;

int px_push_new(uv_loop_t *loop, const px_push_opts_t *o, sk_metrics_t *metrics, sk_logger_t *log,
                px_push_apply_fn apply, void *ud, px_push_t **out);
/* Starts (or restarts) the stream now. */
void px_push_start(px_push_t *p);
void px_push_free(px_push_t *p); /* accepts NULL; ends the stream */

int64_t px_push_version(const px_push_t *p); /* last applied control version, 0 = none */
/* The daemon already runs this version (from the cache). */
void px_push_set_applied(px_push_t *p, int64_t version);
int px_push_connected(const px_push_t *p);

/* The cached snapshot at o->cache: 0 with *config (new reference) and
 * *version, SK_ENOTFOUND when there is none, else an error in err. */
int px_push_cache_load(const char *path, json_t **config, int64_t *version, char *err, size_t errlen);

#endif
