/* Shift-left: `skiff policy test` over manifests, and PolicyReports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pol_int.h"
#include "skiff/err.h"
#include "skiff/json.h"
#include "skiff/yaml.h"

#define POL_CLI_MAX_BYTES (64u * 1024 * 1024)

static void cli_usage(FILE *out) {
  fprintf(out,
          "usage: skiff policy test [-q] [--insecure-registry HOST:PORT] POLICIES RESOURCES...\n"
          "  POLICIES   a policy file or a directory of them (ClusterPolicy/Policy, kyverno.io/v1 or skiff.dev/v1)\n"
          "  RESOURCES  manifest files (multi-document YAML or JSON, e.g. rendered Helm output), directories, or -\n"
          "  -q         print violations only, no summary\n"
          "  --insecure-registry HOST:PORT  a loopback registry spoken to over plain http (verifyImages)\n"
          "Mutations run first, then validation on the mutated objects. Exit status: 0 no Enforce violation,\n"
          "1 an Enforce rule failed, 2 usage or load error.\n");
}

static int slurp(const char *path, sk_buf_t *b) {
  FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!f) return sk_err_from_errno(errno);
  char chunk[65536];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (b->len + n > POL_CLI_MAX_BYTES) {
      rc = SK_ELIMIT;
      break;
    }
    sk_buf_append(b, chunk, n);
  }
  if (f != stdin) fclose(f);
  return rc;
}

typedef struct cli_counts {
  size_t resources, pass, fail, warn, error, skip, enforce_fail;
} cli_counts_t;

static void eval_doc(const pol_set_t *set, const char *file, size_t idx, const json_t *obj, int quiet,
                     cli_counts_t *c) {
  json_t *req = pol_request_for(obj, NULL, "CREATE", NULL);
  pol_report_t rep;
  pol_report_init(&rep);
  pol_evaluate(set, req, &rep);
  c->resources++;
  const char *kind = sk_json_get_str(obj, "kind", "?"), *ns = sk_json_get_str(obj, "metadata.namespace", NULL);
  const char *name = sk_json_get_str(obj, "metadata.name", "?");
  for (size_t i = 0; i < rep.n; i++) {
    const pol_result_t *x = &rep.v[i];
    switch (x->status) {
    case POL_PASS: c->pass++; continue;
    case POL_SKIP: c->skip++; continue;
    case POL_WARN: c->warn++; break;
    case POL_FAIL:
      if (x->action == POL_ENFORCE) c->fail++, c->enforce_fail++;
      else c->warn++;
      break;
    case POL_ERROR:
      c->error++;
      if (x->action == POL_ENFORCE) c->enforce_fail++;
      break;
    }
    const char *label = x->status == POL_ERROR ? "error" : x->action == POL_ENFORCE ? "fail" : "warn";
    printf("%s: document %zu: %s/%s%s%s: %s/%s: %s: %s\n", file, idx + 1, kind, ns ? ns : "", ns ? "/" : "", name,
           x->policy, x->rule, label, x->message ? x->message : "");
  }
  (void)quiet;
  pol_report_done(&rep);
  json_decref(req);
}

static int eval_file(const pol_set_t *set, const char *path, int quiet, cli_counts_t *c) {
  struct stat st;
  if (strcmp(path, "-") && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
    /* a directory: its YAML and JSON files in name order */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "%s", path);
    DIR *d = opendir(path);
    if (!d) {
      fprintf(stderr, "skiff policy test: %s: %s\n", path, strerror(errno));
      return 2;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096) {
      size_t l = strlen(de->d_name);
      if (de->d_name[0] == '.') continue;
      if (!((l > 5 && !strcmp(de->d_name + l - 5, ".yaml")) || (l > 4 && !strcmp(de->d_name + l - 4, ".yml")) ||
            (l > 5 && !strcmp(de->d_name + l - 5, ".json"))))
        continue;
      if (n == cap) names = sk_xrealloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
      names[n++] = sk_xstrdup(de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i + 1 < n; i++)
      for (size_t j = i + 1; j < n; j++)
        if (strcmp(names[i], names[j]) > 0) {
          char *t = names[i];
          names[i] = names[j];
          names[j] = t;
        }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
      char full[4600];
      snprintf(full, sizeof full, "%s/%s", cmd, names[i]);
      int r = eval_file(set, full, quiet, c);
      if (r > rc) rc = r;
      free(names[i]);
    }
    free(names);
    return rc;
  }
  sk_buf_t b;
  sk_buf_init(&b);
  int rc = slurp(path, &b);
  if (rc < 0) {
    fprintf(stderr, "skiff policy test: %s: %s\n", path, sk_strerror(rc));
    sk_buf_done(&b);
    return 2;
  }
  json_t *docs = NULL;
  char err[256];
  sk_yaml_opts_t yo = {.max_bytes = POL_CLI_MAX_BYTES};
  rc = sk_yaml_load_all(b.data ? b.data : "", b.len, &yo, &docs, err, sizeof err);
  sk_buf_done(&b);
  if (rc < 0) {
    fprintf(stderr, "skiff policy test: %s:%s\n", path, err);
    return 2;
  }
  size_t i;
  json_t *d;
  json_array_foreach(docs, i, d) {
    if (!json_is_object(d)) continue;
    const char *kind = sk_json_get_str(d, "kind", "");
    if (!strcmp(kind, "List") && json_is_array(json_object_get(d, "items"))) {
      size_t j;
      json_t *it;
      json_array_foreach(json_object_get(d, "items"), j, it) if (json_is_object(it)) eval_doc(set, path, i, it, quiet, c);
      continue;
    }
    eval_doc(set, path, i, d, quiet, c);
  }
  json_decref(docs);
  return 0;
}

