#!/usr/bin/env bash
# skiff-telemetry's 503 answers (docs/telemetry.md, "How a write becomes
# durable"), with curl against the real binary:
#  1. drain: a request on a kept-alive connection whose body completes after
#     SIGTERM gets 503 + Retry-After and is not stored; what was acknowledged
#     before the SIGTERM is there after a restart; the same over h2c: streams
#     open when the drain begins get 503 + Retry-After and a GOAWAY without
#     error, and the refusals count as reason="draining" in /metrics;
#  2. storage failure: with the data dir on a small tmpfs (mounted here, as
#     root) filled up, spans, log lines and samples get 503 + Retry-After: 5
#     with the reason; the daemon keeps serving; once space is freed the same
#     requests succeed and everything acknowledged survives a restart.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TEL=$BIN/skiff-telemetry
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-tl-503.XXXXXX")
MNT=$TMP/mnt
PID=
CPID=
CPB=
MOUNTED=

cleanup() {
  exec 3>&- 4>&- 5>&- 2>/dev/null || true
  [ -n "$CPID" ] && kill "$CPID" 2>/dev/null || true
  [ -n "$CPB" ] && kill "$CPB" 2>/dev/null || true
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  if [ -n "$MOUNTED" ]; then umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff-telemetry log" >&2
  tail -30 "$TMP/tl.log" >&2 || true
  exit 1
}

if [ "$(id -u)" != 0 ]; then
  echo "needs root (mounts a tmpfs for the disk-full case)" >&2
  exit 1
fi

OTLP=$(free_port); QUERY=$(free_port); ADMIN=$(free_port)
config() { # data dir
  cat >"$TMP/tl.yaml" <<EOF
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $1
self_scrape: false
drain_timeout: 30s
admin:
  listen: 127.0.0.1:$ADMIN
EOF
}

start() {
  "$TEL" --config "$TMP/tl.yaml" >>"$TMP/tl.log" 2>&1 &
  PID=$!
  wait_until 30 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "not ready"
}

stop() { # SIGTERM, bounded wait, exit status 0
  kill -TERM "$PID"
  exited_ok "$PID" 30
  PID=
}

NOW=$(date +%s)
span() { # trace id, name[, attribute value]
  printf '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"t503"}}]},"scopeSpans":[{"spans":[{"traceId":"%s","spanId":"00000000000000a1","name":"%s","startTimeUnixNano":"%s000000000","endTimeUnixNano":"%s000000001","attributes":[{"key":"pad","value":{"stringValue":"%s"}}]}]}]}]}' \
    "$1" "$2" "$NOW" "$NOW" "${3:-x}"
}
trace_status() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$QUERY/api/traces/$1"; }

# ---- 1. drain ----
config "$TMP/data1"
start
T1=000000000000000000000000000d0001
T2=000000000000000000000000000d0002
span "$T1" before-sigterm >"$TMP/span1.json"
span "$T2" after-sigterm >"$TMP/span2.json"
head -c 100 "$TMP/span2.json" >"$TMP/span2.a"
tail -c +101 "$TMP/span2.json" >"$TMP/span2.b"
mkfifo "$TMP/body"
# one connection, two requests: the first complete, the second a chunked
# upload whose body comes from the fifo
curl -sS --http1.1 -m 60 -o "$TMP/r1" -w '%{stderr}first %{http_code}\n' -H 'content-type: application/json' \
  --data-binary @"$TMP/span1.json" "http://127.0.0.1:$OTLP/v1/traces" \
  --next -sS --http1.1 -m 60 -X POST -H 'content-type: application/json' -H 'expect:' -T - \
  -D "$TMP/h2" -o "$TMP/r2" -w '%{http_code} %{num_connects}\n' "http://127.0.0.1:$OTLP/v1/traces" \
  <"$TMP/body" >"$TMP/curl.out" 2>"$TMP/curl.err" &
