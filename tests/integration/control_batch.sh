#!/usr/bin/env bash
# POST /api/v1/batch on a real skiff-control, driven by curl, on sqlite and
# then (when the PostgreSQL server binaries are installed) on a throwaway
# PostgreSQL (tests/support/pg.sh): creates in one transaction with
# consecutive resourceVersions and audit rows, unchanged/configured/deleted
# results, all-or-nothing on an invalid, a policy-denied, a conflicting and
# a missing item (the failure names the item index and kind/ns/name, and
# nothing is written: objects, resourceVersion, audit), dryRun, per-item
# authorization (viewer refused, operator allowed), bounds (item count,
# body size, shape) and the daemon still serving afterwards.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"
. "$SKIFF_SRC_DIR/tests/support/pg.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CONTROL=$BIN/skiff-control
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-control-batch.XXXXXX")
PID=
PG_UP=

cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  [ -n "$PG_UP" ] && pg_stop
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL[${STORE_NAME:-?}]: $*" >&2
  echo "---- skiff-control log" >&2
  tail -40 "$TMP/control.log" >&2 || true
  exit 1
}

jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$TMP/body" "$1"; }

route() { # name ns weight [labels-json]
  printf '{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"%s","namespace":"%s","labels":%s},"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"echo","port":8081,"weight":%s}]}]}}' \
    "$1" "$2" "${4:-{\}}" "$3"
}
apply() { printf '{"op":"apply","object":%s}' "$1"; }
batch() { # code of POST /batch with items joined by commas; body in $TMP/body
  local IFS=,
  printf '{"items":[%s]}' "$*" >"$TMP/req"
  curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${AUTH[@]}" -H 'content-type: application/json' \
    --data-binary "@$TMP/req" "$API/batch"
}
get() { curl -s -o "$TMP/body" -w '%{http_code}' "${AUTH[@]}" "$API/$1"; }
audit_count() { # rows for kind Route in namespace $1
  curl -sf "${AUTH[@]}" "$API/audit?kind=Route&namespace=$1&limit=1000" |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'
}
rv_now() { # the store's resourceVersion (a list's metadata)
  curl -sf "${AUTH[@]}" "$API/routes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])'
}

mkdir -p "$TMP/policies"
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

