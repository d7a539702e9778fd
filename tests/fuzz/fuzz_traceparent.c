/* Fuzz target: W3C traceparent values (sk__http_traceparent_trace_id) and
 * ALPN lists (sk__tls_alpn_wire), both read from the outside. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_int.h"
#include "net_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = 0;
  char id[33];
  memset(id, 'X', sizeof id);
  if (sk__http_traceparent_trace_id(s, id) == 0) {
    /* a success is 32 lower-case hex digits, not all zero, taken from s */
    if (strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32) abort();
    if (strspn(id, "0") == 32 || strncmp(id, s + 3, 32) != 0) abort();
  }
  unsigned char wire[SK__ALPN_WIRE_MAX];
  int n = sk__tls_alpn_wire(s, wire, sizeof wire);
  if (n > (int)sizeof wire) abort();
  for (int i = 0; n > 0 && i < n; i += 1 + wire[i])
    if (wire[i] == 0 || i + 1 + wire[i] > n) abort();
  free(s);
  return 0;
}
