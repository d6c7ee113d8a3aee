#!/usr/bin/env bash
# Builds files_bench and pf-files (Release, in build-bench/ unless BUILD_DIR is
# set) when needed, then runs the benchmark; arguments go to files_bench
# (--size, --rounds, --tmp-dir, --sink, --keep, --verbose; see --help).
#   bench/run_files_bench.sh
#   bench/run_files_bench.sh --size 128M --rounds 5
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
JOBS="${JOBS:-$(nproc)}"

command -v openssl >/dev/null 2>&1 || {
    echo "run_files_bench: 'openssl' not found on PATH: the benchmark compares against it" >&2
    exit 1
}
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
echo "run_files_bench: building files_bench and pf-files in $BUILD_DIR" >&2
# Progress lines go away; warnings and errors stay on stderr.
make --no-print-directory -C "$BUILD_DIR" -j"$JOBS" files_bench pf-files >/dev/null
exec "$BUILD_DIR/bench/files_bench" --pf-files "$BUILD_DIR/services/files/pf-files" "$@"
