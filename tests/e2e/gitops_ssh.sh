#!/usr/bin/env bash
# skiff-gitops over ssh and against a host that drops packets, with real
# processes: a real OpenSSH sshd on a loopback port (generated host and user
# keys, the repository served through git-shell as a forced command), the
# git client pushing over ssh, skiff-control and skiff-gitops.
#   - ssh:// with a key credential and a (hashed) known_hosts entry syncs,
#     and a push over ssh is followed;
#   - a host key that differs from known_hosts, a host missing from it, and
#     a user key the server does not accept are refused with clear
#     conditions (HostKeyVerificationFailed, AuthenticationFailed);
#   - a repository whose host drops SYNs (iptables DROP inside a network
#     namespace this test creates and deletes) fails within connect_timeout
#     with "connect timeout after 2s to host:port" (FetchTimeout), and the
#     daemon keeps syncing the other applications.
# The whole test runs inside its own network namespace (lo only).
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

if [ -z "${SKIFF_GX_NETNS:-}" ]; then
  NS=skiff-gx-ssh-$$
  ip netns add "$NS" || { echo "FAIL: cannot create a network namespace (ip netns add needs root)" >&2; exit 1; }
  trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
  ip netns exec "$NS" ip link set lo up
  rc=0
  SKIFF_GX_NETNS=$NS ip netns exec "$NS" bash "$0" "$@" || rc=$?
  exit $rc
fi

. "$SKIFF_SRC_DIR/tests/support/gitops_lib.sh"
gx_init gitops-ssh control gitops sshd

[ -x /usr/sbin/sshd ] || fail "/usr/sbin/sshd missing (openssh-server, see .ci/install-deps.sh)"
SSHPORT=$(free_port)
DROPPORT=$(free_port)
API=http://127.0.0.1:$CPORT/api/v1
mkdir -p "$TMP/srv" "$TMP/keys"
ME=$(id -un)

