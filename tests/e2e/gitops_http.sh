#!/usr/bin/env bash
# skiff-gitops over smart HTTP: the real `git http-backend` behind a small
# CGI server with basic auth (tests/support/git-http-server.py), the git
# client pushing over HTTP, skiff-gitops fetching with credentials from a
# password file. Two Applications on one repository share one fetch per
# webhook; a repository without credentials fails with an authentication
# error in status; a bad targetRevision is reported; a Skiff Application's
# tag revision is followed.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

. "$SKIFF_SRC_DIR/tests/support/gitops_lib.sh"
GX_TAIL=30
gx_init gitops-http control gitops http
HPORT=$(free_port)
API=http://127.0.0.1:$CPORT/api/v1
mkdir -p "$TMP/srv"

gx_control_yaml "admin: {listen: 127.0.0.1:$CADMIN}"
gx_run_control

git init -q --bare "$TMP/srv/demo.git"
git init -q --bare "$TMP/srv/other.git"
git -C "$TMP/srv/demo.git" config http.receivepack true
python3 "$SRC/tests/support/git-http-server.py" "$HPORT" "$TMP/srv" "tester:pa55word" >>"$TMP/http.log" 2>&1 &
PIDS+=($!)
REPO=http://127.0.0.1:$HPORT/demo.git
PUSH=http://tester:pa55word@127.0.0.1:$HPORT/demo.git
wait_until 20 git ls-remote "$PUSH" || fail "git http server did not start"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$REPO/info/refs?service=git-upload-pack")" = 401 ] || fail "server without auth"

gx_work "Grace Hopper" grace@example.com "$PUSH" http
mkdir -p "$W/a" "$W/b"
printf 'apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: alpha}\nspec: {endpoints: ["127.0.0.1:8001"]}\n' >"$W/a/s.yaml"
printf 'apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: beta}\nspec: {endpoints: ["127.0.0.1:8002"]}\n' >"$W/b/s.yaml"
REV1=$(commit_push "one")
g tag v1
g push -q "$PUSH" v1 2>>"$TMP/http.log"

printf 'pa55word\n' >"$TMP/git.password"
printf 'hook-secret\n' >"$TMP/gh.secret"
gx_gitops_yaml "poll_interval: 1h" "resync_interval: 500ms" "app_refresh: 200ms" \
  "github_secret_file: $TMP/gh.secret" "credentials:
- url: http://127.0.0.1:$HPORT/demo
  username: tester
  password_file: $TMP/git.password"
gx_run_gitops

app_field() { get "applications/default/$2" | jq -r "$1"; }
mkapp() { # name path revision [repo]
  curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications/default" --data-binary @- \
    >/dev/null <<EOF || fail "create $1"
apiVersion: skiff.dev/v1
kind: Application
metadata: {name: $1}
spec:
  source: {repoURL: "${4:-$REPO}", targetRevision: "$3", path: $2}
  destination: {namespace: web}
  syncPolicy: {automated: {prune: true}}
EOF
}
synced_at() { [ "$(app_field .status.sync.revision "$1")" = "$2" ] && [ "$(app_field .status.sync.status "$1")" = Synced ]; }

mkapp app-a a main
mkapp app-b b v1
wait_until 30 synced_at app-a "$REV1" || fail "app-a not synced: $(get applications/default/app-a)"
wait_until 30 synced_at app-b "$REV1" || fail "app-b (tag v1) not synced"
get services/web/alpha | has '"127.0.0.1:8001"' || fail "alpha not applied"
get services/web/beta >/dev/null || fail "beta not applied"

# ---- one fetch per repository per webhook, however many Applications ----
fetches() { curl -sf "http://127.0.0.1:$GXADMIN/metrics" | awk '/^skiff_gitops_fetches_total\{result="ok"\}/ {print $2}'; }
printf 'apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: alpha}\nspec: {endpoints: ["127.0.0.1:8011"]}\n' >"$W/a/s.yaml"
REV2=$(commit_push "two")
before=$(fetches)
payload=$(printf '{"ref":"refs/heads/main","repository":{"clone_url":"%s"}}' "$REPO")
sig=$(printf '%s' "$payload" | openssl dgst -sha256 -hmac hook-secret | sed 's/^.* //')
code=$(curl -s -o "$TMP/hook" -w '%{http_code}' -X POST -H 'x-github-event: push' \
  -H "x-hub-signature-256: sha256=$sig" --data-binary "$payload" "http://127.0.0.1:$GXPORT/api/webhook")
[ "$code" = 202 ] || fail "webhook: $code $(cat "$TMP/hook")"
has '"applications":2' <"$TMP/hook" || fail "webhook should match both applications: $(cat "$TMP/hook")"
wait_until 30 synced_at app-a "$REV2" || fail "app-a not synced to $REV2"
get services/web/alpha | has '"127.0.0.1:8011"' || fail "update over http not applied"
wait_until 10 test "$(app_field .status.sync.revision app-b)" = "$REV1" || fail "app-b must stay on tag v1"
after=$(fetches)
[ $((${after%.*} - ${before%.*})) = 1 ] || fail "expected one fetch for two applications, got $before -> $after"

# ---- failures land in status, the daemon keeps going ----
mkapp no-creds a main "http://127.0.0.1:$HPORT/other.git"
authfail() { app_field '.status.conditions[0].message' no-creds | has -i "authentication"; }
wait_until 30 authfail || fail "auth failure not reported: $(get applications/default/no-creds)"
[ "$(app_field '.status.conditions[0].reason' no-creds)" = AuthenticationFailed ] || fail "auth failure reason"
mkapp bad-rev a no-such-branch
badrev() { app_field '.status.conditions[0].message' bad-rev | has "revision 'no-such-branch' not found"; }
wait_until 30 badrev || fail "bad revision not reported: $(get applications/default/bad-rev)"
[ "$(app_field '.status.conditions[0].reason' bad-rev)" = RevisionNotFound ] || fail "bad revision reason"
kill -0 "$GXPID" || fail "gitops died"
echo ok
