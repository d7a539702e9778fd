/* tl_tsdb.h - skiff-telemetry's embedded metrics time-series store.
 *
 * Layout on disk (dir/):
 *   wal          write-ahead log: records [u32 len][u32 crc32][payload], a
 *                series record (id + labels) before the first sample of a
 *                series, sample records (series id, ts, value). Replayed on
 *                open; a torn or corrupt tail is cut off at the last good
 *                record.
 *   tsdb.sqlite  series table (id, labels) and full, compressed chunks moved
 *                out of memory by tl_tsdb_maintain().
 *
 * In memory: a head with one open chunk per series (Gorilla style:
 * delta-of-delta timestamps, XOR'd values) plus closed chunks not yet moved
 * to sqlite, and an inverted index label name -> value -> postings.
 *
 * Durability contract: tl_tsdb_append()/tl_tsdb_append_batch() stage samples
 * (they are visible to queries at once); tl_tsdb_commit() writes every staged
 * sample to the WAL and returns only after fdatasync. Acknowledge a write
 * (HTTP 200) only after tl_tsdb_commit() returned >= 0: a kill -9 at any
 * moment after that loses nothing.
 *
 * Ordering: per series, timestamps must increase. A sample older than the
 * series' newest is rejected (SK_ERANGE, "out of order sample"); one with the
 * same timestamp is ignored when the value is identical and rejected
 * otherwise (SK_EEXIST, "duplicate sample for timestamp"), as Prometheus does.
 *
 * Threads: every function takes the store's mutex, so the store may be used
 * from the loop thread and worker threads (uv_queue_work) at once.
 * tl_tsdb_commit() holds it during fdatasync. */
#ifndef TL_TSDB_H
#define TL_TSDB_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"

typedef struct tl_tsdb tl_tsdb_t;

typedef struct tl_label {
  const char *name;
  const char *value;
} tl_label_t;

#define TL_TSDB_MAX_LABELS 64          /* per series, __name__ included */
#define TL_TSDB_MAX_LABEL_BYTES 4096   /* per name or value */
#define TL_TSDB_CHUNK_SAMPLES 120      /* samples per chunk before it closes */

typedef struct tl_tsdb_opts {
  int64_t retention_ms;          /* data older than now - retention is dropped by maintain; 0 = 15 days */
  size_t max_series_per_metric;  /* series with one __name__; 0 = 100000 */
  size_t max_series;             /* all series; 0 = 2000000 */
  int no_sync;                   /* 1 = skip fdatasync (benchmarks/tests only: NOT durable) */
} tl_tsdb_opts_t;

/* Opens or creates dir (mode 0750), loads the series index from sqlite and
 * replays the WAL. err gets a readable reason on failure. */
int tl_tsdb_open(const char *dir, const tl_tsdb_opts_t *o, tl_tsdb_t **out, char *err, size_t errlen);
/* Commits staged samples (best effort), closes files, frees; accepts NULL. */
void tl_tsdb_close(tl_tsdb_t *db);

/* Stages one sample. labels must include __name__; order does not matter;
 * labels with an empty value are dropped (Prometheus semantics). Errors:
 *   SK_EINVAL  bad/missing __name__, bad label name, too many labels, dup names
 *   SK_ELIMIT  a new series would pass max_series_per_metric or max_series
 *   SK_ERANGE  out of order sample;  SK_EEXIST duplicate timestamp, other value
 * tl_tsdb_errmsg() then says why, e.g. "series limit per metric reached:
 * metric \"http_requests_total\" has 100000 series (max_series_per_metric)". */
int tl_tsdb_append(tl_tsdb_t *db, const tl_label_t *labels, size_t n, int64_t ts_ms, double v);

typedef struct tl_sample_in {
  const tl_label_t *labels;
  size_t nlabels;
  int64_t ts_ms;
  double v;
} tl_sample_in_t;

typedef struct tl_append_result {
  size_t accepted;
  size_t rejected_limit;   /* SK_ELIMIT */
  size_t rejected_invalid; /* SK_EINVAL */
  size_t rejected_order;   /* SK_ERANGE / SK_EEXIST */
  char first_error[256];   /* message of the first rejection, "" if none */
} tl_append_result_t;

/* Stages n samples under one lock; a rejected sample does not stop the
 * others (partial success). Returns the number accepted. res may be NULL. */
int tl_tsdb_append_batch(tl_tsdb_t *db, const tl_sample_in_t *s, size_t n, tl_append_result_t *res);

/* Writes every staged sample to the WAL and fdatasyncs. Returns 0 once they
 * are on disk (also when nothing was staged, after any concurrent commit
 * finished), SK_EIO etc. on failure (the samples then stay visible in memory
 * but must not be acknowledged). */
int tl_tsdb_commit(tl_tsdb_t *db);

/* The message of the last failure on this store ("" if none); copied into
 * buf (thread-safe variant). */
void tl_tsdb_errmsg(tl_tsdb_t *db, char *buf, size_t len);

/* Housekeeping, to run from a timer (e.g. every minute; it does disk I/O, so
 * a worker thread is fine): moves closed chunks to sqlite, drops data older
 * than now_ms - retention, and rewrites the WAL so it only holds what is not
 * in sqlite yet. */
int tl_tsdb_maintain(tl_tsdb_t *db, int64_t now_ms);

/* ---- querying ---- */

typedef enum tl_match_op {
  TL_MATCH_EQ = 0, /* =  */
  TL_MATCH_NE,     /* != */
  TL_MATCH_RE,     /* =~ (anchored: the whole value must match) */
  TL_MATCH_NRE,    /* !~ */
} tl_match_op_t;

