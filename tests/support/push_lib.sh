# Setup shared by the config-push scripts (tests/integration/push.sh,
# push_ident.sh): two skiff-echo upstreams and the Route between them.
# Source it after lib.sh; fail, BIN and TMP come from the script.
#   start_echo_pair        skiff-echo v1 on EP1 (admin EA1) and v2 on EP2
#                          (admin EA2); their pids in E1 and E2
#   apply_web BACKEND_REFS Services echo-v1 (EP1) and echo-v2 (EP2) and Route
#                          web sending / to BACKEND_REFS (a YAML flow list),
#                          applied with `skiff apply`

start_echo_pair() {
  local v port_var admin_var
  for v in 1 2; do
    port_var=EP$v; admin_var=EA$v
    cat >"$TMP/echo$v.yaml" <<EOF
listen: 127.0.0.1:${!port_var}
version: v$v
admin: {listen: 127.0.0.1:${!admin_var}}
EOF
    "$BIN/skiff-echo" --config "$TMP/echo$v.yaml" >>"$TMP/echo$v.log" 2>&1 &
    eval "E$v=$!"
  done
}

apply_web() {
  cat >"$TMP/routes.yaml" <<EOF
apiVersion: skiff.dev/v1
kind: Service
metadata: {name: echo-v1}
spec: {endpoints: ["127.0.0.1:$EP1"]}
---
apiVersion: skiff.dev/v1
kind: Service
metadata: {name: echo-v2}
spec: {endpoints: ["127.0.0.1:$EP2"]}
---
apiVersion: skiff.dev/v1
kind: Route
metadata: {name: web}
spec:
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: $1
EOF
  "$BIN/skiff" apply -f "$TMP/routes.yaml" >"$TMP/apply.out" 2>&1 || fail "apply: $(cat "$TMP/apply.out")"
}
