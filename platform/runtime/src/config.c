/* config.c - YAML into typed structs through schema tables, collecting
 * every error as file:line:col. */
#include "skiff/config.h"

#include <jansson.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "skiff/err.h"
#include "yaml_int.h"

#define SK_CFG_DEFAULT_MAX_BYTES (4u << 20)
#define SK_CFG_DEFAULT_MAX_DEPTH 32
#define SK_CFG_DEFAULT_MAX_NODES 100000
#define SK_CFG_DEFAULT_MAX_ERRORS 100
#define SK_CFG_PATH_MAX 512
#define SK_CFG_MSG_MAX 512

/* ---- error list ---- */

void sk_config_errors_init(sk_config_errors_t *e) { memset(e, 0, sizeof(*e)); }

void sk_config_errors_done(sk_config_errors_t *e) {
  if (!e) return;
  for (size_t i = 0; i < e->n; i++) {
    free(e->v[i].file);
    free(e->v[i].msg);
  }
  free(e->v);
  memset(e, 0, sizeof(*e));
}

static void errors_addv(sk_config_errors_t *e, const char *file, int line, int col, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));
static void errors_addv(sk_config_errors_t *e, const char *file, int line, int col, const char *fmt, va_list ap) {
  if (e->n == e->cap) {
    e->cap = e->cap ? e->cap * 2 : 8;
    e->v = sk_xrealloc(e->v, e->cap * sizeof(*e->v));
  }
  char msg[SK_CFG_MSG_MAX];
  vsnprintf(msg, sizeof msg, fmt, ap);
  sk_config_error_t *x = &e->v[e->n++];
  x->file = sk_xstrdup(file ? file : "<config>");
  x->line = line;
  x->col = col;
  x->msg = sk_xstrdup(msg);
}

void sk_config_errors_add(sk_config_errors_t *e, const char *file, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  errors_addv(e, file, line, col, fmt, ap);
  va_end(ap);
}

void sk_config_errors_format(const sk_config_errors_t *e, size_t i, char *buf, size_t buflen) {
  if (!buflen) return;
  if (i >= e->n) {
    buf[0] = 0;
    return;
  }
  const sk_config_error_t *x = &e->v[i];
  if (x->line > 0)
    snprintf(buf, buflen, "%s:%d:%d: %s", x->file, x->line, x->col, x->msg);
  else
    snprintf(buf, buflen, "%s: %s", x->file, x->msg);
}

void sk_config_errors_print(const sk_config_errors_t *e, FILE *out) {
  char line[SK_CFG_MSG_MAX + SK_CFG_PATH_MAX];
  for (size_t i = 0; i < e->n; i++) {
    sk_config_errors_format(e, i, line, sizeof line);
    fprintf(out, "%s\n", line);
  }
}

/* ---- value parsers ---- */

static void msgf(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void msgf(char *msg, size_t msglen, const char *fmt, ...) {
  if (!msg || !msglen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
}

int sk_config_parse_bool(const char *s, bool *b) {
  static const char *const t[] = {"true", "yes", "on", "1"}, *const f[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, t[i]) == 0) {
      *b = true;
      return 0;
    }
    if (strcasecmp(s, f[i]) == 0) {
      *b = false;
      return 0;
    }
  }
  return SK_EINVAL;
}

/* digits [. digits] -> value as a double; returns chars consumed or 0 */
static size_t parse_decimal(const char *s, double *v) {
  size_t i = 0;
  double r = 0;
  while (isdigit((unsigned char)s[i])) {
    r = r * 10 + (s[i] - '0');
    i++;
  }
  if (i == 0) return 0;
  if (s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
    double scale = 0.1;
    i++;
    while (isdigit((unsigned char)s[i])) {
      r += (s[i] - '0') * scale;
      scale /= 10;
      i++;
    }
  }
  *v = r;
  return i;
}

#define SK_CFG_DURATION_MAX_MS (100.0 * 365 * 24 * 3600 * 1000) /* a century */

