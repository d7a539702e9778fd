/* Fuzz target: the chunked decoder, fed in pieces whose sizes come from
 * the first byte; the decoded total must not depend on how bytes arrive,
 * and a re-encoding of the data must decode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h1_int.h"
#include "skiff/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run(const uint8_t *in, size_t n, size_t step, uint8_t *out, size_t *outlen) {
  sk__h1_chunked_t c;
  sk__h1_chunked_init(&c);
  size_t off = 0, have = 0;
  *outlen = 0;
  for (;;) {
    if (off == have) {
      if (have == n) return 0;
      have = have + step > n ? n : have + step;
    }
    size_t used, dl;
    const uint8_t *d;
    int r = sk__h1_chunked_decode(&c, in + off, have - off, &used, &d, &dl);
    if (r < 0) return r;
    if (used > have - off) abort();
    if (dl) memcpy(out + *outlen, d, dl);
    *outlen += dl;
    off += used;
    if (r == 1) return 1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t step = (size_t)(data[0] % 17) + 1;
  data++;
  size--;
  uint8_t *a = malloc(size + 1), *b = malloc(size + 1);
  size_t al, bl;
  int ra = run(data, size, size ? size : 1, a, &al);
  int rb = run(data, size, step, b, &bl);
  if (ra != rb) abort();
  if (ra >= 0 && (al != bl || memcmp(a, b, al) != 0)) abort();
  if (ra == 1) { /* re-encode and decode again */
    size_t cap = al + 64, n = 0;
    uint8_t *enc = malloc(cap);
    if (al) {
      n = sk__h1_chunk_head((char *)enc, al);
      memcpy(enc + n, a, al);
      n += al;
      memcpy(enc + n, "\r\n", 2);
      n += 2;
    }
    memcpy(enc + n, SK__H1_LAST_CHUNK, 5);
    n += 5;
    uint8_t *c2 = malloc(n);
    size_t cl;
    if (run(enc, n, step, c2, &cl) != 1 || cl != al || memcmp(c2, a, al) != 0) abort();
    free(c2);
    free(enc);
  }
  free(a);
  free(b);
  return 0;
}
