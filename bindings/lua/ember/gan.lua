-- ember.gan — GAN stabilizers and the mode-collapse metrics, as small composable pieces.
--
--   local gan = require 'ember.gan'
--   local D = nn.Sequential(gan.SpectralNorm(nn.Linear(2, 128)), nn.ReLU(),
--                           gan.MinibatchStdDev(), gan.SpectralNorm(nn.Linear(129, 1)))
--   local packed = gan.pack(x, 4)                     -- PacGAN: [N x D] -> [N/4 x 4D]
--   local r1, real_logits = gan.r1_penalty(D, real)   -- E ||grad_x D(x)||^2 on real data
--   local gp = gan.gradient_penalty(D, real, fake)    -- WGAN-GP: E (||grad D(x_hat)|| - 1)^2
--   local noisy = gan.instance_noise(x, 0.1)          -- x + N(0, 0.1^2)
--   local d_loss = gan.d_loss_bce(real_logits, fake_logits, {real_label = 0.9})  -- smoothing
--   local m = gan.mode_stats(samples, centers, 0.02)  -- {high_quality =, modes =, ...}
--   local imgs = gan.sample_images(G, 1000, function(k) return ember.randn(k, 100, 1, 1) end)
--   gan.save_loss_curves('runs/dcgan', 'DCGAN losses')  -- samples/losses.png from metrics.csv
--
-- Gradient penalties take gradients of gradients (ember.grad with create_graph), which
-- work through Linear, Conv2d, ConvTranspose2d and the activations; the penalty is part
-- of D's loss and its backward reaches D's weights.
local ember = require 'ember'
local nn = require 'ember.nn'

local gan = {}

local THIS_FILE = debug.getinfo(1, 'S').source

-- Raises "fname: msg" at the first caller outside this file and ember.nn (the user's
-- line), wherever inside the library the check sits. (level is accepted and ignored.)
local function fail(fname, msg, level)
  local lvl = 2
  while true do
    local info = debug.getinfo(lvl, 'Sl')
    if not info then error(fname .. ': ' .. msg, 0) end
    local src = info.source
    if src ~= THIS_FILE and not src:find('ember/nn%.lua$') and info.currentline > 0 then
      error(fname .. ': ' .. msg, lvl)
    end
    lvl = lvl + 1
  end
end

local function typename(v)
  if ember.is_tensor(v) then return 'tensor' end
  if nn.is_module(v) then return 'module' end
  return type(v)
end

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

local function check_tensor(fname, v, what, level)
  if not ember.is_tensor(v) then
    fail(fname, ('%s must be a tensor, got %s'):format(what, typename(v)), (level or 2) + 1)
  end
  return v
end

local function check_number(fname, v, what, lo, hi, level)
  if type(v) ~= 'number' or v ~= v or (lo and v < lo) or (hi and v > hi) then
    fail(fname, ('%s must be a number in [%s, %s], got %s'):format(what, lo or '-inf', hi or 'inf',
      type(v) == 'number' and tostring(v) or typename(v)), (level or 2) + 1)
  end
  return v
end

local function check_positive_int(fname, v, what, level)
  if type(v) ~= 'number' or v ~= math.floor(v) or v < 1 then
    fail(fname, ('%s must be a positive integer, got %s'):format(what,
      type(v) == 'number' and tostring(v) or typename(v)), (level or 2) + 1)
  end
  return math.tointeger(v)
end

local function check_opts(fname, opts, allowed, argn)
  if opts == nil then return {} end
  if type(opts) ~= 'table' then
    fail(fname, ('bad argument #%d (expected an options table, got %s)'):format(argn, typename(opts)), 3)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      fail(fname, ("unknown option '%s' (expected one of: %s)"):format(tostring(k), table.concat(names, ', ')), 3)
    end
  end
  return opts
end

-- A discriminator argument: a module or a function x -> logits.
local function check_critic(fname, D)
  if not (nn.is_module(D) or type(D) == 'function') then
    fail(fname, ('D must be a module or a function x -> logits, got %s'):format(typename(D)), 3)
  end
  return D
end

-- ---- spectral normalization -------------------------------------------------------

