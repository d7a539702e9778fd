/* px_resil_outlier.c - passive outlier detection: consecutive server or
 * gateway errors eject an endpoint for base_ejection_time x (number of
 * ejections), capped, never more than max_ejection_percent of a cluster. */
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
  if (nendpoints) {
    o->ep = calloc(nendpoints, sizeof *o->ep);
    if (!o->ep) return SK_ENOMEM;
  }
  return 0;
}

void px_outlier_done(px_outlier_t *o) {
  if (!o) return;
  free(o->ep);
  o->ep = NULL;
  o->n = o->nejected = 0;
}

static void ep_uneject(px_outlier_t *o, px_outlier_ep_t *e, uint64_t now) {
  e->ejected_until = 0;
  e->cons_5xx = e->cons_gw = 0;
  e->last_decay = now;
  if (o->nejected) o->nejected--;
}

/* Lowers the multiplier by one for every full interval spent not ejected. */
static void ep_decay(const px_outlier_t *o, px_outlier_ep_t *e, uint64_t now) {
  if (e->ejected_until || !e->ejections) return;
  uint64_t iv = o->cfg.interval_ms * PX_MS;
  if (now <= e->last_decay || now - e->last_decay < iv) return;
  uint64_t k = (now - e->last_decay) / iv;
  e->ejections = k >= e->ejections ? 0 : e->ejections - (uint32_t)k;
  e->last_decay += k * iv;
}

int px_outlier_is_ejected(px_outlier_t *o, size_t i, uint64_t now_ns) {
  if (!o->cfg.enabled || i >= o->n) return 0;
  px_outlier_ep_t *e = &o->ep[i];
  if (!e->ejected_until) return 0;
  if (now_ns >= e->ejected_until) {
    ep_uneject(o, e, now_ns);
    return 0;
  }
  return 1;
}

size_t px_outlier_sweep(px_outlier_t *o, uint64_t now_ns) {
  size_t back = 0;
  if (!o->cfg.enabled) return 0;
  for (size_t i = 0; i < o->n; i++) {
    px_outlier_ep_t *e = &o->ep[i];
    if (e->ejected_until && now_ns >= e->ejected_until) {
      ep_uneject(o, e, now_ns);
      back++;
    }
    ep_decay(o, e, now_ns);
  }
  return back;
}

size_t px_outlier_ejected_count(const px_outlier_t *o) { return o->nejected; }

px_outlier_event_t px_outlier_on_result(px_outlier_t *o, size_t i, px_outcome_t out, int status,
                                        uint64_t now_ns) {
  if (!o->cfg.enabled || i >= o->n || out == PX_OUT_LOCAL) return PX_OUTLIER_NONE;
  px_outlier_ep_t *e = &o->ep[i];
  if (px_outlier_is_ejected(o, i, now_ns)) return PX_OUTLIER_NONE; /* late answers from before */
  int failed = out != PX_OUT_RESPONSE;
  int is5xx = failed || (status >= 500 && status <= 599);
  int isgw = failed || status == 502 || status == 503 || status == 504;
  e->cons_5xx = is5xx ? e->cons_5xx + 1 : 0;
  e->cons_gw = isgw ? e->cons_gw + 1 : 0;
  if (!is5xx) {
    ep_decay(o, e, now_ns);
    return PX_OUTLIER_NONE;
  }
  int trigger = (o->cfg.consecutive_5xx && e->cons_5xx >= o->cfg.consecutive_5xx) ||
                (o->cfg.consecutive_gateway_errors && e->cons_gw >= o->cfg.consecutive_gateway_errors);
  if (!trigger) return PX_OUTLIER_NONE;
  e->cons_5xx = e->cons_gw = 0;
  /* bring back anyone whose time is up before counting */
  for (size_t k = 0; k < o->n; k++)
    if (o->ep[k].ejected_until && now_ns >= o->ep[k].ejected_until) ep_uneject(o, &o->ep[k], now_ns);
  if ((uint64_t)(o->nejected + 1) * 100 > (uint64_t)o->n * o->cfg.max_ejection_percent)
    return PX_OUTLIER_SUPPRESSED;
  ep_decay(o, e, now_ns);
  if (e->ejections < UINT32_MAX) e->ejections++;
  uint64_t ms = o->cfg.base_ejection_time_ms * e->ejections;
  if (e->ejections && ms / e->ejections != o->cfg.base_ejection_time_ms) ms = UINT64_MAX; /* overflow */
  if (ms > o->cfg.max_ejection_time_ms) ms = o->cfg.max_ejection_time_ms;
  e->ejected_until = now_ns + ms * PX_MS;
  if (!e->ejected_until) e->ejected_until = 1;
  e->total_ejections++;
  o->nejected++;
  return PX_OUTLIER_EJECTED;
}
