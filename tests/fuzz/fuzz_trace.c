/* Fuzz target: the runtime's W3C Trace Context parsers (skiff/trace.h),
 * sk_traceparent_parse and sk_tracestate_parse, fed the same input. A
 * parsed traceparent must format back to itself (version 00, flags reduced
 * to the sampled bit); a parsed tracestate must be valid again and fit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192) return 0;
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = 0;
  sk_trace_ctx_t c;
  if (sk_traceparent_parse(s, &c) == 0) {
    if (!sk_trace_id_is_valid(c.trace_id) || (c.flags & ~SK_TRACE_FLAG_SAMPLED)) abort();
    char out[SK_TRACEPARENT_LEN + 1];
    sk_traceparent_format(&c, out);
    if (strncmp(out + 3, s + 3, 50)) abort(); /* ids as received */
    sk_trace_ctx_t again;
    if (sk_traceparent_parse(out, &again) != 0 || memcmp(&again, &c, sizeof c)) abort();
  }
  size_t caps[] = {SK_TRACESTATE_MAX + 1, 64, 1};
  for (int i = 0; i < 3; i++) {
    char *st = malloc(caps[i]);
    if (!st) break;
    int n = sk_tracestate_parse(s, st, caps[i]);
    if (n >= 0) {
      if ((size_t)n >= caps[i] || strlen(st) != (size_t)n) abort();
      char *st2 = malloc(caps[i]);
      if (st2 && (sk_tracestate_parse(st, st2, caps[i]) != n || strcmp(st, st2))) abort();
      free(st2);
    }
    free(st);
  }
  free(s);
  return 0;
}
