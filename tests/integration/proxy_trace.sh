#!/usr/bin/env bash
# skiff-proxy's OTLP span export into a real skiff-telemetry, with skiff-echo
# upstreams, driven by curl and read back through telemetry's trace-by-ID
# API: the proxy's SERVER span continues the caller's traceparent, its
# CLIENT span is the server span's child and is the parent the upstream
# saw; a retried request has two CLIENT spans (the failed one with its skiff
# reason); a proxy sampling 0 exports nothing for root requests; with
# telemetry gone the proxy keeps serving and counts dropped spans. Every wait
# is bounded; no timing is asserted.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-proxy-trace.XXXXXX")
PIDS=""
TL_PID=

cleanup() {
  for p in $PIDS $TL_PID; do
    if kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do
    echo "---- $f (tail)" >&2
    tail -n 30 "$f" >&2 || true
  done
  exit 1
}

command -v jq >/dev/null || fail "jq is required"

# ---- skiff-telemetry (the OTLP receiver and trace query API) ----
OTLP=$(free_port); QUERY=$(free_port); TLADMIN=$(free_port)
cat >"$TMP/telemetry.yaml" <<EOF
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/tl-data
admin: {listen: 127.0.0.1:$TLADMIN}
EOF
"$BIN/skiff-telemetry" --config "$TMP/telemetry.yaml" >"$TMP/telemetry.log" 2>&1 &
TL_PID=$!
wait_until 20 curl -fsS "http://127.0.0.1:$TLADMIN/readyz" || fail "telemetry never ready"

# ---- upstreams ----
ECHO_PORT=$(free_port); ECHO_ADMIN=$(free_port); DEAD=$(free_port)
printf 'listen: 127.0.0.1:%s\nversion: v1\nadmin: {listen: 127.0.0.1:%s}\n' "$ECHO_PORT" "$ECHO_ADMIN" >"$TMP/echo.yaml"
"$BIN/skiff-echo" --config "$TMP/echo.yaml" >"$TMP/echo.log" 2>&1 &
PIDS="$PIDS $!"
wait_until 20 curl -fsS "http://127.0.0.1:$ECHO_ADMIN/readyz" || fail "echo never ready"

# ---- two proxies: A samples everything, B samples no root request ----
start_proxy() { # NAME RATIO -> <NAME>_PORT, <NAME>_ADMIN
  local port admin
  port=$(free_port); admin=$(free_port)
  cat >"$TMP/proxy-$1.yaml" <<EOF
workers: 2
admin: {listen: 127.0.0.1:$admin}
access_log: {path: $TMP/access-$1.log}
listeners: [{name: main, address: "127.0.0.1:$port"}]
tracing:
  otlp_endpoint: http://127.0.0.1:$OTLP
  sample_ratio: $2
  service_name: proxy-$1
  flush_interval: 100ms
clusters:
  - {name: web, endpoints: ["127.0.0.1:$ECHO_PORT"]}
  - {name: dead, endpoints: ["127.0.0.1:$DEAD"]}
routes:
  - {name: retry, match: {path: {prefix: /retry}}, rewrite: {path: /}, cluster: dead,
     retry: {attempts: 2, retry_on: [connect-failure], backoff: {base: 1ms, max: 2ms}}}
  - {name: web, match: {path: {prefix: /}}, rewrite: {path: /}, cluster: web}
EOF
  "$BIN/skiff-proxy" --config "$TMP/proxy-$1.yaml" >"$TMP/proxy-$1.log" 2>&1 &
  PIDS="$PIDS $!"
  eval "$1_PORT=$port; $1_ADMIN=$admin; $1_PID=$!"
  wait_until 20 curl -fsS "http://127.0.0.1:$admin/readyz" || fail "proxy $1 never ready"
}
start_proxy a 1
start_proxy b 0

# --check refuses a bad tracing section with file:line:col
cat >"$TMP/bad.yaml" <<EOF
listeners: [{name: main, address: "127.0.0.1:1"}]
tracing:
  otlp_endpoint: ftp://nope
  sample_ratio: 2
  colour: blue
EOF
out=$("$BIN/skiff-proxy" --config "$TMP/bad.yaml" --check 2>&1) && fail "bad tracing config accepted"
echo "$out" | has -E "bad.yaml.*4:[0-9]+: tracing.sample_ratio" || fail "no position for sample_ratio: $out"
echo "$out" | has "tracing.colour: unknown key" || fail "unknown key not reported: $out"
echo "$out" | has "tracing.otlp_endpoint" || fail "bad endpoint not reported: $out"

