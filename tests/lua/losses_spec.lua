-- losses_spec.lua — ember.losses: a gradient check of every loss in every
-- reduction mode, second derivatives of the fused ones, values against the
-- formulas written out in Lua, stability at extreme logits, and the messages
-- of bad arguments.
local ember = require 'ember'
local losses = require 'ember.losses'

local REDUCTIONS = { 'mean', 'sum', 'batchmean', 'none' }

-- Asserts that fn(...) raises an error whose message contains `text` (plain).
local function expect_error(text, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, 'expected an error containing: ' .. text)
  err = tostring(err)
  assert(err:find(text, 1, true), ('error "%s" does not contain "%s"'):format(err, text))
end

local function grad_ok(fn, inputs)
  local ok, msg = ember.gradcheck(fn, inputs)
  assert(ok, msg)
end

local function leaf(t) return t:detach():clone():requires_grad() end

local function close(a, b, tol)
  tol = tol or 1e-5
  assert(math.abs(a - b) <= tol * (1 + math.abs(b)), ('%.9g vs %.9g'):format(a, b))
end

local function flat(t)
  local v = t:contiguous():view(-1):totable()
  if type(v) == 'number' then v = { v } end
  return v
end

describe('regression losses', function()
  before_each(function() ember.manual_seed(1) end)

  it('mse and l1 match their formulas', function()
    local p, t = ember.tensor { { 1, 2 }, { 3, 4 } }, ember.tensor { { 0, 2.5 }, { 5, 4 } }
    close(losses.mse(p, t):item(), (1 + 0.25 + 4 + 0) / 4)
    close(losses.mse(p, t, { reduction = 'sum' }):item(), 5.25)
    close(losses.l1(p, t):item(), (1 + 0.5 + 2 + 0) / 4)
    local none = flat(losses.l1(p, t, { reduction = 'none' }))
    assert.are.same({ 1, 0.5, 2, 0 }, none)
  end)

  it('mse and l1 pass the gradient check in every reduction', function()
    local p = ember.randn(3, 5):requires_grad()
    -- target at least 0.3 away from pred, so |pred - target| has no kink nearby
    local offset = (ember.rand(3, 5) * 0.7 + 0.3) * ember.sign(ember.randn(3, 5))
    local t = (p:detach() + offset):requires_grad()
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a, b) return losses.mse(a, b, { reduction = r }) end, { p, t })
      grad_ok(function(a, b) return losses.l1(a, b, { reduction = r }) end, { p, t })
    end
  end)

  it('reject bad arguments naming the function', function()
    local a, b = ember.randn(2, 3), ember.randn(3, 2)
    expect_error('mse: pred [2 x 3] and target [3 x 2] must have the same shape', losses.mse, a, b)
    expect_error("l1: bad argument #2 'target' (expected tensor, got number)", losses.l1, a, 1)
    expect_error("mse: bad reduction 'avg' (expected 'mean', 'sum', 'batchmean' or 'none')", losses.mse, a, a, { reduction = 'avg' })
    expect_error("l1: unknown option 'reductoin'", losses.l1, a, a, { reductoin = 'sum' })
    expect_error('mse: bad options (expected a table', losses.mse, a, a, 'sum')
  end)
end)

