/* px_resil_health.c - active health check schedule and thresholds (no I/O;
 * px_resil_health_run.c does the probing on a loop). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

void px_hc_config_default(px_hc_config_t *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->path, sizeof c->path, "/healthz");
  c->interval_ms = 5000;
  c->timeout_ms = 1000;
  c->healthy_threshold = 2;
  c->unhealthy_threshold = 3;
  c->status_lo[0] = 200;
  c->status_hi[0] = 299;
  c->nstatus = 1;
}

static int parse_status_item(const json_t *e, uint16_t *lo, uint16_t *hi) {
  long a, b;
  if (json_is_integer(e)) {
    a = b = (long)json_integer_value(e);
  } else if (json_is_string(e)) {
    const char *s = json_string_value(e);
    char *end;
    a = strtol(s, &end, 10);
    if (end == s) return -1;
    if (*end == '-') {
      const char *t = end + 1;
      b = strtol(t, &end, 10);
      if (end == t) return -1;
    } else {
      b = a;
    }
    if (*end) return -1;
  } else {
    return -1;
  }
  if (a < 100 || b > 599 || a > b) return -1;
  *lo = (uint16_t)a;
  *hi = (uint16_t)b;
  return 0;
}

int px_hc_config_parse(const json_t *j, const char *path, px_hc_config_t *out, char *err, size_t errlen) {
  static const char *const keys[] = {"path", "host", "interval", "timeout", "healthy_threshold",
                                     "unhealthy_threshold", "expected_statuses", NULL};
  px_hc_config_t c;
  px_hc_config_default(&c);
  int rc;
  uint64_t u;
  if (!j || json_is_null(j)) {
    *out = c;
    return 0;
  }
  if ((rc = px_conf_keys(j, path, keys, err, errlen)) < 0) return rc;
  c.enabled = 1;
  if ((rc = px_conf_string(j, path, "path", c.path, sizeof c.path, err, errlen)) < 0) return rc;
  if (c.path[0] != '/') return px__conf_err(err, errlen, path, "path", "must start with /");
  for (const char *p = c.path; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
      return px__conf_err(err, errlen, path, "path", "must be printable ASCII without spaces");
  if ((rc = px_conf_string(j, path, "host", c.host, sizeof c.host, err, errlen)) < 0) return rc;
  for (const char *p = c.host; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
      return px__conf_err(err, errlen, path, "host", "must be printable ASCII without spaces");
  if ((rc = px_conf_duration(j, path, "interval", &c.interval_ms, err, errlen)) < 0) return rc;
  if (c.interval_ms == 0) return px__conf_err(err, errlen, path, "interval", "must be more than 0");
  if ((rc = px_conf_duration(j, path, "timeout", &c.timeout_ms, err, errlen)) < 0) return rc;
  if (c.timeout_ms == 0) return px__conf_err(err, errlen, path, "timeout", "must be more than 0");
  if ((rc = px_conf_uint(j, path, "healthy_threshold", 1, 1000, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.healthy_threshold = (uint32_t)u;
  if ((rc = px_conf_uint(j, path, "unhealthy_threshold", 1, 1000, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.unhealthy_threshold = (uint32_t)u;
  json_t *v = json_object_get(j, "expected_statuses");
  if (v) {
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > PX_HC_MAX_STATUS_RANGES)
      return px__conf_err(err, errlen, path, "expected_statuses",
                          "expected a list of 1 to 8 statuses or ranges like \"200-299\"");
    c.nstatus = 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      if (parse_status_item(e, &c.status_lo[c.nstatus], &c.status_hi[c.nstatus]) < 0) {
        char sub[300];
        snprintf(sub, sizeof sub, "%s.expected_statuses[%zu]", path, i);
        return px__conf_err(err, errlen, sub, NULL, "expected a status like 200 or a range like \"200-299\"");
      }
      c.nstatus++;
    }
  }
  *out = c;
  return 0;
}

int px_hc_status_ok(const px_hc_config_t *c, int status) {
  for (uint32_t i = 0; i < c->nstatus; i++)
    if (status >= c->status_lo[i] && status <= c->status_hi[i]) return 1;
  return 0;
}

int px_hc_init(px_hc_t *h, const px_hc_config_t *c, size_t nendpoints, uint64_t now_ns, px_rng_t *rng) {
  memset(h, 0, sizeof *h);
  h->cfg = *c;
  h->n = nendpoints;
  if (nendpoints) {
    h->ep = calloc(nendpoints, sizeof *h->ep);
    if (!h->ep) return SK_ENOMEM;
  }
  uint64_t iv = c->interval_ms * PX_MS;
  for (size_t i = 0; i < nendpoints; i++) {
    h->ep[i].healthy = 1;
    h->ep[i].next_ns = now_ns + (rng ? px_rng_below(rng, iv) : 0);
  }
  return 0;
}

void px_hc_done(px_hc_t *h) {
  if (!h) return;
  free(h->ep);
  h->ep = NULL;
  h->n = 0;
}

long px_hc_due(const px_hc_t *h, uint64_t now_ns) {
  if (!h->cfg.enabled) return -1;
  for (size_t i = 0; i < h->n; i++)
    if (!h->ep[i].in_flight && h->ep[i].next_ns <= now_ns) return (long)i;
  return -1;
}

void px_hc_probe_start(px_hc_t *h, size_t i, uint64_t now_ns) {
  if (i >= h->n) return;
  h->ep[i].in_flight = 1;
  h->ep[i].probes++;
  (void)now_ns;
}

uint64_t px_hc_next_deadline(const px_hc_t *h) {
  uint64_t t = UINT64_MAX;
  if (!h->cfg.enabled) return t;
  for (size_t i = 0; i < h->n; i++)
    if (!h->ep[i].in_flight && h->ep[i].next_ns < t) t = h->ep[i].next_ns;
  return t;
}

px_hc_change_t px_hc_on_result(px_hc_t *h, size_t i, int ok, uint64_t now_ns, px_rng_t *rng) {
  if (i >= h->n) return PX_HC_SAME;
  px_hc_ep_t *e = &h->ep[i];
  px_hc_change_t ch = PX_HC_SAME;
  e->in_flight = 0;
  uint64_t iv = h->cfg.interval_ms * PX_MS;
  e->next_ns = now_ns + iv + (rng ? px_rng_below(rng, iv / 10 + 1) : 0);
  if (ok) {
    e->fail_run = 0;
    if (e->ok_run < UINT32_MAX) e->ok_run++;
    if (!e->healthy && e->ok_run >= h->cfg.healthy_threshold) {
      e->healthy = 1;
      ch = PX_HC_BECAME_HEALTHY;
    }
  } else {
    e->failures++;
    e->ok_run = 0;
    if (e->fail_run < UINT32_MAX) e->fail_run++;
    if (e->healthy && e->fail_run >= h->cfg.unhealthy_threshold) {
      e->healthy = 0;
      ch = PX_HC_BECAME_UNHEALTHY;
    }
  }
  return ch;
}

int px_hc_is_healthy(const px_hc_t *h, size_t i) {
  if (!h->cfg.enabled || i >= h->n) return 1;
  return h->ep[i].healthy;
}
