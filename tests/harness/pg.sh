#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests: its own cluster in DIR, listening
# on 127.0.0.1 only (unix socket inside DIR), trust authentication, fsync on,
# with a database named `printfarm`.
#
#   pg.sh start DIR PORT   initdb DIR once, start, create `printfarm`; prints the
#                          libpq URL postgresql://USER@127.0.0.1:PORT/printfarm
#   pg.sh stop DIR         stop the server of DIR (no-op if none)
#   pg.sh url DIR          print the URL of the server of DIR
#
# PostgreSQL refuses to run as root: as root the server runs as the system user
# `postgres` (created by Debian's postgresql package; created here if absent),
# and DIR is handed to that user. DIR's parents must let that user through.
# PG_BINDIR overrides the binaries (default: newest /usr/lib/postgresql/*/bin).
set -euo pipefail

die() {
    echo "pg.sh: $*" >&2
    exit 1
}
usage() {
    echo "usage: pg.sh start DIR PORT | stop DIR | url DIR" >&2
    exit 2
}

pg_bindir() {
    if [[ -n ${PG_BINDIR:-} ]]; then
        echo "$PG_BINDIR"
        return
    fi
    local d
    d="$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n 1 || true)"
    if [[ -z $d ]] && command -v pg_config >/dev/null; then
        d="$(pg_config --bindir)"
    fi
    [[ -n $d && -x $d/initdb ]] || die "PostgreSQL server binaries not found (run ./farm deps)"
    echo "$d"
}

# The operating-system user the server runs as (and the database superuser).
server_user() {
    if [[ $EUID -ne 0 ]]; then
        id -un
    else
        echo postgres
    fi
}

ensure_user() {
    local user="$1"
    [[ $EUID -eq 0 ]] || return 0
    id -u "$user" >/dev/null 2>&1 && return 0
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$user" || die "could not create system user '$user'"
}

# as_user CMD...: runs CMD as the server user, from DIR (a root-only current
# directory would make PostgreSQL's tools complain).
as_user() {
    if [[ $EUID -eq 0 ]]; then
        (cd "$DIR" && runuser -u "$USER_NAME" -- "$@")
    else
        (cd "$DIR" && "$@")
    fi
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

url() { echo "postgresql://$USER_NAME@127.0.0.1:$1/printfarm"; }

cmd_start() {
    [[ $# -eq 2 ]] || usage
    local port="$2"
    [[ $port =~ ^[0-9]+$ ]] || die "bad port '$port'"
    DIR="$(abs_dir "$1")"
    USER_NAME="$(server_user)"
    local bin
    bin="$(pg_bindir)"
    ensure_user "$USER_NAME"
    # unix socket path: DIR/.s.PGSQL.PORT must fit in sun_path (108 bytes)
    if [[ $((${#DIR} + 20)) -gt 107 ]]; then
        die "'$DIR' is too long for a unix socket path; use a shorter DIR"
    fi
    if [[ $EUID -eq 0 ]]; then
        chown -R "$USER_NAME:" "$DIR"
        runuser -u "$USER_NAME" -- test -w "$DIR" ||
            die "user '$USER_NAME' cannot write '$DIR': a parent directory is closed to it (chmod o+x it)"
    fi

    local data="$DIR/data"
    if [[ -f $data/postmaster.pid ]] && as_user "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        die "a server is already running in '$DIR' (pg.sh stop '$DIR' first)"
    fi
    if [[ ! -f $data/PG_VERSION ]]; then
        as_user "$bin/initdb" -D "$data" -U "$USER_NAME" --auth=trust \
            --no-locale --encoding=UTF8 >"$DIR/initdb.log" 2>&1 ||
            {
                cat "$DIR/initdb.log" >&2
                die "initdb failed"
            }
        echo "include_if_exists = 'harness.conf'" >>"$data/postgresql.conf"
    fi
    # Rewritten on every start, so a cluster can be restarted on another port.
    cat >"$data/harness.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
fsync = on
logging_collector = off
CONF
    [[ $EUID -ne 0 ]] || chown "$USER_NAME:" "$data/harness.conf"
    echo "$port" >"$DIR/port"

    as_user "$bin/pg_ctl" -D "$data" -l "$DIR/postgres.log" -w -t 60 start >/dev/null ||
        {
            tail -n 20 "$DIR/postgres.log" >&2 || true
            die "postgres failed to start on port $port"
        }

    local exists
    exists="$(as_user "$bin/psql" -X -h 127.0.0.1 -p "$port" -U "$USER_NAME" -d postgres -tAq \
        -c "select 1 from pg_database where datname = 'printfarm'")" ||
        die "could not connect to postgres on port $port"
    if [[ $exists != 1 ]]; then
        as_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$USER_NAME" printfarm ||
            die "could not create database 'printfarm'"
    fi
    url "$port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    [[ -f $1/data/PG_VERSION ]] || return 0
    DIR="$(abs_dir "$1")"
    USER_NAME="$(stat -c %U "$DIR/data")"
    [[ -f $DIR/data/postmaster.pid ]] || return 0
    local bin
    bin="$(pg_bindir)"
    if ! as_user "$bin/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null 2>&1; then
        # not running (a stale postmaster.pid) is fine; a live one is not
        if as_user "$bin/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
            die "could not stop postgres in '$DIR'"
        fi
    fi
}

cmd_url() {
    [[ $# -eq 1 ]] || usage
    [[ -f $1/port ]] || die "no server was started in '$1'"
    DIR="$(abs_dir "$1")"
    USER_NAME="$(stat -c %U "$DIR/data")"
    url "$(cat "$DIR/port")"
}

[[ $# -ge 1 ]] || usage
cmd="$1"
shift
case "$cmd" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
url) cmd_url "$@" ;;
*) usage ;;
esac
