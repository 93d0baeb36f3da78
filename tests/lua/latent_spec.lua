-- Specs for ember.latent: the normal quantile function, interpolation (linear and
-- spherical), attribute arithmetic, the 2-D manifold grid, dataset codes and the IWAE
-- estimate of -log p(x) (checked against numerical integration), and bad arguments.
local ember = require 'ember'
local latent = require 'ember.latent'

-- The largest absolute difference between two tensors of the same shape.
local function max_diff(a, b) return (a - b):abs():max():item() end

-- The row norms of [N x D] -> Lua list.
local function row_norms(t) return t:square():sum(2):sqrt():totable() end

describe('latent.norm_cdf and norm_ppf', function()
  it('match reference values of the standard normal', function()
    -- references: scipy.stats.norm (double precision)
    local cdf = {
      {0, 0.5}, {1.96, 0.9750021048517795}, {-3, 0.0013498980316300946},
      {-5, 2.866515718791939e-07}, {3.5, 0.9997673709209645}, {-8, 6.22096057427178e-16},
      {1, 0.8413447460685429},
    }
    for _, c in ipairs(cdf) do
      local got = latent.norm_cdf(c[1])
      assert.is_true(math.abs(got - c[2]) <= 1e-14 * math.max(c[2], 1e-300) + 1e-16,
        ('cdf(%g) = %.17g, want %.17g'):format(c[1], got, c[2]))
    end
    local ppf = {
      {0.5, 0}, {0.975, 1.959963984540054}, {0.05, -1.6448536269514729},
      {0.999, 3.090232306167813}, {1e-10, -6.361340902404056}, {0.3, -0.5244005127080407},
    }
    for _, c in ipairs(ppf) do
      local got = latent.norm_ppf(c[1])
      assert.is_true(math.abs(got - c[2]) < 1e-12, ('ppf(%g) = %.17g, want %.17g'):format(c[1], got, c[2]))
    end
  end)

  it('round-trips and is strictly increasing over the whole open interval', function()
    local prev = -math.huge
    for i = 1, 2000 do
      local p = i / 2001
      local x = latent.norm_ppf(p)
      assert.is_true(x > prev, ('ppf not increasing at p = %g'):format(p))
      prev = x
      assert.is_true(math.abs(latent.norm_cdf(x) - p) < 1e-14, ('cdf(ppf(%g)) off'):format(p))
    end
    for _, p in ipairs {1e-15, 1e-8, 0.001, 0.02425, 0.0243, 0.97575, 1 - 1e-9} do
      local back = latent.norm_cdf(latent.norm_ppf(p))
      local rel = math.abs(back - p) / math.min(p, 1 - p)
      assert.is_true(rel < 1e-9, ('relative round-trip error %g at p = %g'):format(rel, p))
    end
    assert.are.equal(latent.norm_ppf(0.25), -latent.norm_ppf(0.75))
  end)

  it('rejects probabilities outside (0, 1) and non-numbers', function()
    for _, p in ipairs {0, 1, -0.5, 2} do
      assert.has_error(function() latent.norm_ppf(p) end,
        ('latent.norm_ppf: p must be a number in (0, 1), got %s'):format(tostring(p)))
    end
    assert.has_error(function() latent.norm_ppf('x') end, 'latent.norm_ppf: p must be a number in (0, 1), got string')
    assert.has_error(function() latent.norm_ppf(0 / 0) end)
    assert.has_error(function() latent.norm_cdf({}) end, 'latent.norm_cdf: x must be a number, got table')
  end)
end)

