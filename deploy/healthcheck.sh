#!/bin/sh
# The image's HEALTHCHECK: GET /healthz on this container's admin port
# (PRINTFARM_ADMIN_LISTEN, HOST:PORT; a wildcard host is checked on loopback).
# Exit 0 when it answers 200.
addr="${PRINTFARM_ADMIN_LISTEN:-}"
if [ -z "$addr" ]; then
    echo "pf-healthcheck: PRINTFARM_ADMIN_LISTEN is not set" >&2
    exit 1
fi
host="${addr%:*}"
port="${addr##*:}"
case "$host" in
"" | 0.0.0.0 | "[::]" | "*") host=127.0.0.1 ;;
esac
exec curl -fsS -o /dev/null --max-time 2 "http://$host:$port/healthz"
