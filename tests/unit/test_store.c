/* Unit tests: sqlite store helper. */
#include "sk_test.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/store.h"

static const char *const migrations_v2[] = {
    "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB);\n"
    "CREATE INDEX item_name ON item(name);",
    "CREATE TABLE tag (item_id INTEGER NOT NULL REFERENCES item(id), tag TEXT NOT NULL);\n"
    "ALTER TABLE item ADD COLUMN score REAL;",
};

static const char *db_path(const char *name) {
  static char p[512];
  snprintf(p, sizeof p, "%s/%s", sk_test_tmpdir(), name);
  return p;
}

static sk_store_t *open_db(const char *path, const char *const *mig, size_t n, int non_durable) {
  sk_store_opts_t o = {.path = path, .migrations = mig, .nmigrations = n, .non_durable = non_durable};
  sk_store_t *s = NULL;
  int rc = sk_store_open(&o, &s);
  if (rc < 0) fail_msg("open %s: %s (%s)", path, sk_store_open_errmsg(), sk_strerror(rc));
  return s;
}

static void test_open_pragmas(void **state) {
  const char *path = db_path("pragmas.db");
  sk_store_t *s = open_db(path, migrations_v2, 2, 0);
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_store_query_text(s, "PRAGMA journal_mode", NULL, 0, &b), 0);
  assert_string_equal(sk_buf_cstr(&b), "wal");
  sk_buf_done(&b);
  int64_t v;
  assert_int_equal(sk_store_query_int64(s, "PRAGMA synchronous", NULL, 0, &v), 0);
  assert_int_equal(v, 2); /* FULL */
  assert_int_equal(sk_store_query_int64(s, "PRAGMA foreign_keys", NULL, 0, &v), 0);
  assert_int_equal(v, 1);
  assert_int_equal(sk_store_schema_version(s), 2);
  sk_store_close(s);

  s = open_db(db_path("fast.db"), NULL, 0, 1);
  assert_int_equal(sk_store_query_int64(s, "PRAGMA synchronous", NULL, 0, &v), 0);
  assert_int_equal(v, 1); /* NORMAL */
  assert_int_equal(sk_store_schema_version(s), 0);
  sk_store_close(s);
  sk_store_close(NULL);

  /* a path that cannot be opened */
  sk_store_opts_t o = {.path = "/nonexistent-dir/x/y.db"};
  assert_int_equal(sk_store_open(&o, &s), SK_ESTORE);
  assert_null(s);
  assert_non_null(strstr(sk_store_open_errmsg(), "/nonexistent-dir/x/y.db"));
}

static void test_migrations(void **state) {
  const char *path = db_path("mig.db");
  /* first only migration 0 */
  sk_store_t *s = open_db(path, migrations_v2, 1, 0);
  assert_int_equal(sk_store_schema_version(s), 1);
  assert_int_equal(sk_store_exec(s, "INSERT INTO item(name) VALUES (?)", SK_SQL_ARGS(SK_SQL_TEXT("a"))), 1);
  sk_store_close(s);
  /* then both: only the missing one runs (a rerun of 0 would fail: table exists) */
  s = open_db(path, migrations_v2, 2, 0);
  assert_int_equal(sk_store_schema_version(s), 2);
  assert_int_equal(sk_store_exec(s, "UPDATE item SET score = ? WHERE name = ?",
                                 SK_SQL_ARGS(SK_SQL_DOUBLE(1.5), SK_SQL_TEXT("a"))), 1);
  sk_store_close(s);
  /* reopening is idempotent */
  s = open_db(path, migrations_v2, 2, 0);
  assert_int_equal(sk_store_schema_version(s), 2);
  int64_t n;
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 1);
  sk_store_close(s);

  /* a database newer than the code is refused */
  sk_store_opts_t o = {.path = path, .migrations = migrations_v2, .nmigrations = 1};
  assert_int_equal(sk_store_open(&o, &s), SK_ESTORE);
  assert_non_null(strstr(sk_store_open_errmsg(), "newer"));

  /* a failing migration names itself, rolls back whole and leaves the version */
  const char *const bad[] = {
      migrations_v2[0],
      migrations_v2[1],
      "CREATE TABLE half (x INTEGER);\nINSERT INTO nosuchtable VALUES (1);",
  };
  o = (sk_store_opts_t){.path = path, .migrations = bad, .nmigrations = 3};
  assert_int_equal(sk_store_open(&o, &s), SK_ESTORE);
  assert_null(s);
  const char *msg = sk_store_open_errmsg();
  assert_non_null(strstr(msg, "migration 2"));
  assert_non_null(strstr(msg, "nosuchtable"));
  s = open_db(path, migrations_v2, 2, 0);
  assert_int_equal(sk_store_schema_version(s), 2);
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM sqlite_master WHERE name = ?",
                                        SK_SQL_ARGS(SK_SQL_TEXT("half")), &n), 0);
  assert_int_equal(n, 0); /* the half-applied CREATE was rolled back */
  sk_store_close(s);
}