describe('latent.interpolate', function()
  it('returns [steps x D] for two codes and [N x steps x D] for N pairs, ends included', function()
    local z1, z2 = ember.randn(5), ember.randn(5)
    for _, mode in ipairs {'linear', 'slerp'} do
      local path = latent.interpolate(z1, z2, 7, {mode = mode})
      assert.are.same({7, 5}, path:shape())
      assert.is_true(max_diff(path[1], z1) < 1e-6)
      assert.is_true(max_diff(path[7], z2) < 1e-6)
      local a, b = ember.randn(3, 4), ember.randn(3, 4)
      local paths = latent.interpolate(a, b, 2, {mode = mode})
      assert.are.same({3, 2, 4}, paths:shape())
      assert.is_true(max_diff(paths:select(2, 1), a) < 1e-6)
      assert.is_true(max_diff(paths:select(2, 2), b) < 1e-6)
    end
  end)

  it('linear mode walks the straight line at even steps', function()
    local z1, z2 = ember.tensor{0, 2, -4}, ember.tensor{4, 2, 0}
    local path = latent.interpolate(z1, z2, 5)
    assert.is_true(max_diff(path[3], ember.tensor{2, 2, -2}) < 1e-6)
    assert.is_true(max_diff(path[2], ember.tensor{1, 2, -3}) < 1e-6)
  end)

  it('slerp keeps the length of equal-length codes where the straight line shrinks', function()
    ember.manual_seed(3)
    local a, b = ember.randn(4, 16), ember.randn(4, 16)
    -- give each pair the same length
    b = b / b:square():sum(2, true):sqrt() * a:square():sum(2, true):sqrt()
    local slerp = latent.interpolate(a, b, 9, {mode = 'slerp'})
    local lin = latent.interpolate(a, b, 9)
    local want = row_norms(a)
    for i = 1, 4 do
      local s = row_norms(slerp[i])
      local l = row_norms(lin[i])
      for step = 1, 9 do
        assert.is_true(math.abs(s[step] - want[i]) < 1e-4 * want[i], 'slerp changed the length')
      end
      assert.is_true(l[5] < want[i] * 0.95, 'the linear midpoint should be shorter')
    end
  end)

  it('slerp of orthogonal unit codes passes (e1 + e2) / sqrt 2 and matches latent.slerp', function()
    local e1, e2 = ember.tensor{1, 0, 0}, ember.tensor{0, 1, 0}
    local path = latent.interpolate(e1, e2, 3, {mode = 'slerp'})
    local s = math.sqrt(0.5)
    assert.is_true(max_diff(path[2], ember.tensor{s, s, 0}) < 1e-6)
    local third = latent.slerp(e1, e2, 1 / 3)
    assert.is_true(max_diff(third, ember.tensor{math.cos(math.pi / 6), math.sin(math.pi / 6), 0}) < 1e-6)
    local batch = latent.slerp(ember.stack({e1, e2}), ember.stack({e2, e1}), 0.5)
    assert.are.same({2, 3}, batch:shape())
    assert.is_true(max_diff(batch[2], ember.tensor{s, s, 0}) < 1e-6)
  end)

  it('slerp falls back to the straight line for parallel, opposite and zero codes', function()
    local z = ember.tensor{1, 2, 3}
    for _, other in ipairs {z * 2, -z, ember.zeros(3)} do
      local s = latent.interpolate(z, other, 5, {mode = 'slerp'})
      local l = latent.interpolate(z, other, 5)
      assert.is_true(max_diff(s, l) < 1e-5)
    end
  end)

  it('rejects bad arguments with messages', function()
    local z = ember.randn(4)
    assert.has_error(function() latent.interpolate(1, z, 5) end, 'latent.interpolate: z1 must be a tensor, got number')
    assert.has_error(function() latent.interpolate(z, ember.randn(3), 5) end,
      'latent.interpolate: z1 [4] and z2 [3] must have the same shape')
    assert.has_error(function() latent.interpolate(ember.randn(2, 2, 2), ember.randn(2, 2, 2), 5) end,
      'latent.interpolate: z1 [2 x 2 x 2] must be a code [D] or a batch of codes [N x D]')
    assert.has_error(function() latent.interpolate(z, z, 1) end, 'latent.interpolate: steps must be an integer >= 2, got 1')
    assert.has_error(function() latent.interpolate(z, z, 2.5) end, 'latent.interpolate: steps must be an integer >= 2, got 2.5')
    assert.has_error(function() latent.interpolate(z, z, 3, {mode = 'cubic'}) end,
      "latent.interpolate: mode must be 'linear' or 'slerp', got 'cubic'")
    assert.has_error(function() latent.interpolate(z, z, 3, {steps = 3}) end,
      "latent.interpolate: unknown option 'steps' (expected mode)")
    assert.has_error(function() latent.interpolate(z, z, 3, 'slerp') end,
      'latent.interpolate: bad argument #4 (expected an options table, got string)')
    assert.has_error(function() latent.slerp(z, z, 1.5) end, 'latent.slerp: t must be a number in [0, 1], got 1.5')
  end)
end)

