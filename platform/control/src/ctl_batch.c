/* POST /api/v1/batch (ctl_batch.h): the items are checked one by one (shape,
 * kind, document validation) before the store is touched, then run in one
 * store transaction where each apply is authorized with the verb it turns
 * out to be (create or update), preconditioned and run through the
 * policies (deletes too, as DELETE), and each change is audited; the first
 * failure rolls back all. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_batch.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/mem.h"

typedef struct bitem {
  size_t index;
  int op;                     /* CTL_STEP_APPLY / CTL_STEP_DELETE */
  const ctl_kind_t *k, *sk;   /* addressed / storage */
  char ns[CTL_NS_LEN + 1], name[CTL_NAME_LEN + 1];
  char kind[64];              /* as the item names it (for messages) */
  json_t *doc;                /* apply: the document as sent (client form) */
  int has_rv;
  int64_t want_rv;
  ctl_verb_t verb;
  /* outcome */
  int code;
  char msg[2048];
  ctl_errs_t errs;
} bitem_t;

typedef struct bjob {
  const ctl_batch_env_t *env;
  sk_http_req_t *req;
  ctl_principal_t p;
  bitem_t *items;
  size_t n;
  int dry_run;
} bjob_t;

typedef struct bref {
  bjob_t *job;
  bitem_t *it;
} bref_t;

