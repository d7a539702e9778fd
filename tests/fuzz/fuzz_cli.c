/* Fuzz target: skiff.yaml parsing (schema load, the position walk over
 * libyaml events, dependency ordering and cycle reporting). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "cli_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[2048];
  cli_config_t *c = NULL;
  if (size > 65536) return 0;
  if (cli_config_parse("fuzz.yaml", (const char *)data, size, &c, err, sizeof err) == 0) {
    size_t order[CLI_MAX_DAEMONS];
    char url[512];
    cli_order(c, order, err, sizeof err);
    for (size_t i = 0; i < c->n; i++) cli_daemon_ready_url(&c->d[i], url, sizeof url);
  }
  cli_config_free(c);
  return 0;
}
