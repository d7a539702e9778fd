#!/usr/bin/env bash
# skiff-proxy's identity renews under traffic, with the real binaries:
# skiff-control (HTTPS API with its own identity, 30 s certificates for
# everyone), a skiff-echo upstream and a skiff-proxy with an `identity:`
# section (kind proxy, name edge-1, a one-use join token minted through the
# API) that follows control's config stream over mutual TLS and serves its
# admin listener over TLS with that identity, as `skiff up` wires it
# (examples/proxy-default.yaml). While curl keeps requests on the proxy's
# listener, the identity renews at two thirds of its lifetime:
#   - zero failed requests, the same proxy pid, "identity renewed" logged and
#     counted, a new certificate on disk for the same SPIFFE ID
#   - the admin listener serves the new certificate (openssl s_client serial)
#   - once the first certificate has expired, control is restarted: the
#     proxy reconnects (only the renewed certificate can pass the handshake)
#     and ACKs a Route change, which `skiff proxies` shows, and routes it
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"
. "$SKIFF_SRC_DIR/tests/support/push_lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-push-ident-test.XXXXXX")
CPID= PXPID= E1= E2= HPID=

cleanup() {
  set +e
  [ -n "$HPID" ] && { touch "$TMP/stop"; kill -KILL "$HPID" 2>/dev/null; }
  for p in $PXPID $CPID $E1 $E2; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; grep -v '^{"ts"' "$f" | tail -30 >&2; }; done
  exit 1
}

CTL=$(free_port); CADM=$(free_port); PP=$(free_port); PADM=$(free_port)
EP1=$(free_port); EP2=$(free_port); EA1=$(free_port); EA2=$(free_port)
mkdir -p "$TMP/ctl"

start_echo_pair

cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CTL
state_dir: $TMP/ctl
ca_leaf_ttl: 30s
watch_heartbeat: 1s
tls: {identity: true, client_auth: optional}
admin: {listen: 127.0.0.1:$CADM, tls: {identity: true}}
EOF
CA=$TMP/ctl/ca/bundle.pem
start_control() {
  "$BIN/skiff-control" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
  CPID=$!
  wait_until 30 curl -sf --cacert "$CA" "https://127.0.0.1:$CADM/readyz" || fail "control not ready"
}
start_control
[ -s "$CA" ] || fail "no CA bundle"
TOKEN=$(cat "$TMP/ctl/admin.token")
export SKIFF_SERVER=https://127.0.0.1:$CTL SKIFF_TOKEN=$TOKEN SKIFF_CA=$CA

PROXY_ID=spiffe://skiff.local/region/local/proxy/edge-1
curl -fsS -m 10 --cacert "$CA" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  --data-binary "{\"spiffeId\":\"$PROXY_ID\",\"ttl\":\"10m\",\"uses\":1}" \
  "https://127.0.0.1:$CTL/api/v1/ca/join-tokens" | jq -r .token >"$TMP/proxy.join" || fail "cannot mint a join token"
grep -q '^skiffjoin_' "$TMP/proxy.join" || fail "no join token minted"

# a client certificate from the CA for openssl s_client on the admin listener
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/probe.key" -subj /CN=probe \
  -addext subjectAltName=URI:spiffe://skiff.local/region/local/workload/probe 2>/dev/null |
  jq -Rs '{csr: ., ttl: 600}' |
  curl -fsS -m 10 --cacert "$CA" -H "authorization: Bearer $TOKEN" --data-binary @- \
    "https://127.0.0.1:$CTL/api/v1/ca/csr" | jq -r .chain >"$TMP/probe.pem" || fail "no client certificate issued"
openssl x509 -in "$TMP/probe.pem" -noout >/dev/null 2>&1 || fail "no client certificate"

apply_route() { apply_web "[{name: $1}]"; } # SERVICE
apply_route echo-v1

ID=$TMP/pid
cat >"$TMP/proxy.yaml" <<EOF
listeners:
  - {name: ingress, address: 127.0.0.1:$PP}
admin: {listen: 127.0.0.1:$PADM, tls: {identity: true}}
identity:
  control: https://127.0.0.1:$CTL
  kind: proxy
  name: edge-1
  dir: $ID
  dns: [localhost, 127.0.0.1]
control:
  url: https://127.0.0.1:$CTL
  ca: $ID/bundle.pem
  cert: $ID/cert.pem
  key: $ID/key.pem
  node: edge-1
  backoff: {initial: 100ms, max: 1s}
  cache: $TMP/proxy.cache
