/* ctl_events.c - skiff-control's resource changes and audit records on the
 * platform event bus, and GET /api/v1/events (server-sent events). */
#include "ctl_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/json.h"

#define MAX_TYPES 16

static json_t *change_event(int64_t rv, const char *type, const char *kind, const json_t *obj) {
  return json_pack("{s:s, s:s, s:s, s:s, s:I, s:O}", "type", type, "kind", kind, "namespace", ctl_obj_ns(obj), "name",
                   ctl_obj_name(obj), "resourceVersion", (json_int_t)rv, "object", (json_t *)obj);
}

static int64_t publish_change(sk_bus_t *bus, int64_t rv, const char *type, const char *kind, const json_t *obj) {
  json_t *ev = change_event(rv, type, kind, obj);
  if (!ev) return SK_EINVAL;
  char key[SK_BUS_KEY_MAX + 1];
  snprintf(key, sizeof key, "%.128s/%.63s/%.253s", kind, ctl_obj_ns(obj), ctl_obj_name(obj));
  int64_t id = sk_bus_publish_json(bus, "resource", key, ev);
  json_decref(ev);
  return id;
}

void ctl_events_publish_change(sk_bus_t *bus, sk_logger_t *log, int64_t rv, const char *type, const char *kind,
                               const json_t *obj) {
  if (!bus) return;
  int64_t id = publish_change(bus, rv, type, kind, obj);
  if (id < 0 && log) {
    char rvs[32];
    snprintf(rvs, sizeof rvs, "%lld", (long long)rv);
    sk_log_kv(log, SK_LOG_WARN, "event not published (published again at the next start)", "kind", kind, "name",
              ctl_obj_name(obj), "resource_version", rvs, "error", sk_strerror((int)id), NULL);
  }
}

/* ---- catch-up after a crash between a commit and its publish ---- */

static int last_rv_of(const sk_bus_event_t *ev, void *ud) {
  json_t *d = json_loadb(ev->data, ev->data_len, 0, NULL);
  *(int64_t *)ud = d ? sk_json_get_int(d, "resourceVersion", 0) : 0;
  json_decref(d);
  return 0;
}

typedef struct catchup {
  sk_bus_t *bus;
  int64_t n;
} catchup_t;

static int catchup_ev(int64_t rv, const char *type, const char *kind, const char *object_json, void *ud) {
  catchup_t *c = ud;
  json_t *obj = json_loads(object_json, 0, NULL);
  if (!obj) return SK_EPARSE;
  int64_t id = publish_change(c->bus, rv, type, kind, obj);
  json_decref(obj);
  if (id < 0) return (int)id;
  c->n++;
  return 0;
}

static void kafka_error(const char *msg, void *ud) {
  if (ud) sk_log_kv(ud, SK_LOG_WARN, "kafka", "error", msg, NULL);
}

int ctl_events_open(uv_loop_t *loop, const ctl_events_cfg_t *cfg, ctl_store_t *store, const char *state_dir,
                    sk_metrics_t *metrics, sk_logger_t *log, sk_bus_t **out, sk_store_t **own_store, char *err,
                    size_t errlen) {
  *out = NULL;
  *own_store = NULL;
  sk_store_t *db = ctl_store_sqlite(store);
  if (!db) {
    char path[1024];
    snprintf(path, sizeof path, "%s%s", state_dir ? state_dir : ":memory:", state_dir ? "/control-events.db" : "");
    sk_store_opts_t so = {.path = path};
    if (sk_store_open(&so, own_store) < 0) {
      snprintf(err, errlen, "events: %s: %s", path, sk_store_open_errmsg());
      return SK_ESTORE;
    }
    db = *own_store;
  }
  sk_bus_opts_t o = {.store = db,
                     .max_events = (int64_t)cfg->retention,
                     .max_age_ms = cfg->max_age_ms ? (int64_t)cfg->max_age_ms : -1,
                     .metrics = metrics,
                     .kafka = {.brokers = cfg->kafka.brokers,
                               .topic_prefix = cfg->kafka.topic_prefix,
                               .props = (const char *const *)cfg->kafka.properties.v,
                               .nprops = cfg->kafka.properties.n,
                               .on_error = kafka_error,
                               .on_error_ud = log}};
  char e[512] = "";
  sk_bus_t *bus = NULL;
  int rc = sk_bus_new(loop, &o, &bus, e, sizeof e);
  if (rc < 0) {
    snprintf(err, errlen, "events: %s", e);
    goto fail;
  }
  int64_t last_rv = 0;
  if (sk_bus_last_of_type(bus, "resource", last_rv_of, &last_rv) == 1 && last_rv > 0 &&
      last_rv < ctl_store_rv(store)) {
    catchup_t c = {bus, 0};
    int64_t from = last_rv;
    if (from < ctl_store_compacted_rv(store)) from = ctl_store_compacted_rv(store);
    rc = ctl_store_events_since(store, from, catchup_ev, &c);
    if (rc < 0 && rc != SK_ERANGE) {
      snprintf(err, errlen, "events: catching up from resourceVersion %lld: %s", (long long)from, sk_strerror(rc));
      sk_bus_free(bus, 0);
      goto fail;
    }
  }
  *out = bus;
  return 0;
fail:
  sk_store_close(*own_store);
  *own_store = NULL;
  return rc;
}

