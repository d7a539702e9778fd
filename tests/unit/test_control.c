/* skiff-control's resource model: the store (resourceVersion, generation,
 * conflicts, events and retention, selectors, pagination, durability across
 * reopen), the kind registry and validation with field paths, HTTPRoute
 * conversion, merge patch and YAML output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "control.h"
#include "sk_test.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

static json_t *route(const char *ns, const char *name, const char *labels_json, int weight) {
  char buf[1024];
  snprintf(buf, sizeof buf,
           "{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Route\",\"metadata\":{\"name\":\"%s\",\"namespace\":\"%s\","
           "\"labels\":%s},\"spec\":{\"rules\":[{\"backendRefs\":[{\"name\":\"echo\",\"weight\":%d}]}]}}",
           name, ns, labels_json, weight);
  json_t *j = json_loads(buf, 0, NULL);
  assert_non_null(j);
  return j;
}

/* SKIFF_TEST_STORE=postgres://... runs the store tests against PostgreSQL
 * (tests/integration/control_pg.sh): every open starts from empty tables. */
static const char *pg_url(void) {
  const char *u = getenv("SKIFF_TEST_STORE");
  return u && *u ? u : NULL;
}

static void pg_wipe(void) {
  if (!pg_url()) return;
  PGconn *c = PQconnectdb(pg_url());
  if (PQstatus(c) != CONNECTION_OK) fail_msg("SKIFF_TEST_STORE: %s", PQerrorMessage(c));
  PQclear(PQexec(c, "SET client_min_messages = warning"));
  PGresult *r = PQexec(c, "DROP TABLE IF EXISTS meta, objects, events, ctl_audit, ctl_tokens, ctl_join_tokens, skiff_schema");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("wipe: %s", PQresultErrorMessage(r));
  PQclear(r);
  PQfinish(c);
}

static ctl_store_t *open_mem(int64_t retention) {
  pg_wipe();
  ctl_store_opts_t o = {.url = pg_url() ? pg_url() : ":memory:", .durable = 0, .event_retention = retention};
  ctl_store_t *s = NULL;
  char err[256];
  assert_int_equal(ctl_store_open(&o, &s, err, sizeof err), 0);
  return s;
}

typedef struct evlog {
  int n;
  int64_t rvs[64];
  char types[64][16];
} evlog_t;

static void on_ev(int64_t rv, const char *type, const char *kind, const json_t *obj, void *ud) {
  evlog_t *l = ud;
  assert_int_equal(ctl_obj_rv(obj), rv);
  if (strcmp(kind, "Route")) return;
  if (l->n < 64) {
    l->rvs[l->n] = rv;
    snprintf(l->types[l->n], 16, "%s", type);
  }
  l->n++;
}

static int set_weight(const json_t *cur, json_t **next, void *ud) {
  *next = json_deep_copy(cur);
  json_t *w = sk_json_get(*next, "spec.rules.0.backendRefs.0");
  json_object_set_new(w, "weight", json_integer(*(int *)ud));
  return 0;
}

static int set_status(const json_t *cur, json_t **next, void *ud) {
  (void)ud;
  *next = json_deep_copy(cur);
  json_object_set_new(*next, "status", json_pack("{s:s}", "phase", "Accepted"));
  return 0;
}

static int refuse(const json_t *cur, json_t **next, void *ud) {
  (void)cur, (void)ud;
  *next = NULL;
  return SK_ECONFLICT;
}

