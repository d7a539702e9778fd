#!/usr/bin/env bash
# bench/proxy/shared_state.sh: what process-wide resilience state costs on
# the hot path. Two skiff-proxy binaries, OLD and NEW (e.g. a build from
# before the state was shared and one from after), run in turn with the same
# config (workers: 2; a route with a rate limit too high to bite, retries
# with a budget, a cluster with a circuit breaker and outlier detection) in
# front of the same skiff-echo, and h2load drives each ROUNDS times,
# alternating, so drift on a shared machine hits both alike. Prints, per
# round, req/s and the proxy's CPU time per request (utime + stime from
# /proc/PID/stat over the timed run: steadier than req/s on a loaded
# machine), then the NEW/OLD ratios of the medians.
#
# Usage: OLD=/path/to/old/bin NEW=build/proxyshared-rel/bin bench/proxy/shared_state.sh
# Env:   SECS=8 ROUNDS=3 CONNS=16 STREAMS=10 PROTO=h1|h2 BASE_PORT=28400
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OLD=${OLD:?OLD=dir with skiff-proxy}
NEW=${NEW:-$ROOT/build/release/bin}
ECHO_BIN=${ECHO_BIN:-$NEW/skiff-echo}
[ -x "$ECHO_BIN" ] || ECHO_BIN=$OLD/skiff-echo
SECS=${SECS:-8}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
STREAMS=${STREAMS:-10}
PROTO=${PROTO:-h1}
BASE=${BASE_PORT:-28400}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-shared-bench.XXXXXX")
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
"$ECHO_BIN" --config "$TMP/echo.yaml" >"$TMP/echo.log" 2>&1 &
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
  - name: up
    endpoints: ["127.0.0.1:$UP"]
    circuit_breaker: {max_requests: 100000, max_retries: 1000}
    outlier: {consecutive_5xx: 5}
routes:
  - name: all
    match: {path: /}
    cluster: up
    rate_limit: {requests_per_unit: 1000000000}
    retry: {attempts: 2}
EOF
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$UPADM/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_one() { # BIN -> "req/s cpu-us-per-request"
  "$1/skiff-proxy" --config "$TMP/proxy.yaml" >"$TMP/proxy.log" 2>&1 &
  local pid=$! rps c0 c1 n
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$ADM/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  local h1=()
  [ "$PROTO" = h1 ] && h1=(--h1)
  h2load "${h1[@]}" -c "$CONNS" -m "$STREAMS" -D 1 "http://127.0.0.1:$PX/" >/dev/null 2>&1 || true # warm up
  c0=$(cpu_ticks "$pid")
  h2load "${h1[@]}" -c "$CONNS" -m "$STREAMS" -D "$SECS" "http://127.0.0.1:$PX/" >"$TMP/h2load.out" 2>/dev/null || true
  c1=$(cpu_ticks "$pid")
  rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$TMP/h2load.out")
  n=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' "$TMP/h2load.out")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  awk -v r="${rps:-0}" -v n="${n:-0}" -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f %.2f\n", r, (n > 0 ? t / hz * 1e6 / n : 0) }'
}

old=() new=() oldc=() newc=()
for r in $(seq 1 "$ROUNDS"); do
  read -r o oc <<<"$(run_one "$OLD")"
  read -r n nc <<<"$(run_one "$NEW")"
  old+=("$o") oldc+=("$oc") new+=("$n") newc+=("$nc")
  echo "round $r: old $o req/s ${oc}us cpu/req, new $n req/s ${nc}us cpu/req"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END { print a[int((NR + 1) / 2)] }'; }
awk -v o="$(median "${old[@]}")" -v n="$(median "${new[@]}")" -v oc="$(median "${oldc[@]}")" \
  -v nc="$(median "${newc[@]}")" -v p="$PROTO" 'BEGIN {
  printf "%s median: old %.0f req/s %.2fus cpu/req, new %.0f req/s %.2fus cpu/req; new/old req/s %.2f, cpu/req %.2f\n",
    p, o, oc, n, nc, (o > 0 ? n / o : 0), (oc > 0 ? nc / oc : 0) }'
