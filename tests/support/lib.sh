# Shared helpers for Skiff's shell tests (source it after `set -euo pipefail`):
#   free_port        a 127.0.0.1 TCP port nobody listens on, distinct within the script
#   wait_until S CMD retries CMD every 0.1 s for at most S seconds (a bound, not a timing check)

# Ports handed out are remembered in a file ($$ is the script's pid even in the
# $(...) subshell), inside the script's $TMP when it has one.
free_port() {
  local p given="${TMP:-${TMPDIR:-/tmp}}/.skiff-ports.$$"
  for _ in $(seq 1 200); do
    p=$((18000 + RANDOM % 12000))
    grep -qx "$p" "$given" 2>/dev/null && continue
    if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      echo "$p" >>"$given"
      echo "$p"
      return 0
    fi
  done
  return 1
}

wait_until() {
  local limit=$(($1 * 10)); shift
  for _ in $(seq 1 "$limit"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

# has GREP-ARGS...: `grep -q` that reads all of its input first. With
# pipefail, `curl ... | grep -q x` fails at random when grep exits on the
# first match while curl still writes (curl: (23) Failed writing body).
has() {
  local in
  in=$(cat)
  grep -q "$@" <<<"$in"
}

# with_pids NAME LOG...: TMP (skiff-NAME.XXXXXX) and PIDS (an array of pids,
#   killed at exit, then TMP is removed), and fail MSG, which prints the last
#   30 lines of $TMP/LOG.log for each LOG
with_pids() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-$1.XXXXXX")
  shift
  WITH_PIDS_LOGS=("$@")
  PIDS=()
  trap with_pids_cleanup EXIT
  fail() { with_pids_fail "$@"; }
}

with_pids_cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}

with_pids_fail() {
  echo "FAIL: $*" >&2
  local f
  for f in "${WITH_PIDS_LOGS[@]}"; do echo "---- $f log" >&2; tail -30 "$TMP/$f.log" >&2 || true; done
  exit 1
}

# For a script around one daemon (echo.sh, policy.sh, policy_matrix.sh):
#   one_daemon NAME DAEMON  TMP (skiff-NAME.XXXXXX), PID (set it to the
#                    daemon's pid: killed at exit, then TMP is removed), PORT
#                    and ADMIN (two distinct free ports), and fail MSG, which
#                    prints $TMP/DAEMON.log (the log of skiff-DAEMON)
#   stop_daemon      SIGTERM to PID: it must be gone within 15 s, exit status 0
one_daemon() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-$1.XXXXXX")
  ONE_DAEMON=$2
  PID=
  trap one_daemon_cleanup EXIT
  fail() { one_daemon_fail "$@"; }
  PORT=$(free_port)
  ADMIN=$(free_port)
  [ "$PORT" != "$ADMIN" ] || ADMIN=$((PORT + 1))
}

one_daemon_cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}

one_daemon_fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff-$ONE_DAEMON log" >&2
  cat "$TMP/$ONE_DAEMON.log" >&2 || true
  exit 1
}

stop_daemon() {
  stop_pid "$PID"
  PID=
}

# stop_pid PID [WHAT]: SIGTERM to PID, a child of this shell: it must be gone
# within 15 s with exit status 0 (fail's message starts with WHAT)
stop_pid() {
  kill -TERM "$1"
  exited_ok "$1" 15 "${2:-}"
}

# exited_ok PID SECS [WHAT]: PID, a child of this shell already told to stop,
# must be gone within SECS seconds with exit status 0
exited_ok() {
  local what=${3:+$3 } rc=0
  for _ in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && fail "${what}still running ${2}s after SIGTERM"
  wait "$1" || rc=$?
  [ "$rc" = 0 ] || fail "${what}exit status $rc after SIGTERM"
}

# For a script around `skiff up` (UP_PID, its state dir ST, its output in
# $TMP/up.log, SKIFF the CLI):
#   up_stop        `skiff down` the supervisor when it still runs, then KILL it
#   up_fail MSG    the supervisor's output and the tail of every daemon log,
#                  then exit 1
up_stop() {
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    "$SKIFF" down --state-dir "$ST" --timeout 20s >/dev/null 2>&1
    kill -KILL "$UP_PID" 2>/dev/null
  fi
}

up_fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff up output" >&2
  cat "$TMP/up.log" >&2 || true
  for f in "$ST"/logs/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}
