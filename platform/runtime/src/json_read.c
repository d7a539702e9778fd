/* json_read.c - a fast reader of JSON text into jansson values.
 *
 * jansson's own parser moves every input byte through its lexer one at a
 * time (a call and a one-byte buffer append per character); for the few-KB
 * documents the daemons read per request (an AdmissionReview, an OTLP/JSON
 * batch, an API body) that was over half of the work of answering. This
 * reader scans strings and numbers in place and builds the same jansson
 * tree. It is deliberately narrow: whatever it is not sure of (any error, a
 * duplicate key, \u0000, a number longer than 63 characters, a locale whose
 * decimal point is not '.', deep nesting) it hands back to sk_json_parse,
 * which asks jansson - so jansson stays the judge of what is valid and of
 * how an error is worded. fuzz_json checks, input by input, that every
 * document read here is one jansson accepts and gives the same dump. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"
#include "skiff/mem.h"

typedef struct rd {
  const unsigned char *p, *end;
  int depth, max_depth;
  int dp_known, dp_ok; /* the locale's decimal point is '.' (strtod) */
  char *tmp;           /* unescaped string */
  size_t tlen, tcap;
} rd_t;

static json_t *rd_value(rd_t *r);

static inline void rd_ws(rd_t *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t')) r->p++;
}

/* Length of the UTF-8 sequence at p as jansson accepts it (no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t rd_utf8(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0], cp;
  size_t n;
  if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
    return 0;
  return n;
}

static void rd_put(rd_t *r, const void *d, size_t n) {
  if (!n) return;
  if (r->tlen + n > r->tcap) {
    size_t cap = r->tcap ? r->tcap : 256;
    while (cap < r->tlen + n) cap *= 2;
    r->tmp = sk_xrealloc(r->tmp, cap);
    r->tcap = cap;
  }
  memcpy(r->tmp + r->tlen, d, n);
  r->tlen += n;
}

static int rd_hex4(const unsigned char *p, const unsigned char *end, unsigned *v) {
  if (end - p < 4) return -1;
  unsigned x = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    x = (x << 4) | d;
  }
  *v = x;
  return 0;
}

/* r->p is at a string's opening quote. On success (*s, *n) is the string: in
 * the input when it has no escapes, else in r->tmp (valid until the next
 * string). */
