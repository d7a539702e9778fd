#!/usr/bin/env bash
# Every deny operator and every pattern anchor of docs/policy.md, through the
# real skiff-policy over HTTPS with AdmissionReviews shaped as the Kubernetes
# API server sends them (CREATE, UPDATE with oldObject, DELETE, dryRun): one
# Pod ("hit") makes each rule fail, another ("miss") passes them all, and the
# denial names every failed rule with its message (variables substituted).
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CERTS=${SKIFF_TEST_CERTS:?SKIFF_TEST_CERTS not set}
POLICY=$BIN/skiff-policy
one_daemon policy-matrix policy
URL=https://localhost:$PORT
mkdir -p "$TMP/policies"

# deny.conditions: each rule's condition holds for the hit Pod only
OPS="Equals NotEquals In NotIn AnyIn AllIn AnyNotIn AllNotIn GreaterThan GreaterThanOrEquals LessThan LessThanOrEquals"
{
  cat <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: operators
spec:
  validationFailureAction: Enforce
  background: false
  rules:
EOF
  rule() { # name any|all key operator value
    cat <<EOF
  - name: op-$1
    match:
      any:
      - resources:
          kinds: [Pod]
          operations: [CREATE, UPDATE]
    validate:
      message: "$1 denied {{ request.object.metadata.name }} for {{ request.userInfo.username }}"
      deny:
        conditions:
          $2:
          - key: $3
            operator: $4
            value: $5
EOF
  }
  T="\"{{ request.object.metadata.labels.tier }}\""
  N="\"{{ request.object.spec.containers[].name }}\""
  R="\"{{ request.object.metadata.annotations.\\\"skiff.dev/retries\\\" }}\""
  M="\"{{ request.object.spec.containers[0].resources.limits.memory }}\""
  rule Equals any "$T" Equals gold
  rule NotEquals all "$T" NotEquals bronze
  rule In any "$T" In "[gold, silver]"
  rule NotIn all "$T" NotIn "[bronze, silver]"
  rule AnyIn any "$N" AnyIn "[sidecar]"
  rule AllIn all "$N" AllIn "[app, sidecar, debug]"
  rule AnyNotIn any "$N" AnyNotIn "[app, web]"
  rule AllNotIn all "$N" AllNotIn "[web, debug]"
  rule GreaterThan any "$R" GreaterThan 10
  rule GreaterThanOrEquals any "$M" GreaterThanOrEquals 2Gi
  rule LessThan any 5 LessThan "$R"
  rule LessThanOrEquals any 1Gi LessThanOrEquals "$M"
  # request.operation and request.oldObject: the old Pod's tier may not change
  cat <<'EOF'
  - name: op-update-tier
    match:
      any:
      - resources: {kinds: [Pod], operations: [UPDATE]}
    validate:
      message: "tier changed from {{ request.oldObject.metadata.labels.tier }} on {{ request.operation }}"
      deny:
        conditions:
          all:
          - {key: "{{ request.operation }}", operator: Equals, value: UPDATE}
          - {key: "{{ request.oldObject.metadata.labels.tier }}", operator: NotEquals, value: "{{ request.object.metadata.labels.tier }}"}
  - name: op-delete-gold
    match:
      any:
      - resources: {kinds: [Pod], operations: [DELETE]}
    validate:
      message: "gold Pod {{ request.oldObject.metadata.name }} may not be deleted by {{ request.userInfo.username }}"
      deny:
        conditions:
          any:
          - {key: "{{ request.oldObject.metadata.labels.tier }}", operator: Equals, value: gold}
EOF
} >"$TMP/policies/operators.yaml"

# validate.pattern: each rule fails for the hit Pod only
cat >"$TMP/policies/anchors.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: anchors
spec:
  validationFailureAction: Enforce
  rules:
  - name: conditional
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "nginx containers get at most 1Gi"
      pattern:
        spec:
          containers:
          - (image): "nginx:*"
            resources: {limits: {memory: "<=1Gi"}}
  - name: equality
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "hostNetwork must be false when set"
      pattern:
        spec:
          =(hostNetwork): false
  - name: existence
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "a container named web is required"
      pattern:
        spec:
          ^(containers):
          - name: web
  - name: negation
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "hostPID may not be set"
      pattern:
        spec:
          X(hostPID): "null"
  - name: wildcards
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "tier must look like ?ro*"
      pattern:
        metadata: {labels: {tier: "?ro*"}}
  - name: less-than
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "fewer than 10 retries"
      pattern:
        metadata: {annotations: {skiff.dev/retries: "<10"}}
  - name: greater-than
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "grace period over 5s"
      pattern:
        spec: {terminationGracePeriodSeconds: ">5"}
  - name: greater-or-equal
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "priority at least 100"
      pattern:
        spec: {priority: ">=100"}
  - name: not-latest
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "no latest tags"
      pattern:
        spec:
          containers:
          - image: "!*:latest"
  - name: alternatives
    match: {any: [{resources: {kinds: [Pod]}}]}
    validate:
      message: "restartPolicy Always or OnFailure"
      pattern:
        spec: {restartPolicy: "Always | OnFailure"}
