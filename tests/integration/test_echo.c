/* skiff-echo in-process: its routes over HTTP/1.1 and h2c driven by curl,
 * injected errors and latency, metrics. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "echo_int.h"
#include "skiff/metrics.h"
#include "skiff/mem.h"

typedef struct fixture {
  uv_loop_t loop;
  echo_config_t cfg;
  sk_metrics_t *reg;
  echo_app_t *app;
  uv_timer_t tick;
  int port;
} fixture_t;

static void tick(uv_timer_t *t) { (void)t; }

static fixture_t *start(void (*tweak)(echo_config_t *)) {
  fixture_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  assert_int_equal(sk_config_defaults(&echo_config_schema, &f->cfg, NULL), 0);
  f->cfg.listen.port = 0;
  if (tweak) tweak(&f->cfg);
  assert_int_equal(sk_metrics_new(&f->reg), 0);
  assert_int_equal(echo_app_new(&f->loop, &f->cfg, f->reg, NULL, &f->app), 0);
  f->port = echo_app_port(f->app);
  assert_true(f->port > 0);
  return f;
}

static void drained(void *ud) { *(int *)ud = 1; }

static void stop(fixture_t *f) {
  /* a graceful drain first, so no connection is mid-close when the loop's
   * remaining handles are closed */
  int done = 0;
  echo_app_drain(f->app, drained, &done);
  uv_timer_start(&f->tick, tick, 20, 20);
  sk_test_run_until(&f->loop, &done, 10000);
  uv_timer_stop(&f->tick);
  echo_app_free(f->app);
  uv_close((uv_handle_t *)&f->tick, NULL);
  sk_test_loop_drain(&f->loop);
  sk_metrics_free(f->reg);
  sk_config_free(&echo_config_schema, &f->cfg);
  free(f);
}

/* Waits for a job (curl on a thread) while the loop serves. A short
 * repeating timer wakes the loop so the job's end is noticed promptly. */
static int run(fixture_t *f, sk_test_job_t *job) {
  uv_timer_start(&f->tick, tick, 20, 20);
  int rc = sk_test_run_until(&f->loop, &job->done, 60000);
  uv_timer_stop(&f->tick);
  if (rc < 0) sk_test_run_until(&f->loop, &job->done, 30000); /* let curl's -m end it */
  sk_test_job_join(job);
  assert_int_equal(rc, 0);
  return job->status;
}

static void test_root_h1_h2(void **state) {
  fixture_t *f = start(NULL);
  sk_test_job_t *job = calloc(1, sizeof *job);
  sk_test_job_start(job, "curl -m 20 -sS -i -H 'X-Custom: abc' http://127.0.0.1:%d/?q=1", f->port);
  assert_int_equal(run(f, job), 0);
  assert_non_null(strstr(job->out, "HTTP/1.1 200"));
  assert_non_null(strstr(job->out, "x-skiff-version: v1"));
  assert_non_null(strstr(job->out, "\"protocol\": \"HTTP/1.1\""));
  assert_non_null(strstr(job->out, "\"name\": \"skiff-echo\""));
  assert_non_null(strstr(job->out, "\"version\": \"v1\""));
  assert_non_null(strstr(job->out, "\"method\": \"GET\""));
  assert_non_null(strstr(job->out, "\"path\": \"/\""));
  assert_non_null(strstr(job->out, "\"x-custom\": \"abc\""));
  assert_non_null(strstr(job->out, "\"peer\": \"127.0.0.1:"));
  assert_non_null(strstr(job->out, "\"hostname\": "));

  memset(job, 0, sizeof *job);
  sk_test_job_start(job, "curl -m 20 -sS -i --http2-prior-knowledge http://127.0.0.1:%d/", f->port);
  assert_int_equal(run(f, job), 0);
  assert_non_null(strstr(job->out, "HTTP/2 200"));
  assert_non_null(strstr(job->out, "x-skiff-version: v1"));
  assert_non_null(strstr(job->out, "\"protocol\": \"HTTP/2\""));
  free(job);
  stop(f);
}

