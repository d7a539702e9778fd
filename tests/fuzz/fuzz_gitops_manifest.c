/* fuzz_gitops_manifest.c - skiff-gitops' manifest loader: a file from Git
 * (multi-document YAML) into resources with file:line, then the duplicate
 * check, the wave/kind sort, the include/exclude globs, the comparison of
 * each document with itself and with the next, and health. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gitops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  gx_resset_t s;
  gx_resset_init(&s);
  char err[512];
  if (gx_manifest_load(&s, "apps/x.yaml", (const char *)data, size, "default", err, sizeof err) == 0) {
    (void)gx_manifest_check_dups(&s, err, sizeof err);
    gx_manifest_sort(&s);
    for (size_t i = 0; i < s.n; i++) {
      char where[256];
      (void)gx_doc_in_sync(s.v[i].doc, s.v[i].doc, where, sizeof where);
      if (i + 1 < s.n) (void)gx_doc_in_sync(s.v[i].doc, s.v[i + 1].doc, where, sizeof where);
      (void)gx_health_rank(gx_health_of(s.v[i].doc));
      (void)gx_glob_match(s.v[i].name, s.v[i].src);
    }
  }
  gx_resset_done(&s);
  return 0;
}
