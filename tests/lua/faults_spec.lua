-- faults_spec.lua — hostile files and faults given to the public API: special
-- files (a named pipe must be refused at once, not block), saves killed with
-- kill -9 (their temp files removed by the next save), gradients holding NaN
-- reaching an optimizer (refused or skipped, naming the parameter; `ember run`
-- fails naming the step), and the IDX reader's rules for trailing bytes and
-- label ranges. (x ^ 0 at 0: edge_gradients_spec.)
local ember = require 'ember'
local h = require 'tests.lua.helpers.common'

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p '" .. dir .. "'"))
local function path(name) return dir .. '/' .. name end
teardown(function() os.execute("rm -rf '" .. dir .. "'") end)

local function write(name, bytes)
  local f = assert(io.open(path(name), 'wb'))
  f:write(bytes)
  f:close()
  return path(name)
end

local function mkfifo(name)
  local p = path(name)
  assert(os.execute('mkfifo ' .. h.q(p)), 'mkfifo ' .. p)
  return p
end

-- Runs `code` (Lua, ember loaded) in a child ember with a 10 s kill switch, so
-- a loader that blocks cannot hang the suite; returns its output and exit status.
local function in_child(code)
  return h.sh('timeout -s KILL 10 ' .. h.q(h.EMBER) .. ' -e ' .. h.q(code))
end

-- The child times the call itself and prints "<seconds> <error message>".
local function refused_quickly(call)
  local out, code = in_child(([[
    local t0 = ember._clock()
    local ok, err = pcall(function() %s end)
    io.write(string.format('%%.3f ', ember._clock() - t0), ok and 'LOADED' or tostring(err), '\n')]]):format(call))
  assert.are.equal(0, code, 'the child was killed (blocked?) or failed: ' .. out)
  local seconds, msg = out:match('^(%S+) (.*)$')
  assert.truthy(seconds, out)
  assert.is_true(tonumber(seconds) < 1, 'took ' .. seconds .. ' s')
  return msg
end

describe('special files', function()
  it('ember.load refuses a named pipe without a writer within a second', function()
    local p = mkfifo('ckpt.fifo')
    local msg = refused_quickly(('ember.load(%q)'):format(p))
    assert.truthy(msg:find('load: ' .. p .. ': is a named pipe (FIFO), not a checkpoint file', 1, true), msg)
  end)

  it('data.read_idx refuses a named pipe within a second', function()
    local p = mkfifo('images.fifo')
    local msg = refused_quickly(('ember.data.read_idx(%q)'):format(p))
    assert.truthy(msg:find("read_idx: '" .. p .. "' is not a regular file (it is a named pipe (FIFO))", 1, true), msg)
  end)

  it('data.mnist refuses named pipes under EMBER_DATA within a second', function()
    assert(os.execute('mkdir -p ' .. h.q(path('data/mnist'))))
    mkfifo('data/mnist/train-images-idx3-ubyte')
    mkfifo('data/mnist/train-labels-idx1-ubyte')
    local code = ([[
      local t0 = ember._clock()
      local ok, err = pcall(ember.data.mnist)
      io.write(string.format('%.3f ', ember._clock() - t0), ok and 'LOADED' or tostring(err), '\n')]])
    local out, status = h.sh('EMBER_DATA=' .. h.q(path('data')) .. ' timeout -s KILL 10 ' .. h.q(h.EMBER) .. ' -e ' .. h.q(code))
    assert.are.equal(0, status, out)
    local seconds, msg = out:match('^(%S+) (.*)$')
    assert.is_true(tonumber(seconds) < 1, out)
    assert.truthy(msg:find("mnist: idx_load: '" .. path('data/mnist/train-images-idx3-ubyte')
      .. "' is not a regular file (it is a named pipe (FIFO))", 1, true), msg)
  end)

  it('a recipe, a CSV file and a load_image path that are pipes are refused', function()
    local p = mkfifo('other.fifo')
    local msg = refused_quickly(('ember.load_recipe(%q)'):format(p))
    assert.truthy(msg:find('load_recipe: cannot open ' .. p .. ': is a named pipe (FIFO), not a regular file', 1, true), msg)
    msg = refused_quickly(('ember.metrics.read_csv(%q)'):format(p))
    assert.truthy(msg:find("read_csv: '" .. p .. "' is a named pipe (FIFO), not a regular file", 1, true), msg)
    msg = refused_quickly(('ember.image.load_png(%q)'):format(p))
    assert.truthy(msg:find("load_image: '" .. p .. "' is not a regular file (it is a named pipe (FIFO))", 1, true), msg)
    local out, code = h.sh('timeout -s KILL 10 ' .. h.q(h.EMBER) .. ' run ' .. h.q(p))
    assert.are.equal(1, code, out)
    assert.truthy(out:find('is a named pipe (FIFO), not a regular file', 1, true), out)
  end)

  it('a directory given to read_idx is named as one', function()
    local ok, err = pcall(ember.data.read_idx, dir)
    assert.is_false(ok)
    assert.truthy(tostring(err):find('is not a regular file (it is a directory)', 1, true), err)
  end)
end)

