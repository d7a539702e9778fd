/* ctl_auth.c - bearer tokens, mTLS identity mapping, the role matrix and
 * the /api/v1/tokens endpoints; plus the small helpers the CA and the audit
 * log share (random tokens, hashing, atomic files, JSON responses). */
#include "ctl_auth.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "control.h"
#include "ctl_audit.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#define MAX_ADMIN_KINDS 64
#define MAX_RULES 64

typedef struct rule {
  char *pattern;
  ctl_role_t role;
} rule_t;

struct ctl_auth {
  sk_store_t *store;
  ctl_backend_t *be; /* non-NULL: tokens through the backend's token ops */
  char *state_dir;
  rule_t rules[MAX_RULES];
  size_t nrules;
  char *admin_kinds[MAX_ADMIN_KINDS];
  size_t nadmin_kinds;
  size_t max_tokens;
};

void ctl__seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

#define seterr ctl__seterr

/* ---------------- shared helpers ---------------- */

int ctl__random_b64url(char *out, size_t outlen, size_t nbytes) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char raw[64];
  if (nbytes > sizeof raw || outlen < (nbytes * 4 + 2) / 3 + 1) return SK_EINVAL;
  if (RAND_bytes(raw, (int)nbytes) != 1) return SK_EIO;
  size_t o = 0;
  for (size_t i = 0; i < nbytes; i += 3) {
    uint32_t v = (uint32_t)raw[i] << 16;
    size_t n = nbytes - i;
    if (n > 1) v |= (uint32_t)raw[i + 1] << 8;
    if (n > 2) v |= raw[i + 2];
    out[o++] = tab[(v >> 18) & 63];
    out[o++] = tab[(v >> 12) & 63];
    if (n > 1) out[o++] = tab[(v >> 6) & 63];
    if (n > 2) out[o++] = tab[v & 63];
  }
  out[o] = 0;
  OPENSSL_cleanse(raw, sizeof raw);
  return (int)o;
}

void ctl__sha256(const void *data, size_t len, unsigned char out[32]) {
  unsigned int n = 32;
  EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

int ctl__secret_new(const char *prefix, char *out, size_t outlen, unsigned char hash[32]) {
  size_t pl = strlen(prefix);
  if (outlen <= pl) return SK_EINVAL;
  memcpy(out, prefix, pl);
  int rc = ctl__random_b64url(out + pl, outlen - pl, 32);
  if (rc < 0) return rc;
  ctl__sha256(out, strlen(out), hash);
  return 0;
}

int ctl__secret_hash(const char *secret, const char *prefix, size_t total, const char *what,
                     unsigned char hash[32], char *err, size_t errlen) {
  if (!ctl__token_shape_ok(secret, prefix, total)) {
    seterr(err, errlen, "malformed %s (expected %s followed by 43 characters)", what, prefix);
    return SK_EUNAUTH;
  }
  ctl__sha256(secret, total, hash);
  return 0;
}

int ctl__write_file_atomic(const char *path, const void *data, size_t len, int mode, char *err,
                           size_t errlen) {
  char tmp[PATH_MAX];
  int fd = -1, rc = 0;
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
    seterr(err, errlen, "%s: path too long", path);
    return SK_ENAMETOOLONG;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) {
    rc = sk_err_from_errno(errno);
    seterr(err, errlen, "%s: %s", tmp, strerror(errno));
    return rc;
  }
  if (fchmod(fd, (mode_t)mode) < 0) goto fail;
  const char *p = data;
  size_t left = len;
  while (left) {
    ssize_t w = write(fd, p, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      goto fail;
    }
    p += w;
    left -= (size_t)w;
  }
  if (fsync(fd) < 0) goto fail;
  if (close(fd) < 0) {
    fd = -1;
    goto fail;
  }
  fd = -1;
  if (rename(tmp, path) < 0) goto fail;
  /* make the rename itself durable */
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) {
    if (slash == dir) slash[1] = 0;
    else *slash = 0;
  } else {
    strcpy(dir, ".");
  }
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  return 0;
fail:
  rc = sk_err_from_errno(errno);
  seterr(err, errlen, "%s: %s", path, strerror(errno));
  if (fd >= 0) close(fd);
  unlink(tmp);
  return rc;
}

int64_t ctl__now_s(void) { return (int64_t)time(NULL); }

int64_t ctl__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ctl__rfc3339(int64_t s, int ms, char *out, size_t outlen) {
  time_t t = (time_t)s;
  struct tm tm;
  gmtime_r(&t, &tm);
  char base[32];
  strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  if (ms >= 0) snprintf(out, outlen, "%s.%03dZ", base, ms % 1000);
  else snprintf(out, outlen, "%sZ", base);
}

