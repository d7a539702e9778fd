#!/usr/bin/env bash
# OTLP forwarding between two skiff-telemetry instances, and the exporter's
# failure handling against a scripted endpoint:
#   A forwards everything to B: traces, metrics and logs sent to A (OTLP JSON,
#   gzip) are queryable on B (trace by id, PromQL, Loki). B is then killed,
#   more data goes to A, A retries, B comes back on the same port and data
#   dir, and the new data arrives (nothing acknowledged by A is lost).
#   A also forwards to a scripted sink: traces answered 429 Retry-After: 2
#   once (the retry waits at least that long, then succeeds), logs answered
#   503 always (dropped after max_retry_time, counted retries_exhausted),
#   metrics answered 400 (dropped at once, counted rejected); and to a dead
#   port with a 100-byte queue and a long batch delay: the first metrics
#   request (81 bytes) waits in it, the second does not fit (queue_full).
#   Over HTTPS: a target verified with the test CA gets the traces with the
#   bearer token from bearer_token_file; one that must be verified with
#   another CA never gets anything (the handshake fails, A retries).
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TEL=$BIN/skiff-telemetry
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tl-fwd.XXXXXX")
PIDS=()
B_PID=

cleanup() {
  for p in "${PIDS[@]}" $B_PID; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in a b sink; do echo "---- $f log" >&2; tail -30 "$TMP/$f.log" >&2 || true; done
  echo "---- A /metrics (forward)" >&2
  curl -fsS "http://127.0.0.1:$A_ADMIN/metrics" 2>/dev/null | grep forward >&2 || true
  exit 1
}

A_OTLP=$(free_port); A_QUERY=$(free_port); A_ADMIN=$(free_port)
B_OTLP=$(free_port); B_QUERY=$(free_port); B_ADMIN=$(free_port)
SINK=$(free_port); DEAD=$(free_port); TLSSINK=$(free_port)
CERTS=${SKIFF_TEST_CERTS:?SKIFF_TEST_CERTS not set}
printf 's3cret-token\n' >"$TMP/token"

cat >"$TMP/b.yaml" <<EOF2
listen: 127.0.0.1:$B_OTLP
query_listen: 127.0.0.1:$B_QUERY
data_dir: $TMP/b-data
self_scrape: false
admin:
  listen: 127.0.0.1:$B_ADMIN
EOF2
cat >"$TMP/a.yaml" <<EOF2
listen: 127.0.0.1:$A_OTLP
query_listen: 127.0.0.1:$A_QUERY
data_dir: $TMP/a-data
self_scrape: false
forward:
  - endpoint: http://127.0.0.1:$B_OTLP
    batch_delay: 200ms
    min_backoff: 100ms
    max_backoff: 500ms
    max_retry_time: 5m
  - endpoint: http://127.0.0.1:$SINK/
    batch_delay: 0s
    min_backoff: 100ms
    max_backoff: 200ms
    max_retry_time: 3s
  - endpoint: http://127.0.0.1:$DEAD
    signals: [metrics]
    max_queue_bytes: 100B
    batch_delay: 10m
  - endpoint: https://127.0.0.1:$TLSSINK/otlp
    signals: [traces]
    ca_file: $CERTS/ca.pem
    bearer_token_file: $TMP/token
    batch_delay: 0s
  - endpoint: https://127.0.0.1:$TLSSINK/untrusted
    signals: [traces]
    ca_file: $CERTS/rogue-ca.pem
    batch_delay: 0s
    min_backoff: 100ms
    max_backoff: 200ms
admin:
  listen: 127.0.0.1:$A_ADMIN
EOF2
"$TEL" --config "$TMP/a.yaml" --check | has "config ok" || fail "--check of the forward config"

# a bad forward config is refused with its position
printf 'forward:\n  - endpoint: https//nope\n    signals: [traces, spans]\n' >"$TMP/bad.yaml"
if "$TEL" --config "$TMP/bad.yaml" --check >"$TMP/bad.out" 2>&1; then fail "bad forward config accepted"; fi
has 'bad.yaml:2:.*endpoint' <"$TMP/bad.out" || fail "no endpoint error: $(cat "$TMP/bad.out")"
has 'bad.yaml:3:.*unknown signal "spans"' <"$TMP/bad.out" || fail "no signals error: $(cat "$TMP/bad.out")"

python3 "$SKIFF_SRC_DIR/tests/support/otlp_sink.py" "$SINK" "$TMP/sink.jsonl" \
  /v1/traces=429:2,200 /v1/logs=503 /v1/metrics=400 >"$TMP/sink.log" 2>&1 &
