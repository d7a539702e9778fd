/* control.h - skiff-control's resource model (prefix ctl_), usable by the
 * daemon, the CLI, tests and fuzzers.
 *
 *   ctl_errs       validation problems as (field path, message) causes
 *   ctl_kinds.c    the kind registry: Service, Route (skiff.dev/v1) and the
 *                  Gateway API HTTPRoute converted to/from Route
 *   ctl_doc.c      request bodies (JSON or YAML) into checked documents,
 *                  JSON merge patch, Status error bodies, YAML output
 *   ctl_select.c   label selectors
 *   ctl_store.c    the resource store over a ctl_backend (sqlite, PostgreSQL):
 *                  global resourceVersion, generation, events, retention
 *   ctl_api.c      the REST API and watch on skiff-control's listener
 *   ctl_batch.c    POST /api/v1/batch: many writes in one transaction
 *   ctl_cli.c      skiff apply / get / delete / diff / token
 * See docs/control.md. */
#ifndef SKIFF_CONTROL_H
#define SKIFF_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl_backend.h"
#include "skiff/mem.h"

#define CTL_MAX_CAUSES 64
#define CTL_FIELD_MAX 256
#define CTL_MSG_MAX 512
#define CTL_MAX_KINDS 64
#define CTL_MAX_DOC_BYTES (1u << 20) /* one resource document */
#define CTL_MAX_DOC_DEPTH 32
#define CTL_MAX_LIST_LIMIT 1000
#define CTL_NAME_LEN 253
#define CTL_NS_LEN 63

/* ---- errors with field paths ---- */

typedef struct ctl_cause {
  char field[CTL_FIELD_MAX]; /* "spec.rules[0].backendRefs[1].weight", "" = the document */
  char message[CTL_MSG_MAX];
} ctl_cause_t;

typedef struct ctl_errs {
  ctl_cause_t v[CTL_MAX_CAUSES];
  size_t n;
  size_t dropped; /* causes beyond CTL_MAX_CAUSES */
} ctl_errs_t;

