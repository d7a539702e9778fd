/* The bus's server-sent events on an in-process HTTP server, read with
 * curl -N over HTTP/1.1 and h2c: replay after ?since= / Last-Event-ID
 * joined to live delivery without gap or duplicate, events published while
 * the stream runs (also inside a transaction: after the commit only), the
 * filter, 400 for a malformed id, 410 naming the pruned range, 429 past
 * max_streams, the stream ended cleanly by sk_bus_sse_end_all (drain), and
 * 503 afterwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "sk_test.h"
#include "skiff/bus.h"
#include "skiff/err.h"
#include "skiff/http.h"
#include "skiff/store.h"

#define WAIT_MS 30000

typedef struct fx {
  uv_loop_t loop;
  sk_store_t *st;
  sk_bus_t *bus;
  sk_http_server_t *srv;
  int port;
  size_t max_streams;
} fx_t;

static int only_even(const sk_bus_event_t *ev, void *ud) {
  (void)ud;
  return ev->id % 2 == 0;
}

static void handler(sk_http_req_t *req, void *ud) {
  fx_t *f = ud;
  sk_bus_sse_opts_t o = {.heartbeat_ms = 1000, .max_streams = f->max_streams};
  if (!strcmp(req->path, "/even")) o.filter = only_even;
  sk_bus_sse_serve(f->bus, req, &o);
}

static void fx_open(fx_t *f, int64_t max_events) {
  memset(f, 0, sizeof *f);
  uv_loop_init(&f->loop);
  sk_store_opts_t so = {.path = ":memory:", .non_durable = 1};
  assert_int_equal(sk_store_open(&so, &f->st), 0);
  assert_true(sk_store_exec(f->st, "CREATE TABLE things(v INTEGER)", NULL, 0) >= 0);
  sk_bus_opts_t bo = {.store = f->st, .max_events = max_events, .tick_ms = 100};
  char err[256];
  assert_int_equal(sk_bus_new(&f->loop, &bo, &f->bus, err, sizeof err), 0);
  sk_http_server_opts_t ho = {.host = "127.0.0.1", .port = 0};
  assert_int_equal(sk_http_server_new(&f->loop, &ho, handler, f, &f->srv), 0);
  f->port = sk_http_server_port(f->srv);
}

static void fx_close(fx_t *f) {
  sk_bus_free(f->bus, 0);
  sk_http_server_free(f->srv);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  sk_store_close(f->st);
  sk_test_loop_drain(&f->loop);
}

static void publish_n(fx_t *f, int n) {
  for (int i = 0; i < n; i++) {
    char d[64];
    snprintf(d, sizeof d, "{\"i\":%d}", i);
    assert_true(sk_bus_publish(f->bus, i % 2 ? "audit" : "resource", "k", d) > 0);
  }
}

/* "id,id,..." of the events in an SSE capture, and checks each is well formed. */
static void ids_of(const char *out, char *ids, size_t len) {
  ids[0] = 0;
  const char *p = out;
  while ((p = strstr(p, "id: "))) {
    long long id = atoll(p + 4);
    const char *ev = strstr(p, "\nevent: ");
    const char *data = strstr(p, "\ndata: {\"i\":");
    assert_non_null(ev);
    assert_non_null(data);
    size_t l = strlen(ids);
    snprintf(ids + l, len - l, "%s%lld", l ? "," : "", id);
    p += 4;
  }
}

