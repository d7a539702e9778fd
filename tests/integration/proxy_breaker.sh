#!/usr/bin/env bash
# skiff-proxy's circuit_breaker.max_connections and max_pending_requests,
# process-wide over 3 workers and 2 endpoints, against real skiff-echo
# upstreams whose /delay/<d> holds each request open. h2load opens many
# client connections at once; `ss` counts the proxy's established
# connections to the upstreams while they run:
# - max_connections 2: never more than 2 upstream connections, and every
#   request admitted as pending is answered once a connection frees (idle
#   connections of other workers' pools are closed to give their slot back);
# - max_pending_requests 4: while 2 requests hold the connections and 4 wait,
#   the next one is answered at once with 503 and x-skiff-reason:
#   circuit_open, and every refusal is counted in
#   skiff_proxy_circuit_overflow_total{kind="pending"}.
# No timing is asserted; every wait is bounded.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_init proxy-breaker

command -v ss >/dev/null || { echo "SKIP: ss not installed"; exit 0; }
command -v h2load >/dev/null || { echo "SKIP: h2load not installed"; exit 0; }

start_echo a
start_echo b
start_echo c
start_echo d
start_echo e
start_echo f

PORT=$(free_port)
ADMIN=$(free_port)
cat >"$TMP/proxy.yaml" <<EOF
workers: 3
admin:
  listen: 127.0.0.1:$ADMIN
listeners:
  - name: main
    address: 127.0.0.1:$PORT
clusters:
  - name: capped
    endpoints: ["127.0.0.1:$a_PORT", "127.0.0.1:$b_PORT"]
    circuit_breaker: {max_connections: 2}
  - name: tight
    endpoints: ["127.0.0.1:$c_PORT", "127.0.0.1:$d_PORT"]
    circuit_breaker: {max_connections: 2, max_pending_requests: 4}
  - name: h2cap
    protocol: h2
    endpoints: ["127.0.0.1:$e_PORT", "127.0.0.1:$f_PORT"]
    circuit_breaker: {max_connections: 1}
routes:
  - name: h2cap
    match: {path: {prefix: /h/delay/}}
    rewrite: {prefix: /delay/}
    cluster: h2cap
    timeout: 60s
  - name: tight
    match: {path: {prefix: /t/delay/}}
    rewrite: {prefix: /delay/}
    cluster: tight
    timeout: 60s
  - name: delay
    match: {path: {prefix: /delay/}}
    cluster: capped
    timeout: 60s
EOF
start_proxy

metrics() { curl -fsS "http://127.0.0.1:$ADMIN/metrics"; }
metric() { # NAME{LABELS} -> value (0 when absent)
  local v
  v=$(metrics | awk -v k="$1" '$1 == k { print $2 }')
  echo "${v:-0}"
}
h2count() { # CLASS FILE
  local n
  n=$(grep -o "[0-9]* $1" "$2" | awk '{print $1}' || true)
  echo "${n:-0}"
}
# established connections from the proxy to a cluster's two upstreams
upstream_conns() {
  local s
  if [ "$CLUSTER" = capped ]; then
    s=$(ss -tnH state established "( dport = :$a_PORT or dport = :$b_PORT )")
  elif [ "$CLUSTER" = h2cap ]; then
    s=$(ss -tnH state established "( dport = :$e_PORT or dport = :$f_PORT )")
  else
    s=$(ss -tnH state established "( dport = :$c_PORT or dport = :$d_PORT )")
  fi
  if [ -z "$s" ]; then echo 0; else wc -l <<<"$s"; fi
}
# watch_conns PID: highest upstream connection count seen while PID runs
watch_conns() {
  local max=0 n i
  for i in $(seq 1 1200); do # at most 60s
    n=$(upstream_conns)
    [ "$n" -gt "$max" ] && max=$n
    kill -0 "$1" 2>/dev/null || break
    sleep 0.05
  done
  echo "$max"
}

