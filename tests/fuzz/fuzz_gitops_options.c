/* fuzz_gitops_options.c - what skiff-gitops reads from Git documents and
 * Application specs beyond the manifests themselves: the first line is a
 * sync-options annotation (comma-separated "Name=value"), also used as a
 * JSON pointer, a repository URL and a retry duration; the rest is a JSON
 * document used as the desired object, the live object (three-way merge
 * with its own field set) and as an ignoreDifferences rule list. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gitops.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void count_cb(const char *ptr, void *ud) { *(size_t *)ud += strlen(ptr); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 65536) return 0;
  const char *nl = memchr(data, '\n', size);
  size_t l1 = nl ? (size_t)(nl - (const char *)data) : size;
  char *line = malloc(l1 + 1);
  memcpy(line, data, l1);
  line[l1] = 0;
  gx_sync_opts_t o;
  gx_sync_opts_init(&o);
  char err[1024];
  (void)gx_sync_opts_parse_list(&o, line, err, sizeof err);
  char host[256];
  int port;
  (void)gx_git_url_endpoint(line, host, sizeof host, &port);
  json_t *doc = nl ? json_loadb(nl + 1, size - l1 - 1, 0, NULL) : NULL;
  if (doc) {
    (void)gx_json_pointer_get(doc, line);
    json_t *fs = gx_field_set(doc);
    json_t *m = gx_merge_apply(fs, doc, doc);
    json_t *m2 = gx_merge_apply(NULL, m, doc);
    json_t *c = json_deep_copy(doc);
    (void)gx_json_pointer_put(c, line, json_integer(1));
    (void)gx_json_pointer_put(c, line, NULL);
    size_t n = 0;
    gx_ignore_foreach(doc, "skiff.dev/v1", "Route", "default", "web", count_cb, &n);
    json_t *retry = json_pack("{s:I, s:{s:s, s:s, s:I}}", "limit", (json_int_t)-1, "backoff", "duration", line,
                              "maxDuration", line, "factor", (json_int_t)(size % 7));
    gx_retry_t r;
    if (retry && gx_retry_from_spec(retry, &r)) (void)gx_retry_delay_ms(&r, (int)(size % 40));
    json_decref(retry);
    json_decref(c);
    json_decref(m2);
    json_decref(m);
    json_decref(fs);
    json_decref(doc);
  }
  free(line);
  return 0;
}
