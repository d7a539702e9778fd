/* The Prometheus query API served in-process from the metrics store, driven
 * by the real promtool and curl. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/http.h"
#include "tl_promql.h"

#define T0 1700000000LL /* seconds */

typedef struct fixture {
  uv_loop_t loop;
  uv_timer_t tick;
  sk_http_server_t *srv;
  tl_query_api_t api;
  int port;
} fixture_t;

static fixture_t *F;

static void tick(uv_timer_t *t) { (void)t; }

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  char dir[1024], err[256];
  snprintf(dir, sizeof dir, "%s/qapi", sk_test_tmpdir());
  if (tl_tsdb_open(dir, NULL, &f->api.db, err, sizeof err) < 0) return -1;
  f->api.opts.ready = 1;
  tl_tsdb_t *db = f->api.db;
  for (int t = 0; t <= 600; t += 15) {
    int64_t ms = (T0 + t) * 1000;
    const char *inst[3] = {"a", "b", "c"}, *job[3] = {"api", "api", "db"};
    for (int i = 0; i < 3; i++) {
      tl_label_t l[3] = {{"__name__", "http_requests_total"}, {"job", job[i]}, {"instance", inst[i]}};
      tl_tsdb_append(db, l, 3, ms, (double)t * (i + 1));
      tl_label_t g[2] = {{"__name__", "temp"}, {"instance", inst[i]}};
      tl_tsdb_append(db, g, 2, ms, 10.5 * (i + 1));
    }
    const char *le[3] = {"0.1", "1", "+Inf"};
    double mul[3] = {1, 3, 4};
    for (int i = 0; i < 3; i++) {
      tl_label_t l[2] = {{"__name__", "lat_bucket"}, {"le", le[i]}};
      tl_tsdb_append(db, l, 2, ms, t * mul[i]);
    }
  }
  if (tl_tsdb_commit(db) < 0) return -1;
  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->tick);
  sk_http_server_opts_t so = {.port = 0};
  if (sk_http_server_new(&f->loop, &so, tl_query_api_http_handler, &f->api, &f->srv) < 0) return -1;
  f->port = sk_http_server_port(f->srv);
  F = f;
  return 0;
}

static void drained(sk_http_server_t *s, void *ud) { *(int *)ud = 1; }

static int teardown(void **state) {
  fixture_t *f = F;
  int done = 0;
  sk_http_server_drain(f->srv, drained, &done);
  uv_timer_start(&f->tick, tick, 20, 20);
  sk_test_run_until(&f->loop, &done, 10000);
  uv_timer_stop(&f->tick);
  sk_http_server_free(f->srv);
  uv_close((uv_handle_t *)&f->tick, NULL);
  sk_test_loop_drain(&f->loop);
  tl_tsdb_close(f->api.db);
  free(f);
  return 0;
}

/* Runs a shell command while the loop serves; returns the job (caller frees). */
static sk_test_job_t *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static sk_test_job_t *run(const char *fmt, ...) {
  sk_test_job_t *job = calloc(1, sizeof *job);
  char cmd[4000];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  sk_test_job_start(job, "%s", cmd);
  uv_timer_start(&F->tick, tick, 20, 20);
  int rc = sk_test_run_until(&F->loop, &job->done, 60000);
  uv_timer_stop(&F->tick);
  if (rc < 0) sk_test_run_until(&F->loop, &job->done, 30000);
  sk_test_job_join(job);
  assert_int_equal(rc, 0);
  return job;
}

static void want(sk_test_job_t *j, const char *s) {
  if (!strstr(j->out, s)) fail_msg("command: %s\nwanted: %s\ngot:\n%s", j->cmd, s, j->out);
}