struct collect {
  char names[8][32];
  int n;
};

static int collect_row(sk_stmt_t *row, void *ud) {
  struct collect *c = ud;
  snprintf(c->names[c->n++], sizeof c->names[0], "%s:%lld", sk_stmt_text(row, 0),
           (long long)sk_stmt_int64(row, 1));
  return c->n == 8 ? 1 : 0;
}

static void test_statements(void **state) {
  sk_store_t *s = open_db(db_path("stmt.db"), migrations_v2, 2, 0);
  const char *ins = "INSERT INTO item(name, data, score) VALUES (?1, ?2, ?3)";
  static const unsigned char blob[] = {0, 1, 2, 0xff, 0};
  /* a hostile value is just data */
  const char *evil = "x'); DROP TABLE item; --";
  assert_int_equal(sk_store_exec(s, ins, SK_SQL_ARGS(SK_SQL_TEXT(evil), SK_SQL_BLOB(blob, sizeof blob), SK_SQL_DOUBLE(2.5))), 1);
  int64_t id1 = sk_store_last_insert_id(s);
  assert_true(id1 > 0);
  assert_int_equal(sk_store_exec(s, ins, SK_SQL_ARGS(SK_SQL_TEXT("b"), SK_SQL_NULL, SK_SQL_INT(7))), 1);
  assert_int_equal(sk_store_exec(s, ins, SK_SQL_ARGS(SK_SQL_TEXTN("cdef", 1), SK_SQL_NULL, SK_SQL_NULL)), 1);

  /* typed reads through an explicit statement */
  sk_stmt_t *st;
  assert_int_equal(sk_store_prepare(s, "SELECT name, data, score FROM item WHERE id = ?", &st), 0);
  assert_int_equal(sk_stmt_bind_int64(st, 1, id1), 0);
  assert_int_equal(sk_stmt_step(st), 1);
  assert_string_equal(sk_stmt_text(st, 0), evil);
  size_t len;
  const void *p = sk_stmt_blob(st, 1, &len);
  assert_int_equal(len, sizeof blob);
  assert_memory_equal(p, blob, sizeof blob);
  assert_true(sk_stmt_double(st, 2) == 2.5);
  assert_int_equal(sk_stmt_column_count(st), 3);
  assert_int_equal(sk_stmt_step(st), 0);

  /* the same SQL while st is in use gets a private statement */
  sk_stmt_t *st2;
  assert_int_equal(sk_store_prepare(s, "SELECT name, data, score FROM item WHERE id = ?", &st2), 0);
  assert_ptr_not_equal(st, st2);
  assert_int_equal(sk_stmt_bind_int64(st2, 1, id1 + 1), 0);
  assert_int_equal(sk_stmt_step(st2), 1);
  assert_string_equal(sk_stmt_text(st2, 0), "b");
  assert_true(sk_stmt_is_null(st2, 1));
  assert_int_equal(sk_stmt_int64(st2, 2), 7);
  sk_stmt_done(st2);
  sk_stmt_done(st);
  /* back from the cache: same statement, bindings cleared */
  assert_int_equal(sk_store_prepare(s, "SELECT name, data, score FROM item WHERE id = ?", &st2), 0);
  assert_ptr_equal(st, st2);
  assert_int_equal(sk_stmt_step(st2), 0); /* id = NULL matches nothing */
  sk_stmt_done(st2);
  sk_stmt_done(NULL);

  int drc = sk_store_exec(s, "DROP TABLE IF EXISTS no_such_table", NULL, 0);
  if (drc != 0) fail_msg("drop: %s", sk_store_errmsg(s));

  struct collect c = {0};
  assert_int_equal(sk_store_query(s, "SELECT name, coalesce(score, -1) FROM item ORDER BY name", NULL, 0, collect_row, &c), 3);
  assert_int_equal(c.n, 3);
  assert_string_equal(c.names[0], "b:7");
  assert_string_equal(c.names[1], "c:-1");
  assert_string_equal(c.names[2], "x'); DROP TABLE item; --:2");

  int64_t v;
  assert_int_equal(sk_store_query_int64(s, "SELECT id FROM item WHERE name = ?", SK_SQL_ARGS(SK_SQL_TEXT("zzz")), &v), SK_ENOTFOUND);

  /* errors: constraint, wrong arg count, bad SQL, two statements */
  assert_int_equal(sk_store_exec(s, ins, SK_SQL_ARGS(SK_SQL_TEXT("b"), SK_SQL_NULL, SK_SQL_NULL)), SK_ESTORE);
  assert_true(sk_store_failed_constraint(s));
  assert_non_null(strstr(sk_store_errmsg(s), "UNIQUE"));
  assert_int_equal(sk_store_exec(s, "INSERT INTO tag(item_id, tag) VALUES (?, ?)", SK_SQL_ARGS(SK_SQL_INT(999), SK_SQL_TEXT("t"))), SK_ESTORE);
  assert_non_null(strstr(sk_store_errmsg(s), "FOREIGN KEY"));
  assert_int_equal(sk_store_exec(s, ins, SK_SQL_ARGS(SK_SQL_TEXT("only one"))), SK_EINVAL);
  assert_int_equal(sk_store_exec(s, "SELEKT 1", NULL, 0), SK_ESTORE);
  assert_non_null(strstr(sk_store_errmsg(s), "syntax error"));
  assert_int_equal(sk_store_prepare(s, "SELECT 1; SELECT 2", &st), SK_EINVAL);
  assert_null(st);
  sk_store_close(s);
}

