-- ember.quality — how good are generated 28 x 28 images? Measured with ember's own
-- trained classifier (examples/classifier.lua), so the numbers rank ember's models
-- against each other and against the training set; they are NOT comparable with
-- published FID or Inception Score figures (those use an ImageNet Inception net).
--
--   local quality = require 'ember.quality'
--   local clf = quality.load_classifier('runs/classifier-b3')   -- a finished classifier run
--   local feats = clf.features(images)        -- images [N x 1 x 28 x 28] in [0, 1] -> [N x 128]
--   local ref = quality.reference(clf)        -- mean/covariance of the test set's features
--   local fd = quality.frechet_distance(quality.stats(feats), ref)
--   local score = quality.classifier_score(clf.probs(images))   -- in [1, K]
--   print(quality.report(clf, images))        -- {fd =, score =, n =, class_counts = ...}
--
-- Fréchet distance (ember's "FD", after FID's recipe): with the classifier's penultimate
-- features (128-d, after the ReLU) of two image sets summarised as Gaussians (mean mu,
-- covariance S), FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2). The matrix
-- square roots come from a symmetric eigendecomposition (LAPACK dsyevd via OpenBLAS), in
-- double precision (ember.frechet_distance). Lower is better; 0 for identical statistics.
-- It depends on the sample count (a bias that shrinks as 1/N): compare at equal N.
--
-- Classifier score (after the Inception Score's recipe): exp(mean over samples of
-- KL(p(y|x) || p(y))), p(y) the mean of p(y|x) over the set. 1 when every sample gets the
-- same prediction, K when predictions are confident and the classes evenly used.
--
-- Also: confusion matrices (counts, heat-map pictures with class names) for classifiers.
local ember = require 'ember'

local quality = {}

local function fail(fname, msg, level)
  error(fname .. ': ' .. msg, (level or 2) + 1)
end

local function typename(v)
  return ember.is_tensor(v) and 'tensor' or type(v)
end

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

local function check_tensor(fname, v, what, ndim, level)
  if not ember.is_tensor(v) then
    fail(fname, ('%s must be a tensor, got %s'):format(what, typename(v)), (level or 2) + 1)
  end
  if ndim and v:dim() ~= ndim then
    fail(fname, ('%s %s must be %d-D'):format(what, shape_str(v), ndim), (level or 2) + 1)
  end
  return v
end

-- Calls a C function and raises its error at the caller of the public function.
local function ccall(f, ...)
  local ok, a, b = pcall(f, ...)
  if not ok then error((tostring(a):gsub('^[^\n]-:%d+: ', '')), 3) end
  return a, b
end

-- ---- confusion matrices ------------------------------------------------------

--- quality.confusion_matrix(pred [N], labels [N], K) -> [K x K] counts: row = true
--- class, column = predicted class (both 1..K).
function quality.confusion_matrix(pred, labels, k)
  check_tensor('confusion_matrix', pred, 'pred', 1)
  check_tensor('confusion_matrix', labels, 'labels', 1)
  if math.type(k) ~= 'integer' or k < 1 then
    fail('confusion_matrix', ('K must be a positive integer, got %s'):format(tostring(k)))
  end
  if pred:size(1) ~= labels:size(1) then
    fail('confusion_matrix', ('pred %s and labels %s differ in length'):format(shape_str(pred), shape_str(labels)))
  end
  local n = pred:size(1)
  if n == 0 then return ember.zeros(k, k) end
  for _, t in ipairs({{pred, 'pred'}, {labels, 'labels'}}) do
    local lo, hi = t[1]:min():item(), t[1]:max():item()
    if lo < 1 or hi > k or t[1]:ne(t[1]:round()):sum():item() > 0 then
      fail('confusion_matrix', ('%s must hold classes 1..%d, got values in [%g, %g]'):format(t[2], k, lo, hi))
    end
  end
  local cell = (labels - 1) * k + pred  -- 1-based cell index
  return ember.zeros(k * k):scatter_add(1, cell, ember.ones(n)):view(k, k)
end

