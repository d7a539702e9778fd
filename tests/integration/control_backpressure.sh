#!/usr/bin/env bash
# A watch whose client stops reading is ended, not queued for without
# bound, with the real skiff-control:
#   - a raw socket (python3, SO_RCVBUF 4 KiB) opens a watch on services and
#     reads nothing; a curl -N watch next to it reads normally
#   - ~200 KiB Service updates are made until control ends the stalled
#     watch: `watch not read by its client` in the log naming the peer,
#     skiff_control_watch_slow_closed_total 1, one watch left open
#   - the stalled client then reads: a bounded prefix of the events, in
#     order, ending with the end of the chunked body (it can re-watch from
#     its last resourceVersion); curl saw every update
#   - control's RSS stays bounded while more updates are made
#   - the same for a proxy's config stream (proxyconfig?watch=true): a raw
#     socket that reads nothing is ended once it holds more than the bound
#     (log line with the node and peer, skiff_control_proxy_slow_closed_total)
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bp-test.XXXXXX")
CPID= SLOW= W1=

cleanup() {
  for p in "$SLOW" "$W1" "$CPID"; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- control log" >&2
  tail -40 "$TMP/control.log" >&2 || true
  exit 1
}

CP=$(free_port); CA=$(free_port)
URL=http://127.0.0.1:$CP
API=$URL/api/v1
mkdir -p "$TMP/state"
cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CP
state_dir: $TMP/state
admin: {listen: 127.0.0.1:$CA}
EOF
# under ASan, freed memory sits in quarantine and would count as RSS growth
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" \
  "$BIN/skiff-control" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
