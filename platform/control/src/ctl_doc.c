/* Resource documents: decoding request bodies (JSON or YAML), checking the
 * common envelope (apiVersion, kind, metadata), JSON merge patch, Status
 * error bodies and YAML output. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

/* ---- errs ---- */

/* Drops a UTF-8 sequence cut short at the end of s (snprintf truncating a
 * long name mid-character), so the text stays valid for JSON. */
static void utf8_cut(char *s) {
  size_t n = strlen(s), i = n, back = 0;
  while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) i--, back++;
  if (i == 0) return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  if (lead >= 0x80 && n - (i - 1) < want) s[i - 1] = 0;
}

/* json_string that never fails: text that is not valid UTF-8 gets '?' for
 * every byte outside ASCII (the document decoders only let valid UTF-8 in;
 * this covers a message cut by a fixed buffer). */
static json_t *json_string_lossy(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  char *t = sk_xstrdup(s);
  for (char *p = t; *p; p++)
    if ((unsigned char)*p >= 0x80) *p = '?';
  j = json_string(t);
  free(t);
  return j ? j : json_string("");
}

void ctl_errs_init(ctl_errs_t *e) {
  e->n = 0;
  e->dropped = 0;
}

void ctl_errs_add(ctl_errs_t *e, const char *field, const char *fmt, ...) {
  if (e->n >= CTL_MAX_CAUSES) {
    e->dropped++;
    return;
  }
  ctl_cause_t *c = &e->v[e->n++];
  snprintf(c->field, sizeof c->field, "%s", field ? field : "");
  utf8_cut(c->field);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->message, sizeof c->message, fmt, ap);
  va_end(ap);
  utf8_cut(c->message);
}

void ctl_errs_format(const ctl_errs_t *e, char *out, size_t len) {
  size_t k = 0;
  if (!len) return;
  out[0] = 0;
  for (size_t i = 0; i < e->n && k + 1 < len; i++) {
    int w = snprintf(out + k, len - k, "%s%s%s%s", i ? "; " : "", e->v[i].field, e->v[i].field[0] ? ": " : "",
                     e->v[i].message);
    if (w < 0) break;
    k += (size_t)w;
  }
  if (e->dropped && k + 1 < len) snprintf(out + (k < len ? k : len - 1), len - (k < len ? k : len - 1), "; and %zu more", e->dropped);
  utf8_cut(out);
}

/* ---- decoding ---- */

int ctl_doc_decode(const void *body, size_t len, const char *content_type, json_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (len > CTL_MAX_DOC_BYTES) {
    if (err) snprintf(err, errlen, "document larger than %u bytes", CTL_MAX_DOC_BYTES);
    return SK_ELIMIT;
  }
  const char *s = body ? body : "";
  size_t i = 0;
  while (i < len && isspace((unsigned char)s[i])) i++;
  int yaml = content_type && strstr(content_type, "yaml");
  if (!content_type || !strstr(content_type, "json")) yaml = yaml || (i < len && s[i] != '{');
  if (i == len) {
    if (err) snprintf(err, errlen, "empty body");
    return SK_EPARSE;
  }
  int rc;
  if (yaml) {
    sk_yaml_opts_t o = {.max_bytes = CTL_MAX_DOC_BYTES, .max_depth = CTL_MAX_DOC_DEPTH, .max_nodes = 100000,
                        .max_docs = 2};
    rc = sk_yaml_load(s, len, &o, out, err, errlen);
  } else {
    rc = sk_json_parse(s, len, CTL_MAX_DOC_BYTES, CTL_MAX_DOC_DEPTH, out, err, errlen);
  }
  if (rc < 0) return rc;
  if (!json_is_object(*out)) {
    json_decref(*out);
    *out = NULL;
    if (err) snprintf(err, errlen, "the document must be a mapping");
    return SK_EPARSE;
  }
  return 0;
}

/* ---- names ---- */

static int dns_label_ok(const char *s, size_t n) {
  if (n == 0 || n > 63) return 0;
  if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1])) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(islower(c) || isdigit(c) || c == '-')) return 0;
  }
  return 1;
}

int ctl_valid_ns(const char *s) { return s && dns_label_ok(s, strlen(s)); }

int ctl_valid_name(const char *s) {
  if (!s) return 0;
  size_t n = strlen(s);
  if (n == 0 || n > CTL_NAME_LEN) return 0;
  const char *p = s;
  for (;;) {
    const char *dot = strchr(p, '.');
    size_t l = dot ? (size_t)(dot - p) : strlen(p);
    if (!dns_label_ok(p, l)) return 0;
    if (!dot) break;
    p = dot + 1;
  }
  return 1;
}

