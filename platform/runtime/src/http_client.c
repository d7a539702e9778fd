/* The HTTP client core: requests, their deadlines, a per-origin pool of
 * HTTP/1.1 keep-alive connections (h1_client.c) or one HTTP/2 session
 * (h2_client.c), a queue for requests waiting for a connection, and the
 * one-shot sk_http_fetch().
 *
 * Ownership: a request (sk__http_creq_t) lives in its own pool, which the
 * response shares; sk__http_creq_complete() runs the user's callback and
 * frees it. The client itself is reference counted: one reference for the
 * user, one per connection (connecting or open), so callbacks arriving
 * after sk_http_client_free() still find it.
 *
 * Deadlines: every plain request of a client has the same timeout, so the
 * requests in start order are also in deadline order. They sit on one list
 * watched by one client timer, armed for the oldest and re-armed lazily
 * when it fires, so a request costs no timer operation (a timer per
 * request would cost an allocation, a heap insert and removal and a close).
 * Streams, whose idle deadline moves with every piece, keep a timer each. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h1_int.h"
#include "http_int.h"
#include "skiff/err.h"

typedef struct pconn {
  sk_http_client_t *cl;
  sk__h1_client_t *h1;
  int busy;
  struct pconn *prev, *next;
} pconn_t;

struct sk_http_client {
  uv_loop_t *loop;
  sk_http_client_opts_t o;
  char *host, *sni, *authority;
  int refs;
  int freeing;
  pconn_t *conns;
  size_t nconns;      /* open HTTP/1.1 connections */
  size_t connecting;  /* connects in progress */
  sk__http_creq_t *qhead, *qtail; /* waiting for a connection */
  sk__h2_client_t *h2;
  int h2_connecting;
  uv_timer_t dl;                  /* deadlines of plain requests (dl_head first) */
  sk__http_creq_t *dl_head, *dl_tail;
  int dl_init;
  sk_http_client_gate_t gate;     /* all NULL without opts.gate */
  uv_timer_t *gate_timer;         /* asks conn_open again; holds a reference while armed */
};

static void cl_pump(sk_http_client_t *cl);

static void timer_free_cb(uv_handle_t *h);

static void cl_destroy(void *arg) {
  sk_http_client_t *cl = arg;
  if (cl->gate_timer) {
    if (uv_is_closing((uv_handle_t *)cl->gate_timer)) /* closed by someone walking the loop */
      sk__http_after_closes(cl->loop, free, cl->gate_timer);
    else
      uv_close((uv_handle_t *)cl->gate_timer, timer_free_cb);
  }
  if (cl->gate.done) cl->gate.done(cl->gate.ud);
  sk_tls_ctx_unref(cl->o.tls);
  free(cl->host);
  free(cl->sni);
  free(cl->authority);
  free(cl);
}

static void cl_dl_closed(uv_handle_t *h) { cl_destroy(h->data); }

static void cl_unref(sk_http_client_t *cl) {
  if (--cl->refs > 0) return;
  if (!cl->dl_init) {
    cl_destroy(cl);
  } else if (!uv_is_closing((uv_handle_t *)&cl->dl)) {
    uv_close((uv_handle_t *)&cl->dl, cl_dl_closed);
  } else { /* closed by someone walking the loop */
    sk__http_after_closes(cl->loop, cl_destroy, cl);
  }
}

size_t sk__http_client_max_body(const sk_http_client_t *cl) {
  return cl ? cl->o.max_body_bytes : (16u << 20);
}

uint64_t sk__http_client_idle_ms(const sk_http_client_t *cl) {
  return cl ? cl->o.idle_timeout_ms : 30000;
}

/* ---------------- requests ---------------- */

/* A request counted by gate.wait_start left the queue. */
static inline void q_gate_end(sk_http_client_t *cl, sk__http_creq_t *r) {
  if (!r->gate_wait) return;
  r->gate_wait = 0;
  if (cl->gate.wait_end) cl->gate.wait_end(cl->gate.ud);
}