enum { TL_RE_FAST_NONE = 0, TL_RE_FAST_EXACT, TL_RE_FAST_PREFIX, TL_RE_FAST_NONEMPTY };

typedef struct tl_matcher {
  tl_match_op_t op;
  const char *name;
  const char *value;
  regex_t re;      /* compiled by tl_matcher_init for RE/NRE */
  int re_ok;
  int re_fast;     /* RE/NRE whose answer needs no regexec: TL_RE_FAST_* */
  size_t re_lit;   /* length of the literal (prefix) for the fast kinds */
} tl_matcher_t;

/* Fills m (name/value are borrowed) and compiles the regex anchored as
 * ^(value)$ using POSIX extended syntax (RE2's common subset). SK_EINVAL with a message on a bad
 * regex. Free with tl_matcher_done. */
/* Compiles an RE2-syntax regular expression (as PromQL and LogQL users
 * write it) with POSIX regcomp, translating what differs (tl_regex.c): \d
 * \s \w classes, escaped punctuation, (?:...), named groups, lazy
 * quantifiers, a leading (?i); refuses what POSIX cannot express.
 * TL_RE_ANCHOR matches whole values (^(re)$). groups (may be NULL) gets,
 * for each RE2 capture group number 0..ngroups-1, its regmatch_t index
 * (-1 past the last group). SK_EINVAL with err on a bad expression; on
 * success regfree(rx) later. */
#define TL_RE_ANCHOR 1
#define TL_RE_NOSUB 2
int tl_re_compile(regex_t *rx, const char *re, int flags, int *groups, size_t ngroups, char *err, size_t errlen);

int tl_matcher_init(tl_matcher_t *m, tl_match_op_t op, const char *name, const char *value, char *err,
                    size_t errlen);
void tl_matcher_done(tl_matcher_t *m);
/* 1 if value (NULL = label absent = "") matches. */
int tl_matcher_matches(const tl_matcher_t *m, const char *value);

/* A selected series: labels sorted by name (copied into the caller's pool)
 * and its samples with mint <= ts <= maxt, ascending. */
typedef struct tl_series {
  tl_label_t *labels;
  size_t nlabels;
  int64_t *ts;
  double *v;
  size_t n;
} tl_series_t;

#define TL_SELECT_NO_SAMPLES 1 /* labels only: series that have any sample in [mint, maxt] */

/* Series matching every matcher (at least one matcher must not match the
 * empty string, as in Prometheus) with samples in [mint, maxt]. Output is
 * sorted by labels and allocated from pool. limit caps the number of series
 * (0 = none): more is SK_ELIMIT. */
int tl_tsdb_select(tl_tsdb_t *db, sk_pool_t *pool, const tl_matcher_t *m, size_t nm, int64_t mint,
                   int64_t maxt, int flags, size_t limit, tl_series_t **out, size_t *nout);

/* Sorted distinct label names (nm == 0: of every series) / values of one
 * label among series matching m (nm == 0: all). Time bounds are not applied
 * (the head's index covers every live series). */
int tl_tsdb_label_names(tl_tsdb_t *db, sk_pool_t *pool, const tl_matcher_t *m, size_t nm,
                        const char ***out, size_t *nout);
int tl_tsdb_label_values(tl_tsdb_t *db, sk_pool_t *pool, const char *name, const tl_matcher_t *m,
                         size_t nm, const char ***out, size_t *nout);

/* ---- self-metrics ---- */

typedef struct tl_tsdb_stats {
  uint64_t series;            /* live series */
  uint64_t samples_appended;  /* accepted since open */
  uint64_t samples_rejected;  /* since open */
  uint64_t head_samples;      /* samples in memory */
  uint64_t head_chunks;
  uint64_t head_bytes;        /* compressed chunk bytes in memory */
  uint64_t wal_bytes;
  uint64_t disk_bytes;        /* wal + sqlite files */
  uint64_t persisted_chunks;  /* chunks moved to sqlite since open */
  uint64_t commits;
  int64_t min_time, max_time; /* over the head, INT64_MAX/INT64_MIN if empty */
} tl_tsdb_stats_t;

void tl_tsdb_stats(tl_tsdb_t *db, tl_tsdb_stats_t *st);

/* ---- chunk codec (exposed for tests) ---- */

typedef struct tl_chunk {
  uint8_t *buf;
  size_t cap;      /* bytes allocated */
  size_t nbits;    /* bits written */
  uint32_t n;      /* samples */
  int64_t mint, maxt;
  /* encoder state */
  int64_t t_prev, t_delta;
  uint64_t v_prev;
  uint8_t lead, trail;
} tl_chunk_t;

void tl_chunk_init(tl_chunk_t *c);
void tl_chunk_done(tl_chunk_t *c);
/* Appends; the caller guarantees ts > maxt (except for the first sample). */
void tl_chunk_append(tl_chunk_t *c, int64_t ts, double v);
size_t tl_chunk_bytes(const tl_chunk_t *c);

typedef struct tl_chunk_iter {
  const uint8_t *buf;
  size_t nbits, pos;
  uint32_t n, i;
  int64_t t, delta;
  uint64_t v;
  uint8_t lead, trail;
} tl_chunk_iter_t;

void tl_chunk_iter_init(tl_chunk_iter_t *it, const uint8_t *buf, size_t nbytes, uint32_t n);
/* 1 = (*ts, *v) filled, 0 = end, SK_EPARSE = corrupt data. */
int tl_chunk_iter_next(tl_chunk_iter_t *it, int64_t *ts, double *v);

#endif
