#!/usr/bin/env bash
# skiff-control API throughput with its two stores side by side, in the same
# run: sqlite (the default, WAL + synchronous=FULL) and PostgreSQL (libpq,
# synchronous_commit=on, a throwaway local cluster from tests/support/pg.sh).
#
#   creates/s   wrk -t1 -c$CONNS for $SECS s; every request creates a new
#               Service (create.lua), each one a durable commit + audit row
#   fan-out     $WATCHERS watch streams, $EVENTS creates one after another:
#               time from the POST until every watcher has the event
#               (watch_fanout.py), median and max, and the median time to
#               half of the watchers; for PostgreSQL also across replicas:
#               watchers on a second skiff-control on the same database,
#               creates through the first (LISTEN/NOTIFY in between)
#
# Usage: bash bench/control/api.sh   (BUILD=build/release by default; SECS,
# CONNS, WATCHERS, EVENTS in the env). Needs wrk, python3, PostgreSQL server
# binaries (Debian: postgresql). Figures: docs/benchmarks.md.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/support/lib.sh"
. "$SRC/tests/support/pg.sh"
BUILD=${BUILD:-$SRC/build/release}
CONTROL=$BUILD/bin/skiff-control
SECS=${SECS:-10}
CONNS=${CONNS:-16}
WATCHERS=${WATCHERS:-100}
EVENTS=${EVENTS:-20}
[ -x "$CONTROL" ] || { echo "build skiff-control first ($CONTROL)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench-control.XXXXXX")
PID=
PID2=
cleanup() {
  [ -n "$PID" ] && { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  [ -n "$PID2" ] && { kill "$PID2" 2>/dev/null || true; wait "$PID2" 2>/dev/null || true; }
  pg_stop
  rm -rf "$TMP"
}
trap cleanup EXIT

pg_start >/dev/null

run_store() { # label store-url
  local label=$1 store=$2 port admin
  port=$(free_port); admin=$(free_port)
  rm -rf "$TMP/state"; mkdir -p "$TMP/state"
  cat >"$TMP/c.yaml" <<EOC
listen: 127.0.0.1:$port
state_dir: $TMP/state
${store:+store: $store}
max_watches: 4096
log:
  level: warn
admin:
  listen: 127.0.0.1:$admin
EOC
  "$CONTROL" --config "$TMP/c.yaml" >"$TMP/$label.log" 2>&1 &
  PID=$!
  wait_until 30 curl -sf "http://127.0.0.1:$port/healthz" || { cat "$TMP/$label.log"; exit 1; }
  local tok; tok=$(cat "$TMP/state/admin.token")
  wrk -t1 -c"$CONNS" -d2s -s "$SRC/bench/control/create.lua" -H "authorization: Bearer $tok" \
    -H 'content-type: application/json' "http://127.0.0.1:$port/api/v1/services/warm" >/dev/null
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$SRC/bench/control/create.lua" -H "authorization: Bearer $tok" \
    -H 'content-type: application/json' "http://127.0.0.1:$port/api/v1/services/bench" >"$TMP/$label.wrk"
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec/{print $2}' "$TMP/$label.wrk")
  p50=$(awk '$1=="50%"{print $2}' "$TMP/$label.wrk")
  p99=$(awk '$1=="99%"{print $2}' "$TMP/$label.wrk")
  bad=$(awk '/Non-2xx/{print $NF}' "$TMP/$label.wrk"); bad=${bad:-0}
  local fan
  fan=$(python3 "$SRC/bench/control/watch_fanout.py" "$port" "$tok" fan "$WATCHERS" "$EVENTS")
  printf '%-10s creates/s %8s  p50 %8s  p99 %8s  non-2xx %s\n' "$label" "$rps" "$p50" "$p99" "$bad"
  printf '%-10s fan-out   %s\n' "$label" "$fan"
  if [ -n "$store" ]; then # a second replica: its watchers, writes through the first
    local port2; port2=$(free_port)
    mkdir -p "$TMP/state2"
    sed -e "s/^listen: .*/listen: 127.0.0.1:$port2/" -e "s|^state_dir: .*|state_dir: $TMP/state2|" \
      -e "s/^  listen: .*/  listen: 127.0.0.1:$(free_port)/" "$TMP/c.yaml" >"$TMP/c2.yaml"
    "$CONTROL" --config "$TMP/c2.yaml" >"$TMP/$label-2.log" 2>&1 &
    PID2=$!
    wait_until 30 curl -sf "http://127.0.0.1:$port2/healthz" || { cat "$TMP/$label-2.log"; exit 1; }
    fan=$(python3 "$SRC/bench/control/watch_fanout.py" "$port2" "$tok" fan2 "$WATCHERS" "$EVENTS" "$port")
    printf '%-10s fan-out across replicas %s\n' "$label" "$fan"
    kill "$PID2"; wait "$PID2" 2>/dev/null || true; PID2=
  fi
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

echo "skiff-control API: $CONNS connections x ${SECS}s creates; $WATCHERS watchers x $EVENTS events ($(nproc) CPUs, $(date -u +%FT%TZ))"
run_store sqlite ""
run_store postgres "$PG_URL"
