/* Config push to proxies: the snapshot stream, ACK/NACK and the list of
 * proxies (see ctl_push.h for the protocol and its authorization).
 *
 * One snapshot at a time: the compiled config, serialised once into the
 * line every stream is sent. A store change arms a short timer (bursts of
 * changes, e.g. `skiff apply -f` of many documents, compile once); the
 * compile runs, and only a config that differs from the last one becomes
 * a new version. Every proxy seen is remembered (bounded, the oldest
 * disconnected one is forgotten first) with what it was sent and what it
 * acknowledged, so `skiff proxies` shows a proxy that is stuck on a NACK
 * or has gone away. */
#include "ctl_push.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "skiff/json.h"

typedef struct pnode pnode_t;

struct pnode {
  ctl_push_t *p;
  char node[CTL_PUSH_NODE_MAX + 1];
  char identity[CTL_NAME_MAX];
  char addr[80];
  int64_t since_ms;       /* stream opened (or last seen) */
  int64_t sent, acked;    /* versions */
  int64_t nack_version, nack_at_ms;
  int64_t acked_at_ms;    /* when the acked version was acknowledged */
  char *nack_err;
  uint64_t due_ns;        /* when the version in flight became due (0: none) */
  sk_http_req_t *req;     /* open stream, or NULL */
  int slow;               /* stream over its queue bound: to be ended */
  pnode_t *prev, *next;   /* most recently connected first */
};

struct ctl_push {
  uv_loop_t *loop;
  ctl_push_opts_t o;
  uv_timer_t coalesce, heartbeat;
  int coalescing;
  uint64_t burst_ns;      /* first change of the burst being coalesced */
  int64_t version;
  char *config_text;      /* compact JSON of the current config */
  sk_buf_t line;          /* the SNAPSHOT line, '\n' terminated */
  pnode_t *nodes;
  size_t nnodes, nstreams;
  int ending;
  sk_gauge_t *g_connected;
  sk_counter_t *c_pushes, *c_acks, *c_nacks, *c_compiles;
  sk_counter_t *c_slow;   /* streams ended because the proxy stopped reading */
  sk_histogram_t *h_prop;
  sk_gauge_t *g_version;
};

int ctl_push_valid_node(const char *s) {
  size_t n = 0;
  if (!s) return 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return n >= 1 && n <= CTL_PUSH_NODE_MAX;
}

/* ---------------- snapshots ---------------- */

static int compile(ctl_push_t *p, int *changed) {
  ctl_errs_t warn;
  ctl_errs_init(&warn);
  json_t *cfg = NULL;
  int64_t rv = 0;
  *changed = 0;
  int rc = ctl_compile_proxy(p->o.store, &cfg, &rv, &warn);
  if (rc < 0) return rc;
  sk_counter_inc(p->c_compiles);
  sk_buf_t t;
  sk_buf_init(&t);
  sk_json_dump_buf(cfg, &t);
  if (p->config_text && !strcmp(p->config_text, sk_buf_cstr(&t))) {
    sk_buf_done(&t);
    json_decref(cfg);
    return 0;
  }
  free(p->config_text);
  p->config_text = sk_xstrdup(sk_buf_cstr(&t));
  sk_buf_done(&t);
  p->version = rv > p->version ? rv : p->version + 1;
  json_t *w = json_array();
  for (size_t i = 0; i < warn.n; i++)
    json_array_append_new(w, json_pack("{s:s, s:s}", "field", warn.v[i].field, "message", warn.v[i].message));
  json_t *snap = json_pack("{s:s, s:I, s:o, s:o}", "type", "SNAPSHOT", "version", (json_int_t)p->version,
                           "config", cfg, "warnings", w);
  sk_buf_reset(&p->line);
  sk_json_dump_buf(snap, &p->line);
  sk_buf_puts(&p->line, "\n");
  json_decref(snap);
  sk_gauge_set(p->g_version, (double)p->version);
  *changed = 1;
  return 0;
}

static void stream_end(pnode_t *n);

