/* The PostgreSQL backend of the resource store, through libpq.
 *
 * Same tables as the sqlite backend (meta, objects, events) plus ctl_audit,
 * so audit rows commit in the same transaction as the change, and
 * ctl_tokens / ctl_join_tokens, so control replicas share them. Every
 * statement that carries a value is a named prepared statement
 * (PQprepare once per session, PQexecPrepared with text parameters); the
 * only PQexec calls are fixed text (BEGIN/COMMIT/ROLLBACK, SET, the
 * migrations).
 *
 * resourceVersion order: a write transaction starts with
 *   SELECT value FROM meta WHERE key = 'rv' FOR UPDATE
 * so write transactions (of every control replica on the database) run one
 * after the other; the sequence bump, the object row and the event row
 * commit before the next writer can read the counter. Events therefore
 * become visible in rv order with no gap a watcher could skip: there is no
 * moment where rv N+1 is committed and rv N is not. A rolled back
 * transaction gives its number back (the counter is a row, not a SEQUENCE).
 *
 * A broken connection is reset before the next transaction or query
 * (prepared statements are prepared again on the new session); a statement
 * outside a transaction is retried once on a fresh connection, one inside
 * a transaction fails the transaction with a clear message. */
#include <libpq-fe.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_backend.h"
#include "skiff/err.h"
#include "skiff/mem.h"

/* ---- schema ---- */

static const char *const migrations[] = {
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);"
    "INSERT INTO meta (key, value) VALUES ('rv', 0), ('compacted_rv', 0);"
    "CREATE TABLE objects ("
    "  kind TEXT COLLATE \"C\" NOT NULL, namespace TEXT COLLATE \"C\" NOT NULL,"
    "  name TEXT COLLATE \"C\" NOT NULL,"
    "  uid TEXT NOT NULL, rv BIGINT NOT NULL, generation BIGINT NOT NULL,"
    "  labels TEXT NOT NULL, body TEXT NOT NULL,"
    "  created_at TEXT NOT NULL, updated_at TEXT NOT NULL,"
    "  PRIMARY KEY (kind, namespace, name));"
    "CREATE TABLE events ("
    "  rv BIGINT PRIMARY KEY, type TEXT NOT NULL, kind TEXT NOT NULL,"
    "  namespace TEXT NOT NULL, name TEXT NOT NULL, object TEXT NOT NULL);"
    "CREATE INDEX objects_uid ON objects (uid);"
    "CREATE TABLE ctl_audit ("
    "  id BIGSERIAL PRIMARY KEY, ts BIGINT NOT NULL, \"user\" TEXT, via TEXT, role TEXT,"
    "  verb TEXT NOT NULL, kind TEXT NOT NULL, ns TEXT, name TEXT, rv BIGINT,"
    "  code INTEGER NOT NULL, diff TEXT, source TEXT, message TEXT);"
    "CREATE INDEX ctl_audit_ts ON ctl_audit (ts);"
    "CREATE INDEX ctl_audit_obj ON ctl_audit (kind, name);"
    "CREATE INDEX ctl_audit_user ON ctl_audit (\"user\");",
    /* 2: tokens shared by the replicas (hashes as lowercase hex) */
    "CREATE TABLE ctl_tokens ("
    "  id TEXT PRIMARY KEY, name TEXT NOT NULL, role INTEGER NOT NULL,"
    "  hash TEXT NOT NULL UNIQUE, created BIGINT NOT NULL,"
    "  expires BIGINT NOT NULL DEFAULT 0, revoked BIGINT NOT NULL DEFAULT 0,"
    "  seq BIGSERIAL NOT NULL);"
    "CREATE INDEX ctl_tokens_name ON ctl_tokens (name);"
    "CREATE TABLE ctl_join_tokens ("
    "  hash TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, created BIGINT NOT NULL,"
    "  expires BIGINT NOT NULL, uses_left INTEGER NOT NULL);",
};
#define NMIGRATIONS (sizeof migrations / sizeof migrations[0])

/* Any constant: serializes migrations of replicas starting together. */
#define MIGRATION_LOCK "7400400"

/* ---- prepared statements ---- */

#define ROW_COLS "kind, namespace, name, uid, rv, generation, labels, body, created_at, updated_at"
#define AUDIT_COLS "id, ts, \"user\", via, role, verb, kind, ns, name, rv, code, diff, source, message"

enum {
  S_LOCK,
  S_NEXT_RV,
  S_META_GET,
  S_META_SET,
  S_GET,
  S_INSERT,
  S_UPDATE,
  S_DEL,
  S_LIST,
  S_EVENT_ADD,
  S_EVENTS_SINCE,
  S_EVENTS_TRIM,
  S_AUDIT_ADD,
  S_AUDIT_QUERY,
  S_AUDIT_PRUNE_ROWS,
  S_AUDIT_PRUNE_AGE,
  S_TOKEN_ADD,
  S_TOKEN_COUNT,
  S_TOKEN_REVOKE,
  S_TOKEN_LIST,
  S_TOKEN_FIND,
  S_JOIN_ADD,
  S_JOIN_PRUNE,
  S_JOIN_COUNT,
  S_JOIN_FIND,
  S_JOIN_USE,
  S_NOTIFY,
  S_COUNT
};

