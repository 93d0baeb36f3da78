-- layers_spec.lua — the functional layer API (ember.conv2d, conv_transpose2d,
-- max_pool2d, avg_pool2d, upsample_nearest, batch_norm, softmax, log_softmax,
-- dropout, embedding): finite-difference gradient checks of every op (first
-- and, for conv, conv-transpose, pools, batch norm and softmax, second
-- order), a naive Lua loop for the option plumbing ({h, w} order), proof that
-- the checks catch a wrong backward, and every bad argument by its message.
local ember = require 'ember'

local function expect_error(fn, text)
  local ok, err = pcall(fn)
  assert.is_false(ok, 'expected an error containing: ' .. text)
  assert.truthy(tostring(err):find(text, 1, true),
    ('error "%s" does not contain "%s"'):format(tostring(err), text))
end

local function check(fn, inputs, opts)
  local ok, msg = ember.gradcheck(fn, inputs, opts)
  assert.is_true(ok, msg)
end

local function checkgrad2(fn, inputs, opts)
  local ok, msg = ember.gradgradcheck(fn, inputs, opts)
  assert.is_true(ok, msg)
end

local function randn(...) return ember.randn(...):requires_grad() end

local function flat(t)
  local v = t:contiguous():view(-1):totable()
  if type(v) == 'number' then v = { v } end
  return v
end

