-- examples/vae.lua — a variational autoencoder (Kingma & Welling 2014) on Fashion-MNIST
-- or MNIST digits.
--
-- The encoder maps an image x to a Gaussian q(z|x) = N(mu, exp(logvar)) over a small
-- latent code z; a code is drawn with the reparameterization trick z = mu + sigma * eps,
-- so gradients flow through the draw; the decoder maps z back to pixel logits. The loss
-- is the negative ELBO: reconstruction (BCE summed over pixels) + KL(q(z|x) || N(0, I)).
-- The KL term packs the codes of all images into one smooth Gaussian blob, so codes drawn
-- from N(0, I), and the points on a path between two codes, decode to believable images
-- (compare examples/autoencoder.lua, whose random codes decode to garbage).
--
-- The defaults are benchmark B1 of DESIGN.md (the classic PyTorch example): enc 784-400
-- ReLU, heads 400 -> 20 (mu) and 400 -> 20 (logvar); dec 20-400 ReLU-784 logits;
-- continuous BCE on pixels in [0, 1]; batch 128; Adam 1e-3; 10 epochs.
--
--   ember run examples/vae.lua --out runs/vae                       # B1, ~5 s/epoch
--   ember run examples/vae.lua --set latent=2 --out runs/vae-2d     # + manifold and scatter
--   ember run examples/vae.lua --set dataset=mnist --set likelihood=bernoulli --set epochs=50
--   ember run examples/vae.lua --set arch=conv --set beta=4 --set kl_warmup=5
--   ember sample runs/vae --n 100
--
-- Each epoch reports the test negative ELBO in nats per image and its parts (test_rec,
-- test_kl); the last epoch adds test_iwae_nll, the importance-weighted bound on -log p(x)
-- with iw_k samples per image (Burda et al. 2016), which is never above the ELBO.
-- Pictures in RUN/samples/: samples.png (codes from the prior), reconstructions.png
-- (originals above reconstructions), interpolation_linear.png and
-- interpolation_slerp.png (each row walks from one test image to another), and for
-- latent=2 manifold.png (decoded grid over the inverse Gaussian CDF) and
-- latent_scatter.png (test codes coloured by class).
--
-- In the REPL: local vae = ember.latent.load_run('runs/vae').model
--              local mu, logvar = vae:encode(x); local img = vae:decode_images(mu)
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
local losses = require 'ember.losses'
local data = require 'ember.data'
local image = require 'ember.image'
local plot = require 'ember.plot'
local latent = require 'ember.latent'
local ae = require 'ember.autoencoders'

local recipe = {
  name = 'vae',
  description = 'variational autoencoder: ELBO, IWAE bound, samples, interpolations, 2-D manifold',
  params = {
    dataset = {default = 'fashion', type = 'string', choices = {'fashion', 'mnist'},
               help = 'Fashion-MNIST (60000/10000) or MNIST digits (8004/1996)'},
    arch = {default = 'mlp', type = 'string', choices = {'mlp', 'conv'},
            help = 'fully connected, or two stride-2 convolutions each way around the hidden layers'},
    latent = {default = 20, type = 'integer', min = 1, help = 'size of the latent code z'},
    hidden = {default = '400', type = 'string',
              help = "hidden layer sizes, encoder order, comma-separated ('512,256'); the decoder mirrors them"},
    likelihood = {default = 'bce', type = 'string', choices = {'bce', 'bernoulli'},
                  help = 'bce: pixels in [0,1] as targets; bernoulli: dynamically binarized pixels'},
    beta = {default = 1.0, type = 'number', min = 0, help = 'weight of the KL term in the training loss (beta-VAE)'},
    kl_warmup = {default = 0, type = 'integer', min = 0, help = 'epochs over which the KL weight rises linearly from 0 to beta'},
    epochs = {default = 10, type = 'integer', min = 1, help = 'passes over the training set'},
    batch = {default = 128, type = 'integer', min = 1, help = 'images per step'},
    lr = {default = 1e-3, type = 'number', min = 0, min_exclusive = true, help = 'Adam learning rate'},
    iw_k = {default = 100, type = 'integer', min = 0, help = 'importance samples per test image for the final IWAE bound (0: skip)'},
    train_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N training images (0: all)'},
    test_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N test images (0: all)'},
    n_samples = {default = 64, type = 'integer', min = 1, help = 'images in samples.png'},
  },
  main_metric = {name = 'test_neg_elbo', goal = 'min'},
}

local PIXELS = ae.PIXELS

