/* One Application's reconcile against skiff-control:
 *
 *   1. every desired document gets the tracking label and annotation;
 *   2. the live objects of the app are listed (one request per kind, by
 *      label) and compared with the desired ones (gx_doc_in_sync);
 *   3. (apply) every changed document is sent with ?dryRun=All first, so
 *      validation and the policies see the whole set before anything is
 *      written: one refusal and nothing is applied;
 *   4. (apply) the changed documents are written wave by wave (documents of
 *      one wave in parallel), then what left Git is pruned when allowed;
 *   5. health from the live objects, and the Application's status (sync,
 *      health, resources, operationState, conditions, history) is written
 *      through the status subresource when it changed. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gitops.h"
#include "skiff/err.h"
#include "skiff/json.h"

typedef struct item {
  gx_res_t *r;
  const gx_kindinfo_t *ki;  /* as written in Git */
  const gx_kindinfo_t *ski; /* storage kind */
  json_t *live;             /* borrowed from the live map, in client form */
  int exists;
  int changed;
  char where[256];
  char health[16];
  char result[16]; /* Synced, SyncFailed, "" untouched */
  char message[512];
  gx_sync_opts_t opts; /* the app's options, overridden by the document's annotation */
  json_t *body;        /* what an apply sends (owned) */
} item_t;

/* A live object of the app that left Git. */
typedef struct gone {
  json_t *o; /* borrowed */
  const gx_kindinfo_t *ki;
  int wave;      /* its sync-wave, or INT_MAX with PruneLast */
  int opted_out; /* Prune=false */
  int pruned;
} gone_t;

static void now_iso(char *out, size_t len) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const gx_kindinfo_t *kind_for(const gx_sync_env_t *env, const char *api_version, const char *kind) {
  for (size_t i = 0; i < env->nkinds; i++)
    if (!strcmp(env->kinds[i].kind, kind) && !strcmp(env->kinds[i].api_version, api_version)) return &env->kinds[i];
  return NULL;
}

static const gx_kindinfo_t *storage_of(const gx_sync_env_t *env, const gx_kindinfo_t *k) {
  for (size_t i = 0; i < env->nkinds; i++)
    if (!strcmp(env->kinds[i].kind, k->stored_as) && !strcmp(env->kinds[i].stored_as, env->kinds[i].kind))
      return &env->kinds[i];
  return k;
}

static char *obj_path(const gx_kindinfo_t *k, const char *ns, const char *name, const char *query) {
  sk_buf_t b;
  sk_buf_init(&b);
  sk_buf_printf(&b, "/api/v1/%s", k->plural);
  if (k->namespaced && ns) sk_buf_printf(&b, "/%s", ns);
  if (name) sk_buf_printf(&b, "/%s", name);
  if (query) sk_buf_printf(&b, "?%s", query);
  return sk_buf_cstr(&b);
}

