/* Rule evaluation: match/exclude, preconditions, validate and mutate. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

/* What match/exclude look at, taken once per request. */
typedef struct res_info {
  const json_t *req;
  const json_t *obj; /* object, or oldObject on DELETE */
  const char *group, *version, *kind;
  const char *ns, *name, *op;
  const json_t *labels, *annotations;
  const char *username;
  const json_t *groups;
} res_info_t;

void pol_report_init(pol_report_t *r) { memset(r, 0, sizeof *r); }

void pol_report_done(pol_report_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++) free(r->v[i].message);
  free(r->v);
  json_decref(r->patched);
  json_decref(r->patch);
  memset(r, 0, sizeof *r);
}

int pol_report_denied(const pol_report_t *r) {
  for (size_t i = 0; i < r->n; i++)
    if (r->v[i].action == POL_ENFORCE && (r->v[i].status == POL_FAIL || r->v[i].status == POL_ERROR)) return 1;
  return 0;
}

void pol_add_result(pol_report_t *r, const pol_policy_t *p, const pol_rule_t *rule, pol_status_t st,
                    pol_action_t action, const char *fmt, ...) {
  if (r->n >= POL_MAX_RESULTS) {
    r->dropped++;
    return;
  }
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 16;
    r->v = sk_xrealloc(r->v, r->cap * sizeof *r->v);
  }
  pol_result_t *x = &r->v[r->n++];
  x->policy = p->name;
  x->rule = rule->name;
  x->type = rule->type;
  x->status = st;
  x->action = action;
  x->message = NULL;
  if (fmt) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    x->message = sk_xstrdup(buf);
  }
}

static void res_info(const json_t *req, res_info_t *ri) {
  memset(ri, 0, sizeof *ri);
  ri->req = req;
  ri->op = sk_json_get_str(req, "operation", "CREATE");
  json_t *obj = json_object_get(req, "object");
  if (!json_is_object(obj)) obj = json_object_get(req, "oldObject");
  ri->obj = json_is_object(obj) ? obj : NULL;
  ri->kind = sk_json_get_str(req, "kind.kind", NULL);
  ri->group = sk_json_get_str(req, "kind.group", "");
  ri->version = sk_json_get_str(req, "kind.version", "");
  if (!ri->kind && ri->obj) {
    ri->kind = sk_json_get_str(ri->obj, "kind", "");
    const char *api = sk_json_get_str(ri->obj, "apiVersion", "");
    const char *slash = strrchr(api, '/');
    /* group/version split kept in static storage would not be thread-safe:
     * without request.kind only the version part is matched */
    ri->version = slash ? slash + 1 : api;
    ri->group = NULL;
  }
  if (!ri->kind) ri->kind = "";
  ri->ns = sk_json_get_str(req, "namespace", NULL);
  if (!ri->ns || !*ri->ns) ri->ns = ri->obj ? sk_json_get_str(ri->obj, "metadata.namespace", NULL) : NULL;
  if (ri->ns && !*ri->ns) ri->ns = NULL;
  ri->name = sk_json_get_str(req, "name", NULL);
  if (!ri->name || !*ri->name) ri->name = ri->obj ? sk_json_get_str(ri->obj, "metadata.name", "") : "";
  ri->labels = ri->obj ? sk_json_get(ri->obj, "metadata.labels") : NULL;
  ri->annotations = ri->obj ? sk_json_get(ri->obj, "metadata.annotations") : NULL;
  ri->username = sk_json_get_str(req, "userInfo.username", "");
  ri->groups = sk_json_get(req, "userInfo.groups");
}

