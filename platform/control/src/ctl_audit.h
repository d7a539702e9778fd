/* ctl_audit.h - skiff-control's audit log.
 *
 * One row per API call that changed something, or that was refused (401,
 * 403), in the table ctl_audit of control's own sqlite store (created if
 * missing at open). ctl_audit_record() writes through the same sk_store_t
 * connection as control's mutation, so when control calls it inside its
 * sk_store_tx() callback the audit row commits or rolls back together with
 * the change:
 *
 *   static int apply(sk_store_t *s, void *ud) {
 *     ... write the object, bump resourceVersion ...
 *     ctl_audit_entry_t e = {.principal = &p, .verb = "update", ...};
 *     return ctl_audit_record(au, &e);    // negative -> whole tx rolls back
 *   }
 *   sk_store_tx(store, apply, &ctx);
 *
 * With the PostgreSQL store the table lives in PostgreSQL and the rows go
 * through the backend's audit ops on the store's connection: the same
 * guarantee, one database.
 *
 * Retention: at most max_rows rows and max_age_s seconds; pruned every
 * 256 records and by ctl_audit_prune(). */
#ifndef SKIFF_CTL_AUDIT_H
#define SKIFF_CTL_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ctl_auth.h"
#include "ctl_backend.h"
#include "skiff/bus.h"
#include "skiff/http.h"
#include "skiff/store.h"

typedef struct ctl_audit ctl_audit_t;

typedef struct ctl_audit_opts {
  sk_store_t *store;   /* control's sqlite store (required unless backend has audit ops) */
  struct ctl_backend *backend; /* when its ops have audit_add (PostgreSQL), rows go there, in the
                                  same transaction as the store's write; store is then unused */
  int64_t max_rows;    /* default 100000 */
  int64_t max_age_s;   /* default 30 days; 0 = keep by count only */
  size_t max_diff_bytes; /* a larger diff is stored as {"truncated":true,"bytes":N}; default 65536 */
} ctl_audit_opts_t;

int ctl_audit_open(const ctl_audit_opts_t *o, ctl_audit_t **out, char *err, size_t errlen);
/* Also publishes every recorded row as an "audit" event on bus (NULL =
 * off). A failed publish fails the record (and so the caller's change). */
void ctl_audit_set_bus(ctl_audit_t *au, sk_bus_t *bus);
void ctl_audit_free(ctl_audit_t *au); /* accepts NULL */

typedef struct ctl_audit_entry {
  int64_t ts_ms;                 /* 0 = now */
  const ctl_principal_t *principal; /* NULL = anonymous (refused calls) */
  const char *verb;              /* "create", "update", ... (ctl_verb_name) */
  const char *kind;
  const char *ns;                /* may be NULL */
  const char *name;              /* may be NULL */
  int64_t resource_version;      /* 0 = none */
  int code;                      /* HTTP status answered */
  const char *diff;              /* JSON text or NULL */
  const char *source;            /* peer address, may be NULL */
  const char *message;           /* refusal reason, may be NULL */
} ctl_audit_entry_t;

/* Inserts one row (prepared statement on the store). Call it inside
 * control's sk_store_tx() to commit with the mutation. */
int ctl_audit_record(ctl_audit_t *au, const ctl_audit_entry_t *e);

/* Convenience for handlers: fills source from req, the diff from old/new
 * (create: new as is; delete: old as is; otherwise the JSON merge patch
 * from old to new; NULL both = no diff). */
int ctl_audit_record_change(ctl_audit_t *au, const sk_http_req_t *req, const ctl_principal_t *p,
                            ctl_verb_t verb, const char *kind, const char *ns, const char *name,
                            int64_t resource_version, int code, const json_t *old_obj,
                            const json_t *new_obj);

/* RFC 7386 merge patch that turns old into new (new reference in *out):
 * {} when equal; when either side is not an object, a copy of new_obj
 * (json null for NULL). */
int ctl_audit_merge_diff(const json_t *old_obj, const json_t *new_obj, json_t **out);

/* Deletes rows beyond max_rows and older than max_age_s at now_ms.
 * Returns the number deleted. */
int ctl_audit_prune(ctl_audit_t *au, int64_t now_ms);

typedef struct ctl_audit_filter {
  const char *kind;      /* NULL = any */
  const char *name;
  const char *ns;
  const char *user;      /* principal name */
  const char *verb;
  int64_t since_ms;      /* 0 = any */
  int64_t before_id;     /* pagination: rows with id < before_id; 0 = newest */
  int limit;             /* default 100, max 1000 */
} ctl_audit_filter_t;

/* JSON array of rows, newest first:
 * {"id","time" (RFC 3339 ms),"ts","user","via","role","verb","kind","namespace",
 *  "name","resourceVersion","code","diff" (JSON),"source","message"} */
int ctl_audit_query(ctl_audit_t *au, const ctl_audit_filter_t *f, json_t **out);

/* GET /api/v1/audit?kind=&name=&namespace=&user=&verb=&since=&limit=&before=
 * (since: unix seconds, RFC 3339, or a duration like "15m" back from now).
 * Admin only (kind Audit). 200 {"items":[...],"next":<before id>|null}.
 * Returns 1 when req->path is /api/v1/audit (a response was sent), else 0. */
int ctl_audit_http_route(ctl_audit_t *au, ctl_auth_t *auth, sk_http_req_t *req);

#endif
