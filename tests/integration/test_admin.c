/* Integration tests: the admin listener in-process, driven by real curl
 * (HTTP/1.1 and h2c) and checked with promtool. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/admin.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/metrics.h"

#define WAIT_MS 20000

struct fixture {
  uv_loop_t loop;
  sk_metrics_t *reg;
  sk_admin_t *admin;
  int port;
  sk_counter_t *req_ok, *req_err;
  sk_histogram_t *lat;
};

/* Runs a shell command on a thread while the loop serves; returns its
 * exit status and leaves stdout in job->out. */
static int run_job(struct fixture *f, sk_test_job_t *job, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int run_job(struct fixture *f, sk_test_job_t *job, const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  sk_test_job_start(job, "%s", cmd);
  if (sk_test_run_until(&f->loop, &job->done, WAIT_MS) != 0) fail_msg("command did not finish: %s", cmd);
  sk_test_job_join(job);
  return job->status;
}

static void h_config_dump(sk_http_req_t *req, void *ud) {
  const sk_http_header_t h[] = {{"content-type", "application/json"}};
  const char *body = "{\"daemon\":\"skiff-test\"}";
  sk_http_respond(req, 200, h, 1, body, strlen(body));
}

static void h_post_only(sk_http_req_t *req, void *ud) {
  char *b = sk_pool_printf(req->pool, "got %zu bytes\n", req->body_len);
  sk_http_respond_text(req, 202, "text/plain", b);
}

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  assert_int_equal(sk_metrics_new(&f->reg), 0);
  sk_mfamily_t *fam;
  const char *labels[] = {"method", "code"};
  assert_int_equal(sk_metrics_counter_family(f->reg, "skiff_test_requests_total",
                                             "Requests handled by the test, by method and code.",
                                             labels, 2, &fam), 0);
  assert_int_equal(sk_counter_with(fam, (const char *[]){"GET", "200"}, &f->req_ok), 0);
  assert_int_equal(sk_counter_with(fam, (const char *[]){"POST", "500"}, &f->req_err), 0);
  sk_counter_add(f->req_ok, 41);
  sk_counter_inc(f->req_err);
  sk_mfamily_t *hf;
  assert_int_equal(sk_metrics_histogram_family(f->reg, "skiff_test_request_duration_seconds",
                                               "Request latency with a \"quoted\" \\ help.",
                                               (const char *[]){"route"}, 1, NULL, 0, &hf), 0);
  assert_int_equal(sk_histogram_with(hf, (const char *[]){"/a\"b\\c\nd"}, &f->lat), 0);
  sk_histogram_observe(f->lat, 0.003);
  sk_histogram_observe(f->lat, 0.2);
  sk_histogram_observe(f->lat, 12);
  sk_gauge_t *g;
  assert_int_equal(sk_metrics_gauge(f->reg, "skiff_test_queue_depth", "Items waiting.", &g), 0);
  sk_gauge_set(g, 7);

  assert_int_equal(sk_admin_new(&f->loop, "127.0.0.1", 0, f->reg, "skiff-test", &f->admin), 0);
  f->port = sk_admin_port(f->admin);
  assert_true(f->port > 0);
  assert_int_equal(sk_admin_add_route(f->admin, "GET", "/config_dump", h_config_dump, NULL), 0);
  assert_int_equal(sk_admin_add_route(f->admin, "POST", "/post_only", h_post_only, NULL), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  sk_admin_free(f->admin);
  sk_test_loop_drain(&f->loop);
  sk_metrics_free(f->reg);
  free(f);
  return 0;
}

static void test_healthz_readyz(void **state) {
  struct fixture *f = *state;
  sk_test_job_t job;
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/healthz", f->port), 0);
  assert_string_equal(job.out, "ok\n 200\n");
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/readyz", f->port), 0);
  assert_string_equal(job.out, "not ready\n 503\n");
  assert_false(sk_admin_is_ready(f->admin));

  sk_admin_set_ready(f->admin, 1);
  assert_true(sk_admin_is_ready(f->admin));
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/readyz", f->port), 0);
  assert_string_equal(job.out, "ready\n 200\n");

  /* over h2c as well */
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 --http2-prior-knowledge -w ' %%{http_code} %%{http_version}\\n' "
                                    "http://127.0.0.1:%d/readyz", f->port), 0);
  assert_string_equal(job.out, "ready\n 200 2\n");

  sk_admin_set_ready(f->admin, 0);
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/readyz", f->port), 0);
  assert_string_equal(job.out, "not ready\n 503\n");
}

