/* px_int.h - skiff-proxy internals shared by its source files (prefix px_).
 *
 * Threads: the daemon's main loop (admin, signals, reload) plus N workers,
 * each with its own uv loop, its own copy of every listener (SO_REUSEPORT)
 * and its own upstream connection pools. The active px_config_t is swapped
 * under px_proxy.mu; a worker picks it up on an async wakeup and builds a
 * px_gen_t (its per-worker view: cluster pools, limiters, budgets). A
 * request holds its gen until it ends, so in-flight requests finish on the
 * config they started with. */
#ifndef SKIFF_PX_INT_H
#define SKIFF_PX_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "px_config.h"
#include "px_resil.h"
#include "skiff/daemon.h"
#include "skiff/http.h"
#include "skiff/log.h"
#include "skiff/metrics.h"
#include "skiff/net.h"
#include "skiff/trace.h"

#define PX_MAX_WORKERS 64

typedef struct px_proxy px_proxy_t;
typedef struct px_worker px_worker_t;
typedef struct px_gen px_gen_t;

/* ---- route matching and header handling (pure; fuzzed) ---- */

typedef struct px_match_req {
  const char *method;
  const char *authority; /* may be NULL */
  const char *path;
  const char *query; /* may be NULL */
  const sk_http_headers_t *headers;
} px_match_req_t;

/* First route (in the listener's order, else the config's) whose every
 * condition holds, or NULL. */
const px_route_t *px_route_match(const px_config_t *c, const px_listener_t *l, const px_match_req_t *r);
int px_route_matches(const px_route_t *rt, const px_match_req_t *r);
/* Value of a query parameter (raw, not percent-decoded) into out; 1 when
 * present, 0 when not. Values longer than outlen-1 are cut. */
int px_query_get(const char *q, const char *name, char *out, size_t outlen);

/* Hop-by-hop (RFC 9110 7.6.1) or named in the Connection header list. */
int px_hdr_is_hop(const char *name, const char *connection);

typedef struct px_trace {
  char trace_id[33];
  char parent_id[17]; /* the span id we send upstream */
  char flags[3];
} px_trace_t;

/* Builds the upstream request headers into out (pool memory): hop-by-hop
 * and route-removed headers dropped, host kept, x-forwarded-for appended,
 * x-forwarded-proto set, x-request-id kept or generated (request_id gets
 * it), traceparent continued or started (trace gets it), route additions
 * set. Returns the count. */
size_t px_upstream_headers(const sk_http_req_t *req, const px_hdr_ops_t *ops, px_rng_t *rng, sk_pool_t *pool,
                           sk_http_header_t **out, const char **request_id, px_trace_t *trace);
/* Response headers for the client: hop-by-hop dropped, route ops applied. */
size_t px_downstream_headers(const sk_http_headers_t *in, const px_hdr_ops_t *ops, sk_pool_t *pool,
                             sk_http_header_t **out);
/* Path after rewrite (pool memory), query kept. */
const char *px_rewrite_target(const px_route_t *rt, const sk_http_req_t *req, sk_pool_t *pool);
void px_hex_random(px_rng_t *rng, char *out, size_t nhex);

/* ---- shared endpoint stats (for /clusters; atomics, all workers) ---- */

typedef struct px_ep_stats {
  char cluster[129];
  char addr[300];
  _Atomic uint32_t active;     /* requests in flight, all workers */
  _Atomic uint64_t requests;
  _Atomic uint32_t ejected;    /* workers that have it ejected */
  _Atomic uint32_t unhealthy;  /* workers whose health check fails it */
  _Atomic uint64_t ejections;
} px_ep_stats_t;

/* ---- per-worker upstream state ---- */

typedef struct px_ep {
  px_worker_t *w;
  char *key; /* cluster|host:port|proto|tls|timeouts: same key = same pool across reloads */
  sk_http_client_t *client;
  uint32_t active;
  int refs;
  int ejected, unhealthy;
  px_ep_stats_t *stats;
  sk_counter_t *m_rq[6]; /* upstream_rq_total{class}: 1xx..5xx, error */
  struct px_ep *next;
} px_ep_t;

typedef struct px_wcluster {
  const px_cluster_t *cfg;
  px_ep_t **eps;
  size_t n;
  uint32_t rr;
  px_outlier_t outlier;
  px_breaker_t breaker;
  px_hc_runner_t *hc;
  sk_counter_t *m_requests[7]; /* requests_total per class for "no route" use */
  sk_gauge_t *m_breaker_open[PX_BRK_NKINDS]; /* circuit_open{cluster,kind} */
  unsigned brk_open;                         /* bit per kind: counted as open in the gauge */
  sk_counter_t *m_ejections;
  sk_counter_t *m_retries;
} px_wcluster_t;

typedef struct px_wroute {
  px_ratelimit_t rl;
  px_retry_budget_t budget;
} px_wroute_t;

struct px_gen {
  px_worker_t *w;
  px_config_t *cfg;
  int refs;
  px_wcluster_t *clusters;
  px_wroute_t *routes;
};

typedef struct px_wlistener {
  px_worker_t *w;
  char *name;
  char *sig;
  int idx; /* into the current gen's cfg->listeners */
  int proto;
  sk_http_server_t *srv;
  sk_listener_t *tcp;
  int port;
  struct px_wlistener *next;
} px_wlistener_t;

typedef struct px_txn px_txn_t;
typedef struct px_try px_try_t;

