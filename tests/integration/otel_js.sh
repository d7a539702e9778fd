#!/usr/bin/env bash
# The real OpenTelemetry JS SDK (pinned in tests/support/otel_js/package.json
# and package-lock.json, installed with `npm ci` into <build dir>/otel-js,
# reused across runs) sends
# spans, metrics and logs to skiff-telemetry's OTLP/HTTP port, in protobuf
# (service js-proto) and in JSON (service js-json). The test reads them back
# through Skiff's query APIs: trace by ID, PromQL on the converted metric
# names, Loki query_range and the trace's correlated logs.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
SRC=$SKIFF_SRC_DIR/tests/support/otel_js
CACHE=${SKIFF_OTEL_JS_CACHE:-$(cd "$BIN/.." && pwd)/otel-js}
with_pids otel-js tl

command -v node >/dev/null || fail "node is required (Node.js >= 18)"
command -v npm >/dev/null || fail "npm is required"

# Install the pinned SDK once per build dir (under a lock: parallel runs share it).
mkdir -p "$CACHE"
(
  flock -w 600 9 || exit 1
  if ! cmp -s "$SRC/package.json" "$CACHE/package.json" || ! cmp -s "$SRC/package-lock.json" "$CACHE/package-lock.json" ||
    [ ! -f "$CACHE/node_modules/.skiff-installed" ]; then
    rm -rf "$CACHE/node_modules"
    cp "$SRC/package.json" "$SRC/package-lock.json" "$CACHE/"
    # npm ci: exactly the versions (and integrity hashes) of the lock file, transitive ones included
    (cd "$CACHE" && npm ci --no-audit --no-fund --loglevel=error >"$CACHE/npm.log" 2>&1) || { cat "$CACHE/npm.log" >&2; exit 1; }
    touch "$CACHE/node_modules/.skiff-installed"
  fi
) 9>"$CACHE/.lock" || fail "npm install of the OpenTelemetry JS SDK into $CACHE failed"

OTLP=$(free_port); QUERY=$(free_port); ADMIN=$(free_port)
cat >"$TMP/tl.yaml" <<EOF2
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/data
admin:
  listen: 127.0.0.1:$ADMIN
EOF2
"$BIN/skiff-telemetry" --config "$TMP/tl.yaml" >"$TMP/tl.log" 2>&1 &
PIDS+=($!)
wait_until 30 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "skiff-telemetry not ready"

NODE_PATH="$CACHE/node_modules" node "$SRC/send.js" "http://127.0.0.1:$OTLP" >"$TMP/ids.json" 2>"$TMP/node.err" ||
  { cat "$TMP/node.err" >&2; fail "the SDK script failed"; }
# the SDK's diagnostic logger (WARN and up) reports failed exports on stderr
if grep -qiE 'error|fail' "$TMP/node.err"; then cat "$TMP/node.err" >&2; fail "the SDK reported export errors"; fi
echo "sent: $(cat "$TMP/ids.json")"

Q=http://127.0.0.1:$QUERY
promq() { curl -fsS -G --data-urlencode "query=$1" "$Q/api/v1/query"; }

