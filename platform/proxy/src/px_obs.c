/* px_obs.c - access log lines and Prometheus metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "px_int.h"
#include "skiff/json.h"

const char *px_status_class(int status) {
  switch (status / 100) {
  case 1: return "1xx";
  case 2: return "2xx";
  case 3: return "3xx";
  case 4: return "4xx";
  default: return "5xx";
  }
}

static void collect(sk_metrics_t *m, void *ud) {
  (void)m;
  px_proxy_t *p = ud;
  double reqs = 0;
  for (int i = 0; i < p->nworkers; i++) reqs += (double)__atomic_load_n(&p->workers[i].live_txns, __ATOMIC_RELAXED);
  sk_gauge_set(p->g_active_reqs, reqs);
  double conns = 0;
  for (int i = 0; i < p->nworkers; i++) conns += (double)__atomic_load_n(&p->workers[i].tcp_conns, __ATOMIC_RELAXED);
  sk_gauge_set(p->g_active_conns, conns);
  px_proxy_collect_conns(p);
  if (p->o.tracer) {
    sk_tracer_stats_t st;
    sk_tracer_stats(p->o.tracer, &st);
    sk_counter_set(p->c_spans_exported, (double)st.spans_exported);
    sk_counter_set(p->c_spans_dropped, (double)st.spans_dropped);
  }
}

int px_obs_init(px_proxy_t *p) {
  sk_metrics_t *m = p->o.metrics;
  if (!m) return 0;
  static const char *const l_req[] = {"route", "cluster", "class"};
  static const char *const l_route[] = {"route"};
  static const char *const l_up[] = {"cluster", "endpoint", "class"};
  static const char *const l_cluster[] = {"cluster"};
  static const char *const l_brk[] = {"cluster", "kind"};
  sk_metrics_counter_family(m, "skiff_proxy_requests_total",
                            "Downstream requests by route, upstream cluster and status class.", l_req, 3,
                            &p->f_requests);
  sk_metrics_histogram_family(m, "skiff_proxy_request_duration_seconds",
                              "Time from request start to the end of the response, by route.", l_route, 1, NULL, 0,
                              &p->f_duration);
  sk_metrics_counter_family(m, "skiff_proxy_upstream_rq_total", "Upstream tries by endpoint and status class.", l_up,
                            3, &p->f_upstream);
  sk_metrics_counter_family(m, "skiff_proxy_retries_total", "Retries started, by cluster.", l_cluster, 1,
                            &p->f_retries);
  sk_metrics_counter_family(m, "skiff_proxy_outlier_ejections_total", "Endpoints ejected by outlier detection.",
                            l_cluster, 1, &p->f_ejections);
  sk_metrics_gauge_family(m, "skiff_proxy_circuit_open",
                          "1 while the cluster's circuit breaker (one per process) is at its limit, by kind "
                          "(connections, pending, requests, retries); 0 = closed.",
                          l_brk, 2, &p->f_breaker);
  sk_metrics_counter_family(m, "skiff_proxy_circuit_overflow_total",
                            "Times the cluster's circuit breaker refused, by kind: requests answered 503 "
                            "(pending, requests), retries not made, connection opens deferred (connections).",
                            l_brk, 2, &p->f_overflow);
  static const char *const l_worker[] = {"worker"};
  sk_metrics_counter_family(m, "skiff_proxy_worker_requests_total",
                            "Downstream requests answered, by worker thread (how SO_REUSEPORT spread them).",
                            l_worker, 1, &p->f_worker_requests);
  static const char *const l_ep[] = {"cluster", "endpoint"};
  static const char *const l_listener[] = {"listener"};
  sk_metrics_histogram_family(m, "skiff_proxy_cluster_request_duration_seconds",
                              "Time from request start to the end of the response, by the upstream cluster the "
                              "route sent it to.",
                              l_cluster, 1, NULL, 0, &p->f_cluster_duration);
  sk_metrics_histogram_family(m, "skiff_proxy_upstream_rq_duration_seconds",
                              "Time of one upstream try, from its start to its response head or failure, by "
                              "endpoint.",
                              l_ep, 2, NULL, 0, &p->f_ep_duration);
  sk_metrics_gauge_family(m, "skiff_proxy_downstream_connections",
                          "Open downstream HTTP connections, by listener.", l_listener, 1, &p->f_down_conns);
  sk_metrics_gauge_family(m, "skiff_proxy_upstream_connections", "Open upstream connections, by cluster.",
                          l_cluster, 1, &p->f_up_conns);
  if (p->f_breaker) sk_mfamily_set_max_children(p->f_breaker, 20000);
  if (p->f_overflow) sk_mfamily_set_max_children(p->f_overflow, 20000);
  if (p->f_requests) sk_mfamily_set_max_children(p->f_requests, 20000);
  if (p->f_upstream) sk_mfamily_set_max_children(p->f_upstream, 20000);
  if (p->f_ep_duration) sk_mfamily_set_max_children(p->f_ep_duration, 20000);
  if (p->f_up_conns) sk_mfamily_set_max_children(p->f_up_conns, 20000);
  sk_metrics_gauge(m, "skiff_proxy_active_requests", "Requests in flight.", &p->g_active_reqs);
  sk_metrics_gauge(m, "skiff_proxy_active_tcp_connections", "L4 connections being relayed.", &p->g_active_conns);
  sk_metrics_counter(m, "skiff_proxy_config_reloads_total", "Configs applied after the first.", &p->c_reloads);
  sk_metrics_counter(m, "skiff_proxy_config_reload_errors_total", "Configs refused on reload.", &p->c_reload_errors);
  if (p->o.tracer) {
    sk_metrics_counter(m, "skiff_proxy_spans_exported_total", "Spans accepted by the OTLP endpoint.",
                       &p->c_spans_exported);
    sk_metrics_counter(m, "skiff_proxy_spans_dropped_total",
                       "Sampled spans not exported: queue full, endpoint refused or unreachable after retries.",
                       &p->c_spans_dropped);
  }
  sk_metrics_on_collect(m, collect, p);
  return 0;
}

/* A small per-thread cache from (route, cluster, class) to the child. */
#define PX_MCACHE 512
typedef struct mcache_ent {
  const void *route;
  const char *cluster;
  int cls;
  sk_counter_t *c;
} mcache_ent_t;
static _Thread_local mcache_ent_t *mcache; /* PX_MCACHE entries, on first use (px_obs_thread_done frees) */

