/* ctl_audit.c - the audit log: one row per mutation or refused call in
 * control's own store, merge-patch diffs, filtered queries and retention. */
#include "ctl_audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

#define PRUNE_EVERY 256

struct ctl_audit {
  sk_store_t *store;
  ctl_backend_t *be; /* non-NULL: rows through the backend's audit ops */
  int64_t max_rows;
  int64_t max_age_s;
  size_t max_diff_bytes;
  unsigned since_prune;
  sk_bus_t *bus; /* every recorded row is also an "audit" event */
};

void ctl_audit_set_bus(ctl_audit_t *au, sk_bus_t *bus) {
  if (au) au->bus = bus;
}

/* The row as an "audit" event on the bus, keyed kind/namespace/name. In
 * control's sqlite store the event commits with the row. */
static int publish_row(ctl_audit_t *au, int64_t ts, const ctl_audit_entry_t *e, const char *diff) {
  const ctl_principal_t *p = e->principal;
  json_t *d = diff ? json_loads(diff, JSON_DECODE_ANY, NULL) : NULL;
  if (diff && !d) d = json_string(diff);
  json_t *ev = json_pack("{s:I, s:s?, s:s?, s:s?, s:s, s:s, s:s?, s:s?, s:I, s:i, s:o?, s:s?, s:s?}", "ts",
                         (json_int_t)ts, "user", p ? p->name : NULL, "via", p ? ctl_via_name(p->via) : NULL, "role",
                         p ? ctl_role_name(p->role) : NULL, "verb", e->verb, "kind", e->kind, "namespace", e->ns,
                         "name", e->name, "resourceVersion", (json_int_t)e->resource_version, "code", e->code,
                         "diff", d, "source", e->source, "message", e->message);
  if (!ev) return SK_EINVAL;
  char key[SK_BUS_KEY_MAX + 1];
  snprintf(key, sizeof key, "%.128s/%.253s/%.253s", e->kind, e->ns ? e->ns : "", e->name ? e->name : "");
  int64_t id = sk_bus_publish_json(au->bus, "audit", key, ev);
  json_decref(ev);
  return id < 0 ? (int)id : 0;
}

static const char *const schema[] = {
    "CREATE TABLE IF NOT EXISTS ctl_audit ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ts INTEGER NOT NULL,"          /* unix milliseconds */
    " user TEXT,"                   /* principal name; NULL = anonymous */
    " via TEXT,"                    /* token | mtls */
    " role TEXT,"
    " verb TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " ns TEXT,"
    " name TEXT,"
    " rv INTEGER,"                  /* resourceVersion after the change */
    " code INTEGER NOT NULL,"       /* HTTP status answered */
    " diff TEXT,"                   /* JSON: merge patch or whole object */
    " source TEXT,"                 /* peer address */
    " message TEXT)",
    "CREATE INDEX IF NOT EXISTS ctl_audit_ts ON ctl_audit(ts)",
    "CREATE INDEX IF NOT EXISTS ctl_audit_obj ON ctl_audit(kind, name)",
    "CREATE INDEX IF NOT EXISTS ctl_audit_user ON ctl_audit(user)",
};

int ctl_audit_open(const ctl_audit_opts_t *o, ctl_audit_t **out, char *err, size_t errlen) {
  *out = NULL;
  ctl_backend_t *be = o && o->backend && o->backend->ops->audit_add ? o->backend : NULL;
  if (!o || (!o->store && !be)) {
    if (err && errlen) snprintf(err, errlen, "audit: a store is required");
    return SK_EINVAL;
  }
  for (size_t i = 0; !be && i < sizeof schema / sizeof *schema; i++) {
    if (sk_store_exec(o->store, schema[i], NULL, 0) < 0) {
      if (err && errlen) snprintf(err, errlen, "audit: schema: %s", sk_store_errmsg(o->store));
      return SK_ESTORE;
    }
  }
  ctl_audit_t *au = sk_xcalloc(1, sizeof *au);
  au->store = be ? NULL : o->store;
  au->be = be;
  au->max_rows = o->max_rows > 0 ? o->max_rows : 100000;
  au->max_age_s = o->max_age_s > 0 ? o->max_age_s : o->max_age_s < 0 ? 0 : 30LL * 86400;
  au->max_diff_bytes = o->max_diff_bytes ? o->max_diff_bytes : 65536;
  *out = au;
  return 0;
}