static void test_promtool_instant(void **state) {
  sk_test_job_t *j = run("promtool query instant --time=%lld http://127.0.0.1:%d "
                         "'sum by (job) (rate(http_requests_total[5m]))' 2>&1",
                         T0 + 600, F->port);
  assert_int_equal(j->status, 0);
  want(j, "{job=\"api\"} => 3 @[1700000600]");
  want(j, "{job=\"db\"} => 3 @[1700000600]");
  free(j);
  j = run("promtool query instant --time=%lld http://127.0.0.1:%d 'temp > 15' 2>&1", T0 + 600, F->port);
  want(j, "temp{instance=\"b\"} => 21 @[1700000600]");
  want(j, "temp{instance=\"c\"} => 31.5 @[1700000600]");
  assert_null(strstr(j->out, "instance=\"a\""));
  free(j);
  j = run("promtool query instant --time=%lld http://127.0.0.1:%d "
          "'histogram_quantile(0.5, rate(lat_bucket[5m]))' 2>&1",
          T0 + 600, F->port);
  want(j, "{} => 0.55 @[1700000600]");
  free(j);
  /* a scalar, with RFC 3339 time */
  j = run("promtool query instant --time=2023-11-14T22:23:20Z http://127.0.0.1:%d '1 + time()' 2>&1", F->port);
  want(j, "scalar: 1700000601 @[1700000600]");
  free(j);
  /* a parse error reaches promtool with its column */
  j = run("promtool query instant http://127.0.0.1:%d 'rate(foo[5m]))' 2>&1", F->port);
  assert_int_not_equal(j->status, 0);
  want(j, "bad_data");
  want(j, "parse error at col 14: unexpected ')'");
  free(j);
}

static void test_promtool_range(void **state) {
  sk_test_job_t *j = run("promtool query range --start=%lld --end=%lld --step=1m http://127.0.0.1:%d "
                         "'rate(http_requests_total{instance=\"b\"}[5m])' 2>&1",
                         T0 + 300, T0 + 600, F->port);
  assert_int_equal(j->status, 0);
  want(j, "{instance=\"b\", job=\"api\"} =>");
  want(j, "2 @[1700000300]");
  want(j, "2 @[1700000600]");
  free(j);
  j = run("promtool query series --start=%lld --end=%lld --match='temp{instance=~\"a|c\"}' http://127.0.0.1:%d 2>&1",
          T0, T0 + 600, F->port);
  assert_int_equal(j->status, 0);
  want(j, "{__name__=\"temp\", instance=\"a\"}");
  want(j, "{__name__=\"temp\", instance=\"c\"}");
  assert_null(strstr(j->out, "instance=\"b\""));
  free(j);
  j = run("promtool query labels --start=%lld --end=%lld http://127.0.0.1:%d instance 2>&1", T0, T0 + 600, F->port);
  assert_int_equal(j->status, 0);
  want(j, "a\nb\nc");
  free(j);
  /* start/end are honoured: promtool's default range (the last year or so) holds none of this 2023 data */
  j = run("promtool query labels http://127.0.0.1:%d instance 2>&1", F->port);
  assert_int_equal(j->status, 0);
  assert_null(strstr(j->out, "a\nb"));
  free(j);
  j = run("promtool query series --start=%lld --end=%lld --match='temp' http://127.0.0.1:%d 2>&1", T0 + 10000,
          T0 + 20000, F->port);
  assert_int_equal(j->status, 0);
  assert_null(strstr(j->out, "temp"));
  free(j);
}

/* labels, label values and series honour start/end and match[] */
static void test_label_time_range(void **state) {
  sk_test_job_t *j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/label/instance/values?start=%lld&end=%lld'",
                         F->port, T0, T0 + 600);
  want(j, "\"data\":[\"a\",\"b\",\"c\"]");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/label/instance/values?start=%lld&end=%lld'", F->port,
          T0 + 3600, T0 + 7200);
  want(j, "\"data\":[]");
  free(j);
  j = run("curl -sS -m 20 -G --data-urlencode 'match[]=temp{instance!=\"b\"}' "
          "'http://127.0.0.1:%d/api/v1/label/instance/values?start=%lld&end=%lld'",
          F->port, T0, T0 + 600);
  want(j, "\"data\":[\"a\",\"c\"]");
  free(j);
  j = run("curl -sS -m 20 -G --data-urlencode 'match[]=temp' 'http://127.0.0.1:%d/api/v1/labels?start=%lld&end=%lld'",
          F->port, T0, T0 + 600);
  want(j, "\"data\":[\"__name__\",\"instance\"]");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/labels?start=%lld'", F->port, T0 + 100000);
  want(j, "\"data\":[]");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/labels?start=yesterday'", F->port);
  want(j, "HTTP/1.1 400");
  want(j, "invalid parameter \\\"start\\\": cannot parse \\\"yesterday\\\" to a valid timestamp");
  free(j);
  /* overlapping match[]: each series once */
  j = run("curl -sS -m 20 -G --data-urlencode 'match[]=temp{instance=~\"a|b\"}' --data-urlencode 'match[]=temp{instance=~\"b|c\"}' "
          "'http://127.0.0.1:%d/api/v1/series?start=%lld&end=%lld'",
          F->port, T0, T0 + 600);
  want(j, "{\"status\":\"success\",\"data\":[{\"__name__\":\"temp\",\"instance\":\"a\"},{\"__name__\":\"temp\","
          "\"instance\":\"b\"},{\"__name__\":\"temp\",\"instance\":\"c\"}]}");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/series?match[]=temp&start=20&end=10'", F->port);
  want(j, "HTTP/1.1 400");
  want(j, "end timestamp must not be before start time");
  free(j);
}

