/* bus.c - the platform event bus: the local log (an sqlite table), live
 * fan-out to subscribers and server-sent-event streams, retention. The
 * Kafka producer is in bus_kafka.c. See docs/runtime/bus.md. */
#include <ctype.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

static const char *const bus_schema[] = {
    "CREATE TABLE IF NOT EXISTS sk_bus_events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ts INTEGER NOT NULL," /* unix milliseconds */
    " type TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " data TEXT NOT NULL)", /* compact JSON */
    "CREATE INDEX IF NOT EXISTS sk_bus_events_ts ON sk_bus_events(ts)",
    "CREATE TABLE IF NOT EXISTS sk_bus_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------- parsers ---------------- */

int sk_bus_valid_type(const char *type) {
  if (!type || !*type) return 0;
  size_t n = 0;
  for (const char *p = type; *p; p++, n++) {
    unsigned char c = (unsigned char)*p;
    if (n >= SK_BUS_TYPE_MAX) return 0;
    if (!(isalnum(c) || c == '.' || c == '_' || c == '-')) return 0;
  }
  return 1;
}

int sk_bus_parse_event_id(const char *s, size_t len, int64_t *out) {
  size_t i = 0;
  while (i < len && (s[i] == ' ' || s[i] == '\t')) i++;
  while (len > i && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
  if (i >= len || len - i > 19) return SK_EINVAL;
  uint64_t v = 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return SK_EINVAL;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (v > (uint64_t)INT64_MAX) return SK_EINVAL;
  *out = (int64_t)v;
  return 0;
}

int sk_bus_parse_kafka_prop(const char *s, char *name, size_t namelen, char *value, size_t valuelen, char *err,
                            size_t errlen) {
  const char *eq = s ? strchr(s, '=') : NULL;
  if (!eq) {
    snprintf(err, errlen, "kafka property '%.64s': expected name=value", s ? s : "");
    return SK_EINVAL;
  }
  size_t nl = (size_t)(eq - s), vl = strlen(eq + 1);
  if (nl == 0 || nl > 128 || nl >= namelen) {
    snprintf(err, errlen, "kafka property '%.64s': name must be 1..128 characters", s);
    return SK_EINVAL;
  }
  for (size_t i = 0; i < nl; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(islower(c) || isdigit(c) || c == '.' || c == '_' || c == '-')) {
      snprintf(err, errlen, "kafka property '%.*s': bad character at %zu in the name", (int)(nl > 64 ? 64 : nl), s,
               i + 1);
      return SK_EINVAL;
    }
  }
  if (vl > 1024 || vl >= valuelen) {
    snprintf(err, errlen, "kafka property '%.*s': value longer than 1024 bytes", (int)nl, s);
    return SK_EINVAL;
  }
  for (size_t i = 0; i < vl; i++) {
    unsigned char c = (unsigned char)eq[1 + i];
    if (c < 0x20 || c == 0x7f) {
      snprintf(err, errlen, "kafka property '%.*s': control character in the value", (int)nl, s);
      return SK_EINVAL;
    }
  }
  memcpy(name, s, nl);
  name[nl] = 0;
  memcpy(value, eq + 1, vl);
  value[vl] = 0;
  return 0;
}

/* ---------------- reading ---------------- */

typedef struct read_ctx {
  sk_bus_event_fn fn;
  void *ud;
} read_ctx_t;

static int read_row(sk_stmt_t *st, void *ud) {
  read_ctx_t *c = ud;
  size_t dl = 0;
  const char *data = sk_stmt_text(st, 4);
  dl = strlen(data);
  sk_bus_event_t ev = {.id = sk_stmt_int64(st, 0),
                       .time_ms = sk_stmt_int64(st, 1),
                       .type = sk_stmt_text(st, 2),
                       .key = sk_stmt_text(st, 3),
                       .data = data,
                       .data_len = dl};
  return c->fn(&ev, c->ud);
}