int ctl__parse_duration(const char *s, int64_t *out) {
  if (!s || !*s || strlen(s) > 20) return SK_EINVAL;
  int64_t v = 0;
  const char *p = s;
  if (!isdigit((unsigned char)*p)) return SK_EINVAL;
  while (isdigit((unsigned char)*p)) {
    if (v > (INT64_MAX - 9) / 10) return SK_EINVAL;
    v = v * 10 + (*p++ - '0');
  }
  int64_t mul = 1;
  if (*p == 's') mul = 1, p++;
  else if (*p == 'm') mul = 60, p++;
  else if (*p == 'h') mul = 3600, p++;
  else if (*p == 'd') mul = 86400, p++;
  if (*p) return SK_EINVAL;
  if (v > INT64_MAX / mul / 1000) return SK_EINVAL; /* leaves room for ms */
  *out = v * mul;
  return 0;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

const char *ctl__query_get(const char *query, const char *key, sk_pool_t *pool) {
  if (!query || !key) return NULL;
  size_t klen = strlen(key);
  const char *p = query;
  while (*p) {
    const char *amp = strchr(p, '&');
    size_t seg = amp ? (size_t)(amp - p) : strlen(p);
    const char *eq = memchr(p, '=', seg);
    size_t nlen = eq ? (size_t)(eq - p) : seg;
    if (nlen == klen && !memcmp(p, key, klen)) {
      const char *v = eq ? eq + 1 : p + seg;
      size_t vlen = (size_t)(p + seg - v);
      char *o = sk_pool_alloc(pool, vlen + 1);
      size_t j = 0;
      for (size_t i = 0; i < vlen; i++) {
        if (v[i] == '+') {
          o[j++] = ' ';
        } else if (v[i] == '%' && i + 2 < vlen && hexval(v[i + 1]) >= 0 &&
                   hexval(v[i + 2]) >= 0) {
          o[j++] = (char)(hexval(v[i + 1]) * 16 + hexval(v[i + 2]));
          i += 2;
        } else {
          o[j++] = v[i];
        }
      }
      o[j] = 0;
      if (memchr(o, 0, j)) return NULL; /* an encoded NUL: refuse */
      return o;
    }
    if (!amp) break;
    p = amp + 1;
  }
  return NULL;
}

int ctl__respond_json(sk_http_req_t *req, int status, const json_t *v) {
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(v, &b);
  sk_buf_puts(&b, "\n");
  sk_http_header_t h[] = {{"content-type", "application/json"}, {"cache-control", "no-store"}};
  int rc = sk_http_respond(req, status, h, 2, b.data, b.len);
  sk_buf_done(&b);
  return rc;
}

int ctl__body_json(const sk_http_req_t *req, size_t max_bytes, json_t **out, char *err,
                   size_t errlen) {
  *out = NULL;
  if (!req->body || req->body_len == 0) {
    seterr(err, errlen, "request body is empty; a JSON object is expected");
    return SK_EINVAL;
  }
  if (req->body_len > max_bytes) {
    seterr(err, errlen, "request body is %zu bytes; the limit is %zu", req->body_len, max_bytes);
    return SK_ELIMIT;
  }
  char perr[160];
  json_t *v = NULL;
  int rc = sk_json_parse((const char *)req->body, req->body_len, max_bytes, 8, &v, perr, sizeof perr);
  if (rc < 0) {
    seterr(err, errlen, "body: %s", perr);
    return rc;
  }
  if (!json_is_object(v)) {
    json_decref(v);
    seterr(err, errlen, "body: a JSON object is expected");
    return SK_EINVAL;
  }
  *out = v;
  return 0;
}

/* The Status reason for a code: Kubernetes' names where the API has one,
 * else the status text without its spaces ("Bad Request" -> BadRequest). */
static const char *status_reason(int status, char *buf, size_t len) {
  switch (status) {
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 410: return "Expired";
  case 413: return "RequestEntityTooLarge";
  case 422: return "Invalid";
  case 500: return "InternalError";
  default: break;
  }
  const char *t = sk_http_status_text(status);
  size_t n = 0;
  for (; t && *t && n + 1 < len; t++)
    if (*t != ' ' && *t != '-') buf[n++] = *t;
  buf[n] = 0;
  return buf;
}

int ctl_http_error(sk_http_req_t *req, int status, const char *message) {
  char rb[64];
  json_t *o = ctl_status_new(status, status_reason(status, rb, sizeof rb), message, NULL, NULL, NULL);
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(o, &b);
  sk_buf_puts(&b, "\n");
  json_decref(o);
  sk_http_header_t h[3] = {{"content-type", "application/json"}, {"cache-control", "no-store"}};
  size_t n = 2;
  if (status == 401) h[n++] = (sk_http_header_t){"www-authenticate", "Bearer realm=\"skiff\""};
  int rc = sk_http_respond(req, status, h, n, b.data, b.len);
  sk_buf_done(&b);
  return rc;
}

/* ---------------- names ---------------- */

static const char *const role_names[] = {"none", "viewer", "operator", "admin"};
static const char *const verb_names[] = {"get", "list", "watch", "create", "update", "patch", "delete"};

const char *ctl_role_name(ctl_role_t r) {
  return (r >= CTL_ROLE_NONE && r <= CTL_ROLE_ADMIN) ? role_names[r] : "none";
}

int ctl_role_parse(const char *s, ctl_role_t *out) {
  if (!s) return SK_EINVAL;
  for (int i = CTL_ROLE_VIEWER; i <= CTL_ROLE_ADMIN; i++)
    if (!strcmp(s, role_names[i])) {
      *out = (ctl_role_t)i;
      return 0;
    }
  return SK_EINVAL;
}

const char *ctl_verb_name(ctl_verb_t v) {
  return (v >= 0 && v < CTL_VERB__COUNT) ? verb_names[v] : "unknown";
}

const char *ctl_via_name(ctl_via_t v) {
  return v == CTL_VIA_TOKEN ? "token" : v == CTL_VIA_MTLS ? "mtls" : "none";
}

int ctl_verb_from_method(const char *method, int has_name, int watch, ctl_verb_t *out) {
  if (!method) return SK_EINVAL;
  if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
    *out = watch ? CTL_VERB_WATCH : has_name ? CTL_VERB_GET : CTL_VERB_LIST;
  else if (!strcmp(method, "POST")) *out = CTL_VERB_CREATE;
  else if (!strcmp(method, "PUT")) *out = CTL_VERB_UPDATE;
  else if (!strcmp(method, "PATCH")) *out = CTL_VERB_PATCH;
  else if (!strcmp(method, "DELETE")) *out = CTL_VERB_DELETE;
  else return SK_EINVAL;
  return 0;
}

/* ---------------- open ---------------- */

static const char *const schema[] = {
    "CREATE TABLE IF NOT EXISTS ctl_tokens ("
    " id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " role INTEGER NOT NULL,"
    " hash BLOB NOT NULL UNIQUE,"
    " created INTEGER NOT NULL,"
    " expires INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS ctl_tokens_name ON ctl_tokens(name)",
};

static int add_rule(ctl_auth_t *a, const char *pattern, ctl_role_t role) {
  if (a->nrules >= MAX_RULES || !pattern || strlen(pattern) > 1024) return SK_ELIMIT;
  a->rules[a->nrules].pattern = sk_xstrdup(pattern);
  a->rules[a->nrules].role = role;
  a->nrules++;
  return 0;
}

int ctl_auth_open(const ctl_auth_opts_t *o, ctl_auth_t **out, char *err, size_t errlen) {
  *out = NULL;
  ctl_backend_t *be = o && o->backend && o->backend->ops->token_add ? o->backend : NULL;
  if (!o || (!o->store && !be)) {
    seterr(err, errlen, "auth: a store is required");
    return SK_EINVAL;
  }
  for (size_t i = 0; !be && i < sizeof schema / sizeof *schema; i++) {
    if (sk_store_exec(o->store, schema[i], NULL, 0) < 0) {
      seterr(err, errlen, "auth: schema: %s", sk_store_errmsg(o->store));
      return SK_ESTORE;
    }
  }
  ctl_auth_t *a = sk_xcalloc(1, sizeof *a);
  a->store = be ? NULL : o->store;
  a->be = be;
  a->state_dir = o->state_dir ? sk_xstrdup(o->state_dir) : NULL;
  a->max_tokens = o->max_tokens ? o->max_tokens : 10000;
  int rc = 0;
  if (o->mtls_rules) {
    for (size_t i = 0; i < o->nmtls_rules && rc == 0; i++)
      rc = add_rule(a, o->mtls_rules[i].pattern, o->mtls_rules[i].role);
  }
  if (rc == 0 && (!o->mtls_rules || o->mtls_defaults)) {
    const char *td = o->trust_domain ? o->trust_domain : "skiff.local";
    char pat[600];
    snprintf(pat, sizeof pat, "spiffe://%s/region/*/daemon/*", td);
    rc = add_rule(a, pat, CTL_ROLE_ADMIN);
    snprintf(pat, sizeof pat, "spiffe://%s/region/*/proxy/*", td);
    if (rc == 0) rc = add_rule(a, pat, CTL_ROLE_VIEWER);
  }
  if (rc < 0) {
    seterr(err, errlen, "auth: too many or too long mTLS rules (max %d)", MAX_RULES);
    ctl_auth_free(a);
    return rc;
  }
  ctl_auth_add_admin_kind(a, CTL_KIND_TOKEN);
  ctl_auth_add_admin_kind(a, CTL_KIND_CA);
  ctl_auth_add_admin_kind(a, CTL_KIND_AUDIT);
  *out = a;
  return 0;
}

void ctl_auth_free(ctl_auth_t *a) {
  if (!a) return;
  for (size_t i = 0; i < a->nrules; i++) free(a->rules[i].pattern);
  for (size_t i = 0; i < a->nadmin_kinds; i++) free(a->admin_kinds[i]);
  free(a->state_dir);
  free(a);
}

int ctl_auth_add_admin_kind(ctl_auth_t *a, const char *kind) {
  if (!a || !kind || !*kind || strlen(kind) > 128) return SK_EINVAL;
  for (size_t i = 0; i < a->nadmin_kinds; i++)
    if (!strcmp(a->admin_kinds[i], kind)) return 0;
  if (a->nadmin_kinds >= MAX_ADMIN_KINDS) return SK_ELIMIT;
  a->admin_kinds[a->nadmin_kinds++] = sk_xstrdup(kind);
  return 0;
}

/* ---------------- tokens ---------------- */

static int valid_token_name(const char *n) {
  size_t l = n ? strlen(n) : 0;
  if (l == 0 || l > 128) return 0;
  for (size_t i = 0; i < l; i++) {
    unsigned char c = (unsigned char)n[i];
    if (!isalnum(c) && !strchr("._:@-", c)) return 0;
  }
  return 1;
}

int ctl__token_shape_ok(const char *s, const char *prefix, size_t total) {
  size_t pl = strlen(prefix);
  if (!s || strlen(s) != total || strncmp(s, prefix, pl) != 0) return 0;
  for (size_t i = pl; i < total; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && c != '-' && c != '_') return 0;
  }
  return 1;
}

