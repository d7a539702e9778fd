/* skiff/bus.h - the platform event bus.
 *
 * Every event is {id, time, type, key, data}: id a monotonic integer
 * assigned by the bus, time in unix milliseconds, type a short name
 * ("resource", "audit"), key the partitioning key ("Route/default/web"),
 * data one JSON value (stored compact).
 *
 * The local log is the source of truth: sk_bus_publish() inserts the event
 * into the table sk_bus_events of the sk_store it was given, on that
 * store's connection. Called inside the caller's sk_store_tx() the event
 * commits or rolls back with the caller's change. Live delivery
 * (subscribers, SSE streams, Kafka) reads committed rows only: when the
 * connection is inside a transaction, dispatch runs on the next loop turn.
 *
 * Kafka (optional, librdkafka): every event is also produced to the topic
 * <topic_prefix><type> ("skiff.resource") with the event key as message
 * key, data as value and headers skiff-event-id / skiff-event-time. The
 * producer is idempotent (enable.idempotence=true, acks=all), polled from
 * the libuv loop (the main queue's io-event fd). Delivery reports advance a
 * delivered cursor (all ids <= cursor are confirmed by the brokers), kept
 * in sk_bus_state; after a restart everything above the cursor is produced
 * again, so an event the bus acknowledged is never lost (at least once
 * across restarts, exactly once within one producer session). Retention
 * never prunes an event above the cursor.
 *
 * One bus per store, used from the thread that runs its loop. */
#ifndef SKIFF_BUS_H
#define SKIFF_BUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "skiff/http.h"
#include "skiff/metrics.h"
#include "skiff/store.h"

#define SK_BUS_TYPE_MAX 64       /* [A-Za-z0-9._-]{1,64}: also a Kafka topic suffix */
#define SK_BUS_KEY_MAX 1024
#define SK_BUS_DATA_MAX (1u << 20)
#define SK_BUS_KAFKA_PROPS_MAX 64

typedef struct sk_bus sk_bus_t;

typedef struct sk_bus_event {
  int64_t id;
  int64_t time_ms;
  const char *type;
  const char *key;  /* "" when none */
  const char *data; /* compact JSON text */
  size_t data_len;
} sk_bus_event_t;

typedef struct sk_bus_kafka_opts {
  const char *brokers;       /* bootstrap.servers; NULL/"" = no Kafka */
  const char *topic_prefix;  /* default "skiff." */
  /* Extra librdkafka properties, "name=value" each (see
   * sk_bus_parse_kafka_prop); they may not turn idempotence off. */
  const char *const *props;
  size_t nprops;
  /* Optional: called from the loop with the latest error or warning from
   * librdkafka or a failed delivery, at most once per error_interval_ms
   * (default 10 s), for the daemon to log (the library does not). */
  void (*on_error)(const char *msg, void *ud);
  void *on_error_ud;
  uint64_t error_interval_ms;
} sk_bus_kafka_opts_t;

typedef struct sk_bus_opts {
  sk_store_t *store;       /* required; the bus creates its tables there */
  int64_t max_events;      /* retention by count; default 100000 */
  int64_t max_age_ms;      /* retention by age; default 7 days; < 0 = count only */
  sk_bus_kafka_opts_t kafka;
  sk_metrics_t *metrics;   /* may be NULL: skiff_bus_* families */
  uint64_t tick_ms;        /* housekeeping (cursor save, retention, SSE heartbeats); default 1000 */
  /* An SSE stream whose response holds this many bytes its reader has not
   * taken (sk_http_resp_queued) is ended instead of growing without
   * bound; the reader resumes with Last-Event-ID. Default 1 MiB. */
  size_t sse_max_queued;
} sk_bus_opts_t;

/* Opens the local log (creating the tables) and, with kafka.brokers set,
 * the producer; events above the saved delivered cursor are queued for
 * Kafka again. SK_ECONFIG with the reason in err for a bad Kafka setting. */
int sk_bus_new(uv_loop_t *loop, const sk_bus_opts_t *o, sk_bus_t **out, char *err, size_t errlen);
/* Ends SSE streams, flushes the producer for up to flush_ms, saves the
 * cursor and frees once the loop has closed the handles. Accepts NULL. */
void sk_bus_free(sk_bus_t *b, uint64_t flush_ms);

/* Publishes one event; data is JSON text (validated, bounded by
 * SK_BUS_DATA_MAX, stored compact). Returns the id (> 0) or SK_EINVAL (bad
 * type, key or JSON), SK_ELIMIT, SK_ESTORE. */
int64_t sk_bus_publish(sk_bus_t *b, const char *type, const char *key, const char *data);
int64_t sk_bus_publish_json(sk_bus_t *b, const char *type, const char *key, const json_t *data);

