/* bus_int.h - internals shared by bus.c (local log, fan-out, SSE) and
 * bus_kafka.c (the librdkafka producer). */
#ifndef SKIFF_BUS_INT_H
#define SKIFF_BUS_INT_H

#include "skiff/bus.h"

typedef struct sk__bus_kafka sk__bus_kafka_t;
typedef struct sk__bus_sse sk__bus_sse_t;

struct sk_bus_sub {
  sk_bus_t *bus;
  sk_bus_event_fn fn;
  void *ud;
  int dead;
  sk_bus_sub_t *next;
};

struct sk_bus {
  uv_loop_t *loop;
  sk_store_t *store;
  int64_t max_events, max_age_ms;
  uint64_t tick_ms;
  uv_timer_t tick;
  uv_timer_t defer; /* dispatch on the next loop turn (store inside a transaction) */
  int defer_pending;
  int handles_open;
  int freeing;
  int64_t dispatched; /* last id fanned out to subscribers and SSE */
  int dispatching, again;
  sk_bus_sub_t *subs;
  int subs_dead;
  sk__bus_sse_t *sse;
  size_t nsse;
  int sse_closed;
  sk__bus_kafka_t *kafka;
  int64_t published;
  sk_counter_t *m_published;
  sk_gauge_t *m_sse;
  size_t sse_max_queued;   /* close a stream holding this many unsent bytes */
  sk_counter_t *m_sse_slow; /* streams closed for it */
  sk_counter_t *m_delivered, *m_failed;
  sk_gauge_t *m_pending;
};

/* bus.c */
/* Reads committed events with after < id <= upto (upto 0 = no bound), at most max. */
int sk__bus_read_range(sk_bus_t *b, int64_t after, int64_t upto, size_t max, sk_bus_event_fn fn, void *ud);
void sk__bus_handle_closed(sk_bus_t *b);

/* bus_kafka.c */
int sk__bus_kafka_new(sk_bus_t *b, const sk_bus_kafka_opts_t *o, char *err, size_t errlen);
/* Hands events to librdkafka (retries first, then ids above the last one
 * produced) until the queue is full or the log is exhausted. */
void sk__bus_kafka_pump(sk_bus_t *b);
/* Serves delivery reports, saves the cursor, restarts after a fatal error. */
void sk__bus_kafka_tick(sk_bus_t *b);
int64_t sk__bus_kafka_cursor(const sk_bus_t *b); /* -1 without Kafka */
void sk__bus_kafka_stats(sk_bus_t *b, sk_bus_stats_t *out);
/* Flushes for up to flush_ms, saves the cursor, destroys; closes the poll
 * handle (sk__bus_handle_closed runs when it is closed). */
void sk__bus_kafka_free(sk_bus_t *b, uint64_t flush_ms);

#endif