static int label_value_ok(const char *s) {
  size_t n = strlen(s);
  if (!n || n > 63) return 0;
  for (size_t i = 0; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.')) return 0;
  return 1;
}

static void mark(json_t *doc, const char *app_name, const char *tracking) {
  json_t *m = json_object_get(doc, "metadata");
  json_t *l = json_object_get(m, "labels");
  if (!json_is_object(l)) {
    l = json_object();
    json_object_set_new(m, "labels", l);
  }
  json_object_set_new(l, GX_LABEL_APP, json_string(app_name));
  json_t *a = json_object_get(m, "annotations");
  if (!json_is_object(a)) {
    a = json_object();
    json_object_set_new(m, "annotations", a);
  }
  json_object_set_new(a, GX_ANN_TRACKING, json_string(tracking));
  json_object_del(m, "resourceVersion");
  json_object_del(doc, "status");
  json_t *fs = gx_field_set(doc);
  char *fst = json_dumps(fs, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(fs);
  if (fst) json_object_set_new(a, GX_ANN_APPLIED_FIELDS, json_string(fst));
  free(fst);
}

/* The options a live object carries (for what left Git: Prune, PruneLast),
 * over the app's. */
static gx_sync_opts_t live_opts(const gx_sync_opts_t *app_opts, const json_t *live) {
  gx_sync_opts_t o = *app_opts;
  char e[512];
  gx_sync_opts_parse_list(&o, gx_annotation(live, GX_ANN_ARGO_OPTIONS), e, sizeof e);
  const char *p = gx_annotation(live, GX_ANN_PRUNE);
  if (p && !strcmp(p, "false")) o.prune = 0;
  return o;
}

static int live_wave(const json_t *live) {
  const char *w = gx_annotation(live, GX_ANN_WAVE);
  if (!w) w = gx_annotation(live, GX_ANN_ARGO_WAVE);
  if (!w) return 0;
  char *end;
  long v = strtol(w, &end, 10);
  return *end || v < -1000000 || v > 1000000 ? 0 : (int)v;
}

/* ignoreDifferences: the ignored fields become null on both sides (array
 * positions kept), so the comparison does not see them. */
typedef struct blank {
  json_t *a, *b;
} blank_t;

static void blank_cb(const char *ptr, void *ud) {
  blank_t *x = ud;
  if (gx_json_pointer_get(x->a, ptr)) gx_json_pointer_put(x->a, ptr, json_null());
  if (gx_json_pointer_get(x->b, ptr)) gx_json_pointer_put(x->b, ptr, json_null());
}

/* RespectIgnoreDifferences: an apply keeps the live value of ignored fields. */
typedef struct keep {
  json_t *body;
  const json_t *live;
} keep_t;

static void keep_cb(const char *ptr, void *ud) {
  keep_t *k = ud;
  json_t *lv = gx_json_pointer_get(k->live, ptr);
  if (lv) gx_json_pointer_put(k->body, ptr, json_deep_copy(lv));
  else if (gx_json_pointer_get(k->body, ptr)) gx_json_pointer_put(k->body, ptr, NULL);
}

static int in_sync(const item_t *it, const json_t *ignore, char *where, size_t wlen) {
  int any = 0;
  if (it->live && json_array_size(ignore)) {
    /* only copy when a rule names this object */
    blank_t x = {json_deep_copy(it->r->doc), json_deep_copy(it->live)};
    gx_ignore_foreach(ignore, it->r->api_version, it->r->kind, it->r->ns, it->r->name, blank_cb, &x);
    any = gx_doc_in_sync(x.a, x.b, where, wlen);
    json_decref(x.a);
    json_decref(x.b);
  } else {
    any = gx_doc_in_sync(it->r->doc, it->live, where, wlen);
  }
  if (!any && strstr(where, GX_ANN_APPLIED_FIELDS)) snprintf(where, wlen, "fields Git no longer sets");
  return any;
}

/* The document an apply sends: Git's merged into live (fields others set
 * live are kept, fields Git dropped since the last apply are removed), or
 * Git's as it is with Replace=true. */
static json_t *apply_body(const item_t *it, const json_t *ignore) {
  json_t *body;
  if (it->opts.replace == 1 || !it->live) {
    body = json_deep_copy(it->r->doc);
  } else {
    const char *lf = gx_annotation(it->live, GX_ANN_APPLIED_FIELDS);
    json_t *last = lf ? json_loads(lf, 0, NULL) : NULL;
    body = gx_merge_apply(last, it->r->doc, it->live);
    json_decref(last);
  }
  if (it->live && it->opts.respect_ignore == 1) {
    keep_t k = {body, it->live};
    gx_ignore_foreach(ignore, it->r->api_version, it->r->kind, it->r->ns, it->r->name, keep_cb, &k);
  }
  return body;
}

static json_t *status_resource(const item_t *it) {
  json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "apiVersion", it->r->api_version, "kind", it->r->kind,
                        "namespace", it->ski->namespaced ? it->r->ns : "", "name", it->r->name, "status",
                        it->changed ? "OutOfSync" : "Synced", "health", it->health);
  if (it->changed && it->where[0]) json_object_set_new(o, "diff", json_string(it->where));
  if (it->message[0]) json_object_set_new(o, "message", json_string(it->message));
  json_object_set_new(o, "source", json_string(it->r->src));
  return o;
}

/* Writes status unless it equals the current one (reconciledAt aside). */
static int put_status(gx_sync_env_t *env, const json_t *app, json_t *status) {
  json_t *old = json_deep_copy(json_object_get(app, "status"));
  json_t *cmp = json_deep_copy(status);
  if (old) json_object_del(old, "reconciledAt");
  json_object_del(cmp, "reconciledAt");
  int same = old && json_equal(old, cmp);
  json_decref(old);
  json_decref(cmp);
  if (same) return 0;
  const char *ns = sk_json_get_str(app, "metadata.namespace", "default");
  const char *name = sk_json_get_str(app, "metadata.name", "");
  json_t *body = json_pack("{s:s, s:s, s:{s:s, s:s}, s:O}", "apiVersion", "skiff.dev/v1", "kind", "Application",
                           "metadata", "name", name, "namespace", ns, "status", status);
  char *s = json_dumps(body, JSON_COMPACT);
  char path[600];
  snprintf(path, sizeof path, "/api/v1/applications/%s/%s/status", ns, name);
  gx_ctl_resp_t r;
  int rc = gx_ctl_call(env->ctl, "PUT", path, "application/json", s, strlen(s), &r);
  if (rc >= 0 && r.status != 200) rc = r.status == 404 ? SK_ENOTFOUND : SK_EHTTP;
  gx_ctl_resp_done(&r);
  free(s);
  json_decref(body);
  return rc;
}

static json_t *base_status(const json_t *app) {
  const json_t *old = json_object_get(app, "status");
  json_t *st = json_is_object(old) ? json_deep_copy(old) : json_object();
  return st;
}

static void add_condition(json_t *conds, const json_t *old_conds, const char *type, const char *reason,
                          const char *message) {
  char ts[32];
  now_iso(ts, sizeof ts);
  size_t i;
  json_t *old;
  json_array_foreach(old_conds, i, old) {
    if (!strcmp(sk_json_get_str(old, "type", ""), type) && !strcmp(sk_json_get_str(old, "message", ""), message))
      snprintf(ts, sizeof ts, "%s", sk_json_get_str(old, "lastTransitionTime", ts));
  }
  json_array_append_new(conds, json_pack("{s:s, s:s, s:s, s:s}", "type", type, "reason", reason ? reason : type,
                                         "message", message, "lastTransitionTime", ts));
}

/* st still holds the previous status: an unchanged condition keeps its
 * lastTransitionTime (so a standing error does not rewrite status). The
 * error (type non-NULL) comes first, then the warnings ({type, reason,
 * message} objects), then carry (old conditions kept as they are). */
static void set_conditions(json_t *st, const char *type, const char *reason, const char *message,
                           const json_t *warnings, const json_t *carry) {
  json_t *old = json_incref(json_object_get(st, "conditions"));
  json_t *conds = json_array();
  size_t i;
  json_t *c;
  json_array_foreach(carry, i, c) json_array_append(conds, c);
  if (type) add_condition(conds, old, type, reason, message);
  json_array_foreach(warnings, i, c) {
    add_condition(conds, old, sk_json_get_str(c, "type", ""), sk_json_get_str(c, "reason", ""),
                  sk_json_get_str(c, "message", ""));
  }
  json_decref(old);
  json_object_set_new(st, "conditions", conds);
}

static void set_condition(json_t *st, const char *type, const char *reason, const char *message) {
  set_conditions(st, type, reason, message, NULL, NULL);
}

/* The sync/rollback request annotations this status answers (skiff app
 * sync --wait watches for them). */
static void set_handled(json_t *st, const json_t *app) {
  const char *r = gx_annotation(app, GX_ANN_REFRESH), *b = gx_annotation(app, GX_ANN_ROLLBACK);
  json_object_set_new(st, "handledRequests", json_pack("{s:s, s:s}", "refresh", r ? r : "", "rollback", b ? b : ""));
}

int gx_sync_status_error(gx_sync_env_t *env, const json_t *app, const char *type, const char *reason,
                         const char *message,
                         const char *revision) {
  json_t *st = base_status(app);
  char ts[32];
  now_iso(ts, sizeof ts);
  json_t *sync = json_object_get(st, "sync");
  if (!json_is_object(sync)) {
    sync = json_object();
    json_object_set_new(st, "sync", sync);
  }
  json_object_set_new(sync, "status", json_string("Unknown"));
  if (revision && *revision) json_object_set_new(sync, "revision", json_string(revision));
  if (!json_object_get(st, "health")) json_object_set_new(st, "health", json_pack("{s:s}", "status", "Unknown"));
  set_condition(st, type, reason, message);
  json_object_set_new(st, "reconciledAt", json_string(ts));
  json_object_set_new(st, "observedGeneration", json_integer(sk_json_get_int(app, "metadata.generation", 0)));
  set_handled(st, app);
  int rc = put_status(env, app, st);
  json_decref(st);
  return rc;
}

static void add_history(json_t *st, const json_t *app, const char *revision, const char *author, const char *msg,
                        const char *result, int changed, int pruned, const char *started, const char *finished) {
  json_t *h = json_object_get(st, "history");
  if (!json_is_array(h)) {
    h = json_array();
    json_object_set_new(st, "history", h);
  }
  int64_t id = 0;
  size_t n = json_array_size(h);
  if (n) id = sk_json_get_int(json_array_get(h, n - 1), "id", 0);
  json_array_append_new(
      h, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:{s:s, s:s, s:s}}", "id", (json_int_t)(id + 1),
                   "revision", revision ? revision : "", "author", author ? author : "", "message", msg ? msg : "",
                   "result", result, "deployStartedAt", started, "resourcesChanged", changed, "resourcesPruned",
                   pruned, "deployedAt", finished, "source", "repoURL",
                   sk_json_get_str(app, "spec.source.repoURL", ""), "path", sk_json_get_str(app, "spec.source.path", ""),
                   "targetRevision", sk_json_get_str(app, "spec.source.targetRevision", "HEAD")));
  int64_t limit = sk_json_get_int(app, "spec.revisionHistoryLimit", 10);
  while ((int64_t)json_array_size(h) > limit) json_array_remove(h, 0);
}

