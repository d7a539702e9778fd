/* metrics.c - Prometheus metrics registry and text exposition (0.0.4).
 *
 * Families are only ever added, never removed, until the registry is
 * freed; so a render copies the pointer arrays under the locks and reads
 * values without them. A child removed (sk_mfamily_remove) while a render
 * of its family runs waits on the family's dead list until the last such
 * render is done. Values are doubles kept as their bit patterns in 64-bit
 * atomics and updated with compare-and-swap loops. */
#include "skiff/metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "skiff/err.h"

#ifndef SKIFF_VERSION
#define SKIFF_VERSION "0.0.0"
#endif

#define SK_METRICS_MAX_HOOKS 32

const double SK_METRICS_DEFAULT_BUCKETS[11] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                               0.5,   1,    2.5,   5,    10};

struct sk_mchild {
  struct sk_mfamily *fam;
  char **values; /* fam->nlabels strings */
  uint64_t hash;
  _Atomic uint64_t val;     /* counter / gauge: double bits */
  _Atomic uint64_t sum;     /* histogram: double bits */
  _Atomic uint64_t *counts; /* histogram: per bucket (not cumulative), last = +Inf */
  struct sk_mchild *dead_next; /* removed while a render ran: on fam->dead */
};

/* The public child types are views of one struct. */
struct sk_counter {
  struct sk_mchild m;
};
struct sk_gauge {
  struct sk_mchild m;
};
struct sk_histogram {
  struct sk_mchild m;
};

struct sk_mfamily {
  sk_metrics_t *reg;
  char *name;
  char *help;
  sk_metric_type_t type;
  size_t nlabels;
  char **labels;
  double *bounds;
  size_t nbounds;
  pthread_mutex_t mu;
  struct sk_mchild **children;
  size_t nchildren, cap;
  _Atomic size_t max_children;
  int renders;            /* renders reading the children without mu (under mu) */
  struct sk_mchild *dead; /* removed children they may still read (under mu) */
};

struct sk_hook {
  sk_metrics_collect_fn fn;
  void *ud;
};

struct sk_metrics {
  pthread_mutex_t mu;
  struct sk_mfamily **fams;
  size_t nfams, cap;
  struct sk_hook hooks[SK_METRICS_MAX_HOOKS];
  size_t nhooks;
  int process_added;
  double start_time;
  struct sk_gauge *p_rss, *p_vsz, *p_fds, *p_maxfds;
  struct sk_counter *p_cpu;
};

/* ---- atomic doubles ---- */

static inline uint64_t d2u(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}
static inline double u2d(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v) {
  uint64_t old = atomic_load_explicit(p, memory_order_relaxed), nw;
  do {
    nw = d2u(u2d(old) + v);
  } while (!atomic_compare_exchange_weak_explicit(p, &old, nw, memory_order_relaxed,
                                                  memory_order_relaxed));
}

static double atomic_get_double(const _Atomic uint64_t *p) {
  return u2d(atomic_load_explicit((_Atomic uint64_t *)p, memory_order_relaxed));
}

/* ---- validation ---- */

static int name_char(int c, int first, int colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return 1;
  if (colon && c == ':') return 1;
  if (!first && c >= '0' && c <= '9') return 1;
  return 0;
}

int sk_metrics_valid_name(const char *name) {
  if (!name || !*name) return 0;
  size_t n = strlen(name);
  if (n > SK_METRICS_MAX_NAME_LEN) return 0;
  for (size_t i = 0; i < n; i++)
    if (!name_char((unsigned char)name[i], i == 0, 1)) return 0;
  return 1;
}

int sk_metrics_valid_label(const char *name) {
  if (!name || !*name) return 0;
  size_t n = strlen(name);
  if (n > SK_METRICS_MAX_NAME_LEN) return 0;
  if (n >= 2 && name[0] == '_' && name[1] == '_') return 0; /* reserved */
  for (size_t i = 0; i < n; i++)
    if (!name_char((unsigned char)name[i], i == 0, 0)) return 0;
  return 1;
}

static int valid_utf8(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return 0;
    }
    if (i + len > n) return 0;
    for (size_t k = 1; k < len; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return 0;
    i += len;
  }
  return 1;
}

/* ---- registry ---- */

int sk_metrics_new(sk_metrics_t **out) {
  if (!out) return SK_EINVAL;
  sk_metrics_t *m = sk_xcalloc(1, sizeof *m);
  pthread_mutex_init(&m->mu, NULL);
  *out = m;
  return 0;
}

