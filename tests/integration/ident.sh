#!/usr/bin/env bash
# Daemon identities with the real binaries: skiff-control (HTTPS API with its
# own CA-issued certificate, 30 s certificates for everyone) and skiff-policy
# with an `identity:` section, started with a one-use join token minted
# through the API. While curl (mTLS, a client certificate from the same CA)
# hammers policy's HTTPS listener with AdmissionReviews, both control's and
# policy's certificates renew at two thirds of their lifetime without a
# restart: zero failed requests, the serial openssl s_client sees changes,
# same pids. Then: a used-up join token is refused (the daemon waits, does
# not serve, and stops cleanly on SIGTERM), and a restart with a fresh
# certificate on disk needs no token at all. Control's admin listener serves
# its own identity too (admin.tls.identity on the CA itself) and picks up
# the renewed certificate in place.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-ident-test.XXXXXX")
CPID= PPID2= QPID=

cleanup() {
  set +e
  for p in $QPID $PPID2 $CPID; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -30 "$f" >&2; }; done
  exit 1
}

CTL=$(free_port)
CADM=$(free_port)
POL=$(free_port)
PADM=$(free_port)
QADM=$(free_port)
QPOL=$(free_port)
mkdir -p "$TMP/ctl"

cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CTL
state_dir: $TMP/ctl
ca_leaf_ttl: 30s
tls: {identity: true, client_auth: optional}
admin: {listen: 127.0.0.1:$CADM, tls: {identity: true}}
EOF
"$BIN/skiff-control" --config "$TMP/control.yaml" >"$TMP/control.log" 2>&1 &
CPID=$!
CA=$TMP/ctl/ca/bundle.pem
wait_until 30 curl -sf --cacert "$CA" "https://127.0.0.1:$CADM/readyz" || fail "control not ready"
[ -s "$CA" ] || fail "no CA bundle"
TOKEN=$(cat "$TMP/ctl/admin.token")
curl -sS -m 5 -o /dev/null "http://127.0.0.1:$CTL/api/v1/routes" 2>/dev/null && fail "control answered plain HTTP"

mint() { # SPIFFE-ID FILE [uses]: a join token through the API
  curl -fsS -m 10 --cacert "$CA" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    --data-binary "{\"spiffeId\":\"$1\",\"ttl\":\"10m\",\"uses\":${3:-1}}" \
    "https://127.0.0.1:$CTL/api/v1/ca/join-tokens" | jq -r .token >"$2" || fail "cannot mint a join token for $1"
  grep -q '^skiffjoin_' "$2" || fail "no join token minted for $1"
}
PID_ID=spiffe://skiff.local/region/local/daemon/policy
mint "$PID_ID" "$TMP/policy.join"

# the hammer's client certificate (an admin may ask for any identity)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/hammer.key" -subj /CN=hammer \
  -addext subjectAltName=URI:spiffe://skiff.local/region/local/workload/hammer 2>/dev/null |
  jq -Rs '{csr: ., ttl: 600}' |
  curl -fsS -m 10 --cacert "$CA" -H "authorization: Bearer $TOKEN" --data-binary @- \
    "https://127.0.0.1:$CTL/api/v1/ca/csr" | jq -r .chain >"$TMP/hammer.pem" || fail "no client certificate issued"
openssl x509 -in "$TMP/hammer.pem" -noout >/dev/null 2>&1 || fail "no client certificate"

policy_cfg() { # FILE LISTEN ADMIN DIR
  cat >"$1" <<EOF
listen: 127.0.0.1:$2
admin: {listen: 127.0.0.1:$3}
identity:
  control: https://127.0.0.1:$CTL
  name: policy
  dir: $4
  dns: [localhost, 127.0.0.1]
tls:
  cert: $4/cert.pem
  key: $4/key.pem
  ca: $4/bundle.pem
  client_auth: require
EOF
}
policy_cfg "$TMP/policy.yaml" "$POL" "$PADM" "$TMP/pid"
SKIFF_JOIN_TOKEN_FILE=$TMP/policy.join SKIFF_CA=$CA "$BIN/skiff-policy" --config "$TMP/policy.yaml" \
  >"$TMP/policy.log" 2>&1 &
PPID2=$!
wait_until 30 curl -sf "http://127.0.0.1:$PADM/readyz" || fail "policy not ready"
wait_until 10 grep -q 'serving\|ready' "$TMP/policy.log" || fail "policy did not log that it serves"
grep -q 'identity.*spiffe://skiff.local/region/local/daemon/policy' "$TMP/policy.log" || fail "no identity logged"
[ "$(stat -c %a "$TMP/pid/key.pem")" = 600 ] || fail "key not 0600"

serial() { # PORT: serial of the certificate served there
  echo | openssl s_client -connect "127.0.0.1:$1" -servername localhost -CAfile "$CA" \
    -cert "$TMP/hammer.pem" -key "$TMP/hammer.key" 2>/dev/null | openssl x509 -noout -serial 2>/dev/null |
    cut -d= -f2 || true
}
S1=$(serial "$POL")
C1=$(serial "$CTL")
[ -n "$S1" ] && [ -n "$C1" ] || fail "no serials (policy '$S1', control '$C1')"
[ "$(serial "$CADM")" = "$C1" ] || fail "control's admin does not serve control's identity"

