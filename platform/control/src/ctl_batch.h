/* ctl_batch.h - POST /api/v1/batch: many applies and deletes, all-or-nothing.
 *
 * Body: {"items":[{"op":"apply","object":{...}, "resourceVersion":"12"?},
 *                 {"op":"delete","kind":"Service","namespace":"ns",
 *                  "name":"n", "resourceVersion":"12"?}, ...],
 *        "dryRun":false}                     (or ?dryRun=All)
 * Every item is validated, authorized (apply of an absent object = create,
 * of a present one = update, delete = delete: the verbs of the single
 * calls) and run through the policies, then all are written in one store
 * transaction with their audit rows (ctl_store_batch). Answer 200
 * {"kind":"BatchResult","dryRun":..,"items":[{"index","kind","namespace",
 * "name","result","resourceVersion","object"}]}, or the first failure as
 * a Status whose details carry the item (index, kind, namespace, name)
 * with nothing written. See docs/control.md, Batch. */
#ifndef SKIFF_CTL_BATCH_H
#define SKIFF_CTL_BATCH_H

#include "control.h"
#include "ctl_audit.h"
#include "ctl_auth.h"
#include "policy.h"
#include "skiff/http.h"

#define CTL_BATCH_MAX_ITEMS 10000

typedef struct ctl_batch_env {
  ctl_store_t *store;
  ctl_auth_t *auth;   /* NULL: no authentication (development) */
  ctl_audit_t *audit; /* may be NULL */
  const pol_set_t *pols; /* may be NULL */
  size_t max_body;    /* request body bound (the server's limit) */
} ctl_batch_env_t;

/* The first pass of the handler without store, authorization or HTTP:
 * parses body (at most max bytes) and checks its shape and every item
 * (op, kind, document validation). 0 with the item count in *nitems, or a
 * negative code with the cause (naming the item) in err. (Fuzz target.) */
int ctl_batch_check(const void *body, size_t len, size_t max, size_t *nitems, char *err, size_t errlen);

/* Answers req (any method; only POST is allowed). */
void ctl_batch_handle(const ctl_batch_env_t *env, sk_http_req_t *req);

#endif
