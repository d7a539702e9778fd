/* Gateway API HTTPRoute (gateway.networking.k8s.io/v1) <-> Skiff Route.
 *
 * The supported subset has the same shape in both (parentRefs, hostnames,
 * rules[].matches path/headers/queryParams/method, rules[].filters
 * RequestHeaderModifier/URLRewrite, rules[].backendRefs with weight); the
 * rule timeout is timeouts.request in HTTPRoute and timeout in Route.
 * Anything else in an HTTPRoute was already refused by validation with its
 * field path, so nothing is silently dropped. A Route converted from an
 * HTTPRoute carries the annotation skiff.dev/source-kind: HTTPRoute. */
#include <string.h>

#include "ctl_kinds_int.h"
#include "skiff/err.h"
#include "skiff/json.h"

static json_t *convert_rules(const json_t *rules, int to_route) {
  json_t *out = json_array();
  size_t i;
  json_t *r;
  json_array_foreach(rules, i, r) {
    json_t *nr = json_deep_copy(r);
    if (to_route) {
      json_t *t = json_object_get(nr, "timeouts");
      json_t *req = t ? json_object_get(t, "request") : NULL;
      if (req) json_object_set(nr, "timeout", req);
      json_object_del(nr, "timeouts");
    } else {
      json_t *t = json_object_get(nr, "timeout");
      if (t) {
        json_object_set_new(nr, "timeouts", json_pack("{s:O}", "request", t));
        json_object_del(nr, "timeout");
      }
    }
    json_array_append_new(out, nr);
  }
  return out;
}

static json_t *convert(const json_t *in, const char *api_version, const char *kind, int to_route) {
  json_t *out = json_object();
  json_object_set_new(out, "apiVersion", json_string(api_version));
  json_object_set_new(out, "kind", json_string(kind));
  json_t *meta = json_deep_copy(json_object_get(in, "metadata"));
  if (!json_is_object(meta)) {
    json_decref(meta);
    meta = json_object();
  }
  json_t *ann = json_object_get(meta, "annotations");
  if (to_route) {
    if (!json_is_object(ann)) {
      ann = json_object();
      json_object_set_new(meta, "annotations", ann);
    }
    json_object_set_new(ann, CTL_ANN_SOURCE_KIND, json_string("HTTPRoute"));
  } else if (json_is_object(ann)) {
    json_object_del(ann, CTL_ANN_SOURCE_KIND);
    if (!json_object_size(ann)) json_object_del(meta, "annotations");
  }
  json_object_set_new(out, "metadata", meta);
  const json_t *spec = json_object_get(in, "spec");
  json_t *ns = json_object();
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)spec, k, v) {
    if (!strcmp(k, "rules") && json_is_array(v)) json_object_set_new(ns, k, convert_rules(v, to_route));
    else json_object_set_new(ns, k, json_deep_copy(v));
  }
  json_object_set_new(out, "spec", ns);
  json_t *st = json_object_get(in, "status");
  if (st) json_object_set_new(out, "status", json_deep_copy(st));
  return out;
}

int ctl__httproute_to_route(const json_t *in, json_t **out, ctl_errs_t *errs) {
  (void)errs;
  *out = convert(in, "skiff.dev/v1", "Route", 1);
  return 0;
}

int ctl__route_to_httproute(const json_t *stored, json_t **out) {
  *out = convert(stored, "gateway.networking.k8s.io/v1", "HTTPRoute", 0);
  return 0;
}
