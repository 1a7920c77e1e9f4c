#!/bin/sh
# The entrypoint of eligd-local/postgres:15, doing what the official image's does for
# deploy/compose.yaml: on an empty data directory, initdb with POSTGRES_USER and the password
# in POSTGRES_PASSWORD_FILE (scram-sha-256 for every connection), create POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.sql in it; then run postgres as user 999 with the arguments
# given (e.g. -p PORT).
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R 999:999 "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  # Arguments are plain words here (-p PORT, -c name=value).
  exec su postgres -s /bin/sh -c "exec $0 $*"
fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
password=${POSTGRES_PASSWORD:-}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then password=$(cat "$POSTGRES_PASSWORD_FILE"); fi
port=5432
prev=""
for arg in "$@"; do
  if [ "$prev" = "-p" ]; then port=$arg; fi
  prev=$arg
done
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "$password" > /tmp/pwfile
  initdb -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile --auth=scram-sha-256 -E UTF8 --locale=C >/dev/null
  rm -f /tmp/pwfile
  printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p $port" -w start >/dev/null
  export PGPASSWORD="$password"
  if [ "$db" != postgres ]; then
    psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -p "$port" -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -f "$f" ] || continue
    echo "docker-entrypoint.sh: running $f"
    psql -v ON_ERROR_STOP=1 -q -h /var/run/postgresql -p "$port" -U "$user" -d "$db" -f "$f"
  done
  unset PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" "$@"