static void free_child(struct sk_mchild *c, size_t nlabels) {
  if (!c) return;
  for (size_t i = 0; i < nlabels; i++) free(c->values[i]);
  free(c->values);
  free(c->counts);
  free(c);
}

static void free_family(struct sk_mfamily *f) {
  if (!f) return;
  for (size_t i = 0; i < f->nchildren; i++) free_child(f->children[i], f->nlabels);
  for (struct sk_mchild *c = f->dead, *n; c; c = n) {
    n = c->dead_next;
    free_child(c, f->nlabels);
  }
  free(f->children);
  for (size_t i = 0; i < f->nlabels; i++) free(f->labels[i]);
  free(f->labels);
  free(f->bounds);
  free(f->name);
  free(f->help);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

void sk_metrics_free(sk_metrics_t *m) {
  if (!m) return;
  for (size_t i = 0; i < m->nfams; i++) free_family(m->fams[i]);
  free(m->fams);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

static sk_metrics_t *default_reg;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static void default_init(void) {
  if (sk_metrics_new(&default_reg) < 0) abort();
}

sk_metrics_t *sk_metrics_default(void) {
  pthread_once(&default_once, default_init);
  return default_reg;
}

int sk_metrics_on_collect(sk_metrics_t *m, sk_metrics_collect_fn fn, void *ud) {
  if (!m || !fn) return SK_EINVAL;
  int rc = 0;
  pthread_mutex_lock(&m->mu);
  if (m->nhooks >= SK_METRICS_MAX_HOOKS) {
    rc = SK_ELIMIT;
  } else {
    m->hooks[m->nhooks].fn = fn;
    m->hooks[m->nhooks].ud = ud;
    m->nhooks++;
  }
  pthread_mutex_unlock(&m->mu);
  return rc;
}

/* ---- families ---- */

static int same_shape(const struct sk_mfamily *f, sk_metric_type_t type, const char *const *labels,
                      size_t nlabels, const double *bounds, size_t nbounds) {
  if (f->type != type || f->nlabels != nlabels) return 0;
  for (size_t i = 0; i < nlabels; i++)
    if (strcmp(f->labels[i], labels[i]) != 0) return 0;
  if (type == SK_METRIC_HISTOGRAM) {
    if (f->nbounds != nbounds) return 0;
    for (size_t i = 0; i < nbounds; i++)
      if (f->bounds[i] != bounds[i]) return 0;
  }
  return 1;
}

static struct sk_mchild *child_new(struct sk_mfamily *f, const char *const *values, uint64_t hash) {
  struct sk_mchild *c = sk_xcalloc(1, sizeof *c);
  c->fam = f;
  c->hash = hash;
  c->values = sk_xcalloc(f->nlabels ? f->nlabels : 1, sizeof(char *));
  for (size_t i = 0; i < f->nlabels; i++) c->values[i] = sk_xstrdup(values[i]);
  if (f->type == SK_METRIC_HISTOGRAM)
    c->counts = sk_xcalloc(f->nbounds + 1, sizeof(_Atomic uint64_t));
  return c;
}

static uint64_t values_hash(const char *const *values, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
      h ^= *p;
      h *= 1099511628211ULL;
    }
    h ^= 0xff;
    h *= 1099511628211ULL;
  }
  return h;
}

