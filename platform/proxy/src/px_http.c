/* px_http.c - the L7 data path: route, limit, fault, pick, forward, retry,
 * answer. One px_txn_t per request (from a per-worker free list, so the
 * hot path does not malloc), one px_try_t per upstream try. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "px_int.h"
#include "skiff/err.h"

struct px_try {
  px_txn_t *t;
  px_ep_t *ep;
  px_wcluster_t *wc;
  size_t ep_index;
  uint64_t start_ns;
  int stale;  /* the txn moved on (timeout, abort): ignore the answer */
  int retry;  /* counted as a retry in budget and breaker */
  sk_span_t span; /* CLIENT span (px_trace.c) */
  px_try_t *next_free, *all_next;
};

enum { T2_NONE = 0, T2_FAULT, T2_BACKOFF, T2_PER_TRY, T2_START };

struct px_txn {
  px_worker_t *w;
  px_gen_t *gen;
  sk_http_req_t *req; /* NULL once the client went away */
  const px_route_t *rt;
  px_wroute_t *wr;
  px_wcluster_t *wc;
  const char *listener;
  uv_timer_t deadline; /* route timeout, re-armed lazily (on_deadline) */
  uint64_t deadline_due; /* loop time (ms) of the route timeout, 0 = none */
  uv_timer_t t2;       /* fault delay, retry backoff, per-try timeout */
  int t2_mode;
  px_try_t *cur;
  int outstanding;
  int done;
  int freed; /* on the free list */
  uint32_t attempts;
  const char *target;
  sk_http_header_t *hdrs;
  size_t nh;
  const char *request_id;
  px_trace_t trace;
  uint64_t upstream_ns;
  const char *endpoint;
  int fault_abort; /* status to answer after a fault delay, 0 = none */
  uint64_t fault_delay_ms; /* injected delay, echoed in PX_HDR_FAULT_DELAY (resil) */
  sk_span_t span; /* SERVER span (px_trace.c) */
  px_txn_t *next_free, *all_next;
};

/* ---- free lists ---- */

static px_txn_t *txn_get(px_worker_t *w) {
  px_txn_t *t = w->free_txns;
  if (t) {
    w->free_txns = t->next_free;
  } else {
    t = sk_xcalloc(1, sizeof *t);
    uv_timer_init(&w->loop, &t->deadline);
    uv_timer_init(&w->loop, &t->t2);
    t->deadline.data = t;
    t->t2.data = t;
    t->all_next = w->all_txns;
    w->all_txns = t;
  }
  px_txn_t *keep_all = t->all_next;
  uv_timer_t d = t->deadline, t2 = t->t2;
  memset(t, 0, sizeof *t);
  t->deadline = d;
  t->t2 = t2;
  t->all_next = keep_all;
  t->w = w;
  __atomic_fetch_add(&w->live_txns, 1, __ATOMIC_RELAXED); /* read by the metrics thread */
  return t;
}

static void txn_maybe_free(px_txn_t *t) {
  if (!t->done || t->outstanding > 0 || t->freed) return;
  px_worker_t *w = t->w;
  t->freed = 1;
  sk_span_discard(&t->span);
  /* the deadline timer may stay armed for the next txn on this slot (see
   * on_deadline); it holds no loop open meanwhile */
  t->deadline_due = 0;
  uv_unref((uv_handle_t *)&t->deadline);
  uv_timer_stop(&t->t2);
  px_gen_unref(t->gen);
  t->gen = NULL;
  t->next_free = w->free_txns;
  w->free_txns = t;
  __atomic_fetch_sub(&w->live_txns, 1, __ATOMIC_RELAXED);
  /* a try that outlived its answer (timed out, abandoned) may be the last
   * thing a drain waits for */
  if (w->draining) px_worker_check_drained(w);
}

static px_try_t *try_get(px_worker_t *w) {
  px_try_t *y = w->free_tries;
  if (y) {
    w->free_tries = y->next_free;
  } else {
    y = sk_xcalloc(1, sizeof *y);
    y->all_next = w->all_tries;
    w->all_tries = y;
  }
  px_try_t *keep = y->all_next;
  memset(y, 0, sizeof *y);
  y->all_next = keep;
  return y;
}

