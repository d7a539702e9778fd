#!/usr/bin/env bash
# Config push, control -> proxy, with the real binaries: skiff-control,
# skiff-proxy (its clusters and routes from control's snapshot stream) and
# two skiff-echo upstreams (v1, v2), driven by curl and the skiff CLI.
#   - the proxy ACKs and routes what control compiled; a change is followed
#   - a snapshot the proxy cannot build (a Route with a broken regex) is
#     NACKed with the proxy's error; the old config keeps serving
#   - a proxy identity (token "proxy:<node>") acts for its own node only
#   - control killed -> the proxy keeps routing; control back -> the proxy
#     reconnects (backoff) and follows the next change
#   - proxy restarted while control is down -> serves the cached snapshot;
#     a change made while the proxy was away arrives when it is back
#   - a second proxy follows over HTTP/2 (http2: true, h2c)
#   - the stream over HTTP/2 (curl --http2-prior-knowledge)
#   - `skiff proxies` shows the acked versions and the NACK
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"
. "$SKIFF_SRC_DIR/tests/support/push_lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-push-test.XXXXXX")
CPID= PPID_= E1= E2= P2=

cleanup() {
  for p in "$PPID_" "$P2" "$CPID" "$E1" "$E2"; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for l in control proxy proxy2; do
    echo "---- $l log" >&2
    tail -40 "$TMP/$l.log" >&2 || true
  done
  exit 1
}

CP=$(free_port); CA=$(free_port); PP=$(free_port); PA=$(free_port); EP1=$(free_port); EP2=$(free_port)
EA1=$(free_port); EA2=$(free_port)
URL=http://127.0.0.1:$CP
API=$URL/api/v1
mkdir -p "$TMP/state"

start_echo_pair

cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CP
state_dir: $TMP/state
watch_heartbeat: 1s
admin: {listen: 127.0.0.1:$CA}
EOF
start_control() {
  "$BIN/skiff-control" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
  CPID=$!
  wait_until 20 curl -sf "$URL/healthz" || fail "control did not start"
}
start_control
ADMIN_TOKEN=$(cat "$TMP/state/admin.token")
AUTH=(-H "authorization: Bearer $ADMIN_TOKEN")
export SKIFF_SERVER=$URL SKIFF_TOKEN=$ADMIN_TOKEN SKIFF_CA=

