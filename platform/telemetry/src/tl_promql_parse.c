/* tl_promql_parse.c - PromQL lexer and recursive-descent parser.
 *
 * Operator precedence, lowest first: or; and unless; == != < <= > >=;
 * + -; * / %; ^ (right associative). Unary minus binds like * (so -2^2 is
 * -4). Errors carry the 1-based byte column of the offending token. */
#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skiff/err.h"
#include "tl_promql_int.h"

typedef enum tok_type {
  T_EOF = 0, T_NUM, T_DUR, T_STR, T_IDENT, T_LPAREN, T_RPAREN, T_LBRACE, T_RBRACE, T_LBRACK, T_RBRACK,
  T_COMMA, T_ASSIGN, T_EQL, T_NEQ, T_RE, T_NRE, T_LT, T_LTE, T_GT, T_GTE, T_ADD, T_SUB, T_MUL, T_DIV,
  T_MOD, T_POW, T_COLON, T_AT,
} tok_type_t;

typedef struct tok {
  tok_type_t type;
  size_t start, end;
  double num;
  int64_t dur;
  const char *str; /* decoded string / identifier, in the pool */
} tok_t;

typedef struct parser {
  const char *s; /* NUL-terminated copy */
  size_t len, pos;
  tok_t tok;
  tl_promql_expr_t *e;
  int depth;
  jmp_buf jb;
  char *err;
  size_t errlen;
  /* every matcher with a compiled regex, freed with the expression */
  tl_matcher_t ***allm;
} parser_t;

/* matcher arrays to release, kept on the expression (malloc'd list) */
typedef struct mlist {
  tl_matcher_t *m;
  size_t n;
  struct mlist *next;
} mlist_t;

static mlist_t **expr_mlist(tl_promql_expr_t *e) {
  /* stored right after the struct in the pool allocation (see parse) */
  return (mlist_t **)(e + 1);
}

