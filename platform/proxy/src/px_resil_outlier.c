/* px_resil_outlier.c - passive outlier detection: consecutive server or
 * gateway errors eject an endpoint for base_ejection_time x (number of
 * ejections), capped, never more than max_ejection_percent of a cluster.
 *
 * One px_outlier_t serves every worker. Hot path (a result, an "is it
 * ejected?"): atomic loads and adds only. The decisions that change state
 * (eject, un-eject, decay the multiplier) run under a spinlock, entered
 * only when a run of errors reaches its threshold, an ejection expires or
 * a multiplier is left to decay: a few times per ejection, not per
 * request. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

void px_outlier_config_default(px_outlier_config_t *c) {
  memset(c, 0, sizeof *c);
  c->consecutive_5xx = 5;
  c->consecutive_gateway_errors = 0;
  c->interval_ms = 10000;
  c->base_ejection_time_ms = 30000;
  c->max_ejection_time_ms = 300000;
  c->max_ejection_percent = 50;
}

int px_outlier_config_parse(const json_t *j, const char *path, px_outlier_config_t *out, char *err,
                            size_t errlen) {
  static const char *const keys[] = {"consecutive_5xx", "consecutive_gateway_errors", "interval",
                                     "base_ejection_time", "max_ejection_time",
                                     "max_ejection_percent", NULL};
  px_outlier_config_t c;
  px_outlier_config_default(&c);
  int rc;
  uint64_t u;
  if (!j || json_is_null(j)) {
    *out = c;
    return 0;
  }
  if ((rc = px_conf_keys(j, path, keys, err, errlen)) < 0) return rc;
  c.enabled = 1;
  if ((rc = px_conf_uint(j, path, "consecutive_5xx", 0, 1000000, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.consecutive_5xx = (uint32_t)u;
  if ((rc = px_conf_uint(j, path, "consecutive_gateway_errors", 0, 1000000, &u, err, errlen)) < 0)
    return rc;
  if (rc == 0) c.consecutive_gateway_errors = (uint32_t)u;
  if ((rc = px_conf_duration(j, path, "interval", &c.interval_ms, err, errlen)) < 0) return rc;
  if (c.interval_ms == 0) return px__conf_err(err, errlen, path, "interval", "must be more than 0");
  if ((rc = px_conf_duration(j, path, "base_ejection_time", &c.base_ejection_time_ms, err, errlen)) < 0)
    return rc;
  if (c.base_ejection_time_ms == 0)
    return px__conf_err(err, errlen, path, "base_ejection_time", "must be more than 0");
  int has_max = px_conf_duration(j, path, "max_ejection_time", &c.max_ejection_time_ms, err, errlen);
  if (has_max < 0) return has_max;
  if (has_max == 1 && c.max_ejection_time_ms < c.base_ejection_time_ms)
    c.max_ejection_time_ms = c.base_ejection_time_ms * 10;
  if (c.max_ejection_time_ms < c.base_ejection_time_ms)
    return px__conf_err(err, errlen, path, "max_ejection_time", "must not be less than base_ejection_time");
  if ((rc = px_conf_uint(j, path, "max_ejection_percent", 0, 100, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.max_ejection_percent = (uint32_t)u;
  *out = c;
  return 0;
}

int px_outlier_init(px_outlier_t *o, const px_outlier_config_t *c, size_t nendpoints) {
  memset(o, 0, sizeof *o);
  o->cfg = *c;
  o->n = nendpoints;
  atomic_init(&o->nejected, 0);
  atomic_flag_clear(&o->lock);
  if (nendpoints) {
    o->ep = calloc(nendpoints, sizeof *o->ep); /* all-zero atomics are valid zeros */
    if (!o->ep) return SK_ENOMEM;
  }
  return 0;
}