-- ---- the model ------------------------------------------------------------------------

local VAE = nn.Module:extend('VAE')

-- opts: arch, latent, hidden (list of sizes, encoder order).
function VAE:init(opts)
  self.latent_size = opts.latent
  -- conv: [N x 1 x 28 x 28] -> [N x 32 x 14 x 14] -> [N x 64 x 7 x 7] -> [N x 3136] -> hidden
  self.encoder = nn.Sequential()
  local feat = ae.add_encoder_body(self.encoder, opts.arch, opts.hidden)
  self.decoder = ae.decoder(opts.arch, opts.latent, opts.hidden)
  self.mu_head = nn.Linear(feat, opts.latent)
  self.logvar_head = nn.Linear(feat, opts.latent)
end

--- vae:encode(x) -> mu, logvar [N x latent]: q(z|x) for images x [N x 784] or [N x 1 x 28 x 28].
function VAE:encode(x)
  local h = self.encoder(x:reshape(x:size(1), PIXELS))
  return self.mu_head(h), self.logvar_head(h)
end

--- vae:decode(z) -> pixel logits [N x 784] for codes z [N x latent].
function VAE:decode(z) return self.decoder(z) end

--- vae:decode_images(z) -> images [N x 1 x 28 x 28] in [0, 1] (the Bernoulli means).
function VAE:decode_images(z)
  return self:decode(z):sigmoid():reshape(z:size(1), 1, 28, 28)
end

--- vae:forward(x) -> logits [N x 784], mu, logvar: encode, draw z by reparameterization, decode.
function VAE:forward(x)
  local mu, logvar = self:encode(x)
  return self:decode(losses.reparameterize(mu, logvar)), mu, logvar
end

-- Per-image reconstruction term -log p(x|z) (BCE summed over pixels) and KL(q(z|x) || p(z)),
-- each [N], for images x [N x 784] (one z drawn per image).
local function elbo_terms(model, x)
  local logits, mu, logvar = model(x)
  local rec = losses.bce_with_logits(logits, x, {reduction = 'none'}):sum(2)
  local kl = losses.kl_normal(mu, logvar, {reduction = 'none'}):sum(2)
  return rec, kl
end

-- ---- data -------------------------------------------------------------------------------

-- Flat pixels [N x 784] in [0, 1], labels [N] (1..10) and class names of one split; the
-- test images of likelihood=bernoulli are binarized once with a fixed seed.
local load_split = ae.load_split

function recipe.data(p)
  local train_x, train_y = load_split(p, 'train')
  local test_x, test_y, classes = load_split(p, 'test')
  local loader = data.DataLoader(data.TensorDataset(train_x, train_y), {batch_size = p.batch, shuffle = true})
  print(string.format('%s: %d training images, %d test images', p.dataset, train_x:size(1), test_x:size(1)))
  return {loader = loader, test_x = test_x, test_y = test_y, classes = classes}
end

-- ---- training ----------------------------------------------------------------------------

function recipe.build(p)
  for _, name in ipairs {'latent', 'epochs', 'batch'} do
    if p[name] < 1 then error(('vae: %s must be >= 1, got %d'):format(name, p[name]), 0) end
  end
  if p.beta < 0 or p.lr <= 0 or p.kl_warmup < 0 or p.iw_k < 0 then
    error('vae: beta, kl_warmup and iw_k must be >= 0 and lr > 0', 0)
  end
  local model = VAE{arch = p.arch, latent = p.latent, hidden = ae.parse_sizes(p.hidden, 'vae')}
  return {model = model, opt = optim.Adam(model:parameters(), {lr = p.lr}), epoch = 0, params = p}
end

-- One pass over the training set. Logs the training loss (with beta and the KL weight),
-- the training negative ELBO, the KL weight and the seconds the pass took.
function recipe.train_epoch(state, d, epoch, log)
  local p, model, opt = state.params, state.model, state.opt
  local t0 = ember._clock()
  local batches = #d.loader
  local weight = p.beta
  for x, _, b in d.loader:iter() do
    if p.likelihood == 'bernoulli' then x = ember.bernoulli(x) end
    if p.kl_warmup > 0 then
      weight = p.beta * math.min(1, ((epoch - 1) + (b - 1) / batches) / p.kl_warmup)
    end
    local rec, kl = elbo_terms(model, x)
    local loss = rec:mean() + kl:mean() * weight
    opt:zero_grad()
    loss:backward()
    opt:step()
    log{train_loss = loss, train_neg_elbo = (rec + kl):mean()}
  end
  state.epoch = epoch
  log{train_seconds = ember._clock() - t0, kl_weight = weight}