static void test_http_api(void **state) {
  /* form POST, as Grafana sends it */
  sk_test_job_t *j = run("curl -sS -m 20 -i -X POST -H 'Content-Type: application/x-www-form-urlencoded' "
                         "--data-urlencode 'query=temp{instance=\"a\"}' --data 'time=%lld' "
                         "http://127.0.0.1:%d/api/v1/query",
                         T0 + 600, F->port);
  want(j, "HTTP/1.1 200");
  want(j, "application/json");
  want(j, "{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[{\"metric\":{\"__name__\":\"temp\","
          "\"instance\":\"a\"},\"value\":[1700000600,\"10.5\"]}]}}");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/query_range?query=vector(1)&start=%lld.5&end=%lld&step=0.25'",
          F->port, T0, T0 + 1);
  want(j, "\"resultType\":\"matrix\"");
  want(j, "\"values\":[[1700000000.500,\"1\"],[1700000000.750,\"1\"],[1700000001,\"1\"]]");
  free(j);
  /* times before 1970, as Prometheus writes them: -1.5 s is -1.500 (not -2.5), -0.25 s keeps its "-0" */
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/query_range?query=vector(-9007199254740991)&start=-1.5&end=-0.25"
          "&step=0.25'",
          F->port);
  want(j, "\"values\":[[-1.500,\"-9007199254740991\"],[-1.250,\"-9007199254740991\"],[-1,\"-9007199254740991\"],"
          "[-0.750,\"-9007199254740991\"],[-0.500,\"-9007199254740991\"],[-0.250,\"-9007199254740991\"]]");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/query?query=vector(0.1)%%2Bvector(0.2)&time=0.001'", F->port);
  want(j, "\"value\":[0.001,\"0.30000000000000004\"]");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/query?query=sum(' ", F->port);
  want(j, "HTTP/1.1 400");
  want(j, "\"status\":\"error\",\"errorType\":\"bad_data\"");
  want(j, "parse error at col 5");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/query_range?query=up&start=10&end=5&step=1'", F->port);
  want(j, "HTTP/1.1 400");
  want(j, "end timestamp must not be before start time");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/query_range?query=up&start=0&end=100000&step=1'", F->port);
  want(j, "exceeded maximum resolution of 11,000 points");
  free(j);
  /* an evaluation error (not a parse error): 422 "execution", as Prometheus answers */
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/query?query=temp%%2Bon()temp&time=%lld'", F->port, T0 + 600);
  want(j, "HTTP/1.1 422");
  want(j, "\"errorType\":\"execution\"");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/labels'", F->port);
  want(j, "{\"status\":\"success\",\"data\":[\"__name__\",\"instance\",\"job\",\"le\"]}");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/label/__name__/values'", F->port);
  want(j, "[\"http_requests_total\",\"lat_bucket\",\"temp\"]");
  free(j);
  j = run("curl -sS -m 20 -g 'http://127.0.0.1:%d/api/v1/label/instance/values?match[]=http_requests_total{job=\"db\"}'",
          F->port);
  want(j, "\"data\":[\"c\"]");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/series'", F->port);
  want(j, "HTTP/1.1 400");
  want(j, "no match[] parameter provided");
  free(j);
  j = run("curl -sS -m 20 'http://127.0.0.1:%d/api/v1/status/buildinfo'", F->port);
  want(j, "\"version\":\"2.42.0\"");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/-/healthy' 'http://127.0.0.1:%d/-/ready'", F->port, F->port);
  want(j, "Skiff is Healthy.");
  want(j, "Skiff is Ready.");
  free(j);
  j = run("curl -sS -m 20 -i 'http://127.0.0.1:%d/api/v1/nope'", F->port);
  want(j, "HTTP/1.1 404");
  free(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_promtool_instant),
      cmocka_unit_test(test_promtool_range),
      cmocka_unit_test(test_http_api),
      cmocka_unit_test(test_label_time_range),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
