-- Specs for ember.gan (stabilizers, gradient penalties, mode metrics) and a brief run of
-- each GAN recipe (examples/gan_2d.lua, dcgan.lua, cgan.lua) on a small subset.
local ember = require 'ember'
local nn = require 'ember.nn'
local gan = require 'ember.gan'
local h = require 'tests.lua.helpers.common'
local q, sh, tmpdir, exists, read_lua, raises = h.q, h.sh, h.tmpdir, h.exists, h.read_lua, h.raises

local ROOT = h.ROOT
local EMBER = h.EMBER

local RING = ember.tensor{{2, 0}, {0, 2}, {-2, 0}, {0, -2}}

describe('gan.mode_stats', function()
  it('counts high-quality samples and captured modes on hand-made samples', function()
    local s = ember.tensor{
      {2, 0}, {2.01, 0.01}, {1.95, 0},   -- mode 1: all within 3 * 0.02 = 0.06
      {0, 2.059},                         -- mode 2: just inside
      {0, -2.07},                         -- nearest mode 4, but 0.07 away: not high quality
      {1, 1},                             -- between modes: not high quality
    }
    local m = gan.mode_stats(s, RING, 0.02)
    assert.are.equal(6, m.n)
    assert.is_true(math.abs(m.high_quality - 4 / 6) < 1e-9)
    assert.are.equal(2, m.modes)
    assert.are.same({3, 1, 0, 0}, m.counts)
    -- KL(hist || uniform) with hist (3/4, 1/4, 0, 0) and 4 modes
    local want = 0.75 * math.log(0.75 * 4) + 0.25 * math.log(0.25 * 4)
    assert.is_true(math.abs(m.kl - want) < 1e-9)
  end)

  it('gives every mode, 100% and KL 0 for samples exactly on evenly used centres', function()
    local s = ember.cat({RING, RING, RING}, 1)
    local m = gan.mode_stats(s, RING, 0.02)
    assert.are.equal(4, m.modes)
    assert.are.equal(1, m.high_quality)
    assert.is_true(math.abs(m.kl) < 1e-12)
  end)

  it('a collapsed generator: one mode, and the sigmas option widens the radius', function()
    local s = ember.tensor{{0.1, 2}, {-0.1, 2}, {0, 2.1}}
    local m = gan.mode_stats(s, RING, 0.02)
    assert.are.equal(0, m.modes)
    assert.are.equal(0, m.high_quality)
    assert.are.equal(math.huge, m.kl)
    local wide = gan.mode_stats(s, RING, 0.02, {sigmas = 6})
    assert.are.equal(1, wide.modes)
    assert.are.equal(1, wide.high_quality)
  end)

  it('on the true ring data: all 8 modes and about 98.9% within 3 std', function()
    local pts, _, centers = ember.data.ring(2500, {seed = 3})
    local m = gan.mode_stats(pts, centers, 0.02)
    assert.are.equal(8, m.modes)
    -- P(|N(0, s^2 I_2)| < 3s) = 1 - exp(-4.5) = 0.9889
    assert.is_true(math.abs(m.high_quality - 0.9889) < 0.01, tostring(m.high_quality))
  end)

  it('rejects bad arguments with messages', function()
    raises('mode_stats: samples must be a tensor, got table', gan.mode_stats, {}, RING, 0.02)
    raises('mode_stats: samples [3 x 3] must be [N x 2]', gan.mode_stats, ember.zeros(3, 3), RING, 0.02)
    raises('mode_stats: centers [4] must be [K x 2]', gan.mode_stats, ember.zeros(3, 2), ember.zeros(4), 0.02)
    raises('mode_stats: std must be a number > 0, got -1', gan.mode_stats, ember.zeros(3, 2), RING, -1)
    raises('mode_stats: samples hold NaN', gan.mode_stats, ember.tensor{{0 / 0, 1}}, RING, 0.02)
    raises("mode_stats: unknown option 'sigma'", gan.mode_stats, ember.zeros(3, 2), RING, 0.02, {sigma = 2})
  end)
end)

