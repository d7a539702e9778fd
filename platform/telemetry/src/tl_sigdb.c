/* skiff-telemetry: the sqlite store for spans and log lines.
 *
 * Two connections on one WAL database: the writer, used only by the serial
 * ingest worker (one transaction per request, synchronous=FULL so a commit
 * is on disk), and the reader, used by query handlers on the loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"
#include "tl_sigdb_int.h"

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
};

int tl_sigdb_open(const char *path, int no_sync, tl_sigdb_t **out, char *err, size_t errlen) {
  tl_sigdb_t *db = sk_xcalloc(1, sizeof *db);
  db->path = sk_xstrdup(path);
  sk_store_opts_t o = {.path = path, .non_durable = no_sync, .migrations = migrations, .nmigrations = 1};
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
  sk_store_close(db->r);
  sk_store_close(db->w);
  free(db->path);
  free(db);
}

static int nonzero(const ProtobufCBinaryData *b) {
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i]) return 1;
  return 0;
}

static char *dump_pool(sk_pool_t *pool, json_t *j) {
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(j, &b);
  json_decref(j);
  char *r = sk_pool_strndup(pool, b.data ? b.data : "", b.len);
  sk_buf_done(&b);
  return r;
}

typedef struct spans_ctx {
  sk_pool_t *pool;
  const Otlp__ExportTraceServiceRequest *r;
  size_t accepted, rejected;
} spans_ctx_t;

static int put_spans_tx(sk_store_t *st, void *ud) {
  spans_ctx_t *c = ud;
  static const char sql[] =
      "INSERT OR REPLACE INTO spans(trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns,"
      " status, status_msg, trace_state, scope_name, scope_version, attrs, resource, events, links)"
      " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  for (size_t i = 0; i < c->r->n_resource_spans; i++) {
    const Otlp__ResourceSpans *rs = c->r->resource_spans[i];
    if (!rs) continue;
    Otlp__KeyValue **ra = rs->resource ? rs->resource->attributes : NULL;
    size_t nra = rs->resource ? rs->resource->n_attributes : 0;
    const char *svc = tl_otlp_attr_str(ra, nra, "service.name");
    if (!svc || !*svc) svc = "unknown_service";
    const char *res_json = dump_pool(c->pool, tl_otlp_attrs_json(ra, nra));
    for (size_t s = 0; s < rs->n_scope_spans; s++) {
      const Otlp__ScopeSpans *ss = rs->scope_spans[s];
      if (!ss) continue;
      const char *scope = ss->scope && ss->scope->name ? ss->scope->name : "";
      const char *scope_v = ss->scope && ss->scope->version ? ss->scope->version : "";
      for (size_t k = 0; k < ss->n_spans; k++) {
        const Otlp__Span *sp = ss->spans[k];
        if (!sp || sp->trace_id.len != 16 || sp->span_id.len != 8 || !nonzero(&sp->trace_id) ||
            !nonzero(&sp->span_id)) {
          c->rejected++;
          continue;
        }
        char tid[33], sid[17], pid[17] = "";
        tl_hex(sp->trace_id.data, 16, tid);
        tl_hex(sp->span_id.data, 8, sid);
        if (sp->parent_span_id.len == 8 && nonzero(&sp->parent_span_id)) tl_hex(sp->parent_span_id.data, 8, pid);
        const char *attrs = dump_pool(c->pool, tl_otlp_attrs_json(sp->attributes, sp->n_attributes));
        const char *events = NULL, *links = NULL;
        if (sp->n_events) {
          json_t *a = json_array();
          for (size_t e = 0; e < sp->n_events; e++)
            if (sp->events[e]) json_array_append_new(a, tl_pb_to_json(&sp->events[e]->base));
          events = dump_pool(c->pool, a);
        }
        if (sp->n_links) {
          json_t *a = json_array();
          for (size_t e = 0; e < sp->n_links; e++)
            if (sp->links[e]) json_array_append_new(a, tl_pb_to_json(&sp->links[e]->base));
          links = dump_pool(c->pool, a);
        }
        int status = sp->status ? sp->status->code : 0;
        const char *smsg = sp->status && sp->status->message && *sp->status->message ? sp->status->message : NULL;
        uint64_t st_ns = sp->start_time_unix_nano, en_ns = sp->end_time_unix_nano;
        if (st_ns > INT64_MAX) st_ns = INT64_MAX;
        if (en_ns > INT64_MAX) en_ns = INT64_MAX;
        if (en_ns < st_ns) en_ns = st_ns;
        int rc = sk_store_exec(
            st, sql,
            SK_SQL_ARGS(SK_SQL_TEXT(tid), SK_SQL_TEXT(sid), SK_SQL_TEXT(pid), SK_SQL_TEXT(svc),
                        SK_SQL_TEXT(sp->name ? sp->name : ""), SK_SQL_INT(sp->kind), SK_SQL_INT((int64_t)st_ns),
                        SK_SQL_INT((int64_t)en_ns), SK_SQL_INT(status), SK_SQL_TEXT(smsg),
                        SK_SQL_TEXT(sp->trace_state && *sp->trace_state ? sp->trace_state : NULL),
                        SK_SQL_TEXT(scope), SK_SQL_TEXT(scope_v), SK_SQL_TEXT(attrs), SK_SQL_TEXT(res_json),
                        SK_SQL_TEXT(events), SK_SQL_TEXT(links)));
        if (rc < 0) return rc;
        c->accepted++;
      }
    }
  }
  return 0;
}

int tl_sigdb_put_spans(tl_sigdb_t *db, sk_pool_t *pool, const Otlp__ExportTraceServiceRequest *r,
                       size_t *accepted, size_t *rejected, char *err, size_t errlen) {
  spans_ctx_t c = {.pool = pool, .r = r};
  int rc = sk_store_tx(db->w, put_spans_tx, &c);
  if (rc < 0) {
    snprintf(err, errlen, "span store: %s", sk_store_errmsg(db->w));
    return rc;
  }
  *accepted = c.accepted;
  *rejected = c.rejected;
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
  /* max(rowid) is O(1); spans have no rowid, so count them via the index */
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
    "DELETE FROM spans WHERE (trace_id, span_id) IN"
    " (SELECT trace_id, span_id FROM spans WHERE start_ns < ? ORDER BY start_ns LIMIT ?)";
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
