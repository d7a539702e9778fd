/* Unit tests: the upstream client gate (px_share.c) that enforces a
 * cluster's circuit_breaker.max_connections and max_pending_requests on
 * every pool of the cluster: which hooks a cluster gets, slots taken and
 * refused, the demand flag that makes other pools let idle connections go,
 * and the reference the gate holds on the shared cluster state. The
 * end-to-end behaviour (ss counts, 503s) is tests/integration/proxy_breaker.sh. */
#include "sk_test.h"

#include <stdlib.h>
#include <string.h>

#include "px_int.h"
#include "skiff/err.h"

static px_proxy_t *proxy_new(void) {
  px_proxy_t *p = calloc(1, sizeof *p);
  p->access_fd = -1;
  uv_mutex_init(&p->mu);
  return p; /* no workers: px_proxy_want_trim wakes nobody */
}

/* px_cluster_t is large (its endpoints are inline): callers' are static */
static px_cluster_t *cluster(px_cluster_t *c, const char *name, int enabled, uint32_t conns, uint32_t pending) {
  memset(c, 0, sizeof *c);
  c->name = (char *)name;
  c->nendpoints = 1;
  c->endpoints[0] = (px_endpoint_t){"127.0.0.1", 9, "127.0.0.1:9"};
  px_breaker_config_default(&c->breaker);
  c->breaker.enabled = enabled;
  c->breaker.max[PX_BRK_CONNECTIONS] = conns;
  c->breaker.max[PX_BRK_PENDING] = pending;
  return c;
}

static void test_gate_limits(void **state) {
  px_proxy_t *p = proxy_new();
  static px_cluster_t cc;
  px_cluster_t *c = cluster(&cc, "capped", 1, 2, 1);
  px_scluster_t *s = px_share_cluster(p, c);
  sk_http_client_gate_t g;
  assert_int_equal(px_share_gate(s, c, &g), 1);
  assert_non_null(g.conn_open);
  assert_non_null(g.wait_start);
  assert_ptr_equal(g.ud, s);
  assert_int_equal(s->refs, 2); /* the gate's own reference */

  /* connections: 2 allowed, the third refused and demand raised */
  assert_int_equal(g.conn_open(g.ud), 0);
  assert_int_equal(g.conn_open(g.ud), 0);
  assert_int_equal(atomic_load(&s->conn_demand), 0);
  assert_int_equal(g.conn_open(g.ud), SK_ELIMIT);
  assert_int_equal(atomic_load(&s->conn_demand), 1);
  assert_int_equal(px_breaker_current(&s->breaker, PX_BRK_CONNECTIONS), 2);
  assert_int_equal(px_breaker_overflows(&s->breaker, PX_BRK_CONNECTIONS), 1);
  assert_true(px_breaker_is_open(&s->breaker, PX_BRK_CONNECTIONS));
  /* one closes: the waiting pool gets the slot and the demand is over */
  g.conn_closed(g.ud);
  assert_int_equal(g.conn_open(g.ud), 0);
  assert_int_equal(atomic_load(&s->conn_demand), 0);
  g.conn_closed(g.ud);
  g.conn_closed(g.ud);
  assert_int_equal(px_breaker_current(&s->breaker, PX_BRK_CONNECTIONS), 0);

  /* pending: 1 may wait, the next is refused until it leaves */
  assert_int_equal(g.wait_start(g.ud), 0);
  assert_int_equal(g.wait_start(g.ud), SK_ELIMIT);
  assert_int_equal(px_breaker_overflows(&s->breaker, PX_BRK_PENDING), 1);
  g.wait_end(g.ud);
  assert_int_equal(g.wait_start(g.ud), 0);
  g.wait_end(g.ud);
  assert_int_equal(px_breaker_current(&s->breaker, PX_BRK_PENDING), 0);

  /* the client's done hook gives the reference back */
  g.done(g.ud);
  assert_int_equal(s->refs, 1);
  px_share_cluster_unref(p, s);
  px_proxy_free(p);
}

static void test_gate_which_hooks(void **state) {
  px_proxy_t *p = proxy_new();
  sk_http_client_gate_t g;
  /* no circuit_breaker section: no limits, no gate */
  static px_cluster_t off_c;
  px_cluster_t *off = cluster(&off_c, "off", 0, 1024, 1024);
  px_scluster_t *s = px_share_cluster(p, off);
  assert_int_equal(px_share_gate(s, off, &g), 0);
  assert_null(g.conn_open);
  assert_int_equal(s->refs, 1);
  px_share_cluster_unref(p, s);
  /* both unlimited (0): no gate */
  static px_cluster_t unl_c;
  px_cluster_t *unl = cluster(&unl_c, "unlimited", 1, 0, 0);
  s = px_share_cluster(p, unl);
  assert_int_equal(px_share_gate(s, unl, &g), 0);
  px_share_cluster_unref(p, s);
  /* only pending limited: no connection hooks */
  static px_cluster_t pend_c;
  px_cluster_t *pend = cluster(&pend_c, "pending", 1, 0, 5);
  s = px_share_cluster(p, pend);
  assert_int_equal(px_share_gate(s, pend, &g), 1);
  assert_null(g.conn_open);
  assert_null(g.conn_closed);
  assert_non_null(g.wait_start);
  g.done(g.ud);
  px_share_cluster_unref(p, s);
  /* the defaults of a section: 1024 each, both hooks */
  static px_cluster_t def_c;
  px_cluster_t *def = cluster(&def_c, "defaults", 1, 1024, 1024);
  px_breaker_config_t d;
  px_breaker_config_default(&d);
  assert_int_equal(d.max[PX_BRK_CONNECTIONS], 1024);
  assert_int_equal(d.max[PX_BRK_PENDING], 1024);
  s = px_share_cluster(p, def);
  assert_int_equal(px_share_gate(s, def, &g), 1);
  assert_non_null(g.conn_open);
  assert_non_null(g.wait_start);
  g.done(g.ud);
  px_share_cluster_unref(p, s);
  px_proxy_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gate_limits),
      cmocka_unit_test(test_gate_which_hooks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