/* A proxy that stopped reading: its stream holds more than a bound of
 * unsent bytes (one snapshot on top of CTL_PUSH_MAX_QUEUED, so a normal
 * reader still taking the previous large snapshot is not cut off). It is
 * ended instead of queueing more; the proxy reconnects and gets the
 * current snapshot. Marks such a stream (ended by end_slow_streams once
 * the loop over the nodes is done) and returns 1. */
static int stream_slow(pnode_t *n) {
  if (n->slow) return 1;
  if (sk_http_resp_queued(n->req) < CTL_PUSH_MAX_QUEUED + n->p->line.len) return 0;
  n->slow = 1;
  return 1;
}

/* Ending a response may run the next pipelined request on its connection,
 * which may change the node list: start over from the head each time. */
static void end_slow_streams(ctl_push_t *p) {
  for (;;) {
    pnode_t *n = p->nodes;
    while (n && !(n->req && n->slow)) n = n->next;
    if (!n) return;
    n->slow = 0;
    if (p->o.log) {
      char qs[32];
      snprintf(qs, sizeof qs, "%zu", sk_http_resp_queued(n->req));
      sk_log_kv(p->o.log, SK_LOG_WARN, "proxy config stream not read; closing it", "node", n->node, "peer",
                n->addr, "queued_bytes", qs, NULL);
    }
    sk_counter_inc(p->c_slow);
    stream_end(n);
  }
}

static void send_snapshot(pnode_t *n, uint64_t due_ns) {
  if (!n->req || !n->p->line.len) return;
  if (stream_slow(n)) return;
  if (sk_http_resp_write(n->req, n->p->line.data, n->p->line.len) < 0) return;
  n->sent = n->p->version;
  n->due_ns = due_ns;
  sk_counter_inc(n->p->c_pushes);
}

static void coalesce_cb(uv_timer_t *t) {
  ctl_push_t *p = t->data;
  p->coalescing = 0;
  int changed = 0;
  int rc = compile(p, &changed);
  if (rc < 0) { /* the store failed us: try again in a second, the change is not lost */
    if (p->o.log)
      sk_log_kv(p->o.log, SK_LOG_ERROR, "proxy config compile failed; retrying", "error",
                ctl_store_errmsg(p->o.store), NULL);
    if (!p->ending) {
      p->coalescing = 1;
      uv_timer_start(&p->coalesce, coalesce_cb, 1000, 0);
    }
    return;
  }
  if (!changed) return;
  for (pnode_t *n = p->nodes; n; n = n->next) send_snapshot(n, p->burst_ns);
  end_slow_streams(p);
}

void ctl_push_changed(ctl_push_t *p) {
  if (!p || p->ending || p->coalescing) return;
  p->coalescing = 1;
  p->burst_ns = uv_hrtime();
  uv_timer_start(&p->coalesce, coalesce_cb, p->o.coalesce_ms, 0);
}

int64_t ctl_push_version(const ctl_push_t *p) { return p ? p->version : 0; }
size_t ctl_push_stream_count(const ctl_push_t *p) { return p ? p->nstreams : 0; }

static void heartbeat_cb(uv_timer_t *t) {
  ctl_push_t *p = t->data;
  char line[64];
  int len = snprintf(line, sizeof line, "{\"type\":\"HEARTBEAT\",\"version\":%lld}\n", (long long)p->version);
  for (pnode_t *n = p->nodes; n; n = n->next)
    if (n->req && !stream_slow(n)) sk_http_resp_write(n->req, line, (size_t)len);
  end_slow_streams(p);
}

/* ---------------- nodes ---------------- */

static pnode_t *node_find(ctl_push_t *p, const char *node) {
  for (pnode_t *n = p->nodes; n; n = n->next)
    if (!strcmp(n->node, node)) return n;
  return NULL;
}

static void node_unlink(pnode_t *n) {
  ctl_push_t *p = n->p;
  if (n->prev) n->prev->next = n->next;
  else p->nodes = n->next;
  if (n->next) n->next->prev = n->prev;
  n->prev = n->next = NULL;
}

static void node_push_front(pnode_t *n) {
  ctl_push_t *p = n->p;
  n->next = p->nodes;
  if (p->nodes) p->nodes->prev = n;
  p->nodes = n;
}

static void node_free(pnode_t *n) {
  if (!n) return;
  free(n->nack_err);
  free(n);
}

