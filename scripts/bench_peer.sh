#!/bin/sh
# bench_peer.sh BUILD — `make bench-peer`: ember against PyTorch (Debian's
# python3-torch, the benchmark peer: never a test or run dependency) on the four
# benchmark models of DESIGN.md, in one run on this machine, alternating the two
# sides round by round, same threads, same batches and architectures.
#
# For each model it prints the median ms/step of each side over ROUNDS rounds
# (each round's figure is itself the median of 5 chunks of steps), the ratio
# ember/PyTorch (below 1: ember is faster), and each side's step as a fraction
# of the physical floor: the step's matmul/convolution FLOPs at this machine's
# sgemm rate, measured in the same run (build/bench_matmul, n = 2048).
#
# PyTorch runs in its best measured configuration: the default and the PASSIVE
# OpenMP wait policy, each with glibc's default heap and with freed memory kept (see
# torch_env), are timed twice per model first, and the fastest is used. ember runs
# with its defaults.
#
# The BLAS kernel: both sides' matrix products run on the same OpenBLAS (PyTorch's
# BLAS is Debian's libblas.so.3, OpenBLAS here), PyTorch's convolutions on its own
# oneDNN, which picks its instruction set itself. BLAS_KERNEL=env (the default)
# leaves OpenBLAS as the environment sets it (OPENBLAS_CORETYPE, if set, imposes a
# kernel); BLAS_KERNEL=own unsets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for this
# run alone, both sides, so OpenBLAS picks the kernel for this processor itself.
# The kernel each side runs is printed, and bench_matmul checks its sgemm against
# a double-precision loop before any rate is trusted.
set -eu
BUILD=${1:-build}
BLAS_KERNEL=${BLAS_KERNEL:-env}
case "$BLAS_KERNEL" in
env) ;;
own) unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE ;;
*) echo "bench_peer: BLAS_KERNEL must be env or own, not '$BLAS_KERNEL'" >&2; exit 2 ;;
esac
THREADS=${EMBER_THREADS:-2}
ROUNDS=${ROUNDS:-5}
cd "$(dirname "$0")/.."
PY=/usr/bin/python3 # Debian's python (python3-torch), whatever python3 is first on PATH
sh scripts/install_deps.sh python3-torch
EMBER="$BUILD/ember"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# Steps per measurement (a few hundred for the fast models, fewer for the slow):
steps() {
    case "$1" in vae) echo 300 ;; gan2d) echo 300 ;; cnn) echo 60 ;; dcgan) echo 30 ;; esac
}
# MACs per sample of each step (forward, the weight gradients, and the input
# gradients every layer but the first needs), times 2 FLOPs, times the batch:
#   vae   : fwd 784*400 + 2*400*20 + 20*400 + 400*784 = 651200; + weights 651200;
#           + inputs (all but 784->400) 337600 -> 1640000 MACs; batch 128.
#   cnn   : conv1 784*32*9 = 225792, conv2 196*64*288 = 3612672, fc 3136*128 = 401408,
#           fc2 1280: fwd 4241152; + weights 4241152; + inputs (not conv1) 4015360
#           -> 12497664 MACs; batch 128.
#   dcgan : G fwd 27345920 (ConvT 100*256*49 + 49*256*128*16 + 196*128*16), D fwd
#           6629504 (196*64*16 + 49*128*64*16 + 6272). D update: 2 D fwd + 2 D weight
#           grads + 2 D input grads (not the first conv, 6428800); G update: D fwd +
#           D weights + D input grads (all, 6629504) + G weights + G input grads
#           (not the first, 26091520) -> 140047488 MACs; batch 64.
#   gan2d : G 256*128 + 128*128 + 128*2 = 49408, D 2*128 + 128 = 384: G fwd (no grad)
#           49408; D update 2*(384 + 384 + 128); G update 49408 + 384*3 + 49408 + 16640
#           -> 167808 MACs; batch 512.
flops() {
    case "$1" in
    vae) echo "1640000 * 2 * 128" ;;
    cnn) echo "12497664 * 2 * 128" ;;
    dcgan) echo "140047488 * 2 * 64" ;;
    gan2d) echo "167808 * 2 * 512" ;;
    esac
}
name() {
    case "$1" in
    vae) echo "B1 VAE-MLP (batch 128)" ;;
    dcgan) echo "B2 DCGAN-28 (batch 64, D + G update)" ;;
    cnn) echo "B3 CNN classifier (batch 128)" ;;
    gan2d) echo "B4 2-D GAN (batch 512, z 256)" ;;
    esac
}