int sk_config_parse_duration(const char *s, uint64_t *ms, char *msg, size_t msglen) {
  static const struct {
    const char *u;
    double ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  const char *p = s;
  double total = 0;
  int parts = 0;
  while (*p == ' ') p++;
  if (strcmp(p, "0") == 0) {
    *ms = 0;
    return 0;
  }
  while (*p) {
    double v;
    size_t n = parse_decimal(p, &v);
    if (!n) goto bad;
    p += n;
    size_t ul = 0;
    while (isalpha((unsigned char)p[ul])) ul++;
    if (!ul) {
      msgf(msg, msglen, "duration '%s' needs a unit (ms, s, m, h, d)", s);
      return SK_EINVAL;
    }
    size_t k;
    for (k = 0; k < sizeof units / sizeof units[0]; k++)
      if (strlen(units[k].u) == ul && strncmp(p, units[k].u, ul) == 0) break;
    if (k == sizeof units / sizeof units[0]) goto bad;
    total += v * units[k].ms;
    p += ul;
    parts++;
    if (total > SK_CFG_DURATION_MAX_MS) {
      msgf(msg, msglen, "duration '%s' is too long", s);
      return SK_ERANGE;
    }
  }
  if (!parts) goto bad;
  *ms = sk_config_round(total);
  return 0;
bad:
  msgf(msg, msglen, "invalid duration '%s' (expected e.g. 250ms, 10s, 5m, 1h, 1h30m)", s);
  return SK_EINVAL;
}

int sk_config_parse_size(const char *s, uint64_t *bytes, char *msg, size_t msglen) {
  static const struct {
    const char *u;
    uint64_t mul;
  } units[] = {{"", 1},
               {"b", 1},
               {"k", 1ull << 10},
               {"kib", 1ull << 10},
               {"kb", 1000ull},
               {"m", 1ull << 20},
               {"mib", 1ull << 20},
               {"mb", 1000000ull},
               {"g", 1ull << 30},
               {"gib", 1ull << 30},
               {"gb", 1000000000ull},
               {"t", 1ull << 40},
               {"tib", 1ull << 40},
               {"tb", 1000000000000ull}};
  const char *p = s;
  while (*p == ' ') p++;
  double v;
  size_t n = parse_decimal(p, &v);
  if (!n) goto bad;
  p += n;
  while (*p == ' ') p++;
  for (size_t k = 0; k < sizeof units / sizeof units[0]; k++) {
    if (strcasecmp(p, units[k].u) == 0) {
      double r = v * (double)units[k].mul;
      if (r >= 1.8e19) {
        msgf(msg, msglen, "size '%s' is too large", s);
        return SK_ERANGE;
      }
      if (r != floor(r)) {
        msgf(msg, msglen, "size '%s' is not a whole number of bytes", s);
        return SK_EINVAL;
      }
      *bytes = (uint64_t)r;
      return 0;
    }
  }
bad:
  msgf(msg, msglen, "invalid size '%s' (expected e.g. 512, 16KiB, 1MiB, 2GiB)", s);
  return SK_EINVAL;
}

static int valid_host(const char *h, size_t n, int v6) {
  if (n == 0 || n >= SK_CFG_HOST_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)h[i];
    if (v6) {
      if (!isxdigit(c) && c != ':' && c != '.' && c != '%' && !isalnum(c)) return 0;
    } else if (!isalnum(c) && c != '.' && c != '-' && c != '_') {
      return 0;
    }
  }
  return 1;
}

int sk_config_parse_addr(const char *s, sk_cfg_addr_t *a, char *msg, size_t msglen) {
  const char *host, *port;
  size_t hl;
  int v6 = 0;
  if (s[0] == '[') {
    const char *e = strchr(s, ']');
    if (!e || e[1] != ':') goto bad;
    host = s + 1;
    hl = (size_t)(e - host);
    port = e + 2;
    v6 = 1;
  } else {
    const char *c = strrchr(s, ':');
    if (!c) {
      msgf(msg, msglen, "address '%s' needs a port (host:port)", s);
      return SK_EINVAL;
    }
    if (memchr(s, ':', (size_t)(c - s))) {
      msgf(msg, msglen, "address '%s': put IPv6 addresses in brackets ([::1]:port)", s);
      return SK_EINVAL;
    }
    host = s;
    hl = (size_t)(c - s);
    port = c + 1;
  }
  if (!*port || strlen(port) > 5 || strspn(port, "0123456789") != strlen(port)) goto bad;
  long p = strtol(port, NULL, 10);
  if (p > 65535) {
    msgf(msg, msglen, "address '%s': port %ld is out of range [0, 65535]", s, p);
    return SK_ERANGE;
  }
  if (hl == 0 && !v6) {
    snprintf(a->host, sizeof a->host, "0.0.0.0");
  } else {
    if (!valid_host(host, hl, v6)) goto bad;
    memcpy(a->host, host, hl);
    a->host[hl] = 0;
  }
  a->port = (int)p;
  return 0;
bad:
  msgf(msg, msglen, "invalid address '%s' (expected host:port, [v6]:port or :port)", s);
  return SK_EINVAL;
}

void sk_config_format_addr(const sk_cfg_addr_t *a, char *buf, size_t buflen) {
  if (strchr(a->host, ':'))
    snprintf(buf, buflen, "[%s]:%d", a->host, a->port);
  else
    snprintf(buf, buflen, "%s:%d", a->host, a->port);
}

static const char *type_name(sk_cfg_type_t t) {
  switch (t) {
  case SK_CFG_BOOL: return "bool";
  case SK_CFG_INT: return "int";
  case SK_CFG_UINT64: return "uint64";
  case SK_CFG_DOUBLE: return "float";
  case SK_CFG_STRING: return "string";
  case SK_CFG_DURATION: return "duration";
  case SK_CFG_SIZE: return "size";
  case SK_CFG_ENUM: return "enum";
  case SK_CFG_STRLIST: return "[string]";
  case SK_CFG_ADDR: return "host:port";
  case SK_CFG_SECTION: return "section";
  case SK_CFG_LIST: return "[section]";
  case SK_CFG_JSON: return "any";
  default: return "?";
  }
}

static size_t list_max(const sk_config_entry_t *e) { return e->max > 0 ? (size_t)e->max : SK_CFG_LIST_MAX; }

