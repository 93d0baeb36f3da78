-- Specs for the autoencoder family: examples/{autoencoder, denoising_autoencoder, vae,
-- cvae}.lua each train one epoch on 512 images through `ember run` (EMBER_BIN), leave a
-- complete run folder with finite metrics that beat the untrained model, load back with
-- ember.latent.load_run, and feed scripts/ae_vs_vae.lua and scripts/class_check.lua.
-- Bad params and script arguments fail with messages.
local ember = require 'ember'
local recipe = require 'ember.recipe'
local latent = require 'ember.latent'
local image = require 'ember.image'
local h = require 'tests.lua.helpers.common'
local q, sh, exists = h.q, h.sh, h.exists

local ROOT = h.ROOT
local EMBER = h.EMBER

local function finite(v) return type(v) == 'number' and v == v and v > -math.huge and v < math.huge end

-- `ember run examples/NAME.lua` on a 512-image subset for one epoch, extra --set args
-- appended; returns the output and exit status.
local function run_recipe(name, dir, sets)
  local args = {'run', q(ROOT .. '/examples/' .. name .. '.lua'), '--out', q(dir), '--threads', '1',
                '--set', 'train_subset=512', '--set', 'test_subset=128', '--set', 'epochs=1'}
  for _, s in ipairs(sets or {}) do args[#args + 1] = '--set ' .. q(s) end
  return sh(q(EMBER) .. ' ' .. table.concat(args, ' '))
end

-- The metrics an untrained model of the recipe scores on the same subset.
local function untrained_metrics(name, sets)
  local overrides = {'train_subset=512', 'test_subset=128', 'epochs=1'}
  for _, s in ipairs(sets or {}) do overrides[#overrides + 1] = s end
  local r, p = ember.load_recipe(ROOT .. '/examples/' .. name .. '.lua', overrides)
  ember.manual_seed(1)
  local state = r.build(p)
  local saved_print = _G.print
  _G.print = function() end -- r.data announces the data set sizes
  local ok, d = pcall(r.data, p)
  _G.print = saved_print
  assert(ok, d)
  return r.evaluate(state, d)
end

local base = os.tmpname()
os.remove(base)
os.execute('mkdir -p ' .. q(base))

-- Each recipe trains once; the specs below inspect the folders.
local RUNS = {
  vae = {dir = base .. '/vae', sets = {'latent=2', 'arch=conv', 'n_samples=16', 'iw_k=5'}},
  vae_mlp = {recipe = 'vae', dir = base .. '/vae-mlp', sets = {'n_samples=16'}},
  autoencoder = {dir = base .. '/ae', sets = {'n_samples=16'}},
  denoising_autoencoder = {dir = base .. '/dae', sets = {'n_samples=8'}},
  cvae = {dir = base .. '/cvae', sets = {'n_samples=20', 'iw_k=10'}},
}
local outputs = {}
local function ensure_run(key)
  local spec = RUNS[key]
  if not outputs[key] then
    local out, code = run_recipe(spec.recipe or key, spec.dir, spec.sets)
    outputs[key] = {out = out, code = code}
  end
  return outputs[key], spec.dir
end

local PICTURES = {
  vae = {'samples.png', 'reconstructions.png', 'interpolation_linear.png', 'interpolation_slerp.png',
         'manifold.png', 'latent_scatter.png'},
  vae_mlp = {'samples.png', 'reconstructions.png', 'interpolation_linear.png', 'interpolation_slerp.png'},
  autoencoder = {'reconstructions.png', 'random_codes.png'},
  denoising_autoencoder = {'denoising.png'},
  cvae = {'class_grid.png', 'samples.png', 'style_transfer.png', 'reconstructions.png'},
}

describe('autoencoder recipes', function()
  teardown(function() os.execute('rm -rf ' .. q(base)) end)

  for _, key in ipairs {'vae', 'vae_mlp', 'autoencoder', 'denoising_autoencoder', 'cvae'} do
    it(key .. ' trains one epoch into a complete run folder with finite metrics', function()
      local res, dir = ensure_run(key)
      assert.are.equal(0, res.code, res.out)
      for _, f in ipairs {'config.lua', 'metrics.csv', 'log', 'checkpoint', 'result.lua', 'recipe.lua'} do
        assert.is_true(exists(dir .. '/' .. f), 'missing ' .. f)
      end
      for _, f in ipairs(PICTURES[key]) do
        assert.is_true(exists(dir .. '/samples/' .. f), 'missing samples/' .. f)
      end
      local result = recipe.files.read_lua(dir .. '/result.lua')
      assert.are.equal('finished', result.status)
      for name, v in pairs(result.metrics) do assert.is_true(finite(v), name .. ' is not finite') end
      local _, rows = recipe.files.read_csv(dir .. '/metrics.csv')
      assert.are.equal(1, #rows)
      assert.is_true(finite(rows[1].train_seconds) and finite(rows[1].train_loss))
    end)
  end

  it('the VAE beats its untrained self and reports an IWAE bound below the ELBO', function()
    local res, dir = ensure_run('vae_mlp')
    assert.are.equal(0, res.code, res.out)
    local m = recipe.files.read_lua(dir .. '/result.lua').metrics
    local before = untrained_metrics('vae')
    assert.is_true(m.test_neg_elbo < before.test_neg_elbo - 50,
      ('trained %g vs untrained %g'):format(m.test_neg_elbo, before.test_neg_elbo))
    assert.is_true(m.test_iwae_nll < m.test_neg_elbo)
    assert.is_true(math.abs(m.test_rec + m.test_kl - m.test_neg_elbo) < 1e-6 * m.test_neg_elbo)
    assert.is_true(m.test_kl > 0)
  end)

  it('the autoencoder reconstructs better than untrained and keeps its code statistics', function()
    local res, dir = ensure_run('autoencoder')
    assert.are.equal(0, res.code, res.out)
    local m = recipe.files.read_lua(dir .. '/result.lua').metrics
    local before = untrained_metrics('autoencoder')
    assert.is_true(m.test_mse < before.test_mse and m.test_bce < before.test_bce)
    local state = latent.load_run(dir)
    assert.is_true(state.model.code_std:min():item() > 0)
    assert.are.same({5, 20}, state.model:random_codes(5):shape())
  end)

  it('the VAE and the autoencoder generate images in [0, 1] for scripts/quality.lua', function()
    for _, key in ipairs {'vae_mlp', 'autoencoder'} do
      local res, dir = ensure_run(key)
      assert.are.equal(0, res.code, res.out)
      local r, params, state = recipe.load_run(dir)
      ember.manual_seed(3)
      local x = r.generate(state, params, 1001) -- more than one chunk of 1000
      assert.are.same({1001, 1, 28, 28}, x:shape())
      assert.is_true(x:min():item() >= 0 and x:max():item() <= 1)
      assert.is_true(x:std():item() > 0, key .. ' drew identical images')
      ember.manual_seed(3)
      local y = r.generate(state, params, 4)
      assert.is_true((x:narrow(1, 1, 4) - y):abs():max():item() < 1e-6, key .. ': the same seed must draw the same images')
    end
  end)

  it('the denoising autoencoder outputs a higher PSNR than untrained', function()
    local res, dir = ensure_run('denoising_autoencoder')
    assert.are.equal(0, res.code, res.out)
    local m = recipe.files.read_lua(dir .. '/result.lua').metrics
    local before = untrained_metrics('denoising_autoencoder')
    assert.is_true(m.test_psnr_denoised > before.test_psnr_denoised)
    assert.are.equal(before.test_psnr_noisy, m.test_psnr_noisy) -- the same fixed noisy test set
    assert.is_true(math.abs(m.test_psnr_gain - (m.test_psnr_denoised - m.test_psnr_noisy)) < 1e-9)
  end)

  it('the CVAE beats its untrained self; it generates on demand and encodes with labels', function()
    local res, dir = ensure_run('cvae')
    assert.are.equal(0, res.code, res.out)
    local m = recipe.files.read_lua(dir .. '/result.lua').metrics
    local before = untrained_metrics('cvae')
    assert.is_true(m.test_neg_elbo < before.test_neg_elbo - 50)
    assert.is_true(m.test_iwae_nll < m.test_neg_elbo)
    local cvae = latent.load_run(dir).model
    assert.are.same({3, 1, 28, 28}, cvae:generate(3, 4):shape())
    local mu, logvar = cvae:encode(ember.rand(2, 784), ember.tensor{1, 10})
    assert.are.same({2, 20}, mu:shape())
    assert.are.same({2, 20}, logvar:shape())
  end)

  it('a VAE run loads back for the latent tools', function()
    local res, dir = ensure_run('vae')
    assert.are.equal(0, res.code, res.out)
    local state, params = latent.load_run(dir)
    assert.are.equal('conv', params.arch)
    local vae = state.model
    assert.is_false(vae.training)
    local x = ember.rand(4, 1, 28, 28)
    local mu, logvar = vae:encode(x)
    assert.are.same({4, 2}, mu:shape())
    assert.are.same({4, 2}, logvar:shape())
    assert.are.same({4, 784}, vae:decode(mu):shape())
    local path = latent.interpolate(mu[1], mu[2], 6, {mode = 'slerp'})
    assert.are.same({6, 1, 28, 28}, vae:decode_images(path):shape())
    local grid, z = latent.manifold_grid(function(c) return vae:decode_images(c) end, 4)
    assert.are.same({16, 1, 28, 28}, grid:shape())
    assert.are.same({16, 2}, z:shape())
    -- the checkpoint holds the trained weights: the same codes as the run's own model
    local again = latent.load_run(dir).model
    assert.is_true((again:encode(x) - mu):abs():max():item() == 0)
  end)

  it('scripts/ae_vs_vae.lua draws both models side by side', function()
    local _, ae_dir = ensure_run('autoencoder')
    local _, vae_dir = ensure_run('vae_mlp')
    local out_png = base .. '/side.png'
    local out, code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/ae_vs_vae.lua') .. ' ' .. q(ae_dir) .. ' ' ..
                         q(vae_dir) .. ' ' .. q(out_png) .. ' 16')
    assert.are.equal(0, code, out)
    assert.truthy(out:find('left 16 decoded random codes of the autoencoder', 1, true))
    local img = image.load_png(out_png)
    -- two 4 x 4 grids of 28-pixel images with 2-pixel padding, an 8-pixel bar, scale 3
    assert.are.same({1, 122 * 3, (122 * 2 + 8) * 3}, img:shape())
    local bad, bad_code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/ae_vs_vae.lua') .. ' ' .. q(vae_dir) .. ' ' ..
                             q(vae_dir) .. ' ' .. q(out_png))
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('is a run of recipe vae, expected autoencoder', 1, true), bad)
    local usage, usage_code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/ae_vs_vae.lua'))
    assert.are.equal(2, usage_code)
    assert.truthy(usage:find('usage: ember scripts/ae_vs_vae.lua AE_RUN VAE_RUN OUT.png', 1, true))
  end)

  it('scripts/class_check.lua prints the share of samples a classifier labels as asked', function()
    if not exists(ROOT .. '/examples/classifier.lua') then
      pending('examples/classifier.lua is not there yet')
      return
    end
    local _, cvae_dir = ensure_run('cvae')
    local cls_dir = base .. '/classifier'
    local out, code = sh(q(EMBER) .. ' run ' .. q(ROOT .. '/examples/classifier.lua') .. ' --out ' .. q(cls_dir) ..
                         ' --threads 1 --set train_size=512 --set test_size=128 --set epochs=1')
    assert.are.equal(0, code, out)
    out, code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/class_check.lua') .. ' ' .. q(cvae_dir) .. ' ' ..
                   q(cls_dir) .. ' 5')
    assert.are.equal(0, code, out)
    local share = tonumber(out:match('CVAE samples labelled as the class asked for: ([%d.]+)%% of 50'))
    assert.is_truthy(share, out)
    local saved = recipe.files.read_lua(cvae_dir .. '/cvae_check.lua')
    assert.is_true(math.abs(saved.agreement * 100 - share) < 0.051)
    local bad, bad_code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/class_check.lua') .. ' ' .. q(cvae_dir) .. ' ' ..
                             q(base .. '/nowhere'))
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('has no checkpoint', 1, true), bad)
    bad, bad_code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/class_check.lua') .. ' ' .. q(cvae_dir) .. ' ' ..
                       q(cls_dir) .. ' 5 1 0')
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('TEMPERATURE must be a number > 0, got 0', 1, true), bad)
  end)

  it('every recipe builds its conv variant with the same encode/decode shapes', function()
    local x = ember.rand(3, 784)
    for _, name in ipairs {'vae', 'autoencoder', 'denoising_autoencoder', 'cvae'} do
      local r, p = ember.load_recipe(ROOT .. '/examples/' .. name .. '.lua', {'arch=conv', 'latent=7'})
      local model = r.build(p).model
      local y = name == 'cvae' and ember.tensor{1, 5, 10} or nil
      local z = model:encode(x, y)
      assert.are.same({3, 7}, z:shape())
      assert.are.same({3, 784}, model:decode(z, y):shape())
      assert.are.same({3, 1, 28, 28}, model:decode_images(z, y):shape())
      -- the gradient reaches the first convolution
      local loss = model:decode(model:encode(x, y), y):sum()
      loss:backward()
      local first = name == 'cvae' and model.features[2] or model.encoder[2]
      assert.is_true(first.weight.grad:abs():sum():item() > 0, name)
    end
  end)

  it('the CVAE with a learned class prior samples each class from its own Gaussian', function()
    local r, p = ember.load_recipe(ROOT .. '/examples/cvae.lua', {'prior=learned', 'latent=3'})
    local model = r.build(p).model
    local names = {}
    for name in model:named_parameters() do names[name] = true end
    assert.is_true(names.prior_mu and names.prior_logvar)
    ember.no_grad(function()
      model.prior_mu:copy_(ember.arange(30):reshape(10, 3))
      model.prior_logvar:fill_(math.log(0.25))
    end)
    local mu, logvar = model:prior(ember.tensor{2, 10})
    assert.are.same({{3, 4, 5}, {27, 28, 29}}, mu:totable())
    assert.is_true((logvar - math.log(0.25)):abs():max():item() < 1e-6)
    -- z = m_y + s_y eps: eps = 2 puts the code two prior std (0.5 each) above the class mean
    local z = model:prior_sample(ember.full({1, 3}, 2), 4)
    assert.is_true((z - ember.tensor{{10, 11, 12}}):abs():max():item() < 1e-5)
    assert.are.same({5, 1, 28, 28}, model:generate(5, 7):shape())
    -- the ELBO and the IWAE bound use the learned prior
    local state = r.build(p)
    state.epoch = p.epochs
    local m = ember.no_grad(function()
      return r.evaluate(state, {test_x = ember.rand(8, 784), test_y = ember.tensor{1, 2, 3, 4, 5, 6, 7, 8}})
    end)
    assert.is_true(finite(m.test_neg_elbo) and finite(m.test_iwae_nll) and m.test_kl > 0)
    -- prior=standard: no prior parameters, N(0, I) for every class
    local rs, ps = ember.load_recipe(ROOT .. '/examples/cvae.lua', {'latent=3', 'prior=standard'})
    local plain = rs.build(ps).model
    assert.is_nil(plain.prior_mu)
    local zero_mu, zero_logvar = plain:prior(ember.tensor{1, 2, 3})
    assert.are.same({3, 3}, zero_mu:shape())
    assert.are.equal(0, zero_mu:abs():sum():item() + zero_logvar:abs():sum():item())
    local eps = ember.randn(2, 3)
    assert.are.equal(0, (plain:prior_sample(eps, 5) - eps):abs():max():item())
  end)

  it('the CVAE fits a full-covariance Gaussian per class to its training codes and samples from it', function()
    local r, p = ember.load_recipe(ROOT .. '/examples/cvae.lua', {'latent=2'})
    local model = r.build(p).model
    assert.are.equal(0, model.fitted:item())
    assert.has_error(function() model:sample_codes(ember.randn(2, 2), 1, 'fitted') end,
      'cvae: sample_codes: no fitted Gaussians yet (call fit_codes)')
    -- Replace the encoder's mean by a known map so the codes of each class are known:
    -- class 1's codes lie on the line z2 = 2 z1 (a covariance no diagonal Gaussian has).
    local n = 4000
    ember.manual_seed(11)
    local t = ember.randn(n, 1)
    local codes = ember.cat({t, t * 2}, 2) + ember.tensor{{3, -1}}
    model.encode = function(_, x) return codes:narrow(1, math.tointeger(x[1][1]), x:size(1)) end
    local x = ember.arange(1, n + 1):view(n, 1) -- x[i][1] = i: the row of its code
    local y = ember.ones(n)
    y:narrow(1, n - 99, 100):fill_(2)            -- 100 codes of class 2; class 3..10: none
    model:fit_codes(x, y, 'fitted')
    assert.are.equal(1, model.fitted:item())
    assert.are.equal(0, model.mixed:item())
    local fitted_mean = model.fit_mean[1]
    assert.is_true((fitted_mean - ember.tensor{3, -1}):abs():max():item() < 0.1, tostring(fitted_mean))
    local f = model.fit_factor[1]
    local cov = f:matmul(f:t())                  -- should be [[1, 2], [2, 4]]
    assert.is_true((cov - ember.tensor{{1, 2}, {2, 4}}):abs():max():item() < 0.15, tostring(cov))
    -- draws from class 1 keep z2 = 2 z1 around the mean; a class without codes keeps p(z|y)
    local z = model:sample_codes(ember.randn(500, 2), 1)
    local centred = z - ember.tensor{{3, -1}}
    local off_line = (centred:narrow(2, 2, 1) - centred:narrow(2, 1, 1) * 2):abs():max():item()
    assert.is_true(off_line < 1e-3, off_line)
    local eps = ember.randn(3, 2)
    assert.is_true((model:sample_codes(eps, 7) - model:prior_sample(eps, 7)):abs():max():item() < 1e-5)
    assert.is_true((model:sample_codes(eps, 1, 'prior') - model:prior_sample(eps, 1)):abs():max():item() == 0)
    -- the fit is part of the model's state: saved and restored with it
    local sd = model:state_dict()
    local fresh = r.build(p).model
    fresh:load_state_dict(sd)
    assert.are.equal(1, fresh.fitted:item())
    assert.is_true((fresh.fit_factor - model.fit_factor):abs():max():item() == 0)
    -- a checkpoint from before the fit existed loads, sampling from the prior
    local old = {}
    for k, v in pairs(sd) do if not (k:match('^fit') or k:match('^mix')) then old[k] = v end end
    local older = r.build(p).model
    older:load_state_dict(old)
    assert.are.equal(0, older.fitted:item())
    assert.are.equal(0, older.mixed:item())
    assert.is_true((older:sample_codes(eps, 1) - older:prior_sample(eps, 1)):abs():max():item() == 0)
  end)

  it('the CVAE fits a Gaussian mixture per class to its training codes and samples its components', function()
    local r, p = ember.load_recipe(ROOT .. '/examples/cvae.lua', {'latent=2', 'mixture_k=2'})
    local model = r.build(p).model
    assert.has_error(function() model:sample_codes(ember.randn(2, 2), 1, 'mixture') end,
      'cvae: sample_codes: no fitted mixtures yet (call fit_codes)')
    -- class 1's codes: 3000 around (-4, 0) and 1000 around (4, 2), std 0.5 and 0.25
    local n1, n2 = 3000, 1000
    ember.manual_seed(12)
    local codes = ember.cat({ember.randn(n1, 2) * 0.5 + ember.tensor{{-4, 0}},
                             ember.randn(n2, 2) * 0.25 + ember.tensor{{4, 2}}}, 1)
    model.encode = function(_, x) return codes:narrow(1, math.tointeger(x[1][1]), x:size(1)) end
    local x = ember.arange(1, n1 + n2 + 1):view(n1 + n2, 1)
    local y = ember.ones(n1 + n2)
    model:fit_codes(x, y, 'mixture')
    assert.are.equal(1, model.mixed:item())
    local w, mean, std = model.mix_weight[1]:totable(), model.mix_mean[1]:totable(), model.mix_std[1]:totable()
    local big = mean[1][1] < 0 and 1 or 2 -- the component around (-4, 0)
    local small = 3 - big
    assert.is_true(math.abs(w[big] - 0.75) < 0.02, 'weights ' .. w[1] .. ' ' .. w[2])
    assert.is_true(math.abs(mean[big][1] + 4) < 0.05 and math.abs(mean[big][2]) < 0.05)
    assert.is_true(math.abs(mean[small][1] - 4) < 0.05 and math.abs(mean[small][2] - 2) < 0.05)
    assert.is_true(math.abs(std[big][1] - 0.5) < 0.05 and math.abs(std[small][2] - 0.25) < 0.05)
    -- draws: about 3 in 4 near (-4, 0), none in between
    local z = model:sample_codes(ember.randn(4000, 2), 1)
    local left = z:narrow(2, 1, 1):lt(0):sum():item() / 4000
    assert.is_true(math.abs(left - 0.75) < 0.03, 'share drawn from the big component: ' .. left)
    assert.are.equal(0, z:narrow(2, 1, 1):abs():lt(1.5):sum():item())
    -- classes without codes keep the prior in every component
    local eps = ember.randn(5, 2)
    local zp = model:sample_codes(eps, 6)
    assert.is_true((zp - model:prior_sample(eps, 6)):abs():max():item() < 1e-5)
    assert.has_error(function() model:fit_codes(x, y, 'kde') end,
      "cvae: fit_codes: kind must be 'mixture' or 'fitted', got kde")
    assert.has_error(function() model:sample_codes(eps, 1, 'kde') end,
      "cvae: sample_codes: from must be 'mixture', 'fitted' or 'prior', got kde")
  end)

  it('a CVAE run fits its class mixtures after the last epoch (sample_from=mixture, the default)', function()
    local res, dir = ensure_run('cvae')
    assert.are.equal(0, res.code, res.out)
    local state = latent.load_run(dir)
    assert.are.equal(1, state.model.mixed:item())
    assert.are.equal(0, state.model.fitted:item())
    local sums = state.model.mix_weight:sum(2)
    assert.is_true((sums - 1):abs():max():item() < 1e-5)
  end)

  it('bad params fail the run with a message', function()
    local cases = {
      {'vae', {'hidden=4x'}, "vae: hidden must be comma-separated positive integers like '400' or '512,256', got '4x'"},
      {'autoencoder', {'hidden=0'}, "autoencoder: hidden must be comma-separated positive integers"},
      {'denoising_autoencoder', {'noise=salt_and_pepper', 'level=1.5'},
       'denoising_autoencoder: level must be >= 0 (and <= 1 for salt_and_pepper), got 1.5'},
    }
    for i, c in ipairs(cases) do
      local out, code = run_recipe(c[1], base .. '/bad' .. i, c[2])
      assert.are.equal(1, code, out)
      assert.truthy(out:find(c[3], 1, true), out)
    end
    -- values outside a declared range are refused before the run starts (status 2)
    local refused = {
      {'vae', {'latent=0'}, "--set latent=0: latent must be >= 1 (the recipe's min)"},
      {'cvae', {'class=11'}, "--set class=11: class must be <= 10 (the recipe's max)"},
      {'cvae', {'mixture_k=0'}, "--set mixture_k=0: mixture_k must be >= 1 (the recipe's min)"},
    }
    for i, c in ipairs(refused) do
      local out, code = run_recipe(c[1], base .. '/refused' .. i, c[2])
      assert.are.equal(2, code, out)
      assert.truthy(out:find(c[3], 1, true), out)
    end
    local out, code = run_recipe('vae', base .. '/bad-choice', {'likelihood=gauss'})
    assert.are.equal(2, code)
    assert.truthy(out:find("param 'likelihood' must be one of bce, bernoulli, got 'gauss'", 1, true), out)
  end)
end)
