#!/usr/bin/env bash
# skiff-telemetry with real peers: a real Prometheus (Debian's
# /usr/bin/prometheus) scrapes itself and remote-writes into Skiff; Skiff
# scrapes a real skiff-echo's /metrics (from scrape_configs and from a
# skiff.yaml daemons list) and its own admin /metrics.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TEL=$BIN/skiff-telemetry
ECHO=$BIN/skiff-echo
with_pids tl-prom tl echo prom

OTLP=$(free_port); QUERY=$(free_port); ADMIN=$(free_port)
EPORT=$(free_port); EADMIN=$(free_port); PPORT=$(free_port); STALL=$(free_port)

# a target that accepts connections and never answers: only the scrape
# timeout can end its scrapes (up 0)
python3 -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
held = []
while True:
    held.append(s.accept()[0])
' "$STALL" >"$TMP/stall.log" 2>&1 &
PIDS+=($!)
wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$STALL" || fail "the silent target is not listening"

cat >"$TMP/echo.yaml" <<EOF2
listen: 127.0.0.1:$EPORT
admin:
  listen: 127.0.0.1:$EADMIN
EOF2
"$ECHO" --config "$TMP/echo.yaml" >"$TMP/echo.log" 2>&1 &
PIDS+=($!)

cat >"$TMP/skiff.yaml" <<EOF2
daemons:
  - name: skiff-echo
    command: skiff-echo
    admin: 127.0.0.1:$EADMIN
EOF2
cat >"$TMP/tl.yaml" <<EOF2
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/data
self_scrape: true
self_scrape_interval: 1s
scrape_skiff_config: $TMP/skiff.yaml
scrape_configs:
  - job: echo-static
    targets: ["127.0.0.1:$EADMIN"]
    interval: 1s
    timeout: 1s
  - job: stall
    targets: ["127.0.0.1:$STALL"]
    interval: 2s
    timeout: 500ms
admin:
  listen: 127.0.0.1:$ADMIN
EOF2
"$TEL" --config "$TMP/tl.yaml" --check | has "config ok" || fail "--check"
"$TEL" --config "$TMP/tl.yaml" >"$TMP/tl.log" 2>&1 &
PIDS+=($!)
wait_until 30 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "skiff-telemetry not ready"
wait_until 30 curl -fsS "http://127.0.0.1:$EADMIN/readyz" || fail "skiff-echo not ready"
curl -fsS "http://127.0.0.1:$EPORT/" >/dev/null

q() { # instant query through Skiff's Prometheus API; prints the first value
  curl -fsS -G --data-urlencode "query=$1" "http://127.0.0.1:$QUERY/api/v1/query" | jq -er '.data.result[0].value[1]'
}

# scrape of skiff-echo's /metrics, both ways, and of ourselves
wait_until 30 sh -c "[ \"\$(curl -fsS -G --data-urlencode 'query=up{job=\"echo-static\"}' http://127.0.0.1:$QUERY/api/v1/query | jq -r '.data.result[0].value[1]')\" = 1 ]" ||
  fail "up{job=echo-static} never 1"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query=skiff_echo_requests_total{job=\"skiff-echo\",code=\"200\"}' http://127.0.0.1:$QUERY/api/v1/query | jq -e '.data.result[0].value[1] | tonumber >= 1'" ||
  fail "skiff_echo_requests_total from the skiff.yaml target missing"
[ "$(q 'up{job="skiff-telemetry"}')" = 1 ] || wait_until 10 sh -c "curl -fsS -G --data-urlencode 'query=up{job=\"skiff-telemetry\"}' http://127.0.0.1:$QUERY/api/v1/query | jq -e '.data.result[0].value[1] == \"1\"'" || fail "self scrape"
# the silent target: its scrapes end at the timeout as up 0
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query=up{job=\"stall\"}' http://127.0.0.1:$QUERY/api/v1/query | jq -e '.data.result[0].value[1] == \"0\"'" ||
  fail "up{job=stall} never 0: the scrape timeout did not end a scrape of a silent target"
d=$(q "scrape_duration_seconds{job=\"echo-static\",instance=\"127.0.0.1:$EADMIN\"}") || fail "no scrape_duration_seconds"
awk -v d="$d" 'BEGIN { exit !(d > 0 && d < 5) }' || fail "scrape_duration_seconds=$d"

# a real Prometheus remote-writes into Skiff
if [ ! -x /usr/bin/prometheus ]; then
  echo "SKIP: /usr/bin/prometheus not installed (apt-get install prometheus)"; echo "1 passed, 0 failed"; exit 0
fi
cat >"$TMP/prom.yml" <<EOF2
global:
  scrape_interval: 1s
  external_labels: {origin: realprom}
scrape_configs:
  - job_name: prom-self
    static_configs: [{targets: ["127.0.0.1:$PPORT"]}]
remote_write:
  - url: http://127.0.0.1:$QUERY/api/v1/write
    queue_config: {batch_send_deadline: 1s, max_samples_per_send: 2000, min_backoff: 100ms, max_backoff: 1s}
EOF2
/usr/bin/prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/prom" \
  --web.listen-address="127.0.0.1:$PPORT" >"$TMP/prom.log" 2>&1 &
PIDS+=($!)
wait_until 60 sh -c "curl -fsS -G --data-urlencode 'query=up{job=\"prom-self\",origin=\"realprom\"}' http://127.0.0.1:$QUERY/api/v1/query | jq -e '.data.result[0].value[1] == \"1\"'" ||
  fail "Prometheus' remote-written up{job=prom-self} never arrived"
wait_until 30 sh -c "curl -fsS -G --data-urlencode 'query=prometheus_build_info{origin=\"realprom\"}' http://127.0.0.1:$QUERY/api/v1/query | jq -e '.data.result | length == 1'" ||
  fail "prometheus_build_info not received"
n=$(curl -fsS "http://127.0.0.1:$QUERY/api/v1/label/__name__/values" | jq '[.data[] | select(startswith("prometheus_"))] | length')
[ "$n" -gt 20 ] || fail "only $n prometheus_* metric names arrived"
# nothing refused as bad data (Prometheus sorts labels; Skiff accepts them as sent)
curl -fsS "http://127.0.0.1:$ADMIN/metrics" | has '^skiff_telemetry_accepted_total{signal="metrics"} ' || fail "no self metrics"
if curl -fsS "http://127.0.0.1:$ADMIN/metrics" | has 'skiff_telemetry_dropped_requests_total{reason="bad_request"}'; then
  fail "remote-write requests refused as bad: $(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | grep dropped)"
fi
echo "Prometheus remote-write: $n prometheus_* metrics received"
echo "1 passed, 0 failed"
