/* trace.c - W3C Trace Context (traceparent, tracestate), ids, sampling and
 * spans recorded straight into OTLP protobuf (see skiff/trace.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/trace.h"
#include "trace_int.h"

/* ---- ids ---- */

/* Ids come from the kernel's CSPRNG (getrandom), 4 KB at a time per
 * thread: one system call per ~100 requests, and no OpenSSL in the request
 * path (skiff-proxy loads it only for TLS, see ossl_lazy.c). Bytes handed
 * out are wiped from the buffer. */
static _Thread_local struct {
  uint8_t b[4096];
  size_t left;
} rnd;

static void refill(void) {
  size_t got = 0;
  while (got < sizeof rnd.b) {
    ssize_t r = getrandom(rnd.b + got, sizeof rnd.b - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) abort(); /* no CSPRNG: nothing safe to do */
    got += (size_t)r;
  }
}

void sk_trace_random(void *p, size_t n) {
  uint8_t *o = p;
  while (n) {
    if (!rnd.left) {
      refill();
      rnd.left = sizeof rnd.b;
    }
    size_t k = n < rnd.left ? n : rnd.left;
    memcpy(o, rnd.b + sizeof rnd.b - rnd.left, k);
    memset(rnd.b + sizeof rnd.b - rnd.left, 0, k);
    rnd.left -= k;
    o += k;
    n -= k;
  }
}

uint64_t sk_trace_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

int sk_trace_id_is_valid(const uint8_t id[16]) { return !all_zero(id, 16); }

static const char hexd[] = "0123456789abcdef";

static void to_hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexd[p[i] >> 4];
    out[2 * i + 1] = hexd[p[i] & 15];
  }
  out[2 * n] = 0;
}

void sk_trace_id_hex(const uint8_t id[16], char out[33]) { to_hex(id, 16, out); }
void sk_span_id_hex(const uint8_t id[8], char out[17]) { to_hex(id, 8, out); }

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1; /* upper case is invalid in traceparent */
}

static int from_hex(const char *s, size_t nbytes, uint8_t *out) {
  for (size_t i = 0; i < nbytes; i++) {
    int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
    if (h < 0 || l < 0) return -1;
    out[i] = (uint8_t)(h << 4 | l);
  }
  return 0;
}

/* ---- traceparent ---- */

int sk_traceparent_parse(const char *v, sk_trace_ctx_t *out) {
  if (!v) return SK_EPARSE;
  size_t n = strnlen(v, SK_TRACEPARENT_LEN + 1);
  uint8_t ver;
  if (n < SK_TRACEPARENT_LEN || from_hex(v, 1, &ver) < 0 || ver == 0xff) return SK_EPARSE;
  if (ver == 0 && n != SK_TRACEPARENT_LEN) return SK_EPARSE;
  if (ver > 0 && n > SK_TRACEPARENT_LEN && v[SK_TRACEPARENT_LEN] != '-') return SK_EPARSE;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return SK_EPARSE;
  sk_trace_ctx_t c;
  uint8_t flags;
  if (from_hex(v + 3, 16, c.trace_id) < 0 || from_hex(v + 36, 8, c.span_id) < 0 || from_hex(v + 53, 1, &flags) < 0)
    return SK_EPARSE;
  if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8)) return SK_EPARSE;
  c.flags = flags & SK_TRACE_FLAG_SAMPLED;
  *out = c;
  return 0;
}

void sk_traceparent_format(const sk_trace_ctx_t *c, char out[SK_TRACEPARENT_LEN + 1]) {
  out[0] = out[1] = '0';
  out[2] = '-';
  to_hex(c->trace_id, 16, out + 3);
  out[35] = '-';
  to_hex(c->span_id, 8, out + 36);
  out[52] = '-';
  out[53] = '0';
  out[54] = (c->flags & SK_TRACE_FLAG_SAMPLED) ? '1' : '0';
  out[55] = 0;
}

/* ---- tracestate ---- */

static int lcalpha(char c) { return c >= 'a' && c <= 'z'; }
static int digit(char c) { return c >= '0' && c <= '9'; }
static int keychar(char c) { return lcalpha(c) || digit(c) || c == '_' || c == '-' || c == '*' || c == '/'; }
static int ows(char c) { return c == ' ' || c == '\t'; }
static int nblk(char c) { return c >= 0x21 && c <= 0x7e && c != ',' && c != '='; }

