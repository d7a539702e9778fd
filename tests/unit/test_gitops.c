/* Unit tests of skiff-gitops' pure parts: the manifest loader (file:line of
 * each document, errors, waves, kind order, duplicates), include/exclude
 * globs, the normalised comparison, health, URL normalisation, webhook
 * signatures and payloads, the Application kind's validation in control,
 * and reading manifests from a real commit with libgit2. */
#include "sk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "control.h"
#include "gitops.h"
#include "skiff/err.h"
#include "skiff/json.h"

static void test_manifest_lines(void **state) {
  (void)state;
  const char *y = "# a comment\n"
                  "apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: a}\n"
                  "---\n"
                  "apiVersion: skiff.dev/v1\nkind: Route\nmetadata:\n  name: b\n  namespace: other\n"
                  "  annotations: {argocd.argoproj.io/sync-wave: \"-2\"}\n"
                  "---\n"
                  "---\n"
                  "apiVersion: skiff.dev/v1\nkind: Service\nmetadata:\n  name: c\n"
                  "  annotations: {gitops.skiff.dev/sync-wave: \"3\"}\n";
  gx_resset_t s;
  gx_resset_init(&s);
  char err[512] = "";
  assert_int_equal(gx_manifest_load(&s, "dir/f.yaml", y, strlen(y), "shop", err, sizeof err), 0);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.v[0].src, "dir/f.yaml:2"); /* after the leading comment */
  assert_string_equal(s.v[0].ns, "shop");
  assert_string_equal(s.v[1].src, "dir/f.yaml:6");
  assert_string_equal(s.v[1].ns, "other");
  assert_int_equal(s.v[1].wave, -2);
  assert_string_equal(s.v[2].src, "dir/f.yaml:14");
  assert_int_equal(s.v[2].wave, 3);
  gx_manifest_sort(&s);
  assert_string_equal(s.v[0].name, "b");
  assert_string_equal(s.v[1].name, "a");
  assert_string_equal(s.v[2].name, "c");
  assert_int_equal(gx_manifest_check_dups(&s, err, sizeof err), 0);
  const char *dup = "apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: a}\n";
  assert_int_equal(gx_manifest_load(&s, "g.yaml", dup, strlen(dup), "shop", err, sizeof err), 0);
  assert_int_equal(gx_manifest_check_dups(&s, err, sizeof err), SK_EEXIST);
  assert_non_null(strstr(err, "g.yaml:1"));
  assert_non_null(strstr(err, "dir/f.yaml:2"));
  gx_resset_done(&s);
}

static void test_manifest_errors(void **state) {
  (void)state;
  gx_resset_t s;
  gx_resset_init(&s);
  char err[512];
  const char *bad = "apiVersion: v1\nkind: X\nmetadata: {name: a\nspec: {}\n";
  assert_true(gx_manifest_load(&s, "bad.yaml", bad, strlen(bad), "d", err, sizeof err) < 0);
  assert_non_null(strstr(err, "bad.yaml:4:"));
  const char *noname = "apiVersion: v1\nkind: X\n---\napiVersion: v1\nkind: X\nmetadata: {}\n";
  assert_true(gx_manifest_load(&s, "n.yaml", noname, strlen(noname), "d", err, sizeof err) < 0);
  assert_string_equal(err, "n.yaml:1: metadata.name is required");
  const char *wave = "apiVersion: v1\nkind: X\nmetadata:\n  name: a\n  annotations: {gitops.skiff.dev/sync-wave: soon}\n";
  assert_true(gx_manifest_load(&s, "w.yaml", wave, strlen(wave), "d", err, sizeof err) < 0);
  assert_non_null(strstr(err, "w.yaml:1: X/a: sync wave 'soon'"));
  const char *list = "- a\n";
  assert_true(gx_manifest_load(&s, "l.yaml", list, strlen(list), "d", err, sizeof err) < 0);
  assert_non_null(strstr(err, "not a mapping"));
  gx_resset_done(&s);
}

