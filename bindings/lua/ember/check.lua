-- ember.check — numerical gradient checks (finite differences against the
-- analytic backward), used by the test suite and available to users who
-- write their own ops or modules.
--
-- The core is float32, so checks use central differences with eps = 3e-3 by
-- default and compare |analytic - numeric| <= atol + rtol * |numeric|
-- (atol = rtol = 1e-2 by default). The scalar being differentiated is
-- sum(out * w) with a fixed random w, accumulated in double precision in Lua.
local ember = require 'ember'

local check = {}

local function flat_numbers(t)
  local v = t:contiguous():view(-1):totable()
  if type(v) == 'number' then v = { v } end
  return v
end

-- Runs fn on inputs and returns sum(out * w) (a Lua double), out's shape.
local function weighted_value(fn, inputs, w)
  local out = fn(table.unpack(inputs))
  if not ember.is_tensor(out) then error('gradcheck: fn must return a tensor', 3) end
  local o = flat_numbers(out)
  local s = 0
  for k = 1, #o do s = s + o[k] * w[k] end
  return s, out
end

--- gradcheck(fn, inputs [, opts]) -> ok, message
-- fn(inputs...) returns a tensor; inputs is a list of tensors, each checked
-- when it requires grad. opts: eps, atol, rtol, seed.
function check.gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 3e-3, opts.atol or 1e-2, opts.rtol or 1e-2
  if type(fn) ~= 'function' then error('gradcheck: bad argument #1 (expected function)', 2) end
  if type(inputs) ~= 'table' then error('gradcheck: bad argument #2 (expected a table of tensors)', 2) end
  -- fixed weights for the output, drawn without disturbing the caller's RNG
  local saved_rng = ember.get_rng_state()
  ember.manual_seed(opts.seed or 1234)
  local probe = fn(table.unpack(inputs))
  local w = flat_numbers(ember.randn(probe:numel()))
  local wt = ember.tensor(#w > 0 and w or { 0 }):view(probe:shape())
  ember.set_rng_state(saved_rng)

  for _, x in ipairs(inputs) do
    if ember.is_tensor(x) and x:needs_grad() then x.grad = nil end
  end
  local out = fn(table.unpack(inputs))
  local s = (out * wt):sum()
  -- an output that does not depend on the inputs differentiably has zero gradient
  if s:needs_grad() then s:backward() end

  for i, x in ipairs(inputs) do
    if ember.is_tensor(x) and x:needs_grad() then
      local analytic = x.grad and flat_numbers(x.grad) or {}
      local flat = x:view(-1)
      for j = 1, x:numel() do
        local orig = ember.no_grad(function() return flat[j] end)
        -- the inputs change in place with recording off; fn itself runs
        -- with it on, since fn may take gradients (gradgradcheck)
        ember.no_grad(function() flat[j] = orig + eps end)
        local fp = weighted_value(fn, inputs, w)
        ember.no_grad(function() flat[j] = orig - eps end)
        local fm = weighted_value(fn, inputs, w)
        ember.no_grad(function() flat[j] = orig end)
        local numeric = (fp - fm) / (2 * eps)
        local a = analytic[j] or 0
        if not (math.abs(a - numeric) <= atol + rtol * math.abs(numeric)) then
          return false, ('gradcheck: input %d, element %d: analytic %.6g, numeric %.6g'):format(i, j, a, numeric)
        end
      end
    end
  end
  return true
end

--- gradgradcheck(fn, inputs [, opts]) -> ok, message
-- Checks second derivatives: the gradient of sum(v * d(sum(out * w))/dx)
-- computed with create_graph, against finite differences of it.
function check.gradgradcheck(fn, inputs, opts)
  opts = opts or {}
  local saved_rng = ember.get_rng_state()
  ember.manual_seed((opts.seed or 1234) + 1)
  local probe = fn(table.unpack(inputs))
  local w = ember.randn(probe:shape())
  local v = {}
  for i, x in ipairs(inputs) do v[i] = ember.randn(x:shape()) end
  ember.set_rng_state(saved_rng)
  local differentiable = {}
  for _, x in ipairs(inputs) do
    if ember.is_tensor(x) and x:needs_grad() then differentiable[#differentiable + 1] = x end
  end
  local function first_grads(...)
    local out = fn(...)
    local grads = ember.grad((out * w):sum(), differentiable, { create_graph = true })
    local total
    local k = 0
    for i, x in ipairs(inputs) do
      if ember.is_tensor(x) and x:needs_grad() then
        k = k + 1
        local g = grads[k]
        if g then
          local term = (g * v[i]):sum()
          total = total and (total + term) or term
        end
      end
    end
    return total or ember.zeros({})
  end
  return check.gradcheck(first_grads, inputs, opts)
end

return check
