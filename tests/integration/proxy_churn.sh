#!/usr/bin/env bash
# skiff-proxy frees the statistics of endpoints and listeners that leave the
# config. 50 SIGHUP reloads, each with a different endpoint address: the
# served cluster moves round three real skiff-echo upstreams, a second
# cluster points at a new port nobody listens on every time (one request
# each, answered 503), and a second listener changes its name. While that
# runs, curl loops over keep-alive connections through the served cluster
# and every answer must be 200. Afterwards /clusters counts as many stats
# entries as the config has endpoints (it grew by one or two per reload
# before), and /metrics keeps no series of an endpoint or listener that
# left. No timing is asserted; every wait is bounded.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_init proxy-churn
RELOADS=50

start_echo a 0 20ms
start_echo b 0 20ms
start_echo c 0 20ms
REAL=("$a_PORT" "$b_PORT" "$c_PORT")

PORT=$(free_port)
XPORT=$(free_port)
ADMIN=$(free_port)

# write_config N: generation N's addresses (written whole, then renamed)
write_config() {
  local n=$1
  SVC=127.0.0.1:${REAL[$((n % 3))]}
  DEAD=127.0.0.1:$(free_port)
  XNAME=extra$n
  cat >"$TMP/proxy.yaml.new" <<EOF
workers: 2
admin:
  listen: 127.0.0.1:$ADMIN
listeners:
  - name: main
    address: 127.0.0.1:$PORT
  - name: $XNAME
    address: 127.0.0.1:$XPORT
clusters:
  - name: svc
    endpoints: ["$SVC"]
  - name: churn
    endpoints: ["$DEAD"]
routes:
  - name: churn
    match: {path: /churn}
    cluster: churn
  - name: svc
    match: {path: /}
    cluster: svc
EOF
  mv "$TMP/proxy.yaml.new" "$TMP/proxy.yaml"
}

write_config 0
"$PROXY" --config "$TMP/proxy.yaml" >"$TMP/proxy.log" 2>&1 &
PROXY_PID=$!
wait_until 20 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "proxy never ready"
URL="http://127.0.0.1:$PORT"

metrics() { curl -fsS "http://127.0.0.1:$ADMIN/metrics"; }
# reload N applied: config version N+1 (polled here rather than /metrics:
# under TSan a scrape's /proc/self/fd walk can reuse a descriptor number
# libuv closed with a raw syscall on a worker, a report that is not ours)
reloads_are() {
  local j
  j=$(curl -fsS "http://127.0.0.1:$ADMIN/config_dump")
  python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1])["version"] != int(sys.argv[2]))' "$j" $(($1 + 1))
}
clusters() { curl -fsS "http://127.0.0.1:$ADMIN/clusters"; }
stats_entries() { # the endpoint_stats count of /clusters
  local j
  j=$(clusters)
  python3 -c 'import json,sys; print(json.loads(sys.argv[1])["endpoint_stats"])' "$j"
}
entries_are() { [ "$(stats_entries)" = "$1" ]; }

code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/")
[ "$code" = 200 ] || fail "first request answered $code"
entries_are 2 || fail "/clusters counts $(stats_entries) stats entries for 2 endpoints: $(clusters)"

# ---- traffic through every reload: three loops of 20 requests per
# keep-alive connection (the echo answers after 20ms, so requests are in
# flight on old generations while they retire)
for k in 1 2 3; do
  : >"$TMP/codes$k"
  (
    while [ ! -e "$TMP/stop" ]; do
      curl -s -o /dev/null -w '%{http_code}\n' "$URL/?i=[1-20]" >>"$TMP/codes$k" 2>>"$TMP/curl.log" || true
    done
  ) &
  BG="$BG $!"
done
wait_until 20 test -s "$TMP/codes3" || fail "no traffic before the reloads"

