/* skiff-telemetry: export to Kafka (librdkafka).
 *
 * What was stored and acknowledged here is also produced to Kafka, one
 * message per accepted OTLP request, as the encoded
 * Export<Signal>ServiceRequest (the protobuf body as received, or the JSON
 * body re-encoded), to a topic per signal (kafka.topics; "" = that signal is
 * not exported). Messages have no key (librdkafka's partitioner spreads
 * them) and carry the header content-type: application/x-protobuf.
 *
 * The producer is idempotent with acks=all. It is served from the libuv
 * loop: librdkafka signals its main queue through a pipe (io-event), the
 * loop polls it and runs the delivery reports, errors and log lines there;
 * a 1s timer polls as well (and replaces the producer after a fatal
 * idempotence error).
 *
 * Bounds: bytes handed to librdkafka and not yet confirmed are counted; a
 * message that would take that past max_queue_bytes is dropped (reason
 * "queue_full"). librdkafka retries a message until max_retry_time
 * (message.timeout.ms) has passed, then its delivery report fails and it is
 * dropped ("delivery_failed"). A message larger than message.max.bytes is
 * dropped at once ("too_large"). Dropped data is still in this instance's
 * stores. */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "skiff/bus.h"
#include "skiff/err.h"
#include "tl_int.h"

static const char *const kf_sig_names[TL_FWD_SIG_N] = {"traces", "metrics", "logs"};

enum { KF_DROP_QUEUE_FULL, KF_DROP_TOO_LARGE, KF_DROP_DELIVERY, KF_DROP_N };
static const char *const kf_drop_reasons[KF_DROP_N] = {"queue_full", "too_large", "delivery_failed"};

#define KF_LOG_INTERVAL_MS 10000

struct tl_kafka {
  uv_loop_t *loop;
  sk_logger_t *log;
  const tl_kafka_cfg_t *cfg;
  rd_kafka_t *rk;
  int pipefd[2];
  uv_poll_t poll;
  uv_timer_t tick;
  int open_handles;
  int fatal;
  const char *topic[TL_FWD_SIG_N]; /* NULL = not exported */
  size_t queued_bytes;             /* handed over, no delivery report yet */
  uint64_t logged_at;
  size_t suppressed;               /* log lines not written (rate limit) */
  sk_counter_t *sent[TL_FWD_SIG_N], *failed[TL_FWD_SIG_N];
  sk_counter_t *dropped[TL_FWD_SIG_N][KF_DROP_N];
  sk_gauge_t *g_queued;
};

static int valid_topic(const char *s) {
  size_t n = strlen(s);
  if (n > 249 || !strcmp(s, ".") || !strcmp(s, "..")) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return 0;
  }
  return 1;
}

int tl_kafka_check_topic(const void *field, char *msg, size_t msglen) {
  const char *s = *(char *const *)field;
  if (!s || !*s || valid_topic(s)) return 0;
  snprintf(msg, msglen, "bad topic name \"%.64s\": up to 249 of [A-Za-z0-9._-] (\"\" = do not export)", s);
  return SK_EINVAL;
}

/* Applies one "name=value" property to conf (NULL: a scratch conf, to
 * check it). The producer must stay idempotent with acks=all. */
static int apply_prop(rd_kafka_conf_t *conf, const char *prop, char *msg, size_t msglen) {
  char name[129], value[1025], e[512];
  int rc = sk_bus_parse_kafka_prop(prop, name, sizeof name, value, sizeof value, msg, msglen);
  if (rc < 0) return rc;
  if ((!strcmp(name, "enable.idempotence") && strcmp(value, "true")) ||
      (!strcmp(name, "acks") && strcmp(value, "all") && strcmp(value, "-1"))) {
    snprintf(msg, msglen, "%s: the exporter keeps the idempotent producer (enable.idempotence=true, acks=all)",
             name);
    return SK_EINVAL;
  }
  rd_kafka_conf_t *c = conf ? conf : rd_kafka_conf_new();
  rc = rd_kafka_conf_set(c, name, value, e, sizeof e) == RD_KAFKA_CONF_OK ? 0 : SK_EINVAL;
  if (rc < 0) {
    int n = snprintf(msg, msglen, "%s: %s", name, e);
    if (n >= 0 && (size_t)n >= msglen && msglen > 3) memcpy(msg + msglen - 4, "...", 4); /* message: cut visibly */
  }
  if (!conf) rd_kafka_conf_destroy(c);
  return rc;
}

