-- ember.sweep — `ember sweep`: many runs of one recipe, J at a time, each in its own
-- `ember run` process, then a ranked summary.
--
-- A sweep folder DIR holds sweep.lua (the plan: recipe, fixed --set values, every run's
-- id, seed and params), recipe.lua (a copy of the recipe: going on after the recipe file
-- changed is refused unless --allow-changed-recipe), jobs.txt (one shell line per unfinished run), runs/<id>/ (each
-- an ordinary run folder plus `output` (what the process printed) and `exit` (its exit
-- status)), summary.md, summary.csv (configurations ranked by the main metric, mean and
-- std over seeds, and the same for every other final metric), runs.csv (one row per run,
-- each final metric a column) and plots/.
local ember = require 'ember'
local recipe = require 'ember.recipe'

local files = recipe.files
local usage_error = recipe.usage_error

local M = {}

-- ---------------------------------------------------------------------------------
-- The plan: configurations x seeds
-- ---------------------------------------------------------------------------------

-- Formats a param value the way --set reads it back exactly.
local function value_text(v)
  if type(v) == 'number' then return files.number(v) end
  return tostring(v)
end

-- A short, file-name-safe form of a value for run ids.
local function id_text(v)
  if math.type(v) == 'float' then
    local s = string.format('%.4g', v)
    return s
  end
  return (tostring(v):gsub('[^%w%.%-_]', '_'))
end

