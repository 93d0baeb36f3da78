-- scripts/results_autoregressive.lua — the README results table of the autoregressive
-- family (PixelCNN, Gated PixelCNN, Row LSTM, PixelCNN++'s likelihood), with the VAE's
-- bounds on the same split beside them, built from the run folders alone.
--
--   ember scripts/results_autoregressive.lua [RUNS_DIR=runs]
--
-- For each run named below it reads RUNS_DIR/<run>/config.lua, result.lua, metrics.csv
-- (NLL per epoch, seconds per epoch, step times) and samples/sampling.lua (written by the
-- recipe's sample: seconds of the fast and the naive sampler on the same seed and how
-- many pixels they agree on) and, for class-conditional runs judged by a classifier,
-- class_check.lua (scripts/class_check.lua), and prints one Markdown row with the command that makes
-- the run. Missing runs print as such.
local recipe = require 'ember.recipe'
local files = recipe.files

local runs_dir = (... or 'runs'):gsub('/+$', '')

local RUNS = {
  {name = 'vae-mnist-bernoulli-e200', what = 'VAE (bounds: ELBO, IWAE-100)'},
  {name = 'pixelcnn-b5', what = 'PixelCNN (B5)'},
  {name = 'gated-pixelcnn', what = 'Gated PixelCNN'},
  {name = 'gated-pixelcnn-cond', what = 'Gated PixelCNN, class-conditional (NLL of x given its label)'},
  {name = 'gated-pixelcnn-cond-l12', what = 'Gated PixelCNN, class-conditional, 12 layers'},
  {name = 'rowlstm', what = 'PixelRNN, Row LSTM'},
  {name = 'pixelcnn-fashion-256', what = 'PixelCNN, 256-way softmax'},
  {name = 'pixelcnnpp-fashion', what = 'PixelCNN++ likelihood (logistic mixture)'},
  {name = 'gated-pixelcnn-fashion-cond', what = 'Gated PixelCNN, class-conditional, 256-way softmax'},
  {name = 'gated-fashion-cond-dmol-l12', what = 'Gated PixelCNN, class-conditional, 12 layers, logistic mixture'},
}

local function fmt(v, digits)
  if type(v) ~= 'number' then return '?' end
  return string.format('%.' .. (digits or 2) .. 'f', v)
end

local function median(xs)
  if #xs == 0 then return nil end
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

-- the figures of a finished run as Markdown text
local function figures(cfg, m, rows, dir)
  local p = cfg.params or {}
  if cfg.name == 'vae' then
    return ('-ELBO %s, IWAE-%s NLL **%s** (bounds on the NLL)'):format(fmt(m.test_neg_elbo), tostring(p.iw_k), fmt(m.test_iwae_nll))
  end
  -- per-epoch test figures: nats for binary data, bits/dim for 8-bit data
  local key, digits = 'test_nll', 1
  if p.likelihood ~= 'bernoulli' then key, digits = 'test_bits_per_dim', 3 end
  local by_epoch = {}
  for _, row in ipairs(rows or {}) do if row[key] then by_epoch[row.epoch] = row[key] end end
  local text
  if p.likelihood == 'bernoulli' then
    text = ('exact NLL **%s** nats'):format(fmt(m.test_nll))
  else
    text = ('**%s** bits/dim (NLL %s nats)'):format(fmt(m.test_bits_per_dim, 3), fmt(m.test_nll, 1))
  end
  -- the NLL after epochs 1, 5, 10 and 20, or after every epoch of a run of at most 5
  local last = 0
  for e in pairs(by_epoch) do last = math.max(last, e) end
  local marks, at = {}, {}
  for e = 1, last do
    local marked = last <= 5 or e == 1 or e == 5 or e == 10 or e == 20
    if by_epoch[e] and marked then marks[#marks + 1], at[#at + 1] = fmt(by_epoch[e], digits), tostring(e) end
  end
  if #marks > 1 then text = text .. ('; after epoch %s: %s'):format(table.concat(at, ' / '), table.concat(marks, ' / ')) end
  local s = files.read_lua(dir .. '/samples/sampling.lua')
  if type(s) == 'table' and s.check_images then
    text = text .. ('; sampling %d images: fast %s s, naive %s s (**%sx**), %d of %d pixels the same')
      :format(s.check_images, fmt(s.check_fast_seconds, 1), fmt(s.check_naive_seconds, 1), fmt(s.speedup, 1),
              s.same_pixels, s.pixels)
  end
  -- a class-conditional run judged by a classifier (scripts/class_check.lua)
  local check = files.read_lua(dir .. '/class_check.lua')
  if type(check) == 'table' and check.agreement then
    text = text .. ('; the classifier run `%s` labels **%s%%** of %d samples as the class asked for (its test accuracy %s%%)')
      :format(tostring(check.classifier):match('[^/]+$'), fmt(100 * check.agreement, 1), check.per_class * 10,
              fmt(100 * check.classifier_test_acc, 1))
  end
  return text
end

print('| run | data | test figures | s/epoch | ms/step | epochs | wall | command |')
print('|---|---|---|---|---|---|---|---|')
for _, run in ipairs(RUNS) do
  local dir = runs_dir .. '/' .. run.name
  local cfg = files.read_lua(dir .. '/config.lua')
  local res = files.read_lua(dir .. '/result.lua')
  if type(cfg) ~= 'table' or type(res) ~= 'table' then
    print(('| %s | | not run yet (%s) | | | | | |'):format(run.what, dir))
  else
    local _, rows = files.read_csv(dir .. '/metrics.csv')
    local secs, steps = {}, {}
    for _, row in ipairs(rows or {}) do
      if type(row.train_seconds) == 'number' then secs[#secs + 1] = row.train_seconds end
      if type(row.step_ms) == 'number' then steps[#steps + 1] = row.step_ms end
    end
    local sum = 0
    for _, v in ipairs(secs) do sum = sum + v end
    local p = cfg.params or {}
    local data = p.dataset == 'mnist' and 'MNIST digits 8004/1996' or 'Fashion-MNIST 60000/10000'
    if p.train_subset and p.train_subset > 0 then data = data .. (' (first %d training images)'):format(p.train_subset) end
    data = data .. (p.likelihood == 'bernoulli' and ', dyn. binarized' or ', 8-bit')
    local fig = res.status == 'finished' and figures(cfg, res.metrics or {}, rows, dir) or ('(' .. tostring(res.status) .. ')')
    print(('| %s | %s | %s | %s | %s | %s | %s s | `%s` |'):format(run.what, data, fig,
      #secs > 0 and fmt(sum / #secs, 1) or '?', fmt(median(steps), 0), tostring(res.epoch or '?'), fmt(res.seconds, 0),
      recipe.command_line(cfg, dir)))
  end
end
print('')
print('Test NLL on the test images binarized once with the VAE rows\' fixed seed (binary data), or on the 8-bit ' ..
      'test set; s/epoch: mean training time per epoch (train_seconds), ms/step: median of the per-row mean step ' ..
      'times in metrics.csv, on a 2-core machine shared with other jobs; the sampling figures come from the ' ..
      'recipe\'s `sample` (samples/sampling.lua): the row-cached and the naive sampler on the same seed.')
