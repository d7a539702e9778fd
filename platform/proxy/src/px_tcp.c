/* px_tcp.c - L4 listeners: a byte pump between the accepted connection and
 * one connection to a cluster endpoint, with backpressure (a side stops
 * reading while the other's write queue is large) and the L4 faults of
 * px_resil.h (drop at accept, per-chunk delay or reset). */
#include <stdlib.h>
#include <string.h>

#include "px_int.h"
#include "skiff/err.h"

#define PX_TCP_HIGH_WATER (256 * 1024)

typedef struct chunk {
  struct chunk *next;
  uint64_t due_ns;
  size_t len;
  uint8_t data[];
} chunk_t;

typedef struct px_tpair px_tpair_t;

typedef struct dir {
  px_tpair_t *p;
  uv_timer_t timer; /* delayed chunks (only when a delay fault is set) */
  chunk_t *head, *tail;
  size_t queued;
  uint64_t next_free_ns; /* bandwidth fault: when the link is free again (resil) */
} dir_t;

struct px_tpair {
  px_worker_t *w;
  px_gen_t *gen;
  const px_l4_fault_config_t *fault;
  sk_conn_t *down, *up;
  int up_connecting;
  int closing;
  int handles; /* open timers */
  int has_timers;
  dir_t d[2]; /* 0: down -> up, 1: up -> down */
  sk_buf_t early; /* bytes from downstream before the upstream connected */
};

static void pair_maybe_free(px_tpair_t *p);

static void timer_closed(uv_handle_t *h) {
  dir_t *d = h->data;
  px_tpair_t *p = d->p;
  p->handles--;
  pair_maybe_free(p);
}

static void pair_maybe_free(px_tpair_t *p) {
  if (p->down || p->up || p->up_connecting) return;
  if (p->has_timers && !p->closing) {
    p->closing = 1;
    for (int i = 0; i < 2; i++) {
      uv_timer_stop(&p->d[i].timer);
      uv_close((uv_handle_t *)&p->d[i].timer, timer_closed);
    }
    return;
  }
  if (p->handles > 0) return;
  for (int i = 0; i < 2; i++)
    for (chunk_t *c = p->d[i].head, *n; c; c = n) {
      n = c->next;
      free(c);
    }
  sk_buf_done(&p->early);
  px_worker_t *w = p->w;
  __atomic_fetch_sub(&w->tcp_conns, 1, __ATOMIC_RELAXED); /* read by the metrics thread */
  px_gen_unref(p->gen);
  free(p);
  if (w->draining) px_worker_check_drained(w); /* the last relay may be what a drain waits for */
}

static sk_conn_t *dst(px_tpair_t *p, int dir) { return dir == 0 ? p->up : p->down; }
static sk_conn_t *src(px_tpair_t *p, int dir) { return dir == 0 ? p->down : p->up; }

static void shut_both(px_tpair_t *p, int abort) {
  if (p->down) abort ? sk_conn_abort(p->down) : sk_conn_close(p->down);
  if (p->up) abort ? sk_conn_abort(p->up) : sk_conn_close(p->up);
}

static void forward(px_tpair_t *p, int dir, const uint8_t *data, size_t len) {
  sk_conn_t *to = dst(p, dir), *from = src(p, dir);
  if (!to) return;
  sk_conn_write(to, data, len);
  if (from && sk_conn_write_queued(to) > PX_TCP_HIGH_WATER) sk_conn_read_stop(from);
}

static void on_delay_timer(uv_timer_t *t) {
  dir_t *d = t->data;
  px_tpair_t *p = d->p;
  uint64_t now = uv_hrtime();
  while (d->head && d->head->due_ns <= now) {
    chunk_t *c = d->head;
    d->head = c->next;
    if (!d->head) d->tail = NULL;
    d->queued -= c->len;
    forward(p, (int)(d - p->d), c->data, c->len);
    free(c);
  }
  /* the delay queue went down: resume reading unless the writer is full (resil) */
  sk_conn_t *to = dst(p, (int)(d - p->d)), *from = src(p, (int)(d - p->d));
  if (from && to && d->queued <= PX_TCP_HIGH_WATER && sk_conn_write_queued(to) <= PX_TCP_HIGH_WATER)
    sk_conn_read_start(from);
  if (d->head) uv_timer_start(&d->timer, on_delay_timer, (d->head->due_ns - now) / PX_MS + 1, 0);
}

static void relay(px_tpair_t *p, int dir, const uint8_t *data, size_t len) {
  const px_l4_fault_config_t *f = p->fault;
  if (f && f->enabled) {
    px_l4_decision_t dec = {0};
    px_l4_fault_chunk(f, &p->w->rng, &dec);
    if (dec.close) {
      shut_both(p, 1);
      return;
    }
    uint64_t now = uv_hrtime();
    uint64_t leave = p->has_timers ? px_l4_fault_pace(f, &p->d[dir].next_free_ns, len, now) : now;
    if ((dec.delay_ms || p->d[dir].head || leave > now) && p->has_timers) {
      dir_t *d = &p->d[dir];
      chunk_t *c = sk_xmalloc(sizeof *c + len);
      c->next = NULL;
      c->due_ns = leave + dec.delay_ms * PX_MS;
      /* never overtake a chunk still waiting: the byte stream keeps its order (resil) */
      if (d->tail && d->tail->due_ns > c->due_ns) c->due_ns = d->tail->due_ns;
      c->len = len;
      memcpy(c->data, data, len);
      if (d->tail) d->tail->next = c;
      else d->head = c;
      d->tail = c;
      d->queued += len;
      if (!uv_is_active((uv_handle_t *)&d->timer))
        uv_timer_start(&d->timer, on_delay_timer, (c->due_ns - now + PX_MS - 1) / PX_MS, 0);
      sk_conn_t *from = src(p, dir);
      if (from && d->queued > PX_TCP_HIGH_WATER) sk_conn_read_stop(from);
      return;
    }
  }
  forward(p, dir, data, len);
}