static int item_cmp(const void *x, const void *y) {
  const item_t *a = *(const item_t *const *)x, *b = *(const item_t *const *)y;
  if (a->r->wave != b->r->wave) return a->r->wave < b->r->wave ? -1 : 1;
  if (a->r->kind_rank != b->r->kind_rank) return a->r->kind_rank < b->r->kind_rank ? -1 : 1;
  return a->r->index < b->r->index ? -1 : a->r->index > b->r->index;
}

/* Failure text for one resource from a control answer. */
static void fail_text(const item_t *it, const gx_ctl_resp_t *resp, char *out, size_t len) {
  char m[1024];
  gx_ctl_message(resp, m, sizeof m);
  int n = snprintf(out, len, "%s: %s %s/%s: %s%s", it->r->src, it->r->kind, it->r->ns, it->r->name,
                   resp->status == 403 ? "denied: " : "", m);
  if (n >= 0 && (size_t)n >= len && len > 3) memcpy(out + len - 4, "...", 4); /* message text: cut visibly */
}

/* POST /api/v1/batch with todo[a0, a1) as applies then prs[p0, p1) as
 * deletes (dry: only checked); *ans is the answer parsed (NULL if none).
 * resp must be released. */
static int batch_send(gx_sync_env_t *env, item_t **todo, size_t a0, size_t a1, gone_t **prs, size_t p0, size_t p1,
                      int dry, gx_ctl_resp_t *resp, json_t **ans) {
  memset(resp, 0, sizeof *resp);
  sk_buf_init(&resp->body);
  *ans = NULL;
  json_t *body = json_pack("{s:b, s:[]}", "dryRun", dry, "items");
  json_t *arr = json_object_get(body, "items");
  for (size_t i = a0; i < a1; i++)
    json_array_append_new(arr, json_pack("{s:s, s:O}", "op", "apply", "object", todo[i]->body));
  for (size_t i = p0; i < p1; i++)
    json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "op", "delete", "kind", prs[i]->ki->plural,
                                         "namespace", sk_json_get_str(prs[i]->o, "metadata.namespace", ""), "name",
                                         sk_json_get_str(prs[i]->o, "metadata.name", "")));
  char *text = json_dumps(body, JSON_COMPACT);
  json_decref(body);
  int crc = text ? gx_ctl_call(env->ctl, "POST", "/api/v1/batch", "application/json", text, strlen(text), resp)
                 : SK_ENOMEM;
  free(text);
  if (crc == 0 && resp->body.len) *ans = json_loadb(resp->body.data, resp->body.len, 0, NULL);
  return crc;
}

