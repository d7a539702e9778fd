#!/usr/bin/env bash
# skiff-proxy as a real process in front of three skiff-echo upstreams,
# driven by curl, nghttp/h2load and openssl: routing, rewrite, header
# operations, a 90/10 split over 10,000 requests, header override,
# mirroring, reasons on proxy-made answers, h2/h2c, TLS and mTLS, L4 TCP,
# reload under load, a refused reload, admin routes, SIGTERM drain.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_basic proxy-test

E1=$(free_port); E2=$(free_port); EM=$(free_port); A1=$(free_port); A2=$(free_port); AM=$(free_port)
P=$(free_port); PT=$(free_port); PL=$(free_port); PX=$(free_port); PA=$(free_port)
DEAD=$(free_port)

echo_at e1 "$E1" "$A1" v1
echo_at e2 "$E2" "$A2" v2
echo_at em "$EM" "$AM" mirror
for a in "$A1" "$A2" "$AM"; do wait_until 10 curl -sf "http://127.0.0.1:$a/readyz" || fail "echo not ready"; done

write_config() { # $1 = extra route prefix for the reload test
  cat >"$TMP/proxy.yaml" <<YAML
admin: {listen: 127.0.0.1:$PA}
workers: 2
access_log: {path: $TMP/access.log}
clusters:
  - {name: v1, endpoints: ["127.0.0.1:$E1"]}
  - {name: v2, endpoints: ["127.0.0.1:$E2"], protocol: h2}
  - {name: shadow, endpoints: ["127.0.0.1:$EM"]}
  - {name: dead, endpoints: ["127.0.0.1:$DEAD"], connect_timeout: 1s}
routes:
  - name: by-host
    match: {host: "*.example.test"}
    cluster: v2
  - name: by-header
    match: {path: {prefix: /h/}, headers: [{name: x-team, exact: blue}]}
    rewrite: {prefix: /}
    cluster: v2
  - name: by-query
    match: {path: {prefix: /q/}, query: [{name: pick, regex: "^v2$"}]}
    rewrite: {prefix: /}
    cluster: v2
  - name: by-method
    match: {path: {exact: /echo}, method: POST}
    cluster: v2
  - name: split
    match: {path: {prefix: /split/}}
    rewrite: {prefix: /}
    backends: [{cluster: v1, weight: 90}, {cluster: v2, weight: 10}]
    overrides: [{header: x-canary, value: "always", cluster: v2}]
  - name: mirrored
    match: {path: {exact: /mirror}}
    rewrite: {path: /}
    cluster: v1
    mirror: {cluster: shadow, percent: 100}
  - name: dead
    match: {path: {prefix: /dead}}
    cluster: dead
  - name: $1
    match: {path: {regex: "^/(headers|status/[0-9]+|)$"}}
    request_headers: {add: {x-added: "yes"}, remove: [x-secret]}
    response_headers: {add: {x-route: "$1"}, remove: [x-skiff-version]}
    cluster: v1
listeners:
  - {name: main, address: 127.0.0.1:$P}
  - name: tls
    address: 127.0.0.1:$PT
    tls: {cert: $CERTS/server.pem, key: $CERTS/server.key, ca: $CERTS/ca.pem, client_auth: require}
    forward_client_cert: sanitize_set
  - {name: link, address: 127.0.0.1:$PL, protocol: tcp, cluster: v1}
YAML
}
write_config headers-a
"$BIN/skiff-proxy" --check --config "$TMP/proxy.yaml" | has "config ok" || fail "--check"
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" 2>"$TMP/proxy.log" &
PPID_=$!
wait_until 10 curl -sf "http://127.0.0.1:$PA/readyz" || fail "proxy not ready"
U="http://127.0.0.1:$P"

# ---- routing
curl -s -H 'Host: api.example.test' "$U/" | has '"version": "v2"' || fail "host route"
curl -s -H 'x-team: blue' "$U/h/" | has '"version": "v2"' || fail "header route"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$U/h/")" = 404 ] || fail "header route must not match without the header"
curl -s "$U/q/?pick=v2" | has '"version": "v2"' || fail "query route"
curl -s "$U/q/?pick=v2" | has '"path": "/"' || fail "rewrite prefix"
[ "$(curl -s -d hi "$U/echo")" = hi ] || fail "method route"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$U/echo")" = 404 ] || fail "GET /echo must not match"
echo "routing ok"

