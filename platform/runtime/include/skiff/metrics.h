/* skiff/metrics.h - a Prometheus metrics registry.
 *
 * A registry holds metric families. A family has a name, a help text, a type
 * (counter, gauge or histogram) and a fixed list of label names; each
 * distinct tuple of label values is a child, created on first use. Children
 * live as long as the registry unless removed (sk_mfamily_remove), so
 * callers look a child up once and keep the pointer: updates are lock-free
 * atomics and safe from any thread.
 *
 * Cardinality is bounded: a family holds at most max_children children
 * (SK_METRICS_DEFAULT_MAX_CHILDREN unless set); asking for one more returns
 * SK_ELIMIT and the caller keeps working without that series.
 *
 * Names are checked at registration against the Prometheus grammar
 * (metric: [a-zA-Z_:][a-zA-Z0-9_:]*, label: [a-zA-Z_][a-zA-Z0-9_]*, label
 * names starting with "__" are reserved, "le" is reserved on histograms).
 * Label values must be valid UTF-8 of at most SK_METRICS_MAX_VALUE_LEN bytes.
 *
 * sk_metrics_render() writes the Prometheus text exposition format 0.0.4:
 * families sorted by name, children sorted by label values, HELP and TYPE
 * lines, escaped label values, histograms as cumulative _bucket{le=...}
 * series ending in le="+Inf", then _sum and _count. */
#ifndef SKIFF_METRICS_H
#define SKIFF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "skiff/mem.h"

#define SK_METRICS_MAX_LABELS 8
#define SK_METRICS_MAX_BUCKETS 64
#define SK_METRICS_MAX_NAME_LEN 200
#define SK_METRICS_MAX_HELP_LEN 1024
#define SK_METRICS_MAX_VALUE_LEN 1024
#define SK_METRICS_DEFAULT_MAX_CHILDREN 1000
#define SK_METRICS_MAX_FAMILIES 4096

typedef struct sk_metrics sk_metrics_t;
typedef struct sk_mfamily sk_mfamily_t; /* a metric family */
typedef struct sk_counter sk_counter_t; /* one child of a counter family */
typedef struct sk_gauge sk_gauge_t;
typedef struct sk_histogram sk_histogram_t;

typedef enum sk_metric_type {
  SK_METRIC_COUNTER = 1,
  SK_METRIC_GAUGE = 2,
  SK_METRIC_HISTOGRAM = 3,
} sk_metric_type_t;

/* ---- registry ---- */

int sk_metrics_new(sk_metrics_t **out);
void sk_metrics_free(sk_metrics_t *m); /* accepts NULL; invalidates every child pointer */
/* The process-wide registry, created on first call and never freed. */
sk_metrics_t *sk_metrics_default(void);

/* Registers the built-in process families (idempotent):
 *   process_start_time_seconds, process_cpu_seconds_total,
 *   process_resident_memory_bytes, process_virtual_memory_bytes,
 *   process_open_fds, process_max_fds (read from /proc at render time)
 *   skiff_build_info{version,daemon} 1
 * daemon may be NULL ("unknown"). */
int sk_metrics_add_process(sk_metrics_t *m, const char *daemon);

/* A hook run at the start of every render, before any family is read, to
 * refresh gauges whose values live elsewhere (connection counts, queue
 * depths). At most 32 hooks per registry (SK_ELIMIT). */
typedef void (*sk_metrics_collect_fn)(sk_metrics_t *m, void *ud);
int sk_metrics_on_collect(sk_metrics_t *m, sk_metrics_collect_fn fn, void *ud);

/* Appends the whole registry in text format 0.0.4 to out. Safe to call
 * from any thread while others update. */
int sk_metrics_render(sk_metrics_t *m, sk_buf_t *out);
#define SK_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- families ----
 *
 * Registering a name twice with the same type and label names returns the
 * existing family (so independent modules can share one); a different type
 * or label list is SK_EEXIST. Bad names are SK_EINVAL; more than
 * SK_METRICS_MAX_FAMILIES families is SK_ELIMIT. labels may be NULL when
 * nlabels is 0. */