static void test_not_found_and_methods(void **state) {
  struct fixture *f = *state;
  sk_test_job_t job;
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' 'http://127.0.0.1:%d/nope?x=1'", f->port), 0);
  assert_string_equal(job.out, "not found: /nope\n 404\n");
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -X POST -D - -o /dev/null http://127.0.0.1:%d/healthz | tr -d '\\r' | "
                                    "grep -i -e '^HTTP/' -e '^allow:'", f->port), 0);
  assert_string_equal(job.out, "HTTP/1.1 405 Method Not Allowed\nallow: GET, HEAD\n");
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/post_only", f->port), 0);
  assert_string_equal(job.out, "method GET not allowed; allowed: POST\n 405\n");
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -d hello -w ' %%{http_code}\\n' http://127.0.0.1:%d/post_only", f->port), 0);
  assert_string_equal(job.out, "got 5 bytes\n 202\n");
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code} %%{content_type}\\n' http://127.0.0.1:%d/config_dump", f->port), 0);
  assert_string_equal(job.out, "{\"daemon\":\"skiff-test\"} 200 application/json\n");
  /* route validation */
  assert_int_equal(sk_admin_add_route(f->admin, "GET", "/config_dump", h_config_dump, NULL), SK_EEXIST);
  assert_int_equal(sk_admin_add_route(f->admin, "GET", "no-slash", h_config_dump, NULL), SK_EINVAL);
  assert_int_equal(sk_admin_add_route(f->admin, "get", "/x", h_config_dump, NULL), SK_EINVAL);
  assert_int_equal(sk_admin_add_route(f->admin, "GET", "/x?y", h_config_dump, NULL), SK_EINVAL);
}

static void test_metrics_promtool(void **state) {
  struct fixture *f = *state;
  sk_test_job_t job;
  const char *dir = sk_test_tmpdir();
  /* body, headers and status */
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -o %s/metrics.txt -w '%%{http_code} %%{content_type}' "
                                    "http://127.0.0.1:%d/metrics", dir, f->port), 0);
  assert_string_equal(job.out, "200 text/plain; version=0.0.4; charset=utf-8");
  assert_int_equal(run_job(f, &job, "cat %s/metrics.txt", dir), 0);
  const char *m = job.out;
  assert_non_null(strstr(m, "# TYPE skiff_test_requests_total counter\n"));
  assert_non_null(strstr(m, "skiff_test_requests_total{method=\"GET\",code=\"200\"} 41\n"));
  assert_non_null(strstr(m, "skiff_test_requests_total{method=\"POST\",code=\"500\"} 1\n"));
  assert_non_null(strstr(m, "# HELP skiff_test_request_duration_seconds Request latency with a \"quoted\" \\\\ help.\n"));
  assert_non_null(strstr(m, "skiff_test_request_duration_seconds_bucket{route=\"/a\\\"b\\\\c\\nd\",le=\"0.005\"} 1\n"));
  assert_non_null(strstr(m, "skiff_test_request_duration_seconds_bucket{route=\"/a\\\"b\\\\c\\nd\",le=\"0.25\"} 2\n"));
  assert_non_null(strstr(m, "skiff_test_request_duration_seconds_bucket{route=\"/a\\\"b\\\\c\\nd\",le=\"+Inf\"} 3\n"));
  assert_non_null(strstr(m, "skiff_test_request_duration_seconds_count{route=\"/a\\\"b\\\\c\\nd\"} 3\n"));
  assert_non_null(strstr(m, "skiff_test_queue_depth 7\n"));
  assert_non_null(strstr(m, "skiff_build_info{daemon=\"skiff-test\",version=\"" SKIFF_VERSION "\"} 1\n"));
  assert_non_null(strstr(m, "# TYPE process_cpu_seconds_total counter\n"));
  assert_non_null(strstr(m, "\nprocess_resident_memory_bytes "));
  assert_non_null(strstr(m, "\nprocess_open_fds "));
  assert_non_null(strstr(m, "\nprocess_start_time_seconds "));

  /* promtool accepts the exposition: exit 0 and nothing printed */
  int st = run_job(f, &job, "promtool check metrics < %s/metrics.txt 2>&1", dir);
  if (st != 0 || job.out[0]) fail_msg("promtool exit %d: %s", st, job.out);
  assert_int_equal(st, 0);
  assert_string_equal(job.out, "");

  /* the endpoint is live: updates show in the next scrape, over h2c too */
  sk_counter_add(f->req_ok, 9);
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 --http2-prior-knowledge http://127.0.0.1:%d/metrics | "
                                    "grep '^skiff_test_requests_total{method=\"GET\"'", f->port), 0);
  assert_string_equal(job.out, "skiff_test_requests_total{method=\"GET\",code=\"200\"} 50\n");
  /* and the h2c scrape passes promtool as well (curl | promtool, promtool's status asserted) */
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 --http2-prior-knowledge -o %s/metrics2.txt "
                                    "http://127.0.0.1:%d/metrics", dir, f->port), 0);
  st = run_job(f, &job, "promtool check metrics < %s/metrics2.txt 2>&1", dir);
  if (st != 0 || job.out[0]) fail_msg("promtool (h2c) exit %d: %s", st, job.out);

  /* a broken exposition makes promtool fail, so the check above can fail */
  st = run_job(f, &job, "printf '# TYPE x counter\\nx{a=\"1\" 2\\n' | promtool check metrics >/dev/null 2>&1");
  assert_int_not_equal(st, 0);
}

