-- masked_conv_spec.lua — causal (masked) convolution: ember.conv2d /
-- conv_transpose2d with {mask=}, ember.conv_mask and nn.MaskedConv2d.
-- The masked op computes only the kept taps; the reference is the plain
-- convolution of the weight multiplied by the mask, on awkward geometries
-- (odd sizes, 1-row and 1-column kernels, stride, dilation, a batch of one,
-- non-contiguous inputs, colour channel groups). Gradients are checked by
-- finite differences (first and second order), masked taps get exactly zero
-- gradient, and every bad argument is refused by name.
local ember = require 'ember'
local nn = ember.nn

local raises = require('tests.lua.helpers.common').raises
local function expect_error(fn, text) raises(text, fn) end

local function max_abs(t) return t:abs():max():item() end
local function randn(...) return ember.randn(...):requires_grad() end

-- the 0/1 pattern of a mask over one kh x kw kernel, as rows of 0/1 numbers
local function pattern(mask, kh, kw)
  return ember.conv_mask(1, 1, { kh, kw }, { mask = mask }):view(kh, kw):totable()
end

describe('conv_mask', function()
  it('keeps the raster-order prefix of the kernel for A, B and V', function()
    assert.same({ { 1, 1, 1 }, { 1, 0, 0 }, { 0, 0, 0 } }, pattern('A', 3, 3))
    assert.same({ { 1, 1, 1 }, { 1, 1, 0 }, { 0, 0, 0 } }, pattern('B', 3, 3))
    assert.same({ { 1, 1, 1 }, { 1, 1, 1 }, { 0, 0, 0 } }, pattern('V', 3, 3))
    assert.same({ { 1, 1, 0, 0, 0 } }, pattern('A', 1, 5))
    assert.same({ { 1, 1, 1, 0, 0 } }, pattern('B', 1, 5))
    -- a 7x7 mask A keeps 24 of 49 taps
    assert.equal(24, ember.conv_mask(1, 1, 7, { mask = 'A' }):sum():item())
  end)

  it('orders colour groups at the centre tap (A: earlier groups, B: also its own)', function()
    -- centre of a [6 x 3] weight with 3 groups: out rows (2 per group) x in channels
    local function centre(mask)
      return ember.conv_mask(6, 3, 3, { mask = mask, mask_groups = 3 }):select(3, 2):select(3, 2):totable()
    end
    assert.same({ { 0, 0, 0 }, { 0, 0, 0 }, { 1, 0, 0 }, { 1, 0, 0 }, { 1, 1, 0 }, { 1, 1, 0 } }, centre('A'))
    assert.same({ { 1, 0, 0 }, { 1, 0, 0 }, { 1, 1, 0 }, { 1, 1, 0 }, { 1, 1, 1 }, { 1, 1, 1 } }, centre('B'))
    -- taps before the centre are kept whatever the groups
    local m = ember.conv_mask(6, 3, 3, { mask = 'A', mask_groups = 3 })
    assert.equal(6 * 3, m:select(3, 1):select(3, 1):sum():item())
  end)

  it('refuses bad arguments by name', function()
    expect_error(function() ember.conv_mask(0, 1, 3, { mask = 'A' }) end, 'conv_mask: bad argument #1')
    expect_error(function() ember.conv_mask(1, 1, nil, { mask = 'A' }) end, 'conv_mask: bad argument #3')
    expect_error(function() ember.conv_mask(1, 1, 3, { mask = 'Z' }) end, "conv_mask: option 'mask' must be 'A', 'B' or 'V', got Z")
    expect_error(function() ember.conv_mask(4, 3, 3, { mask = 'A', mask_groups = 3 }) end,
      'conv_mask: mask_groups 3 must divide both channel counts 4 and 3')
    expect_error(function() ember.conv_mask(3, 3, 3, { mask = 'V', mask_groups = 3 }) end,
      'conv_mask: mask_groups 3 needs mask A or B')
    expect_error(function() ember.conv_mask(3, 3, 3, { mask = 'A', strides = 1 }) end, "conv_mask: unknown option 'strides'")
  end)
end)

