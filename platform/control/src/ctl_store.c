/* The resource store: Kubernetes-style objects over a ctl_backend with a
 * global monotonic resourceVersion, per-object generation, an event log
 * with bounded retention, and paginated, label-filtered lists. Every change
 * is one backend transaction: sequence bump, object row, event row, and the
 * caller's hook (audit) commit together or not at all. */
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "control.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

/* Following the commits of other replicas (ctl_store_follow). */
typedef struct follow {
  ctl_store_t *s;
  uv_poll_t *poll; /* NULL while the listening session is down */
  uv_timer_t timer; /* reconnects the listening session */
} follow_t;

struct ctl_store {
  ctl_backend_t *be;
  follow_t *follow;
  int64_t seen_rv; /* newest change handed to cb */
  int64_t retention;
  ctl_store_event_cb cb;
  void *cb_ud;
};

int ctl_store_open(const ctl_store_opts_t *o, ctl_store_t **out, char *err, size_t errlen) {
  *out = NULL;
  const char *url = o && o->url && *o->url ? o->url : ":memory:";
  ctl_backend_t *be = NULL;
  int rc;
  if (!strncmp(url, "postgres://", 11) || !strncmp(url, "postgresql://", 13)) {
    /* objects, events, audit, tokens and join tokens all in PostgreSQL */
    rc = ctl_backend_pg_open(url, o ? o->durable : 1, &be, err, errlen);
    if (rc < 0) return rc;
  } else {
    if (!strncmp(url, "sqlite:", 7)) url += 7;
    if (!*url) {
      if (err) snprintf(err, errlen, "store: empty sqlite path");
      return SK_EINVAL;
    }
    rc = ctl_backend_sqlite_open(url, o ? o->durable : 1, &be, err, errlen);
    if (rc < 0) return rc;
  }
  ctl_store_t *s = sk_xcalloc(1, sizeof *s);
  s->be = be;
  s->retention = o && o->event_retention > 0 ? o->event_retention : 10000;
  s->seen_rv = ctl_store_rv(s);
  *out = s;
  return 0;
}

static void free_handle(uv_handle_t *h) { free(h); }
static void free_follow(uv_handle_t *h) { free(h->data); }

void ctl_store_close(ctl_store_t *s) {
  if (!s) return;
  if (s->follow) { /* stop polling before the backend closes the socket */
    follow_t *f = s->follow;
    if (f->poll) {
      uv_poll_stop(f->poll);
      uv_close((uv_handle_t *)f->poll, free_handle);
    }
    uv_timer_stop(&f->timer);
    f->timer.data = f;
    uv_close((uv_handle_t *)&f->timer, free_follow);
  }
  if (s->be) s->be->ops->close(s->be);
  free(s);
}

ctl_backend_t *ctl_store_backend(ctl_store_t *s) { return s->be; }

struct sk_store *ctl_store_sqlite(ctl_store_t *s) {
  return s->be->ops->sqlite ? s->be->ops->sqlite(s->be) : NULL;
}

const char *ctl_store_errmsg(ctl_store_t *s) { return s->be->ops->errmsg(s->be); }

void ctl_store_on_event(ctl_store_t *s, ctl_store_event_cb cb, void *ud) {
  s->cb = cb;
  s->cb_ud = ud;
}

int64_t ctl_store_rv(ctl_store_t *s) {
  int64_t v = 0;
  if (s->be->ops->meta_get(s->be, "rv", &v) < 0) return 0;
  return v;
}

int64_t ctl_store_compacted_rv(ctl_store_t *s) {
  int64_t v = 0;
  if (s->be->ops->meta_get(s->be, "compacted_rv", &v) < 0) return 0;
  return v;
}

/* ---- object helpers ---- */

const char *ctl_obj_ns(const json_t *o) { return sk_json_get_str(o, "metadata.namespace", ""); }
const char *ctl_obj_name(const json_t *o) { return sk_json_get_str(o, "metadata.name", ""); }

int64_t ctl_obj_rv(const json_t *o) {
  json_t *v = sk_json_get(o, "metadata.resourceVersion");
  if (json_is_integer(v)) return json_integer_value(v);
  if (!json_is_string(v)) return 0;
  const char *s = json_string_value(v);
  char *end = NULL;
  long long n = strtoll(s, &end, 10);
  if (!*s || *end || n < 0) return 0;
  return (int64_t)n;
}