static void stream_gone(pnode_t *n) {
  ctl_push_t *p = n->p;
  n->req = NULL;
  n->slow = 0;
  p->nstreams--;
  sk_gauge_set(p->g_connected, (double)p->nstreams);
}

static void stream_abort(sk_http_req_t *req, void *ud) {
  (void)req;
  stream_gone(ud);
}

static void stream_end(pnode_t *n) {
  sk_http_req_t *req = n->req;
  if (!req) return;
  stream_gone(n);
  sk_http_req_on_abort(req, NULL, NULL);
  sk_http_resp_end(req);
}

/* Room for one more node: forget the oldest disconnected one. */
static int node_make_room(ctl_push_t *p) {
  if (p->nnodes < p->o.max_nodes) return 0;
  pnode_t *last = NULL;
  for (pnode_t *n = p->nodes; n; n = n->next)
    if (!n->req) last = n;
  if (!last) return SK_ELIMIT;
  node_unlink(last);
  node_free(last);
  p->nnodes--;
  return 0;
}

/* ---------------- HTTP ---------------- */

/* The node a proxy identity stands for ("" when the principal is not one). */
static void principal_node(const ctl_principal_t *pr, char *out, size_t outlen) {
  out[0] = 0;
  const char *name = NULL;
  if (pr->via == CTL_VIA_MTLS) {
    const char *s = strstr(pr->name, "/proxy/");
    if (s && !strchr(s + 7, '/')) name = s + 7;
  } else if (pr->via == CTL_VIA_TOKEN && !strncmp(pr->name, "proxy:", 6)) {
    name = pr->name + 6;
  }
  if (name) snprintf(out, outlen, "%s", name);
}

static int respond_error(sk_http_req_t *req, int status, const char *msg) {
  return ctl_http_error(req, status, msg);
}

/* Authenticates; checks that the principal may act for node (open its
 * stream, ACK for it): that proxy's own identity, or the operator role and
 * up. A viewer that is no proxy could otherwise take over a node's entry
 * (a second stream replaces the first). 0, or answered. */
static int guard(ctl_push_t *p, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req, const char *node,
                 const char *what, ctl_principal_t *pr) {
  (void)p;
  if (!auth) {
    memset(pr, 0, sizeof *pr);
    snprintf(pr->name, sizeof pr->name, "anonymous");
    pr->role = CTL_ROLE_ADMIN;
    return 0;
  }
  if (ctl_auth_guard(auth, audit, req, CTL_VERB_GET, "ProxyConfig", NULL, node, pr) < 0) return -1;
  char own[CTL_NAME_MAX];
  principal_node(pr, own, sizeof own);
  if (own[0]) {
    if (node && strcmp(own, node)) {
      char *m = sk_pool_printf(req->pool, "%s may act for proxy node '%s' only, not '%s'", pr->name, own, node);
      respond_error(req, 403, m);
      return -1;
    }
    return 0;
  }
  if (pr->role < CTL_ROLE_OPERATOR) {
    char *m = sk_pool_printf(req->pool, "%s for proxy node '%s' needs that proxy's identity or the operator role",
                             what, node ? node : "");
    respond_error(req, 403, m);
    return -1;
  }
  return 0;
}

