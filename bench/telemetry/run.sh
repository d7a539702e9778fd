#!/usr/bin/env bash
# bench/telemetry/run.sh: skiff-telemetry side by side with Prometheus
# (Debian's 2.42, --web.enable-remote-write-receiver), in the same run:
#   1. remote-write ingest: identical pre-encoded batches
#      (tests/support/remote_write.py bench: SERIES series x SAMPLES samples,
#      BATCH samples per request, CONNS keep-alive connections) sent to each
#      server in turn, samples/s from the first request to the last answer;
#      skiff-telemetry twice: durable (fsync per request, its default) and
#      with no_sync (Prometheus does not fsync per request either);
#   2. PromQL latency: the same queries over the same data, N runs each
#      (bench/telemetry/query_latency.py), p50/p90/mean; the data includes a
#      classic histogram of 10,000 series (hist_write.py) for rate, sum by
#      and histogram_quantile over 10,000 series;
#   3. RSS of both servers after ingest and after the queries;
#   4. OTLP span ingest (no peer: Prometheus takes no traces): wrk posts
#      pre-encoded ExportTraceServiceRequest batches (otlp_spans.py,
#      SPANS_PER spans each, distinct ids) over SPAN_CONNS keep-alive
#      connections for SPAN_SECS; spans/s = accepted spans / wall time, and
#      per core = accepted spans / CPU seconds skiff-telemetry used
#      (utime+stime from /proc/PID/stat).
# Usage: bench/telemetry/run.sh
#   (env: SERIES SAMPLES BATCH CONNS N SPANS_PER SPAN_BODIES SPAN_CONNS SPAN_SECS; BUILD=dir;
#    SPAN_ONLY=1 runs part 4 alone, without Prometheus)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
. "$ROOT/tests/support/lib.sh"
SERIES=${SERIES:-8000}
SAMPLES=${SAMPLES:-100}
BATCH=${BATCH:-2000}
CONNS=${CONNS:-4}
N=${N:-50}
SPANS_PER=${SPANS_PER:-100}
SPAN_BODIES=${SPAN_BODIES:-1000}
SPAN_CONNS=${SPAN_CONNS:-4}
SPAN_SECS=${SPAN_SECS:-10}
BUILD=${BUILD:-$ROOT/build/bench-telemetry}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tl-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKIFF_TESTS=OFF >/dev/null
cmake --build "$BUILD" --target skiff-telemetry >/dev/null
[ "${SPAN_ONLY:-0}" = 1 ] || command -v prometheus >/dev/null ||
  { echo "prometheus is required (apt-get install prometheus)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

T0=$(date +%s)
RW="python3 $ROOT/tests/support/remote_write.py bench --series $SERIES --samples $SAMPLES --batch $BATCH --conns $CONNS
  --t0-ms ${T0}000 --bodies $TMP/bodies.pickle"
QUERIES=(
  'bench_metric_3{instance="i42"}'
  'sum(rate(bench_metric_1[1m]))'
  'sum by (instance) (rate(bench_metric_2[1m]))'
  'topk(5, max_over_time(bench_metric_4[1m]))'
  'count({__name__=~"bench_metric_.*"})'
  'range:sum(rate(bench_metric_5[30s]))'
  'range:bench_metric_6{instance=~"i1.*"}'
  'rate(bench_hist_bucket[1m])'
  'sum by (le) (rate(bench_hist_bucket[1m]))'
  'histogram_quantile(0.99, sum by (le) (rate(bench_hist_bucket[5m])))'
)

start_skiff() { # name no_sync; sets URL and PID
  local q a
  q=$(free_port); a=$(free_port)
  cat >"$TMP/$1.yaml" <<EOF2
listen: 127.0.0.1:$(free_port)
query_listen: 127.0.0.1:$q
data_dir: $TMP/$1
self_scrape: false
no_sync: $2
admin:
  listen: 127.0.0.1:$a
EOF2
  "$BUILD/bin/skiff-telemetry" --config "$TMP/$1.yaml" >"$TMP/$1.log" 2>&1 &
  PID=$!
  PIDS+=($PID)
  wait_until 30 curl -fsS "http://127.0.0.1:$a/readyz" || { echo "skiff-telemetry did not start" >&2; exit 1; }
  URL="http://127.0.0.1:$q"
  INGEST=$(awk '/^listen:/ {print $2}' "$TMP/$1.yaml")
}
start_prom() { # sets URL and PID
  local p
  p=$(free_port)
  printf 'global:\n  scrape_interval: 1m\nscrape_configs: []\n' >"$TMP/prom.yml"
  prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/prom" --web.listen-address="127.0.0.1:$p" \
    --web.enable-remote-write-receiver >"$TMP/prom.log" 2>&1 &
  PID=$!
  PIDS+=($PID)
  wait_until 60 curl -fsS "http://127.0.0.1:$p/-/ready" || { echo "prometheus did not start" >&2; exit 1; }
  URL="http://127.0.0.1:$p"
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime (fields after "(comm)" hold no spaces here)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
if [ "${SPAN_ONLY:-0}" = 1 ]; then
  start_skiff skiff-nosync true; SKN_PID=$PID; SKN_INGEST=$INGEST
else
  echo "ingest: $SERIES series x $SAMPLES samples, $BATCH samples/request, $CONNS connections"
  start_prom; PROM=$URL; PROM_PID=$PID
  start_skiff skiff false; SK=$URL; SK_PID=$PID
  start_skiff skiff-nosync true; SKN=$URL; SKN_PID=$PID; SKN_INGEST=$INGEST

  printf '%-28s ' "prometheus:"; $RW "$PROM/api/v1/write"
  printf '%-28s ' "skiff-telemetry (durable):"; $RW "$SK/api/v1/write"
  printf '%-28s ' "skiff-telemetry (no_sync):"; $RW "$SKN/api/v1/write"
  echo "RSS after ingest: prometheus $(rss_kb "$PROM_PID") kB, skiff-telemetry $(rss_kb "$SK_PID") kB"
  python3 "$ROOT/bench/telemetry/hist_write.py" --t0-ms "${T0}000" "$PROM/api/v1/write" "$SK/api/v1/write"
  echo "RSS after histogram: prometheus $(rss_kb "$PROM_PID") kB, skiff-telemetry $(rss_kb "$SK_PID") kB"

  T_END=$T0
  echo "query latency, $N runs each, same data:"
  echo "-- prometheus"
  python3 "$ROOT/bench/telemetry/query_latency.py" "$PROM" "$N" "$T_END" "${QUERIES[@]}"
  echo "-- skiff-telemetry"
  python3 "$ROOT/bench/telemetry/query_latency.py" "$SK" "$N" "$T_END" "${QUERIES[@]}"
  echo "RSS after queries: prometheus $(rss_kb "$PROM_PID") kB, skiff-telemetry $(rss_kb "$SK_PID") kB"

fi

echo "OTLP span ingest (skiff-telemetry no_sync): $SPANS_PER spans/request, $SPAN_CONNS connections, ${SPAN_SECS}s"
python3 "$ROOT/bench/telemetry/otlp_spans.py" "$TMP/spans" "$SPAN_BODIES" "$SPANS_PER" "${T0}000000000"
C0=$(cpu_ticks "$SKN_PID")
BODY_DIR="$TMP/spans" BODY_N=$SPAN_BODIES wrk -t1 -c"$SPAN_CONNS" -d"${SPAN_SECS}s" \
  -s "$ROOT/bench/telemetry/otlp_spans.lua" "http://$SKN_INGEST" >"$TMP/wrk.out"
C1=$(cpu_ticks "$SKN_PID")
cat "$TMP/wrk.out"
awk -v per="$SPANS_PER" -v ticks=$((C1 - C0)) -v hz="$(getconf CLK_TCK)" '
  / requests in / { req = $1; secs = $(NF - 2); sub(/s,$/, "", secs) }
  /Non-2xx/ { bad = $NF }
  END {
    ok = req - bad; cpu = ticks / hz
    printf "spans accepted=%d in %.2fs: %.0f spans/s; skiff-telemetry CPU %.2fs: %.0f spans/s per core (%d requests not 2xx)\n",
      ok * per, secs, ok * per / secs, cpu, (cpu > 0 ? ok * per / cpu : 0), bad
  }' "$TMP/wrk.out"
