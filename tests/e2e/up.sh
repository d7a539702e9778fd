#!/usr/bin/env bash
# End to end: the shipped examples/skiff.yaml and examples/echo.yaml (with
# their ports moved to free ones) under the real `skiff up`: status, curl over
# HTTP/1.1 and h2c, SIGHUP reload of the echo, kill -9 and restart, logs,
# `skiff down` and Ctrl-C (SIGINT) both leaving no process behind; every
# daemon-to-daemon link that is mutual TLS (docs/control-security.md), above
# all every admin listener: HTTPS with the daemon's own identity, /metrics
# only for clients with a certificate from control's CA, all scraped by
# skiff-telemetry over mTLS (up == 1).
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
SRC=${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}
SKIFF=$BIN/skiff
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-e2e-up.XXXXXX")
ST=$TMP/state
UP_PID=

cleanup() {
  set +e
  up_stop
  pkill -KILL -f -- "$TMP/" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { up_fail "$@"; }

echo_field() { # FIELD of skiff-echo in skiff status --json (one key per line)
  "$SKIFF" status --state-dir "$ST" --json 2>/dev/null | awk -v f="\"$1\":" '
    $1 == "\"name\":" { v = $2; gsub(/[",]/, "", v); cur = v }
    cur == "skiff-echo" && $1 == f { v = $2; gsub(/[",]/, "", v); print v; exit }'
}
echo_is() { [ "$(echo_field "$1")" = "$2" ]; }

# Every example config is copied with each 127.0.0.1 port moved to a free one
# and state directories moved under $TMP, so the test runs the platform exactly
# as `make up` does, next to anything else on the machine.
declare -A MAP=()
for p in $(grep -ohE '127\.0\.0\.1:[0-9]+' "$SRC"/examples/*.yaml | cut -d: -f2 | sort -u); do
  for _ in $(seq 1 50); do
    q=$(free_port) || fail "no free port"
    used=0
    for v in "${MAP[@]}"; do [ "$v" = "$q" ] && used=1; done
    [ "$used" = 0 ] && break
  done
  MAP[$p]=$q
done
sed_args=(-e "s#\.skiff/#$TMP/state-dirs/#g" -e "s#\[examples/#[$SRC/examples/#g")
for p in "${!MAP[@]}"; do sed_args+=(-e "s/127\.0\.0\.1:$p\b/127.0.0.1:${MAP[$p]}/g"); done
for f in "$SRC"/examples/*.yaml; do sed "${sed_args[@]}" "$f" >"$TMP/$(basename "$f")"; done
PORT=${MAP[8081]:?examples/echo.yaml no longer listens on 8081}
ADMIN=${MAP[9911]:?examples/echo.yaml no longer has admin 9911}
NDAEMONS=$(grep -cE '^  - name:' "$TMP/skiff.yaml")
grep -q "$PORT" "$TMP/echo.yaml" && grep -q "$ADMIN" "$TMP/skiff.yaml" || fail "example ports not found"
"$SKIFF" check -f "$TMP/skiff.yaml" | has "ok, $NDAEMONS daemon" || fail "skiff check on the example"

start_up() {
  "$SKIFF" up -f "$TMP/skiff.yaml" --state-dir "$ST" >"$TMP/up.log" 2>&1 &
  UP_PID=$!
  wait_until 60 grep -q "all $NDAEMONS daemons\? ready" "$TMP/up.log" || fail "not all ready"
}

start_up
grep -q "skiff-echo .*http://127.0.0.1:$PORT/" "$TMP/up.log" || fail "endpoints not printed"

# admin listeners with admin_tls: true in skiff.yaml are HTTPS (admin.tls:
# {identity: true}, docs/runtime/metrics-admin-store.md); /metrics there needs
# a client certificate from control's CA: the test gets its own, as an
# operator would, with the bootstrap admin token (a "client" identity)
tls_admins=$(awk '$1 == "admin:" { a = $2 } $1 == "admin_tls:" && $2 == "true" { print a }' "$TMP/skiff.yaml")
ADM_CA=$TMP/state-dirs/control-state/ca/bundle.pem
ADM_CERT=
admin_url() { if grep -qxF "$1" <<<"$tls_admins"; then echo "https://$1"; else echo "http://$1"; fi; }
if [ -n "$tls_admins" ]; then
  [ -n "${MAP[7400]:-}" ] || fail "admin_tls daemons but no skiff-control in the example"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/e2e.key" -subj /CN=e2e \
    -addext subjectAltName=URI:spiffe://skiff.local/region/local/client/e2e 2>/dev/null |
    jq -Rs '{csr: ., ttl: 3600}' |
    curl -fsS -m 10 --cacert "$ADM_CA" -H "authorization: Bearer $(cat "$TMP/state-dirs/control-state/admin.token")" \
      --data-binary @- "https://127.0.0.1:${MAP[7400]}/api/v1/ca/csr" | jq -r .chain >"$TMP/e2e.pem" ||
    fail "no client certificate for the test from control's CA"
  ADM_CERT="--cacert $ADM_CA --cert $TMP/e2e.pem --key $TMP/e2e.key"
fi
"$SKIFF" status --state-dir "$ST" | has -E "^skiff-echo +[0-9]+ .* yes +running" || fail "status: not ready"

# HTTP/1.1 and h2c on the same port, with the version header
curl -fsS -m 10 -D "$TMP/h" -o "$TMP/b" "http://127.0.0.1:$PORT/"
grep -qi '^x-skiff-version: v1' "$TMP/h" || fail "no x-skiff-version: v1"
grep -q '"protocol": "HTTP/1.1"' "$TMP/b" || fail "not HTTP/1.1"
curl -fsS -m 10 --http2-prior-knowledge -D "$TMP/h" -o "$TMP/b" "http://127.0.0.1:$PORT/"
grep -q '^HTTP/2 200' "$TMP/h" || fail "h2c status"
grep -qi '^x-skiff-version: v1' "$TMP/h" || fail "h2c version header"
grep -q '"protocol": "HTTP/2"' "$TMP/b" || fail "not HTTP/2"
# shellcheck disable=SC2086 # ADM_CERT is a list of curl options
curl -fsS -m 10 $ADM_CERT "$(admin_url "127.0.0.1:$ADMIN")/metrics" | has '^skiff_echo_requests_total{code="200"} 2' ||
  fail "metrics do not count the two requests"

# the default platform: skiff-proxy's ingress in front of skiff-echo, and
# skiff-telemetry scraping every daemon of skiff.yaml
if [ -n "${MAP[8080]:-}" ]; then
  curl -fsS -m 10 -D "$TMP/h" -o "$TMP/b" "http://127.0.0.1:${MAP[8080]}/" || fail "proxy ingress"
  grep -qi '^x-skiff-version: v1' "$TMP/h" || fail "proxy did not reach skiff-echo"
  grep -qi '^x-request-id:' "$TMP/h" || has '"x-request-id"' "$TMP/b" || fail "proxy added no x-request-id"
fi
# skiff-telemetry's query API (and OTLP port) are HTTPS with a client
# certificate required when telemetry.yaml says so (query_tls / tls): the
# test reads it with its CA-issued client certificate, as a person would
TQ=http://127.0.0.1:${MAP[9090]:-0}
TQ_CERT=
if grep -q '^query_tls: {identity: true' "$TMP/telemetry.yaml"; then
  TQ=https://127.0.0.1:${MAP[9090]:-0}
  TQ_CERT=$ADM_CERT
fi
# the ingress's SERVER and CLIENT spans reach skiff-telemetry (tracing in examples/proxy-default.yaml)
if [ -n "${MAP[8080]:-}" ] && [ -n "${MAP[9090]:-}" ] && grep -q '^tracing:' "$TMP/proxy-default.yaml"; then
  TID=5b8aa5a2d2c872e8321cf37308d69df2
  curl -fsS -m 10 -o /dev/null -H "traceparent: 00-$TID-051581bf3cb55c13-01" "http://127.0.0.1:${MAP[8080]}/" ||
    fail "proxy ingress (traced)"
  # shellcheck disable=SC2086 # TQ_CERT is a list of curl options
  spans_in() { curl -fsS -m 5 $TQ_CERT "$TQ/api/traces/$TID" |
    jq -e '[.resourceSpans[].scopeSpans[].spans[]] | length >= 2' >/dev/null; }
  wait_until 30 spans_in || fail "the proxy's spans did not reach skiff-telemetry"
fi
if [ -n "${MAP[9090]:-}" ]; then
  wait_until 60 sh -c "curl -fsS -m 5 $TQ_CERT '$TQ/api/v1/query?query=up' | grep -q '\"job\"'" ||
    fail "skiff-telemetry has no up series"
fi
# skiff-telemetry's listeners over mutual TLS (docs/telemetry.md "TLS on the
# listeners"): no answer to plain HTTP, no handshake without a client
# certificate (curl, openssl, promtool) or with one of another CA; its own
# identity on both; the proxy exported over this (spans above)
if [ -n "${MAP[9090]:-}" ] && [ -n "$TQ_CERT" ]; then
  TO=${MAP[4318]:?examples/telemetry.yaml no longer listens on 4318}
  grep -q '^tls: {identity: true, client_auth: require}' "$TMP/telemetry.yaml" || fail "telemetry's OTLP listener is not mTLS"
  grep -q 'otlp_endpoint: "https://' "$TMP/proxy-default.yaml" || fail "the proxy does not export spans over https"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=rogue \
    -addext subjectAltName=URI:spiffe://skiff.local/region/local/proxy/ingress \
    -keyout "$TMP/trogue.key" -out "$TMP/trogue.pem" 2>/dev/null || fail "cannot make the rogue certificate"
  span='{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"e2e"}}]},'
  span+='"scopeSpans":[{"spans":[{"traceId":"7a8aa5a2d2c872e8321cf37308d69df2","spanId":"151581bf3cb55c13",'
  span+='"name":"e2e","kind":1,"startTimeUnixNano":"'"$(date +%s)"'000000000","endTimeUnixNano":"'"$(date +%s)"'500000000"}]}]}]}'
  for a in "127.0.0.1:${MAP[9090]}/api/v1/query?query=up" "127.0.0.1:$TO/v1/traces"; do
    code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$a" 2>/dev/null) || true
    [ "$code" = 000 ] || fail "telemetry answered plain HTTP on $a ($code)"
    code=$(curl -sS -m 5 --cacert "$ADM_CA" -o /dev/null -w '%{http_code}' "https://$a" 2>/dev/null) || true
    [ "$code" = 000 ] || fail "telemetry answered https://$a without a client certificate ($code)"
    code=$(curl -sS -m 5 --cacert "$ADM_CA" --cert "$TMP/trogue.pem" --key "$TMP/trogue.key" -o /dev/null \
      -w '%{http_code}' "https://$a" 2>/dev/null) || true
    [ "$code" = 000 ] || fail "telemetry answered https://$a with a certificate of another CA ($code)"
    # (s_client's exit status varies with how the server closes: not checked)
    echo | timeout 10 openssl s_client -connect "${a%%/*}" -CAfile "$ADM_CA" -verify_return_error \
      -cert "$TMP/e2e.pem" -key "$TMP/e2e.key" >"$TMP/tsc.pem" 2>/dev/null || true
    openssl x509 -in "$TMP/tsc.pem" -noout -ext subjectAltName | has 'URI:spiffe://skiff.local/region/local/daemon/telemetry' ||
      fail "telemetry on ${a%%/*} does not serve its identity"
  done
  printf 'GET /api/v1/labels HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
    timeout 10 openssl s_client -quiet -connect "127.0.0.1:${MAP[9090]}" -CAfile "$ADM_CA" >"$TMP/tsc.out" 2>&1 || true
  grep -q '^HTTP/1.1 200' "$TMP/tsc.out" && fail "openssl without a certificate read the query API"
  # OTLP/HTTP JSON with the client certificate is taken, and queryable
  # shellcheck disable=SC2086 # ADM_CERT is a list of curl options
  curl -fsS -m 10 $ADM_CERT -H 'content-type: application/json' --data-binary "$span" \
    "https://127.0.0.1:$TO/v1/traces" >/dev/null || fail "OTLP over mTLS with a CA certificate refused"
  # shellcheck disable=SC2086
  wait_until 20 sh -c "curl -fsS -m 5 $ADM_CERT '$TQ/api/traces/7a8aa5a2d2c872e8321cf37308d69df2' | grep -q e2e" ||
    fail "the span sent over mTLS is not queryable"
  # promtool: trusting the CA is not enough (no client certificate: refused);
  # with --http.config.file (promtool >= 2.45; Debian 12 ships 2.42) and a
  # tls_config holding the certificate it reads the series
  if SSL_CERT_FILE=$ADM_CA promtool query instant "$TQ" up >"$TMP/pt.out" 2>&1; then
    fail "promtool read the query API without a client certificate: $(cat "$TMP/pt.out")"
  fi
  grep -qi 'tls: certificate required\|tls: bad certificate\|handshake' "$TMP/pt.out" ||
    fail "promtool without a certificate failed for another reason: $(cat "$TMP/pt.out")"
  if promtool --help-long 2>&1 | grep -q -- '--http.config.file'; then
    printf 'tls_config:\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n' "$ADM_CA" "$TMP/e2e.pem" "$TMP/e2e.key" \
      >"$TMP/promtool-http.yml"
    promtool query instant --http.config.file="$TMP/promtool-http.yml" "$TQ" up | has 'job=' ||
      fail "promtool with the client certificate"
  else
    echo "note: $(promtool --version 2>&1 | head -1) has no --http.config.file; promtool over mTLS not exercised"
  fi
fi

# mutual TLS between daemons (docs/control-security.md): control serves its
# API only over TLS with a certificate from its own CA; skiff-policy got its
# certificate from that CA with the join token skiff up minted for it
if [ -n "${MAP[7400]:-}" ]; then
  CTL=${MAP[7400]}
  SD=$TMP/state-dirs
  CA=$SD/control-state/ca/bundle.pem
  [ -s "$CA" ] || fail "no CA bundle in control's state dir"
  code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CTL/api/v1/services" 2>/dev/null) || true
  [ "$code" = 000 ] || fail "control answered plain HTTP ($code)"
  curl -sS -m 5 -o /dev/null "https://127.0.0.1:$CTL/api/v1/services" 2>/dev/null &&
    fail "control's certificate verified without its CA"
  echo | openssl s_client -connect "127.0.0.1:$CTL" -CAfile "$CA" -verify_return_error 2>/dev/null |
    openssl x509 -noout -ext subjectAltName | has 'URI:spiffe://skiff.local/region/local/daemon/control' ||
    fail "control's certificate is not its CA-issued identity"
  code=$(curl -sS -m 10 --cacert "$CA" -o /dev/null -w '%{http_code}' "https://127.0.0.1:$CTL/api/v1/services")
  [ "$code" = 401 ] || fail "control without credentials: $code"
  PID_DIR=$SD/policy-state/identity
  [ -s "$PID_DIR/cert.pem" ] || fail "skiff-policy has no identity"
  openssl x509 -in "$PID_DIR/cert.pem" -noout -ext subjectAltName |
    has 'URI:spiffe://skiff.local/region/local/daemon/policy' || fail "policy's certificate has the wrong identity"
  # a daemon's identity is a client certificate control accepts (mTLS)
  code=$(curl -sS -m 10 --cacert "$CA" --cert "$PID_DIR/cert.pem" --key "$PID_DIR/key.pem" -o /dev/null \
    -w '%{http_code}' "https://127.0.0.1:$CTL/api/v1/services")
  [ "$code" = 200 ] || fail "control refused policy's client certificate ($code)"
  # the CLI against the TLS API: --ca / SKIFF_CA and the admin token
  SKIFF_CA=$CA SKIFF_TOKEN=$(cat "$SD/control-state/admin.token") \
    "$SKIFF" get services --server "https://127.0.0.1:$CTL" >/dev/null || fail "skiff get over TLS"
  "$SKIFF" get services --server "https://127.0.0.1:$CTL" --token x >/dev/null 2>&1 &&
    fail "skiff get over TLS without a CA bundle"
  # run where `make up` leaves .skiff/control-state, the CLI finds the bundle itself
  mkdir -p "$TMP/cwd/.skiff" && ln -s "$SD/control-state" "$TMP/cwd/.skiff/control-state"
  (cd "$TMP/cwd" && SKIFF_TOKEN=$(cat "$SD/control-state/admin.token") \
    "$SKIFF" get services --server "https://127.0.0.1:$CTL" >/dev/null) || fail "skiff get with the local CA bundle"
  # control enforces the platform's policies (examples/control.yaml policies:,
  # examples/policies-platform/, docs/policy.md "Pre-apply hook in control"):
  # `skiff apply` of a Service without a team label is refused with the
  # policy's name and message and nothing is stored; a labelled one is created
  PFILE=$SRC/examples/policies-platform/require-team-label.yaml
  grep -q "^policies: \[$SRC/examples/policies-platform\]" "$TMP/control.yaml" ||
    fail "examples/control.yaml does not enforce examples/policies-platform"
  pname=$(awk '$1 == "name:" { print $2; exit }' "$PFILE")
  pmsg=$(sed -n 's/^ *message: "\(.*\)"$/\1/p' "$PFILE")
  [ -n "$pname" ] && [ -n "$pmsg" ] || fail "no policy name or message in $PFILE"
  capply() { SKIFF_CA=$CA SKIFF_TOKEN=$(cat "$SD/control-state/admin.token") SKIFF_SERVER=https://127.0.0.1:$CTL "$SKIFF" "$@"; }
  printf 'apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: e2e-unowned, labels: {app: e2e}}\nspec: {endpoints: ["127.0.0.1:%s"]}\n' \
    "$PORT" >"$TMP/unowned.yaml"
  set +e; capply apply -f "$TMP/unowned.yaml" >"$TMP/apply.out" 2>&1; rc=$?; set -e
  [ "$rc" != 0 ] || fail "apply of a Service without a team label succeeded: $(cat "$TMP/apply.out")"
  grep -qF "$pname" "$TMP/apply.out" && grep -qF "$pmsg" "$TMP/apply.out" ||
    fail "the refusal does not name the policy ($pname) and its message: $(cat "$TMP/apply.out")"
  set +e; capply get services e2e-unowned >"$TMP/get.out" 2>&1; rc=$?; set -e
  [ "$rc" != 0 ] && grep -q NotFound "$TMP/get.out" || fail "the refused Service was stored: $(cat "$TMP/get.out")"
  sed 's/labels: {app: e2e}/labels: {app: e2e, team: e2e}/; s/e2e-unowned/e2e-owned/' "$TMP/unowned.yaml" >"$TMP/owned.yaml"
  capply apply -f "$TMP/owned.yaml" >"$TMP/apply.out" 2>&1 || fail "apply of a labelled Service: $(cat "$TMP/apply.out")"
  capply get services e2e-owned -o json | jq -e '.metadata.labels.team == "e2e"' >/dev/null ||
    fail "the labelled Service was not stored"
  capply delete service e2e-owned >/dev/null || fail "skiff delete of the labelled Service"
  # the join token was used up by policy's first certificate
  [ -s "$ST/identity/skiff-policy.join" ] || fail "no join token minted for skiff-policy"
  code=$(openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj /CN=p \
    -addext subjectAltName=URI:spiffe://skiff.local/region/local/daemon/policy 2>/dev/null |
    jq -Rs --arg t "$(head -1 "$ST/identity/skiff-policy.join")" '{csr: ., token: $t}' |
    curl -sS -m 10 --cacert "$CA" -o /dev/null -w '%{http_code}' --data-binary @- \
      "https://127.0.0.1:$CTL/api/v1/ca/csr")
  [ "$code" = 401 ] || fail "join token replay: $code"
  # skiff-proxy follows control over mTLS with its own proxy identity
  XD=$SD/proxy-state/identity
  if [ -n "${MAP[9901]:-}" ] && [ -s "$XD/cert.pem" ]; then
    openssl x509 -in "$XD/cert.pem" -noout -ext subjectAltName |
      has 'URI:spiffe://skiff.local/region/local/proxy/ingress' || fail "proxy's certificate has the wrong identity"
    wait_until 30 sh -c "curl -fsS -m 5 $(admin_url "127.0.0.1:${MAP[9901]}")/metrics $ADM_CERT | grep -q '^skiff_proxy_control_connected 1'" ||
      fail "proxy's config stream to control is not connected"
  elif grep -q 'identity: proxy/ingress' "$TMP/skiff.yaml"; then
    fail "skiff-proxy has no identity"
  fi
  # skiff-gitops calls control with its identity, not a bearer token
  # (tests/e2e/gitops_mtls.sh shows the audit log naming it)
  if grep -q '^  - name: skiff-gitops' "$TMP/skiff.yaml"; then
    grep -q 'control_auth=mtls' "$ST/logs/skiff-gitops.log" || fail "skiff-gitops does not call control over mTLS"
    grep -q 'control unavailable' "$ST/logs/skiff-gitops.log" && fail "skiff-gitops cannot reach control"
  fi
fi
if [ -n "${MAP[8443]:-}" ]; then
  POL=${MAP[8443]}
  CA=$TMP/state-dirs/control-state/ca/bundle.pem
  review='{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"e2e-1",'
  review+='"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"default",'
  review+='"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default"},'
  review+='"spec":{"containers":[{"name":"c","image":"nginx:1.27"}]}}}}'
  curl -fsS -m 10 --cacert "$CA" -H 'content-type: application/json' --data-binary "$review" \
    "https://127.0.0.1:$POL/validate" >"$TMP/review.json" || fail "skiff-policy over TLS with control's CA"
  jq -e '.kind == "AdmissionReview" and .response.uid == "e2e-1" and (.response.allowed | type) == "boolean"' \
    "$TMP/review.json" >/dev/null || fail "AdmissionReview answer: $(cat "$TMP/review.json")"
  echo | openssl s_client -connect "127.0.0.1:$POL" -servername localhost -CAfile "$CA" -verify_return_error \
    2>/dev/null | openssl x509 -noout -ext subjectAltName | has 'URI:spiffe://skiff.local/region/local/daemon/policy' ||
    fail "policy does not serve its CA-issued identity"
  # background reports (docs/policy.md): the first scan, about a second after
  # start, lists control over mTLS as viewer (auth.identities) and succeeds
  if [ -n "${MAP[9903]:-}" ]; then
    # shellcheck disable=SC2086 # ADM_CERT is a list of curl options
    scanned() { curl -fsS -m 5 $ADM_CERT "$(admin_url "127.0.0.1:${MAP[9903]}")/reports" | jq -e '.metadata.lastScan > 0' >/dev/null; }
    wait_until 30 scanned || fail "skiff-policy's background scan did not succeed: $(grep -i background "$ST/logs/skiff-policy.log" | tail -3)"
  fi
fi

# every daemon's /metrics passes promtool's exposition lint
for a in $(grep -oE '^    admin: 127\.0\.0\.1:[0-9]+' "$TMP/skiff.yaml" | awk '{print $2}'); do
  # shellcheck disable=SC2086 # ADM_CERT is a list of curl options
  curl -fsS -m 10 $ADM_CERT "$(admin_url "$a")/metrics" >"$TMP/metrics.txt" || fail "no /metrics on $a"
  grep -q '^skiff_build_info{' "$TMP/metrics.txt" || fail "no skiff_build_info on $a"
  out=$(promtool check metrics <"$TMP/metrics.txt" 2>&1) || fail "promtool check metrics on $a: $out"
  [ -z "$out" ] || fail "promtool check metrics on $a: $out"
done
# Every daemon's admin listener is HTTPS with that daemon's own identity from
# control's CA (skiff-control's is issued by itself): plain HTTP gets no
# answer, /healthz and /readyz need only control's bundle, /metrics without a
# client certificate is 403 (curl and openssl s_client), a certificate from
# another CA fails the handshake, and skiff-telemetry scrapes every daemon
# over mutual TLS with its own identity (up == 1 through its Prometheus API).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=rogue \
  -addext subjectAltName=URI:spiffe://skiff.local/region/local/daemon/telemetry \
  -keyout "$TMP/rogue.key" -out "$TMP/rogue.pem" 2>/dev/null || fail "cannot make the rogue certificate"
# name admin admin_tls identity, one line per daemon of skiff.yaml
awk '$1 == "-" && $2 == "name:" { if (n) print n, a, t, i; n = $3; a = "-"; t = "false"; i = "-"; next }
     /^[a-z]/ { if (n) print n, a, t, i; n = ""; next }
     n && $1 == "admin:" { a = $2 } n && $1 == "admin_tls:" { t = $2 } n && $1 == "identity:" { i = $2 }
     END { if (n) print n, a, t, i }' "$TMP/skiff.yaml" >"$TMP/daemons.txt"
[ "$(wc -l <"$TMP/daemons.txt")" = "$NDAEMONS" ] || fail "daemons of skiff.yaml not parsed: $(cat "$TMP/daemons.txt")"
while read -r name a t ident; do
  [ "$a" != - ] || fail "$name has no admin listener"
  [ "$t" = true ] || fail "$name: admin $a is not HTTPS (admin_tls: $t)"
  case $ident in
  -) [ "$name" = skiff-control ] || fail "$name has no identity for its admin listener"; want=daemon/control ;;
  */*) want=$ident ;;
  *) want=daemon/$ident ;;
  esac
  grep -q "ready: https://$a/readyz" "$TMP/up.log" || fail "skiff up does not probe $name over https"
  code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://$a/metrics" 2>/dev/null) || true
  [ "$code" = 000 ] || fail "admin $a ($name) answered plain HTTP ($code)"
  echo | timeout 10 openssl s_client -connect "$a" -CAfile "$ADM_CA" -verify_return_error 2>/dev/null |
    openssl x509 -noout -ext subjectAltName | has -E "URI:spiffe://skiff.local/region/local/$want(,|$)" ||
    fail "admin $a ($name) does not serve the identity $want"
  curl -fsS -m 5 --cacert "$ADM_CA" "https://$a/healthz" | has ok || fail "admin $a ($name): /healthz over https"
  curl -fsS -m 5 --cacert "$ADM_CA" "https://$a/readyz" | has ready || fail "admin $a ($name): /readyz over https"
  code=$(curl -sS -m 5 --cacert "$ADM_CA" -o /dev/null -w '%{http_code}' "https://$a/metrics")
  [ "$code" = 403 ] || fail "admin $a ($name): /metrics without a client certificate answered $code"
  printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$a" |
    timeout 10 openssl s_client -quiet -connect "$a" -CAfile "$ADM_CA" -verify_return_error >"$TMP/sc.out" 2>/dev/null || true
  head -1 <"$TMP/sc.out" | has '^HTTP/1.1 403' || fail "admin $a ($name): openssl without a certificate got: $(head -1 <"$TMP/sc.out")"
  code=$(curl -sS -m 5 --cacert "$ADM_CA" --cert "$TMP/rogue.pem" --key "$TMP/rogue.key" -o /dev/null \
    -w '%{http_code}' "https://$a/metrics" 2>/dev/null) || true
  [ "$code" = 000 ] || fail "admin $a ($name): a certificate from another CA got $code"
  # shellcheck disable=SC2086 # ADM_CERT is a list of curl options
  code=$(curl -sS -m 5 $ADM_CERT -o /dev/null -w '%{http_code}' "https://$a/metrics")
  [ "$code" = 200 ] || fail "admin $a ($name): /metrics with the CA's client certificate answered $code"
  if [ -n "${MAP[9090]:-}" ]; then
    wait_until 60 sh -c "curl -fsS -m 5 $TQ_CERT -G --data-urlencode 'query=up{job=\"$name\"}' '$TQ/api/v1/query' | jq -e '.data.result[0].value[1] == \"1\"' >/dev/null" ||
      fail "skiff-telemetry does not scrape $name over mTLS (up != 1)"
  fi
done <"$TMP/daemons.txt"

# SIGHUP to the echo: a new version label, live, same pid
pid=$(echo_field pid)
sed -i 's/^version: v1/version: v2/' "$TMP/echo.yaml"
kill -HUP "$pid"
wait_until 20 sh -c "curl -sS -m 5 -D - -o /dev/null http://127.0.0.1:$PORT/ | grep -qi '^x-skiff-version: v2'" ||
  fail "version not reloaded"
[ "$(echo_field pid)" = "$pid" ] || fail "reload restarted the process"

# kill -9: the supervisor restarts it
kill -KILL "$pid"
wait_until 30 echo_is restarts 1 || fail "no restart counted"
wait_until 30 echo_is ready true || fail "not ready after the restart"
new=$(echo_field pid)
[ "$new" != "$pid" ] || fail "same pid after restart"
curl -fsS -m 10 "http://127.0.0.1:$PORT/" | has '"version": "v2"' || fail "restarted echo does not serve"

# logs
"$SKIFF" logs skiff-echo --state-dir "$ST" >"$TMP/logs.txt"
grep -q "skiff-echo: ready" "$TMP/logs.txt" || fail "skiff logs: no ready line"
[ "$(grep -c -- "---- skiff: starting" "$TMP/logs.txt")" = 2 ] || fail "skiff logs: expected two starts"

# skiff down: everything stops, nothing left
"$SKIFF" down --state-dir "$ST" >/dev/null || fail "skiff down failed"
wait_until 15 sh -c "! kill -0 $UP_PID" || fail "supervisor alive after down"
set +e; wait "$UP_PID"; rc=$?; set -e
UP_PID=
[ "$rc" = 0 ] || fail "skiff up exit status $rc after down"
kill -0 "$new" 2>/dev/null && fail "skiff-echo $new left running"
if pgrep -f -- "$TMP/" >/dev/null; then fail "left behind: $(pgrep -af -- "$TMP/")"; fi
[ ! -e "$ST/skiff.pid" ] || fail "pid file left"

# Ctrl-C (SIGINT to the supervisor) stops it the same way
start_up
pid=$(echo_field pid)
kill -INT "$UP_PID"
wait_until 20 sh -c "! kill -0 $UP_PID" || fail "SIGINT did not stop the supervisor"
set +e; wait "$UP_PID"; rc=$?; set -e
UP_PID=
[ "$rc" = 0 ] || fail "exit status $rc after SIGINT"
kill -0 "$pid" 2>/dev/null && fail "skiff-echo left running after SIGINT"
grep -q "interrupt received" "$TMP/up.log" || fail "no interrupt message"
if pgrep -f -- "$TMP/" >/dev/null; then fail "left behind: $(pgrep -af -- "$TMP/")"; fi
echo "1 passed, 0 failed"