static void test_stmt_cache_eviction(void **state) {
  sk_store_opts_t o = {.path = ":memory:", .stmt_cache_max = 4};
  sk_store_t *s;
  assert_int_equal(sk_store_open(&o, &s), 0);
  char sql[64];
  for (int i = 0; i < 50; i++) {
    snprintf(sql, sizeof sql, "SELECT %d", i); /* test-only constant SQL */
    int64_t v;
    assert_int_equal(sk_store_query_int64(s, sql, NULL, 0, &v), 0);
    assert_int_equal(v, i);
  }
  sk_store_close(s);
}

static int tx_insert_then(sk_store_t *s, void *ud) {
  int fail = *(int *)ud;
  int rc = sk_store_exec(s, "INSERT INTO item(name) VALUES (?)", SK_SQL_ARGS(SK_SQL_TEXT("tx1")));
  if (rc < 0) return rc;
  rc = sk_store_exec(s, "INSERT INTO item(name) VALUES (?)", SK_SQL_ARGS(SK_SQL_TEXT(fail ? "tx1" : "tx2")));
  if (rc < 0) return rc; /* UNIQUE violation when fail */
  return 5;
}

static int tx_nested(sk_store_t *s, void *ud) {
  int rc = sk_store_exec(s, "INSERT INTO item(name) VALUES (?)", SK_SQL_ARGS(SK_SQL_TEXT("outer")));
  if (rc < 0) return rc;
  int fail = 1;
  rc = sk_store_tx(s, tx_insert_then, &fail); /* inner fails and rolls back alone */
  assert_int_equal(rc, SK_ESTORE);
  return 0;
}

static void test_transactions(void **state) {
  sk_store_t *s = open_db(db_path("tx.db"), migrations_v2, 2, 0);
  int fail = 1;
  assert_int_equal(sk_store_tx(s, tx_insert_then, &fail), SK_ESTORE);
  assert_non_null(strstr(sk_store_errmsg(s), "UNIQUE")); /* the cause survives the rollback */
  int64_t n;
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 0);
  fail = 0;
  assert_int_equal(sk_store_tx(s, tx_insert_then, &fail), 5);
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(sk_store_tx(s, tx_nested, NULL), 0);
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item WHERE name = 'outer'", NULL, 0, &n), 0);
  assert_int_equal(n, 1);
  assert_true(sqlite3_get_autocommit(sk_store_db(s)));
  sk_store_close(s);
}