# ---- keys: the server's host key, a user key it accepts, one it does not ----
K=$TMP/keys
ssh-keygen -q -t ed25519 -N '' -C host -f "$K/host"
ssh-keygen -q -t ed25519 -N '' -C other-host -f "$K/other_host"
ssh-keygen -q -t ed25519 -N '' -C gitops -f "$K/user"
ssh-keygen -q -t ecdsa -N '' -C stranger -f "$K/stranger"
chmod 600 "$K"/*
# every key may only run git through git-shell
printf 'command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"",no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding %s\n' \
  "$(cat "$K/user.pub")" >"$TMP/authorized_keys"
chmod 600 "$TMP/authorized_keys"
# known_hosts files: the right key (hashed names), another key, nothing for this host
printf '[127.0.0.1]:%s %s\n' "$SSHPORT" "$(cut -d' ' -f1,2 "$K/host.pub")" >"$TMP/known_hosts"
ssh-keygen -q -H -f "$TMP/known_hosts" >/dev/null 2>&1
rm -f "$TMP/known_hosts.old"
grep -q '^|1|' "$TMP/known_hosts" || fail "known_hosts not hashed"
printf '[127.0.0.1]:%s %s\n' "$SSHPORT" "$(cut -d' ' -f1,2 "$K/other_host.pub")" >"$TMP/known_hosts.wrong"
printf '[127.0.0.1]:%s %s\n' "$((SSHPORT + 1))" "$(cut -d' ' -f1,2 "$K/host.pub")" >"$TMP/known_hosts.other"

mkdir -p /run/sshd
cat >"$TMP/sshd_config" <<EOF
Port $SSHPORT
ListenAddress 127.0.0.1
HostKey $K/host
PidFile $TMP/sshd.pid
AuthorizedKeysFile $TMP/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $ME
LogLevel VERBOSE
EOF
/usr/sbin/sshd -D -e -f "$TMP/sshd_config" >>"$TMP/sshd.log" 2>&1 &
PIDS+=($!)
export GIT_SSH_COMMAND="ssh -F /dev/null -i $K/user -o IdentitiesOnly=yes -o UserKnownHostsFile=$TMP/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"

git init -q --bare "$TMP/srv/demo.git"
git init -q --bare "$TMP/srv/other.git"
REPO=ssh://$ME@127.0.0.1:$SSHPORT$TMP/srv/demo.git
wait_until 20 git ls-remote "$REPO" || fail "sshd did not serve the repository"
gx_work "Ada Lovelace" ada@example.com "$REPO"
commit_push() {
  g add -A
  g commit -q -m "$1"
  g push -q "$REPO" HEAD:main
  g push -q "ssh://$ME@127.0.0.1:$SSHPORT$TMP/srv/other.git" HEAD:main
  g rev-parse HEAD
}
svc() { printf 'apiVersion: skiff.dev/v1\nkind: Service\nmetadata: {name: %s}\nspec: {endpoints: ["%s"]}\n' "$1" "$2"; }
svc web 127.0.0.1:8001 >"$W/web.yaml"
REV1=$(commit_push "over ssh")

# ---- control and gitops ----
gx_control_yaml
gx_run_control

# the repository served by sshd is reached through several URLs (the path
# spelled differently), each with its own credentials entry; the first one
# takes the user name from the URL
gx_gitops_yaml "poll_interval: 500ms" "resync_interval: 500ms" "app_refresh: 200ms" "connect_timeout: 2s" \
  "credentials:
- {url: \"ssh://$ME@127.0.0.1:$SSHPORT$TMP/srv/demo.git\", ssh_key_file: $K/user, known_hosts_file: $TMP/known_hosts}
- {url: \"ssh://$ME@127.0.0.1:$SSHPORT$TMP/srv/other.git\", username: $ME, ssh_key_file: $K/user, known_hosts_file: $TMP/known_hosts.wrong}
- {url: \"ssh://$ME@127.0.0.1:$SSHPORT/$TMP/srv/other.git\", username: $ME, ssh_key_file: $K/user, known_hosts_file: $TMP/known_hosts.other}
- {url: \"ssh://$ME@127.0.0.1:$SSHPORT//$TMP/srv/other.git\", username: $ME, ssh_key_file: $K/stranger, known_hosts_file: $TMP/known_hosts}"
"$BIN/skiff-gitops" --config "$TMP/gitops.yaml" --check | has "config ok" || fail "gitops --check"
gx_run_gitops

app_field() { get "applications/default/$2" | jq -r "$1"; }
app() { # name repoURL namespace
  curl -sf "${AUTH[@]}" -H 'content-type: application/yaml' -X POST "$API/applications/default" \
    --data-binary @- >/dev/null <<EOF || fail "create application $1"
apiVersion: skiff.dev/v1
kind: Application
metadata: {name: $1}
spec:
  source: {repoURL: "$2", targetRevision: main}
  destination: {namespace: $3}
  syncPolicy: {automated: {prune: true}}
EOF
}
synced_at() { [ "$(app_field .status.sync.revision "$1")" = "$2" ] && [ "$(app_field .status.sync.status "$1")" = Synced ]; }
cond() { app_field ".status.conditions[0].$2" "$1"; }

app ssh "$REPO" s1
app wrongkey "ssh://$ME@127.0.0.1:$SSHPORT$TMP/srv/other.git" s2
app unknownhost "ssh://$ME@127.0.0.1:$SSHPORT/$TMP/srv/other.git" s3
app stranger "ssh://$ME@127.0.0.1:$SSHPORT//$TMP/srv/other.git" s4
app nocreds "ssh://$ME@127.0.0.1:$SSHPORT///$TMP/srv/other.git" s5

wait_until 30 synced_at ssh "$REV1" || fail "ssh app not synced: $(get applications/default/ssh)"
get services/s1/web | has '"127.0.0.1:8001"' || fail "service from the ssh repository not applied"

refused() { [ "$(cond "$1" reason)" = "$2" ]; }
wait_until 30 refused wrongkey HostKeyVerificationFailed || fail "changed host key accepted: $(app_field .status.conditions wrongkey)"
cond wrongkey message | has "does not match $TMP/known_hosts.wrong" || fail "mismatch message: $(cond wrongkey message)"
wait_until 30 refused unknownhost HostKeyVerificationFailed || fail "unknown host accepted: $(app_field .status.conditions unknownhost)"
cond unknownhost message | has "\[127.0.0.1\]:$SSHPORT is not in $TMP/known_hosts.other (unknown host refused)" ||
  fail "unknown host message: $(cond unknownhost message)"
wait_until 30 refused stranger AuthenticationFailed || fail "a key sshd refuses: $(app_field .status.conditions stranger)"
# no credentials entry at all: the host key cannot be checked, refused
wait_until 30 refused nocreds HostKeyVerificationFailed || fail "ssh without credentials: $(app_field .status.conditions nocreds)"
cond nocreds message | has "set known_hosts_file" || fail "no-credentials message: $(cond nocreds message)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/services/s2/web")" = 404 ] || fail "refused host applied"

# ---- a push over ssh is followed ----
svc web 127.0.0.1:8002 >"$W/web.yaml"
REV2=$(commit_push "second over ssh")
wait_until 30 synced_at ssh "$REV2" || fail "ssh app not synced to $REV2"
get services/s1/web | has '"127.0.0.1:8002"' || fail "update over ssh not applied"

# ---- a host that drops SYNs: connect timeout, bounded ----
iptables -A INPUT -p tcp --dport "$DROPPORT" -j DROP || fail "iptables in the test's namespace"
app dropped "git://127.0.0.1:$DROPPORT/nothing.git" s6
timed_out() { [ "$(cond dropped reason)" = FetchTimeout ]; }
wait_until 30 timed_out || fail "no connect timeout: $(app_field .status.conditions dropped)"
cond dropped message | has "connect timeout after 2s to 127.0.0.1:$DROPPORT" || fail "timeout message: $(cond dropped message)"
# the reconciler was not stuck: the ssh app still follows pushes
svc web 127.0.0.1:8003 >"$W/web.yaml"
REV3=$(commit_push "third over ssh")
wait_until 30 synced_at ssh "$REV3" || fail "the reconciler stalled behind the dropped host"
kill -0 "$GXPID" || fail "gitops died"
echo "ok"
