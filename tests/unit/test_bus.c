/* The event bus's local log: publish/read, monotonic ids, validation,
 * transactions (events commit and roll back with the caller's change,
 * dispatch sees committed rows only), subscribers, retention, reopen, and
 * the parsers of outside input (event ids, Kafka properties). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sk_test.h"
#include "skiff/bus.h"
#include "skiff/err.h"
#include "skiff/store.h"

typedef struct seen {
  int n;
  int64_t ids[256];
  char types[256][16];
  char data[256][64];
} seen_t;

static int record(const sk_bus_event_t *ev, void *ud) {
  seen_t *s = ud;
  if (s->n < 256) {
    s->ids[s->n] = ev->id;
    snprintf(s->types[s->n], sizeof s->types[0], "%s", ev->type);
    snprintf(s->data[s->n], sizeof s->data[0], "%s", ev->data);
  }
  s->n++;
  return 0;
}

static sk_store_t *open_store(const char *path) {
  sk_store_opts_t o = {.path = path, .non_durable = 1};
  sk_store_t *s = NULL;
  assert_int_equal(sk_store_open(&o, &s), 0);
  return s;
}

static sk_bus_t *open_bus(uv_loop_t *loop, sk_store_t *st, int64_t max_events) {
  sk_bus_opts_t o = {.store = st, .max_events = max_events};
  sk_bus_t *b = NULL;
  char err[256] = "";
  assert_int_equal(sk_bus_new(loop, &o, &b, err, sizeof err), 0);
  return b;
}

static void close_bus(uv_loop_t *loop, sk_bus_t *b) {
  sk_bus_free(b, 0);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void test_publish_read(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_store_t *st = open_store(":memory:");
  sk_bus_t *b = open_bus(&loop, st, 0);
  seen_t live = {0};
  sk_bus_sub_t *sub = NULL;
  assert_int_equal(sk_bus_subscribe(b, record, &live, &sub), 0);
  int64_t a = sk_bus_publish(b, "resource", "Route/default/web", "{ \"type\" : \"ADDED\", \"n\": 1 }");
  int64_t c = sk_bus_publish(b, "audit", NULL, "{\"verb\":\"create\"}");
  int64_t d = sk_bus_publish(b, "resource", "k", "[1, 2]");
  assert_true(a > 0 && c > a && d > c);
  /* Live: immediately (no transaction open), in order, compact JSON. */
  assert_int_equal(live.n, 3);
  assert_int_equal(live.ids[0], a);
  assert_string_equal(live.data[0], "{\"type\":\"ADDED\",\"n\":1}");
  assert_string_equal(live.types[1], "audit");
  seen_t r = {0};
  assert_int_equal(sk_bus_read_since(b, 0, 0, record, &r), 3);
  assert_int_equal(r.ids[2], d);
  seen_t r2 = {0};
  assert_int_equal(sk_bus_read_since(b, a, 1, record, &r2), 1);
  assert_int_equal(r2.ids[0], c);
  assert_int_equal(sk_bus_last_id(b), d);
  assert_int_equal(sk_bus_oldest_id(b), a);
  /* Bad input: refused, nothing stored. */
  assert_int_equal(sk_bus_publish(b, "bad type", "k", "{}"), SK_EINVAL);
  assert_int_equal(sk_bus_publish(b, "", "k", "{}"), SK_EINVAL);
  assert_int_equal(sk_bus_publish(b, "resource", "k", "{\"a\":"), SK_EINVAL);
  char *bigkey = calloc(1, SK_BUS_KEY_MAX + 2);
  memset(bigkey, 'k', SK_BUS_KEY_MAX + 1);
  assert_int_equal(sk_bus_publish(b, "resource", bigkey, "{}"), SK_ELIMIT);
  free(bigkey);
  assert_int_equal(sk_bus_last_id(b), d);
  sk_bus_unsubscribe(sub);
  assert_true(sk_bus_publish(b, "resource", "k", "{}") > d);
  assert_int_equal(live.n, 3);
  sk_bus_stats_t stats;
  sk_bus_stats(b, &stats);
  assert_int_equal(stats.published, 4);
  assert_int_equal(stats.kafka_enabled, 0);
  close_bus(&loop, b);
  sk_store_close(st);
  sk_test_loop_drain(&loop);
}

