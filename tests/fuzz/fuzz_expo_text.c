/* Fuzz: the Prometheus text exposition parser used by the scraper. */
#include <stddef.h>
#include <stdint.h>

#include "tl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sk_pool_t *pool = sk_pool_new();
  char err[256];
  tl_samples_t s = {0};
  tl_expo_opts_t o = {.max_samples = 10000, .max_line = 4096, .default_ts_ms = 1};
  tl_expo_parse(pool, (const char *)data, size, &o, &s, err, sizeof err);
  sk_pool_free(pool);
  return 0;
}
