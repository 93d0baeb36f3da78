-- examples/dcgan.lua — the B2 DCGAN on Fashion-MNIST (or MNIST digits), after
-- soumith/dcgan.torch: one file, options every run can override, a fixed noise batch to
-- watch progress, separate Adam optimizers (and state) for G and D.
--
--   ember run examples/dcgan.lua --out runs/dcgan                      -- 5 epochs, B2
--   ember run examples/dcgan.lua --set dataset=mnist --set epochs=20 --out runs/dcgan-mnist
--   ember sample runs/dcgan                                            -- grid + interpolation
--
-- B2: G z100 -> ConvT(100,256,k7,s1,p0) BN ReLU -> ConvT(256,128,k4,s2,p1) BN ReLU
--     -> ConvT(128,1,k4,s2,p1) Tanh;  D Conv(1,64,k4,s2,p1) LReLU0.2 -> Conv(64,128,k4,s2,p1)
--     BN LReLU0.2 -> Conv(128,1,k7,s1,p0) logit. Pixels in [-1, 1], DCGAN init (N(0, 0.02)),
--     non-saturating loss, Adam 2e-4 betas (0.5, 0.999), batch 64.
-- A full step is one D update on a real and a fake batch and one G update (ms_step in
-- metrics.csv). After every epoch samples/ gets epoch-NNN.png (the fixed noise batch) and
-- losses.png (D and G loss curves from metrics.csv); `ember sample` writes samples.png and
-- interpolation.png (rows: straight lines between pairs of noise vectors).
-- G's BatchNorm uses batch statistics when sampling too (as in the original DCGAN code).
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
local losses = require 'ember.losses'
local data = require 'ember.data'
local image = require 'ember.image'
local gan = require 'ember.gan'

local recipe = {
  name = 'dcgan',
  description = 'B2 DCGAN on Fashion-MNIST or MNIST digits (28 x 28)',
  params = {
    dataset = {default = 'fashion', type = 'string', choices = {'fashion', 'mnist'}, help = 'Fashion-MNIST or MNIST digits'},
    epochs = {default = 5, type = 'integer', min = 1, help = 'passes over the training set'},
    batch = {default = 64, type = 'integer', min = 1, help = 'images per step (real and fake each)'},
    z_dim = {default = 100, type = 'integer', min = 1, help = 'noise dimension'},
    lr_g = {default = 2e-4, type = 'number', min = 0, min_exclusive = true, help = "G's Adam learning rate"},
    lr_d = {default = 2e-4, type = 'number', min = 0, min_exclusive = true, help = "D's Adam learning rate"},
    beta1 = {default = 0.5, type = 'number', min = 0, max = 1, max_exclusive = true, help = 'Adam beta1'},
    beta2 = {default = 0.999, type = 'number', min = 0, max = 1, max_exclusive = true, help = 'Adam beta2'},
    train_size = {default = 0, type = 'integer', min = 0, help = 'use the first N training images (0: all; for quick tests)'},
    n_samples = {default = 64, type = 'integer', min = 1, help = 'images in the sample grid'},
    log_every = {default = 50, type = 'integer', min = 1, help = 'steps per metrics row'},
    grid_every = {default = 0, type = 'integer', min = 0, help = 'steps between progress grids (0: once per epoch)'},
  },
}

--- recipe.generator(z_dim) -> the B2 generator: z [N x z_dim x 1 x 1] -> [N x 1 x 28 x 28] in [-1, 1].
function recipe.generator(z_dim)
  return nn.Sequential(
    nn.ConvTranspose2d(z_dim, 256, 7, {stride = 1, padding = 0}), nn.BatchNorm2d(256), nn.ReLU(),
    nn.ConvTranspose2d(256, 128, 4, {stride = 2, padding = 1}), nn.BatchNorm2d(128), nn.ReLU(),
    nn.ConvTranspose2d(128, 1, 4, {stride = 2, padding = 1}), nn.Tanh())
end

--- recipe.discriminator() -> the B2 discriminator: [N x 1 x 28 x 28] -> logits [N].
local Discriminator = nn.Module:extend('Discriminator')
function Discriminator:init()
  self.body = nn.Sequential(
    nn.Conv2d(1, 64, 4, {stride = 2, padding = 1}), nn.LeakyReLU(0.2),
    nn.Conv2d(64, 128, 4, {stride = 2, padding = 1}), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
    nn.Conv2d(128, 1, 7, {stride = 1, padding = 0}))
end
function Discriminator:forward(x) return self.body(x):view(-1) end
recipe.discriminator = function() return Discriminator() end