static void fail(parser_t *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void fail(parser_t *p, size_t at, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (p->err) snprintf(p->err, p->errlen, "parse error at col %zu: %s", at + 1, msg);
  longjmp(p->jb, 1);
}

static const char *tok_desc(parser_t *p, const tok_t *t, char *buf, size_t len) {
  if (t->type == T_EOF) return "end of input";
  size_t n = t->end - t->start;
  if (n > 40) n = 40;
  const char *kind = t->type == T_STR ? "string " : t->type == T_NUM ? "number " : t->type == T_DUR ? "duration " : "";
  snprintf(buf, len, "%s'%.*s'", kind, (int)n, p->s + t->start);
  return buf;
}

static void fail_unexpected(parser_t *p, const char *expected) __attribute__((noreturn));
static void fail_unexpected(parser_t *p, const char *expected) {
  char b[80];
  if (expected)
    fail(p, p->tok.start, "unexpected %s, expected %s", tok_desc(p, &p->tok, b, sizeof b), expected);
  fail(p, p->tok.start, "unexpected %s", tok_desc(p, &p->tok, b, sizeof b));
}

/* ---- lexer ---- */

static int is_ident_start(int c) { return isalpha(c) || c == '_' || c == ':'; }
static int is_ident(int c) { return isalnum(c) || c == '_' || c == ':'; }

static int unit_ms(const char *s, size_t *ul, int64_t *ms) {
  if (s[0] == 'm' && s[1] == 's') { *ul = 2; *ms = 1; return 1; }
  switch (s[0]) {
  case 's': *ms = 1000; break;
  case 'm': *ms = 60000; break;
  case 'h': *ms = 3600000; break;
  case 'd': *ms = 86400000; break;
  case 'w': *ms = 7LL * 86400000; break;
  case 'y': *ms = 365LL * 86400000; break;
  default: return 0;
  }
  *ul = 1;
  return 1;
}

int tl_promql_parse_duration(const char *s, size_t len, int64_t *ms) {
  size_t i = 0;
  int64_t total = 0;
  if (len == 0) return SK_EINVAL;
  while (i < len) {
    if (!isdigit((unsigned char)s[i])) return SK_EINVAL;
    int64_t v = 0;
    while (i < len && isdigit((unsigned char)s[i])) {
      if (v > INT64_MAX / 10 - 10) return SK_ERANGE;
      v = v * 10 + (s[i++] - '0');
    }
    char u[3] = {0};
    for (size_t k = 0; k < 2 && i + k < len; k++) u[k] = s[i + k];
    size_t ul;
    int64_t mul;
    if (!unit_ms(u, &ul, &mul)) return SK_EINVAL;
    i += ul;
    if (v > INT64_MAX / mul || total > INT64_MAX - v * mul) return SK_ERANGE;
    total += v * mul;
  }
  *ms = total;
  return 0;
}

/* Length of a duration at s (digits+unit repeated), 0 if none. */
static size_t scan_duration(const char *s) {
  size_t i = 0, last = 0;
  for (;;) {
    size_t j = i;
    if (!isdigit((unsigned char)s[j])) break;
    while (isdigit((unsigned char)s[j])) j++;
    size_t ul;
    int64_t mul;
    if (!unit_ms(s + j, &ul, &mul)) break;
    j += ul;
    i = last = j;
  }
  if (last && (isalnum((unsigned char)s[last]) || s[last] == '_')) return 0;
  return last;
}

static void lex_string(parser_t *p, char q) {
  size_t i = p->pos + 1;
  sk_buf_t b;
  sk_buf_init(&b);
  for (;;) {
    char c = p->s[i];
    if (i >= p->len || c == 0) {
      sk_buf_done(&b);
      fail(p, p->pos, "unterminated quoted string");
    }
    if (c == q) break;
    if (c == '\\' && q != '`') {
      char d = p->s[++i];
      char o;
      switch (d) {
      case 'n': o = '\n'; break;
      case 't': o = '\t'; break;
      case 'r': o = '\r'; break;
      case 'a': o = '\a'; break;
      case 'b': o = '\b'; break;
      case 'f': o = '\f'; break;
      case 'v': o = '\v'; break;
      case '\\': o = '\\'; break;
      case '\'': o = '\''; break;
      case '"': o = '"'; break;
      case 'x': {
        if (!isxdigit((unsigned char)p->s[i + 1]) || !isxdigit((unsigned char)p->s[i + 2])) {
          sk_buf_done(&b);
          fail(p, i, "invalid escape sequence in string");
        }
        char hx[3] = {p->s[i + 1], p->s[i + 2], 0};
        o = (char)strtol(hx, NULL, 16);
        i += 2;
        break;
      }
      default:
        sk_buf_done(&b);
        fail(p, i, "unknown escape sequence '\\%c' in string", d ? d : '0');
      }
      sk_buf_append(&b, &o, 1);
      i++;
      continue;
    }
    sk_buf_append(&b, &c, 1);
    i++;
  }
  p->tok.type = T_STR;
  p->tok.str = sk_pool_strndup(p->e->pool, b.data ? b.data : "", b.len);
  p->tok.end = i + 1;
  sk_buf_done(&b);
}

static void next(parser_t *p) {
  const char *s = p->s;
  size_t i = p->tok.end;
  while (i < p->len && (isspace((unsigned char)s[i]) || s[i] == '#')) {
    if (s[i] == '#')
      while (i < p->len && s[i] != '\n') i++;
    else
      i++;
  }
  p->pos = i;
  tok_t *t = &p->tok;
  memset(t, 0, sizeof *t);
  t->start = i;
  t->end = i + 1;
  if (i >= p->len) {
    t->type = T_EOF;
    t->end = i;
    return;
  }
  char c = s[i], d = i + 1 < p->len ? s[i + 1] : 0;
  switch (c) {
  case '(': t->type = T_LPAREN; return;
  case ')': t->type = T_RPAREN; return;
  case '{': t->type = T_LBRACE; return;
  case '}': t->type = T_RBRACE; return;
  case '[': t->type = T_LBRACK; return;
  case ']': t->type = T_RBRACK; return;
  case ',': t->type = T_COMMA; return;
  case '+': t->type = T_ADD; return;
  case '-': t->type = T_SUB; return;
  case '*': t->type = T_MUL; return;
  case '/': t->type = T_DIV; return;
  case '%': t->type = T_MOD; return;
  case '^': t->type = T_POW; return;
  case ':': t->type = T_COLON; return;
  case '@': t->type = T_AT; return;
  case '=':
    if (d == '=') { t->type = T_EQL; t->end = i + 2; }
    else if (d == '~') { t->type = T_RE; t->end = i + 2; }
    else t->type = T_ASSIGN;
    return;
  case '!':
    if (d == '=') { t->type = T_NEQ; t->end = i + 2; return; }
    if (d == '~') { t->type = T_NRE; t->end = i + 2; return; }
    fail(p, i, "unexpected character after '!'");
  case '<':
    if (d == '=') { t->type = T_LTE; t->end = i + 2; } else t->type = T_LT;
    return;
  case '>':
    if (d == '=') { t->type = T_GTE; t->end = i + 2; } else t->type = T_GT;
    return;
  case '"': case '\'': case '`':
    lex_string(p, c);
    return;
  default: break;
  }
  if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)d))) {
    size_t dl = scan_duration(s + i);
    if (dl) {
      t->type = T_DUR;
      t->end = i + dl;
      if (tl_promql_parse_duration(s + i, dl, &t->dur) < 0) fail(p, i, "duration out of range");
      return;
    }
    char *endp;
    t->num = strtod(s + i, &endp);
    if (endp == s + i) fail(p, i, "bad number");
    t->type = T_NUM;
    t->end = (size_t)(endp - s);
    if (t->end > p->len || is_ident(s[t->end])) fail(p, i, "bad number or duration");
    return;
  }
  if (is_ident_start((unsigned char)c)) {
    size_t j = i;
    while (j < p->len && is_ident((unsigned char)s[j])) j++;
    t->type = T_IDENT;
    t->end = j;
    t->str = sk_pool_strndup(p->e->pool, s + i, j - i);
    return;
  }
  fail(p, i, "unexpected character '%c'", isprint((unsigned char)c) ? c : '?');
}

