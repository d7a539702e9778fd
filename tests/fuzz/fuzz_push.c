/* Fuzz target: what the two ends of config push decode from the other.
 * Input starting with 'A': the rest is an ACK/NACK body as skiff-control
 * parses it (ctl_push_parse_ack). Anything else: a stretch of the snapshot
 * stream as skiff-proxy reads it, split into lines, each decoded
 * (px_push_decode) and a snapshot's config built next to a listener as the
 * proxy does before swapping it in (px_config_build). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ctl_push.h"
#include "px_int.h"
#include "px_push.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 65536) return 0;
  char msg[300];
  if (size && data[0] == 'A') {
    sk_pool_t *pool = sk_pool_new();
    int64_t v;
    const char *err;
    if (ctl_push_parse_ack((const char *)data + 1, size - 1, pool, &v, &err, msg, sizeof msg) == 0) {
      if (v < 0) __builtin_trap();
      if (err && strlen(err) > CTL_PUSH_MAX_ERROR) __builtin_trap();
    }
    sk_pool_free(pool);
    return 0;
  }
  const char *p = (const char *)data, *end = p + size;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
    px_push_msg_t m;
    if (px_push_decode(p, n, &m, msg, sizeof msg) == 0 && m.type == PX_PUSH_SNAPSHOT) {
      json_t *doc = json_deep_copy(m.config);
      json_object_set_new(doc, "listeners", json_pack("[{s:s, s:s}]", "name", "in", "address", "127.0.0.1:1"));
      sk_config_errors_t errs;
      sk_config_errors_init(&errs);
      px_config_t *c = NULL;
      px_config_build(doc, NULL, "fuzz", 1, &errs, &c);
      px_config_unref(c);
      sk_config_errors_done(&errs);
      json_decref(doc);
    }
    json_decref(m.config);
    p += n + 1;
  }
  return 0;
}