static void fail(bitem_t *it, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(bitem_t *it, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(it->msg, sizeof it->msg, fmt, ap);
  va_end(ap);
  it->code = code;
}

static json_t *to_client(const ctl_kind_t *k, const json_t *stored) {
  if (k->from_stored) {
    json_t *o = NULL;
    if (k->from_stored(stored, &o) == 0 && o) return o;
  }
  return json_incref((json_t *)stored);
}

static int authorize(bjob_t *j, bitem_t *it, ctl_verb_t verb) {
  it->verb = verb;
  if (!j->env->auth) return 0;
  char reason[256];
  if (ctl_auth_authorize(j->env->auth, &j->p, verb, it->sk->kind, reason, sizeof reason) < 0) {
    fail(it, 403, "%s", reason);
    return SK_EFORBID;
  }
  return 0;
}

/* The policies on doc (NULL for a delete: old is the stored object); 1
 * when a mutate rule changed it (*doc replaced). A dry-run batch says
 * dryRun: true to the policies. */
static int policy_check(bjob_t *j, bitem_t *it, json_t **doc, const json_t *old, const char *op) {
  const pol_set_t *pols = j->env->pols;
  if (!pols || !pols->n) return 0;
  json_t *preq = pol_request_for(*doc, old, op, j->p.name[0] ? j->p.name : NULL);
  if (!preq) return SK_ENOMEM;
  if (j->dry_run) json_object_set_new(preq, "dryRun", json_true());
  pol_report_t rep;
  pol_report_init(&rep);
  int rc = pol_evaluate(pols, preq, &rep);
  if (rc < 0) {
    fail(it, 500, "policy evaluation failed: %s", sk_strerror(rc));
  } else if (pol_report_denied(&rep)) {
    char *m = pol_report_denial(&rep, preq);
    fail(it, 403, "%s", m ? m : "denied by policy");
    free(m);
    rc = SK_EFORBID;
  } else if (*doc && rep.patched && !json_equal(rep.patched, *doc)) {
    json_decref(*doc);
    *doc = json_incref(rep.patched);
    rc = 1;
  }
  pol_report_done(&rep);
  json_decref(preq);
  return rc;
}

static int prepare(bitem_t *it, json_t *doc, json_t **stored) {
  ctl_errs_init(&it->errs);
  int rc = ctl_doc_prepare(doc, it->k, it->ns, it->name, stored, NULL, &it->errs);
  if (rc < 0) {
    char m[1536];
    ctl_errs_format(&it->errs, m, sizeof m);
    fail(it, 422, "%s \"%s\" is invalid: %s", it->k->kind, it->name, m);
  }
  return rc;
}

/* Inside the transaction: cur is the stored object or NULL (a create). */
static int apply_fn(const json_t *cur, json_t **next, void *ud) {
  bref_t *br = ud;
  bitem_t *it = br->it;
  *next = NULL;
  json_t *doc = json_deep_copy(it->doc), *stored = NULL, *cur_client = NULL;
  int rc;
  if (!doc) return SK_ENOMEM;
  if ((rc = authorize(br->job, it, cur ? CTL_VERB_UPDATE : CTL_VERB_CREATE)) < 0) goto out;
  if (it->has_rv && (!cur || ctl_obj_rv(cur) != it->want_rv)) {
    if (cur)
      fail(it, 409, "%s \"%s\" has been modified (resourceVersion %lld, current %lld)", it->k->kind, it->name,
           (long long)it->want_rv, (long long)ctl_obj_rv(cur));
    else
      fail(it, 409, "%s \"%s\" does not exist (resourceVersion %lld was expected)", it->k->kind, it->name,
           (long long)it->want_rv);
    rc = SK_ECONFLICT;
    goto out;
  }
  if (cur) cur_client = to_client(it->k, cur);
  if ((rc = policy_check(br->job, it, &doc, cur_client, cur ? "UPDATE" : "CREATE")) < 0) goto out;
  if ((rc = prepare(it, doc, &stored)) < 0) goto out; /* again: a mutation must still be valid */
  json_t *n = json_deep_copy(stored);
  if (!n) {
    rc = SK_ENOMEM;
    goto out;
  }
  json_object_del(n, "status"); /* status only through the status subresource */
  json_t *st = cur ? json_object_get(cur, "status") : NULL;
  if (st) json_object_set(n, "status", st);
  *next = n;
  rc = 0;
out:
  if (rc < 0 && !it->code) fail(it, 500, "%s", sk_strerror(rc));
  json_decref(doc);
  json_decref(stored);
  json_decref(cur_client);
  return rc;
}

/* Inside the transaction, after the write: delete precondition and
 * policies (DELETE with the stored object as oldObject), audit. */
static int step_hook(int64_t rv, const json_t *old_obj, const json_t *new_obj, void *ud) {
  bref_t *br = ud;
  bitem_t *it = br->it;
  if (it->op == CTL_STEP_DELETE && it->has_rv && old_obj && ctl_obj_rv(old_obj) != it->want_rv) {
    fail(it, 409, "%s \"%s\" has been modified (resourceVersion %lld, current %lld)", it->k->kind, it->name,
         (long long)it->want_rv, (long long)ctl_obj_rv(old_obj));
    return SK_ECONFLICT;
  }
  if (it->op == CTL_STEP_DELETE && old_obj) {
    json_t *old_client = to_client(it->k, old_obj), *none = NULL;
    int rc = policy_check(br->job, it, &none, old_client, "DELETE");
    json_decref(old_client);
    if (rc < 0) {
      if (!it->code) fail(it, 500, "policy evaluation failed: %s", sk_strerror(rc));
      return rc;
    }
  }
  if (!br->job->env->audit || br->job->dry_run) return 0;
  int code = it->verb == CTL_VERB_CREATE ? 201 : 200;
  int rc = ctl_audit_record_change(br->job->env->audit, br->job->req, &br->job->p, it->verb, it->sk->kind, it->ns,
                                   it->name, rv, code, old_obj, new_obj);
  if (rc < 0) fail(it, 500, "audit: %s", sk_strerror(rc));
  return rc;
}

static int parse_rv(const json_t *v, int64_t *out) {
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    *out = json_integer_value(v);
    return 0;
  }
  if (!json_is_string(v)) return SK_EINVAL;
  const char *s = json_string_value(v);
  char *end = NULL;
  long long n = strtoll(s, &end, 10);
  if (!*s || *end || n < 0) return SK_EINVAL;
  *out = n;
  return 0;
}