--- gan.SpectralNorm(layer [, {n_power_iterations = 1, eps = 1e-12}]) -> module
-- Wraps an nn.Linear, nn.Conv2d or nn.ConvTranspose2d so that its forward uses
-- W / sigma(W), sigma the largest singular value of W seen as a matrix [out x rest]
-- (for ConvTranspose2d, out is W's second dim), estimated by power iteration with one
-- vector u [out] kept as a buffer (saved with the state dict) and refined by
-- n_power_iterations steps per training forward (none in eval mode). The gradient
-- flows through sigma (u and v held fixed), as in Miyato et al. 2018.
-- The wrapped layer's parameters stay its own ("layer.weight", "layer.bias").
local SpectralNorm = nn.Module:extend('SpectralNorm')
gan.SpectralNorm = SpectralNorm

local function layer_kind(m)
  if not nn.is_module(m) then return nil end
  if m:is_a(nn.ConvTranspose2d) then return 'conv_transpose2d' end
  if m:is_a(nn.Conv2d) then return 'conv2d' end
  if m:is_a(nn.Linear) then return 'linear' end
  return nil
end

function SpectralNorm:init(layer, opts)
  local kind = layer_kind(layer)
  if not kind then
    fail('SpectralNorm', ('layer must be an nn.Linear, nn.Conv2d or nn.ConvTranspose2d, got %s'):format(
      nn.is_module(layer) and ('nn.' .. layer:class_name()) or typename(layer)), 4)
  end
  opts = check_opts('SpectralNorm', opts, {n_power_iterations = true, eps = true}, 2)
  self.n_power_iterations = opts.n_power_iterations == nil and 1 or opts.n_power_iterations
  if math.type(self.n_power_iterations) ~= 'integer' or self.n_power_iterations < 1 then
    fail('SpectralNorm', ('n_power_iterations must be a positive integer, got %s'):format(
      tostring(self.n_power_iterations)), 4)
  end
  self.eps = opts.eps == nil and 1e-12 or opts.eps
  if type(self.eps) ~= 'number' or self.eps <= 0 then
    fail('SpectralNorm', ('eps must be a number > 0, got %s'):format(tostring(self.eps)), 4)
  end
  self.kind = kind
  self.layer = layer
  local rows = kind == 'conv_transpose2d' and layer.weight:size(2) or layer.weight:size(1)
  local u = ember.randn(rows)
  self:register_buffer('u', u / (u:square():sum():sqrt() + self.eps))
end

-- The weight as a matrix [out x rest] (a view of the parameter; differentiable).
function SpectralNorm:weight_matrix()
  local w = self.layer.weight
  if self.kind == 'conv_transpose2d' then w = w:transpose(1, 2) end
  return w:reshape(w:size(1), -1)
end

--- sn:sigma() -> the current estimate of the largest singular value (a 0-dim tensor
-- that depends on the weight; u and v are constants).
function SpectralNorm:sigma()
  local wm = self:weight_matrix()
  -- a copy: the graph keeps u, and the next training forward refines the buffer in place
  local u = self.u:detach():clone()
  local v = ember.no_grad(function()
    local t = wm:detach():t():matmul(u)
    return t / (t:square():sum():sqrt() + self.eps)
  end)
  return u:matmul(wm:matmul(v))
end

-- Power iteration: refines u in place (training mode only).
function SpectralNorm:power_iteration()
  ember.no_grad(function()
    local wm = self:weight_matrix():detach()
    local u = self.u
    for _ = 1, self.n_power_iterations do
      local v = wm:t():matmul(u)
      v = v / (v:square():sum():sqrt() + self.eps)
      u = wm:matmul(v)
      u = u / (u:square():sum():sqrt() + self.eps)
    end
    self.u:copy_(u)
  end)
end

--- sn:normalized_weight() -> W / sigma(W), shaped like the layer's weight.
function SpectralNorm:normalized_weight()
  if self.training then self:power_iteration() end
  return self.layer.weight / self:sigma()
end

function SpectralNorm:forward(x)
  local layer, w = self.layer, self:normalized_weight()
  if self.kind == 'linear' then return ember.linear(x, w, layer.bias) end
  if self.kind == 'conv2d' then return ember.conv2d(x, w, layer.bias, layer.options) end
  return ember.conv_transpose2d(x, w, layer.bias, layer.options)
end

function SpectralNorm:extra_repr()
  return self.n_power_iterations == 1 and '' or ('power iterations ' .. self.n_power_iterations)
end

--- gan.spectral_norm_all(module) -> module: wraps every Linear, Conv2d and
-- ConvTranspose2d child of every Sequential inside module (in place). Returns module.
function gan.spectral_norm_all(module)
  if not nn.is_module(module) then
    fail('spectral_norm_all', ('module must be a module, got %s'):format(typename(module)))
  end
  for _, m in ipairs(module:modules()) do
    if m:is_a(nn.Sequential) then
      for i = 1, #m do
        if layer_kind(m[i]) then m[i] = SpectralNorm(m[i]) end
      end
    end
  end
  return module
end

-- ---- minibatch standard deviation -----------------------------------------------

--- gan.MinibatchStdDev([{group_size = 0}]) -> module
-- Appends one feature to every sample: the standard deviation of each feature over a
-- group of samples, averaged over the features (Karras et al. 2018). Groups of
-- group_size consecutive-stride samples (0: the whole batch; the batch size must be a
-- multiple of it). [N x D] -> [N x (D + 1)], [N x C x H x W] -> [N x (C + 1) x H x W].
-- D sees how varied its batch is, so a collapsed generator is easy to tell apart.
local MinibatchStdDev = nn.Module:extend('MinibatchStdDev')
gan.MinibatchStdDev = MinibatchStdDev

function MinibatchStdDev:init(opts)
  opts = check_opts('MinibatchStdDev', opts, {group_size = true, eps = true}, 1)
  local g = opts.group_size == nil and 0 or opts.group_size
  if math.type(g) ~= 'integer' or g < 0 or g == 1 then
    fail('MinibatchStdDev', ('group_size must be 0 (whole batch) or an integer >= 2, got %s'):format(tostring(g)), 4)
  end
  self.group_size = g
  self.eps = opts.eps == nil and 1e-8 or opts.eps
end

function MinibatchStdDev:forward(x)
  check_tensor('MinibatchStdDev', x, 'input')
  local d = x:dim()
  if d ~= 2 and d ~= 4 then
    fail('MinibatchStdDev', ('input %s must be 2-D [N x D] or 4-D [N x C x H x W]'):format(shape_str(x)))
  end
  local n = x:size(1)
  local g = self.group_size == 0 and n or math.min(self.group_size, n)
  if n < 2 then fail('MinibatchStdDev', ('input %s needs a batch of at least 2'):format(shape_str(x))) end
  if n % g ~= 0 then
    fail('MinibatchStdDev', ('batch size %d is not a multiple of group_size %d'):format(n, g))
  end
  local m = n // g
  local shape = x:shape()
  local rest = {}
  for i = 2, d do rest[#rest + 1] = shape[i] end
  -- sample i = k * m + j belongs to group j (k = 0..g-1)
  local y = x:reshape(g, m, table.unpack(rest))
  local centred = y - y:mean(1, true)
  local std = (centred:square():mean(1) + self.eps):sqrt()   -- [m x rest]
  local s = std:reshape(m, -1):mean(2)                        -- [m]
  s = s:view(1, m):expand{g, m}:reshape(n)                     -- per sample
  local feat
  if d == 2 then
    feat = s:view(n, 1)
  else
    feat = s:view(n, 1, 1, 1):expand{n, 1, shape[3], shape[4]}
  end
  return ember.cat({x, feat}, 2)
end

function MinibatchStdDev:extra_repr()
  return self.group_size == 0 and 'group: batch' or ('group ' .. self.group_size)
end

-- ---- packing (PacGAN) --------------------------------------------------------------

--- gan.pack(x, m) -> packed: m consecutive samples joined along the feature (or
-- channel) dim, as PacGAN's discriminator sees them (Lin et al. 2018):
-- [N x D] -> [N/m x m*D], [N x C x H x W] -> [N/m x m*C x H x W]. N must be a multiple of m.
function gan.pack(x, m)
  check_tensor('pack', x, 'x')
  m = check_positive_int('pack', m, 'm')
  if x:dim() < 2 then fail('pack', ('x %s must have a batch dim and a feature dim'):format(shape_str(x))) end
  local n = x:size(1)
  if n % m ~= 0 then
    fail('pack', ('batch size %d of x %s is not a multiple of the packing degree %d'):format(n, shape_str(x), m))
  end
  if m == 1 then return x end
  local shape = x:shape()
  shape[1], shape[2] = n // m, shape[2] * m
  return x:reshape(shape)
end

-- ---- gradient penalties -------------------------------------------------------------

-- Per-sample squared gradient norm of g [N x ...] -> [N].
local function sq_norm(g)
  return g:reshape(g:size(1), -1):square():sum(2)
end

--- gan.r1_penalty(D, real) -> penalty, real_logits
-- R1 (Mescheder et al. 2018): the mean over the batch of ||grad_x D(x)||^2 at the real
-- samples x. Weight it by gamma / 2 in D's loss. The logits D(real) come back too, so
-- the loss needs no second forward. Differentiable w.r.t. D's parameters.
function gan.r1_penalty(D, real)
  check_critic('r1_penalty', D)
  check_tensor('r1_penalty', real, 'real')
  local x = real:detach():requires_grad()
  local logits = D(x)
  if not ember.is_tensor(logits) then fail('r1_penalty', 'D must return a tensor of logits') end
  local g = ember.grad(logits:sum(), {x}, {create_graph = true})[1]
  return sq_norm(g):mean(), logits
end

--- gan.gradient_penalty(D, real, fake [, {center = 1}]) -> penalty
-- WGAN-GP (Gulrajani et al. 2017): at random points x_hat = e real + (1 - e) fake
-- (e ~ U[0, 1] per sample), the mean of (||grad D(x_hat)|| - center)^2. Weight it by
-- lambda (10 in the paper) in D's loss. real and fake must have the same shape.
function gan.gradient_penalty(D, real, fake, opts)
  check_critic('gradient_penalty', D)
  check_tensor('gradient_penalty', real, 'real')
  check_tensor('gradient_penalty', fake, 'fake')
  opts = check_opts('gradient_penalty', opts, {center = true}, 4)
  local center = opts.center == nil and 1 or check_number('gradient_penalty', opts.center, 'center', 0)
  local rs, fs = real:shape(), fake:shape()
  local same = #rs == #fs
  for i = 1, #rs do same = same and rs[i] == fs[i] end
  if not same then
    fail('gradient_penalty', ('real %s and fake %s must have the same shape'):format(shape_str(real), shape_str(fake)))
  end
  local eshape = {real:size(1)}
  for i = 2, real:dim() do eshape[i] = 1 end
  local e = ember.rand(eshape)
  local x = (real:detach() * e + fake:detach() * (1 - e)):detach():requires_grad()
  local logits = D(x)
  local g = ember.grad(logits:sum(), {x}, {create_graph = true})[1]
  local norm = (sq_norm(g) + 1e-12):sqrt()
  return (norm - center):square():mean()
end

-- ---- noise, labels, losses ------------------------------------------------------------

--- gan.instance_noise(x, std) -> x + N(0, std^2) (std 0: x itself). Added to both real
--- and fake inputs of D, it blurs the two distributions so that they overlap
--- (Sønderby et al. 2017); anneal std towards 0 with gan.linear_decay.
function gan.instance_noise(x, std)
  check_tensor('instance_noise', x, 'x')
  check_number('instance_noise', std, 'std', 0)
  if std == 0 then return x end
  return x + ember.randn_like(x) * std
end

--- gan.linear_decay(start, step, total) -> start * max(0, 1 - step / total): a value
--- annealed linearly to 0 over total steps (instance-noise schedules).
function gan.linear_decay(start, step, total)
  check_number('linear_decay', start, 'start')
  check_number('linear_decay', step, 'step', 0)
  check_number('linear_decay', total, 'total', 0)
  if total == 0 then return 0 end
  return start * math.max(0, 1 - step / total)
end

--- gan.d_loss_bce(real_logits, fake_logits [, {real_label = 1, fake_label = 0}]) -> loss
--- The standard discriminator loss with (one-sided) label smoothing: BCE-with-logits of
--- the real logits against real_label and the fake ones against fake_label, each a mean.
function gan.d_loss_bce(real_logits, fake_logits, opts)
  check_tensor('d_loss_bce', real_logits, 'real_logits')
  check_tensor('d_loss_bce', fake_logits, 'fake_logits')
  opts = check_opts('d_loss_bce', opts, {real_label = true, fake_label = true}, 3)
  local rl = opts.real_label == nil and 1 or check_number('d_loss_bce', opts.real_label, 'real_label', 0, 1)
  local fl = opts.fake_label == nil and 0 or check_number('d_loss_bce', opts.fake_label, 'fake_label', 0, 1)
  local losses = require 'ember.losses'
  return losses.bce_with_logits(real_logits, ember.full_like(real_logits, rl))
       + losses.bce_with_logits(fake_logits, ember.full_like(fake_logits, fl))
end

-- ---- mode-collapse metrics ------------------------------------------------------------

--- gan.mode_stats(samples [N x 2], centers [K x 2], std [, {sigmas = 3}]) -> {
---   high_quality = fraction of samples within sigmas * std of their nearest centre,
---   modes = number of centres nearest to at least one high-quality sample,
---   counts = {K numbers: high-quality samples per centre},
---   kl = KL(high-quality mode histogram || uniform over the K centres) (inf when no
---        sample is high quality), n = N }
--- The measures of the mode-collapse literature (VEEGAN, PacGAN: 2,500 samples).
function gan.mode_stats(samples, centers, std, opts)
  check_tensor('mode_stats', samples, 'samples')
  check_tensor('mode_stats', centers, 'centers')
  if samples:dim() ~= 2 or samples:size(2) ~= 2 then
    fail('mode_stats', ('samples %s must be [N x 2]'):format(shape_str(samples)))
  end
  if centers:dim() ~= 2 or centers:size(2) ~= 2 or centers:size(1) < 1 then
    fail('mode_stats', ('centers %s must be [K x 2] with K >= 1'):format(shape_str(centers)))
  end
  if type(std) ~= 'number' or not (std > 0) or std == math.huge then
    fail('mode_stats', ('std must be a number > 0, got %s'):format(type(std) == 'number' and tostring(std) or typename(std)))
  end
  opts = check_opts('mode_stats', opts, {sigmas = true}, 4)
  local sigmas = opts.sigmas == nil and 3 or check_number('mode_stats', opts.sigmas, 'sigmas', 0)
  local n, k = samples:size(1), centers:size(1)
  if n == 0 then fail('mode_stats', 'samples is empty') end
  return ember.no_grad(function()
    local s = samples:detach()
    if s:ne(s):sum():item() > 0 then fail('mode_stats', 'samples hold NaN', 4) end
    local d2 = (s:view(n, 1, 2) - centers:view(1, k, 2)):square():sum(3)   -- [n x k]
    local nearest_d2, nearest = d2:min(2)
    local hq = nearest_d2:le((sigmas * std) ^ 2)                          -- [n] 0/1
    local counts = ember.zeros(k):scatter_add(1, nearest, hq)
    local c = counts:totable()
    local modes, total = 0, 0
    for i = 1, k do
      if c[i] > 0 then modes = modes + 1 end
      total = total + c[i]
    end
    local kl = math.huge
    if total > 0 then
      kl = 0
      for i = 1, k do
        local p = c[i] / total
        if p > 0 then kl = kl + p * math.log(p * k) end
      end
    end
    return {high_quality = total / n, modes = modes, counts = c, kl = kl, n = n}
  end)
end

-- ---- image generators in recipes ----------------------------------------------------

--- gan.sample_images(G, n, draw [, chunk=500]) -> n images in [0, 1] from a generator G
--- whose outputs are in [-1, 1] (tanh): G(draw(k, first)) for chunks of k <= chunk rows
--- starting at row `first`, without gradients, with G in training mode (batch statistics,
--- as DCGAN-style generators are sampled) and its mode put back afterwards. draw returns
--- G's argument list for a chunk (a table is unpacked: {z, labels}).
function gan.sample_images(G, n, draw, chunk)
  if type(G) ~= 'table' or type(G.train) ~= 'function' then
    fail('sample_images', ('G must be a module, got %s'):format(typename(G)))
  end
  check_positive_int('sample_images', n, 'n')
  if type(draw) ~= 'function' then fail('sample_images', ('draw must be a function, got %s'):format(typename(draw))) end
  chunk = chunk or 500
  check_positive_int('sample_images', chunk, 'chunk')
  local was_training = G.training
  G:train()
  local ok, out = pcall(ember.no_grad, function()
    -- near-equal chunks (501 = 251 + 250, not 500 + 1): BatchNorm in training mode
    -- needs more than one value per channel, which a last chunk of one image lacks
    local parts = {}
    local count = (n + chunk - 1) // chunk
    local first = 1
    for i = 1, count do
      local size = n // count + (i <= n % count and 1 or 0)
      local args = draw(size, first)
      first = first + size
      parts[#parts + 1] = type(args) == 'table' and not ember.is_tensor(args) and G(table.unpack(args)) or G(args)
    end
    return #parts == 1 and parts[1] or ember.cat(parts, 1)
  end)
  G:train(was_training)
  if not ok then error(out, 0) end
  return (out + 1) / 2
end

--- gan.save_loss_curves(run_dir, title): run_dir/samples/losses.png, D's and G's loss
--- against step from the rows of run_dir/metrics.csv that hold both d_loss and g_loss
--- (the end-of-epoch rows do not); nothing when there are none yet.
function gan.save_loss_curves(run_dir, title)
  if type(run_dir) ~= 'string' then fail('save_loss_curves', ('run_dir must be a path, got %s'):format(typename(run_dir))) end
  local _, rows = require('ember.files').read_csv(run_dir .. '/metrics.csv')
  local series = {d_loss = {x = {}, y = {}}, g_loss = {x = {}, y = {}}}
  for _, row in ipairs(rows or {}) do
    if row.d_loss and row.g_loss then
      for name, s in pairs(series) do
        s.x[#s.x + 1] = row.step
        s.y[#s.y + 1] = row[name]
      end
    end
  end
  if #series.d_loss.y == 0 then return end
  require('ember.plot').lines(series, run_dir .. '/samples/losses.png', {title = title, xlabel = 'step'})
end

return gan