void px_obs_request(px_worker_t *w, const px_route_t *rt, const char *cluster, int status, uint64_t dur_ns) {
  px_proxy_t *p = w->p;
  sk_counter_inc(w->m_requests);
  if (!p->f_requests) return;
  int cls = status / 100;
  if (cls < 1 || cls > 5) cls = 5;
  if (!mcache) mcache = sk_xcalloc(PX_MCACHE, sizeof *mcache);
  uintptr_t hv = ((uintptr_t)rt >> 4) * 31 + ((uintptr_t)cluster >> 3) * 17 + (uintptr_t)cls;
  mcache_ent_t *e = &mcache[hv % PX_MCACHE];
  if (!e->c || e->route != rt || e->cluster != cluster || e->cls != cls) {
    const char *v[3] = {rt ? rt->name : "", cluster ? cluster : "", px_status_class(status)};
    sk_counter_t *c = NULL;
    if (sk_counter_with(p->f_requests, v, &c) < 0) return;
    *e = (mcache_ent_t){rt, cluster, cls, c};
  }
  sk_counter_inc(e->c);
  if (rt && p->f_duration) {
    px_route_t *mr = (px_route_t *)rt;
    sk_histogram_t *h = atomic_load_explicit(&mr->m_duration, memory_order_acquire);
    if (!h) {
      const char *v[1] = {rt->name};
      if (sk_histogram_with(p->f_duration, v, &h) == 0) atomic_store_explicit(&mr->m_duration, h, memory_order_release);
    }
    sk_histogram_observe(h, (double)dur_ns / 1e9);
  }
}

static _Thread_local sk_buf_t log_buf;

