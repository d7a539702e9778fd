#!/usr/bin/env bash
# skiff-control runs its policies on DELETE and tells them about dry runs,
# driven by curl: a deny rule on DELETE refuses the delete of a labelled
# Route with 403 and the policy's message (substituted from
# request.oldObject and request.userInfo), the object stays and the refusal
# is audited; a rule whose operations leave DELETE out, and a pattern rule,
# do not block deletes; a deny rule without operations sees DELETE too
# (Kyverno's default for validate rules: every operation); ?dryRun=All on
# DELETE runs the policies, answers the object and deletes nothing; a policy
# reading {{request.dryRun}} sees true on dry-run create, patch, delete and
# batch, and false otherwise; a batch delete is refused like a single one.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CONTROL=$BIN/skiff-control
one_daemon ctl-delpol control # TMP, PID (killed at exit), PORT, ADMIN, fail
URL=http://127.0.0.1:$PORT
API=$URL/api/v1
mkdir -p "$TMP/policies" "$TMP/state"

# DELETE of a Route labelled protected=true is refused (operations: [DELETE])
cat >"$TMP/policies/protect.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: protect-routes
spec:
  validationFailureAction: Enforce
  rules:
  - name: no-protected-deletes
    match:
      any:
      - resources:
          kinds: [Route]
          operations: [DELETE]
    validate:
      message: "Deleting {{ request.oldObject.kind }}/{{ request.oldObject.metadata.name }} is not allowed for {{ request.userInfo.username }}: it is protected"
      deny:
        conditions:
          any:
          - key: "{{ request.oldObject.metadata.labels.protected || '' }}"
            operator: Equals
            value: "true"
EOF
# routes in frozen may not change; the rule leaves DELETE out, so deletes pass
cat >"$TMP/policies/frozen.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: frozen-routes
spec:
  validationFailureAction: Enforce
  rules:
  - name: no-changes
    match:
      any:
      - resources:
          kinds: [Route]
          namespaces: [frozen]
          operations: [UPDATE]
    validate:
      message: "routes in frozen cannot change"
      deny: {}
EOF
# no operations listed: the deny rule sees every operation, DELETE included
cat >"$TMP/policies/sealed.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: sealed-routes
spec:
  validationFailureAction: Enforce
  rules:
  - name: stay
    match:
      any:
      - resources:
          kinds: [Route]
          namespaces: [sealed]
    validate:
      message: "routes in sealed stay ({{ request.operation }})"
      deny:
        conditions:
          any:
          - key: "{{ request.operation }}"
            operator: Equals
            value: DELETE
EOF
# a pattern rule (no operations) never blocks a delete
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
# every request in drytest that the policies see as a dry run is refused,
# so a 403 with this message proves request.dryRun was true
cat >"$TMP/policies/dry.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: see-dry-run
spec:
  validationFailureAction: Enforce
  rules:
  - name: dry
    match:
      any:
      - resources:
          kinds: [Route]
          namespaces: [drytest]
    validate:
      message: "dryRun is {{ request.dryRun }} for {{ request.operation }}"
      deny:
        conditions:
          all:
          - key: "{{ request.dryRun }}"
            operator: Equals
            value: true
EOF

cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$PORT
state_dir: $TMP/state
policies: [$TMP/policies]
admin:
  listen: 127.0.0.1:$ADMIN
EOF
"$CONTROL" --config "$TMP/control.yaml" --check | has "config ok" || fail "--check on a good config"
"$CONTROL" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
PID=$!
wait_until 20 curl -sf "$URL/healthz" || fail "control did not start"
TOKEN=$(cat "$TMP/state/admin.token")
AUTH=(-H "authorization: Bearer $TOKEN")
JSON=(-H "content-type: application/json")

code() { # METHOD PATH [curl args...]: the status; body in $TMP/body, headers in $TMP/hdr
  local m=$1 p=$2; shift 2
  curl -s -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' -X "$m" "${AUTH[@]}" "$@" "$API$p"
}
jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$TMP/body" "$1"; }
route_json() { # name ns [labels-json]
  printf '{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"%s","namespace":"%s","labels":%s},"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"echo","port":8081,"weight":1}]}]}}' \
    "$1" "$2" "${3:-{\}}"
}
mk() { # name ns [labels-json]
  [ "$(code POST "/routes/$2" "${JSON[@]}" -d "$(route_json "$@")")" = 201 ] || fail "create $2/$1: $(cat "$TMP/body")"
}
batch() { # code of POST /batch$1 with body $2
  curl -s -o "$TMP/body" -w '%{http_code}' -X POST "${AUTH[@]}" "${JSON[@]}" -d "$2" "$API/batch$1"
}

