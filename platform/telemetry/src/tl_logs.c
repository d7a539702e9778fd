/* skiff-telemetry: log lines - OTLP logs and Loki push into lines, the
 * trace-id finder, and Loki's query API over the sqlite store.
 *
 * Streams: a log line's labels (a JSON object with sorted keys) name its
 * stream. OTLP logs get their resource attributes as labels (names made
 * label-safe: service.name -> service_name), plus severity_text as
 * "level" when set; record attributes are kept per line. Loki push keeps
 * the stream labels as sent.
 *
 * Queries: a stream selector {a="x", b=~"y.*"} followed by line filters
 * |= "s", != "s", |~ "re", !~ "re" (POSIX extended regexes). */
#include <ctype.h>
#include <inttypes.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "skiff/err.h"
#include "skiff/json.h"
#include "tl_int.h"
#include "tl_sigdb_int.h"

#define TL_LOG_MAX_LABELS 30
#define TL_LOKI_MAX_LIMIT 5000
#define TL_LOKI_MAX_SCAN 2000000
#define TL_LOGQL_MAX_FILTERS 16
#define TL_LOGQL_MAX_MATCHERS 16

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int nonzero(const ProtobufCBinaryData *b) {
  for (size_t i = 0; i < b->len; i++)
    if (b->data[i]) return 1;
  return 0;
}

static char *dump_sorted(sk_pool_t *pool, json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
  json_decref(j);
  char *r = sk_pool_strdup(pool, s ? s : "{}");
  free(s);
  return r;
}

static int is_hex32(const char *s) {
  for (int i = 0; i < 32; i++)
    if (!isxdigit((unsigned char)s[i])) return 0;
  return !isxdigit((unsigned char)s[32]);
}

const char *tl_find_trace_id(sk_pool_t *pool, const char *line) {
  if (!line) return NULL;
  for (const char *p = line; *p; p++) {
    if (tolower((unsigned char)p[0]) != 't' || strncasecmp(p, "trace", 5)) continue;
    const char *q = p + 5;
    if (*q == '_' || *q == '-' || *q == '.') q++;
    if (strncasecmp(q, "id", 2)) continue;
    q += 2;
    if (*q == '"') q++;
    while (*q == ' ') q++;
    if (*q != '=' && *q != ':') continue;
    q++;
    while (*q == ' ' || *q == '"') q++;
    if (strlen(q) >= 32 && is_hex32(q)) {
      char *o = sk_pool_strndup(pool, q, 32);
      for (char *c = o; *c; c++) *c = (char)tolower((unsigned char)*c);
      return o;
    }
  }
  return NULL;
}