describe('temp files of killed saves', function()
  local function temp_files(name)
    local p = io.popen('ls -a ' .. h.q(dir))
    local found = {}
    for f in p:lines() do
      if f:sub(1, #name + 5) == name .. '.tmp-' then found[#found + 1] = f end
    end
    p:close()
    return found
  end

  -- Whether pid is gone: no process, or a zombie (PID 1 of a container may never reap it).
  local function gone(pid)
    local f = io.open('/proc/' .. pid .. '/stat', 'r')
    local stat = f and f:read('a') or ''
    if f then f:close() end
    return stat == '' or stat:match('^%d+ %b() ([ZX])') ~= nil
  end

  it('the next save of the path removes what killed saves left', function()
    local p = path('big.safetensors')
    -- 32 MB per save, in a loop: a kill almost always lands inside a write
    local script = write('saver.lua', [[
      local ember = require 'ember'
      local w = ember.ones(8 * 1024 * 1024)
      while true do ember.save(arg[1], {w = w}) end]])
    -- three savers of the same path at once, all killed: up to three stray files
    local left = {}
    for _ = 1, 10 do
      local pids = {}
      for k = 1, 3 do
        local proc = io.popen(h.q(h.EMBER) .. ' ' .. h.q(script) .. ' ' .. h.q(p) .. ' >/dev/null 2>&1 & echo $!')
        pids[k] = assert(math.tointeger(tonumber(proc:read('l'))))
        proc:close()
      end
      os.execute('sleep 0.6')
      os.execute('kill -9 ' .. table.concat(pids, ' '))
      for _, pid in ipairs(pids) do
        for _ = 1, 500 do
          if gone(pid) then break end
          os.execute('sleep 0.01')
        end
      end
      left = temp_files('big.safetensors')
      if #left >= 2 then break end
    end
    assert.is_true(#left >= 2, 'the kills left only ' .. #left .. ' temp files')
    -- a stray file of another host is not ours to judge: it stays
    local foreign = write('big.safetensors.tmp-1-0.some-other-host', 'x')
    ember.save(p, {w = ember.ones(4)})
    assert.are.same({ 'big.safetensors.tmp-1-0.some-other-host' }, temp_files('big.safetensors'))
    assert.are.equal(4, ember.load(p).w:numel())
    os.remove(foreign)
  end)

  it('temp files of a running process are left alone', function()
    local p = path('live.safetensors')
    local proc = io.popen('sleep 30 >/dev/null 2>&1 & echo $!')
    local pid = assert(math.tointeger(tonumber(proc:read('l'))))
    proc:close()
    local host = io.popen('hostname'):read('l')
    local name = ('live.safetensors.tmp-%d-0.%s'):format(pid, host)
    write(name, 'partial')
    ember.save(p, {a = 1})
    assert.are.same({ name }, temp_files('live.safetensors'))
    os.execute('kill ' .. pid)
    for _ = 1, 500 do
      if gone(pid) then break end
      os.execute('sleep 0.01')
    end
    ember.save(p, {a = 2})
    assert.are.same({}, temp_files('live.safetensors'))
  end)
end)

describe('a NaN gradient reaching an optimizer', function()
  local nn, optim = require 'ember.nn', require 'ember.optim'

  -- A net whose gradients are NaN while its loss is finite: sqrt(relu(-relu(y)))
  -- is sqrt(0), whose infinite derivative times relu's 0 is NaN.
  local function nan_step(opt_class, opts)
    ember.manual_seed(3)
    local net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    local opt = opt_class(net:parameters(), opts)
    local before = net[2].weight:clone()
    local y = net(ember.ones(5, 3))
    local loss = (y:relu():neg():relu():sqrt()):sum() + y:sum()
    assert.is_true(loss:item() == loss:item(), 'the loss itself is finite')
    loss:backward()
    return net, opt, before
  end

  for _, case in ipairs { { 'SGD', { lr = 0.1 } }, { 'Adam', {} } } do
    local name, opts = case[1], case[2]
    it(name .. ' refuses the step, naming the parameter, and changes nothing', function()
      local net, opt, before = nan_step(optim[name], opts)
      local ok, err = pcall(opt.step, opt)
      assert.is_false(ok)
      err = tostring(err)
      -- relu' = 0 at 0 times sqrt' = inf at 0: every gradient is NaN, the first listed is named
      assert.truthy(err:find(name .. ":step: the gradient of parameter '1.weight' (#1 of 4, [4 x 3]) "
        .. 'holds 12 NaN or infinite values of 12: the step is refused', 1, true), err)
      assert.are.equal(0, net[2].weight:ne(before):sum():item())
      assert.are.equal(0, opt.state[1].step)
    end)
    it(name .. " with on_nonfinite = 'skip' skips the step and counts it", function()
      local o = {}
      for k, v in pairs(opts) do o[k] = v end
      o.on_nonfinite = 'skip'
      local net, opt, before = nan_step(optim[name], o)
      assert.is_false(opt:step())
      assert.are.equal(1, opt.skipped_steps)
      assert.are.equal(0, net[2].weight:ne(before):sum():item())
      opt:zero_grad()
      net(ember.ones(5, 3)):sum():backward()
      assert.is_true(opt:step())
      assert.is_true(net[2].weight:ne(before):sum():item() > 0)
    end)
  end

  it('names the first bad parameter of a plain list by position', function()
    local w = ember.tensor({ 1, 2 }):requires_grad()
    local v = ember.tensor({ 1, 2, 3 }):requires_grad()
    local opt = optim.SGD({ w, v }, { lr = 0.1 })
    w.grad = ember.tensor { 0, 0 }
    v.grad = ember.tensor { 1, 0 / 0, 1 / 0 }
    local ok, err = pcall(opt.step, opt)
    assert.is_false(ok)
    assert.truthy(tostring(err):find('SGD:step: the gradient of parameter #2 of 2, [3] holds 2 NaN or infinite values of 3', 1, true), err)
  end)

  it("refuses a bad on_nonfinite value", function()
    local ok, err = pcall(optim.Adam, { ember.zeros(2):requires_grad() }, { on_nonfinite = 'ignore' })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("Adam: option 'on_nonfinite' must be 'error' or 'skip', got ignore", 1, true), err)
  end)

  it('ember run fails with a non-zero status naming the step', function()
    local recipe = write('nan_recipe.lua', [[
      local ember = require 'ember'
      local nn, optim = require 'ember.nn', require 'ember.optim'
      return {
        name = 'nan_at_step_3',
        build = function()
          local net = nn.Linear(2, 1)
          return {net = net, opt = optim.Adam(net:parameters())}
        end,
        data = function() return {train = {ember.ones(2, 2), ember.ones(2, 2), ember.ones(2, 2), ember.ones(2, 2)}} end,
        train_step = function(state, batch, step, log)
          state.opt:zero_grad()
          local y = state.net(batch)
          local loss = y:sum()
          if step == 3 then loss = loss + (y * 0 - 1):relu():sqrt():sum() end
          loss:backward()
          state.opt:step()
          log{loss = loss}
        end,
      }]])
    local out, code = h.sh('cd ' .. h.q(dir) .. ' && ' .. h.q(h.EMBER) .. ' run ' .. h.q(recipe) .. ' --out ' .. h.q(path('nanrun')))
    assert.are_not.equal(0, code, out)
    assert.truthy(out:find('error in recipe nan_at_step_3: at step 3 (epoch 1): ', 1, true), out)
    assert.truthy(out:find("Adam:step: the gradient of parameter 'weight'", 1, true), out)
    assert.are.equal('failed', h.read_lua(path('nanrun/result.lua')).status)
  end)
end)

describe('IDX files', function()
  local function idx_bytes(dims, values)
    local head = string.char(0, 0, 8, #dims)
    for _, d in ipairs(dims) do head = head .. string.pack('>I4', d) end
    return head .. string.char(table.unpack(values))
  end
  local function gzip(name, bytes)
    local p = write(name, bytes)
    assert(os.execute('gzip -f -n ' .. h.q(p)))
    return p .. '.gz'
  end
  local function append(p, bytes)
    local f = assert(io.open(p, 'ab'))
    f:write(bytes)
    f:close()
  end

  it('bytes after a gzip stream are refused, as after a plain file', function()
    local bytes = idx_bytes({ 2, 3 }, { 1, 2, 3, 4, 5, 6 })
    local plain = write('t.idx', bytes .. 'junk')
    local ok, err = pcall(ember.data.read_idx, plain, { raw = true })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('4 bytes after the 6 data bytes its header declares', 1, true), err)
    local gz = gzip('g.idx', bytes)
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 } }, ember.data.read_idx(gz, { raw = true }):totable())
    append(gz, 'junk')
    ok, err = pcall(ember.data.read_idx, gz, { raw = true })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('4 bytes after the end of the gzip stream that are not another gzip member', 1, true), err)
  end)

  it('a second gzip member is read on (as gzip -d does)', function()
    local bytes = idx_bytes({ 2, 3 }, { 1, 2, 3, 4, 5, 6 })
    local a = gzip('a.idx', bytes:sub(1, 9))
    local b = gzip('b.idx', bytes:sub(10))
    append(a, h.read(b))
    assert.are.same({ { 1, 2, 3 }, { 4, 5, 6 } }, ember.data.read_idx(a, { raw = true }):totable())
  end)

  it('a label outside the class count is refused by data.mnist, naming it and its row', function()
    local mdir = path('labels')
    assert(os.execute('mkdir -p ' .. h.q(mdir)))
    local images = {}
    for i = 1, 3 * 4 do images[i] = i end
    write('labels/train-images-idx3-ubyte', idx_bytes({ 3, 2, 2 }, images))
    write('labels/train-labels-idx1-ubyte', idx_bytes({ 3 }, { 4, 250, 9 }))
    local ok, err = pcall(ember.data.mnist, { dir = mdir })
    assert.is_false(ok)
    assert.truthy(tostring(err):find('mnist: ' .. mdir .. '/train-labels-idx1-ubyte: label 250 at row 2 is outside the 10 classes (the file must hold 0..9)', 1, true), err)
    write('labels/train-labels-idx1-ubyte', idx_bytes({ 3 }, { 4, 0, 9 }))
    local ds = ember.data.mnist { dir = mdir }
    assert.are.same({ 5, 1, 10 }, ds.y:totable())
  end)
end)
