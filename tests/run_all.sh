#!/bin/sh
# run_all.sh BUILD — runs the C tests, the busted specs and the REPL test
# against the binaries in BUILD, then prints one line "N passed, M failed"
# counting them all together. Exit status: 0 only when nothing failed.
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
LOG=$(mktemp -d)
total_pass=0
total_fail=0
status=0

# Adds the counts of the last "N passed, M failed" line of a log.
count() {
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "run_all: $2 printed no summary line (it crashed?)"
        total_fail=$((total_fail + 1))
        return
    fi
    p=$(echo "$line" | cut -d' ' -f1)
    f=$(echo "$line" | cut -d' ' -f3)
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    echo "run_all: $2: $line"
}

# Under the sanitizer build, stock lua5.4 needs the ASan runtime preloaded.
PRELOAD=""
if [ -n "$EMBER_SANITIZE" ]; then
    PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:allow_user_segv_handler=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi

echo "== C tests (core/)"
"$BUILD/test_core" > "$LOG/c.log" 2>&1 || status=1
grep -v '^ok - ' "$LOG/c.log"
count "$LOG/c.log" "C tests"

echo "== Lua specs (busted)"
LUA_CPATH="$ROOT/$BUILD/?.so;;" EMBER_BIN="$ROOT/$BUILD/ember" EMBER_BUILD="$ROOT/$BUILD" \
    LD_PRELOAD="$PRELOAD" busted --lua=lua5.4 -o "$ROOT/tests/summary.lua" tests/lua > "$LOG/lua.log" 2>&1 || status=1
grep -v '^ok - ' "$LOG/lua.log"
count "$LOG/lua.log" "Lua specs"

if [ -f tests/repl/repl_test.sh ]; then
    echo "== REPL test"
    sh tests/repl/repl_test.sh "$ROOT/$BUILD/ember" > "$LOG/repl.log" 2>&1 || status=1
    grep -v '^ok - ' "$LOG/repl.log"
    count "$LOG/repl.log" "REPL test"
fi

# The cluster paths of `ember sweep --emit`: a one-node Slurm (needs root to start
# munged/slurmctld/slurmd) and GNU parallel; and `make install` into a scratch prefix.
# Skipped under the sanitizer build (its programs need the sanitizer runtime preloaded).
if [ -z "$EMBER_SANITIZE" ]; then
    for t in tests/slurm/run_slurm_test.sh tests/parallel/run_parallel_test.sh tests/install/run_install_test.sh tests/dist/run_dist_test.sh; do
        [ -f "$t" ] || continue
        echo "== $t"
        sh "$t" "$ROOT/$BUILD/ember" > "$LOG/cluster.log" 2>&1 || status=1
        grep -v '^ok - ' "$LOG/cluster.log"
        count "$LOG/cluster.log" "$t"
    done
fi

rm -rf "$LOG"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ] && [ "$status" -eq 0 ]