/* Shape, kind and document checks of one item (before the store). */
static int check_item(bjob_t *j, bitem_t *it, json_t *v) {
  if (!json_is_object(v)) {
    fail(it, 400, "an item must be an object");
    return SK_EINVAL;
  }
  const char *op = sk_json_get_str(v, "op", "apply");
  json_t *rv = json_object_get(v, "resourceVersion");
  if (rv && !json_is_null(rv)) {
    if (parse_rv(rv, &it->want_rv) < 0) {
      fail(it, 400, "resourceVersion must be a non-negative integer");
      return SK_EINVAL;
    }
    it->has_rv = 1;
  }
  if (!strcmp(op, "delete")) {
    it->op = CTL_STEP_DELETE;
    const char *kd = sk_json_get_str(v, "kind", NULL), *ns = sk_json_get_str(v, "namespace", NULL),
               *name = sk_json_get_str(v, "name", NULL);
    snprintf(it->kind, sizeof it->kind, "%s", kd ? kd : "");
    it->k = kd ? ctl_kind_find(kd) : NULL;
    if (!it->k) {
      fail(it, 400, "delete: unknown or missing kind '%s'", kd ? kd : "");
      return SK_EINVAL;
    }
    it->sk = ctl_kind_storage(it->k);
    if (!it->k->namespaced) ns = "";
    else if (!ns || !*ns) ns = "default";
    if (!name || !ctl_valid_name(name) || (it->k->namespaced && !ctl_valid_ns(ns))) {
      fail(it, 400, "delete: a valid name (and namespace) is required");
      return SK_EINVAL;
    }
    snprintf(it->ns, sizeof it->ns, "%s", ns);
    snprintf(it->name, sizeof it->name, "%s", name);
    return authorize(j, it, CTL_VERB_DELETE);
  }
  if (strcmp(op, "apply")) {
    fail(it, 400, "op must be apply or delete, not '%.64s'", op);
    return SK_EINVAL;
  }
  it->op = CTL_STEP_APPLY;
  json_t *obj = json_object_get(v, "object");
  if (!json_is_object(obj)) {
    fail(it, 400, "apply: \"object\" (the resource document) is required");
    return SK_EINVAL;
  }
  it->doc = json_deep_copy(obj);
  if (!it->doc) return SK_ENOMEM;
  json_t *m = json_object_get(it->doc, "metadata");
  /* metadata.resourceVersion is a precondition too, as on PUT */
  json_t *mrv = json_is_object(m) ? json_object_get(m, "resourceVersion") : NULL;
  if (mrv && !json_is_null(mrv) && !it->has_rv) {
    if (parse_rv(mrv, &it->want_rv) < 0) {
      fail(it, 400, "metadata.resourceVersion must be a non-negative integer");
      return SK_EINVAL;
    }
    it->has_rv = 1;
  }
  if (json_is_object(m)) json_object_del(m, "resourceVersion");
  json_t *stored = NULL;
  const ctl_kind_t *k = NULL;
  ctl_errs_init(&it->errs);
  int rc = ctl_doc_prepare(it->doc, NULL, NULL, NULL, &stored, &k, &it->errs);
  if (rc < 0) { /* name the item as well as the document allows */
    snprintf(it->kind, sizeof it->kind, "%s", sk_json_get_str(it->doc, "kind", "?"));
    snprintf(it->ns, sizeof it->ns, "%s", sk_json_get_str(it->doc, "metadata.namespace", ""));
    snprintf(it->name, sizeof it->name, "%s", sk_json_get_str(it->doc, "metadata.name", ""));
    char msg[1536];
    ctl_errs_format(&it->errs, msg, sizeof msg);
    fail(it, 422, "%s \"%s\" is invalid: %s", sk_json_get_str(it->doc, "kind", "?"), ctl_obj_name(it->doc), msg);
    return rc;
  }
  it->k = k;
  it->sk = ctl_kind_storage(k);
  snprintf(it->ns, sizeof it->ns, "%s", ctl_obj_ns(stored));
  snprintf(it->name, sizeof it->name, "%s", ctl_obj_name(stored));
  json_decref(stored);
  return 0;
}

static void respond_json(sk_http_req_t *req, int status, const json_t *v) {
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(v, &b);
  sk_buf_puts(&b, "\n");
  sk_http_header_t h[1] = {{"content-type", "application/json"}};
  sk_http_respond(req, status, h, 1, b.data, b.len);
  sk_buf_done(&b);
}

static const char *reason_for(int code) {
  switch (code) {
  case 400: return "BadRequest";
  case 403: return "Forbidden";
  case 404: return "NotFound";
  case 405: return "MethodNotAllowed";
  case 409: return "Conflict";
  case 413: return "RequestEntityTooLarge";
  case 422: return "Invalid";
  default: return "InternalError";
  }
}

