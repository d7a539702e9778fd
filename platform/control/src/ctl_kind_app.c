/* The Application kind (skiff-gitops, docs/gitops.md): Skiff's own
 * skiff.dev/v1 Application, and Argo CD's argoproj.io/v1alpha1 Application
 * accepted as is for the supported subset and stored as the Skiff kind
 * (annotation skiff.dev/source-api-version remembers where it came from, so
 * /api/v1/applications.argoproj.io/... gives it back in Argo's shape).
 *
 * Supported spec: project, source {repoURL, targetRevision, path,
 * directory {recurse, include, exclude}}, destination {region, namespace,
 * server, name}, syncPolicy {automated {prune, selfHeal, allowEmpty},
 * syncOptions, retry {limit, backoff {duration, factor, maxDuration}}},
 * ignoreDifferences [{group, kind, name, namespace, jsonPointers}],
 * revisionHistoryLimit. Anything else is refused with its field path. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ctl_kinds_int.h"
#include "skiff/config.h"
#include "skiff/err.h"
#include "skiff/json.h"

#define APP_ANN_SOURCE_API "skiff.dev/source-api-version"
#define ARGO_API "argoproj.io/v1alpha1"

static int bool_field(const json_t *obj, const char *field, const char *key, ctl_errs_t *errs) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v) || json_is_boolean(v)) return 0;
  char f[CTL_FIELD_MAX];
  ctl__path(f, sizeof f, field, key);
  ctl_errs_add(errs, f, "must be true or false");
  return -1;
}

static int repo_url_ok(const char *u) {
  static const char *const schemes[] = {"file://", "git://", "http://", "https://", "ssh://", NULL};
  for (size_t i = 0; schemes[i]; i++)
    if (!strncasecmp(u, schemes[i], strlen(schemes[i])) && u[strlen(schemes[i])]) return 1;
  /* scp-like ssh: user@host:path */
  const char *at = strchr(u, '@'), *colon = strchr(u, ':');
  return at && colon && at < colon && colon[1];
}

static void validate_source(const json_t *src, ctl_errs_t *errs) {
  static const char *const keys[] = {"repoURL", "targetRevision", "path", "directory", NULL};
  ctl__known_keys(src, "spec.source", keys, errs);
  const char *url = ctl__str(src, "spec.source", "repoURL", 1, 2048, errs);
  if (url && !repo_url_ok(url))
    ctl_errs_add(errs, "spec.source.repoURL", "must be a file://, git://, http(s):// or ssh:// URL");
  ctl__str(src, "spec.source", "targetRevision", 0, 255, errs);
  const char *path = ctl__str(src, "spec.source", "path", 0, 1024, errs);
  if (path && (path[0] == '/' || strstr(path, "..")))
    ctl_errs_add(errs, "spec.source.path", "must be relative to the repository root, without '..'");
  const json_t *dir = ctl__obj(src, "spec.source", "directory", 0, errs);
  if (dir) {
    static const char *const dkeys[] = {"recurse", "include", "exclude", NULL};
    ctl__known_keys(dir, "spec.source.directory", dkeys, errs);
    bool_field(dir, "spec.source.directory", "recurse", errs);
    ctl__str(dir, "spec.source.directory", "include", 0, 1024, errs);
    ctl__str(dir, "spec.source.directory", "exclude", 0, 1024, errs);
  }
}


/* Argo's backoff durations: a bare number of seconds ("5") or a duration
 * ("2m", "1h"). */
static void argo_duration(const json_t *obj, const char *field, const char *key, ctl_errs_t *errs) {
  const char *s = ctl__str(obj, field, key, 0, 32, errs);
  if (!s) return;
  size_t n = strlen(s), i = 0;
  while (i < n && isdigit((unsigned char)s[i])) i++;
  if (n && i == n) return;
  uint64_t ms;
  char msg[128];
  if (sk_config_parse_duration(s, &ms, msg, sizeof msg) < 0) {
    char f[CTL_FIELD_MAX];
    ctl__path(f, sizeof f, field, key);
    ctl_errs_add(errs, f, "must be a number of seconds or a duration like 30s, 2m, 1h");
  }
}

