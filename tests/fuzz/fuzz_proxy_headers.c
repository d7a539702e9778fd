/* Fuzz target: skiff-proxy's header handling (hop-by-hop removal,
 * x-forwarded-*, x-forwarded-client-cert, x-request-id, traceparent, route
 * add/remove) on arbitrary "name: value" lines; the first line is the peer
 * address. The input's length picks the forward_client_cert mode and
 * whether the client has a SPIFFE ID. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "px_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384) return 0;
  sk_pool_t *pool = sk_pool_new();
  char *s = sk_pool_strndup(pool, (const char *)data, size);
  char *save = NULL;
  char *peer = strtok_r(s, "\n", &save);
  sk_http_headers_t h = {0};
  char *line;
  while ((line = strtok_r(NULL, "\n", &save)) != NULL && h.n < 200) {
    char *c = strchr(line, ':');
    if (!c) continue;
    *c = 0;
    sk_http_headers_add(&h, pool, line, c + 1 + (c[1] == ' '));
  }
  sk_http_req_t req = {.pool = pool, .method = "GET", .target = "/a?b", .path = "/a", .query = "b",
                       .authority = "example.test", .scheme = "http", .version = 11, .headers = h,
                       .peer_addr = peer, .peer_spiffe = (size / 4) % 2 ? "spiffe://skiff.test/ns/a/sa/b" : NULL};
  int xfcc = (int)(size % 4);
  px_hdr_ops_t ops;
  memset(&ops, 0, sizeof ops);
  ops.add[0] = (sk_http_header_t){"x-added", "1"};
  ops.nadd = 1;
  char rm[] = "x-remove";
  ops.remove[0] = rm;
  ops.nremove = 1;
  px_rng_t rng;
  px_rng_seed(&rng, size);
  sk_http_header_t *out = NULL;
  const char *rid = NULL;
  px_trace_t tr;
  memset(&tr, 0, sizeof tr);
  size_t n = px_upstream_headers(&req, &ops, xfcc, &rng, pool, &out, &rid, &tr);
  int nxfcc = 0;
  for (size_t i = 0; i < n; i++) {
    if (!out[i].name || !out[i].value || px_hdr_is_hop(out[i].name, NULL) || !strcasecmp(out[i].name, "x-remove"))
      abort();
    if (!strcasecmp(out[i].name, "x-forwarded-client-cert")) {
      nxfcc++;
      /* the client's own value never survives sanitizing */
      if (xfcc == PX_XFCC_SANITIZE) abort();
      if (xfcc == PX_XFCC_SANITIZE_SET && strcmp(out[i].value, "URI=spiffe://skiff.test/ns/a/sa/b")) abort();
    }
  }
  if (nxfcc > 1) abort();
  if (strlen(tr.trace_id) != 32 || strlen(tr.parent_id) != 16 || !rid) abort();
  n = px_downstream_headers(&h, &ops, pool, &out);
  for (size_t i = 0; i < n; i++)
    if (px_hdr_is_hop(out[i].name, NULL)) abort();
  sk_pool_free(pool);
  return 0;
}
