#!/usr/bin/env bash
# Builds pf-agent, pf-scheduler, pf-files and the virtual printer (Release, in
# build-bench/ unless BUILD_DIR is set) when needed, then runs
# bench/agent_bench.py with Debian's python3 (its grpcio); arguments go to the
# benchmark (--only footprint|scale, --sim-printers N, --serial paced|direct|both,
# --sample, --pg-stat-statements, --keep; see --help).
#   bench/run_agent_bench.sh
#   bench/run_agent_bench.sh --only scale --sim-printers 500
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
JOBS="${JOBS:-$(nproc)}"

/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null || {
    echo "run_agent_bench: /usr/bin/python3 needs grpcio and grpc_tools (python3-grpcio, python3-grpc-tools)" >&2
    exit 1
}
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
echo "run_agent_bench: building pf-agent, pf-scheduler, pf-files and vprinter in $BUILD_DIR" >&2
make --no-print-directory -C "$BUILD_DIR" -j"$JOBS" pf-agent pf-scheduler pf-files vprinter >/dev/null
# 1,000 simulated printers need ~2,000 descriptors in the agent and ~1,000 in
# the scheduler: raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec /usr/bin/python3 "$ROOT/bench/agent_bench.py" --build-dir "$BUILD_DIR" "$@"
