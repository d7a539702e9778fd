/* px_resil_conf.c - small typed readers for the resilience config objects,
 * with errors that name the field path. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "px_resil.h"
#include "skiff/config.h"
#include "skiff/err.h"

static int conf_err(char *err, size_t errlen, const char *path, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int conf_err(char *err, size_t errlen, const char *path, const char *key, const char *fmt, ...) {
  if (err && errlen) {
    int n;
    if (path && *path)
      n = snprintf(err, errlen, "%s%s%s: ", path, key ? "." : "", key ? key : "");
    else
      n = snprintf(err, errlen, "%s: ", key ? key : "(root)");
    if (n < 0) n = 0;
    if ((size_t)n < errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
      va_end(ap);
    }
  }
  return SK_ECONFIG;
}

int px_conf_keys(const json_t *obj, const char *path, const char *const *known, char *err,
                 size_t errlen) {
  if (!json_is_object(obj)) return conf_err(err, errlen, path, NULL, "expected an object");
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)obj, k, v) {
    int found = 0;
    for (size_t i = 0; known[i]; i++)
      if (!strcmp(known[i], k)) {
        found = 1;
        break;
      }
    if (!found) return conf_err(err, errlen, path, k, "unknown key");
  }
  return 0;
}

int px_conf_duration(const json_t *obj, const char *path, const char *key, uint64_t *ms, char *err,
                     size_t errlen) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 1;
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < 0 || i > INT64_C(86400000) * 365)
      return conf_err(err, errlen, path, key, "duration out of range");
    *ms = (uint64_t)i;
    return 0;
  }
  if (json_is_string(v)) {
    char msg[128];
    uint64_t out = 0;
    if (sk_config_parse_duration(json_string_value(v), &out, msg, sizeof msg) == 0 &&
        out <= UINT64_C(86400000) * 365) {
      *ms = out;
      return 0;
    }
  }
  return conf_err(err, errlen, path, key, "expected a duration like 250ms");
}

int px_conf_uint(const json_t *obj, const char *path, const char *key, uint64_t lo, uint64_t hi,
                 uint64_t *out, char *err, size_t errlen) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 1;
  json_int_t i;
  if (json_is_integer(v)) {
    i = json_integer_value(v);
  } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
             fabs(json_real_value(v)) < 9e15) {
    i = (json_int_t)json_real_value(v);
  } else {
    return conf_err(err, errlen, path, key, "expected an integer in [%llu, %llu]",
                    (unsigned long long)lo, (unsigned long long)hi);
  }
  if (i < 0 || (uint64_t)i < lo || (uint64_t)i > hi)
    return conf_err(err, errlen, path, key, "%lld is out of range [%llu, %llu]", (long long)i,
                    (unsigned long long)lo, (unsigned long long)hi);
  *out = (uint64_t)i;
  return 0;
}

int px_conf_percent(const json_t *obj, const char *path, const char *key, uint32_t *ppm, char *err,
                    size_t errlen) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 1;
  double d;
  if (json_is_number(v)) {
    d = json_number_value(v);
  } else if (json_is_string(v)) {
    /* "12.5%" or "12.5" */
    const char *s = json_string_value(v);
    char *end = NULL;
    d = strtod(s, &end);
    if (end == s || (*end && strcmp(end, "%"))) d = NAN;
  } else {
    d = NAN;
  }
  if (!(d >= 0 && d <= 100))
    return conf_err(err, errlen, path, key, "expected a percentage between 0 and 100");
  *ppm = (uint32_t)sk_config_round(d * 10000.0);
  return 0;
}

int px_conf_string(const json_t *obj, const char *path, const char *key, char *buf, size_t buflen,
                   char *err, size_t errlen) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 1;
  if (!json_is_string(v)) return conf_err(err, errlen, path, key, "expected a string");
  size_t n = json_string_length(v);
  if (n >= buflen)
    return conf_err(err, errlen, path, key, "longer than %zu bytes", buflen - 1);
  if (memchr(json_string_value(v), 0, n)) return conf_err(err, errlen, path, key, "contains NUL");
  memcpy(buf, json_string_value(v), n);
  buf[n] = 0;
  return 0;
}

int px__conf_err(char *err, size_t errlen, const char *path, const char *key, const char *msg) {
  return conf_err(err, errlen, path, key, "%s", msg);
}

px_outcome_t px_outcome_from_err(int err, int sent) {
  switch (err) {
  case SK_ECONNREFUSED:
    return PX_OUT_CONNECT_FAILURE;
  case SK_ETIMEDOUT:
    return sent ? PX_OUT_TIMEOUT : PX_OUT_CONNECT_FAILURE;
  case SK_ETLS:
    return sent ? PX_OUT_RESET : PX_OUT_CONNECT_FAILURE;
  case SK_ECONNRESET:
  case SK_ECLOSED:
  case SK_EPIPE:
  case SK_EPROTO:
  case SK_EHTTP:
    return sent ? PX_OUT_RESET : PX_OUT_CONNECT_FAILURE;
  default:
    return sent ? PX_OUT_RESET : PX_OUT_CONNECT_FAILURE;
  }
}

const char *px_outcome_name(px_outcome_t o) {
  switch (o) {
  case PX_OUT_RESPONSE: return "response";
  case PX_OUT_CONNECT_FAILURE: return "connect_failure";
  case PX_OUT_RESET: return "reset";
  case PX_OUT_TIMEOUT: return "timeout";
  case PX_OUT_LOCAL: return "local";
  }
  return "?";
}
