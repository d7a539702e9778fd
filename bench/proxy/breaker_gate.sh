#!/usr/bin/env bash
# bench/proxy/breaker_gate.sh: what circuit_breaker.max_connections and
# max_pending_requests cost on the hot path. One skiff-proxy (workers: 2)
# with two clusters in front of the same skiff-echo: `plain` (no
# circuit_breaker section: no limits, pools without a gate) and `gated`
# (`circuit_breaker: {}`: the defaults, 1024 connections / 1024 pending /
# 1024 requests, so every pool asks the process-wide gate; the limits never
# bite). h2load drives /plain and /gated in turn, ROUNDS times each, so
# drift on a shared machine hits both alike; prints req/s per round and the
# gated/plain ratio of the medians.
#
# Usage: BIN=build/release/bin bench/proxy/breaker_gate.sh
# Env:   SECS=6 ROUNDS=5 CONNS=16 STREAMS=10 PROTO=h1|h2 BASE_PORT=28500
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/build/release/bin}
SECS=${SECS:-6}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}
PROTO=${PROTO:-h1}
BASE=${BASE_PORT:-28500}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-breaker-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

UP=$BASE PX=$((BASE + 1)) ADM=$((BASE + 2)) UPADM=$((BASE + 3))
cat >"$TMP/echo.yaml" <<EOF
listen: 127.0.0.1:$UP
admin:
  listen: 127.0.0.1:$UPADM
EOF
"$BIN/skiff-echo" --config "$TMP/echo.yaml" >"$TMP/echo.log" 2>&1 &
PIDS+=($!)
cat >"$TMP/proxy.yaml" <<EOF
workers: 2
admin:
  listen: 127.0.0.1:$ADM
access_log: {path: ""}
listeners:
  - name: main
    address: 127.0.0.1:$PX
clusters:
  - name: plain
    endpoints: ["127.0.0.1:$UP"]
  - name: gated
    endpoints: ["127.0.0.1:$UP"]
    circuit_breaker: {}
routes:
  - name: plain
    match: {path: /plain}
    cluster: plain
  - name: gated
    match: {path: /gated}
    cluster: gated
EOF
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" >"$TMP/proxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$ADM/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

h2flags=()
[ "$PROTO" = h1 ] && h2flags=(--h1)
run() { # PATH -> req/s
  h2load "${h2flags[@]}" -D "$SECS" -c "$CONNS" -m "$STREAMS" "http://127.0.0.1:$PX$1" 2>/dev/null |
    awk '/^finished in/ { gsub(",", "", $4); print $4 }'
}
run /plain >/dev/null # warm both pools
run /gated >/dev/null
plain=() gated=()
for r in $(seq 1 "$ROUNDS"); do
  a=$(run /plain)
  b=$(run /gated)
  plain+=("$a")
  gated+=("$b")
  echo "round $r: plain $a req/s, gated $b req/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mp=$(median "${plain[@]}")
mg=$(median "${gated[@]}")
awk -v p="$mp" -v g="$mg" 'BEGIN { printf "median: plain %.0f req/s, gated %.0f req/s, gated/plain %.3f\n", p, g, g / p }'