int ctl_auth_token_create(ctl_auth_t *a, const char *name, ctl_role_t role, int64_t ttl_s,
                          char *secret_out, size_t secretlen, ctl_token_info_t *info) {
  if (!a || !secret_out || secretlen < CTL_TOKEN_LEN + 1 || !valid_token_name(name) ||
      role < CTL_ROLE_VIEWER || role > CTL_ROLE_ADMIN || ttl_s < 0 || ttl_s > 100LL * 365 * 86400)
    return SK_EINVAL;
  int64_t live = 0;
  int64_t now = ctl__now_s();
  int rc = a->be ? a->be->ops->token_count_live(a->be, -1, now, &live)
                 : sk_store_query_int64(a->store,
                                "SELECT count(*) FROM ctl_tokens WHERE revoked = 0 AND"
                                " (expires = 0 OR expires > ?1)",
                                SK_SQL_ARGS(SK_SQL_INT(now)), &live);
  if (rc < 0) return rc;
  if ((size_t)live >= a->max_tokens) return SK_ELIMIT;
  char secret[CTL_TOKEN_LEN + 8];
  unsigned char h[32];
  rc = ctl__secret_new(CTL_TOKEN_PREFIX, secret, sizeof secret, h);
  if (rc < 0) return rc;
  char id[32] = "tok_";
  rc = ctl__random_b64url(id + 4, sizeof id - 4, 9); /* 12 characters */
  if (rc < 0) return rc;
  int64_t expires = ttl_s ? now + ttl_s : 0;
  ctl_token_row_t row = {.id = id, .name = name, .role = role, .hash = h, .created = now, .expires = expires};
  rc = a->be ? a->be->ops->token_add(a->be, &row)
             : sk_store_exec(a->store,
                     "INSERT INTO ctl_tokens(id, name, role, hash, created, expires, revoked)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                     SK_SQL_ARGS(SK_SQL_TEXT(id), SK_SQL_TEXT(name), SK_SQL_INT(role),
                                 SK_SQL_BLOB(h, 32), SK_SQL_INT(now), SK_SQL_INT(expires)));
  if (rc < 0) {
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
  }
  memcpy(secret_out, secret, CTL_TOKEN_LEN + 1);
  OPENSSL_cleanse(secret, sizeof secret);
  if (info) {
    memset(info, 0, sizeof *info);
    snprintf(info->id, sizeof info->id, "%s", id);
    snprintf(info->name, sizeof info->name, "%s", name);
    info->role = role;
    info->created = now;
    info->expires = expires;
  }
  return 0;
}

