-- progress_spec.lua — ember.progress (terminal line and the plain-line
-- fallback, driven by a fake clock) and ember.metrics (CSV log round trip,
-- column rules, summary).
local ember = require 'ember'
local progress = require 'ember.progress'
local metrics = require 'ember.metrics'

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute('mkdir -p ' .. tmpdir))
teardown(function() os.execute('rm -rf ' .. tmpdir) end)

local function slurp(path)
  local f = assert(io.open(path, 'rb'))
  local s = f:read('a')
  f:close()
  return s
end

local function lines_of(s)
  local out = {}
  for l in s:gmatch('[^\n]+') do out[#out + 1] = l end
  return out
end

-- A clock the test moves by hand.
local function fake_clock()
  local t = 100
  return function() return t end, function(dt) t = t + dt end
end

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return e
end

describe('ember.progress', function()
  it('falls back to plain lines every 10% when the output is not a terminal', function()
    local path = tmpdir .. '/plain.log'
    local file = assert(io.open(path, 'w'))
    local clock, advance = fake_clock()
    local bar = progress.new(100, { desc = 'epoch 1', file = file, clock = clock })
    assert.is_false(bar.tty)
    for i = 1, 100 do
      advance(0.1)
      bar:update(1, { loss = 1 / i })
    end
    bar:close()
    file:close()
    local out = slurp(path)
    assert.is_nil(out:find('\r', 1, true))
    local ls = lines_of(out)
    assert.equal(10, #ls)
    assert.equal('epoch 1: 10/100 (10%), elapsed 00:01, eta 00:09, 10.0 it/s, loss=0.1', ls[1])
    assert.equal('epoch 1: 50/100 (50%), elapsed 00:05, eta 00:05, 10.0 it/s, loss=0.02', ls[5])
    assert.equal('epoch 1: 100/100 (100%), elapsed 00:10, 10.0 it/s, loss=0.01', ls[10])
  end)

  it('prints a plain line every plain_interval seconds without a total', function()
    local path = tmpdir .. '/unknown.log'
    local file = assert(io.open(path, 'w'))
    local clock, advance = fake_clock()
    local bar = progress.new(nil, { file = file, clock = clock, plain_interval = 30 })
    for _ = 1, 12 do
      advance(10)
      bar:update(5)
    end
    bar:close({ acc = 0.9 })
    file:close()
    local ls = lines_of(slurp(path))
    assert.equal(5, #ls) -- at 30, 60, 90, 120 s, then the final line
    assert.equal('15 it, elapsed 00:30, 2.00 s/it', ls[1])
    assert.equal('60 it, elapsed 02:00, 2.00 s/it, acc=0.9', ls[5])
  end)

  it('redraws one terminal line, throttled, with rate and ETA', function()
    local path = tmpdir .. '/tty.log'
    local file = assert(io.open(path, 'w'))
    local clock, advance = fake_clock()
    local bar = progress.new(469, { desc = 'train', file = file, tty = true, clock = clock, width = 10 })
    for i = 1, 469 do
      advance(0.01) -- 100 it/s: a redraw every 10 steps (interval 0.1 s)
      bar:update(1, { loss = ember.tensor(0.25), step = i })
    end
    bar:close()
    file:close()
    local out = slurp(path)
    local draws = select(2, out:gsub('\r', ''))
    assert.is_true(draws >= 40 and draws <= 52, 'draws: ' .. draws)
    assert.truthy(out:find('\27[K', 1, true))
    assert.equal('\n', out:sub(-1))
    local last = out:match('\r([^\r]*)\27%[K\n$')
    assert.equal('train 100% [==========] 469/469 00:04<00:00 100 it/s loss=0.25 step=469', last)
    assert.truthy(out:find('\rtrain  10% [=>        ] 50/469 00:00<00:04 100 it/s loss=0.25 step=50\27[K', 1, true))
  end)

  it('formats times and knows whether stdout is a terminal', function()
    assert.equal('00:07', progress.format_time(7.2))
    assert.equal('02:05', progress.format_time(125))
    assert.equal('1:01:01', progress.format_time(3661))
    assert.equal('--:--', progress.format_time(nil))
    assert.equal('boolean', type(ember._isatty(1)))
    assert.is_false(ember._isatty(-1))
    -- the default output, stdout, is redirected under busted's runner here or not;
    -- either way the choice follows isatty
    local bar = progress.new(3, { clock = function() return 0 end, file = io.stdout, tty = false })
    assert.is_false(bar.tty)
  end)

  it('works as a <close> variable and rejects bad arguments', function()
    local path = tmpdir .. '/close.log'
    local file = assert(io.open(path, 'w'))
    do
      local bar <close> = progress.new(10, { file = file, clock = function() return 0 end, every = 0.5 })
      bar:update()
    end
    file:close()
    -- no 50% line yet; the one line is the final line written by <close>
    assert.same({ '1/10 (10%), elapsed 00:00, eta --:--, ? it/s' }, lines_of(slurp(path)))
    assert.matches('progress.new: total must be an integer >= 0 or nil, got -1', err_of(progress.new, -1), 1, true)
    assert.matches('progress.new: file must be an open Lua file', err_of(progress.new, 3, { file = 'x' }), 1, true)
    local bar = progress.new(3, { file = assert(io.open(tmpdir .. '/x.log', 'w')) })
    assert.matches('update: metrics must be a table, got number', err_of(bar.update, bar, 1, 5), 1, true)
  end)
end)

describe('ember.metrics', function()
  it('writes a CSV with a stable header and reads it back', function()
    local path = tmpdir .. '/m.csv'
    local log = metrics.csv(path)
    log:write { loss = 0.5, step = 1, kl = ember.tensor(2.25), note = 'a, "b"' }
    log:write { loss = 0.25, step = 2, kl = 1.5 } -- note left out: an empty cell
    log:write { loss = 0 / 0, step = 3, kl = 1, note = 'c' }
    log:close()
    local text = slurp(path)
    assert.equal('step,kl,loss,note\n1,2.25,0.5,"a, ""b"""\n2,1.5,0.25,\n3,1,nan,c\n', text)
    local cols, names = metrics.read_csv(path)
    assert.same({ 'step', 'kl', 'loss', 'note' }, names)
    assert.same({ 1, 2, 3 }, cols.step)
    assert.same({ 2.25, 1.5, 1 }, cols.kl)
    assert.equal(0.25, cols.loss[2])
    assert.is_true(cols.loss[3] ~= cols.loss[3]) -- NaN
    assert.same({ 'a, "b"', '', 'c' }, cols.note)
  end)

  it('refuses a new key after the header, and names it', function()
    local log = metrics.csv(tmpdir .. '/m2.csv')
    log:write { step = 1, loss = 1 }
    assert.matches("write: row 2 has key 'acc', which is not a column of '" .. tmpdir .. "/m2.csv' (columns: step, loss)",
      err_of(log.write, log, { step = 2, acc = 0.5 }), 1, true)
    log:close()
    local declared = metrics.csv(tmpdir .. '/m3.csv', { columns = { 'epoch', 'loss', 'acc' } })
    declared:write { epoch = 1, loss = 2 }
    declared:write { epoch = 2, loss = 1, acc = 0.5 }
    declared:close()
    assert.equal('epoch,loss,acc\n1,2,\n2,1,0.5\n', slurp(tmpdir .. '/m3.csv'))
  end)

  it('summarises last/min/max/mean per column and appends on resume', function()
    local path = tmpdir .. '/s.csv'
    local log = metrics.csv(path)
    for step = 1, 4 do log:write { step = step, loss = 10 - step } end
    local s = log:summary()
    assert.same({ 'step', 'loss' }, s.names)
    assert.same({ last = 6, min = 6, max = 9, mean = 7.5, count = 4 }, s.loss)
    assert.truthy(tostring(s):find('loss%s+6%s+6%s+9%s+7.5%s+4'))
    log:close()
    local again = metrics.csv(path, { append = true })
    again:write { step = 5, loss = 1 }
    again:close()
    local cols = metrics.read_csv(path)
    assert.same({ 1, 2, 3, 4, 5 }, cols.step)
    assert.equal(1, metrics.summary(path).loss.min)
  end)

  it('reports unreadable and malformed files', function()
    assert.matches("read_csv: cannot open '" .. tmpdir .. "/none.csv': No such file or directory",
      err_of(metrics.read_csv, tmpdir .. '/none.csv'), 1, true)
    local f = assert(io.open(tmpdir .. '/bad.csv', 'w'))
    f:write('a,b\n1,2\n3\n')
    f:close()
    assert.matches("read_csv: '" .. tmpdir .. "/bad.csv' line 3 has 1 fields, the header has 2",
      err_of(metrics.read_csv, tmpdir .. '/bad.csv'), 1, true)
    assert.matches("csv: cannot write '/nonexistent-dir/m.csv': No such file or directory",
      err_of(metrics.csv, '/nonexistent-dir/m.csv'), 1, true)
    local log = metrics.csv(tmpdir .. '/t.csv')
    assert.matches("write: value of 'x' is a tensor of 3 elements, expected one",
      err_of(log.write, log, { x = ember.zeros(3) }), 1, true)
  end)
end)