static int gone_cmp(const void *x, const void *y) {
  const gone_t *a = *(const gone_t *const *)x, *b = *(const gone_t *const *)y;
  return a->wave < b->wave ? -1 : a->wave > b->wave;
}

int gx_sync_app(gx_sync_env_t *env, const json_t *app, gx_resset_t *desired, const char *revision,
                const char *author, const char *commit_msg, gx_sync_mode_t mode, int prune, gx_sync_result_t *res) {
  memset(res, 0, sizeof *res);
  const char *app_ns = sk_json_get_str(app, "metadata.namespace", "default");
  const char *app_name = sk_json_get_str(app, "metadata.name", "");
  char tracking[400];
  snprintf(tracking, sizeof tracking, "%s/%s", app_ns, app_name);
  char started[32];
  now_iso(started, sizeof started);
  size_t n = desired->n;
  item_t *items = sk_xcalloc(n + 1, sizeof *items);
  json_t *live = json_object(); /* "Kind/ns/name" -> object (storage form) */
  gx_ctl_req_t *reqs = NULL;
  size_t nreq = 0;
  json_t *st = NULL;
  int rc = 0;
  gone_t *gones = NULL;
  size_t ngone = 0;
  /* sync options and ignoreDifferences */
  const json_t *ignore = sk_json_get(app, "spec.ignoreDifferences");
  gx_sync_opts_t app_opts;
  gx_sync_opts_init(&app_opts);
  json_t *warnings = json_array();
  sk_buf_t unknown;
  sk_buf_init(&unknown);
  int validate_off = 0;
  {
    size_t i;
    json_t *o;
    json_array_foreach(sk_json_get(app, "spec.syncPolicy.syncOptions"), i, o) {
      const char *t = json_string_value(o);
      char e[300];
      if (t && gx_sync_opt_parse(&app_opts, t, strlen(t), e, sizeof e) < 0)
        sk_buf_printf(&unknown, "%sspec.syncPolicy.syncOptions[%zu]: %s", unknown.len ? "; " : "", i, e);
    }
    validate_off = app_opts.validate == 0;
  }

  if (!label_value_ok(app_name)) {
    snprintf(res->message, sizeof res->message,
             "application name '%s' cannot be a label value (at most 63 of [A-Za-z0-9._-])", app_name);
    rc = SK_EINVAL;
    goto status;
  }
  /* 1. desired documents, marked */
  for (size_t i = 0; i < n; i++) {
    gx_res_t *r = &desired->v[i];
    item_t *it = &items[i];
    it->r = r;
    it->ki = kind_for(env, r->api_version, r->kind);
    if (!it->ki) {
      snprintf(res->message, sizeof res->message, "%s: unknown apiVersion/kind %s/%s", r->src, r->api_version,
               r->kind);
      rc = SK_EINVAL;
      goto status;
    }
    it->ski = storage_of(env, it->ki);
    it->opts = app_opts;
    char e[1024];
    if (gx_sync_opts_parse_list(&it->opts, gx_annotation(r->doc, GX_ANN_ARGO_OPTIONS), e, sizeof e) > 0 &&
        unknown.len < 4096)
      sk_buf_printf(&unknown, "%s%s: %s %s/%s: %s", unknown.len ? "; " : "", r->src, r->kind, r->ns, r->name, e);
    if (it->opts.validate == 0) validate_off = 1;
    mark(r->doc, app_name, tracking);
    snprintf(it->health, sizeof it->health, "Missing");
  }
  /* 2. live objects of this app, by label, one list per stored kind */
  {
    char q[200];
    snprintf(q, sizeof q, "labelSelector=" GX_LABEL_APP "%%3D%s", app_name);
    reqs = sk_xcalloc(env->nkinds + n + 1, sizeof *reqs);
    for (size_t k = 0; k < env->nkinds; k++) {
      const gx_kindinfo_t *ki = &env->kinds[k];
      if (strcmp(ki->stored_as, ki->kind) || storage_of(env, ki) != ki) continue;
      reqs[nreq].method = "GET";
      reqs[nreq].path = obj_path(ki, NULL, NULL, q);
      nreq++;
    }
    gx_ctl_batch(env->ctl, reqs, nreq);
    for (size_t k = 0; k < nreq; k++) {
      gx_ctl_resp_t *rp = &reqs[k].resp;
      if (rp->err < 0 || rp->status != 200) {
        char m[512];
        gx_ctl_message(rp, m, sizeof m);
        snprintf(res->message, sizeof res->message, "listing live objects (%s): %s", reqs[k].path, m);
        rc = rp->err < 0 ? rp->err : SK_EHTTP;
        goto status;
      }
      json_t *lst = json_loadb(rp->body.data, rp->body.len, 0, NULL);
      size_t j;
      json_t *o;
      json_array_foreach(json_object_get(lst, "items"), j, o) {
        const char *tr = gx_annotation(o, GX_ANN_TRACKING);
        if (!tr) tr = "";
        if (strcmp(tr, tracking)) continue; /* same label, another app's namespace */
        char key[600];
        snprintf(key, sizeof key, "%s/%s/%s", sk_json_get_str(o, "kind", ""),
                 sk_json_get_str(o, "metadata.namespace", ""), sk_json_get_str(o, "metadata.name", ""));
        json_object_set(live, key, o);
      }
      json_decref(lst);
    }
    gx_ctl_batch_done(reqs, nreq);
    nreq = 0;
  }
  /* 3. compare; documents of a converted kind are read back in their own form */
  {
    json_t *matched = json_object();
    size_t *conv = sk_xcalloc(n + 1, sizeof *conv);
    size_t nconv = 0;
    for (size_t i = 0; i < n; i++) {
      item_t *it = &items[i];
      char key[600];
      snprintf(key, sizeof key, "%s/%s/%s", it->ski->kind, it->ski->namespaced ? it->r->ns : "", it->r->name);
      json_t *o = json_object_get(live, key);
      if (o) {
        json_object_set_new(matched, key, json_true());
        it->exists = 1;
        if (it->ki != it->ski) {
          reqs[nreq].method = "GET";
          reqs[nreq].path = obj_path(it->ki, it->r->ns, it->r->name, NULL);
          conv[nconv++] = i;
          nreq++;
        } else {
          it->live = o;
        }
      }
    }
    json_t *convs = json_array();
    if (nreq) {
      gx_ctl_batch(env->ctl, reqs, nreq);
      for (size_t k = 0; k < nreq; k++) {
        item_t *it = &items[conv[k]];
        if (reqs[k].resp.status != 200) {
          it->exists = 0;
          continue;
        }
        json_t *o = json_loadb(reqs[k].resp.body.data, reqs[k].resp.body.len, 0, NULL);
        if (o) {
          json_array_append_new(convs, o);
          it->live = o;
        }
      }
      gx_ctl_batch_done(reqs, nreq);
      nreq = 0;
    }
    for (size_t i = 0; i < n; i++) {
      item_t *it = &items[i];
      it->changed = !in_sync(it, ignore, it->where, sizeof it->where);
      if (it->live) snprintf(it->health, sizeof it->health, "%s", gx_health_of(it->live));
      if (it->changed) res->out_of_sync++;
    }
    /* objects of the app no longer in Git */
    const char *key;
    json_t *o;
    json_t *gone = json_array();
    json_object_foreach(live, key, o) {
      if (!json_object_get(matched, key)) json_array_append(gone, o);
    }
    json_object_set_new(live, "\x01gone", gone);
    json_object_set_new(live, "\x01conv", convs);
    json_decref(matched);
    free(conv);
  }
  {
    json_t *gone = json_object_get(live, "\x01gone");
    gones = sk_xcalloc(json_array_size(gone) + 1, sizeof *gones);
    size_t j;
    json_t *o;
    json_array_foreach(gone, j, o) {
      gone_t *g = &gones[ngone++];
      gx_sync_opts_t lo = live_opts(&app_opts, o);
      g->o = o;
      g->ki = kind_for(env, sk_json_get_str(o, "apiVersion", ""), sk_json_get_str(o, "kind", ""));
      g->opted_out = lo.prune == 0;
      g->wave = lo.prune_last == 1 ? INT_MAX : live_wave(o);
    }
  }
  res->out_of_sync += (int)ngone;

  if (mode == GX_SYNC_APPLY) {
    int allow_empty = sk_json_get_bool(app, "spec.syncPolicy.automated.allowEmpty", 0);
    if (!n && ngone && prune && !allow_empty) {
      snprintf(res->message, sizeof res->message,
               "the revision has no resources: refusing to prune all %zu live objects "
               "(set syncPolicy.automated.allowEmpty to allow it)",
               ngone);
      rc = SK_EINVAL;
      goto status;
    }
    item_t **todo = sk_xcalloc(n + 1, sizeof *todo);
    gone_t **prs = sk_xcalloc(ngone + 1, sizeof *prs);
    size_t ntodo = 0, npr = 0;
    for (size_t i = 0; i < n; i++)
      if (items[i].changed) {
        todo[ntodo++] = &items[i];
        items[i].body = apply_body(&items[i], ignore);
      }
    qsort(todo, ntodo, sizeof *todo, item_cmp);
    for (size_t i = 0; prune && i < ngone; i++)
      if (!gones[i].opted_out && gones[i].ki) prs[npr++] = &gones[i];
    qsort(prs, npr, sizeof *prs, gone_cmp);
    /* 3. dry run of every change: all in one batch request; when control
     * refuses it, every document alone, so that each refusal is named */
    gx_ctl_resp_t dresp;
    json_t *dans = NULL;
    memset(&dresp, 0, sizeof dresp);
    sk_buf_init(&dresp.body);
    int dcrc = ntodo ? batch_send(env, todo, 0, ntodo, NULL, 0, 0, 1, &dresp, &dans) : 0;
    size_t nfail = 0;
    if (ntodo && (dcrc < 0 || dresp.status != 200)) {
      for (size_t i = 0; i < ntodo; i++) {
        item_t *it = todo[i];
        reqs[i].method = it->exists ? "PUT" : "POST";
        reqs[i].path = obj_path(it->ki, it->r->ns, it->exists ? it->r->name : NULL, "dryRun=All");
        reqs[i].body = json_dumps(it->body, JSON_COMPACT);
        reqs[i].ctype = "application/json";
      }
      nreq = ntodo;
      if (ntodo && gx_ctl_batch(env->ctl, reqs, ntodo) < 0) {
        snprintf(res->message, sizeof res->message, "control unreachable during the dry run");
        rc = SK_EIO;
      }
      sk_buf_t msg;
      sk_buf_init(&msg);
      for (size_t i = 0; rc == 0 && i < ntodo; i++) {
        int s = reqs[i].resp.status;
        if (s == 200 || s == 201) continue;
        fail_text(todo[i], &reqs[i].resp, todo[i]->message, sizeof todo[i]->message);
        snprintf(todo[i]->result, sizeof todo[i]->result, "SyncFailed");
        if (nfail < 5) sk_buf_printf(&msg, "%s%s", nfail ? "; " : "", todo[i]->message);
        nfail++;
      }
      if (nfail) {
        snprintf(res->message, sizeof res->message, "dry run refused %zu of %zu changes, nothing applied: %s", nfail,
                 ntodo, msg.data ? msg.data : "");
        rc = SK_EFORBID;
      }
      sk_buf_done(&msg);
      gx_ctl_batch_done(reqs, nreq);
      nreq = 0;
      if (rc == 0 && !nfail) { /* each alone passes, together they do not (e.g. too big) */
        int64_t idx = sk_json_get_int(dans, "details.index", -1);
        item_t *it = idx >= 0 && (size_t)idx < ntodo ? todo[idx] : todo[0];
        if (dcrc < 0) snprintf(it->message, sizeof it->message, "control unreachable: %s", sk_strerror(dcrc));
        else fail_text(it, &dresp, it->message, sizeof it->message);
        snprintf(it->result, sizeof it->result, "SyncFailed");
        snprintf(res->message, sizeof res->message, "dry run refused the changes, nothing applied: %s", it->message);
        rc = dcrc < 0 ? dcrc : SK_EFORBID;
      }
    }
    json_decref(dans);
    gx_ctl_resp_done(&dresp);
    /* 4. apply, one wave at a time, each wave in ONE control transaction
     * (POST /api/v1/batch): a wave is written entirely or not at all, and
     * the next wave starts only once the earlier one is committed. What
     * left Git is deleted in its own wave's batch, after the wave's
     * applies (PruneLast: after every wave). */
    for (size_t a0 = 0, p0 = 0; rc == 0 && (a0 < ntodo || p0 < npr);) {
      int w = a0 < ntodo ? todo[a0]->r->wave : INT_MAX;
      if (p0 < npr && prs[p0]->wave < w) w = prs[p0]->wave;
      size_t a1 = a0, p1 = p0;
      while (a1 < ntodo && todo[a1]->r->wave == w) a1++;
      while (p1 < npr && prs[p1]->wave == w) p1++;
      gx_ctl_resp_t resp;
      json_t *ans = NULL;
      int crc = batch_send(env, todo, a0, a1, prs, p0, p1, 0, &resp, &ans);
      json_t *results = json_object_get(ans, "items");
      size_t na = a1 - a0, np = p1 - p0;
      if (crc == 0 && resp.status == 200 && json_array_size(results) == na + np) {
        for (size_t i = a0; i < a1; i++) {
          item_t *it = todo[i];
          json_t *one = json_array_get(results, i - a0);
          snprintf(it->result, sizeof it->result, "Synced");
          it->changed = 0;
          it->where[0] = 0;
          json_t *o = json_object_get(one, "object");
          if (json_is_object(o)) snprintf(it->health, sizeof it->health, "%s", gx_health_of(o));
          /* "unchanged": control's mutating policies already made live what
           * Git asks for once they ran; nothing was written */
          if (strcmp(sk_json_get_str(one, "result", ""), "unchanged")) res->applied++;
          res->out_of_sync--;
        }
        for (size_t i = p0; i < p1; i++) {
          prs[i]->pruned = 1;
          res->pruned++;
          res->out_of_sync--;
        }
      } else {
        /* nothing of this wave was written: the failed item (when control
         * named it) carries the cause, the others stay out of sync */
        int64_t idx = sk_json_get_int(ans, "details.index", -1);
        const char *wname = w == INT_MAX ? "PruneLast" : NULL;
        char wbuf[32];
        if (!wname) {
          snprintf(wbuf, sizeof wbuf, "%d", w);
          wname = wbuf;
        }
        if (idx >= (int64_t)na && (size_t)idx < na + np) {
          gone_t *g = prs[p0 + (size_t)(idx - (int64_t)na)];
          char m[1024];
          if (crc < 0) snprintf(m, sizeof m, "control unreachable: %s", sk_strerror(crc));
          else gx_ctl_message(&resp, m, sizeof m);
          snprintf(res->message, sizeof res->message,
                   "prune failed in wave %s, nothing of the wave was written: %s %s/%s: %s", wname,
                   sk_json_get_str(g->o, "kind", ""), sk_json_get_str(g->o, "metadata.namespace", ""),
                   sk_json_get_str(g->o, "metadata.name", ""), m);
        } else {
          item_t *it = idx >= 0 && (size_t)idx < na ? todo[a0 + (size_t)idx] : na ? todo[a0] : NULL;
          char m[1024];
          if (crc < 0) snprintf(m, sizeof m, "control unreachable: %s", sk_strerror(crc));
          else if (it) fail_text(it, &resp, m, sizeof m);
          else gx_ctl_message(&resp, m, sizeof m);
          if (it) {
            snprintf(it->message, sizeof it->message, "%.500s", m);
            snprintf(it->result, sizeof it->result, "SyncFailed");
          }
          snprintf(res->message, sizeof res->message, "apply failed in wave %s, nothing of the wave was written: %s",
                   wname, m);
        }
        rc = crc < 0 ? crc : SK_EHTTP;
      }
      json_decref(ans);
      gx_ctl_resp_done(&resp);
      a0 = a1;
      p0 = p1;
    }
    free(todo);
    free(prs);
  }

status:
  st = base_status(app);
  {
    char ts[32];
    now_iso(ts, sizeof ts);
    json_t *resources = json_array();
    int worst = 0;
    for (size_t i = 0; i < n && items[i].ski; i++) {
      json_array_append_new(resources, status_resource(&items[i]));
      int hr = gx_health_rank(items[i].health);
      if (hr > worst) worst = hr;
    }
    for (size_t j = 0; j < ngone; j++) {
      const json_t *o = gones[j].o;
      if (gones[j].pruned) continue;
      json_array_append_new(resources,
                            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "apiVersion",
                                      sk_json_get_str(o, "apiVersion", ""), "kind", sk_json_get_str(o, "kind", ""),
                                      "namespace", sk_json_get_str(o, "metadata.namespace", ""), "name",
                                      sk_json_get_str(o, "metadata.name", ""), "status", "OutOfSync", "health",
                                      gx_health_of(o), "message",
                                      gones[j].opted_out ? "not in Git; pruning disabled for this object"
                                                         : "not in Git; requires pruning"));
    }
    static const char *const hnames[] = {"Healthy", "Suspended", "Progressing", "Missing", "Degraded", "Unknown"};
    const char *sync_status = rc < 0 && !n ? "Unknown" : res->out_of_sync > 0 ? "OutOfSync" : "Synced";
    if (rc < 0 && mode == GX_SYNC_COMPARE) sync_status = "Unknown";
    json_object_set_new(st, "sync",
                        json_pack("{s:s, s:s, s:{s:{s:s, s:s, s:s}}}", "status", sync_status, "revision",
                                  revision ? revision : "", "comparedTo", "source", "repoURL",
                                  sk_json_get_str(app, "spec.source.repoURL", ""), "path",
                                  sk_json_get_str(app, "spec.source.path", ""), "targetRevision",
                                  sk_json_get_str(app, "spec.source.targetRevision", "HEAD")));
    json_object_set_new(st, "health", json_pack("{s:s}", "status", rc < 0 && !n ? "Unknown" : hnames[worst]));
    json_object_set_new(st, "resources", resources);
    json_object_set_new(st, "summary", json_pack("{s:i, s:i}", "resources", (int)n, "outOfSync",
                                                 res->out_of_sync < 0 ? 0 : res->out_of_sync));
    /* a sync that found nothing to do (self-heal rounds) keeps the last
     * operation, so an idle app's status is not rewritten every resync */
    const char *prev_phase = sk_json_get_str(st, "operationState.phase", "");
    const char *prev_rev = sk_json_get_str(st, "operationState.syncResult.revision", "");
    int noop = rc >= 0 && !res->applied && !res->pruned && !strcmp(prev_phase, "Succeeded") &&
               !strcmp(prev_rev, revision ? revision : "");
    if (mode == GX_SYNC_APPLY && !noop) {
      json_t *sres = json_array();
      for (size_t i = 0; i < n && items[i].ski; i++)
        if (items[i].result[0])
          json_array_append_new(sres, json_pack("{s:s, s:s, s:s, s:s, s:s}", "kind", items[i].r->kind, "namespace",
                                                items[i].r->ns, "name", items[i].r->name, "status", items[i].result,
                                                "message", items[i].message));
      char omsg[2300];
      if (rc < 0 && env->retry_next_ms)
        snprintf(omsg, sizeof omsg, "%s (retrying: attempt #%d in %llus)", res->message, env->retry_count + 1,
                 (unsigned long long)((env->retry_next_ms + 999) / 1000));
      else if (rc < 0 && env->retry_count)
        snprintf(omsg, sizeof omsg, "%s (retry limit reached after %d retries)", res->message, env->retry_count);
      else
        snprintf(omsg, sizeof omsg, "%s", rc < 0 ? res->message : "successfully synced");
      json_object_set_new(
          st, "operationState",
          json_pack("{s:s, s:s, s:s, s:s, s:i, s:{s:s, s:o, s:i}}", "phase", rc < 0 ? "Failed" : "Succeeded",
                    "message", omsg, "startedAt", started, "finishedAt", ts, "retryCount", env->retry_count,
                    "syncResult", "revision", revision ? revision : "", "resources", sres, "pruned", res->pruned));
      const json_t *hist = json_object_get(st, "history");
      size_t hn = json_array_size(hist);
      const char *last_rev = hn ? sk_json_get_str(json_array_get(hist, hn - 1), "revision", "") : "";
      const char *last_res = hn ? sk_json_get_str(json_array_get(hist, hn - 1), "result", "") : "";
      if (rc < 0 || res->applied || res->pruned || strcmp(last_rev, revision ? revision : "") ||
          strcmp(last_res, "Succeeded"))
        add_history(st, app, revision, author, commit_msg, rc < 0 ? "Failed" : "Succeeded", res->applied, res->pruned,
                    started, ts);
    }
    const char *reason = rc == SK_EFORBID ? "DryRunRefused" : rc == SK_EHTTP ? "ApplyFailed" : rc == SK_EINVAL ? "InvalidManifests" : "ControlError";
    if (unknown.len)
      json_array_append_new(warnings, json_pack("{s:s, s:s, s:s}", "type", "InvalidSpecError", "reason",
                                                "UnknownSyncOption", "message", unknown.data));
    if (validate_off)
      json_array_append_new(
          warnings, json_pack("{s:s, s:s, s:s}", "type", "SyncOptionWarning", "reason", "ValidationAlwaysOn", "message",
                              "Validate=false is accepted but not honoured: every document is still validated by "
                              "control's schema checks and the policy engine"));
    /* a comparison does not answer for the last sync: its SyncError stays
     * until the next sync (automated, retry or manual) */
    json_t *carry = json_array();
    if (mode == GX_SYNC_COMPARE) {
      size_t ci;
      json_t *c;
      json_array_foreach(json_object_get(st, "conditions"), ci, c) {
        if (!strcmp(sk_json_get_str(c, "type", ""), "SyncError")) json_array_append(carry, c);
      }
    }
    set_conditions(st, rc < 0 ? (mode == GX_SYNC_APPLY ? "SyncError" : "ComparisonError") : NULL, reason,
                   res->message, warnings, carry);
    json_decref(carry);
    json_object_set_new(st, "reconciledAt", json_string(ts));
    json_object_set_new(st, "observedGeneration", json_integer(sk_json_get_int(app, "metadata.generation", 0)));
    set_handled(st, app);
  }
  res->ok = rc >= 0;
  {
    int prc = put_status(env, app, st);
    if (rc >= 0 && prc < 0) {
      snprintf(res->message, sizeof res->message, "writing the application status failed: %s", sk_strerror(prc));
      rc = prc;
    }
  }
  json_decref(st);
  gx_ctl_batch_done(reqs, nreq);
  free(reqs);
  json_decref(live);
  for (size_t i = 0; i < n; i++) json_decref(items[i].body);
  free(items);
  free(gones);
  json_decref(warnings);
  sk_buf_done(&unknown);
  return rc;
}