static void test_store_crud_rv(void **state) {
  (void)state;
  ctl_store_t *s = open_mem(1000);
  evlog_t log = {0};
  ctl_store_on_event(s, on_ev, &log);
  assert_int_equal(ctl_store_rv(s), 0);
  json_t *a = route("default", "a", "{\"app\":\"web\"}", 1), *out = NULL;
  assert_int_equal(ctl_store_create(s, "Route", a, NULL, NULL, &out), 0);
  assert_int_equal(ctl_obj_rv(out), 1);
  assert_int_equal(sk_json_get_int(out, "metadata.generation", 0), 1);
  assert_int_equal(strlen(sk_json_get_str(out, "metadata.uid", "")), 36);
  char uid[64];
  snprintf(uid, sizeof uid, "%s", sk_json_get_str(out, "metadata.uid", ""));
  json_decref(out);
  /* duplicate: refused, and the sequence did not move */
  assert_int_equal(ctl_store_create(s, "Route", a, NULL, NULL, &out), SK_EEXIST);
  assert_int_equal(ctl_store_rv(s), 1);
  /* the same name in another namespace or kind is another object */
  json_t *b = route("other", "a", "{}", 1);
  assert_int_equal(ctl_store_create(s, "Route", b, NULL, NULL, NULL), 0);
  assert_int_equal(ctl_store_create(s, "Service", b, NULL, NULL, NULL), 0);
  assert_int_equal(ctl_store_rv(s), 3);
  /* spec change: new rv, generation 2, uid kept */
  int w = 7, changed = 0;
  assert_int_equal(ctl_store_update(s, "Route", "default", "a", set_weight, &w, 0, NULL, NULL, &out, &changed), 0);
  assert_int_equal(changed, 1);
  assert_int_equal(ctl_obj_rv(out), 4);
  assert_int_equal(sk_json_get_int(out, "metadata.generation", 0), 2);
  assert_string_equal(sk_json_get_str(out, "metadata.uid", ""), uid);
  json_decref(out);
  /* the same again: unchanged, nothing written */
  assert_int_equal(ctl_store_update(s, "Route", "default", "a", set_weight, &w, 0, NULL, NULL, &out, &changed), 0);
  assert_int_equal(changed, 0);
  assert_int_equal(ctl_obj_rv(out), 4);
  json_decref(out);
  assert_int_equal(ctl_store_rv(s), 4);
  /* status: new rv, generation kept */
  assert_int_equal(ctl_store_update(s, "Route", "default", "a", set_status, NULL, CTL_UPDATE_STATUS, NULL, NULL, &out,
                                    &changed),
                   0);
  assert_int_equal(ctl_obj_rv(out), 5);
  assert_int_equal(sk_json_get_int(out, "metadata.generation", 0), 2);
  json_decref(out);
  /* an update function's error aborts and leaves everything as it was */
  assert_int_equal(ctl_store_update(s, "Route", "default", "a", refuse, NULL, 0, NULL, NULL, &out, &changed),
                   SK_ECONFLICT);
  assert_int_equal(ctl_store_rv(s), 5);
  assert_int_equal(ctl_store_update(s, "Route", "default", "zz", set_weight, &w, 0, NULL, NULL, &out, &changed),
                   SK_ENOTFOUND);
  /* delete returns the last state at the deletion's rv */
  assert_int_equal(ctl_store_delete(s, "Route", "default", "a", NULL, NULL, &out), 0);
  assert_int_equal(ctl_obj_rv(out), 6);
  json_decref(out);
  assert_int_equal(ctl_store_get(s, "Route", "default", "a", &out), SK_ENOTFOUND);
  assert_int_equal(ctl_store_delete(s, "Route", "default", "a", NULL, NULL, &out), SK_ENOTFOUND);
  /* events: ADDED a, ADDED other/a, MODIFIED, MODIFIED (status), DELETED (the Service create is not a Route) */
  assert_int_equal(log.n, 5);
  assert_string_equal(log.types[0], "ADDED");
  assert_string_equal(log.types[2], "MODIFIED");
  assert_string_equal(log.types[4], "DELETED");
  for (int i = 1; i < log.n; i++) assert_true(log.rvs[i] > log.rvs[i - 1]);
  json_decref(a);
  json_decref(b);
  ctl_store_close(s);
}

static int hook_fail(int64_t rv, const json_t *o, const json_t *n, void *ud) {
  (void)rv, (void)o, (void)n, (void)ud;
  return SK_EIO;
}

static void test_store_hook_rollback(void **state) {
  (void)state;
  ctl_store_t *s = open_mem(1000);
  json_t *a = route("default", "a", "{}", 1);
  assert_int_equal(ctl_store_create(s, "Route", a, hook_fail, NULL, NULL), SK_EIO);
  json_t *out = NULL;
  assert_int_equal(ctl_store_get(s, "Route", "default", "a", &out), SK_ENOTFOUND);
  assert_int_equal(ctl_store_rv(s), 0);
  json_decref(a);
  ctl_store_close(s);
}

