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
 * write inside one backend transaction (ops->tx). Backends: sqlite
 * (ctl_backend_sqlite.c, the default) and PostgreSQL (ctl_backend_pg.c,
 * the same tables plus the audit log and the tokens, which the sqlite
 * backend leaves to ctl_audit.c / ctl_auth.c / ctl_ca.c on its sk_store),
 * selected by the store URL.
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

/* One audit row (ctl_audit.c). NULL strings are SQL NULL; rv 0 = none. */
typedef struct ctl_audit_row {
  int64_t id, ts_ms;
  const char *user, *via, *role, *verb, *kind, *ns, *name;
  int64_t rv;
  int code;
  const char *diff, *source, *message;
} ctl_audit_row_t;

/* Audit query filter: NULL / 0 switch a condition off. */
typedef struct ctl_audit_where {
  const char *kind, *name, *ns, *user, *verb;
  int64_t since_ms, before_id;
  int limit;
} ctl_audit_where_t;

/* A bearer token (ctl_auth.c): the secret's SHA-256, never the secret. */
typedef struct ctl_token_row {
  const char *id, *name;
  int role;
  const unsigned char *hash; /* 32 bytes */
  int64_t created, expires, revoked; /* unix seconds; 0 = never / not */
} ctl_token_row_t;

/* A CA join token (ctl_ca.c). */
typedef struct ctl_join_row {
  const unsigned char *hash; /* 32 bytes */
  const char *spiffe_id;
  int64_t created, expires, uses_left;
} ctl_join_row_t;

/* Return 0 to go on, > 0 to stop (returned), < 0 to fail (returned). */
typedef int (*ctl_row_fn)(const ctl_row_t *row, void *ud);
typedef int (*ctl_event_fn)(const ctl_event_row_t *ev, void *ud);
typedef int (*ctl_audit_fn)(const ctl_audit_row_t *row, void *ud);
typedef int (*ctl_token_fn)(const ctl_token_row_t *t, void *ud);
typedef int (*ctl_join_fn)(const ctl_join_row_t *j, void *ud);

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
  /* The audit log in the backend's own database, so an audit row commits
   * in the same transaction as the change (NULL for sqlite, where
   * ctl_audit.c uses the sk_store connection directly). */
  int (*audit_add)(ctl_backend_t *b, const ctl_audit_row_t *row);
  /* Newest first (id descending). */
  int (*audit_query)(ctl_backend_t *b, const ctl_audit_where_t *w, ctl_audit_fn fn, void *ud);
  /* Drops rows with id <= max(id) - max_rows and, when min_ts_ms > 0, with
   * ts < min_ts_ms; returns how many. */
  int (*audit_prune)(ctl_backend_t *b, int64_t max_rows, int64_t min_ts_ms);
  /* Bearer tokens and CA join tokens in the backend's database, so control
   * replicas on one database share them (NULL for sqlite: ctl_auth.c and
   * ctl_ca.c use the sk_store connection). Outside store transactions. */
  int (*token_add)(ctl_backend_t *b, const ctl_token_row_t *t); /* SK_EEXIST */
  /* Tokens not revoked and not expired at now; role < 0 = any role. */
  int (*token_count_live)(ctl_backend_t *b, int role, int64_t now, int64_t *n);
  /* Revokes (at now) the live tokens with that id or name; returns how many. */
  int (*token_revoke)(ctl_backend_t *b, const char *id_or_name, int64_t now);
  /* Newest first, at most 10000. */
  int (*token_list)(ctl_backend_t *b, ctl_token_fn fn, void *ud);
  int (*token_find)(ctl_backend_t *b, const unsigned char hash[32], ctl_token_fn fn, void *ud);
  int (*join_add)(ctl_backend_t *b, const ctl_join_row_t *j);
  /* Drops join tokens expired at now or used up; *left: how many remain. */
  int (*join_prune)(ctl_backend_t *b, int64_t now, int64_t *left);
  int (*join_find)(ctl_backend_t *b, const unsigned char hash[32], ctl_join_fn fn, void *ud);
  /* One use of a live token (atomic); returns 1, or 0 when none was left. */
  int (*join_use)(ctl_backend_t *b, const unsigned char hash[32], int64_t now);
  /* Changes committed by other processes on the same database (PostgreSQL
   * LISTEN/NOTIFY; NULL for sqlite, which has one writer process).
   * notify_fd connects the listening session if needed and returns its
   * socket (readable when a notification may be there); notify_poll reads
   * what arrived and returns how many notifications, SK_ESTORE when the
   * session broke (call notify_fd again later). */
  int (*notify_fd)(ctl_backend_t *b);
  int (*notify_poll)(ctl_backend_t *b);
  const char *(*errmsg)(ctl_backend_t *b);
  /* The sk_store connection for a sqlite backend (NULL otherwise). */
  struct sk_store *(*sqlite)(ctl_backend_t *b);
  void (*close)(ctl_backend_t *b);
} ctl_backend_ops_t;

struct ctl_backend {
  const ctl_backend_ops_t *ops;
};

/* PostgreSQL through libpq: url is postgres://user[:password]@host:port/db
 * (or postgresql://, any libpq URI); the password may also come from
 * PGPASSFILE. durable = synchronous_commit on. err never shows the password. */
int ctl_backend_pg_open(const char *url, int durable, ctl_backend_t **out, char *err, size_t errlen);
/* url with the password replaced by "***" (for messages and logs). */
void ctl_backend_pg_redact(const char *url, char *out, size_t len);

/* sqlite: path is a file (created) or ":memory:"; durable = synchronous=FULL. */
int ctl_backend_sqlite_open(const char *path, int durable, ctl_backend_t **out, char *err, size_t errlen);

#endif