static void strlist_free(sk_cfg_strlist_t *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

/* Converts the text of one scalar into the field. msg gets the reason on
 * failure (without the key). */
static int convert_scalar(const sk_config_entry_t *e, void *field, const char *s, char *msg, size_t msglen) {
  switch (e->type) {
  case SK_CFG_BOOL:
    if (sk_config_parse_bool(s, (bool *)field) < 0) {
      msgf(msg, msglen, "expected true or false, got '%s'", s);
      return SK_EINVAL;
    }
    return 0;
  case SK_CFG_INT: {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || isspace((unsigned char)*s)) {
      msgf(msg, msglen, "expected an integer, got '%s'", s);
      return SK_EINVAL;
    }
    long long lo = INT_MIN, hi = INT_MAX;
    if (e->min || e->max) {
      lo = e->min;
      hi = e->max;
    }
    if (errno == ERANGE || v < lo || v > hi) {
      msgf(msg, msglen, "%s is out of range [%lld, %lld]", s, lo, hi);
      return SK_ERANGE;
    }
    *(int *)field = (int)v;
    return 0;
  }
  case SK_CFG_UINT64: {
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s)) {
      msgf(msg, msglen, "expected a non-negative integer, got '%s'", s);
      return SK_EINVAL;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) {
      msgf(msg, msglen, "expected a non-negative integer, got '%s'", s);
      return SK_EINVAL;
    }
    if (errno == ERANGE || (e->max > 0 && v > (unsigned long long)e->max) || (e->min > 0 && v < (unsigned long long)e->min)) {
      msgf(msg, msglen, "%s is out of range [%lld, %lld]", s, (long long)(e->min > 0 ? e->min : 0),
           (long long)(e->max > 0 ? e->max : INT64_MAX));
      return SK_ERANGE;
    }
    *(uint64_t *)field = v;
    return 0;
  }
  case SK_CFG_DOUBLE: {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || isspace((unsigned char)*s) || !isfinite(v)) {
      msgf(msg, msglen, "expected a number, got '%s'", s);
      return SK_EINVAL;
    }
    if ((e->min || e->max) && (v < (double)e->min || v > (double)e->max)) {
      msgf(msg, msglen, "%s is out of range [%lld, %lld]", s, (long long)e->min, (long long)e->max);
      return SK_ERANGE;
    }
    *(double *)field = v;
    return 0;
  }
  case SK_CFG_STRING: {
    size_t n = strlen(s);
    if (e->max > 0 && n > (size_t)e->max) {
      msgf(msg, msglen, "string of %zu bytes is longer than %lld", n, (long long)e->max);
      return SK_ERANGE;
    }
    if (e->min > 0 && n < (size_t)e->min) {
      msgf(msg, msglen, "string of %zu bytes is shorter than %lld", n, (long long)e->min);
      return SK_ERANGE;
    }
    char **f = field;
    free(*f);
    *f = sk_xstrdup(s);
    return 0;
  }
  case SK_CFG_DURATION:
  case SK_CFG_SIZE: {
    uint64_t v;
    int rc = e->type == SK_CFG_DURATION ? sk_config_parse_duration(s, &v, msg, msglen)
                                        : sk_config_parse_size(s, &v, msg, msglen);
    if (rc < 0) return rc;
    if ((e->max > 0 && v > (uint64_t)e->max) || (e->min > 0 && v < (uint64_t)e->min)) {
      if (e->type == SK_CFG_DURATION)
        msgf(msg, msglen, "duration '%s' is out of range [%lldms, %lldms]", s, (long long)(e->min > 0 ? e->min : 0),
             (long long)e->max);
      else
        msgf(msg, msglen, "size '%s' is out of range [%lld, %lld] bytes", s, (long long)(e->min > 0 ? e->min : 0),
             (long long)e->max);
      return SK_ERANGE;
    }
    *(uint64_t *)field = v;
    return 0;
  }
  case SK_CFG_ENUM: {
    for (int i = 0; e->names && e->names[i]; i++) {
      if (strcmp(s, e->names[i]) == 0) {
        *(int *)field = i;
        return 0;
      }
    }
    char choices[256] = "";
    size_t off = 0;
    for (int i = 0; e->names && e->names[i] && off < sizeof choices; i++)
      off += (size_t)snprintf(choices + off, sizeof choices - off, "%s%s", i ? ", " : "", e->names[i]);
    msgf(msg, msglen, "unknown value '%s' (expected one of: %s)", s, choices);
    return SK_EINVAL;
  }
  case SK_CFG_ADDR: {
    sk_cfg_addr_t a;
    int rc = sk_config_parse_addr(s, &a, msg, msglen);
    if (rc < 0) return rc;
    *(sk_cfg_addr_t *)field = a;
    return 0;
  }
  case SK_CFG_STRLIST: { /* a default: comma-separated */
    sk_cfg_strlist_t *l = field;
    strlist_free(l);
    const char *p = s;
    while (*p) {
      const char *c = strchr(p, ',');
      size_t n = c ? (size_t)(c - p) : strlen(p);
      l->v = sk_xrealloc(l->v, (l->n + 1) * sizeof(char *));
      l->v[l->n++] = sk_xstrndup(p, n);
      if (!c) break;
      p = c + 1;
    }
    return 0;
  }
  default: msgf(msg, msglen, "a %s has no scalar form", type_name(e->type)); return SK_EINVAL;
  }
}

/* ---- key paths ("a.b[2].c") ---- */

/* prefix.key into out. SK_ENAMETOOLONG when it does not fit in n bytes:
 * out then holds the path cut short, good enough for a message but not as
 * a key. */
