#!/usr/bin/env bash
# skiff-policy's background scans, with the real binaries: skiff-control
# (HTTPS API with its own identity; auth.identities maps the policy daemon
# to viewer) and skiff-policy with an identity (a join token minted through
# the API) and `background: {control: https://..., interval: 1s}`. With an
# Audit policy requiring a `team` label on Services:
#   - a labelled Service shows `result: pass`, an unlabelled one `fail` with
#     the rule's message, in the PolicyReport of their namespace
#   - GET /reports?namespace= filters, the summary counts are right
#   - 30 Services in one namespace with max_results: 10 give 10 results and
#     a summary that still counts 30 (annotation skiff.dev/results-dropped)
#   - a fix through the API shows up in a later scan
#   - /reports needs a client certificate from the CA (admin listener, mTLS)
#   - the scan metrics count scans and results by outcome
#   - with control stopped, failed scans are logged and counted and the last
#     reports stay served; SIGTERM still stops the daemon cleanly
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-policy-reports-test.XXXXXX")
CPID='' POLPID=''

cleanup() {
  set +e
  for p in $POLPID $CPID; do kill -TERM "$p" 2>/dev/null; done
  for p in $POLPID $CPID; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -30 "$f" >&2; }; done
  exit 1
}

CTL=$(free_port); CADM=$(free_port); PP=$(free_port); PADM=$(free_port)
mkdir -p "$TMP/ctl" "$TMP/policies"

cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CTL
state_dir: $TMP/ctl
auth:
  identities:
    - {match: "spiffe://skiff.local/region/*/daemon/policy", role: viewer}
tls: {identity: true, client_auth: optional}
admin: {listen: 127.0.0.1:$CADM, tls: {identity: true}}
EOF
"$BIN/skiff-control" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
CPID=$!
CA=$TMP/ctl/ca/bundle.pem
wait_until 30 curl -sf --cacert "$CA" "https://127.0.0.1:$CADM/readyz" || fail "control not ready"
TOKEN=$(cat "$TMP/ctl/admin.token")
API=https://127.0.0.1:$CTL/api/v1
api() { curl -sS -m 10 --cacert "$CA" -H "authorization: Bearer $TOKEN" "$@"; }

POLICY_ID=spiffe://skiff.local/region/local/daemon/policy
api -f -H 'content-type: application/json' \
  --data-binary "{\"spiffeId\":\"$POLICY_ID\",\"ttl\":\"10m\",\"uses\":1}" \
  "$API/ca/join-tokens" | jq -r .token >"$TMP/policy.join" || fail "cannot mint a join token"
grep -q '^skiffjoin_' "$TMP/policy.join" || fail "no join token minted"

# a client certificate from the CA, for the admin listener
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/probe.key" -subj /CN=probe \
  -addext subjectAltName=URI:spiffe://skiff.local/region/local/workload/probe 2>/dev/null |
  jq -Rs '{csr: ., ttl: 600}' |
  api -f --data-binary @- "$API/ca/csr" | jq -r .chain >"$TMP/probe.pem" || fail "no client certificate issued"

cat >"$TMP/policies/require-team.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: require-team
spec:
  validationFailureAction: Audit
  background: true
  rules:
    - name: check-team
      match:
        any:
          - resources:
              kinds: [Service]
      validate:
        message: "label 'team' is required"
        pattern:
          metadata:
            labels:
              team: "?*"
EOF

service() { # NS NAME LABELS-JSON
  api -f -o /dev/null -H 'content-type: application/json' --data-binary \
    "{\"apiVersion\":\"skiff.dev/v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"$2\",\"namespace\":\"$1\",\"labels\":$3},\"spec\":{\"endpoints\":[\"127.0.0.1:9\"]}}" \
    "$API/services/$1" || fail "cannot create Service $1/$2"
}
service shop good '{"team":"payments"}'
service shop bad '{}'
service web front '{"team":"web"}'
for i in $(seq 1 30); do
  if [ $((i % 3)) = 0 ]; then service bulk "s$i" '{"team":"x"}'; else service bulk "s$i" '{}'; fi
done

ID=$TMP/pid
cat >"$TMP/policy.yaml" <<EOF
listen: 127.0.0.1:$PP
admin: {listen: 127.0.0.1:$PADM, tls: {identity: true}}
identity:
  control: https://127.0.0.1:$CTL
  name: policy
  dir: $ID
  dns: [localhost, 127.0.0.1]
tls: {cert: $ID/cert.pem, key: $ID/key.pem, ca: $ID/bundle.pem, client_auth: optional}
policies: [$TMP/policies]
background:
  control: https://127.0.0.1:$CTL
  interval: 1s
  kinds: [services]
  max_results: 10