int ctl_auth_token_revoke(ctl_auth_t *a, const char *id_or_name) {
  if (!a || !id_or_name || !*id_or_name || strlen(id_or_name) > 128) return SK_EINVAL;
  int rc = a->be ? a->be->ops->token_revoke(a->be, id_or_name, ctl__now_s())
                 : sk_store_exec(a->store,
                         "UPDATE ctl_tokens SET revoked = ?2 WHERE revoked = 0 AND"
                         " (id = ?1 OR name = ?1)",
                         SK_SQL_ARGS(SK_SQL_TEXT(id_or_name), SK_SQL_INT(ctl__now_s())));
  if (rc < 0) return rc;
  return rc == 0 ? SK_ENOTFOUND : rc;
}

static int list_row(sk_stmt_t *st, void *ud) {
  json_t *arr = ud;
  int role = (int)sk_stmt_int64(st, 2);
  int64_t created = sk_stmt_int64(st, 3), expires = sk_stmt_int64(st, 4),
          revoked = sk_stmt_int64(st, 5);
  char tc[40], te[40], tr[40];
  ctl__rfc3339(created, -1, tc, sizeof tc);
  ctl__rfc3339(expires, -1, te, sizeof te);
  ctl__rfc3339(revoked, -1, tr, sizeof tr);
  json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:b}", "id", sk_stmt_text(st, 0), "name",
                        sk_stmt_text(st, 1), "role", ctl_role_name((ctl_role_t)role), "created", tc,
                        "expires", expires ? json_string(te) : json_null(), "revoked",
                        revoked ? json_string(tr) : json_null(), "expired",
                        expires && expires <= ctl__now_s());
  json_array_append_new(arr, o);
  return 0;
}

