-- ember.losses — losses for classifiers, VAEs, GANs and autoregressive image
-- models.
--
-- Every loss computes elementwise terms (one per element of its input; one per
-- sample for cross_entropy and nll, whose input rows are distributions over
-- classes; one per pixel position for discretized_logistic_mixture) and reduces them by opts.reduction, the same way for every loss:
--   'mean'      (default) the mean over all the terms, as in PyTorch;
--   'sum'       their sum;
--   'batchmean' their sum divided by the batch size (the first dim): the
--               per-sample sum averaged over the batch, PyTorch's kl_div
--               'batchmean'. A VAE's two terms need the same reduction, and
--               this is the usual one (nats per image);
--   'none'      the terms themselves, shaped like the input ([N] for
--               cross_entropy and nll, [N x H x W] for
--               discretized_logistic_mixture: one term per pixel position).
-- BCE-with-logits, cross-entropy, NLL and the discretized logistic mixture are
-- fused C kernels (numerically stable, one pass); the rest are compositions of
-- differentiable ops. Every loss can be differentiated twice (gradient
-- penalties) except the discretized logistic mixture, whose second derivative
-- is refused with a message.
--
--   local losses = require 'ember.losses'
--   local loss = losses.cross_entropy(logits, labels)        -- labels 1..K
--   local rec = losses.bce_with_logits(logits, x, {reduction = 'batchmean'})
--   local kl = losses.kl_normal(mu, logvar, {reduction = 'batchmean'}) -- logvar, not std
--   local vae_loss = rec + kl                                 -- nats per image
--   local gan = losses.adversarial('non_saturating')           -- D returns logits
--   local d_loss = gan.d_loss(D(real), D(fake:detach())); local g_loss = gan.g_loss(D(fake))
local ember = require 'ember'
local K = ember._optim_kernels

local losses = {}

local LOG_2PI = math.log(2 * math.pi)

-- ---- argument checks -------------------------------------------------------

local function check_tensor(fname, arg, name, v)
  if not ember.is_tensor(v) then
    error(('%s: bad argument #%d \'%s\' (expected tensor, got %s)'):format(fname, arg, name, type(v)), 3)
  end
end

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

local function check_same_shape(fname, na, a, nb, b)
  local sa, sb = a:shape(), b:shape()
  local same = #sa == #sb
  for i = 1, #sa do same = same and sa[i] == sb[i] end
  if not same then
    error(('%s: %s %s and %s %s must have the same shape'):format(fname, na, shape_str(a), nb, shape_str(b)), 3)
  end
end

-- The reduction named by opts (checked), and opts' keys checked against `allowed`.
local function reduction_of(fname, opts, allowed)
  if opts == nil then return 'mean' end
  if type(opts) ~= 'table' then
    error(('%s: bad options (expected a table like {reduction = \'sum\'}, got %s)'):format(fname, type(opts)), 3)
  end
  for k in pairs(opts) do
    local ok = false
    for _, a in ipairs(allowed or { 'reduction' }) do ok = ok or k == a end
    if not ok then
      error(('%s: unknown option \'%s\' (expected %s)'):format(fname, tostring(k),
        table.concat(allowed or { 'reduction' }, ', ')), 3)
    end
  end
  local r = opts.reduction or 'mean'
  if r ~= 'mean' and r ~= 'sum' and r ~= 'batchmean' and r ~= 'none' then
    error(('%s: bad reduction \'%s\' (expected \'mean\', \'sum\', \'batchmean\' or \'none\')'):format(
      fname, tostring(r)), 3)
  end
  return r
end

-- The batch size 'batchmean' divides by: the first dim (1 for a scalar).
local function batch_size(t)
  return t:dim() > 0 and t:size(1) or 1
end

local function reduce(values, reduction)
  if reduction == 'mean' then return values:mean() end
  if reduction == 'sum' then return values:sum() end
  if reduction == 'batchmean' then return values:sum() / batch_size(values) end
  return values
end

-- A fused C loss (input, target, opts) with 'batchmean' added: its 'sum' over the
-- batch size. Everything else, checks included, is the kernel's own.
-- Errors are raised again at the caller's line (the kernel's own position would
-- point here).
local function with_batchmean(kernel)
  local function call(...)
    local ok, r = pcall(kernel, ...)
    if not ok then error((tostring(r):gsub('^[^\n]-:%d+: ', '')), 3) end
    return r
  end
  return function(input, target, opts)
    if type(opts) == 'table' and opts.reduction == 'batchmean' then
      local sum_opts = {}
      for k, v in pairs(opts) do sum_opts[k] = v end
      sum_opts.reduction = 'sum'
      local total = call(input, target, sum_opts)
      return total / batch_size(input)
    end
    local r = call(input, target, opts) -- not a tail call: call's error level counts this frame
    return r
  end
