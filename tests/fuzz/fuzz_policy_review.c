/* fuzz_policy_review.c - skiff-policy's AdmissionReview decoder, then
 * validation, mutation and the encoded answer with a fixed policy set. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "skiff/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char policies[] =
    "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: p}\nspec:\n"
    "  validationFailureAction: Enforce\n  rules:\n"
    "  - name: labels\n    match: {any: [{resources: {kinds: [Pod], namespaces: ['*']}}]}\n"
    "    validate:\n      message: 'need a name on {{ request.object.metadata.name || ''x'' }}'\n"
    "      pattern: {metadata: {labels: {app.kubernetes.io/name: '?*'}}}\n"
    "  - name: images\n    match: {any: [{resources: {kinds: ['v1/Pod']}}]}\n"
    "    validate:\n      pattern:\n        spec:\n          =(hostNetwork): false\n          containers:\n"
    "          - (image): '*:latest'\n            imagePullPolicy: Always\n            =(resources): {=(limits): {=(memory): '<=2Gi'}}\n"
    "  - name: deny\n    match: {any: [{resources: {kinds: ['*'], operations: [DELETE, UPDATE]}}]}\n"
    "    exclude: {any: [{subjects: [{kind: User, name: 'admin*'}]}]}\n"
    "    validate:\n      message: '{{ request.userInfo.username }} may not'\n      deny:\n        conditions:\n"
    "          any:\n          - {key: '{{ request.oldObject.metadata.labels.protected || '''' }}', operator: Equals, value: 'true'}\n"
    "          - {key: '{{ request.object.spec.replicas || `0` }}', operator: GreaterThan, value: 10}\n"
    "          - {key: ['{{ request.operation }}'], operator: AnyIn, value: [CONNECT]}\n"
    "  - name: add\n    match: {any: [{resources: {kinds: [Pod]}}]}\n"
    "    mutate:\n      patchStrategicMerge:\n        metadata:\n          labels: {+(foo): bar}\n"
    "          annotations: {+(who): '{{ request.userInfo.username }}'}\n"
    "        spec:\n          containers:\n          - (name): '*'\n            +(imagePullPolicy): IfNotPresent\n"
    "  - name: json\n    match: {any: [{resources: {kinds: [Pod], selector: {matchLabels: {a: b}}}}]}\n"
    "    mutate:\n      patchesJson6902: |-\n        - {op: add, path: /spec/tolerations, value: []}\n"
    "        - {op: add, path: /spec/tolerations/-, value: {key: x}}\n"
    "        - {op: copy, from: /metadata/name, path: /metadata/labels/copied}\n";

static pol_set_t *set;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!set) {
    static pol_set_t s;
    char err[512];
    pol_set_init(&s);
    if (pol_set_load_text(&s, "fuzz", policies, strlen(policies), err, sizeof err) < 0) abort();
    set = &s;
  }
  json_t *review = NULL;
  char err[512];
  if (pol_review_decode((const char *)data, size, 1 << 20, 64, &review, err, sizeof err) < 0) return 0;
  const json_t *req = json_object_get(review, "request");
  for (int mutate = 0; mutate < 2; mutate++) {
    pol_report_t r;
    pol_report_init(&r);
    if ((mutate ? pol_mutate(set, req, &r) : pol_validate(set, req, &r)) == 0) {
      sk_buf_t b;
      sk_buf_init(&b);
      pol_review_encode(review, &r, mutate, &b);
      /* the hand-written answer is JSON with the request's uid */
      json_t *ans = json_loadb(b.data, b.len, 0, NULL);
      if (!ans || !json_equal(sk_json_get(ans, "response.uid"), json_object_get(req, "uid"))) abort();
      json_decref(ans);
      sk_buf_done(&b);
      if (mutate && r.patch) {
        /* the patch must turn the object into the mutated one */
        json_t *obj = json_object_get(req, "object");
        json_t *copy = obj ? json_deep_copy(obj) : json_null();
        if (pol_jsonpatch_apply(&copy, r.patch, err, sizeof err) < 0 || !json_equal(copy, r.patched)) abort();
        json_decref(copy);
      }
    }
    pol_report_done(&r);
  }
  pol_report_t e;
  pol_report_init(&e);
  pol_evaluate(set, req, &e);
  free(pol_report_denial(&e, req));
  pol_report_done(&e);
  json_decref(review);
  return 0;
}
