#!/bin/sh
# repl_test.sh — tests for the `ember` host program: command line, scripts, and the
# interactive REPL driven in a real pseudo-terminal (tmux on a private socket).
#
# usage: sh tests/repl/repl_test.sh [path/to/ember]     (default build/ember)
# Prints "ok - name" / "not ok - name: detail" per case and ends with one line
# "N passed, M failed"; exits non-zero when M > 0.

EMBER=${1:-build/ember}
case $EMBER in
  /*) ;;
  *) EMBER=$(pwd)/$EMBER ;;
esac

PASSED=0
FAILED=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/embertest.XXXXXX") || exit 1
SOCKET=embertest$$
HOME_DIR=$TMP/home
HIST=$TMP/history
mkdir -p "$HOME_DIR"

# tmux on a private socket with no user configuration.
tm() { tmux -L "$SOCKET" -f /dev/null "$@"; }

cleanup() {
  tm kill-server >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ok() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $1: $2"; }

# check NAME CONDITION-STATUS DETAIL: counts one case.
check() {
  if [ "$2" -eq 0 ]; then ok "$1"; else not_ok "$1" "$3"; fi
}

# run ARGS...: runs ember (stdin from /dev/null); sets RC, output in $TMP/out, $TMP/err.
run() {
  "$EMBER" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
  RC=$?
}

# first_line FILE: the first line of FILE, for failure details.
first_line() { head -n 1 "$1" | cut -c 1-120; }

if [ ! -x "$EMBER" ]; then
  not_ok "ember binary" "$EMBER is not an executable"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi

# --------------------------------------------------------------------------------
# a) non-interactive
# --------------------------------------------------------------------------------

run --version
[ $RC -eq 0 ] && grep -Eq '^ember [0-9]+\.[0-9]+' "$TMP/out"
check "--version" $? "rc=$RC out='$(first_line "$TMP/out")'"

run --help
[ $RC -eq 0 ] && grep -q 'usage' "$TMP/out" && grep -q -- '-e' "$TMP/out" &&
  grep -q -- '-i' "$TMP/out" && grep -q 'run' "$TMP/out" && grep -q 'sweep' "$TMP/out"
check "--help" $? "rc=$RC out='$(first_line "$TMP/out")'"

run -e 'print(1+1)'
[ $RC -eq 0 ] && [ "$(cat "$TMP/out")" = "2" ]
check "-e prints 2" $? "rc=$RC out='$(first_line "$TMP/out")' err='$(first_line "$TMP/err")'"

run -e 'x = 20' -e 'x = x + 1' -e 'print(x * 2)'
[ $RC -eq 0 ] && [ "$(cat "$TMP/out")" = "42" ]
check "repeated -e" $? "rc=$RC out='$(first_line "$TMP/out")'"

cat >"$TMP/args.lua" <<'EOF'
local a, b = ...
print(arg[0]:match("[^/]*$"), arg[1], arg[2], a, b, select("#", ...), type(ember))
EOF
run -e 'pre = 1' "$TMP/args.lua" one two
[ $RC -eq 0 ] && [ "$(cat "$TMP/out")" = "$(printf 'args.lua\tone\ttwo\tone\ttwo\t2\ttable')" ]
check "script sees arg and ..." $? "rc=$RC out='$(first_line "$TMP/out")' err='$(first_line "$TMP/err")'"

OUT=$(echo 'print("from " .. "stdin")' | "$EMBER" 2>&1)
RC=$?
[ $RC -eq 0 ] && [ "$OUT" = "from stdin" ]
check "piped stdin runs as a script" $? "rc=$RC out='$OUT'"

OUT=$(echo 'print("dash", arg[0], ...)' | "$EMBER" - x 2>&1)
RC=$?
[ $RC -eq 0 ] && [ "$OUT" = "$(printf 'dash\t-\tx')" ]
check "'-' runs stdin with args" $? "rc=$RC out='$OUT'"

printf 'local x = 1\nerror("bad thing")\n' >"$TMP/bad.lua"
run "$TMP/bad.lua"
[ $RC -eq 1 ] && grep -q 'ember:' "$TMP/err" && grep -q 'bad.lua:2' "$TMP/err" &&
  grep -q 'bad thing' "$TMP/err" && grep -q 'traceback' "$TMP/err"
check "script error exits 1 with file name" $? "rc=$RC err='$(first_line "$TMP/err")'"

printf 'x = = 1\n' >"$TMP/syntax.lua"
run "$TMP/syntax.lua"
[ $RC -eq 1 ] && grep -q 'ember:.*syntax.lua:1' "$TMP/err"
check "script syntax error exits 1" $? "rc=$RC err='$(first_line "$TMP/err")'"

(cd "$TMP" && "$EMBER" nosuch.lua >"$TMP/out" 2>"$TMP/err" </dev/null)
RC=$?
[ $RC -eq 1 ] && grep -q 'ember: cannot open nosuch.lua' "$TMP/err"
check "missing script file" $? "rc=$RC err='$(first_line "$TMP/err")'"

run --no-such-option
[ $RC -eq 1 ] && grep -q 'usage' "$TMP/err" && [ ! -s "$TMP/out" ]
check "unknown option exits 1" $? "rc=$RC err='$(first_line "$TMP/err")'"

run -e 'error("boom")'
[ $RC -eq 1 ] && grep -q 'boom' "$TMP/err"
check "-e error exits 1" $? "rc=$RC err='$(first_line "$TMP/err")'"

OUT=$(echo 'print(x * 2)' | "$EMBER" -i -e 'x = 21' 2>&1)
RC=$?
[ $RC -eq 0 ] && echo "$OUT" | grep -q '42'
check "-i then REPL on piped stdin" $? "rc=$RC out='$(echo "$OUT" | tail -n 1)'"

if "$EMBER" -e 'require "ember.cli"' >/dev/null 2>&1; then
  run sample --no-such-option
  ! grep -q 'not available' "$TMP/err"
  check "subcommand reaches ember.cli" $? "rc=$RC err='$(first_line "$TMP/err")'"
else
  run sample foo
  [ $RC -eq 1 ] && grep -q "ember: the 'sample' command is not available" "$TMP/err"
  check "subcommand without ember.cli" $? "rc=$RC err='$(first_line "$TMP/err")'"
fi

# --------------------------------------------------------------------------------
# b) interactive, in a pseudo-terminal
# --------------------------------------------------------------------------------

if ! command -v tmux >/dev/null 2>&1; then
  not_ok "interactive REPL" "tmux is not installed"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi

# screen TARGET: the pane's text (scroll-back included) up to its last non-blank line.
screen() {
  tm capture-pane -p -J -S - -t "$1" 2>/dev/null |
    awk '{ line[NR] = $0 } NF { last = NR } END { for (i = 1; i <= last; i++) print line[i] }'
}

# since TARGET: the pane's lines after line $MARK (the output of the last step).
since() { screen "$1" | tail -n "+$((MARK + 1))"; }

# poll SECONDS COMMAND...: re-runs COMMAND every 0.1 s until it succeeds or time is up.
poll() {
  limit=$(($1 * 10))
  shift
  i=0
  while [ $i -lt $limit ]; do
    "$@" && return 0
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# start_pane NAME COMMAND...: runs COMMAND in a new detached session; its exit status
# goes to $TMP/NAME.rc (tmux's own #{pane_dead_status} is sometimes lost). The wrapper
# shell catches SIGINT with a no-op trap, so that Ctrl-C reaches only the command.
start_pane() {
  name=$1
  shift
  rm -f "$TMP/$name.rc"
  tm set-option -g remain-on-exit on \; \
    new-session -d -s "$name" -x 120 -y 50 \
    env HOME="$HOME_DIR" EMBER_HISTORY="$HIST" TERM=screen RC_FILE="$TMP/$name.rc" \
    sh -c 'trap : INT; "$@"; echo $? >"$RC_FILE"' sh "$@" 2>"$TMP/tmux_err"
}
# pane_exited NAME: the command in pane NAME has exited; pane_status NAME: its status.
pane_exited() { [ -s "$TMP/$1.rc" ]; }
pane_status() { cat "$TMP/$1.rc" 2>/dev/null; }

at_prompt() { screen "$1" | tail -n 1 | grep -qx '> *'; }        # an empty "> " prompt
has_line() { since "$1" | grep -qxE -- "$2"; }                   # a whole output line
has_text() { since "$1" | grep -qE -- "$2"; }                    # a regex in the output

# step TEXT: waits for an empty prompt, remembers where the output starts, types TEXT.
step() {
  poll 10 at_prompt repl || true
  MARK=$(screen repl | wc -l)
  tm send-keys -t repl -l -- "$1"
  tm send-keys -t repl Enter
}

if ! start_pane repl "$EMBER"; then
  not_ok "interactive REPL" "tmux could not start: $(first_line "$TMP/tmux_err")"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
MARK=0

poll 10 has_text repl 'ember .*Ctrl-D'
check "REPL banner" $? "screen: $(screen repl | head -n 3 | tr '\n' '|')"

step 'for i = 1, 3 do'
poll 10 has_text repl '^>> ' || true
tm send-keys -t repl -l -- 'print(i * 10)'
tm send-keys -t repl Enter
tm send-keys -t repl -l -- 'end'
tm send-keys -t repl Enter
poll 10 has_line repl '30' && has_line repl '10' && has_line repl '20' && has_text repl '^>> '
check "multi-line for loop with >> prompt" $? "screen: $(since repl | tr '\n' '|')"

step '1+2'
poll 10 has_line repl '3'
check "expression prints its value" $? "screen: $(since repl | tr '\n' '|')"

step 'return 1, "two", nil'
poll 10 has_line repl '1 +two +nil' # tmux shows tabs as spaces
check "several values print tab-separated" $? "screen: $(since repl | tr '\n' '|')"

if [ "$("$EMBER" -e 'print(type(ember.tensor))' 2>/dev/null)" = "function" ]; then
  step 'ember.tensor{{1,2},{3,4}}'
  # since() starts below the input line: the digits must come from the printed tensor
  tensor_shown() {
    since repl | tr '\n' ' ' |
      grep -qE '1(\.0*)?[^0-9]+2(\.0*)?[^0-9]+3(\.0*)?[^0-9]+4'
  }
  poll 10 tensor_shown
  check "expression prints a tensor" $? "screen: $(since repl | tr '\n' '|')"
else
  echo "SKIP - expression prints a tensor: ember.tensor is not a function yet"
fi

step 'nosuch.x'
poll 10 has_text repl 'attempt to index|nosuch'
R1=$?
step 'print("after")'
poll 10 has_line repl 'after'
R2=$?
[ $R1 -eq 0 ] && [ $R2 -eq 0 ]
check "runtime error, then the REPL goes on" $? "error=$R1 after=$R2 screen: $(since repl | tr '\n' '|')"

step 'x = = 1'
poll 10 has_text repl 'unexpected symbol|expected'
R1=$?
step 'print("after syntax")'
poll 10 has_line repl 'after syntax'
R2=$?
[ $R1 -eq 0 ] && [ $R2 -eq 0 ]
check "syntax error, then the REPL goes on" $? "screen: $(since repl | tr '\n' '|')"

step '   '
step 'print("blank ok")'
poll 10 has_line repl 'blank ok' && ! since repl | grep -q 'stdin:'
check "a blank line does nothing" $? "screen: $(since repl | tr '\n' '|')"

step 'print("looping") while true do end'
poll 10 has_line repl 'looping'
tm send-keys -t repl C-c
poll 10 has_text repl 'interrupted'
R1=$?
step 'print("alive")'
poll 10 has_line repl 'alive'
R2=$?
[ $R1 -eq 0 ] && [ $R2 -eq 0 ]
check "Ctrl-C stops a running loop" $? "interrupted=$R1 alive=$R2 screen: $(since repl | tr '\n' '|')"

poll 10 at_prompt repl
MARK=$(screen repl | wc -l)
tm send-keys -t repl -l -- 'half typed'
tm send-keys -t repl C-c
step 'print("still here")'
poll 10 has_line repl 'still here'
check "Ctrl-C at the prompt abandons the line" $? "screen: $(since repl | tr '\n' '|')"

step 'zzprobe = {alpha = 7}'
poll 10 at_prompt repl
MARK=$(screen repl | wc -l)
tm send-keys -t repl -l -- 'print(zzpr'
tm send-keys -t repl Tab
sleep 0.2
tm send-keys -t repl -l -- '.al'
tm send-keys -t repl Tab
sleep 0.2
tm send-keys -t repl -l -- ')'
tm send-keys -t repl Enter
poll 10 has_line repl '7'
check "tab completion of globals and fields" $? "screen: $(since repl | tr '\n' '|')"

# listed: something (the listing, or libedit's question) appeared below the input line.
listed() { [ "$(since repl | wc -l)" -gt 1 ]; }
# list_completions TEXT: types TEXT, presses Tab twice (answering 'y' when libedit asks
# whether to show them all) and leaves the listing on screen; Ctrl-C then drops the line.
list_completions() {
  poll 10 at_prompt repl || true
  MARK=$(screen repl | wc -l)
  tm send-keys -t repl -l -- "$1"
  tm send-keys -t repl Tab
  sleep 0.2
  tm send-keys -t repl Tab
  poll 10 listed || true
  if since repl | grep -q 'possibilities? (y or n)'; then
    tm send-keys -t repl y
    sleep 0.5
  fi
}
drop_line() { tm send-keys -t repl C-c; poll 10 at_prompt repl || true; }

step 'print(package.loaded["ember.nn"] == nil and rawget(ember, "nn") == nil)'
poll 10 has_line repl 'true'
R1=$?
list_completions 'ember.nn.'
poll 10 has_text repl 'ember\.nn\.Linear' && has_text repl 'ember\.nn\.Conv2d' &&
  has_text repl 'ember\.nn\.Sequential' && has_text repl 'ember\.nn\.functional' &&
  ! has_text repl 'ember\.nn\._'
R2=$?
drop_line
[ $R1 -eq 0 ] && [ $R2 -eq 0 ]
check "Tab lists ember.nn's members before it is loaded" $? "not loaded=$R1 screen: $(since repl | tr '\n' '|')"

list_completions 'ember.nn.functional.'
poll 10 has_text repl 'ember\.nn\.functional\.relu( |$)' && has_text repl 'ember\.nn\.functional\.conv2d( |$)' &&
  has_text repl 'ember\.nn\.functional\.mse_loss( |$)'
check "Tab lists ember.nn.functional's members" $? "screen: $(since repl | tr '\n' '|')"
drop_line

list_completions 'ember.optim.'
poll 10 has_text repl 'ember\.optim\.Adam( |$)' && has_text repl 'ember\.optim\.SGD( |$)'
check "Tab lists ember.optim's members before it is loaded" $? "screen: $(since repl | tr '\n' '|')"
drop_line

list_completions 'ember.'
poll 10 has_text repl 'ember\.zeros' && has_text repl 'ember\.tensor' && has_text repl 'ember\.nn( |$)' &&
  ! has_text repl 'ember\._'
check "ember. + Tab lists no private (_) names" $? "screen: $(since repl | tr '\n' '|')"
drop_line

list_completions 'ember._'
poll 10 has_text repl 'ember\._clock' && has_text repl 'ember\._debug_break_backward'
check "ember._ + Tab lists the private names" $? "screen: $(since repl | tr '\n' '|')"
drop_line

step 'ember.randn(100):stats()'
poll 10 has_text repl 'min = -?[0-9]' && has_text repl 'max = -?[0-9]' && has_text repl 'mean = -?[0-9]' &&
  has_text repl 'std = [0-9]' && has_text repl 'nan = 0' && has_text repl 'numel = 100' &&
  ! has_text repl 'table: 0x'
check "a returned table prints its fields (t:stats())" $? "screen: $(since repl | tr '\n' '|')"

step 'ember.zeros(2, 3):matmul(ember.zeros(4, 5))'
poll 10 has_text repl "in function 'ember\.matmul'" && has_text repl 'inner sizes 3 and 4 differ' &&
  ! has_text repl 'ember\.mm'
check "a traceback names matmul, not an alias" $? "screen: $(since repl | tr '\n' '|')"

poll 10 at_prompt repl
tm send-keys -t repl C-d
poll 10 pane_exited repl && [ "$(pane_status repl)" = "0" ]
check "Ctrl-D exits with status 0" $? \
  "status='$(pane_status repl)' screen: $(screen repl | tail -n 3 | tr '\n' '|')"

grep -qF 'print("after")' "$HIST" 2>/dev/null && grep -qF 'for i = 1, 3 do' "$HIST" &&
  ! grep -q 'half typed' "$HIST"
check "history file holds entered lines" $? "history: $(head -n 3 "$HIST" 2>/dev/null | tr '\n' '|')"

# A script interrupted by Ctrl-C: pcall catches "interrupted"; uncaught it exits 130.
cat >"$TMP/loop.lua" <<'EOF'
print("ready")
local ok, err = pcall(function() while true do end end)
print("caught " .. tostring(err))
while true do end
EOF
MARK=0
if start_pane script "$EMBER" "$TMP/loop.lua"; then
  poll 10 has_line script 'ready'
  tm send-keys -t script C-c
  poll 10 has_text script 'caught interrupted'
  R1=$?
  tm send-keys -t script C-c
  poll 10 pane_exited script
  RC=$(pane_status script)
  [ $R1 -eq 0 ] && [ "$RC" = "130" ]
  check "Ctrl-C in a script: pcall catches it, uncaught exits 130" $? "caught=$R1 rc=$RC"
else
  not_ok "Ctrl-C in a script" "tmux could not start: $(first_line "$TMP/tmux_err")"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