/* ---- GET /api/v1/events ---- */

typedef struct filter {
  int admin;
  size_t n;
  char types[MAX_TYPES][SK_BUS_TYPE_MAX + 1];
} filter_t;

static int filter_fn(const sk_bus_event_t *ev, void *ud) {
  const filter_t *f = ud;
  if (!f->n) return f->admin || strcmp(ev->type, "audit");
  for (size_t i = 0; i < f->n; i++)
    if (!strcmp(f->types[i], ev->type)) return 1;
  return 0;
}

/* ?type=a,b (also "%2C"): SK_EINVAL with a message for a bad list. */
static int parse_types(const char *query, filter_t *f, char *msg, size_t msglen) {
  const char *q = query;
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t l = amp ? (size_t)(amp - q) : strlen(q);
    if (l >= 5 && !strncmp(q, "type=", 5)) {
      const char *v = q + 5, *end = q + l;
      while (v <= end) {
        const char *c = v;
        while (c < end && *c != ',' && !(end - c >= 3 && c[0] == '%' && c[1] == '2' && (c[2] == 'C' || c[2] == 'c')))
          c++;
        size_t tl = (size_t)(c - v);
        if (tl) {
          if (f->n >= MAX_TYPES || tl > SK_BUS_TYPE_MAX) {
            snprintf(msg, msglen, "type: at most %d types of at most %d characters", MAX_TYPES, SK_BUS_TYPE_MAX);
            return SK_EINVAL;
          }
          memcpy(f->types[f->n], v, tl);
          f->types[f->n][tl] = 0;
          if (!sk_bus_valid_type(f->types[f->n])) {
            snprintf(msg, msglen, "type: '%s' is not an event type ([A-Za-z0-9._-])", f->types[f->n]);
            return SK_EINVAL;
          }
          f->n++;
        }
        if (c >= end) break;
        v = c + (*c == ',' ? 1 : 3);
      }
    }
    q = amp ? amp + 1 : NULL;
  }
  return 0;
}

int ctl_events_http_route(sk_bus_t *bus, ctl_auth_t *auth, ctl_audit_t *audit, const ctl_config_t *cfg,
                          sk_http_req_t *req) {
  if (strcmp(req->path, "/api/v1/events") && strcmp(req->path, "/api/v1/events/")) return 0;
  if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
    ctl_http_error(req, 405, "events: GET only (server-sent events)");
    return 1;
  }
  int head = !strcmp(req->method, "HEAD");
  filter_t *f = sk_xcalloc(1, sizeof *f);
  char msg[256];
  if (parse_types(req->query, f, msg, sizeof msg) < 0) {
    free(f);
    ctl_http_error(req, 400, msg);
    return 1;
  }
  int wants_audit = 0;
  for (size_t i = 0; i < f->n; i++)
    if (!strcmp(f->types[i], "audit")) wants_audit = 1;
  if (auth) {
    ctl_principal_t p;
    /* Audit records are admin only (kind Audit); other events need a viewer. */
    if (ctl_auth_guard(auth, audit, req, CTL_VERB_WATCH, wants_audit ? CTL_KIND_AUDIT : "Event", NULL, NULL, &p) <
        0) {
      free(f);
      return 1;
    }
    char why[128];
    f->admin = ctl_auth_authorize(auth, &p, CTL_VERB_WATCH, CTL_KIND_AUDIT, why, sizeof why) == 0;
  } else {
    f->admin = 1;
  }
  if (head) { /* the headers a stream would get, no stream */
    static const sk_http_header_t h[] = {{"content-type", "text/event-stream"}, {"cache-control", "no-cache"}};
    free(f);
    sk_http_respond(req, 200, h, 2, NULL, 0);
    return 1;
  }
  sk_bus_sse_opts_t o = {.filter = filter_fn,
                         .filter_ud = f,
                         .filter_ud_free = free,
                         .heartbeat_ms = cfg->events.heartbeat_ms ? cfg->events.heartbeat_ms : 15000,
                         .max_streams = (size_t)cfg->max_watches};
  sk_bus_sse_serve(bus, req, &o);
  return 1;
}
