#!/usr/bin/env bash
# ctest `harness_pg_redis`: proves that pg.sh and redis.sh bring real servers
# up on this machine (start on free loopback ports, query, stop), so a broken
# server install fails here rather than deep inside an integration test.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Short (unix socket paths) and open to the postgres user when we are root.
TMP="$(mktemp -d "${TMPDIR:-/tmp}/pfh.XXXXXX")"
chmod 755 "$TMP"

cleanup() {
    "$HERE/pg.sh" stop "$TMP/pg" || true
    "$HERE/redis.sh" stop "$TMP/redis" || true
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "harness selftest: FAIL: $*" >&2
    exit 1
}

pg_port="$("$HERE/free_port.sh")"
pg_url="$("$HERE/pg.sh" start "$TMP/pg" "$pg_port")" || fail "pg.sh start"
echo "postgres: $pg_url"
[[ $pg_url == "postgresql://"*"@127.0.0.1:$pg_port/printfarm" ]] || fail "unexpected url '$pg_url'"
got="$(psql -X "$pg_url" -tAc 'select 1')" || fail "psql could not query $pg_url"
[[ $got == 1 ]] || fail "select 1 returned '$got'"
[[ "$(psql -X "$pg_url" -tAc 'show fsync')" == on ]] || fail "fsync is not on"

redis_port="$("$HERE/free_port.sh")"
redis_url="$("$HERE/redis.sh" start "$TMP/redis" "$redis_port")" || fail "redis.sh start"
echo "redis: $redis_url"
got="$(redis-cli -h 127.0.0.1 -p "$redis_port" ping)" || fail "redis-cli ping"
[[ $got == PONG ]] || fail "ping returned '$got'"

"$HERE/pg.sh" stop "$TMP/pg" || fail "pg.sh stop"
"$HERE/redis.sh" stop "$TMP/redis" || fail "redis.sh stop"
if psql -X "$pg_url" -tAc 'select 1' >/dev/null 2>&1; then
    fail "postgres still answers after stop"
fi
if redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; then
    fail "redis still answers after stop"
fi
echo "harness selftest: ok"