void ctl_audit_free(ctl_audit_t *au) { free(au); }

static const char *bounded(const char *s, size_t max, char *tmp, size_t tmplen) {
  if (!s) return NULL;
  if (strlen(s) <= max) return s;
  snprintf(tmp, tmplen, "%.*s", (int)max, s);
  return tmp;
}

int ctl_audit_record(ctl_audit_t *au, const ctl_audit_entry_t *e) {
  if (!au || !e || !e->verb || !e->kind) return SK_EINVAL;
  int64_t ts = e->ts_ms ? e->ts_ms : ctl__now_ms();
  const ctl_principal_t *p = e->principal;
  char trunc[96];
  const char *diff = e->diff;
  if (diff && strlen(diff) > au->max_diff_bytes) {
    snprintf(trunc, sizeof trunc, "{\"truncated\":true,\"bytes\":%zu}", strlen(diff));
    diff = trunc;
  }
  char t1[260], t2[260], t3[260], t4[1028];
  int rc;
  if (au->be) {
    ctl_audit_row_t r = {.ts_ms = ts,
                         .user = p ? p->name : NULL,
                         .via = p ? ctl_via_name(p->via) : NULL,
                         .role = p ? ctl_role_name(p->role) : NULL,
                         .verb = e->verb,
                         .kind = bounded(e->kind, 128, t1, sizeof t1),
                         .ns = bounded(e->ns, 253, t2, sizeof t2),
                         .name = bounded(e->name, 253, t3, sizeof t3),
                         .rv = e->resource_version,
                         .code = e->code,
                         .diff = diff,
                         .source = e->source,
                         .message = bounded(e->message, 1024, t4, sizeof t4)};
    rc = au->be->ops->audit_add(au->be, &r);
  } else
  rc = sk_store_exec(
      au->store,
      "INSERT INTO ctl_audit(ts, user, via, role, verb, kind, ns, name, rv, code, diff, source,"
      " message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
      SK_SQL_ARGS(SK_SQL_INT(ts), SK_SQL_TEXT(p ? p->name : NULL),
                  SK_SQL_TEXT(p ? ctl_via_name(p->via) : NULL),
                  SK_SQL_TEXT(p ? ctl_role_name(p->role) : NULL), SK_SQL_TEXT(e->verb),
                  SK_SQL_TEXT(bounded(e->kind, 128, t1, sizeof t1)),
                  SK_SQL_TEXT(bounded(e->ns, 253, t2, sizeof t2)),
                  SK_SQL_TEXT(bounded(e->name, 253, t3, sizeof t3)),
                  e->resource_version ? SK_SQL_INT(e->resource_version) : SK_SQL_NULL,
                  SK_SQL_INT(e->code), SK_SQL_TEXT(diff), SK_SQL_TEXT(e->source),
                  SK_SQL_TEXT(bounded(e->message, 1024, t4, sizeof t4))));
  if (rc < 0) return rc;
  if (au->bus && (rc = publish_row(au, ts, e, diff)) < 0) return rc;
  if (++au->since_prune >= PRUNE_EVERY) {
    au->since_prune = 0;
    rc = ctl_audit_prune(au, ts);
    if (rc < 0) return rc;
  }
  return 0;
}

/* ---------------- diffs ---------------- */

static json_t *merge_diff(const json_t *o, const json_t *n) {
  json_t *patch = json_object();
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)o, k, v) {
    if (!json_object_get(n, k)) json_object_set_new(patch, k, json_null());
  }
  json_object_foreach((json_t *)n, k, v) {
    json_t *ov = json_object_get(o, k);
    if (!ov) {
      json_object_set(patch, k, v);
    } else if (json_is_object(ov) && json_is_object(v)) {
      json_t *sub = merge_diff(ov, v);
      if (json_object_size(sub)) json_object_set_new(patch, k, sub);
      else json_decref(sub);
    } else if (!json_equal(ov, v)) {
      json_object_set(patch, k, v);
    }
  }
  return patch;
}

