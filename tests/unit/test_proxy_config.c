/* Unit tests: skiff-proxy's configuration model (px_config.c) and route
 * matching (px_route.c). A good config builds into the expected model; bad
 * ones fail with every error named by its field path; routes match first
 * to last in the listener's order. */
#include "sk_test.h"

#include <stdlib.h>
#include <string.h>

#include "px_int.h"
#include "skiff/err.h"

static json_t *js(const char *text) {
  json_error_t e;
  json_t *j = json_loads(text, 0, &e);
  if (!j) fail_msg("bad test json: %s: %s", text, e.text);
  return j;
}

/* builds text; returns the rc, the config in *out (may be NULL), the errors in errs */
static int build(const char *text, sk_config_errors_t *errs, px_config_t **out) {
  json_t *j = js(text);
  *out = NULL;
  int rc = px_config_build(j, NULL, "test.yaml", 7, errs, out);
  json_decref(j);
  return rc;
}

static int has_err(const sk_config_errors_t *e, const char *want) {
  char buf[1024];
  for (size_t i = 0; i < e->n; i++) {
    sk_config_errors_format(e, i, buf, sizeof buf);
    if (strstr(buf, want)) return 1;
  }
  return 0;
}

static void print_errs(const sk_config_errors_t *e) {
  char buf[1024];
  for (size_t i = 0; i < e->n; i++) {
    sk_config_errors_format(e, i, buf, sizeof buf);
    print_message("  %s\n", buf);
  }
}

#define EXPECT_ERRS(text, ...)                                                              \
  do {                                                                                      \
    sk_config_errors_t e_;                                                                  \
    sk_config_errors_init(&e_);                                                             \
    px_config_t *c_ = NULL;                                                                 \
    int rc_ = build(text, &e_, &c_);                                                        \
    assert_int_equal(rc_, SK_ECONFIG);                                                      \
    assert_null(c_);                                                                        \
    const char *want_[] = {__VA_ARGS__};                                                    \
    for (size_t i_ = 0; i_ < sizeof want_ / sizeof want_[0]; i_++) {                        \
      if (!has_err(&e_, want_[i_])) {                                                       \
        print_errs(&e_);                                                                    \
        fail_msg("no error containing \"%s\"", want_[i_]);                                  \
      }                                                                                     \
    }                                                                                       \
    sk_config_errors_done(&e_);                                                             \
  } while (0)

static const char *good =
    "{\"listeners\":["
    "  {\"name\":\"in\",\"address\":\"127.0.0.1:0\",\"routes\":[\"special\",\"api\",\"default\"]},"
    "  {\"name\":\"rev\",\"address\":\"127.0.0.1:0\",\"routes\":[\"default\",\"special\"]},"
    "  {\"name\":\"link\",\"address\":\"127.0.0.1:0\",\"protocol\":\"tcp\",\"cluster\":\"v1\","
    "   \"fault\":{\"delay\":\"20ms\",\"drop_percent\":5}}],"
    " \"clusters\":["
    "  {\"name\":\"v1\",\"endpoints\":[\"127.0.0.1:8081\",\"localhost:8082\"],\"lb\":\"least_request\","
    "   \"connect_timeout\":\"2s\",\"max_connections\":16,"
    "   \"circuit_breaker\":{\"max_requests\":5},\"outlier\":{\"consecutive_5xx\":3}},"
    "  {\"name\":\"v2\",\"endpoints\":[\"127.0.0.1:8083\"],\"protocol\":\"h2\"}],"
    " \"routes\":["
    "  {\"name\":\"api\",\"match\":{\"host\":\"*.example.com\",\"path\":{\"prefix\":\"/api/\"},"
    "   \"method\":[\"GET\",\"POST\"],\"headers\":[{\"name\":\"x-env\",\"exact\":\"prod\"},"
    "   {\"name\":\"x-debug\",\"present\":false}],\"query\":[{\"name\":\"lang\",\"regex\":\"^(en|de)$\"}]},"
    "   \"backends\":[{\"cluster\":\"v1\",\"weight\":90},{\"cluster\":\"v2\",\"weight\":10}],"
    "   \"overrides\":[{\"header\":\"x-canary\",\"value\":\"always\",\"cluster\":\"v2\"}],"
    "   \"rewrite\":{\"prefix\":\"/\"},\"timeout\":\"3s\","
    "   \"request_headers\":{\"add\":{\"x-via\":\"skiff\"},\"remove\":[\"x-internal\"]},"
    "   \"retry\":{\"attempts\":3,\"per_try_timeout\":\"500ms\"},"
    "   \"rate_limit\":{\"requests_per_unit\":100}},"
    "  {\"name\":\"special\",\"match\":{\"path\":{\"exact\":\"/api/special\"}},\"cluster\":\"v2\"},"
    "  {\"name\":\"versioned\",\"match\":{\"path\":{\"regex\":\"^/v[0-9]+/\"}},\"cluster\":\"v2\"},"
    "  {\"name\":\"default\",\"match\":{\"path\":\"/\"},\"cluster\":\"v1\","
    "   \"mirror\":{\"cluster\":\"v2\",\"percent\":5}}]}";

