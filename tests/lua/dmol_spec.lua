-- dmol_spec.lua — PixelCNN++'s discretized mixture of logistics
-- (ember.losses.discretized_logistic_mixture and
-- ember.sample_discretized_logistic_mixture): values against a per-pixel Lua
-- reference written from the formulas (every branch: the two edge levels, the
-- bin mass, the tiny-mass density), probabilities that sum to 1 over every
-- value of a pixel, gradient checks in params (and zero below the log-scale
-- clamp), the reductions, the refused second derivative, thread-count
-- independence, the sampler (seeded, in range, at a dominant component's mean,
-- component frequencies, quantized draws that follow the loss's own
-- probabilities), and the messages of bad arguments.
local ember = require 'ember'
local losses = require 'ember.losses'

local dmol = losses.discretized_logistic_mixture
local sample = ember.sample_discretized_logistic_mixture
local REDUCTIONS = { 'mean', 'sum', 'batchmean', 'none' }

local expect_error = require('tests.lua.helpers.common').raises -- (text, fn, ...)

local function flat(t)
  local v = t:contiguous():view(-1):totable()
  if type(v) == 'number' then v = { v } end
  return v
end

local function close(a, b, tol, what)
  tol = tol or 1e-5
  assert(math.abs(a - b) <= tol * (1 + math.abs(b)), ('%s%.9g vs %.9g'):format(what and what .. ': ' or '', a, b))
end

local function uniform(lo, hi) return lo + (hi - lo) * math.random() end

-- ---- building params in the documented layout -----------------------------------

-- params [N x P x H x W] for C channels and K components, value f(kind, c, k, n, i, j)
-- for kind 'logit' (c = 0), 'mean', 'log_scale' (c = channel) and 'coef' (c = 0, 1, 2;
-- C = 3 only), placed as docs/reference.md and core/em_loss.h say: logits [0, K),
-- means [K + cK + k], log-scales [K + CK + cK + k], coefficients [7K + iK + k].
local function make_params(N, C, K, H, W, f)
  local P = C == 1 and 3 * K or 10 * K
  local v = {}
  for n = 0, N - 1 do
    for i = 0, H - 1 do
      for j = 0, W - 1 do
        local function put(p, val) v[((n * P + p) * H + i) * W + j + 1] = val end
        for k = 0, K - 1 do put(k, f('logit', 0, k, n, i, j)) end
        for c = 0, C - 1 do
          for k = 0, K - 1 do
            put(K + c * K + k, f('mean', c, k, n, i, j))
            put(K + C * K + c * K + k, f('log_scale', c, k, n, i, j))
          end
        end
        if C == 3 then
          for c = 0, 2 do
            for k = 0, K - 1 do put(7 * K + c * K + k, f('coef', c, k, n, i, j)) end
          end
        end
      end
    end
  end
  return ember.tensor(v):view(N, P, H, W)
end

-- x [N x C x H x W] from f(c, n, i, j) -> a level 0..bins-1
local function make_x(N, C, H, W, f, bins)
  bins = bins or 256
  local v = {}
  for n = 0, N - 1 do
    for c = 0, C - 1 do
      for i = 0, H - 1 do
        for j = 0, W - 1 do v[((n * C + c) * H + i) * W + j + 1] = f(c, n, i, j) * 2 / (bins - 1) - 1 end
      end
    end
  end
  return ember.tensor(v):view(N, C, H, W)
end

-- ---- the reference: one pixel at a time, in plain Lua ---------------------------------

local function sigmoid(z) return 1 / (1 + math.exp(-z)) end          -- the logistic CDF
local function log_sigmoid(z)                                        -- log CDF, without overflow
  if z < 0 then return z - math.log(1 + math.exp(z)) end
  return -math.log(1 + math.exp(-z))
end
local function tanh(a) return 1 - 2 / (math.exp(2 * a) + 1) end