static void validate_retry(const json_t *re, ctl_errs_t *errs) {
  static const char *const rkeys[] = {"limit", "backoff", NULL};
  ctl__known_keys(re, "spec.syncPolicy.retry", rkeys, errs);
  ctl__int(re, "spec.syncPolicy.retry", "limit", -1, 1000000, NULL, errs);
  const json_t *bo = ctl__obj(re, "spec.syncPolicy.retry", "backoff", 0, errs);
  if (!bo) return;
  static const char *const bkeys[] = {"duration", "factor", "maxDuration", NULL};
  ctl__known_keys(bo, "spec.syncPolicy.retry.backoff", bkeys, errs);
  argo_duration(bo, "spec.syncPolicy.retry.backoff", "duration", errs);
  argo_duration(bo, "spec.syncPolicy.retry.backoff", "maxDuration", errs);
  ctl__int(bo, "spec.syncPolicy.retry.backoff", "factor", 1, 100, NULL, errs);
}

/* ignoreDifferences: group/kind/name/namespace and jsonPointers (RFC 6901);
 * jqPathExpressions and managedFieldsManagers are not supported. */
static void validate_ignore(const json_t *arr, ctl_errs_t *errs) {
  size_t i;
  json_t *o;
  json_array_foreach(arr, i, o) {
    char f[CTL_FIELD_MAX];
    ctl__index(f, sizeof f, "spec.ignoreDifferences", i);
    if (!json_is_object(o)) {
      ctl_errs_add(errs, f, "must be an object");
      continue;
    }
    static const char *const keys[] = {"group", "kind", "name", "namespace", "jsonPointers", NULL};
    ctl__known_keys(o, f, keys, errs);
    ctl__str(o, f, "group", 0, 253, errs);
    ctl__str(o, f, "kind", 1, 63, errs);
    ctl__str(o, f, "name", 0, 253, errs);
    ctl__str(o, f, "namespace", 0, CTL_NS_LEN, errs);
    const json_t *ptrs = ctl__array(o, f, "jsonPointers", 1, 64, errs);
    size_t j;
    json_t *p;
    if (ptrs) json_array_foreach(ptrs, j, p) {
        char pf[CTL_FIELD_MAX], base[CTL_FIELD_MAX];
        ctl__path(base, sizeof base, f, "jsonPointers");
        ctl__index(pf, sizeof pf, base, j);
        const char *ps = json_string_value(p);
        if (!ps || ps[0] != '/' || strlen(ps) > 512)
          ctl_errs_add(errs, pf, "must be a JSON pointer (RFC 6901) such as /spec/rules/0/backendRefs/0/weight");
      }
  }
}

