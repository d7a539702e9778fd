#!/usr/bin/env bash
# skiff-gitops end to end with real processes: skiff-control (with a
# policy), skiff-gitops, a real `git daemon` on loopback and the real git
# client pushing to it. Covers: an Argo CD Application created and synced
# (create), a push announced by a signed GitHub webhook (update + prune),
# webhooks with bad signatures/tokens refused, a GitLab webhook, sync waves
# ordering the writes, self-heal of a live change, a policy denial failing
# the whole sync with the policy's message and nothing partially applied,
# malformed YAML reported with file and line, an unreachable repository
# reported in status while the daemon keeps serving (and not refetched or
# rewritten every round), a manual Application synced, listed in history,
# rolled back, suspended and resumed with `skiff app`, metrics (promtool
# lint) and every sync recorded as an event on the bus.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/gitops_lib.sh"
gx_init gitops control gitops gitd
DEAD=$(free_port) # nobody listens there
API=http://127.0.0.1:$CPORT/api/v1

# ---- skiff-control with a policy ----
gx_policy_no_blocked
gx_control_yaml "policies: [$TMP/policies]" "admin: {listen: 127.0.0.1:$CADMIN}"
gx_run_control
export SKIFF_SERVER=http://127.0.0.1:$CPORT SKIFF_TOKEN=$TOKEN

# ---- git daemon (push enabled) and a working clone ----
gx_git_daemon demo
gx_work "Ada Lovelace" ada@example.com "$REPO" gitd

mkdir -p "$W/apps/demo/more" "$W/apps/manual"
svc() { # name endpoint [wave]
  local ann=""
  [ -z "${3:-}" ] || ann=$'  annotations:\n    argocd.argoproj.io/sync-wave: "'"$3"'"'
  cat <<EOF
apiVersion: skiff.dev/v1
kind: Service
metadata:
  name: $1
$ann
spec:
  endpoints: ["$2"]
EOF
}
route() { # name weight [wave] [extra label]
  local ann="" lab=""
  [ -z "${3:-}" ] || ann=$'  annotations:\n    gitops.skiff.dev/sync-wave: "'"$3"'"'
  [ -z "${4:-}" ] || lab=$'  labels:\n    '"$4"
  cat <<EOF
apiVersion: skiff.dev/v1
kind: Route
metadata:
  name: $1
$lab
$ann
spec:
  rules:
  - matches:
    - path: {type: PathPrefix, value: /}
    backendRefs:
    - {name: echo, port: 8081, weight: $2}
EOF
}
{ svc echo 127.0.0.1:8081; echo "---"; svc old 127.0.0.1:8082; } >"$W/apps/demo/services.yaml"
{ route web 100 -1; echo "---"; svc late 127.0.0.1:8083 5; } >"$W/apps/demo/routes.yaml"
svc nested 127.0.0.1:8084 >"$W/apps/demo/more/nested.yaml"
echo "not: [a manifest" >"$W/apps/demo/README.txt" # not .yaml: ignored
svc manual 127.0.0.1:9001 >"$W/apps/manual/svc.yaml"
REV1=$(commit_push "first version")

# ---- skiff-gitops ----
printf 'github-secret-1\n' >"$TMP/gh.secret"
printf 'gitlab-token-1\n' >"$TMP/gl.token"
gx_gitops_yaml "poll_interval: 1h            # updates below arrive by webhook" "resync_interval: 500ms" \
  "app_refresh: 200ms" "github_secret_file: $TMP/gh.secret" "gitlab_token_file: $TMP/gl.token"
"$BIN/skiff-gitops" --config "$TMP/gitops.yaml" --check | has "config ok" || fail "gitops --check"
gx_run_gitops

j() { jq -r "$@"; }
app_field() { get "applications/${2:-argocd}/${3:-demo}" | j "$1"; }

# ---- create: an Argo CD Application, automated with prune and self-heal ----
curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications.argoproj.io/argocd" \
  --data-binary @- >/dev/null <<EOF || fail "create the Application"
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: demo
  namespace: argocd
