/* fuzz_policy_pattern.c - the pattern matcher, strategic merge and JSON
 * Patch. Input: a pattern (JSON) on the first line, a resource (JSON) after
 * it. Checks that the diff of the merged object re-applies exactly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "skiff/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  const char *nl = memchr(s, '\n', size);
  if (!nl) return 0;
  json_t *p = NULL, *v = NULL;
  char err[256], path[256];
  if (sk_json_parse(s, (size_t)(nl - s), 1 << 20, 40, &p, err, sizeof err) < 0) return 0;
  if (sk_json_parse(nl + 1, size - (size_t)(nl - s) - 1, 1 << 20, 40, &v, err, sizeof err) < 0) {
    json_decref(p);
    return 0;
  }
  pol_pattern_match(p, v, path, sizeof path);
  pol_pattern_match(v, p, NULL, 0);
  if (!json_is_object(p) && !json_is_array(p)) pol_scalar_match(p, v);
  json_t *m = json_deep_copy(v);
  if (json_is_object(m) && pol_smp_apply(&m, p, err, sizeof err) >= 0) {
    json_t *ops = pol_jsonpatch_diff(v, m);
    json_t *re = json_deep_copy(v);
    if (pol_jsonpatch_apply(&re, ops, err, sizeof err) < 0 || !json_equal(re, m)) abort();
    json_decref(re);
    json_decref(ops);
  }
  json_decref(m);
  /* the pattern as a JSON Patch on the resource */
  json_t *d = json_deep_copy(v);
  pol_jsonpatch_apply(&d, p, err, sizeof err);
  json_decref(d);
  json_decref(p);
  json_decref(v);
  return 0;
}
