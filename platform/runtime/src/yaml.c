/* yaml.c - libyaml events into a bounded node tree with positions, and
 * that tree into jansson values. */
#include "skiff/yaml.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "skiff/err.h"
#include "yaml_int.h"

#define SK_YAML_DEFAULT_MAX_BYTES (16u << 20)
#define SK_YAML_DEFAULT_MAX_DEPTH 64
#define SK_YAML_DEFAULT_MAX_NODES 1000000
#define SK_YAML_DEFAULT_MAX_DOCS 10000
#define SK_YAML_HARD_MAX_DEPTH 1024

static void set_err(char *err, size_t errlen, int *line, int *col, int l, int c, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void set_err(char *err, size_t errlen, int *line, int *col, int l, int c, const char *fmt, ...) {
  if (line) *line = l;
  if (col) *col = c;
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
}

static sk__ynode_t *node_new(sk_pool_t *pool, sk__ykind_t kind, const yaml_mark_t *m) {
  sk__ynode_t *n = sk_pool_calloc(pool, sizeof(*n));
  n->kind = kind;
  n->line = (int)m->line + 1;
  n->col = (int)m->column + 1;
  return n;
}

static void add_child(sk__ynode_t *parent, sk__ynode_t *c) {
  if (parent->last)
    parent->last->next = c;
  else
    parent->first = c;
  parent->last = c;
  parent->n++;
}

int sk__yaml_parse(const char *text, size_t len, const sk__ylimits_t *lim, sk__ystream_t *out, char *err,
                   size_t errlen, int *line, int *col) {
  size_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : SK_YAML_DEFAULT_MAX_BYTES;
  int max_depth = lim && lim->max_depth > 0 ? lim->max_depth : SK_YAML_DEFAULT_MAX_DEPTH;
  size_t max_nodes = lim && lim->max_nodes ? lim->max_nodes : SK_YAML_DEFAULT_MAX_NODES;
  size_t max_docs = lim && lim->max_docs ? lim->max_docs : SK_YAML_DEFAULT_MAX_DOCS;
  if (max_depth > SK_YAML_HARD_MAX_DEPTH) max_depth = SK_YAML_HARD_MAX_DEPTH;
  memset(out, 0, sizeof(*out));
  out->pool = sk_pool_new();
  if (err && errlen) err[0] = 0;
  if (line) *line = 0;
  if (col) *col = 0;
  if (len > max_bytes) {
    set_err(err, errlen, line, col, 1, 1, "input of %zu bytes exceeds the limit of %zu bytes", len, max_bytes);
    return SK_ELIMIT;
  }

  yaml_parser_t parser;
  yaml_event_t ev;
  int rc = 0, done = 0;
  size_t nodes = 0, docs_cap = 0;
  int depth = 0;
  sk__ynode_t **stack = sk_xcalloc((size_t)max_depth + 1, sizeof(*stack));
  sk__ynode_t *root = NULL;
  int in_doc = 0;

  if (!yaml_parser_initialize(&parser)) {
    free(stack);
    set_err(err, errlen, line, col, 1, 1, "out of memory");
    return SK_ENOMEM;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  while (!done) {
    if (!yaml_parser_parse(&parser, &ev)) {
      const char *problem = parser.problem ? parser.problem : "invalid YAML";
      yaml_mark_t m = parser.problem_mark;
      if (parser.context)
        set_err(err, errlen, line, col, (int)m.line + 1, (int)m.column + 1, "YAML syntax error: %s %s", problem,
                parser.context);
      else
        set_err(err, errlen, line, col, (int)m.line + 1, (int)m.column + 1, "YAML syntax error: %s", problem);
      rc = SK_EPARSE;
      break;
    }
    const yaml_mark_t *m = &ev.start_mark;
    sk__ynode_t *n = NULL;
    switch (ev.type) {
    case YAML_STREAM_END_EVENT: done = 1; break;
    case YAML_DOCUMENT_START_EVENT:
      if (out->ndocs >= max_docs) {
        set_err(err, errlen, line, col, (int)m->line + 1, (int)m->column + 1, "more than %zu documents", max_docs);
        rc = SK_ELIMIT;
        break;
      }
      in_doc = 1;
      root = NULL;
      break;
    case YAML_DOCUMENT_END_EVENT:
      if (out->ndocs == docs_cap) {
        size_t nc = docs_cap ? docs_cap * 2 : 4;
        sk__ynode_t **nd = sk_pool_alloc(out->pool, nc * sizeof(*nd));
        if (out->ndocs) memcpy(nd, out->docs, out->ndocs * sizeof(*nd));
        out->docs = nd;
        docs_cap = nc;
      }
      out->docs[out->ndocs++] = root;
      in_doc = 0;
      break;
    case YAML_ALIAS_EVENT:
      set_err(err, errlen, line, col, (int)m->line + 1, (int)m->column + 1,
              "YAML aliases (*%s) are not supported", ev.data.alias.anchor ? (char *)ev.data.alias.anchor : "");
      rc = SK_EPARSE;
      break;
    case YAML_SCALAR_EVENT:
      n = node_new(out->pool, SK__Y_SCALAR, m);
      n->str = sk_pool_memdup(out->pool, ev.data.scalar.value, ev.data.scalar.length + 1);
      n->len = ev.data.scalar.length;
      n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && ev.data.scalar.plain_implicit;
      break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
      n = node_new(out->pool, ev.type == YAML_MAPPING_START_EVENT ? SK__Y_MAP : SK__Y_SEQ, m);
      break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
      if (depth > 0) depth--;
      break;
    default: break;
    }
    if (n && rc == 0) {
      if (++nodes > max_nodes) {
        set_err(err, errlen, line, col, n->line, n->col, "more than %zu YAML nodes", max_nodes);
        rc = SK_ELIMIT;
      } else {
        if (depth > 0)
          add_child(stack[depth - 1], n);
        else if (in_doc)
          root = n;
        if (n->kind != SK__Y_SCALAR) {
          if (depth >= max_depth) {
            set_err(err, errlen, line, col, n->line, n->col, "nesting deeper than %d levels", max_depth);
            rc = SK_ELIMIT;
          } else {
            stack[depth++] = n;
          }
        }
      }
    }
    yaml_event_delete(&ev);
    if (rc) break;
  }
  yaml_parser_delete(&parser);
  free(stack);
  if (rc) {
    out->docs = NULL;
    out->ndocs = 0;
  }
  return rc;
}

void sk__yaml_stream_done(sk__ystream_t *s) {
  if (!s) return;
  sk_pool_free(s->pool);
  memset(s, 0, sizeof(*s));
}

int sk__yaml_is_null(const sk__ynode_t *n) {
  if (!n) return 1;
  if (n->kind != SK__Y_SCALAR || !n->plain) return 0;
  return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 || strcmp(n->str, "Null") == 0 ||
         strcmp(n->str, "NULL") == 0;
}

const char *sk__yaml_kind_name(const sk__ynode_t *n) {
  if (!n) return "nothing";
  switch (n->kind) {
  case SK__Y_MAP: return "a mapping";
  case SK__Y_SEQ: return "a sequence";
  default: return sk__yaml_is_null(n) ? "null" : "a scalar";
  }
}

/* ---- YAML 1.2 core schema typing of plain scalars ---- */

static int all_in(const char *s, const char *set) { return *s && strspn(s, set) == strlen(s); }

static json_t *plain_scalar(const sk__ynode_t *n) {
  const char *s = n->str;
  if (sk__yaml_is_null(n)) return json_null();
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return json_true();
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return json_false();
  if (strlen(s) != n->len) return json_stringn(s, n->len);
  const char *d = (*s == '-' || *s == '+') ? s + 1 : s;
  if (all_in(d, "0123456789")) {
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == 0) return json_integer(v);
    double r = strtod(s, NULL);
    return isfinite(r) ? json_real(r) : json_string(s);
  }
  if ((!strncmp(s, "0x", 2) && all_in(s + 2, "0123456789abcdefABCDEF")) || (!strncmp(s, "0o", 2) && all_in(s + 2, "01234567"))) {
    errno = 0;
    unsigned long long v = strtoull(s + 2, NULL, s[1] == 'x' ? 16 : 8);
    if (errno == 0 && v <= (unsigned long long)INT64_MAX) return json_integer((json_int_t)v);
    return json_string(s);
  }
  /* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
  const char *p = d;
  size_t ip = strspn(p, "0123456789");
  p += ip;
  size_t fp = 0;
  int dot = 0;
  if (*p == '.') {
    dot = 1;
    p++;
    fp = strspn(p, "0123456789");
    p += fp;
  }
  if ((ip || fp) && (dot || *p == 'e' || *p == 'E')) {
    if (*p == 'e' || *p == 'E') {
      p++;
      if (*p == '-' || *p == '+') p++;
      size_t ep = strspn(p, "0123456789");
      if (!ep) return json_string(s);
      p += ep;
    }
    if (*p == 0) {
      double r = strtod(s, NULL);
      if (isfinite(r)) return json_real(r);
    }
  }
  return json_stringn(s, n->len);
}

typedef struct jctx {
  char *err;
  size_t errlen;
  int *line, *col;
} jctx_t;

static json_t *to_json(const sk__ynode_t *n, jctx_t *c) {
  if (!n) return json_null();
  if (n->kind == SK__Y_SCALAR) {
    json_t *v = n->plain ? plain_scalar(n) : json_stringn(n->str, n->len);
    if (!v) set_err(c->err, c->errlen, c->line, c->col, n->line, n->col, "invalid scalar (bad UTF-8)");
    return v;
  }
  if (n->kind == SK__Y_SEQ) {
    json_t *a = json_array();
    for (const sk__ynode_t *k = n->first; k; k = k->next) {
      json_t *v = to_json(k, c);
      if (!v) {
        json_decref(a);
        return NULL;
      }
      json_array_append_new(a, v);
    }
    return a;
  }
  json_t *o = json_object();
  for (const sk__ynode_t *k = n->first; k && k->next; k = k->next->next) {
    const sk__ynode_t *v = k->next;
    if (k->kind != SK__Y_SCALAR) {
      set_err(c->err, c->errlen, c->line, c->col, k->line, k->col, "mapping keys must be scalars, got %s",
              sk__yaml_kind_name(k));
      json_decref(o);
      return NULL;
    }
    if (strlen(k->str) != k->len) {
      set_err(c->err, c->errlen, c->line, c->col, k->line, k->col, "mapping key contains a NUL byte");
      json_decref(o);
      return NULL;
    }
    if (json_object_get(o, k->str)) {
      set_err(c->err, c->errlen, c->line, c->col, k->line, k->col, "duplicate key '%s'", k->str);
      json_decref(o);
      return NULL;
    }
    json_t *jv = to_json(v, c);
    if (!jv) {
      json_decref(o);
      return NULL;
    }
    json_object_set_new(o, k->str, jv);
  }
  return o;
}

json_t *sk__yaml_to_json(const sk__ynode_t *n, char *err, size_t errlen, int *line, int *col) {
  jctx_t c = {err, errlen, line, col};
  return to_json(n, &c);
}

static int load(const char *text, size_t len, const sk_yaml_opts_t *o, int one, json_t **out, char *err,
                size_t errlen) {
  sk__ylimits_t lim = {0};
  if (o) {
    lim.max_bytes = o->max_bytes;
    lim.max_depth = o->max_depth;
    lim.max_nodes = o->max_nodes;
    lim.max_docs = o->max_docs;
  }
  int line = 0, col = 0;
  char msg[512];
  sk__ystream_t st;
  *out = NULL;
  if (err && errlen) err[0] = 0;
  int rc = sk__yaml_parse(text, len, &lim, &st, msg, sizeof msg, &line, &col);
  if (rc < 0) goto fail;
  jctx_t c = {msg, sizeof msg, &line, &col};
  if (one) {
    if (st.ndocs > 1) {
      /* report where the second document starts */
      const sk__ynode_t *d2 = st.docs[1];
      line = d2 ? d2->line : 1;
      col = d2 ? d2->col : 1;
      snprintf(msg, sizeof msg, "expected one YAML document, got %zu", st.ndocs);
      rc = SK_EPARSE;
      goto fail;
    }
    json_t *v = st.ndocs ? to_json(st.docs[0], &c) : json_null();
    if (!v) {
      rc = SK_EPARSE;
      goto fail;
    }
    *out = v;
  } else {
    json_t *a = json_array();
    for (size_t i = 0; i < st.ndocs; i++) {
      json_t *v = to_json(st.docs[i], &c);
      if (!v) {
        json_decref(a);
        rc = SK_EPARSE;
        goto fail;
      }
      json_array_append_new(a, v);
    }
    *out = a;
  }
  sk__yaml_stream_done(&st);
  return 0;
fail:
  if (err && errlen) snprintf(err, errlen, "%d:%d: %s", line ? line : 1, col ? col : 1, msg);
  sk__yaml_stream_done(&st);
  return rc;
}

int sk_yaml_load_all(const char *text, size_t len, const sk_yaml_opts_t *o, json_t **out, char *err, size_t errlen) {
  return load(text, len, o, 0, out, err, errlen);
}

int sk_yaml_load(const char *text, size_t len, const sk_yaml_opts_t *o, json_t **out, char *err, size_t errlen) {
  return load(text, len, o, 1, out, err, errlen);
}