describe('gan.pack', function()
  it('joins m consecutive samples along the feature dim', function()
    local x = ember.tensor{{1, 2}, {3, 4}, {5, 6}, {7, 8}}
    assert.are.same({{1, 2, 3, 4}, {5, 6, 7, 8}}, gan.pack(x, 2):totable())
    assert.are.same(x:totable(), gan.pack(x, 1):totable())
  end)

  it('joins channels of images: [N x C x H x W] -> [N/m x mC x H x W]', function()
    local x = ember.randn(6, 2, 3, 3)
    local p = gan.pack(x, 3)
    assert.are.same({2, 6, 3, 3}, p:shape())
    -- the second packed sample's channels 3..4 are sample 5's channels
    assert.are.same(x[5]:totable(), p[2]:narrow(1, 3, 2):totable())
  end)

  it('rejects bad arguments', function()
    raises('pack: x must be a tensor, got number', gan.pack, 3, 2)
    raises('pack: m must be a positive integer, got 0', gan.pack, ember.zeros(4, 2), 0)
    raises('pack: batch size 5 of x [5 x 2] is not a multiple of the packing degree 2', gan.pack, ember.zeros(5, 2), 2)
    raises('pack: x [4] must have a batch dim and a feature dim', gan.pack, ember.zeros(4), 2)
  end)
end)

describe('gan.MinibatchStdDev', function()
  it('appends the mean over features of the per-feature batch std', function()
    local x = ember.tensor{{1, 0}, {3, 0}, {5, 4}, {7, 4}}
    local y = gan.MinibatchStdDev{eps = 0}(x)
    assert.are.same({4, 3}, y:shape())
    -- feature stds (population): sqrt(5) and 2; their mean:
    local want = (math.sqrt(5) + 2) / 2
    for i = 1, 4 do assert.is_true(math.abs(y[i][3] - want) < 1e-5) end
    assert.are.same(x:totable(), y:narrow(2, 1, 2):totable())
  end)

  it('groups: sample i belongs to group i mod (N / group_size)', function()
    local x = ember.tensor{{0}, {10}, {2}, {10}}     -- groups {1, 3} and {2, 4}
    local y = gan.MinibatchStdDev{group_size = 2, eps = 0}(x)
    assert.is_true(math.abs(y[1][2] - 1) < 1e-6)
    assert.is_true(math.abs(y[3][2] - 1) < 1e-6)
    assert.is_true(math.abs(y[2][2]) < 1e-6)
  end)

  it('works on images and passes a gradient check', function()
    local m = gan.MinibatchStdDev()
    assert.are.same({4, 3, 2, 2}, m(ember.randn(4, 2, 2, 2)):shape())
    ember.manual_seed(5)
    local x = ember.randn(4, 3):requires_grad()
    assert(ember.gradcheck(function(v) return m(v) end, {x}))
    local xi = ember.randn(4, 2, 2, 2):requires_grad()
    assert(ember.gradcheck(function(v) return m(v) end, {xi}))
  end)

  it('rejects bad arguments', function()
    raises('MinibatchStdDev: group_size must be 0 (whole batch) or an integer >= 2, got 1', gan.MinibatchStdDev, {group_size = 1})
    local m = gan.MinibatchStdDev{group_size = 4}
    raises('MinibatchStdDev: batch size 6 is not a multiple of group_size 4', function() return m(ember.zeros(6, 2)) end)
    raises('MinibatchStdDev: input [6] must be 2-D [N x D] or 4-D [N x C x H x W]', function() return m(ember.zeros(6)) end)
    raises('MinibatchStdDev: input [1 x 2] needs a batch of at least 2', function() return gan.MinibatchStdDev()(ember.zeros(1, 2)) end)
  end)
end)