int sk__bus_read_range(sk_bus_t *b, int64_t after, int64_t upto, size_t max, sk_bus_event_fn fn, void *ud) {
  read_ctx_t c = {fn, ud};
  return sk_store_query(b->store,
                        "SELECT id, ts, type, key, data FROM sk_bus_events WHERE id > ?1 AND id <= ?2 "
                        "ORDER BY id LIMIT ?3",
                        SK_SQL_ARGS(SK_SQL_INT(after), SK_SQL_INT(upto > 0 ? upto : INT64_MAX),
                                    SK_SQL_INT(max ? (int64_t)max : -1)),
                        read_row, &c);
}

int sk_bus_last_of_type(sk_bus_t *b, const char *type, sk_bus_event_fn fn, void *ud) {
  read_ctx_t c = {fn, ud};
  int rc = sk_store_query(b->store,
                          "SELECT id, ts, type, key, data FROM sk_bus_events WHERE type = ?1 ORDER BY id DESC LIMIT 1",
                          SK_SQL_ARGS(SK_SQL_TEXT(type)), read_row, &c);
  return rc < 0 ? rc : rc > 0;
}

int64_t sk_bus_last_id(sk_bus_t *b) {
  int64_t v = 0;
  if (sk_store_query_int64(b->store, "SELECT seq FROM sqlite_sequence WHERE name = 'sk_bus_events'", NULL, 0, &v) < 0)
    return 0;
  return v;
}

int64_t sk_bus_oldest_id(sk_bus_t *b) {
  int64_t v = 0;
  if (sk_store_query_int64(b->store, "SELECT min(id) FROM sk_bus_events WHERE id IS NOT NULL", NULL, 0, &v) < 0)
    return 0;
  return v;
}

/* Ids after `after` were pruned? */
static int gap_after(sk_bus_t *b, int64_t after) {
  if (after <= 0) return 0;
  int64_t oldest = sk_bus_oldest_id(b);
  if (!oldest) oldest = sk_bus_last_id(b) + 1; /* everything pruned */
  return after < oldest - 1;
}

int sk_bus_read_since(sk_bus_t *b, int64_t after, size_t max, sk_bus_event_fn fn, void *ud) {
  if (!b || !fn || after < 0) return SK_EINVAL;
  if (gap_after(b, after)) return SK_ERANGE;
  return sk__bus_read_range(b, after, 0, max, fn, ud);
}

/* ---------------- fan-out ---------------- */

struct sk__bus_sse {
  sk_bus_t *bus;
  sk_http_req_t *req;
  sk_bus_filter_fn filter;
  void *filter_ud;
  void (*filter_ud_free)(void *ud);
  uint64_t heartbeat_ms;
  uint64_t last_write_ms;
  int64_t sent_id;
  sk__bus_sse_t *prev, *next;
};

static int sse_send(sk__bus_sse_t *s, const sk_bus_event_t *ev);
static void sse_end(sk__bus_sse_t *s);

static void sweep_subs(sk_bus_t *b) {
  sk_bus_sub_t **pp = &b->subs;
  while (*pp) {
    if ((*pp)->dead) {
      sk_bus_sub_t *d = *pp;
      *pp = d->next;
      free(d);
    } else {
      pp = &(*pp)->next;
    }
  }
  b->subs_dead = 0;
}

static int fanout_row(const sk_bus_event_t *ev, void *ud) {
  sk_bus_t *b = ud;
  for (sk_bus_sub_t *s = b->subs; s; s = s->next)
    if (!s->dead) (void)s->fn(ev, s->ud);
  for (sk__bus_sse_t *s = b->sse, *n; s; s = n) {
    n = s->next;
    if (ev->id > s->sent_id && sse_send(s, ev) == SK_ELIMIT) {
      sk_counter_inc(b->m_sse_slow);
      sse_end(s);
    }
  }
  b->dispatched = ev->id;
  return 0;
}

static int in_tx(sk_bus_t *b) { return !sqlite3_get_autocommit(sk_store_db(b->store)); }

static void defer_cb(uv_timer_t *t);

static void schedule(sk_bus_t *b) {
  if (b->defer_pending || b->freeing) return;
  b->defer_pending = 1;
  uv_timer_start(&b->defer, defer_cb, 0, 0);
}

