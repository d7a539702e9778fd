#!/usr/bin/env bash
# skiff-gitops -> skiff-control over mutual TLS (docs/control-security.md,
# row 4; docs/gitops.md "Authenticating to control"): skiff-control as
# examples/control.yaml runs it (HTTPS with its CA's identity, client
# certificates optional) with 20 s leaf certificates; skiff-gitops with an
# `identity:` section (join token minted through the API) and no bearer
# token, and examples/control.yaml's `auth.identities` rule giving that
# identity the operator role. The sample Application syncs and control's
# audit log names spiffe://skiff.local/region/local/daemon/gitops (via mtls,
# role operator) as the actor of every change, and the admin-only audit log
# is 403 to it; the certificate renews in place (same pid), and once the
# first one has expired and control restarts (every connection new), a
# commit is still applied by the same identity: the client context reloaded.
# A gitops presenting a certificate of another CA (the right SPIFFE ID,
# self-signed) fails the handshake, and one with neither identity nor token
# is answered 401 (audited): both change nothing.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/gitops_lib.sh"
GX_TAIL=30
gx_init gitops-mtls control gitops rogue anon
API=https://127.0.0.1:$CPORT/api/v1
GX_ID=spiffe://skiff.local/region/local/daemon/gitops
gx_sample_repo

gx_control_yaml "ca_leaf_ttl: 20s" "tls: {identity: true, client_auth: optional}" "admin: {listen: 127.0.0.1:$CADMIN}" \
  'auth:
  identities: [{match: "spiffe://skiff.local/region/*/daemon/gitops", role: operator}]  # as examples/control.yaml'
CA=$TMP/cstate/ca/bundle.pem
gx_run_control
audit() { curl -sf "${AUTH[@]}" -G "$API/audit" --data-urlencode "limit=1000" "$@"; }

curl -fsS -m 10 "${AUTH[@]}" -H 'content-type: application/json' \
  --data-binary "{\"spiffeId\":\"$GX_ID\",\"ttl\":\"10m\",\"uses\":1}" "$API/ca/join-tokens" |
  jq -r .token >"$TMP/gitops.join" || fail "cannot mint a join token for gitops"
grep -q '^skiffjoin_' "$TMP/gitops.join" || fail "no join token"

# bad identities rules are refused with their position
printf 'state_dir: %s\nauth:\n  identities:\n    - {match: "https://x", role: operator}\n    - {match: "spiffe://a/**", role: root}\n' \
  "$TMP/cstate" >"$TMP/bad-control.yaml"
out=$("$BIN/skiff-control" --config "$TMP/bad-control.yaml" --check 2>&1) && fail "bad auth.identities accepted"
has -E "bad-control.yaml:4:[0-9]+: .*spiffe://" <<<"$out" || fail "bad match not reported: $out"
has -E "bad-control.yaml:5:[0-9]+: .*role" <<<"$out" || fail "bad role not reported: $out"

# no token_file: with the identity, gitops authenticates with its certificate
cat >"$TMP/gitops.yaml" <<EOF
listen: 127.0.0.1:$GXPORT
control: https://127.0.0.1:$CPORT
control_ca: $CA
state_dir: $TMP/gxstate
poll_interval: 500ms
resync_interval: 500ms
app_refresh: 200ms
admin: {listen: 127.0.0.1:$GXADMIN}
identity:
  control: https://127.0.0.1:$CPORT
  name: gitops
  dir: $TMP/gxstate/identity
  join_token_file: $TMP/gitops.join
  bundle: $CA
EOF
gx_run_gitops 30
grep -q 'control_auth=mtls\|"control_auth":"mtls"' "$TMP/gitops.log" || fail "gitops does not use its identity for control"
CERT=$TMP/gxstate/identity/cert.pem
openssl x509 -in "$CERT" -noout -ext subjectAltName | has "URI:$GX_ID" || fail "gitops has the wrong identity"
SERIAL1=$(openssl x509 -in "$CERT" -noout -serial)
END1=$(date -d "$(openssl x509 -in "$CERT" -noout -enddate | cut -d= -f2)" +%s)

sed "s|REPO_URL|file://$R|" "$SRC/examples/gitops-repo/applications/demo.yaml" |
  curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications.argoproj.io/argocd" \
    --data-binary @- >/dev/null || fail "apply the sample Application"
app() { get applications/argocd/demo | jq -r "$1"; }
synced() { [ "$(app .status.sync.status)" = Synced ] && [ "$(app .status.health.status)" = Healthy ]; }
wait_until 30 synced || fail "sample not synced: $(get applications/argocd/demo)"
get routes/demo/echo | has '"weight":90' || fail "the canary route is not there"

# every change in namespace demo was made by gitops's SPIFFE ID over mTLS
audit --data-urlencode "namespace=demo" >"$TMP/audit.json" || fail "audit query"
jq -e '[.items[] | select(.code < 300)] | length >= 4' "$TMP/audit.json" >/dev/null ||
  fail "no changes audited in demo: $(cat "$TMP/audit.json")"
jq -e --arg id "$GX_ID" '[.items[] | select(.code < 300) | select(.user != $id or .via != "mtls" or .role != "operator")] | length == 0' \
  "$TMP/audit.json" >/dev/null || fail "a change in demo not made by $GX_ID (operator) over mTLS: $(cat "$TMP/audit.json")"