static void test_good_config_builds(void **state) {
  (void)state;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  px_config_t *c = NULL;
  int rc = build(good, &e, &c);
  if (rc < 0) print_errs(&e);
  assert_int_equal(rc, 0);
  assert_non_null(c);
  assert_int_equal(e.n, 0);
  assert_int_equal(c->version, 7);
  assert_int_equal(c->nlisteners, 3);
  assert_int_equal(c->nclusters, 2);
  assert_int_equal(c->nroutes, 4);

  /* clusters */
  int v1 = px_config_find_cluster(c, "v1"), v2 = px_config_find_cluster(c, "v2");
  assert_int_equal(v1, 0);
  assert_int_equal(v2, 1);
  assert_int_equal(px_config_find_cluster(c, "nope"), -1);
  const px_cluster_t *c1 = &c->clusters[v1];
  assert_int_equal(c1->nendpoints, 2);
  assert_string_equal(c1->endpoints[1].host, "localhost");
  assert_int_equal(c1->endpoints[1].port, 8082);
  assert_int_equal(c1->lb, PX_LB_LEAST_REQUEST);
  assert_int_equal(c1->connect_timeout_ms, 2000);
  assert_int_equal(c1->max_conns, 16);
  assert_int_equal(c1->breaker.max[PX_BRK_REQUESTS], 5);
  assert_true(c1->outlier.enabled);
  assert_int_equal(c1->outlier.consecutive_5xx, 3);
  assert_int_equal(c->clusters[v2].h2, 1);
  assert_null(c->clusters[v2].tls);

  /* routes */
  const px_route_t *api = &c->routes[0];
  assert_string_equal(api->name, "api");
  assert_int_equal(api->index, 0);
  assert_int_equal(api->nbackends, 2);
  assert_int_equal(api->total_weight, 100);
  assert_int_equal(api->backends[1].cluster, v2);
  assert_int_equal(api->backends[1].weight, 10);
  assert_int_equal(api->noverrides, 1);
  assert_string_equal(api->overrides[0].value, "always");
  assert_string_equal(api->rewrite_prefix, "/");
  assert_int_equal(api->timeout_ms, 3000);
  assert_int_equal(api->req_hdrs.nadd, 1);
  assert_int_equal(api->req_hdrs.nremove, 1);
  assert_true(api->retry.enabled);
  assert_int_equal(api->retry.attempts, 3);
  assert_int_equal(api->retry.per_try_timeout_ms, 500);
  assert_true(api->rate_limit.enabled);
  assert_int_equal(api->match.nmethods, 2);
  assert_int_equal(api->match.nheaders, 2);
  assert_int_equal(api->match.headers[1].m.kind, PX_SM_ABSENT);
  assert_int_equal(api->match.path.kind, PX_SM_PREFIX);
  assert_int_equal(c->routes[2].match.path.kind, PX_SM_REGEX);
  assert_int_equal(c->routes[3].mirror_cluster, v2);
  assert_int_equal(c->routes[3].mirror_ppm, 50000);
  assert_int_equal(c->routes[1].timeout_ms, 15000); /* the default */
  assert_false(c->routes[1].retry.enabled);

  /* listeners */
  int in = px_config_find_listener(c, "in");
  assert_int_equal(in, 0);
  assert_int_equal(c->listeners[in].nroutes, 3);
  assert_int_equal(c->listeners[in].routes[0], 1); /* special */
  assert_int_equal(c->listeners[2].proto, PX_PROTO_TCP);
  assert_int_equal(c->listeners[2].cluster, v1);
  assert_true(c->listeners[2].l4_fault.enabled);
  assert_int_equal(c->listeners[2].l4_fault.delay_ms, 20);

  /* references and the dump */
  px_config_t *r = px_config_ref(c);
  assert_ptr_equal(r, c);
  px_config_unref(r);
  json_t *d = px_config_dump(c);
  assert_non_null(d);
  assert_int_equal(json_integer_value(json_object_get(d, "version")), 7);
  assert_int_equal(json_array_size(json_object_get(json_object_get(d, "config"), "routes")), 4);
  json_decref(d);
  px_config_unref(c);
  px_config_unref(NULL);
  sk_config_errors_done(&e);
}