/* Label keys: [prefix/]name, name 1..63 of [A-Za-z0-9._-] starting and
 * ending alphanumeric; prefix a DNS subdomain. Values: empty or the same
 * character rules, at most 63. */
static int label_name_ok(const char *s, size_t n) {
  if (n == 0 || n > 63) return 0;
  if (!isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1])) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(isalnum(c) || c == '-' || c == '_' || c == '.')) return 0;
  }
  return 1;
}

static int label_key_ok(const char *k) {
  const char *slash = strchr(k, '/');
  if (!slash) return label_name_ok(k, strlen(k));
  char prefix[CTL_NAME_LEN + 1];
  size_t pl = (size_t)(slash - k);
  if (pl == 0 || pl > CTL_NAME_LEN) return 0;
  memcpy(prefix, k, pl);
  prefix[pl] = 0;
  return ctl_valid_name(prefix) && label_name_ok(slash + 1, strlen(slash + 1));
}

static void check_string_map(const json_t *m, const char *field, int labels, ctl_errs_t *errs) {
  if (!m || json_is_null(m)) return;
  if (!json_is_object(m)) {
    ctl_errs_add(errs, field, "must be a mapping of strings");
    return;
  }
  if (json_object_size(m) > 256) ctl_errs_add(errs, field, "at most 256 entries");
  const char *k;
  json_t *v;
  size_t total = 0;
  json_object_foreach((json_t *)m, k, v) {
    char f[CTL_FIELD_MAX];
    snprintf(f, sizeof f, "%s[%.100s]", field, k);
    if (!label_key_ok(k)) ctl_errs_add(errs, f, "invalid key: [prefix/]name, name 1..63 of [A-Za-z0-9._-]");
    if (!json_is_string(v)) {
      ctl_errs_add(errs, f, "must be a string");
      continue;
    }
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    total += n;
    if (labels && n && !label_name_ok(s, n))
      ctl_errs_add(errs, f, "invalid value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends");
  }
  if (!labels && total > 256 * 1024) ctl_errs_add(errs, field, "at most 256KiB in total");
}

const ctl_kind_t *ctl_doc_check(json_t *doc, const ctl_kind_t *want, const char *ns, const char *name,
                                ctl_errs_t *errs) {
  size_t before = errs->n + errs->dropped;
  const char *av = sk_json_get_str(doc, "apiVersion", NULL);
  const char *kd = sk_json_get_str(doc, "kind", NULL);
  if (!av) ctl_errs_add(errs, "apiVersion", "required");
  if (!kd) ctl_errs_add(errs, "kind", "required");
  if (!av || !kd) return NULL;
  const ctl_kind_t *k = ctl_kind_for_doc(av, kd);
  if (!k) {
    const ctl_kind_t *byname = ctl_kind_find(kd);
    if (byname && !strcmp(byname->kind, kd))
      ctl_errs_add(errs, "apiVersion", "%s is not served for kind %s (use %s)", av, kd, byname->api_version);
    else
      ctl_errs_add(errs, "kind", "unknown kind %s", kd);
    return NULL;
  }
  if (want && k != want && ctl_kind_storage(k) != ctl_kind_storage(want)) {
    ctl_errs_add(errs, "kind", "%s does not belong under /api/v1/%s", kd, want->plural);
    return NULL;
  }
  json_t *m = json_object_get(doc, "metadata");
  if (!json_is_object(m)) {
    ctl_errs_add(errs, "metadata", "required mapping");
    return NULL;
  }
  json_t *jn = json_object_get(m, "name");
  if (!jn && name) json_object_set_new(m, "name", json_string(name)), jn = json_object_get(m, "name");
  if (!json_is_string(jn)) {
    ctl_errs_add(errs, "metadata.name", "required");
  } else {
    const char *n = json_string_value(jn);
    if (!ctl_valid_name(n))
      ctl_errs_add(errs, "metadata.name",
                   "must be a DNS subdomain: lowercase alphanumerics, '-' and '.', at most 253 characters");
    else if (name && strcmp(n, name))
      ctl_errs_add(errs, "metadata.name", "'%s' does not match the name in the URL '%s'", n, name);
  }
  json_t *jns = json_object_get(m, "namespace");
  if (k->namespaced) {
    if (!jns || json_is_null(jns)) {
      json_object_set_new(m, "namespace", json_string(ns ? ns : "default"));
    } else if (!json_is_string(jns) || !ctl_valid_ns(json_string_value(jns))) {
      ctl_errs_add(errs, "metadata.namespace", "must be a DNS label: lowercase alphanumerics and '-', at most 63");
    } else if (ns && strcmp(json_string_value(jns), ns)) {
      ctl_errs_add(errs, "metadata.namespace", "'%s' does not match the namespace in the URL '%s'",
                   json_string_value(jns), ns);
    }
  } else {
    if (jns && !json_is_null(jns) && !(json_is_string(jns) && !*json_string_value(jns)))
      ctl_errs_add(errs, "metadata.namespace", "%s is not namespaced", k->kind);
    json_object_set_new(m, "namespace", json_string(""));
  }
  check_string_map(json_object_get(m, "labels"), "metadata.labels", 1, errs);
  check_string_map(json_object_get(m, "annotations"), "metadata.annotations", 0, errs);
  if (k->validate) k->validate(doc, errs);
  return errs->n + errs->dropped == before ? k : NULL;
}