PIDS+=($!)
python3 "$SKIFF_SRC_DIR/tests/support/otlp_sink.py" --tls "$CERTS/server.pem" "$CERTS/server.key" "$TLSSINK" \
  "$TMP/tlssink.jsonl" >"$TMP/tlssink.log" 2>&1 &
PIDS+=($!)
start_b() {
  "$TEL" --config "$TMP/b.yaml" >>"$TMP/b.log" 2>&1 &
  B_PID=$!
  wait_until 30 curl -fsS "http://127.0.0.1:$B_ADMIN/readyz" || fail "B not ready"
}
start_b
"$TEL" --config "$TMP/a.yaml" >"$TMP/a.log" 2>&1 &
PIDS+=($!)
wait_until 30 curl -fsS "http://127.0.0.1:$A_ADMIN/readyz" || fail "A not ready"
wait_until 30 sh -c "ss -Hltn 'sport = :$SINK' | grep -q ." || fail "sink not listening"
wait_until 30 sh -c "ss -Hltn 'sport = :$TLSSINK' | grep -q ." || fail "TLS sink not listening"

NOW=$(date +%s)
send() { # path json
  printf '%s' "$2" | gzip -c >"$TMP/body.gz"
  curl -fsS -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -H 'content-encoding: gzip' \
    --data-binary @"$TMP/body.gz" "http://127.0.0.1:$A_OTLP$1" | has '^200$' || fail "A refused $1"
}
send_all() { # tag trace-id value
  send /v1/traces "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"fwd-$1\"}}]},\"scopeSpans\":[{\"spans\":[{\"traceId\":\"$2\",\"spanId\":\"00000000000000a1\",\"name\":\"op-$1\",\"kind\":2,\"startTimeUnixNano\":\"${NOW}000000000\",\"endTimeUnixNano\":\"${NOW}500000000\",\"attributes\":[{\"key\":\"k\",\"value\":{\"stringValue\":\"v-$1\"}}]}]}]}]}"
  send /v1/metrics "{\"resourceMetrics\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"fwd\"}}]},\"scopeMetrics\":[{\"metrics\":[{\"name\":\"fwd.jobs\",\"sum\":{\"aggregationTemporality\":2,\"isMonotonic\":true,\"dataPoints\":[{\"attributes\":[{\"key\":\"tag\",\"value\":{\"stringValue\":\"$1\"}}],\"timeUnixNano\":\"${NOW}000000000\",\"asInt\":\"$3\"}]}}]}]}]}"
  send /v1/logs "{\"resourceLogs\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"fwd-$1\"}}]},\"scopeLogs\":[{\"logRecords\":[{\"timeUnixNano\":\"${NOW}000000000\",\"severityText\":\"WARN\",\"body\":{\"stringValue\":\"forwarded line $1\"},\"traceId\":\"$2\"}]}]}]}"
}

T1=4bf92f3577b34da6a3ce929d0e0e4736
T2=4bf92f3577b34da6a3ce929d0e0e4737
send_all one $T1 11