static json_t *meta_of(json_t *obj) {
  json_t *m = json_object_get(obj, "metadata");
  if (!json_is_object(m)) {
    m = json_object();
    json_object_set_new(obj, "metadata", m);
  }
  return m;
}

static void set_rv(json_t *obj, int64_t rv) {
  char b[32];
  snprintf(b, sizeof b, "%lld", (long long)rv);
  json_object_set_new(meta_of(obj), "resourceVersion", json_string(b));
}

static void now_rfc3339(char *out, size_t len) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void new_uid(char *out, size_t len) {
  unsigned char r[16];
  if (RAND_bytes(r, sizeof r) != 1) {
    for (size_t i = 0; i < sizeof r; i++) r[i] = (unsigned char)rand();
  }
  r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
  r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
  snprintf(out, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
           r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
}

static char *dump(const json_t *v) {
  char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!s) abort();
  return s;
}

static json_t *parse_body(const char *text) {
  return json_loads(text, JSON_DECODE_ANY, NULL);
}

/* ---- writes ---- */

typedef struct wctx {
  ctl_store_t *s;
  const char *kind, *ns, *name;
  json_t *obj;        /* create: input; afterwards the stored object */
  json_t *old;        /* update/delete: current */
  ctl_update_fn fn;
  void *fn_ud;
  unsigned flags;
  ctl_store_hook_fn hook;
  void *hook_ud;
  int changed;
  int64_t rv;
  const char *type;
} wctx_t;

static int emit_event(wctx_t *c, ctl_backend_t *b, const json_t *obj) {
  char *text = dump(obj);
  ctl_event_row_t ev = {.rv = c->rv, .type = c->type, .kind = c->kind, .ns = c->ns, .name = c->name, .object = text};
  int rc = b->ops->event_add(b, &ev);
  free(text);
  if (rc < 0) return rc;
  /* Retention: keep the newest `retention` events. */
  int64_t upto = c->rv - c->s->retention;
  if (upto > 0) {
    int64_t compacted = 0;
    if ((rc = b->ops->meta_get(b, "compacted_rv", &compacted)) < 0) return rc;
    if (upto > compacted) {
      if ((rc = b->ops->events_trim(b, upto)) < 0) return rc;
      if ((rc = b->ops->meta_set(b, "compacted_rv", upto)) < 0) return rc;
    }
  }
  return 0;
}

static int write_row(ctl_backend_t *b, wctx_t *c, const json_t *obj, int insert) {
  char *body = dump(obj);
  json_t *labels = sk_json_get(obj, "metadata.labels");
  char *ltext = json_is_object(labels) ? dump(labels) : NULL;
  char ts[32];
  now_rfc3339(ts, sizeof ts);
  ctl_row_t r = {.kind = c->kind,
                 .ns = c->ns,
                 .name = c->name,
                 .uid = sk_json_get_str(obj, "metadata.uid", ""),
                 .rv = c->rv,
                 .generation = sk_json_get_int(obj, "metadata.generation", 1),
                 .labels = ltext ? ltext : "{}",
                 .body = body,
                 .created_at = sk_json_get_str(obj, "metadata.creationTimestamp", ts),
                 .updated_at = ts};
  int rc = b->ops->put(b, &r, insert);
  free(body);
  free(ltext);
  return rc;
}

static int create_tx(ctl_backend_t *b, void *ud) {
  wctx_t *c = ud;
  int rc = b->ops->next_rv(b, &c->rv);
  if (rc < 0) return rc;
  json_t *m = meta_of(c->obj);
  char uid[40], ts[32];
  new_uid(uid, sizeof uid);
  now_rfc3339(ts, sizeof ts);
  json_object_set_new(m, "uid", json_string(uid));
  set_rv(c->obj, c->rv);
  json_object_set_new(m, "generation", json_integer(1));
  json_object_set_new(m, "creationTimestamp", json_string(ts));
  if ((rc = write_row(b, c, c->obj, 1)) < 0) return rc;
  c->type = "ADDED";
  if ((rc = emit_event(c, b, c->obj)) < 0) return rc;
  if (c->hook && (rc = c->hook(c->rv, NULL, c->obj, c->hook_ud)) < 0) return rc;
  return 0;
}