int ctl_doc_prepare(json_t *doc, const ctl_kind_t *want, const char *ns, const char *name, json_t **stored,
                    const ctl_kind_t **kind, ctl_errs_t *errs) {
  *stored = NULL;
  if (kind) *kind = NULL;
  const ctl_kind_t *k = ctl_doc_check(doc, want, ns, name, errs);
  if (!k) return SK_EINVAL;
  if (kind) *kind = k;
  if (!k->stored_as) {
    *stored = json_incref(doc);
    return 0;
  }
  json_t *conv = NULL;
  int rc = k->to_stored(doc, &conv, errs);
  if (rc < 0) return rc;
  /* The converted document goes through its own kind's checks too. */
  const ctl_kind_t *sk = ctl_doc_check(conv, ctl_kind_storage(k), ns, name, errs);
  if (!sk) {
    json_decref(conv);
    return SK_EINVAL;
  }
  *stored = conv;
  return 0;
}

/* ---- merge patch (RFC 7386) ---- */

json_t *ctl_merge_patch(const json_t *target, const json_t *patch) {
  if (!json_is_object(patch)) return json_deep_copy(patch);
  json_t *res = json_is_object(target) ? json_deep_copy(target) : json_object();
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)patch, k, v) {
    if (json_is_null(v)) {
      json_object_del(res, k);
    } else {
      json_t *merged = ctl_merge_patch(json_object_get(res, k), v);
      json_object_set_new(res, k, merged);
    }
  }
  return res;
}

/* ---- Status ---- */

json_t *ctl_status_new(int code, const char *reason, const char *message, const char *kind, const char *name,
                       const ctl_errs_t *errs) {
  json_t *st = json_pack("{s:s, s:s, s:{}, s:s, s:o, s:o, s:i}", "kind", "Status", "apiVersion", "v1", "metadata",
                         "status", code < 400 ? "Success" : "Failure", "message", json_string_lossy(message ? message : ""),
                         "reason", json_string_lossy(reason ? reason : ""), "code", code);
  if (!st) abort();
  if (kind || name || (errs && errs->n)) {
    json_t *d = json_object();
    if (name) json_object_set_new(d, "name", json_string_lossy(name));
    if (kind) json_object_set_new(d, "kind", json_string_lossy(kind));
    if (errs && errs->n) {
      json_t *causes = json_array();
      for (size_t i = 0; i < errs->n; i++)
        json_array_append_new(causes, json_pack("{s:s, s:o, s:o}", "reason", "FieldValueInvalid", "field",
                                                json_string_lossy(errs->v[i].field), "message",
                                                json_string_lossy(errs->v[i].message)));
      json_object_set_new(d, "causes", causes);
    }
    json_object_set_new(st, "details", d);
  }
  return st;
}

/* ---- YAML output ---- */

/* Characters a YAML reader takes as line breaks (U+0085, U+2028, U+2029)
 * or refuses as non-printable (C1 controls, U+FEFF, U+FFFE, U+FFFF) even
 * in a quoted scalar: returns the length of such a sequence at p (0 if
 * there is none) and its code point in *cp, so it is written "\uXXXX". */
static size_t yaml_unprintable(const unsigned char *p, size_t left, unsigned *cp) {
  if (left >= 2 && p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
    *cp = p[1];
    return 2;
  }
  if (left >= 3 && p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
    *cp = 0x2000u | (p[2] - 0x80u);
    return 3;
  }
  if (left >= 3 && p[0] == 0xef && ((p[1] == 0xbb && p[2] == 0xbf) || (p[1] == 0xbf && p[2] >= 0xbe))) {
    *cp = 0xf000u | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3fu);
    return 3;
  }
  return 0;
}