static int family_register(sk_metrics_t *m, sk_metric_type_t type, const char *name,
                           const char *help, const char *const *labels, size_t nlabels,
                           const double *buckets, size_t nbuckets, sk_mfamily_t **out) {
  if (!m || !out) return SK_EINVAL;
  *out = NULL;
  if (!sk_metrics_valid_name(name)) return SK_EINVAL;
  if (nlabels > SK_METRICS_MAX_LABELS) return SK_ELIMIT;
  if (nlabels && !labels) return SK_EINVAL;
  if (help && strlen(help) > SK_METRICS_MAX_HELP_LEN) return SK_E2BIG;
  if (help && !valid_utf8(help, strlen(help))) return SK_EINVAL;
  for (size_t i = 0; i < nlabels; i++) {
    if (!sk_metrics_valid_label(labels[i])) return SK_EINVAL;
    if (type == SK_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0) return SK_EINVAL;
    for (size_t j = 0; j < i; j++)
      if (strcmp(labels[i], labels[j]) == 0) return SK_EINVAL;
  }
  if (type == SK_METRIC_HISTOGRAM) {
    if (!buckets || !nbuckets) {
      buckets = SK_METRICS_DEFAULT_BUCKETS;
      nbuckets = sizeof SK_METRICS_DEFAULT_BUCKETS / sizeof SK_METRICS_DEFAULT_BUCKETS[0];
    }
    if (nbuckets > SK_METRICS_MAX_BUCKETS) return SK_ELIMIT;
    for (size_t i = 0; i < nbuckets; i++) {
      if (!isfinite(buckets[i])) return SK_EINVAL;
      if (i && !(buckets[i] > buckets[i - 1])) return SK_EINVAL;
    }
  } else {
    buckets = NULL;
    nbuckets = 0;
  }

  int rc = 0;
  pthread_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->nfams; i++) {
    struct sk_mfamily *f = m->fams[i];
    if (strcmp(f->name, name) == 0) {
      if (same_shape(f, type, labels, nlabels, buckets, nbuckets))
        *out = f;
      else
        rc = SK_EEXIST;
      goto out;
    }
  }
  if (m->nfams >= SK_METRICS_MAX_FAMILIES) {
    rc = SK_ELIMIT;
    goto out;
  }
  struct sk_mfamily *f = sk_xcalloc(1, sizeof *f);
  f->reg = m;
  f->name = sk_xstrdup(name);
  f->help = sk_xstrdup(help ? help : "");
  f->type = type;
  f->nlabels = nlabels;
  f->labels = sk_xcalloc(nlabels ? nlabels : 1, sizeof(char *));
  for (size_t i = 0; i < nlabels; i++) f->labels[i] = sk_xstrdup(labels[i]);
  if (nbuckets) {
    f->bounds = sk_xmalloc(nbuckets * sizeof(double));
    memcpy(f->bounds, buckets, nbuckets * sizeof(double));
    f->nbounds = nbuckets;
  }
  pthread_mutex_init(&f->mu, NULL);
  atomic_init(&f->max_children, (size_t)SK_METRICS_DEFAULT_MAX_CHILDREN);
  if (nlabels == 0) { /* the single child exists from the start and shows as 0 */
    f->children = sk_xcalloc(1, sizeof *f->children);
    f->children[0] = child_new(f, NULL, values_hash(NULL, 0));
    f->nchildren = f->cap = 1;
  }
  if (m->nfams == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 16;
    m->fams = sk_xrealloc(m->fams, m->cap * sizeof *m->fams);
  }
  m->fams[m->nfams++] = f;
  *out = f;
out:
  pthread_mutex_unlock(&m->mu);
  return rc;
}

int sk_metrics_counter_family(sk_metrics_t *m, const char *name, const char *help,
                              const char *const *labels, size_t nlabels, sk_mfamily_t **out) {
  return family_register(m, SK_METRIC_COUNTER, name, help, labels, nlabels, NULL, 0, out);
}

int sk_metrics_gauge_family(sk_metrics_t *m, const char *name, const char *help,
                            const char *const *labels, size_t nlabels, sk_mfamily_t **out) {
  return family_register(m, SK_METRIC_GAUGE, name, help, labels, nlabels, NULL, 0, out);
}

int sk_metrics_histogram_family(sk_metrics_t *m, const char *name, const char *help,
                                const char *const *labels, size_t nlabels, const double *buckets,
                                size_t nbuckets, sk_mfamily_t **out) {
  return family_register(m, SK_METRIC_HISTOGRAM, name, help, labels, nlabels, buckets, nbuckets,
                         out);
}

int sk_mfamily_set_max_children(sk_mfamily_t *f, size_t max) {
  if (!f || max < 1) return SK_EINVAL;
  atomic_store(&f->max_children, max);
  return 0;
}

size_t sk_mfamily_child_count(const sk_mfamily_t *f) {
  if (!f) return 0;
  pthread_mutex_lock((pthread_mutex_t *)&f->mu);
  size_t n = f->nchildren;
  pthread_mutex_unlock((pthread_mutex_t *)&f->mu);
  return n;
}

sk_metric_type_t sk_mfamily_type(const sk_mfamily_t *f) { return f ? f->type : 0; }

/* Under f->mu: the index of the child with these label values (h their
 * hash), or f->nchildren when there is none. */
