#!/usr/bin/env bash
# skiff-proxy with workers: 3 keeps its resilience state per process, not
# per worker. Against real skiff-echo upstreams, with h2load and curl
# opening many connections (SO_REUSEPORT spreads them over the workers; the
# test checks that it did, from skiff_proxy_worker_requests_total{worker}):
# a rate limit of N admits N across all connections, a breaker of K lets K
# through, an endpoint ejected after 3 errors got exactly 3 requests (not 3
# per worker) and is skipped by every worker, one prober per endpoint (the
# upstream counts the probes), an unhealthy endpoint gets no traffic from
# any worker, and a reload that leaves clusters and routes unchanged keeps
# all of that state. No timing is asserted; every wait is bounded.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_init proxy-shared
WORKERS=3

start_echo good 0 0ms
start_echo bad 1 0ms   # always 503
start_echo slow 0 6s   # holds its breaker slot for 6s
start_echo probed 0 0ms # only ever sees health probes
start_echo sick 1 0ms  # fails its health checks

PORT=$(free_port)
ADMIN=$(free_port)

# write_config [EXTRA_ROUTE]: the same clusters and routes, plus one more;
# LIMIT sets the limited route's rate (default 20/hour)
write_config() {
  cat >"$TMP/proxy.yaml" <<EOF
workers: $WORKERS
admin:
  listen: 127.0.0.1:$ADMIN
listeners:
  - name: main
    address: 127.0.0.1:$PORT
clusters:
  - name: good
    endpoints: ["127.0.0.1:$good_PORT"]
  - name: slow
    endpoints: ["127.0.0.1:$slow_PORT"]
    circuit_breaker: {max_requests: 2}
  - name: pair
    endpoints: ["127.0.0.1:$good_PORT", "127.0.0.1:$bad_PORT"]
    outlier: {consecutive_5xx: 3, base_ejection_time: 10m, interval: 10m, max_ejection_percent: 50}
  - name: probed
    endpoints: ["127.0.0.1:$probed_PORT"]
    health_check: {path: /, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}
  - name: checked
    endpoints: ["127.0.0.1:$good_PORT", "127.0.0.1:$sick_PORT"]
    health_check: {path: /, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}
routes:
  - name: limited
    match: {path: /limited}
    rewrite: {path: /}
    cluster: good
    rate_limit: {requests_per_unit: ${LIMIT:-20}, unit: hour}
  - name: perclient
    match: {path: /perclient}
    rewrite: {path: /}
    cluster: good
    rate_limit: {requests_per_unit: 4, unit: hour, per_client: header, header: x-api-key}
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
${1:-}
EOF
}
write_config

start_proxy

metrics() { curl -fsS "http://127.0.0.1:$ADMIN/metrics"; }
# per-worker request counts, one line "w0 w1 w2"
worker_counts() {
  local m out="" i v
  m=$(metrics)
  for i in $(seq 0 $((WORKERS - 1))); do
    v=$(sed -n "s/^skiff_proxy_worker_requests_total{worker=\"$i\"} \([0-9.e+]*\)$/\1/p" <<<"$m")
    out="$out ${v:-0}"
  done
  echo $out
}
# workers_used "BEFORE" "AFTER": how many workers answered requests in between
workers_used() {
  local -a b=($1) a=($2)
  local n=0 i
  for i in "${!a[@]}"; do
    awk -v x="${a[$i]}" -v y="${b[$i]}" 'BEGIN { exit !(x > y) }' && n=$((n + 1))
  done
  echo $n
}
spread() { # WHAT BEFORE AFTER
  local used
  used=$(workers_used "$2" "$3")
  [ "$used" -ge 2 ] || fail "$1: the connections all landed on one worker ($2 -> $3); the test proves nothing"
  echo "  ($1 spread over $used workers: $2 -> $3)"
}
h2count() { # CLASS FILE -> h2load's count of 2xx/4xx/5xx answers (0 when absent)
  local n
  n=$(grep -o "[0-9]* $1" "$2" | awk '{print $1}' || true)
  echo "${n:-0}"
}
# a new connection per request (the server closes it), so requests spread
fresh() { # PATH N FILE
  curl -s --max-time 120 -o /dev/null -D "$3" -H 'connection: close' "$URL$1?n=[1-$2]" || true
}
version_hits() { grep -ci "^x-skiff-version: $1" "$2" || true; } # VERSION FILE

