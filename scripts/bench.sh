#!/bin/sh
# bench.sh BUILD — `make bench`: every figure is a ratio or rate measured in
# this one run on this machine (2 threads unless EMBER_THREADS says otherwise).
BUILD=${1:-build}
THREADS=${EMBER_THREADS:-2}
cd "$(dirname "$0")/.." || exit 1
echo "== ember bench ($(nproc) cores, $THREADS threads, $(date -u +%Y-%m-%dT%H:%MZ))"
"$BUILD/bench_matmul" "$THREADS"
"$BUILD/ember" -e "ember.set_num_threads($THREADS)" scripts/bench_ops.lua
for b in scripts/bench_layers.lua scripts/bench_data.lua; do
    [ -f "$b" ] && "$BUILD/ember" -e "ember.set_num_threads($THREADS)" "$b"
done
[ -f scripts/bench_sweep.sh ] && sh scripts/bench_sweep.sh "$BUILD/ember"
[ -f scripts/bench_dist.sh ] && sh scripts/bench_dist.sh "$BUILD/ember"
exit 0
