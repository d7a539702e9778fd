#!/usr/bin/env bash
# bench/proxy/run.sh: skiff-proxy side by side with nginx, HAProxy and h2o,
# each a reverse proxy with ONE worker in front of the same upstream, all on
# 127.0.0.1, in one run on one machine. For each proxy:
#   1. RSS (VmRSS of the proxy's processes) idle, then holding 10,000 idle
#      keep-alive client connections (each sent one request);
#   2. HTTP/1.1 keep-alive throughput: wrk -t1 -c$CONNS -d${SECS}s;
#   3. HTTP/2 throughput (h2c prior knowledge): h2load -c10 -m10 -D$SECS;
#   4. latency at a fixed $RATE req/s for ${SECS}s (open loop, from the
#      scheduled send time; bench/proxy/openloop.c), the direct-to-upstream
#      figure subtracted per percentile.
# The proxy is pinned to CPU $CPU_PROXY; the load generators and the
# upstream share the other CPU. Prints a markdown table at the end.
#
# Usage: bench/proxy/run.sh            (about 4 minutes)
# Env:   SECS=10 RATE=2000 CONNS=50 IDLE=10000 UPSTREAM=auto|nginx|echo
#        BIN=build/release/bin PROXIES="skiff nginx haproxy h2o" BASE_PORT=28100
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/proxy
SECS=${SECS:-10}
RATE=${RATE:-2000}
CONNS=${CONNS:-50}
IDLE=${IDLE:-10000}
UPSTREAM=${UPSTREAM:-auto}
BIN=${BIN:-$ROOT/build/release/bin}
PROXIES=${PROXIES:-skiff nginx haproxy h2o}
BASE=${BASE_PORT:-28100}
NCPU=$(nproc)
CPU_PROXY=${CPU_PROXY:-$((NCPU > 1 ? 1 : 0))}
CPU_LOAD=${CPU_LOAD:-0}

# ---- tools ----
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
command -v h2o >/dev/null || need+=(h2o)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v httperf >/dev/null || need+=(httperf)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  (apt-get update -qq || true) >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$BIN/skiff-proxy" ] || [ ! -x "$BIN/skiff-echo" ]; then
  (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build --preset release >/dev/null)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-proxy-bench.XXXXXX")
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
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cc -O2 -std=gnu11 -o "$TMP/openloop" "$HERE/openloop.c"

P_UP_NGINX=$BASE P_UP_ECHO=$((BASE + 1)) P_UP_ECHO_ADMIN=$((BASE + 2))
declare -A H1=([skiff]=$((BASE + 10)) [nginx]=$((BASE + 20)) [haproxy]=$((BASE + 30)) [h2o]=$((BASE + 40)))
declare -A H2=([skiff]=$((BASE + 10)) [nginx]=$((BASE + 21)) [haproxy]=$((BASE + 31)) [h2o]=$((BASE + 40)))
P_SKIFF_ADMIN=$((BASE + 11))