typedef struct collect {
  int n;
  int64_t last;
} collect_t;

static int collect_ev(int64_t rv, const char *type, const char *kind, const char *object_json, void *ud) {
  (void)type, (void)kind;
  collect_t *c = ud;
  assert_true(rv > c->last);
  assert_non_null(strstr(object_json, "\"resourceVersion\""));
  c->last = rv;
  c->n++;
  return 0;
}

static void test_store_events_retention(void **state) {
  (void)state;
  ctl_store_t *s = open_mem(16);
  for (int i = 0; i < 40; i++) {
    char name[16];
    snprintf(name, sizeof name, "r%02d", i);
    json_t *r = route("default", name, "{}", 1);
    assert_int_equal(ctl_store_create(s, "Route", r, NULL, NULL, NULL), 0);
    json_decref(r);
  }
  assert_int_equal(ctl_store_rv(s), 40);
  assert_int_equal(ctl_store_compacted_rv(s), 24);
  collect_t c = {0, 0};
  assert_int_equal(ctl_store_events_since(s, 30, collect_ev, &c), 0);
  assert_int_equal(c.n, 10);
  assert_int_equal(c.last, 40);
  c = (collect_t){0, 24};
  assert_int_equal(ctl_store_events_since(s, 24, collect_ev, &c), 0);
  assert_int_equal(c.n, 16);
  c = (collect_t){0, 0};
  assert_int_equal(ctl_store_events_since(s, 23, collect_ev, &c), SK_ERANGE);
  assert_int_equal(ctl_store_events_since(s, 0, collect_ev, &c), SK_ERANGE);
  ctl_store_close(s);
}

static void test_store_list_selectors_pages(void **state) {
  (void)state;
  ctl_store_t *s = open_mem(1000);
  const char *labels[] = {"{\"app\":\"web\",\"tier\":\"front\"}", "{\"app\":\"api\"}", "{\"app\":\"web\"}", "{}"};
  for (int i = 0; i < 12; i++) {
    char name[16];
    snprintf(name, sizeof name, "r%02d", i);
    json_t *r = route(i % 2 ? "b" : "a", name, labels[i % 4], 1);
    assert_int_equal(ctl_store_create(s, "Route", r, NULL, NULL, NULL), 0);
    json_decref(r);
  }
  ctl_selector_t sel;
  char err[256];
  json_t *items = NULL;
  char *next = NULL;
  int64_t rv;
  struct {
    const char *sel;
    int want;
  } cases[] = {{"", 12},
               {"app=web", 6},
               {"app==web,tier=front", 3},
               {"app!=web", 6},
               {"app in (api, web)", 9},
               {"app notin (web)", 6},
               {"tier", 3},
               {"!tier", 9},
               {"!app", 3}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(ctl_selector_parse(cases[i].sel, &sel, err, sizeof err), 0);
    ctl_list_opts_t o = {.sel = &sel};
    assert_int_equal(ctl_store_list(s, "Route", &o, &items, &next, &rv), 0);
    if ((int)json_array_size(items) != cases[i].want) fail_msg("selector '%s': %zu items", cases[i].sel, json_array_size(items));
    assert_null(next);
    json_decref(items);
  }
  assert_true(ctl_selector_parse("app in (a", &sel, err, sizeof err) < 0);
  assert_non_null(strstr(err, "labelSelector"));
  assert_true(ctl_selector_parse("=x", &sel, err, sizeof err) < 0);
  assert_true(ctl_selector_parse("a=b,", &sel, err, sizeof err) < 0);
  /* namespace filter */
  ctl_list_opts_t on = {.ns = "b"};
  assert_int_equal(ctl_store_list(s, "Route", &on, &items, &next, &rv), 0);
  assert_int_equal(json_array_size(items), 6);
  assert_int_equal(rv, 12);
  json_decref(items);
  /* pages of 5 with a selector: every match exactly once, in order */
  assert_int_equal(ctl_selector_parse("app", &sel, err, sizeof err), 0);
  char *cont = NULL;
  int seen = 0, pages = 0;
  char prev[64] = "";
  do {
    ctl_list_opts_t o = {.sel = &sel, .limit = 5, .cont = cont};
    assert_int_equal(ctl_store_list(s, "Route", &o, &items, &next, &rv), 0);
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it) {
      char key[64];
      snprintf(key, sizeof key, "%s/%s", ctl_obj_ns(it), ctl_obj_name(it));
      assert_true(strcmp(key, prev) > 0);
      snprintf(prev, sizeof prev, "%s", key);
      seen++;
    }
    json_decref(items);
    free(cont);
    cont = next;
    pages++;
  } while (cont && pages < 10);
  assert_int_equal(seen, 9);
  assert_int_equal(pages, 2);
  ctl_list_opts_t bad = {.cont = "zz"};
  assert_int_equal(ctl_store_list(s, "Route", &bad, &items, &next, &rv), SK_EINVAL);
  ctl_store_close(s);
}

