#!/usr/bin/env bash
# skiff-proxy loads OpenSSL on first use (platform/runtime/ossl_lazy): the
# binary does not link libssl/libcrypto; a proxy serving plain HTTP/1.1,
# h2c, its admin routes, a reload and an access log never maps them; a
# reload that adds a TLS listener loads them, and curl then gets through
# that listener over mutual TLS while plain traffic keeps flowing.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/proxy_lib.sh"
px_basic proxy-lazy # BIN, CERTS, TMP, PIDS, PPID_ (all killed at exit), fail

if [ "$(uname -m)" != x86_64 ]; then
  echo "SKIP: OpenSSL on first use is built on x86-64 only"
  exit 0
fi

# 1. the binary asks the dynamic linker for neither library
needed=$(readelf -d "$BIN/skiff-proxy" | grep NEEDED || true)
echo "$needed" | grep -qE 'libssl|libcrypto' && fail "skiff-proxy links OpenSSL directly (a runtime OpenSSL call missing from ossl_lazy_syms.h?): $needed"
echo "no libssl/libcrypto in DT_NEEDED"

E=$(free_port); EA=$(free_port); P=$(free_port); PT=$(free_port); PA=$(free_port)
echo_at echo "$E" "$EA" v1
wait_until 10 curl -sf "http://127.0.0.1:$EA/readyz" || fail "echo not ready"

write_config() { # $1 = 1 to add the mTLS listener
  cat >"$TMP/proxy.yaml" <<YAML
admin: {listen: 127.0.0.1:$PA}
workers: 2
access_log: {path: $TMP/access.log}
clusters:
  - {name: up, endpoints: ["127.0.0.1:$E"]}
  - {name: up2, endpoints: ["127.0.0.1:$E"], protocol: h2}
routes:
  - {name: h2up, match: {path: {prefix: /h2/}}, rewrite: {prefix: /}, cluster: up2}
  - {name: all, match: {path: {prefix: /}}, cluster: up}
listeners:
  - {name: main, address: 127.0.0.1:$P}
YAML
  if [ "$1" = 1 ]; then
    cat >>"$TMP/proxy.yaml" <<YAML
  - name: tls
    address: 127.0.0.1:$PT
    tls: {cert: $CERTS/server.pem, key: $CERTS/server.key, ca: $CERTS/ca.pem, client_auth: require}
YAML
  fi
}
maps_ssl() { grep -cE 'libssl|libcrypto' "/proc/$PX/maps" || true; }

write_config 0
"$BIN/skiff-proxy" --config "$TMP/proxy.yaml" 2>"$TMP/proxy.log" &
PX=$!
PPID_=$PX
wait_until 10 curl -sf "http://127.0.0.1:$PA/readyz" || fail "proxy not ready"
U="http://127.0.0.1:$P"

# 2. plain traffic of every kind, and a reload, leave OpenSSL unmapped
for i in 1 2 3; do
  curl -sf -o /dev/null "$U/status/200" || fail "http/1.1"
  curl -sf --http2-prior-knowledge -o /dev/null "$U/status/200" || fail "h2c"
done
curl -sf -o /dev/null "$U/h2/status/200" || fail "h2 upstream"
curl -s -o /dev/null -w '%{http_code}' -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' "$U/status/503" | has 503 ||
  fail "503 passthrough"
for path in /metrics /config_dump /clusters; do
  curl -sf -o /dev/null "http://127.0.0.1:$PA$path" || fail "admin $path"
done
kill -HUP "$PX"
curl -sf -o /dev/null "$U/status/200" || fail "after reload"
grep -q '"status":200' "$TMP/access.log" || fail "access log"
[ "$(maps_ssl)" = 0 ] || fail "plain traffic mapped OpenSSL: $(grep -E 'libssl|libcrypto' /proc/$PX/maps | head -2)"
echo "plain: OpenSSL not mapped, VmRSS $(awk '/^VmRSS/ {print $2, $3}' /proc/$PX/status)"

# 3. a reload that adds an mTLS listener loads it; TLS works, plain still does
write_config 1
kill -HUP "$PX"
T="https://127.0.0.1:$PT"
wait_until 10 curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key" -o /dev/null "$T/status/200" ||
  fail "TLS listener after reload"
curl -s --cacert "$CERTS/ca.pem" --cert "$CERTS/client.pem" --key "$CERTS/client.key" --http2 \
  -o /dev/null -w '%{http_version} %{http_code}' "$T/status/200" | has '^2 200' || fail "h2 over mTLS"
curl -s --cacert "$CERTS/ca.pem" -o /dev/null "$T/status/200" && fail "mTLS listener accepted a client without a certificate"
curl -sf -o /dev/null "$U/status/200" || fail "plain after TLS reload"
[ "$(maps_ssl)" -gt 0 ] || fail "TLS served but OpenSSL is not mapped?"
echo "tls: OpenSSL loaded on the reload, VmRSS $(awk '/^VmRSS/ {print $2, $3}' /proc/$PX/status)"
kill -0 "$PX" || fail "proxy died"
echo "ok"