/* "Pod", "v1/Pod", "apps/v1/Deployment", "*", "batch/v1/Job" with wildcards. */
static int kind_match(const char *pat, const res_info_t *ri) {
  const char *s1 = strchr(pat, '/');
  if (!s1) return pol_wildcard(pat, ri->kind);
  const char *s2 = strchr(s1 + 1, '/');
  char a[128], b[128];
  if (!s2) {
    size_t al = (size_t)(s1 - pat);
    if (al >= sizeof a) return 0;
    memcpy(a, pat, al);
    a[al] = 0;
    if (!pol_wildcard(s1 + 1, ri->kind)) return 0;
    return pol_wildcard(a, ri->version) || (ri->group && pol_wildcard(a, ri->group));
  }
  size_t al = (size_t)(s1 - pat), bl = (size_t)(s2 - s1 - 1);
  if (al >= sizeof a || bl >= sizeof b) return 0;
  memcpy(a, pat, al);
  a[al] = 0;
  memcpy(b, s1 + 1, bl);
  b[bl] = 0;
  if (!pol_wildcard(s2 + 1, ri->kind) || !pol_wildcard(b, ri->version)) return 0;
  if (!ri->group) return 1;
  return pol_wildcard(a, ri->group) || (!*ri->group && !strcmp(a, "core"));
}

static int any_wild(const json_t *list, const char *s) {
  size_t i;
  json_t *e;
  json_array_foreach(list, i, e) if (json_is_string(e) && pol_wildcard(json_string_value(e), s)) return 1;
  return 0;
}

static int map_get_wild(const json_t *map, const char *kp, const char *vp) {
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)map, k, v) {
    if (pol_wildcard(kp, k) && json_is_string(v) && (!vp || pol_wildcard(vp, json_string_value(v)))) return 1;
  }
  return 0;
}

static int selector_match(const json_t *sel, const json_t *labels) {
  json_t *ml = json_object_get(sel, "matchLabels");
  const char *k;
  json_t *v;
  json_object_foreach(ml, k, v) {
    if (!json_is_string(v) || !map_get_wild(labels, k, json_string_value(v))) return 0;
  }
  json_t *me = json_object_get(sel, "matchExpressions");
  size_t i;
  json_t *e;
  json_array_foreach(me, i, e) {
    const char *key = json_string_value(json_object_get(e, "key"));
    const char *op = json_string_value(json_object_get(e, "operator"));
    json_t *vals = json_object_get(e, "values");
    if (!key || !op) return 0;
    json_t *lv = labels ? json_object_get(labels, key) : NULL;
    const char *ls = json_string_value(lv);
    if (!strcmp(op, "Exists")) {
      if (!lv) return 0;
    } else if (!strcmp(op, "DoesNotExist")) {
      if (lv) return 0;
    } else if (!strcmp(op, "In")) {
      if (!ls || !any_wild(vals, ls)) return 0;
    } else if (!strcmp(op, "NotIn")) {
      if (ls && any_wild(vals, ls)) return 0;
    } else {
      return 0;
    }
  }
  return 1;
}

static int subjects_match(const json_t *subs, const res_info_t *ri) {
  size_t i;
  json_t *s;
  json_array_foreach(subs, i, s) {
    const char *kind = json_string_value(json_object_get(s, "kind"));
    const char *name = json_string_value(json_object_get(s, "name"));
    if (!kind || !name) continue;
    if (!strcmp(kind, "User") && pol_wildcard(name, ri->username)) return 1;
    if (!strcmp(kind, "Group") && ri->groups) {
      size_t j;
      json_t *g;
      json_array_foreach(ri->groups, j, g) if (json_is_string(g) && pol_wildcard(name, json_string_value(g))) return 1;
    }
    if (!strcmp(kind, "ServiceAccount")) {
      char want[512];
      const char *ns = json_string_value(json_object_get(s, "namespace"));
      snprintf(want, sizeof want, "system:serviceaccount:%s:%s", ns ? ns : "*", name);
      if (pol_wildcard(want, ri->username)) return 1;
    }
  }
  return 0;
}

