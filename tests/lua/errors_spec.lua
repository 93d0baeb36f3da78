-- errors_spec.lua — every class of user error is a Lua error whose message
-- names the function, the argument and expected vs got (shapes included), and
-- points at the caller's line; never a crash. After each error the state is
-- intact (the next call works).
local ember = require 'ember'

local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, 'expected an error')
  return tostring(err)
end

local function assert_error(fn, text)
  local err = error_of(fn)
  assert.is_truthy(err:find(text, 1, true), ('error "%s" does not contain "%s"'):format(err, text))
end

describe('shape errors', function()
  it('matmul names both shapes and the inner sizes', function()
    local x, w = ember.zeros(128, 784), ember.zeros(400, 784)
    local err = error_of(function() return x:matmul(w) end)
    assert.are.equal('errors_spec.lua', err:match('([%w_]+%.lua):%d+:'))
    assert.is_truthy(err:find('matmul: [128 x 784] @ [400 x 784]: inner sizes 784 and 400 differ', 1, true))
    assert_error(function() return ember.matmul(ember.zeros(2), ember.zeros(3)) end,
      'matmul: [2] @ [3]: inner sizes 2 and 3 differ')
    assert_error(function() return ember.zeros(2, 3, 4):matmul(ember.zeros(3, 4, 5)) end,
      'matmul: [2 x 3 x 4] @ [3 x 4 x 5]: batch dims do not broadcast')
    assert_error(function() return ember.tensor(1):matmul(ember.zeros(1)) end,
      'matmul: both operands need at least 1 dim, got [] @ [1]')
    assert_error(function() return ember.linear(ember.zeros(4, 5), ember.zeros(3, 6)) end,
      'linear: input [4 x 5] does not fit weight [3 x 6] (expected [... x 6])')
    assert_error(function() return ember.linear(ember.zeros(4, 5), ember.zeros(3, 5), ember.zeros(4)) end,
      'linear: bias [4] does not fit weight [3 x 5] (expected [3])')
  end)

  it('shapes that do not broadcast', function()
    assert_error(function() return ember.zeros(2, 3) + ember.zeros(4) end,
      'add: shapes [2 x 3] and [4] do not broadcast (dim 2: 3 vs 4)')
    assert_error(function() return ember.zeros(5, 2, 1):mul(ember.zeros(3, 2)) end,
      'mul: shapes [5 x 2 x 1] and [3 x 2] do not broadcast (dim 2: 2 vs 3)')
    assert_error(function() return ember.maximum(ember.zeros(2), ember.zeros(3)) end,
      'maximum: shapes [2] and [3] do not broadcast')
    assert_error(function() return ember.where(ember.ones(2), ember.zeros(3), 0) end,
      'where: shapes [2] and [3] do not broadcast')
    assert_error(function() return ember.zeros(3):add_(ember.zeros(2, 3)) end,
      'add_: [2 x 3] cannot be broadcast into [3]')
    assert_error(function() return ember.zeros(3):copy_(ember.zeros(4)) end,
      'copy_: shapes [3] and [4] do not broadcast')
    assert_error(function() return ember.zeros(2, 3):expand(3, 3) end,
      'expand: [2 x 3] cannot be expanded to [3 x 3] (dim 1 has size 2, not 1)')
    assert_error(function() return ember.cat { ember.zeros(2, 3), ember.zeros(2, 4) } end,
      'cat: tensor 2 has shape [2 x 4], which does not match [2 x 3] except in dim 1')
    assert_error(function() return ember.stack { ember.zeros(2), ember.zeros(3) } end,
      'stack: tensor 2 has shape [3], expected [2] like the first')
  end)

  it('reshape size mismatch and view of a non-contiguous tensor', function()
    local t = ember.zeros(2, 3)
    assert_error(function() return t:reshape(4) end, 'reshape: shape [4] (4 elements) does not fit [2 x 3] (6 elements)')
    assert_error(function() return t:view(4, -1) end, 'view: cannot infer the -1 size in [4 x -1] from 6 elements of [2 x 3]')
    assert_error(function() return t:view(-1, -1) end, 'view: only one size may be -1')
    assert_error(function() return t:t():view(6) end,
      'view: a non-contiguous tensor [3 x 2] cannot be viewed as [6]; use reshape or contiguous()')
    assert_error(function() return t:squeeze(1) end, 'squeeze: dim 1 has size 2, expected 1')
    assert_error(function() return t:permute(1) end, 'permute: expected 2 dims for a tensor of 2 dims, got 1')
    assert_error(function() return t:permute(1, 1) end, 'permute: dim 1 appears twice')
  end)
end)

