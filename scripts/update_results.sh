#!/bin/sh
# update_results.sh — regenerates README.md's results tables from the run folders
# under runs/ (and sweeps/): each scripts/results_<family>.lua prints a Markdown table
# from the figures the runs themselves wrote (result.lua, metrics.csv, summary.md), and
# this script puts it between the README's marker lines
#   <!-- results:<family> --> ... <!-- /results:<family> -->
# Usage: sh scripts/update_results.sh [--drop-missing] [BUILD [FAMILY ...]]
# With families named (autoencoders, gans, autoregressive), only their tables are
# rewritten. runs/ is not in git, so a fresh checkout holds only the runs made there: a
# row the script prints as not run yet ("not run yet", "(no run yet)", "(no sweep yet)")
# is replaced by the README's row(s) for the same run folder (the --out DIR of their
# command), the figures of the run that made them, unless --drop-missing. Tables without
# a command per row (the GAN quality table) need their runs present.
KEEP=1
if [ "$1" = "--drop-missing" ]; then KEEP=0; shift; fi
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
    # first pass (README.md as FNR == NR): the family's current rows by the run folder
    # they name (--out DIR in the command); second pass: README.md again, the new table
    # spliced in, a missing run's row(s) replaced by the kept ones
    awk -v family="$family" -v table="$table" -v keep="$KEEP" '
        function run_dir(s) {
            if (match(s, /--out [^ `]+/)) return substr(s, RSTART + 6, RLENGTH - 6)
            if (match(s, /not run yet \([^)]+\)/)) return substr(s, RSTART + 13, RLENGTH - 14)
            return ""
        }
        FNR == NR {
            if ($0 == "<!-- results:" family " -->") inside = 1
            else if ($0 == "<!-- /results:" family " -->") inside = 0
            else if (inside && $0 ~ /^\|/ && $0 !~ /not run yet|\(no run yet\)|\(no sweep yet\)/ && run_dir($0) != "") {
                d = run_dir($0)
                if (d in old) old[d] = old[d] "\n" $0   # (not a ?: : mawk creates old[d] first)
                else old[d] = $0
            }
            next
        }
        $0 == "<!-- results:" family " -->" {
            print
            while ((getline line < table) > 0) {
                missing = line ~ /^\|/ && line ~ /not run yet|\(no run yet\)|\(no sweep yet\)/
                if (keep && missing && (run_dir(line) in old)) line = old[run_dir(line)]
                print line
            }
            skip = 1; next
        }
        $0 == "<!-- /results:" family " -->" { skip = 0 }
        !skip { print }
    ' README.md README.md > README.md.tmp && mv README.md.tmp README.md
    rm -f "$table"
    echo "update_results: $family table updated"
done