suite() { # store-url-or-empty
  local store=$1
  PORT=$(free_port)
  ADMIN=$(free_port)
  [ "$PORT" != "$ADMIN" ] || ADMIN=$((PORT + 1))
  API=http://127.0.0.1:$PORT/api/v1
  rm -rf "$TMP/state"
  mkdir -p "$TMP/state"
  cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$PORT
state_dir: $TMP/state
${store:+store: $store}
policies: [$TMP/policies]
max_body: 4MiB
admin:
  listen: 127.0.0.1:$ADMIN
EOF
  : >"$TMP/control.log"
  "$CONTROL" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
  PID=$!
  wait_until 20 curl -sf "http://127.0.0.1:$PORT/healthz" || fail "control did not start"
  wait_until 20 test -s "$TMP/state/admin.token" || fail "no bootstrap token"
  AUTH=(-H "authorization: Bearer $(cat "$TMP/state/admin.token")")

  # ---- authentication, method, shape, bounds ----
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"items":[]}' "$API/batch")" = 401 ] || fail "no token: 401"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/batch")" = 405 ] || fail "GET: 405"
  [ "$(batch)" = 400 ] || fail "empty items: 400"
  printf '{"items":' >"$TMP/req"
  [ "$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${AUTH[@]}" --data-binary "@$TMP/req" "$API/batch")" = 400 ] ||
    fail "bad JSON: 400"
  python3 -c 'import json; print(json.dumps({"items":[{"op":"delete","kind":"Route","name":"x%d"%i} for i in range(10001)]}))' >"$TMP/req"
  [ "$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${AUTH[@]}" --data-binary "@$TMP/req" "$API/batch")" = 413 ] ||
    fail "10001 items: 413 ($(head -c 300 "$TMP/body"))"
  head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$TMP/req"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "${AUTH[@]}" --data-binary "@$TMP/req" "$API/batch")" = 413 ] ||
    fail "5 MiB body: 413"
  [ "$(batch '{"op":"move"}')" = 400 ] || fail "unknown op: 400"
  [ "$(jq_ 'd["details"]["index"]')" = 0 ] || fail "unknown op names item 0: $(cat "$TMP/body")"

  # ---- creates in one transaction ----
  local rv0
  rv0=$(rv_now)
  [ "$(batch "$(apply "$(route a1 shop 10)")" "$(apply "$(route a2 shop 20)")" "$(apply "$(route a3 shop 30)")")" = 200 ] ||
    fail "batch create: $(cat "$TMP/body")"
  [ "$(jq_ '",".join(i["result"] for i in d["items"])')" = created,created,created ] || fail "results: $(cat "$TMP/body")"
  [ "$(jq_ '",".join(i["resourceVersion"] for i in d["items"])')" = "$((rv0 + 1)),$((rv0 + 2)),$((rv0 + 3))" ] ||
    fail "one resourceVersion per object, in order: $(cat "$TMP/body")"
  [ "$(jq_ 'd["items"][1]["object"]["metadata"]["uid"] != ""')" = True ] || fail "object in the answer"
  for n in a1 a2 a3; do [ "$(get "routes/shop/$n")" = 200 ] || fail "get $n"; done
  [ "$(audit_count shop)" = 3 ] || fail "an audit row per item"

  # ---- unchanged / configured / delete + create ----
  [ "$(batch "$(apply "$(route a1 shop 10)")" "$(apply "$(route a2 shop 25)")")" = 200 ] || fail "re-apply: $(cat "$TMP/body")"
  [ "$(jq_ '",".join(i["result"] for i in d["items"])')" = unchanged,configured ] || fail "unchanged,configured: $(cat "$TMP/body")"
  [ "$(jq_ 'd["items"][0]["resourceVersion"]')" = $((rv0 + 1)) ] || fail "unchanged keeps its rv"
  [ "$(batch '{"op":"delete","kind":"routes","namespace":"shop","name":"a3"}' "$(apply "$(route a4 shop 40)")")" = 200 ] ||
    fail "delete+create: $(cat "$TMP/body")"
  [ "$(jq_ '",".join(i["result"] for i in d["items"])')" = deleted,created ] || fail "deleted,created: $(cat "$TMP/body")"
  [ "$(get routes/shop/a3)" = 404 ] || fail "a3 deleted"

  # ---- all-or-nothing ----
  local rv1 audit1
  rv1=$(rv_now)
  audit1=$(audit_count shop)
  # an invalid item (weight out of range) after a valid create and update
  [ "$(batch "$(apply "$(route n1 shop 10)")" "$(apply "$(route a1 shop 11)")" "$(apply "$(route bad shop -5)")")" = 422 ] ||
    fail "invalid item: 422 ($(cat "$TMP/body"))"
  [ "$(jq_ 'd["details"]["index"]')" = 2 ] || fail "invalid: index 2: $(cat "$TMP/body")"
  jq_ 'd["message"]' | has 'item 2 (Route shop/bad)' || fail "message names the item: $(cat "$TMP/body")"
  jq_ 'd["message"]' | has 'nothing was written' || fail "message says nothing was written"
  # a policy denial
  [ "$(batch "$(apply "$(route n1 shop 10)")" "$(apply "$(route g1 guarded 10)")")" = 403 ] ||
    fail "denied item: 403 ($(cat "$TMP/body"))"
  jq_ 'd["message"]' | has 'item 1 (Route guarded/g1)' || fail "denial names the item: $(cat "$TMP/body")"
  jq_ 'd["message"]' | has 'need a team label' || fail "denial carries the policy's message: $(cat "$TMP/body")"
  # a conflict: a stale resourceVersion
  printf '{"op":"apply","resourceVersion":"1","object":%s}' "$(route a2 shop 99)" >"$TMP/stale"
  [ "$(batch "$(apply "$(route n1 shop 10)")" "$(cat "$TMP/stale")")" = 409 ] || fail "conflict: 409 ($(cat "$TMP/body"))"
  [ "$(jq_ 'd["details"]["index"]')" = 1 ] || fail "conflict: index 1"
  # a delete of a missing object
  [ "$(batch "$(apply "$(route n1 shop 10)")" '{"op":"delete","kind":"Route","namespace":"shop","name":"nope"}')" = 404 ] ||
    fail "missing delete: 404 ($(cat "$TMP/body"))"
  [ "$(get routes/shop/n1)" = 404 ] || fail "n1 must not exist after the failed batches"
  [ "$(get routes/shop/a1)" = 200 ] && [ "$(jq_ 'd["spec"]["rules"][0]["backendRefs"][0]["weight"]')" = 10 ] ||
    fail "a1 must be unchanged"
  [ "$(rv_now)" = "$rv1" ] || fail "resourceVersion moved after failed batches ($rv1 -> $(rv_now))"
  [ "$(audit_count shop)" = "$audit1" ] || fail "failed batches left audit rows of changes"

  # ---- dryRun ----
  printf '{"dryRun":true,"items":[%s]}' "$(apply "$(route d1 shop 10)")" >"$TMP/req"
  [ "$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${AUTH[@]}" --data-binary "@$TMP/req" "$API/batch")" = 200 ] ||
    fail "dry run: $(cat "$TMP/body")"
  [ "$(jq_ 'd["items"][0]["result"]+"/"+str(d["dryRun"])')" = created/True ] || fail "dry run result: $(cat "$TMP/body")"
  [ "$(get routes/shop/d1)" = 404 ] || fail "dry run wrote d1"
  [ "$(rv_now)" = "$rv1" ] || fail "dry run moved the resourceVersion"

  # ---- authorization per item ----
  local viewer operator
  curl -sf "${AUTH[@]}" -X POST -H 'content-type: application/json' -d '{"name":"v","role":"viewer"}' "$API/tokens" >"$TMP/body" ||
    fail "viewer token"
  viewer=$(jq_ 'd["token"]')
  curl -sf "${AUTH[@]}" -X POST -H 'content-type: application/json' -d '{"name":"o","role":"operator"}' "$API/tokens" >"$TMP/body" ||
    fail "operator token"
  operator=$(jq_ 'd["token"]')
  local saved=("${AUTH[@]}")
  AUTH=(-H "authorization: Bearer $viewer")
  [ "$(batch "$(apply "$(route v1 shop 10)")")" = 403 ] || fail "viewer create: 403 ($(cat "$TMP/body"))"
  [ "$(batch "$(apply "$(route a1 shop 10)")")" = 403 ] || fail "viewer apply of an existing object: 403"
  [ "$(batch '{"op":"delete","kind":"Route","namespace":"shop","name":"a1"}')" = 403 ] || fail "viewer delete: 403"
  AUTH=(-H "authorization: Bearer $operator")
  [ "$(batch "$(apply "$(route o1 shop 10)")" '{"op":"delete","kind":"Route","namespace":"shop","name":"o1"}')" = 200 ] ||
    fail "operator create+delete: $(cat "$TMP/body")"
  AUTH=("${saved[@]}")
  [ "$(get routes/shop/o1)" = 404 ] || fail "o1 created and deleted in one batch"

  # ---- a big batch: 1000 creates ----
  python3 -c '
