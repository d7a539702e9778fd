/* The HTTP/1.x codec: heads, framing decisions and the chunked coding.
 * Strict on purpose: whatever two parsers could read differently (request
 * smuggling) is refused rather than guessed at. */
#include "h1_int.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "skiff/err.h"
#include "skiff/mem.h"

#define SK__H1_HEAD_CAP (1u << 20)
#define SK__H1_MAX_LEADING_CRLF 8

#define T_ SK__H1_C_TCHAR
#define V_ SK__H1_C_VALUE
/* tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 *         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
 * field values: VCHAR, SP, HTAB and obs-text (0x80-0xff) */
const unsigned char sk__h1_ctype[256] = {
    ['\t'] = V_,
    [' '] = V_,
    ['!'] = T_ | V_,
    ['"'] = V_,
    ['#' ... '\''] = T_ | V_,
    ['(' ... ')'] = V_,
    ['*' ... '+'] = T_ | V_,
    [','] = V_,
    ['-' ... '.'] = T_ | V_,
    ['/'] = V_,
    ['0' ... '9'] = T_ | V_,
    [':' ... '@'] = V_,
    ['A' ... 'Z'] = T_ | V_,
    ['[' ... ']'] = V_,
    ['^' ... '`'] = T_ | V_,
    ['a' ... 'z'] = T_ | V_,
    ['{'] = V_,
    ['|'] = T_ | V_,
    ['}'] = V_,
    ['~'] = T_ | V_,
    [0x80 ... 0xff] = V_,
};
#undef T_
#undef V_

int sk__h1_is_tchar(unsigned char c) { return sk__h1_ctype[c] & SK__H1_C_TCHAR; }

/* field-vchar / SP / HTAB */
static inline int is_vchar_ws(unsigned char c) { return sk__h1_ctype[c] & SK__H1_C_VALUE; }

long sk__h1_name_len(const char *s) {
  if (!s || !*s) return -1;
  const unsigned char *p = (const unsigned char *)s;
  for (; *p; p++)
    if (!(sk__h1_ctype[*p] & SK__H1_C_TCHAR)) return -1;
  return (long)(p - (const unsigned char *)s);
}

/* 1 when none of the 8 bytes at p can be rejected in a field value
 * (none is a control character or DEL); 0 means look byte by byte. */
static inline int value_word_ok(const char *p) {
  uint64_t x, d;
  memcpy(&x, p, 8);
  d = x ^ 0x7f7f7f7f7f7f7f7full; /* a DEL byte becomes 0 */
  return !(((x - 0x2020202020202020ull) & ~x) & 0x8080808080808080ull) &&
         !(((d - 0x0101010101010101ull) & ~d) & 0x8080808080808080ull);
}

/* Are v[0..n) all allowed in a field value? Word by word, the last word
 * overlapping the one before; byte by byte when a word has a suspect. */
static int value_ok(const char *v, size_t n) {
  if (n >= 8) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
      if (!value_word_ok(v + i)) goto bytes;
    if (i == n || value_word_ok(v + n - 8)) return 1;
  }
bytes:
  for (size_t i = 0; i < n; i++)
    if (!(sk__h1_ctype[(unsigned char)v[i]] & SK__H1_C_VALUE)) return 0;
  return 1;
}

long sk__h1_value_len(const char *s) {
  if (!s) return -1;
  size_t n = strlen(s);
  return value_ok(s, n) ? (long)n : -1;
}

int sk__h1_valid_name(const char *s) { return sk__h1_name_len(s) > 0; }

int sk__h1_valid_value(const char *s) { return sk__h1_value_len(s) >= 0; }

void sk__h1_out_grow(sk__h1_out_t *o, size_t n) {
  if (o->cap - o->len >= n) return;
  size_t nc = o->cap ? o->cap * 2 : 256;
  while (nc - o->len < n) nc *= 2;
  if (o->heap) {
    o->d = sk_xrealloc(o->d, nc);
  } else {
    char *d = sk_xmalloc(nc);
    if (o->len) memcpy(d, o->d, o->len);
    o->d = d;
    o->heap = 1;
  }
  o->cap = nc;
}