typedef struct tx_ctx {
  sk_bus_t *b;
  seen_t *live;
  int fail;
  int live_inside;
} tx_ctx_t;

static int in_tx(sk_store_t *s, void *ud) {
  tx_ctx_t *c = ud;
  assert_int_equal(sk_store_exec(s, "INSERT INTO things(v) VALUES (1)", NULL, 0), 1);
  assert_true(sk_bus_publish(c->b, "resource", "t", "{\"v\":1}") > 0);
  c->live_inside = c->live->n; /* nothing is dispatched before the commit */
  return c->fail ? SK_ECONFLICT : 0;
}

static void test_transactions(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_store_t *st = open_store(":memory:");
  assert_true(sk_store_exec(st, "CREATE TABLE things(v INTEGER)", NULL, 0) >= 0);
  sk_bus_t *b = open_bus(&loop, st, 0);
  seen_t live = {0};
  assert_int_equal(sk_bus_subscribe(b, record, &live, NULL), 0);
  tx_ctx_t c = {b, &live, 1, -1};
  /* Rolled back: the event is gone with the change and never delivered. */
  assert_int_equal(sk_store_tx(st, in_tx, &c), SK_ECONFLICT);
  assert_int_equal(c.live_inside, 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(live.n, 0);
  assert_int_equal(sk_bus_read_since(b, 0, 0, record, &(seen_t){0}), 0);
  /* Committed: delivered on the next loop turn. */
  c.fail = 0;
  assert_int_equal(sk_store_tx(st, in_tx, &c), 0);
  assert_int_equal(c.live_inside, 0);
  uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(live.n, 1);
  assert_string_equal(live.data[0], "{\"v\":1}");
  close_bus(&loop, b);
  sk_store_close(st);
  sk_test_loop_drain(&loop);
}

static void test_retention_and_reopen(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  char path[1024];
  snprintf(path, sizeof path, "%s/bus.db", sk_test_tmpdir());
  sk_store_t *st = open_store(path);
  sk_bus_t *b = open_bus(&loop, st, 10);
  int64_t last = 0;
  for (int i = 0; i < 25; i++) last = sk_bus_publish(b, "resource", "k", "{}");
  assert_int_equal(last, 25);
  assert_int_equal(sk_bus_prune(b, 0), 15);
  assert_int_equal(sk_bus_oldest_id(b), 16);
  /* Resuming inside the retained window works, before it is a gap. */
  seen_t r = {0};
  assert_int_equal(sk_bus_read_since(b, 15, 0, record, &r), 10);
  assert_int_equal(sk_bus_read_since(b, 14, 0, record, &r), SK_ERANGE);
  assert_int_equal(sk_bus_read_since(b, 0, 0, record, &(seen_t){0}), 10);
  close_bus(&loop, b);
  sk_store_close(st);
  /* Reopen: ids keep growing, never reused, even after pruning everything. */
  st = open_store(path);
  b = open_bus(&loop, st, 10);
  assert_int_equal(sk_bus_last_id(b), 25);
  assert_int_equal(sk_bus_publish(b, "resource", "k", "{}"), 26);
  assert_true(sk_store_exec(st, "DELETE FROM sk_bus_events", NULL, 0) >= 0);
  assert_int_equal(sk_bus_read_since(b, 20, 0, record, &(seen_t){0}), SK_ERANGE);
  assert_int_equal(sk_bus_read_since(b, 26, 0, record, &(seen_t){0}), 0);
  assert_int_equal(sk_bus_publish(b, "resource", "k", "{}"), 27);
  close_bus(&loop, b);
  sk_store_close(st);
  sk_test_loop_drain(&loop);
}

static int unsub_inside(const sk_bus_event_t *ev, void *ud) {
  sk_bus_sub_t **s = ud;
  sk_bus_unsubscribe(*s);
  *s = NULL;
  (void)ev;
  return 0;
}

static void test_unsubscribe_inside(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_store_t *st = open_store(":memory:");
  sk_bus_t *b = open_bus(&loop, st, 0);
  sk_bus_sub_t *s = NULL;
  seen_t live = {0};
  assert_int_equal(sk_bus_subscribe(b, unsub_inside, &s, &s), 0);
  assert_int_equal(sk_bus_subscribe(b, record, &live, NULL), 0);
  sk_bus_publish(b, "resource", "k", "{}");
  sk_bus_publish(b, "resource", "k", "{}");
  assert_null(s);
  assert_int_equal(live.n, 2);
  close_bus(&loop, b);
  sk_store_close(st);
  sk_test_loop_drain(&loop);
}

static void test_parsers(void **state) {
  (void)state;
  int64_t v = -1;
  assert_int_equal(sk_bus_parse_event_id("42", 2, &v), 0);
  assert_int_equal(v, 42);
  assert_int_equal(sk_bus_parse_event_id(" 7 ", 3, &v), 0);
  assert_int_equal(v, 7);
  assert_int_equal(sk_bus_parse_event_id("9223372036854775807", 19, &v), 0);
  assert_int_equal(sk_bus_parse_event_id("9223372036854775808", 19, &v), SK_EINVAL);
  assert_int_equal(sk_bus_parse_event_id("99999999999999999999", 20, &v), SK_EINVAL);
  assert_int_equal(sk_bus_parse_event_id("-1", 2, &v), SK_EINVAL);
  assert_int_equal(sk_bus_parse_event_id("1x", 2, &v), SK_EINVAL);
  assert_int_equal(sk_bus_parse_event_id("", 0, &v), SK_EINVAL);
  assert_int_equal(sk_bus_parse_event_id("  ", 2, &v), SK_EINVAL);
  char n[129], val[1025], err[256];
  assert_int_equal(sk_bus_parse_kafka_prop("linger.ms=10", n, sizeof n, val, sizeof val, err, sizeof err), 0);
  assert_string_equal(n, "linger.ms");
  assert_string_equal(val, "10");
  assert_int_equal(sk_bus_parse_kafka_prop("sasl.password=a=b", n, sizeof n, val, sizeof val, err, sizeof err), 0);
  assert_string_equal(val, "a=b");
  assert_int_equal(sk_bus_parse_kafka_prop("noequals", n, sizeof n, val, sizeof val, err, sizeof err), SK_EINVAL);
  assert_non_null(strstr(err, "name=value"));
  assert_int_equal(sk_bus_parse_kafka_prop("=x", n, sizeof n, val, sizeof val, err, sizeof err), SK_EINVAL);
  assert_int_equal(sk_bus_parse_kafka_prop("Linger=1", n, sizeof n, val, sizeof val, err, sizeof err), SK_EINVAL);
  assert_int_equal(sk_bus_parse_kafka_prop("a=b\nc", n, sizeof n, val, sizeof val, err, sizeof err), SK_EINVAL);
  assert_true(sk_bus_valid_type("resource"));
  assert_true(sk_bus_valid_type("gitops.sync-1_x"));
  assert_false(sk_bus_valid_type("a/b"));
  assert_false(sk_bus_valid_type(NULL));
}

static void test_kafka_config_errors(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  sk_store_t *st = open_store(":memory:");
  char err[512] = "";
  sk_bus_t *b = NULL;
  const char *off[] = {"enable.idempotence=false"};
  sk_bus_opts_t o = {.store = st, .kafka = {.brokers = "127.0.0.1:1", .props = off, .nprops = 1}};
  assert_int_equal(sk_bus_new(&loop, &o, &b, err, sizeof err), SK_ECONFIG);
  assert_non_null(strstr(err, "idempotent"));
  const char *unknown[] = {"no.such.property=1"};
  o.kafka.props = unknown;
  assert_int_equal(sk_bus_new(&loop, &o, &b, err, sizeof err), SK_ECONFIG);
  assert_non_null(strstr(err, "no.such.property"));
  o.kafka.props = NULL;
  o.kafka.nprops = 0;
  o.kafka.topic_prefix = "bad/prefix";
  assert_int_equal(sk_bus_new(&loop, &o, &b, err, sizeof err), SK_ECONFIG);
  assert_non_null(strstr(err, "topic_prefix"));
  assert_null(b);
  uv_run(&loop, UV_RUN_NOWAIT);
  sk_store_close(st);
  sk_test_loop_drain(&loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_publish_read),       cmocka_unit_test(test_transactions),
      cmocka_unit_test(test_retention_and_reopen), cmocka_unit_test(test_unsubscribe_inside),
      cmocka_unit_test(test_parsers),            cmocka_unit_test(test_kafka_config_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
