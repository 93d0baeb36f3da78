-- memory_spec.lua — tensors' memory is released without the user's help:
-- 20,000 tensors of 1 MB made in a loop that never calls collectgarbage()
-- keep the resident size (VmRSS) under 300 MB; t:free() and `local t <close>`
-- release at once; using a freed tensor is a clear error; and a steady loop of
-- same-shaped ops reuses cached buffers (hits grow, misses stay flat).
local ember = require 'ember'

local MB = 1024 * 1024

-- Resident memory of this process in MB, from /proc/self/status.
local function rss_mb()
  for line in io.lines('/proc/self/status') do
    local kb = line:match('^VmRSS:%s+(%d+)')
    if kb then return tonumber(kb) / 1024 end
  end
end

-- Runs a Lua script in a fresh interpreter (same LUA_CPATH, same preloads) so
-- that what other specs left in this process does not count; returns its
-- output and whether it exited cleanly.
-- INTERPRETER is lua5.4 unless given (the ember program, EMBER_BIN).
local function run_fresh(script, interpreter)
  local path = os.tmpname()
  local f = assert(io.open(path, 'w'))
  f:write(script)
  f:close()
  local p = assert(io.popen((interpreter or 'lua5.4') .. ' ' .. path .. ' 2>&1'))
  local out = p:read('a')
  local ok, how, code = p:close()
  os.remove(path)
  return out, ok, how, code
end

-- Drops all garbage so that ember.memory().live counts only live tensors.
local function settle()
  collectgarbage()
  collectgarbage()
end

local EMBER = os.getenv('EMBER_BIN') or 'build/ember'

describe('memory without collectgarbage()', function()
  for _, interpreter in ipairs({ 'lua5.4', EMBER }) do
  it('20,000 tensors of 1 MB keep VmRSS under 300 MB (fresh ' .. interpreter .. ', generational GC)', function()
    local out, ok, how, code = run_fresh([[
local ember = require 'ember'
local function rss_mb()
  for line in io.lines('/proc/self/status') do
    local kb = line:match('^VmRSS:%s+(%d+)')
    if kb then return tonumber(kb) / 1024 end
  end
end
local peak, peak_live = 0, 0
for i = 1, 20000 do
  local t = ember.zeros(262144)         -- 1 MB
  if i % 4 == 0 then t = t + 1 end      -- op results count too
  if i % 250 == 0 then
    peak = math.max(peak, rss_mb())
    peak_live = math.max(peak_live, ember.memory().live)
  end
end
io.write(('peak_rss_mb=%.1f peak_live_mb=%.1f\n'):format(peak, peak_live / 1048576))
]], interpreter)
    assert.is_true(ok, ('the child failed (%s %s): %s'):format(how, code, out))
    local peak = tonumber(out:match('peak_rss_mb=([%d.]+)'))
    local live = tonumber(out:match('peak_live_mb=([%d.]+)'))
    assert.is_not_nil(peak, out)
    assert.is_true(peak < 300, ('VmRSS reached %.1f MB'):format(peak))
    assert.is_true(live < 200, ('live tensor memory reached %.1f MB'):format(live))
  end)
  end

  -- A bare lua_State starts incremental; ember's program sets generational mode as
  -- lua5.4 does, so that a training step's short-lived tensors die in young
  -- collections (the accounting above was built for that mode).
  it('the ember program runs its collector in generational mode, as lua5.4 does', function()
    for _, interpreter in ipairs({ 'lua5.4', EMBER }) do
      local out, ok = run_fresh("io.write(collectgarbage('incremental'))", interpreter)
      assert.is_true(ok, out)
      assert.are.equal('generational', out, interpreter)
    end
  end)

  it('the same in this process: live memory stays bounded', function()
    settle()
    local base = ember.memory().live
    local peak = 0
    for i = 1, 3000 do
      local t = ember.zeros(262144)
      local u = t * 2
      if i % 100 == 0 then peak = math.max(peak, ember.memory().live - base) end
    end
    assert.is_true(peak < 200 * MB, ('live memory grew by %.1f MB'):format(peak / MB))
  end)
end)

describe('process exit', function()
  it('a process that ran threaded ops exits cleanly (the library is not unloaded under its threads)', function()
    for _ = 1, 4 do
      local out, ok, how, code = run_fresh([[
local ember = require 'ember'
ember.set_num_threads(2)
local x = ember.randn(512, 512)
for _ = 1, 20 do x = (x * 0.5 + 1):tanh() end
local y = x:matmul(x):sum()
io.write('done ', tostring(y:item() == y:item()), '\n')
]])
      assert.is_true(ok, ('the child died (%s %s): %s'):format(how, code, out))
      assert.are.equal('done true\n', out)
    end
  end)
end)

