/* skiff-control's REST API: /api/v1/{kind}[/{namespace}[/{name}[/status]]]
 * with create, replace, merge patch, delete, get, list (label selectors,
 * pagination) and watch (newline-delimited JSON over a streamed response,
 * HTTP/1.1 chunked or HTTP/2). Every call but /healthz is authenticated and
 * authorized (ctl_auth), every change audited in the same transaction
 * (ctl_audit), and every create/replace/patch/delete goes through the
 * policy engine first, so a denied change never reaches the store. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl_audit.h"
#include "ctl_auth.h"
#include "ctl_batch.h"
#include "ctl_ca.h"
#include "ctl_events.h"
#include "ctl_ident.h"
#include "ctl_int.h"
#include "ctl_push.h"
#include "policy.h"
#include "skiff/bus.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/store.h"

typedef struct ctl_watch ctl_watch_t;

struct ctl_app {
  uv_loop_t *loop;
  const ctl_config_t *cfg;
  sk_logger_t *log;
  ctl_store_t *store;
  sk_http_server_t *srv;
  sk_tls_ctx_t *tls;
  ctl_auth_t *auth;
  ctl_audit_t *audit;
  sk_bus_t *bus; /* the event bus: resource changes and audit records (ctl_events.c) */
  sk_store_t *bus_store; /* the bus's own sqlite file when the store is not sqlite */
  ctl_ca_t *ca;
  sk_ident_t *ident; /* tls.identity: the API certificate from ca */
  pol_set_t *pols;
  ctl_push_t *push;     /* config push to proxies (ctl_push.h) */
  ctl_watch_t *watches; /* doubly linked */
  size_t nwatches;
  uv_timer_t heartbeat;
  int heartbeat_on;
  void (*drain_cb)(void *ud);
  void *drain_ud;
  sk_mfamily_t *requests; /* skiff_control_requests_total{verb} */
  sk_gauge_t *g_watches;
  sk_counter_t *c_watch_slow; /* watches ended because the client stopped reading */
  sk_gauge_t *g_rv;
};

struct ctl_watch {
  ctl_app_t *app;
  sk_http_req_t *req;
  const ctl_kind_t *k;       /* as addressed (conversion on the way out) */
  const char *skind;         /* storage kind */
  char ns[CTL_NS_LEN + 1];   /* "" = all */
  char name[CTL_NAME_LEN + 1];
  ctl_selector_t sel;
  int64_t sent_rv;
  int slow; /* over CTL_WATCH_MAX_QUEUED: to be ended after the loop that found it */
  ctl_watch_t *prev, *next;
};

/* ---- small helpers ---- */

static int want_yaml(const sk_http_req_t *req) {
  const char *acc = sk_http_headers_get(&req->headers, "accept");
  return acc && strstr(acc, "yaml") && !strstr(acc, "json");
}

static void respond_obj(sk_http_req_t *req, int status, const json_t *v, const char *result) {
  sk_buf_t b;
  sk_buf_init(&b);
  int yaml = want_yaml(req);
  if (yaml) ctl_yaml_emit(v, &b);
  else {
    sk_json_dump_buf(v, &b);
    sk_buf_puts(&b, "\n");
  }
  sk_http_header_t h[2] = {{"content-type", yaml ? "application/yaml" : "application/json"}, {"x-skiff-result", result}};
  sk_http_respond(req, status, h, result ? 2 : 1, b.data, b.len);
  sk_buf_done(&b);
}

static const char *reason_for(int code) {
  switch (code) {
  case 400: return "BadRequest";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "NotFound";
  case 405: return "MethodNotAllowed";
  case 409: return "Conflict";
  case 410: return "Expired";
  case 413: return "RequestEntityTooLarge";
  case 415: return "UnsupportedMediaType";
  case 422: return "Invalid";
  case 429: return "TooManyRequests";
  case 501: return "NotImplemented";
  case 503: return "ServiceUnavailable";
  default: return "InternalError";
  }
}

static void count(ctl_app_t *a, const char *verb) {
  if (!a->requests) return;
  const char *vals[1] = {verb};
  sk_counter_t *ctr = NULL;
  if (sk_counter_with(a->requests, vals, &ctr) == 0) sk_counter_inc(ctr);
}

static void respond_status(sk_http_req_t *req, int code, const char *reason, const char *message, const char *kind,
                           const char *name, const ctl_errs_t *errs) {
  json_t *st = ctl_status_new(code, reason ? reason : reason_for(code), message, kind, name, errs);
  respond_obj(req, code, st, NULL);
  json_decref(st);
}

