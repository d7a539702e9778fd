#!/usr/bin/env bash
# skiff-telemetry's export to Kafka, against librdkafka's mock cluster
# (skiff-kafka-mock) and consumed with kcat:
#   - a bad kafka config is refused with file:line:col (topic name, property);
#   - A exports to otlp_spans / otlp_metrics / otlp_logs: a protobuf traces
#     request comes out byte-identical; JSON metrics and logs come out
#     re-encoded as protobuf, and B (a second instance) accepts those bytes
#     as OTLP protobuf and serves them (the payload decodes);
#   - brokers down (SIGUSR1): A keeps acknowledging, queues up to its
#     max_queue_bytes and drops (queue_full) past it; brokers up (SIGUSR2):
#     what was queued is delivered; A still has everything locally;
#   - C, with max_retry_time 1s, drops what it could not deliver during the
#     outage (delivery_failed) and counts it.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TEL=$BIN/skiff-telemetry
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tl-kafka.XXXXXX")
PIDS=()
MOCK_PID=

cleanup() {
  for p in "${PIDS[@]}" $MOCK_PID; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in mock a b c; do echo "---- $f log" >&2; tail -30 "$TMP/$f.log" >&2 || true; done
  echo "---- A /metrics (kafka)" >&2
  curl -fsS "http://127.0.0.1:$A_ADMIN/metrics" 2>/dev/null | grep kafka >&2 || true
  exit 1
}

command -v kcat >/dev/null || fail "kcat is not installed"

# ---- bad configs: position and reason
printf 'kafka:\n  brokers: 127.0.0.1:1\n  topics:\n    traces: "bad topic"\n' >"$TMP/bad1.yaml"
if "$TEL" --config "$TMP/bad1.yaml" --check >"$TMP/bad1.out" 2>&1; then fail "bad topic accepted"; fi
has 'bad1.yaml:4:[0-9]*:.*traces.*bad topic name' <"$TMP/bad1.out" || fail "no topic error: $(cat "$TMP/bad1.out")"
printf 'kafka:\n  brokers: 127.0.0.1:1\n  properties:\n    - linger.ms=5\n    - acks=1\n' >"$TMP/bad2.yaml"
if "$TEL" --config "$TMP/bad2.yaml" --check >"$TMP/bad2.out" 2>&1; then fail "acks=1 accepted"; fi
has 'bad2.yaml:[0-9]*:[0-9]*:.*properties.*acks.*idempotent' <"$TMP/bad2.out" ||
  fail "no acks error: $(cat "$TMP/bad2.out")"
printf 'kafka:\n  brokers: 127.0.0.1:1\n  properties: [no.such.property=1]\n' >"$TMP/bad3.yaml"
if "$TEL" --config "$TMP/bad3.yaml" --check >"$TMP/bad3.out" 2>&1; then fail "unknown property accepted"; fi
has 'bad3.yaml:3:[0-9]*:.*no.such.property' <"$TMP/bad3.out" || fail "no property error: $(cat "$TMP/bad3.out")"

# ---- the mock cluster
mkfifo "$TMP/mock.in"
"$BIN/skiff-kafka-mock" --brokers 1 <"$TMP/mock.in" >"$TMP/mock.log" 2>&1 &
MOCK_PID=$!
exec 7>"$TMP/mock.in" # keeps the mock's stdin open
wait_until 30 test -s "$TMP/mock.log" || fail "the mock printed no bootstrap servers"
BROKERS=$(head -1 "$TMP/mock.log")
case $BROKERS in *:*) ;; *) fail "bad bootstrap line: $BROKERS" ;; esac

