/* px_int.h - skiff-proxy internals shared by its source files (prefix px_).
 *
 * Threads: the daemon's main loop (admin, signals, reload) plus N workers,
 * each with its own uv loop, its own copy of every listener (SO_REUSEPORT)
 * and its own upstream connection pools. The active px_config_t is swapped
 * under px_proxy.mu; a worker picks it up on an async wakeup and builds a
 * px_gen_t (its per-worker view: cluster pools, plus pointers to the
 * process-wide resilience state of each cluster and route). A request
 * holds its gen until it ends, so in-flight requests finish on the config
 * they started with.
 *
 * Resilience state is per process, not per worker (px_share.c): breakers,
 * outlier state and health flags per cluster (px_scluster_t), rate-limit
 * buckets and retry budgets per route (px_sroute_t). Each is keyed by the
 * cluster's or route's name plus the settings it depends on, so a reload
 * that leaves a cluster or route unchanged keeps its state, and every
 * worker's gen points at the same object. Health probes run on worker 0
 * only, one runner per cluster (px_prober_t). */
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
  const char *spiffe; /* the client certificate's SPIFFE ID; NULL without one */
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
 * set, x-forwarded-client-cert as xfcc (PX_XFCC_*) says, with
 * req->peer_spiffe as this hop's URI. Returns the count. */
size_t px_upstream_headers(const sk_http_req_t *req, const px_hdr_ops_t *ops, int xfcc, px_rng_t *rng,
                           sk_pool_t *pool, sk_http_header_t **out, const char **request_id, px_trace_t *trace);
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
  _Atomic uint32_t ejected;    /* 1 while outlier detection has it ejected (refreshed on picks) */
  _Atomic uint32_t unhealthy;  /* probers whose health check fails it (one per process) */
  _Atomic uint64_t ejections;
  long conns;                  /* open upstream connections, all workers (the pools' conn_gauge) */
} px_ep_stats_t;

/* The entry of (cluster, addr), made on first use, with a new reference
 * (any thread); _unref drops one, and the last frees the entry and removes
 * its per-endpoint metric series. See px_worker.c for who holds them. */
px_ep_stats_t *px_proxy_ep_stats(px_proxy_t *p, const char *cluster, const char *addr);
px_ep_stats_t *px_proxy_ep_stats_ref(px_proxy_t *p, px_ep_stats_t *s);
void px_proxy_ep_stats_unref(px_proxy_t *p, px_ep_stats_t *s); /* accepts NULL */
/* The class label of skiff_proxy_upstream_rq_total{cluster,endpoint,class}:
 * 1xx..5xx, error (the unref removes all six series). */
extern const char *const px_upstream_classes[6];

/* Open downstream HTTP connections of a listener (by name), all workers:
 * the servers' conn_gauge, with a reference each server holds until it has
 * no connection left; the last _unref removes the listener's series. */
long *px_proxy_listener_gauge(px_proxy_t *p, const char *name);
void px_proxy_listener_gauge_unref(px_proxy_t *p, long *gauge); /* accepts NULL */
/* Sets skiff_proxy_downstream_connections{listener} and
 * skiff_proxy_upstream_connections{cluster} (scrape time, main thread). */
void px_proxy_collect_conns(px_proxy_t *p);

/* ---- per-worker upstream state ---- */

typedef struct px_ep {
  px_worker_t *w;
  char *key; /* cluster|host:port|proto|tls|timeouts: same key = same pool across reloads */
  sk_http_client_t *client;
  struct px_scluster *gate_sh; /* the client's gate counts into it (the gate holds the reference), or NULL */
  uint32_t active;
  int refs;
  px_ep_stats_t *stats;
  sk_counter_t *m_rq[6]; /* upstream_rq_total{class}: 1xx..5xx, error */
  sk_histogram_t *m_duration; /* upstream_rq_duration_seconds{cluster,endpoint} */
  struct px_ep *next;
} px_ep_t;

/* ---- process-wide resilience state (px_share.c) ---- */

typedef struct px_scluster {
  char *key;  /* name + endpoints + tls + breaker/outlier/health settings */
  int refs;   /* under px_proxy.mu */
  size_t n;   /* endpoints, in the config's order */
  px_breaker_t breaker;
  px_outlier_t outlier;       /* cfg.enabled == 0 when off */
  _Atomic uint8_t *unhealthy; /* per endpoint, written by the one prober */
  _Atomic unsigned brk_open;  /* bit per kind: counted as open in the gauge */
  sk_gauge_t *m_breaker_open[PX_BRK_NKINDS]; /* circuit_open{cluster,kind} */
  sk_counter_t *m_overflow[PX_BRK_NKINDS];   /* circuit_overflow_total{cluster,kind} */
  _Atomic int conn_demand; /* a pool was refused a connection: idle ones should go */
  px_proxy_t *p;
  px_ep_stats_t **stats;      /* per endpoint */
  struct px_scluster *next;
} px_scluster_t;

typedef struct px_sroute {
  char *key; /* name (or index) + rate limit settings */
  int refs;  /* under px_proxy.mu */
  px_ratelimit_t rl;
  px_retry_budget_t budget;
  struct px_sroute *next;
} px_sroute_t;

/* Finds or makes the shared state for a cluster / route of a config and
 * takes a reference; _unref drops it (the last one frees). Any thread. */
