-- ember.cli — the `ember run | sample | sweep` commands. The ember host program calls
-- require('ember.cli').main(command, args) and exits with the status it returns:
-- 0 done, 1 a run failed, 2 a bad command line, 130 interrupted (Ctrl-C).
local recipe = require 'ember.recipe'

local M = {}

local USAGE = {
  run = [[
usage: ember run RECIPE.lua [--preset NAME] [--set name=value]... [--out DIR] [--seed N]
                 [--threads N] [--nproc N]
       ember run --resume DIR [--allow-changed-recipe]
       ember run --help RECIPE.lua      (lists the recipe's presets and params)

Trains a recipe and leaves a run folder DIR (default runs/<name>-<time>) holding
config.lua, metrics.csv, log, checkpoint, result.lua, recipe.lua (a copy) and samples/.
  --preset NAME      start from one of the recipe's named param sets (see --help RECIPE.lua);
                     --set values apply on top; config.lua records the name
  --set name=value   override a param (repeatable); checked against the recipe's type,
                     choices and range (min/max)
  --out DIR          the run folder (must not hold a run already)
  --seed N           seed of the random generator (default 1)
  --threads N        threads for this run (default: ember's default; with --nproc, per
                     rank: the cores divided among the ranks)
  --nproc N          data-parallel over N processes on this machine (starts mpirun; the
                     same as `mpirun -n N ember run ...`): each takes its share of every
                     batch, gradients are averaged before each optimizer step, rank 0
                     writes the run folder
  --resume DIR       continue an interrupted run exactly where its checkpoint stopped;
                     refused when the recipe file changed since the run started
  --allow-changed-recipe
                     with --resume: go on with the edited recipe anyway (a loud warning; the
                     edit becomes DIR/recipe.lua, the original is kept as
                     DIR/recipe.lua.orig-<n>, and config.lua records the change)
Ctrl-C, or SIGTERM (kill, a cluster job's time limit), saves a checkpoint and exits
with status 130.]],
  sample = [[
usage: ember sample DIR [--n N] [--out PATH] [--seed N] [--threads N] [--allow-changed-recipe]

Draws new samples from a finished or interrupted run with the recipe's sample function.
  --n N        how many samples (default: the run's n_samples param, else 64)
  --out PATH   a folder, or a file name (e.g. grid.png) when the recipe writes one picture;
               default DIR/samples/<time>/
  --seed N     seed for the samples (default: the clock)
  --threads N  threads for sampling (default: the run's)
  --allow-changed-recipe
               sample even though the recipe file changed since the run started (refused
               otherwise); a warning, noted in DIR/log; DIR/recipe.lua stays as trained]],
  sweep = [[
usage: ember sweep RECIPE.lua [--grid name=v1,v2,...]... [--random N name=DIST...]
                   [--preset NAME] [--set name=value]... [--seeds S] [--jobs J] [--threads T]
                   [--nproc N] [--out DIR] [--dry-run] [--emit slurm|parallel] [--retry-failed]
                   [--allow-changed-recipe]
       ember sweep --collect DIR

Runs every configuration as its own `ember run` process, J at a time, into DIR/runs/<id>,
then ranks them by the recipe's main metric in DIR/summary.md and DIR/summary.csv.
  --grid name=v1,v2  the values of one param; several --grid flags multiply
  --random N         N random configurations drawn from the DIST specs that follow:
                     name=uniform(a,b) name=loguniform(a,b) name=choice(x,y,...)
  --preset NAME      every run starts from this preset of the recipe (--set and the swept
                     values apply on top)
  --set name=value   a fixed override for every run
  --seeds S          runs per configuration with seeds 1..S, or a list 1,7,42 (default 1)
  --jobs J           runs at a time (default 1); threads per run = cores / J
  --threads T        threads per run (default: cores / J, at least 1)
  --nproc N          each run data-parallel over N ranks (ember run --nproc N; with
                     --emit slurm, N tasks per array task); threads are then per rank
  --out DIR          the sweep folder (default sweeps/<name>-<hash of the plan>)
  --dry-run          list the runs and what would happen to each; run nothing
  --emit slurm       write DIR/sweep.sbatch (a Slurm job array over DIR/jobs.txt)
  --emit parallel    write DIR/jobs.txt for GNU parallel
  --retry-failed     run failed runs again (by default they are kept as failed)
  --collect DIR      build the summary from the run folders in DIR
  --allow-changed-recipe
                     go on although the recipe file changed since the sweep started
                     (refused otherwise): interrupted runs resume with the edit (each with
                     `ember run --resume --allow-changed-recipe`), new runs start with it;
                     DIR/recipe.lua becomes the edit, the original is kept as recipe.lua.orig-<n>
Re-running the same command skips finished runs and resumes interrupted ones.]],
}

-- Option kinds: 'value' takes the next argument (or --opt=value), 'list' may repeat,
-- 'flag' takes none, 'integer' is a value that must be a whole number >= 1.
local OPTIONS = {
  run = {['--set'] = 'list', ['--preset'] = 'value', ['--out'] = 'value', ['--seed'] = 'integer0',
         ['--threads'] = 'integer', ['--resume'] = 'value', ['--allow-changed-recipe'] = 'flag',
         ['--nproc'] = 'integer',
         ['--help'] = 'flag', ['-h'] = 'flag'},
  sample = {['--n'] = 'integer', ['--out'] = 'value', ['--seed'] = 'integer0', ['--threads'] = 'integer',
            ['--allow-changed-recipe'] = 'flag', ['--help'] = 'flag', ['-h'] = 'flag'},
  sweep = {['--grid'] = 'list', ['--random'] = 'integer', ['--set'] = 'list', ['--preset'] = 'value',
           ['--seeds'] = 'value',
           ['--jobs'] = 'integer', ['--threads'] = 'integer', ['--out'] = 'value', ['--nproc'] = 'integer',
           ['--dry-run'] = 'flag', ['--emit'] = 'value', ['--collect'] = 'value',
           ['--retry-failed'] = 'flag', ['--sweep-seed'] = 'integer0', ['--allow-changed-recipe'] = 'flag',
           ['--help'] = 'flag',
           ['-h'] = 'flag'},
}

--- parse(command, args) -> opts (option name without dashes -> value or list), positionals.
--- Raises a UsageError for an unknown option, a missing or bad value.
function M.parse(command, args)
  local spec = OPTIONS[command]
  local opts, positional = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, inline = a:match('^(%-%-?[%w%-]+)=(.*)$')
    name = name or a
    local kind = a:sub(1, 1) == '-' and a ~= '-' and spec[name]
    if a:sub(1, 1) == '-' and a ~= '-' and not kind then
      recipe.usage_error("unknown option '%s' (see ember %s --help)", name, command)
    end
    if not kind then
      positional[#positional + 1] = a
    else
      local key = name:gsub('^%-+', ''):gsub('%-', '_')
      if key == 'h' then key = 'help' end
      if kind == 'flag' then
        if inline then recipe.usage_error('%s takes no value', name) end
        opts[key] = true
      else
        local value = inline
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then recipe.usage_error('%s needs a value', name) end
        end
        if kind == 'integer' or kind == 'integer0' then
          local n = math.tointeger(tonumber(value))
          local min = kind == 'integer' and 1 or 0
          if not n or n < min then
            recipe.usage_error('%s expects a whole number >= %d, got %s', name, min, value)
          end
          value = n
        end
        if kind == 'list' then
          opts[key] = opts[key] or {}
          table.insert(opts[key], value)
        else
          opts[key] = value
        end
      end
    end
    i = i + 1
  end
  return opts, positional
end

-- `ember run ... --nproc N`: the same command under mpirun with N ranks (threads split
-- between them unless --threads says otherwise). Returns mpirun's exit status.
local function run_under_mpirun(args, n, opts, recipe_file)
  local files = recipe.files
  if require('ember.dist').launched() then
    recipe.usage_error('--nproc starts the ranks itself; under mpirun or srun, drop it')
  end
  if not os.execute('command -v mpirun >/dev/null 2>&1') then
    recipe.usage_error('--nproc needs mpirun (Debian package openmpi-bin; `make deps` installs it)')
  end
  local rest, i = {}, 1
  while i <= #args do -- the arguments without --nproc
    local a = args[i]
    if a == '--nproc' then i = i + 1
    elseif not a:match('^%-%-nproc=') then rest[#rest + 1] = files.quote(a) end
    i = i + 1
  end
  if not opts.threads and not opts.resume then
    rest[#rest + 1] = '--threads ' .. math.max(1, files.cores() // n)
  end
  -- the run folder, chosen here so that this process can read how the run ended
  local dir = opts.resume or opts.out
  if not dir then
    dir = recipe.default_run_dir(recipe.load(recipe_file).name)
    rest[#rest + 1] = '--out ' .. files.quote(dir)
  end
  local cmd = {'mpirun', '-n', tostring(n), '--oversubscribe', '--bind-to', 'none'}
  if files.command_output('id -u') == '0' then cmd[#cmd + 1] = '--allow-run-as-root' end
  if os.getenv('EMBER_DIST_TIMEOUT') then cmd[#cmd + 1] = '-x EMBER_DIST_TIMEOUT' end -- to remote ranks too
  cmd[#cmd + 1] = files.quote(recipe.ember_bin())
  cmd[#cmd + 1] = 'run'
  local ok, how, code = os.execute(table.concat(cmd, ' ') .. ' ' .. table.concat(rest, ' '))
  -- mpirun reports any rank's non-zero status as 1; the leader's result.lua says which
  local res = files.read_lua(dir:gsub('/+$', '') .. '/result.lua')
  local status = type(res) == 'table' and res.status
  if status == 'interrupted' then return 130 end
  if status == 'finished' and ok then return 0 end
  if how == 'signal' then return 128 + code end
  if ok then return 0 end
  return code ~= 0 and code or 1
end

-- `ember run ...`
local function cmd_run(args)
  local opts, pos = M.parse('run', args)
  if opts.help then
    print(USAGE.run)
    if pos[1] then
      local r = recipe.load(pos[1])
      print('')
      print(recipe.help_text(r))
    end
    return 0
  end
  if opts.resume and pos[1] then
    recipe.usage_error('--resume DIR takes no recipe (the run folder knows it)')
  end
  if #pos > 1 then recipe.usage_error("unexpected argument '%s' (see ember run --help)", pos[2]) end
  if not opts.resume and not pos[1] then
    recipe.usage_error('missing the recipe file (see ember run --help)')
  end
  if opts.nproc then return run_under_mpirun(args, opts.nproc, opts, pos[1]) end
  return recipe.run{recipe = pos[1], sets = opts.set, preset = opts.preset, out = opts.out, seed = opts.seed,
                    threads = opts.threads, resume = opts.resume,
                    allow_changed_recipe = opts.allow_changed_recipe}
end

-- `ember sample DIR ...`
local function cmd_sample(args)
  local opts, pos = M.parse('sample', args)
  if opts.help then print(USAGE.sample) return 0 end
  if #pos ~= 1 then recipe.usage_error('expected one run folder (see ember sample --help)') end
  return recipe.sample{dir = pos[1], n = opts.n, out = opts.out, seed = opts.seed, threads = opts.threads,
                       allow_changed_recipe = opts.allow_changed_recipe}
end

-- `ember sweep ...`
local function cmd_sweep(args)
  local opts, pos = M.parse('sweep', args)
  if opts.help then print(USAGE.sweep) return 0 end
  return require('ember.sweep').main(opts, pos)
end

local COMMANDS = {run = cmd_run, sample = cmd_sample, sweep = cmd_sweep}

--- main(command, args) -> exit status: runs `ember <command> args...`.
function M.main(command, args)
  local fn = COMMANDS[command]
  if not fn then
    io.stderr:write(string.format('ember: unknown command %s (run, sample or sweep)\n', tostring(command)))
    return 2
  end
  local ok, res = pcall(fn, args or {})
  if ok then return math.tointeger(res) or 0 end
  if recipe.is_usage_error(res) then
    io.stderr:write(string.format('ember %s: %s\n', command, res.msg))
    return 2
  end
  if res == 'interrupted' then
    io.stderr:write(string.format('ember %s: interrupted\n', command))
    return 130
  end
  io.stderr:write(string.format('ember %s: %s\n', command, tostring(res)))
  return 1
end

return M
