/* Label selectors: "a=b,c!=d,e in (x,y),f notin (z),g,!h". */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "control.h"
#include "skiff/err.h"

static const char *skip_ws(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

static int key_char(char c) { return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' || c == '/'; }

static int value_char(char c) { return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.'; }

/* Copies a token of allowed characters into out; returns its length or -1. */
static int token(const char **pp, int (*ok)(char), char *out, size_t outlen) {
  const char *p = *pp;
  size_t n = 0;
  while (*p && ok(*p)) {
    if (n + 1 >= outlen) return -1;
    out[n++] = *p++;
  }
  out[n] = 0;
  *pp = p;
  return (int)n;
}

static int fail(char *err, size_t errlen, const char *s, const char *p, const char *what) {
  if (err) snprintf(err, errlen, "labelSelector at %d: %s", (int)(p - s) + 1, what);
  return SK_EINVAL;
}

int ctl_selector_parse(const char *s, ctl_selector_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!s) return 0;
  if (strlen(s) > 4096) return fail(err, errlen, s, s, "too long");
  const char *p = skip_ws(s);
  if (!*p) return 0;
  for (;;) {
    if (out->n >= CTL_SEL_MAX_REQS) return fail(err, errlen, s, p, "too many requirements");
    ctl_sel_req_t *r = &out->reqs[out->n];
    p = skip_ws(p);
    int neg = 0;
    if (*p == '!') {
      neg = 1;
      p = skip_ws(p + 1);
    }
    if (token(&p, key_char, r->key, sizeof r->key) <= 0) return fail(err, errlen, s, p, "expected a label key");
    p = skip_ws(p);
    if (neg) {
      r->op = CTL_SEL_NOT_EXISTS;
    } else if (*p == '=' || (*p == '!' && p[1] == '=')) {
      r->op = *p == '!' ? CTL_SEL_NE : CTL_SEL_EQ;
      p += *p == '!' ? 2 : (p[1] == '=' ? 2 : 1);
      p = skip_ws(p);
      if (token(&p, value_char, r->values[0], sizeof r->values[0]) < 0)
        return fail(err, errlen, s, p, "value too long");
      r->nvalues = 1;
    } else if ((!strncmp(p, "in", 2) && (p[2] == ' ' || p[2] == '(')) ||
               (!strncmp(p, "notin", 5) && (p[5] == ' ' || p[5] == '('))) {
      r->op = p[0] == 'i' ? CTL_SEL_IN : CTL_SEL_NOTIN;
      p = skip_ws(p + (r->op == CTL_SEL_IN ? 2 : 5));
      if (*p != '(') return fail(err, errlen, s, p, "expected '('");
      p++;
      for (;;) {
        p = skip_ws(p);
        if (r->nvalues >= CTL_SEL_MAX_VALUES) return fail(err, errlen, s, p, "too many values");
        if (token(&p, value_char, r->values[r->nvalues], sizeof r->values[0]) < 0)
          return fail(err, errlen, s, p, "value too long");
        r->nvalues++;
        p = skip_ws(p);
        if (*p == ',') {
          p++;
          continue;
        }
        if (*p == ')') {
          p++;
          break;
        }
        return fail(err, errlen, s, p, "expected ',' or ')'");
      }
    } else {
      r->op = CTL_SEL_EXISTS;
    }
    out->n++;
    p = skip_ws(p);
    if (!*p) break;
    if (*p != ',') return fail(err, errlen, s, p, "expected ','");
    p++;
  }
  return 0;
}

int ctl_selector_match(const ctl_selector_t *sel, const json_t *labels) {
  if (!sel) return 1;
  for (size_t i = 0; i < sel->n; i++) {
    const ctl_sel_req_t *r = &sel->reqs[i];
    json_t *v = json_is_object(labels) ? json_object_get(labels, r->key) : NULL;
    const char *val = json_is_string(v) ? json_string_value(v) : NULL;
    int in = 0;
    if (val)
      for (size_t k = 0; k < r->nvalues; k++)
        if (!strcmp(val, r->values[k])) in = 1;
    switch (r->op) {
    case CTL_SEL_EQ:
    case CTL_SEL_IN:
      if (!in) return 0;
      break;
    case CTL_SEL_NE:
    case CTL_SEL_NOTIN:
      if (in) return 0;
      break;
    case CTL_SEL_EXISTS:
      if (!val) return 0;
      break;
    case CTL_SEL_NOT_EXISTS:
      if (val) return 0;
      break;
    }
  }
  return 1;
}