EOF

cat >"$TMP/policy.yaml" <<EOF
listen: 127.0.0.1:$PORT
tls:
  cert: $CERTS/server.pem
  key: $CERTS/server.key
policies:
  - $TMP/policies
admin:
  listen: 127.0.0.1:$ADMIN
EOF
"$POLICY" --config "$TMP/policy.yaml" --check | has "config ok" || fail "--check: the matrix policies must load"

HIT='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"hit","namespace":"shop","labels":{"tier":"gold"},"annotations":{"skiff.dev/retries":"12"}},"spec":{"hostNetwork":true,"hostPID":true,"terminationGracePeriodSeconds":0,"priority":0,"restartPolicy":"Never","containers":[{"name":"app","image":"nginx:1.27","resources":{"limits":{"memory":"2Gi"}}},{"name":"sidecar","image":"envoy:latest"}]}}'
MISS='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"miss","namespace":"shop","labels":{"tier":"bronze"},"annotations":{"skiff.dev/retries":"3"}},"spec":{"terminationGracePeriodSeconds":30,"priority":1000,"restartPolicy":"Always","containers":[{"name":"web","image":"nginx:1.27","resources":{"limits":{"memory":"256Mi"}}}]}}'

review() { # OP OBJECT_JSON OLD_JSON [dry]: as the API server sends it
  python3 - "$@" <<'PY'
import json, sys
op, obj, old = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
o = obj or old
gvk = {"group": "", "version": "v1", "kind": "Pod"}
gvr = {"group": "", "version": "v1", "resource": "pods"}
req = {"uid": "0d1c2b3a-1111-4222-8333-444455556666", "kind": gvk, "resource": gvr,
       "requestKind": gvk, "requestResource": gvr, "name": o["metadata"]["name"],
       "namespace": o["metadata"]["namespace"], "operation": op,
       "userInfo": {"username": "jane", "uid": "1f2e", "groups": ["devs", "system:authenticated"]},
       "object": obj, "oldObject": old, "dryRun": len(sys.argv) > 4 and sys.argv[4] == "dry",
       "options": {"apiVersion": "meta.k8s.io/v1", "kind": op.capitalize() + "Options"}}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}))
PY
}