static const struct {
  const char *name, *sql;
  int nparams;
} stmts[S_COUNT] = {
    [S_LOCK] = {"ctl_lock", "SELECT value FROM meta WHERE key = 'rv' FOR UPDATE", 0},
    [S_NEXT_RV] = {"ctl_next_rv", "UPDATE meta SET value = value + 1 WHERE key = 'rv' RETURNING value", 0},
    [S_META_GET] = {"ctl_meta_get", "SELECT value FROM meta WHERE key = $1", 1},
    [S_META_SET] = {"ctl_meta_set",
                    "INSERT INTO meta (key, value) VALUES ($1, $2::bigint) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    2},
    [S_GET] = {"ctl_get", "SELECT " ROW_COLS " FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3", 3},
    [S_INSERT] = {"ctl_insert",
                  "INSERT INTO objects (" ROW_COLS ") VALUES ($1, $2, $3, $4, $5::bigint, $6::bigint, $7, $8, $9, $10)",
                  10},
    [S_UPDATE] = {"ctl_update",
                  "UPDATE objects SET uid = $4, rv = $5::bigint, generation = $6::bigint, labels = $7, body = $8, "
                  "updated_at = $9 WHERE kind = $1 AND namespace = $2 AND name = $3",
                  9},
    [S_DEL] = {"ctl_del", "DELETE FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3", 3},
    [S_LIST] = {"ctl_list",
                "SELECT " ROW_COLS " FROM objects WHERE kind = $1 "
                "AND ($2::text IS NULL OR namespace = $2) "
                "AND ($3::text IS NULL OR namespace > $3 OR (namespace = $3 AND name > $4)) "
                "ORDER BY namespace, name",
                4},
    [S_EVENT_ADD] = {"ctl_event_add",
                     "INSERT INTO events (rv, type, kind, namespace, name, object) "
                     "VALUES ($1::bigint, $2, $3, $4, $5, $6)",
                     6},
    [S_EVENTS_SINCE] = {"ctl_events_since",
                        "SELECT rv, type, kind, namespace, name, object FROM events WHERE rv > $1::bigint ORDER BY rv",
                        1},
    [S_EVENTS_TRIM] = {"ctl_events_trim", "DELETE FROM events WHERE rv <= $1::bigint", 1},
    [S_AUDIT_ADD] = {"ctl_audit_add",
                     "INSERT INTO ctl_audit (ts, \"user\", via, role, verb, kind, ns, name, rv, code, diff, source,"
                     " message) VALUES ($1::bigint, $2, $3, $4, $5, $6, $7, $8, $9::bigint, $10::integer, $11, $12,"
                     " $13)",
                     13},
    [S_AUDIT_QUERY] = {"ctl_audit_query",
                       "SELECT " AUDIT_COLS " FROM ctl_audit WHERE ($1::text IS NULL OR kind = $1)"
                       " AND ($2::text IS NULL OR name = $2) AND ($3::text IS NULL OR ns = $3)"
                       " AND ($4::text IS NULL OR \"user\" = $4) AND ($5::text IS NULL OR verb = $5)"
                       " AND ts >= $6::bigint AND ($7::bigint = 0 OR id < $7::bigint)"
                       " ORDER BY id DESC LIMIT $8::bigint",
                       8},
    [S_AUDIT_PRUNE_ROWS] = {"ctl_audit_prune_rows",
                            "DELETE FROM ctl_audit WHERE id <= (SELECT max(id) FROM ctl_audit) - $1::bigint", 1},
    [S_AUDIT_PRUNE_AGE] = {"ctl_audit_prune_age", "DELETE FROM ctl_audit WHERE ts < $1::bigint", 1},
    [S_TOKEN_ADD] = {"ctl_token_add",
                     "INSERT INTO ctl_tokens (id, name, role, hash, created, expires, revoked)"
                     " VALUES ($1, $2, $3::integer, $4, $5::bigint, $6::bigint, $7::bigint)",
                     7},
    [S_TOKEN_COUNT] = {"ctl_token_count",
                       "SELECT count(*) FROM ctl_tokens WHERE ($1::integer < 0 OR role = $1::integer)"
                       " AND revoked = 0 AND (expires = 0 OR expires > $2::bigint)",
                       2},
    [S_TOKEN_REVOKE] = {"ctl_token_revoke",
                        "UPDATE ctl_tokens SET revoked = $2::bigint WHERE revoked = 0 AND (id = $1 OR name = $1)", 2},
    [S_TOKEN_LIST] = {"ctl_token_list",
                      "SELECT id, name, role, hash, created, expires, revoked FROM ctl_tokens"
                      " ORDER BY created DESC, seq DESC LIMIT 10000",
                      0},
    [S_TOKEN_FIND] = {"ctl_token_find",
                      "SELECT id, name, role, hash, created, expires, revoked FROM ctl_tokens WHERE hash = $1", 1},
    [S_JOIN_ADD] = {"ctl_join_add",
                    "INSERT INTO ctl_join_tokens (hash, spiffe_id, created, expires, uses_left)"
                    " VALUES ($1, $2, $3::bigint, $4::bigint, $5::integer)",
                    5},
    [S_JOIN_PRUNE] = {"ctl_join_prune", "DELETE FROM ctl_join_tokens WHERE expires <= $1::bigint OR uses_left <= 0",
                      1},
    [S_JOIN_COUNT] = {"ctl_join_count", "SELECT count(*) FROM ctl_join_tokens", 0},
    [S_JOIN_FIND] = {"ctl_join_find",
                     "SELECT hash, spiffe_id, created, expires, uses_left FROM ctl_join_tokens WHERE hash = $1", 1},
    [S_JOIN_USE] = {"ctl_join_use",
                    "UPDATE ctl_join_tokens SET uses_left = uses_left - 1"
                    " WHERE hash = $1 AND uses_left > 0 AND expires > $2::bigint",
                    2},
    /* Delivered at commit, in commit order, to every LISTENing session. */
    [S_NOTIFY] = {"ctl_notify", "SELECT pg_notify('skiff_control', '')", 0},
};

typedef struct pg_backend {
  ctl_backend_t base;
  PGconn *conn;
  PGconn *lconn;      /* LISTEN skiff_control (notify_fd) */
  char *url;          /* as configured (holds the password: never shown) */
  char shown[512];    /* redacted, for messages */
  int durable;
  int in_tx;
  unsigned savepoints;
  uint32_t prepared;  /* bit per statement prepared on this session */
  char err[1024];
} pg_backend_t;

#define PB(b) ((pg_backend_t *)(b))

/* ---- messages ---- */

void ctl_backend_pg_redact(const char *url, char *out, size_t len) {
  if (!len) return;
  out[0] = 0;
  if (!url) return;
  const char *p = strstr(url, "://");
  size_t o = 0;
#define PUT(c)                    \
  do {                            \
    if (o + 1 < len) out[o++] = (c); \
  } while (0)
  const char *s = url;
  if (p) {
    const char *auth = p + 3;
    const char *end = auth + strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *q = auth; q < end; q++)
      if (*q == '@') at = q;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    for (; s < (colon ? colon + 1 : end); s++) PUT(*s);
    if (colon) {
      for (const char *r = "***"; *r; r++) PUT(*r);
      s = at;
    }
  }
  /* ?password=... in the query string */
  for (; *s; s++) {
    if ((s[0] == '?' || s[0] == '&') && !strncmp(s + 1, "password=", 9)) {
      for (int i = 0; i < 10; i++) PUT(s[i]);
      for (const char *r = "***"; *r; r++) PUT(*r);
      s += 10;
      while (*s && *s != '&') s++;
      if (!*s) break;
    }
    PUT(*s);
  }
  out[o] = 0;
#undef PUT
}