int tl_otlp_logs_lines(sk_pool_t *pool, const Otlp__ExportLogsServiceRequest *r, tl_logline_t **out,
                       size_t *n, size_t *rejected) {
  size_t total = 0;
  for (size_t i = 0; i < r->n_resource_logs; i++) {
    const Otlp__ResourceLogs *rl = r->resource_logs[i];
    if (!rl) continue;
    for (size_t s = 0; s < rl->n_scope_logs; s++)
      if (rl->scope_logs[s]) total += rl->scope_logs[s]->n_log_records;
  }
  tl_logline_t *v = sk_pool_calloc(pool, (total ? total : 1) * sizeof *v);
  size_t k = 0;
  *rejected = 0;
  int64_t now = now_ns();
  for (size_t i = 0; i < r->n_resource_logs; i++) {
    const Otlp__ResourceLogs *rl = r->resource_logs[i];
    if (!rl) continue;
    json_t *base = json_object();
    if (rl->resource) {
      for (size_t a = 0; a < rl->resource->n_attributes && json_object_size(base) < TL_LOG_MAX_LABELS; a++) {
        Otlp__KeyValue *kv = rl->resource->attributes[a];
        if (!kv || !kv->key || !kv->value) continue;
        json_t *sv = json_string(tl_otlp_anyvalue_str(pool, kv->value));
        if (sv) json_object_set_new(base, tl_prom_name(pool, kv->key, 1), sv);
      }
    }
    for (size_t s = 0; s < rl->n_scope_logs; s++) {
      const Otlp__ScopeLogs *sl = rl->scope_logs[s];
      if (!sl) continue;
      for (size_t j = 0; j < sl->n_log_records; j++) {
        const Otlp__LogRecord *lr = sl->log_records[j];
        if (!lr) {
          (*rejected)++;
          continue;
        }
        tl_logline_t *l = &v[k];
        json_t *lab = json_deep_copy(base);
        if (lr->severity_text && *lr->severity_text) {
          json_t *sv = json_string(lr->severity_text);
          if (sv) json_object_set_new(lab, "level", sv);
        }
        l->labels_json = dump_sorted(pool, lab);
        uint64_t ts = lr->time_unix_nano ? lr->time_unix_nano : lr->observed_time_unix_nano;
        l->ts_ns = ts && ts <= INT64_MAX ? (int64_t)ts : now;
        l->observed_ns = lr->observed_time_unix_nano <= INT64_MAX ? (int64_t)lr->observed_time_unix_nano : 0;
        l->severity = lr->severity_number;
        l->severity_text = lr->severity_text && *lr->severity_text ? lr->severity_text : NULL;
        l->body = tl_otlp_anyvalue_str(pool, lr->body);
        if (lr->n_attributes) {
          char *a = NULL;
          json_t *aj = tl_otlp_attrs_json(lr->attributes, lr->n_attributes);
          a = json_dumps(aj, JSON_COMPACT);
          json_decref(aj);
          l->attrs_json = a ? sk_pool_strdup(pool, a) : NULL;
          free(a);
        }
        if (lr->trace_id.len == 16 && nonzero(&lr->trace_id)) {
          char *h = sk_pool_alloc(pool, 33);
          tl_hex(lr->trace_id.data, 16, h);
          l->trace_id = h;
        } else {
          const char *t = tl_otlp_attr_str(lr->attributes, lr->n_attributes, "trace_id");
          if (!t) t = tl_otlp_attr_str(lr->attributes, lr->n_attributes, "traceid");
          if (t && strlen(t) == 32 && is_hex32(t)) {
            char *o = sk_pool_strdup(pool, t);
            for (char *c = o; *c; c++) *c = (char)tolower((unsigned char)*c);
            l->trace_id = o;
          } else {
            l->trace_id = tl_find_trace_id(pool, l->body);
          }
        }
        if (lr->span_id.len == 8 && nonzero(&lr->span_id)) {
          char *h = sk_pool_alloc(pool, 17);
          tl_hex(lr->span_id.data, 8, h);
          l->span_id = h;
        }
        k++;
      }
    }
    json_decref(base);
  }
  *out = v;
  *n = k;
  return 0;
}

