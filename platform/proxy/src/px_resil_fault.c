/* px_resil_fault.c - fault injection decisions for routes (delay, abort)
 * and L4 links (delay, drop, close, bandwidth). */
#include <stdio.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/config.h"
#include "skiff/err.h"

void px_fault_config_default(px_fault_config_t *c) {
  memset(c, 0, sizeof *c);
  c->abort_status = 503;
}

int px_fault_config_parse(const json_t *j, const char *path, px_fault_config_t *out, char *err,
                          size_t errlen) {
  static const char *const keys[] = {"delay", "abort", NULL};
  static const char *const dkeys[] = {"percent", "fixed_delay", NULL};
  static const char *const akeys[] = {"percent", "status", NULL};
  px_fault_config_t c;
  px_fault_config_default(&c);
  int rc;
  char sub[300];
  if (!j || json_is_null(j)) {
    *out = c;
    return 0;
  }
  if ((rc = px_conf_keys(j, path, keys, err, errlen)) < 0) return rc;
  json_t *d = json_object_get(j, "delay");
  if (d && !json_is_null(d)) {
    snprintf(sub, sizeof sub, "%s.delay", path);
    if ((rc = px_conf_keys(d, sub, dkeys, err, errlen)) < 0) return rc;
    c.delay_ppm = PX_PPM_ALL;
    if ((rc = px_conf_percent(d, sub, "percent", &c.delay_ppm, err, errlen)) < 0) return rc;
    if ((rc = px_conf_duration(d, sub, "fixed_delay", &c.delay_ms, err, errlen)) < 0) return rc;
    if (rc == 1) return px__conf_err(err, errlen, sub, "fixed_delay", "is required");
    if (c.delay_ms > 3600000) return px__conf_err(err, errlen, sub, "fixed_delay", "at most 1h");
  }
  json_t *a = json_object_get(j, "abort");
  if (a && !json_is_null(a)) {
    snprintf(sub, sizeof sub, "%s.abort", path);
    if ((rc = px_conf_keys(a, sub, akeys, err, errlen)) < 0) return rc;
    c.abort_ppm = PX_PPM_ALL;
    if ((rc = px_conf_percent(a, sub, "percent", &c.abort_ppm, err, errlen)) < 0) return rc;
    uint64_t u;
    if ((rc = px_conf_uint(a, sub, "status", 200, 599, &u, err, errlen)) < 0) return rc;
    if (rc == 0) c.abort_status = (int)u;
  }
  c.enabled = (c.delay_ppm && c.delay_ms) || c.abort_ppm;
  *out = c;
  return 0;
}

int px_fault_decide(const px_fault_config_t *c, px_rng_t *rng, px_fault_decision_t *d) {
  d->delay_ms = 0;
  d->abort_status = 0;
  if (!c->enabled) return 0;
  if (c->delay_ms && px_rng_chance(rng, c->delay_ppm)) d->delay_ms = c->delay_ms;
  if (px_rng_chance(rng, c->abort_ppm)) d->abort_status = c->abort_status;
  return d->delay_ms || d->abort_status;
}

/* ---- L4 ---- */

void px_l4_fault_config_default(px_l4_fault_config_t *c) { memset(c, 0, sizeof *c); }

int px_l4_fault_config_parse(const json_t *j, const char *path, px_l4_fault_config_t *out, char *err,
                             size_t errlen) {
  static const char *const keys[] = {"delay", "delay_percent", "drop_percent", "close_percent",
                                     "bandwidth", NULL};
  px_l4_fault_config_t c;
  px_l4_fault_config_default(&c);
  int rc;
  if (!j || json_is_null(j)) {
    *out = c;
    return 0;
  }
  if ((rc = px_conf_keys(j, path, keys, err, errlen)) < 0) return rc;
  if ((rc = px_conf_duration(j, path, "delay", &c.delay_ms, err, errlen)) < 0) return rc;
  if (c.delay_ms > 3600000) return px__conf_err(err, errlen, path, "delay", "at most 1h");
  c.delay_ppm = PX_PPM_ALL;
  if ((rc = px_conf_percent(j, path, "delay_percent", &c.delay_ppm, err, errlen)) < 0) return rc;
  if ((rc = px_conf_percent(j, path, "drop_percent", &c.drop_ppm, err, errlen)) < 0) return rc;
  if ((rc = px_conf_percent(j, path, "close_percent", &c.close_ppm, err, errlen)) < 0) return rc;
  json_t *bw = json_object_get(j, "bandwidth");
  if (bw && !json_is_null(bw)) {
    uint64_t bytes = 0;
    char msg[128];
    if (json_is_integer(bw) && json_integer_value(bw) >= 0) {
      bytes = (uint64_t)json_integer_value(bw);
    } else if (!json_is_string(bw) || sk_config_parse_size(json_string_value(bw), &bytes, msg, sizeof msg) < 0) {
      return px__conf_err(err, errlen, path, "bandwidth", "expected bytes per second like 1MiB");
    }
    c.bandwidth_bps = bytes;
  }
  c.enabled = (c.delay_ms && c.delay_ppm) || c.drop_ppm || c.close_ppm || c.bandwidth_bps;
  *out = c;
  return 0;
}

int px_l4_fault_drop(const px_l4_fault_config_t *c, px_rng_t *rng) {
  return c->enabled && px_rng_chance(rng, c->drop_ppm);
}

int px_l4_fault_chunk(const px_l4_fault_config_t *c, px_rng_t *rng, px_l4_decision_t *d) {
  d->delay_ms = 0;
  d->close = 0;
  if (!c->enabled) return 0;
  if (px_rng_chance(rng, c->close_ppm)) {
    d->close = 1;
    return 1;
  }
  if (c->delay_ms && px_rng_chance(rng, c->delay_ppm)) d->delay_ms = c->delay_ms;
  return d->delay_ms != 0;
}

uint64_t px_l4_fault_pace(const px_l4_fault_config_t *c, uint64_t *next_free_ns, size_t len,
                          uint64_t now_ns) {
  if (!c->bandwidth_bps) return now_ns;
  uint64_t t = *next_free_ns > now_ns ? *next_free_ns : now_ns;
  unsigned __int128 d = (unsigned __int128)len * UINT64_C(1000000000) / c->bandwidth_bps;
  *next_free_ns = t + (d > UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)d);
  return t;
}