A_OTLP=$(free_port); A_QUERY=$(free_port); A_ADMIN=$(free_port)
B_OTLP=$(free_port); B_QUERY=$(free_port); B_ADMIN=$(free_port)
C_OTLP=$(free_port); C_QUERY=$(free_port); C_ADMIN=$(free_port)
cat >"$TMP/a.yaml" <<EOF2
listen: 127.0.0.1:$A_OTLP
query_listen: 127.0.0.1:$A_QUERY
data_dir: $TMP/a-data
self_scrape: false
kafka:
  brokers: $BROKERS
  topics: {traces: otlp_spans, metrics: otlp_metrics, logs: otlp_logs}
  properties: [linger.ms=1, retry.backoff.ms=50]
  max_queue_bytes: 4KiB
admin:
  listen: 127.0.0.1:$A_ADMIN
EOF2
cat >"$TMP/b.yaml" <<EOF2
listen: 127.0.0.1:$B_OTLP
query_listen: 127.0.0.1:$B_QUERY
data_dir: $TMP/b-data
self_scrape: false
admin:
  listen: 127.0.0.1:$B_ADMIN
EOF2
cat >"$TMP/c.yaml" <<EOF2
listen: 127.0.0.1:$C_OTLP
query_listen: 127.0.0.1:$C_QUERY
data_dir: $TMP/c-data
self_scrape: false
kafka:
  brokers: $BROKERS
  topics: {traces: c_spans, metrics: "", logs: ""}
  max_retry_time: 1s
  properties: [message.max.bytes=1000]
admin:
  listen: 127.0.0.1:$C_ADMIN
EOF2
"$TEL" --config "$TMP/a.yaml" --check | has "config ok" || fail "--check of the kafka config"
for n in a b c; do
  "$TEL" --config "$TMP/$n.yaml" >"$TMP/$n.log" 2>&1 &
  PIDS+=($!)
done
for p in $A_ADMIN $B_ADMIN $C_ADMIN; do
  wait_until 30 curl -fsS "http://127.0.0.1:$p/readyz" || fail "telemetry on admin port $p not ready"
done

# ---- an OTLP protobuf traces request: service kafka-<tag>, span op-<tag>
NOW=$(date +%s)
traces_pb() { # out tag trace-id-hex
  python3 - "$@" "$NOW" <<'PY'
import struct, sys
out, tag, tid, now = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4])
def varint(n):
    b = bytearray()
    while True:
        c = n & 0x7F; n >>= 7
        b.append(c | (0x80 if n else 0))
        if not n: return bytes(b)
def ld(num, data): return varint(num << 3 | 2) + varint(len(data)) + data
def s(num, text): return ld(num, text.encode())
kv = s(1, "service.name") + ld(2, s(1, "kafka-" + tag))
span = (ld(1, tid) + ld(2, bytes.fromhex("00000000000000b1")) + s(5, "op-" + tag) + varint(6 << 3) + varint(2)
        + varint(7 << 3 | 1) + struct.pack("<Q", now * 10**9) + varint(8 << 3 | 1) + struct.pack("<Q", now * 10**9 + 5 * 10**8))
req = ld(1, ld(1, ld(1, kv)) + ld(2, ld(2, span)))
open(out, "wb").write(req)
PY
}
post() { # port path ctype file
  curl -sS -o /dev/null -w '%{http_code}' -H "content-type: $3" --data-binary @"$4" "http://127.0.0.1:$1$2"
}
consume() { # topic count out-dir: one file per message
  rm -rf "$3"; mkdir -p "$3"
  timeout 30 kcat -C -b "$BROKERS" -t "$1" -o beginning -c "$2" -e -q -f '%S %s' >"$3/all" 2>"$3/err" || true
  python3 - "$3" <<'PY'
import sys
d = sys.argv[1]
b = open(d + "/all", "rb").read()
i = n = 0
while i < len(b):
    sp = b.index(b" ", i)
    size = int(b[i:sp]); i = sp + 1
    open("%s/%d" % (d, n), "wb").write(b[i:i + size]); i += size; n += 1
print(n)
PY
}