int tl_loki_push_decode(sk_pool_t *pool, const char *s, size_t len, tl_logline_t **out, size_t *n, char *err,
                        size_t errlen) {
  json_t *root = NULL;
  int rc = sk_json_parse(s, len, len + 1, TL_JSON_MAX_DEPTH, &root, err, errlen);
  if (rc < 0) return SK_EPARSE;
  rc = SK_EPARSE;
  json_t *streams = json_object_get(root, "streams");
  if (!json_is_array(streams)) {
    snprintf(err, errlen, "\"streams\" must be an array");
    goto out;
  }
  size_t total = 0, i;
  json_t *st;
  json_array_foreach(streams, i, st) total += json_array_size(json_object_get(st, "values"));
  tl_logline_t *v = sk_pool_calloc(pool, (total ? total : 1) * sizeof *v);
  size_t k = 0;
  json_array_foreach(streams, i, st) {
    json_t *labels = json_object_get(st, "stream");
    json_t *values = json_object_get(st, "values");
    if (!json_is_object(labels) || !json_is_array(values)) {
      snprintf(err, errlen, "streams[%zu]: needs \"stream\" (object) and \"values\" (array)", i);
      goto out;
    }
    if (json_object_size(labels) > TL_LOG_MAX_LABELS) {
      snprintf(err, errlen, "streams[%zu]: more than %d labels", i, TL_LOG_MAX_LABELS);
      goto out;
    }
    const char *key;
    json_t *lv;
    json_object_foreach(labels, key, lv) {
      if (!json_is_string(lv) || !*key) {
        snprintf(err, errlen, "streams[%zu]: label values must be strings", i);
        goto out;
      }
    }
    const char *lab = dump_sorted(pool, json_incref(labels));
    size_t j;
    json_t *e;
    json_array_foreach(values, j, e) {
      json_t *ts = json_array_get(e, 0), *line = json_array_get(e, 1);
      if (!json_is_array(e) || !json_is_string(ts) || !json_is_string(line)) {
        snprintf(err, errlen, "streams[%zu].values[%zu]: must be [\"<unix ns>\", \"<line>\"]", i, j);
        goto out;
      }
      const char *t = json_string_value(ts);
      char *end = NULL;
      errno = 0;
      long long ns = strtoll(t, &end, 10);
      if (!*t || *end || errno || ns < 0) {
        snprintf(err, errlen, "streams[%zu].values[%zu]: bad timestamp", i, j);
        goto out;
      }
      tl_logline_t *l = &v[k++];
      l->ts_ns = ns;
      l->labels_json = lab;
      l->body = sk_pool_strndup(pool, json_string_value(line), json_string_length(line));
      json_t *meta = json_array_get(e, 2);
      const char *tid = json_is_object(meta) ? sk_json_get_str(meta, "trace_id", NULL) : NULL;
      if (tid && strlen(tid) == 32 && is_hex32(tid)) {
        char *o = sk_pool_strdup(pool, tid);
        for (char *c = o; *c; c++) *c = (char)tolower((unsigned char)*c);
        l->trace_id = o;
      } else {
        l->trace_id = tl_find_trace_id(pool, l->body);
      }
      if (json_is_object(meta)) {
        char *m = json_dumps(meta, JSON_COMPACT);
        l->attrs_json = m ? sk_pool_strdup(pool, m) : NULL;
        free(m);
      }
    }
  }
  *out = v;
  *n = k;
  rc = 0;
out:
  json_decref(root);
  return rc;
}

/* ---- LogQL subset ---- */

typedef struct logql {
  tl_matcher_t m[TL_LOGQL_MAX_MATCHERS];
  size_t nm;
  struct {
    int op; /* 0 |=, 1 !=, 2 |~, 3 !~ */
    const char *s;
    regex_t re;
  } f[TL_LOGQL_MAX_FILTERS];
  size_t nf;
} logql_t;

static void logql_done(logql_t *q) {
  for (size_t i = 0; i < q->nm; i++) tl_matcher_done(&q->m[i]);
  for (size_t i = 0; i < q->nf; i++)
    if (q->f[i].op >= 2) regfree(&q->f[i].re);
}

static void ws(const char **p) {
  while (isspace((unsigned char)**p)) (*p)++;
}