/* A backend's token row as list_row makes it. */
static int list_be_row(const ctl_token_row_t *t, void *ud) {
  json_t *arr = ud;
  char tc[40], te[40], tr[40];
  ctl__rfc3339(t->created, -1, tc, sizeof tc);
  ctl__rfc3339(t->expires, -1, te, sizeof te);
  ctl__rfc3339(t->revoked, -1, tr, sizeof tr);
  json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:b}", "id", t->id, "name", t->name, "role",
                        ctl_role_name((ctl_role_t)t->role), "created", tc, "expires",
                        t->expires ? json_string(te) : json_null(), "revoked",
                        t->revoked ? json_string(tr) : json_null(), "expired",
                        t->expires && t->expires <= ctl__now_s());
  json_array_append_new(arr, o);
  return 0;
}

int ctl_auth_token_list(ctl_auth_t *a, json_t **out) {
  json_t *arr = json_array();
  int rc = a->be ? a->be->ops->token_list(a->be, list_be_row, arr)
                 : sk_store_query(a->store,
                          "SELECT id, name, role, created, expires, revoked FROM ctl_tokens"
                          " ORDER BY created DESC, rowid DESC LIMIT 10000",
                          NULL, 0, list_row, arr);
  if (rc < 0) {
    json_decref(arr);
    return rc;
  }
  *out = arr;
  return 0;
}

typedef struct check_ctx {
  unsigned char want[32];
  int found;
  char id[32];
  char name[CTL_NAME_MAX];
  int role;
  int64_t expires, revoked;
} check_ctx_t;

static int check_row(sk_stmt_t *st, void *ud) {
  check_ctx_t *c = ud;
  size_t hl = 0;
  const void *h = sk_stmt_blob(st, 3, &hl);
  if (hl != 32 || CRYPTO_memcmp(h, c->want, 32) != 0) return 0;
  c->found = 1;
  snprintf(c->id, sizeof c->id, "%s", sk_stmt_text(st, 0));
  snprintf(c->name, sizeof c->name, "%s", sk_stmt_text(st, 1));
  c->role = (int)sk_stmt_int64(st, 2);
  c->expires = sk_stmt_int64(st, 4);
  c->revoked = sk_stmt_int64(st, 5);
  return 1;
}

static int check_be_row(const ctl_token_row_t *t, void *ud) {
  check_ctx_t *c = ud;
  if (CRYPTO_memcmp(t->hash, c->want, 32) != 0) return 0;
  c->found = 1;
  snprintf(c->id, sizeof c->id, "%s", t->id);
  snprintf(c->name, sizeof c->name, "%s", t->name);
  c->role = t->role;
  c->expires = t->expires;
  c->revoked = t->revoked;
  return 1;
}

