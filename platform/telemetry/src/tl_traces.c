/* skiff-telemetry: trace queries - trace by id (OTLP JSON, resourceSpans),
 * search, the service graph and the logs of a trace. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"
#include "tl_sigdb_int.h"

#define TL_TRACE_MAX_SPANS 100000
#define TL_GRAPH_MAX_ROWS 2000000

/* Lower-case, left-padded to 32 hex digits; NULL if not hex. */
static const char *norm_trace_id(sk_pool_t *pool, const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 32) return NULL;
  char *o = sk_pool_alloc(pool, 33);
  memset(o, '0', 32 - n);
  for (size_t i = 0; i < n; i++) {
    if (!isxdigit((unsigned char)s[i])) return NULL;
    o[32 - n + i] = (char)tolower((unsigned char)s[i]);
  }
  o[32] = 0;
  return o;
}

static json_t *parse_or(const char *s, json_t *def) {
  if (!s || !*s) return def;
  json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);
  if (!v) return def;
  json_decref(def);
  return v;
}

static json_t *nsstr(int64_t ns) {
  char b[32];
  snprintf(b, sizeof b, "%" PRId64, ns);
  return json_string(b);
}

typedef struct trace_ctx {
  sk_pool_t *pool;
  json_t *batches;  /* resourceSpans */
  json_t *by_res;   /* resource json text -> index in batches */
  size_t n;
} trace_ctx_t;

/* Attributes as stored: a KeyValueList protobuf blob (schema 2 rows), OTLP
 * JSON text (rows written before), or NULL. */
static json_t *attrs_col(trace_ctx_t *c, sk_stmt_t *r, int col, int type_col) {
  if (sk_stmt_is_null(r, col)) return json_array();
  if (strcmp(sk_stmt_text(r, type_col), "blob")) return parse_or(sk_stmt_text(r, col), json_array());
  size_t n = 0;
  const void *p = sk_stmt_blob(r, col, &n);
  if (!n) p = ""; /* an empty list */
  char err[128];
  Otlp__KeyValueList *l =
      (Otlp__KeyValueList *)tl_pb_unpack(c->pool, &otlp__key_value_list__descriptor, p, n, err, sizeof err);
  return l ? tl_otlp_attrs_json(l->values, l->n_values) : json_array();
}

