/* skiff-telemetry metrics store: chunk codec, index and matchers, limits,
 * WAL replay (torn tails too), compaction to sqlite, retention, and a kill -9
 * in the middle of ingest losing nothing acknowledged. */
#include "sk_test.h"

#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "skiff/err.h"
#include "skiff/mem.h"
#include "tl_tsdb.h"

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int same_double(double a, double b) {
  uint64_t x, y;
  memcpy(&x, &a, 8);
  memcpy(&y, &b, 8);
  return x == y;
}

static void roundtrip(const int64_t *ts, const double *v, size_t n) {
  tl_chunk_t c;
  tl_chunk_init(&c);
  for (size_t i = 0; i < n; i++) tl_chunk_append(&c, ts[i], v[i]);
  assert_int_equal(c.n, n);
  tl_chunk_iter_t it;
  tl_chunk_iter_init(&it, c.buf, tl_chunk_bytes(&c), c.n);
  for (size_t i = 0; i < n; i++) {
    int64_t t;
    double x;
    assert_int_equal(tl_chunk_iter_next(&it, &t, &x), 1);
    assert_true(t == ts[i]);
    assert_true(same_double(x, v[i]));
  }
  int64_t t;
  double x;
  assert_int_equal(tl_chunk_iter_next(&it, &t, &x), 0);
  tl_chunk_done(&c);
}

static void test_chunk_regular(void **state) {
  int64_t ts[120];
  double v[120];
  for (int i = 0; i < 120; i++) {
    ts[i] = 1700000000000LL + i * 15000;
    v[i] = i * 3.0;
  }
  roundtrip(ts, v, 120);
  /* a regular scrape compresses to a couple of bytes per sample */
  tl_chunk_t c;
  tl_chunk_init(&c);
  for (int i = 0; i < 120; i++) tl_chunk_append(&c, ts[i], 42.0);
  assert_true(tl_chunk_bytes(&c) < 60);
  tl_chunk_done(&c);
}

static void test_chunk_random_and_edges(void **state) {
  for (int round = 0; round < 200; round++) {
    size_t n = 1 + rnd() % 200;
    int64_t *ts = malloc(n * sizeof *ts);
    double *v = malloc(n * sizeof *v);
    int64_t t = (int64_t)(rnd() % 2000000000000ULL) - 1000000000000LL;
    for (size_t i = 0; i < n; i++) {
      switch (rnd() % 6) {
      case 0: t += 1; break;
      case 1: t += (int64_t)(rnd() % 100000); break;
      case 2: t += (int64_t)(rnd() % 10000000000ULL); break;
      default: t += 15000; break;
      }
      ts[i] = t;
      uint64_t bits = rnd();
      switch (rnd() % 8) {
      case 0: v[i] = NAN; break;
      case 1: v[i] = INFINITY; break;
      case 2: v[i] = -INFINITY; break;
      case 3: v[i] = -0.0; break;
      case 4: memcpy(&v[i], &bits, 8); break; /* any bit pattern, NaN payloads too */
      case 5: v[i] = i ? v[i - 1] : 1; break;
      default: v[i] = (double)(rnd() % 1000) / 7.0; break;
      }
    }
    roundtrip(ts, v, n);
    free(ts);
    free(v);
  }
  /* extreme timestamps and deltas */
  int64_t ts[] = {INT64_MIN, -1, 0, 1, INT64_MAX / 2, INT64_MAX};
  double v[] = {DBL_MAX, -DBL_MAX, DBL_MIN, 5e-324, 0, 1};
  roundtrip(ts, v, 6);
}

/* The shapes answered without regexec ("lit", "lit.*", ".*", ".+") agree
 * with the compiled regex on every value, and the others still use it. */
static void test_matcher_fast_paths(void **state) {
  const char *pats[] = {"i1.*", "", ".*", ".+", "abc", "a.b", "i1.*x", "(?i)abc", "ab|abc", "a.+", "i1\\..*"};
  const char *vals[] = {"", "i", "i1", "i10", "i1x", "abc", "ABC", "abcd", "axb", "i1\nx", "i1.5", "a\nb"};
  int fast = 0;
  for (size_t p = 0; p < sizeof pats / sizeof *pats; p++) {
    for (int op = TL_MATCH_RE; op <= TL_MATCH_NRE; op++) {
      tl_matcher_t m;
      assert_int_equal(tl_matcher_init(&m, (tl_match_op_t)op, "l", pats[p], NULL, 0), 0);
      if (m.re_fast) fast++;
      for (size_t v = 0; v < sizeof vals / sizeof *vals; v++) {
        int want = regexec(&m.re, vals[v], 0, NULL, 0) == 0;
        if (op == TL_MATCH_NRE) want = !want;
        if (tl_matcher_matches(&m, vals[v]) != want) fail_msg("pattern \"%s\" value \"%s\"", pats[p], vals[v]);
      }
      tl_matcher_done(&m);
    }
  }
  assert_int_equal(fast, 2 * 5); /* i1.*, "", .*, .+, abc */
}

