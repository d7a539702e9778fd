# Setup shared by the skiff-gitops end-to-end scripts (tests/e2e/gitops*.sh).
# Source it after lib.sh:
#   gx_init NAME LOG...    BIN, SRC, TMP (skiff-e2e-NAME.XXXXXX), PIDS and CPID
#                          (stopped, and TMP removed, at exit), $TMP/cstate and
#                          $TMP/gxstate, the ports CPORT, CADMIN, GXPORT,
#                          GXADMIN, and fail MSG, which prints
#                          the last GX_TAIL (40) lines of $TMP/LOG.log per LOG
#   gx_control_yaml LINE...  $TMP/control.yaml: listen on CPORT, state_dir
#                          $TMP/cstate, then the given lines
#   gx_run_control         skiff-control on $TMP/control.yaml (CPID), waited
#                          for; over HTTPS when CA (its bundle) is set; sets
#                          TOKEN (the bootstrap admin token) and AUTH (curl args)
#   gx_policy_no_blocked   $TMP/policies/no-blocked.yaml: Routes labelled
#                          blocked=yes are refused
#   gx_git_daemon NAME     a bare $TMP/srv/NAME.git served (push enabled) by
#                          `git daemon` on GITPORT; sets REPO
#   gx_work NAME EMAIL URL [LOG]  an empty working repository W, g (git as
#                          that author) and commit_push MSG (add everything,
#                          commit, push HEAD to main of URL, print the commit;
#                          push errors go to $TMP/LOG.log when LOG is given)
#   gx_sample_repo         R=$TMP/repo: a Git repository holding a copy of
#                          examples/gitops-repo (one commit)
#   gx_gitops_yaml LINE... $TMP/gitops.yaml: listen on GXPORT, control (with
#                          control_ca when CA is set), token_file, state_dir,
#                          the given lines, admin on GXADMIN
#   gx_run_gitops [S]      skiff-gitops on $TMP/gitops.yaml (GXPID, in PIDS),
#                          ready within S (20) seconds
#   get PATH               GET $API/PATH with AUTH

gx_init() {
  BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
  SRC=${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-e2e-$1.XXXXXX")
  shift
  GX_LOGS=("$@")
  PIDS=()
  CPID=
  trap gx_cleanup EXIT
  CPORT=$(free_port)
  CADMIN=$(free_port)
  GXPORT=$(free_port)
  GXADMIN=$(free_port)
  mkdir -p "$TMP/cstate" "$TMP/gxstate"
}

gx_cleanup() {
  set +e
  for p in "${PIDS[@]}" $CPID; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}" $CPID; do wait "$p" 2>/dev/null; done
  rm -rf "$TMP"
}

fail() {
  echo "FAIL: $*" >&2
  local f
  for f in "${GX_LOGS[@]}"; do
    [ -f "$TMP/$f.log" ] || continue
    echo "---- $f log" >&2
    tail -"${GX_TAIL:-40}" "$TMP/$f.log" >&2
  done
  exit 1
}

gx_control_yaml() {
  {
    echo "listen: 127.0.0.1:$CPORT"
    echo "state_dir: $TMP/cstate"
    local l
    for l in "$@"; do echo "$l"; done
  } >"$TMP/control.yaml"
}

gx_run_control() {
  local scheme=http ca=()
  if [ -n "${CA:-}" ]; then
    scheme=https
    ca=(--cacert "$CA")
  fi
  "$BIN/skiff-control" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
  CPID=$!
  wait_until 20 curl -sf "${ca[@]}" "$scheme://127.0.0.1:$CPORT/healthz" || fail "control did not start"
  TOKEN=$(cat "$TMP/cstate/admin.token")
  AUTH=("${ca[@]}" -H "authorization: Bearer $TOKEN")
}

gx_policy_no_blocked() {
  mkdir -p "$TMP/policies"
  cat >"$TMP/policies/no-blocked.yaml" <<'EOF'
apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: no-blocked-routes
spec:
  validationFailureAction: Enforce
  rules:
  - name: not-blocked
    match:
      any:
      - resources:
          kinds: [Route]
    validate:
      message: "routes labelled blocked=yes are not allowed here"
      pattern:
        metadata:
          =(labels):
            =(blocked): "!yes"
EOF
}

gx_git_daemon() {
  GITPORT=$(free_port)
  mkdir -p "$TMP/srv"
  git init -q --bare "$TMP/srv/$1.git"
  git daemon --reuseaddr --listen=127.0.0.1 --port="$GITPORT" --base-path="$TMP/srv" --export-all \
    --enable=receive-pack "$TMP/srv" >>"$TMP/gitd.log" 2>&1 &
  PIDS+=($!)
  REPO=git://127.0.0.1:$GITPORT/$1.git
  wait_until 20 git ls-remote "$REPO" || fail "git daemon did not start"
}

gx_work() {
  W=$TMP/work
  GX_AUTHOR=$1 GX_EMAIL=$2 GX_PUSH=$3 GX_PUSH_LOG=${4:+$TMP/$4.log}
  git init -q -b main "$W"
}
g() { git -C "$W" -c user.name="$GX_AUTHOR" -c user.email="$GX_EMAIL" "$@"; }
commit_push() {
  g add -A
  g commit -q -m "$1"
  if [ -n "$GX_PUSH_LOG" ]; then
    g push -q "$GX_PUSH" HEAD:main 2>>"$GX_PUSH_LOG"
  else
    g push -q "$GX_PUSH" HEAD:main
  fi
  g rev-parse HEAD
}

gx_sample_repo() {
  R=$TMP/repo
  mkdir -p "$R/examples"
  cp -r "$SRC/examples/gitops-repo" "$R/examples/"
  git -C "$R" init -q -b main
  git -C "$R" add -A
  git -C "$R" -c user.name=demo -c user.email=demo@example.com commit -q -m "sample repository"
}

gx_gitops_yaml() {
  {
    echo "listen: 127.0.0.1:$GXPORT"
    if [ -n "${CA:-}" ]; then
      echo "control: https://127.0.0.1:$CPORT"
      echo "control_ca: $CA"
    else
      echo "control: http://127.0.0.1:$CPORT"
    fi
    echo "token_file: $TMP/cstate/admin.token"
    echo "state_dir: $TMP/gxstate"
    local l
    for l in "$@"; do echo "$l"; done
    echo "admin: {listen: 127.0.0.1:$GXADMIN}"
  } >"$TMP/gitops.yaml"
}

gx_run_gitops() {
  "$BIN/skiff-gitops" --config "$TMP/gitops.yaml" >>"$TMP/gitops.log" 2>&1 &
  GXPID=$!
  PIDS+=($GXPID)
  wait_until "${1:-20}" curl -sf "http://127.0.0.1:$GXADMIN/readyz" || fail "gitops did not start"
}

get() { curl -sf "${AUTH[@]}" "$API/$1"; }
