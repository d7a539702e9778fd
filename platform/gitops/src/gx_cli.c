/* skiff app list|get|sync|diff|history|rollback|suspend|resume: the CLI side
 * of skiff-gitops. Everything goes through skiff-control's API (so its
 * tokens and roles apply): Applications are read there, and requests to the
 * reconciler are annotations on the Application (refresh, rollback,
 * suspended) that skiff-gitops acts on and answers in status. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gitops.h"
#include "skiff/config.h"
#include "skiff/err.h"
#include "skiff/json.h"

typedef struct aopts {
  const char *server, *token, *ns, *output, *ca;
  int wait;
  uint64_t timeout_ms;
  const char *args[3];
  size_t nargs;
} aopts_t;

static const char usage_text[] =
    "usage: skiff app VERB [flags]\n"
    "  list                       Applications: sync status, health, revision, repository\n"
    "  get NAME [-o yaml|json]    one Application with its status\n"
    "  sync NAME [--wait]         sync now (prunes what left Git); --wait for the result\n"
    "  diff NAME                  resources that differ from Git (exit 1 when any)\n"
    "  history NAME               recorded syncs: id, revision, result, author, message\n"
    "  rollback NAME REVISION [--wait]  sync to an earlier revision (automated sync must be off)\n"
    "  suspend NAME | resume NAME stop / restart reconciling the Application\n"
    "flags: -n NAMESPACE (default: default), --server URL ($SKIFF_SERVER; default https://127.0.0.1:7400 when\n"
    "       .skiff/control-state/ca/bundle.pem exists, else http://), --token T ($SKIFF_TOKEN),\n"
    "       --ca FILE ($SKIFF_CA; default .skiff/control-state/ca/bundle.pem): CA bundle for an https server,\n"
    "       --timeout DURATION (with --wait, default 60s)\n";

static int connect_ctl(const aopts_t *o, gx_ctl_t **c) {
  char err[512];
  /* like skiff apply: --ca, $SKIFF_CA, or control's bundle under .skiff/ when run from the checkout */
  const char *ca = o->ca ? o->ca : getenv("SKIFF_CA");
  if (!ca && access(".skiff/control-state/ca/bundle.pem", R_OK) == 0) ca = ".skiff/control-state/ca/bundle.pem";
  if (gx_ctl_new(o->server, o->token, ca, NULL, NULL, c, err, sizeof err) < 0) {
    fprintf(stderr, "skiff app: %s\n", err);
    return -1;
  }
  return 0;
}

static int get_app(gx_ctl_t *c, const aopts_t *o, const char *name, json_t **app) {
  char path[600], err[1024];
  snprintf(path, sizeof path, "/api/v1/applications/%s/%s", o->ns, name);
  if (gx_ctl_get_json(c, path, app, err, sizeof err) < 0) {
    fprintf(stderr, "skiff app: %s\n", err);
    return -1;
  }
  return 0;
}

static const char *st(const json_t *app, const char *path, const char *def) { return sk_json_get_str(app, path, def); }

static int cmd_list(gx_ctl_t *c, const aopts_t *o) {
  char path[300], err[1024];
  snprintf(path, sizeof path, "/api/v1/applications%s%s", o->ns && strcmp(o->ns, "*") ? "/" : "",
           o->ns && strcmp(o->ns, "*") ? o->ns : "");
  json_t *lst = NULL;
  if (gx_ctl_get_json(c, path, &lst, err, sizeof err) < 0) {
    fprintf(stderr, "skiff app: %s\n", err);
    return 1;
  }
  if (o->output && !strcmp(o->output, "json")) {
    char *s = json_dumps(lst, JSON_INDENT(2));
    puts(s);
    free(s);
    json_decref(lst);
    return 0;
  }
  printf("%-12s %-24s %-10s %-12s %-9s %s\n", "NAMESPACE", "NAME", "SYNC", "HEALTH", "REVISION", "REPO");
  size_t i;
  json_t *a;
  json_array_foreach(json_object_get(lst, "items"), i, a) {
    printf("%-12s %-24s %-10s %-12s %-9.9s %s\n", st(a, "metadata.namespace", ""), st(a, "metadata.name", ""),
           st(a, "status.sync.status", "Unknown"), st(a, "status.health.status", "Unknown"),
           st(a, "status.sync.revision", "-"), st(a, "spec.source.repoURL", ""));
  }
  json_decref(lst);
  return 0;
}

