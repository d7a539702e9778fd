#!/usr/bin/env bash
# skiff-control's events on the platform event bus, with real clients:
#   - GET /api/v1/events read with curl -N (server-sent events): every
#     resource change (ADDED/MODIFIED/DELETED with kind/ns/name/rv and the
#     object) and every audit record; resume with Last-Event-ID and ?since=
#     gives exactly the events after that id (no gap, no duplicate), also
#     across a restart; authentication (401), viewer vs admin (audit events
#     are admin only: 403 for ?type=audit, filtered out otherwise), 400 for
#     a malformed Last-Event-ID;
#   - the Kafka path: skiff-kafka-mock (librdkafka's mock cluster, 3
#     brokers) as events.kafka.brokers; kcat reads skiff.resource and
#     skiff.audit back (keys, payloads); every broker down while resources
#     are applied, then up: every event arrives, each exactly once.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/skiff-events-test.XXXXXX")
PID=
MOCK=
BGPIDS=()

cleanup() {
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  if [ -n "$MOCK" ]; then
    kill -TERM "$MOCK" 2>/dev/null || true
    wait "$MOCK" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- skiff-control log" >&2
  tail -30 "$TMP/control.log" >&2 || true
  exit 1
}

# ---- the mock Kafka cluster ----
"$BIN/skiff-kafka-mock" --brokers 3 </dev/null >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK=$!
wait_until 20 test -s "$TMP/mock.out" || fail "skiff-kafka-mock did not start: $(cat "$TMP/mock.err")"
BOOT=$(head -1 "$TMP/mock.out")

PORT=$(free_port)
ADMIN=$(free_port)
URL=http://127.0.0.1:$PORT
API=$URL/api/v1
mkdir -p "$TMP/state"
cat >"$TMP/control.yaml" <<EOF
listen: 127.0.0.1:$PORT
state_dir: $TMP/state
admin:
  listen: 127.0.0.1:$ADMIN
events:
  retention: 1000
  heartbeat: 1s
  kafka:
    brokers: "$BOOT"
    properties: ["message.timeout.ms=3000", "retry.backoff.ms=50"]
EOF
"$BIN/skiff-control" --config "$TMP/control.yaml" --check | has "config ok" || fail "--check"

start() {
  "$BIN/skiff-control" --config "$TMP/control.yaml" >>"$TMP/control.log" 2>&1 &
  PID=$!
  wait_until 20 curl -sf "$URL/healthz" || fail "control did not start"
}
stop() { # a clean exit (also: no sanitizer report in ASan builds)
  local rc=0
  kill -TERM "$PID"
  wait "$PID" || rc=$?
  PID=
  [ "$rc" = 0 ] || fail "skiff-control exited with $rc"
}

start
TOKEN=$(cat "$TMP/state/admin.token")
AUTH=(-H "authorization: Bearer $TOKEN")
JSON=(-H "content-type: application/json")
VIEWER=$(curl -sf "${AUTH[@]}" "${JSON[@]}" -d '{"name":"events-viewer","role":"viewer"}' "$API/tokens" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
[ -n "$VIEWER" ] || fail "viewer token"

route_json() { # name weight
  printf '{"apiVersion":"skiff.dev/v1","kind":"Route","metadata":{"name":"%s","namespace":"default"},"spec":{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"echo","port":8081,"weight":%s}]}]}}' "$1" "$2"
}
apply() { # name weight -> create
  curl -sf -o /dev/null "${AUTH[@]}" "${JSON[@]}" -d "$(route_json "$1" "$2")" "$API/routes/default" || fail "create $1"
}

# sse FILE: "id event data" per event, from a captured text/event-stream
sse() {
  python3 - "$1" <<'PY'
import sys
ev = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if line == "":
        if "id" in ev:
            print(ev["id"], ev.get("event", "message"), ev.get("data", ""))
        ev = {}
    elif line.startswith(":"):
        continue
    else:
        k, _, v = line.partition(":")
        v = v[1:] if v.startswith(" ") else v
        ev[k] = ev[k] + "\n" + v if k == "data" and k in ev else v
PY
}

# ---- authentication and authorization ----
[ "$(curl -s -o /dev/null -w '%{http_code}' "$API/events")" = 401 ] || fail "no token must be 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $VIEWER" "$API/events?type=audit")" = 403 ] ||
  fail "viewer asking for audit events must be 403"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" -H 'last-event-id: 12abc' "$API/events")" = 400 ] ||
  fail "a malformed Last-Event-ID must be 400"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$API/events?type=no/such")" = 400 ] || fail "bad type 400"
[ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" -X POST "$API/events")" = 405 ] || fail "POST must be 405"

# ---- live stream while resources change ----
curl -sN "${AUTH[@]}" "$API/events" >"$TMP/live.admin" 2>/dev/null &
BGPIDS+=($!)
curl -sN -H "authorization: Bearer $VIEWER" "$API/events" >"$TMP/live.viewer" 2>/dev/null &
BGPIDS+=($!)
wait_until 10 grep -q "skiff event stream" "$TMP/live.admin" || fail "admin stream did not start"
wait_until 10 grep -q "skiff event stream" "$TMP/live.viewer" || fail "viewer stream did not start"
{ curl -s -D - -o /dev/null "${AUTH[@]}" --max-time 2 "$API/events" || true; } | has -i "content-type: text/event-stream" ||
  fail "content type"
curl -sfI --max-time 5 "${AUTH[@]}" "$API/events" | has -i "content-type: text/event-stream" || fail "HEAD"

apply web1 10
apply web2 20
apply web3 30
curl -sf -o /dev/null "${AUTH[@]}" -X PATCH -H 'content-type: application/merge-patch+json' \
  -d '{"metadata":{"labels":{"tier":"gold"}}}' "$API/routes/default/web2" || fail "patch"
curl -sf -o /dev/null "${AUTH[@]}" -X DELETE "$API/routes/default/web3" || fail "delete"

n_resource() { sse "$1" | awk '$2=="resource"' | wc -l; }
# at_least N CMD...: CMD's output (a count) is >= N (for wait_until, which re-runs it)
at_least() { local n=$1; shift; [ "$("$@")" -ge "$n" ]; }
n_audit() { sse "$1" | awk '$2=="audit"' | wc -l; }
wait_until 20 at_least 5 n_resource "$TMP/live.admin" || fail "admin stream: $(cat "$TMP/live.admin")"
wait_until 20 at_least 5 n_audit "$TMP/live.admin" || fail "audit events on the stream"
wait_until 20 at_least 5 n_resource "$TMP/live.viewer" || fail "viewer stream"
# One heartbeat comment at least (heartbeat: 1s; bounded wait, no timing asserted).
wait_until 20 grep -q ": keepalive" "$TMP/live.admin" || fail "no keepalive comment"

sse "$TMP/live.admin" | awk '$2=="resource"' | python3 -c '
import json, sys
want = [("ADDED","web1"),("ADDED","web2"),("ADDED","web3"),("MODIFIED","web2"),("DELETED","web3")]
got = []
for line in sys.stdin:
    i, ev, data = line.split(" ", 2)
    d = json.loads(data)
    assert d["kind"] == "Route" and d["namespace"] == "default", d
    assert d["object"]["metadata"]["name"] == d["name"], d
    assert str(d["resourceVersion"]) == d["object"]["metadata"]["resourceVersion"], d
    got.append((d["type"], d["name"]))
assert got == want, got
' || fail "resource events: $(sse "$TMP/live.admin")"
sse "$TMP/live.admin" | awk '$2=="audit"' | head -1 | cut -d' ' -f3- | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["verb"] == "create" and d["kind"] == "Route" and d["user"] == "bootstrap-admin" and d["code"] == 201, d
' || fail "audit event payload"
if sse "$TMP/live.viewer" | awk '{print $2}' | grep -qx audit; then fail "viewer must not get audit events"; fi

# ---- resume: Last-Event-ID and ?since= give exactly the events after ----
sse "$TMP/live.admin" | awk '{print $1}' >"$TMP/all.ids"
ALL=$(wc -l <"$TMP/all.ids")
CUT=$(sed -n 3p "$TMP/all.ids")
curl -sN --max-time 3 "${AUTH[@]}" -H "last-event-id: $CUT" "$API/events" >"$TMP/resume.1" 2>/dev/null || true
sse "$TMP/resume.1" | awk '{print $1}' >"$TMP/resume.ids"
awk -v c="$CUT" '$1 > c' "$TMP/all.ids" >"$TMP/want.ids"
diff "$TMP/want.ids" "$TMP/resume.ids" >/dev/null || fail "Last-Event-ID resume: want $(tr '\n' ' ' <"$TMP/want.ids") got $(tr '\n' ' ' <"$TMP/resume.ids")"
curl -sN --max-time 3 "${AUTH[@]}" "$API/events?since=$CUT" >"$TMP/resume.2" 2>/dev/null || true
sse "$TMP/resume.2" | awk '{print $1}' | diff "$TMP/want.ids" - >/dev/null || fail "?since= resume"
curl -sN --max-time 3 "${AUTH[@]}" "$API/events?since=0&type=resource" >"$TMP/resume.3" 2>/dev/null || true
[ "$(sse "$TMP/resume.3" | awk '$2!="resource"' | wc -l)" = 0 ] || fail "?type=resource lets other types through"
[ "$(n_resource "$TMP/resume.3")" = 5 ] || fail "since=0 must replay all 5 resource events"

