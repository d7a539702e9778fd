/* Fuzz: OTLP protobuf decoding (traces, metrics, logs, chosen by the first
 * byte) through the nesting check, protobuf-c, and the mapping to spans'
 * JSON, samples and log lines. */
#include <stddef.h>
#include <stdint.h>

#include "tl_int.h"

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
      json_t *j = tl_pb_to_json(&r->base);
      json_decref(j);
    }
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
