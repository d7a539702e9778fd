#!/usr/bin/env bash
# bench/telemetry/kafka_export.sh: the cost of skiff-telemetry's Kafka export,
# in one run, same pre-encoded OTLP span batches (otlp_spans.py), same mock
# Kafka cluster (skiff-kafka-mock: librdkafka's mock brokers, in memory):
#   1. skiff-telemetry (no_sync) without export: wrk posts the batches for
#      SECS over CONNS connections; spans/s accepted;
#   2. skiff-telemetry (no_sync) exporting every request to the mock cluster
#      (acks=all, idempotent): the same; spans/s accepted, then how long until
#      every exported message is confirmed, and messages dropped (if any);
#   3. the peer for the producing side: kcat -P producing the same bodies
#      (one file = one message) to the same cluster, messages/s.
# Usage: bench/telemetry/kafka_export.sh   (env: SPANS_PER BODIES CONNS SECS; BUILD=dir)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/support/lib.sh"
SPANS_PER=${SPANS_PER:-100}
BODIES=${BODIES:-1000}
CONNS=${CONNS:-4}
SECS=${SECS:-10}
BUILD=${BUILD:-$ROOT/build/bench-tlkafka}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tl-kbench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

for t in wrk kcat; do command -v $t >/dev/null || { echo "$t is required (apt-get install $t)" >&2; exit 1; }; done
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target skiff-telemetry skiff-kafka-mock >/dev/null

mkfifo "$TMP/mock.in"
"$BUILD/bin/skiff-kafka-mock" --brokers 3 <"$TMP/mock.in" >"$TMP/mock.log" 2>&1 &
PIDS+=($!)
exec 7>"$TMP/mock.in"
wait_until 30 test -s "$TMP/mock.log" || { echo "mock cluster did not start" >&2; exit 1; }
BROKERS=$(head -1 "$TMP/mock.log")

T0=$(date +%s)
python3 "$ROOT/bench/telemetry/otlp_spans.py" "$TMP/spans" "$BODIES" "$SPANS_PER" "${T0}000000000"
BYTES=$(du -cb "$TMP"/spans/*.pb | tail -1 | cut -f1)
echo "$BODIES batches of $SPANS_PER spans, $((BYTES / BODIES)) bytes each; $CONNS connections, ${SECS}s per run"
echo "(figures from a shared, loaded machine: compare the rows of one run, not across runs)"

run() { # name with-kafka
  local otlp admin query
  otlp=$(free_port); admin=$(free_port); query=$(free_port)
  {
    echo "listen: 127.0.0.1:$otlp"
    echo "query_listen: 127.0.0.1:$query"
    echo "data_dir: $TMP/$1-data"
    echo "self_scrape: false"
    echo "no_sync: true"
    if [ "$2" = 1 ]; then
      echo "kafka: {brokers: \"$BROKERS\", topics: {traces: bench_spans}, max_queue_bytes: 1GiB}"
    fi
    echo "admin: {listen: 127.0.0.1:$admin}"
  } >"$TMP/$1.yaml"
  "$BUILD/bin/skiff-telemetry" --config "$TMP/$1.yaml" >"$TMP/$1.log" 2>&1 &
  local pid=$!
  PIDS+=($pid)
  wait_until 30 curl -fsS "http://127.0.0.1:$admin/readyz" || { echo "$1 not ready" >&2; tail "$TMP/$1.log" >&2; exit 1; }
  BODY_DIR="$TMP/spans" BODY_N=$BODIES wrk -t1 -c"$CONNS" -d"${SECS}s" \
    -s "$ROOT/bench/telemetry/otlp_spans.lua" "http://127.0.0.1:$otlp" >"$TMP/$1.wrk"
  local t_end
  t_end=$(date +%s.%N)
  awk -v per="$SPANS_PER" -v name="$1" '
    / requests in / { req = $1; secs = $(NF - 2); sub(/s,$/, "", secs) }
    /Non-2xx/ { bad = $NF }
    END { ok = req - bad; printf "%-22s %8d spans accepted in %.2fs: %8.0f spans/s (%d requests not 2xx)\n",
          name, ok * per, secs, ok * per / secs, bad }' "$TMP/$1.wrk"
  if [ "$2" = 1 ]; then
    local m="http://127.0.0.1:$admin/metrics"
    wait_until 120 sh -c "curl -fsS $m | grep -E '^skiff_telemetry_kafka_queue_bytes 0\$'" ||
      echo "  (export queue not drained after 120s)"
    local t_done
    t_done=$(date +%s.%N)
    curl -fsS "$m" | grep -E '^skiff_telemetry_(kafka_(sent|dropped)_total|accepted_total)\{signal="traces"' |
      grep -v ' 0$' | sed 's/^/  /'
    awk -v a="$t_end" -v b="$t_done" 'BEGIN { printf "  every exported message confirmed %.2fs after the load ended\n", b - a }'
  fi
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
}

run no_export 0
run kafka_export 1

# peer: kcat producing the same bodies, one message per file
S=$(date +%s.%N)
(cd "$TMP/spans" && kcat -P -b "$BROKERS" -t kcat_spans -X acks=all -X enable.idempotence=true ./*.pb)
E=$(date +%s.%N)
awk -v n="$BODIES" -v per="$SPANS_PER" -v s="$S" -v e="$E" 'BEGIN {
  printf "%-22s %8d spans (%d messages) produced in %.2fs: %8.0f spans/s\n", "kcat -P (peer)", n * per, n, e - s, n * per / (e - s) }'
