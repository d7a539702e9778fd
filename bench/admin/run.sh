#!/usr/bin/env bash
# bench/admin/run.sh: the cost of admin.tls (docs/runtime/metrics-admin-store.md)
# for a scraper, side by side in the same run: one skiff-testd with a plain
# HTTP admin listener, one with HTTPS + a client certificate (mTLS), both
# scraped with real curl:
#   1. N scrapes of /metrics, a new connection (and for TLS a full handshake
#      with client certificate) each - the worst case;
#   2. N scrapes over one kept-alive connection (one curl with N URLs) - how
#      skiff-telemetry's scraper (one pooled connection per target) runs.
# Both sides use HTTP/1.1 (curl would pick h2 over TLS by ALPN).
# Prints scrapes/s for each. Usage: bench/admin/run.sh (env: N, BUILD=dir)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/support/lib.sh"
N=${N:-300}
BUILD=${BUILD:-$ROOT/build/release}
BIN=$BUILD/bin
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench-admin.XXXXXX")
C=$TMP/certs
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
bash "$ROOT/tests/support/gen-certs.sh" "$C" >/dev/null
P1=$(free_port); P2=$(free_port)
printf 'upstreams: [{name: a, addr: "127.0.0.1:1"}]\nadmin: {listen: "127.0.0.1:%s"}\n' "$P1" >"$TMP/plain.yaml"
printf 'upstreams: [{name: a, addr: "127.0.0.1:1"}]\nadmin:\n  listen: 127.0.0.1:%s\n  tls: {cert: %s/server.pem, key: %s/server.key, ca: %s/ca.pem}\n' \
  "$P2" "$C" "$C" "$C" >"$TMP/tls.yaml"
"$BIN/skiff-testd" --config "$TMP/plain.yaml" >"$TMP/plain.log" 2>&1 & pids+=($!)
"$BIN/skiff-testd" --config "$TMP/tls.yaml" >"$TMP/tls.log" 2>&1 & pids+=($!)
TLSO=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key")
wait_until 20 curl -fsS "http://127.0.0.1:$P1/metrics" || { echo "plain admin did not start"; exit 1; }
wait_until 20 curl -fsS "${TLSO[@]}" "https://127.0.0.1:$P2/metrics" || { echo "tls admin did not start"; exit 1; }
rate() { awk -v n="$N" -v s="$1" -v e="$2" 'BEGIN { printf "%.0f", n / ((e - s) / 1e9) }'; }
run_new() { # URL [curl options]: N scrapes, a new connection each
  local u=$1; shift
  local s e; s=$(date +%s%N)
  for _ in $(seq 1 "$N"); do curl -fsS --http1.1 -o /dev/null "$@" "$u"; done
  e=$(date +%s%N); rate "$s" "$e"
}
run_keep() { # URL [curl options]: N scrapes on one connection
  local u=$1; shift
  local urls=() s e
  for _ in $(seq 1 "$N"); do urls+=("$u"); done
  s=$(date +%s%N)
  curl -fsS --http1.1 "$@" "${urls[@]}" >/dev/null
  e=$(date +%s%N); rate "$s" "$e"
}
echo "admin /metrics scrapes/s (N=$N, curl; loaded shared machine - compare within a run only)"
printf '%-34s %10s %10s\n' "" "plain" "mTLS"
printf '%-34s %10s %10s\n' "new connection per scrape" "$(run_new "http://127.0.0.1:$P1/metrics")" \
  "$(run_new "https://127.0.0.1:$P2/metrics" "${TLSO[@]}")"
printf '%-34s %10s %10s\n' "one kept-alive connection" "$(run_keep "http://127.0.0.1:$P1/metrics")" \
  "$(run_keep "https://127.0.0.1:$P2/metrics" "${TLSO[@]}")"