describe('binary cross-entropy', function()
  before_each(function() ember.manual_seed(2) end)

  it('bce matches its formula and clamps the logs at -100', function()
    local p, t = ember.tensor { 0.2, 0.9, 0, 1 }, ember.tensor { 1, 0, 0, 0 }
    local v = flat(losses.bce(p, t, { reduction = 'none' }))
    close(v[1], -math.log(0.2))
    close(v[2], -math.log(0.1), 1e-4)
    close(v[3], 0)
    close(v[4], 100) -- log(1 - 1) clamped
    local all_wrong = losses.bce(ember.tensor { 0, 1 }, ember.tensor { 1, 0 })
    close(all_wrong:item(), 100)
  end)

  it('bce passes the gradient check in every reduction', function()
    local p = (ember.rand(4, 3) * 0.8 + 0.1):requires_grad()
    local t = ember.rand(4, 3):requires_grad()
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a, b) return losses.bce(a, b, { reduction = r }) end, { p, t })
    end
  end)

  it('bce rejects values outside [0, 1]', function()
    expect_error('bce: prob must hold probabilities in [0, 1], got values in [-0.5, 0.5]',
      losses.bce, ember.tensor { -0.5, 0.5 }, ember.tensor { 0, 1 })
    expect_error('bce: prob [2] and target [3] must have the same shape',
      losses.bce, ember.tensor { 0.5, 0.5 }, ember.tensor { 0, 1, 1 })
  end)

  it('bce_with_logits equals bce of the sigmoid', function()
    local x, t = ember.randn(5, 4), ember.rand(5, 4)
    for _, r in ipairs(REDUCTIONS) do
      local a = flat(losses.bce_with_logits(x, t, { reduction = r }))
      local b = flat(losses.bce(x:sigmoid(), t, { reduction = r }))
      for i = 1, #a do close(a[i], b[i], 1e-5) end
    end
  end)

  it('bce_with_logits passes first and second order gradient checks', function()
    local x, t = ember.randn(3, 4):requires_grad(), ember.rand(3, 4):requires_grad()
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a, b) return losses.bce_with_logits(a, b, { reduction = r }) end, { x, t })
    end
    local ok, msg = ember.gradgradcheck(function(a, b) return losses.bce_with_logits(a, b) end, { x, t })
    assert(ok, msg)
  end)

  it('bce_with_logits backward (fused) equals g * (sigmoid(x) - t) made of ops, bit for bit', function()
    -- first order: one fused pass; with create_graph the op-built form runs instead
    local x = (ember.randn(64, 1000) * 6):requires_grad()
    local t = ember.rand(64, 1000)
    local w = ember.randn(64, 1000)
    local loss = (losses.bce_with_logits(x, t, { reduction = 'none' }) * w):sum()
    loss:backward()
    local want = w * (x:detach():sigmoid() - t)
    assert.equal(0, (x.grad - want):abs():max():item())
    assert.equal(0, x.grad:ne(want):sum():item())
    local gx = ember.grad((losses.bce_with_logits(x, t, { reduction = 'none' }) * w):sum(), { x }, { create_graph = true })[1]
    assert.equal(0, gx:detach():ne(want):sum():item())
  end)

  it('bce_with_logits is finite with finite gradients at logits of +-100', function()
    local x = ember.tensor { 100, -100, 100, -100 }:requires_grad()
    local t = ember.tensor { 1, 0, 0, 1 }
    local l = losses.bce_with_logits(x, t, { reduction = 'none' })
    local v = flat(l)
    close(v[1], 0); close(v[2], 0); close(v[3], 100); close(v[4], 100)
    local s = losses.bce_with_logits(x, t, { reduction = 'sum' })
    assert.is_true(math.abs(s:item()) < math.huge)
    s:backward()
    local g = flat(x.grad)
    assert.are.same({ 0, 0, 1, -1 }, g)
  end)

  it('bce_with_logits rejects bad arguments', function()
    expect_error('bce_with_logits: logits [2 x 3] and target [6] must have the same shape',
      losses.bce_with_logits, ember.randn(2, 3), ember.randn(6))
    expect_error('bce_with_logits: bad argument #1 (expected tensor, got nil)', losses.bce_with_logits, nil, ember.randn(2))
    expect_error("bce_with_logits: bad reduction 'mean ' (expected 'mean', 'sum', 'batchmean' or 'none')",
      losses.bce_with_logits, ember.randn(2), ember.randn(2), { reduction = 'mean ' })
    expect_error("bce_with_logits: unknown option 'weight'",
      losses.bce_with_logits, ember.randn(2), ember.randn(2), { weight = ember.ones(2) })
  end)
end)

