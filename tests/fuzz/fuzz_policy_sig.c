/* fuzz_policy_sig.c - what skiff-policy reads from image registries: image
 * manifests / indexes and cosign signature manifests, the simple-signing
 * payload, and image references (the input up to its first newline). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "skiff/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  char err[512];
  json_t *m = NULL;
  if (pol_manifest_parse(s, size, &m, err, sizeof err) == 0) {
    /* every descriptor that survived has a well-formed digest */
    json_t *l = json_object_get(m, "layers");
    if (!l) l = json_object_get(m, "manifests");
    size_t i;
    json_t *d;
    json_array_foreach(l, i, d) if (!pol_is_digest(json_string_value(json_object_get(d, "digest")))) abort();
    json_decref(m);
  }
  pol_cosign_payload_check(s, size, NULL, err, sizeof err);
  pol_cosign_payload_check(s, size, "sha256:0000000000000000000000000000000000000000000000000000000000000000", err,
                           sizeof err);
  const char *nl = memchr(s, '\n', size);
  size_t n = nl ? (size_t)(nl - s) : size;
  if (n > 2048) n = 2048;
  char ref[2049];
  memcpy(ref, s, n);
  ref[n] = 0;
  pol_imgref_t r;
  if (pol_imgref_parse(ref, &r, err, sizeof err) == 0) {
    if (!r.registry[0] || !r.repo[0] || (!r.tag[0] && !r.digest[0])) abort();
    if (r.digest[0] && !pol_is_digest(r.digest)) abort();
  }
  return 0;
}