describe('latent.attribute_vector and latent.apply', function()
  local codes = ember.tensor{{1, 0}, {3, 0}, {0, 1}, {0, 3}, {5, 5}}
  local labels = {1, 1, 2, 2, 3}

  it('is the mean code of class a minus that of class b', function()
    local v = latent.attribute_vector(codes, labels, 1, 2)
    assert.is_true(max_diff(v, ember.tensor{2, -2}) < 1e-6)
    local w = latent.attribute_vector(codes, ember.tensor(labels), 3, 1)
    assert.is_true(max_diff(w, ember.tensor{3, 5}) < 1e-6)
    -- moving the mean code of class 2 by the vector lands on the mean of class 1
    local moved = latent.apply(ember.tensor{0, 2}, v)
    assert.is_true(max_diff(moved, ember.tensor{2, 0}) < 1e-6)
  end)

  it('applies one strength or a list of strengths', function()
    local v = ember.tensor{1, -1}
    assert.is_true(max_diff(latent.apply(ember.tensor{0, 0}, v, 2.5), ember.tensor{2.5, -2.5}) < 1e-6)
    local strip = latent.apply(ember.tensor{1, 1}, v, {0, 1, 2})
    assert.are.same({3, 2}, strip:shape())
    assert.is_true(max_diff(strip, ember.tensor{{1, 1}, {2, 0}, {3, -1}}) < 1e-6)
    local batch = latent.apply(ember.zeros(4, 2), v, {0, 1, 2})
    assert.are.same({4, 3, 2}, batch:shape())
    assert.is_true(max_diff(batch:select(1, 3), ember.tensor{{0, 0}, {1, -1}, {2, -2}}) < 1e-6)
    assert.are.same({4, 2}, latent.apply(ember.zeros(4, 2), v):shape())
  end)

  it('rejects bad arguments with messages', function()
    assert.has_error(function() latent.attribute_vector(codes, labels, 1, 7) end,
      'latent.attribute_vector: no codes have label 7')
    assert.has_error(function() latent.attribute_vector(codes, {1, 2}, 1, 2) end,
      'latent.attribute_vector: labels [2] must be [5], one per code')
    assert.has_error(function() latent.attribute_vector(ember.zeros(5), labels, 1, 2) end,
      'latent.attribute_vector: codes [5] must be [N x D]')
    assert.has_error(function() latent.attribute_vector(codes, labels, 'a', 2) end,
      'latent.attribute_vector: class a must be a class number, got string')
    assert.has_error(function() latent.attribute_vector(codes, 'x', 1, 2) end,
      'latent.attribute_vector: labels must be a tensor or a list of class numbers, got string')
    assert.has_error(function() latent.apply(ember.zeros(3), ember.zeros(2)) end,
      'latent.apply: v [2] must be one code [3] like the rows of z [3]')
    assert.has_error(function() latent.apply(ember.zeros(2), ember.zeros(2), 'big') end,
      'latent.apply: alpha must be a number or a list of numbers, got string')
    assert.has_error(function() latent.apply(ember.zeros(2), ember.zeros(2), {1, 'x'}) end,
      'latent.apply: alpha[2] must be a number, got x')
  end)
end)

describe('latent.manifold_grid', function()
  it('decodes an n x n grid of normal quantiles, row-major, z_2 falling down the rows', function()
    local seen
    local images, z = latent.manifold_grid(function(codes)
      seen = codes
      return ember.zeros(codes:size(1), 1, 4, 4)
    end, 5)
    assert.are.same({25, 1, 4, 4}, images:shape())
    assert.are.same({25, 2}, z:shape())
    assert.are.equal(z, seen)
    local rows = z:totable()
    local lo, hi = latent.norm_ppf(0.05), latent.norm_ppf(0.95)
    assert.is_true(math.abs(rows[1][1] - lo) < 1e-6 and math.abs(rows[1][2] - hi) < 1e-6)
    assert.is_true(math.abs(rows[25][1] - hi) < 1e-6 and math.abs(rows[25][2] - lo) < 1e-6)
    assert.is_true(math.abs(rows[13][1]) < 1e-6 and math.abs(rows[13][2]) < 1e-6) -- the centre
    for r = 0, 4 do
      for c = 2, 5 do assert.is_true(rows[r * 5 + c][1] > rows[r * 5 + c - 1][1]) end
    end
    for r = 2, 5 do assert.is_true(rows[(r - 1) * 5 + 1][2] < rows[(r - 2) * 5 + 1][2]) end
  end)

  it('takes a range of probabilities and a model with :decode', function()
    local model = {decode = function(_, codes) return codes * 2 end}
    local images, z = latent.manifold_grid(model, 3, {range = {0.25, 0.75}})
    assert.is_true(max_diff(images, z * 2) < 1e-6)
    assert.is_true(math.abs(z[1][1] - latent.norm_ppf(0.25)) < 1e-6)
  end)

  it('rejects bad arguments with messages', function()
    local id = function(c) return c end
    assert.has_error(function() latent.manifold_grid(id, 1) end, 'latent.manifold_grid: n must be an integer >= 2, got 1')
    assert.has_error(function() latent.manifold_grid(id, 4, {range = {0, 0.9}}) end,
      'latent.manifold_grid: range must be {lo, hi} with 0 < lo < hi < 1 (probabilities), got {0, 0.9}')
    assert.has_error(function() latent.manifold_grid(42, 4) end,
      'latent.manifold_grid: bad argument #1 (expected a decode function or a model with decode, got number)')
    assert.has_error(function() latent.manifold_grid(function() return ember.zeros(3, 2) end, 4) end,
      'latent.manifold_grid: decode must return one image per code (16), got [3 x 2]')
  end)
end)