static void test_head(void **state) {
  struct fixture *f = *state;
  sk_test_job_t job;
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -I http://127.0.0.1:%d/healthz | head -1 | tr -d '\\r'", f->port), 0);
  assert_string_equal(job.out, "HTTP/1.1 200 OK\n");
}

static int drained_flag;
static void on_drained(sk_admin_t *a, void *ud) { drained_flag = 1; }

static void test_drain(void **state) {
  struct fixture *f = *state;
  sk_test_job_t job;
  sk_admin_set_ready(f->admin, 1);
  sk_admin_set_draining(f->admin);
  assert_false(sk_admin_is_ready(f->admin));
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/readyz", f->port), 0);
  assert_string_equal(job.out, "draining\n 503\n");
  /* liveness is unaffected */
  assert_int_equal(run_job(f, &job, "curl -sS -m 10 -w ' %%{http_code}\\n' http://127.0.0.1:%d/healthz", f->port), 0);
  assert_string_equal(job.out, "ok\n 200\n");
  drained_flag = 0;
  sk_admin_drain(f->admin, on_drained, NULL);
  assert_int_equal(sk_test_run_until(&f->loop, &drained_flag, WAIT_MS), 0);
  /* the listener is gone: a new connection is refused */
  int st = run_job(f, &job, "curl -sS -m 10 -o /dev/null http://127.0.0.1:%d/healthz 2>/dev/null", f->port);
  assert_int_not_equal(st, 0);
}

static void test_bad_args(void **state) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  sk_admin_t *a;
  assert_int_equal(sk_admin_new(&loop, "127.0.0.1", 70000, NULL, "x", &a), SK_EINVAL);
  assert_int_equal(sk_admin_new(NULL, "127.0.0.1", 0, NULL, "x", &a), SK_EINVAL);
  /* port already taken */
  sk_admin_t *a1, *a2;
  assert_int_equal(sk_admin_new(&loop, "127.0.0.1", 0, NULL, "x", &a1), 0);
  int rc = sk_admin_new(&loop, "127.0.0.1", sk_admin_port(a1), NULL, "x", &a2);
  assert_true(rc < 0);
  sk_admin_free(a1);
  sk_admin_free(NULL);
  sk_test_loop_drain(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_healthz_readyz, setup, teardown),
      cmocka_unit_test_setup_teardown(test_not_found_and_methods, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metrics_promtool, setup, teardown),
      cmocka_unit_test_setup_teardown(test_head, setup, teardown),
      cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
      cmocka_unit_test(test_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
