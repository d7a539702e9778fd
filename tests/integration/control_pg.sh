#!/usr/bin/env bash
# skiff-control on PostgreSQL (store: postgres://...), against a throwaway
# cluster started by tests/support/pg.sh:
#   1. the store unit tests (test_control) with SKIFF_TEST_STORE set;
#   2. the whole control.sh suite (CRUD, conflicts, watch, 410, watch resume
#      across a restart, kill -9 during a 20-writer burst, auth, CLI, audit)
#      with SKIFF_TEST_STORE set;
#   3. PostgreSQL specifics, inspected with psql: the schema, events in rv
#      order without gaps, an audit row in the same transaction as every
#      change; two control replicas on one database: concurrent writers
#      (unique, gap-free resourceVersions), shared tokens (bootstrap once, a
#      token made on one replica works and is revoked on the other), a CA
#      join token made on one and redeemed once on the other, a watch on one
#      fed live with the other's commits; the postgresql:// scheme with the
#      password from PGPASSFILE; a restart of PostgreSQL under a running
#      control (refusal, then reconnect); kill -9 of control and a crash of
#      PostgreSQL during bursts (no acknowledged write lost); a wrong
#      password refused at startup; no password in any log; no sanitizer
#      report.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"
. "$SKIFF_SRC_DIR/tests/support/pg.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
CONTROL=$BIN/skiff-control
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-control-pg.XXXXXX")
PIDS=()
BGPIDS=()

cleanup() {
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pg_stop
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "---- $f" >&2; tail -30 "$f" >&2; }; done
  [ -n "${PG_DIR:-}" ] && { echo "---- postgres" >&2; tail -20 "$PG_DIR/server.log" >&2 || true; }
  exit 1
}

pg_available || fail "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
pg_start || fail "cannot start a PostgreSQL cluster"
psql_() { "${PG_PSQL[@]}" -At "$@"; }

# ---- 1. the store unit tests on PostgreSQL ----
UNIT=$BIN/../tests/test_control
[ -x "$UNIT" ] || fail "$UNIT not built"
SKIFF_TEST_STORE=$PG_URL "$UNIT" >"$TMP/unit.log" 2>&1 || fail "test_control against PostgreSQL: $(tail -20 "$TMP/unit.log")"

# ---- 2. the control.sh suite on a fresh database ----
"${PG_PSQL[@]}" -c 'CREATE DATABASE suite' || fail "create database"
SUITE_URL="postgres://skiff:$PG_PASSWORD@127.0.0.1:$PG_PORT/suite"
SKIFF_TEST_STORE=$SUITE_URL bash "$SKIFF_SRC_DIR/tests/integration/control.sh" >"$TMP/suite.log" 2>&1 ||
  fail "control.sh against PostgreSQL: $(tail -40 "$TMP/suite.log")"
grep -q 'control: all checks passed' "$TMP/suite.log" || fail "control.sh did not finish"
# its tables, as psql sees them: ordered, gap-free events; one audit row per change
SQ=("${PG_PSQL[@]:0:${#PG_PSQL[@]}-2}" -d suite -At)
[ "$("${SQ[@]}" -c "select version from skiff_schema where component = 'control'")" = 2 ] || fail "schema version"
[ "$("${SQ[@]}" -c "select count(*) = max(rv) - min(rv) + 1 from events")" = t ] || fail "events must be gap-free"
[ "$("${SQ[@]}" -c "select max(rv) from events")" = "$("${SQ[@]}" -c "select value from meta where key = 'rv'")" ] ||
  fail "meta rv must be the newest event"
[ "$("${SQ[@]}" -c "select count(*) from events e where not exists (select 1 from ctl_audit a where a.rv = e.rv and a.code < 300)")" = 0 ] ||
  fail "every retained event must have its audit row: $("${SQ[@]}" -c 'select rv, type, kind, name from events e where not exists (select 1 from ctl_audit a where a.rv = e.rv) limit 5')"
[ "$("${SQ[@]}" -c "select count(*) from objects where kind = 'Route' and namespace = 'burst'")" -gt 0 ] || fail "burst rows"

# ---- 3. PostgreSQL specifics ----
"${PG_PSQL[@]}" -c 'CREATE DATABASE replicas' || fail "create database"
# postgresql:// scheme, no password in the URL: libpq reads PGPASSFILE
printf '127.0.0.1:%s:replicas:skiff:%s\n' "$PG_PORT" "$PG_PASSWORD" >"$TMP/pgpass"
chmod 600 "$TMP/pgpass"
export PGPASSFILE=$TMP/pgpass
REPL_URL="postgresql://skiff@127.0.0.1:$PG_PORT/replicas"