static void test_bad_configs_name_fields(void **state) {
  (void)state;
  /* unknown cluster, unknown key, bad lb: all reported in one run */
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"],\"lb\":\"random\",\"colour\":1}],"
              " \"routes\":[{\"name\":\"r\",\"cluster\":\"a\"},{\"name\":\"s\",\"cluster\":\"nope\"}]}",
              "clusters[0].lb", "clusters[0].colour: unknown key", "routes[1]", "unknown cluster 'nope'");
  /* missing endpoints, bad endpoint */
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\"},{\"name\":\"b\",\"endpoints\":[\"nohostport\"]}],\"routes\":[]}",
              "clusters[0]", "at least one", "clusters[1].endpoints[0]");
  /* path kinds: two at once, bad regex, prefix without '/' */
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],\"routes\":["
              "{\"name\":\"r\",\"match\":{\"path\":{\"exact\":\"/a\",\"prefix\":\"/b\"}},\"cluster\":\"a\"},"
              "{\"name\":\"s\",\"match\":{\"path\":{\"regex\":\"(unclosed\"}},\"cluster\":\"a\"},"
              "{\"name\":\"t\",\"match\":{\"path\":{\"prefix\":\"nope\"}},\"cluster\":\"a\"}]}",
              "routes[0].match.path", "routes[1].match.path", "bad regex", "routes[2].match.path");
  /* backends and cluster together; zero weights; rewrite.prefix without a prefix match */
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],\"routes\":["
              "{\"name\":\"r\",\"cluster\":\"a\",\"backends\":[{\"cluster\":\"a\",\"weight\":1}]},"
              "{\"name\":\"s\",\"backends\":[{\"cluster\":\"a\",\"weight\":0}]},"
              "{\"name\":\"t\",\"match\":{\"path\":{\"exact\":\"/x\"}},\"rewrite\":{\"prefix\":\"/\"},\"cluster\":\"a\"}]}",
              "routes[0]: give either cluster or backends", "routes[1]: backends: the weights add up to 0",
              "rewrite.prefix needs match.path.prefix");
  /* resilience sections report through the same paths */
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"],\"circuit_breaker\":{\"max_requestz\":1}}],"
              " \"routes\":[{\"name\":\"r\",\"cluster\":\"a\",\"retry\":{\"per_try_timeout\":\"soon\"}}]}",
              "clusters[0].circuit_breaker.max_requestz", "routes[0].retry.per_try_timeout");
  /* listeners: unknown route, tcp with routes, duplicate names */
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],"
              " \"routes\":[{\"name\":\"r\",\"cluster\":\"a\"},{\"name\":\"r\",\"cluster\":\"a\"}],"
              " \"listeners\":[{\"name\":\"l\",\"address\":\"127.0.0.1:0\",\"routes\":[\"ghost\"]},"
              "  {\"name\":\"t\",\"address\":\"127.0.0.1:0\",\"protocol\":\"tcp\",\"cluster\":\"a\",\"routes\":[\"r\"]}]}",
              "listeners[0].routes[0]: unknown route", "listeners[1]: a tcp listener takes a cluster",
              "routes[1]: duplicate route name 'r'");
  /* wrong types at the top */
  EXPECT_ERRS("{\"clusters\":{},\"routes\":[{\"name\":\"r\",\"cluster\":\"a\",\"timeout\":[]}]}", "clusters",
              "routes[0]");
}

static void test_errors_carry_positions(void **state) {
  (void)state;
  /* with a "where" map (as SK_CFG_JSON builds from YAML), errors get file:line:col */
  json_t *doc = js("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],"
                   "\"routes\":[{\"name\":\"r\",\"cluster\":\"zzz\"}]}");
  json_t *where = js("{\"routes[0].cluster\":[12,14],\"routes[0]\":[11,5],\"routes\":[10,1]}");
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  px_config_t *c = NULL;
  assert_int_equal(px_config_build(doc, where, "proxy.yaml", 1, &e, &c), SK_ECONFIG);
  assert_null(c);
  assert_true(e.n >= 1);
  char buf[512];
  sk_config_errors_format(&e, 0, buf, sizeof buf);
  assert_non_null(strstr(buf, "proxy.yaml:12:14: routes[0].cluster: unknown cluster 'zzz'"));
  assert_non_null(strstr(buf, "routes[0]"));
  assert_non_null(strstr(buf, "'zzz'"));
  sk_config_errors_done(&e);
  json_decref(where);
  json_decref(doc);
}

