#!/usr/bin/env bash
# skiff-gitops: what an Application asks of a sync beyond "make live equal
# Git", with real processes (skiff-control with a policy, skiff-gitops, a
# real `git daemon`, the git client pushing):
#   - apply merges: a label someone added live survives a Git change, a
#     field Git drops is removed live; Replace=true (per resource) replaces;
#   - Prune=false per resource; pruning in the object's wave by default and
#     after every wave with PruneLast=true (order read from control's watch);
#   - ApplyOutOfSyncOnly=true: objects already in sync are not rewritten;
#   - Validate=false does not bypass the policy engine (a warning condition
#     says so); CreateNamespace=true is accepted; unknown options (on the
#     Application and on a resource) are conditions naming them;
#   - syncPolicy.retry: a failed automated sync is retried with backoff and
#     succeeds once control's policy is lifted (SIGHUP), without any push;
#     a limit stops the retries;
#   - ignoreDifferences (+ RespectIgnoreDifferences=true): route weights
#     moved by another controller are not put back by self-heal, other
#     fields still are.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/gitops_lib.sh"
gx_init gitops-opts control gitops gitd
API=http://127.0.0.1:$CPORT/api/v1

gx_policy_no_blocked
gx_control_yaml "policies: [$TMP/policies]" "admin: {listen: 127.0.0.1:$CADMIN}"
gx_run_control

gx_git_daemon opts
gx_work "Ada Lovelace" ada@example.com "$REPO" gitd

svc() { # name endpoint [annotations-yaml-lines] [labels-yaml-lines]
  cat <<EOF
apiVersion: skiff.dev/v1
kind: Service
metadata:
  name: $1
  labels: {app: demo${4:+, $4}}
  annotations: {note: git${3:+, $3}}
spec:
  endpoints: ["$2"]
EOF
}
route() { # name weight-a weight-b path [labels]
  cat <<EOF
apiVersion: skiff.dev/v1
kind: Route
metadata:
  name: $1
  labels: {app: demo${5:+, $5}}
spec:
  rules:
  - matches:
    - path: {type: PathPrefix, value: $4}
    backendRefs:
    - {name: stable, port: 8081, weight: $2}
    - {name: canary, port: 8082, weight: $3}
EOF
}

mkdir -p "$W/merge" "$W/waves" "$W/last" "$W/retry" "$W/limit" "$W/validate" "$W/ignore"
# merge / replace / prune=false / apply-out-of-sync-only
svc keep 127.0.0.1:9001 "" "tier: web" >"$W/merge/keep.yaml"
svc repl 127.0.0.1:9002 '"argocd.argoproj.io/sync-options": "Replace=true"' >"$W/merge/repl.yaml"
svc still 127.0.0.1:9003 >"$W/merge/still.yaml"
svc pinned 127.0.0.1:9004 '"argocd.argoproj.io/sync-options": "Prune=false, Foo=bar"' >"$W/merge/pinned.yaml"
# prune order: p0 (wave 0) leaves Git while w5 (wave 5) changes
for d in waves last; do
  svc p0 127.0.0.1:9100 >"$W/$d/p0.yaml"
  svc w5 127.0.0.1:9105 '"argocd.argoproj.io/sync-wave": "5"' >"$W/$d/w5.yaml"
done
# refused by the policy
route blocked 100 0 / "blocked: \"yes\"" >"$W/retry/r.yaml"
route blocked 100 0 / "blocked: \"yes\"" >"$W/limit/r.yaml"
{ route blocked 100 0 / "blocked: \"yes\"" | sed 's/^  labels:/  annotations: {"argocd.argoproj.io\/sync-options": "Validate=false"}\n  labels:/'; } >"$W/validate/r.yaml"
# weights another controller moves
route web 100 0 / >"$W/ignore/web.yaml"
REV1=$(commit_push "first")

gx_gitops_yaml "poll_interval: 300ms" "resync_interval: 300ms" "app_refresh: 200ms"
gx_run_gitops

code() { curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/$1"; }
app_field() { get "applications/default/$2" | jq -r "$1"; }
app() { # name path namespace syncPolicy-yaml [extra spec yaml]
  curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications/default" \
    --data-binary @- >/dev/null <<EOF || fail "create application $1"
apiVersion: skiff.dev/v1
kind: Application
metadata: {name: $1}
spec:
  source: {repoURL: "$REPO", targetRevision: main, path: $2}
  destination: {namespace: $3}
  syncPolicy: $4
${5:-}
EOF
}
synced_at() { [ "$(app_field .status.sync.revision "$1")" = "$2" ] && [ "$(app_field .status.sync.status "$1")" = Synced ]; }
patch() { curl -sf "${AUTH[@]}" -X PATCH -H 'content-type: application/merge-patch+json' -d "$2" "$API/$1" >/dev/null; }
rv() { get "$1" | jq -r .metadata.resourceVersion; }

app merge merge m '{automated: {prune: true, selfHeal: true}, syncOptions: [ApplyOutOfSyncOnly=true, CreateNamespace=true, ServerSideApply=true]}'
app waves waves pw '{automated: {prune: true}}'
app last last pl '{automated: {prune: true}, syncOptions: [PruneLast=true]}'
app ignore ignore ig '{automated: {selfHeal: true}, syncOptions: [RespectIgnoreDifferences=true]}' '  ignoreDifferences:
  - group: skiff.dev
    kind: Route
    name: web
    jsonPointers: [/spec/rules/0/backendRefs/0/weight, /spec/rules/0/backendRefs/1/weight]'
# the same without RespectIgnoreDifferences: the comparison alone must
# leave the moved weights alone
app ignore2 ignore ig2 '{automated: {selfHeal: true}}' '  ignoreDifferences:
  - kind: Route
    namespace: ig2
    jsonPointers: [/spec/rules/0/backendRefs/0/weight, /spec/rules/0/backendRefs/1/weight]'
for a in merge waves last ignore ignore2; do
  wait_until 30 synced_at $a "$REV1" || fail "$a not synced to $REV1: $(get applications/default/$a)"
done

# ---- unknown options are conditions, known ones are not ----
cond() { app_field "[.status.conditions[] | select(.reason == \"$2\") | .message] | join(\" \")" "$1"; }
cond merge UnknownSyncOption | has "spec.syncPolicy.syncOptions\[2\]: unknown sync option 'ServerSideApply=true'" ||
  fail "unknown app option not reported: $(app_field .status.conditions merge)"
cond merge UnknownSyncOption | has "merge/pinned.yaml:1: Service m/pinned: unknown sync option 'Foo=bar'" ||
  fail "unknown resource option not reported: $(app_field .status.conditions merge)"
if cond merge UnknownSyncOption | has "option 'CreateNamespace\|option 'ApplyOutOfSyncOnly"; then
  fail "known options reported as unknown: $(cond merge UnknownSyncOption)"
fi
[ "$(app_field '.status.conditions | length' waves)" = 0 ] || fail "conditions on a plain app: $(app_field .status.conditions waves)"
# CreateNamespace=true: namespaces are not objects in Skiff; the objects are there
get services/m/keep >/dev/null || fail "CreateNamespace app not applied"

# ---- merge vs Replace=true, Prune=false, ApplyOutOfSyncOnly ----
for s in keep repl; do
  patch "services/m/$s" '{"metadata":{"labels":{"team":"sre"},"annotations":{"owner":"ops"}}}' || fail "live label on $s"
done
still_rv=$(rv services/m/still)
svc keep 127.0.0.1:9011 >"$W/merge/keep.yaml" # endpoint changes, label tier leaves Git
svc repl 127.0.0.1:9012 '"argocd.argoproj.io/sync-options": "Replace=true"' >"$W/merge/repl.yaml"
rm "$W/merge/pinned.yaml"
REV2=$(commit_push "second")
# (pinned left Git with Prune=false: the app stays OutOfSync, as in Argo CD)
op_done() { [ "$(app_field .status.operationState.syncResult.revision "$1")" = "$2" ] && [ "$(app_field .status.operationState.phase "$1")" = Succeeded ]; }
wait_until 30 op_done merge "$REV2" || fail "merge not synced to $REV2: $(app_field .status merge)"
[ "$(app_field .status.sync.status merge)" = OutOfSync ] || fail "an unpruned object must leave the app OutOfSync"
K=$(get services/m/keep)
jq -e '.spec.endpoints == ["127.0.0.1:9011"]' <<<"$K" >/dev/null || fail "keep not updated: $K"
jq -e '.metadata.labels.team == "sre" and .metadata.annotations.owner == "ops"' <<<"$K" >/dev/null ||
  fail "a merge apply dropped what someone added live: $K"
jq -e '.metadata.labels | has("tier") | not' <<<"$K" >/dev/null || fail "a label Git dropped is still live: $K"
R=$(get services/m/repl)
jq -e '.spec.endpoints == ["127.0.0.1:9012"]' <<<"$R" >/dev/null || fail "repl not updated: $R"
jq -e '(.metadata.labels | has("team") | not) and (.metadata.annotations | has("owner") | not)' <<<"$R" >/dev/null ||
  fail "Replace=true kept live-only fields: $R"
[ "$(rv services/m/still)" = "$still_rv" ] || fail "an object already in sync was rewritten (ApplyOutOfSyncOnly)"
[ "$(code services/m/pinned)" = 200 ] || fail "Prune=false object was pruned"
app_field '.status.resources[] | select(.name == "pinned") | .message' merge | has "pruning disabled" ||
  fail "Prune=false not shown in status"

# ---- prune in its wave by default, after every wave with PruneLast ----
start_rv=$(get services | jq -r .metadata.resourceVersion)
for d in waves last; do
  rm "$W/$d/p0.yaml"
  svc w5 127.0.0.1:9205 '"argocd.argoproj.io/sync-wave": "5"' >"$W/$d/w5.yaml"
done
REV3=$(commit_push "third")
for a in waves last; do wait_until 30 synced_at $a "$REV3" || fail "$a not synced to $REV3"; done
curl -s -N -m 3 "${AUTH[@]}" "$API/services?watch=true&resourceVersion=$start_rv" >"$TMP/watch.ndjson" || true
order() { # namespace: the names in event order, "-" before a deletion
  jq -r --arg ns "$1" 'select(.object.metadata.namespace == $ns) |
    (if .type == "DELETED" then "-" else "" end) + .object.metadata.name' <"$TMP/watch.ndjson" | tr '\n' ' '
}
[ "$(order pw)" = "-p0 w5 " ] || fail "default prune not in its wave (before wave 5): $(order pw)"
[ "$(order pl)" = "w5 -p0 " ] || fail "PruneLast did not prune after the last wave: $(order pl)"

# ---- Validate=false does not bypass policy; retry with backoff ----
app validate validate vr '{automated: {}}'
app retry retry rr '{automated: {}, retry: {limit: 20, backoff: {duration: 1s, factor: 2, maxDuration: 2s}}}'
app limit limit lr '{automated: {}, retry: {limit: 1, backoff: {duration: "1"}}}'
failed() { [ "$(app_field .status.operationState.phase "$1")" = Failed ]; }
for a in validate retry limit; do wait_until 30 failed $a || fail "$a did not fail: $(app_field .status $a)"; done
app_field .status.operationState.message validate | has "routes labelled blocked=yes are not allowed here" ||
  fail "Validate=false bypassed the policy: $(app_field .status validate)"
[ "$(code routes/vr/blocked)" = 404 ] || fail "Validate=false wrote a denied route"
[ "$(app_field '.status.conditions[0].reason' validate)" = DryRunRefused ] || fail "validate condition"
cond validate ValidationAlwaysOn | has "policy engine" || fail "Validate=false warning missing: $(app_field .status.conditions validate)"
retried() { [ "$(app_field .status.operationState.retryCount "$1")" -ge "$2" ]; }
wait_until 30 retried retry 2 || fail "no retries: $(app_field .status.operationState retry)"
app_field .status.operationState.message retry | has "retrying: attempt #" || fail "retry message: $(app_field .status.operationState.message retry)"
limit_reached() { app_field .status.operationState.message limit | has "retry limit reached after 1 retries"; }
wait_until 30 limit_reached || fail "retry limit: $(app_field .status.operationState limit)"
# the policy goes away (control reloads its policies on SIGHUP): the next
# retry succeeds without any push or request
# (the file is rewritten to a rule nothing breaks rather than removed: an
# empty policy directory trips UBSan in pol_load.c on reload)
sed -i 's/"!yes"/"!never"/' "$TMP/policies/no-blocked.yaml"
kill -HUP "$CPID"
wait_until 30 synced_at retry "$REV3" || fail "retry did not sync after the policy was lifted: $(app_field .status retry)"
get routes/rr/blocked >/dev/null || fail "retried route not applied"
[ "$(app_field '[.status.conditions[] | select(.type == "SyncError")] | length' retry)" = 0 ] || fail "SyncError kept after success"

# ---- ignoreDifferences: weights moved live stay, other drift is healed ----
for ns in ig ig2; do
  patch routes/$ns/web '{"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"stable","port":8081,"weight":60},{"name":"canary","port":8082,"weight":40}]}]}}' ||
    fail "move weights"
done
weights() { get routes/${1:-ig}/web | jq -c '[.spec.rules[0].backendRefs[].weight]'; }
web_rv=$(rv routes/ig2/web)
reconciles() { curl -sf "http://127.0.0.1:$GXADMIN/metrics" | awk '/^skiff_gitops_reconciles_total / {print int($2)}'; }
r0=$(reconciles)
more_rounds() { [ "$(reconciles)" -ge $((r0 + 10)) ]; }
wait_until 30 more_rounds || fail "the reconciler stopped"
[ "$(weights)" = "[60,40]" ] || fail "self-heal put back ignored weights: $(weights)"
[ "$(weights ig2)" = "[60,40]" ] || fail "self-heal put back ignored weights (ig2): $(weights ig2)"
[ "$(rv routes/ig2/web)" = "$web_rv" ] || fail "an ignored difference was applied"
for a in ignore ignore2; do
  [ "$(app_field .status.sync.status $a)" = Synced ] || fail "ignored difference shows OutOfSync ($a)"
done
# a field that is not ignored is still put back, and the weights stay
patch routes/ig/web '{"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/drifted"}}],"backendRefs":[{"name":"stable","port":8081,"weight":60},{"name":"canary","port":8082,"weight":40}]}]}}' ||
  fail "live drift"
healed() { get routes/ig/web | jq -e '.spec.rules[0].matches[0].path.value == "/"' >/dev/null; }
wait_until 30 healed || fail "non-ignored drift not healed: $(get routes/ig/web)"
[ "$(weights)" = "[60,40]" ] || fail "RespectIgnoreDifferences: self-heal reset the weights: $(weights)"

kill -0 "$GXPID" || fail "gitops died"
echo "ok"
