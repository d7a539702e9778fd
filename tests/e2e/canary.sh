#!/usr/bin/env bash
# End to end: `skiff up` with the shipped examples (ports moved to free ones,
# as up.sh does) starts skiff-control before skiff-proxy, and the proxy
# follows control. `skiff apply -f examples/routes/canary-split.yaml` then
# changes live routing: requests to host "localhost" split about 90/10
# between echo v1 (the platform's skiff-echo) and echo v2 (a second
# skiff-echo this test starts on the example's 8082), and every request
# with "x-canary: 1" goes to v2. `skiff proxies` shows the proxy in sync.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
SRC=${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}
SKIFF=$BIN/skiff
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-e2e-canary.XXXXXX")
ST=$TMP/state
UP_PID= E2_PID=

cleanup() {
  set +e
  [ -n "$E2_PID" ] && kill -KILL "$E2_PID" 2>/dev/null
  up_stop
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { up_fail "$@"; }

# every 127.0.0.1 port of the examples (and of canary-split.yaml) moved to a free one
declare -A MAP=()
for p in $(grep -ohE '127\.0\.0\.1:[0-9]+' "$SRC"/examples/*.yaml "$SRC"/examples/routes/canary-split.yaml |
  cut -d: -f2 | sort -u); do
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
sed "${sed_args[@]}" "$SRC/examples/routes/canary-split.yaml" >"$TMP/canary-split.yaml"
PROXY=${MAP[8080]:?examples no longer have the proxy on 8080}
CTL=${MAP[7400]:?examples no longer have control on 7400}
V2=${MAP[8082]:?canary-split.yaml no longer uses 8082}
PADMIN=${MAP[9901]:?examples no longer have the proxy admin on 9901}
grep -q "127.0.0.1:$CTL" "$TMP/proxy-default.yaml" || fail "proxy-default.yaml does not follow control"

# echo v2, where canary-split.yaml sends 10%
E2A=$(free_port)
printf 'listen: 127.0.0.1:%s\nversion: v2\nadmin: {listen: 127.0.0.1:%s}\n' "$V2" "$E2A" >"$TMP/echo-v2.yaml"
"$BIN/skiff-echo" --config "$TMP/echo-v2.yaml" >"$TMP/echo-v2.log" 2>&1 &
E2_PID=$!

NDAEMONS=$(grep -cE '^  - name:' "$TMP/skiff.yaml")
"$SKIFF" up -f "$TMP/skiff.yaml" --state-dir "$ST" >"$TMP/up.log" 2>&1 &
UP_PID=$!
wait_until 90 grep -q "all $NDAEMONS daemons\? ready" "$TMP/up.log" || fail "not all ready"
wait_until 20 curl -sf "http://127.0.0.1:$E2A/readyz" || fail "echo v2 did not start"

export SKIFF_SERVER=https://127.0.0.1:$CTL SKIFF_CA=$TMP/state-dirs/control-state/ca/bundle.pem
export SKIFF_TOKEN=$(cat "$TMP/state-dirs/control-state/admin.token")

version() { # [curl args]: the x-skiff-version through the proxy for host localhost
  curl -s -m 5 -o /dev/null -D - -H 'host: localhost' "$@" "http://127.0.0.1:$PROXY/" |
    tr -d '\r' | awk 'tolower($1) == "x-skiff-version:" { print $2 }'
}
synced() {
  "$SKIFF" proxies -o json | jq -e '.version as $v | .items | map(select(.node == "ingress"))[0] |
    .connected and .ackedVersion == $v' >/dev/null
}

# before the apply: the proxy's own fallback route, all v1
wait_until 30 synced || fail "the proxy did not connect to control: $("$SKIFF" proxies 2>&1)"
for _ in 1 2 3 4 5; do [ "$(version -H 'x-canary: 1')" = v1 ] || fail "before the apply everything is v1"; done

"$SKIFF" apply -f "$TMP/canary-split.yaml" >"$TMP/apply.out" 2>&1 || fail "apply: $(cat "$TMP/apply.out")"
wait_until 30 sh -c "[ \"\$(curl -s -m 5 -o /dev/null -D - -H 'host: localhost' -H 'x-canary: 1' \
  http://127.0.0.1:$PROXY/ | tr -d '\r' | awk 'tolower(\$1) == \"x-skiff-version:\" { print \$2 }')\" = v2 ]" ||
  fail "the canary route never arrived at the proxy"
wait_until 20 synced || fail "the proxy did not ACK the canary config: $("$SKIFF" proxies 2>&1)"

for _ in $(seq 1 20); do [ "$(version -H 'x-canary: 1')" = v2 ] || fail "x-canary: 1 must always reach v2"; done

n1=0 n2=0
for _ in $(seq 1 200); do
  case "$(version)" in
  v1) n1=$((n1 + 1)) ;;
  v2) n2=$((n2 + 1)) ;;
  *) fail "a request through the proxy failed" ;;
  esac
done
echo "canary split over 200 requests: v1=$n1 v2=$n2"
# 10% of 200 is 20; binomial sd ~4.2: [5, 45] is far outside chance
[ "$n2" -ge 5 ] && [ "$n2" -le 45 ] || fail "split not about 90/10: v1=$n1 v2=$n2"

"$SKIFF" proxies >"$TMP/proxies.out" || fail "skiff proxies"
has -E '^ingress +connected' <"$TMP/proxies.out" || fail "skiff proxies: $(cat "$TMP/proxies.out")"
# the proxy's admin is HTTPS when proxy-default.yaml says tls: {identity: true}
# (docs/runtime/metrics-admin-store.md): /metrics needs a client certificate from control's
# CA - the proxy's own identity is one
PID_D=$TMP/state-dirs/proxy-state/identity
if grep -q 'tls: {identity: true}' "$TMP/proxy-default.yaml"; then
  curl -fsS --cacert "$PID_D/bundle.pem" --cert "$PID_D/cert.pem" --key "$PID_D/key.pem" \
    "https://127.0.0.1:$PADMIN/metrics" | has '^skiff_proxy_control_connected 1' || fail "proxy metric"
else
  curl -fsS "http://127.0.0.1:$PADMIN/metrics" | has '^skiff_proxy_control_connected 1' || fail "proxy metric"
fi
echo "canary: ok"
