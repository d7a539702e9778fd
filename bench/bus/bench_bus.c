/* bench_bus: the event bus's publish throughput.
 *   bench_bus local PATH N [durable]   publish N events into the local log
 *   bench_bus kafka PATH N BOOTSTRAP   publish N events with Kafka on and
 *                                      wait until the brokers confirmed all
 * Prints "events/s" (wall time from the first publish to the last
 * confirmation). Each event is a ~300-byte resource change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "skiff/bus.h"
#include "skiff/store.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_bus local PATH N [durable] | kafka PATH N BOOTSTRAP\n");
    return 2;
  }
  int kafka = !strcmp(argv[1], "kafka");
  long n = atol(argv[3]);
  int durable = !kafka && argc > 4 && !strcmp(argv[4], "durable");
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_store_opts_t so = {.path = argv[2], .non_durable = !durable};
  sk_store_t *st = NULL;
  if (sk_store_open(&so, &st) < 0) return 1;
  sk_bus_opts_t bo = {.store = st, .max_events = n + 1, .tick_ms = 100};
  if (kafka) bo.kafka.brokers = argv[4];
  sk_bus_t *b = NULL;
  char err[512];
  if (sk_bus_new(&loop, &bo, &b, err, sizeof err) < 0) {
    fprintf(stderr, "bench_bus: %s\n", err);
    return 1;
  }
  char data[512];
  double t0 = now_s();
  int64_t last = 0;
  for (long i = 0; i < n; i++) {
    snprintf(data, sizeof data,
             "{\"type\":\"MODIFIED\",\"kind\":\"Route\",\"namespace\":\"default\",\"name\":\"web-%ld\","
             "\"resourceVersion\":%ld,\"object\":{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Route\",\"metadata\":"
             "{\"name\":\"web-%ld\",\"namespace\":\"default\"},\"spec\":{\"rules\":[{\"backendRefs\":[{\"name\":"
             "\"echo\",\"port\":8081,\"weight\":%ld}]}]}}}",
             i % 100, i + 1, i % 100, i % 100);
    char key[64];
    snprintf(key, sizeof key, "Route/default/web-%ld", i % 100);
    last = sk_bus_publish(b, "resource", key, data);
    if (last < 0) return 1;
    if (kafka && i % 256 == 0) uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (kafka) {
    for (int i = 0; i < 6000; i++) {
      sk_bus_stats_t s;
      sk_bus_stats(b, &s);
      if (s.kafka_cursor >= last) break;
      uv_run(&loop, UV_RUN_NOWAIT);
      usleep(1000);
    }
  }
  double dt = now_s() - t0;
  sk_bus_stats_t s;
  sk_bus_stats(b, &s);
  printf("%s%s: %ld events in %.3f s = %.0f events/s%s\n", argv[1], durable ? " (durable)" : "", n, dt, n / dt,
         kafka && s.kafka_cursor < last ? " (NOT all confirmed)" : "");
  sk_bus_free(b, 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  sk_store_close(st);
  return 0;
}