CPID=$!
exec 3>"$TMP/body"
# (-w to stderr: curl's stdout to a file is written at exit)
wait_until 30 grep -qx 'first 200' "$TMP/curl.err" || fail "first request not acknowledged: $(cat "$TMP/curl.out" "$TMP/curl.err")"
# the server's end of that connection: bytes it received so far
srv_rcvd() { ss -Htin state established "sport = :$OTLP" | grep -o 'bytes_received:[0-9]*' | cut -d: -f2; }
B1=$(srv_rcvd)
[ -n "$B1" ] || fail "no connection to the OTLP port"
cat "$TMP/span2.a" >&3
# the second head (and the first part of its body) read by the server
wait_until 30 sh -c "r=\$(ss -Htin state established 'sport = :$OTLP' | grep -o 'bytes_received:[0-9]*' | cut -d: -f2); \
  q=\$(ss -Htn state established 'sport = :$OTLP' | awk '{print \$1}'); [ \"\$r\" -gt $B1 ] && [ \"\$q\" = 0 ]" ||
  fail "second request head never reached the server"
kill -TERM "$PID"
wait_until 30 grep -q draining "$TMP/tl.log" || fail "no draining after SIGTERM"
cat "$TMP/span2.b" >&3
exec 3>&-
wait "$CPID" || fail "curl failed: $(cat "$TMP/curl.err")"
CPID=
read -r code2 conns2 < <(tail -1 "$TMP/curl.out")
[ "$code2" = 503 ] || fail "request finished during the drain: $code2 $(cat "$TMP/r2"), want 503"
[ "$conns2" = 0 ] || fail "second request did not reuse the connection (num_connects $conns2)"
tr -d '\r' <"$TMP/h2" | grep -qix 'retry-after: 1' || fail "503 while draining without Retry-After: $(cat "$TMP/h2")"
tr -d '\r' <"$TMP/h2" | grep -qix 'connection: close' || fail "503 while draining kept the connection open"
grep -qx 'shutting down' "$TMP/r2" || fail "503 body: $(cat "$TMP/r2")"
exited_ok "$PID" 30
PID=
start
[ "$(trace_status "$T1")" = 200 ] || fail "span acknowledged before SIGTERM lost"
[ "$(trace_status "$T2")" = 404 ] || fail "span answered 503 was stored anyway"
stop
echo "ok: drain answers 503 + Retry-After: 1 on a kept-alive connection, nothing acknowledged lost"

# ---- 1b. drain over h2c (HTTP/2 with prior knowledge) ----
# curl 7.88 cannot send a second request on an h2c connection (curl issue
# 10634), so each request has its own connection: one acknowledged before
# the SIGTERM, two uploads whose streams are open when the drain begins.
# The second keeps the daemon draining while the first's refusal is looked
# up in /metrics.
config "$TMP/data1b"
start
T3=000000000000000000000000000d0003
T4=000000000000000000000000000d0004
T5=000000000000000000000000000d0005
PAD2K=$(head -c 2000 /dev/zero | tr '\0' p)
span "$T3" h2-before-sigterm >"$TMP/span3.json"
span "$T4" h2-after-sigterm "$PAD2K" >"$TMP/span4.json"
span "$T5" h2-after-sigterm-2 "$PAD2K" >"$TMP/span5.json"
c=$(curl -sS --http2-prior-knowledge -m 30 -o "$TMP/r3" -w '%{http_code} %{http_version}' \
  -H 'content-type: application/json' --data-binary @"$TMP/span3.json" "http://127.0.0.1:$OTLP/v1/traces")
