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
            "spec: {source: {repoURL: 'file:///r', path: ../etc}, syncPolicy: {retry: {limit: 2}}}\n",
            "spec.syncPolicy.retry: unknown or unsupported field");
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r', path: ../etc}}\n",
            "spec.source.path: must be relative");
  check_app("apiVersion: skiff.dev/v1\nkind: Application\nmetadata: {name: a}\n"
            "spec: {source: {repoURL: 'file:///r', helm: {}}}\n",
            "spec.source.helm: unknown or unsupported field");
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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