# on B, through its query APIs
BQ=http://127.0.0.1:$B_QUERY
wait_until 30 curl -fsS "$BQ/api/traces/$T1" || fail "trace $T1 not forwarded to B"
curl -fsS "$BQ/api/traces/$T1" | jq -e '.resourceSpans[0].scopeSpans[0].spans[0] | .name == "op-one" and .attributes[0].value.stringValue == "v-one"' >/dev/null ||
  fail "forwarded span differs: $(curl -fsS "$BQ/api/traces/$T1")"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query=fwd_jobs_total{job=\"fwd\",tag=\"one\"}' $BQ/api/v1/query | jq -e '.data.result[0].value[1] == \"11\"'" ||
  fail "metric not forwarded to B"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query={service_name=\"fwd-one\",level=\"WARN\"}' $BQ/loki/api/v1/query_range | jq -e '.data.result[0].values[0][1] == \"forwarded line one\"'" ||
  fail "log line not forwarded to B"

# B goes away; A keeps acknowledging, retries, and delivers once B is back
kill -KILL "$B_PID"; wait "$B_PID" 2>/dev/null || true; B_PID=
send_all two $T2 22
AM=http://127.0.0.1:$A_ADMIN/metrics
wait_until 30 sh -c "curl -fsS $AM | grep -E '^skiff_telemetry_forward_retries_total\{endpoint=\"http://127.0.0.1:$B_OTLP\",signal=\"traces\"\} [1-9]'" ||
  fail "A did not retry while B was down"
start_b
wait_until 30 curl -fsS "$BQ/api/traces/$T2" || fail "trace $T2 not delivered after B came back"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query=fwd_jobs_total{tag=\"two\"}' $BQ/api/v1/query | jq -e '.data.result[0].value[1] == \"22\"'" ||
  fail "metric not delivered after B came back"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query={service_name=\"fwd-two\"}' $BQ/loki/api/v1/query_range | jq -e '.data.result | length == 1'" ||
  fail "log line not delivered after B came back"
curl -fsS "$BQ/api/traces/$T1" >/dev/null || fail "B lost $T1 across its restart"
curl -fsS "$AM" >"$TMP/am.txt"
has -E "^skiff_telemetry_forward_sent_total\{endpoint=\"http://127.0.0.1:$B_OTLP\",signal=\"traces\"\} [2-9]" <"$TMP/am.txt" ||
  fail "sent traces to B: $(grep forward_sent "$TMP/am.txt")"

# the scripted sink: 429 + Retry-After honoured, 503 until retries_exhausted, 400 rejected
wait_until 30 sh -c "[ \$(jq -s '[.[] | select(.path == \"/v1/traces\" and .status == 200)] | length' $TMP/sink.jsonl) -ge 1 ]" ||
  fail "sink never accepted traces after its 429"
jq -es '[.[] | select(.path == "/v1/traces")] | .[0].status == 429 and .[1].status == 200 and (.[1].t - .[0].t) >= 1.5
        and .[0].ctype == "application/x-protobuf"' "$TMP/sink.jsonl" >/dev/null ||
  fail "Retry-After: 2 not honoured: $(cat "$TMP/sink.jsonl")"
E_SINK="http://127.0.0.1:$SINK/"
wait_until 30 sh -c "curl -fsS $AM | grep -E '^skiff_telemetry_forward_dropped_total\{endpoint=\"$E_SINK\",signal=\"logs\",reason=\"retries_exhausted\"\} [1-9]'" ||
  fail "logs answered 503 were not dropped as retries_exhausted"
curl -fsS "$AM" >"$TMP/am.txt"
grep -E "^skiff_telemetry_forward_retries_total\{endpoint=\"$E_SINK\",signal=\"logs\"\} [1-9]" "$TMP/am.txt" >/dev/null ||
  fail "no retries of 503 logs"
grep -E "^skiff_telemetry_forward_dropped_total\{endpoint=\"$E_SINK\",signal=\"metrics\",reason=\"rejected\"\} [1-9]" "$TMP/am.txt" >/dev/null ||
  fail "metrics answered 400 not counted as rejected"
[ "$(jq -s '[.[] | select(.path == "/v1/metrics")] | length' "$TMP/sink.jsonl")" -ge 1 ] || fail "metrics never reached the sink"
grep -E "^skiff_telemetry_forward_dropped_total\{endpoint=\"http://127.0.0.1:$DEAD\",signal=\"metrics\",reason=\"queue_full\"\} [1-9]" "$TMP/am.txt" >/dev/null ||
  fail "the 100-byte queue did not drop: $(grep forward "$TMP/am.txt")"
# HTTPS: verified against the test CA, with the bearer token; never with the wrong CA
wait_until 30 sh -c "[ \$(jq -s '[.[] | select(.path == \"/otlp/v1/traces\")] | length' $TMP/tlssink.jsonl) -ge 2 ]" ||
  fail "traces not forwarded over HTTPS: $(cat "$TMP/tlssink.jsonl" 2>/dev/null)"
jq -es '[.[] | select(.path == "/otlp/v1/traces")] | all(.auth == "Bearer s3cret-token" and .ctype == "application/x-protobuf")' \
  "$TMP/tlssink.jsonl" >/dev/null || fail "HTTPS forward without the bearer token: $(cat "$TMP/tlssink.jsonl")"
jq -es '[.[] | select(.path | startswith("/untrusted"))] | length == 0' "$TMP/tlssink.jsonl" >/dev/null ||
  fail "a target with an untrusted certificate received data"
E_BAD="https://127.0.0.1:$TLSSINK/untrusted"
wait_until 30 sh -c "curl -fsS $AM | grep -E '^skiff_telemetry_forward_retries_total\{endpoint=\"$E_BAD\",signal=\"traces\"\} [1-9]'" ||
  fail "no retries against the untrusted target"
curl -fsS "$AM" | has -E "^skiff_telemetry_forward_sent_total\{endpoint=\"$E_BAD\",signal=\"traces\"\} 0\$" ||
  fail "the untrusted target counted as sent"
if grep -q s3cret-token "$TMP/a.log"; then fail "the bearer token is in the log"; fi

# A still serves its own copy of everything
curl -fsS "http://127.0.0.1:$A_QUERY/api/traces/$T2" >/dev/null || fail "A lost $T2"
echo "1 passed, 0 failed"