[ "$c" = "200 2" ] || fail "h2c span before SIGTERM: $c $(cat "$TMP/r3")"
h2_upload() { # name: POST over h2c with the body from the fifo $TMP/<name>.fifo
  mkfifo "$TMP/$1.fifo"
  # (without the other fifo's writing end, or that upload would never see EOF)
  curl -v -sS --http2-prior-knowledge -m 60 -X POST -H 'content-type: application/json' -T - \
    -D "$TMP/$1.h" -o "$TMP/$1.r" -w '%{http_code} %{http_version}\n' "http://127.0.0.1:$OTLP/v1/traces" \
    <"$TMP/$1.fifo" >"$TMP/$1.out" 2>"$TMP/$1.err" 4>&- 5>&- &
}
# the client port of a connection whose head and first 1000 body bytes the
# server has read (nothing left in its receive queue), other than $1
upload_conn() {
  ss -Htin state established "sport = :$OTLP" | awk -v skip="${1:-none}" '
    /^[0-9]/ { n = split($4, p, ":"); port = p[n]; q = $1; next }
    match($0, /bytes_received:[0-9]+/) {
      if (q == 0 && port != skip && substr($0, RSTART + 15, RLENGTH - 15) + 0 >= 1000) { print port; exit }
    }'
}
has_upload_conn() { [ -n "$(upload_conn "$@")" ]; }
h2_upload a
CPID=$!
exec 4>"$TMP/a.fifo"
head -c 1000 "$TMP/span4.json" >&4
wait_until 30 has_upload_conn || fail "h2c upload a: head and first bytes never reached the server"
PA=$(upload_conn)
h2_upload b
CPB=$!
exec 5>"$TMP/b.fifo"
head -c 1000 "$TMP/span5.json" >&5
wait_until 30 has_upload_conn "$PA" || fail "h2c upload b: head and first bytes never reached the server"
drains=$(grep -c draining "$TMP/tl.log" || true)
kill -TERM "$PID"
wait_until 30 sh -c "[ \$(grep -c draining '$TMP/tl.log') -gt $drains ]" || fail "no draining after SIGTERM"
h2_refused() { # name, its curl's pid
  local st=0
  wait "$2" || st=$?
  [ "$st" = 0 ] || fail "h2c upload $1: curl exit status $st: $(cat "$TMP/$1.err")"
  [ "$(cat "$TMP/$1.out")" = "503 2" ] || fail "h2c upload $1 finished during the drain: $(cat "$TMP/$1.out" "$TMP/$1.r"), want 503 over HTTP/2"
  tr -d '\r' <"$TMP/$1.h" | grep -qix 'retry-after: 1' || fail "h2c 503 while draining without Retry-After: $(cat "$TMP/$1.h")"
  grep -qx 'shutting down' "$TMP/$1.r" || fail "h2c 503 body: $(cat "$TMP/$1.r")"
  # GOAWAY without an error, the stream it covers answered (curl 7.88 logs
  # each GOAWAY it receives; other versions may not)
  if grep -qi goaway "$TMP/$1.err"; then
    local bad
    bad=$(grep -i goaway "$TMP/$1.err" | grep -v 'error=0' || true)
    [ -z "$bad" ] || fail "h2c upload $1: GOAWAY with an error: $bad"
    has -i 'goaway, error=0, last_stream=1$' <"$TMP/$1.err" ||
      fail "h2c upload $1: no final GOAWAY covering its stream: $(grep -i goaway "$TMP/$1.err")"
  else
    echo "note: this curl does not log GOAWAY frames; not checked"
  fi
  return 0
}
tail -c +1001 "$TMP/span4.json" >&4
exec 4>&-
h2_refused a "$CPID"
CPID=
# counted as a drain refusal; the daemon still drains (upload b is open)
M=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics") || fail "no /metrics while draining"
n=$(awk '/^skiff_telemetry_dropped_requests_total\{reason="draining"\}/ {print $2}' <<<"$M")
[ "${n:-0}" = 1 ] || fail "dropped_requests_total{reason=\"draining\"} is ${n:-absent}, want 1"
if has -F 'dropped_requests_total{reason="queue_full"}' <<<"$M"; then fail "a drain refusal counted as queue_full"; fi
tail -c +1001 "$TMP/span5.json" >&5
exec 5>&-
h2_refused b "$CPB"
CPB=
exited_ok "$PID" 30
PID=
start
[ "$(trace_status "$T3")" = 200 ] || fail "span acknowledged over h2c before SIGTERM lost"
[ "$(trace_status "$T4")" = 404 ] || fail "span answered 503 over h2c was stored anyway"
[ "$(trace_status "$T5")" = 404 ] || fail "span answered 503 over h2c was stored anyway (second)"
stop
echo "ok: over h2c, streams open at the drain get 503 + Retry-After: 1 and a clean GOAWAY, counted reason=\"draining\", nothing acknowledged lost"