int ctl_audit_merge_diff(const json_t *old_obj, const json_t *new_obj, json_t **out) {
  if (!out) return SK_EINVAL;
  if (json_is_object(old_obj) && json_is_object(new_obj)) {
    if (sk_json_depth(old_obj) > 128 || sk_json_depth(new_obj) > 128) return SK_ELIMIT;
    *out = merge_diff(old_obj, new_obj);
  } else {
    *out = new_obj ? json_deep_copy(new_obj) : json_null();
  }
  return *out ? 0 : SK_ENOMEM;
}

int ctl_audit_record_change(ctl_audit_t *au, const sk_http_req_t *req, const ctl_principal_t *p,
                            ctl_verb_t verb, const char *kind, const char *ns, const char *name,
                            int64_t resource_version, int code, const json_t *old_obj,
                            const json_t *new_obj) {
  json_t *d = NULL;
  int rc = 0;
  if (verb == CTL_VERB_CREATE && new_obj) d = json_deep_copy(new_obj);
  else if (verb == CTL_VERB_DELETE && old_obj) d = json_deep_copy(old_obj);
  else if (old_obj || new_obj) rc = ctl_audit_merge_diff(old_obj, new_obj, &d);
  if (rc < 0) return rc;
  sk_buf_t b;
  sk_buf_init(&b);
  if (d) sk_json_dump_buf(d, &b);
  ctl_audit_entry_t e = {
      .principal = p,
      .verb = ctl_verb_name(verb),
      .kind = kind,
      .ns = ns,
      .name = name,
      .resource_version = resource_version,
      .code = code,
      .diff = d ? sk_buf_cstr(&b) : NULL,
      .source = req ? req->peer_addr : NULL,
  };
  rc = ctl_audit_record(au, &e);
  sk_buf_done(&b);
  json_decref(d);
  return rc;
}

/* ---------------- retention ---------------- */

int ctl_audit_prune(ctl_audit_t *au, int64_t now_ms) {
  if (au->be)
    return au->be->ops->audit_prune(au->be, au->max_rows, au->max_age_s > 0 ? now_ms - au->max_age_s * 1000 : 0);
  int total = 0;
  int rc = sk_store_exec(au->store,
                         "DELETE FROM ctl_audit WHERE id <= (SELECT max(id) FROM ctl_audit) - ?1",
                         SK_SQL_ARGS(SK_SQL_INT(au->max_rows)));
  if (rc < 0) return rc;
  total += rc;
  if (au->max_age_s > 0) {
    rc = sk_store_exec(au->store, "DELETE FROM ctl_audit WHERE ts < ?1",
                       SK_SQL_ARGS(SK_SQL_INT(now_ms - au->max_age_s * 1000)));
    if (rc < 0) return rc;
    total += rc;
  }
  return total;
}

/* ---------------- queries ---------------- */

static json_t *text_or_null(sk_stmt_t *st, int col) {
  return sk_stmt_is_null(st, col) ? json_null() : json_string(sk_stmt_text(st, col));
}

