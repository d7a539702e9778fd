/* bus_kafka.c - the bus's Kafka producer (librdkafka): topic per event
 * type, idempotent, polled from the libuv loop through the main queue's
 * io-event fd, delivery reports advancing a persisted delivered cursor. */
#include <fcntl.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus_int.h"
#include "skiff/err.h"

typedef struct inflight {
  int64_t id;
  int done;
} inflight_t;

struct sk__bus_kafka {
  sk_bus_t *bus;
  rd_kafka_t *rk;
  rd_kafka_conf_t *conf_tmpl; /* kept to recreate the producer after a fatal error */
  char prefix[128];
  int pipefd[2];
  uv_poll_t poll;
  int poll_on;
  int64_t produced;    /* last id handed to librdkafka (in id order) */
  int64_t cursor;      /* every id <= cursor is confirmed */
  int64_t saved_cursor;
  inflight_t *ring;    /* ids handed over and not yet all confirmed, ascending */
  size_t head, n, cap;
  int64_t *retry;      /* failed deliveries to produce again */
  size_t nretry, capretry;
  int64_t delivered, failed;
  int fatal;
  void (*on_error)(const char *msg, void *ud);
  void *on_error_ud;
  uint64_t error_seq, reported_seq; /* last_error changes, the last one handed to on_error */
  uint64_t error_interval_ms, reported_at;
  pthread_mutex_t lk;  /* last_error and error_seq are written from librdkafka threads */
  char last_error[256];
};

static void set_error(sk__bus_kafka_t *k, const char *msg) {
  pthread_mutex_lock(&k->lk);
  snprintf(k->last_error, sizeof k->last_error, "%s", msg);
  k->error_seq++;
  pthread_mutex_unlock(&k->lk);
}