static int rd_string(rd_t *r, const char **s, size_t *n) {
  const unsigned char *start = r->p + 1, *p = start, *end = r->end;
  for (;;) { /* the common case: no escapes */
    if (p >= end) return -1;
    unsigned c = *p;
    if (c == '"') {
      *s = (const char *)start;
      *n = (size_t)(p - start);
      r->p = p + 1;
      return 0;
    }
    if (c == '\\') break;
    if (c < 0x20) return -1;
    if (c < 0x80) {
      p++;
    } else {
      size_t k = rd_utf8(p, end);
      if (!k) return -1;
      p += k;
    }
  }
  r->tlen = 0;
  rd_put(r, start, (size_t)(p - start));
  for (;;) {
    if (p >= end) return -1;
    unsigned c = *p;
    if (c == '"') break;
    if (c < 0x20) return -1;
    if (c >= 0x80) {
      size_t k = rd_utf8(p, end);
      if (!k) return -1;
      rd_put(r, p, k);
      p += k;
      continue;
    }
    if (c != '\\') {
      const unsigned char *q = p;
      while (q < end && *q != '"' && *q != '\\' && *q >= 0x20 && *q < 0x80) q++;
      rd_put(r, p, (size_t)(q - p));
      p = q;
      continue;
    }
    if (++p >= end) return -1;
    char ch;
    switch (*p) {
    case '"': ch = '"'; break;
    case '\\': ch = '\\'; break;
    case '/': ch = '/'; break;
    case 'b': ch = '\b'; break;
    case 'f': ch = '\f'; break;
    case 'n': ch = '\n'; break;
    case 'r': ch = '\r'; break;
    case 't': ch = '\t'; break;
    case 'u': {
      unsigned v, lo;
      if (rd_hex4(p + 1, end, &v) < 0) return -1;
      p += 5;
      if (v == 0 || (v >= 0xdc00 && v <= 0xdfff)) return -1; /* \u0000, a lone low surrogate: jansson decides */
      if (v >= 0xd800 && v <= 0xdbff) {
        if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || rd_hex4(p + 2, end, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
          return -1;
        p += 6;
        v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
      }
      unsigned char u[4];
      size_t k;
      if (v < 0x80) u[0] = (unsigned char)v, k = 1;
      else if (v < 0x800) u[0] = (unsigned char)(0xc0 | (v >> 6)), u[1] = (unsigned char)(0x80 | (v & 0x3f)), k = 2;
      else if (v < 0x10000)
        u[0] = (unsigned char)(0xe0 | (v >> 12)), u[1] = (unsigned char)(0x80 | ((v >> 6) & 0x3f)),
        u[2] = (unsigned char)(0x80 | (v & 0x3f)), k = 3;
      else
        u[0] = (unsigned char)(0xf0 | (v >> 18)), u[1] = (unsigned char)(0x80 | ((v >> 12) & 0x3f)),
        u[2] = (unsigned char)(0x80 | ((v >> 6) & 0x3f)), u[3] = (unsigned char)(0x80 | (v & 0x3f)), k = 4;
      rd_put(r, u, k);
      continue;
    }
    default:
      return -1;
    }
    rd_put(r, &ch, 1);
    p++;
  }
  *s = r->tmp ? r->tmp : "";
  *n = r->tlen;
  r->p = p + 1;
  return 0;
}

static inline int rd_digit(const unsigned char *p, const unsigned char *end) {
  return p < end && *p >= '0' && *p <= '9';
}

/* The grammar jansson's lexer takes: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * An integer without fraction or exponent, a real otherwise. */
static json_t *rd_number(rd_t *r) {
  const unsigned char *s = r->p, *p = s, *end = r->end;
  int neg = 0, real = 0;
  if (*p == '-') neg = 1, p++;
  if (!rd_digit(p, end)) return NULL;
  if (*p == '0') {
    if (rd_digit(++p, end)) return NULL;
  } else {
    while (rd_digit(p, end)) p++;
  }
  if (p < end && *p == '.') {
    real = 1;
    if (!rd_digit(++p, end)) return NULL;
    while (rd_digit(p, end)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    real = 1;
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (!rd_digit(p, end)) return NULL;
    while (rd_digit(p, end)) p++;
  }
  size_t n = (size_t)(p - s);
  if (!real && n - (size_t)neg <= 18) { /* fits: no overflow to check */
    long long v = 0;
    for (const unsigned char *q = s + neg; q < p; q++) v = v * 10 + (*q - '0');
    r->p = p;
    return json_integer(neg ? -v : v);
  }
  char buf[64], *e;
  if (n >= sizeof buf) return NULL;
  memcpy(buf, s, n);
  buf[n] = 0;
  errno = 0;
  if (!real) {
    long long v = strtoll(buf, &e, 10);
    if (errno == ERANGE || e != buf + n) return NULL; /* jansson: too big an integer */
    r->p = p;
    return json_integer(v);
  }
  if (!r->dp_known) {
    const char *dp = localeconv()->decimal_point;
    r->dp_ok = dp && dp[0] == '.' && dp[1] == 0;
    r->dp_known = 1;
  }
  if (!r->dp_ok) return NULL;
  double d = strtod(buf, &e);
  if (e != buf + n || isinf(d) || isnan(d)) return NULL; /* jansson: real number overflow */
  r->p = p;
  return json_real(d);
}

static json_t *rd_object(rd_t *r) {
  if (++r->depth > r->max_depth) return NULL;
  r->p++;
  json_t *o = json_object();
  if (!o) return NULL;
  rd_ws(r);
  if (r->p < r->end && *r->p == '}') {
    r->p++;
    r->depth--;
    return o;
  }
  for (;;) {
    rd_ws(r);
    if (r->p >= r->end || *r->p != '"') goto fail;
    const char *k;
    size_t kn;
    if (rd_string(r, &k, &kn) < 0) goto fail;
    char *kcopy = NULL;
    if (k == r->tmp) { /* escaped: the value's strings will reuse tmp */
      kcopy = sk_xmalloc(kn + 1);
      memcpy(kcopy, k, kn);
      k = kcopy;
    }
    rd_ws(r);
    json_t *v = NULL;
    if (r->p < r->end && *r->p == ':') {
      r->p++;
      rd_ws(r);
      v = rd_value(r);
    }
    size_t before = json_object_size(o);
    /* a duplicate key replaces the value and leaves the size: jansson refuses it */
    int bad = !v || json_object_setn_new_nocheck(o, k, kn, v) < 0 || json_object_size(o) == before;
    free(kcopy);
    if (bad) goto fail;
    rd_ws(r);
    if (r->p >= r->end) goto fail;
    if (*r->p == ',') {
      r->p++;
      continue;
    }
    if (*r->p != '}') goto fail;
    r->p++;
    break;
  }
  r->depth--;
  return o;
fail:
  json_decref(o);
  return NULL;
}

static json_t *rd_array(rd_t *r) {
  if (++r->depth > r->max_depth) return NULL;
  r->p++;
  json_t *a = json_array();
  if (!a) return NULL;
  rd_ws(r);
  if (r->p < r->end && *r->p == ']') {
    r->p++;
    r->depth--;
    return a;
  }
  for (;;) {
    rd_ws(r);
    json_t *v = rd_value(r);
    if (!v || json_array_append_new(a, v) < 0) goto fail;
    rd_ws(r);
    if (r->p >= r->end) goto fail;
    if (*r->p == ',') {
      r->p++;
      continue;
    }
    if (*r->p != ']') goto fail;
    r->p++;
    break;
  }
  r->depth--;
  return a;
fail:
  json_decref(a);
  return NULL;
}

static json_t *rd_literal(rd_t *r, const char *word, size_t n, json_t *v) {
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n)) return NULL;
  r->p += n;
  return v;
}

static json_t *rd_value(rd_t *r) {
  if (r->p >= r->end) return NULL;
  switch (*r->p) {
  case '{':
    return rd_object(r);
  case '[':
    return rd_array(r);
  case '"': {
    const char *s;
    size_t n;
    if (rd_string(r, &s, &n) < 0) return NULL;
    return json_stringn_nocheck(s, n);
  }
  case 't':
    return rd_literal(r, "true", 4, json_true());
  case 'f':
    return rd_literal(r, "false", 5, json_false());
  case 'n':
    return rd_literal(r, "null", 4, json_null());
  default:
    return rd_number(r);
  }
}

int sk__json_parse_fast(const char *s, size_t len, int max_depth, json_t **out) {
  *out = NULL;
  if (!s) return -1;
  rd_t r = {.p = (const unsigned char *)s, .end = (const unsigned char *)s + len};
  r.max_depth = max_depth > SK__JSON_FAST_MAX_DEPTH ? SK__JSON_FAST_MAX_DEPTH : max_depth;
  rd_ws(&r);
  json_t *v = rd_value(&r);
  if (v) {
    rd_ws(&r);
    if (r.p != r.end) { /* trailing bytes: jansson says what they are */
      json_decref(v);
      v = NULL;
    }
  }
  free(r.tmp);
  if (!v) return -1;
  *out = v;
  return 0;
}