# ---- header add/remove, forwarded headers, trace context
H=$(curl -s -H 'x-secret: s3' -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' \
  -H 'tracestate: a=1' "$U/headers")
echo "$H" | has '"x-added": "yes"' || fail "request header add: $H"
echo "$H" | has 'x-secret' && fail "request header remove"
echo "$H" | has '"x-forwarded-for": "127.0.0.1"' || fail "x-forwarded-for"
echo "$H" | has '"x-forwarded-proto": "http"' || fail "x-forwarded-proto"
echo "$H" | has '"x-request-id": "' || fail "x-request-id"
echo "$H" | has '"traceparent": "00-0af7651916cd43dd8448eb211c80319c-' || fail "traceparent continued"
echo "$H" | has '"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331' && fail "span id must change"
echo "$H" | has '"tracestate": "a=1"' || fail "tracestate kept"
curl -s -H 'x-request-id: my-id-1' "$U/headers" | has '"x-request-id": "my-id-1"' || fail "x-request-id kept"
R=$(curl -s -D - -o /dev/null "$U/status/200")
echo "$R" | has -i '^x-route: headers-a' || fail "response header add"
echo "$R" | has -i '^x-skiff-version' && fail "response header remove"
echo "headers ok"

# ---- 90/10 split over 10,000 requests on keep-alive connections
for i in $(seq 1 2500); do echo "url = $U/split/status/200"; done >"$TMP/urls"
: >"$TMP/split"
for k in 1 2 3 4; do curl -s -K "$TMP/urls" -D - -o /dev/null >>"$TMP/split" & done
wait_until 120 bash -c "[ \$(grep -ci '^x-skiff-version' '$TMP/split') -ge 10000 ]" || true
wait %5 %6 %7 %8 2>/dev/null || true
N1=$(grep -ci '^x-skiff-version: v1' "$TMP/split" || true)
N2=$(grep -ci '^x-skiff-version: v2' "$TMP/split" || true)
[ $((N1 + N2)) -eq 10000 ] || fail "split: $N1 + $N2 != 10000"
[ "$N2" -ge 700 ] && [ "$N2" -le 1300 ] || fail "split: v2 got $N2 of 10000 (want 1000 +- 300)"
echo "split ok: v1=$N1 v2=$N2"
for i in $(seq 1 20); do curl -s -H 'x-canary: always' -D - -o /dev/null "$U/split/status/200"; done |
  grep -ci '^x-skiff-version: v2' | grep -qx 20 || fail "override"
echo "override ok"

# ---- mirroring: the shadow cluster sees the copies
for i in $(seq 1 5); do curl -s "$U/mirror" >/dev/null; done
wait_until 10 bash -c "curl -s http://127.0.0.1:$AM/metrics | grep -q 'skiff_echo_requests_total{code=\"200\"} 5'" ||
  fail "mirror did not reach the shadow cluster"
echo "mirror ok"

# ---- answers of the proxy's own carry a reason
R=$(curl -s -i "$U/nowhere")
head -1 <<<"$R" | has 404 && echo "$R" | has -i '^x-skiff-reason: no_route' || fail "no_route: $R"
R=$(curl -s -i "$U/dead")
head -1 <<<"$R" | has 503 && echo "$R" | has -i '^x-skiff-reason: upstream_connect_failure' || fail "dead: $R"
echo "$R" | tail -1 | has upstream_connect_failure || fail "reason body"
grep -q '"reason":"upstream_connect_failure"' "$TMP/access.log" || fail "access log reason"
grep -q '"route":"split","cluster":"v1"' "$TMP/access.log" || fail "access log route/cluster"
echo "reasons ok"

# ---- h2 (prior knowledge) downstream, h2 via ALPN on TLS
nghttp -n --stat "$U/status/200" >/dev/null 2>&1 || fail "h2c"
curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version}' "$U/status/200" | has 2 || fail "h2c curl"
T="https://127.0.0.1:$PT"
curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key" --http2 \
  -o /dev/null -w '%{http_version} %{http_code}' "$T/status/200" | has '^2 200' || fail "h2 over mTLS"
curl -s --cacert "$CERTS/ca.pem" -o /dev/null "$T/status/200" && fail "mTLS listener accepted a client without a certificate"
curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/rogue.pem" --key "$CERTS/rogue.key" -o /dev/null "$T/status/200" &&
  fail "mTLS listener accepted an untrusted certificate"
