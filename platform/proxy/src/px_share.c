/* px_share.c - skiff-proxy's process-wide resilience state: one breaker,
 * outlier table and set of health flags per cluster, one rate limiter and
 * retry budget per route, shared by every worker's generation and kept
 * across reloads for clusters and routes whose settings did not change;
 * and the health probers (one per cluster, on worker 0) that publish the
 * health flags. */
#include <stdio.h> /* open_memstream (the build defines _GNU_SOURCE) */
#include <stdlib.h>
#include <string.h>

#include "px_int.h"
#include "skiff/err.h"

/* ---- keys: the name plus every setting the state depends on ---- */

static char *cluster_key(const px_cluster_t *c) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  fprintf(f, "%s|%zu|%s", c->name, c->nendpoints, c->tls_sig ? c->tls_sig : "");
  for (size_t i = 0; i < c->nendpoints; i++) fprintf(f, "|%s", c->endpoints[i].addr);
  const px_breaker_config_t *b = &c->breaker;
  fprintf(f, "|b%d", b->enabled);
  for (int k = 0; k < PX_BRK_NKINDS; k++) fprintf(f, ",%u", b->enabled ? b->max[k] : 0);
  const px_outlier_config_t *o = &c->outlier;
  fprintf(f, "|o%d,%u,%u,%llu,%llu,%llu,%u", o->enabled, o->consecutive_5xx, o->consecutive_gateway_errors,
          (unsigned long long)o->interval_ms, (unsigned long long)o->base_ejection_time_ms,
          (unsigned long long)o->max_ejection_time_ms, o->max_ejection_percent);
  const px_hc_config_t *h = &c->health;
  fprintf(f, "|h%d,%s,%s,%llu,%llu,%u,%u", h->enabled, h->path, h->host, (unsigned long long)h->interval_ms,
          (unsigned long long)h->timeout_ms, h->healthy_threshold, h->unhealthy_threshold);
  for (uint32_t i = 0; i < h->nstatus; i++) fprintf(f, ",%u-%u", h->status_lo[i], h->status_hi[i]);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

static char *route_key(const px_route_t *r) {
  char buf[1200];
  const px_ratelimit_config_t *l = &r->rate_limit;
  if (r->name) snprintf(buf, sizeof buf, "n:%s", r->name);
  else snprintf(buf, sizeof buf, "i:%d", r->index);
  size_t n = strlen(buf);
  snprintf(buf + n, sizeof buf - n, "|rl%d,%llu,%llu,%llu,%d,%s,%u", l->enabled,
           (unsigned long long)l->requests_per_unit, (unsigned long long)l->unit_ms, (unsigned long long)l->burst,
           (int)l->per_client, l->header, l->max_clients);
  return sk_xstrdup(buf);
}

/* ---- clusters ---- */

static void scluster_free(px_scluster_t *s) {
  if (!s) return;
  for (int k = 0; k < PX_BRK_NKINDS; k++) /* leaving while open: the gauge goes back */
    if (atomic_load(&s->brk_open) & (1u << k)) sk_gauge_dec(s->m_breaker_open[k]);
  px_outlier_done(&s->outlier);
  free(s->unhealthy);
  for (size_t i = 0; i < s->n; i++) px_proxy_ep_stats_unref(s->p, s->stats[i]);
  free(s->stats);
  free(s->key);
  free(s);
}

static px_scluster_t *scluster_new(px_proxy_t *p, const px_cluster_t *c, char *key) {
  px_scluster_t *s = sk_xcalloc(1, sizeof *s);
  s->key = key;
  s->refs = 1;
  s->p = p;
  s->n = c->nendpoints;
  px_breaker_config_t off;
  memset(&off, 0, sizeof off); /* no section: no limits */
  px_breaker_init(&s->breaker, c->breaker.enabled ? &c->breaker : &off);
  if (c->outlier.enabled && px_outlier_init(&s->outlier, &c->outlier, s->n) < 0)
    memset(&s->outlier, 0, sizeof s->outlier); /* out of memory: no outlier detection */
  s->unhealthy = sk_xcalloc(s->n + 1, sizeof *s->unhealthy);
  s->stats = sk_xcalloc(s->n + 1, sizeof *s->stats);
  for (size_t i = 0; i < s->n; i++) s->stats[i] = px_proxy_ep_stats(p, c->name, c->endpoints[i].addr);
  atomic_init(&s->brk_open, 0);
  if (p->f_breaker) {
    for (int k = 0; k < PX_BRK_NKINDS; k++) {
      const char *bv[2] = {c->name, px_brk_kind_name((px_brk_kind_t)k)};
      sk_gauge_with(p->f_breaker, bv, &s->m_breaker_open[k]);
      if (p->f_overflow) sk_counter_with(p->f_overflow, bv, &s->m_overflow[k]);
    }
  }
  return s;
}

