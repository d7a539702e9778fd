/* bench/trace/spans.c: the cost of recording a span with the runtime's
 * tracer (skiff/trace.h) on the hot path: begin, 8 attributes (the proxy's
 * SERVER span set), end = encode + hand over towards the exporter. T threads
 * record at once, as T proxy workers do, in rounds of R spans each; between
 * rounds (not timed) the exporter drains the queue, so the buffers are
 * reused as in steady state instead of growing. The exporter sends to a
 * closed port (each batch fails fast and is dropped): this measures the
 * recording side only. Also timed: the same span with no endpoint (encode
 * only, no queue) and the unsampled path (ids only).
 *
 * usage: spans THREADS ROUNDS SPANS_PER_ROUND  (prints ns/span) */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/trace.h"

static sk_tracer_t *tracer;
static long rounds, per_round;
static int sampled_run;
static uv_barrier_t start_b, end_b;

typedef struct worker {
  uv_thread_t th;
  uint64_t ns;
} worker_t;

static void record(const sk_trace_ctx_t *parent) {
  sk_span_t s;
  sk_span_begin(&s, tracer, "GET all", SK_SPAN_SERVER, parent, NULL, 0);
  sk_span_attr_str(&s, "http.request.method", "GET");
  sk_span_attr_str(&s, "url.path", "/api/v1/items");
  sk_span_attr_str(&s, "url.scheme", "http");
  sk_span_attr_str(&s, "server.address", "127.0.0.1");
  sk_span_attr_int(&s, "server.port", 8080);
  sk_span_attr_str(&s, "network.protocol.version", "1.1");
  sk_span_attr_str(&s, "skiff.route", "all");
  sk_span_attr_int(&s, "http.response.status_code", 200);
  sk_span_end(&s, 0);
}

static void work(void *arg) {
  worker_t *w = arg;
  sk_trace_ctx_t parent;
  sk_traceparent_parse(sampled_run ? "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                                   : "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                       &parent);
  w->ns = 0;
  for (long r = 0; r < rounds; r++) {
    uv_barrier_wait(&start_b);
    uint64_t t0 = uv_hrtime();
    for (long i = 0; i < per_round; i++) record(&parent);
    w->ns += uv_hrtime() - t0;
    uv_barrier_wait(&end_b);
  }
}

static void drain(void) {
  sk_tracer_stats_t st;
  sk_tracer_flush(tracer);
  for (int i = 0; i < 20000; i++) {
    sk_tracer_stats(tracer, &st);
    if (st.queued == 0) return;
    uv_sleep(1);
    if (i % 50 == 49) sk_tracer_flush(tracer);
  }
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  rounds = argc > 2 ? atol(argv[2]) : 100;
  per_round = argc > 3 ? atol(argv[3]) : 1000;
  if (threads < 1 || threads > 64 || rounds < 1 || per_round < 1) return 2;
  static const char *const mode[] = {"unsampled", "sampled, encode only", "sampled, encode + queue"};
  for (int m = 0; m < 3; m++) {
    sampled_run = m > 0;
    sk_tracer_opts_t o = {.service_name = "bench",
                          .endpoint = m == 2 ? "http://127.0.0.1:9" : NULL,
                          .sample_ratio = 1,
                          .max_queue = (size_t)threads * (size_t)per_round + 1,
                          .max_batch = 512,
                          .flush_interval_ms = 3600 * 1000,
                          .max_retries = 1,
                          .max_backoff_ms = 1};
    if (sk_tracer_new(&o, &tracer) < 0) return 1;
    uv_barrier_init(&start_b, (unsigned)threads + 1);
    uv_barrier_init(&end_b, (unsigned)threads + 1);
    worker_t w[64];
    for (int i = 0; i < threads; i++) uv_thread_create(&w[i].th, work, &w[i]);
    for (long r = 0; r < rounds; r++) {
      uv_barrier_wait(&start_b);
      uv_barrier_wait(&end_b);
      if (m == 2) drain();
    }
    uint64_t worst = 0;
    for (int i = 0; i < threads; i++) {
      uv_thread_join(&w[i].th);
      if (w[i].ns > worst) worst = w[i].ns;
    }
    double n = (double)rounds * (double)per_round;
    printf("%-24s threads=%d spans=%.0f/thread ns/span(slowest thread)=%.1f\n", mode[m], threads, n,
           (double)worst / n);
    uv_barrier_destroy(&start_b);
    uv_barrier_destroy(&end_b);
    sk_tracer_free(tracer);
  }
  return 0;
}