static void test_echo_roundtrip(void **state) {
  fixture_t *f = start(NULL);
  char path[600];
  snprintf(path, sizeof path, "%s/body.bin", sk_test_tmpdir());
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  for (int i = 0; i < 20000; i++) fputc((i * 7) & 0xff, fp); /* binary, with NULs */
  fclose(fp);
  sk_test_job_t *job = calloc(1, sizeof *job);
  /* compare the echoed bytes with cmp; print the content type curl saw */
  sk_test_job_start(job,
                    "curl -m 20 -sS -o %s.out -w '%%{content_type} %%{http_code}' -H 'Content-Type: application/x-test' "
                    "--data-binary @%s http://127.0.0.1:%d/echo && cmp %s %s.out && echo SAME",
                    path, path, f->port, path, path);
  assert_int_equal(run(f, job), 0);
  assert_non_null(strstr(job->out, "application/x-test 200"));
  assert_non_null(strstr(job->out, "SAME"));

  memset(job, 0, sizeof *job);
  sk_test_job_start(job,
                    "curl -m 20 -sS --http2-prior-knowledge -H 'content-type: text/plain' -d 'hello h2' "
                    "http://127.0.0.1:%d/echo",
                    f->port);
  assert_int_equal(run(f, job), 0);
  assert_string_equal(job->out, "hello h2");
  free(job);
  stop(f);
}

static void test_routes(void **state) {
  fixture_t *f = start(NULL);
  sk_test_job_t *job = calloc(1, sizeof *job);
  sk_test_job_start(job,
                    "for p in /status/418 /status/204 /status/abc /status/99 /nope /delay/zz; do "
                    "curl -m 20 -sS -o /dev/null -w \"$p %%{http_code}\\n\" http://127.0.0.1:%d$p; done; "
                    "curl -m 20 -sS -X POST -o /dev/null -w 'POST/ %%{http_code}\\n' http://127.0.0.1:%d/; "
                    "curl -m 20 -sS -H 'X-Trace-Me: yes' http://127.0.0.1:%d/headers",
                    f->port, f->port, f->port);
  assert_int_equal(run(f, job), 0);
  assert_non_null(strstr(job->out, "/status/418 418\n"));
  assert_non_null(strstr(job->out, "/status/204 204\n"));
  assert_non_null(strstr(job->out, "/status/abc 400\n"));
  assert_non_null(strstr(job->out, "/status/99 400\n"));
  assert_non_null(strstr(job->out, "/nope 404\n"));
  assert_non_null(strstr(job->out, "/delay/zz 400\n"));
  assert_non_null(strstr(job->out, "POST/ 405\n"));
  assert_non_null(strstr(job->out, "\"x-trace-me\": \"yes\""));
  free(job);
  stop(f);
}

static void always_fail(echo_config_t *c) {
  c->error_rate = 1.0;
  c->error_status = 502;
}

static void test_injected_errors(void **state) {
  fixture_t *f = start(always_fail);
  sk_test_job_t *job = calloc(1, sizeof *job);
  sk_test_job_start(job,
                    "for i in 1 2 3; do curl -m 20 -sS -i http://127.0.0.1:%d/; done; "
                    "curl -m 20 -sS -o /dev/null -w 'h2 %%{http_code}\\n' --http2-prior-knowledge http://127.0.0.1:%d/echo",
                    f->port, f->port);
  assert_int_equal(run(f, job), 0);
  assert_non_null(strstr(job->out, "HTTP/1.1 502"));
  assert_non_null(strstr(job->out, "x-skiff-echo: injected-error"));
  assert_null(strstr(job->out, "HTTP/1.1 200"));
  assert_non_null(strstr(job->out, "h2 502"));

  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_metrics_render(f->reg, &b), 0);
  const char *text = sk_buf_cstr(&b);
  assert_non_null(strstr(text, "skiff_echo_requests_total{code=\"502\"} 4"));
  assert_non_null(strstr(text, "skiff_echo_injected_errors_total 4"));
  assert_non_null(strstr(text, "skiff_echo_request_duration_seconds_count 4"));
  sk_buf_done(&b);

  /* back to healthy through the query override */
  memset(job, 0, sizeof *job);
  sk_test_job_start(job, "curl -m 20 -sS -o /dev/null -w '%%{http_code}' 'http://127.0.0.1:%d/?error_rate=0'", f->port);
  assert_int_equal(run(f, job), 0);
  assert_string_equal(job->out, "200");
  free(job);
  stop(f);
}