static int valid_key(const char *k, size_t n) {
  const char *at = memchr(k, '@', n);
  if (!at) {
    if (n < 1 || n > 256 || !lcalpha(k[0])) return 0;
    for (size_t i = 1; i < n; i++)
      if (!keychar(k[i])) return 0;
    return 1;
  }
  size_t tn = (size_t)(at - k), sn = n - tn - 1;
  if (tn < 1 || tn > 241 || !(lcalpha(k[0]) || digit(k[0]))) return 0;
  for (size_t i = 1; i < tn; i++)
    if (!keychar(k[i])) return 0;
  if (sn < 1 || sn > 14 || !lcalpha(at[1])) return 0;
  for (size_t i = 2; i <= sn; i++)
    if (!keychar(at[i])) return 0;
  return 1;
}

static int valid_value(const char *v, size_t n) {
  if (n < 1 || n > 256 || !nblk(v[n - 1])) return 0;
  for (size_t i = 0; i < n; i++)
    if (v[i] != ' ' && !nblk(v[i])) return 0;
  return 1;
}

typedef struct ts_member {
  const char *p;
  size_t n, keylen;
} ts_member_t;

int sk_tracestate_parse(const char *v, char *out, size_t outlen) {
  if (!v || !out || outlen == 0) return SK_EINVAL;
  ts_member_t m[SK_TRACESTATE_MAX_MEMBERS];
  size_t nm = 0;
  const char *s = v;
  for (;;) {
    const char *e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    size_t a = 0, b = len;
    while (a < b && ows(s[a])) a++;
    while (b > a && ows(s[b - 1])) b--;
    if (b > a) {
      const char *eq = memchr(s + a, '=', b - a);
      if (!eq) return SK_EPARSE;
      size_t kl = (size_t)(eq - (s + a));
      if (!valid_key(s + a, kl) || !valid_value(eq + 1, b - a - kl - 1)) return SK_EPARSE;
      if (nm == SK_TRACESTATE_MAX_MEMBERS) return SK_EPARSE;
      for (size_t i = 0; i < nm; i++)
        if (m[i].keylen == kl && !memcmp(m[i].p, s + a, kl)) return SK_EPARSE; /* duplicate key */
      m[nm++] = (ts_member_t){s + a, b - a, kl};
    }
    if (!e) break;
    s = e + 1;
  }
  /* fit: drop members over 128 characters from the end first, then any from the end */
  for (;;) {
    size_t total = 0;
    for (size_t i = 0; i < nm; i++) total += m[i].n + (i ? 1 : 0);
    if (total < outlen) break;
    size_t drop = nm - 1;
    for (size_t i = nm; i-- > 0;)
      if (m[i].n > 128) {
        drop = i;
        break;
      }
    memmove(&m[drop], &m[drop + 1], (nm - drop - 1) * sizeof m[0]);
    nm--;
  }
  size_t off = 0;
  for (size_t i = 0; i < nm; i++) {
    if (i) out[off++] = ',';
    memcpy(out + off, m[i].p, m[i].n);
    off += m[i].n;
  }
  out[off] = 0;
  return (int)off;
}

/* ---- sampling ---- */

int sk_trace_should_sample(double ratio, const sk_trace_ctx_t *parent, const uint8_t trace_id[16]) {
  if (parent) return (parent->flags & SK_TRACE_FLAG_SAMPLED) != 0;
  if (!(ratio > 0)) return 0;
  if (ratio >= 1) return 1;
  uint64_t x = 0;
  for (int i = 8; i < 16; i++) x = x << 8 | trace_id[i];
  /* x < ratio * 2^64, computed without overflow */
  return (double)x < ratio * 18446744073709551616.0;
}

/* ---- spans ---- */