# the proxy's own identity: a viewer token named proxy:<node>
PTOK=$(curl -sf "${AUTH[@]}" -H 'content-type: application/json' -d '{"name":"proxy:edge-1","role":"viewer"}' \
  "$API/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
[ -n "$PTOK" ] || fail "proxy token"
printf '%s\n' "$PTOK" >"$TMP/proxy.token"
OTHER=$(curl -sf "${AUTH[@]}" -H 'content-type: application/json' -d '{"name":"proxy:edge-2","role":"viewer"}' \
  "$API/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
VIEWER=$(curl -sf "${AUTH[@]}" -H 'content-type: application/json' -d '{"name":"dashboards","role":"viewer"}' \
  "$API/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

apply_split() { apply_web "[{name: echo-v1, weight: $1}, {name: echo-v2, weight: $2}]"; } # weight-v1 weight-v2
apply_split 100 0

# a local file with listeners only: clusters and routes come from control
cat >"$TMP/proxy.yaml" <<EOF
listeners:
  - {name: ingress, address: 127.0.0.1:$PP}
admin: {listen: 127.0.0.1:$PA}
control:
  url: http://127.0.0.1:$CP
  node: edge-1
  token_file: $TMP/proxy.token
  backoff: {initial: 100ms, max: 1s}
  cache: $TMP/proxy.cache
EOF
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" --check | has "config ok" || fail "--check with a control section"
sed 's/  node: edge-1/  node: "bad node!"/' "$TMP/proxy.yaml" >"$TMP/bad.yaml"
if "$BIN/skiff-proxy" --config "$TMP/bad.yaml" --check >"$TMP/check.out" 2>&1; then fail "a bad node must fail --check"; fi
has 'control.node' <"$TMP/check.out" || fail "--check names control.node: $(cat "$TMP/check.out")"

start_proxy() {
  "$BIN/skiff-proxy" --config "$TMP/proxy.yaml" >>"$TMP/proxy.log" 2>&1 &
  PPID_=$!
  wait_until 20 curl -sf "http://127.0.0.1:$PA/readyz" || fail "proxy did not start"
}
start_proxy

version_of() { curl -s -H 'host: anything' "http://127.0.0.1:$PP/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null; }
routes_to() { [ "$(version_of)" = "$1" ]; }
proxies() { curl -sf "${AUTH[@]}" "$API/proxies"; }
field() { # python expression over d = the proxies list
  proxies | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
nodef() { # NODE EXPR: python over n = that proxy's entry, d = the list
  proxies | python3 -c "import json,sys; d=json.load(sys.stdin); n=[i for i in d['items'] if i['node']=='$1'][0]; print($2)"
}
synced() { [ "$(nodef "${1:-edge-1}" 'n["ackedVersion"] == d["version"] and n["connected"]')" = True ]; }

wait_until 20 routes_to v1 || fail "proxy does not route per the pushed config"
wait_until 10 synced || fail "control does not show the ACK: $(proxies)"
[ "$(nodef edge-1 'n["identity"]')" = proxy:edge-1 ] || fail "identity: $(proxies)"
V1=$(field 'd["version"]')

# a second proxy following over HTTP/2 (h2c prior knowledge), as proxy:edge-2
printf '%s\n' "$OTHER" >"$TMP/proxy2.token"
PP2=$(free_port); PA2=$(free_port)
sed -e "s/127.0.0.1:$PP}/127.0.0.1:$PP2}/" -e "s/127.0.0.1:$PA}/127.0.0.1:$PA2}/" -e 's/node: edge-1/node: edge-2/' \
  -e "s#proxy.token#proxy2.token#" -e "s#proxy.cache#proxy2.cache#" -e 's/^  node: edge-2/  http2: true\n  node: edge-2/' \
  "$TMP/proxy.yaml" >"$TMP/proxy2.yaml"
grep -q 'http2: true' "$TMP/proxy2.yaml" || fail "proxy2.yaml"
"$BIN/skiff-proxy" --config "$TMP/proxy2.yaml" >>"$TMP/proxy2.log" 2>&1 &
P2=$!
wait_until 20 synced edge-2 || fail "the HTTP/2 proxy did not sync: $(proxies) $(tail -5 "$TMP/proxy2.log")"
curl -s -H 'host: x' "http://127.0.0.1:$PP2/" | has '"version": "v1"' || fail "the HTTP/2 proxy routes"

# ---- authorization ----
code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
[ "$(code -X POST -H "authorization: Bearer $OTHER" -d "{\"version\":$V1,\"error\":null}" "$API/proxies/edge-1/ack")" = 403 ] \
  || fail "proxy:edge-2 must not ack for edge-1"
[ "$(code -X POST -H "authorization: Bearer $VIEWER" -d "{\"version\":$V1,\"error\":null}" "$API/proxies/edge-1/ack")" = 403 ] \
  || fail "a plain viewer must not ack"
[ "$(code -m 3 -H "authorization: Bearer $PTOK" "$API/proxyconfig?watch=true&node=edge-9")" = 403 ] \
  || fail "proxy:edge-1 must not stream for edge-9"
[ "$(code -m 3 "$API/proxyconfig?watch=true&node=edge-1")" = 401 ] || fail "the stream needs authentication"
[ "$(code -m 3 -H "authorization: Bearer $VIEWER" "$API/proxyconfig?watch=true&node=edge-1")" = 403 ] \
  || fail "a plain viewer must not take a proxy's stream"
[ "$(code -X POST -H "authorization: Bearer $PTOK" -d '{"version":"x"}' "$API/proxies/edge-1/ack")" = 400 ] \
  || fail "a bad ack body must be 400"
has 'version' <"$TMP/body" || fail "the 400 names the field: $(cat "$TMP/body")"
[ "$(code -X POST -H "authorization: Bearer $PTOK" -d '{"version":999999999,"error":null}' "$API/proxies/edge-1/ack")" = 409 ] \
  || fail "acking a version never sent must be 409"

# ---- a change is followed ----
apply_split 0 100
wait_until 20 routes_to v2 || fail "proxy did not follow the change"
wait_until 10 synced || fail "not synced after the change: $(proxies)"
wait_until 10 synced edge-2 || fail "the HTTP/2 proxy did not follow the change: $(proxies)"
curl -s -H 'host: x' "http://127.0.0.1:$PP2/" | has '"version": "v2"' || fail "the HTTP/2 proxy routes the change"
kill -TERM "$P2"; wait "$P2" 2>/dev/null || true; P2=
V2=$(field 'd["version"]')
[ "$V2" -gt "$V1" ] || fail "the version must grow ($V1 -> $V2)"

# ---- NACK: a snapshot the proxy cannot build; the old config keeps serving ----
cat >"$TMP/bad-route.yaml" <<EOF
apiVersion: skiff.dev/v1
kind: Route
metadata: {name: broken}
spec:
  rules:
    - matches: [{path: {type: RegularExpression, value: "/api/(["}}]
      backendRefs: [{name: echo-v1}]
EOF
"$BIN/skiff" apply -f "$TMP/bad-route.yaml" >/dev/null 2>&1 || fail "apply of the broken route"
nacked() { [ "$(nodef edge-1 '(n["lastNack"] or {}).get("version") == d["version"]')" = True ]; }
wait_until 20 nacked || fail "no NACK recorded: $(proxies)"
nodef edge-1 'n["lastNack"]["error"]' | has -i 'regex\|regular expression\|routes\[' || fail "NACK error text: $(proxies)"
[ "$(nodef edge-1 'n["ackedVersion"]')" = "$V2" ] || fail "acked version must stay at $V2"
for _ in 1 2 3 4 5; do routes_to v2 || fail "the old config must keep serving after a NACK"; done
curl -s "http://127.0.0.1:$CA/metrics" | has '^skiff_control_proxy_nacks_total [1-9]' || fail "nack metric"
curl -s "http://127.0.0.1:$PA/metrics" | has '^skiff_proxy_control_nacks_total [1-9]' || fail "proxy nack metric"
"$BIN/skiff" proxies >"$TMP/proxies.out" 2>&1 || fail "skiff proxies: $(cat "$TMP/proxies.out")"
has 'edge-1' <"$TMP/proxies.out" || fail "skiff proxies lists edge-1: $(cat "$TMP/proxies.out")"
has " $V2 " <"$TMP/proxies.out" || fail "skiff proxies shows acked $V2: $(cat "$TMP/proxies.out")"
has 'regex\|routes\[' <"$TMP/proxies.out" || fail "skiff proxies shows the NACK: $(cat "$TMP/proxies.out")"
"$BIN/skiff" proxies -o json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert "edge-1" in [i["node"] for i in d["items"]]' \
  || fail "skiff proxies -o json"
"$BIN/skiff" delete route broken >/dev/null 2>&1 || fail "delete the broken route"
wait_until 10 synced || fail "not synced after removing the broken route: $(proxies)"

# ---- control killed: the proxy keeps routing; back: it reconnects ----
kill -KILL "$CPID"; wait "$CPID" 2>/dev/null || true; CPID=
for _ in 1 2 3 4 5; do routes_to v2 || fail "the proxy must keep routing while control is down"; done
stream_down() { curl -s "http://127.0.0.1:$PA/metrics" | has '^skiff_proxy_control_connected 0'; }
wait_until 10 stream_down || fail "proxy must report the stream down"
start_control
wait_until 20 synced || fail "the proxy did not reconnect: $(proxies)"
apply_split 100 0
wait_until 20 routes_to v1 || fail "the proxy did not follow a change after the reconnect"
wait_until 10 synced || fail "not synced after reconnect + change"

# ---- proxy restarted while control is down: the cached snapshot routes ----
[ -s "$TMP/proxy.cache" ] || fail "no snapshot cache written"
kill -KILL "$CPID"; wait "$CPID" 2>/dev/null || true; CPID=
kill -TERM "$PPID_"; wait "$PPID_" 2>/dev/null || true; PPID_=
start_proxy
wait_until 10 routes_to v1 || fail "a restarted proxy must route from its cache while control is down"
has 'cached control snapshot' <"$TMP/proxy.log" || fail "the cache use is logged"

# ---- catch up: a change made while the proxy was away arrives when it is back ----
start_control
wait_until 20 synced || fail "not synced after control came back"
kill -TERM "$PPID_"; wait "$PPID_" 2>/dev/null || true; PPID_=
apply_split 0 100
start_proxy
wait_until 20 routes_to v2 || fail "the proxy did not catch up with a change made while it was away"
wait_until 10 synced || fail "not synced after catching up"

# ---- the stream over HTTP/2 ----
timeout 5 curl -sN --http2-prior-knowledge -H "authorization: Bearer $ADMIN_TOKEN" \
  "$API/proxyconfig?watch=true&node=h2-tool" >"$TMP/h2.out" 2>/dev/null || true
head -1 "$TMP/h2.out" | python3 -c 'import json,sys; d=json.loads(sys.stdin.readline()); assert d["type"]=="SNAPSHOT" and "clusters" in d["config"], d' \
  || fail "an HTTP/2 stream starts with the snapshot: $(head -c 300 "$TMP/h2.out")"
has '"HEARTBEAT"' <"$TMP/h2.out" || fail "heartbeats on the stream (watch_heartbeat 1s)"
h2_gone() { [ "$(nodef h2-tool 'n["connected"]')" = False ]; }
wait_until 10 h2_gone || fail "a closed stream shows as gone"
echo "push: ok"