describe('index errors', function()
  local t = ember.zeros(3)
  local m = ember.zeros(3, 4)
  it('t[i] and t[i] = v', function()
    assert_error(function() return t[5] end, 'index: index 5 out of range for dim 1 of size 3 (expected 1..3)')
    assert_error(function() return m[-4] end, 'index: index -4 out of range for dim 1 of size 3 (expected 1..3)')
    assert_error(function() t[5] = 1 end, 'newindex: index 5 out of range for dim 1 of size 3 (expected 1..3)')
  end)
  it('select, narrow, index_select, gather, scatter_add', function()
    assert_error(function() return m:select(2, 5) end, 'select: index 5 out of range for dim 2 of size 4 (expected 1..4)')
    assert_error(function() return m:select(1, 0) end, 'select: index 0 out of range for dim 1 of size 3 (expected 1..3)')
    assert_error(function() return m:narrow(2, 3, 3) end, 'narrow: range 3..5 is out of bounds for dim 2 of size 4')
    assert_error(function() return m:narrow(2, 0, 1) end, 'narrow: start 0 must be >= 1 (1-based)')
    assert_error(function() return m:index_select(1, { 1, 4 }) end, 'index_select: index 4 out of range (expected 1..3)')
    assert_error(function() return m:index_select(2, { 0 }) end, 'index_select: index 0 out of range (expected 1..4)')
    assert_error(function() return m:index_select(2, { 1.5 }) end, 'index_select: index 1.5 out of range (expected 1..4)')
    assert_error(function() return m:gather(2, ember.tensor { { 1 }, { 5 }, { 1 } }) end,
      'gather: index 5 out of range (expected 1..4)')
    assert_error(function() return m:gather(2, ember.tensor { 1, 2 }) end,
      'gather: index has 1 dims, expected 2 like the input')
    assert_error(function() return m:scatter_add(1, ember.tensor { { 4 } }, ember.ones(1, 1)) end,
      'scatter_add: index 4 out of range (expected 1..3)')
    assert_error(function() return m:index_select(1, 'x') end,
      'index_select: bad argument #3 (expected an index tensor or table, got string)')
  end)
end)

