#!/usr/bin/env bash
# bench/policy/run.sh: skiff-policy with 20 policies (examples/policies plus
# bench/policy/policies: pod security baseline, required labels, latest tag,
# requests/limits, registries, mutations...). Measures
#   1. the engine alone (decode + validate + mutate + encode, in process);
#   2. HTTPS /validate at a fixed 1000 reviews/s (open loop, latency from the
#      scheduled send time) - the issue's goal is p99 <= 1 ms;
#   3. the most reviews/s the daemon answers with 16 requests in flight.
# Usage: bench/policy/run.sh [SECONDS]   (BUILD=dir to reuse a release build)
# NICE=-15 runs skiff-policy and the load generator at that nice level (root):
# on a shared machine it shows the daemon rather than its neighbours' builds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${1:-10}
BUILD=${BUILD:-$ROOT/build/bench-policy}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-policy-bench.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKIFF_TESTS=OFF >/dev/null
cmake --build "$BUILD" --target skiff-policy skiff_policy >/dev/null
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -D_GNU_SOURCE -o "$TMP/loadgen" "$ROOT/bench/policy/loadgen.c" \
  -I"$ROOT/platform/policy/src" -I"$ROOT/platform/runtime/include" \
  "$BUILD/platform/policy/libskiff_policy.a" "$BUILD/platform/runtime/libskiff_runtime.a" \
  $(pkg-config --libs libuv openssl libnghttp2 jansson yaml-0.1 sqlite3 zlib) -lpthread -lm