spec:
  project: default
  source:
    repoURL: $REPO
    targetRevision: main
    path: apps/demo
    directory:
      recurse: true
  destination:
    namespace: shop
  syncPolicy:
    automated: {prune: true, selfHeal: true}
EOF
synced_at() { [ "$(app_field .status.sync.revision)" = "$1" ] && [ "$(app_field .status.sync.status)" = Synced ]; }
wait_until 30 synced_at "$REV1" || fail "demo not synced to $REV1: $(get applications/argocd/demo)"
get services/shop/echo | has '"127.0.0.1:8081"' || fail "service echo not applied"
get services/shop/nested >/dev/null || fail "recurse: nested service not applied"
get routes/shop/web | has '"weight":100' || fail "route not applied"
[ "$(app_field .status.health.status)" = Healthy ] || fail "health"
[ "$(app_field '.status.history | length')" = 1 ] || fail "history after the first sync"
app_field '.status.history[0].author' | has "Ada Lovelace" || fail "history author"
app_field '.status.history[0].message' | has "first version" || fail "history message"
get applications.argoproj.io/argocd/demo | has '"apiVersion":"argoproj.io/v1alpha1"' || fail "Argo shape back"
# sync waves: web (wave -1) before the wave 0 services before late (wave 5)
rv() { get "$1" | j .metadata.resourceVersion; }
[ "$(rv routes/shop/web)" -lt "$(rv services/shop/echo)" ] || fail "wave -1 route after a wave 0 service"
[ "$(rv services/shop/echo)" -lt "$(rv services/shop/late)" ] || fail "wave 5 service before wave 0"
# each wave went to control as one all-or-nothing batch (POST /api/v1/batch)
curl -sf "http://127.0.0.1:$CADMIN/metrics" | has '^skiff_control_requests_total{verb="batch"} [1-9]' ||
  fail "gitops did not apply through control's batch endpoint"

# ---- update + prune, announced by a signed GitHub webhook ----
{ svc echo 127.0.0.1:8091; echo "---"; svc added 127.0.0.1:8085; } >"$W/apps/demo/services.yaml" # 'old' leaves Git
route web 40 -1 >"$W/apps/demo/web.yaml"
{ svc late 127.0.0.1:8083 5; } >"$W/apps/demo/routes.yaml"
REV2=$(commit_push "second version")
payload=$(printf '{"ref":"refs/heads/main","after":"%s","repository":{"clone_url":"%s","git_url":"%s.git/","html_url":"http://example.invalid/demo"}}' "$REV2" "$REPO" "${REPO%.git}")
sig=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac "github-secret-1" | sed 's/^.* //')
hook() { # extra curl args...
  curl -s -o "$TMP/hook.body" -w '%{http_code}' -X POST -H 'content-type: application/json' "$@" \
    --data-binary "$payload" "http://127.0.0.1:$GXPORT/api/webhook"
}
[ "$(hook -H 'x-github-event: push' -H "x-hub-signature-256: sha256=0000$sig")" = 401 ] || fail "bad signature accepted"
[ "$(hook -H 'x-github-event: push')" = 401 ] || fail "missing signature accepted"
[ "$(hook -H 'x-gitlab-event: Push Hook' -H 'x-gitlab-token: wrong')" = 401 ] || fail "bad gitlab token accepted"
[ "$(hook -H 'x-github-event: push' -H "x-hub-signature-256: sha256=$sig")" = 202 ] || fail "good webhook: $(cat "$TMP/hook.body")"
has '"applications":1' <"$TMP/hook.body" || fail "webhook matched no application: $(cat "$TMP/hook.body")"
wait_until 30 synced_at "$REV2" || fail "demo not synced to $REV2 after the webhook"
get services/shop/echo | has '"127.0.0.1:8091"' || fail "update not applied"
get services/shop/added >/dev/null || fail "new service not applied"
get routes/shop/web | has '"weight":40' || fail "route not updated"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/services/shop/old")" = 404 ] || fail "old not pruned"
[ "$(app_field '.status.history | length')" = 2 ] || fail "history after the second sync"
[ "$(app_field '.status.history[1].resourcesPruned')" = 1 ] || fail "history pruned count"