static int hexv(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The decoded value of query parameter key (pool copy), or NULL. */
static const char *query_get(sk_http_req_t *req, const char *key) {
  const char *q = req->query;
  size_t kl = strlen(key);
  while (q && *q) {
    const char *amp = strchr(q, '&');
    size_t len = amp ? (size_t)(amp - q) : strlen(q);
    if (len >= kl && !strncmp(q, key, kl) && (len == kl || q[kl] == '=')) {
      const char *v = len == kl ? "" : q + kl + 1;
      size_t vl = len == kl ? 0 : len - kl - 1;
      char *out = sk_pool_alloc(req->pool, vl + 1);
      size_t k = 0;
      for (size_t i = 0; i < vl; i++) {
        if (v[i] == '%' && i + 2 < vl + 1 && hexv(v[i + 1]) >= 0 && hexv(v[i + 2]) >= 0) {
          out[k++] = (char)(hexv(v[i + 1]) << 4 | hexv(v[i + 2]));
          i += 2;
        } else {
          out[k++] = v[i] == '+' ? ' ' : v[i];
        }
      }
      out[k] = 0;
      return out;
    }
    q = amp ? amp + 1 : NULL;
  }
  return NULL;
}

/* The document as the client addressed it (HTTPRoute from a stored Route). */
static json_t *to_client(const ctl_kind_t *k, const json_t *stored) {
  if (k->from_stored) {
    json_t *o = NULL;
    if (k->from_stored(stored, &o) == 0 && o) return o;
  }
  return json_incref((json_t *)stored);
}

/* ---- request context ---- */

typedef struct rq {
  ctl_app_t *app;
  sk_http_req_t *req;
  const ctl_kind_t *k;  /* addressed */
  const ctl_kind_t *sk; /* storage */
  const char *ns, *name;
  int status_sub;
  ctl_verb_t verb;
  ctl_principal_t p;
  /* outcome of an update callback */
  int code;
  char msg[2048];
  ctl_errs_t errs;
  json_t *doc;   /* PUT body / PATCH patch */
  int dry_run;   /* ?dryRun=All: validate and run the policies, write nothing */
  json_t *dry_out; /* what an update would have written / a delete would have removed */
} rq_t;

static int audit_hook(int64_t rv, const json_t *old_obj, const json_t *new_obj, void *ud) {
  rq_t *r = ud;
  if (!r->app->audit) return 0;
  int code = r->verb == CTL_VERB_CREATE ? 201 : 200;
  return ctl_audit_record_change(r->app->audit, r->req, &r->p, r->verb, r->sk->kind, r->ns, r->name, rv, code,
                                 old_obj, new_obj);
}

static void audit_refusal(rq_t *r, int code, const char *msg) {
  if (!r->app->audit) return;
  ctl_audit_entry_t e = {.principal = &r->p, .verb = ctl_verb_name(r->verb), .kind = r->sk->kind, .ns = r->ns,
                         .name = r->name, .code = code, .source = r->req->peer_addr, .message = msg};
  (void)ctl_audit_record(r->app->audit, &e);
}

/* Runs the policies on doc (as the client sent it; NULL for a DELETE,
 * where old is the object as stored). 0 = allowed (*doc is replaced by the
 * mutated document, and 1 returned, when a mutate rule changed it),
 * SK_EFORBID with the message in r->msg. The request says dryRun: true
 * under ?dryRun=All. */
static int policy_check(rq_t *r, json_t **doc, const json_t *old, const char *op) {
  if (!r->app->pols || !r->app->pols->n) return 0;
  json_t *preq = pol_request_for(*doc, old, op, r->p.name[0] ? r->p.name : NULL);
  if (!preq) return SK_ENOMEM;
  if (r->dry_run) json_object_set_new(preq, "dryRun", json_true());
  pol_report_t rep;
  pol_report_init(&rep);
  int rc = pol_evaluate(r->app->pols, preq, &rep);
  if (rc < 0) {
    snprintf(r->msg, sizeof r->msg, "policy evaluation failed: %s", sk_strerror(rc));
    r->code = 500;
  } else if (pol_report_denied(&rep)) {
    char *m = pol_report_denial(&rep, preq);
    snprintf(r->msg, sizeof r->msg, "%s", m ? m : "denied by policy");
    free(m);
    r->code = 403;
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

/* ---- create ---- */

static void do_create(rq_t *r) {
  sk_http_req_t *req = r->req;
  char err[512];
  json_t *doc = NULL, *stored = NULL, *out = NULL;
  const char *ct = sk_http_headers_get(&req->headers, "content-type");
  int rc = ctl_doc_decode(req->body, req->body_len, ct, &doc, err, sizeof err);
  if (rc < 0) {
    respond_status(req, rc == SK_ELIMIT ? 413 : 400, NULL, err, r->k->kind, NULL, NULL);
    goto out;
  }
  ctl_errs_init(&r->errs);
  const ctl_kind_t *dk = NULL;
  json_t *m = json_object_get(doc, "metadata");
  if (json_is_object(m)) json_object_del(m, "resourceVersion");
  if ((rc = ctl_doc_prepare(doc, r->k, r->ns, NULL, &stored, &dk, &r->errs)) < 0) goto invalid;
  r->name = sk_pool_strdup(req->pool, ctl_obj_name(stored));
  r->ns = sk_pool_strdup(req->pool, ctl_obj_ns(stored));
  if ((rc = policy_check(r, &doc, NULL, "CREATE")) < 0) {
    audit_refusal(r, r->code, r->msg);
    respond_status(req, r->code, NULL, r->msg, r->k->kind, r->name, NULL);
    goto out;
  }
  if (rc == 1) {
    /* a mutating policy changed the document: check it again */
    json_decref(stored);
    stored = NULL;
    ctl_errs_init(&r->errs);
    if ((rc = ctl_doc_prepare(doc, r->k, r->ns, r->name, &stored, &dk, &r->errs)) < 0) goto invalid;
  }
  json_object_del(stored, "status");
  if (r->dry_run) {
    json_t *c = to_client(r->k, stored);
    respond_obj(req, 201, c, "dry-run");
    json_decref(c);
    goto out;
  }
  rc = ctl_store_create(r->app->store, r->sk->kind, stored, audit_hook, r, &out);
  if (rc == SK_EEXIST) {
    char *msg = sk_pool_printf(req->pool, "%s \"%s\" already exists", r->k->kind, r->name);
    respond_status(req, 409, "AlreadyExists", msg, r->k->kind, r->name, NULL);
    goto out;
  }
  if (rc < 0) {
    char *msg = sk_pool_printf(req->pool, "store: %s", ctl_store_errmsg(r->app->store));
    respond_status(req, 500, NULL, msg, r->k->kind, r->name, NULL);
    goto out;
  }
  {
    json_t *c = to_client(r->k, out);
    respond_obj(req, 201, c, "created");
    json_decref(c);
  }
  goto out;
invalid: {
  char msg[1536];
  ctl_errs_format(&r->errs, msg, sizeof msg);
  char *full = sk_pool_printf(req->pool, "%s \"%s\" is invalid: %s", r->k->kind, ctl_obj_name(doc), msg);
  respond_status(req, 422, "Invalid", full, r->k->kind, ctl_obj_name(doc), &r->errs);
}
out:
  json_decref(doc);
  json_decref(stored);
  json_decref(out);
}

/* ---- replace / patch / status ---- */

static int precondition(rq_t *r, const json_t *doc, const json_t *cur) {
  json_t *v = sk_json_get(doc, "metadata.resourceVersion");
  if (!v || json_is_null(v)) return 0;
  int64_t want = ctl_obj_rv(doc);
  if (want != ctl_obj_rv(cur)) {
    snprintf(r->msg, sizeof r->msg,
             "Operation cannot be fulfilled on %s \"%s\": the object has been modified (resourceVersion %s, "
             "current %lld); please apply your changes to the latest version and try again",
             r->k->plural, r->name, json_is_string(v) ? json_string_value(v) : "?", (long long)ctl_obj_rv(cur));
    r->code = 409;
    return SK_ECONFLICT;
  }
  return 0;
}

static int update_fn(const json_t *cur, json_t **next, void *ud) {
  rq_t *r = ud;
  *next = NULL;
  int rc;
  json_t *cur_client = to_client(r->k, cur);
  json_t *doc = NULL, *stored = NULL;
  int patch = !strcmp(r->req->method, "PATCH");
  if (patch) {
    doc = ctl_merge_patch(cur_client, r->doc);
    /* The precondition comes from the patch itself. */
    if ((rc = precondition(r, r->doc, cur)) < 0) goto out;
    json_t *m = json_object_get(doc, "metadata");
    if (json_is_object(m)) json_object_set(m, "resourceVersion", json_object_get(json_object_get(cur_client, "metadata"), "resourceVersion"));
  } else {
    doc = json_deep_copy(r->doc);
    if ((rc = precondition(r, doc, cur)) < 0) goto out;
  }
  if (r->status_sub) {
    /* Only status changes; the rest stays as stored. */
    json_t *st = json_object_get(doc, "status");
    json_t *n = json_deep_copy(cur);
    if (st && !json_is_null(st)) json_object_set(n, "status", st);
    else json_object_del(n, "status");
    if (json_is_object(st) && sk_json_depth(st) > CTL_MAX_DOC_DEPTH) {
      json_decref(n);
      r->code = 422;
      snprintf(r->msg, sizeof r->msg, "status nested too deeply");
      rc = SK_EINVAL;
      goto out;
    }
    *next = n;
    rc = 0;
    goto out;
  }
  ctl_errs_init(&r->errs);
  if ((rc = ctl_doc_prepare(doc, r->k, r->ns, r->name, &stored, NULL, &r->errs)) < 0) {
    char msg[1536];
    ctl_errs_format(&r->errs, msg, sizeof msg);
    snprintf(r->msg, sizeof r->msg, "%s \"%s\" is invalid: %s", r->k->kind, r->name, msg);
    r->code = 422;
    goto out;
  }
  if ((rc = policy_check(r, &doc, cur_client, "UPDATE")) < 0) goto out;
  if (rc == 1) {
    json_decref(stored);
    stored = NULL;
    ctl_errs_init(&r->errs);
    if ((rc = ctl_doc_prepare(doc, r->k, r->ns, r->name, &stored, NULL, &r->errs)) < 0) {
      char msg[1536];
      ctl_errs_format(&r->errs, msg, sizeof msg);
      snprintf(r->msg, sizeof r->msg, "%s \"%s\" is invalid after mutation: %s", r->k->kind, r->name, msg);
      r->code = 422;
      goto out;
    }
  }
  /* status only changes through the status subresource */
  json_t *st = json_object_get(cur, "status");
  json_t *n = json_deep_copy(stored);
  if (st) json_object_set(n, "status", st);
  else json_object_del(n, "status");
  *next = n;
  rc = 0;
out:
  json_decref(cur_client);
  json_decref(doc);
  json_decref(stored);
  return rc;
}

/* dryRun: the update is computed (validation, policies) and then abandoned. */
static int update_dry_fn(const json_t *cur, json_t **next, void *ud) {
  rq_t *r = ud;
  int rc = update_fn(cur, next, ud);
  if (rc < 0) return rc;
  r->dry_out = *next;
  *next = NULL;
  return SK_ECANCELED;
}

static void do_update(rq_t *r) {
  sk_http_req_t *req = r->req;
  char err[512];
  const char *ct = sk_http_headers_get(&req->headers, "content-type");
  int patch = !strcmp(req->method, "PATCH");
  if (patch && !(ct && (strstr(ct, "merge-patch") || strstr(ct, "yaml")))) {
    respond_status(req, 415, NULL,
                   "PATCH needs content-type application/merge-patch+json (RFC 7386) or application/yaml",
                   r->k->kind, r->name, NULL);
    return;
  }
  int rc = ctl_doc_decode(req->body, req->body_len, patch && ct && strstr(ct, "json") ? "application/json" : ct,
                          &r->doc, err, sizeof err);
  if (rc < 0) {
    respond_status(req, rc == SK_ELIMIT ? 413 : 400, NULL, err, r->k->kind, r->name, NULL);
    return;
  }
  json_t *doc = r->doc;
  ctl_errs_init(&r->errs);
  r->code = 0;
  r->msg[0] = 0;
  json_t *out = NULL;
  int changed = 0;
  rc = ctl_store_update(r->app->store, r->sk->kind, r->ns, r->name, r->dry_run ? update_dry_fn : update_fn, r,
                        r->status_sub ? CTL_UPDATE_STATUS : 0, audit_hook, r, &out, &changed);
  if (r->dry_run && r->dry_out) {
    json_t *c = to_client(r->k, r->dry_out);
    json_decref(r->dry_out);
    respond_obj(req, 200, c, "dry-run");
    json_decref(c);
  } else if (rc == SK_ENOTFOUND) {
    char *msg = sk_pool_printf(req->pool, "%s \"%s\" not found", r->k->plural, r->name);
    respond_status(req, 404, NULL, msg, r->k->kind, r->name, NULL);
  } else if (rc < 0 && r->code) {
    if (r->code == 403) audit_refusal(r, 403, r->msg);
    respond_status(req, r->code, NULL, r->msg, r->k->kind, r->name, r->code == 422 ? &r->errs : NULL);
  } else if (rc < 0) {
    char *msg = sk_pool_printf(req->pool, "store: %s (%s)", ctl_store_errmsg(r->app->store), sk_strerror(rc));
    respond_status(req, 500, NULL, msg, r->k->kind, r->name, NULL);
  } else {
    json_t *c = to_client(r->k, out);
    respond_obj(req, 200, c, changed ? "configured" : "unchanged");
    json_decref(c);
  }
  /* r lives in the request's pool, which the answer may have freed. */
  json_decref(out);
  json_decref(doc);
}

/* ---- delete / get / list ---- */

/* Inside the delete's transaction, after the row went: the policies see
 * the object as stored (in the addressed kind's form) as oldObject with
 * operation DELETE and no object. A denial rolls the delete back; so does
 * a dry run once the policies allowed it (r->dry_out keeps the object). */
static int delete_hook(int64_t rv, const json_t *old_obj, const json_t *new_obj, void *ud) {
  rq_t *r = ud;
  if (old_obj && r->app->pols && r->app->pols->n) {
    json_t *old_client = to_client(r->k, old_obj), *none = NULL;
    int rc = policy_check(r, &none, old_client, "DELETE");
    json_decref(old_client);
    if (rc < 0) {
      if (!r->code) {
        r->code = 500;
        snprintf(r->msg, sizeof r->msg, "policy evaluation failed: %s", sk_strerror(rc));
      }
      return rc;
    }
  }
  if (r->dry_run) {
    r->dry_out = json_incref((json_t *)old_obj);
    return SK_ECANCELED;
  }
  return audit_hook(rv, old_obj, new_obj, ud);
}

static void do_delete(rq_t *r) {
  json_t *out = NULL;
  r->code = 0;
  r->msg[0] = 0;
  int rc = ctl_store_delete(r->app->store, r->sk->kind, r->ns, r->name, delete_hook, r, &out);
  if (r->dry_run && rc == SK_ECANCELED && r->dry_out) {
    /* what the delete would answer: the object as it is */
    json_t *c = to_client(r->k, r->dry_out);
    json_decref(r->dry_out);
    r->dry_out = NULL;
    respond_obj(r->req, 200, c, "dry-run");
    json_decref(c);
  } else if (rc == SK_ENOTFOUND) {
    char *msg = sk_pool_printf(r->req->pool, "%s \"%s\" not found", r->k->plural, r->name);
    respond_status(r->req, 404, NULL, msg, r->k->kind, r->name, NULL);
  } else if (rc < 0 && r->code) {
    if (r->code == 403) audit_refusal(r, 403, r->msg);
    respond_status(r->req, r->code, NULL, r->msg, r->k->kind, r->name, NULL);
  } else if (rc < 0) {
    respond_status(r->req, 500, NULL, ctl_store_errmsg(r->app->store), r->k->kind, r->name, NULL);
  } else {
    json_t *c = to_client(r->k, out);
    respond_obj(r->req, 200, c, "deleted");
    json_decref(c);
  }
  json_decref(out);
}

static void do_get(rq_t *r) {
  json_t *out = NULL;
  int rc = ctl_store_get(r->app->store, r->sk->kind, r->ns, r->name, &out);
  if (rc == SK_ENOTFOUND) {
    char *msg = sk_pool_printf(r->req->pool, "%s \"%s\" not found", r->k->plural, r->name);
    respond_status(r->req, 404, NULL, msg, r->k->kind, r->name, NULL);
  } else if (rc < 0) {
    respond_status(r->req, 500, NULL, ctl_store_errmsg(r->app->store), r->k->kind, r->name, NULL);
  } else {
    json_t *c = to_client(r->k, out);
    respond_obj(r->req, 200, c, NULL);
    json_decref(c);
  }
  json_decref(out);
}

static int parse_list_params(rq_t *r, ctl_selector_t *sel, size_t *limit) {
  char err[256];
  const char *ls = query_get(r->req, "labelSelector");
  if (ctl_selector_parse(ls, sel, err, sizeof err) < 0) {
    respond_status(r->req, 400, NULL, err, r->k->kind, NULL, NULL);
    return -1;
  }
  *limit = 0;
  const char *lim = query_get(r->req, "limit");
  if (lim && *lim) {
    char *end = NULL;
    long v = strtol(lim, &end, 10);
    if (*end || v < 0) {
      respond_status(r->req, 400, NULL, "limit must be a non-negative integer", r->k->kind, NULL, NULL);
      return -1;
    }
    *limit = v > CTL_MAX_LIST_LIMIT ? CTL_MAX_LIST_LIMIT : (size_t)v;
  }
  return 0;
}

static void do_list(rq_t *r) {
  ctl_selector_t *sel = sk_pool_alloc(r->req->pool, sizeof *sel);
  size_t limit;
  if (parse_list_params(r, sel, &limit) < 0) return;
  ctl_list_opts_t o = {.ns = r->ns, .sel = sel, .limit = limit, .cont = query_get(r->req, "continue")};
  json_t *items = NULL;
  char *next = NULL;
  int64_t rv = 0;
  int rc = ctl_store_list(r->app->store, r->sk->kind, &o, &items, &next, &rv);
  if (rc == SK_EINVAL) {
    respond_status(r->req, 400, NULL, "invalid continue token", r->k->kind, NULL, NULL);
    return;
  }
  if (rc < 0) {
    respond_status(r->req, 500, NULL, ctl_store_errmsg(r->app->store), r->k->kind, NULL, NULL);
    return;
  }
  json_t *citems = json_array();
  size_t i;
  json_t *it;
  json_array_foreach(items, i, it) json_array_append_new(citems, to_client(r->k, it));
  json_decref(items);
  char rvs[32];
  snprintf(rvs, sizeof rvs, "%lld", (long long)rv);
  json_t *meta = json_pack("{s:s}", "resourceVersion", rvs);
  if (next) json_object_set_new(meta, "continue", json_string(next));
  free(next);
  char *lk = sk_pool_printf(r->req->pool, "%sList", r->k->kind);
  json_t *list = json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", r->k->api_version, "kind", lk, "metadata", meta,
                           "items", citems);
  respond_obj(r->req, 200, list, NULL);
  json_decref(list);
}

/* ---- watch ---- */

static void watch_unlink(ctl_watch_t *w) {
  ctl_app_t *a = w->app;
  if (w->prev) w->prev->next = w->next;
  else a->watches = w->next;
  if (w->next) w->next->prev = w->prev;
  a->nwatches--;
  sk_gauge_set(a->g_watches, (double)a->nwatches);
}

static void watch_abort(sk_http_req_t *req, void *ud) {
  (void)req;
  ctl_watch_t *w = ud;
  watch_unlink(w);
  free(w);
}

/* Unsent bytes a watch may hold before it is ended instead of queueing
 * more (the client re-watches from its last resourceVersion). */
#define CTL_WATCH_MAX_QUEUED (1024u * 1024u)

static int watch_over(const ctl_watch_t *w) { return sk_http_resp_queued(w->req) >= CTL_WATCH_MAX_QUEUED; }

/* Ends a watch whose client stopped reading: linked says whether it is on
 * the app's list already. */
static void watch_end_slow(ctl_watch_t *w, int linked) {
  ctl_app_t *a = w->app;
  if (a->log) {
    char qs[32];
    snprintf(qs, sizeof qs, "%zu", sk_http_resp_queued(w->req));
    sk_log_kv(a->log, SK_LOG_WARN, "watch not read by its client; closing it", "peer",
              w->req->peer_addr ? w->req->peer_addr : "", "kind", w->k->kind, "queued_bytes", qs, NULL);
  }
  sk_counter_inc(a->c_watch_slow);
  if (linked) watch_unlink(w);
  sk_http_req_on_abort(w->req, NULL, NULL);
  sk_http_resp_end(w->req);
  free(w);
}

/* Ends the watches marked slow. Ending a response may run the next
 * pipelined request on that connection (which may change the list), so
 * this starts over from the head each time. */
static void watch_end_marked(ctl_app_t *a) {
  for (;;) {
    ctl_watch_t *w = a->watches;
    while (w && !w->slow) w = w->next;
    if (!w) return;
    watch_end_slow(w, 1);
  }
}

static int watch_wants(const ctl_watch_t *w, const char *kind, const json_t *obj) {
  if (strcmp(kind, w->skind)) return 0;
  if (w->ns[0] && strcmp(ctl_obj_ns(obj), w->ns)) return 0;
  if (w->name[0] && strcmp(ctl_obj_name(obj), w->name)) return 0;
  return ctl_selector_match(&w->sel, sk_json_get(obj, "metadata.labels"));
}

static int watch_send(ctl_watch_t *w, int64_t rv, const char *type, const json_t *obj) {
  json_t *c = to_client(w->k, obj);
  json_t *ev = json_pack("{s:s, s:o}", "type", type, "object", c);
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(ev, &b);
  sk_buf_puts(&b, "\n");
  int rc = sk_http_resp_write(w->req, b.data, b.len);
  sk_buf_done(&b);
  json_decref(ev);
  if (rv > w->sent_rv) w->sent_rv = rv;
  return rc;
}

static void on_store_event(int64_t rv, const char *type, const char *kind, const json_t *obj, void *ud) {
  ctl_app_t *a = ud;
  sk_gauge_set(a->g_rv, (double)rv);
  ctl_events_publish_change(a->bus, a->log, rv, type, kind, obj);
  if (!strcmp(kind, "Service") || !strcmp(kind, "Route")) ctl_push_changed(a->push);
  int slow = 0;
  for (ctl_watch_t *w = a->watches; w; w = w->next) {
    if (rv <= w->sent_rv || w->slow) continue;
    if (!watch_wants(w, kind, obj)) w->sent_rv = rv;
    else if (watch_over(w)) slow = w->slow = 1;
    else watch_send(w, rv, type, obj);
  }
  if (slow) watch_end_marked(a);
}

static void send_bookmark(ctl_watch_t *w, int64_t rv) {
  char rvs[32];
  snprintf(rvs, sizeof rvs, "%lld", (long long)rv);
  json_t *ev = json_pack("{s:s, s:{s:s, s:s, s:{s:s}}}", "type", "BOOKMARK", "object", "apiVersion",
                         w->k->api_version, "kind", w->k->kind, "metadata", "resourceVersion", rvs);
  sk_buf_t b;
  sk_buf_init(&b);
  sk_json_dump_buf(ev, &b);
  sk_buf_puts(&b, "\n");
  sk_http_resp_write(w->req, b.data, b.len);
  sk_buf_done(&b);
  json_decref(ev);
}

static void heartbeat_cb(uv_timer_t *t) {
  ctl_app_t *a = t->data;
  if (!a->watches) return;
  int64_t rv = ctl_store_rv(a->store);
  int slow = 0;
  for (ctl_watch_t *w = a->watches; w; w = w->next) {
    if (w->slow || watch_over(w)) {
      slow = w->slow = 1;
      continue;
    }
    if (rv > w->sent_rv) w->sent_rv = rv; /* every change up to rv was offered already */
    send_bookmark(w, w->sent_rv);
  }
  if (slow) watch_end_marked(a);
}

typedef struct replay_ctx {
  ctl_watch_t *w;
  int err;
} replay_ctx_t;

static int replay_ev(int64_t rv, const char *type, const char *kind, const char *object_json, void *ud) {
  replay_ctx_t *c = ud;
  json_t *obj = json_loads(object_json, 0, NULL);
  if (!obj) return SK_EPARSE;
  if (watch_wants(c->w, kind, obj)) watch_send(c->w, rv, type, obj);
  else c->w->sent_rv = rv;
  json_decref(obj);
  return 0;
}

static void do_watch(rq_t *r) {
  ctl_app_t *a = r->app;
  sk_http_req_t *req = r->req;
  if (a->drain_cb) {
    respond_status(req, 503, NULL, "draining", r->k->kind, NULL, NULL);
    return;
  }
  if ((int)a->nwatches >= a->cfg->max_watches) {
    respond_status(req, 429, NULL, "too many watches", r->k->kind, NULL, NULL);
    return;
  }
  ctl_watch_t *w = sk_xcalloc(1, sizeof *w);
  w->app = a;
  w->req = req;
  w->k = r->k;
  w->skind = r->sk->kind;
  snprintf(w->ns, sizeof w->ns, "%s", r->ns ? r->ns : "");
  snprintf(w->name, sizeof w->name, "%s", r->name ? r->name : "");
  char err[256];
  if (ctl_selector_parse(query_get(req, "labelSelector"), &w->sel, err, sizeof err) < 0) {
    free(w);
    respond_status(req, 400, NULL, err, r->k->kind, NULL, NULL);
    return;
  }
  const char *rvq = query_get(req, "resourceVersion");
  int64_t from = 0;
  if (rvq && *rvq) {
    char *end = NULL;
    long long v = strtoll(rvq, &end, 10);
    if (*end || v < 0) {
      free(w);
      respond_status(req, 400, NULL, "resourceVersion must be a non-negative integer", r->k->kind, NULL, NULL);
      return;
    }
    from = v;
  }
  if (from > 0 && from < ctl_store_compacted_rv(a->store)) {
    char *msg = sk_pool_printf(req->pool,
                               "too old resource version: %lld (oldest retained %lld): relist and watch again",
                               (long long)from, (long long)ctl_store_compacted_rv(a->store));
    free(w);
    respond_status(req, 410, "Expired", msg, r->k->kind, NULL, NULL);
    return;
  }
  static const sk_http_header_t h[] = {{"content-type", "application/x-ndjson"}, {"cache-control", "no-cache"}};
  if (sk_http_resp_start(req, 200, h, 2) < 0) {
    free(w);
    return;
  }
  if (from > 0) {
    w->sent_rv = from;
    replay_ctx_t c = {w, 0};
    int rc = ctl_store_events_since(a->store, from, replay_ev, &c);
    if (rc < 0) { /* cannot happen after the check above; end the stream */
      free(w);
      sk_http_resp_end(req);
      return;
    }
  } else {
    /* No version: the current objects as ADDED, then changes. */
    ctl_list_opts_t o = {.ns = w->ns[0] ? w->ns : NULL, .sel = &w->sel};
    json_t *items = NULL;
    int64_t rv = 0;
    if (ctl_store_list(a->store, w->skind, &o, &items, NULL, &rv) == 0) {
      size_t i;
      json_t *it;
      json_array_foreach(items, i, it) {
        if (w->name[0] && strcmp(ctl_obj_name(it), w->name)) continue;
        watch_send(w, 0, "ADDED", it);
      }
      json_decref(items);
    }
    w->sent_rv = rv;
  }
  if (watch_over(w)) { /* the initial state alone filled the bound */
    watch_end_slow(w, 0);
    return;
  }
  w->next = a->watches;
  if (a->watches) a->watches->prev = w;
  a->watches = w;
  a->nwatches++;
  sk_gauge_set(a->g_watches, (double)a->nwatches);
  sk_http_req_on_abort(req, watch_abort, w);
}

/* ---- routing ---- */

static void discovery(ctl_app_t *a, sk_http_req_t *req) {
  json_t *res = json_array();
  for (size_t i = 0; i < ctl_kind_count(); i++) {
    const ctl_kind_t *k = ctl_kind_at(i);
    json_array_append_new(res, json_pack("{s:s, s:s, s:s, s:b, s:s}", "name", k->plural, "kind", k->kind,
                                         "apiVersion", k->api_version, "namespaced", k->namespaced, "storedAs",
                                         ctl_kind_storage(k)->kind));
  }
  json_t *o = json_pack("{s:s, s:s, s:o}", "kind", "APIResourceList", "groupVersion", "v1", "resources", res);
  respond_obj(req, 200, o, NULL);
  json_decref(o);
  (void)a;
}

static void proxyconfig(ctl_app_t *a, sk_http_req_t *req) {
  ctl_errs_t *warn = sk_pool_alloc(req->pool, sizeof *warn);
  ctl_errs_init(warn);
  json_t *cfg = NULL;
  int64_t rv = 0;
  if (ctl_compile_proxy(a->store, &cfg, &rv, warn) < 0) {
    respond_status(req, 500, NULL, ctl_store_errmsg(a->store), NULL, NULL, NULL);
    return;
  }
  json_t *w = json_array();
  for (size_t i = 0; i < warn->n; i++)
    json_array_append_new(w, json_pack("{s:s, s:s}", "field", warn->v[i].field, "message", warn->v[i].message));
  char rvs[32];
  snprintf(rvs, sizeof rvs, "%lld", (long long)rv);
  json_t *o = json_pack("{s:s, s:s, s:{s:s}, s:o, s:o, s:I}", "apiVersion", "skiff.dev/v1", "kind", "ProxyConfig",
                        "metadata", "resourceVersion", rvs, "config", cfg, "warnings", w, "warningsDropped",
                        (json_int_t)warn->dropped);
  respond_obj(req, 200, o, NULL);
  json_decref(o);
}

static int split_path(const char *path, char segs[6][CTL_NAME_LEN + 1], size_t *n) {
  *n = 0;
  const char *p = path;
  while (*p == '/') p++;
  while (*p) {
    const char *e = strchr(p, '/');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    if (*n >= 6 || l > CTL_NAME_LEN || l == 0) return -1;
    memcpy(segs[*n], p, l);
    segs[*n][l] = 0;
    (*n)++;
    p += l;
    while (*p == '/') p++;
  }
  return 0;
}

static void handle(sk_http_req_t *req, void *ud) {
  ctl_app_t *a = ud;
  if (!strcmp(req->path, "/healthz")) {
    sk_http_respond_text(req, 200, "text/plain", "ok\n");
    return;
  }
  if (a->ca && ctl_ca_http_route(a->ca, a->auth, a->audit, req)) return;
  if (a->auth && ctl_auth_http_route(a->auth, a->audit, req)) return;
  if (a->audit && a->auth && ctl_audit_http_route(a->audit, a->auth, req)) return;
  if (a->bus && ctl_events_http_route(a->bus, a->auth, a->audit, a->cfg, req)) return;
  if (ctl_push_http_route(a->push, a->auth, a->audit, req)) return;
  if (!strcmp(req->path, "/api/v1/batch")) { /* many writes in one transaction (ctl_batch.h) */
    ctl_batch_env_t be = {a->store, a->auth, a->audit, a->pols, (size_t)a->cfg->max_body};
    count(a, "batch");
    ctl_batch_handle(&be, req);
    return;
  }
  char segs[6][CTL_NAME_LEN + 1];
  size_t n = 0;
  if (split_path(req->path, segs, &n) < 0 || n < 2 || strcmp(segs[0], "api") || strcmp(segs[1], "v1")) {
    char *msg = sk_pool_printf(req->pool, "not found: %.200s (the API is under /api/v1)", req->path);
    respond_status(req, 404, NULL, msg, NULL, NULL, NULL);
    return;
  }
  if (n == 2) {
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
      respond_status(req, 405, NULL, "method not allowed", NULL, NULL, NULL);
      return;
    }
    if (a->auth && ctl_auth_guard(a->auth, a->audit, req, CTL_VERB_LIST, "APIResourceList", NULL, NULL, NULL) < 0)
      return;
    discovery(a, req);
    return;
  }
  if (n == 3 && !strcmp(segs[2], "proxyconfig")) {
    if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
      respond_status(req, 405, NULL, "method not allowed", NULL, NULL, NULL);
      return;
    }
    if (a->auth && ctl_auth_guard(a->auth, a->audit, req, CTL_VERB_GET, "ProxyConfig", NULL, NULL, NULL) < 0)
      return;
    proxyconfig(a, req);
    return;
  }
  rq_t *r = sk_pool_calloc(req->pool, sizeof *r);
  r->app = a;
  r->req = req;
  r->k = ctl_kind_find(segs[2]);
  if (!r->k) {
    char *msg = sk_pool_printf(req->pool, "the server could not find the requested resource kind '%s'", segs[2]);
    respond_status(req, 404, NULL, msg, NULL, NULL, NULL);
    return;
  }
  r->sk = ctl_kind_storage(r->k);
  size_t i = 3;
  if (r->k->namespaced) {
    if (n > i) r->ns = sk_pool_strdup(req->pool, segs[i++]);
  } else {
    r->ns = "";
  }
  if (n > i) r->name = sk_pool_strdup(req->pool, segs[i++]);
  if (n > i && !strcmp(segs[i], "status") && r->name) {
    r->status_sub = 1;
    i++;
  }
  if (n > i) {
    respond_status(req, 404, NULL, "not found", r->k->kind, NULL, NULL);
    return;
  }
  if (r->ns && r->k->namespaced && !ctl_valid_ns(r->ns)) {
    respond_status(req, 400, NULL, "invalid namespace in the URL", r->k->kind, NULL, NULL);
    return;
  }
  const char *wq = query_get(req, "watch");
  int watch = wq && (!strcmp(wq, "true") || !strcmp(wq, "1") || !*wq);
  const char *method = !strcmp(req->method, "HEAD") ? "GET" : req->method;
  int has_name = r->name != NULL;
  if (ctl_verb_from_method(method, has_name, watch && !strcmp(method, "GET"), &r->verb) < 0 ||
      (r->verb == CTL_VERB_CREATE && has_name) ||
      ((r->verb == CTL_VERB_UPDATE || r->verb == CTL_VERB_PATCH || r->verb == CTL_VERB_DELETE) && !has_name) ||
      (r->status_sub && !(r->verb == CTL_VERB_GET || r->verb == CTL_VERB_UPDATE || r->verb == CTL_VERB_PATCH))) {
    static const sk_http_header_t allow[] = {{"allow", "GET, POST, PUT, PATCH, DELETE"}};
    (void)allow;
    char *msg = sk_pool_printf(req->pool, "%s is not allowed on %s", req->method, req->path);
    respond_status(req, 405, NULL, msg, r->k->kind, r->name, NULL);
    count(a, "other");
    return;
  }
  if (a->auth) {
    if (ctl_auth_guard(a->auth, a->audit, req, r->verb, r->sk->kind, r->ns, r->name, &r->p) < 0) return;
  } else {
    snprintf(r->p.name, sizeof r->p.name, "anonymous");
    r->p.role = CTL_ROLE_ADMIN;
  }
  count(a, ctl_verb_name(r->verb));
  {
    const char *dry = query_get(req, "dryRun");
    if (dry && strcmp(dry, "All")) {
      respond_status(req, 400, NULL, "dryRun must be All", r->k->kind, r->name, NULL);
      return;
    }
    r->dry_run = dry != NULL;
    if (r->dry_run && r->verb != CTL_VERB_CREATE && r->verb != CTL_VERB_UPDATE && r->verb != CTL_VERB_PATCH &&
        r->verb != CTL_VERB_DELETE) {
      respond_status(req, 400, NULL, "dryRun is supported on create, replace, patch and delete only", r->k->kind,
                     r->name, NULL);
      return;
    }
  }
  switch (r->verb) {
  case CTL_VERB_CREATE: do_create(r); break;
  case CTL_VERB_UPDATE:
  case CTL_VERB_PATCH: do_update(r); break;
  case CTL_VERB_DELETE: do_delete(r); break;
  case CTL_VERB_GET: do_get(r); break;
  case CTL_VERB_LIST: do_list(r); break;
  case CTL_VERB_WATCH: do_watch(r); break;
  default: respond_status(req, 405, NULL, "method not allowed", r->k->kind, NULL, NULL); break;
  }
}

