-- Specs for `ember sweep`: planning, the process pool, failures, resuming, summaries,
-- --dry-run, --emit and --collect. They drive the ember program on examples/tiny.lua.
require 'ember' -- registers the ember.* modules
local recipe = require 'ember.recipe'
local h = require 'tests.lua.helpers.common'
local q, sh, read, exists, tmpdir, wait_until = h.q, h.sh, h.read, h.exists, h.tmpdir, h.wait_until

local ROOT = h.ROOT
local EMBER = h.EMBER
local TINY = ROOT .. '/examples/tiny.lua'

-- The run folders of a sweep folder.
local function run_dirs(dir)
  local p = io.popen('ls -1 ' .. q(dir .. '/runs') .. ' 2>/dev/null')
  local out = {}
  for name in p:lines() do out[#out + 1] = name end
  p:close()
  return out
end

-- How many runs of a sweep have finished (result.lua says so).
local function finished_runs(dir)
  local n = 0
  for _, name in ipairs(run_dirs(dir)) do
    local res = recipe.files.read_lua(dir .. '/runs/' .. name .. '/result.lua')
    if type(res) == 'table' and res.status == 'finished' then n = n + 1 end
  end
  return n
end

describe('ember sweep', function()
  local dir
  local function sweep(args) return sh('cd ' .. q(dir) .. ' && ' .. q(EMBER) .. ' sweep ' .. args) end
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('lists the runs with --dry-run and creates nothing', function()
    local out, code = sweep(q(TINY) .. ' --grid hidden=4,8 --grid lr=0.01,0.1 --seeds 2 --jobs 2 --out s --dry-run')
    assert.equal(0, code, out)
    assert.matches('sweep tiny: 4 configuration(s) x 2 seed(s) = 8 runs, 2 at a time', out, 1, true)
    assert.matches('c1%-hidden=4%-lr=0%.01%-seed1%s+new%s+%S+ run ' .. TINY:gsub('%p', '%%%0') ..
                   ' %-%-set hidden=4 %-%-set lr=0%.01 %-%-seed 1 %-%-threads %d+ %-%-out %S+/s/runs/c1%-hidden=4%-lr=0%.01%-seed1', out)
    assert.matches('c4-hidden=8-lr=0.1-seed2', out, 1, true)
    assert.matches('8 to run, 0 finished, 0 failed', out, 1, true)
    assert.is_false(exists(dir .. '/s/sweep.lua'))
  end)

  it('draws the same random configurations every time', function()
    local args = q(TINY) .. " --random 3 'lr=loguniform(0.001,0.1)' 'act=choice(tanh,relu)' 'hidden=uniform(2,9)' --out s --dry-run"
    local a, code = sweep(args)
    assert.equal(0, code, a)
    local b = sweep(args)
    assert.equal(a, b)
    assert.matches('3 configuration(s) x 1 seed(s) = 3 runs', a, 1, true)
    for act, hidden, lr in a:gmatch("%-%-set act=(%a+) %-%-set hidden=(%d+) %-%-set lr=([%d%.e%-]+)") do
      assert.is_true(act == 'tanh' or act == 'relu')
      assert.is_true(tonumber(hidden) >= 2 and tonumber(hidden) <= 9)
      assert.is_true(tonumber(lr) >= 0.001 and tonumber(lr) <= 0.1)
    end
    local c = sweep(args:gsub('%-%-dry%-run', '--sweep-seed 5 --dry-run'))
    assert.are_not.equal(a, c)
  end)

  it('names its default folder after the plan, and explains itself with --help', function()
    local a = sweep(q(TINY) .. ' --grid hidden=4,8 --dry-run')
    local b = sweep(q(TINY) .. ' --grid hidden=4,8 --dry-run')
    local c = sweep(q(TINY) .. ' --grid hidden=4,9 --dry-run')
    local folder = a:match('folder: (%S+)')
    assert.matches('/sweeps/tiny%-%x%x%x%x%x%x%x%x$', folder)
    assert.equal(folder, b:match('folder: (%S+)'))
    assert.are_not.equal(folder, c:match('folder: (%S+)'))
    local out, code = sweep('--help')
    assert.equal(0, code)
    assert.matches('usage: ember sweep RECIPE.lua', out, 1, true)
    assert.matches('name=uniform(a,b) name=loguniform(a,b) name=choice(x,y,...)', out, 1, true)
  end)

  it('rejects bad grids, specs and options with status 2', function()
    local cases = {
      {'--grid hiden=1,2', "unknown param 'hiden' for recipe tiny (valid: act, batch,"},
      {'--grid hidden=1,x', "param 'hidden' expects an integer, got 'x'"},
      {'--grid act=tanh,gelu', "param 'act' must be one of tanh, relu, got 'gelu'"},
      {'--grid hidden', "--grid expects name=v1,v2,..., got 'hidden'"},
      {"--random 2 'lr=normal(0,1)'", "unknown distribution 'normal' (uniform, loguniform, choice)"},
      {"--random 2 'lr=loguniform(0,1)'", 'loguniform(a,b) needs 0 < a <= b'},
      {"--random 2 'act=uniform(0,1)'", "param 'act' is a string; uniform/loguniform need a number or integer param"},
      {"'lr=uniform(0.01,1)'", 'need --random N'},
      {'--grid hidden=1,2 --set hidden=3', "param 'hidden' is both --set and swept"},
      {'--seeds 0', "--seeds expects a count >= 1 or a list like 1,7,42, got '0'"},
      {'--emit pbs', "--emit expects slurm or parallel, got 'pbs'"},
      {'--jobs x', '--jobs expects a whole number >= 1, got x'},
    }
    for _, case in ipairs(cases) do
      local out, code = sweep(q(TINY) .. ' ' .. case[1] .. ' --dry-run')
      assert.equal(2, code, case[1] .. ': ' .. out)
      assert.matches(case[2], out, 1, true)
    end
    local out, code = sweep('--collect nowhere')
    assert.equal(2, code)
    assert.matches('nowhere is not a sweep folder (no sweep.lua)', out, 1, true)
  end)

  it('finishes the other runs when one fails, reports it, and then has nothing to do', function()
    local args = q(TINY) .. ' --grid hidden=4,6,8 --set epochs=2 --set fail_if=6 --seeds 2 --jobs 2 --out s'
    local out, code = sweep(args)
    assert.equal(1, code, out) -- some run failed
    assert.matches('FAILED (exit 1): tiny: failing on purpose (hidden = fail_if = 6)', out, 1, true)
    assert.equal(4, finished_runs(dir .. '/s'))
    local md = read(dir .. '/s/summary.md')
    assert.matches('6 runs: 4 finished, 2 failed, 0 unfinished.', md, 1, true)
    assert.matches('## Failed runs', md, 1, true)
    assert.matches('| c2-hidden=6-seed1 | 1 | tiny: failing on purpose (hidden = fail_if = 6) |', md, 1, true)
    assert.matches('| c2-hidden=6 | 6 | no result | 0/2 |', md, 1, true)
    -- summary.csv ranks configurations by the mean test loss, lowest first
    local header, rows = recipe.files.read_csv(dir .. '/s/summary.csv')
    assert.same({'rank', 'config', 'hidden', 'runs', 'finished', 'failed', 'test_loss_mean', 'test_loss_std',
                 'test_mae_mean', 'test_mae_std'}, header)
    assert.equal(1, rows[1].rank)
    assert.equal(2, rows[2].rank)
    assert.is_true(rows[1].test_loss_mean <= rows[2].test_loss_mean)
    assert.is_true(rows[1].test_loss_std > 0) -- two seeds differ
    assert.is_nil(rows[3].rank)
    assert.equal(2, rows[3].failed)
    -- the mean is the mean of the runs' own final metrics
    local _, runs = recipe.files.read_csv(dir .. '/s/runs.csv')
    local sum, n = 0, 0
    for _, run in ipairs(runs) do
      if run.config == rows[1].config then sum = sum + run.test_loss; n = n + 1 end
    end
    assert.equal(2, n)
    assert.near(sum / 2, rows[1].test_loss_mean, 1e-12)
    -- the other final metrics too: per run in runs.csv, mean ± std per config in both summaries
    local maes = {}
    for _, run in ipairs(runs) do
      if run.config == rows[1].config then maes[#maes + 1] = run.test_mae end
    end
    assert.equal(2, #maes)
    assert.near((maes[1] + maes[2]) / 2, rows[1].test_mae_mean, 1e-12)
    assert.near(math.abs(maes[1] - maes[2]) / math.sqrt(2), rows[1].test_mae_std, 1e-9)
    assert.matches('## Other metrics (mean ± std over the finished seeds)', md, 1, true)
    assert.matches('| rank | config | test_mae |', md, 1, true)
    assert.matches(('| 1 | %s | %.4g ± %.4g |'):format(rows[1].config, rows[1].test_mae_mean, rows[1].test_mae_std), md, 1, true)
    -- the same command again starts nothing
    local stamp = read(dir .. '/s/runs/c1-hidden=4-seed1/output')
    out, code = sweep(args)
    assert.matches('nothing to do: all 6 runs finished (2 failed; --retry-failed runs them again)', out, 1, true)
    assert.equal(stamp, read(dir .. '/s/runs/c1-hidden=4-seed1/output'))
    -- --retry-failed: listed as retries by --dry-run (which leaves the folders alone), then run again
    out = sweep(args .. ' --retry-failed --dry-run')
    assert.matches('c2%-hidden=6%-seed1%s+retry%s+%S+ run ', out)
    assert.matches('2 to run, 4 finished, 0 failed', out, 1, true)
    assert.is_true(exists(dir .. '/s/runs/c2-hidden=6-seed1/result.lua'))
    out, code = sweep(args .. ' --retry-failed')
    assert.equal(1, code)
    assert.matches('skipping 4 finished and 0 failed run(s); 2 to run', out, 1, true)
    assert.matches('FAILED (exit 1): tiny: failing on purpose', out, 1, true)
    -- and a different sweep into the same folder is refused
    out, code = sweep(q(TINY) .. ' --grid hidden=4,5 --out s')
    assert.equal(2, code)
    assert.matches('holds a different sweep', out, 1, true)
  end)

  it('finishes only what is left after the driver and its runs are killed', function()
    local args = q(TINY) .. ' --grid hidden=3,4,5,6 --set epochs=3 --set slow=0.015 --jobs 2 --out s'
    -- its own session, so that one kill reaches the driver and every run it started
    assert(os.execute('cd ' .. q(dir) .. ' && setsid ' .. q(EMBER) .. ' sweep ' .. args ..
                      ' > first.out 2>&1 & echo $! > ' .. q(dir .. '/driver')))
    local driver = tonumber(read(dir .. '/driver'))
    -- the runs that are part-way: a checkpoint, no result
    local function partial()
      local list = {}
      for _, name in ipairs(run_dirs(dir .. '/s')) do
        local d = dir .. '/s/runs/' .. name
        if exists(d .. '/checkpoint') and not exists(d .. '/result.lua') then list[#list + 1] = name end
      end
      return list
    end
    assert.is_true(wait_until(function() return finished_runs(dir .. '/s') >= 1 and #partial() >= 1 end),
                   tostring(read(dir .. '/first.out')))
    os.execute('kill -KILL -' .. driver) -- the whole process group
    os.execute('sleep 0.2')
    local done, cut = finished_runs(dir .. '/s'), partial()
    assert.is_true(done >= 1 and done < 4, 'finished before the kill: ' .. done)
    local kept = {}
    for _, name in ipairs(run_dirs(dir .. '/s')) do kept[name] = read(dir .. '/s/runs/' .. name .. '/result.lua') end
    local out, code = sweep(args)
    assert.equal(0, code, out)
    assert.matches(string.format('skipping %d finished and 0 failed run(s); %d to run', done, 4 - done), out, 1, true)
    assert.equal(4, finished_runs(dir .. '/s'))
    for name, result in pairs(kept) do
      if result then -- finished before: untouched
        assert.equal(result, read(dir .. '/s/runs/' .. name .. '/result.lua'))
      end
    end
    for _, name in ipairs(cut) do -- part-way: continued from the checkpoint
      assert.matches('continuing after', read(dir .. '/s/runs/' .. name .. '/log'), 1, true)
    end
    out = sweep(args)
    assert.matches('nothing to do: all 4 runs finished', out, 1, true)
  end)

  -- Starts a slow 2-run sweep (its own session: setsid), interrupts it with
  -- `kill -INT target(pid)` once both runs are under way, and checks that each run saved a
  -- checkpoint and that the same command then finishes them. The runs have 8 epochs of
  -- ~0.2 s and are interrupted after their second: with 3 epochs a loaded machine let a
  -- run finish before the forwarded interrupt reached it (seen under the sanitizer).
  local function interrupt_sweep(target)
    local args = q(TINY) .. ' --grid hidden=3,4 --set epochs=8 --set slow=0.02 --jobs 2 --out s'
    -- io.popen, not `&`: a shell's background job would ignore SIGINT
    local h = io.popen('cd ' .. q(dir) .. ' && exec setsid ' .. q(EMBER) .. ' sweep ' .. args .. ' > first.out 2>&1')
    assert.is_true(wait_until(function()
      local m1 = read(dir .. '/s/runs/c1-hidden=3-seed1/metrics.csv') or ''
      local m2 = read(dir .. '/s/runs/c2-hidden=4-seed1/metrics.csv') or ''
      return read(dir .. '/s/driver.pid') and select(2, m1:gsub('\n', '')) >= 3 and select(2, m2:gsub('\n', '')) >= 3
    end), tostring(read(dir .. '/first.out')))
    local driver = tonumber(read(dir .. '/s/driver.pid'))
    os.execute('kill -INT ' .. target(driver))
    local _, _, code = h:close()
    local said = read(dir .. '/first.out')
    assert.equal(130, code, said)
    assert.matches('interrupted: stopping 2 running run(s); each saves a checkpoint', said, 1, true)
    assert.matches('Re-run the same command to finish the rest.', said, 1, true)
    for _, name in ipairs{'c1-hidden=3-seed1', 'c2-hidden=4-seed1'} do
      local res = recipe.files.read_lua(dir .. '/s/runs/' .. name .. '/result.lua')
      assert.equal('interrupted', res.status, name .. ': ' .. tostring(read(dir .. '/s/runs/' .. name .. '/output')))
      assert.equal('130', read(dir .. '/s/runs/' .. name .. '/exit'):match('%d+'))
    end
    local out
    out, code = sweep(args)
    assert.equal(0, code, out)
    assert.equal(2, finished_runs(dir .. '/s'))
    assert.matches('resuming', read(dir .. '/s/runs/c1-hidden=3-seed1/log'), 1, true)
  end

  it('passes a Ctrl-C sent to the driver alone on to its runs', function()
    interrupt_sweep(function(pid) return tostring(pid) end)
  end)

  it('stops cleanly on a Ctrl-C that reaches the whole process group (a terminal)', function()
    interrupt_sweep(function(pid) return '-' .. pid end)
  end)

  it('writes a Slurm array and a GNU parallel job list running the same commands, and collects', function()
    local out, code = sweep(q(TINY) .. ' --grid hidden=4,5 --set epochs=1 --jobs 2 --threads 1 --out s --emit slurm')
    assert.equal(0, code, out)
    assert.matches('sbatch ' .. dir .. '/s/sweep.sbatch', out, 1, true)
    local sbatch = read(dir .. '/s/sweep.sbatch')
    assert.matches('#SBATCH --array=1-2%2', sbatch, 1, true)
    assert.matches('#SBATCH --cpus-per-task=1', sbatch, 1, true)
    local jobs = read(dir .. '/s/jobs.txt')
    local lines = {}
    for line in jobs:gmatch('[^\n]+') do lines[#lines + 1] = line end
    assert.equal(2, #lines)
    assert.matches(' run ' .. TINY .. ' --set epochs=1 --set hidden=4 --seed 1 --threads 1 --out ' ..
                   dir .. '/s/runs/c1-hidden=4-seed1 >>', lines[1], 1, true)
    out, code = sweep(q(TINY) .. ' --grid hidden=4,5 --set epochs=1 --jobs 2 --threads 1 --out s --emit parallel')
    assert.equal(0, code, out)
    assert.matches('parallel --jobs 2 < ' .. dir .. '/s/jobs.txt', out, 1, true)
    assert.equal(jobs, read(dir .. '/s/jobs.txt'))
    -- run the lines as a scheduler would, then collect
    for _, line in ipairs(lines) do
      local _, c = sh('sh -c ' .. q(line))
      assert.equal(0, c)
    end
    out, code = sweep('--collect s')
    assert.equal(0, code, out)
    assert.matches('2 runs: 2 finished, 0 failed, 0 unfinished', out, 1, true)
    assert.matches('| 1 | c', read(dir .. '/s/summary.md'), 1, true)
    -- finished runs drop out of a new job list
    out = sweep(q(TINY) .. ' --grid hidden=4,5 --set epochs=1 --jobs 2 --threads 1 --out s --emit parallel')
    assert.matches('nothing to do: all 2 runs finished', out, 1, true)
    assert.equal('', read(dir .. '/s/jobs.txt'))
  end)
end)
