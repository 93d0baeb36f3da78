-- ember.nn — modules: the bookkeeping around the layer ops (parameters,
-- buffers, children, train/eval, state dicts, printing) and the usual layers.
--
--   local nn = require 'ember.nn'          -- or ember.nn
--   local net = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 10))
--   local logits = net(x)                  -- net:forward(x)
--   for name, p in net:named_parameters() do print(name, p:shape()) end  -- "1.weight", ...
--
-- Your own module: extend nn.Module (or any layer), build it in init, compute
-- in forward. Submodules and parameters (leaf tensors that require grad)
-- assigned as fields are found automatically, in the order of assignment;
-- other tensors to save with the module (running statistics) are declared
-- with self:register_buffer(name, tensor).
--
--   local MyNet = nn.Module:extend('MyNet')
--   function MyNet:init(opts)
--     self.fc = nn.Linear(2, opts.hidden)
--     self.out = nn.Linear(opts.hidden, 1)
--     self.scale = ember.ones(1):requires_grad()          -- a parameter
--   end
--   function MyNet:forward(x) return self.out(self.fc(x):relu()) * self.scale end
--   local net = MyNet{hidden = 8}     -- names: fc.weight fc.bias out.weight out.bias scale
--
-- Children of a Sequential are numbered from 1 (net[1], names "1.weight").
-- A plain Lua list of modules is not searched: use an nn.Sequential, or
-- assign each module to a field.
local ember = require 'ember'

local nn = {}

-- nn.functional (ember.nn.functional) loads on first use, as ember.nn itself does.
setmetatable(nn, { __index = function(t, k)
  if k == 'functional' then
    local f = require 'ember.nn.functional'
    rawset(t, k, f)
    return f
  end
end })

-- ---- errors -------------------------------------------------------------------

local THIS_FILE = debug.getinfo(1, 'S').source