# ---- a deny rule on DELETE: 403 with the message, nothing deleted, audited ----
mk keep default '{"protected":"true"}'
mk plain default
[ "$(code DELETE /routes/default/keep)" = 403 ] || fail "protected delete must be 403: $(cat "$TMP/body")"
[ "$(jq_ 'd["reason"]')" = Forbidden ] || fail "reason Forbidden: $(cat "$TMP/body")"
has -F 'Deleting Route/keep is not allowed for bootstrap-admin: it is protected' <"$TMP/body" ||
  fail "the policy's message (oldObject, userInfo) must reach the client: $(cat "$TMP/body")"
has -F 'protect-routes' <"$TMP/body" || fail "the message must name the policy: $(cat "$TMP/body")"
[ "$(code GET /routes/default/keep)" = 200 ] || fail "a denied delete must leave the object"
[ "$(code GET "/audit?kind=Route&verb=delete&namespace=default&limit=100")" = 200 ] || fail "audit query: $(cat "$TMP/body")"
python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
assert any(i["name"]=="keep" and i["code"]==403 and "protected" in (i["message"] or "") for i in d["items"]), d["items"][:4]' \
  "$TMP/body" || fail "the refused delete must be audited: $(head -c 800 "$TMP/body")"
# an unprotected Route is deleted as before
[ "$(code DELETE /routes/default/plain)" = 200 ] || fail "unprotected delete: $(cat "$TMP/body")"
has -i '^x-skiff-result: deleted' <"$TMP/hdr" || fail "delete must say deleted"
[ "$(code GET /routes/default/plain)" = 404 ] || fail "the unprotected Route must be gone"
# the label is read from the stored object: dropping it lets the delete through
[ "$(code PATCH /routes/default/keep -H 'content-type: application/merge-patch+json' -d '{"metadata":{"labels":{"protected":null}}}')" = 200 ] ||
  fail "unlabel: $(cat "$TMP/body")"
[ "$(code DELETE /routes/default/keep)" = 200 ] || fail "delete after unlabelling: $(cat "$TMP/body")"

# ---- rules that do not apply to DELETE do not block it ----
mk ice frozen
[ "$(code PATCH /routes/frozen/ice -H 'content-type: application/merge-patch+json' -d '{"metadata":{"labels":{"a":"b"}}}')" = 403 ] ||
  fail "the frozen policy must refuse an update: $(cat "$TMP/body")"
[ "$(code DELETE /routes/frozen/ice)" = 200 ] || fail "operations without DELETE must not block a delete: $(cat "$TMP/body")"
mk g1 guarded '{"team":"shop"}'
[ "$(code DELETE /routes/guarded/g1)" = 200 ] || fail "a pattern rule must not block a delete: $(cat "$TMP/body")"
# ... while a deny rule without operations sees DELETE (every operation)
mk s1 sealed
[ "$(code DELETE /routes/sealed/s1)" = 403 ] || fail "a rule without operations must see DELETE: $(cat "$TMP/body")"
has -F 'routes in sealed stay (DELETE)' <"$TMP/body" || fail "sealed message: $(cat "$TMP/body")"
[ "$(code GET /routes/sealed/s1)" = 200 ] || fail "the sealed Route must stay"

# ---- dry-run delete: policies run, nothing is deleted ----
mk d1 default
RV=$(jq_ 'd["metadata"]["resourceVersion"]')
[ "$(code DELETE '/routes/default/d1?dryRun=All')" = 200 ] || fail "dry-run delete: $(cat "$TMP/body")"
has -i '^x-skiff-result: dry-run' <"$TMP/hdr" || fail "dry-run delete must say dry-run: $(cat "$TMP/hdr")"
[ "$(jq_ 'd["metadata"]["name"] + "/" + d["metadata"]["resourceVersion"]')" = "d1/$RV" ] ||
  fail "dry-run delete must answer the object: $(cat "$TMP/body")"
