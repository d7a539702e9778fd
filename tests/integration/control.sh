#!/usr/bin/env bash
# skiff-control as a real process driven by curl and the skiff CLI: CRUD,
# 409 conflicts, validation errors with field paths, merge patch, the status
# subresource, label selectors, pagination, watch over HTTP/1.1 (curl -N)
# and HTTP/2 (--http2-prior-knowledge), 410 Expired beyond retention, watch
# resume across a restart without gaps or duplicates, kill -9 during a burst
# of writes loses no acknowledged write, a policy-denied create is refused
# with the policy's message, authentication, skiff apply/get/delete/diff, and
# skiff token create/list/revoke with a viewer token's rights.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CONTROL=$BIN/skiff-control
SKIFF=$BIN/skiff
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-control-test.XXXXXX")
PID=
BGPIDS=()

cleanup() {
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff-control log" >&2
  tail -50 "$TMP/control.log" >&2 || true
  exit 1
}

PORT=$(free_port)
ADMIN=$(free_port)
[ "$PORT" != "$ADMIN" ] || ADMIN=$((PORT + 1))
URL=http://127.0.0.1:$PORT
API=$URL/api/v1
mkdir -p "$TMP/policies" "$TMP/state"

cat >"$TMP/policies/guarded.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: guarded-routes-need-team
spec:
  validationFailureAction: Enforce
  rules:
  - name: team-label
    match:
      any:
      - resources:
          kinds: [Route]
          namespaces: [guarded]
    validate:
      message: "routes in guarded need a team label"
      pattern:
        metadata:
          labels:
            team: "?*"
EOF
cat >"$TMP/policies/stamp.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: stamp-routes
spec:
  rules:
  - name: stamp
    match:
      any:
      - resources:
          kinds: [Route]
          namespaces: [mutated]
    mutate:
      patchStrategicMerge:
        metadata:
          labels:
            +(stamped): "yes"
EOF

# SKIFF_TEST_STORE: run the whole suite against another store (control_pg.sh
# sets a throwaway PostgreSQL's postgres:// URL); default: sqlite in state_dir.
cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$PORT
state_dir: $TMP/state
${SKIFF_TEST_STORE:+store: $SKIFF_TEST_STORE}
policies: [$TMP/policies]
event_retention: 64
watch_heartbeat: 1s
admin:
  listen: 127.0.0.1:$ADMIN
EOF

"$CONTROL" --config "$TMP/control.yaml" --check | has "config ok" || fail "--check on a good config"
# --check loads the policies as a start would: a missing path or a bad
# policy is reported with the path
sed "s|policies: \[$TMP/policies\]|policies: [$TMP/no-such-dir]|" "$TMP/control.yaml" >"$TMP/bad-pol.yaml"
out=$("$CONTROL" --config "$TMP/bad-pol.yaml" --check 2>&1) && fail "--check accepted a missing policies path"
has -F "$TMP/no-such-dir" <<<"$out" || fail "--check did not name the missing policies path: $out"
mkdir -p "$TMP/badpol"
printf 'apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: broken}\nspec: {rules: 7}\n' >"$TMP/badpol/broken.yaml"
sed "s|policies: \[$TMP/policies\]|policies: [$TMP/badpol]|" "$TMP/control.yaml" >"$TMP/bad-pol.yaml"
out=$("$CONTROL" --config "$TMP/bad-pol.yaml" --check 2>&1) && fail "--check accepted a broken policy"
has -F "broken.yaml" <<<"$out" || fail "--check did not name the broken policy file: $out"

start() {
  "$CONTROL" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
  PID=$!
  wait_until 20 curl -sf "$URL/healthz" || fail "control did not start"
}
stop() {
  kill -TERM "$PID"
  wait "$PID" || true
  PID=
}

start
TOKEN=$(cat "$TMP/state/admin.token")
[ -n "$TOKEN" ] || fail "no bootstrap token"
AUTH=(-H "authorization: Bearer $TOKEN")
JSON=(-H "content-type: application/json")

# code METHOD PATH [curl args...]: prints the status, body in $TMP/body
code() {
  local m=$1 p=$2; shift 2
  curl -s -o "$TMP/body" -w '%{http_code}' -X "$m" "${AUTH[@]}" "$@" "$API$p"
}
jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$TMP/body" "$1"; }

