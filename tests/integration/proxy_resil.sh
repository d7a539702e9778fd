#!/usr/bin/env bash
# skiff-proxy resilience against real skiff-echo upstreams, driven by curl
# and h2load: retries turn a flaky upstream's 503s into 200s (and the budget
# stops them), a circuit breaker opens with reason circuit_open and closes,
# an outlier is ejected and comes back, a failing health check takes an
# endpoint out and back, the rate limit answers 429 with its reason, and
# delay/abort faults hit their shares. No timing is asserted; every wait is
# bounded.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_init proxy-resil

# reconfigure_echo NAME ERROR_RATE: live change through SIGHUP
reconfigure_echo() {
  local port admin pid
  eval "port=\$$1_PORT; admin=\$$1_ADMIN; pid=\$$1_PID"
  echo_config "$1" "$port" "$admin" "$2" 0ms
  kill -HUP "$pid"
}

start_echo good 0 0ms
start_echo flaky 0.25 0ms
start_echo slow 0 1s
start_echo bad 1 0ms   # always 503 until told otherwise
start_echo sick 1 0ms  # fails its health checks until told otherwise

PORT=$(free_port)
ADMIN=$(free_port)
L4DROP=$(free_port)
L4SLOW=$(free_port)

cat >"$TMP/proxy.yaml" <<EOF
workers: 1
admin:
  listen: 127.0.0.1:$ADMIN
access_log:
  path: $TMP/access.log
  fields: [ts, method, path, status, reason, route, cluster, endpoint, attempts]
listeners:
  - name: main
    address: 127.0.0.1:$PORT
  - name: lossy
    address: 127.0.0.1:$L4DROP
    protocol: tcp
    cluster: good
    fault: {drop_percent: 30}
  - name: laggy
    address: 127.0.0.1:$L4SLOW
    protocol: tcp
    cluster: good
    fault: {delay: 2ms, delay_percent: 50, bandwidth: 8MiB}
clusters:
  - name: flaky
    endpoints: ["127.0.0.1:$flaky_PORT"]
    circuit_breaker: {max_retries: 1000}
  - name: slow
    endpoints: ["127.0.0.1:$slow_PORT"]
    circuit_breaker: {max_requests: 1}
  - name: pair
    endpoints: ["127.0.0.1:$good_PORT", "127.0.0.1:$bad_PORT"]
    outlier: {consecutive_5xx: 3, base_ejection_time: 3s, interval: 1s, max_ejection_percent: 50}
  - name: checked
    endpoints: ["127.0.0.1:$good_PORT", "127.0.0.1:$sick_PORT"]
    health_check: {path: /, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}
  - name: good
    endpoints: ["127.0.0.1:$good_PORT"]
routes:
  - name: retry
    match: {path: /retry}
    rewrite: {path: /}
    cluster: flaky
    retry:
      attempts: 10
      retry_on: [gateway-error]
      backoff: {base: 1ms, max: 4ms}
      budget: {percent: 100, min_concurrency: 5}
  - name: noretry
    match: {path: /noretry}
    rewrite: {path: /}
    cluster: flaky
  - name: nobudget
    match: {path: /nobudget}
    rewrite: {path: /}
    cluster: flaky
    retry:
      attempts: 10
      retry_on: [gateway-error]
      budget: {percent: 0, min_concurrency: 0}
  - name: breaker
    match: {path: /breaker}
    rewrite: {path: /}
    cluster: slow
  - name: outlier
    match: {path: /outlier}
    rewrite: {path: /}
    cluster: pair
  - name: health
    match: {path: /health}
    rewrite: {path: /}
    cluster: checked
  - name: limited
    match: {path: /limited}
    rewrite: {path: /}
    cluster: good
    rate_limit: {requests_per_unit: 5, unit: minute}
  - name: perclient
    match: {path: /perclient}
    rewrite: {path: /}
    cluster: good
    rate_limit: {requests_per_unit: 3, unit: minute, per_client: header, header: x-api-key}
  - name: abort
    match: {path: /abort}
    rewrite: {path: /}
    cluster: good
    fault: {abort: {percent: 20, status: 418}}
  - name: delay
    match: {path: /delay}
    rewrite: {path: /}
    cluster: good
    fault: {delay: {percent: 30, fixed_delay: 1ms}}
EOF

start_proxy

# count STATUS FILE: responses with that status in a curl -D dump
count() { grep -c "^HTTP/[0-9.]* $1 " "$2" || true; }
# many requests on one keep-alive connection; headers of each into FILE
burst() { # PATH N FILE [curl args...]
  local path=$1 n=$2 f=$3; shift 3
  curl -s -o /dev/null -D "$f" --max-time 120 "$@" "$URL$path?n=[1-$n]" || true
}

