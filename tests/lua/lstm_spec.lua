-- lstm_spec.lua — the LSTM: the fused cell op (ember.lstm_pointwise), one step
-- (ember.lstm_cell) and the modules nn.LSTMCell and nn.LSTM with PyTorch's
-- semantics. The fused cell equals the same cell made of ember ops bit for bit
-- and a double-precision Lua loop to ~1e-6; finite-difference gradient checks in
-- every input (first and second order, and back through time); nn.LSTM equals
-- nn.LSTMCell unrolled (two layers, batch_first, unbatched, given states); proof
-- that the checks catch a wrong backward; every bad argument by its message.
local ember = require 'ember'
local nn = ember.nn

local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, 'expected an error')
  return tostring(err)
end

local raises = require('tests.lua.helpers.common').raises
local function expect_error(fn, text) raises(text, fn) end

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
  assert.are.same(b:shape(), a:shape())
  local fa, fb = flat(a), flat(b)
  for i = 1, #fa do
    assert.is_true(math.abs(fa[i] - fb[i]) <= (tol or 1e-6) * (1 + math.abs(fb[i])),
      ('element %d: %.9g vs %.9g'):format(i, fa[i], fb[i]))
  end
end

local function assert_same_bits(a, b)
  assert.are.same(b:shape(), a:shape())
  local fa, fb = flat(a), flat(b)
  for i = 1, #fa do
    assert.is_true(fa[i] == fb[i], ('element %d: %.9g vs %.9g'):format(i, fa[i], fb[i]))
  end
end

-- The cell made of ember ops, as PyTorch's LSTMCell defines it: gates in the
-- order i, f, g, o. Returns h', c'.
local function cell_by_ops(gates, c)
  local H = c:size(2)
  local i = gates:narrow(2, 1, H):sigmoid()
  local f = gates:narrow(2, H + 1, H):sigmoid()
  local g = gates:narrow(2, 2 * H + 1, H):tanh()
  local o = gates:narrow(2, 3 * H + 1, H):sigmoid()
  local c2 = f * c + i * g
  return o * c2:tanh(), c2
end

-- The same in double precision, element by element, from Lua tables.
local function cell_by_loop(x, h, c, w_ih, w_hh, b_ih, b_hh)
  local X, Hs, C, Wi, Wh = x:totable(), h:totable(), c:totable(), w_ih:totable(), w_hh:totable()
  local Bi, Bh = b_ih and b_ih:totable(), b_hh and b_hh:totable()
  local N, H = #X, #Hs[1]
  local function sig(v) return 1 / (1 + math.exp(-v)) end
  local hout, cout = {}, {}
  for n = 1, N do
    local pre = {}
    for r = 1, 4 * H do
      local s = (Bi and Bi[r] or 0) + (Bh and Bh[r] or 0)
      for k = 1, #X[n] do s = s + X[n][k] * Wi[r][k] end
      for k = 1, H do s = s + Hs[n][k] * Wh[r][k] end
      pre[r] = s
    end
    hout[n], cout[n] = {}, {}
    for j = 1, H do
      local i, f, g, o = sig(pre[j]), sig(pre[H + j]), math.tanh(pre[2 * H + j]), sig(pre[3 * H + j])
      local cj = f * C[n][j] + i * g
      cout[n][j] = cj
      hout[n][j] = o * math.tanh(cj)
    end
  end
  return ember.tensor(hout), ember.tensor(cout)
end

before_each(function() ember.manual_seed(1) end)