int sk_metrics_counter_family(sk_metrics_t *m, const char *name, const char *help,
                              const char *const *labels, size_t nlabels, sk_mfamily_t **out);
int sk_metrics_gauge_family(sk_metrics_t *m, const char *name, const char *help,
                            const char *const *labels, size_t nlabels, sk_mfamily_t **out);
/* buckets: strictly increasing finite upper bounds (the +Inf bucket is
 * implicit); NULL/0 selects SK_METRICS_DEFAULT_BUCKETS. */
int sk_metrics_histogram_family(sk_metrics_t *m, const char *name, const char *help,
                                const char *const *labels, size_t nlabels, const double *buckets,
                                size_t nbuckets, sk_mfamily_t **out);
/* Default latency buckets in seconds: .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 */
extern const double SK_METRICS_DEFAULT_BUCKETS[11];

/* Changes the child cap (>= 1). Existing children are kept. */
int sk_mfamily_set_max_children(sk_mfamily_t *f, size_t max);
size_t sk_mfamily_child_count(const sk_mfamily_t *f);
sk_metric_type_t sk_mfamily_type(const sk_mfamily_t *f);

/* Looks up or creates the child for these label values (exactly nlabels of
 * them). SK_EINVAL for a wrong family type or a bad value, SK_ELIMIT past
 * the child cap. The pointer stays valid for the registry's lifetime. */
int sk_counter_with(sk_mfamily_t *f, const char *const *values, sk_counter_t **out);
int sk_gauge_with(sk_mfamily_t *f, const char *const *values, sk_gauge_t **out);
int sk_histogram_with(sk_mfamily_t *f, const char *const *values, sk_histogram_t **out);
/* Removes the child with these label values (its series leaves the
 * exposition; asking for it again makes a fresh one at zero). The caller
 * makes sure nothing updates it any more: every pointer to it is dead once
 * this returns (a render running meanwhile is safe). SK_ENOTFOUND when
 * there is no such child, SK_EINVAL for an unlabelled family. */
int sk_mfamily_remove(sk_mfamily_t *f, const char *const *values);

/* Shortcuts for unlabelled metrics: family and its single child. */
int sk_metrics_counter(sk_metrics_t *m, const char *name, const char *help, sk_counter_t **out);
int sk_metrics_gauge(sk_metrics_t *m, const char *name, const char *help, sk_gauge_t **out);
int sk_metrics_histogram(sk_metrics_t *m, const char *name, const char *help,
                         const double *buckets, size_t nbuckets, sk_histogram_t **out);

/* ---- updates (thread-safe, accept NULL so a rejected child is harmless) ---- */

void sk_counter_inc(sk_counter_t *c);
/* v < 0 or NaN is ignored: counters only go up. */
void sk_counter_add(sk_counter_t *c, double v);
/* Mirrors a total kept elsewhere (e.g. CPU seconds from /proc). */
void sk_counter_set(sk_counter_t *c, double v);
double sk_counter_value(const sk_counter_t *c);

void sk_gauge_set(sk_gauge_t *g, double v);
void sk_gauge_add(sk_gauge_t *g, double v);
void sk_gauge_inc(sk_gauge_t *g);
void sk_gauge_dec(sk_gauge_t *g);
double sk_gauge_value(const sk_gauge_t *g);

void sk_histogram_observe(sk_histogram_t *h, double v); /* NaN is ignored */
uint64_t sk_histogram_count(const sk_histogram_t *h);
double sk_histogram_sum(const sk_histogram_t *h);

/* ---- validation helpers (also used by the telemetry daemon) ---- */
int sk_metrics_valid_name(const char *name);  /* 1 if valid metric name */
int sk_metrics_valid_label(const char *name); /* 1 if valid, non-reserved label name */
/* Appends v formatted as Prometheus does: shortest round-trip decimal,
 * "+Inf", "-Inf", "NaN". */
void sk_metrics_format_value(sk_buf_t *out, double v);

#endif