end

-- ---- regression and binary losses -------------------------------------------

--- mse(pred, target [, opts]): (pred - target)^2, reduced.
function losses.mse(pred, target, opts)
  check_tensor('mse', 1, 'pred', pred)
  check_tensor('mse', 2, 'target', target)
  check_same_shape('mse', 'pred', pred, 'target', target)
  return reduce((pred - target):square(), reduction_of('mse', opts))
end

--- l1(pred, target [, opts]): |pred - target|, reduced.
function losses.l1(pred, target, opts)
  check_tensor('l1', 1, 'pred', pred)
  check_tensor('l1', 2, 'target', target)
  check_same_shape('l1', 'pred', pred, 'target', target)
  return reduce((pred - target):abs(), reduction_of('l1', opts))
end

--- bce(prob, target [, opts]): -(t log p + (1 - t) log(1 - p)) for probabilities
-- p in [0, 1], each log clamped at -100 as PyTorch does (so p = 0 or 1 stays
-- finite). Prefer bce_with_logits: it is exact where this one clamps.
function losses.bce(prob, target, opts)
  check_tensor('bce', 1, 'prob', prob)
  check_tensor('bce', 2, 'target', target)
  check_same_shape('bce', 'prob', prob, 'target', target)
  local reduction = reduction_of('bce', opts)
  if prob:numel() > 0 then
    local lo, hi = prob:min():item(), prob:max():item()
    if not (lo >= 0 and hi <= 1) then
      error(('bce: prob must hold probabilities in [0, 1], got values in [%g, %g] (use bce_with_logits on logits)'):format(lo, hi), 2)
    end
  end
  local log_p = prob:log():clamp(-100)
  local log_q = (1 - prob):log():clamp(-100)
  return reduce(-(target * log_p + (1 - target) * log_q), reduction)
end

--- bce_with_logits(logits, target [, opts]): BCE of sigmoid(logits), computed
-- stably as max(x, 0) - x t + log1p(exp(-|x|)) (finite for any finite logit).
losses.bce_with_logits = with_batchmean(K.bce_with_logits)

-- ---- classification ------------------------------------------------------------

--- cross_entropy(logits [N x K], labels [N] [, opts]): log-softmax + NLL in one
-- kernel. labels: a tensor or table of class indices 1..K. opts: reduction,
-- label_smoothing (in [0, 1]), weight (a [K] tensor of class weights; the
-- mean is then divided by the summed weights of the labels, as PyTorch does;
-- batchmean divides the weighted sum by N).
losses.cross_entropy = with_batchmean(K.cross_entropy)

--- nll(logprobs [N x K], labels [N] [, opts]): -logprobs[i, labels[i]], reduced.
-- opts: reduction, weight.
losses.nll = with_batchmean(K.nll)

-- ---- images: PixelCNN++'s discretized mixture of logistics ----------------------------

--- discretized_logistic_mixture(params [N x P x H x W], x [N x C x H x W] [, opts]):
-- the negative log-likelihood in nats of images x (bins levels scaled to [-1, 1]:
-- x = pixel / 127.5 - 1 for 8-bit) under a mixture of nr_mix discretized logistics
-- per position (Salimans et al. 2017, PixelCNN++). C = 1: P = 3*nr_mix (logits,
-- means, log-scales); C = 3: P = 10*nr_mix (logits, 3*nr_mix means, 3*nr_mix
-- log-scales, 3*nr_mix raw RGB coefficients, tanh-squashed: mean_G += c0 x_R,
-- mean_B += c1 x_R + c2 x_G), each a block of nr_mix (per channel R, G, B) along P.
-- One term per position, [N x H x W] ('none'), summed over the channels; 'mean'
-- divides by N*H*W, 'batchmean' gives nats per image. opts: reduction, nr_mix
-- (checked against P; inferred when absent), bins (default 256). A fused C kernel
-- with its gradient in params; x is data (no gradient), and a second derivative
-- is refused. Sample with ember.sample_discretized_logistic_mixture.
losses.discretized_logistic_mixture = with_batchmean(K.discretized_logistic_mixture)

