-- autoregressive_spec.lua — ember.autoregressive: the PixelCNN family's causality (and
-- the PixelRNNs': Row LSTM, Diagonal BiLSTM)
-- (the output at pixel i never depends on input pixels j >= i in raster order), Gated
-- PixelCNN's missing blind spot, the gated unit's gradient, the row-cached pass equal to
-- the full one, naive and fast sampling giving the same pixels for a seed, completions
-- keeping the given rows, the NLL against a direct computation, and bad arguments.
local ember = require 'ember'
local ar = require 'ember.autoregressive'

local raises = require('tests.lua.helpers.common').raises
local function expect_error(fn, text) raises(text, fn) end

local H, W = 7, 7

-- dependence[i][j] = true when d out[i] / d x[j] is non-zero for one of three random
-- inputs (0-based raster positions); `fwd` maps x [1 x 1 x H x W] to the head output
-- [1 x K x H x W] (channel 1 is used). Three inputs, so that a ReLU dead at one pixel
-- for one input does not hide a connection.
local function dependence(fwd)
  local dep = {}
  for i = 0, H * W - 1 do
    dep[i] = {}
    for _ = 1, 3 do
      local x = ember.randn(1, 1, H, W):requires_grad()
      local out = fwd(x)
      local g = ember.grad(out:narrow(2, 1, 1):reshape(-1):narrow(1, i + 1, 1):sum(), { x })[1]
      local gv = g:reshape(-1):totable()
      for j = 0, H * W - 1 do dep[i][j] = dep[i][j] or gv[j + 1] ~= 0 end
    end
  end
  return dep
end

local function assert_causal(dep, name)
  for i = 0, H * W - 1 do
    for j = i, H * W - 1 do
      assert.is_false(dep[i][j], ('%s: output pixel %d depends on input pixel %d'):format(name, i, j))
    end
  end
end

