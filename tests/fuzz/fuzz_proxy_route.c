/* Fuzz target: skiff-proxy's route matcher against a fixed config, and the
 * config builder on arbitrary JSON. Input: "GET /path?q=1\nhost\nname: value\n..."
 * (a leading '{' or '[' instead feeds the config builder). A header line
 * "x-peer-spiffe: ID" stands for the client certificate's SPIFFE ID. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "px_int.h"

static px_config_t *cfg;

static const char *doc =
    "{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],"
    "\"routes\":["
    "{\"name\":\"se\",\"match\":{\"spiffe\":{\"exact\":\"spiffe://t.test/a\"}},\"cluster\":\"a\"},"
    "{\"name\":\"sp\",\"match\":{\"path\":\"/s/\",\"spiffe\":{\"prefix\":\"spiffe://t.test/ns/\"}},\"cluster\":\"a\"},"
    "{\"name\":\"h\",\"match\":{\"host\":\"*.example.test\"},\"cluster\":\"a\"},"
    "{\"name\":\"x\",\"match\":{\"path\":{\"exact\":\"/x\"},\"method\":[\"GET\",\"POST\"]},\"cluster\":\"a\"},"
    "{\"name\":\"r\",\"match\":{\"path\":{\"regex\":\"^/v[0-9]+/(a|b)*$\"}},\"cluster\":\"a\"},"
    "{\"name\":\"hd\",\"match\":{\"headers\":[{\"name\":\"x-a\",\"regex\":\"^b+$\"},{\"name\":\"x-c\",\"present\":false}]},\"cluster\":\"a\"},"
    "{\"name\":\"q\",\"match\":{\"query\":[{\"name\":\"k\",\"exact\":\"v\"},{\"name\":\"p\"}]},\"cluster\":\"a\"},"
    "{\"name\":\"p\",\"match\":{\"path\":{\"prefix\":\"/api/\"}},\"rewrite\":{\"prefix\":\"/\"},\"cluster\":\"a\"}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192) return 0;
  if (!cfg) {
    json_t *j = json_loads(doc, 0, NULL);
    if (px_config_build(j, NULL, "fuzz", 1, NULL, &cfg) < 0) abort();
    json_decref(j);
  }
  if (size && (data[0] == '{' || data[0] == '[')) {
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (j) {
      px_config_t *c = NULL;
      sk_config_errors_t errs;
      sk_config_errors_init(&errs);
      px_config_build(j, NULL, "fuzz", 1, &errs, &c);
      px_config_unref(c);
      sk_config_errors_done(&errs);
      json_decref(j);
    }
    return 0;
  }
  sk_pool_t *pool = sk_pool_new();
  char *s = sk_pool_strndup(pool, (const char *)data, size);
  char *save = NULL;
  char *line = strtok_r(s, "\n", &save);
  const char *method = "GET", *target = "/", *host = NULL;
  if (line) {
    char *sp = strchr(line, ' ');
    if (sp) {
      *sp = 0;
      method = line;
      target = sp + 1;
    } else {
      target = line;
    }
    host = strtok_r(NULL, "\n", &save);
  }
  sk_http_headers_t h = {0};
  const char *spiffe = NULL;
  while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
    char *c = strchr(line, ':');
    if (!c) continue;
    *c = 0;
    if (!strcmp(line, "x-peer-spiffe")) spiffe = c + 1 + (c[1] == ' ');
    else sk_http_headers_add(&h, pool, line, c + 1 + (c[1] == ' '));
  }
  char *path = sk_pool_strdup(pool, target);
  char *q = strchr(path, '?');
  if (q) *q++ = 0;
  px_match_req_t mr = {method, host, path, q, &h, spiffe};
  const px_route_t *rt = px_route_match(cfg, NULL, &mr);
  if (rt) {
    sk_http_req_t req = {.pool = pool, .method = method, .target = target, .path = path, .query = q};
    px_rewrite_target(rt, &req, pool);
  }
  char buf[64];
  px_query_get(q, "k", buf, sizeof buf);
  sk_pool_free(pool);
  return 0;
}
