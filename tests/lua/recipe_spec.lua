-- Specs for recipes and runs: `ember run`, `--resume`, `ember sample`, ember.load_recipe.
-- They drive the ember program (EMBER_BIN, default build/ember) on examples/tiny.lua.
local ember = require 'ember'
local recipe = require 'ember.recipe'
local h = require 'tests.lua.helpers.common'
local q, sh, read, exists, tmpdir, wait_until = h.q, h.sh, h.read, h.exists, h.tmpdir, h.wait_until

local ROOT = h.ROOT
local EMBER = h.EMBER
local TINY = ROOT .. '/examples/tiny.lua'

-- Runs `ember ARGS` in directory dir.
local function ember_cmd(dir, args) return sh('cd ' .. q(dir) .. ' && ' .. q(EMBER) .. ' ' .. args) end

-- Number of data rows in a CSV file.
local function csv_rows(path)
  local n = -1
  for _ in (read(path) or ''):gmatch('[^\n]+') do n = n + 1 end
  return math.max(n, 0)
end

-- Starts `ember run ARGS` in dir without waiting (io.popen: SIGINT stays deliverable,
-- unlike a shell's `&`); returns the handle, whose :close() waits and gives the status.
local function start_run(dir, args)
  return io.popen('cd ' .. q(dir) .. ' && exec ' .. q(EMBER) .. ' ' .. args .. ' > run.out 2>&1', 'r')
end

local function pid_of(run_dir)
  local s = read(run_dir .. '/pid')
  return s and tonumber(s:match('%d+'))
end

-- A recipe file in the train_epoch style (whole epochs), written into dir.
local EPOCH_RECIPE = [[
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
return {
  name = 'epochy',
  params = {
    epochs = {default = 6, type = 'integer', help = 'epochs'},
    slow = {default = 0, type = 'number', help = 'seconds of busy work per epoch'},
  },
  main_metric = {name = 'val', goal = 'min'},
  build = function(p)
    local m = nn.Linear(3, 1)
    return {m = m, opt = optim.Adam(m:parameters(), {lr = 0.05}), slow = p.slow, seen = 0}
  end,
  data = function(p) return {x = ember.randn(64, 3), y = ember.randn(64, 1)} end,
  train_epoch = function(s, d, epoch, log)
    for i = 1, 4 do
      local idx = ember.randint(1, 65, {16})
      s.opt:zero_grad()
      local loss = (s.m:forward(d.x:index_select(1, idx)) - d.y:index_select(1, idx)):square():mean()
      loss:backward()
      s.opt:step()
      log{loss = loss}
      s.seen = s.seen + 16
    end
    log{seen = s.seen}
    local stop = os.clock() + s.slow
    while os.clock() < stop do end
  end,
  evaluate = function(s, d)
    return {val = ember.no_grad(function() return (s.m:forward(d.x) - d.y):square():mean():item() end)}
  end,
}
]]

describe('ember run: --set validation', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('rejects an unknown param, listing the valid ones, with status 2', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set hiden=3 --out r')
    assert.equal(2, code)
    assert.matches("unknown param 'hiden' for recipe tiny %(valid: act, batch, checkpoint_every, epochs, " ..
                   "fail_if, hidden, lr, n_samples, slow%)", out)
    assert.is_false(exists(dir .. '/r/config.lua'))
  end)

  it('rejects a value of the wrong type', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set hidden=abc')
    assert.equal(2, code)
    assert.matches("param 'hidden' expects an integer, got 'abc'", out, 1, true)
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set hidden=2.5')
    assert.equal(2, code)
    assert.matches("param 'hidden' expects an integer, got '2.5'", out, 1, true)
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set lr=fast')
    assert.equal(2, code)
    assert.matches("param 'lr' expects a number, got 'fast'", out, 1, true)
  end)

  it('rejects a value outside the choices', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set act=gelu')
    assert.equal(2, code)
    assert.matches("param 'act' must be one of tanh, relu, got 'gelu'", out, 1, true)
  end)

  it('rejects a malformed --set, an unknown option and a missing recipe', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set hidden')
    assert.equal(2, code)
    assert.matches("--set expects key=value, got 'hidden'", out, 1, true)
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --bogus')
    assert.equal(2, code)
    assert.matches("unknown option '--bogus'", out, 1, true)
    out, code = ember_cmd(dir, 'run')
    assert.equal(2, code)
    assert.matches('missing the recipe file', out, 1, true)
    out, code = ember_cmd(dir, 'run nowhere.lua')
    assert.equal(2, code)
    assert.matches('cannot open recipe nowhere.lua', out, 1, true)
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --threads 0')
    assert.equal(2, code)
    assert.matches('--threads expects a whole number >= 1, got 0', out, 1, true)
  end)

  it('lists the params with --help', function()
    local out, code = ember_cmd(dir, 'run --help ' .. q(TINY))
    assert.equal(0, code)
    assert.matches('usage: ember run', out, 1, true)
    assert.matches('hidden%s+integer%s+default 32%s+hidden units', out)
    assert.matches('act%s+string%s+default tanh%s+hidden activation %(one of tanh, relu%)', out)
    assert.matches('main metric: test_loss (lower is better)', out, 1, true)
  end)
end)

describe('ember run: the run folder', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('writes config, metrics.csv, log, checkpoint, result and samples', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=2 --set hidden=8 --seed 3 --threads 1 --out r')
    assert.equal(0, code, out)
    local cfg = assert(recipe.files.read_lua(dir .. '/r/config.lua'))
    assert.equal(8, cfg.params.hidden)
    assert.equal(2, cfg.params.epochs)
    assert.equal(0.03, cfg.params.lr)
    assert.equal(3, cfg.seed)
    assert.equal(1, cfg.threads)
    assert.equal(ember.version, cfg.ember_version)
    assert.equal(TINY, cfg.recipe)
    assert.equal('string', type(cfg.git)) -- the examples live in a git repository
    local header, rows = recipe.files.read_csv(dir .. '/r/metrics.csv')
    assert.same({'epoch', 'step', 'test_loss', 'test_mae', 'train_loss'}, header)
    assert.equal(16 + 2, #rows) -- 8 steps per epoch and one evaluation row per epoch
    assert.equal(8, rows[9].step)
    assert.is_number(rows[9].test_loss)
    assert.is_nil(rows[9].train_loss)
    local log = read(dir .. '/r/log')
    assert.matches('epoch 2/2  test_loss', log, 1, true)
    assert.matches('params: act=tanh batch=32', log, 1, true)
    local ck = ember.load(dir .. '/r/checkpoint')
    assert.equal(2, ck.progress.epoch)
    assert.equal(16, ck.progress.step)
    assert.is_true(ember.is_tensor(ck.state.model['1.weight']))
    assert.is_table(ck.state.opt)
    local res = recipe.files.read_lua(dir .. '/r/result.lua')
    assert.equal('finished', res.status)
    assert.equal(rows[#rows].test_loss, res.metrics.test_loss)
    assert.is_true(exists(dir .. '/r/samples/surface.png'))
    assert.is_false(exists(dir .. '/r/pid'))
  end)

  it('picks runs/<name>-<time> by default and refuses to overwrite a run', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=1')
    assert.equal(0, code, out)
    local made = out:match('run (runs/tiny%-%d+%-%d+[%-%d]*):')
    assert.truthy(made, out)
    assert.is_true(exists(dir .. '/' .. made .. '/metrics.csv'))
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --out ' .. made)
    assert.equal(2, code)
    assert.matches('already holds a run; continue it with `ember run --resume', out, 1, true)
  end)

  it('says there is nothing to do when resuming a finished run', function()
    ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=1 --out r')
    local out, code = ember_cmd(dir, 'run --resume r')
    assert.equal(0, code)
    assert.matches('nothing to do: run r already finished', out, 1, true)
  end)

  it('records a failing recipe and exits with status 1', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set fail_if=32 --out r')
    assert.equal(1, code)
    assert.matches('tiny: failing on purpose', out, 1, true)
    local res = recipe.files.read_lua(dir .. '/r/result.lua')
    assert.equal('failed', res.status)
    assert.matches('failing on purpose', res.error, 1, true)
    assert.matches('failing on purpose', read(dir .. '/r/log'), 1, true)
  end)
end)

describe('ember run --resume', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  -- Kills the run in folder `name` with `signal` once its metrics.csv has `rows` rows.
  local function stop_run_at(name, args, rows, signal)
    local h = start_run(dir, 'run ' .. args .. ' --out ' .. name)
    local run_dir = dir .. '/' .. name
    assert.is_true(wait_until(function()
      return pid_of(run_dir) and csv_rows(run_dir .. '/metrics.csv') >= rows
    end), 'the run never got going: ' .. tostring(read(dir .. '/run.out')))
    os.execute('kill -' .. signal .. ' ' .. pid_of(run_dir))
    local _, _, code = h:close()
    return code
  end

  it('continues a killed step-mode run to the same metrics, bit for bit', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=3 --set slow=0.01 --threads 2 --out straight')
    assert.equal(0, code, out)
    code = stop_run_at('broken', q(TINY) .. ' --set epochs=3 --set slow=0.01 --set checkpoint_every=3 --threads 2',
                       11, 'KILL')
    assert.equal(9, code) -- killed by the signal
    assert.is_nil(recipe.files.read_lua(dir .. '/broken/result.lua'))
    out, code = ember_cmd(dir, 'run --resume broken')
    assert.equal(0, code, out)
    assert.matches('continuing after step %d+ %(part%-way through epoch %d%)', out)
    assert.equal(read(dir .. '/straight/metrics.csv'), read(dir .. '/broken/metrics.csv'))
  end)

  it('continues a killed epoch-mode run to the same metrics, bit for bit', function()
    local f = assert(io.open(dir .. '/epochy.lua', 'w'))
    f:write(EPOCH_RECIPE)
    f:close()
    local out, code = ember_cmd(dir, 'run epochy.lua --set slow=0.05 --out straight')
    assert.equal(0, code, out)
    code = stop_run_at('broken', 'epochy.lua --set slow=0.05', 3, 'KILL')
    assert.equal(9, code)
    out, code = ember_cmd(dir, 'run --resume broken')
    assert.equal(0, code, out)
    assert.equal(read(dir .. '/straight/metrics.csv'), read(dir .. '/broken/metrics.csv'))
    local header = recipe.files.read_csv(dir .. '/broken/metrics.csv')
    assert.same({'epoch', 'loss', 'seen', 'val'}, header)
  end)

  it('saves a checkpoint on Ctrl-C, exits with 130 and resumes exactly', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=3 --set slow=0.01 --out straight')
    assert.equal(0, code, out)
    code = stop_run_at('stopped', q(TINY) .. ' --set epochs=3 --set slow=0.01', 5, 'INT')
    assert.equal(130, code, read(dir .. '/run.out'))
    local said = read(dir .. '/run.out')
    -- part-way through an epoch, or (rarely) right at its end
    local where = said:match('interrupted at step %d+ %(epoch %d+%)') or said:match('interrupted after epoch %d+ %(step %d+%)')
    assert.truthy(where, said)
    assert.matches('; checkpoint saved. Resume with: ember run --resume stopped', said, 1, true)
    local res = recipe.files.read_lua(dir .. '/stopped/result.lua')
    assert.equal('interrupted', res.status)
    local ck = ember.load(dir .. '/stopped/checkpoint')
    assert.equal(res.step, ck.progress.step)
    assert.is_true(ck.progress.step >= 5) -- saved where it stopped, not at the last periodic save
    out, code = ember_cmd(dir, 'run --resume stopped')
    assert.equal(0, code, out)
    assert.equal(read(dir .. '/straight/metrics.csv'), read(dir .. '/stopped/metrics.csv'))
  end)

  it('saves a checkpoint on SIGTERM (a cluster time limit, kill) as on Ctrl-C, and resumes exactly', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=3 --set slow=0.01 --out straight_t')
    assert.equal(0, code, out)
    code = stop_run_at('termed', q(TINY) .. ' --set epochs=3 --set slow=0.01', 5, 'TERM')
    assert.equal(130, code, read(dir .. '/run.out'))
    local said = read(dir .. '/run.out')
    assert.matches('; checkpoint saved. Resume with: ember run --resume termed', said, 1, true)
    local res = recipe.files.read_lua(dir .. '/termed/result.lua')
    assert.equal('interrupted', res.status)
    assert.is_true(ember.load(dir .. '/termed/checkpoint').progress.step >= 5)
    out, code = ember_cmd(dir, 'run --resume termed')
    assert.equal(0, code, out)
    assert.equal(read(dir .. '/straight_t/metrics.csv'), read(dir .. '/termed/metrics.csv'))
  end)

  it('on Ctrl-C in epoch mode keeps the last whole epoch and resumes exactly', function()
    local f = assert(io.open(dir .. '/epochy.lua', 'w'))
    f:write(EPOCH_RECIPE)
    f:close()
    local out, code = ember_cmd(dir, 'run epochy.lua --set slow=0.05 --out straight')
    assert.equal(0, code, out)
    code = stop_run_at('stopped', 'epochy.lua --set slow=0.05', 2, 'INT')
    assert.equal(130, code, read(dir .. '/run.out'))
    assert.matches('interrupted during epoch (%d); the checkpoint holds epoch (%d), where %-%-resume continues%. ' ..
                   'Resume with: ember run %-%-resume stopped', read(dir .. '/run.out'))
    out, code = ember_cmd(dir, 'run --resume stopped')
    assert.equal(0, code, out)
    assert.equal(read(dir .. '/straight/metrics.csv'), read(dir .. '/stopped/metrics.csv'))
  end)

  it('refuses --set and another thread count on resume', function()
    ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=1 --threads 1 --out r')
    os.remove(dir .. '/r/result.lua')
    local out, code = ember_cmd(dir, 'run --resume r --set lr=1')
    assert.equal(2, code)
    assert.matches('--resume takes the params from r/config.lua; drop --set', out, 1, true)
    out, code = ember_cmd(dir, 'run --resume r --threads 2')
    assert.equal(2, code)
    assert.matches('run r was made with 1 threads; resume it with the same count', out, 1, true)
    out, code = ember_cmd(dir, 'run --resume nowhere')
    assert.equal(2, code)
    assert.matches('nowhere is not a run folder (no config.lua)', out, 1, true)
  end)
end)

describe('ember sample', function()
  local dir
  setup(function()
    dir = tmpdir()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=1 --out r --threads 1')
    assert.equal(0, code, out)
  end)
  teardown(function() os.execute('rm -rf ' .. q(dir)) end)

  it('writes a picture to --out FILE without retraining', function()
    local before = read(dir .. '/r/metrics.csv')
    local out, code = ember_cmd(dir, 'sample r --n 16 --out pics/s.png')
    assert.equal(0, code, out)
    assert.matches('wrote pics/s.png', out, 1, true)
    local png = read(dir .. '/pics/s.png')
    assert.equal('\137PNG', png:sub(1, 4))
    assert.equal(before, read(dir .. '/r/metrics.csv'))
  end)

  it('writes into a fresh folder under DIR/samples by default', function()
    local out, code = ember_cmd(dir, 'sample r')
    assert.equal(0, code, out)
    assert.matches('epoch 1, 1 thread)', out, 1, true) -- the run's threads (it ran with --threads 1)
    local folder = out:match('in (r/samples/[%d%-]+)')
    assert.truthy(folder, out)
    assert.is_true(exists(dir .. '/' .. folder .. '/surface.png'))
  end)

  it('samples with --threads N instead of the run\'s threads', function()
    local out, code = ember_cmd(dir, 'sample r --threads 2')
    assert.equal(0, code, out)
    assert.matches('epoch 1, 2 threads)', out, 1, true)
    out, code = ember_cmd(dir, 'sample r --threads 0')
    assert.equal(2, code)
    assert.matches('--threads', out, 1, true)
  end)

  it('explains what is missing', function()
    local out, code = ember_cmd(dir, 'sample')
    assert.equal(2, code)
    assert.matches('expected one run folder', out, 1, true)
    out, code = ember_cmd(dir, 'sample nowhere')
    assert.equal(2, code)
    assert.matches('nowhere is not a run folder', out, 1, true)
    os.execute('mkdir -p ' .. q(dir .. '/empty') .. ' && cp ' .. q(dir .. '/r/config.lua') .. ' ' .. q(dir .. '/empty/'))
    out, code = ember_cmd(dir, 'sample empty')
    assert.equal(2, code)
    assert.matches('empty has no checkpoint yet', out, 1, true)
  end)
end)

describe('ember.load_recipe', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  local function write(name, text)
    local f = assert(io.open(dir .. '/' .. name, 'w'))
    f:write(text)
    f:close()
    return dir .. '/' .. name
  end

  it('returns the recipe and its resolved params', function()
    local r, p = recipe.load(TINY, {hidden = 4, 'lr=0.5'})
    assert.equal('tiny', r.name)
    assert.equal(4, p.hidden)
    assert.equal(0.5, p.lr)
    assert.equal('tanh', p.act)
    local state = r.build(p)
    assert.is_function(state.model.forward)
    local r2, p2 = ember.load_recipe(TINY, {hidden = 5})
    assert.equal('tiny', r2.name)
    assert.equal(5, p2.hidden)
  end)

  it('names what is wrong with a recipe', function()
    local function fails(text, message)
      local ok, err = pcall(recipe.load, write('bad.lua', text))
      assert.is_false(ok)
      assert.matches(message, tostring(err), 1, true)
    end
    fails('return {name = "x", train_epoch = function() end}', 'needs a build(params) function')
    fails('return {name = "x", build = function() end}', 'needs train_epoch(state, data, epoch, log) or train_step')
    fails('return {name = "x", build = function() end, train_epoch = function() end, ' ..
          'params = {lr = {default = "a", type = "number"}}}', 'params.lr.default must be a number, got a')
    fails('return {name = "x", build = function() end, train_epoch = function() end, ' ..
          'params = {lr = {default = 1, type = "float"}}}', "params.lr.type must be 'number', 'integer', 'string' or 'boolean', got float")
    fails('return {name = "x", build = function() end, train_epoch = function() end, main_metric = {name = "l"}}',
          "main_metric must be {name = 'metric', goal = 'min' or 'max'}")
    fails('local x = 1', 'must return a table (got nil); a plain script runs with `ember')
    fails('error("boom")', 'raised an error while loading')
    local ok, err = pcall(recipe.load, 42)
    assert.is_false(ok)
    assert.matches('load_recipe: path must be a string, got number', err, 1, true)
    ok, err = pcall(recipe.load, TINY, {nope = 1})
    assert.is_false(ok)
    assert.matches("unknown param 'nope'", tostring(err), 1, true)
  end)

  it('runs a plain script with `ember file.lua`, and `ember run` says it is no recipe', function()
    local path = write('plain.lua', 'print("plain " .. (1 + 1))')
    local out, code = sh(q(EMBER) .. ' ' .. q(path))
    assert.equal(0, code)
    assert.matches('plain 2', out, 1, true)
    out, code = ember_cmd(dir, 'run plain.lua')
    assert.equal(1, code)
    assert.matches('must return a table (got nil); a plain script runs with `ember', out, 1, true)
  end)
end)
