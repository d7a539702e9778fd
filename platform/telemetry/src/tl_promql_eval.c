/* tl_promql_eval.c - PromQL evaluation over tl_tsdb.
 *
 * Every selector's data is loaded once per query (over the whole time range
 * the query needs), then the tree is evaluated step by step, each step in a
 * scratch pool. Semantics follow Prometheus 2.x (see tl_promql.h). */
#include <float.h>
#include <math.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "skiff/err.h"
#include "tl_promql_int.h"
#include "tl_tsdb_int.h"

typedef struct el {
  const tl_label_t *l;
  size_t nl;
  double v;
  int64_t ts; /* sample time (selectors) or evaluation time */
} el_t;

typedef struct vec {
  el_t *e;
  size_t n;
} vec_t;

typedef struct mel {
  const tl_label_t *l;
  size_t nl;
  const int64_t *ts;
  const double *v;
  size_t n;
} mel_t;

typedef struct val {
  tl_pq_type_t type;
  double s;
  const char *str;
  vec_t vec;
  mel_t *mat;
  size_t nmat;
} val_t;

typedef struct ctx {
  tl_tsdb_t *db;
  sk_pool_t *qp; /* query lifetime */
  sk_pool_t *sp; /* current step */
  const tl_promql_expr_t *e;
  tl_series_t **pre;
  size_t *npre;
  int64_t t;
  int64_t start, end; /* of the query: @ start() / @ end() */
  struct sq_live *live; /* subquery state to free if an error unwinds through it */
  tl_promql_opts_t o;
  char *err;
  size_t errlen;
  jmp_buf jb;
  int rc;
  int range_query;
} ctx_t;

static void efail(ctx_t *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void efail(ctx_t *c, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (c->err) vsnprintf(c->err, c->errlen, fmt, ap);
  va_end(ap);
  c->rc = rc;
  longjmp(c->jb, 1);
}

/* ---- labels ---- */

static const char *lget(const tl_label_t *l, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(l[i].name, name)) return l[i].value;
  return NULL;
}

static int in_list(const char *name, const char **list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(list[i], name)) return 1;
  return 0;
}

/* Copy of l without the labels for which drop() says so. */
static const tl_label_t *lfilter(ctx_t *c, const tl_label_t *l, size_t n, size_t *nout, int drop_name,
                                 const char **keep, size_t nkeep, int keep_mode, const char **del, size_t ndel) {
  tl_label_t *o = sk_pool_alloc(c->sp, (n ? n : 1) * sizeof *o);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (drop_name && !strcmp(l[i].name, "__name__")) continue;
    if (keep_mode && !in_list(l[i].name, keep, nkeep)) continue;
    if (del && in_list(l[i].name, del, ndel)) continue;
    o[k++] = l[i];
  }
  *nout = k;
  return o;
}

static const tl_label_t *drop_name(ctx_t *c, const tl_label_t *l, size_t n, size_t *nout) {
  if (!lget(l, n, "__name__")) {
    *nout = n;
    return l;
  }
  return lfilter(c, l, n, nout, 1, NULL, 0, 0, NULL, 0);
}

static int lcmp_name(const void *a, const void *b) {
  return strcmp(((const tl_label_t *)a)->name, ((const tl_label_t *)b)->name);
}

/* l with name set to value ("" deletes), sorted. */
static const tl_label_t *lset(ctx_t *c, const tl_label_t *l, size_t n, size_t *nout, const char *name,
                              const char *value) {
  tl_label_t *o = sk_pool_alloc(c->sp, (n + 1) * sizeof *o);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(l[i].name, name)) o[k++] = l[i];
  if (value && *value) {
    o[k].name = name;
    o[k].value = value;
    k++;
    qsort(o, k, sizeof *o, lcmp_name);
  }
  *nout = k;
  return o;
}

static void key_add(sk_buf_t *b, const char *s) { sk_buf_append(b, s, strlen(s) + 1); }

/* Signature for grouping/matching: on=1 uses only names in list, on=0 all
 * labels except those in list and __name__. */
static void sig(sk_buf_t *b, const tl_label_t *l, size_t n, int on, const char **list, size_t nlist) {
  sk_buf_reset(b);
  if (on) {
    /* the list order must not matter: walk labels (sorted) and pick */
    for (size_t i = 0; i < n; i++)
      if (in_list(l[i].name, list, nlist)) {
        key_add(b, l[i].name);
        key_add(b, l[i].value);
      }
  } else {
    for (size_t i = 0; i < n; i++) {
      if (!strcmp(l[i].name, "__name__") || in_list(l[i].name, list, nlist)) continue;
      key_add(b, l[i].name);
      key_add(b, l[i].value);
    }
  }
  if (!b->len) sk_buf_append(b, "", 1);
}

static void full_key(sk_buf_t *b, const tl_label_t *l, size_t n) {
  sk_buf_reset(b);
  for (size_t i = 0; i < n; i++) {
    key_add(b, l[i].name);
    key_add(b, l[i].value);
  }
  if (!b->len) sk_buf_append(b, "", 1);
}

static void labels_str(sk_buf_t *b, const tl_label_t *l, size_t n) {
  sk_buf_puts(b, "{");
  for (size_t i = 0; i < n; i++) sk_buf_printf(b, "%s%s=\"%s\"", i ? ", " : "", l[i].name, l[i].value);
  sk_buf_puts(b, "}");
}

/* ---- vectors ---- */

typedef struct vb {
  el_t *e;
  size_t n, cap;
} vb_t;

static void vpush(ctx_t *c, vb_t *v, const tl_label_t *l, size_t nl, double x, int64_t ts) {
  if (v->n == v->cap) {
    size_t nc = v->cap ? v->cap * 2 : 16;
    el_t *ne = sk_pool_alloc(c->sp, nc * sizeof *ne);
    if (v->n) memcpy(ne, v->e, v->n * sizeof *ne);
    v->e = ne;
    v->cap = nc;
  }
  v->e[v->n++] = (el_t){l, nl, x, ts};
}

static val_t vecval(vb_t *v) {
  val_t r = {.type = TL_PQ_VECTOR};
  r.vec.e = v->e;
  r.vec.n = v->n;
  return r;
}

/* ---- selectors ---- */

