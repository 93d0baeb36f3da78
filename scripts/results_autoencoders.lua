-- scripts/results_autoencoders.lua — the README results table of the autoencoder family
-- (AE, denoising AE, VAE, conditional VAE), built from the run folders alone.
--
--   ember scripts/results_autoencoders.lua [RUNS_DIR=runs]
--
-- For each run named below it reads RUNS_DIR/<run>/config.lua (params, threads, seed),
-- result.lua (final metrics, wall time), metrics.csv (seconds per training epoch) and,
-- for the CVAE, cvae_check.lua (written by scripts/cvae_check.lua), and prints one
-- Markdown row with the command that reproduces the run. Missing runs print as such.
local recipe = require 'ember.recipe'
local files = recipe.files

local runs_dir = (... or 'runs'):gsub('/+$', '')

-- The runs of the table, in order, with the text for their numbers.
local RUNS = {
  {name = 'ae', what = 'autoencoder'},
  {name = 'dae', what = 'denoising AE'},
  {name = 'vae', what = 'VAE (B1)'},
  {name = 'vae-2d', what = 'VAE, 2-D latent'},
  {name = 'cvae', what = 'conditional VAE'},
  {name = 'cvae-standard', what = 'conditional VAE, N(0, I) prior'},
  {name = 'cvae-e30', what = 'conditional VAE'},
  {name = 'cvae-beta2-e30', what = 'conditional VAE, beta 2'},
  {name = 'cvae-conv', what = 'conditional VAE, conv'},
  {name = 'cvae-big', what = 'conditional VAE, 1024-512, beta 0.25'},
  {name = 'cvae-big-e60', what = 'conditional VAE, 1024-512, beta 0.25'},
  {name = 'cvae-big-e100', what = 'conditional VAE, 1024-512, beta 0.25'},
  {name = 'cvae-mix-e60', what = 'conditional VAE, 1024-512, beta 0.25'},
  {name = 'ae-mnist', what = 'autoencoder'},
  {name = 'dae-mnist', what = 'denoising AE'},
  {name = 'vae-mnist-bernoulli', what = 'VAE'},
  {name = 'vae-mnist-bernoulli-e200', what = 'VAE'},
  {name = 'cvae-mnist-bernoulli', what = 'conditional VAE'},
  {name = 'cvae-mnist-standard', what = 'conditional VAE, N(0, I) prior'},
  {name = 'cvae-mnist-beta2', what = 'conditional VAE, beta 2'},
}

local function fmt(v, digits)
  if type(v) ~= 'number' then return '?' end
  return string.format('%.' .. (digits or 2) .. 'f', v)
end

-- The test figures of a finished run, as Markdown text; rows: metrics.csv.
local function figures(recipe_name, m, dir, rows, params)
  if recipe_name == 'autoencoder' then
    return ('MSE/pixel %s, BCE %s nats'):format(fmt(m.test_mse, 4), fmt(m.test_bce, 1))
  elseif recipe_name == 'denoising_autoencoder' then
    return ('PSNR noisy %s dB -> denoised %s dB (**+%s dB**)'):format(fmt(m.test_psnr_noisy),
      fmt(m.test_psnr_denoised), fmt(m.test_psnr_gain))
  elseif recipe_name == 'vae' or recipe_name == 'cvae' then
    local text = ('-ELBO **%s** (rec %s + KL %s)'):format(fmt(m.test_neg_elbo), fmt(m.test_rec), fmt(m.test_kl))
    if m.test_iwae_nll then
      text = text .. (', IWAE-%s NLL **%s**'):format(tostring(params.iw_k), fmt(m.test_iwae_nll))
    end
    if recipe_name == 'vae' and rows and #rows >= 10 then
      local by_epoch = {}
      for _, row in ipairs(rows) do by_epoch[row.epoch] = row.test_neg_elbo end
      text = text .. ('; -ELBO after epoch 1 / 5 / 10: %s / %s / %s'):format(fmt(by_epoch[1], 1),
        fmt(by_epoch[5], 1), fmt(by_epoch[10], 1))
    end
    local check = files.read_lua(dir .. '/cvae_check.lua')
    if type(check) == 'table' and check.agreement then
      -- runs from before sample_from existed drew from p(z|y)
      local source = ({fitted = 'one fitted Gaussian per class', mixture = 'the fitted class mixtures'})[params.sample_from]
        or 'the prior p(z\\|y)'
      text = text .. ('; samples from ' .. source .. ': the classifier run `%s` labels **%s%%** of %d as the class asked for (its test accuracy %s%%)')
        :format(tostring(check.classifier):match('[^/]+$'), fmt(100 * check.agreement, 1), check.per_class * 10,
                fmt(100 * check.classifier_test_acc, 1))
      -- the same check at lower sampling temperatures, when it was run (cvae_check_t<T>.lua)
      local listing = io.popen('ls ' .. files.quote(dir) .. ' 2>/dev/null')
      local others = {}
      for name in listing:lines() do
        local t = name:match('^cvae_check_t([%d%.]+)%.lua$')
        local c = t and files.read_lua(dir .. '/' .. name)
        if c and c.agreement and c.classifier == check.classifier then
          others[#others + 1] = {t = tonumber(t), text = ('%s%% at temperature %s'):format(fmt(100 * c.agreement, 1), t)}
        end
      end
      listing:close()
      table.sort(others, function(a, b) return a.t > b.t end)
      local parts = {}
      for i, o in ipairs(others) do parts[i] = o.text end
      if #parts > 0 then text = text .. ' (' .. table.concat(parts, ', ') .. ')' end
    end
    return text
  end
  return '?'
end

print('| run | data | test figures | s/epoch | epochs | wall | command |')
print('|---|---|---|---|---|---|---|')
for _, run in ipairs(RUNS) do
  local dir = runs_dir .. '/' .. run.name
  local cfg = files.read_lua(dir .. '/config.lua')
  local res = files.read_lua(dir .. '/result.lua')
  if type(cfg) ~= 'table' or type(res) ~= 'table' then
    print(('| %s | | not run yet (%s) | | | | |'):format(run.what, dir))
  else
    local _, rows = files.read_csv(dir .. '/metrics.csv')
    local sum, count = 0, 0
    for _, row in ipairs(rows or {}) do
      if type(row.train_seconds) == 'number' then sum, count = sum + row.train_seconds, count + 1 end
    end
    local p = cfg.params or {}
    local data = p.dataset == 'mnist' and 'MNIST digits 8004/1996' or 'Fashion-MNIST 60000/10000'
    if p.likelihood == 'bernoulli' then data = data .. ', dyn. binarized' end
    local fig = res.status == 'finished' and figures(cfg.name, res.metrics or {}, dir, rows, cfg.params or {}) or ('(' .. tostring(res.status) .. ')')
    print(('| %s | %s | %s | %s | %s | %s s | `%s` |'):format(run.what, data, fig,
      count > 0 and fmt(sum / count, 1) or '?', tostring(res.epoch or '?'), fmt(res.seconds, 0), recipe.command_line(cfg, dir)))
  end
end
print('')
print('s/epoch: mean training time per epoch from metrics.csv (train_seconds), with the threads in the command, ' ..
      'on a 2-core machine shared with other jobs; wall: the whole run (data loading, evaluation, IWAE, pictures).')