static int tok_is(const parser_t *p, const char *kw) { return p->tok.type == T_IDENT && !strcmp(p->tok.str, kw); }

static void expect(parser_t *p, tok_type_t t, const char *what) {
  if (p->tok.type != t) fail_unexpected(p, what);
  next(p);
}

/* ---- nodes ---- */

static pq_node_t *node(parser_t *p, pq_kind_t k, size_t at) {
  pq_node_t *n = sk_pool_calloc(p->e->pool, sizeof *n);
  n->kind = k;
  n->col = (int)at + 1;
  n->sel_idx = -1;
  return n;
}

static const char *type_name(tl_pq_type_t t) {
  switch (t) {
  case TL_PQ_SCALAR: return "scalar";
  case TL_PQ_VECTOR: return "instant vector";
  case TL_PQ_MATRIX: return "range vector";
  case TL_PQ_STRING: return "string";
  }
  return "?";
}

static pq_node_t *parse_expr(parser_t *p, int minprec);

static const char **parse_label_list(parser_t *p, size_t *n) {
  expect(p, T_LPAREN, "'('");
  const char **v = NULL;
  size_t k = 0, cap = 0;
  while (p->tok.type != T_RPAREN) {
    if (p->tok.type != T_IDENT) fail_unexpected(p, "label name");
    if (k == cap) {
      size_t nc = cap ? cap * 2 : 4;
      const char **nv = sk_pool_alloc(p->e->pool, nc * sizeof *nv);
      if (k) memcpy(nv, v, k * sizeof *nv);
      v = nv;
      cap = nc;
    }
    v[k++] = p->tok.str;
    next(p);
    if (p->tok.type == T_COMMA)
      next(p);
    else if (p->tok.type != T_RPAREN)
      fail_unexpected(p, "',' or ')'");
  }
  next(p);
  *n = k;
  return v;
}

static mlist_t *register_matchers(parser_t *p, tl_matcher_t *m) {
  mlist_t *l = calloc(1, sizeof *l);
  if (!l) abort();
  l->m = m;
  l->next = *expr_mlist(p->e);
  *expr_mlist(p->e) = l;
  return l;
}

#define MAX_MATCHERS 64

static pq_node_t *parse_selector(parser_t *p, const char *metric, size_t at) {
  char rerr[200];
  pq_node_t *n = node(p, PQ_VSEL, at);
  n->type = TL_PQ_VECTOR;
  /* registered up front so compiled regexes are freed whatever fails next */
  n->m = sk_pool_calloc(p->e->pool, (MAX_MATCHERS + 1) * sizeof *n->m);
  mlist_t *reg = register_matchers(p, n->m);
  if (metric) {
    tl_matcher_init(&n->m[n->nm++], TL_MATCH_EQ, "__name__", metric, NULL, 0);
    reg->n = n->nm;
  }
  if (p->tok.type == T_LBRACE) {
    next(p);
    while (p->tok.type != T_RBRACE) {
      if (p->tok.type != T_IDENT) fail_unexpected(p, "label matcher");
      const char *name = p->tok.str;
      size_t nat = p->tok.start;
      next(p);
      tl_match_op_t op = TL_MATCH_EQ;
      switch (p->tok.type) {
      case T_ASSIGN: op = TL_MATCH_EQ; break;
      case T_NEQ: op = TL_MATCH_NE; break;
      case T_RE: op = TL_MATCH_RE; break;
      case T_NRE: op = TL_MATCH_NRE; break;
      default: fail_unexpected(p, "label matching operator");
      }
      next(p);
      if (p->tok.type != T_STR) fail_unexpected(p, "string");
      if (n->nm >= MAX_MATCHERS) fail(p, nat, "too many label matchers");
      if (metric && !strcmp(name, "__name__")) fail(p, nat, "metric name must not be set twice");
      if (tl_matcher_init(&n->m[n->nm], op, name, p->tok.str, rerr, sizeof rerr) < 0)
        fail(p, p->tok.start, "%s", rerr);
      reg->n = ++n->nm;
      next(p);
      if (p->tok.type == T_COMMA)
        next(p);
      else if (p->tok.type != T_RBRACE)
        fail_unexpected(p, "',' or '}'");
    }
    next(p);
  }
  int nonempty = 0;
  for (size_t i = 0; i < n->nm; i++)
    if (!tl_matcher_matches(&n->m[i], "")) nonempty = 1;
  if (!nonempty) fail(p, at, "vector selector must contain at least one non-empty matcher");
  return n;
}

