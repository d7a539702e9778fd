/* ctl_push.h - config push from skiff-control to skiff-proxy (prefix
 * ctl_push_).
 *
 * Control compiles every Service and Route into one proxy snapshot
 * (ctl_compile_proxy). Proxies hold a long-lived stream
 *
 *   GET /api/v1/proxyconfig?watch=true&node=<id>
 *
 * answered with newline-delimited JSON, one object per line:
 *
 *   {"type":"SNAPSHOT","version":N,"config":{clusters,routes},"warnings":[..]}
 *   {"type":"HEARTBEAT","version":N}
 *
 * The current snapshot goes first; a new one only when the compiled config
 * changed (store changes are coalesced for coalesce_ms first); heartbeats
 * every heartbeat_ms. The version is the store's resourceVersion at the
 * compile that changed the config, so it only grows, across restarts too.
 * The proxy answers each snapshot with
 *
 *   POST /api/v1/proxies/<id>/ack   {"version":N,"error":null}      (ACK)
 *                                   {"version":N,"error":"why"}     (NACK)
 *
 * and GET /api/v1/proxies lists every proxy seen since start (connected or
 * not): node, identity, address, connected, connectedSince,
 * lastSentVersion, ackedVersion, ackedAt, lastNack {version, error, at}.
 *
 * Authorization (ctl_push_http_route): the stream needs "get" on the
 * pseudo-kind ProxyConfig (viewer and up), the list "list" on Proxy
 * (viewer and up). A proxy identity is an mTLS SPIFFE ID
 * ".../proxy/<name>" or a token named "proxy:<name>"; it may open the
 * stream and ack for node <name> only. Any other principal needs the
 * operator role or above to open a node's stream or ack for it (tools,
 * tests, the local supervisor's bootstrap token). */
#ifndef SKIFF_CTL_PUSH_H
#define SKIFF_CTL_PUSH_H

#include <stdint.h>
#include <uv.h>

#include "control.h"
#include "ctl_audit.h"
#include "ctl_auth.h"
#include "skiff/http.h"
#include "skiff/log.h"
#include "skiff/metrics.h"

typedef struct ctl_push ctl_push_t;

typedef struct ctl_push_opts {
  ctl_store_t *store;
  sk_metrics_t *metrics;  /* may be NULL */
  sk_logger_t *log;       /* may be NULL */
  uint64_t coalesce_ms;   /* default 20 */
  uint64_t heartbeat_ms;  /* default 15000 */
  size_t max_streams;     /* default 10000 */
  size_t max_nodes;       /* remembered proxies, default 10000 */
} ctl_push_opts_t;

int ctl_push_new(uv_loop_t *loop, const ctl_push_opts_t *o, ctl_push_t **out);
/* Ends the streams (the proxies reconnect elsewhere or later). */
void ctl_push_end_streams(ctl_push_t *p);
void ctl_push_free(ctl_push_t *p); /* accepts NULL */

/* A store change: recompile after the coalescing delay. */
void ctl_push_changed(ctl_push_t *p);
/* Current snapshot version (0 before the first compile). */
int64_t ctl_push_version(const ctl_push_t *p);
size_t ctl_push_stream_count(const ctl_push_t *p);

/* Handles /api/v1/proxyconfig?watch=..., /api/v1/proxies and
 * /api/v1/proxies/<id>/ack. Returns 1 when it answered (or took) req,
 * 0 when the path is not its own. auth NULL = no authentication. */
int ctl_push_http_route(ctl_push_t *p, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req);

/* Decoding of the ACK body (outside input): {"version":N,"error":null|".."}.
 * *err_out is NULL for an ACK, else a string in pool. Returns 0, or
 * SK_EINVAL with the reason in msg. */
int ctl_push_parse_ack(const char *body, size_t len, sk_pool_t *pool, int64_t *version,
                       const char **err_out, char *msg, size_t msglen);

#define CTL_PUSH_MAX_ERROR 4096 /* bytes of NACK error kept */
#define CTL_PUSH_NODE_MAX 128
#define CTL_PUSH_MAX_QUEUED (1024u * 1024u) /* unsent bytes (plus one snapshot) before a stream is ended */

/* 1 if s is a valid node id: 1..128 of [A-Za-z0-9._-]. */
int ctl_push_valid_node(const char *s);

#endif
