-- autograd_spec.lua — finite-difference gradient checks (ember.gradcheck) for
-- every differentiable op of the core sections "views", "elementwise",
-- "reductions", "linear algebra" and "joining and indexing" of em_ops.def;
-- second-order checks (ember.gradgradcheck) for a representative set; proof
-- that the check catches a wrong backward; and the mechanics: accumulation,
-- retain_graph, detach, no_grad / set_grad_enabled, ember.grad with
-- create_graph (a gradient penalty), the autograd errors, and a 100,000-op
-- chain whose backward and release neither overflow the stack nor leak.
--
-- Inputs are chosen away from kinks (|x| >= 0.2 for abs/relu/leaky_relu/elu,
-- distinct values for max/min/maximum/minimum/clamp) and in each function's
-- domain (positive for log/sqrt/rsqrt/pow bases).
local ember = require 'ember'

local function check(fn, inputs, opts)
  local ok, msg = ember.gradcheck(fn, inputs, opts)
  assert.is_true(ok, msg)
end

local function check2(fn, inputs, opts)
  local ok, msg = ember.gradgradcheck(fn, inputs, opts)
  assert.is_true(ok, msg)
end

-- A leaf that requires grad, from a table or a tensor.
local function leaf(t)
  if not ember.is_tensor(t) then t = ember.tensor(t) end
  return t:detach():contiguous():clone():requires_grad()
end