static void q_remove(sk_http_client_t *cl, sk__http_creq_t *r) {
  if (!r->queued) return;
  r->queued = 0;
  q_gate_end(cl, r);
  sk__http_creq_t **pp = &cl->qhead, *prev = NULL;
  while (*pp && *pp != r) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  if (!*pp) return;
  *pp = r->next;
  if (cl->qtail == r) cl->qtail = prev;
  r->next = NULL;
}

static void q_push(sk_http_client_t *cl, sk__http_creq_t *r) {
  r->queued = 1;
  r->next = NULL;
  if (cl->qtail) cl->qtail->next = r;
  else cl->qhead = r;
  cl->qtail = r;
}

static sk__http_creq_t *q_pop(sk_http_client_t *cl) {
  sk__http_creq_t *r = cl->qhead;
  if (!r) return NULL;
  cl->qhead = r->next;
  if (!cl->qhead) cl->qtail = NULL;
  r->next = NULL;
  r->queued = 0;
  q_gate_end(cl, r);
  return r;
}

void sk__http_client_requeue(sk_http_client_t *cl, sk__http_creq_t *r) {
  r->cancel = NULL;
  r->proto = NULL;
  if (cl->freeing) {
    sk__http_creq_complete(r, SK_ECANCELED, NULL);
    return;
  }
  r->queued = 1;
  r->next = cl->qhead;
  cl->qhead = r;
  if (!cl->qtail) cl->qtail = r;
  /* the pool pumps once the dead connection is gone */
}

static void timer_free_cb(uv_handle_t *h) { free(h); }

/* ---- the deadline list of plain requests ---- */

static void dl_cb(uv_timer_t *t);

/* Arms the timer for the oldest request unless it is armed already: then
 * it fires no later (for that request, or one that has completed since)
 * and re-arms itself for what is left. */
static void dl_arm(sk_http_client_t *cl) {
  if (!cl->dl_head || uv_is_active((uv_handle_t *)&cl->dl) || uv_is_closing((uv_handle_t *)&cl->dl))
    return;
  uint64_t now = uv_now(cl->loop), due = cl->dl_head->due;
  uv_timer_start(&cl->dl, dl_cb, due > now ? due - now : 0, 0);
}

static void dl_push(sk_http_client_t *cl, sk__http_creq_t *r) {
  if (!cl->dl_init) {
    uv_timer_init(cl->loop, &cl->dl);
    cl->dl.data = cl;
    cl->dl_init = 1;
  }
  uint64_t ms = cl->o.request_timeout_ms;
  r->due = uv_now(cl->loop) + ms;
  r->on_dl = 1;
  r->dl_next = NULL;
  r->dl_prev = cl->dl_tail;
  if (cl->dl_tail) cl->dl_tail->dl_next = r;
  else cl->dl_head = r;
  cl->dl_tail = r;
  dl_arm(cl);
  uv_ref((uv_handle_t *)&cl->dl); /* a request waits: keep the loop alive */
}

static void dl_remove(sk_http_client_t *cl, sk__http_creq_t *r) {
  if (!r->on_dl) return;
  r->on_dl = 0;
  if (r->dl_prev) r->dl_prev->dl_next = r->dl_next;
  else cl->dl_head = r->dl_next;
  if (r->dl_next) r->dl_next->dl_prev = r->dl_prev;
  else cl->dl_tail = r->dl_prev;
  r->dl_prev = r->dl_next = NULL;
  /* nothing waits: the timer may stay armed, but holds no loop open */
  if (!cl->dl_head) uv_unref((uv_handle_t *)&cl->dl);
}

static void dl_cb(uv_timer_t *t) {
  sk_http_client_t *cl = t->data;
  uint64_t now = uv_now(t->loop);
  cl->refs++; /* completing may free the client */
  sk__http_creq_t *r;
  while ((r = cl->dl_head) != NULL && r->due <= now) {
    if (r->cancel) r->cancel(r); /* the protocol lets go of it */
    sk__http_creq_complete(r, SK_ETIMEDOUT, NULL); /* takes it off the list */
  }
  dl_arm(cl);
  cl_unref(cl);
}

