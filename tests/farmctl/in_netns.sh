#!/usr/bin/env bash
# in_netns.sh CMD [ARGS...]: runs CMD inside a network namespace of its own
# whose loopback carries multicast (lo up, multicast on, 224.0.0.0/4 routed
# to lo), then deletes the namespace. Everything CMD starts -- PostgreSQL,
# Redis, pf-discovery's LAN beacon, farmctl listening for it -- talks on
# 127.0.0.1 inside it: no datagram reaches a real network. Needs root and
# iproute2; says so and fails otherwise.
set -euo pipefail
if [[ $EUID -ne 0 ]]; then
    echo "in_netns.sh: needs root to create a network namespace (ip netns add)" >&2
    exit 1
fi
command -v ip >/dev/null 2>&1 || {
    echo "in_netns.sh: 'ip' (iproute2) not found" >&2
    exit 1
}
ns="pfctl-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link set lo multicast on
ip -n "$ns" route add 224.0.0.0/4 dev lo
ip netns exec "$ns" "$@"