/* libpq messages end with a newline; keep one line. Runtime messages
 * (errmsg, which API answers may carry) do not name the server; the open
 * error does, with the password masked. */
static void set_err(pg_backend_t *b, const char *what, const char *msg) {
  char m[768];
  snprintf(m, sizeof m, "%s", msg && *msg ? msg : "unknown error");
  size_t n = strlen(m);
  while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) m[--n] = 0;
  for (char *c = m; *c; c++)
    if (*c == '\n') *c = ' ';
  snprintf(b->err, sizeof b->err, "postgres: %.64s: %.600s", what, m);
}

/* ---- connection ---- */

static int session_setup(pg_backend_t *b) {
  const char *sql = b->durable ? "SET synchronous_commit = on" : "SET synchronous_commit = off";
  PGresult *r = PQexec(b->conn, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) set_err(b, "session setup", PQresultErrorMessage(r));
  PQclear(r);
  b->prepared = 0;
  return ok ? 0 : SK_ESTORE;
}

/* Server NOTICEs ("relation ... already exists, skipping") are not errors;
 * libpq would print them on stderr, and library code does not log. */
static void ignore_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static int connect_now(pg_backend_t *b) {
  /* Defaults first: what the URL says wins (expand_dbname). */
  const char *const keys[] = {"connect_timeout", "application_name", "gssencmode", "dbname", NULL};
  const char *const vals[] = {"10", "skiff-control", "disable", b->url, NULL};
  PQfinish(b->conn);
  b->conn = PQconnectdbParams(keys, vals, 1);
  if (!b->conn) {
    set_err(b, "connect", "out of memory");
    return SK_ENOMEM;
  }
  PQsetNoticeProcessor(b->conn, ignore_notice, NULL);
  if (PQstatus(b->conn) != CONNECTION_OK) {
    set_err(b, "connect", PQerrorMessage(b->conn));
    return SK_ESTORE;
  }
  return session_setup(b);
}