static int trace_row(sk_stmt_t *r, void *ud) {
  trace_ctx_t *c = ud;
  /* 0 trace_id 1 span_id 2 parent_id 3 service 4 name 5 kind 6 start 7 end 8 status 9 status_msg
   * 10 trace_state 11 scope_name 12 scope_version 13 attrs 14 resource 15 events 16 links
   * 17 typeof(attrs) 18 typeof(resource) */
  json_t *res_attrs = attrs_col(c, r, 14, 18);
  sk_buf_t rb;
  sk_buf_init(&rb);
  sk_json_dump_buf(res_attrs, &rb);
  const char *res = sk_buf_cstr(&rb);
  json_t *idx = json_object_get(c->by_res, res);
  json_t *rs;
  if (!idx) {
    rs = json_object();
    json_t *resource = json_object();
    json_object_set_new(resource, "attributes", json_incref(res_attrs));
    json_object_set_new(rs, "resource", resource);
    json_object_set_new(rs, "scopeSpans", json_array());
    json_object_set_new(c->by_res, res, json_integer((json_int_t)json_array_size(c->batches)));
    json_array_append_new(c->batches, rs);
  } else {
    rs = json_array_get(c->batches, (size_t)json_integer_value(idx));
  }
  json_decref(res_attrs);
  sk_buf_done(&rb);
  json_t *scopes = json_object_get(rs, "scopeSpans");
  const char *sn = sk_stmt_text(r, 11), *sv = sk_stmt_text(r, 12);
  json_t *ss = NULL;
  size_t i;
  json_t *it;
  json_array_foreach(scopes, i, it) {
    json_t *sc = json_object_get(it, "scope");
    if (!strcmp(sk_json_get_str(sc, "name", ""), sn) && !strcmp(sk_json_get_str(sc, "version", ""), sv)) {
      ss = it;
      break;
    }
  }
  if (!ss) {
    ss = json_object();
    json_t *sc = json_object();
    json_object_set_new(sc, "name", json_string(sn));
    if (*sv) json_object_set_new(sc, "version", json_string(sv));
    json_object_set_new(ss, "scope", sc);
    json_object_set_new(ss, "spans", json_array());
    json_array_append_new(scopes, ss);
  }
  json_t *sp = json_object();
  json_object_set_new(sp, "traceId", json_string(sk_stmt_text(r, 0)));
  json_object_set_new(sp, "spanId", json_string(sk_stmt_text(r, 1)));
  if (*sk_stmt_text(r, 2)) json_object_set_new(sp, "parentSpanId", json_string(sk_stmt_text(r, 2)));
  if (!sk_stmt_is_null(r, 10)) json_object_set_new(sp, "traceState", json_string(sk_stmt_text(r, 10)));
  json_t *nm = json_string(sk_stmt_text(r, 4));
  json_object_set_new(sp, "name", nm ? nm : json_string(""));
  json_object_set_new(sp, "kind", json_integer(sk_stmt_int64(r, 5)));
  json_object_set_new(sp, "startTimeUnixNano", nsstr(sk_stmt_int64(r, 6)));
  json_object_set_new(sp, "endTimeUnixNano", nsstr(sk_stmt_int64(r, 7)));
  json_object_set_new(sp, "attributes", attrs_col(c, r, 13, 17));
  if (!sk_stmt_is_null(r, 15)) json_object_set_new(sp, "events", parse_or(sk_stmt_text(r, 15), json_array()));
  if (!sk_stmt_is_null(r, 16)) json_object_set_new(sp, "links", parse_or(sk_stmt_text(r, 16), json_array()));
  json_t *status = json_object();
  if (sk_stmt_int64(r, 8)) json_object_set_new(status, "code", json_integer(sk_stmt_int64(r, 8)));
  if (!sk_stmt_is_null(r, 9)) {
    json_t *m = json_string(sk_stmt_text(r, 9));
    if (m) json_object_set_new(status, "message", m);
  }
  json_object_set_new(sp, "status", status);
  json_array_append_new(json_object_get(ss, "spans"), sp);
  return ++c->n >= TL_TRACE_MAX_SPANS ? 1 : 0;
}

void tl_traces_get(tl_sigdb_t *db, sk_http_req_t *req, const char *trace_hex) {
  const char *id = norm_trace_id(req->pool, trace_hex);
  if (!id) {
    tl_respond_error(req, 400, "trace id must be up to 32 hex digits");
    return;
  }
  trace_ctx_t c = {.pool = req->pool, .batches = json_array(), .by_res = json_object()};
  int rc = sk_store_query(db->r,
                          "SELECT trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns, status,"
                          " status_msg, trace_state, scope_name, scope_version, attrs, resource, events, links,"
                          " typeof(attrs), typeof(resource)"
                          " FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id",
                          SK_SQL_ARGS(SK_SQL_TEXT(id)), trace_row, &c);
  json_decref(c.by_res);
  if (rc < 0) {
    json_decref(c.batches);
    tl_respond_error(req, 500, "span store: %s", sk_store_errmsg(db->r));
    return;
  }
  if (c.n == 0) {
    json_decref(c.batches);
    tl_respond_error(req, 404, "trace not found");
    return;
  }
  json_t *o = json_object();
  json_object_set_new(o, "resourceSpans", c.batches);
  tl_respond_json(req, 200, o);
}

typedef struct logs_ctx {
  json_t *arr;
} tlogs_ctx_t;