/* Runs pending dispatch now (when the store is outside a transaction).
 * Normally not needed: dispatch is immediate or on the next loop turn. */
void sk_bus_flush(sk_bus_t *b);

/* Committed events with id > after, oldest first, at most max (0 = all).
 * fn returns 0 to go on, > 0 to stop (returned), < 0 to fail (returned).
 * SK_ERANGE when events after `after` were already pruned (after > 0 and
 * after < oldest retained id - 1). Returns the number of events read. */
typedef int (*sk_bus_event_fn)(const sk_bus_event_t *ev, void *ud);
int sk_bus_read_since(sk_bus_t *b, int64_t after, size_t max, sk_bus_event_fn fn, void *ud);
/* The newest retained event of type: fn runs once for it. Returns 1 when
 * found, 0 when there is none. */
int sk_bus_last_of_type(sk_bus_t *b, const char *type, sk_bus_event_fn fn, void *ud);
/* Highest id committed (0 when empty) and oldest retained (0 when empty). */
int64_t sk_bus_last_id(sk_bus_t *b);
int64_t sk_bus_oldest_id(sk_bus_t *b);

/* Live delivery: fn runs for every committed event after subscribing, in
 * id order, from the loop. The return value of fn is ignored. */
typedef struct sk_bus_sub sk_bus_sub_t;
int sk_bus_subscribe(sk_bus_t *b, sk_bus_event_fn fn, void *ud, sk_bus_sub_t **out);
void sk_bus_unsubscribe(sk_bus_sub_t *s); /* accepts NULL; allowed from inside fn */

/* Deletes events beyond max_events or older than max_age_ms (never those
 * Kafka has not confirmed). Returns the number deleted. Runs every tick. */
int sk_bus_prune(sk_bus_t *b, int64_t now_ms);

typedef struct sk_bus_stats {
  int64_t published;
  int64_t kafka_delivered;   /* delivery reports without error */
  int64_t kafka_failed;      /* delivery reports with an error (the event is produced again) */
  int64_t kafka_cursor;      /* every id <= cursor is confirmed */
  int64_t kafka_inflight;    /* handed to librdkafka, not yet confirmed */
  int kafka_enabled;
  char kafka_last_error[256]; /* last error/log line from librdkafka, "" if none */
} sk_bus_stats_t;
void sk_bus_stats(sk_bus_t *b, sk_bus_stats_t *out);

/* ---- server-sent events ----
 *
 * sk_bus_sse_serve() answers req with text/event-stream: for each event
 * "id: <id>\nevent: <type>\ndata: <json>\n\n". It resumes after the
 * Last-Event-ID header, else after ?since=<id> (since=0: from the oldest
 * retained event), else starts with the next event. A resume point older
 * than the retention, or ahead of the log (reset, or another log), gets
 * 410 (the gap is named), a malformed one 400. A
 * comment line ": keepalive" goes out every heartbeat. The stream ends when
 * the client leaves, on sk_bus_sse_end_all() (drain) or sk_bus_free(). */
typedef int (*sk_bus_filter_fn)(const sk_bus_event_t *ev, void *ud); /* 1 = send */
typedef struct sk_bus_sse_opts {
  sk_bus_filter_fn filter; /* NULL = every event */
  void *filter_ud;         /* owned by the stream when filter_ud_free is set */
  void (*filter_ud_free)(void *ud);
  uint64_t heartbeat_ms;   /* default 15000; rounded to the bus tick */
  size_t max_streams;      /* 0 = 1024; beyond it 429 */
} sk_bus_sse_opts_t;
/* Always answers req (200 stream, 400, 410, 429 or 503 after end_all). */
int sk_bus_sse_serve(sk_bus_t *b, sk_http_req_t *req, const sk_bus_sse_opts_t *o);
size_t sk_bus_sse_count(const sk_bus_t *b);
/* Ends every stream and refuses new ones with 503 (drain). */
void sk_bus_sse_end_all(sk_bus_t *b);

/* ---- parsers of outside input (exported for the fuzzer) ---- */

/* An event id as sent in Last-Event-ID or ?since=: decimal digits only,
 * optional surrounding blanks, 0..INT64_MAX. SK_EINVAL otherwise. */
int sk_bus_parse_event_id(const char *s, size_t len, int64_t *out);
/* "name=value" (name [a-z0-9._-]{1,128}, value up to 1024 bytes, no control
 * characters). Copies into name/value (NUL-terminated). SK_EINVAL with a
 * message in err. */
int sk_bus_parse_kafka_prop(const char *s, char *name, size_t namelen, char *value, size_t valuelen, char *err,
                            size_t errlen);
/* 1 if type is a valid event type. */
int sk_bus_valid_type(const char *type);

#endif
