/* Fuzz target: the RE2-to-POSIX regex translation (tl_regex.c) behind
 * PromQL matchers, label_replace and LogQL line filters. The first byte
 * picks the flags; the rest is the pattern. A pattern either compiles (and
 * then runs against a few subjects, itself included) or is refused with a
 * message naming it. */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "tl_tsdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 8192) return 0;
  int flags = data[0] & (TL_RE_ANCHOR | TL_RE_NOSUB);
  char *re = malloc(size);
  if (!re) abort();
  memcpy(re, data + 1, size - 1);
  re[size - 1] = 0; /* an embedded NUL ends the pattern, as in a C string */
  regex_t rx;
  int groups[10];
  char err[512] = "";
  int rc = tl_re_compile(&rx, re, flags, groups, 10, err, sizeof err);
  if (rc == 0) {
    static const char *subjects[] = {"", "a", "abc123", "a:9100", "Hello World\n", "[](){}.*+?|^$\\"};
    regmatch_t m[10];
    for (size_t i = 0; i < sizeof subjects / sizeof subjects[0]; i++)
      (void)regexec(&rx, subjects[i], (flags & TL_RE_NOSUB) ? 0 : 10, m, 0);
    (void)regexec(&rx, re, 0, NULL, 0);
    for (int g = 0; g < 10; g++)
      if (groups[g] < -1 || groups[g] > 10000) abort();
    regfree(&rx);
  } else if (rc != SK_EINVAL || !strstr(err, "invalid regular expression")) {
    abort();
  }
  free(re);
  return 0;
}
