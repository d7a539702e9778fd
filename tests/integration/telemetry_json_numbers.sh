#!/usr/bin/env bash
# Numbers in query answers, byte for byte as a real Prometheus (Debian's
# /usr/bin/prometheus) writes them: the same instant and range queries
# (vector, scalar, string and matrix results; values from -0, subnormals and
# 1e-7 to 1e300, NaN and infinities; times before 1970 and with
# milliseconds) asked of both over HTTP, and the response bodies must be
# identical.
set -euo pipefail
. "${SKIFF_SRC_DIR:?SKIFF_SRC_DIR not set}/tests/support/lib.sh"

BIN=${SKIFF_BIN_DIR:?SKIFF_BIN_DIR not set}
with_pids tl-json tl prom

command -v prometheus >/dev/null || fail "prometheus is required (apt-get install prometheus)"

OTLP=$(free_port); QUERY=$(free_port); ADMIN=$(free_port); PPORT=$(free_port)
cat >"$TMP/tl.yaml" <<EOF2
listen: 127.0.0.1:$OTLP
query_listen: 127.0.0.1:$QUERY
data_dir: $TMP/data
self_scrape: false
admin:
  listen: 127.0.0.1:$ADMIN
EOF2
"$BIN/skiff-telemetry" --config "$TMP/tl.yaml" >"$TMP/tl.log" 2>&1 &
PIDS+=($!)
printf 'global:\n  scrape_interval: 1m\nscrape_configs: []\n' >"$TMP/prom.yml"
prometheus --config.file="$TMP/prom.yml" --storage.tsdb.path="$TMP/prom" \
  --web.listen-address="127.0.0.1:$PPORT" >"$TMP/prom.log" 2>&1 &
PIDS+=($!)
wait_until 30 curl -fsS "http://127.0.0.1:$ADMIN/readyz" || fail "skiff-telemetry not ready"
wait_until 60 curl -fsS "http://127.0.0.1:$PPORT/-/ready" || fail "prometheus not ready"

ask() { # base path args...: the response body
  local base=$1 path=$2
  shift 2
  curl -sS -m 20 "$base$path" "$@"
}

n=0
diffs=0
check() { # path curl-args...
  local a b
  a=$(ask "http://127.0.0.1:$PPORT" "$@")
  b=$(ask "http://127.0.0.1:$QUERY" "$@")
  n=$((n + 1))
  case $a in *'"status":"success"'*) ;; *) fail "prometheus did not answer $*: $a" ;; esac
  if [ "$a" != "$b" ]; then
    echo "differs: $*" >&2
    echo "  prometheus:      $a" >&2
    echo "  skiff-telemetry: $b" >&2
    diffs=$((diffs + 1))
  fi
}

EXPRS=('vector(-0)' 'vector(NaN)' 'vector(-Inf)' 'vector(+Inf)' 'vector(9007199254740993)' 'vector(123e-10)'
  'vector(5e-324)' 'vector(4.9e-320)' 'vector(1e-7)' 'vector(1e-6)' 'vector(9.99e-7)' 'vector(-0.000001)'
  'vector(1e20)' 'vector(1e21)' 'vector(9.99e20)' 'vector(12345678901234567890)' 'vector(1/3)' 'vector(-2.5e-5)'
  'vector(1.5e300)' 'vector(1.7976931348623157e308)' 'vector(2.2250738585072014e-308)' 'vector(123456.789)'
  'vector(-123.456e10)' 'vector(0.1+0.2)' 'vector(100.5)' 'vector(time())'
  'pi()' '-pi()*1e-10' '1e300' '-0' 'NaN' '-Inf' '5e-324' '0.1+0.2' '1e-7' '123456.789' '"a string"')
for q in "${EXPRS[@]}"; do
  for t in 1 -1.5 0.001 -0.25 1700000000.25; do
    check /api/v1/query --data-urlencode "query=$q" --data "time=$t"
  done
done
for q in 'vector(1)/3' 'vector(time()*1e-9)' '1/3' 'vector(-time())'; do
  check /api/v1/query_range --data-urlencode "query=$q" --data start=-1.5 --data end=2 --data step=0.25
done
[ "$diffs" = 0 ] || fail "$diffs of $n answers differ"
echo "$n answers identical"