CPID=$!
wait_until 20 curl -sf "$URL/healthz" || fail "control did not start"
TOKEN=$(cat "$TMP/state/admin.token")
AUTH=(-H "authorization: Bearer $TOKEN")
metric() { curl -s "http://127.0.0.1:$CA/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# a Service with a ~200 KiB annotation: every update is a ~200 KiB event
python3 - "$TMP/svc.json" <<'EOF'
import json, sys
doc = {"apiVersion": "skiff.dev/v1", "kind": "Service",
       "metadata": {"name": "big", "annotations": {"pad": "p" * 200000}},
       "spec": {"endpoints": ["127.0.0.1:8081"]}}
json.dump(doc, open(sys.argv[1], "w"))
EOF
[ "$(curl -s -o "$TMP/body" -w '%{http_code}' "${AUTH[@]}" -H 'content-type: application/json' \
  --data-binary @"$TMP/svc.json" "$API/services/default")" = 201 ] || fail "create: $(cat "$TMP/body")"

curl -sN --max-time 300 "${AUTH[@]}" "$API/services?watch=true" >"$TMP/w1" 2>/dev/null &
W1=$!
# the stalled reader: sends the request, sleeps until told, then reads all
cat >"$TMP/slow.py" <<'EOF'
import os, socket, sys, time
port, token, path, out, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.sendall(("GET %s HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n\r\n" % (path, token)).encode())
for _ in range(3000):
    if os.path.exists(go):
        break
    time.sleep(0.1)
s.settimeout(20)
data = b""
try:
    while not data.endswith(b"\r\n0\r\n\r\n"):
        b = s.recv(65536)
        if not b:
            break
        data += b
except socket.timeout:
    pass
open(out, "wb").write(data)
EOF
python3 "$TMP/slow.py" "$CP" "$TOKEN" /api/v1/services?watch=true "$TMP/slow.out" "$TMP/go" &
SLOW=$!
watches_are() { test "$(metric skiff_control_watches)" = "$1"; }
wait_until 10 watches_are 2 || fail "watches did not open"

# updates until control ends the stalled watch (bounded: at most 300 = 60 MB)
N=0
while [ "$(metric skiff_control_watch_slow_closed_total)" != 1 ] && [ $N -lt 300 ]; do
  N=$((N + 1))
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["metadata"]["labels"]={"n":sys.argv[2]}; json.dump(d,open(sys.argv[1],"w"))' \
    "$TMP/svc.json" "$N"
  [ "$(curl -s -o "$TMP/body" -w '%{http_code}' "${AUTH[@]}" -X PUT -H 'content-type: application/json' \
    --data-binary @"$TMP/svc.json" "$API/services/default/big")" = 200 ] || fail "update $N: $(cat "$TMP/body")"
done
[ "$(metric skiff_control_watch_slow_closed_total)" = 1 ] || fail "the stalled watch was not ended after $N updates"
[ "$(metric skiff_control_watches)" = 1 ] || fail "the reading watch must stay open"
has 'watch not read by its client; closing it.*peer.*127.0.0.1' <"$TMP/control.log" || fail "no log line naming the peer"

# more updates: nothing more is queued for the ended watch, RSS stays put
rss() { awk '/^VmRSS/ {print $2}' "/proc/$CPID/status"; }
RSS0=$(rss)
for i in $(seq 1 60); do
  N=$((N + 1))
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["metadata"]["labels"]={"n":sys.argv[2]}; json.dump(d,open(sys.argv[1],"w"))' \
    "$TMP/svc.json" "$N"
  curl -sf -o /dev/null "${AUTH[@]}" -X PUT -H 'content-type: application/json' --data-binary @"$TMP/svc.json" \
    "$API/services/default/big" || fail "update $N"
done
RSS1=$(rss)
echo "control RSS ${RSS0} kB -> ${RSS1} kB over 60 more updates"
# 60 more 200 KiB events would be ~12 MB if they were queued
[ $((RSS1 - RSS0)) -lt 6144 ] || fail "RSS grew from ${RSS0} kB to ${RSS1} kB after the watch was ended"

# the stalled reader reads now: events in order, then the end of the body
touch "$TMP/go"
wait "$SLOW" || fail "slow reader"
SLOW=
python3 - "$TMP/slow.out" "$N" <<'EOF' || fail "stalled reader's stream"
import json, sys
raw = open(sys.argv[1], "rb").read()
n = int(sys.argv[2])
assert raw.startswith(b"HTTP/1.1 200"), raw[:100]
assert raw.endswith(b"\r\n0\r\n\r\n"), "no end of the chunked body"
body = raw.split(b"\r\n\r\n", 1)[1]
# de-chunk
out, i = b"", 0
while True:
    j = body.index(b"\r\n", i)
    size = int(body[i:j], 16)
    if size == 0:
        break
    out += body[j + 2:j + 2 + size]
    i = j + 2 + size + 2
seen = [json.loads(l)["object"]["metadata"].get("labels", {}).get("n") for l in out.splitlines() if l]
nums = [int(x) for x in seen if x is not None]
assert nums == list(range(1, len(nums) + 1)), seen[:20]
assert 0 < len(nums) <= n - 60, (len(nums), n)
print("stalled reader got", len(nums), "of", n, "updates,", len(raw), "bytes")
EOF

# the reading watch got every update
w1_has_last() { has "\"n\":\"$N\"" <"$TMP/w1"; }
wait_until 20 w1_has_last || fail "curl watch missed updates"

# ---- the proxy config stream: a proxy that stops reading is closed ----
# 20 Services of 200 endpoints make a ~100 KiB snapshot; each update below
# changes one endpoint, so each is a new snapshot on the stream
python3 - "$TMP" <<'EOF'
import json, sys
for i in range(20):
    eps = ["10.%d.%d.%d:8080" % (i, j // 250, j % 250) for j in range(200)]
    json.dump({"apiVersion": "skiff.dev/v1", "kind": "Service", "metadata": {"name": "s%d" % i},
               "spec": {"endpoints": eps}}, open("%s/s%d.json" % (sys.argv[1], i), "w"))
EOF
for i in $(seq 0 19); do
  curl -sf -o /dev/null "${AUTH[@]}" -H 'content-type: application/json' --data-binary @"$TMP/s$i.json" \
    "$API/services/default" || fail "service s$i"
done
rm -f "$TMP/go"
python3 "$TMP/slow.py" "$CP" "$TOKEN" "/api/v1/proxyconfig?watch=true&node=slow-1" "$TMP/pslow.out" "$TMP/go" &
SLOW=$!
proxies_are() { test "$(metric skiff_control_proxies_connected)" = "$1"; }
pushed() { test "$(metric skiff_control_proxy_config_version)" != "$V"; }
wait_until 10 proxies_are 1 || fail "the proxy stream did not open"
M=0
while [ "$(metric skiff_control_proxy_slow_closed_total)" != 1 ] && [ $M -lt 400 ]; do
  M=$((M + 1))
  V=$(metric skiff_control_proxy_config_version)
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["spec"]["endpoints"][0]="10.99.0.1:%d" % (1000 + int(sys.argv[2])); json.dump(d,open(sys.argv[1],"w"))' \
    "$TMP/s0.json" "$M"
  curl -sf -o /dev/null "${AUTH[@]}" -X PUT -H 'content-type: application/json' --data-binary @"$TMP/s0.json" \
    "$API/services/default/s0" || fail "service update $M"
  # one snapshot per update: wait for the (coalescing) compile to take it
  wait_until 5 pushed || true
done
[ "$(metric skiff_control_proxy_slow_closed_total)" = 1 ] || fail "the stalled proxy stream was not ended after $M updates"
wait_until 5 proxies_are 0 || fail "the stalled proxy stream is still counted"
has 'proxy config stream not read; closing it.*slow-1.*127.0.0.1' <"$TMP/control.log" || fail "no log line for the proxy"
touch "$TMP/go"
wait "$SLOW" || fail "slow proxy reader"
SLOW=
python3 - "$TMP/pslow.out" <<'EOF' || fail "stalled proxy's stream"
import sys
raw = open(sys.argv[1], "rb").read()
assert raw.startswith(b"HTTP/1.1 200"), raw[:100]
assert raw.endswith(b"\r\n0\r\n\r\n"), "no end of the chunked body"
print("stalled proxy got", raw.count(b'"type":"SNAPSHOT"'), "snapshots,", len(raw), "bytes")
EOF
echo "PASS control_backpressure ($N watch updates, $M service updates for the proxy stream)"