static int filter_match(const json_t *f, const res_info_t *ri) {
  json_t *res = json_object_get(f, "resources");
  if (res) {
    json_t *kinds = json_object_get(res, "kinds");
    if (kinds) {
      size_t i;
      json_t *k;
      int any = 0;
      json_array_foreach(kinds, i, k) if (json_is_string(k) && kind_match(json_string_value(k), ri)) {
        any = 1;
        break;
      }
      if (!any) return 0;
    }
    json_t *names = json_object_get(res, "names");
    if (names && !any_wild(names, ri->name)) return 0;
    json_t *name = json_object_get(res, "name");
    if (json_is_string(name) && !pol_wildcard(json_string_value(name), ri->name)) return 0;
    json_t *nss = json_object_get(res, "namespaces");
    if (nss && (!ri->ns || !any_wild(nss, ri->ns))) return 0;
    json_t *ops = json_object_get(res, "operations");
    if (ops && !any_wild(ops, ri->op)) return 0;
    json_t *sel = json_object_get(res, "selector");
    if (sel && !selector_match(sel, ri->labels)) return 0;
    json_t *ann = json_object_get(res, "annotations");
    const char *k;
    json_t *v;
    json_object_foreach(ann, k, v) {
      if (!json_is_string(v) || !ri->annotations || !map_get_wild(ri->annotations, k, json_string_value(v))) return 0;
    }
  }
  json_t *subs = json_object_get(f, "subjects");
  if (subs && !subjects_match(subs, ri)) return 0;
  return 1;
}

/* match / exclude block; empty = matches everything. */
static int block_match(const json_t *m, const res_info_t *ri) {
  json_t *any = json_object_get(m, "any"), *all = json_object_get(m, "all");
  if (!any && !all) return filter_match(m, ri);
  size_t i;
  json_t *f;
  if (any) {
    int hit = 0;
    json_array_foreach(any, i, f) if (filter_match(f, ri)) {
      hit = 1;
      break;
    }
    if (!hit) return 0;
  }
  if (all) json_array_foreach(all, i, f) if (!filter_match(f, ri)) return 0;
  return 1;
}

static int rule_applies(const pol_policy_t *p, const pol_rule_t *rule, const res_info_t *ri) {
  if (p->namespace && (!ri->ns || strcmp(p->namespace, ri->ns))) return 0;
  if (rule->match && !block_match(rule->match, ri)) return 0;
  if (rule->exclude && block_match(rule->exclude, ri)) return 0;
  return 1;
}

/* The variable context: {"request": req}. */
static json_t *make_ctx(const json_t *req) {
  json_t *ctx = json_object();
  json_object_set(ctx, "request", (json_t *)req);
  return ctx;
}

/* Substituted validate.message (or a default); malloc'd. */
static char *rule_message(const pol_rule_t *rule, const json_t *ctx) {
  json_t *m = json_object_get(rule->validate, "message");
  if (!json_is_string(m)) return NULL;
  json_t *out = NULL;
  char err[256];
  if (pol_substitute(m, ctx, &out, err, sizeof err) < 0 || !json_is_string(out)) {
    json_decref(out);
    return sk_xstrdup(json_string_value(m));
  }
  char *s = sk_xstrdup(json_string_value(out));
  json_decref(out);
  return s;
}

/* Between the message and "rule X failed": ". ", or " " after a full stop. */
static const char *msg_sep(const char *msg) {
  if (!msg || !*msg) return "";
  return msg[strlen(msg) - 1] == '.' ? " " : ". ";
}

static pol_match_rc_t match_substituted(const json_t *pattern, const json_t *obj, const json_t *ctx, char *path,
                                        size_t pathlen, char *err, size_t errlen, int *error) {
  json_t *pat = NULL;
  *error = 0;
  if (pol_substitute(pattern, ctx, &pat, err, errlen) < 0) {
    *error = 1;
    return POL_M_FAIL;
  }
  pol_match_rc_t r = pol_pattern_match(pat, obj, path, pathlen);
  json_decref(pat);
  return r;
}

