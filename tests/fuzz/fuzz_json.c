/* fuzz_json.c - the runtime's fast JSON reader against jansson, input by
 * input: whatever the fast reader accepts, jansson must accept too and give
 * the same tree (same dump, key order and number types included); and
 * sk_json_parse (fast reader, then jansson) answers like jansson alone. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dump(const json_t *v) {
  return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}

static void differ(const char *what, const char *a, const char *b) {
  fprintf(stderr, "fuzz_json: %s\n  fast:    %s\n  jansson: %s\n", what, a ? a : "(none)", b ? b : "(none)");
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  json_error_t je;
  json_t *ref = json_loadb(s, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
  int depth = ref ? sk_json_depth(ref) : 0;
  /* both a generous bound and one the document may exceed */
  for (int pass = 0; pass < 2; pass++) {
    int max_depth = pass ? 3 : 600;
    json_t *fast = NULL;
    if (sk__json_parse_fast(s, size, max_depth, &fast) == 0) {
      char *a = dump(fast), *b = ref ? dump(ref) : NULL;
      if (!ref) differ("accepted what jansson refuses", a, je.text);
      if (depth > max_depth) differ("accepted a document past max_depth", a, b);
      if (!a || !b || strcmp(a, b)) differ("different trees", a, b);
      free(a);
      free(b);
      json_decref(fast);
    } else if (fast) {
      differ("failed but left a value", NULL, NULL);
    }
    json_t *v = NULL;
    char err[256];
    int rc = sk_json_parse(s, size, 0, max_depth, &v, err, sizeof err);
    if (rc == 0) {
      if (!ref || depth > max_depth) differ("sk_json_parse accepted what it should refuse", NULL, je.text);
      char *a = dump(v), *b = dump(ref);
      if (!a || !b || strcmp(a, b)) differ("sk_json_parse gave another tree", a, b);
      free(a);
      free(b);
      json_decref(v);
    } else if (ref && depth <= max_depth) {
      differ("sk_json_parse refused what jansson accepts", err, NULL);
    } else if (!err[0]) {
      differ("an error without a message", NULL, NULL);
    }
  }
  json_decref(ref);
  return 0;
}