-- Writes a gnuplot script and runs it; returns path.
local function run_gnuplot(fname, path, script, data_text)
  local plot = require 'ember.plot'
  local data_path, script_path = os.tmpname(), os.tmpname()
  local f = assert(io.open(data_path, 'wb'))
  f:write(data_text)
  f:close()
  script = script:gsub('@DATA@', (("'" .. data_path .. "'"):gsub('%%', '%%%%')))
  f = assert(io.open(script_path, 'wb'))
  f:write(script)
  f:close()
  local q = function(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  local p = io.popen(q(plot.gnuplot) .. ' ' .. q(script_path) .. ' 2>&1')
  local out = p:read('a')
  local ok = p:close()
  os.remove(data_path)
  os.remove(script_path)
  if not ok then fail(fname, ('gnuplot failed: %s'):format(out), 3) end
  return path
end

local function gp_string(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end

--- quality.save_confusion(cm [K x K], path.png [, {names = {...}, title = }]) -> path
--- A heat map: each row as a percentage of its true class (the colour), with the
--- percentage written in each cell; rows true class, columns predicted class.
function quality.save_confusion(cm, path, opts)
  check_tensor('save_confusion', cm, 'cm', 2)
  local k = cm:size(1)
  if cm:size(2) ~= k then fail('save_confusion', ('cm %s must be square [K x K]'):format(shape_str(cm))) end
  if type(path) ~= 'string' or not path:match('%.png$') then
    fail('save_confusion', ('path must be a .png file name, got %s'):format(tostring(path)))
  end
  opts = opts or {}
  if type(opts) ~= 'table' then fail('save_confusion', 'opts must be a table') end
  local names = opts.names or {}
  if type(names) ~= 'table' then fail('save_confusion', 'names must be a list of strings') end
  local rows = cm:totable()
  local cells, labels = {}, {}
  for i = 1, k do
    local total = 0
    for j = 1, k do total = total + rows[i][j] end
    for j = 1, k do
      local pct = total > 0 and 100 * rows[i][j] / total or 0
      -- x = predicted (column), y = true class (row, top to bottom)
      cells[#cells + 1] = ('%d %d %.4f'):format(j - 1, i - 1, pct)
      if rows[i][j] > 0 then
        labels[#labels + 1] = ('set label %s at %d,%d center front tc rgb %s font \',9\''):format(
          gp_string(('%.1f'):format(pct)), j - 1, i - 1, pct > 50 and "'white'" or "'black'")
      end
    end
    cells[#cells + 1] = ''
  end
  local tics = {}
  for i = 1, k do tics[i] = ('%s %d'):format(gp_string(names[i] or tostring(i)), i - 1) end
  local size = math.max(500, 70 * k + 200)
  local script = table.concat({
    ("set terminal pngcairo size %d,%d enhanced font 'Sans,10' background rgb 'white'"):format(size, size - 40),
    'set output ' .. gp_string(path),
    'set title ' .. gp_string(opts.title or 'confusion matrix (% of each true class)') .. ' noenhanced',
    'set xlabel \'predicted\'', 'set ylabel \'true class\'',
    ('set xrange [-0.5:%g]'):format(k - 0.5), ('set yrange [%g:-0.5]'):format(k - 0.5),
    'set xtics (' .. table.concat(tics, ', ') .. ') rotate by 45 right noenhanced',
    'set ytics (' .. table.concat(tics, ', ') .. ') noenhanced',
    'set cbrange [0:100]', 'set cblabel \'% of true class\'',
    "set palette defined (0 'white', 20 '#c6dbef', 60 '#4292c6', 100 '#08306b')",
    'set size ratio -1', 'unset key', 'set tics nomirror out',
    table.concat(labels, '\n'),
    'plot @DATA@ using 1:2:3 with image',
  }, '\n')
  return run_gnuplot('save_confusion', path, script, table.concat(cells, '\n') .. '\n')
end

-- ---- the classifier ------------------------------------------------------------

--- quality.load_classifier(run_dir [, {batch = 500}]) -> clf
--- A trained examples/classifier.lua run (its checkpoint), in eval mode:
---   clf.logits(x) -> [N x K], clf.probs(x) -> [N x K] softmax, clf.features(x) -> [N x 128],
---   clf.predict(x) -> [N] classes 1..K; x [N x 1 x 28 x 28] in [0, 1], any N (batched).
---   clf.net (the module), clf.params, clf.classes (names), clf.dataset ('fashion' | 'mnist'),
---   clf.run_dir.
function quality.load_classifier(run_dir, opts)
  if type(run_dir) ~= 'string' then
    fail('load_classifier', ('run_dir must be a run folder path, got %s'):format(typename(run_dir)))
  end
  local recipe = require 'ember.recipe'
  local files = recipe.files
  if not files.exists(run_dir .. '/config.lua') then
    fail('load_classifier', ('%s is not a run folder (no config.lua)'):format(run_dir))
  end
  if not files.exists(run_dir .. '/checkpoint') then
    fail('load_classifier', ('%s has no checkpoint (the run has not saved yet)'):format(run_dir))
  end
  local cfg = files.read_lua(run_dir .. '/config.lua')
  if type(cfg) ~= 'table' or cfg.name ~= 'classifier' then
    fail('load_classifier', ('%s is a run of recipe %s, expected classifier'):format(run_dir,
      tostring(type(cfg) == 'table' and cfg.name)))
  end
  opts = opts or {}
  local batch = opts.batch or 500
  local rng = ember.get_rng_state() -- loading rebuilds the net (random init): keep the caller's stream
  local _, params, state = recipe.load_run(run_dir)
  ember.set_rng_state(rng)
  local net = state.net
  net:eval()
  local data = require 'ember.data'
  local clf = {net = net, params = params, run_dir = run_dir, dataset = params.dataset,
               classes = params.dataset == 'mnist' and data.MNIST_CLASSES or data.FASHION_MNIST_CLASSES}
  -- Applies fn to x in batches without recording, concatenating the results.
  local function batched(name, fn)
    return function(x)
      check_tensor('classifier ' .. name, x, 'x', 4)
      if x:size(2) ~= 1 or x:size(3) ~= 28 or x:size(4) ~= 28 then
        fail('classifier ' .. name, ('x %s must be [N x 1 x 28 x 28] images in [0, 1]'):format(shape_str(x)))
      end
      return ember.no_grad(function()
        local outs = {}
        for first = 1, x:size(1), batch do
          local n = math.min(batch, x:size(1) - first + 1)
          outs[#outs + 1] = fn(x:narrow(1, first, n))
        end
        return #outs == 1 and outs[1] or ember.cat(outs, 1)
      end)
    end
  end
  clf.logits = batched('logits', function(x) return net(x) end)
  clf.features = batched('features', function(x) return net:features(x) end)
  clf.probs = batched('probs', function(x) return ember.softmax(net(x), 2) end)
  clf.predict = function(x) return clf.logits(x):argmax(2) end
  return clf
end

-- ---- the measures ----------------------------------------------------------------

--- quality.stats(features [N x D]) -> {mu = [D], sigma = [D x D], n = N}: the Gaussian
--- summary the Fréchet distance compares (unbiased covariance, computed in double).
function quality.stats(features)
  check_tensor('stats', features, 'features', 2)
  if features:size(1) < 2 then
    fail('stats', ('features %s needs at least 2 rows for a covariance'):format(shape_str(features)))
  end
  local mu, sigma = ccall(ember.mean_cov, features:detach(), 1)
  return {mu = mu, sigma = sigma, n = features:size(1)}
end

local function as_stats(fname, v, which)
  if ember.is_tensor(v) then
    if v:dim() ~= 2 then fail(fname, ('%s %s must be features [N x D] or a stats table'):format(which, shape_str(v)), 3) end
    if v:size(1) < 2 then fail(fname, ('%s %s needs at least 2 rows'):format(which, shape_str(v)), 3) end
    local mu, sigma = ccall(ember.mean_cov, v:detach(), 1)
    return {mu = mu, sigma = sigma, n = v:size(1)}
  end
  if type(v) ~= 'table' or not ember.is_tensor(v.mu) or not ember.is_tensor(v.sigma) then
    fail(fname, ('%s must be features [N x D] or a table {mu =, sigma =} from quality.stats, got %s')
      :format(which, typename(v)), 3)
  end
  return v
end

--- quality.frechet_distance(a, b) -> number: a and b are feature tensors [N x D] or
--- stats tables from quality.stats; FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).
function quality.frechet_distance(a, b)
  local sa = as_stats('frechet_distance', a, 'a')
  local sb = as_stats('frechet_distance', b, 'b')
  if sa.mu:size(1) ~= sb.mu:size(1) then
    fail('frechet_distance', ('a has %d features and b has %d'):format(sa.mu:size(1), sb.mu:size(1)))
  end
  return (ccall(ember.frechet_distance, sa.mu, sa.sigma, sb.mu, sb.sigma))
end

--- quality.classifier_score(probs [N x K]) -> number in [1, K]: exp(mean_x KL(p(y|x) || p(y))),
--- p(y) = the mean of the rows. Rows must be probability vectors (softmax outputs).
function quality.classifier_score(probs)
  check_tensor('classifier_score', probs, 'probs', 2)
  if probs:size(1) < 1 then fail('classifier_score', 'probs is empty') end
  local lo = probs:min():item()
  local sums = probs:sum(2)
  if lo < 0 or (sums - 1):abs():max():item() > 1e-3 then
    fail('classifier_score', ('probs %s must hold probability rows (>= 0, each summing to 1)'):format(shape_str(probs)))
  end
  return ember.no_grad(function()
    local p = probs:detach():clamp(1e-12, 1)
    local py = p:mean(1, true)
    local kl = (p * (p:log() - py:log())):sum(2)
    return math.exp(kl:mean():item())
  end)
end

-- Test-set statistics per classifier run (the classifier's own dataset), cached.
local reference_cache = {}

--- quality.reference(clf [, {split = 'test', n = 0}]) -> stats of the classifier's
--- features over its dataset's split (n > 0: the first n images), cached per run.
function quality.reference(clf, opts)
  if type(clf) ~= 'table' or type(clf.features) ~= 'function' then
    fail('reference', ('clf must be a classifier from quality.load_classifier, got %s'):format(typename(clf)))
  end
  opts = opts or {}
  local split, n = opts.split or 'test', opts.n or 0
  local key = ('%s|%s|%s|%d'):format(clf.run_dir, clf.dataset, split, n)
  if reference_cache[key] then return reference_cache[key] end
  local data = require 'ember.data'
  local ds = clf.dataset == 'mnist' and data.mnist{split = split} or data.fashion_mnist{split = split}
  local x = ds.x
  if n > 0 and n < x:size(1) then x = x:narrow(1, 1, n) end
  local s = quality.stats(clf.features(x))
  reference_cache[key] = s
  return s
end

--- quality.report(clf, images [N x 1 x 28 x 28] in [0, 1] [, {reference = stats}]) ->
--- {fd =, score =, n =, class_fractions = {K numbers}}: FD against the classifier's
--- test set (or the given reference stats) and the classifier score.
function quality.report(clf, images, opts)
  if type(clf) ~= 'table' or type(clf.features) ~= 'function' then
    fail('report', ('clf must be a classifier from quality.load_classifier, got %s'):format(typename(clf)))
  end
  check_tensor('report', images, 'images', 4)
  opts = opts or {}
  local lo, hi = images:min():item(), images:max():item()
  if lo < -1e-3 or hi > 1 + 1e-3 then
    fail('report', ('images must be in [0, 1], got values in [%g, %g] (GAN outputs in [-1, 1]: (x + 1) / 2)'):format(lo, hi))
  end
  local ref = opts.reference or quality.reference(clf)
  local feats = clf.features(images)
  local probs = clf.probs(images)
  local counts = ember.zeros(probs:size(2)):scatter_add(1, probs:argmax(2), ember.ones(probs:size(1)))
  local fractions = (counts / probs:size(1)):totable()
  return {fd = quality.frechet_distance(quality.stats(feats), ref), score = quality.classifier_score(probs),
          n = images:size(1), class_fractions = fractions}
end

return quality