static void validate_app(const json_t *obj, ctl_errs_t *errs) {
  static const char *const top[] = {"apiVersion", "kind", "metadata", "spec", "status", NULL};
  ctl__known_keys(obj, "", top, errs);
  const json_t *spec = ctl__obj(obj, "", "spec", 1, errs);
  if (!spec) return;
  static const char *const skeys[] = {"project",    "source", "destination", "syncPolicy", "revisionHistoryLimit",
                                      "ignoreDifferences", NULL};
  ctl__known_keys(spec, "spec", skeys, errs);
  ctl__str(spec, "spec", "project", 0, 253, errs);
  const json_t *src = ctl__obj(spec, "spec", "source", 1, errs);
  if (src) validate_source(src, errs);
  const json_t *dst = ctl__obj(spec, "spec", "destination", 0, errs);
  if (dst) {
    static const char *const dkeys[] = {"region", "namespace", "server", "name", NULL};
    ctl__known_keys(dst, "spec.destination", dkeys, errs);
    ctl__str(dst, "spec.destination", "region", 0, 63, errs);
    const char *ns = ctl__str(dst, "spec.destination", "namespace", 0, CTL_NS_LEN, errs);
    if (ns && *ns && !ctl_valid_ns(ns))
      ctl_errs_add(errs, "spec.destination.namespace", "must be a DNS label: lowercase alphanumerics and '-'");
    ctl__str(dst, "spec.destination", "server", 0, 1024, errs);
    ctl__str(dst, "spec.destination", "name", 0, 253, errs);
  }
  const json_t *sp = ctl__obj(spec, "spec", "syncPolicy", 0, errs);
  if (sp) {
    static const char *const pkeys[] = {"automated", "syncOptions", "retry", NULL};
    ctl__known_keys(sp, "spec.syncPolicy", pkeys, errs);
    const json_t *au = ctl__obj(sp, "spec.syncPolicy", "automated", 0, errs);
    if (au) {
      static const char *const akeys[] = {"prune", "selfHeal", "allowEmpty", NULL};
      ctl__known_keys(au, "spec.syncPolicy.automated", akeys, errs);
      bool_field(au, "spec.syncPolicy.automated", "prune", errs);
      bool_field(au, "spec.syncPolicy.automated", "selfHeal", errs);
      bool_field(au, "spec.syncPolicy.automated", "allowEmpty", errs);
    }
    const json_t *so = ctl__array(sp, "spec.syncPolicy", "syncOptions", 0, 32, errs);
    size_t i;
    json_t *o;
    if (so) json_array_foreach(so, i, o) {
        char f[CTL_FIELD_MAX];
        ctl__index(f, sizeof f, "spec.syncPolicy.syncOptions", i);
        if (!json_is_string(o) || !strchr(json_string_value(o), '='))
          ctl_errs_add(errs, f, "must be a \"Name=value\" string");
      }
    const json_t *re = ctl__obj(sp, "spec.syncPolicy", "retry", 0, errs);
    if (re) validate_retry(re, errs);
  }
  const json_t *ig = ctl__array(spec, "spec", "ignoreDifferences", 0, 64, errs);
  if (ig) validate_ignore(ig, errs);
  ctl__int(spec, "spec", "revisionHistoryLimit", 1, 100, NULL, errs);
}

static json_t *convert(const json_t *in, const char *api_version, int to_skiff) {
  json_t *out = json_deep_copy(in);
  json_object_set_new(out, "apiVersion", json_string(api_version));
  json_t *m = json_object_get(out, "metadata");
  if (!json_is_object(m)) return out;
  json_t *ann = json_object_get(m, "annotations");
  if (to_skiff) {
    if (!json_is_object(ann)) {
      ann = json_object();
      json_object_set_new(m, "annotations", ann);
    }
    json_object_set_new(ann, APP_ANN_SOURCE_API, json_string(ARGO_API));
  } else if (json_is_object(ann)) {
    json_object_del(ann, APP_ANN_SOURCE_API);
    if (!json_object_size(ann)) json_object_del(m, "annotations");
  }
  return out;
}

static int argo_to_app(const json_t *in, json_t **out, ctl_errs_t *errs) {
  (void)errs;
  *out = convert(in, "skiff.dev/v1", 1);
  return 0;
}

static int app_to_argo(const json_t *stored, json_t **out) {
  *out = convert(stored, ARGO_API, 0);
  return 0;
}

const ctl_kind_t ctl__kind_application = {
    .kind = "Application", .plural = "applications", .api_version = "skiff.dev/v1", .namespaced = 1,
    .validate = validate_app, .short_cols = "REPO,REVISION,SYNC,HEALTH"};

const ctl_kind_t ctl__kind_argo_application = {
    .kind = "Application", .plural = "applications.argoproj.io", .api_version = ARGO_API, .namespaced = 1,
    .validate = validate_app, .stored_as = "Application", .to_stored = argo_to_app, .from_stored = app_to_argo,
    .short_cols = "REPO,REVISION,SYNC,HEALTH"};
