/* Fuzz target: skiff-proxy's resilience config parsers (px_resil_conf.c and
 * the px_<x>_config_parse functions). The input is JSON; when it is an
 * object, its members "retry", "circuit_breaker", "outlier",
 * "health_check", "rate_limit", "fault" and "l4_fault" go to the matching
 * parser, and the whole document goes to every parser too (unknown keys,
 * wrong types). A config that parses is then used once (bucket, outlier
 * table, health state, fault draws) so its values must be safe to run. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/err.h"

static void use_ratelimit(const px_ratelimit_config_t *c) {
  px_ratelimit_t rl;
  memset(&rl, 0, sizeof rl);
  if (px_ratelimit_init(&rl, c) < 0) return;
  uint32_t ra = 0;
  char key[8];
  for (int i = 0; i < 4; i++) {
    key[0] = (char)('a' + i);
    key[1] = 0;
    px_ratelimit_allow(&rl, key, (uint64_t)i * 1000000u, &ra);
  }
  (void)px_ratelimit_tokens(&rl, "a", 5000000u);
  px_ratelimit_done(&rl);
}

static void use_all(const json_t *j, const char *path) {
  char err[512];
  px_rng_t rng;
  px_rng_seed(&rng, 42);

  px_retry_config_t rc;
  if (px_retry_config_parse(j, path, &rc, err, sizeof err) == 0) {
    px_retry_budget_t b = {10, 1};
    for (uint32_t a = 1; a <= rc.attempts + 1; a++) {
      (void)px_retry_should(&rc, a, PX_OUT_RESPONSE, 503, &b);
      (void)px_retry_backoff_ms(&rc, a, &rng);
    }
  }
  px_breaker_config_t bc;
  if (px_breaker_config_parse(j, path, &bc, err, sizeof err) == 0) {
    px_breaker_t b;
    px_breaker_init(&b, &bc);
    if (px_breaker_try_acquire(&b, PX_BRK_REQUESTS) == 0) px_breaker_release(&b, PX_BRK_REQUESTS);
    (void)px_breaker_is_open(&b, PX_BRK_REQUESTS);
  }
  px_outlier_config_t oc;
  if (px_outlier_config_parse(j, path, &oc, err, sizeof err) == 0) {
    px_outlier_t o;
    memset(&o, 0, sizeof o);
    if (px_outlier_init(&o, &oc, 3) == 0) {
      for (int i = 0; i < 12; i++) px_outlier_on_result(&o, (size_t)(i % 3), PX_OUT_RESET, 0, (uint64_t)i * PX_MS);
      px_outlier_sweep(&o, UINT64_C(1) << 40);
    }
    px_outlier_done(&o);
  }
  px_hc_config_t hc;
  if (px_hc_config_parse(j, path, &hc, err, sizeof err) == 0) {
    px_hc_t h;
    memset(&h, 0, sizeof h);
    if (px_hc_init(&h, &hc, 2, 0, &rng) == 0) {
      long i = px_hc_due(&h, UINT64_C(1) << 50);
      if (i >= 0) {
        px_hc_probe_start(&h, (size_t)i, 1);
        px_hc_on_result(&h, (size_t)i, px_hc_status_ok(&hc, 200), 2, &rng);
      }
      (void)px_hc_next_deadline(&h);
      px_hc_done(&h);
    }
  }
  px_ratelimit_config_t rl;
  if (px_ratelimit_config_parse(j, path, &rl, err, sizeof err) == 0 && rl.enabled) use_ratelimit(&rl);
  px_fault_config_t fc;
  if (px_fault_config_parse(j, path, &fc, err, sizeof err) == 0) {
    px_fault_decision_t d;
    for (int i = 0; i < 4; i++) px_fault_decide(&fc, &rng, &d);
  }
  px_l4_fault_config_t lc;
  if (px_l4_fault_config_parse(j, path, &lc, err, sizeof err) == 0) {
    px_l4_decision_t d;
    uint64_t next = 0;
    (void)px_l4_fault_drop(&lc, &rng);
    px_l4_fault_chunk(&lc, &rng, &d);
    (void)px_l4_fault_pace(&lc, &next, 1500, 0);
  }
}

static void one(const json_t *doc, const char *key, int which) {
  const json_t *j = json_object_get(doc, key);
  if (!j) return;
  char err[512];
  char path[64] = "routes[0]";
  px_retry_config_t rc;
  px_breaker_config_t bc;
  px_outlier_config_t oc;
  px_hc_config_t hc;
  px_ratelimit_config_t rl;
  px_fault_config_t fc;
  px_l4_fault_config_t lc;
  uint64_t u;
  uint32_t ppm;
  char buf[32];
  switch (which) {
  case 0: px_retry_config_parse(j, path, &rc, err, sizeof err); break;
  case 1: px_breaker_config_parse(j, path, &bc, err, sizeof err); break;
  case 2: px_outlier_config_parse(j, path, &oc, err, sizeof err); break;
  case 3: px_hc_config_parse(j, path, &hc, err, sizeof err); break;
  case 4:
    if (px_ratelimit_config_parse(j, path, &rl, err, sizeof err) == 0 && rl.enabled) use_ratelimit(&rl);
    break;
  case 5: px_fault_config_parse(j, path, &fc, err, sizeof err); break;
  case 6: px_l4_fault_config_parse(j, path, &lc, err, sizeof err); break;
  default:
    /* the shared scalar helpers on the same member */
    px_conf_duration(doc, path, key, &u, err, sizeof err);
    px_conf_uint(doc, path, key, 1, 100, &u, err, sizeof err);
    px_conf_percent(doc, path, key, &ppm, err, sizeof err);
    px_conf_string(doc, path, key, buf, sizeof buf, err, sizeof err);
    break;
  }
  use_all(j, path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384) return 0;
  json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  if (!doc) return 0;
  static const char *const keys[] = {"retry", "circuit_breaker", "outlier", "health_check",
                                     "rate_limit", "fault", "l4_fault", "value"};
  if (json_is_object(doc))
    for (int i = 0; i < 8; i++) one(doc, keys[i], i);
  use_all(doc, "clusters[0].x");
  json_decref(doc);
  return 0;
}
