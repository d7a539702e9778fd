/* px_worker.c - the proxy object, worker threads, per-worker config
 * generations, listener reconciliation on reload, drain. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "px_int.h"
#include "skiff/err.h"

/* ---- endpoint stats (shared) ----
 *
 * One entry per (cluster, endpoint address), shared by every worker and
 * config generation that has that endpoint, so its counters survive
 * reloads. Each holder takes a reference (under p->mu): a worker's pool
 * record (px_ep_t), its upstream client until the client and all its
 * connections are gone (the pool's conn_gauge points into the entry), and
 * a cluster's shared state (px_scluster_t, the health flags). The last
 * reference frees the entry and removes its per-endpoint metric series;
 * the cluster's upstream_connections series goes with its last entry. */

typedef struct stats_node {
  px_ep_stats_t s;
  int refs; /* under p->mu */
  struct stats_node *next;
} stats_node_t;

const char *const px_upstream_classes[6] = {"1xx", "2xx", "3xx", "4xx", "5xx", "error"};

static stats_node_t *stats_find(px_proxy_t *p, const char *cluster, const char *addr) {
  for (stats_node_t *n = p->stats; n; n = n->next)
    if (!strcmp(n->s.cluster, cluster) && !strcmp(n->s.addr, addr)) return n;
  return NULL;
}

px_ep_stats_t *px_proxy_ep_stats(px_proxy_t *p, const char *cluster, const char *addr) {
  uv_mutex_lock(&p->mu);
  stats_node_t *n = stats_find(p, cluster, addr);
  if (!n) {
    n = sk_xcalloc(1, sizeof *n);
    snprintf(n->s.cluster, sizeof n->s.cluster, "%s", cluster);
    snprintf(n->s.addr, sizeof n->s.addr, "%s", addr);
    n->next = p->stats;
    p->stats = n;
    p->nstats++;
  }
  n->refs++;
  uv_mutex_unlock(&p->mu);
  return &n->s;
}

px_ep_stats_t *px_proxy_ep_stats_ref(px_proxy_t *p, px_ep_stats_t *s) {
  uv_mutex_lock(&p->mu);
  ((stats_node_t *)s)->refs++;
  uv_mutex_unlock(&p->mu);
  return s;
}

/* Under p->mu: nothing holds n's metric children any more (their users
 * held references to n), and a new entry for the same endpoint, made after
 * this under the same lock, asks for fresh ones. */
static void stats_forget_series(px_proxy_t *p, stats_node_t *n) {
  const char *v[3] = {n->s.cluster, n->s.addr, NULL};
  if (p->f_ep_duration) sk_mfamily_remove(p->f_ep_duration, v);
  if (p->f_upstream)
    for (size_t k = 0; k < 6; k++) {
      v[2] = px_upstream_classes[k];
      sk_mfamily_remove(p->f_upstream, v);
    }
  if (p->f_up_conns) { /* n is off the list: is it the cluster's last entry? */
    int more = 0;
    for (stats_node_t *o = p->stats; o && !more; o = o->next)
      more = !strcmp(o->s.cluster, n->s.cluster);
    if (!more) sk_mfamily_remove(p->f_up_conns, v);
  }
}

void px_proxy_ep_stats_unref(px_proxy_t *p, px_ep_stats_t *s) {
  if (!s) return;
  stats_node_t *n = (stats_node_t *)s, *gone = NULL;
  uv_mutex_lock(&p->mu);
  if (--n->refs == 0) {
    stats_node_t *prev = NULL, *o = p->stats;
    for (; o && o != n; o = o->next) prev = o;
    if (o && prev) prev->next = n->next;
    else if (o) p->stats = n->next;
    p->nstats--;
    stats_forget_series(p, n);
    gone = n;
  }
  uv_mutex_unlock(&p->mu);
  free(gone);
}

/* Listener gauges: one per listener name, referenced by each worker's
 * server of that listener until the server and its connections are gone. */
typedef struct lstats_node {
  long conns; /* first: the gauge pointer handed out is the node */
  int refs;   /* under p->mu */
  char name[129];
  struct lstats_node *next;
} lstats_node_t;