static void do_stream(ctl_push_t *p, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req) {
  const char *node = ctl__query_get(req->query, "node", req->pool);
  ctl_principal_t pr;
  if (node && !ctl_push_valid_node(node)) {
    respond_error(req, 400, "node: 1 to 128 characters of [A-Za-z0-9._-] expected");
    return;
  }
  if (guard(p, auth, audit, req, node, "the config stream", &pr) < 0) return;
  char own[CTL_NAME_MAX];
  principal_node(&pr, own, sizeof own);
  if (!node) {
    if (!own[0] || !ctl_push_valid_node(own)) {
      respond_error(req, 400, "node: missing (GET /api/v1/proxyconfig?watch=true&node=<id>)");
      return;
    }
    node = sk_pool_strdup(req->pool, own);
  }
  if (p->ending) {
    respond_error(req, 503, "draining");
    return;
  }
  if (!p->line.len) { /* the first stream since start: compile now */
    int changed;
    if (compile(p, &changed) < 0) {
      respond_error(req, 500, ctl_store_errmsg(p->o.store));
      return;
    }
  }
  pnode_t *n = node_find(p, node);
  if (n && n->req) stream_end(n); /* the proxy reconnected: the old stream is stale */
  if (!n && p->nstreams >= p->o.max_streams) {
    respond_error(req, 429, "too many proxy streams");
    return;
  }
  if (!n) {
    if (node_make_room(p) < 0) {
      respond_error(req, 429, "too many proxies");
      return;
    }
    n = sk_xcalloc(1, sizeof *n);
    n->p = p;
    snprintf(n->node, sizeof n->node, "%s", node);
    p->nnodes++;
  } else {
    node_unlink(n);
  }
  node_push_front(n);
  snprintf(n->identity, sizeof n->identity, "%s", pr.name);
  snprintf(n->addr, sizeof n->addr, "%s", req->peer_addr ? req->peer_addr : "");
  n->since_ms = ctl__now_ms();
  sk_http_header_t h[] = {{"content-type", "application/x-ndjson"}, {"cache-control", "no-store"}};
  if (sk_http_resp_start(req, 200, h, 2) < 0) return;
  n->req = req;
  p->nstreams++;
  sk_gauge_set(p->g_connected, (double)p->nstreams);
  sk_http_req_on_abort(req, stream_abort, n);
  send_snapshot(n, uv_hrtime());
}

int ctl_push_parse_ack(const char *body, size_t len, sk_pool_t *pool, int64_t *version,
                       const char **err_out, char *msg, size_t msglen) {
  json_t *v = NULL;
  char perr[160];
  *err_out = NULL;
  *version = 0;
  if (!body || !len) {
    snprintf(msg, msglen, "request body is empty; {\"version\":N,\"error\":null|\"...\"} expected");
    return SK_EINVAL;
  }
  if (sk_json_parse(body, len, 64 * 1024, 4, &v, perr, sizeof perr) < 0) {
    snprintf(msg, msglen, "body: %s", perr);
    return SK_EINVAL;
  }
  int rc = SK_EINVAL;
  if (!json_is_object(v)) {
    snprintf(msg, msglen, "body: a JSON object is expected");
    goto out;
  }
  const char *key;
  json_t *val;
  json_object_foreach(v, key, val) {
    if (strcmp(key, "version") && strcmp(key, "error")) {
      snprintf(msg, msglen, "body: unknown field '%.64s' (version and error expected)", key);
      goto out;
    }
  }
  json_t *ver = json_object_get(v, "version");
  if (!json_is_integer(ver) || json_integer_value(ver) < 0) {
    snprintf(msg, msglen, "version: a non-negative integer is expected");
    goto out;
  }
  json_t *e = json_object_get(v, "error");
  if (e && !json_is_null(e)) {
    if (!json_is_string(e)) {
      snprintf(msg, msglen, "error: null or a string is expected");
      goto out;
    }
    size_t el = json_string_length(e);
    if (el == 0) {
      snprintf(msg, msglen, "error: an empty string; use null for an ACK");
      goto out;
    }
    if (el > CTL_PUSH_MAX_ERROR) el = CTL_PUSH_MAX_ERROR;
    *err_out = sk_pool_strndup(pool, json_string_value(e), el);
  }
  *version = (int64_t)json_integer_value(ver);
  rc = 0;
out:
  json_decref(v);
  return rc;
}