/* ---- lifecycle ---- */

int ctl_app_reload_policies(ctl_app_t *a, const ctl_config_t *cfg, char *err, size_t errlen) {
  pol_set_t *s = sk_xcalloc(1, sizeof *s);
  pol_set_init(s);
  for (size_t i = 0; i < cfg->policies.n; i++) {
    int rc = pol_set_load_path(s, cfg->policies.v[i], err, errlen);
    if (rc < 0) {
      pol_set_done(s);
      free(s);
      return rc;
    }
  }
  if (a->pols) {
    pol_set_done(a->pols);
    free(a->pols);
  }
  a->pols = s;
  return 0;
}

int ctl_app_new(uv_loop_t *loop, const ctl_app_opts_t *o, ctl_app_t **out, char *err, size_t errlen) {
  const ctl_config_t *cfg = o->cfg;
  ctl_app_t *a = sk_xcalloc(1, sizeof *a);
  int rc;
  *out = NULL;
  a->loop = loop;
  a->cfg = cfg;
  a->log = o->log;
  char path[1024];
  const char *url = cfg->store;
  if (!url || !*url) {
    snprintf(path, sizeof path, "%s%scontrol.db", o->state_dir ? o->state_dir : "", o->state_dir ? "/" : "");
    url = path;
  }
  ctl_store_opts_t so = {.url = url, .durable = cfg->durable, .event_retention = (int64_t)cfg->event_retention};
  if ((rc = ctl_store_open(&so, &a->store, err, errlen)) < 0) goto fail;
  ctl_store_on_event(a->store, on_store_event, a);
  (void)ctl_store_follow(a->store, loop); /* PostgreSQL: other replicas' changes */
  if ((rc = ctl_events_open(loop, &cfg->events, a->store, o->state_dir, o->metrics, a->log, &a->bus,
                            &a->bus_store, err, errlen)) < 0)
    goto fail;
  if ((rc = ctl_app_reload_policies(a, cfg, err, errlen)) < 0) goto fail;
  sk_store_t *db = ctl_store_sqlite(a->store); /* NULL for PostgreSQL: the backend's ops */
  if (cfg->auth.enabled) {
    /* auth.identities first, then the default rules */
    size_t nrules = cfg->auth.identities.n;
    ctl_auth_mtls_rule_t *rules = nrules ? sk_xcalloc(nrules, sizeof *rules) : NULL;
    for (size_t i = 0; i < nrules; i++) {
      const ctl_auth_identity_cfg_t *ic = SK_CFG_LIST_AT(cfg->auth.identities, ctl_auth_identity_cfg_t, i);
      rules[i] = (ctl_auth_mtls_rule_t){.pattern = ic->match, .role = (ctl_role_t)ic->role};
    }
    ctl_auth_opts_t ao = {.store = db, .backend = ctl_store_backend(a->store), .state_dir = o->state_dir,
                          .trust_domain = cfg->auth.trust_domain, .mtls_rules = rules, .nmtls_rules = nrules,
                          .mtls_defaults = 1};
    rc = ctl_auth_open(&ao, &a->auth, err, errlen);
    free(rules);
    if (rc < 0) goto fail;
    ctl_audit_opts_t au = {.store = db, .backend = ctl_store_backend(a->store)};
    if ((rc = ctl_audit_open(&au, &a->audit, err, errlen)) < 0) goto fail;
    ctl_audit_set_bus(a->audit, a->bus);
    if (o->state_dir) {
      char tp[1024];
      rc = ctl_auth_bootstrap(a->auth, tp, sizeof tp);
      if (rc > 0 && a->log) sk_log_kv(a->log, SK_LOG_INFO, "bootstrap admin token written", "path", tp, NULL);
    }
  }
  if (cfg->ca && o->state_dir) {
    ctl_ca_opts_t co = {.state_dir = o->state_dir, .trust_domain = cfg->auth.trust_domain, .store = db,
                        .backend = ctl_store_backend(a->store),
                        .leaf_ttl_s = (int64_t)(cfg->ca_leaf_ttl_ms / 1000)};
    if ((rc = ctl_ca_open(&co, &a->ca, err, errlen)) < 0) goto fail;
  }
  if (cfg->tls.identity || o->admin_identity) {
    if (!a->ca) {
      snprintf(err, errlen, "%s needs the built-in CA (ca: true and a state_dir)",
               cfg->tls.identity ? "tls.identity" : "admin.tls.identity");
      rc = SK_ECONFIG;
      goto fail;
    }
    if (cfg->tls.identity && ((cfg->tls.cert && *cfg->tls.cert) || (cfg->tls.key && *cfg->tls.key))) {
      snprintf(err, errlen, "tls.identity and tls.cert/tls.key exclude each other");
      rc = SK_ECONFIG;
      goto fail;
    }
    if ((rc = ctl_ident_open(loop, a->ca, o->state_dir, 0, a->log, &a->ident, err, errlen)) < 0) goto fail;
  }
  if ((cfg->tls.cert && *cfg->tls.cert) || cfg->tls.identity) {
    int id = cfg->tls.identity;
    sk_tls_opts_t to = {.is_server = 1,
                        .cert_file = id ? sk_ident_cert_path(a->ident) : cfg->tls.cert,
                        .key_file = id ? sk_ident_key_path(a->ident) : cfg->tls.key,
                        .ca_file = cfg->tls.ca && *cfg->tls.ca ? cfg->tls.ca
                                   : a->ca                     ? ctl_ca_bundle_path(a->ca)
                                                               : NULL,
                        .verify = (sk_tls_verify_t)cfg->tls.client_auth};
    if ((rc = sk_tls_ctx_new(&to, &a->tls, err, errlen)) < 0) goto fail;
  }
  if (o->metrics) {
    static const char *const l1[] = {"verb"};
    sk_metrics_counter_family(o->metrics, "skiff_control_requests_total", "Authorized API requests by verb.", l1, 1,
                              &a->requests);
    sk_metrics_gauge(o->metrics, "skiff_control_watches", "Open watch streams.", &a->g_watches);
    sk_metrics_counter(o->metrics, "skiff_control_watch_slow_closed_total",
                       "Watches ended because the client stopped reading.", &a->c_watch_slow);
    sk_metrics_gauge(o->metrics, "skiff_control_resource_version", "The store's current resourceVersion.",
                     &a->g_rv);
    sk_gauge_set(a->g_rv, (double)ctl_store_rv(a->store));
  }
  sk_http_server_opts_t ho = {.host = cfg->listen.host,
                              .port = cfg->listen.port,
                              .tls = a->tls,
                              .max_body_bytes = (size_t)cfg->max_body,
                              .idle_timeout_ms = 0,
                              .server_name = "skiff-control"};
  if ((rc = sk_http_server_new(loop, &ho, handle, a, &a->srv)) < 0) {
    char addr[300];
    sk_config_format_addr(&cfg->listen, addr, sizeof addr);
    snprintf(err, errlen, "cannot listen on %s: %s", addr, sk_strerror(rc));
    goto fail;
  }
  ctl_push_opts_t po = {.store = a->store, .metrics = o->metrics, .log = a->log,
                        .heartbeat_ms = cfg->watch_heartbeat_ms};
  if ((rc = ctl_push_new(loop, &po, &a->push)) < 0) goto fail;
  uv_timer_init(loop, &a->heartbeat);
  a->heartbeat.data = a;
  a->heartbeat_on = 1;
  if (cfg->watch_heartbeat_ms)
    uv_timer_start(&a->heartbeat, heartbeat_cb, cfg->watch_heartbeat_ms, cfg->watch_heartbeat_ms);
  *out = a;
  return 0;
fail:
  ctl_app_free(a);
  return rc;
}

