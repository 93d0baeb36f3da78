#!/bin/sh
# run_slurm_test.sh [EMBER] — a real one-node Slurm cluster on this machine, without
# systemd: creates a munge key and starts munged as the munge user, writes a minimal
# slurm.conf (this host, its real CPU count, proctrack/linuxproc, no cgroups) into a
# temporary folder, starts slurmctld and slurmd, submits the job array that
# `ember sweep --emit slurm` wrote for a 4-configuration sweep, waits (bounded), runs
# `ember sweep --collect` and checks the summary; then one data-parallel run as a 2-task
# job (--nproc 2). Stops every daemon it started.
# Needs root and the Debian packages slurm-wlm and munge. Ends with "N passed, M failed".
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
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

for tool in munged slurmctld slurmd sbatch squeue sinfo runuser; do
    if ! command -v "$tool" > /dev/null 2>&1; then
        not_ok "$tool is missing (apt-get install slurm-wlm munge)"
        finish
    fi
done
if [ "$(id -u)" -ne 0 ]; then
    not_ok "needs root (slurmd starts jobs; munged runs as the munge user)"
    finish
fi
if [ ! -x "$EMBER" ]; then
    not_ok "no ember program at $EMBER (make all)"
    finish
fi

T=$(mktemp -d /tmp/ember-slurm.XXXXXX)
chmod 755 "$T"  # munged (as munge) must reach its folder
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2> /dev/null; done
    sleep 0.5
    for p in $PIDS; do kill -9 "$p" 2> /dev/null; done
    if [ "$fail" -ne 0 ]; then
        echo "--- logs kept in $T"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

HOST=$(hostname -s)
CPUS=$(nproc)
PORT=$((20000 + $$ % 20000))

# ---- munge: a fresh key, its own socket, run as the munge user -------------------
mkdir -p "$T/munge" "$T/munge-socket"
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 2> /dev/null
chown -R munge:munge "$T/munge" "$T/munge-socket"
chmod 700 "$T/munge"
chmod 755 "$T/munge-socket"  # munged wants clients to reach its socket
chmod 400 "$T/munge/munge.key"
SOCKET=$T/munge-socket/munge.socket
runuser -u munge -- munged --key-file="$T/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" \
    --seed-file="$T/munge/munged.seed" > "$T/munged.out" 2>&1
sleep 0.3
if [ -f "$T/munge/munged.pid" ]; then
    PIDS="$PIDS $(cat "$T/munge/munged.pid")"
    ok "munged runs as the munge user"
else
    not_ok "munged did not start: $(cat "$T/munged.out" "$T/munge/munged.log" 2> /dev/null)"
    finish
fi

# ---- slurm: minimal configuration for this one node --------------------------------
mkdir -p "$T/state" "$T/spool"
export SLURM_CONF=$T/slurm.conf
cat > "$SLURM_CONF" << EOF
ClusterName=embertest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=test Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i -f "$SLURM_CONF" > "$T/slurmctld.out" 2>&1 &
PIDS="$PIDS $!"
slurmd -D -f "$SLURM_CONF" -N "$HOST" > "$T/slurmd.out" 2>&1 &
PIDS="$PIDS $!"

idle=""
for _ in $(seq 60); do
    state=$(sinfo -h -o %T 2> /dev/null)
    case $state in idle*|mixed*|alloc*) idle=1; break ;; esac
    sleep 0.5
done
if [ -n "$idle" ]; then
    ok "slurmctld and slurmd up, node $HOST with $CPUS CPUs"
else
    not_ok "the node never became idle (sinfo: $state)"
    tail -5 "$T/slurmctld.log" "$T/slurmd.log" 2> /dev/null
    finish
fi

# ---- the sweep as a job array ------------------------------------------------------
cd "$T" || finish
out=$("$EMBER" sweep "$ROOT/examples/tiny.lua" --grid hidden=4,5,6,7 --set epochs=2 \
        --jobs 4 --threads 1 --out "$T/sweep" --emit slurm 2>&1)
check "--emit slurm writes sweep.sbatch" test -f "$T/sweep/sweep.sbatch"
check "the array has 4 tasks" grep -q '^#SBATCH --array=1-4%4$' "$T/sweep/sweep.sbatch"
job=$(sbatch --parsable "$T/sweep/sweep.sbatch" 2> "$T/sbatch.err")
check "sbatch accepts the array (job $job)" test -n "$job"

done_=""
for _ in $(seq 180); do
    if [ -z "$(squeue -h -j "$job" 2> /dev/null)" ]; then done_=1; break; fi
    sleep 0.5
done
check "the array finished within 90 s" test -n "$done_"
check "each task wrote its Slurm output" test "$(ls "$T/sweep/slurm" | wc -l)" -eq 4

out=$("$EMBER" sweep --collect "$T/sweep" 2>&1)
echo "$out" | sed 's/^/    /'
check "collect finds 4 finished runs" sh -c "echo \"\$1\" | grep -q '4 runs: 4 finished, 0 failed, 0 unfinished'" - "$out"
check "summary.md ranks 4 configurations" test "$(grep -c '^| [1-4] | c.* | [0-9]*/[0-9]* |$' "$T/sweep/summary.md")" -eq 4
check "summary.csv has 4 rows" test "$(wc -l < "$T/sweep/summary.csv")" -eq 5
out=$("$EMBER" sweep "$ROOT/examples/tiny.lua" --grid hidden=4,5,6,7 --set epochs=2 \
        --jobs 4 --threads 1 --out "$T/sweep" 2>&1)
check "the local driver then has nothing to do" sh -c "echo \"\$1\" | grep -q 'nothing to do: all 4 runs finished'" - "$out"

# ---- one data-parallel run over 2 Slurm tasks (ember run --nproc 2 inside the job)
out=$("$EMBER" sweep "$ROOT/tests/dist/b1_steps.lua" --set steps=20 --nproc 2 --threads 1 \
        --out "$T/dp" --emit slurm 2>&1)
check "--emit slurm --nproc 2 asks for 2 tasks per run" grep -q '^#SBATCH --ntasks=2 ' "$T/dp/sweep.sbatch"
job=$(sbatch --parsable "$T/dp/sweep.sbatch" 2> "$T/sbatch-dp.err")
check "sbatch accepts the 2-task job (job $job)" test -n "$job"
done_=""
for _ in $(seq 240); do
    if [ -z "$(squeue -h -j "$job" 2> /dev/null)" ]; then done_=1; break; fi
    sleep 0.5
done
check "the data-parallel job finished within 120 s" test -n "$done_"
res=$(cat "$T"/dp/runs/*/result.lua 2> /dev/null)
check "its run finished on 2 ranks" sh -c 'case "$1" in *"status = \"finished\""*"world_size = 2"*|*"world_size = 2"*"status = \"finished\""*) ;; *) exit 1 ;; esac' - "$res"
[ -n "$res" ] || cat "$T"/dp/slurm/* "$T"/dp/runs/*/output 2> /dev/null | tail -20
finish