static size_t child_find(const sk_mfamily_t *f, const char *const *values, uint64_t h) {
  for (size_t i = 0; i < f->nchildren; i++) {
    const struct sk_mchild *c = f->children[i];
    if (c->hash != h) continue;
    size_t k = 0;
    while (k < f->nlabels && strcmp(c->values[k], values[k]) == 0) k++;
    if (k == f->nlabels) return i;
  }
  return f->nchildren;
}

static int child_get(sk_mfamily_t *f, sk_metric_type_t type, const char *const *values,
                     struct sk_mchild **out) {
  if (!out) return SK_EINVAL;
  *out = NULL;
  if (!f || f->type != type) return SK_EINVAL;
  if (f->nlabels && !values) return SK_EINVAL;
  for (size_t i = 0; i < f->nlabels; i++)
    if (!values[i]) return SK_EINVAL;
  uint64_t h = values_hash(values, f->nlabels);
  int rc = 0;
  pthread_mutex_lock(&f->mu);
  size_t at = child_find(f, values, h);
  if (at < f->nchildren) {
    *out = f->children[at];
    goto out;
  }
  for (size_t i = 0; i < f->nlabels; i++) {
    size_t n = strlen(values[i]);
    if (n > SK_METRICS_MAX_VALUE_LEN) {
      rc = SK_E2BIG;
      goto out;
    }
    if (!valid_utf8(values[i], n)) {
      rc = SK_EINVAL;
      goto out;
    }
  }
  if (f->nchildren >= atomic_load(&f->max_children)) {
    rc = SK_ELIMIT;
    goto out;
  }
  if (f->nchildren == f->cap) {
    f->cap = f->cap ? f->cap * 2 : 8;
    f->children = sk_xrealloc(f->children, f->cap * sizeof *f->children);
  }
  f->children[f->nchildren] = child_new(f, values, h);
  *out = f->children[f->nchildren++];
out:
  pthread_mutex_unlock(&f->mu);
  return rc;
}

int sk_mfamily_remove(sk_mfamily_t *f, const char *const *values) {
  if (!f || !f->nlabels || !values) return SK_EINVAL;
  for (size_t i = 0; i < f->nlabels; i++)
    if (!values[i]) return SK_EINVAL;
  uint64_t h = values_hash(values, f->nlabels);
  struct sk_mchild *gone = NULL;
  pthread_mutex_lock(&f->mu);
  size_t i = child_find(f, values, h);
  if (i == f->nchildren) {
    pthread_mutex_unlock(&f->mu);
    return SK_ENOTFOUND;
  }
  struct sk_mchild *c = f->children[i];
  f->children[i] = f->children[--f->nchildren]; /* order does not matter: renders sort */
  if (f->renders > 0) {
    c->dead_next = f->dead;
    f->dead = c;
  } else {
    gone = c;
  }
  pthread_mutex_unlock(&f->mu);
  free_child(gone, f->nlabels);
  return 0;
}

int sk_counter_with(sk_mfamily_t *f, const char *const *values, sk_counter_t **out) {
  struct sk_mchild *c;
  int rc = child_get(f, SK_METRIC_COUNTER, values, &c);
  if (out) *out = (sk_counter_t *)c;
  return rc;
}

int sk_gauge_with(sk_mfamily_t *f, const char *const *values, sk_gauge_t **out) {
  struct sk_mchild *c;
  int rc = child_get(f, SK_METRIC_GAUGE, values, &c);
  if (out) *out = (sk_gauge_t *)c;
  return rc;
}

int sk_histogram_with(sk_mfamily_t *f, const char *const *values, sk_histogram_t **out) {
  struct sk_mchild *c;
  int rc = child_get(f, SK_METRIC_HISTOGRAM, values, &c);
  if (out) *out = (sk_histogram_t *)c;
  return rc;
}

int sk_metrics_counter(sk_metrics_t *m, const char *name, const char *help, sk_counter_t **out) {
  sk_mfamily_t *f;
  if (out) *out = NULL;
  int rc = sk_metrics_counter_family(m, name, help, NULL, 0, &f);
  if (rc < 0) return rc;
  return sk_counter_with(f, NULL, out);
}

int sk_metrics_gauge(sk_metrics_t *m, const char *name, const char *help, sk_gauge_t **out) {
  sk_mfamily_t *f;
  if (out) *out = NULL;
  int rc = sk_metrics_gauge_family(m, name, help, NULL, 0, &f);
  if (rc < 0) return rc;
  return sk_gauge_with(f, NULL, out);
}