static json_t *parse_body(const char *text);

/* Hands the committed changes after seen_rv to cb, in rv order (changes of
 * other replicas on a shared database). */
static int catch_up_ev(const ctl_event_row_t *e, void *ud) {
  ctl_store_t *s = ud;
  if (e->rv <= s->seen_rv) return 0;
  json_t *obj = parse_body(e->object);
  if (obj && s->cb) s->cb(e->rv, e->type, e->kind, obj, s->cb_ud);
  json_decref(obj);
  s->seen_rv = e->rv;
  return 0;
}

static int catch_up(ctl_store_t *s) { return s->be->ops->events_since(s->be, s->seen_rv, catch_up_ev, s); }

static void notify(wctx_t *c, const json_t *obj) {
  ctl_store_t *s = c->s;
  /* Another replica committed in between: its changes go first. */
  if (s->be->ops->notify_fd && c->rv > s->seen_rv + 1) (void)catch_up(s);
  if (c->rv <= s->seen_rv) return;
  if (s->cb) s->cb(c->rv, c->type, c->kind, obj, s->cb_ud);
  s->seen_rv = c->rv;
}

static void follow_poll_cb(uv_poll_t *h, int status, int events) {
  (void)events;
  follow_t *f = h->data;
  int n = status < 0 ? SK_ESTORE : f->s->be->ops->notify_poll(f->s->be);
  if (n > 0) (void)catch_up(f->s);
  if (n < 0) { /* the listening session broke: the timer reconnects */
    uv_poll_stop(h);
    uv_close((uv_handle_t *)h, free_handle);
    f->poll = NULL;
  }
}

static int follow_start_poll(follow_t *f) {
  int fd = f->s->be->ops->notify_fd(f->s->be);
  if (fd < 0) return fd;
  uv_poll_t *p = sk_xcalloc(1, sizeof *p);
  if (uv_poll_init(f->timer.loop, p, fd) != 0) {
    free(p);
    return SK_EIO;
  }
  p->data = f;
  uv_poll_start(p, UV_READABLE, follow_poll_cb);
  f->poll = p;
  /* what was committed while nobody listened */
  (void)catch_up(f->s);
  return 0;
}

static void follow_timer_cb(uv_timer_t *t) {
  follow_t *f = t->data;
  if (!f->poll) (void)follow_start_poll(f);
}

int ctl_store_follow(ctl_store_t *s, struct uv_loop_s *loop) {
  if (!s->be->ops->notify_fd || s->follow) return 0;
  follow_t *f = sk_xcalloc(1, sizeof *f);
  f->s = s;
  uv_timer_init(loop, &f->timer);
  f->timer.data = f;
  s->follow = f;
  int rc = follow_start_poll(f);
  uv_timer_start(&f->timer, follow_timer_cb, 1000, 1000);
  return rc;
}

int ctl_store_create(ctl_store_t *s, const char *kind, json_t *obj, ctl_store_hook_fn hook, void *hook_ud,
                     json_t **out) {
  if (out) *out = NULL;
  json_t *copy = json_deep_copy(obj);
  if (!copy) return SK_ENOMEM;
  wctx_t c = {.s = s, .kind = kind, .obj = copy, .hook = hook, .hook_ud = hook_ud};
  c.ns = ctl_obj_ns(copy);
  c.name = ctl_obj_name(copy);
  /* ns/name point into copy: keep them stable across the metadata edits. */
  char nsb[CTL_NS_LEN + 1], nameb[CTL_NAME_LEN + 1];
  snprintf(nsb, sizeof nsb, "%s", c.ns);
  snprintf(nameb, sizeof nameb, "%s", c.name);
  c.ns = nsb;
  c.name = nameb;
  int rc = s->be->ops->tx(s->be, create_tx, &c);
  if (rc < 0) {
    json_decref(copy);
    return rc;
  }
  notify(&c, copy);
  if (out) *out = copy;
  else json_decref(copy);
  return 0;
}

static int grab_row(const ctl_row_t *r, void *ud) {
  json_t **o = ud;
  *o = parse_body(r->body);
  return *o ? 1 : SK_EPARSE;
}

static int load(ctl_backend_t *b, const char *kind, const char *ns, const char *name, json_t **out) {
  *out = NULL;
  int rc = b->ops->get(b, kind, ns, name, grab_row, out);
  if (rc < 0) return rc;
  return *out ? 0 : SK_ENOTFOUND;
}