static void down_data(sk_conn_t *c, const uint8_t *data, size_t len) {
  px_tpair_t *p = sk_conn_get_data(c);
  if (!p->up) {
    sk_buf_append(&p->early, data, len);
    if (p->early.len > PX_TCP_HIGH_WATER) sk_conn_read_stop(c);
    return;
  }
  relay(p, 0, data, len);
}

static void up_data(sk_conn_t *c, const uint8_t *data, size_t len) {
  px_tpair_t *p = sk_conn_get_data(c);
  relay(p, 1, data, len);
}

static void down_drain(sk_conn_t *c) {
  px_tpair_t *p = sk_conn_get_data(c);
  if (p->up && p->d[1].queued <= PX_TCP_HIGH_WATER) sk_conn_read_start(p->up);
}

static void up_drain(sk_conn_t *c) {
  px_tpair_t *p = sk_conn_get_data(c);
  if (p->down && p->d[0].queued <= PX_TCP_HIGH_WATER) sk_conn_read_start(p->down);
}

static void down_close(sk_conn_t *c, int err) {
  px_tpair_t *p = sk_conn_get_data(c);
  p->down = NULL;
  if (p->up) {
    if (err == 0 || err == SK_ECLOSED) sk_conn_close(p->up);
    else sk_conn_abort(p->up);
  }
  pair_maybe_free(p);
}

static void up_close(sk_conn_t *c, int err) {
  px_tpair_t *p = sk_conn_get_data(c);
  p->up = NULL;
  if (p->down) {
    if (err == 0 || err == SK_ECLOSED) sk_conn_close(p->down);
    else sk_conn_abort(p->down);
  }
  pair_maybe_free(p);
}

static const sk_conn_cbs_t down_cbs = {down_data, down_close, down_drain};
static const sk_conn_cbs_t up_cbs = {up_data, up_close, up_drain};

static void on_up(sk_conn_t *c, int err, void *ud) {
  px_tpair_t *p = ud;
  p->up_connecting = 0;
  if (err < 0 || !c) {
    if (p->down) sk_conn_abort(p->down);
    pair_maybe_free(p);
    return;
  }
  sk_conn_set_cbs(c, &up_cbs, p);
  p->up = c;
  if (!p->down) {
    sk_conn_close(c);
    return;
  }
  if (p->early.len) {
    relay(p, 0, (const uint8_t *)p->early.data, p->early.len);
    sk_buf_reset(&p->early);
  }
  if (p->down) sk_conn_read_start(p->down);
}

void px_tcp_accept(sk_listener_t *l, sk_conn_t *c, void *ud) {
  (void)l;
  px_wlistener_t *wl = ud;
  px_worker_t *w = wl->w;
  px_gen_t *g = w->gen;
  px_tpair_t *p = sk_xcalloc(1, sizeof *p);
  p->w = w;
  p->down = c;
  __atomic_fetch_add(&w->tcp_conns, 1, __ATOMIC_RELAXED);
  sk_conn_set_cbs(c, &down_cbs, p);
  if (!g || wl->idx < 0) {
    sk_conn_abort(c);
    return;
  }
  p->gen = px_gen_ref(g);
  const px_listener_t *lc = &g->cfg->listeners[wl->idx];
  p->fault = &lc->l4_fault;
  if (lc->l4_fault.enabled && px_l4_fault_drop(&lc->l4_fault, &w->rng)) {
    sk_conn_abort(c);
    return;
  }
  if (lc->l4_fault.enabled && (lc->l4_fault.delay_ms || lc->l4_fault.bandwidth_bps)) {
    p->has_timers = 1;
    for (int i = 0; i < 2; i++) {
      p->d[i].p = p;
      uv_timer_init(&w->loop, &p->d[i].timer);
      p->d[i].timer.data = &p->d[i];
      p->handles++;
    }
  }
  px_wcluster_t *wc = &g->clusters[lc->cluster];
  const px_cluster_t *cc = wc->cfg;
  long idx = -1;
  uint64_t now = uv_hrtime();
  for (size_t k = 0; k < wc->n; k++) {
    size_t i = wc->rr++ % wc->n;
    if (!(wc->outlier && px_outlier_is_ejected(wc->outlier, i, now)) && !px_share_unhealthy(wc->sh, i)) {
      idx = (long)i;
      break;
    }
  }
  if (idx < 0) {
    sk_conn_abort(c);
    return;
  }
  sk_conn_read_stop(c);
  sk_connect_opts_t co = {.host = cc->endpoints[idx].host,
                          .port = cc->endpoints[idx].port,
                          .tls = cc->tls,
                          .sni = cc->sni,
                          .timeout_ms = cc->connect_timeout_ms};
  p->up_connecting = 1;
  if (sk_conn_connect(&w->loop, &co, on_up, p) < 0) {
    p->up_connecting = 0;
    sk_conn_abort(c);
  }
}