static void respond_fail(sk_http_req_t *req, int code, const char *message) {
  json_t *st = ctl_status_new(code, reason_for(code), message, NULL, NULL, NULL);
  respond_json(req, code, st);
  json_decref(st);
}

/* The failed item as a Status naming it; refusals are audited like the
 * single calls' (outside the rolled-back transaction). */
static void respond_item_fail(bjob_t *j, bitem_t *it, int dry_run) {
  const char *kind = it->k ? it->k->kind : it->kind;
  char *msg = sk_pool_printf(j->req->pool, "item %zu (%s %s%s%s): %s; nothing was written%s", it->index, kind,
                             it->ns, it->ns[0] ? "/" : "", it->name, it->msg, dry_run ? " (dry run)" : "");
  json_t *st = ctl_status_new(it->code, reason_for(it->code), msg, kind[0] ? kind : NULL, it->name[0] ? it->name : NULL,
                              it->code == 422 ? &it->errs : NULL);
  json_t *d = json_object_get(st, "details");
  if (!json_is_object(d)) {
    d = json_object();
    json_object_set_new(st, "details", d);
  }
  json_object_set_new(d, "index", json_integer((json_int_t)it->index));
  json_object_set_new(d, "namespace", json_string(it->ns));
  /* audited before answering: the answer may free the request */
  if (it->code == 403 && j->env->audit && it->sk) {
    ctl_audit_entry_t e = {.principal = &j->p, .verb = ctl_verb_name(it->verb), .kind = it->sk->kind,
                           .ns = it->ns, .name = it->name, .code = 403, .source = j->req->peer_addr,
                           .message = it->msg};
    (void)ctl_audit_record(j->env->audit, &e);
  }
  respond_json(j->req, it->code, st);
  json_decref(st);
}

int ctl_batch_check(const void *body, size_t len, size_t max, size_t *nitems, char *err, size_t errlen) {
  static const ctl_batch_env_t none;
  bjob_t j = {.env = &none};
  json_t *v = NULL;
  *nitems = 0;
  char perr[256];
  int rc = sk_json_parse((const char *)body, len, max, CTL_MAX_DOC_DEPTH + 3, &v, perr, sizeof perr);
  if (rc < 0) {
    snprintf(err, errlen, "body: %s", perr);
    return rc;
  }
  json_t *items = json_object_get(v, "items");
  size_t n = json_array_size(items);
  if (!json_is_object(v) || !json_is_array(items) || n == 0 || n > CTL_BATCH_MAX_ITEMS) {
    snprintf(err, errlen, "body must be {\"items\":[1 to %d items]}", CTL_BATCH_MAX_ITEMS);
    json_decref(v);
    return SK_EINVAL;
  }
  bitem_t *it = sk_xcalloc(1, sizeof *it);
  for (size_t i = 0; i < n && rc == 0; i++) {
    memset(it, 0, sizeof *it);
    it->index = i;
    if ((rc = check_item(&j, it, json_array_get(items, i))) < 0)
      snprintf(err, errlen, "item %zu (%s %s/%s): %s", i, it->k ? it->k->kind : it->kind, it->ns, it->name,
               it->msg);
    json_decref(it->doc);
  }
  free(it);
  json_decref(v);
  if (rc == 0) *nitems = n;
  return rc;
}