-- Raises msg at the first caller outside this file (the user's line).
local function raise(msg)
  local level = 2
  while true do
    local info = debug.getinfo(level, 'Sl')
    if not info then error(msg, 0) end
    if info.source ~= THIS_FILE and info.currentline > 0 then error(msg, level) end
    level = level + 1
  end
end

local function shape_str(t) return '[' .. table.concat(t:shape(), ' x ') .. ']' end

local function describe(v)
  if ember.is_tensor(v) then return 'tensor ' .. shape_str(v) end
  if type(v) == 'number' then return tostring(v) end
  if type(v) == 'string' then return "'" .. v .. "'" end
  return type(v)
end

local function arg_error(fname, n, name, expected, got)
  raise(("%s: bad argument #%d '%s' (expected %s, got %s)"):format(fname, n, name, expected, describe(got)))
end

-- An integer-valued number >= min.
local function check_int(fname, n, name, v, min)
  if type(v) ~= 'number' or v ~= math.floor(v) or v < min then
    arg_error(fname, n, name, min == 1 and 'a positive integer' or ('an integer >= ' .. min), v)
  end
  return math.tointeger(v)
end

-- A size: an integer >= min, or {h, w} of them. Returns v unchanged (as the C API takes it).
local function check_pair(fname, n, name, v, min)
  if type(v) == 'table' and #v == 2 then
    check_int(fname, n, name, v[1], min)
    check_int(fname, n, name, v[2], min)
    return { math.tointeger(v[1]), math.tointeger(v[2]) }
  end
  if type(v) ~= 'number' or v ~= math.floor(v) or v < min then
    arg_error(fname, n, name, ('an integer >= %d or a table {h, w} of them'):format(min), v)
  end
  return math.tointeger(v)
end

local function pair_str(v)
  if type(v) == 'table' then return v[1] == v[2] and tostring(v[1]) or (v[1] .. 'x' .. v[2]) end
  return tostring(v)
end
local function pair_is(v, n)
  if type(v) == 'table' then return v[1] == n and v[2] == n end
  return v == n
end

-- The options table at argument n with `defaults` filled in; unknown keys are
-- errors. A default of false means "absent".
local function check_opts(fname, n, opts, defaults)
  if opts == nil then opts = {} end
  if type(opts) ~= 'table' or getmetatable(opts) ~= nil then arg_error(fname, n, 'opts', 'an options table', opts) end
  for k in pairs(opts) do
    if defaults[k] == nil then
      local names = {}
      for d in pairs(defaults) do names[#names + 1] = d end
      table.sort(names)
      raise(("%s: unknown option '%s' (expected one of: %s)"):format(fname, tostring(k), table.concat(names, ', ')))
    end
  end
  local out = {}
  for k, v in pairs(defaults) do
    if opts[k] == nil then out[k] = v else out[k] = opts[k] end
  end
  return out
end

local function check_bool(fname, name, v)
  if type(v) ~= 'boolean' then raise(("%s: option '%s' must be a boolean, got %s"):format(fname, name, describe(v))) end
  return v
end

-- ---- classes ------------------------------------------------------------------

-- Every class is a table that is the metatable of its instances; its own
-- metatable points to the parent class. Instances record the keys of their
-- parameters, buffers and submodules in assignment order (_names, _kinds).

local Module = { __name = 'Module', __module_class = true }
nn.Module = Module

local function class_of(v)
  if type(v) ~= 'table' then return nil end
  local mt = getmetatable(v)
  if type(mt) == 'table' and rawget(mt, '__module_class') then return mt end
  return nil
end

--- nn.is_module(v): whether v is a module instance.
function nn.is_module(v) return class_of(v) ~= nil end

-- Registers tensors that require grad (leaves) and modules as they are assigned.
local function module_newindex(self, key, value)
  local kind
  if ember.is_tensor(value) then
    if value.is_leaf and value:needs_grad() then kind = 'param' end
  elseif class_of(value) then
    kind = 'module'
  end
  local kinds = rawget(self, '_kinds')
  if kind then
    if not kinds[key] then table.insert(rawget(self, '_names'), key) end
    kinds[key] = kind
  elseif kinds[key] and value ~= nil and not ember.is_tensor(value) then
    kinds[key] = nil -- a field that no longer holds a module or tensor
    local names = rawget(self, '_names')
    for i, k in ipairs(names) do if k == key then table.remove(names, i) break end end
  end
  rawset(self, key, value)
end

local function module_call(self, ...) return self:forward(...) end

local module_tostring -- defined with the printing below

local class_meta = {
  __call = function(cls, ...) return cls:new(...) end,
  __tostring = function(cls) return 'nn.' .. rawget(cls, '__name') end,
}

--- Class:extend(name) -> a subclass whose instances are made by Class(...)
-- (which calls init(...) on a fresh instance).
function Module:extend(name)
  if type(name) ~= 'string' then arg_error('Module:extend', 1, 'name', 'a class name string', name) end
  local cls = {
    __name = name, __module_class = true, __parent = self,
    __newindex = module_newindex, __call = module_call, __tostring = module_tostring,
  }
  cls.__index = cls
  return setmetatable(cls, {
    __index = self, __call = class_meta.__call, __tostring = class_meta.__tostring,
  })
end

--- Class:new(...): a new instance, initialised by init(...).
function Module:new(...)
  local self = setmetatable({ _names = {}, _kinds = {}, training = true }, self)
  self:init(...)
  return self
end

function Module:init() end

function Module:forward()
  raise(('%s: forward is not implemented (define %s:forward(x))'):format(self:class_name(), self:class_name()))
end

--- m:class_name() -> 'Linear'
function Module:class_name() return rawget(getmetatable(self), '__name') end

--- m:is_a(cls): whether m is an instance of cls or of a subclass of it.
function Module:is_a(cls)
  local c = class_of(self)
  while c do
    if c == cls then return true end
    c = rawget(c, '__parent')
  end
  return false
end

--- m:extra_repr() -> the text inside the parentheses when printed.
function Module:extra_repr() return '' end

--- m:register_buffer(name, tensor [, {optional = true}]): a tensor saved in state_dict
-- that is not a parameter (e.g. running statistics); nil unregisters. An optional buffer
-- may be absent from a state dict given to load_state_dict: it then keeps its value (a
-- buffer added to a model after checkpoints of it were written).
function Module:register_buffer(name, t, opts)
  if type(name) ~= 'string' then arg_error('register_buffer', 1, 'name', 'a string', name) end
  if t ~= nil and not ember.is_tensor(t) then arg_error('register_buffer', 2, 'tensor', 'a tensor or nil', t) end
  if opts ~= nil and type(opts) ~= 'table' then arg_error('register_buffer', 3, 'opts', 'a table like {optional = true}', opts) end
  if not self._kinds[name] and t ~= nil then table.insert(self._names, name) end
  self._kinds[name] = t and 'buffer' or nil
  local optional = rawget(self, '_optional_buffers')
  if t ~= nil and opts and opts.optional then
    if not optional then optional = {}; rawset(self, '_optional_buffers', optional) end
    optional[name] = true
  elseif optional then
    optional[name] = nil
  end
  rawset(self, name, t)
end

--- m:register_parameter(name, tensor): a parameter even if it does not require
-- grad (a frozen weight that still belongs in the state dict).
function Module:register_parameter(name, t)
  if type(name) ~= 'string' then arg_error('register_parameter', 1, 'name', 'a string', name) end
  if not ember.is_tensor(t) then arg_error('register_parameter', 2, 'tensor', 'a tensor', t) end
  if not self._kinds[name] then table.insert(self._names, name) end
  self._kinds[name] = 'param'
  rawset(self, name, t)
end

-- ---- traversal ----------------------------------------------------------------

-- Appends {name, value} for every entry of `kind` under m (recursively), in
-- assignment order; `seen` (when given) drops repeats of the same object.
local function collect(m, prefix, kind, out, seen)
  local kinds = rawget(m, '_kinds')
  for _, key in ipairs(rawget(m, '_names')) do
    local v, k = rawget(m, key), kinds[key]
    if v ~= nil then
      local name = prefix .. tostring(key)
      if k == kind then
        if not (seen and seen[v]) then
          if seen then seen[v] = true end
          out[#out + 1] = { name, v }
        end
      elseif k == 'module' and class_of(v) then
        collect(v, name .. '.', kind, out, seen)
      end
    end
  end
  return out
end

local function pairs_iter(list)
  local i = 0
  return function()
    i = i + 1
    local e = list[i]
    if e then return e[1], e[2] end
  end
end

local function values_of(list)
  local out = {}
  for i, e in ipairs(list) do out[i] = e[2] end
  return out
end

-- The name each parameter had in the last parameters()/named_parameters()
-- listing that held it (weak keys: a dropped tensor drops out), so that an
-- optimizer given a plain list can still name a parameter in a message.
local parameter_names = setmetatable({}, { __mode = 'k' })
local function remember_names(list)
  for _, e in ipairs(list) do parameter_names[e[2]] = e[1] end
  return list
end
--- nn._parameter_name(t) -> the name t had in its module ("enc.fc1.weight"), or nil.
function nn._parameter_name(t) return parameter_names[t] end

--- m:named_parameters() -> iterator of name, tensor ("enc.fc1.weight"), each tensor once.
function Module:named_parameters() return pairs_iter(remember_names(collect(self, '', 'param', {}, {}))) end
--- m:parameters() -> list of the parameter tensors (what optimizers take).
function Module:parameters() return values_of(remember_names(collect(self, '', 'param', {}, {}))) end
--- m:named_buffers() / m:buffers(): the same for buffers.
function Module:named_buffers() return pairs_iter(collect(self, '', 'buffer', {}, {})) end
function Module:buffers() return values_of(collect(self, '', 'buffer', {}, {})) end

local function direct_children(m)
  local out = {}
  for _, key in ipairs(m._names) do
    local v = rawget(m, key)
    if m._kinds[key] == 'module' and class_of(v) then out[#out + 1] = { tostring(key), v } end
  end
  return out
end

--- m:named_children() -> iterator of name, module (direct children only).
function Module:named_children() return pairs_iter(direct_children(self)) end
function Module:children() return values_of(direct_children(self)) end

local function all_modules(m, prefix, out, seen)
  if seen[m] then return out end
  seen[m] = true
  out[#out + 1] = { prefix, m }
  for _, e in ipairs(direct_children(m)) do
    all_modules(e[2], prefix == '' and e[1] or (prefix .. '.' .. e[1]), out, seen)
  end
  return out
end

--- m:named_modules() -> iterator of name, module: m itself ('') and every descendant.
function Module:named_modules() return pairs_iter(all_modules(self, '', {}, {})) end
function Module:modules() return values_of(all_modules(self, '', {}, {})) end

--- m:num_parameters() -> the number of scalars in the parameters.
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

--- m:apply(fn): fn(child) for every descendant (children first), then fn(m). Returns m.
function Module:apply(fn)
  if type(fn) ~= 'function' then arg_error('apply', 1, 'fn', 'a function', fn) end
  for _, c in ipairs(self:children()) do c:apply(fn) end
  fn(self)
  return self
end

--- m:train([mode=true]) / m:eval(): sets .training on m and every descendant. Returns m.
function Module:train(mode)
  if mode == nil then mode = true end
  if type(mode) ~= 'boolean' then arg_error('train', 1, 'mode', 'a boolean', mode) end
  for _, m in ipairs(self:modules()) do rawset(m, 'training', mode) end
  return self
end
function Module:eval() return self:train(false) end

--- m:zero_grad(): drops every parameter's .grad.
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
  return self
end

-- ---- state dicts --------------------------------------------------------------

-- Every {name, tensor} that belongs in a state dict (parameters, then buffers
-- in traversal order; shared tensors under every name).
local function state_entries(m)
  local out = {}
  local function walk(mod, prefix)
    for _, key in ipairs(mod._names) do
      local v, k = rawget(mod, key), mod._kinds[key]
      if v ~= nil then
        local name = prefix .. tostring(key)
        if k == 'param' or k == 'buffer' then
          local optional = k == 'buffer' and rawget(mod, '_optional_buffers')
          out[#out + 1] = { name, v, optional and optional[key] or false }
        elseif k == 'module' and class_of(v) then walk(v, name .. '.') end
      end
    end
  end
  walk(m, '')
  return out
end

--- m:state_dict() -> {name = tensor}: parameters and buffers, detached but
-- sharing storage with the module (clone them to keep a snapshot).
function Module:state_dict()
  local sd = {}
  for _, e in ipairs(state_entries(self)) do sd[e[1]] = e[2]:detach() end
  return sd
end

local function quoted_list(names)
  local q = {}
  for i, n in ipairs(names) do q[i] = '"' .. n .. '"' end
  return table.concat(q, ', ')
end

--- m:load_state_dict(sd [, strict=true]) -> missing, unexpected (lists of names)
-- Copies sd's tensors into the module's parameters and buffers. Shapes must
-- match; with strict, missing or unexpected names are errors. Nothing is
-- copied unless everything checks out.
function Module:load_state_dict(sd, strict)
  if type(sd) ~= 'table' then arg_error('load_state_dict', 1, 'state_dict', 'a table of tensors', sd) end
  if strict == nil then strict = true end
  if type(strict) ~= 'boolean' then arg_error('load_state_dict', 2, 'strict', 'a boolean', strict) end
  local entries, own, missing, unexpected, pairs_to_copy = state_entries(self), {}, {}, {}, {}
  for _, e in ipairs(entries) do
    local name, t, optional = e[1], e[2], e[3]
    own[name] = true
    local src = sd[name]
    if src == nil then
      if not optional then missing[#missing + 1] = name end -- an optional buffer keeps its value
    elseif not ember.is_tensor(src) then
      raise(('load_state_dict: "%s" holds a %s, expected a tensor'):format(name, type(src)))
    else
      local a, b = t:shape(), src:shape()
      local same = #a == #b
      for i = 1, #a do same = same and a[i] == b[i] end
      if not same then
        raise(('load_state_dict: size mismatch for "%s": the state dict has %s, the module %s')
          :format(name, shape_str(src), shape_str(t)))
      end
      pairs_to_copy[#pairs_to_copy + 1] = { t, src }
    end
  end
  for k in pairs(sd) do
    if not own[k] then unexpected[#unexpected + 1] = tostring(k) end
  end
  table.sort(unexpected)
  if strict and (#missing > 0 or #unexpected > 0) then
    local parts = {}
    if #missing > 0 then parts[#parts + 1] = 'missing keys: ' .. quoted_list(missing) end
    if #unexpected > 0 then parts[#parts + 1] = 'unexpected keys: ' .. quoted_list(unexpected) end
    raise(('load_state_dict: %s (for %s)'):format(table.concat(parts, '; '), self:class_name()))
  end
  ember.no_grad(function()
    for _, p in ipairs(pairs_to_copy) do p[1]:copy_(p[2]) end
  end)
  return missing, unexpected
end

-- ---- printing -----------------------------------------------------------------

local function repr(m, indent)
  local head = m:class_name() .. '(' .. (m:extra_repr() or '')
  local kids = direct_children(m)
  if #kids == 0 then return head .. ')' end
  local lines = { head }
  for _, e in ipairs(kids) do
    lines[#lines + 1] = indent .. '  (' .. e[1] .. '): ' .. repr(e[2], indent .. '  ')
  end
  lines[#lines + 1] = indent .. ')'
  return table.concat(lines, '\n')
end

local function thousands(n)
  local s = tostring(math.tointeger(n) or n)
  local out = s:reverse():gsub('(%d%d%d)', '%1,'):reverse()
  return (out:gsub('^,', ''))
end

--- tostring(m): the tree of modules like PyTorch, then the parameter count.
function module_tostring(m)
  return repr(m, '') .. '\nTotal parameters: ' .. thousands(m:num_parameters())
end
Module.__tostring = module_tostring
Module.__index = Module
Module.__newindex = module_newindex
Module.__call = module_call
setmetatable(Module, { __call = class_meta.__call, __tostring = class_meta.__tostring })

-- ---- init -----------------------------------------------------------------------

local init = {}
nn.init = init

local function check_tensor(fname, n, t)
  if not ember.is_tensor(t) then arg_error(fname, n, 'tensor', 'a tensor', t) end
end

-- fan_in and fan_out of a weight [out x in x k...] (PyTorch's convention).
local function fans(fname, t)
  local d = t:dim()
  if d < 2 then raise(('%s: fan in and fan out need a tensor of at least 2 dims, got %s'):format(fname, shape_str(t))) end
  local receptive = 1
  for i = 3, d do receptive = receptive * t:size(i) end
  return t:size(2) * receptive, t:size(1) * receptive
end

--- init.calculate_gain(nonlinearity [, param]) -> the recommended gain
function init.calculate_gain(nonlinearity, param)
  if nonlinearity == 'linear' or nonlinearity == 'sigmoid' or tostring(nonlinearity):match('^conv') then return 1 end
  if nonlinearity == 'tanh' then return 5 / 3 end
  if nonlinearity == 'relu' then return math.sqrt(2) end
  if nonlinearity == 'leaky_relu' then
    local slope = param or 0.01
    return math.sqrt(2 / (1 + slope * slope))
  end
  if nonlinearity == 'selu' then return 3 / 4 end
  raise(("calculate_gain: unknown nonlinearity %s (expected 'linear', 'conv2d', 'sigmoid', 'tanh', 'relu', 'leaky_relu' or 'selu')"):format(describe(nonlinearity)))
end

--- init.uniform_(t [, a=0 [, b=1]]), normal_(t [, mean=0 [, std=1]]), constant_(t, v),
-- zeros_(t), ones_(t): fill t in place (no grad recorded) and return it.
function init.uniform_(t, a, b)
  check_tensor('init.uniform_', 1, t)
  ember.no_grad(function() t:uniform_(a or 0, b or 1) end)
  return t
end
function init.normal_(t, mean, std)
  check_tensor('init.normal_', 1, t)
  ember.no_grad(function() t:normal_(mean or 0, std or 1) end)
  return t
end
function init.constant_(t, v)
  check_tensor('init.constant_', 1, t)
  if type(v) ~= 'number' then arg_error('init.constant_', 2, 'value', 'a number', v) end
  ember.no_grad(function() t:fill_(v) end)
  return t
end
function init.zeros_(t) return init.constant_(t, 0) end
function init.ones_(t) return init.constant_(t, 1) end

-- The std of kaiming init for opts {a=0, mode='fan_in', nonlinearity='leaky_relu'}.
local function kaiming_std(fname, t, opts)
  if type(opts) == 'number' then opts = { a = opts } end
  opts = check_opts(fname, 2, opts, { a = 0, mode = 'fan_in', nonlinearity = 'leaky_relu' })
  local fan_in, fan_out = fans(fname, t)
  local fan
  if opts.mode == 'fan_in' then fan = fan_in
  elseif opts.mode == 'fan_out' then fan = fan_out
  else raise(("%s: mode must be 'fan_in' or 'fan_out', got %s"):format(fname, describe(opts.mode))) end
  return init.calculate_gain(opts.nonlinearity, opts.a) / math.sqrt(fan)
end

--- init.kaiming_uniform_(t [, {a=0, mode='fan_in', nonlinearity='leaky_relu'} | a])
function init.kaiming_uniform_(t, opts)
  check_tensor('init.kaiming_uniform_', 1, t)
  local bound = math.sqrt(3) * kaiming_std('init.kaiming_uniform_', t, opts)
  return init.uniform_(t, -bound, bound)
end
--- init.kaiming_normal_(t [, opts]): N(0, std) with the same std.
function init.kaiming_normal_(t, opts)
  check_tensor('init.kaiming_normal_', 1, t)
  return init.normal_(t, 0, kaiming_std('init.kaiming_normal_', t, opts))
end
--- init.xavier_uniform_(t [, gain=1]) / init.xavier_normal_(t [, gain=1])
function init.xavier_uniform_(t, gain)
  check_tensor('init.xavier_uniform_', 1, t)
  local fan_in, fan_out = fans('init.xavier_uniform_', t)
  local bound = (gain or 1) * math.sqrt(6 / (fan_in + fan_out))
  return init.uniform_(t, -bound, bound)
end
function init.xavier_normal_(t, gain)
  check_tensor('init.xavier_normal_', 1, t)
  local fan_in, fan_out = fans('init.xavier_normal_', t)
  return init.normal_(t, 0, (gain or 1) * math.sqrt(2 / (fan_in + fan_out)))
end

-- ---- layers ---------------------------------------------------------------------

-- A parameter of the given shape (zeros until initialised).
local function param(...) return ember.zeros(...):requires_grad() end

-- PyTorch's default init for a layer: weight kaiming_uniform(a = sqrt(5)),
-- i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
local function default_init(weight, bias)
  init.kaiming_uniform_(weight, { a = math.sqrt(5) })
  if bias then
    local fan_in = fans('init', weight)
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(bias, -bound, bound)
  end
end

local function check_rank(m, x, ranks, layout)
  if not ember.is_tensor(x) then arg_error(m:class_name(), 1, 'input', 'a tensor', x) end
  local d = x:dim()
  for _, r in ipairs(ranks) do if d == r then return end end
  raise(('%s: input %s must be %s'):format(m:class_name(), shape_str(x), layout))
end

--- nn.Sequential(m1, m2, ...) or nn.Sequential{m1, m2, ...}: applies its
-- children in order (net[1] is the first). An error in child i is re-raised
-- as "Sequential[i] Linear: <message>".
local Sequential = Module:extend('Sequential')
nn.Sequential = Sequential
function Sequential:init(...)
  local n, mods = select('#', ...), { ... }
  if n == 1 and type(mods[1]) == 'table' and not class_of(mods[1]) then
    mods = mods[1]
    n = #mods
  end
  for i = 1, n do
    if not class_of(mods[i]) then arg_error('Sequential', i, 'module', 'a module', mods[i]) end
    self[i] = mods[i]
  end
end
--- seq:add(m): appends a module; returns seq.
function Sequential:add(m)
  if not class_of(m) then arg_error('Sequential:add', 1, 'module', 'a module', m) end
  self[#self + 1] = m
  return self
end
function Sequential:forward(x)
  for i = 1, #self do
    local m = self[i]
    local ok, out = pcall(m, x)
    if not ok then
      -- the position of a layer's call inside this file says nothing to the user
      local msg = tostring(out):gsub('^[^\n]-ember/nn%.lua:%d+: ', '')
      error(('Sequential[%d] %s: %s'):format(i, m:class_name(), msg), 0)
    end
    x = out
  end
  return x
end

--- nn.Linear(in_features, out_features [, {bias=true}]): y = x W^T + b, W [out x in].
local Linear = Module:extend('Linear')
nn.Linear = Linear
function Linear:init(in_features, out_features, opts)
  self.in_features = check_int('Linear', 1, 'in_features', in_features, 1)
  self.out_features = check_int('Linear', 2, 'out_features', out_features, 1)
  opts = check_opts('Linear', 3, opts, { bias = true })
  self.weight = param(self.out_features, self.in_features)
  if check_bool('Linear', 'bias', opts.bias) then self.bias = param(self.out_features) end
  self:reset_parameters()
end
function Linear:reset_parameters() default_init(self.weight, self.bias) end
function Linear:forward(x) return ember.linear(x, self.weight, self.bias) end
function Linear:extra_repr()
  return ('%d -> %d%s'):format(self.in_features, self.out_features, self.bias and '' or ', bias=false')
end

-- Shared by Conv2d and ConvTranspose2d: the geometry options, checked.
local function conv_setup(self, fname, in_ch, out_ch, kernel, opts, transposed)
  self.in_channels = check_int(fname, 1, 'in_channels', in_ch, 1)
  self.out_channels = check_int(fname, 2, 'out_channels', out_ch, 1)
  self.kernel_size = check_pair(fname, 3, 'kernel_size', kernel, 1)
  local defaults = { stride = 1, padding = 0, dilation = 1, groups = 1, bias = true }
  if transposed then defaults.output_padding = 0 end
  opts = check_opts(fname, 4, opts, defaults)
  local o = {
    stride = check_pair(fname, 4, 'stride', opts.stride, 1),
    padding = check_pair(fname, 4, 'padding', opts.padding, 0),
    dilation = check_pair(fname, 4, 'dilation', opts.dilation, 1),
    groups = check_int(fname, 4, 'groups', opts.groups, 1),
  }
  if transposed then
    o.output_padding = check_pair(fname, 4, 'output_padding', opts.output_padding, 0)
    local op, s = o.output_padding, o.stride
    op = type(op) == 'table' and op or { op, op }
    s = type(s) == 'table' and s or { s, s }
    if op[1] >= s[1] or op[2] >= s[2] then
      raise(('%s: output_padding %s must be smaller than the stride %s'):format(fname, pair_str(o.output_padding), pair_str(o.stride)))
    end
  end
  if self.in_channels % o.groups ~= 0 then
    raise(('%s: in_channels %d is not divisible by groups %d'):format(fname, self.in_channels, o.groups))
  end
  if self.out_channels % o.groups ~= 0 then
    raise(('%s: out_channels %d is not divisible by groups %d'):format(fname, self.out_channels, o.groups))
  end
  self.options = o
  return check_bool(fname, 'bias', opts.bias)
end

local function conv_repr(self)
  local o = self.options
  local parts = { ('%d -> %d, kernel %s'):format(self.in_channels, self.out_channels, pair_str(self.kernel_size)) }
  if not pair_is(o.stride, 1) then parts[#parts + 1] = 'stride ' .. pair_str(o.stride) end
  if not pair_is(o.padding, 0) then parts[#parts + 1] = 'padding ' .. pair_str(o.padding) end
  if o.output_padding and not pair_is(o.output_padding, 0) then parts[#parts + 1] = 'output_padding ' .. pair_str(o.output_padding) end
  if not pair_is(o.dilation, 1) then parts[#parts + 1] = 'dilation ' .. pair_str(o.dilation) end
  if o.groups ~= 1 then parts[#parts + 1] = 'groups ' .. o.groups end
  if not self.bias then parts[#parts + 1] = 'bias=false' end
  return table.concat(parts, ', ')
end

local function kernel_hw(k) if type(k) == 'table' then return k[1], k[2] end return k, k end

--- nn.Conv2d(in_channels, out_channels, kernel_size [, {stride=1, padding=0,
-- dilation=1, groups=1, bias=true}]): weight [out x in/groups x kh x kw].
local Conv2d = Module:extend('Conv2d')
nn.Conv2d = Conv2d
function Conv2d:init(in_ch, out_ch, kernel, opts)
  local bias = conv_setup(self, self:class_name(), in_ch, out_ch, kernel, opts, false)
  local kh, kw = kernel_hw(self.kernel_size)
  self.weight = param(self.out_channels, self.in_channels // self.options.groups, kh, kw)
  if bias then self.bias = param(self.out_channels) end
  self:reset_parameters()
end
function Conv2d:reset_parameters() default_init(self.weight, self.bias) end
function Conv2d:forward(x) return ember.conv2d(x, self.weight, self.bias, self.options) end
Conv2d.extra_repr = conv_repr

--- nn.MaskedConv2d(in_channels, out_channels, kernel_size [, {mask='B',
-- mask_groups=1, stride=1, padding=dilation*(k//2) (same size), dilation=1,
-- bias=true}]): a causal convolution (PixelCNN). mask 'A' keeps the taps
-- before the kernel's centre in raster order, 'B' the centre too, 'V' every
-- row up to the centre row (Gated PixelCNN's vertical stack). The masked taps
-- are not computed at all; the weight keeps its full [out x in x kh x kw]
-- shape with zeros there (and they get no gradient). mask_groups = 3 orders
-- colour channels (R, G, B) inside a pixel at the centre tap.
local MaskedConv2d = Conv2d:extend('MaskedConv2d')
nn.MaskedConv2d = MaskedConv2d
local masks = { A = true, B = true, V = true }
function MaskedConv2d:init(in_ch, out_ch, kernel, opts)
  local fname = 'MaskedConv2d'
  opts = check_opts(fname, 4, opts, { mask = 'B', mask_groups = 1, stride = 1, padding = false, dilation = 1, bias = true })
  if not masks[opts.mask] then arg_error(fname, 4, 'mask', "'A', 'B' or 'V'", opts.mask) end
  local mask_groups = check_int(fname, 4, 'mask_groups', opts.mask_groups, 1)
  if mask_groups > 1 and opts.mask == 'V' then raise(fname .. ": mask_groups needs mask 'A' or 'B'") end
  local kh, kw = kernel_hw(check_pair(fname, 3, 'kernel_size', kernel, 1))
  local padding = opts.padding
  if padding == false then
    local d = check_pair(fname, 4, 'dilation', opts.dilation, 1)
    local dh, dw = kernel_hw(d)
    padding = { dh * (kh // 2), dw * (kw // 2) }
  end
  Conv2d.init(self, in_ch, out_ch, kernel, { stride = opts.stride, padding = padding, dilation = opts.dilation, bias = opts.bias })
  for _, c in ipairs { { 'in_channels', self.in_channels }, { 'out_channels', self.out_channels } } do
    if c[2] % mask_groups ~= 0 then
      raise(('%s: %s %d is not divisible by mask_groups %d'):format(fname, c[1], c[2], mask_groups))
    end
  end
  self.options.mask, self.options.mask_groups = opts.mask, mask_groups
  self:reset_parameters()
end
function MaskedConv2d:reset_parameters()
  default_init(self.weight, self.bias)
  if not self.options.mask then return end -- Conv2d.init's call, before the mask is known
  local o = self.options
  local keep = ember.conv_mask(self.out_channels, self.in_channels, self.kernel_size, { mask = o.mask, mask_groups = o.mask_groups })
  ember.no_grad(function() self.weight:mul_(keep) end)
end
function MaskedConv2d:extra_repr()
  local o = self.options
  return conv_repr(self) .. ', mask ' .. o.mask .. (o.mask_groups > 1 and (', mask_groups ' .. o.mask_groups) or '')
end

--- nn.ConvTranspose2d(in_channels, out_channels, kernel_size [, {stride=1,
-- padding=0, output_padding=0, dilation=1, groups=1, bias=true}]):
-- weight [in x out/groups x kh x kw].
local ConvTranspose2d = Module:extend('ConvTranspose2d')
nn.ConvTranspose2d = ConvTranspose2d
function ConvTranspose2d:init(in_ch, out_ch, kernel, opts)
  local bias = conv_setup(self, 'ConvTranspose2d', in_ch, out_ch, kernel, opts, true)
  local kh, kw = kernel_hw(self.kernel_size)
  self.weight = param(self.in_channels, self.out_channels // self.options.groups, kh, kw)
  if bias then self.bias = param(self.out_channels) end
  self:reset_parameters()
end
function ConvTranspose2d:reset_parameters() default_init(self.weight, self.bias) end
function ConvTranspose2d:forward(x)
  return ember.conv_transpose2d(x, self.weight, self.bias, self.options)
end
ConvTranspose2d.extra_repr = conv_repr

-- Shared by the pools: kernel, stride (default: the kernel), padding.
local function pool_setup(self, fname, kernel, opts, extra)
  self.kernel_size = check_pair(fname, 1, 'kernel_size', kernel, 1)
  local defaults = { stride = false, padding = 0 }
  for k, v in pairs(extra or {}) do defaults[k] = v end
  opts = check_opts(fname, 2, opts, defaults)
  self.options = {
    stride = opts.stride and check_pair(fname, 2, 'stride', opts.stride, 1) or self.kernel_size,
    padding = check_pair(fname, 2, 'padding', opts.padding, 0),
  }
  local k, p = self.kernel_size, self.options.padding
  local kh, kw = kernel_hw(k)
  local ph, pw = kernel_hw(p)
  if ph > kh // 2 or pw > kw // 2 then
    raise(('%s: padding %s must be at most half the kernel size %s'):format(fname, pair_str(p), pair_str(k)))
  end
  return opts
end

local function pool_repr(self)
  local o = self.options
  local s = 'kernel ' .. pair_str(self.kernel_size)
  if pair_str(o.stride) ~= pair_str(self.kernel_size) then s = s .. ', stride ' .. pair_str(o.stride) end
  if not pair_is(o.padding, 0) then s = s .. ', padding ' .. pair_str(o.padding) end
  return s
end

--- nn.MaxPool2d(kernel_size [, {stride=kernel_size, padding=0}])
local MaxPool2d = Module:extend('MaxPool2d')
nn.MaxPool2d = MaxPool2d
function MaxPool2d:init(kernel, opts) pool_setup(self, 'MaxPool2d', kernel, opts) end
function MaxPool2d:forward(x) return ember.max_pool2d(x, self.kernel_size, self.options) end
MaxPool2d.extra_repr = pool_repr

--- nn.AvgPool2d(kernel_size [, {stride=kernel_size, padding=0, count_include_pad=true}])
local AvgPool2d = Module:extend('AvgPool2d')
nn.AvgPool2d = AvgPool2d
function AvgPool2d:init(kernel, opts)
  opts = pool_setup(self, 'AvgPool2d', kernel, opts, { count_include_pad = true })
  self.options.count_include_pad = check_bool('AvgPool2d', 'count_include_pad', opts.count_include_pad)
end
function AvgPool2d:forward(x) return ember.avg_pool2d(x, self.kernel_size, self.options) end
AvgPool2d.extra_repr = pool_repr

--- nn.Upsample(scale) or nn.Upsample{scale_factor=2, mode='nearest'}: nearest
-- neighbour upsampling by integer factors (a number or {h, w}).
local Upsample = Module:extend('Upsample')
nn.Upsample = Upsample
function Upsample:init(scale)
  if type(scale) == 'table' and (scale.scale_factor ~= nil or scale.mode ~= nil) then
    local opts = check_opts('Upsample', 1, scale, { scale_factor = 2, mode = 'nearest' })
    if opts.mode ~= 'nearest' then raise(("Upsample: only mode 'nearest' is supported, got %s"):format(describe(opts.mode))) end
    scale = opts.scale_factor
  end
  self.scale_factor = check_pair('Upsample', 1, 'scale_factor', scale == nil and 2 or scale, 1)
end
function Upsample:forward(x) return ember.upsample_nearest(x, self.scale_factor) end
function Upsample:extra_repr() return 'scale ' .. pair_str(self.scale_factor) .. ', nearest' end

-- Batch normalization over the channels (dim 2); the 1d and 2d variants
-- differ only in the input ranks they accept.
local BatchNorm = Module:extend('BatchNorm')
nn.BatchNorm = BatchNorm
function BatchNorm:init(num_features, opts)
  local fname = self:class_name()
  self.num_features = check_int(fname, 1, 'num_features', num_features, 1)
  opts = check_opts(fname, 2, opts, { eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true,
                                     sync = false })
  if type(opts.eps) ~= 'number' or opts.eps < 0 then raise(("%s: option 'eps' must be a number >= 0, got %s"):format(fname, describe(opts.eps))) end
  if type(opts.momentum) ~= 'number' or opts.momentum < 0 or opts.momentum > 1 then
    raise(("%s: option 'momentum' must be a number in [0, 1], got %s"):format(fname, describe(opts.momentum)))
  end
  self.eps, self.momentum = opts.eps, opts.momentum
  if check_bool(fname, 'affine', opts.affine) then
    self.weight = init.ones_(param(num_features))
    self.bias = param(num_features)
  end
  if check_bool(fname, 'track_running_stats', opts.track_running_stats) then
    self:register_buffer('running_mean', ember.zeros(num_features))
    self:register_buffer('running_var', ember.ones(num_features))
  end
  self.sync = check_bool(fname, 'sync', opts.sync)
  self._train_opts = { training = true, momentum = self.momentum, eps = self.eps }
  self._eval_opts = { training = false, momentum = self.momentum, eps = self.eps }
end

-- Synchronized batch statistics (data-parallel training, `sync = true`): the mean and
-- variance of each channel over the global batch, every rank's rows together, through
-- ember.dist's differentiable all-reduce (so the gradient flows across ranks as the
-- statistics do); the same formulas as one process on the whole batch, up to rounding.
local function sync_batch_norm(self, x, dist)
  local C = self.num_features
  local moved = x:transpose(1, 2) -- [C x N x ...]
  local moved_shape = moved:shape()
  local xc = moved:contiguous():view(C, -1) -- [C x M]
  local count = ember.tensor { xc:size(2) }
  dist.all_reduce_(count)
  local m = count[1]
  local mean = ember._dist.all_reduce(xc:sum(2)) / m
  local centered = xc - mean:view(C, 1)
  local var = ember._dist.all_reduce((centered * centered):sum(2)) / m
  local y = centered * (var + self.eps):rsqrt():view(C, 1)
  if self.weight then y = y * self.weight:view(C, 1) + self.bias:view(C, 1) end
  if self.running_mean then -- PyTorch's update: the running variance is unbiased
    ember.no_grad(function()
      local k = self.momentum
      self.running_mean:copy_(self.running_mean * (1 - k) + mean:detach() * k)
      self.running_var:copy_(self.running_var * (1 - k) + var:detach() * (k * m / math.max(m - 1, 1)))
    end)
  end
  return y:view(table.unpack(moved_shape)):transpose(1, 2):contiguous()
end

function BatchNorm:forward(x)
  check_rank(self, x, self._ranks, self._layout)
  if x:size(2) ~= self.num_features then
    raise(('%s: input %s has %d channels (dim 2), expected %d'):format(self:class_name(), shape_str(x), x:size(2), self.num_features))
  end
  if self.sync and self.training then
    local dist = package.loaded['ember.dist']
    if dist and dist.is_data_parallel() then return sync_batch_norm(self, x, dist) end
  end
  return ember.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
    self.training and self._train_opts or self._eval_opts)
end
function BatchNorm:extra_repr()
  local s = tostring(self.num_features)
  if self.eps ~= 1e-5 then s = s .. ', eps ' .. self.eps end
  if self.momentum ~= 0.1 then s = s .. ', momentum ' .. self.momentum end
  if not self.weight then s = s .. ', affine=false' end
  if not self.running_mean then s = s .. ', track_running_stats=false' end
  if self.sync then s = s .. ', sync' end
  return s
end

--- nn.BatchNorm1d(num_features [, {eps=1e-5, momentum=0.1, affine=true,
-- track_running_stats=true, sync=false}]) for [N x C] or [N x C x L]; nn.BatchNorm2d for
-- [N x C x H x W]. Training: batch statistics, running ones updated; eval:
-- the running statistics. In data-parallel training each rank normalizes with its
-- own rows' statistics, unless sync = true (SyncBatchNorm: the global batch's).
nn.BatchNorm1d = BatchNorm:extend('BatchNorm1d')
nn.BatchNorm1d._ranks, nn.BatchNorm1d._layout = { 2, 3 }, '2-D [N x C] or 3-D [N x C x L]'
nn.BatchNorm2d = BatchNorm:extend('BatchNorm2d')
nn.BatchNorm2d._ranks, nn.BatchNorm2d._layout = { 4 }, '4-D [N x C x H x W]'

--- nn.Dropout([p=0.5]): zeroes elements with probability p while training,
-- scaling the rest by 1/(1-p); the identity in eval mode.
local Dropout = Module:extend('Dropout')
nn.Dropout = Dropout
function Dropout:init(p)
  if p == nil then p = 0.5 end
  if type(p) ~= 'number' or p < 0 or p > 1 then arg_error('Dropout', 1, 'p', 'a probability in [0, 1]', p) end
  self.p = p
end
function Dropout:forward(x) return ember.dropout(x, self.p, self.training) end
function Dropout:extra_repr() return 'p ' .. self.p end

--- nn.Flatten([start_dim=2 [, end_dim=-1]]): flattens dims start..end (keeps the batch dim).
local Flatten = Module:extend('Flatten')
nn.Flatten = Flatten
function Flatten:init(start_dim, end_dim)
  self.start_dim = start_dim == nil and 2 or start_dim
  self.end_dim = end_dim == nil and -1 or end_dim
  for i, d in ipairs({ self.start_dim, self.end_dim }) do
    if type(d) ~= 'number' or d ~= math.floor(d) or d == 0 then
      arg_error('Flatten', i, i == 1 and 'start_dim' or 'end_dim', 'a non-zero integer dim (1-based, negative from the end)', d)
    end
  end
end
function Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end
function Flatten:extra_repr()
  if self.start_dim == 2 and self.end_dim == -1 then return '' end
  return self.start_dim .. ', ' .. self.end_dim
end

--- nn.Reshape(size...) (alias nn.View): reshapes each sample, keeping the
-- batch dim: nn.Reshape(256, 7, 7) maps [N x 12544] to [N x 256 x 7 x 7].
-- One size may be -1 (inferred).
local Reshape = Module:extend('Reshape')
nn.Reshape = Reshape
nn.View = Reshape
function Reshape:init(...)
  local sizes = { ... }
  if #sizes == 1 and type(sizes[1]) == 'table' then sizes = sizes[1] end
  if #sizes == 0 then raise('Reshape: expected at least one size') end
  local inferred = 0
  for i, s in ipairs(sizes) do
    if s == -1 then inferred = inferred + 1
    else check_int('Reshape', i, 'size', s, 1) end
  end
  if inferred > 1 then raise('Reshape: at most one size may be -1') end
  self.sizes = sizes
end
function Reshape:forward(x)
  if not ember.is_tensor(x) or x:dim() < 1 then arg_error('Reshape', 1, 'input', 'a tensor with a batch dim', x) end
  return x:reshape(x:size(1), table.unpack(self.sizes))
end
function Reshape:extra_repr() return table.concat(self.sizes, ' x ') end

--- nn.Embedding(num_embeddings, embedding_dim): a table of rows [num x dim],
-- N(0, 1) initialised, looked up by 1-based indices.
local Embedding = Module:extend('Embedding')
nn.Embedding = Embedding
function Embedding:init(num, dim)
  self.num_embeddings = check_int('Embedding', 1, 'num_embeddings', num, 1)
  self.embedding_dim = check_int('Embedding', 2, 'embedding_dim', dim, 1)
  self.weight = init.normal_(param(num, dim), 0, 1)
end
function Embedding:forward(indices) return ember.embedding(indices, self.weight) end
function Embedding:extra_repr() return self.num_embeddings .. ' x ' .. self.embedding_dim end

-- ---- recurrent layers -------------------------------------------------------------

-- PyTorch's init for recurrent layers: every parameter U(-1/sqrt(H), 1/sqrt(H)),
-- in the order the parameters were made.
local function recurrent_init(self)
  local bound = 1 / math.sqrt(self.hidden_size)
  for _, e in ipairs(collect(self, '', 'param', {}, {})) do init.uniform_(e[2], -bound, bound) end
end

-- The recurrent state at argument n: a plain table {h, c} of two tensors, each of
-- `shape` (a list of sizes; `layout` names its dims). Returns h, c.
local function check_state(fname, n, hx, names, shape, layout)
  local expected = ('a table {%s, %s} of two tensors'):format(names[1], names[2])
  if type(hx) ~= 'table' or getmetatable(hx) ~= nil then arg_error(fname, n, 'hx', expected, hx) end
  if #hx ~= 2 then
    raise(("%s: bad argument #%d 'hx' (expected %s, got a table of %d)"):format(fname, n, expected, #hx))
  end
  for k = 1, 2 do
    local t = hx[k]
    if not ember.is_tensor(t) then
      raise(('%s: hx[%d] (%s) must be a tensor, got %s'):format(fname, k, names[k], describe(t)))
    end
    local s, same = t:shape(), t:dim() == #shape
    for i = 1, #shape do same = same and s[i] == shape[i] end
    if not same then
      raise(('%s: hx[%d] (%s) is %s, expected [%s] (%s)'):format(fname, k, names[k], shape_str(t),
        table.concat(shape, ' x '), layout))
    end
  end
  return hx[1], hx[2]
end

-- The input's last dim must be input_size.
local function check_features(self, x)
  local d = x:dim()
  if x:size(d) ~= self.input_size then
    raise(('%s: input %s has %d features (last dim), expected %d'):format(self:class_name(), shape_str(x),
      x:size(d), self.input_size))
  end
end

--- nn.LSTMCell(input_size, hidden_size [, {bias=true}]): one LSTM step, as PyTorch's
-- LSTMCell: gates = x W_ih^T + b_ih + h W_hh^T + b_hh in the order i, f, g, o;
-- c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c').
-- cell(x [, {h, c}]) -> h', c' for x [N x input_size] (h, c [N x hidden_size], zeros
-- when absent), or unbatched x [input_size] with h, c [hidden_size].
-- Parameters weight_ih [4H x I], weight_hh [4H x H], bias_ih and bias_hh [4H].
local LSTMCell = Module:extend('LSTMCell')
nn.LSTMCell = LSTMCell
function LSTMCell:init(input_size, hidden_size, opts)
  self.input_size = check_int('LSTMCell', 1, 'input_size', input_size, 1)
  self.hidden_size = check_int('LSTMCell', 2, 'hidden_size', hidden_size, 1)
  opts = check_opts('LSTMCell', 3, opts, { bias = true })
  local bias = check_bool('LSTMCell', 'bias', opts.bias)
  local H = self.hidden_size
  self.weight_ih = param(4 * H, self.input_size)
  self.weight_hh = param(4 * H, H)
  if bias then
    self.bias_ih = param(4 * H)
    self.bias_hh = param(4 * H)
  end
  self:reset_parameters()
end
LSTMCell.reset_parameters = recurrent_init
function LSTMCell:forward(x, hx)
  check_rank(self, x, { 1, 2 }, '1-D [input_size] or 2-D [batch x input_size]')
  check_features(self, x)
  local H, batched = self.hidden_size, x:dim() == 2
  local xb = batched and x or x:unsqueeze(1)
  local h, c
  if hx == nil then
    h = ember.zeros(xb:size(1), H)
    c = h
  elseif batched then
    h, c = check_state('LSTMCell', 2, hx, { 'h', 'c' }, { x:size(1), H }, 'batch x hidden_size')
  else
    h, c = check_state('LSTMCell', 2, hx, { 'h', 'c' }, { H }, 'hidden_size')
    h, c = h:unsqueeze(1), c:unsqueeze(1)
  end
  local h1, c1 = ember.lstm_cell(xb, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
  if batched then return h1, c1 end
  return h1:squeeze(1), c1:squeeze(1)
end
function LSTMCell:extra_repr()
  return ('%d -> %d%s'):format(self.input_size, self.hidden_size, self.bias_ih and '' or ', bias=false')
end

--- nn.LSTM(input_size, hidden_size [, {num_layers=1, bias=true, batch_first=false,
-- dropout=0}]): a stack of LSTM layers over a sequence, as PyTorch's LSTM.
-- lstm(x [, {h_0, c_0}]) -> output, {h_n, c_n} for x [T x N x input_size]
-- ([N x T x input_size] with batch_first) or unbatched [T x input_size];
-- h_0, c_0 [num_layers x N x H] ([num_layers x H] unbatched; zeros when absent);
-- output [T x N x H] ([N x T x H] with batch_first): the last layer's h at every step;
-- h_n, c_n [num_layers x N x H]: every layer's state after the last step (never
-- batch-first). dropout: applied to the outputs of every layer but the last while
-- training. Parameters per layer k: weight_ih_lk [4H x in], weight_hh_lk [4H x H],
-- bias_ih_lk, bias_hh_lk [4H] (PyTorch's names and order, so state dicts read alike).
local LSTM = Module:extend('LSTM')
nn.LSTM = LSTM
function LSTM:init(input_size, hidden_size, opts)
  self.input_size = check_int('LSTM', 1, 'input_size', input_size, 1)
  self.hidden_size = check_int('LSTM', 2, 'hidden_size', hidden_size, 1)
  opts = check_opts('LSTM', 3, opts, { num_layers = 1, bias = true, batch_first = false, dropout = 0 })
  self.num_layers = check_int('LSTM', 3, 'num_layers', opts.num_layers, 1)
  local bias = check_bool('LSTM', 'bias', opts.bias)
  self.batch_first = check_bool('LSTM', 'batch_first', opts.batch_first)
  local p = opts.dropout
  if type(p) ~= 'number' or not (p >= 0 and p <= 1) then
    raise(("LSTM: option 'dropout' must be a number in [0, 1], got %s"):format(describe(p)))
  end
  self.dropout = p
  local H = self.hidden_size
  for k = 0, self.num_layers - 1 do
    self['weight_ih_l' .. k] = param(4 * H, k == 0 and self.input_size or H)
    self['weight_hh_l' .. k] = param(4 * H, H)
    if bias then
      self['bias_ih_l' .. k] = param(4 * H)
      self['bias_hh_l' .. k] = param(4 * H)
    end
  end
  self:reset_parameters()
end
LSTM.reset_parameters = recurrent_init
function LSTM:forward(x, hx)
  check_rank(self, x, { 2, 3 }, self.batch_first and '3-D [batch x seq_len x input_size] or 2-D [seq_len x input_size]'
    or '3-D [seq_len x batch x input_size] or 2-D [seq_len x input_size]')
  check_features(self, x)
  local H, L, batched = self.hidden_size, self.num_layers, x:dim() == 3
  local seq = batched and (self.batch_first and x:transpose(1, 2) or x) or x:unsqueeze(2) -- [T x N x I]
  local T, N = seq:size(1), seq:size(2)
  if T == 0 then raise(('LSTM: input %s has no time steps'):format(shape_str(x))) end
  local h0, c0
  if hx ~= nil then
    if batched then
      h0, c0 = check_state('LSTM', 2, hx, { 'h_0', 'c_0' }, { L, N, H }, 'num_layers x batch x hidden_size')
    else
      h0, c0 = check_state('LSTM', 2, hx, { 'h_0', 'c_0' }, { L, H }, 'num_layers x hidden_size')
      h0, c0 = h0:unsqueeze(2), c0:unsqueeze(2)
    end
  end
  local zeros = h0 == nil and ember.zeros(N, H) or nil
  local input, hn, cn = seq, {}, {}
  for k = 0, L - 1 do
    local w_hh, b_hh = self['weight_hh_l' .. k], self['bias_hh_l' .. k]
    -- the input's part of every step's gates in one product: [T x N x 4H]
    local gx = ember.linear(input, self['weight_ih_l' .. k], self['bias_ih_l' .. k])
    local h, c = zeros, zeros
    if h0 then h, c = h0:select(1, k + 1), c0:select(1, k + 1) end
    local outs = {}
    for t = 1, T do
      local hc = ember.lstm_pointwise(gx:select(1, t) + ember.linear(h, w_hh, b_hh), c)
      h, c = hc:select(1, 1), hc:select(1, 2)
      outs[t] = h
    end
    hn[k + 1], cn[k + 1] = h, c
    local last = k == L - 1
    input = ember.stack(outs, (last and batched and self.batch_first) and 2 or 1)
    if not last and self.dropout > 0 and self.training then input = ember.dropout(input, self.dropout, true) end
  end
  local h_n, c_n = ember.stack(hn, 1), ember.stack(cn, 1)
  if not batched then return input:squeeze(2), { h_n:squeeze(2), c_n:squeeze(2) } end
  return input, { h_n, c_n }
end
function LSTM:extra_repr()
  local parts = { ('%d -> %d'):format(self.input_size, self.hidden_size) }
  if self.num_layers ~= 1 then parts[#parts + 1] = 'num_layers ' .. self.num_layers end
  if not self.bias_ih_l0 then parts[#parts + 1] = 'bias=false' end
  if self.batch_first then parts[#parts + 1] = 'batch_first=true' end
  if self.dropout ~= 0 then parts[#parts + 1] = 'dropout ' .. self.dropout end
  return table.concat(parts, ', ')
end

--- nn.Identity(): returns its input.
nn.Identity = Module:extend('Identity')
function nn.Identity:forward(x) return x end

-- Activations: an elementwise function with at most one numeric setting.
local function activation(name, fn, setting, default, check)
  local cls = Module:extend(name)
  if setting then
    cls.init = function(self, v)
      if v == nil then v = default end
      if check then check(v) elseif type(v) ~= 'number' then arg_error(name, 1, setting, 'a number', v) end
      self[setting] = v
    end
    cls.extra_repr = function(self) return setting .. ' ' .. tostring(self[setting]) end
  end
  cls.forward = fn
  nn[name] = cls
  return cls
end

--- nn.ReLU(), nn.LeakyReLU([slope=0.01]), nn.ELU([alpha=1]), nn.Tanh(),
-- nn.Sigmoid(), nn.Softplus([beta=1]), nn.Softmax([dim=-1]), nn.LogSoftmax([dim=-1])
activation('ReLU', function(_, x) return x:relu() end)
activation('LeakyReLU', function(self, x) return x:leaky_relu(self.negative_slope) end, 'negative_slope', 0.01)
activation('ELU', function(self, x) return x:elu(self.alpha) end, 'alpha', 1.0)
activation('Tanh', function(_, x) return x:tanh() end)
activation('Sigmoid', function(_, x) return x:sigmoid() end)
activation('Softplus', function(self, x)
  if self.beta == 1 then return x:softplus() end
  return (x * self.beta):softplus() / self.beta
end, 'beta', 1.0, function(v)
  if type(v) ~= 'number' or v <= 0 then arg_error('Softplus', 1, 'beta', 'a number > 0', v) end
end)
local function check_dim(name)
  return function(v)
    if type(v) ~= 'number' or v ~= math.floor(v) or v == 0 then
      arg_error(name, 1, 'dim', 'a non-zero integer dim (1-based, negative from the end)', v)
    end
  end
end
activation('Softmax', function(self, x) return ember.softmax(x, self.dim) end, 'dim', -1, check_dim('Softmax'))
activation('LogSoftmax', function(self, x) return ember.log_softmax(x, self.dim) end, 'dim', -1, check_dim('LogSoftmax'))

--- init.dcgan_(module): the DCGAN initialisation, applied by module kind:
-- conv and transposed-conv weights N(0, 0.02) (their biases 0), BatchNorm
-- weights N(1, 0.02) and biases 0. Returns the module.
function init.dcgan_(module)
  if not class_of(module) then arg_error('init.dcgan_', 1, 'module', 'a module', module) end
  return module:apply(function(m)
    if m:is_a(Conv2d) or m:is_a(ConvTranspose2d) then
      init.normal_(m.weight, 0, 0.02)
      if m.bias then init.zeros_(m.bias) end
    elseif m:is_a(BatchNorm) then
      if m.weight then init.normal_(m.weight, 1, 0.02) end
      if m.bias then init.zeros_(m.bias) end
    end
  end)
end

return nn
