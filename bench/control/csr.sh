#!/usr/bin/env bash
# Certificate issuance side by side, in the same run: skiff-control's CSR
# endpoint (POST /api/v1/ca/csr: CSR checks, ECDSA P-256 signature by the
# intermediate, an audit row committed durably) against CloudFlare's cfssl
# (`cfssl serve`, POST /api/v1/cfssl/sign, the same kind of ECDSA P-256 CA).
#
#   skiff-https  control as skiff up runs it: HTTPS (its CA-issued
#                certificate), admin bearer token
#   skiff-http   the same without TLS (the transport cfssl serve speaks)
#   skiff-nosync skiff-http with durable: false (the audit row's commit is
#                not fsynced; cfssl keeps no record at all)
#   cfssl-http   cfssl serve with an openssl-made ECDSA root
#
# Each: csr_load.py posts pre-made P-256 CSRs for $SECS s from $CONNS
# keep-alive connections and counts issued certificates (every answer
# checked). Usage: bash bench/control/csr.sh (BUILD=build/release by default;
# SECS, CONNS, NCSR in the env). Needs python3, openssl and cfssl (Debian:
# golang-cfssl). Figures: docs/benchmarks.md.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/support/lib.sh"
BUILD=${BUILD:-$SRC/build/release}
CONTROL=$BUILD/bin/skiff-control
SECS=${SECS:-10}
CONNS=${CONNS:-8}
NCSR=${NCSR:-64}
[ -x "$CONTROL" ] || { echo "build skiff-control first ($CONTROL)" >&2; exit 1; }
command -v cfssl >/dev/null || { echo "cfssl is needed (apt-get install golang-cfssl)" >&2; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench-csr.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# the requests: P-256 keys, one SPIFFE URI SAN each (what a daemon sends)
mkdir -p "$TMP/csr"
for i in $(seq 1 "$NCSR"); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj "/CN=w$i" \
    -addext "subjectAltName=URI:spiffe://skiff.local/region/local/workload/w$i" -out "$TMP/csr/$i.csr" 2>/dev/null
done

run_control() { # label tls(0/1) durable(true/false)
  local label=$1 tls=$2 durable=${3:-true} port admin
  port=$(free_port); admin=$(free_port)
  rm -rf "$TMP/state"; mkdir -p "$TMP/state"
  cat >"$TMP/c.yaml" <<EOC
listen: 127.0.0.1:$port
state_dir: $TMP/state
durable: $durable
log: {level: warn}
admin: {listen: 127.0.0.1:$admin}
EOC
  [ "$tls" = 1 ] && echo "tls: {identity: true}" >>"$TMP/c.yaml"
  "$CONTROL" --config "$TMP/c.yaml" >"$TMP/$label.log" 2>&1 &
  PIDS+=($!)
  wait_until 30 curl -sf "http://127.0.0.1:$admin/readyz" || { cat "$TMP/$label.log"; exit 1; }
  local scheme=http; [ "$tls" = 1 ] && scheme=https
  local tok; tok=$(cat "$TMP/state/admin.token")
  python3 "$SRC/bench/control/csr_load.py" skiff "$scheme://127.0.0.1:$port" "$TMP/state/ca/bundle.pem" "$tok" \
    "$TMP/csr" 2 "$CONNS" >/dev/null # warm-up
  printf '%-12s %s\n' "$label" "$(python3 "$SRC/bench/control/csr_load.py" skiff "$scheme://127.0.0.1:$port" \
    "$TMP/state/ca/bundle.pem" "$tok" "$TMP/csr" "$SECS" "$CONNS")"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  unset 'PIDS[-1]'
}

run_cfssl() {
  local port; port=$(free_port)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN=bench-root \
    -keyout "$TMP/cfssl-ca.key" -out "$TMP/cfssl-ca.pem" 2>/dev/null
  cat >"$TMP/cfssl.json" <<'EOC'
{"signing": {"default": {"expiry": "1h", "usages": ["digital signature", "server auth", "client auth"]}}}
EOC
  cfssl serve -address 127.0.0.1 -port "$port" -ca "$TMP/cfssl-ca.pem" -ca-key "$TMP/cfssl-ca.key" \
    -config "$TMP/cfssl.json" >"$TMP/cfssl.log" 2>&1 &
  PIDS+=($!)
  wait_until 30 sh -c "curl -s -o /dev/null http://127.0.0.1:$port/api/v1/cfssl/sign" ||
    { cat "$TMP/cfssl.log"; exit 1; }
  python3 "$SRC/bench/control/csr_load.py" cfssl "http://127.0.0.1:$port" - - "$TMP/csr" 2 "$CONNS" >/dev/null
  printf '%-12s %s\n' "cfssl-http" "$(python3 "$SRC/bench/control/csr_load.py" cfssl "http://127.0.0.1:$port" - - \
    "$TMP/csr" "$SECS" "$CONNS")"
}

echo "certificate issuance, $CONNS connections, $SECS s each, $(nproc) CPUs"
run_control skiff-https 1
run_control skiff-http 0
run_control skiff-nosync 0 false
run_cfssl