/* A usable session before a transaction or a lone statement. */
static int ensure_conn(pg_backend_t *b) {
  if (b->conn && PQstatus(b->conn) == CONNECTION_OK) return 0;
  if (b->in_tx) {
    set_err(b, "connection lost inside a transaction", b->conn ? PQerrorMessage(b->conn) : "");
    return SK_ESTORE;
  }
  if (b->conn) {
    PQreset(b->conn);
    if (PQstatus(b->conn) == CONNECTION_OK) return session_setup(b);
  }
  return connect_now(b);
}

static int prepare(pg_backend_t *b, int s) {
  if (b->prepared & (1u << s)) return 0;
  PGresult *r = PQprepare(b->conn, stmts[s].name, stmts[s].sql, stmts[s].nparams, NULL);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) set_err(b, stmts[s].name, PQresultErrorMessage(r));
  PQclear(r);
  if (!ok) return SK_ESTORE;
  b->prepared |= 1u << s;
  return 0;
}

/* Runs prepared statement s; *out is the result on success (caller clears).
 * Unique violations are SK_EEXIST. */
static int run(pg_backend_t *b, int s, const char *const *params, PGresult **out) {
  *out = NULL;
  for (int attempt = 0; attempt < 2; attempt++) {
    int rc = ensure_conn(b);
    if (rc < 0) return rc;
    if ((rc = prepare(b, s)) < 0) {
      if (!b->in_tx && PQstatus(b->conn) != CONNECTION_OK) continue;
      return rc;
    }
    PGresult *r = PQexecPrepared(b->conn, stmts[s].name, stmts[s].nparams, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      *out = r;
      return 0;
    }
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    set_err(b, stmts[s].name, PQresultErrorMessage(r));
    int unique = state && !strcmp(state, "23505");
    PQclear(r);
    if (unique) return SK_EEXIST;
    /* A lone statement on a dead session: once more on a new one. */
    if (!b->in_tx && PQstatus(b->conn) != CONNECTION_OK) continue;
    return SK_ESTORE;
  }
  return SK_ESTORE;
}

static int run_cmd(pg_backend_t *b, int s, const char *const *params) {
  PGresult *r;
  int rc = run(b, s, params, &r);
  if (rc < 0) return rc;
  long n = strtol(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return (int)n;
}

static int run_int64(pg_backend_t *b, int s, const char *const *params, int64_t *val) {
  PGresult *r;
  int rc = run(b, s, params, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) < 1 || PQgetisnull(r, 0, 0)) {
    PQclear(r);
    return SK_ENOTFOUND;
  }
  *val = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return 0;
}

static int simple(pg_backend_t *b, const char *sql, const char *what) {
  PGresult *r = PQexec(b->conn, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) set_err(b, what, PQresultErrorMessage(r));
  PQclear(r);
  return ok ? 0 : SK_ESTORE;
}

/* ---- migrations ---- */

static int migrate(pg_backend_t *b) {
  int rc = simple(b, "BEGIN", "migrate");
  if (rc < 0) return rc;
  PGresult *r = PQexec(b->conn, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) goto fail_r;
  PQclear(r);
  r = PQexec(b->conn, "CREATE TABLE IF NOT EXISTS skiff_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) goto fail_r;
  PQclear(r);
  r = PQexec(b->conn, "SELECT version FROM skiff_schema WHERE component = 'control'");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) goto fail_r;
  long have = PQntuples(r) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  PQclear(r);
  r = NULL;
  if (have > (long)NMIGRATIONS) {
    snprintf(b->err, sizeof b->err,
             "postgres: schema version %ld is newer than this skiff-control knows (%zu): refusing to run", have,
             NMIGRATIONS);
    rc = SK_ESTORE;
    goto rollback;
  }
  for (size_t i = (size_t)have; i < NMIGRATIONS; i++) {
    r = PQexec(b->conn, migrations[i]);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) goto fail_r;
    PQclear(r);
    r = NULL;
  }
  if ((size_t)have < NMIGRATIONS) {
    /* The version is a compile-time count, not outside input. */
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO skiff_schema (component, version) VALUES ('control', %zu) "
             "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
             NMIGRATIONS);
    if ((rc = simple(b, sql, "migrate: version")) < 0) goto rollback;
  }
  return simple(b, "COMMIT", "migrate: commit");
fail_r:
  set_err(b, "migrate", PQresultErrorMessage(r));
  PQclear(r);
  rc = SK_ESTORE;
rollback:
  PQclear(PQexec(b->conn, "ROLLBACK"));
  return rc;
}

/* ---- ops ---- */

