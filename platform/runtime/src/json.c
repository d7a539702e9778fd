/* json.c - path getters, compact dumps, bounded parsing and string
 * escaping on top of jansson. */
#include "skiff/json.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"
#include "skiff/err.h"

#define SK_JSON_DEFAULT_MAX_BYTES (16u << 20)
#define SK_JSON_DEFAULT_MAX_DEPTH 64
#define SK_JSON_SEG_MAX 256

json_t *sk_json_get(const json_t *root, const char *path) {
  json_t *cur = (json_t *)root;
  if (!cur || !path) return NULL;
  const char *p = path;
  while (*p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n >= SK_JSON_SEG_MAX) return NULL;
    char seg[SK_JSON_SEG_MAX];
    memcpy(seg, p, n);
    seg[n] = 0;
    if (json_is_object(cur)) {
      cur = json_object_get(cur, seg);
    } else if (json_is_array(cur)) {
      if (n == 0 || n > 9 || strspn(seg, "0123456789") != n) return NULL;
      cur = json_array_get(cur, (size_t)strtoul(seg, NULL, 10));
    } else {
      return NULL;
    }
    if (!cur) return NULL;
    if (!dot) break;
    p = dot + 1;
  }
  return cur;
}

const char *sk_json_get_str(const json_t *root, const char *path, const char *def) {
  json_t *v = sk_json_get(root, path);
  return json_is_string(v) ? json_string_value(v) : def;
}

int64_t sk_json_get_int(const json_t *root, const char *path, int64_t def) {
  json_t *v = sk_json_get(root, path);
  if (json_is_integer(v)) return (int64_t)json_integer_value(v);
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18) return (int64_t)d;
  }
  return def;
}

double sk_json_get_real(const json_t *root, const char *path, double def) {
  json_t *v = sk_json_get(root, path);
  return json_is_number(v) ? json_number_value(v) : def;
}

int sk_json_get_bool(const json_t *root, const char *path, int def) {
  json_t *v = sk_json_get(root, path);
  return json_is_boolean(v) ? json_is_true(v) : def;
}

static int dump_cb(const char *buf, size_t size, void *data) {
  sk_buf_append((sk_buf_t *)data, buf, size);
  return 0;
}

int sk_json_dump_buf(const json_t *v, sk_buf_t *b) {
  if (!v || !b) return SK_EINVAL;
  if (json_dump_callback(v, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER) != 0)
    return SK_EINVAL;
  return 0;
}

static int depth_rec(const json_t *v, int limit) {
  if (limit < 0) return 1; /* already past any bound the caller cares about */
  int best = 0;
  if (json_is_object(v)) {
    const char *k;
    json_t *c;
    json_object_foreach((json_t *)v, k, c) {
      int d = depth_rec(c, limit - 1);
      if (d > best) best = d;
    }
    return best + 1;
  }
  if (json_is_array(v)) {
    size_t i;
    json_t *c;
    json_array_foreach(v, i, c) {
      int d = depth_rec(c, limit - 1);
      if (d > best) best = d;
    }
    return best + 1;
  }
  return 0;
}

int sk_json_depth(const json_t *v) { return v ? depth_rec(v, INT_MAX / 2) : 0; }

int sk_json_parse(const char *s, size_t len, size_t max_bytes, int max_depth, json_t **out, char *err,
                  size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  if (!max_bytes) max_bytes = SK_JSON_DEFAULT_MAX_BYTES;
  if (max_depth <= 0) max_depth = SK_JSON_DEFAULT_MAX_DEPTH;
  if (len > max_bytes) {
    if (err) snprintf(err, errlen, "1:1: document of %zu bytes exceeds the limit of %zu", len, max_bytes);
    return SK_ELIMIT;
  }
  /* The fast reader takes what it is sure of; everything else (errors
   * included) goes the jansson way below. */
  if (sk__json_parse_fast(s, len, max_depth, out) == 0) return 0;
  /* jansson bounds depth itself (2048); reject deeper-than-asked before
   * building a tree by scanning brackets outside strings. */
  int depth = 0, in_str = 0, esc = 0, line = 1, col = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    col++;
    if (c == '\n') {
      line++;
      col = 0;
    }
    if (in_str) {
      if (esc)
        esc = 0;
      else if (c == '\\')
        esc = 1;
      else if (c == '"')
        in_str = 0;
      continue;
    }
    if (c == '"') {
      in_str = 1;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        if (err) snprintf(err, errlen, "%d:%d: nesting deeper than %d", line, col, max_depth);
        return SK_ELIMIT;
      }
    } else if (c == '}' || c == ']') {
      depth--;
    }
  }
  json_error_t je;
  json_t *v = json_loadb(s, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
  if (!v) {
    if (err) snprintf(err, errlen, "%d:%d: %s", je.line > 0 ? je.line : 1, je.column > 0 ? je.column : 1, je.text);
    return SK_EPARSE;
  }
  *out = v;
  return 0;
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t need;
  unsigned cp;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    need = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    need = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < need) return 0;
  for (size_t i = 1; i < need; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((need == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return need;
}

void sk_json_escape(sk_buf_t *b, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, run = 0;
  sk_buf_reserve(b, len + 2);
  while (i < len) {
    unsigned char c = p[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
      run++;
      i++;
      continue;
    }
    if (run) {
      sk_buf_append(b, p + i - run, run);
      run = 0;
    }
    if (c >= 0x80) {
      size_t n = utf8_len(p + i, len - i);
      if (n) {
        sk_buf_append(b, p + i, n);
        i += n;
      } else {
        sk_buf_puts(b, "\xef\xbf\xbd");
        i++;
      }
      continue;
    }
    switch (c) {
    case '"': sk_buf_puts(b, "\\\""); break;
    case '\\': sk_buf_puts(b, "\\\\"); break;
    case '\n': sk_buf_puts(b, "\\n"); break;
    case '\r': sk_buf_puts(b, "\\r"); break;
    case '\t': sk_buf_puts(b, "\\t"); break;
    case '\b': sk_buf_puts(b, "\\b"); break;
    case '\f': sk_buf_puts(b, "\\f"); break;
    default: {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      sk_buf_append(b, u, 6);
    }
    }
    i++;
  }
  if (run) sk_buf_append(b, p + len - run, run);
}
