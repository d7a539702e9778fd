#!/usr/bin/env bash
# examples/gitops-repo reconciled from a local path, with skiff-control set
# up as examples/control.yaml does (HTTPS with the built-in CA's identity): the directory is made a
# Git repository (as a user's checkout would be), skiff-control loads the
# sample's policies, the sample Application (examples/gitops-repo/
# applications/demo.yaml, an Argo CD Application) is applied with its
# repoURL set to that path, and skiff-gitops brings up the Services, the
# canary Route and the Gateway API HTTPRoute; the compiled proxy config
# carries the 90/10 split. A commit breaking the sample's policy is refused
# as a whole.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/gitops_lib.sh"
GX_TAIL=30
gx_init gitops-example control gitops
API=https://127.0.0.1:$CPORT/api/v1
gx_sample_repo

gx_control_yaml "policies: [$R/examples/gitops-repo/policies]" "tls: {identity: true, client_auth: optional}" \
  "admin: {listen: 127.0.0.1:$CADMIN}"
CA=$TMP/cstate/ca/bundle.pem
gx_run_control

gx_gitops_yaml "poll_interval: 500ms" "resync_interval: 500ms" "app_refresh: 200ms"
gx_run_gitops

sed "s|REPO_URL|file://$R|" "$SRC/examples/gitops-repo/applications/demo.yaml" |
  curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications.argoproj.io/argocd" \
    --data-binary @- >/dev/null || fail "apply the sample Application"
app() { get applications/argocd/demo | jq -r "$1"; }
synced() { [ "$(app .status.sync.status)" = Synced ] && [ "$(app .status.health.status)" = Healthy ]; }
wait_until 30 synced || fail "sample not synced: $(get applications/argocd/demo)"
for o in services/demo/echo-v1 services/demo/echo-v2 routes/demo/echo httproutes/demo/echo-api; do
  get "$o" >/dev/null || fail "$o missing"
done
get proxyconfig | jq -e '[.config.routes[].backends[]? | select(.weight == 90 and .cluster == "demo/echo-v1")] | length > 0' \
  >/dev/null || fail "canary split not in the proxy config: $(get proxyconfig)"

# a commit that breaks the sample's policy fails as a whole
sed -i 's/team: platform}/}/' "$R/examples/gitops-repo/apps/demo/canary.yaml"
sed -i 's/weight: 90/weight: 50/; s/weight: 10/weight: 50/' "$R/examples/gitops-repo/apps/demo/canary.yaml"
git -C "$R" -c user.name=demo -c user.email=demo@example.com commit -qam "50/50 without a team"
denied() { app .status.operationState.message | has "needs a team label"; }
wait_until 30 denied || fail "policy denial not reported: $(app .status)"
get routes/demo/echo | has '"weight":90' || fail "a denied sync changed the live route"
# the CLI over HTTPS
SKIFF_SERVER=https://127.0.0.1:$CPORT SKIFF_TOKEN=$TOKEN SKIFF_CA=$CA "$BIN/skiff" app get demo -n argocd |
  has "Sync: *OutOfSync\|Sync: *Synced" || fail "skiff app get over https"
echo ok