static void test_store_reopen(void **state) {
  (void)state;
  char path[512];
  snprintf(path, sizeof path, "sqlite:%s/ctl.db", sk_test_tmpdir());
  pg_wipe();
  ctl_store_opts_t o = {.url = pg_url() ? pg_url() : path, .durable = 1};
  ctl_store_t *s = NULL;
  char err[256];
  assert_int_equal(ctl_store_open(&o, &s, err, sizeof err), 0);
  json_t *a = route("default", "a", "{}", 1);
  assert_int_equal(ctl_store_create(s, "Route", a, NULL, NULL, NULL), 0);
  ctl_store_close(s);
  assert_int_equal(ctl_store_open(&o, &s, err, sizeof err), 0);
  assert_int_equal(ctl_store_rv(s), 1);
  json_t *b = route("default", "b", "{}", 1), *out = NULL;
  assert_int_equal(ctl_store_create(s, "Route", b, NULL, NULL, &out), 0);
  assert_int_equal(ctl_obj_rv(out), 2);
  json_decref(out);
  ctl_store_close(s);
  json_decref(a);
  json_decref(b);
  /* nobody listens on port 1: a clear error naming the server, never the password */
  ctl_store_opts_t pg = {.url = "postgres://skiff:s3cret@127.0.0.1:1/x"};
  assert_int_equal(ctl_store_open(&pg, &s, err, sizeof err), SK_ESTORE);
  assert_non_null(strstr(err, "postgres://skiff:***@127.0.0.1:1/x"));
  assert_null(strstr(err, "s3cret"));
}

static void test_pg_redact(void **state) {
  (void)state;
  char out[256];
  ctl_backend_pg_redact("postgres://u:pw@h:5432/db", out, sizeof out);
  assert_string_equal(out, "postgres://u:***@h:5432/db");
  ctl_backend_pg_redact("postgresql://u@h/db?sslmode=require&password=pw&x=1", out, sizeof out);
  assert_string_equal(out, "postgresql://u@h/db?sslmode=require&password=***&x=1");
  ctl_backend_pg_redact("postgres://h/db", out, sizeof out);
  assert_string_equal(out, "postgres://h/db");
  ctl_backend_pg_redact("postgres://u:p:w@x@h/db", out, sizeof out);
  assert_string_equal(out, "postgres://u:***@h/db");
  ctl_backend_pg_redact("postgres://u:pw@h/db", out, 12);
  assert_null(strstr(out, "pw"));
}

/* ---- validation ---- */

static void check_invalid(const char *yaml, const char *field, const char *msg_part) {
  json_t *doc = NULL;
  char err[512];
  if (ctl_doc_decode(yaml, strlen(yaml), "application/yaml", &doc, err, sizeof err) < 0) fail_msg("decode: %s", err);
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  json_t *stored = NULL;
  int rc = ctl_doc_prepare(doc, NULL, NULL, NULL, &stored, NULL, &errs);
  if (rc >= 0) fail_msg("accepted, wanted %s", field);
  int found = 0;
  for (size_t i = 0; i < errs.n; i++)
    if (!strcmp(errs.v[i].field, field) && strstr(errs.v[i].message, msg_part)) found = 1;
  if (!found) {
    char all[2048];
    ctl_errs_format(&errs, all, sizeof all);
    fail_msg("wanted %s: ...%s...; got: %s", field, msg_part, all);
  }
  json_decref(doc);
}

