#!/usr/bin/env bash
# skiff-gitops: time from `git push` (announced by a signed GitHub webhook)
# to every resource applied in skiff-control, for (a) 1,000 manifests in 100
# files arriving in one push and (b) a one-line change to that 1,000-manifest
# application. Real processes on loopback: git daemon, skiff-control,
# skiff-gitops. "Applied" = the Application's status names the pushed
# revision as synced, which skiff-gitops writes after the last write was
# acknowledged by control (and the 1,000 objects are then counted).
#
#   bash bench/gitops/run.sh            # BIN (default build/release/bin), RUNS (5), DURABLE (true)
#
# The peer, Argo CD, needs a Kubernetes cluster, which this VM cannot run
# (no container runtime); see docs/benchmarks.md.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
. "$SRC/tests/support/lib.sh"
BIN=${BIN:-$SRC/build/release/bin}
RUNS=${RUNS:-5}
DURABLE=${DURABLE:-true}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-bench-gitops.XXXXXX")
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
for b in skiff-control skiff-gitops; do
  [ -x "$BIN/$b" ] || { echo "build first: $BIN/$b missing (cmake --preset release && cmake --build --preset release)" >&2; exit 1; }
done

CPORT=$(free_port); CADMIN=$(free_port); GXPORT=$(free_port); GXADMIN=$(free_port); GITPORT=$(free_port)
mkdir -p "$TMP/cstate" "$TMP/gxstate" "$TMP/srv"
cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$CPORT
state_dir: $TMP/cstate
durable: $DURABLE
event_retention: 100000
admin: {listen: 127.0.0.1:$CADMIN}
EOF
"$BIN/skiff-control" --config "$TMP/control.yaml" >"$TMP/control.log" 2>&1 &
PIDS+=($!)
wait_until 20 curl -sf "http://127.0.0.1:$CPORT/healthz"
TOKEN=$(cat "$TMP/cstate/admin.token")
API=http://127.0.0.1:$CPORT/api/v1

git init -q --bare "$TMP/srv/bench.git"
git daemon --reuseaddr --listen=127.0.0.1 --port="$GITPORT" --base-path="$TMP/srv" --export-all \
  --enable=receive-pack "$TMP/srv" >"$TMP/gitd.log" 2>&1 &
PIDS+=($!)
REPO=git://127.0.0.1:$GITPORT/bench.git
wait_until 20 git ls-remote "$REPO"
W=$TMP/work
git init -q -b main "$W"
g() { git -C "$W" -c user.name=bench -c user.email=bench@example.com "$@"; }
mkdir -p "$W/app"
echo "# bench" >"$W/README.md"; touch "$W/app/.keep"
g add -A && g commit -q -m empty && g push -q "$REPO" HEAD:main

printf 'bench-secret\n' >"$TMP/gh.secret"
cat >"$TMP/gitops.yaml" <<EOF
listen: 127.0.0.1:$GXPORT
control: http://127.0.0.1:$CPORT
token_file: $TMP/cstate/admin.token
state_dir: $TMP/gxstate
poll_interval: 1h
resync_interval: 1h
app_refresh: 1s
github_secret_file: $TMP/gh.secret
admin: {listen: 127.0.0.1:$GXADMIN}
EOF
"$BIN/skiff-gitops" --config "$TMP/gitops.yaml" >"$TMP/gitops.log" 2>&1 &
PIDS+=($!)
wait_until 20 curl -sf "http://127.0.0.1:$GXADMIN/readyz"

curl -sf -H "authorization: Bearer $TOKEN" -H 'content-type: application/yaml' -X POST "$API/applications/default" \
  --data-binary @- >/dev/null <<EOF
apiVersion: skiff.dev/v1
kind: Application
metadata: {name: bench}
spec:
  source: {repoURL: "$REPO", targetRevision: main, path: app}
  destination: {namespace: bench}
  syncPolicy: {automated: {prune: true}}
EOF
rev_of_app() { curl -sf -H "authorization: Bearer $TOKEN" "$API/applications/default/bench" | jq -r '.status.sync.revision + " " + .status.sync.status'; }
synced_head() { test "$(rev_of_app)" = "$(g rev-parse HEAD) Synced"; }
wait_until 30 synced_head || { echo "initial sync failed: $(rev_of_app)" >&2; tail "$TMP/gitops.log" "$TMP/control.log" >&2; exit 1; }

gen_file() { # file-index endpoint-port-of-first
  local f=$1 first=${2:-9000}
  for k in $(seq 0 9); do
    local port=$((9000 + k)); [ "$k" != 0 ] || port=$first
    printf -- '---\napiVersion: skiff.dev/v1\nkind: Service\nmetadata:\n  name: svc-%03d-%d\n  labels: {app: bench}\nspec:\n  endpoints: ["127.0.0.1:%d"]\n' "$f" "$k" "$port"
  done
}
for f in $(seq 0 99); do gen_file "$f" >"$W/app/file-$f.yaml"; done

now_ms() { date +%s%3N; }
push_and_wait() { # message -> prints milliseconds from push to synced
  g add -A && g commit -q -m "$1"
  local rev; rev=$(g rev-parse HEAD)
  local payload sig t0 t1
  payload=$(printf '{"ref":"refs/heads/main","after":"%s","repository":{"clone_url":"%s"}}' "$rev" "$REPO")
  sig=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac bench-secret | sed 's/^.* //')
  t0=$(now_ms)
  g push -q "$REPO" HEAD:main
  curl -sf -o /dev/null -X POST -H 'x-github-event: push' -H "x-hub-signature-256: sha256=$sig" \
    --data-binary "$payload" "http://127.0.0.1:$GXPORT/api/webhook"
  for _ in $(seq 1 6000); do
    [ "$(rev_of_app)" = "$rev Synced" ] && break
    sleep 0.01
  done
  t1=$(now_ms)
  [ "$(rev_of_app)" = "$rev Synced" ] || { echo "not synced: $(rev_of_app)" >&2; tail "$TMP/gitops.log" >&2; exit 1; }
  echo $((t1 - t0))
}

echo "skiff-gitops bench: 1,000 Services in 100 files, control durable=$DURABLE, $(nproc) CPUs"
ms=$(push_and_wait "1000 manifests")
n=$(curl -sf -H "authorization: Bearer $TOKEN" "$API/services/bench" | jq '.items | length')
[ "$n" = 1000 ] || { echo "expected 1000 services, found $n" >&2; exit 1; }
echo "push of 1,000 new manifests -> all applied: ${ms} ms"
for i in $(seq 1 "$RUNS"); do
  gen_file 42 $((10000 + i)) >"$W/app/file-42.yaml"
  ms=$(push_and_wait "one-line change $i")
  curl -sf -H "authorization: Bearer $TOKEN" "$API/services/bench/svc-042-0" | grep -q "127.0.0.1:$((10000 + i))"
  echo "one-line change in a 1,000-manifest app -> applied (run $i): ${ms} ms"
done