describe('masked conv2d', function()
  local geometries = {
    { N = 2, C = 3, O = 4, H = 7, W = 6, k = { 3, 3 }, opts = { padding = 1 } },
    { N = 1, C = 2, O = 3, H = 9, W = 8, k = { 7, 7 }, opts = { padding = 3 } },
    { N = 3, C = 1, O = 2, H = 5, W = 9, k = { 1, 5 }, opts = { padding = { 0, 2 } } },
    { N = 2, C = 2, O = 2, H = 6, W = 5, k = { 5, 1 }, opts = { padding = { 2, 0 } } },
    { N = 2, C = 3, O = 5, H = 9, W = 7, k = { 3, 3 }, opts = { padding = 1, stride = 2 } },
    { N = 2, C = 2, O = 3, H = 8, W = 8, k = { 3, 3 }, opts = { padding = 2, dilation = 2 } },
    { N = 1, C = 3, O = 6, H = 5, W = 5, k = { 3, 3 }, opts = { padding = 1 }, mask_groups = 3 },
  }

  it('equals the plain convolution of weight * mask, forward and every gradient', function()
    ember.manual_seed(3)
    for gi, g in ipairs(geometries) do
      for _, mask in ipairs { 'A', 'B', 'V' } do
        if not (g.mask_groups and mask == 'V') then
          local x = randn(g.N, g.C, g.H, g.W)
          local w = randn(g.O, g.C, g.k[1], g.k[2])
          local b = randn(g.O)
          local opts = { mask = mask, mask_groups = g.mask_groups }
          for k, v in pairs(g.opts) do opts[k] = v end
          local keep = ember.conv_mask(g.O, g.C, g.k, { mask = mask, mask_groups = g.mask_groups })
          local y = ember.conv2d(x, w, b, opts)
          local ref = ember.conv2d(x, w * keep, b, g.opts)
          local what = ('geometry %d mask %s'):format(gi, mask)
          assert.same(ref:size(), y:size(), what)
          assert.is_true(max_abs(y - ref) < 1e-4, what .. ': forward differs by ' .. max_abs(y - ref))
          local gy = ember.randn(table.unpack(y:size()))
          local gx, gw, gb = table.unpack(ember.grad((y * gy):sum(), { x, w, b }))
          local rx, rw, rb = table.unpack(ember.grad((ref * gy):sum(), { x, w, b }))
          assert.is_true(max_abs(gx - rx) < 1e-4, what .. ': input gradient')
          assert.is_true(max_abs(gw - rw * keep) < 1e-4, what .. ': weight gradient')
          assert.is_true(max_abs(gb - rb) < 1e-4, what .. ': bias gradient')
          -- the taps a mask drops get exactly zero gradient
          assert.equal(0, max_abs(gw * (1 - keep)), what .. ': masked taps got gradient')
        end
      end
    end
  end)

  it('reads non-contiguous inputs like contiguous ones', function()
    ember.manual_seed(4)
    local x = ember.randn(2, 7, 3, 6):transpose(2, 3) -- [2 x 3 x 7 x 6], strided
    local w = ember.randn(3, 4, 3, 3):transpose(1, 2) -- [4 x 3 x 3 x 3], strided
    local a = ember.conv2d(x, w, nil, { padding = 1, mask = 'B' })
    local b = ember.conv2d(x:contiguous(), w:contiguous(), nil, { padding = 1, mask = 'B' })
    assert.equal(0, max_abs(a - b))
  end)

  it('passes finite-difference gradient checks, first and second order', function()
    ember.manual_seed(5)
    for _, mask in ipairs { 'A', 'B', 'V' } do
      local opts = { padding = 1, mask = mask }
      local ok, msg = ember.gradcheck(function(x, w, b) return ember.conv2d(x, w, b, opts) end,
        { randn(2, 2, 4, 5), randn(3, 2, 3, 3), randn(3) })
      assert.is_true(ok, msg)
      ok, msg = ember.gradgradcheck(function(x, w) return ember.conv2d(x, w, nil, opts) end,
        { randn(1, 2, 4, 4), randn(2, 2, 3, 3) })
      assert.is_true(ok, msg)
    end
    local ok, msg = ember.gradcheck(function(x, w) return ember.conv2d(x, w, nil, { padding = 1, mask = 'A', mask_groups = 3 }) end,
      { randn(1, 3, 4, 4), randn(6, 3, 3, 3) })
    assert.is_true(ok, msg)
  end)

  it('has a gradient check that fails when the backward is wrong', function()
    ember._debug_break_backward('conv2d')
    local ok = ember.gradcheck(function(x, w) return ember.conv2d(x, w, nil, { padding = 1, mask = 'B' }) end,
      { randn(1, 1, 4, 4), randn(2, 1, 3, 3) })
    ember._debug_break_backward()
    assert.is_false(ok)
  end)

  it('transposed: equals conv_transpose2d of weight * mask', function()
    ember.manual_seed(6)
    local x, w = randn(2, 4, 5, 6), randn(4, 3, 3, 3)
    local keep = ember.conv_mask(4, 3, 3, { mask = 'B' })
    local y = ember.conv_transpose2d(x, w, nil, { padding = 1, mask = 'B' })
    local ref = ember.conv_transpose2d(x, w * keep, nil, { padding = 1 })
    assert.is_true(max_abs(y - ref) < 1e-4)
    local ok, msg = ember.gradcheck(function(a, b) return ember.conv_transpose2d(a, b, nil, { padding = 1, mask = 'A' }) end,
      { randn(1, 2, 3, 4), randn(2, 3, 3, 3) })
    assert.is_true(ok, msg)
  end)

  it('is causal: output pixel i never depends on input pixels j >= i (mask A), j > i (mask B)', function()
    ember.manual_seed(7)
    local H, W = 5, 6
    for _, mask in ipairs { 'A', 'B' } do
      local w = ember.randn(1, 1, 3, 3)
      for i = 0, H * W - 1 do
        local x = ember.randn(1, 1, H, W):requires_grad()
        local y = ember.conv2d(x, w, nil, { padding = 1, mask = mask })
        local gx = ember.grad(y:view(-1):narrow(1, i + 1, 1):sum(), { x })[1]
        local g = gx:view(-1):totable()
        for j = 0, H * W - 1 do
          if j > i or (mask == 'A' and j == i) then
            assert.equal(0, g[j + 1], ('mask %s: d y[%d] / d x[%d] = %g'):format(mask, i, j, g[j + 1]))
          end
        end
      end
    end
  end)

  it('refuses bad options by name', function()
    local x, w = ember.randn(1, 3, 4, 4), ember.randn(6, 3, 3, 3)
    expect_error(function() ember.conv2d(x, w, nil, { mask = 'C' }) end, "conv2d: option 'mask' must be 'A', 'B' or 'V', got C")
    expect_error(function() ember.conv2d(x, w, nil, { mask = 1 }) end, "conv2d: option 'mask' must be 'A', 'B' or 'V', got number")
    expect_error(function() ember.conv2d(x, w, nil, { mask = 'A', mask_groups = 0 }) end, "conv2d: option 'mask_groups' must be an integer >= 1, got 0")
    expect_error(function() ember.conv2d(x, w, nil, { mask_groups = 3 }) end, 'conv2d: mask_groups 3 needs mask A or B')
    expect_error(function() ember.conv2d(x, ember.randn(4, 3, 3, 3), nil, { mask = 'A', mask_groups = 3 }) end,
      'conv2d: mask_groups 3 must divide both channel counts 4 and 3')
    expect_error(function() ember.conv2d(x, ember.randn(6, 1, 3, 3), nil, { mask = 'A', groups = 3 }) end,
      'conv2d: a masked convolution needs groups = 1, got 3')
    expect_error(function() ember.conv_transpose2d(x, ember.randn(3, 2, 3, 3), nil, { mask = 'A', mask_groups = 2 }) end,
      'conv_transpose2d: mask_groups 2 must divide both channel counts 3 and 2')
  end)
end)