static int join(char *out, size_t n, const char *prefix, const char *key) {
  int w = snprintf(out, n, "%s%s%s", prefix, *prefix ? "." : "", key);
  return w >= 0 && (size_t)w < n ? 0 : SK_ENAMETOOLONG;
}

/* path[i] into out; SK_ENAMETOOLONG as join. */
static int join_index(char *out, size_t n, const char *path, size_t i) {
  int w = snprintf(out, n, "%s[%zu]", path, i);
  return w >= 0 && (size_t)w < n ? 0 : SK_ENAMETOOLONG;
}

/* ---- defaults and free ---- */

static int defaults_rec(const sk_config_schema_t *s, void *obj, const char *prefix, sk_config_errors_t *errs) {
  int rc = 0;
  for (const sk_config_entry_t *e = s->entries; e && e->key; e++) {
    void *f = (char *)obj + e->offset;
    if (e->type == SK_CFG_SECTION) {
      char p[SK_CFG_PATH_MAX];
      (void)join(p, sizeof p, prefix, e->key); /* the schema's own keys; only messages use p */
      if (e->sub && defaults_rec(e->sub, f, p, errs) < 0) rc = SK_ECONFIG;
      continue;
    }
    if (!e->def || e->type == SK_CFG_LIST || e->type == SK_CFG_JSON) continue;
    char msg[SK_CFG_MSG_MAX];
    if (convert_scalar(e, f, e->def, msg, sizeof msg) < 0) {
      if (errs)
        sk_config_errors_add(errs, s->name ? s->name : "<schema>", 0, 0, "%s%s%s: invalid default: %s", prefix,
                             *prefix ? "." : "", e->key, msg);
      rc = SK_ECONFIG;
    }
  }
  return rc;
}

int sk_config_defaults(const sk_config_schema_t *s, void *obj, sk_config_errors_t *errs) {
  memset(obj, 0, s->size);
  return defaults_rec(s, obj, "", errs);
}

static void free_rec(const sk_config_schema_t *s, void *obj) {
  for (const sk_config_entry_t *e = s->entries; e && e->key; e++) {
    void *f = (char *)obj + e->offset;
    switch (e->type) {
    case SK_CFG_STRING: {
      char **p = f;
      free(*p);
      *p = NULL;
      break;
    }
    case SK_CFG_STRLIST: strlist_free(f); break;
    case SK_CFG_JSON: {
      sk_cfg_json_t *j = f;
      json_decref(j->value);
      json_decref(j->where);
      j->value = j->where = NULL;
      break;
    }
    case SK_CFG_SECTION:
      if (e->sub) free_rec(e->sub, f);
      break;
    case SK_CFG_LIST: {
      sk_cfg_list_t *l = f;
      for (size_t i = 0; e->sub && i < l->n; i++) free_rec(e->sub, (char *)l->v + i * e->sub->size);
      free(l->v);
      l->v = NULL;
      l->n = 0;
      break;
    }
    default: break;
    }
  }
}

void sk_config_free(const sk_config_schema_t *s, void *obj) {
  if (!s || !obj) return;
  free_rec(s, obj);
  memset(obj, 0, s->size);
}

/* ---- loading ---- */

typedef struct ctx {
  const char *file;
  sk_config_errors_t *errs;
  size_t nerr, max_errors;
  size_t max_bytes;
  const char *(*getenv)(const char *name, void *ud);
  void *getenv_ud;
} ctx_t;

static void cerr(ctx_t *c, const sk__ynode_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cerr(ctx_t *c, const sk__ynode_t *at, const char *fmt, ...) {
  c->nerr++;
  if (c->nerr > c->max_errors) return;
  va_list ap;
  va_start(ap, fmt);
  if (c->nerr == c->max_errors) {
    va_end(ap);
    sk_config_errors_add(c->errs, c->file, at ? at->line : 0, at ? at->col : 0,
                         "too many errors (%zu); stopping here", c->max_errors);
    return;
  }
  errors_addv(c->errs, c->file, at ? at->line : 0, at ? at->col : 0, fmt, ap);
  va_end(ap);
}

static const char *default_getenv(const char *name, void *ud) { return getenv(name); }

static int valid_var(const char *s, size_t n) {
  if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (size_t i = 1; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '_')) return 0;
  return 1;
}

/* ${NAME} / ${NAME:-default} / $${ (a literal "${"). Returns a malloc'ed
 * string, or NULL after reporting an error at the scalar. */