int sk_metrics_histogram(sk_metrics_t *m, const char *name, const char *help,
                         const double *buckets, size_t nbuckets, sk_histogram_t **out) {
  sk_mfamily_t *f;
  if (out) *out = NULL;
  int rc = sk_metrics_histogram_family(m, name, help, NULL, 0, buckets, nbuckets, &f);
  if (rc < 0) return rc;
  return sk_histogram_with(f, NULL, out);
}

/* ---- updates ---- */

void sk_counter_inc(sk_counter_t *c) {
  if (c) atomic_add_double(&c->m.val, 1.0);
}

void sk_counter_add(sk_counter_t *c, double v) {
  if (!c || !(v >= 0)) return; /* also drops NaN */
  atomic_add_double(&c->m.val, v);
}

void sk_counter_set(sk_counter_t *c, double v) {
  if (!c || isnan(v)) return;
  atomic_store_explicit(&c->m.val, d2u(v), memory_order_relaxed);
}

double sk_counter_value(const sk_counter_t *c) { return c ? atomic_get_double(&c->m.val) : 0; }

void sk_gauge_set(sk_gauge_t *g, double v) {
  if (g) atomic_store_explicit(&g->m.val, d2u(v), memory_order_relaxed);
}
void sk_gauge_add(sk_gauge_t *g, double v) {
  if (g) atomic_add_double(&g->m.val, v);
}
void sk_gauge_inc(sk_gauge_t *g) { sk_gauge_add(g, 1.0); }
void sk_gauge_dec(sk_gauge_t *g) { sk_gauge_add(g, -1.0); }
double sk_gauge_value(const sk_gauge_t *g) { return g ? atomic_get_double(&g->m.val) : 0; }

void sk_histogram_observe(sk_histogram_t *h, double v) {
  if (!h || isnan(v)) return;
  const struct sk_mfamily *f = h->m.fam;
  /* first bucket whose upper bound is >= v (le is inclusive) */
  size_t lo = 0, hi = f->nbounds;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (v <= f->bounds[mid])
      hi = mid;
    else
      lo = mid + 1;
  }
  atomic_fetch_add_explicit(&h->m.counts[lo], 1, memory_order_relaxed);
  atomic_add_double(&h->m.sum, v);
}

uint64_t sk_histogram_count(const sk_histogram_t *h) {
  if (!h) return 0;
  uint64_t n = 0;
  for (size_t i = 0; i <= h->m.fam->nbounds; i++)
    n += atomic_load_explicit(&h->m.counts[i], memory_order_relaxed);
  return n;
}

double sk_histogram_sum(const sk_histogram_t *h) { return h ? atomic_get_double(&h->m.sum) : 0; }

/* ---- exposition ---- */

void sk_metrics_format_value(sk_buf_t *out, double v) {
  if (isnan(v)) {
    sk_buf_puts(out, "NaN");
    return;
  }
  if (isinf(v)) {
    sk_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  if (v == 0) { /* also -0 */
    sk_buf_puts(out, "0");
    return;
  }
  if (fabs(v) < 9007199254740992.0 && v == trunc(v)) {
    sk_buf_printf(out, "%.0f", v);
    return;
  }
  char tmp[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, v);
    if (strtod(tmp, NULL) == v) break;
  }
  sk_buf_puts(out, tmp);
}

static void put_escaped(sk_buf_t *out, const char *s, int quote) {
  const char *run = s;
  for (const char *p = s; *p; p++) {
    const char *rep = NULL;
    if (*p == '\\')
      rep = "\\\\";
    else if (*p == '\n')
      rep = "\\n";
    else if (quote && *p == '"')
      rep = "\\\"";
    if (rep) {
      sk_buf_append(out, run, (size_t)(p - run));
      sk_buf_puts(out, rep);
      run = p + 1;
    }
  }
  sk_buf_puts(out, run);
}

/* name{l1="v1",...,extra="extra_val"} */
static void put_series(sk_buf_t *out, const struct sk_mfamily *f, const char *suffix,
                       const struct sk_mchild *c, const char *extra, const char *extra_val) {
  sk_buf_puts(out, f->name);
  if (suffix) sk_buf_puts(out, suffix);
  if (f->nlabels || extra) {
    sk_buf_append(out, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
      if (i) sk_buf_append(out, ",", 1);
      sk_buf_puts(out, f->labels[i]);
      sk_buf_puts(out, "=\"");
      put_escaped(out, c->values[i], 1);
      sk_buf_append(out, "\"", 1);
    }
    if (extra) {
      if (f->nlabels) sk_buf_append(out, ",", 1);
      sk_buf_puts(out, extra);
      sk_buf_puts(out, "=\"");
      sk_buf_puts(out, extra_val);
      sk_buf_append(out, "\"", 1);
    }
    sk_buf_append(out, "}", 1);
  }
  sk_buf_append(out, " ", 1);
}