static const struct {
  const char *name;
  pq_agg_t op;
  int param;
} aggs[] = {
    {"sum", PQ_SUM, 0},       {"avg", PQ_AVG, 0},          {"min", PQ_MIN, 0},
    {"max", PQ_MAX, 0},       {"count", PQ_COUNT, 0},      {"topk", PQ_TOPK, 1},
    {"bottomk", PQ_BOTTOMK, 1}, {"stddev", PQ_STDDEV, 0}, {"stdvar", PQ_STDVAR, 0},
    {"quantile", PQ_QUANTILE, 1}, {"group", PQ_GROUP, 0}, {"count_values", PQ_COUNT_VALUES, 2},
};

static pq_node_t *parse_agg(parser_t *p, int ai, size_t at) {
  pq_node_t *n = node(p, PQ_AGG, at);
  n->agg = aggs[ai].op;
  n->type = TL_PQ_VECTOR;
  next(p);
  int have_group = 0;
  if (tok_is(p, "by") || tok_is(p, "without")) {
    n->without = tok_is(p, "without");
    next(p);
    n->grouping = parse_label_list(p, &n->ngrouping);
    have_group = 1;
  }
  expect(p, T_LPAREN, "'('");
  if (aggs[ai].param) {
    n->param = parse_expr(p, 0);
    tl_pq_type_t want = aggs[ai].param == 2 ? TL_PQ_STRING : TL_PQ_SCALAR;
    if (n->param->type != want)
      fail(p, (size_t)n->param->col - 1, "expected type %s in aggregation parameter, got %s", type_name(want),
           type_name(n->param->type));
    expect(p, T_COMMA, "','");
  }
  size_t eat = p->tok.start;
  n->lhs = parse_expr(p, 0);
  if (n->lhs->type != TL_PQ_VECTOR)
    fail(p, eat, "expected type instant vector in aggregation expression, got %s", type_name(n->lhs->type));
  expect(p, T_RPAREN, "')'");
  if (tok_is(p, "by") || tok_is(p, "without")) {
    if (have_group) fail(p, p->tok.start, "aggregation must only contain one grouping clause");
    n->without = tok_is(p, "without");
    next(p);
    n->grouping = parse_label_list(p, &n->ngrouping);
  }
  return n;
}

static pq_node_t *parse_call(parser_t *p, const pq_func_t *fn, size_t at) {
  pq_node_t *n = node(p, PQ_CALL, at);
  n->fn = fn;
  n->type = fn->ret;
  next(p); /* name */
  expect(p, T_LPAREN, "'('");
  pq_node_t *args[16];
  size_t na = 0;
  while (p->tok.type != T_RPAREN) {
    if (na >= 16) fail(p, p->tok.start, "too many arguments in call to \"%s\"", fn->name);
    args[na++] = parse_expr(p, 0);
    if (p->tok.type == T_COMMA)
      next(p);
    else if (p->tok.type != T_RPAREN)
      fail_unexpected(p, "',' or ')'");
  }
  next(p);
  size_t maxa = (size_t)(fn->nargs + fn->variadic);
  if (na < (size_t)fn->nargs || na > maxa) {
    if (fn->variadic)
      fail(p, at, "expected %d to %zu argument(s) in call to \"%s\", got %zu", fn->nargs, maxa, fn->name, na);
    fail(p, at, "expected %d argument(s) in call to \"%s\", got %zu", fn->nargs, fn->name, na);
  }
  for (size_t i = 0; i < na; i++) {
    tl_pq_type_t want = fn->args[i < 6 ? i : 5];
    if (args[i]->type != want)
      fail(p, (size_t)args[i]->col - 1, "expected type %s in call to function \"%s\", got %s", type_name(want),
           fn->name, type_name(args[i]->type));
  }
  n->args = sk_pool_memdup(p->e->pool, args, (na ? na : 1) * sizeof *args);
  n->nargs = na;
  return n;
}

