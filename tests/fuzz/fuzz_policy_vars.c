/* fuzz_policy_vars.c - variable substitution and conditions. Input: a
 * template string on the first line, a context (JSON) after it (a fixed
 * request when it does not parse). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "skiff/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fixed[] =
    "{\"request\":{\"operation\":\"CREATE\",\"userInfo\":{\"username\":\"alice\",\"groups\":[\"a\",\"b\"]},"
    "\"object\":{\"metadata\":{\"name\":\"web\",\"labels\":{\"app.kubernetes.io/name\":\"x\"}},"
    "\"spec\":{\"replicas\":3,\"containers\":[{\"name\":\"a\",\"image\":\"x:1\"},{\"name\":\"b\"}]}}}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  const char *nl = memchr(s, '\n', size);
  size_t tl = nl ? (size_t)(nl - s) : size;
  char err[256];
  json_t *ctx = NULL;
  if (!nl || sk_json_parse(nl + 1, size - tl - 1, 1 << 20, 40, &ctx, err, sizeof err) < 0)
    ctx = json_loads(fixed, 0, NULL);
  json_t *tmpl = json_stringn(s, tl);
  if (tmpl) {
    json_t *out = NULL;
    if (pol_substitute(tmpl, ctx, &out, err, sizeof err) == 0) {
      /* as a scalar pattern and as condition operands */
      pol_scalar_match(tmpl, out);
      static const char *const ops[] = {"Equals", "NotEquals", "In", "AnyIn", "AllIn", "NotIn", "AnyNotIn",
                                        "AllNotIn", "GreaterThan", "GreaterThanOrEquals", "LessThan",
                                        "LessThanOrEquals"};
      for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) pol_operator(ops[i], out, tmpl, err, sizeof err);
    }
    json_decref(out);
    json_t *cond = json_pack("{s:[{s:O,s:s,s:O}]}", "any", "key", tmpl, "operator", "AnyIn", "value", tmpl);
    pol_conditions(cond, ctx, err, sizeof err);
    json_decref(cond);
    json_t *v = NULL;
    pol_var_lookup(ctx, s, tl, &v);
    json_decref(v);
  }
  json_decref(tmpl);
  json_decref(ctx);
  return 0;
}
