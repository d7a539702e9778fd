/* store.c - sqlite3 helper: durable open, migrations, cached prepared
 * statements, typed binding and transactions. */
#include "skiff/store.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"

#define SK_STORE_ERR_LEN 512

struct sk_stmt {
  sqlite3_stmt *st;
  sk_store_t *store;
  char *sql;
  uint64_t hash;
  int in_use;
  int cached;
  struct sk_stmt *prev, *next; /* cache list, most recently used first */
};

struct sk_store {
  sqlite3 *db;
  struct sk_stmt *head, *tail;
  size_t ncache, cache_max;
  int tx_depth;
  int errcode;
  char err[SK_STORE_ERR_LEN];
};

static _Thread_local char open_err[SK_STORE_ERR_LEN];

const char *sk_store_open_errmsg(void) { return open_err; }
const char *sk_store_errmsg(const sk_store_t *s) { return s ? s->err : ""; }
int sk_store_errcode(const sk_store_t *s) { return s ? s->errcode : 0; }
int sk_store_failed_constraint(const sk_store_t *s) {
  return s && (s->errcode & 0xff) == SQLITE_CONSTRAINT;
}
struct sqlite3 *sk_store_db(sk_store_t *s) { return s ? s->db : NULL; }
int64_t sk_store_last_insert_id(sk_store_t *s) { return s ? sqlite3_last_insert_rowid(s->db) : 0; }

static void set_err(sk_store_t *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(sk_store_t *s, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, sizeof s->err, fmt, ap);
  va_end(ap);
  s->errcode = code;
}

/* Records sqlite's view of the failure and returns SK_ESTORE. */
static int db_fail(sk_store_t *s, const char *what) {
  int code = sqlite3_extended_errcode(s->db);
  if (what)
    set_err(s, code, "%s: %s", what, sqlite3_errmsg(s->db));
  else
    set_err(s, code, "%s", sqlite3_errmsg(s->db));
  return SK_ESTORE;
}

/* ---- statement cache ---- */

static uint64_t sql_hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ULL;
  }
  return h;
}

static void list_unlink(sk_store_t *s, struct sk_stmt *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    s->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    s->tail = e->prev;
  e->prev = e->next = NULL;
}

static void list_push_front(sk_store_t *s, struct sk_stmt *e) {
  e->prev = NULL;
  e->next = s->head;
  if (s->head) s->head->prev = e;
  s->head = e;
  if (!s->tail) s->tail = e;
}

static void stmt_destroy(struct sk_stmt *e) {
  if (!e) return;
  sqlite3_finalize(e->st);
  free(e->sql);
  free(e);
}

static void cache_evict(sk_store_t *s) {
  struct sk_stmt *e = s->tail;
  while (s->ncache > s->cache_max && e) {
    struct sk_stmt *prev = e->prev;
    if (!e->in_use) {
      list_unlink(s, e);
      s->ncache--;
      stmt_destroy(e);
    }
    e = prev;
  }
}

static int only_space(const char *p) {
  for (; p && *p; p++)
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';') return 0;
  return 1;
}

int sk_store_prepare(sk_store_t *s, const char *sql, sk_stmt_t **out) {
  if (!out) return SK_EINVAL;
  *out = NULL;
  if (!s || !sql) return SK_EINVAL;
  uint64_t h = sql_hash(sql);
  int busy = 0;
  for (struct sk_stmt *e = s->head; e; e = e->next) {
    if (e->hash != h || strcmp(e->sql, sql) != 0) continue;
    if (e->in_use) {
      busy = 1;
      break;
    }
    list_unlink(s, e);
    list_push_front(s, e);
    e->in_use = 1;
    *out = e;
    return 0;
  }
  sqlite3_stmt *st = NULL;
  const char *tail = NULL;
  int rc = sqlite3_prepare_v3(s->db, sql, -1, busy ? 0 : SQLITE_PREPARE_PERSISTENT, &st, &tail);
  if (rc != SQLITE_OK) return db_fail(s, "prepare");
  if (!st) {
    set_err(s, SQLITE_MISUSE, "prepare: empty SQL");
    return SK_EINVAL;
  }
  if (!only_space(tail)) {
    sqlite3_finalize(st);
    set_err(s, SQLITE_MISUSE, "prepare: more than one statement in \"%.80s\"", sql);
    return SK_EINVAL;
  }
  struct sk_stmt *e = sk_xcalloc(1, sizeof *e);
  e->st = st;
  e->store = s;
  e->sql = sk_xstrdup(sql);
  e->hash = h;
  e->in_use = 1;
  e->cached = !busy;
  if (e->cached) {
    list_push_front(s, e);
    s->ncache++;
    cache_evict(s);
  }
  *out = e;
  return 0;
}