void sk_span_begin(sk_span_t *s, sk_tracer_t *t, const char *name, sk_span_kind_t kind,
                   const sk_trace_ctx_t *parent, const char *tracestate, uint64_t start_ns) {
  memset(s, 0, sizeof *s);
  s->tracer = t;
  if (parent) {
    memcpy(s->ctx.trace_id, parent->trace_id, 16);
    memcpy(s->parent_span_id, parent->span_id, 8);
    s->has_parent = 1;
  } else {
    do sk_trace_random(s->ctx.trace_id, 16);
    while (all_zero(s->ctx.trace_id, 16));
  }
  do sk_trace_random(s->ctx.span_id, 8);
  while (all_zero(s->ctx.span_id, 8));
  double ratio = t ? sk_tracer_sample_ratio(t) : 0;
  int sampled = sk_trace_should_sample(ratio, parent, s->ctx.trace_id);
  s->ctx.flags = sampled ? SK_TRACE_FLAG_SAMPLED : 0;
  s->recording = sampled && t;
  if (!s->recording) return;
  s->start_ns = start_ns ? start_ns : sk_trace_now_ns();
  sk_buf_init(&s->pb);
  sk_buf_reserve(&s->pb, 480); /* a proxy span's attributes fit: one allocation */
  sk__pb_str(&s->pb, 5, name ? name : "");
  sk__pb_uint(&s->pb, 6, (uint64_t)kind);
  if (tracestate && *tracestate) sk__pb_str(&s->pb, 3, tracestate);
}

#define SK_SPAN_MAX_STR 4096

static size_t cut(const char *v) {
  size_t n = strlen(v);
  return n > SK_SPAN_MAX_STR ? SK_SPAN_MAX_STR : n;
}

void sk_span_attr_str(sk_span_t *s, const char *key, const char *v) {
  if (!s->recording || !key || !v) return;
  sk__pb_kv_str(&s->pb, 9, key, v, cut(v));
}

void sk_span_attr_int(sk_span_t *s, const char *key, int64_t v) {
  if (!s->recording || !key) return;
  sk__pb_kv_scalar(&s->pb, 9, key, 3, 0, (uint64_t)v);
}

void sk_span_attr_bool(sk_span_t *s, const char *key, int v) {
  if (!s->recording || !key) return;
  sk__pb_kv_scalar(&s->pb, 9, key, 2, 0, v ? 1 : 0);
}

void sk_span_attr_double(sk_span_t *s, const char *key, double v) {
  if (!s->recording || !key) return;
  uint64_t raw;
  memcpy(&raw, &v, sizeof raw);
  sk__pb_kv_scalar(&s->pb, 9, key, 4, 1, raw);
}

void sk_span_event(sk_span_t *s, const char *name, uint64_t ts_ns, const char *key, const char *v) {
  if (!s->recording || !name) return;
  sk_buf_t ev;
  sk_buf_init(&ev);
  sk__pb_fixed64(&ev, 1, ts_ns ? ts_ns : sk_trace_now_ns());
  sk__pb_str(&ev, 2, name);
  if (key && v) sk__pb_kv_str(&ev, 3, key, v, cut(v));
  sk__pb_bytes(&s->pb, 11, ev.data, ev.len);
  sk_buf_done(&ev);
}

void sk_span_set_status(sk_span_t *s, sk_span_status_t code, const char *message) {
  if (!s->recording) return;
  s->status = (int)code;
  if (code == SK_SPAN_STATUS_UNSET) return;
  sk_buf_t st;
  sk_buf_init(&st);
  if (message && *message) sk__pb_str(&st, 2, message);
  sk__pb_uint(&st, 3, (uint64_t)code);
  sk__pb_bytes(&s->pb, 15, st.data, st.len); /* the last Status wins when decoded (merge) */
  sk_buf_done(&st);
}

void sk_span_end(sk_span_t *s, uint64_t end_ns) {
  if (!s->recording) return;
  s->recording = 0;
  sk_buf_t *b = &s->pb;
  sk__pb_bytes(b, 1, s->ctx.trace_id, 16);
  sk__pb_bytes(b, 2, s->ctx.span_id, 8);
  if (s->has_parent) sk__pb_bytes(b, 4, s->parent_span_id, 8);
  uint64_t end = end_ns ? end_ns : sk_trace_now_ns();
  if (end < s->start_ns) end = s->start_ns;
  sk__pb_fixed64(b, 7, s->start_ns);
  sk__pb_fixed64(b, 8, end);
  sk__pb_fixed32(b, 16, s->ctx.flags); /* W3C trace flags in the low byte */
  sk__tracer_enqueue(s->tracer, b->data, b->len);
  sk_buf_done(b);
}

void sk_span_discard(sk_span_t *s) {
  if (!s) return;
  if (s->recording) sk_buf_done(&s->pb);
  s->recording = 0;
}
