#!/usr/bin/env bash
# skiff-proxy features of issue 3 that the other proxy tests do not reach,
# each against real peers (skiff-echo, openssl s_server, curl, raw sockets):
# - mutual TLS `client_auth: optional`: no certificate passes, a valid one is
#   logged with its SPIFFE ID, an untrusted one is refused;
# - mutual TLS to an upstream (openssl s_server demanding a client
#   certificate): the cluster's cert is presented, without one the try fails
#   with a reason;
# - retries on reset, connect failure and per-try timeout;
# - least_request: with one request held on an endpoint, the next ones go to
#   the other endpoint;
# - reasons upstream_timeout (504), upstream_reset (502),
#   upstream_connect_timeout and no_healthy_upstream (503);
# - malformed requests get an error and never reach the upstream, and the
#   proxy keeps serving;
# - an idle keep-alive client connection survives a SIGHUP reload;
# - examples/proxy/proxy.yaml passes --check;
# - SIGTERM lets an in-flight request finish before exiting 0, also with a
#   timed-out try still waiting on its upstream and an L4 relay its client
#   closes during the drain.
# No timing is asserted; every wait is bounded.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_basic proxy-edges

E1=$(free_port); E2=$(free_port); EC=$(free_port); A1=$(free_port); A2=$(free_port); AC=$(free_port)
ES=$(free_port); AS=$(free_port)
TS=$(free_port); RST=$(free_port); DEAD=$(free_port); BH=$(free_port)
P=$(free_port); PO=$(free_port); PA=$(free_port); PL=$(free_port); PI=$(free_port)

echo_at e1 "$E1" "$A1" v1
echo_at e2 "$E2" "$A2" v2
echo_at canary "$EC" "$AC" canary
echo_at slow "$ES" "$AS" slow "latency: 4s"
for a in "$A1" "$A2" "$AC" "$AS"; do wait_until 10 curl -sf "http://127.0.0.1:$a/readyz" || fail "echo not ready"; done

# a TLS upstream that demands a client certificate from the test CA
openssl s_server -quiet -accept "127.0.0.1:$TS" -cert "$CERTS/server.pem" -key "$CERTS/server.key" \
  -CAfile "$CERTS/ca.pem" -Verify 1 -verify_return_error -www </dev/null >"$TMP/s_server.log" 2>&1 &
PIDS+=($!)
# an upstream that reads the request and closes without answering
python3 - "$RST" >"$TMP/reset.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(300)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try: c.recv(65536)
    except OSError: pass
    c.close()
PY
PIDS+=($!)
wait_until 10 bash -c "echo | openssl s_client -connect 127.0.0.1:$TS -CAfile $CERTS/ca.pem -cert $CERTS/client.pem -key $CERTS/client.key >/dev/null 2>&1" ||
  fail "openssl s_server not up"
wait_until 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RST" || fail "reset upstream not up"
# an upstream whose accept queue is full: the kernel drops new SYNs, so a
# connect neither succeeds nor fails until the proxy's connect_timeout
python3 - "$BH" >"$TMP/blackhole.log" 2>&1 <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    fill.append(c)
print("ready", flush=True)
time.sleep(300)
PY
PIDS+=($!)
wait_until 10 grep -q ready "$TMP/blackhole.log" || fail "blackhole upstream not up"