static int tlog_row(sk_stmt_t *r, void *ud) {
  tlogs_ctx_t *c = ud;
  json_t *o = json_object();
  json_object_set_new(o, "timestamp", nsstr(sk_stmt_int64(r, 0)));
  json_object_set_new(o, "labels", parse_or(sk_stmt_text(r, 1), json_object()));
  json_t *line = json_string(sk_stmt_text(r, 2));
  json_object_set_new(o, "line", line ? line : json_string(""));
  if (!sk_stmt_is_null(r, 3)) json_object_set_new(o, "spanId", json_string(sk_stmt_text(r, 3)));
  if (!sk_stmt_is_null(r, 4)) json_object_set_new(o, "severity", json_string(sk_stmt_text(r, 4)));
  json_array_append_new(c->arr, o);
  return 0;
}

void tl_traces_logs(tl_sigdb_t *db, sk_http_req_t *req, const char *trace_hex) {
  const char *id = norm_trace_id(req->pool, trace_hex);
  if (!id) {
    tl_respond_error(req, 400, "trace id must be up to 32 hex digits");
    return;
  }
  tlogs_ctx_t c = {.arr = json_array()};
  int rc = sk_store_query(db->r,
                          "SELECT l.ts_ns, s.labels, l.body, l.span_id, l.severity_text FROM logs l"
                          " JOIN streams s ON s.id = l.stream WHERE l.trace_id = ? ORDER BY l.ts_ns LIMIT 5000",
                          SK_SQL_ARGS(SK_SQL_TEXT(id)), tlog_row, &c);
  if (rc < 0) {
    json_decref(c.arr);
    tl_respond_error(req, 500, "log store: %s", sk_store_errmsg(db->r));
    return;
  }
  json_t *o = json_object();
  json_object_set_new(o, "traceID", json_string(id));
  json_object_set_new(o, "logs", c.arr);
  tl_respond_json(req, 200, o);
}

/* ---- search ---- */

typedef struct hit {
  char id[33];
} hit_t;

typedef struct search_ctx {
  hit_t *v;
  size_t n, cap;
} search_ctx_t;

static int search_row(sk_stmt_t *r, void *ud) {
  search_ctx_t *c = ud;
  if (c->n == c->cap) return 1;
  snprintf(c->v[c->n++].id, 33, "%s", sk_stmt_text(r, 0));
  return 0;
}

static int status_param(const char *s) {
  if (!s || !*s) return -1;
  if (!strcasecmp(s, "error") || !strcmp(s, "2")) return 2;
  if (!strcasecmp(s, "ok") || !strcmp(s, "1")) return 1;
  if (!strcasecmp(s, "unset") || !strcmp(s, "0")) return 0;
  return -2;
}

