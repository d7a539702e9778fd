#!/usr/bin/env bash
# bench/bus/run.sh: the event bus's publish path side by side with kcat
# (librdkafka's own CLI producer) against the same skiff-kafka-mock cluster:
#   1. local log only: N events into the sqlite log (non-durable; and durable
#      = one fsync per event);
#   2. Kafka: N events published and confirmed by the brokers (idempotent,
#      acks=all), vs. kcat -P producing the same N payloads with the same
#      producer settings (its time includes start-up and the final flush).
# Usage: bench/bus/run.sh [N]   (BUILD=dir to reuse a release build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-20000}
BUILD=${BUILD:-$ROOT/build/bench-bus}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bus-bench.XXXXXX")
MOCK=
cleanup() {
  if [ -n "$MOCK" ]; then kill -TERM "$MOCK" 2>/dev/null || true; wait "$MOCK" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target skiff_runtime skiff-kafka-mock >/dev/null
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -D_GNU_SOURCE -o "$TMP/bench_bus" "$ROOT/bench/bus/bench_bus.c" \
  -I"$ROOT/platform/runtime/include" "$BUILD/platform/runtime/libskiff_runtime.a" \
  $(pkg-config --libs libuv openssl libnghttp2 jansson yaml-0.1 sqlite3 zlib rdkafka) -lpthread -lm

"$BUILD/bin/skiff-kafka-mock" --brokers 3 </dev/null >"$TMP/mock.out" &
MOCK=$!
for _ in $(seq 1 100); do [ -s "$TMP/mock.out" ] && break; sleep 0.1; done
BOOT=$(head -1 "$TMP/mock.out")

echo "== local log"
"$TMP/bench_bus" local "$TMP/local.db" "$N"
"$TMP/bench_bus" local "$TMP/durable.db" "$((N / 10))" durable
echo "== Kafka (skiff-kafka-mock, 3 brokers)"
"$TMP/bench_bus" kafka "$TMP/kafka.db" "$N" "$BOOT"
python3 - "$TMP/payloads" "$N" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"type":"MODIFIED","kind":"Route","namespace":"default","name":"web-%d","resourceVersion":%d,'
                '"object":{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"web-%d","namespace":'
                '"default"},"spec":{"rules":[{"backendRefs":[{"name":"echo","port":8081,"weight":%d}]}]}}}\n'
                % (i % 100, i + 1, i % 100, i % 100))
PY
T0=$(date +%s.%N)
kcat -P -b "$BOOT" -t peer.resource -X enable.idempotence=true -X acks=all -X linger.ms=5 -l "$TMP/payloads"
T1=$(date +%s.%N)
python3 -c "import sys; n=int(sys.argv[1]); dt=float(sys.argv[3])-float(sys.argv[2]); print('kcat -P: %d events in %.3f s = %.0f events/s' % (n, dt, n/dt))" "$N" "$T0" "$T1"
