/* skiff-proxy's health check runner in-process: real HTTP probes against an
 * in-process skiff-echo and a port nobody listens on, state flips both ways,
 * and freeing the runner with probes in flight. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "echo_int.h"
#include "px_resil.h"
#include "skiff/err.h"
#include "skiff/net.h"

typedef struct hc_fix {
  uv_loop_t loop;
  echo_config_t cfg;
  echo_app_t *app;
  uv_timer_t tick;
  int flips;
  int healthy[2];
  int want_ep, want_state;
  volatile int hit;
} hc_fix_t;

static void tick(uv_timer_t *t) { (void)t; }

static void on_change(void *ud, size_t i, int healthy) {
  hc_fix_t *f = ud;
  assert_true(i < 2);
  f->flips++;
  f->healthy[i] = healthy;
  if ((int)i == f->want_ep && healthy == f->want_state) f->hit = 1;
}

static int wait_state(hc_fix_t *f, int ep, int state) {
  f->want_ep = ep;
  f->want_state = state;
  f->hit = 0;
  return sk_test_run_until(&f->loop, &f->hit, 15000);
}

/* a port that refuses connections: bind one, note it, close it */
static int dead_port(void) {
  uv_loop_t l;
  uv_tcp_t s;
  struct sockaddr_in a;
  uv_loop_init(&l);
  uv_tcp_init(&l, &s);
  uv_ip4_addr("127.0.0.1", 0, &a);
  assert_int_equal(uv_tcp_bind(&s, (const struct sockaddr *)&a, 0), 0);
  struct sockaddr_storage ss;
  int len = sizeof ss;
  uv_tcp_getsockname(&s, (struct sockaddr *)&ss, &len);
  int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&s, NULL);
  uv_run(&l, UV_RUN_DEFAULT);
  uv_loop_close(&l);
  return port;
}

static void test_hc_runner_real_probes(void **state) {
  hc_fix_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  uv_timer_start(&f->tick, tick, 10, 10);
  assert_int_equal(sk_config_defaults(&echo_config_schema, &f->cfg, NULL), 0);
  f->cfg.listen.port = 0;
  assert_int_equal(echo_app_new(&f->loop, &f->cfg, NULL, NULL, &f->app), 0);
  int port = echo_app_port(f->app);
  f->healthy[0] = f->healthy[1] = 1;

  px_hc_config_t c;
  char err[256];
  json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:i, s:[s]}", "path", "/status/204", "interval", "30ms",
                        "timeout", "500ms", "healthy_threshold", 2, "unhealthy_threshold", 2,
                        "expected_statuses", "200-299");
  assert_non_null(j);
  assert_int_equal(px_hc_config_parse(j, "clusters[0].health_check", &c, err, sizeof err), 0);
  json_decref(j);
  px_hc_target_t tg[2] = {{"127.0.0.1", port, NULL, NULL}, {"127.0.0.1", dead_port(), NULL, NULL}};
  px_hc_runner_t *r;
  assert_int_equal(px_hc_runner_new(&f->loop, &c, tg, 2, 7, on_change, f, &r), 0);
  /* both start healthy; the refused one goes down after two failed probes */
  assert_int_equal(px_hc_runner_healthy(r, 0), 1);
  assert_int_equal(px_hc_runner_healthy(r, 1), 1);
  assert_int_equal(wait_state(f, 1, 0), 0);
  assert_int_equal(px_hc_runner_healthy(r, 1), 0);
  assert_int_equal(px_hc_runner_healthy(r, 0), 1);
  assert_int_equal(f->healthy[0], 1);
  const px_hc_t *st = px_hc_runner_state(r);
  assert_true(st->ep[0].probes >= 1);
  assert_true(st->ep[1].failures >= 2);

  /* the echo starts failing every request: endpoint 0 goes down ... */
  f->cfg.error_rate = 1;
  f->cfg.error_status = 503;
  echo_app_set_config(f->app, &f->cfg);
  assert_int_equal(wait_state(f, 0, 0), 0);
  assert_int_equal(px_hc_runner_healthy(r, 0), 0);
  /* ... and comes back once it answers 2xx again */
  f->cfg.error_rate = 0;
  echo_app_set_config(f->app, &f->cfg);
  assert_int_equal(wait_state(f, 0, 1), 0);
  assert_int_equal(px_hc_runner_healthy(r, 0), 1);
  assert_int_equal(px_hc_runner_healthy(r, 1), 0);
  assert_true(f->flips >= 3);

  /* free with probes possibly in flight; nothing may call back after */
  int flips = f->flips;
  px_hc_runner_free(r);
  px_hc_runner_free(NULL);
  int done = 0;
  uv_timer_start(&f->tick, tick, 10, 10);
  sk_test_run_until(&f->loop, &done, 200); /* let the closes run */
  assert_int_equal(f->flips, flips);
  uv_timer_stop(&f->tick);
  echo_app_free(f->app);
  uv_close((uv_handle_t *)&f->tick, NULL);
  sk_test_loop_drain(&f->loop);
  sk_config_free(&echo_config_schema, &f->cfg);
  free(f);
}

/* a disabled config never probes */
static void test_hc_runner_disabled(void **state) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  px_hc_config_t c;
  px_hc_config_default(&c);
  px_hc_target_t tg[1] = {{"127.0.0.1", dead_port(), NULL, NULL}};
  px_hc_runner_t *r;
  assert_int_equal(px_hc_runner_new(&loop, &c, tg, 1, 1, NULL, NULL, &r), 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(px_hc_runner_healthy(r, 0), 1);
  assert_true(px_hc_runner_state(r)->ep[0].probes == 0);
  px_hc_runner_free(r);
  sk_test_loop_drain(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hc_runner_real_probes),
      cmocka_unit_test(test_hc_runner_disabled),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
