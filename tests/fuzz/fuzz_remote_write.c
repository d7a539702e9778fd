/* Fuzz: Prometheus remote-write bodies - snappy block decoding, then the
 * WriteRequest protobuf and its mapping to samples. Inputs starting with
 * 'R' skip snappy (raw protobuf) so the fuzzer reaches the decoder too. */
#include <stddef.h>
#include <stdint.h>

#include "tl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sk_pool_t *pool = sk_pool_new();
  char err[256];
  uint8_t *raw = NULL;
  size_t len = 0;
  if (size && data[0] == 'R') {
    raw = (uint8_t *)data + 1;
    len = size - 1;
  } else if (tl_snappy_decode(pool, data, size, 1u << 22, &raw, &len) < 0) {
    goto out;
  }
  Prometheus__WriteRequest *w = (Prometheus__WriteRequest *)tl_pb_unpack(
      pool, &prometheus__write_request__descriptor, raw, len, err, sizeof err);
  if (w) {
    tl_samples_t s = {0};
    tl_remote_write_map(pool, w, &s);
  }
out:
  sk_pool_free(pool);
  return 0;
}