function recipe.build(p)
  local G = nn.init.dcgan_(recipe.generator(p.z_dim))
  local D = nn.init.dcgan_(recipe.discriminator())
  return {
    G = G, D = D,
    opt_g = optim.Adam(G:parameters(), {lr = p.lr_g, betas = {p.beta1, p.beta2}}),
    opt_d = optim.Adam(D:parameters(), {lr = p.lr_d, betas = {p.beta1, p.beta2}}),
    fixed_z = ember.randn(p.n_samples, p.z_dim, 1, 1),  -- the same noise for every progress grid
    adv = losses.adversarial('non_saturating'),
    z_dim = p.z_dim, dataset = p.dataset,
  }
end

function recipe.data(p)
  local ds = p.dataset == 'mnist' and data.mnist{split = 'train'} or data.fashion_mnist{split = 'train'}
  if p.train_size > 0 and p.train_size < ds:size() then ds = data.Subset(ds, ember.arange(1, p.train_size + 1)) end
  local loader = data.DataLoader(ds, {batch_size = p.batch, shuffle = true, drop_last = true,
                                      transform = data.transforms.scale(-1, 1)})
  return {train = loader, steps_per_epoch = #loader}
end

--- recipe.generate(state, params, n) -> n images [n x 1 x 28 x 28] in [0, 1] (for ember.quality).
function recipe.generate(state, p, n)
  return gan.sample_images(state.G, n, function(k) return ember.randn(k, state.z_dim, 1, 1) end)
end

-- Saves the grid of the fixed noise batch and the loss curves into dir.
local function progress_pictures(state, dir, name)
  os.execute('mkdir -p ' .. dir .. '/samples')
  local G = state.G
  local imgs = ember.no_grad(function() return G(state.fixed_z) end)
  image.save_grid(imgs, ('%s/samples/%s.png'):format(dir, name), {nrow = 8, range = {-1, 1}, scale = 2})
  gan.save_loss_curves(dir, 'DCGAN losses (mean per logged window)')
end

-- One full step: a D update on a real and a fake batch, then a G update.
function recipe.train_step(state, batch, step, log)
  local real = batch[1]
  local n = real:size(1)
  local G, D, adv = state.G, state.D, state.adv
  local t0 = ember._clock()
  local fake = G(ember.randn(n, state.z_dim, 1, 1))
  state.opt_d:zero_grad()
  local real_logits = D(real)
  local fake_logits = D(fake:detach())
  local d_loss = adv.d_loss(real_logits, fake_logits)
  d_loss:backward()
  state.opt_d:step()
  state.opt_g:zero_grad()
  local g_loss = adv.g_loss(D(fake))
  g_loss:backward()
  state.opt_g:step()
  local ms = (ember._clock() - t0) * 1000
  log{d_loss = d_loss, g_loss = g_loss, ms_step = ms,
      d_real = real_logits:sigmoid():mean(), d_fake = fake_logits:sigmoid():mean()}
  if log.dir then
    local spe = state.steps_per_epoch
    if state.grid_every and state.grid_every > 0 and step % state.grid_every == 0 then
      progress_pictures(state, log.dir, ('step-%06d'):format(step))
    end
    if spe and step % spe == 0 then progress_pictures(state, log.dir, ('epoch-%03d'):format(step // spe)) end
  end
end

-- The run loop gives data to train_step only; keep the epoch length in the state.
local build = recipe.build
function recipe.build(p)
  local state = build(p)
  state.grid_every = p.grid_every
  local n = p.train_size > 0 and p.train_size or (p.dataset == 'mnist' and 8004 or 60000)
  state.steps_per_epoch = n // p.batch
  return state
end

-- samples.png (n fresh samples), interpolation.png (8 rows of 10 steps between two noise
-- vectors), fixed.png (the fixed noise batch).
function recipe.sample(state, p, out_dir, n)
  local G = state.G
  G:train()
  local imgs = recipe.generate(state, p, n)
  image.save_grid(imgs, out_dir .. '/samples.png', {nrow = math.max(1, math.floor(math.sqrt(n) + 0.5)), scale = 2})
  local rows, steps = 8, 10
  local a, b = ember.randn(rows, 1, state.z_dim), ember.randn(rows, 1, state.z_dim)
  local t = ember.linspace(0, 1, steps):view(1, steps, 1)
  local z = (a * (1 - t) + b * t):reshape(rows * steps, state.z_dim, 1, 1)
  local strip = ember.no_grad(function() return G(z) end)
  image.save_grid(strip, out_dir .. '/interpolation.png', {nrow = steps, range = {-1, 1}, scale = 2})
  local fixed = ember.no_grad(function() return G(state.fixed_z) end)
  image.save_grid(fixed, out_dir .. '/fixed.png', {nrow = 8, range = {-1, 1}, scale = 2})
end

return recipe
