#!/usr/bin/env bash
# skiff-telemetry's OTLP and query listeners over TLS (docs/telemetry.md "TLS
# on the listeners"), with real clients.
# 1. Files from a CA made with openssl: OTLP with client_auth require (plain
#    HTTP, no certificate and another CA's certificate refused; a client
#    certificate posts spans), the query API with client_auth optional
#    (curl and promtool read it trusting the CA only; a certificate of
#    another CA is still refused) and none; bad tls sections stop the start
#    with a message.
# 2. Identities from a real skiff-control with 15 s certificates:
#    telemetry serves both listeners with its identity (client_auth
#    require), skiff-proxy exports spans with `tracing.tls: {identity:
#    true}`. Both certificates renew in place (same pids, the serial
#    openssl sees on the OTLP port changes), and once the proxy's first
#    certificate has expired and telemetry restarted (every connection new),
#    the proxy's spans still arrive: its exporter context was reloaded.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-telemetry-tls.XXXXXX")
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do
    echo "---- $f (tail)" >&2
    tail -n 30 "$f" >&2 || true
  done
  exit 1
}
code_of() { curl -sS -m 5 -o /dev/null -w '%{http_code}' "$@" 2>/dev/null || true; }
span_json() { # TRACE_ID NAME
  local now
  now=$(date +%s)
  printf '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"t"}}]},'
  printf '"scopeSpans":[{"spans":[{"traceId":"%s","spanId":"051581bf3cb55c13","name":"%s","kind":1,' "$1" "$2"
  printf '"startTimeUnixNano":"%s000000000","endTimeUnixNano":"%s500000000"}]}]}]}' "$now" "$now"
}

# ---- 1. certificate files ----
P=$TMP/pki
mkdir -p "$P"
mkca() { # NAME
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=$1" \
    -keyout "$P/$1.key" -out "$P/$1.pem" 2>/dev/null || fail "cannot make CA $1"
}
mkleaf() { # NAME CA SAN
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" -keyout "$P/$1.key" \
    -out "$P/$1.csr" 2>/dev/null || fail "cannot make $1"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$P/$1.ext"
  openssl x509 -req -in "$P/$1.csr" -CA "$P/$2.pem" -CAkey "$P/$2.key" -CAcreateserial -days 1 \
    -extfile "$P/$1.ext" -out "$P/$1.pem" 2>/dev/null || fail "cannot sign $1"
}
mkca ca
mkca other
mkleaf server ca "DNS:localhost,IP:127.0.0.1"
mkleaf client ca "URI:spiffe://skiff.local/region/local/client/t"
mkleaf rogue other "URI:spiffe://skiff.local/region/local/client/t"
CA=$P/ca.pem
CLI=(--cacert "$CA" --cert "$P/client.pem" --key "$P/client.key")

OTLP=$(free_port); QUERY=$(free_port); TLADMIN=$(free_port)
cat >"$TMP/telemetry.yaml" <<EOF
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/tl-data
admin: {listen: 127.0.0.1:$TLADMIN}
tls: {cert: $P/server.pem, key: $P/server.key, ca: $CA}
query_tls: {cert: $P/server.pem, key: $P/server.key, ca: $CA, client_auth: optional}
EOF
"$BIN/skiff-telemetry" --config "$TMP/telemetry.yaml" --check >/dev/null 2>&1 || fail "--check refuses the tls sections"
"$BIN/skiff-telemetry" --config "$TMP/telemetry.yaml" >"$TMP/telemetry.log" 2>&1 &
TPID=$!
PIDS+=("$TPID")
wait_until 20 curl -fsS "http://127.0.0.1:$TLADMIN/readyz" || fail "telemetry never ready"
grep -q 'otlp_scheme=https.*query_scheme=https' "$TMP/telemetry.log" || fail "serving line does not say https"