describe('type errors', function()
  local t = ember.zeros(2, 3)
  it('wrong types for shapes, operands and dims', function()
    assert_error(function() return ember.zeros('a') end,
      'zeros: bad argument #1 (expected a shape (table of sizes or sizes), got string)')
    assert_error(function() return ember.zeros { 2, 'a' } end, 'zeros: bad argument #1 (size 2 must be an integer, got string)')
    assert_error(function() return ember.zeros(2.5) end, 'zeros: bad argument #1 (expected an integer, got 2.5)')
    assert_error(function() return t + 'x' end, 'add: bad argument #2 (expected tensor or number, got string)')
    assert_error(function() return t:mul(true) end, 'mul: bad argument #2 (expected tensor or number, got boolean)')
    assert_error(function() return t:sum('x') end, 'sum: bad argument #2 (expected integer, got string)')
    assert_error(function() return t:sum(1, 'yes') end, 'sum: bad argument #3 (expected boolean (keepdim), got string)')
    assert_error(function() return t:view('a') end, 'view: bad argument #2 (expected integer, got string)')
    assert_error(function() return ember.tensor('x') end, 'tensor: bad argument #1 (expected a table of numbers, got string)')
    assert_error(function() return ember.sum('x') end, 'sum: bad argument #1 (expected tensor, got string)')
    assert_error(function() return ember.exp({}) end, 'exp: bad argument #1 (expected tensor, got table)')
    assert_error(function() return ember.matmul(t, 2) end, 'matmul: bad argument #2 (expected tensor, got number)')
    assert_error(function() return ember.cat { t, 1 } end, 'cat: bad argument #1 (item 2: expected tensor, got number)')
    assert_error(function() return ember.cat {} end, 'cat: bad argument #1 (expected a non-empty table of tensors)')
    assert_error(function() return ember.full(2, 1) end, 'full: bad argument #1 (expected a shape table, got number)')
    assert_error(function() return ember.manual_seed('a') end, 'manual_seed: bad argument #1 (expected integer, got string)')
    assert_error(function() return t:backward(5) end,
      'backward: bad argument #2 (expected gradient tensor or options table, got number)')
    assert_error(function() return ember.grad(t:sum(), { t }, { grad = 1 }) end, "grad: option 'grad' must be a tensor, got number")
    assert_error(function() t.foo = 1 end, "newindex: expected an integer index or 'grad', got string")
  end)

  it('negative sizes', function()
    assert_error(function() return ember.zeros(-1) end, 'zeros: bad argument #1 (size must be >= 0, got -1)')
    assert_error(function() return ember.zeros { 2, -1 } end, 'zeros: bad argument #1 (size 2 must be >= 0, got -1)')
    assert_error(function() return ember.randn(3, -2) end, 'randn: bad argument #2 (size must be >= 0, got -2)')
    assert_error(function() return ember.eye(-1) end, 'eye: sizes must be >= 0, got -1 x -1')
    assert_error(function() return ember.linspace(0, 1, -1) end, 'linspace: steps must be >= 0, got -1')
    assert_error(function() return t:view(-2, 3) end, 'view: size of dim 1 must be >= 0 or -1, got -2')
    assert_error(function() return ember.arange(0, 1, 0) end, 'arange: step must be non-zero')
    assert_error(function() return ember.randint(3, 1, { 2 }) end, 'randint: high 1 must be greater than low 3')
    assert_error(function() return ember.normal(0, -1, { 3 }) end, 'normal: std must be >= 0, got -1')
    assert_error(function() return ember.bernoulli(2, { 3 }) end, 'bernoulli: probabilities must be in [0, 1], got 2')
    assert_error(function() return t:split(0) end, 'split: size must be > 0, got 0')
    assert_error(function() return t:clamp(1, 0) end, 'clamp: min 1 is greater than max 0')
  end)

  it('dim 0 and out-of-range dims', function()
    local msg0 = 'bad argument #2 (dim 0 is not valid: dims are 1-based, -1 is the last)'
    assert_error(function() return t:sum(0) end, 'sum: ' .. msg0)
    assert_error(function() return t:size(0) end, 'size: ' .. msg0)
    assert_error(function() return t:transpose(0, 1) end, 'transpose: ' .. msg0)
    assert_error(function() return t:unsqueeze(0) end, 'unsqueeze: ' .. msg0)
    assert_error(function() return t:select(0, 1) end, 'select: ' .. msg0)
    assert_error(function() return t:sum(3) end, 'sum: dim 3 out of range for a tensor of 2 dims (expected -2..2)')
    assert_error(function() return t:mean(-3) end, 'mean: dim -3 out of range for a tensor of 2 dims (expected -2..2)')
    assert_error(function() return t:sum({ 1, -2 }) end, 'sum: dim 1 appears twice')
    assert_error(function() return t:max(3) end, 'max: dim 3 out of range for a tensor of 2 dims')
    assert_error(function() return t:argmax(3) end, 'argmax: dim 3 out of range for a tensor of 2 dims')
    assert_error(function() return t:transpose(1, 3) end, 'transpose: dim 3 out of range for a tensor of 2 dims (expected -2..2)')
    assert_error(function() return t:unsqueeze(4) end, 'unsqueeze: dim 4 out of range for a tensor of 2 dims (expected -3..3)')
    assert_error(function() return t:size(3) end, 'size: dim 3 out of range for a tensor of 2 dims (expected -2..2)')
    assert_error(function() return ember.cat({ t, t }, 3) end, 'cat: dim 3 out of range for a tensor of 2 dims')
    assert_error(function() return t:flatten(3) end, 'flatten: dim 3 out of range for a tensor of 2 dims (expected -2..2)')
    assert_error(function() return t:sum(100) end, 'sum: bad argument #2 (dim 100 out of range)')
  end)
end)

describe('memory errors', function()
  it('a tensor of 2^40 elements fails with out of memory, not a crash', function()
    assert_error(function() return ember.zeros(1024, 1024, 1024, 1024) end,
      'out of memory: a tensor of 1099511627776 elements')
    assert_error(function() return ember.randn(1024, 1024, 1024, 1024) end, 'out of memory')
    assert_error(function() return ember.ones { 2 ^ 40 } end, 'out of memory')
    assert_error(function() return ember.zeros(2 ^ 31, 2 ^ 31, 2 ^ 31) end, 'out of memory')
    assert_error(function() return ember.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1) end, 'zeros: a shape has at most 8 sizes')
    -- and nothing is broken afterwards
    assert.are.equal(6, ember.ones(2, 3):sum():item())
  end)
end)

