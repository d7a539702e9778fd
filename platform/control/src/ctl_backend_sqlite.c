/* The sqlite backend of the resource store, on the runtime's sk_store (WAL,
 * synchronous=FULL, migrations, cached prepared statements). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_backend.h"
#include "skiff/err.h"
#include "skiff/mem.h"
#include "skiff/store.h"

typedef struct sqlite_backend {
  ctl_backend_t base;
  sk_store_t *st;
} sqlite_backend_t;

static const char *const migrations[] = {
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT INTO meta (key, value) VALUES ('rv', 0), ('compacted_rv', 0);"
    "CREATE TABLE objects ("
    "  kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,"
    "  uid TEXT NOT NULL, rv INTEGER NOT NULL, generation INTEGER NOT NULL,"
    "  labels TEXT NOT NULL, body TEXT NOT NULL,"
    "  created_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
    "  PRIMARY KEY (kind, namespace, name));"
    "CREATE TABLE events ("
    "  rv INTEGER PRIMARY KEY, type TEXT NOT NULL, kind TEXT NOT NULL,"
    "  namespace TEXT NOT NULL, name TEXT NOT NULL, object TEXT NOT NULL);"
    "CREATE INDEX objects_uid ON objects (uid);",
};

#define SB(b) ((sqlite_backend_t *)(b))

typedef struct tx_ctx {
  ctl_backend_t *b;
  int (*fn)(ctl_backend_t *b, void *ud);
  void *ud;
} tx_ctx_t;

static int tx_tramp(sk_store_t *s, void *ud) {
  (void)s;
  tx_ctx_t *c = ud;
  return c->fn(c->b, c->ud);
}

static int sq_tx(ctl_backend_t *b, int (*fn)(ctl_backend_t *b, void *ud), void *ud) {
  tx_ctx_t c = {b, fn, ud};
  return sk_store_tx(SB(b)->st, tx_tramp, &c);
}

static int sq_next_rv(ctl_backend_t *b, int64_t *rv) {
  return sk_store_query_int64(SB(b)->st, "UPDATE meta SET value = value + 1 WHERE key = 'rv' RETURNING value",
                              NULL, 0, rv);
}

static int sq_meta_get(ctl_backend_t *b, const char *key, int64_t *val) {
  return sk_store_query_int64(SB(b)->st, "SELECT value FROM meta WHERE key = ?", SK_SQL_ARGS(SK_SQL_TEXT(key)), val);
}

static int sq_meta_set(ctl_backend_t *b, const char *key, int64_t val) {
  int rc = sk_store_exec(SB(b)->st, "INSERT INTO meta (key, value) VALUES (?1, ?2) "
                                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         SK_SQL_ARGS(SK_SQL_TEXT(key), SK_SQL_INT(val)));
  return rc < 0 ? rc : 0;
}

#define ROW_COLS "kind, namespace, name, uid, rv, generation, labels, body, created_at, updated_at"

static void fill_row(sk_stmt_t *st, ctl_row_t *r) {
  r->kind = sk_stmt_text(st, 0);
  r->ns = sk_stmt_text(st, 1);
  r->name = sk_stmt_text(st, 2);
  r->uid = sk_stmt_text(st, 3);
  r->rv = sk_stmt_int64(st, 4);
  r->generation = sk_stmt_int64(st, 5);
  r->labels = sk_stmt_text(st, 6);
  r->body = sk_stmt_text(st, 7);
  r->created_at = sk_stmt_text(st, 8);
  r->updated_at = sk_stmt_text(st, 9);
}

typedef struct row_ctx {
  ctl_row_fn fn;
  void *ud;
} row_ctx_t;

static int row_tramp(sk_stmt_t *st, void *ud) {
  row_ctx_t *c = ud;
  ctl_row_t r;
  fill_row(st, &r);
  return c->fn(&r, c->ud);
}

static int sq_get(ctl_backend_t *b, const char *kind, const char *ns, const char *name, ctl_row_fn fn, void *ud) {
  row_ctx_t c = {fn, ud};
  int rc = sk_store_query(SB(b)->st,
                          "SELECT " ROW_COLS " FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                          SK_SQL_ARGS(SK_SQL_TEXT(kind), SK_SQL_TEXT(ns), SK_SQL_TEXT(name)), row_tramp, &c);
  if (rc == 0) return SK_ENOTFOUND;
  return rc;
}

static int sq_put(ctl_backend_t *b, const ctl_row_t *r, int insert) {
  sk_store_t *st = SB(b)->st;
  int rc;
  if (insert) {
    rc = sk_store_exec(st,
                       "INSERT INTO objects (" ROW_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                       SK_SQL_ARGS(SK_SQL_TEXT(r->kind), SK_SQL_TEXT(r->ns), SK_SQL_TEXT(r->name),
                                   SK_SQL_TEXT(r->uid), SK_SQL_INT(r->rv), SK_SQL_INT(r->generation),
                                   SK_SQL_TEXT(r->labels), SK_SQL_TEXT(r->body), SK_SQL_TEXT(r->created_at),
                                   SK_SQL_TEXT(r->updated_at)));
    if (rc < 0 && sk_store_failed_constraint(st)) return SK_EEXIST;
    return rc < 0 ? rc : 0;
  }
  rc = sk_store_exec(st,
                     "UPDATE objects SET uid = ?4, rv = ?5, generation = ?6, labels = ?7, body = ?8, "
                     "updated_at = ?10 WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                     SK_SQL_ARGS(SK_SQL_TEXT(r->kind), SK_SQL_TEXT(r->ns), SK_SQL_TEXT(r->name),
                                 SK_SQL_TEXT(r->uid), SK_SQL_INT(r->rv), SK_SQL_INT(r->generation),
                                 SK_SQL_TEXT(r->labels), SK_SQL_TEXT(r->body), SK_SQL_TEXT(r->created_at),
                                 SK_SQL_TEXT(r->updated_at)));
  if (rc == 0) return SK_ENOTFOUND;
  return rc < 0 ? rc : 0;
}

static int sq_del(ctl_backend_t *b, const char *kind, const char *ns, const char *name) {
  int rc = sk_store_exec(SB(b)->st, "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                         SK_SQL_ARGS(SK_SQL_TEXT(kind), SK_SQL_TEXT(ns), SK_SQL_TEXT(name)));
  if (rc == 0) return SK_ENOTFOUND;
  return rc < 0 ? rc : 0;
}

static int sq_list(ctl_backend_t *b, const char *kind, const char *ns, const char *after_ns, const char *after_name,
                   ctl_row_fn fn, void *ud) {
  row_ctx_t c = {fn, ud};
  /* NULL parameters bind SQL NULL: "?2 IS NULL" switches a condition off. */
  int rc = sk_store_query(SB(b)->st,
                          "SELECT " ROW_COLS " FROM objects WHERE kind = ?1 "
                          "AND (?2 IS NULL OR namespace = ?2) "
                          "AND (?3 IS NULL OR namespace > ?3 OR (namespace = ?3 AND name > ?4)) "
                          "ORDER BY namespace, name",
                          SK_SQL_ARGS(SK_SQL_TEXT(kind), SK_SQL_TEXT(ns), SK_SQL_TEXT(after_ns),
                                      SK_SQL_TEXT(after_name ? after_name : "")),
                          row_tramp, &c);
  return rc;
}