static void test_globs(void **state) {
  (void)state;
  assert_true(gx_glob_match("*.yaml", "a.yaml"));
  assert_true(gx_glob_match("*.yaml", "sub/a.yaml"));
  assert_false(gx_glob_match("*.yaml", "a.json"));
  assert_true(gx_glob_match("{a.yaml,env/*}", "env/x.yaml"));
  assert_true(gx_glob_match("{a.yaml,env/*}", "a.yaml"));
  assert_false(gx_glob_match("{a.yaml,env/*}", "b.yaml"));
}

static json_t *J(const char *s) {
  json_error_t e;
  json_t *v = json_loads(s, 0, &e);
  if (!v) fail_msg("bad test JSON: %s", e.text);
  return v;
}

static void test_in_sync(void **state) {
  (void)state;
  json_t *d = J("{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\",\"labels\":{\"x\":\"1\"}},"
                "\"spec\":{\"endpoints\":[\"h:1\"],\"opts\":{},\"weight\":1}}");
  json_t *l = J("{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"a\",\"uid\":\"u\","
                "\"resourceVersion\":\"9\",\"labels\":{\"x\":\"1\",\"y\":\"2\"}},"
                "\"spec\":{\"endpoints\":[\"h:1\"],\"weight\":1.0,\"protocol\":\"http1\"},\"status\":{\"phase\":\"Running\"}}");
  char where[256];
  assert_true(gx_doc_in_sync(d, l, where, sizeof where));
  json_object_set_new(json_object_get(l, "spec"), "endpoints", J("[\"h:2\"]"));
  assert_false(gx_doc_in_sync(d, l, where, sizeof where));
  assert_string_equal(where, "spec.endpoints[0]");
  json_object_set_new(json_object_get(l, "spec"), "endpoints", J("[\"h:1\"]"));
  json_object_set_new(json_object_get(json_object_get(l, "metadata"), "labels"), "x", json_string("2"));
  assert_false(gx_doc_in_sync(d, l, where, sizeof where));
  assert_string_equal(where, "metadata.labels.x");
  assert_false(gx_doc_in_sync(d, NULL, where, sizeof where));
  assert_string_equal(where, "(missing)");
  json_decref(d);
  json_decref(l);
}