static int cmd_get(gx_ctl_t *c, const aopts_t *o) {
  json_t *app = NULL;
  if (get_app(c, o, o->args[0], &app) < 0) return 1;
  if (o->output && !strcmp(o->output, "json")) {
    char *s = json_dumps(app, JSON_INDENT(2));
    puts(s);
    free(s);
  } else if (o->output && !strcmp(o->output, "yaml")) {
    char *s = json_dumps(app, JSON_INDENT(2)); /* JSON is YAML */
    puts(s);
    free(s);
  } else {
    printf("Name:        %s/%s\n", st(app, "metadata.namespace", ""), st(app, "metadata.name", ""));
    printf("Repo:        %s\n", st(app, "spec.source.repoURL", ""));
    printf("Target:      %s  path %s\n", st(app, "spec.source.targetRevision", "HEAD"), st(app, "spec.source.path", "."));
    printf("Sync:        %s  revision %s\n", st(app, "status.sync.status", "Unknown"), st(app, "status.sync.revision", "-"));
    printf("Health:      %s\n", st(app, "status.health.status", "Unknown"));
    printf("Last sync:   %s  %s  %s\n", st(app, "status.operationState.phase", "-"),
           st(app, "status.operationState.finishedAt", "-"), st(app, "status.operationState.message", ""));
    size_t i;
    json_t *cd;
    json_array_foreach(sk_json_get(app, "status.conditions"), i, cd)
      printf("Condition:   %s: %s\n", st(cd, "type", ""), st(cd, "message", ""));
    printf("\n%-14s %-12s %-28s %-10s %s\n", "KIND", "NAMESPACE", "NAME", "STATUS", "HEALTH");
    json_t *r;
    json_array_foreach(sk_json_get(app, "status.resources"), i, r)
      printf("%-14s %-12s %-28s %-10s %s\n", st(r, "kind", ""), st(r, "namespace", ""), st(r, "name", ""),
             st(r, "status", ""), st(r, "health", ""));
  }
  json_decref(app);
  return 0;
}

static int patch_ann(gx_ctl_t *c, const aopts_t *o, const char *key, const char *value) {
  json_t *p = json_pack("{s:{s:{s:s?}}}", "metadata", "annotations", key, value);
  char *body = json_dumps(p, JSON_COMPACT);
  char path[600];
  snprintf(path, sizeof path, "/api/v1/applications/%s/%s", o->ns, o->args[0]);
  gx_ctl_resp_t r;
  int rc = gx_ctl_call(c, "PATCH", path, "application/merge-patch+json", body, strlen(body), &r);
  if (rc >= 0 && r.status != 200) {
    char m[1024];
    gx_ctl_message(&r, m, sizeof m);
    fprintf(stderr, "skiff app: %s: %s\n", o->args[0], m);
    rc = -1;
  } else if (rc < 0) {
    fprintf(stderr, "skiff app: control unreachable: %s\n", sk_strerror(rc));
  }
  gx_ctl_resp_done(&r);
  free(body);
  json_decref(p);
  return rc < 0 ? -1 : 0;
}