static void kv_str(sk_buf_t *b, int *first, const char *k, const char *v) {
  sk_buf_puts(b, *first ? "\"" : ",\"");
  *first = 0;
  sk_buf_puts(b, k);
  if (!v) {
    sk_buf_puts(b, "\":null");
    return;
  }
  sk_buf_puts(b, "\":\"");
  sk_json_escape(b, v, strlen(v));
  sk_buf_puts(b, "\"");
}

static void kv_num(sk_buf_t *b, int *first, const char *k, int decimals, double v) {
  sk_buf_puts(b, *first ? "\"" : ",\"");
  *first = 0;
  sk_buf_puts(b, k);
  sk_buf_puts(b, "\":");
  sk_buf_printf(b, "%.*f", decimals, v);
}

void px_access_log(px_worker_t *w, const px_config_t *cfg, const sk_http_req_t *req, const char *listener,
                   int status, const char *reason, const char *route, const char *cluster, const char *endpoint,
                   uint64_t upstream_ns, size_t bytes, const char *request_id, const char *trace_id,
                   const char *span_id, uint32_t attempts) {
  int fd = w->p->access_fd;
  if (fd < 0 || !cfg->access_log.path || !cfg->access_log.path[0]) return;
  sk_buf_t *bp = &log_buf, b = *bp; /* one line buffer per worker thread, reused */
  sk_buf_reset(&b);
  int first = 1;
  sk_buf_puts(&b, "{");
  for (size_t i = 0; i < cfg->access_log.nfields; i++) {
    switch (cfg->access_log.fields[i]) {
    case PX_LF_TS: {
      struct timeval tv;
      gettimeofday(&tv, NULL);
      struct tm tm;
      gmtime_r(&tv.tv_sec, &tm);
      char ts[64];
      snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
               tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
      kv_str(&b, &first, "ts", ts);
      break;
    }
    case PX_LF_METHOD: kv_str(&b, &first, "method", req->method); break;
    case PX_LF_AUTHORITY: kv_str(&b, &first, "authority", req->authority); break;
    case PX_LF_PATH: kv_str(&b, &first, "path", req->target); break;
    case PX_LF_PROTOCOL:
      kv_str(&b, &first, "protocol", req->version == 20 ? "HTTP/2" : req->version == 10 ? "HTTP/1.0" : "HTTP/1.1");
      break;
    case PX_LF_STATUS: kv_num(&b, &first, "status", 0, status); break;
    case PX_LF_REASON: kv_str(&b, &first, "reason", reason); break;
    case PX_LF_ROUTE: kv_str(&b, &first, "route", route); break;
    case PX_LF_CLUSTER: kv_str(&b, &first, "cluster", cluster); break;
    case PX_LF_ENDPOINT: kv_str(&b, &first, "endpoint", endpoint); break;
    case PX_LF_DURATION_MS:
      kv_num(&b, &first, "duration_ms", 3, (double)(uv_hrtime() - req->start_ns) / 1e6);
      break;
    case PX_LF_UPSTREAM_MS: kv_num(&b, &first, "upstream_ms", 3, (double)upstream_ns / 1e6); break;
    case PX_LF_BYTES: kv_num(&b, &first, "bytes", 0, (double)bytes); break;
    case PX_LF_REQUEST_ID: kv_str(&b, &first, "request_id", request_id); break;
    case PX_LF_TRACE_ID: kv_str(&b, &first, "trace_id", trace_id); break;
    case PX_LF_SPAN_ID: kv_str(&b, &first, "span_id", span_id); break;
    case PX_LF_PEER: kv_str(&b, &first, "peer", req->peer_addr); break;
    case PX_LF_PEER_SPIFFE: kv_str(&b, &first, "peer_spiffe", req->peer_spiffe); break;
    case PX_LF_ATTEMPTS: kv_num(&b, &first, "attempts", 0, attempts); break;
    case PX_LF_LISTENER: kv_str(&b, &first, "listener", listener); break;
    default: break;
    }
  }
  sk_buf_puts(&b, "}\n");
  ssize_t wr = write(fd, b.data, b.len);
  (void)wr;
  *bp = b;
}

void px_obs_thread_done(void) {
  sk_buf_done(&log_buf);
  free(mcache);
  mcache = NULL;
}