#define ROUTE_HEAD "apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: web}\nspec:\n"

static void test_validation_paths(void **state) {
  (void)state;
  check_invalid(ROUTE_HEAD "  rules:\n  - backendRefs: [{name: a}, {name: b, weight: 2000000}]\n",
                "spec.rules[0].backendRefs[1].weight", "must be 0..1000000");
  check_invalid(ROUTE_HEAD "  rules:\n  - backendRefs: []\n", "spec.rules[0].backendRefs", "at least 1");
  check_invalid(ROUTE_HEAD "  rules: []\n", "spec.rules", "at least 1");
  check_invalid(ROUTE_HEAD "  rules:\n  - matches: [{path: {type: Glob, value: /x}}]\n    backendRefs: [{name: a}]\n",
                "spec.rules[0].matches[0].path.type", "must be one of Exact, PathPrefix, RegularExpression");
  check_invalid(ROUTE_HEAD "  rules:\n  - matches: [{path: {value: x}}]\n    backendRefs: [{name: a}]\n",
                "spec.rules[0].matches[0].path.value", "must start with '/'");
  check_invalid(ROUTE_HEAD "  hostnames: [\"Bad_Host\"]\n  rules:\n  - backendRefs: [{name: a}]\n", "spec.hostnames[0]",
                "DNS name");
  check_invalid(ROUTE_HEAD "  rules:\n  - backendRefs: [{name: a}]\n    filters: [{type: RequestMirror}]\n",
                "spec.rules[0].filters[0].type", "must be one of");
  check_invalid(ROUTE_HEAD "  rules:\n  - backendRefs: [{name: a}]\n    timeout: forever\n", "spec.rules[0].timeout", "");
  check_invalid(ROUTE_HEAD "  rules:\n  - backendRefs: [{name: a}]\n  extra: 1\n", "spec.extra", "unknown");
  check_invalid("apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: Web_1}\nspec: {rules: [{backendRefs: [{name: a}]}]}\n",
                "metadata.name", "DNS subdomain");
  check_invalid("apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: w, labels: {\"a b\": x}}\nspec: {rules: [{backendRefs: [{name: a}]}]}\n",
                "metadata.labels[a b]", "invalid key");
  check_invalid("apiVersion: skiff.dev/v2\nkind: Route\nmetadata: {name: w}\n", "apiVersion", "not served");
  check_invalid("apiVersion: skiff.dev/v1\nkind: Nope\nmetadata: {name: w}\n", "kind", "unknown kind");
  check_invalid("apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: s}\nspec: {endpoints: [\"nohost\"]}\n",
                "spec.endpoints[0]", "host:port");
  check_invalid("apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: s}\nspec: {endpoints: [\"a:1\"], lb: random}\n",
                "spec.lb", "must be one of");
  check_invalid("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: h}\n"
                "spec: {rules: [{backendRefs: [{name: a}], sessionPersistence: {}}]}\n",
                "spec.rules[0].sessionPersistence", "unsupported");
  /* a good one passes and gets the default namespace */
  const char *good = ROUTE_HEAD "  rules:\n  - backendRefs: [{name: a, weight: 0}]\n";
  json_t *doc = NULL, *stored = NULL;
  char err[256];
  assert_int_equal(ctl_doc_decode(good, strlen(good), NULL, &doc, err, sizeof err), 0);
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  assert_int_equal(ctl_doc_prepare(doc, ctl_kind_find("routes"), NULL, NULL, &stored, NULL, &errs), 0);
  assert_string_equal(ctl_obj_ns(stored), "default");
  json_decref(stored);
  /* URL and document must agree */
  ctl_errs_init(&errs);
  assert_true(ctl_doc_prepare(doc, ctl_kind_find("routes"), "other", NULL, &stored, NULL, &errs) < 0);
  assert_string_equal(errs.v[0].field, "metadata.namespace");
  ctl_errs_init(&errs);
  assert_true(ctl_doc_prepare(doc, ctl_kind_find("services"), NULL, NULL, &stored, NULL, &errs) < 0);
  json_decref(doc);
  /* bounds and syntax */
  assert_int_equal(ctl_doc_decode("{\"a\":", 5, "application/json", &doc, err, sizeof err), SK_EPARSE);
  assert_int_equal(ctl_doc_decode("[1]", 3, "application/json", &doc, err, sizeof err), SK_EPARSE);
  assert_int_equal(ctl_doc_decode("", 0, NULL, &doc, err, sizeof err), SK_EPARSE);
}

