/* Fuzz: Loki push JSON decoding and the trace-id finder on its lines. */
#include <stddef.h>
#include <stdint.h>

#include "tl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sk_pool_t *pool = sk_pool_new();
  char err[256];
  tl_logline_t *l = NULL;
  size_t n = 0;
  if (tl_loki_push_decode(pool, (const char *)data, size, &l, &n, err, sizeof err) == 0) {
    for (size_t i = 0; i < n; i++) (void)tl_find_trace_id(pool, l[i].body);
  }
  sk_pool_free(pool);
  return 0;
}
