-- examples/autoencoder.lua — a plain autoencoder on Fashion-MNIST or MNIST digits.
--
-- The encoder squeezes each 28 x 28 image (784 numbers) into a short code (latent = 20
-- numbers); the decoder rebuilds the image from the code alone. Training minimises the
-- reconstruction error, nothing else: nothing asks the codes to fill any particular
-- region, so they scatter over an irregular, lumpy set with empty space ("holes")
-- between and around the clusters. Decoding codes drawn at random — even from a
-- Gaussian with the same per-dimension mean and spread as the real codes — lands mostly
-- in those holes and gives smudges rather than clothing. examples/vae.lua fixes that.
--
--   ember run examples/autoencoder.lua --out runs/ae
--   ember run examples/autoencoder.lua --set arch=conv --set latent=32
--   ember run examples/autoencoder.lua --set dataset=mnist --set epochs=30
--   ember sample runs/ae --n 100
--
-- Each epoch reports test_mse (mean squared error per pixel of the reconstructed image,
-- pixels in [0, 1]) and test_bce (binary cross-entropy summed over the 784 pixels, nats
-- per image: comparable with the VAE's reconstruction term). Pictures in RUN/samples/:
-- reconstructions.png (rows of originals above rows of their reconstructions) and
-- random_codes.png (decoded codes drawn from N(mean, std^2) per dimension, with mean and
-- std measured on the codes of the first 10000 training images; kept in the model as
-- the buffers code_mean and code_std).
--
-- In the REPL: local ae = ember.latent.load_run('runs/ae').model
--              local z = ae:encode(x); local img = ae:decode_images(z)
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
local losses = require 'ember.losses'
local data = require 'ember.data'
local image = require 'ember.image'
local latent = require 'ember.latent'
local ae = require 'ember.autoencoders'

local recipe = {
  name = 'autoencoder',
  description = 'plain autoencoder: reconstructions, and random codes that decode to garbage',
  params = {
    dataset = {default = 'fashion', type = 'string', choices = {'fashion', 'mnist'},
               help = 'Fashion-MNIST (60000/10000) or MNIST digits (8004/1996)'},
    arch = {default = 'mlp', type = 'string', choices = {'mlp', 'conv'},
            help = 'fully connected, or two stride-2 convolutions each way around the hidden layers'},
    latent = {default = 20, type = 'integer', min = 1, help = 'size of the code'},
    hidden = {default = '400', type = 'string',
              help = "hidden layer sizes, encoder order, comma-separated ('512,256'); the decoder mirrors them"},
    loss = {default = 'bce', type = 'string', choices = {'bce', 'mse'},
            help = 'training loss: BCE on logits, or squared error of the sigmoid output'},
    epochs = {default = 10, type = 'integer', min = 1, help = 'passes over the training set'},
    batch = {default = 128, type = 'integer', min = 1, help = 'images per step'},
    lr = {default = 1e-3, type = 'number', min = 0, min_exclusive = true, help = 'Adam learning rate'},
    train_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N training images (0: all)'},
    test_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N test images (0: all)'},
    n_samples = {default = 64, type = 'integer', min = 1, help = 'images in random_codes.png'},
  },
  main_metric = {name = 'test_mse', goal = 'min'},
}

local PIXELS = ae.PIXELS

-- ---- the model ------------------------------------------------------------------------

local Autoencoder = nn.Module:extend('Autoencoder')

-- opts: arch, latent, hidden (list of sizes, encoder order).
function Autoencoder:init(opts)
  self.latent_size = opts.latent
  self.encoder = nn.Sequential()
  local feat = ae.add_encoder_body(self.encoder, opts.arch, opts.hidden)
  self.encoder:add(nn.Linear(feat, opts.latent))
  self.decoder = ae.decoder(opts.arch, opts.latent, opts.hidden)
  -- Per-dimension mean and std of the training codes (for random_codes.png).
  self:register_buffer('code_mean', ember.zeros(opts.latent))
  self:register_buffer('code_std', ember.ones(opts.latent))
end

--- ae:encode(x) -> codes [N x latent] for images x [N x 784] or [N x 1 x 28 x 28].
function Autoencoder:encode(x) return self.encoder(x:reshape(x:size(1), PIXELS)) end

--- ae:decode(z) -> pixel logits [N x 784] for codes z [N x latent].
function Autoencoder:decode(z) return self.decoder(z) end

--- ae:decode_images(z) -> images [N x 1 x 28 x 28] in [0, 1].
function Autoencoder:decode_images(z)
  return self:decode(z):sigmoid():reshape(z:size(1), 1, 28, 28)
end

--- ae:random_codes(n) -> [n x latent] drawn from N(code_mean, code_std^2) per dimension.
function Autoencoder:random_codes(n)
  return ember.randn(n, self.latent_size) * self.code_std + self.code_mean
end

--- ae:forward(x) -> logits [N x 784], codes [N x latent].
function Autoencoder:forward(x)
  local z = self:encode(x)
  return self:decode(z), z
end

-- The training loss of images x [N x 784] (summed over pixels, mean over images).
local function loss_of(model, x, kind)
  local logits = model(x)
  if kind == 'mse' then
    return losses.mse(logits:sigmoid(), x, {reduction = 'sum'}) / x:size(1)
  end
  return losses.bce_with_logits(logits, x, {reduction = 'sum'}) / x:size(1)
end

-- ---- data -------------------------------------------------------------------------------

local load_split = ae.load_split

function recipe.data(p)
  local train_x, train_y = load_split(p, 'train')
  local test_x, test_y = load_split(p, 'test')
  local loader = data.DataLoader(data.TensorDataset(train_x, train_y), {batch_size = p.batch, shuffle = true})
  print(string.format('%s: %d training images, %d test images', p.dataset, train_x:size(1), test_x:size(1)))
  return {loader = loader, train_x = train_x, test_x = test_x, test_y = test_y}
end

-- ---- training ----------------------------------------------------------------------------

function recipe.build(p)
  for _, name in ipairs {'latent', 'epochs', 'batch'} do
    if p[name] < 1 then error(('autoencoder: %s must be >= 1, got %d'):format(name, p[name]), 0) end
  end
  if p.lr <= 0 then error('autoencoder: lr must be > 0', 0) end
  local model = Autoencoder{arch = p.arch, latent = p.latent, hidden = ae.parse_sizes(p.hidden, 'autoencoder')}
  return {model = model, opt = optim.Adam(model:parameters(), {lr = p.lr}), params = p}
end

-- One pass over the training set; logs the mean training loss and the seconds it took.
function recipe.train_epoch(state, d, epoch, log)
  local p, model, opt = state.params, state.model, state.opt
  local t0 = ember._clock()
  for x in d.loader:iter() do
    local loss = loss_of(model, x, p.loss)
    opt:zero_grad()
    loss:backward()
    opt:step()
    log{train_loss = loss}
  end
  log{train_seconds = ember._clock() - t0}
end

-- Test reconstruction errors; also refits the code statistics on training codes.
function recipe.evaluate(state, d)
  local model = state.model
  return ember.no_grad(function()
    local mse_sum, bce_sum, n = 0, 0, d.test_x:size(1)
    for first = 1, n, 1000 do
      local x = d.test_x:narrow(1, first, math.min(1000, n - first + 1))
      local logits = model(x)
      mse_sum = mse_sum + losses.mse(logits:sigmoid(), x, {reduction = 'sum'}):item()
      bce_sum = bce_sum + losses.bce_with_logits(logits, x, {reduction = 'sum'}):item()
    end
    local fit_n = math.min(10000, d.train_x:size(1))
    local mean, std = latent.code_stats(latent.codes(model, d.train_x:narrow(1, 1, fit_n)))
    model.code_mean:copy_(mean)
    model.code_std:copy_(std)
    return {test_mse = mse_sum / (n * PIXELS), test_bce = bce_sum / n,
            code_std_mean = std:mean():item()}
  end)
end

-- ---- pictures -------------------------------------------------------------------------------

--- recipe.generate(state, params, n) -> n decoded random codes [n x 1 x 28 x 28] in [0, 1]
--- (the same draw as random_codes.png), for scripts/quality.lua: how the AE's holes score.
function recipe.generate(state, p, n)
  local model = state.model
  return ae.in_chunks(n, 1000, function(k) return model:decode_images(model:random_codes(k)) end)
end

-- reconstructions.png and random_codes.png (n decoded random codes) in out_dir.
function recipe.sample(state, p, out_dir, n)
  local model = state.model
  local test_x = load_split(p, 'test')
  ember.no_grad(function()
    local m = math.min(32, test_x:size(1))
    local originals = test_x:narrow(1, 1, m)
    local recons = model:decode_images(model:encode(originals))
    image.save_grid(ae.pairs_of_rows(originals:reshape(m, 1, 28, 28), recons, 8),
                    out_dir .. '/reconstructions.png', {nrow = 8, scale = 2})
    local nrow = math.max(1, math.ceil(math.sqrt(n)))
    image.save_grid(model:decode_images(model:random_codes(n)), out_dir .. '/random_codes.png',
                    {nrow = nrow, scale = 2})
  end)
end

return recipe