describe('cross_entropy and nll', function()
  before_each(function() ember.manual_seed(3) end)

  -- The loss of each row written out naively in Lua (double).
  local function naive(logits, labels, smoothing, weight)
    local rows, losses_out, wsum = logits:totable(), {}, 0
    for i, row in ipairs(rows) do
      local k = #row
      local m = -math.huge
      for _, v in ipairs(row) do m = math.max(m, v) end
      local s = 0
      for _, v in ipairs(row) do s = s + math.exp(v - m) end
      local lse = m + math.log(s)
      local y = labels[i]
      local wy = weight and weight[y] or 1
      local smooth = 0
      for j, v in ipairs(row) do smooth = smooth + (weight and weight[j] or 1) * (lse - v) end
      losses_out[i] = (1 - smoothing) * wy * (lse - row[y]) + smoothing / k * smooth
      wsum = wsum + wy
    end
    return losses_out, wsum
  end

  local cases = {
    { n = 1, k = 1 }, { n = 1, k = 7 }, { n = 6, k = 5, smoothing = 0.1 },
    { n = 9, k = 3, weight = { 0.5, 2, 1 } }, { n = 4, k = 6, smoothing = 0.3, weight = { 1, 2, 3, 4, 5, 6 } },
  }

  it('matches a naive Lua computation (reductions, smoothing, weights, transposed logits)', function()
    for _, c in ipairs(cases) do
      for _, transposed in ipairs { false, true } do
        local logits = transposed and ember.randn(c.k, c.n):t() or ember.randn(c.n, c.k)
        local labels = {}
        for i = 1, c.n do labels[i] = ((i * 7) % c.k) + 1 end
        local per, wsum = naive(logits, labels, c.smoothing or 0, c.weight)
        local opts = { label_smoothing = c.smoothing, weight = c.weight and ember.tensor(c.weight) }
        opts.reduction = 'none'
        local got = flat(losses.cross_entropy(logits, ember.tensor(labels), opts))
        local total = 0
        for i = 1, c.n do close(got[i], per[i]); total = total + per[i] end
        opts.reduction = 'sum'
        close(losses.cross_entropy(logits, labels, opts):item(), total)
        opts.reduction = nil -- the default, 'mean'
        close(losses.cross_entropy(logits, labels, opts):item(), total / wsum)
      end
    end
  end)

  it('passes the gradient check in every reduction, with smoothing and weights', function()
    local x = ember.randn(4, 5):requires_grad()
    local labels = ember.tensor { 2, 5, 1, 2 }
    local w = ember.tensor { 1, 0.5, 2, 1.5, 3 }
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a) return losses.cross_entropy(a, labels, { reduction = r }) end, { x })
      grad_ok(function(a)
        return losses.cross_entropy(a, labels, { reduction = r, label_smoothing = 0.2, weight = w })
      end, { x })
    end
  end)

  it('has a correct second derivative (create_graph)', function()
    local x = ember.randn(3, 4):requires_grad()
    local labels = { 4, 1, 2 }
    local ok, msg = ember.gradgradcheck(function(a)
      return losses.cross_entropy(a, labels, { label_smoothing = 0.1, weight = ember.tensor { 1, 2, 3, 4 } })
    end, { x })
    assert(ok, msg)
  end)

  it('is finite for huge logits', function()
    local x = ember.tensor { { 1000, -1000, 0 }, { -1000, 1000, 999 } }:requires_grad()
    local l = losses.cross_entropy(x, { 1, 3 }, { reduction = 'sum' })
    close(l:item(), 1 + math.log(1 + math.exp(-1)))
    l:backward()
    for _, v in ipairs(flat(x.grad)) do assert.is_true(v == v and math.abs(v) <= 1) end
  end)

  it('nll of log_softmax-like input matches and passes the gradient check', function()
    local x = ember.randn(5, 3)
    local logp = x - x:logsumexp(2, true)
    local labels = { 3, 1, 2, 2, 1 }
    close(losses.nll(logp, labels):item(), losses.cross_entropy(x, labels):item())
    local w = ember.tensor { 2, 1, 0.5 }
    close(losses.nll(logp, labels, { weight = w }):item(), losses.cross_entropy(x, labels, { weight = w }):item())
    local xl = ember.randn(5, 3):requires_grad()
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a) return losses.nll(a, labels, { reduction = r, weight = w }) end, { xl })
    end
  end)

  it('rejects bad labels, shapes and options naming the function', function()
    local x = ember.randn(3, 4)
    expect_error('cross_entropy: label 5 at position 2 is out of range 1..4', losses.cross_entropy, x, { 1, 5, 2 })
    expect_error('cross_entropy: label 0 at position 1 is out of range 1..4', losses.cross_entropy, x, ember.tensor { 0, 1, 2 })
    expect_error('cross_entropy: label 1.5 at position 3 is not an integer', losses.cross_entropy, x, { 1, 2, 1.5 })
    expect_error('cross_entropy: labels [2] must be [3], one per row of logits [3 x 4]', losses.cross_entropy, x, { 1, 2 })
    expect_error('cross_entropy: logits [4] must be 2-D [N x K]', losses.cross_entropy, ember.randn(4), { 1 })
    expect_error("cross_entropy: bad reduction 'avg' (expected 'mean', 'sum', 'batchmean' or 'none')",
      losses.cross_entropy, x, { 1, 2, 3 }, { reduction = 'avg' })
    expect_error("cross_entropy: option 'label_smoothing' must be in [0, 1], got 1.5",
      losses.cross_entropy, x, { 1, 2, 3 }, { label_smoothing = 1.5 })
    expect_error('cross_entropy: weight [3] must be [4], one per class of logits [3 x 4]',
      losses.cross_entropy, x, { 1, 2, 3 }, { weight = ember.ones(3) })
    expect_error("cross_entropy: unknown option 'smoothing' (expected reduction, label_smoothing, weight)",
      losses.cross_entropy, x, { 1, 2, 3 }, { smoothing = 0.1 })
    expect_error('cross_entropy: bad argument #2 (expected a tensor or table of class labels 1..K, got string)',
      losses.cross_entropy, x, 'cat')
    expect_error('nll: label 9 at position 1 is out of range 1..4', losses.nll, x, { 9, 1, 1 })
    expect_error('nll: label 2.5 at position 1 is not an integer', losses.nll, x, { 2.5, 1, 1 })
  end)