describe('explicit release', function()
  it('t:free() releases the storage at once', function()
    settle()
    local base = ember.memory().live
    local t = ember.zeros(262144)
    assert.are.equal(base + MB, ember.memory().live)
    t:free()
    assert.are.equal(base, ember.memory().live)
    t:free() -- harmless
    assert.are.equal('ember.Tensor (freed)', tostring(t))
  end)

  it('local t <close> releases at the end of its block, also on error', function()
    settle()
    local base = ember.memory().live
    do
      local t <close> = ember.zeros(262144)
      local u <close> = t + 1
      assert.are.equal(base + 2 * MB, ember.memory().live)
    end
    assert.are.equal(base, ember.memory().live)
    local ok = pcall(function()
      local t <close> = ember.ones(262144)
      error('boom')
    end)
    assert.is_false(ok)
    assert.are.equal(base, ember.memory().live)
  end)

  it('a view keeps its storage until the view goes too', function()
    settle()
    local base = ember.memory().live
    local flat = ember.arange(262144)
    local t = flat:view(512, 512)
    flat:free() -- only the header: t still holds the storage
    assert.are.equal(base + MB, ember.memory().live)
    local v = t:t()
    t:free()
    assert.are.equal(base + MB, ember.memory().live)
    local row = v[1]
    assert.are.equal(512, row[2]) -- still readable
    row:free()
    v:free()
    assert.are.equal(base, ember.memory().live)
  end)

  it('using a freed tensor is a clear error', function()
    local t = ember.zeros(4)
    t:free()
    local ok, err = pcall(function() return t:sum() end)
    assert.is_false(ok)
    assert.is_truthy(err:find('sum: bad argument #1 (the tensor was freed with free() or <close>)', 1, true), err)
    ok, err = pcall(function() return t * 2 end)
    assert.is_false(ok)
    assert.is_truthy(err:find('mul: bad argument #1 (expected tensor or number, got freed tensor)', 1, true), err)
    local u
    do
      local c <close> = ember.zeros(4)
      u = c
    end
    ok, err = pcall(function() return u:exp() end)
    assert.is_false(ok)
    assert.is_truthy(err:find('exp: bad argument #1 (the tensor was freed with free() or <close>)', 1, true), err)
  end)

  it('freeing a tensor that an autograd graph saved keeps the graph working', function()
    local x = ember.randn(4):requires_grad()
    local h = x * 3
    local y = (h * h):sum() -- saves h
    h:free()
    y:backward()
    local want = x:detach() * 18
    assert.is_true((x.grad - want):abs():max():item() < 1e-5)
  end)
end)

describe('the buffer cache', function()
  it('a steady loop of same-shaped ops hits the cache (explicit release)', function()
    local x = ember.randn(256, 256)
    local function step()
      local a <close> = x * 2
      local b <close> = a + 1
      local c <close> = b:matmul(x)
      local s <close> = c:sum()
    end
    for _ = 1, 5 do step() end -- warm up
    local m0 = ember.memory()
    for _ = 1, 100 do step() end
    local m1 = ember.memory()
    assert.is_true(m1.hits - m0.hits >= 300, ('hits grew by %d'):format(m1.hits - m0.hits))
    assert.are.equal(m0.misses, m1.misses)
  end)

  it('a steady loop that leaves release to the GC hits the cache too', function()
    local x = ember.randn(128, 128) -- 64 KB: a cached size
    for _ = 1, 1000 do local y = (x * 2 + 1):tanh() end -- warm up through a collection
    local m0 = ember.memory()
    for _ = 1, 2000 do local y = (x * 2 + 1):tanh() end -- 375 MB in all
    local m1 = ember.memory()
    local allocs = (m1.hits - m0.hits) + (m1.misses - m0.misses)
    assert.is_true(allocs >= 6000)
    assert.is_true(m1.misses - m0.misses <= allocs / 20,
      ('%d misses out of %d allocations'):format(m1.misses - m0.misses, allocs))
  end)

  it('memory() reports live and cached bytes', function()
    local m = ember.memory()
    for _, k in ipairs { 'live', 'cached', 'hits', 'misses' } do
      assert.are.equal('number', type(m[k]), k)
      assert.is_true(m[k] >= 0, k)
    end
  end)
end)

describe('rss helper', function()
  it('reads VmRSS', function()
    local r = rss_mb()
    assert.is_true(r and r > 1)
  end)
end)