grep -q '"peer_spiffe":"spiffe://skiff.test/region/local/workload/client"' "$TMP/access.log" || fail "peer_spiffe in log"
# forward_client_cert: the upstream learns the client's SPIFFE ID on the
# mTLS listener (sanitize_set replaces what the client sent); the plain
# listener (default sanitize) drops a client's claim
R=$(curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key" \
  -H 'x-forwarded-client-cert: URI=spiffe://skiff.test/forged' "$T/headers")
has -F '"x-forwarded-client-cert": "URI=spiffe://skiff.test/region/local/workload/client"' <<<"$R" ||
  fail "x-forwarded-client-cert on the mTLS listener: $R"
R=$(curl -s -H 'x-forwarded-client-cert: URI=spiffe://skiff.test/forged' "$U/headers")
has -i 'x-forwarded-client-cert' <<<"$R" && fail "a client's x-forwarded-client-cert reached the upstream: $R"
echo "tls ok"

# ---- L4 TCP pass-through
curl -s "http://127.0.0.1:$PL/" | has '"version": "v1"' || fail "tcp pass-through"
head -c 300000 /dev/urandom >"$TMP/blob"
curl -s --data-binary @"$TMP/blob" -H 'content-type: application/octet-stream' "http://127.0.0.1:$PL/echo" >"$TMP/blob.back"
cmp -s "$TMP/blob" "$TMP/blob.back" || fail "tcp pass-through of 300 KB"
echo "tcp ok"

# ---- admin
curl -s "http://127.0.0.1:$PA/config_dump" | has '"version": 1' || fail "config_dump"
curl -s "http://127.0.0.1:$PA/clusters" | has '"address": "127.0.0.1:'"$E1"'"' || fail "clusters"
curl -s "http://127.0.0.1:$PA/metrics" >"$TMP/metrics"
grep -q 'skiff_proxy_requests_total{route="split",cluster="v1",class="2xx"}' "$TMP/metrics" || fail "requests metric"
grep -q 'skiff_proxy_upstream_rq_total{cluster="v2"' "$TMP/metrics" || fail "upstream metric"
if command -v promtool >/dev/null; then promtool check metrics <"$TMP/metrics" >/dev/null 2>&1 || true; fi
echo "admin ok"

# ---- latency by cluster and endpoint, open connections by listener and cluster
mval() { # the value of one sample ("name{labels}") or 0 when absent
  curl -s "http://127.0.0.1:$PA/metrics" >"$TMP/m1"
  awk -v k="$1" '$1 == k { v = $2 } END { print v == "" ? 0 : v }' "$TMP/m1"
}
CD='skiff_proxy_cluster_request_duration_seconds_count{cluster="v1"}'
ED='skiff_proxy_upstream_rq_duration_seconds_count{cluster="v1",endpoint="127.0.0.1:'"$E1"'"}'
c0=$(mval "$CD"); e0=$(mval "$ED")
for i in 1 2 3; do curl -sf -o /dev/null "$U/status/200" || fail "request $i"; done
c1=$(mval "$CD"); e1=$(mval "$ED")
[ "$c1" = $((c0 + 3)) ] || fail "cluster histogram count $c0 -> $c1, want +3"
[ "$e1" = $((e0 + 3)) ] || fail "endpoint histogram count $e0 -> $e1, want +3"
grep -q '^skiff_proxy_cluster_request_duration_seconds_bucket{cluster="v1",le="+Inf"} '"$c1"'$' "$TMP/m1" ||
  fail "cluster histogram buckets"
# pooled keep-alive connections to v1 stay open; the dead cluster has none
U1=$(mval 'skiff_proxy_upstream_connections{cluster="v1"}')
[ "${U1%.*}" -ge 1 ] || fail "upstream_connections{v1} = $U1 after requests"
[ "$(mval 'skiff_proxy_upstream_connections{cluster="dead"}')" = 0 ] || fail "upstream_connections{dead} not 0"
# a client connection held open counts on its listener, and stops counting once closed
DC='skiff_proxy_downstream_connections{listener="main"}'
mis() { [ "$(mval "$1")" = "$2" ]; }
wait_until 10 mis "$DC" 0 ||
  fail "downstream_connections{main} not 0 while idle"
exec 5<>"/dev/tcp/127.0.0.1/$P"
wait_until 10 mis "$DC" 1 ||
  fail "downstream_connections{main} not 1 with a connection open"
exec 5<&- 5>&-
wait_until 10 mis "$DC" 0 ||
  fail "downstream_connections{main} not back to 0 after close"
curl -s "http://127.0.0.1:$PA/metrics" >"$TMP/metrics"
promtool check metrics <"$TMP/metrics" >"$TMP/promtool.out" 2>&1 || { cat "$TMP/promtool.out"; fail "promtool check metrics"; }
echo "latency and connection metrics ok"

# ---- reload under load: h2load runs while SIGHUP changes a route
h2load -n 20000 -c 8 -m 4 --h1 "$U/status/200" >"$TMP/h2load.out" 2>&1 &
LOAD=$!
sleep 0.3
write_config headers-b
kill -HUP "$PPID_"
wait_until 10 bash -c "curl -s -D - -o /dev/null $U/status/200 | grep -qi 'x-route: headers-b'" || fail "reload not applied"
write_config headers-c
kill -HUP "$PPID_"
wait "$LOAD" || true
grep -q 'requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored' "$TMP/h2load.out" ||
  { cat "$TMP/h2load.out"; fail "reload under load dropped requests"; }
wait_until 10 bash -c "curl -s -D - -o /dev/null $U/status/200 | grep -qi 'x-route: headers-c'" || fail "second reload"
curl -s "http://127.0.0.1:$PA/config_dump" | has '"version": 3' || fail "config version after reloads"
echo "reload under load ok"

# ---- a bad config is refused and the old one keeps serving
sed -i 's/cluster: v1$/cluster: nope/' "$TMP/proxy.yaml"
kill -HUP "$PPID_"
wait_until 10 grep -q "unknown cluster 'nope'" "$TMP/proxy.log" || fail "reload error not logged"
curl -s -D - -o /dev/null "$U/status/200" | has -i 'x-route: headers-c' || fail "old config lost"
grep -q "proxy.yaml:[0-9]*:[0-9]*" "$TMP/proxy.log" || fail "error without file:line:col"
echo "refused reload ok"

# ---- SIGTERM drains and exits 0
kill -TERM "$PPID_"
RC=0; wait "$PPID_" || RC=$?
PPID_=
[ "$RC" = 0 ] || fail "exit code $RC after SIGTERM"
echo "PASS"
