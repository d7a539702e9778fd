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
