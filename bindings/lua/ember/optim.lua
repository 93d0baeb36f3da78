-- ember.optim — optimizers, gradient clipping and learning-rate schedules.
--
--   local optim = require 'ember.optim'
--   local opt = optim.Adam(net:parameters(), {lr = 1e-3, betas = {0.9, 0.999}})
--   local sched = optim.CosineAnnealingLR(opt, {T_max = 1000})
--   for step = 1, 1000 do
--     opt:zero_grad()
--     local loss = ...; loss:backward()
--     optim.clip_grad_norm_(net:parameters(), 1.0)
--     opt:step(); sched:step()
--   end
--
-- Each optimizer owns its state (moment buffers, step counts, hyper-parameters),
-- so two optimizers — a GAN's generator and discriminator — never share any.
-- The update itself is one C call per step over the whole parameter list
-- (core/em_optim.c); parameters whose .grad is nil are skipped. The
-- hyper-parameters are plain fields: opt.lr = 1e-4 takes effect at the next step.
local ember = require 'ember'
local K = ember._optim_kernels

local optim = {}

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

-- ---- hyper-parameter checks ---------------------------------------------------

local function is_number(v) return type(v) == 'number' and v == v end

local checks = {
  nonneg = function(v) return is_number(v) and v >= 0 and v < math.huge end,
  unit_closed = function(v) return is_number(v) and v >= 0 and v <= 1 end,
  boolean = function(v) return type(v) == 'boolean' end,
  nonfinite = function(v) return v == 'error' or v == 'skip' end,
  betas = function(v)
    return type(v) == 'table' and is_number(v[1]) and is_number(v[2]) and v[3] == nil
      and v[1] >= 0 and v[1] < 1 and v[2] >= 0 and v[2] < 1
  end,
}
local expected = {
  nonneg = 'a finite number >= 0',
  unit_closed = 'a number in [0, 1]',
  boolean = 'a boolean',
  nonfinite = "'error' or 'skip'",
  betas = 'a table {beta1, beta2} with each in [0, 1)',
}

local function describe(v)
  if type(v) == 'table' then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = tostring(x) end
    return '{' .. table.concat(parts, ', ') .. '}'
  end
  return tostring(v)
end

-- ---- the optimizer base class ------------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer

-- A list of distinct tensors from params: a list of tensors, a single tensor,
-- or anything with a :parameters() method (a network).
local function param_list(name, params)
  if ember.is_tensor(params) then params = { params } end
  if type(params) == 'table' and type(params.parameters) == 'function' then
    params = params:parameters()
  end
  if type(params) ~= 'table' then
    error(('%s: bad argument #1 \'params\' (expected a list of tensors, got %s)'):format(name, type(params)), 3)
  end
  local list, seen = {}, {}
  for i, p in ipairs(params) do
    if not ember.is_tensor(p) then
      error(('%s: bad argument #1 \'params\' (item %d: expected tensor, got %s)'):format(name, i, type(p)), 3)
    end
    local key = K.tensor_key(p)
    if seen[key] then
      error(('%s: bad argument #1 \'params\' (item %d is the same tensor as item %d)'):format(name, i, seen[key]), 3)
    end
    seen[key] = i
    list[i] = p
  end
  if #list == 0 then
    error(('%s: bad argument #1 \'params\' (expected a non-empty list of tensors)'):format(name), 3)
  end
  return list
end

-- Checks one hyper-parameter value against the class's spec.
local function check_option(cls, key, v, level)
  local kind = cls.option_kinds[key]
  if not kind then
    error(('%s: unknown option \'%s\' (expected %s)'):format(cls.name, tostring(key),
      table.concat(cls.option_order, ', ')), level + 1)
  end
  if not checks[kind](v) then
    error(('%s: option \'%s\' must be %s, got %s'):format(cls.name, key, expected[kind], describe(v)), level + 1)
  end
end