static const char *match(const px_config_t *c, const char *listener, const char *method, const char *authority,
                         const char *path, const char *query, const sk_http_headers_t *h) {
  static const sk_http_headers_t none = {NULL, 0, 0};
  int li = listener ? px_config_find_listener(c, listener) : -1;
  px_match_req_t r = {method, authority, path, query, h ? h : &none, NULL};
  const px_route_t *rt = px_route_match(c, li >= 0 ? &c->listeners[li] : NULL, &r);
  return rt ? rt->name : NULL;
}

static void test_route_matching_order(void **state) {
  (void)state;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  px_config_t *c = NULL;
  assert_int_equal(build(good, &e, &c), 0);
  sk_http_header_t hv[] = {{"x-env", "prod"}, {"accept", "*/*"}};
  sk_http_headers_t prod = {hv, 2, 2};
  sk_http_header_t hd[] = {{"x-env", "prod"}, {"x-debug", "1"}};
  sk_http_headers_t debug = {hd, 2, 2};

  /* listener "in": special, api, default */
  const char *m = match(c, "in", "GET", "shop.example.com", "/api/special", "lang=en", &prod);
  assert_non_null(m);
  assert_string_equal(m, "special"); /* first in the listener's order, though api also matches */
  assert_string_equal(match(c, "in", "GET", "shop.example.com:8443", "/api/x", "lang=de", &prod), "api");
  /* each condition of "api" failing falls through to "default" */
  assert_string_equal(match(c, "in", "DELETE", "shop.example.com", "/api/x", "lang=en", &prod), "default");
  assert_string_equal(match(c, "in", "GET", "example.org", "/api/x", "lang=en", &prod), "default");
  assert_string_equal(match(c, "in", "GET", "shop.example.com", "/api/x", "lang=fr", &prod), "default");
  assert_string_equal(match(c, "in", "GET", "shop.example.com", "/api/x", NULL, &prod), "default");
  assert_string_equal(match(c, "in", "GET", "shop.example.com", "/api/x", "lang=en", &debug), "default");
  assert_string_equal(match(c, "in", "GET", "shop.example.com", "/api/x", "lang=en", NULL), "default");
  assert_string_equal(match(c, "in", "GET", "shop.example.com", "/apix", "lang=en", &prod), "default");
  /* "versioned" is not on listener "in", so /v2/ goes to default there */
  assert_string_equal(match(c, "in", "GET", "a", "/v2/x", NULL, NULL), "default");

  /* listener "rev": default first, so it shadows special */
  assert_string_equal(match(c, "rev", "GET", "a", "/api/special", NULL, NULL), "default");

  /* no listener list (NULL listener): the config's order */
  assert_string_equal(match(c, NULL, "GET", "shop.example.com", "/api/special", "lang=en", &prod), "api");
  assert_string_equal(match(c, NULL, "GET", "a", "/api/special", NULL, NULL), "special");
  assert_string_equal(match(c, NULL, "GET", "a", "/v12/x", NULL, NULL), "versioned");
  assert_string_equal(match(c, NULL, "GET", "a", "/vx/x", NULL, NULL), "default");
  px_config_unref(c);

  /* nothing matches: NULL */
  assert_int_equal(build("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],"
                         "\"routes\":[{\"name\":\"only\",\"match\":{\"path\":{\"exact\":\"/only\"}},\"cluster\":\"a\"}]}",
                         &e, &c),
                   0);
  assert_null(match(c, NULL, "GET", "a", "/other", NULL, NULL));
  assert_string_equal(match(c, NULL, "GET", "a", "/only", NULL, NULL), "only");
  px_config_unref(c);
  sk_config_errors_done(&e);
}

/* Paths locate errors, so one is never cut short: a key too long for a path
 * is reported at its parent (with that parent's position); the longest
 * header name allowed (256 bytes) still builds, and a bad value under it is
 * named once in the path. */
/* match.spiffe: exact (bare string or {exact}) and prefix on the peer's
 * SPIFFE ID; no ID never matches; anything not a SPIFFE ID is refused */