describe('autoregressive models', function()
  ember.manual_seed(11)
  local plain = ar.PixelCNN { channels = 4, blocks = 3, hidden = 4, first_kernel = 3 }
  local gated = ar.GatedPixelCNN { channels = 4, layers = 4, hidden = 4, first_kernel = 3 }
  local conditional = ar.GatedPixelCNN { channels = 4, layers = 2, hidden = 4, classes = 3 }

  it('are causal: output pixel i has zero gradient for every input pixel j >= i', function()
    local dplain = dependence(function(x) return plain(x) end)
    local dgated = dependence(function(x) return gated(x) end)
    local dcond = dependence(function(x) return conditional(x, ember.tensor { 2 }) end)
    local pp = ar.PixelCNNpp { channels = 3, resnets = 1, stages = 2 }
    local H0, W0 = H, W
    H, W = 8, 8 -- PixelCNN++ halves the size once per stage
    local dpp = dependence(function(x) return pp(x) end)
    assert_causal(dpp, 'PixelCNN++')
    assert.is_true(dpp[3 * W + 3][3 * W + 2] and dpp[3 * W + 3][2 * W + 3] and dpp[3 * W + 3][2 * W + 6])
    H, W = H0, W0
    local rowlstm = ar.RowLSTM { channels = 4, layers = 2, hidden = 16, first_kernel = 3 }
    local drow = dependence(function(x) return rowlstm(x) end)
    assert_causal(drow, 'Row LSTM')
    local diag = ar.DiagonalBiLSTM { channels = 3, layers = 1, hidden = 8, first_kernel = 3 }
    local ddiag = dependence(function(x) return diag(x) end)
    assert_causal(ddiag, 'Diagonal BiLSTM')
    -- no blind spot: (2, 0) sees (0, W-1), far above-right, through the right-to-left LSTM
    -- shifted down a row; and the pixel just left and the one above
    assert.is_true(ddiag[2 * W][W - 1] and ddiag[3 * W + 3][3 * W + 2] and ddiag[3 * W + 3][2 * W + 3])
    -- the Row LSTM's triangle: from (4, 3) it sees (3, 2..4) through the state and (4, 2)
    for _, j in ipairs { 3 * W + 2, 3 * W + 3, 3 * W + 4, 4 * W + 2 } do assert.is_true(drow[4 * W + 3][j]) end
    assert_causal(dplain, 'PixelCNN')
    assert_causal(dgated, 'GatedPixelCNN')
    assert_causal(dcond, 'conditional GatedPixelCNN')
    -- and they do see the past: the pixel just left and the one just above
    local i = 3 * W + 3
    for _, d in ipairs { dplain, dgated } do
      assert.is_true(d[i][i - 1])
      assert.is_true(d[i][i - W])
    end
  end)

  it('Gated PixelCNN has no blind spot where plain PixelCNN has one', function()
    local dplain = dependence(function(x) return plain(x) end)
    local dgated = dependence(function(x) return gated(x) end)
    -- pixel (5, 2): plain PixelCNN's stacked 3x3 mask-B convs never reach some pixels
    -- up and to the right; the gated vertical stack covers every row above in its
    -- receptive field
    local r, c = 5, 2
    local i = r * W + c
    local blind = {}
    for rr = 0, r - 1 do
      for cc = c + 1, W - 1 do
        local j = rr * W + cc
        if not dplain[i][j] and dgated[i][j] then blind[#blind + 1] = ('(%d,%d)'):format(rr, cc) end
      end
    end
    assert.is_true(#blind > 0, 'no pixel above-right seen by the gated model but not by the plain one')
    -- the gated model sees the whole band of rows above within its reach, up to the right
    for rr = r - 2, r - 1 do
      for cc = 0, W - 1 do
        if math.abs(cc - c) <= 2 then
          assert.is_true(dgated[i][rr * W + cc], ('gated: (%d,%d) not seen from (%d,%d)'):format(rr, cc, r, c))
        end
      end
    end
  end)

  it('the gated unit is tanh(a) sigmoid(b) and passes its gradient check', function()
    -- the fused op gives the composition's bits, forward and backward
    local x = ember.randn(2, 6, 3, 3):requires_grad()
    local ref = x:narrow(2, 1, 3):tanh() * x:narrow(2, 4, 3):sigmoid()
    local y = ar.gate(x)
    assert.equal(0, (y - ref):abs():max():item())
    -- without recording (no saved activations) the same values
    ember.no_grad(function() assert.equal(0, (ar.gate(x) - ref):abs():max():item()) end)
    local g = ember.randn(2, 3, 3, 3)
    local gf = ember.grad((y * g):sum(), { x })[1]
    local gr = ember.grad((ref * g):sum(), { x })[1]
    assert.equal(0, (gf - gr):abs():max():item())
    -- a non-contiguous input and a 2-D one
    local xt = ember.randn(3, 4, 2):transpose(1, 2) -- [4 x 3 x 2] strided: dim 2 = 3 is odd
    expect_error(function() ar.gate(xt) end, 'gated_tanh: input [4 x 3 x 2] must have an even number of channels')
    local x2 = ember.randn(4, 5):t() -- [5 x 4]
    assert.equal(0, (ar.gate(x2) - x2:narrow(2, 1, 2):tanh() * x2:narrow(2, 3, 2):sigmoid()):abs():max():item())
    local ok, msg = ember.gradcheck(ar.gate, { ember.randn(2, 4, 3, 2):requires_grad() })
    assert.is_true(ok, msg)
    ok, msg = ember.gradgradcheck(ar.gate, { ember.randn(1, 4, 2, 2):requires_grad() })
    assert.is_true(ok, msg)
    expect_error(function() ar.gate(ember.randn(2, 3, 2, 2)) end, 'gated_tanh: input [2 x 3 x 2 x 2] must have an even number of channels')
    expect_error(function() ember.gated_tanh(ember.randn(3)) end, 'gated_tanh: input [3] must have an even number of channels')
    expect_error(function() ember.gated_tanh('x') end, 'gated_tanh: bad argument #1')
    ember._debug_break_backward('gated_tanh')
    local broken = ember.gradcheck(ar.gate, { ember.randn(1, 4, 2, 2):requires_grad() })
    ember._debug_break_backward()
    assert.is_false(broken)
    expect_error(function() ar.gate(3) end, 'gate: bad argument #1 (expected a tensor, got number)')
  end)

  it('the row-cached pass gives the full pass, row by row', function()
    for _, lik in ipairs { 'bernoulli', 'categorical' } do
      for _, m in ipairs {
        ar.PixelCNN { channels = 5, blocks = 2, hidden = 6, likelihood = lik },
        ar.GatedPixelCNN { channels = 5, layers = 3, hidden = 6, likelihood = lik, classes = 2 },
        ar.RowLSTM { channels = 4, layers = 2, hidden = 5, likelihood = lik },
      } do
        m:eval()
        local x = ar.to_input(ember.rand(3, 1, 9, 8), lik)
        if lik == 'bernoulli' then x = ember.bernoulli(ember.rand(3, 1, 9, 8)) end
        local y = ember.tensor { 1, 2, 2 }
        ember.no_grad(function()
          local full = m:forward(x, y)
          local s = m:row_sampler(3, 9, 8, y)
          for r = 0, 8 do
            local d = (s:row(x, r) - full:narrow(3, r + 1, 1)):abs():max():item()
            assert.is_true(d < 1e-5, ('%s %s row %d differs by %g'):format(m:class_name(), lik, r, d))
            s:finish_row(x, r)
          end
        end)
      end
    end
  end)

  it('naive and fast sampling give the same pixels for a seed; completions keep the given rows', function()
    for _, lik in ipairs { 'bernoulli', 'categorical' } do
      for _, m in ipairs {
        ar.PixelCNN { channels = 4, blocks = 2, hidden = 4, likelihood = lik },
        ar.GatedPixelCNN { channels = 4, layers = 2, hidden = 4, likelihood = lik },
        ar.RowLSTM { channels = 3, layers = 2, hidden = 4, likelihood = lik },
        ar.DiagonalBiLSTM { channels = 3, layers = 2, hidden = 4, likelihood = lik }, -- a pixel sampler
      } do
        ember.manual_seed(21)
        local a = ar.sample(m, 3, { height = 6, width = 5, fast = false })
        ember.manual_seed(21)
        local b = ar.sample(m, 3, { height = 6, width = 5 })
        assert.same({ 3, 1, 6, 5 }, b:size())
        assert.equal(0, (a - b):abs():max():item(), m:class_name() .. ' ' .. lik)
        -- values in the head's support
        if lik == 'bernoulli' then
          assert.equal(0, (b * (1 - b)):abs():max():item())
        else
          local v = (b + 1) * 127.5
          assert.is_true((v - v:round()):abs():max():item() < 1e-3)
          assert.is_true(b:min():item() >= -1 and b:max():item() <= 1)
        end
        local given = ar.to_input(ember.rand(3, 1, 6, 5), lik)
        ember.manual_seed(22)
        local c1 = ar.sample(m, 3, { height = 6, width = 5, given = given, from_row = 3 })
        ember.manual_seed(22)
        local c2 = ar.sample(m, 3, { height = 6, width = 5, given = given, from_row = 3, fast = false })
        assert.equal(0, (c1:narrow(3, 1, 3) - given:narrow(3, 1, 3)):abs():max():item())
        assert.equal(0, (c1 - c2):abs():max():item())
      end
    end
  end)

  it('the NLL is the summed per-pixel loss of the head', function()
    ember.manual_seed(23)
    local m = ar.PixelCNN { channels = 3, blocks = 1, hidden = 3 }
    local x = ember.bernoulli(ember.rand(2, 1, 5, 5))
    local logits = m(x)
    local p = logits:sigmoid()
    local direct = -((x * p:log() + (1 - x) * (1 - p):log()):reshape(2, -1):sum(2))
    assert.is_true((ar.nll(m, x) - direct):abs():max():item() < 1e-3)
    local mc = ar.PixelCNN { channels = 3, blocks = 1, hidden = 3, likelihood = 'categorical' }
    local xc = ar.to_input(ember.rand(2, 1, 4, 4), 'categorical')
    local lp = mc(xc):log_softmax(2) -- [2 x 256 x 4 x 4]
    local idx = ((xc + 1) * 127.5):round() -- 0..255
    local sum = { 0, 0 }
    local lpt, it = lp:totable(), idx:totable()
    for n = 1, 2 do
      for r = 1, 4 do
        for c = 1, 4 do sum[n] = sum[n] - lpt[n][it[n][1][r][c] + 1][r][c] end
      end
    end
    local got = ar.nll(mc, xc):totable()
    for n = 1, 2 do assert.is_true(math.abs(got[n] - sum[n]) < 1e-3 * math.abs(sum[n])) end
    assert.is_true(math.abs(ar.bits_per_dim(784 * math.log(2), 784) - 1) < 1e-12)
  end)

  it('refuses bad arguments by name', function()
    expect_error(function() ar.PixelCNN { likelihood = 'gauss' } end, "PixelCNN: likelihood must be 'bernoulli', 'categorical' or 'logistic_mixture', got gauss")
    expect_error(function() ar.PixelCNN { channels = 0 } end, 'PixelCNN: channels must be a positive integer, got 0')
    expect_error(function() ar.GatedPixelCNN { layers = 1.5 } end, 'GatedPixelCNN: layers must be a positive integer, got 1.5')
    expect_error(function() ar.RowLSTM { kernel = 4 } end, 'RowLSTM: kernel must be odd, got 4')
    expect_error(function() ar.RowLSTM { layers = 0 } end, 'RowLSTM: layers must be a positive integer, got 0')
    expect_error(function() ar.DiagonalBiLSTM { layers = 0 } end, 'DiagonalBiLSTM: layers must be a positive integer, got 0')
    expect_error(function() ar.DiagonalBiLSTM { likelihood = 'x' } end,
      "DiagonalBiLSTM: likelihood must be 'bernoulli', 'categorical' or 'logistic_mixture', got x")
    expect_error(function() ar.GatedPixelCNN { classes = -1 } end, 'GatedPixelCNN: classes must be an integer >= 0, got -1')
    expect_error(function() conditional(ember.zeros(1, 1, 4, 4)) end, 'GatedPixelCNN: this model is class-conditional: give the labels y')
    expect_error(function() ar.sample(plain, 0) end, 'autoregressive.sample: n must be a positive integer, got 0')
    expect_error(function() ar.sample(plain, 2, { height = 4, from_row = 4 }) end, 'autoregressive.sample: from_row must be an integer in [0, 4), got 4')
    expect_error(function() ar.sample(plain, 2, { given = ember.zeros(3, 1, 28, 28), from_row = 2 }) end,
      'autoregressive.sample: given must be a tensor [2 x 1 x 28 x 28]')
  end)
end)
