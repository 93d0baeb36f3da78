-- ember.recipe — model recipes and the run loop behind `ember run` and `ember sample`.
--
-- A recipe is a Lua file that returns a table:
--
--   return {
--     name = 'tiny', description = 'one line',
--     params = { lr = {default = 0.01, type = 'number', help = 'learning rate', min = 0,
--                      min_exclusive = true}, ... },   -- optional: choices, min, max
--     presets = { big = {hidden = 64, epochs = 20} },     -- optional: named param sets
--     main_metric = {name = 'test_loss', goal = 'min'},
--     build = function(params) return state end,          -- models, optimizers, ...
--     data = function(params) return data end,            -- optional: loaders, tensors
--     train_epoch = function(state, data, epoch, log) end,  -- either this ...
--     train_step = function(state, batch, step, log) end,   -- ... or this (data.train batches)
--     evaluate = function(state, data) return {test_loss = 0.1} end,  -- optional
--     sample = function(state, params, out_dir, n) end,    -- optional: writes pictures
--     checkpoint = function(state) return tbl end,        -- optional pair; default: every
--     restore = function(state, tbl) end,                 -- object in state with state_dict()
--   }
--
-- Params with these names steer the loop when a recipe declares them: epochs (default 1),
-- checkpoint_every (step mode: a checkpoint every N steps instead of at each epoch's end;
-- epoch mode: every N epochs; 0 or absent: each epoch; always at the end of the run),
-- log_every (steps per metrics row in step mode; default 1), n_samples (default 64). The
-- runner holds these to its own minimums (RUNNER_MINS) whatever the recipe declares.
--
-- A param may declare min and/or max (numbers, inclusive; min_exclusive/max_exclusive make
-- a bound strict): the default must lie in the range and a value outside it is refused.
-- A preset (`ember run R --preset NAME`) is a table {param = value} applied over the
-- defaults and under --set; the run's config.lua records its name.
--
-- A run folder holds config.lua (resolved params, seed, threads, version, git revision),
-- metrics.csv, log (everything printed), checkpoint (ember.save), result.lua (status and
-- final metrics), pid, recipe.lua (a copy) and samples/. Resuming or sampling a run whose
-- recipe file no longer matches that copy is refused unless allow_changed_recipe is given
-- (see M.recipe_change).
local ember = require 'ember'

local M = {}

local PARAM_TYPES = {number = true, integer = true, string = true, boolean = true}
local RECIPE_FIELDS = {
  name = 'string', description = 'string', params = 'table', presets = 'table', main_metric = 'table',
  build = 'function', data = 'function', train_epoch = 'function', train_step = 'function',
  evaluate = 'function', sample = 'function', checkpoint = 'function', restore = 'function',
}

-- An error the user caused on the command line (bad --set, unknown option): the cli
-- prints its message and exits with status 2.
local UsageError = {}
UsageError.__index = UsageError
UsageError.__tostring = function(e) return e.msg end

--- usage_error(fmt, ...): raises a UsageError with the formatted message.
function M.usage_error(fmt, ...)
  error(setmetatable({msg = string.format(fmt, ...)}, UsageError), 0)
end

--- is_usage_error(e) -> whether e was raised by usage_error.
function M.is_usage_error(e) return getmetatable(e) == UsageError end

local files = require 'ember.files'
M.files = files

-- ---------------------------------------------------------------------------------
-- Metrics file: metrics.csv with columns `epoch`, `step` (step mode) and then every
-- logged name in sorted order; when a new name appears, the file is rewritten with the
-- wider header, so an interrupted-and-resumed run writes the same bytes as one that
-- ran straight through.
-- ---------------------------------------------------------------------------------

local MetricsFile = {}
MetricsFile.__index = MetricsFile