/* Waits until the status answers request (handledRequests.<field>). */
static int wait_handled(gx_ctl_t *c, const aopts_t *o, const char *field, const char *nonce) {
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    json_t *app = NULL;
    if (get_app(c, o, o->args[0], &app) < 0) return 1;
    char p[64];
    snprintf(p, sizeof p, "status.handledRequests.%s", field);
    if (!strcmp(st(app, p, ""), nonce)) {
      /* errors fail the wait; warnings (UnknownSyncOption, ...) do not */
      const json_t *err_cond = NULL;
      size_t ci;
      json_t *cd;
      json_array_foreach(sk_json_get(app, "status.conditions"), ci, cd) {
        const char *ty = st(cd, "type", "");
        if (!err_cond && (!strcmp(ty, "SyncError") || !strcmp(ty, "ComparisonError") || !strcmp(ty, "RollbackError")))
          err_cond = cd;
      }
      int failed = err_cond || !strcmp(st(app, "status.operationState.phase", ""), "Failed");
      if (failed) {
        const char *m = err_cond ? st(err_cond, "message", "") : st(app, "status.operationState.message", "");
        fprintf(stderr, "skiff app: %s: sync failed: %s\n", o->args[0], m);
      } else {
        printf("%s synced to %.12s (%s, %s)\n", o->args[0], st(app, "status.sync.revision", ""),
               st(app, "status.sync.status", ""), st(app, "status.health.status", ""));
      }
      json_decref(app);
      return failed ? 1 : 0;
    }
    json_decref(app);
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t el = (uint64_t)(t.tv_sec - t0.tv_sec) * 1000 + (uint64_t)((t.tv_nsec - t0.tv_nsec) / 1000000);
    if (el > o->timeout_ms) {
      fprintf(stderr, "skiff app: %s: no answer from skiff-gitops in time (is it running?)\n", o->args[0]);
      return 1;
    }
    usleep(100 * 1000);
  }
}

static void nonce(char *out, size_t len) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(out, len, "%lld.%09ld", (long long)ts.tv_sec, ts.tv_nsec);
}

static int cmd_sync(gx_ctl_t *c, const aopts_t *o) {
  char n[64];
  nonce(n, sizeof n);
  if (patch_ann(c, o, GX_ANN_REFRESH, n) < 0) return 1;
  if (!o->wait) {
    printf("%s: sync requested\n", o->args[0]);
    return 0;
  }
  return wait_handled(c, o, "refresh", n);
}

static int cmd_rollback(gx_ctl_t *c, const aopts_t *o) {
  json_t *app = NULL;
  if (get_app(c, o, o->args[0], &app) < 0) return 1;
  int automated = json_is_object(sk_json_get(app, "spec.syncPolicy.automated"));
  json_decref(app);
  if (automated) {
    fprintf(stderr, "skiff app: %s: rollback needs automated sync off (remove spec.syncPolicy.automated)\n",
            o->args[0]);
    return 1;
  }
  const char *rev = o->args[1];
  if (strlen(rev) > 64 || strchr(rev, '@')) {
    fprintf(stderr, "skiff app: bad revision '%s'\n", rev);
    return 2;
  }
  char n[64], v[160];
  nonce(n, sizeof n);
  snprintf(v, sizeof v, "%s@%s", rev, n);
  if (patch_ann(c, o, GX_ANN_ROLLBACK, v) < 0) return 1;
  if (!o->wait) {
    printf("%s: rollback to %s requested\n", o->args[0], rev);
    return 0;
  }
  return wait_handled(c, o, "rollback", v);
}

static int cmd_diff(gx_ctl_t *c, const aopts_t *o) {
  json_t *app = NULL;
  if (get_app(c, o, o->args[0], &app) < 0) return 2;
  int n = 0;
  size_t i;
  json_t *r;
  json_array_foreach(sk_json_get(app, "status.resources"), i, r) {
    if (strcmp(st(r, "status", ""), "OutOfSync")) continue;
    printf("%s %s/%s: %s%s%s\n", st(r, "kind", ""), st(r, "namespace", ""), st(r, "name", ""),
           st(r, "diff", "") [0] ? "differs at " : "", st(r, "diff", ""), st(r, "message", ""));
    n++;
  }
  if (!n) printf("%s: in sync with %.12s\n", o->args[0], st(app, "status.sync.revision", "-"));
  json_decref(app);
  return n ? 1 : 0;
}

