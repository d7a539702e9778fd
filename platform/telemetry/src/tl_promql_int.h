/* tl_promql_int.h - the PromQL syntax tree shared by parser and evaluator. */
#ifndef TL_PROMQL_INT_H
#define TL_PROMQL_INT_H

#include "tl_promql.h"

typedef enum pq_kind {
  PQ_NUM = 1,
  PQ_STR,
  PQ_VSEL,  /* instant vector selector */
  PQ_MSEL,  /* range vector selector */
  PQ_CALL,
  PQ_AGG,
  PQ_BIN,
  PQ_NEG,   /* unary minus */
  PQ_PAREN,
  PQ_SUBQ,  /* subquery: lhs[range:step] (offset_ms, range_ms, step_ms) */
} pq_kind_t;

typedef enum pq_op {
  PQ_ADD = 1, PQ_SUB, PQ_MUL, PQ_DIV, PQ_MOD, PQ_POW,
  PQ_EQL, PQ_NEQ, PQ_GTR, PQ_LSS, PQ_GTE, PQ_LTE,
  PQ_AND, PQ_OR, PQ_UNLESS,
} pq_op_t;

typedef enum pq_agg {
  PQ_SUM = 1, PQ_AVG, PQ_MIN, PQ_MAX, PQ_COUNT, PQ_TOPK, PQ_BOTTOMK, PQ_STDDEV, PQ_STDVAR, PQ_QUANTILE,
  PQ_GROUP, PQ_COUNT_VALUES,
} pq_agg_t;

typedef enum pq_card { PQ_ONE_TO_ONE = 0, PQ_MANY_TO_ONE, PQ_ONE_TO_MANY, PQ_MANY_TO_MANY } pq_card_t;

typedef struct pq_func pq_func_t;
typedef struct pq_node pq_node_t;

struct pq_node {
  pq_kind_t kind;
  tl_pq_type_t type;
  int col; /* 1-based */
  double num;
  const char *str;
  /* selectors */
  tl_matcher_t *m;
  size_t nm;
  int64_t range_ms, offset_ms;
  int at;         /* @ modifier: 0 none, 1 at_ms, 2 start(), 3 end() */
  int64_t at_ms;
  int64_t step_ms;      /* subquery step, 0 = default (1m) */
  int64_t sq_lo, sq_hi; /* selectors inside subqueries: extra time needed before start / end */
  int sq_at;            /* ... relative to an enclosing subquery's @ (as `at`) instead */
  int64_t sq_at_ms;
  int sel_idx;
  /* calls */
  const pq_func_t *fn;
  pq_node_t **args;
  size_t nargs;
  /* aggregations */
  pq_agg_t agg;
  const char **grouping;
  size_t ngrouping;
  int without;
  pq_node_t *param;
  /* binary (lhs/rhs), unary and paren (lhs) */
  pq_op_t op;
  pq_node_t *lhs, *rhs;
  int return_bool;
  pq_card_t card;
  int on; /* 1 = on(...), 0 = ignoring(...) or none */
  const char **match;
  size_t nmatch;
  const char **include;
  size_t ninclude;
};

struct pq_func {
  const char *name;
  tl_pq_type_t args[6];
  int nargs;     /* required */
  int variadic;  /* extra optional args allowed (of the last listed type): count */
  tl_pq_type_t ret;
  int id;
};

struct tl_promql_expr {
  sk_pool_t *pool;
  pq_node_t *root;
  pq_node_t **sels; /* every selector, indexed by sel_idx */
  size_t nsels;
};

const pq_func_t *tl__pq_func(const char *name, size_t len);

enum {
  PQF_RATE = 1, PQF_IRATE, PQF_INCREASE, PQF_DELTA, PQF_IDELTA, PQF_AVG_OT, PQF_MIN_OT, PQF_MAX_OT, PQF_SUM_OT,
  PQF_COUNT_OT, PQF_LAST_OT, PQF_STDDEV_OT, PQF_STDVAR_OT, PQF_QUANTILE_OT, PQF_CHANGES, PQF_RESETS, PQF_ABS,
  PQF_CEIL, PQF_FLOOR, PQF_ROUND, PQF_SQRT, PQF_EXP, PQF_LN, PQF_LOG2, PQF_LOG10, PQF_CLAMP, PQF_CLAMP_MIN,
  PQF_CLAMP_MAX, PQF_HISTOGRAM_QUANTILE, PQF_TIME, PQF_VECTOR, PQF_SCALAR, PQF_TIMESTAMP, PQF_SORT,
  PQF_SORT_DESC, PQF_ABSENT, PQF_DERIV, PQF_LABEL_REPLACE, PQF_SGN, PQF_PRESENT_OT, PQF_ABSENT_OT,
  PQF_PREDICT_LINEAR, PQF_LABEL_JOIN, PQF_HOLT_WINTERS, PQF_MINUTE, PQF_HOUR, PQF_DAY_OF_MONTH, PQF_DAY_OF_WEEK,
  PQF_DAYS_IN_MONTH, PQF_MONTH, PQF_YEAR, PQF_ACOS, PQF_ACOSH, PQF_ASIN, PQF_ASINH, PQF_ATAN, PQF_ATANH,
  PQF_COS, PQF_COSH, PQF_SIN, PQF_SINH, PQF_TAN, PQF_TANH, PQF_DEG, PQF_RAD, PQF_PI,
};

#endif
