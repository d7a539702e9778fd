/* Fuzz target: what the event bus reads from the outside - event ids from
 * Last-Event-ID / ?since= (sk_bus_parse_event_id), Kafka properties from
 * the config (sk_bus_parse_kafka_prop), event types from ?type=
 * (sk_bus_valid_type) - and publishing arbitrary JSON text: accepted data
 * reads back as one line of JSON (what an SSE data: line needs). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "skiff/bus.h"
#include "skiff/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check_row(const sk_bus_event_t *ev, void *ud) {
  if (memchr(ev->data, '\n', ev->data_len) || memchr(ev->data, '\r', ev->data_len)) abort();
  if (ev->id <= 0) abort();
  ++*(int *)ud;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = 0;
  int64_t id = -1;
  if (sk_bus_parse_event_id(s, size, &id) == 0 && id < 0) abort();
  char name[129], value[1025], err[256];
  if (sk_bus_parse_kafka_prop(s, name, sizeof name, value, sizeof value, err, sizeof err) == 0) {
    if (!name[0] || strlen(name) > 128 || strlen(value) > 1024) abort();
    for (const char *p = value; *p; p++)
      if ((unsigned char)*p < 0x20) abort();
  }
  if (sk_bus_valid_type(s) && (strlen(s) > SK_BUS_TYPE_MAX || strchr(s, '\n') || strchr(s, ':'))) abort();
  static uv_loop_t loop;
  static sk_store_t *st;
  static sk_bus_t *bus;
  if (!bus) {
    uv_loop_init(&loop);
    sk_store_opts_t so = {.path = ":memory:", .non_durable = 1};
    if (sk_store_open(&so, &st) < 0) abort();
    sk_bus_opts_t bo = {.store = st, .max_events = 64};
    if (sk_bus_new(&loop, &bo, &bus, err, sizeof err) < 0) abort();
  }
  int64_t before = sk_bus_last_id(bus);
  int64_t got = sk_bus_publish(bus, "fuzz", s, s);
  if (got > 0) {
    int n = 0;
    if (sk_bus_read_since(bus, before, 0, check_row, &n) < 0 || n != 1) abort();
    (void)sk_bus_prune(bus, 0);
  }
  free(s);
  return 0;
}