# a GitLab push for the same repository is accepted too
payload=$(printf '{"object_kind":"push","ref":"refs/heads/main","project":{"git_http_url":"%s"}}' "$REPO")
[ "$(hook -H 'x-gitlab-event: Push Hook' -H 'x-gitlab-token: gitlab-token-1')" = 202 ] || fail "gitlab webhook"

# ---- self-heal: a live change is put back ----
curl -sf "${AUTH[@]}" -X PATCH -H 'content-type: application/merge-patch+json' \
  -d '{"spec":{"endpoints":["10.9.9.9:1"]}}' "$API/services/shop/added" >/dev/null || fail "live edit"
healed() { get services/shop/added | has '"127.0.0.1:8085"'; }
wait_until 30 healed || fail "drift not corrected"
# the counter goes up once the sync returns, just after control committed
drift_counted() {
  curl -sf "http://127.0.0.1:$GXADMIN/metrics" >"$TMP/metrics.txt" &&
    has '^skiff_gitops_drift_corrections_total [1-9]' <"$TMP/metrics.txt"
}
wait_until 10 drift_counted || fail "drift metric"
has '^skiff_gitops_webhooks_total{result="unauthorized"} 3' <"$TMP/metrics.txt" || fail "webhook metric"
has '^skiff_gitops_syncs_total{result="succeeded"} [1-9]' <"$TMP/metrics.txt" || fail "syncs metric"
out=$(promtool check metrics <"$TMP/metrics.txt" 2>&1) || fail "promtool check metrics: $out"
[ -z "$out" ] || fail "promtool check metrics: $out"

# ---- policy denial: the whole sync fails, nothing is applied ----
route blocked 1 "" "blocked: \"yes\"" >"$W/apps/demo/blocked.yaml"
svc added 127.0.0.1:7777 >"$W/apps/demo/added.yaml"
{ svc echo 127.0.0.1:8091; } >"$W/apps/demo/services.yaml"
REV3=$(commit_push "a denied route")
payload=$(printf '{"ref":"refs/heads/main","repository":{"clone_url":"%s"}}' "$REPO")
sig=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac "github-secret-1" | sed 's/^.* //')
[ "$(hook -H 'x-github-event: push' -H "x-hub-signature-256: sha256=$sig")" = 202 ] || fail "webhook 3"
failed() { [ "$(app_field .status.operationState.phase)" = Failed ]; }
wait_until 30 failed || fail "denied sync did not fail: $(app_field .status)"
app_field .status.operationState.message | has "routes labelled blocked=yes are not allowed here" ||
  fail "policy message missing: $(app_field .status.operationState.message)"