static pq_node_t *parse_primary(parser_t *p) {
  tok_t t = p->tok;
  switch (t.type) {
  case T_NUM: {
    pq_node_t *n = node(p, PQ_NUM, t.start);
    n->num = t.num;
    n->type = TL_PQ_SCALAR;
    next(p);
    return n;
  }
  case T_DUR: fail(p, t.start, "unexpected duration");
  case T_STR: {
    pq_node_t *n = node(p, PQ_STR, t.start);
    n->str = t.str;
    n->type = TL_PQ_STRING;
    next(p);
    return n;
  }
  case T_LPAREN: {
    next(p);
    pq_node_t *n = node(p, PQ_PAREN, t.start);
    n->lhs = parse_expr(p, 0);
    n->type = n->lhs->type;
    expect(p, T_RPAREN, "')'");
    return n;
  }
  case T_LBRACE: return parse_selector(p, NULL, t.start);
  case T_IDENT: {
    /* what follows the identifier decides what it is */
    size_t save_end = p->tok.end;
    size_t j = save_end;
    while (j < p->len && isspace((unsigned char)p->s[j])) j++;
    char after = j < p->len ? p->s[j] : 0;
    for (size_t i = 0; i < sizeof aggs / sizeof aggs[0]; i++) {
      if (strcmp(t.str, aggs[i].name)) continue;
      int by = !strncmp(p->s + j, "by", 2) && !is_ident((unsigned char)p->s[j + 2]);
      int wo = !strncmp(p->s + j, "without", 7) && !is_ident((unsigned char)p->s[j + 7]);
      if (after == '(' || by || wo) return parse_agg(p, (int)i, t.start);
    }
    if (after == '(') {
      const pq_func_t *fn = tl__pq_func(t.str, strlen(t.str));
      if (!fn) fail(p, t.start, "unknown function with name \"%.64s\"", t.str);
      return parse_call(p, fn, t.start);
    }
    if (!strcasecmp(t.str, "inf") || !strcasecmp(t.str, "nan")) {
      pq_node_t *n = node(p, PQ_NUM, t.start);
      n->num = !strcasecmp(t.str, "inf") ? INFINITY : NAN;
      n->type = TL_PQ_SCALAR;
      next(p);
      return n;
    }
    static const char *const kw[] = {"by", "without", "on", "ignoring", "group_left", "group_right",
                                     "offset", "bool", "and", "or", "unless"};
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
      if (!strcmp(t.str, kw[i])) fail_unexpected(p, NULL);
    next(p);
    return parse_selector(p, t.str, t.start);
  }
  default: fail_unexpected(p, NULL);
  }
}

static pq_node_t *parse_postfix(parser_t *p) {
  pq_node_t *n = parse_primary(p);
  for (;;) {
    if (p->tok.type == T_LBRACK) {
      size_t at = p->tok.start;
      next(p);
      if (p->tok.type != T_DUR) fail_unexpected(p, "duration");
      int64_t r = p->tok.dur;
      next(p);
      if (p->tok.type == T_COLON) { /* subquery: expr[range:step] */
        next(p);
        int64_t step = 0;
        if (p->tok.type == T_DUR) {
          step = p->tok.dur;
          next(p);
          if (step <= 0) fail(p, at, "zero or negative subquery step");
        }
        expect(p, T_RBRACK, "']'");
        if (n->type != TL_PQ_VECTOR)
          fail(p, at, "subquery is only allowed on instant vector, got %s instead", type_name(n->type));
        if (r <= 0) fail(p, at, "range must be positive");
        pq_node_t *sq = node(p, PQ_SUBQ, at);
        sq->lhs = n;
        sq->type = TL_PQ_MATRIX;
        sq->range_ms = r;
        sq->step_ms = step;
        n = sq;
        continue;
      }
      if (n->kind != PQ_VSEL || n->offset_ms || n->at) fail(p, at, "ranges only allowed for vector selectors");
      expect(p, T_RBRACK, "']'");
      if (r <= 0) fail(p, at, "range must be positive");
      n->kind = PQ_MSEL;
      n->type = TL_PQ_MATRIX;
      n->range_ms = r;
      continue;
    }
    if (tok_is(p, "offset")) {
      size_t at = p->tok.start;
      if ((n->kind != PQ_VSEL && n->kind != PQ_MSEL && n->kind != PQ_SUBQ) || n->offset_ms)
        fail(p, at, "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery");
      next(p);
      int neg = 0;
      if (p->tok.type == T_SUB) {
        neg = 1;
        next(p);
      }
      if (p->tok.type != T_DUR) fail_unexpected(p, "duration");
      n->offset_ms = neg ? -p->tok.dur : p->tok.dur;
      next(p);
      continue;
    }
    if (p->tok.type == T_AT) {
      size_t at = p->tok.start;
      if (n->at) fail(p, at, "@ <timestamp> may not be set multiple times");
      if (n->kind != PQ_VSEL && n->kind != PQ_MSEL && n->kind != PQ_SUBQ)
        fail(p, at, "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery");
      next(p);
      if (tok_is(p, "start") || tok_is(p, "end")) {
        n->at = tok_is(p, "start") ? 2 : 3;
        next(p);
        expect(p, T_LPAREN, "'('");
        expect(p, T_RPAREN, "')'");
        continue;
      }
      int neg = 0;
      if (p->tok.type == T_SUB || p->tok.type == T_ADD) {
        neg = p->tok.type == T_SUB;
        next(p);
      }
      if (p->tok.type != T_NUM) fail_unexpected(p, "number, start() or end()");
      double v = neg ? -p->tok.num : p->tok.num;
      if (!(v > -9.2e15 && v < 9.2e15)) fail(p, p->tok.start, "timestamp out of bounds for @ modifier: %g", v);
      n->at = 1;
      n->at_ms = (int64_t)llround(v * 1000.0);
      next(p);
      continue;
    }
    return n;
  }
}