static size_t upper_idx(const int64_t *ts, size_t n, int64_t t) { /* first index with ts > t */
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ts[mid] <= t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static size_t lower_idx(const int64_t *ts, size_t n, int64_t t) { /* first index with ts >= t */
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ts[mid] < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The time a selector is evaluated at: the step's, or its @ modifier's. */
static int64_t sel_time(const ctx_t *c, const pq_node_t *n) {
  switch (n->at) {
  case 1: return n->at_ms;
  case 2: return c->start;
  case 3: return c->end;
  default: return c->t;
  }
}

static val_t eval_vsel(ctx_t *c, const pq_node_t *n) {
  vb_t out = {0};
  int64_t te = sel_time(c, n) - n->offset_ms;
  const tl_series_t *ss = c->pre[n->sel_idx];
  for (size_t i = 0; i < c->npre[n->sel_idx]; i++) {
    const tl_series_t *s = &ss[i];
    size_t k = upper_idx(s->ts, s->n, te);
    if (k == 0) continue;
    if (s->ts[k - 1] < te - c->o.lookback_ms) continue;
    vpush(c, &out, s->labels, s->nlabels, s->v[k - 1], s->ts[k - 1]);
  }
  return vecval(&out);
}

static val_t eval_msel(ctx_t *c, const pq_node_t *n) {
  val_t r = {.type = TL_PQ_MATRIX};
  int64_t te = sel_time(c, n) - n->offset_ms;
  const tl_series_t *ss = c->pre[n->sel_idx];
  size_t ns = c->npre[n->sel_idx];
  r.mat = sk_pool_alloc(c->sp, (ns ? ns : 1) * sizeof *r.mat);
  for (size_t i = 0; i < ns; i++) {
    const tl_series_t *s = &ss[i];
    size_t lo = lower_idx(s->ts, s->n, te - n->range_ms), hi = upper_idx(s->ts, s->n, te);
    if (hi <= lo) continue;
    r.mat[r.nmat++] = (mel_t){s->labels, s->nlabels, s->ts + lo, s->v + lo, hi - lo};
  }
  return r;
}

/* ---- subqueries ---- */

#define TL_PQ_MAX_SUBQUERY_STEPS 11000 /* per evaluation, like a range query's points */

/* A subquery's malloc'ed working state, registered on the ctx while the
 * inner evaluation runs: an error (longjmp) out of it frees it in
 * release_live(). */
typedef struct sq_live {
  tl__hmap_t idx;
  sk_buf_t b;
  struct sq_live *next;
} sq_live_t;

static void release_live(ctx_t *c) {
  while (c->live) {
    sq_live_t *l = c->live;
    c->live = l->next;
    tl__hmap_free(&l->idx);
    sk_buf_done(&l->b);
  }
}

typedef struct sq_series {
  const tl_label_t *l;
  size_t nl;
  int64_t *ts;
  double *v;
  size_t n, cap;
} sq_series_t;

static val_t eval(ctx_t *c, const pq_node_t *n);
static void check_deadline(ctx_t *c);

/* expr[range:step] at time T: the inner expression evaluated at every
 * multiple of step in [T - offset - range, T - offset], as one series per
 * label set, like Prometheus (default step 1m, its default evaluation
 * interval). */
static val_t eval_subq(ctx_t *c, const pq_node_t *n) {
  int64_t step = n->step_ms ? n->step_ms : 60000;
  int64_t te = sel_time(c, n) - n->offset_ms, ts0 = te - n->range_ms;
  int64_t first = (ts0 / step) * step;
  if (first < ts0) first += step;
  if (te >= first && (te - first) / step >= TL_PQ_MAX_SUBQUERY_STEPS)
    efail(c, SK_ELIMIT, "subquery [%lldms:%lldms] would take more than %d steps; use a larger step",
          (long long)n->range_ms, (long long)step, TL_PQ_MAX_SUBQUERY_STEPS);
  int64_t saved = c->t;
  sq_live_t *lv = sk_pool_calloc(c->qp, sizeof *lv);
  sk_buf_init(&lv->b);
  lv->next = c->live;
  c->live = lv;
  tl__hmap_t *idx = &lv->idx;
  sk_buf_t *b = &lv->b;
  sq_series_t *ss = NULL;
  size_t nss = 0, cap = 0;
  uint64_t points = 0;
  for (int64_t t = first; t <= te; t += step) {
    c->t = t;
    val_t v = eval(c, n->lhs);
    for (size_t i = 0; i < v.vec.n; i++) {
      const el_t *e = &v.vec.e[i];
      sk_buf_reset(b);
      for (size_t j = 0; j < e->nl; j++) {
        sk_buf_append(b, e->l[j].name, strlen(e->l[j].name) + 1);
        sk_buf_append(b, e->l[j].value, strlen(e->l[j].value) + 1);
      }
      size_t *k = tl__hmap_get(idx, b->data ? b->data : "", b->len);
      if (!k) {
        if (nss == cap) {
          size_t nc = cap ? cap * 2 : 16;
          sq_series_t *nv = sk_pool_alloc(c->sp, nc * sizeof *nv);
          if (nss) memcpy(nv, ss, nss * sizeof *nv);
          ss = nv;
          cap = nc;
        }
        k = sk_pool_alloc(c->sp, sizeof *k);
        *k = nss;
        ss[nss++] = (sq_series_t){.l = e->l, .nl = e->nl};
        tl__hmap_put(idx, sk_pool_memdup(c->sp, b->data ? b->data : "", b->len), b->len, k);
      }
      sq_series_t *s = &ss[*k];
      if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        int64_t *nts = sk_pool_alloc(c->sp, nc * sizeof *nts);
        double *nv = sk_pool_alloc(c->sp, nc * sizeof *nv);
        if (s->n) {
          memcpy(nts, s->ts, s->n * sizeof *nts);
          memcpy(nv, s->v, s->n * sizeof *nv);
        }
        s->ts = nts;
        s->v = nv;
        s->cap = nc;
      }
      s->ts[s->n] = t;
      s->v[s->n++] = e->v;
      points++;
    }
    if (points > c->o.max_samples)
      efail(c, SK_ELIMIT, "query processing would load too many samples into memory in query execution");
    check_deadline(c);
  }
  c->t = saved;
  c->live = lv->next;
  sk_buf_done(b);
  tl__hmap_free(idx);
  val_t r = {.type = TL_PQ_MATRIX};
  r.mat = sk_pool_alloc(c->sp, (nss ? nss : 1) * sizeof *r.mat);
  for (size_t i = 0; i < nss; i++) r.mat[r.nmat++] = (mel_t){ss[i].l, ss[i].nl, ss[i].ts, ss[i].v, ss[i].n};
  return r;
}

/* ---- binary operators ---- */

static int is_cmp(pq_op_t op) { return op >= PQ_EQL && op <= PQ_LTE; }
static int drops_name(pq_op_t op) { return op >= PQ_ADD && op <= PQ_POW; }

static double binop(pq_op_t op, double l, double r, int *keep) {
  *keep = 1;
  switch (op) {
  case PQ_ADD: return l + r;
  case PQ_SUB: return l - r;
  case PQ_MUL: return l * r;
  case PQ_DIV: return l / r;
  case PQ_MOD: return fmod(l, r);
  case PQ_POW: return pow(l, r);
  case PQ_EQL: *keep = l == r; return l;
  case PQ_NEQ: *keep = l != r; return l;
  case PQ_GTR: *keep = l > r; return l;
  case PQ_LSS: *keep = l < r; return l;
  case PQ_GTE: *keep = l >= r; return l;
  case PQ_LTE: *keep = l <= r; return l;
  default: *keep = 0; return 0;
  }
}

static val_t eval(ctx_t *c, const pq_node_t *n);

static val_t vec_scalar(ctx_t *c, const pq_node_t *n, vec_t v, double s, int swap) {
  vb_t out = {0};
  for (size_t i = 0; i < v.n; i++) {
    double lv = v.e[i].v, rv = s;
    if (swap) {
      lv = s;
      rv = v.e[i].v;
    }
    int keep;
    double x = binop(n->op, lv, rv, &keep);
    if (is_cmp(n->op) && swap) x = rv;
    if (n->return_bool) {
      x = keep ? 1 : 0;
      keep = 1;
    }
    if (!keep) continue;
    const tl_label_t *l = v.e[i].l;
    size_t nl = v.e[i].nl;
    if (drops_name(n->op) || n->return_bool) l = drop_name(c, l, nl, &nl);
    vpush(c, &out, l, nl, x, c->t);
  }
  return vecval(&out);
}

static val_t set_op(ctx_t *c, const pq_node_t *n, vec_t l, vec_t r) {
  vb_t out = {0};
  tl__hmap_t set = {0};
  sk_buf_t b;
  sk_buf_init(&b);
  vec_t probe = n->op == PQ_OR ? l : r;
  for (size_t i = 0; i < probe.n; i++) {
    sig(&b, probe.e[i].l, probe.e[i].nl, n->on, n->match, n->nmatch);
    tl__hmap_put(&set, sk_pool_memdup(c->sp, b.data, b.len), b.len, (void *)1);
  }
  for (size_t i = 0; i < l.n; i++) {
    if (n->op != PQ_OR) {
      sig(&b, l.e[i].l, l.e[i].nl, n->on, n->match, n->nmatch);
      int found = tl__hmap_get(&set, b.data, b.len) != NULL;
      if ((n->op == PQ_AND) != found) continue;
    }
    vpush(c, &out, l.e[i].l, l.e[i].nl, l.e[i].v, l.e[i].ts);
  }
  if (n->op == PQ_OR) {
    for (size_t i = 0; i < r.n; i++) {
      sig(&b, r.e[i].l, r.e[i].nl, n->on, n->match, n->nmatch);
      if (tl__hmap_get(&set, b.data, b.len)) continue;
      vpush(c, &out, r.e[i].l, r.e[i].nl, r.e[i].v, r.e[i].ts);
    }
  }
  sk_buf_done(&b);
  tl__hmap_free(&set);
  return vecval(&out);
}

static val_t vec_vec(ctx_t *c, const pq_node_t *n, vec_t l, vec_t r) {
  if (n->op >= PQ_AND) return set_op(c, n, l, r);
  int swap = n->card == PQ_ONE_TO_MANY;
  if (swap) {
    vec_t t = l;
    l = r;
    r = t;
  }
  vb_t out = {0};
  tl__hmap_t right = {0}, matched = {0};
  sk_buf_t b, lb;
  sk_buf_init(&b);
  sk_buf_init(&lb);
  for (size_t i = 0; i < r.n; i++) {
    sig(&b, r.e[i].l, r.e[i].nl, n->on, n->match, n->nmatch);
    if (tl__hmap_get(&right, b.data, b.len)) {
      labels_str(&lb, r.e[i].l, r.e[i].nl);
      sk_buf_cstr(&lb);
      char msg[300];
      snprintf(msg, sizeof msg, "%.200s", lb.data);
      sk_buf_done(&b);
      sk_buf_done(&lb);
      tl__hmap_free(&right);
      efail(c, SK_EINVAL,
            "found duplicate series for the match group on the %s hand-side of the operation: %s;"
            "many-to-many matching not allowed: matching labels must be unique on one side",
            swap ? "left" : "right", msg);
    }
    tl__hmap_put(&right, sk_pool_memdup(c->sp, b.data, b.len), b.len, &r.e[i]);
  }
  const char *dup = NULL;
  for (size_t i = 0; i < l.n; i++) {
    sig(&b, l.e[i].l, l.e[i].nl, n->on, n->match, n->nmatch);
    el_t *re = tl__hmap_get(&right, b.data, b.len);
    if (!re) continue;
    double lv = l.e[i].v, rv = re->v;
    if (swap) {
      lv = re->v;
      rv = l.e[i].v;
    }
    int keep;
    double x = binop(n->op, lv, rv, &keep);
    if (n->return_bool) {
      x = keep ? 1 : 0;
      keep = 1;
    }
    if (!keep) continue;
    if (n->card == PQ_ONE_TO_ONE) {
      if (tl__hmap_get(&matched, b.data, b.len)) {
        dup = "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)";
        break;
      }
      tl__hmap_put(&matched, sk_pool_memdup(c->sp, b.data, b.len), b.len, (void *)1);
    }
    const tl_label_t *ml = l.e[i].l;
    size_t nml = l.e[i].nl;
    if (drops_name(n->op) || n->return_bool) ml = drop_name(c, ml, nml, &nml);
    if (n->card == PQ_ONE_TO_ONE) {
      if (n->on)
        ml = lfilter(c, ml, nml, &nml, 0, n->match, n->nmatch, 1, NULL, 0);
      else
        ml = lfilter(c, ml, nml, &nml, 0, NULL, 0, 0, n->match, n->nmatch);
    }
    for (size_t k = 0; k < n->ninclude; k++) {
      const char *v = lget(re->l, re->nl, n->include[k]);
      ml = lset(c, ml, nml, &nml, n->include[k], v ? v : "");
    }
    vpush(c, &out, ml, nml, x, c->t);
  }
  sk_buf_done(&b);
  sk_buf_done(&lb);
  tl__hmap_free(&right);
  tl__hmap_free(&matched);
  if (dup) efail(c, SK_EINVAL, "%s", dup);
  return vecval(&out);
}

static val_t eval_bin(ctx_t *c, const pq_node_t *n) {
  val_t l = eval(c, n->lhs), r = eval(c, n->rhs);
  if (l.type == TL_PQ_SCALAR && r.type == TL_PQ_SCALAR) {
    int keep;
    double x = binop(n->op, l.s, r.s, &keep);
    if (n->return_bool) x = keep ? 1 : 0;
    return (val_t){.type = TL_PQ_SCALAR, .s = x};
  }
  if (l.type == TL_PQ_VECTOR && r.type == TL_PQ_SCALAR) return vec_scalar(c, n, l.vec, r.s, 0);
  if (l.type == TL_PQ_SCALAR && r.type == TL_PQ_VECTOR) return vec_scalar(c, n, r.vec, l.s, 1);
  return vec_vec(c, n, l.vec, r.vec);
}

/* ---- aggregation ---- */

typedef struct group {
  const tl_label_t *l;
  size_t nl;
  double v, mean, m2;
  size_t count;
  vb_t members; /* topk, bottomk, quantile */
} group_t;

static int el_desc(const void *a, const void *b) {
  double x = ((const el_t *)a)->v, y = ((const el_t *)b)->v;
  if (isnan(x)) return isnan(y) ? 0 : 1;
  if (isnan(y)) return -1;
  return x > y ? -1 : x < y;
}

static int el_asc(const void *a, const void *b) {
  double x = ((const el_t *)a)->v, y = ((const el_t *)b)->v;
  if (isnan(x)) return isnan(y) ? 0 : 1;
  if (isnan(y)) return -1;
  return x < y ? -1 : x > y;
}

static int dbl_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  if (isnan(x)) return isnan(y) ? 0 : -1;
  if (isnan(y)) return 1;
  return x < y ? -1 : x > y;
}