local function numel_of(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- Distinct values k * 0.25 + offset (k a shuffled range around 0): no two
-- elements within 0.25, so max/min/clamp never see a tie or a kink.
local function spaced(shape, offset, seed)
  local n = numel_of(shape)
  local ks = {}
  for i = 1, n do ks[i] = i - (n + 1) // 2 end
  local rng = seed or 1
  for i = n, 2, -1 do -- a deterministic shuffle
    rng = (rng * 1103515245 + 12345) % 2147483648
    local j = rng % i + 1
    ks[i], ks[j] = ks[j], ks[i]
  end
  local v = {}
  for i = 1, n do v[i] = ks[i] * 0.25 + (offset or 0.1) end
  return leaf(ember.tensor(v):view(shape))
end

-- Values with |x| in [0.2, 1.2]: away from 0.
local function away(shape)
  local u = ember.rand(shape)
  local sign = ember.bernoulli(0.5, shape) * 2 - 1
  return leaf((u + 0.2) * sign)
end

-- Values in [0.5, 2].
local function positive(shape) return leaf(ember.rand(shape) * 1.5 + 0.5) end

local function randn(shape) return leaf(ember.randn(shape)) end

-- v rounded to float32, as the core stores it.
local function f32(v) return (string.unpack('f', string.pack('f', v))) end

before_each(function() ember.manual_seed(2024) end)

describe('gradcheck: views', function()
  it('view, reshape (contiguous and not), flatten', function()
    local x = randn { 2, 3, 4 }
    check(function(a) return a:view(6, 4) end, { x })
    check(function(a) return a:view(-1) end, { x })
    check(function(a) return a:reshape(4, 6) end, { x })
    check(function(a) return a:transpose(1, 3):reshape(4, 6) end, { x }) -- copies
    check(function(a) return a:transpose(1, 2):view(3, 2, 2, 2) end, { x }) -- strided view
    check(function(a) return a:flatten(2) end, { x })
  end)
  it('permute, transpose, t', function()
    local x = randn { 2, 3, 4 }
    check(function(a) return a:permute(3, 1, 2) end, { x })
    check(function(a) return a:transpose(1, -1) end, { x })
    check(function(a) return a[1]:t() end, { x })
  end)
  it('narrow, select, t[i], split, chunk', function()
    local x = randn { 3, 5 }
    check(function(a) return a:narrow(2, 2, 3) end, { x })
    check(function(a) return a:narrow(1, 3, 1) end, { x })
    check(function(a) return a:select(2, 4) end, { x })
    check(function(a) return a:select(1, -1) end, { x })
    check(function(a) return a[2] end, { x })
    check(function(a)
      local p = a:split(2, 2) -- sizes 2, 2, 1
      return ember.cat({ p[3] * 3, p[1], p[2] * -1 }, 2)
    end, { x })
    check(function(a) return a:chunk(2, 1)[2] end, { x })
  end)
  it('expand, expand_as, squeeze, unsqueeze', function()
    local x = randn { 3, 1 }
    check(function(a) return a:expand(2, 3, 4) end, { x })
    check(function(a) return a:expand_as(ember.zeros(3, 5)) end, { x })
    check(function(a) return a:squeeze() end, { x })
    check(function(a) return a:squeeze(2) end, { x })
    check(function(a) return a:unsqueeze(1) end, { x })
    check(function(a) return a:unsqueeze(-1):expand(3, 1, 2) end, { x })
  end)
  it('clone, contiguous (of a non-contiguous tensor)', function()
    local x = randn { 3, 4 }
    check(function(a) return a:clone() end, { x })
    check(function(a) return a:t():contiguous() end, { x })
    check(function(a) return a:t():contiguous():view(12) end, { x })
  end)
  it('detach stops the gradient', function()
    -- (finite differences see through detach, so this one is checked by value)
    local x = randn { 3 }
    ;(x * x:detach()):sum():backward() -- d/dx = x, not 2x
    assert.are.same(x:detach():totable(), x.grad:totable())
    assert.is_false(x:detach():needs_grad())
    assert.is_true(x:detach().is_leaf)
  end)
end)

describe('gradcheck: elementwise', function()
  local unary = {
    neg = randn, abs = away, exp = randn, log = positive, log1p = positive, sqrt = positive,
    rsqrt = positive, tanh = randn, sigmoid = randn, relu = away, sin = randn, cos = randn,
    square = randn, reciprocal = away, softplus = randn,
  }
  for name, make in pairs(unary) do
    it('unary ' .. name, function()
      local x = make { 3, 4 }
      check(function(a) return a[name](a) end, { x })
      check(function(a) return ember[name](a:t()) end, { x }) -- non-contiguous input
    end)
  end

  it('sign, floor, ceil, round have no gradient (not recorded)', function()
    local x = randn { 4 }
    for _, name in ipairs { 'sign', 'floor', 'ceil', 'round' } do
      assert.is_false(x[name](x):needs_grad(), name)
    end
    for _, name in ipairs { 'eq', 'ne', 'lt', 'le', 'gt', 'ge' } do
      assert.is_false(x[name](x, 0):needs_grad(), name)
    end
  end)

  local binary = { 'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum' }
  -- shape pairs: broadcasting both ways, outer, 0-dim
  local pairs_of_shapes = {
    { { 3, 4 }, { 3, 4 } }, { { 3, 4 }, { 4 } }, { { 4 }, { 3, 4 } }, { { 3, 1 }, { 1, 4 } },
    { {}, { 2, 3 } }, { { 2, 1, 3 }, { 4, 1 } },
  }
  for _, op in ipairs(binary) do
    it('binary ' .. op .. ' with broadcasting both ways', function()
      for k, sp in ipairs(pairs_of_shapes) do
        local a, b
        if op == 'pow' then
          a, b = positive(sp[1]), randn(sp[2])
        elseif op == 'div' then
          a, b = randn(sp[1]), away(sp[2])
        else
          -- distinct, never within 0.1 of each other (maximum/minimum)
          a, b = spaced(sp[1], 0.1, k), spaced(sp[2], 0.2, k + 7)
        end
        check(function(p, q) return ember[op](p, q) end, { a, b })
      end
    end)
    it('binary ' .. op .. ' with a scalar on either side', function()
      local x = op == 'pow' and positive { 3, 4 } or (op == 'div' and away { 3, 4 } or spaced({ 3, 4 }, 0.1))
      check(function(a) return ember[op](a, 1.3) end, { x })
      check(function(a) return ember[op](1.3, a) end, { x })
      check(function(a) return a[op](a, -0.6) end, { x })
    end)
  end

  it('arithmetic metamethods with numbers on either side', function()
    local x = positive { 2, 3 }
    check(function(a) return a + 2 end, { x })
    check(function(a) return 2 + a end, { x })
    check(function(a) return a - 2 end, { x })
    check(function(a) return 2 - a end, { x })
    check(function(a) return a * 3 end, { x })
    check(function(a) return 3 * a end, { x })
    check(function(a) return a / 3 end, { x })
    check(function(a) return 3 / a end, { x })
    check(function(a) return a ^ 2.5 end, { x })
    check(function(a) return 2.5 ^ a end, { x })
    check(function(a) return -a end, { x })
    local y = positive { 3 }
    check(function(a, b) return a ^ b end, { x, y })
  end)

  it('clamp (both bounds, one bound)', function()
    local x = spaced({ 3, 4 }, 0.1) -- values k/4 + 0.1: none within 0.1 of the bounds
    check(function(a) return a:clamp(-0.5, 0.5) end, { x })
    check(function(a) return a:clamp(0) end, { x })
    check(function(a) return a:clamp(nil, 0.25) end, { x })
  end)

  it('where, with broadcasting and a number branch', function()
    local a, b = randn { 3, 4 }, randn { 4 }
    local cond = ember.tensor { { 1 }, { 0 }, { 1 } }
    check(function(p, q) return ember.where(cond, p, q) end, { a, b })
    check(function(p, q) return ember.where(cond:t(), q:view(4, 1), p:t()) end, { a, b })
    check(function(p) return ember.where(ember.tensor { 1, 0, 0, 1 }, p, 0.5) end, { a })
    check(function(p) return ember.where(ember.tensor { 1, 0, 0, 1 }, -2, p) end, { a })
  end)

  it('masked_fill', function()
    local a = randn { 3, 4 }
    check(function(p) return p:masked_fill(ember.tensor { 0, 1, 1, 0 }, 3) end, { a })
    check(function(p) return p:masked_fill(ember.tensor { { 1 }, { 0 }, { 0 } }, -1) end, { a })
  end)

  it('leaky_relu and elu', function()
    local x = away { 3, 4 }
    check(function(a) return a:leaky_relu(0.1) end, { x })
    check(function(a) return a:leaky_relu() end, { x })
    check(function(a) return a:elu(1.2) end, { x })
    check(function(a) return a:elu() end, { x })
  end)
end)

describe('gradcheck: reductions', function()
  local ops = { 'sum', 'mean', 'max', 'min', 'var', 'std', 'logsumexp', 'prod' }
  -- dims: single (also negative), multiple, all; keepdim both ways
  local dim_cases = { { 1 }, { 2 }, { -1 }, { { 1, 3 } }, { { 2, -1 } }, { { 1, 2, 3 } }, {} }
  for _, op in ipairs(ops) do
    it(op .. ' over single, multiple and all dims, keepdim true and false', function()
      local x
      if op == 'max' or op == 'min' then
        x = spaced({ 2, 3, 4 }, 0.1, 3)
      elseif op == 'prod' then
        x = away { 2, 3, 4 }
      else
        x = randn { 2, 3, 4 }
      end
      for _, dc in ipairs(dim_cases) do
        local dims = dc[1]
        for _, keep in ipairs { false, true } do
          local fn
          if dims == nil then
            fn = function(a) return a[op](a) end
          elseif op == 'max' or op == 'min' then
            -- max(dim) also returns indices: keep the values only
            fn = function(a) local v = a[op](a, dims, keep); return v end
          else
            fn = function(a) return a[op](a, dims, keep) end
          end
          local ok, msg = ember.gradcheck(fn, { x })
          assert.is_true(ok, ('%s dims=%s keepdim=%s: %s'):format(op,
            type(dims) == 'table' and table.concat(dims, ',') or tostring(dims), tostring(keep), msg))
        end
      end
      -- a non-contiguous input
      check(function(a) return a:transpose(1, 3)[op](a:transpose(1, 3), 2) end, { x })
    end)
  end
  it('var and std with correction 0', function()
    local x = randn { 3, 4 }
    check(function(a) return a:var(2, false, 0) end, { x })
    check(function(a) return a:std({ 1, 2 }, true, 0) end, { x })
  end)
  it('max and min split the gradient between ties', function()
    local x = leaf { 1, 3, 3, 2 }
    x:max():backward()
    assert.are.same({ 0, 0.5, 0.5, 0 }, x.grad:totable())
  end)
  it('argmax and argmin are not differentiable', function()
    local x = randn { 3, 4 }
    assert.is_false(x:argmax(2):needs_grad())
    local _, idx = x:max(2)
    assert.is_false(idx:needs_grad())
  end)
end)

describe('gradcheck: linear algebra', function()
  it('matmul 1-D and 2-D', function()
    local v, w = randn { 4 }, randn { 4 }
    local m, n = randn { 3, 4 }, randn { 4, 5 }
    check(function(a, b) return ember.matmul(a, b) end, { v, w }) -- dot
    check(function(a, b) return a:matmul(b) end, { v, n })          -- vector @ matrix
    check(function(a, b) return a:matmul(b) end, { m, v })          -- matrix @ vector
    check(function(a, b) return a:matmul(b) end, { m, n })
    check(function(a, b) return a:t():matmul(b:t()) end, { n, m }) -- transposed operands
    check(function(a, b) return a:narrow(2, 2, 3):matmul(b:narrow(1, 1, 3)) end, { m, n })
  end)
  it('matmul batched, with broadcast batch dims', function()
    local a, b = randn { 2, 3, 4 }, randn { 2, 4, 2 }
    check(function(p, q) return p:matmul(q) end, { a, b })
    local c, d = randn { 1, 3, 4 }, randn { 2, 4, 2 }
    check(function(p, q) return p:matmul(q) end, { c, d })
    local e, f = randn { 2, 1, 2, 3 }, randn { 3, 3, 2 }
    check(function(p, q) return p:matmul(q) end, { e, f })
    local g, h = randn { 2, 3, 4 }, randn { 4, 2 }
    check(function(p, q) return p:matmul(q) end, { g, h })
    check(function(p, q) return q:t():matmul(p:transpose(2, 3)) end, { g, h })
    check(function(p, q) return p:matmul(q) end, { randn { 4 }, randn { 2, 4, 3 } })
    check(function(p, q) return p:matmul(q) end, { randn { 2, 3, 4 }, randn { 4 } })
  end)
  it('linear with and without bias', function()
    local x, w, b = randn { 3, 4 }, randn { 5, 4 }, randn { 5 }
    check(function(p, q, r) return ember.linear(p, q, r) end, { x, w, b })
    check(function(p, q) return ember.linear(p, q) end, { x, w })
    check(function(p, q, r) return p:linear(q, r) end, { randn { 2, 3, 4 }, w, b }) -- 3-D input
    check(function(p, q, r) return ember.linear(p:t(), q, r) end, { randn { 4, 3 }, w, b })
    check(function(p, q) return ember.linear(p, q:t()) end, { x, randn { 4, 5 } })
    check(function(p, q, r) return ember.linear(p, q, r) end, { randn { 4 }, w, b }) -- 1-D input
  end)
end)

describe('gradcheck: joining and indexing', function()
  it('cat (inputs that do and do not need grad)', function()
    local a, b = randn { 2, 3 }, randn { 2, 2 }
    local c = ember.randn(2, 1)
    check(function(p, q) return ember.cat({ p, c, q }, 2) end, { a, b })
    check(function(p, q) return ember.cat({ p:t(), q:t() }, 1) end, { a, b })
    check(function(p) return ember.cat { p, p * 2 } end, { a })
  end)
  it('stack', function()
    local a, b = randn { 2, 3 }, randn { 2, 3 }
    check(function(p, q) return ember.stack { p, q } end, { a, b })
    check(function(p, q) return ember.stack({ p, q:t():t() }, -1) end, { a, b })
  end)
  it('index_select (with repeated indices)', function()
    local a = randn { 4, 3 }
    check(function(p) return p:index_select(1, { 4, 1, 4, 2 }) end, { a })
    check(function(p) return p:index_select(2, ember.tensor { 3, 3 }) end, { a })
    check(function(p) return p:t():index_select(2, { 2 }) end, { a })
  end)
  it('gather', function()
    local a = randn { 3, 4 }
    check(function(p) return p:gather(2, ember.tensor { { 1, 4 }, { 2, 2 }, { 4, 3 } }) end, { a })
    check(function(p) return p:gather(1, ember.tensor { { 3, 1, 2, 3 } }) end, { a })
  end)
  it('scatter_add (input and source)', function()
    local a, src = randn { 3, 4 }, randn { 3, 2 }
    local idx = ember.tensor { { 1, 4 }, { 2, 2 }, { 4, 3 } }
    check(function(p, s) return p:scatter_add(2, idx, s) end, { a, src })
    check(function(s) return ember.zeros(3, 4):scatter_add(2, idx, s) end, { src })
  end)
end)

describe('gradgradcheck: second derivatives', function()
  local x = function() return randn { 2, 3 } end
  it('tanh, sigmoid, exp, log, softplus', function()
    check2(function(a) return a:tanh() end, { x() })
    check2(function(a) return a:sigmoid() end, { x() })
    check2(function(a) return a:exp() end, { x() })
    check2(function(a) return a:log() end, { positive { 2, 3 } })
    check2(function(a) return a:softplus() end, { x() })
  end)
  it('mul, div, pow (tensor and scalar exponents)', function()
    check2(function(a, b) return a * b end, { x(), randn { 3 } })
    check2(function(a, b) return a / b end, { x(), away { 2, 1 } })
    check2(function(a, b) return a ^ b end, { positive { 2, 3 }, randn { 3 } })
    check2(function(a) return a ^ 3 end, { x() })
    check2(function(a) return 2 ^ a end, { x() })
  end)
  it('matmul and linear', function()
    check2(function(a, b) return a:matmul(b) end, { randn { 2, 3 }, randn { 3, 2 } })
    check2(function(a, b) return a:matmul(b) end, { randn { 2, 2, 3 }, randn { 3, 2 } })
    check2(function(a, w, b) return ember.linear(a, w, b) end, { randn { 2, 3 }, randn { 2, 3 }, randn { 2 } })
  end)
  it('sum, mean, and the other reductions', function()
    check2(function(a) return (a * a):sum(2) end, { x() })
    check2(function(a) return (a * a):mean() end, { x() })
    check2(function(a) return a:logsumexp(2) end, { x() })
    check2(function(a) return a:var(1) end, { randn { 3, 2 } })
    check2(function(a) return a:std(2) end, { randn { 2, 3 } })
    check2(function(a) return a:prod(2) end, { away { 2, 3 } })
    check2(function(a) return (a:max(2) * a:sum(2)) end, { spaced({ 2, 3 }, 0.1) })
  end)
  it('relu via leaky_relu, elu, clamp, where', function()
    check2(function(a) return a:leaky_relu(0.2) * a end, { away { 2, 3 } })
    check2(function(a) return a:elu() end, { away { 2, 3 } })
    check2(function(a) return a:clamp(-0.5, 0.5) * a end, { spaced({ 2, 3 }, 0.1) })
    check2(function(a, b) return ember.where(ember.tensor { 1, 0, 1 }, a * a, b * a) end, { x(), x() })
  end)
  it('views and indexing (their gradients are themselves differentiable)', function()
    check2(function(a) return a:narrow(2, 2, 2):square() end, { x() })
    check2(function(a) return a:select(1, 2):square() end, { x() })
    check2(function(a) return a:t():expand(2, 3, 2):square() end, { x() })
    check2(function(a) return a:index_select(2, { 1, 3, 3 }):square() end, { x() })
    check2(function(a) return a:gather(2, ember.tensor { { 1 }, { 3 } }):square() end, { x() })
    check2(function(a, s) return (a:scatter_add(2, ember.tensor { { 1 }, { 3 } }, s) * a) end, { x(), randn { 2, 1 } })
    check2(function(a, b) return ember.cat({ a, b }, 1):square() end, { x(), randn { 1, 3 } })
  end)
end)

describe('the gradient check itself', function()
  it('catches a deliberately wrong backward', function()
    local a, b = randn { 3, 4 }, randn { 4, 2 }
    ember._debug_break_backward('matmul')
    local ok, msg = ember.gradcheck(function(p, q) return p:matmul(q) end, { a, b })
    ember._debug_break_backward()
    assert.is_false(ok)
    assert.is_truthy(msg:find('gradcheck: input 1, element', 1, true), msg)
    -- restored: the same check passes again
    check(function(p, q) return p:matmul(q) end, { a, b })
    -- and for another op, through gradgradcheck
    ember._debug_break_backward('unary')
    local ok2 = ember.gradgradcheck(function(p) return p:tanh() end, { randn { 3 } })
    ember._debug_break_backward()
    assert.is_false(ok2)
  end)
end)

describe('autograd mechanics', function()
  it('gradients accumulate across two backwards', function()
    local x = leaf { 1, 2, 3 }
    ;(x * x):sum():backward()
    assert.are.same({ 2, 4, 6 }, x.grad:totable())
    ;(x * 3):sum():backward()
    assert.are.same({ 5, 7, 9 }, x.grad:totable())
    x.grad = nil
    ;(x * 3):sum():backward()
    assert.are.same({ 3, 3, 3 }, x.grad:totable())
  end)

  it('a gradient used twice in the graph adds up', function()
    local x = leaf { 2 }
    local y = x * x
    local z = y * x + y -- x^3 + x^2: 3x^2 + 2x = 16
    z:backward(ember.ones(1))
    assert.are.same({ 16 }, x.grad:totable())
  end)

  it('retain_graph allows a second backward', function()
    local x = leaf { 1, 2 }
    local loss = (x:exp()):sum()
    loss:backward { retain_graph = true }
    loss:backward()
    for i, v in ipairs(x.grad:totable()) do
      assert.is_true(math.abs(v - 2 * math.exp(i)) < 1e-4)
    end
    assert.has_error(function() loss:backward() end)
  end)

  it('backward with an explicit gradient', function()
    local x = leaf { { 1, 2 }, { 3, 4 } }
    local y = x * 2
    y:backward(ember.tensor { { 1, 0 }, { 0, 10 } })
    assert.are.same({ { 2, 0 }, { 0, 20 } }, x.grad:totable())
  end)

  it('detach cuts the graph', function()
    local x = leaf { 1, 2 }
    local d = (x * 3):detach()
    assert.is_false(d:needs_grad())
    assert.is_nil(d.grad_fn)
    local loss = (x * d):sum() -- d is a constant: d(x*d)/dx = d
    loss:backward()
    assert.are.same({ 3, 6 }, x.grad:totable())
  end)

  it('ember.no_grad and set_grad_enabled', function()
    local x = leaf { 1, 2 }
    local y, z = ember.no_grad(function(a) return a * 2, a + 1 end, x)
    assert.is_false(y:needs_grad())
    assert.is_false(z:needs_grad())
    assert.is_true(ember.is_grad_enabled())
    ember.no_grad(function() assert.is_false(ember.is_grad_enabled()) end)
    -- nested, and restored after an error inside
    ember.no_grad(function()
      ember.no_grad(function() end)
      assert.is_false(ember.is_grad_enabled())
    end)
    assert.is_false(pcall(ember.no_grad, function() error('x') end))
    assert.is_true(ember.is_grad_enabled())
    ember.set_grad_enabled(false)
    assert.is_false((x * 2):needs_grad())
    assert.is_false(ember.is_grad_enabled())
    ember.set_grad_enabled(true)
    assert.is_true((x * 2):needs_grad())
    assert.is_true((x * 2).grad_fn ~= nil)
  end)

  it('requires_grad marks leaves; is_leaf, grad_fn', function()
    local x = ember.ones(2)
    assert.is_false(x:needs_grad())
    x:requires_grad()
    assert.is_true(x:needs_grad())
    assert.is_true(x.is_leaf)
    local y = x * 2
    assert.is_false(y.is_leaf)
    assert.are.equal('mul', y.grad_fn)
    assert.has_error(function() y:requires_grad() end,
      'requires_grad: only a leaf tensor (not the result of an op) can be marked; use detach() first')
    x:requires_grad(false)
    assert.is_false((x * 2):needs_grad())
  end)

  it('ember.grad returns gradients without touching .grad', function()
    local x, w = leaf { 1, 2 }, leaf { 3, 4 }
    local c = ember.ones(2)
    local g = ember.grad((x * w):sum(), { x, w })
    assert.are.same({ 3, 4 }, g[1]:totable())
    assert.are.same({ 1, 2 }, g[2]:totable())
    assert.is_nil(x.grad)
    assert.is_nil(w.grad)
    -- an input the output does not depend on gets nil
    local u = leaf { 5 }
    local g2 = ember.grad((x * c):sum(), { x, u })
    assert.are.same({ 1, 1 }, g2[1]:totable())
    assert.is_nil(g2[2])
    -- a non-leaf input
    local h = x * 2
    local g3 = ember.grad((h * h):sum(), { h })
    assert.are.same({ 4, 8 }, g3[1]:totable())
  end)

  it('ember.grad with create_graph: a gradient penalty differentiated again', function()
    -- f(x) = sum(x^3); df/dx = 3x^2; penalty = sum((df/dx)^2) = sum(9x^4); d/dx = 36x^3
    local x = leaf { 1, -2, 0.5 }
    local g = ember.grad((x ^ 3):sum(), { x }, { create_graph = true })[1]
    assert.is_true(g:needs_grad())
    local penalty = (g * g):sum()
    penalty:backward()
    local want = { 36, -288, 4.5 }
    for i, v in ipairs(x.grad:totable()) do
      assert.is_true(math.abs(v - want[i]) < 1e-3 * (1 + math.abs(want[i])), ('%g vs %g'):format(v, want[i]))
    end
    -- the same through a small network, against finite differences
    local inp, w = randn { 3, 4 }, randn { 2, 4 }
    check(function(a, ww)
      local out = ember.linear(a, ww):tanh():sum()
      local ga = ember.grad(out, { a }, { create_graph = true })[1]
      return (ga * ga):sum()
    end, { inp, w })
  end)

  it('backward with create_graph leaves a differentiable .grad', function()
    local x = leaf { 1, 2 }
    ;(x ^ 3):sum():backward { create_graph = true }
    local gx = x.grad
    assert.is_true(gx:needs_grad())
    local second = ember.grad(gx:sum(), { x })[1] -- d/dx sum(3x^2) = 6x
    assert.are.same({ 6, 12 }, second:totable())
    -- x -> x.grad -> its graph -> x is a reference cycle (as in PyTorch):
    -- dropping the gradient breaks it
    x.grad = nil
  end)

  it('errors: in-place on a tensor that requires grad, a saved tensor modified in place', function()
    local w = ember.zeros(3):requires_grad()
    assert.has_error(function() w:add_(1) end,
      'add_: in-place change of a tensor that requires grad; use an out-of-place op, or wrap it in ember.no_grad')
    local x = leaf { 1, 2, 3 }
    local h = x + 1
    local y = (h * h):sum()
    ember.no_grad(function() h:detach():mul_(2) end)
    local ok, err = pcall(function() y:backward() end)
    assert.is_false(ok)
    assert.is_truthy(err:find("backward: a tensor saved by 'mul' was modified in place after it was used; " ..
      'clone it before changing it', 1, true), err)
  end)

  it('a chain of 100,000 ops: backward and release neither overflow the stack nor leak', function()
    collectgarbage()
    collectgarbage()
    local live0 = ember.memory().live
    local x = leaf(ember.ones(4))
    local y = x
    for i = 1, 100000 do
      if i % 2 == 0 then y = y * 1.00001 else y = y + 0 end
    end
    local loss = y:sum()
    loss:backward()
    local want = f32(1.00001) ^ 50000
    for _, v in ipairs(x.grad:totable()) do
      assert.is_true(math.abs(v - want) < 1e-3 * want, ('%g vs %g'):format(v, want))
    end
    -- a second chain released without a backward, through a long view chain too
    local z = x
    for _ = 1, 100000 do z = z:view(2, 2):view(4) end
    z = z:exp()
    y, z, loss = nil, nil, nil
    x.grad = nil
    x = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(live0, ember.memory().live)
  end)

  it('a long chain with create_graph, and gradients of gradients', function()
    -- loss = (x c)^2 with c = 1.0001^20000 built by 20,000 ops; d/dx = 2 x c^2, d2/dx2 = 2 c^2
    local x = leaf { 0.5 }
    local y = x
    for _ = 1, 20000 do y = y * 1.0001 end
    local c = f32(1.0001) ^ 20000 -- the factor as float32 holds it
    local g = ember.grad((y * y):sum(), { x }, { create_graph = true })[1]
    assert.is_true(math.abs(g:item() - 2 * 0.5 * c * c) < 1e-3 * c * c)
    local gg = ember.grad(g:sum(), { x })[1]
    assert.is_true(math.abs(gg:item() - 2 * c * c) < 1e-3 * c * c)
  end)
end)

describe('fused backward of relu, tanh, sigmoid and leaky_relu', function()
  -- Without recording, their backward is one C pass (core/em_elementwise.c); with
  -- create_graph it is built from ops. The two must agree bit for bit, NaN, inf,
  -- zeros and a non-contiguous input included.
  it('gives the same bits as the op-built backward', function()
    ember.manual_seed(21)
    local base = ember.randn(300, 257) * 3
    local flatv = base:view(-1)
    flatv[1], flatv[2], flatv[3], flatv[4], flatv[5] = 0 / 0, 1 / 0, -1 / 0, 0, -0.0
    local g = ember.randn(300, 257)
    g:view(-1)[7] = 0 / 0
    local ops = {
      relu = function(x) return x:relu() end, tanh = function(x) return x:tanh() end,
      sigmoid = function(x) return x:sigmoid() end,
      leaky_relu = function(x) return ember.leaky_relu(x, 0.2) end,
      leaky_relu_steep = function(x) return ember.leaky_relu(x, 1.7) end,
    }
    for op, f in pairs(ops) do
      for _, layout in ipairs { 'contiguous', 'transposed' } do
        local src = layout == 'contiguous' and base or base:t():contiguous():t()
        local x1 = src:clone():requires_grad()
        local fast = ember.grad(f(x1), { x1 }, { grad = g })[1]
        local x2 = src:clone():requires_grad()
        local ref = ember.grad(f(x2), { x2 }, { grad = g, create_graph = true })[1]:detach()
        local a, b = fast:view(-1), ref:contiguous():view(-1)
        local same = a:eq(b) + a:ne(a) * b:ne(b) -- equal, or both NaN
        assert.are.equal(a:numel(), same:sum():item(), op .. ' ' .. layout)
        assert.is_true(a:ne(a):sum():item() > 0, 'the NaNs reach the gradient')
      end
    end
  end)
end)

describe('leaky_relu forward', function()
  it('the contiguous (vectorized) path equals the strided one, signed zeros, inf and NaN included', function()
    ember.manual_seed(22)
    local x = ember.randn(64, 33) * 4
    local v = x:view(-1)
    v[1], v[2], v[3], v[4], v[5] = 0 / 0, 1 / 0, -1 / 0, 0, -0.0
    for _, slope in ipairs { 0.2, 1.7, 0 } do
      local fast = ember.leaky_relu(x, slope):view(-1)
      local strided = ember.leaky_relu(x:t(), slope):t():contiguous():view(-1) -- a transposed input takes the strided loop
      local same = fast:eq(strided) + fast:ne(fast) * strided:ne(strided)
      assert.are.equal(fast:numel(), same:sum():item(), 'slope ' .. slope)
      if slope ~= 0 then assert.are.equal(-1 / 0 * slope, fast[3]) else assert.is_true(fast[3] ~= fast[3]) end
      assert.are.equal(1 / 0, fast[2])
      -- -0 stays -0 (x * 1 keeps the sign): 1 / -0 is -inf
      assert.are.equal(-1 / 0, 1 / fast[5])
    end
  end)
end)