void ctl_errs_init(ctl_errs_t *e);
void ctl_errs_add(ctl_errs_t *e, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "field: message; field: message" (at most len bytes). */
void ctl_errs_format(const ctl_errs_t *e, char *out, size_t len);

/* ---- kinds ---- */

typedef struct ctl_kind ctl_kind_t;
struct ctl_kind {
  const char *kind;        /* "Route" */
  const char *plural;      /* "routes" (URL segment) */
  const char *api_version; /* the stored apiVersion: "skiff.dev/v1" */
  int namespaced;
  /* Checks spec (and whatever else the kind cares about) of a document
   * whose apiVersion/kind/metadata were already checked. Adds causes. */
  void (*validate)(const json_t *obj, ctl_errs_t *errs);
  /* Foreign formats (e.g. HTTPRoute): stored as another kind. */
  const char *stored_as;   /* NULL = itself */
  /* in -> a new document of kind stored_as (causes on failure). */
  int (*to_stored)(const json_t *in, json_t **out, ctl_errs_t *errs);
  /* stored -> a new document of this kind. */
  int (*from_stored)(const json_t *stored, json_t **out);
  const char *short_cols;  /* "-o wide" column spec, informational */
};

/* Adds a kind (later issues register theirs at startup). SK_EEXIST,
 * SK_ELIMIT past CTL_MAX_KINDS. The struct must outlive the process. */
int ctl_kind_register(const ctl_kind_t *k);
/* By URL segment or name, case-insensitive: "routes", "route", "Route". */
const ctl_kind_t *ctl_kind_find(const char *name);
/* For a document: apiVersion and kind must both be accepted. */
const ctl_kind_t *ctl_kind_for_doc(const char *api_version, const char *kind);
size_t ctl_kind_count(void);
const ctl_kind_t *ctl_kind_at(size_t i);
/* The kind documents of k are stored as (k itself or k->stored_as). */
const ctl_kind_t *ctl_kind_storage(const ctl_kind_t *k);

/* ---- documents ---- */

/* A request body as JSON or YAML (YAML when content_type names yaml or the
 * body does not start with '{'), bounded in size and depth. One document
 * only. SK_EPARSE/SK_ELIMIT with "line:col: message" in err. */
int ctl_doc_decode(const void *body, size_t len, const char *content_type, json_t **out, char *err,
                   size_t errlen);
/* Checks apiVersion, kind, metadata (name, namespace, labels, annotations)
 * and runs the kind's validation. ns/name from the URL may be NULL; when
 * set they must agree with the document (a missing namespace is filled
 * in). Returns the kind or NULL with causes in errs. */
const ctl_kind_t *ctl_doc_check(json_t *doc, const ctl_kind_t *want, const char *ns, const char *name,
                                ctl_errs_t *errs);
/* ctl_doc_check plus conversion to the storage kind: *stored is a new
 * reference (the same document when no conversion). */
int ctl_doc_prepare(json_t *doc, const ctl_kind_t *want, const char *ns, const char *name, json_t **stored,
                    const ctl_kind_t **kind, ctl_errs_t *errs);
/* RFC 7386: a new value, target left untouched. */
json_t *ctl_merge_patch(const json_t *target, const json_t *patch);
/* DNS-1123 subdomain (names) / label (namespaces). */
int ctl_valid_name(const char *s);
int ctl_valid_ns(const char *s);

/* A Kubernetes-style Status object {kind: Status, apiVersion: v1, status:
 * Failure, message, reason, code, details{name, kind, causes[{field,
 * message, reason}]}}. errs and kind/name may be NULL. */
json_t *ctl_status_new(int code, const char *reason, const char *message, const char *kind, const char *name,
                       const ctl_errs_t *errs);

/* JSON value as YAML (block style; strings quoted when they would read
 * back as something else). Appends to b. */
void ctl_yaml_emit(const json_t *v, sk_buf_t *b);

/* ---- label selectors ---- */

typedef enum ctl_sel_op { CTL_SEL_EQ, CTL_SEL_NE, CTL_SEL_IN, CTL_SEL_NOTIN, CTL_SEL_EXISTS, CTL_SEL_NOT_EXISTS } ctl_sel_op_t;

#define CTL_SEL_MAX_REQS 32
#define CTL_SEL_MAX_VALUES 32

typedef struct ctl_sel_req {
  char key[CTL_NAME_LEN + 64];
  ctl_sel_op_t op;
  char values[CTL_SEL_MAX_VALUES][64];
  size_t nvalues;
} ctl_sel_req_t;

typedef struct ctl_selector {
  ctl_sel_req_t reqs[CTL_SEL_MAX_REQS];
  size_t n;
} ctl_selector_t;

/* "a=b,c!=d,e in (x,y),f notin (z),g,!h" ("==" is "="). SK_EINVAL with a
 * message. An empty string selects everything. */
int ctl_selector_parse(const char *s, ctl_selector_t *out, char *err, size_t errlen);
/* labels: a JSON object of strings (NULL = none). */
int ctl_selector_match(const ctl_selector_t *sel, const json_t *labels);

/* ---- store ---- */

typedef struct ctl_store ctl_store_t;

typedef struct ctl_store_opts {
  const char *url;         /* "sqlite:PATH", "PATH", ":memory:" or postgres[ql]://... */
  int durable;             /* synchronous=FULL (default on through the config) */
  int64_t event_retention; /* events kept for watch resume; default 10000 */
} ctl_store_opts_t;

int ctl_store_open(const ctl_store_opts_t *o, ctl_store_t **out, char *err, size_t errlen);
void ctl_store_close(ctl_store_t *s); /* accepts NULL */
ctl_backend_t *ctl_store_backend(ctl_store_t *s);
/* The sqlite connection under the sqlite backend (auth, audit and the CA
 * keep their tables there), NULL for other backends (PostgreSQL has them
 * behind the backend's audit/token/join ops: pass ctl_store_backend()). */
struct sk_store *ctl_store_sqlite(ctl_store_t *s);
int64_t ctl_store_rv(ctl_store_t *s);
/* Events with rv <= this are gone: a watch must start at or after it. */
int64_t ctl_store_compacted_rv(ctl_store_t *s);
const char *ctl_store_errmsg(ctl_store_t *s);

/* Called after every committed change (from the writing thread), in rv
 * order, each change once. */
typedef void (*ctl_store_event_cb)(int64_t rv, const char *type, const char *kind, const json_t *obj, void *ud);
void ctl_store_on_event(ctl_store_t *s, ctl_store_event_cb cb, void *ud);
/* PostgreSQL (several replicas on one database): the event callback also
 * gets the changes other replicas commit, through a LISTEN session watched
 * on loop (reconnected every second while down; the changes missed
 * meanwhile are read from the events table). No-op for sqlite. A failure
 * to listen now is returned but not final: the retry runs anyway. */
struct uv_loop_s;
int ctl_store_follow(ctl_store_t *s, struct uv_loop_s *loop);

/* Runs inside the write's transaction after the object was written (audit
 * rows commit with it); negative rolls everything back. old/new may be
 * NULL (create/delete). */
typedef int (*ctl_store_hook_fn)(int64_t rv, const json_t *old_obj, const json_t *new_obj, void *ud);

/* SK_ENOTFOUND. *out: a new reference. */
int ctl_store_get(ctl_store_t *s, const char *kind, const char *ns, const char *name, json_t **out);
/* obj: checked document (metadata.name/namespace set); the store fills
 * uid, resourceVersion, generation 1, creationTimestamp. SK_EEXIST. */
int ctl_store_create(ctl_store_t *s, const char *kind, json_t *obj, ctl_store_hook_fn hook, void *hook_ud,
                     json_t **out);

/* Builds the next object from the current one (a new reference in *next).
 * Negative aborts the update with that code. */
typedef int (*ctl_update_fn)(const json_t *cur, json_t **next, void *ud);
enum { CTL_UPDATE_STATUS = 1 }; /* status subresource: generation kept */
/* Reads, calls fn, and writes the result with a new resourceVersion (the
 * generation goes up when spec changed). When the result equals the
 * current object nothing is written and *changed is 0. */
int ctl_store_update(ctl_store_t *s, const char *kind, const char *ns, const char *name, ctl_update_fn fn,
                     void *fn_ud, unsigned flags, ctl_store_hook_fn hook, void *hook_ud, json_t **out,
                     int *changed);
/* *out: the object as it was, with the deletion's resourceVersion. */
int ctl_store_delete(ctl_store_t *s, const char *kind, const char *ns, const char *name, ctl_store_hook_fn hook,
                     void *hook_ud, json_t **out);

/* One step of ctl_store_batch. apply: fn gets the stored object, or NULL
 * when there is none (then the result is created as by ctl_store_create,
 * else written as by ctl_store_update). delete: SK_ENOTFOUND when absent. */
enum { CTL_STEP_APPLY = 1, CTL_STEP_DELETE = 2 };
typedef struct ctl_store_step {
  int op;
  const char *kind, *ns, *name; /* storage kind; must stay valid */
  ctl_update_fn fn;             /* apply */
  void *fn_ud;
  ctl_store_hook_fn hook;       /* per step, inside the transaction */
  void *hook_ud;
  /* filled: "created", "configured", "unchanged" or "deleted", the new
   * resourceVersion (the current one when unchanged) and the object
   * (a new reference: as stored; delete: as it was) */
  const char *result;
  int64_t rv;
  json_t *obj;
} ctl_store_step_t;
/* Every step in ONE backend transaction, in order, one resourceVersion per
 * changed object: all are written or none. On error *failed is the index
 * of the step that failed. dry_run: everything is computed and checked,
 * then rolled back (results filled, rv 0 for what would change; the hooks
 * run too and must not act outside the transaction then).
 * Release the steps' objects with ctl_store_steps_done. */
int ctl_store_batch(ctl_store_t *s, ctl_store_step_t *steps, size_t n, int dry_run, size_t *failed);
void ctl_store_steps_done(ctl_store_step_t *steps, size_t n);

typedef struct ctl_list_opts {
  const char *ns;             /* NULL = all namespaces */
  const ctl_selector_t *sel;  /* NULL = all */
  size_t limit;               /* 0 = no limit */
  const char *cont;           /* continue token from a previous page */
} ctl_list_opts_t;
/* *items: a new array; *next: malloc'd continue token or NULL at the end;
 * *rv: the store's resourceVersion when listed. SK_EINVAL for a bad token. */
int ctl_store_list(ctl_store_t *s, const char *kind, const ctl_list_opts_t *o, json_t **items, char **next,
                   int64_t *rv);

/* Retained events with rv > after, in order. SK_ERANGE when after is older
 * than the retention (relist). */
typedef int (*ctl_store_ev_fn)(int64_t rv, const char *type, const char *kind, const char *object_json, void *ud);
int ctl_store_events_since(ctl_store_t *s, int64_t after, ctl_store_ev_fn fn, void *ud);

/* Object identity helpers. */
const char *ctl_obj_ns(const json_t *o);   /* "" when absent */
const char *ctl_obj_name(const json_t *o); /* "" when absent */
int64_t ctl_obj_rv(const json_t *o);       /* metadata.resourceVersion, 0 when absent/bad */

/* ---- proxy config ---- */

/* Every Service and Route compiled into skiff-proxy's {clusters, routes}
 * (docs/proxy.md), routes ordered most specific first. What cannot be
 * expressed is left out with a warning in warn. *rv: the store version the
 * snapshot reflects. */
int ctl_compile_proxy(ctl_store_t *s, json_t **out, int64_t *rv, ctl_errs_t *warn);

/* ---- CLI (skiff apply/get/delete/diff/token) ---- */

/* argv[0] is the verb. Server from --server or $SKIFF_SERVER (default
 * http://127.0.0.1:7400), token from --token or $SKIFF_TOKEN. Returns the
 * exit code. */
int ctl_cli_main(int argc, char **argv);
int ctl_cli_is_verb(const char *verb);

#endif