EOF
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" --check | has "config ok" || fail "--check"
SKIFF_JOIN_TOKEN_FILE=$TMP/proxy.join "$BIN/skiff-proxy" --config "$TMP/proxy.yaml" >"$TMP/proxy.log" 2>&1 &
PXPID=$!
wait_until 30 curl -sf --cacert "$CA" "https://127.0.0.1:$PADM/readyz" || fail "proxy not ready"
grep -q "identity.*$PROXY_ID" "$TMP/proxy.log" || fail "no identity logged"
[ "$(stat -c %a "$ID/key.pem")" = 600 ] || fail "key not 0600"

version_of() {
  curl -s -m 5 -H 'host: anything' "http://127.0.0.1:$PP/" | jq -r .version 2>/dev/null
}
routes_to() { [ "$(version_of)" = "$1" ]; }
proxies() { curl -fsS -m 5 --cacert "$CA" -H "authorization: Bearer $TOKEN" "https://127.0.0.1:$CTL/api/v1/proxies"; }
synced() {
  local r
  r=$(proxies) || return 1
  [ "$(jq -r '.version as $v | .items[] | select(.node=="edge-1") | (.ackedVersion == $v and .connected)' <<<"$r")" = true ]
}
wait_until 30 routes_to v1 || fail "the proxy does not route per control's config"
wait_until 10 synced || fail "control does not show the ACK: $(proxies)"
[ "$(proxies | jq -r '.items[] | select(.node=="edge-1") | .identity')" = "$PROXY_ID" ] ||
  fail "the stream is not authenticated by the proxy's certificate: $(proxies)"