# ---- retries ----
# (error_rate 0.25 and 10 attempts: a request fails all of them once in a million)
burst /noretry 400 "$TMP/noretry.h"
base503=$(count 503 "$TMP/noretry.h")
[ "$base503" -ge 50 ] || fail "flaky upstream gave only $base503/400 503s without retries"
burst /retry 500 "$TMP/retry.h"
ok=$(count 200 "$TMP/retry.h")
[ "$ok" = 500 ] || fail "with retries $ok/500 were 200 (503s: $(count 503 "$TMP/retry.h"))"
grep -q '"route":"retry".*"attempts":[2-9]' "$TMP/access.log" || fail "access log shows no retried request"
# a zero budget allows no retry: the upstream's 503s come through
burst /nobudget 400 "$TMP/nobudget.h"
nb503=$(count 503 "$TMP/nobudget.h")
[ "$nb503" -ge 50 ] || fail "zero retry budget still hid the 503s ($nb503/400)"
echo "ok retries: 0/500 errors with retries, $base503/400 without, $nb503/400 with a zero budget"

# ---- circuit breaker ----
curl -s --max-time 20 -o /dev/null -D "$TMP/brk.h" --parallel --parallel-immediate --parallel-max 8 "$URL/breaker?n=[1-8]" || true
open=$(grep -ci '^x-skiff-reason: circuit_open' "$TMP/brk.h" || true)
passed=$(count 200 "$TMP/brk.h")
[ "$open" -ge 1 ] || fail "8 parallel requests through max_requests 1 never opened the breaker"
[ "$(count 503 "$TMP/brk.h")" -ge "$open" ] || fail "circuit_open without 503"
[ "$passed" -ge 1 ] || fail "no request got through the breaker"
# once they are done it is closed again
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/breaker")
[ "$code" = 200 ] || fail "breaker did not close (got $code)"
grep -q 'circuit_open' "$TMP/access.log" || fail "access log lacks circuit_open"
echo "ok breaker: $open circuit_open, $passed passed, then closed"
# the breaker-state gauge: one request in flight to "slow" (1s upstream) fills
# max_requests 1, so the gauge reads 1 while it runs and 0 once it is done
brk_gauge() {
  curl -fsS "http://127.0.0.1:$ADMIN/metrics" | sed -n 's/^skiff_proxy_circuit_open{cluster="slow",kind="requests"} //p'
}
gauge_is() { [ "$(brk_gauge)" = "$1" ]; }
curl -s --max-time 20 -o /dev/null "$URL/breaker" &
BRK_CURL=$!
wait_until 10 gauge_is 1 || fail "circuit_open gauge not 1 while slow's only slot was taken (got '$(brk_gauge)')"
wait "$BRK_CURL" || true
wait_until 10 gauge_is 0 || fail "circuit_open gauge not back to 0 after the request (got '$(brk_gauge)')"
curl -fsS "http://127.0.0.1:$ADMIN/metrics" | has '^skiff_proxy_circuit_open{cluster="flaky",kind="retries"} 0' ||
  fail "no circuit_open gauge for flaky/retries"
echo "ok breaker gauge: 1 while open, 0 when closed"

# ---- outlier ejection ----
burst /outlier 200 "$TMP/out1.h"
bad_hits=$(grep -ci '^x-skiff-version: bad' "$TMP/out1.h" || true)
good_hits=$(grep -ci '^x-skiff-version: good' "$TMP/out1.h" || true)
# round robin would give the bad one 100; ejected after 3 errors it gets a few
[ "$bad_hits" -le 10 ] || fail "ejected endpoint still got $bad_hits/200 requests"
[ "$good_hits" -ge 190 ] || fail "good endpoint got only $good_hits/200"
# heal it: after the ejection time it gets traffic again
reconfigure_echo bad 0
back() {
  local h
  h=$(curl -s -o /dev/null -D - "$URL/outlier?n=[1-10]")
  grep -qi '^x-skiff-version: bad' <<<"$h"
}
wait_until 30 back || fail "healed endpoint never came back"
echo "ok outlier: bad endpoint got $bad_hits/200 while ejected, then came back"

# ---- health checks ----
hc_has() { # VERSION
  local h
  h=$(curl -s -o /dev/null -D - "$URL/health?n=[1-10]")
  grep -qi "^x-skiff-version: $1" <<<"$h"
}
hc_only_good() {
  local h
  h=$(curl -s -o /dev/null -D - "$URL/health?n=[1-10]")
  [ "$(grep -ci '^x-skiff-version: good' <<<"$h")" = 10 ]
}
wait_until 20 hc_only_good || fail "failing health checks never took the sick endpoint out"
burst /health 100 "$TMP/hc1.h"
sick_hits=$(grep -ci '^x-skiff-version: sick' "$TMP/hc1.h" || true)
[ "$sick_hits" = 0 ] || fail "unhealthy endpoint got $sick_hits/100"
[ "$(count 200 "$TMP/hc1.h")" = 100 ] || fail "health route: not all 200"
reconfigure_echo sick 0
wait_until 30 hc_has sick || fail "endpoint passing its health check never got traffic again"
echo "ok health checks: unhealthy endpoint got no traffic, then came back"