describe('ember.lstm_pointwise', function()
  it('equals the cell made of ember ops, bit for bit, as [2 x N x H]', function()
    for _, s in ipairs({ { 1, 1 }, { 3, 5 }, { 2, 7 }, { 4, 2 } }) do
      local N, H = s[1], s[2]
      local gates, c = ember.randn(N, 4 * H) * 2, ember.randn(N, H)
      local out = ember.lstm_pointwise(gates, c)
      assert.are.same({ 2, N, H }, out:shape())
      local h2, c2 = cell_by_ops(gates, c)
      assert_same_bits(out:select(1, 1), h2)
      assert_same_bits(out:select(1, 2), c2)
    end
  end)

  it('reads strided rows: a transposed gate matrix, the c of an earlier step', function()
    local N, H = 3, 4
    local gates = ember.randn(4 * H, N):t() -- non-contiguous [N x 4H]
    local prev = ember.lstm_pointwise(ember.randn(N, 4 * H), ember.randn(N, H))
    local c = prev:select(1, 2)
    local out = ember.lstm_pointwise(gates, c)
    local h2, c2 = cell_by_ops(gates, c)
    assert_same_bits(out:select(1, 1), h2)
    assert_same_bits(out:select(1, 2), c2)
  end)

  it('has correct gradients in the gates and c_prev', function()
    for _, s in ipairs({ { 1, 1 }, { 3, 2 }, { 2, 5 } }) do
      local N, H = s[1], s[2]
      check(function(g, c) return ember.lstm_pointwise(g, c) end, { randn(N, 4 * H), randn(N, H) })
    end
    -- only h used (the c half of the output gradient is zero), only c used
    local g, c = randn(2, 12), randn(2, 3)
    check(function(g, c) return ember.lstm_pointwise(g, c):select(1, 1) end, { g, c })
    check(function(g, c) return ember.lstm_pointwise(g, c):select(1, 2) end, { g, c })
    -- through strided inputs
    check(function(gt, c) return ember.lstm_pointwise(gt:t(), c:t()) end, { randn(12, 2), randn(3, 2) })
  end)

  it('has correct second derivatives', function()
    checkgrad2(function(g, c) return ember.lstm_pointwise(g, c) end, { randn(2, 8), randn(2, 2) })
    checkgrad2(function(g, c) return ember.lstm_pointwise(g, c):select(1, 1) end, { randn(3, 4), randn(3, 1) })
  end)

  it('gives the same gradients fused (no graph) and composed (create_graph)', function()
    local g, c = randn(3, 20), randn(3, 5)
    local w = ember.randn(2, 3, 5)
    local out = ember.lstm_pointwise(g, c)
    local fused = ember.grad((out * w):sum(), { g, c }, { retain_graph = true })
    local composed = ember.grad((out * w):sum(), { g, c }, { create_graph = true })
    assert_same_bits(fused[1], composed[1])
    assert_same_bits(fused[2], composed[2])
  end)

  it('is caught by the gradient checks when its backward is wrong', function()
    ember._debug_break_backward('lstm_pointwise')
    local ok = ember.gradcheck(function(g, c) return ember.lstm_pointwise(g, c) end, { randn(2, 8), randn(2, 2) })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
    -- the composed backward joins the gate gradients with cat: a wrong cat backward is a
    -- wrong second derivative, which gradgradcheck must see
    ember._debug_break_backward('cat')
    ok = ember.gradgradcheck(function(g, c) return ember.lstm_pointwise(g, c) end, { randn(2, 8), randn(2, 2) })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
  end)

  it('rejects bad arguments with clear messages', function()
    expect_error(function() ember.lstm_pointwise('g', ember.zeros(2, 2)) end,
      'lstm_pointwise: bad argument #1 (expected tensor, got string)')
    expect_error(function() ember.lstm_pointwise(ember.zeros(2, 8)) end,
      'lstm_pointwise: bad argument #2 (expected tensor, got no value)')
    expect_error(function() ember.lstm_pointwise(ember.zeros(2, 10), ember.zeros(2, 2)) end,
      'lstm_pointwise: gates [2 x 10] must be 2-D [N x 4H], its width a positive multiple of 4 (blocks i, f, g, o)')
    expect_error(function() ember.lstm_pointwise(ember.zeros(8), ember.zeros(2)) end,
      'lstm_pointwise: gates [8] must be 2-D [N x 4H]')
    expect_error(function() ember.lstm_pointwise(ember.zeros(2, 8), ember.zeros(3, 2)) end,
      'lstm_pointwise: c_prev [3 x 2] must be [2 x 2] (N x H for gates [2 x 8])')
    expect_error(function() ember.lstm_pointwise(ember.zeros(2, 8), ember.zeros(2, 2, 1)) end,
      'lstm_pointwise: c_prev [2 x 2 x 1] must be [2 x 2]')
  end)
end)