void sk__http_creq_complete(sk__http_creq_t *r, int err, sk_http_resp_t *resp) {
  sk_http_client_t *cl = r->cl;
  q_remove(cl, r);
  dl_remove(cl, r);
  if (r->timer) {
    uv_timer_stop(r->timer);
    uv_close((uv_handle_t *)r->timer, timer_free_cb);
    r->timer = NULL;
  }
  r->cancel = NULL;
  r->proto = NULL;
  cl->refs++; /* the callback may free the client */
  if (r->scbs) {
    if (r->scbs->on_end) r->scbs->on_end(r, err, r->sud);
  } else if (r->cb) {
    r->cb(err, err < 0 ? NULL : resp, r->ud);
  }
  sk_pool_free(r->pool);
  if (!cl->freeing) cl_pump(cl);
  cl_unref(cl);
}

static void creq_timeout(uv_timer_t *t) {
  sk__http_creq_t *r = t->data;
  if (r->cancel) r->cancel(r); /* the protocol lets go of it */
  sk__http_creq_complete(r, SK_ETIMEDOUT, NULL);
}

/* A stream showed life: its idle deadline starts again. */
static void creq_touch(sk__http_creq_t *r) {
  if (r->timer) uv_timer_start(r->timer, creq_timeout, r->cl->o.stream_idle_timeout_ms, 0);
}

void sk__http_creq_head(sk__http_creq_t *r, sk_http_resp_t *head) {
  creq_touch(r);
  if (r->scbs && r->scbs->on_head) r->scbs->on_head(r, head, r->sud);
}

void sk__http_creq_data(sk__http_creq_t *r, const uint8_t *d, size_t n) {
  creq_touch(r);
  if (n && r->scbs && r->scbs->on_data) r->scbs->on_data(r, d, n, r->sud);
}

/* ---------------- HTTP/1.1 pool ---------------- */

static void pc_on_idle(sk__h1_client_t *h, void *ud) {
  pconn_t *pc = ud;
  sk_http_client_t *cl = pc->cl;
  pc->busy = 0;
  if (cl->freeing) return;
  sk__http_creq_t *r = q_pop(cl);
  if (!r) return;
  pc->busy = 1;
  int rc = sk__h1_client_submit(h, r);
  if (rc < 0) {
    pc->busy = 0;
    sk__http_creq_complete(r, rc, NULL);
  }
}

static void pc_on_gone(sk__h1_client_t *h, void *ud) {
  pconn_t *pc = ud;
  sk_http_client_t *cl = pc->cl;
  if (pc->prev) pc->prev->next = pc->next;
  else cl->conns = pc->next;
  if (pc->next) pc->next->prev = pc->prev;
  cl->nconns--;
  if (cl->o.conn_gauge) __atomic_sub_fetch(cl->o.conn_gauge, 1, __ATOMIC_RELAXED);
  free(pc);
  if (cl->gate.conn_closed) cl->gate.conn_closed(cl->gate.ud);
  if (!cl->freeing) cl_pump(cl); /* a slot opened for queued requests */
  cl_unref(cl);
}

static void fail_queue(sk_http_client_t *cl, int err) {
  sk__http_creq_t *r;
  while ((r = q_pop(cl)) != NULL) sk__http_creq_complete(r, err, NULL);
}

static void on_h2_gone(sk__h2_client_t *s, void *ud) {
  sk_http_client_t *cl = ud;
  if (cl->h2 == s) cl->h2 = NULL;
  if (cl->o.conn_gauge) __atomic_sub_fetch(cl->o.conn_gauge, 1, __ATOMIC_RELAXED);
  if (cl->gate.conn_closed) cl->gate.conn_closed(cl->gate.ud);
  if (!cl->freeing) cl_pump(cl);
  cl_unref(cl);
}