int ctl_store_get(ctl_store_t *s, const char *kind, const char *ns, const char *name, json_t **out) {
  return load(s->be, kind, ns, name, out);
}

static void copy_meta_key(json_t *dst, const json_t *src, const char *key) {
  json_t *v = sk_json_get(src, key);
  json_t *m = meta_of(dst);
  const char *k = strchr(key, '.') + 1;
  if (v) json_object_set(m, k, v);
  else json_object_del(m, k);
}

static int update_tx(ctl_backend_t *b, void *ud) {
  wctx_t *c = ud;
  int rc = load(b, c->kind, c->ns, c->name, &c->old);
  if (rc < 0) return rc;
  json_t *next = NULL;
  if ((rc = c->fn(c->old, &next, c->fn_ud)) < 0) return rc;
  if (!json_is_object(next)) {
    json_decref(next);
    return SK_EINVAL;
  }
  c->obj = next;
  /* Server-owned metadata always comes from the stored object. */
  copy_meta_key(next, c->old, "metadata.uid");
  copy_meta_key(next, c->old, "metadata.creationTimestamp");
  copy_meta_key(next, c->old, "metadata.generation");
  copy_meta_key(next, c->old, "metadata.resourceVersion");
  copy_meta_key(next, c->old, "metadata.namespace");
  copy_meta_key(next, c->old, "metadata.name");
  if (json_equal(next, c->old)) return 0;
  c->changed = 1;
  if (!(c->flags & CTL_UPDATE_STATUS) && !json_equal(json_object_get(next, "spec"), json_object_get(c->old, "spec")))
    json_object_set_new(meta_of(next), "generation",
                        json_integer(sk_json_get_int(c->old, "metadata.generation", 1) + 1));
  if ((rc = b->ops->next_rv(b, &c->rv)) < 0) return rc;
  set_rv(next, c->rv);
  if ((rc = write_row(b, c, next, 0)) < 0) return rc;
  c->type = "MODIFIED";
  if ((rc = emit_event(c, b, next)) < 0) return rc;
  if (c->hook && (rc = c->hook(c->rv, c->old, next, c->hook_ud)) < 0) return rc;
  return 0;
}

int ctl_store_update(ctl_store_t *s, const char *kind, const char *ns, const char *name, ctl_update_fn fn,
                     void *fn_ud, unsigned flags, ctl_store_hook_fn hook, void *hook_ud, json_t **out,
                     int *changed) {
  if (out) *out = NULL;
  if (changed) *changed = 0;
  wctx_t c = {.s = s, .kind = kind, .ns = ns, .name = name, .fn = fn, .fn_ud = fn_ud, .flags = flags,
              .hook = hook, .hook_ud = hook_ud};
  int rc = s->be->ops->tx(s->be, update_tx, &c);
  if (rc < 0) {
    json_decref(c.obj);
    json_decref(c.old);
    return rc;
  }
  json_t *res;
  if (c.changed) {
    notify(&c, c.obj);
    res = c.obj;
    json_decref(c.old);
  } else {
    res = c.old;
    json_decref(c.obj);
  }
  if (changed) *changed = c.changed;
  if (out) *out = res;
  else json_decref(res);
  return 0;
}

static int delete_tx(ctl_backend_t *b, void *ud) {
  wctx_t *c = ud;
  int rc = load(b, c->kind, c->ns, c->name, &c->old);
  if (rc < 0) return rc;
  if ((rc = b->ops->del(b, c->kind, c->ns, c->name)) < 0) return rc;
  if ((rc = b->ops->next_rv(b, &c->rv)) < 0) return rc;
  c->obj = json_deep_copy(c->old);
  set_rv(c->obj, c->rv);
  c->type = "DELETED";
  if ((rc = emit_event(c, b, c->obj)) < 0) return rc;
  if (c->hook && (rc = c->hook(c->rv, c->old, NULL, c->hook_ud)) < 0) return rc;
  return 0;
}