review='{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",'
review+='"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"default",'
review+='"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[]}}}}'
printf '%s' "$review" >"$TMP/review.json"
# without a client certificate: refused (client_auth: require)
curl -sS -m 5 --cacert "$CA" -o /dev/null --data-binary @"$TMP/review.json" "https://127.0.0.1:$POL/validate" \
  2>/dev/null && fail "policy accepted a client without a certificate"

# hammer until both certificates have changed (bounded), then a bit longer
cat >"$TMP/hammer.sh" <<EOF
n=0; bad=0
while [ ! -e "$TMP/stop" ]; do
  for c in \$(curl -s -m 10 --cacert "$CA" --cert "$TMP/hammer.pem" --key "$TMP/hammer.key" \
      -H 'content-type: application/json' --data-binary @"$TMP/review.json" \
      -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}\n' \
      "https://127.0.0.1:$POL/validate" "https://127.0.0.1:$POL/validate" "https://127.0.0.1:$POL/validate"); do
    n=\$((n+1)); [ "\$c" = 200 ] || bad=\$((bad+1))
  done
  # control's API too (its own certificate renews as well), with the admin token
  c=\$(curl -s -m 10 --cacert "$CA" -H "authorization: Bearer $TOKEN" -o /dev/null -w '%{http_code}' \
      "https://127.0.0.1:$CTL/api/v1/routes")
  n=\$((n+1)); [ "\$c" = 200 ] || bad=\$((bad+1))
done
echo "\$n \$bad" >"$TMP/hammer.out"
EOF
bash "$TMP/hammer.sh" &
HPID=$!
changed() { [ "$(serial "$POL")" != "$S1" ] && [ "$(serial "$CTL")" != "$C1" ] && [ "$(serial "$CADM")" != "$C1" ]; }
wait_until 90 changed || { touch "$TMP/stop"; wait "$HPID"; fail "certificates did not renew"; }
sleep 3
touch "$TMP/stop"
wait "$HPID"
read -r N BAD <"$TMP/hammer.out"
echo "hammer: $N requests, $BAD failed"
[ "$N" -gt 0 ] || fail "no requests made"
[ "$BAD" = 0 ] || fail "$BAD of $N requests failed during renewal"
kill -0 "$PPID2" && kill -0 "$CPID" || fail "a daemon died"
grep -q 'identity renewed' "$TMP/policy.log" || fail "policy logged no renewal"
grep -q 'API certificate renewed' "$TMP/control.log" || fail "control logged no renewal"
same_ctl() { [ "$(serial "$CADM")" = "$(serial "$CTL")" ]; } # retried: a renewal may fall between the two
wait_until 10 same_ctl || fail "control's admin and API serve different certificates"
code=$(curl -sS -m 5 --cacert "$CA" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$CADM/metrics")
[ "$code" = 403 ] || fail "control's admin /metrics without a client certificate: $code"
curl -fsS -m 5 --cacert "$CA" --cert "$TMP/hammer.pem" --key "$TMP/hammer.key" "https://127.0.0.1:$CADM/metrics" |
  has '^skiff_control_resource_version ' || fail "control's admin /metrics with a client certificate"
openssl x509 -in "$TMP/pid/cert.pem" -noout -ext subjectAltName | has "URI:$PID_ID" || fail "renewed identity"
curl -fsS -m 5 "http://127.0.0.1:$PADM/metrics" >"$TMP/metrics.txt" || fail "no metrics"
grep -qE '^skiff_identity_renewals_total\{result="ok"\} [2-9]' "$TMP/metrics.txt" || fail "renewals not counted"
grep -qE '^skiff_identity_not_after_seconds [0-9]' "$TMP/metrics.txt" || fail "no expiry gauge"
out=$(promtool check metrics <"$TMP/metrics.txt" 2>&1) || fail "promtool: $out"

# a used-up join token: refused, the daemon waits without serving, and
# SIGTERM still stops it
policy_cfg "$TMP/q.yaml" "$QPOL" "$QADM" "$TMP/qid"
SKIFF_JOIN_TOKEN_FILE=$TMP/policy.join SKIFF_CA=$CA "$BIN/skiff-policy" --config "$TMP/q.yaml" \
  >"$TMP/q.log" 2>&1 &
QPID=$!
wait_until 20 grep -q 'join token already used' "$TMP/q.log" || fail "used join token not refused"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$QADM/readyz")" = 503 ] || fail "waiting daemon ready"
curl -sS -m 5 --cacert "$CA" -o /dev/null "https://127.0.0.1:$QPOL/" 2>/dev/null && fail "waiting daemon serves"
[ ! -e "$TMP/qid/cert.pem" ] || fail "certificate written after a refusal"
kill -TERM "$QPID"
wait_until 10 sh -c "! kill -0 $QPID" || fail "waiting daemon ignored SIGTERM"
wait "$QPID" || true
QPID=

# restart policy without a join token: the certificate on disk is used (or
# renewed with itself when it reached two thirds meanwhile)
kill -TERM "$PPID2"
wait "$PPID2" || true
"$BIN/skiff-policy" --config "$TMP/policy.yaml" >"$TMP/policy2.log" 2>&1 &
PPID2=$!
wait_until 30 curl -sf "http://127.0.0.1:$PADM/readyz" || fail "policy not ready after restart without a token"
[ "$(serial "$POL")" = "$(openssl x509 -in "$TMP/pid/cert.pem" -noout -serial | cut -d= -f2)" ] ||
  fail "policy does not serve the certificate on disk after the restart"
grep -q 'join token' "$TMP/policy2.log" && fail "restart needed a join token"
echo "1 passed, 0 failed"