int ctl_auth_token_check(ctl_auth_t *a, const char *secret, int64_t now, ctl_principal_t *p,
                         char *reason, size_t reasonlen) {
  check_ctx_t c;
  memset(&c, 0, sizeof c);
  int rc = ctl__secret_hash(secret, CTL_TOKEN_PREFIX, CTL_TOKEN_LEN, "bearer token", c.want, reason,
                            reasonlen);
  if (rc < 0) return rc;
  rc = a->be ? a->be->ops->token_find(a->be, c.want, check_be_row, &c)
                 : sk_store_query(a->store,
                          "SELECT id, name, role, hash, expires, revoked FROM ctl_tokens"
                          " WHERE hash = ?1",
                          SK_SQL_ARGS(SK_SQL_BLOB(c.want, 32)), check_row, &c);
  if (rc < 0) {
    seterr(reason, reasonlen, "token store unavailable");
    return SK_EUNAUTH;
  }
  if (!c.found) {
    seterr(reason, reasonlen, "unknown bearer token");
    return SK_EUNAUTH;
  }
  if (c.revoked) {
    seterr(reason, reasonlen, "bearer token %s was revoked", c.id);
    return SK_EUNAUTH;
  }
  if (c.expires && c.expires <= now) {
    seterr(reason, reasonlen, "bearer token %s expired", c.id);
    return SK_EUNAUTH;
  }
  if (c.role < CTL_ROLE_VIEWER || c.role > CTL_ROLE_ADMIN) {
    seterr(reason, reasonlen, "bearer token %s has an invalid role", c.id);
    return SK_EUNAUTH;
  }
  if (p) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", c.name);
    snprintf(p->id, sizeof p->id, "%s", c.id);
    p->role = (ctl_role_t)c.role;
    p->via = CTL_VIA_TOKEN;
  }
  return 0;
}

int ctl_auth_bootstrap(ctl_auth_t *a, char *path_out, size_t pathlen) {
  if (!a || !a->state_dir) return SK_EINVAL;
  int64_t n = 0;
  int rc = a->be ? a->be->ops->token_count_live(a->be, CTL_ROLE_ADMIN, ctl__now_s(), &n)
                 : sk_store_query_int64(a->store,
                                "SELECT count(*) FROM ctl_tokens WHERE role = ?1 AND revoked = 0"
                                " AND (expires = 0 OR expires > ?2)",
                                SK_SQL_ARGS(SK_SQL_INT(CTL_ROLE_ADMIN), SK_SQL_INT(ctl__now_s())),
                                &n);
  if (rc < 0) return rc;
  if (n > 0) return 0;
  char path[PATH_MAX];
  if (snprintf(path, sizeof path, "%s/admin.token", a->state_dir) >= (int)sizeof path)
    return SK_ENAMETOOLONG;
  char secret[CTL_TOKEN_LEN + 2];
  rc = ctl_auth_token_create(a, "bootstrap-admin", CTL_ROLE_ADMIN, 0, secret, sizeof secret, NULL);
  if (rc < 0) return rc;
  secret[CTL_TOKEN_LEN] = '\n';
  rc = ctl__write_file_atomic(path, secret, CTL_TOKEN_LEN + 1, 0600, NULL, 0);
  OPENSSL_cleanse(secret, sizeof secret);
  if (rc < 0) {
    ctl_auth_token_revoke(a, "bootstrap-admin");
    return rc;
  }
  if (path_out && pathlen) snprintf(path_out, pathlen, "%s", path);
  return 1;
}

/* ---------------- authentication ---------------- */

/* '*' matches within one '/'-separated segment, "**" anything. */
static int glob_match(const char *p, const char *s) {
  while (*p) {
    if (p[0] == '*' && p[1] == '*') {
      p += 2;
      if (!*p) return 1;
      for (const char *t = s; *t; t++)
        if (glob_match(p, t)) return 1;
      return glob_match(p, s + strlen(s));
    }
    if (*p == '*') {
      p++;
      for (const char *t = s;; t++) {
        if (glob_match(p, t)) return 1;
        if (!*t || *t == '/') return 0;
      }
    }
    if (*p != *s) return 0;
    p++;
    s++;
  }
  return *s == 0;
}

int ctl_auth_authenticate(ctl_auth_t *a, const sk_http_req_t *req, ctl_principal_t *p,
                          char *reason, size_t reasonlen) {
  ctl_principal_t tmp;
  if (!p) p = &tmp;
  memset(p, 0, sizeof *p);
  const char *authz = sk_http_headers_get(&req->headers, "authorization");
  if (authz) {
    if (strncasecmp(authz, "Bearer ", 7) != 0) {
      seterr(reason, reasonlen, "unsupported authorization scheme (use Bearer)");
      return SK_EUNAUTH;
    }
    const char *t = authz + 7;
    while (*t == ' ') t++;
    size_t tl = strlen(t);
    while (tl && t[tl - 1] == ' ') tl--;
    char tok[CTL_TOKEN_LEN + 1];
    if (tl != CTL_TOKEN_LEN) {
      seterr(reason, reasonlen, "malformed bearer token (expected %s followed by 43 characters)",
             CTL_TOKEN_PREFIX);
      return SK_EUNAUTH;
    }
    memcpy(tok, t, tl);
    tok[tl] = 0;
    int rc = ctl_auth_token_check(a, tok, ctl__now_s(), p, reason, reasonlen);
    OPENSSL_cleanse(tok, sizeof tok);
    return rc;
  }
  if (req->peer_spiffe && *req->peer_spiffe) {
    snprintf(p->name, sizeof p->name, "%s", req->peer_spiffe);
    p->via = CTL_VIA_MTLS;
    p->role = CTL_ROLE_NONE;
    for (size_t i = 0; i < a->nrules; i++) {
      if (glob_match(a->rules[i].pattern, req->peer_spiffe)) {
        p->role = a->rules[i].role;
        break;
      }
    }
    return 0;
  }
  seterr(reason, reasonlen, "no credentials: send Authorization: Bearer <token> or a client "
                            "certificate");
  return SK_EUNAUTH;
}