static int binop_of(const parser_t *p, pq_op_t *op, int *prec) {
  switch (p->tok.type) {
  case T_ADD: *op = PQ_ADD; *prec = 4; return 1;
  case T_SUB: *op = PQ_SUB; *prec = 4; return 1;
  case T_MUL: *op = PQ_MUL; *prec = 5; return 1;
  case T_DIV: *op = PQ_DIV; *prec = 5; return 1;
  case T_MOD: *op = PQ_MOD; *prec = 5; return 1;
  case T_POW: *op = PQ_POW; *prec = 6; return 1;
  case T_EQL: *op = PQ_EQL; *prec = 3; return 1;
  case T_NEQ: *op = PQ_NEQ; *prec = 3; return 1;
  case T_GT: *op = PQ_GTR; *prec = 3; return 1;
  case T_LT: *op = PQ_LSS; *prec = 3; return 1;
  case T_GTE: *op = PQ_GTE; *prec = 3; return 1;
  case T_LTE: *op = PQ_LTE; *prec = 3; return 1;
  case T_IDENT:
    if (!strcmp(p->tok.str, "and")) { *op = PQ_AND; *prec = 2; return 1; }
    if (!strcmp(p->tok.str, "unless")) { *op = PQ_UNLESS; *prec = 2; return 1; }
    if (!strcmp(p->tok.str, "or")) { *op = PQ_OR; *prec = 1; return 1; }
    return 0;
  default: return 0;
  }
}

static int is_cmp(pq_op_t op) { return op >= PQ_EQL && op <= PQ_LTE; }
static int is_set(pq_op_t op) { return op >= PQ_AND; }

static const char *op_name(pq_op_t op) {
  static const char *const names[] = {"", "+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=",
                                      "and", "or", "unless"};
  return names[op];
}

static pq_node_t *parse_unary(parser_t *p) {
  if (p->tok.type == T_SUB || p->tok.type == T_ADD) {
    int neg = p->tok.type == T_SUB;
    size_t at = p->tok.start;
    next(p);
    pq_node_t *x = parse_expr(p, 6);
    if (x->type != TL_PQ_SCALAR && x->type != TL_PQ_VECTOR)
      fail(p, at, "unary expression only allowed on expressions of type scalar or instant vector, got %s",
           type_name(x->type));
    if (!neg) return x;
    if (x->kind == PQ_NUM) {
      x->num = -x->num;
      x->col = (int)at + 1;
      return x;
    }
    pq_node_t *n = node(p, PQ_NEG, at);
    n->lhs = x;
    n->type = x->type;
    return n;
  }
  return parse_postfix(p);
}

static pq_node_t *parse_expr(parser_t *p, int minprec) {
  if (++p->depth > TL_PROMQL_MAX_DEPTH) fail(p, p->tok.start, "query nesting too deep");
  pq_node_t *lhs = parse_unary(p);
  for (;;) {
    pq_op_t op;
    int prec;
    if (!binop_of(p, &op, &prec) || prec < minprec) break;
    size_t at = p->tok.start;
    next(p);
    pq_node_t *n = node(p, PQ_BIN, at);
    n->op = op;
    n->card = is_set(op) ? PQ_MANY_TO_MANY : PQ_ONE_TO_ONE;
    if (tok_is(p, "bool")) {
      if (!is_cmp(op)) fail(p, p->tok.start, "bool modifier can only be used on comparison operators");
      n->return_bool = 1;
      next(p);
    }
    int have_match = 0;
    if (tok_is(p, "on") || tok_is(p, "ignoring")) {
      n->on = tok_is(p, "on");
      next(p);
      n->match = parse_label_list(p, &n->nmatch);
      have_match = 1;
      if (tok_is(p, "group_left") || tok_is(p, "group_right")) {
        if (is_set(op)) fail(p, p->tok.start, "no grouping allowed for \"%s\" operation", op_name(op));
        n->card = tok_is(p, "group_left") ? PQ_MANY_TO_ONE : PQ_ONE_TO_MANY;
        next(p);
        if (p->tok.type == T_LPAREN) n->include = parse_label_list(p, &n->ninclude);
      }
    } else if (tok_is(p, "group_left") || tok_is(p, "group_right")) {
      fail(p, p->tok.start, "group modifiers need on(...) or ignoring(...) before them");
    }
    int rprec = op == PQ_POW ? prec : prec + 1;
    pq_node_t *rhs = parse_expr(p, rprec);
    n->lhs = lhs;
    n->rhs = rhs;
    for (int side = 0; side < 2; side++) {
      pq_node_t *x = side ? rhs : lhs;
      if (x->type != TL_PQ_SCALAR && x->type != TL_PQ_VECTOR)
        fail(p, (size_t)x->col - 1, "binary expression must contain only scalar and instant vector types");
    }
    int both_vec = lhs->type == TL_PQ_VECTOR && rhs->type == TL_PQ_VECTOR;
    if (is_set(op) && !both_vec)
      fail(p, at, "set operator \"%s\" not allowed in binary scalar expression", op_name(op));
    if (is_cmp(op) && lhs->type == TL_PQ_SCALAR && rhs->type == TL_PQ_SCALAR && !n->return_bool)
      fail(p, at, "comparisons between scalars must use BOOL modifier");
    if (have_match && !both_vec) fail(p, at, "vector matching only allowed between instant vectors");
    n->type = both_vec || lhs->type == TL_PQ_VECTOR || rhs->type == TL_PQ_VECTOR ? TL_PQ_VECTOR : TL_PQ_SCALAR;
    lhs = n;
  }
  p->depth--;
  return lhs;
}

