#!/usr/bin/env bash
# skiff-telemetry durability: clients send spans (OTLP JSON), log lines (Loki
# push) and samples (OTLP JSON gauge) while the daemon is killed with
# SIGKILL; after a restart every acknowledged item must be there.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TEL=$BIN/skiff-telemetry
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tl-crash.XXXXXX")
PID=
WPID=

cleanup() {
  [ -n "$WPID" ] && kill "$WPID" 2>/dev/null || true
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff-telemetry log" >&2
  tail -50 "$TMP/tl.log" >&2 || true
  exit 1
}

OTLP=$(free_port); QUERY=$(free_port); ADMIN=$(free_port)
cat >"$TMP/tl.yaml" <<EOF2
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/data
self_scrape: false
admin:
  listen: 127.0.0.1:$ADMIN
EOF2

start() {
  "$TEL" --config "$TMP/tl.yaml" >>"$TMP/tl.log" 2>&1 &
  PID=$!
  wait_until 30 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "not ready"
}

start
NOW=$(date +%s)
# writer: one request per item kind per iteration; ids of acknowledged ones
writer() {
  local i=0
  while :; do
    i=$((i + 1))
    tid=$(printf '%032x' $((0xabc000 + i)))
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
      --data-binary "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"crash\"}}]},\"scopeSpans\":[{\"spans\":[{\"traceId\":\"$tid\",\"spanId\":\"00000000000000a1\",\"name\":\"s$i\",\"startTimeUnixNano\":\"${NOW}000000000\",\"endTimeUnixNano\":\"${NOW}000000001\"}]}]}]}" \
      "http://127.0.0.1:$OTLP/v1/traces" || true)
    [ "$code" = 200 ] && echo "$tid" >>"$TMP/acked_spans"
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
      --data-binary "{\"streams\":[{\"stream\":{\"app\":\"crash\"},\"values\":[[\"$(date +%s%N)\",\"line-$i\"]]}]}" \
      "http://127.0.0.1:$OTLP/loki/api/v1/push" || true)
    [ "$code" = 204 ] && echo "line-$i" >>"$TMP/acked_lines"
    ts=$(( (NOW - 600) * 1000 + i ))
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
      --data-binary "{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":[{\"name\":\"crash_metric\",\"gauge\":{\"dataPoints\":[{\"timeUnixNano\":\"${ts}000000\",\"asDouble\":$i}]}}]}]}]}" \
      "http://127.0.0.1:$OTLP/v1/metrics" || true)
    [ "$code" = 200 ] && echo "$i" >>"$TMP/acked_samples"
  done
}
: >"$TMP/acked_spans"; : >"$TMP/acked_lines"; : >"$TMP/acked_samples"
writer &
WPID=$!
# let some data flow, then kill -9 mid-stream
wait_until 30 sh -c "test \$(wc -l <'$TMP/acked_samples') -ge 20" || fail "writer made no progress"
kill -KILL "$PID"
wait "$PID" 2>/dev/null || true
PID=
sleep 0.3
kill "$WPID" 2>/dev/null || true
wait "$WPID" 2>/dev/null || true
WPID=
ns=$(wc -l <"$TMP/acked_spans"); nl=$(wc -l <"$TMP/acked_lines"); nm=$(wc -l <"$TMP/acked_samples")
echo "acknowledged before the kill: $ns spans, $nl lines, $nm samples"
[ "$ns" -gt 0 ] && [ "$nl" -gt 0 ] && [ "$nm" -gt 0 ] || fail "nothing acknowledged"

start
# spans
while read -r tid; do
  curl -fsS "http://127.0.0.1:$QUERY/api/traces/$tid" | has "\"traceId\":\"$tid\"" || fail "acknowledged span $tid lost"
done <"$TMP/acked_spans"
# log lines
curl -fsS -G --data-urlencode 'query={app="crash"}' --data-urlencode limit=5000 \
  --data-urlencode "start=$((NOW - 60))" --data-urlencode "end=$(( $(date +%s) + 60))" \
  "http://127.0.0.1:$QUERY/loki/api/v1/query_range" | jq -r '.data.result[].values[][1]' | sort >"$TMP/got_lines"
sort "$TMP/acked_lines" | comm -23 - "$TMP/got_lines" >"$TMP/lost_lines"
[ ! -s "$TMP/lost_lines" ] || fail "acknowledged log lines lost: $(head -5 "$TMP/lost_lines" | tr '\n' ' ')"
# samples: every acknowledged value is in the series
curl -fsS -G --data-urlencode 'query=crash_metric[30m]' --data-urlencode "time=$NOW" \
  "http://127.0.0.1:$QUERY/api/v1/query" | jq -r '.data.result[0].values[][1]' | sort >"$TMP/got_samples"
sort "$TMP/acked_samples" | comm -23 - "$TMP/got_samples" >"$TMP/lost_samples"
[ ! -s "$TMP/lost_samples" ] || fail "acknowledged samples lost: $(head -5 "$TMP/lost_samples" | tr '\n' ' ')"
echo "all acknowledged spans, lines and samples survived kill -9"
echo "1 passed, 0 failed"
