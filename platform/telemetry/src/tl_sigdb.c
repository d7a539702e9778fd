/* skiff-telemetry: the sqlite store for spans and log lines.
 *
 * Two connections on one WAL database: the writer, used only by the serial
 * ingest worker (one transaction per request, synchronous=FULL so a commit
 * is on disk), and the reader, used by query handlers on the loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"
#include "tl_sigdb_int.h"

/* Migration 1 is the first schema; 2 moved spans from a WITHOUT ROWID table
 * keyed by (trace_id, span_id), whole rows in trace id order, to a rowid
 * table (rows appended in arrival order, whatever the ids look like) with a
 * unique index on the ids, and dropped the (service, start_ns) index no
 * query used: one b-tree fewer per span, and only a small index entry goes
 * where a random trace id puts it. An old database is migrated in place
 * when it is opened (one transaction, spans copied in the old table's
 * order: a sequential read). */
static const char *const migrations[] = {
    "CREATE TABLE spans(trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT NOT NULL DEFAULT '',"
    " service TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL DEFAULT 0,"
    " start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
    " status_msg TEXT, trace_state TEXT, scope_name TEXT, scope_version TEXT, attrs TEXT, resource TEXT,"
    " events TEXT, links TEXT, PRIMARY KEY(trace_id, span_id)) WITHOUT ROWID;"
    "CREATE INDEX spans_start ON spans(start_ns);"
    "CREATE INDEX spans_svc ON spans(service, start_ns);"
    "CREATE TABLE streams(id INTEGER PRIMARY KEY, labels TEXT NOT NULL UNIQUE);"
    "CREATE TABLE logs(id INTEGER PRIMARY KEY, stream INTEGER NOT NULL, ts_ns INTEGER NOT NULL,"
    " observed_ns INTEGER, severity INTEGER, severity_text TEXT, body TEXT NOT NULL, trace_id TEXT,"
    " span_id TEXT, attrs TEXT);"
    "CREATE INDEX logs_ts ON logs(ts_ns);"
    "CREATE INDEX logs_stream_ts ON logs(stream, ts_ns);"
    "CREATE INDEX logs_trace ON logs(trace_id) WHERE trace_id IS NOT NULL;",

    "CREATE TABLE spans_v2(id INTEGER PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT NOT NULL,"
    " parent_id TEXT NOT NULL DEFAULT '', service TEXT NOT NULL, name TEXT NOT NULL,"
    " kind INTEGER NOT NULL DEFAULT 0, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,"
    " status INTEGER NOT NULL DEFAULT 0, status_msg TEXT, trace_state TEXT, scope_name TEXT,"
    " scope_version TEXT, attrs TEXT, resource TEXT, events TEXT, links TEXT);"
    "INSERT INTO spans_v2(trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns, status,"
    " status_msg, trace_state, scope_name, scope_version, attrs, resource, events, links)"
    " SELECT trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns, status, status_msg,"
    " trace_state, scope_name, scope_version, attrs, resource, events, links FROM spans;"
    "DROP TABLE spans;"
    "ALTER TABLE spans_v2 RENAME TO spans;"
    "CREATE UNIQUE INDEX spans_id ON spans(trace_id, span_id);"
    "CREATE INDEX spans_start ON spans(start_ns);",
};

int tl_sigdb_open(const char *path, int no_sync, tl_sigdb_t **out, char *err, size_t errlen) {
  tl_sigdb_t *db = sk_xcalloc(1, sizeof *db);
  db->path = sk_xstrdup(path);
  sk_store_opts_t o = {.path = path, .non_durable = no_sync, .migrations = migrations,
                        .nmigrations = sizeof migrations / sizeof migrations[0]};
  int rc = sk_store_open(&o, &db->w);
  if (rc >= 0) rc = sk_store_open(&o, &db->r);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", path, sk_store_open_errmsg());
    tl_sigdb_close(db);
    return rc;
  }
  *out = db;
  return 0;
}

void tl_sigdb_close(tl_sigdb_t *db) {
  if (!db) return;
  sqlite3_finalize(db->put_span); /* before its connection closes */
  sk_buf_done(&db->sbuf);
  sk_store_close(db->r);
  sk_store_close(db->w);
  free(db->path);
  free(db);
}