static int cmd_history(gx_ctl_t *c, const aopts_t *o) {
  json_t *app = NULL;
  if (get_app(c, o, o->args[0], &app) < 0) return 1;
  printf("%-4s %-12s %-10s %-8s %-8s %-21s %s\n", "ID", "REVISION", "RESULT", "CHANGED", "PRUNED", "DEPLOYED", "AUTHOR / MESSAGE");
  size_t i;
  json_t *h;
  json_array_foreach(sk_json_get(app, "status.history"), i, h) {
    printf("%-4lld %-12.12s %-10s %-8lld %-8lld %-21s %s: %s\n", (long long)sk_json_get_int(h, "id", 0),
           st(h, "revision", ""), st(h, "result", ""), (long long)sk_json_get_int(h, "resourcesChanged", 0),
           (long long)sk_json_get_int(h, "resourcesPruned", 0), st(h, "deployedAt", ""), st(h, "author", ""),
           st(h, "message", ""));
  }
  json_decref(app);
  return 0;
}

int gx_cli_main(int argc, char **argv) {
  aopts_t o = {.server = getenv("SKIFF_SERVER"), .token = getenv("SKIFF_TOKEN"), .ns = "default",
               .timeout_ms = 60000};
  if (argc < 2) {
    fputs(usage_text, stderr);
    return 2;
  }
  const char *verb = argv[1];
  if (!strcmp(verb, "help") || !strcmp(verb, "--help") || !strcmp(verb, "-h")) {
    fputs(usage_text, stdout);
    return 0;
  }
  static const struct option lo[] = {{"server", required_argument, NULL, 's'}, {"token", required_argument, NULL, 't'},
                                     {"namespace", required_argument, NULL, 'n'}, {"output", required_argument, NULL, 'o'},
                                     {"wait", no_argument, NULL, 'w'}, {"timeout", required_argument, NULL, 'T'}, {"ca", required_argument, NULL, 'C'},
                                     {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  optind = 2;
  int ch;
  while ((ch = getopt_long(argc, argv, "n:o:h", lo, NULL)) != -1) {
    switch (ch) {
    case 's': o.server = optarg; break;
    case 't': o.token = optarg; break;
    case 'n': o.ns = optarg; break;
    case 'o': o.output = optarg; break;
    case 'w': o.wait = 1; break;
    case 'C': o.ca = optarg; break;
    case 'T': {
      char m[128];
      if (sk_config_parse_duration(optarg, &o.timeout_ms, m, sizeof m) < 0) {
        fprintf(stderr, "skiff app: --timeout: %s\n", m);
        return 2;
      }
      break;
    }
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 2;
    }
  }
  for (int i = optind; i < argc && o.nargs < 3; i++) o.args[o.nargs++] = argv[i];
  /* as skiff apply: https when control's local CA bundle is there */
  if (!o.server || !*o.server)
    o.server = access(".skiff/control-state/ca/bundle.pem", R_OK) == 0 ? "https://127.0.0.1:7400" : "http://127.0.0.1:7400";
  static const struct {
    const char *verb;
    size_t nargs;
    int (*fn)(gx_ctl_t *, const aopts_t *);
  } verbs[] = {{"list", 0, cmd_list},       {"get", 1, cmd_get},   {"sync", 1, cmd_sync},
               {"diff", 1, cmd_diff},       {"history", 1, cmd_history}, {"rollback", 2, cmd_rollback},
               {"suspend", 1, NULL},        {"resume", 1, NULL}};
  for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
    if (strcmp(verbs[i].verb, verb)) continue;
    if (o.nargs != verbs[i].nargs) {
      fprintf(stderr, "skiff app %s: expected %zu argument(s)\n%s", verb, verbs[i].nargs, usage_text);
      return 2;
    }
    gx_ctl_t *c = NULL;
    if (connect_ctl(&o, &c) < 0) return 1;
    int rc;
    if (verbs[i].fn) rc = verbs[i].fn(c, &o);
    else {
      int susp = !strcmp(verb, "suspend");
      rc = patch_ann(c, &o, GX_ANN_SUSPENDED, susp ? "true" : NULL) < 0 ? 1 : 0;
      if (!rc) printf("%s %s\n", o.args[0], susp ? "suspended" : "resumed");
    }
    gx_ctl_free(c);
    return rc;
  }
  fprintf(stderr, "skiff app: unknown verb '%s'\n%s", verb, usage_text);
  return 2;
}
