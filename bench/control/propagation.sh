#!/usr/bin/env bash
# Config push propagation: PROXIES real skiff-proxy processes (default 100)
# follow one skiff-control; ROUNDS times, `skiff apply -f` changes a Route's
# weights and we measure, from the moment `skiff apply` returns, until each
# proxy has ACKed the new snapshot (control's `ackedAt` per proxy, same
# clock) and until every proxy has. Reported: p50/p99 per proxy ACK and
# p50/p99/max of "all proxies ACKed" over the rounds.
#
# There is no peer in this run: no Envoy/xDS control plane is installed on
# the machine, so the figure stands alone (goal in the issue: p99 <= 100 ms).
#
# Usage: bash bench/control/propagation.sh   (BUILD=build/release by default;
# PROXIES, ROUNDS in the env). Figures: docs/benchmarks.md.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/support/lib.sh"
BUILD=${BUILD:-$SRC/build/release}
BIN=$BUILD/bin
PROXIES=${PROXIES:-100}
ROUNDS=${ROUNDS:-30}
for b in skiff-control skiff-proxy skiff; do
  [ -x "$BIN/$b" ] || { echo "build $b first ($BIN/$b)" >&2; exit 1; }
done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench-push.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

CP=$(free_port)
mkdir -p "$TMP/state"
cat >"$TMP/control.yaml" <<YAML
listen: 127.0.0.1:$CP
state_dir: $TMP/state
durable: true
watch_heartbeat: 5s
admin: {enabled: false}
log: {level: warn}
YAML
"$BIN/skiff-control" --config "$TMP/control.yaml" >"$TMP/control.log" 2>&1 &
PIDS+=($!)
wait_until 20 curl -sf "http://127.0.0.1:$CP/healthz" || { echo "control did not start" >&2; exit 1; }
export SKIFF_SERVER=http://127.0.0.1:$CP SKIFF_TOKEN=$(cat "$TMP/state/admin.token") SKIFF_CA=
echo "$SKIFF_TOKEN" >"$TMP/token"

for i in $(seq 1 "$PROXIES"); do
  cat >"$TMP/proxy-$i.yaml" <<YAML
listeners:
  - {name: ingress, address: 127.0.0.1:$(free_port)}
admin: {enabled: false}
log: {level: warn}
control:
  url: http://127.0.0.1:$CP
  node: bench-$i
  token_file: $TMP/token
  backoff: {initial: 100ms, max: 2s}
YAML
  "$BIN/skiff-proxy" --config "$TMP/proxy-$i.yaml" >"$TMP/proxy-$i.log" 2>&1 &
  PIDS+=($!)
done

python3 - "$SRC" "$BIN/skiff" "$TMP" "$CP" "$PROXIES" "$ROUNDS" <<'PY'
import json, subprocess, sys, time, urllib.request, datetime
src, skiff, tmp, cp, n, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
tok = open(tmp + "/token").read().strip()

def proxies():
    rq = urllib.request.Request("http://127.0.0.1:%s/api/v1/proxies" % cp, headers={"authorization": "Bearer " + tok})
    return json.load(urllib.request.urlopen(rq, timeout=10))

def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()

def apply(w1, w2):
    doc = """apiVersion: skiff.dev/v1
kind: Service
metadata: {name: a}
spec: {endpoints: ["127.0.0.1:9"]}
---
apiVersion: skiff.dev/v1
kind: Service
metadata: {name: b}
spec: {endpoints: ["127.0.0.1:10"]}
---
apiVersion: skiff.dev/v1
kind: Route
metadata: {name: web}
spec:
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{name: a, weight: %d}, {name: b, weight: %d}]
""" % (w1, w2)
    open(tmp + "/route.yaml", "w").write(doc)
    subprocess.run([skiff, "apply", "-f", tmp + "/route.yaml"], check=True, stdout=subprocess.DEVNULL)

apply(50, 50)
deadline = time.time() + 120
while True:
    d = proxies()
    ok = [i for i in d["items"] if i["connected"] and i["ackedVersion"] == d["version"]]
    if len(ok) == n: break
    if time.time() > deadline:
        sys.exit("only %d of %d proxies connected and synced" % (len(ok), n))
    time.sleep(0.2)

per, alls = [], []
prev = proxies()["version"]
for r in range(rounds):
    apply(10 + r % 80, 90 - r % 80)
    t0 = time.time()
    while True:
        d = proxies()  # the new version exists once control compiled (after its coalescing delay)
        want = d["version"]
        acked = [i for i in d["items"] if i["ackedVersion"] >= want]
        if want > prev and len(acked) == n: break
        if time.time() - t0 > 30: sys.exit("round %d: only %d acked" % (r, len(acked)))
        time.sleep(0.005)
    lat = sorted(max(0.0, (ts(i["ackedAt"]) - t0) * 1000) for i in d["items"])
    per += lat
    alls.append(lat[-1])
    prev = want
    time.sleep(0.05)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]
print("proxies=%d rounds=%d" % (n, rounds))
print("per-proxy ACK after apply returned: p50 %.1f ms  p99 %.1f ms" % (pct(per, 50), pct(per, 99)))
print("all proxies ACKed after apply returned: p50 %.1f ms  p99 %.1f ms  max %.1f ms" % (pct(alls, 50), pct(alls, 99), max(alls)))
PY