static int pg_tx(ctl_backend_t *be, int (*fn)(ctl_backend_t *b, void *ud), void *ud) {
  pg_backend_t *b = PB(be);
  int rc;
  if (b->in_tx) { /* nested: a savepoint */
    char sql[64];
    unsigned n = ++b->savepoints;
    snprintf(sql, sizeof sql, "SAVEPOINT ctl_sp%u", n);
    if ((rc = simple(b, sql, "savepoint")) < 0) return rc;
    rc = fn(be, ud);
    snprintf(sql, sizeof sql, rc < 0 ? "ROLLBACK TO SAVEPOINT ctl_sp%u" : "RELEASE SAVEPOINT ctl_sp%u", n);
    int rc2 = simple(b, sql, "savepoint");
    b->savepoints--;
    return rc < 0 ? rc : rc2 < 0 ? rc2 : rc;
  }
  if ((rc = ensure_conn(b)) < 0) return rc;
  if ((rc = simple(b, "BEGIN", "begin")) < 0) {
    /* The server went away since the last call: nothing was sent yet, so
     * a new session may begin the transaction. */
    if (PQstatus(b->conn) == CONNECTION_OK || (rc = ensure_conn(b)) < 0) return rc;
    if ((rc = simple(b, "BEGIN", "begin")) < 0) return rc;
  }
  b->in_tx = 1;
  PGresult *r;
  /* Writers queue here: see the file comment. */
  if ((rc = run(b, S_LOCK, NULL, &r)) < 0) goto rollback;
  PQclear(r);
  rc = fn(be, ud);
  if (rc < 0) goto rollback;
  /* Tell the other replicas (their watches and config pushes). */
  int rc2 = run(b, S_NOTIFY, NULL, &r);
  if (rc2 < 0) {
    rc = rc2;
    goto rollback;
  }
  PQclear(r);
  r = PQexec(b->conn, "COMMIT");
  /* An aborted transaction answers COMMIT with "ROLLBACK". */
  if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(r), "COMMIT") != 0) {
    set_err(b, "commit", PQresultStatus(r) == PGRES_COMMAND_OK ? "the transaction was rolled back"
                                                              : PQresultErrorMessage(r));
    PQclear(r);
    b->in_tx = 0;
    return SK_ESTORE;
  }
  PQclear(r);
  b->in_tx = 0;
  return rc;
rollback:
  if (PQstatus(b->conn) == CONNECTION_OK) PQclear(PQexec(b->conn, "ROLLBACK"));
  b->in_tx = 0;
  return rc;
}

static int pg_next_rv(ctl_backend_t *b, int64_t *rv) { return run_int64(PB(b), S_NEXT_RV, NULL, rv); }

static int pg_meta_get(ctl_backend_t *b, const char *key, int64_t *val) {
  const char *p[] = {key};
  return run_int64(PB(b), S_META_GET, p, val);
}

static int pg_meta_set(ctl_backend_t *b, const char *key, int64_t val) {
  char v[24];
  snprintf(v, sizeof v, "%" PRId64, val);
  const char *p[] = {key, v};
  int rc = run_cmd(PB(b), S_META_SET, p);
  return rc < 0 ? rc : 0;
}

static int each_row(PGresult *r, ctl_row_fn fn, void *ud) {
  int n = PQntuples(r), rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    ctl_row_t row = {.kind = PQgetvalue(r, i, 0),
                     .ns = PQgetvalue(r, i, 1),
                     .name = PQgetvalue(r, i, 2),
                     .uid = PQgetvalue(r, i, 3),
                     .rv = strtoll(PQgetvalue(r, i, 4), NULL, 10),
                     .generation = strtoll(PQgetvalue(r, i, 5), NULL, 10),
                     .labels = PQgetvalue(r, i, 6),
                     .body = PQgetvalue(r, i, 7),
                     .created_at = PQgetvalue(r, i, 8),
                     .updated_at = PQgetvalue(r, i, 9)};
    rc = fn(&row, ud);
  }
  return rc;
}

static int pg_get(ctl_backend_t *b, const char *kind, const char *ns, const char *name, ctl_row_fn fn, void *ud) {
  const char *p[] = {kind, ns, name};
  PGresult *r;
  int rc = run(PB(b), S_GET, p, &r);
  if (rc < 0) return rc;
  if (!PQntuples(r)) rc = SK_ENOTFOUND;
  else rc = each_row(r, fn, ud);
  PQclear(r);
  return rc;
}

static int pg_put(ctl_backend_t *b, const ctl_row_t *row, int insert) {
  char rv[24], gen[24];
  snprintf(rv, sizeof rv, "%" PRId64, row->rv);
  snprintf(gen, sizeof gen, "%" PRId64, row->generation);
  if (insert) {
    const char *p[] = {row->kind,   row->ns,   row->name,       row->uid,       rv,
                       gen,         row->labels, row->body, row->created_at, row->updated_at};
    int rc = run_cmd(PB(b), S_INSERT, p);
    return rc < 0 ? rc : 0;
  }
  const char *p[] = {row->kind, row->ns, row->name, row->uid, rv, gen, row->labels, row->body, row->updated_at};
  int rc = run_cmd(PB(b), S_UPDATE, p);
  if (rc == 0) return SK_ENOTFOUND;
  return rc < 0 ? rc : 0;
}

static int pg_del(ctl_backend_t *b, const char *kind, const char *ns, const char *name) {
  const char *p[] = {kind, ns, name};
  int rc = run_cmd(PB(b), S_DEL, p);
  if (rc == 0) return SK_ENOTFOUND;
  return rc < 0 ? rc : 0;
}

