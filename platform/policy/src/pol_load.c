/* Loading Kyverno ClusterPolicy/Policy and Skiff Policy documents. */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

#define POL_MAX_FILE_BYTES (16u * 1024 * 1024)
#define POL_MAX_DIR_FILES 4096

void pol_set_init(pol_set_t *s) { memset(s, 0, sizeof *s); }

static void policy_done(pol_policy_t *p) {
  for (size_t i = 0; i < p->nrules; i++) {
    free(p->rules[i].name);
    json_decref(p->rules[i].json6902);
    pol_imgrules_free(&p->rules[i]);
  }
  free(p->rules);
  free(p->name);
  free(p->namespace);
  free(p->source);
  json_decref(p->doc);
}

void pol_set_done(pol_set_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) policy_done(&s->v[i]);
  free(s->v);
  memset(s, 0, sizeof *s);
}

size_t pol_set_rule_count(const pol_set_t *s) {
  size_t n = 0;
  for (size_t i = 0; i < s->n; i++) n += s->v[i].nrules;
  return n;
}

__attribute__((format(printf, 4, 5))) static int lerr(char *err, size_t errlen, const char *where, const char *fmt,
                                                      ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(err, errlen, "%s: %s", where, msg);
  return SK_EINVAL;
}

static int parse_action(const json_t *v, pol_action_t *out) {
  const char *s = json_string_value(v);
  if (!s) return -1;
  if (!strcasecmp(s, "Enforce")) *out = POL_ENFORCE;
  else if (!strcasecmp(s, "Audit")) *out = POL_AUDIT;
  else return -1;
  return 0;
}

static int check_strlist(const json_t *v, const char *where, const char *key, char *err, size_t errlen) {
  if (!v) return 0;
  if (!json_is_array(v)) return lerr(err, errlen, where, "%s must be a list of strings", key);
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) if (!json_is_string(e)) return lerr(err, errlen, where, "%s[%zu] must be a string", key, i);
  return 0;
}

static int check_filter(const json_t *f, const char *where, char *err, size_t errlen) {
  if (!json_is_object(f)) return lerr(err, errlen, where, "must be a mapping");
  const char *k;
  json_t *v;
  char sub[300];
  json_object_foreach((json_t *)f, k, v) {
    snprintf(sub, sizeof sub, "%s.%s", where, k);
    if (!strcmp(k, "resources")) {
      if (!json_is_object(v)) return lerr(err, errlen, sub, "must be a mapping");
      const char *rk;
      json_t *rv;
      json_object_foreach(v, rk, rv) {
        char rs[400];
        snprintf(rs, sizeof rs, "%s.%s", sub, rk);
        int rc;
        if (!strcmp(rk, "kinds") || !strcmp(rk, "names") || !strcmp(rk, "namespaces") ||
            !strcmp(rk, "operations")) {
          if ((rc = check_strlist(rv, sub, rk, err, errlen)) < 0) return rc;
        } else if (!strcmp(rk, "name")) {
          if (!json_is_string(rv)) return lerr(err, errlen, rs, "must be a string");
        } else if (!strcmp(rk, "selector")) {
          if (!json_is_object(rv)) return lerr(err, errlen, rs, "must be a mapping");
          json_t *ml = json_object_get(rv, "matchLabels"), *me = json_object_get(rv, "matchExpressions");
          if (ml && !json_is_object(ml)) return lerr(err, errlen, rs, "matchLabels must be a mapping");
          if (me && !json_is_array(me)) return lerr(err, errlen, rs, "matchExpressions must be a list");
        } else if (!strcmp(rk, "annotations")) {
          if (!json_is_object(rv)) return lerr(err, errlen, rs, "must be a mapping");
        } else if (!strcmp(rk, "namespaceSelector")) {
          return lerr(err, errlen, rs, "namespaceSelector is not supported (namespace labels are not available)");
        } else {
          return lerr(err, errlen, rs, "unknown field");
        }
      }
    } else if (!strcmp(k, "subjects")) {
      if (!json_is_array(v)) return lerr(err, errlen, sub, "must be a list");
    } else if (!strcmp(k, "roles") || !strcmp(k, "clusterRoles")) {
      return lerr(err, errlen, sub, "%s is not supported (match on subjects instead)", k);
    } else {
      return lerr(err, errlen, sub, "unknown field");
    }
  }
  return 0;
}

