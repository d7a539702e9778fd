/* skiff/store.h - sqlite3 storage helper.
 *
 * sk_store_open() opens (or creates) a database file with journal_mode=WAL,
 * synchronous=FULL (NORMAL when the caller asks for non-durable mode),
 * foreign_keys=ON and a busy timeout, then applies the schema migrations it
 * is given: an ordered array of SQL scripts, migration i (0-based) taking
 * the database from PRAGMA user_version i to i+1 in its own transaction.
 * Reopening applies only the missing ones; a database newer than the code
 * is refused.
 *
 * Values only ever reach SQL through bound parameters: statements come
 * from a per-connection cache keyed by SQL text, and typed arguments
 * (sk_sql_arg_t) are bound by position (?1, ?2, ... or plain ?).
 *
 * Every sqlite failure is SK_ESTORE; sk_store_errmsg() gives sqlite's
 * message and sk_store_errcode() its extended result code for the last
 * failure (so a caller can tell a constraint violation, SQLITE_CONSTRAINT_*,
 * or a locked database, SQLITE_BUSY, apart). SK_ENOTFOUND is a missing row
 * where a row is expected, SK_EINVAL misuse. A store handle is used by one
 * thread at a time. */
#ifndef SKIFF_STORE_H
#define SKIFF_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"

typedef struct sk_store sk_store_t;
typedef struct sk_stmt sk_stmt_t;

typedef struct sk_store_opts {
  const char *path;          /* file path, or ":memory:" */
  int non_durable;           /* 1 = synchronous=NORMAL (may lose the last commits on power loss) */
  int readonly;              /* open read-only; migrations must already be applied */
  int busy_timeout_ms;       /* default 5000 */
  const char *const *migrations; /* ordered SQL scripts (several statements each) */
  size_t nmigrations;
  size_t stmt_cache_max;     /* cached statements, default 64 */
} sk_store_opts_t;

int sk_store_open(const sk_store_opts_t *o, sk_store_t **out);
/* Finalizes every statement and closes; accepts NULL. */
void sk_store_close(sk_store_t *s);
/* sqlite's message for the last failure on s ("" if none); valid until the
 * next call on s. */
const char *sk_store_errmsg(const sk_store_t *s);
/* sqlite extended result code of the last failure (0 if none). */
int sk_store_errcode(const sk_store_t *s);
/* 1 if the last failure was a constraint violation (UNIQUE, FOREIGN KEY, ...). */
int sk_store_failed_constraint(const sk_store_t *s);
/* For sk_store_open failures, where no handle exists: the message of the
 * last open that failed on this thread. */
const char *sk_store_open_errmsg(void);
/* PRAGMA user_version: the number of migrations applied. */
int sk_store_schema_version(sk_store_t *s);
/* The raw connection, for what this API lacks (no string-built SQL!). */
struct sqlite3 *sk_store_db(sk_store_t *s);

/* ---- typed arguments ---- */

typedef enum sk_sql_type {
  SK_SQL_T_NULL = 0,
  SK_SQL_T_INT64,
  SK_SQL_T_DOUBLE,
  SK_SQL_T_TEXT,
  SK_SQL_T_BLOB,
} sk_sql_type_t;

typedef struct sk_sql_arg {
  sk_sql_type_t type;
  int64_t i;
  double d;
  const void *p; /* text (NUL-terminated when n < 0) or blob */
  int64_t n;     /* byte length; text: -1 = strlen */
} sk_sql_arg_t;

#define SK_SQL_NULL ((sk_sql_arg_t){.type = SK_SQL_T_NULL})
#define SK_SQL_INT(v) ((sk_sql_arg_t){.type = SK_SQL_T_INT64, .i = (int64_t)(v)})
#define SK_SQL_DOUBLE(v) ((sk_sql_arg_t){.type = SK_SQL_T_DOUBLE, .d = (double)(v)})
#define SK_SQL_TEXT(s) ((sk_sql_arg_t){.type = SK_SQL_T_TEXT, .p = (s), .n = -1})
#define SK_SQL_TEXTN(s, len) ((sk_sql_arg_t){.type = SK_SQL_T_TEXT, .p = (s), .n = (int64_t)(len)})
#define SK_SQL_BLOB(b, len) ((sk_sql_arg_t){.type = SK_SQL_T_BLOB, .p = (b), .n = (int64_t)(len)})
/* NULL text pointer binds SQL NULL. */
#define SK_SQL_ARGS(...) ((const sk_sql_arg_t[]){__VA_ARGS__}), \
  (sizeof((const sk_sql_arg_t[]){__VA_ARGS__}) / sizeof(sk_sql_arg_t))

/* ---- statements ---- */

/* A statement from the cache (prepared on first use), reset and with no
 * bindings. Must be given back with sk_stmt_done(). If the cached one is
 * already in use (nested queries with the same SQL), a private statement
 * is prepared. sql must be one statement. */
int sk_store_prepare(sk_store_t *s, const char *sql, sk_stmt_t **out);
/* Binds args to parameters 1..n. */
int sk_stmt_bind(sk_stmt_t *st, const sk_sql_arg_t *args, size_t n);
int sk_stmt_bind_int64(sk_stmt_t *st, int idx, int64_t v);
int sk_stmt_bind_double(sk_stmt_t *st, int idx, double v);
int sk_stmt_bind_text(sk_stmt_t *st, int idx, const char *v, int64_t len); /* len -1 = strlen */
int sk_stmt_bind_blob(sk_stmt_t *st, int idx, const void *v, size_t len);
int sk_stmt_bind_null(sk_stmt_t *st, int idx);
/* 1 = a row is available, 0 = done, < 0 error. */
int sk_stmt_step(sk_stmt_t *st);
int sk_stmt_column_count(sk_stmt_t *st);
int sk_stmt_is_null(sk_stmt_t *st, int col);
int64_t sk_stmt_int64(sk_stmt_t *st, int col);
double sk_stmt_double(sk_stmt_t *st, int col);
/* Valid until the next step or done; "" for NULL. */
const char *sk_stmt_text(sk_stmt_t *st, int col);
const void *sk_stmt_blob(sk_stmt_t *st, int col, size_t *len);
/* Resets and returns the statement to the cache (accepts NULL). */
void sk_stmt_done(sk_stmt_t *st);

/* ---- one-call helpers ---- */

/* Runs one statement to completion; returns the number of rows changed. */
int sk_store_exec(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs);
/* Called per row; return 0 to go on, > 0 to stop early (returned by
 * sk_store_query), < 0 to fail (returned as is). */
typedef int (*sk_store_row_fn)(sk_stmt_t *row, void *ud);
/* Returns the number of rows seen, or fn's value when it stopped early. */
int sk_store_query(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs,
                   sk_store_row_fn fn, void *ud);
/* First column of the first row; SK_ENOTFOUND when there is no row. */
int sk_store_query_int64(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs,
                         int64_t *out);
/* Copies the first column of the first row as text (NUL-terminated) into
 * out; SK_ENOTFOUND when there is no row. */
int sk_store_query_text(sk_store_t *s, const char *sql, const sk_sql_arg_t *args, size_t nargs,
                        sk_buf_t *out);
int64_t sk_store_last_insert_id(sk_store_t *s);

/* Runs fn inside BEGIN IMMEDIATE ... COMMIT; a negative return from fn (or
 * a failed COMMIT) rolls back and is returned. Nested calls use
 * savepoints. Returns fn's value on success. */
typedef int (*sk_store_tx_fn)(sk_store_t *s, void *ud);
int sk_store_tx(sk_store_t *s, sk_store_tx_fn fn, void *ud);

#endif