EOF
"$BIN/skiff-policy" --config "$TMP/policy.yaml" --check >/dev/null 2>&1 || fail "--check: $("$BIN/skiff-policy" --config "$TMP/policy.yaml" --check 2>&1)"
cat >"$TMP/bad.yaml" <<EOF
background: {control: http://127.0.0.1:$CTL}
EOF
"$BIN/skiff-policy" --config "$TMP/bad.yaml" --check >"$TMP/bad.out" 2>&1 && fail "--check accepted a plain http control"
grep -q "background.control\|control" "$TMP/bad.out" || fail "no clear error for http control: $(cat "$TMP/bad.out")"

SKIFF_CA=$CA SKIFF_JOIN_TOKEN_FILE=$TMP/policy.join "$BIN/skiff-policy" --config "$TMP/policy.yaml" >"$TMP/policy.log" 2>&1 &
POLPID=$!
wait_until 30 curl -sf --cacert "$CA" "https://127.0.0.1:$PADM/readyz" || fail "policy not ready"

reports() { # [QUERY]
  curl -sS -m 10 --cacert "$CA" --cert "$TMP/probe.pem" --key "$TMP/probe.key" "https://127.0.0.1:$PADM/reports${1:-}"
}
scanned() { [ "$(reports | jq '.items | length')" -ge 3 ] 2>/dev/null; }
wait_until 30 scanned || fail "no reports after a scan: $(reports)"

# without a client certificate: refused
code=$(curl -s -m 10 --cacert "$CA" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PADM/reports") || true
[ "$code" = 403 ] || fail "/reports without a client certificate answered $code"

R=$(reports '?namespace=shop')
[ "$(jq '.items | length' <<<"$R")" = 1 ] || fail "namespace filter: $R"
SHOP=$(jq '.items[0]' <<<"$R")
[ "$(jq -r .kind <<<"$SHOP")" = PolicyReport ] || fail "not a PolicyReport: $SHOP"
[ "$(jq -r .apiVersion <<<"$SHOP")" = wgpolicyk8s.io/v1alpha2 ] || fail "apiVersion: $SHOP"
[ "$(jq -r .metadata.namespace <<<"$SHOP")" = shop ] || fail "namespace: $SHOP"
res_of() { jq -r --arg n "$2" '.results[] | select(.resources[0].name == $n) | .'"$3" <<<"$1"; }
[ "$(res_of "$SHOP" bad result)" = fail ] || fail "the unlabelled Service does not fail: $SHOP"
res_of "$SHOP" bad message | grep -q "label 'team' is required" || fail "no rule message: $SHOP"
[ "$(res_of "$SHOP" bad policy)" = require-team ] || fail "policy name: $SHOP"
[ "$(res_of "$SHOP" bad rule)" = check-team ] || fail "rule name: $SHOP"
[ "$(res_of "$SHOP" bad resources[0].kind)" = Service ] || fail "resource kind: $SHOP"
[ "$(res_of "$SHOP" good result)" = pass ] || fail "the labelled Service does not pass: $SHOP"
[ "$(jq -c .summary <<<"$SHOP")" = '{"pass":1,"fail":1,"warn":0,"error":0,"skip":0}' ] || fail "summary: $SHOP"

WEB=$(reports '?namespace=web' | jq '.items[0]')
[ "$(jq -c .summary <<<"$WEB")" = '{"pass":1,"fail":0,"warn":0,"error":0,"skip":0}' ] || fail "web summary: $WEB"

BULK=$(reports '?namespace=bulk' | jq '.items[0]')
[ "$(jq '.results | length' <<<"$BULK")" = 10 ] || fail "max_results not respected: $(jq '.results | length' <<<"$BULK")"
[ "$(jq -c .summary <<<"$BULK")" = '{"pass":10,"fail":20,"warn":0,"error":0,"skip":0}' ] || fail "bulk summary: $(jq -c .summary <<<"$BULK")"
[ "$(jq -r '.metadata.annotations["skiff.dev/results-dropped"]' <<<"$BULK")" = 20 ] || fail "dropped annotation: $(jq -c .metadata <<<"$BULK")"

code=$(curl -s -m 10 --cacert "$CA" --cert "$TMP/probe.pem" --key "$TMP/probe.key" -o /dev/null -w '%{http_code}' \
  "https://127.0.0.1:$PADM/reports?namespace=Bad%20NS") || true
[ "$code" = 400 ] || fail "a bad namespace answered $code"

# fixing the object through the API shows in a later scan
api -f -o /dev/null -X PATCH -H 'content-type: application/merge-patch+json' \
  --data-binary '{"metadata":{"labels":{"team":"ops"}}}' "$API/services/shop/bad" || fail "cannot patch"
fixed() { [ "$(reports '?namespace=shop' | jq -c '.items[0].summary | [.pass, .fail]')" = '[2,0]' ]; }
wait_until 30 fixed || fail "the fix did not show: $(reports '?namespace=shop')"

M=$(curl -sS -m 10 --cacert "$CA" --cert "$TMP/probe.pem" --key "$TMP/probe.key" "https://127.0.0.1:$PADM/metrics")
grep -q '^skiff_policy_background_scans_total{result="ok"} [1-9]' <<<"$M" || fail "no scans counted: $(grep background <<<"$M")"
grep -q '^skiff_policy_background_results{result="pass"} 13' <<<"$M" || fail "pass gauge: $(grep background_results <<<"$M")"
grep -q '^skiff_policy_background_results{result="fail"} 20' <<<"$M" || fail "fail gauge: $(grep background_results <<<"$M")"
grep -q '^skiff_policy_background_objects 33' <<<"$M" || fail "objects gauge: $(grep background_objects <<<"$M")"
grep -q '^skiff_policy_background_scan_duration_seconds_count [1-9]' <<<"$M" || fail "no duration"

# control gone: scans fail, are counted, and the last reports stay served
kill -TERM "$CPID"; wait "$CPID" 2>/dev/null || true; CPID=
failing() {
  curl -sS -m 5 --cacert "$CA" --cert "$TMP/probe.pem" --key "$TMP/probe.key" "https://127.0.0.1:$PADM/metrics" |
    grep -q '^skiff_policy_background_scans_total{result="error"} [1-9]'
}
wait_until 30 failing || fail "a failed scan is not counted"
grep -q "background scan failed" "$TMP/policy.log" || fail "a failed scan is not logged"
fixed || fail "the reports were dropped after a failed scan: $(reports '?namespace=shop')"

# the daemon stops cleanly with a scan schedule running
kill -TERM "$POLPID"
for _ in $(seq 100); do kill -0 "$POLPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$POLPID" 2>/dev/null && fail "skiff-policy did not stop on SIGTERM"
wait "$POLPID" || fail "skiff-policy exited with $?"
POLPID=
echo "ok"