static int cmp_family(const void *a, const void *b) {
  const struct sk_mfamily *x = *(struct sk_mfamily *const *)a;
  const struct sk_mfamily *y = *(struct sk_mfamily *const *)b;
  return strcmp(x->name, y->name);
}

static int cmp_child(const void *a, const void *b) {
  const struct sk_mchild *x = *(struct sk_mchild *const *)a;
  const struct sk_mchild *y = *(struct sk_mchild *const *)b;
  for (size_t i = 0; i < x->fam->nlabels; i++) {
    int r = strcmp(x->values[i], y->values[i]);
    if (r) return r;
  }
  return 0;
}

static const char *type_name(sk_metric_type_t t) {
  switch (t) {
  case SK_METRIC_COUNTER: return "counter";
  case SK_METRIC_GAUGE: return "gauge";
  case SK_METRIC_HISTOGRAM: return "histogram";
  }
  return "untyped";
}

/* The end of a render of f: children removed meanwhile can go now. */
static void render_done(struct sk_mfamily *f) {
  struct sk_mchild *dead = NULL;
  pthread_mutex_lock(&f->mu);
  if (--f->renders == 0) {
    dead = f->dead;
    f->dead = NULL;
  }
  pthread_mutex_unlock(&f->mu);
  for (struct sk_mchild *n; dead; dead = n) {
    n = dead->dead_next;
    free_child(dead, f->nlabels);
  }
}

static void render_family(sk_buf_t *out, struct sk_mfamily *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->nchildren;
  struct sk_mchild **kids = NULL;
  if (n) {
    kids = sk_xmalloc(n * sizeof *kids);
    memcpy(kids, f->children, n * sizeof *kids);
    f->renders++;
  }
  pthread_mutex_unlock(&f->mu);
  if (!n) return; /* a labelled family with no series yet is not shown */
  qsort(kids, n, sizeof *kids, cmp_child);

  sk_buf_printf(out, "# HELP %s ", f->name);
  put_escaped(out, f->help, 0);
  sk_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type));
  sk_buf_t le;
  sk_buf_init(&le);
  for (size_t i = 0; i < n; i++) {
    struct sk_mchild *c = kids[i];
    if (f->type != SK_METRIC_HISTOGRAM) {
      put_series(out, f, NULL, c, NULL, NULL);
      sk_metrics_format_value(out, atomic_get_double(&c->val));
      sk_buf_append(out, "\n", 1);
      continue;
    }
    uint64_t cum = 0;
    for (size_t b = 0; b <= f->nbounds; b++) {
      cum += atomic_load_explicit(&c->counts[b], memory_order_relaxed);
      sk_buf_reset(&le);
      sk_metrics_format_value(&le, b < f->nbounds ? f->bounds[b] : INFINITY);
      put_series(out, f, "_bucket", c, "le", sk_buf_cstr(&le));
      sk_buf_printf(out, "%llu\n", (unsigned long long)cum);
    }
    put_series(out, f, "_sum", c, NULL, NULL);
    sk_metrics_format_value(out, atomic_get_double(&c->sum));
    sk_buf_append(out, "\n", 1);
    put_series(out, f, "_count", c, NULL, NULL);
    sk_buf_printf(out, "%llu\n", (unsigned long long)cum);
  }
  sk_buf_done(&le);
  free(kids);
  render_done(f);
}

int sk_metrics_render(sk_metrics_t *m, sk_buf_t *out) {
  if (!m || !out) return SK_EINVAL;
  struct sk_hook hooks[SK_METRICS_MAX_HOOKS];
  pthread_mutex_lock(&m->mu);
  size_t nh = m->nhooks;
  memcpy(hooks, m->hooks, nh * sizeof hooks[0]);
  pthread_mutex_unlock(&m->mu);
  for (size_t i = 0; i < nh; i++) hooks[i].fn(m, hooks[i].ud);

  pthread_mutex_lock(&m->mu);
  size_t n = m->nfams;
  struct sk_mfamily **fams = NULL;
  if (n) {
    fams = sk_xmalloc(n * sizeof *fams);
    memcpy(fams, m->fams, n * sizeof *fams);
  }
  pthread_mutex_unlock(&m->mu);
  if (n) qsort(fams, n, sizeof *fams, cmp_family);
  for (size_t i = 0; i < n; i++) render_family(out, fams[i]);
  free(fams);
  return 0;
}