void sk_stmt_done(sk_stmt_t *st) {
  if (!st) return;
  sqlite3_reset(st->st);
  sqlite3_clear_bindings(st->st);
  st->in_use = 0;
  if (!st->cached) {
    stmt_destroy(st);
    return;
  }
  cache_evict(st->store);
}

/* ---- binding and columns ---- */

static int bind_rc(sk_stmt_t *st, int rc) {
  if (rc == SQLITE_OK) return 0;
  if (rc == SQLITE_RANGE) {
    set_err(st->store, rc, "bind: parameter index out of range");
    return SK_EINVAL;
  }
  return db_fail(st->store, "bind");
}

int sk_stmt_bind_int64(sk_stmt_t *st, int idx, int64_t v) {
  if (!st) return SK_EINVAL;
  return bind_rc(st, sqlite3_bind_int64(st->st, idx, v));
}

int sk_stmt_bind_double(sk_stmt_t *st, int idx, double v) {
  if (!st) return SK_EINVAL;
  return bind_rc(st, sqlite3_bind_double(st->st, idx, v));
}

int sk_stmt_bind_text(sk_stmt_t *st, int idx, const char *v, int64_t len) {
  if (!st) return SK_EINVAL;
  if (!v) return bind_rc(st, sqlite3_bind_null(st->st, idx));
  if (len < 0) len = (int64_t)strlen(v);
  return bind_rc(st, sqlite3_bind_text64(st->st, idx, v, (sqlite3_uint64)len, SQLITE_TRANSIENT,
                                         SQLITE_UTF8));
}

int sk_stmt_bind_blob(sk_stmt_t *st, int idx, const void *v, size_t len) {
  if (!st) return SK_EINVAL;
  if (!v && len == 0) v = "";
  if (!v) return SK_EINVAL;
  return bind_rc(st, sqlite3_bind_blob64(st->st, idx, v, (sqlite3_uint64)len, SQLITE_TRANSIENT));
}

int sk_stmt_bind_null(sk_stmt_t *st, int idx) {
  if (!st) return SK_EINVAL;
  return bind_rc(st, sqlite3_bind_null(st->st, idx));
}

int sk_stmt_bind(sk_stmt_t *st, const sk_sql_arg_t *args, size_t n) {
  if (!st || (n && !args)) return SK_EINVAL;
  if ((int)n != sqlite3_bind_parameter_count(st->st)) {
    set_err(st->store, SQLITE_RANGE, "bind: statement takes %d parameters, %zu given",
            sqlite3_bind_parameter_count(st->st), n);
    return SK_EINVAL;
  }
  for (size_t i = 0; i < n; i++) {
    int idx = (int)i + 1, rc;
    const sk_sql_arg_t *a = &args[i];
    switch (a->type) {
    case SK_SQL_T_NULL: rc = sk_stmt_bind_null(st, idx); break;
    case SK_SQL_T_INT64: rc = sk_stmt_bind_int64(st, idx, a->i); break;
    case SK_SQL_T_DOUBLE: rc = sk_stmt_bind_double(st, idx, a->d); break;
    case SK_SQL_T_TEXT: rc = sk_stmt_bind_text(st, idx, a->p, a->n); break;
    case SK_SQL_T_BLOB:
      if (a->n < 0) return SK_EINVAL;
      rc = sk_stmt_bind_blob(st, idx, a->p, (size_t)a->n);
      break;
    default: rc = SK_EINVAL;
    }
    if (rc < 0) return rc;
  }
  return 0;
}

