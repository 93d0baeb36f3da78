#!/bin/sh
# bench_sweep.sh [EMBER] — how much `ember sweep --jobs 2` gains over `--jobs 1` on the
# tiny recipe: 8 configurations (hidden x lr, EPOCHS epochs each, one checkpoint at the
# end so that the disk's fsync does not set the pace), each its own `ember run` process. Both sweeps give each run THREADS threads (default 1), so the
# figure is the process pool's own gain. Prints both wall times (median of 5, alternating)
# and the speed-up (the target on 2 cores: >= 1.7x), next to the machine's own ceiling
# measured in the same run: two copies of a CPU-bound loop at once vs one.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
EMBER=${1:-${EMBER_BIN:-$ROOT/build/ember}}
case $EMBER in /*) ;; *) EMBER=$PWD/$EMBER ;; esac
export EMBER_BIN="$EMBER"
EPOCHS=${EPOCHS:-150}
THREADS=${THREADS:-1}
T=$(mktemp -d /tmp/ember-bench-sweep.XXXXXX)
trap 'rm -rf "$T"' EXIT

now() { date +%s.%N; }

# Prints the wall seconds of one sweep with $1 jobs into a fresh folder (round $2).
sweep_seconds() {
    start=$(now)
    if ! "$EMBER" sweep "$ROOT/examples/tiny.lua" --grid hidden=128,192,256,320 --grid lr=0.01,0.03 \
            --set epochs="$EPOCHS" --set checkpoint_every=1000000 --threads "$THREADS" --jobs "$1" --out "$T/jobs$1-$2" > "$T/jobs$1-$2.out" 2>&1; then
        echo "bench_sweep: the sweep with --jobs $1 failed:" >&2
        cat "$T/jobs$1-$2.out" >&2
        return 1
    fi
    awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
}

echo "bench_sweep: 8 tiny runs of $EPOCHS epochs, $THREADS thread(s) each, $(nproc) cores"
times1=""
times2=""
for round in 1 2 3 4 5; do
    t1=$(sweep_seconds 1 "$round") || exit 1
    t2=$(sweep_seconds 2 "$round") || exit 1
    times1="$times1 $t1"
    times2="$times2 $t2"
done
# The ceiling: how much faster two CPU-bound processes finish together than one after
# the other on this machine (shared or virtual cores often give less than 2x).
SPIN='local x = 0 for i = 1, 2e8 do x = x + i end'
ceiling_round() {
    a=$(now); "$EMBER" -e "$SPIN"; "$EMBER" -e "$SPIN"; b=$(now)
    "$EMBER" -e "$SPIN" & p=$!; "$EMBER" -e "$SPIN"; wait $p; c=$(now)
    awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { printf "%.3f\n", (b - a) / (c - b) }'
}
ceiling=$( (ceiling_round; ceiling_round) | sort -n | tail -n 1)

median() { printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med1=$(median "$times1")
med2=$(median "$times2")
echo "jobs 1 rounds:$times1"
echo "jobs 2 rounds:$times2"
awk -v m1="$med1" -v m2="$med2" -v ceiling="$ceiling" 'BEGIN {
    printf "jobs 1: %.2f s   jobs 2: %.2f s (medians of 5)   speed-up %.2fx (target >= 1.7x on 2 cores)\n", m1, m2, m1 / m2
    printf "machine ceiling for 2 processes: %.2fx; the sweep reaches %.0f%% of it\n", ceiling, 100 * (m1 / m2) / ceiling
}'