run_ember() { env -u OMP_WAIT_POLICY "$EMBER" -e "ember.set_num_threads($THREADS)" scripts/bench_models.lua "$1" "$(steps "$1")" 5 | awk '{print $2}'; }
# PyTorch's configurations: libgomp's wait policy (default or PASSIVE) and glibc's heap
# (default, or "keep": freed memory kept by the process instead of handed back, as
# MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ do; PyTorch's CPU
# allocator is malloc, and on a virtual machine where page faults are dear its step
# was 2.5-3x faster so). The env words of a configuration:
torch_env() {
    case "$1" in
    default) echo "-u OMP_WAIT_POLICY" ;;
    passive) echo "OMP_WAIT_POLICY=PASSIVE" ;;
    default+keep) echo "-u OMP_WAIT_POLICY $KEEP_HEAP" ;;
    passive+keep) echo "OMP_WAIT_POLICY=PASSIVE $KEEP_HEAP" ;;
    esac
}
KEEP_HEAP="MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=1073741824"
TORCH_CONFIGS="default passive default+keep passive+keep"
run_torch() {
    # shellcheck disable=SC2046 # the configuration's env words, split on purpose
    env $(torch_env "$2") OMP_NUM_THREADS="$THREADS" "$PY" scripts/bench_models_torch.py "$1" "$(steps "$1")" 5 "$THREADS" | awk '{print $2}'
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "== bench-peer: ember vs PyTorch $($PY -c 'import torch; print(torch.__version__)') ($(nproc) cores, $THREADS threads, $ROUNDS rounds, $(date -u +%Y-%m-%dT%H:%MZ))"
"$BUILD/bench_matmul" "$THREADS" > "$OUT/matmul.txt" || { cat "$OUT/matmul.txt"; exit 1; }
GFLOPS=$(awk '$1 == 2048 {print $2}' "$OUT/matmul.txt")
echo "BLAS_KERNEL=$BLAS_KERNEL; ember: $(sed -n 1p "$OUT/matmul.txt"); $(sed -n 2p "$OUT/matmul.txt")"
"$PY" scripts/bench_models_torch.py --kernels
echo "sgemm ceiling (n = 2048, $THREADS threads): $GFLOPS GFLOP/s"

MODELS="vae dcgan cnn gan2d"
for m in $MODELS; do
    : > "$OUT/$m.configs"
    for pass in 1 2; do
        for c in $TORCH_CONFIGS; do echo "$c $(run_torch "$m" "$c")" >> "$OUT/$m.configs"; done
    done
    # the configuration with the smallest sum of its two runs
    best=$(awk '{s[$1] += $2; n[$1]++} END {for (c in s) if (n[c] == 2 && (b == "" || s[c] < s[b])) b = c; print b}' "$OUT/$m.configs")
    echo "$best" > "$OUT/$m.policy"
    echo "PyTorch configurations for $m (ms, two runs each): $(awk '{v[$1] = v[$1] (v[$1] == "" ? "" : "/") $2} END {for (c in v) printf "%s %s, ", c, v[c]}' "$OUT/$m.configs")-> $best"
done

r=1
while [ "$r" -le "$ROUNDS" ]; do
    for m in $MODELS; do
        pol=$(cat "$OUT/$m.policy")
        if [ $((r % 2)) -eq 1 ]; then
            run_ember "$m" >> "$OUT/$m.ember"; run_torch "$m" "$pol" >> "$OUT/$m.torch"
        else
            run_torch "$m" "$pol" >> "$OUT/$m.torch"; run_ember "$m" >> "$OUT/$m.ember"
        fi
    done
    echo "round $r done"
    r=$((r + 1))
done

echo
printf '| %-38s | %15s | %13s | %13s | %8s | %17s | %19s |\n' "model (DESIGN.md)" "PyTorch ms/step" "ember ms/step" "ember/PyTorch" "floor ms" "ember: floor/step" "PyTorch: floor/step"
echo "|----------------------------------------|----------------:|--------------:|--------------:|---------:|------------------:|--------------------:|"
for m in $MODELS; do
    e=$(median < "$OUT/$m.ember"); t=$(median < "$OUT/$m.torch")
    floor=$(awk -v f="$(flops "$m")" -v g="$GFLOPS" 'BEGIN {split(f, p, " \\* "); print p[1] * p[2] * p[3] / (g * 1e9) * 1000}')
    printf '| %-38s | %15.2f | %13.2f | %13.2f | %8.2f | %17.2f | %19.2f |\n' "$(name "$m")" "$t" "$e" \
        "$(awk -v e="$e" -v t="$t" 'BEGIN {print e / t}')" "$floor" \
        "$(awk -v f="$floor" -v e="$e" 'BEGIN {print f / e}')" "$(awk -v f="$floor" -v t="$t" 'BEGIN {print f / t}')"
    echo "    rounds: ember $(tr '\n' ' ' < "$OUT/$m.ember")| PyTorch $(tr '\n' ' ' < "$OUT/$m.torch")"
    if [ "$m" = cnn ]; then
        awk -v e="$e" -v t="$t" 'BEGIN {printf "    B3 per epoch (469 steps of 128): ember %.1f s, PyTorch %.1f s\n", e * 469 / 1000, t * 469 / 1000}'
    fi
done