static void on_connected(sk_conn_t *c, int err, void *ud) {
  sk_http_client_t *cl = ud;
  int h2 = cl->o.version == 20;
  if (h2) cl->h2_connecting = 0;
  else cl->connecting--;
  if ((err < 0 || !c) && cl->gate.conn_closed) cl->gate.conn_closed(cl->gate.ud);
  if (err < 0 || !c) {
    /* with no other way to reach the origin, every waiting request fails;
     * otherwise the oldest one does and the rest wait */
    if (!cl->freeing) {
      if (h2 || (cl->nconns == 0 && cl->connecting == 0)) {
        fail_queue(cl, err < 0 ? err : SK_ECONNREFUSED);
      } else {
        sk__http_creq_t *r = q_pop(cl);
        if (r) sk__http_creq_complete(r, err < 0 ? err : SK_ECONNREFUSED, NULL);
      }
    }
    cl_unref(cl);
    return;
  }
  if (h2) {
    const char *alpn = sk_conn_alpn(c);
    if (cl->o.tls && (!alpn || strcmp(alpn, "h2") != 0)) {
      sk_conn_close(c);
      if (cl->gate.conn_closed) cl->gate.conn_closed(cl->gate.ud);
      if (!cl->freeing) fail_queue(cl, SK_EPROTO);
      cl_unref(cl);
      return;
    }
    cl->h2 = sk__h2_client_new(c, cl, on_h2_gone, cl); /* keeps the reference */
    if (cl->o.conn_gauge) __atomic_add_fetch(cl->o.conn_gauge, 1, __ATOMIC_RELAXED);
    if (cl->freeing) sk__h2_client_close(cl->h2);
    else cl_pump(cl);
    return;
  }
  pconn_t *pc = sk_xcalloc(1, sizeof *pc);
  pc->cl = cl;
  pc->busy = 1;
  pc->next = cl->conns;
  if (cl->conns) cl->conns->prev = pc;
  cl->conns = pc;
  cl->nconns++;
  if (cl->o.conn_gauge) __atomic_add_fetch(cl->o.conn_gauge, 1, __ATOMIC_RELAXED);
  pc->h1 = sk__h1_client_new(c, cl, pc_on_idle, pc_on_gone, pc); /* keeps the reference */
  if (cl->freeing) {
    sk__h1_client_close(pc->h1);
    return;
  }
  pc_on_idle(pc->h1, pc);
}

static void gate_timer_cb(uv_timer_t *t) {
  sk_http_client_t *cl = t->data;
  if (!cl->freeing) cl_pump(cl);
  cl_unref(cl); /* the reference taken when armed */
}

/* The gate refused a connection: ask again in retry_ms (once armed, the
 * timer holds a client reference until it fires or the client is freed). */
static void gate_arm(sk_http_client_t *cl) {
  if (!cl->gate_timer) {
    cl->gate_timer = sk_xmalloc(sizeof *cl->gate_timer);
    uv_timer_init(cl->loop, cl->gate_timer);
    cl->gate_timer->data = cl;
  }
  if (uv_is_active((uv_handle_t *)cl->gate_timer) || uv_is_closing((uv_handle_t *)cl->gate_timer)) return;
  cl->refs++;
  uv_timer_start(cl->gate_timer, gate_timer_cb, cl->gate.retry_ms, 0);
}

/* 1 when a request submitted now goes out at once (nothing queued, and an
 * idle HTTP/1.1 connection or a free h2 stream). */
static int cl_can_send_now(const sk_http_client_t *cl) {
  if (cl->qhead) return 0;
  if (cl->o.version == 20) return cl->h2 && sk__h2_client_can_submit(cl->h2);
  for (const pconn_t *pc = cl->conns; pc; pc = pc->next)
    if (!pc->busy) return 1;
  return 0;
}

