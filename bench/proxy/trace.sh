#!/usr/bin/env bash
# bench/proxy/trace.sh: what OTLP span export costs skiff-proxy. The same
# proxy config in front of the same upstream (nginx, one worker, "ok"),
# measured in one run with tracing off, with tracing on at sample_ratio 1
# (every request: one SERVER + one CLIENT span, exported to a real
# skiff-telemetry), at 0.01, and at 1 with the receiver down (every span
# dropped), each with WORKERS workers (1 and 2 by default: with 2, two
# workers feed the one exporter queue, which is where a shared queue would
# show contention). There is no peer here: none of the Debian 12 proxies
# ships an OTLP exporter (nginx's otel module and Envoy are not packaged),
# so the baseline is skiff-proxy itself with tracing off.
#
# Usage: bench/proxy/trace.sh       Env: SECS=8 CONNS=50 WORKERS="1 2"
#        BIN=build/release/bin BASE_PORT=28400
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${SECS:-8}
CONNS=${CONNS:-50}
WORKERS=${WORKERS:-1 2}
BIN=${BIN:-$ROOT/build/release/bin}
BASE=${BASE_PORT:-28400}

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  (apt-get update -qq || true) >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$BIN/skiff-proxy" ] || [ ! -x "$BIN/skiff-telemetry" ]; then
  (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build --preset release >/dev/null)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-trace-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

UP=$BASE; PX=$((BASE + 1)); ADM=$((BASE + 2)); OTLP=$((BASE + 3)); QRY=$((BASE + 4)); TADM=$((BASE + 5))
DEAD=$((BASE + 6))

wait_port() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# upstream: nginx, one worker
sed -e "s|@TMP@|$TMP|g" -e "s|@UP@|$UP|g" "$ROOT/bench/proxy/conf/nginx-upstream.conf" >"$TMP/up.conf"
nginx -c "$TMP/up.conf" -p "$TMP" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "http://127.0.0.1:$UP/" || { echo "upstream did not start" >&2; exit 1; }

# the receiver: skiff-telemetry (no_sync: the bench measures the proxy, not the disk)
cat >"$TMP/telemetry.yaml" <<EOF
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QRY
data_dir: $TMP/tl
no_sync: true
log: {level: warn}
admin: {listen: 127.0.0.1:$TADM}
EOF
"$BIN/skiff-telemetry" --config "$TMP/telemetry.yaml" >"$TMP/telemetry.log" 2>&1 &
PIDS+=($!)
wait_port "http://127.0.0.1:$TADM/readyz" || { echo "telemetry did not start" >&2; exit 1; }

run_case() { # name workers tracing-yaml -> "req/s exported dropped"
  cat >"$TMP/px.yaml" <<EOF
admin: {listen: "127.0.0.1:$ADM"}
log: {level: warn}
workers: $2
access_log: {path: ""}
clusters: [{name: up, endpoints: ["127.0.0.1:$UP"], max_connections: 256}]
routes: [{name: all, match: {path: {prefix: /}}, cluster: up}]
listeners: [{name: ingress, address: "127.0.0.1:$PX", idle_timeout: 120s}]
$3
EOF
  "$BIN/skiff-proxy" --config "$TMP/px.yaml" >"$TMP/px-$1.log" 2>&1 &
  local pid=$!
  wait_port "http://127.0.0.1:$ADM/readyz" || { echo "proxy $1 did not start" >&2; exit 1; }
  wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$PX/" >/dev/null 2>&1 || true
  local rps
  rps=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PX/" | awk '/^Requests\/sec/ {printf "%d", $2}')
  sleep 1.5 # one flush interval: let the exporter catch up before reading its counters
  local m
  m=$(curl -fsS "http://127.0.0.1:$ADM/metrics")
  local ex dr
  ex=$(echo "$m" | awk '$1=="skiff_proxy_spans_exported_total"{printf "%d", $2}')
  dr=$(echo "$m" | awk '$1=="skiff_proxy_spans_dropped_total"{printf "%d", $2}')
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$rps ${ex:--} ${dr:--}"
}

echo "| workers | tracing | req/s | vs off | spans exported | spans dropped |"
echo "| ---: | --- | ---: | ---: | ---: | ---: |"
for w in $WORKERS; do
  read -r base _ _ <<<"$(run_case off "$w" "")"
  echo "| $w | off | $base | 1.00x | - | - |"
  for c in "ratio 1|tracing: {otlp_endpoint: \"http://127.0.0.1:$OTLP\", sample_ratio: 1.0}" \
    "ratio 0.01|tracing: {otlp_endpoint: \"http://127.0.0.1:$OTLP\", sample_ratio: 0.01}" \
    "ratio 1, receiver down|tracing: {otlp_endpoint: \"http://127.0.0.1:$DEAD\", sample_ratio: 1.0}"; do
    name=${c%%|*}; yaml=${c#*|}
    read -r rps ex dr <<<"$(run_case "$w-${name// /_}" "$w" "$yaml")"
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN{ if (b > 0) printf "%.2fx", a / b; else print "-" }')
    echo "| $w | $name | $rps | $ratio | $ex | $dr |"
  done
done
echo
echo "wrk -t1 -c$CONNS -d${SECS}s after a 1 s warm-up; upstream nginx (1 worker); receiver skiff-telemetry (no_sync)."