static void try_put(px_worker_t *w, px_try_t *y) {
  y->next_free = w->free_tries;
  w->free_tries = y;
}

void px_http_worker_done(px_worker_t *w) {
  /* the loop has closed every handle (timers included) */
  for (px_txn_t *t = w->all_txns, *n; t; t = n) {
    n = t->all_next;
    free(t);
  }
  for (px_try_t *y = w->all_tries, *n; y; y = n) {
    n = y->all_next;
    free(y);
  }
  w->all_txns = w->free_txns = NULL;
  w->all_tries = w->free_tries = NULL;
}

/* ---- answers ---- */

static void local_reply(sk_http_req_t *req, int status, const char *reason, const sk_http_header_t *extra,
                        size_t nextra) {
  sk_http_header_t h[4];
  size_t n = 0;
  h[n++] = (sk_http_header_t){"x-skiff-reason", reason};
  h[n++] = (sk_http_header_t){"content-type", "text/plain; charset=utf-8"};
  for (size_t i = 0; i < nextra && n < 4; i++) h[n++] = extra[i];
  char *body = sk_pool_printf(req->pool, "%s\n", reason);
  sk_http_respond(req, status, h, n, body, strlen(body));
}

/* Log and count the answer; must run before the response is sent (the
 * server may free the request as soon as the response ends). */
static void account(px_txn_t *t, int status, const char *reason, size_t bytes) {
  px_worker_t *w = t->w;
  if (!t->req) return;
  const char *cluster = t->wc ? t->wc->cfg->name : NULL;
  px_access_log(w, t->gen->cfg, t->req, t->listener, status, reason, t->rt ? t->rt->name : NULL, cluster,
                t->endpoint, t->upstream_ns, bytes, t->request_id, t->trace.trace_id[0] ? t->trace.trace_id : NULL,
                t->trace.parent_id[0] ? t->trace.parent_id : NULL, t->attempts);
  px_trace_server_end(&t->span, status, reason, cluster);
  uint64_t dur_ns = uv_hrtime() - t->req->start_ns;
  px_obs_request(w, t->rt, cluster, status, dur_ns);
  if (t->wc && t->wc->m_duration) sk_histogram_observe(t->wc->m_duration, (double)dur_ns / 1e9);
  sk_http_req_on_abort(t->req, NULL, NULL);
}

/* After the response went out: the txn is done. */
static void finish(px_txn_t *t) {
  if (t->wr) px_budget_request_end(t->wr->budget);
  t->wr = NULL;
  t->req = NULL;
  t->done = 1;
  if (t->cur) t->cur->stale = 1;
  t->cur = NULL;
  txn_maybe_free(t);
}

static void fail(px_txn_t *t, int status, const char *reason) {
  sk_http_req_t *req = t->req;
  account(t, status, reason, strlen(reason) + 1);
  if (req) local_reply(req, status, reason, NULL, 0);
  finish(t);
}

static void on_abort(sk_http_req_t *req, void *ud) {
  px_txn_t *t = ud;
  (void)req;
  px_trace_server_abort(&t->span);
  if (t->wr) px_budget_request_end(t->wr->budget);
  t->wr = NULL;
  t->req = NULL;
  t->done = 1;
  if (t->cur) t->cur->stale = 1;
  t->cur = NULL;
  txn_maybe_free(t);
}

/* ---- upstream ---- */

static int ep_available(px_worker_t *w, px_wcluster_t *wc, size_t i, uint64_t now) {
  px_ep_t *ep = wc->eps[i];
  int ej = wc->outlier ? px_outlier_is_ejected(wc->outlier, i, now) : 0; /* process-wide */
  if ((uint32_t)ej != atomic_load_explicit(&ep->stats->ejected, memory_order_relaxed))
    atomic_store_explicit(&ep->stats->ejected, (uint32_t)ej, memory_order_relaxed); /* for /clusters */
  (void)w;
  return !ej && !px_share_unhealthy(wc->sh, i);
}