px_scluster_t *px_share_cluster(px_proxy_t *p, const px_cluster_t *c) {
  char *key = cluster_key(c);
  if (!key) key = sk_xstrdup(c->name); /* open_memstream failed: name only */
  px_scluster_t *s;
  uv_mutex_lock(&p->mu);
  for (s = p->sclusters; s; s = s->next)
    if (!strcmp(s->key, key)) {
      s->refs++;
      break;
    }
  uv_mutex_unlock(&p->mu);
  if (s) {
    free(key);
    return s;
  }
  /* built outside the lock (px_proxy_ep_stats takes it), then inserted
   * unless another worker was quicker */
  px_scluster_t *fresh = scluster_new(p, c, key);
  uv_mutex_lock(&p->mu);
  for (s = p->sclusters; s; s = s->next)
    if (!strcmp(s->key, fresh->key)) {
      s->refs++;
      break;
    }
  if (!s) {
    fresh->next = p->sclusters;
    p->sclusters = fresh;
    s = fresh;
    fresh = NULL;
  }
  uv_mutex_unlock(&p->mu);
  scluster_free(fresh);
  return s;
}

px_scluster_t *px_share_cluster_ref(px_proxy_t *p, px_scluster_t *s) {
  uv_mutex_lock(&p->mu);
  s->refs++;
  uv_mutex_unlock(&p->mu);
  return s;
}

void px_share_cluster_unref(px_proxy_t *p, px_scluster_t *s) {
  if (!s) return;
  int last = 0;
  uv_mutex_lock(&p->mu);
  if (--s->refs == 0) {
    last = 1;
    for (px_scluster_t **pp = &p->sclusters; *pp; pp = &(*pp)->next)
      if (*pp == s) {
        *pp = s->next;
        break;
      }
  }
  uv_mutex_unlock(&p->mu);
  if (last) scluster_free(s);
}

void px_share_brk_note(px_scluster_t *s, px_brk_kind_t k) {
  unsigned bit = 1u << k;
  if (!s->m_breaker_open[k]) return;
  if (px_breaker_is_open(&s->breaker, k)) {
    if (!(atomic_fetch_or(&s->brk_open, bit) & bit)) sk_gauge_inc(s->m_breaker_open[k]);
  } else if (atomic_load_explicit(&s->brk_open, memory_order_relaxed) & bit) {
    if (atomic_fetch_and(&s->brk_open, ~bit) & bit) sk_gauge_dec(s->m_breaker_open[k]);
  }
}

void px_share_brk_overflow(px_scluster_t *s, px_brk_kind_t k) {
  if ((unsigned)k < PX_BRK_NKINDS) sk_counter_inc(s->m_overflow[k]);
}

/* ---- the upstream client gate: max_connections, max_pending_requests ----
 *
 * Every pool (sk_http_client: one per endpoint per worker) of a cluster
 * with either limit asks these hooks, on its worker's thread, before it
 * opens a connection and before a request queues for one. A pool refused a
 * connection keeps its requests queued (they count as pending) and asks
 * again every 10 ms, or sends them when one of its own connections frees.
 * A refusal also sets conn_demand and wakes every worker, which closes its
 * idle keep-alive connections to that cluster, so slots held by idle
 * connections elsewhere come back. */

static int gate_conn_open(void *ud) {
  px_scluster_t *s = ud;
  if (px_breaker_try_acquire(&s->breaker, PX_BRK_CONNECTIONS) < 0) {
    px_share_brk_overflow(s, PX_BRK_CONNECTIONS);
    px_share_brk_note(s, PX_BRK_CONNECTIONS);
    /* the slots may be held by idle connections of other pools (other
     * endpoints, other workers): ask them to let go */
    atomic_store(&s->conn_demand, 1);
    px_proxy_want_trim(s->p);
    return SK_ELIMIT;
  }
  if (atomic_load_explicit(&s->conn_demand, memory_order_relaxed)) atomic_store(&s->conn_demand, 0);
  px_share_brk_note(s, PX_BRK_CONNECTIONS);
  return 0;
}

static void gate_conn_closed(void *ud) {
  px_scluster_t *s = ud;
  px_breaker_release(&s->breaker, PX_BRK_CONNECTIONS);
  px_share_brk_note(s, PX_BRK_CONNECTIONS);
}

static int gate_wait_start(void *ud) {
  px_scluster_t *s = ud;
  if (px_breaker_try_acquire(&s->breaker, PX_BRK_PENDING) < 0) {
    px_share_brk_overflow(s, PX_BRK_PENDING);
    px_share_brk_note(s, PX_BRK_PENDING);
    return SK_ELIMIT;
  }
  px_share_brk_note(s, PX_BRK_PENDING);
  return 0;
}

static void gate_wait_end(void *ud) {
  px_scluster_t *s = ud;
  px_breaker_release(&s->breaker, PX_BRK_PENDING);
  px_share_brk_note(s, PX_BRK_PENDING);
}

