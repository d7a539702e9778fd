#!/usr/bin/env bash
# skiff-echo as a real process: config file, admin listener (readyz,
# metrics), SIGHUP reload of version / latency / error_rate, clean SIGTERM.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
ECHO=$BIN/skiff-echo
one_daemon echo-test echo

write_config() { # version latency error_rate
  cat >"$TMP/echo.yaml" <<EOF
listen: 127.0.0.1:$PORT
version: $1
message: hello from the test
latency: $2
error_rate: $3
error_status: 502
admin:
  listen: 127.0.0.1:$ADMIN
EOF
}

# --check validates without serving, and reports positions
write_config v1 0ms 0
"$ECHO" --config "$TMP/echo.yaml" --check | has "config ok" || fail "--check on a good config"
printf 'listen: 127.0.0.1:%s\nerror_rate: 3\n' "$PORT" >"$TMP/bad.yaml"
if out=$("$ECHO" --config "$TMP/bad.yaml" --check 2>&1); then fail "--check accepted error_rate 3"; fi
echo "$out" | has "bad.yaml:2:" || fail "no position in: $out"

"$ECHO" --config "$TMP/echo.yaml" >"$TMP/echo.log" 2>&1 &
PID=$!
wait_until 20 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "never ready"

body=$(curl -fsS -D "$TMP/h1" "http://127.0.0.1:$PORT/")
grep -qi '^x-skiff-version: v1' "$TMP/h1" || fail "no version header v1"
echo "$body" | has '"message": "hello from the test"' || fail "message: $body"
echo "$body" | has '"protocol": "HTTP/1.1"' || fail "protocol: $body"
h2=$(curl -fsS --http2-prior-knowledge "http://127.0.0.1:$PORT/")
echo "$h2" | has '"protocol": "HTTP/2"' || fail "h2: $h2"
[ "$(curl -sS -d 'round trip' -H 'content-type: text/plain' "http://127.0.0.1:$PORT/echo")" = "round trip" ] ||
  fail "echo round trip"

# reload: new version, an error rate of 1 and some latency, live
write_config v2 200ms 1
kill -HUP "$PID"
wait_until 20 sh -c "curl -sS -D - -o /dev/null http://127.0.0.1:$PORT/ | grep -qi '^x-skiff-version: v2'" ||
  fail "version did not change to v2 after SIGHUP"
code=$(curl -sS -o /dev/null -D "$TMP/h2" -w '%{http_code}' "http://127.0.0.1:$PORT/")
[ "$code" = 502 ] || fail "error_rate 1 gave $code, wanted 502"
grep -qi '^x-skiff-echo: injected-error' "$TMP/h2" || fail "no injected-error header"
t=$(curl -sS -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/")
awk -v t="$t" 'BEGIN { exit !(t >= 0.15) }' || fail "latency 200ms not applied (took $t s)"

# a broken config on SIGHUP keeps the running one
echo "error_rate: [" >"$TMP/echo.yaml"
kill -HUP "$PID"
sleep 0.5
kill -0 "$PID" || fail "died on a bad reload"
curl -sS -D - -o /dev/null "http://127.0.0.1:$PORT/" | has -i '^x-skiff-version: v2' || fail "lost config on bad reload"

# metrics on the admin listener
metrics=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics")
echo "$metrics" | has '^skiff_echo_requests_total{code="502"} ' || fail "no 502 counter in metrics"
echo "$metrics" | has '^skiff_echo_requests_total{code="200"} ' || fail "no 200 counter in metrics"
echo "$metrics" | has '^skiff_echo_request_duration_seconds_bucket' || fail "no latency histogram"

# SIGTERM: drains and exits 0
stop_daemon
echo "1 passed, 0 failed"