write_config() { # $1 = value of the x-gen response header
  cat >"$TMP/proxy.yaml" <<YAML
admin: {listen: 127.0.0.1:$PA}
workers: 1
access_log: {path: $TMP/access.log, fields: [ts, path, status, reason, route, cluster, endpoint, attempts, peer_spiffe]}
clusters:
  - {name: rs-pair, endpoints: ["127.0.0.1:$RST", "127.0.0.1:$E1"]}
  - {name: cf-pair, endpoints: ["127.0.0.1:$DEAD", "127.0.0.1:$E1"]}
  - {name: pt-pair, endpoints: ["127.0.0.1:$ES", "127.0.0.1:$E1"]}
  - {name: pair, endpoints: ["127.0.0.1:$E1", "127.0.0.1:$E2"], lb: least_request}
  - {name: v1, endpoints: ["127.0.0.1:$E1"]}
  - {name: v2, endpoints: ["127.0.0.1:$E2"]}
  - {name: canary, endpoints: ["127.0.0.1:$EC"]}
  - name: tls-up
    endpoints: ["127.0.0.1:$TS"]
    tls: {ca: $CERTS/ca.pem, cert: $CERTS/client.pem, key: $CERTS/client.key, sni: localhost}
  - name: tls-nocert
    endpoints: ["127.0.0.1:$TS"]
    tls: {ca: $CERTS/ca.pem, sni: localhost}
  - {name: resetter, endpoints: ["127.0.0.1:$RST"]}
  - {name: blackhole, endpoints: ["127.0.0.1:$BH"], connect_timeout: 300ms}
  - name: sick
    endpoints: ["127.0.0.1:$DEAD"]
    health_check: {path: /, interval: 100ms, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 1}
routes:
  - name: rt-reset
    match: {path: {exact: /rt/reset}}
    rewrite: {path: /}
    cluster: rs-pair
    retry: {attempts: 2, retry_on: [reset], backoff: {base: 1ms}}
  - name: rt-connect
    match: {path: {exact: /rt/connect}}
    rewrite: {path: /}
    cluster: cf-pair
    retry: {attempts: 2, retry_on: [connect-failure], backoff: {base: 1ms}}
  - name: rt-pertry
    match: {path: {exact: /rt/pertry}}
    rewrite: {path: /}
    cluster: pt-pair
    retry: {attempts: 2, retry_on: [timeout], per_try_timeout: 300ms, backoff: {base: 1ms}}
  - {name: lr, match: {path: {prefix: /lr/}}, rewrite: {prefix: /}, cluster: pair}
  - {name: tls, match: {path: {exact: /tls}}, rewrite: {path: /}, cluster: tls-up}
  - {name: tlsnocert, match: {path: {exact: /tlsnocert}}, rewrite: {path: /}, cluster: tls-nocert}
  - {name: reset, match: {path: {exact: /reset}}, cluster: resetter}
  - {name: blackhole, match: {path: {exact: /blackhole}}, cluster: blackhole}
  - {name: sick, match: {path: {exact: /sick}}, cluster: sick}
  - {name: short, match: {path: {prefix: /short/}}, rewrite: {prefix: /}, cluster: v1, timeout: 300ms}
  - {name: canary, match: {path: {prefix: /canary}}, rewrite: {prefix: /}, cluster: canary}
  - {name: who-workload, match: {path: /who/, spiffe: "spiffe://skiff.test/region/local/workload/client"}, cluster: canary}
  - {name: who-daemon, match: {path: /who/, spiffe: {prefix: "spiffe://skiff.test/region/local/daemon/"}}, cluster: v2}
  - name: rest
    match: {path: {prefix: /}}
    response_headers: {add: {x-gen: "$1"}}
    cluster: v1
listeners:
  - {name: main, address: 127.0.0.1:$P}
  - name: opt
    address: 127.0.0.1:$PO
    tls: {cert: $CERTS/server.pem, key: $CERTS/server.key, ca: $CERTS/ca.pem, client_auth: optional}
  - {name: link, address: 127.0.0.1:$PL, protocol: tcp, cluster: v1}
  - {name: brief, address: 127.0.0.1:$PI, idle_timeout: 300ms}
YAML
}
# the commented example of every feature is a valid config (its certificate
# paths pointed at the test certificates)
sed -e "s#/etc/skiff/ca.pem#$CERTS/ca.pem#g" -e "s#/etc/skiff/proxy.pem#$CERTS/client.pem#g" \
  -e "s#/etc/skiff/proxy.key#$CERTS/client.key#g" -e "s#/etc/skiff/server.pem#$CERTS/server.pem#g" \
  -e "s#/etc/skiff/server.key#$CERTS/server.key#g" "$SKIFF_SRC_DIR/examples/proxy/proxy.yaml" >"$TMP/example.yaml"
"$BIN/skiff-proxy" --check --config "$TMP/example.yaml" | has "config ok" || fail "examples/proxy/proxy.yaml does not pass --check"
grep -q '/etc/skiff/' "$TMP/example.yaml" && fail "examples/proxy/proxy.yaml names a file this test does not map"

write_config one
"$BIN/skiff-proxy" --check --config "$TMP/proxy.yaml" | has "config ok" || fail "--check"
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" 2>"$TMP/proxy.log" &
PPID_=$!
wait_until 10 curl -sf "http://127.0.0.1:$PA/readyz" || fail "proxy not ready"
U="http://127.0.0.1:$P"
# active N: N requests in the proxy (tries abandoned after a timeout included)
active() { curl -s "http://127.0.0.1:$PA/metrics" | has "^skiff_proxy_active_requests $1\$"; }

# ---- client_auth: optional
O="https://127.0.0.1:$PO"
[ "$(curl -s --cacert "$CERTS/ca.pem" -o /dev/null -w '%{http_code}' "$O/status/200")" = 200 ] ||
  fail "optional mTLS refused a client without a certificate"