static void do_ack(ctl_push_t *p, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req, const char *node) {
  ctl_principal_t pr;
  if (!ctl_push_valid_node(node)) {
    respond_error(req, 400, "node: 1 to 128 characters of [A-Za-z0-9._-] expected");
    return;
  }
  if (guard(p, auth, audit, req, node, "acknowledging", &pr) < 0) return;
  int64_t version;
  const char *err;
  char msg[256];
  if (ctl_push_parse_ack((const char *)req->body, req->body_len, req->pool, &version, &err, msg, sizeof msg) < 0) {
    respond_error(req, 400, msg);
    return;
  }
  pnode_t *n = node_find(p, node);
  if (!n) {
    char *m = sk_pool_printf(req->pool, "proxy node '%s' has no config stream", node);
    respond_error(req, 404, m);
    return;
  }
  if (version > p->version || version > n->sent) {
    char *m = sk_pool_printf(req->pool, "version %lld was never sent to proxy node '%s' (last sent %lld)",
                             (long long)version, node, (long long)n->sent);
    respond_error(req, 409, m);
    return;
  }
  if (err) {
    free(n->nack_err);
    n->nack_err = sk_xstrdup(err);
    n->nack_version = version;
    n->nack_at_ms = ctl__now_ms();
    sk_counter_inc(p->c_nacks);
    if (version == n->sent) n->due_ns = 0;
    if (p->o.log) {
      char vs[32];
      snprintf(vs, sizeof vs, "%lld", (long long)version);
      sk_log_kv(p->o.log, SK_LOG_WARN, "proxy rejected config snapshot", "node", node, "version", vs, "error",
                err, NULL);
    }
  } else {
    if (version > n->acked) {
      n->acked = version;
      n->acked_at_ms = ctl__now_ms();
    }
    sk_counter_inc(p->c_acks);
    if (version == n->sent && n->due_ns) {
      sk_histogram_observe(p->h_prop, (double)(uv_hrtime() - n->due_ns) / 1e9);
      n->due_ns = 0;
    }
  }
  json_t *o = json_pack("{s:s, s:I, s:s}", "node", node, "version", (json_int_t)version, "result",
                        err ? "nack" : "ack");
  ctl__respond_json(req, 200, o);
  json_decref(o);
}

static json_t *node_json(const pnode_t *n) {
  char since[40] = "";
  if (n->since_ms) ctl__rfc3339(n->since_ms / 1000, -1, since, sizeof since);
  json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:I, s:I}", "node", n->node, "identity", n->identity, "address",
                        n->addr, "connected", n->req != NULL, "connectedSince", since, "lastSentVersion",
                        (json_int_t)n->sent, "ackedVersion", (json_int_t)n->acked);
  if (n->acked_at_ms) {
    char at[40];
    ctl__rfc3339(n->acked_at_ms / 1000, (int)(n->acked_at_ms % 1000), at, sizeof at);
    json_object_set_new(o, "ackedAt", json_string(at));
  }
  if (n->nack_err) {
    char at[40];
    ctl__rfc3339(n->nack_at_ms / 1000, (int)(n->nack_at_ms % 1000), at, sizeof at);
    json_object_set_new(o, "lastNack", json_pack("{s:I, s:s, s:s}", "version", (json_int_t)n->nack_version,
                                                 "error", n->nack_err, "at", at));
  } else {
    json_object_set_new(o, "lastNack", json_null());
  }
  return o;
}

static void do_list(ctl_push_t *p, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req) {
  if (auth && ctl_auth_guard(auth, audit, req, CTL_VERB_LIST, "Proxy", NULL, NULL, NULL) < 0) return;
  json_t *items = json_array();
  for (const pnode_t *n = p->nodes; n; n = n->next) json_array_append_new(items, node_json(n));
  json_t *o = json_pack("{s:s, s:I, s:o}", "kind", "ProxyList", "version", (json_int_t)p->version, "items", items);
  ctl__respond_json(req, 200, o);
  json_decref(o);
}

int ctl_push_http_route(ctl_push_t *p, ctl_auth_t *auth, ctl_audit_t *audit, sk_http_req_t *req) {
  if (!p) return 0;
  const char *path = req->path;
  if (!strcmp(path, "/api/v1/proxyconfig")) {
    const char *wq = ctl__query_get(req->query, "watch", req->pool);
    if (!wq || !(!strcmp(wq, "true") || !strcmp(wq, "1") || !*wq)) return 0; /* the one-shot GET */
    if (strcmp(req->method, "GET")) {
      respond_error(req, 405, "method not allowed (GET)");
      return 1;
    }
    do_stream(p, auth, audit, req);
    return 1;
  }
  if (!strcmp(path, "/api/v1/proxies")) {
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) respond_error(req, 405, "method not allowed (GET)");
    else do_list(p, auth, audit, req);
    return 1;
  }
  static const char pre[] = "/api/v1/proxies/";
  if (strncmp(path, pre, sizeof pre - 1)) return 0;
  const char *rest = path + sizeof pre - 1;
  const char *slash = strchr(rest, '/');
  if (!slash || strcmp(slash, "/ack")) {
    respond_error(req, 404, "not found (POST /api/v1/proxies/<node>/ack)");
    return 1;
  }
  if (strcmp(req->method, "POST")) {
    respond_error(req, 405, "method not allowed (POST)");
    return 1;
  }
  size_t nl = (size_t)(slash - rest);
  if (nl > CTL_PUSH_NODE_MAX) nl = CTL_PUSH_NODE_MAX + 1; /* invalid, reported as such */
  char *node = sk_pool_strndup(req->pool, rest, nl);
  do_ack(p, auth, audit, req, node);
  return 1;
}