static int is_admin_kind(const ctl_auth_t *a, const char *kind) {
  for (size_t i = 0; i < a->nadmin_kinds; i++)
    if (!strcmp(a->admin_kinds[i], kind)) return 1;
  return 0;
}

int ctl_auth_authorize(const ctl_auth_t *a, const ctl_principal_t *p, ctl_verb_t verb,
                       const char *kind, char *reason, size_t reasonlen) {
  if (!p || verb < 0 || verb >= CTL_VERB__COUNT || !kind) {
    seterr(reason, reasonlen, "forbidden");
    return SK_EFORBID;
  }
  const char *vn = ctl_verb_name(verb);
  if (p->role == CTL_ROLE_NONE) {
    seterr(reason, reasonlen, "%s has no role", p->name);
    return SK_EFORBID;
  }
  if (p->role == CTL_ROLE_ADMIN) return 0;
  if (is_admin_kind(a, kind)) {
    seterr(reason, reasonlen, "%s (role %s) may not %s %s: admin only", p->name,
           ctl_role_name(p->role), vn, kind);
    return SK_EFORBID;
  }
  int readonly = verb == CTL_VERB_GET || verb == CTL_VERB_LIST || verb == CTL_VERB_WATCH;
  if (readonly || p->role == CTL_ROLE_OPERATOR) return 0;
  seterr(reason, reasonlen, "%s (role %s) may not %s %s", p->name, ctl_role_name(p->role), vn,
         kind);
  return SK_EFORBID;
}

int ctl_auth_guard(ctl_auth_t *a, ctl_audit_t *audit, sk_http_req_t *req, ctl_verb_t verb,
                   const char *kind, const char *ns, const char *name, ctl_principal_t *p) {
  ctl_principal_t tmp;
  if (!p) p = &tmp;
  char reason[512];
  reason[0] = 0;
  int rc = ctl_auth_authenticate(a, req, p, reason, sizeof reason);
  int code = 0;
  if (rc < 0) {
    code = 401;
  } else {
    rc = ctl_auth_authorize(a, p, verb, kind, reason, sizeof reason);
    if (rc < 0) code = 403;
  }
  if (!code) return 0;
  if (audit) {
    ctl_audit_entry_t e = {
        .principal = code == 401 ? NULL : p,
        .verb = ctl_verb_name(verb),
        .kind = kind,
        .ns = ns,
        .name = name,
        .code = code,
        .source = req->peer_addr,
        .message = reason,
    };
    (void)ctl_audit_record(audit, &e); /* a failed audit write must not turn a refusal into a pass */
  }
  ctl_http_error(req, code, reason);
  return rc;
}

/* ---------------- HTTP: /api/v1/tokens ---------------- */

#define TOKENS_PATH "/api/v1/tokens"

static json_t *info_json(const ctl_token_info_t *t) {
  char tc[40], te[40];
  ctl__rfc3339(t->created, -1, tc, sizeof tc);
  ctl__rfc3339(t->expires, -1, te, sizeof te);
  return json_pack("{s:s,s:s,s:s,s:s,s:o}", "id", t->id, "name", t->name, "role",
                   ctl_role_name(t->role), "created", tc, "expires",
                   t->expires ? json_string(te) : json_null());
}