describe('latent.codes and latent.code_stats', function()
  it('encodes in batches exactly as in one go, passing labels along', function()
    local x = ember.randn(7, 3)
    local enc = function(xb) return xb * 2, xb end
    assert.is_true(max_diff(latent.codes(enc, x, {batch = 3}), x * 2) < 1e-6)
    local model = {encode = function(_, xb, yb) return xb + yb:unsqueeze(2) end}
    local y = ember.arange(7)
    assert.is_true(max_diff(latent.codes(model, x, y, {batch = 2}), x + y:unsqueeze(2)) < 1e-6)
  end)

  it('measures per-dimension mean and (unbiased) std', function()
    local mean, std = latent.code_stats(ember.tensor{{1, 10}, {3, 10}, {5, 10}})
    assert.is_true(max_diff(mean, ember.tensor{3, 10}) < 1e-6)
    assert.is_true(max_diff(std, ember.tensor{2, 0}) < 1e-6)
  end)

  it('rejects bad arguments with messages', function()
    assert.has_error(function() latent.codes('enc', ember.zeros(2, 2)) end,
      'latent.codes: bad argument #1 (expected a encode function or a model with encode, got string)')
    assert.has_error(function() latent.codes(function(x) return x end, ember.zeros(2, 2), ember.zeros(3)) end,
      'latent.codes: y [3] must have one row per sample of x [2 x 2]')
    assert.has_error(function() latent.codes(function() return 1 end, ember.zeros(2, 2)) end,
      'latent.codes: encode must return a tensor of codes, got number')
    assert.has_error(function() latent.code_stats(ember.zeros(1, 3)) end,
      'latent.code_stats: codes [1 x 3] must be [N x D] with N >= 2')
  end)
end)