end

-- Test negative ELBO (nats per image) and its parts; after the last epoch also the
-- IWAE estimate of the test NLL with iw_k samples.
function recipe.evaluate(state, d)
  local p, model = state.params, state.model
  return ember.no_grad(function()
    local rec_sum, kl_sum, n = 0, 0, d.test_x:size(1)
    for first = 1, n, 1000 do
      local x = d.test_x:narrow(1, first, math.min(1000, n - first + 1))
      local rec, kl = elbo_terms(model, x)
      rec_sum, kl_sum = rec_sum + rec:sum():item(), kl_sum + kl:sum():item()
    end
    local out = {test_rec = rec_sum / n, test_kl = kl_sum / n, test_neg_elbo = (rec_sum + kl_sum) / n}
    if state.epoch >= p.epochs and p.iw_k > 0 then
      local t0 = ember._clock()
      local _, nll = latent.iwae_nll(model, model, d.test_x, {k = p.iw_k})
      out.test_iwae_nll, out.iwae_seconds = nll, ember._clock() - t0
    end
    return out
  end)
end

-- ---- pictures -------------------------------------------------------------------------------

-- Rows that walk from test image a_i to b_i: [a_i, decoded path (steps), b_i].
local function interpolation_rows(model, xa, xb, steps, mode)
  local za, zb = model:encode(xa), model:encode(xb)
  local path = latent.interpolate(za, zb, steps, {mode = mode}) -- [P x steps x L]
  local pairs_n = xa:size(1)
  local decoded = model:decode_images(path:reshape(pairs_n * steps, za:size(2)))
    :reshape(pairs_n, steps, 1, 28, 28)
  local rows = ember.cat({xa:reshape(pairs_n, 1, 1, 28, 28), decoded, xb:reshape(pairs_n, 1, 1, 28, 28)}, 2)
  return rows:reshape(pairs_n * (steps + 2), 1, 28, 28)
end

--- recipe.generate(state, params, n) -> n samples from the prior, decoded to their
--- Bernoulli means [n x 1 x 28 x 28] in [0, 1] (as samples.png), for scripts/quality.lua.
function recipe.generate(state, p, n)
  local model = state.model
  return ae.in_chunks(n, 1000, function(k) return model:decode_images(ember.randn(k, p.latent)) end)
end

-- Writes the pictures listed in the header into out_dir; n = images in samples.png.
function recipe.sample(state, p, out_dir, n)
  local model = state.model
  local test_x, test_y, classes = load_split(p, 'test')
  ember.no_grad(function()
    local nrow = math.max(1, math.ceil(math.sqrt(n)))
    image.save_grid(model:decode_images(ember.randn(n, p.latent)), out_dir .. '/samples.png',
                    {nrow = nrow, scale = 2})

    local m = math.min(32, test_x:size(1))
    local originals = test_x:narrow(1, 1, m)
    local recons = model:decode_images(model:encode(originals))
    image.save_grid(ae.pairs_of_rows(originals:reshape(m, 1, 28, 28), recons, 8),
                    out_dir .. '/reconstructions.png', {nrow = 8, scale = 2})

    local pairs_n = math.min(8, test_x:size(1) // 2)
    if pairs_n >= 1 then
      local xa, xb = test_x:narrow(1, 1, pairs_n), test_x:narrow(1, pairs_n + 1, pairs_n)
      for _, mode in ipairs {'linear', 'slerp'} do
        image.save_grid(interpolation_rows(model, xa, xb, 10, mode),
                        out_dir .. '/interpolation_' .. mode .. '.png', {nrow = 12, scale = 2})
      end
    end

    if p.latent == 2 then
      local grid = latent.manifold_grid(function(z) return model:decode_images(z) end, 20)
      image.save_grid(grid, out_dir .. '/manifold.png', {nrow = 20, padding = 0, scale = 2})
      local shown = math.min(5000, test_x:size(1))
      local codes = latent.codes(model, test_x:narrow(1, 1, shown))
      plot.scatter(codes, out_dir .. '/latent_scatter.png', {
        labels = test_y:narrow(1, 1, shown), names = classes, xlabel = 'z_1 (mean)', ylabel = 'z_2 (mean)',
        title = string.format('test codes of %d %s images', shown, p.dataset), equal = true})
    end
  end)
end

return recipe