static int check_match(const json_t *m, const char *where, char *err, size_t errlen) {
  if (!m) return 0;
  if (!json_is_object(m)) return lerr(err, errlen, where, "must be a mapping");
  json_t *any = json_object_get(m, "any"), *all = json_object_get(m, "all");
  if (any || all) {
    const char *names[2] = {"any", "all"};
    json_t *lists[2] = {any, all};
    for (int j = 0; j < 2; j++) {
      if (!lists[j]) continue;
      char sub[300];
      snprintf(sub, sizeof sub, "%s.%s", where, names[j]);
      if (!json_is_array(lists[j])) return lerr(err, errlen, sub, "must be a list");
      size_t i;
      json_t *f;
      json_array_foreach(lists[j], i, f) {
        char fs[400];
        snprintf(fs, sizeof fs, "%s[%zu]", sub, i);
        int rc = check_filter(f, fs, err, errlen);
        if (rc < 0) return rc;
      }
    }
    if (json_object_size(m) > (size_t)(!!any + !!all))
      return lerr(err, errlen, where, "use either any/all or resources/subjects, not both");
    return 0;
  }
  return check_filter(m, where, err, errlen);
}

static int load_rule(pol_policy_t *p, const json_t *r, size_t idx, char *err, size_t errlen) {
  char where[256];
  snprintf(where, sizeof where, "spec.rules[%zu]", idx);
  if (!json_is_object(r)) return lerr(err, errlen, where, "must be a mapping");
  pol_rule_t *rule = &p->rules[p->nrules];
  memset(rule, 0, sizeof *rule);
  const char *name = json_string_value(json_object_get(r, "name"));
  if (!name || !*name) return lerr(err, errlen, where, "name is required");
  char sub[320];
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)r, k, v) {
    snprintf(sub, sizeof sub, "%s.%s", where, k);
    if (!strcmp(k, "name") || !strcmp(k, "match") || !strcmp(k, "exclude") || !strcmp(k, "preconditions") ||
        !strcmp(k, "validate") || !strcmp(k, "mutate") || !strcmp(k, "verifyImages") ||
        !strcmp(k, "skipBackgroundRequests"))
      continue;
    if (!strcmp(k, "generate") || !strcmp(k, "context") ||
        !strcmp(k, "celPreconditions") || !strcmp(k, "imageExtractors"))
      return lerr(err, errlen, sub, "%s is not supported by skiff-policy", k);
    return lerr(err, errlen, sub, "unknown field");
  }
  rule->match = json_object_get(r, "match");
  rule->exclude = json_object_get(r, "exclude");
  rule->preconditions = json_object_get(r, "preconditions");
  rule->validate = json_object_get(r, "validate");
  rule->mutate = json_object_get(r, "mutate");
  int rc;
  snprintf(sub, sizeof sub, "%s.match", where);
  if (!rule->match) return lerr(err, errlen, where, "match is required");
  if ((rc = check_match(rule->match, sub, err, errlen)) < 0) return rc;
  snprintf(sub, sizeof sub, "%s.exclude", where);
  if ((rc = check_match(rule->exclude, sub, err, errlen)) < 0) return rc;
  if (rule->preconditions && !json_is_object(rule->preconditions) && !json_is_array(rule->preconditions))
    return lerr(err, errlen, where, "preconditions must be a mapping with any/all or a list");
  json_t *verify = json_object_get(r, "verifyImages");
  if (!!rule->validate + !!rule->mutate + !!verify != 1)
    return lerr(err, errlen, where, "exactly one of validate, mutate or verifyImages is required");
  rule->action = p->action;
  if (verify) {
    snprintf(sub, sizeof sub, "%s.verifyImages", where);
    rule->type = POL_RULE_VERIFY;
    if ((rc = pol_imgrules_load(rule, verify, sub, err, errlen)) < 0) {
      pol_imgrules_free(rule);
      return rc;
    }
  } else if (rule->validate) {
    snprintf(sub, sizeof sub, "%s.validate", where);
    if (!json_is_object(rule->validate)) return lerr(err, errlen, sub, "must be a mapping");
    rule->type = POL_RULE_VALIDATE;
    int kinds = 0;
    json_object_foreach(rule->validate, k, v) {
      if (!strcmp(k, "pattern")) kinds++;
      else if (!strcmp(k, "anyPattern")) {
        if (!json_is_array(v) || !json_array_size(v)) return lerr(err, errlen, sub, "anyPattern must be a non-empty list");
        kinds++;
      } else if (!strcmp(k, "deny")) {
        if (!json_is_object(v) && !json_is_null(v)) return lerr(err, errlen, sub, "deny must be a mapping");
        json_t *c = json_is_object(v) ? json_object_get(v, "conditions") : NULL;
        if (c && !json_is_object(c) && !json_is_array(c))
          return lerr(err, errlen, sub, "deny.conditions must be a mapping with any/all or a list");
        kinds++;
      } else if (!strcmp(k, "message")) {
        if (!json_is_string(v)) return lerr(err, errlen, sub, "message must be a string");
      } else if (!strcmp(k, "failureAction")) {
        if (parse_action(v, &rule->action) < 0) return lerr(err, errlen, sub, "failureAction must be Enforce or Audit");
      } else if (!strcmp(k, "allowExistingViolations")) {
      } else {
        return lerr(err, errlen, sub, "%s is not supported by skiff-policy", k);
      }
    }
    if (kinds != 1) return lerr(err, errlen, sub, "exactly one of pattern, anyPattern or deny is required");
  } else {
    snprintf(sub, sizeof sub, "%s.mutate", where);
    if (!json_is_object(rule->mutate)) return lerr(err, errlen, sub, "must be a mapping");
    rule->type = POL_RULE_MUTATE;
    rule->action = POL_AUDIT; /* a failed mutation warns, it does not deny */
    int kinds = 0;
    json_object_foreach(rule->mutate, k, v) {
      if (!strcmp(k, "patchStrategicMerge")) {
        if (!json_is_object(v)) return lerr(err, errlen, sub, "patchStrategicMerge must be a mapping");
        kinds++;
      } else if (!strcmp(k, "patchesJson6902")) {
        json_t *ops = NULL;
        if (json_is_string(v)) {
          char yerr[200];
          if (sk_yaml_load(json_string_value(v), json_string_length(v), NULL, &ops, yerr, sizeof yerr) < 0)
            return lerr(err, errlen, sub, "patchesJson6902: %s", yerr);
        } else {
          ops = json_incref(v);
        }
        if (!json_is_array(ops)) {
          json_decref(ops);
          return lerr(err, errlen, sub, "patchesJson6902 must be a list of operations");
        }
        size_t i;
        json_t *op;
        json_array_foreach(ops, i, op) {
          const char *o = json_string_value(json_object_get(op, "op"));
          if (!o || (strcmp(o, "add") && strcmp(o, "remove") && strcmp(o, "replace") && strcmp(o, "move") &&
                     strcmp(o, "copy") && strcmp(o, "test"))) {
            json_decref(ops);
            return lerr(err, errlen, sub, "patchesJson6902[%zu]: op must be add, remove, replace, move, copy or test", i);
          }
          if (!json_is_string(json_object_get(op, "path"))) {
            json_decref(ops);
            return lerr(err, errlen, sub, "patchesJson6902[%zu]: path is required", i);
          }
        }
        rule->json6902 = ops;
        kinds++;
      } else {
        return lerr(err, errlen, sub, "%s is not supported by skiff-policy", k);
      }
    }
    if (kinds != 1) return lerr(err, errlen, sub, "exactly one of patchStrategicMerge or patchesJson6902 is required");
  }
  rule->name = sk_xstrdup(name);
  p->nrules++;
  return 0;
}