/* ---------------- lifecycle ---------------- */

int ctl_push_new(uv_loop_t *loop, const ctl_push_opts_t *o, ctl_push_t **out) {
  if (!loop || !o || !o->store || !out) return SK_EINVAL;
  ctl_push_t *p = sk_xcalloc(1, sizeof *p);
  p->loop = loop;
  p->o = *o;
  if (!p->o.coalesce_ms) p->o.coalesce_ms = 20;
  if (!p->o.heartbeat_ms) p->o.heartbeat_ms = 15000;
  if (!p->o.max_streams) p->o.max_streams = 10000;
  if (!p->o.max_nodes) p->o.max_nodes = 10000;
  sk_buf_init(&p->line);
  uv_timer_init(loop, &p->coalesce);
  uv_timer_init(loop, &p->heartbeat);
  p->coalesce.data = p->heartbeat.data = p;
  uv_timer_start(&p->heartbeat, heartbeat_cb, p->o.heartbeat_ms, p->o.heartbeat_ms);
  if (o->metrics) {
    static const double b[] = {.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5};
    sk_metrics_gauge(o->metrics, "skiff_control_proxies_connected", "Proxies with an open config stream.",
                     &p->g_connected);
    sk_metrics_counter(o->metrics, "skiff_control_proxy_pushes_total", "Config snapshots written to proxy streams.",
                       &p->c_pushes);
    sk_metrics_counter(o->metrics, "skiff_control_proxy_acks_total", "Snapshots proxies accepted (ACK).",
                       &p->c_acks);
    sk_metrics_counter(o->metrics, "skiff_control_proxy_nacks_total", "Snapshots proxies rejected (NACK).",
                       &p->c_nacks);
    sk_metrics_counter(o->metrics, "skiff_control_proxy_compiles_total", "Proxy config compiles.", &p->c_compiles);
    sk_metrics_counter(o->metrics, "skiff_control_proxy_slow_closed_total",
                       "Config streams ended because the proxy stopped reading.", &p->c_slow);
    sk_metrics_gauge(o->metrics, "skiff_control_proxy_config_version", "Version of the current proxy snapshot.",
                     &p->g_version);
    sk_metrics_histogram(o->metrics, "skiff_control_proxy_propagation_seconds",
                         "From a config change (or a stream opening) to the proxy's ACK of it.", b,
                         sizeof b / sizeof b[0], &p->h_prop);
  }
  *out = p;
  return 0;
}

void ctl_push_end_streams(ctl_push_t *p) {
  if (!p) return;
  p->ending = 1;
  for (pnode_t *n = p->nodes; n; n = n->next) stream_end(n);
}

static void push_closed(uv_handle_t *h) {
  ctl_push_t *p = h->data;
  if (h == (uv_handle_t *)&p->coalesce) return; /* the heartbeat closes last */
  free(p);
}

void ctl_push_free(ctl_push_t *p) {
  if (!p) return;
  ctl_push_end_streams(p);
  while (p->nodes) {
    pnode_t *n = p->nodes;
    node_unlink(n);
    node_free(n);
  }
  free(p->config_text);
  sk_buf_done(&p->line);
  uv_timer_stop(&p->coalesce);
  uv_timer_stop(&p->heartbeat);
  /* libuv runs close callbacks last-closed first: heartbeat's (the free) must come last */
  uv_close((uv_handle_t *)&p->heartbeat, push_closed);
  uv_close((uv_handle_t *)&p->coalesce, push_closed);
}