static const char *lit(sk_pool_t *pool, const char **pp) {
  const char *p = *pp;
  if (*p == '`') {
    const char *e = strchr(p + 1, '`');
    if (!e) return NULL;
    *pp = e + 1;
    return sk_pool_strndup(pool, p + 1, (size_t)(e - p - 1));
  }
  if (*p != '"') return NULL;
  p++;
  char *o = sk_pool_alloc(pool, strlen(p) + 1);
  size_t n = 0;
  while (*p && *p != '"') {
    if (*p == '\\' && p[1]) {
      p++;
      o[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
      p++;
    } else {
      o[n++] = *p++;
    }
  }
  if (*p != '"') return NULL;
  o[n] = 0;
  *pp = p + 1;
  return o;
}

static int logql_parse(sk_pool_t *pool, const char *s, logql_t *q, char *err, size_t errlen) {
  const char *p = s;
  memset(q, 0, sizeof *q);
  ws(&p);
  if (*p != '{') {
    snprintf(err, errlen, "parse error at column %d: expected '{'", (int)(p - s) + 1);
    return SK_EPARSE;
  }
  p++;
  for (;;) {
    ws(&p);
    if (*p == '}') {
      p++;
      break;
    }
    const char *ns = p;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    if (p == ns) goto bad;
    const char *name = sk_pool_strndup(pool, ns, (size_t)(p - ns));
    ws(&p);
    tl_match_op_t op;
    if (p[0] == '=' && p[1] == '~') op = TL_MATCH_RE, p += 2;
    else if (p[0] == '!' && p[1] == '~') op = TL_MATCH_NRE, p += 2;
    else if (p[0] == '!' && p[1] == '=') op = TL_MATCH_NE, p += 2;
    else if (p[0] == '=') op = TL_MATCH_EQ, p += 1;
    else goto bad;
    ws(&p);
    const char *val = lit(pool, &p);
    if (!val) goto bad;
    if (q->nm >= TL_LOGQL_MAX_MATCHERS) goto bad;
    char rerr[128];
    if (tl_matcher_init(&q->m[q->nm], op, name, val, rerr, sizeof rerr) < 0) {
      snprintf(err, errlen, "bad matcher %s: %s", name, rerr);
      return SK_EPARSE;
    }
    q->nm++;
    ws(&p);
    if (*p == ',') {
      p++;
      continue;
    }
    if (*p == '}') {
      p++;
      break;
    }
    goto bad;
  }
  int nonempty = 0;
  for (size_t i = 0; i < q->nm; i++)
    if (!tl_matcher_matches(&q->m[i], "")) nonempty = 1;
  if (!nonempty) {
    snprintf(err, errlen, "queries require at least one matcher that does not match the empty string");
    return SK_EPARSE;
  }
  for (;;) {
    ws(&p);
    if (!*p) break;
    int op;
    if (p[0] == '|' && p[1] == '=') op = 0;
    else if (p[0] == '!' && p[1] == '=') op = 1;
    else if (p[0] == '|' && p[1] == '~') op = 2;
    else if (p[0] == '!' && p[1] == '~') op = 3;
    else goto bad;
    p += 2;
    ws(&p);
    const char *v = lit(pool, &p);
    if (!v || q->nf >= TL_LOGQL_MAX_FILTERS) goto bad;
    q->f[q->nf].op = op;
    q->f[q->nf].s = v;
    /* RE2 syntax, as Loki users write it (a leading (?i), \d, ...): tl_regex.c */
    char why[300];
    if (op >= 2 && tl_re_compile(&q->f[q->nf].re, v, TL_RE_NOSUB, NULL, 0, why, sizeof why) < 0) {
      int n = snprintf(err, errlen, "bad regular expression: %s", why);
      if (n >= 0 && (size_t)n >= errlen && errlen > 3) memcpy(err + errlen - 4, "...", 4); /* cut visibly */
      return SK_EPARSE;
    }
    q->nf++;
  }
  return 0;
bad:
  snprintf(err, errlen, "parse error at column %d: unsupported or malformed query", (int)(p - s) + 1);
  return SK_EPARSE;
}

static int line_passes(const logql_t *q, const char *line) {
  for (size_t i = 0; i < q->nf; i++) {
    int hit;
    if (q->f[i].op < 2) hit = strstr(line, q->f[i].s) != NULL;
    else hit = regexec(&q->f[i].re, line, 0, NULL, 0) == 0;
    if ((q->f[i].op == 0 || q->f[i].op == 2) != !!hit) return 0;
  }
  return 1;
}

static int labels_match(const logql_t *q, json_t *labels) {
  for (size_t i = 0; i < q->nm; i++)
    if (!tl_matcher_matches(&q->m[i], sk_json_get_str(labels, q->m[i].name, NULL))) return 0;
  return 1;
}

typedef struct lq_ctx {
  const logql_t *q;
  json_t *ids;      /* matching stream ids */
  json_t *streams;  /* id (string) -> labels object */
  json_t *result;   /* id -> values array */
  size_t n, limit, scanned;
} lq_ctx_t;

static int stream_row(sk_stmt_t *r, void *ud) {
  lq_ctx_t *c = ud;
  json_t *labels = json_loads(sk_stmt_text(r, 1), 0, NULL);
  if (labels && labels_match(c->q, labels)) {
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, sk_stmt_int64(r, 0));
    json_array_append_new(c->ids, json_integer(sk_stmt_int64(r, 0)));
    json_object_set(c->streams, id, labels);
  }
  json_decref(labels);
  return 0;
}