static void validate_rule(const pol_policy_t *p, const pol_rule_t *rule, const res_info_t *ri, const json_t *ctx,
                          pol_report_t *out) {
  const json_t *v = rule->validate;
  char err[512];
  char path[512];
  json_t *pattern = json_object_get(v, "pattern"), *anyp = json_object_get(v, "anyPattern");
  if (pattern || anyp) {
    if (!strcmp(ri->op, "DELETE") || !ri->obj) {
      pol_add_result(out, p, rule, POL_SKIP, rule->action, "pattern rules do not apply to DELETE");
      return;
    }
    int error;
    if (pattern) {
      pol_match_rc_t r = match_substituted(pattern, ri->obj, ctx, path, sizeof path, err, sizeof err, &error);
      if (error) {
        pol_add_result(out, p, rule, POL_ERROR, rule->action, "variable substitution failed: %s", err);
        return;
      }
      if (r == POL_M_OK) {
        pol_add_result(out, p, rule, POL_PASS, rule->action, "validation rule '%s' passed.", rule->name);
      } else if (r == POL_M_SKIP || r == POL_M_GSKIP) {
        pol_add_result(out, p, rule, POL_SKIP, rule->action, "conditional anchor mismatch");
      } else {
        char *msg = rule_message(rule, ctx);
        pol_add_result(out, p, rule, POL_FAIL, rule->action, "validation error: %s%srule %s failed at path %s",
                   msg ? msg : "", msg_sep(msg), rule->name, path);
        free(msg);
      }
      return;
    }
    size_t i, skipped = 0, n = json_array_size(anyp);
    json_t *pat;
    sk_buf_t paths;
    sk_buf_init(&paths);
    json_array_foreach(anyp, i, pat) {
      pol_match_rc_t r = match_substituted(pat, ri->obj, ctx, path, sizeof path, err, sizeof err, &error);
      if (error) {
        sk_buf_done(&paths);
        pol_add_result(out, p, rule, POL_ERROR, rule->action, "variable substitution failed: %s", err);
        return;
      }
      if (r == POL_M_OK) {
        sk_buf_done(&paths);
        pol_add_result(out, p, rule, POL_PASS, rule->action, "validation rule '%s' anyPattern[%zu] passed.", rule->name, i);
        return;
      }
      if (r != POL_M_FAIL) skipped++;
      else sk_buf_printf(&paths, "%srule %s[%zu] failed at path %s", paths.len ? "; " : "", rule->name, i, path);
    }
    if (skipped == n) {
      pol_add_result(out, p, rule, POL_SKIP, rule->action, "conditional anchor mismatch");
    } else {
      char *msg = rule_message(rule, ctx);
      pol_add_result(out, p, rule, POL_FAIL, rule->action, "validation error: %s%s%s", msg ? msg : "", msg_sep(msg),
                 sk_buf_cstr(&paths));
      free(msg);
    }
    sk_buf_done(&paths);
    return;
  }
  json_t *deny = json_object_get(v, "deny");
  json_t *conds = json_is_object(deny) ? json_object_get(deny, "conditions") : NULL;
  int r = conds ? pol_conditions(conds, ctx, err, sizeof err) : 1;
  if (r < 0) {
    pol_add_result(out, p, rule, POL_ERROR, rule->action, "failed to evaluate deny conditions: %s", err);
  } else if (r) {
    char *msg = rule_message(rule, ctx);
    if (msg && *msg) pol_add_result(out, p, rule, POL_FAIL, rule->action, "%s", msg);
    else pol_add_result(out, p, rule, POL_FAIL, rule->action, "validation error: rule %s failed", rule->name);
    free(msg);
  } else {
    pol_add_result(out, p, rule, POL_PASS, rule->action, "validation rule '%s' passed.", rule->name);
  }
}

/* 1 = go on, 0 = skipped (result added). */
static int preconditions(const pol_policy_t *p, const pol_rule_t *rule, const json_t *ctx, pol_report_t *out) {
  if (!rule->preconditions) return 1;
  char err[512];
  int r = pol_conditions(rule->preconditions, ctx, err, sizeof err);
  if (r < 0) {
    pol_add_result(out, p, rule, POL_ERROR, rule->action, "failed to evaluate preconditions: %s", err);
    return 0;
  }
  if (!r) {
    pol_add_result(out, p, rule, POL_SKIP, rule->action, "preconditions not met");
    return 0;
  }
  return 1;
}