# ---- rate limit: 20/hour for the route, across 20 connections ----
b=$(worker_counts)
h2load -n 200 -c 20 "$URL/limited" >"$TMP/rl.out" 2>&1 || true
a=$(worker_counts)
ok=$(h2count 2xx "$TMP/rl.out")
limited=$(h2count 4xx "$TMP/rl.out")
[ $((ok + limited)) = 200 ] || fail "h2load output: $(cat "$TMP/rl.out")"
[ "$ok" = 20 ] || fail "rate limit 20/hour admitted $ok of 200 over 20 connections (per-worker buckets would admit up to $((20 * WORKERS)))"
[ "$limited" = 180 ] || fail "rate limit: $limited 4xx, wanted 180"
spread "rate limit" "$b" "$a"
code=$(curl -s -o /dev/null -D "$TMP/rl1.h" -w '%{http_code}' "$URL/limited")
[ "$code" = 429 ] || fail "after the burst the route answered $code, not 429"
grep -qi '^x-skiff-reason: rate_limited' "$TMP/rl1.h" || fail "429 without reason rate_limited"
b=$(worker_counts)
h2load -n 60 -c 12 -H 'x-api-key: alice' "$URL/perclient" >"$TMP/pc1.out" 2>&1 || true
h2load -n 60 -c 12 -H 'x-api-key: bob' "$URL/perclient" >"$TMP/pc2.out" 2>&1 || true
a=$(worker_counts)
[ "$(h2count 2xx "$TMP/pc1.out")" = 4 ] && [ "$(h2count 2xx "$TMP/pc2.out")" = 4 ] ||
  fail "per-client 4/hour: alice $(h2count 2xx "$TMP/pc1.out"), bob $(h2count 2xx "$TMP/pc2.out") admitted"
spread "per-client rate limit" "$b" "$a"
echo "ok rate limit: 20 of 200 over 20 connections; per client 4 of 60 each"

# ---- circuit breaker: max_requests 2, 12 requests on 12 connections at once ----
b=$(worker_counts)
h2load -n 12 -c 12 "$URL/breaker" >"$TMP/brk.out" 2>&1 || true
a=$(worker_counts)
passed=$(h2count 2xx "$TMP/brk.out")
opened=$(h2count 5xx "$TMP/brk.out")
[ "$passed" = 2 ] || fail "breaker max_requests 2 let $passed of 12 through (per-worker breakers: up to $((2 * WORKERS)))"
[ "$opened" = 10 ] || fail "breaker: $opened 5xx, wanted 10"
spread "breaker" "$b" "$a"
metrics | has '^skiff_proxy_circuit_open{cluster="slow",kind="requests"} 0' || fail "circuit_open gauge not back at 0"
echo "ok breaker: 2 of 12 concurrent requests through max_requests 2"

# ---- outlier: 3 errors in a row eject the bad endpoint for every worker ----
b=$(worker_counts)
fresh /outlier 40 "$TMP/out1.h"
a=$(worker_counts)
bad_hits=$(version_hits bad "$TMP/out1.h")
good_hits=$(version_hits good "$TMP/out1.h")
[ "$bad_hits" = 3 ] || fail "the bad endpoint got $bad_hits requests; after 3 errors in a row it should have been ejected for all workers"
[ "$good_hits" = 37 ] || fail "the good endpoint got $good_hits of 40"
spread "outlier" "$b" "$a"
curl -fsS "http://127.0.0.1:$ADMIN/clusters" >"$TMP/clusters.json"
python3 - "$TMP/clusters.json" "127.0.0.1:$bad_PORT" <<'EOF' || fail "/clusters does not show the bad endpoint ejected: $(cat "$TMP/clusters.json")"
import json, sys
d = json.load(open(sys.argv[1]))
eps = [e for c in d["clusters"] if c["name"] == "pair" for e in c["endpoints"] if e["address"] == sys.argv[2]]
sys.exit(0 if eps and eps[0]["ejected"] and eps[0]["ejections"] == 1 else 1)
EOF
echo "ok outlier: ejected after exactly 3 errors, skipped by every worker"

