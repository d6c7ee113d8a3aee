#!/bin/sh
# The image's entrypoint: secrets come as files. For every variable
# PRINTFARM_X_FILE=PATH it sets PRINTFARM_X to the file's content (first line,
# without the newline), e.g. PRINTFARM_TOKEN_FILE=/run/secrets/agent_token ->
# PRINTFARM_TOKEN, then runs the command (a Printfarm binary and its flags).
set -eu
for name in $(env | sed -n 's/^\(PRINTFARM_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    path="$(printenv "${name}_FILE")"
    if [ ! -r "$path" ]; then
        echo "pf-entrypoint: ${name}_FILE: cannot read $path" >&2
        exit 1
    fi
    value="$(head -n 1 "$path")"
    export "$name=$value"
    unset "${name}_FILE"
done
exec "$@"