/* Indexes every selector; lo/hi: how much earlier than the query's start
 * and end the enclosing subqueries evaluate it. */
static void collect_sels(tl_promql_expr_t *e, pq_node_t *n, size_t *cap, int64_t lo, int64_t hi,
                         const pq_node_t *anchor) {
  if (!n) return;
  if (n->kind == PQ_SUBQ) {
    if (n->at) /* evaluated around its own @ time from here down */
      collect_sels(e, n->lhs, cap, n->offset_ms + n->range_ms, n->offset_ms, n);
    else
      collect_sels(e, n->lhs, cap, lo + n->offset_ms + n->range_ms, hi + n->offset_ms, anchor);
    return;
  }
  if (n->kind == PQ_VSEL || n->kind == PQ_MSEL) {
    n->sq_lo = lo;
    n->sq_hi = hi;
    if (anchor) {
      n->sq_at = anchor->at;
      n->sq_at_ms = anchor->at_ms;
    }
    if (e->nsels == *cap) {
      size_t nc = *cap ? *cap * 2 : 8;
      pq_node_t **nv = sk_pool_alloc(e->pool, nc * sizeof *nv);
      if (e->nsels) memcpy(nv, e->sels, e->nsels * sizeof *nv);
      e->sels = nv;
      *cap = nc;
    }
    n->sel_idx = (int)e->nsels;
    e->sels[e->nsels++] = n;
    return;
  }
  for (size_t i = 0; i < n->nargs; i++) collect_sels(e, n->args[i], cap, lo, hi, anchor);
  collect_sels(e, n->param, cap, lo, hi, anchor);
  collect_sels(e, n->lhs, cap, lo, hi, anchor);
  collect_sels(e, n->rhs, cap, lo, hi, anchor);
}

int tl_promql_parse(const char *q, size_t len, tl_promql_expr_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  if (len > TL_PROMQL_MAX_QUERY) {
    if (err) snprintf(err, errlen, "parse error at col 1: query longer than %d bytes", TL_PROMQL_MAX_QUERY);
    return SK_EPARSE;
  }
  sk_pool_t *pool = sk_pool_new();
  tl_promql_expr_t *e = sk_pool_calloc(pool, sizeof *e + sizeof(mlist_t *));
  e->pool = pool;
  parser_t *p = calloc(1, sizeof *p);
  if (!p) abort();
  p->e = e;
  p->s = sk_pool_strndup(pool, q, len);
  p->len = strlen(p->s); /* an embedded NUL ends the query */
  p->err = err;
  p->errlen = errlen;
  int rc = 0;
  if (setjmp(p->jb)) {
    rc = SK_EPARSE;
    goto out;
  }
  next(p);
  if (p->tok.type == T_EOF) fail(p, 0, "no expression found in input");
  e->root = parse_expr(p, 0);
  if (p->tok.type != T_EOF) fail_unexpected(p, NULL);
  size_t cap = 0;
  collect_sels(e, e->root, &cap, 0, 0, NULL);
out:
  free(p);
  if (rc < 0) {
    tl_promql_free(e);
    return rc;
  }
  *out = e;
  return 0;
}

void tl_promql_free(tl_promql_expr_t *e) {
  if (!e) return;
  mlist_t *l = *expr_mlist(e);
  while (l) {
    mlist_t *nx = l->next;
    for (size_t i = 0; i < l->n; i++) tl_matcher_done(&l->m[i]);
    free(l);
    l = nx;
  }
  sk_pool_free(e->pool);
}

tl_pq_type_t tl_promql_type(const tl_promql_expr_t *e) { return e->root->type; }

/* ---- function table ---- */