static long pick_ep(px_worker_t *w, px_wcluster_t *wc) {
  size_t n = wc->n;
  uint64_t now = uv_hrtime();
  if (n == 0) return -1;
  if (wc->cfg->lb == PX_LB_LEAST_REQUEST && n > 1) {
    for (int k = 0; k < 4; k++) {
      size_t a = (size_t)px_rng_below(&w->rng, n), b = (size_t)px_rng_below(&w->rng, n - 1);
      if (b >= a) b++;
      int oa = ep_available(w, wc, a, now), ob = ep_available(w, wc, b, now);
      if (oa && ob) return wc->eps[a]->active <= wc->eps[b]->active ? (long)a : (long)b;
      if (oa) return (long)a;
      if (ob) return (long)b;
    }
  }
  for (size_t k = 0; k < n; k++) {
    size_t i = wc->rr++ % n;
    if (ep_available(w, wc, i, now)) return (long)i;
  }
  return -1;
}

static void start_try(px_txn_t *t, int is_retry);

static void on_t2(uv_timer_t *h);
static void after_fault(px_txn_t *t);
static void mirror(px_txn_t *t);

static const char *error_reason(px_outcome_t o, int err, int *status) {
  switch (o) {
  case PX_OUT_CONNECT_FAILURE:
    *status = 503;
    return err == SK_ETIMEDOUT ? "upstream_connect_timeout" : "upstream_connect_failure";
  case PX_OUT_TIMEOUT: *status = 504; return "upstream_timeout";
  default: *status = 502; return "upstream_reset";
  }
}

static void count_upstream(px_ep_t *ep, int err, int status) {
  int cls = err < 0 ? 5 : (status >= 100 && status < 600 ? status / 100 - 1 : 5);
  if (!ep->m_rq[cls] && ep->w->p->f_upstream) {
    const char *v[3] = {ep->stats->cluster, ep->stats->addr, px_upstream_classes[cls]};
    sk_counter_with(ep->w->p->f_upstream, v, &ep->m_rq[cls]);
  }
  sk_counter_inc(ep->m_rq[cls]);
}

/* The answer of one try (or its failure). */
static void try_done(px_try_t *y, int err, sk_http_resp_t *resp, int timed_out) {
  px_txn_t *t = y->t;
  px_worker_t *w = t->w;
  px_wcluster_t *wc = y->wc;
  uint64_t now = uv_hrtime();
  int status = resp ? resp->status : 0;
  px_outcome_t out = PX_OUT_RESPONSE;
  if (timed_out) {
    out = PX_OUT_TIMEOUT;
  } else if (err < 0) {
    uint64_t elapsed_ms = (now - y->start_ns) / PX_MS;
    int sent = !(err == SK_ETIMEDOUT && elapsed_ms < wc->cfg->connect_timeout_ms + 50);
    if (err == SK_ECONNREFUSED) sent = 0;
    out = px_outcome_from_err(err, sent);
  }
  if (y->span.recording) {
    int est = 0;
    px_trace_try_end(&y->span, status, err < 0 || timed_out ? error_reason(out, err, &est) : NULL);
  }
  if (y->ep->m_duration) sk_histogram_observe(y->ep->m_duration, (double)(now - y->start_ns) / 1e9);
  if (wc->outlier && (err < 0 || timed_out || resp)) {
    px_outlier_event_t ev = px_outlier_on_result(wc->outlier, y->ep_index, out, status, now);
    if (ev == PX_OUTLIER_EJECTED) {
      atomic_fetch_add(&y->ep->stats->ejections, 1);
      sk_counter_inc(wc->m_ejections);
      ep_available(w, wc, y->ep_index, now);
    }
  }
  if (t->done || !t->req) return;
  t->cur = NULL;
  if (t->t2_mode == T2_PER_TRY) {
    uv_timer_stop(&t->t2);
    t->t2_mode = T2_NONE;
  }
  t->upstream_ns += now - y->start_ns;
  t->endpoint = wc->cfg->endpoints[y->ep_index].addr;
  const px_route_t *rt = t->rt;
  if (rt->retry.enabled) {
    px_retry_decision_t d = px_retry_should(&rt->retry, t->attempts, out, status, t->wr->budget);
    if (d == PX_RETRY_YES && px_breaker_try_acquire(wc->breaker, PX_BRK_RETRIES) == 0) {
      px_breaker_release(wc->breaker, PX_BRK_RETRIES); /* taken again when the try starts */
      sk_counter_inc(wc->m_retries);
      uint64_t ms = px_retry_backoff_ms(&rt->retry, t->attempts, &w->rng);
      t->t2_mode = T2_BACKOFF;
      uv_timer_start(&t->t2, on_t2, ms, 0);
      return;
    }
    if (d == PX_RETRY_YES) px_share_brk_overflow(wc->sh, PX_BRK_RETRIES); /* max_retries */
  }
  if (err < 0 || timed_out) {
    int st;
    const char *reason = error_reason(out, err, &st);
    fail(t, st, reason);
    return;
  }
  sk_http_header_t *h;
  sk_http_req_t *req = t->req;
  size_t n = px_downstream_headers(&resp->headers, &rt->resp_hdrs, req->pool, &h);
  if (t->fault_delay_ms) { /* say that a delay was injected (resil) */
    sk_http_header_t *h2 = sk_pool_alloc(req->pool, (n + 1) * sizeof *h2);
    if (n) memcpy(h2, h, n * sizeof *h2);
    h2[n++] = (sk_http_header_t){PX_HDR_FAULT_DELAY, sk_pool_printf(req->pool, "%llu", (unsigned long long)t->fault_delay_ms)};
    h = h2;
  }
  account(t, resp->status, NULL, resp->body_len);
  sk_http_respond(req, resp->status, h, n, resp->body, resp->body_len);
  finish(t);
}