end)

describe('Gaussian losses', function()
  before_each(function() ember.manual_seed(4) end)

  it('kl_normal matches the closed form and is 0 for N(0, I)', function()
    local mu, logvar = ember.tensor { { 0.5, -1 }, { 0, 0 } }, ember.tensor { { 0.2, -0.3 }, { 0, 0 } }
    local per = flat(losses.kl_normal(mu, logvar, { reduction = 'none' }):sum(2)) -- per sample
    local function term(m, lv) return -0.5 * (1 + lv - m * m - math.exp(lv)) end
    close(per[1], term(0.5, 0.2) + term(-1, -0.3))
    close(per[2], 0)
    close(losses.kl_normal(mu, logvar, { reduction = 'batchmean' }):item(), per[1] / 2)
    close(losses.kl_normal(mu, logvar):item(), per[1] / 4) -- 'mean': over the 2 x 2 terms
    close(losses.kl_normal(mu, logvar, { reduction = 'sum' }):item(), per[1])
    -- against a second Gaussian: KL(p || p) = 0, and KL(p || N(0, I)) again
    close(losses.kl_normal(mu, logvar, mu, logvar, { reduction = 'sum' }):item(), 0)
    close(losses.kl_normal(mu, logvar, ember.zeros(2, 2), ember.zeros(2, 2), { reduction = 'sum' }):item(), per[1])
  end)

  it('kl_normal passes first and second order gradient checks', function()
    local mu, lv = ember.randn(3, 4):requires_grad(), (ember.randn(3, 4) * 0.5):requires_grad()
    local mu2, lv2 = ember.randn(3, 4):requires_grad(), (ember.randn(3, 4) * 0.5):requires_grad()
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a, b) return losses.kl_normal(a, b, { reduction = r }) end, { mu, lv })
      grad_ok(function(a, b, c, d) return losses.kl_normal(a, b, c, d, { reduction = r }) end, { mu, lv, mu2, lv2 })
    end
    local ok, msg = ember.gradgradcheck(function(a, b) return losses.kl_normal(a, b) end, { mu, lv })
    assert(ok, msg)
  end)

  it('reparameterize draws mu + sigma eps from the shared generator', function()
    local mu, lv = ember.full({ 20000 }, 2), ember.full({ 20000 }, math.log(0.25))
    ember.manual_seed(7)
    local z = losses.reparameterize(mu, lv)
    ember.manual_seed(7)
    local eps = ember.randn(20000)
    local zv, ev = flat(z), flat(eps)
    for i = 1, 50 do close(zv[i], 2 + 0.5 * ev[i]) end
    local st = z:stats()
    assert.is_true(math.abs(st.mean - 2) < 0.02 and math.abs(st.std - 0.5) < 0.02)
  end)

  it('reparameterize passes the gradient check (fixed noise)', function()
    local mu, lv = ember.randn(3, 2):requires_grad(), ember.randn(3, 2):requires_grad()
    grad_ok(function(a, b)
      ember.manual_seed(11)
      return losses.reparameterize(a, b)
    end, { mu, lv })
  end)

  it('gaussian_nll matches the density and passes the gradient check', function()
    local x, mu, lv = ember.tensor { { 1, 2 } }, ember.tensor { { 0.5, 2.5 } }, ember.tensor { { 0.1, -0.2 } }
    local function term(xx, m, l) return 0.5 * (math.log(2 * math.pi) + l + (xx - m) ^ 2 / math.exp(l)) end
    close(losses.gaussian_nll(x, mu, lv, { reduction = 'batchmean' }):item(), term(1, 0.5, 0.1) + term(2, 2.5, -0.2))
    close(losses.gaussian_nll(x, mu, lv):item(), (term(1, 0.5, 0.1) + term(2, 2.5, -0.2)) / 2)
    local xs, ms, ls = ember.randn(3, 4):requires_grad(), ember.randn(3, 4):requires_grad(), ember.randn(3, 4):requires_grad()
    local shared = ember.tensor { 0.3 }:requires_grad() -- one log-variance, broadcast
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a, b, c) return losses.gaussian_nll(a, b, c, { reduction = r }) end, { xs, ms, ls })
      grad_ok(function(a, c) return losses.gaussian_nll(a, ms, c, { reduction = r }) end, { xs, shared })
    end
  end)

  it('log_bernoulli is the negative summed bce_with_logits and passes the gradient check', function()
    local x, logits = ember.rand(3, 5), ember.randn(3, 5)
    local ll = flat(losses.log_bernoulli(x, logits, { reduction = 'none' }):sum(2))
    local b = losses.bce_with_logits(logits, x, { reduction = 'none' }):sum(2)
    local bv = flat(b)
    for i = 1, 3 do close(ll[i], -bv[i]) end
    local xl, ll2 = ember.rand(3, 5):requires_grad(), ember.randn(3, 5):requires_grad()
    for _, r in ipairs(REDUCTIONS) do
      grad_ok(function(a, c) return losses.log_bernoulli(a, c, { reduction = r }) end, { xl, ll2 })
    end
  end)

  it('reject bad arguments naming the function', function()
    local a, b = ember.randn(2, 3), ember.randn(2, 4)
    expect_error('kl_normal: mu [2 x 3] and logvar [2 x 4] must have the same shape', losses.kl_normal, a, b)
    expect_error("kl_normal: bad argument #3 'mu2' (expected tensor, got number)", losses.kl_normal, a, a, 1, a)
    expect_error("kl_normal: bad reduction 'batch'", losses.kl_normal, a, a, { reduction = 'batch' })
    expect_error('reparameterize: mu [2 x 3] and logvar [2 x 4] must have the same shape', losses.reparameterize, a, b)
    expect_error("reparameterize: bad argument #1 'mu' (expected tensor, got nil)", losses.reparameterize, nil, a)
    expect_error('gaussian_nll: x [2 x 3], mu [2 x 4] and logvar [2 x 3] do not broadcast together',
      losses.gaussian_nll, a, b, a)
    expect_error("gaussian_nll: x [3] and the broadcast of mu and logvar [2 x 3] must have the same shape",
      losses.gaussian_nll, ember.randn(3), a, a)
    expect_error('log_bernoulli: x [2 x 3] and logits [2 x 4] must have the same shape', losses.log_bernoulli, a, b)
    expect_error("log_bernoulli: bad reduction 'all'", losses.log_bernoulli, a, a, { reduction = 'all' })
  end)