int ctl_store_delete(ctl_store_t *s, const char *kind, const char *ns, const char *name, ctl_store_hook_fn hook,
                     void *hook_ud, json_t **out) {
  if (out) *out = NULL;
  wctx_t c = {.s = s, .kind = kind, .ns = ns, .name = name, .hook = hook, .hook_ud = hook_ud};
  int rc = s->be->ops->tx(s->be, delete_tx, &c);
  json_decref(c.old);
  if (rc < 0) {
    json_decref(c.obj);
    return rc;
  }
  notify(&c, c.obj);
  if (out) *out = c.obj;
  else json_decref(c.obj);
  return 0;
}

/* ---- batches ---- */

typedef struct bctx {
  ctl_store_t *s;
  ctl_store_step_t *steps;
  wctx_t *w;
  size_t n, at;
  int dry_run;
} bctx_t;

static int batch_tx(ctl_backend_t *b, void *ud) {
  bctx_t *x = ud;
  for (size_t i = 0; i < x->n; i++) {
    ctl_store_step_t *st = &x->steps[i];
    wctx_t *c = &x->w[i];
    x->at = i;
    *c = (wctx_t){.s = x->s, .kind = st->kind, .ns = st->ns, .name = st->name, .fn = st->fn, .fn_ud = st->fn_ud,
                  .hook = st->hook, .hook_ud = st->hook_ud};
    int rc = SK_EINVAL;
    if (st->op == CTL_STEP_DELETE) {
      rc = delete_tx(b, c);
      if (rc == 0) c->changed = 1;
    } else if (st->op == CTL_STEP_APPLY && st->fn) {
      rc = update_tx(b, c);
      if (rc == SK_ENOTFOUND && !c->old) { /* absent: a create */
        json_t *next = NULL;
        if ((rc = st->fn(NULL, &next, st->fn_ud)) < 0) return rc;
        if (!json_is_object(next)) {
          json_decref(next);
          return SK_EINVAL;
        }
        c->obj = next;
        if ((rc = create_tx(b, c)) == 0) c->changed = 1;
      }
    }
    if (rc < 0) return rc;
  }
  return x->dry_run ? SK_ECANCELED : 0;
}

int ctl_store_batch(ctl_store_t *s, ctl_store_step_t *steps, size_t n, int dry_run, size_t *failed) {
  if (failed) *failed = 0;
  for (size_t i = 0; i < n; i++) {
    steps[i].result = NULL;
    steps[i].rv = 0;
    steps[i].obj = NULL;
  }
  if (!n) return 0;
  bctx_t x = {.s = s, .steps = steps, .w = sk_xcalloc(n, sizeof(wctx_t)), .n = n, .dry_run = dry_run};
  int rc = s->be->ops->tx(s->be, batch_tx, &x);
  if (dry_run && rc == SK_ECANCELED) rc = 0;
  if (rc < 0) {
    if (failed) *failed = x.at;
    for (size_t i = 0; i < n; i++) {
      json_decref(x.w[i].obj);
      json_decref(x.w[i].old);
    }
    free(x.w);
    return rc;
  }
  for (size_t i = 0; i < n; i++) {
    wctx_t *c = &x.w[i];
    ctl_store_step_t *st = &steps[i];
    if (st->op == CTL_STEP_DELETE) {
      st->result = "deleted";
      st->obj = c->obj;
      json_decref(c->old);
    } else if (!c->old) {
      st->result = "created";
      st->obj = c->obj;
    } else if (c->changed) {
      st->result = "configured";
      st->obj = c->obj;
      json_decref(c->old);
    } else {
      st->result = "unchanged";
      st->obj = c->old;
      json_decref(c->obj);
    }
    st->rv = c->changed ? (dry_run ? 0 : c->rv) : ctl_obj_rv(st->obj);
    if (c->changed && !dry_run) notify(c, st->obj);
  }
  free(x.w);
  return 0;
}

void ctl_store_steps_done(ctl_store_step_t *steps, size_t n) {
  for (size_t i = 0; steps && i < n; i++) {
    json_decref(steps[i].obj);
    steps[i].obj = NULL;
  }
}

/* ---- lists ---- */