/* Keeps skiff_proxy_circuit_open{cluster,kind} in step with the cluster's
 * (process-wide) breaker: called after every acquire/release of a kind. */
static void brk_note(px_wcluster_t *wc, px_brk_kind_t k) { px_share_brk_note(wc->sh, k); }

static void try_release(px_try_t *y) {
  px_txn_t *t = y->t;
  y->ep->active--;
  atomic_fetch_sub(&y->ep->stats->active, 1);
  px_breaker_release(y->wc->breaker, PX_BRK_REQUESTS);
  brk_note(y->wc, PX_BRK_REQUESTS);
  if (y->retry) {
    px_breaker_release(y->wc->breaker, PX_BRK_RETRIES);
    brk_note(y->wc, PX_BRK_RETRIES);
    if (t->wr) px_budget_retry_end(t->wr->budget);
  }
  t->outstanding--;
}

static void on_upstream(int err, sk_http_resp_t *resp, void *ud) {
  px_try_t *y = ud;
  px_txn_t *t = y->t;
  count_upstream(y->ep, err, resp ? resp->status : 0);
  px_worker_t *w = t->w;
  try_release(y);
  /* answering downstream may dispatch the connection's next request at
   * once; its upstream try must not start inside this client callback */
  w->in_upstream_cb++;
  t->outstanding++; /* keeps t off the free list while it answers */
  if (!y->stale) try_done(y, err, resp, 0);
  px_trace_try_end(&y->span, resp ? resp->status : 0, "canceled"); /* stale: the txn moved on */
  t->outstanding--;
  w->in_upstream_cb--;
  try_put(w, y);
  txn_maybe_free(t);
}

static void on_mirror(int err, sk_http_resp_t *resp, void *ud) {
  (void)err;
  (void)resp;
  (void)ud;
}