static int pg_list(ctl_backend_t *b, const char *kind, const char *ns, const char *after_ns, const char *after_name,
                   ctl_row_fn fn, void *ud) {
  const char *p[] = {kind, ns, after_ns, after_name ? after_name : ""};
  PGresult *r;
  int rc = run(PB(b), S_LIST, p, &r);
  if (rc < 0) return rc;
  rc = each_row(r, fn, ud);
  PQclear(r);
  return rc;
}

static int pg_event_add(ctl_backend_t *b, const ctl_event_row_t *ev) {
  char rv[24];
  snprintf(rv, sizeof rv, "%" PRId64, ev->rv);
  const char *p[] = {rv, ev->type, ev->kind, ev->ns, ev->name, ev->object};
  int rc = run_cmd(PB(b), S_EVENT_ADD, p);
  return rc < 0 ? rc : 0;
}

static int pg_events_since(ctl_backend_t *b, int64_t after, ctl_event_fn fn, void *ud) {
  char a[24];
  snprintf(a, sizeof a, "%" PRId64, after);
  const char *p[] = {a};
  PGresult *r;
  int rc = run(PB(b), S_EVENTS_SINCE, p, &r);
  if (rc < 0) return rc;
  int n = PQntuples(r);
  for (int i = 0; i < n && rc == 0; i++) {
    ctl_event_row_t e = {.rv = strtoll(PQgetvalue(r, i, 0), NULL, 10),
                         .type = PQgetvalue(r, i, 1),
                         .kind = PQgetvalue(r, i, 2),
                         .ns = PQgetvalue(r, i, 3),
                         .name = PQgetvalue(r, i, 4),
                         .object = PQgetvalue(r, i, 5)};
    rc = fn(&e, ud);
  }
  PQclear(r);
  return rc < 0 ? rc : rc > 0 ? rc : n;
}

static int pg_events_trim(ctl_backend_t *b, int64_t upto) {
  char u[24];
  snprintf(u, sizeof u, "%" PRId64, upto);
  const char *p[] = {u};
  return run_cmd(PB(b), S_EVENTS_TRIM, p);
}

static int pg_audit_add(ctl_backend_t *b, const ctl_audit_row_t *a) {
  char ts[24], rv[24], code[16];
  snprintf(ts, sizeof ts, "%" PRId64, a->ts_ms);
  snprintf(rv, sizeof rv, "%" PRId64, a->rv);
  snprintf(code, sizeof code, "%d", a->code);
  const char *p[] = {ts,      a->user,    a->via,     a->role,   a->verb, a->kind,    a->ns,
                     a->name, a->rv ? rv : NULL, code, a->diff, a->source, a->message};
  int rc = run_cmd(PB(b), S_AUDIT_ADD, p);
  return rc < 0 ? rc : 0;
}

static const char *nullable(PGresult *r, int i, int c) { return PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c); }

static int pg_audit_query(ctl_backend_t *b, const ctl_audit_where_t *w, ctl_audit_fn fn, void *ud) {
  char since[24], before[24], limit[16];
  snprintf(since, sizeof since, "%" PRId64, w->since_ms);
  snprintf(before, sizeof before, "%" PRId64, w->before_id);
  snprintf(limit, sizeof limit, "%d", w->limit);
  const char *p[] = {w->kind, w->name, w->ns, w->user, w->verb, since, before, limit};
  PGresult *r;
  int rc = run(PB(b), S_AUDIT_QUERY, p, &r);
  if (rc < 0) return rc;
  int n = PQntuples(r);
  for (int i = 0; i < n && rc == 0; i++) {
    ctl_audit_row_t a = {.id = strtoll(PQgetvalue(r, i, 0), NULL, 10),
                         .ts_ms = strtoll(PQgetvalue(r, i, 1), NULL, 10),
                         .user = nullable(r, i, 2),
                         .via = nullable(r, i, 3),
                         .role = nullable(r, i, 4),
                         .verb = nullable(r, i, 5),
                         .kind = nullable(r, i, 6),
                         .ns = nullable(r, i, 7),
                         .name = nullable(r, i, 8),
                         .rv = PQgetisnull(r, i, 9) ? 0 : strtoll(PQgetvalue(r, i, 9), NULL, 10),
                         .code = (int)strtol(PQgetvalue(r, i, 10), NULL, 10),
                         .diff = nullable(r, i, 11),
                         .source = nullable(r, i, 12),
                         .message = nullable(r, i, 13)};
    rc = fn(&a, ud);
  }
  PQclear(r);
  return rc < 0 ? rc : 0;
}

static int pg_audit_prune(ctl_backend_t *b, int64_t max_rows, int64_t min_ts_ms) {
  char v[24];
  snprintf(v, sizeof v, "%" PRId64, max_rows);
  const char *p[] = {v};
  int rc = run_cmd(PB(b), S_AUDIT_PRUNE_ROWS, p);
  if (rc < 0 || min_ts_ms <= 0) return rc;
  int total = rc;
  snprintf(v, sizeof v, "%" PRId64, min_ts_ms);
  if ((rc = run_cmd(PB(b), S_AUDIT_PRUNE_AGE, p)) < 0) return rc;
  return total + rc;
}

/* ---- tokens ---- */