static char *subst(ctx_t *c, const sk__ynode_t *n, const char *path) {
  if (strlen(n->str) != n->len) {
    cerr(c, n, "%s: value contains a NUL byte", path);
    return NULL;
  }
  if (!strchr(n->str, '$')) return sk_xstrdup(n->str);
  sk_buf_t b;
  sk_buf_init(&b);
  const char *p = n->str;
  while (*p) {
    if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
      sk_buf_puts(&b, "${");
      p += 3;
      continue;
    }
    if (p[0] != '$' || p[1] != '{') {
      sk_buf_append(&b, p, 1);
      p++;
      continue;
    }
    const char *start = p + 2, *close = strchr(start, '}');
    if (!close) {
      cerr(c, n, "%s: unterminated '${' in value", path);
      goto fail;
    }
    const char *dflt = NULL;
    size_t nl = (size_t)(close - start);
    const char *sep = memchr(start, ':', nl);
    if (sep) {
      if (sep[1] != '-') {
        cerr(c, n, "%s: invalid substitution '${%.*s}' (use ${NAME} or ${NAME:-default})", path, (int)nl, start);
        goto fail;
      }
      dflt = sep + 2;
      nl = (size_t)(sep - start);
    }
    if (!valid_var(start, nl) || nl > 255) {
      cerr(c, n, "%s: invalid variable name '%.*s'", path, (int)(nl > 64 ? 64 : nl), start);
      goto fail;
    }
    char name[256];
    memcpy(name, start, nl);
    name[nl] = 0;
    const char *v = c->getenv(name, c->getenv_ud);
    if (v && !*v && dflt) v = NULL; /* ":-" also replaces an empty value */
    if (v)
      sk_buf_puts(&b, v);
    else if (dflt)
      sk_buf_append(&b, dflt, (size_t)(close - dflt));
    else {
      cerr(c, n, "%s: environment variable '%s' is not set (use ${%s:-default} for a fallback)", path, name, name);
      goto fail;
    }
    if (b.len > c->max_bytes) {
      cerr(c, n, "%s: value too long after substitution", path);
      goto fail;
    }
    p = close + 1;
  }
  return sk_buf_cstr(&b);
fail:
  sk_buf_done(&b);
  return NULL;
}

typedef struct bind {
  const sk_config_schema_t *schema;
  void *obj;
} bind_t;

static void walk_map(ctx_t *c, const bind_t *binds, size_t nb, const sk__ynode_t *node, const char *prefix,
                     const sk__ynode_t *absent_at);

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 63 || lb > 63) return 99;
  size_t d[64][64];
  for (size_t i = 0; i <= la; i++) d[i][0] = i;
  for (size_t j = 0; j <= lb; j++) d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t x = d[i - 1][j] + 1, y = d[i][j - 1] + 1, z = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      d[i][j] = x < y ? (x < z ? x : z) : (y < z ? y : z);
    }
  return d[la][lb];
}


/* Records [line, col] of n and every node below it under its path. */
static void json_where_rec(const sk__ynode_t *n, const char *path, json_t *where, int depth) {
  json_t *pos = json_array();
  json_array_append_new(pos, json_integer(n->line));
  json_array_append_new(pos, json_integer(n->col));
  json_object_set_new(where, path, pos);
  if (depth > 64) return;
  char p[SK_CFG_PATH_MAX];
  if (n->kind == SK__Y_SEQ) {
    size_t i = 0;
    /* a path that does not fit is not recorded: lookups fall back to the
     * nearest recorded parent (sk_cfg_json_where) */
    for (const sk__ynode_t *k = n->first; k; k = k->next, i++) {
      if (join_index(p, sizeof p, path, i) < 0) break;
      json_where_rec(k, p, where, depth + 1);
    }
  } else if (n->kind == SK__Y_MAP) {
    for (const sk__ynode_t *k = n->first; k && k->next; k = k->next->next) {
      if (k->kind != SK__Y_SCALAR || join(p, sizeof p, path, k->str) < 0) continue;
      json_where_rec(k->next, p, where, depth + 1);
    }
  }
}

int sk_cfg_json_where(const sk_cfg_json_t *j, const char *path, int *line, int *col) {
  *line = *col = 0;
  if (!j || !j->where || !path) return SK_ENOTFOUND;
  char p[SK_CFG_PATH_MAX];
  size_t pl = strlen(path);
  if (pl >= sizeof p) return SK_ENOTFOUND; /* longer than any recorded path */
  memcpy(p, path, pl + 1);
  for (;;) {
    json_t *pos = json_object_get(j->where, p);
    if (pos) {
      *line = (int)json_integer_value(json_array_get(pos, 0));
      *col = (int)json_integer_value(json_array_get(pos, 1));
      return 0;
    }
    char *cut = strrchr(p, '.');
    char *br = strrchr(p, '[');
    if (br && (!cut || br > cut)) cut = br;
    if (!cut) return SK_ENOTFOUND;
    *cut = 0;
  }
}