[ "$(curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key" -o /dev/null \
  -w '%{http_code}' "$O/status/201")" = 201 ] || fail "optional mTLS refused a valid client certificate"
wait_until 10 grep -q '"status":201.*"peer_spiffe":"spiffe://skiff.test/region/local/workload/client"' "$TMP/access.log" ||
  grep -q '"peer_spiffe":"spiffe://skiff.test/region/local/workload/client".*"status":201' "$TMP/access.log" ||
  fail "optional mTLS: peer_spiffe not logged"
curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/rogue.pem" --key "$CERTS/rogue.key" -o /dev/null "$O/status/200" &&
  fail "optional mTLS accepted an untrusted certificate"
echo "optional mtls ok"

# ---- mutual TLS to an upstream
R=$(curl -s -i "$U/tls")
head -1 <<<"$R" | has ' 200' || fail "TLS upstream with a client certificate: $R"
echo "$R" | has -i 's_server' || fail "TLS upstream body is not openssl's: $R"
R=$(curl -s -i "$U/tlsnocert")
head -1 <<<"$R" | has ' 50[23]' || fail "TLS upstream without a client certificate answered: $R"
echo "$R" | has -i '^x-skiff-reason: upstream_' || fail "no reason on a refused upstream handshake: $R"
echo "upstream mtls ok"

# ---- retries on reset, connect failure and per-try timeout
# (two endpoints, round robin: every other first try lands on the bad one,
# its retry on the good one)
for k in reset connect pertry; do
  curl -s -o /dev/null -D "$TMP/rt-$k.h" --max-time 60 "$U/rt/$k?n=[1-6]" || true
  [ "$(grep -c '^HTTP/1.1 200 ' "$TMP/rt-$k.h" || true)" = 6 ] || fail "retry on $k: $(grep '^HTTP' "$TMP/rt-$k.h" | sort | uniq -c)"
  grep -q "\"route\":\"rt-$k\".*\"attempts\":2" "$TMP/access.log" || fail "retry on $k: no request took 2 tries"
done
grep -Eq '^skiff_proxy_retries_total\{cluster="pt-pair"\} [1-9]' <<<"$(curl -s "http://127.0.0.1:$PA/metrics")" ||
  fail "per-try timeout retries not counted"
# per route latency histogram, per endpoint try counts (the failed tries as class error)
M=$(curl -s "http://127.0.0.1:$PA/metrics")
grep -q '^skiff_proxy_request_duration_seconds_bucket{route="rt-reset",le="+Inf"} 6$' <<<"$M" ||
  fail "no latency histogram for route rt-reset: $(grep 'duration_seconds_count' <<<"$M")"
grep -Eq '^skiff_proxy_upstream_rq_total\{cluster="rs-pair",endpoint="127.0.0.1:'"$RST"'",class="error"\} [1-9]' <<<"$M" ||
  fail "failed tries of the resetting endpoint not counted: $(grep 'upstream_rq_total{cluster="rs-pair"' <<<"$M")"
echo "retries ok (reset, connect-failure, per-try timeout)"

# ---- least_request: one request held on an endpoint, the rest go to the other
wait_until 15 active 0 || fail "tries abandoned by the per-try timeout never ended"
curl -s -o /dev/null -D "$TMP/held.h" --max-time 30 "$U/lr/delay/3s" &
HELD=$!
wait_until 10 active 1 || fail "held request not in flight"
curl -s -o /dev/null -D "$TMP/lr.h" "$U/lr/status/200?n=[1-10]"
wait "$HELD" || fail "held request failed"
HV=$(sed -n 's/^x-skiff-version: *\([a-z0-9]*\).*/\1/Ip' "$TMP/held.h")
[ -n "$HV" ] || fail "held request has no version"
[ "$(grep -ci '^x-skiff-version:' "$TMP/lr.h")" = 10 ] || fail "least_request: not 10 answers"
[ "$(grep -ci "^x-skiff-version: $HV" "$TMP/lr.h" || true)" = 0 ] ||
  fail "least_request sent requests to the busy endpoint ($HV)"
echo "least_request ok (busy: $HV)"

# ---- reasons of the proxy's own answers
R=$(curl -s -i "$U/short/delay/1s")
head -1 <<<"$R" | has ' 504' && echo "$R" | has -i '^x-skiff-reason: upstream_timeout' || fail "upstream_timeout: $R"
R=$(curl -s -i "$U/reset")
head -1 <<<"$R" | has ' 502' && echo "$R" | has -i '^x-skiff-reason: upstream_reset' || fail "upstream_reset: $R"
R=$(curl -s -i --max-time 20 "$U/blackhole")
head -1 <<<"$R" | has ' 503' && echo "$R" | has -i '^x-skiff-reason: upstream_connect_timeout' ||
  fail "upstream_connect_timeout: $R"