static void test_registry(void **state) {
  (void)state;
  assert_string_equal(ctl_kind_find("Route")->plural, "routes");
  assert_string_equal(ctl_kind_find("httproutes")->kind, "HTTPRoute");
  assert_string_equal(ctl_kind_storage(ctl_kind_find("httproute"))->kind, "Route");
  assert_null(ctl_kind_find("canaries"));
  static const ctl_kind_t canary = {.kind = "Canary", .plural = "canaries", .api_version = "skiff.dev/v1",
                                    .namespaced = 1};
  assert_int_equal(ctl_kind_register(&canary), 0);
  assert_int_equal(ctl_kind_register(&canary), SK_EEXIST);
  assert_ptr_equal(ctl_kind_find("canaries"), &canary);
  assert_ptr_equal(ctl_kind_for_doc("skiff.dev/v1", "Canary"), &canary);
  assert_null(ctl_kind_for_doc("flagger.app/v1beta1", "Canary"));
}

static void test_httproute_conversion(void **state) {
  (void)state;
  const char *y = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                  "metadata: {name: split, namespace: shop, labels: {app: shop}}\n"
                  "spec:\n  parentRefs: [{name: edge}]\n  hostnames: [shop.example.com]\n  rules:\n"
                  "  - matches:\n    - path: {type: PathPrefix, value: /api}\n"
                  "      headers: [{name: x-canary, value: \"1\"}]\n      queryParams: [{type: Exact, name: v, value: \"2\"}]\n"
                  "      method: GET\n"
                  "    filters:\n    - type: URLRewrite\n      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}\n"
                  "    - type: RequestHeaderModifier\n      requestHeaderModifier: {add: [{name: x-a, value: b}], remove: [x-drop]}\n"
                  "    backendRefs: [{name: v1, port: 80, weight: 90}, {name: v2, port: 80, weight: 10}]\n"
                  "    timeouts: {request: 3s}\n";
  json_t *doc = NULL, *stored = NULL;
  char err[256];
  assert_int_equal(ctl_doc_decode(y, strlen(y), "application/yaml", &doc, err, sizeof err), 0);
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  const ctl_kind_t *k = NULL;
  if (ctl_doc_prepare(doc, NULL, NULL, NULL, &stored, &k, &errs) < 0) {
    char all[1024];
    ctl_errs_format(&errs, all, sizeof all);
    fail_msg("%s", all);
  }
  assert_string_equal(k->kind, "HTTPRoute");
  assert_string_equal(sk_json_get_str(stored, "kind", ""), "Route");
  assert_string_equal(sk_json_get_str(stored, "apiVersion", ""), "skiff.dev/v1");
  assert_string_equal(sk_json_get_str(stored, "spec.rules.0.timeout", ""), "3s");
  assert_null(sk_json_get(stored, "spec.rules.0.timeouts"));
  assert_int_equal(sk_json_get_int(stored, "spec.rules.0.backendRefs.1.weight", 0), 10);
  assert_string_equal(sk_json_get_str(stored, "metadata.annotations.skiff\\.dev/source-kind", "x"), "x");
  assert_string_equal(json_string_value(json_object_get(sk_json_get(stored, "metadata.annotations"),
                                                        "skiff.dev/source-kind")),
                      "HTTPRoute");
  /* and back: the document as it was sent */
  json_t *back = NULL;
  assert_int_equal(k->from_stored(stored, &back), 0);
  if (!json_equal(back, doc)) {
    char *a = json_dumps(back, JSON_COMPACT), *b = json_dumps(doc, JSON_COMPACT);
    fail_msg("round trip differs:\n%s\n%s", a, b);
  }
  json_decref(back);
  json_decref(stored);
  json_decref(doc);
}