static int load_policy(pol_policy_t *p, json_t *doc, char *err, size_t errlen) {
  memset(p, 0, sizeof *p);
  p->doc = json_incref(doc);
  if (!json_is_object(doc)) return lerr(err, errlen, "document", "must be a mapping");
  const char *api = json_string_value(json_object_get(doc, "apiVersion"));
  const char *kind = json_string_value(json_object_get(doc, "kind"));
  if (!api) return lerr(err, errlen, "apiVersion", "is required");
  if (!kind) return lerr(err, errlen, "kind", "is required");
  int kyverno = !strcmp(api, "kyverno.io/v1") || !strcmp(api, "kyverno.io/v2beta1");
  if (!kyverno && strcmp(api, "skiff.dev/v1"))
    return lerr(err, errlen, "apiVersion", "%.100s is not a policy (want kyverno.io/v1 or skiff.dev/v1)", api);
  if (strcmp(kind, "ClusterPolicy") && strcmp(kind, "Policy"))
    return lerr(err, errlen, "kind", "%.100s is not a policy kind (want ClusterPolicy or Policy)", kind);
  const char *name = sk_json_get_str(doc, "metadata.name", NULL);
  if (!name || !*name) return lerr(err, errlen, "metadata.name", "is required");
  const char *ns = sk_json_get_str(doc, "metadata.namespace", NULL);
  if (!strcmp(kind, "Policy") && (kyverno || ns)) p->namespace = sk_xstrdup(ns && *ns ? ns : "default");
  json_t *spec = json_object_get(doc, "spec");
  if (!json_is_object(spec)) return lerr(err, errlen, "spec", "is required and must be a mapping");
  json_t *act = json_object_get(spec, "validationFailureAction");
  if (!act) act = json_object_get(spec, "failureAction");
  p->action = POL_AUDIT;
  if (act && parse_action(act, &p->action) < 0)
    return lerr(err, errlen, "spec.validationFailureAction", "must be Enforce or Audit");
  p->background = sk_json_get_bool(spec, "background", 1);
  json_t *fp = json_object_get(spec, "failurePolicy");
  if (fp) {
    const char *f = json_string_value(fp);
    if (!f || (strcmp(f, "Fail") && strcmp(f, "Ignore")))
      return lerr(err, errlen, "spec.failurePolicy", "must be Fail or Ignore");
    p->ignore_errors = !strcmp(f, "Ignore");
  }
  json_t *rules = json_object_get(spec, "rules");
  if (!json_is_array(rules) || !json_array_size(rules)) return lerr(err, errlen, "spec.rules", "must be a non-empty list");
  if (json_array_size(rules) > POL_MAX_RULES) return lerr(err, errlen, "spec.rules", "more than %d rules", POL_MAX_RULES);
  p->rules = sk_xcalloc(json_array_size(rules), sizeof *p->rules);
  size_t i;
  json_t *r;
  json_array_foreach(rules, i, r) {
    int rc = load_rule(p, r, i, err, errlen);
    if (rc < 0) return rc;
    for (size_t j = 0; j + 1 < p->nrules; j++)
      if (!strcmp(p->rules[j].name, p->rules[p->nrules - 1].name))
        return lerr(err, errlen, "spec.rules", "duplicate rule name %.100s", p->rules[j].name);
  }
  p->name = sk_xstrdup(name);
  return 0;
}

