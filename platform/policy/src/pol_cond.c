/* deny.conditions and preconditions: any/all blocks and Kyverno's operators. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pol_int.h"
#include "skiff/config.h"
#include "skiff/err.h"

/* Numbers, quantities ("100m", "1Gi") or durations ("90s", "1h30m"). */
static int num_of(const json_t *v, double *out, int *is_duration) {
  *is_duration = 0;
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 0;
  }
  if (!json_is_string(v)) return -1;
  const char *s = json_string_value(v);
  if (pol_quantity(s, out) == 0) return 0;
  uint64_t ms;
  char msg[64];
  if (sk_config_parse_duration(s, &ms, msg, sizeof msg) == 0) {
    *out = (double)ms;
    *is_duration = 1;
    return 0;
  }
  return -1;
}

/* key equals value; string values may hold wildcards. */
static int equals(const json_t *key, const json_t *value) {
  if (json_is_string(value) && json_is_string(key)) {
    if (pol_wildcard(json_string_value(value), json_string_value(key))) return 1;
  }
  if ((json_is_string(key) || json_is_number(key)) && (json_is_string(value) || json_is_number(value))) {
    double a, b;
    int da, db;
    if (num_of(key, &a, &da) == 0 && num_of(value, &b, &db) == 0 && da == db) return a == b;
    if (json_is_number(key) != json_is_number(value)) {
      /* 1 vs "1": compare as text */
      char buf[64];
      const json_t *n = json_is_number(key) ? key : value, *s = json_is_number(key) ? value : key;
      if (json_is_integer(n)) snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(n));
      else snprintf(buf, sizeof buf, "%g", json_real_value(n));
      return !strcmp(buf, json_string_value(s));
    }
  }
  if (json_is_boolean(key) && json_is_string(value))
    return !strcasecmp(json_string_value(value), json_is_true(key) ? "true" : "false");
  if (json_is_string(key) && json_is_boolean(value))
    return !strcasecmp(json_string_value(key), json_is_true(value) ? "true" : "false");
  if (json_is_number(key) && json_is_number(value)) return json_number_value(key) == json_number_value(value);
  return json_equal(key, value);
}

static int in_list(const json_t *k, const json_t *list) {
  if (!json_is_array(list)) return equals(k, list);
  size_t i;
  json_t *e;
  json_array_foreach(list, i, e) if (equals(k, e)) return 1;
  return 0;
}

/* mode: 0 any-in, 1 all-in, 2 any-not-in, 3 all-not-in */
static int set_op(const json_t *key, const json_t *value, int mode) {
  json_t *one = NULL;
  const json_t *keys = key;
  if (!json_is_array(key)) keys = one = json_pack("[O]", key);
  size_t i, n = json_array_size(keys), hits = 0;
  json_t *e;
  json_array_foreach(keys, i, e) if (in_list(e, value)) hits++;
  json_decref(one);
  switch (mode) {
  case 0: return hits > 0;
  case 1: return hits == n;
  case 2: return hits < n;
  default: return hits == 0;
  }
}

int pol_operator(const char *op, const json_t *key, const json_t *value, char *err, size_t errlen) {
  if (!op) {
    snprintf(err, errlen, "condition without operator");
    return SK_EINVAL;
  }
  if (!key) key = json_null();
  if (!value) value = json_null();
  if (!strcasecmp(op, "Equals") || !strcasecmp(op, "Equal")) return equals(key, value);
  if (!strcasecmp(op, "NotEquals") || !strcasecmp(op, "NotEqual")) return !equals(key, value);
  if (!strcasecmp(op, "In")) {
    if (json_is_array(key)) return set_op(key, value, 1);
    return in_list(key, value);
  }
  if (!strcasecmp(op, "NotIn")) {
    if (json_is_array(key)) return !set_op(key, value, 1);
    return !in_list(key, value);
  }
  if (!strcasecmp(op, "AnyIn")) return set_op(key, value, 0);
  if (!strcasecmp(op, "AllIn")) return set_op(key, value, 1);
  if (!strcasecmp(op, "AnyNotIn")) return set_op(key, value, 2);
  if (!strcasecmp(op, "AllNotIn")) return set_op(key, value, 3);
  int which = !strcasecmp(op, "GreaterThan")           ? 1
              : !strcasecmp(op, "GreaterThanOrEquals") ? 2
              : !strcasecmp(op, "LessThan")            ? 3
              : !strcasecmp(op, "LessThanOrEquals")    ? 4
                                                       : 0;
  if (!which) {
    snprintf(err, errlen, "unknown operator %.64s", op);
    return SK_EINVAL;
  }
  double a, b;
  int da, db;
  if (num_of(key, &a, &da) < 0 || num_of(value, &b, &db) < 0 || da != db) return 0;
  switch (which) {
  case 1: return a > b;
  case 2: return a >= b;
  case 3: return a < b;
  default: return a <= b;
  }
}

static int one_condition(const json_t *c, const json_t *ctx, char *err, size_t errlen) {
  if (!json_is_object(c)) {
    snprintf(err, errlen, "a condition must be a mapping with key, operator, value");
    return SK_EINVAL;
  }
  json_t *key = NULL, *value = NULL;
  int rc = pol_substitute(json_object_get(c, "key"), ctx, &key, err, errlen);
  if (rc < 0) goto out;
  rc = pol_substitute(json_object_get(c, "value"), ctx, &value, err, errlen);
  if (rc < 0) goto out;
  rc = pol_operator(json_string_value(json_object_get(c, "operator")), key, value, err, errlen);
out:
  json_decref(key);
  json_decref(value);
  return rc;
}

static int cond_list(const json_t *list, int want_all, const json_t *ctx, char *err, size_t errlen) {
  if (!json_is_array(list)) {
    snprintf(err, errlen, "%s must be a list of conditions", want_all ? "all" : "any");
    return SK_EINVAL;
  }
  size_t i;
  json_t *c;
  if (json_array_size(list) == 0) return 1;
  json_array_foreach(list, i, c) {
    int r = one_condition(c, ctx, err, errlen);
    if (r < 0) return r;
    if (want_all && !r) return 0;
    if (!want_all && r) return 1;
  }
  return want_all;
}

int pol_conditions(const json_t *conds, const json_t *ctx, char *err, size_t errlen) {
  if (!conds || json_is_null(conds)) return 1;
  if (json_is_array(conds)) return cond_list(conds, 1, ctx, err, errlen);
  if (!json_is_object(conds)) {
    snprintf(err, errlen, "conditions must be a list or a mapping with any/all");
    return SK_EINVAL;
  }
  json_t *any = json_object_get(conds, "any"), *all = json_object_get(conds, "all");
  int r = 1;
  if (any) {
    r = cond_list(any, 0, ctx, err, errlen);
    if (r <= 0) return r;
  }
  if (all) r = cond_list(all, 1, ctx, err, errlen);
  return r;
}