route_json() { # name ns weight [labels-json]
  printf '{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"%s","namespace":"%s","labels":%s},"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"echo","port":8081,"weight":%s}]}]}}' \
    "$1" "$2" "${4:-{\}}" "$3"
}

# ---- authentication ----
[ "$(curl -s -o /dev/null -w '%{http_code}' "$API/routes")" = 401 ] || fail "no token must be 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'authorization: Bearer skiff_nope' "$API/routes")" = 401 ] || fail "bad token must be 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/healthz")" = 200 ] || fail "healthz needs no token"

# ---- CRUD, conflicts, validation ----
[ "$(code POST /routes/default "${JSON[@]}" -d "$(route_json web default 90 '{"app":"web"}')")" = 201 ] || fail "create: $(cat "$TMP/body")"
RV1=$(jq_ 'd["metadata"]["resourceVersion"]')
[ "$(jq_ 'd["metadata"]["generation"]')" = 1 ] || fail "generation 1"
[ "$(code POST /routes/default "${JSON[@]}" -d "$(route_json web default 90)")" = 409 ] || fail "duplicate create must be 409"
[ "$(jq_ 'd["reason"]')" = AlreadyExists ] || fail "reason AlreadyExists: $(cat "$TMP/body")"
[ "$(code GET /routes/default/web)" = 200 ] || fail "get"
[ "$(jq_ 'd["spec"]["rules"][0]["backendRefs"][0]["weight"]')" = 90 ] || fail "get body"
[ "$(code GET /routes/default/nope)" = 404 ] || fail "missing must be 404"
[ "$(jq_ 'd["kind"] + "/" + d["reason"]')" = Status/NotFound ] || fail "404 Status body"