int tl_kafka_check_properties(const void *field, char *msg, size_t msglen) {
  const sk_cfg_strlist_t *l = field;
  for (size_t i = 0; i < l->n; i++) {
    char m[600];
    if (apply_prop(NULL, l->v[i], m, sizeof m) < 0) {
      snprintf(msg, msglen, "[%zu]: %s", i, m);
      return SK_EINVAL;
    }
  }
  return 0;
}

int tl_kafka_wants(const tl_kafka_t *k, int sig) {
  return k && sig >= 0 && sig < TL_FWD_SIG_N && k->topic[sig] != NULL;
}

/* Rate-limited warning (librdkafka repeats itself while a broker is away). */
static void kf_warn(tl_kafka_t *k, const char *what, const char *text) {
  if (!k->log) return;
  uint64_t now = uv_now(k->loop);
  if (k->logged_at && now - k->logged_at < KF_LOG_INTERVAL_MS) {
    k->suppressed++;
    return;
  }
  if (k->suppressed)
    sk_log_warn(k->log, "kafka %s: %s (%zu similar messages suppressed)", what, text, k->suppressed);
  else sk_log_warn(k->log, "kafka %s: %s", what, text);
  k->logged_at = now;
  k->suppressed = 0;
}

/* The opaque of a message: its signal and item count. */
static void *pack_opaque(int sig, size_t items) { return (void *)(((uintptr_t)items << 2) | (uintptr_t)sig); }

static void drop(tl_kafka_t *k, int sig, int reason, size_t items) {
  sk_counter_add(k->dropped[sig][reason], (double)(items ? items : 1));
}

/* Delivery reports, errors and log lines: all run on the loop thread from
 * rd_kafka_poll. */
static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  tl_kafka_t *k = opaque;
  uintptr_t o = (uintptr_t)m->_private;
  int sig = (int)(o & 3);
  size_t items = (size_t)(o >> 2);
  (void)rk;
  if (sig >= TL_FWD_SIG_N) return;
  k->queued_bytes = k->queued_bytes >= m->len ? k->queued_bytes - m->len : 0;
  sk_gauge_set(k->g_queued, (double)k->queued_bytes);
  if (!m->err) {
    sk_counter_add(k->sent[sig], (double)items);
    return;
  }
  sk_counter_inc(k->failed[sig]);
  /* the broker's limit can be lower than the producer's */
  drop(k, sig, m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? KF_DROP_TOO_LARGE : KF_DROP_DELIVERY, items);
  char t[300];
  snprintf(t, sizeof t, "%s message of %zu items to %s not delivered, dropped: %s", kf_sig_names[sig], items,
           k->topic[sig] ? k->topic[sig] : "?", rd_kafka_err2str(m->err));
  kf_warn(k, "delivery", t);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  tl_kafka_t *k = opaque;
  char t[300];
  snprintf(t, sizeof t, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char fe[256];
    rd_kafka_resp_err_t f = rd_kafka_fatal_error(rk, fe, sizeof fe);
    snprintf(t, sizeof t, "fatal %s: %s", rd_kafka_err2name(f), fe);
    k->fatal = 1;
    if (k->log) sk_log_error(k->log, "kafka producer: %s (the producer is recreated)", t);
    return;
  }
  kf_warn(k, "producer", t);
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  tl_kafka_t *k = rd_kafka_opaque(rk);
  if (!k || level > 4) return;
  char t[300];
  snprintf(t, sizeof t, "%s: %s", fac, buf);
  kf_warn(k, "log", t);
}

static void serve(tl_kafka_t *k) {
  if (k->rk) rd_kafka_poll(k->rk, 0);
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  tl_kafka_t *k = p->data;
  char buf[64];
  while (read(k->pipefd[0], buf, sizeof buf) > 0) {}
  serve(k);
  (void)status;
  (void)events;
}

static int make_producer(tl_kafka_t *k, char *err, size_t errlen);

static void tick_cb(uv_timer_t *t) {
  tl_kafka_t *k = t->data;
  serve(k);
  if (k->fatal && k->rk) {
    /* A fatal idempotence error: what is queued is reported failed (and
     * counted dropped) by the purge, then a fresh producer takes over. */
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(k->rk, 0);
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
    k->fatal = 0;
    k->queued_bytes = 0;
    sk_gauge_set(k->g_queued, 0);
    char e[512];
    if (make_producer(k, e, sizeof e) < 0 && k->log) sk_log_error(k->log, "kafka producer: %s", e);
  }
}