static void tokens_create(ctl_auth_t *a, ctl_audit_t *audit, sk_http_req_t *req,
                          const ctl_principal_t *p) {
  char err[256];
  json_t *body = NULL;
  if (ctl__body_json(req, 4096, &body, err, sizeof err) < 0) {
    ctl_http_error(req, 400, err);
    return;
  }
  const char *name = sk_json_get_str(body, "name", NULL);
  const char *role_s = sk_json_get_str(body, "role", NULL);
  json_t *ttl_v = json_object_get(body, "ttl");
  ctl_role_t role;
  int64_t ttl = 0;
  if (!valid_token_name(name)) {
    ctl_http_error(req, 400, "name: required, 1..128 characters of [A-Za-z0-9._:@-]");
    goto out;
  }
  if (ctl_role_parse(role_s, &role) < 0) {
    ctl_http_error(req, 400, "role: one of viewer, operator, admin");
    goto out;
  }
  if (ttl_v && json_is_integer(ttl_v)) {
    ttl = json_integer_value(ttl_v);
  } else if (ttl_v && json_is_string(ttl_v)) {
    if (ctl__parse_duration(json_string_value(ttl_v), &ttl) < 0) ttl = -1;
  } else if (ttl_v && !json_is_null(ttl_v)) {
    ttl = -1;
  }
  if (ttl < 0 || ttl > 100LL * 365 * 86400) {
    ctl_http_error(req, 400, "ttl: seconds or a duration such as \"24h\" (0 or absent = no expiry)");
    goto out;
  }
  char secret[CTL_TOKEN_LEN + 1];
  ctl_token_info_t info;
  int rc = ctl_auth_token_create(a, name, role, ttl, secret, sizeof secret, &info);
  if (rc < 0) {
    ctl_http_error(req, rc == SK_ELIMIT ? 429 : 500,
                   rc == SK_ELIMIT ? "too many live tokens" : "cannot create the token");
    goto out;
  }
  json_t *o = info_json(&info);
  if (audit) {
    sk_buf_t d;
    sk_buf_init(&d);
    sk_json_dump_buf(o, &d); /* o has no secret yet */
    ctl_audit_entry_t e = {.principal = p, .verb = "create", .kind = CTL_KIND_TOKEN,
                           .name = info.id, .code = 201, .diff = sk_buf_cstr(&d),
                           .source = req->peer_addr};
    ctl_audit_record(audit, &e);
    sk_buf_done(&d);
  }
  json_object_set_new(o, "token", json_string(secret));
  OPENSSL_cleanse(secret, sizeof secret);
  ctl__respond_json(req, 201, o);
  json_decref(o);
out:
  json_decref(body);
}

int ctl_auth_http_route(ctl_auth_t *a, ctl_audit_t *audit, sk_http_req_t *req) {
  const char *path = req->path;
  size_t pl = sizeof TOKENS_PATH - 1;
  if (strncmp(path, TOKENS_PATH, pl) != 0 || (path[pl] && path[pl] != '/')) return 0;
  const char *id = path[pl] == '/' ? path + pl + 1 : NULL;
  if (id && !*id) id = NULL;
  ctl_verb_t verb;
  if (ctl_verb_from_method(req->method, id != NULL, 0, &verb) < 0 ||
      (verb == CTL_VERB_CREATE && id) || (verb == CTL_VERB_DELETE && !id) ||
      verb == CTL_VERB_UPDATE || verb == CTL_VERB_PATCH || verb == CTL_VERB_GET) {
    ctl_http_error(req, 405, "tokens: POST /api/v1/tokens, GET /api/v1/tokens, DELETE /api/v1/tokens/{id|name}");
    return 1;
  }
  ctl_principal_t p;
  if (ctl_auth_guard(a, audit, req, verb, CTL_KIND_TOKEN, NULL, id, &p) < 0) return 1;
  if (verb == CTL_VERB_CREATE) {
    tokens_create(a, audit, req, &p);
  } else if (verb == CTL_VERB_LIST) {
    json_t *items = NULL;
    if (ctl_auth_token_list(a, &items) < 0) {
      ctl_http_error(req, 500, "cannot list tokens");
      return 1;
    }
    json_t *o = json_pack("{s:o}", "items", items);
    ctl__respond_json(req, 200, o);
    json_decref(o);
  } else { /* delete */
    if (!valid_token_name(id)) {
      ctl_http_error(req, 400, "bad token id or name");
      return 1;
    }
    int rc = ctl_auth_token_revoke(a, id);
    int code = rc >= 0 ? 200 : rc == SK_ENOTFOUND ? 404 : 500;
    if (audit) {
      ctl_audit_entry_t e = {.principal = &p, .verb = "delete", .kind = CTL_KIND_TOKEN,
                             .name = id, .code = code, .source = req->peer_addr,
                             .message = rc == SK_ENOTFOUND ? "no live token" : NULL};
      ctl_audit_record(audit, &e);
    }
    if (rc < 0) {
      ctl_http_error(req, code, rc == SK_ENOTFOUND ? "no live token with that id or name"
                                                   : "cannot revoke the token");
      return 1;
    }
    json_t *o = json_pack("{s:i}", "revoked", rc);
    ctl__respond_json(req, 200, o);
    json_decref(o);
  }
  return 1;
}