int sk_stmt_step(sk_stmt_t *st) {
  if (!st) return SK_EINVAL;
  int rc = sqlite3_step(st->st);
  if (rc == SQLITE_ROW) return 1;
  if (rc == SQLITE_DONE) return 0;
  return db_fail(st->store, NULL);
}

int sk_stmt_column_count(sk_stmt_t *st) { return st ? sqlite3_column_count(st->st) : 0; }
int sk_stmt_is_null(sk_stmt_t *st, int col) {
  return !st || sqlite3_column_type(st->st, col) == SQLITE_NULL;
}
int64_t sk_stmt_int64(sk_stmt_t *st, int col) { return st ? sqlite3_column_int64(st->st, col) : 0; }
double sk_stmt_double(sk_stmt_t *st, int col) { return st ? sqlite3_column_double(st->st, col) : 0; }

const char *sk_stmt_text(sk_stmt_t *st, int col) {
  const unsigned char *t = st ? sqlite3_column_text(st->st, col) : NULL;
  return t ? (const char *)t : "";
}

const void *sk_stmt_blob(sk_stmt_t *st, int col, size_t *len) {
  if (!st) {
    if (len) *len = 0;
    return NULL;
  }
  const void *p = sqlite3_column_blob(st->st, col);
  if (len) *len = (size_t)sqlite3_column_bytes(st->st, col);
  return p;
}

/* ---- one-call helpers ---- */

int sk_store_exec(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs) {
  sk_stmt_t *st;
  int rc = sk_store_prepare(s, sql, &st);
  if (rc < 0) return rc;
  if ((rc = sk_stmt_bind(st, args, nargs)) < 0) goto out;
  /* sqlite3_changes() keeps the count of the last INSERT/UPDATE/DELETE
   * across other statements; the total tells whether this one changed any. */
  int64_t before = sqlite3_total_changes64(s->db);
  while ((rc = sk_stmt_step(st)) == 1) {
  }
  if (rc == 0) rc = sqlite3_total_changes64(s->db) == before ? 0 : sqlite3_changes(s->db);
out:
  sk_stmt_done(st);
  return rc;
}

int sk_store_query(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs,
                   sk_store_row_fn fn, void *ud) {
  sk_stmt_t *st;
  int rc = sk_store_prepare(s, sql, &st);
  if (rc < 0) return rc;
  int rows = 0;
  if ((rc = sk_stmt_bind(st, args, nargs)) < 0) goto out;
  while ((rc = sk_stmt_step(st)) == 1) {
    rows++;
    if (fn) {
      int r = fn(st, ud);
      if (r != 0) {
        rc = r;
        goto out;
      }
    }
  }
  if (rc == 0) rc = rows;
out:
  sk_stmt_done(st);
  return rc;
}

int sk_store_query_int64(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs,
                         int64_t *out) {
  sk_stmt_t *st;
  int rc = sk_store_prepare(s, sql, &st);
  if (rc < 0) return rc;
  if ((rc = sk_stmt_bind(st, args, nargs)) < 0) goto out;
  rc = sk_stmt_step(st);
  if (rc == 1) {
    if (out) *out = sk_stmt_int64(st, 0);
    rc = 0;
  } else if (rc == 0) {
    rc = SK_ENOTFOUND;
  }
out:
  sk_stmt_done(st);
  return rc;
}