# ---- 2. storage failure: the data dir's file system full ----
mkdir -p "$MNT"
mount -t tmpfs -o size=8m,mode=0700 skiff-tl-503 "$MNT"
MOUNTED=1
config "$MNT/data"
start
post() { # path, content-type, body file -> "code" with headers in $TMP/h, body in $TMP/b
  curl -sS -m 30 -D "$TMP/h" -o "$TMP/b" -w '%{http_code}' -H "content-type: $2" --data-binary @"$3" \
    "http://127.0.0.1:$OTLP$1"
}
loki() { # line, size of padding
  printf '{"streams":[{"stream":{"app":"t503"},"values":[["%s","%s %s"]]}]}' "$(date +%s%N)" "$1" "$(head -c "$2" /dev/zero | tr '\0' l)"
}
metric() { # name, points (one sample each, a second apart, ending 10 min ago)
  local pts="" t=$(( (NOW - 600 - $2) )) i
  for i in $(seq 1 "$2"); do pts="$pts${pts:+,}{\"timeUnixNano\":\"$((t + i))000000000\",\"asDouble\":$i}"; done
  printf '{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"%s","gauge":{"dataPoints":[%s]}}]}]}]}' "$1" "$pts"
}
PAD=$(head -c 300000 /dev/zero | tr '\0' p)
TA=000000000000000000000000000f000a
TB=000000000000000000000000000f000b
span "$TA" small >"$TMP/sa.json"
span "$TB" big "$PAD" >"$TMP/sb.json"
loki line-a 10 >"$TMP/la.json"
loki line-b 300000 >"$TMP/lb.json"
metric full_a 5 >"$TMP/ma.json"
metric full_b 3000 >"$TMP/mb.json"
metric full_c 7 >"$TMP/mc.json"
[ "$(post /v1/traces application/json "$TMP/sa.json")" = 200 ] || fail "span before the fault: $(cat "$TMP/b")"
[ "$(post /loki/api/v1/push application/json "$TMP/la.json")" = 204 ] || fail "line before the fault: $(cat "$TMP/b")"
[ "$(post /v1/metrics application/json "$TMP/ma.json")" = 200 ] || fail "samples before the fault: $(cat "$TMP/b")"

# fill the file system
dd if=/dev/zero of="$MNT/filler" bs=64k 2>/dev/null || true
[ "$(df --output=avail -k "$MNT" | tail -1 | tr -d ' ')" = 0 ] || fail "tmpfs not full: $(df -k "$MNT")"

expect_503() { # what, code
  [ "$2" = 503 ] || fail "$1 on a full disk: $2 $(cat "$TMP/b"), want 503"
  tr -d '\r' <"$TMP/h" | grep -qix 'retry-after: 5' || fail "$1: 503 without Retry-After: 5: $(cat "$TMP/h")"
}
c=$(post /v1/traces application/json "$TMP/sb.json")
expect_503 spans "$c"
jq -e '.code == 14' "$TMP/b" >/dev/null || fail "spans: 503 body is not an UNAVAILABLE Status: $(cat "$TMP/b")"
jq -r .message "$TMP/b" | has -i 'span store: .*full' || fail "spans: unclear error: $(cat "$TMP/b")"
echo "spans on a full disk: $(jq -r .message "$TMP/b")"
c=$(post /loki/api/v1/push application/json "$TMP/lb.json")
expect_503 "log lines" "$c"
has -i 'log store: .*full' <"$TMP/b" || fail "log lines: unclear error: $(cat "$TMP/b")"
echo "log lines on a full disk: $(cat "$TMP/b")"
c=$(post /v1/metrics application/json "$TMP/mb.json")
expect_503 samples "$c"
jq -e '.code == 14' "$TMP/b" >/dev/null || fail "samples: 503 body is not an UNAVAILABLE Status: $(cat "$TMP/b")"
jq -r .message "$TMP/b" | has -i 'metrics store commit failed: .*no space' || fail "samples: unclear error: $(cat "$TMP/b")"
echo "samples on a full disk: $(jq -r .message "$TMP/b")"