serial() { # PORT: serial of the certificate served there
  echo | openssl s_client -connect "127.0.0.1:$1" -servername localhost -CAfile "$CA" \
    -cert "$TMP/probe.pem" -key "$TMP/probe.key" 2>/dev/null | openssl x509 -noout -serial 2>/dev/null |
    cut -d= -f2 || true
}
file_serial() { openssl x509 -in "$ID/cert.pem" -noout -serial 2>/dev/null | cut -d= -f2 || true; }
S1=$(file_serial)
[ -n "$S1" ] || fail "no certificate on disk"
[ "$(serial "$PADM")" = "$S1" ] || fail "the admin listener does not serve the proxy's identity"
END1=$(date -d "$(openssl x509 -in "$ID/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
cp "$ID/cert.pem" "$TMP/first.pem"; cp "$ID/key.pem" "$TMP/first.key" # renewals make a fresh key
with_first() { # the first certificate as a client of control's API (after its expiry: no handshake)
  curl -s -m 5 --cacert "$CA" --cert "$TMP/first.pem" --key "$TMP/first.key" -o /dev/null -w '%{http_code}' \
    "https://127.0.0.1:$CTL/api/v1/proxies" 2>/dev/null
}
c=$(with_first) || fail "control refused the proxy's first certificate while it was valid ($c)"

# traffic on the proxy until the identity has renewed (bounded), then a bit longer
cat >"$TMP/hammer.sh" <<EOF
n=0; bad=0
while [ ! -e "$TMP/stop" ]; do
  for c in \$(curl -s -m 10 -H 'host: anything' -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
      -w '%{http_code}\n' "http://127.0.0.1:$PP/?r=a" "http://127.0.0.1:$PP/?r=b" "http://127.0.0.1:$PP/?r=c" \
      "http://127.0.0.1:$PP/?r=d"); do
    n=\$((n+1)); [ "\$c" = 200 ] || bad=\$((bad+1))
  done
done
echo "\$n \$bad" >"$TMP/hammer.out"
EOF
bash "$TMP/hammer.sh" &
HPID=$!
renewed() { [ "$(file_serial)" != "$S1" ] && [ "$(serial "$PADM")" != "$S1" ] && grep -q 'identity renewed' "$TMP/proxy.log"; }
wait_until 90 renewed || { touch "$TMP/stop"; wait "$HPID"; HPID=; fail "the proxy's identity did not renew"; }
sleep 2
touch "$TMP/stop"
wait "$HPID"
HPID=
read -r N BAD <"$TMP/hammer.out"
echo "traffic: $N requests, $BAD failed"
[ "$N" -gt 0 ] || fail "no requests made"
[ "$BAD" = 0 ] || fail "$BAD of $N requests failed during the renewal"
kill -0 "$PXPID" || fail "the proxy died"
same_admin() { [ "$(serial "$PADM")" = "$(file_serial)" ]; } # retried: a renewal may fall between the two
wait_until 10 same_admin || fail "the admin listener does not serve the certificate on disk"
openssl x509 -in "$ID/cert.pem" -noout -ext subjectAltName | has "URI:$PROXY_ID" || fail "renewed identity"
END2=$(date -d "$(openssl x509 -in "$ID/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
[ "$END2" -gt "$END1" ] || fail "the renewed certificate does not live longer ($END1 -> $END2)"
curl -fsS -m 5 --cacert "$CA" --cert "$TMP/probe.pem" --key "$TMP/probe.key" \
  "https://127.0.0.1:$PADM/metrics" >"$TMP/metrics.txt" || fail "no metrics"
grep -qE '^skiff_identity_renewals_total\{result="ok"\} [1-9]' "$TMP/metrics.txt" || fail "renewals not counted"
out=$(promtool check metrics <"$TMP/metrics.txt" 2>&1) || fail "promtool: $out"
# control's audit: the first certificate came with the join token, the next
# through a renewal authenticated by the proxy's current certificate
audit() { curl -fsS -m 5 --cacert "$CA" -H "authorization: Bearer $TOKEN" \
  "https://127.0.0.1:$CTL/api/v1/audit?kind=CA&name=$PROXY_ID&limit=1000"; }
norm() { tr 'A-F' 'a-f' | sed 's/^0*//'; }
A=$(audit) || fail "audit query"
vias() { # SERIAL: the via of the audit row that issued it
  local want; want=$(norm <<<"$1")
  jq -r '.items[] | (.diff | if type == "string" then fromjson else . end) | select(.serial != null) |
    "\(.serial) \(.via)"' <<<"$A" | while read -r sr via; do
    [ "$(norm <<<"$sr")" = "$want" ] && echo "$via"; done
}
[ "$(vias "$S1")" = join-token ] || fail "the first certificate is not audited as a join-token issuance: $A"
S2=$(file_serial)
[ "$(vias "$S2")" = renewal ] || fail "the renewed certificate is not audited as a renewal: $A"

# wait until the first certificate has expired: from here only the renewed
# one passes control's handshake
expired() { [ "$(date +%s)" -gt $((END1 + 1)) ]; }
wait_until 60 expired || fail "the first certificate did not expire"
openssl verify -CAfile "$CA" "$TMP/first.pem" >/dev/null 2>&1 && fail "the first certificate still verifies"
c=$(with_first) && fail "control accepted an expired client certificate ($c)"

# control restarted: the proxy reconnects with its renewed certificate and ACKs a change
kill -TERM "$CPID"; wait "$CPID" 2>/dev/null || true; CPID=
for _ in 1 2 3; do routes_to v1 || fail "the proxy must keep routing while control is down"; done
start_control
wait_until 30 synced || fail "the proxy did not reconnect after control's restart: $(proxies)"
V0=$(proxies | jq -r .version)
apply_route echo-v2
wait_until 20 routes_to v2 || fail "the proxy did not follow a change after the reconnect"
acked_new() {
  local r
  r=$(proxies) || return 1
  [ "$(jq -r --argjson v0 "$V0" '.version as $v | .items[] | select(.node=="edge-1") |
      (.ackedVersion == $v and $v > $v0 and .connected)' <<<"$r")" = true ]
}
wait_until 10 acked_new || fail "no ACK of the change after the reconnect: $(proxies)"
V=$(proxies | jq -r .version)
[ "$(proxies | jq -r '.items[] | select(.node=="edge-1") | .identity')" = "$PROXY_ID" ] ||
  fail "the reconnected stream is not the proxy's identity: $(proxies)"
"$BIN/skiff" proxies >"$TMP/proxies.out" 2>&1 || fail "skiff proxies: $(cat "$TMP/proxies.out")"
grep 'edge-1' "$TMP/proxies.out" | has " $V " || fail "skiff proxies shows edge-1 acked at $V: $(cat "$TMP/proxies.out")"
kill -0 "$PXPID" || fail "the proxy died"

# both stop cleanly on SIGTERM, with no sanitizer report in any log
stop() { # PID: SIGTERM, at most 20 s to exit
  kill -TERM "$1"
  wait_until 20 sh -c "! kill -0 $1" || fail "pid $1 ignored SIGTERM"
}
stop "$PXPID"; rc=0; wait "$PXPID" || rc=$?; PXPID=
[ "$rc" = 0 ] || fail "the proxy exited with $rc on SIGTERM"
stop "$CPID"; rc=0; wait "$CPID" || rc=$?; CPID=
[ "$rc" = 0 ] || fail "control exited with $rc on SIGTERM"
! grep -l 'AddressSanitizer\|LeakSanitizer\|runtime error:' "$TMP"/*.log || fail "a sanitizer report in a log"
echo "push_ident: ok"