static int needs_quotes(const char *s) {
  if (!*s) return 1;
  static const char *const special[] = {"null", "Null", "NULL", "~", "true", "True", "TRUE", "false", "False",
                                        "FALSE", "yes", "no", "on", "off", "Yes", "No", "On", "Off", "y", "n"};
  for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
    if (!strcmp(s, special[i])) return 1;
  /* Anything that reads as a number. */
  char *end = NULL;
  strtod(s, &end);
  if (end && !*end) return 1;
  if (strchr("-?:,[]{}#&*!|>'\"%@` \t", s[0]) || isdigit((unsigned char)s[0])) return 1;
  size_t n = strlen(s);
  if (s[n - 1] == ' ' || s[n - 1] == ':') return 1;
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    unsigned cp;
    if (c < 0x20 || c == 0x7f || yaml_unprintable((const unsigned char *)p, n - (size_t)(p - s), &cp)) return 1;
    if ((c == ':' && (p[1] == ' ' || !p[1])) || (c == '#' && p > s && p[-1] == ' ')) return 1;
  }
  return 0;
}

/* n is the string's whole length: a JSON string may hold NUL ("\u0000"),
 * which only a double-quoted scalar can carry */
static void emit_str(const char *s, size_t n, sk_buf_t *b) {
  if (strlen(s) == n && !needs_quotes(s)) {
    sk_buf_puts(b, s);
    return;
  }
  sk_buf_puts(b, "\"");
  const unsigned char *u = (const unsigned char *)s;
  size_t run = 0;
  for (size_t i = 0; i < n;) {
    unsigned cp;
    size_t k = yaml_unprintable(u + i, n - i, &cp);
    if (!k) {
      run++;
      i++;
      continue;
    }
    sk_json_escape(b, s + i - run, run);
    sk_buf_printf(b, "\\u%04x", cp);
    run = 0;
    i += k;
  }
  sk_json_escape(b, s + n - run, run);
  sk_buf_puts(b, "\"");
}

static void indent(sk_buf_t *b, int n) {
  for (int i = 0; i < n; i++) sk_buf_puts(b, " ");
}

static void emit_scalar(const json_t *v, sk_buf_t *b) {
  switch (json_typeof(v)) {
  case JSON_STRING: emit_str(json_string_value(v), json_string_length(v), b); break;
  case JSON_INTEGER: sk_buf_printf(b, "%lld", (long long)json_integer_value(v)); break;
  case JSON_REAL: {
    char *t = json_dumps(v, JSON_ENCODE_ANY);
    sk_buf_puts(b, t ? t : "0");
    free(t);
    break;
  }
  case JSON_TRUE: sk_buf_puts(b, "true"); break;
  case JSON_FALSE: sk_buf_puts(b, "false"); break;
  case JSON_NULL: sk_buf_puts(b, "null"); break;
  case JSON_OBJECT: sk_buf_puts(b, "{}"); break;
  case JSON_ARRAY: sk_buf_puts(b, "[]"); break;
  }
}

static int is_block(const json_t *v) {
  return (json_is_object(v) && json_object_size(v)) || (json_is_array(v) && json_array_size(v));
}

static void emit_node(const json_t *v, sk_buf_t *b, int ind);

static void emit_map(const json_t *v, sk_buf_t *b, int ind, int first_inline) {
  const char *k;
  json_t *x;
  int first = 1;
  json_object_foreach((json_t *)v, k, x) {
    if (!(first && first_inline)) indent(b, ind);
    first = 0;
    sk_buf_t kb;
    sk_buf_init(&kb);
    emit_str(k, strlen(k), &kb);
    if (kb.len > 1000) { /* YAML's implicit keys end at 1024 characters: use "? key" */
      sk_buf_puts(b, "? ");
      sk_buf_append(b, kb.data, kb.len);
      sk_buf_puts(b, "\n");
      indent(b, ind);
    } else {
      sk_buf_append(b, kb.data, kb.len);
    }
    sk_buf_done(&kb);
    sk_buf_puts(b, ":");
    if (is_block(x)) {
      sk_buf_puts(b, "\n");
      emit_node(x, b, json_is_array(x) ? ind : ind + 2);
    } else {
      sk_buf_puts(b, " ");
      emit_scalar(x, b);
      sk_buf_puts(b, "\n");
    }
  }
}

static void emit_node(const json_t *v, sk_buf_t *b, int ind) {
  if (json_is_object(v) && json_object_size(v)) {
    emit_map(v, b, ind, 0);
  } else if (json_is_array(v) && json_array_size(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) {
      indent(b, ind);
      sk_buf_puts(b, "- ");
      if (json_is_object(x) && json_object_size(x)) {
        emit_map(x, b, ind + 2, 1);
      } else if (is_block(x)) {
        sk_buf_puts(b, "\n");
        emit_node(x, b, ind + 2);
      } else {
        emit_scalar(x, b);
        sk_buf_puts(b, "\n");
      }
    }
  } else {
    indent(b, ind);
    emit_scalar(v, b);
    sk_buf_puts(b, "\n");
  }
}

void ctl_yaml_emit(const json_t *v, sk_buf_t *b) { emit_node(v, b, 0); }