describe('nn.MaskedConv2d', function()
  it('pads to the same size, zeroes the masked taps and keeps them zero through training', function()
    ember.manual_seed(8)
    local m = nn.MaskedConv2d(2, 4, 5, { mask = 'A' })
    assert.same({ 2, 2 }, m.options.padding)
    local keep = ember.conv_mask(4, 2, 5, { mask = 'A' })
    assert.equal(0, max_abs(m.weight * (1 - keep)))
    assert.is_true(max_abs(m.weight * keep) > 0)
    local opt = ember.optim.Adam(m:parameters(), { lr = 0.1 })
    for _ = 1, 3 do
      opt:zero_grad()
      local y = m(ember.randn(2, 2, 6, 6))
      assert.same({ 2, 4, 6, 6 }, y:size())
      y:pow(2):mean():backward()
      opt:step()
    end
    assert.equal(0, max_abs(m.weight * (1 - keep)))
    assert.equal('MaskedConv2d(2 -> 4, kernel 5, padding 2, mask A)', tostring(m):match('^[^\n]*'))
  end)

  it('takes {h, w} kernels, dilation and colour groups', function()
    local m = nn.MaskedConv2d(3, 6, { 1, 3 }, { mask = 'B', mask_groups = 3, dilation = 2 })
    assert.same({ 0, 2 }, m.options.padding)
    assert.same({ 2, 6, 1, 7 }, m(ember.randn(2, 3, 1, 7)):size())
  end)

  it('refuses bad arguments by name', function()
    expect_error(function() nn.MaskedConv2d(1, 2, 3, { mask = 'C' }) end, "MaskedConv2d: bad argument #4 'mask' (expected 'A', 'B' or 'V', got 'C')")
    expect_error(function() nn.MaskedConv2d(3, 4, 3, { mask = 'A', mask_groups = 3 }) end, 'MaskedConv2d: out_channels 4 is not divisible by mask_groups 3')
    expect_error(function() nn.MaskedConv2d(3, 3, 3, { mask = 'V', mask_groups = 3 }) end, "MaskedConv2d: mask_groups needs mask 'A' or 'B'")
    expect_error(function() nn.MaskedConv2d(1, 2, 3, { groups = 2 }) end, "MaskedConv2d: unknown option 'groups'")
    expect_error(function() nn.MaskedConv2d(0, 2, 3) end, 'MaskedConv2d: bad argument #1')
  end)
end)
