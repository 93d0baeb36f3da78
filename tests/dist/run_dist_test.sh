#!/bin/sh
# run_dist_test.sh [EMBER] — data-parallel training over MPI (ember.dist) on this machine:
#  - the communicator's collectives under mpirun -n 2;
#  - equivalence: the B1 VAE for 200 steps (tests/dist/b1_steps.lua) on 1 process and on
#    2 (`--nproc 2`, and plain `mpirun -n 2 ember run`) gives the same loss at every step
#    within 1e-4 relative, and the same final weights within 1e-4;
#  - a global batch that does not divide by the ranks (near-equal shards, weighted);
#  - bad use refused with a clear message;
#  - killing one of two ranks ends the other within 60 s, naming the lost rank, and
#    `ember run --resume` continues from the last checkpoint;
#  - a rank that hangs ends the job after EMBER_DIST_TIMEOUT seconds, with a message;
#  - Ctrl-C / SIGTERM stop every rank at one step with a checkpoint; resuming matches a
#    straight run bit for bit.
# Ends with "N passed, M failed".
EMBER=${1:-build/ember}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
not_ok() { fail=$((fail + 1)); echo "not ok - $1"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name"; fi; }
contains() { case "$1" in *"$2"*) return 0 ;; esac; return 1; }
T=$(mktemp -d /tmp/ember-dist.XXXXXX)
trap 'if [ "$fail" -eq 0 ]; then rm -rf "$T"; else echo "--- files kept in $T"; fi' EXIT
cd "$T" || exit 1
MPIRUN="mpirun --oversubscribe --bind-to none"
[ "$(id -u)" = 0 ] && MPIRUN="$MPIRUN --allow-run-as-root"
B1="$ROOT/tests/dist/b1_steps.lua"

# ---- the communicator
cat > coll.lua <<'LUA'
local d = ember.dist
local r, n = d.init()
local t = ember.full({5}, r + 1); d.all_reduce_(t, {op = 'mean'})
local m = ember.full({2}, r); d.all_reduce_(m, {op = 'max'})
local g = d.gather({rank = r})
local b = ember.full({3}, r * 10); d.broadcast_(b, n - 1) -- from the last rank
local s = d.broadcast('from ' .. r)
local a1, a2 = ember.full({1000}, r + 1), ember.full({10}, 2 * (r + 1))
ember._dist.all_reduce_buckets_({a1, a2}, 0.5, 4096) -- a bucket smaller than a1: in place
local v = d.average_values({loss = r + 1})
print(string.format('rank %d/%d mean %g max %g gather %s%s bcast %g %s buckets %g %g avg %g', r, n,
  t[1], m[1], tostring(g[1].rank), tostring(g[2] and g[2].rank), b[1], s, a1[1], a2[10], v.loss))
d.finalize()
LUA
out=$($MPIRUN -n 2 "$EMBER" coll.lua 2>&1)
check "collectives on 2 ranks ($(echo "$out" | head -1))" test "$(echo "$out" | grep -c 'mean 1.5 max 1 gather 01 bcast 10 from 0 buckets 1.5 3 avg 1.5')" -eq 2
out=$("$EMBER" coll.lua 2>&1)
check "the same calls without mpirun: one rank, no MPI ($out)" contains "$out" 'rank 0/1 mean 1 max 0 gather 0nil bcast 0 from 0 buckets 0.5 1 avg 1'