sick() { curl -s -i "$U/sick" | has -i '^x-skiff-reason: no_healthy_upstream'; }
wait_until 10 sick || fail "no_healthy_upstream: $(curl -s -i "$U/sick")"
for r in upstream_timeout upstream_reset upstream_connect_timeout no_healthy_upstream; do
  grep -q "\"reason\":\"$r\"" "$TMP/access.log" || fail "access log lacks $r"
done
echo "reasons ok"

# ---- malformed requests: an error, never the upstream, and the proxy keeps serving
python3 - "$P" >"$TMP/malformed.out" 2>&1 <<'PY' || { cat "$TMP/malformed.out"; fail "malformed requests"; }
import socket, sys
port = int(sys.argv[1])
bad = [
    b"GET /canary HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"GET /canary HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"GET /canary HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    b"GET /canary HTTP/1.1\r\nHost: a\r\nx: a\rb\r\n\r\n",
    b"GET /canary\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G@T /canary HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /canary HTTP/9.9\r\nHost: a\r\n\r\n",
    b"GET /canary HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n",
    b"POST /canary HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST /canary HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked, chunked\r\n\r\n0\r\n\r\n",
    b"GET /canary HTTP/1.1\r\nHost: a\r\nx-long: " + b"a" * 200000 + b"\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,
]
for i, req in enumerate(bad):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(req)
    except OSError:
        pass  # the proxy may close before reading it all
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    first = data.split(b"\r\n", 1)[0]
    print(i, first)
    if data and not (first.startswith(b"HTTP/1.1 4") or first.startswith(b"HTTP/1.1 5") or
                     first.startswith(b"HTTP/1.0 4") or first.startswith(b"HTTP/1.0 5")):
        sys.exit("request %d got %r" % (i, first))
PY
curl -s "http://127.0.0.1:$AC/metrics" | has '^skiff_echo_requests_total{' &&
  fail "a malformed request reached the upstream: $(curl -s "http://127.0.0.1:$AC/metrics" | grep skiff_echo_requests_total)"
curl -s "$U/canary" | has '"version": "canary"' || fail "proxy stopped serving after malformed requests"
# (the check above can see a request: the one just made is counted)
wait_until 10 bash -c "curl -s http://127.0.0.1:$AC/metrics | grep -q '^skiff_echo_requests_total{code=\"200\"} 1'" ||
  fail "the canary upstream does not count requests as expected"
kill -0 "$PPID_" || fail "proxy died"
echo "malformed ok"

# ---- routes matching the client certificate's SPIFFE ID (after the malformed
# requests, which check that canary saw nothing): two certificates
# of the test CA (workload/client, daemon/server) go to two clusters; no
# certificate, or plaintext, falls through to the catch-all route (v1)
who() { # the upstream's version label (skiff-echo's x-skiff-version header)
  local h
  h=$(curl -s --cacert "$CERTS/ca.pem" -o /dev/null -D - "$@") || true
  awk 'tolower($1) == "x-skiff-version:" { sub(/\r$/, "", $2); print $2 }' <<<"$h"
}
V=$(who --cert "$CERTS/client.pem" --key "$CERTS/client.key" "$O/who/")
[ "$V" = canary ] || fail "spiffe exact: workload/client went to $V, want canary"
V=$(who --cert "$CERTS/server.pem" --key "$CERTS/server.key" "$O/who/")
[ "$V" = v2 ] || fail "spiffe prefix: daemon/server went to $V, want v2"
V=$(who "$O/who/")
[ "$V" = v1 ] || fail "no client certificate went to $V, want v1"
V=$(who "$U/who/")
[ "$V" = v1 ] || fail "plaintext went to $V, want v1"
wait_until 10 grep -q '"route":"who-daemon".*"peer_spiffe":"spiffe://skiff.test/region/local/daemon/server"' "$TMP/access.log" ||
  fail "who-daemon not in the access log with its peer"
# a match.spiffe that is not a SPIFFE ID is a config error with its path
sed 's#spiffe: {prefix: "spiffe://skiff.test/region/local/daemon/"}#spiffe: {prefix: "skiff.test/daemon/"}#' \
  "$TMP/proxy.yaml" >"$TMP/bad-spiffe.yaml"
R=$("$BIN/skiff-proxy" --check --config "$TMP/bad-spiffe.yaml" 2>&1) && fail "--check took a bad match.spiffe"
has 'match.spiffe' <<<"$R" || fail "bad match.spiffe error without its path: $R"
echo "spiffe routing ok"