end)

describe('adversarial losses', function()
  before_each(function() ember.manual_seed(5) end)

  local function softplus(x) return math.log(1 + math.exp(x)) end
  local function mean(t) local s = 0; for _, v in ipairs(t) do s = s + v end; return s / #t end
  local function map(t, f) local r = {}; for i, v in ipairs(t) do r[i] = f(v) end; return r end

  local real_v, fake_v = { 1.5, -0.3, 0.4 }, { -1.2, 0.7, 0.2 }
  local expected = {
    minimax = {
      d = mean(map(real_v, function(v) return softplus(-v) end)) + mean(map(fake_v, softplus)),
      g = -mean(map(fake_v, softplus)),
    },
    non_saturating = {
      d = mean(map(real_v, function(v) return softplus(-v) end)) + mean(map(fake_v, softplus)),
      g = mean(map(fake_v, function(v) return softplus(-v) end)),
    },
    least_squares = {
      d = mean(map(real_v, function(v) return 0.5 * (v - 1) ^ 2 end)) + mean(map(fake_v, function(v) return 0.5 * v * v end)),
      g = mean(map(fake_v, function(v) return 0.5 * (v - 1) ^ 2 end)),
    },
    hinge = {
      d = mean(map(real_v, function(v) return math.max(0, 1 - v) end)) + mean(map(fake_v, function(v) return math.max(0, 1 + v) end)),
      g = -mean(fake_v),
    },
    wasserstein = { d = mean(fake_v) - mean(real_v), g = -mean(fake_v) },
  }

  it('each kind matches its formula', function()
    for kind, want in pairs(expected) do
      local gan = losses.adversarial(kind)
      close(gan.d_loss(ember.tensor(real_v), ember.tensor(fake_v)):item(), want.d)
      close(gan.g_loss(ember.tensor(fake_v)):item(), want.g)
      local summed = losses.adversarial(kind, { reduction = 'sum' })
      close(summed.g_loss(ember.tensor(fake_v)):item(), want.g * 3)
    end
  end)

  it('each kind passes the gradient check for both players, mean and sum', function()
    -- logits kept away from the hinge's kinks at +-1
    local real = ember.tensor { { 1.5 }, { -0.3 }, { 0.4 }, { 2.2 } }:requires_grad()
    local fake = ember.tensor { { -1.4 }, { 0.7 }, { 0.2 }, { -0.6 } }:requires_grad()
    for kind in pairs(expected) do
      for _, r in ipairs { 'mean', 'sum' } do
        local gan = losses.adversarial(kind, { reduction = r })
        grad_ok(function(a, b) return gan.d_loss(a, b) end, { real, fake })
        grad_ok(function(b) return gan.g_loss(b) end, { fake })
      end
    end
  end)

  it('the non-saturating D loss equals BCE-with-logits against 1 and 0', function()
    local real, fake = ember.randn(6, 1), ember.randn(6, 1)
    local gan = losses.adversarial('non_saturating')
    local bce = losses.bce_with_logits(real, ember.ones(6, 1)) + losses.bce_with_logits(fake, ember.zeros(6, 1))
    close(gan.d_loss(real, fake):item(), bce:item())
    close(gan.g_loss(fake):item(), losses.bce_with_logits(fake, ember.ones(6, 1)):item())
  end)

  it('rejects bad arguments', function()
    expect_error("adversarial: unknown kind 'vanilla' (expected 'hinge', 'least_squares', 'minimax', 'non_saturating', 'wasserstein')",
      losses.adversarial, 'vanilla')
    expect_error("adversarial: reduction 'none' is not supported", losses.adversarial, 'hinge', { reduction = 'none' })
    expect_error("adversarial: bad reduction 'avg'", losses.adversarial, 'hinge', { reduction = 'avg' })
    local gan = losses.adversarial('hinge')
    expect_error("hinge d_loss: bad argument #2 'fake_logits' (expected tensor, got nil)", gan.d_loss, ember.randn(2))
    expect_error("hinge g_loss: bad argument #1 'fake_logits' (expected tensor, got number)", gan.g_loss, 3)
  end)
end)
