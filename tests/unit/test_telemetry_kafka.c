/* skiff-telemetry's Kafka exporter without a broker: config validators
 * (topic names, librdkafka properties, idempotence kept), no exporter
 * without brokers, signals without a topic ignored, the bounded queue
 * (queue_full past max_queue_bytes, queue bytes gauge) and shutdown with
 * unconfirmed messages (counted delivery_failed, nothing leaks). The broker
 * side is tests/integration/telemetry_kafka.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sk_test.h"
#include "skiff/err.h"
#include "tl_int.h"

static int check_topic(const char *s, char *msg, size_t len) {
  char *p = (char *)s;
  return tl_kafka_check_topic(&p, msg, len);
}

static void test_topic_names(void **st) {
  (void)st;
  char msg[300], longname[300];
  assert_int_equal(check_topic("otlp_spans", msg, sizeof msg), 0);
  assert_int_equal(check_topic("a.b-C_9", msg, sizeof msg), 0);
  assert_int_equal(check_topic("", msg, sizeof msg), 0); /* not exported */
  assert_int_equal(check_topic("bad topic", msg, sizeof msg), SK_EINVAL);
  assert_non_null(strstr(msg, "bad topic name \"bad topic\""));
  assert_int_equal(check_topic("..", msg, sizeof msg), SK_EINVAL);
  assert_int_equal(check_topic("t/x", msg, sizeof msg), SK_EINVAL);
  memset(longname, 'a', 250);
  longname[250] = 0;
  assert_int_equal(check_topic(longname, msg, sizeof msg), SK_EINVAL);
  longname[249] = 0;
  assert_int_equal(check_topic(longname, msg, sizeof msg), 0);
}

static int check_props(const char **v, size_t n, char *msg, size_t len) {
  sk_cfg_strlist_t l = {.v = (char **)v, .n = n};
  return tl_kafka_check_properties(&l, msg, len);
}

static void test_properties(void **st) {
  (void)st;
  char msg[600];
  const char *ok[] = {"linger.ms=20", "compression.codec=zstd", "acks=all", "enable.idempotence=true", "acks=-1"};
  assert_int_equal(check_props(ok, 5, msg, sizeof msg), 0);
  const char *acks[] = {"linger.ms=20", "acks=1"};
  assert_int_equal(check_props(acks, 2, msg, sizeof msg), SK_EINVAL);
  assert_non_null(strstr(msg, "[1]: acks"));
  const char *idem[] = {"enable.idempotence=false"};
  assert_int_equal(check_props(idem, 1, msg, sizeof msg), SK_EINVAL);
  assert_non_null(strstr(msg, "idempotent"));
  const char *unknown[] = {"no.such.property=1"};
  assert_int_equal(check_props(unknown, 1, msg, sizeof msg), SK_EINVAL);
  assert_non_null(strstr(msg, "no.such.property"));
  const char *badval[] = {"linger.ms=forever"};
  assert_int_equal(check_props(badval, 1, msg, sizeof msg), SK_EINVAL);
  assert_non_null(strstr(msg, "linger.ms"));
  const char *noeq[] = {"linger.ms"};
  assert_int_equal(check_props(noeq, 1, msg, sizeof msg), SK_EINVAL);
}

static void test_disabled(void **st) {
  (void)st;
  uv_loop_t loop;
  uv_loop_init(&loop);
  tl_kafka_cfg_t cfg = {.brokers = "", .max_queue_bytes = 1000};
  tl_kafka_t *k = (tl_kafka_t *)1;
  char err[512] = "";
  assert_int_equal(tl_kafka_new(&loop, &cfg, NULL, NULL, &k, err, sizeof err), 0);
  assert_null(k);
  assert_int_equal(tl_kafka_wants(NULL, TL_FWD_TRACES), 0);
  tl_kafka_push(NULL, TL_FWD_TRACES, (const uint8_t *)"x", 1, 1); /* harmless */
  tl_kafka_free(NULL);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static int metric_is(sk_metrics_t *m, const char *line) {
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_metrics_render(m, &b), 0);
  char want[256];
  snprintf(want, sizeof want, "\n%s\n", line);
  int found = b.data && memmem(b.data, b.len, want, strlen(want)) != NULL;
  if (!found) fprintf(stderr, "no line \"%s\" in:\n%.*s\n", line, (int)b.len, b.data ? b.data : "");
  sk_buf_done(&b);
  return found;
}

static void test_bounded_queue(void **st) {
  (void)st;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_metrics_t *m = NULL;
  assert_int_equal(sk_metrics_new(&m), 0);
  /* a port nobody listens on: nothing is ever confirmed */
  tl_kafka_cfg_t cfg = {.brokers = "127.0.0.1:1",
                        .topics = {.traces = "t_spans", .metrics = "", .logs = "t_logs"},
                        .max_queue_bytes = 100,
                        .max_retry_time_ms = 60000,
                        .flush_timeout_ms = 0};
  tl_kafka_t *k = NULL;
  char err[512] = "";
  assert_int_equal(tl_kafka_new(&loop, &cfg, m, NULL, &k, err, sizeof err), 0);
  assert_non_null(k);
  assert_int_equal(tl_kafka_wants(k, TL_FWD_TRACES), 1);
  assert_int_equal(tl_kafka_wants(k, TL_FWD_METRICS), 0);
  assert_int_equal(tl_kafka_wants(k, TL_FWD_LOGS), 1);
  uint8_t msg[60];
  memset(msg, 0x0a, sizeof msg);
  tl_kafka_push(k, TL_FWD_TRACES, msg, 60, 3); /* queued */
  tl_kafka_push(k, TL_FWD_LOGS, msg, 40, 2);   /* queued: 100 bytes now */
  tl_kafka_push(k, TL_FWD_TRACES, msg, 1, 5);  /* over the bound */
  tl_kafka_push(k, TL_FWD_METRICS, msg, 10, 7); /* no topic: ignored */
  assert_true(metric_is(m, "skiff_telemetry_kafka_queue_bytes 100"));
  assert_true(metric_is(m, "skiff_telemetry_kafka_dropped_total{signal=\"traces\",reason=\"queue_full\"} 5"));
  assert_true(metric_is(m, "skiff_telemetry_kafka_sent_total{signal=\"traces\"} 0"));
  sk_buf_t b;
  sk_buf_init(&b);
  assert_int_equal(sk_metrics_render(m, &b), 0);
  assert_null(memmem(b.data, b.len, "signal=\"metrics\"", 16));
  sk_buf_done(&b);
  /* shutdown without flushing: the queued messages are purged and counted */
  tl_kafka_free(k);
  sk_test_loop_drain(&loop); /* closes the loop: fails while a handle is left */
  assert_true(metric_is(m, "skiff_telemetry_kafka_dropped_total{signal=\"traces\",reason=\"delivery_failed\"} 3"));
  assert_true(metric_is(m, "skiff_telemetry_kafka_dropped_total{signal=\"logs\",reason=\"delivery_failed\"} 2"));
  assert_true(metric_is(m, "skiff_telemetry_kafka_queue_bytes 0"));
  sk_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_topic_names),
      cmocka_unit_test(test_properties),
      cmocka_unit_test(test_disabled),
      cmocka_unit_test(test_bounded_queue),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