/* The span path binds straight into one statement the writer prepares once
 * (sqlite's raw API: the store's helpers look the statement up by its SQL
 * text and copy every string). Text is bound SQLITE_STATIC: it lives in the
 * request (body or arena) or in the rows' JSON buffer, untouched until the
 * row is stepped; the bindings are cleared before the request ends. */
static const char put_span_sql[] =
    "INSERT OR REPLACE INTO spans(trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns,"
    " status, status_msg, trace_state, scope_name, scope_version, attrs, resource, events, links)"
    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static int bind_str(sqlite3_stmt *st, int i, tl_str_t s) {
  return s.p ? sqlite3_bind_text(st, i, s.p, s.len, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_json(sqlite3_stmt *st, int i, const char *base, size_t off, int len) {
  return len >= 0 ? sqlite3_bind_text(st, i, len ? base + off : "", len, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_pb(sqlite3_stmt *st, int i, const char *base, size_t off, int len) {
  return len >= 0 ? sqlite3_bind_blob(st, i, len ? base + off : "", len, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

typedef struct rows_ctx {
  tl_sigdb_t *db;
  const tl_span_rows_t *rows;
  char err[200]; /* why a row failed */
} rows_ctx_t;

static int put_rows_tx(sk_store_t *w, void *ud) {
  rows_ctx_t *c = ud;
  sqlite3_stmt *st = c->db->put_span;
  const char *js = c->rows->json->data;
  const tl_span_row_t *prev = NULL;
  for (size_t i = 0; i < c->rows->n; i++) {
    const tl_span_row_t *r = &c->rows->v[i];
    int rc = sqlite3_bind_text(st, 1, r->tid, 32, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 2, r->sid, 16, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 3, r->pid, -1, SQLITE_STATIC);
    /* the scope's values, shared by its spans, are bound when they change
     * (sqlite3_reset keeps bindings) */
    if (!prev || prev->service.p != r->service.p || prev->service.len != r->service.len ||
        prev->scope.p != r->scope.p || prev->scope.len != r->scope.len ||
        prev->scope_version.p != r->scope_version.p || prev->scope_version.len != r->scope_version.len ||
        prev->res_off != r->res_off || prev->res_len != r->res_len) {
      if (rc == SQLITE_OK) rc = bind_str(st, 4, r->service);
      if (rc == SQLITE_OK) rc = bind_str(st, 12, r->scope);
      if (rc == SQLITE_OK) rc = bind_str(st, 13, r->scope_version);
      if (rc == SQLITE_OK) rc = bind_pb(st, 15, js, r->res_off, r->res_len);
    }
    if (rc == SQLITE_OK) rc = bind_str(st, 5, r->name);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 6, r->kind);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 7, r->start_ns);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 8, r->end_ns);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 9, r->status);
    if (rc == SQLITE_OK) rc = bind_str(st, 10, r->status_msg);
    if (rc == SQLITE_OK) rc = bind_str(st, 11, r->trace_state);
    if (rc == SQLITE_OK) rc = bind_pb(st, 14, js, r->attrs_off, r->attrs_len);
    if (rc == SQLITE_OK) rc = bind_json(st, 16, js, r->events_off, r->events_len);
    if (rc == SQLITE_OK) rc = bind_json(st, 17, js, r->links_off, r->links_len);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    int rrc = sqlite3_reset(st);
    if (rc == SQLITE_DONE) rc = rrc;
    if (rc != SQLITE_OK) {
      snprintf(c->err, sizeof c->err, "%s", sqlite3_errmsg(sk_store_db(w)));
      return SK_ESTORE;
    }
    prev = r;
  }
  return 0;
}

sk_buf_t *tl_sigdb_row_buf(tl_sigdb_t *db) {
  /* the memory stays between requests, unless the last one made it large */
  if (db->sbuf.cap > (1u << 20)) sk_buf_done(&db->sbuf);
  sk_buf_reset(&db->sbuf);
  return &db->sbuf;
}

int tl_sigdb_put_rows(tl_sigdb_t *db, const tl_span_rows_t *rows, char *err, size_t errlen) {
  rows_ctx_t c = {.db = db, .rows = rows};
  sqlite3 *h = sk_store_db(db->w);
  int rc = 0;
  if (rows->json->len > INT32_MAX) { /* the rows hold int lengths */
    snprintf(err, errlen, "span store: request with more than 2 GB of span JSON");
    return SK_E2BIG;
  }
  if (!db->put_span &&
      sqlite3_prepare_v3(h, put_span_sql, -1, SQLITE_PREPARE_PERSISTENT, &db->put_span, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "span store: %s", sqlite3_errmsg(h));
    return SK_ESTORE;
  }
  if (rows->n) {
    rc = sk_store_tx(db->w, put_rows_tx, &c);
    sqlite3_clear_bindings(db->put_span); /* no pointer into this request outlives it */
    /* a failed row says why in c.err, a failed BEGIN/COMMIT in the store */
    if (rc < 0) snprintf(err, errlen, "span store: %s", c.err[0] ? c.err : sk_store_errmsg(db->w));
  }
  return rc < 0 ? rc : 0;
}

int tl_sigdb_put_spans(tl_sigdb_t *db, sk_pool_t *pool, const Otlp__ExportTraceServiceRequest *r,
                       size_t *accepted, size_t *rejected, char *err, size_t errlen) {
  tl_span_rows_t rows = {.json = tl_sigdb_row_buf(db)};
  tl_span_rows_from_msg(pool, r, &rows);
  int rc = tl_sigdb_put_rows(db, &rows, err, errlen);
  if (rc < 0) return rc;
  *accepted = rows.n;
  *rejected = rows.rejected;
  return 0;
}

typedef struct logs_ctx {
  const tl_logline_t *l;
  size_t n;
} logs_ctx_t;

static int put_logs_tx(sk_store_t *st, void *ud) {
  logs_ctx_t *c = ud;
  const char *last_labels = NULL;
  int64_t stream = 0;
  for (size_t i = 0; i < c->n; i++) {
    const tl_logline_t *l = &c->l[i];
    if (!last_labels || strcmp(last_labels, l->labels_json)) {
      int rc = sk_store_exec(st, "INSERT OR IGNORE INTO streams(labels) VALUES(?)",
                             SK_SQL_ARGS(SK_SQL_TEXT(l->labels_json)));
      if (rc < 0) return rc;
      rc = sk_store_query_int64(st, "SELECT id FROM streams WHERE labels = ?", SK_SQL_ARGS(SK_SQL_TEXT(l->labels_json)),
                                &stream);
      if (rc < 0) return rc;
      last_labels = l->labels_json;
    }
    int rc = sk_store_exec(st,
                           "INSERT INTO logs(stream, ts_ns, observed_ns, severity, severity_text, body, trace_id,"
                           " span_id, attrs) VALUES(?,?,?,?,?,?,?,?,?)",
                           SK_SQL_ARGS(SK_SQL_INT(stream), SK_SQL_INT(l->ts_ns), SK_SQL_INT(l->observed_ns),
                                       SK_SQL_INT(l->severity), SK_SQL_TEXT(l->severity_text),
                                       SK_SQL_TEXT(l->body ? l->body : ""), SK_SQL_TEXT(l->trace_id),
                                       SK_SQL_TEXT(l->span_id), SK_SQL_TEXT(l->attrs_json)));
    if (rc < 0) return rc;
  }
  return 0;
}

int tl_sigdb_put_logs(tl_sigdb_t *db, const tl_logline_t *l, size_t n, char *err, size_t errlen) {
  logs_ctx_t c = {.l = l, .n = n};
  int rc = sk_store_tx(db->w, put_logs_tx, &c);
  if (rc < 0) snprintf(err, errlen, "log store: %s", sk_store_errmsg(db->w));
  return rc;
}

int64_t tl_sigdb_count(tl_sigdb_t *db, int logs) {
  int64_t v = 0;
  /* max(rowid) is O(1) (log lines are never replaced); spans are replaced
   * by id, so they are counted, via the smallest index */
  if (logs)
    sk_store_query_int64(db->r, "SELECT coalesce(max(id), 0) FROM logs", NULL, 0, &v);
  else
    sk_store_query_int64(db->r, "SELECT count(*) FROM spans", NULL, 0, &v);
  return v;
}

uint64_t tl_sigdb_disk_bytes(tl_sigdb_t *db) {
  uint64_t total = 0;
  const char *suffix[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    char p[4200];
    snprintf(p, sizeof p, "%s%s", db->path, suffix[i]);
    struct stat stt;
    if (stat(p, &stt) == 0) total += (uint64_t)stt.st_size;
  }
  return total;
}

/* ---- retention ---- */

/* The statements come from the store's cache, so each is prepared once
 * per connection and reused by every batch. */
static const char expire_spans_sql[] =
    "DELETE FROM spans WHERE id IN (SELECT id FROM spans WHERE start_ns < ? ORDER BY start_ns LIMIT ?)";
static const char expire_logs_sql[] =
    "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts_ns < ? ORDER BY ts_ns LIMIT ?)";
static const char expire_streams_sql[] =
    "DELETE FROM streams WHERE id IN (SELECT s.id FROM streams s"
    " WHERE NOT EXISTS (SELECT 1 FROM logs l WHERE l.stream = s.id) LIMIT ?)";

typedef struct expire_ctx {
  const char *sql;
  int64_t cutoff; /* < 0: statement has only the LIMIT parameter */
  int64_t limit;
} expire_ctx_t;

static int expire_tx(sk_store_t *st, void *ud) {
  expire_ctx_t *c = ud;
  if (c->cutoff < 0) return sk_store_exec(st, c->sql, SK_SQL_ARGS(SK_SQL_INT(c->limit)));
  return sk_store_exec(st, c->sql, SK_SQL_ARGS(SK_SQL_INT(c->cutoff), SK_SQL_INT(c->limit)));
}

/* Runs batches until one deletes fewer than batch rows or max_batches ran. */
static int expire_kind(tl_sigdb_t *db, const char *sql, int64_t cutoff, size_t batch, size_t max_batches,
                       size_t *deleted, int *more) {
  expire_ctx_t c = {.sql = sql, .cutoff = cutoff, .limit = (int64_t)batch};
  for (size_t i = 0; i < max_batches; i++) {
    int rc = sk_store_tx(db->w, expire_tx, &c);
    if (rc < 0) return rc;
    *deleted += (size_t)rc;
    if ((size_t)rc < batch) return 0;
  }
  *more = 1;
  return 0;
}

int tl_sigdb_expire(tl_sigdb_t *db, int64_t span_before_ns, int64_t log_before_ns, size_t batch,
                    size_t max_batches, tl_sigdb_expired_t *out, char *err, size_t errlen) {
  tl_sigdb_expired_t r;
  memset(&r, 0, sizeof r);
  if (!batch) batch = TL_SIGDB_EXPIRE_BATCH;
  if (batch > 1000000) batch = 1000000;
  if (!max_batches) max_batches = TL_SIGDB_EXPIRE_MAX_BATCHES;
  int rc = 0;
  if (span_before_ns > 0 &&
      (rc = expire_kind(db, expire_spans_sql, span_before_ns, batch, max_batches, &r.spans, &r.more)) < 0) {
    snprintf(err, errlen, "span retention: %s", sk_store_errmsg(db->w));
    goto out;
  }
  if (log_before_ns > 0) {
    if ((rc = expire_kind(db, expire_logs_sql, log_before_ns, batch, max_batches, &r.logs, &r.more)) < 0) {
      snprintf(err, errlen, "log retention: %s", sk_store_errmsg(db->w));
      goto out;
    }
    if (r.logs && (rc = expire_kind(db, expire_streams_sql, -1, batch, max_batches, &r.streams, &r.more)) < 0) {
      snprintf(err, errlen, "log stream cleanup: %s", sk_store_errmsg(db->w));
      goto out;
    }
  }
  rc = 0;
out:
  if (out) *out = r;
  return rc;
}