static int make_producer(tl_kafka_t *k, char *err, size_t errlen) {
  const tl_kafka_cfg_t *c = k->cfg;
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  char e[512], tmo[32], qkb[32];
  uint64_t to = c->max_retry_time_ms ? c->max_retry_time_ms : 300000;
  if (to > 2147483647ull) to = 2147483647ull;
  snprintf(tmo, sizeof tmo, "%llu", (unsigned long long)to);
  /* librdkafka's own bound stays above ours: ours decides what is dropped */
  uint64_t kb = c->max_queue_bytes / 1024 + 1024;
  if (kb > 2147483647ull) kb = 2147483647ull;
  snprintf(qkb, sizeof qkb, "%llu", (unsigned long long)kb);
  struct {
    const char *n, *v;
  } base[] = {{"bootstrap.servers", c->brokers},
              {"enable.idempotence", "true"},
              {"acks", "all"},
              {"client.id", "skiff-telemetry"},
              {"linger.ms", "5"},
              {"message.timeout.ms", tmo},
              {"queue.buffering.max.kbytes", qkb},
              {"queue.buffering.max.messages", "1000000"},
              {"log.queue", "true"}};
  for (size_t i = 0; i < sizeof base / sizeof *base; i++) {
    if (rd_kafka_conf_set(conf, base[i].n, base[i].v, e, sizeof e) != RD_KAFKA_CONF_OK) {
      snprintf(err, errlen, "kafka %s: %s", base[i].n, e);
      rd_kafka_conf_destroy(conf);
      return SK_ECONFIG;
    }
  }
  for (size_t i = 0; i < c->properties.n; i++) {
    char m[600];
    if (apply_prop(conf, c->properties.v[i], m, sizeof m) < 0) {
      snprintf(err, errlen, "kafka.properties[%zu]: %s", i, m);
      rd_kafka_conf_destroy(conf);
      return SK_ECONFIG;
    }
  }
  rd_kafka_conf_set_opaque(conf, k);
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  rd_kafka_conf_set_log_cb(conf, log_cb);
  k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof e); /* takes conf on success */
  if (!k->rk) {
    rd_kafka_conf_destroy(conf);
    snprintf(err, errlen, "kafka: %s", e);
    return SK_ECONFIG;
  }
  rd_kafka_set_log_queue(k->rk, NULL); /* log lines on the main queue: served by the loop */
  rd_kafka_queue_t *q = rd_kafka_queue_get_main(k->rk);
  rd_kafka_queue_io_event_enable(q, k->pipefd[1], "1", 1);
  rd_kafka_queue_destroy(q);
  return 0;
}

void tl_kafka_push(tl_kafka_t *k, int sig, const uint8_t *data, size_t len, size_t items) {
  if (!tl_kafka_wants(k, sig) || !len || !k->rk) return;
  if (k->queued_bytes + len > k->cfg->max_queue_bytes) {
    drop(k, sig, KF_DROP_QUEUE_FULL, items);
    return;
  }
  rd_kafka_resp_err_t err = rd_kafka_producev(
      k->rk, RD_KAFKA_V_TOPIC(k->topic[sig]), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_VALUE((void *)data, len), RD_KAFKA_V_HEADER("content-type", "application/x-protobuf", -1),
      RD_KAFKA_V_OPAQUE(pack_opaque(sig, items)), RD_KAFKA_V_END);
  if (err) {
    int reason = err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? KF_DROP_TOO_LARGE
                 : err == RD_KAFKA_RESP_ERR__QUEUE_FULL       ? KF_DROP_QUEUE_FULL
                                                              : KF_DROP_DELIVERY;
    drop(k, sig, reason, items);
    char t[300];
    snprintf(t, sizeof t, "%s message of %zu bytes not produced to %s, dropped: %s", kf_sig_names[sig], len,
             k->topic[sig], rd_kafka_err2str(err));
    kf_warn(k, "produce", t);
    return;
  }
  k->queued_bytes += len;
  sk_gauge_set(k->g_queued, (double)k->queued_bytes);
}

