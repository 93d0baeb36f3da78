-- examples/denoising_autoencoder.lua — a denoising autoencoder (Vincent et al. 2008) on
-- Fashion-MNIST or MNIST digits.
--
-- The same encoder/decoder as examples/autoencoder.lua, but each training image is
-- corrupted before it goes in (fresh noise every batch) and the loss compares the output
-- with the clean image. To rebuild the clean image from a code of 20 numbers the network
-- has to learn what clothing looks like — noise does not survive the bottleneck.
--
--   ember run examples/denoising_autoencoder.lua --out runs/dae
--   ember run examples/denoising_autoencoder.lua --set noise=salt_and_pepper --set level=0.3
--   ember run examples/denoising_autoencoder.lua --set arch=conv --set latent=64
--
-- noise = 'gaussian': x + N(0, level^2) per pixel, clamped to [0, 1];
-- noise = 'salt_and_pepper': each pixel, with probability level, turns black or white.
-- Each epoch reports the test PSNR (peak signal-to-noise ratio over [0, 1] images,
-- 10 log10(1 / MSE) per image, averaged over the test set) of the noisy inputs
-- (test_psnr_noisy) and of the network's outputs (test_psnr_denoised), and their
-- difference test_psnr_gain in dB. The test set is corrupted once with a fixed seed,
-- so every epoch and every run is scored on the same noisy images.
-- Pictures in RUN/samples/: denoising.png (groups of three rows: noisy, denoised, clean).
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
local losses = require 'ember.losses'
local data = require 'ember.data'
local image = require 'ember.image'
local ae = require 'ember.autoencoders'

local recipe = {
  name = 'denoising_autoencoder',
  description = 'denoising autoencoder: noisy in, clean out; PSNR of input vs output',
  params = {
    dataset = {default = 'fashion', type = 'string', choices = {'fashion', 'mnist'},
               help = 'Fashion-MNIST (60000/10000) or MNIST digits (8004/1996)'},
    arch = {default = 'mlp', type = 'string', choices = {'mlp', 'conv'},
            help = 'fully connected, or two stride-2 convolutions each way around the hidden layers'},
    latent = {default = 20, type = 'integer', min = 1, help = 'size of the code'},
    hidden = {default = '400', type = 'string',
              help = "hidden layer sizes, encoder order, comma-separated; the decoder mirrors them"},
    noise = {default = 'gaussian', type = 'string', choices = {'gaussian', 'salt_and_pepper'},
             help = 'the corruption'},
    level = {default = 0.5, type = 'number',
             help = 'gaussian: std of the noise; salt_and_pepper: fraction of pixels hit'},
    loss = {default = 'bce', type = 'string', choices = {'bce', 'mse'},
            help = 'training loss against the clean image: BCE on logits, or squared error'},
    epochs = {default = 10, type = 'integer', min = 1, help = 'passes over the training set'},
    batch = {default = 128, type = 'integer', min = 1, help = 'images per step'},
    lr = {default = 1e-3, type = 'number', min = 0, min_exclusive = true, help = 'Adam learning rate'},
    train_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N training images (0: all)'},
    test_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N test images (0: all)'},
    n_samples = {default = 24, type = 'integer', min = 1, help = 'test images in denoising.png'},
  },
  main_metric = {name = 'test_psnr_denoised', goal = 'max'},
}

local PIXELS = ae.PIXELS

-- ---- the model ------------------------------------------------------------------------

local DenoisingAutoencoder = nn.Module:extend('DenoisingAutoencoder')

-- opts: arch, latent, hidden (list of sizes, encoder order).
function DenoisingAutoencoder:init(opts)
  self.latent_size = opts.latent
  self.encoder = nn.Sequential()
  local feat = ae.add_encoder_body(self.encoder, opts.arch, opts.hidden)
  self.encoder:add(nn.Linear(feat, opts.latent))
  self.decoder = ae.decoder(opts.arch, opts.latent, opts.hidden)
end

--- dae:encode(x) -> codes [N x latent] for (noisy) images x [N x 784] or [N x 1 x 28 x 28].
function DenoisingAutoencoder:encode(x) return self.encoder(x:reshape(x:size(1), PIXELS)) end

--- dae:decode(z) -> pixel logits [N x 784].
function DenoisingAutoencoder:decode(z) return self.decoder(z) end

--- dae:decode_images(z) -> images [N x 1 x 28 x 28] in [0, 1].
function DenoisingAutoencoder:decode_images(z)
  return self:decode(z):sigmoid():reshape(z:size(1), 1, 28, 28)
end

--- dae:forward(x) -> logits [N x 784] of the clean image guessed from x.
function DenoisingAutoencoder:forward(x) return self:decode(self:encode(x)) end

--- dae:denoise(x) -> the cleaned images [N x 784] in [0, 1].
function DenoisingAutoencoder:denoise(x) return self:forward(x):sigmoid() end

