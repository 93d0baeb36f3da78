#!/bin/sh
# run_parallel_test.sh [EMBER] — runs the job list that `ember sweep --emit parallel`
# writes with GNU parallel (Debian package `parallel`): a 4-configuration sweep in which
# one configuration fails on purpose, then `ember sweep --collect`, and checks the
# summary and the recorded failure, and that a second job list is empty (finished and
# failed runs are not listed again).
# Ends with "N passed, M failed".
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EMBER=${1:-${EMBER_BIN:-$ROOT/build/ember}}
case $EMBER in /*) ;; *) EMBER=$PWD/$EMBER ;; esac
export EMBER_BIN="$EMBER"
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok - $1"; }
not_ok() { fail=$((fail + 1)); echo "not ok - $1"; }
check() { # check DESCRIPTION COMMAND...
    what=$1; shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}
contains() { # contains TEXT PATTERN: grep -q on a string
    printf '%s\n' "$1" | grep -q -- "$2"
}
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

if ! command -v parallel > /dev/null 2>&1; then
    not_ok "GNU parallel is missing (apt-get install parallel)"
    finish
fi
if [ ! -x "$EMBER" ]; then
    not_ok "no ember program at $EMBER (make all)"
    finish
fi
T=$(mktemp -d /tmp/ember-parallel.XXXXXX)
trap 'if [ "$fail" -eq 0 ]; then rm -rf "$T"; else echo "--- files kept in $T"; fi' EXIT
cd "$T" || finish

SWEEP="$ROOT/examples/tiny.lua --grid hidden=4,5,6,7 --set epochs=2 --set fail_if=6 --jobs 2 --threads 1 --out $T/sweep"
out=$("$EMBER" sweep $SWEEP --emit parallel 2>&1)
check "--emit parallel writes jobs.txt" test -f "$T/sweep/jobs.txt"
check "jobs.txt has one line per run" test "$(wc -l < "$T/sweep/jobs.txt")" -eq 4
check "each line runs ember run ... --out DIR/runs/<id>" \
    test "$(grep -c " run $ROOT/examples/tiny.lua .* --out $T/sweep/runs/c[1-4]-hidden=[4-7]-seed1 " "$T/sweep/jobs.txt")" -eq 4
check "it says how to start them" contains "$out" "parallel --jobs 2 < $T/sweep/jobs.txt"

timeout 90 parallel --will-cite --jobs 2 --joblog "$T/joblog" < "$T/sweep/jobs.txt" > "$T/parallel.out" 2>&1
status=$?
check "parallel reports exactly one failed job (status $status)" test "$status" -eq 1
check "the joblog lists 4 jobs" test "$(tail -n +2 "$T/joblog" | wc -l)" -eq 4

out=$("$EMBER" sweep --collect "$T/sweep" 2>&1)
echo "    the sweep's summary (hidden=6 fails ON PURPOSE: this test checks how a failed run is reported):"
echo "$out" | sed 's/^/    /'
check "collect counts 3 finished and 1 failed" contains "$out" '4 runs: 3 finished, 1 failed, 0 unfinished'
check "summary.md ranks the 3 good configurations" test "$(grep -c '^| [1-3] | c.* | [0-9]*/[0-9]* |$' "$T/sweep/summary.md")" -eq 3
check "summary.md names the failure and its exit status" \
    grep -q '^| c3-hidden=6-seed1 | 1 | tiny: failing on purpose (hidden = fail_if = 6) |$' "$T/sweep/summary.md"

out=$("$EMBER" sweep $SWEEP --emit parallel 2>&1)
check "a new job list is empty once everything ran" test ! -s "$T/sweep/jobs.txt"
out=$("$EMBER" sweep $SWEEP 2>&1)
check "the local driver has nothing to do" contains "$out" 'nothing to do: all 4 runs finished (1 failed'
finish
