#!/usr/bin/env bash
# The tests each test binary ran, from the log of `cargo test`, against .ci/test-counts.
#
#   bash .ci/test-counts.sh count  LOG   # print "BINARY<TAB>RAN" for each binary in LOG
#   bash .ci/test-counts.sh check  LOG   # fail if a binary of the manifest ran fewer tests
#   bash .ci/test-counts.sh update LOG   # rewrite the manifest from LOG (after adding tests)
#
# A binary is named as cargo names it ("unittests src/lib.rs", "tests/lib.rs",
# "doc-tests flux"); ran = passed + failed (ignored tests are not run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
manifest=.ci/test-counts
mode=${1:?usage: test-counts.sh count|check|update LOG}
log=${2:?usage: test-counts.sh count|check|update LOG}

count() {
    awk '
        /^ *Running / {
            bin = $0; sub(/^ *Running /, "", bin); sub(/ \(.*\)$/, "", bin); next
        }
        /^ *Doc-tests / { bin = $0; sub(/^ *Doc-tests /, "doc-tests ", bin); next }
        /^test result: / && bin != "" {
            line = $0
            passed = 0; failed = 0
            if (match(line, /[0-9]+ passed/)) passed = substr(line, RSTART, RLENGTH) + 0
            if (match(line, /[0-9]+ failed/)) failed = substr(line, RSTART, RLENGTH) + 0
            ran[bin] += passed + failed
            if (!(bin in order)) { order[bin] = ++n; names[n] = bin }
            bin = ""
        }
        END { for (i = 1; i <= n; i++) printf "%s\t%d\n", names[i], ran[names[i]] }
    ' "$log"
}

case $mode in
count) count ;;
check)
    counts=$(count)
    fail=0
    while IFS=$'\t' read -r bin want; do
        [ -z "$bin" ] && continue
        got=$(awk -F'\t' -v b="$bin" '$1 == b { print $2 }' <<<"$counts")
        if [ -z "$got" ]; then
            echo "test binary \`$bin\` did not run (the manifest expects at least $want tests)"
            fail=1
        elif [ "$got" -lt "$want" ]; then
            echo "test binary \`$bin\` ran $got tests; the manifest expects at least $want"
            fail=1
        else
            echo "ok: $bin ran $got tests (at least $want)"
        fi
    done < <(grep -v '^#' "$manifest" | sed '/^[[:space:]]*$/d')
    exit $fail
    ;;
update)
    counts=$(count)
    {
        echo "# The least number of tests each test binary must run in CI (.ci/run fails below"
        echo "# it). BINARY<TAB>COUNT, binaries named as in cargo's \"Running …\" lines."
        echo "# Regenerate after adding tests: bash .ci/test-counts.sh update LOG (docs/testing.md)."
        printf '%s\n' "$counts"
    } >"$manifest"
    cat "$manifest"
    ;;
*) echo "usage: test-counts.sh count|check|update LOG" >&2; exit 2 ;;
esac