long *px_proxy_listener_gauge(px_proxy_t *p, const char *name) {
  uv_mutex_lock(&p->mu);
  lstats_node_t *n = p->lstats;
  for (; n; n = n->next)
    if (!strcmp(n->name, name)) break;
  if (!n) {
    n = sk_xcalloc(1, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    n->next = p->lstats;
    p->lstats = n;
  }
  n->refs++;
  uv_mutex_unlock(&p->mu);
  return &n->conns;
}

void px_proxy_listener_gauge_unref(px_proxy_t *p, long *gauge) {
  if (!gauge) return;
  lstats_node_t *n = (lstats_node_t *)gauge, *gone = NULL;
  uv_mutex_lock(&p->mu);
  if (--n->refs == 0) {
    lstats_node_t *prev = NULL, *o = p->lstats;
    for (; o && o != n; o = o->next) prev = o;
    if (o && prev) prev->next = n->next;
    else if (o) p->lstats = n->next;
    if (p->f_down_conns) {
      const char *v[1] = {n->name};
      sk_mfamily_remove(p->f_down_conns, v);
    }
    gone = n;
  }
  uv_mutex_unlock(&p->mu);
  free(gone);
}

void px_proxy_collect_conns(px_proxy_t *p) {
  uv_mutex_lock(&p->mu);
  if (p->f_down_conns)
    for (lstats_node_t *n = p->lstats; n; n = n->next) {
      const char *v[1] = {n->name};
      sk_gauge_t *g = NULL;
      if (sk_gauge_with(p->f_down_conns, v, &g) == 0) sk_gauge_set(g, (double)__atomic_load_n(&n->conns, __ATOMIC_RELAXED));
    }
  if (p->f_up_conns) {
    /* a cluster's endpoints add up: zero every cluster first */
    for (int pass = 0; pass < 2; pass++)
      for (stats_node_t *n = p->stats; n; n = n->next) {
        const char *v[1] = {n->s.cluster};
        sk_gauge_t *g = NULL;
        if (sk_gauge_with(p->f_up_conns, v, &g) < 0) continue;
        if (pass == 0) sk_gauge_set(g, 0);
        else sk_gauge_add(g, (double)__atomic_load_n(&n->s.conns, __ATOMIC_RELAXED));
      }
  }
  uv_mutex_unlock(&p->mu);
}

/* ---- generations ---- */

/* A cluster with max_connections or max_pending_requests binds its pools
 * to its shared state sh (the pool's gate counts into sh's breaker for the
 * pool's whole life), so sh is part of the key. */
/* What an upstream client holds until it and all its connections are gone
 * (its gate's done hook): a reference to the endpoint's stats entry, whose
 * conns field is the client's conn_gauge. The cluster's own gate, if any,
 * runs inside. */
typedef struct ep_hold {
  px_proxy_t *p;
  px_ep_stats_t *stats;
  sk_http_client_gate_t inner;
} ep_hold_t;

static int hold_conn_open(void *ud) {
  ep_hold_t *h = ud;
  return h->inner.conn_open(h->inner.ud);
}
static void hold_conn_closed(void *ud) {
  ep_hold_t *h = ud;
  h->inner.conn_closed(h->inner.ud);
}
static int hold_wait_start(void *ud) {
  ep_hold_t *h = ud;
  return h->inner.wait_start(h->inner.ud);
}
static void hold_wait_end(void *ud) {
  ep_hold_t *h = ud;
  h->inner.wait_end(h->inner.ud);
}
static void hold_free(ep_hold_t *h) {
  px_proxy_ep_stats_unref(h->p, h->stats);
  free(h);
}
static void hold_done(void *ud) {
  ep_hold_t *h = ud;
  if (h->inner.done) h->inner.done(h->inner.ud);
  hold_free(h);
}

static px_ep_t *ep_get(px_worker_t *w, const px_cluster_t *c, size_t i, px_scluster_t *sh) {
  char key[1200];
  const px_endpoint_t *e = &c->endpoints[i];
  sk_http_client_gate_t gate;
  int gated = px_share_gate(sh, c, &gate);
  snprintf(key, sizeof key, "%s|%s|%d|%s|%llu|%llu|%llu|%u|%p", c->name, e->addr, c->h2, c->tls_sig,
           (unsigned long long)c->connect_timeout_ms, (unsigned long long)c->idle_timeout_ms,
           (unsigned long long)c->request_timeout_ms, c->max_conns, gated ? (void *)sh : NULL);
  for (px_ep_t *ep = w->eps; ep; ep = ep->next)
    if (!strcmp(ep->key, key)) {
      ep->refs++;
      if (gated) px_share_cluster_unref(w->p, sh); /* the pool has its gate already */
      return ep;
    }
  px_ep_t *ep = sk_xcalloc(1, sizeof *ep);
  ep->w = w;
  ep->key = sk_xstrdup(key);
  ep->refs = 1;
  ep->stats = px_proxy_ep_stats(w->p, c->name, e->addr); /* the ep's reference */
  ep_hold_t *hold = sk_xcalloc(1, sizeof *hold);
  hold->p = w->p;
  hold->stats = px_proxy_ep_stats_ref(w->p, ep->stats); /* the client's */
  if (gated) hold->inner = gate;
  sk_http_client_gate_t hg = {.conn_open = hold->inner.conn_open ? hold_conn_open : NULL,
                              .conn_closed = hold->inner.conn_closed ? hold_conn_closed : NULL,
                              .wait_start = hold->inner.wait_start ? hold_wait_start : NULL,
                              .wait_end = hold->inner.wait_end ? hold_wait_end : NULL,
                              .done = hold_done,
                              .ud = hold,
                              .retry_ms = hold->inner.retry_ms};
  sk_http_client_opts_t o = {.host = e->host,
                             .port = e->port,
                             .tls = c->tls,
                             .sni = c->sni,
                             .version = c->h2 ? 20 : 11,
                             .max_conns = c->max_conns,
                             .max_body_bytes = 64u << 20,
                             .connect_timeout_ms = c->connect_timeout_ms,
                             .request_timeout_ms = c->request_timeout_ms,
                             .idle_timeout_ms = c->idle_timeout_ms,
                             .gate = &hg,
                             .conn_gauge = &ep->stats->conns};
  if (w->p->f_ep_duration) {
    const char *v[2] = {c->name, e->addr};
    sk_histogram_with(w->p->f_ep_duration, v, &ep->m_duration);
  }
  if (sk_http_client_new(&w->loop, &o, &ep->client) < 0) {
    ep->client = NULL;
    if (gated) px_share_cluster_unref(w->p, sh); /* no client: its done hook never runs */
    hold_free(hold);
  } else if (gated) {
    ep->gate_sh = sh;
  }
  ep->next = w->eps;
  w->eps = ep;
  return ep;
}

static void ep_unref(px_ep_t *ep) {
  if (!ep || --ep->refs > 0) return;
  px_worker_t *w = ep->w;
  for (px_ep_t **pp = &w->eps; *pp; pp = &(*pp)->next)
    if (*pp == ep) {
      *pp = ep->next;
      break;
    }
  sk_http_client_free(ep->client); /* its done hook drops the client's stats reference */
  px_proxy_ep_stats_unref(w->p, ep->stats);
  free(ep->key);
  free(ep);
}

static px_gen_t *gen_new(px_worker_t *w, px_config_t *cfg) {
  px_proxy_t *p = w->p;
  px_gen_t *g = sk_xcalloc(1, sizeof *g);
  g->w = w;
  g->cfg = cfg;
  g->refs = 1;
  g->clusters = sk_xcalloc(cfg->nclusters + 1, sizeof *g->clusters);
  for (size_t c = 0; c < cfg->nclusters; c++) {
    const px_cluster_t *cc = &cfg->clusters[c];
    px_wcluster_t *wc = &g->clusters[c];
    wc->cfg = cc;
    wc->n = cc->nendpoints;
    wc->eps = sk_xcalloc(wc->n + 1, sizeof *wc->eps);
    /* breaker, outlier state and health flags: one per process */
    wc->sh = px_share_cluster(p, cc);
    for (size_t i = 0; i < wc->n; i++) wc->eps[i] = ep_get(w, cc, i, wc->sh);
    wc->rr = (uint32_t)w->id;
    wc->breaker = &wc->sh->breaker;
    wc->outlier = wc->sh->outlier.cfg.enabled ? &wc->sh->outlier : NULL;
    const char *v[1] = {cc->name};
    if (p->f_retries) sk_counter_with(p->f_retries, v, &wc->m_retries);
    if (p->f_ejections) sk_counter_with(p->f_ejections, v, &wc->m_ejections);
    if (p->f_cluster_duration) sk_histogram_with(p->f_cluster_duration, v, &wc->m_duration);
  }
  g->routes = sk_xcalloc(cfg->nroutes + 1, sizeof *g->routes);
  for (size_t r = 0; r < cfg->nroutes; r++) { /* rate limiter and retry budget: one per process */
    px_wroute_t *wr = &g->routes[r];
    wr->sh = px_share_route(p, &cfg->routes[r]);
    wr->rl = &wr->sh->rl;
    wr->budget = &wr->sh->budget;
  }
  return g;
}

px_gen_t *px_gen_ref(px_gen_t *g) {
  if (g) g->refs++;
  return g;
}

void px_gen_unref(px_gen_t *g) {
  if (!g || --g->refs > 0) return;
  px_proxy_t *p = g->w->p;
  for (size_t c = 0; c < g->cfg->nclusters; c++) {
    px_wcluster_t *wc = &g->clusters[c];
    for (size_t i = 0; i < wc->n; i++) ep_unref(wc->eps[i]);
    free(wc->eps);
    px_share_cluster_unref(p, wc->sh);
  }
  for (size_t r = 0; r < g->cfg->nroutes; r++) px_share_route_unref(p, g->routes[r].sh);
  free(g->clusters);
  free(g->routes);
  px_config_unref(g->cfg);
  free(g);
}

/* ---- listeners ---- */

static char *listener_sig(const px_listener_t *l) {
  char buf[4800];
  snprintf(buf, sizeof buf, "%s|%s|%d|%d|%s|%llu|%llu", l->name, l->addr.host, l->addr.port, l->proto, l->tls_sig,
           (unsigned long long)l->max_body, (unsigned long long)l->idle_timeout_ms);
  return sk_xstrdup(buf);
}

static int port_lookup(px_proxy_t *p, const char *sig) {
  int port = -1;
  uv_mutex_lock(&p->mu);
  for (size_t i = 0; i < p->nports; i++)
    if (!strncmp(p->ports[i].sig, sig, sizeof p->ports[i].sig - 1)) port = p->ports[i].port;
  uv_mutex_unlock(&p->mu);
  return port;
}

static void port_record(px_proxy_t *p, const char *sig, int port) {
  uv_mutex_lock(&p->mu);
  size_t i = 0;
  for (; i < p->nports; i++)
    if (!strncmp(p->ports[i].sig, sig, sizeof p->ports[i].sig - 1)) break;
  if (i == p->nports && p->nports < sizeof p->ports / sizeof p->ports[0]) p->nports++;
  if (i < p->nports) {
    snprintf(p->ports[i].sig, sizeof p->ports[i].sig, "%s", sig);
    p->ports[i].port = port;
  }
  uv_mutex_unlock(&p->mu);
}

static int listener_open(px_worker_t *w, const px_listener_t *l, int idx, px_wlistener_t **out) {
  px_wlistener_t *wl = sk_xcalloc(1, sizeof *wl);
  wl->w = w;
  wl->name = sk_xstrdup(l->name);
  wl->sig = listener_sig(l);
  wl->idx = idx;
  wl->proto = l->proto;
  int port = l->addr.port;
  if (port == 0) {
    int known = port_lookup(w->p, wl->sig);
    if (known > 0) port = known;
  }
  const char *host = l->addr.host[0] ? l->addr.host : "0.0.0.0";
  int rc;
  if (l->proto == PX_PROTO_TCP) {
    sk_listener_opts_t lo = {.host = host, .port = port, .tls = l->tls, .reuseport = 1};
    rc = sk_listener_new(&w->loop, &lo, px_tcp_accept, wl, &wl->tcp);
    if (rc >= 0) wl->port = sk_listener_port(wl->tcp);
  } else {
    sk_http_server_opts_t so = {.host = host,
                                .port = port,
                                .tls = l->tls,
                                .reuseport = 1,
                                .max_body_bytes = (size_t)l->max_body,
                                .idle_timeout_ms = l->idle_timeout_ms,
                                .conn_gauge = px_proxy_listener_gauge(w->p, l->name)};
    rc = sk_http_server_new(&w->loop, &so, px_http_handle, wl, &wl->srv);
    if (rc >= 0) wl->port = sk_http_server_port(wl->srv);
    if (rc >= 0) wl->gauge = so.conn_gauge;
    else px_proxy_listener_gauge_unref(w->p, so.conn_gauge);
  }
  if (rc < 0) {
    free(wl->name);
    free(wl->sig);
    free(wl);
    return rc;
  }
  port_record(w->p, wl->sig, wl->port);
  *out = wl;
  return 0;
}

static void wl_free(px_wlistener_t *wl) {
  free(wl->name);
  free(wl->sig);
  free(wl);
}

static void wl_drained(sk_http_server_t *s, void *ud) {
  px_wlistener_t *wl = ud;
  sk_http_server_free(s); /* drained: no connection is left to count */
  px_proxy_listener_gauge_unref(wl->w->p, wl->gauge);
  wl_free(wl);
}

/* Removed listener: stop accepting, let its connections finish. */
static void wl_retire(px_wlistener_t *wl) {
  if (wl->tcp) {
    sk_listener_free(wl->tcp);
    wl_free(wl);
  } else {
    sk_http_server_drain(wl->srv, wl_drained, wl);
  }
}

/* Worker 0 probes for the whole process: one prober per health-checked
 * cluster of g. A cluster whose shared state is unchanged keeps its prober
 * (and so its endpoints' health); the others start afresh. */
static void probers_apply(px_worker_t *w, px_gen_t *g) {
  px_prober_t *old = w->probers, *keep = NULL;
  w->probers = NULL;
  for (size_t c = 0; c < g->cfg->nclusters; c++) {
    const px_cluster_t *cc = &g->cfg->clusters[c];
    if (!cc->health.enabled) continue;
    px_prober_t **pp = &old, *found = NULL;
    for (; *pp; pp = &(*pp)->next)
      if ((*pp)->sh == g->clusters[c].sh) {
        found = *pp;
        *pp = found->next;
        break;
      }
    if (!found) {
      int r = px_prober_new(w, g->cfg, c, g->clusters[c].sh, &found);
      if (r < 0) {
        if (w->p->o.log)
          sk_log_kv(w->p->o.log, SK_LOG_ERROR, "cannot start health checks", "cluster", cc->name, "error",
                    sk_strerror(r), NULL);
        continue;
      }
    }
    found->next = keep;
    keep = found;
  }
  for (px_prober_t *pr = old, *n; pr; pr = n) {
    n = pr->next;
    px_prober_free(pr);
  }
  w->probers = keep;
}

/* Makes the current config this worker's: new gen, listeners reconciled.
 * Returns a negative code when a listener could not be opened (the gen is
 * still swapped; the listener is missing). */
static int worker_apply(px_worker_t *w) {
  px_proxy_t *p = w->p;
  uv_mutex_lock(&p->mu);
  px_config_t *cfg = px_config_ref(p->cfg);
  uv_mutex_unlock(&p->mu);
  if (w->gen && w->gen->cfg == cfg) {
    px_config_unref(cfg);
    return 0;
  }
  px_gen_t *g = gen_new(w, cfg);
  int rc = 0;
  px_wlistener_t *keep = NULL, *old = w->listeners;
  w->listeners = NULL;
  for (size_t i = 0; i < cfg->nlisteners; i++) {
    const px_listener_t *l = &cfg->listeners[i];
    char *sig = listener_sig(l);
    px_wlistener_t **pp = &old, *found = NULL;
    for (; *pp; pp = &(*pp)->next)
      if (!strcmp((*pp)->sig, sig)) {
        found = *pp;
        *pp = found->next;
        break;
      }
    free(sig);
    if (!found && !w->draining) {
      int r = listener_open(w, l, (int)i, &found);
      if (r < 0) {
        if (p->o.log)
          sk_log_kv(p->o.log, SK_LOG_ERROR, "cannot open listener", "listener", l->name, "error", sk_strerror(r), NULL);
        rc = r;
        continue;
      }
    }
    if (!found) continue;
    found->idx = (int)i;
    found->next = keep;
    keep = found;
  }
  for (px_wlistener_t *wl = old, *n; wl; wl = n) {
    n = wl->next;
    wl_retire(wl);
  }
  w->listeners = keep;
  px_gen_t *prev = w->gen;
  w->gen = g;
  if (w->id == 0) probers_apply(w, g);
  px_gen_unref(prev);
  return rc;
}

/* ---- drain / stop ---- */

void px_worker_check_drained(px_worker_t *w) {
  if (!w->draining || w->drained_reported) return;
  for (px_wlistener_t *wl = w->listeners; wl; wl = wl->next)
    if (wl->srv) return;
  if (w->tcp_conns > 0 || w->live_txns > 0) return;
  w->drained_reported = 1;
  atomic_fetch_add(&w->p->drained_workers, 1);
  uv_async_send(&w->p->drained_async);
}

static void wl_drain_done(sk_http_server_t *s, void *ud) {
  px_wlistener_t *wl = ud;
  sk_http_server_free(s);
  wl->srv = NULL;
  px_proxy_listener_gauge_unref(wl->w->p, wl->gauge);
  wl->gauge = NULL;
  px_worker_check_drained(wl->w);
}

static void worker_drain(px_worker_t *w) {
  if (w->draining) return;
  w->draining = 1;
  for (px_wlistener_t *wl = w->listeners; wl; wl = wl->next) {
    if (wl->tcp) {
      sk_listener_free(wl->tcp);
      wl->tcp = NULL;
    } else if (wl->srv) {
      sk_http_server_drain(wl->srv, wl_drain_done, wl);
    }
  }
  px_worker_check_drained(w);
}

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void worker_stop(px_worker_t *w) {
  for (px_wlistener_t *wl = w->listeners, *n; wl; wl = n) {
    n = wl->next;
    if (wl->srv) sk_http_server_free(wl->srv);
    if (wl->tcp) sk_listener_free(wl->tcp);
    wl_free(wl);
  }
  w->listeners = NULL;
  for (px_prober_t *pr = w->probers, *n; pr; pr = n) {
    n = pr->next;
    px_prober_free(pr);
  }
  w->probers = NULL;
  px_gen_unref(w->gen);
  w->gen = NULL;
  uv_close((uv_handle_t *)&w->wake, NULL);
}

/* Idle upstream connections of clusters where a pool waits for a
 * max_connections slot go (px_share.c, the client gate). */
static void worker_trim(px_worker_t *w) {
  for (px_ep_t *ep = w->eps; ep; ep = ep->next)
    if (ep->gate_sh && atomic_load_explicit(&ep->gate_sh->conn_demand, memory_order_relaxed))
      sk_http_client_close_idle(ep->client);
}

void px_proxy_want_trim(px_proxy_t *p) {
  if (atomic_load(&p->stopping)) return;
  int n = __atomic_load_n(&p->nworkers, __ATOMIC_ACQUIRE); /* workers whose wake handle exists */
  for (int i = 0; i < n; i++) {
    px_worker_t *w = &p->workers[i];
    if (!atomic_exchange(&w->want_trim, 1)) uv_async_send(&w->wake);
  }
}

static void on_wake(uv_async_t *a) {
  px_worker_t *w = a->data;
  if (atomic_exchange(&w->want_stop, 0)) {
    worker_stop(w);
    return;
  }
  if (atomic_exchange(&w->want_trim, 0)) worker_trim(w);
  if (atomic_exchange(&w->want_swap, 0)) worker_apply(w);
  if (atomic_exchange(&w->want_drain, 0)) worker_drain(w);
  if (w->draining) px_worker_check_drained(w);
}

static void worker_main(void *arg) {
  px_worker_t *w = arg;
  if (w->p->f_worker_requests) {
    char id[16];
    snprintf(id, sizeof id, "%d", w->id);
    const char *v[1] = {id};
    sk_counter_with(w->p->f_worker_requests, v, &w->m_requests);
  }
  w->start_rc = worker_apply(w);
  uv_sem_post(&w->started);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  /* stopped: close what is left (txn timers, connections) and run dry */
  uv_walk(&w->loop, close_any, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  px_http_worker_done(w);
  px_obs_thread_done();
}

/* ---- the proxy ---- */

static void on_drained_async(uv_async_t *a) {
  px_proxy_t *p = a->data;
  if (atomic_load(&p->drained_workers) >= p->nworkers && p->drain_cb) {
    void (*cb)(void *) = p->drain_cb;
    p->drain_cb = NULL;
    cb(p->drain_ud);
  }
}

static void access_log_open(px_proxy_t *p, const px_config_t *cfg) {
  const char *path = cfg->access_log.path ? cfg->access_log.path : "";
  if (p->access_path && !strcmp(p->access_path, path)) return;
  int fd = -1;
  if (!strcmp(path, "-")) fd = dup(STDOUT_FILENO);
  else if (*path) fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (*path && fd < 0 && p->o.log)
    sk_log_kv(p->o.log, SK_LOG_ERROR, "cannot open access log", "path", path, NULL);
  if (fd >= 0 && p->access_fd >= 0) {
    dup2(fd, p->access_fd); /* same fd number: workers keep writing to it */
    close(fd);
  } else if (fd >= 0) {
    p->access_fd = fd;
  } else if (p->access_fd >= 0) {
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull >= 0) {
      dup2(devnull, p->access_fd);
      close(devnull);
    }
  }
  free(p->access_path);
  p->access_path = sk_xstrdup(path);
}

int px_proxy_new(uv_loop_t *main_loop, px_config_t *cfg, const px_opts_t *o, px_proxy_t **out) {
  px_proxy_t *p = sk_xcalloc(1, sizeof *p);
  int rc = 0;
  *out = NULL;
  p->main_loop = main_loop;
  if (o) p->o = *o;
  if (p->o.workers < 1) p->o.workers = 1;
  if (p->o.workers > PX_MAX_WORKERS) p->o.workers = PX_MAX_WORKERS;
  p->access_fd = -1;
  uv_mutex_init(&p->mu);
  p->cfg = cfg;
  p->version = cfg->version;
  access_log_open(p, cfg);
  px_obs_init(p);
  uv_async_init(main_loop, &p->drained_async, on_drained_async);
  p->drained_async.data = p;
  p->drained_async_init = 1;
  p->workers = sk_xcalloc((size_t)p->o.workers, sizeof *p->workers);
  for (int i = 0; i < p->o.workers; i++) {
    px_worker_t *w = &p->workers[i];
    w->p = p;
    w->id = i;
    w->access_fd = -1;
    px_rng_seed(&w->rng, uv_hrtime() ^ ((uint64_t)getpid() << 20) ^ (uint64_t)i * 7919);
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_sem_init(&w->started, 0);
    /* one at a time, so workers after the first reuse the first's ephemeral ports */
    uv_thread_create(&w->thread, worker_main, w);
    uv_sem_wait(&w->started);
    __atomic_store_n(&p->nworkers, i + 1, __ATOMIC_RELEASE); /* read by px_proxy_want_trim */
    if (w->start_rc < 0) {
      rc = w->start_rc;
      break;
    }
  }
  if (rc < 0) {
    p->cfg = NULL; /* the caller keeps its reference on failure */
    px_proxy_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

int px_proxy_set_config(px_proxy_t *p, px_config_t *cfg) {
  uv_mutex_lock(&p->mu);
  px_config_t *old = p->cfg;
  p->cfg = cfg;
  p->version = cfg->version;
  uv_mutex_unlock(&p->mu);
  access_log_open(p, cfg);
  px_config_unref(old);
  for (int i = 0; i < p->nworkers; i++) {
    atomic_store(&p->workers[i].want_swap, 1);
    uv_async_send(&p->workers[i].wake);
  }
  return 0;
}

px_config_t *px_proxy_config(px_proxy_t *p) {
  uv_mutex_lock(&p->mu);
  px_config_t *c = px_config_ref(p->cfg);
  uv_mutex_unlock(&p->mu);
  return c;
}

int px_proxy_listener_port(px_proxy_t *p, const char *name) {
  px_config_t *c = px_proxy_config(p);
  int idx = px_config_find_listener(c, name), port = -1;
  if (idx >= 0) {
    char *sig = listener_sig(&c->listeners[idx]);
    port = port_lookup(p, sig);
    free(sig);
  }
  px_config_unref(c);
  return port;
}

void px_proxy_drain(px_proxy_t *p, void (*cb)(void *ud), void *ud) {
  p->drain_cb = cb;
  p->drain_ud = ud;
  for (int i = 0; i < p->nworkers; i++) {
    atomic_store(&p->workers[i].want_drain, 1);
    uv_async_send(&p->workers[i].wake);
  }
}

static void proxy_closed(uv_handle_t *h) { free(h->data); }

void px_proxy_free(px_proxy_t *p) {
  if (!p) return;
  atomic_store(&p->stopping, 1);
  for (int i = 0; i < p->nworkers; i++) {
    atomic_store(&p->workers[i].want_stop, 1);
    uv_async_send(&p->workers[i].wake);
  }
  /* every worker joined before any loop closes: a worker still stopping
   * may wake another (px_proxy_want_trim) that has stopped already */
  for (int i = 0; i < p->nworkers; i++) uv_thread_join(&p->workers[i].thread);
  for (int i = 0; i < p->nworkers; i++) {
    uv_loop_close(&p->workers[i].loop);
    uv_sem_destroy(&p->workers[i].started);
  }
  /* workers that never started (a failed start stops the rest) */
  for (int i = p->nworkers; i < p->o.workers; i++) {
    uv_close((uv_handle_t *)&p->workers[i].wake, NULL);
    uv_run(&p->workers[i].loop, UV_RUN_DEFAULT);
    uv_loop_close(&p->workers[i].loop);
    uv_sem_destroy(&p->workers[i].started);
  }
  free(p->workers);
  px_config_unref(p->cfg);
  /* every gen and prober is gone with its worker, and with it the shared
   * state; a failed start can leave some behind */
  while (p->sclusters) {
    px_scluster_t *s = p->sclusters;
    s->refs = 1;
    px_share_cluster_unref(p, s);
  }
  while (p->sroutes) {
    px_sroute_t *s = p->sroutes;
    s->refs = 1;
    px_share_route_unref(p, s);
  }
  /* what is left: stats entries normally none (every client is gone with
   * its loop); listener gauges of servers that worker_stop freed without a
   * drain (their connections were still counting) */
  for (stats_node_t *n = p->stats, *nx; n; n = nx) {
    nx = n->next;
    free(n);
  }
  for (lstats_node_t *n = p->lstats, *nx; n; n = nx) {
    nx = n->next;
    free(n);
  }
  if (p->access_fd >= 0) close(p->access_fd);
  free(p->access_path);
  uv_mutex_destroy(&p->mu);
  if (p->drained_async_init) uv_close((uv_handle_t *)&p->drained_async, proxy_closed);
  else free(p);
}

json_t *px_proxy_clusters_json(px_proxy_t *p) {
  px_config_t *c = px_proxy_config(p);
  json_t *o = json_object();
  json_object_set_new(o, "version", json_integer((json_int_t)c->version));
  uv_mutex_lock(&p->mu); /* the entries stay while we read them */
  json_object_set_new(o, "endpoint_stats", json_integer((json_int_t)p->nstats));
  json_t *arr = json_array();
  for (size_t i = 0; i < c->nclusters; i++) {
    const px_cluster_t *cl = &c->clusters[i];
    json_t *co = json_object();
    json_object_set_new(co, "name", json_string(cl->name));
    json_object_set_new(co, "lb", json_string(cl->lb == PX_LB_LEAST_REQUEST ? "least_request" : "round_robin"));
    json_object_set_new(co, "protocol", json_string(cl->h2 ? "h2" : "http1"));
    json_t *eps = json_array();
    for (size_t j = 0; j < cl->nendpoints; j++) {
      /* none yet when the workers have not built this config: all zero */
      stats_node_t *sn = stats_find(p, cl->name, cl->endpoints[j].addr);
      px_ep_stats_t zero = {0}, *s = sn ? &sn->s : &zero;
      json_t *e = json_object();
      json_object_set_new(e, "address", json_string(cl->endpoints[j].addr));
      json_object_set_new(e, "healthy", json_boolean(atomic_load(&s->unhealthy) == 0));
      json_object_set_new(e, "ejected", json_boolean(atomic_load(&s->ejected) > 0));
      json_object_set_new(e, "active_requests", json_integer(atomic_load(&s->active)));
      json_object_set_new(e, "requests", json_integer((json_int_t)atomic_load(&s->requests)));
      json_object_set_new(e, "ejections", json_integer((json_int_t)atomic_load(&s->ejections)));
      json_array_append_new(eps, e);
    }
    json_object_set_new(co, "endpoints", eps);
    json_array_append_new(arr, co);
  }
  uv_mutex_unlock(&p->mu);
  json_object_set_new(o, "clusters", arr);
  px_config_unref(c);
  return o;
}
