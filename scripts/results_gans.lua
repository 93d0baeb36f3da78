-- scripts/results_gans.lua — the README tables of the adversarial family and its
-- discriminative contrast, regenerated from the run folders named below (each number is
-- read from what a run wrote: result.lua, config.lua, metrics.csv, and the quality.lua /
-- cgan_check.lua files that scripts/quality.lua and scripts/cgan_check.lua leave there).
--
--   build/ember scripts/results_gans.lua [RUNS_DIR=runs]
--
-- Prints Markdown. A run folder that is missing is listed as such, never invented.
local recipe = require 'ember.recipe'
local files = recipe.files

local ROOT = (...) or 'runs'

-- The runs behind each table (relative to ROOT).
local CLASSIFIER_RUNS = {
  {dir = 'classifier-b3', cmd = 'ember run examples/classifier.lua --threads 1 --out runs/classifier-b3'},
  {dir = 'classifier-b3-s2', cmd = 'ember run examples/classifier.lua --threads 1 --seed 2 --out runs/classifier-b3-s2'},
  {dir = 'classifier-b3-s3', cmd = 'ember run examples/classifier.lua --threads 1 --seed 3 --out runs/classifier-b3-s3'},
  {dir = 'classifier-tuned', cmd = 'ember run examples/classifier.lua --set variant=tuned --set epochs=15 --threads 1 --out runs/classifier-tuned'},
}
local GAN2D_SWEEPS = {
  {dir = 'gan2d-plain', name = 'plain B4 (no stabilizer)',
   cmd = 'ember sweep examples/gan_2d.lua --grid dataset=ring,grid --seeds 5 --jobs 2 --threads 1 --out runs/gan2d-plain'},
  {dir = 'gan2d-best', name = 'preset=best',
   cmd = 'ember sweep examples/gan_2d.lua --grid dataset=ring,grid --seeds 5 --set preset=best --jobs 2 --threads 1 --out runs/gan2d-best'},
}
local DCGAN_RUNS = {
  {dir = 'dcgan', cmd = 'ember run examples/dcgan.lua --threads 1 --out runs/dcgan'},
}
local CGAN_RUNS = {
  {dir = 'cgan-ema', cmd = 'ember run examples/cgan.lua --threads 1 --out runs/cgan-ema'},
  {dir = 'cgan', cmd = 'ember run examples/cgan.lua --set g_ema=0 --threads 1 --out runs/cgan'},
  {dir = 'cgan-projection', cmd = 'ember run examples/cgan.lua --set d_cond=projection --set g_ema=0 --threads 1 --out runs/cgan-projection'},
}
local JUDGE = 'runs/classifier-tuned'
local QUALITY_CMD = 'ember scripts/quality.lua ' .. JUDGE .. ' train runs/vae runs/ae runs/dcgan runs/cgan-ema runs/cgan runs/cgan-projection --n 10000'
-- Every generator ranked by the same judge (the autoencoder family's runs come from
-- scripts/results_autoencoders.lua's commands).
local QUALITY_SOURCES = {
  {dir = 'vae', what = 'VAE (B1), samples from the prior'},
  {dir = 'ae', what = 'plain autoencoder, decoded random codes'},
  {dir = 'dcgan', what = 'DCGAN (B2)'},
  {dir = 'cgan-ema', what = 'conditional GAN (G average), classes in turn'},
  {dir = 'cgan', what = 'conditional GAN (G itself), classes in turn'},
  {dir = 'cgan-projection', what = 'conditional GAN, projection D'},
}
-- The training set's own FD against the test set (the floor), as scripts/quality.lua printed it
-- into runs/quality.txt; read from there.

local function path(dir) return ROOT .. '/' .. dir end

local function mean_std(xs)
  local n = #xs
  if n == 0 then return 0 / 0, 0 / 0 end
  local s = 0
  for _, x in ipairs(xs) do s = s + x end
  local m = s / n
  local v = 0
  for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
  return m, n > 1 and math.sqrt(v / (n - 1)) or 0
end

local function median(xs)
  local t = {}
  for i, x in ipairs(xs) do t[i] = x end
  table.sort(t)
  if #t == 0 then return 0 / 0 end
  if #t % 2 == 1 then return t[(#t + 1) // 2] end
  return (t[#t // 2] + t[#t // 2 + 1]) / 2
end

-- The rows of a run's metrics.csv, or {}.
local function metrics_rows(dir)
  local _, rows = files.read_csv(dir .. '/metrics.csv')
  return rows or {}
end

local function minutes(s) return s and ('%.1f min'):format(s / 60) or '?' end

-- The floor: the `train` row of runs/quality.txt (the printed table of QUALITY_CMD).
local TRAIN_FD, TRAIN_SCORE = '?', '?'
do
  local text = files.read(ROOT .. '/quality.txt') or ''
  local fd, score = text:match('| train | train set %(real images%) | %d+ | ([%d%.]+) | ([%d%.]+) |')
  if fd then TRAIN_FD, TRAIN_SCORE = fd, score end
end

local out = {}
local function say(fmt, ...) out[#out + 1] = select('#', ...) > 0 and fmt:format(...) or fmt end

-- ---- the classifier ----------------------------------------------------------------
say('### Classifier (B3 CNN, Fashion-MNIST test set)')
say('')
say('| run | variant | epochs | seed | test acc. per epoch | final | s/epoch | wall | command |')
say('|---|---|---:|---:|---|---:|---:|---:|---|')
for _, run in ipairs(CLASSIFIER_RUNS) do
  local dir = path(run.dir)
  local cfg = files.read_lua(dir .. '/config.lua')
  local res = files.read_lua(dir .. '/result.lua')
  if not (cfg and res) then
    say('| %s | (no run yet) | | | | | | | `%s` |', run.dir, run.cmd)
  else
    local accs = {}
    for _, row in ipairs(metrics_rows(dir)) do
      if row.test_acc then accs[#accs + 1] = ('%.2f'):format(100 * row.test_acc) end
    end
    local status = res.status == 'finished' and '' or (' (' .. tostring(res.status) .. ')')
    local final = res.metrics and res.metrics.test_acc
    local per_epoch = res.epoch and res.epoch > 0 and res.seconds and res.seconds / res.epoch
    say('| %s | %s | %s | %s | %s | %s%s | %s | %s | `%s` |', run.dir, cfg.params.variant, tostring(res.epoch),
      tostring(cfg.seed), table.concat(accs, ', '), final and ('**%.2f%%**'):format(100 * final) or '?', status,
      per_epoch and ('%.0f'):format(per_epoch) or '?', minutes(res.seconds), run.cmd)
  end
end
say('')

-- ---- gan_2d -------------------------------------------------------------------------
say('### 2-D mixtures (B4 GAN, 2,500 samples, mean ± std over seeds)')
say('')
say('| setting | data | modes captured | high quality | seeds with every mode | modes per seed | ms/step | command |')
say('|---|---|---|---|---:|---|---:|---|')
for _, sweep in ipairs(GAN2D_SWEEPS) do
  local dir = path(sweep.dir)
  -- every figure but ms/step comes from the sweep's own summary.csv and runs.csv
  local _, summary = files.read_csv(dir .. '/summary.csv')
  local _, runs = files.read_csv(dir .. '/runs.csv')
  if not (summary and runs) then
    say('| %s | (no sweep yet) | | | | | | `%s` |', sweep.name, sweep.cmd)
  else
    for _, dataset in ipairs({'ring', 'grid'}) do
      local total_modes = dataset == 'ring' and 8 or 25
      local row
      for _, r in ipairs(summary) do if r.dataset == dataset then row = r end end
      local per_seed, ms, full, n = {}, {}, 0, 0
      for _, r in ipairs(runs) do
        if r.dataset == dataset and r.status == 'finished' and r.modes then
          n = n + 1
          per_seed[#per_seed + 1] = ('%d'):format(r.modes)
          if r.modes == total_modes then full = full + 1 end
          local steps = {}
          for _, m in ipairs(metrics_rows(dir .. '/runs/' .. r.run)) do
            if m.ms_step then steps[#steps + 1] = m.ms_step end
          end
          ms[#ms + 1] = median(steps)
        end
      end
      if row and row.modes_mean and row.hq_mean then
        say('| %s | %s | %.1f ± %.1f of %d | %.1f ± %.1f %% | %d/%d | %s | %.1f | `%s` |', sweep.name, dataset,
          row.modes_mean, row.modes_std, total_modes, 100 * row.hq_mean, 100 * row.hq_std, full, n,
          table.concat(per_seed, ' '), median(ms), sweep.cmd)
      else
        say('| %s | %s (no finished run in summary.csv) | | | | | | `%s` |', sweep.name, dataset, sweep.cmd)
      end
    end
  end
end
say('')

-- ---- DCGAN and cGAN -------------------------------------------------------------------
say('### DCGAN (B2) and conditional GAN, Fashion-MNIST')
say('')
say('| run | epochs | ms per full step (median) | wall | FD vs test set (10k samples) | classifier score | class agreement | command |')
say('|---|---:|---:|---:|---:|---:|---:|---|')
local function gan_row(run, kind)
  local dir = path(run.dir)
  local res = files.read_lua(dir .. '/result.lua')
  if not res then
    say('| %s | (no run yet) | | | | | | `%s` |', run.dir, run.cmd)
    return
  end
  local steps = {}
  for _, r in ipairs(metrics_rows(dir)) do if r.ms_step then steps[#steps + 1] = r.ms_step end end
  local q = files.read_lua(dir .. '/quality.lua')
  local c = kind == 'cgan' and files.read_lua(dir .. '/cgan_check.lua') or nil
  local status = res.status == 'finished' and '' or (' (' .. tostring(res.status) .. ')')
  say('| %s | %s%s | %.0f | %s | %s | %s | %s | `%s` |', run.dir, tostring(res.epoch), status, median(steps),
    minutes(res.seconds), q and ('%.2f'):format(q.fd) or '-', q and ('%.2f'):format(q.score) or '-',
    c and ('%.1f%%'):format(100 * c.agreement) or (kind == 'cgan' and '-' or 'n/a'), run.cmd)
end
for _, run in ipairs(DCGAN_RUNS) do gan_row(run, 'dcgan') end
for _, run in ipairs(CGAN_RUNS) do gan_row(run, 'cgan') end
say('')
local check = files.read_lua(path('cgan') .. '/cgan_check.lua')
local judge_acc = check and check.judge_test_acc and ('%.2f%%'):format(100 * check.judge_test_acc) or '?'
say('FD and score: `%s` (ember\'s own measures, the tuned classifier as the judge; not comparable with published FID/IS; ' ..
    'the training set scores FD %s against the test set). Class agreement: `ember scripts/cgan_check.lua runs/cgan-ema %s 2000`: ' ..
    'the share of 2,000 samples (200 per class) the judge labels as the class asked for; the judge itself labels %s ' ..
    'of the real test images correctly.', QUALITY_CMD, TRAIN_FD, JUDGE, judge_acc)
say('')
say('#### Every generator by the same judge (10,000 samples each, Fashion-MNIST test set as the reference)')
say('')
say('| source | FD vs test set (lower is better) | classifier score (1-10) |')
say('|---|---:|---:|')
say('| training set (real images: the floor) | %s | %s |', TRAIN_FD, TRAIN_SCORE)
for _, src in ipairs(QUALITY_SOURCES) do
  local q = files.read_lua(path(src.dir) .. '/quality.lua')
  if q then
    say('| %s: %s | %.2f | %.2f |', src.dir, src.what, q.fd, q.score)
  else
    say('| %s: %s | (not measured yet) | |', src.dir, src.what)
  end
end
say('')
say('All runs: 1 thread each (`--threads 1`, `nice -n 5`) on a 2-core machine shared with other jobs; wall times are pessimistic.')

print(table.concat(out, '\n'))