app_field .status.operationState.message | has "apps/demo/blocked.yaml:1" || fail "denied file not named"
[ "$(app_field '.status.conditions[0].reason')" = DryRunRefused ] || fail "denial reason: $(app_field .status.conditions)"
# the comparisons that follow a failed sync (every resync_interval) leave
# its SyncError in place until the next sync: it used to be cleared by the
# next comparison, which made the check above fail now and then under ASan
rc0=$(curl -sf "http://127.0.0.1:$GXADMIN/metrics" | awk '/^skiff_gitops_reconciles_total / {print int($2)}')
compared_since() { [ "$(curl -sf "http://127.0.0.1:$GXADMIN/metrics" | awk '/^skiff_gitops_reconciles_total / {print int($2)}')" -ge $((rc0 + 4)) ]; }
wait_until 30 compared_since || fail "no comparison after the failed sync"
[ "$(app_field '.status.conditions[0].reason')" = DryRunRefused ] || fail "a comparison cleared the SyncError: $(app_field .status.conditions)"
get services/shop/added | has '"127.0.0.1:8085"' || fail "partially applied: added changed"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/routes/shop/blocked")" = 404 ] || fail "blocked route written"
rm "$W/apps/demo/blocked.yaml"
REV4=$(commit_push "drop the denied route")
hook -H 'x-github-event: push' -H "x-hub-signature-256: sha256=$sig" >/dev/null
wait_until 30 synced_at "$REV4" || fail "not synced after removing the denied route"
get services/shop/added | has '"127.0.0.1:7777"' || fail "added not applied after the fix"

# ---- malformed YAML: file and line in the status ----
printf 'apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: broken\nspec: {}\n' >"$W/apps/demo/broken.yaml"
REV5=$(commit_push "broken yaml")
hook -H 'x-github-event: push' -H "x-hub-signature-256: sha256=$sig" >/dev/null
bad_yaml() { app_field '.status.conditions[0].message' | has "apps/demo/broken.yaml:[0-9]"; }
wait_until 30 bad_yaml || fail "malformed YAML not reported with file:line: $(app_field .status.conditions)"
[ "$(app_field .status.conditions[0].type)" = ComparisonError ] || fail "condition type"
[ "$(app_field .status.conditions[0].reason)" = InvalidManifests ] || fail "condition reason"
get services/shop/echo >/dev/null || fail "a bad revision must not touch live objects"
git -C "$W" rm -q apps/demo/broken.yaml
REV6=$(commit_push "fix yaml")
hook -H 'x-github-event: push' -H "x-hub-signature-256: sha256=$sig" >/dev/null
wait_until 30 synced_at "$REV6" || fail "not synced after fixing the YAML"
[ "$(app_field '.status.conditions | length')" = 0 ] || fail "condition not cleared"

# ---- unreachable repository: status, and the daemon keeps serving ----
curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications/default" --data-binary @- \
  >/dev/null <<EOF || fail "create the unreachable Application"
apiVersion: skiff.dev/v1
kind: Application
metadata: {name: lost}
spec:
  source: {repoURL: "git://127.0.0.1:$DEAD/nothing.git", path: .}
  syncPolicy: {automated: {}}
EOF
unreachable() { app_field '.status.conditions[0].message' default lost | has "nothing.git"; }
wait_until 30 unreachable || fail "unreachable repo not reported: $(get applications/default/lost)"
[ "$(app_field '.status.conditions[0].reason' default lost)" = FetchFailed ] || fail "unreachable reason"
curl -sf "http://127.0.0.1:$GXPORT/healthz" >/dev/null || fail "gitops stopped serving"
# a standing error is not refetched every round nor rewritten: one failed
# fetch (poll_interval is 1h), and the status keeps its resourceVersion
# across later rounds (the demo app's resync below proves rounds ran)
lost_rv=$(get applications/default/lost | jq -r .metadata.resourceVersion)
failed_fetches() { curl -sf "http://127.0.0.1:$GXADMIN/metrics" | awk '/^skiff_gitops_fetches_total\{result="failed"\}/ {print $2}'; }
curl -sf "${AUTH[@]}" -X PATCH -H 'content-type: application/merge-patch+json' \
  -d '{"spec":{"endpoints":["10.9.9.9:2"]}}' "$API/services/shop/added" >/dev/null || fail "live edit 2"
healed2() { get services/shop/added | has '"127.0.0.1:7777"'; }
wait_until 30 healed2 || fail "second drift not corrected"
[ "$(failed_fetches)" = 1 ] || fail "unreachable repo fetched $(failed_fetches) times"
[ "$(get applications/default/lost | jq -r .metadata.resourceVersion)" = "$lost_rv" ] || fail "standing error rewrote status"
# an idle self-healing app is not rewritten at every resync either: its
# resourceVersion holds while the reconciler compares it again and again
reconciles() { curl -sf "http://127.0.0.1:$GXADMIN/metrics" | awk '/^skiff_gitops_reconciles_total / {print int($2)}'; }
demo_rv=$(get applications/argocd/demo | jq -r .metadata.resourceVersion)
r0=$(reconciles)
more_rounds() { [ "$(reconciles)" -ge $((r0 + 6)) ]; }
wait_until 30 more_rounds || fail "the reconciler stopped comparing"
[ "$(get applications/argocd/demo | jq -r .metadata.resourceVersion)" = "$demo_rv" ] || fail "idle app status rewritten"
kill -0 "$GXPID" || fail "gitops died"

# ---- manual Application: sync, history, rollback, refused rollback ----
curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications/default" --data-binary @- \
  >/dev/null <<EOF || fail "create the manual Application"
apiVersion: skiff.dev/v1
kind: Application
metadata: {name: manual}
spec:
  source: {repoURL: "$REPO", targetRevision: main, path: apps/manual}
  destination: {namespace: team}
EOF
outofsync() { [ "$(app_field .status.sync.status default manual)" = OutOfSync ]; }
wait_until 30 outofsync || fail "manual app should be OutOfSync before a sync"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/services/team/manual")" = 404 ] || fail "manual app applied without a sync"
if "$BIN/skiff" app diff manual >"$TMP/diff.out"; then fail "skiff app diff must exit 1 when out of sync"; fi
has "Service team/manual" <"$TMP/diff.out" || fail "skiff app diff: $(cat "$TMP/diff.out")"
"$BIN/skiff" app sync manual --wait --timeout 30s | has "synced" || fail "skiff app sync"
get services/team/manual | has '"127.0.0.1:9001"' || fail "manual sync not applied"
svc manual 127.0.0.1:9002 >"$W/apps/manual/svc.yaml"
REV7=$(commit_push "manual v2")
"$BIN/skiff" app sync manual --wait --timeout 30s >/dev/null || fail "skiff app sync 2"
get services/team/manual | has '"127.0.0.1:9002"' || fail "second manual sync not applied"
"$BIN/skiff" app history manual | has "${REV7:0:12}" || fail "history lists the revision"
"$BIN/skiff" app rollback manual "$REV1" --wait --timeout 30s >/dev/null || fail "skiff app rollback"
get services/team/manual | has '"127.0.0.1:9001"' || fail "rollback not applied"
[ "$(app_field .status.sync.revision default manual)" = "$REV1" ] || fail "rollback revision"
"$BIN/skiff" app list | has "manual" || fail "skiff app list"
# suspended: requests are not acted on (bounded wait), resumed: they are
"$BIN/skiff" app suspend manual | has "suspended" || fail "skiff app suspend"
if "$BIN/skiff" app sync manual --wait --timeout 2s >/dev/null 2>&1; then fail "a suspended app synced"; fi
get services/team/manual | has '"127.0.0.1:9001"' || fail "a suspended app changed"
"$BIN/skiff" app resume manual | has "resumed" || fail "skiff app resume"
"$BIN/skiff" app sync manual --wait --timeout 30s >/dev/null || fail "sync after resume"
get services/team/manual | has '"127.0.0.1:9002"' || fail "sync after resume not applied"
if "$BIN/skiff" app rollback demo "$REV1" -n argocd >/dev/null 2>&1; then fail "rollback of an automated app"; fi

# ---- every sync is an event on the bus (the local log in gitops.db) ----
events() {
  python3 - "$TMP/gxstate/gitops.db" <<'EOF'
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for key, data in db.execute("SELECT key, data FROM sk_bus_events WHERE type = 'gitops.sync' ORDER BY id"):
    d = json.loads(data)
    print(key, d["revision"], d["result"], d["trigger"], d["author"])
EOF
}
events >"$TMP/events" || fail "reading the event log"
has "Application/argocd/demo $REV1 Succeeded automated Ada Lovelace" <"$TMP/events" || fail "first sync event: $(cat "$TMP/events")"
has "Application/argocd/demo $REV3 Failed" <"$TMP/events" || fail "failed sync event"
has "Application/default/manual $REV1 Succeeded rollback" <"$TMP/events" || fail "rollback event"

# nothing above crashed the reconciler
kill -0 "$GXPID" || fail "gitops died"
echo "ok"