# ---- Kafka: read both topics back with kcat ----
kc() { # topic -> "key<TAB>event-id<TAB>value" lines
  timeout 60 kcat -C -b "$BOOT" -t "$1" -e -o beginning -q -f '%k\t%h\t%s\n' 2>/dev/null |
    sed -E 's/\tskiff-event-id=([0-9]+)[^\t]*\t/\t\1\t/'
}
n_kc() { kc "$1" | wc -l; }
n_kc_all() { echo $(($(n_kc skiff.resource) + $(n_kc skiff.audit))); }
wait_until 30 at_least 5 n_kc skiff.resource || fail "kafka skiff.resource: $(kc skiff.resource)"
kc skiff.resource | python3 -c '
import json, sys
rows = [l.rstrip("\n").split("\t", 2) for l in sys.stdin]
rows.sort(key=lambda r: int(r[1]))
got = [(r[0], json.loads(r[2])["type"]) for r in rows]
want = [("Route/default/web1","ADDED"),("Route/default/web2","ADDED"),("Route/default/web3","ADDED"),
        ("Route/default/web2","MODIFIED"),("Route/default/web3","DELETED")]
assert got == want, got
' || fail "kafka resource keys/payloads: $(kc skiff.resource)"
wait_until 30 at_least 5 n_kc skiff.audit || fail "kafka skiff.audit"
kc skiff.audit | head -1 | cut -f3 | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["verb"] and d["kind"], d' ||
  fail "kafka audit payload"

# ---- broker outage, then recovery: everything once ----
n_log() { { curl -sN --max-time 3 "${AUTH[@]}" "$API/events?since=0" 2>/dev/null || true; } | grep -c '^id: ' || true; }
LOG0=$(n_log)
wait_until 30 at_least "$LOG0" n_kc_all || fail "kafka behind the log before the outage"
kill -USR1 "$MOCK"
wait_until 10 grep -q "brokers down" "$TMP/mock.out" || fail "mock: brokers down"
for i in 1 2 3 4; do apply "out$i" 5; done
sleep 4 # past message.timeout.ms (3s): deliveries fail and the bus produces them again from its log
kill -USR2 "$MOCK"
wait_until 10 grep -q "brokers up" "$TMP/mock.out" || fail "mock: brokers up"
wait_until 30 at_least 9 n_kc skiff.resource || fail "after the outage: $(kc skiff.resource | cut -f1,2)"
curl -s "http://127.0.0.1:$ADMIN/metrics" | has '^skiff_bus_kafka_delivered_total' || fail "delivery metric"
# Every event id once on its topic, and Kafka holds exactly what the log holds.
LOGN=$(n_log)
wait_until 30 at_least "$LOGN" n_kc_all || fail "kafka behind the log"
{ kc skiff.resource; kc skiff.audit; } | cut -f2 | sort -n | uniq -d >"$TMP/dups"
[ ! -s "$TMP/dups" ] || fail "duplicates on Kafka: $(tr '\n' ' ' <"$TMP/dups")"
[ "$(n_kc_all)" = "$LOGN" ] || fail "kafka has more than the log"

# ---- restart: resume across it without gap or duplicate ----
LAST=$(tail -1 "$TMP/all.ids")
stop
start
apply after-restart 1
curl -sN --max-time 3 "${AUTH[@]}" -H "last-event-id: $LAST" "$API/events" >"$TMP/resume.4" 2>/dev/null || true
sse "$TMP/resume.4" | awk '{print $1}' >"$TMP/r4.ids"
python3 - "$TMP/r4.ids" "$LAST" <<'PY' || fail "resume across the restart: $(tr '\n' ' ' <"$TMP/r4.ids")"
import sys
ids = [int(x) for x in open(sys.argv[1])]
last = int(sys.argv[2])
assert ids and ids[0] == last + 1, ids
assert ids == list(range(ids[0], ids[0] + len(ids))), ids
PY
sse "$TMP/resume.4" | has '"name":"after-restart"' || fail "the new change after the restart"
stop
echo "ok"