static int query_row(sk_stmt_t *st, void *ud) {
  json_t *arr = ud;
  int64_t ts = sk_stmt_int64(st, 1);
  char tbuf[40];
  ctl__rfc3339(ts / 1000, (int)(ts % 1000), tbuf, sizeof tbuf);
  json_t *diff = json_null();
  if (!sk_stmt_is_null(st, 11)) {
    const char *d = sk_stmt_text(st, 11);
    json_t *v = json_loads(d, JSON_DECODE_ANY, NULL);
    diff = v ? v : json_string(d);
  }
  json_t *o = json_object();
  json_object_set_new(o, "id", json_integer(sk_stmt_int64(st, 0)));
  json_object_set_new(o, "time", json_string(tbuf));
  json_object_set_new(o, "ts", json_integer(ts));
  json_object_set_new(o, "user", text_or_null(st, 2));
  json_object_set_new(o, "via", text_or_null(st, 3));
  json_object_set_new(o, "role", text_or_null(st, 4));
  json_object_set_new(o, "verb", text_or_null(st, 5));
  json_object_set_new(o, "kind", text_or_null(st, 6));
  json_object_set_new(o, "namespace", text_or_null(st, 7));
  json_object_set_new(o, "name", text_or_null(st, 8));
  json_object_set_new(o, "resourceVersion",
                      sk_stmt_is_null(st, 9) ? json_null() : json_integer(sk_stmt_int64(st, 9)));
  json_object_set_new(o, "code", json_integer(sk_stmt_int64(st, 10)));
  json_object_set_new(o, "diff", diff);
  json_object_set_new(o, "source", text_or_null(st, 12));
  json_object_set_new(o, "message", text_or_null(st, 13));
  json_array_append_new(arr, o);
  return 0;
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

/* A backend's row as the same JSON object as query_row makes. */
static int query_be_row(const ctl_audit_row_t *r, void *ud) {
  json_t *arr = ud;
  char tbuf[40];
  ctl__rfc3339(r->ts_ms / 1000, (int)(r->ts_ms % 1000), tbuf, sizeof tbuf);
  json_t *diff = json_null();
  if (r->diff) {
    json_t *v = json_loads(r->diff, JSON_DECODE_ANY, NULL);
    diff = v ? v : json_string(r->diff);
  }
  json_t *o = json_object();
  json_object_set_new(o, "id", json_integer(r->id));
  json_object_set_new(o, "time", json_string(tbuf));
  json_object_set_new(o, "ts", json_integer(r->ts_ms));
  json_object_set_new(o, "user", str_or_null(r->user));
  json_object_set_new(o, "via", str_or_null(r->via));
  json_object_set_new(o, "role", str_or_null(r->role));
  json_object_set_new(o, "verb", str_or_null(r->verb));
  json_object_set_new(o, "kind", str_or_null(r->kind));
  json_object_set_new(o, "namespace", str_or_null(r->ns));
  json_object_set_new(o, "name", str_or_null(r->name));
  json_object_set_new(o, "resourceVersion", r->rv ? json_integer(r->rv) : json_null());
  json_object_set_new(o, "code", json_integer(r->code));
  json_object_set_new(o, "diff", diff);
  json_object_set_new(o, "source", str_or_null(r->source));
  json_object_set_new(o, "message", str_or_null(r->message));
  json_array_append_new(arr, o);
  return 0;
}

int ctl_audit_query(ctl_audit_t *au, const ctl_audit_filter_t *f, json_t **out) {
  if (!au || !out) return SK_EINVAL;
  ctl_audit_filter_t none = {0};
  if (!f) f = &none;
  int limit = f->limit <= 0 ? 100 : f->limit > 1000 ? 1000 : f->limit;
  json_t *arr = json_array();
  int rc;
  if (au->be) {
    ctl_audit_where_t w = {.kind = f->kind, .name = f->name, .ns = f->ns, .user = f->user, .verb = f->verb,
                           .since_ms = f->since_ms, .before_id = f->before_id, .limit = limit};
    rc = au->be->ops->audit_query(au->be, &w, query_be_row, arr);
  } else
  rc = sk_store_query(
      au->store,
      "SELECT id, ts, user, via, role, verb, kind, ns, name, rv, code, diff, source, message"
      " FROM ctl_audit WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR name = ?2)"
      " AND (?3 IS NULL OR ns = ?3) AND (?4 IS NULL OR user = ?4) AND (?5 IS NULL OR verb = ?5)"
      " AND ts >= ?6 AND (?7 = 0 OR id < ?7) ORDER BY id DESC LIMIT ?8",
      SK_SQL_ARGS(SK_SQL_TEXT(f->kind), SK_SQL_TEXT(f->name), SK_SQL_TEXT(f->ns),
                  SK_SQL_TEXT(f->user), SK_SQL_TEXT(f->verb), SK_SQL_INT(f->since_ms),
                  SK_SQL_INT(f->before_id), SK_SQL_INT(limit)),
      query_row, arr);
  if (rc < 0) {
    json_decref(arr);
    return rc;
  }
  *out = arr;
  return 0;
}

/* since: unix seconds, RFC 3339 (UTC "Z" or +hh:mm), or a duration back
 * from now ("15m"). */
static int parse_since(const char *s, int64_t *ms) {
  if (!s || !*s || strlen(s) > 40) return SK_EINVAL;
  int64_t v;
  size_t l = strlen(s);
  if (s[l - 1] >= '0' && s[l - 1] <= '9' && !strchr(s, '-') && !strchr(s, ':')) {
    if (ctl__parse_duration(s, &v) < 0) return SK_EINVAL;
    *ms = v * 1000; /* plain number: unix seconds */
    return 0;
  }
  if (ctl__parse_duration(s, &v) == 0) {
    *ms = ctl__now_ms() - v * 1000;
    return 0;
  }
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (!rest) return SK_EINVAL;
  int frac_ms = 0;
  if (*rest == '.') {
    rest++;
    int digits = 0;
    while (*rest >= '0' && *rest <= '9') {
      if (digits < 3) frac_ms = frac_ms * 10 + (*rest - '0');
      digits++;
      rest++;
    }
    if (!digits) return SK_EINVAL;
    for (; digits < 3; digits++) frac_ms *= 10;
  }
  int64_t off = 0;
  if (*rest == 'Z' || *rest == 'z') {
    rest++;
  } else if ((*rest == '+' || *rest == '-') && strlen(rest) == 6 && rest[3] == ':') {
    int hh = (rest[1] - '0') * 10 + (rest[2] - '0'), mm = (rest[4] - '0') * 10 + (rest[5] - '0');
    if (hh < 0 || hh > 23 || mm < 0 || mm > 59) return SK_EINVAL;
    off = (hh * 60 + mm) * 60 * (*rest == '+' ? 1 : -1);
    rest += 6;
  } else {
    return SK_EINVAL;
  }
  if (*rest) return SK_EINVAL;
  time_t t = timegm(&tm);
  if (t == (time_t)-1) return SK_EINVAL;
  *ms = ((int64_t)t - off) * 1000 + frac_ms;
  return 0;
}

int ctl_audit_http_route(ctl_audit_t *au, ctl_auth_t *auth, sk_http_req_t *req) {
  if (strcmp(req->path, "/api/v1/audit") != 0) return 0;
  if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
    ctl_http_error(req, 405, "audit: only GET /api/v1/audit");
    return 1;
  }
  if (ctl_auth_guard(auth, au, req, CTL_VERB_LIST, CTL_KIND_AUDIT, NULL, NULL, NULL) < 0) return 1;
  ctl_audit_filter_t f = {0};
  const char *q = req->query;
  f.kind = ctl__query_get(q, "kind", req->pool);
  f.name = ctl__query_get(q, "name", req->pool);
  f.ns = ctl__query_get(q, "namespace", req->pool);
  f.user = ctl__query_get(q, "user", req->pool);
  f.verb = ctl__query_get(q, "verb", req->pool);
  const char *since = ctl__query_get(q, "since", req->pool);
  const char *limit = ctl__query_get(q, "limit", req->pool);
  const char *before = ctl__query_get(q, "before", req->pool);
  if (since && parse_since(since, &f.since_ms) < 0) {
    ctl_http_error(req, 400, "since: unix seconds, RFC 3339 time or a duration such as 15m");
    return 1;
  }
  if (limit) {
    char *end;
    long v = strtol(limit, &end, 10);
    if (*end || end == limit || v < 1 || v > 1000) {
      ctl_http_error(req, 400, "limit: 1..1000");
      return 1;
    }
    f.limit = (int)v;
  }
  if (before) {
    char *end;
    long long v = strtoll(before, &end, 10);
    if (*end || end == before || v < 1) {
      ctl_http_error(req, 400, "before: a positive audit id");
      return 1;
    }
    f.before_id = v;
  }
  json_t *items = NULL;
  if (ctl_audit_query(au, &f, &items) < 0) {
    ctl_http_error(req, 500, "cannot read the audit log");
    return 1;
  }
  int want = f.limit ? f.limit : 100;
  json_t *next = json_null();
  size_t n = json_array_size(items);
  if (n == (size_t)want && n > 0)
    next = json_integer(sk_json_get_int(json_array_get(items, n - 1), "id", 0));
  json_t *o = json_pack("{s:o,s:o}", "items", items, "next", next);
  ctl__respond_json(req, 200, o);
  json_decref(o);
  return 1;
}