-- Parses --seeds: "3" -> {1, 2, 3}; "1,7,42" -> {1, 7, 42}.
local function parse_seeds(text)
  if text == nil then return {1} end
  local seeds = {}
  if text:find(',') then
    for s in text:gmatch('[^,]+') do
      local n = math.tointeger(tonumber(s))
      if not n or n < 0 then usage_error("--seeds: '%s' is not a seed (whole number >= 0)", s) end
      seeds[#seeds + 1] = n
    end
  else
    local n = math.tointeger(tonumber(text))
    if not n or n < 1 then usage_error("--seeds expects a count >= 1 or a list like 1,7,42, got '%s'", text) end
    for i = 1, n do seeds[i] = i end
  end
  return seeds
end

-- Parses one --grid name=v1,v2,... into name, {values}.
local function parse_grid(r, text)
  local key, list = text:match('^([^=]+)=(.+)$')
  if not key then usage_error("--grid expects name=v1,v2,..., got '%s'", text) end
  local values = {}
  for item in list:gmatch('[^,]+') do values[#values + 1] = recipe.parse_value(r, key, item, '--grid ' .. text) end
  return key, values
end

-- Parses a random spec name=uniform(a,b) | loguniform(a,b) | choice(x,y,...) into
-- {key, kind, args}.
local function parse_random_spec(r, text)
  local key, kind, inner = text:match('^([^=]+)=(%a+)%((.*)%)$')
  if not key then
    usage_error("random spec '%s' must look like name=uniform(a,b), name=loguniform(a,b) or name=choice(x,y)", text)
  end
  if not r.params[key] then recipe.parse_value(r, key, '') end -- raises "unknown param"
  local spec = r.params[key]
  local args = {}
  for item in inner:gmatch('[^,]+') do args[#args + 1] = item:match('^%s*(.-)%s*$') end
  if kind == 'choice' then
    if #args == 0 then usage_error("%s: choice() needs at least one value", text) end
    for i, a in ipairs(args) do args[i] = recipe.parse_value(r, key, a, text) end
  elseif kind == 'uniform' or kind == 'loguniform' then
    if spec.type ~= 'number' and spec.type ~= 'integer' then
      usage_error("%s: param '%s' is a %s; uniform/loguniform need a number or integer param", text, key, spec.type)
    end
    local a, b = tonumber(args[1]), tonumber(args[2])
    if #args ~= 2 or not a or not b or a > b then
      usage_error("%s: %s(a,b) needs two numbers a <= b", text, kind)
    end
    if kind == 'loguniform' and a <= 0 then usage_error("%s: loguniform(a,b) needs 0 < a <= b", text) end
    recipe.check_range(r, key, a, text) -- every draw lies within [a, b]: both ends must fit
    recipe.check_range(r, key, b, text)
    args = {a, b}
  else
    usage_error("random spec '%s': unknown distribution '%s' (uniform, loguniform, choice)", text, kind)
  end
  return {key = key, kind = kind, args = args, type = spec.type}
end

-- Draws one value from a random spec with Lua's generator (seeded by --sweep-seed, so
-- the same command always draws the same configurations).
local function draw(spec)
  local v
  if spec.kind == 'choice' then
    v = spec.args[math.random(#spec.args)]
  else
    local a, b = spec.args[1], spec.args[2]
    local u = math.random()
    if spec.kind == 'uniform' then v = a + (b - a) * u
    else v = math.exp(math.log(a) + (math.log(b) - math.log(a)) * u) end
    if spec.type == 'integer' then v = math.floor(v + 0.5)
      v = math.tointeger(v) end
  end
  return v
end

-- A 32-bit FNV-1a hash of a string, as 8 hex digits (names default sweep folders).
local function hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = (h * 16777619) & 0xffffffff
  end
  return string.format('%08x', h)
end

-- The text that identifies a plan (recipe, fixed values, runs and their params).
local function plan_identity(plan)
  local parts = {plan.recipe}
  if plan.preset then parts[#parts + 1] = 'preset=' .. plan.preset end
  for _, run in ipairs(plan.runs) do
    local keys = {}
    for k in pairs(run.params) do keys[#keys + 1] = k end
    table.sort(keys)
    local kv = {}
    for _, k in ipairs(keys) do kv[#kv + 1] = k .. '=' .. value_text(run.params[k]) end
    parts[#parts + 1] = run.id .. ':' .. table.concat(kv, ',')
  end
  return table.concat(parts, '\n')
end

--- make_plan(recipe_path, opts) -> plan: every run of the sweep (id, config, seed,
--- params = the --set values plus the swept ones). Raises a UsageError for bad specs.
function M.make_plan(recipe_path, opts, positional)
  local r = recipe.load(recipe_path)
  if opts.preset then recipe.preset(r, opts.preset) end -- raises "unknown preset"
  local sets = {}
  for _, text in ipairs(opts.set or {}) do
    local k, v = recipe.parse_set(r, text)
    sets[k] = v
  end
  -- grid axes in command-line order; several --grid flags multiply
  local axes, swept = {}, {}
  for _, text in ipairs(opts.grid or {}) do
    local key, values = parse_grid(r, text)
    if swept[key] then usage_error("param '%s' is swept twice", key) end
    swept[key] = true
    axes[#axes + 1] = {key = key, values = values}
  end
  local random_specs = {}
  for _, text in ipairs(positional) do
    local spec = parse_random_spec(r, text)
    if swept[spec.key] then usage_error("param '%s' is swept twice", spec.key) end
    swept[spec.key] = true
    random_specs[#random_specs + 1] = spec
  end
  if #random_specs > 0 and not opts.random then
    usage_error('random specs (%s) need --random N', positional[1])
  end
  if opts.random and #random_specs == 0 then
    usage_error('--random N needs specs like lr=loguniform(1e-4,1e-2)')
  end
  for k in pairs(swept) do
    if sets[k] ~= nil then usage_error("param '%s' is both --set and swept", k) end
  end
  -- configurations: the grid's product, each crossed with N random draws
  local configs = {{}}
  for _, axis in ipairs(axes) do
    local grown = {}
    for _, c in ipairs(configs) do
      for _, v in ipairs(axis.values) do
        local nc = {}
        for k, x in pairs(c) do nc[k] = x end
        nc[axis.key] = v
        grown[#grown + 1] = nc
      end
    end
    configs = grown
  end
  if opts.random then
    math.randomseed(opts.sweep_seed or 0)
    local drawn = {}
    for _, c in ipairs(configs) do
      for _ = 1, opts.random do
        local nc = {}
        for k, x in pairs(c) do nc[k] = x end
        for _, spec in ipairs(random_specs) do nc[spec.key] = draw(spec) end
        drawn[#drawn + 1] = nc
      end
    end
    configs = drawn
  end
  local swept_keys = {}
  for _, axis in ipairs(axes) do swept_keys[#swept_keys + 1] = axis.key end
  for _, spec in ipairs(random_specs) do swept_keys[#swept_keys + 1] = spec.key end

  local seeds = parse_seeds(opts.seeds)
  local plan = {recipe = files.absolute(recipe_path), name = r.name, main_metric = r.main_metric,
                swept = swept_keys, sets = sets, preset = opts.preset, seeds = seeds, runs = {}}
  local width = #tostring(#configs)
  for ci, c in ipairs(configs) do
    local label = {string.format('c%0' .. width .. 'd', ci)}
    for _, k in ipairs(swept_keys) do label[#label + 1] = k .. '=' .. id_text(c[k]) end
    local config_id = table.concat(label, '-')
    for _, seed in ipairs(seeds) do
      local params = {}
      for k, v in pairs(sets) do params[k] = v end
      for k, v in pairs(c) do params[k] = v end
      plan.runs[#plan.runs + 1] = {id = config_id .. '-seed' .. seed, config = config_id,
                                   seed = seed, params = params}
    end
  end
  plan.n_configs = #configs
  return plan, r
end

-- ---------------------------------------------------------------------------------
-- Runs: their state on disk and the shell line that runs each
-- ---------------------------------------------------------------------------------

-- The state of one run folder: 'finished', 'failed', 'resume' (has a config: continue
-- it) or 'new'; with the result table, the exit status and an error message.
local function run_state(dir)
  local res = files.read_lua(dir .. '/result.lua')
  local exit_text = files.read(dir .. '/exit')
  local exit = exit_text and math.tointeger(tonumber(exit_text:match('%d+')))
  local info = {result = type(res) == 'table' and res or nil, exit = exit}
  local status = info.result and info.result.status
  if status == 'finished' then
    info.state = 'finished'
  elseif status == 'failed' then
    info.state, info.error = 'failed', info.result.error
  elseif exit and exit ~= 0 and exit ~= 130 and exit ~= 137 and exit ~= 143 and status ~= 'interrupted' then
    -- the process ended without saying why (a crash, a bad command line)
    info.state = 'failed'
    local out = files.read(dir .. '/output') or ''
    local last
    for line in out:gmatch('[^\n]+') do if not line:match('^%s') then last = line end end
    info.error = last or ('exited with status ' .. exit)
  elseif files.exists(dir .. '/config.lua') then
    info.state = 'resume'
  else
    info.state = 'new'
  end
  return info
end

-- The shell line that runs (or resumes) one run and records its exit status, and the
-- bare `ember run` command in it. The same line serves the local pool, GNU parallel and
-- the Slurm array.
local function job_line(bin, plan, run, dir, threads, resume, notify, allow_change, nproc)
  local q = files.quote
  local cmd
  -- a data-parallel run: `ember run --nproc N` starts its N ranks itself (under Slurm,
  -- mpirun places them in the job's allocation)
  local ranks = (nproc and nproc > 1) and (' --nproc ' .. nproc) or ''
  if resume then
    cmd = q(bin) .. ' run --resume ' .. q(dir) .. (allow_change and ' --allow-changed-recipe' or '') .. ranks
  else
    local parts = {q(bin), 'run', q(plan.recipe)}
    if plan.preset then parts[#parts + 1] = '--preset ' .. q(plan.preset) end
    local keys = {}
    for k in pairs(run.params) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      parts[#parts + 1] = '--set ' .. q(k .. '=' .. value_text(run.params[k]))
    end
    parts[#parts + 1] = '--seed ' .. run.seed
    parts[#parts + 1] = '--threads ' .. threads
    parts[#parts + 1] = '--out ' .. q(dir)
    cmd = table.concat(parts, ' ') .. ranks
  end
  -- trap: the wrapper shell outlives a Ctrl-C so that it can record the exit status;
  -- notify (local pool only): a FIFO the driver blocks on, told when the run has ended
  local tell = notify and string.format("[ -p %s ] && timeout 2 sh -c 'echo done > \"$0\"' %s; ",
                                        q(notify), q(notify)) or ''
  local line = string.format("mkdir -p %s && trap 'true' INT && rm -f %s/exit; %s >> %s/output 2>&1; " ..
                             "s=$?; echo $s > %s/exit.tmp && mv %s/exit.tmp %s/exit; %sexit $s",
                             q(dir), q(dir), cmd, q(dir), q(dir), q(dir), q(dir), tell)
  return line, cmd
end

-- Number of CPU cores.
local cores = files.cores

-- The process id of this ember process (the parent of the shell io.popen starts).
local function own_pid()
  return math.tointeger(tonumber(files.command_output('echo $PPID')))
end

-- Whether process pid is alive and runs an ember program.
local function is_ember_process(pid)
  local cmdline = files.read('/proc/' .. pid .. '/cmdline')
  return cmdline ~= nil and cmdline:find('ember', 1, true) ~= nil
end

-- Whether the recipe changed since sweep DIR started: compares plan.recipe with the
-- sweep's copy DIR/recipe.lua (a folder from before that copy: with the copy of the first
-- run folder that has one), then with the copy of every run that would be resumed.
-- Returns the change (see recipe.file_change) or nil.
local function sweep_recipe_change(dir, plan, resumed)
  local copy = dir .. '/recipe.lua'
  if not files.exists(copy) then
    copy = nil
    for _, run in ipairs(plan.runs) do
      local c = dir .. '/runs/' .. run.id .. '/recipe.lua'
      if files.exists(c) then copy = c break end
    end
  end
  local change = recipe.file_change(plan.recipe, copy, 'sweep ' .. dir,
                                    copy == dir .. '/recipe.lua' and 'the sweep folder' or 'its run folder')
  if change then return change end
  for _, rdir in ipairs(resumed) do
    change = recipe.file_change(plan.recipe, rdir .. '/recipe.lua', 'run ' .. rdir, 'the run folder')
    if change then return change end
  end
  return nil
end

-- Loads DIR/sweep.lua.
local function read_plan(dir)
  local plan = files.read_lua(dir .. '/sweep.lua')
  if type(plan) ~= 'table' then usage_error('%s is not a sweep folder (no sweep.lua)', dir) end
  return plan
end

-- ---------------------------------------------------------------------------------
-- Summary
-- ---------------------------------------------------------------------------------

-- The final value of the main metric of a run: its result, else the last value in
-- its metrics.csv.
local function run_metric(dir, info, metric)
  if info.result and info.result.metrics and type(info.result.metrics[metric]) == 'number' then
    return info.result.metrics[metric]
  end
  local _, rows = files.read_csv(dir .. '/metrics.csv')
  for i = #(rows or {}), 1, -1 do
    if type(rows[i][metric]) == 'number' then return rows[i][metric] end
  end
  return nil
end

-- Mean and sample standard deviation of a list (std nil for one value: one seed
-- says nothing about the spread, and 0 would claim none).
local function mean_std(xs)
  local n, s = #xs, 0
  for _, x in ipairs(xs) do s = s + x end
  local mean = s / n
  local v = 0
  for _, x in ipairs(xs) do v = v + (x - mean) ^ 2 end
  return mean, n > 1 and math.sqrt(v / (n - 1)) or nil
end

-- Formats a number for the summary table.
local short
-- "mean ± std", or "mean ± n/a" when there was one value.
local function mean_pm(mean, std)
  return short(mean) .. ' ± ' .. (std and short(std) or 'n/a')
end
function short(v)
  if type(v) ~= 'number' then return tostring(v or '') end
  return string.format('%.4g', v)
end

-- Draws metric against each swept param (ember.plot when available); returns lines
-- for summary.md.
local function plot_params(dir, plan, runs, metric)
  local lines = {}
  local ok_plot, plot = pcall(function() return ember.plot end)
  if not ok_plot or type(plot) ~= 'table' or not plot.scatter then
    lines[#lines + 1] = '(no plots: ember.plot is not available)'
    return lines
  end
  files.mkdir(dir .. '/plots')
  for _, key in ipairs(plan.swept) do
    local points, labels, categories, index = {}, {}, {}, {}
    for _, run in ipairs(runs) do
      local x = run.params[key]
      if type(x) ~= 'number' then
        if not index[tostring(x)] then
          categories[#categories + 1] = tostring(x)
          index[tostring(x)] = #categories
        end
        x = index[tostring(x)]
      end
      if type(run.metric) == 'number' and run.metric == run.metric then
        points[#points + 1] = {x, run.metric}
      end
    end
    if #points > 0 then
      local name = metric .. '-vs-' .. key .. '.png'
      local xlabel = key
      if #categories > 0 then
        local map = {}
        for i, c in ipairs(categories) do map[i] = i .. '=' .. c end
        xlabel = key .. ' (' .. table.concat(map, ', ') .. ')'
      end
      local ok, err = pcall(plot.scatter, points, dir .. '/plots/' .. name,
                            {title = metric .. ' vs ' .. key, xlabel = xlabel, ylabel = metric,
                             point_size = 1.5})
      if ok then
        lines[#lines + 1] = string.format('![%s vs %s](plots/%s)', metric, key, name)
      else
        lines[#lines + 1] = string.format('(plot of %s vs %s failed: %s)', metric, key, tostring(err))
      end
    end
  end
  return lines
end

--- collect(dir) -> summary: reads every run folder of sweep DIR and writes summary.csv,
--- summary.md, runs.csv and plots. Returns {configs = ranked list, runs = list, counts}.
function M.collect(dir)
  local plan = read_plan(dir)
  local metric = plan.main_metric and plan.main_metric.name
  local goal = plan.main_metric and plan.main_metric.goal or 'min'
  local runs, by_config, order = {}, {}, {}
  local counts = {finished = 0, failed = 0, unfinished = 0}
  local other_names, other_seen = {}, {}
  for _, run in ipairs(plan.runs) do
    local rdir = dir .. '/runs/' .. run.id
    local info = run_state(rdir)
    local entry = {id = run.id, config = run.config, seed = run.seed, params = run.params,
                   state = info.state, exit = info.exit, error = info.error,
                   seconds = info.result and info.result.seconds}
    if info.state == 'finished' then counts.finished = counts.finished + 1
    elseif info.state == 'failed' then counts.failed = counts.failed + 1
    else counts.unfinished = counts.unfinished + 1 end
    if metric and info.state == 'finished' then entry.metric = run_metric(rdir, info, metric) end
    -- the run's other final metrics (numbers in result.lua), reported beside the main one
    entry.others = {}
    if info.state == 'finished' and info.result and type(info.result.metrics) == 'table' then
      for name, v in pairs(info.result.metrics) do
        if name ~= metric and type(v) == 'number' and v == v then
          entry.others[name] = v
          if not other_seen[name] then other_seen[name] = true; other_names[#other_names + 1] = name end
        end
      end
    end
    runs[#runs + 1] = entry
    if not by_config[run.config] then
      by_config[run.config] = {config = run.config, params = run.params, runs = {}, values = {}}
      order[#order + 1] = run.config
    end
    local c = by_config[run.config]
    c.runs[#c.runs + 1] = entry
    if type(entry.metric) == 'number' and entry.metric == entry.metric then
      c.values[#c.values + 1] = entry.metric
    end
  end
  table.sort(other_names)
  local configs = {}
  for _, id in ipairs(order) do
    local c = by_config[id]
    if #c.values > 0 then c.mean, c.std = mean_std(c.values) end
    c.others = {}
    for _, name in ipairs(other_names) do
      local xs = {}
      for _, run in ipairs(c.runs) do if run.others[name] then xs[#xs + 1] = run.others[name] end end
      if #xs > 0 then
        local m, sd = mean_std(xs)
        c.others[name] = {mean = m, std = sd, n = #xs}
      end
    end
    c.failed = 0
    for _, run in ipairs(c.runs) do if run.state == 'failed' then c.failed = c.failed + 1 end end
    configs[#configs + 1] = c
  end
  table.sort(configs, function(a, b)
    if a.mean and b.mean then
      if a.mean ~= b.mean then
        if goal == 'min' then return a.mean < b.mean else return a.mean > b.mean end
      end
    elseif a.mean or b.mean then
      return a.mean ~= nil
    end
    return a.config < b.config
  end)
  for i, c in ipairs(configs) do c.rank = c.mean and i or nil end

  -- summary.csv: one row per configuration, best first
  local mname = metric or 'metric'
  local header = {'rank', 'config'}
  for _, k in ipairs(plan.swept) do header[#header + 1] = k end
  for _, h in ipairs{'runs', 'finished', 'failed', mname .. '_mean', mname .. '_std'} do header[#header + 1] = h end
  for _, name in ipairs(other_names) do
    header[#header + 1] = name .. '_mean'
    header[#header + 1] = name .. '_std'
  end
  local rows = {}
  for _, c in ipairs(configs) do
    local row = {rank = c.rank, config = c.config, runs = #c.runs, finished = #c.values, failed = c.failed,
                 [mname .. '_mean'] = c.mean, [mname .. '_std'] = c.std}
    for name, o in pairs(c.others) do row[name .. '_mean'], row[name .. '_std'] = o.mean, o.std end
    for _, k in ipairs(plan.swept) do row[k] = c.params[k] end
    rows[#rows + 1] = row
  end
  files.write_atomic(dir .. '/summary.csv', files.csv_text(header, rows))

  -- runs.csv: one row per run
  local rheader = {'run', 'config', 'seed'}
  for _, k in ipairs(plan.swept) do rheader[#rheader + 1] = k end
  for _, h in ipairs{'status', 'exit', mname} do rheader[#rheader + 1] = h end
  for _, name in ipairs(other_names) do rheader[#rheader + 1] = name end
  for _, h in ipairs{'seconds', 'error'} do rheader[#rheader + 1] = h end
  local rrows = {}
  for _, run in ipairs(runs) do
    local row = {run = run.id, config = run.config, seed = run.seed, status = run.state, exit = run.exit,
                 [mname] = run.metric, seconds = run.seconds, error = run.error}
    for name, v in pairs(run.others) do row[name] = v end
    for _, k in ipairs(plan.swept) do row[k] = run.params[k] end
    rrows[#rrows + 1] = row
  end
  files.write_atomic(dir .. '/runs.csv', files.csv_text(rheader, rrows))

  -- summary.md
  local md = {}
  md[#md + 1] = string.format('# Sweep of %s (%s)', plan.name, plan.recipe)
  md[#md + 1] = ''
  if metric then
    md[#md + 1] = string.format('Ranked by **%s** (%s is better), mean ± std over %d seed(s).', metric,
                                goal == 'min' and 'lower' or 'higher', #plan.seeds)
  end
  md[#md + 1] = string.format('%d runs: %d finished, %d failed, %d unfinished.', #runs, counts.finished,
                              counts.failed, counts.unfinished)
  local fixed = {}
  for k, v in pairs(plan.sets or {}) do fixed[#fixed + 1] = k .. '=' .. value_text(v) end
  table.sort(fixed)
  if plan.preset then table.insert(fixed, 1, '--preset ' .. plan.preset) end
  if #fixed > 0 then md[#md + 1] = 'Fixed: ' .. table.concat(fixed, ' ') .. '.' end
  md[#md + 1] = ''
  local th = {'rank', 'config'}
  local align = {'---:', '---'}
  for _, k in ipairs(plan.swept) do th[#th + 1] = k; align[#align + 1] = '---:' end
  th[#th + 1] = mname .. ' (mean ± std)'; align[#align + 1] = '---'
  th[#th + 1] = 'finished'; align[#align + 1] = '---:'
  md[#md + 1] = '| ' .. table.concat(th, ' | ') .. ' |'
  md[#md + 1] = '|' .. table.concat(align, '|') .. '|'
  for _, c in ipairs(configs) do
    local cells = {c.rank and tostring(c.rank) or '–', c.config}
    for _, k in ipairs(plan.swept) do cells[#cells + 1] = short(c.params[k]) end
    cells[#cells + 1] = c.mean and mean_pm(c.mean, c.std) or 'no result'
    cells[#cells + 1] = string.format('%d/%d', #c.values, #c.runs)
    md[#md + 1] = '| ' .. table.concat(cells, ' | ') .. ' |'
  end
  if #other_names > 0 and counts.finished > 0 then
    md[#md + 1] = ''
    md[#md + 1] = '## Other metrics (mean ± std over the finished seeds)'
    md[#md + 1] = ''
    local oh, oa = {'rank', 'config'}, {'---:', '---'}
    for _, name in ipairs(other_names) do oh[#oh + 1] = name; oa[#oa + 1] = '---' end
    md[#md + 1] = '| ' .. table.concat(oh, ' | ') .. ' |'
    md[#md + 1] = '|' .. table.concat(oa, '|') .. '|'
    for _, c in ipairs(configs) do
      local cells = {c.rank and tostring(c.rank) or '–', c.config}
      for _, name in ipairs(other_names) do
        local o = c.others[name]
        cells[#cells + 1] = o and mean_pm(o.mean, o.std) or ''
      end
      md[#md + 1] = '| ' .. table.concat(cells, ' | ') .. ' |'
    end
  end
  if counts.failed > 0 then
    md[#md + 1] = ''
    md[#md + 1] = '## Failed runs'
    md[#md + 1] = ''
    md[#md + 1] = '| run | exit status | error |'
    md[#md + 1] = '|---|---:|---|'
    for _, run in ipairs(runs) do
      if run.state == 'failed' then
        md[#md + 1] = string.format('| %s | %s | %s |', run.id, tostring(run.exit or '?'),
                                    tostring(run.error or ''):gsub('|', '\\|'))
      end
    end
    md[#md + 1] = ''
    md[#md + 1] = 'Each failed run\'s folder runs/<id>/ holds its output and log.'
  end
  if counts.unfinished > 0 then
    md[#md + 1] = ''
    md[#md + 1] = string.format('%d run(s) unfinished: re-run the sweep command to finish them.',
                                counts.unfinished)
  end
  if metric and #plan.swept > 0 and counts.finished > 0 then
    md[#md + 1] = ''
    md[#md + 1] = '## Plots'
    md[#md + 1] = ''
    for _, line in ipairs(plot_params(dir, plan, runs, metric)) do md[#md + 1] = line end
  end
  files.write_atomic(dir .. '/summary.md', table.concat(md, '\n') .. '\n')
  return {configs = configs, runs = runs, counts = counts, metric = metric, plan = plan}
end

-- Prints the best configurations of a summary.
local function print_summary(dir, s)
  print(string.format('%d runs: %d finished, %d failed, %d unfinished', #s.runs, s.counts.finished,
                      s.counts.failed, s.counts.unfinished))
  for i, c in ipairs(s.configs) do
    if i > 5 or not c.mean then break end
    print(string.format('  %d. %s  %s %s', i, c.config, s.metric, mean_pm(c.mean, c.std)))
  end
  print('summary: ' .. dir .. '/summary.md')
end

-- ---------------------------------------------------------------------------------
-- The local process pool
-- ---------------------------------------------------------------------------------

-- Sleeps a little. io.popen, unlike os.execute, leaves SIGINT to this process, so a
-- Ctrl-C meanwhile raises "interrupted" as soon as the sleep ends.
local function nap()
  local p = io.popen('sleep 0.05')
  p:close()
end

-- A FIFO in the sweep folder that each local run writes a line to when it ends, so the
-- driver sleeps until something happens instead of polling; a ticker process writes
-- "tick" every second as a safety net (a run whose wrapper shell was killed, a folder
-- removed under us). It holds its own descriptor, so it outlives the FIFO's name, and
-- it stops with the driver. nil when mkfifo fails (then the driver polls).
local function open_waker(dir, driver_pid)
  local path = dir .. '/.wake'
  os.remove(path)
  if not os.execute('mkfifo ' .. files.quote(path) .. ' 2>/dev/null') then return nil end
  local file = io.open(path, 'r+') -- read and write: never blocks on open, never sees EOF
  if not file then os.remove(path) return nil end
  local p = io.popen(string.format("(exec 3<>%s; while sleep 1 && kill -0 %d 2>/dev/null; do " ..
                                   "echo tick >&3 || exit; done) > /dev/null 2>&1 & echo $!",
                                   files.quote(path), driver_pid or 0))
  local ticker = p and math.tointeger(tonumber(p:read('l') or ''))
  if p then p:close() end
  return {path = path, file = file, ticker = ticker}
end

-- Blocks until a run ends or the ticker ticks (at most about a second).
local function wait_for_event(waker)
  if not waker then return nap() end
  waker.file:read('l')
end

local function close_waker(waker)
  if waker then
    if waker.ticker then os.execute('kill ' .. waker.ticker .. ' 2>/dev/null') end
    waker.file:close()
    os.remove(waker.path)
  end
end

-- Whether process pid catches SIGINT and has none pending (Linux /proc), that is,
-- whether it still needs to be told to stop.
local function awaits_interrupt(pid)
  local status = files.read('/proc/' .. pid .. '/status')
  if not status then return false end
  local function mask(name)
    local hex = status:match(name .. ':%s*(%x+)')
    return hex and math.tointeger(tonumber(hex, 16)) or 0
  end
  local sigint = 1 << 1
  return mask('SigCgt') & sigint ~= 0 and (mask('SigPnd') | mask('ShdPnd')) & sigint == 0
end

-- Runs the jobs ({run, dir, line}) J at a time; returns when all have ended, or raises
-- "interrupted" after stopping the running ones (each saves its checkpoint).
local function run_pool(jobs, J, total, done_before, waker)
  local running, next_job, done = {}, 1, done_before
  local function start(job)
    files.mkdir(job.dir)
    os.remove(job.dir .. '/exit')
    local out = io.open(job.dir .. '/output', 'a') -- exists from now on (see poll)
    if out then out:close() end
    job.handle = io.popen(job.line, 'r')
    job.started = ember._clock and ember._clock() or os.time()
    running[#running + 1] = job
  end
  local function poll()
    local still = {}
    for _, job in ipairs(running) do
      -- ended: the exit status is there, or the folder vanished (removed under us)
      if not files.exists(job.dir .. '/exit') and files.exists(job.dir .. '/output') then
        still[#still + 1] = job
      else
        job.handle:close()
        done = done + 1
        local info = run_state(job.dir)
        local what
        if info.state == 'finished' then
          local m = info.result.metrics or {}
          local shown = {}
          for k, v in pairs(m) do shown[#shown + 1] = k .. ' ' .. short(v) end
          table.sort(shown)
          what = 'finished  ' .. table.concat(shown, '  ')
        elseif info.state == 'failed' then
          what = string.format('FAILED (exit %s): %s', tostring(info.exit), tostring(info.error))
        else
          what = string.format('stopped (exit %s); re-run the sweep to resume it', tostring(info.exit or '?'))
        end
        print(string.format('[%d/%d] %s %s', done, total, job.run.id, what))
      end
    end
    running = still
  end
  local ok, err = pcall(function()
    while next_job <= #jobs or #running > 0 do
      while #running < J and next_job <= #jobs do
        start(jobs[next_job])
        next_job = next_job + 1
      end
      wait_for_event(waker)
      poll()
    end
  end)
  if ok then return end
  if err ~= 'interrupted' then error(err, 0) end
  -- Ctrl-C: from a terminal, the runs (same process group) got it too and are on their
  -- way to a checkpoint; when only this process was signalled, pass it on. A second
  -- SIGINT before a run reaches its safe point would kill it unsaved (the host drops
  -- its handler until then), so it goes only to runs that catch SIGINT and have none
  -- pending; one that already re-armed takes the extra interrupt in its stride.
  print(string.format('interrupted: stopping %d running run(s); each saves a checkpoint', #running))
  -- first let a signal sent to the whole group reach every run (the sender may still be
  -- delivering it), so that /proc tells the truth about who got one
  pcall(nap)
  pcall(nap)
  local told = {}
  local deadline = os.time() + 60
  while #running > 0 and os.time() <= deadline do
    for _, job in ipairs(running) do
      local pid = not told[job] and files.read(job.dir .. '/pid')
      pid = pid and math.tointeger(tonumber(pid:match('%d+')))
      if pid then
        told[job] = true
        if awaits_interrupt(pid) then os.execute('kill -INT ' .. pid .. ' 2>/dev/null') end
      end
    end
    pcall(nap)
    pcall(poll)
  end
  error('interrupted', 0)
end

--- main(opts, positional) -> exit status of `ember sweep` (opts from ember.cli.parse).
function M.main(opts, positional)
  if opts.collect then
    if positional[1] then usage_error("--collect DIR takes no recipe (got '%s')", positional[1]) end
    local dir = opts.collect:gsub('/+$', '')
    local s = M.collect(dir)
    print_summary(dir, s)
    return (s.counts.failed > 0 or s.counts.unfinished > 0) and 1 or 0
  end
  local recipe_path = table.remove(positional, 1)
  if not recipe_path then usage_error('missing the recipe file (see ember sweep --help)') end
  if not files.exists(recipe_path) then usage_error('cannot open recipe %s', recipe_path) end
  if opts.emit and opts.emit ~= 'slurm' and opts.emit ~= 'parallel' then
    usage_error("--emit expects slurm or parallel, got '%s'", opts.emit)
  end
  local plan = M.make_plan(recipe_path, opts, positional)
  local J = opts.jobs or 1
  local ncores = cores()
  local nproc = opts.nproc or 1 -- ranks per run (data-parallel)
  -- threads per rank: J x nproc x threads <= cores here; one per task on a cluster unless told
  local threads = opts.threads or (opts.emit == 'slurm' and 1) or math.max(1, ncores // (J * nproc))
  local dir = (opts.out or ('sweeps/' .. plan.name .. '-' .. hash(plan_identity(plan)))):gsub('/+$', '')
  dir = files.absolute(dir)
  local old = files.read_lua(dir .. '/sweep.lua')
  if type(old) == 'table' and plan_identity(old) ~= plan_identity(plan) then
    usage_error('%s holds a different sweep (other recipe, params or seeds); use another --out', dir)
  end

  -- what each run needs: nothing (finished, or failed unless --retry-failed), a fresh
  -- start, or a resume
  local bin = recipe.ember_bin()
  local todo, listing, finished, failed = {}, {}, 0, 0
  for _, run in ipairs(plan.runs) do
    local rdir = dir .. '/runs/' .. run.id
    local state = run_state(rdir).state
    local item = {run = run, what = state}
    if state == 'finished' then
      finished = finished + 1
    elseif state == 'failed' and not opts.retry_failed then
      failed = failed + 1
    else
      local job = {run = run, dir = rdir, resume = state == 'resume', retry = state == 'failed', item = item}
      if job.retry then item.what = 'retry' end
      todo[#todo + 1] = job
    end
    listing[#listing + 1] = item
  end

  -- an edited recipe: refused, or (--allow-changed-recipe) accepted for what is left
  local resumed = {}
  for _, job in ipairs(todo) do if job.resume then resumed[#resumed + 1] = job.dir end end
  local change = #todo > 0 and (old or #resumed > 0) and sweep_recipe_change(dir, plan, resumed) or nil
  if change and not opts.allow_changed_recipe then
    usage_error('%s.\nGoing on would resume %d interrupted and start %d new run(s) with the edited recipe, ' ..
                'next to %d finished with the original, and rank them together. Either restore the original ' ..
                '(cp %s %s), or accept the edit by running the same command with --allow-changed-recipe ' ..
                '(the sweep folder then keeps the original as recipe.lua.orig-<n>; each resumed run too), ' ..
                'or start a new sweep with another --out.', change.text, #resumed, #todo - #resumed, finished,
                files.quote(change.copy), files.quote(change.path))
  end
  for _, job in ipairs(todo) do
    job.line, job.item.cmd = job_line(bin, plan, job.run, job.dir, threads, job.resume, nil, change ~= nil, nproc)
  end

  local head = string.format('sweep %s: %d configuration(s) x %d seed(s) = %d runs, %d at a time, %d thread(s) each%s',
                             plan.name, plan.n_configs, #plan.seeds, #plan.runs, J, threads,
                             nproc > 1 and string.format(' (per rank; %d ranks per run)', nproc) or '')
  if opts.dry_run then
    print(head)
    print('folder: ' .. dir)
    for _, item in ipairs(listing) do
      print(string.format('  %-40s %-8s %s', item.run.id, item.what, item.cmd or ''))
    end
    print(string.format('%d to run, %d finished, %d failed', #todo, finished, failed))
    if change then
      print(string.format('WARNING (--allow-changed-recipe): %s; the runs left would use the edited recipe',
                          change.text))
    end
    return 0
  end
  if J * nproc * threads > ncores and not opts.emit then
    print(string.format('warning: %d jobs x %d threads is more than the %d cores here', J, nproc * threads, ncores))
  end

  files.mkdir(dir .. '/runs')
  plan.created = old and old.created or os.date('!%Y-%m-%dT%H:%M:%SZ')
  plan.recipe_changes = old and old.recipe_changes or nil
  -- DIR/recipe.lua: the recipe the sweep's runs are made with
  local copy = dir .. '/recipe.lua'
  if change then
    local kept = recipe.keep_original(copy, change.was)
    files.write_atomic(copy, change.now)
    plan.recipe_changes = plan.recipe_changes or {}
    plan.recipe_changes[#plan.recipe_changes + 1] = {
      at = os.date('!%Y-%m-%dT%H:%M:%SZ'), line = change.line, kept = kept:match('[^/]+$'),
      finished = finished, resumed = #resumed, new = #todo - #resumed,
    }
    io.stderr:write(string.format('WARNING: going on with an edited recipe (--allow-changed-recipe): %s. ' ..
                                  '%d interrupted run(s) resume and %d new one(s) start with the edited file, ' ..
                                  'next to %d finished with the original, and the summary ranks them together. ' ..
                                  '%s is now the edited recipe, the original is kept as %s, and sweep.lua ' ..
                                  'lists the change (recipe_changes).\n', change.what, #resumed,
                                  #todo - #resumed, finished, copy, kept))
  elseif not files.exists(copy) then
    local text = files.read(plan.recipe)
    if text then files.write_atomic(copy, text) end
  end
  files.write_lua(dir .. '/sweep.lua', plan)
  for _, job in ipairs(todo) do
    if job.retry then os.execute('rm -rf ' .. files.quote(job.dir)) end
  end
  local lines = {}
  for _, job in ipairs(todo) do lines[#lines + 1] = job.line end
  files.write_atomic(dir .. '/jobs.txt', table.concat(lines, '\n') .. (#lines > 0 and '\n' or ''))

  if #todo == 0 then
    print(string.format('nothing to do: all %d runs finished%s', #plan.runs,
                        failed > 0 and string.format(' (%d failed; --retry-failed runs them again)', failed) or ''))
    if not files.exists(dir .. '/summary.md') then M.collect(dir) end
    print('summary: ' .. dir .. '/summary.md')
    return failed > 0 and 1 or 0
  end
  if opts.emit == 'parallel' then
    print(string.format('wrote %s/jobs.txt (%d runs). Run them with:', dir, #todo))
    print(string.format('  parallel --jobs %d < %s', J, files.quote(dir .. '/jobs.txt')))
    print(string.format('then: ember sweep --collect %s', files.quote(dir)))
    return 0
  elseif opts.emit == 'slurm' then
    files.mkdir(dir .. '/slurm')
    local script = table.concat({
      '#!/bin/sh',
      '# ember sweep of ' .. plan.name .. ': one array task per line of jobs.txt',
      '#SBATCH --job-name=ember-' .. plan.name,
      string.format('#SBATCH --array=1-%d%s', #todo, opts.jobs and ('%' .. J) or ''),
      '#SBATCH --cpus-per-task=' .. threads,
      '#SBATCH --ntasks=' .. nproc .. (nproc > 1 and '  # the ranks of one data-parallel run' or ''),
      '#SBATCH --output=' .. dir .. '/slurm/%A_%a.out',
      'line=$(sed -n "${SLURM_ARRAY_TASK_ID}p" ' .. files.quote(dir .. '/jobs.txt') .. ')',
      'exec sh -c "$line"',
    }, '\n') .. '\n'
    files.write_atomic(dir .. '/sweep.sbatch', script)
    print(string.format('wrote %s/sweep.sbatch (%d array tasks). Submit it with:', dir, #todo))
    print(string.format('  sbatch %s', files.quote(dir .. '/sweep.sbatch')))
    print(string.format('then: ember sweep --collect %s', files.quote(dir)))
    return 0
  end

  -- the local pool; driver.pid keeps a second driver out of this folder meanwhile
  local other = files.read(dir .. '/driver.pid')
  other = other and math.tointeger(tonumber(other:match('%d+')))
  local me = own_pid()
  if other and other ~= me and is_ember_process(other) then
    usage_error('another ember sweep (pid %d) is running in %s; wait for it or stop it first', other, dir)
  end
  files.write_atomic(dir .. '/driver.pid', tostring(me) .. '\n')
  print(head)
  print('folder: ' .. dir)
  if finished + failed > 0 then
    print(string.format('skipping %d finished and %d failed run(s); %d to run', finished, failed, #todo))
  end
  local waker = open_waker(dir, me)
  for _, job in ipairs(todo) do
    job.line = job_line(bin, plan, job.run, job.dir, threads, job.resume, waker and waker.path, change ~= nil, nproc)
  end
  local ok, err = pcall(run_pool, todo, J, #plan.runs, finished + failed, waker)
  close_waker(waker)
  os.remove(dir .. '/driver.pid')
  local s = M.collect(dir)
  if not ok then
    if err == 'interrupted' then
      print(string.format('interrupted: %d of %d runs finished. Re-run the same command to finish the rest.',
                          s.counts.finished + s.counts.failed, #plan.runs))
      return 130
    end
    error(err, 0)
  end
  print_summary(dir, s)
  return s.counts.failed > 0 and 1 or 0
end

return M