static int log_row(sk_stmt_t *r, void *ud) {
  lq_ctx_t *c = ud;
  if (++c->scanned > TL_LOKI_MAX_SCAN) return 1;
  const char *line = sk_stmt_text(r, 2);
  if (!line_passes(c->q, line)) return 0;
  char id[32], ts[32];
  snprintf(id, sizeof id, "%" PRId64, sk_stmt_int64(r, 0));
  snprintf(ts, sizeof ts, "%" PRId64, sk_stmt_int64(r, 1));
  json_t *vals = json_object_get(c->result, id);
  if (!vals) {
    vals = json_array();
    json_object_set_new(c->result, id, vals);
  }
  json_t *e = json_array();
  json_array_append_new(e, json_string(ts));
  json_t *l = json_string(line);
  json_array_append_new(e, l ? l : json_string(""));
  json_array_append_new(vals, e);
  return ++c->n >= c->limit ? 1 : 0;
}

void tl_loki_query_range(tl_sigdb_t *db, sk_http_req_t *req, int instant) {
  sk_pool_t *p = req->pool;
  const char *q = req->query;
  const char *body = NULL;
  if (!strcmp(req->method, "POST") && req->body_len) {
    body = sk_pool_strndup(p, (const char *)req->body, req->body_len);
    q = body;
  }
  const char *query = tl_form_get(p, q, "query");
  const char *sstart = tl_form_get(p, q, "start"), *send = tl_form_get(p, q, "end");
  const char *stime = tl_form_get(p, q, "time"), *slimit = tl_form_get(p, q, "limit");
  const char *dir = tl_form_get(p, q, "direction");
  char err[300];
  if (!query || !*query) {
    tl_respond_error(req, 400, "query is required");
    return;
  }
  int64_t now = now_ns(), start, end = now;
  if (instant && stime && *stime && tl_parse_time_ns(stime, &end) < 0) {
    tl_respond_error(req, 400, "bad time");
    return;
  }
  if (!instant && send && *send && tl_parse_time_ns(send, &end) < 0) {
    tl_respond_error(req, 400, "bad end");
    return;
  }
  start = end - 3600LL * 1000000000;
  if (!instant && sstart && *sstart && tl_parse_time_ns(sstart, &start) < 0) {
    tl_respond_error(req, 400, "bad start");
    return;
  }
  long limit = slimit && *slimit ? strtol(slimit, NULL, 10) : 100;
  if (limit <= 0) limit = 100;
  if (limit > TL_LOKI_MAX_LIMIT) limit = TL_LOKI_MAX_LIMIT;
  int forward = dir && !strcasecmp(dir, "forward");
  logql_t lq;
  if (logql_parse(p, query, &lq, err, sizeof err) < 0) {
    logql_done(&lq);
    tl_respond_error(req, 400, "%s", err);
    return;
  }
  lq_ctx_t c = {.q = &lq, .ids = json_array(), .streams = json_object(), .result = json_object(),
                .limit = (size_t)limit};
  int rc = sk_store_query(db->r, "SELECT id, labels FROM streams", NULL, 0, stream_row, &c);
  if (rc >= 0 && json_array_size(c.ids)) {
    char *ids = json_dumps(c.ids, JSON_COMPACT);
    rc = sk_store_query(db->r,
                        forward ? "SELECT stream, ts_ns, body FROM logs WHERE stream IN (SELECT value FROM json_each(?1))"
                                  " AND ts_ns >= ?2 AND ts_ns <= ?3 ORDER BY ts_ns ASC, id ASC"
                                : "SELECT stream, ts_ns, body FROM logs WHERE stream IN (SELECT value FROM json_each(?1))"
                                  " AND ts_ns >= ?2 AND ts_ns <= ?3 ORDER BY ts_ns DESC, id DESC",
                        SK_SQL_ARGS(SK_SQL_TEXT(ids), SK_SQL_INT(start), SK_SQL_INT(end)), log_row, &c);
    free(ids);
  }
  logql_done(&lq);
  if (rc < 0) {
    json_decref(c.ids), json_decref(c.streams), json_decref(c.result);
    tl_respond_error(req, 500, "log store: %s", sk_store_errmsg(db->r));
    return;
  }
  json_t *result = json_array();
  const char *id;
  json_t *vals;
  json_object_foreach(c.result, id, vals) {
    json_t *s = json_object();
    json_object_set(s, "stream", json_object_get(c.streams, id));
    json_object_set(s, "values", vals);
    json_array_append_new(result, s);
  }
  json_decref(c.ids), json_decref(c.streams), json_decref(c.result);
  json_t *data = json_object();
  json_object_set_new(data, "resultType", json_string("streams"));
  json_object_set_new(data, "result", result);
  json_t *stats = json_object();
  json_t *summary = json_object();
  json_object_set_new(summary, "totalLinesProcessed", json_integer((json_int_t)c.scanned));
  json_object_set_new(stats, "summary", summary);
  json_object_set_new(data, "stats", stats);
  json_t *o = json_object();
  json_object_set_new(o, "status", json_string("success"));
  json_object_set_new(o, "data", data);
  tl_respond_json(req, 200, o);
}

