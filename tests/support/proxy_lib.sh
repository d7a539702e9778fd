# Setup shared by the skiff-proxy scripts that run the proxy in front of real
# skiff-echo upstreams (tests/integration/proxy_resil.sh, proxy_shared.sh,
# proxy_breaker.sh, proxy_churn.sh). Source it after lib.sh:
#   px_init NAME           BIN, PROXY, ECHO, TMP (skiff-NAME.XXXXXX), PIDS,
#                          PROXY_PID and BG (all killed at exit; TMP removed
#                          unless KEEP=1), and fail MSG, which prints the last
#                          30 lines of every $TMP/*.log and $TMP/*.out
#   echo_config NAME PORT ADMIN [ERROR_RATE LATENCY]
#                          $TMP/NAME.yaml for a skiff-echo (errors are 503)
#   start_echo NAME [ERROR_RATE LATENCY]
#                          a ready skiff-echo; sets NAME_PORT, NAME_ADMIN, NAME_PID
#   start_proxy            skiff-proxy on $TMP/proxy.yaml (checked with --check
#                          first), ready on ADMIN; sets PROXY_PID and URL
#   stop_proxy             SIGTERM, then the proxy must be gone within 15 s
#                          with exit status 0
# and for proxy.sh and proxy_edges.sh, which start the proxy themselves:
#   px_basic NAME          BIN, CERTS, TMP (skiff-NAME.XXXXXX), PIDS (an array)
#                          and PPID_ (the proxy's pid), killed at exit (then TMP
#                          is removed), and fail MSG, which prints the last 50
#                          lines of $TMP/proxy.log
#   echo_at NAME PORT ADMIN VERSION [YAML_LINE]
#                          a skiff-echo (not waited for), its pid in PIDS

px_init() {
  BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
  PROXY=$BIN/skiff-proxy
  ECHO=$BIN/skiff-echo
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-$1.XXXXXX")
  PIDS=""
  PROXY_PID=
  BG=""
  trap px_cleanup EXIT
  fail() { px_fail "$@"; }
}

px_cleanup() {
  for p in $BG $PIDS $PROXY_PID; do
    if kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  [ -n "${KEEP:-}" ] || rm -rf "$TMP" # KEEP=1 keeps logs for debugging
}

px_fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log "$TMP"/*.out; do
    [ -f "$f" ] || continue
    echo "---- $f (tail)" >&2
    tail -n 30 "$f" >&2 || true
  done
  exit 1
}

echo_config() {
  {
    echo "listen: 127.0.0.1:$2"
    echo "name: $1"
    echo "version: $1"
    if [ $# -ge 5 ]; then
      echo "latency: $5"
      echo "error_rate: $4"
      echo "error_status: 503"
    fi
    echo "admin:"
    echo "  listen: 127.0.0.1:$3"
  } >"$TMP/$1.yaml"
}

start_echo() {
  local port admin pid
  port=$(free_port)
  admin=$(free_port)
  echo_config "$1" "$port" "$admin" "${@:2}"
  "$ECHO" --config "$TMP/$1.yaml" >"$TMP/echo-$1.log" 2>&1 &
  pid=$!
  PIDS="$PIDS $pid"
  eval "$1_PORT=$port; $1_ADMIN=$admin; $1_PID=$pid"
  wait_until 20 curl -fsS "http://127.0.0.1:$admin/readyz" || fail "echo $1 never ready"
}

start_proxy() {
  "$PROXY" --config "$TMP/proxy.yaml" --check >"$TMP/check.log" 2>&1 || fail "--check rejected the config"
  "$PROXY" --config "$TMP/proxy.yaml" >"$TMP/proxy.log" 2>&1 &
  PROXY_PID=$!
  wait_until 20 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "proxy never ready"
  URL="http://127.0.0.1:$PORT"
}

stop_proxy() {
  stop_pid "$PROXY_PID" proxy
  PROXY_PID=
}

px_basic() {
  BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
  CERTS=${SKIFF_TEST_CERTS:?SKIFF_TEST_CERTS not set}
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-$1.XXXXXX")
  PIDS=()
  PPID_=
  trap px_basic_cleanup EXIT
  fail() {
    echo "FAIL: $*" >&2
    echo "---- proxy log" >&2; tail -50 "$TMP/proxy.log" >&2 || true
    exit 1
  }
}

px_basic_cleanup() {
  for p in "${PIDS[@]}" $PPID_; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}

echo_at() {
  printf 'listen: 127.0.0.1:%s\nversion: %s\nadmin: {listen: 127.0.0.1:%s}\n%s\n' "$2" "$4" "$3" "${5:-}" >"$TMP/$1.yaml"
  "$BIN/skiff-echo" --config "$TMP/$1.yaml" 2>"$TMP/$1.log" &
  PIDS+=($!)
}