# ---- rate limit ----
burst /limited 10 "$TMP/rl.h"
[ "$(count 200 "$TMP/rl.h")" = 5 ] || fail "rate limit 5/minute let $(count 200 "$TMP/rl.h")/10 through"
[ "$(count 429 "$TMP/rl.h")" = 5 ] || fail "rate limit: $(count 429 "$TMP/rl.h") 429s, wanted 5"
[ "$(grep -ci '^x-skiff-reason: rate_limited' "$TMP/rl.h")" = 5 ] || fail "429 without reason rate_limited"
grep -qi '^retry-after: [1-9][0-9]*' "$TMP/rl.h" || fail "429 without retry-after"
burst /perclient 6 "$TMP/pc1.h" -H "x-api-key: alice"
burst /perclient 6 "$TMP/pc2.h" -H "x-api-key: bob"
[ "$(count 200 "$TMP/pc1.h")" = 3 ] && [ "$(count 200 "$TMP/pc2.h")" = 3 ] ||
  fail "per-client limits: alice $(count 200 "$TMP/pc1.h"), bob $(count 200 "$TMP/pc2.h") of 3"
echo "ok rate limit: 5 of 10 then 429 rate_limited; per client 3 each"

# ---- faults (h2load for the aborts, curl for the delay header) ----
N=4000
h2load -n $N -c 4 -m 8 "$URL/abort" >"$TMP/h2load.out" 2>&1 || true
aborted=$(grep -o '[0-9]* 4xx' "$TMP/h2load.out" | awk '{print $1}')
succ=$(grep -o '[0-9]* 2xx' "$TMP/h2load.out" | awk '{print $1}')
[ -n "$aborted" ] && [ -n "$succ" ] || fail "h2load output: $(cat "$TMP/h2load.out")"
[ $((aborted + succ)) = $N ] || fail "abort route: $aborted 4xx + $succ 2xx != $N"
# 20% +- 3 points
[ "$aborted" -ge $((N * 17 / 100)) ] && [ "$aborted" -le $((N * 23 / 100)) ] ||
  fail "abort share $aborted/$N outside 17..23%"
burst /abort 100 "$TMP/ab.h"
n418=$(count 418 "$TMP/ab.h")
[ "$n418" -ge 1 ] || fail "no abort in 100 requests at 20%"
[ "$(grep -ci '^x-skiff-reason: fault_abort' "$TMP/ab.h")" = "$n418" ] || fail "an abort without reason fault_abort"
burst /delay $N "$TMP/delay.h"
delayed=$(grep -ci '^x-skiff-fault-delay: 1' "$TMP/delay.h" || true)
[ "$(count 200 "$TMP/delay.h")" = $N ] || fail "delay route: not all 200"
[ "$delayed" -ge $((N * 27 / 100)) ] && [ "$delayed" -le $((N * 33 / 100)) ] ||
  fail "delay share $delayed/$N outside 27..33%"
echo "ok faults: aborted $aborted/$N (20%), delayed $delayed/$N (30%)"

# ---- L4 link faults ----
# a new connection per request: about 30% are dropped at accept
L4N=600
curl -s --max-time 120 -o /dev/null -D "$TMP/l4.h" -H 'connection: close' "http://127.0.0.1:$L4DROP/?n=[1-$L4N]" || true
l4ok=$(count 200 "$TMP/l4.h")
[ "$l4ok" -ge $((L4N * 60 / 100)) ] && [ "$l4ok" -le $((L4N * 80 / 100)) ] ||
  fail "L4 drop 30%: $l4ok/$L4N connections got through, wanted 60..80%"
# delayed and paced chunks keep the byte order: a 900 KiB body comes back intact
head -c 921600 /dev/urandom >"$TMP/body.bin"
curl -s --max-time 60 -H 'content-type: application/octet-stream' --data-binary @"$TMP/body.bin" \
  -o "$TMP/body.out" "http://127.0.0.1:$L4SLOW/echo" || fail "request through the delayed link failed"
cmp -s "$TMP/body.bin" "$TMP/body.out" || fail "the delayed L4 link reordered or lost bytes"
echo "ok L4 faults: $l4ok/$L4N connections through a 30% drop, delayed link keeps the byte order"

# metrics mention the resilience counters
m=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics")
grep -Eq '^skiff_proxy_retries_total\{cluster="flaky"\} [1-9]' <<<"$m" || fail "no retries counted for flaky"
grep -Eq '^skiff_proxy_outlier_ejections_total\{cluster="pair"\} [1-9]' <<<"$m" || fail "no ejection counted for pair"

stop_proxy
echo "1 passed, 0 failed"