static void test_chunk_corrupt(void **state) {
  uint8_t junk[5] = {0xff, 0xff, 0xff, 0xff, 0xff};
  tl_chunk_iter_t it;
  tl_chunk_iter_init(&it, junk, sizeof junk, 3);
  int64_t t;
  double v;
  assert_int_equal(tl_chunk_iter_next(&it, &t, &v), SK_EPARSE);
}

/* ---- store ---- */

/* sk_test_tmpdir() is one directory per process: a subdirectory per test */
static const char *fresh_dir(void) {
  static int n;
  static char bufs[32][1024];
  char *b = bufs[n % 32];
  snprintf(b, 1024, "%s/db%d", sk_test_tmpdir(), n++);
  return b;
}

static tl_tsdb_t *open_db(const char *dir, const tl_tsdb_opts_t *o) {
  tl_tsdb_t *db = NULL;
  char err[256];
  int rc = tl_tsdb_open(dir, o, &db, err, sizeof err);
  if (rc < 0) fail_msg("open %s: %s", dir, err);
  return db;
}

static int app(tl_tsdb_t *db, const char *name, const char *job, const char *inst, int64_t t, double v) {
  tl_label_t l[3] = {{"__name__", name}, {"job", job}, {"instance", inst}};
  return tl_tsdb_append(db, l, 3, t, v);
}

static size_t sel(tl_tsdb_t *db, sk_pool_t *p, const char *name, tl_match_op_t op, const char *lname,
                  const char *lval, int64_t mint, int64_t maxt, tl_series_t **out) {
  tl_matcher_t m[2];
  memset(m, 0, sizeof m); /* gcc -O2 -Wmaybe-uninitialized: m goes to select even when nm == 0 */
  size_t nm = 0;
  if (name) tl_matcher_init(&m[nm++], TL_MATCH_EQ, "__name__", name, NULL, 0);
  if (lname) assert_int_equal(tl_matcher_init(&m[nm++], op, lname, lval, NULL, 0), 0);
  size_t n = 0;
  assert_int_equal(tl_tsdb_select(db, p, m, nm, mint, maxt, 0, 0, out, &n), 0);
  for (size_t i = 0; i < nm; i++) tl_matcher_done(&m[i]);
  return n;
}