/* Library code does not log: librdkafka's log lines are kept as the last
 * error (sk_bus_stats), for the daemon to report. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  sk__bus_kafka_t *k = rd_kafka_opaque(rk);
  if (!k || level > 4) return;
  char m[256];
  snprintf(m, sizeof m, "%s: %s", fac, buf);
  set_error(k, m);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  sk__bus_kafka_t *k = opaque;
  char m[256];
  snprintf(m, sizeof m, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
  set_error(k, m);
  if (err == RD_KAFKA_RESP_ERR__FATAL) k->fatal = 1;
  (void)rk;
}

static inflight_t *ring_at(sk__bus_kafka_t *k, size_t i) { return &k->ring[(k->head + i) % k->cap]; }

static void ring_push(sk__bus_kafka_t *k, int64_t id) {
  if (k->n == k->cap) {
    size_t nc = k->cap ? k->cap * 2 : 256;
    inflight_t *nr = sk_xcalloc(nc, sizeof *nr);
    for (size_t i = 0; i < k->n; i++) nr[i] = *ring_at(k, i);
    free(k->ring);
    k->ring = nr;
    k->head = 0;
    k->cap = nc;
  }
  *ring_at(k, k->n++) = (inflight_t){id, 0};
}

static inflight_t *ring_find(sk__bus_kafka_t *k, int64_t id) {
  size_t lo = 0, hi = k->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    inflight_t *e = ring_at(k, mid);
    if (e->id == id) return e;
    if (e->id < id) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static void advance(sk__bus_kafka_t *k) {
  while (k->n && ring_at(k, 0)->done) {
    k->cursor = ring_at(k, 0)->id;
    k->head = (k->head + 1) % k->cap;
    k->n--;
  }
  if (!k->n && k->produced > k->cursor) k->cursor = k->produced;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  sk__bus_kafka_t *k = opaque;
  int64_t id = (int64_t)(intptr_t)m->_private;
  inflight_t *e = ring_find(k, id);
  if (m->err) {
    k->failed++;
    sk_counter_inc(k->bus->m_failed);
    char msg[256];
    snprintf(msg, sizeof msg, "delivery of event %" PRId64 " failed: %s", id, rd_kafka_err2str(m->err));
    set_error(k, msg);
    if (e && !e->done) {
      if (k->nretry == k->capretry) {
        k->capretry = k->capretry ? k->capretry * 2 : 64;
        k->retry = sk_xrealloc(k->retry, k->capretry * sizeof *k->retry);
      }
      k->retry[k->nretry++] = id;
    }
  } else {
    k->delivered++;
    sk_counter_inc(k->bus->m_delivered);
    if (e) e->done = 1;
    advance(k);
  }
  (void)rk;
}

static void serve(sk__bus_kafka_t *k) {
  if (k->rk) rd_kafka_poll(k->rk, 0);
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  sk__bus_kafka_t *k = p->data;
  char buf[64];
  while (read(k->pipefd[0], buf, sizeof buf) > 0) {}
  serve(k);
  if (k->nretry || k->produced < k->bus->dispatched) sk__bus_kafka_pump(k->bus);
  (void)status;
  (void)events;
}

/* 0 handed over, 1 queue full (try later), < 0 failed for good. */
static int produce(sk__bus_kafka_t *k, const sk_bus_event_t *ev) {
  char topic[256], idh[24], tsh[24];
  snprintf(topic, sizeof topic, "%s%s", k->prefix, ev->type);
  snprintf(idh, sizeof idh, "%" PRId64, ev->id);
  snprintf(tsh, sizeof tsh, "%" PRId64, ev->time_ms);
  size_t kl = strlen(ev->key);
  rd_kafka_resp_err_t err = rd_kafka_producev(
      k->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(kl ? ev->key : NULL, kl), RD_KAFKA_V_VALUE((void *)ev->data, ev->data_len),
      RD_KAFKA_V_HEADER("skiff-event-id", idh, -1), RD_KAFKA_V_HEADER("skiff-event-time", tsh, -1),
      RD_KAFKA_V_OPAQUE((void *)(intptr_t)ev->id), RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return 1;
  if (err) {
    char msg[256];
    snprintf(msg, sizeof msg, "event %" PRId64 " not producible, kept in the local log only: %s", ev->id,
             rd_kafka_err2str(err));
    set_error(k, msg);
    return SK_EIO;
  }
  return 0;
}

static int pump_row(const sk_bus_event_t *ev, void *ud) {
  sk__bus_kafka_t *k = ud;
  int rc = produce(k, ev);
  if (rc == 1) return 1;
  ring_push(k, ev->id);
  k->produced = ev->id;
  if (rc < 0) { /* a permanent error (e.g. too large for the broker): skip it, counted as failed */
    k->failed++;
    sk_counter_inc(k->bus->m_failed);
    ring_at(k, k->n - 1)->done = 1;
    advance(k);
  }
  return 0;
}

typedef struct retry_ctx {
  sk__bus_kafka_t *k;
  int rc;
} retry_ctx_t;

static int retry_row(const sk_bus_event_t *ev, void *ud) {
  retry_ctx_t *c = ud;
  c->rc = produce(c->k, ev);
  return 0;
}

void sk__bus_kafka_pump(sk_bus_t *b) {
  sk__bus_kafka_t *k = b->kafka;
  if (!k || !k->rk || k->fatal) return;
  while (k->nretry) {
    int64_t id = k->retry[0];
    retry_ctx_t c = {k, 0};
    int n = sk__bus_read_range(b, id - 1, id, 1, retry_row, &c);
    if (n == 1 && c.rc == 1) return; /* queue full: later */
    if (n != 1 || c.rc < 0) {       /* gone or unproducible: give up on it */
      inflight_t *e = ring_find(k, id);
      if (e) e->done = 1;
      advance(k);
    }
    memmove(k->retry, k->retry + 1, (k->nretry - 1) * sizeof *k->retry);
    k->nretry--;
  }
  int rc;
  /* Only what fan-out has seen: that is committed. */
  while ((rc = sk__bus_read_range(b, k->produced, b->dispatched, 256, pump_row, k)) == 256) {}
}

static void save_cursor(sk__bus_kafka_t *k) {
  if (k->cursor == k->saved_cursor) return;
  if (sk_store_exec(k->bus->store, "INSERT OR REPLACE INTO sk_bus_state(name, value) VALUES ('kafka_cursor', ?1)",
                    SK_SQL_ARGS(SK_SQL_INT(k->cursor))) >= 0)
    k->saved_cursor = k->cursor;
}

static int make_producer(sk__bus_kafka_t *k, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_dup(k->conf_tmpl);
  rd_kafka_conf_set_opaque(conf, k);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  rd_kafka_conf_set_log_cb(conf, log_cb);
  char e[512];
  k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e);
  if (!k->rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "kafka: %s", e);
    return SK_ECONFIG;
  }
  rd_kafka_queue_t *q = rd_kafka_queue_get_main(k->rk);
  rd_kafka_queue_io_event_enable(q, k->pipefd[1], "1", 1);
  rd_kafka_queue_destroy(q);
  return 0;
}