# replace with the current version, then with a stale one
BODY=$(route_json web default 50 '{"app":"web"}' | sed "s/\"namespace\":\"default\"/\"namespace\":\"default\",\"resourceVersion\":\"$RV1\"/")
[ "$(code PUT /routes/default/web "${JSON[@]}" -d "$BODY" -D "$TMP/hdr")" = 200 ] || fail "replace: $(cat "$TMP/body")"
grep -qi '^x-skiff-result: configured' "$TMP/hdr" || fail "replace must say configured"
[ "$(jq_ 'd["metadata"]["generation"]')" = 2 ] || fail "generation 2 after a spec change"
[ "$(code PUT /routes/default/web "${JSON[@]}" -d "$BODY")" = 409 ] || fail "stale resourceVersion must be 409"
[ "$(jq_ 'd["reason"]')" = Conflict ] || fail "reason Conflict"
# unchanged replace (no resourceVersion = unconditional) writes nothing
RVB=$(curl -s "${AUTH[@]}" "$API/routes/default/web" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
[ "$(code PUT /routes/default/web "${JSON[@]}" -d "$(route_json web default 50 '{"app":"web"}')" -D "$TMP/hdr")" = 200 ] || fail "replace unchanged"
grep -qi '^x-skiff-result: unchanged' "$TMP/hdr" || fail "must say unchanged"
[ "$(jq_ 'd["metadata"]["resourceVersion"]')" = "$RVB" ] || fail "unchanged must keep the resourceVersion"

# validation: field path and reason in the Status causes
[ "$(code POST /routes/default "${JSON[@]}" -d '{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"bad"},"spec":{"rules":[{"backendRefs":[{"name":"a"},{"name":"b","weight":2000000}]}]}}')" = 422 ] || fail "invalid must be 422"
[ "$(jq_ 'd["reason"]')" = Invalid ] || fail "reason Invalid"
[ "$(jq_ 'd["details"]["causes"][0]["field"]')" = "spec.rules[0].backendRefs[1].weight" ] || fail "field path: $(cat "$TMP/body")"
grep -q 'spec.rules\[0\].backendRefs\[1\].weight: must be 0..1000000' "$TMP/body" || fail "message with path and reason"
[ "$(code POST /routes/default "${JSON[@]}" -d '{"apiVersion":"skiff.dev/v1","kind":"Route"')" = 400 ] || fail "broken JSON must be 400"
[ "$(code POST /widgets/default "${JSON[@]}" -d '{}')" = 404 ] || fail "unknown kind must be 404"

# YAML bodies and YAML answers
cat >"$TMP/svc.yaml" <<'EOF'
apiVersion: skiff.dev/v1
kind: Service
metadata:
  name: echo
  labels: {app: echo}
spec:
  endpoints: ["127.0.0.1:8081", "127.0.0.1:8082"]
  lb: least_request
EOF
[ "$(code POST /services/default -H 'content-type: application/yaml' --data-binary @"$TMP/svc.yaml")" = 201 ] || fail "yaml create: $(cat "$TMP/body")"
curl -s "${AUTH[@]}" -H 'accept: application/yaml' "$API/services/default/echo" | has '^  lb: least_request' || fail "yaml answer"

# merge patch: labels added, spec changed, generation bumped
[ "$(code PATCH /routes/default/web -H 'content-type: application/merge-patch+json' -d '{"metadata":{"labels":{"tier":"front"}},"spec":{"hostnames":["web.example.com"]}}')" = 200 ] || fail "patch: $(cat "$TMP/body")"
[ "$(jq_ 'd["metadata"]["labels"]["tier"] + d["metadata"]["labels"]["app"]')" = frontweb ] || fail "patch labels"
[ "$(jq_ 'd["metadata"]["generation"]')" = 3 ] || fail "patch generation"
[ "$(code PATCH /routes/default/web "${JSON[@]}" -d '{}')" = 415 ] || fail "patch needs merge-patch content type"
[ "$(code PATCH /routes/default/web -H 'content-type: application/merge-patch+json' -d '{"spec":{"rules":null}}')" = 422 ] || fail "patch to invalid must be 422"
[ "$(code PATCH /routes/default/web -H 'content-type: application/merge-patch+json' -d '{"metadata":{"resourceVersion":"1"},"spec":{"hostnames":[]}}')" = 409 ] || fail "patch with a stale version must be 409"

# status subresource: rv moves, generation does not, spec untouched; main PUT/PATCH ignore status
GEN=$(curl -s "${AUTH[@]}" "$API/routes/default/web" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["generation"])')
[ "$(code PATCH /routes/default/web/status -H 'content-type: application/merge-patch+json' -d '{"status":{"phase":"Accepted"},"spec":{"hostnames":["x.y"]}}')" = 200 ] || fail "status patch: $(cat "$TMP/body")"
[ "$(jq_ 'd["status"]["phase"]')" = Accepted ] || fail "status set"
[ "$(jq_ 'd["metadata"]["generation"]')" = "$GEN" ] || fail "status must not bump generation"
[ "$(jq_ 'd["spec"]["hostnames"][0]')" = web.example.com ] || fail "status must not touch spec"
[ "$(code PATCH /routes/default/web -H 'content-type: application/merge-patch+json' -d '{"status":{"phase":"Hacked"}}')" = 200 ] || fail "main patch"
[ "$(jq_ 'd["status"]["phase"]')" = Accepted ] || fail "main resource must ignore status"

# ---- policy: a denied create never reaches the store ----
[ "$(code POST /routes/guarded "${JSON[@]}" -d "$(route_json open guarded 1)")" = 403 ] || fail "policy must deny: $(cat "$TMP/body")"
grep -q 'routes in guarded need a team label' "$TMP/body" || fail "policy message must reach the client: $(cat "$TMP/body")"
[ "$(code GET /routes/guarded/open)" = 404 ] || fail "a denied resource must not be stored"
[ "$(code POST /routes/guarded "${JSON[@]}" -d "$(route_json open guarded 1 '{"team":"shop"}')")" = 201 ] || fail "policy must allow a labelled route"
[ "$(code PATCH /routes/guarded/open -H 'content-type: application/merge-patch+json' -d '{"metadata":{"labels":{"team":null}}}')" = 403 ] || fail "policy must deny the patch"
[ "$(code GET /routes/guarded/open)" = 200 ] && [ "$(jq_ 'd["metadata"]["labels"]["team"]')" = shop ] || fail "denied patch must not be stored"

# a mutating policy changes what is stored
[ "$(code POST /routes/mutated "${JSON[@]}" -d "$(route_json m1 mutated 1)")" = 201 ] || fail "create in mutated: $(cat "$TMP/body")"
[ "$(jq_ 'd["metadata"]["labels"].get("stamped")')" = yes ] || fail "mutate policy not applied: $(cat "$TMP/body")"

# ---- label selectors and pagination ----
for i in 1 2 3 4 5 6 7; do
  lab='{"app":"list","n":"odd"}'; [ $((i % 2)) = 0 ] && lab='{"app":"list","n":"even"}'
  [ "$(code POST /routes/pages "${JSON[@]}" -d "$(route_json "p$i" pages 1 "$lab")")" = 201 ] || fail "create p$i"
done
n_items() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$TMP/body"; }
code GET "/routes/pages" -G --data-urlencode 'labelSelector=n=even' >/dev/null; [ "$(n_items)" = 3 ] || fail "selector ="
code GET "/routes/pages" -G --data-urlencode 'labelSelector=n!=even' >/dev/null; [ "$(n_items)" = 4 ] || fail "selector !="
code GET "/routes" -G --data-urlencode 'labelSelector=app in (list,web)' >/dev/null; [ "$(n_items)" = 8 ] || fail "selector in"
code GET "/routes" -G --data-urlencode 'labelSelector=app notin (list),app' >/dev/null; [ "$(n_items)" = 1 ] || fail "selector notin"
code GET "/routes" -G --data-urlencode 'labelSelector=tier' >/dev/null; [ "$(n_items)" = 1 ] || fail "selector exists"
[ "$(code GET "/routes" -G --data-urlencode 'labelSelector=a in (')" = 400 ] || fail "bad selector must be 400"
SEEN=0; CONT=; PAGES=0
while :; do
  code GET "/routes/pages?limit=3${CONT:+&continue=$CONT}" >/dev/null
  SEEN=$((SEEN + $(n_items))); PAGES=$((PAGES + 1))
  CONT=$(jq_ 'd["metadata"].get("continue", "")')
  [ -n "$CONT" ] && [ $PAGES -lt 10 ] || break
done
[ "$SEEN" = 7 ] && [ "$PAGES" = 3 ] || fail "pagination: $SEEN items in $PAGES pages"
[ "$(code GET "/routes/pages?limit=3&continue=zz")" = 400 ] || fail "bad continue token must be 400"

# ---- watch: HTTP/1.1 chunked and HTTP/2, from a version ----
FROM=$(curl -s "${AUTH[@]}" "$API/routes/pages" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
curl -sN --max-time 20 "${AUTH[@]}" "$API/routes/pages?watch=true&resourceVersion=$FROM" >"$TMP/w1" 2>/dev/null &
W1=$!
BGPIDS+=($W1)
curl -sN --http2-prior-knowledge --max-time 20 "${AUTH[@]}" "$API/routes/pages?watch=1&resourceVersion=$FROM" >"$TMP/w2" 2>/dev/null &
W2=$!
BGPIDS+=($W2)
watches_are() { test "$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^skiff_control_watches /{print $2}')" = "$1"; }
wait_until 5 watches_are 2 || fail "watches did not open"
code POST /routes/pages "${JSON[@]}" -d "$(route_json p8 pages 1)" >/dev/null
code PATCH /routes/pages/p8 -H 'content-type: application/merge-patch+json' -d '{"spec":{"hostnames":["p8.example.com"]}}' >/dev/null
code POST /routes/default "${JSON[@]}" -d "$(route_json elsewhere default 1)" >/dev/null   # other namespace: not in the stream
code DELETE /routes/pages/p8 >/dev/null
types() { python3 -c '
import json,sys
evs=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(" ".join(e["type"]+":"+e["object"]["metadata"].get("name","") for e in evs if e["type"]!="BOOKMARK"))' "$1"; }
wait_until 5 grep -q DELETED "$TMP/w1" || fail "h1 watch: $(cat "$TMP/w1")"
wait_until 5 grep -q DELETED "$TMP/w2" || fail "h2 watch: $(cat "$TMP/w2")"
[ "$(types "$TMP/w1")" = "ADDED:p8 MODIFIED:p8 DELETED:p8" ] || fail "h1 events: $(types "$TMP/w1")"
[ "$(types "$TMP/w2")" = "ADDED:p8 MODIFIED:p8 DELETED:p8" ] || fail "h2 events: $(types "$TMP/w2")"
kill "$W1" "$W2" 2>/dev/null || true
wait "$W1" "$W2" 2>/dev/null || true
wait_until 5 watches_are 0 || fail "closed watches must be dropped by the server"
# a watch without a version starts with the current objects
curl -sN --max-time 2 "${AUTH[@]}" "$API/routes/pages?watch=true" >"$TMP/w3" 2>/dev/null || true
wait_until 5 watches_are 0 || fail "an ended watch must be dropped by the server"
[ "$(grep -c '"ADDED"' "$TMP/w3")" = 7 ] || fail "initial ADDED events: $(cat "$TMP/w3")"
grep -q '"BOOKMARK"' "$TMP/w3" || fail "heartbeat bookmarks"

# ---- 410 Expired beyond the retention (64 events) ----
for i in $(seq 1 70); do code PATCH /routes/default/web -H 'content-type: application/merge-patch+json' -d "{\"metadata\":{\"labels\":{\"i\":\"v$i\"}}}" >/dev/null; done
[ "$(code GET "/routes?watch=true&resourceVersion=$FROM")" = 410 ] || fail "old version must be 410"
[ "$(jq_ 'd["reason"]')" = Expired ] || fail "410 reason Expired: $(cat "$TMP/body")"
grep -q 'relist' "$TMP/body" || fail "410 says relist"

# ---- resume across a restart: no gaps, no duplicates ----
R0=$(curl -s "${AUTH[@]}" "$API/routes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
curl -sN --max-time 30 "${AUTH[@]}" "$API/routes?watch=true&resourceVersion=$R0" >"$TMP/r1" 2>/dev/null &
WPID=$!
BGPIDS+=($WPID)
wait_until 5 watches_are 1 || fail "resume watch did not open"
for i in 1 2 3 4 5; do code POST /routes/resume "${JSON[@]}" -d "$(route_json "a$i" resume 1)" >/dev/null; done
added_are() { test "$(grep -c ADDED "$TMP/r1")" = "$1"; }
wait_until 5 added_are 5 || fail "events before restart: $(cat "$TMP/r1")"
stop
wait "$WPID" 2>/dev/null || true
start
for i in 1 2 3 4 5; do code POST /routes/resume "${JSON[@]}" -d "$(route_json "b$i" resume 1)" >/dev/null; done
code DELETE /routes/resume/a1 >/dev/null
LAST=$(python3 -c '
import json,sys
rv=0
for l in open(sys.argv[1]):
    if l.strip():
        e=json.loads(l); rv=max(rv,int(e["object"]["metadata"]["resourceVersion"]))
print(rv)' "$TMP/r1")
curl -sN --max-time 2 "${AUTH[@]}" "$API/routes?watch=true&resourceVersion=$LAST" >"$TMP/r2" 2>/dev/null || true
FINAL=$(curl -s "${AUTH[@]}" "$API/routes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
python3 - "$TMP/r1" "$TMP/r2" "$R0" "$FINAL" <<'PY' || fail "resume: gaps or duplicates"
import json, sys
rvs = []
for f in sys.argv[1:3]:
    for l in open(f):
        if l.strip():
            e = json.loads(l)
            if e["type"] != "BOOKMARK":
                rvs.append(int(e["object"]["metadata"]["resourceVersion"]))
r0, final = int(sys.argv[3]), int(sys.argv[4])
want = list(range(r0 + 1, final + 1))
if rvs != want:
    print("got", rvs, "want", want, file=sys.stderr)
    sys.exit(1)
PY
TOKEN=$(cat "$TMP/state/admin.token")   # the same token after a restart
AUTH=(-H "authorization: Bearer $TOKEN")

# ---- kill -9 during a burst (20 parallel writers): no acknowledged write is lost ----
BURSTS=()
for w in $(seq 1 20); do
  (
    for i in $(seq 1 20); do
      c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST "${AUTH[@]}" "${JSON[@]}" \
          -d "$(route_json "k$w-$i" burst 1)" "$API/routes/burst" 2>/dev/null || true)
      echo "k$w-$i $c"
    done
  ) >"$TMP/burst.$w" &
  BURSTS+=($!)
  BGPIDS+=($!)
done
acked_at_least() { test "$(cat "$TMP"/burst.* | grep -c ' 201$')" -ge "$1"; }
wait_until 20 acked_at_least 40 || fail "burst did not start"
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
PID=
for b in "${BURSTS[@]}"; do wait "$b" 2>/dev/null || true; done
cat "$TMP"/burst.* >"$TMP/burst"
ACKED=$(grep -c ' 201$' "$TMP/burst" || true)
start
curl -s "${AUTH[@]}" "$API/routes/burst" >"$TMP/body"
python3 - "$TMP/burst" "$TMP/body" <<'PY' || fail "acknowledged writes lost after kill -9"
import json, sys
acked = {l.split()[0] for l in open(sys.argv[1]) if l.split()[-1] == "201"}
stored = {i["metadata"]["name"] for i in json.load(open(sys.argv[2]))["items"]}
lost = acked - stored
print(f"burst: {len(acked)} acknowledged, {len(stored)} stored, {len(lost)} lost", file=sys.stderr)
sys.exit(1 if lost or not acked else 0)
PY
[ "$ACKED" -lt 400 ] || echo "note: the burst finished before the kill" >&2

# ---- the CLI: apply / get / diff / delete ----
export SKIFF_SERVER=$URL SKIFF_TOKEN=$TOKEN
mkdir -p "$TMP/manifests"
cat >"$TMP/manifests/app.yaml" <<'EOF'
apiVersion: skiff.dev/v1
kind: Service
metadata: {name: shop-v1, namespace: shop}
spec: {endpoints: ["127.0.0.1:9001"]}
---
apiVersion: skiff.dev/v1
kind: Service
metadata: {name: shop-v2, namespace: shop}
spec: {endpoints: ["127.0.0.1:9002"]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: shop, labels: {app: shop}}
spec:
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{name: shop-v1, weight: 90}, {name: shop-v2, weight: 10}]
EOF
"$SKIFF" apply -f "$TMP/manifests" >"$TMP/out" || fail "apply: $(cat "$TMP/out")"
grep -qx 'service/shop-v1 created' "$TMP/out" && grep -qx 'httproute/shop created' "$TMP/out" || fail "apply output: $(cat "$TMP/out")"
"$SKIFF" apply -f "$TMP/manifests/app.yaml" >"$TMP/out" || fail "re-apply"
[ "$(grep -c unchanged "$TMP/out")" = 3 ] || fail "re-apply must be unchanged: $(cat "$TMP/out")"
"$SKIFF" diff -f "$TMP/manifests/app.yaml" >"$TMP/out" || fail "diff of applied files must be empty (exit 0): $(cat "$TMP/out")"
sed -i 's/weight: 90/weight: 50/; s/weight: 10}/weight: 50}/' "$TMP/manifests/app.yaml"
set +e; "$SKIFF" diff -f "$TMP/manifests/app.yaml" >"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] || fail "diff must exit 1 on changes (got $rc)"
grep -q '^-      weight: 90' "$TMP/out" && grep -q '^+      weight: 50' "$TMP/out" || fail "diff output: $(cat "$TMP/out")"
"$SKIFF" apply -f "$TMP/manifests/app.yaml" >"$TMP/out"
grep -qx 'httproute/shop configured' "$TMP/out" || fail "apply after change: $(cat "$TMP/out")"
"$SKIFF" get routes -n shop >"$TMP/out" && grep -q '^shop  *shop ' "$TMP/out" || fail "get table: $(cat "$TMP/out")"
"$SKIFF" get route shop -n shop -o yaml >"$TMP/out" && grep -q 'weight: 50' "$TMP/out" || fail "get -o yaml"
"$SKIFF" get httproute shop -n shop -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["kind"]=="HTTPRoute", d' || fail "get -o json"
"$SKIFF" get services -n shop -o wide | has '127.0.0.1:9002' || fail "get -o wide"
"$SKIFF" delete service shop-v2 -n shop | grep -qx 'service/shop-v2 deleted' || fail "delete"
set +e; "$SKIFF" delete service shop-v2 -n shop 2>"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] && grep -q NotFound "$TMP/out" || fail "delete of a missing object"
set +e; SKIFF_TOKEN=skiff_wrong "$SKIFF" get routes 2>"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] || fail "a bad token must fail the CLI"
printf 'apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: bad}\nspec: {rules: [{backendRefs: [{name: x, weight: -1}]}]}\n' >"$TMP/bad.yaml"
set +e; "$SKIFF" apply -f "$TMP/bad.yaml" 2>"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] && grep -q 'spec.rules\[0\].backendRefs\[0\].weight' "$TMP/out" || fail "apply of an invalid file: $(cat "$TMP/out")"
# an Enforce policy refuses `skiff apply` with its message, and nothing is stored
printf 'apiVersion: skiff.dev/v1\nkind: Route\nmetadata: {name: cli-unlabelled, namespace: guarded}\nspec: {rules: [{matches: [{path: {type: PathPrefix, value: /}}], backendRefs: [{name: echo, port: 8081, weight: 1}]}]}\n' >"$TMP/denied.yaml"
set +e; "$SKIFF" apply -f "$TMP/denied.yaml" >/dev/null 2>"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] && grep -q 'routes in guarded need a team label' "$TMP/out" && grep -q 'guarded-routes-need-team' "$TMP/out" ||
  fail "apply of a policy-denied file must fail with the policy's message: $(cat "$TMP/out")"
[ "$(code GET /routes/guarded/cli-unlabelled)" = 404 ] || fail "a policy-denied apply must not be stored"

# ---- the CLI: token create / list / revoke ----
"$SKIFF" token create --role viewer --name ci-viewer --ttl 24h >"$TMP/tok" 2>"$TMP/tokerr" || fail "token create: $(cat "$TMP/tokerr")"
[ "$(wc -l <"$TMP/tok")" = 1 ] && grep -Eqx 'skiff_[A-Za-z0-9_-]{43}' "$TMP/tok" || fail "token create must print only the secret: $(cat "$TMP/tok")"
VTOKEN=$(cat "$TMP/tok")
grep -q 'ci-viewer' "$TMP/tokerr" && ! grep -q "$VTOKEN" "$TMP/tokerr" || fail "token create notice: $(cat "$TMP/tokerr")"
VAUTH=(-H "authorization: Bearer $VTOKEN")
[ "$(curl -s -o "$TMP/body" -w '%{http_code}' "${VAUTH[@]}" "$API/routes/default/web")" = 200 ] || fail "a viewer may get: $(cat "$TMP/body")"
SKIFF_TOKEN=$VTOKEN "$SKIFF" get services -n shop >"$TMP/out" && grep -q '^shop  *shop-v1 ' "$TMP/out" || fail "viewer get via the CLI: $(cat "$TMP/out")"
[ "$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${VAUTH[@]}" "${JSON[@]}" -d "$(route_json viewer-made default 1)" "$API/routes/default")" = 403 ] || fail "a viewer must not create: $(cat "$TMP/body")"
set +e; SKIFF_TOKEN=$VTOKEN "$SKIFF" apply -f "$TMP/manifests/app.yaml" >/dev/null 2>"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] && grep -q Forbidden "$TMP/out" || fail "viewer apply via the CLI must be refused: $(cat "$TMP/out")"
[ "$(code GET /routes/default/viewer-made)" = 404 ] || fail "a refused create must not be stored"
set +e; SKIFF_TOKEN=$VTOKEN "$SKIFF" token create --role admin --name escalate >"$TMP/out" 2>"$TMP/tokerr"; rc=$?; set -e
[ $rc = 1 ] && [ ! -s "$TMP/out" ] && grep -q Forbidden "$TMP/tokerr" || fail "a viewer must not create tokens: $(cat "$TMP/tokerr")"
"$SKIFF" token list >"$TMP/out" || fail "token list"
grep -Eq '^tok_[A-Za-z0-9_-]+ +ci-viewer +viewer +[0-9T:Z-]+ +[0-9T:Z-]+ +live$' "$TMP/out" || fail "token list row: $(cat "$TMP/out")"
grep -Eq ' bootstrap-admin +admin ' "$TMP/out" || fail "token list must show the bootstrap token: $(cat "$TMP/out")"
! grep -q 'skiff_' "$TMP/out" || fail "token list must not show secrets"
"$SKIFF" token list -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert any(i["name"]=="ci-viewer" and i["role"]=="viewer" and i["expires"] for i in d["items"]), d; assert "skiff_" not in json.dumps(d) and not any("token" in i for i in d["items"]), d' || fail "token list -o json"
"$SKIFF" token revoke ci-viewer | grep -qx 'token/ci-viewer revoked (1 token)' || fail "token revoke"
[ "$(curl -s -o "$TMP/body" -w '%{http_code}' "${VAUTH[@]}" "$API/routes/default/web")" = 401 ] || fail "a revoked token must be 401: $(cat "$TMP/body")"
"$SKIFF" token list | grep -Eq ' ci-viewer +viewer .* revoked$' || fail "list must show the revocation"
set +e; "$SKIFF" token revoke ci-viewer 2>"$TMP/out"; rc=$?; set -e
[ $rc = 1 ] && grep -q "no live token" "$TMP/out" || fail "revoking twice must fail: $(cat "$TMP/out")"
set +e; "$SKIFF" token create --role root --name x 2>/dev/null; rc=$?; set -e
[ $rc = 2 ] || fail "a bad role is a usage error"

# ---- the proxy snapshot: what skiff-proxy accepts as is ----
[ "$(code GET /proxyconfig)" = 200 ] || fail "proxyconfig: $(cat "$TMP/body")"
python3 - "$TMP/body" "$TMP/px.yaml" <<'PY' || fail "proxyconfig content: $(cat "$TMP/body")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["kind"] == "ProxyConfig", d
c = d["config"]
names = [r["name"] for r in c["routes"]]
assert "shop/shop/0/0" in names, names
shop = next(r for r in c["routes"] if r["name"] == "shop/shop/0/0")
# shop-v2 was deleted above: its backend is left out, with a warning naming it
assert shop["backends"] == [{"cluster": "shop/shop-v1", "weight": 50}], shop
# (the routes of the burst above reference a Service that does not exist: at most 64 warnings are listed)
assert any("shop/shop-v2 not found" in w["message"] for w in d["warnings"]) or d["warningsDropped"] > 0, d["warnings"]
assert all(w["field"].startswith("Route ") and "not found" in w["message"] or "left out" in w["message"] for w in d["warnings"])
assert "shop/shop-v1" in [x["name"] for x in c["clusters"]]
c["listeners"] = [{"name": "in", "address": "127.0.0.1:0", "protocol": "http"}]
json.dump(c, open(sys.argv[2], "w"))
PY
"$BIN/skiff-proxy" --config "$TMP/px.yaml" --check >"$TMP/out" 2>&1 || fail "skiff-proxy refuses the snapshot: $(cat "$TMP/out")"

# ---- audit: mutations were recorded ----
[ "$(code GET "/audit?kind=Route&limit=1000")" = 200 ] || fail "audit query: $(cat "$TMP/body")"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert any(i["verb"]=="create" and i["name"]=="web" for i in d["items"]), d["items"][:3]' "$TMP/body" || fail "audit must list the create"
# ... and so were the refusals of the resource API: the unauthenticated lists
# at the top (401, no user) and the viewer's create (403, its token's name)
[ "$(code GET "/audit?kind=Route&verb=list&limit=1000")" = 200 ] || fail "audit query (list): $(cat "$TMP/body")"
python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
r=[i for i in d["items"] if i["code"]==401 and i["user"] is None and i["namespace"] in (None, "")]
assert len(r)>=2 and all(i["message"] for i in r), d["items"][:4]' "$TMP/body" || fail "401s must be audited: $(head -c 800 "$TMP/body")"
[ "$(code GET "/audit?kind=Route&user=ci-viewer&limit=1000")" = 200 ] || fail "audit query (viewer): $(cat "$TMP/body")"
python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
assert any(i["verb"]=="create" and i["code"]==403 and i["role"]=="viewer" and i["namespace"]=="default" and i["message"] for i in d["items"]), d["items"][:4]
assert not any(i["code"] in (200,201) for i in d["items"]), d["items"][:4]' "$TMP/body" || fail "the viewer's 403 must be audited: $(head -c 800 "$TMP/body")"

stop
echo "control: all checks passed"