validate() { # review file -> $TMP/out
  local code
  code=$(curl -sS --cacert "$CERTS/ca.pem" -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @"$1" "$URL/validate")
  [ "$code" = 200 ] || fail "/validate answered $code: $(cat "$TMP/out")"
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["response"]
print(json.dumps(d.get(sys.argv[2])) if sys.argv[2] != "message" else (d.get("status") or {}).get("message", ""))' "$TMP/out" "$1"; }

"$POLICY" --config "$TMP/policy.yaml" >"$TMP/policy.log" 2>&1 &
PID=$!
wait_until 20 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "never ready"

# the miss Pod passes every rule
review CREATE "$MISS" null >"$TMP/miss.json"
validate "$TMP/miss.json"
[ "$(jget allowed)" = true ] || fail "the miss Pod must be allowed: $(cat "$TMP/out")"

# the hit Pod fails every rule, each named with its message
for dry in "" dry; do
  review CREATE "$HIT" null $dry >"$TMP/hit.json"
  validate "$TMP/hit.json"
  [ "$(jget allowed)" = false ] || fail "the hit Pod must be denied ($dry)"
  [ "$(jget uid)" = '"0d1c2b3a-1111-4222-8333-444455556666"' ] || fail "uid not echoed"
  [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["response"]["status"]["code"])' "$TMP/out")" = 403 ] ||
    fail "status.code"
  msg=$(jget message)
  for o in $OPS; do
    grep -qF "op-$o: $o denied hit for jane" <<<"$msg" || fail "operator $o did not deny ($dry): $msg"
  done
  for a in "conditional: validation error: nginx containers get at most 1Gi" \
    "equality: validation error: hostNetwork must be false when set" \
    "existence: validation error: a container named web is required" \
    "negation: validation error: hostPID may not be set" \
    "wildcards: validation error: tier must look like ?ro*" \
    "less-than: validation error: fewer than 10 retries" \
    "greater-than: validation error: grace period over 5s" \
    "greater-or-equal: validation error: priority at least 100" \
    "not-latest: validation error: no latest tags" \
    "alternatives: validation error: restartPolicy Always or OnFailure"; do
    grep -qF -- "$a" <<<"$msg" || fail "anchor rule '$a' missing ($dry): $msg"
  done
  grep -qF "rule conditional failed at path /spec/containers/0/resources/limits/memory/" <<<"$msg" ||
    fail "conditional anchor path: $msg"
done

# UPDATE with oldObject: miss -> miss relabelled gold; the operator rules
# fail, and the tier change is seen through request.oldObject
MISS_GOLD=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["metadata"]["labels"]["tier"]="gold"; print(json.dumps(d))' "$MISS")
review UPDATE "$MISS_GOLD" "$MISS" >"$TMP/upd.json"
validate "$TMP/upd.json"
[ "$(jget allowed)" = false ] || fail "update must be denied"
msg=$(jget message)
grep -qF "op-update-tier: tier changed from bronze on UPDATE" <<<"$msg" || fail "oldObject in update: $msg"
grep -qF "op-Equals: Equals denied miss for jane" <<<"$msg" || fail "update Equals: $msg"
grep -qF "op-AnyIn:" <<<"$msg" && fail "AnyIn must hold only for the hit Pod's containers: $msg"
review UPDATE "$MISS" "$MISS" >"$TMP/upd2.json"
validate "$TMP/upd2.json"
[ "$(jget allowed)" = true ] || fail "an unchanged miss Pod must be allowed: $(cat "$TMP/out")"

# DELETE: the object is request.oldObject; pattern rules skip
review DELETE null "$HIT" >"$TMP/del.json"
validate "$TMP/del.json"
[ "$(jget allowed)" = false ] || fail "deleting the gold Pod must be denied"
msg=$(jget message)
grep -qF "op-delete-gold: gold Pod hit may not be deleted by jane" <<<"$msg" || fail "delete message: $msg"
grep -qF "validation error" <<<"$msg" && fail "pattern rules must skip on DELETE: $msg"
review DELETE null "$MISS" dry >"$TMP/del2.json"
validate "$TMP/del2.json"
[ "$(jget allowed)" = true ] || fail "deleting the miss Pod must be allowed: $(cat "$TMP/out")"

# shift-left: `skiff policy test` on rendered (helm template style) output
# names file, document, policy/rule and message, and exits 1; a clean
# manifest on stdin exits 0
{
  printf -- '---\n# Source: shop/templates/configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\n'
  printf -- '---\n# Source: shop/templates/pod.yaml\n%s\n' "$HIT"
} >"$TMP/rendered.yaml"
set +e; "$BIN/skiff" policy test "$TMP/policies" "$TMP/rendered.yaml" >"$TMP/cli.out" 2>&1; rc=$?; set -e
[ "$rc" = 1 ] || fail "skiff policy test exited $rc on violations: $(cat "$TMP/cli.out")"
for want in "rendered.yaml: document 2: Pod/shop/hit: operators/op-AllNotIn: fail: AllNotIn denied hit for" \
  "rendered.yaml: document 2: Pod/shop/hit: anchors/existence: fail: validation error: a container named web is required"; do
  grep -qF "$want" "$TMP/cli.out" || fail "skiff policy test output lacks '$want': $(cat "$TMP/cli.out")"
done
[ "$(grep -c ': fail: ' "$TMP/cli.out")" = 22 ] || fail "skiff policy test must list 22 failures: $(cat "$TMP/cli.out")"
"$BIN/skiff" policy test "$TMP/policies" - <<<"$MISS" >"$TMP/cli.out" 2>&1 || fail "a clean manifest on stdin: $(cat "$TMP/cli.out")"

kill -TERM "$PID"
for _ in $(seq 1 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && fail "still running 15s after SIGTERM"
rc=0
wait "$PID" || rc=$?
PID=
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
echo "1 passed, 0 failed"