declare -A PORTS
start_ctl() { # name url
  local n=$1 url=$2
  PORTS[$n]=$(free_port)
  mkdir -p "$TMP/$n"
  cat >"$TMP/$n.yaml" <<EOF
listen: 127.0.0.1:${PORTS[$n]}
state_dir: $TMP/$n
store: $url
watch_heartbeat: 1s
admin:
  listen: 127.0.0.1:$(free_port)
EOF
  "$CONTROL" --config "$TMP/$n.yaml" >>"$TMP/$n.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$n=$!"
  wait_until 30 curl -sf "http://127.0.0.1:${PORTS[$n]}/healthz" || fail "control $n did not start"
}
TOKEN=
tok() { echo "$TOKEN"; }
svc_json() { printf '{"apiVersion":"skiff.dev/v1","kind":"Service","metadata":{"name":"%s"},"spec":{"endpoints":["127.0.0.1:9"]}}' "$1"; }
post() { # replica name -> status
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -H "authorization: Bearer $(tok "$1")" \
    -H 'content-type: application/json' -d "$(svc_json "$2")" "http://127.0.0.1:${PORTS[$1]}/api/v1/services/ns" || true
}

start_ctl a "$REPL_URL"
TOKEN=$(cat "$TMP/a/admin.token")
start_ctl b "$REPL_URL"
# tokens live in PostgreSQL: b found a's admin token and wrote no bootstrap file
[ ! -e "$TMP/b/admin.token" ] || fail "replica b must not bootstrap a second admin token"
[ "$("${PG_PSQL[@]:0:${#PG_PSQL[@]}-2}" -d replicas -At -c "select count(*) from ctl_tokens where name = 'bootstrap-admin'")" = 1 ] ||
  fail "one bootstrap token in PostgreSQL"
# a token created through replica a works on replica b, and a revocation on a is seen by b
VT=$(SKIFF_SERVER=http://127.0.0.1:${PORTS[a]} SKIFF_TOKEN=$TOKEN "$BIN/skiff" token create --role viewer --name shared 2>/dev/null) ||
  fail "token create on replica a"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $VT" "http://127.0.0.1:${PORTS[b]}/api/v1/services")" = 200 ] ||
  fail "a token made on replica a must work on replica b"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "authorization: Bearer $VT" -H 'content-type: application/json' \
     -d "$(svc_json viewer-made)" "http://127.0.0.1:${PORTS[b]}/api/v1/services/ns")" = 403 ] || fail "viewer role on replica b"
SKIFF_SERVER=http://127.0.0.1:${PORTS[b]} SKIFF_TOKEN=$TOKEN "$BIN/skiff" token list | has ' shared  *viewer ' ||
  fail "replica b lists replica a's token"
SKIFF_SERVER=http://127.0.0.1:${PORTS[a]} SKIFF_TOKEN=$TOKEN "$BIN/skiff" token revoke shared >/dev/null || fail "revoke on a"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $VT" "http://127.0.0.1:${PORTS[b]}/api/v1/services")" = 401 ] ||
  fail "a token revoked on replica a must be refused by replica b"
[ "$("${PG_PSQL[@]:0:${#PG_PSQL[@]}-2}" -d replicas -At -c "select count(*) from ctl_tokens where hash like 'skiff_%'")" = 0 ] ||
  fail "only hashes are stored"
# a CA join token made on replica a is redeemed (once) on replica b
JOIN_ID=spiffe://skiff.local/region/local/workload/joiner
curl -s -X POST -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"spiffeId\":\"$JOIN_ID\",\"ttl\":\"10m\",\"uses\":1}" \
  "http://127.0.0.1:${PORTS[a]}/api/v1/ca/join-tokens" >"$TMP/join.json"
JT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$TMP/join.json") || fail "join token: $(cat "$TMP/join.json")"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/joiner.key" -subj /CN=joiner \
  -addext "subjectAltName=URI:$JOIN_ID" 2>/dev/null | python3 -c 'import json,sys; print(json.dumps({"csr": sys.stdin.read(), "token": sys.argv[1]}))' "$JT" >"$TMP/csr.json"
csr_on_b() { curl -s -o "$TMP/csr.out" -w '%{http_code}' -X POST -H 'content-type: application/json' \
  --data-binary @"$TMP/csr.json" "http://127.0.0.1:${PORTS[b]}/api/v1/ca/csr"; }
[ "$(csr_on_b)" = 200 ] || fail "join token from replica a refused by replica b: $(cat "$TMP/csr.out")"
grep -q "$JOIN_ID" "$TMP/csr.out" || fail "issued identity: $(cat "$TMP/csr.out")"
[ "$(csr_on_b)" = 401 ] && grep -q 'already used' "$TMP/csr.out" || fail "a one-use join token used twice: $(cat "$TMP/csr.out")"
[ "$("${PG_PSQL[@]:0:${#PG_PSQL[@]}-2}" -d replicas -At -c "select uses_left from ctl_join_tokens")" = 0 ] || fail "join token row"
# two replicas, 10 writers each, at once: every acknowledged create stored,
# resourceVersions unique and gap-free (one counter row, writers queue on it)
for r in a b; do
  for w in $(seq 1 10); do
    ( for i in $(seq 1 8); do echo "$r$w-$i $(post $r "$r$w-$i")"; done ) >"$TMP/par.$r.$w" &
    BGPIDS+=($!)
  done
done
for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
BGPIDS=()
[ "$(cat "$TMP"/par.* | grep -c ' 201$')" = 160 ] || fail "parallel creates on two replicas: $(cat "$TMP"/par.* | grep -v ' 201$' | head)"
RQ=("${PG_PSQL[@]:0:${#PG_PSQL[@]}-2}" -d replicas -At)
[ "$("${RQ[@]}" -c "select count(*), count(distinct rv), min(rv), max(rv) from events")" = "160|160|1|160" ] ||
  fail "events of two replicas: $("${RQ[@]}" -c 'select count(*), count(distinct rv), min(rv), max(rv) from events')"
[ "$("${RQ[@]}" -c "select count(*) from objects where kind = 'Service'")" = 160 ] || fail "objects of two replicas"
[ "$("${RQ[@]}" -c "select count(distinct rv) from ctl_audit where verb = 'create' and rv is not null")" = 160 ] ||
  fail "audit rows of two replicas"
# what replica a wrote, replica b reads (one store)
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $(tok b)" "http://127.0.0.1:${PORTS[b]}/api/v1/services/ns/a1-1")" = 200 ] ||
  fail "replica b must see replica a's writes"
# a watch on replica b gets what replica a commits, live (LISTEN/NOTIFY),
# interleaved with b's own writes in rv order, each event once
RVB=$(curl -s -H "authorization: Bearer $TOKEN" "http://127.0.0.1:${PORTS[b]}/api/v1/services/ns?limit=1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
curl -sN --max-time 30 -H "authorization: Bearer $TOKEN" \
  "http://127.0.0.1:${PORTS[b]}/api/v1/services/ns?watch=true&resourceVersion=$RVB" >"$TMP/wb" 2>/dev/null &
BGPIDS+=($!)
wait_until 10 grep -q BOOKMARK "$TMP/wb" || fail "watch on replica b did not start: $(cat "$TMP/wb")"
[ "$(post a live-1)" = 201 ] || fail "create live-1 on a"
[ "$(post b live-2)" = 201 ] || fail "create live-2 on b"
[ "$(post a live-3)" = 201 ] || fail "create live-3 on a"
wait_until 15 grep -q '"live-3"' "$TMP/wb" || fail "replica b's watch must see replica a's commits: $(grep -v BOOKMARK "$TMP/wb")"
python3 - "$TMP/wb" "$RVB" <<'PY' || fail "events on replica b's watch"
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
evs = [e for e in evs if e["type"] != "BOOKMARK"]
got = [(e["type"], e["object"]["metadata"]["name"]) for e in evs]
rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
want = [("ADDED", "live-1"), ("ADDED", "live-2"), ("ADDED", "live-3")]
assert got == want, got
assert rvs == list(range(int(sys.argv[2]) + 1, int(sys.argv[2]) + 4)), rvs
PY
for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
BGPIDS=()
kill -TERM "$PID_b"; wait "$PID_b" 2>/dev/null || true

# PostgreSQL restarts under a running control: a clear error while it is
# away, then the next request reconnects
pg_restart || fail "pg restart"
RN=0
reconnected() { RN=$((RN + 1)); [ "$(post a "after-restart-$RN")" = 201 ]; }
wait_until 20 reconnected || fail "control did not reconnect after a PostgreSQL restart"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $(tok a)" "http://127.0.0.1:${PORTS[a]}/api/v1/services/ns/a1-1")" = 200 ] ||
  fail "read after reconnect"
_pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null || fail "pg stop"
# refused (the token check reads PostgreSQL too: 401 "token store
# unavailable"), and control keeps answering
DOWN=$(post a while-down)
[ "$DOWN" != 201 ] && [ "$DOWN" != 000 ] || fail "a write while PostgreSQL is down must be refused, not hang or crash ($DOWN)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORTS[a]}/healthz")" = 200 ] || fail "control must keep serving"
_pg_start_server || fail "pg start"
wait_until 20 reconnected || fail "control did not reconnect after PostgreSQL came back"

# kill -9 during a burst of 20 writers: every 201 is in PostgreSQL
for w in $(seq 1 20); do
  ( for i in $(seq 1 15); do echo "k$w-$i $(post a "k$w-$i")"; done ) >"$TMP/kill.$w" &
  BGPIDS+=($!)
done
acked_at_least() { test "$(cat "$TMP"/kill.* | grep -c ' 201$')" -ge "$1"; }
wait_until 30 acked_at_least 30 || fail "burst did not start"
kill -KILL "$PID_a"
for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
BGPIDS=()
cat "$TMP"/kill.* | awk '$2 == 201 {print $1}' | sort >"$TMP/acked"
"${RQ[@]}" -c "select name from objects where kind = 'Service' and namespace = 'ns' and name like 'k%'" | sort >"$TMP/stored"
LOST=$(comm -23 "$TMP/acked" "$TMP/stored" | wc -l)
echo "pg burst: $(wc -l <"$TMP/acked") acknowledged, $(wc -l <"$TMP/stored") stored, $LOST lost" >&2
[ "$LOST" = 0 ] && [ -s "$TMP/acked" ] || fail "acknowledged writes lost after kill -9"
# ... and the restarted control serves them, with the same token (in PostgreSQL)
start_ctl a "$REPL_URL"
N=$(curl -s -H "authorization: Bearer $TOKEN" "http://127.0.0.1:${PORTS[a]}/api/v1/services/ns" |
  python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["items"] if i["metadata"]["name"].startswith("k")))')
[ "$N" = "$(wc -l <"$TMP/stored")" ] || fail "restarted control lists $N of $(wc -l <"$TMP/stored")"

# PostgreSQL crashes (immediate stop: no checkpoint, WAL recovery at
# restart) during a burst: every 201 is still there afterwards
for w in $(seq 1 10); do
  ( for i in $(seq 1 15); do echo "c$w-$i $(post a "c$w-$i")"; done ) >"$TMP/crash.$w" &
  BGPIDS+=($!)
done
crash_acked() { test "$(cat "$TMP"/crash.* | grep -c ' 201$')" -ge "$1"; }
wait_until 30 crash_acked 20 || fail "crash burst did not start"
_pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 60 stop >/dev/null || fail "pg immediate stop"
for p in "${BGPIDS[@]}"; do wait "$p" 2>/dev/null || true; done
BGPIDS=()
_pg_start_server || fail "pg start after crash"
cat "$TMP"/crash.* | awk '$2 == 201 {print $1}' | sort >"$TMP/cacked"
"${RQ[@]}" -c "select name from objects where kind = 'Service' and namespace = 'ns' and name like 'c%'" | sort >"$TMP/cstored"
CLOST=$(comm -23 "$TMP/cacked" "$TMP/cstored" | wc -l)
echo "pg crash: $(wc -l <"$TMP/cacked") acknowledged, $(wc -l <"$TMP/cstored") stored, $CLOST lost" >&2
[ "$CLOST" = 0 ] && [ -s "$TMP/cacked" ] || fail "acknowledged writes lost in a PostgreSQL crash"
wait_until 20 reconnected || fail "control did not reconnect after the PostgreSQL crash"

# a wrong password: control refuses to start, naming the server, not the secret
cat >"$TMP/bad.yaml" <<EOF
listen: 127.0.0.1:$(free_port)
state_dir: $TMP/bad
store: postgres://skiff:wrong-Secret-42@127.0.0.1:$PG_PORT/replicas
EOF
mkdir -p "$TMP/bad"
set +e; PGPASSFILE=/dev/null timeout 30 "$CONTROL" --config "$TMP/bad.yaml" >"$TMP/bad.out" 2>&1; rc=$?; set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "a wrong password must stop control (rc $rc)"
grep -q "postgres://skiff:\*\*\*@127.0.0.1:$PG_PORT/replicas" "$TMP/bad.out" || fail "startup error must name the store: $(cat "$TMP/bad.out")"
grep -q 'password authentication failed' "$TMP/bad.out" || fail "startup error must say why: $(cat "$TMP/bad.out")"
! grep -q 'wrong-Secret-42' "$TMP/bad.out" || fail "the password must not be logged"
! cat "$TMP"/*.log "$TMP/suite.log" | grep -qF "$PG_PASSWORD" || fail "the password must not appear in any log"

for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
PIDS=()
# sanitizer builds: a report in any control log fails the test
! grep -l 'Sanitizer\|runtime error:' "$TMP"/*.log "$TMP/suite.log" >/dev/null 2>&1 ||
  fail "sanitizer report: $(grep -h -A5 'Sanitizer\|runtime error:' "$TMP"/*.log | head -20)"

echo "control_pg: all checks passed"