for svc in js-proto js-json; do
  tid=$(jq -r --arg s "$svc" '.[$s].traceId' "$TMP/ids.json")
  pid=$(jq -r --arg s "$svc" '.[$s].parentSpanId' "$TMP/ids.json")
  cid=$(jq -r --arg s "$svc" '.[$s].childSpanId' "$TMP/ids.json")
  [ ${#tid} = 32 ] || fail "$svc: no trace id from the SDK"

  # trace by ID: both spans, parent/child, attributes, event, status
  curl -fsS "$Q/api/traces/$tid" >"$TMP/trace.json" || fail "$svc: trace $tid not found"
  spans='[.resourceSpans[].scopeSpans[].spans[]]'
  jq -e "$spans | length == 2" "$TMP/trace.json" >/dev/null || fail "$svc: want 2 spans: $(cat "$TMP/trace.json")"
  jq -e --arg s "$svc" '.resourceSpans[0].resource.attributes[] | select(.key == "service.name") | .value.stringValue == $s' \
    "$TMP/trace.json" >/dev/null || fail "$svc: service.name"
  jq -e --arg p "$pid" --arg c "$cid" "$spans"' | map(select(.spanId == $c and .parentSpanId == $p and .name == "charge card")) | length == 1' \
    "$TMP/trace.json" >/dev/null || fail "$svc: child span not linked to its parent: $(cat "$TMP/trace.json")"
  jq -e --arg p "$pid" "$spans"' | map(select(.spanId == $p))[0] | .name == "GET /checkout" and (.kind == 2 or .kind == "SPAN_KIND_SERVER")
      and (.attributes[] | select(.key == "http.status_code") | (.value.intValue | tostring) == "200")
      and (.attributes[] | select(.key == "cart.gift") | .value.boolValue == true)' \
    "$TMP/trace.json" >/dev/null || fail "$svc: parent span name/kind/attributes: $(cat "$TMP/trace.json")"
  jq -e --arg c "$cid" "$spans"' | map(select(.spanId == $c))[0] | (.status.code == 2 or .status.code == "STATUS_CODE_ERROR")
      and .status.message == "card declined" and .events[0].name == "retrying"
      and (.attributes[] | select(.key == "payment.amount") | .value.doubleValue == 12.5)' \
    "$TMP/trace.json" >/dev/null || fail "$svc: child span status/event/attributes: $(cat "$TMP/trace.json")"
  curl -fsS "$Q/api/search?service=$svc&status=error" | jq -e --arg t "$tid" '[.traces[] | select(.traceID == $t)] | length == 1' >/dev/null ||
    fail "$svc: trace search by service and error status"

  # metrics: PromQL on the converted names (counter -> _total, histogram -> _bucket/_sum/_count, gauge)
  promq "sum by (region) (orders_placed_total{job=\"$svc\",instance=\"$svc-1\"})" >"$TMP/m.json"
  jq -e '[.data.result[] | {(.metric.region): .value[1]}] | add == {"eu": "7", "us": "5"}' "$TMP/m.json" >/dev/null ||
    fail "$svc: orders_placed_total: $(cat "$TMP/m.json")"
  promq "checkout_latency_count{job=\"$svc\",route=\"/checkout\"}" | jq -e '.data.result[0].value[1] == "8"' >/dev/null ||
    fail "$svc: checkout_latency_count"
  promq "checkout_latency_sum{job=\"$svc\"}" | jq -e '.data.result[0].value[1] == "1095"' >/dev/null || fail "$svc: checkout_latency_sum"
  promq "checkout_latency_bucket{job=\"$svc\",le=\"100\"}" | jq -e '.data.result[0].value[1] == "6"' >/dev/null ||
    fail "$svc: checkout_latency_bucket{le=100}: $(promq "checkout_latency_bucket{job=\"$svc\"}")"
  promq "checkout_latency_bucket{job=\"$svc\",le=\"+Inf\"}" | jq -e '.data.result[0].value[1] == "8"' >/dev/null ||
    fail "$svc: checkout_latency_bucket{le=+Inf}"
  # 0.5 * 8 = the 4th observation: bucket (50, 100] holds 3..6, linear inside it: 50 + 50 * (4-3)/3
  promq "histogram_quantile(0.5, checkout_latency_bucket{job=\"$svc\"})" |
    jq -e '.data.result[0].value[1] | tonumber | . > 66.66 and . < 66.67' >/dev/null || fail "$svc: histogram_quantile"
  promq "queue_size{job=\"$svc\",queue=\"orders\"}" | jq -e '.data.result[0].value[1] == "17"' >/dev/null || fail "$svc: queue_size gauge"

  # logs: Loki query_range by the resource's labels, level, line filter; correlation with the trace
  curl -fsS -G --data-urlencode "query={service_name=\"$svc\"}" "$Q/loki/api/v1/query_range" >"$TMP/l.json"
  jq -e '[.data.result[].values[]] | length == 2' "$TMP/l.json" >/dev/null || fail "$svc: want 2 log lines: $(cat "$TMP/l.json")"
  curl -fsS -G --data-urlencode "query={service_name=\"$svc\",level=\"ERROR\"} |= \"order 42\"" "$Q/loki/api/v1/query_range" |
    jq -e --arg s "$svc" '[.data.result[].values[][1]] == ["payment failed for order 42 via " + $s]' >/dev/null ||
    fail "$svc: Loki level + line filter"
  curl -fsS "$Q/api/traces/$tid/logs" | has "payment failed for order 42" || fail "$svc: log line not correlated with trace $tid"
done

# nothing was refused
curl -fsS "http://127.0.0.1:$ADMIN/metrics" >"$TMP/self.txt"
if grep -E '^skiff_telemetry_rejected_total\{[^}]*\} [1-9]' "$TMP/self.txt"; then fail "items rejected"; fi
echo "1 passed, 0 failed"