render() { # template up-port h1 h2 admin -> file
  sed -e "s|@TMP@|$TMP|g" -e "s|@UP@|$2|g" -e "s|@H1@|$3|g" -e "s|@H2@|$4|g" -e "s|@ADMIN@|$5|g" "$HERE/conf/$1" >"$TMP/$1"
  echo "$TMP/$1"
}
wait_http() { # port path
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1$2" >&2
  return 1
}
start() { # name cpu cmd... ; sets LAST_PID
  taskset -c "$2" "${@:3}" >"$TMP/$1.out" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
stop() { # pid
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
rss_kb() { # pid: VmRSS of the process and its children, kB
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
wrk_rps() { # port path secs -> req/s (errors to $TMP/wrk.err)
  local out
  out=$(taskset -c "$CPU_LOAD" wrk -t1 -c"$CONNS" -d"$3"s "http://127.0.0.1:$1$2" 2>&1 || true)
  echo "$out" >>"$TMP/wrk.log"
  echo "$out" | grep -E 'Non-2xx|Socket errors' >"$TMP/wrk.err" || true
  echo "$out" | awk '/^Requests\/sec:/ {printf "%.0f", $2}'
}
h2_rps() { # port path
  local out
  out=$(taskset -c "$CPU_LOAD" h2load -t1 -c10 -m10 -D "$SECS" --warm-up-time=1 "http://127.0.0.1:$1$2" 2>&1 || true)
  echo "$out" >>"$TMP/h2load.log"
  if echo "$out" | grep -q '^requests:.* 0 succeeded'; then echo 0; return; fi
  echo "$out" | awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}'
}
lat() { # port path -> "p50 p99 p999" in us
  local out
  out=$(taskset -c "$CPU_LOAD" "$TMP/openloop" 127.0.0.1 "$1" "$2" "$RATE" "$SECS" 64 1 2>&1 || true)
  echo "$out" >>"$TMP/openloop.log"
  echo "$out" | sed -n 's/.*ok=\([0-9]*\) err=\([0-9]*\).*p50_us=\([0-9]*\).*p99_us=\([0-9]*\) p999_us=\([0-9]*\).*/\3 \4 \5 \1 \2/p'
}
idle_rss() { # pid port path -> "rss_kb ok"
  rm -f "$TMP/idle.ready"
  taskset -c "$CPU_LOAD" python3 "$HERE/idleconns.py" 127.0.0.1 "$2" "$3" "$IDLE" "$TMP/idle.ready" 120 &
  local py=$!
  PIDS+=("$py")
  for _ in $(seq 1 900); do [ -s "$TMP/idle.ready" ] && break; sleep 0.1; done
  sleep 0.5
  local r
  r=$(rss_kb "$1")
  local ok
  ok=$(sed -n 's/ok=//p' "$TMP/idle.ready" 2>/dev/null || echo 0)
  stop "$py"
  echo "$r ${ok:-0}"
}

# ---- upstream: the faster of nginx ("ok") and skiff-echo (/status/200) ----
start up-nginx "$CPU_LOAD" nginx -c "$(render nginx-upstream.conf "$P_UP_NGINX" 0 0 0)" -p "$TMP"
PID_UP_NGINX=$LAST_PID
start up-echo "$CPU_LOAD" "$BIN/skiff-echo" --config "$(render skiff-echo.yaml "$P_UP_ECHO" 0 0 "$P_UP_ECHO_ADMIN")"
PID_UP_ECHO=$LAST_PID
wait_http "$P_UP_NGINX" /
wait_http "$P_UP_ECHO" /status/200
CPU_LOAD_SAVE=$CPU_LOAD
CPU_LOAD=$CPU_PROXY # the load generator takes the other CPU for direct runs
if [ "$UPSTREAM" = auto ]; then
  r_ng=$(wrk_rps "$P_UP_NGINX" / 3)
  r_ec=$(wrk_rps "$P_UP_ECHO" /status/200 3)
  echo "upstream probe (3s, wrk -c$CONNS): nginx $r_ng req/s, skiff-echo $r_ec req/s" >&2
  if [ "${r_ng:-0}" -ge "${r_ec:-0}" ]; then UPSTREAM=nginx; else UPSTREAM=echo; fi
fi
if [ "$UPSTREAM" = nginx ]; then
  UP=$P_UP_NGINX UP_PATH=/ UP_DESC="nginx (1 worker, return 200 \"ok\")"
  stop "$PID_UP_ECHO"
else
  UP=$P_UP_ECHO UP_PATH=/status/200 UP_DESC="skiff-echo (GET /status/200)"
  stop "$PID_UP_NGINX"
fi
echo "upstream: $UP_DESC on 127.0.0.1:$UP" >&2

echo "direct to upstream..." >&2
D_H1=$(wrk_rps "$UP" "$UP_PATH" "$SECS")
read -r D_P50 D_P99 D_P999 D_OK D_ERR <<<"$(lat "$UP" "$UP_PATH")"
CPU_LOAD=$CPU_LOAD_SAVE

declare -A R_H1 R_H2 R_P50 R_P99 R_P999 R_RSS0 R_RSS1 R_IDLEOK R_NOTE
for px in $PROXIES; do
  echo "$px..." >&2
  case $px in
  skiff)
    start skiff "$CPU_PROXY" "$BIN/skiff-proxy" --config "$(render skiff-proxy.yaml "$UP" "${H1[skiff]}" 0 "$P_SKIFF_ADMIN")" ;;
  nginx)
    start nginx "$CPU_PROXY" nginx -c "$(render nginx.conf "$UP" "${H1[nginx]}" "${H2[nginx]}" 0)" -p "$TMP" ;;
  haproxy)
    start haproxy "$CPU_PROXY" haproxy -db -f "$(render haproxy.cfg "$UP" "${H1[haproxy]}" "${H2[haproxy]}" 0)" ;;
  h2o)
    start h2o "$CPU_PROXY" h2o -c "$(render h2o.conf "$UP" "${H1[h2o]}" 0 0)" ;;
  *) echo "unknown proxy $px" >&2; exit 2 ;;
  esac
  pid=$LAST_PID
  wait_http "${H1[$px]}" "$UP_PATH"
  sleep 0.5
  R_RSS0[$px]=$(rss_kb "$pid")
  read -r R_RSS1[$px] R_IDLEOK[$px] <<<"$(idle_rss "$pid" "${H1[$px]}" "$UP_PATH")"
  sleep 1
  wrk_rps "${H1[$px]}" "$UP_PATH" 1 >/dev/null # warm-up
  R_H1[$px]=$(wrk_rps "${H1[$px]}" "$UP_PATH" "$SECS")
  note=$(tr '\n' ' ' <"$TMP/wrk.err")
  R_H2[$px]=$(h2_rps "${H2[$px]}" "$UP_PATH")
  read -r p50 p99 p999 ok err <<<"$(lat "${H1[$px]}" "$UP_PATH")"
  R_P50[$px]=$((p50 - D_P50)) R_P99[$px]=$((p99 - D_P99)) R_P999[$px]=$((p999 - D_P999))
  [ "${err:-0}" = 0 ] || note="$note latency run: $err errors"
  [ "${R_IDLEOK[$px]}" = "$IDLE" ] || note="$note only ${R_IDLEOK[$px]} of $IDLE idle conns answered"
  R_NOTE[$px]=$note
  stop "$pid"
