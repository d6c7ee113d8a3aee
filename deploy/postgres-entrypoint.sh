#!/bin/sh
# Starts PostgreSQL for the farm. On the first start (empty $PGDATA) it
# creates the cluster, the role `printfarm` and the database `printfarm`; the
# role's password is the last field of the pgpass line in $PGPASSFILE_SECRET
# (the same file the schedulers use as their PGPASSFILE), so the password is
# never in an environment variable or the compose file.
set -eu
: "${PGDATA:?}"
secret="${PGPASSFILE_SECRET:-/run/secrets/pgpass}"

if [ "$(id -u)" = 0 ]; then
    # Read the secret as root (it may be readable by its owner only), then
    # continue as postgres.
    password=""
    if [ -r "$secret" ]; then
        password="$(grep -v '^#' "$secret" | head -n 1 | awk -F: '{ print $NF }')"
    fi
    mkdir -p "$PGDATA" /run/postgresql
    chown postgres:postgres "$PGDATA" /run/postgresql
    chmod 700 "$PGDATA"
    export PF_PG_PASSWORD="$password"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${PF_PG_PASSWORD:-}" ]; then
        echo "pf-postgres: no password in $secret (one pgpass line: *:*:printfarm:printfarm:PASSWORD)" >&2
        exit 1
    fi
    initdb -D "$PGDATA" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    {
        echo "listen_addresses = '*'"
        echo "password_encryption = 'scram-sha-256'"
    } >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # Single-user mode: nothing listens while the role and database are made.
    esc="$(printf '%s' "$PF_PG_PASSWORD" | sed "s/'/''/g")"
    postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE ROLE printfarm LOGIN PASSWORD '$esc';
CREATE DATABASE printfarm OWNER printfarm;
SQL
    echo "pf-postgres: initialised $PGDATA (role and database printfarm)"
fi
unset PF_PG_PASSWORD
exec postgres -D "$PGDATA" "$@"
