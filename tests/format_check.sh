#!/usr/bin/env bash
# ctest `format`: every C file of the project (tracked or not, ignored files
# and build trees excepted) must match .clang-format. Prints each offending
# file with clang-format's first complaints; fix with `clang-format -i FILE`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIRS=(lib services tools tests bench)
CLANG_FORMAT="${CLANG_FORMAT:-clang-format}"

command -v "$CLANG_FORMAT" >/dev/null 2>&1 ||
    {
        echo "format_check: '$CLANG_FORMAT' not found (run ./farm deps)" >&2
        exit 1
    }

list_files() {
    local existing=() d
    for d in "${DIRS[@]}"; do
        [[ -d $d ]] && existing+=("$d")
    done
    [[ ${#existing[@]} -gt 0 ]] || return 0
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard -- "${existing[@]}" |
            tr '\0' '\n' | grep -E '\.[ch]$' | grep -vE '(^|/)build[^/]*/' || true
    else
        find "${existing[@]}" -type d -name 'build*' -prune -o \
            -type f \( -name '*.c' -o -name '*.h' \) -print
    fi | sort -u
}

checked=0
bad=()
while IFS= read -r f; do
    [[ -f $f ]] || continue # tracked but deleted in the work tree
    checked=$((checked + 1))
    if ! out="$("$CLANG_FORMAT" --dry-run --Werror "$f" 2>&1)"; then
        bad+=("$f")
        head -n 6 <<<"$out" >&2
    fi
done < <(list_files)

if [[ ${#bad[@]} -gt 0 ]]; then
    echo "format_check: ${#bad[@]} of $checked file(s) need clang-format:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "fix with: clang-format -i ${bad[*]}" >&2
    exit 1
fi
echo "format_check: $checked file(s) formatted"