static int metrics_init(tl_kafka_t *k, sk_metrics_t *reg) {
  static const char *const l1[] = {"signal"}, *const l2[] = {"signal", "reason"};
  sk_mfamily_t *sent, *failed, *dropped;
  int rc;
  if ((rc = sk_metrics_counter_family(reg, "skiff_telemetry_kafka_sent_total",
                                      "Items (spans, samples, log lines) produced to Kafka and acknowledged "
                                      "(acks=all).",
                                      l1, 1, &sent)) < 0 ||
      (rc = sk_metrics_counter_family(reg, "skiff_telemetry_kafka_failed_total",
                                      "Kafka messages whose delivery report carried an error.", l1, 1, &failed)) < 0 ||
      (rc = sk_metrics_counter_family(reg, "skiff_telemetry_kafka_dropped_total",
                                      "Items not exported to Kafka, by reason (queue_full, too_large, "
                                      "delivery_failed); they stay in the local stores.",
                                      l2, 2, &dropped)) < 0 ||
      (rc = sk_metrics_gauge(reg, "skiff_telemetry_kafka_queue_bytes",
                             "Encoded OTLP bytes handed to the Kafka producer and not yet confirmed.",
                             &k->g_queued)) < 0)
    return rc;
  for (int s = 0; s < TL_FWD_SIG_N; s++) {
    if (!k->topic[s]) continue;
    const char *v[] = {kf_sig_names[s], NULL};
    if ((rc = sk_counter_with(sent, v, &k->sent[s])) < 0) return rc;
    if ((rc = sk_counter_with(failed, v, &k->failed[s])) < 0) return rc;
    for (int r = 0; r < KF_DROP_N; r++) {
      v[1] = kf_drop_reasons[r];
      if ((rc = sk_counter_with(dropped, v, &k->dropped[s][r])) < 0) return rc;
    }
  }
  return 0;
}

static void handle_closed(uv_handle_t *h) {
  tl_kafka_t *k = h->data;
  if (--k->open_handles) return;
  close(k->pipefd[0]);
  close(k->pipefd[1]);
  free(k);
}

int tl_kafka_new(uv_loop_t *loop, const tl_kafka_cfg_t *cfg, sk_metrics_t *reg, sk_logger_t *log, tl_kafka_t **out,
                 char *err, size_t errlen) {
  *out = NULL;
  if (!cfg || !cfg->brokers || !*cfg->brokers) return 0;
  tl_kafka_t *k = sk_xcalloc(1, sizeof *k);
  int rc;
  k->loop = loop;
  k->log = log;
  k->cfg = cfg;
  k->pipefd[0] = k->pipefd[1] = -1;
  const char *topics[TL_FWD_SIG_N] = {cfg->topics.traces, cfg->topics.metrics, cfg->topics.logs};
  for (int s = 0; s < TL_FWD_SIG_N; s++) {
    if (topics[s] && *topics[s] && !valid_topic(topics[s])) {
      snprintf(err, errlen, "kafka.topics.%s: bad topic name \"%.64s\"", kf_sig_names[s], topics[s]);
      rc = SK_ECONFIG;
      goto fail;
    }
    k->topic[s] = topics[s] && *topics[s] ? topics[s] : NULL;
  }
  if (reg && (rc = metrics_init(k, reg)) < 0) {
    snprintf(err, errlen, "kafka metrics: %s", sk_strerror(rc));
    goto fail;
  }
  if (pipe2(k->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
    rc = sk_err_from_errno(errno);
    snprintf(err, errlen, "kafka: pipe: %s", sk_strerror(rc));
    goto fail;
  }
  if ((rc = make_producer(k, err, errlen)) < 0) goto fail;
  uv_poll_init(loop, &k->poll, k->pipefd[0]);
  k->poll.data = k;
  uv_poll_start(&k->poll, UV_READABLE, poll_cb);
  uv_timer_init(loop, &k->tick);
  k->tick.data = k;
  uv_timer_start(&k->tick, tick_cb, 1000, 1000);
  k->open_handles = 2;
  *out = k;
  return 0;
fail:
  if (k->pipefd[0] >= 0) close(k->pipefd[0]);
  if (k->pipefd[1] >= 0) close(k->pipefd[1]);
  free(k);
  return rc;
}

void tl_kafka_free(tl_kafka_t *k) {
  if (!k) return;
  if (k->rk) {
    uint64_t ms = k->cfg->flush_timeout_ms;
    if (ms) rd_kafka_flush(k->rk, (int)(ms > 600000 ? 600000 : ms)); /* serves delivery reports */
    rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(k->rk, 0);
    if (k->queued_bytes && k->log)
      sk_log_warn(k->log, "kafka: %zu bytes not confirmed at shutdown (kept in the local stores only)",
                  k->queued_bytes);
    rd_kafka_destroy(k->rk);
    k->rk = NULL;
  }
  uv_poll_stop(&k->poll);
  uv_timer_stop(&k->tick);
  uv_close((uv_handle_t *)&k->poll, handle_closed);
  uv_close((uv_handle_t *)&k->tick, handle_closed);
}