/* SK_ELIMIT when the gate says not now. */
static int start_connect(sk_http_client_t *cl) {
  if (cl->gate.conn_open && cl->gate.conn_open(cl->gate.ud) != 0) {
    gate_arm(cl);
    return SK_ELIMIT;
  }
  sk_connect_opts_t co = {
      .host = cl->host,
      .port = cl->o.port,
      .tls = cl->o.tls,
      .sni = cl->sni,
      .timeout_ms = cl->o.connect_timeout_ms,
  };
  cl->refs++;
  if (cl->o.version == 20) cl->h2_connecting = 1;
  else cl->connecting++;
  int rc = sk_conn_connect(cl->loop, &co, on_connected, cl);
  if (rc < 0) {
    if (cl->o.version == 20) cl->h2_connecting = 0;
    else cl->connecting--;
    cl->refs--;
    if (cl->gate.conn_closed) cl->gate.conn_closed(cl->gate.ud);
  }
  return rc;
}

/* Hands queued requests to connections, opening new ones as allowed. */
static void cl_pump(sk_http_client_t *cl) {
  if (cl->freeing || !cl->qhead) return;
  if (cl->o.version == 20) {
    while (cl->qhead && cl->h2 && sk__h2_client_can_submit(cl->h2)) {
      sk__http_creq_t *r = q_pop(cl);
      int rc = sk__h2_client_submit(cl->h2, r);
      if (rc < 0) sk__http_creq_complete(r, rc, NULL);
    }
    if (cl->qhead && !cl->h2 && !cl->h2_connecting) {
      int rc = start_connect(cl);
      if (rc < 0 && rc != SK_ELIMIT) fail_queue(cl, rc); /* SK_ELIMIT: the gate timer asks again */
    }
    return;
  }
  for (pconn_t *pc = cl->conns, *next; pc && cl->qhead; pc = next) {
    next = pc->next;
    if (!pc->busy) pc_on_idle(pc->h1, pc);
  }
  /* one new connection per waiting request, up to max_conns */
  size_t waiting = 0;
  for (sk__http_creq_t *q = cl->qhead; q; q = q->next) waiting++;
  while (waiting > cl->connecting && cl->nconns + cl->connecting < cl->o.max_conns) {
    int rc = start_connect(cl);
    if (rc < 0) {
      if (rc != SK_ELIMIT && cl->nconns + cl->connecting == 0) fail_queue(cl, rc);
      break;
    }
  }
}

/* ---------------- API ---------------- */

int sk_http_client_new(uv_loop_t *loop, const sk_http_client_opts_t *o, sk_http_client_t **out) {
  if (!loop || !o || !out || !o->host || !*o->host || o->port <= 0 || o->port > 65535)
    return SK_EINVAL;
  if (o->version && o->version != 11 && o->version != 20) return SK_EINVAL;
  sk_http_client_t *cl = sk_xcalloc(1, sizeof *cl);
  cl->loop = loop;
  cl->o = *o;
  cl->refs = 1;
  cl->host = sk_xstrdup(o->host);
  cl->sni = o->sni ? sk_xstrdup(o->sni) : NULL;
  cl->o.host = cl->host;
  cl->o.sni = cl->sni;
  cl->o.tls = o->tls ? sk_tls_ctx_ref(o->tls) : NULL;
  if (!cl->o.version) cl->o.version = 11;
  if (!cl->o.max_conns) cl->o.max_conns = 8;
  if (!cl->o.max_body_bytes) cl->o.max_body_bytes = 16u << 20;
  if (!cl->o.connect_timeout_ms) cl->o.connect_timeout_ms = 5000;
  if (!cl->o.request_timeout_ms) cl->o.request_timeout_ms = 30000;
  if (!cl->o.idle_timeout_ms) cl->o.idle_timeout_ms = 30000;
  if (!cl->o.stream_idle_timeout_ms) cl->o.stream_idle_timeout_ms = 60000;
  if (o->gate) cl->gate = *o->gate;
  if (!cl->gate.retry_ms) cl->gate.retry_ms = 10;
  cl->o.gate = NULL;
  int tls_default = cl->o.tls ? 443 : 80;
  if (strchr(o->host, ':')) /* IPv6 literal */
    cl->authority = o->port == tls_default ? sk_xstrdup(o->host) : NULL;
  if (!cl->authority) {
    char buf[600];
    if (strchr(o->host, ':')) snprintf(buf, sizeof buf, "[%s]:%d", o->host, o->port);
    else if (o->port == tls_default) snprintf(buf, sizeof buf, "%s", o->host);
    else snprintf(buf, sizeof buf, "%s:%d", o->host, o->port);
    cl->authority = sk_xstrdup(buf);
  }
  *out = cl;
  return 0;
}

