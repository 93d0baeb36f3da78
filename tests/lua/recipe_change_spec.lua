-- Specs for the rule on a recipe edited between an interrupted run and going on with it:
-- `ember run --resume`, `ember sample` and a re-run `ember sweep` refuse, naming the file,
-- its first changed line and the kept original; --allow-changed-recipe goes on with a
-- loud warning and records the edit (the original kept as recipe.lua.orig-<n>).
local ember = require 'ember'
local recipe = require 'ember.recipe'
local h = require 'tests.lua.helpers.common'
local q, sh, read, exists, tmpdir, wait_until = h.q, h.sh, h.read, h.exists, h.tmpdir, h.wait_until

local EMBER = h.EMBER
local TINY = h.ROOT .. '/examples/tiny.lua'

-- Runs `ember ARGS` in directory dir.
local function ember_cmd(dir, args) return sh('cd ' .. q(dir) .. ' && ' .. q(EMBER) .. ' ' .. args) end

-- Number of data rows in a CSV file.
local function csv_rows(path)
  local n = -1
  for _ in (read(path) or ''):gmatch('[^\n]+') do n = n + 1 end
  return math.max(n, 0)
end

local function pid_of(run_dir)
  local s = read(run_dir .. '/pid')
  return s and tonumber(s:match('%d+'))
end