# ---- max_connections 2: 8 requests at once, all answered over <= 2 connections ----
CLUSTER=capped
h2load -n 8 -c 8 "$URL/delay/1s" >"$TMP/conns.out" 2>&1 &
H=$!
BG="$H"
max=$(watch_conns "$H")
wait "$H" || true
BG=""
ok=$(h2count 2xx "$TMP/conns.out")
[ "$ok" = 8 ] || fail "max_connections 2 with pending allowed: $ok of 8 answered 2xx (pending requests must wait for a connection, not fail)"
[ "$max" -le 2 ] || fail "saw $max upstream connections with max_connections 2"
[ "$max" -ge 1 ] || fail "never saw an upstream connection: the count proves nothing"
deferred=$(metric 'skiff_proxy_circuit_overflow_total{cluster="capped",kind="connections"}')
awk -v d="$deferred" 'BEGIN { exit !(d >= 1) }' || fail "no connection open was deferred by the breaker ($deferred)"
echo "ok max_connections: 8 concurrent requests answered, at most $max upstream connections (limit 2)"

# ---- h2 upstream, max_connections 1: 6 pools (3 workers x 2 endpoints) take turns ----
CLUSTER=h2cap
h2load -n 12 -c 6 "$URL/h/delay/200ms" >"$TMP/h2cap.out" 2>&1 &
H=$!
BG="$H"
max=$(watch_conns "$H")
wait "$H" || true
BG=""
ok=$(h2count 2xx "$TMP/h2cap.out")
[ "$ok" = 12 ] || fail "h2 cluster with max_connections 1: $ok of 12 answered 2xx"
[ "$max" -le 1 ] || fail "saw $max upstream h2 connections with max_connections 1"
echo "ok h2 upstream: 12 requests over at most $max connection (limit 1), idle h2 connections handed over between pools"

# ---- max_pending_requests 4: 2 on connections + 4 waiting, the rest refused ----
# Requests that each wait 3s upstream are started one by one until the
# pending gauge shows 4 waiting (2 hold the connections); the next request
# is refused at once.
CLUSTER=tight
before=$(metric 'skiff_proxy_circuit_overflow_total{cluster="tight",kind="pending"}')
pending_full() { metrics | has '^skiff_proxy_circuit_open{cluster="tight",kind="pending"} 1$'; }
n=0
for i in $(seq 1 20); do
  curl -s --max-time 60 -o /dev/null -w '%{http_code}\n' "$URL/t/delay/3s" >"$TMP/hold.$i.code" 2>/dev/null &
  BG="$BG $!"
  n=$i
  sleep 0.2
  pending_full && break
done
pending_full || fail "the pending breaker never reached 4 waiting requests"
code=$(curl -s --max-time 30 -o "$TMP/refused.body" -D "$TMP/refused.h" -w '%{http_code}' "$URL/t/delay/0s")
[ "$code" = 503 ] || fail "a request past max_pending_requests got $code, not 503"
grep -qi '^x-skiff-reason: circuit_open' "$TMP/refused.h" || fail "503 without x-skiff-reason: circuit_open"
grep -q '^circuit_open$' "$TMP/refused.body" || fail "body does not name the reason"
[ "$(upstream_conns)" -le 2 ] || fail "more than 2 upstream connections while saturated"
for p in $BG; do wait "$p" || true; done
BG=""
ok=$(cat "$TMP"/hold.*.code | grep -c '^200$' || true)
refused=$(cat "$TMP"/hold.*.code | grep -c '^503$' || true)
[ $((ok + refused)) = "$n" ] || fail "of $n held requests: $ok 200, $refused 503 ($(cat "$TMP"/hold.*.code | tr '\n' ' '))"
[ "$ok" -ge 6 ] || fail "only $ok requests admitted; 2 connections + 4 pending should take 6"
after=$(metric 'skiff_proxy_circuit_overflow_total{cluster="tight",kind="pending"}')
awk -v a="$after" -v b="$before" -v n="$((refused + 1))" 'BEGIN { exit !(a - b == n) }' ||
  fail "skiff_proxy_circuit_overflow_total{kind=pending} went $before -> $after, wanted +$((refused + 1))"
metrics | has '^skiff_proxy_circuit_open{cluster="tight",kind="pending"} 0$' || fail "pending gauge not back at 0"
echo "ok max_pending_requests: $ok admitted (2 connections + 4 waiting), the next refused with 503 circuit_open; $((refused + 1)) refusals counted"

stop_proxy
echo "1 passed, 0 failed"