static void start_try(px_txn_t *t, int is_retry) {
  px_worker_t *w = t->w;
  px_wcluster_t *wc = t->wc;
  long i = pick_ep(w, wc);
  if (i < 0) {
    fail(t, 503, PX_REASON_NO_HEALTHY_UPSTREAM);
    return;
  }
  if (px_breaker_try_acquire(wc->breaker, PX_BRK_REQUESTS) < 0) {
    px_share_brk_overflow(wc->sh, PX_BRK_REQUESTS);
    fail(t, 503, PX_REASON_CIRCUIT_OPEN);
    return;
  }
  brk_note(wc, PX_BRK_REQUESTS);
  if (is_retry && px_breaker_try_acquire(wc->breaker, PX_BRK_RETRIES) < 0) is_retry = 0;
  if (is_retry) brk_note(wc, PX_BRK_RETRIES);
  px_try_t *y = try_get(w);
  px_ep_t *ep = wc->eps[i];
  y->t = t;
  y->ep = ep;
  y->wc = wc;
  y->ep_index = (size_t)i;
  y->start_ns = uv_hrtime();
  y->retry = is_retry;
  if (is_retry) px_budget_retry_start(t->wr->budget);
  ep->active++;
  atomic_fetch_add(&ep->stats->active, 1);
  atomic_fetch_add(&ep->stats->requests, 1);
  t->outstanding++;
  t->attempts++;
  t->cur = y;
  px_trace_try_begin(w, &y->span, &t->span, t->req, t->rt, wc->cfg, wc->cfg->endpoints[i].addr, t->attempts, t->hdrs,
                     t->nh);
  if (t->rt->retry.enabled && t->rt->retry.per_try_timeout_ms) {
    t->t2_mode = T2_PER_TRY;
    uv_timer_start(&t->t2, on_t2, t->rt->retry.per_try_timeout_ms, 0);
  }
  sk_http_req_t *req = t->req;
  int rc = sk_http_client_request(ep->client, req->method, t->target, t->hdrs, t->nh, req->body, req->body_len,
                                  on_upstream, y);
  if (rc == SK_ELIMIT) { /* max_pending_requests (the pool's gate): our answer, not an upstream failure */
    try_release(y);
    t->cur = NULL;
    px_trace_try_end(&y->span, 0, PX_REASON_CIRCUIT_OPEN);
    try_put(w, y);
    fail(t, 503, PX_REASON_CIRCUIT_OPEN);
  } else if (rc < 0) {
    y->stale = 0;
    on_upstream(SK_ECONNREFUSED, NULL, y);
  }
}

static void on_t2(uv_timer_t *h) {
  px_txn_t *t = h->data;
  int mode = t->t2_mode;
  t->t2_mode = T2_NONE;
  if (t->done || !t->req) return;
  if (mode == T2_BACKOFF) {
    start_try(t, 1);
  } else if (mode == T2_START) {
    mirror(t);
    start_try(t, 0);
  } else if (mode == T2_PER_TRY) {
    px_try_t *y = t->cur;
    if (!y) return;
    y->stale = 1;
    try_done(y, SK_ETIMEDOUT, NULL, 1);
  } else if (mode == T2_FAULT) {
    after_fault(t); /* continue where the fault delay paused */
  }
}

/* The deadline timer of a txn slot is not stopped when the txn ends: the
 * next txn on the slot keeps it when it fires no later than its own
 * deadline, and here it re-arms for what is left, so a request normally
 * costs no timer operation. */
static void on_deadline(uv_timer_t *h) {
  px_txn_t *t = h->data;
  if (t->freed || t->done || !t->req || !t->deadline_due) return;
  uint64_t now = uv_now(h->loop);
  if (now < t->deadline_due) {
    uv_timer_start(h, on_deadline, t->deadline_due - now, 0);
    return;
  }
  uv_timer_stop(&t->t2);
  t->t2_mode = T2_NONE;
  if (t->cur) {
    px_try_t *y = t->cur;
    y->stale = 1;
    px_trace_try_end(&y->span, 0, "upstream_timeout");
    t->upstream_ns += uv_hrtime() - y->start_ns;
    t->endpoint = t->wc->cfg->endpoints[y->ep_index].addr;
  }
  fail(t, 504, "upstream_timeout");
}

static void mirror(px_txn_t *t) {
  const px_route_t *rt = t->rt;
  if (rt->mirror_cluster < 0 || !px_rng_chance(&t->w->rng, rt->mirror_ppm)) return;
  px_wcluster_t *mc = &t->gen->clusters[rt->mirror_cluster];
  long i = pick_ep(t->w, mc);
  if (i < 0) return;
  sk_http_req_t *req = t->req;
  sk_http_client_request(mc->eps[i]->client, req->method, t->target, t->hdrs, t->nh, req->body, req->body_len,
                         on_mirror, NULL);
}

