#!/bin/sh
# profile_models.sh BUILD [MODEL ...] — where each benchmark model's step goes:
# perf (Debian's linux-perf; a developer's tool, not a dependency) samples
# scripts/bench_models.lua running the model's steps at EMBER_THREADS (2) threads,
# and this prints the symbols holding at least 1.5% of all samples (both threads;
# libgomp's unnamed addresses, idle threads waiting, are summed as "spin").
# Models: vae (B1), dcgan (B2), cnn (B3), gan2d (B4); all four by default.
# Run it on a quiet machine: another job's load shows up as spin and kernel time.
set -eu
BUILD=${1:-build}
[ $# -gt 0 ] && shift
THREADS=${EMBER_THREADS:-2}
cd "$(dirname "$0")/.."
command -v perf > /dev/null || { echo "profile_models: perf is not installed (apt-get install linux-perf)"; exit 1; }
MODELS=${*:-vae dcgan cnn gan2d}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
steps() {
    case "$1" in vae) echo 1500 ;; gan2d) echo 1500 ;; cnn) echo 150 ;; dcgan) echo 80 ;; esac
}
for m in $MODELS; do
    perf record -q -F 999 -o "$OUT/$m.data" "$BUILD/ember" -e "ember.set_num_threads($THREADS)" \
        scripts/bench_models.lua "$m" "$(steps "$m")" 5 > "$OUT/$m.txt" 2> /dev/null
    perf report -i "$OUT/$m.data" --no-children --sort dso,symbol --percent-limit 0.05 2> /dev/null |
        awk -v model="$m" -v line="$(cat "$OUT/$m.txt")" '
            /^#/ || NF < 4 { next }
            {
                pct = $1; sub(/%/, "", pct); dso = $2; sym = $NF
                for (i = 3; i <= NF; i++) if ($i == "[.]" || $i == "[k]") { sym = $(i + 1); break }
                if (dso ~ /libgomp/) sym = "spin (libgomp)"
                else if (dso ~ /kernel/) sym = "kernel"
                else if (dso ~ /liblua/) sym = "Lua interpreter"
                share[sym] += pct
            }
            END {
                split(line, f, " ")
                printf "%s (%s ms/step while profiled):", model, f[2]
                n = 0
                for (s in share) keys[++n] = s
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                    if (share[keys[j]] > share[keys[i]]) { t = keys[i]; keys[i] = keys[j]; keys[j] = t }
                for (i = 1; i <= n; i++) if (share[keys[i]] >= 1.5) printf " %s %.1f%%%s", keys[i], share[keys[i]], ","
                printf "\n"
            }' | sed 's/,$//'
done