-- The corruption named by the params: a function of a batch [N x 784] in [0, 1].
local function corruption(p)
  if p.noise == 'gaussian' then return data.transforms.gaussian_noise(p.level, {clamp = {0, 1}}) end
  return data.transforms.salt_and_pepper(p.level)
end

-- PSNR in dB of each row of a against the row of b (pixels in [0, 1]): [N].
local function psnr(a, b)
  local mse = (a - b):square():mean(2):clamp(1e-10)
  return mse:log() * (-10 / math.log(10))
end

-- ---- data -------------------------------------------------------------------------------

-- Images of one split as flat pixels [N x 784] in [0, 1].
local function load_split(p, split) return (ae.load_split(p, split)) end

-- The clean test images and a noisy copy made once with a fixed seed.
local function test_pair(p)
  local clean = load_split(p, 'test')
  local rng = ember.get_rng_state()
  ember.manual_seed(20240602)
  local noisy = corruption(p)(clean)
  ember.set_rng_state(rng)
  return clean, noisy
end

function recipe.data(p)
  local train_x = load_split(p, 'train')
  local test_x, test_noisy = test_pair(p)
  local loader = data.DataLoader(data.TensorDataset(train_x), {batch_size = p.batch, shuffle = true})
  print(string.format('%s: %d training images, %d test images; noise %s at level %g', p.dataset,
                      train_x:size(1), test_x:size(1), p.noise, p.level))
  return {loader = loader, test_x = test_x, test_noisy = test_noisy, corrupt = corruption(p)}
end

-- ---- training ----------------------------------------------------------------------------

function recipe.build(p)
  for _, name in ipairs {'latent', 'epochs', 'batch'} do
    if p[name] < 1 then error(('denoising_autoencoder: %s must be >= 1, got %d'):format(name, p[name]), 0) end
  end
  if p.lr <= 0 then error('denoising_autoencoder: lr must be > 0', 0) end
  if p.level < 0 or (p.noise == 'salt_and_pepper' and p.level > 1) then
    error(('denoising_autoencoder: level must be >= 0 (and <= 1 for salt_and_pepper), got %g'):format(p.level), 0)
  end
  local model = DenoisingAutoencoder{arch = p.arch, latent = p.latent, hidden = ae.parse_sizes(p.hidden, 'denoising_autoencoder')}
  return {model = model, opt = optim.Adam(model:parameters(), {lr = p.lr}), params = p}
end

-- One pass: corrupt each batch afresh, reconstruct the clean batch. Logs the mean loss.
function recipe.train_epoch(state, d, epoch, log)
  local p, model, opt = state.params, state.model, state.opt
  local t0 = ember._clock()
  for clean in d.loader:iter() do
    local logits = model(d.corrupt(clean))
    local loss
    if p.loss == 'mse' then
      loss = losses.mse(logits:sigmoid(), clean, {reduction = 'sum'}) / clean:size(1)
    else
      loss = losses.bce_with_logits(logits, clean, {reduction = 'sum'}) / clean:size(1)
    end
    opt:zero_grad()
    loss:backward()
    opt:step()
    log{train_loss = loss}
  end
  log{train_seconds = ember._clock() - t0}
end

-- Mean test PSNR of the noisy inputs and of the outputs, and the output's MSE per pixel.
function recipe.evaluate(state, d)
  local model = state.model
  return ember.no_grad(function()
    local noisy_sum, out_sum, mse_sum, n = 0, 0, 0, d.test_x:size(1)
    for first = 1, n, 1000 do
      local count = math.min(1000, n - first + 1)
      local clean, noisy = d.test_x:narrow(1, first, count), d.test_noisy:narrow(1, first, count)
      local out = model:denoise(noisy)
      noisy_sum = noisy_sum + psnr(noisy, clean):sum():item()
      out_sum = out_sum + psnr(out, clean):sum():item()
      mse_sum = mse_sum + (out - clean):square():sum():item()
    end
    return {test_psnr_noisy = noisy_sum / n, test_psnr_denoised = out_sum / n,
            test_psnr_gain = (out_sum - noisy_sum) / n, test_mse = mse_sum / (n * PIXELS)}
  end)
end

-- ---- pictures -------------------------------------------------------------------------------

-- denoising.png: for each group of 8 test images, a row noisy, a row denoised, a row clean.
function recipe.sample(state, p, out_dir, n)
  local model = state.model
  local clean, noisy = test_pair(p)
  n = math.min(n, clean:size(1))
  if n >= 8 then n = n - n % 8 end
  ember.no_grad(function()
    local parts = {}
    for first = 1, n, 8 do
      local count = math.min(8, n - first + 1)
      local nb = noisy:narrow(1, first, count)
      parts[#parts + 1] = nb
      parts[#parts + 1] = model:denoise(nb)
      parts[#parts + 1] = clean:narrow(1, first, count)
    end
    image.save_grid(ember.cat(parts, 1):reshape(-1, 1, 28, 28), out_dir .. '/denoising.png',
                    {nrow = math.min(8, n), scale = 2})
  end)
end

return recipe
