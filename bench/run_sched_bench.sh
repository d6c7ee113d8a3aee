#!/usr/bin/env bash
# Builds pf-scheduler, pf-files and pf-agent (Release, in build-bench/ unless BUILD_DIR is
# set) when needed, then runs bench/sched_bench.py with Debian's python3 (its
# grpcio); arguments go to the benchmark (--only cycles|failover|failover-agent, --printers,
# --window, --reps, --pg-stat-statements, --keep; see --help).
#   bench/run_sched_bench.sh
#   bench/run_sched_bench.sh --only failover --reps 10
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
JOBS="${JOBS:-$(nproc)}"
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

[[ -x $PGBENCH ]] || {
    echo "run_sched_bench: $PGBENCH not found: the benchmark compares against it (postgresql-15)" >&2
    exit 1
}
/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null || {
    echo "run_sched_bench: /usr/bin/python3 needs grpcio and grpc_tools (python3-grpcio, python3-grpc-tools)" >&2
    exit 1
}
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
echo "run_sched_bench: building pf-scheduler, pf-files and pf-agent in $BUILD_DIR" >&2
make --no-print-directory -C "$BUILD_DIR" -j"$JOBS" pf-scheduler pf-files pf-agent >/dev/null
exec /usr/bin/python3 "$ROOT/bench/sched_bench.py" --build-dir "$BUILD_DIR" "$@"