static int sq_event_add(ctl_backend_t *b, const ctl_event_row_t *ev) {
  int rc = sk_store_exec(SB(b)->st,
                         "INSERT INTO events (rv, type, kind, namespace, name, object) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                         SK_SQL_ARGS(SK_SQL_INT(ev->rv), SK_SQL_TEXT(ev->type), SK_SQL_TEXT(ev->kind),
                                     SK_SQL_TEXT(ev->ns), SK_SQL_TEXT(ev->name), SK_SQL_TEXT(ev->object)));
  return rc < 0 ? rc : 0;
}

typedef struct ev_ctx {
  ctl_event_fn fn;
  void *ud;
} ev_ctx_t;

static int ev_tramp(sk_stmt_t *st, void *ud) {
  ev_ctx_t *c = ud;
  ctl_event_row_t e = {.rv = sk_stmt_int64(st, 0),
                       .type = sk_stmt_text(st, 1),
                       .kind = sk_stmt_text(st, 2),
                       .ns = sk_stmt_text(st, 3),
                       .name = sk_stmt_text(st, 4),
                       .object = sk_stmt_text(st, 5)};
  return c->fn(&e, c->ud);
}

static int sq_events_since(ctl_backend_t *b, int64_t after, ctl_event_fn fn, void *ud) {
  ev_ctx_t c = {fn, ud};
  return sk_store_query(SB(b)->st,
                        "SELECT rv, type, kind, namespace, name, object FROM events WHERE rv > ?1 ORDER BY rv",
                        SK_SQL_ARGS(SK_SQL_INT(after)), ev_tramp, &c);
}

static int sq_events_trim(ctl_backend_t *b, int64_t upto) {
  return sk_store_exec(SB(b)->st, "DELETE FROM events WHERE rv <= ?1", SK_SQL_ARGS(SK_SQL_INT(upto)));
}

static const char *sq_errmsg(ctl_backend_t *b) { return sk_store_errmsg(SB(b)->st); }

static sk_store_t *sq_sqlite(ctl_backend_t *b) { return SB(b)->st; }

static void sq_close(ctl_backend_t *b) {
  if (!b) return;
  sk_store_close(SB(b)->st);
  free(b);
}

static const ctl_backend_ops_t sqlite_ops = {
    .name = "sqlite",
    .tx = sq_tx,
    .next_rv = sq_next_rv,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .get = sq_get,
    .put = sq_put,
    .del = sq_del,
    .list = sq_list,
    .event_add = sq_event_add,
    .events_since = sq_events_since,
    .events_trim = sq_events_trim,
    .errmsg = sq_errmsg,
    .sqlite = sq_sqlite,
    .close = sq_close,
};

int ctl_backend_sqlite_open(const char *path, int durable, ctl_backend_t **out, char *err, size_t errlen) {
  *out = NULL;
  sk_store_opts_t o = {.path = path,
                       .non_durable = !durable,
                       .migrations = migrations,
                       .nmigrations = sizeof migrations / sizeof migrations[0]};
  sk_store_t *st = NULL;
  int rc = sk_store_open(&o, &st);
  if (rc < 0) {
    if (err) snprintf(err, errlen, "%s: %s", path, sk_store_open_errmsg());
    return rc;
  }
  sqlite_backend_t *b = sk_xcalloc(1, sizeof *b);
  b->base.ops = &sqlite_ops;
  b->st = st;
  *out = &b->base;
  return 0;
}