# OTLP, client_auth require (the default)
T1=4bf92f3577b34da6a3ce929d0e0e4736
[ "$(code_of "http://127.0.0.1:$OTLP/v1/traces")" = 000 ] || fail "OTLP answered plain HTTP"
[ "$(code_of --cacert "$CA" -H 'content-type: application/json' --data-binary "$(span_json $T1 a)" \
  "https://127.0.0.1:$OTLP/v1/traces")" = 000 ] || fail "OTLP took a request without a client certificate"
[ "$(code_of --cacert "$CA" --cert "$P/rogue.pem" --key "$P/rogue.key" -H 'content-type: application/json' \
  --data-binary "$(span_json $T1 a)" "https://127.0.0.1:$OTLP/v1/traces")" = 000 ] ||
  fail "OTLP took a certificate of another CA"
curl -fsS -m 10 "${CLI[@]}" -H 'content-type: application/json' --data-binary "$(span_json $T1 withcert)" \
  "https://127.0.0.1:$OTLP/v1/traces" >/dev/null || fail "OTLP refused a CA client certificate"
# the query API, client_auth optional: the CA is enough; a bad certificate is not
wait_until 20 sh -c "curl -fsS -m 5 --cacert '$CA' https://127.0.0.1:$QUERY/api/traces/$T1 | grep -q withcert" ||
  fail "the span is not queryable over https without a client certificate"
[ "$(code_of "http://127.0.0.1:$QUERY/api/v1/labels")" = 000 ] || fail "query API answered plain HTTP"
[ "$(code_of --cacert "$CA" --cert "$P/rogue.pem" --key "$P/rogue.key" "https://127.0.0.1:$QUERY/api/v1/labels")" = 000 ] ||
  fail "query API took a certificate of another CA"
curl -fsS -m 5 "${CLI[@]}" "https://127.0.0.1:$QUERY/api/v1/labels" | has '"success"' || fail "query API with a certificate"
SSL_CERT_FILE=$CA promtool query instant "https://127.0.0.1:$QUERY" 'vector(7)' | has '=> 7' ||
  fail "promtool over https (CA trusted)"
promtool query instant "https://127.0.0.1:$QUERY" 'vector(7)' >/dev/null 2>&1 && fail "promtool trusted an unknown CA"
kill -TERM "$TPID"
wait "$TPID" || true

# client_auth: none never asks for a certificate; bad sections stop the start
sed -i 's/client_auth: optional/client_auth: none/' "$TMP/telemetry.yaml"
"$BIN/skiff-telemetry" --config "$TMP/telemetry.yaml" >"$TMP/telemetry-none.log" 2>&1 &
TPID=$!
PIDS+=("$TPID")
wait_until 20 curl -fsS "http://127.0.0.1:$TLADMIN/readyz" || fail "telemetry (none) never ready"
echo | timeout 10 openssl s_client -connect "127.0.0.1:$QUERY" -CAfile "$CA" >"$TMP/none.out" 2>&1 || true
grep -q 'Acceptable client certificate CA names' "$TMP/none.out" && fail "client_auth none asked for a certificate"
curl -fsS -m 5 --cacert "$CA" "https://127.0.0.1:$QUERY/api/v1/labels" | has '"success"' || fail "client_auth none"
kill -TERM "$TPID"
wait "$TPID" || true
bad() { # YAML-LINE EXPECTED-MESSAGE
  sed -e '/^tls:/d' "$TMP/telemetry.yaml" >"$TMP/bad.yaml"
  echo "$1" >>"$TMP/bad.yaml"
  out=$(timeout 20 "$BIN/skiff-telemetry" --config "$TMP/bad.yaml" 2>&1) && fail "started with $1"
  has -- "$2" <<<"$out" || fail "no '$2' for $1: $out"
}
bad "tls: {cert: $P/server.pem, ca: $CA}" "tls: cert needs key"
bad "tls: {identity: true}" "tls: identity needs identity.control"
bad "tls: {cert: $P/server.pem, key: $P/server.key}" "tls: client_auth require needs ca"
bad "tls: {ca: $CA}" "tls: key/ca without cert or identity"
bad "tls: {cert: $P/server.pem, key: $P/server.key, ca: $CA, client_auth: sometimes}" "client_auth"
# not TLS, but a start-time check of the same kind: a queue smaller than one request
bad "max_queue_bytes: 1MiB" "cannot start: max_queue_bytes (1048576) is below max_request (20971520)"

# ---- 2. identities from skiff-control, renewed in place ----
CTL=$(free_port); CADM=$(free_port)
mkdir -p "$TMP/ctl"
cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CTL
state_dir: $TMP/ctl
ca_leaf_ttl: 15s
tls: {identity: true, client_auth: optional}
admin: {listen: 127.0.0.1:$CADM}
EOF
"$BIN/skiff-control" --config "$TMP/control.yaml" >"$TMP/control.log" 2>&1 &
PIDS+=($!)
CCA=$TMP/ctl/ca/bundle.pem
wait_until 30 curl -sf "http://127.0.0.1:$CADM/readyz" || fail "control not ready"
TOKEN=$(cat "$TMP/ctl/admin.token")
mint() { # SPIFFE-ID FILE
  curl -fsS -m 10 --cacert "$CCA" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    --data-binary "{\"spiffeId\":\"$1\",\"ttl\":\"10m\",\"uses\":1}" \
    "https://127.0.0.1:$CTL/api/v1/ca/join-tokens" | jq -r .token >"$2" || fail "cannot mint a join token for $1"
}
# the test's own client certificate (1 h)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/me.key" -subj /CN=me \
  -addext subjectAltName=URI:spiffe://skiff.local/region/local/client/me 2>/dev/null |
  jq -Rs '{csr: ., ttl: 3600}' |
  curl -fsS -m 10 --cacert "$CCA" -H "authorization: Bearer $TOKEN" --data-binary @- \
    "https://127.0.0.1:$CTL/api/v1/ca/csr" | jq -r .chain >"$TMP/me.pem" || fail "no client certificate"
ME=(--cacert "$CCA" --cert "$TMP/me.pem" --key "$TMP/me.key")

mint spiffe://skiff.local/region/local/daemon/telemetry "$TMP/tl.join"
OTLP=$(free_port); QUERY=$(free_port); TLADMIN=$(free_port)
cat >"$TMP/telemetry-id.yaml" <<EOF
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/tl-data2
admin: {listen: 127.0.0.1:$TLADMIN}
identity:
  control: https://127.0.0.1:$CTL
  name: telemetry
  dir: $TMP/tl-id
  join_token_file: $TMP/tl.join
  bundle: $CCA
  dns: [localhost, 127.0.0.1]
tls: {identity: true}
query_tls: {identity: true, client_auth: require}
EOF
"$BIN/skiff-telemetry" --config "$TMP/telemetry-id.yaml" >"$TMP/telemetry-id.log" 2>&1 &
TPID=$!
PIDS+=("$TPID")
wait_until 30 curl -fsS "http://127.0.0.1:$TLADMIN/readyz" || fail "telemetry (identity) never ready"
[ "$(code_of --cacert "$CCA" "https://127.0.0.1:$QUERY/api/v1/labels")" = 000 ] ||
  fail "query API (require) answered without a client certificate"
curl -fsS -m 5 "${ME[@]}" "https://127.0.0.1:$QUERY/api/v1/labels" | has '"success"' || fail "query API with a CA certificate"

ECHO_PORT=$(free_port); ECHO_ADMIN=$(free_port)
printf 'listen: 127.0.0.1:%s\nversion: v1\nadmin: {listen: 127.0.0.1:%s}\n' "$ECHO_PORT" "$ECHO_ADMIN" >"$TMP/echo.yaml"
"$BIN/skiff-echo" --config "$TMP/echo.yaml" >"$TMP/echo.log" 2>&1 &
PIDS+=($!)
wait_until 20 curl -fsS "http://127.0.0.1:$ECHO_ADMIN/readyz" || fail "echo never ready"
mint spiffe://skiff.local/region/local/proxy/ingress "$TMP/px.join"
PX=$(free_port); PXADM=$(free_port)
cat >"$TMP/proxy.yaml" <<EOF
admin: {listen: 127.0.0.1:$PXADM}
listeners: [{name: main, address: "127.0.0.1:$PX"}]
clusters: [{name: web, endpoints: ["127.0.0.1:$ECHO_PORT"]}]
routes: [{name: web, match: {path: {prefix: /}}, cluster: web}]
identity:
  control: https://127.0.0.1:$CTL
  kind: proxy
  name: ingress
  dir: $TMP/px-id
  join_token_file: $TMP/px.join
  bundle: $CCA
tracing:
  otlp_endpoint: https://127.0.0.1:$OTLP
  service_name: proxy-t
  flush_interval: 100ms
  tls: {identity: true}
EOF
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" --check >/dev/null 2>&1 ||
  fail "--check refuses tracing.tls.identity before the identity exists"
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" >"$TMP/proxy.log" 2>&1 &
PPID_=$!
PIDS+=("$PPID_")
wait_until 30 curl -fsS "http://127.0.0.1:$PXADM/readyz" || fail "proxy never ready"
traced() { # TRACE_ID: one request through the proxy, its spans in telemetry
  curl -fsS -m 10 -o /dev/null -H "traceparent: 00-$1-051581bf3cb55c13-01" "http://127.0.0.1:$PX/" ||
    fail "proxy request"
  wait_until 30 sh -c "curl -fsS -m 5 --cacert '$CCA' --cert '$TMP/me.pem' --key '$TMP/me.key' \
    https://127.0.0.1:$QUERY/api/traces/$1 | jq -e '[.resourceSpans[].scopeSpans[].spans[]] | length >= 2' >/dev/null"
}
traced 11111111111111111111111111111111 || fail "the proxy's spans did not reach telemetry over mTLS"

serial_on() { # PORT: the serial of the certificate served there
  echo | timeout 10 openssl s_client -connect "127.0.0.1:$1" -CAfile "$CCA" -cert "$TMP/me.pem" -key "$TMP/me.key" \
    >"$TMP/sc.out" 2>/dev/null || true
  openssl x509 -in "$TMP/sc.out" -noout -serial 2>/dev/null || true
}
S1=$(serial_on "$OTLP")
[ -n "$S1" ] || fail "no certificate on the OTLP port"
PXEND=$(date -d "$(openssl x509 -in "$TMP/px-id/cert.pem" -noout -enddate | cut -d= -f2)" +%s)
wait_until 40 sh -c "[ \"\$(echo | timeout 10 openssl s_client -connect 127.0.0.1:$OTLP -CAfile '$CCA' \
  -cert '$TMP/me.pem' -key '$TMP/me.key' 2>/dev/null | openssl x509 -noout -serial 2>/dev/null)\" != '$S1' ]" ||
  fail "telemetry's OTLP listener still serves its first certificate"
kill -0 "$TPID" || fail "telemetry restarted"
wait_until 40 sh -c "[ \$(date +%s) -gt $((PXEND + 1)) ]" || fail "clock"
grep -q "identity renewed" "$TMP/proxy.log" || fail "the proxy's identity was not renewed"
kill -0 "$PPID_" || fail "the proxy restarted"
# new connections everywhere: only the proxy's renewed certificate passes
kill -TERM "$TPID"
wait "$TPID" || true
"$BIN/skiff-telemetry" --config "$TMP/telemetry-id.yaml" >>"$TMP/telemetry-id.log" 2>&1 &
TPID=$!
PIDS+=("$TPID")
wait_until 30 curl -fsS "http://127.0.0.1:$TLADMIN/readyz" || fail "telemetry did not come back"
traced 22222222222222222222222222222222 || fail "spans after the proxy's renewal did not arrive (context not reloaded?)"
echo ok