static void set_push(pol_set_t *s, pol_policy_t *p) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 8;
    s->v = sk_xrealloc(s->v, s->cap * sizeof *s->v);
  }
  s->v[s->n++] = *p;
}

int pol_set_add_doc(pol_set_t *s, json_t *doc, const char *source, char *err, size_t errlen) {
  if (s->n >= POL_MAX_POLICIES) {
    snprintf(err, errlen, "%s: more than %d policies", source ? source : "policy", POL_MAX_POLICIES);
    return SK_ELIMIT;
  }
  pol_policy_t p;
  char e[768];
  int rc = load_policy(&p, doc, e, sizeof e);
  if (rc < 0) {
    snprintf(err, errlen, "%s: %s", source ? source : "policy", e);
    policy_done(&p);
    return rc;
  }
  for (size_t i = 0; i < s->n; i++) {
    if (!strcmp(s->v[i].name, p.name) && !s->v[i].namespace == !p.namespace &&
        (!p.namespace || !strcmp(s->v[i].namespace, p.namespace))) {
      snprintf(err, errlen, "%s: policy %s is already loaded (from %s)", source ? source : "policy", p.name,
               s->v[i].source ? s->v[i].source : "?");
      policy_done(&p);
      return SK_EEXIST;
    }
  }
  p.source = sk_xstrdup(source ? source : "policy");
  for (size_t i = 0; i < p.nrules; i++) s->nverify += p.rules[i].type == POL_RULE_VERIFY;
  set_push(s, &p);
  return 0;
}