[ "$(code GET /routes/default/d1)" = 200 ] || fail "a dry-run delete must leave the object"
[ "$(code GET "/audit?kind=Route&verb=delete&namespace=default&limit=100")" = 200 ] || fail "audit query"
python3 -c '
import json,sys
d=json.load(open(sys.argv[1]))
assert not any(i["name"]=="d1" for i in d["items"]), d["items"][:4]' "$TMP/body" || fail "a dry-run delete must not be audited as a change"
[ "$(code DELETE '/routes/default/nope?dryRun=All')" = 404 ] || fail "dry-run delete of a missing object must be 404"
[ "$(code DELETE '/routes/default/d1?dryRun=Some')" = 400 ] || fail "dryRun must be All"
[ "$(code DELETE '/routes/sealed/s1?dryRun=All')" = 403 ] || fail "a dry-run delete must run the policies: $(cat "$TMP/body")"
has -F 'routes in sealed stay (DELETE)' <"$TMP/body" || fail "dry-run delete denial message: $(cat "$TMP/body")"

# ---- request.dryRun: true on dry runs, false otherwise ----
[ "$(code POST '/routes/drytest?dryRun=All' "${JSON[@]}" -d "$(route_json x1 drytest)")" = 403 ] ||
  fail "the policy must see dryRun true on a dry-run create: $(cat "$TMP/body")"
has -F 'dryRun is true for CREATE' <"$TMP/body" || fail "dry-run create message: $(cat "$TMP/body")"
mk x1 drytest
[ "$(code PATCH '/routes/drytest/x1?dryRun=All' -H 'content-type: application/merge-patch+json' -d '{"metadata":{"labels":{"a":"b"}}}')" = 403 ] ||
  fail "the policy must see dryRun true on a dry-run patch: $(cat "$TMP/body")"
has -F 'dryRun is true for UPDATE' <"$TMP/body" || fail "dry-run patch message: $(cat "$TMP/body")"
[ "$(code DELETE '/routes/drytest/x1?dryRun=All')" = 403 ] || fail "the policy must see dryRun true on a dry-run delete: $(cat "$TMP/body")"
has -F 'dryRun is true for DELETE' <"$TMP/body" || fail "dry-run delete message: $(cat "$TMP/body")"
[ "$(batch '' "{\"dryRun\":true,\"items\":[{\"op\":\"apply\",\"object\":$(route_json x2 drytest)}]}")" = 403 ] ||
  fail "the policy must see dryRun true in a dry-run batch: $(cat "$TMP/body")"
has -F 'dryRun is true for CREATE' <"$TMP/body" || fail "dry-run batch message: $(cat "$TMP/body")"
[ "$(batch '?dryRun=All' '{"items":[{"op":"delete","kind":"routes","namespace":"drytest","name":"x1"}]}')" = 403 ] ||
  fail "the policy must see dryRun true on a dry-run batch delete: $(cat "$TMP/body")"
has -F 'dryRun is true for DELETE' <"$TMP/body" || fail "dry-run batch delete message: $(cat "$TMP/body")"
[ "$(code DELETE /routes/drytest/x1)" = 200 ] || fail "a real delete must see dryRun false: $(cat "$TMP/body")"

# ---- batch deletes go through the policies too ----
mk b1 default '{"protected":"true"}'
mk b2 default
[ "$(batch '' '{"items":[{"op":"delete","kind":"routes","namespace":"default","name":"b2"},{"op":"delete","kind":"routes","namespace":"default","name":"b1"}]}')" = 403 ] ||
  fail "a batch delete of a protected Route must be 403: $(cat "$TMP/body")"
has -F 'Deleting Route/b1 is not allowed' <"$TMP/body" || fail "batch denial message: $(cat "$TMP/body")"
[ "$(jq_ 'd["details"]["index"]')" = 1 ] || fail "the denial must name item 1: $(cat "$TMP/body")"
[ "$(code GET /routes/default/b1)" = 200 ] && [ "$(code GET /routes/default/b2)" = 200 ] || fail "a denied batch must delete nothing"
[ "$(batch '' '{"items":[{"op":"delete","kind":"routes","namespace":"default","name":"b2"}]}')" = 200 ] ||
  fail "a batch delete of an unprotected Route: $(cat "$TMP/body")"
[ "$(code GET /routes/default/b2)" = 404 ] || fail "the batch delete must remove b2"

kill -TERM "$PID"
wait "$PID" || true
PID=
echo "control_delete_policy: all checks passed"