describe('freed tensors', function()
  it('every use of a freed tensor is a clear error', function()
    local t = ember.zeros(3)
    t:free()
    local freed = 'the tensor was freed with free() or <close>'
    assert_error(function() return t:sum() end, 'sum: bad argument #1 (' .. freed .. ')')
    assert_error(function() return t:shape() end, 'shape: bad argument #1 (' .. freed .. ')')
    assert_error(function() return t + 1 end, 'add: bad argument #1 (expected tensor or number, got freed tensor)')
    assert_error(function() return 1 + t end, 'add: bad argument #2 (expected tensor or number, got freed tensor)')
    assert_error(function() return #t end, '#: bad argument #1 (' .. freed .. ')')
    assert_error(function() return t[1] end, 'index: bad argument #1 (' .. freed .. ')')
    assert_error(function() t[1] = 0 end, 'newindex: bad argument #1 (' .. freed .. ')')
    assert_error(function() return t.grad end, 'tensor.grad: the tensor was freed')
    assert_error(function() return ember.cat { t } end, 'cat: bad argument #1 (item 1: ' .. freed .. ')')
    assert.are.equal('ember.Tensor (freed)', tostring(t))
    t:free() -- freeing twice is harmless
  end)
end)

describe('autograd errors', function()
  it('in-place change of a tensor that requires grad', function()
    local w = ember.zeros(3):requires_grad()
    local text = 'in-place change of a tensor that requires grad; use an out-of-place op, or wrap it in ember.no_grad'
    assert_error(function() w:add_(1) end, 'add_: ' .. text)
    assert_error(function() w:fill_(1) end, 'fill_: ' .. text)
    assert_error(function() w:exp_() end, 'exp_: ' .. text)
    assert_error(function() w[1] = 2 end, 'fill_: ' .. text)
    assert_error(function() (w * 2):mul_(2) end, 'mul_: ' .. text)
    ember.no_grad(function() w:add_(1) end) -- allowed under no_grad
    assert.are.equal(3, w:sum():item())
  end)

  it('backward of a nan or inf loss', function()
    local x = ember.zeros(3):requires_grad()
    assert_error(function() x:log():sum():backward() end, 'backward: the loss is inf')
    assert_error(function() (x:log():sum() * 0):backward() end, 'backward: the loss is nan')
    assert.is_nil(x.grad)
  end)

  it('backward through a freed graph', function()
    local x = ember.ones(3):requires_grad()
    local loss = (x * x):sum()
    loss:backward()
    assert_error(function() loss:backward() end,
      "backward: the graph through 'sum' was already freed by an earlier backward; pass retain_graph=true to the first backward")
  end)

  it('backward of a non-scalar without a gradient', function()
    local x = ember.ones(2, 3):requires_grad()
    assert_error(function() (x * 2):backward() end,
      'backward: a gradient is needed for a non-scalar tensor [2 x 3] (pass one, or reduce it to a scalar first)')
    assert_error(function() (x * 2):backward(ember.ones(3, 2)) end,
      "backward: gradient shape [3 x 2] does not match the tensor's [2 x 3]")
    assert_error(function() ember.ones(2):sum():backward() end, 'backward: the tensor does not require grad')
  end)

  it('requires_grad on a non-leaf', function()
    local x = ember.ones(3):requires_grad()
    assert_error(function() (x * 2):requires_grad() end,
      'requires_grad: only a leaf tensor (not the result of an op) can be marked; use detach() first')
  end)

  it('a saved tensor modified in place', function()
    local x = ember.ones(3):requires_grad()
    local h = x * 2
    local y = h:exp():sum()
    h:detach():add_(1) -- the detached alias shares h's storage
    assert_error(function() y:backward() end,
      "backward: a tensor saved by 'exp' was modified in place after it was used; clone it before changing it")
  end)

  it('grad of an input that does not require grad, unknown debug op', function()
    local x = ember.ones(3):requires_grad()
    local c = ember.ones(3)
    assert_error(function() ember.grad((x * c):sum(), { x, c }) end, 'grad: input 2 does not require grad')
    assert_error(function() ember._debug_break_backward('nope') end, "debug_break_backward: no op named 'nope'")
    assert_error(function() x.grad = ember.zeros(4) end, "grad: shape must match the tensor's")
  end)
end)

describe('after an error', function()
  it('the library keeps working, grad mode is restored', function()
    assert.is_true(ember.is_grad_enabled())
    pcall(ember.no_grad, function() error('inside no_grad') end)
    assert.is_true(ember.is_grad_enabled())
    local ok = pcall(function() return ember.zeros(2, 3) + ember.zeros(4) end)
    assert.is_false(ok)
    assert.are.equal(4, (ember.ones(2) * 2):sum():item())
  end)
end)