static void test_durability(void **state) {
  const char *path = db_path("durable.db");
  sk_store_t *s = open_db(path, migrations_v2, 2, 0);
  char name[32];
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof name, "n%03d", i);
    assert_int_equal(sk_store_exec(s, "INSERT INTO item(name, score) VALUES (?, ?)",
                                   SK_SQL_ARGS(SK_SQL_TEXT(name), SK_SQL_INT(i))), 1);
  }
  sk_store_close(s);
  /* a second, independent connection (as after a restart) sees every commit */
  s = open_db(path, migrations_v2, 2, 0);
  int64_t n, sum;
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 100);
  assert_int_equal(sk_store_query_int64(s, "SELECT sum(score) FROM item", NULL, 0, &sum), 0);
  assert_int_equal(sum, 4950);
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_store_query_text(s, "SELECT name FROM item WHERE score = ?", SK_SQL_ARGS(SK_SQL_INT(42)), &b), 0);
  assert_string_equal(sk_buf_cstr(&b), "n042");
  sk_buf_done(&b);
  sk_store_close(s);
  /* read-only open works on a migrated database */
  sk_store_opts_t o = {.path = path, .readonly = 1, .migrations = migrations_v2, .nmigrations = 2};
  assert_int_equal(sk_store_open(&o, &s), 0);
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 100);
  assert_int_equal(sk_store_exec(s, "DELETE FROM item", NULL, 0), SK_ESTORE);
  assert_non_null(strstr(sk_store_errmsg(s), "readonly"));
  sk_store_close(s);
}

/* A process killed right after its commits returned loses none of them. */
static void test_crash_after_commit(void **state) {
  const char *path = db_path("crash.db");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    sk_store_opts_t o = {.path = path, .migrations = migrations_v2, .nmigrations = 2};
    sk_store_t *s;
    if (sk_store_open(&o, &s) < 0) _exit(2);
    char name[32];
    for (int i = 0; i < 50; i++) {
      snprintf(name, sizeof name, "c%d", i);
      if (sk_store_exec(s, "INSERT INTO item(name) VALUES (?)", SK_SQL_ARGS(SK_SQL_TEXT(name))) != 1)
        _exit(3);
    }
    raise(SIGKILL); /* no close, no checkpoint */
    _exit(4);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  sk_store_t *s = open_db(path, migrations_v2, 2, 0);
  int64_t n;
  assert_int_equal(sk_store_query_int64(s, "SELECT count(*) FROM item", NULL, 0, &n), 0);
  assert_int_equal(n, 50);
  sk_store_close(s);
}

/* Several processes opening a new database at once: one migrates, the
 * others see the migrated schema; nobody fails or migrates twice. */
static void test_concurrent_migration(void **state) {
  const char *path = db_path("race.db");
  pid_t kids[4];
  for (int k = 0; k < 4; k++) {
    kids[k] = fork();
    assert_true(kids[k] >= 0);
    if (kids[k] == 0) {
      sk_store_opts_t o = {.path = path, .migrations = migrations_v2, .nmigrations = 2,
                           .busy_timeout_ms = 20000};
      sk_store_t *s;
      if (sk_store_open(&o, &s) < 0) {
        fprintf(stderr, "child open: %s\n", sk_store_open_errmsg());
        _exit(2);
      }
      int v = sk_store_schema_version(s);
      sk_store_close(s);
      _exit(v == 2 ? 0 : 3);
    }
  }
  for (int k = 0; k < 4; k++) {
    int st;
    assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
  }
  sk_store_t *s = open_db(path, migrations_v2, 2, 0);
  assert_int_equal(sk_store_schema_version(s), 2);
  sk_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_pragmas),
      cmocka_unit_test(test_migrations),
      cmocka_unit_test(test_statements),
      cmocka_unit_test(test_stmt_cache_eviction),
      cmocka_unit_test(test_transactions),
      cmocka_unit_test(test_durability),
      cmocka_unit_test(test_crash_after_commit),
      cmocka_unit_test(test_concurrent_migration),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
