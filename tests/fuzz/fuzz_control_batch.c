/* fuzz_control_batch.c - the body of skiff-control's POST /api/v1/batch:
 * JSON parsing with bounds, the batch's shape, each item's op, kind,
 * resourceVersion and document (validation, conversion), without the store
 * (ctl_batch_check). A refusal must come with a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl_batch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 256 * 1024) return 0;
  char err[4096] = "";
  size_t n = 0;
  int rc = ctl_batch_check(data, size, 256 * 1024, &n, err, sizeof err);
  if (rc < 0 && !err[0]) {
    fprintf(stderr, "refused without a message\n");
    abort();
  }
  if (rc == 0 && (n == 0 || n > CTL_BATCH_MAX_ITEMS)) abort();
  return 0;
}