static void test_merge_patch_and_yaml(void **state) {
  (void)state;
  json_t *t = json_loads("{\"a\":\"b\",\"c\":{\"d\":\"e\",\"f\":\"g\"},\"l\":[1,2]}", 0, NULL);
  json_t *p = json_loads("{\"a\":\"z\",\"c\":{\"f\":null},\"l\":[3],\"n\":{\"x\":1}}", 0, NULL);
  json_t *r = ctl_merge_patch(t, p);
  json_t *want = json_loads("{\"a\":\"z\",\"c\":{\"d\":\"e\"},\"l\":[3],\"n\":{\"x\":1}}", 0, NULL);
  assert_true(json_equal(r, want));
  assert_string_equal(sk_json_get_str(t, "c.f", ""), "g"); /* target untouched */
  json_decref(t), json_decref(p), json_decref(r), json_decref(want);
  /* YAML output reads back as the same value, tricky scalars included */
  json_t *v = json_loads("{\"s\":\"true\",\"n\":\"123\",\"e\":\"\",\"c\":\"a: b\",\"h\":\"#x\",\"t\":\"2024-01-01T00:00:00Z\","
                         "\"u\":\"caf\\u00e9\",\"nl\":\"a\\nb\",\"nel\":\"a\\u0085b\\u2028c\\u2029d\\ufeffe\\u0080\",\"nul\":\"a\\u0000b\",\"i\":5,\"f\":1.5,\"b\":false,\"z\":null,\"eo\":{},\"ea\":[],"
                         "\"arr\":[{\"k\":1,\"m\":[1,[2,3]]},\"x\"],\"o\":{\"p\":{\"q\":\"r\"}}}",
                         JSON_ALLOW_NUL, NULL);
  assert_non_null(v);
  sk_buf_t b;
  sk_buf_init(&b);
  ctl_yaml_emit(v, &b);
  json_t *back = NULL;
  char err[256];
  assert_int_equal(sk_yaml_load(b.data, b.len, NULL, &back, err, sizeof err), 0);
  if (!json_equal(v, back)) fail_msg("yaml round trip:\n%s", sk_buf_cstr(&b));
  sk_buf_done(&b);
  json_decref(v), json_decref(back);
  /* Status bodies carry causes */
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  ctl_errs_add(&errs, "spec.x", "bad %d", 1);
  json_t *st = ctl_status_new(422, "Invalid", "msg", "Route", "web", &errs);
  assert_string_equal(sk_json_get_str(st, "kind", ""), "Status");
  assert_string_equal(sk_json_get_str(st, "status", ""), "Failure");
  assert_int_equal(sk_json_get_int(st, "code", 0), 422);
  assert_string_equal(sk_json_get_str(st, "details.causes.0.field", ""), "spec.x");
  assert_string_equal(sk_json_get_str(st, "details.causes.0.message", ""), "bad 1");
  json_decref(st);
  /* a field or message cut by its buffer mid-character stays valid UTF-8,
   * and so does a joined message cut short (this used to abort) */
  char longname[1200] = "";
  for (int i = 0; i < 399; i++) strcat(longname, "\xd0\x86"); /* 2-byte characters, 798 bytes */
  strcat(longname, "x");
  ctl_errs_init(&errs);
  for (int i = 0; i < 4; i++) ctl_errs_add(&errs, longname + 1, "name %s is odd", longname + (i & 1));
  char msg[777];
  ctl_errs_format(&errs, msg, sizeof msg);
  st = ctl_status_new(422, "Invalid", msg, "Route", longname + 1, &errs);
  assert_non_null(st);
  assert_true(strlen(sk_json_get_str(st, "message", "")) > 700);
  assert_true(strlen(sk_json_get_str(st, "details.causes.3.field", "")) > 200);
  assert_true(strlen(sk_json_get_str(st, "details.causes.3.message", "")) > 400);
  json_decref(st);
}

static void put_doc(ctl_store_t *s, const char *yaml) {
  json_t *doc = NULL, *stored = NULL;
  char err[256];
  assert_int_equal(ctl_doc_decode(yaml, strlen(yaml), "application/yaml", &doc, err, sizeof err), 0);
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  const ctl_kind_t *k = NULL;
  assert_int_equal(ctl_doc_prepare(doc, NULL, NULL, NULL, &stored, &k, &errs), 0);
  assert_int_equal(ctl_store_create(s, ctl_kind_storage(k)->kind, stored, NULL, NULL, NULL), 0);
  json_decref(doc);
  json_decref(stored);
}