static void dispatch(sk_bus_t *b) {
  if (in_tx(b)) {
    schedule(b);
    return;
  }
  if (b->dispatching) {
    b->again = 1;
    return;
  }
  b->dispatching = 1;
  do {
    b->again = 0;
    int rc;
    while ((rc = sk__bus_read_range(b, b->dispatched, 0, 256, fanout_row, b)) == 256) {}
  } while (b->again);
  b->dispatching = 0;
  if (b->subs_dead) sweep_subs(b);
  if (b->kafka) sk__bus_kafka_pump(b);
}

static void defer_cb(uv_timer_t *t) {
  sk_bus_t *b = t->data;
  b->defer_pending = 0;
  dispatch(b);
}

void sk_bus_flush(sk_bus_t *b) {
  if (b) dispatch(b);
}

int sk_bus_subscribe(sk_bus_t *b, sk_bus_event_fn fn, void *ud, sk_bus_sub_t **out) {
  if (!b || !fn) return SK_EINVAL;
  sk_bus_sub_t *s = sk_xcalloc(1, sizeof *s);
  s->bus = b;
  s->fn = fn;
  s->ud = ud;
  s->next = b->subs;
  b->subs = s;
  if (out) *out = s;
  return 0;
}

void sk_bus_unsubscribe(sk_bus_sub_t *s) {
  if (!s) return;
  sk_bus_t *b = s->bus;
  s->dead = 1;
  b->subs_dead = 1;
  if (!b->dispatching) sweep_subs(b);
}

/* ---------------- publishing ---------------- */

static int64_t publish_text(sk_bus_t *b, const char *type, const char *key, const char *data, size_t dlen) {
  int rc = sk_store_exec(b->store, "INSERT INTO sk_bus_events(ts, type, key, data) VALUES (?1, ?2, ?3, ?4)",
                         SK_SQL_ARGS(SK_SQL_INT(now_ms()), SK_SQL_TEXT(type), SK_SQL_TEXT(key ? key : ""),
                                     SK_SQL_TEXTN(data, dlen)));
  if (rc < 0) return rc;
  b->published++;
  sk_counter_inc(b->m_published);
  int64_t id = sk_store_last_insert_id(b->store);
  dispatch(b);
  return id;
}

static int check_meta(const char *type, const char *key) {
  if (!sk_bus_valid_type(type)) return SK_EINVAL;
  if (key && strlen(key) > SK_BUS_KEY_MAX) return SK_ELIMIT;
  return 0;
}

int64_t sk_bus_publish_json(sk_bus_t *b, const char *type, const char *key, const json_t *data) {
  if (!b || !data) return SK_EINVAL;
  int rc = check_meta(type, key);
  if (rc < 0) return rc;
  sk_buf_t buf;
  sk_buf_init(&buf);
  if (sk_json_dump_buf(data, &buf) < 0) {
    sk_buf_done(&buf);
    return SK_EINVAL;
  }
  int64_t id = buf.len > SK_BUS_DATA_MAX ? SK_ELIMIT : publish_text(b, type, key, buf.data, buf.len);
  sk_buf_done(&buf);
  return id;
}

int64_t sk_bus_publish(sk_bus_t *b, const char *type, const char *key, const char *data) {
  if (!b || !data) return SK_EINVAL;
  size_t len = strlen(data);
  if (len > SK_BUS_DATA_MAX) return SK_ELIMIT;
  json_t *v = NULL;
  char err[128];
  int rc = sk_json_parse(data, len, SK_BUS_DATA_MAX, 64, &v, err, sizeof err);
  if (rc < 0) return rc == SK_ELIMIT ? SK_ELIMIT : SK_EINVAL;
  int64_t id = sk_bus_publish_json(b, type, key, v);
  json_decref(v);
  return id;
}

/* ---------------- retention ---------------- */