/* Turns the loop for at least ms milliseconds (wall clock). */
static void spin(fx_t *f, int ms) {
  for (int i = 0; i < ms; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

static void run_until_streams(fx_t *f, size_t n, sk_test_job_t *job) {
  for (int i = 0; i < WAIT_MS && sk_bus_sse_count(f->bus) != n && !job->done; i++) spin(f, 1);
  assert_int_equal(sk_bus_sse_count(f->bus), n);
}

static int add_thing(sk_store_t *s, void *ud) {
  fx_t *f = ud;
  assert_true(sk_store_exec(s, "INSERT INTO things(v) VALUES (1)", NULL, 0) >= 0);
  assert_true(sk_bus_publish(f->bus, "resource", "tx", "{\"i\":100}") > 0);
  return 0;
}

static void test_replay_live_drain(void **state) {
  (void)state;
  fx_t f;
  fx_open(&f, 0);
  publish_n(&f, 6); /* ids 1..6 */
  for (int h2 = 0; h2 <= 1; h2++) {
    sk_test_job_t job;
    /* Resume after 3, then live events, then the drain ends the stream: curl exits 0. */
    sk_test_job_start(&job, "curl -sN %s --max-time 20 -H 'Last-Event-ID: 3' 'http://127.0.0.1:%d/all?since=1'",
                      h2 ? "--http2-prior-knowledge" : "", f.port);
    run_until_streams(&f, 1, &job);
    publish_n(&f, 2);
    assert_int_equal(sk_store_tx(f.st, add_thing, &f), 0);
    spin(&f, 50);
    sk_bus_sse_end_all(f.bus);
    assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
    sk_test_job_join(&job);
    assert_int_equal(job.status, 0);
    assert_non_null(strstr(job.out, ": skiff event stream"));
    char ids[512];
    ids_of(job.out, ids, sizeof ids);
    assert_string_equal(ids, "4,5,6,7,8,9"); /* Last-Event-ID wins over since= */
    assert_non_null(strstr(job.out, "event: audit"));
    /* After the drain: 503 */
    sk_test_job_start(&job, "curl -s -o /dev/null -w '%%{http_code}' 'http://127.0.0.1:%d/all'", f.port);
    assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
    sk_test_job_join(&job);
    assert_string_equal(job.out, "503");
    fx_close(&f);
    if (!h2) {
      fx_open(&f, 0);
      publish_n(&f, 6);
    }
  }
}

static void test_refusals_and_filter(void **state) {
  (void)state;
  fx_t f;
  fx_open(&f, 10);
  f.max_streams = 1;
  publish_n(&f, 30);
  assert_int_equal(sk_bus_prune(f.bus, 0), 20); /* 21..30 kept */
  sk_test_job_t job;
  /* 410 names the pruned range; 400 for a malformed id */
  sk_test_job_start(&job, "curl -s -w ' %%{http_code}' -H 'Last-Event-ID: 5' 'http://127.0.0.1:%d/all'", f.port);
  assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
  sk_test_job_join(&job);
  assert_non_null(strstr(job.out, " 410"));
  assert_non_null(strstr(job.out, "after 5 up to 20 were pruned"));
  sk_test_job_start(&job, "curl -s -w ' %%{http_code}' 'http://127.0.0.1:%d/all?since=31'", f.port);
  assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
  sk_test_job_join(&job);
  assert_non_null(strstr(job.out, "event 31 is ahead of this log (last 30)"));
  assert_non_null(strstr(job.out, " 410"));
  sk_test_job_start(&job, "curl -s -o /dev/null -w '%%{http_code}' 'http://127.0.0.1:%d/all?since=-1'", f.port);
  assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
  sk_test_job_join(&job);
  assert_string_equal(job.out, "400");
  /* since=20: the oldest retained follow, filtered to even ids; a second
   * stream is 429 while this one runs. */
  sk_test_job_start(&job, "curl -sN --max-time 20 'http://127.0.0.1:%d/even?since=20'", f.port);
  run_until_streams(&f, 1, &job);
  sk_test_job_t j2;
  sk_test_job_start(&j2, "curl -s -o /dev/null -w '%%{http_code}' 'http://127.0.0.1:%d/all'", f.port);
  assert_int_equal(sk_test_run_until(&f.loop, &j2.done, WAIT_MS), 0);
  sk_test_job_join(&j2);
  assert_string_equal(j2.out, "429");
  publish_n(&f, 1); /* id 31: odd, filtered out */
  spin(&f, 3000);   /* three heartbeat periods (1 s, checked every 100 ms tick) */
  sk_bus_sse_end_all(f.bus);
  assert_int_equal(sk_test_run_until(&f.loop, &job.done, WAIT_MS), 0);
  sk_test_job_join(&job);
  char ids[512];
  ids_of(job.out, ids, sizeof ids);
  assert_string_equal(ids, "22,24,26,28,30");
  assert_non_null(strstr(job.out, ": keepalive"));
  fx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_replay_live_drain),
                                     cmocka_unit_test(test_refusals_and_filter)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