# still serving: readiness, queries, the refusals counted and logged
curl -fsS "http://127.0.0.1:$ADMIN/readyz" >/dev/null || fail "not ready while the disk is full"
[ "$(trace_status "$TA")" = 200 ] || fail "span A not served while the disk is full"
[ "$(trace_status "$TB")" = 404 ] || fail "span answered 503 is served"
v=$(curl -fsS -G --data-urlencode 'query=count_over_time(full_b[2h])' --data-urlencode "time=$NOW" \
  "http://127.0.0.1:$QUERY/api/v1/query" | jq -r '.data.result | length')
[ "$v" = 0 ] || fail "samples answered 503 are served"
n=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '/^skiff_telemetry_dropped_requests_total\{reason="storage"\}/ {print $2}')
[ "${n:-0}" = 3 ] || fail "dropped_requests_total{reason=\"storage\"} is ${n:-absent}, want 3"
grep -q 'ingest failed' "$TMP/tl.log" || fail "storage failures not logged"

# the fault removed: the same requests (a client's retries) succeed
rm -f "$MNT/filler"
c=$(post /v1/traces application/json "$TMP/sb.json")
[ "$c" = 200 ] || fail "span after the fault: $c $(cat "$TMP/b")"
jq -e '.partialSuccess == null' "$TMP/b" >/dev/null || fail "span retry partly refused: $(cat "$TMP/b")"
[ "$(post /loki/api/v1/push application/json "$TMP/lb.json")" = 204 ] || fail "line after the fault: $(cat "$TMP/b")"
c=$(post /v1/metrics application/json "$TMP/mc.json")
[ "$c" = 200 ] || fail "new samples after the fault: $c $(cat "$TMP/b")"
jq -e '.partialSuccess == null' "$TMP/b" >/dev/null || fail "new samples after the fault partly refused: $(cat "$TMP/b")"
c=$(post /v1/metrics application/json "$TMP/mb.json")
[ "$c" = 200 ] || fail "samples retried after the fault: $c $(cat "$TMP/b")"
# the retry is accepted whole: the refused samples were not kept
jq -e '.partialSuccess == null' "$TMP/b" >/dev/null || fail "samples retried after the fault partly refused: $(cat "$TMP/b")"

check_all() {
  [ "$(trace_status "$TA")" = 200 ] || fail "span A lost ($1)"
  [ "$(trace_status "$TB")" = 200 ] || fail "span B lost ($1)"
  local lines
  lines=$(curl -fsS -G --data-urlencode 'query={app="t503"}' --data-urlencode "start=$((NOW - 60))" \
    --data-urlencode "end=$(($(date +%s) + 60))" "http://127.0.0.1:$QUERY/loki/api/v1/query_range" |
    jq -r '.data.result[].values[][1] | split(" ")[0]' | sort | tr '\n' ' ')
  [ "$lines" = "line-a line-b " ] || fail "log lines ($1): got '$lines', want 'line-a line-b '"
  local q
  for q in 'count_over_time(full_a[1h])' 'count_over_time(full_b[2h])' 'count_over_time(full_c[1h])'; do
    v=$(curl -fsS -G --data-urlencode "query=$q" --data-urlencode "time=$NOW" \
      "http://127.0.0.1:$QUERY/api/v1/query" | jq -r '.data.result[0].value[1]')
    case $q in *full_a*) want=5 ;; *full_b*) want=3000 ;; *) want=7 ;; esac
    [ "$v" = "$want" ] || fail "$q ($1) = $v, want $want"
  done
}
check_all "after the fault"
stop
start
check_all "after a restart"
stop
umount "$MNT"
MOUNTED=
echo "ok: a full disk answers 503 + Retry-After: 5 with the reason, serving goes on, writes resume once space is back"
echo "2 passed, 0 failed"
