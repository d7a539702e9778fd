#!/usr/bin/env bash
# Same data, same questions: a real Prometheus (Debian's /usr/bin/prometheus,
# remote-write receiver on) and skiff-telemetry receive identical
# remote-write batches (tests/support/remote_write.py), then every query in
# tests/support/promql_compat.queries is asked of both with the real
# `promtool query instant|range` and the answers must be equal: label sets
# exactly, values within 1e-9 relative, timestamps exactly.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
SUP=$SKIFF_SRC_DIR/tests/support
with_pids tl-compat tl prom

for t in prometheus promtool python3; do
  command -v "$t" >/dev/null || fail "$t is required (apt-get install prometheus python3)"
done

OTLP=$(free_port); QUERY=$(free_port); ADMIN=$(free_port); PPORT=$(free_port)

cat >"$TMP/tl.yaml" <<EOF2
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/data
admin:
  listen: 127.0.0.1:$ADMIN
EOF2
"$BIN/skiff-telemetry" --config "$TMP/tl.yaml" >"$TMP/tl.log" 2>&1 &
PIDS+=($!)

cat >"$TMP/prom.yml" <<EOF2
global:
  scrape_interval: 1m
scrape_configs: []
EOF2
prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/prom" \
  --web.listen-address="127.0.0.1:$PPORT" --web.enable-remote-write-receiver >"$TMP/prom.log" 2>&1 &
PIDS+=($!)

wait_until 30 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "skiff-telemetry not ready"
wait_until 60 curl -fsS "http://127.0.0.1:$PPORT/-/ready" || fail "prometheus not ready"

# T0: a whole minute a little in the past, so both stores hold recent data
T0=$(( ($(date +%s) / 60) * 60 - 60 ))
python3 "$SUP/remote_write.py" dataset --t0-ms "${T0}000" \
  "http://127.0.0.1:$PPORT/api/v1/write" "http://127.0.0.1:$QUERY/api/v1/write" || fail "remote-write"

python3 "$SUP/promql_compat.py" "http://127.0.0.1:$PPORT" "http://127.0.0.1:$QUERY" "$T0" \
  "$SUP/promql_compat.queries" >"$TMP/compat.out" 2>&1 || { cat "$TMP/compat.out"; fail "answers differ"; }
cat "$TMP/compat.out"
echo "1 passed, 0 failed"