#define S TL_PQ_SCALAR
#define V TL_PQ_VECTOR
#define M TL_PQ_MATRIX
#define STR TL_PQ_STRING
static const pq_func_t funcs[] = {
    {"rate", {M}, 1, 0, V, PQF_RATE},
    {"irate", {M}, 1, 0, V, PQF_IRATE},
    {"increase", {M}, 1, 0, V, PQF_INCREASE},
    {"delta", {M}, 1, 0, V, PQF_DELTA},
    {"idelta", {M}, 1, 0, V, PQF_IDELTA},
    {"deriv", {M}, 1, 0, V, PQF_DERIV},
    {"predict_linear", {M, S}, 2, 0, V, PQF_PREDICT_LINEAR},
    {"holt_winters", {M, S, S}, 3, 0, V, PQF_HOLT_WINTERS},
    {"changes", {M}, 1, 0, V, PQF_CHANGES},
    {"resets", {M}, 1, 0, V, PQF_RESETS},
    {"avg_over_time", {M}, 1, 0, V, PQF_AVG_OT},
    {"min_over_time", {M}, 1, 0, V, PQF_MIN_OT},
    {"max_over_time", {M}, 1, 0, V, PQF_MAX_OT},
    {"sum_over_time", {M}, 1, 0, V, PQF_SUM_OT},
    {"count_over_time", {M}, 1, 0, V, PQF_COUNT_OT},
    {"last_over_time", {M}, 1, 0, V, PQF_LAST_OT},
    {"stddev_over_time", {M}, 1, 0, V, PQF_STDDEV_OT},
    {"stdvar_over_time", {M}, 1, 0, V, PQF_STDVAR_OT},
    {"quantile_over_time", {S, M}, 2, 0, V, PQF_QUANTILE_OT},
    {"present_over_time", {M}, 1, 0, V, PQF_PRESENT_OT},
    {"absent_over_time", {M}, 1, 0, V, PQF_ABSENT_OT},
    {"abs", {V}, 1, 0, V, PQF_ABS},
    {"ceil", {V}, 1, 0, V, PQF_CEIL},
    {"floor", {V}, 1, 0, V, PQF_FLOOR},
    {"round", {V, S}, 1, 1, V, PQF_ROUND},
    {"sqrt", {V}, 1, 0, V, PQF_SQRT},
    {"exp", {V}, 1, 0, V, PQF_EXP},
    {"ln", {V}, 1, 0, V, PQF_LN},
    {"log2", {V}, 1, 0, V, PQF_LOG2},
    {"log10", {V}, 1, 0, V, PQF_LOG10},
    {"sgn", {V}, 1, 0, V, PQF_SGN},
    {"clamp", {V, S, S}, 3, 0, V, PQF_CLAMP},
    {"clamp_min", {V, S}, 2, 0, V, PQF_CLAMP_MIN},
    {"clamp_max", {V, S}, 2, 0, V, PQF_CLAMP_MAX},
    {"histogram_quantile", {S, V}, 2, 0, V, PQF_HISTOGRAM_QUANTILE},
    {"time", {0}, 0, 0, S, PQF_TIME},
    {"vector", {S}, 1, 0, V, PQF_VECTOR},
    {"scalar", {V}, 1, 0, S, PQF_SCALAR},
    {"timestamp", {V}, 1, 0, V, PQF_TIMESTAMP},
    {"sort", {V}, 1, 0, V, PQF_SORT},
    {"sort_desc", {V}, 1, 0, V, PQF_SORT_DESC},
    {"absent", {V}, 1, 0, V, PQF_ABSENT},
    {"label_replace", {V, STR, STR, STR, STR}, 5, 0, V, PQF_LABEL_REPLACE},
    {"label_join", {V, STR, STR, STR, STR, STR}, 3, 13, V, PQF_LABEL_JOIN},
    {"minute", {V}, 0, 1, V, PQF_MINUTE},
    {"hour", {V}, 0, 1, V, PQF_HOUR},
    {"day_of_month", {V}, 0, 1, V, PQF_DAY_OF_MONTH},
    {"day_of_week", {V}, 0, 1, V, PQF_DAY_OF_WEEK},
    {"days_in_month", {V}, 0, 1, V, PQF_DAYS_IN_MONTH},
    {"month", {V}, 0, 1, V, PQF_MONTH},
    {"year", {V}, 0, 1, V, PQF_YEAR},
    {"acos", {V}, 1, 0, V, PQF_ACOS},
    {"acosh", {V}, 1, 0, V, PQF_ACOSH},
    {"asin", {V}, 1, 0, V, PQF_ASIN},
    {"asinh", {V}, 1, 0, V, PQF_ASINH},
    {"atan", {V}, 1, 0, V, PQF_ATAN},
    {"atanh", {V}, 1, 0, V, PQF_ATANH},
    {"cos", {V}, 1, 0, V, PQF_COS},
    {"cosh", {V}, 1, 0, V, PQF_COSH},
    {"sin", {V}, 1, 0, V, PQF_SIN},
    {"sinh", {V}, 1, 0, V, PQF_SINH},
    {"tan", {V}, 1, 0, V, PQF_TAN},
    {"tanh", {V}, 1, 0, V, PQF_TANH},
    {"deg", {V}, 1, 0, V, PQF_DEG},
    {"rad", {V}, 1, 0, V, PQF_RAD},
    {"pi", {0}, 0, 0, S, PQF_PI},
};
#undef S
#undef V
#undef M
#undef STR

const pq_func_t *tl__pq_func(const char *name, size_t len) {
  for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++)
    if (strlen(funcs[i].name) == len && !memcmp(funcs[i].name, name, len)) return &funcs[i];
  return NULL;
}