# ---- equivalence, 200 steps of B1
"$EMBER" run "$B1" --threads 1 --out one > one.out 2>&1
check "B1 on one process" test $? -eq 0
"$EMBER" run "$B1" --nproc 2 --out two > two.out 2>&1
check "B1 with --nproc 2" test $? -eq 0
$MPIRUN -n 2 "$EMBER" run "$B1" --threads 1 --out mpi > mpi.out 2>&1
check "B1 under mpirun -n 2" test $? -eq 0
check "only rank 0 writes: one log, one result" contains "$(cat two/result.lua)" 'world_size = 2'
cat > compare.lua <<'LUA'
local files = require 'ember.files'
local a, b = arg[1], arg[2]
local _, r1 = files.read_csv(a .. '/metrics.csv')
local _, r2 = files.read_csv(b .. '/metrics.csv')
local steps, worst = 0, 0
for i = 1, math.max(#r1, #r2) do
  local x, y = r1[i] and r1[i].loss, r2[i] and r2[i].loss
  if (x == nil) ~= (y == nil) then print('rows differ at ' .. i) os.exit(1) end
  if x then steps = steps + 1; worst = math.max(worst, math.abs(x - y) / math.abs(x)) end
end
local wa, wb = ember.load(a .. '/checkpoint').state.model, ember.load(b .. '/checkpoint').state.model
local wdiff = 0
for k, v in pairs(wa) do wdiff = math.max(wdiff, (v - wb[k]):abs():max():item()) end
print(string.format('%d steps, worst relative loss difference %.3g, largest weight difference %.3g', steps, worst, wdiff))
os.exit(steps == 200 and worst <= 1e-4 and wdiff <= 1e-4 and 0 or 1)
LUA
out=$("$EMBER" compare.lua one two 2>&1)
check "1 vs 2 ranks: the same loss curve and weights ($out)" test $? -eq 0
out=$("$EMBER" compare.lua one mpi 2>&1)
check "1 rank vs mpirun -n 2: the same ($out)" test $? -eq 0

# ---- gradient buckets reduced during backward (overlap) give what reducing them at the
# step gives; two optimizers as a GAN has, one loss reaching both nets, one only one
cat > overlap.lua <<'LUA'
local dist, nn, optim, losses = ember.dist, ember.nn, ember.optim, ember.losses
dist.init()
dist.data_parallel(true, {bucket_mb = 0.5, overlap = arg[1] == 'on'})
ember.manual_seed(1)
local G = nn.Sequential(nn.Linear(16, 300), nn.ReLU(), nn.Linear(300, 784))
local D = nn.Sequential(nn.Linear(784, 400), nn.LeakyReLU(0.2), nn.Linear(400, 1))
dist.broadcast_module_(G); dist.broadcast_module_(D)
local og, od = optim.Adam(G:parameters()), optim.Adam(D:parameters())
local real = ember.rand(64, 784)
for s = 1, 4 do
  local x = dist.shard(real)
  local fake = G(ember.randn(x:size(1), 16))
  od:zero_grad()
  local d_loss = losses.bce_with_logits(D(x), ember.ones(x:size(1), 1))
    + losses.bce_with_logits(D(fake:detach()), ember.zeros(x:size(1), 1))
  d_loss:backward(); od:step()
  og:zero_grad()
  losses.bce_with_logits(D(fake), ember.ones(x:size(1), 1)):backward(); og:step()
  dist.end_shard()
end
local during, at_end = ember._dist.bucket_counts()
print(string.format('%s %d %.9g %.9g', arg[1], during, G[3].weight:sum():item(), D[1].weight:sum():item()))
dist.finalize()
LUA
on=$($MPIRUN -n 2 "$EMBER" overlap.lua on 2>&1 | head -1)
off=$($MPIRUN -n 2 "$EMBER" overlap.lua off 2>&1 | head -1)
check "buckets reduced during backward ($on)" sh -c 'set -- $1; [ "$2" -gt 0 ]' - "$on"
check "... give the weights that reducing at the step gives ($off)" test "${on#on * }" = "${off#off * }"

# ---- a batch that does not divide by the ranks: near-equal shards, weighted by size
"$EMBER" run "$B1" --threads 1 --set steps=20 --set batch=50 --out odd1 > odd1.out 2>&1
"$EMBER" run "$B1" --nproc 3 --set steps=20 --set batch=50 --out odd3 > odd3.out 2>&1
check "--nproc 3 runs a batch of 50 (17 + 17 + 16 rows)" test $? -eq 0
cat > compare20.lua <<'LUA'
local files = require 'ember.files'
local _, r1 = files.read_csv(arg[1] .. '/metrics.csv')
local _, r2 = files.read_csv(arg[2] .. '/metrics.csv')
local worst = 0
for i = 1, #r1 do if r1[i].loss then worst = math.max(worst, math.abs(r1[i].loss - r2[i].loss) / r1[i].loss) end end
print(string.format('worst relative difference %.3g over %d rows', worst, #r1))
os.exit(#r1 == #r2 and #r1 > 0 and worst <= 1e-4 and 0 or 1)
LUA
out=$("$EMBER" compare20.lua odd1 odd3 2>&1)
check "... and gives the one-process loss curve ($out)" test $? -eq 0

# ---- BatchNorm: per-rank statistics by default, the global batch's with sync = true
BN="$ROOT/tests/dist/bn_steps.lua"
"$EMBER" run "$BN" --threads 1 --out bn1 > bn1.out 2>&1
"$EMBER" run "$BN" --nproc 2 --out bn2 > bn2.out 2>&1
"$EMBER" run "$BN" --nproc 2 --set sync=false --out bn2local > bn2local.out 2>&1
cat > compare_bn.lua <<'LUA'
local files = require 'ember.files'
local function curve(d)
  local _, rows = files.read_csv(d .. '/metrics.csv')
  local c = {}
  for _, r in ipairs(rows) do if r.loss then c[#c + 1] = r.loss end end
  return c
end
local a, b, c = curve('bn1'), curve('bn2'), curve('bn2local')
local sync, per_rank = 0, 0
for i = 1, #a do
  sync = math.max(sync, math.abs(a[i] - b[i]) / a[i])
  per_rank = math.max(per_rank, math.abs(a[i] - c[i]) / a[i])
end
local s1, s2 = ember.load('bn1/checkpoint').state.net, ember.load('bn2/checkpoint').state.net
local stats = math.max((s1['2.running_mean'] - s2['2.running_mean']):abs():max():item(),
                       (s1['2.running_var'] - s2['2.running_var']):abs():max():item())
print(string.format('%d steps; sync: worst relative loss difference %.3g, running statistics %.3g; per-rank: %.3g',
  #a, sync, stats, per_rank))
os.exit(#a == 40 and #b == 40 and sync <= 1e-4 and stats <= 1e-4 and per_rank > 1e-3 and 0 or 1)
LUA
out=$("$EMBER" compare_bn.lua 2>&1)
check "SyncBatchNorm on 2 ranks = one process; per-rank statistics differ ($out)" test $? -eq 0

# ---- bad use
out=$("$EMBER" run "$B1" --nproc 0 --out bad0 2>&1); code=$?
check "--nproc 0 is refused ($out)" sh -c '[ "$1" -eq 2 ] && case "$2" in *"--nproc expects a whole number >= 1, got 0"*) ;; *) exit 1 ;; esac' - "$code" "$out"
out=$("$EMBER" run "$B1" --nproc 3 --set batch=2 --set steps=2 --out bad3 2>&1); code=$?
check "--nproc larger than the batch is refused ($code)" sh -c '[ "$1" -ne 0 ] && case "$2" in *"the batch of 2 rows cannot be split over 3 ranks"*) ;; *) exit 1 ;; esac' - "$code" "$out"
out=$($MPIRUN -n 2 "$EMBER" run "$B1" --nproc 2 --out bad4 2>&1); code=$?
check "--nproc under mpirun is refused" sh -c '[ "$1" -ne 0 ] && case "$2" in *"--nproc starts the ranks itself"*) ;; *) exit 1 ;; esac' - "$code" "$out"

# ---- a rank killed mid-run: the job ends, naming it; --resume continues
"$EMBER" run "$B1" --nproc 2 --set steps=60 --set checkpoint_every=10 --set slow=0.05 --out killed > killed.out 2>&1 &
job=$!
tries=0
until [ -f killed/checkpoint ] || [ $tries -ge 300 ]; do sleep 0.1; tries=$((tries + 1)); done
sleep 0.5
victim=""
for p in $(pgrep -f "ember run $B1 .*--out killed"); do
    [ "$p" = "$job" ] && continue
    [ "$p" = "$(cat killed/pid 2>/dev/null)" ] && continue # rank 0 (the leader writes its pid)
    case "$(cat /proc/$p/cmdline 2>/dev/null | tr '\0' ' ')" in mpirun*) continue ;; esac
    victim=$p
done
start=$(date +%s)
[ -n "$victim" ] && kill -9 "$victim"
wait $job
code=$?
took=$(( $(date +%s) - start ))
check "a killed rank ends the job within 60 s (status $code, ${took} s)" sh -c '[ -n "$1" ] && [ "$2" -ne 0 ] && [ "$3" -le 60 ]' - "$victim" "$code" "$took"
check "the message names the lost rank" grep -q "process rank 1 .* exited on signal 9" killed.out
check "the last checkpoint is intact" "$EMBER" -e "assert(ember.load('killed/checkpoint').progress.step >= 10)"
"$EMBER" run --resume killed --nproc 2 > resumed.out 2>&1
check "ember run --resume continues from it and finishes" sh -c "[ \$? -eq 0 ] || exit 1; grep -q 'continuing after step' resumed.out && grep -q 'status = \"finished\"' killed/result.lua"

# ---- a rank that hangs (SIGSTOP): the watchdog ends the job after EMBER_DIST_TIMEOUT s
EMBER_DIST_TIMEOUT=3 "$EMBER" run "$B1" --nproc 2 --set steps=60 --set checkpoint_every=10 --set slow=0.05 --out hung > hung.out 2>&1 &
job=$!
tries=0
until [ -f hung/checkpoint ] || [ $tries -ge 300 ]; do sleep 0.1; tries=$((tries + 1)); done
stopped=""
for mp in $(pgrep -f "^mpirun .*--out hung"); do stopped=$(pgrep -P "$mp" | tail -1); done
start=$(date +%s)
[ -n "$stopped" ] && kill -STOP "$stopped"
wait $job
code=$?
took=$(( $(date +%s) - start ))
kill -9 "$stopped" 2> /dev/null
check "a hung rank ends the job within 30 s (status $code, ${took} s)" sh -c '[ -n "$1" ] && [ "$2" -ne 0 ] && [ "$3" -le 30 ]' - "$stopped" "$code" "$took"
check "... with a message saying so" grep -q "has waited .* for the other ranks: one of them is lost or hung" hung.out

# ---- Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM to
# the ranks (as Slurm sends at a time limit): every rank stops at the same step, rank 0
# saves the checkpoint, status 130; --resume then ends exactly as a straight run
"$EMBER" run "$B1" --nproc 2 --set steps=60 --out straight > straight.out 2>&1
interrupt_test() { # $1: how, $2: folder
    setsid sh -c "exec '$EMBER' run '$B1' --nproc 2 --set steps=60 --set checkpoint_every=10 --set slow=0.03 --out $2 > $2.out 2>&1" &
    job=$! # the `ember run --nproc` process, leading its own process group (a terminal's job)
    tries=0
    until [ -f "$2/checkpoint" ] || [ $tries -ge 300 ]; do sleep 0.1; tries=$((tries + 1)); done
    sleep 0.3
    if [ "$1" = int ]; then
        kill -INT -"$job" # what Ctrl-C does: the whole foreground group
    else
        for mp in $(pgrep -x mpirun -g "$job"); do kill -TERM $(pgrep -P "$mp"); done # each rank, as Slurm does
    fi
    wait "$job"
    code=$?
    check "$1: every rank stops, status 130 ($code)" test "$code" = 130
    check "$1: rank 0 saved the checkpoint and says so" grep -q "checkpoint saved. Resume with: ember run --resume $2" "$2.out"
    "$EMBER" run --resume "$2" --nproc 2 > "$2.resumed" 2>&1
    check "$1: --resume finishes ($?)" grep -q 'status = "finished"' "$2/result.lua"
    check "$1: ... with the straight run's metrics, bit for bit" cmp -s straight/metrics.csv "$2/metrics.csv"
}
interrupt_test int ctrlc
interrupt_test term sigterm

# ---- a checkpoint of a 2-rank run resumes on one process (any world size)
setsid sh -c "exec '$EMBER' run '$B1' --nproc 2 --set steps=60 --set checkpoint_every=10 --set slow=0.03 --out world > world.out 2>&1" &
job=$!
tries=0
until [ -f world/checkpoint ] || [ $tries -ge 300 ]; do sleep 0.1; tries=$((tries + 1)); done
sleep 0.3
kill -INT -"$job"
wait "$job"
"$EMBER" run --resume world > world.resumed 2>&1
check "a 2-rank run's checkpoint resumes on one process ($?)" grep -q 'status = "finished"' world/result.lua
out=$("$EMBER" compare20.lua straight world 2>&1)
check "... and ends with the straight run's loss curve within 1e-4 ($out)" test $? -eq 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
