#!/usr/bin/env bash
# The admin listener over TLS (admin.tls, docs/runtime/metrics-admin-store.md) with real
# clients: curl shows that plain HTTP is refused, /healthz and /readyz
# answer without a client certificate, /metrics (and daemon routes) need one
# from the CA (403 without, refused handshake with a rogue one), promtool
# lints the metrics fetched over mTLS, client_auth: require refuses
# certificate-less clients in the handshake; `skiff up` probes readiness
# over https (admin_tls: true, identity.ca) and skiff-telemetry scrapes the
# listener over mTLS (scrape_tls) with up == 1 - and up == 0 without a
# client certificate. skiff-control serves its admin with the identity it
# issues itself (it is the CA).
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
C=${SKIFF_TEST_CERTS:?SKIFF_TEST_CERTS not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-admintls.XXXXXX")
ST=$TMP/state
pids=()
UP_PID=

cleanup() {
  set +e
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    "$BIN/skiff" down --state-dir "$ST" --timeout 20s >/dev/null 2>&1
    kill -KILL "$UP_PID" 2>/dev/null
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log "$ST"/logs/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}

ADMIN=$(free_port)
cat >"$TMP/testd.yaml" <<EOF
message: hi
upstreams: [{name: a, addr: "127.0.0.1:1"}]
admin:
  listen: 127.0.0.1:$ADMIN
  tls: {cert: $C/server.pem, key: $C/server.key, ca: $C/ca.pem}
EOF
"$BIN/skiff-testd" --config "$TMP/testd.yaml" >"$TMP/testd.log" 2>&1 &
pids+=($!)
U=https://127.0.0.1:$ADMIN
wait_until 20 curl -fsS --cacert "$C/ca.pem" "$U/healthz" || fail "admin over https did not come up"

# plain HTTP on the TLS port: no HTTP answer
code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$ADMIN/metrics" 2>/dev/null || true)
[ "$code" = 000 ] || fail "plain HTTP scrape answered $code"
# health and readiness without a client certificate
curl -fsS --cacert "$C/ca.pem" "$U/healthz" | has '^ok$' || fail "healthz without client cert"
wait_until 20 curl -fsS --cacert "$C/ca.pem" "$U/readyz" || fail "readyz without client cert"
# metrics without a certificate: 403
code=$(curl -sS -o "$TMP/body" -w '%{http_code}' --cacert "$C/ca.pem" "$U/metrics")
[ "$code" = 403 ] || fail "certificate-less /metrics answered $code"
has 'client certificate' <"$TMP/body" || fail "403 body does not say why"
# an unknown route needs the certificate too (no path probing)
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" "$U/nope")
[ "$code" = 403 ] || fail "unknown route without a certificate answered $code, want 403"
# a certificate from another CA: refused (handshake or 403, never the metrics)
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" --cert "$C/rogue.pem" --key "$C/rogue.key" \
  "$U/metrics" 2>/dev/null || true)
[ "$code" != 200 ] || fail "rogue client certificate got /metrics"
# only GET/HEAD of /healthz and /readyz are open: a certificate-less POST is
# 403, with a certificate the ordinary 405
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" -X POST "$U/readyz")
[ "$code" = 403 ] || fail "certificate-less POST /readyz answered $code, want 403"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" \
  -X POST "$U/readyz")
[ "$code" = 405 ] || fail "POST /readyz with a certificate answered $code, want 405"
curl -fsS -I --cacert "$C/ca.pem" "$U/healthz" >/dev/null || fail "certificate-less HEAD /healthz"
# with the CA's client certificate: the metrics, and promtool agrees
curl -fsS --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" "$U/metrics" >"$TMP/metrics.txt" ||
  fail "/metrics over mTLS"
has '^skiff_build_info{' <"$TMP/metrics.txt" || fail "metrics body"
if command -v promtool >/dev/null; then
  promtool check metrics <"$TMP/metrics.txt" || fail "promtool check metrics over mTLS"
fi
# HTTP/2 over TLS as well
curl -fsS --http2 --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" "$U/metrics" |
  has '^process_' || fail "/metrics over h2+mTLS"

# --- client_auth: require refuses certificate-less clients in the handshake
RADMIN=$(free_port)
cat >"$TMP/testd-req.yaml" <<EOF
message: hi
upstreams: [{name: a, addr: "127.0.0.1:1"}]
admin:
  listen: 127.0.0.1:$RADMIN
  tls: {cert: $C/server.pem, key: $C/server.key, ca: $C/ca.pem, client_auth: require}
EOF
"$BIN/skiff-testd" --config "$TMP/testd-req.yaml" >"$TMP/testd-req.log" 2>&1 &
pids+=($!)
wait_until 20 curl -fsS --cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key" \
  "https://127.0.0.1:$RADMIN/healthz" || fail "client_auth: require with a certificate"
if curl -fsS --cacert "$C/ca.pem" "https://127.0.0.1:$RADMIN/healthz" >/dev/null 2>&1; then
  fail "client_auth: require answered a client without a certificate"
fi

# --- bad config: clear error naming the key, exit 1
printf 'upstreams: [{name: a, addr: "127.0.0.1:1"}]\nadmin:\n  listen: 127.0.0.1:0\n  tls: {cert: %s/server.pem, key: %s/server.key}\n' \
  "$C" "$C" >"$TMP/noca.yaml"
if "$BIN/skiff-testd" --config "$TMP/noca.yaml" >"$TMP/noca.out" 2>&1; then fail "TLS without ca accepted"; fi
has 'admin.tls.ca' <"$TMP/noca.out" || fail "no-ca error does not name admin.tls.ca"
printf 'upstreams: [{name: a, addr: "127.0.0.1:1"}]\nadmin:\n  listen: 127.0.0.1:0\n  tls: {identity: true}\n' >"$TMP/noid.yaml"
if "$BIN/skiff-testd" --config "$TMP/noid.yaml" >"$TMP/noid.out" 2>&1; then fail "tls identity without identity accepted"; fi
has 'identity.control' <"$TMP/noid.out" || fail "tls.identity error does not name identity.control"

# --- skiff-control is its own issuer: admin.tls.identity needs no identity
# section, only its CA; here with a plain-HTTP API, so the identity exists
# for the admin listener alone
CADM=$(free_port)
printf 'listen: 127.0.0.1:0\nstate_dir: %s/ctl\nadmin: {listen: 127.0.0.1:%s, tls: {identity: true}}\n' \
  "$TMP" "$CADM" >"$TMP/ctl.yaml"
"$BIN/skiff-control" --config "$TMP/ctl.yaml" >"$TMP/ctl.log" 2>&1 &
pids+=($!)
wait_until 30 curl -fsS --cacert "$TMP/ctl/ca/bundle.pem" "https://127.0.0.1:$CADM/readyz" ||
  fail "control's admin over https with its own identity"
echo | openssl s_client -connect "127.0.0.1:$CADM" -CAfile "$TMP/ctl/ca/bundle.pem" -verify_return_error 2>/dev/null |
  openssl x509 -noout -ext subjectAltName | has 'URI:spiffe://skiff.local/region/local/daemon/control' ||
  fail "control's admin does not serve control's identity"
code=$(curl -sS -m 5 --cacert "$TMP/ctl/ca/bundle.pem" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$CADM/metrics")
[ "$code" = 403 ] || fail "control's admin /metrics without a client certificate: $code"
printf 'listen: 127.0.0.1:0\nstate_dir: %s/ctl2\nca: false\nadmin: {listen: 127.0.0.1:0, tls: {identity: true}}\n' \
  "$TMP" >"$TMP/ctl2.yaml"
if "$BIN/skiff-control" --config "$TMP/ctl2.yaml" >"$TMP/ctl2.out" 2>&1; then fail "control without a CA served admin.tls.identity"; fi
has 'admin.tls.identity needs the built-in CA' <"$TMP/ctl2.out" || fail "control: no CA error not named"

# --- skiff-telemetry scrapes it over mTLS (scrape_tls); without a client
# certificate the same scrape is up 0
Q1=$(free_port); O1=$(free_port); A1=$(free_port); Q2=$(free_port); O2=$(free_port); A2=$(free_port)
cat >"$TMP/tel1.yaml" <<EOF
listen: 127.0.0.1:$O1
query_listen: 127.0.0.1:$Q1
data_dir: $TMP/tel1
self_scrape: false
scrape_configs:
  - {job: admintls, targets: ["$U/metrics"], interval: 1s}
scrape_tls: {ca: $C/ca.pem, cert: $C/client.pem, key: $C/client.key}
admin: {listen: 127.0.0.1:$A1}
EOF
sed -e "s/$O1/$O2/; s/$Q1/$Q2/; s/$A1/$A2/; s#$TMP/tel1#$TMP/tel2#; s#, cert: $C/client.pem, key: $C/client.key##" \
  "$TMP/tel1.yaml" >"$TMP/tel2.yaml"
"$BIN/skiff-telemetry" --config "$TMP/tel1.yaml" >"$TMP/tel1.log" 2>&1 &
pids+=($!)
"$BIN/skiff-telemetry" --config "$TMP/tel2.yaml" >"$TMP/tel2.log" 2>&1 &
pids+=($!)
upq() { # QUERY_PORT: value of up{job="admintls"}
  curl -fsS -G --data-urlencode 'query=up{job="admintls"}' "http://127.0.0.1:$1/api/v1/query" |
    jq -er '.data.result[0].value[1]'
}
wait_until 30 sh -c "[ \"\$(curl -fsS -G --data-urlencode 'query=up{job=\"admintls\"}' http://127.0.0.1:$Q1/api/v1/query | jq -r '.data.result[0].value[1]')\" = 1 ]" ||
  fail "telemetry with scrape_tls: up is $(upq "$Q1" 2>/dev/null || echo none), want 1"
curl -fsS -G --data-urlencode 'query=skiff_build_info{job="admintls"}' "http://127.0.0.1:$Q1/api/v1/query" |
  jq -e '.data.result | length == 1' >/dev/null || fail "scraped samples missing"
wait_until 30 sh -c "[ \"\$(curl -fsS -G --data-urlencode 'query=up{job=\"admintls\"}' http://127.0.0.1:$Q2/api/v1/query | jq -r '.data.result[0].value[1]')\" = 0 ]" ||
  fail "telemetry without a client certificate: up is $(upq "$Q2" 2>/dev/null || echo none), want 0"

# --- skiff up: readiness over https with identity.ca (admin_tls: true)
SADMIN=$(free_port)
sed -e "s/$ADMIN/$SADMIN/" "$TMP/testd.yaml" >"$TMP/sup-testd.yaml"
cat >"$TMP/skiff.yaml" <<EOF
daemons:
  - name: tlsd
    command: skiff-testd
    config: sup-testd.yaml
    admin: 127.0.0.1:$SADMIN
    admin_tls: true
    start_timeout: 20s
identity:
  ca: $C/ca.pem
EOF
"$BIN/skiff" up -f "$TMP/skiff.yaml" --state-dir "$ST" >"$TMP/up.log" 2>&1 &
UP_PID=$!
wait_until 30 sh -c "'$BIN/skiff' status --state-dir '$ST' --json | grep -q '\"ready\": *true'" ||
  fail "skiff up did not see the TLS admin listener ready"
"$BIN/skiff" status --state-dir "$ST" --json | has "https://127.0.0.1:$SADMIN/readyz" || fail "status --json does not show the https ready_url"
"$BIN/skiff" down --state-dir "$ST" --timeout 20s >/dev/null 2>&1 || fail "skiff down"
wait "$UP_PID" 2>/dev/null || true
UP_PID=
echo "admin_tls: all checks passed"