static void set_value(ctx_t *c, const sk_config_entry_t *e, void *f, const sk__ynode_t *v, const char *path) {
  char msg[SK_CFG_MSG_MAX];
  if (sk__yaml_is_null(v)) return; /* "key:" with nothing keeps the default */
  switch (e->type) {
  case SK_CFG_JSON: {
    int line = 0, col = 0;
    json_t *jv = sk__yaml_to_json(v, msg, sizeof msg, &line, &col);
    if (!jv) {
      c->nerr++;
      sk_config_errors_add(c->errs, c->file, line, col, "%s: %s", path, msg);
      return;
    }
    sk_cfg_json_t *j = f;
    json_decref(j->value);
    json_decref(j->where);
    j->value = jv;
    j->where = json_object();
    json_where_rec(v, path, j->where, 0);
    break;
  }
  case SK_CFG_SECTION: {
    bind_t b = {e->sub, f};
    walk_map(c, &b, 1, v, path, NULL);
    return;
  }
  case SK_CFG_LIST: {
    if (v->kind != SK__Y_SEQ) {
      cerr(c, v, "%s: expected a sequence of mappings, got %s", path, sk__yaml_kind_name(v));
      return;
    }
    if (v->n > list_max(e)) {
      cerr(c, v, "%s: %zu elements, more than the limit of %zu", path, v->n, list_max(e));
      return;
    }
    sk_cfg_list_t nl = {sk_xcalloc(v->n ? v->n : 1, e->sub->size), v->n};
    size_t i = 0;
    for (const sk__ynode_t *k = v->first; k; k = k->next, i++) {
      void *el = (char *)nl.v + i * e->sub->size;
      sk_config_defaults(e->sub, el, NULL);
      char p[SK_CFG_PATH_MAX];
      if (join_index(p, sizeof p, path, i) < 0) {
        cerr(c, k, "%s: element %zu: the key path is longer than %d bytes", path, i, SK_CFG_PATH_MAX - 1);
        continue;
      }
      if (k->kind != SK__Y_MAP) {
        cerr(c, k, "%s: expected a mapping, got %s", p, sk__yaml_kind_name(k));
        continue;
      }
      bind_t b = {e->sub, el};
      walk_map(c, &b, 1, k, p, NULL);
    }
    sk_cfg_list_t *old = f;
    for (size_t j = 0; j < old->n; j++) free_rec(e->sub, (char *)old->v + j * e->sub->size);
    free(old->v);
    *old = nl;
    break;
  }
  case SK_CFG_STRLIST: {
    sk_cfg_strlist_t nl = {0};
    if (v->kind == SK__Y_MAP) {
      cerr(c, v, "%s: expected a list of strings, got a mapping", path);
      return;
    }
    if (v->kind == SK__Y_SCALAR) {
      char *s = subst(c, v, path);
      if (!s) return;
      nl.v = sk_xmalloc(sizeof(char *));
      nl.v[nl.n++] = s;
    } else {
      if (v->n > list_max(e)) {
        cerr(c, v, "%s: %zu elements, more than the limit of %zu", path, v->n, list_max(e));
        return;
      }
      nl.v = sk_xcalloc(v->n ? v->n : 1, sizeof(char *));
      int bad = 0;
      for (const sk__ynode_t *k = v->first; k; k = k->next) {
        if (k->kind != SK__Y_SCALAR) {
          cerr(c, k, "%s: list elements must be strings, got %s", path, sk__yaml_kind_name(k));
          bad = 1;
          continue;
        }
        char *s = subst(c, k, path);
        if (!s) {
          bad = 1;
          continue;
        }
        nl.v[nl.n++] = s;
      }
      if (bad) {
        strlist_free(&nl);
        return;
      }
    }
    strlist_free(f);
    *(sk_cfg_strlist_t *)f = nl;
    break;
  }
  default: {
    if (v->kind != SK__Y_SCALAR) {
      cerr(c, v, "%s: expected a %s, got %s", path, type_name(e->type), sk__yaml_kind_name(v));
      return;
    }
    char *s = subst(c, v, path);
    if (!s) return;
    int rc = convert_scalar(e, f, s, msg, sizeof msg);
    free(s);
    if (rc < 0) {
      cerr(c, v, "%s: %s", path, msg);
      return;
    }
  }
  }
  if (e->validate && e->validate(f, msg, sizeof msg) < 0) cerr(c, v, "%s: %s", path, msg);
}

static void walk_map(ctx_t *c, const bind_t *binds, size_t nb, const sk__ynode_t *node, const char *prefix,
                     const sk__ynode_t *absent_at) {
  const sk__ynode_t *pos = node ? node : absent_at;
  if (node && sk__yaml_is_null(node)) node = NULL;
  if (node && node->kind != SK__Y_MAP) {
    cerr(c, node, "%s%sexpected a mapping, got %s", prefix, *prefix ? ": " : "", sk__yaml_kind_name(node));
    return;
  }
  /* first key node of each entry, to find duplicates and missing keys */
  size_t total = 0;
  for (size_t i = 0; i < nb; i++)
    for (const sk_config_entry_t *e = binds[i].schema->entries; e && e->key; e++) total++;
  const sk__ynode_t **seen = sk_xcalloc(total ? total : 1, sizeof(*seen));
  char path[SK_CFG_PATH_MAX];
  for (const sk__ynode_t *k = node ? node->first : NULL; k && k->next; k = k->next->next) {
    const sk__ynode_t *v = k->next;
    if (k->kind != SK__Y_SCALAR || strlen(k->str) != k->len) {
      cerr(c, k, "%s%skeys must be plain strings, got %s", prefix, *prefix ? ": " : "", sk__yaml_kind_name(k));
      continue;
    }
    if (join(path, sizeof path, prefix, k->str) < 0) {
      cerr(c, k, "key path '%.60s...' is longer than %d bytes", path, SK_CFG_PATH_MAX - 1);
      continue;
    }
    const sk_config_entry_t *hit = NULL;
    size_t idx = 0, bi = 0;
    for (size_t i = 0; i < nb && !hit; i++) {
      for (const sk_config_entry_t *e = binds[i].schema->entries; e && e->key; e++, idx++) {
        if (strcmp(e->key, k->str) == 0) {
          hit = e;
          bi = i;
          break;
        }
      }
    }
    if (!hit) {
      const char *best = NULL;
      size_t bd = 3;
      for (size_t i = 0; i < nb; i++)
        for (const sk_config_entry_t *e = binds[i].schema->entries; e && e->key; e++) {
          size_t d = edit_distance(e->key, k->str);
          if (d < bd && d * 2 <= strlen(k->str)) {
            bd = d;
            best = e->key;
          }
        }
      if (best)
        cerr(c, k, "unknown key '%s' (did you mean '%s'?)", path, best);
      else
        cerr(c, k, "unknown key '%s'", path);
      continue;
    }
    if (seen[idx]) {
      cerr(c, k, "duplicate key '%s' (first set at line %d, column %d)", path, seen[idx]->line, seen[idx]->col);
      continue;
    }
    seen[idx] = k;
    set_value(c, hit, (char *)binds[bi].obj + hit->offset, v, path);
  }
  size_t idx = 0;
  for (size_t i = 0; i < nb; i++) {
    for (const sk_config_entry_t *e = binds[i].schema->entries; e && e->key; e++, idx++) {
      if ((e->flags & SK_CFG_REQUIRED) && !seen[idx]) {
        (void)join(path, sizeof path, prefix, e->key); /* for the message */
        if (pos)
          cerr(c, pos, "missing required key '%s'", path);
        else
          cerr(c, NULL, "missing required key '%s'", path);
      } else if (e->type == SK_CFG_SECTION && !seen[idx] && e->sub) {
        /* an absent section can still lack required keys */
        if (join(path, sizeof path, prefix, e->key) < 0) continue; /* under a key already refused */
        bind_t b = {e->sub, (char *)binds[i].obj + e->offset};
        walk_map(c, &b, 1, NULL, path, pos);
      }
    }
    const sk_config_schema_t *s = binds[i].schema;
    char msg[SK_CFG_MSG_MAX];
    if (s->check && s->check(binds[i].obj, msg, sizeof msg) < 0) {
      if (*prefix)
        cerr(c, pos, "%s: %s", prefix, msg);
      else
        cerr(c, pos, "%s", msg);
    }
  }
  free(seen);
}