int sk__bus_kafka_new(sk_bus_t *b, const sk_bus_kafka_opts_t *o, char *err, size_t errlen) {
  sk__bus_kafka_t *k = sk_xcalloc(1, sizeof *k);
  int rc = SK_ECONFIG;
  k->bus = b;
  k->on_error = o->on_error;
  k->on_error_ud = o->on_error_ud;
  k->error_interval_ms = o->error_interval_ms ? o->error_interval_ms : 10000;
  k->pipefd[0] = k->pipefd[1] = -1;
  pthread_mutex_init(&k->lk, NULL);
  const char *prefix = o->topic_prefix ? o->topic_prefix : "skiff.";
  if (strlen(prefix) > 100 || (*prefix && !sk_bus_valid_type(prefix))) {
    snprintf(err, errlen, "kafka.topic_prefix '%.100s': up to 100 of [A-Za-z0-9._-]", prefix);
    goto fail;
  }
  snprintf(k->prefix, sizeof k->prefix, "%s", prefix);
  if (o->nprops > SK_BUS_KAFKA_PROPS_MAX) {
    snprintf(err, errlen, "kafka: at most %d properties", SK_BUS_KAFKA_PROPS_MAX);
    goto fail;
  }
  k->conf_tmpl = rd_kafka_conf_new();
  char e[512];
  struct {
    const char *n, *v;
  } base[] = {{"bootstrap.servers", o->brokers}, {"enable.idempotence", "true"}, {"acks", "all"},
              {"client.id", "skiff"},            {"linger.ms", "5"}};
  for (size_t i = 0; i < sizeof base / sizeof *base; i++) {
    if (rd_kafka_conf_set(k->conf_tmpl, base[i].n, base[i].v, e, sizeof e) != RD_KAFKA_CONF_OK) {
      snprintf(err, errlen, "kafka: %s", e);
      goto fail;
    }
  }
  for (size_t i = 0; i < o->nprops; i++) {
    char name[129], value[1025];
    if (sk_bus_parse_kafka_prop(o->props[i], name, sizeof name, value, sizeof value, err, errlen) < 0) goto fail;
    if ((!strcmp(name, "enable.idempotence") && strcmp(value, "true")) ||
        (!strcmp(name, "acks") && strcmp(value, "all") && strcmp(value, "-1"))) {
      snprintf(err, errlen, "kafka property %s: the bus needs the idempotent producer (acks=all)", name);
      goto fail;
    }
    if (rd_kafka_conf_set(k->conf_tmpl, name, value, e, sizeof e) != RD_KAFKA_CONF_OK) {
      snprintf(err, errlen, "kafka property %s: %s", name, e);
      goto fail;
    }
  }
  if (pipe2(k->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
    snprintf(err, errlen, "kafka: pipe: %s", strerror(errno));
    rc = SK_EIO;
    goto fail;
  }
  if ((rc = make_producer(k, err, errlen)) < 0) goto fail;
  int64_t cur = 0;
  (void)sk_store_query_int64(b->store, "SELECT value FROM sk_bus_state WHERE name = 'kafka_cursor'", NULL, 0, &cur);
  /* Events pruned meanwhile cannot be sent: start at the oldest retained. */
  int64_t oldest = sk_bus_oldest_id(b);
  if (oldest && cur < oldest - 1) cur = oldest - 1;
  k->cursor = k->saved_cursor = k->produced = cur;
  uv_poll_init(b->loop, &k->poll, k->pipefd[0]);
  k->poll.data = k;
  k->poll_on = 1;
  b->handles_open++;
  uv_poll_start(&k->poll, UV_READABLE, poll_cb);
  b->kafka = k;
  return 0;
fail:
  if (k->rk) rd_kafka_destroy(k->rk);
  if (k->conf_tmpl) rd_kafka_conf_destroy(k->conf_tmpl);
  if (k->pipefd[0] >= 0) close(k->pipefd[0]);
  if (k->pipefd[1] >= 0) close(k->pipefd[1]);
  pthread_mutex_destroy(&k->lk);
  free(k);
  return rc;
}

void sk__bus_kafka_tick(sk_bus_t *b) {
  sk__bus_kafka_t *k = b->kafka;
  if (!k) return;
  serve(k);
  if (k->fatal) {
    /* A fatal idempotence error: a new producer, everything above the
     * cursor again (duplicates of unconfirmed events are possible here). */
    char e[256];
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    k->n = k->head = 0;
    k->nretry = 0;
    k->produced = k->cursor;
    k->fatal = 0;
    if (make_producer(k, e, sizeof e) < 0) set_error(k, e);
  }
  sk__bus_kafka_pump(b);
  save_cursor(k);
  sk_gauge_set(b->m_pending, (double)(sk_bus_last_id(b) - k->cursor));
  uint64_t now = uv_now(b->loop);
  if (k->on_error && (!k->reported_at || now - k->reported_at >= k->error_interval_ms)) {
    char msg[256] = "";
    pthread_mutex_lock(&k->lk);
    int report = k->error_seq != k->reported_seq;
    if (report) snprintf(msg, sizeof msg, "%s", k->last_error);
    k->reported_seq = k->error_seq;
    pthread_mutex_unlock(&k->lk);
    if (report) {
      k->reported_at = now;
      k->on_error(msg, k->on_error_ud); /* the latest one */
    }
  }
}

int64_t sk__bus_kafka_cursor(const sk_bus_t *b) { return b->kafka ? b->kafka->cursor : -1; }

void sk__bus_kafka_stats(sk_bus_t *b, sk_bus_stats_t *out) {
  sk__bus_kafka_t *k = b->kafka;
  out->kafka_enabled = 1;
  out->kafka_delivered = k->delivered;
  out->kafka_failed = k->failed;
  out->kafka_cursor = k->cursor;
  out->kafka_inflight = (int64_t)k->n;
  pthread_mutex_lock(&k->lk);
  snprintf(out->kafka_last_error, sizeof out->kafka_last_error, "%s", k->last_error);
  pthread_mutex_unlock(&k->lk);
}

static void poll_closed(uv_handle_t *h) {
  sk__bus_kafka_t *k = h->data;
  sk_bus_t *b = k->bus;
  close(k->pipefd[0]);
  close(k->pipefd[1]);
  pthread_mutex_destroy(&k->lk);
  free(k);
  sk__bus_handle_closed(b);
}

void sk__bus_kafka_free(sk_bus_t *b, uint64_t flush_ms) {
  sk__bus_kafka_t *k = b->kafka;
  if (!k) return;
  if (k->rk) {
    if (flush_ms) {
      sk__bus_kafka_pump(b);
      rd_kafka_flush(k->rk, (int)(flush_ms > 600000 ? 600000 : flush_ms)); /* serves delivery reports */
    }
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(k->rk, 0);
    save_cursor(k);
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
  }
  rd_kafka_conf_destroy(k->conf_tmpl);
  free(k->ring);
  free(k->retry);
  b->kafka = NULL;
  uv_poll_stop(&k->poll);
  uv_close((uv_handle_t *)&k->poll, poll_closed);
}