# operator, not admin: the audit log (admin only) is closed to gitops's certificate
code=$(curl -sS -m 10 --cacert "$CA" --cert "$TMP/gxstate/identity/cert.pem" --key "$TMP/gxstate/identity/key.pem" \
  -o /dev/null -w '%{http_code}' "$API/audit")
[ "$code" = 403 ] || fail "gitops's identity read the audit log ($code)"
audit --data-urlencode "user=bootstrap-admin" | jq -e '[.items[] | select(.namespace == "demo")] | length == 0' >/dev/null ||
  fail "the admin token acted in demo"
# the Application status gitops writes is its identity's too
audit --data-urlencode "user=$GX_ID" | jq -e '[.items[] | select(.namespace == "argocd")] | length >= 1' >/dev/null ||
  fail "the Application status was not written by $GX_ID"

# renewal at two thirds of 20 s, no restart; then wait until the first
# certificate has expired
wait_until 40 sh -c "[ \"\$(openssl x509 -in '$CERT' -noout -serial)\" != '$SERIAL1' ]" ||
  fail "gitops's certificate was not renewed"
grep -q "identity renewed" "$TMP/gitops.log" || fail "no renewal logged"
wait_until 40 sh -c "[ \$(date +%s) -gt $((END1 + 1)) ]" || fail "clock"
kill -0 "$GXPID" || fail "gitops died"
# every connection is new after a control restart: only the renewed
# certificate can pass the handshake now
kill -TERM "$CPID"
wait "$CPID" || true
CPID=
gx_run_control
sed -i 's/weight: 90/weight: 80/; s/weight: 10/weight: 20/' "$R/examples/gitops-repo/apps/demo/canary.yaml"
git -C "$R" -c user.name=demo -c user.email=demo@example.com commit -qam "80/20"
wait_until 40 sh -c "curl -sf --cacert '$CA' -H 'authorization: Bearer $TOKEN' '$API/routes/demo/echo' | grep -q '\"weight\":80'" ||
  fail "the 80/20 commit was not applied after the renewal: $(app .status)"
audit --data-urlencode "namespace=demo" --data-urlencode "name=echo" |
  jq -e --arg id "$GX_ID" '[.items[] | select(.verb != "create" and .code < 300 and .user == $id and .via == "mtls")] | length >= 1' \
    >/dev/null || fail "the update of routes/demo/echo is not audited as $GX_ID"
[ "$(openssl x509 -in "$CERT" -noout -serial)" != "$SERIAL1" ] || fail "serial"
kill -0 "$GXPID" || fail "gitops restarted"

# a gitops with the right SPIFFE ID on a certificate of another CA: the
# handshake fails, nothing reaches the API
mkdir -p "$TMP/rogue/identity"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=gitops \
  -addext "subjectAltName=URI:$GX_ID" -keyout "$TMP/rogue/identity/key.pem" \
  -out "$TMP/rogue/identity/cert.pem" 2>/dev/null || fail "cannot make the rogue certificate"
chmod 600 "$TMP/rogue/identity/key.pem"
cp "$CA" "$TMP/rogue/identity/bundle.pem"
curl -sS -m 5 --cacert "$CA" --cert "$TMP/rogue/identity/cert.pem" --key "$TMP/rogue/identity/key.pem" \
  -o /dev/null "$API/applications" 2>/dev/null && fail "control accepted a certificate of another CA"
BEFORE=$(audit | jq '[.items[].id] | max')
RADM=$(free_port)
sed -e "s#$TMP/gxstate#$TMP/rogue#g" -e "s/127.0.0.1:$GXPORT/127.0.0.1:$(free_port)/" \
  -e "s/127.0.0.1:$GXADMIN/127.0.0.1:$RADM/" -e '/join_token_file/d' "$TMP/gitops.yaml" >"$TMP/rogue.yaml"
"$BIN/skiff-gitops" --config "$TMP/rogue.yaml" >>"$TMP/rogue.log" 2>&1 &
PIDS+=($!)
wait_until 30 grep -q "control unavailable" "$TMP/rogue.log" || fail "the rogue gitops reached control"
grep -q "control unreachable: TLS error" "$TMP/rogue.log" || fail "rogue: no TLS error logged"

# no identity, no token: 401, audited, nothing applied
ANADM=$(free_port)
sed -e "s#$TMP/gxstate#$TMP/anon#g" -e "s/127.0.0.1:$GXPORT/127.0.0.1:$(free_port)/" \
  -e "s/127.0.0.1:$GXADMIN/127.0.0.1:$ANADM/" -e '/^identity:/,$d' "$TMP/gitops.yaml" >"$TMP/anon.yaml"
"$BIN/skiff-gitops" --config "$TMP/anon.yaml" >>"$TMP/anon.log" 2>&1 &
PIDS+=($!)
wait_until 30 grep -q "control unavailable" "$TMP/anon.log" || fail "the anonymous gitops was not refused"
wait_until 10 sh -c "curl -sf --cacert '$CA' -H 'authorization: Bearer $TOKEN' '$API/audit?limit=1000' | jq -e '[.items[] | select(.id > $BEFORE and .code == 401 and .user == null)] | length >= 1' >/dev/null" ||
  fail "the anonymous gitops's 401 is not audited"
audit | jq -e --argjson b "$BEFORE" '[.items[] | select(.id > $b and .code < 300 and .verb != "get" and .verb != "list")] | length == 0' \
  >/dev/null || fail "a refused gitops changed something"
echo ok