local function assert_close(a, b, tol)
  local fa, fb = flat(a), flat(b)
  assert.are.equal(#fb, #fa)
  for i = 1, #fa do
    assert.is_true(math.abs(fa[i] - fb[i]) <= (tol or 1e-5) * (1 + math.abs(fb[i])),
      ('element %d: %.7g vs %.7g'):format(i, fa[i], fb[i]))
  end
end

-- Distinct values (spaced 0.1 apart, shuffled) so that no max is near a tie.
local function distinct(...)
  local t = ember.zeros(...)
  local n = t:numel()
  local perm = {}
  for i = 1, n do perm[i] = i end
  math.randomseed(42)
  for i = n, 2, -1 do
    local j = math.random(i)
    perm[i], perm[j] = perm[j], perm[i]
  end
  for i = 1, n do perm[i] = (perm[i] - n / 2) * 0.1 end
  return ember.tensor(perm):view(t:shape()):requires_grad()
end

before_each(function() ember.manual_seed(1) end)

describe('conv2d', function()
  it('has correct gradients for stride, padding, dilation and groups', function()
    local cases = {
      { {}, 2, 3 },
      { { stride = 2, padding = 1 }, 2, 3 },
      { { stride = 3, padding = 2 }, 2, 2 },
      { { dilation = 2, padding = 1 }, 2, 3 },
      { { groups = 2, padding = 1 }, 4, 4 },
      { { stride = { 1, 2 }, padding = { 2, 0 }, dilation = { 1, 2 } }, 2, 3 },
    }
    for _, c in ipairs(cases) do
      local opts, cin, cout = c[1], c[2], c[3]
      local groups = opts.groups or 1
      local x = randn(2, cin, 6, 7)
      local w = randn(cout, cin // groups, 3, 3)
      local b = randn(cout)
      check(function(x, w, b) return ember.conv2d(x, w, b, opts) end, { x, w, b })
    end
  end)

  it('has correct gradients for a kernel of 1, batch 1 and a non-contiguous input', function()
    check(function(x, w) return ember.conv2d(x, w) end, { randn(1, 3, 4, 5), randn(2, 3, 1, 1) })
    -- the input reaches conv2d as a transposed (non-contiguous) view
    check(function(x, w) return ember.conv2d(x:transpose(3, 4), w, nil, { padding = 1 }) end,
      { randn(2, 2, 5, 4), randn(3, 2, 3, 2) })
  end)

  it('has correct second derivatives in the input and the weight', function()
    checkgrad2(function(x, w, b) return ember.conv2d(x, w, b, { stride = 2, padding = 1 }) end,
      { randn(2, 2, 5, 5), randn(3, 2, 3, 3), randn(3) })
    checkgrad2(function(x, w) return ember.conv2d(x, w, nil, { groups = 2, dilation = 2, padding = 2 }) end,
      { randn(1, 4, 5, 6), randn(2, 2, 3, 3) })
  end)

  it('supports a gradient penalty through conv, leaky relu and linear', function()
    -- d/dtheta of |d D(x) / dx|^2: the WGAN-GP shape of computation
    checkgrad2(function(x, w, v)
      local h = ember.conv2d(x, w, nil, { stride = 2, padding = 1 }):leaky_relu(0.2)
      return ember.linear(h:flatten(2), v)
    end, { randn(2, 1, 6, 6), randn(2, 1, 4, 4), randn(1, 18) })
  end)

  it('maps {h, w} options in that order (naive loop)', function()
    local x, w = ember.randn(1, 1, 5, 7), ember.randn(1, 1, 2, 3)
    local opts = { stride = { 1, 2 }, padding = { 1, 0 }, dilation = { 2, 1 } }
    local y = ember.conv2d(x, w, nil, opts)
    local X, Wt = x:totable()[1][1], w:totable()[1][1]
    local OH = (5 + 2 - 2 * 1 - 1) // 1 + 1
    local OW = (7 - 1 * 2 - 1) // 2 + 1
    assert.are.same({ 1, 1, OH, OW }, y:shape())
    local ref = {}
    for oh = 0, OH - 1 do
      ref[oh + 1] = {}
      for ow = 0, OW - 1 do
        local s = 0
        for i = 0, 1 do
          for j = 0, 2 do
            local ih, iw = oh - 1 + i * 2, ow * 2 + j
            if ih >= 0 and ih < 5 and iw >= 0 and iw < 7 then s = s + X[ih + 1][iw + 1] * Wt[i + 1][j + 1] end
          end
        end
        ref[oh + 1][ow + 1] = s
      end
    end
    assert_close(y, ember.tensor({ { ref } }), 1e-5)
  end)

  it('is caught by the gradient check when its backward is wrong', function()
    ember._debug_break_backward('conv2d')
    local ok = ember.gradcheck(function(x, w) return ember.conv2d(x, w) end,
      { randn(1, 1, 4, 4), randn(1, 1, 3, 3) })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
    ember._debug_break_backward('conv2d_weight')
    ok = ember.gradgradcheck(function(x, w) return ember.conv2d(x, w) end,
      { randn(1, 1, 4, 4), randn(1, 1, 3, 3) })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
  end)

  it('rejects bad arguments with clear messages', function()
    local x, w = ember.randn(2, 3, 8, 8), ember.randn(4, 3, 3, 3)
    expect_error(function() ember.conv2d(ember.randn(2, 3, 8), w) end,
      'conv2d: input [2 x 3 x 8] must be 4-D [N x C x H x W]')
    expect_error(function() ember.conv2d(x, ember.randn(4, 3, 3)) end,
      'conv2d: weight [4 x 3 x 3] must be 4-D')
    expect_error(function() ember.conv2d(x, ember.randn(4, 2, 3, 3)) end,
      'conv2d: input [2 x 3 x 8 x 8] has 3 channels, but weight [4 x 2 x 3 x 3] expects 2')
    expect_error(function() ember.conv2d(x, w, ember.randn(3)) end, 'conv2d: bias [3] must be [4]')
    expect_error(function() ember.conv2d(x, w, 5) end, "conv2d: bad argument #3 (expected a bias tensor or nil, got number)")
    expect_error(function() ember.conv2d('x', w) end, 'conv2d: bad argument #1 (expected tensor, got string)')
    expect_error(function() ember.conv2d(x, w, nil, { strides = 2 }) end,
      "conv2d: unknown option 'strides' (expected one of: stride, padding, dilation, groups, mask, mask_groups)")
    expect_error(function() ember.conv2d(x, w, nil, { stride = 0 }) end,
      'conv2d: stride must be an integer >= 1 or a table {h, w} of them, got 0')
    expect_error(function() ember.conv2d(x, w, nil, { padding = -1 }) end,
      'conv2d: padding must be an integer >= 0')
    expect_error(function() ember.conv2d(x, w, nil, { padding = { 1, 2, 3 } }) end,
      'conv2d: padding must be a number or a table {h, w} of 2 numbers, got a table of 3')
    expect_error(function() ember.conv2d(ember.randn(2, 4, 8, 8), ember.randn(3, 2, 3, 3), nil, { groups = 2 }) end,
      'conv2d: weight [3 x 2 x 3 x 3]: out_channels 3 is not divisible by groups 2')
    expect_error(function() ember.conv2d(x, w, nil, { groups = 0 }) end, "conv2d: option 'groups' must be an integer >= 1, got 0")
    expect_error(function() ember.conv2d(x, w, nil, 3) end, 'conv2d: bad argument #4 (expected an options table, got number)')
    expect_error(function() ember.conv2d(ember.randn(1, 3, 2, 2), w) end,
      'padded to 2 x 2 is smaller than the kernel 3 x 3')
  end)
end)

describe('conv_transpose2d', function()
  it('has correct gradients, output_padding included', function()
    local cases = {
      { {}, 2, 3 },
      { { stride = 2, padding = 1 }, 2, 3 },
      { { stride = 2, padding = 1, output_padding = 1 }, 2, 2 },
      { { stride = 3, padding = 2, output_padding = 2 }, 1, 2 },
      { { dilation = 2 }, 2, 2 },
      { { groups = 2, stride = 2, output_padding = { 1, 0 } }, 4, 2 },
    }
    for _, c in ipairs(cases) do
      local opts, cin, cout = c[1], c[2], c[3]
      local groups = opts.groups or 1
      check(function(x, w, b) return ember.conv_transpose2d(x, w, b, opts) end,
        { randn(2, cin, 3, 4), randn(cin, cout // groups, 3, 3), randn(cout) })
    end
  end)

  it('produces the DCGAN shapes', function()
    local z = ember.randn(2, 100, 1, 1)
    local h = ember.conv_transpose2d(z, ember.randn(100, 8, 7, 7))
    assert.are.same({ 2, 8, 7, 7 }, h:shape())
    h = ember.conv_transpose2d(h, ember.randn(8, 4, 4, 4), nil, { stride = 2, padding = 1 })
    assert.are.same({ 2, 4, 14, 14 }, h:shape())
  end)

  it('is the adjoint of conv2d', function()
    -- <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>
    local opts = { stride = 2, padding = 1 }
    local x, w = ember.randn(2, 3, 7, 7), ember.randn(4, 3, 3, 3)
    local y = ember.randn(2, 4, 4, 4)
    local lhs = (ember.conv2d(x, w, nil, opts) * y):sum():item()
    local rhs = (x * ember.conv_transpose2d(y, w, nil, opts)):sum():item()
    assert.is_true(math.abs(lhs - rhs) < 1e-3 * (1 + math.abs(lhs)))
  end)

  it('has correct second derivatives in the input and the weight', function()
    checkgrad2(function(x, w, b) return ember.conv_transpose2d(x, w, b, { stride = 2, padding = 1, output_padding = 1 }) end,
      { randn(2, 2, 3, 3), randn(2, 3, 3, 3), randn(3) })
    checkgrad2(function(x, w) return ember.conv_transpose2d(x, w, nil, { groups = 2, dilation = 2 }) end,
      { randn(1, 2, 3, 2), randn(2, 1, 2, 2) })
  end)

  it('is caught by the gradient check when its backward is wrong', function()
    ember._debug_break_backward('conv_transpose2d')
    local ok = ember.gradcheck(function(x, w) return ember.conv_transpose2d(x, w) end,
      { randn(1, 1, 3, 3), randn(1, 1, 2, 2) })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
  end)

  it('rejects bad arguments with clear messages', function()
    local x = ember.randn(2, 3, 4, 4)
    expect_error(function() ember.conv_transpose2d(x, ember.randn(4, 2, 3, 3)) end,
      'conv_transpose2d: input [2 x 3 x 4 x 4] has 3 channels, but weight [4 x 2 x 3 x 3] expects 4')
    expect_error(function() ember.conv_transpose2d(x, ember.randn(3, 2, 3, 3), nil, { stride = 2, output_padding = 2 }) end,
      'conv_transpose2d: output_padding must be >= 0 and smaller than the stride 2, got 2')
    expect_error(function() ember.conv_transpose2d(x, ember.randn(3, 2, 3, 3), nil, { groups = 2 }) end,
      'conv_transpose2d: in_channels 3 is not divisible by groups 2')
    expect_error(function() ember.conv_transpose2d(x, ember.randn(3, 2, 3, 3), ember.randn(3)) end,
      'conv_transpose2d: bias [3] must be [2]')
    expect_error(function() ember.conv_transpose2d(x, ember.randn(3, 2, 3, 3), nil, { output_pad = 1 }) end,
      "conv_transpose2d: unknown option 'output_pad'")
    expect_error(function() ember.conv_transpose2d(ember.randn(3, 4, 4), ember.randn(3, 2, 3, 3)) end,
      'conv_transpose2d: input [3 x 4 x 4] must be 4-D [N x C x H x W]')
    expect_error(function() ember.conv_transpose2d(x, ember.randn(3, 2, 3, 3), nil, { padding = 3 }) end,
      'gives an empty output')
  end)
end)

describe('pooling and upsampling', function()
  it('max_pool2d has correct gradients (distinct values, away from ties)', function()
    check(function(x) return ember.max_pool2d(x, 2) end, { distinct(2, 2, 6, 6) })
    check(function(x) return ember.max_pool2d(x, 3, { stride = 2, padding = 1 }) end, { distinct(1, 2, 7, 5) })
    check(function(x) return ember.max_pool2d(x, { 2, 3 }, { stride = { 1, 2 } }) end, { distinct(1, 1, 5, 7) })
  end)

  it('max_pool2d backward is itself differentiable in the incoming gradient', function()
    local x = distinct(1, 2, 5, 5)
    check(function(g)
      return ember.grad((ember.max_pool2d(x, 3, { stride = 2, padding = 1 }) * g):sum(), { x }, { create_graph = true })[1]
    end, { randn(1, 2, 3, 3) })
    checkgrad2(function(x) return ember.max_pool2d(x, 2) * 3 end, { distinct(1, 1, 4, 4) })
  end)

  it('max_pool2d picks the max and sends the gradient there', function()
    local x = ember.tensor({ { { { 1, 5, 2, 0 }, { 3, 4, 8, 7 } } } }):requires_grad()
    local y = ember.max_pool2d(x, 2)
    assert.are.same({ { { { 5, 8 } } } }, y:totable())
    y:sum():backward()
    assert.are.same({ { { { 0, 1, 0, 0 }, { 0, 0, 1, 0 } } } }, x.grad:totable())
  end)

  it('avg_pool2d has correct gradients, with and without counting the padding', function()
    check(function(x) return ember.avg_pool2d(x, 2) end, { randn(2, 2, 4, 5) })
    check(function(x) return ember.avg_pool2d(x, 3, { stride = 2, padding = 1 }) end, { randn(1, 2, 5, 6) })
    check(function(x) return ember.avg_pool2d(x, 3, { stride = 2, padding = 1, count_include_pad = false }) end,
      { randn(1, 2, 5, 6) })
    local x = ember.ones(1, 1, 2, 2)
    assert_close(ember.avg_pool2d(x, 3, { stride = 1, padding = 1 }), ember.full({ 1, 1, 2, 2 }, 4 / 9))
    assert_close(ember.avg_pool2d(x, 3, { stride = 1, padding = 1, count_include_pad = false }), ember.ones(1, 1, 2, 2))
  end)

  it('avg_pool2d and upsample have correct second derivatives', function()
    local x = randn(1, 2, 5, 5)
    check(function(g)
      return ember.grad((ember.avg_pool2d(x, 3, { stride = 2, padding = 1 }) * g):sum(), { x }, { create_graph = true })[1]
    end, { randn(1, 2, 3, 3) })
    local u = randn(1, 2, 2, 3)
    check(function(g)
      return ember.grad((ember.upsample_nearest(u, { 2, 3 }) * g):sum(), { u }, { create_graph = true })[1]
    end, { randn(1, 2, 4, 9) })
  end)

  it('upsample_nearest repeats pixels and has correct gradients', function()
    local x = ember.tensor({ { { { 1, 2 }, { 3, 4 } } } })
    assert.are.same({ { { { 1, 1, 2, 2 }, { 1, 1, 2, 2 }, { 3, 3, 4, 4 }, { 3, 3, 4, 4 } } } },
      ember.upsample_nearest(x, 2):totable())
    assert.are.same({ 1, 1, 2, 6 }, ember.upsample_nearest(x, { 1, 3 }):shape())
    check(function(x) return ember.upsample_nearest(x, 2) end, { randn(2, 1, 3, 2) })
    check(function(x) return x:upsample_nearest({ 3, 1 }) end, { randn(1, 2, 2, 2) })
  end)

  it('is caught by the gradient check when a backward is wrong', function()
    for _, op in ipairs({ 'max_pool2d', 'avg_pool2d', 'upsample_nearest2d' }) do
      ember._debug_break_backward(op)
      local ok = ember.gradcheck(function(x)
        if op == 'max_pool2d' then return ember.max_pool2d(x, 2) end
        if op == 'avg_pool2d' then return ember.avg_pool2d(x, 2) end
        return ember.upsample_nearest(x, 2)
      end, { distinct(1, 1, 4, 4) })
      ember._debug_break_backward(nil)
      assert.is_false(ok, op)
    end
  end)

  it('rejects bad arguments with clear messages', function()
    local x = ember.randn(1, 2, 6, 6)
    expect_error(function() ember.max_pool2d(ember.randn(2, 6, 6), 2) end,
      'max_pool2d: input [2 x 6 x 6] must be 4-D [N x C x H x W]')
    expect_error(function() ember.max_pool2d(x) end,
      'max_pool2d: bad argument #2 (expected a kernel size (number or {h, w}), got no value)')
    expect_error(function() ember.max_pool2d(x, 0) end,
      'max_pool2d: kernel size must be an integer >= 1 or a table {h, w} of them, got 0')
    expect_error(function() ember.max_pool2d(x, 2, { padding = 2 }) end,
      'max_pool2d: padding must be between 0 and half the kernel size 2, got 2')
    expect_error(function() ember.max_pool2d(x, 2, { count_include_pad = true }) end,
      "max_pool2d: unknown option 'count_include_pad' (expected one of: stride, padding)")
    expect_error(function() ember.avg_pool2d(x, 7) end,
      'avg_pool2d: input [1 x 2 x 6 x 6] padded to 6 x 6 is smaller than the kernel 7 x 7')
    expect_error(function() ember.avg_pool2d(x, 2, { count_include_pad = 1 }) end,
      "avg_pool2d: option 'count_include_pad' must be a boolean, got number")
    expect_error(function() ember.avg_pool2d(x, 2, { stride = 1.5 }) end,
      'avg_pool2d: stride must be an integer >= 1 or a table {h, w} of them, got 1.5')
    expect_error(function() ember.upsample_nearest(x) end,
      'upsample_nearest: bad argument #2 (expected a scale factor (integer or {h, w}), got no value)')
    expect_error(function() ember.upsample_nearest(x, 0) end,
      'upsample_nearest: scale factor must be an integer >= 1 or a table {h, w} of them, got 0')
    expect_error(function() ember.upsample_nearest(ember.randn(2, 2), 2) end,
      'upsample_nearest2d: input [2 x 2] must be 4-D [N x C x H x W]')
  end)
end)

describe('batch_norm', function()
  it('has correct gradients in training mode, for [N x C] and [N x C x H x W]', function()
    check(function(x, w, b) return ember.batch_norm(x, nil, nil, w, b, { training = true }) end,
      { randn(5, 3), randn(3), randn(3) })
    check(function(x, w, b)
      return ember.batch_norm(x, ember.zeros(2), ember.ones(2), w, b, { training = true, momentum = 0.5 })
    end, { randn(3, 2, 2, 3), randn(2), randn(2) })
    check(function(x) return ember.batch_norm(x, nil, nil, nil, nil, { training = true }) end, { randn(4, 2, 3) })
  end)

  it('has correct gradients in eval mode (running statistics)', function()
    local rm, rv = ember.randn(3), ember.rand(3) + 0.5
    check(function(x, w, b) return ember.batch_norm(x, rm, rv, w, b) end, { randn(4, 3, 2, 2), randn(3), randn(3) })
  end)

  it('has correct second derivatives (gradient penalties through BatchNorm)', function()
    checkgrad2(function(x, w, b) return ember.batch_norm(x, nil, nil, w, b, { training = true }) end,
      { randn(4, 2, 2, 2), randn(2), randn(2) }, { atol = 2e-2, rtol = 2e-2 })
    local rm, rv = ember.randn(2), ember.rand(2) + 0.5
    checkgrad2(function(x, w) return ember.batch_norm(x, rm, rv, w, nil):tanh() end,
      { randn(3, 2, 2), randn(2) })
  end)

  it('normalizes with batch statistics and updates the running ones (PyTorch semantics)', function()
    local x = ember.tensor({ { 1, 10 }, { 3, 20 }, { 5, 60 } })
    local rm, rv = ember.zeros(2), ember.ones(2)
    local y = ember.batch_norm(x, rm, rv, nil, nil, { training = true, momentum = 0.1, eps = 0 })
    -- column 1: mean 3, biased var 8/3 -> (x - 3) / sqrt(8/3); unbiased var 4
    local s = math.sqrt(8 / 3)
    assert_close(y:select(2, 1), ember.tensor({ -2 / s, 0, 2 / s }), 1e-5)
    assert_close(rm, ember.tensor({ 0.3, 3 }), 1e-6)
    assert_close(rv, ember.tensor({ 0.9 + 0.1 * 4, 0.9 + 0.1 * 700 }), 1e-5)
    -- eval uses the running statistics and leaves them alone
    local e = ember.batch_norm(x, rm, rv, nil, nil, { eps = 0 })
    assert_close(e:select(2, 1), (ember.tensor({ 1, 3, 5 }) - 0.3) / math.sqrt(1.3), 1e-5)
    assert_close(rm, ember.tensor({ 0.3, 3 }), 1e-6)
  end)

  it('updates running statistics even with recording off', function()
    local rm, rv = ember.zeros(2), ember.ones(2)
    ember.no_grad(function() ember.batch_norm(ember.randn(8, 2) + 5, rm, rv, nil, nil, { training = true, momentum = 1 }) end)
    assert.is_true(rm[1] > 3 and rm[2] > 3)
  end)

  it('is caught by the gradient check when its backward is wrong', function()
    ember._debug_break_backward('batch_norm')
    local ok = ember.gradcheck(function(x) return ember.batch_norm(x, nil, nil, nil, nil, { training = true }) end,
      { randn(4, 2) })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
  end)

  it('rejects bad arguments with clear messages', function()
    local x = ember.randn(4, 3)
    expect_error(function() ember.batch_norm(ember.randn(3)) end, 'batch_norm: input [3] must be at least 2-D [N x C x ...]')
    expect_error(function() ember.batch_norm(x, ember.zeros(2), ember.ones(2)) end,
      'batch_norm: running_mean [2] must be [3] (one per channel of input [4 x 3])')
    expect_error(function() ember.batch_norm(x, nil, nil, ember.ones(4)) end, 'batch_norm: weight [4] must be [3]')
    expect_error(function() ember.batch_norm(x, ember.zeros(3)) end, 'give both running_mean and running_var, or neither')
    expect_error(function() ember.batch_norm(ember.randn(1, 3), nil, nil, nil, nil, { training = true }) end,
      'batch_norm: expected more than 1 value per channel')
    expect_error(function() ember.batch_norm(x, nil, nil, nil, nil, { momentum = 2 }) end,
      "batch_norm: option 'momentum' must be in [0, 1], got 2")
    expect_error(function() ember.batch_norm(x, nil, nil, nil, nil, { eps = -1 }) end,
      "batch_norm: option 'eps' must be a finite number >= 0, got -1")
    expect_error(function() ember.batch_norm(x, nil, nil, nil, nil, { train = true }) end,
      "batch_norm: unknown option 'train' (expected one of: training, momentum, eps)")
    expect_error(function() ember.batch_norm(x, 1) end,
      'batch_norm: bad argument #2 (expected a running_mean tensor or nil, got number)')
    expect_error(function() ember.batch_norm(x, ember.zeros(3):requires_grad(), ember.ones(3)) end,
      'batch_norm: running_mean and running_var must not require grad')
  end)
end)

describe('softmax and log_softmax', function()
  it('have correct first and second derivatives along any dim', function()
    for _, d in ipairs({ 1, 2, -1 }) do
      check(function(x) return ember.softmax(x, d) end, { randn(3, 4, 2) })
      check(function(x) return ember.log_softmax(x, d) end, { randn(3, 4, 2) })
    end
    checkgrad2(function(x) return ember.softmax(x, 2) end, { randn(3, 4) })
    checkgrad2(function(x) return x:log_softmax(1) end, { randn(3, 4) })
  end)

  it('are numerically stable and consistent', function()
    local x = ember.tensor({ { 1000, 1001, 1002 }, { -1000, -1000, -1000 } })
    local p = ember.softmax(x)
    local e1, e2 = math.exp(-2), math.exp(-1)
    assert_close(p:select(1, 1), ember.tensor({ e1, e2, 1 }) / (e1 + e2 + 1), 1e-6)
    assert_close(p:select(1, 2), ember.full({ 3 }, 1 / 3), 1e-6)
    assert_close(ember.log_softmax(x, -1):exp(), p, 1e-6)
    assert_close(x:softmax(1):sum(1), ember.ones(3), 1e-6)
  end)

  it('are caught by the gradient check when a backward is wrong', function()
    for _, op in ipairs({ 'softmax', 'log_softmax' }) do
      ember._debug_break_backward(op)
      local ok = ember.gradcheck(function(x) return ember[op](x, 2) end, { randn(2, 3) })
      ember._debug_break_backward(nil)
      assert.is_false(ok, op)
    end
  end)

  it('reject bad arguments with clear messages', function()
    expect_error(function() ember.softmax(ember.randn(2, 3), 3) end, 'softmax')
    expect_error(function() ember.softmax(ember.randn(2, 3), 0) end, 'softmax: bad argument #2 (dim 0 is not valid')
    expect_error(function() ember.log_softmax(ember.tensor(1), 1) end, 'log_softmax: expected a tensor with at least 1 dim')
    expect_error(function() ember.log_softmax({}) end, 'log_softmax: bad argument #1 (expected tensor, got table)')
  end)
end)

describe('dropout', function()
  it('has correct gradients with a fixed mask', function()
    check(function(x)
      ember.manual_seed(7) -- the same mask at every evaluation
      return ember.dropout(x, 0.3, true)
    end, { randn(4, 5) })
  end)

  it('zeroes about p of the elements, scales the rest, and is the identity in eval', function()
    local x = ember.ones(100, 100)
    local y = ember.dropout(x, 0.25)
    local kept = (y:gt(0)):sum():item()
    assert.is_true(math.abs(kept / 10000 - 0.75) < 0.03)
    assert_close(y:max(), ember.tensor(1 / 0.75), 1e-6)
    assert.are.equal(0, y:min():item())
    assert_close(ember.dropout(x, 0.25, false), x)
    assert_close(ember.dropout(x, 0), x)
    assert.are.equal(0, ember.dropout(x, 1):abs():sum():item())
    ember.manual_seed(3)
    local a = ember.dropout(x, 0.5)
    ember.manual_seed(3)
    assert_close(ember.dropout(x, 0.5), a)
  end)

  it('rejects bad arguments with clear messages', function()
    expect_error(function() ember.dropout(ember.ones(2), 1.5) end,
      "dropout: bad argument #2 'p' (expected a probability in [0, 1], got 1.5)")
    expect_error(function() ember.dropout(ember.ones(2), 'a') end, 'dropout: bad argument #2 (expected a probability p, got string)')
    expect_error(function() ember.dropout(ember.ones(2), 0.5, 1) end,
      "dropout: bad argument #3 (expected boolean 'training', got number)")
  end)
end)

describe('embedding', function()
  it('picks rows by 1-based index, for any index shape', function()
    local w = ember.tensor({ { 1, 2 }, { 3, 4 }, { 5, 6 } })
    assert.are.same({ { { 5, 6 }, { 1, 2 } }, { { 3, 4 }, { 3, 4 } } }, ember.embedding({ { 3, 1 }, { 2, 2 } }, w):totable())
    assert.are.same({ { 3, 4 } }, ember.embedding(ember.tensor({ 2 }), w):totable())
  end)

  it('has correct gradients in the weight (repeated indices accumulate)', function()
    local idx = ember.tensor({ { 1, 3, 3 }, { 4, 1, 2 } })
    check(function(w) return ember.embedding(idx, w) end, { randn(4, 3) })
  end)

  it('rejects bad arguments with clear messages', function()
    local w = ember.randn(3, 2)
    expect_error(function() ember.embedding({ 0 }, w) end,
      'embedding: index 0 out of range for 3 embeddings (expected integers 1..3)')
    expect_error(function() ember.embedding({ 4 }, w) end, 'embedding: index 4 out of range')
    expect_error(function() ember.embedding({ 1.5 }, w) end, 'embedding: index 1.5 out of range')
    expect_error(function() ember.embedding({ 1 }, ember.randn(3)) end,
      'embedding: weight [3] must be 2-D [num_embeddings x embedding_dim]')
    expect_error(function() ember.embedding('a', w) end, 'embedding: bad argument #1 (expected an index tensor or table, got string)')
  end)
end)