int pol_validate(const pol_set_t *s, const json_t *req, pol_report_t *out) {
  if (!json_is_object(req)) return SK_EINVAL;
  res_info_t ri;
  res_info(req, &ri);
  json_t *ctx = NULL;
  for (size_t i = 0; i < s->n; i++) {
    const pol_policy_t *p = &s->v[i];
    for (size_t j = 0; j < p->nrules; j++) {
      const pol_rule_t *rule = &p->rules[j];
      if ((rule->type != POL_RULE_VALIDATE && rule->type != POL_RULE_VERIFY) || !rule_applies(p, rule, &ri)) continue;
      if (!ctx) ctx = make_ctx(req);
      if (!preconditions(p, rule, ctx, out)) continue;
      if (rule->type == POL_RULE_VERIFY) {
        if (strcmp(ri.op, "DELETE") && ri.obj) pol_imgrule_eval(s, p, rule, (json_t *)ri.obj, ri.kind, 0, out, NULL);
        continue;
      }
      validate_rule(p, rule, &ri, ctx, out);
    }
  }
  json_decref(ctx);
  return 0;
}

int pol_mutate(const pol_set_t *s, const json_t *req, pol_report_t *out) {
  if (!json_is_object(req)) return SK_EINVAL;
  res_info_t ri;
  res_info(req, &ri);
  json_t *orig = json_object_get(req, "object");
  json_t *work = orig ? json_deep_copy(orig) : json_null();
  json_t *wreq = NULL, *ctx = NULL;
  char err[512];
  for (size_t i = 0; i < s->n; i++) {
    const pol_policy_t *p = &s->v[i];
    for (size_t j = 0; j < p->nrules; j++) {
      const pol_rule_t *rule = &p->rules[j];
      if ((rule->type != POL_RULE_MUTATE && rule->type != POL_RULE_VERIFY) || !rule_applies(p, rule, &ri)) continue;
      /* as Kyverno's mutating webhook: CREATE and UPDATE only (a DELETE or
       * CONNECT is never changed, whatever the rule's operations say) */
      if ((strcmp(ri.op, "CREATE") && strcmp(ri.op, "UPDATE")) || !json_is_object(work)) continue;
      /* variables see the object as mutated so far */
      json_decref(ctx);
      json_decref(wreq);
      wreq = json_copy((json_t *)req);
      json_object_set(wreq, "object", work);
      ctx = make_ctx(wreq);
      if (!preconditions(p, rule, ctx, out)) continue;
      if (rule->type == POL_RULE_VERIFY) {
        /* verified images are rewritten to their digests (mutateDigest) */
        json_t *next = json_deep_copy(work);
        int changed = 0;
        pol_imgrule_eval(s, p, rule, next, ri.kind, 1, out, &changed);
        if (changed) {
          json_decref(work);
          work = next;
        } else {
          json_decref(next);
        }
        continue;
      }
      json_t *smp = json_object_get(rule->mutate, "patchStrategicMerge");
      json_t *patch = NULL;
      if (pol_substitute(smp ? smp : rule->json6902, ctx, &patch, err, sizeof err) < 0) {
        pol_add_result(out, p, rule, POL_ERROR, rule->action, "variable substitution failed: %s", err);
        continue;
      }
      /* No copy of the object per rule: pol_smp_apply checks everything
       * that can refuse the patch (global anchors, the top-level
       * conditions, types) before it changes anything, and
       * pol_jsonpatch_apply is all-or-nothing on its own copy. work is a
       * private deep copy of the request's object, so patching it in place
       * is safe (wreq only borrows it for the variables, already
       * substituted into patch). */
      int rc = smp ? pol_smp_apply(&work, patch, err, sizeof err) : pol_jsonpatch_apply(&work, patch, err, sizeof err);
      json_decref(patch);
      if (rc < 0) {
        pol_add_result(out, p, rule, POL_ERROR, rule->action, "failed to apply patch: %s", err);
        continue;
      }
      if (smp && rc == 0) {
        pol_add_result(out, p, rule, POL_SKIP, rule->action, "conditional anchor mismatch");
        continue;
      }
      pol_add_result(out, p, rule, POL_PASS, rule->action, "mutated using %s",
                 smp ? "patchStrategicMerge" : "patchesJson6902");
    }
  }
  json_decref(ctx);
  json_decref(wreq);
  json_decref(out->patched);
  json_decref(out->patch);
  out->patch = pol_jsonpatch_diff(orig ? orig : json_null(), work);
  out->patched = work;
  return 0;
}