int sk_bus_prune(sk_bus_t *b, int64_t now) {
  int64_t keep_above = 0; /* delete ids <= keep_above */
  int64_t last = sk_bus_last_id(b);
  if (b->max_events > 0 && last > b->max_events) keep_above = last - b->max_events;
  if (b->max_age_ms > 0) {
    int64_t v = 0;
    if (sk_store_query_int64(b->store, "SELECT max(id) FROM sk_bus_events WHERE ts < ?1",
                             SK_SQL_ARGS(SK_SQL_INT(now - b->max_age_ms)), &v) == 0 &&
        v > keep_above)
      keep_above = v;
  }
  int64_t cur = sk__bus_kafka_cursor(b);
  if (cur >= 0 && keep_above > cur) keep_above = cur;
  if (keep_above <= 0) return 0;
  return sk_store_exec(b->store, "DELETE FROM sk_bus_events WHERE id <= ?1", SK_SQL_ARGS(SK_SQL_INT(keep_above)));
}

/* ---------------- server-sent events ---------------- */

static int sse_write(sk__bus_sse_t *s, const char *data, size_t len) {
  s->last_write_ms = uv_now(s->bus->loop);
  return sk_http_resp_write(s->req, data, len);
}

/* The reader stopped taking what we write: more would only queue. */
static int sse_slow(const sk__bus_sse_t *s) {
  return s->bus->sse_max_queued && sk_http_resp_queued(s->req) >= s->bus->sse_max_queued;
}

static int sse_send(sk__bus_sse_t *s, const sk_bus_event_t *ev) {
  s->sent_id = ev->id;
  if (s->filter && !s->filter(ev, s->filter_ud)) return 0;
  sk_buf_t b;
  sk_buf_init(&b);
  sk_buf_printf(&b, "id: %" PRId64 "\nevent: %s\n", ev->id, ev->type);
  /* data is compact JSON (no line breaks); split on them anyway. */
  const char *p = ev->data, *end = ev->data + ev->data_len;
  do {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
    sk_buf_puts(&b, "data: ");
    sk_buf_append(&b, p, l);
    sk_buf_puts(&b, "\n");
    p += l + (nl ? 1 : 0);
  } while (p < end);
  sk_buf_puts(&b, "\n");
  int rc = sse_write(s, b.data, b.len);
  sk_buf_done(&b);
  if (rc >= 0 && sse_slow(s)) rc = SK_ELIMIT;
  return rc;
}

static void sse_unlink(sk__bus_sse_t *s) {
  sk_bus_t *b = s->bus;
  if (s->prev) s->prev->next = s->next;
  else b->sse = s->next;
  if (s->next) s->next->prev = s->prev;
  b->nsse--;
  sk_gauge_set(b->m_sse, (double)b->nsse);
}

static void sse_free(sk__bus_sse_t *s) {
  if (s->filter_ud_free) s->filter_ud_free(s->filter_ud);
  free(s);
}

static void sse_abort(sk_http_req_t *req, void *ud) {
  (void)req;
  sk__bus_sse_t *s = ud;
  sse_unlink(s);
  sse_free(s);
}

static void sse_end(sk__bus_sse_t *s) {
  sse_unlink(s);
  sk_http_req_on_abort(s->req, NULL, NULL);
  sk_http_resp_end(s->req);
  sse_free(s);
}

static int replay_row(const sk_bus_event_t *ev, void *ud) {
  return sse_send(ud, ev) == SK_ELIMIT ? SK_ELIMIT : 0;
}

/* The raw value of query parameter key, or NULL. */
static const char *query_param(const char *q, const char *key, size_t *len) {
  size_t kl = strlen(key);
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t l = amp ? (size_t)(amp - q) : strlen(q);
    if (l > kl && !strncmp(q, key, kl) && q[kl] == '=') {
      *len = l - kl - 1;
      return q + kl + 1;
    }
    if (l == kl && !strncmp(q, key, kl)) {
      *len = 0;
      return q + kl;
    }
    q = amp ? amp + 1 : NULL;
  }
  return NULL;
}

static int sse_refuse(sk_http_req_t *req, int status, const char *msg, const sk_bus_sse_opts_t *o) {
  if (o && o->filter_ud_free) o->filter_ud_free(o->filter_ud);
  char *body = sk_pool_printf(req->pool, "%s\n", msg);
  sk_http_respond_text(req, status, "text/plain; charset=utf-8", body);
  return status;
}

