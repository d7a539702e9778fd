#!/usr/bin/env bash
# bench/trace/run.sh: hot-path cost of a span (runtime trace module) with 1
# and 2 recording threads sharing the exporter queue (bench/trace/spans.c).
# No peer binary in Debian records OTel spans from C; the comparison is
# 1 thread vs 2 (queue contention) and sampled vs unsampled.
# Usage: bench/trace/run.sh   Env: BUILD=build/release ROUNDS=100 PER=1000
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
ROUNDS=${ROUNDS:-100}
PER=${PER:-1000}
LIB=$BUILD/platform/runtime/libskiff_runtime.a
if [ ! -f "$LIB" ]; then
  (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build --preset release --target skiff_runtime >/dev/null)
fi
OUT=$(mktemp -d "${TMPDIR:-/tmp}/skiff-trace-bench.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -D_GNU_SOURCE -I"$ROOT/platform/runtime/include" "$ROOT/bench/trace/spans.c" "$LIB" \
  $(pkg-config --cflags --libs libuv openssl libnghttp2 jansson yaml-0.1 sqlite3 zlib) -lpthread -lm -o "$OUT/spans"
for t in 1 2; do "$OUT/spans" "$t" "$ROUNDS" "$PER"; done