static void test_compile_proxy(void **state) {
  (void)state;
  ctl_store_t *s = open_mem(1000);
  put_doc(s, "apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: v1}\n"
             "spec: {endpoints: [\"127.0.0.1:1\"], lb: least_request, healthCheck: {path: /h, interval: 1s}}\n");
  put_doc(s, "apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: v2}\nspec: {endpoints: [\"127.0.0.1:2\"]}\n");
  put_doc(s, "apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: a}\nspec:\n  hostnames: [a.example, b.example]\n"
             "  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}]\n"
             "    backendRefs: [{name: v1, weight: 3}, {name: gone}]\n"
             "  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x, value: y}]}]\n"
             "    filters:\n    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}\n"
             "    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}], remove: [x-c]}}\n"
             "    backendRefs: [{name: v2}]\n    timeout: 2s\n");
  put_doc(s, "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: b}\n"
             "spec: {rules: [{matches: [{path: {type: Exact, value: /x}}], backendRefs: [{name: gone}]},"
             " {matches: [{path: {type: Exact, value: /exact}}], backendRefs: [{name: v1}]}]}\n");
  json_t *cfg = NULL;
  int64_t rv = 0;
  ctl_errs_t warn;
  ctl_errs_init(&warn);
  assert_int_equal(ctl_compile_proxy(s, &cfg, &rv, &warn), 0);
  assert_int_equal(rv, 4);
  json_t *cl = json_object_get(cfg, "clusters");
  assert_int_equal(json_array_size(cl), 2);
  assert_string_equal(sk_json_get_str(cl, "0.name", ""), "default/v1");
  assert_string_equal(sk_json_get_str(cl, "0.lb", ""), "least_request");
  assert_string_equal(sk_json_get_str(cl, "0.health_check.path", ""), "/h");
  json_t *rts = json_object_get(cfg, "routes");
  /* exact first, then the longest prefix, then "/" once per hostname */
  const char *order[] = {"default/b/1/0", "default/a/1/0/0", "default/a/1/0/1", "default/a/0/0/0", "default/a/0/0/1"};
  assert_int_equal(json_array_size(rts), 5);
  for (size_t i = 0; i < 5; i++) assert_string_equal(sk_json_get_str(json_array_get(rts, i), "name", ""), order[i]);
  json_t *api = json_array_get(rts, 1);
  assert_string_equal(sk_json_get_str(api, "match.host", ""), "a.example");
  assert_string_equal(sk_json_get_str(api, "match.path.prefix", ""), "/api");
  assert_string_equal(sk_json_get_str(api, "match.headers.0.exact", ""), "y");
  assert_string_equal(sk_json_get_str(api, "rewrite.prefix", ""), "/");
  assert_string_equal(sk_json_get_str(api, "request_headers.add.x-a", ""), "b");
  assert_string_equal(sk_json_get_str(api, "request_headers.remove.0", ""), "x-c");
  assert_string_equal(sk_json_get_str(api, "timeout", ""), "2s");
  json_t *slash = json_array_get(rts, 3);
  assert_int_equal(json_array_size(json_object_get(slash, "backends")), 1);
  assert_int_equal(sk_json_get_int(slash, "backends.0.weight", 0), 3);
  /* warnings: the missing backend of a, and b's rule 0 left out */
  assert_int_equal(warn.n, 3);
  assert_string_equal(warn.v[0].field, "Route default/a: spec.rules[0].backendRefs[1]");
  assert_non_null(strstr(warn.v[0].message, "default/gone not found"));
  assert_string_equal(warn.v[2].field, "Route default/b: spec.rules[0]");
  json_decref(cfg);
  ctl_store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_store_crud_rv),
      cmocka_unit_test(test_store_hook_rollback),
      cmocka_unit_test(test_store_events_retention),
      cmocka_unit_test(test_store_list_selectors_pages),
      cmocka_unit_test(test_store_reopen),
      cmocka_unit_test(test_pg_redact),
      cmocka_unit_test(test_validation_paths),
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_httproute_conversion),
      cmocka_unit_test(test_merge_patch_and_yaml),
      cmocka_unit_test(test_compile_proxy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
