/* Fuzz target: HTTP/1.x response heads (as the client reads them), with
 * and without a HEAD request, then the body framing they select. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h1_int.h"
#include "skiff/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  sk__h1_field_t fields[32];
  sk__h1_parser_t p;
  sk__h1_head_t h;
  const char *buf = (const char *)data;
  for (int head = 0; head < 2; head++) {
    sk__h1_parser_init(&p, 4096, 32, fields);
    int r = sk__h1_parse_response(&p, buf, size, head, &h);
    if (r < 0 && (p.status != 502 || !p.error)) abort();
    if (r <= 0) continue;
    if ((size_t)r > size || h.status < 100 || h.status > 999) abort();
    if (head && h.body != SK__H1_BODY_NONE) abort();
    if (h.body == SK__H1_BODY_CLOSE && h.keep_alive) abort();
    if (h.body == SK__H1_BODY_CHUNKED) {
      sk__h1_chunked_t c;
      sk__h1_chunked_init(&c);
      size_t off = (size_t)r;
      while (off < size) {
        size_t used, dl;
        const uint8_t *d;
        int cr = sk__h1_chunked_decode(&c, data + off, size - off, &used, &d, &dl);
        if (cr != 0 || used == 0) break;
        off += used;
      }
    }
  }
  return 0;
}