int sk_store_query_text(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs,
                        sk_buf_t *out) {
  sk_stmt_t *st;
  int rc = sk_store_prepare(s, sql, &st);
  if (rc < 0) return rc;
  if ((rc = sk_stmt_bind(st, args, nargs)) < 0) goto out;
  rc = sk_stmt_step(st);
  if (rc == 1) {
    if (out) {
      const unsigned char *t = sqlite3_column_text(st->st, 0);
      int n = sqlite3_column_bytes(st->st, 0);
      if (t) sk_buf_append(out, t, (size_t)n);
      sk_buf_cstr(out);
    }
    rc = 0;
  } else if (rc == 0) {
    rc = SK_ENOTFOUND;
  }
out:
  sk_stmt_done(st);
  return rc;
}

/* ---- transactions ---- */

int sk_store_tx(sk_store_t *s, sk_store_tx_fn fn, void *ud) {
  if (!s || !fn) return SK_EINVAL;
  int nested = s->tx_depth > 0 || !sqlite3_get_autocommit(s->db);
  int rc = sk_store_exec(s, nested ? "SAVEPOINT sk_tx" : "BEGIN IMMEDIATE", NULL, 0);
  if (rc < 0) return rc;
  s->tx_depth++;
  int r = fn(s, ud);
  s->tx_depth--;
  if (r >= 0) {
    rc = sk_store_exec(s, nested ? "RELEASE sk_tx" : "COMMIT", NULL, 0);
    if (rc >= 0) return r;
    r = rc;
  }
  /* Roll back, keeping the message of the failure that caused it. */
  char saved[SK_STORE_ERR_LEN];
  int saved_code = s->errcode;
  memcpy(saved, s->err, sizeof saved);
  if (nested) {
    sk_store_exec(s, "ROLLBACK TO sk_tx", NULL, 0);
    sk_store_exec(s, "RELEASE sk_tx", NULL, 0);
  } else if (!sqlite3_get_autocommit(s->db)) {
    sk_store_exec(s, "ROLLBACK", NULL, 0);
  }
  memcpy(s->err, saved, sizeof saved);
  s->errcode = saved_code;
  return r;
}

/* ---- open, pragmas, migrations ---- */

/* Runs a script of several statements (migration text; no values). */
static int exec_script(sk_store_t *s, const char *sql) {
  const char *p = sql;
  while (p && *p) {
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    if (sqlite3_prepare_v2(s->db, p, -1, &st, &tail) != SQLITE_OK) return db_fail(s, NULL);
    if (!st) break; /* only whitespace or comments left */
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) {
      db_fail(s, NULL);
      sqlite3_finalize(st);
      return SK_ESTORE;
    }
    sqlite3_finalize(st);
    p = tail;
  }
  return 0;
}

int sk_store_schema_version(sk_store_t *s) {
  int64_t v = 0;
  int rc = sk_store_query_int64(s, "PRAGMA user_version", NULL, 0, &v);
  return rc < 0 ? rc : (int)v;
}

static int migrate(sk_store_t *s, const sk_store_opts_t *o) {
  int v = sk_store_schema_version(s);
  if (v < 0) return v;
  if ((size_t)v > o->nmigrations) {
    set_err(s, 0, "database schema version %d is newer than this build knows (%zu migrations)", v,
            o->nmigrations);
    return SK_ESTORE;
  }
  if ((size_t)v == o->nmigrations) return 0;
  if (o->readonly) {
    set_err(s, 0, "read-only database at schema version %d needs %zu migrations", v,
            o->nmigrations);
    return SK_ESTORE;
  }
  for (;;) {
    int rc = sk_store_exec(s, "BEGIN IMMEDIATE", NULL, 0);
    if (rc < 0) return rc;
    /* re-read inside the write lock: another process may have migrated */
    v = sk_store_schema_version(s);
    if (v < 0 || (size_t)v >= o->nmigrations) {
      sk_store_exec(s, "COMMIT", NULL, 0);
      return v < 0 ? v : 0;
    }
    const char *sql = o->migrations[v];
    rc = sql ? exec_script(s, sql) : SK_EINVAL;
    if (rc == 0) {
      char pragma[64]; /* an integer we count, never a caller's value */
      snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
      rc = exec_script(s, pragma);
    }
    if (rc == 0) rc = sk_store_exec(s, "COMMIT", NULL, 0);
    if (rc < 0) {
      char why[SK_STORE_ERR_LEN];
      int code = s->errcode;
      snprintf(why, sizeof why, "%s", sql ? s->err : "NULL migration text");
      if (!sqlite3_get_autocommit(s->db)) sk_store_exec(s, "ROLLBACK", NULL, 0);
      set_err(s, code, "migration %d (to schema version %d) failed: %s", v, v + 1, why);
      return SK_ESTORE;
    }
  }
}

