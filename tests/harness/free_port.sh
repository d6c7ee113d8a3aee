#!/usr/bin/env bash
# Prints a loopback TCP port that is free right now (the kernel picks it), for
# tests that start real servers. Another process may take it before you bind
# it, so bind soon after asking.
set -euo pipefail

if command -v python3 >/dev/null 2>&1; then
    exec python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
fi

# Without python3: try random ports in the ephemeral-free range 20000-29999
# until `ss` shows none listening there.
for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 10000))
    if ! ss -Htln "sport = :$port" | grep -q .; then
        echo "$port"
        exit 0
    fi
done
echo "free_port.sh: found no free port" >&2
exit 1