bash "$ROOT/tests/support/gen-certs.sh" "$TMP/certs"
mkdir -p "$TMP/policies"
cp "$ROOT"/examples/policies/*.yaml "$ROOT"/bench/policy/policies/*.yaml "$TMP/policies/"

# A realistic compliant Pod (every rule runs to the end) and a violating one.
python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
def review(pod):
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": gvk,
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "requestKind": gvk,
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"], "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                     "uid": "c5e1", "groups": ["system:serviceaccounts", "system:authenticated"]},
        "object": pod, "oldObject": None, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}
container = lambda n: {
    "name": n, "image": "bar.io/shop/%s:1.4.2" % n, "imagePullPolicy": "IfNotPresent",
    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
    "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 10},
    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 5},
    "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "aws-us-east-1"}],
    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "shop-7d9f8c6b5-x2x4q", "generateName": "shop-7d9f8c6b5-", "namespace": "shop",
                    "labels": {"app.kubernetes.io/name": "shop", "app.kubernetes.io/component": "web",
                               "pod-template-hash": "7d9f8c6b5"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-7d9f8c6b5",
                                         "uid": "6b1c", "controller": True, "blockOwnerDeletion": True}]},
       "spec": {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container("shop"), container("sidecar")],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "serviceAccountName": "shop", "terminationGracePeriodSeconds": 30}}
open(d + "/good.json", "w").write(json.dumps(review(pod)))
bad = json.loads(json.dumps(pod))
bad["metadata"]["labels"] = {"app": "shop"}
bad["spec"]["containers"][0]["image"] = "docker.io/shop:latest"
bad["spec"]["containers"][0]["securityContext"]["privileged"] = True
open(d + "/bad.json", "w").write(json.dumps(review(bad)))
PY

PRIO=()
if [ -n "${NICE:-}" ]; then PRIO=(nice -n "$NICE"); fi

PORT=$((18000 + RANDOM % 2000))
ADMIN=$((PORT + 1))
cat >"$TMP/policy.yaml" <<EOF
listen: 127.0.0.1:$PORT
tls: {cert: $TMP/certs/server.pem, key: $TMP/certs/server.key}
policies: [$TMP/policies]
admin: {listen: 127.0.0.1:$ADMIN}
log: {level: warn}
EOF
"${PRIO[@]}" "$BUILD/bin/skiff-policy" --config "$TMP/policy.yaml" >"$TMP/policy.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== engine alone (20 policies, compliant Pod)"
"${PRIO[@]}" "$TMP/loadgen" engine "$TMP/policies" "$TMP/good.json" 20000
echo "== engine alone (violating Pod)"
"${PRIO[@]}" "$TMP/loadgen" engine "$TMP/policies" "$TMP/bad.json" 20000
echo "== HTTPS /validate, fixed 1000 reviews/s for ${SECS}s (compliant Pod)"
CA=$TMP/certs/ca.pem "${PRIO[@]}" "$TMP/loadgen" http "https://127.0.0.1:$PORT/validate" "$TMP/good.json" 1000 "$SECS" 16
echo "== HTTPS /validate, fixed 1000 reviews/s for ${SECS}s (violating Pod)"
CA=$TMP/certs/ca.pem "${PRIO[@]}" "$TMP/loadgen" http "https://127.0.0.1:$PORT/validate" "$TMP/bad.json" 1000 "$SECS" 16
echo "== HTTPS /mutate, fixed 1000 reviews/s for ${SECS}s"
CA=$TMP/certs/ca.pem "${PRIO[@]}" "$TMP/loadgen" http "https://127.0.0.1:$PORT/mutate" "$TMP/good.json" 1000 "$SECS" 16
echo "== HTTPS /validate, closed loop, 16 in flight, ${SECS}s"
CA=$TMP/certs/ca.pem "${PRIO[@]}" "$TMP/loadgen" http "https://127.0.0.1:$PORT/validate" "$TMP/good.json" 0 "$SECS" 16

# STRACE=1: system calls and response bytes per review, by kind of review
# (strace -f -c attached to skiff-policy while curl sends N reviews on one
# TLS connection). Like instruction counts, the load does not change them.
if [ "${STRACE:-0}" = 1 ]; then
  command -v strace >/dev/null || { echo "STRACE=1 needs strace" >&2; exit 1; }
  N=${STRACE_N:-200}
  for c in "good.json /validate compliant" "bad.json /validate violating" "good.json /mutate mutate"; do
    # shellcheck disable=SC2086 # three words
    set -- $c
    urls=()
    for ((i = 0; i < N; i++)); do urls+=("https://localhost:$PORT$2"); done
    strace -f -c -o "$TMP/strace.txt" -p "$PID" 2>/dev/null &
    SPID=$!
    sleep 0.5
    # (-o names the first URL's output only: the answers go to stdout, the sizes after them)
    bytes=$(curl -sS --http1.1 --cacert "$TMP/certs/ca.pem" -H 'content-type: application/json' \
      --data-binary @"$TMP/$1" -w '\n@@ %{size_header}+%{size_download}\n' "${urls[@]}" |
      awk '/^@@ / { b = $2 } END { print b }')
    sleep 0.3
    kill -INT "$SPID"
    wait "$SPID" 2>/dev/null || true
    # rows: % time, seconds, usecs/call, calls, [errors], syscall
    calls=$(awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" && $NF != "syscall" {
      printf "%s=%.2f ", $NF, $4 / n }' "$TMP/strace.txt")
    echo "strace $3 $2: per review (N=$N, HTTP/1.1): ${calls}response_bytes(head+body)=$bytes"
  done
fi

# CALLGRIND=1: instructions per review, which the machine's load does not
# change. skiff-policy runs under callgrind while curl sends N reviews on one
# TLS connection; a run with one review is the baseline (start-up, handshake).
if [ "${CALLGRIND:-0}" = 1 ]; then
  command -v valgrind >/dev/null || { echo "CALLGRIND=1 needs valgrind" >&2; exit 1; }
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
  N=${CALLGRIND_N:-200}
  count() { # BODY PATH N -> instructions
    local out=$TMP/cg.out
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BUILD/bin/skiff-policy" --config "$TMP/policy.yaml" \
      >"$TMP/cg.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
    local urls=() i
    for ((i = 0; i < $3; i++)); do urls+=("https://localhost:$PORT$2"); done
    curl -sS --cacert "$TMP/certs/ca.pem" -H 'content-type: application/json' --data-binary @"$1" "${urls[@]}" >/dev/null
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$TMP/cg.log"
  }
  base=$(count "$TMP/good.json" /validate 1)
  for c in "good.json /validate compliant" "bad.json /validate violating" "good.json /mutate mutate"; do
    set -- $c
    total=$(count "$TMP/$1" "$2" $((N + 1)))
    echo "callgrind $3 $2: $(((total - base) / N)) instructions per review (N=$N)"
  done
fi
