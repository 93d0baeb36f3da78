#!/bin/sh
# update_results.sh — regenerates README.md's results tables from the run folders
# under runs/ (and sweeps/): each scripts/results_<family>.lua prints a Markdown table
# from the figures the runs themselves wrote (result.lua, metrics.csv, summary.md), and
# this script puts it between the README's marker lines
#   <!-- results:<family> --> ... <!-- /results:<family> -->
# Usage: sh scripts/update_results.sh [BUILD [FAMILY ...]]
# With families named (autoencoders, gans, autoregressive), only their tables are
# rewritten: runs/ is not in git, so a fresh checkout holds only the runs made there.
BUILD=${1:-build}
[ $# -gt 0 ] && shift
cd "$(dirname "$0")/.." || exit 1
for script in scripts/results_*.lua; do
    family=$(basename "$script" .lua | sed 's/^results_//')
    if [ $# -gt 0 ]; then
        case " $* " in *" $family "*) ;; *) continue ;; esac
    fi
    grep -q "<!-- results:$family -->" README.md || { echo "update_results: README has no markers for $family"; continue; }
    table=$(mktemp)
    "$BUILD/ember" "$script" > "$table" || { echo "update_results: $script failed"; rm -f "$table"; exit 1; }
    awk -v family="$family" -v table="$table" '
        $0 == "<!-- results:" family " -->" { print; while ((getline line < table) > 0) print line; skip = 1; next }
        $0 == "<!-- /results:" family " -->" { skip = 0 }
        !skip { print }
    ' README.md > README.md.tmp && mv README.md.tmp README.md
    rm -f "$table"
    echo "update_results: $family table updated"
done