int ctl_app_port(const ctl_app_t *a) { return sk_http_server_port(a->srv); }
ctl_store_t *ctl_app_store(ctl_app_t *a) { return a->store; }
sk_ident_t *ctl_app_ident(ctl_app_t *a) { return a->ident; }
size_t ctl_app_watch_count(const ctl_app_t *a) { return a->nwatches; }
void ctl_app_set_config(ctl_app_t *a, const ctl_config_t *cfg) { a->cfg = cfg; }

static void end_watches(ctl_app_t *a) {
  while (a->watches) {
    ctl_watch_t *w = a->watches;
    watch_unlink(w);
    sk_http_req_on_abort(w->req, NULL, NULL);
    sk_http_resp_end(w->req);
    free(w);
  }
}

static void drained(sk_http_server_t *s, void *ud) {
  (void)s;
  ctl_app_t *a = ud;
  if (a->drain_cb) a->drain_cb(a->drain_ud);
}

void ctl_app_drain(ctl_app_t *a, void (*cb)(void *ud), void *ud) {
  a->drain_cb = cb;
  a->drain_ud = ud;
  end_watches(a);
  ctl_push_end_streams(a->push);
  sk_bus_sse_end_all(a->bus);
  sk_http_server_drain(a->srv, drained, a);
}

static void free_after_close(uv_handle_t *h) { free(h->data); }

void ctl_app_free(ctl_app_t *a) {
  if (!a) return;
  end_watches(a);
  ctl_push_free(a->push);
  sk_bus_sse_end_all(a->bus);
  sk_http_server_free(a->srv);
  sk_tls_ctx_unref(a->tls);
  sk_ident_free(a->ident);
  ctl_ca_free(a->ca);
  ctl_audit_free(a->audit);
  ctl_auth_free(a->auth);
  sk_bus_free(a->bus, 2000);
  sk_store_close(a->bus_store);
  ctl_store_close(a->store);
  if (a->pols) {
    pol_set_done(a->pols);
    free(a->pols);
  }
  if (a->heartbeat_on) {
    uv_timer_stop(&a->heartbeat);
    a->heartbeat.data = a;
    uv_close((uv_handle_t *)&a->heartbeat, free_after_close);
  } else {
    free(a);
  }
}
