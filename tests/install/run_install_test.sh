#!/bin/sh
# run_install_test.sh [EMBER] — `make install` into a scratch PREFIX, then the installed
# ember, started from another working directory (/tmp), finds the prepared MNIST digits
# (PREFIX/share/ember/data) and its Lua modules, and `make uninstall` removes it all.
# EMBER (the build's program) only names the build directory. Ends with "N passed, M failed".
EMBER=${1:-build/ember}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(dirname "$EMBER")
case "$BUILD" in "$ROOT"/*) BUILD=${BUILD#"$ROOT"/} ;; esac
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok - $1"; }
not_ok() { fail=$((fail + 1)); echo "not ok - $1"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name"; fi; }
T=$(mktemp -d /tmp/ember-install.XXXXXX)
trap 'rm -rf "$T"' EXIT

make -C "$ROOT" --no-print-directory -s install BUILD="$BUILD" PREFIX="$T/prefix" > "$T/install.out" 2>&1
check "make install PREFIX=... succeeds" test $? -eq 0
check "the program, the Lua module and the digits are installed" \
    test -x "$T/prefix/bin/ember" -a -f "$T/prefix/lib/lua/5.4/ember.so" \
         -a -f "$T/prefix/share/ember/data/mnist/t10k-images-idx3-ubyte.gz"
out=$(cd /tmp && env -u EMBER_DATA "$T/prefix/bin/ember" -e "print(ember.data.mnist{split='test'}.x:size(1))" 2>&1)
check "from /tmp the installed ember loads the test digits ($out)" test "$out" = "1996"
out=$(cd /tmp && env -u EMBER_DATA LUA_CPATH="$T/prefix/lib/lua/5.4/?.so;;" lua5.4 -e \
    "local e = require 'ember' print(e.data.mnist{split='train'}.x:size(1))" 2>&1)
check "so does stock lua5.4 with the installed ember.so ($out)" test "$out" = "8004"
make -C "$ROOT" --no-print-directory -s uninstall PREFIX="$T/prefix" > "$T/uninstall.out" 2>&1
check "make uninstall removes the program, the module and the data" \
    test ! -e "$T/prefix/bin/ember" -a ! -e "$T/prefix/lib/lua/5.4/ember.so" -a ! -e "$T/prefix/share/ember"
[ "$fail" -eq 0 ] || cat "$T/install.out"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