static void test_route_spiffe(void **state) {
  (void)state;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  px_config_t *c = NULL;
  assert_int_equal(build("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],\"routes\":["
                         "{\"name\":\"web\",\"match\":{\"spiffe\":\"spiffe://td/ns/web/sa/fe\"},\"cluster\":\"a\"},"
                         "{\"name\":\"ex\",\"match\":{\"spiffe\":{\"exact\":\"spiffe://td/x\"}},\"cluster\":\"a\"},"
                         "{\"name\":\"batch\",\"match\":{\"path\":\"/b/\",\"spiffe\":{\"prefix\":\"spiffe://td/ns/batch/\"}},"
                         "\"cluster\":\"a\"},"
                         "{\"name\":\"any\",\"cluster\":\"a\"}]}",
                         &e, &c),
                   0);
  static const sk_http_headers_t none = {NULL, 0, 0};
  struct {
    const char *path, *spiffe, *want;
  } cases[] = {
      {"/", "spiffe://td/ns/web/sa/fe", "web"},
      {"/", "spiffe://td/ns/web/sa/fe2", "any"}, /* exact is exact */
      {"/", "spiffe://td/x", "ex"},
      {"/b/1", "spiffe://td/ns/batch/sa/job", "batch"},
      {"/c/1", "spiffe://td/ns/batch/sa/job", "any"}, /* every condition must hold */
      {"/b/1", "spiffe://td/ns/batchx", "any"},
      {"/b/1", NULL, "any"}, /* no client certificate */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    px_match_req_t r = {"GET", "h", cases[i].path, NULL, &none, cases[i].spiffe};
    const px_route_t *rt = px_route_match(c, NULL, &r);
    assert_non_null(rt);
    assert_string_equal(rt->name, cases[i].want);
  }
  px_config_unref(c);
  sk_config_errors_done(&e);
  EXPECT_ERRS("{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],\"routes\":["
              "{\"name\":\"r\",\"match\":{\"spiffe\":\"td/ns/web\"},\"cluster\":\"a\"},"
              "{\"name\":\"s\",\"match\":{\"spiffe\":{\"regex\":\"^spiffe://\"}},\"cluster\":\"a\"},"
              "{\"name\":\"t\",\"match\":{\"spiffe\":{\"exact\":\"spiffe://a\",\"prefix\":\"spiffe://b\"}},\"cluster\":\"a\"},"
              "{\"name\":\"u\",\"match\":{\"spiffe\":7},\"cluster\":\"a\"}]}",
              "routes[0].match.spiffe", "routes[1].match.spiffe.regex: unknown key", "routes[2].match.spiffe",
              "routes[3].match.spiffe");
}

static void test_long_keys_keep_their_paths(void **state) {
  (void)state;
  char name[257], big[601], text[2048];
  memset(name, 'h', 256);
  name[256] = 0;
  memset(big, 'k', 600);
  big[600] = 0;
  sk_config_errors_t e;
  sk_config_errors_init(&e);
  px_config_t *c = NULL;
  snprintf(text, sizeof text,
           "{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],"
           "\"routes\":[{\"name\":\"r\",\"cluster\":\"a\",\"request_headers\":{\"add\":{\"%s\":\"v\"}}}]}",
           name);
  if (build(text, &e, &c) != 0) {
    print_errs(&e);
    fail_msg("a 256-byte header name is allowed");
  }
  assert_int_equal(c->routes[0].req_hdrs.nadd, 1);
  px_config_unref(c);
  sk_config_errors_done(&e);

  char want[400];
  snprintf(want, sizeof want, "routes[0].request_headers.add.%s: expected a string", name);
  snprintf(text, sizeof text,
           "{\"clusters\":[{\"name\":\"a\",\"endpoints\":[\"127.0.0.1:1\"]}],"
           "\"routes\":[{\"name\":\"r\",\"cluster\":\"a\",\"request_headers\":{\"add\":{\"%s\":[]}}}]}",
           name);
  EXPECT_ERRS(text, want);

  json_t *doc = json_object();
  json_t *cl = json_pack("{s:s, s:[s], s:i}", "name", "a", "endpoints", "127.0.0.1:1", big, 1);
  json_object_set_new(doc, "clusters", json_pack("[o]", cl));
  json_t *where = js("{\"clusters[0]\":[3,5],\"clusters\":[2,1]}");
  sk_config_errors_init(&e);
  assert_int_equal(px_config_build(doc, where, "proxy.yaml", 1, &e, &c), SK_ECONFIG);
  assert_null(c);
  assert_true(e.n >= 1);
  char buf[1024];
  sk_config_errors_format(&e, 0, buf, sizeof buf);
  assert_non_null(strstr(buf, "proxy.yaml:3:5: clusters[0]: unknown key 'kkkk"));
  assert_non_null(strstr(buf, "...' (600 bytes)"));
  sk_config_errors_done(&e);
  json_decref(where);
  json_decref(doc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_good_config_builds),
      cmocka_unit_test(test_bad_configs_name_fields),
      cmocka_unit_test(test_errors_carry_positions),
      cmocka_unit_test(test_route_matching_order),
      cmocka_unit_test(test_route_spiffe),
      cmocka_unit_test(test_long_keys_keep_their_paths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