static void test_health(void **state) {
  (void)state;
  struct {
    const char *doc, *health;
  } cases[] = {
      {"{}", "Healthy"},
      {"{\"status\":{\"phase\":\"Running\"}}", "Healthy"},
      {"{\"status\":{\"phase\":\"Failed\"}}", "Degraded"},
      {"{\"status\":{\"health\":{\"status\":\"Suspended\"}}}", "Suspended"},
      {"{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"Progressing\"}]}}",
       "Progressing"},
      {"{\"status\":{\"conditions\":[{\"type\":\"Available\",\"status\":\"False\",\"reason\":\"Crash\"}]}}",
       "Degraded"},
      {"{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}", "Healthy"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *d = J(cases[i].doc);
    assert_string_equal(gx_health_of(d), cases[i].health);
    json_decref(d);
  }
  assert_true(gx_health_rank("Degraded") > gx_health_rank("Progressing"));
  assert_true(gx_health_rank("Missing") > gx_health_rank("Suspended"));
  assert_true(gx_health_rank("Unknown") > gx_health_rank("Degraded"));
}

static void test_urls(void **state) {
  (void)state;
  char a[256], b[256];
  gx_url_normalize("https://user:pw@GitHub.com/Acme/demo.git/", a, sizeof a);
  gx_url_normalize("https://github.com/Acme/demo", b, sizeof b);
  assert_string_equal(a, b);
  assert_string_equal(a, "https://github.com/Acme/demo");
  gx_url_normalize("git@github.com:acme/demo.git", a, sizeof a);
  assert_string_equal(a, "git@github.com:acme/demo");
}

static void test_webhook(void **state) {
  (void)state;
  const char *body = "{\"ref\":\"refs/heads/main\",\"repository\":{\"clone_url\":\"https://h/a.git\"}}";
  unsigned char mac[32];
  unsigned int ml = 0;
  HMAC(EVP_sha256(), "s3cret", 6, (const unsigned char *)body, strlen(body), mac, &ml);
  char hdr[80] = "sha256=";
  for (int i = 0; i < 32; i++) snprintf(hdr + 7 + 2 * i, 3, "%02x", mac[i]);
  assert_int_equal(gx_hook_verify_github("s3cret", hdr, body, strlen(body)), 0);
  assert_int_equal(gx_hook_verify_github("other", hdr, body, strlen(body)), SK_EUNAUTH);
  assert_int_equal(gx_hook_verify_github("s3cret", hdr, body, strlen(body) - 1), SK_EUNAUTH);
  assert_int_equal(gx_hook_verify_github("s3cret", NULL, body, strlen(body)), SK_EUNAUTH);
  assert_int_equal(gx_hook_verify_github("s3cret", "sha1=abc", body, strlen(body)), SK_EUNAUTH);
  assert_int_equal(gx_hook_verify_github("", hdr, body, strlen(body)), SK_EUNAUTH);
  assert_int_equal(gx_hook_verify_gitlab("tok", "tok"), 0);
  assert_int_equal(gx_hook_verify_gitlab("tok", "tok2"), SK_EUNAUTH);
  assert_int_equal(gx_hook_verify_gitlab("tok", NULL), SK_EUNAUTH);
  gx_hook_event_t ev;
  char err[256];
  assert_int_equal(gx_hook_parse(GX_HOOK_GITHUB, "push", body, strlen(body), &ev, err, sizeof err), 0);
  assert_true(ev.is_push);
  assert_int_equal(ev.nurls, 1);
  assert_string_equal(ev.urls[0], "https://h/a.git");
  assert_string_equal(ev.ref, "refs/heads/main");
  gx_hook_event_done(&ev);
  const char *gl = "{\"project\":{\"git_http_url\":\"https://g/x.git\",\"git_ssh_url\":\"git@g:x.git\"}}";
  assert_int_equal(gx_hook_parse(GX_HOOK_GITLAB, "Push Hook", gl, strlen(gl), &ev, err, sizeof err), 0);
  assert_int_equal(ev.nurls, 2);
  gx_hook_event_done(&ev);
  assert_true(gx_hook_parse(GX_HOOK_GITHUB, "push", "{}", 2, &ev, err, sizeof err) < 0);
  assert_non_null(strstr(err, "without a repository URL"));
  assert_true(gx_hook_parse(GX_HOOK_GITHUB, "push", "[", 1, &ev, err, sizeof err) < 0);
  assert_int_equal(gx_hook_parse(GX_HOOK_GITHUB, "ping", "{}", 2, &ev, err, sizeof err), 0);
  assert_false(ev.is_push);
}

static void check_app(const char *yaml, const char *want_err) {
  json_t *doc = NULL;
  char err[512];
  assert_int_equal(ctl_doc_decode(yaml, strlen(yaml), "application/yaml", &doc, err, sizeof err), 0);
  ctl_errs_t errs;
  ctl_errs_init(&errs);
  json_t *stored = NULL;
  const ctl_kind_t *k = NULL;
  int rc = ctl_doc_prepare(doc, NULL, NULL, NULL, &stored, &k, &errs);
  char msg[2048];
  ctl_errs_format(&errs, msg, sizeof msg);
  if (!want_err) {
    if (rc < 0) fail_msg("unexpected: %s", msg);
    assert_string_equal(sk_json_get_str(stored, "apiVersion", ""), "skiff.dev/v1");
  } else {
    assert_true(rc < 0);
    if (!strstr(msg, want_err)) fail_msg("want '%s' in '%s'", want_err, msg);
  }
  json_decref(stored);
  json_decref(doc);
}

static void test_app_kind(void **state) {
  (void)state;
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a, namespace: argocd}\n"
            "spec:\n  project: default\n  source: {repoURL: 'https://h/r.git', targetRevision: main, path: x,"
            " directory: {recurse: true, include: '*.yaml'}}\n  destination: {server: 'https://kubernetes.default.svc', namespace: web}\n"
            "  syncPolicy: {automated: {prune: true, selfHeal: true}, syncOptions: [CreateNamespace=true]}\n",
            NULL);
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\nspec:\n  source: {repoURL: 'git@h:r.git'}\n",
            NULL);
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\nspec: {source: {path: x}}\n",
            "spec.source.repoURL: required");
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\nspec: {source: {repoURL: 'ftp://x'}}\n",
            "spec.source.repoURL: must be");
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec:\n  source: {repoURL: 'ssh://git@h:2222/r.git'}\n"
            "  syncPolicy: {retry: {limit: -1, backoff: {duration: '5', factor: 2, maxDuration: 3m}}}\n"
            "  ignoreDifferences:\n  - {group: skiff.dev, kind: Route, name: web, jsonPointers: [/spec/rules/0/backendRefs]}\n",
            NULL);
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r'}, syncPolicy: {retry: {limit: 2, refresh: true}}}\n",
            "spec.syncPolicy.retry.refresh: unknown or unsupported field");
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r'}, syncPolicy: {retry: {backoff: {duration: soon}}}}\n",
            "spec.syncPolicy.retry.backoff.duration: must be a number of seconds or a duration");
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r'}, syncPolicy: {retry: {limit: 1.5}}}\n",
            "spec.syncPolicy.retry.limit: must be an integer");
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r'}, ignoreDifferences: [{kind: Route, jqPathExpressions: [.x]}]}\n",
            "spec.ignoreDifferences[0].jqPathExpressions: unknown or unsupported field");
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r'}, ignoreDifferences: [{kind: Route, jsonPointers: [spec]}]}\n",
            "spec.ignoreDifferences[0].jsonPointers[0]: must be a JSON pointer");
  check_app("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r'}, ignoreDifferences: [{jsonPointers: [/spec]}]}\n",
            "spec.ignoreDifferences[0].kind: required");
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r', path: ../etc}}\n",
            "spec.source.path: must be relative");
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r', helm: {}}}\n",
            "spec.source.helm: unknown or unsupported field");
}