static void ctx_init(ctx_t *c, const char *name, const sk_config_opts_t *o, sk_config_errors_t *errs) {
  memset(c, 0, sizeof(*c));
  c->file = name ? name : "<config>";
  c->errs = errs;
  c->max_errors = o && o->max_errors ? o->max_errors : SK_CFG_DEFAULT_MAX_ERRORS;
  c->max_bytes = o && o->max_bytes ? o->max_bytes : SK_CFG_DEFAULT_MAX_BYTES;
  c->getenv = o && o->getenv ? o->getenv : default_getenv;
  c->getenv_ud = o ? o->getenv_ud : NULL;
}

int sk_config_load_parts(const sk_config_part_t *parts, size_t nparts, const char *name, const char *text,
                         size_t len, const sk_config_opts_t *o, sk_config_errors_t *errs) {
  sk_config_errors_t local;
  sk_config_errors_init(&local);
  if (!errs) errs = &local;
  size_t before = errs->n;
  ctx_t c;
  ctx_init(&c, name, o, errs);
  bind_t *binds = sk_xcalloc(nparts ? nparts : 1, sizeof(*binds));
  for (size_t i = 0; i < nparts; i++) {
    binds[i].schema = parts[i].schema;
    binds[i].obj = parts[i].obj;
    if (sk_config_defaults(parts[i].schema, parts[i].obj, errs) < 0) c.nerr++;
  }
  sk__ylimits_t lim = {.max_bytes = c.max_bytes,
                       .max_depth = o && o->max_depth > 0 ? o->max_depth : SK_CFG_DEFAULT_MAX_DEPTH,
                       .max_nodes = o && o->max_nodes ? o->max_nodes : SK_CFG_DEFAULT_MAX_NODES,
                       .max_docs = 16};
  sk__ystream_t st;
  char msg[SK_CFG_MSG_MAX];
  int line = 0, col = 0;
  int rc = sk__yaml_parse(text ? text : "", text ? len : 0, &lim, &st, msg, sizeof msg, &line, &col);
  if (rc < 0) {
    sk_config_errors_add(errs, c.file, line, col, "%s", msg);
  } else if (st.ndocs > 1) {
    const sk__ynode_t *d2 = st.docs[1];
    sk_config_errors_add(errs, c.file, d2 ? d2->line : 0, d2 ? d2->col : 0,
                         "expected one YAML document, got %zu", st.ndocs);
  } else {
    walk_map(&c, binds, nparts, st.ndocs ? st.docs[0] : NULL, "", NULL);
  }
  sk__yaml_stream_done(&st);
  free(binds);
  int bad = errs->n > before;
  sk_config_errors_done(&local);
  return bad ? SK_ECONFIG : 0;
}

int sk_config_load_string(const sk_config_schema_t *s, void *obj, const char *name, const char *text, size_t len,
                          const sk_config_opts_t *o, sk_config_errors_t *errs) {
  sk_config_part_t p = {s, obj};
  return sk_config_load_parts(&p, 1, name, text, len, o, errs);
}

