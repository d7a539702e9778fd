/* The bus's Kafka path against librdkafka's mock cluster (in this process,
 * 3 brokers on loopback), read back with kcat:
 *   - events reach the topic of their type (skiff.resource, skiff.audit)
 *     with their key, JSON value and skiff-event-id header;
 *   - every broker down while events are published, then up again: every
 *     event arrives exactly once (idempotent producer; a delivery that
 *     timed out is produced again from the local log);
 *   - the bus freed while the brokers are down (nothing confirmed), a new
 *     bus on the same store: the events above the saved delivered cursor
 *     are produced after the restart, again exactly once. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sk_test.h"
#include "skiff/bus.h"
#include "skiff/err.h"
#include "skiff/store.h"

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static char bootstrap[512];

static void start_mock(void) {
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "log_level", "0", err, sizeof err);
  mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  assert_non_null(mock_rk);
  mock = rd_kafka_mock_cluster_new(mock_rk, 3);
  assert_non_null(mock);
  snprintf(bootstrap, sizeof bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(mock));
}

static void stop_mock(void) {
  rd_kafka_mock_cluster_destroy(mock);
  rd_kafka_destroy(mock_rk);
}

static sk_bus_t *open_bus(uv_loop_t *loop, sk_store_t *st) {
  static const char *props[] = {"message.timeout.ms=1500", "retry.backoff.ms=50", "log_level=0"};
  sk_bus_opts_t o = {.store = st,
                     .tick_ms = 50,
                     .kafka = {.brokers = bootstrap, .topic_prefix = "skiff.", .props = props, .nprops = 3}};
  sk_bus_t *b = NULL;
  char err[512] = "";
  int rc = sk_bus_new(loop, &o, &b, err, sizeof err);
  if (rc < 0) fail_msg("sk_bus_new: %s", err);
  return b;
}

/* Runs the loop until Kafka confirmed every event up to last. */
static void wait_delivered(uv_loop_t *loop, sk_bus_t *b, int64_t last) {
  for (int i = 0; i < 1200; i++) { /* safety bound: 60 s */
    sk_bus_stats_t s;
    sk_bus_stats(b, &s);
    if (s.kafka_cursor >= last) return;
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(50000);
  }
  sk_bus_stats_t s;
  sk_bus_stats(b, &s);
  fail_msg("not delivered: cursor %lld of %lld, last error: %s", (long long)s.kafka_cursor, (long long)last,
           s.kafka_last_error);
}

static void run_for(uv_loop_t *loop, int ms) {
  for (int i = 0; i < ms / 50; i++) {
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(50000);
  }
}

/* Reads the whole topic with kcat; counts[id] += 1 per message. Checks key
 * and value of each against what publish() sent. Returns the message count. */
static int consume(const char *topic, int *counts, int max_id) {
  static char out[1 << 20];
  int rc = sk_test_sh(out, sizeof out,
                      "timeout 60 kcat -C -b '%s' -t %s -e -o beginning -q -f '%%k|%%h|%%s\\n' 2>/dev/null", bootstrap,
                      topic);
  assert_int_equal(rc, 0);
  int n = 0;
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    char key[64], val[256];
    long long id = -1;
    const char *h = strstr(line, "skiff-event-id=");
    assert_non_null(h);
    id = atoll(h + 15);
    assert_true(id > 0 && id <= max_id);
    assert_int_equal(sscanf(line, "%63[^|]|", key), 1);
    const char *v = strrchr(line, '|');
    snprintf(val, sizeof val, "%s", v + 1);
    char want_key[64], want_val[128];
    snprintf(want_key, sizeof want_key, "Route/default/r%lld", id);
    snprintf(want_val, sizeof want_val, "{\"n\":%lld,\"topic\":\"%s\"}", id, topic);
    assert_string_equal(key, want_key);
    assert_string_equal(val, want_val);
    counts[id]++;
    n++;
  }
  return n;
}

static int64_t publish(sk_bus_t *b, const char *type, int64_t expect_id) {
  char key[64], data[128];
  snprintf(key, sizeof key, "Route/default/r%lld", (long long)expect_id);
  snprintf(data, sizeof data, "{\"n\":%lld,\"topic\":\"skiff.%s\"}", (long long)expect_id, type);
  int64_t id = sk_bus_publish(b, type, key, data);
  assert_int_equal(id, expect_id);
  return id;
}

static void test_kafka_delivery_outage_restart(void **state) {
  (void)state;
  start_mock();
  uv_loop_t loop;
  uv_loop_init(&loop);
  char path[1024];
  snprintf(path, sizeof path, "%s/bus.db", sk_test_tmpdir());
  sk_store_opts_t so = {.path = path};
  sk_store_t *st = NULL;
  assert_int_equal(sk_store_open(&so, &st), 0);
  sk_bus_t *b = open_bus(&loop, st);
  enum { N1 = 30, N2 = 20, N3 = 10, TOTAL = N1 + N2 + N3 };
  int64_t id = 0;
  const char *type_of[TOTAL + 1];
  /* 1. Plain delivery. */
  for (int i = 0; i < N1; i++) {
    type_of[id + 1] = i % 3 == 2 ? "audit" : "resource";
    id = publish(b, type_of[id + 1], id + 1);
  }
  wait_delivered(&loop, b, id);
  sk_bus_stats_t s;
  sk_bus_stats(b, &s);
  assert_true(s.kafka_enabled);
  assert_true(s.kafka_delivered >= N1);
  /* 2. Every broker down while publishing, then back. */
  assert_int_equal(rd_kafka_mock_broker_set_down(mock, -1), 0);
  for (int i = 0; i < N2; i++) {
    type_of[id + 1] = "resource";
    id = publish(b, "resource", id + 1);
  }
  run_for(&loop, 2500); /* longer than message.timeout.ms: deliveries fail and are produced again */
  sk_bus_stats(b, &s);
  assert_true(s.kafka_cursor < id);
  print_message("outage: cursor %lld, failed reports %lld, last error: %s\n", (long long)s.kafka_cursor,
                (long long)s.kafka_failed, s.kafka_last_error);
  assert_int_equal(rd_kafka_mock_broker_set_up(mock, -1), 0);
  wait_delivered(&loop, b, id);
  /* 3. Down again; the bus stops with nothing confirmed, restarts later. */
  assert_int_equal(rd_kafka_mock_broker_set_down(mock, -1), 0);
  for (int i = 0; i < N3; i++) {
    type_of[id + 1] = "audit";
    id = publish(b, "audit", id + 1);
  }
  run_for(&loop, 200);
  sk_bus_free(b, 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(rd_kafka_mock_broker_set_up(mock, -1), 0);
  b = open_bus(&loop, st);
  wait_delivered(&loop, b, id);
  assert_int_equal(id, TOTAL);
  /* Read everything back: every event exactly once, on its type's topic. */
  int counts[TOTAL + 1];
  memset(counts, 0, sizeof counts);
  int nr = consume("skiff.resource", counts, TOTAL);
  int na = consume("skiff.audit", counts, TOTAL);
  assert_int_equal(nr + na, TOTAL);
  for (int i = 1; i <= TOTAL; i++) {
    if (counts[i] != 1) fail_msg("event %d (%s) arrived %d times", i, type_of[i], counts[i]);
  }
  sk_bus_free(b, 1000);
  sk_store_close(st);
  sk_test_loop_drain(&loop);
  stop_mock();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_kafka_delivery_outage_restart)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
