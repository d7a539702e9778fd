#!/usr/bin/env bash
# The daemon lifecycle, driven from outside like an operator or a
# supervisor would: skiff-testd (tests/support/testd) with --check, the pid
# file, SKIFF_READY_FD, /readyz, SIGHUP reloads (good, broken, refused),
# SIGTERM drain (in time -> exit 0, deadline -> exit 1) and JSON logs.
set -uo pipefail
BIN=${SKIFF_BIN_DIR:?}/skiff-testd
[ -x "$BIN" ] || { echo "missing $BIN"; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
bad() { echo "FAIL - $1"; failed=$((failed + 1)); }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
# wait_for CMD: polls up to 10 s (a safety net, not a timing assertion)
wait_for() {
  for _ in $(seq 1 200); do eval "$1" && return 0; sleep 0.05; done
  return 1
}
# wait_exit PID: up to 15 s for the child to end; its exit code lands in $rc
wait_exit() {
  rc=timeout
  for _ in $(seq 1 300); do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1"
      rc=$?
      return
    fi
    sleep 0.05
  done
}

# --- --check ---------------------------------------------------------------
cat >"$dir/bad.yaml" <<'EOF'
admin:
  listen: "127.0.0.1"
log:
  level: loud
drain_timeout: 5
workers: 99
wrokers: 2
buffer: lots
upstreams:
  - addr: 10.0.0.1:8080
message: ${SKIFF_TESTD_UNSET_VAR}
EOF
out=$("$BIN" --check --config "$dir/bad.yaml" 2>&1); rc=$?
check "--check exits 1 on a bad config" '[ $rc = 1 ]'
for want in \
  "bad.yaml:2:11: admin.listen: address '127.0.0.1' needs a port" \
  "bad.yaml:4:10: log.level: unknown value 'loud'" \
  "bad.yaml:5:16: drain_timeout: duration '5' needs a unit" \
  "bad.yaml:6:10: workers: 99 is out of range [1, 16]" \
  "bad.yaml:7:1: unknown key 'wrokers' (did you mean 'workers'?)" \
  "bad.yaml:8:9: buffer: invalid size 'lots'" \
  "bad.yaml:10:5: missing required key 'upstreams[0].name'" \
  "bad.yaml:11:10: message: environment variable 'SKIFF_TESTD_UNSET_VAR' is not set"; do
  check "--check reports: $want" 'grep -qF -- "$want" <<<"$out"'
done
check "--check reports all 8 errors, one per line" '[ "$(grep -c "bad.yaml:[0-9]*:[0-9]*: " <<<"$out")" = 8 ]'
check "--check does not say ok on errors" '! grep -q "config ok" <<<"$out"'

printf 'message: fine\nupstreams:\n  - name: a\n    addr: "[::1]:80"\n' >"$dir/good.yaml"
out=$("$BIN" --check --config "$dir/good.yaml" 2>&1); rc=$?
check "--check on a good config: exit 0 and 'config ok'" '[ $rc = 0 ] && [ "$out" = "config ok" ]'
out=$("$BIN" --check 2>&1); rc=$?
check "--check without --config is a usage error" '[ $rc = 2 ]'

out=$("$BIN" --version); check "--version" '[[ "$out" == "skiff-testd "* ]]'
out=$("$BIN" --help); check "--help lists common and own keys" 'grep -q "drain_timeout" <<<"$out" && grep -q "upstreams\[\].name" <<<"$out"'
"$BIN" --bogus >/dev/null 2>&1; rc=$?; check "unknown flag exits 2" '[ $rc = 2 ]'

# a bad config at start: every error on stderr, exit 1, nothing served
"$BIN" --config "$dir/bad.yaml" >"$dir/start-bad.out" 2>&1; rc=$?
check "start with a bad config exits 1 and prints the errors" \
  '[ $rc = 1 ] && grep -q "bad.yaml:6:10: workers" "$dir/start-bad.out"'

# --- run, ready, reload, drain --------------------------------------------
cfg="$dir/run.yaml"
write_cfg() { # message drain_delay drain_timeout
  cat >"$cfg" <<EOF
admin:
  listen: "127.0.0.1:0"
pid_file: $dir/testd.pid
state_dir: $dir/state/testd
drain_timeout: $3
message: $1
drain_delay: $2
EOF
}
write_cfg first 300ms 10s
SKIFF_READY_FD=3 "$BIN" --config "$cfg" 3>"$dir/ready" 2>"$dir/run.log" &
pid=$!; pids+=("$pid")
check "READY=1 written to SKIFF_READY_FD" 'wait_for "grep -qx READY=1 \"$dir/ready\""'
check "log line 'ready'" 'grep -q " INFO  skiff-testd: ready$" "$dir/run.log"'
check "pid file holds the pid" '[ "$(cat "$dir/testd.pid" 2>/dev/null)" = "$pid" ]'
check "state_dir created" '[ -d "$dir/state/testd" ]'
port=$(sed -n 's/.*admin listening addr=127.0.0.1:\([0-9]*\).*/\1/p' "$dir/run.log" | head -1)
check "admin port logged" '[ -n "$port" ]'
check "/readyz is 200 ready" '[ "$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:$port/readyz")" = 200 ]'
check "daemon route answers" '[ "$(curl -s "http://127.0.0.1:$port/testd")" = first ]'

write_cfg second 300ms 10s
kill -HUP "$pid"
check "SIGHUP applies a valid config" 'wait_for "[ \"\$(curl -s http://127.0.0.1:$port/testd)\" = second ]"'
check "reload logged" 'grep -q "config reloaded" "$dir/run.log"'

printf 'message: third\nworkers: 0\nnope: 1\n' >"$cfg"
kill -HUP "$pid"
check "SIGHUP with a broken config logs every error with file:line:col" \
  'wait_for "grep -q \"run.yaml:2:10: workers: 0 is out of range\" \"$dir/run.log\"" && grep -q "run.yaml:3:1: unknown key" "$dir/run.log"'
check "broken reload keeps the running config" '[ "$(curl -s "http://127.0.0.1:$port/testd")" = second ]'

write_cfg refuse 300ms 10s
kill -HUP "$pid"
check "a reload the daemon refuses is logged" 'wait_for "grep -q \"config reload refused\" \"$dir/run.log\""'
check "refused reload keeps the running config" '[ "$(curl -s "http://127.0.0.1:$port/testd")" = second ]'
check "daemon still alive after reloads" 'kill -0 $pid'

kill -TERM "$pid"
wait_exit "$pid"
check "SIGTERM drains and exits 0 (got $rc)" '[ "$rc" = 0 ]'
check "drain logged" 'grep -q "draining reason=SIGTERM" "$dir/run.log" && grep -q "skiff-testd: drained" "$dir/run.log"'
check "pid file removed at exit" '[ ! -e "$dir/testd.pid" ]'

# --- drain deadline -> exit 1; JSON logs -----------------------------------
write_cfg slow 30s 200ms
"$BIN" --config "$cfg" --log-format json 2>"$dir/slow.log" &
pid=$!; pids+=("$pid")
check "JSON log: ready line" 'wait_for "grep -q \"\\\"msg\\\":\\\"ready\\\"\" \"$dir/slow.log\""'
kill -TERM "$pid"
wait_exit "$pid"
check "drain deadline passed -> exit 1 (got $rc)" '[ "$rc" = 1 ]'
check "deadline logged as JSON" 'grep -q "\"level\":\"warn\",\"component\":\"skiff-testd\",\"msg\":\"drain deadline passed; stopping anyway\",\"drain_timeout_ms\":200" "$dir/slow.log"'
check "every JSON log line is an object with ts/level/component/msg" \
  '! grep -v "^{\"ts\":\"[0-9-]*T[0-9:.]*Z\",\"level\":\"[a-z]*\",\"component\":\"skiff-testd\",\"msg\":\".*}$" "$dir/slow.log"'

# a second SIGTERM while draining stops at once
write_cfg twice 30s 30s
"$BIN" --config "$cfg" 2>"$dir/twice.log" &
pid=$!; pids+=("$pid")
wait_for "grep -q 'skiff-testd: ready' \"$dir/twice.log\""
kill -TERM "$pid"
wait_for "grep -q draining \"$dir/twice.log\""
kill -INT "$pid"
wait_exit "$pid"
check "second stop signal ends the drain (exit 1, got $rc)" '[ "$rc" = 1 ]'

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