/* Reads at most max bytes of a regular file. */
static int read_file(const char *path, size_t max, char **out, size_t *outlen, char *msg, size_t msglen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    msgf(msg, msglen, "cannot open: %s", strerror(errno));
    return sk_err_from_errno(errno);
  }
  int rc = 0;
  struct stat st;
  char *buf = NULL;
  size_t len = 0;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    msgf(msg, msglen, "not a regular file");
    rc = SK_EINVAL;
    goto out;
  }
  if ((uint64_t)st.st_size > max) {
    msgf(msg, msglen, "file of %lld bytes exceeds the limit of %zu bytes", (long long)st.st_size, max);
    rc = SK_ELIMIT;
    goto out;
  }
  buf = sk_xmalloc((size_t)st.st_size + 1);
  size_t cap = (size_t)st.st_size;
  while (len < cap) {
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      msgf(msg, msglen, "read failed: %s", strerror(errno));
      rc = sk_err_from_errno(errno);
      goto out;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  buf[len] = 0;
out:
  close(fd);
  if (rc < 0) {
    free(buf);
    return rc;
  }
  *out = buf;
  *outlen = len;
  return 0;
}

int sk_config_load_parts_file(const sk_config_part_t *parts, size_t nparts, const char *path,
                              const sk_config_opts_t *o, sk_config_errors_t *errs) {
  char *text = NULL, msg[SK_CFG_MSG_MAX];
  size_t len = 0;
  size_t max = o && o->max_bytes ? o->max_bytes : SK_CFG_DEFAULT_MAX_BYTES;
  int rc = read_file(path, max, &text, &len, msg, sizeof msg);
  if (rc < 0) {
    for (size_t i = 0; i < nparts; i++) sk_config_defaults(parts[i].schema, parts[i].obj, NULL);
    if (errs) sk_config_errors_add(errs, path, 0, 0, "%s", msg);
    return SK_ECONFIG;
  }
  rc = sk_config_load_parts(parts, nparts, path, text, len, o, errs);
  free(text);
  return rc;
}

int sk_config_load_file(const sk_config_schema_t *s, void *obj, const char *path, const sk_config_opts_t *o,
                        sk_config_errors_t *errs) {
  sk_config_part_t p = {s, obj};
  return sk_config_load_parts_file(&p, 1, path, o, errs);
}

int sk_config_check_file(const sk_config_schema_t *const *schemas, size_t nschemas, const char *path,
                         const sk_config_opts_t *o, FILE *out) {
  sk_config_part_t *parts = sk_xcalloc(nschemas ? nschemas : 1, sizeof(*parts));
  for (size_t i = 0; i < nschemas; i++) {
    parts[i].schema = schemas[i];
    parts[i].obj = sk_xcalloc(1, schemas[i]->size ? schemas[i]->size : 1);
  }
  sk_config_errors_t errs;
  sk_config_errors_init(&errs);
  int rc = sk_config_load_parts_file(parts, nschemas, path, o, &errs);
  if (rc < 0 || errs.n) {
    sk_config_errors_print(&errs, out);
    rc = 1;
  } else {
    fprintf(out, "config ok\n");
  }
  for (size_t i = 0; i < nschemas; i++) {
    sk_config_free(parts[i].schema, parts[i].obj);
    free(parts[i].obj);
  }
  free(parts);
  sk_config_errors_done(&errs);
  return rc;
}

/* ---- documentation ---- */

static void doc_rec(const sk_config_schema_t *s, const char *prefix, sk_buf_t *b) {
  for (const sk_config_entry_t *e = s->entries; e && e->key; e++) {
    char key[SK_CFG_PATH_MAX];
    (void)join(key, sizeof key, prefix, e->key); /* the schema's own keys, far below the limit */
    char extra[320] = "";
    if (e->type == SK_CFG_ENUM && e->names) {
      size_t off = (size_t)snprintf(extra, sizeof extra, " (one of:");
      for (int i = 0; e->names[i] && off < sizeof extra; i++)
        off += (size_t)snprintf(extra + off, sizeof extra - off, " %s", e->names[i]);
      if (off < sizeof extra) snprintf(extra + off, sizeof extra - off, ")");
    } else if ((e->type == SK_CFG_INT || e->type == SK_CFG_DOUBLE) && (e->min || e->max)) {
      snprintf(extra, sizeof extra, " (range %lld..%lld)", (long long)e->min, (long long)e->max);
    } else if ((e->type == SK_CFG_LIST || e->type == SK_CFG_STRLIST)) {
      snprintf(extra, sizeof extra, " (at most %zu)", list_max(e));
    } else if ((e->type == SK_CFG_UINT64 || e->type == SK_CFG_SIZE || e->type == SK_CFG_DURATION) && e->max > 0) {
      snprintf(extra, sizeof extra, " (max %lld%s)", (long long)e->max, e->type == SK_CFG_DURATION ? "ms" : "");
    }
    const char *def = e->def ? e->def : "";
    if (e->type == SK_CFG_SECTION || e->type == SK_CFG_LIST) def = "";
    sk_buf_printf(b, "  %-28s %-10s %-14s %s%s%s\n", key, type_name(e->type), *def ? def : "-", e->help ? e->help : "",
                  extra, (e->flags & SK_CFG_REQUIRED) ? " [required]" : "");
    if (e->type == SK_CFG_SECTION && e->sub) doc_rec(e->sub, key, b);
    if (e->type == SK_CFG_LIST && e->sub) {
      char lp[SK_CFG_PATH_MAX + 4];
      snprintf(lp, sizeof lp, "%s[]", key);
      doc_rec(e->sub, lp, b);
    }
  }
}

void sk_config_schema_doc(const sk_config_schema_t *s, const char *prefix, sk_buf_t *b) {
  if (!s) return;
  doc_rec(s, prefix ? prefix : "", b);
}