int pol_cli_test(int argc, char **argv) {
  int quiet = 0, i = 1, first = -1, npos = 0;
  const char *insecure[8];
  size_t ninsecure = 0;
  if (argc > 0 && argv[0] && strcmp(argv[0], "test")) i = 0; /* called with or without the verb */
  int *pos = sk_xcalloc((size_t)argc + 1, sizeof *pos);
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      cli_usage(stdout);
      free(pos);
      return 0;
    }
    if (!strcmp(argv[i], "-q")) {
      quiet = 1;
      continue;
    }
    if (!strcmp(argv[i], "--insecure-registry") && i + 1 < argc && ninsecure < 8) {
      insecure[ninsecure++] = argv[++i];
      continue;
    }
    if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "skiff policy test: unknown option %s\n", argv[i]);
      cli_usage(stderr);
      free(pos);
      return 2;
    }
    pos[npos++] = i;
  }
  if (npos < 2) {
    cli_usage(stderr);
    free(pos);
    return 2;
  }
  first = pos[0];
  pol_set_t set;
  pol_set_init(&set);
  char err[1024];
  if (pol_set_load_path(&set, argv[first], err, sizeof err) < 0) {
    fprintf(stderr, "skiff policy test: %s\n", err);
    pol_set_done(&set);
    free(pos);
    return 2;
  }
  /* verifyImages rules reach registries over https (system CAs) */
  pol_images_t *images = NULL;
  pol_registry_opts_t ro = {.insecure = insecure,
                            .ninsecure = ninsecure,
                            .username = getenv("SKIFF_REGISTRY_USERNAME"),
                            .password = getenv("SKIFF_REGISTRY_PASSWORD")};
  if (set.nverify) pol_images_new(&ro, 0, 0, &images);
  set.images = images;
  cli_counts_t c = {0};
  int rc = 0;
  for (int k = 1; k < npos; k++) {
    int r = eval_file(&set, argv[pos[k]], quiet, &c);
    if (r > rc) rc = r;
  }
  if (!quiet)
    printf("%zu resources, %zu policies: pass %zu, fail %zu, warn %zu, error %zu, skip %zu\n", c.resources, set.n,
           c.pass, c.fail, c.warn, c.error, c.skip);
  pol_set_done(&set);
  pol_images_free(images);
  free(pos);
  if (rc) return rc;
  return c.enforce_fail ? 1 : 0;
}

/* ---- PolicyReport (wgpolicyk8s.io/v1alpha2) ---- */