-- The NLL (nats) of every position of x under params, in (n, h, w) order, and how
-- often each way of scoring a sub-pixel was taken.
local function reference(params, x, K, bins)
  bins = bins or 256
  local ps, xs = params:shape(), x:shape()
  local N, P, H, W, C = ps[1], ps[2], ps[3], ps[4], xs[2]
  local pv, xv = flat(params), flat(x)
  local half = 1 / (bins - 1) -- half a bin: levels are 2 / (bins - 1) apart
  local used = { lowest = 0, highest = 0, mass = 0, density = 0 }
  local out = {}
  for n = 0, N - 1 do
    for i = 0, H - 1 do
      for j = 0, W - 1 do
        local function par(p) return pv[((n * P + p) * H + i) * W + j + 1] end
        local function pixel(c) return xv[((n * C + c) * H + i) * W + j + 1] end
        local m = -math.huge
        for k = 0, K - 1 do m = math.max(m, par(k)) end
        local z = 0
        for k = 0, K - 1 do z = z + math.exp(par(k) - m) end
        local log_z = m + math.log(z)
        local comp = {}
        for k = 0, K - 1 do
          local lp = par(k) - log_z -- log of the mixture weight
          for c = 0, C - 1 do
            local mean = par(K + c * K + k)
            if c == 1 then mean = mean + tanh(par(7 * K + k)) * pixel(0) end
            if c == 2 then mean = mean + tanh(par(8 * K + k)) * pixel(0) + tanh(par(9 * K + k)) * pixel(1) end
            local log_s = math.max(par(K + C * K + c * K + k), -7)
            local s, v = math.exp(log_s), pixel(c)
            local upper, lower = (v + half - mean) / s, (v - half - mean) / s
            if v == -1 then -- the lowest level takes all the mass below its upper edge
              lp = lp + log_sigmoid(upper)
              used.lowest = used.lowest + 1
            elseif v == 1 then -- the highest all the mass above its lower edge
              lp = lp + log_sigmoid(-lower)
              used.highest = used.highest + 1
            else
              local mass = sigmoid(upper) - sigmoid(lower)
              if mass > 1e-5 then
                lp = lp + math.log(mass)
                used.mass = used.mass + 1
              else -- the logistic density at the bin's centre times the bin's width
                local t = math.abs(v - mean) / s
                lp = lp + (-t - log_s - 2 * math.log(1 + math.exp(-t))) + math.log(2 / (bins - 1))
                used.density = used.density + 1
              end
            end
          end
          comp[k + 1] = lp
        end
        local mc = -math.huge
        for _, lp in ipairs(comp) do mc = math.max(mc, lp) end
        local sc = 0
        for _, lp in ipairs(comp) do sc = sc + math.exp(lp - mc) end
        out[#out + 1] = -(mc + math.log(sc))
      end
    end
  end
  return out, used
end

-- Random params spread over every branch: log-scales from below the clamp (-7.5) to
-- wide (1.5), means over [-1.2, 1.2], sharp and flat mixture weights.
local function random_params(N, C, K, H, W)
  return make_params(N, C, K, H, W, function(kind)
    if kind == 'logit' then return uniform(-3, 3) end
    if kind == 'mean' then return uniform(-1.2, 1.2) end
    if kind == 'log_scale' then return uniform(-7.5, 1.5) end
    return uniform(-2, 2)
  end)
end

-- x with the first row of every image at level 0 (x = -1), the last at 255 (x = 1).
local function random_x(N, C, H, W)
  return make_x(N, C, H, W, function(_, _, i)
    if i == 0 then return 0 end
    if i == H - 1 then return 255 end
    return math.random(0, 255)
  end)
end

describe('discretized_logistic_mixture: values', function()
  before_each(function() math.randomseed(11); ember.manual_seed(11) end)

  for _, C in ipairs({ 1, 3 }) do
    it(('equals the per-pixel Lua reference on random params, C = %d, every branch'):format(C), function()
      local N, K, H, W = 3, 4, 6, 5
      local params, x = random_params(N, C, K, H, W), random_x(N, C, H, W)
      local want, used = reference(params, x, K)
      for _, b in ipairs({ 'lowest', 'highest', 'mass', 'density' }) do
        assert(used[b] > 0, 'the random case never scores a sub-pixel by ' .. b)
      end
      local got = dmol(params, x, { reduction = 'none' })
      assert.are.same({ N, H, W }, got:shape())
      got = flat(got)
      assert.are.equal(#want, #got)
      for i = 1, #want do close(got[i], want[i], 1e-5, 'position ' .. i) end
      -- nr_mix given explicitly gives the same
      local again = flat(dmol(params, x, { reduction = 'none', nr_mix = K }))
      assert.are.same(got, again)
    end)
  end

  it('gives the same for non-contiguous params and x (NHWC permuted), and for 1 x 1 images', function()
    local N, C, K, H, W = 3, 3, 2, 5, 3
    local params, x = random_params(N, C, K, H, W), random_x(N, C, H, W)
    local want = flat(dmol(params, x, { reduction = 'none' }))
    -- the same values stored channels-last, viewed as NCHW
    local p_nhwc = params:permute(1, 3, 4, 2):contiguous():permute(1, 4, 2, 3)
    local x_nhwc = x:permute(1, 3, 4, 2):contiguous():permute(1, 4, 2, 3)
    assert.is_false(p_nhwc:is_contiguous())
    assert.are.same(want, flat(dmol(p_nhwc, x_nhwc, { reduction = 'none' })))
    local a, b = params:clone():requires_grad(), p_nhwc:detach():requires_grad()
    dmol(a, x, { reduction = 'sum' }):backward()
    dmol(b, x_nhwc, { reduction = 'sum' }):backward()
    assert.are.equal(0, (a.grad - b.grad):abs():max():item())
    -- one 1 x 1 image
    local one = flat(dmol(params:narrow(3, 2, 1):narrow(4, 3, 1):narrow(1, 2, 1),
      x:narrow(3, 2, 1):narrow(4, 3, 1):narrow(1, 2, 1), { reduction = 'none' }))
    assert.are.same({ want[(1 * H + 1) * W + 2 + 1] }, one)
  end)

  it('the tiny-mass branch: sharp components far from the pixel, and very wide ones', function()
    -- one component each; log-scales -6 (pixel 0.3 away: ~120 scales), -7 and below
    -- (clamped), 6.5 (a bin holds ~5e-6 of the mass) and a pixel 2000 scales away
    local cases = { { -6, 0.3, 0.0 }, { -7, -0.5, 0.2 }, { -9, 0.0, -0.5 }, { 6.5, 0.1, 0.0 }, { -7, 2.0, 0.2 } }
    local N = #cases
    local params = make_params(N, 1, 1, 1, 1, function(kind, _, _, n)
      local c = cases[n + 1]
      if kind == 'logit' then return 0 end
      if kind == 'mean' then return c[2] end
      return c[1]
    end)
    local x = make_x(N, 1, 1, 1, function(_, n) return math.floor((cases[n + 1][3] + 1) * 127.5 + 0.5) end)
    local want, used = reference(params, x, 1)
    assert.are.equal(N, used.density)
    local got = flat(dmol(params, x, { reduction = 'none' }))
    for i = 1, N do
      assert.is_true(got[i] < math.huge, 'finite')
      close(got[i], want[i], 1e-5, 'case ' .. i)
    end
    -- with 16 levels the bin is 2/15 wide: log(7.5), not log(127.5), converts the density
    local x16 = make_x(N, 1, 1, 1, function(_, n) return math.floor((cases[n + 1][3] + 1) * 7.5 + 0.5) end, 16)
    local want16, used16 = reference(params, x16, 1, 16)
    assert.is_true(used16.density >= 3)
    local got16 = flat(dmol(params, x16, { reduction = 'none', bins = 16 }))
    for i = 1, N do close(got16[i], want16[i], 1e-5, 'bins 16, case ' .. i) end
  end)

  it('is finite at the edges with sharp components on the other side', function()
    -- x = -1 with its component's mean at 1 and scale e^-7: log CDF of ~ -2190
    local params = make_params(2, 1, 2, 1, 1, function(kind, _, k, n)
      if kind == 'logit' then return k == 0 and 5 or -5 end
      if kind == 'mean' then return n == 0 and 1 or -1 end
      return -7
    end)
    local x = make_x(2, 1, 1, 1, function(_, n) return n == 0 and 0 or 255 end)
    local want = reference(params, x, 2)
    assert.is_true(want[1] > 2000 and want[2] > 2000)
    local got = flat(dmol(params, x, { reduction = 'none' }))
    for i = 1, 2 do close(got[i], want[i], 1e-5) end
  end)

  it("the probabilities of all 256 values of a grey pixel sum to 1", function()
    -- sharp (scale e^-4, ~2 bins), wide and edge-hugging components
    local comps = { { 0.5, 0.1, -4 }, { 1.2, 0.97, -3 }, { -0.7, -0.4, -1 }, { 0, -1.05, -5 } }
    local K = #comps
    local params = make_params(256, 1, K, 1, 1, function(kind, _, k)
      local c = comps[k + 1]
      if kind == 'logit' then return c[1] end
      if kind == 'mean' then return c[2] end
      return c[3]
    end)
    local x = make_x(256, 1, 1, 1, function(_, n) return n end)
    local nll = flat(dmol(params, x, { reduction = 'none' }))
    local total = 0
    for _, v in ipairs(nll) do total = total + math.exp(-v) end
    assert(math.abs(total - 1) < 1e-4, ('sum of probabilities %.8f'):format(total))
  end)

  it("the probabilities of all 8^3 values of an RGB pixel sum to 1 (bins = 8)", function()
    local K, bins = 3, 8
    local vals = {}
    local function val(kind, c, k)
      local key = kind .. c .. k
      if not vals[key] then
        if kind == 'logit' then vals[key] = uniform(-1, 1)
        elseif kind == 'mean' then vals[key] = uniform(-0.6, 0.6)
        elseif kind == 'log_scale' then vals[key] = uniform(-2, -0.5)
        else vals[key] = uniform(-1.5, 1.5) end
      end
      return vals[key]
    end
    local all = bins * bins * bins
    local params = make_params(all, 3, K, 1, 1, function(kind, c, k) return val(kind, c, k) end)
    -- position n holds the colour (r, g, b) = the digits of n in base 8
    local x = make_x(all, 3, 1, 1, function(c, n) return (n // math.tointeger(bins ^ c)) % bins end, bins)
    local nll = flat(dmol(params, x, { reduction = 'none', bins = bins }))
    local want = reference(params, x, K, bins)
    local total = 0
    for i, v in ipairs(nll) do
      close(v, want[i], 1e-5)
      total = total + math.exp(-v)
    end
    assert(math.abs(total - 1) < 1e-4, ('sum of probabilities %.8f'):format(total))
  end)
end)

describe('discretized_logistic_mixture: reductions', function()
  before_each(function() math.randomseed(12); ember.manual_seed(12) end)

  it("'none' is [N x H x W], 'mean' over N*H*W (the default), 'sum', 'batchmean' = sum / N", function()
    local N, C, K, H, W = 3, 3, 2, 4, 5
    local params, x = random_params(N, C, K, H, W), random_x(N, C, H, W)
    local terms = dmol(params, x, { reduction = 'none' })
    assert.are.same({ N, H, W }, terms:shape())
    local sum = 0
    for _, v in ipairs(flat(terms)) do sum = sum + v end
    close(dmol(params, x, { reduction = 'sum' }):item(), sum, 1e-5)
    close(dmol(params, x):item(), sum / (N * H * W), 1e-5)
    close(dmol(params, x, { reduction = 'mean' }):item(), sum / (N * H * W), 1e-5)
    close(dmol(params, x, { reduction = 'batchmean' }):item(), sum / N, 1e-5)
    -- and through ember.nn.functional, the same function
    assert.is_true(rawequal(ember.nn.functional.discretized_logistic_mixture, dmol))
  end)

  it('bits_per_dim is nats / (C*H*W ln 2), from a count or an image batch', function()
    local N, C, K, H, W = 2, 3, 2, 4, 4
    local params, x = random_params(N, C, K, H, W), random_x(N, C, H, W)
    local nats = dmol(params, x, { reduction = 'batchmean' })
    local bpd = losses.bits_per_dim(nats, x)
    assert.is_true(ember.is_tensor(bpd))
    close(bpd:item(), nats:item() / (C * H * W * math.log(2)), 1e-6)
    close(losses.bits_per_dim(3072 * math.log(2) * 3.5, 3072), 3.5, 1e-12)
  end)
end)

describe('discretized_logistic_mixture: gradients', function()
  before_each(function() math.randomseed(13); ember.manual_seed(13) end)

  -- Params whose every sub-pixel's bin mass stays well above 1e-5 under the check's
  -- perturbations (means and pixels within [-0.5, 0.5] or at an edge, scales of
  -- e^-1..1, coefficients tanh(+-0.5)), log-scales above the clamp.
  local function smooth_params(N, C, K, H, W)
    return make_params(N, C, K, H, W, function(kind)
      if kind == 'logit' then return uniform(-1.5, 1.5) end
      if kind == 'mean' then return uniform(-0.5, 0.5) end
      if kind == 'log_scale' then return uniform(-1, 0) end
      return uniform(-0.5, 0.5)
    end)
  end
  local function smooth_x(N, C, H, W)
    return make_x(N, C, H, W, function(_, _, i, j)
      if i == 0 and j == 0 then return 0 end         -- an edge pixel at -1
      if i == H - 1 and j == W - 1 then return 255 end -- and one at 1
      return math.random(64, 191)
    end)
  end

  for _, C in ipairs({ 1, 3 }) do
    it(('passes the gradient check in params, C = %d, in every reduction'):format(C), function()
      local N, K, H, W = 2, C == 1 and 3 or 2, 2, 3
      local p = smooth_params(N, C, K, H, W):requires_grad()
      local x = smooth_x(N, C, H, W)
      local _, used = reference(p:detach(), x, K)
      assert.is_true(used.lowest > 0 and used.highest > 0 and used.mass > 0)
      assert.are.equal(0, used.density)
      for _, r in ipairs(REDUCTIONS) do
        local ok, msg = ember.gradcheck(function(a) return dmol(a, x, { reduction = r }) end, { p })
        assert(ok, r .. ': ' .. tostring(msg))
      end
    end)
  end

  it('passes the gradient check in the tiny-mass branch', function()
    local cases = { { -5, 0.3, 0.0 }, { -6, -0.4, 0.1 }, { 6.5, 0.0, 0.2 } }
    local p = make_params(#cases, 1, 1, 1, 1, function(kind, _, _, n)
      local c = cases[n + 1]
      if kind == 'logit' then return 0.3 end
      if kind == 'mean' then return c[2] end
      return c[1]
    end):requires_grad()
    local x = make_x(#cases, 1, 1, 1, function(_, n) return math.floor((cases[n + 1][3] + 1) * 127.5 + 0.5) end)
    local _, used = reference(p:detach(), x, 1)
    assert.are.equal(#cases, used.density)
    local ok, msg = ember.gradcheck(function(a) return dmol(a, x, { reduction = 'none' }) end, { p })
    assert(ok, msg)
  end)

  it('is zero in a log-scale below the clamp at -7, and the check agrees', function()
    -- one RGB component whose G log-scale (-8) is clamped to -7; G's mean lies ~330
    -- scales from the pixel, so G is scored by the density at the bin centre, linear in
    -- the mean there (central differences are exact), and widening the scale would
    -- raise the likelihood by ~330 nats per unit of log-scale: only the clamp makes it 0
    local C, K = 3, 1
    local p = make_params(2, C, K, 1, 2, function(kind, c)
      if kind == 'logit' then return 0 end
      if kind == 'mean' then return c == 1 and 0.3 or 0 end
      if kind == 'log_scale' then return c == 1 and -8 or -1 end
      return 0.2
    end):requires_grad()
    local x = make_x(2, C, 1, 2, function() return 128 end)
    local _, used = reference(p:detach(), x, K)
    assert.are.equal(4, used.density) -- G at the 4 positions
    dmol(p, x, { reduction = 'sum' }):backward()
    local g = p.grad
    -- the log-scale of channel G (c = 1) sits at K + C*K + 1*K (0-based)
    local at_g = K + C * K + K + 1
    assert.are.equal(0, g:narrow(2, at_g, 1):abs():max():item())
    -- the other log-scales do receive a gradient (an all-zero backward would pass the line above)
    assert.is_true(g:narrow(2, at_g - 1, 1):abs():max():item() > 1e-3)
    assert.is_true(g:narrow(2, at_g + 1, 1):abs():max():item() > 1e-3)
    local ok, msg = ember.gradcheck(function(a) return dmol(a, x, { reduction = 'sum' }) end, { p })
    assert(ok, msg)
    -- the loss is flat below the clamp, and not above it
    local function with_g_log_scale(v)
      local q = p:detach():clone()
      q:narrow(2, at_g, 1):fill_(v)
      return dmol(q, x, { reduction = 'sum' }):item()
    end
    close(with_g_log_scale(-7.5), with_g_log_scale(-8), 1e-7)
    assert.is_true(with_g_log_scale(-6.5) < with_g_log_scale(-7) - 100)
    -- at -7 itself the gradient passes (as clamp's at its bound): about -330 per position
    local at = p:detach():clone()
    at:narrow(2, at_g, 1):fill_(-7)
    at:requires_grad()
    dmol(at, x, { reduction = 'sum' }):backward()
    assert.is_true(at.grad:narrow(2, at_g, 1):max():item() < -300)
  end)

  it('the gradient check fails when the backward is broken', function()
    local p = smooth_params(1, 3, 2, 2, 2):requires_grad()
    local x = smooth_x(1, 3, 2, 2)
    ember._debug_break_backward('discretized_logistic_mixture')
    local ok, msg = ember.gradcheck(function(a) return dmol(a, x) end, { p })
    ember._debug_break_backward()
    assert.is_false(ok)
    assert.truthy(tostring(msg):find('analytic', 1, true), msg)
    assert.is_true((ember.gradcheck(function(a) return dmol(a, x) end, { p })))
  end)

  it('create_graph gives the same first gradient; a second derivative is refused', function()
    local p = smooth_params(2, 3, 2, 2, 2):requires_grad()
    local x = smooth_x(2, 3, 2, 2)
    dmol(p, x):backward()
    local plain = p.grad:clone()
    local g = ember.grad(dmol(p, x), { p }, { create_graph = true })[1]
    assert.is_true(g:needs_grad())
    assert.are.equal(0, (g - plain):abs():max():item())
    expect_error('discretized_logistic_mixture: second derivatives are not implemented',
      function() (g * g):sum():backward() end)
    expect_error('second derivatives are not implemented', ember.gradgradcheck, function(a) return dmol(a, x) end, { p })
  end)

  it('gives the same loss and gradient bit for bit at 1 and 2 threads (parallel sizes)', function()
    local before = ember.get_num_threads()
    local N, C, K, H, W = 2, 3, 5, 40, 40
    local p = ember.randn(N, 10 * K, H, W):requires_grad()
    local x = ember.randint(0, 256, { N, C, H, W }) / 127.5 - 1
    local results = {}
    for _, t in ipairs({ 1, 2 }) do
      ember.set_num_threads(t)
      p.grad = nil
      local l = dmol(p, x, { reduction = 'none' })
      l:sum():backward()
      results[t] = { l, p.grad:clone() }
    end
    ember.set_num_threads(before)
    assert.are.equal(0, (results[1][1] - results[2][1]):abs():max():item())
    assert.are.equal(0, (results[1][2] - results[2][2]):abs():max():item())
    assert.is_true(results[1][2]:abs():max():item() > 0)
  end)
end)

describe('sample_discretized_logistic_mixture', function()
  before_each(function() math.randomseed(14); ember.manual_seed(14) end)

  it('gives the same samples for a seed, at 1 and 2 threads, in [-1, 1], shaped [N x C x H x W]', function()
    local before = ember.get_num_threads()
    -- wide log-scales (up to 2) so that many draws are clamped to the edges
    local p = ember.randn(3, 50, 40, 40) * 2
    ember.set_num_threads(1)
    ember.manual_seed(5)
    local a = sample(p, { channels = 3 })
    ember.set_num_threads(2)
    ember.manual_seed(5)
    local b = sample(p, { nr_mix = 5 })
    ember.manual_seed(6)
    local c = sample(p, { channels = 3 })
    ember.set_num_threads(before)
    assert.are.same({ 3, 3, 40, 40 }, a:shape())
    assert.are.equal(0, (a - b):abs():max():item())
    assert.is_true((a - c):abs():max():item() > 0.1)
    assert.is_true(a:min():item() >= -1 and a:max():item() <= 1)
    assert.are.equal(-1, a:min():item())
    assert.are.equal(1, a:max():item())
    -- a grey mixture: [N x 1 x H x W]
    assert.are.same({ 3, 1, 40, 40 }, sample(ember.randn(3, 6, 40, 40), { channels = 1 }):shape())
  end)

  it('sits at the dominant component\'s mean when its scale is tiny, RGB coefficients applied', function()
    local K, N, H, W = 3, 4, 8, 8
    local means = { { 0.3, -0.2, 0.5 }, { 0.9, 0.9, 0.9 }, { -0.9, -0.9, -0.9 } }
    local coef = { 0.4, -0.6, 0.8 } -- raw, tanh-squashed by the model
    local p = make_params(N, 3, K, H, W, function(kind, c, k)
      if kind == 'logit' then return k == 0 and 30 or 0 end -- component 1 has all but e^-30 of the weight
      if kind == 'mean' then return means[k + 1][c + 1] end
      if kind == 'log_scale' then return -9 end          -- clamped to -7: scale 9.1e-4
      return coef[c + 1]
    end)
    local x = sample(p, { channels = 3 })
    local r, g, b = x:select(2, 1), x:select(2, 2), x:select(2, 3)
    -- the uniforms are clamped to [1e-5, 1 - 1e-5], so a draw lies within
    -- e^-7 * log((1 - 1e-5) / 1e-5) = 0.0105 of its mean
    local bound = math.exp(-7) * math.log((1 - 1e-5) / 1e-5) + 1e-6
    local mr = means[1][1]
    local mg = g * 0 + means[1][2] + r * tanh(coef[1])
    local mb = b * 0 + means[1][3] + r * tanh(coef[2]) + g * tanh(coef[3])
    assert.is_true((r - mr):abs():max():item() <= bound)
    assert.is_true((g - mg):abs():max():item() <= bound)
    assert.is_true((b - mb):abs():max():item() <= bound)
    assert.is_true((r - mr):abs():max():item() > 1e-4) -- continuous, not rounded
    -- quantized to 64 levels (half a bin 1/63 > 0.0105): exactly the level at the mean
    local q = make_params(N, 3, K, H, W, function(kind, c, k)
      if kind == 'logit' then return k == 0 and 30 or 0 end
      if kind == 'mean' then return ({ 10, 40, 63 })[c + 1] * 2 / 63 - 1 end
      if kind == 'log_scale' then return -9 end
      return 0
    end)
    local xq = sample(q, { channels = 3, quantize = true, bins = 64 })
    for c, level in ipairs({ 10, 40, 63 }) do
      local want = level * 2 / 63 - 1
      assert.is_true((xq:select(2, c) - want):abs():max():item() < 1e-6)
    end
  end)

  it('picks components with the frequencies of the mixture weights', function()
    local w = { 0.2, 0.3, 0.5 }
    local centres = { -0.6, 0, 0.6 }
    local N, H, W = 20, 32, 32
    local p = make_params(N, 1, 3, H, W, function(kind, _, k)
      if kind == 'logit' then return math.log(w[k + 1]) + 1.7 end -- any shift of the logits
      if kind == 'mean' then return centres[k + 1] end
      return -7
    end)
    local x = flat(sample(p, { channels = 1 }))
    local counts = { 0, 0, 0 }
    for _, v in ipairs(x) do
      local best, bk = math.huge, 0
      for k, c in ipairs(centres) do
        if math.abs(v - c) < best then best, bk = math.abs(v - c), k end
      end
      assert.is_true(best < 0.011)
      counts[bk] = counts[bk] + 1
    end
    for k = 1, 3 do
      local f = counts[k] / #x
      -- 20480 draws: one standard deviation is ~0.0035
      assert(math.abs(f - w[k]) < 0.015, ('component %d: frequency %.4f, weight %.2f'):format(k, f, w[k]))
    end
  end)

  it('quantized draws follow the probabilities the loss gives (RGB, bins = 4)', function()
    local K, bins = 2, 4
    local params_one = make_params(1, 3, K, 1, 1, function(kind, _, k)
      if kind == 'logit' then return ({ 0.4, -0.4 })[k + 1] end
      if kind == 'mean' then return uniform(-0.7, 0.7) end
      if kind == 'log_scale' then return uniform(-1.5, -0.7) end
      return uniform(-1.2, 1.2)
    end)
    -- the loss's probability of each of the 64 colours
    local all = bins * bins * bins
    local x_all = make_x(all, 3, 1, 1, function(c, n) return (n // math.tointeger(bins ^ c)) % bins end, bins)
    local probs = flat((-dmol(params_one:expand(all, 10 * K, 1, 1), x_all, { reduction = 'none', bins = bins })):exp())
    local total = 0
    for _, v in ipairs(probs) do total = total + v end
    close(total, 1, 1e-4)
    -- 40000 draws
    local M = 40000
    local draws = sample(params_one:expand(M, 10 * K, 1, 1), { channels = 3, quantize = true, bins = bins })
    local levels = flat(((draws + 1) * (bins - 1) / 2):round())
    local counts = {}
    for n = 0, all - 1 do counts[n] = 0 end
    for m = 0, M - 1 do
      local code = 0
      for c = 0, 2 do
        local l = levels[m * 3 + c + 1]
        assert.is_true(l == math.floor(l) and l >= 0 and l < bins)
        code = code + math.tointeger(l) * math.tointeger(bins ^ c)
      end
      counts[code] = counts[code] + 1
    end
    for n = 0, all - 1 do
      local pn, f = probs[n + 1], counts[n] / M
      local sd = math.sqrt(pn * (1 - pn) / M)
      assert(math.abs(f - pn) <= 5 * sd + 2e-4,
        ('colour %d: frequency %.5f, probability %.5f (sd %.5f)'):format(n, f, pn, sd))
    end
  end)
end)

describe('discretized_logistic_mixture: bad arguments', function()
  local p1, x1 = ember.zeros(2, 9, 4, 4), ember.zeros(2, 1, 4, 4)
  local p3, x3 = ember.zeros(2, 20, 4, 4), ember.zeros(2, 3, 4, 4)
  local fn = 'discretized_logistic_mixture: '

  it('names the function, the argument and the shapes', function()
    expect_error(fn .. 'bad argument #1 (expected tensor, got nil)', dmol, nil, x1)
    expect_error(fn .. 'bad argument #2 (expected tensor, got number)', dmol, p1, 1)
    expect_error(fn .. 'params [2 x 9 x 16] must be 4-D [N x P x H x W]', dmol, ember.zeros(2, 9, 16), x1)
    expect_error(fn .. 'x [2 x 16] must be 4-D [N x C x H x W]', dmol, p1, ember.zeros(2, 16))
    expect_error(fn .. 'x [2 x 2 x 4 x 4] has C = 2 channels; the mixture models 1 (grey) or 3 (RGB)',
      dmol, p1, ember.zeros(2, 2, 4, 4))
    expect_error(fn .. 'params [2 x 8 x 4 x 4] has P = 8 channels, not a positive multiple of 3 (3*nr_mix for C = 1)',
      dmol, ember.zeros(2, 8, 4, 4), x1)
    expect_error(fn .. 'params [2 x 9 x 4 x 4] has P = 9 channels, not a positive multiple of 10 (10*nr_mix for C = 3)',
      dmol, p1, x3)
    expect_error(fn .. 'params [2 x 20 x 4 x 4] has P = 20 channels, but nr_mix = 3 with C = 3 needs 10*nr_mix = 30',
      dmol, p3, x3, { nr_mix = 3 })
    expect_error(fn .. 'params [2 x 9 x 4 x 4] and x [2 x 1 x 4 x 5] must agree in N, H and W',
      dmol, p1, ember.zeros(2, 1, 4, 5))
    expect_error(fn .. 'params [2 x 9 x 4 x 4] and x [3 x 1 x 4 x 4] must agree in N, H and W',
      dmol, p1, ember.zeros(3, 1, 4, 4))
  end)

  it('refuses x outside [-1, 1], NaN, and an x that requires grad', function()
    local x = ember.zeros(2, 1, 4, 4)
    x[1][1][2][3] = 1.5
    expect_error(fn .. 'x [2 x 1 x 4 x 4] must hold values in [-1, 1] (pixels p as p / 127.5 - 1), got values in [0, 1.5]',
      dmol, p1, x)
    x[1][1][2][3] = 0 / 0
    expect_error(fn .. 'x [2 x 1 x 4 x 4] must hold values in [-1, 1] (pixels p as p / 127.5 - 1), got NaN and values in [0, 0]',
      dmol, p1, x)
    expect_error(fn .. 'x [2 x 1 x 4 x 4] requires grad, but the loss has no gradient in x (it is data: pass x:detach())',
      dmol, p1, ember.zeros(2, 1, 4, 4):requires_grad())
    -- a detached x is fine, and under no_grad the flag does not matter
    assert.is_true(ember.is_tensor(dmol(p1, ember.zeros(2, 1, 4, 4):requires_grad():detach())))
    assert.is_true(ember.is_tensor(ember.no_grad(function() return dmol(p1, ember.zeros(2, 1, 4, 4):requires_grad()) end)))
  end)

  it('checks its options', function()
    expect_error(fn .. "bad reduction 'avg' (expected 'mean', 'sum', 'batchmean' or 'none')", dmol, p1, x1, { reduction = 'avg' })
    expect_error(fn .. "unknown option 'nr_mixes' (expected reduction, nr_mix, bins)", dmol, p1, x1, { nr_mixes = 3 })
    expect_error(fn .. "option 'nr_mix' must be an integer, got 1.5", dmol, p1, x1, { nr_mix = 1.5 })
    expect_error(fn .. "option 'nr_mix' must be in [1, 1048576], got 0", dmol, p1, x1, { nr_mix = 0 })
    expect_error(fn .. "option 'bins' must be in [2, 65536], got 1", dmol, p1, x1, { bins = 1 })
    expect_error(fn .. "option 'bins' must be an integer, got string", dmol, p1, x1, { bins = '256' })
    expect_error(fn .. 'bad argument #3 (expected an options table, got string)', dmol, p1, x1, 'sum')
    -- bins changes the scaling of the message's pixel hint
    local x = ember.full({ 2, 1, 4, 4 }, 2)
    expect_error('(pixels p as p / 1.5 - 1), got values in [2, 2]', dmol, p1, x, { bins = 4 })
  end)

  it('bits_per_dim checks its arguments', function()
    expect_error("bits_per_dim: bad argument #1 'nats' (expected number or tensor, got string)", losses.bits_per_dim, 'x', 3)
    expect_error("bits_per_dim: bad argument #2 'dims' (expected a positive integer C*H*W or an image batch [N x C x H x W], got 0)",
      losses.bits_per_dim, 1, 0)
    expect_error("bits_per_dim: bad argument #2 'dims' (expected a positive integer C*H*W or an image batch [N x C x H x W], got a tensor [3 x 4])",
      losses.bits_per_dim, 1, ember.zeros(3, 4))
    expect_error("bits_per_dim: bad argument #2 'dims' (expected a positive integer C*H*W or an image batch [N x C x H x W], got nil)",
      losses.bits_per_dim, 1)
  end)

  it('the sampler names itself and the shapes', function()
    local s = 'sample_discretized_logistic_mixture: '
    expect_error(s .. 'bad argument #1 (expected tensor, got table)', sample, {})
    expect_error(s .. 'params with P = 30 channels fit both C = 1 and C = 3: give channels (or nr_mix)', sample, ember.zeros(1, 30, 2, 2))
    expect_error(s .. 'params with P = 7 channels fit neither 3*nr_mix (C = 1) nor 10*nr_mix (C = 3)', sample, ember.zeros(1, 7, 2, 2))
    expect_error(s .. 'params with P = 30 channels fit neither 3*nr_mix (C = 1) nor 10*nr_mix (C = 3) for the nr_mix given',
      sample, ember.zeros(1, 30, 2, 2), { nr_mix = 4 })
    expect_error(s .. 'params [1 x 30 x 2 x 2] has P = 30 channels, but nr_mix = 4 with C = 3 needs 10*nr_mix = 40',
      sample, ember.zeros(1, 30, 2, 2), { nr_mix = 4, channels = 3 })
    expect_error(s .. 'params [30 x 2 x 2] must be 4-D [N x P x H x W]', sample, ember.zeros(30, 2, 2), { channels = 3 })
    expect_error(s .. '2 channels; the mixture models 1 (grey) or 3 (RGB)', sample, ember.zeros(1, 30, 2, 2), { channels = 2 })
    expect_error(s .. "option 'quantize' must be a boolean, got string", sample, p3, { quantize = 'yes' })
    expect_error(s .. "unknown option 'reduction' (expected channels, nr_mix, quantize, bins)", sample, p3, { reduction = 'sum' })
    local bad = ember.zeros(2, 20, 4, 4)
    bad[1][3][1][1] = math.huge
    expect_error(s .. 'params [2 x 20 x 4 x 4] hold a non-finite value (inf)', sample, bad)
  end)
end)
