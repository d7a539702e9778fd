#!/usr/bin/env bash
# The skiff supervisor as a user runs it: dependency order and readiness
# gating, restart with backoff after kill -9, status/logs/down, a second
# supervisor refused, a cycle refused with file:line:col, nothing left behind.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
SKIFF=$BIN/skiff
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-super-test.XXXXXX")
ST=$TMP/state
UP_PID=
LOGS_PID=

cleanup() {
  set +e
  [ -n "$LOGS_PID" ] && kill "$LOGS_PID" 2>/dev/null
  up_stop
  # anything still running from this test's directory
  pkill -KILL -f -- "$TMP/" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { up_fail "$@"; }

json_field() { # DAEMON FIELD: from skiff status --json (one key per line)
  "$SKIFF" status --state-dir "$ST" --json | awk -v n="$1" -v f="\"$2\":" '
    $1 == "\"name\":" { v = $2; gsub(/[",]/, "", v); cur = v }
    cur == n && $1 == f { v = $2; gsub(/[",]/, "", v); print v; exit }'
}

field_is() { # DAEMON FIELD VALUE
  [ "$(json_field "$1" "$2" 2>/dev/null)" = "$3" ]
}

A_PORT=$(free_port); A_ADMIN=$(free_port); B_PORT=$(free_port); B_ADMIN=$(free_port); DEAD=$(free_port)

for n in a b; do
  if [ $n = a ]; then p=$A_PORT; ad=$A_ADMIN; else p=$B_PORT; ad=$B_ADMIN; fi
  cat >"$TMP/echo-$n.yaml" <<EOF
listen: 127.0.0.1:$p
version: $n-v1
admin:
  listen: 127.0.0.1:$ad
EOF
done

# b is declared first but depends on a; "blocked" waits on a daemon that
# never becomes ready (its ready_url is a port nobody listens on).
cat >"$TMP/skiff.yaml" <<EOF
daemons:
  - name: echo-b
    command: skiff-echo
    config: echo-b.yaml
    admin: 127.0.0.1:$B_ADMIN
    depends_on: [echo-a]
  - name: echo-a
    command: skiff-echo
    config: echo-a.yaml
    admin: 127.0.0.1:$A_ADMIN
    url: http://127.0.0.1:$A_PORT/
  - name: never-ready
    command: sleep
    args: ["300"]
    ready_url: http://127.0.0.1:$DEAD/readyz
    start_timeout: 1s
    stop_timeout: 2s
    restart: never
  - name: blocked
    command: sleep
    args: ["300"]
    depends_on: [never-ready]
EOF

# --- a cycle is refused with its position, before anything starts
cat >"$TMP/cycle.yaml" <<EOF
daemons:
  - name: x
    command: skiff-echo
    depends_on: [y]
  - name: y
    command: skiff-echo
    depends_on: [x]
EOF
if out=$("$SKIFF" up -f "$TMP/cycle.yaml" --state-dir "$TMP/cycle-state" 2>&1); then fail "cycle accepted"; fi
echo "$out" | has "cycle.yaml:4:18: dependency cycle: x -> y -> x" || fail "cycle message: $out"

# --- usage errors
if "$SKIFF" frobnicate 2>/dev/null; then fail "unknown verb accepted"; fi
"$SKIFF" help | has "usage: skiff" || fail "help"
"$SKIFF" version | has "^skiff [0-9]" || fail "version"
"$SKIFF" status --state-dir "$ST" >/dev/null 2>&1 && fail "status without a supervisor should fail"

# --- up
"$SKIFF" up -f "$TMP/skiff.yaml" --state-dir "$ST" >"$TMP/up.log" 2>&1 &
UP_PID=$!
wait_until 30 field_is echo-b ready true || fail "echo-b never ready"
grep -q "started echo-a" "$TMP/up.log" || fail "echo-a not started"
# order: echo-a was ready before echo-b started
a_ready=$(grep -n "echo-a ready" "$TMP/up.log" | head -1 | cut -d: -f1)
b_start=$(grep -n "started echo-b" "$TMP/up.log" | head -1 | cut -d: -f1)
[ -n "$a_ready" ] && [ -n "$b_start" ] && [ "$a_ready" -lt "$b_start" ] || fail "echo-b started before echo-a was ready"
[ "$(cat "$ST/skiff.pid")" = "$UP_PID" ] || fail "skiff.pid does not hold the supervisor pid"

# never-ready is stopped after its start_timeout and left down (restart: never);
# blocked never starts
wait_until 20 field_is never-ready state exited || fail "never-ready not given up on"
grep -q "never-ready: not ready within 1s" "$TMP/up.log" || fail "no start timeout message"
[ "$(json_field blocked state)" = waiting ] || fail "blocked should still be waiting"
[ "$(json_field blocked pid)" = null ] || fail "blocked has a pid"

# status table
table=$("$SKIFF" status --state-dir "$ST")
echo "$table" | has -E "^echo-a +[0-9]+ +[0-9]+s +0 +yes +running" || fail "status table: $table"
echo "$table" | has -E "^blocked +- +- +0 +no +waiting" || fail "status table (blocked): $table"

# --- a second supervisor for the same state dir is refused
if out=$("$SKIFF" up -f "$TMP/skiff.yaml" --state-dir "$ST" 2>&1); then fail "second supervisor started"; fi
echo "$out" | has "another supervisor (pid $UP_PID)" || fail "refusal message: $out"

# --- kill -9 echo-a: restarted, new pid, ready again, restarts = 1
old=$(json_field echo-a pid)
kill -KILL "$old"
wait_until 30 field_is echo-a restarts 1 || fail "restarts did not reach 1"
wait_until 30 field_is echo-a ready true || fail "echo-a not ready after restart"
new=$(json_field echo-a pid)
[ "$new" != "$old" ] && [ "$new" != null ] || fail "pid did not change ($old -> $new)"
kill -0 "$new" || fail "new pid $new not alive"
curl -fsS -m 10 "http://127.0.0.1:$A_PORT/" | has '"version": "a-v1"' || fail "restarted echo-a does not serve"
grep -q "echo-a (pid $old) killed by signal 9" "$TMP/up.log" || fail "no kill message"

# --- logs: the daemon's output, plus -f that ends with the supervisor
"$SKIFF" logs echo-a --state-dir "$ST" | has "skiff-echo: serving" || fail "logs echo-a"
"$SKIFF" logs echo-a --state-dir "$ST" -n 1 | wc -l | grep -qx 1 || fail "logs -n 1"
if "$SKIFF" logs ../../etc/passwd --state-dir "$ST" 2>/dev/null; then fail "logs accepted a path"; fi
"$SKIFF" logs echo-b -f --state-dir "$ST" >"$TMP/follow.log" 2>&1 &
LOGS_PID=$!

# --- down: reverse order, everything gone, pid file removed
pids="$(json_field echo-a pid) $(json_field echo-b pid)"
"$SKIFF" down --state-dir "$ST" --timeout 30s | has stopped || fail "down"
wait_until 15 sh -c "! kill -0 $UP_PID" || fail "supervisor still alive after down"
set +e; wait "$UP_PID"; rc=$?; set -e
UP_PID=
[ "$rc" = 0 ] || fail "supervisor exit status $rc"
for p in $pids; do kill -0 "$p" 2>/dev/null && fail "daemon pid $p still alive"; done
[ ! -e "$ST/skiff.pid" ] || fail "pid file left behind"
stop_b=$(grep -n "stopping echo-b" "$TMP/up.log" | cut -d: -f1)
stop_a=$(grep -n "stopping echo-a" "$TMP/up.log" | cut -d: -f1)
[ -n "$stop_a" ] && [ -n "$stop_b" ] && [ "$stop_b" -lt "$stop_a" ] || fail "not stopped in reverse order"
wait_until 10 sh -c "! kill -0 $LOGS_PID" || fail "logs -f did not end with the supervisor"
LOGS_PID=
grep -q "skiff-echo: draining" "$TMP/follow.log" || fail "logs -f missed the drain lines"
if pgrep -f -- "$TMP/" >/dev/null; then fail "processes left: $(pgrep -af -- "$TMP/")"; fi
out=$("$SKIFF" status --state-dir "$ST" --json) && fail "status --json exit 0 after down"
echo "$out" | has '"running": false' || fail "status --json after down: $out"

# --- a supervisor killed with SIGKILL leaves its daemons running; the next
# `skiff up` on that state dir stops them before starting its own
"$SKIFF" up -f "$TMP/skiff.yaml" --state-dir "$ST" >"$TMP/up.log" 2>&1 &
UP_PID=$!
wait_until 30 field_is echo-b ready true || fail "second run: echo-b never ready"
orphan=$(json_field echo-a pid)
kill -KILL "$UP_PID"
set +e; wait "$UP_PID"; set -e
kill -0 "$orphan" || fail "echo-a should outlive a SIGKILLed supervisor"
"$SKIFF" up -f "$TMP/skiff.yaml" --state-dir "$ST" >"$TMP/up.log" 2>&1 &
UP_PID=$!
wait_until 30 field_is echo-b ready true || fail "third run: echo-b never ready"
grep -q "stopping echo-a (pid $orphan) left running by an earlier supervisor" "$TMP/up.log" ||
  fail "orphan not reported"
# the orphan's parent was killed: whoever adopted it may reap it a moment
# later, and a zombie still answers kill -0
gone() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 0; [[ $st == Z* ]]; }
wait_until 10 gone "$orphan" || fail "orphan $orphan still running"
[ "$(json_field echo-a restarts)" = 0 ] || fail "echo-a needed restarts: its port was still taken"
"$SKIFF" down --state-dir "$ST" >/dev/null || fail "final down"
wait_until 15 sh -c "! kill -0 $UP_PID" || fail "supervisor alive after final down"
UP_PID=
if pgrep -f -- "$TMP/" >/dev/null; then fail "processes left: $(pgrep -af -- "$TMP/")"; fi
echo "1 passed, 0 failed"