-- Opens path for appending rows, keeping only its first `keep` rows (0 = start afresh).
local function metrics_open(path, lead, keep)
  local self = setmetatable({path = path, lead = lead, rows = {}, names = {}}, MetricsFile)
  local header, rows = files.read_csv(path)
  if header and keep > 0 then
    for i = 1, math.min(keep, #rows) do self.rows[i] = rows[i] end
    for _, name in ipairs(header) do self.names[name] = true end
  end
  self:rewrite()
  return self
end

-- The header: the lead columns, then the other names sorted.
function MetricsFile:header()
  local rest = {}
  for name in pairs(self.names) do
    local lead = false
    for _, l in ipairs(self.lead) do if l == name then lead = true end end
    if not lead then rest[#rest + 1] = name end
  end
  table.sort(rest)
  local h = {}
  for _, l in ipairs(self.lead) do h[#h + 1] = l end
  for _, r in ipairs(rest) do h[#h + 1] = r end
  return h
end

-- Writes the whole file from the rows held in memory.
function MetricsFile:rewrite()
  self.columns = self:header()
  files.write_atomic(self.path, files.csv_text(self.columns, self.rows))
end

-- Adds one row ({name = number}); returns the number of rows written so far.
function MetricsFile:write(row)
  local grown = false
  for name in pairs(row) do
    if not self.names[name] then self.names[name] = true; grown = true end
  end
  self.rows[#self.rows + 1] = row
  if grown then
    self:rewrite()
  else
    local f = assert(io.open(self.path, 'ab'))
    local fields = {}
    for i, name in ipairs(self.columns) do fields[i] = files.csv_field(row[name]) end
    f:write(table.concat(fields, ','), '\n')
    f:close()
  end
  return #self.rows
end

-- ---------------------------------------------------------------------------------
-- Recipes: loading, validating, params
-- ---------------------------------------------------------------------------------

-- Raises "recipe PATH: message".
local function recipe_error(path, fmt, ...)
  error(string.format('recipe %s: ' .. fmt, path, ...), 0)
end

-- Whether value v fits param spec p (type and choices); returns ok, why-not.
local function value_fits(p, v)
  local t = p.type
  if t == 'integer' then
    if math.type(v) ~= 'integer' then return false, 'an integer' end
  elseif t == 'number' then
    if type(v) ~= 'number' then return false, 'a number' end
  elseif t == 'string' then
    if type(v) ~= 'string' then return false, 'a string' end
  elseif t == 'boolean' then
    if type(v) ~= 'boolean' then return false, 'a boolean' end
  end
  if p.choices then
    for _, c in ipairs(p.choices) do if c == v then return true end end
    return false, 'one of ' .. M.format_choices(p.choices)
  end
  return true
end

-- The minimums the run loop itself relies on, for params of these names: it runs
-- `epochs` epochs, writes a row every `log_every` steps, checkpoints every
-- `checkpoint_every` (0: at epoch ends) and asks sample() for `n_samples`.
local RUNNER_MINS = {epochs = 1, log_every = 1, checkpoint_every = 0, n_samples = 1}

--- bounds(recipe, name) -> {min, min_exclusive, min_by, max, max_exclusive, max_by}: the
--- range of param `name`, as declared, tightened by the runner's own minimum for the
--- params it uses (epochs, log_every, checkpoint_every, n_samples); *_by names the rule.
function M.bounds(r, name)
  local p = r.params[name] or {}
  local b = {min = p.min, min_exclusive = p.min_exclusive == true, min_by = "the recipe's min",
             max = p.max, max_exclusive = p.max_exclusive == true, max_by = "the recipe's max"}
  local floor = RUNNER_MINS[name]
  if floor and (p.type == 'integer' or p.type == 'number') and (b.min == nil or b.min < floor) then
    b.min, b.min_exclusive, b.min_by = floor, false, "ember run's minimum"
  end
  return b
end

--- range_text(bounds) -> ">= 1", "> 0 and <= 1", or nil for no bound.
function M.range_text(b)
  local parts = {}
  if b.min ~= nil then parts[#parts + 1] = (b.min_exclusive and '> ' or '>= ') .. files.number(b.min) end
  if b.max ~= nil then parts[#parts + 1] = (b.max_exclusive and '< ' or '<= ') .. files.number(b.max) end
  return #parts > 0 and table.concat(parts, ' and ') or nil
end

-- Whether value v of param `name` lies within bounds b; returns ok, the rule it breaks
-- ("epochs must be >= 1 (the recipe's min)"). Values that are not numbers always fit.
local function range_fits(name, b, v)
  if type(v) ~= 'number' then return true end
  if v ~= v and (b.min ~= nil or b.max ~= nil) then
    return false, string.format('%s must be %s, not NaN', name, M.range_text(b))
  end
  if b.min ~= nil and (v < b.min or (b.min_exclusive and v == b.min)) then
    return false, string.format('%s must be %s %s (%s)', name, b.min_exclusive and '>' or '>=',
                                files.number(b.min), b.min_by)
  end
  if b.max ~= nil and (v > b.max or (b.max_exclusive and v == b.max)) then
    return false, string.format('%s must be %s %s (%s)', name, b.max_exclusive and '<' or '<=',
                                files.number(b.max), b.max_by)
  end
  return true
end

--- check_range(recipe, key, value, source): raises a UsageError "SOURCE: key must be
--- >= 1 (the recipe's min)" when value is outside param key's range; source says where
--- the value came from ("--set epochs=-3").
function M.check_range(r, key, v, source)
  local ok, rule = range_fits(key, M.bounds(r, key), v)
  if not ok then M.usage_error('%s: %s', source, rule) end
end

--- format_choices(list) -> "a, b, c".
function M.format_choices(list)
  local out = {}
  for i, c in ipairs(list) do out[i] = tostring(c) end
  return table.concat(out, ', ')
end

--- validate(recipe, path) -> recipe; raises "recipe PATH: what is wrong" for a table
--- that is not a usable recipe.
function M.validate(r, path)
  path = path or '(table)'
  if type(r) ~= 'table' then
    recipe_error(path, 'must return a table (got %s); a plain script runs with `ember %s`',
                 type(r), path)
  end
  for k, v in pairs(r) do
    local want = RECIPE_FIELDS[k]
    if want and type(v) ~= want then
      recipe_error(path, 'field %s must be a %s, got %s', k, want, type(v))
    end
  end
  if type(r.name) ~= 'string' or not r.name:match('^[%w_%-%.]+$') then
    recipe_error(path, 'name must be a string of letters, digits, _ - . (got %s)', tostring(r.name))
  end
  if not r.build then recipe_error(path, 'needs a build(params) function') end
  if not r.train_epoch and not r.train_step then
    recipe_error(path, 'needs train_epoch(state, data, epoch, log) or train_step(state, batch, step, log)')
  end
  if r.train_epoch and r.train_step then
    recipe_error(path, 'has both train_epoch and train_step; keep one')
  end
  if r.train_step and not r.data then
    recipe_error(path, 'train_step needs data(params) returning a table with a `train` field')
  end
  if (r.checkpoint == nil) ~= (r.restore == nil) then
    recipe_error(path, 'checkpoint(state) and restore(state, saved) come as a pair')
  end
  r.params = r.params or {}
  for name, p in pairs(r.params) do
    if type(name) ~= 'string' or not name:match('^[%a_][%w_]*$') then
      recipe_error(path, 'param names must be identifiers, got %s', tostring(name))
    end
    if type(p) ~= 'table' then
      recipe_error(path, 'params.%s must be a table {default=, type=, help=}, got %s', name, type(p))
    end
    if not PARAM_TYPES[p.type] then
      recipe_error(path, "params.%s.type must be 'number', 'integer', 'string' or 'boolean', got %s",
                   name, tostring(p.type))
    end
    if p.choices ~= nil and (type(p.choices) ~= 'table' or #p.choices == 0) then
      recipe_error(path, 'params.%s.choices must be a non-empty list', name)
    end
    if p.choices then
      for _, c in ipairs(p.choices) do
        local ok, want = value_fits({type = p.type}, c)
        if not ok then recipe_error(path, 'params.%s.choices: %s is not %s', name, tostring(c), want) end
      end
    end
    for _, end_ in ipairs{'min', 'max'} do
      local v, strict = p[end_], p[end_ .. '_exclusive']
      if v ~= nil then
        if p.type ~= 'number' and p.type ~= 'integer' then
          recipe_error(path, 'params.%s.%s applies to number and integer params only (this one is a %s)',
                       name, end_, p.type)
        end
        if type(v) ~= 'number' or v ~= v then
          recipe_error(path, 'params.%s.%s must be a number, got %s', name, end_, tostring(v))
        end
      end
      if strict ~= nil and type(strict) ~= 'boolean' then
        recipe_error(path, 'params.%s.%s_exclusive must be true or false, got %s', name, end_, tostring(strict))
      end
      if strict and v == nil then
        recipe_error(path, 'params.%s.%s_exclusive needs a %s', name, end_, end_)
      end
    end
    if p.min ~= nil and p.max ~= nil and
       (p.min > p.max or (p.min == p.max and (p.min_exclusive or p.max_exclusive))) then
      recipe_error(path, 'params.%s: min (%s) must be %s max (%s)', name, files.number(p.min),
                   (p.min_exclusive or p.max_exclusive) and '<' or '<=', files.number(p.max))
    end
    local ok, want = value_fits(p, p.default)
    if not ok then
      recipe_error(path, 'params.%s.default must be %s, got %s', name, want, tostring(p.default))
    end
    local in_range, rule = range_fits(name, M.bounds(r, name), p.default)
    if not in_range then
      recipe_error(path, 'params.%s.default is %s, but %s', name, files.number(p.default), rule)
    end
    for _, c in ipairs(p.choices or {}) do
      in_range, rule = range_fits(name, M.bounds(r, name), c)
      if not in_range then recipe_error(path, 'params.%s.choices: %s is outside the range: %s', name, tostring(c), rule) end
    end
  end
  if r.presets ~= nil then
    local names = table.concat(M.param_names(r), ', ')
    for pname, preset in pairs(r.presets) do
      if type(pname) ~= 'string' or not pname:match('^[%w_%-%.]+$') then
        recipe_error(path, 'preset names must be strings of letters, digits, _ - . (got %s)', tostring(pname))
      end
      if type(preset) ~= 'table' then
        recipe_error(path, 'presets.%s must be a table {param = value}, got %s', pname, type(preset))
      end
      for k, v in pairs(preset) do
        local p = r.params[k]
        if not p then
          recipe_error(path, "presets.%s sets '%s', which is not a param (params: %s)", pname, tostring(k),
                       names ~= '' and names or 'none')
        end
        local ok, want = value_fits(p, v)
        if not ok then recipe_error(path, 'presets.%s.%s must be %s, got %s', pname, k, want, tostring(v)) end
        local in_range, rule = range_fits(k, M.bounds(r, k), v)
        if not in_range then recipe_error(path, 'presets.%s: %s', pname, rule) end
      end
    end
  end
  if r.main_metric ~= nil then
    local mm = r.main_metric
    if type(mm.name) ~= 'string' or (mm.goal ~= 'min' and mm.goal ~= 'max') then
      recipe_error(path, "main_metric must be {name = 'metric', goal = 'min' or 'max'}")
    end
  end
  return r
end

--- param_names(recipe) -> the sorted list of param names.
function M.param_names(r)
  local names = {}
  for name in pairs(r.params) do names[#names + 1] = name end
  table.sort(names)
  return names
end

--- defaults(recipe) -> {name = default} for every param.
function M.defaults(r)
  local p = {}
  for name, spec in pairs(r.params) do p[name] = spec.default end
  return p
end

--- preset_names(recipe) -> the sorted list of preset names.
function M.preset_names(r)
  local names = {}
  for name in pairs(r.presets or {}) do names[#names + 1] = name end
  table.sort(names)
  return names
end

--- preset(recipe, name) -> the preset's table {param = value}; raises a UsageError
--- listing the known presets for an unknown name.
function M.preset(r, name)
  local p = type(name) == 'string' and r.presets and r.presets[name]
  if p then return p end
  local known = M.preset_names(r)
  if #known > 0 then
    M.usage_error("unknown preset '%s' for recipe %s (known: %s)", tostring(name), r.name, table.concat(known, ', '))
  elseif r.params.preset then
    M.usage_error("recipe %s has no presets (--preset); its param 'preset' is set with --set preset=%s",
                  r.name, tostring(name))
  end
  M.usage_error("recipe %s has no presets (--preset %s)", r.name, tostring(name))
end

-- Text of a param value as --set reads it back.
local function value_text(v)
  return type(v) == 'number' and files.number(v) or tostring(v)
end

--- preset_text(recipe, name) -> "beta=0.25 epochs=60 ..." (the preset's values, sorted).
function M.preset_text(r, name)
  local preset, keys = M.preset(r, name), {}
  for k in pairs(preset) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do keys[i] = k .. '=' .. value_text(preset[k]) end
  return table.concat(keys, ' ')
end

--- parse_value(recipe, key, text [, source]) -> the value of param `key` written as
--- `text` on the command line; raises a UsageError naming the valid keys, the expected
--- type or choices, or the range it breaks (prefixed by source, e.g. "--set epochs=-3").
function M.parse_value(r, key, text, source)
  local spec = r.params[key]
  if not spec then
    local names = M.param_names(r)
    M.usage_error("unknown param '%s' for recipe %s (valid: %s)", key, r.name,
                  #names > 0 and table.concat(names, ', ') or 'none')
  end
  local v
  if spec.type == 'number' then
    v = files.to_number(text)
    if v == nil then M.usage_error("param '%s' expects a number, got '%s'", key, text) end
    v = v + 0.0
  elseif spec.type == 'integer' then
    local n = tonumber(text)
    v = n and math.tointeger(n)
    if v == nil then M.usage_error("param '%s' expects an integer, got '%s'", key, text) end
  elseif spec.type == 'boolean' then
    local t = text:lower()
    if t == 'true' or t == '1' or t == 'yes' then v = true
    elseif t == 'false' or t == '0' or t == 'no' then v = false
    else M.usage_error("param '%s' expects a boolean (true/false), got '%s'", key, text) end
  else
    v = text
  end
  if spec.choices then
    local ok = false
    for _, c in ipairs(spec.choices) do if c == v then ok = true end end
    if not ok then
      M.usage_error("param '%s' must be one of %s, got '%s'", key, M.format_choices(spec.choices), text)
    end
  end
  M.check_range(r, key, v, source or (key .. '=' .. text))
  return v
end

--- parse_set(recipe, text) -> key, value for a `--set key=value` argument.
function M.parse_set(r, text)
  local key, value = tostring(text):match('^([^=]+)=(.*)$')
  if not key then M.usage_error("--set expects key=value, got '%s'", tostring(text)) end
  return key, M.parse_value(r, key, value, '--set ' .. tostring(text))
end

--- resolve(recipe, overrides [, preset]) -> params: the defaults, then the named preset's
--- values, then overrides ({name = value} or a list of "k=v" strings), each checked.
function M.resolve(r, overrides, preset)
  local params = M.defaults(r)
  if preset ~= nil then
    for k, v in pairs(M.preset(r, preset)) do
      params[k] = (r.params[k].type == 'number' and math.type(v) == 'integer') and v + 0.0 or v
    end
  end
  for k, v in pairs(overrides or {}) do
    if math.type(k) == 'integer' then
      local key, value = M.parse_set(r, v)
      params[key] = value
    else
      if not r.params[k] then M.parse_value(r, k, tostring(v)) end -- raises "unknown param"
      if type(v) == 'string' and r.params[k].type ~= 'string' then v = M.parse_value(r, k, v) end
      if r.params[k].type == 'number' and math.type(v) == 'integer' then v = v + 0.0 end
      local ok, want = value_fits(r.params[k], v)
      if not ok then M.usage_error("param '%s' expects %s, got %s", k, want, tostring(v)) end
      M.check_range(r, k, v, k .. '=' .. value_text(v))
      params[k] = v
    end
  end
  return params
end

--- load(path [, overrides [, preset]]) -> recipe, params. Loads and checks a recipe
--- file; params are its defaults with the preset and overrides applied. For poking at a
--- recipe in the REPL:
---   r, p = ember.load_recipe('examples/tiny.lua'); state = r.build(p)
function M.load(path, overrides, preset)
  if type(path) ~= 'string' then
    error('load_recipe: path must be a string, got ' .. type(path), 2)
  end
  local regular, why = files.check_regular(path)
  if not regular then error('load_recipe: cannot open ' .. why, 0) end
  local chunk, err = loadfile(path)
  if not chunk then error('load_recipe: ' .. err, 0) end
  local ok, r = pcall(chunk)
  if not ok then error('recipe ' .. path .. ' raised an error while loading: ' .. tostring(r), 0) end
  M.validate(r, path)
  return r, M.resolve(r, overrides, preset)
end

--- help_text(recipe) -> the params table for `ember run --help recipe.lua`.
function M.help_text(r)
  local lines = {}
  lines[#lines + 1] = r.name .. (r.description and (' — ' .. r.description) or '')
  if r.main_metric then
    lines[#lines + 1] = string.format('main metric: %s (%s)', r.main_metric.name,
      r.main_metric.goal == 'min' and 'lower is better' or 'higher is better')
  end
  local presets = M.preset_names(r)
  if #presets > 0 then
    lines[#lines + 1] = ''
    lines[#lines + 1] = 'presets (--preset name; applied over the defaults, before --set):'
    local pw = 4
    for _, n in ipairs(presets) do pw = math.max(pw, #n) end
    for _, n in ipairs(presets) do
      lines[#lines + 1] = string.format('  %-' .. pw .. 's  %s', n, M.preset_text(r, n))
    end
  end
  lines[#lines + 1] = ''
  lines[#lines + 1] = 'params (--set name=value):'
  local names = M.param_names(r)
  local width = 4
  for _, n in ipairs(names) do width = math.max(width, #n) end
  for _, n in ipairs(names) do
    local p = r.params[n]
    local default = type(p.default) == 'number' and files.number(p.default) or tostring(p.default)
    local line = string.format('  %-' .. width .. 's  %-7s  default %-10s  %s', n, p.type, default, p.help or '')
    if p.choices then line = line .. ' (one of ' .. M.format_choices(p.choices) .. ')' end
    local range = M.range_text(M.bounds(r, n))
    if range then line = line .. ' (' .. range .. ')' end
    lines[#lines + 1] = line
  end
  if #names == 0 then lines[#lines + 1] = '  (none)' end
  return table.concat(lines, '\n')
end

-- ---------------------------------------------------------------------------------
-- Checkpoints: what of the state to save, and putting it back
-- ---------------------------------------------------------------------------------

-- Whether v is an object that saves itself (an nn.Module, an optimizer).
local function has_state_dict(v)
  if type(v) ~= 'table' and type(v) ~= 'userdata' then return false end
  local ok, sd, ld = pcall(function() return v.state_dict, v.load_state_dict end)
  return ok and type(sd) == 'function' and type(ld) == 'function'
end

local function is_tensor(v) return ember.is_tensor and ember.is_tensor(v) end

-- Seconds on a monotonic wall clock (ember._clock), or the calendar clock without it.
local function clock() return ember._clock and ember._clock() or os.time() end

-- Collects the savable parts of state: state_dict() of every object that has one,
-- tensors (cloned), numbers, strings and booleans, walking plain tables.
local function collect_state(t, seen)
  seen = seen or {}
  if seen[t] then return nil end
  seen[t] = true
  local out = {}
  for k, v in pairs(t) do
    if type(k) == 'string' or math.type(k) == 'integer' then
      if has_state_dict(v) then
        out[k] = v:state_dict()
      elseif is_tensor(v) then
        out[k] = v:detach():clone()
      elseif type(v) == 'table' and getmetatable(v) == nil then
        out[k] = collect_state(v, seen)
      elseif type(v) == 'number' or type(v) == 'string' or type(v) == 'boolean' then
        out[k] = v
      end
    end
  end
  return out
end

-- Puts saved parts back into the live state built by recipe.build (the mirror of
-- collect_state): objects get load_state_dict, tensors copy_, plain values are set.
local function restore_state(t, saved, seen)
  seen = seen or {}
  if seen[t] or type(saved) ~= 'table' then return end
  seen[t] = true
  for k, v in pairs(saved) do
    local live = t[k]
    if has_state_dict(live) then
      live:load_state_dict(v)
    elseif is_tensor(live) and is_tensor(v) then
      ember.no_grad(function() live:copy_(v) end)
    elseif type(live) == 'table' and getmetatable(live) == nil then
      restore_state(live, v, seen)
    elseif type(v) ~= 'table' then
      t[k] = v
    end
  end
end

--- snapshot(recipe, state) -> the table that goes into a checkpoint for state.
function M.snapshot(r, state)
  if r.checkpoint then return r.checkpoint(state) end
  if type(state) ~= 'table' then return {} end
  return collect_state(state)
end

--- restore(recipe, state, saved): puts a snapshot back into a freshly built state.
function M.restore(r, state, saved)
  if r.restore then return r.restore(state, saved) end
  if type(state) == 'table' then restore_state(state, saved) end
end

-- Every object in state that switches between training and evaluation mode.
local function modules_of(state, out, seen)
  out, seen = out or {}, seen or {}
  if type(state) ~= 'table' or seen[state] then return out end
  seen[state] = true
  for _, v in pairs(state) do
    if has_state_dict(v) then
      local ok, tr, ev = pcall(function() return v.train, v.eval end)
      if ok and type(tr) == 'function' and type(ev) == 'function' then out[#out + 1] = v end
    elseif type(v) == 'table' and getmetatable(v) == nil then
      modules_of(v, out, seen)
    end
  end
  return out
end

-- Calls fn() with every module of state in evaluation mode, then back in training mode.
local function in_eval_mode(state, fn, ...)
  local mods = modules_of(state)
  for _, m in ipairs(mods) do m:eval() end
  local res = table.pack(pcall(fn, ...))
  for _, m in ipairs(mods) do m:train() end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- Writes a checkpoint table atomically (ember.save writes a temporary file, fsyncs it
-- and renames it over path).
local function save_checkpoint(path, tbl) ember.save(path, tbl) end

-- Reads a checkpoint written by save_checkpoint.
local function load_checkpoint(path) return ember.load(path) end

-- ---------------------------------------------------------------------------------
-- The run loop
-- ---------------------------------------------------------------------------------

-- The log function handed to train_epoch / train_step: log{name = number or tensor}
-- adds values to the running means of the current metrics row. log.dir is the run folder.
local function new_logger(dir, dist)
  local acc = {sums = {}, counts = {}}
  local log = {dir = dir}
  setmetatable(log, {__call = function(_, values, value)
    if type(values) == 'string' then values = {[values] = value} end
    if type(values) ~= 'table' then
      error('log: expected a table {name = value}, got ' .. type(values), 2)
    end
    local numbers = {}
    for k, v in pairs(values) do
      if is_tensor(v) then v = v:item() end
      if type(k) ~= 'string' or type(v) ~= 'number' then
        error(string.format('log: %s must be a number or a one-element tensor, got %s',
              tostring(k), type(v)), 2)
      end
      numbers[k] = v
    end
    -- data-parallel: the value of the global batch, the ranks' values weighted by their
    -- shares (every rank logs the same names at the same points: one small all-reduce)
    if dist then numbers = dist.average_values(numbers) end
    for k, v in pairs(numbers) do
      acc.sums[k] = (acc.sums[k] or 0) + v
      acc.counts[k] = (acc.counts[k] or 0) + 1
    end
  end})
  -- Takes the means logged so far and starts afresh.
  local function take()
    local means = {}
    for k, s in pairs(acc.sums) do means[k] = s / acc.counts[k] end
    acc.sums, acc.counts = {}, {}
    return means
  end
  return log, take, acc
end

-- Turns data.train into an iterator over batches for one epoch. A batch is the
-- iterator's first value, or {x, y, ...} when it yields several.
local function batches_of(train, epoch)
  local it
  local mt = type(train) == 'table' and getmetatable(train)
  if type(train) == 'function' or (mt and mt.__call and not train.iter) then
    it = train(epoch)
  elseif type(train) == 'table' and type(train.iter) == 'function' then
    it = train:iter(epoch)
  elseif type(train) == 'table' and train[1] ~= nil then
    local i = 0
    it = function() i = i + 1 return train[i] end
  end
  if type(it) ~= 'function' then
    error('recipe: data.train must be a list of batches, a function(epoch) returning an ' ..
          'iterator, or a loader with :iter(epoch)', 0)
  end
  return function()
    local r = table.pack(it())
    if r[1] == nil then return nil end
    if r.n == 1 then return r[1] end
    r.n = nil
    return r
  end
end

-- Whether err is the Ctrl-C interrupt raised by the ember host program.
local function is_interrupt(err)
  return type(err) == 'string' and (err == 'interrupted' or err:match('interrupted$') ~= nil)
end

--- ember_bin() -> the path of the running ember program (EMBER_BIN, else /proc).
function M.ember_bin()
  local env = os.getenv('EMBER_BIN')
  if env and env ~= '' then return env end
  local exe = files.command_output('readlink /proc/$PPID/exe')
  if exe and exe:match('ember[^/]*$') then return exe end
  return 'ember'
end

-- The git revision of the repository holding dir, or nil.
local function git_revision(dir)
  return files.command_output('git -C ' .. files.quote(dir) .. ' rev-parse HEAD')
end

-- The process id of this ember process.
local function own_pid()
  return tonumber(files.command_output('echo $PPID'))
end

-- A fresh default run folder: runs/<name>-<timestamp>[-k].
--- default_run_dir(name) -> runs/<name>-<date>-<time> (with -2, -3 ... when taken).
function M.default_run_dir(name)
  local base = 'runs/' .. name .. '-' .. os.date('%Y%m%d-%H%M%S')
  local dir, k = base, 1
  while files.exists(dir .. '/config.lua') or files.is_dir(dir) do
    k = k + 1
    dir = base .. '-' .. k
  end
  return dir
end

-- Printing that also goes to the run's log file.
local function make_tee(log_path)
  local f = assert(io.open(log_path, 'ab'))
  f:setvbuf('line')
  local function say(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    local line = table.concat(parts, '\t')
    io.stdout:write(line, '\n')
    io.stdout:flush()
    f:write(line, '\n')
  end
  return say, f
end

-- Formats the numbers of a metrics row for the console: "name 0.1234  other 5".
local function format_metrics(values)
  local names = {}
  for k in pairs(values) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for _, k in ipairs(names) do
    local v = values[k]
    parts[#parts + 1] = k .. ' ' .. (type(v) == 'number' and string.format('%.6g', v) or tostring(v))
  end
  return table.concat(parts, '  ')
end

-- Reads DIR/config.lua of a run, with a clear message when it is not a run folder.
local function read_config(dir)
  local path = dir .. '/config.lua'
  if not files.exists(path) then
    M.usage_error('%s is not a run folder (no config.lua)', dir)
  end
  local cfg, err = files.read_lua(path)
  if type(cfg) ~= 'table' then error('cannot read ' .. path .. ': ' .. tostring(err), 0) end
  return cfg
end

-- Loads the recipe a run folder was made from: the original file, or the copy in the
-- folder when the original is gone. Whether the original still matches the copy is
-- checked before (M.recipe_change).
local function load_run_recipe(dir, cfg, say)
  local path = cfg.recipe
  if not (path and files.exists(path)) then
    path = dir .. '/recipe.lua'
    if say then say('note: ' .. tostring(cfg.recipe) .. ' is gone; using the copy ' .. path) end
  end
  local r = M.load(path)
  return r, path
end

-- The first line where texts a and b differ: its number, a's line and b's (nil past the end).
local function first_difference(a, b)
  local la, lb = {}, {}
  for line in (a .. '\n'):gmatch('([^\n]*)\n') do la[#la + 1] = line end
  for line in (b .. '\n'):gmatch('([^\n]*)\n') do lb[#lb + 1] = line end
  for i = 1, math.max(#la, #lb) do
    if la[i] ~= lb[i] then return i, la[i], lb[i] end
  end
  return 1, la[1], lb[1]
end

-- A source line for a message: trimmed, and cut to 60 characters around column `at`
-- (where it differs from the other version), so that the difference shows.
local function show_line(line, at)
  if line == nil then return '(end of file)' end
  local lead = #line:match('^%s*')
  line = line:match('^%s*(.-)%s*$')
  at = math.max(1, (at or 1) - lead)
  if #line > 60 then
    local from = math.max(1, math.min(at - 20, #line - 56))
    line = (from > 1 and '...' or '') .. line:sub(from, from + 56) .. (from + 56 < #line and '...' or '')
  end
  return '`' .. line .. '`'
end

-- The first column where strings a and b differ.
local function first_column(a, b)
  a, b = a or '', b or ''
  for i = 1, math.min(#a, #b) do
    if a:byte(i) ~= b:byte(i) then return i end
  end
  return math.min(#a, #b) + 1
end

--- file_change(path, copy, what, holder) -> nil when the recipe file at path holds what
--- its copy holds (or one of them is missing); else {path, copy, was, now, line, what,
--- text}: the two texts, the first differing line, a sentence saying what changed since
--- `what` ("run DIR") started, and that sentence with "; `holder` ("the run folder")
--- keeps the original as COPY".
function M.file_change(path, copy, what, holder)
  if type(path) ~= 'string' or not files.exists(path) or not copy or not files.exists(copy) then return nil end
  local now, was = files.read(path), files.read(copy)
  if now == nil or was == nil or now == was then return nil end
  local line, a, b = first_difference(was, now)
  local col = first_column(a, b)
  local said = string.format('recipe %s changed since %s started (first difference at line %d: was %s, now %s)',
                             path, what, line, show_line(a, col), show_line(b, col))
  return {path = path, copy = copy, was = was, now = now, line = line, what = said,
          text = string.format('%s; %s keeps the original as %s', said, holder, copy)}
end

--- recipe_change(dir, cfg) -> nil when run DIR's recipe file still holds what the copy
--- DIR/recipe.lua holds (or one of them is missing); else the change (see file_change).
function M.recipe_change(dir, cfg)
  return M.file_change(cfg.recipe, dir .. '/recipe.lua', 'run ' .. dir, 'the run folder')
end

--- keep_original(copy, text) -> the path COPY.orig-<n> (the first free n) now holding text.
function M.keep_original(copy, text)
  local n = 1
  while files.exists(copy .. '.orig-' .. n) do n = n + 1 end
  files.write_atomic(copy .. '.orig-' .. n, text)
  return copy .. '.orig-' .. n
end

-- Accepts a changed recipe for a resumed run: keeps the old copy as recipe.lua.orig-<n>,
-- makes the edited file the run's recipe.lua and records the change in config.lua.
-- Returns the sentence to warn with.
local function accept_recipe_change(dir, cfg, change, prev)
  local kept = M.keep_original(change.copy, change.was)
  files.write_atomic(change.copy, change.now)
  cfg.recipe_changes = cfg.recipe_changes or {}
  -- epoch and step: where the run stands (the interrupted run's result; the checkpoint's
  -- progress replaces them once it is loaded)
  cfg.recipe_changes[#cfg.recipe_changes + 1] = {
    at = os.date('!%Y-%m-%dT%H:%M:%SZ'), line = change.line, kept = kept:match('[^/]+$'),
    epoch = type(prev) == 'table' and prev.epoch or nil, step = type(prev) == 'table' and prev.step or nil,
  }
  files.write_lua(dir .. '/config.lua', cfg)
  return string.format('WARNING: resuming with an edited recipe (--allow-changed-recipe): %s. From here ' ..
                       'on the run trains with the edited file, so it is no longer one run bit for bit: ' ..
                       '%s is now the edited recipe, the original is kept as %s, and config.lua ' ..
                       'lists the change (recipe_changes).', change.what, change.copy, kept)
end

-- Checks that every saved param still exists in the recipe with a fitting value.
local function check_saved_params(r, params, dir)
  local out = M.defaults(r)
  for k, v in pairs(params) do
    if not r.params[k] then
      M.usage_error("run %s has param '%s' that recipe %s no longer declares", dir, k, r.name)
    end
    out[k] = v
  end
  return out
end

-- Says where an interrupted run stopped and how to go on; returns its progress.
local function report_interrupt(dir, r, epochs, ckpt_path, say)
  local saved = files.exists(ckpt_path) and load_checkpoint(ckpt_path) or nil
  local resume = 'Resume with: ember run --resume ' .. files.quote(dir)
  local pr = saved and saved.progress
  local message
  if not pr then
    message = 'interrupted before the first checkpoint; ember run --resume ' .. files.quote(dir) ..
              ' starts it again'
  elseif pr.epoch >= epochs then
    message = 'interrupted after the last epoch, while drawing samples; the checkpoint is final. ' .. resume
  elseif pr.epoch_step > 0 then
    message = string.format('interrupted at step %d (epoch %d); checkpoint saved. %s', pr.step,
                            pr.epoch + 1, resume)
  elseif r.train_step then
    message = string.format('interrupted after epoch %d (step %d); checkpoint saved. %s', pr.epoch,
                            pr.step, resume)
  else
    message = string.format('interrupted during epoch %d; the checkpoint holds epoch %d, where ' ..
                            '--resume continues. %s', pr.epoch + 1, pr.epoch, resume)
  end
  say(message)
  return pr or {epoch = 0, step = 0}
end

--- run(opts) -> exit status. opts: recipe (path), sets (list of "k=v"), preset (name),
--- out, seed, threads, resume (run folder), allow_changed_recipe (resume although the
--- recipe file changed). 0 finished, 1 the recipe failed, 130 interrupted.
--- Raises a UsageError for a bad command line.
function M.run(opts)
  local wall_start = clock()
  local r, recipe_path, params, dir, cfg
  local resuming = opts.resume ~= nil
  -- Data-parallel when an MPI launcher started this process (`ember run --nproc N`,
  -- mpirun, srun): every rank runs the recipe on its shard of each batch; rank 0 (the
  -- leader) alone writes the run folder.
  local dist = require 'ember.dist'
  local parallel = dist.launched()
  local rank, world = 0, 1
  if parallel then
    rank, world = dist.init()
    dist.data_parallel(true)
    dist.defer_interrupts() -- Ctrl-C / SIGTERM: every rank stops at the same step
  end
  local leader = rank == 0
  local change_warning -- set when an edited recipe is accepted on resume
  if resuming then
    dir = opts.resume:gsub('/+$', '')
    cfg = read_config(dir)
    if opts.sets and #opts.sets > 0 then
      M.usage_error('--resume takes the params from %s/config.lua; drop --set', dir)
    end
    if opts.preset then
      M.usage_error('--resume takes the params from %s/config.lua (preset %s); drop --preset', dir,
                    tostring(cfg.preset or 'none'))
    end
    local prev = files.read_lua(dir .. '/result.lua')
    if type(prev) == 'table' and prev.status == 'finished' then
      print(string.format('nothing to do: run %s already finished', dir))
      return 0
    end
    local change = M.recipe_change(dir, cfg)
    if change and not opts.allow_changed_recipe then
      M.usage_error('%s.\nResuming would train on with the edited recipe, so the run would no longer ' ..
                    'be one run bit for bit. Either restore the original (cp %s %s) and resume, or ' ..
                    'accept the edit with `ember run --resume %s --allow-changed-recipe` (the edited ' ..
                    'recipe becomes %s, the original is kept beside it as recipe.lua.orig-<n>), or start ' ..
                    'a new run.', change.text, files.quote(change.copy), files.quote(change.path),
                    files.quote(dir), change.copy)
    end
    r, recipe_path = load_run_recipe(dir, cfg)
    params = check_saved_params(r, cfg.params or {}, dir)
    if change and leader then change_warning = accept_recipe_change(dir, cfg, change, prev) end
  else
    if opts.allow_changed_recipe then
      M.usage_error('--allow-changed-recipe goes with --resume DIR (a new run copies the recipe as it is)')
    end
    if not opts.recipe then M.usage_error('missing the recipe file (ember run recipe.lua ...)') end
    if not files.exists(opts.recipe) then M.usage_error('cannot open recipe %s', opts.recipe) end
    recipe_path = files.absolute(opts.recipe)
    r = M.load(recipe_path)
    params = M.resolve(r, opts.sets or {}, opts.preset)
    dir = opts.out and opts.out:gsub('/+$', '') or M.default_run_dir(r.name)
    if parallel and not opts.out then dir = dist.broadcast(dir) end -- the leader's choice
    if files.exists(dir .. '/config.lua') then
      M.usage_error('%s already holds a run; continue it with `ember run --resume %s` or choose another --out',
                    dir, dir)
    end
    cfg = {
      recipe = recipe_path, name = r.name, params = params, preset = opts.preset,
      seed = opts.seed or 1,
      threads = opts.threads or (ember.get_num_threads and ember.get_num_threads()) or 1,
      ember_version = ember.version, git = git_revision(files.dirname(recipe_path)),
      started = os.date('!%Y-%m-%dT%H:%M:%SZ'), mode = r.train_step and 'step' or 'epoch',
    }
    if parallel then
      cfg.world_size = world
      dist.barrier() -- every rank has checked the folder before the leader fills it
    end
    if leader then
      files.mkdir(dir)
      files.write_lua(dir .. '/config.lua', cfg)
      local src = files.read(recipe_path)
      if src then files.write_atomic(dir .. '/recipe.lua', src) end
    end
    if parallel then dist.barrier() end
  end
  if opts.threads and resuming and opts.threads ~= cfg.threads then
    M.usage_error('run %s was made with %d threads; resume it with the same count (the loss ' ..
                  'curve is reproducible only at the same thread count)', dir, cfg.threads)
  end

  local say, log_file
  if leader then
    say, log_file = make_tee(dir .. '/log')
  else -- the other ranks stay silent: the leader speaks for the run
    say = function() end
  end
  if change_warning and leader then
    io.stderr:write(change_warning, '\n')
    log_file:write(change_warning, '\n')
  end
  local old_print = print
  print = say -- the recipe's own prints go to the log too
  local pid = own_pid()
  if pid and leader then files.write_atomic(dir .. '/pid', tostring(pid) .. '\n') end
  local ckpt_path = dir .. '/checkpoint'
  local epochs = params.epochs or 1
  local status, message
  local save_interrupted -- step mode: saves the checkpoint of the last whole step
  local failing_at -- "step 37 (epoch 1)" while a train_step/train_epoch runs: names a failure

  local function finish(res)
    print = old_print
    res.seconds = clock() - wall_start
    if not leader then return end
    if parallel then res.world_size = world end
    files.write_lua(dir .. '/result.lua', res)
    os.remove(dir .. '/pid')
    if io.type(log_file) == 'file' then log_file:close() end
  end

  local ok, err = xpcall(function()
    if ember.set_num_threads then ember.set_num_threads(cfg.threads) end
    ember.manual_seed(cfg.seed)
    local with_preset = cfg.preset and (', preset ' .. tostring(cfg.preset)) or ''
    if resuming then
      say(string.format('resuming %s (recipe %s%s, seed %d, %d threads)', dir, r.name, with_preset, cfg.seed,
                        cfg.threads))
    else
      say(string.format('run %s: recipe %s%s, seed %d, %d threads%s', dir, r.name, with_preset, cfg.seed,
                        cfg.threads, parallel and string.format(' per rank, %d ranks (data-parallel)', world) or ''))
      if cfg.preset then say(string.format('preset %s: %s', cfg.preset, M.preset_text(r, cfg.preset))) end
      local shown = {}
      for _, n in ipairs(M.param_names(r)) do
        local v = params[n]
        shown[#shown + 1] = n .. '=' .. (type(v) == 'number' and files.number(v) or tostring(v))
      end
      if #shown > 0 then say('params: ' .. table.concat(shown, ' ')) end
    end
    local state = r.build(params)
    local data = r.data and r.data(params) or {}
    if parallel then
      local batch = params.batch or params.batch_size
      if math.type(batch) == 'integer' and batch < world then
        error(string.format('data-parallel: the batch of %d rows cannot be split over %d ranks ' ..
                            '(each needs at least one row); use fewer ranks or a larger batch', batch, world), 0)
      end
    end
    local step_mode = r.train_step ~= nil
    -- step mode, data-parallel: the runner takes each rank's rows of data.train's
    -- batches, unless data.train is a loader that does so itself
    local runner_shards = parallel and step_mode and
      not (type(data.train) == 'table' and data.train.shard == true and type(data.train.iter) == 'function')
    local log_every = params.log_every or 1
    local ckpt_every = params.checkpoint_every
    local progress = {epoch = 0, step = 0, epoch_step = 0, rows = 0}
    local rng_epoch_start
    local log, take, acc = new_logger(dir, parallel and dist or nil)

    local saved = resuming and files.exists(ckpt_path) and load_checkpoint(ckpt_path) or nil
    if saved then
      M.restore(r, state, saved.state)
      progress = saved.progress
      rng_epoch_start = saved.rng_epoch_start
      acc.sums, acc.counts = saved.log_window.sums, saved.log_window.counts
      ember.set_rng_state(saved.rng)
      if progress.epoch_step > 0 then
        say(string.format('continuing after step %d (part-way through epoch %d)', progress.step, progress.epoch + 1))
      else
        say(string.format('continuing after epoch %d (step %d)', progress.epoch, progress.step))
      end
    elseif resuming then
      say('no checkpoint yet: starting from the beginning')
    end
    if change_warning then -- the accepted edit applies from this point of the run on
      local entry = cfg.recipe_changes[#cfg.recipe_changes]
      entry.epoch, entry.step = progress.epoch, progress.step
      files.write_lua(dir .. '/config.lua', cfg)
    end
    if parallel then
      -- every rank starts from the leader's weights (they agree already when each built
      -- them from the same seed or restored the same checkpoint: this makes it certain)
      for _, m in ipairs(modules_of(state)) do
        if type(m.parameters) == 'function' then dist.broadcast_module_(m) end
      end
    end
    local metrics
    if leader then
      metrics = metrics_open(dir .. '/metrics.csv', step_mode and {'epoch', 'step'} or {'epoch'},
                             progress.rows)
    else -- counts the rows the leader writes, so every rank's progress agrees
      metrics = {count = progress.rows, write = function(self) self.count = self.count + 1 return self.count end}
    end
    local last_eval = saved and saved.last_eval or {}

    -- Saves the checkpoint for the current progress; rng is the generator state that
    -- belongs to that progress (default: the current one).
    local function checkpoint(rng)
      if not leader then return end
      save_checkpoint(ckpt_path, {
        format = 'ember-run', progress = progress, state = M.snapshot(r, state),
        rng = rng or ember.get_rng_state(), rng_epoch_start = rng_epoch_start,
        log_window = {sums = acc.sums, counts = acc.counts}, last_eval = last_eval,
      })
    end

    -- Evaluates, writes the epoch's row, prints the epoch line.
    local function end_epoch(epoch, row, t0)
      local values = {}
      if r.evaluate then
        values = in_eval_mode(state, r.evaluate, state, data) or {}
        if type(values) ~= 'table' then error('recipe: evaluate must return a table of metrics', 0) end
        for k, v in pairs(values) do
          if is_tensor(v) then values[k] = v:item() end
          if row[k] ~= nil then
            error(string.format("recipe: metric '%s' is both logged during training and returned by evaluate", k), 0)
          end
          row[k] = values[k]
        end
      end
      last_eval = values
      progress.rows = metrics:write(row)
      local shown = {}
      for k, v in pairs(row) do if k ~= 'epoch' and k ~= 'step' then shown[k] = v end end
      say(string.format('epoch %d/%d  %s  (%.2f s)', epoch, epochs, format_metrics(shown), clock() - t0))
    end

    if step_mode then
      -- The loop runs in a coroutine that yields after each step and each epoch, with
      -- everything (model, optimizer, RNG, metrics rows, counters) consistent. The host
      -- sets its Ctrl-C hook on the main thread only, so "interrupted" is raised in the
      -- main thread between two resumes, and the checkpoint saved then is exact.
      local consistent_rng = ember.get_rng_state()
      local loop = coroutine.create(function()
        for epoch = progress.epoch + 1, epochs do
          local t0 = clock()
          local skip = progress.epoch_step
          if skip > 0 then ember.set_rng_state(rng_epoch_start)
          else rng_epoch_start = ember.get_rng_state() end
          local next_batch = batches_of(data.train, epoch)
          for _ = 1, skip do
            if next_batch() == nil then error('recipe: data.train gave fewer batches on resume', 0) end
          end
          if skip > 0 then ember.set_rng_state(saved.rng) end
          while true do
            local batch = next_batch()
            if batch == nil then break end
            local step = progress.step + 1
            if runner_shards then batch = dist.shard(batch) end -- this rank's rows of the global batch
            failing_at = string.format('step %d (epoch %d)', step, epoch)
            r.train_step(state, batch, step, log)
            failing_at = nil
            if parallel then dist.end_shard() end
            progress.step, progress.epoch_step = step, progress.epoch_step + 1
            if step % log_every == 0 then
              local row = take()
              if next(row) ~= nil then
                row.epoch, row.step = epoch, step
                progress.rows = metrics:write(row)
              end
            end
            consistent_rng = ember.get_rng_state()
            if ckpt_every and ckpt_every > 0 and step % ckpt_every == 0 then checkpoint(consistent_rng) end
            coroutine.yield()
          end
          end_epoch(epoch, {epoch = epoch, step = progress.step}, t0)
          progress.epoch, progress.epoch_step, rng_epoch_start = epoch, 0, nil
          consistent_rng = ember.get_rng_state()
          if not ckpt_every or ckpt_every <= 0 or epoch == epochs then checkpoint(consistent_rng) end
          coroutine.yield()
        end
      end)
      local ok_loop, loop_err = pcall(function()
        while coroutine.status(loop) ~= 'dead' do
          local ok_co, co_err = coroutine.resume(loop)
          if not ok_co then
            -- an interrupt raised inside the loop (the data loader's poll) stays one: with a
            -- traceback appended is_interrupt would not know it, and no checkpoint was saved
            if is_interrupt(co_err) then error(co_err, 0) end
            error(debug.traceback(loop, tostring(co_err)), 0)
          end
          if parallel then dist.poll_interrupt() end
        end
      end)
      if not ok_loop then
        if is_interrupt(loop_err) then
          save_interrupted = function() checkpoint(consistent_rng) end
        end
        error(loop_err, 0)
      end
    else
      for epoch = progress.epoch + 1, epochs do
        local t0 = clock()
        failing_at = string.format('epoch %d', epoch)
        r.train_epoch(state, data, epoch, log)
        failing_at = nil
        local row = take()
        row.epoch = epoch
        end_epoch(epoch, row, t0)
        progress.epoch = epoch
        if not ckpt_every or ckpt_every <= 0 or epoch % ckpt_every == 0 or epoch == epochs then checkpoint() end
      end
    end
    if parallel then dist.data_parallel(false) end -- what follows runs on the leader alone
    if r.sample and leader then
      local out_dir = dir .. '/samples'
      files.mkdir(out_dir)
      in_eval_mode(state, r.sample, state, params, out_dir, params.n_samples or 64)
    end
    say(string.format('finished %s: %s', dir, format_metrics(last_eval)))
    if r.sample then -- last, so a user sees where to look
      local pictures = {}
      for _, name in ipairs(files.list(dir .. '/samples') or {}) do
        if name:match('%.png$') or name:match('%.svg$') then pictures[#pictures + 1] = name end
      end
      say(string.format('run folder: %s; pictures in %s/samples: %s', dir, dir,
        #pictures > 0 and table.concat(pictures, ', ') or '(none written)'))
    else
      say('run folder: ' .. dir)
    end
    status = {status = 'finished', epoch = progress.epoch, step = progress.step, metrics = last_eval}
  end, function(e)
    if is_interrupt(e) then return 'interrupted' end
    if M.is_usage_error(e) then return e end
    return debug.traceback(tostring(e), 2)
  end)

  if ok then
    finish(status)
    if parallel then -- all ranks are done with the communicator
      dist.barrier()
      dist.finalize()
    end
    return 0
  end
  if M.is_usage_error(err) then
    finish({status = 'failed', error = err.msg})
    if parallel then dist.abort(2) end
    error(err, 0)
  end
  if is_interrupt(err) then
    -- Saving must survive another Ctrl-C (an impatient user, or a sweep driver passing
    -- one on): the host re-arms its handler, so a second one raises "interrupted" again;
    -- the save is then simply redone (ember.save is atomic).
    local saved_now, where, done = not save_interrupted, nil, false
    for _ = 1, 5 do
      pcall(function()
        if not saved_now then save_interrupted(); saved_now = true end
        where = where or report_interrupt(dir, r, epochs, ckpt_path, say)
        if not done then
          finish({status = 'interrupted', error = 'interrupted', epoch = where.epoch, step = where.step})
          done = true
        end
      end)
      if done then break end
    end
    if parallel then -- every rank stopped at the same step; the leader has saved
      pcall(dist.barrier)
      dist.finalize()
    end
    return 130
  end
  message = tostring(err)
  if failing_at then message = 'at ' .. failing_at .. ': ' .. message end
  if log_file then log_file:write('error: ', message, '\n') end
  io.stderr:write('ember run: error in recipe ', r.name, parallel and string.format(' (rank %d of %d)', rank, world) or '',
                  ': ', message, '\n')
  finish({status = 'failed', error = message:match('^[^\n]*')})
  -- the other ranks may be waiting for this one in a collective: end them all now
  -- (a rank other than the leader first gives the leader, failing alike, 2 s to
  -- write result.lua: the abort ends every rank at once)
  if parallel then
    io.stderr:flush()
    if not leader then
      local t0 = clock()
      while clock() - t0 < 2 do end
    end
    dist.abort(1)
  end
  return 1
end

-- "N thread(s)" the sampling ran with
local function threads_text()
  local t = ember.get_num_threads and ember.get_num_threads() or 1
  return t == 1 and '1 thread' or (t .. ' threads')
end

--- sample(opts) -> exit status. opts: dir (a run folder), n, out (a folder, or a file
--- name with an extension when the recipe writes one picture), seed, threads (default:
--- the run's), allow_changed_recipe.
function M.sample(opts)
  local dir = opts.dir and opts.dir:gsub('/+$', '')
  if not dir then M.usage_error('missing the run folder (ember sample DIR)') end
  local cfg = read_config(dir)
  local change = M.recipe_change(dir, cfg)
  if change and not opts.allow_changed_recipe then
    M.usage_error('%s.\nThe samples would come from the edited recipe, not the one the checkpoint was ' ..
                  'trained with. Either restore the original (cp %s %s), or accept the edit for these ' ..
                  'samples with `ember sample %s --allow-changed-recipe` (noted in %s/log; the run folder ' ..
                  'keeps its recipe.lua).', change.text, files.quote(change.copy), files.quote(change.path),
                  files.quote(dir), dir)
  end
  local r = load_run_recipe(dir, cfg, function(s) io.stderr:write(s, '\n') end)
  if not r.sample then M.usage_error('recipe %s has no sample function', r.name) end
  local ckpt_path = dir .. '/checkpoint'
  if not files.exists(ckpt_path) then
    M.usage_error('%s has no checkpoint yet (the run stopped before its first save)', dir)
  end
  local params = check_saved_params(r, cfg.params or {}, dir)
  if ember.set_num_threads then ember.set_num_threads(opts.threads or cfg.threads or 1) end
  ember.manual_seed(cfg.seed or 1)
  local state = r.build(params)
  local saved = load_checkpoint(ckpt_path)
  M.restore(r, state, saved.state)
  ember.manual_seed(opts.seed or os.time())
  local out = opts.out
  local single_file = out and out:match('%.[%w]+$') and not files.is_dir(out)
  local out_dir
  if single_file then
    out_dir = dir .. '/samples/.tmp-' .. os.time()
  elseif out then
    out_dir = out
  else
    out_dir = dir .. '/samples/' .. os.date('%Y%m%d-%H%M%S')
  end
  files.mkdir(out_dir)
  local n = opts.n or params.n_samples or 64
  if change then
    local warning = string.format('WARNING: sampling with an edited recipe (--allow-changed-recipe): %s. ' ..
                                  'The samples in %s come from the edited file; %s (the recipe the ' ..
                                  'checkpoint was trained with) stays as it is.', change.what, out or out_dir,
                                  change.copy)
    io.stderr:write(warning, '\n')
    local log = io.open(dir .. '/log', 'ab')
    if log then
      log:write(os.date('!%Y-%m-%dT%H:%M:%SZ'), ' ember sample: ', warning, '\n')
      log:close()
    end
  end
  in_eval_mode(state, r.sample, state, params, out_dir, n)
  local listing = io.popen('ls -1 ' .. files.quote(out_dir))
  local written = {}
  for name in listing:lines() do written[#written + 1] = name end
  listing:close()
  if single_file then
    if #written ~= 1 then
      os.execute('rm -rf ' .. files.quote(out_dir))
      M.usage_error('recipe %s wrote %d files; give --out a folder instead of %s', r.name, #written, out)
    end
    files.mkdir(files.dirname(out))
    local okmv = os.execute('mv ' .. files.quote(out_dir .. '/' .. written[1]) .. ' ' .. files.quote(out))
    os.execute('rm -rf ' .. files.quote(out_dir))
    if not okmv then error('cannot move the sample to ' .. out, 0) end
    print(string.format('wrote %s (%d samples from %s, epoch %d, %s)', out, n, dir, saved.progress.epoch,
                        threads_text()))
  else
    print(string.format('wrote %d file(s) in %s (%d samples from %s, epoch %d, %s)', #written, out_dir, n,
                        dir, saved.progress.epoch, threads_text()))
  end
  return 0
end

-- The preset of recipe r that run config cfg was made with: the one it records, else
-- (a run from before presets) the first whose every value the run's params hold.
local function preset_of(r, cfg)
  if cfg.preset then return cfg.preset end
  for _, name in ipairs(M.preset_names(r)) do
    local all = true
    for k, v in pairs(r.presets[name]) do
      if (cfg.params or {})[k] ~= v then all = false end
    end
    if all then return name end
  end
end

--- recipe.command_line(cfg, dir) -> the `ember run` command that makes the run whose
--- config.lua is cfg into dir: its preset (--preset), then only the params that differ
--- from the defaults with the preset applied, --out, --threads and a seed other than 1
--- (for results tables).
function M.command_line(cfg, dir)
  local path = cfg.recipe or '?'
  local root = path:match('^(.*)/examples/[^/]+$')
  if root then path = path:sub(#root + 2) end
  local parts = {'ember run', path}
  local ok, r = pcall(M.load, cfg.recipe)
  local defaults = ok and M.defaults(r) or {}
  local preset = ok and preset_of(r, cfg)
  if preset then
    parts[#parts + 1] = '--preset ' .. preset
    local okp, with_preset = pcall(M.resolve, r, {}, preset)
    if okp then defaults = with_preset end
  end
  local names = {}
  for k in pairs(cfg.params or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = cfg.params[k]
    if defaults[k] ~= v then
      parts[#parts + 1] = '--set ' .. k .. '=' .. (type(v) == 'number' and files.number(v) or tostring(v))
    end
  end
  parts[#parts + 1] = '--out ' .. dir
  parts[#parts + 1] = '--threads ' .. tostring(cfg.threads)
  if cfg.seed and cfg.seed ~= 1 then parts[#parts + 1] = '--seed ' .. cfg.seed end
  return table.concat(parts, ' ')
end

--- load_run(dir) -> recipe, params, state: a run folder's recipe with its state restored
--- from the checkpoint, for the REPL.
function M.load_run(dir)
  local cfg = read_config(dir)
  local change = M.recipe_change(dir, cfg)
  if change then io.stderr:write('warning: loading with the edited recipe: ', change.text, '\n') end
  local r = load_run_recipe(dir, cfg)
  local params = check_saved_params(r, cfg.params or {}, dir)
  ember.manual_seed(cfg.seed or 1)
  local state = r.build(params)
  if files.exists(dir .. '/checkpoint') then
    M.restore(r, state, load_checkpoint(dir .. '/checkpoint').state)
  end
  return r, params, state
end

return M