trace_json() { # TRACE_ID -> the trace (OTLP JSON) once telemetry has >= N spans of it
  curl -fsS "http://127.0.0.1:$QUERY/api/traces/$1"
}
spans_of() { # TRACE_ID -> one span per line, flattened
  trace_json "$1" | jq -c '[.resourceSpans[] | .resource as $r | .scopeSpans[].spans[] |
      . + {service: ($r.attributes[] | select(.key=="service.name") | .value.stringValue),
           attrs: ([.attributes[]? | {(.key): (.value.stringValue // .value.intValue)}] | add)}] | .[]'
}
have_spans() { # TRACE_ID N
  [ "$(spans_of "$1" 2>/dev/null | wc -l)" -ge "$2" ]
}
kind_is() { # jq filter for a kind given as number or enum name
  echo "(.kind == $1 or .kind == \"$2\")"
}

# ---- 1. a traced request: SERVER continues the caller, CLIENT is its child and the upstream's parent ----
T=4bf92f3577b34da6a3ce929d0e0e4736
P=00f067aa0ba902b7
body=$(curl -fsS -H "traceparent: 00-$T-$P-01" -H "tracestate: rojo=00f067aa0ba902b7" "http://127.0.0.1:$a_PORT/hello?x=1")
up_tp=$(echo "$body" | jq -r '.headers.traceparent')
[[ "$up_tp" =~ ^00-$T-([0-9a-f]{16})-01$ ]] || fail "upstream traceparent $up_tp does not continue $T"
UP_PARENT=${BASH_REMATCH[1]}
[ "$UP_PARENT" != "$P" ] || fail "the proxy sent the caller's span id upstream"
echo "$body" | jq -r '.headers.tracestate' | has '^rojo=00f067aa0ba902b7$' || fail "tracestate not kept"
wait_until 30 have_spans "$T" 2 || fail "trace $T not in telemetry: $(trace_json $T 2>&1 | head -c 600)"
spans_of "$T" >"$TMP/t1.jsonl"
[ "$(wc -l <"$TMP/t1.jsonl")" -eq 2 ] || fail "expected 2 spans: $(cat "$TMP/t1.jsonl")"
server=$(jq -c "select($(kind_is 2 SPAN_KIND_SERVER))" "$TMP/t1.jsonl")
client=$(jq -c "select($(kind_is 3 SPAN_KIND_CLIENT))" "$TMP/t1.jsonl")
[ -n "$server" ] && [ -n "$client" ] || fail "server/client spans missing: $(cat "$TMP/t1.jsonl")"
SID=$(echo "$server" | jq -r .spanId)
[ "$(echo "$server" | jq -r .parentSpanId)" = "$P" ] || fail "server span parent is not the caller: $server"
[ "$(echo "$client" | jq -r .parentSpanId)" = "$SID" ] || fail "client span parent is not the server span: $client"
[ "$(echo "$client" | jq -r .spanId)" = "$UP_PARENT" ] || fail "upstream's parent id is not the client span: $client"
[ "$(echo "$server" | jq -r .service)" = "proxy-a" ] || fail "service.name: $server"
[ "$(echo "$server" | jq -r .traceState)" = "rojo=00f067aa0ba902b7" ] || fail "span tracestate: $server"
for kv in 'http.request.method=GET' 'url.path=/hello' 'network.protocol.version=1.1' 'skiff.route=web' \
  'skiff.cluster=web' 'http.response.status_code=200' "server.address=127.0.0.1"; do
  k=${kv%%=*}; v=${kv#*=}
  [ "$(echo "$server" | jq -r --arg k "$k" '.attrs[$k] | tostring')" = "$v" ] || fail "server $k != $v: $server"
done
for kv in 'http.request.method=GET' 'skiff.cluster=web' 'http.response.status_code=200' 'server.address=127.0.0.1' \
  "server.port=$ECHO_PORT"; do
  k=${kv%%=*}; v=${kv#*=}
  [ "$(echo "$client" | jq -r --arg k "$k" '.attrs[$k] | tostring')" = "$v" ] || fail "client $k != $v: $client"
done
# the access log line carries the trace id and the server span id
wait_until 10 grep -q "\"trace_id\":\"$T\".*\"span_id\":\"$SID\"" "$TMP/access-a.log" ||
  fail "access log lacks trace_id/span_id: $(tail -3 "$TMP/access-a.log")"

# ---- 2. a retry: two CLIENT spans under one SERVER span, each with its skiff reason ----
T2=0af7651916cd43dd8448eb211c80319c
code=$(curl -sS -o /dev/null -w '%{http_code}' -H "traceparent: 00-$T2-b7ad6b7169203331-01" "http://127.0.0.1:$a_PORT/retry")
[ "$code" = 503 ] || fail "retry route answered $code"
wait_until 30 have_spans "$T2" 3 || fail "retry trace incomplete: $(spans_of $T2 2>&1)"
spans_of "$T2" >"$TMP/t2.jsonl"
srv2=$(jq -c "select($(kind_is 2 SPAN_KIND_SERVER))" "$TMP/t2.jsonl")
SID2=$(echo "$srv2" | jq -r .spanId)
jq -c "select($(kind_is 3 SPAN_KIND_CLIENT) and .parentSpanId == \"$SID2\")" "$TMP/t2.jsonl" >"$TMP/t2c.jsonl"
[ "$(wc -l <"$TMP/t2c.jsonl")" -eq 2 ] || fail "expected two client spans under $SID2: $(cat "$TMP/t2.jsonl")"
[ "$(jq -r '.attrs["skiff.reason"]' "$TMP/t2c.jsonl" | sort -u)" = upstream_connect_failure ] ||
  fail "the client spans lack skiff.reason: $(cat "$TMP/t2c.jsonl")"
[ "$(jq -r '.status.code' "$TMP/t2c.jsonl" | sort -u | tr -d '\n')" = 2 ] || fail "client spans are not errors"
jq -r '.attrs["http.request.resend_count"] // empty' "$TMP/t2c.jsonl" | has '^1$' || fail "no resend_count on the retry"
[ "$(echo "$srv2" | jq -r '.attrs["http.response.status_code"]')" = 503 ] || fail "server span status: $srv2"
[ "$(echo "$srv2" | jq -r '.attrs["skiff.reason"]')" = upstream_connect_failure ] || fail "server span reason: $srv2"
[ "$(echo "$srv2" | jq -r '.status.code')" = 2 ] || fail "server span is not an error: $srv2"

# ---- 3. sampling 0: root requests through B export nothing; a sampled caller still wins (parent-based) ----
for i in $(seq 1 20); do
  tp=$(curl -fsS "http://127.0.0.1:$b_PORT/n$i" | jq -r '.headers.traceparent')
  [[ "$tp" =~ -00$ ]] || fail "proxy b sent a sampled flag for a root request: $tp"
done
# an unsampled caller through A (ratio 1) is not sampled either
tp=$(curl -fsS -H "traceparent: 00-11111111111111111111111111111111-2222222222222222-00" "http://127.0.0.1:$a_PORT/u" |
  jq -r '.headers.traceparent')
[[ "$tp" =~ ^00-11111111111111111111111111111111-[0-9a-f]{16}-00$ ]] || fail "unsampled caller: $tp"
T4=6e0c63257de34c92bf9efcd03927272e
curl -fsS -o /dev/null -H "traceparent: 00-$T4-1234567890abcdef-01" "http://127.0.0.1:$a_PORT/after"
T3=5ad8cbd7c0e5b5b1c66b5e4a2f5e7d3c
curl -fsS -o /dev/null -H "traceparent: 00-$T3-1234567890abcdef-01" "http://127.0.0.1:$b_PORT/sampled"
# one exporter queue per proxy, sent in order: once T3 is in, B's earlier spans would be too
wait_until 30 have_spans "$T3" 2 || fail "proxy b did not export a parent-sampled trace"
wait_until 30 have_spans "$T4" 2 || fail "proxy a did not export $T4"
n=$(curl -fsS "http://127.0.0.1:$QUERY/api/search?service=proxy-b&limit=100" | jq '.traces | length')
[ "$n" -eq 1 ] || fail "proxy b (sample_ratio 0) exported $n traces, expected only $T3"
curl -fsS "http://127.0.0.1:$QUERY/api/traces/11111111111111111111111111111111" >/dev/null 2>&1 &&
  fail "an unsampled trace was exported"
exported_b_is_2() { curl -fsS "http://127.0.0.1:$b_ADMIN/metrics" | has '^skiff_proxy_spans_exported_total 2$'; }
wait_until 10 exported_b_is_2 ||
  fail "proxy b exported count: $(curl -fsS "http://127.0.0.1:$b_ADMIN/metrics" | grep spans_)"

# ---- 4. telemetry gone: the proxy keeps serving, spans are dropped and counted ----
kill -KILL "$TL_PID"
wait "$TL_PID" 2>/dev/null || true
TL_PID=
for i in $(seq 1 30); do
  curl -fsS -o /dev/null "http://127.0.0.1:$a_PORT/down$i" || fail "proxy a stopped serving with telemetry down"
done
dropped() { curl -fsS "http://127.0.0.1:$a_ADMIN/metrics" | awk '$1=="skiff_proxy_spans_dropped_total"{print $2}'; }
dropped_at_least() { local d; d=$(dropped); [ -n "$d" ] && [ "${d%.*}" -ge "$1" ]; }
wait_until 60 dropped_at_least 60 || fail "dropped spans not counted: $(dropped)"
curl -fsS -o /dev/null "http://127.0.0.1:$a_PORT/still-up" || fail "proxy a not serving after the drops"
kill -0 "$a_PID" || fail "proxy a died"
echo "ok"