local function write(path, text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end

-- The edit: tiny's help line of fail_if (line 24), harmless to the run itself.
local function edit(path)
  local text = read(path)
  local edited, n = text:gsub('fails when hidden equals this', 'fails when hidden equals that')
  assert(n == 1, 'the edit did not apply')
  write(path, edited)
  return text, edited
end

describe('an edited recipe', function()
  local dir
  before_each(function()
    dir = tmpdir()
    write(dir .. '/tiny.lua', read(TINY))
  end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('stops `ember run --resume` after Ctrl-C; restoring the original resumes bit for bit', function()
    local args = 'tiny.lua --set epochs=3 --set slow=0.01 --threads 1'
    local out, code = ember_cmd(dir, 'run ' .. args .. ' --out straight')
    assert.equal(0, code, out)
    local run = io.popen('cd ' .. q(dir) .. ' && exec ' .. q(EMBER) .. ' run ' .. args .. ' --out stopped > run.out 2>&1', 'r')
    assert.is_true(wait_until(function()
      return pid_of(dir .. '/stopped') and csv_rows(dir .. '/stopped/metrics.csv') >= 5
    end), tostring(read(dir .. '/run.out')))
    os.execute('kill -INT ' .. pid_of(dir .. '/stopped'))
    local _, _, status = run:close()
    assert.equal(130, status, read(dir .. '/run.out'))
    local checkpoint = read(dir .. '/stopped/checkpoint')
    local original = edit(dir .. '/tiny.lua')

    out, code = ember_cmd(dir, 'run --resume stopped')
    assert.equal(2, code, out)
    assert.matches('ember run: recipe ' .. dir .. '/tiny.lua changed since run stopped started ' ..
                   "(first difference at line 24: was `...lp = 'for tests: build() fails when hidden equals this'},`, " ..
                   "now `...lp = 'for tests: build() fails when hidden equals that'},`); " ..
                   'the run folder keeps the original as stopped/recipe.lua.', out, 1, true)
    assert.matches('Either restore the original (cp stopped/recipe.lua ' .. dir .. '/tiny.lua) and resume, or ' ..
                   'accept the edit with `ember run --resume stopped --allow-changed-recipe`', out, 1, true)
    -- nothing moved: the run is as the interrupt left it
    assert.equal('interrupted', recipe.files.read_lua(dir .. '/stopped/result.lua').status)
    assert.equal(checkpoint, read(dir .. '/stopped/checkpoint'))
    assert.equal(original, read(dir .. '/stopped/recipe.lua'))
    assert.is_false(exists(dir .. '/stopped/recipe.lua.orig-1'))

    os.execute('cp ' .. q(dir .. '/stopped/recipe.lua') .. ' ' .. q(dir .. '/tiny.lua'))
    out, code = ember_cmd(dir, 'run --resume stopped')
    assert.equal(0, code, out)
    assert.equal(read(dir .. '/straight/metrics.csv'), read(dir .. '/stopped/metrics.csv'))
  end)

  it('goes on with --resume --allow-changed-recipe: a warning, the edit recorded, the original kept', function()
    local out, code = ember_cmd(dir, 'run tiny.lua --set epochs=3 --threads 1 --out r')
    assert.equal(0, code, out)
    -- a partial run: as if stopped after epoch 3 of 3 before saying so; resume has work left
    os.remove(dir .. '/r/result.lua')
    local original, edited = edit(dir .. '/tiny.lua')
    out, code = ember_cmd(dir, 'run --resume r --allow-changed-recipe')
    assert.equal(0, code, out)
    assert.matches('WARNING: resuming with an edited recipe (--allow-changed-recipe): recipe ' .. dir ..
                   '/tiny.lua changed since run r started (first difference at line 24', out, 1, true)
    assert.matches('r/recipe.lua is now the edited recipe, the original is kept as r/recipe.lua.orig-1', out, 1, true)
    assert.equal(edited, read(dir .. '/r/recipe.lua'))
    assert.equal(original, read(dir .. '/r/recipe.lua.orig-1'))
    assert.matches('WARNING: resuming with an edited recipe', read(dir .. '/r/log'), 1, true)
    local cfg = recipe.files.read_lua(dir .. '/r/config.lua')
    assert.equal(1, #cfg.recipe_changes)
    assert.equal('recipe.lua.orig-1', cfg.recipe_changes[1].kept)
    assert.equal(24, cfg.recipe_changes[1].line)
    assert.equal(3, cfg.recipe_changes[1].epoch)
    assert.equal(24, cfg.recipe_changes[1].step)
    assert.equal('finished', recipe.files.read_lua(dir .. '/r/result.lua').status)
    -- the run folder now holds the edit, so the edited file resumes without the flag; a
    -- second edit keeps the first edit as orig-2
    os.remove(dir .. '/r/result.lua')
    out, code = ember_cmd(dir, 'run --resume r')
    assert.equal(0, code, out)
    write(dir .. '/tiny.lua', edited .. '-- one more line\n')
    os.remove(dir .. '/r/result.lua')
    out, code = ember_cmd(dir, 'run --resume r')
    assert.equal(2, code, out)
    assert.matches('(first difference at line ', out, 1, true)
    assert.matches('now `-- one more line`', out, 1, true)
    out, code = ember_cmd(dir, 'run --resume r --allow-changed-recipe')
    assert.equal(0, code, out)
    assert.equal(edited, read(dir .. '/r/recipe.lua.orig-2'))
    assert.equal(2, #recipe.files.read_lua(dir .. '/r/config.lua').recipe_changes)
    -- the flag means nothing for a new run
    out, code = ember_cmd(dir, 'run tiny.lua --allow-changed-recipe --out other')
    assert.equal(2, code, out)
    assert.matches('--allow-changed-recipe goes with --resume DIR', out, 1, true)
    -- and an unchanged recipe resumes with it as without it, recording nothing
    os.remove(dir .. '/r/result.lua')
    out, code = ember_cmd(dir, 'run --resume r --allow-changed-recipe')
    assert.equal(0, code, out)
    assert.is_nil(out:find('WARNING', 1, true))
    assert.equal(2, #recipe.files.read_lua(dir .. '/r/config.lua').recipe_changes)
  end)

  it('stops `ember sample`, which with --allow-changed-recipe samples, warns and notes it in the log', function()
    local out, code = ember_cmd(dir, 'run tiny.lua --set epochs=1 --out r')
    assert.equal(0, code, out)
    local original = edit(dir .. '/tiny.lua')
    out, code = ember_cmd(dir, 'sample r --out pic.png')
    assert.equal(2, code, out)
    assert.matches('ember sample: recipe ' .. dir .. '/tiny.lua changed since run r started (first difference ' ..
                   'at line 24', out, 1, true)
    assert.matches('the run folder keeps the original as r/recipe.lua.', out, 1, true)
    assert.matches('`ember sample r --allow-changed-recipe`', out, 1, true)
    assert.is_false(exists(dir .. '/pic.png'))
    out, code = ember_cmd(dir, 'sample r --out pic.png --allow-changed-recipe')
    assert.equal(0, code, out)
    assert.matches('WARNING: sampling with an edited recipe (--allow-changed-recipe)', out, 1, true)
    assert.is_true(exists(dir .. '/pic.png'))
    assert.matches('ember sample: WARNING: sampling with an edited recipe', read(dir .. '/r/log'), 1, true)
    -- the run's recipe stays the one its checkpoint was trained with
    assert.equal(original, read(dir .. '/r/recipe.lua'))
    assert.is_false(exists(dir .. '/r/recipe.lua.orig-1'))
    -- loading the run in the REPL or a script goes on, with a warning
    out, code = ember_cmd(dir, [[-e "local r = require('ember.recipe').load_run('r') print('loaded', r.name)"]])
    assert.equal(0, code, out)
    assert.matches('warning: loading with the edited recipe: recipe ' .. dir .. '/tiny.lua changed since run r ' ..
                   'started (first difference at line 24', out, 1, true)
    assert.matches('loaded\ttiny', out, 1, true)
  end)

  it('stops a re-run `ember sweep` after Ctrl-C; --allow-changed-recipe passes the acceptance on', function()
    local args = 'tiny.lua --grid hidden=3,4 --set epochs=3 --set slow=0.04 --jobs 1 --out s'
    -- its own session (setsid); io.popen, not `&`, so that SIGINT reaches it
    local driver = io.popen('cd ' .. q(dir) .. ' && exec setsid ' .. q(EMBER) .. ' sweep ' .. args .. ' > first.out 2>&1')
    local first = dir .. '/s/runs/c1-hidden=3-seed1'
    assert.is_true(wait_until(function()
      return read(dir .. '/s/driver.pid') and csv_rows(first .. '/metrics.csv') >= 3
    end), tostring(read(dir .. '/first.out')))
    os.execute('kill -INT ' .. tonumber(read(dir .. '/s/driver.pid')))
    local _, _, status = driver:close()
    assert.equal(130, status, read(dir .. '/first.out'))
    assert.equal('interrupted', recipe.files.read_lua(first .. '/result.lua').status)
    local original, edited = edit(dir .. '/tiny.lua')
    assert.equal(original, read(dir .. '/s/recipe.lua')) -- the sweep keeps its own copy

    local out, code = ember_cmd(dir, 'sweep ' .. args)
    assert.equal(2, code, out)
    assert.matches('ember sweep: recipe ' .. dir .. '/tiny.lua changed since sweep ' .. dir .. '/s started ' ..
                   '(first difference at line 24', out, 1, true)
    assert.matches('the sweep folder keeps the original as ' .. dir .. '/s/recipe.lua.', out, 1, true)
    assert.matches('Going on would resume 1 interrupted and start 1 new run(s) with the edited recipe, next to 0 ' ..
                   'finished with the original', out, 1, true)
    assert.matches('running the same command with --allow-changed-recipe', out, 1, true)
    assert.is_false(exists(dir .. '/s/runs/c2-hidden=4-seed1/config.lua')) -- nothing started
    assert.equal('interrupted', recipe.files.read_lua(first .. '/result.lua').status)
    -- --dry-run shows the same refusal, and with the flag the commands that would run
    out, code = ember_cmd(dir, 'sweep ' .. args .. ' --dry-run')
    assert.equal(2, code, out)
    out, code = ember_cmd(dir, 'sweep ' .. args .. ' --dry-run --allow-changed-recipe')
    assert.equal(0, code, out)
    assert.matches('run --resume ' .. first .. ' --allow-changed-recipe', out, 1, true)
    assert.equal(original, read(dir .. '/s/recipe.lua'))

    out, code = ember_cmd(dir, 'sweep ' .. args .. ' --allow-changed-recipe')
    assert.equal(0, code, out)
    assert.matches('WARNING: going on with an edited recipe (--allow-changed-recipe)', out, 1, true)
    assert.equal(edited, read(dir .. '/s/recipe.lua'))
    assert.equal(original, read(dir .. '/s/recipe.lua.orig-1'))
    local plan = recipe.files.read_lua(dir .. '/s/sweep.lua')
    assert.equal(1, #plan.recipe_changes)
    assert.equal(1, plan.recipe_changes[1].resumed)
    assert.equal(1, plan.recipe_changes[1].new)
    -- the interrupted run resumed with the flag and recorded the edit itself
    assert.equal('finished', recipe.files.read_lua(first .. '/result.lua').status)
    assert.matches('WARNING: resuming with an edited recipe', read(first .. '/log'), 1, true)
    assert.equal(original, read(first .. '/recipe.lua.orig-1'))
    assert.equal(edited, read(first .. '/recipe.lua'))
    assert.equal(edited, read(dir .. '/s/runs/c2-hidden=4-seed1/recipe.lua'))
    -- all finished: nothing to do, even after another edit
    write(dir .. '/tiny.lua', edited .. '-- later\n')
    out, code = ember_cmd(dir, 'sweep ' .. args)
    assert.equal(0, code, out)
    assert.matches('nothing to do: all 2 runs finished', out, 1, true)
  end)
end)
