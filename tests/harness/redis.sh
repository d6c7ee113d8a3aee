#!/usr/bin/env bash
# A throw-away Redis server for tests: listens on 127.0.0.1 only, keeps
# everything in DIR, persists nothing.
#
#   redis.sh start DIR PORT   start (waits until it answers PING); prints the URL
#   redis.sh stop DIR         stop the server started in DIR (no-op if none)
#   redis.sh url DIR          print redis://127.0.0.1:PORT of the server in DIR
set -euo pipefail

die() {
    echo "redis.sh: $*" >&2
    exit 1
}
usage() {
    echo "usage: redis.sh start DIR PORT | stop DIR | url DIR" >&2
    exit 2
}

abs_dir() {
    mkdir -p "$1"
    (cd "$1" && pwd)
}

# The pid in DIR/redis.pid when it is a live redis-server, else nothing.
live_pid() {
    local dir="$1" pid
    [[ -f $dir/redis.pid ]] || return 0
    pid="$(cat "$dir/redis.pid")"
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == redis-server* ]]; then
        echo "$pid"
    fi
}

cmd_start() {
    [[ $# -eq 2 ]] || usage
    local dir port="$2"
    dir="$(abs_dir "$1")"
    [[ $port =~ ^[0-9]+$ ]] || die "bad port '$port'"
    command -v redis-server >/dev/null || die "redis-server not found (run ./farm deps)"
    if [[ -n "$(live_pid "$dir")" ]]; then
        die "a server is already running in '$dir' (pid $(live_pid "$dir"))"
    fi
    echo "$port" >"$dir/port"
    rm -f "$dir/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save '' --appendonly no ||
        die "redis-server failed to start; see $dir/redis.log"
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null || true)" == PONG ]]; then
            echo "redis://127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$dir/redis.log" >&2 || true
    die "redis-server on port $port did not answer PING within 10 s"
}

cmd_stop() {
    [[ $# -eq 1 ]] || usage
    [[ -d $1 ]] || return 0
    local dir pid i
    dir="$(abs_dir "$1")"
    pid="$(live_pid "$dir")"
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || {
            rm -f "$dir/redis.pid"
            return 0
        }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/redis.pid"
    echo "redis.sh: redis-server (pid $pid) ignored SIGTERM for 10 s; killed" >&2
}

cmd_url() {
    [[ $# -eq 1 ]] || usage
    [[ -f $1/port ]] || die "no server was started in '$1'"
    echo "redis://127.0.0.1:$(cat "$1/port")"
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