int pol_set_load_text(pol_set_t *s, const char *name, const char *text, size_t len, char *err, size_t errlen) {
  json_t *docs = NULL;
  char yerr[256];
  int rc = sk_yaml_load_all(text, len, NULL, &docs, yerr, sizeof yerr);
  if (rc < 0) {
    snprintf(err, errlen, "%s:%s", name, yerr);
    return rc;
  }
  size_t before = s->n, i;
  json_t *d;
  json_array_foreach(docs, i, d) {
    if (json_is_null(d)) continue;
    char src[512];
    snprintf(src, sizeof src, "%s: document %zu", name, i + 1);
    if ((rc = pol_set_add_doc(s, d, src, err, errlen)) < 0) {
      while (s->n > before) {
        pol_policy_t *q = &s->v[--s->n];
        for (size_t j = 0; j < q->nrules; j++) s->nverify -= q->rules[j].type == POL_RULE_VERIFY;
        policy_done(q);
      }
      break;
    }
  }
  json_decref(docs);
  return rc < 0 ? rc : 0;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return sk_err_from_errno(e);
  }
  sk_buf_t b;
  sk_buf_init(&b);
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b.len + n > POL_MAX_FILE_BYTES) {
      fclose(f);
      sk_buf_done(&b);
      snprintf(err, errlen, "%s: larger than %u bytes", path, POL_MAX_FILE_BYTES);
      return SK_ELIMIT;
    }
    sk_buf_append(&b, chunk, n);
  }
  fclose(f);
  sk_buf_cstr(&b);
  *out = b.data;
  *len = b.len;
  return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_ext(const char *n) {
  size_t l = strlen(n);
  return (l > 5 && !strcmp(n + l - 5, ".yaml")) || (l > 4 && !strcmp(n + l - 4, ".yml")) ||
         (l > 5 && !strcmp(n + l - 5, ".json"));
}

int pol_set_load_path(pol_set_t *s, const char *path, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) < 0) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return sk_err_from_errno(e);
  }
  if (!S_ISDIR(st.st_mode)) {
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(path, &text, &len, err, errlen);
    if (rc < 0) return rc;
    rc = pol_set_load_text(s, path, text, len, err, errlen);
    free(text);
    return rc;
  }
  DIR *d = opendir(path);
  if (!d) {
    int e = errno;
    snprintf(err, errlen, "%s: %s", path, strerror(e));
    return sk_err_from_errno(e);
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  int rc = 0;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || !has_ext(de->d_name)) continue;
    if (n >= POL_MAX_DIR_FILES) {
      snprintf(err, errlen, "%s: more than %d policy files", path, POL_MAX_DIR_FILES);
      rc = SK_ELIMIT;
      break;
    }
    if (n == cap) names = sk_xrealloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
    names[n++] = sk_xstrdup(de->d_name);
  }
  closedir(d);
  if (rc == 0 && n > 1) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n && rc == 0; i++) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", path, names[i]);
    rc = pol_set_load_path(s, full, err, errlen);
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc;
}
