/* Fuzz target: the PromQL parser, and evaluation of whatever parses over a
 * small store (instant and a short range query). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "tl_promql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tl_tsdb_t *db;

static void init_db(void) {
  char tmpl[] = "/tmp/fuzz_promql.XXXXXX";
  char *dir = mkdtemp(tmpl);
  if (!dir) abort();
  tl_tsdb_opts_t o = {.no_sync = 1};
  char err[256];
  if (tl_tsdb_open(dir, &o, &db, err, sizeof err) < 0) abort();
  const char *inst[3] = {"a", "b", "c"}, *le[3] = {"0.1", "1", "+Inf"};
  for (int t = 0; t <= 600; t += 15) {
    for (int i = 0; i < 3; i++) {
      tl_label_t l[3] = {{"__name__", "foo"}, {"instance", inst[i]}, {"job", i ? "api" : "db"}};
      tl_tsdb_append(db, l, 3, t * 1000LL, t * (i + 1.0));
      tl_label_t h[2] = {{"__name__", "lat_bucket"}, {"le", le[i]}};
      tl_tsdb_append(db, h, 2, t * 1000LL, t * (i + 1.0));
      tl_label_t g[2] = {{"__name__", "bar"}, {"instance", inst[i]}};
      tl_tsdb_append(db, g, 2, t * 1000LL, 10.0 * i - 5);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!db) init_db();
  tl_promql_expr_t *e;
  char err[512];
  if (tl_promql_parse((const char *)data, size, &e, err, sizeof err) < 0) {
    if (strncmp(err, "parse error at col ", 19)) abort(); /* every error names its column */
    return 0;
  }
  sk_pool_t *p = sk_pool_new();
  tl_promql_result_t r;
  tl_promql_opts_t o = {.max_samples = 100000, .deadline_ns = uv_hrtime() + 2000000000ULL};
  (void)tl_promql_eval_instant(db, p, e, 600000, &o, &r, err, sizeof err);
  tl_pq_type_t t = tl_promql_type(e);
  if (t == TL_PQ_SCALAR || t == TL_PQ_VECTOR) (void)tl_promql_eval_range(db, p, e, 0, 600000, 60000, &o, &r, err, sizeof err);
  sk_pool_free(p);
  tl_promql_free(e);
  return 0;
}
