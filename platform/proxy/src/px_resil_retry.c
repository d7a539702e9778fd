/* px_resil_retry.c - retry policy: what is retriable, attempts, budget,
 * full-jitter exponential backoff. */
#include <stdio.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

void px_retry_config_default(px_retry_config_t *c) {
  memset(c, 0, sizeof *c);
  c->enabled = 0;
  c->attempts = 1;
  c->retry_on = PX_RETRY_ON_GATEWAY_ERROR | PX_RETRY_ON_CONNECT_FAILURE | PX_RETRY_ON_RESET;
  c->per_try_timeout_ms = 0;
  c->backoff_base_ms = 25;
  c->backoff_max_ms = 250;
  c->budget_percent = 20;
  c->budget_min_concurrency = 3;
}

static const struct {
  const char *name;
  uint32_t bit;
} retry_on_names[] = {
    {"5xx", PX_RETRY_ON_5XX},
    {"gateway-error", PX_RETRY_ON_GATEWAY_ERROR},
    {"reset", PX_RETRY_ON_RESET},
    {"connect-failure", PX_RETRY_ON_CONNECT_FAILURE},
    {"retriable-status-codes", PX_RETRY_ON_RETRIABLE_STATUS},
    {"timeout", PX_RETRY_ON_TIMEOUT},
};

static int retry_on_token(const char *s, size_t n, uint32_t *bits) {
  while (n && (*s == ' ' || *s == '\t')) s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  if (!n) return 0;
  for (size_t i = 0; i < sizeof retry_on_names / sizeof retry_on_names[0]; i++)
    if (strlen(retry_on_names[i].name) == n && !strncmp(retry_on_names[i].name, s, n)) {
      *bits |= retry_on_names[i].bit;
      return 0;
    }
  return -1;
}

static int parse_retry_on(const json_t *v, const char *path, uint32_t *bits, char *err, size_t errlen) {
  static const char msg[] =
      "expected a list of 5xx, gateway-error, reset, connect-failure, retriable-status-codes, timeout";
  uint32_t b = 0;
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    for (;;) {
      const char *comma = strchr(s, ',');
      size_t n = comma ? (size_t)(comma - s) : strlen(s);
      if (retry_on_token(s, n, &b) < 0) return px__conf_err(err, errlen, path, "retry_on", msg);
      if (!comma) break;
      s = comma + 1;
    }
  } else if (json_is_array(v)) {
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      if (!json_is_string(e) || retry_on_token(json_string_value(e), json_string_length(e), &b) < 0 ||
          !json_string_length(e)) {
        char p[300];
        snprintf(p, sizeof p, "%s.retry_on[%zu]", path, i);
        return px__conf_err(err, errlen, p, NULL, msg);
      }
    }
  } else {
    return px__conf_err(err, errlen, path, "retry_on", msg);
  }
  *bits = b;
  return 0;
}

int px_retry_config_parse(const json_t *j, const char *path, px_retry_config_t *out, char *err,
                          size_t errlen) {
  static const char *const keys[] = {"attempts", "retry_on", "retriable_status_codes",
                                     "per_try_timeout", "backoff", "budget", NULL};
  static const char *const bkeys[] = {"base", "max", NULL};
  static const char *const gkeys[] = {"percent", "min_concurrency", NULL};
  px_retry_config_t c;
  px_retry_config_default(&c);
  int rc;
  uint64_t u;
  char sub[300];
  if (!j || json_is_null(j)) {
    *out = c;
    return 0;
  }
  if ((rc = px_conf_keys(j, path, keys, err, errlen)) < 0) return rc;
  c.enabled = 1;
  c.attempts = 2;
  if ((rc = px_conf_uint(j, path, "attempts", 1, PX_RETRY_MAX_ATTEMPTS, &u, err, errlen)) < 0) return rc;
  if (rc == 0) c.attempts = (uint32_t)u;
  json_t *v = json_object_get(j, "retry_on");
  if (v && (rc = parse_retry_on(v, path, &c.retry_on, err, errlen)) < 0) return rc;
  v = json_object_get(j, "retriable_status_codes");
  if (v) {
    if (!json_is_array(v) || json_array_size(v) > PX_RETRY_MAX_STATUSES)
      return px__conf_err(err, errlen, path, "retriable_status_codes",
                          "expected a list of at most 16 status codes");
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
      if (!json_is_integer(e) || json_integer_value(e) < 100 || json_integer_value(e) > 599) {
        snprintf(sub, sizeof sub, "%s.retriable_status_codes[%zu]", path, i);
        return px__conf_err(err, errlen, sub, NULL, "expected a status code 100..599");
      }
      c.statuses[c.nstatuses++] = (uint16_t)json_integer_value(e);
    }
    if (c.nstatuses) c.retry_on |= PX_RETRY_ON_RETRIABLE_STATUS;
  }
  if ((rc = px_conf_duration(j, path, "per_try_timeout", &c.per_try_timeout_ms, err, errlen)) < 0)
    return rc;
  v = json_object_get(j, "backoff");
  if (v) {
    snprintf(sub, sizeof sub, "%s.backoff", path);
    if ((rc = px_conf_keys(v, sub, bkeys, err, errlen)) < 0) return rc;
    int has_base, has_max;
    if ((has_base = px_conf_duration(v, sub, "base", &c.backoff_base_ms, err, errlen)) < 0) return has_base;
    if ((has_max = px_conf_duration(v, sub, "max", &c.backoff_max_ms, err, errlen)) < 0) return has_max;
    if (has_base == 0 && has_max == 1) c.backoff_max_ms = c.backoff_base_ms * 10;
    if (c.backoff_max_ms < c.backoff_base_ms)
      return px__conf_err(err, errlen, sub, "max", "must not be less than base");
  }
  v = json_object_get(j, "budget");
  if (v) {
    snprintf(sub, sizeof sub, "%s.budget", path);
    if ((rc = px_conf_keys(v, sub, gkeys, err, errlen)) < 0) return rc;
    uint32_t ppm = 0;
    if ((rc = px_conf_percent(v, sub, "percent", &ppm, err, errlen)) < 0) return rc;
    if (rc == 0) c.budget_percent = (ppm + 5000) / 10000;
    if ((rc = px_conf_uint(v, sub, "min_concurrency", 0, 1000000, &u, err, errlen)) < 0) return rc;
    if (rc == 0) c.budget_min_concurrency = (uint32_t)u;
  }
  *out = c;
  return 0;
}