static void test_query_error_rate(void **state) {
  fixture_t *f = start(NULL);
  sk_test_job_t *job = calloc(1, sizeof *job);
  sk_test_job_start(job,
                    "curl -m 20 -sS -o /dev/null -w '%%{http_code} ' 'http://127.0.0.1:%d/?error_rate=1'; "
                    "curl -m 20 -sS -o /dev/null -w '%%{http_code} ' 'http://127.0.0.1:%d/?error_rate=2'; "
                    "curl -m 20 -sS -o /dev/null -w '%%{http_code}' 'http://127.0.0.1:%d/?latency=2h'",
                    f->port, f->port, f->port);
  assert_int_equal(run(f, job), 0);
  assert_string_equal(job->out, "503 400 400");
  free(job);
  stop(f);
}

static void with_latency(echo_config_t *c) { c->latency_ms = 300; }

/* Latency is served from a timer: a lower bound is what the feature
 * promises (a timer never fires early), so that is all this checks; a slow
 * response never fails the test. */
static void test_latency(void **state) {
  fixture_t *f = start(with_latency);
  sk_test_job_t *job = calloc(1, sizeof *job);
  sk_test_job_start(job, "curl -m 20 -sS -o /dev/null -w '%%{http_code} %%{time_total}' http://127.0.0.1:%d/", f->port);
  assert_int_equal(run(f, job), 0);
  int code = 0;
  double t = 0;
  assert_int_equal(sscanf(job->out, "%d %lf", &code, &t), 2);
  assert_int_equal(code, 200);
  /* libuv's loop clock may be a coarse one (a few ms behind), so allow a
   * little slack below the configured 300ms; without latency this is ~1ms */
  if (t < 0.25) fail_msg("latency not applied: %.4fs", t);

  /* the loop is not blocked: while /delay/3s waits, a request without
   * latency is answered first */
  memset(job, 0, sizeof *job);
  sk_test_job_start(job,
                    "(curl -m 20 -sS http://127.0.0.1:%d/delay/3s; echo) & sleep 0.2; "
                    "curl -m 20 -sS -o /dev/null -w 'fast %%{http_code}\\n' 'http://127.0.0.1:%d/?latency=0'; wait",
                    f->port, f->port);
  assert_int_equal(run(f, job), 0);
  char *fast = strstr(job->out, "fast 200");
  char *slow = strstr(job->out, "{\"delay_ms\":3000}");
  assert_non_null(fast);
  assert_non_null(slow);
  assert_true(fast < slow);
  free(job);
  stop(f);
}

/* A client that leaves during injected latency must not leave anything
 * behind (the sanitizer build checks the memory). */
static void test_abort_during_delay(void **state) {
  fixture_t *f = start(NULL);
  sk_test_job_t *job = calloc(1, sizeof *job);
  sk_test_job_start(job, "curl -m 20 -sS -m 0.5 http://127.0.0.1:%d/delay/5s; echo rc=$?", f->port);
  assert_int_equal(run(f, job), 0);
  assert_non_null(strstr(job->out, "rc=28")); /* curl: operation timed out */
  /* and the server still answers */
  memset(job, 0, sizeof *job);
  sk_test_job_start(job, "curl -m 20 -sS -o /dev/null -w '%%{http_code}' http://127.0.0.1:%d/", f->port);
  assert_int_equal(run(f, job), 0);
  assert_string_equal(job->out, "200");
  free(job);
  stop(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_root_h1_h2),      cmocka_unit_test(test_echo_roundtrip),
      cmocka_unit_test(test_routes),          cmocka_unit_test(test_injected_errors),
      cmocka_unit_test(test_query_error_rate), cmocka_unit_test(test_latency),
      cmocka_unit_test(test_abort_during_delay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
