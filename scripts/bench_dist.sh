#!/bin/sh
# bench_dist.sh EMBER — the data-parallel figures of `make bench` (ember.dist over Open MPI
# on this one machine): the all-reduce bandwidth of a 10 MB gradient bucket between 2
# local ranks against the machine's memory bandwidth (both measured here, now); B3 per
# epoch on 2 ranks x 1 thread against 1 rank x 2 threads (alternating, ROUNDS rounds,
# medians); and B3 on 4 and 8 ranks (oversubscribed on this machine's cores, so the
# step time itself means little) for the share of a step spent averaging gradients.
EMBER=${1:-build/ember}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-100}
cd "$(dirname "$0")/.." || exit 1
command -v mpirun > /dev/null 2>&1 || { echo "bench_dist: no mpirun (make deps installs openmpi-bin)"; exit 0; }
MPIRUN="mpirun --oversubscribe --bind-to none"
[ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
B=scripts/bench_dist.lua
echo "== data-parallel (ember.dist, Open MPI, $(nproc) cores)"
"$EMBER" -e "ember.set_num_threads(1)" $B memory
$MPIRUN -n 2 "$EMBER" -e "ember.set_num_threads(1)" $B allreduce 10
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
one="" two=""
for r in $(seq "$ROUNDS"); do
    one="$one $("$EMBER" -e "ember.set_num_threads(2)" $B b3 "$STEPS" | awk '{print $11}')"
    two="$two $($MPIRUN -n 2 "$EMBER" -e "ember.set_num_threads(1)" $B b3 "$STEPS" | awk '{print $11}')"
done
m1=$(echo "$one" | tr ' ' '\n' | grep . | median)
m2=$(echo "$two" | tr ' ' '\n' | grep . | median)
echo "B3 per epoch (469 steps of 128, from the median step of $STEPS): 1 rank x 2 threads $m1 s, 2 ranks x 1 thread $m2 s (rounds:$one |$two)"
for n in 4 8; do # the communication share with reduction at the step, then the overlapped step
    $MPIRUN -n $n "$EMBER" -e "ember.set_num_threads(1)" $B b3 $((STEPS / 2)) off
    $MPIRUN -n $n "$EMBER" -e "ember.set_num_threads(1)" $B b3 $((STEPS / 2))
done