uint32_t px_budget_limit(const px_retry_config_t *c, const px_retry_budget_t *b) {
  uint64_t lim = (uint64_t)atomic_load_explicit(&((px_retry_budget_t *)b)->active_requests, memory_order_relaxed) *
                 c->budget_percent / 100;
  if (lim < c->budget_min_concurrency) lim = c->budget_min_concurrency;
  return lim > UINT32_MAX ? UINT32_MAX : (uint32_t)lim;
}

int px_retry_retriable(const px_retry_config_t *c, px_outcome_t out, int status) {
  uint32_t on = c->retry_on;
  switch (out) {
  case PX_OUT_RESPONSE:
    if ((on & PX_RETRY_ON_5XX) && status >= 500 && status <= 599) return 1;
    if ((on & PX_RETRY_ON_GATEWAY_ERROR) && (status == 502 || status == 503 || status == 504)) return 1;
    if (on & PX_RETRY_ON_RETRIABLE_STATUS)
      for (uint32_t i = 0; i < c->nstatuses; i++)
        if (c->statuses[i] == status) return 1;
    return 0;
  case PX_OUT_CONNECT_FAILURE:
    return !!(on & (PX_RETRY_ON_5XX | PX_RETRY_ON_GATEWAY_ERROR | PX_RETRY_ON_CONNECT_FAILURE));
  case PX_OUT_RESET:
    return !!(on & (PX_RETRY_ON_5XX | PX_RETRY_ON_RESET));
  case PX_OUT_TIMEOUT:
    return !!(on & (PX_RETRY_ON_5XX | PX_RETRY_ON_GATEWAY_ERROR | PX_RETRY_ON_TIMEOUT));
  case PX_OUT_LOCAL:
    return 0;
  }
  return 0;
}

px_retry_decision_t px_retry_should(const px_retry_config_t *c, uint32_t attempt, px_outcome_t out,
                                    int status, const px_retry_budget_t *b) {
  if (!px_retry_retriable(c, out, status)) return PX_RETRY_NO;
  if (attempt >= c->attempts) return PX_RETRY_EXHAUSTED;
  if (b && atomic_load_explicit(&((px_retry_budget_t *)b)->active_retries, memory_order_relaxed) >=
               px_budget_limit(c, b))
    return PX_RETRY_BUDGET;
  return PX_RETRY_YES;
}

uint64_t px_retry_backoff_ms(const px_retry_config_t *c, uint32_t attempt, px_rng_t *rng) {
  uint64_t cap = c->backoff_base_ms;
  if (attempt < 1) attempt = 1;
  for (uint32_t i = 1; i < attempt && cap < c->backoff_max_ms; i++) cap *= 2;
  if (cap > c->backoff_max_ms) cap = c->backoff_max_ms;
  return px_rng_below(rng, cap + 1);
}

const char *px_retry_decision_name(px_retry_decision_t d) {
  switch (d) {
  case PX_RETRY_NO: return "no";
  case PX_RETRY_YES: return "yes";
  case PX_RETRY_EXHAUSTED: return "exhausted";
  case PX_RETRY_BUDGET: return "budget";
  }
  return "?";
}
