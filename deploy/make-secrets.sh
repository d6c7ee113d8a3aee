#!/bin/sh
# Writes the secrets deploy/compose.yaml mounts, into DIR (default: secrets/
# next to this script), once: existing files are kept. Run as root (or with
# sudo): the files are made readable by the containers' user (uid 10001) only.
#   pgpass            *:*:printfarm:printfarm:PASSWORD (PostgreSQL role printfarm)
#   tokens            the bearer tokens pf-files and the schedulers accept
#   scheduler_token   the schedulers' token towards pf-files   (admin)
#   agent_token       the simulated printers' token            (admin)
#   operator_token    for farmctl: export PRINTFARM_TOKEN=$(cat DIR/operator_token)
set -eu
dir="${1:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
umask 077
rand() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

if [ ! -e "$dir/pgpass" ]; then
    echo "*:*:printfarm:printfarm:$(rand)" >"$dir/pgpass"
fi
if [ ! -e "$dir/tokens" ]; then
    rand >"$dir/scheduler_token"
    rand >"$dir/agent_token"
    rand >"$dir/operator_token"
    {
        echo "# ROLE NAME TOKEN (or sha256:HEX of the token). Roles: admin, operator, agent, viewer."
        echo "# An agent token is bound to one printer id: agent mk4-03 TOKEN"
        echo "admin scheduler $(cat "$dir/scheduler_token")"
        echo "admin sim-agents $(cat "$dir/agent_token")"
        echo "operator operator $(cat "$dir/operator_token")"
    } >"$dir/tokens"
fi
# The services run as uid 10001 (PostgreSQL reads pgpass as root first).
chown 10001:10001 "$dir/pgpass" "$dir/tokens" "$dir/scheduler_token" "$dir/agent_token"
chmod 600 "$dir/pgpass" "$dir/tokens" "$dir/scheduler_token" "$dir/agent_token"
echo "secrets in $dir" >&2
