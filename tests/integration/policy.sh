#!/usr/bin/env bash
# skiff-policy as a real process over HTTPS: curl --cacert posts
# AdmissionReviews to /validate and /mutate with the example policies, the
# JSONPatch is applied with python3's jsonpatch, malformed reviews get 400
# and the server keeps serving, metrics, SIGHUP reload, clean SIGTERM.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CERTS=${SKIFF_TEST_CERTS:?SKIFF_TEST_CERTS not set}
SRC=${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}
POLICY=$BIN/skiff-policy
one_daemon policy-test policy
URL=https://localhost:$PORT
mkdir -p "$TMP/policies"
cp "$SRC"/examples/policies/*.yaml "$TMP/policies/"

cat >"$TMP/policy.yaml" <<EOF
listen: 127.0.0.1:$PORT
tls:
  cert: $CERTS/server.pem
  key: $CERTS/server.key
policies:
  - $TMP/policies
max_body: 64KiB
admin:
  listen: 127.0.0.1:$ADMIN
EOF

"$POLICY" --config "$TMP/policy.yaml" --check | has "config ok" || fail "--check on a good config"

# review OP OBJECT_JSON OLD_JSON [DRYRUN]: an AdmissionReview as the API server sends it
review() {
  python3 - "$@" <<'PY'
import json, sys
op, obj, old = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
dry = len(sys.argv) > 4 and sys.argv[4] == "dry"
o = obj or old
api = o.get("apiVersion", "v1")
group, version = (api.split("/", 1) if "/" in api else ("", api))
gvk = {"group": group, "version": version, "kind": o["kind"]}
gvr = {"group": group, "version": version, "resource": o["kind"].lower() + "s"}
req = {"uid": "b9a2c3d4-0000-4000-8000-00000000abcd", "kind": gvk, "resource": gvr,
       "requestKind": gvk, "requestResource": gvr, "name": o["metadata"]["name"],
       "namespace": o["metadata"].get("namespace", ""), "operation": op,
       "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
       "object": obj, "oldObject": old, "dryRun": dry,
       "options": {"apiVersion": "meta.k8s.io/v1", "kind": op.capitalize() + "Options"}}
print(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}))
PY
}

post() { # path file -> body in $TMP/out, prints status
  curl -sS --cacert "$CERTS/ca.pem" -o "$TMP/out" -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary @"$2" "$URL$1"
}

jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); 
for k in sys.argv[2].split("."): d = d.get(k) if isinstance(d, dict) else None
print(json.dumps(d))' "$TMP/out" "$1"; }

"$POLICY" --config "$TMP/policy.yaml" >"$TMP/policy.log" 2>&1 &
PID=$!
wait_until 20 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "never ready"

BAD_POD='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop","labels":{"app":"web"}},"spec":{"containers":[{"name":"a","image":"nginx:latest"}]}}'
GOOD_POD='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","namespace":"shop","labels":{"app.kubernetes.io/name":"web"}},"spec":{"containers":[{"name":"a","image":"bar.io/nginx:1.25","resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"memory":"128Mi"}}}],"volumes":[{"name":"tmp","emptyDir":{}}]}}'

# a violating Pod is denied with the policies' messages
review CREATE "$BAD_POD" null >"$TMP/r1.json"
[ "$(post /validate "$TMP/r1.json")" = 200 ] || fail "validate status $(cat "$TMP/out")"
[ "$(jget response.allowed)" = false ] || fail "bad pod allowed: $(cat "$TMP/out")"
[ "$(jget response.uid)" = '"b9a2c3d4-0000-4000-8000-00000000abcd"' ] || fail "uid not echoed"
[ "$(jget apiVersion)" = '"admission.k8s.io/v1"' ] || fail "apiVersion not echoed"
[ "$(jget response.status.code)" = 403 ] || fail "status code"
msg=$(jget response.status.message)
echo "$msg" | has "resource Pod/shop/web was blocked due to the following policies" || fail "message: $msg"
echo "$msg" | has "check-for-labels: validation error: label 'app.kubernetes.io/name' is required" || fail "labels: $msg"
echo "$msg" | has "Using a mutable image tag e.g. 'latest' is not allowed" || fail "latest: $msg"

# dryRun: same answer
review CREATE "$BAD_POD" null dry >"$TMP/r1d.json"
post /validate "$TMP/r1d.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "dryRun changed the answer"

# a compliant Pod is allowed
review CREATE "$GOOD_POD" null >"$TMP/r2.json"
[ "$(post /validate "$TMP/r2.json")" = 200 ] || fail "validate good"
[ "$(jget response.allowed)" = true ] || fail "good pod denied: $(cat "$TMP/out")"

# UPDATE with oldObject, DELETE with oldObject
review UPDATE "$BAD_POD" "$GOOD_POD" >"$TMP/r3.json"
post /validate "$TMP/r3.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "update to a bad pod allowed"
PROT='{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","namespace":"prod","labels":{"protected":"true"}}}'
review DELETE null "$PROT" >"$TMP/r4.json"
post /validate "$TMP/r4.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "protected delete allowed"
jget response.status.message | has "Deleting ConfigMap/settings is not allowed" || fail "delete message $(cat "$TMP/out")"

# Audit failures become warnings
DEP='{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"big","namespace":"shop"},"spec":{"replicas":40}}'
review CREATE "$DEP" null >"$TMP/r5.json"
post /validate "$TMP/r5.json" >/dev/null
[ "$(jget response.allowed)" = true ] || fail "audit denied"
jget response.warnings | has "Deployment big asks for 40 replicas" || fail "no warning: $(cat "$TMP/out")"

# /mutate: a JSONPatch that python3's jsonpatch applies to the expected object
review CREATE "$GOOD_POD" null >"$TMP/m1.json"
[ "$(post /mutate "$TMP/m1.json")" = 200 ] || fail "mutate status"
[ "$(jget response.patchType)" = '"JSONPatch"' ] || fail "no patchType: $(cat "$TMP/out")"
python3 - "$TMP/out" "$GOOD_POD" <<'PY' || fail "patched object differs"
import base64, json, sys, jsonpatch
resp = json.load(open(sys.argv[1]))
pod = json.loads(sys.argv[2])
patch = json.loads(base64.b64decode(resp["response"]["patch"]))
got = jsonpatch.JsonPatch(patch).apply(pod)
want = json.loads(sys.argv[2])
want["metadata"]["labels"]["foo"] = "bar"
want["metadata"]["annotations"] = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
if got != want:
    print("got ", json.dumps(got), "\nwant", json.dumps(want), file=sys.stderr)
    sys.exit(1)
PY

# HTTP/2 works too
code=$(curl -sS --http2 --cacert "$CERTS/ca.pem" -o "$TMP/out" -w '%{http_code} %{http_version}' \
  -H 'content-type: application/json' --data-binary @"$TMP/r2.json" "$URL/validate")
[ "$code" = "200 2" ] || fail "h2: $code"

# malformed reviews: 400 with a clear message, and the server keeps serving
printf 'not json' >"$TMP/bad1"
[ "$(post /validate "$TMP/bad1")" = 400 ] || fail "not-json status"
grep -q "invalid AdmissionReview: body is not valid JSON" "$TMP/out" || fail "not-json message: $(cat "$TMP/out")"
sed 's/admission.k8s.io\/v1/admission.k8s.io\/v2/' "$TMP/r2.json" >"$TMP/bad2"
[ "$(post /validate "$TMP/bad2")" = 400 ] || fail "wrong apiVersion status"
grep -q "apiVersion must be admission.k8s.io/v1" "$TMP/out" || fail "apiVersion message"
sed 's/"AdmissionReview"/"Pod"/' "$TMP/r2.json" >"$TMP/bad3"
[ "$(post /mutate "$TMP/bad3")" = 400 ] || fail "wrong kind"
grep -q "kind must be AdmissionReview" "$TMP/out" || fail "kind message"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); del d["request"]["uid"]; print(json.dumps(d))' "$TMP/r2.json" >"$TMP/bad4"
[ "$(post /validate "$TMP/bad4")" = 400 ] || fail "missing uid"
grep -q "request.uid is missing" "$TMP/out" || fail "uid message"
printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}' >"$TMP/bad5"
[ "$(post /validate "$TMP/bad5")" = 400 ] || fail "missing request"
python3 -c 'print("[" * 500 + "]" * 500)' >"$TMP/bad6"
[ "$(post /validate "$TMP/bad6")" = 400 ] || fail "deep json"
head -c 100000 /dev/zero | tr '\0' 'a' >"$TMP/bad7"
[ "$(post /validate "$TMP/bad7")" = 413 ] || fail "body over max_body"
[ "$(curl -sS --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$URL/validate")" = 405 ] || fail "GET /validate"
[ "$(post /other "$TMP/r2.json")" = 404 ] || fail "unknown path"
[ "$(post /validate "$TMP/r1.json")" = 200 ] || fail "not serving after malformed input"
[ "$(jget response.allowed)" = false ] || fail "answer changed after malformed input"
kill -0 "$PID" || fail "died"

# metrics
metrics=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics")
echo "$metrics" | has '^skiff_policy_reviews_total{endpoint="validate",result="denied"} [1-9]' || fail "no denied count"
echo "$metrics" | has '^skiff_policy_reviews_total{endpoint="validate",result="invalid"} [1-9]' || fail "no invalid count"
echo "$metrics" | has '^skiff_policy_reviews_total{endpoint="mutate",result="allowed"} 1' || fail "no mutate count"
echo "$metrics" | has '^skiff_policy_review_duration_seconds_bucket{endpoint="validate",result="allowed",le="0.001"}' ||
  fail "no latency histogram"
echo "$metrics" | has '^skiff_policy_policies 11' || fail "policy gauge: $(echo "$metrics" | grep policies)"
if command -v promtool >/dev/null; then
  echo "$metrics" | promtool check metrics >"$TMP/promtool.out" 2>&1 ||
    fail "promtool rejects the metrics"
fi

# SIGHUP: a broken policy keeps the old set; removing a policy takes effect
echo "apiVersion: kyverno.io/v1" >"$TMP/policies/zz-broken.yaml"
kill -HUP "$PID"
sleep 0.5
kill -0 "$PID" || fail "died on a bad reload"
grep -q "zz-broken.yaml: document 1: kind: is required" "$TMP/policy.log" || fail "bad reload not reported"
post /validate "$TMP/r1.json" >/dev/null
[ "$(jget response.allowed)" = false ] || fail "lost policies on a bad reload"
rm "$TMP/policies/zz-broken.yaml" "$TMP/policies/require-labels.yaml" "$TMP/policies/disallow-latest-tag.yaml" \
  "$TMP/policies/restrict-image-registries.yaml" "$TMP/policies/require-requests-limits.yaml"
kill -HUP "$PID"
ok=0
for _ in $(seq 1 50); do
  post /validate "$TMP/r1.json" >/dev/null
  if [ "$(jget response.allowed)" = true ]; then ok=1; break; fi
  sleep 0.1
done
[ "$ok" = 1 ] || fail "reload did not drop the policies"

stop_daemon
echo "1 passed, 0 failed"