--- bits_per_dim(nats, dims): a negative log-likelihood per image in nats (a number
-- or a tensor, e.g. a 'batchmean' loss) as bits per dimension, nats / (dims ln 2).
-- dims: the dimensions of one image, C*H*W, as a number, or an image batch
-- [N x C x H x W] (a tensor) whose C*H*W is taken.
function losses.bits_per_dim(nats, dims)
  if type(nats) ~= 'number' and not ember.is_tensor(nats) then
    error(('bits_per_dim: bad argument #1 \'nats\' (expected number or tensor, got %s)'):format(type(nats)), 2)
  end
  local d
  if ember.is_tensor(dims) and dims:dim() == 4 then
    d = dims:size(2) * dims:size(3) * dims:size(4)
  elseif math.type(dims) == 'integer' or (type(dims) == 'number' and dims == math.floor(dims)) then
    d = dims
  end
  if not d or d < 1 or d == math.huge then
    local got = ember.is_tensor(dims) and ('a tensor ' .. shape_str(dims)) or
      (type(dims) == 'number' and tostring(dims) or type(dims))
    error(('bits_per_dim: bad argument #2 \'dims\' (expected a positive integer C*H*W or an image batch [N x C x H x W], got %s)'):format(got), 2)
  end
  return nats / (d * math.log(2))
end

-- ---- Gaussians (VAEs) ----------------------------------------------------------------