import json,sys
docs=[{"op":"apply","object":{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"bulk-%d"%i,"namespace":"bulk"},
  "spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"echo","port":8081}]}]}}} for i in range(1000)]
print(json.dumps({"items":docs}))' >"$TMP/req"
  [ "$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${AUTH[@]}" --data-binary "@$TMP/req" "$API/batch")" = 200 ] ||
    fail "1000 creates: $(head -c 400 "$TMP/body")"
  [ "$(jq_ 'len([i for i in d["items"] if i["result"]=="created"])')" = 1000 ] || fail "1000 created"
  [ "$(curl -sf "${AUTH[@]}" "$API/routes/bulk?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" = 1000 ] ||
    fail "1000 listed"

  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "control must still serve"
  kill -TERM "$PID"
  wait "$PID" || true
  PID=
  if grep -E 'ERROR: AddressSanitizer|runtime error:' "$TMP/control.log"; then fail "sanitizer report"; fi
}

STORE_NAME=sqlite
suite ""
echo "control_batch: sqlite ok"
if pg_available; then
  STORE_NAME=postgresql
  pg_start || fail "cannot start a PostgreSQL cluster"
  PG_UP=1
  # the store-level unit test against PostgreSQL as well
  UNIT=$BIN/../tests/test_control_batch
  [ -x "$UNIT" ] || fail "$UNIT not built"
  SKIFF_TEST_STORE=$PG_URL "$UNIT" >"$TMP/unit.log" 2>&1 || fail "test_control_batch on PostgreSQL: $(tail -20 "$TMP/unit.log")"
  "${PG_PSQL[@]}" -c 'DROP TABLE IF EXISTS meta, objects, events, ctl_audit, ctl_tokens, ctl_join_tokens, skiff_schema' ||
    fail "wipe after the unit test"
  suite "$PG_URL"
  # the batch's writes are one transaction in PostgreSQL too: events gap-free
  [ "$("${PG_PSQL[@]}" -At -c "SELECT count(*) FROM events WHERE namespace = 'bulk'")" = 1000 ] ||
    fail "1000 events in PostgreSQL"
  echo "control_batch: postgresql ok"
else
  echo "control_batch: PostgreSQL not installed, sqlite only"
fi
echo "control_batch: all checks passed"
