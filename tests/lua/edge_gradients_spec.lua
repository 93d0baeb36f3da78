-- edge_gradients_spec.lua — gradients at the points where a backward formula
-- divides by an input or an output (prod with zeros, pow with exponent 0,
-- norms and std at zero spread, logsumexp and softmax with infinities, ties of
-- max/min/maximum/minimum) and the documented result at each (README's
-- "Gradients at edge points"). prod is checked against its closed form, to
-- first and second order, and against finite differences.
local ember = require 'ember'
local h = require 'tests.lua.helpers.common'

local function values(t)
  local flat, out = t:contiguous():view(-1), {}
  for i = 1, flat:numel() do out[i] = flat[i] end
  return out
end

local function assert_close(got, want, tol, what)
  assert.are.equal(#want, #got, what)
  for i = 1, #want do
    local g, w = got[i], want[i]
    local ok
    if w ~= w then ok = g ~= g
    elseif w == math.huge or w == -math.huge then ok = g == w
    else ok = math.abs(g - w) <= (tol or 1e-5) * (1 + math.abs(w)) end
    assert(ok, ('%s: element %d is %s, expected %s'):format(what or 'values', i, tostring(g), tostring(w)))
  end
end

-- The gradient of sum(f(x) * w) with respect to x, w of f's output shape
-- (an explicit output gradient, so infinite outputs are allowed).
local function grad_of(vals, f, w)
  local x = ember.tensor(vals):requires_grad()
  local y = f(x)
  y:backward(w or ember.ones(y:shape()))
  return values(x.grad)
end

-- ---- prod ---------------------------------------------------------------

-- Closed forms over one group (a Lua list): d prod / dx_i = prod_{j ~= i} x_j;
-- d2 prod / dx_i dx_k = prod_{j ~= i, k} x_j (0 on the diagonal).
local function others(xs, i, k)
  local p = 1
  for j = 1, #xs do if j ~= i and j ~= k then p = p * xs[j] end end
  return p
end

-- A 3-D tensor [2 x 3 x 4] with zeros placed so that groups along every dim
-- hold no zero, one zero and two zeros.
local function zeros_tensor()
  ember.manual_seed(7)
  local x = ember.randn(2, 3, 4) * 0.5 + 1
  x[1][1][1] = 0                       -- one zero in several groups
  x[1][2][2] = 0; x[1][2][3] = 0       -- two zeros in a row along dim 3
  x[2][1][4] = 0; x[2][3][4] = 0       -- two zeros in a column along dim 2
  return x
end

-- Reference gradient of x:prod(dims, keepdim) contracted with w, by brute force
-- over the groups: for every element, the product of the others in its group.
local function prod_grad_reference(x, dims, w)
  local sh = x:shape()
  local reduce = {}
  for _, d in ipairs(dims) do reduce[d] = true end
  local xs = values(x)
  local function index(i1, i2, i3) return ((i1 - 1) * sh[2] + (i2 - 1)) * sh[3] + i3 end
  local function key(i) -- the kept coordinates of element (i1, i2, i3)
    local k = {}
    for d = 1, 3 do k[d] = reduce[d] and 0 or i[d] end
    return table.concat(k, ',')
  end
  local groups = {}
  for i1 = 1, sh[1] do for i2 = 1, sh[2] do for i3 = 1, sh[3] do
    local k = key { i1, i2, i3 }
    groups[k] = groups[k] or {}
    table.insert(groups[k], index(i1, i2, i3))
  end end end
  local wv = values(w)
  local out, gi = {}, {}
  -- w is indexed by group in the order the output enumerates them (row-major
  -- over the kept dims), which is the order of first appearance above.
  local order = {}
  for i1 = 1, sh[1] do for i2 = 1, sh[2] do for i3 = 1, sh[3] do
    local k = key { i1, i2, i3 }
    if not gi[k] then order[#order + 1] = k; gi[k] = #order end
  end end end
  for k, members in pairs(groups) do
    local gx = {}
    for m, pos in ipairs(members) do gx[m] = xs[pos] end
    for m, pos in ipairs(members) do out[pos] = wv[gi[k]] * others(gx, m) end
  end
  return out
end

describe('prod: gradient without dividing by x', function()
  it('is the closed form for no zero, one zero and two zeros (the issue\'s cases)', function()
    assert_close(grad_of({ 0, 2, 3 }, function(x) return x:prod(1) end), { 6, 0, 0 }, 0, '{0,2,3}')
    assert_close(grad_of({ 0, 0, 3 }, function(x) return x:prod(1) end), { 0, 0, 0 }, 0, '{0,0,3}')
    assert_close(grad_of({ 1, 2, 3 }, function(x) return x:prod(1) end), { 6, 3, 2 }, 0, '{1,2,3}')
    assert_close(grad_of({ 0 }, function(x) return x:prod(1) end), { 1 }, 0, '{0}')
  end)

  it('matches the closed form along every dim, several dims and all, with and without keepdim', function()
    local x0 = zeros_tensor()
    for _, dims in ipairs { { 1 }, { 2 }, { 3 }, { 1, 3 }, { 2, 3 }, { 1, 2, 3 } } do
      for _, keep in ipairs { false, true } do
        local x = x0:clone():requires_grad()
        local y = #dims == 3 and not keep and x:prod() or x:prod(dims, keep)
        ember.manual_seed(3)
        local w = ember.randn(y:shape())
        y:backward(w)
        local what = ('prod over {%s} keepdim=%s'):format(table.concat(dims, ','), tostring(keep))
        assert_close(values(x.grad), prod_grad_reference(x0, dims, w), 1e-5, what)
        for _, v in ipairs(values(x.grad)) do assert(v == v, what .. ': NaN in the gradient') end
      end
    end
  end)

  it('passes finite differences with zeros, and a:relu():prod(2) does too', function()
    local x = zeros_tensor()
    for _, d in ipairs { 1, 2, 3 } do
      local ok, msg = ember.gradcheck(function(a) return a:prod(d) end, { x:clone():requires_grad() })
      assert.is_true(ok, msg)
    end
    local ok, msg = ember.gradcheck(function(a) return a:prod({ 1, 3 }, true) end, { x:clone():requires_grad() })
    assert.is_true(ok, msg)
    ember.manual_seed(11)
    local a = ember.randn(4, 5) -- about half the entries become exact zeros
    a[1][1] = -0.7; a[2][2] = -0.3; a[2][4] = -1.1
    ok, msg = ember.gradcheck(function(t) return t:relu():prod(2) end, { a:requires_grad() })
    assert.is_true(ok, msg)
  end)

  it('has the right second derivative: closed form and gradgradcheck, zeros included', function()
    for _, xs in ipairs { { 0, 2, 3, -1.5 }, { 0, 0, 3, 2 }, { 0, 0, 0, 2 }, { 1.5, 2, -3, 0.5 } } do
      local x = ember.tensor(xs):requires_grad()
      local g = ember.grad(x:prod(1), { x }, { create_graph = true })[1]
      local w = ember.tensor { 0.3, -1.2, 0.7, 2.0 }
      local hw = ember.grad((g * w):sum(), { x })[1]
      local want = {}
      for k = 1, #xs do
        local s = 0
        for i = 1, #xs do if i ~= k then s = s + w[i] * others(xs, i, k) end end
        want[k] = s
      end
      assert_close(values(hw), want, 1e-5, 'Hessian-vector product at {' .. table.concat(xs, ',') .. '}')
    end
    local x = zeros_tensor()
    for _, d in ipairs { 1, 3 } do
      local ok, msg = ember.gradgradcheck(function(a) return a:prod(d) end, { x:clone():requires_grad() })
      assert.is_true(ok, msg)
    end
    local ok, msg = ember.gradgradcheck(function(a) return a:prod({ 2, 3 }, true) end, { x:clone():requires_grad() })
    assert.is_true(ok, msg)
  end)

  it('the check would catch a wrong prod backward', function()
    ember._debug_break_backward('prod_others')
    local ok = ember.gradgradcheck(function(a) return a:prod(1) end, { ember.tensor({ 0, 2, 3 }):requires_grad() })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
  end)

  it('refuses a third derivative with a clear message instead of a wrong number', function()
    local x = ember.tensor({ 0, 2, 3 }):requires_grad()
    local g = ember.grad(x:prod(1), { x }, { create_graph = true })[1]
    local g2 = ember.grad(g:sum(), { x }, { create_graph = true })[1]
    h.raises('prod: derivatives of third order and above are not implemented', function()
      ember.grad(g2:sum(), { x })
    end)
  end)
end)

-- ---- the other edge points ----------------------------------------------

describe('gradients at edge points (the documented results)', function()
  local inf = math.huge

  it('pow: x^0 has gradient 0 everywhere, 0 included; x^1 is 1; x^2 is 0 at 0; x^0.5 is inf at 0', function()
    assert_close(grad_of({ 0, 1, -2 }, function(x) return x ^ 0 end), { 0, 0, 0 }, 0, 'x^0')
    assert_close(grad_of({ 0, 3 }, function(x) return x ^ 1 end), { 1, 1 }, 0, 'x^1')
    assert_close(grad_of({ 0, 3 }, function(x) return x ^ 2 end), { 0, 6 }, 1e-6, 'x^2')
    assert_close(grad_of({ 0 }, function(x) return x ^ 0.5 end), { inf }, 0, 'x^0.5')
    -- a tensor exponent that is 0 where the base is 0
    assert_close(grad_of({ 0, 2 }, function(x) return x:pow(ember.tensor { 0, 0 }) end), { 0, 0 }, 0, 'x^t, t = 0')
    local ok, msg = ember.gradgradcheck(function(a) return a ^ 0 end, { ember.tensor({ 0, 1.5 }):requires_grad() })
    assert.is_true(ok, msg)
  end)

  it('sqrt, log, div at 0: the true infinite slope, as PyTorch', function()
    assert_close(grad_of({ 0 }, function(x) return x:sqrt() end), { inf }, 0, 'sqrt at 0')
    assert_close(grad_of({ 0 }, function(x) return x:log() end), { inf }, 0, 'log at 0')
    assert_close(grad_of({ 1 }, function(x) return x / ember.tensor { 0 } end), { inf }, 0, '1/0')
    -- ... so a mask after an infinite slope gives 0 * inf = NaN, as in PyTorch: the
    -- optimizers refuse such a step (see optim's non-finite gradient check).
    local g = grad_of({ -1 }, function(x) return x:relu():sqrt() end)
    assert(g[1] ~= g[1], 'sqrt(relu(-1)) has a NaN gradient (documented)')
  end)

  it('norm: 0 at the zero vector (the subgradient) for p = 1, 2, 3 and inf; x/|x| elsewhere', function()
    for _, p in ipairs { 1, 2, 3, inf } do
      assert_close(grad_of({ 0, 0, 0 }, function(x) return x:norm(p) end), { 0, 0, 0 }, 0, 'norm p=' .. p .. ' at 0')
    end
    assert_close(grad_of({ 3, -4 }, function(x) return x:norm() end), { 0.6, -0.8 }, 1e-6, 'norm at {3,-4}')
    assert_close(grad_of({ 3, -4 }, function(x) return x:norm(1) end), { 1, -1 }, 0, 'norm 1')
    assert_close(grad_of({ 3, -3, 1 }, function(x) return x:norm(inf) end), { 0.5, -0.5, 0 }, 0, 'norm inf tie')
    local x = ember.tensor({ { 0, 0 }, { 3, 4 } })
    assert_close(values(x:norm(2, 2)), { 0, 5 }, 1e-6, 'row norms')
    assert_close(grad_of({ { 0, 0 }, { 3, 4 } }, function(a) return a:norm(2, 2, true) end),
      { 0, 0, 0.6, 0.8 }, 1e-6, 'row norms, keepdim')
    local ok, msg = ember.gradcheck(function(a) return a:norm(2, 2) end, { ember.randn(3, 4):requires_grad() })
    assert.is_true(ok, msg)
    ok, msg = ember.gradcheck(function(a) return a:norm(3) end, { (ember.randn(5) + 0.1):requires_grad() })
    assert.is_true(ok, msg)
    h.raises('norm: bad argument #2 (expected number p >= 1 or math.huge', function() return x:norm(0.5) end)
    h.raises('norm: bad argument #2', function() return x:norm('fro') end)
  end)

  it('std: 0 for a constant group (the formula would be 0/0); var: 0 there too', function()
    assert_close(grad_of({ 2, 2, 2 }, function(x) return x:std() end), { 0, 0, 0 }, 0, 'std of a constant')
    assert_close(grad_of({ { 1, 1 }, { 1, 3 } }, function(x) return x:std(2) end),
      { 0, 0, -0.70710677, 0.70710677 }, 1e-6, 'std by rows, one constant')
    assert_close(grad_of({ 2, 2, 2 }, function(x) return x:var() end), { 0, 0, 0 }, 0, 'var of a constant')
  end)

  it('logsumexp with infinities: the softmax, split evenly where the result is infinite', function()
    assert_close(grad_of({ -inf, -inf }, function(x) return x:logsumexp(1) end), { 0.5, 0.5 }, 0, 'all -inf')
    assert_close(grad_of({ inf, 1, inf }, function(x) return x:logsumexp(1) end), { 0.5, 0, 0.5 }, 0, '+inf')
    assert_close(grad_of({ -inf, 0, 0 }, function(x) return x:logsumexp(1) end), { 0, 0.5, 0.5 }, 1e-6, 'some -inf')
    assert_close(grad_of({ { -inf, -inf }, { 0, math.log(3) } }, function(x) return x:logsumexp(2) end),
      { 0.5, 0.5, 0.25, 0.75 }, 1e-6, 'by rows')
  end)

  it('softmax / log_softmax with -inf logits: finite gradients, 0 at the masked entries', function()
    local w = ember.tensor { 0.3, -0.2, 0.9 }
    local g = grad_of({ -inf, 0.5, 1.0 }, function(x) return x:softmax(1) end, w)
    assert.are.equal(0, g[1])
    for i = 2, 3 do assert(g[i] == g[i] and math.abs(g[i]) < inf, 'finite') end
    g = grad_of({ -inf, 0.5, 1.0 }, function(x) return x:log_softmax(1) end, ember.tensor { 0, 1, 0 })
    assert_close(g, { 0, 1 - 1 / (1 + math.exp(0.5)), -math.exp(1) / (math.exp(0.5) + math.exp(1)) }, 1e-5, 'log_softmax')
    -- a row of -inf only has no softmax: NaN, as in PyTorch (documented)
    local y = ember.tensor({ -inf, -inf }):softmax(1)
    assert(y[1] ~= y[1], 'softmax of an all -inf row is NaN')
  end)

  it('max/min ties: reductions split evenly; maximum/minimum give half to each side', function()
    assert_close(grad_of({ 1, 3, 3 }, function(x) return x:max() end), { 0, 0.5, 0.5 }, 0, 'max tie')
    assert_close(grad_of({ 2, 2, 5 }, function(x) return x:min() end), { 0.5, 0.5, 0 }, 0, 'min tie')
    assert_close(grad_of({ { 1, 1 }, { 1, 2 } }, function(x) return (x:max(2)) end),
      { 0.5, 0.5, 0, 1 }, 0, 'max(dim) tie')
    local a = ember.tensor({ 1, 2, 3 }):requires_grad()
    local b = ember.tensor({ 1, 1, 4 }):requires_grad()
    ember.max(a, b):sum():backward()
    assert_close(values(a.grad), { 0.5, 1, 0 }, 0, 'maximum: a')
    assert_close(values(b.grad), { 0.5, 0, 1 }, 0, 'maximum: b')
    a.grad = nil; b.grad = nil
    ember.min(a, b):sum():backward()
    assert_close(values(a.grad), { 0.5, 0, 1 }, 0, 'minimum: a')
    assert_close(values(b.grad), { 0.5, 1, 0 }, 0, 'minimum: b')
  end)

  it('kinks: abs and relu have gradient 0 at 0; clamp passes the gradient at its bounds', function()
    assert_close(grad_of({ 0 }, function(x) return x:abs() end), { 0 }, 0, 'abs')
    assert_close(grad_of({ 0 }, function(x) return x:relu() end), { 0 }, 0, 'relu')
    assert_close(grad_of({ 0, 1, 0.5 }, function(x) return x:clamp(0, 1) end), { 1, 1, 1 }, 0, 'clamp')
  end)
end)

describe('messages name the function called', function()
  it('an allocation too large for the machine names zeros / randn / ones', function()
    h.raises('zeros: out of memory: a tensor of 1099511627776 elements', function() return ember.zeros(2 ^ 40) end)
    h.raises('randn: out of memory', function() return ember.randn(2 ^ 20, 2 ^ 20) end)
    h.raises('ones: out of memory', function() return ember.ones { 2 ^ 21, 2 ^ 21 } end)
  end)

  it('save_grid of samples holding NaN names save_grid and writes nothing', function()
    local dir = h.tmpdir()
    local x = ember.rand(4, 1, 5, 5)
    x[2][1][3][3] = 0 / 0
    local path = dir .. '/grid.png'
    h.raises('save_grid: the images hold 1 NaN value', function() ember.image.save_grid(x, path) end)
    assert.is_false(h.exists(path))
    h.raises('save_grid:', function() ember.image.save_grid(ember.rand(2, 5, 4, 4), path) end)
    os.remove(dir)
  end)
end)