static void ptr_cat(const char *ptr, void *ud) { strcat(ud, ptr); }

static void test_sync_options(void **state) {
  (void)state;
  gx_sync_opts_t o;
  gx_sync_opts_init(&o);
  char err[512];
  assert_int_equal(o.replace, -1);
  assert_int_equal(gx_sync_opt_parse(&o, "Replace=true", 12, err, sizeof err), 0);
  assert_int_equal(o.replace, 1);
  assert_int_equal(gx_sync_opts_parse_list(&o, " Prune=false, PruneLast=true,Validate=false ,", err, sizeof err), 0);
  assert_int_equal(o.prune, 0);
  assert_int_equal(o.prune_last, 1);
  assert_int_equal(o.validate, 0);
  assert_int_equal(o.apply_oos_only, -1);
  assert_int_equal(gx_sync_opts_parse_list(&o, "ServerSideApply=true,Replace=maybe,Prune", err, sizeof err), 3);
  assert_non_null(strstr(err, "unknown sync option 'ServerSideApply=true'"));
  assert_non_null(strstr(err, "Replace=maybe: the value must be true or false"));
  assert_non_null(strstr(err, "'Prune' is not Name=value"));
  assert_int_equal(o.replace, 1); /* bad values change nothing */
  assert_int_equal(gx_sync_opts_parse_list(&o, "CreateNamespace=true,ApplyOutOfSyncOnly=true,RespectIgnoreDifferences=true",
                                           err, sizeof err), 0);
  assert_int_equal(o.create_namespace, 1);
  assert_int_equal(o.apply_oos_only, 1);
  assert_int_equal(o.respect_ignore, 1);
}