void sk__h1_out_done(sk__h1_out_t *o) {
  if (o->heap) free(o->d);
  o->d = NULL;
  o->len = o->cap = 0;
  o->heap = 0;
}

size_t sk__h1_u64(char out[20], uint64_t v) {
  char tmp[20];
  size_t k = 0, o = 0;
  do {
    tmp[k++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (k) out[o++] = tmp[--k];
  return o;
}

void sk__h1_parser_init(sk__h1_parser_t *p, size_t max_head_bytes, size_t max_fields,
                        sk__h1_field_t *fields) {
  memset(p, 0, sizeof *p);
  p->max_head_bytes = max_head_bytes > SK__H1_HEAD_CAP ? SK__H1_HEAD_CAP : max_head_bytes;
  if (p->max_head_bytes < 16) p->max_head_bytes = 16;
  p->max_fields = max_fields;
  p->fields = fields;
}

void sk__h1_parser_reset(sk__h1_parser_t *p) {
  p->scan = 0;
  p->status = 0;
  p->error = NULL;
}

static int fail(sk__h1_parser_t *p, int status, const char *msg) {
  p->status = status;
  p->error = msg;
  return SK_EHTTP;
}

static inline int ieq(const char *a, size_t n, const char *lit) {
  size_t l = strlen(lit);
  if (n != l) return 0;
  for (size_t i = 0; i < n; i++)
    if (sk__h1_lc((unsigned char)a[i]) != sk__h1_lc((unsigned char)lit[i])) return 0;
  return 1;
}

const sk__h1_field_t *sk__h1_find(const sk__h1_head_t *h, const char *name) {
  for (size_t i = 0; i < h->nfields; i++)
    if (ieq(h->fields[i].name, h->fields[i].name_len, name)) return &h->fields[i];
  return NULL;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Iterates the elements of a comma-separated list: returns 1 with the next
 * trimmed element in [*e, *e + *en), 0 at the end. Empty elements are
 * skipped. */
static int list_next(const char *v, size_t n, size_t *pos, const char **e, size_t *en) {
  while (*pos < n) {
    size_t s = *pos, t;
    while (*pos < n && v[*pos] != ',') (*pos)++;
    t = *pos;
    if (*pos < n) (*pos)++; /* the comma */
    while (s < t && is_ows(v[s])) s++;
    while (t > s && is_ows(v[t - 1])) t--;
    if (t > s) {
      *e = v + s;
      *en = t - s;
      return 1;
    }
  }
  return 0;
}

int sk__h1_list_has(const char *v, size_t n, const char *token) {
  size_t pos = 0, en;
  const char *e;
  while (list_next(v, n, &pos, &e, &en))
    if (ieq(e, en, token)) return 1;
  return 0;
}

/* Finds the end of the head (after CRLF CRLF) scanning from p->scan and
 * rejecting NUL, bare CR and bare LF on the way. start: first byte of the
 * start line. Returns the head length, 0 for more, SK_EHTTP. */
static int find_head_end(sk__h1_parser_t *p, const char *buf, size_t len, size_t start) {
  size_t i = p->scan > start ? p->scan : start;
  size_t lim = len < p->max_head_bytes ? len : p->max_head_bytes;
  for (; i < lim; i++) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* eight bytes at a time to the next byte below 0x0e (NUL, LF and CR
     * are): the lowest flagged byte of the word is exactly the first one */
    while (i + 8 <= lim) {
      uint64_t x;
      memcpy(&x, buf + i, 8);
      uint64_t m = (x - 0x0e0e0e0e0e0e0e0eull) & ~x & 0x8080808080808080ull;
      if (m) {
        i += (size_t)__builtin_ctzll(m) >> 3;
        break;
      }
      i += 8;
    }
    if (i >= lim) break;
#endif
    unsigned char c = (unsigned char)buf[i];
    if (c >= 0x0e) continue;
    if (c == 0) return fail(p, 400, "NUL byte in the message head");
    if (c == '\n') {
      if (i == 0 || buf[i - 1] != '\r') return fail(p, 400, "bare LF in the message head");
      if (i >= start + 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r') return (int)(i + 1);
    } else if (c == '\r' && i + 1 < len && buf[i + 1] != '\n') {
      return fail(p, 400, "bare CR in the message head");
    }
  }
  /* restart one byte early next time so a CR at the end is rechecked */
  p->scan = i > start ? i - 1 : start;
  if (len >= p->max_head_bytes) return fail(p, 431, "message head too large");
  return 0;
}

/* Parses "HTTP/x.y" at s (8 bytes available). Returns 10/11, -1 for an
 * unsupported but well-formed version, -2 when malformed. */
static int parse_version(const char *s) {
  if (memcmp(s, "HTTP/", 5) != 0 || s[6] != '.') return -2;
  if (s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9') return -2;
  if (s[5] != '1') return -1;
  return s[7] == '0' ? 10 : 11; /* 1.x with x > 1 is treated as 1.1 */
}

/* Header field lines from pos up to the final empty line at end-2. */
static int parse_fields(sk__h1_parser_t *p, const char *buf, size_t pos, size_t end,
                        sk__h1_head_t *h) {
  h->fields = p->fields;
  h->nfields = 0;
  while (pos + 2 < end) {
    const char *line = buf + pos;
    const char *eol = memchr(line, '\r', end - pos);
    size_t ll = (size_t)(eol - line);
    if (ll == 0) break;
    if (is_ows(line[0])) return fail(p, 400, "obsolete line folding (obs-fold) in a header field");
    size_t c = 0;
    while (c < ll && sk__h1_is_tchar((unsigned char)line[c])) c++;
    if (c == ll) return fail(p, 400, "header field without a colon");
    if (line[c] != ':') {
      if (is_ows(line[c])) return fail(p, 400, "whitespace between header field name and colon");
      return fail(p, 400, "invalid character in header field name");
    }
    if (c == 0) return fail(p, 400, "empty header field name");
    size_t vs = c + 1, ve = ll;
    while (vs < ve && is_ows(line[vs])) vs++;
    while (ve > vs && is_ows(line[ve - 1])) ve--;
    if (!value_ok(line + vs, ve - vs)) return fail(p, 400, "invalid character in header field value");
    if (h->nfields >= p->max_fields) return fail(p, 431, "too many header fields");
    sk__h1_field_t *f = &p->fields[h->nfields++];
    f->name = line;
    f->name_len = c;
    f->value = line + vs;
    f->value_len = ve - vs;
    pos += ll + 2;
  }
  return 0;
}

/* Content-Length and Transfer-Encoding -> h->body. */
static int framing(sk__h1_parser_t *p, sk__h1_head_t *h, int is_req, int no_body) {
  const sk__h1_field_t *cl = NULL;
  int te_seen = 0, te_chunked = 0, te_chunked_last = 0, te_unknown = 0, te_n = 0;
  int connection_close = 0, connection_ka = 0, hosts = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    const sk__h1_field_t *f = &h->fields[i];
    if (ieq(f->name, f->name_len, "content-length")) {
      if (cl) return fail(p, 400, "duplicate Content-Length");
      cl = f;
    } else if (ieq(f->name, f->name_len, "transfer-encoding")) {
      size_t pos = 0, en;
      const char *e;
      te_seen = 1;
      while (list_next(f->value, f->value_len, &pos, &e, &en)) {
        te_n++;
        if (ieq(e, en, "chunked")) {
          if (te_chunked) return fail(p, 400, "chunked applied more than once");
          te_chunked = 1;
          te_chunked_last = 1;
        } else {
          te_unknown = 1;
          te_chunked_last = 0;
        }
      }
    } else if (ieq(f->name, f->name_len, "connection")) {
      if (sk__h1_list_has(f->value, f->value_len, "close")) connection_close = 1;
      if (sk__h1_list_has(f->value, f->value_len, "keep-alive")) connection_ka = 1;
    } else if (is_req && ieq(f->name, f->name_len, "host")) {
      hosts++;
    } else if (is_req && ieq(f->name, f->name_len, "expect")) {
      if (ieq(f->value, f->value_len, "100-continue")) h->expect_continue = h->version >= 11;
    }
  }
  if (is_req) {
    if (hosts > 1) return fail(p, 400, "more than one Host header");
    if (hosts == 0 && h->version >= 11) return fail(p, 400, "missing Host header");
  }
  h->keep_alive = h->version >= 11 ? !connection_close : (connection_ka && !connection_close);
  if (no_body) { /* responses to HEAD, 1xx, 204, 304 */
    h->body = SK__H1_BODY_NONE;
    return 0;
  }
  if (te_seen && cl) return fail(p, is_req ? 400 : 502, "both Content-Length and Transfer-Encoding");
  if (te_seen) {
    if (is_req && h->version < 11) return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (te_n == 0) return fail(p, is_req ? 400 : 502, "empty Transfer-Encoding");
    if (te_chunked && !te_chunked_last)
      return fail(p, is_req ? 400 : 502, "chunked is not the final transfer coding");
    if (is_req && te_unknown) return fail(p, 501, "unsupported transfer coding");
    if (te_chunked_last) {
      h->body = SK__H1_BODY_CHUNKED;
    } else { /* responses only: read until close */
      h->body = SK__H1_BODY_CLOSE;
      h->keep_alive = 0;
    }
    return 0;
  }
  if (cl) {
    uint64_t v = 0;
    if (cl->value_len == 0) return fail(p, is_req ? 400 : 502, "empty Content-Length");
    for (size_t i = 0; i < cl->value_len; i++) {
      unsigned char c = (unsigned char)cl->value[i];
      if (c < '0' || c > '9') return fail(p, is_req ? 400 : 502, "invalid Content-Length");
      if (v > (UINT64_MAX / 2 - 9) / 10) return fail(p, is_req ? 400 : 502, "Content-Length overflows");
      v = v * 10 + (uint64_t)(c - '0');
    }
    h->body = SK__H1_BODY_LENGTH;
    h->content_length = v;
    if (v == 0) h->body = SK__H1_BODY_NONE;
    return 0;
  }
  if (is_req) {
    h->body = SK__H1_BODY_NONE;
  } else {
    h->body = SK__H1_BODY_CLOSE;
    h->keep_alive = 0;
  }
  return 0;
}

int sk__h1_parse_request(sk__h1_parser_t *p, const char *buf, size_t len, sk__h1_head_t *h) {
  size_t start = 0;
  int n = 0;
  /* tolerate a few empty lines before the request line (RFC 9112 2.2) */
  while (start < len && (buf[start] == '\r' || buf[start] == '\n')) {
    if (buf[start] == '\n') return fail(p, 400, "bare LF in the message head");
    if (start + 1 >= len) return 0;
    if (buf[start + 1] != '\n') return fail(p, 400, "bare CR in the message head");
    start += 2;
    if (++n > SK__H1_MAX_LEADING_CRLF) return fail(p, 400, "too many empty lines before the request");
  }
  if (start >= len) return 0;
  int r = find_head_end(p, buf, len, start);
  if (r <= 0) return r;
  size_t end = (size_t)r;
  memset(h, 0, sizeof *h);
  h->head_len = end;

  /* request-line = method SP request-target SP HTTP-version CRLF */
  const char *line = buf + start;
  size_t ll = (size_t)((const char *)memchr(line, '\r', end - start) - line);
  size_t i = 0;
  while (i < ll && sk__h1_is_tchar((unsigned char)line[i])) i++;
  if (i == 0 || i == ll || line[i] != ' ') return fail(p, 400, "invalid method");
  h->method = line;
  h->method_len = i;
  size_t ts = ++i;
  while (i < ll && line[i] > 0x20 && line[i] < 0x7f) i++;
  if (i == ts || i == ll || line[i] != ' ') return fail(p, 400, "invalid request-target");
  h->target = line + ts;
  h->target_len = i - ts;
  i++;
  if (ll - i != 8) return fail(p, 400, "invalid HTTP version");
  int v = parse_version(line + i);
  if (v == -2) return fail(p, 400, "invalid HTTP version");
  if (v == -1) return fail(p, 505, "HTTP version not supported");
  h->version = v;
  if (h->target[0] == '*' && !(h->target_len == 1 && ieq(h->method, h->method_len, "OPTIONS")))
    return fail(p, 400, "invalid request-target");
  r = parse_fields(p, buf, start + ll + 2, end, h);
  if (r < 0) return r;
  r = framing(p, h, 1, 0);
  if (r < 0) return r;
  return (int)end;
}

int sk__h1_parse_response(sk__h1_parser_t *p, const char *buf, size_t len, int head_request,
                          sk__h1_head_t *h) {
  int r = find_head_end(p, buf, len, 0);
  if (r == SK_EHTTP) p->status = 502;
  if (r <= 0) return r;
  size_t end = (size_t)r;
  memset(h, 0, sizeof *h);
  h->head_len = end;
  /* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF */
  size_t ll = (size_t)((const char *)memchr(buf, '\r', end) - buf);
  if (ll < 12 || buf[8] != ' ') return fail(p, 502, "invalid status line");
  int v = parse_version(buf);
  if (v < 0) return fail(p, 502, "unsupported HTTP version in the status line");
  h->version = v;
  int st = 0;
  for (int k = 9; k < 12; k++) {
    if (buf[k] < '0' || buf[k] > '9') return fail(p, 502, "invalid status code");
    st = st * 10 + (buf[k] - '0');
  }
  if (st < 100) return fail(p, 502, "invalid status code");
  h->status = st;
  if (ll > 12) {
    if (buf[12] != ' ') return fail(p, 502, "invalid status line");
    for (size_t k = 13; k < ll; k++)
      if (!is_vchar_ws((unsigned char)buf[k])) return fail(p, 502, "invalid reason phrase");
    h->reason = buf + 13;
    h->reason_len = ll - 13;
  } else {
    h->reason = buf + ll;
  }
  r = parse_fields(p, buf, ll + 2, end, h);
  if (r < 0) {
    p->status = 502;
    return r;
  }
  r = framing(p, h, 0, head_request || st < 200 || st == 204 || st == 304);
  if (r < 0) {
    p->status = 502; /* the client's view: a bad gateway answer */
    return r;
  }
  return (int)end;
}

/* ---------------- chunked ---------------- */

enum {
  CH_SIZE_START = 0,
  CH_SIZE,
  CH_SIZE_BWS,
  CH_EXT,
  CH_SIZE_LF,
  CH_DATA,
  CH_DATA_CR,
  CH_DATA_LF,
  CH_TRAILER_START,
  CH_TRAILER_LINE,
  CH_TRAILER_LF,
  CH_FINAL_LF,
  CH_DONE,
  CH_ERROR,
};

void sk__h1_chunked_init(sk__h1_chunked_t *c) { memset(c, 0, sizeof *c); }

static int ch_fail(sk__h1_chunked_t *c, const char *msg) {
  c->state = CH_ERROR;
  c->error = msg;
  return SK_EHTTP;
}

static int hexval(unsigned char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

int sk__h1_chunked_decode(sk__h1_chunked_t *c, const uint8_t *in, size_t len, size_t *used,
                          const uint8_t **data, size_t *dlen) {
  size_t i = 0;
  *data = NULL;
  *dlen = 0;
  if (c->state == CH_ERROR) {
    *used = 0;
    return SK_EHTTP;
  }
  while (i < len && c->state != CH_DONE) {
    unsigned char ch = in[i];
    switch (c->state) {
    case CH_SIZE_START:
    case CH_SIZE: {
      int hv = hexval(ch);
      if (hv >= 0) {
        if (c->size > (UINT64_MAX >> 5)) return ch_fail(c, "chunk size overflows");
        c->size = c->size * 16 + (uint64_t)hv;
        c->state = CH_SIZE;
      } else if (c->state == CH_SIZE_START) {
        return ch_fail(c, "invalid chunk size");
      } else if (ch == '\r') {
        c->state = CH_SIZE_LF;
      } else if (ch == ';') {
        c->state = CH_EXT;
      } else if (ch == ' ' || ch == '\t') {
        c->state = CH_SIZE_BWS;
      } else {
        return ch_fail(c, "invalid chunk size");
      }
      break;
    }
    case CH_SIZE_BWS:
      if (ch == ';') c->state = CH_EXT;
      else if (ch != ' ' && ch != '\t') return ch_fail(c, "invalid chunk size line");
      break;
    case CH_EXT:
      if (ch == '\r') c->state = CH_SIZE_LF;
      else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) return ch_fail(c, "invalid chunk extension");
      break;
    case CH_SIZE_LF:
      if (ch != '\n') return ch_fail(c, "bare CR in chunk size line");
      c->line = 0;
      if (c->size == 0) {
        c->state = CH_TRAILER_START;
      } else {
        c->state = CH_DATA;
      }
      i++;
      continue;
    case CH_DATA: {
      size_t avail = len - i;
      size_t take = (uint64_t)avail < c->size ? avail : (size_t)c->size;
      *data = in + i;
      *dlen = take;
      c->size -= take;
      c->total += take;
      i += take;
      if (c->size == 0) c->state = CH_DATA_CR;
      *used = i;
      return 0;
    }
    case CH_DATA_CR:
      if (ch != '\r') return ch_fail(c, "missing CRLF after chunk data");
      c->state = CH_DATA_LF;
      break;
    case CH_DATA_LF:
      if (ch != '\n') return ch_fail(c, "missing CRLF after chunk data");
      c->state = CH_SIZE_START;
      c->size = 0;
      c->line = 0;
      i++;
      continue;
    case CH_TRAILER_START:
      if (ch == '\r') {
        c->state = CH_FINAL_LF;
      } else if (ch == ' ' || ch == '\t') {
        return ch_fail(c, "obsolete line folding in trailer");
      } else if (!sk__h1_is_tchar(ch)) {
        return ch_fail(c, "invalid trailer field");
      } else {
        c->state = CH_TRAILER_LINE;
      }
      break;
    case CH_TRAILER_LINE:
      if (ch == '\r') c->state = CH_TRAILER_LF;
      else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) return ch_fail(c, "invalid trailer field");
      break;
    case CH_TRAILER_LF:
      if (ch != '\n') return ch_fail(c, "bare CR in trailer");
      c->state = CH_TRAILER_START;
      break;
    case CH_FINAL_LF:
      if (ch != '\n') return ch_fail(c, "bare CR after trailer");
      c->state = CH_DONE;
      break;
    default:
      return ch_fail(c, "chunked decoder misuse");
    }
    /* every byte of a size line or the trailer section counts */
    if (c->state == CH_SIZE || c->state == CH_SIZE_BWS || c->state == CH_EXT ||
        c->state == CH_SIZE_LF) {
      if (++c->line > SK__H1_CHUNK_LINE_MAX) return ch_fail(c, "chunk size line too long");
    } else if (c->state >= CH_TRAILER_START && c->state <= CH_FINAL_LF) {
      if (++c->trailer > SK__H1_TRAILER_MAX) return ch_fail(c, "trailer section too large");
    }
    i++;
  }
  *used = i;
  return c->state == CH_DONE ? 1 : 0;
}

size_t sk__h1_chunk_head(char out[24], size_t n) {
  static const char hex[] = "0123456789abcdef";
  char tmp[20];
  size_t k = 0, o = 0;
  do {
    tmp[k++] = hex[n & 15];
    n >>= 4;
  } while (n && k < sizeof tmp);
  while (k) out[o++] = tmp[--k];
  out[o++] = '\r';
  out[o++] = '\n';
  out[o] = 0;
  return o;
}
