/* Fuzz target: HTTP/1.x request heads, whole and in two pieces (the
 * incremental path must agree with the one-shot parse), followed by the
 * chunked decoder when the head asks for it. */
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
  sk__h1_parser_init(&p, 4096, 32, fields);
  int whole = sk__h1_parse_request(&p, buf, size, &h);
  int wstatus = p.status;
  if (whole > 0) {
    if ((size_t)whole > size || h.head_len != (size_t)whole) abort();
    for (size_t i = 0; i < h.nfields; i++) {
      if (h.fields[i].name < buf || h.fields[i].value + h.fields[i].value_len > buf + whole) abort();
      if (h.fields[i].name_len == 0) abort();
    }
    if (h.version != 10 && h.version != 11) abort();
  } else if (whole < 0 && (whole != SK_EHTTP || !p.error)) {
    abort();
  }
  /* split in two at a point chosen by the input */
  size_t cut = size ? data[0] % (size + 1) : 0;
  sk__h1_parser_init(&p, 4096, 32, fields);
  int r = sk__h1_parse_request(&p, buf, cut, &h);
  if (r == 0) r = sk__h1_parse_request(&p, buf, size, &h);
  if (r != whole) abort();
  if (r < 0 && p.status != wstatus) abort();
  if (whole > 0 && h.body == SK__H1_BODY_CHUNKED) {
    sk__h1_chunked_t c;
    sk__h1_chunked_init(&c);
    size_t off = (size_t)whole, got = 0;
    while (off < size) {
      size_t used, dl;
      const uint8_t *d;
      int cr = sk__h1_chunked_decode(&c, data + off, size - off, &used, &d, &dl);
      if (cr < 0) break;
      if (d && (d < data + off || d + dl > data + size)) abort();
      got += dl;
      off += used;
      if (cr == 1 || used == 0) break;
    }
    if (got != c.total) abort();
  }
  return 0;
}