T1=5bf92f3577b34da6a3ce929d0e0e4736
traces_pb "$TMP/t1.pb" one $T1
[ "$(post "$A_OTLP" /v1/traces application/x-protobuf "$TMP/t1.pb")" = 200 ] || fail "A refused protobuf traces"
cat >"$TMP/m1.json" <<EOF2
{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"kafka-one"}}]},"scopeMetrics":[{"metrics":[{"name":"kafka.jobs","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"attributes":[{"key":"tag","value":{"stringValue":"one"}}],"timeUnixNano":"${NOW}000000000","asInt":"11"}]}}]}]}]}
EOF2
cat >"$TMP/l1.json" <<EOF2
{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"kafka-one"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"${NOW}000000000","severityText":"WARN","body":{"stringValue":"exported line one"},"traceId":"$T1"}]}]}]}
EOF2
[ "$(post "$A_OTLP" /v1/metrics application/json "$TMP/m1.json")" = 200 ] || fail "A refused JSON metrics"
[ "$(post "$A_OTLP" /v1/logs application/json "$TMP/l1.json")" = 200 ] || fail "A refused JSON logs"

AM=http://127.0.0.1:$A_ADMIN/metrics
wait_until 30 sh -c "curl -fsS $AM | grep -E '^skiff_telemetry_kafka_sent_total\{signal=\"logs\"\} 1\$'" ||
  fail "A did not confirm the logs message"