# ---- an idle keep-alive connection survives a reload
python3 - "$P" "$PA" "$PPID_" "$TMP" >"$TMP/keepalive.out" 2>&1 <<'PY' || { cat "$TMP/keepalive.out"; fail "keep-alive across reload"; }
import os, signal, socket, subprocess, sys, time, json, urllib.request
port, admin, pid, tmp = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]

def get(s, f):
    s.sendall(b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(1)
        if not c:
            sys.exit("connection closed by the proxy")
        head += c
    h = {}
    for line in head.decode().split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            h[k.strip().lower()] = v.strip()
    n = int(h.get("content-length", "0"))
    while n:
        n -= len(f.read(n) or sys.exit("short body"))
    return head.split(b"\r\n", 1)[0], h.get("x-gen")

def version():
    with urllib.request.urlopen("http://127.0.0.1:%s/config_dump" % admin, timeout=5) as r:
        return json.load(r)["version"]

s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rb")
st, gen = get(s, f)
assert st.endswith(b"200 OK") or b" 200" in st, st
assert gen == "one", gen
v0 = version()
subprocess.run(["sed", "-i", 's/x-gen: "one"/x-gen: "two"/', tmp + "/proxy.yaml"], check=True)
os.kill(pid, signal.SIGHUP)
for _ in range(100):
    if version() > v0:
        break
    time.sleep(0.1)
else:
    sys.exit("reload not applied")
time.sleep(0.5)  # the connection sits idle while the worker swaps
st, gen = get(s, f)
assert b" 200" in st, st
print("same connection after reload:", st, gen)
PY
echo "keep-alive across reload ok: $(tail -1 "$TMP/keepalive.out")"

# ---- a keep-alive connection idle past the listener's idle_timeout (300ms on
# "brief") is closed by the proxy; the client waits at most 20 s for the EOF
# (the default idle timeout, 60 s, would leave it open past that)
python3 - "$PI" >"$TMP/idle.out" 2>&1 <<'PY' || { cat "$TMP/idle.out"; fail "idle timeout"; }
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    c = s.recv(4096)
    if not c:
        sys.exit("closed before the response")
    buf += c
head, body = buf.split(b"\r\n\r\n", 1)
assert b" 200" in head.split(b"\r\n", 1)[0], head
assert b"connection: close" not in head.lower(), head
n = int([l.split(b":", 1)[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
while len(body) < n:
    c = s.recv(4096)
    if not c:
        sys.exit("short body")
    body += c
s.settimeout(20)
try:
    extra = s.recv(4096)
except socket.timeout:
    sys.exit("connection still open after 20 s idle")
except ConnectionResetError:
    extra = b""
if extra:
    sys.exit("unexpected bytes on an idle connection: %r" % extra)
print("closed by the proxy after idling")
PY
wait_until 10 bash -c "curl -s http://127.0.0.1:$PA/metrics | grep -q '^skiff_proxy_downstream_connections{listener=\"brief\"} 0\$'" ||
  fail "downstream_connections{brief} not back to 0 after the idle close"
echo "idle timeout ok"

# ---- SIGTERM: the in-flight request finishes, then exit 0
# (also with an abandoned try still upstream: a 504 after 300ms leaves the
# upstream busy for 3s more, and the drain must end when it answers)
wait_until 15 active 0 || fail "earlier requests still in the proxy"
# an L4 relay open across SIGTERM, closed by its client during the drain
exec 4<>"/dev/tcp/127.0.0.1/$PL"
printf 'GET /status/200 HTTP/1.1\r\nHost: t\r\n\r\n' >&4
relays() { curl -s "http://127.0.0.1:$PA/metrics" | has "^skiff_proxy_active_tcp_connections $1\$"; }
wait_until 10 relays 1 || fail "L4 relay not open"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$U/short/delay/3s")" = 504 ] || fail "short route did not time out"
curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$U/delay/2s" >"$TMP/inflight.code" &
INF=$!
wait_until 10 active 2 || fail "request not in flight before SIGTERM"
kill -TERM "$PPID_"
wait "$INF" || true
# the relay is the last thing the drain waits for when its client closes it
wait_until 10 active 0 || fail "requests still in the proxy during the drain"
exec 4>&-
[ "$(cat "$TMP/inflight.code")" = 200 ] || fail "in-flight request during drain got $(cat "$TMP/inflight.code")"
RC=0; wait "$PPID_" || RC=$?
PPID_=
[ "$RC" = 0 ] || fail "exit code $RC after SIGTERM"
echo "PASS"