static void test_append_select_matchers(void **state) {
  const char *dir = fresh_dir();
  tl_tsdb_t *db = open_db(dir, NULL);
  sk_pool_t *p = sk_pool_new();
  for (int i = 0; i < 10; i++) {
    assert_int_equal(app(db, "up", "api", "a:1", 1000 + i * 1000, 1), 0);
    assert_int_equal(app(db, "up", "api", "b:1", 1000 + i * 1000, 0), 0);
    assert_int_equal(app(db, "up", "db", "c:1", 1000 + i * 1000, 1), 0);
    assert_int_equal(app(db, "reqs", "api", "a:1", 1000 + i * 1000, i * 10.0), 0);
  }
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_series_t *s;
  assert_int_equal(sel(db, p, "up", 0, NULL, NULL, 0, 100000, &s), 3);
  /* sorted by labels: instance a, b, c */
  assert_string_equal(s[0].labels[1].value, "a:1");
  assert_string_equal(s[0].labels[0].name, "__name__");
  assert_int_equal(s[0].n, 10);
  assert_int_equal(sel(db, p, "up", TL_MATCH_EQ, "job", "api", 0, 100000, &s), 2);
  assert_int_equal(sel(db, p, "up", TL_MATCH_NE, "job", "api", 0, 100000, &s), 1);
  assert_string_equal(s[0].labels[1].value, "c:1");
  assert_int_equal(sel(db, p, "up", TL_MATCH_RE, "instance", "a:.*|c:1", 0, 100000, &s), 2);
  assert_int_equal(sel(db, p, "up", TL_MATCH_RE, "instance", "a", 0, 100000, &s), 0); /* anchored */
  assert_int_equal(sel(db, p, "up", TL_MATCH_NRE, "instance", "a.*", 0, 100000, &s), 2);
  assert_int_equal(sel(db, p, NULL, TL_MATCH_RE, "job", "d.", 0, 100000, &s), 1);
  assert_int_equal(sel(db, p, "up", TL_MATCH_EQ, "nope", "", 0, 100000, &s), 3); /* absent label == "" */
  /* time bounds are inclusive */
  assert_int_equal(sel(db, p, "reqs", 0, NULL, NULL, 3000, 5000, &s), 1);
  assert_int_equal(s[0].n, 3);
  assert_true(s[0].ts[0] == 3000 && s[0].v[0] == 20.0 && s[0].ts[2] == 5000);
  /* an all-empty matcher set is refused */
  tl_matcher_t m;
  tl_matcher_init(&m, TL_MATCH_RE, "job", ".*", NULL, 0);
  size_t n;
  assert_int_equal(tl_tsdb_select(db, p, &m, 1, 0, 1, 0, 0, &s, &n), SK_EINVAL);
  tl_matcher_done(&m);
  /* bad regex */
  char err[200];
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "(", err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "invalid regular expression"));
  /* patterns that would make regcomp blow up are refused up front */
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "a+++++", err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "bad repetition"));
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "(a{1000}){1000}", err, sizeof err), SK_EINVAL);
  /* glibc reads "{,m}" and "{,}" as intervals: stacked, they are refused too */
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "(){,1}{77,}", err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "bad repetition"));
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "(){,177}{,}", err, sizeof err), SK_EINVAL);
  /* copies of a group that can match empty cost glibc cubic memory: "^(){,577}$" took over 1 GB */
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "(){,577}a", err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "empty-matching copies"));
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "((a|b){,30}){,30}", err, sizeof err), SK_EINVAL);
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "([a-z0-9-]{1,63}[.]){1,4}(x?){,20}", err, sizeof err), 0);
  tl_matcher_done(&m);
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "(a|b){,1000}", err, sizeof err), 0);
  tl_matcher_done(&m);
  assert_int_equal(tl_matcher_init(&m, TL_MATCH_RE, "job", "a*?b[+*]+\\++", err, sizeof err), 0);
  tl_matcher_done(&m);
  /* labels */
  const char **v;
  assert_int_equal(tl_tsdb_label_names(db, p, NULL, 0, &v, &n), 0);
  assert_int_equal(n, 3);
  assert_string_equal(v[0], "__name__");
  assert_string_equal(v[1], "instance");
  assert_string_equal(v[2], "job");
  assert_int_equal(tl_tsdb_label_values(db, p, "job", NULL, 0, &v, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(v[0], "api");
  tl_matcher_init(&m, TL_MATCH_EQ, "__name__", "reqs", NULL, 0);
  assert_int_equal(tl_tsdb_label_values(db, p, "instance", &m, 1, &v, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(v[0], "a:1");
  tl_matcher_done(&m);
  tl_tsdb_stats_t st;
  tl_tsdb_stats(db, &st);
  assert_int_equal(st.series, 4);
  assert_int_equal(st.samples_appended, 40);
  assert_true(st.wal_bytes > 0 && st.disk_bytes >= st.wal_bytes);
  sk_pool_free(p);
  tl_tsdb_close(db);
}

static void test_order_and_validation(void **state) {
  tl_tsdb_t *db = open_db(fresh_dir(), NULL);
  char err[256];
  assert_int_equal(app(db, "m", "j", "i", 5000, 1), 0);
  assert_int_equal(app(db, "m", "j", "i", 4000, 1), SK_ERANGE);
  tl_tsdb_errmsg(db, err, sizeof err);
  assert_non_null(strstr(err, "out of order"));
  assert_int_equal(app(db, "m", "j", "i", 5000, 1), 0); /* identical duplicate: ignored */
  assert_int_equal(app(db, "m", "j", "i", 5000, 2), SK_EEXIST);
  tl_tsdb_errmsg(db, err, sizeof err);
  assert_non_null(strstr(err, "duplicate sample"));
  tl_label_t nolabel[1] = {{"job", "x"}};
  assert_int_equal(tl_tsdb_append(db, nolabel, 1, 1, 1), SK_EINVAL);
  tl_label_t bad[2] = {{"__name__", "m"}, {"0bad", "x"}};
  assert_int_equal(tl_tsdb_append(db, bad, 2, 1, 1), SK_EINVAL);
  tl_label_t badname[1] = {{"__name__", "a-b"}};
  assert_int_equal(tl_tsdb_append(db, badname, 1, 1, 1), SK_EINVAL);
  tl_label_t dup[3] = {{"__name__", "m"}, {"a", "1"}, {"a", "2"}};
  assert_int_equal(tl_tsdb_append(db, dup, 3, 1, 1), SK_EINVAL);
  /* an empty value drops the label: same series as without it */
  tl_label_t empty[4] = {{"__name__", "m"}, {"job", "j"}, {"instance", "i"}, {"zone", ""}};
  assert_int_equal(tl_tsdb_append(db, empty, 4, 6000, 3), 0);
  tl_tsdb_stats_t st;
  tl_tsdb_stats(db, &st);
  assert_int_equal(st.series, 1);
  tl_tsdb_close(db);
}

static void test_series_limits(void **state) {
  tl_tsdb_opts_t o = {.max_series_per_metric = 3, .max_series = 5};
  tl_tsdb_t *db = open_db(fresh_dir(), &o);
  char inst[16], err[256];
  for (int i = 0; i < 3; i++) {
    snprintf(inst, sizeof inst, "i%d", i);
    assert_int_equal(app(db, "cpu", "j", inst, 1000, 1), 0);
  }
  assert_int_equal(app(db, "cpu", "j", "i9", 1000, 1), SK_ELIMIT);
  tl_tsdb_errmsg(db, err, sizeof err);
  assert_non_null(strstr(err, "series limit per metric"));
  assert_non_null(strstr(err, "\"cpu\""));
  /* existing series still take samples */
  assert_int_equal(app(db, "cpu", "j", "i0", 2000, 1), 0);
  assert_int_equal(app(db, "mem", "j", "i0", 1000, 1), 0);
  assert_int_equal(app(db, "mem", "j", "i1", 1000, 1), 0);
  assert_int_equal(app(db, "disk", "j", "i0", 1000, 1), SK_ELIMIT);
  tl_tsdb_errmsg(db, err, sizeof err);
  assert_non_null(strstr(err, "max_series"));
  /* batch: partial success */
  tl_label_t a[2] = {{"__name__", "mem"}, {"instance", "x"}}, b[2] = {{"__name__", "mem"}, {"instance", "i0"}};
  tl_label_t c[1] = {{"bad", "x"}};
  tl_sample_in_t in[3] = {{a, 2, 5000, 1}, {b, 2, 5000, 1}, {c, 1, 5000, 1}};
  tl_append_result_t res;
  /* {instance="i0"} has no job label: a new series, over the limit as well */
  assert_int_equal(tl_tsdb_append_batch(db, in, 3, &res), 0);
  assert_int_equal(res.rejected_limit, 2);
  assert_int_equal(res.rejected_invalid, 1);
  assert_non_null(strstr(res.first_error, "limit"));
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
}

static void fill(tl_tsdb_t *db, int nseries, int from, int to) {
  char inst[16];
  for (int s = 0; s < nseries; s++) {
    snprintf(inst, sizeof inst, "i%d", s);
    for (int i = from; i < to; i++) assert_int_equal(app(db, "load", "j", inst, (int64_t)i * 1000, i + s * 0.5), 0);
  }
}

static void check(tl_tsdb_t *db, int nseries, int from, int to) {
  sk_pool_t *p = sk_pool_new();
  tl_series_t *s;
  assert_int_equal(sel(db, p, "load", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), (size_t)nseries);
  for (int k = 0; k < nseries; k++) {
    int idx = atoi(s[k].labels[1].value + 1);
    assert_int_equal(s[k].n, (size_t)(to - from));
    for (int i = from; i < to; i++) {
      assert_true(s[k].ts[i - from] == (int64_t)i * 1000);
      assert_true(s[k].v[i - from] == i + idx * 0.5);
    }
  }
  sk_pool_free(p);
}

static void test_wal_replay(void **state) {
  const char *dir = fresh_dir();
  tl_tsdb_t *db = open_db(dir, NULL);
  fill(db, 4, 0, 50);
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
  db = open_db(dir, NULL);
  check(db, 4, 0, 50);
  fill(db, 4, 50, 300); /* closes chunks */
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
  db = open_db(dir, NULL);
  check(db, 4, 0, 300);
  tl_tsdb_close(db);
}

/* A commit whose WAL write fails (the file size limit here, a full disk in
 * production) leaves the store as it was before those appends: nothing of
 * them is served meanwhile, the same samples are accepted again (not "out
 * of order"), and replay gives exactly what was committed. */
static void test_failed_commit_rolls_back(void **state) {
  const char *dir = fresh_dir();
  tl_tsdb_t *db = open_db(dir, NULL);
  fill(db, 3, 0, 70); /* heads partly filled: a byte of each is shared with the refused bits */
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_stats_t st0, st;
  tl_tsdb_stats(db, &st0);
  char wal[1100];
  snprintf(wal, sizeof wal, "%s/wal", dir);
  struct stat sb;
  assert_int_equal(stat(wal, &sb), 0);
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
  lim = old;
  lim.rlim_cur = (rlim_t)sb.st_size + 16;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
  fill(db, 3, 70, 400);                                    /* closes chunks on the way */
  assert_int_equal(app(db, "fresh", "j", "x", 1000, 1), 0); /* a new series too */
  int rc = tl_tsdb_commit(db);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, oldsig);
  assert_true(rc < 0);
  char err[256];
  tl_tsdb_errmsg(db, err, sizeof err);
  assert_non_null(strstr(err, "WAL write failed"));
  check(db, 3, 0, 70);
  tl_tsdb_stats(db, &st);
  assert_int_equal(st.head_samples, st0.head_samples);
  assert_int_equal(st.head_chunks, st0.head_chunks);
  assert_int_equal(st.head_bytes, st0.head_bytes);
  sk_pool_t *p = sk_pool_new();
  tl_series_t *s;
  assert_int_equal(sel(db, p, "fresh", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), 0);
  /* the client's retry */
  fill(db, 3, 70, 400);
  assert_int_equal(app(db, "fresh", "j", "x", 1000, 1), 0);
  assert_int_equal(tl_tsdb_commit(db), 0);
  check(db, 3, 0, 400);
  assert_int_equal(sel(db, p, "fresh", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), 1);
  assert_int_equal(s[0].n, 1);
  tl_tsdb_close(db);
  db = open_db(dir, NULL);
  check(db, 3, 0, 400);
  assert_int_equal(sel(db, p, "fresh", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), 1);
  assert_int_equal(s[0].n, 1);
  sk_pool_free(p);
  tl_tsdb_close(db);
}

static void test_wal_torn_tail(void **state) {
  const char *dir = fresh_dir();
  char path[1024];
  snprintf(path, sizeof path, "%s/wal", dir);
  tl_tsdb_t *db = open_db(dir, NULL);
  fill(db, 2, 0, 10);
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  off_t good = sb.st_size;
  /* an unacknowledged commit cut in the middle of its record */
  db = open_db(dir, NULL);
  fill(db, 2, 10, 20);
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(truncate(path, good + (sb.st_size - good) / 2), 0);
  db = open_db(dir, NULL);
  check(db, 2, 0, 10);
  /* the tail was cut: new commits land after the good data */
  fill(db, 2, 10, 12);
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
  /* garbage appended (a torn write of zeros or random bytes) */
  int fd = open(path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  char junk[100];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)rnd();
  assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);
  db = open_db(dir, NULL);
  check(db, 2, 0, 12);
  tl_tsdb_close(db);
  /* a flipped bit inside the last record: the CRC catches it */
  assert_int_equal(stat(path, &sb), 0);
  fd = open(path, O_RDWR);
  char ch;
  assert_int_equal(pread(fd, &ch, 1, sb.st_size - 3), 1);
  ch ^= 0x10;
  assert_int_equal(pwrite(fd, &ch, 1, sb.st_size - 3), 1);
  close(fd);
  db = open_db(dir, NULL);
  check(db, 2, 0, 10);
  tl_tsdb_close(db);
}

static void test_compaction_and_retention(void **state) {
  const char *dir = fresh_dir();
  tl_tsdb_opts_t o = {.retention_ms = 1000 * 1000};
  tl_tsdb_t *db = open_db(dir, &o);
  fill(db, 3, 0, 500);
  assert_int_equal(tl_tsdb_maintain(db, 500 * 1000), 0);
  tl_tsdb_stats_t st;
  tl_tsdb_stats(db, &st);
  assert_true(st.persisted_chunks >= 3 * 4);
  assert_true(st.head_samples < 3 * 120);
  check(db, 3, 0, 500); /* read back from sqlite + head */
  fill(db, 3, 500, 700);
  assert_int_equal(tl_tsdb_commit(db), 0);
  tl_tsdb_close(db);
  db = open_db(dir, &o);
  check(db, 3, 0, 700);
  /* retention: now = 1600s, keep the last 1000s, whole old chunks go */
  assert_int_equal(tl_tsdb_maintain(db, 1600 * 1000), 0);
  sk_pool_t *p = sk_pool_new();
  tl_series_t *s;
  assert_int_equal(sel(db, p, "load", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), 3);
  assert_true(s[0].ts[0] >= 400 * 1000 && s[0].ts[0] <= 600 * 1000);
  assert_true(s[0].ts[s[0].n - 1] == 699 * 1000);
  /* a series whose newest sample is too old disappears entirely */
  assert_int_equal(tl_tsdb_maintain(db, 2000 * 1000), 0);
  assert_int_equal(sel(db, p, "load", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), 0);
  tl_tsdb_stats(db, &st);
  assert_int_equal(st.series, 0);
  sk_pool_free(p);
  tl_tsdb_close(db);
  db = open_db(dir, &o);
  tl_tsdb_stats(db, &st);
  assert_int_equal(st.series, 0);
  tl_tsdb_close(db);
}

/* The child appends and commits batches, reporting each acknowledged batch
 * on a pipe (and compacting now and then); the parent kills it with SIGKILL
 * at an arbitrary point, reopens, and every acknowledged sample must be
 * there. */
static void test_kill9_loses_nothing_acknowledged(void **state) {
  const char *dir = fresh_dir();
  assert_int_equal(mkdir(dir, 0750), 0);
  for (int round = 0; round < 3; round++) {
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/r%d", dir, round);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      tl_tsdb_t *db = NULL;
      char err[256];
      if (tl_tsdb_open(sub, NULL, &db, err, sizeof err) < 0) _exit(2);
      for (int batch = 0;; batch++) {
        char inst[16];
        for (int s = 0; s < 20; s++) {
          snprintf(inst, sizeof inst, "i%d", s);
          tl_label_t l[2] = {{"__name__", "k"}, {"instance", inst}};
          if (tl_tsdb_append(db, l, 2, (int64_t)batch * 1000, batch) < 0) _exit(3);
        }
        if (tl_tsdb_commit(db) < 0) _exit(4);
        if (batch % 50 == 49 && tl_tsdb_maintain(db, (int64_t)batch * 1000) < 0) _exit(5);
        if (write(fds[1], &batch, sizeof batch) != sizeof batch) _exit(6);
      }
    }
    close(fds[1]);
    int acked = -1, b;
    int target = 100 + round * 137;
    while (acked < target && read(fds[0], &b, sizeof b) == sizeof b) acked = b;
    kill(pid, SIGKILL);
    /* acknowledgements already in the pipe count too */
    while (read(fds[0], &b, sizeof b) == sizeof b) acked = b;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_true(acked >= target);
    tl_tsdb_t *db = open_db(sub, NULL);
    sk_pool_t *p = sk_pool_new();
    tl_series_t *s;
    assert_int_equal(sel(db, p, "k", 0, NULL, NULL, INT64_MIN, INT64_MAX, &s), 20);
    for (int k = 0; k < 20; k++) {
      assert_true(s[k].n >= (size_t)acked + 1);
      for (int i = 0; i <= acked; i++) {
        assert_true(s[k].ts[i] == (int64_t)i * 1000);
        assert_true(s[k].v[i] == i);
      }
    }
    sk_pool_free(p);
    tl_tsdb_close(db);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_chunk_regular),
      cmocka_unit_test(test_chunk_random_and_edges),
      cmocka_unit_test(test_chunk_corrupt),
      cmocka_unit_test(test_matcher_fast_paths),
      cmocka_unit_test(test_append_select_matchers),
      cmocka_unit_test(test_order_and_validation),
      cmocka_unit_test(test_series_limits),
      cmocka_unit_test(test_wal_replay),
      cmocka_unit_test(test_wal_torn_tail),
      cmocka_unit_test(test_failed_commit_rolls_back),
      cmocka_unit_test(test_compaction_and_retention),
      cmocka_unit_test(test_kill9_loses_nothing_acknowledged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
