#!/bin/sh
# First start of modelplane/postgres: initialise $PGDATA the way the official image does
# (POSTGRES_USER as superuser with POSTGRES_PASSWORD, database POSTGRES_DB, password logins
# from any address), then run the server in the foreground. A data directory that already
# holds a cluster is used as it is. A missing password stops the start: the server would
# otherwise accept no remote login.
set -eu

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 "$PGDATA" > /dev/null
    rm -f "$pwfile"
    printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    printf 'host all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    if [ "$database" != postgres ]; then
        # single-user mode: no server is listening while the database is made
        printf 'CREATE DATABASE "%s" OWNER "%s";\n' "$database" "$user" \
            | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
fi

if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
