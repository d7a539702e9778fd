/* skiff-telemetry: query parameters, times and durations, JSON replies. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"

static int hexv(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

const char *tl_form_get(sk_pool_t *pool, const char *q, const char *key) {
  size_t kl = strlen(key);
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t len = amp ? (size_t)(amp - q) : strlen(q);
    if (len >= kl && !strncmp(q, key, kl) && (len == kl || q[kl] == '=')) {
      const char *v = len == kl ? q + len : q + kl + 1;
      size_t vl = len == kl ? 0 : len - kl - 1;
      char *o = sk_pool_alloc(pool, vl + 1);
      size_t j = 0;
      for (size_t i = 0; i < vl; i++) {
        if (v[i] == '+')
          o[j++] = ' ';
        else if (v[i] == '%' && i + 2 < vl && hexv((unsigned char)v[i + 1]) >= 0 &&
                 hexv((unsigned char)v[i + 2]) >= 0) {
          o[j++] = (char)(hexv((unsigned char)v[i + 1]) << 4 | hexv((unsigned char)v[i + 2]));
          i += 2;
        } else
          o[j++] = v[i];
      }
      o[j] = 0;
      return o;
    }
    q = amp ? amp + 1 : NULL;
  }
  return NULL;
}

int tl_parse_time_ns(const char *s, int64_t *ns) {
  if (!s || !*s) return SK_EINVAL;
  char *end = NULL;
  if (isdigit((unsigned char)s[0]) && !strchr(s, '-') && !strchr(s, ':')) {
    double d = strtod(s, &end);
    if (*end || !isfinite(d) || d < 0) return SK_EINVAL;
    if (d >= 1e15) { /* already nanoseconds */
      long long v = strtoll(s, &end, 10);
      if (*end) return SK_EINVAL;
      *ns = v;
    } else {
      *ns = (int64_t)(d * 1e9);
    }
    return 0;
  }
  /* RFC 3339: 2024-05-01T12:00:00(.123)Z or with +hh:mm */
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return SK_EINVAL;
  int64_t frac = 0;
  if (*p == '.') {
    int64_t scale = 100000000;
    p++;
    while (isdigit((unsigned char)*p)) {
      frac += (*p - '0') * scale;
      scale /= 10;
      p++;
    }
  }
  int64_t off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1, hh, mm;
    if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) return SK_EINVAL;
    off = sign * (hh * 3600 + mm * 60);
    p += 6;
  }
  if (*p) return SK_EINVAL;
  time_t t = timegm(&tm);
  *ns = ((int64_t)t - off) * 1000000000 + frac;
  return 0;
}

int tl_parse_duration_ns(const char *s, int64_t *ns) {
  if (!s || !*s) return SK_EINVAL;
  double total = 0;
  const char *p = s;
  while (*p) {
    char *end = NULL;
    double v = strtod(p, &end);
    if (end == p || !isfinite(v) || v < 0) return SK_EINVAL;
    p = end;
    double mul;
    if (!strncmp(p, "ns", 2)) mul = 1, p += 2;
    else if (!strncmp(p, "us", 2)) mul = 1e3, p += 2;
    else if (!strncmp(p, "\xc2\xb5s", 3)) mul = 1e3, p += 3;
    else if (!strncmp(p, "ms", 2)) mul = 1e6, p += 2;
    else if (*p == 's') mul = 1e9, p++;
    else if (*p == 'm') mul = 60e9, p++;
    else if (*p == 'h') mul = 3600e9, p++;
    else if (*p == 0 && p != s) mul = 1;
    else return SK_EINVAL;
    total += v * mul;
  }
  if (total > 9.2e18) return SK_ERANGE;
  *ns = (int64_t)total;
  return 0;
}

void tl_respond_json(sk_http_req_t *req, int status, json_t *body) {
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(body, &b);
  json_decref(body);
  sk_http_header_t h[] = {{"content-type", "application/json"}};
  sk_http_respond(req, status, h, 1, b.data ? b.data : "", b.len);
  sk_buf_done(&b);
}

void tl_respond_error(sk_http_req_t *req, int status, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_t *o = json_object();
  json_object_set_new(o, "status", json_string("error"));
  json_object_set_new(o, "errorType", json_string(status >= 500 ? "internal" : "bad_data"));
  json_t *m = json_string(msg);
  json_object_set_new(o, "error", m ? m : json_string("invalid message"));
  tl_respond_json(req, status, o);
}