void px_outlier_done(px_outlier_t *o) {
  if (!o) return;
  free(o->ep);
  o->ep = NULL;
  o->n = 0;
  atomic_store(&o->nejected, 0);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

static void lock(px_outlier_t *o) {
  unsigned spins = 0;
  while (atomic_flag_test_and_set_explicit(&o->lock, memory_order_acquire))
    if (++spins % 64 == 0) sched_yield(); /* the holder may be preempted (2 workers, 1 core) */
}

static void unlock(px_outlier_t *o) { atomic_flag_clear_explicit(&o->lock, memory_order_release); }

/* Under the lock. */
static void ep_uneject(px_outlier_t *o, px_outlier_ep_t *e, uint64_t now) {
  ST(e->ejected_until, 0);
  ST(e->cons_5xx, 0);
  ST(e->cons_gw, 0);
  ST(e->last_decay, now);
  size_t n = LD(o->nejected);
  if (n) ST(o->nejected, n - 1);
}

/* Lowers the multiplier by one for every full interval spent not ejected.
 * Under the lock. */
static void ep_decay(const px_outlier_t *o, px_outlier_ep_t *e, uint64_t now) {
  uint32_t ej = LD(e->ejections);
  if (LD(e->ejected_until) || !ej) return;
  uint64_t iv = o->cfg.interval_ms * PX_MS, last = LD(e->last_decay);
  if (now <= last || now - last < iv) return;
  uint64_t k = (now - last) / iv;
  ST(e->ejections, k >= ej ? 0 : ej - (uint32_t)k);
  ST(e->last_decay, last + k * iv);
}

/* Un-ejects e if its time is up (under the lock). */
static int expire_locked(px_outlier_t *o, px_outlier_ep_t *e, uint64_t now) {
  uint64_t until = LD(e->ejected_until);
  if (until && now >= until) {
    ep_uneject(o, e, now);
    return 1;
  }
  return 0;
}

int px_outlier_is_ejected(px_outlier_t *o, size_t i, uint64_t now_ns) {
  if (!o->cfg.enabled || i >= o->n) return 0;
  px_outlier_ep_t *e = &o->ep[i];
  uint64_t until = atomic_load_explicit(&e->ejected_until, memory_order_acquire);
  if (!until) return 0;
  if (now_ns < until) return 1;
  lock(o);
  expire_locked(o, e, now_ns);
  unlock(o);
  return 0;
}

size_t px_outlier_sweep(px_outlier_t *o, uint64_t now_ns) {
  size_t back = 0;
  if (!o->cfg.enabled) return 0;
  lock(o);
  for (size_t i = 0; i < o->n; i++) {
    px_outlier_ep_t *e = &o->ep[i];
    back += (size_t)expire_locked(o, e, now_ns);
    ep_decay(o, e, now_ns);
  }
  unlock(o);
  return back;
}

size_t px_outlier_ejected_count(const px_outlier_t *o) {
  return atomic_load_explicit(&((px_outlier_t *)o)->nejected, memory_order_relaxed);
}

px_outlier_event_t px_outlier_on_result(px_outlier_t *o, size_t i, px_outcome_t out, int status,
                                        uint64_t now_ns) {
  if (!o->cfg.enabled || i >= o->n || out == PX_OUT_LOCAL) return PX_OUTLIER_NONE;
  px_outlier_ep_t *e = &o->ep[i];
  if (px_outlier_is_ejected(o, i, now_ns)) return PX_OUTLIER_NONE; /* late answers from before */
  int failed = out != PX_OUT_RESPONSE;
  int is5xx = failed || (status >= 500 && status <= 599);
  int isgw = failed || status == 502 || status == 503 || status == 504;
  if (!is5xx) {
    /* a success ends the runs; stores only when there is a run, so that
     * steady good traffic does not bounce the cache line between workers */
    if (LD(e->cons_5xx)) ST(e->cons_5xx, 0);
    if (LD(e->cons_gw)) ST(e->cons_gw, 0);
    if (LD(e->ejections)) {
      lock(o);
      ep_decay(o, e, now_ns);
      unlock(o);
    }
    return PX_OUTLIER_NONE;
  }
  uint32_t c5 = atomic_fetch_add_explicit(&e->cons_5xx, 1, memory_order_relaxed) + 1;
  uint32_t cg = 0;
  if (isgw) cg = atomic_fetch_add_explicit(&e->cons_gw, 1, memory_order_relaxed) + 1;
  else if (LD(e->cons_gw)) ST(e->cons_gw, 0);
  uint32_t t5 = o->cfg.consecutive_5xx, tg = o->cfg.consecutive_gateway_errors;
  if (!((t5 && c5 >= t5) || (tg && cg >= tg))) return PX_OUTLIER_NONE;
  /* the run reached a threshold: decide under the lock, re-reading the
   * state, so a run seen by several workers at once ejects once */
  px_outlier_event_t ev = PX_OUTLIER_NONE;
  lock(o);
  c5 = LD(e->cons_5xx);
  cg = LD(e->cons_gw);
  if (LD(e->ejected_until) > now_ns || !((t5 && c5 >= t5) || (tg && cg >= tg))) goto out; /* someone else */
  ST(e->cons_5xx, 0);
  ST(e->cons_gw, 0);
  /* bring back anyone whose time is up before counting */
  for (size_t k = 0; k < o->n; k++) expire_locked(o, &o->ep[k], now_ns);
  if ((uint64_t)(LD(o->nejected) + 1) * 100 > (uint64_t)o->n * o->cfg.max_ejection_percent) {
    ev = PX_OUTLIER_SUPPRESSED;
    goto out;
  }
  ep_decay(o, e, now_ns);
  uint32_t nej = LD(e->ejections);
  if (nej < UINT32_MAX) nej++;
  ST(e->ejections, nej);
  uint64_t ms = o->cfg.base_ejection_time_ms * nej;
  if (nej && ms / nej != o->cfg.base_ejection_time_ms) ms = UINT64_MAX; /* overflow */
  if (ms > o->cfg.max_ejection_time_ms) ms = o->cfg.max_ejection_time_ms;
  uint64_t until = now_ns + ms * PX_MS;
  atomic_store_explicit(&e->ejected_until, until ? until : 1, memory_order_release);
  atomic_fetch_add_explicit(&e->total_ejections, 1, memory_order_relaxed);
  ST(o->nejected, LD(o->nejected) + 1);
  ev = PX_OUTLIER_EJECTED;
out:
  unlock(o);
  return ev;
}