static void gate_done(void *ud) {
  px_scluster_t *s = ud;
  px_share_cluster_unref(s->p, s);
}

int px_share_gate(px_scluster_t *s, const px_cluster_t *c, sk_http_client_gate_t *g) {
  memset(g, 0, sizeof *g);
  if (!c->breaker.enabled || (!c->breaker.max[PX_BRK_CONNECTIONS] && !c->breaker.max[PX_BRK_PENDING])) return 0;
  if (c->breaker.max[PX_BRK_CONNECTIONS]) {
    g->conn_open = gate_conn_open;
    g->conn_closed = gate_conn_closed;
  }
  if (c->breaker.max[PX_BRK_PENDING]) {
    g->wait_start = gate_wait_start;
    g->wait_end = gate_wait_end;
  }
  g->done = gate_done;
  g->ud = px_share_cluster_ref(s->p, s);
  g->retry_ms = 10;
  return 1;
}

/* ---- routes ---- */

static void sroute_free(px_sroute_t *s) {
  if (!s) return;
  px_ratelimit_done(&s->rl);
  free(s->key);
  free(s);
}

px_sroute_t *px_share_route(px_proxy_t *p, const px_route_t *r) {
  char *key = route_key(r);
  px_sroute_t *s;
  uv_mutex_lock(&p->mu);
  for (s = p->sroutes; s; s = s->next)
    if (!strcmp(s->key, key)) break;
  if (s) {
    s->refs++;
    free(key);
  } else {
    s = sk_xcalloc(1, sizeof *s);
    s->key = key;
    s->refs = 1;
    if (r->rate_limit.enabled && px_ratelimit_init(&s->rl, &r->rate_limit) < 0)
      memset(&s->rl, 0, sizeof s->rl); /* out of memory: no limit (cfg.enabled 0) */
    atomic_init(&s->budget.active_requests, 0);
    atomic_init(&s->budget.active_retries, 0);
    s->next = p->sroutes;
    p->sroutes = s;
  }
  uv_mutex_unlock(&p->mu);
  return s;
}

void px_share_route_unref(px_proxy_t *p, px_sroute_t *s) {
  if (!s) return;
  int last = 0;
  uv_mutex_lock(&p->mu);
  if (--s->refs == 0) {
    last = 1;
    for (px_sroute_t **pp = &p->sroutes; *pp; pp = &(*pp)->next)
      if (*pp == s) {
        *pp = s->next;
        break;
      }
  }
  uv_mutex_unlock(&p->mu);
  if (last) sroute_free(s);
}

/* ---- health probers ---- */

static void prober_change(void *ud, size_t i, int healthy) {
  px_prober_t *pr = ud;
  px_scluster_t *s = pr->sh;
  if (i >= s->n) return;
  uint8_t un = !healthy;
  uint8_t was = atomic_exchange(&s->unhealthy[i], un);
  if (was == un) return;
  if (un) atomic_fetch_add(&s->stats[i]->unhealthy, 1);
  else atomic_fetch_sub(&s->stats[i]->unhealthy, 1);
}

int px_prober_new(px_worker_t *w, px_config_t *cfg, size_t ci, px_scluster_t *sh, px_prober_t **out) {
  const px_cluster_t *c = &cfg->clusters[ci];
  px_prober_t *pr = sk_xcalloc(1, sizeof *pr);
  pr->p = w->p;
  pr->sh = px_share_cluster_ref(w->p, sh);
  /* the prober may outlive the generation that made it (it is kept across
   * reloads that leave the cluster alone): keep c's config alive with it */
  pr->cfg = px_config_ref(cfg);
  px_hc_target_t *tg = sk_xcalloc(c->nendpoints + 1, sizeof *tg);
  for (size_t i = 0; i < c->nendpoints; i++)
    tg[i] = (px_hc_target_t){c->endpoints[i].host, c->endpoints[i].port, c->tls, c->sni};
  int rc = px_hc_runner_new(&w->loop, &c->health, tg, c->nendpoints, px_rng_next(&w->rng), prober_change, pr, &pr->r);
  free(tg);
  if (rc < 0) {
    px_share_cluster_unref(w->p, pr->sh);
    px_config_unref(pr->cfg);
    free(pr);
    *out = NULL;
    return rc;
  }
  *out = pr;
  return 0;
}

void px_prober_free(px_prober_t *pr) {
  if (!pr) return;
  px_hc_runner_free(pr->r); /* no more verdicts after this */
  /* the verdicts go with the prober: endpoints count as healthy again */
  for (size_t i = 0; i < pr->sh->n; i++) prober_change(pr, i, 1);
  px_share_cluster_unref(pr->p, pr->sh);
  px_config_unref(pr->cfg);
  free(pr);
}