static double quantile(double q, double *v, size_t n) {
  if (n == 0 || isnan(q)) return NAN;
  if (q < 0) return -INFINITY;
  if (q > 1) return INFINITY;
  qsort(v, n, sizeof *v, dbl_cmp);
  double rank = q * (double)(n - 1);
  double lo = floor(rank);
  size_t li = lo < 0 ? 0 : (size_t)lo;
  size_t ui = li + 1 < n ? li + 1 : n - 1;
  double w = rank - lo;
  return v[li] * (1 - w) + v[ui] * w;
}

static int valid_label_name(const char *s) {
  if (!s || !*s) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (p != s && *p >= '0' && *p <= '9')))
      return 0;
  return 1;
}

/* A sample value as Prometheus prints it in labels (count_values): the
 * shortest decimal that reads back as the same double, never an exponent. */
static void fmt_value(double v, char *out, size_t len) {
  if (isnan(v)) {
    snprintf(out, len, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(out, len, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (v == 0) {
    snprintf(out, len, signbit(v) ? "-0" : "0");
    return;
  }
  int p = 1;
  char tmp[64];
  for (; p < 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
    if (strtod(tmp, NULL) == v) break;
  }
  snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
  int exp10 = atoi(strchr(tmp, 'e') + 1);
  int dec = p - 1 - exp10;
  snprintf(out, len, "%.*f", dec > 0 ? dec : 0, v);
}

/* count_values("label", v): how many elements have each value, per group. */
static val_t count_values(ctx_t *c, const pq_node_t *n, const char *label, vec_t v) {
  if (!valid_label_name(label)) efail(c, SK_EINVAL, "invalid label name \"%s\"", label ? label : "");
  tl__hmap_t gm = {0};
  group_t *groups = sk_pool_alloc(c->sp, (v.n ? v.n : 1) * sizeof *groups);
  size_t ng = 0;
  sk_buf_t b;
  sk_buf_init(&b);
  for (size_t i = 0; i < v.n; i++) {
    const el_t *e = &v.e[i];
    char val[64];
    fmt_value(e->v, val, sizeof val);
    const tl_label_t *l;
    size_t nl;
    if (n->without)
      l = lfilter(c, e->l, e->nl, &nl, 1, NULL, 0, 0, n->grouping, n->ngrouping);
    else
      l = lfilter(c, e->l, e->nl, &nl, 0, n->grouping, n->ngrouping, 1, NULL, 0);
    l = lset(c, l, nl, &nl, label, sk_pool_strdup(c->sp, val));
    sk_buf_reset(&b);
    for (size_t j = 0; j < nl; j++) {
      sk_buf_append(&b, l[j].name, strlen(l[j].name) + 1);
      sk_buf_append(&b, l[j].value, strlen(l[j].value) + 1);
    }
    group_t *g = tl__hmap_get(&gm, b.data, b.len);
    if (!g) {
      g = &groups[ng++];
      memset(g, 0, sizeof *g);
      g->l = l;
      g->nl = nl;
      tl__hmap_put(&gm, sk_pool_memdup(c->sp, b.data ? b.data : "", b.len), b.len, g);
    }
    g->count++;
  }
  sk_buf_done(&b);
  tl__hmap_free(&gm);
  vb_t out = {0};
  for (size_t i = 0; i < ng; i++) vpush(c, &out, groups[i].l, groups[i].nl, (double)groups[i].count, c->t);
  return vecval(&out);
}

static val_t eval_agg(ctx_t *c, const pq_node_t *n) {
  if (n->agg == PQ_COUNT_VALUES) {
    const char *label = eval(c, n->param).str;
    val_t in = eval(c, n->lhs);
    return count_values(c, n, label, in.vec);
  }
  double param = 0;
  if (n->param) {
    val_t p = eval(c, n->param);
    param = p.s;
  }
  val_t in = eval(c, n->lhs);
  vec_t v = in.vec;
  tl__hmap_t gm = {0};
  group_t *groups = sk_pool_alloc(c->sp, (v.n ? v.n : 1) * sizeof *groups);
  size_t ng = 0;
  sk_buf_t b;
  sk_buf_init(&b);
  int64_t k = 0;
  if (n->agg == PQ_TOPK || n->agg == PQ_BOTTOMK) {
    if (isnan(param) || param >= 9e18 || param <= -9e18) {
      sk_buf_done(&b);
      efail(c, SK_EINVAL, "Scalar value %g overflows int64", param);
    }
    k = (int64_t)param;
    if (k < 1) {
      sk_buf_done(&b);
      return (val_t){.type = TL_PQ_VECTOR};
    }
  }
  for (size_t i = 0; i < v.n; i++) {
    const el_t *e = &v.e[i];
    sig(&b, e->l, e->nl, !n->without, n->grouping, n->ngrouping);
    group_t *g = tl__hmap_get(&gm, b.data, b.len);
    if (!g) {
      g = &groups[ng++];
      memset(g, 0, sizeof *g);
      if (n->without)
        g->l = lfilter(c, e->l, e->nl, &g->nl, 1, NULL, 0, 0, n->grouping, n->ngrouping);
      else
        g->l = lfilter(c, e->l, e->nl, &g->nl, 0, n->grouping, n->ngrouping, 1, NULL, 0);
      tl__hmap_put(&gm, sk_pool_memdup(c->sp, b.data, b.len), b.len, g);
      g->v = e->v;
      g->mean = e->v;
      g->count = 1;
      if (n->agg == PQ_STDDEV || n->agg == PQ_STDVAR) {
        g->mean = e->v;
        g->m2 = 0;
      }
      if (n->agg == PQ_TOPK || n->agg == PQ_BOTTOMK || n->agg == PQ_QUANTILE)
        vpush(c, &g->members, e->l, e->nl, e->v, e->ts);
      continue;
    }
    g->count++;
    double cnt = (double)g->count;
    switch (n->agg) {
    case PQ_SUM: g->v += e->v; break;
    case PQ_AVG:
      if (isinf(g->mean)) {
        if (isinf(e->v) && (g->mean > 0) == (e->v > 0)) break;
        if (!isinf(e->v) && !isnan(e->v)) break;
      }
      g->mean += e->v / cnt - g->mean / cnt;
      break;
    case PQ_MIN:
      if (g->v > e->v || isnan(g->v)) g->v = e->v;
      break;
    case PQ_MAX:
      if (g->v < e->v || isnan(g->v)) g->v = e->v;
      break;
    case PQ_STDDEV:
    case PQ_STDVAR: {
      double d = e->v - g->mean;
      g->mean += d / cnt;
      g->m2 += d * (e->v - g->mean);
      break;
    }
    case PQ_TOPK:
    case PQ_BOTTOMK:
    case PQ_QUANTILE: vpush(c, &g->members, e->l, e->nl, e->v, e->ts); break;
    default: break;
    }
  }
  sk_buf_done(&b);
  tl__hmap_free(&gm);
  vb_t out = {0};
  for (size_t i = 0; i < ng; i++) {
    group_t *g = &groups[i];
    double x = g->v;
    switch (n->agg) {
    case PQ_AVG: x = g->mean; break;
    case PQ_COUNT: x = (double)g->count; break;
    case PQ_GROUP: x = 1; break;
    case PQ_STDVAR: x = g->m2 / (double)g->count; break;
    case PQ_STDDEV: x = sqrt(g->m2 / (double)g->count); break;
    case PQ_QUANTILE: {
      double *vals = sk_pool_alloc(c->sp, g->members.n * sizeof *vals);
      for (size_t j = 0; j < g->members.n; j++) vals[j] = g->members.e[j].v;
      x = quantile(param, vals, g->members.n);
      break;
    }
    case PQ_TOPK:
    case PQ_BOTTOMK: {
      qsort(g->members.e, g->members.n, sizeof *g->members.e, n->agg == PQ_TOPK ? el_desc : el_asc);
      size_t take = (uint64_t)k < g->members.n ? (size_t)k : g->members.n;
      for (size_t j = 0; j < take; j++)
        vpush(c, &out, g->members.e[j].l, g->members.e[j].nl, g->members.e[j].v, c->t);
      continue;
    }
    default: break;
    }
    vpush(c, &out, g->l, g->nl, x, c->t);
  }
  return vecval(&out);
}

/* ---- functions over ranges ---- */

static double extrapolated(ctx_t *c, const pq_node_t *sel, const mel_t *m, int counter, int is_rate, int *ok) {
  *ok = 0;
  if (m->n < 2) return 0;
  int64_t range_end = sel_time(c, sel) - sel->offset_ms, range_start = range_end - sel->range_ms;
  double result = m->v[m->n - 1] - m->v[0];
  if (counter) {
    for (size_t i = 1; i < m->n; i++)
      if (m->v[i] < m->v[i - 1]) result += m->v[i - 1];
  }
  double to_start = (double)(m->ts[0] - range_start) / 1000.0;
  double to_end = (double)(range_end - m->ts[m->n - 1]) / 1000.0;
  double sampled = (double)(m->ts[m->n - 1] - m->ts[0]) / 1000.0;
  double avg = sampled / (double)(m->n - 1);
  if (counter && result > 0 && m->v[0] >= 0) {
    double to_zero = sampled * (m->v[0] / result);
    if (to_zero < to_start) to_start = to_zero;
  }
  double threshold = avg * 1.1, interval = sampled;
  interval += to_start < threshold ? to_start : avg / 2;
  interval += to_end < threshold ? to_end : avg / 2;
  /* one factor, the rate's division folded in, as Prometheus 2.40+ computes it
   * (the other order differs in the last bit) */
  double factor = interval / sampled;
  if (is_rate) factor /= (double)sel->range_ms / 1000.0;
  result *= factor;
  *ok = 1;
  return result;
}

static double kahan_inc(double inc, double sum, double *comp) {
  double t = sum + inc;
  if (fabs(sum) >= fabs(inc))
    *comp += (sum - t) + inc;
  else
    *comp += (inc - t) + sum;
  return t;
}

static double over_time(int id, const mel_t *m, double q) {
  size_t n = m->n;
  switch (id) {
  case PQF_AVG_OT: {
    double mean = 0, comp = 0, count = 0;
    for (size_t i = 0; i < n; i++) {
      count++;
      if (isinf(mean)) {
        if (isinf(m->v[i]) && (mean > 0) == (m->v[i] > 0)) continue;
        if (!isinf(m->v[i]) && !isnan(m->v[i])) continue;
      }
      mean = kahan_inc(m->v[i] / count - mean / count, mean, &comp);
    }
    return isinf(mean) ? mean : mean + comp;
  }
  case PQF_SUM_OT: {
    double sum = 0, comp = 0;
    for (size_t i = 0; i < n; i++) sum = kahan_inc(m->v[i], sum, &comp);
    return isinf(sum) ? sum : sum + comp;
  }
  case PQF_MIN_OT: {
    double x = m->v[0];
    for (size_t i = 1; i < n; i++)
      if (x > m->v[i] || isnan(x)) x = m->v[i];
    return x;
  }
  case PQF_MAX_OT: {
    double x = m->v[0];
    for (size_t i = 1; i < n; i++)
      if (x < m->v[i] || isnan(x)) x = m->v[i];
    return x;
  }
  case PQF_COUNT_OT: return (double)n;
  case PQF_PRESENT_OT: return 1;
  case PQF_LAST_OT: return m->v[n - 1];
  case PQF_STDDEV_OT:
  case PQF_STDVAR_OT: {
    double count = 0, mean = 0, m2 = 0;
    for (size_t i = 0; i < n; i++) {
      count++;
      double d = m->v[i] - mean;
      mean += d / count;
      m2 += d * (m->v[i] - mean);
    }
    return id == PQF_STDVAR_OT ? m2 / count : sqrt(m2 / count);
  }
  case PQF_CHANGES: {
    double ch = 0;
    for (size_t i = 1; i < n; i++) {
      double a = m->v[i - 1], b = m->v[i];
      if (a != b && !(isnan(a) && isnan(b))) ch++;
    }
    return ch;
  }
  case PQF_RESETS: {
    double r = 0;
    for (size_t i = 1; i < n; i++)
      if (m->v[i] < m->v[i - 1]) r++;
    return r;
  }
  default: (void)q; return NAN;
  }
}

/* Least-squares line through the samples, x in seconds relative to
 * `at_ms`: returns the slope, *icept the value at x = 0. Sums are
 * compensated (Kahan), and a constant series has slope 0 exactly. */
static double linreg(const mel_t *m, int64_t at_ms, double *icept) {
  double n = 0, sx = 0, cx = 0, sy = 0, cy = 0, sxy = 0, cxy = 0, sx2 = 0, cx2 = 0;
  int const_y = 1;
  for (size_t i = 0; i < m->n; i++) {
    if (i > 0 && m->v[i] != m->v[0]) const_y = 0;
    double x = (double)(m->ts[i] - at_ms) / 1000.0;
    n++;
    sx = kahan_inc(x, sx, &cx);
    sy = kahan_inc(m->v[i], sy, &cy);
    sxy = kahan_inc(x * m->v[i], sxy, &cxy);
    sx2 = kahan_inc(x * x, sx2, &cx2);
  }
  if (const_y) {
    if (isinf(m->v[0])) {
      *icept = NAN;
      return NAN;
    }
    *icept = m->v[0];
    return 0;
  }
  sx += cx;
  sy += cy;
  sxy += cxy;
  sx2 += cx2;
  double cov = sxy - sx * sy / n, var = sx2 - sx * sx / n;
  double slope = cov / var;
  *icept = sy / n - slope * sx / n;
  return slope;
}

static double deriv(const mel_t *m, int *ok) {
  *ok = 0;
  if (m->n < 2) return 0;
  double icept;
  *ok = 1;
  return linreg(m, m->ts[0], &icept);
}

/* holt_winters (double exponential smoothing): the smoothed value at the
 * last sample, smoothing factor sf, trend factor tf. */
static double holt_winters(const mel_t *m, double sf, double tf, int *ok) {
  *ok = 0;
  if (m->n < 2) return 0;
  double s0 = 0, s1 = m->v[0], b = m->v[1] - m->v[0];
  for (size_t i = 1; i < m->n; i++) {
    double x = sf * m->v[i];
    if (i > 1) b = tf * (s1 - s0) + (1 - tf) * b;
    double y = (1 - sf) * (s1 + b);
    s0 = s1;
    s1 = x + y;
  }
  *ok = 1;
  return s1;
}

/* predict_linear: the regression line's value `secs` after the evaluation time. */
static double predict_linear(const mel_t *m, int64_t t_ms, double secs, int *ok) {
  *ok = 0;
  if (m->n < 2) return 0;
  double icept, slope = linreg(m, t_ms, &icept);
  *ok = 1;
  return slope * secs + icept;
}

/* ---- histogram_quantile ---- */

typedef struct bucket {
  double ub, count;
} bucket_t;

static int bucket_cmp(const void *a, const void *b) {
  double x = ((const bucket_t *)a)->ub, y = ((const bucket_t *)b)->ub;
  return x < y ? -1 : x > y;
}

static double bucket_quantile(double q, bucket_t *b, size_t n) {
  if (isnan(q)) return NAN;
  if (q < 0) return -INFINITY;
  if (q > 1) return INFINITY;
  qsort(b, n, sizeof *b, bucket_cmp);
  if (n == 0 || !isinf(b[n - 1].ub) || b[n - 1].ub < 0) return NAN;
  /* merge equal bounds */
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (k > 0 && b[k - 1].ub == b[i].ub)
      b[k - 1].count += b[i].count;
    else
      b[k++] = b[i];
  }
  n = k;
  for (size_t i = 1; i < n; i++)
    if (b[i].count < b[i - 1].count) b[i].count = b[i - 1].count;
  if (n < 2) return NAN;
  double obs = b[n - 1].count;
  if (obs == 0) return NAN;
  double rank = q * obs;
  size_t i = 0;
  while (i < n - 1 && b[i].count < rank) i++;
  if (i == n - 1) return b[n - 2].ub;
  if (i == 0 && b[0].ub <= 0) return b[0].ub;
  double start = 0, end = b[i].ub, count = b[i].count;
  if (i > 0) {
    start = b[i - 1].ub;
    count -= b[i - 1].count;
    rank -= b[i - 1].count;
  }
  return start + (end - start) * (rank / count);
}

typedef struct hgroup {
  const tl_label_t *l;
  size_t nl;
  bucket_t *b;
  size_t n, cap;
} hgroup_t;

static val_t hist_quantile(ctx_t *c, double q, vec_t v) {
  tl__hmap_t gm = {0};
  hgroup_t *gs = sk_pool_alloc(c->sp, (v.n ? v.n : 1) * sizeof *gs);
  size_t ng = 0;
  sk_buf_t b;
  sk_buf_init(&b);
  static const char *le[] = {"le"};
  for (size_t i = 0; i < v.n; i++) {
    const char *ub = lget(v.e[i].l, v.e[i].nl, "le");
    if (!ub) continue;
    char *end;
    double u = strtod(ub, &end);
    if (end == ub || *end) continue;
    sig(&b, v.e[i].l, v.e[i].nl, 0, le, 1);
    hgroup_t *g = tl__hmap_get(&gm, b.data, b.len);
    if (!g) {
      g = &gs[ng++];
      memset(g, 0, sizeof *g);
      g->l = lfilter(c, v.e[i].l, v.e[i].nl, &g->nl, 1, NULL, 0, 0, le, 1);
      tl__hmap_put(&gm, sk_pool_memdup(c->sp, b.data, b.len), b.len, g);
    }
    if (g->n == g->cap) {
      size_t nc = g->cap ? g->cap * 2 : 16;
      bucket_t *nb = sk_pool_alloc(c->sp, nc * sizeof *nb);
      if (g->n) memcpy(nb, g->b, g->n * sizeof *nb);
      g->b = nb;
      g->cap = nc;
    }
    g->b[g->n++] = (bucket_t){u, v.e[i].v};
  }
  sk_buf_done(&b);
  tl__hmap_free(&gm);
  vb_t out = {0};
  for (size_t i = 0; i < ng; i++) vpush(c, &out, gs[i].l, gs[i].nl, bucket_quantile(q, gs[i].b, gs[i].n), c->t);
  return vecval(&out);
}

/* ---- label_replace ---- */

static val_t label_replace(ctx_t *c, vec_t v, const char *dst, const char *repl, const char *src, const char *re) {
  regex_t rx;
  tl_matcher_t chk;
  char why[256];
  int gmap[10];
  /* the matcher's checks (size, nesting) first, then the same syntax with captures */
  if (tl_matcher_init(&chk, TL_MATCH_RE, "", re, why, sizeof why) < 0) efail(c, SK_EINVAL, "label_replace(): %s", why);
  tl_matcher_done(&chk);
  if (tl_re_compile(&rx, re, TL_RE_ANCHOR, gmap, 10, why, sizeof why) < 0)
    efail(c, SK_EINVAL, "label_replace(): %s", why);
  vb_t out = {0};
  sk_buf_t b;
  sk_buf_init(&b);
  for (size_t i = 0; i < v.n; i++) {
    const char *sv = lget(v.e[i].l, v.e[i].nl, src);
    if (!sv) sv = "";
    regmatch_t mt[64];
    const tl_label_t *l = v.e[i].l;
    size_t nl = v.e[i].nl;
    if (regexec(&rx, sv, 64, mt, 0) == 0) {
      sk_buf_reset(&b);
      for (const char *r = repl; *r; r++) {
        if (*r == '$') {
          int brace = r[1] == '{';
          const char *d = r + 1 + brace;
          if (*d >= '0' && *d <= '9') {
            int g = *d - '0';
            /* the RE2 group's index among the POSIX groups (the anchor adds one, (?:) add more) */
            int gi = gmap[g];
            if (gi >= 0 && gi < 64 && mt[gi].rm_so >= 0) sk_buf_append(&b, sv + mt[gi].rm_so, (size_t)(mt[gi].rm_eo - mt[gi].rm_so));
            r = d + (brace && d[1] == '}' ? 1 : 0);
            continue;
          }
        }
        sk_buf_append(&b, r, 1);
      }
      const char *nv = sk_pool_strndup(c->sp, b.data ? b.data : "", b.len);
      l = lset(c, l, nl, &nl, dst, nv);
    }
    vpush(c, &out, l, nl, v.e[i].v, v.e[i].ts);
  }
  sk_buf_done(&b);
  regfree(&rx);
  return vecval(&out);
}

/* ---- calls ---- */

static const pq_node_t *unparen(const pq_node_t *n) {
  while (n->kind == PQ_PAREN) n = n->lhs;
  return n;
}

static val_t absent_of(ctx_t *c, const pq_node_t *arg, int empty) {
  vb_t out = {0};
  if (!empty) return vecval(&out);
  arg = unparen(arg);
  const tl_label_t *l = NULL;
  size_t nl = 0;
  if (arg->kind == PQ_VSEL || arg->kind == PQ_MSEL) {
    tl_label_t *ll = sk_pool_alloc(c->sp, (arg->nm ? arg->nm : 1) * sizeof *ll);
    for (size_t i = 0; i < arg->nm; i++) {
      const tl_matcher_t *m = &arg->m[i];
      if (m->op != TL_MATCH_EQ || !strcmp(m->name, "__name__")) continue;
      int dup = 0;
      for (size_t j = 0; j < nl; j++)
        if (!strcmp(ll[j].name, m->name)) dup = 1;
      if (!dup) ll[nl++] = (tl_label_t){m->name, m->value};
    }
    qsort(ll, nl, sizeof *ll, lcmp_name);
    l = ll;
  }
  vpush(c, &out, l, nl, 1, c->t);
  return vecval(&out);
}

static double round_to(double v, double to) {
  double inv = 1.0 / to;
  return floor(v * inv + 0.5) / inv;
}

static val_t eval_call(ctx_t *c, const pq_node_t *n) {
  int id = n->fn->id;
  switch (id) {
  case PQF_TIME: return (val_t){.type = TL_PQ_SCALAR, .s = (double)c->t / 1000.0};
  case PQF_PI: return (val_t){.type = TL_PQ_SCALAR, .s = M_PI};
  case PQF_VECTOR: {
    val_t a = eval(c, n->args[0]);
    vb_t out = {0};
    vpush(c, &out, NULL, 0, a.s, c->t);
    return vecval(&out);
  }
  case PQF_SCALAR: {
    val_t a = eval(c, n->args[0]);
    return (val_t){.type = TL_PQ_SCALAR, .s = a.vec.n == 1 ? a.vec.e[0].v : NAN};
  }
  case PQF_HISTOGRAM_QUANTILE: {
    val_t q = eval(c, n->args[0]), v = eval(c, n->args[1]);
    return hist_quantile(c, q.s, v.vec);
  }
  case PQF_LABEL_REPLACE: {
    val_t v = eval(c, n->args[0]);
    const char *dst = n->args[1]->str;
    if (!dst || !*dst) efail(c, SK_EINVAL, "invalid destination label name in label_replace(): \"\"");
    for (const char *p = dst; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (p != dst && *p >= '0' && *p <= '9')))
        efail(c, SK_EINVAL, "invalid destination label name in label_replace(): %s", dst);
    return label_replace(c, v.vec, dst, unparen(n->args[2])->str, unparen(n->args[3])->str, unparen(n->args[4])->str);
  }
  case PQF_ABSENT: {
    val_t v = eval(c, n->args[0]);
    return absent_of(c, n->args[0], v.vec.n == 0);
  }
  case PQF_LABEL_JOIN: {
    val_t v = eval(c, n->args[0]);
    const char *dst = unparen(n->args[1])->str, *sep = unparen(n->args[2])->str;
    if (!valid_label_name(dst)) efail(c, SK_EINVAL, "invalid destination label name in label_join(): %s", dst ? dst : "");
    for (size_t k = 3; k < n->nargs; k++)
      if (!valid_label_name(unparen(n->args[k])->str))
        efail(c, SK_EINVAL, "invalid source label name in label_join(): %s", unparen(n->args[k])->str);
    vb_t out = {0};
    sk_buf_t b;
    sk_buf_init(&b);
    for (size_t i = 0; i < v.vec.n; i++) {
      sk_buf_reset(&b);
      for (size_t k = 3; k < n->nargs; k++) {
        const char *sv = lget(v.vec.e[i].l, v.vec.e[i].nl, unparen(n->args[k])->str);
        if (k > 3) sk_buf_puts(&b, sep ? sep : "");
        if (sv) sk_buf_puts(&b, sv);
      }
      size_t nl;
      const tl_label_t *l = lset(c, v.vec.e[i].l, v.vec.e[i].nl, &nl, dst, sk_pool_strndup(c->sp, b.data ? b.data : "", b.len));
      vpush(c, &out, l, nl, v.vec.e[i].v, v.vec.e[i].ts);
    }
    sk_buf_done(&b);
    return vecval(&out);
  }
  case PQF_MINUTE:
  case PQF_HOUR:
  case PQF_DAY_OF_MONTH:
  case PQF_DAY_OF_WEEK:
  case PQF_DAYS_IN_MONTH:
  case PQF_MONTH:
  case PQF_YEAR: {
    vb_t out = {0};
    vec_t in = {0};
    el_t now = {.v = (double)c->t / 1000.0, .ts = c->t};
    if (n->nargs) in = eval(c, n->args[0]).vec;
    else {
      in.e = &now;
      in.n = 1;
    }
    for (size_t i = 0; i < in.n; i++) {
      double x = in.e[i].v;
      if (isnan(x) || isinf(x) || fabs(x) > 1e15) { /* not a time: NaN, like an impossible date */
        x = NAN;
      } else {
        time_t t = (time_t)(int64_t)x; /* truncated, as Prometheus does */
        struct tm tm;
        gmtime_r(&t, &tm);
        switch (id) {
        case PQF_MINUTE: x = tm.tm_min; break;
        case PQF_HOUR: x = tm.tm_hour; break;
        case PQF_DAY_OF_MONTH: x = tm.tm_mday; break;
        case PQF_DAY_OF_WEEK: x = tm.tm_wday; break;
        case PQF_MONTH: x = tm.tm_mon + 1; break;
        case PQF_YEAR: x = tm.tm_year + 1900; break;
        default: {
          static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
          int y = tm.tm_year + 1900;
          int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
          x = mdays[tm.tm_mon] + (tm.tm_mon == 1 && leap);
        }
        }
      }
      size_t nl = 0;
      const tl_label_t *l = in.e[i].l ? drop_name(c, in.e[i].l, in.e[i].nl, &nl) : NULL;
      vpush(c, &out, l, nl, x, c->t);
    }
    return vecval(&out);
  }
  default: break;
  }
  if (n->nargs >= 1 && n->args[n->fn->id == PQF_QUANTILE_OT ? 1 : 0]->type == TL_PQ_MATRIX) {
    int mi = id == PQF_QUANTILE_OT ? 1 : 0;
    double q = 0;
    if (id == PQF_QUANTILE_OT) q = eval(c, n->args[0]).s;
    if (id == PQF_PREDICT_LINEAR) q = eval(c, n->args[1]).s;
    double tf = 0;
    if (id == PQF_HOLT_WINTERS) {
      q = eval(c, n->args[1]).s;
      tf = eval(c, n->args[2]).s;
      if (!(q > 0 && q < 1)) efail(c, SK_EINVAL, "invalid smoothing factor. Expected: 0 < sf < 1, got: %f", q);
      if (!(tf > 0 && tf < 1)) efail(c, SK_EINVAL, "invalid trend factor. Expected: 0 < tf < 1, got: %f", tf);
    }
    val_t m = eval(c, n->args[mi]);
    const pq_node_t *sel = unparen(n->args[mi]);
    if (id == PQF_ABSENT_OT) return absent_of(c, n->args[mi], m.nmat == 0);
    vb_t out = {0};
    for (size_t i = 0; i < m.nmat; i++) {
      const mel_t *me = &m.mat[i];
      int ok = 1;
      double x;
      switch (id) {
      case PQF_RATE: x = extrapolated(c, sel, me, 1, 1, &ok); break;
      case PQF_INCREASE: x = extrapolated(c, sel, me, 1, 0, &ok); break;
      case PQF_DELTA: x = extrapolated(c, sel, me, 0, 0, &ok); break;
      case PQF_IRATE:
      case PQF_IDELTA: {
        if (me->n < 2) {
          ok = 0;
          x = 0;
          break;
        }
        double last = me->v[me->n - 1], prev = me->v[me->n - 2];
        int64_t dt = me->ts[me->n - 1] - me->ts[me->n - 2];
        if (id == PQF_IRATE) {
          x = last < prev ? last : last - prev;
          if (dt == 0) {
            ok = 0;
            break;
          }
          x /= (double)dt / 1000.0;
        } else {
          x = last - prev;
        }
        break;
      }
      case PQF_DERIV: x = deriv(me, &ok); break;
      case PQF_PREDICT_LINEAR: x = predict_linear(me, c->t, q, &ok); break;
      case PQF_HOLT_WINTERS: x = holt_winters(me, q, tf, &ok); break;
      case PQF_QUANTILE_OT: {
        double *vals = sk_pool_memdup(c->sp, me->v, me->n * sizeof *vals);
        x = quantile(q, vals, me->n);
        break;
      }
      default: x = over_time(id, me, q); break;
      }
      if (!ok) continue;
      const tl_label_t *l = me->l;
      size_t nl = me->nl;
      if (id != PQF_LAST_OT) l = drop_name(c, l, nl, &nl);
      vpush(c, &out, l, nl, x, c->t);
    }
    return vecval(&out);
  }
  /* functions of an instant vector */
  double a1 = 0, a2 = 0;
  if (n->nargs > 1) a1 = eval(c, n->args[1]).s;
  if (n->nargs > 2) a2 = eval(c, n->args[2]).s;
  val_t v = eval(c, n->args[0]);
  vb_t out = {0};
  if (id == PQF_SORT || id == PQF_SORT_DESC) {
    el_t *e = sk_pool_memdup(c->sp, v.vec.e, (v.vec.n ? v.vec.n : 1) * sizeof *e);
    qsort(e, v.vec.n, sizeof *e, id == PQF_SORT ? el_asc : el_desc);
    v.vec.e = e;
    return v;
  }
  if (id == PQF_CLAMP && a1 > a2) return vecval(&out);
  int is_sel = unparen(n->args[0])->kind == PQ_VSEL;
  for (size_t i = 0; i < v.vec.n; i++) {
    double x = v.vec.e[i].v;
    switch (id) {
    case PQF_ABS: x = fabs(x); break;
    case PQF_CEIL: x = ceil(x); break;
    case PQF_FLOOR: x = floor(x); break;
    case PQF_ROUND: x = round_to(x, n->nargs > 1 ? a1 : 1); break;
    case PQF_SQRT: x = sqrt(x); break;
    case PQF_EXP: x = exp(x); break;
    case PQF_LN: x = log(x); break;
    case PQF_LOG2: x = log2(x); break;
    case PQF_LOG10: x = log10(x); break;
    case PQF_SGN: x = x > 0 ? 1 : x < 0 ? -1 : x; break;
    case PQF_ACOS: x = acos(x); break;
    case PQF_ACOSH: x = acosh(x); break;
    case PQF_ASIN: x = asin(x); break;
    case PQF_ASINH: x = asinh(x); break;
    case PQF_ATAN: x = atan(x); break;
    case PQF_ATANH: x = atanh(x); break;
    case PQF_COS: x = cos(x); break;
    case PQF_COSH: x = cosh(x); break;
    case PQF_SIN: x = sin(x); break;
    case PQF_SINH: x = sinh(x); break;
    case PQF_TAN: x = tan(x); break;
    case PQF_TANH: x = tanh(x); break;
    case PQF_DEG: x = x * 180 / M_PI; break;
    case PQF_RAD: x = x * M_PI / 180; break;
    case PQF_CLAMP: x = fmax(a1, fmin(a2, x)); break;
    case PQF_CLAMP_MIN: x = fmax(a1, x); break;
    case PQF_CLAMP_MAX: x = fmin(a1, x); break;
    case PQF_TIMESTAMP: x = (double)(is_sel ? v.vec.e[i].ts : c->t) / 1000.0; break;
    default: efail(c, SK_ENOTSUP, "function \"%s\" is not supported here", n->fn->name);
    }
    size_t nl;
    const tl_label_t *l = drop_name(c, v.vec.e[i].l, v.vec.e[i].nl, &nl);
    vpush(c, &out, l, nl, x, c->t);
  }
  return vecval(&out);
}

/* A function's result must not hold two elements with one label set (e.g.
 * abs() over two metrics that differ only by name, or a label_join that
 * overwrites the distinguishing label), as in Prometheus. */
static void check_same_labelset(ctx_t *c, vec_t v) {
  tl__hmap_t seen = {0};
  sk_buf_t b;
  sk_buf_init(&b);
  int dup = 0;
  for (size_t i = 0; i < v.n && !dup; i++) {
    sk_buf_reset(&b);
    for (size_t j = 0; j < v.e[i].nl; j++) {
      sk_buf_append(&b, v.e[i].l[j].name, strlen(v.e[i].l[j].name) + 1);
      sk_buf_append(&b, v.e[i].l[j].value, strlen(v.e[i].l[j].value) + 1);
    }
    if (tl__hmap_get(&seen, b.data ? b.data : "", b.len)) dup = 1;
    else tl__hmap_put(&seen, sk_pool_memdup(c->sp, b.data ? b.data : "", b.len), b.len, &seen);
  }
  sk_buf_done(&b);
  tl__hmap_free(&seen);
  if (dup) efail(c, SK_EINVAL, "vector cannot contain metrics with the same labelset");
}

static val_t eval(ctx_t *c, const pq_node_t *n) {
  switch (n->kind) {
  case PQ_NUM: return (val_t){.type = TL_PQ_SCALAR, .s = n->num};
  case PQ_STR: return (val_t){.type = TL_PQ_STRING, .str = n->str};
  case PQ_VSEL: return eval_vsel(c, n);
  case PQ_MSEL: return eval_msel(c, n);
  case PQ_PAREN: return eval(c, n->lhs);
  case PQ_SUBQ: return eval_subq(c, n);
  case PQ_NEG: {
    val_t v = eval(c, n->lhs);
    if (v.type == TL_PQ_SCALAR) {
      v.s = -v.s;
      return v;
    }
    vb_t out = {0};
    for (size_t i = 0; i < v.vec.n; i++) {
      size_t nl;
      const tl_label_t *l = drop_name(c, v.vec.e[i].l, v.vec.e[i].nl, &nl);
      vpush(c, &out, l, nl, -v.vec.e[i].v, c->t);
    }
    return vecval(&out);
  }
  case PQ_CALL: {
    val_t v = eval_call(c, n);
    if (v.type == TL_PQ_VECTOR && v.vec.n > 1) check_same_labelset(c, v.vec);
    return v;
  }
  case PQ_AGG: return eval_agg(c, n);
  case PQ_BIN: return eval_bin(c, n);
  }
  efail(c, SK_EINVAL, "unknown expression node");
}

/* ---- driver ---- */

static void check_deadline(ctx_t *c) {
  if (c->o.deadline_ns && uv_hrtime() > c->o.deadline_ns) efail(c, SK_ETIMEDOUT, "query timed out in expression evaluation");
}

static void prefetch(ctx_t *c, int64_t start, int64_t end) {
  const tl_promql_expr_t *e = c->e;
  c->pre = sk_pool_calloc(c->qp, (e->nsels ? e->nsels : 1) * sizeof *c->pre);
  c->npre = sk_pool_calloc(c->qp, (e->nsels ? e->nsels : 1) * sizeof *c->npre);
  uint64_t total = 0;
  for (size_t i = 0; i < e->nsels; i++) {
    const pq_node_t *s = e->sels[i];
    int64_t back = s->kind == PQ_MSEL ? s->range_ms : c->o.lookback_ms;
    int64_t from = start - s->sq_lo, to = end - s->sq_hi;
    if (s->sq_at) { /* inside a subquery with @: around that time */
      int64_t a = s->sq_at == 1 ? s->sq_at_ms : s->sq_at == 2 ? c->start : c->end;
      from = a - s->sq_lo;
      to = a - s->sq_hi;
    }
    if (s->at) from = to = s->at == 1 ? s->at_ms : s->at == 2 ? c->start : c->end;
    int64_t mint = from - s->offset_ms - back, maxt = to - s->offset_ms;
    int rc = tl_tsdb_select(c->db, c->qp, s->m, s->nm, mint, maxt, 0, c->o.max_series, &c->pre[i], &c->npre[i]);
    if (rc < 0) {
      char m[256];
      tl_tsdb_errmsg(c->db, m, sizeof m);
      efail(c, rc == SK_ELIMIT ? SK_ELIMIT : rc == SK_EINVAL ? SK_EINVAL : rc, "%s", m);
    }
    for (size_t j = 0; j < c->npre[i]; j++) total += c->pre[i][j].n;
    if (total > c->o.max_samples)
      efail(c, SK_ELIMIT, "query processing would load too many samples into memory in query execution");
    check_deadline(c);
  }
}

static void ctx_init(ctx_t *c, tl_tsdb_t *db, sk_pool_t *pool, const tl_promql_expr_t *e, const tl_promql_opts_t *o,
                     char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  c->db = db;
  c->qp = pool;
  c->e = e;
  if (o) c->o = *o;
  if (c->o.lookback_ms <= 0) c->o.lookback_ms = 5 * 60 * 1000;
  if (!c->o.max_series) c->o.max_series = 100000;
  if (!c->o.max_samples) c->o.max_samples = 50000000;
  c->err = err;
  c->errlen = errlen;
  if (err && errlen) err[0] = 0;
}

static tl_label_t *copy_labels(sk_pool_t *p, const tl_label_t *l, size_t n) {
  tl_label_t *o = sk_pool_alloc(p, (n ? n : 1) * sizeof *o);
  for (size_t i = 0; i < n; i++) {
    o[i].name = sk_pool_strdup(p, l[i].name);
    o[i].value = sk_pool_strdup(p, l[i].value);
  }
  return o;
}

int tl_promql_eval_instant(tl_tsdb_t *db, sk_pool_t *pool, const tl_promql_expr_t *e, int64_t t_ms,
                           const tl_promql_opts_t *o, tl_promql_result_t *out, char *err, size_t errlen) {
  ctx_t *c = malloc(sizeof *c);
  if (!c) return SK_ENOMEM;
  ctx_init(c, db, pool, e, o, err, errlen);
  memset(out, 0, sizeof *out);
  /* The result code lives in c->rc (set by efail() before its longjmp, or
   * below): no local is changed between setjmp and a longjmp. */
  if (setjmp(c->jb)) goto done;
  c->sp = pool;
  c->t = c->start = c->end = t_ms;
  prefetch(c, t_ms, t_ms);
  val_t v = eval(c, e->root);
  out->type = v.type;
  out->t = t_ms;
  switch (v.type) {
  case TL_PQ_SCALAR: out->scalar = v.s; break;
  case TL_PQ_STRING: out->str = v.str; break;
  case TL_PQ_VECTOR:
    out->series = sk_pool_alloc(pool, (v.vec.n ? v.vec.n : 1) * sizeof *out->series);
    out->nseries = v.vec.n;
    for (size_t i = 0; i < v.vec.n; i++) {
      tl_series_t *s = &out->series[i];
      s->labels = (tl_label_t *)v.vec.e[i].l;
      s->nlabels = v.vec.e[i].nl;
      s->ts = sk_pool_alloc(pool, sizeof *s->ts);
      s->v = sk_pool_alloc(pool, sizeof *s->v);
      s->ts[0] = t_ms;
      s->v[0] = v.vec.e[i].v;
      s->n = 1;
    }
    break;
  case TL_PQ_MATRIX:
    out->series = sk_pool_alloc(pool, (v.nmat ? v.nmat : 1) * sizeof *out->series);
    out->nseries = v.nmat;
    for (size_t i = 0; i < v.nmat; i++) {
      tl_series_t *s = &out->series[i];
      s->labels = (tl_label_t *)v.mat[i].l;
      s->nlabels = v.mat[i].nl;
      s->ts = (int64_t *)v.mat[i].ts;
      s->v = (double *)v.mat[i].v;
      s->n = v.mat[i].n;
    }
    break;
  }
  /* duplicate label sets in a vector result are an error in Prometheus */
  if (v.type == TL_PQ_VECTOR && v.vec.n > 1) {
    tl__hmap_t seen = {0};
    sk_buf_t b;
    sk_buf_init(&b);
    int dup = 0;
    for (size_t i = 0; i < v.vec.n && !dup; i++) {
      full_key(&b, v.vec.e[i].l, v.vec.e[i].nl);
      if (tl__hmap_get(&seen, b.data, b.len))
        dup = 1;
      else
        tl__hmap_put(&seen, sk_pool_memdup(pool, b.data, b.len), b.len, (void *)1);
    }
    sk_buf_done(&b);
    tl__hmap_free(&seen);
    if (dup) {
      if (err) snprintf(err, errlen, "vector cannot contain metrics with the same labelset");
      c->rc = SK_EINVAL;
    }
  }
done:;
  int rc = c->rc;
  release_live(c);
  free(c);
  return rc;
}

typedef struct oseries {
  tl_label_t *l;
  size_t nl;
  int64_t *ts;
  double *v;
  size_t n, cap;
} oseries_t;

static int same_labels(const oseries_t *s, const tl_label_t *l, size_t n) {
  if (s->nl != n) return 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->l[i].name, l[i].name) || strcmp(s->l[i].value, l[i].value)) return 0;
  return 1;
}

