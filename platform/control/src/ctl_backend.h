/* ctl_backend.h - the storage interface under skiff-control's resource store.
 *
 * A backend keeps three tables with the same schema whatever the engine:
 *   meta(key, value)        'rv' (the global resourceVersion sequence) and
 *                           'compacted_rv' (events up to it were trimmed)
 *   objects(kind, namespace, name, uid, rv, generation, labels, body,
 *           created_at, updated_at)       primary key (kind, namespace, name)
 *   events(rv, type, kind, namespace, name, object)   rv primary key
 * The generic store (ctl_store.c) does the resource semantics (conflicts,
 * generation, events, retention) through these primitive operations, every
 * write inside one backend transaction (ops->tx). sqlite is the only backend
 * today (ctl_backend_sqlite.c); a PostgreSQL one fills the same table with
 * the same statements (UPDATE ... RETURNING is common to both).
 *
 * Strings handed to callbacks are valid during the call only. */
#ifndef SKIFF_CTL_BACKEND_H
#define SKIFF_CTL_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct ctl_backend ctl_backend_t;

typedef struct ctl_row {
  const char *kind, *ns, *name, *uid;
  int64_t rv, generation;
  const char *labels; /* JSON object text */
  const char *body;   /* the whole object as JSON text */
  const char *created_at, *updated_at;
} ctl_row_t;

typedef struct ctl_event_row {
  int64_t rv;
  const char *type; /* ADDED, MODIFIED, DELETED */
  const char *kind, *ns, *name;
  const char *object; /* JSON text */
} ctl_event_row_t;

/* Return 0 to go on, > 0 to stop (returned), < 0 to fail (returned). */
typedef int (*ctl_row_fn)(const ctl_row_t *row, void *ud);
typedef int (*ctl_event_fn)(const ctl_event_row_t *ev, void *ud);

typedef struct ctl_backend_ops {
  const char *name; /* "sqlite" */
  /* Runs fn in one transaction: committed (durably) when fn returns >= 0. */
  int (*tx)(ctl_backend_t *b, int (*fn)(ctl_backend_t *b, void *ud), void *ud);
  /* Increments the sequence and returns the new value (inside tx). */
  int (*next_rv)(ctl_backend_t *b, int64_t *rv);
  int (*meta_get)(ctl_backend_t *b, const char *key, int64_t *val);
  int (*meta_set)(ctl_backend_t *b, const char *key, int64_t val);
  /* One object; SK_ENOTFOUND when absent. */
  int (*get)(ctl_backend_t *b, const char *kind, const char *ns, const char *name, ctl_row_fn fn, void *ud);
  /* insert = 1: SK_EEXIST when the key is taken; 0: replaces an existing row. */
  int (*put)(ctl_backend_t *b, const ctl_row_t *row, int insert);
  int (*del)(ctl_backend_t *b, const char *kind, const char *ns, const char *name);
  /* Objects of kind (ns NULL = every namespace) ordered by (namespace,
   * name), starting after (after_ns, after_name) when after_ns != NULL. */
  int (*list)(ctl_backend_t *b, const char *kind, const char *ns, const char *after_ns,
              const char *after_name, ctl_row_fn fn, void *ud);
  int (*event_add)(ctl_backend_t *b, const ctl_event_row_t *ev);
  /* Events with rv > after, ascending. */
  int (*events_since)(ctl_backend_t *b, int64_t after, ctl_event_fn fn, void *ud);
  /* Drops events with rv <= upto; returns how many. */
  int (*events_trim)(ctl_backend_t *b, int64_t upto);
  const char *(*errmsg)(ctl_backend_t *b);
  /* The sk_store connection for a sqlite backend (NULL otherwise). */
  struct sk_store *(*sqlite)(ctl_backend_t *b);
  void (*close)(ctl_backend_t *b);
} ctl_backend_ops_t;

struct ctl_backend {
  const ctl_backend_ops_t *ops;
};

/* sqlite: path is a file (created) or ":memory:"; durable = synchronous=FULL. */
int ctl_backend_sqlite_open(const char *path, int durable, ctl_backend_t **out, char *err, size_t errlen);

#endif