static int pick_cluster(px_txn_t *t) {
  const px_route_t *rt = t->rt;
  const sk_http_req_t *req = t->req;
  for (size_t i = 0; i < rt->noverrides; i++) {
    const px_override_t *o = &rt->overrides[i];
    const char *v = sk_http_headers_get(&req->headers, o->header);
    if (v && (!o->value || !strcmp(v, o->value))) return o->cluster;
  }
  if (rt->nbackends == 1) return rt->backends[0].cluster;
  uint64_t r = px_rng_below(&t->w->rng, rt->total_weight);
  for (size_t i = 0; i < rt->nbackends; i++) {
    if (r < rt->backends[i].weight) return rt->backends[i].cluster;
    r -= rt->backends[i].weight;
  }
  return rt->backends[rt->nbackends - 1].cluster;
}

static void after_fault(px_txn_t *t) {
  if (t->fault_abort) {
    fail(t, t->fault_abort, PX_REASON_FAULT_ABORT);
    return;
  }
  int ci = pick_cluster(t);
  t->wc = &t->gen->clusters[ci];
  t->target = px_rewrite_target(t->rt, t->req, t->req->pool);
  if (t->rt->timeout_ms) {
    uint64_t ms = t->rt->timeout_ms;
    t->deadline_due = uv_now(&t->w->loop) + ms;
    if (!uv_is_active((uv_handle_t *)&t->deadline) || uv_timer_get_due_in(&t->deadline) > ms)
      uv_timer_start(&t->deadline, on_deadline, ms, 0);
    uv_ref((uv_handle_t *)&t->deadline);
  }
  if (t->w->in_upstream_cb) {
    t->t2_mode = T2_START;
    uv_timer_start(&t->t2, on_t2, 0, 0);
    return;
  }
  mirror(t);
  start_try(t, 0);
}

void px_http_handle(sk_http_req_t *req, void *ud) {
  px_wlistener_t *wl = ud;
  px_worker_t *w = wl->w;
  px_gen_t *g = w->gen;
  if (!g || wl->idx < 0) {
    local_reply(req, 503, "no_listener_config", NULL, 0);
    return;
  }
  const px_config_t *cfg = g->cfg;
  const px_listener_t *l = &cfg->listeners[wl->idx];
  px_match_req_t mr = {req->method, req->authority, req->path, req->query, &req->headers, req->peer_spiffe};
  const px_route_t *rt = px_route_match(cfg, l, &mr);
  px_txn_t *t = txn_get(w);
  t->gen = px_gen_ref(g);
  t->req = req;
  t->rt = rt;
  t->listener = l->name;
  /* trace context and request id, also for answers of our own */
  t->nh = px_upstream_headers(req, rt ? &rt->req_hdrs : NULL, l->xfcc, &w->rng, req->pool, &t->hdrs, &t->request_id,
                              &t->trace);
  px_trace_server_begin(w, req, rt, &t->span, &t->trace, t->hdrs, t->nh);
  if (!rt) {
    fail(t, 404, "no_route");
    return;
  }
  t->wr = &g->routes[rt->index];
  px_budget_request_start(t->wr->budget);
  sk_http_req_on_abort(req, on_abort, t);
  if (rt->rate_limit.enabled) {
    char key[300];
    uint32_t ra = 1;
    px_ratelimit_key(&rt->rate_limit, req, key, sizeof key);
    if (!px_ratelimit_allow(t->wr->rl, key, uv_hrtime(), &ra)) {
      char v[16];
      snprintf(v, sizeof v, "%u", ra);
      sk_http_header_t h = {"retry-after", v};
      account(t, 429, PX_REASON_RATE_LIMITED, strlen(PX_REASON_RATE_LIMITED) + 1);
      local_reply(req, 429, PX_REASON_RATE_LIMITED, &h, 1);
      finish(t);
      return;
    }
  }
  if (rt->fault.enabled) {
    px_fault_decision_t d = {0};
    if (px_fault_decide(&rt->fault, &w->rng, &d)) {
      t->fault_abort = d.abort_status;
      if (d.delay_ms) {
        t->fault_delay_ms = d.delay_ms;
        t->t2_mode = T2_FAULT;
        uv_timer_start(&t->t2, on_t2, d.delay_ms, 0);
        return;
      }
    }
  }
  after_fault(t);
}