static void test_pointers_and_merge(void **state) {
  (void)state;
  json_t *d = json_loads("{\"spec\":{\"rules\":[{\"backendRefs\":[{\"name\":\"a\",\"weight\":90},{\"name\":\"b\",\"weight\":10}]}],"
                         "\"a/b\":{\"m~n\":1}}}", 0, NULL);
  assert_int_equal(json_integer_value(gx_json_pointer_get(d, "/spec/rules/0/backendRefs/1/weight")), 10);
  assert_int_equal(json_integer_value(gx_json_pointer_get(d, "/spec/a~1b/m~0n")), 1);
  assert_null(gx_json_pointer_get(d, "/spec/rules/01"));
  assert_null(gx_json_pointer_get(d, "/spec/rules/5/x"));
  assert_null(gx_json_pointer_get(d, "/spec/~2"));
  assert_ptr_equal(gx_json_pointer_get(d, ""), d);
  assert_int_equal(gx_json_pointer_put(d, "/spec/rules/0/backendRefs/0/weight", json_integer(50)), 0);
  assert_int_equal(json_integer_value(gx_json_pointer_get(d, "/spec/rules/0/backendRefs/0/weight")), 50);
  assert_int_equal(gx_json_pointer_put(d, "/spec/a~1b", NULL), 0);
  assert_null(gx_json_pointer_get(d, "/spec/a~1b"));
  assert_int_equal(gx_json_pointer_put(d, "/nope/x", json_integer(1)), SK_ENOTFOUND);
  json_decref(d);

  /* ignoreDifferences rules: kind, optional group/name/namespace */
  json_t *rules = json_loads("[{\"group\":\"skiff.dev\",\"kind\":\"Route\",\"name\":\"web\",\"jsonPointers\":[\"/spec/a\",\"/spec/b\"]},"
                             "{\"kind\":\"Service\",\"namespace\":\"other\",\"jsonPointers\":[\"/spec/c\"]}]", 0, NULL);
  char seen[256] = "";
  char *acc = seen;
  gx_ignore_foreach(rules, "skiff.dev/v1", "Route", "shop", "web", ptr_cat, acc);
  assert_string_equal(seen, "/spec/a/spec/b");
  seen[0] = 0;
  gx_ignore_foreach(rules, "skiff.dev/v1", "Route", "shop", "api", ptr_cat, acc);
  gx_ignore_foreach(rules, "other.io/v1", "Route", "shop", "web", ptr_cat, acc);
  gx_ignore_foreach(rules, "skiff.dev/v1", "Service", "shop", "x", ptr_cat, acc);
  assert_string_equal(seen, "");
  gx_ignore_foreach(rules, "skiff.dev/v1", "Service", "other", "x", ptr_cat, acc);
  assert_string_equal(seen, "/spec/c");
  json_decref(rules);

  /* three-way merge: Git's fields win, fields others added live stay,
   * fields Git dropped since the last apply go */
  json_t *last_doc = json_loads("{\"metadata\":{\"name\":\"x\",\"labels\":{\"app\":\"x\",\"old\":\"1\"}},"
                                "\"spec\":{\"port\":1,\"gone\":true,\"sub\":{\"keep\":1,\"drop\":2}}}", 0, NULL);
  json_t *last = gx_field_set(last_doc);
  json_t *desired = json_loads("{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"x\",\"labels\":{\"app\":\"x\"}},"
                               "\"spec\":{\"port\":2,\"sub\":{\"keep\":1}}}", 0, NULL);
  json_t *live = json_loads("{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"x\",\"uid\":\"u\","
                            "\"resourceVersion\":\"7\",\"labels\":{\"app\":\"x\",\"old\":\"1\",\"team\":\"t\"}},"
                            "\"spec\":{\"port\":1,\"gone\":true,\"extra\":\"live\",\"sub\":{\"keep\":1,\"drop\":2,\"theirs\":3}},"
                            "\"status\":{\"phase\":\"Ready\"}}", 0, NULL);
  json_t *m = gx_merge_apply(last, desired, live);
  char *txt = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(txt, "{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Service\",\"metadata\":{\"labels\":{\"app\":\"x\",\"team\":\"t\"},"
                           "\"name\":\"x\"},\"spec\":{\"extra\":\"live\",\"port\":2,\"sub\":{\"keep\":1,\"theirs\":3}}}");
  free(txt);
  json_decref(m);
  /* without a record of the last apply nothing is removed */
  m = gx_merge_apply(NULL, desired, live);
  assert_true(json_is_true(gx_json_pointer_get(m, "/spec/gone")));
  assert_string_equal(sk_json_get_str(m, "metadata.labels.old", ""), "1");
  json_decref(m);
  json_t *fs = gx_field_set(live);
  txt = json_dumps(fs, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(txt, "{\"metadata\":{\"labels\":{\"app\":1,\"old\":1,\"team\":1}},\"spec\":{\"extra\":1,\"gone\":1,\"port\":1,"
                           "\"sub\":{\"drop\":1,\"keep\":1,\"theirs\":1}}}");
  free(txt);
  json_decref(fs);
  json_decref(last);
  json_decref(last_doc);
  json_decref(desired);
  json_decref(live);
}

static void test_retry_backoff(void **state) {
  (void)state;
  gx_retry_t r;
  assert_int_equal(gx_retry_from_spec(NULL, &r), 0);
  json_t *spec = json_loads("{\"limit\":5}", 0, NULL);
  assert_int_equal(gx_retry_from_spec(spec, &r), 1);
  /* Argo's defaults: 5s, factor 2, at most 3m */
  assert_int_equal(gx_retry_delay_ms(&r, 1), 5000);
  assert_int_equal(gx_retry_delay_ms(&r, 2), 10000);
  assert_int_equal(gx_retry_delay_ms(&r, 3), 20000);
  assert_int_equal(gx_retry_delay_ms(&r, 10), 180000);
  json_decref(spec);
  spec = json_loads("{\"limit\":-1,\"backoff\":{\"duration\":\"2\",\"factor\":3,\"maxDuration\":\"1m\"}}", 0, NULL);
  assert_int_equal(gx_retry_from_spec(spec, &r), 1);
  assert_int_equal(r.limit, -1);
  assert_int_equal(gx_retry_delay_ms(&r, 1), 2000);
  assert_int_equal(gx_retry_delay_ms(&r, 3), 18000);
  assert_int_equal(gx_retry_delay_ms(&r, 4), 54000);
  assert_int_equal(gx_retry_delay_ms(&r, 5), 60000);
  assert_int_equal(gx_retry_delay_ms(&r, 1000), 60000);
  json_decref(spec);
  spec = json_loads("{\"limit\":0}", 0, NULL);
  assert_int_equal(gx_retry_from_spec(spec, &r), 0); /* 0: no retries */
  json_decref(spec);
}

static void test_url_endpoint(void **state) {
  (void)state;
  char h[256];
  int port = 0;
  assert_int_equal(gx_git_url_endpoint("git://127.0.0.1/r.git", h, sizeof h, &port), 0);
  assert_string_equal(h, "127.0.0.1");
  assert_int_equal(port, 9418);
  assert_int_equal(gx_git_url_endpoint("ssh://git@example.com:2222/srv/r.git", h, sizeof h, &port), 0);
  assert_string_equal(h, "example.com");
  assert_int_equal(port, 2222);
  assert_int_equal(gx_git_url_endpoint("https://user:p@ss@[::1]:8443/r", h, sizeof h, &port), 0);
  assert_string_equal(h, "::1");
  assert_int_equal(port, 8443);
  assert_int_equal(gx_git_url_endpoint("http://h", h, sizeof h, &port), 0);
  assert_int_equal(port, 80);
  assert_int_equal(gx_git_url_endpoint("git@github.com:acme/deploy.git", h, sizeof h, &port), 0);
  assert_string_equal(h, "github.com");
  assert_int_equal(port, 22);
  assert_int_equal(gx_git_url_endpoint("file:///srv/r.git", h, sizeof h, &port), SK_ENOTSUP);
  assert_int_equal(gx_git_url_endpoint("ssh://h:99999/r", h, sizeof h, &port), SK_EINVAL);
  assert_int_equal(gx_git_url_endpoint("ssh://h:2x/r", h, sizeof h, &port), SK_EINVAL);
  assert_int_equal(gx_git_url_endpoint("ftp://h/r", h, sizeof h, &port), SK_EINVAL);
  /* a refused connection is an error at once, not a timeout */
  char err[256];
  assert_int_equal(gx_git_probe("127.0.0.1", 1, 5000, NULL, err, sizeof err), SK_EIO);
  assert_non_null(strstr(err, "127.0.0.1:1"));
}

static int sh(const char *cmd) { return system(cmd); }

static void test_git_load(void **state) {
  (void)state;
  char dir[] = "/tmp/skiff-gx-unit.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "set -e; cd %s; git init -q -b main src; cd src; mkdir -p app/sub; "
           "printf 'apiVersion: v1\\nkind: A\\nmetadata: {name: top}\\n' > app/top.yaml; "
           "printf 'apiVersion: v1\\nkind: A\\nmetadata: {name: deep}\\n' > app/sub/deep.yml; "
           "printf 'ignored' > app/notes.txt; "
           "git add -A; git -c user.name=T -c user.email=t@e commit -q -m one; git tag v1",
           dir);
  assert_int_equal(sh(cmd), 0);
  char url[600], cache[600], err[1024], oid[41];
  snprintf(url, sizeof url, "file://%s/src", dir);
  snprintf(cache, sizeof cache, "%s/cache", dir);
  assert_int_equal(gx_git_global_init(), 0);
  gx_git_t *g = NULL;
  assert_int_equal(gx_git_open(cache, url, &g, err, sizeof err), 0);
  assert_int_equal(gx_git_fetch(g, NULL, err, sizeof err), 0);
  assert_int_equal(gx_git_resolve(g, "main", oid, err, sizeof err), 0);
  char oid2[41];
  assert_int_equal(gx_git_resolve(g, "v1", oid2, err, sizeof err), 0);
  assert_string_equal(oid, oid2);
  assert_int_equal(gx_git_resolve(g, "HEAD", oid2, err, sizeof err), 0);
  assert_string_equal(oid, oid2);
  char shortid[9];
  snprintf(shortid, sizeof shortid, "%.8s", oid);
  assert_int_equal(gx_git_resolve(g, shortid, oid2, err, sizeof err), 0);
  assert_int_equal(gx_git_resolve(g, "nope", oid2, err, sizeof err), SK_ENOTFOUND);
  assert_non_null(strstr(err, "revision 'nope' not found"));
  gx_resset_t s;
  gx_resset_init(&s);
  assert_int_equal(gx_git_load(g, oid, "app", 0, NULL, NULL, "d", &s, err, sizeof err), 0);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.v[0].src, "app/top.yaml:1");
  gx_resset_done(&s);
  assert_int_equal(gx_git_load(g, oid, "app", 1, NULL, NULL, "d", &s, err, sizeof err), 0);
  assert_int_equal(s.n, 2);
  assert_string_equal(s.v[0].src, "app/sub/deep.yml:1");
  gx_resset_done(&s);
  assert_int_equal(gx_git_load(g, oid, "app", 1, NULL, "sub/*", "d", &s, err, sizeof err), 0);
  assert_int_equal(s.n, 1);
  gx_resset_done(&s);
  assert_int_equal(gx_git_load(g, oid, "missing", 1, NULL, NULL, "d", &s, err, sizeof err), SK_ENOTFOUND);
  assert_non_null(strstr(err, "path 'missing' is not a directory"));
  char author[128], msg[128];
  assert_int_equal(gx_git_commit_info(g, oid, author, sizeof author, msg, sizeof msg), 0);
  assert_string_equal(author, "T <t@e>");
  assert_string_equal(msg, "one");
  gx_git_free(g);
  /* an unreachable repository is an error, not a crash */
  snprintf(url, sizeof url, "file://%s/nothing-here", dir);
  assert_int_equal(gx_git_open(cache, url, &g, err, sizeof err), 0);
  assert_true(gx_git_fetch(g, NULL, err, sizeof err) < 0);
  assert_non_null(strstr(err, "nothing-here"));
  gx_git_free(g);
  gx_git_global_done();
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(sh(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_manifest_lines), cmocka_unit_test(test_manifest_errors), cmocka_unit_test(test_globs),
      cmocka_unit_test(test_in_sync),        cmocka_unit_test(test_health),          cmocka_unit_test(test_urls),
      cmocka_unit_test(test_webhook),        cmocka_unit_test(test_app_kind),        cmocka_unit_test(test_git_load),
      cmocka_unit_test(test_sync_options),   cmocka_unit_test(test_pointers_and_merge),
      cmocka_unit_test(test_retry_backoff),  cmocka_unit_test(test_url_endpoint),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
