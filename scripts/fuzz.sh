#!/bin/sh
# fuzz.sh — fuzzes the checkpoint (safetensors) loader.
#
# Builds tests/fuzz/fuzz_safetensors.c with the core under clang's libFuzzer,
# AddressSanitizer and UndefinedBehaviorSanitizer (into build-fuzz/), writes a
# seed corpus of valid and hostile files, and runs the fuzzer for a bounded
# time. Exit status 0 when nothing crashed, leaked or tripped a sanitizer; a
# failing input is kept as build-fuzz/crash-* (rerun it: build-fuzz/fuzz_safetensors FILE).
#
#   sh scripts/fuzz.sh                 60 seconds
#   FUZZ_SECONDS=600 sh scripts/fuzz.sh
#
# Needs clang and libclang-rt-14-dev (libFuzzer), lua5.4 (for the seeds),
# libjansson-dev and the core's other libraries.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${FUZZ_BUILD:-build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CC=${FUZZ_CC:-clang}

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "fuzz.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2
    exit 2
fi

mkdir -p "$OUT/obj" "$OUT/corpus" "$OUT/seeds"

# ---- build (each object only when its source or a header is newer) ----------
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fopenmp \
  -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
  -Icore -I/usr/include/x86_64-linux-gnu/openblas-openmp -I/usr/include/stb -w"
# shellcheck disable=SC2012
newest_header=$(ls -t core/*.h core/*.def | head -n 1)
objs=""
for src in core/*.c tests/fuzz/fuzz_safetensors.c; do
    obj="$OUT/obj/$(basename "$src" .c).o"
    if [ ! -f "$obj" ] || [ -n "$(find "$src" "$newest_header" -newer "$obj")" ]; then
        echo "fuzz.sh: cc $src"
        # shellcheck disable=SC2086
        "$CC" $CFLAGS -c "$src" -o "$obj"
    fi
    objs="$objs $obj"
done
# shellcheck disable=SC2086
"$CC" -fsanitize=fuzzer,address,undefined -fopenmp -o "$OUT/fuzz_safetensors" $objs \
    -lopenblas -ljansson -lz -lstb -lm

# ---- seeds: valid files (ember's layout and other tools'), and hostile ones ----
lua5.4 - "$OUT/seeds" <<'LUA'
local dir = arg[1]
local function st(header, data)
  header = header .. string.rep(" ", (8 - #header % 8) % 8)
  return string.pack("<I8", #header) .. header .. (data or "")
end
local function esc(s) return (s:gsub('[\\"]', '\\%0')) end
local seeds = {}
local tree = '{"version":1,"leaves":[' ..
  '{"path":["model","enc.0.weight"],"tensor":"model.enc.0.weight"},' ..
  '{"path":["optim","state",1,"m"],"tensor":"optim.state.1.m"},' ..
  '{"path":["step"],"integer":9007199254740992},{"path":["lr"],"float":"0.001"},' ..
  '{"path":["nan"],"float":"nan"},{"path":["name"],"string":"vae"},' ..
  '{"path":["blob"],"bytes":"00ff"},{"path":["on"],"boolean":true},' ..
  '{"path":["empty"],"table":{}}]}'
seeds.ember = st('{"__metadata__":{"ember.tree":"' .. esc(tree) .. '"},' ..
  '"model.enc.0.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},' ..
  '"optim.state.1.m":{"dtype":"F32","shape":[],"data_offsets":[24,28]}}',
  string.pack("<fffffff", 1, 2, 3, 4, 5, 6, 7))
seeds.foreign = st('{"__metadata__":{"format":"pt"},' ..
  '"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},' ..
  '"b":{"dtype":"F16","shape":[2,1],"data_offsets":[16,20]},' ..
  '"c":{"dtype":"BF16","shape":[1],"data_offsets":[20,22]},' ..
  '"d":{"dtype":"I32","shape":[1],"data_offsets":[22,26]},' ..
  '"e":{"dtype":"I64","shape":[1],"data_offsets":[26,34]},' ..
  '"z":{"dtype":"F32","shape":[0,5],"data_offsets":[34,34]}}',
  string.pack("<ddI2I2I2i4i8", 1.5, -2, 0x3c00, 0x7c00, 0x4040, 7, -9))
seeds.empty_header = st('{}')
seeds.truncated = seeds.ember:sub(1, #seeds.ember - 5)
seeds.bad_json = st('{"a":{"dtype":"F32",')
seeds.overlap = st('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' ..
  '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', string.rep("\0", 12))
seeds.gap = st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' ..
  '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', string.rep("\0", 12))
seeds.huge_shape = st('{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}', "\0\0\0\0")
seeds.huge_len = string.pack("<I8", 0x7fffffffffffffff) .. "{}"
seeds.unknown_dtype = st('{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}', string.rep("\0", 8))
seeds.bad_tree = st('{"__metadata__":{"ember.tree":"{\\"version\\":1,\\"leaves\\":[{\\"path\\":[\\"x\\"],' ..
  '\\"integer\\":1},{\\"path\\":[\\"x\\",1],\\"tensor\\":\\"y\\"}]}"}}')
for name, bytes in pairs(seeds) do
  local f = assert(io.open(dir .. "/" .. name .. ".safetensors", "wb"))
  f:write(bytes)
  f:close()
end
LUA
if [ -x build/ember ]; then # a rich checkpoint written by ember itself, when it is built
    build/ember -e "ember.save('$OUT/seeds/ember_written.safetensors', {model = {['enc.0.weight'] =
      ember.randn(3, 4), bias = ember.zeros(3):view(3, 1):t()}, optim = {state = {[1] = {m =
      ember.ones(2)}}, step = 10}, step = 2^53 | 0, lr = 0.1, tag = 'x\\0y', flags = {true, false},
      none = {}, rng = ember.get_rng_state()})" 2>/dev/null || true
fi

cat > "$OUT/safetensors.dict" <<'DICT'
"__metadata__"
"ember.tree"
"dtype"
"shape"
"data_offsets"
"F32"
"F64"
"F16"
"BF16"
"I64"
"I32"
"version"
"leaves"
"path"
"tensor"
"integer"
"float"
"string"
"bytes"
"boolean"
"table"
"\\\""
"[0,"
"]}"
DICT

# ---- run -------------------------------------------------------------------------
echo "fuzz.sh: fuzzing the safetensors loader for $FUZZ_SECONDS s"
status=0
"$OUT/fuzz_safetensors" -max_total_time="$FUZZ_SECONDS" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -dict="$OUT/safetensors.dict" -artifact_prefix="$OUT/" \
    -print_final_stats=1 "$OUT/corpus" "$OUT/seeds" 2> "$OUT/fuzz.log" || status=$?
tail -n 25 "$OUT/fuzz.log"
if [ "$status" -ne 0 ]; then
    # shellcheck disable=SC2012
    echo "fuzz.sh: FAILED (exit $status); inputs that fail: $(ls "$OUT"/crash-* "$OUT"/leak-* "$OUT"/timeout-* "$OUT"/oom-* 2>/dev/null | tr '\n' ' ')"
    exit 1
fi
echo "fuzz.sh: no crash, leak or sanitizer report in $FUZZ_SECONDS s"