void tl_traces_search(tl_sigdb_t *db, sk_http_req_t *req) {
  sk_pool_t *p = req->pool;
  const char *q = req->query;
  const char *service = tl_form_get(p, q, "service");
  const char *op = tl_form_get(p, q, "operation");
  if (!op) op = tl_form_get(p, q, "name");
  const char *smin = tl_form_get(p, q, "minDuration"), *smax = tl_form_get(p, q, "maxDuration");
  const char *sstatus = tl_form_get(p, q, "status"), *slimit = tl_form_get(p, q, "limit");
  const char *sstart = tl_form_get(p, q, "start"), *send = tl_form_get(p, q, "end");
  int64_t mind = 0, maxd = -1, start = 0, end = INT64_MAX;
  if (smin && *smin && tl_parse_duration_ns(smin, &mind) < 0) { tl_respond_error(req, 400, "bad minDuration"); return; }
  if (smax && *smax && tl_parse_duration_ns(smax, &maxd) < 0) { tl_respond_error(req, 400, "bad maxDuration"); return; }
  if (sstart && *sstart && tl_parse_time_ns(sstart, &start) < 0) { tl_respond_error(req, 400, "bad start"); return; }
  if (send && *send && tl_parse_time_ns(send, &end) < 0) { tl_respond_error(req, 400, "bad end"); return; }
  int status = status_param(sstatus);
  if (status == -2) { tl_respond_error(req, 400, "status must be error, ok or unset"); return; }
  long limit = slimit && *slimit ? strtol(slimit, NULL, 10) : 20;
  if (limit <= 0 || limit > 1000) limit = limit <= 0 ? 20 : 1000;
  if (service && !*service) service = NULL;
  if (op && !*op) op = NULL;

  search_ctx_t c = {.v = sk_pool_alloc(p, (size_t)limit * sizeof(hit_t)), .cap = (size_t)limit};
  int rc = sk_store_query(
      db->r,
      "SELECT trace_id, max(start_ns) AS t FROM spans WHERE (?1 IS NULL OR service = ?1)"
      " AND (?2 IS NULL OR name = ?2) AND end_ns - start_ns >= ?3 AND (?4 < 0 OR end_ns - start_ns <= ?4)"
      " AND (?5 < 0 OR status = ?5) AND start_ns >= ?6 AND start_ns <= ?7"
      " GROUP BY trace_id ORDER BY t DESC LIMIT ?8",
      SK_SQL_ARGS(SK_SQL_TEXT(service), SK_SQL_TEXT(op), SK_SQL_INT(mind), SK_SQL_INT(maxd), SK_SQL_INT(status),
                  SK_SQL_INT(start), SK_SQL_INT(end), SK_SQL_INT(limit)),
      search_row, &c);
  if (rc < 0) { tl_respond_error(req, 500, "span store: %s", sk_store_errmsg(db->r)); return; }
  json_t *traces = json_array();
  for (size_t i = 0; i < c.n; i++) {
    json_t *t = json_object();
    json_object_set_new(t, "traceID", json_string(c.v[i].id));
    sk_stmt_t *st = NULL;
    if (sk_store_prepare(db->r,
                         "SELECT min(start_ns), max(end_ns), count(*),"
                         " (SELECT service FROM spans WHERE trace_id = ?1 AND parent_id = '' LIMIT 1),"
                         " (SELECT name FROM spans WHERE trace_id = ?1 AND parent_id = '' LIMIT 1),"
                         " sum(status = 2) FROM spans WHERE trace_id = ?1",
                         &st) == 0 &&
        sk_stmt_bind(st, SK_SQL_ARGS(SK_SQL_TEXT(c.v[i].id))) == 0 && sk_stmt_step(st) == 1) {
      int64_t s0 = sk_stmt_int64(st, 0), e0 = sk_stmt_int64(st, 1);
      json_object_set_new(t, "rootServiceName",
                          json_string(sk_stmt_is_null(st, 3) ? "<root span not yet received>" : sk_stmt_text(st, 3)));
      json_t *rn = json_string(sk_stmt_text(st, 4));
      if (!sk_stmt_is_null(st, 4) && rn) json_object_set_new(t, "rootTraceName", rn);
      else json_decref(rn);
      json_object_set_new(t, "startTimeUnixNano", nsstr(s0));
      json_object_set_new(t, "durationMs", json_integer((e0 - s0) / 1000000));
      json_object_set_new(t, "spanCount", json_integer(sk_stmt_int64(st, 2)));
      json_object_set_new(t, "errorCount", json_integer(sk_stmt_int64(st, 5)));
    }
    sk_stmt_done(st);
    json_array_append_new(traces, t);
  }
  json_t *o = json_object();
  json_object_set_new(o, "traces", traces);
  tl_respond_json(req, 200, o);
}

/* ---- service graph ---- */

typedef struct edge {
  char *src, *dst;
  int64_t *dur;
  size_t n, cap, errors;
} edge_t;

typedef struct graph_ctx {
  edge_t *e;
  size_t n, cap;
  json_t *nodes; /* name -> {requests, errors} */
} graph_ctx_t;