json_t *pol_policy_report(const pol_set_t *s, const json_t *resources, const char *namespace, size_t max_results) {
  json_t *rep = json_object();
  json_object_set_new(rep, "apiVersion", json_string("wgpolicyk8s.io/v1alpha2"));
  json_object_set_new(rep, "kind", json_string(namespace ? "PolicyReport" : "ClusterPolicyReport"));
  json_t *md = json_object();
  json_object_set_new(md, "name", json_string(namespace ? "skiff-policy" : "skiff-cluster-policy"));
  if (namespace) json_object_set_new(md, "namespace", json_string(namespace));
  json_t *labels = json_object();
  json_object_set_new(labels, "app.kubernetes.io/managed-by", json_string("skiff-policy"));
  json_object_set_new(md, "labels", labels);
  json_object_set_new(rep, "metadata", md);
  json_t *results = json_array();
  size_t counts[5] = {0}, dropped = 0;
  long now = (long)time(NULL);
  size_t i;
  json_t *obj;
  json_array_foreach(resources, i, obj) {
    if (!json_is_object(obj)) continue;
    const char *ns = sk_json_get_str(obj, "metadata.namespace", NULL);
    if (namespace ? !ns || strcmp(ns, namespace) : ns != NULL) continue;
    json_t *req = pol_request_for(obj, NULL, "CREATE", NULL);
    pol_report_t r;
    pol_report_init(&r);
    /* background scans use only policies with background: true */
    pol_set_t bg = *s;
    pol_policy_t *keep = sk_xcalloc(s->n ? s->n : 1, sizeof *keep);
    bg.v = keep;
    bg.n = 0;
    for (size_t k = 0; k < s->n; k++)
      if (s->v[k].background) keep[bg.n++] = s->v[k];
    pol_validate(&bg, req, &r);
    free(keep);
    for (size_t k = 0; k < r.n; k++) {
      const pol_result_t *x = &r.v[k];
      counts[x->status]++;
      if (json_array_size(results) >= max_results) {
        dropped++;
        continue;
      }
      json_t *e = json_object();
      json_object_set_new(e, "policy", json_string(x->policy));
      json_object_set_new(e, "rule", json_string(x->rule));
      json_object_set_new(e, "result", json_string(pol_status_name(x->status)));
      json_t *m = json_string(x->message ? x->message : "");
      json_object_set_new(e, "message", m ? m : json_string(""));
      json_object_set_new(e, "scored", json_true());
      json_object_set_new(e, "source", json_string("skiff-policy"));
      json_t *ref = json_object();
      json_object_set_new(ref, "apiVersion", json_string(sk_json_get_str(obj, "apiVersion", "")));
      json_object_set_new(ref, "kind", json_string(sk_json_get_str(obj, "kind", "")));
      json_object_set_new(ref, "name", json_string(sk_json_get_str(obj, "metadata.name", "")));
      if (ns) json_object_set_new(ref, "namespace", json_string(ns));
      const char *uid = sk_json_get_str(obj, "metadata.uid", NULL);
      if (uid) json_object_set_new(ref, "uid", json_string(uid));
      json_object_set_new(e, "resources", json_pack("[o]", ref));
      json_object_set_new(e, "timestamp", json_pack("{s:I,s:i}", "seconds", (json_int_t)now, "nanos", 0));
      json_array_append_new(results, e);
    }
    pol_report_done(&r);
    json_decref(req);
  }
  json_object_set_new(rep, "results", results);
  json_object_set_new(rep, "summary", json_pack("{s:I,s:I,s:I,s:I,s:I}", "pass", (json_int_t)counts[POL_PASS], "fail",
                                                (json_int_t)counts[POL_FAIL], "warn", (json_int_t)counts[POL_WARN],
                                                "error", (json_int_t)counts[POL_ERROR], "skip",
                                                (json_int_t)counts[POL_SKIP]));
  if (dropped) {
    json_t *ann = json_object();
    char n[32];
    snprintf(n, sizeof n, "%zu", dropped);
    json_object_set_new(ann, "skiff.dev/results-dropped", json_string(n));
    json_object_set_new(md, "annotations", ann);
  }
  return rep;
}
