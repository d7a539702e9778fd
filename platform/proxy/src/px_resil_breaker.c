/* px_resil_breaker.c - circuit breaker: per-kind counters with limits,
 * lock-free so one breaker may serve every worker. */
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

void px_breaker_config_default(px_breaker_config_t *c) {
  c->enabled = 0;
  c->max[PX_BRK_CONNECTIONS] = 1024;
  c->max[PX_BRK_PENDING] = 1024;
  c->max[PX_BRK_REQUESTS] = 1024;
  c->max[PX_BRK_RETRIES] = 3;
}

int px_breaker_config_parse(const json_t *j, const char *path, px_breaker_config_t *out, char *err,
                            size_t errlen) {
  static const char *const keys[] = {"max_connections", "max_pending_requests", "max_requests",
                                     "max_retries", NULL};
  px_breaker_config_t c;
  px_breaker_config_default(&c);
  if (j && !json_is_null(j)) {
    int rc = px_conf_keys(j, path, keys, err, errlen);
    if (rc < 0) return rc;
    c.enabled = 1;
    for (int k = 0; k < PX_BRK_NKINDS; k++) {
      uint64_t u;
      if ((rc = px_conf_uint(j, path, keys[k], 0, 100000000, &u, err, errlen)) < 0) return rc;
      if (rc == 0) c.max[k] = (uint32_t)u;
    }
  }
  *out = c;
  return 0;
}

void px_breaker_init(px_breaker_t *b, const px_breaker_config_t *c) {
  for (int k = 0; k < PX_BRK_NKINDS; k++) {
    b->max[k] = c->max[k];
    atomic_init(&b->cur[k], 0);
    atomic_init(&b->overflow[k], 0);
  }
}

int px_breaker_try_acquire(px_breaker_t *b, px_brk_kind_t kind) {
  if ((unsigned)kind >= PX_BRK_NKINDS) return SK_EINVAL;
  uint32_t max = b->max[kind];
  uint32_t cur = atomic_load_explicit(&b->cur[kind], memory_order_relaxed);
  for (;;) {
    if (max && cur >= max) {
      atomic_fetch_add_explicit(&b->overflow[kind], 1, memory_order_relaxed);
      return SK_ELIMIT;
    }
    if (atomic_compare_exchange_weak_explicit(&b->cur[kind], &cur, cur + 1, memory_order_acq_rel,
                                              memory_order_relaxed))
      return 0;
  }
}

void px_breaker_release(px_breaker_t *b, px_brk_kind_t kind) {
  if ((unsigned)kind >= PX_BRK_NKINDS) return;
  uint32_t cur = atomic_load_explicit(&b->cur[kind], memory_order_relaxed);
  while (cur && !atomic_compare_exchange_weak_explicit(&b->cur[kind], &cur, cur - 1,
                                                       memory_order_acq_rel, memory_order_relaxed)) {
  }
}

int px_breaker_is_open(const px_breaker_t *b, px_brk_kind_t kind) {
  if ((unsigned)kind >= PX_BRK_NKINDS) return 0;
  uint32_t max = b->max[kind];
  return max && atomic_load_explicit(&((px_breaker_t *)b)->cur[kind], memory_order_relaxed) >= max;
}

uint32_t px_breaker_current(const px_breaker_t *b, px_brk_kind_t kind) {
  if ((unsigned)kind >= PX_BRK_NKINDS) return 0;
  return atomic_load_explicit(&((px_breaker_t *)b)->cur[kind], memory_order_relaxed);
}

uint64_t px_breaker_overflows(const px_breaker_t *b, px_brk_kind_t kind) {
  if ((unsigned)kind >= PX_BRK_NKINDS) return 0;
  return atomic_load_explicit(&((px_breaker_t *)b)->overflow[kind], memory_order_relaxed);
}

const char *px_brk_kind_name(px_brk_kind_t kind) {
  static const char *const names[] = {"connections", "pending", "requests", "retries"};
  return (unsigned)kind < PX_BRK_NKINDS ? names[kind] : "?";
}
