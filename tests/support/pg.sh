# A throwaway PostgreSQL cluster for tests (source it after lib.sh):
#
#   pg_start            initdb + pg_ctl start on a free loopback port, the
#                       unix socket in its own temp dir; sets
#                         PG_URL    postgres://skiff:<password>@127.0.0.1:<port>/skiff
#                         PG_PSQL   an array: psql on the socket as skiff, e.g.
#                                   "${PG_PSQL[@]}" -c 'select 1'
#                         PG_PORT PG_DIR PG_BIN PG_PASSWORD
#   pg_stop             stops the cluster (fast shutdown) and removes PG_DIR;
#                       call it from the script's EXIT trap
#   pg_restart          stop + start of the same cluster (same port and data)
#   pg_available        0 when the PostgreSQL server binaries exist
#
# TCP connections need the password (scram-sha-256), the unix socket trusts
# its local users (psql for inspection). As root the server runs as the
# postgres user (runuser), which owns PG_DIR. Every wait is bounded.

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

pg_available() { pg_bindir >/dev/null; }

_pg_as() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  PG_BIN=$(pg_bindir) || { echo "pg_start: no PostgreSQL server binaries (initdb, pg_ctl)" >&2; return 1; }
  PG_DIR=$(mktemp -d /tmp/skiff-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  mkdir -p "$PG_DIR/sock"
  PG_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  printf '%s\n' "$PG_PASSWORD" >"$PG_DIR/pw"
  [ "$(id -u)" = 0 ] && chown -R postgres: "$PG_DIR"
  _pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U skiff --pwfile="$PG_DIR/pw" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 ||
    { cat "$PG_DIR/initdb.log" >&2; return 1; }
  rm -f "$PG_DIR/pw"
  PG_PORT=$(free_port)
  _pg_start_server || return 1
  PG_PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR/sock" -p "$PG_PORT" -U skiff)
  "${PG_PSQL[@]}" -d postgres -c 'CREATE DATABASE skiff' || return 1
  PG_PSQL+=(-d skiff)
  PG_URL="postgres://skiff:$PG_PASSWORD@127.0.0.1:$PG_PORT/skiff"
  export PG_URL PG_PORT PG_DIR PG_BIN PG_PASSWORD
}

_pg_start_server() {
  _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR/sock -c fsync=on -c synchronous_commit=on" \
    start >/dev/null || { tail -20 "$PG_DIR/server.log" >&2; return 1; }
}

pg_restart() {
  _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null || return 1
  _pg_start_server
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ] || return 0
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      _pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
  PG_DIR=
}
