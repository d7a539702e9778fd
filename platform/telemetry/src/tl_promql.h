/* tl_promql.h - PromQL parser and evaluator over tl_tsdb, and the
 * Prometheus-compatible HTTP query API built on them.
 *
 * Semantics follow Prometheus 2.x: a 5 minute lookback for instant vector
 * selectors, range selectors closed at both ends, rate/increase/delta
 * extrapolation as Prometheus documents it, one-to-one vector matching by
 * default with on/ignoring and group_left/group_right. No subqueries, no
 * @ modifier, no native histograms. */
#ifndef TL_PROMQL_H
#define TL_PROMQL_H

#include <stddef.h>
#include <stdint.h>

#include "skiff/http.h"
#include "skiff/mem.h"
#include "tl_tsdb.h"

typedef struct tl_promql_expr tl_promql_expr_t;

typedef enum tl_pq_type {
  TL_PQ_SCALAR = 1,
  TL_PQ_VECTOR,
  TL_PQ_MATRIX,
  TL_PQ_STRING,
} tl_pq_type_t;

#define TL_PROMQL_MAX_QUERY 65536 /* bytes */
#define TL_PROMQL_MAX_DEPTH 128   /* nesting */

/* Parses q (len bytes, need not be NUL-terminated). On failure returns
 * SK_EPARSE with err = "parse error at col N: <what>" (N is 1-based, in
 * bytes). */
int tl_promql_parse(const char *q, size_t len, tl_promql_expr_t **out, char *err, size_t errlen);
void tl_promql_free(tl_promql_expr_t *e); /* accepts NULL */
tl_pq_type_t tl_promql_type(const tl_promql_expr_t *e);

typedef struct tl_promql_opts {
  int64_t lookback_ms;     /* 0 = 5 minutes */
  size_t max_series;       /* per selector; 0 = 100000 */
  uint64_t max_samples;    /* loaded from storage per query; 0 = 50000000 */
  uint64_t deadline_ns;    /* uv_hrtime() value after which evaluation stops (SK_ETIMEDOUT); 0 = none */
} tl_promql_opts_t;

/* A result: scalar/string, or series. For a vector every series has n == 1
 * (the evaluation time); for a matrix (range query, or a range selector at
 * the top of an instant query) n >= 1 points. Everything lives in the pool
 * given to the evaluator. */
typedef struct tl_promql_result {
  tl_pq_type_t type;
  double scalar;
  int64_t t;         /* scalar/string: evaluation time */
  const char *str;
  tl_series_t *series;
  size_t nseries;
} tl_promql_result_t;

/* Error codes: SK_EINVAL = bad query for this kind of evaluation (bad_data),
 * SK_ETIMEDOUT = deadline passed (timeout), SK_ELIMIT = too many series or
 * samples, others = execution errors. err gets the message. */
int tl_promql_eval_instant(tl_tsdb_t *db, sk_pool_t *pool, const tl_promql_expr_t *e, int64_t t_ms,
                           const tl_promql_opts_t *o, tl_promql_result_t *out, char *err, size_t errlen);
/* Range query: step_ms > 0, start <= end; the expression must be a scalar or
 * instant vector. The result is a matrix (a scalar expression gives one
 * series without labels). */
int tl_promql_eval_range(tl_tsdb_t *db, sk_pool_t *pool, const tl_promql_expr_t *e, int64_t start_ms,
                         int64_t end_ms, int64_t step_ms, const tl_promql_opts_t *o, tl_promql_result_t *out,
                         char *err, size_t errlen);

/* Parses a PromQL duration ("5m", "1h30m", "250ms"). */
int tl_promql_parse_duration(const char *s, size_t len, int64_t *ms);

/* ---- HTTP query API (tl_query_api.c) ----
 *
 * tl_query_api_handle() answers, and returns 1 for, the paths it owns:
 *   /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels,
 *   /api/v1/label/<name>/values, /api/v1/status/buildinfo,
 *   /api/v1/metadata, /api/v1/status/runtimeinfo, /-/healthy, /-/ready
 * (GET, and POST with an application/x-www-form-urlencoded body where
 * Prometheus accepts it). It returns 0 without responding for any other
 * path, so the daemon can chain its own routes. It runs the query on the
 * calling (loop) thread. */
typedef struct tl_query_api_opts {
  uint64_t default_timeout_ms; /* 0 = 2 minutes */
  size_t max_series;           /* per selector; 0 = 100000 */
  uint64_t max_samples;        /* 0 = 50000000 */
  int64_t lookback_ms;         /* 0 = 5 minutes */
  const char *version;         /* buildinfo version, default SKIFF_VERSION */
  int ready;                   /* /-/ready answers 503 while 0 (the API sets nothing itself) */
} tl_query_api_opts_t;

int tl_query_api_handle(tl_tsdb_t *db, const tl_query_api_opts_t *o, sk_http_req_t *req);

/* sk_http_handler_fn adapter: ud must point to a tl_query_api_t; answers 404
 * for paths it does not own. */
typedef struct tl_query_api {
  tl_tsdb_t *db;
  tl_query_api_opts_t opts;
} tl_query_api_t;
void tl_query_api_http_handler(sk_http_req_t *req, void *ud);

#endif
