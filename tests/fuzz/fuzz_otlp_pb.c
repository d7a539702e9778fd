/* Fuzz: OTLP protobuf decoding (traces, metrics, logs, chosen by the first
 * byte) through the nesting check, protobuf-c, and the mapping to spans'
 * JSON (the jansson tree and the span store's direct writer, which must
 * agree; and the span rows read straight from the wire, which must be
 * those of the decoded message), samples and log lines. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tl_int.h"

static int same_str(tl_str_t a, tl_str_t b) {
  return (!a.p && !b.p) || (a.p && b.p && a.len == b.len && !memcmp(a.p, b.p, (size_t)a.len));
}

static int same_json(const sk_buf_t *ja, size_t oa, int la, const sk_buf_t *jb, size_t ob, int lb) {
  if (la < 0 || lb < 0) return la == lb;
  json_t *x = json_loadb(ja->data + oa, (size_t)la, JSON_DECODE_ANY, NULL);
  json_t *y = json_loadb(jb->data + ob, (size_t)lb, JSON_DECODE_ANY, NULL);
  int r = x && y && json_equal(x, y);
  json_decref(x);
  json_decref(y);
  return r;
}

/* two KeyValueList protobufs (resource, span attributes) with the same content */
static int same_kvl(sk_pool_t *pool, const sk_buf_t *ja, size_t oa, int la, const sk_buf_t *jb, size_t ob,
                    int lb) {
  if (la < 0 || lb < 0) return la == lb;
  char err[128];
  const uint8_t *pa = la ? (const uint8_t *)ja->data + oa : (const uint8_t *)"";
  const uint8_t *pb = lb ? (const uint8_t *)jb->data + ob : (const uint8_t *)"";
  Otlp__KeyValueList *x = (Otlp__KeyValueList *)tl_pb_unpack(pool, &otlp__key_value_list__descriptor, pa,
                                                             (size_t)la, err, sizeof err);
  Otlp__KeyValueList *y = (Otlp__KeyValueList *)tl_pb_unpack(pool, &otlp__key_value_list__descriptor, pb,
                                                             (size_t)lb, err, sizeof err);
  if (!x || !y) return 0;
  json_t *u = tl_otlp_attrs_json(x->values, x->n_values), *v = tl_otlp_attrs_json(y->values, y->n_values);
  int r = json_equal(u, v);
  json_decref(u);
  json_decref(v);
  return r;
}

/* the span rows straight from the wire must be those of the decoded message */
static void check_rows(sk_pool_t *pool, const uint8_t *data, size_t size, const Otlp__ExportTraceServiceRequest *r) {
  sk_buf_t ja, jb;
  sk_buf_init(&ja);
  sk_buf_init(&jb);
  tl_span_rows_t a = {.json = &ja}, b = {.json = &jb};
  if (tl_span_rows_from_wire(pool, data, size, &a)) {
    if (!r) abort(); /* accepted what protobuf-c refuses */
    tl_span_rows_from_msg(pool, r, &b);
    if (a.n != b.n || a.rejected != b.rejected) abort();
    for (size_t i = 0; i < a.n; i++) {
      const tl_span_row_t *x = &a.v[i], *y = &b.v[i];
      if (strcmp(x->tid, y->tid) || strcmp(x->sid, y->sid) || strcmp(x->pid, y->pid) ||
          !same_str(x->service, y->service) || !same_str(x->name, y->name) || !same_str(x->scope, y->scope) ||
          !same_str(x->scope_version, y->scope_version) || !same_str(x->trace_state, y->trace_state) ||
          !same_str(x->status_msg, y->status_msg) || x->kind != y->kind || x->status != y->status ||
          x->start_ns != y->start_ns || x->end_ns != y->end_ns ||
          !same_kvl(pool, &ja, x->res_off, x->res_len, &jb, y->res_off, y->res_len) ||
          !same_kvl(pool, &ja, x->attrs_off, x->attrs_len, &jb, y->attrs_off, y->attrs_len) ||
          !same_json(&ja, x->events_off, x->events_len, &jb, y->events_off, y->events_len) ||
          !same_json(&ja, x->links_off, x->links_len, &jb, y->links_off, y->links_len))
        abort();
    }
  }
  sk_buf_done(&ja);
  sk_buf_done(&jb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  sk_pool_t *pool = sk_pool_new();
  char err[256];
  int which = data[0] % 3;
  data++, size--;
  if (which == 0) {
    Otlp__ExportTraceServiceRequest *r = (Otlp__ExportTraceServiceRequest *)tl_pb_unpack(
        pool, &otlp__export_trace_service_request__descriptor, data, size, err, sizeof err);
    if (r) {
      /* the span store's direct writer must give the tree's document */
      json_t *j = tl_pb_to_json(&r->base);
      sk_buf_t b;
      sk_buf_init(&b);
      tl_pb_json_write(&b, &r->base);
      json_t *w = json_loadb(b.data ? b.data : "", b.len, JSON_DECODE_ANY, NULL);
      if (!w || !json_equal(w, j)) abort();
      json_decref(w);
      json_decref(j);
      sk_buf_done(&b);
    }
    check_rows(pool, data, size, r);
  } else if (which == 1) {
    Otlp__ExportMetricsServiceRequest *r = (Otlp__ExportMetricsServiceRequest *)tl_pb_unpack(
        pool, &otlp__export_metrics_service_request__descriptor, data, size, err, sizeof err);
    if (r) {
      tl_samples_t s = {0};
      tl_otlp_metrics_map(pool, r, &s);
    }
  } else {
    Otlp__ExportLogsServiceRequest *r = (Otlp__ExportLogsServiceRequest *)tl_pb_unpack(
        pool, &otlp__export_logs_service_request__descriptor, data, size, err, sizeof err);
    if (r) {
      tl_logline_t *l = NULL;
      size_t n = 0, rej = 0;
      tl_otlp_logs_lines(pool, r, &l, &n, &rej);
    }
  }
  sk_pool_free(pool);
  return 0;
}
