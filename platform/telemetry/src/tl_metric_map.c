/* skiff-telemetry: OTLP metrics and remote-write series -> tsdb samples.
 *
 * OTLP mapping (as Prometheus's OTLP receiver does it, without unit
 * suffixes):
 *   - metric names and attribute keys are made Prometheus-valid (every
 *     invalid character becomes '_', a leading digit gets a '_' prefix);
 *   - resource service.name (prefixed "namespace/" by service.namespace)
 *     becomes job, service.instance.id becomes instance; point attributes
 *     become labels; other resource attributes are not kept on series;
 *   - gauge -> one sample per point; monotonic cumulative sum -> <name>_total
 *     (unless it already ends so); non-monotonic sum -> <name>;
 *   - histogram -> <name>_bucket{le} (cumulative counts, le="+Inf" = count),
 *     <name>_sum, <name>_count; summary -> <name>{quantile}, _sum, _count;
 *   - delta temporality and exponential histograms are rejected as partial
 *     success (the store keeps cumulative series only). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "skiff/err.h"
#include "tl_int.h"

#define NS_TO_MS(ns) ((int64_t)((ns) / 1000000u))

void tl_samples_add(sk_pool_t *pool, tl_samples_t *s, const tl_label_t *labels, size_t n, int64_t ts_ms,
                    double v) {
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 64;
    tl_sample_in_t *nv = sk_pool_alloc(pool, nc * sizeof *nv);
    if (s->n) memcpy(nv, s->v, s->n * sizeof *nv);
    s->v = nv;
    s->cap = nc;
  }
  tl_label_t *l = sk_pool_alloc(pool, (n ? n : 1) * sizeof *l);
  memcpy(l, labels, n * sizeof *l);
  s->v[s->n++] = (tl_sample_in_t){.labels = l, .nlabels = n, .ts_ms = ts_ms, .v = v};
}

static void reject(tl_samples_t *s, size_t n, const char *msg) {
  if (!s->rejected && msg) snprintf(s->first_error, sizeof s->first_error, "%s", msg);
  s->rejected += n;
}

const char *tl_prom_name(sk_pool_t *pool, const char *s, int is_label) {
  if (!s) s = "";
  size_t n = strlen(s);
  char *o = sk_pool_alloc(pool, n + 2);
  size_t j = 0;
  if (n == 0 || (s[0] >= '0' && s[0] <= '9')) o[j++] = '_';
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
             (!is_label && c == ':');
    o[j++] = ok ? c : '_';
  }
  o[j] = 0;
  return o;
}

typedef struct lblset {
  tl_label_t v[TL_TSDB_MAX_LABELS];
  size_t n;
} lblset_t;

static void lbl_put(lblset_t *l, const char *name, const char *value) {
  for (size_t i = 0; i < l->n; i++)
    if (!strcmp(l->v[i].name, name)) {
      l->v[i].value = value;
      return;
    }
  if (l->n < TL_TSDB_MAX_LABELS) l->v[l->n++] = (tl_label_t){name, value};
}

/* Base labels for one point: resource job/instance + point attributes. */
static void point_labels(sk_pool_t *pool, lblset_t *l, const lblset_t *res, Otlp__KeyValue **attrs, size_t na,
                         const char *name) {
  l->n = 0;
  lbl_put(l, "__name__", name);
  for (size_t i = 0; i < na; i++) {
    if (!attrs[i] || !attrs[i]->key) continue;
    const char *k = tl_prom_name(pool, attrs[i]->key, 1);
    if (!strncmp(k, "__", 2)) k = sk_pool_printf(pool, "key%s", k);
    lbl_put(l, k, tl_otlp_anyvalue_str(pool, attrs[i]->value));
  }
  for (size_t i = 0; i < res->n; i++) lbl_put(l, res->v[i].name, res->v[i].value);
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

static double number_value(const Otlp__NumberDataPoint *p) {
  if (p->value_case == OTLP__NUMBER_DATA_POINT__VALUE_AS_INT) return (double)p->as_int;
  return p->as_double;
}

static void map_metric(sk_pool_t *pool, const lblset_t *res, const Otlp__Metric *m, tl_samples_t *out) {
  lblset_t l;
  const char *name = tl_prom_name(pool, m->name, 0);
  switch (m->data_case) {
  case OTLP__METRIC__DATA_GAUGE:
  case OTLP__METRIC__DATA_SUM: {
    Otlp__NumberDataPoint **pts = m->data_case == OTLP__METRIC__DATA_GAUGE ? m->gauge->data_points
                                                                           : m->sum->data_points;
    size_t np = m->data_case == OTLP__METRIC__DATA_GAUGE ? m->gauge->n_data_points : m->sum->n_data_points;
    if (m->data_case == OTLP__METRIC__DATA_SUM) {
      if (m->sum->aggregation_temporality == 1) {
        reject(out, np, "delta temporality is not supported (send cumulative sums)");
        return;
      }
      if (m->sum->is_monotonic && !ends_with(name, "_total")) name = sk_pool_printf(pool, "%s_total", name);
    }
    for (size_t i = 0; i < np; i++) {
      const Otlp__NumberDataPoint *p = pts[i];
      if (!p || (p->flags & 1)) continue; /* no recorded value */
      if (p->value_case == OTLP__NUMBER_DATA_POINT__VALUE__NOT_SET) {
        reject(out, 1, "data point without a value");
        continue;
      }
      point_labels(pool, &l, res, p->attributes, p->n_attributes, name);
      tl_samples_add(pool, out, l.v, l.n, NS_TO_MS(p->time_unix_nano), number_value(p));
    }
    return;
  }
  case OTLP__METRIC__DATA_HISTOGRAM: {
    const Otlp__Histogram *h = m->histogram;
    if (h->aggregation_temporality == 1) {
      reject(out, h->n_data_points, "delta temporality is not supported (send cumulative histograms)");
      return;
    }
    const char *bname = sk_pool_printf(pool, "%s_bucket", name);
    const char *sname = sk_pool_printf(pool, "%s_sum", name);
    const char *cname = sk_pool_printf(pool, "%s_count", name);
    for (size_t i = 0; i < h->n_data_points; i++) {
      const Otlp__HistogramDataPoint *p = h->data_points[i];
      if (!p || (p->flags & 1)) continue;
      if (p->n_bucket_counts && p->n_bucket_counts != p->n_explicit_bounds + 1) {
        reject(out, 1, "histogram bucket_counts must have one more entry than explicit_bounds");
        continue;
      }
      int64_t ts = NS_TO_MS(p->time_unix_nano);
      double cum = 0;
      for (size_t b = 0; b < p->n_explicit_bounds && p->n_bucket_counts; b++) {
        cum += (double)p->bucket_counts[b];
        point_labels(pool, &l, res, p->attributes, p->n_attributes, bname);
        sk_buf_t vb;
        sk_buf_init(&vb);
        sk_metrics_format_value(&vb, p->explicit_bounds[b]);
        lbl_put(&l, "le", sk_pool_strndup(pool, vb.data ? vb.data : "", vb.len));
        sk_buf_done(&vb);
        tl_samples_add(pool, out, l.v, l.n, ts, cum);
      }
      point_labels(pool, &l, res, p->attributes, p->n_attributes, bname);
      lbl_put(&l, "le", "+Inf");
      tl_samples_add(pool, out, l.v, l.n, ts, (double)p->count);
      if (p->has_sum) {
        point_labels(pool, &l, res, p->attributes, p->n_attributes, sname);
        tl_samples_add(pool, out, l.v, l.n, ts, p->sum);
      }
      point_labels(pool, &l, res, p->attributes, p->n_attributes, cname);
      tl_samples_add(pool, out, l.v, l.n, ts, (double)p->count);
    }
    return;
  }
  case OTLP__METRIC__DATA_SUMMARY: {
    const Otlp__Summary *s = m->summary;
    const char *sname = sk_pool_printf(pool, "%s_sum", name);
    const char *cname = sk_pool_printf(pool, "%s_count", name);
    for (size_t i = 0; i < s->n_data_points; i++) {
      const Otlp__SummaryDataPoint *p = s->data_points[i];
      if (!p || (p->flags & 1)) continue;
      int64_t ts = NS_TO_MS(p->time_unix_nano);
      for (size_t q = 0; q < p->n_quantile_values; q++) {
        if (!p->quantile_values[q]) continue;
        point_labels(pool, &l, res, p->attributes, p->n_attributes, name);
        sk_buf_t vb;
        sk_buf_init(&vb);
        sk_metrics_format_value(&vb, p->quantile_values[q]->quantile);
        lbl_put(&l, "quantile", sk_pool_strndup(pool, vb.data ? vb.data : "", vb.len));
        sk_buf_done(&vb);
        tl_samples_add(pool, out, l.v, l.n, ts, p->quantile_values[q]->value);
      }
      point_labels(pool, &l, res, p->attributes, p->n_attributes, sname);
      tl_samples_add(pool, out, l.v, l.n, ts, p->sum);
      point_labels(pool, &l, res, p->attributes, p->n_attributes, cname);
      tl_samples_add(pool, out, l.v, l.n, ts, (double)p->count);
    }
    return;
  }
  case OTLP__METRIC__DATA_EXPONENTIAL_HISTOGRAM:
    reject(out, m->exponential_histogram->n_data_points, "exponential histograms are not supported");
    return;
  default:
    reject(out, 1, "metric without data");
    return;
  }
}

void tl_otlp_metrics_map(sk_pool_t *pool, const Otlp__ExportMetricsServiceRequest *r, tl_samples_t *out) {
  for (size_t i = 0; i < r->n_resource_metrics; i++) {
    const Otlp__ResourceMetrics *rm = r->resource_metrics[i];
    if (!rm) continue;
    lblset_t res = {.n = 0};
    if (rm->resource) {
      Otlp__KeyValue **a = rm->resource->attributes;
      size_t na = rm->resource->n_attributes;
      const char *svc = tl_otlp_attr_str(a, na, "service.name");
      const char *ns = tl_otlp_attr_str(a, na, "service.namespace");
      const char *inst = tl_otlp_attr_str(a, na, "service.instance.id");
      if (svc && ns && *ns) svc = sk_pool_printf(pool, "%s/%s", ns, svc);
      if (svc) lbl_put(&res, "job", svc);
      if (inst) lbl_put(&res, "instance", inst);
    }
    for (size_t s = 0; s < rm->n_scope_metrics; s++) {
      const Otlp__ScopeMetrics *sm = rm->scope_metrics[s];
      if (!sm) continue;
      for (size_t k = 0; k < sm->n_metrics; k++)
        if (sm->metrics[k]) map_metric(pool, &res, sm->metrics[k], out);
    }
  }
}

void tl_remote_write_map(sk_pool_t *pool, const Prometheus__WriteRequest *w, tl_samples_t *out) {
  for (size_t i = 0; i < w->n_timeseries; i++) {
    const Prometheus__TimeSeries *ts = w->timeseries[i];
    if (!ts) continue;
    if (ts->n_labels > TL_TSDB_MAX_LABELS) {
      reject(out, ts->n_samples, "too many labels in a series");
      continue;
    }
    tl_label_t l[TL_TSDB_MAX_LABELS];
    size_t n = 0;
    for (size_t k = 0; k < ts->n_labels; k++) {
      if (!ts->labels[k]) continue;
      l[n++] = (tl_label_t){ts->labels[k]->name ? ts->labels[k]->name : "",
                            ts->labels[k]->value ? ts->labels[k]->value : ""};
    }
    for (size_t k = 0; k < ts->n_samples; k++) {
      if (!ts->samples[k]) continue;
      tl_samples_add(pool, out, l, n, ts->samples[k]->timestamp, ts->samples[k]->value);
    }
  }
}