static void hex32(const unsigned char *h, char out[65]) {
  static const char hx[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    out[2 * i] = hx[h[i] >> 4];
    out[2 * i + 1] = hx[h[i] & 15];
  }
  out[64] = 0;
}

static int unhex32(const char *s, unsigned char out[32]) {
  if (strlen(s) != 64) return -1;
  for (int i = 0; i < 64; i++) {
    char c = s[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return -1;
    if (i % 2) out[i / 2] = (unsigned char)(out[i / 2] | v);
    else out[i / 2] = (unsigned char)(v << 4);
  }
  return 0;
}

static int pg_token_add(ctl_backend_t *b, const ctl_token_row_t *t) {
  char role[16], created[24], expires[24], revoked[24], h[65];
  snprintf(role, sizeof role, "%d", t->role);
  snprintf(created, sizeof created, "%" PRId64, t->created);
  snprintf(expires, sizeof expires, "%" PRId64, t->expires);
  snprintf(revoked, sizeof revoked, "%" PRId64, t->revoked);
  hex32(t->hash, h);
  const char *p[] = {t->id, t->name, role, h, created, expires, revoked};
  int rc = run_cmd(PB(b), S_TOKEN_ADD, p);
  return rc < 0 ? rc : 0;
}

static int pg_token_count_live(ctl_backend_t *b, int role, int64_t now, int64_t *n) {
  char r[16], t[24];
  snprintf(r, sizeof r, "%d", role);
  snprintf(t, sizeof t, "%" PRId64, now);
  const char *p[] = {r, t};
  return run_int64(PB(b), S_TOKEN_COUNT, p, n);
}

static int pg_token_revoke(ctl_backend_t *b, const char *id_or_name, int64_t now) {
  char t[24];
  snprintf(t, sizeof t, "%" PRId64, now);
  const char *p[] = {id_or_name, t};
  return run_cmd(PB(b), S_TOKEN_REVOKE, p);
}

static int token_rows(PGresult *r, ctl_token_fn fn, void *ud) {
  int rc = 0;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    unsigned char h[32];
    if (unhex32(PQgetvalue(r, i, 3), h) < 0) continue; /* not ours: never matches */
    ctl_token_row_t t = {.id = PQgetvalue(r, i, 0),
                         .name = PQgetvalue(r, i, 1),
                         .role = (int)strtol(PQgetvalue(r, i, 2), NULL, 10),
                         .hash = h,
                         .created = strtoll(PQgetvalue(r, i, 4), NULL, 10),
                         .expires = strtoll(PQgetvalue(r, i, 5), NULL, 10),
                         .revoked = strtoll(PQgetvalue(r, i, 6), NULL, 10)};
    rc = fn(&t, ud);
  }
  return rc;
}

static int pg_token_list(ctl_backend_t *b, ctl_token_fn fn, void *ud) {
  PGresult *r;
  int rc = run(PB(b), S_TOKEN_LIST, NULL, &r);
  if (rc < 0) return rc;
  rc = token_rows(r, fn, ud);
  PQclear(r);
  return rc < 0 ? rc : 0;
}

static int pg_token_find(ctl_backend_t *b, const unsigned char hash[32], ctl_token_fn fn, void *ud) {
  char h[65];
  hex32(hash, h);
  const char *p[] = {h};
  PGresult *r;
  int rc = run(PB(b), S_TOKEN_FIND, p, &r);
  if (rc < 0) return rc;
  rc = token_rows(r, fn, ud);
  PQclear(r);
  return rc < 0 ? rc : 0;
}

static int pg_join_add(ctl_backend_t *b, const ctl_join_row_t *j) {
  char h[65], created[24], expires[24], uses[24];
  hex32(j->hash, h);
  snprintf(created, sizeof created, "%" PRId64, j->created);
  snprintf(expires, sizeof expires, "%" PRId64, j->expires);
  snprintf(uses, sizeof uses, "%" PRId64, j->uses_left);
  const char *p[] = {h, j->spiffe_id, created, expires, uses};
  int rc = run_cmd(PB(b), S_JOIN_ADD, p);
  return rc < 0 ? rc : 0;
}

static int pg_join_prune(ctl_backend_t *b, int64_t now, int64_t *left) {
  char t[24];
  snprintf(t, sizeof t, "%" PRId64, now);
  const char *p[] = {t};
  int rc = run_cmd(PB(b), S_JOIN_PRUNE, p);
  if (rc < 0) return rc;
  return run_int64(PB(b), S_JOIN_COUNT, NULL, left);
}

static int pg_join_find(ctl_backend_t *b, const unsigned char hash[32], ctl_join_fn fn, void *ud) {
  char h[65];
  hex32(hash, h);
  const char *p[] = {h};
  PGresult *r;
  int rc = run(PB(b), S_JOIN_FIND, p, &r);
  if (rc < 0) return rc;
  for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
    unsigned char hb[32];
    if (unhex32(PQgetvalue(r, i, 0), hb) < 0) continue;
    ctl_join_row_t j = {.hash = hb,
                        .spiffe_id = PQgetvalue(r, i, 1),
                        .created = strtoll(PQgetvalue(r, i, 2), NULL, 10),
                        .expires = strtoll(PQgetvalue(r, i, 3), NULL, 10),
                        .uses_left = strtoll(PQgetvalue(r, i, 4), NULL, 10)};
    rc = fn(&j, ud);
  }
  PQclear(r);
  return rc < 0 ? rc : 0;
}

