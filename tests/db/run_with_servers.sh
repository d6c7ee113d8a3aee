#!/usr/bin/env bash
# Runs one test command against throw-away PostgreSQL and Redis servers:
# starts both on free loopback ports in a fresh temp dir (tests/harness),
# exports their URLs, runs the command, stops both servers whatever happens,
# and exits with the command's exit status.
#
#   run_with_servers.sh COMMAND [ARGS...]
#
# The command sees:
#   PF_TEST_PG_URL       postgresql://USER@127.0.0.1:PORT/printfarm
#   PF_TEST_REDIS_URL    redis://127.0.0.1:PORT
#   PF_TEST_PG_DIR       the PostgreSQL server's dir  } for tests that stop and
#   PF_TEST_REDIS_DIR    the Redis server's dir       } restart a server with
#   PF_TEST_HARNESS_DIR  tests/harness                } pg.sh / redis.sh
#
# Servers are stopped by an EXIT trap; a watchdog in its own session also
# stops them if this script is killed with SIGKILL (a ctest timeout), so no
# server outlives the run.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: run_with_servers.sh COMMAND [ARGS...]" >&2
    exit 2
fi

HARNESS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../harness" && pwd)"
# Short: the PostgreSQL unix socket lives in it. Readable by the postgres
# user, which runs the server when we are root.
dir="$(mktemp -d /tmp/pfdb.XXXXXX)"
chmod 755 "$dir"

# shellcheck disable=SC2317 # called from the EXIT trap
stop_servers() {
    bash "$HARNESS/pg.sh" stop "$dir/pg" >/dev/null 2>&1 || true
    bash "$HARNESS/redis.sh" stop "$dir/redis" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop_servers EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# The watchdog: polls this script's pid and cleans up once it is gone. Its
# own session and no inherited stdio, so neither a kill of our process group
# nor a reader waiting for our output's EOF is held up by it.
if command -v setsid >/dev/null 2>&1; then
    # shellcheck disable=SC2016 # $1.. expand in the watchdog, not here
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        bash "$2/pg.sh" stop "$3/pg"; bash "$2/redis.sh" stop "$3/redis"; rm -rf "$3"
    ' watchdog "$$" "$HARNESS" "$dir" </dev/null >/dev/null 2>&1 &
fi

# start_server pg|redis: prints the URL; a new free port per try, since
# another process may take the port between asking and binding.
start_server() {
    local kind="$1" try port url
    for try in 1 2 3; do
        port="$(bash "$HARNESS/free_port.sh")"
        if url="$(bash "$HARNESS/$kind.sh" start "$dir/$kind" "$port")"; then
            echo "$url"
            return 0
        fi
        echo "run_with_servers: $kind did not start on port $port (try $try)" >&2
    done
    return 1
}

pg_url="$(start_server pg)"
redis_url="$(start_server redis)"
export PF_TEST_PG_URL="$pg_url"
export PF_TEST_REDIS_URL="$redis_url"
export PF_TEST_PG_DIR="$dir/pg"
export PF_TEST_REDIS_DIR="$dir/redis"
export PF_TEST_HARNESS_DIR="$HARNESS"

set +e
"$@"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
    echo "run_with_servers: '$*' exited with $rc; last server log lines:" >&2
    tail -n 15 "$dir/pg/postgres.log" >&2 2>/dev/null || true
    tail -n 15 "$dir/redis/redis.log" >&2 2>/dev/null || true
fi
exit "$rc"