describe('gan.SpectralNorm', function()
  -- The largest singular value of a matrix w [m x n], from the eigenvalues of w w^T.
  local function top_singular(w)
    local vals = ember.eigh(w:matmul(w:t()))
    return math.sqrt(vals:max():item())
  end

  it('divides the weight by its largest singular value (power iteration converges)', function()
    ember.manual_seed(2)
    local lin = nn.Linear(6, 5)
    local sn = gan.SpectralNorm(lin)
    for _ = 1, 30 do sn(ember.randn(3, 6)) end  -- one power step per training forward
    local want = top_singular(lin.weight:detach())
    assert.is_true(math.abs(sn:sigma():item() - want) < 1e-3 * want)
    local w = ember.no_grad(function() return sn:normalized_weight() end)
    assert.is_true(math.abs(top_singular(w) - 1) < 1e-3)
  end)

  it('keeps u as a buffer, refines it only in training mode', function()
    local sn = gan.SpectralNorm(nn.Linear(4, 3), {n_power_iterations = 2})
    local names = {}
    for name in pairs(sn:state_dict()) do names[#names + 1] = name end
    table.sort(names)
    assert.are.same({'layer.bias', 'layer.weight', 'u'}, names)
    local before = sn.u:clone()
    sn:eval()
    sn(ember.randn(2, 4))
    assert.are.same(before:totable(), sn.u:totable())
    sn:train()
    sn(ember.randn(2, 4))
    assert.are_not.same(before:totable(), sn.u:totable())
  end)

  it('wraps Conv2d (u over out channels) and ConvTranspose2d (u over its second dim)', function()
    local c = gan.SpectralNorm(nn.Conv2d(3, 4, 3, {padding = 1}))
    assert.are.same({2, 4, 5, 5}, c(ember.randn(2, 3, 5, 5)):shape())
    assert.are.equal(4, c.u:size(1))
    local t = gan.SpectralNorm(nn.ConvTranspose2d(3, 6, 4, {stride = 2, padding = 1}))
    assert.are.same({2, 6, 10, 10}, t(ember.randn(2, 3, 5, 5)):shape())
    assert.are.equal(6, t.u:size(1))
    for _ = 1, 30 do t(ember.randn(1, 3, 5, 5)) end
    local w = t.layer.weight:detach():transpose(1, 2):reshape(6, -1)
    assert.is_true(math.abs(t:sigma():item() - top_singular(w)) < 1e-3 * top_singular(w))
  end)

  it('passes gradient checks (eval mode: u fixed) for Linear and Conv2d', function()
    ember.manual_seed(4)
    local sn = gan.SpectralNorm(nn.Linear(3, 2)):eval()
    local x = ember.randn(2, 3):requires_grad()
    local w = sn.layer.weight
    assert(ember.gradcheck(function(v) return sn(v) end, {x, w}))
    local c = gan.SpectralNorm(nn.Conv2d(2, 2, 3)):eval()
    local xc = ember.randn(1, 2, 4, 4):requires_grad()
    assert(ember.gradcheck(function(v) return c(v) end, {xc, c.layer.weight}))
  end)

  it('spectral_norm_all wraps the layers inside Sequentials', function()
    local net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    gan.spectral_norm_all(net)
    assert.is_true(net[1]:is_a(gan.SpectralNorm))
    assert.is_true(net[3]:is_a(gan.SpectralNorm))
    assert.is_true(net[2]:is_a(nn.ReLU))
  end)

  it('rejects bad arguments', function()
    raises('SpectralNorm: layer must be an nn.Linear, nn.Conv2d or nn.ConvTranspose2d, got nn.ReLU', gan.SpectralNorm, nn.ReLU())
    raises('SpectralNorm: layer must be an nn.Linear, nn.Conv2d or nn.ConvTranspose2d, got number', gan.SpectralNorm, 3)
    raises('SpectralNorm: n_power_iterations must be a positive integer, got 0', gan.SpectralNorm, nn.Linear(2, 2), {n_power_iterations = 0})
    raises("SpectralNorm: unknown option 'iters'", gan.SpectralNorm, nn.Linear(2, 2), {iters = 3})
    raises('spectral_norm_all: module must be a module, got number', gan.spectral_norm_all, 1)
  end)
end)

describe('gradient penalties', function()
  -- A small critic built from the given weights (so gradcheck can perturb them):
  -- Linear(2, 3) -> act -> Linear(3, 1).
  local function mlp_critic(act)
    return function(w1, b1, w2)
      return function(x) return act(ember.linear(x, w1, b1)):matmul(w2:t()) end
    end
  end
  local ACTS = {
    relu = function(h) return h:relu() end,
    leaky_relu = function(h) return h:leaky_relu(0.2) end,
    tanh = function(h) return h:tanh() end,
    sigmoid = function(h) return h:sigmoid() end,
    softplus = function(h) return h:softplus() end,
    elu = function(h) return h:elu(1.0) end,
  }
  local names = {}
  for k in pairs(ACTS) do names[#names + 1] = k end
  table.sort(names)

  for _, name in ipairs(names) do
    it('R1 and WGAN-GP have correct gradients through Linear and ' .. name, function()
      ember.manual_seed(11)
      local w1 = ember.randn(3, 2):requires_grad()
      local b1 = ember.randn(3):requires_grad()
      local w2 = ember.randn(1, 3):requires_grad()
      local real = ember.randn(4, 2)
      local fake = ember.randn(4, 2)
      local make = mlp_critic(ACTS[name])
      local ok, msg = ember.gradcheck(function(a, b, c)
        return (gan.r1_penalty(make(a, b, c), real))
      end, {w1, b1, w2})
      assert(ok, msg)
      ok, msg = ember.gradcheck(function(a, b, c)
        ember.manual_seed(3) -- the same interpolation points on every call
        return gan.gradient_penalty(make(a, b, c), real, fake)
      end, {w1, b1, w2})
      assert(ok, msg)
      -- and the second derivatives of the critic itself
      local x = ember.randn(3, 2):requires_grad()
      ok, msg = ember.gradgradcheck(function(v, a, b, c) return make(a, b, c)(v) end, {x, w1, b1, w2})
      assert(ok, msg)
    end)
  end

  it('R1 and WGAN-GP have correct gradients through Conv2d and ConvTranspose2d critics', function()
    ember.manual_seed(12)
    local wc = (ember.randn(2, 1, 3, 3) * 0.5):requires_grad()
    local wt = (ember.randn(2, 1, 2, 2) * 0.5):requires_grad()
    local wo = (ember.randn(1, 1, 4, 4) * 0.5):requires_grad()
    local function critic(a, b, c)
      return function(x)
        local h = ember.conv2d(x, a, nil, {stride = 2, padding = 1}):leaky_relu(0.2)   -- [N x 2 x 3 x 3]
        h = ember.conv_transpose2d(h, b, nil, {stride = 1}):tanh()                       -- [N x 1 x 4 x 4]
        return ember.conv2d(h, c):view(-1)                                                -- [N]
      end
    end
    local real = ember.randn(2, 1, 5, 5)
    local fake = ember.randn(2, 1, 5, 5)
    local ok, msg = ember.gradcheck(function(a, b, c) return (gan.r1_penalty(critic(a, b, c), real)) end, {wc, wt, wo})
    assert(ok, msg)
    ok, msg = ember.gradcheck(function(a, b, c)
      ember.manual_seed(3)
      return gan.gradient_penalty(critic(a, b, c), real, fake)
    end, {wc, wt, wo})
    assert(ok, msg)
    local x = ember.randn(1, 1, 5, 5):requires_grad()
    ok, msg = ember.gradgradcheck(function(v, a, b, c) return critic(a, b, c)(v) end, {x, wc, wt, wo})
    assert(ok, msg)
  end)

  it('R1 through a spectrally normalized critic (eval mode) has correct gradients', function()
    ember.manual_seed(13)
    local D = nn.Sequential(gan.SpectralNorm(nn.Linear(2, 4)), nn.Tanh(), gan.SpectralNorm(nn.Linear(4, 1))):eval()
    local real = ember.randn(3, 2)
    local ok, msg = ember.gradcheck(function() return (gan.r1_penalty(D, real)) end,
      {D[1].layer.weight, D[3].layer.weight})
    assert(ok, msg)
  end)

  it('R1 matches the closed form for a linear critic: ||w||^2', function()
    local w = ember.tensor{{3, 4}}
    local D = function(x) return x:matmul(w:t()) end
    local pen, logits = gan.r1_penalty(D, ember.randn(5, 2))
    assert.is_true(math.abs(pen:item() - 25) < 1e-4)
    assert.are.same({5, 1}, logits:shape())
    -- WGAN-GP of the same critic: (||w|| - 1)^2 = 16
    assert.is_true(math.abs(gan.gradient_penalty(D, ember.randn(5, 2), ember.randn(5, 2)):item() - 16) < 1e-3)
    assert.is_true(math.abs(gan.gradient_penalty(D, ember.randn(5, 2), ember.randn(5, 2), {center = 0}):item() - 25) < 1e-3)
  end)

  it('the penalty trains D: its backward reaches the parameters', function()
    local D = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    local pen = gan.r1_penalty(D, ember.randn(8, 2))
    pen:backward()
    assert.is_truthy(D[1].weight.grad)
    assert.is_truthy(D[3].weight.grad)
  end)

  it('rejects bad arguments', function()
    local D = nn.Linear(2, 1)
    raises('r1_penalty: D must be a module or a function x -> logits, got number', gan.r1_penalty, 1, ember.zeros(2, 2))
    raises('r1_penalty: real must be a tensor, got nil', gan.r1_penalty, D)
    raises('gradient_penalty: real [2 x 2] and fake [3 x 2] must have the same shape', gan.gradient_penalty, D, ember.zeros(2, 2), ember.zeros(3, 2))
    raises('gradient_penalty: fake must be a tensor, got string', gan.gradient_penalty, D, ember.zeros(2, 2), 'x')
    raises("gradient_penalty: unknown option 'centre'", gan.gradient_penalty, D, ember.zeros(2, 2), ember.zeros(2, 2), {centre = 1})
  end)
end)

describe('noise, smoothing, schedules', function()
  it('instance_noise adds N(0, std^2) and is the identity at std 0', function()
    local x = ember.zeros(20000, 1)
    assert.are.equal(x, gan.instance_noise(x, 0))
    local y = gan.instance_noise(x, 0.5)
    assert.is_true(math.abs(y:std():item() - 0.5) < 0.02)
    raises('instance_noise: std must be a number in [0, inf], got -1', gan.instance_noise, x, -1)
    raises('instance_noise: x must be a tensor, got number', gan.instance_noise, 1, 0.1)
  end)

  it('linear_decay goes from start to 0 and stays there', function()
    assert.are.equal(0.4, gan.linear_decay(0.4, 0, 100))
    assert.is_true(math.abs(gan.linear_decay(0.4, 25, 100) - 0.3) < 1e-12)
    assert.are.equal(0, gan.linear_decay(0.4, 150, 100))
    raises('linear_decay: step must be a number in [0, inf], got -1', gan.linear_decay, 1, -1, 10)
  end)

  it('d_loss_bce is the non-saturating D loss, and smoothing moves the real target', function()
    local losses = require 'ember.losses'
    local r, f = ember.randn(6, 1), ember.randn(6, 1)
    local plain = losses.adversarial('non_saturating').d_loss(r, f):item()
    assert.is_true(math.abs(gan.d_loss_bce(r, f):item() - plain) < 1e-5)
    local smooth = gan.d_loss_bce(r, f, {real_label = 0.9}):item()
    local want = losses.bce_with_logits(r, ember.full({6, 1}, 0.9)):item() + losses.bce_with_logits(f, ember.zeros(6, 1)):item()
    assert.is_true(math.abs(smooth - want) < 1e-5)
    raises('d_loss_bce: real_label must be a number in [0, 1], got 1.5', gan.d_loss_bce, r, f, {real_label = 1.5})
  end)
end)

-- Brief runs of the recipes on tiny budgets (seconds each).
describe('gan.sample_images and gan.save_loss_curves', function()
  it('draws n images in chunks, maps [-1, 1] to [0, 1] and puts the mode back', function()
    local nn = require 'ember.nn'
    local G = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh())
    G:eval()
    local seen = {}
    ember.manual_seed(1)
    local x = gan.sample_images(G, 8, function(k, first)
      seen[#seen + 1] = k .. '@' .. first
      return ember.randn(k, 3)
    end, 3)
    assert.are.same({'3@1', '3@4', '2@7'}, seen)
    assert.are.same({8, 4}, x:shape())
    assert.is_true(x:min():item() >= 0 and x:max():item() <= 1)
    assert.is_false(G.training)
    assert.is_nil(x.grad_fn)
    -- chunks are near-equal: never a last chunk of one image, which BatchNorm in
    -- training mode cannot normalise (one value per channel)
    seen = {}
    x = gan.sample_images(G, 7, function(k, first)
      seen[#seen + 1] = k .. '@' .. first
      return ember.randn(k, 3)
    end, 3)
    assert.are.same({'3@1', '2@4', '2@6'}, seen)
    assert.are.same({7, 4}, x:shape())
    seen = {}
    gan.sample_images(G, 501, function(k, first) seen[#seen + 1] = k .. '@' .. first return ember.randn(k, 3) end)
    assert.are.same({'251@1', '250@252'}, seen)
    -- a table of arguments is unpacked into G's call
    local two = {}
    function two:train() end
    setmetatable(two, {__call = function(_, a, b) return a + b end})
    local y = gan.sample_images(two, 2, function(k) return {ember.zeros(k, 1), ember.ones(k, 1)} end)
    assert.are.same({{1}, {1}}, y:totable())
    -- an error inside still puts the mode back
    assert.has_error(function() gan.sample_images(G, 2, function() error('boom', 0) end) end, 'boom')
    assert.is_false(G.training)
    raises('sample_images: G must be a module, got number', gan.sample_images, 3, 2, function() end)
    raises('sample_images: draw must be a function, got nil', gan.sample_images, G, 2)
    raises('sample_images: n must be', gan.sample_images, G, 0, function() end)
  end)

  it('plots d_loss and g_loss from a run folder\'s metrics.csv', function()
    local dir = tmpdir()
    os.execute('mkdir -p ' .. q(dir .. '/samples'))
    gan.save_loss_curves(dir, 'none yet') -- no metrics.csv: nothing
    assert.is_false(exists(dir .. '/samples/losses.png'))
    local f = assert(io.open(dir .. '/metrics.csv', 'w'))
    f:write('step,d_loss,g_loss\n1,1.2,0.7\n2,1.1,0.8\n3,,\n')
    f:close()
    gan.save_loss_curves(dir, 'losses')
    assert.is_true(exists(dir .. '/samples/losses.png'))
    raises('save_loss_curves: run_dir must be a path, got nil', gan.save_loss_curves)
    os.execute('rm -rf ' .. q(dir))
  end)
end)

describe('GAN recipes run briefly', function()
  it('gan_2d: plain and preset=best write metrics, pictures and a result', function()
    local dir = tmpdir()
    for _, args in ipairs({
      '--set epochs=2 --set steps_per_epoch=20 --set batch=64 --set n_eval=500',
      '--set preset=best --set dataset=grid --set epochs=1 --set steps_per_epoch=20 --set batch=64 --set mbstd=true --set spectral_norm=true --set n_eval=500 --set lr_schedule=cosine',
      '--set gp=1 --set loss=wasserstein --set label_smooth=0 --set instance_noise=0.1 --set d_steps=2 --set epochs=1 --set steps_per_epoch=10 --set batch=64 --set n_eval=500 --set plots=false',
    }) do
      local out = dir .. '/run' .. tostring(#args)
      local text, code = sh(('%s run %s/examples/gan_2d.lua %s --out %s --threads 1'):format(q(EMBER), q(ROOT), args, q(out)))
      assert.are.equal(0, code, text)
      local res = read_lua(out .. '/result.lua')
      assert.are.equal('finished', res.status)
      assert.is_number(res.metrics.modes)
      assert.is_true(res.metrics.hq >= 0 and res.metrics.hq <= 1)
      assert.is_true(exists(out .. '/samples/samples.png'))
    end
    os.execute('rm -rf ' .. q(dir))
  end)

  it('gan_2d refuses a batch that is not a multiple of pack', function()
    local dir = tmpdir()
    local text, code = sh(('%s run %s/examples/gan_2d.lua --set pack=3 --set batch=64 --set epochs=1 --set steps_per_epoch=2 --out %s'):format(q(EMBER), q(ROOT), q(dir .. '/r')))
    assert.are_not.equal(0, code)
    assert.is_truthy(text:find('batch 64 must be a multiple of pack 3', 1, true), text)
    os.execute('rm -rf ' .. q(dir))
  end)

  it('cgan with g_ema draws its samples from an average of G that lags the trained G', function()
    local dir = tmpdir()
    local text, code = sh(('%s run %s/examples/cgan.lua --set train_size=96 --set batch=32 --set epochs=1 --set g_ema=0.9 --threads 1 --out %s')
      :format(q(EMBER), q(ROOT), q(dir .. '/c')))
    assert.are.equal(0, code, text)
    local r, params, state = require('ember.recipe').load_run(dir .. '/c')
    assert.are.equal(3, state.ema.updates) -- 96 images in batches of 32
    local w_avg, w = state.G_avg.net[1].weight, state.G.net[1].weight
    assert.is_true((w_avg - w):abs():max():item() > 0)
    -- generate() uses the average: the same draw through G_avg by hand gives the same images
    local labels = ember.tensor{1, 2, 3, 4}
    ember.manual_seed(5)
    local x = r.generate(state, params, 4, labels)
    ember.manual_seed(5)
    state.G_avg:train()
    local by_hand = ember.no_grad(function() return (state.G_avg(ember.randn(4, params.z_dim), labels) + 1) / 2 end)
    assert.is_true((x - by_hand):abs():max():item() < 1e-6)
    -- an average that never averaged (a run saved before g_ema existed) is passed over for G
    state.ema.updates = 0
    ember.manual_seed(5)
    x = r.generate(state, params, 4, labels)
    ember.manual_seed(5)
    state.G:train()
    by_hand = ember.no_grad(function() return (state.G(ember.randn(4, params.z_dim), labels) + 1) / 2 end)
    assert.is_true((x - by_hand):abs():max():item() < 1e-6)
    text, code = sh(('%s run %s/examples/cgan.lua --set g_ema=1 --set train_size=96 --set epochs=1 --threads 1 --out %s')
      :format(q(EMBER), q(ROOT), q(dir .. '/bad')))
    assert.are.equal(2, code, text)
    assert.is_truthy(text:find("--set g_ema=1: g_ema must be < 1 (the recipe's max)", 1, true), text)
    os.execute('rm -rf ' .. q(dir))
  end)

  it('dcgan and cgan train a few steps, write progress pictures, generate images in [0, 1]', function()
    local dir = tmpdir()
    local clf = dir .. '/clf'
    local text, code = sh(('%s run %s/examples/classifier.lua --set train_size=256 --set test_size=100 --set epochs=1 --threads 1 --out %s')
      :format(q(EMBER), q(ROOT), q(clf)))
    assert.are.equal(0, code, text)
    for _, name in ipairs({'dcgan', 'cgan'}) do
      local out = dir .. '/' .. name
      text, code = sh(('%s run %s/examples/%s.lua --set train_size=96 --set batch=32 --set epochs=1 --set log_every=1 --set n_samples=20 --threads 1 --out %s')
        :format(q(EMBER), q(ROOT), name, q(out)))
      assert.are.equal(0, code, text)
      local res = read_lua(out .. '/result.lua')
      assert.are.equal('finished', res.status)
      assert.are.equal(3, res.step)
      assert.is_true(exists(out .. '/samples/losses.png'))
      assert.is_true(exists(out .. (name == 'dcgan' and '/samples/epoch-001.png' or '/samples/classes-001.png')))
      assert.is_true(exists(out .. (name == 'dcgan' and '/samples/interpolation.png' or '/samples/classes.png')))
      local r, params, state = require('ember.recipe').load_run(out)
      local x = r.generate(state, params, 12)
      assert.are.same({12, 1, 28, 28}, x:shape())
      assert.is_true(x:min():item() >= 0 and x:max():item() <= 1)
      -- the sample-quality script ranks it against the training set
      text, code = sh(('%s %s/scripts/quality.lua %s test %s --n 200 --ref-n 300'):format(q(EMBER), q(ROOT), q(clf), q(out)))
      assert.are.equal(0, code, text)
      assert.is_truthy(text:find('| test | test set (real images) | 200 |', 1, true), text)
      assert.is_truthy(text:find('| ' .. out .. ' | ' .. name .. ', epoch 1 | 200 |', 1, true), text)
      assert.is_true(read_lua(out .. '/quality.lua').fd >= 0)
    end
    text, code = sh(('%s %s/scripts/cgan_check.lua %s %s 100'):format(q(EMBER), q(ROOT), q(dir .. '/cgan'), q(clf)))
    assert.are.equal(0, code, text)
    assert.is_truthy(text:find('class agreement: ', 1, true), text)
    local check = read_lua(dir .. '/cgan/cgan_check.lua')
    assert.is_true(check.agreement >= 0 and check.agreement <= 1)
    text, code = sh(('%s %s/scripts/cgan_check.lua %s %s'):format(q(EMBER), q(ROOT), q(dir .. '/dcgan'), q(clf)))
    assert.are_not.equal(0, code)
    assert.is_truthy(text:find('is a run of recipe dcgan, expected cgan', 1, true), text)
    os.execute('rm -rf ' .. q(dir))
  end)
end)