int pol_evaluate(const pol_set_t *s, const json_t *req, pol_report_t *out) {
  int rc = pol_mutate(s, req, out);
  if (rc < 0) return rc;
  json_t *r2 = json_copy((json_t *)req);
  if (json_is_object(out->patched)) json_object_set(r2, "object", out->patched);
  rc = pol_validate(s, r2, out);
  json_decref(r2);
  return rc;
}

json_t *pol_request_for(const json_t *object, const json_t *old, const char *operation, const char *username) {
  json_t *req = json_object();
  const json_t *o = object && json_is_object(object) ? object : old;
  const char *api = sk_json_get_str(o, "apiVersion", "");
  const char *slash = strrchr(api, '/');
  json_t *kind = json_object();
  if (slash) {
    json_object_set_new(kind, "group", json_stringn(api, (size_t)(slash - api)));
    json_object_set_new(kind, "version", json_string(slash + 1));
  } else {
    json_object_set_new(kind, "group", json_string(""));
    json_object_set_new(kind, "version", json_string(api));
  }
  json_object_set_new(kind, "kind", json_string(sk_json_get_str(o, "kind", "")));
  json_object_set_new(req, "uid", json_string("00000000-0000-0000-0000-000000000000"));
  json_object_set_new(req, "kind", kind);
  const char *ns = sk_json_get_str(o, "metadata.namespace", NULL);
  if (ns) json_object_set_new(req, "namespace", json_string(ns));
  json_object_set_new(req, "name", json_string(sk_json_get_str(o, "metadata.name", "")));
  json_object_set_new(req, "operation", json_string(operation ? operation : "CREATE"));
  json_t *ui = json_object();
  json_object_set_new(ui, "username", json_string(username ? username : ""));
  json_object_set_new(req, "userInfo", ui);
  json_object_set_new(req, "object", object ? json_deep_copy(object) : json_null());
  json_object_set_new(req, "oldObject", old ? json_deep_copy(old) : json_null());
  json_object_set_new(req, "dryRun", json_false());
  return req;
}

char *pol_report_denial(const pol_report_t *r, const json_t *req) {
  if (!pol_report_denied(r)) return NULL;
  sk_buf_t b;
  sk_buf_init(&b);
  res_info_t ri;
  res_info(req, &ri);
  /* appended piece by piece: printf's formatting was most of a denial's extra cost */
  sk_buf_puts(&b, "resource ");
  sk_buf_puts(&b, ri.kind);
  sk_buf_puts(&b, "/");
  if (ri.ns) {
    sk_buf_puts(&b, ri.ns);
    sk_buf_puts(&b, "/");
  }
  sk_buf_puts(&b, ri.name);
  sk_buf_puts(&b, " was blocked due to the following policies\n");
  const char *last = NULL;
  for (size_t i = 0; i < r->n; i++) {
    const pol_result_t *x = &r->v[i];
    if (x->action != POL_ENFORCE || (x->status != POL_FAIL && x->status != POL_ERROR)) continue;
    if (!last || strcmp(last, x->policy)) {
      sk_buf_puts(&b, "\n");
      sk_buf_puts(&b, x->policy);
      sk_buf_puts(&b, ":\n");
    }
    last = x->policy;
    sk_buf_puts(&b, "  ");
    sk_buf_puts(&b, x->rule);
    sk_buf_puts(&b, ": ");
    sk_buf_puts(&b, x->message ? x->message : pol_status_name(x->status));
    sk_buf_puts(&b, "\n");
  }
  if (b.len > 16384) { /* cut without splitting a UTF-8 sequence */
    b.len = 16384;
    while (b.len > 0 && ((unsigned char)b.data[b.len] & 0xC0) == 0x80) b.len--;
  }
  return sk_buf_cstr(&b);
}
