#!/usr/bin/env bash
# Builds the libFuzzer targets in their own clang tree and runs each one for
# a bounded time: the ctest `fuzz_run` (45 s per target) and longer runs on
# demand. Fails on any crash, sanitizer report, leak, timeout or broken
# FUZZ_CHECK, printing the input that reproduces it; prints a summary table
# of executions per target.
#
#   run.sh [--build-dir DIR] [--seconds N] [TARGET...]
#
# DIR defaults to $PF_BUILD_DIR/fuzz (or build/fuzz); N to $FUZZ_SECONDS or 45;
# the mutation seed to $FUZZ_SEED or 1 (0: random).
# The tree is configured once and rebuilt incrementally. Each target reads the
# committed seeds (corpus/TARGET) and regressions (regressions/TARGET) without
# writing to them; what it learns goes to DIR/run-corpus/TARGET, kept between
# runs, and crashes to DIR/artifacts/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="${PF_SOURCE_DIR:-$(cd "$HERE/../.." && pwd)}"
BUILD="${PF_BUILD_DIR:-$SRC/build}/fuzz"
SECONDS_EACH="${FUZZ_SECONDS:-45}"
# libFuzzer's -seed: fixed by default so a CI run repeats the same mutations
# (a finding reproduces with its artifact either way); FUZZ_SEED=0 = random.
SEED="${FUZZ_SEED:-1}"
ALL_TARGETS=(gcode_meta marlin bundle files_rpc sched_rpc disc_rpc beacon config)
TARGETS=()

while [[ $# -gt 0 ]]; do
    case "$1" in
    --build-dir)
        BUILD="$2"
        shift 2
        ;;
    --seconds)
        SECONDS_EACH="$2"
        shift 2
        ;;
    -h | --help)
        sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    -*)
        echo "run.sh: unknown option '$1' (see --help)" >&2
        exit 2
        ;;
    *)
        if [[ ! " ${ALL_TARGETS[*]} " == *" $1 "* ]]; then
            echo "run.sh: unknown target '$1': use one of ${ALL_TARGETS[*]}" >&2
            exit 2
        fi
        TARGETS+=("$1")
        shift
        ;;
    esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")
if ! [[ $SECONDS_EACH =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --seconds must be a positive whole number, not '$SECONDS_EACH'" >&2
    exit 2
fi

CLANG="${CLANG:-clang}"
command -v "$CLANG" >/dev/null 2>&1 || {
    echo "run.sh: '$CLANG' not found: install clang and libclang-rt-14-dev (./farm deps)" >&2
    exit 1
}

# ---- build ----
FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    echo "run.sh: configuring the fuzz tree in $BUILD"
    mkdir -p "$BUILD"
    CC="$CLANG" cmake -S "$SRC" -B "$BUILD" -DPF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
        >"$BUILD/configure.log" 2>&1 || {
        cat "$BUILD/configure.log" >&2
        echo "run.sh: configuring the fuzz tree failed" >&2
        exit 1
    }
fi
build_targets=()
for t in "${TARGETS[@]}"; do build_targets+=("fuzz_$t"); done
echo "run.sh: building ${build_targets[*]}"
make -C "$BUILD" -j2 "${build_targets[@]}" >"$BUILD/build.log" 2>&1 || {
    tail -n 40 "$BUILD/build.log" >&2
    echo "run.sh: building the fuzz targets failed (log: $BUILD/build.log)" >&2
    exit 1
}

# ---- run ----
mkdir -p "$BUILD/artifacts" "$BUILD/logs"
failed=0
summary=()
for t in "${TARGETS[@]}"; do
    exe="$BUILD/tests/fuzz/fuzz_$t"
    scratch="$BUILD/run-corpus/$t"
    log="$BUILD/logs/$t.log"
    mkdir -p "$scratch"
    dirs=("$scratch" "$HERE/corpus/$t")
    [[ -d $HERE/regressions/$t ]] && dirs+=("$HERE/regressions/$t")
    echo "run.sh: fuzzing $t for ${SECONDS_EACH}s"
    rm -f "$BUILD/artifacts/$t-"*
    rc=0
    # -timeout: one input taking this long is a hang (generous: the machine is shared).
    "$exe" -seed="$SEED" -max_total_time="$SECONDS_EACH" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$BUILD/artifacts/$t-" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    corpus="$(find "$scratch" -type f | wc -l)"
    result=ok
    artifact="$(ls "$BUILD/artifacts/$t-"* 2>/dev/null | head -n 1 || true)"
    if [[ $rc -ne 0 || -n $artifact ]]; then
        result=FAILED
        failed=1
        echo "run.sh: $t FAILED (exit $rc); the end of its log ($log):" >&2
        grep -E "ERROR|runtime error|fuzz check failed|SUMMARY" "$log" | head -n 8 >&2 || true
        tail -n 25 "$log" >&2
        if [[ -n $artifact ]]; then
            echo "run.sh: reproduce with: $exe $artifact" >&2
            echo "run.sh: once fixed, keep it: cp $artifact $HERE/regressions/$t/NAME" >&2
        fi
    fi
    summary+=("$(printf '%-12s %8s %12s %10s %8s  %s' "$t" "${SECONDS_EACH}s" "${execs:-?}" \
        "${rate:-?}" "$corpus" "$result")")
done

echo
printf '%-12s %8s %12s %10s %8s  %s\n' target time execs execs/s corpus result
for line in "${summary[@]}"; do echo "$line"; done
exit $failed