--- kl_normal(mu, logvar [, mu2, logvar2] [, opts]): KL(N(mu, exp(logvar)) || N(0, I)),
-- or against N(mu2, exp(logvar2)), for diagonal Gaussians given by their means
-- and LOG-variances (not standard deviations). One term per latent dimension
-- (shaped like mu), reduced by opts.reduction: 'batchmean' gives the KL per
-- sample averaged over the batch, 'none' the terms (sum them over the last dim
-- for each sample's KL).
function losses.kl_normal(mu, logvar, mu2, logvar2, opts)
  if type(mu2) == 'table' and not ember.is_tensor(mu2) then opts, mu2 = mu2, nil end
  check_tensor('kl_normal', 1, 'mu', mu)
  check_tensor('kl_normal', 2, 'logvar', logvar)
  check_same_shape('kl_normal', 'mu', mu, 'logvar', logvar)
  local reduction = reduction_of('kl_normal', opts)
  local terms
  if mu2 == nil and logvar2 == nil then
    -- -0.5 (1 + logvar - mu^2 - exp(logvar))
    terms = (mu:square() + logvar:exp() - logvar - 1) * 0.5
  else
    check_tensor('kl_normal', 3, 'mu2', mu2)
    check_tensor('kl_normal', 4, 'logvar2', logvar2)
    check_same_shape('kl_normal', 'mu', mu, 'mu2', mu2)
    check_same_shape('kl_normal', 'logvar', logvar, 'logvar2', logvar2)
    -- 0.5 (logvar2 - logvar + (exp(logvar) + (mu - mu2)^2) / exp(logvar2) - 1)
    local ratio = (logvar:exp() + (mu - mu2):square()) * (-logvar2):exp()
    terms = (logvar2 - logvar + ratio - 1) * 0.5
  end
  return reduce(terms, reduction)
end

--- reparameterize(mu, logvar): mu + exp(0.5 logvar) * eps, with eps ~ N(0, I)
-- (logvar is the log-variance, not the standard deviation)
-- drawn from the shared generator (ember.manual_seed makes it repeatable).
function losses.reparameterize(mu, logvar)
  check_tensor('reparameterize', 1, 'mu', mu)
  check_tensor('reparameterize', 2, 'logvar', logvar)
  check_same_shape('reparameterize', 'mu', mu, 'logvar', logvar)
  local eps = ember.randn(mu:shape())
  return mu + (logvar * 0.5):exp() * eps
end

--- gaussian_nll(x, mu, logvar [, opts]): -log N(x; mu, exp(logvar)) =
-- 0.5 (log 2pi + logvar + (x - mu)^2 / exp(logvar)), one term per element of x,
-- reduced by opts.reduction ('batchmean': the NLL per sample, averaged). mu and
-- logvar (log-variance) may broadcast to x's shape (e.g. one learned log-variance).
function losses.gaussian_nll(x, mu, logvar, opts)
  check_tensor('gaussian_nll', 1, 'x', x)
  check_tensor('gaussian_nll', 2, 'mu', mu)
  check_tensor('gaussian_nll', 3, 'logvar', logvar)
  local reduction = reduction_of('gaussian_nll', opts)
  local ok, terms = pcall(function()
    return ((x - mu):square() * (-logvar):exp() + logvar + LOG_2PI) * 0.5
  end)
  if not ok then
    error(('gaussian_nll: x %s, mu %s and logvar %s do not broadcast together'):format(
      shape_str(x), shape_str(mu), shape_str(logvar)), 2)
  end
  check_same_shape('gaussian_nll', 'x', x, 'the broadcast of mu and logvar', terms)
  return reduce(terms, reduction)
end

--- log_bernoulli(x, logits [, opts]): log p(x) of x in [0, 1] under Bernoulli
-- (sigmoid(logits)) — x logits - softplus(logits) — one term per element,
-- reduced by opts.reduction ('batchmean': log p per sample, averaged). A
-- log-likelihood: negate it for a loss.
function losses.log_bernoulli(x, logits, opts)
  check_tensor('log_bernoulli', 1, 'x', x)
  check_tensor('log_bernoulli', 2, 'logits', logits)
  check_same_shape('log_bernoulli', 'x', x, 'logits', logits)
  local reduction = reduction_of('log_bernoulli', opts)
  return reduce(-K.bce_with_logits(logits, x, { reduction = 'none' }), reduction)
end

-- ---- adversarial losses ---------------------------------------------------------------

-- Each kind: d(real, fake) and g(fake) on the discriminator's raw outputs
-- (logits), as elementwise terms; the reduction (mean or sum) folds each term.
local adversarial_kinds = {
  -- D maximises log D(x) + log(1 - D(G(z))); G minimises log(1 - D(G(z))).
  minimax = {
    d = function(real, fake, r) return r(ember.softplus(-real)) + r(ember.softplus(fake)) end,
    g = function(fake, r) return -r(ember.softplus(fake)) end,
  },
  -- the same D; G maximises log D(G(z)) (strong gradients early on).
  non_saturating = {
    d = function(real, fake, r) return r(ember.softplus(-real)) + r(ember.softplus(fake)) end,
    g = function(fake, r) return r(ember.softplus(-fake)) end,
  },
  -- LSGAN: D pushes real to 1 and fake to 0, G pushes fake to 1 (squared errors / 2).
  least_squares = {
    d = function(real, fake, r) return r((real - 1):square() * 0.5) + r(fake:square() * 0.5) end,
    g = function(fake, r) return r((fake - 1):square() * 0.5) end,
  },
  -- hinge: max(0, 1 - D(x)) + max(0, 1 + D(G(z))); G minimises -D(G(z)).
  hinge = {
    d = function(real, fake, r) return r((1 - real):relu()) + r((fake + 1):relu()) end,
    g = function(fake, r) return -r(fake) end,
  },
  -- WGAN critic: D(G(z)) - D(x); G minimises -D(G(z)). Needs a Lipschitz
  -- constraint: optim.clip_weights_(critic_params, 0.01) after each D step.
  wasserstein = {
    d = function(real, fake, r) return r(fake) - r(real) end,
    g = function(fake, r) return -r(fake) end,
  },
}

--- adversarial(kind [, opts]) -> ONE table {kind = kind,
-- d_loss = function(real_logits, fake_logits), g_loss = function(fake_logits)}.
-- The arguments are D's raw outputs: logits, no sigmoid (for 'wasserstein' and
-- 'hinge', the critic's scores). kind: 'minimax', 'non_saturating',
-- 'least_squares', 'hinge' or 'wasserstein'. opts.reduction: 'mean' (default),
-- 'sum' or 'batchmean', applied to each of the real and fake terms.
function losses.adversarial(kind, opts)
  local spec = adversarial_kinds[kind]
  if not spec then
    local names = {}
    for k in pairs(adversarial_kinds) do names[#names + 1] = "'" .. k .. "'" end
    table.sort(names)
    error(('adversarial: unknown kind %s (expected %s)'):format(
      type(kind) == 'string' and "'" .. kind .. "'" or tostring(kind), table.concat(names, ', ')), 2)
  end
  local reduction = reduction_of('adversarial', opts)
  if reduction == 'none' then
    error("adversarial: reduction 'none' is not supported (d_loss adds a real and a fake term; use 'mean', 'sum' or 'batchmean')", 2)
  end
  local function r(t) return reduce(t, reduction) end
  local d_name, g_name = kind .. ' d_loss', kind .. ' g_loss'
  return {
    kind = kind,
    d_loss = function(real_logits, fake_logits)
      check_tensor(d_name, 1, 'real_logits', real_logits)
      check_tensor(d_name, 2, 'fake_logits', fake_logits)
      return spec.d(real_logits, fake_logits, r)
    end,
    g_loss = function(fake_logits)
      check_tensor(g_name, 1, 'fake_logits', fake_logits)
      return spec.g(fake_logits, r)
    end,
  }
end

return losses