describe('latent.iwae_nll', function()
  -- A one-dimensional latent model: p(z) = N(0, 1), pixels x_i ~ Bernoulli(sigmoid(w_i z + b_i)).
  local w = ember.tensor{{2.0, -1.5, 0.5, 3.0, -2.5}}
  local b = ember.tensor{0.3, 0.1, -0.2, -1.0, 0.5}
  local x = ember.tensor{{1, 0, 1, 1, 0}}
  local function decode(z) return z:matmul(w) + b end

  -- -log p(x), and the posterior mean and std of z, by the trapezoid rule over z in [-12, 12].
  local function exact()
    local wt, bt, xt = w:totable()[1], b:totable(), x:totable()[1]
    local steps = 40000
    local h, m0, m1, m2 = 24 / steps, 0, 0, 0
    for i = 0, steps do
      local z = -12 + i * h
      local logp = -0.5 * z * z - 0.5 * math.log(2 * math.pi)
      for j = 1, 5 do
        local l = wt[j] * z + bt[j]
        -- log sigmoid(l) or log sigmoid(-l), stably
        local s = xt[j] == 1 and l or -l
        logp = logp - (s > 0 and math.log(1 + math.exp(-s)) or (-s + math.log(1 + math.exp(s))))
      end
      local f = math.exp(logp) * ((i == 0 or i == steps) and 0.5 or 1) * h
      m0, m1, m2 = m0 + f, m1 + f * z, m2 + f * z * z
    end
    local mean = m1 / m0
    return -math.log(m0), mean, math.sqrt(m2 / m0 - mean * mean)
  end

  it('is an upper bound on -log p(x) that tightens with k and converges to it', function()
    ember.manual_seed(7)
    local want, post_mean, post_std = exact()
    local n = 400
    local xs = x:expand{n, 5}
    -- an imperfect proposal: shifted and too wide
    local encode = function(xb)
      return ember.full({xb:size(1), 1}, post_mean + 0.5 * post_std),
             ember.full({xb:size(1), 1}, 2 * math.log(1.5 * post_std))
    end
    local _, k1 = latent.iwae_nll(encode, decode, xs, {k = 1})
    local _, k10 = latent.iwae_nll(encode, decode, xs, {k = 10})
    local per, big = latent.iwae_nll(encode, decode, x:expand{20, 5}, {k = 2000, batch = 5})
    assert.are.same({20}, per:shape())
    assert.is_true(k1 > k10 + 0.01, ('k=1 gave %g, k=10 gave %g'):format(k1, k10))
    assert.is_true(k10 > want - 0.01, ('k=10 gave %g, below the exact %g'):format(k10, want))
    assert.is_true(math.abs(big - want) < 0.005, ('k=2000 gave %g, exact %g'):format(big, want))
  end)

  it('passes labels to a conditional model: one row per sample to encode, k to decode', function()
    local enc_rows, dec_rows
    local model = {
      encode = function(_, xb, yb) enc_rows = yb:size(1); return ember.zeros(xb:size(1), 2), ember.zeros(xb:size(1), 2) end,
      decode = function(_, z, yb) dec_rows = yb:size(1); return ember.zeros(z:size(1), 3) end,
    }
    local nll = latent.iwae_nll(model, model, ember.rand(5, 3), {k = 4, y = ember.arange(5), batch = 2})
    assert.are.same({5}, nll:shape())
    assert.are.equal(1, enc_rows) -- the last chunk holds one sample
    assert.are.equal(4, dec_rows)
    -- logits 0: each pixel costs log 2 whatever x is; KL-free proposal = prior -> exactly 3 log 2
    assert.is_true(max_diff(nll, ember.full({5}, 3 * math.log(2))) < 1e-5)
  end)

  it('takes another prior through log_prior', function()
    local enc = function(xb) return ember.full({xb:size(1), 1}, 0.3), ember.full({xb:size(1), 1}, -0.5) end
    local standard = function(z) return (z:square() + math.log(2 * math.pi)):sum(2) * -0.5 end
    local xs = x:expand{6, 5}
    ember.manual_seed(11)
    local a = latent.iwae_nll(enc, decode, xs, {k = 7})
    ember.manual_seed(11)
    local b = latent.iwae_nll(enc, decode, xs, {k = 7, log_prior = standard})
    ember.manual_seed(11)
    local c = latent.iwae_nll(enc, decode, xs, {k = 7, log_prior = function(z) return standard(z) + 1 end})
    assert.is_true(max_diff(a, b) < 1e-6)
    assert.is_true(max_diff(a - 1, c) < 1e-5) -- a prior e times denser: -log p(x) falls by 1
  end)

  it('rejects bad arguments with messages', function()
    local enc = function(xb) return ember.zeros(xb:size(1), 1), ember.zeros(xb:size(1), 1) end
    assert.has_error(function() latent.iwae_nll(enc, decode, x, {log_prior = 3}) end,
      'latent.iwae_nll: log_prior must be a function, got number')
    assert.has_error(function() latent.iwae_nll(enc, decode, x, {k = 3, log_prior = function() return ember.zeros(2) end}) end,
      'latent.iwae_nll: log_prior must return one log-density per code [3], got [2]')
    assert.has_error(function() latent.iwae_nll(enc, decode, x, {k = 0}) end, 'latent.iwae_nll: k must be an integer >= 1, got 0')
    assert.has_error(function() latent.iwae_nll(enc, decode, ember.zeros(3)) end,
      'latent.iwae_nll: x [3] must be [N x ...] with N >= 1')
    assert.has_error(function() latent.iwae_nll(enc, decode, x, {samples = 3}) end,
      "latent.iwae_nll: unknown option 'samples' (expected k, y, batch, log_likelihood, log_prior)")
    assert.has_error(function() latent.iwae_nll(function(xb) return xb end, decode, x) end,
      'latent.iwae_nll: encode must return two tensors: mu and logvar')
    assert.has_error(function() latent.iwae_nll(enc, function() return ember.zeros(1, 5) end, x, {k = 3}) end,
      'latent.iwae_nll: decode must return one row per code (3), got [1 x 5]')
    assert.has_error(function() latent.iwae_nll(enc, decode, x, {y = ember.zeros(2)}) end,
      'latent.iwae_nll: y [2] must have one row per sample of x [1 x 5]')
  end)
end)

describe('latent.load_run', function()
  it('rejects what is not a trained run folder', function()
    assert.has_error(function() latent.load_run(nil) end, 'latent.load_run: dir must be the path of a run folder, got nil')
    local dir = os.tmpname()
    os.remove(dir)
    assert.has_error(function() latent.load_run(dir) end,
      ('latent.load_run: %s is not a run folder (no config.lua)'):format(dir))
    os.execute('mkdir -p ' .. dir .. ' && echo "return {}" > ' .. dir .. '/config.lua')
    assert.has_error(function() latent.load_run(dir) end,
      ('latent.load_run: %s has no checkpoint yet (the run stopped before its first save)'):format(dir))
    os.execute('rm -rf ' .. dir)
  end)
end)