px_scluster_t *px_share_cluster(px_proxy_t *p, const px_cluster_t *c);
px_scluster_t *px_share_cluster_ref(px_proxy_t *p, px_scluster_t *s);
void px_share_cluster_unref(px_proxy_t *p, px_scluster_t *s);
px_sroute_t *px_share_route(px_proxy_t *p, const px_route_t *r);
void px_share_route_unref(px_proxy_t *p, px_sroute_t *s);
/* Keeps skiff_proxy_circuit_open{cluster,kind} (0 or 1) in step with the
 * shared breaker: call after every acquire/release of kind k. */
void px_share_brk_note(px_scluster_t *s, px_brk_kind_t k);
/* Counts one refusal of kind k in skiff_proxy_circuit_overflow_total. */
void px_share_brk_overflow(px_scluster_t *s, px_brk_kind_t k);
/* The upstream client gate enforcing the cluster's max_connections and
 * max_pending_requests (process-wide) on every pool of the cluster: 1 and
 * *g filled, with a new reference to s that the gate's done hook drops,
 * when either limit is set; 0 (nothing to enforce) otherwise. */
int px_share_gate(px_scluster_t *s, const px_cluster_t *c, sk_http_client_gate_t *g);
/* Health verdict of endpoint i as published by the prober. */
static inline int px_share_unhealthy(const px_scluster_t *s, size_t i) {
  return i < s->n && atomic_load_explicit(&((px_scluster_t *)s)->unhealthy[i], memory_order_relaxed) != 0;
}

/* The one health prober of a cluster (worker 0 runs them all). */
typedef struct px_prober {
  px_proxy_t *p;
  px_scluster_t *sh; /* a reference */
  px_config_t *cfg;  /* a reference: the runner borrows the cluster's TLS context and strings */
  px_hc_runner_t *r;
  struct px_prober *next;
} px_prober_t;
/* Probes cfg->clusters[ci] on w's loop, publishing into sh. */
int px_prober_new(px_worker_t *w, px_config_t *cfg, size_t ci, px_scluster_t *sh, px_prober_t **out);
void px_prober_free(px_prober_t *pr); /* on the prober's loop; accepts NULL */

/* ---- per-worker view ---- */

typedef struct px_wcluster {
  const px_cluster_t *cfg;
  px_ep_t **eps;
  size_t n;
  uint32_t rr;
  px_scluster_t *sh;     /* process-wide state (a reference) */
  px_breaker_t *breaker; /* &sh->breaker */
  px_outlier_t *outlier; /* &sh->outlier, NULL when outlier detection is off */
  sk_counter_t *m_requests[7]; /* requests_total per class for "no route" use */
  sk_counter_t *m_ejections;
  sk_counter_t *m_retries;
  sk_histogram_t *m_duration; /* cluster_request_duration_seconds{cluster} */
} px_wcluster_t;

typedef struct px_wroute {
  px_sroute_t *sh;             /* process-wide state (a reference) */
  px_ratelimit_t *rl;          /* &sh->rl */
  px_retry_budget_t *budget;   /* &sh->budget */
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
  long *gauge; /* srv's conn_gauge (a reference), NULL once srv is gone */
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
  atomic_int want_trim; /* close idle upstream connections of clusters with conn_demand */
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
  px_prober_t *probers;     /* worker 0 only: one per health-checked cluster */
  sk_counter_t *m_requests; /* skiff_proxy_worker_requests_total{worker} */
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
  atomic_int stopping; /* px_proxy_free began: no more cross-worker wakeups */
  void (*drain_cb)(void *ud);
  void *drain_ud;
  px_port_t ports[PX_MAX_LISTENERS * 4];
  size_t nports;
  void *stats;   /* endpoint stats entries (px_worker.c); under mu */
  size_t nstats; /* how many; under mu */
  px_scluster_t *sclusters; /* under mu */
  px_sroute_t *sroutes;     /* under mu */
  int access_fd; /* -1 = off */
  char *access_path;
  /* metrics */
  sk_mfamily_t *f_requests, *f_duration, *f_upstream, *f_retries, *f_ejections, *f_breaker;
  sk_mfamily_t *f_overflow; /* skiff_proxy_circuit_overflow_total{cluster,kind} */
  sk_mfamily_t *f_worker_requests;
  sk_mfamily_t *f_cluster_duration, *f_ep_duration; /* histograms {cluster}, {cluster,endpoint} */
  sk_mfamily_t *f_down_conns, *f_up_conns;          /* gauges {listener}, {cluster} */
  void *lstats; /* px_proxy_listener_gauge's list (px_worker.c) */
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

/* worker side (px_worker.c) */
/* Asks every worker to close its idle upstream connections of clusters
 * whose conn_demand is set (a pool waits for a max_connections slot). */
void px_proxy_want_trim(px_proxy_t *p);
/* While w drains: reports it drained once its listeners, transactions and
 * TCP relays are all gone. Call after a transaction or relay ends. */
void px_worker_check_drained(px_worker_t *w);
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
 * out NULL = validate only); spans per request and per upstream try.
 * ident: the daemon's identity, for tracing.tls.identity (may be NULL). */
int px_tracing_build(const sk_cfg_json_t *j, const char *file, sk_config_errors_t *errs, sk_ident_t *ident,
                     sk_tracer_t **out);
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