declare -A SEEN_DEAD=()
for n in $(seq 1 $RELOADS); do
  write_config "$n"
  SEEN_DEAD[$DEAD]=1
  kill -HUP "$PROXY_PID"
  wait_until 20 reloads_are "$n" || fail "reload $n not applied"
  # the new dead endpoint gets a pool, a failed connect and its own series
  code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/churn")
  [ "$code" = 503 ] || fail "reload $n: /churn to $DEAD answered $code, not 503"
done
touch "$TMP/stop"
for p in $BG; do wait "$p" || true; done
BG=

cat "$TMP"/codes? >"$TMP/codes"
total=$(wc -l <"$TMP/codes")
bad=$(grep -cv '^200$' "$TMP/codes" || true)
[ "$total" -ge 20 ] || fail "only $total requests ran across the reloads"
[ "$bad" = 0 ] || fail "$bad of $total requests across $RELOADS reloads did not answer 200: $(sort "$TMP/codes" | uniq -c | tr '\n' ' ')"
echo "ok $total requests across $RELOADS reloads, all 200"

# ---- only the current endpoints keep stats entries
# (old generations go once their last request and upstream connection do)
wait_until 30 entries_are 2 ||
  fail "after $RELOADS reloads /clusters counts $(stats_entries) stats entries for 2 endpoints"
J=$(clusters)
python3 - "$J" "$SVC" "$DEAD" <<'EOF' || fail "/clusters does not list exactly the current endpoints: $J"
import json, sys
j = json.loads(sys.argv[1])
got = sorted((c["name"], e["address"]) for c in j["clusters"] for e in c["endpoints"])
want = sorted([("svc", sys.argv[2]), ("churn", sys.argv[3])])
sys.exit(0 if got == want else 1)
EOF
echo "ok /clusters: 2 stats entries, the current endpoints only"

# ---- /metrics: no series of an endpoint or listener that left
curl -fsS -o /dev/null "$URL/"
M=$(metrics)
has "skiff_proxy_upstream_rq_total{cluster=\"svc\",endpoint=\"$SVC\",class=\"2xx\"}" <<<"$M" ||
  fail "no upstream_rq_total series for the current endpoint $SVC"
has "skiff_proxy_upstream_rq_total{cluster=\"churn\",endpoint=\"$DEAD\",class=\"error\"}" <<<"$M" ||
  fail "no upstream_rq_total error series for the current dead endpoint $DEAD"
for p in "${REAL[@]}"; do
  [ "127.0.0.1:$p" = "$SVC" ] && continue
  if has "endpoint=\"127.0.0.1:$p\"" <<<"$M"; then
    fail "series of 127.0.0.1:$p remain after it left the config: $(grep "127.0.0.1:$p" <<<"$M" | head -3)"
  fi
done
eps=$(grep -o 'endpoint="[^"]*"' <<<"$M" | sort -u | wc -l)
[ "$eps" = 2 ] || fail "/metrics has series of $eps endpoints, want 2: $(grep -o 'endpoint="[^"]*"' <<<"$M" | sort -u | tr '\n' ' ')"
for d in "${!SEEN_DEAD[@]}"; do
  [ "$d" = "$DEAD" ] && continue
  if has "endpoint=\"$d\"" <<<"$M"; then fail "series of $d remain after it left the config"; fi
done
listeners=$(grep -o '^skiff_proxy_downstream_connections{listener="[^"]*"' <<<"$M" | sort -u | tr '\n' ' ')
[ "$listeners" = "skiff_proxy_downstream_connections{listener=\"$XNAME\" skiff_proxy_downstream_connections{listener=\"main\" " ] ||
  fail "downstream_connections series: $listeners (want $XNAME and main)"
if command -v promtool >/dev/null; then
  promtool check metrics <<<"$M" >"$TMP/promtool.out" 2>&1 || { cat "$TMP/promtool.out"; fail "promtool check metrics"; }
fi
echo "ok /metrics: series of the 2 current endpoints and listeners only"

kill -TERM "$PROXY_PID"
RC=0
wait "$PROXY_PID" || RC=$?
PROXY_PID=
[ "$RC" = 0 ] || fail "exit code $RC after SIGTERM"
echo "PASS"