# ---- health checks: one prober per endpoint, verdict seen by every worker ----
probes() {
  curl -fsS "http://127.0.0.1:$probed_ADMIN/metrics" | sed -n 's/^skiff_echo_requests_total{code="200"} \([0-9.e+]*\)$/\1/p'
}
wait_until 20 test -n "$(probes)" || fail "the probed endpoint saw no probe"
t1=$(date +%s%N) # [t1, t2] holds the whole window between the two reads
p1=$(probes)
sleep 3
p2=$(probes)
t2=$(date +%s%N)
# one prober sends at most one probe per 100ms interval (the next is scheduled
# after the answer, plus jitter); N probers would send about N times that
awk -v p1="$p1" -v p2="$p2" -v t1="$t1" -v t2="$t2" 'BEGIN {
  n = p2 - p1; most = (t2 - t1) / 1e8 + 2
  printf "  (%d probes in %.2fs, at most %d from one prober)\n", n, (t2 - t1) / 1e9, most
  exit !(n >= 1 && n <= most) }' || fail "probe count $p1 -> $p2 in $(((t2 - t1) / 1000000))ms: more than one prober per endpoint"
only_good() {
  local h
  h=$(curl -s -o /dev/null -D - -H 'connection: close' "$URL/health?n=[1-6]")
  [ "$(grep -ci '^x-skiff-version: good' <<<"$h")" = 6 ]
}
wait_until 20 only_good || fail "the failing health check never took the sick endpoint out"
b=$(worker_counts)
fresh /health 30 "$TMP/hc.h"
a=$(worker_counts)
[ "$(version_hits sick "$TMP/hc.h")" = 0 ] || fail "a worker sent $(version_hits sick "$TMP/hc.h") requests to the unhealthy endpoint"
[ "$(version_hits good "$TMP/hc.h")" = 30 ] || fail "health route: $(version_hits good "$TMP/hc.h") of 30 answered by good"
spread "health" "$b" "$a"
echo "ok health checks: one prober per endpoint, the unhealthy endpoint skipped by every worker"

# ---- reload with the clusters and routes unchanged: the state stays ----
write_config "  - name: extra
    match: {path: /extra}
    rewrite: {path: /}
    cluster: good"
kill -HUP "$PROXY_PID"
reloaded() { metrics | has '^skiff_proxy_config_reloads_total 1$'; }
wait_until 20 reloaded || fail "the reload was not applied"
extra_ok() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/extra")" = 200 ]; }
wait_until 20 extra_ok || fail "the new route never answered"
h2load -n 30 -c 6 "$URL/limited" >"$TMP/rl2.out" 2>&1 || true
[ "$(h2count 2xx "$TMP/rl2.out")" = 0 ] || fail "after the reload the empty bucket admitted $(h2count 2xx "$TMP/rl2.out") requests"
fresh /outlier 20 "$TMP/out2.h"
[ "$(version_hits bad "$TMP/out2.h")" = 0 ] || fail "after the reload the ejected endpoint got traffic again"
fresh /health 20 "$TMP/hc2.h"
[ "$(version_hits sick "$TMP/hc2.h")" = 0 ] || fail "after the reload the unhealthy endpoint got traffic again"
echo "ok reload: bucket still empty, endpoint still ejected, unhealthy endpoint still out"

# ---- a reload that changes the route's rate limit starts its bucket afresh ----
LIMIT=7 write_config
kill -HUP "$PROXY_PID"
reloaded2() { metrics | has '^skiff_proxy_config_reloads_total 2$'; }
wait_until 20 reloaded2 || fail "the second reload was not applied"
# workers take the new config a moment apart; until they all have, some
# answers come from the old (empty) bucket. The new bucket is one for the
# process, so however the requests fall, exactly 7 are ever admitted.
admitted=0
for _ in $(seq 1 40); do
  h2load -n 10 -c 5 "$URL/limited" >"$TMP/rl3.out" 2>&1 || true
  admitted=$((admitted + $(h2count 2xx "$TMP/rl3.out")))
  [ "$admitted" -ge 7 ] && break
  sleep 0.1
done
h2load -n 30 -c 6 "$URL/limited" >"$TMP/rl4.out" 2>&1 || true
admitted=$((admitted + $(h2count 2xx "$TMP/rl4.out")))
[ "$admitted" = 7 ] || fail "after changing the rate limit to 7/hour, $admitted requests were admitted"
echo "ok reload with a changed rate limit: a fresh bucket of 7"

stop_proxy
echo "1 passed, 0 failed"