/* ---- process metrics (Linux /proc) ---- */

static long page_size(void) {
  long p = sysconf(_SC_PAGESIZE);
  return p > 0 ? p : 4096;
}

/* Fields of /proc/self/stat after the ")" that closes comm: field 3 on. */
static int read_self_stat(unsigned long long *utime, unsigned long long *stime,
                          unsigned long long *start, unsigned long long *vsize, long long *rss) {
  char buf[2048];
  FILE *fp = fopen("/proc/self/stat", "r");
  if (!fp) return SK_EIO;
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) return SK_EPARSE;
  p++;
  /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
   * utime stime cutime cstime priority nice threads itrealvalue starttime
   * vsize rss */
  int got = sscanf(p,
                   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                   "%*d %llu %llu %lld",
                   utime, stime, start, vsize, rss);
  return got == 5 ? 0 : SK_EPARSE;
}

static double boot_time(void) {
  FILE *fp = fopen("/proc/stat", "r");
  if (!fp) return 0;
  char line[512];
  double bt = 0;
  while (fgets(line, sizeof line, fp)) {
    unsigned long long v;
    if (sscanf(line, "btime %llu", &v) == 1) {
      bt = (double)v;
      break;
    }
  }
  fclose(fp);
  return bt;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n > 0 ? n - 1 : 0; /* minus the directory stream itself */
}

static void process_collect(sk_metrics_t *m, void *ud) {
  unsigned long long ut, st, start, vsz;
  long long rss;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0) hz = 100;
  if (read_self_stat(&ut, &st, &start, &vsz, &rss) == 0) {
    sk_counter_set(m->p_cpu, (double)(ut + st) / (double)hz);
    sk_gauge_set(m->p_vsz, (double)vsz);
    sk_gauge_set(m->p_rss, (double)rss * (double)page_size());
  }
  int fds = count_fds();
  if (fds >= 0) sk_gauge_set(m->p_fds, fds);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    sk_gauge_set(m->p_maxfds, rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
}

int sk_metrics_add_process(sk_metrics_t *m, const char *daemon) {
  if (!m) return SK_EINVAL;
  int rc;
  sk_mfamily_t *bi;
  static const char *const bi_labels[] = {"daemon", "version"};
  rc = sk_metrics_gauge_family(m, "skiff_build_info",
                               "Skiff build information; the value is always 1.", bi_labels, 2,
                               &bi);
  if (rc < 0) return rc;
  const char *vals[] = {daemon && *daemon ? daemon : "unknown", SKIFF_VERSION};
  sk_gauge_t *g;
  rc = sk_gauge_with(bi, vals, &g);
  if (rc < 0) return rc;
  sk_gauge_set(g, 1);

  pthread_mutex_lock(&m->mu);
  int added = m->process_added;
  m->process_added = 1;
  pthread_mutex_unlock(&m->mu);
  if (added) return 0;

  sk_gauge_t *start;
  if ((rc = sk_metrics_gauge(m, "process_start_time_seconds",
                             "Start time of the process since unix epoch in seconds.", &start)) < 0 ||
      (rc = sk_metrics_counter(m, "process_cpu_seconds_total",
                               "Total user and system CPU time spent in seconds.", &m->p_cpu)) < 0 ||
      (rc = sk_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.",
                             &m->p_rss)) < 0 ||
      (rc = sk_metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                             &m->p_vsz)) < 0 ||
      (rc = sk_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.",
                             &m->p_fds)) < 0 ||
      (rc = sk_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.",
                             &m->p_maxfds)) < 0)
    return rc;
  unsigned long long ut, st, startticks, vsz;
  long long rss;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0) hz = 100;
  double bt = boot_time();
  if (bt > 0 && read_self_stat(&ut, &st, &startticks, &vsz, &rss) == 0) {
    m->start_time = bt + (double)startticks / (double)hz;
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec;
  }
  sk_gauge_set(start, m->start_time);
  return sk_metrics_on_collect(m, process_collect, NULL);
}
