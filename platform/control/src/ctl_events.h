/* ctl_events.h - skiff-control on the platform event bus (skiff/bus.h).
 *
 * Every committed resource change is published as a "resource" event
 * keyed Kind/namespace/name with data
 *   {"type":"ADDED|MODIFIED|DELETED","kind","namespace","name",
 *    "resourceVersion":<int>,"object":{...}}
 * and every audit record as an "audit" event (ctl_audit_set_bus). With the
 * sqlite backend the bus keeps its log on the resources' connection, so
 * audit events commit with the change they record. GET /api/v1/events serves the log as server-sent
 * events. See docs/control.md, "Events". */
#ifndef SKIFF_CTL_EVENTS_H
#define SKIFF_CTL_EVENTS_H

#include "ctl_audit.h"
#include "ctl_auth.h"
#include "ctl_int.h"
#include "skiff/bus.h"

/* Opens the bus on the store's sqlite connection, or, when the store is
 * not sqlite (PostgreSQL), on its own file <state_dir>/control-events.db
 * (in memory without a state_dir), returned in *own_store for the caller
 * to close after sk_bus_free. Then publishes the resource changes the
 * store retained but the bus missed (a crash between a commit and its
 * publish). */
int ctl_events_open(uv_loop_t *loop, const ctl_events_cfg_t *cfg, ctl_store_t *store, const char *state_dir,
                    sk_metrics_t *metrics, sk_logger_t *log, sk_bus_t **out, sk_store_t **own_store, char *err,
                    size_t errlen);
/* From the store's event callback; logs (warn) when the bus refuses. */
void ctl_events_publish_change(sk_bus_t *bus, sk_logger_t *log, int64_t rv, const char *type, const char *kind,
                               const json_t *obj);
/* GET /api/v1/events[?type=a,b][&since=ID] (Last-Event-ID resumes).
 * Viewers read resource events, audit events need admin (kind Audit).
 * Returns 1 when req->path is /api/v1/events (answered), else 0. */
int ctl_events_http_route(sk_bus_t *bus, ctl_auth_t *auth, ctl_audit_t *audit, const ctl_config_t *cfg,
                          sk_http_req_t *req);

#endif