static int pragma_text(sk_store_t *s, const char *sql, char *out, size_t outlen) {
  sk_buf_t b;
  sk_buf_init(&b);
  int rc = sk_store_query_text(s, sql, NULL, 0, &b);
  if (rc == 0) snprintf(out, outlen, "%s", sk_buf_cstr(&b));
  sk_buf_done(&b);
  return rc;
}

int sk_store_open(const sk_store_opts_t *o, sk_store_t **out) {
  if (!out) return SK_EINVAL;
  *out = NULL;
  open_err[0] = 0;
  if (!o || !o->path || !*o->path || (o->nmigrations && !o->migrations)) {
    snprintf(open_err, sizeof open_err, "store: missing path or migrations");
    return SK_EINVAL;
  }
  sk_store_t *s = sk_xcalloc(1, sizeof *s);
  s->cache_max = o->stmt_cache_max ? o->stmt_cache_max : 64;
  int flags = o->readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  int rc;
  if (sqlite3_open_v2(o->path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    rc = SK_ESTORE;
    snprintf(open_err, sizeof open_err, "open %.150s: %.350s", o->path,
             s->db ? sqlite3_errmsg(s->db) : "out of memory");
    goto out;
  }
  sqlite3_extended_result_codes(s->db, 1);
  int busy_ms = o->busy_timeout_ms > 0 ? o->busy_timeout_ms : 5000;
  sqlite3_busy_timeout(s->db, busy_ms);

  char mode[32] = "";
  if (!o->readonly) {
    /* Switching to WAL needs an exclusive lock, and sqlite answers BUSY
     * without calling the busy handler when it would deadlock; several
     * processes opening a new database at once hit that, so retry here. */
    for (int waited = 0;; waited += 10) {
      rc = pragma_text(s, "PRAGMA journal_mode=WAL", mode, sizeof mode);
      if (rc == 0 || (s->errcode & 0xff) != SQLITE_BUSY || waited >= busy_ms) break;
      sqlite3_sleep(10);
    }
    if (rc < 0) goto fail;
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
      set_err(s, 0, "journal_mode=WAL refused (got %s)", mode);
      rc = SK_ESTORE;
      goto fail;
    }
  }
  if ((rc = exec_script(s, o->non_durable ? "PRAGMA synchronous=NORMAL"
                                          : "PRAGMA synchronous=FULL")) < 0 ||
      (rc = exec_script(s, "PRAGMA foreign_keys=ON")) < 0)
    goto fail;
  int64_t fk = 0;
  if ((rc = sk_store_query_int64(s, "PRAGMA foreign_keys", NULL, 0, &fk)) < 0) goto fail;
  if (fk != 1) {
    set_err(s, 0, "foreign keys are not supported by this sqlite build");
    rc = SK_ESTORE;
    goto fail;
  }
  if ((rc = migrate(s, o)) < 0) goto fail;
  *out = s;
  return 0;
fail:
  snprintf(open_err, sizeof open_err, "%.150s: %.330s (sqlite code %d)", o->path, s->err, s->errcode);
out:
  sk_store_close(s);
  return rc;
}

void sk_store_close(sk_store_t *s) {
  if (!s) return;
  struct sk_stmt *e = s->head;
  while (e) {
    struct sk_stmt *n = e->next;
    stmt_destroy(e); /* statements still handed out are the caller's bug */
    e = n;
  }
  if (s->db) sqlite3_close_v2(s->db);
  free(s);
}
