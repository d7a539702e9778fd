#!/usr/bin/env bash
# bench/proxy/profile.sh: what one proxied HTTP/1.1 keep-alive request costs
# skiff-proxy, in figures that the machine's load does not change:
#   1. user-space instructions per request (valgrind --tool=callgrind): the
#      proxy is run twice under callgrind, once serving N requests and once
#      serving none, and the difference is divided by N (start-up, config
#      and shutdown cancel out);
#   2. system calls per request (strace -c -f on the running proxy);
#   3. idle memory: VmRSS, anonymous and file-backed, and the largest
#      mappings from /proc/PID/smaps.
# Same shape as bench/proxy/run.sh: nginx upstream answering "ok", the
# bench config (one worker, access log off, metrics and trace context on),
# h2load --h1 with 50 keep-alive connections as the client (H2=1: h2c with
# prior knowledge, 10 connections of 10 concurrent streams; the upstream
# side stays HTTP/1.1).
#
# Usage: bench/proxy/profile.sh            (about 1 minute)
# Env:   N=20000 BIN=build/release/bin BASE_PORT=28300 TOP=25 (callgrind lines) H2=0
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/proxy
N=${N:-20000}
BIN=${BIN:-$ROOT/build/release/bin}
BASE=${BASE_PORT:-28300}
TOP=${TOP:-25}
H2=${H2:-0}
for t in valgrind callgrind_annotate strace h2load nginx curl; do
  command -v "$t" >/dev/null || { echo "profile.sh needs $t (valgrind, strace, nghttp2-client, nginx-light)" >&2; exit 2; }
done
[ -x "$BIN/skiff-proxy" ] || { echo "no $BIN/skiff-proxy (cmake --preset release && cmake --build --preset release)" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-proxy-profile.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

UP=$BASE PX=$((BASE + 10)) ADMIN=$((BASE + 11))
render() { sed -e "s|@TMP@|$TMP|g" -e "s|@UP@|$UP|g" -e "s|@H1@|$PX|g" -e "s|@H2@|0|g" -e "s|@ADMIN@|$ADMIN|g" "$HERE/conf/$1" >"$TMP/$1"; }
render nginx-upstream.conf
render skiff-proxy.yaml
wait_http() {
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1" >&2
  return 1
}
load() {
  if [ "$H2" = 1 ]; then h2load -n "$1" -c 10 -m 10 "http://127.0.0.1:$PX/" >"$TMP/h2load.out" 2>&1 || true
  else h2load --h1 -n "$1" -c 50 -m 1 "http://127.0.0.1:$PX/" >"$TMP/h2load.out" 2>&1 || true; fi
  grep -q "^requests: $1 total.* $1 succeeded" "$TMP/h2load.out" || { echo "load failed:" >&2; cat "$TMP/h2load.out" >&2; exit 1; }; }

nginx -c "$TMP/nginx-upstream.conf" -p "$TMP" >"$TMP/up.out" 2>&1 &
PIDS+=($!)
wait_http "$UP"

# ---- 1. instructions per request ----
cg_run() { # requests -> total Ir
  valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$1" "$BIN/skiff-proxy" --config "$TMP/skiff-proxy.yaml" >"$TMP/cg.log" 2>&1 &
  local vp=$!
  PIDS+=("$vp")
  wait_http "$PX"
  [ "$1" -gt 0 ] && load "$1"
  kill -TERM "$vp"
  wait "$vp" || true
  callgrind_annotate "$TMP/cg.$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}
ir0=$(cg_run 0)
irn=$(cg_run "$N")
echo "user-space instructions per request: $(((irn - ir0) / N))  (callgrind: $irn - $ir0 over $N requests)"
echo "top functions (self, whole run of $N requests):"
callgrind_annotate "$TMP/cg.$N" 2>/dev/null | sed -n '/file:function/,$p' | sed -n "3,$((TOP + 2))p" |
  awk -v n="$N" '{v = $1; gsub(",", "", v); printf "  %7d/req  %s\n", v / n, $0}' | cut -c1-160

# ---- 2. syscalls per request ----
"$BIN/skiff-proxy" --config "$TMP/skiff-proxy.yaml" >"$TMP/px.log" 2>&1 &
PX_PID=$!
PIDS+=("$PX_PID")
wait_http "$PX"
load 2000 # warm-up
strace -c -f -p "$PX_PID" -o "$TMP/strace.out" 2>/dev/null &
ST=$!
sleep 1
load "$N"
kill -INT "$ST"
wait "$ST" 2>/dev/null || true
echo "system calls per request (strace -c -f, $N requests):"
awk -v n="$N" '$4 ~ /^[0-9]+$/ {printf "  %-14s %.3f\n", $NF, $4 / n}' "$TMP/strace.out"

# ---- 3. idle memory ----
kill -TERM "$PX_PID"
wait "$PX_PID" 2>/dev/null || true
"$BIN/skiff-proxy" --config "$TMP/skiff-proxy.yaml" >"$TMP/px.log" 2>&1 &
PX_PID=$!
PIDS+=("$PX_PID")
wait_http "$PX"
sleep 0.5
echo "idle memory (one request served): $(awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %s kB  ", $1, $2}' "/proc/$PX_PID/status")"
awk '/^[0-9a-f]+-[0-9a-f]+ / {name = $6 == "" ? "[anon]" : $6} /^Rss:/ {rss[name] += $2} /^Anonymous:/ {an[name] += $2}
     END {for (k in rss) if (rss[k] > 0) printf "  %6d kB (%4d kB anonymous)  %s\n", rss[k], an[k], k}' "/proc/$PX_PID/smaps" | sort -rn
