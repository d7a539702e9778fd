/* Fuzz: OTLP JSON decoding (traces, metrics, logs by the first byte) and the
 * mapping that follows. */
#include <stddef.h>
#include <stdint.h>

#include "tl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  sk_pool_t *pool = sk_pool_new();
  char err[256];
  int which = data[0] % 3;
  const char *s = (const char *)data + 1;
  size--;
  if (which == 0) {
    Otlp__ExportTraceServiceRequest *r = NULL;
    if (tl_otlp_json_traces(pool, s, size, &r, err, sizeof err) == 0) {
      size_t len;
      tl_pb_pack(pool, &r->base, &len);
      json_decref(tl_pb_to_json(&r->base));
    }
  } else if (which == 1) {
    Otlp__ExportMetricsServiceRequest *r = NULL;
    if (tl_otlp_json_metrics(pool, s, size, &r, err, sizeof err) == 0) {
      tl_samples_t sm = {0};
      tl_otlp_metrics_map(pool, r, &sm);
    }
  } else {
    Otlp__ExportLogsServiceRequest *r = NULL;
    if (tl_otlp_json_logs(pool, s, size, &r, err, sizeof err) == 0) {
      tl_logline_t *l = NULL;
      size_t n = 0, rej = 0;
      tl_otlp_logs_lines(pool, r, &l, &n, &rej);
    }
  }
  sk_pool_free(pool);
  return 0;
}