static int creq_start(sk_http_client_t *cl, const char *method, const char *path,
                      const sk_http_header_t *hdrs, size_t nhdrs, const void *body, size_t len,
                      sk_http_client_cb cb, void *ud, const sk_http_stream_cbs_t *scbs,
                      sk__http_creq_t **out) {
  if (!cl || !method || !*method || !path || !*path || (nhdrs && !hdrs) || (len && !body))
    return SK_EINVAL;
  if (cl->freeing) return SK_ECANCELED;
  for (const char *m = method; *m; m++)
    if (!sk__h1_is_tchar((unsigned char)*m)) return SK_EINVAL;
  for (const char *p = path; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return SK_EINVAL;
  int gate_wait = 0;
  if (cl->gate.wait_start && !cl_can_send_now(cl)) {
    if (cl->gate.wait_start(cl->gate.ud) != 0) return SK_ELIMIT;
    gate_wait = 1;
  }
  sk_pool_t *pool = sk_pool_new();
  sk__http_creq_t *r = sk_pool_calloc(pool, sizeof *r);
  r->cl = cl;
  r->pool = pool;
  r->method = sk_pool_strdup(pool, method);
  r->path = sk_pool_strdup(pool, path);
  r->scheme = cl->o.tls ? "https" : "http";
  /* the request owns copies: name and value of a field share one piece */
  const char *host = NULL;
  r->headers.v = sk_pool_alloc(pool, (nhdrs ? nhdrs : 1) * sizeof *r->headers.v);
  r->headers.cap = nhdrs;
  for (size_t i = 0; i < nhdrs; i++) {
    const char *n = hdrs[i].name, *v = hdrs[i].value ? hdrs[i].value : "";
    if (!n) continue;
    size_t nl = strlen(n), vl = strlen(v);
    char *d = sk_pool_alloc(pool, nl + vl + 2);
    memcpy(d, n, nl + 1);
    memcpy(d + nl + 1, v, vl + 1);
    sk_http_header_t *o = &r->headers.v[r->headers.n++];
    o->name = d;
    o->value = d + nl + 1;
    if (nl == 4 && hdrs[i].value && sk__h1_ieq_lit(n, "host", 4)) host = o->value;
  }
  r->authority = host ? host : sk_pool_strdup(pool, cl->authority);
  r->body = len ? sk_pool_memdup(pool, body, len) : NULL;
  r->body_len = len;
  r->cb = cb;
  r->ud = ud;
  r->scbs = scbs;
  r->sud = scbs ? ud : NULL;
  if (scbs) {
    r->timer = sk_xmalloc(sizeof *r->timer);
    uv_timer_init(cl->loop, r->timer);
    r->timer->data = r;
    uv_timer_start(r->timer, creq_timeout, cl->o.stream_idle_timeout_ms, 0);
  } else {
    dl_push(cl, r);
  }
  if (out) *out = r;
  r->gate_wait = gate_wait;
  q_push(cl, r);
  cl_pump(cl); /* may complete r (connect failed at once): *out is set first */
  return 0;
}

int sk_http_client_request(sk_http_client_t *cl, const char *method, const char *path,
                           const sk_http_header_t *hdrs, size_t nhdrs, const void *body,
                           size_t len, sk_http_client_cb cb, void *ud) {
  return creq_start(cl, method, path, hdrs, nhdrs, body, len, cb, ud, NULL, NULL);
}

int sk_http_client_stream(sk_http_client_t *cl, const char *method, const char *path,
                          const sk_http_header_t *hdrs, size_t nhdrs, const void *body,
                          size_t len, const sk_http_stream_cbs_t *cbs, void *ud,
                          sk_http_stream_t **out) {
  static const sk_http_stream_cbs_t none = {0};
  if (out) *out = NULL;
  return creq_start(cl, method, path, hdrs, nhdrs, body, len, NULL, ud, cbs ? cbs : &none, out);
}

void sk_http_stream_cancel(sk_http_stream_t *r) {
  static const sk_http_stream_cbs_t silent = {0};
  if (!r) return;
  if (r->cancel) r->cancel(r); /* the protocol lets go of it */
  r->scbs = &silent;
  sk__http_creq_complete(r, SK_ECANCELED, NULL);
}

void sk_http_client_close_idle(sk_http_client_t *cl) {
  if (!cl || cl->freeing) return;
  for (pconn_t *pc = cl->conns, *next; pc; pc = next) {
    next = pc->next;
    if (pc->busy) continue;
    pc->busy = 1; /* closing: the pump must not hand it a request */
    sk__h1_client_close(pc->h1); /* gone (and the slot back) comes later */
  }
  if (cl->h2 && !cl->qhead && sk__h2_client_open_streams(cl->h2) == 0)
    sk__h2_client_close(cl->h2); /* takes no new streams from now; gone comes later */
}

void sk_http_client_free(sk_http_client_t *cl) {
  if (!cl || cl->freeing) return;
  cl->freeing = 1;
  cl->refs++;
  if (cl->gate_timer && uv_is_active((uv_handle_t *)cl->gate_timer)) {
    uv_timer_stop(cl->gate_timer);
    cl->refs--; /* the armed timer's reference (the guard above keeps refs > 0) */
  }
  fail_queue(cl, SK_ECANCELED);
  for (pconn_t *pc = cl->conns, *next; pc; pc = next) {
    next = pc->next;
    sk__h1_client_close(pc->h1); /* fails its request; gone comes later */
  }
  if (cl->h2) sk__h2_client_close(cl->h2);
  cl->refs--;   /* the guard taken above (the user's reference keeps refs > 0) */
  cl_unref(cl); /* the user's reference */
}

/* ---------------- sk_http_fetch ---------------- */

typedef struct fetch_state {
  int done, err;
  sk_http_resp_t *resp;
} fetch_state_t;

sk_http_resp_t *sk_http_resp_dup(const sk_http_resp_t *resp) {
  if (!resp) return NULL;
  sk_pool_t *p = sk_pool_new();
  sk_http_resp_t *c = sk_pool_calloc(p, sizeof *c);
  c->pool = p;
  c->status = resp->status;
  c->version = resp->version;
  for (size_t i = 0; i < resp->headers.n; i++)
    sk_http_headers_add(&c->headers, p, resp->headers.v[i].name, resp->headers.v[i].value);
  uint8_t *b = sk_pool_alloc(p, resp->body_len + 1);
  if (resp->body_len) memcpy(b, resp->body, resp->body_len);
  b[resp->body_len] = 0;
  c->body = b;
  c->body_len = resp->body_len;
  return c;
}

static void fetch_cb(int err, sk_http_resp_t *resp, void *ud) {
  fetch_state_t *st = ud;
  st->done = 1;
  st->err = err;
  if (err < 0 || !resp) return;
  /* the response's pool goes after this callback: copy into our own */
  st->resp = sk_http_resp_dup(resp);
}

/* http[s]://host[:port][/path] -> parts; host may be [v6]. */
static int parse_url(const char *url, int *tls, char *host, size_t hostlen, int *port,
                     const char **path) {
  const char *p;
  if (!strncasecmp(url, "http://", 7)) {
    *tls = 0;
    p = url + 7;
  } else if (!strncasecmp(url, "https://", 8)) {
    *tls = 1;
    p = url + 8;
  } else {
    return SK_EINVAL;
  }
  const char *hs = p, *he;
  if (*p == '[') {
    he = strchr(p, ']');
    if (!he) return SK_EINVAL;
    hs = p + 1;
    p = he + 1;
  } else {
    while (*p && *p != ':' && *p != '/' && *p != '?') p++;
    he = p;
  }
  size_t hl = (size_t)(he - hs);
  if (hl == 0 || hl >= hostlen) return SK_EINVAL;
  memcpy(host, hs, hl);
  host[hl] = 0;
  *port = *tls ? 443 : 80;
  if (*p == ':') {
    char *end;
    long v = strtol(p + 1, &end, 10);
    if (end == p + 1 || v <= 0 || v > 65535) return SK_EINVAL;
    *port = (int)v;
    p = end;
  }
  if (*p && *p != '/' && *p != '?') return SK_EINVAL;
  *path = *p ? p : "/";
  return 0;
}

int sk_http_url_parse(const char *url, sk_http_url_t *out) {
  if (!url || !out) return SK_EINVAL;
  memset(out, 0, sizeof *out);
  int rc = parse_url(url, &out->tls, out->host, sizeof out->host, &out->port, &out->path);
  if (rc < 0) return rc;
  /* parse_url fills in the scheme's port: report "none given" as 0 */
  const char *a = url + (out->tls ? 8 : 7);
  const char *e = a + strcspn(a, "/?");
  const char *colon = NULL;
  for (const char *q = a; q < e; q++)
    if (*q == ':') colon = q;
  if (!colon || (*a == '[' && colon < (const char *)memchr(a, ']', (size_t)(e - a)))) out->port = 0;
  return 0;
}

static void fetch_close_walk(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

int sk_http_fetch(const char *method, const char *url, sk_tls_ctx_t *tls, const void *body,
                  size_t len, uint64_t timeout_ms, sk_http_resp_t **resp) {
  if (!method || !url || !resp) return SK_EINVAL;
  *resp = NULL;
  int use_tls, port, rc;
  char host[256];
  const char *path;
  rc = parse_url(url, &use_tls, host, sizeof host, &port, &path);
  if (rc < 0) return rc;
  char *own_path = NULL;
  if (*path == '?') { /* "http://h?x" */
    own_path = sk_xmalloc(strlen(path) + 2);
    own_path[0] = '/';
    strcpy(own_path + 1, path);
    path = own_path;
  }
  sk_tls_ctx_t *own_tls = NULL;
  uv_loop_t loop;
  sk_http_client_t *cl = NULL;
  fetch_state_t st = {0};
  if (use_tls && !tls) {
    sk_tls_opts_t to = {.is_server = 0, .alpn = "http/1.1"};
    rc = sk_tls_ctx_new(&to, &own_tls, NULL, 0);
    if (rc < 0) goto out_noloop;
    tls = own_tls;
  }
  if (uv_loop_init(&loop) != 0) {
    rc = SK_ENOMEM;
    goto out_noloop;
  }
  sk_http_client_opts_t o = {
      .host = host,
      .port = port,
      .tls = use_tls ? tls : NULL,
      .max_conns = 1,
      .request_timeout_ms = timeout_ms ? timeout_ms : 30000,
      .connect_timeout_ms = timeout_ms ? timeout_ms : 5000,
  };
  rc = sk_http_client_new(&loop, &o, &cl);
  if (rc < 0) goto out;
  rc = sk_http_client_request(cl, method, path, NULL, 0, body, len, fetch_cb, &st);
  if (rc < 0) goto out;
  while (!st.done && uv_run(&loop, UV_RUN_ONCE)) {
  }
  rc = st.done ? st.err : SK_EIO;
  if (rc >= 0) *resp = st.resp;
  else sk_http_resp_free(st.resp);
out:
  sk_http_client_free(cl);
  uv_run(&loop, UV_RUN_DEFAULT); /* connections finish closing */
  if (uv_loop_close(&loop) != 0) {
    uv_walk(&loop, fetch_close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
out_noloop:
  sk_tls_ctx_unref(own_tls);
  free(own_path);
  return rc < 0 ? rc : 0;
}

void sk_http_resp_free(sk_http_resp_t *resp) {
  if (resp) sk_pool_free(resp->pool);
}