/* Continue tokens: hex of "namespace\nname" of the last item returned. */
static char *token_encode(const char *ns, const char *name) {
  size_t n1 = strlen(ns), n2 = strlen(name);
  char *t = sk_xmalloc((n1 + n2 + 1) * 2 + 1);
  static const char hx[] = "0123456789abcdef";
  size_t k = 0;
  for (size_t i = 0; i <= n1 + n2; i++) {
    unsigned char ch = i < n1 ? (unsigned char)ns[i] : i == n1 ? '\n' : (unsigned char)name[i - n1 - 1];
    t[k++] = hx[ch >> 4];
    t[k++] = hx[ch & 15];
  }
  t[k] = 0;
  return t;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static int token_decode(const char *t, char *ns, size_t nslen, char *name, size_t namelen) {
  size_t n = strlen(t);
  if (n == 0 || n % 2 || n > 2 * (CTL_NS_LEN + CTL_NAME_LEN + 1)) return SK_EINVAL;
  char buf[CTL_NS_LEN + CTL_NAME_LEN + 2];
  size_t k = 0;
  for (size_t i = 0; i < n; i += 2) {
    int a = hexval(t[i]), b = hexval(t[i + 1]);
    if (a < 0 || b < 0) return SK_EINVAL;
    buf[k++] = (char)(a << 4 | b);
  }
  buf[k] = 0;
  if (memchr(buf, 0, k)) return SK_EINVAL;
  char *nl = strchr(buf, '\n');
  if (!nl || strchr(nl + 1, '\n')) return SK_EINVAL;
  *nl = 0;
  size_t nsl = (size_t)(nl - buf), nml = strlen(nl + 1);
  if (nsl >= nslen || nml >= namelen) return SK_EINVAL;
  memcpy(ns, buf, nsl + 1);
  memcpy(name, nl + 1, nml + 1);
  return 0;
}

typedef struct list_ctx {
  const ctl_list_opts_t *o;
  json_t *items;
  int more;
  char last_ns[CTL_NS_LEN + 1], last_name[CTL_NAME_LEN + 1];
} list_ctx_t;

static int list_row(const ctl_row_t *r, void *ud) {
  list_ctx_t *c = ud;
  if (c->o->sel && c->o->sel->n) {
    json_t *labels = json_loads(r->labels, 0, NULL);
    int ok = ctl_selector_match(c->o->sel, labels);
    json_decref(labels);
    if (!ok) return 0;
  }
  if (c->o->limit && json_array_size(c->items) >= c->o->limit) {
    c->more = 1;
    return 1;
  }
  json_t *obj = parse_body(r->body);
  if (!obj) return SK_EPARSE;
  json_array_append_new(c->items, obj);
  snprintf(c->last_ns, sizeof c->last_ns, "%s", r->ns);
  snprintf(c->last_name, sizeof c->last_name, "%s", r->name);
  return 0;
}

int ctl_store_list(ctl_store_t *s, const char *kind, const ctl_list_opts_t *o, json_t **items, char **next,
                   int64_t *rv) {
  static const ctl_list_opts_t none = {0};
  if (!o) o = &none;
  *items = NULL;
  if (next) *next = NULL;
  char ans[CTL_NS_LEN + 2], aname[CTL_NAME_LEN + 2];
  int have_after = 0;
  if (o->cont && *o->cont) {
    if (token_decode(o->cont, ans, sizeof ans, aname, sizeof aname) < 0) return SK_EINVAL;
    have_after = 1;
  }
  list_ctx_t c = {.o = o, .items = json_array()};
  if (rv) *rv = ctl_store_rv(s);
  int rc = s->be->ops->list(s->be, kind, o->ns, have_after ? ans : NULL, have_after ? aname : NULL, list_row, &c);
  if (rc < 0) {
    json_decref(c.items);
    return rc;
  }
  if (c.more && next) *next = token_encode(c.last_ns, c.last_name);
  *items = c.items;
  return 0;
}

/* ---- events ---- */

typedef struct evs_ctx {
  ctl_store_ev_fn fn;
  void *ud;
} evs_ctx_t;

static int ev_row(const ctl_event_row_t *e, void *ud) {
  evs_ctx_t *c = ud;
  return c->fn(e->rv, e->type, e->kind, e->object, c->ud);
}

int ctl_store_events_since(ctl_store_t *s, int64_t after, ctl_store_ev_fn fn, void *ud) {
  if (after < ctl_store_compacted_rv(s)) return SK_ERANGE;
  evs_ctx_t c = {fn, ud};
  int rc = s->be->ops->events_since(s->be, after, ev_row, &c);
  return rc < 0 ? rc : 0;
}