static int oseries_cmp(const void *a, const void *b) {
  const tl_series_t *x = a, *y = b;
  for (size_t i = 0; i < x->nlabels && i < y->nlabels; i++) {
    int c = strcmp(x->labels[i].name, y->labels[i].name);
    if (c) return c;
    c = strcmp(x->labels[i].value, y->labels[i].value);
    if (c) return c;
  }
  return x->nlabels < y->nlabels ? -1 : x->nlabels > y->nlabels;
}

int tl_promql_eval_range(tl_tsdb_t *db, sk_pool_t *pool, const tl_promql_expr_t *e, int64_t start_ms,
                         int64_t end_ms, int64_t step_ms, const tl_promql_opts_t *o, tl_promql_result_t *out,
                         char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (step_ms <= 0 || end_ms < start_ms) {
    if (err) snprintf(err, errlen, "invalid range: start, end and step must give at least one step");
    return SK_EINVAL;
  }
  if (e->root->type != TL_PQ_SCALAR && e->root->type != TL_PQ_VECTOR) {
    if (err)
      snprintf(err, errlen, "invalid expression type \"%s\" for range query, must be Scalar or instant Vector",
               e->root->type == TL_PQ_MATRIX ? "range vector" : "string");
    return SK_EINVAL;
  }
  ctx_t *c = malloc(sizeof *c);
  if (!c) return SK_ENOMEM;
  ctx_init(c, db, pool, e, o, err, errlen);
  c->range_query = 1;
  tl__hmap_t map = {0};
  /* volatile: changed after setjmp and read at done after a longjmp */
  oseries_t **volatile os = NULL;
  volatile size_t nos = 0, capos = 0;
  /* hint[i]: the output series of element i at the previous step. Most
   * expressions answer the same label sets in the same order at every
   * step, so a label compare replaces the key build + hash lookup. */
  oseries_t **hint = NULL, **cur = NULL;
  size_t nhint = 0, caphint = 0;
  sk_buf_t b;
  sk_buf_init(&b);
  int rc = 0;
  sk_pool_t *sp = sk_pool_new();
  if (setjmp(c->jb)) {
    rc = c->rc;
    goto done;
  }
  c->sp = sp;
  c->start = start_ms;
  c->end = end_ms;
  prefetch(c, start_ms, end_ms);
  for (int64_t t = start_ms; t <= end_ms; t += step_ms) {
    check_deadline(c);
    sk_pool_clear(sp);
    c->t = t;
    val_t v = eval(c, e->root);
    el_t scalar_el = {NULL, 0, v.s, t};
    el_t *els = v.type == TL_PQ_SCALAR ? &scalar_el : v.vec.e;
    size_t nel = v.type == TL_PQ_SCALAR ? 1 : v.vec.n;
    if (nel > caphint) {
      caphint = nel * 2;
      oseries_t **nh = sk_pool_alloc(pool, caphint * sizeof *nh);
      if (nhint) memcpy(nh, hint, nhint * sizeof *nh);
      hint = nh;
      cur = sk_pool_alloc(pool, caphint * sizeof *cur);
    }
    for (size_t i = 0; i < nel; i++) {
      oseries_t *s = i < nhint && same_labels(hint[i], els[i].l, els[i].nl) ? hint[i] : NULL;
      if (!s) {
        full_key(&b, els[i].l, els[i].nl);
        s = tl__hmap_get(&map, b.data, b.len);
      }
      if (!s) {
        s = sk_pool_calloc(pool, sizeof *s);
        s->l = copy_labels(pool, els[i].l, els[i].nl);
        s->nl = els[i].nl;
        tl__hmap_put(&map, sk_pool_memdup(pool, b.data, b.len), b.len, s);
        if (nos == capos) {
          capos = capos ? capos * 2 : 64;
          os = realloc(os, capos * sizeof *os);
          if (!os) abort();
        }
        os[nos++] = s;
      }
      if (s->n && s->ts[s->n - 1] == t) {
        if (err) snprintf(err, errlen, "vector cannot contain metrics with the same labelset");
        rc = SK_EINVAL;
        goto done;
      }
      if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->ts = realloc(s->ts, s->cap * sizeof *s->ts);
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->ts || !s->v) abort();
      }
      s->ts[s->n] = t;
      s->v[s->n++] = els[i].v;
      cur[i] = s;
    }
    oseries_t **sw = hint;
    hint = cur;
    cur = sw;
    nhint = nel;
    if (end_ms - t < step_ms) break; /* no overflow past end */
  }
  out->type = TL_PQ_MATRIX;
  out->series = sk_pool_alloc(pool, (nos ? nos : 1) * sizeof *out->series);
  out->nseries = nos;
  for (size_t i = 0; i < nos; i++) {
    tl_series_t *s = &out->series[i];
    s->labels = os[i]->l;
    s->nlabels = os[i]->nl;
    s->n = os[i]->n;
    s->ts = sk_pool_memdup(pool, os[i]->ts, (s->n ? s->n : 1) * sizeof *s->ts);
    s->v = sk_pool_memdup(pool, os[i]->v, (s->n ? s->n : 1) * sizeof *s->v);
  }
  qsort(out->series, nos, sizeof *out->series, oseries_cmp);
done:
  release_live(c);
  for (size_t i = 0; i < nos; i++) {
    free(os[i]->ts);
    free(os[i]->v);
  }
  free(os);
  tl__hmap_free(&map);
  sk_buf_done(&b);
  sk_pool_free(sp);
  free(c);
  if (rc < 0) memset(out, 0, sizeof *out);
  return rc;
}