static int pg_join_use(ctl_backend_t *b, const unsigned char hash[32], int64_t now) {
  char h[65], t[24];
  hex32(hash, h);
  snprintf(t, sizeof t, "%" PRId64, now);
  const char *p[] = {h, t};
  return run_cmd(PB(b), S_JOIN_USE, p);
}

/* ---- notifications ---- */

static int pg_notify_fd(ctl_backend_t *be) {
  pg_backend_t *b = PB(be);
  if (b->lconn && PQstatus(b->lconn) == CONNECTION_OK) return PQsocket(b->lconn);
  PQfinish(b->lconn);
  const char *const keys[] = {"connect_timeout", "application_name", "gssencmode", "dbname", NULL};
  const char *const vals[] = {"10", "skiff-control-listen", "disable", b->url, NULL};
  b->lconn = PQconnectdbParams(keys, vals, 1);
  if (!b->lconn) return SK_ENOMEM;
  PQsetNoticeProcessor(b->lconn, ignore_notice, NULL);
  PGresult *r = NULL;
  if (PQstatus(b->lconn) != CONNECTION_OK) {
    set_err(b, "listen: connect", PQerrorMessage(b->lconn));
    goto fail;
  }
  r = PQexec(b->lconn, "LISTEN skiff_control");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    set_err(b, "listen", PQresultErrorMessage(r));
    goto fail;
  }
  PQclear(r);
  if (PQsetnonblocking(b->lconn, 1) != 0) goto fail;
  return PQsocket(b->lconn);
fail:
  PQclear(r);
  PQfinish(b->lconn);
  b->lconn = NULL;
  return SK_ESTORE;
}

static int pg_notify_poll(ctl_backend_t *be) {
  pg_backend_t *b = PB(be);
  if (!b->lconn) return SK_ESTORE;
  if (!PQconsumeInput(b->lconn) || PQstatus(b->lconn) != CONNECTION_OK) {
    set_err(b, "listen", PQerrorMessage(b->lconn));
    PQfinish(b->lconn);
    b->lconn = NULL;
    return SK_ESTORE;
  }
  int n = 0;
  PGnotify *nf;
  int self = b->conn ? PQbackendPID(b->conn) : 0;
  while ((nf = PQnotifies(b->lconn))) {
    if (nf->be_pid != self) n++; /* our own commits were dispatched already */
    PQfreemem(nf);
  }
  return n;
}

static const char *pg_errmsg(ctl_backend_t *b) { return PB(b)->err; }

static void pg_close(ctl_backend_t *be) {
  if (!be) return;
  pg_backend_t *b = PB(be);
  PQfinish(b->conn);
  PQfinish(b->lconn);
  if (b->url) {
    memset(b->url, 0, strlen(b->url)); /* the password */
    free(b->url);
  }
  free(b);
}

static const ctl_backend_ops_t pg_ops = {
    .name = "postgres",
    .tx = pg_tx,
    .next_rv = pg_next_rv,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
    .get = pg_get,
    .put = pg_put,
    .del = pg_del,
    .list = pg_list,
    .event_add = pg_event_add,
    .events_since = pg_events_since,
    .events_trim = pg_events_trim,
    .audit_add = pg_audit_add,
    .audit_query = pg_audit_query,
    .audit_prune = pg_audit_prune,
    .token_add = pg_token_add,
    .token_count_live = pg_token_count_live,
    .token_revoke = pg_token_revoke,
    .token_list = pg_token_list,
    .token_find = pg_token_find,
    .join_add = pg_join_add,
    .join_prune = pg_join_prune,
    .join_find = pg_join_find,
    .join_use = pg_join_use,
    .notify_fd = pg_notify_fd,
    .notify_poll = pg_notify_poll,
    .errmsg = pg_errmsg,
    .sqlite = NULL,
    .close = pg_close,
};

#define MAX_URL 4096

int ctl_backend_pg_open(const char *url, int durable, ctl_backend_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!url || strlen(url) > MAX_URL) {
    if (err) snprintf(err, errlen, "store: the PostgreSQL URL is missing or longer than %d bytes", MAX_URL);
    return SK_EINVAL;
  }
  pg_backend_t *b = sk_xcalloc(1, sizeof *b);
  b->base.ops = &pg_ops;
  b->url = sk_xstrdup(url);
  b->durable = durable;
  ctl_backend_pg_redact(url, b->shown, sizeof b->shown);
  int rc = connect_now(b);
  if (rc >= 0) rc = migrate(b);
  if (rc < 0) {
    if (err) snprintf(err, errlen, "store %s: %s", b->shown, b->err);
    pg_close(&b->base);
    return rc;
  }
  *out = &b->base;
  return 0;
}
