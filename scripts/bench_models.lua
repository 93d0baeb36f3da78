-- bench_models.lua MODEL STEPS [CHUNKS] — ember's side of `make bench-peer`:
-- one training step of a benchmark model of DESIGN.md (B1 vae, B2 dcgan,
-- B3 cnn, B4 gan2d), timed on synthetic data of the real shapes (the step's
-- time does not depend on the pixel values). scripts/bench_models_torch.py is
-- the same models, step for step, in PyTorch.
--
-- Prints one line: `MODEL ms_per_step_median chunk1 chunk2 ...` (the steps are
-- split into CHUNKS equal chunks after a warm-up; each chunk's mean is one
-- sample, the median of the samples the figure).
--   ember -e "ember.set_num_threads(2)" scripts/bench_models.lua vae 300 5
local ember = require 'ember'
local nn, optim, losses = ember.nn, ember.optim, ember.losses

local model, steps, chunks = arg[1], tonumber(arg[2] or 200), tonumber(arg[3] or 5)
ember.manual_seed(1)

local function bce_mean(logits, target)
  return losses.bce_with_logits(logits, target, { reduction = 'mean' })
end

local builders = {}

-- B1: enc 784-400 ReLU, heads 400->20 (mu, logvar); dec 20-400 ReLU-784 logits;
-- BCE summed over pixels + analytic KL, mean over the batch; batch 128; Adam 1e-3.
function builders.vae()
  local enc = nn.Sequential(nn.Linear(784, 400), nn.ReLU())
  local mu_head, lv_head = nn.Linear(400, 20), nn.Linear(400, 20)
  local dec = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
  local params = {}
  for _, m in ipairs { enc, mu_head, lv_head, dec } do
    for _, p in ipairs(m:parameters()) do params[#params + 1] = p end
  end
  local opt = optim.Adam(params, { lr = 1e-3 })
  local B = 128
  local x = ember.rand(B, 784)
  return function()
    opt:zero_grad()
    local h = enc(x)
    local mu, logvar = mu_head(h), lv_head(h)
    local z = losses.reparameterize(mu, logvar)
    local rec = losses.bce_with_logits(dec(z), x, { reduction = 'sum' })
    local kl = losses.kl_normal(mu, logvar, { reduction = 'sum' })
    local loss = (rec + kl) / B
    loss:backward()
    opt:step()
  end
end

-- B2: DCGAN-28, batch 64; one D update on real + fake, one G update.
function builders.dcgan()
  local G = nn.Sequential(
    nn.ConvTranspose2d(100, 256, 7, { stride = 1, padding = 0 }), nn.BatchNorm2d(256), nn.ReLU(),
    nn.ConvTranspose2d(256, 128, 4, { stride = 2, padding = 1 }), nn.BatchNorm2d(128), nn.ReLU(),
    nn.ConvTranspose2d(128, 1, 4, { stride = 2, padding = 1 }), nn.Tanh())
  local D = nn.Sequential(
    nn.Conv2d(1, 64, 4, { stride = 2, padding = 1 }), nn.LeakyReLU(0.2),
    nn.Conv2d(64, 128, 4, { stride = 2, padding = 1 }), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
    nn.Conv2d(128, 1, 7, { stride = 1, padding = 0 }))
  local opt_g = optim.Adam(G:parameters(), { lr = 2e-4, betas = { 0.5, 0.999 } })
  local opt_d = optim.Adam(D:parameters(), { lr = 2e-4, betas = { 0.5, 0.999 } })
  local B = 64
  local real = ember.rand(B, 1, 28, 28) * 2 - 1
  local ones, zeros = ember.ones(B), ember.zeros(B)
  return function()
    local z = ember.randn(B, 100, 1, 1)
    local fake = G(z)
    opt_d:zero_grad()
    local d_loss = bce_mean(D(real):view(-1), ones) + bce_mean(D(fake:detach()):view(-1), zeros)
    d_loss:backward()
    opt_d:step()
    opt_g:zero_grad()
    local g_loss = bce_mean(D(fake):view(-1), ones)
    g_loss:backward()
    opt_g:step()
  end
end

-- B3: Conv(1,32,k3,p1) ReLU MaxPool2 -> Conv(32,64,k3,p1) ReLU MaxPool2 -> Flatten
-- -> Linear(3136,128) ReLU -> Linear(128,10); cross-entropy; Adam 1e-3; batch 128.
function builders.cnn()
  local net = nn.Sequential(
    nn.Conv2d(1, 32, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
  local opt = optim.Adam(net:parameters(), { lr = 1e-3 })
  local B = 128
  local x = ember.rand(B, 1, 28, 28)
  local y = ember.randint(1, 11, { B })
  return function()
    opt:zero_grad()
    local loss = losses.cross_entropy(net(x), y)
    loss:backward()
    opt:step()
  end
end

-- B4: G z256 -> 128 ReLU -> 128 ReLU -> 2; D 2 -> 128 ReLU -> 1 logit; Adam 1e-4,
-- betas (0.5, 0.999); batch 512; non-saturating loss; fresh noise every step.
function builders.gan2d()
  local G = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
  local D = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 1))
  local opt_g = optim.Adam(G:parameters(), { lr = 1e-4, betas = { 0.5, 0.999 } })
  local opt_d = optim.Adam(D:parameters(), { lr = 1e-4, betas = { 0.5, 0.999 } })
  local B = 512
  local real = ember.randn(B, 2)
  local ones, zeros = ember.ones(B), ember.zeros(B)
  return function()
    local fake = ember.no_grad(function() return G(ember.randn(B, 256)) end)
    opt_d:zero_grad()
    local d_loss = bce_mean(D(real):view(-1), ones) + bce_mean(D(fake):view(-1), zeros)
    d_loss:backward()
    opt_d:step()
    opt_g:zero_grad()
    local g_loss = bce_mean(D(G(ember.randn(B, 256))):view(-1), ones)
    g_loss:backward()
    opt_g:step()
  end
end

local build = builders[model]
if not build then
  io.stderr:write('bench_models: unknown model ' .. tostring(model) .. ' (vae, dcgan, cnn, gan2d)\n')
  os.exit(2)
end
local step = build()
local warm = math.max(3, steps // 10)
for _ = 1, warm do step() end
local per = math.max(1, steps // chunks)
local samples = {}
for c = 1, chunks do
  local t0 = ember._clock()
  for _ = 1, per do step() end
  samples[c] = (ember._clock() - t0) * 1000 / per
end
local sorted = { table.unpack(samples) }
table.sort(sorted)
local med = sorted[(#sorted + 1) // 2]
if #sorted % 2 == 0 then med = (sorted[#sorted // 2] + sorted[#sorted // 2 + 1]) / 2 end
local parts = {}
for i, s in ipairs(samples) do parts[i] = ('%.3f'):format(s) end
print(('%s %.3f %s'):format(model, med, table.concat(parts, ' ')))