describe('ember.lstm_cell', function()
  local N, I, H = 3, 4, 2
  local function weights()
    return randn(4 * H, I), randn(4 * H, H), randn(4 * H), randn(4 * H)
  end

  it('equals PyTorch\'s LSTMCell formula: ember ops bit for bit, a double loop to 1e-6', function()
    local x, h, c = ember.randn(N, I), ember.randn(N, H), ember.randn(N, H)
    local w_ih, w_hh, b_ih, b_hh = weights()
    local h2, c2 = ember.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert.are.same({ N, H }, h2:shape())
    assert.are.same({ N, H }, c2:shape())
    local rh, rc = cell_by_ops(ember.linear(x, w_ih, b_ih) + ember.linear(h, w_hh, b_hh), c)
    assert_same_bits(h2, rh)
    assert_same_bits(c2, rc)
    local lh, lc = cell_by_loop(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert_close(h2, lh, 1e-6)
    assert_close(c2, lc, 1e-6)
    -- without biases, and with only the input bias
    h2, c2 = ember.lstm_cell(x, h, c, w_ih, w_hh)
    lh, lc = cell_by_loop(x, h, c, w_ih, w_hh)
    assert_close(h2, lh, 1e-6)
    assert_close(c2, lc, 1e-6)
    h2 = ember.lstm_cell(x, h, c, w_ih, w_hh, b_ih, nil)
    lh = cell_by_loop(x, h, c, w_ih, w_hh, b_ih)
    assert_close(h2, lh, 1e-6)
  end)

  it('has correct gradients in x, h, c, both weights and both biases', function()
    local x, h, c = randn(N, I), randn(N, H), randn(N, H)
    local w_ih, w_hh, b_ih, b_hh = weights()
    local inputs = { x, h, c, w_ih, w_hh, b_ih, b_hh }
    check(function(...)
      local h2, c2 = ember.lstm_cell(...)
      return ember.cat({ h2, c2 }, 2)
    end, inputs)
    check(function(...) return (ember.lstm_cell(...)) end, inputs) -- h' alone
    check(function(...) return select(2, ember.lstm_cell(...)) end, inputs) -- c' alone
    check(function(x, h, c, w_ih, w_hh) return (ember.lstm_cell(x, h, c, w_ih, w_hh)) end,
      { x, h, c, w_ih, w_hh })
  end)

  it('has correct second derivatives in every input', function()
    local x, h, c = randn(2, 3), randn(2, 2), randn(2, 2)
    local w_ih, w_hh, b_ih, b_hh = randn(8, 3), randn(8, 2), randn(8), randn(8)
    checkgrad2(function(...)
      local h2, c2 = ember.lstm_cell(...)
      return h2 * c2
    end, { x, h, c, w_ih, w_hh, b_ih, b_hh })
  end)

  it('rejects bad arguments with clear messages', function()
    local x, h, c = ember.zeros(N, I), ember.zeros(N, H), ember.zeros(N, H)
    local w_ih, w_hh, b = ember.zeros(4 * H, I), ember.zeros(4 * H, H), ember.zeros(4 * H)
    expect_error(function() ember.lstm_cell('x', h, c, w_ih, w_hh) end,
      'lstm_cell: bad argument #1 (expected tensor, got string)')
    expect_error(function() ember.lstm_cell(x, nil, c, w_ih, w_hh) end,
      'lstm_cell: bad argument #2 (expected tensor, got nil)')
    expect_error(function() ember.lstm_cell(x, h, {}, w_ih, w_hh) end,
      'lstm_cell: bad argument #3 (expected tensor, got table)')
    expect_error(function() ember.lstm_cell(x, h, c, 1, w_hh) end,
      'lstm_cell: bad argument #4 (expected tensor, got number)')
    expect_error(function() ember.lstm_cell(x, h, c, w_ih) end,
      'lstm_cell: bad argument #5 (expected tensor, got no value)')
    expect_error(function() ember.lstm_cell(x, h, c, w_ih, w_hh, 0) end,
      'lstm_cell: bad argument #6 (expected a b_ih tensor or nil, got number)')
    expect_error(function() ember.lstm_cell(x, h, c, w_ih, w_hh, b, true) end,
      'lstm_cell: bad argument #7 (expected a b_hh tensor or nil, got boolean)')
    expect_error(function() ember.lstm_cell(ember.zeros(I), h, c, w_ih, w_hh) end,
      'lstm_cell: input [4] must be 2-D [batch x input_size]')
    expect_error(function() ember.lstm_cell(x, h, c, ember.zeros(7, I), w_hh) end,
      'lstm_cell: w_ih [7 x 4] must be 2-D [4*hidden_size x input_size]')
    expect_error(function() ember.lstm_cell(x, h, c, ember.zeros(8, 5), w_hh) end,
      'lstm_cell: w_ih [8 x 5] does not fit input [3 x 4] (expected [8 x 4])')
    expect_error(function() ember.lstm_cell(x, h, c, w_ih, ember.zeros(8, 3)) end,
      'lstm_cell: w_hh [8 x 3] must be [8 x 2] (4*hidden_size x hidden_size, with hidden_size 2 from w_ih [8 x 4])')
    expect_error(function() ember.lstm_cell(x, ember.zeros(2, H), c, w_ih, w_hh) end,
      'lstm_cell: h [2 x 2] must be [3 x 2] (batch x hidden_size)')
    expect_error(function() ember.lstm_cell(x, h, ember.zeros(N, 3), w_ih, w_hh) end,
      'lstm_cell: c [3 x 3] must be [3 x 2] (batch x hidden_size)')
    expect_error(function() ember.lstm_cell(x, h, c, w_ih, w_hh, ember.zeros(4)) end,
      'lstm_cell: b_ih [4] must be [8] (4*hidden_size)')
    expect_error(function() ember.lstm_cell(x, h, c, w_ih, w_hh, b, ember.zeros(1, 8)) end,
      'lstm_cell: b_hh [1 x 8] must be [8] (4*hidden_size)')
  end)
end)

describe('nn.LSTMCell', function()
  it('has PyTorch\'s parameters, init and printout', function()
    local cell = nn.LSTMCell(3, 4)
    local names, shapes = {}, {}
    for name, p in cell:named_parameters() do
      names[#names + 1] = name
      shapes[#shapes + 1] = p:shape()
    end
    assert.are.same({ 'weight_ih', 'weight_hh', 'bias_ih', 'bias_hh' }, names)
    assert.are.same({ { 16, 3 }, { 16, 4 }, { 16 }, { 16 } }, shapes)
    for _, p in ipairs(cell:parameters()) do -- U(-1/sqrt(H), 1/sqrt(H)) = U(-0.5, 0.5)
      assert.is_true(p:abs():max():item() <= 0.5)
      assert.is_true(p:abs():max():item() > 0.3)
    end
    assert.are.equal('LSTMCell(3 -> 4)\nTotal parameters: 144', tostring(cell))
    local nb = nn.LSTMCell(3, 4, { bias = false })
    assert.are.equal(2, #nb:parameters())
    assert.are.equal('LSTMCell(3 -> 4, bias=false)', tostring(nb):match('^[^\n]*'))
  end)

  it('computes ember.lstm_cell, zeros as the default state, and unbatched inputs', function()
    local cell = nn.LSTMCell(3, 2)
    local x, h, c = ember.randn(4, 3), ember.randn(4, 2), ember.randn(4, 2)
    local h1, c1 = cell(x, { h, c })
    local rh, rc = ember.lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert_same_bits(h1, rh)
    assert_same_bits(c1, rc)
    local h0, c0 = cell(x)
    rh, rc = ember.lstm_cell(x, ember.zeros(4, 2), ember.zeros(4, 2), cell.weight_ih, cell.weight_hh,
      cell.bias_ih, cell.bias_hh)
    assert_same_bits(h0, rh)
    assert_same_bits(c0, rc)
    -- unbatched: [I] with [H] states (a product of one row may round differently)
    local hu, cu = cell(x[2], { h[2], c[2] })
    assert.are.same({ 2 }, hu:shape())
    assert_close(hu, h1[2])
    assert_close(cu, c1[2])
    hu = cell(x[3])
    assert_close(hu, h0[3])
    local nb = nn.LSTMCell(3, 2, { bias = false })
    assert_same_bits((nb(x, { h, c })), (ember.lstm_cell(x, h, c, nb.weight_ih, nb.weight_hh)))
  end)

  it('rejects bad arguments with clear messages', function()
    expect_error(function() nn.LSTMCell(0, 2) end, "LSTMCell: bad argument #1 'input_size' (expected a positive integer, got 0)")
    expect_error(function() nn.LSTMCell(3, 2.5) end, "LSTMCell: bad argument #2 'hidden_size' (expected a positive integer, got 2.5)")
    expect_error(function() nn.LSTMCell(3) end, "LSTMCell: bad argument #2 'hidden_size' (expected a positive integer, got nil)")
    expect_error(function() nn.LSTMCell(3, 2, { biass = true }) end, "LSTMCell: unknown option 'biass' (expected one of: bias)")
    expect_error(function() nn.LSTMCell(3, 2, { bias = 'no' }) end, "LSTMCell: option 'bias' must be a boolean, got 'no'")
    expect_error(function() nn.LSTMCell(3, 2, 5) end, "LSTMCell: bad argument #3 'opts' (expected an options table, got 5)")
    local cell = nn.LSTMCell(3, 2)
    local x, h, c = ember.zeros(4, 3), ember.zeros(4, 2), ember.zeros(4, 2)
    expect_error(function() cell('x') end, "LSTMCell: bad argument #1 'input' (expected a tensor, got 'x')")
    expect_error(function() cell(ember.zeros(1, 4, 3)) end,
      'LSTMCell: input [1 x 4 x 3] must be 1-D [input_size] or 2-D [batch x input_size]')
    expect_error(function() cell(ember.zeros(4, 5)) end, 'LSTMCell: input [4 x 5] has 5 features (last dim), expected 3')
    expect_error(function() cell(x, h) end, "LSTMCell: bad argument #2 'hx' (expected a table {h, c} of two tensors, got tensor [4 x 2])")
    expect_error(function() cell(x, { h }) end, "LSTMCell: bad argument #2 'hx' (expected a table {h, c} of two tensors, got a table of 1)")
    expect_error(function() cell(x, { h, 'c' }) end, "LSTMCell: hx[2] (c) must be a tensor, got 'c'")
    expect_error(function() cell(x, { ember.zeros(3, 2), c }) end,
      'LSTMCell: hx[1] (h) is [3 x 2], expected [4 x 2] (batch x hidden_size)')
    expect_error(function() cell(x, { h, ember.zeros(4, 3) }) end,
      'LSTMCell: hx[2] (c) is [4 x 3], expected [4 x 2] (batch x hidden_size)')
    expect_error(function() cell(ember.zeros(3), { h, c }) end,
      'LSTMCell: hx[1] (h) is [4 x 2], expected [2] (hidden_size)')
    -- the error points at the caller's line, not into nn.lua
    local err = error_of(function() cell(ember.zeros(4, 5)) end)
    assert.are.equal('lstm_spec.lua', err:match('([%w_]+%.lua):%d+:'))
  end)
end)

describe('nn.LSTM', function()
  -- A cell holding layer k's weights of an nn.LSTM.
  local function cell_of(lstm, k)
    local cell = nn.LSTMCell(k == 0 and lstm.input_size or lstm.hidden_size, lstm.hidden_size,
      { bias = lstm.bias_ih_l0 ~= nil })
    local sd = {}
    for _, name in ipairs({ 'weight_ih', 'weight_hh', 'bias_ih', 'bias_hh' }) do
      sd[name] = lstm[name .. '_l' .. k]
    end
    cell:load_state_dict(sd)
    return cell
  end

  -- nn.LSTMCell unrolled over x [T x N x I] for every layer: output, h_n, c_n.
  local function unrolled(lstm, x, h0, c0)
    local input, hs, cs = x, {}, {}
    for k = 0, lstm.num_layers - 1 do
      local cell, outs = cell_of(lstm, k), {}
      local h, c = h0 and h0[k + 1], c0 and c0[k + 1]
      for t = 1, input:size(1) do
        h, c = cell(input[t], h and { h, c })
        outs[t] = h
      end
      hs[#hs + 1], cs[#cs + 1] = h, c
      input = ember.stack(outs, 1)
    end
    return input, ember.stack(hs, 1), ember.stack(cs, 1)
  end

  it('has PyTorch\'s parameter names, shapes, init and printout', function()
    local lstm = nn.LSTM(3, 4, { num_layers = 2 })
    local names, shapes = {}, {}
    for name, p in lstm:named_parameters() do
      names[#names + 1] = name
      shapes[#shapes + 1] = p:shape()
      assert.is_true(p:abs():max():item() <= 0.5, name) -- U(-1/sqrt(4), 1/sqrt(4))
      assert.is_true(p:abs():max():item() > 0.2, name)
    end
    assert.are.same({ 'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0',
      'weight_ih_l1', 'weight_hh_l1', 'bias_ih_l1', 'bias_hh_l1' }, names)
    assert.are.same({ { 16, 3 }, { 16, 4 }, { 16 }, { 16 }, { 16, 4 }, { 16, 4 }, { 16 }, { 16 } }, shapes)
    assert.are.equal('LSTM(3 -> 4, num_layers 2)\nTotal parameters: 304', tostring(lstm))
    assert.are.equal('LSTM(3 -> 4)', tostring(nn.LSTM(3, 4)):match('^[^\n]*'))
    assert.are.equal('LSTM(3 -> 4, bias=false, batch_first=true, dropout 0.25)',
      tostring(nn.LSTM(3, 4, { bias = false, batch_first = true, dropout = 0.25 })):match('^[^\n]*'))
    local sd = nn.LSTM(2, 3, { bias = false }):state_dict()
    local keys = {}
    for k in pairs(sd) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ 'weight_hh_l0', 'weight_ih_l0' }, keys)
  end)

  it('equals nn.LSTMCell unrolled over the sequence, with and without a given state', function()
    local lstm = nn.LSTM(3, 5)
    local x = ember.randn(6, 2, 3)
    local out, hc = lstm(x)
    assert.are.same({ 6, 2, 5 }, out:shape())
    assert.are.same({ 1, 2, 5 }, hc[1]:shape())
    assert.are.same({ 1, 2, 5 }, hc[2]:shape())
    local ro, rh, rc = unrolled(lstm, x)
    assert_close(out, ro)
    assert_close(hc[1], rh)
    assert_close(hc[2], rc)
    assert_same_bits(hc[1][1], out[6]) -- h_n is the last output
    local h0, c0 = ember.randn(1, 2, 5), ember.randn(1, 2, 5)
    out, hc = lstm(x, { h0, c0 })
    ro, rh, rc = unrolled(lstm, x, h0, c0)
    assert_close(out, ro)
    assert_close(hc[1], rh)
    assert_close(hc[2], rc)
  end)

  it('stacks layers: num_layers = 2 feeds layer 1 with layer 0\'s outputs', function()
    local lstm = nn.LSTM(3, 4, { num_layers = 2 })
    local x, h0, c0 = ember.randn(5, 3, 3), ember.randn(2, 3, 4), ember.randn(2, 3, 4)
    local out, hc = lstm(x, { h0, c0 })
    assert.are.same({ 5, 3, 4 }, out:shape())
    assert.are.same({ 2, 3, 4 }, hc[1]:shape())
    local ro, rh, rc = unrolled(lstm, x, h0, c0)
    assert_close(out, ro)
    assert_close(hc[1], rh)
    assert_close(hc[2], rc)
    -- without biases too
    local nb = nn.LSTM(3, 4, { num_layers = 2, bias = false })
    out, hc = nb(x)
    ro, rh, rc = unrolled(nb, x)
    assert_close(out, ro)
    assert_close(hc[2], rc)
  end)

  it('takes and gives batch-first sequences; h_n and c_n stay layer-first', function()
    local lstm = nn.LSTM(3, 4, { num_layers = 2, batch_first = true })
    local xb = ember.randn(2, 5, 3) -- [N x T x I]
    local h0, c0 = ember.randn(2, 2, 4), ember.randn(2, 2, 4)
    local out, hc = lstm(xb, { h0, c0 })
    assert.are.same({ 2, 5, 4 }, out:shape())
    assert.are.same({ 2, 2, 4 }, hc[1]:shape())
    local ro, rh, rc = unrolled(lstm, xb:transpose(1, 2), h0, c0)
    assert_close(out, ro:transpose(1, 2))
    assert_close(hc[1], rh)
    assert_close(hc[2], rc)
  end)

  it('takes unbatched sequences [T x I] with states [num_layers x H]', function()
    local lstm = nn.LSTM(3, 4, { num_layers = 2 })
    local x, h0, c0 = ember.randn(5, 3), ember.randn(2, 4), ember.randn(2, 4)
    local out, hc = lstm(x, { h0, c0 })
    assert.are.same({ 5, 4 }, out:shape())
    assert.are.same({ 2, 4 }, hc[1]:shape())
    local bo, bhc = lstm(x:unsqueeze(2), { h0:unsqueeze(2), c0:unsqueeze(2) })
    assert_same_bits(out, bo:squeeze(2))
    assert_same_bits(hc[1], bhc[1]:squeeze(2))
    assert_same_bits(hc[2], bhc[2]:squeeze(2))
    -- batch_first does not apply to an unbatched input
    local bf = nn.LSTM(3, 4, { num_layers = 2, batch_first = true })
    bf:load_state_dict(lstm:state_dict())
    assert_same_bits((bf(x, { h0, c0 })), out)
  end)

  it('applies dropout between layers while training only', function()
    local lstm = nn.LSTM(3, 4, { num_layers = 2, dropout = 0.5 })
    local plain = nn.LSTM(3, 4, { num_layers = 2 })
    plain:load_state_dict(lstm:state_dict())
    local x = ember.randn(4, 2, 3)
    lstm:eval()
    assert_same_bits((lstm(x)), (plain(x)))
    lstm:train()
    local o1, o2 = lstm(x), lstm(x)
    assert.is_true((o1 - o2):abs():max():item() > 1e-4) -- two masks, two results
    assert.is_true((o1 - plain(x)):abs():max():item() > 1e-4)
    -- dropout 1 zeroes the second layer's input: its output is the same for any x
    local all = nn.LSTM(3, 4, { num_layers = 2, dropout = 1 })
    assert_same_bits((all(x)), (all(ember.randn(4, 2, 3))))
  end)

  it('has correct gradients back through time in the input, states and every parameter', function()
    local lstm = nn.LSTM(2, 3, { num_layers = 2 })
    local x, h0, c0 = randn(3, 2, 2), randn(2, 2, 3), randn(2, 2, 3)
    local inputs = { x, h0, c0 }
    for _, p in ipairs(lstm:parameters()) do inputs[#inputs + 1] = p end
    local function all_outputs(x, h0, c0)
      local out, hc = lstm(x, { h0, c0 })
      return ember.cat({ out:reshape(-1), hc[1]:reshape(-1), hc[2]:reshape(-1) })
    end
    check(all_outputs, inputs)
    -- the last output alone: the gradient reaches the first step only through time
    check(function(x) return lstm(x)[3] end, { x })
    local bf = nn.LSTM(2, 3, { batch_first = true })
    local xb = randn(2, 3, 2)
    local binputs = { xb }
    for _, p in ipairs(bf:parameters()) do binputs[#binputs + 1] = p end
    check(function(x) return (bf(x)) end, binputs)
  end)

  it('has correct second derivatives through time', function()
    local lstm = nn.LSTM(2, 2)
    local x, h0, c0 = randn(2, 1, 2), randn(1, 1, 2), randn(1, 1, 2)
    local inputs = { x, h0, c0 }
    for _, p in ipairs(lstm:parameters()) do inputs[#inputs + 1] = p end
    checkgrad2(function(x, h0, c0)
      local out, hc = lstm(x, { h0, c0 })
      return ember.cat({ out:reshape(-1), hc[2]:reshape(-1) })
    end, inputs)
  end)

  it('is caught by the gradient check when the cell\'s backward is wrong', function()
    local lstm = nn.LSTM(2, 2)
    local x = randn(3, 1, 2)
    ember._debug_break_backward('lstm_pointwise')
    local ok = ember.gradcheck(function(x) return (lstm(x)) end, { x })
    ember._debug_break_backward(nil)
    assert.is_false(ok)
    check(function(x) return (lstm(x)) end, { x })
  end)

  it('rejects bad arguments with clear messages', function()
    expect_error(function() nn.LSTM(0, 2) end, "LSTM: bad argument #1 'input_size' (expected a positive integer, got 0)")
    expect_error(function() nn.LSTM(3, 'h') end, "LSTM: bad argument #2 'hidden_size' (expected a positive integer, got 'h')")
    expect_error(function() nn.LSTM(3, 2, { num_layers = 0 }) end, "LSTM: bad argument #3 'num_layers' (expected a positive integer, got 0)")
    expect_error(function() nn.LSTM(3, 2, { num_layer = 2 }) end,
      "LSTM: unknown option 'num_layer' (expected one of: batch_first, bias, dropout, num_layers)")
    expect_error(function() nn.LSTM(3, 2, { bias = 0 }) end, "LSTM: option 'bias' must be a boolean, got 0")
    expect_error(function() nn.LSTM(3, 2, { batch_first = 'yes' }) end, "LSTM: option 'batch_first' must be a boolean, got 'yes'")
    expect_error(function() nn.LSTM(3, 2, { dropout = 1.5 }) end, "LSTM: option 'dropout' must be a number in [0, 1], got 1.5")
    expect_error(function() nn.LSTM(3, 2, { dropout = 'x' }) end, "LSTM: option 'dropout' must be a number in [0, 1], got 'x'")
    expect_error(function() nn.LSTM(3, 2, true) end, "LSTM: bad argument #3 'opts' (expected an options table, got boolean)")
    local lstm = nn.LSTM(3, 2, { num_layers = 2 })
    local x, h0, c0 = ember.zeros(5, 4, 3), ember.zeros(2, 4, 2), ember.zeros(2, 4, 2)
    expect_error(function() lstm({}) end, "LSTM: bad argument #1 'input' (expected a tensor, got table)")
    expect_error(function() lstm(ember.zeros(3)) end,
      'LSTM: input [3] must be 3-D [seq_len x batch x input_size] or 2-D [seq_len x input_size]')
    expect_error(function() nn.LSTM(3, 2, { batch_first = true })(ember.zeros(1, 2, 3, 4)) end,
      'LSTM: input [1 x 2 x 3 x 4] must be 3-D [batch x seq_len x input_size] or 2-D [seq_len x input_size]')
    expect_error(function() lstm(ember.zeros(5, 4, 2)) end, 'LSTM: input [5 x 4 x 2] has 2 features (last dim), expected 3')
    expect_error(function() lstm(ember.zeros(0, 4, 3)) end, 'LSTM: input [0 x 4 x 3] has no time steps')
    expect_error(function() lstm(x, 5) end, "LSTM: bad argument #2 'hx' (expected a table {h_0, c_0} of two tensors, got 5)")
    expect_error(function() lstm(x, { h0, c0, c0 }) end,
      "LSTM: bad argument #2 'hx' (expected a table {h_0, c_0} of two tensors, got a table of 3)")
    expect_error(function() lstm(x, { nil, c0 }) end, 'LSTM: hx[1] (h_0) must be a tensor, got nil')
    expect_error(function() lstm(x, { ember.zeros(1, 4, 2), c0 }) end,
      'LSTM: hx[1] (h_0) is [1 x 4 x 2], expected [2 x 4 x 2] (num_layers x batch x hidden_size)')
    expect_error(function() lstm(x, { h0, ember.zeros(2, 5, 2) }) end,
      'LSTM: hx[2] (c_0) is [2 x 5 x 2], expected [2 x 4 x 2] (num_layers x batch x hidden_size)')
    expect_error(function() lstm(ember.zeros(5, 3), { h0, c0 }) end,
      'LSTM: hx[1] (h_0) is [2 x 4 x 2], expected [2 x 2] (num_layers x hidden_size)')
    local err = error_of(function() lstm(ember.zeros(5, 4, 2)) end)
    assert.are.equal('lstm_spec.lua', err:match('([%w_]+%.lua):%d+:'))
  end)
end)