typedef struct lbl_ctx {
  const char *label;
  json_t *set;
} lbl_ctx_t;

static int label_row(sk_stmt_t *r, void *ud) {
  lbl_ctx_t *c = ud;
  json_t *labels = json_loads(sk_stmt_text(r, 0), 0, NULL);
  const char *k;
  json_t *v;
  json_object_foreach(labels, k, v) {
    if (!c->label)
      json_object_set_new(c->set, k, json_true());
    else if (!strcmp(k, c->label) && json_is_string(v))
      json_object_set_new(c->set, json_string_value(v), json_true());
  }
  json_decref(labels);
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void tl_loki_labels(tl_sigdb_t *db, sk_http_req_t *req, const char *label) {
  lbl_ctx_t c = {.label = label, .set = json_object()};
  int rc = sk_store_query(db->r, "SELECT labels FROM streams", NULL, 0, label_row, &c);
  if (rc < 0) {
    json_decref(c.set);
    tl_respond_error(req, 500, "log store: %s", sk_store_errmsg(db->r));
    return;
  }
  size_t n = json_object_size(c.set), i = 0;
  const char **keys = sk_pool_alloc(req->pool, (n ? n : 1) * sizeof *keys);
  const char *k;
  json_t *v;
  json_object_foreach(c.set, k, v) keys[i++] = sk_pool_strdup(req->pool, k);
  qsort(keys, n, sizeof *keys, cmp_str);
  json_t *arr = json_array();
  for (i = 0; i < n; i++) json_array_append_new(arr, json_string(keys[i]));
  json_decref(c.set);
  json_t *o = json_object();
  json_object_set_new(o, "status", json_string("success"));
  json_object_set_new(o, "data", arr);
  tl_respond_json(req, 200, o);
}
