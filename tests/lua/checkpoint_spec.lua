-- checkpoint_spec.lua — ember.save / ember.load: exact round trips of nested
-- tables (tensors, integers, floats, strings, booleans), the plain safetensors
-- layout other readers see, files from other tools, every kind of truncated,
-- corrupt or hostile file (by its message), bad arguments, atomic saving
-- (a failed save keeps the old file; kill -9 during saves never breaks it).
local ember = require 'ember'

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local function path(name) return dir .. "/" .. name end

local function write(name, bytes)
  local f = assert(io.open(path(name), "wb"))
  f:write(bytes)
  f:close()
  return path(name)
end

local function read(p)
  local f = assert(io.open(p, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- A safetensors file: 8-byte little-endian header length, header, data.
local function st_bytes(header, data)
  return string.pack("<I8", #header) .. header .. (data or "")
end

local function flat(t, out)
  out = out or {}
  if type(t) ~= "table" then out[#out + 1] = t return out end
  for _, v in ipairs(t) do flat(v, out) end
  return out
end

-- Tensors equal in shape and every value, exactly.
local function same_tensor(a, b)
  local sa, sb = a:shape(), b:shape()
  if #sa ~= #sb then return false end
  for i = 1, #sa do if sa[i] ~= sb[i] then return false end end
  local fa, fb = flat(a:totable()), flat(b:totable())
  if #fa ~= #fb then return false end
  for i = 1, #fa do if fa[i] ~= fb[i] then return false end end
  return true
end

-- Runs ember.load on the file and returns the error message (fails if it loads).
local function load_error(p)
  local ok, err = pcall(ember.load, p)
  assert.is_false(ok, "expected " .. p .. " to fail to load")
  return tostring(err)
end

local function child_command(script, args)
  local bin = os.getenv("EMBER_BIN")
  local runner = (bin and bin ~= "") and ("'" .. bin .. "'") or "lua5.4"
  return runner .. " '" .. script .. "' " .. args
end

local function temp_files()
  local p = io.popen("ls -a '" .. dir .. "'")
  local n = 0
  for name in p:lines() do if name:find(".tmp-", 1, true) then n = n + 1 end end
  p:close()
  return n
end

teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

describe("ember.save / ember.load", function()
  it("round-trips a training checkpoint exactly", function()
    ember.manual_seed(7)
    local model = {["enc.0.weight"] = ember.randn(4, 3), ["enc.0.bias"] = ember.randn(4),
                   ["dec.weight"] = ember.randn(3, 4):t()} -- a non-contiguous view
    local optim = {step = 3, state = {[1] = {m = ember.randn(4, 3), v = ember.rand(4, 3)},
                                      [2] = {m = ember.randn(4)}},
                   hyper = {lr = 1e-3, betas = {0.5, 0.999}}}
    local ckpt = {model = model, optim = optim, rng = ember.get_rng_state(), step = 200,
                  big = 2^53 | 0, maxint = math.maxinteger, minint = math.mininteger,
                  params = {lr = 1e-3, name = "vae", tenth = 0.1, third = 1 / 3, two = 2.0,
                            negzero = -0.0, inf = math.huge, ninf = -math.huge, nan = 0 / 0},
                  flags = {on = true, off = false}, empty = {}, blob = "\0\255\1binary",
                  text = "héllo", scalar = ember.tensor(2.5), none = ember.zeros(0, 5),
                  [1] = "one", ["1"] = "string one"}
    local p = path("full.safetensors")
    ember.save(p, ckpt)
    local r = ember.load(p)
    for k, t in pairs(model) do assert.is_true(same_tensor(r.model[k], t), k) end
    assert.is_true(r.model["dec.weight"]:is_contiguous())
    assert.is_true(same_tensor(r.optim.state[1].m, optim.state[1].m))
    assert.is_true(same_tensor(r.optim.state[1].v, optim.state[1].v))
    assert.is_true(same_tensor(r.optim.state[2].m, optim.state[2].m))
    assert.are.equal(3, r.optim.step)
    assert.are.equal(0.5, r.optim.hyper.betas[1])
    assert.are.equal(0.999, r.optim.hyper.betas[2])
    assert.are.equal(ckpt.rng, r.rng)
    assert.are.equal(200, r.step)
    assert.are.equal("integer", math.type(r.step))
    assert.are.equal(9007199254740992, r.big)
    assert.are.equal("integer", math.type(r.big))
    assert.are.equal(math.maxinteger, r.maxint)
    assert.are.equal(math.mininteger, r.minint)
    for _, k in ipairs{"lr", "tenth", "third", "two", "inf", "ninf"} do
      assert.are.equal(ckpt.params[k], r.params[k], k)
      assert.are.equal("float", math.type(r.params[k]), k)
    end
    assert.are.equal(-math.huge, 1 / r.params.negzero)
    assert.is_true(r.params.nan ~= r.params.nan)
    assert.are.equal("vae", r.params.name)
    assert.is_true(r.flags.on)
    assert.is_false(r.flags.off)
    assert.are.same({}, r.empty)
    assert.are.equal(ckpt.blob, r.blob)
    assert.are.equal("héllo", r.text)
    assert.is_true(same_tensor(r.scalar, ckpt.scalar))
    assert.are.same({0, 5}, r.none:shape())
    assert.are.equal("one", r[1])
    assert.are.equal("string one", r["1"])
    assert.is_nil(r.model.enc) -- "enc.0.weight" stays one key
  end)

  it("writes plain safetensors that another reader can parse", function()
    local w = ember.tensor{{1.5, -2}, {3.25, 0}}
    local p = path("plain.safetensors")
    ember.save(p, {net = {["fc.weight"] = w}, step = 1})
    local bytes = read(p)
    local n = string.unpack("<I8", bytes)
    assert.are.equal(0, n % 8)
    local header = bytes:sub(9, 8 + n)
    assert.truthy(header:find('"net.fc.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}',
                              1, true))
    assert.truthy(header:find('"__metadata__":{"ember.tree":"', 1, true))
    assert.are.equal(8 + n + 16, #bytes)
    assert.are.same({1.5, -2, 3.25, 0, 8 + n + 17}, {string.unpack("<ffff", bytes, 9 + n)})
    -- the same table saved twice gives the same bytes
    ember.save(path("plain2.safetensors"), {step = 1, net = {["fc.weight"] = w}})
    assert.are.equal(bytes, read(path("plain2.safetensors")))
  end)

  it("loads another tool's file as a flat table of tensors and metadata strings", function()
    local header = '{"__metadata__":{"format":"pt","note":"hi"},' ..
      '"layer.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' ..
      '"layer.bias":{"dtype":"F64","shape":[],"data_offsets":[8,16]},' ..
      '"half":{"dtype":"F16","shape":[1],"data_offsets":[16,18]},' ..
      '"bf":{"dtype":"BF16","shape":[1],"data_offsets":[18,20]},' ..
      '"count":{"dtype":"I64","shape":[1],"data_offsets":[20,28]},' ..
      '"small":{"dtype":"I32","shape":[1],"data_offsets":[28,32]}}'
    header = header .. string.rep(" ", (8 - #header % 8) % 8)
    local data = string.pack("<ffdI2I2i8i4", 0.25, -1, 7.5, 0x3c00, 0x4040, -9, 123)
    local r = ember.load(write("foreign.safetensors", st_bytes(header, data)))
    assert.are.same({0.25, -1}, r["layer.weight"]:totable())
    assert.are.equal(7.5, r["layer.bias"]:item())
    assert.are.same({1}, r.half:totable())
    assert.are.same({3}, r.bf:totable())
    assert.are.same({-9}, r.count:totable())
    assert.are.same({123}, r.small:totable())
    assert.are.equal("pt", r.format)
    assert.are.equal("hi", r.note)
  end)

  describe("refuses broken files with a message naming the file and the problem", function()
    local ent = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    local cases = {
      {"empty", "", "the file is empty"},
      {"short", "abc", "the file is 3 bytes, too short for the 8-byte header length"},
      {"header_too_long", string.pack("<I8", 1000) .. "{}", "header length 1000 is larger than the file (10 bytes)"},
      {"header_huge", string.pack("<I8", 0x7fffffffffffffff) .. "{}", "header length 9223372036854775807 is larger than the file"},
      {"header_zero", string.pack("<I8", 0), "header length is 0"},
      {"not_json", st_bytes("{not json}"), "the header is not valid JSON"},
      {"truncated_json", st_bytes('{"a":{"dtype":'), "the header is not valid JSON"},
      {"not_object", st_bytes('[1,2,3] '), "the header is an array, expected a JSON object"},
      {"entry_not_object", st_bytes('{"w":5}'), 'tensor "w": the entry is an integer, expected an object'},
      {"no_dtype", st_bytes('{"w":{"shape":[2],"data_offsets":[0,8]}}', ("\0"):rep(8)), 'tensor "w": missing "dtype"'},
      {"dtype_number", st_bytes('{"w":{"dtype":3,"shape":[2],"data_offsets":[0,8]}}', ("\0"):rep(8)), '"dtype" is an integer, expected a string'},
      {"unknown_dtype", st_bytes('{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}', ("\0"):rep(8)), 'dtype "C64" is not supported'},
      {"no_shape", st_bytes('{"w":{"dtype":"F32","data_offsets":[0,8]}}', ("\0"):rep(8)), 'missing "shape"'},
      {"shape_string", st_bytes('{"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', ("\0"):rep(8)), '"shape" is a string, expected an array'},
      {"negative_shape", st_bytes('{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', ("\0"):rep(8)), "shape[1] is -2, expected a size >= 0"},
      {"fractional_shape", st_bytes('{"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}', ("\0"):rep(8)), "shape[1] is a non-integer number"},
      {"overflowing_shape", st_bytes('{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}', ("\0"):rep(8)), "has too many elements"},
      {"wrapping_shape", st_bytes('{"w":{"dtype":"F32","shape":[4294967296,1073741824],"data_offsets":[0,0]}}'), "has too many elements"},
      {"size_mismatch", st_bytes('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', ("\0"):rep(8)), "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8"},
      {"no_offsets", st_bytes('{"w":{"dtype":"F32","shape":[2]}}', ("\0"):rep(8)), 'missing "data_offsets"'},
      {"offsets_three", st_bytes('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}', ("\0"):rep(8)), '"data_offsets" must be an array [begin, end]'},
      {"offsets_negative", st_bytes('{"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}', ("\0"):rep(8)), "data_offsets[1] must be an integer >= 0"},
      {"offsets_reversed", st_bytes('{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', ("\0"):rep(8)), "the end comes before the begin"},
      {"offsets_outside", st_bytes('{"w":' .. ent .. '}', ("\0"):rep(4)), "data_offsets [0, 8] lie outside the data region (4 bytes)"},
      {"truncated_data", st_bytes('{"a":' .. ent .. ',"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', ("\0"):rep(12)), "lie outside the data region (12 bytes)"},
      {"overlap", st_bytes('{"a":' .. ent .. ',"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', ("\0"):rep(12)), 'tensors "a" [0, 8] and "b" [4, 12] overlap'},
      {"gap", st_bytes('{"a":' .. ent .. ',"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}', ("\0"):rep(16)), 'a gap of 4 bytes between tensor "a" (ends at 8) and tensor "b" (starts at 12)'},
      {"leading_gap", st_bytes('{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', ("\0"):rep(8)), "a gap of 4 bytes at the start of the data region"},
      {"trailing_bytes", st_bytes('{"a":' .. ent .. '}', ("\0"):rep(12)), "the last 4 bytes of the data region belong to no tensor"},
      {"duplicate_names", st_bytes('{"a":' .. ent .. ',"a":' .. ent .. '}', ("\0"):rep(8)), "the header is not valid JSON: duplicate object key"},
      {"metadata_not_strings", st_bytes('{"__metadata__":{"step":5}}'), '"__metadata__" value of "step" is an integer, expected a string'},
      {"bad_tree", st_bytes('{"__metadata__":{"ember.tree":"[1"}}'), 'metadata "ember.tree" is not valid JSON'},
      {"tree_missing_tensor", st_bytes('{"__metadata__":{"ember.tree":"{\\"version\\":1,\\"leaves\\":[{\\"path\\":[\\"w\\"],\\"tensor\\":\\"w\\"}]}"}}'), 'names the tensor "w", which the file does not have'},
    }
    for _, case in ipairs(cases) do
      it(case[1], function()
        local p = write(case[1] .. ".safetensors", case[2])
        local err = load_error(p)
        assert.truthy(err:find("load: " .. p .. ": ", 1, true), err)
        assert.truthy(err:find(case[3], 1, true), "got: " .. err)
      end)
    end

    it("a missing file, a directory", function()
      local err = load_error(path("missing.safetensors"))
      assert.truthy(err:find("missing.safetensors: cannot open: No such file or directory", 1, true), err)
      err = load_error(dir)
      assert.truthy(err:find("is a directory, not a checkpoint file", 1, true), err)
    end)

    it("every prefix of a valid file", function()
      local p = path("valid.safetensors")
      ember.save(p, {w = ember.ones(3, 2), step = 5, name = "x"})
      local bytes = read(p)
      for len = 0, #bytes - 1 do
        local err = load_error(write("prefix.safetensors", bytes:sub(1, len)))
        assert.truthy(err:find("load: " .. path("prefix.safetensors") .. ": ", 1, true), err)
      end
      assert.are.equal(5, ember.load(write("prefix.safetensors", bytes)).step)
    end)
  end)

  describe("bad arguments", function()
    local function save_error(...)
      local ok, err = pcall(ember.save, ...)
      assert.is_false(ok)
      return tostring(err)
    end
    it("names the argument and what was expected", function()
      assert.truthy(save_error(nil, {}):find("save: bad argument #1 (expected a file path string, got nil)", 1, true))
      assert.truthy(save_error(path("x"), 5):find("save: bad argument #2 (expected a table, got number)", 1, true))
      assert.truthy(save_error(path("x"), ember.ones(2)):find("expected a table, got tensor", 1, true))
      local ok, err = pcall(ember.load, 42)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("load: bad argument #1 (expected a file path string, got number)", 1, true))
    end)
    it("names the key path of a value or key it cannot store", function()
      assert.truthy(save_error(path("x"), {a = {f = print}}):find(
        "save: the value at key path a.f is a function (expected a tensor, number, string, boolean or table)", 1, true))
      assert.truthy(save_error(path("x"), {a = {[1.5] = 1}}):find(
        "save: a key under a is the non-integer number 1.5 (keys must be strings or integers)", 1, true))
      assert.truthy(save_error(path("x"), {[true] = 1}):find("a key under the top-level table is a boolean", 1, true))
      local t = ember.ones(2)
      t:free()
      assert.truthy(save_error(path("x"), {model = {["enc.0.weight"] = t}}):find(
        'save: the tensor at key path model["enc.0.weight"] was freed', 1, true))
      local cyc = {}
      cyc.again = cyc
      assert.truthy(save_error(path("x"), {a = cyc}):find("the table contains itself (a cycle) at key path a.again", 1, true))
      assert.truthy(save_error(path("x"), {["a\0b"] = 1}):find("contains a NUL byte", 1, true))
      assert.truthy(save_error(path("x"), {["\255"] = 1}):find("a key is not UTF-8 text", 1, true))
      assert.is_nil(io.open(path("x"), "rb")) -- nothing was written
    end)
    it("refuses to save over a directory or into a missing one", function()
      assert.truthy(save_error(dir, {a = 1}):find("save: " .. dir .. ": is a directory", 1, true))
      assert.truthy(save_error(path("no/dir/x"), {a = 1}):find("cannot create the temporary file", 1, true))
    end)
  end)

  describe("atomic saving", function()
    it("a save that fails mid-write keeps the old file and removes its temp file", function()
      local p = path("keep.safetensors")
      ember.save(p, {version = 1, w = ember.ones(2)})
      local script = write("bigsave.lua", [[
        local ember = require 'ember'
        local ok, err = pcall(ember.save, arg[1], {version = 2, w = ember.ones(1000000)})
        print(ok, err)]])
      -- a 64 KB file-size limit, with SIGXFSZ ignored, makes the write fail with EFBIG
      local cmd = "ulimit -f 128; trap '' XFSZ; " .. child_command(script, "'" .. p .. "'") .. " 2>&1"
      local proc = io.popen("sh -c \"" .. cmd:gsub('"', '\\"') .. "\"")
      local out = proc:read("a")
      proc:close()
      assert.truthy(out:find("false", 1, true), out)
      assert.truthy(out:find("keep.safetensors: cannot write: File too large", 1, true), out)
      assert.are.equal(1, ember.load(p).version)
      assert.are.equal(0, temp_files())
    end)

    -- A child saves versions {step = i, w = filled with i, ...} to one path in a
    -- loop; it is killed with SIGKILL at random moments and each time the file
    -- must load and be one complete version, newer than the last one seen.
    local function kill_during_saves(where, rounds)
      local p = where .. "/killed.safetensors"
      local script = write("saver.lua", [[
        local ember = require 'ember'
        local p, start = arg[1], math.tointeger(tonumber(arg[2]))
        local w = ember.zeros(1 << 17) -- 512 KB per save
        for i = start, start + 100000000 do
          w:fill_(i % 1000000)
          ember.save(p, {step = i, w = w, tag = "version " .. i, half = i * 0.5})
        end]])
      math.randomseed(os.time())
      local last = -1
      for round = 1, rounds do
        local start = round * 1000000
        local proc = io.popen(child_command(script, "'" .. p .. "' " .. start) .. " >/dev/null 2>&1 & echo $!")
        local pid = assert(math.tointeger(tonumber(proc:read("l"))))
        proc:close()
        -- wait for this child's first complete save, then kill it at a random moment
        for _ = 1, 500 do
          local ok, r = pcall(ember.load, p)
          if ok and r.step >= start then break end
          os.execute("sleep 0.01")
        end
        os.execute(string.format("sleep %.3f", 0.02 + math.random() * 0.15))
        os.execute("kill -9 " .. pid)
        for _ = 1, 500 do -- until it is gone (or a zombie)
          local f = io.open("/proc/" .. pid .. "/stat", "r")
          local stat = f and f:read("a") or ""
          if f then f:close() end
          if stat == "" or stat:match("^%d+ %b() ([ZX])") then break end
          os.execute("sleep 0.01")
        end
        local r = ember.load(p) -- must load, and be one complete version
        assert.is_true(r.step >= start and r.step > last, "step " .. tostring(r.step))
        assert.are.equal("version " .. r.step, r.tag)
        assert.are.equal(r.step * 0.5, r.half)
        local v = r.step % 1000000
        assert.are.equal(v, r.w:min():item())
        assert.are.equal(v, r.w:max():item())
        assert.are.equal(1 << 17, r.w:numel())
        last = r.step
      end
    end

    it("kill -9 in the middle of saves never destroys the checkpoint (on disk)", function()
      kill_during_saves(dir, 3)
    end)

    -- On tmpfs fsync costs nothing, so most kills land while bytes are being
    -- written: a writer that is not atomic fails here almost surely.
    it("kill -9 in the middle of saves never destroys the checkpoint (tmpfs)", function()
      local shm = io.popen("d=$(mktemp -d /dev/shm/ember_ckpt_XXXXXX 2>/dev/null) && echo $d"):read("l")
      if not shm or shm == "" then return end -- no /dev/shm here: the disk test stands alone
      local ok, err = pcall(kill_during_saves, shm, 12)
      os.execute("rm -rf '" .. shm .. "'")
      assert(ok, err)
    end)
  end)
end)