static int graph_row(sk_stmt_t *r, void *ud) {
  graph_ctx_t *g = ud;
  const char *src = sk_stmt_text(r, 0), *dst = sk_stmt_text(r, 1);
  edge_t *e = g->n ? &g->e[g->n - 1] : NULL;
  if (!e || strcmp(e->src, src) || strcmp(e->dst, dst)) {
    if (g->n == g->cap) {
      g->cap = g->cap ? g->cap * 2 : 16;
      g->e = sk_xrealloc(g->e, g->cap * sizeof *g->e);
    }
    e = &g->e[g->n++];
    memset(e, 0, sizeof *e);
    e->src = sk_xstrdup(src);
    e->dst = sk_xstrdup(dst);
  }
  if (e->n == e->cap) {
    e->cap = e->cap ? e->cap * 2 : 16;
    e->dur = sk_xrealloc(e->dur, e->cap * sizeof *e->dur);
  }
  e->dur[e->n++] = sk_stmt_int64(r, 2);
  if (sk_stmt_int64(r, 3) == 2) e->errors++;
  return 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_ms(const int64_t *v, size_t n, double q) {
  if (!n) return 0;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  if (i >= n) i = n - 1;
  return (double)v[i] / 1e6;
}

static void node_add(json_t *nodes, const char *name) {
  if (!json_object_get(nodes, name)) json_object_set_new(nodes, name, json_true());
}

void tl_service_graph(tl_sigdb_t *db, sk_http_req_t *req) {
  sk_pool_t *p = req->pool;
  const char *sstart = tl_form_get(p, req->query, "start"), *send = tl_form_get(p, req->query, "end");
  int64_t start = 0, end = INT64_MAX;
  if (sstart && *sstart && tl_parse_time_ns(sstart, &start) < 0) { tl_respond_error(req, 400, "bad start"); return; }
  if (send && *send && tl_parse_time_ns(send, &end) < 0) { tl_respond_error(req, 400, "bad end"); return; }
  graph_ctx_t g = {0};
  int rc = sk_store_query(db->r,
                          "SELECT p.service, c.service, c.end_ns - c.start_ns, c.status FROM spans c"
                          " JOIN spans p ON p.trace_id = c.trace_id AND p.span_id = c.parent_id"
                          " WHERE c.parent_id != '' AND p.service != c.service AND c.start_ns >= ?"
                          " AND c.start_ns <= ? ORDER BY p.service, c.service LIMIT ?",
                          SK_SQL_ARGS(SK_SQL_INT(start), SK_SQL_INT(end), SK_SQL_INT(TL_GRAPH_MAX_ROWS)),
                          graph_row, &g);
  json_t *nodes = json_object(), *edges = json_array();
  for (size_t i = 0; i < g.n; i++) {
    edge_t *e = &g.e[i];
    qsort(e->dur, e->n, sizeof *e->dur, cmp_i64);
    json_t *o = json_object();
    json_object_set_new(o, "source", json_string(e->src));
    json_object_set_new(o, "target", json_string(e->dst));
    json_object_set_new(o, "requests", json_integer((json_int_t)e->n));
    json_object_set_new(o, "errors", json_integer((json_int_t)e->errors));
    json_object_set_new(o, "errorRate", json_real(e->n ? (double)e->errors / (double)e->n : 0));
    json_object_set_new(o, "latencyP50Ms", json_real(pct_ms(e->dur, e->n, 0.5)));
    json_object_set_new(o, "latencyP99Ms", json_real(pct_ms(e->dur, e->n, 0.99)));
    json_array_append_new(edges, o);
    node_add(nodes, e->src);
    node_add(nodes, e->dst);
    free(e->src);
    free(e->dst);
    free(e->dur);
  }
  free(g.e);
  if (rc < 0) {
    json_decref(nodes);
    json_decref(edges);
    { tl_respond_error(req, 500, "span store: %s", sk_store_errmsg(db->r)); return; }
  }
  json_t *na = json_array();
  const char *k;
  json_t *v;
  json_object_foreach(nodes, k, v) {
    json_t *n = json_object();
    json_object_set_new(n, "id", json_string(k));
    json_array_append_new(na, n);
  }
  json_decref(nodes);
  json_t *o = json_object();
  json_object_set_new(o, "nodes", na);
  json_object_set_new(o, "edges", edges);
  tl_respond_json(req, 200, o);
}