void ctl_batch_handle(const ctl_batch_env_t *env, sk_http_req_t *req) {
  bjob_t j = {.env = env, .req = req};
  json_t *body = NULL, *out = NULL;
  ctl_store_step_t *steps = NULL;
  bref_t *refs = NULL;
  char err[512];
  if (strcmp(req->method, "POST")) {
    respond_fail(req, 405, "the batch endpoint takes POST only");
    return;
  }
  if (env->auth) {
    if (ctl_auth_authenticate(env->auth, req, &j.p, err, sizeof err) < 0) {
      ctl_http_error(req, 401, err);
      return;
    }
  } else {
    snprintf(j.p.name, sizeof j.p.name, "anonymous");
    j.p.role = CTL_ROLE_ADMIN;
  }
  const char *dq = ctl__query_get(req->query, "dryRun", req->pool);
  if (dq && strcmp(dq, "All")) {
    respond_fail(req, 400, "dryRun must be All");
    return;
  }
  /* The documents may nest CTL_MAX_DOC_DEPTH deep under {items:[{object:}]}. */
  size_t max = env->max_body ? env->max_body : CTL_MAX_DOC_BYTES;
  if (!req->body || !req->body_len) {
    respond_fail(req, 400, "request body is empty; {\"items\":[...]} is expected");
    return;
  }
  if (req->body_len > max) {
    char *m = sk_pool_printf(req->pool, "request body is %zu bytes; the limit is %zu", req->body_len, max);
    respond_fail(req, 413, m);
    return;
  }
  int rc = sk_json_parse((const char *)req->body, req->body_len, max, CTL_MAX_DOC_DEPTH + 3, &body, err, sizeof err);
  if (rc < 0) {
    respond_fail(req, rc == SK_ELIMIT ? 413 : 400, sk_pool_printf(req->pool, "body: %s", err));
    return;
  }
  json_t *items = json_object_get(body, "items");
  json_t *dj = json_object_get(body, "dryRun");
  if (!json_is_object(body) || !json_is_array(items) || (dj && !json_is_boolean(dj))) {
    respond_fail(req, 400, "body must be {\"items\":[...], \"dryRun\": true|false}");
    goto out;
  }
  int dry_run = dq != NULL || json_is_true(dj);
  j.dry_run = dry_run;
  j.n = json_array_size(items);
  if (j.n == 0 || j.n > CTL_BATCH_MAX_ITEMS) {
    respond_fail(req, j.n ? 413 : 400,
                 sk_pool_printf(req->pool, "a batch has 1 to %d items, not %zu", CTL_BATCH_MAX_ITEMS, j.n));
    goto out;
  }
  j.items = sk_xcalloc(j.n, sizeof *j.items);
  steps = sk_xcalloc(j.n, sizeof *steps);
  refs = sk_xcalloc(j.n, sizeof *refs);
  for (size_t i = 0; i < j.n; i++) {
    bitem_t *it = &j.items[i];
    it->index = i;
    if (check_item(&j, it, json_array_get(items, i)) < 0) {
      if (!it->code) fail(it, 500, "out of memory");
      respond_item_fail(&j, it, dry_run);
      goto out;
    }
    refs[i] = (bref_t){&j, it};
    steps[i] = (ctl_store_step_t){.op = it->op, .kind = it->sk->kind, .ns = it->ns, .name = it->name,
                                  .fn = apply_fn, .fn_ud = &refs[i], .hook = step_hook, .hook_ud = &refs[i]};
  }
  size_t failed = 0;
  rc = ctl_store_batch(env->store, steps, j.n, dry_run, &failed);
  if (rc < 0) {
    bitem_t *it = &j.items[failed < j.n ? failed : 0];
    if (!it->code) {
      if (rc == SK_ENOTFOUND) fail(it, 404, "%s \"%s\" not found", it->k->plural, it->name);
      else fail(it, 500, "store: %s (%s)", ctl_store_errmsg(env->store), sk_strerror(rc));
    }
    respond_item_fail(&j, it, dry_run);
    goto out;
  }
  out = json_pack("{s:s, s:s, s:b, s:[]}", "kind", "BatchResult", "apiVersion", "v1", "dryRun", dry_run, "items");
  json_t *arr = json_object_get(out, "items");
  for (size_t i = 0; i < j.n; i++) {
    bitem_t *it = &j.items[i];
    char rvs[32];
    snprintf(rvs, sizeof rvs, "%lld", (long long)steps[i].rv);
    json_t *o = steps[i].obj ? to_client(it->k, steps[i].obj) : json_null();
    json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:o}", "index", (json_int_t)i, "kind",
                                         it->k->kind, "namespace", it->ns, "name", it->name, "result",
                                         steps[i].result, "resourceVersion", rvs, "object", o));
  }
  respond_json(req, 200, out);
out:
  for (size_t i = 0; j.items && i < j.n; i++) json_decref(j.items[i].doc);
  ctl_store_steps_done(steps, j.n);
  free(steps);
  free(refs);
  free(j.items);
  json_decref(out);
  json_decref(body);
}