done

ratio() { # a b
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a > 0) printf "%.2fx", a / b; else printf "-" }'
}
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "Machine: $(nproc) CPUs ($(awk -F: '/model name/ {gsub(/^ /, "", $2); print $2; exit}' /proc/cpuinfo)), $(uname -sr)."
echo "Upstream: $UP_DESC, pinned to CPU $CPU_LOAD_SAVE; proxies pinned to CPU $CPU_PROXY, load generators to CPU $CPU_LOAD_SAVE."
echo "Direct to upstream: HTTP/1.1 $D_H1 req/s (wrk on CPU $CPU_PROXY); at $RATE req/s p50/p99/p99.9 = $D_P50/$D_P99/$D_P999 us."
echo "HTTP/1.1: wrk -t1 -c$CONNS -d${SECS}s; HTTP/2: h2load -t1 -c10 -m10 -D$SECS (h2c); latency: openloop $RATE req/s ${SECS}s, 64 conns, added = proxy - direct per percentile; RSS: VmRSS of all the proxy's processes, idle and with $IDLE idle keep-alive connections."
echo
echo "| proxy | HTTP/1.1 req/s | skiff / this | HTTP/2 req/s | skiff / this | added p50 us | added p99 us | added p99.9 us | RSS idle MB | RSS $IDLE conns MB | notes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
for px in $PROXIES; do
  r1=$( [ "$px" = skiff ] || [ -z "${R_H1[skiff]:-}" ] && echo "" || ratio "${R_H1[skiff]}" "${R_H1[$px]}")
  r2=$( [ "$px" = skiff ] || [ -z "${R_H2[skiff]:-}" ] && echo "" || ratio "${R_H2[skiff]}" "${R_H2[$px]}")
  echo "| $px | ${R_H1[$px]} | $r1 | ${R_H2[$px]} | $r2 | ${R_P50[$px]} | ${R_P99[$px]} | ${R_P999[$px]} | $(mb "${R_RSS0[$px]}") | $(mb "${R_RSS1[$px]}") | ${R_NOTE[$px]} |"
done