int sk_bus_sse_serve(sk_bus_t *b, sk_http_req_t *req, const sk_bus_sse_opts_t *o) {
  sk_bus_sse_opts_t def = {0};
  if (!o) o = &def;
  if (b->sse_closed || b->freeing) return sse_refuse(req, 503, "event stream: draining", o);
  size_t maxs = o->max_streams ? o->max_streams : 1024;
  if (b->nsse >= maxs) return sse_refuse(req, 429, "event stream: too many streams", o);
  /* Resume point: Last-Event-ID wins over ?since=. */
  int64_t after = -1;
  const char *lei = sk_http_headers_get(&req->headers, "last-event-id");
  size_t vl = 0;
  const char *since = req->query ? query_param(req->query, "since", &vl) : NULL;
  if (lei && *lei) {
    if (sk_bus_parse_event_id(lei, strlen(lei), &after) < 0)
      return sse_refuse(req, 400, "Last-Event-ID: expected a decimal event id", o);
  } else if (since) {
    if (sk_bus_parse_event_id(since, vl, &after) < 0)
      return sse_refuse(req, 400, "since: expected a decimal event id (0 = oldest retained)", o);
  }
  dispatch(b); /* committed events reach the streams in order from here on */
  if (after > 0 && gap_after(b, after)) {
    char *msg = sk_pool_printf(req->pool,
                               "event stream: events after %" PRId64 " up to %" PRId64
                               " were pruned by retention; resume with since=0",
                               after, sk_bus_oldest_id(b) - 1);
    return sse_refuse(req, 410, msg, o);
  }
  if (after > b->dispatched) { /* an id this log never gave out: it was reset or is another one */
    char *msg = sk_pool_printf(req->pool,
                               "event stream: event %" PRId64 " is ahead of this log (last %" PRId64
                               "); resume with since=0",
                               after, b->dispatched);
    return sse_refuse(req, 410, msg, o);
  }
  static const sk_http_header_t h[] = {
      {"content-type", "text/event-stream"}, {"cache-control", "no-cache"}, {"x-accel-buffering", "no"}};
  if (sk_http_resp_start(req, 200, h, 3) < 0) {
    if (o->filter_ud_free) o->filter_ud_free(o->filter_ud);
    return SK_EIO;
  }
  sk__bus_sse_t *s = sk_xcalloc(1, sizeof *s);
  s->bus = b;
  s->req = req;
  s->filter = o->filter;
  s->filter_ud = o->filter_ud;
  s->filter_ud_free = o->filter_ud_free;
  s->heartbeat_ms = o->heartbeat_ms ? o->heartbeat_ms : 15000;
  sse_write(s, ": skiff event stream\n\n", 22);
  if (after >= 0) {
    s->sent_id = after;
    int rc;
    while ((rc = sk__bus_read_range(b, s->sent_id, b->dispatched, 256, replay_row, s)) == 256) {}
    if (rc == SK_ELIMIT) { /* the replay alone filled the bound: end, the reader resumes */
      sk_counter_inc(b->m_sse_slow);
      sk_http_resp_end(req);
      sse_free(s);
      return 200;
    }
  }
  s->sent_id = b->dispatched > s->sent_id ? b->dispatched : s->sent_id;
  s->next = b->sse;
  if (b->sse) b->sse->prev = s;
  b->sse = s;
  b->nsse++;
  sk_gauge_set(b->m_sse, (double)b->nsse);
  sk_http_req_on_abort(req, sse_abort, s);
  return 200;
}

size_t sk_bus_sse_count(const sk_bus_t *b) { return b ? b->nsse : 0; }

void sk_bus_sse_end_all(sk_bus_t *b) {
  if (!b) return;
  b->sse_closed = 1;
  while (b->sse) sse_end(b->sse);
}

static void heartbeats(sk_bus_t *b) {
  uint64_t now = uv_now(b->loop);
  for (sk__bus_sse_t *s = b->sse, *n; s; s = n) {
    n = s->next;
    if (now - s->last_write_ms >= s->heartbeat_ms) sse_write(s, ": keepalive\n\n", 13);
  }
}

/* ---------------- lifecycle ---------------- */

