/* fuzz_policy_wwwauth.c - the WWW-Authenticate challenge a registry sends
 * (Bearer realm/service/scope, Basic). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pol_www_auth_t wa;
  if (pol_www_auth_parse((const char *)data, size, &wa) == 0) {
    if (!wa.scheme[0]) abort();
    if (strlen(wa.realm) >= sizeof wa.realm || strlen(wa.scope) >= sizeof wa.scope) abort();
  }
  return 0;
}