struct px_worker {
  px_proxy_t *p;
  int id;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wake;
  uv_sem_t started;
  int start_rc;
  atomic_int want_swap, want_drain, want_stop;
  px_gen_t *gen;
  px_wlistener_t *listeners;
  px_ep_t *eps;
  px_rng_t rng;
  px_txn_t *free_txns, *all_txns;
  px_try_t *free_tries, *all_tries;
  size_t live_txns;
  size_t tcp_conns;
  int draining, drained_reported;
  int in_upstream_cb;
  int access_fd;
};

/* ---- the proxy ---- */

typedef struct px_opts {
  int workers;                /* default 1 */
  sk_metrics_t *metrics;      /* may be NULL */
  sk_logger_t *log;           /* may be NULL */
  sk_tracer_t *tracer;        /* may be NULL (tracing off); owned by the caller, outlives the proxy */
} px_opts_t;

typedef struct px_port {
  char sig[600];
  int port;
} px_port_t;

struct px_proxy {
  uv_loop_t *main_loop;
  px_opts_t o;
  uv_mutex_t mu;
  px_config_t *cfg; /* current; under mu */
  uint64_t version;
  px_worker_t *workers;
  int nworkers;
  uv_async_t drained_async;
  int drained_async_init;
  atomic_int drained_workers;
  void (*drain_cb)(void *ud);
  void *drain_ud;
  px_port_t ports[PX_MAX_LISTENERS * 4];
  size_t nports;
  px_ep_stats_t *stats;
  size_t nstats, capstats;
  int access_fd; /* -1 = off */
  char *access_path;
  /* metrics */
  sk_mfamily_t *f_requests, *f_duration, *f_upstream, *f_retries, *f_ejections, *f_breaker;
  sk_gauge_t *g_active_conns, *g_active_reqs;
  sk_counter_t *c_reloads, *c_reload_errors;
  sk_counter_t *c_spans_exported, *c_spans_dropped;
};

int px_proxy_new(uv_loop_t *main_loop, px_config_t *cfg, const px_opts_t *o, px_proxy_t **out);
/* Swaps in a new config (takes the reference); workers pick it up. */
int px_proxy_set_config(px_proxy_t *p, px_config_t *cfg);
px_config_t *px_proxy_config(px_proxy_t *p); /* a new reference */
/* Port a listener is bound to (after px_proxy_new), or -1. */
int px_proxy_listener_port(px_proxy_t *p, const char *name);
/* Graceful drain of every worker; cb runs on the main loop. */
void px_proxy_drain(px_proxy_t *p, void (*cb)(void *ud), void *ud);
/* Stops and joins the workers, frees everything. */
void px_proxy_free(px_proxy_t *p);
/* JSON for /clusters. */
json_t *px_proxy_clusters_json(px_proxy_t *p);
px_ep_stats_t *px_proxy_ep_stats(px_proxy_t *p, const char *cluster, const char *addr);

/* worker side (px_worker.c) */
px_gen_t *px_gen_ref(px_gen_t *g);
void px_gen_unref(px_gen_t *g);

/* L7 (px_http.c) and L4 (px_tcp.c) */
void px_http_handle(sk_http_req_t *req, void *ud);
void px_http_worker_done(px_worker_t *w);
void px_tcp_accept(sk_listener_t *l, sk_conn_t *c, void *ud);

/* observability (px_obs.c) */
int px_obs_init(px_proxy_t *p);
const char *px_status_class(int status);
void px_access_log(px_worker_t *w, const px_config_t *cfg, const sk_http_req_t *req, const char *listener,
                   int status, const char *reason, const char *route, const char *cluster, const char *endpoint,
                   uint64_t upstream_ns, size_t bytes, const char *request_id, const char *trace_id,
                   const char *span_id, uint32_t attempts);
void px_obs_thread_done(void); /* frees the thread's access-log buffer */
void px_obs_request(px_worker_t *w, const px_route_t *rt, const char *cluster, int status, uint64_t dur_ns);

/* tracing (px_trace.c): the `tracing` section -> a tracer (NULL when off;
 * out NULL = validate only); spans per request and per upstream try */
int px_tracing_build(const sk_cfg_json_t *j, const char *file, sk_config_errors_t *errs, sk_tracer_t **out);
void px_trace_server_begin(px_worker_t *w, const sk_http_req_t *req, const px_route_t *rt, sk_span_t *s,
                           px_trace_t *tr, sk_http_header_t *hdrs, size_t nh);
void px_trace_server_end(sk_span_t *s, int status, const char *reason, const char *cluster);
void px_trace_server_abort(sk_span_t *s);
void px_trace_try_begin(px_worker_t *w, sk_span_t *s, const sk_span_t *srv, const sk_http_req_t *req,
                        const px_route_t *rt, const px_cluster_t *c, const char *endpoint, uint32_t attempt,
                        sk_http_header_t *hdrs, size_t nh);
void px_trace_try_end(sk_span_t *s, int status, const char *reason);

/* the daemon descriptor (px_daemon.c) */
typedef struct px_daemon_cfg {
  int workers;
  sk_cfg_json_t listeners, routes, clusters, access_log;
  sk_cfg_json_t tracing; /* px_trace.c */
  sk_cfg_json_t control; /* px_push.c: follow skiff-control's snapshots */
} px_daemon_cfg_t;
extern const sk_config_schema_t px_daemon_schema;
extern const sk_daemon_desc_t px_daemon_desc;
/* Builds a model from the daemon struct's JSON keys. */
int px_config_from_daemon(const px_daemon_cfg_t *dc, const char *file, uint64_t version, sk_config_errors_t *errs,
                          px_config_t **out);

#endif