static void tick_cb(uv_timer_t *t) {
  sk_bus_t *b = t->data;
  dispatch(b);
  if (b->kafka) sk__bus_kafka_tick(b);
  (void)sk_bus_prune(b, now_ms());
  heartbeats(b);
}

int sk_bus_new(uv_loop_t *loop, const sk_bus_opts_t *o, sk_bus_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (!o || !o->store) {
    snprintf(err, errlen, "bus: a store is required");
    return SK_EINVAL;
  }
  for (size_t i = 0; i < sizeof bus_schema / sizeof *bus_schema; i++) {
    if (sk_store_exec(o->store, bus_schema[i], NULL, 0) < 0) {
      snprintf(err, errlen, "bus: schema: %s", sk_store_errmsg(o->store));
      return SK_ESTORE;
    }
  }
  sk_bus_t *b = sk_xcalloc(1, sizeof *b);
  b->loop = loop;
  b->store = o->store;
  b->max_events = o->max_events > 0 ? o->max_events : 100000;
  b->max_age_ms = o->max_age_ms > 0 ? o->max_age_ms : o->max_age_ms < 0 ? 0 : 7LL * 86400 * 1000;
  b->tick_ms = o->tick_ms ? o->tick_ms : 1000;
  b->sse_max_queued = o->sse_max_queued ? o->sse_max_queued : 1024 * 1024;
  b->dispatched = sk_bus_last_id(b);
  if (o->metrics) {
    sk_metrics_counter(o->metrics, "skiff_bus_published_total", "Events published on the bus.", &b->m_published);
    sk_metrics_gauge(o->metrics, "skiff_bus_sse_streams", "Open server-sent-event streams.", &b->m_sse);
    sk_metrics_counter(o->metrics, "skiff_bus_sse_slow_closed_total",
                       "Event streams ended because the reader stopped reading.", &b->m_sse_slow);
    if (o->kafka.brokers && *o->kafka.brokers) {
      sk_metrics_counter(o->metrics, "skiff_bus_kafka_delivered_total",
                         "Events the Kafka brokers confirmed (delivery reports without error).", &b->m_delivered);
      sk_metrics_counter(o->metrics, "skiff_bus_kafka_failed_total",
                         "Delivery reports with an error (the event is produced again).", &b->m_failed);
      sk_metrics_gauge(o->metrics, "skiff_bus_kafka_pending", "Events not yet confirmed by Kafka.", &b->m_pending);
    }
  }
  uv_timer_init(loop, &b->tick);
  uv_timer_init(loop, &b->defer);
  b->tick.data = b->defer.data = b;
  b->handles_open = 2;
  if (o->kafka.brokers && *o->kafka.brokers) {
    int rc = sk__bus_kafka_new(b, &o->kafka, err, errlen);
    if (rc < 0) {
      sk_bus_free(b, 0);
      return rc;
    }
  }
  uv_timer_start(&b->tick, tick_cb, b->tick_ms, b->tick_ms);
  if (b->kafka) sk__bus_kafka_pump(b);
  *out = b;
  return 0;
}

void sk__bus_handle_closed(sk_bus_t *b) {
  if (--b->handles_open == 0) {
    for (sk_bus_sub_t *s = b->subs, *n; s; s = n) {
      n = s->next;
      free(s);
    }
    free(b);
  }
}

static void timer_closed(uv_handle_t *h) { sk__bus_handle_closed(h->data); }

void sk_bus_free(sk_bus_t *b, uint64_t flush_ms) {
  if (!b || b->freeing) return;
  sk_bus_sse_end_all(b);
  if (!in_tx(b)) dispatch(b);
  b->freeing = 1;
  if (b->kafka) sk__bus_kafka_free(b, flush_ms);
  uv_timer_stop(&b->tick);
  uv_timer_stop(&b->defer);
  uv_close((uv_handle_t *)&b->tick, timer_closed);
  uv_close((uv_handle_t *)&b->defer, timer_closed);
}

void sk_bus_stats(sk_bus_t *b, sk_bus_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!b) return;
  out->published = b->published;
  if (b->kafka) sk__bus_kafka_stats(b, out);
}