-- Cross-option rules (the class's own `validate`, if any).
local function check_all(self, level)
  local cls = getmetatable(self)
  for _, key in ipairs(cls.option_order) do check_option(cls, key, self[key], level + 1) end
  if cls.validate then
    local msg = cls.validate(self)
    if msg then error(cls.name .. ': ' .. msg, level + 1) end
  end
end

local function copy_value(v)
  if type(v) == 'table' then return { v[1], v[2] } end
  return v
end

-- Makes an optimizer class from its spec: name, kind (the C update), options
-- (a list of {name, kind, default}; a nil default means required) and buffers(self)
-- (the names of the per-parameter buffers the current settings need).
local function optimizer_class(spec)
  local cls = setmetatable({}, { __index = Optimizer })
  cls.__index = cls
  cls.name, cls.kind, cls.buffers, cls.validate = spec.name, spec.kind, spec.buffers, spec.validate
  cls.option_kinds, cls.option_order, cls.defaults = {}, {}, {}
  -- every optimizer: what a step does when a gradient holds NaN or inf
  local options = { table.unpack(spec.options) }
  options[#options + 1] = { 'on_nonfinite', 'nonfinite', 'error' }
  for _, o in ipairs(options) do
    cls.option_kinds[o[1]] = o[2]
    cls.option_order[#cls.option_order + 1] = o[1]
    cls.defaults[o[1]] = o[3]
  end
  cls.__tostring = Optimizer.__tostring
  setmetatable(cls, {
    __index = Optimizer,
    __call = function(_, params, opts) return cls.new(params, opts) end,
  })
  function cls.new(params, opts)
    local list = param_list(cls.name, params)
    if opts ~= nil and type(opts) ~= 'table' then
      error(('%s: bad argument #2 \'opts\' (expected an options table, got %s)'):format(cls.name, type(opts)), 3)
    end
    opts = opts or {}
    local self = setmetatable({ params = list, state = {} }, cls)
    for key, v in pairs(opts) do check_option(cls, key, v, 3) end
    for _, key in ipairs(cls.option_order) do
      local v = opts[key]
      if v == nil then v = cls.defaults[key] end
      if v == nil then
        error(('%s: option \'%s\' is required'):format(cls.name, key), 3)
      end
      self[key] = copy_value(v)
    end
    check_all(self, 3)
    for i = 1, #list do self.state[i] = { step = 0 } end
    self:_ensure_buffers()
    return self
  end
  return cls
end

-- Allocates (zeros) the buffers the current settings need and are missing.
function Optimizer:_ensure_buffers()
  local names = self:buffers()
  local sig = table.concat(names, ',')
  if sig == self._buffer_sig then return end
  for i, p in ipairs(self.params) do
    for _, name in ipairs(names) do
      if not self.state[i][name] then self.state[i][name] = ember.zeros_like(p) end
    end
  end
  self._buffer_sig = sig
end

-- "parameter 'enc.fc1.weight' (#3 of 8, [400 x 784])", or without the name
-- when the tensor never came from a module's parameters().
local function describe_parameter(self, i)
  local p = self.params[i]
  local ok, nn = pcall(require, 'ember.nn')
  local name = ok and nn._parameter_name(p) or nil
  local where = ('#%d of %d, %s'):format(i, #self.params, shape_str(p))
  if name then return ("parameter '%s' (%s)"):format(name, where) end
  return ('parameter %s'):format(where)
end

--- opt:step() -> true: one update of every parameter that has a gradient.
-- A gradient holding NaN or inf would spread into every parameter and moment
-- buffer, so such a step is refused before anything changes: an error naming
-- the first such parameter (on_nonfinite = 'error', the default), or, with
-- on_nonfinite = 'skip', no update and a false return (opt.skipped_steps
-- counts them; loss scaling in mixed precision works this way).
function Optimizer:step()
  -- data-parallel (ember.dist): every rank first gets the gradients averaged over the
  -- ranks, so all apply the same update (and agree on refusing a non-finite one)
  local dist = package.loaded['ember.dist']
  if dist and dist.is_data_parallel() then dist.average_gradients_(self.params) end
  local bad, count = K.first_nonfinite_grad(self.params)
  if bad then
    if self.on_nonfinite == 'skip' then
      self.skipped_steps = (self.skipped_steps or 0) + 1
      return false
    end
    local g = self.params[bad].grad
    error(('%s:step: the gradient of %s holds %d NaN or infinite value%s of %d: the step is '
      .. 'refused and nothing changed (look for a NaN loss, or an op whose gradient is '
      .. 'undefined there, e.g. sqrt or log at 0; on_nonfinite = \'skip\' skips such steps)'):format(
      getmetatable(self).name, describe_parameter(self, bad), count, count == 1 and '' or 's',
      g:numel()), 2)
  end
  self:_ensure_buffers()
  K.step(self.kind, self.params, self.state, self)
  return true
end

--- opt:zero_grad([set_to_none = true]): drops every parameter's .grad (or,
-- with false, fills it with zeros).
function Optimizer:zero_grad(set_to_none)
  if set_to_none == false then
    ember.no_grad(function()
      for _, p in ipairs(self.params) do
        local g = p.grad
        if g then g:zero_() end
      end
    end)
  else
    for _, p in ipairs(self.params) do p.grad = nil end
  end
end

--- opt:state_dict() -> {type =, hyper = {...}, state = {{step =, <buffer> = tensor, ...}, ...}}
-- A snapshot: the tensors are copies, so training on does not change it.
function Optimizer:state_dict()
  local cls = getmetatable(self)
  local hyper = {}
  for _, key in ipairs(cls.option_order) do hyper[key] = copy_value(self[key]) end
  local state = {}
  for i, s in ipairs(self.state) do
    local copy = { step = s.step }
    for _, name in ipairs(self:buffers()) do copy[name] = s[name]:clone() end
    state[i] = copy
  end
  return { type = cls.name, hyper = hyper, state = state }
end

--- opt:load_state_dict(sd): restores hyper-parameters, buffers and step
-- counts (copied into this optimizer's own tensors). Everything is checked
-- before anything changes.
function Optimizer:load_state_dict(sd)
  local cls = getmetatable(self)
  local fname = cls.name .. ':load_state_dict'
  if type(sd) ~= 'table' then
    error(('%s: expected a state dict table, got %s'):format(fname, type(sd)), 2)
  end
  if sd.type ~= cls.name then
    error(('%s: the state dict is for %s, not %s'):format(fname, tostring(sd.type), cls.name), 2)
  end
  if type(sd.hyper) ~= 'table' or type(sd.state) ~= 'table' then
    error(('%s: the state dict needs tables \'hyper\' and \'state\''):format(fname), 2)
  end
  if #sd.state ~= #self.params then
    error(('%s: the state dict holds state for %d parameters, this optimizer has %d'):format(
      fname, #sd.state, #self.params), 2)
  end
  -- hyper-parameters, checked on a trial copy
  local trial = setmetatable({}, cls)
  for _, key in ipairs(cls.option_order) do trial[key] = copy_value(self[key]) end
  for key, v in pairs(sd.hyper) do
    local ok, err = pcall(check_option, cls, key, v, 1)
    if not ok then error(fname .. ': ' .. tostring(err):gsub('^' .. cls.name .. ': ', ''), 2) end
    trial[key] = copy_value(v)
  end
  local ok, err = pcall(check_all, trial, 1)
  if not ok then error(fname .. ': ' .. tostring(err):gsub('^' .. cls.name .. ': ', ''), 2) end
  -- per-parameter state
  local names = trial:buffers()
  for i, s in ipairs(sd.state) do
    if type(s) ~= 'table' then
      error(('%s: state %d must be a table, got %s'):format(fname, i, type(s)), 2)
    end
    if math.type(s.step) ~= 'integer' or s.step < 0 then
      error(('%s: the step count of parameter %d must be an integer >= 0, got %s'):format(
        fname, i, tostring(s.step)), 2)
    end
    for _, name in ipairs(names) do
      local b = s[name]
      if b ~= nil then
        if not ember.is_tensor(b) then
          error(('%s: %s of parameter %d must be a tensor, got %s'):format(fname, name, i, type(b)), 2)
        end
        local p = self.params[i]
        local same = b:dim() == p:dim() and b:numel() == p:numel()
        for d = 1, p:dim() do same = same and b:size(d) == p:size(d) end
        if not same then
          error(('%s: %s of parameter %d is %s, the parameter is %s'):format(
            fname, name, i, shape_str(b), shape_str(p)), 2)
        end
      elseif s.step > 0 then
        error(('%s: the state of parameter %d has no %s'):format(fname, i, name), 2)
      end
    end
  end
  -- all checked: apply
  for _, key in ipairs(cls.option_order) do self[key] = trial[key] end
  self:_ensure_buffers()
  ember.no_grad(function()
    for i, s in ipairs(sd.state) do
      local own = self.state[i]
      own.step = s.step
      for _, name in ipairs(names) do
        if s[name] then own[name]:copy_(s[name]) else own[name]:zero_() end
      end
    end
  end)
end

function Optimizer:__tostring()
  local cls = getmetatable(self)
  local parts = {}
  for _, key in ipairs(cls.option_order) do parts[#parts + 1] = key .. '=' .. describe(self[key]) end
  return ('%s(%d parameters; %s)'):format(cls.name, #self.params, table.concat(parts, ', '))
end

-- ---- the optimizers ----------------------------------------------------------------

--- optim.SGD(params, {lr =, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false})
optim.SGD = optimizer_class {
  name = 'SGD', kind = 'SGD',
  options = {
    { 'lr', 'nonneg', nil }, { 'momentum', 'nonneg', 0 }, { 'dampening', 'unit_closed', 0 },
    { 'weight_decay', 'nonneg', 0 }, { 'nesterov', 'boolean', false },
  },
  buffers = function(self) return self.momentum > 0 and { 'momentum_buffer' } or {} end,
  validate = function(self)
    if self.nesterov and (self.momentum <= 0 or self.dampening ~= 0) then
      return ('nesterov needs momentum > 0 and dampening 0, got momentum %g and dampening %g'):format(
        self.momentum, self.dampening)
    end
  end,
}

local adam_options = function(weight_decay)
  return {
    { 'lr', 'nonneg', 1e-3 }, { 'betas', 'betas', { 0.9, 0.999 } }, { 'eps', 'nonneg', 1e-8 },
    { 'weight_decay', 'nonneg', weight_decay }, { 'amsgrad', 'boolean', false },
  }
end
local function adam_buffers(self)
  if self.amsgrad then return { 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq' } end
  return { 'exp_avg', 'exp_avg_sq' }
end

--- optim.Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0, amsgrad = false})
-- weight_decay adds wd * p to the gradient (L2).
optim.Adam = optimizer_class {
  name = 'Adam', kind = 'Adam', options = adam_options(0), buffers = adam_buffers,
}

--- optim.AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, amsgrad = false})
-- decoupled weight decay: p = p * (1 - lr * wd) before the Adam update.
optim.AdamW = optimizer_class {
  name = 'AdamW', kind = 'AdamW', options = adam_options(1e-2), buffers = adam_buffers,
}

--- optim.RMSprop(params, {lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0, centered = false})
optim.RMSprop = optimizer_class {
  name = 'RMSprop', kind = 'RMSprop',
  options = {
    { 'lr', 'nonneg', 1e-2 }, { 'alpha', 'unit_closed', 0.99 }, { 'eps', 'nonneg', 1e-8 },
    { 'weight_decay', 'nonneg', 0 }, { 'momentum', 'nonneg', 0 }, { 'centered', 'boolean', false },
  },
  buffers = function(self)
    local names = { 'square_avg' }
    if self.momentum > 0 then names[#names + 1] = 'momentum_buffer' end
    if self.centered then names[#names + 1] = 'grad_avg' end
    return names
  end,
}

optim.Optimizer = Optimizer

-- ---- clipping ------------------------------------------------------------------------

local function clip_params(fname, params)
  if type(params) == 'table' and not ember.is_tensor(params) and type(params.parameters) == 'function' then
    return params:parameters()
  end
  return params
end

--- optim.clip_grad_norm_(params, max_norm [, norm_type = 2]) -> the total norm
-- of all gradients together (before clipping). Scales the gradients in place
-- so that their norm is at most max_norm; norm_type may be math.huge (max-norm).
-- A non-finite norm is returned with the gradients left as they are.
function optim.clip_grad_norm_(params, max_norm, norm_type)
  if not is_number(max_norm) then
    error(('clip_grad_norm_: bad argument #2 \'max_norm\' (expected a number, got %s)'):format(type(max_norm)), 2)
  end
  if norm_type ~= nil and not is_number(norm_type) then
    error(('clip_grad_norm_: bad argument #3 \'norm_type\' (expected a number, got %s)'):format(type(norm_type)), 2)
  end
  return K.clip_grad_norm(clip_params('clip_grad_norm_', params), max_norm, norm_type or 2)
end

--- optim.clip_grad_value_(params, v): clamps every gradient element into [-v, v].
function optim.clip_grad_value_(params, v)
  if not is_number(v) then
    error(('clip_grad_value_: bad argument #2 \'clip_value\' (expected a number, got %s)'):format(type(v)), 2)
  end
  K.clip_grad_value(clip_params('clip_grad_value_', params), v)
end

--- optim.clip_weights_(params, c): clamps every parameter into [-c, c] in place
-- (the WGAN critic's Lipschitz constraint; call it after each critic step).
function optim.clip_weights_(params, c)
  if not is_number(c) then
    error(('clip_weights_: bad argument #2 \'c\' (expected a number, got %s)'):format(type(c)), 2)
  end
  K.clip_weights(clip_params('clip_weights_', params), c)
end

-- ---- learning-rate schedules ------------------------------------------------------------
-- A schedule remembers the optimizer's lr when it is made (base_lr) and sets
-- opt.lr from a closed form of its step count at each :step(). It overrides
-- manual changes of opt.lr.

local Schedule = {}
Schedule.__index = Schedule

local function is_optimizer(opt)
  return type(opt) == 'table' and getmetatable(opt) and type(opt.lr) == 'number'
    and type(opt.step) == 'function'
end

-- Checks a schedule's options against its spec (key -> {check, expected,
-- default, optional}); returns the value of each field, defaults filled in.
local function schedule_values(name, opts, spec, level)
  if type(opts) ~= 'table' then
    error(('%s: bad argument #2 \'opts\' (expected an options table, got %s)'):format(name, type(opts)), level + 1)
  end
  local names = {}
  for k in pairs(spec) do names[#names + 1] = k end
  table.sort(names)
  for key in pairs(opts) do
    if not spec[key] then
      error(('%s: unknown option \'%s\' (expected %s)'):format(name, tostring(key), table.concat(names, ', ')), level + 1)
    end
  end
  local values = {}
  for _, key in ipairs(names) do
    local rule, v = spec[key], opts[key]
    if v == nil then v = rule.default end
    if v == nil and not rule.optional then
      error(('%s: option \'%s\' is required'):format(name, key), level + 1)
    end
    if v ~= nil and not rule.check(v) then
      error(('%s: option \'%s\' must be %s, got %s'):format(name, key, rule.expected, tostring(v)), level + 1)
    end
    values[key] = v
  end
  return values
end

local positive_int = {
  check = function(v) return math.type(v) == 'integer' and v > 0 end, expected = 'an integer > 0' }
local positive_num = {
  check = function(v) return is_number(v) and v > 0 and v < math.huge end, expected = 'a finite number > 0' }
local nonneg_num = { check = checks.nonneg, expected = 'a finite number >= 0', default = 0 }

-- Makes a schedule class: its name, options spec, and lr_at(self, k), the
-- learning rate after k steps in closed form.
local function schedule_class(name, spec, lr_at)
  local cls = { name = name, spec = spec, lr_at = lr_at }
  cls.__index = cls
  cls.__tostring = Schedule.__tostring
  setmetatable(cls, {
    __index = Schedule,
    __call = function(_, opt, opts)
      if not is_optimizer(opt) then
        error(('%s: bad argument #1 \'opt\' (expected an optimizer, got %s)'):format(name, type(opt)), 2)
      end
      local self = setmetatable({ opt = opt, base_lr = opt.lr, last_step = 0 }, cls)
      for key, v in pairs(schedule_values(name, opts, spec, 2)) do self[key] = v end
      if self.init then self:init(2) end
      return self
    end,
  })
  return cls
end

--- sched:get_lr() -> the learning rate for the current step count.
function Schedule:get_lr() return self:lr_at(self.last_step) end

--- sched:step(): advances one step and sets opt.lr.
function Schedule:step()
  self.last_step = self.last_step + 1
  self.opt.lr = self:get_lr()
end

--- sched:state_dict() -> {type =, last_step =, base_lr =, <options>} (a nested
-- schedule as its own state dict)
function Schedule:state_dict()
  local sd = { type = self.name, last_step = self.last_step, base_lr = self.base_lr }
  for key in pairs(self.spec) do
    local v = self[key]
    if type(v) == 'table' and v.state_dict then v = v:state_dict() end
    sd[key] = v
  end
  return sd
end

--- sched:load_state_dict(sd): restores the step count and settings, and sets opt.lr.
function Schedule:load_state_dict(sd)
  local fname = self.name .. ':load_state_dict'
  if type(sd) ~= 'table' then error(('%s: expected a state dict table, got %s'):format(fname, type(sd)), 2) end
  if sd.type ~= self.name then
    error(('%s: the state dict is for %s, not %s'):format(fname, tostring(sd.type), self.name), 2)
  end
  if math.type(sd.last_step) ~= 'integer' or sd.last_step < 0 then
    error(('%s: last_step must be an integer >= 0, got %s'):format(fname, tostring(sd.last_step)), 2)
  end
  if not checks.nonneg(sd.base_lr) then
    error(('%s: base_lr must be a finite number >= 0, got %s'):format(fname, tostring(sd.base_lr)), 2)
  end
  local opts, nested = {}, {}
  for key in pairs(self.spec) do
    local v = self[key]
    if type(v) == 'table' and v.load_state_dict then nested[key] = sd[key]; opts[key] = v
    else opts[key] = sd[key] end
  end
  local values = schedule_values(fname, opts, self.spec, 2)
  for key, nsd in pairs(nested) do self[key]:load_state_dict(nsd) end
  for key, v in pairs(values) do self[key] = v end
  self.last_step, self.base_lr = sd.last_step, sd.base_lr
  self.opt.lr = self:get_lr()
end

function Schedule:__tostring()
  return ('%s(step %d, lr %g)'):format(self.name, self.last_step, self:get_lr())
end

--- optim.StepLR(opt, {step_size =, gamma = 0.1}): lr = base_lr * gamma^floor(step / step_size)
optim.StepLR = schedule_class('StepLR',
  { step_size = positive_int, gamma = { check = positive_num.check, expected = positive_num.expected, default = 0.1 } },
  function(self, k) return self.base_lr * self.gamma ^ (k // self.step_size) end)

--- optim.ExponentialLR(opt, {gamma =}): lr = base_lr * gamma^step
optim.ExponentialLR = schedule_class('ExponentialLR',
  { gamma = positive_num },
  function(self, k) return self.base_lr * self.gamma ^ k end)

--- optim.CosineAnnealingLR(opt, {T_max =, eta_min = 0}):
-- lr = eta_min + (base_lr - eta_min) (1 + cos(pi step / T_max)) / 2, then eta_min after T_max.
optim.CosineAnnealingLR = schedule_class('CosineAnnealingLR',
  { T_max = positive_int, eta_min = nonneg_num },
  function(self, k)
    local t = math.min(k, self.T_max)
    return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
  end)

--- optim.LinearWarmup(opt, {warmup_steps =, after = schedule or nil}):
-- lr = base_lr * (step + 1) / warmup_steps, rising to base_lr at step
-- warmup_steps - 1 (so the first update already moves); from there on base_lr,
-- or the `after` schedule's lr (a schedule of the same optimizer, made
-- beforehand; its step 0 is the step where the warmup reaches base_lr).
optim.LinearWarmup = schedule_class('LinearWarmup',
  {
    warmup_steps = positive_int,
    after = { check = function(v) return getmetatable(v) and type(v.step) == 'function'
      and type(v.get_lr) == 'function' end, expected = 'a schedule', optional = true },
  },
  function(self, k)
    if k + 1 < self.warmup_steps then return self.base_lr * (k + 1) / self.warmup_steps end
    if self.after then return self.after:get_lr() end
    return self.base_lr
  end)

function optim.LinearWarmup:init(level)
  if self.after then
    if self.after.opt ~= self.opt then
      error('LinearWarmup: option \'after\' must be a schedule of the same optimizer', level + 1)
    end
    self.base_lr = self.after.base_lr
  end
  self.opt.lr = self:get_lr()
end

function optim.LinearWarmup:step()
  self.last_step = self.last_step + 1
  if self.after and self.last_step >= self.warmup_steps then self.after:step() end
  self.opt.lr = self:get_lr()
end

optim.Schedule = Schedule

-- ---- weight averaging --------------------------------------------------------------

local EMA = {}
EMA.__index = EMA
EMA.__name = 'optim.EMA'

local function module_like(v)
  return type(v) == 'table' and type(v.named_parameters) == 'function' and type(v.named_buffers) == 'function'
end

-- name -> tensor of a module's parameters (or buffers).
local function by_name(iter)
  local out = {}
  for name, t in iter do out[name] = t end
  return out
end

--- optim.EMA(average, model [, {decay = 0.999}]) -> keeps `average`, a second module of
--- the same structure as `model` (two instances of one class), an exponential moving
--- average of model's weights (as PyTorch's AveragedModel with an EMA): after each
--- optimizer step, ema:update() moves every parameter a += r_t (w - a) and copies the
--- buffers (BatchNorm's running statistics) as they are. r_t = (1 - decay) / (1 - decay^t)
--- at update t: the average of the weights seen so far, weighted decay^(age) and
--- normalised, so it starts at the first update's weights instead of lagging behind the
--- initial ones (the bias correction Adam uses for its moments); after many updates
--- r_t -> 1 - decay, the plain EMA. Evaluate or save `average`; train `model`.
--- ema:reset() copies model into average and restarts the count. ema:state_dict() holds
--- the count (the averaged weights live in `average` and are saved with it).
function optim.EMA(average, model, opts)
  if not module_like(average) then
    error(('optim.EMA: average (argument 1) must be a module, got %s'):format(type(average) == 'table' and 'a plain table' or tostring(average)), 2)
  end
  if not module_like(model) then
    error(('optim.EMA: model (argument 2) must be a module, got %s'):format(type(model) == 'table' and 'a plain table' or tostring(model)), 2)
  end
  if opts ~= nil and type(opts) ~= 'table' then
    error(('optim.EMA: opts (argument 3) must be a table, got %s'):format(type(opts)), 2)
  end
  local decay = (opts or {}).decay or 0.999
  if not (is_number(decay) and decay >= 0 and decay < 1) then
    error(('optim.EMA: decay must be a number in [0, 1), got %s'):format(describe(decay)), 2)
  end
  local self = setmetatable({decay = decay, updates = 0, pairs = {}, buffer_pairs = {}}, EMA)
  local avg_params, avg_buffers = by_name(average:named_parameters()), by_name(average:named_buffers())
  local function pair_up(kind, theirs, ours, list)
    for name, t in theirs do
      local a = ours[name]
      if not a then
        error(('optim.EMA: the average has no %s "%s" (the two modules must share a structure)'):format(kind, name), 3)
      end
      if table.concat(a:shape(), 'x') ~= table.concat(t:shape(), 'x') then
        error(('optim.EMA: %s "%s" is %s in the average but %s in the model'):format(kind, name, shape_str(a), shape_str(t)), 3)
      end
      list[#list + 1] = {a, t}
      ours[name] = nil
    end
    local extra = {}
    for name in pairs(ours) do extra[#extra + 1] = name end
    table.sort(extra)
    if extra[1] then error(('optim.EMA: the model has no %s "%s"'):format(kind, extra[1]), 3) end
  end
  pair_up('parameter', model:named_parameters(), avg_params, self.pairs)
  pair_up('buffer', model:named_buffers(), avg_buffers, self.buffer_pairs)
  return self
end

--- ema:update(): one averaging step (call it after each optimizer step).
function EMA:update()
  self.updates = self.updates + 1
  local rate = (1 - self.decay) / (1 - self.decay ^ self.updates)
  ember.no_grad(function()
    for _, pr in ipairs(self.pairs) do
      local a, w = pr[1], pr[2]
      a:add_((w:detach() - a) * rate)
    end
    for _, pr in ipairs(self.buffer_pairs) do pr[1]:copy_(pr[2]) end
  end)
end

--- ema:state_dict() -> {decay =, updates =}; ema:load_state_dict(sd) restores them.
function EMA:state_dict() return {decay = self.decay, updates = self.updates} end
function EMA:load_state_dict(sd)
  if type(sd) ~= 'table' or math.type(sd.updates) ~= 'integer' or sd.updates < 0 or not is_number(sd.decay) then
    error('optim.EMA:load_state_dict: expected {decay = number, updates = integer >= 0}, got ' .. describe(sd), 2)
  end
  self.decay, self.updates = sd.decay, sd.updates
end

--- ema:reset(): the average becomes a copy of the model's current weights and buffers.
function EMA:reset()
  self.updates = 0
  ember.no_grad(function()
    for _, pr in ipairs(self.pairs) do pr[1]:copy_(pr[2]) end
    for _, pr in ipairs(self.buffer_pairs) do pr[1]:copy_(pr[2]) end
  end)
end

return optim