[ "$(consume otlp_spans 1 "$TMP/k1")" = 1 ] || fail "no message on otlp_spans: $(cat "$TMP/k1/err")"
cmp "$TMP/k1/0" "$TMP/t1.pb" || fail "the otlp_spans message differs from the request sent"
[ "$(consume otlp_metrics 1 "$TMP/km")" = 1 ] || fail "no message on otlp_metrics: $(cat "$TMP/km/err")"
[ "$(consume otlp_logs 1 "$TMP/kl")" = 1 ] || fail "no message on otlp_logs: $(cat "$TMP/kl/err")"
# the payloads are OTLP protobuf: B takes them as such and serves their content
[ "$(post "$B_OTLP" /v1/metrics application/x-protobuf "$TMP/km/0")" = 200 ] || fail "B refused the metrics message"
[ "$(post "$B_OTLP" /v1/logs application/x-protobuf "$TMP/kl/0")" = 200 ] || fail "B refused the logs message"
BQ=http://127.0.0.1:$B_QUERY
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query=kafka_jobs_total{job=\"kafka-one\",tag=\"one\"}' $BQ/api/v1/query | jq -e '.data.result[0].value[1] == \"11\"'" ||
  fail "the metrics message did not decode to the sample sent"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query={service_name=\"kafka-one\",level=\"WARN\"}' $BQ/loki/api/v1/query_range | jq -e '.data.result[0].values[0][1] == \"exported line one\"'" ||
  fail "the logs message did not decode to the line sent"
curl -fsS "$AM" | has -E '^skiff_telemetry_kafka_sent_total\{signal="traces"\} 1$' || fail "traces sent != 1"
curl -fsS "$AM" | has -E '^skiff_telemetry_kafka_sent_total\{signal="metrics"\} 1$' || fail "metrics sent != 1"

# ---- C: a message over message.max.bytes is dropped (too_large), the others go
traces_pb "$TMP/big.pb" "big-$(head -c 1200 /dev/zero | tr '\0' x)" 5bf92f3577b34da6a3ce929d0e0e4740
[ "$(post "$C_OTLP" /v1/traces application/x-protobuf "$TMP/big.pb")" = 200 ] || fail "C refused a large request"
[ "$(post "$C_OTLP" /v1/traces application/x-protobuf "$TMP/t1.pb")" = 200 ] || fail "C refused traces"
CM=http://127.0.0.1:$C_ADMIN/metrics
wait_until 30 sh -c "curl -fsS $CM | grep -E '^skiff_telemetry_kafka_sent_total\{signal=\"traces\"\} 1\$'" ||
  fail "C did not export the small request"
curl -fsS "$CM" | has -E '^skiff_telemetry_kafka_dropped_total\{signal="traces",reason="too_large"\} 1$' ||
  fail "C did not count the large request as too_large"
[ "$(consume c_spans 1 "$TMP/kc")" = 1 ] && cmp "$TMP/kc/0" "$TMP/t1.pb" || fail "c_spans does not hold the small request"

# ---- outage: A acknowledges, queues up to 4KiB, drops past it; C drops after 1s
kill -USR1 "$MOCK_PID"
wait_until 30 grep -q "brokers down" "$TMP/mock.log" || fail "the mock did not take its brokers down"
T2=5bf92f3577b34da6a3ce929d0e0e4737
traces_pb "$TMP/t2.pb" two $T2
SZ=$(stat -c %s "$TMP/t2.pb")
FIT=$((4096 / SZ)) # messages that fit in A's queue
SENT=$((FIT + 3))
for i in $(seq 1 $SENT); do
  [ "$(post "$A_OTLP" /v1/traces application/x-protobuf "$TMP/t2.pb")" = 200 ] || fail "A refused traces during the outage"
done
[ "$(post "$C_OTLP" /v1/traces application/x-protobuf "$TMP/t2.pb")" = 200 ] || fail "C refused traces during the outage"
curl -fsS "$AM" >"$TMP/am.txt"
has -E "^skiff_telemetry_kafka_dropped_total\{signal=\"traces\",reason=\"queue_full\"\} 3\$" <"$TMP/am.txt" ||
  fail "expected 3 traces dropped as queue_full: $(grep kafka "$TMP/am.txt")"
has -E "^skiff_telemetry_kafka_queue_bytes $((FIT * SZ))\$" <"$TMP/am.txt" ||
  fail "queue bytes != $((FIT * SZ)): $(grep kafka_queue "$TMP/am.txt")"
wait_until 30 sh -c "curl -fsS $CM | grep -E '^skiff_telemetry_kafka_dropped_total\{signal=\"traces\",reason=\"delivery_failed\"\} 1\$'" ||
  fail "C did not drop its undeliverable message after max_retry_time"
curl -fsS "$CM" | has -E '^skiff_telemetry_kafka_failed_total\{signal="traces"\} 1$' || fail "C failed != 1"
# the local store has the trace regardless
curl -fsS "http://127.0.0.1:$C_QUERY/api/traces/$T2" | has '"op-two"' || fail "C lost the trace it could not export"

kill -USR2 "$MOCK_PID"
wait_until 30 grep -q "brokers up" "$TMP/mock.log" || fail "the mock did not bring its brokers up"
wait_until 60 sh -c "curl -fsS $AM | grep -E '^skiff_telemetry_kafka_sent_total\{signal=\"traces\"\} $((1 + FIT))\$'" ||
  fail "the queued traces were not delivered after the outage"
curl -fsS "$AM" | has -E '^skiff_telemetry_kafka_queue_bytes 0$' || fail "queue not empty after delivery"
[ "$(consume otlp_spans $((1 + FIT)) "$TMP/k2")" = $((1 + FIT)) ] || fail "otlp_spans does not hold $((1 + FIT)) messages"
N1=0; N2=0 # the topic has several partitions: order across them is not kept
for f in "$TMP"/k2/[0-9]*; do
  if cmp -s "$f" "$TMP/t1.pb"; then N1=$((N1 + 1)); elif cmp -s "$f" "$TMP/t2.pb"; then N2=$((N2 + 1)); else fail "unexpected message $f"; fi
done
[ "$N1" = 1 ] && [ "$N2" = "$FIT" ] || fail "otlp_spans holds $N1 + $N2 messages, want 1 + $FIT"
curl -fsS "http://127.0.0.1:$A_QUERY/api/traces/$T2" | has '"op-two"' || fail "A lost $T2"

# graceful stop: flushes and exits 0
kill -TERM "${PIDS[0]}"
wait "${PIDS[0]}" || fail "A did not exit cleanly"
echo "1 passed, 0 failed"
