/* Fuzz target: the store URL redaction of skiff-control's PostgreSQL
 * backend (ctl_backend_pg_redact), which turns a configured postgres://
 * URL into what messages may show. Checks that the output stays bounded
 * and that a password given as user:password@ is always replaced. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_backend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192) return 0;
  char *in = malloc(size + 1);
  if (!in) return 0;
  memcpy(in, data, size);
  in[size] = 0;
  static const size_t lens[] = {1, 7, 64, 512, 20000};
  char *out = malloc(20000);
  if (!out) {
    free(in);
    return 0;
  }
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    memset(out, 'x', lens[i]);
    ctl_backend_pg_redact(in, out, lens[i]);
    if (!memchr(out, 0, lens[i])) abort();
  }
  /* scheme://user:SECRET@host...: SECRET must be gone from the full output */
  const char *p = strstr(in, "://");
  if (p) {
    const char *auth = p + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (size_t k = 0; k < alen; k++)
      if (auth[k] == '@') at = auth + k;
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    /* the output (the 20000-byte call above) keeps the text up to the
     * colon and puts *** where the password was */
    if (colon && strncmp(out + (colon - in), ":***@", 5) != 0) abort();
  }
  free(out);
  free(in);
  return 0;
}
