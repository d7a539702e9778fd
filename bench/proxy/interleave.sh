#!/usr/bin/env bash
# bench/proxy/interleave.sh: throughput of skiff-proxy builds and the peers
# measured in short runs taken in turn, round after round, reporting the
# median per proxy. On a machine shared with other work the load changes
# from one ten-second run to the next, which makes the one-run-per-proxy
# figures of run.sh swing by 2-4x; taking each proxy in turn, many times,
# exposes all of them to the same load and the median ratios hold still.
# Same configs and pinning as run.sh: nginx upstream ("ok") and the load
# generator on CPU 0, every proxy (one worker each) on CPU 1, all started
# up front (an idle proxy takes no CPU).
#
# It also reports the proxy's CPU time per HTTP/1.1 request (user + system,
# from /proc/PID/stat of the proxy's processes, over each wrk run): the work
# a request costs, which the share of CPU the proxy gets on a busy machine
# does not change, and whose inverse is the rate one saturated core would
# reach.
#
# Usage: bench/proxy/interleave.sh         (ROUNDS x proxies x 2 x SECS s)
# Env:   ROUNDS=8 SECS=3 CONNS=50 BIN=build/release/bin (skiff)
#        BIN_OLD=dir (a second skiff-proxy build, shown as skiff-old)
#        PROXIES="skiff nginx haproxy h2o" BASE_PORT=28700 H2=1 (0: no h2load)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/proxy
ROUNDS=${ROUNDS:-8}
SECS=${SECS:-3}
CONNS=${CONNS:-50}
BIN=${BIN:-$ROOT/build/release/bin}
BIN_OLD=${BIN_OLD:-}
PROXIES=${PROXIES:-skiff nginx haproxy h2o}
BASE=${BASE_PORT:-28700}
H2=${H2:-1}
NCPU=$(nproc)
CPU_PROXY=${CPU_PROXY:-$((NCPU > 1 ? 1 : 0))}
CPU_LOAD=${CPU_LOAD:-0}
for t in wrk h2load nginx curl taskset; do
  command -v "$t" >/dev/null || { echo "interleave.sh needs $t (see run.sh for the packages)" >&2; exit 2; }
done
[ -n "$BIN_OLD" ] && PROXIES="skiff-old $PROXIES"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-proxy-interleave.XXXXXX")
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

UP=$BASE
declare -A H1=([skiff]=$((BASE + 10)) [skiff-old]=$((BASE + 50)) [nginx]=$((BASE + 20)) [haproxy]=$((BASE + 30)) [h2o]=$((BASE + 40)))
declare -A H2P=([skiff]=$((BASE + 10)) [skiff-old]=$((BASE + 50)) [nginx]=$((BASE + 21)) [haproxy]=$((BASE + 31)) [h2o]=$((BASE + 40)))
render() { # template out h1 h2 admin
  sed -e "s|@TMP@|$TMP|g" -e "s|@UP@|$UP|g" -e "s|@H1@|$3|g" -e "s|@H2@|$4|g" -e "s|@ADMIN@|$5|g" "$HERE/conf/$1" >"$TMP/$2"
  echo "$TMP/$2"
}
wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1" >&2
  return 1
}
start() { # cpu cmd... ; sets LAST_PID
  taskset -c "$1" "${@:2}" >>"$TMP/procs.out" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}
TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid: utime + stime of it and its children
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

declare -A PID
start "$CPU_LOAD" nginx -c "$(render nginx-upstream.conf up.conf 0 0 0)" -p "$TMP"
wait_http "$UP"
for px in $PROXIES; do
  case $px in
  skiff) start "$CPU_PROXY" "$BIN/skiff-proxy" --config "$(render skiff-proxy.yaml skiff.yaml "${H1[skiff]}" 0 $((BASE + 11)))" ;;
  skiff-old) start "$CPU_PROXY" "$BIN_OLD/skiff-proxy" --config "$(render skiff-proxy.yaml skiff-old.yaml "${H1[skiff-old]}" 0 $((BASE + 51)))" ;;
  nginx) start "$CPU_PROXY" nginx -c "$(render nginx.conf nginx.conf "${H1[nginx]}" "${H2P[nginx]}" 0)" -p "$TMP" ;;
  haproxy) start "$CPU_PROXY" haproxy -db -f "$(render haproxy.cfg haproxy.cfg "${H1[haproxy]}" "${H2P[haproxy]}" 0)" ;;
  h2o) start "$CPU_PROXY" h2o -c "$(render h2o.conf h2o.conf "${H1[h2o]}" 0 0)" ;;
  *) echo "unknown proxy $px" >&2; exit 2 ;;
  esac
  PID[$px]=$LAST_PID
  wait_http "${H1[$px]}"
  taskset -c "$CPU_LOAD" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:${H1[$px]}/" >/dev/null 2>&1 || true # warm-up
done

declare -A R1 R2 C1
for r in $(seq 1 "$ROUNDS"); do
  for px in $PROXIES; do
    c0=$(cpu_ticks "${PID[$px]}")
    out=$(taskset -c "$CPU_LOAD" wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:${H1[$px]}/" 2>&1 || true)
    c1=$(cpu_ticks "${PID[$px]}")
    v=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    R1[$px]="${R1[$px]:-} ${v:-0}"
    C1[$px]="${C1[$px]:-} $(awk -v d=$((c1 - c0)) -v t="$TCK" -v n="${n:-0}" 'BEGIN {if (n > 0) printf "%.2f", d / t * 1e6 / n; else print 0}')"
    if [ "$H2" = 1 ]; then
      v=$(taskset -c "$CPU_LOAD" h2load -t1 -c10 -m10 -D "$SECS" "http://127.0.0.1:${H2P[$px]}/" 2>&1 |
        awk '/^finished in/ {gsub(",", "", $4); printf "%.0f", $4}')
      R2[$px]="${R2[$px]:-} ${v:-0}"
    fi
  done
  echo "round $r/$ROUNDS done (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
range() { tr ' ' '\n' | grep -v '^$' | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s-%s", lo, hi}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else printf "-" }'; }
M1s=$(median <<<"${R1[skiff]:-0}")
M2s=$(median <<<"${R2[skiff]:-0}")
echo
echo "Machine: $NCPU CPUs, load average at the end $(cut -d' ' -f1-3 /proc/loadavg); proxies on CPU $CPU_PROXY, nginx upstream and load generators on CPU $CPU_LOAD."
echo "$ROUNDS rounds; in each, every proxy in turn: wrk -t1 -c$CONNS -d${SECS}s$([ "$H2" = 1 ] && echo ", h2load -t1 -c10 -m10 -D$SECS (h2c)"). Median (min-max) req/s."
echo
Cs=$(tr ' ' '\n' <<<"${C1[skiff]:-0}" | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}')
echo "| proxy | HTTP/1.1 median | range | skiff / this | CPU us per HTTP/1.1 request (median) | this / skiff | HTTP/2 median | range | skiff / this |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for px in $PROXIES; do
  m1=$(median <<<"${R1[$px]}")
  m2=$([ "$H2" = 1 ] && median <<<"${R2[$px]}" || echo 0)
  c=$(tr ' ' '\n' <<<"${C1[$px]}" | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}')
  r1="" r2="" rc=""
  [ "$px" != skiff ] && r1=$(ratio "$M1s" "$m1") && r2=$(ratio "$M2s" "$m2") && rc=$(ratio "$c" "$Cs")
  echo "| $px | $m1 | $(range <<<"${R1[$px]}") | $r1 | $c | $rc | $m2 | $([ "$H2" = 1 ] && range <<<"${R2[$px]}") | $r2 |"
done
