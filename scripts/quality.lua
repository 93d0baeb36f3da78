-- scripts/quality.lua — ranks image generators by ember's own sample-quality measures,
-- computed the same way for every source (see ember.quality for the definitions):
--
--   build/ember scripts/quality.lua CLASSIFIER_RUN SOURCE... [--n 10000] [--seed 1] [--ref-n N]
--
-- CLASSIFIER_RUN: a finished examples/classifier.lua run (the judge; its dataset decides
-- the reference set). SOURCE: a run folder whose recipe has generate(state, params, n)
-- returning n images [n x 1 x 28 x 28] in [0, 1] (dcgan, cgan, and any AE/VAE recipe
-- that follows the convention), or `train` (the training set: the floor a perfect
-- generator would reach) or `test` (the reference against itself: ~0, a sanity check).
-- FD: Fréchet distance of the classifier's 128-d penultimate features between the
-- source's n images and the full test set (lower is better; compare at equal n).
-- score: exp(E KL(p(y|x) || p(y))) of the classifier's predictions (1..10, higher is
-- better). Neither is comparable with published FID / Inception Score figures.
-- --ref-n N: only the first N test images as the reference (quick checks; default all).
-- For a run folder the figures are also written to RUN/quality.lua (for the results scripts).
local ember = require 'ember'
local quality = require 'ember.quality'
local recipe = require 'ember.recipe'

local args = {...}
local opts = {n = 10000, seed = 1, ref_n = 0}
local positional = {}
local i = 1
while i <= #args do
  local a = args[i]
  if a == '--n' or a == '--seed' or a == '--ref-n' then
    local v = math.tointeger(tonumber(args[i + 1] or ''))
    if not v or v < 1 then io.stderr:write(('quality: %s expects a positive integer\n'):format(a)) os.exit(2) end
    opts[a:sub(3):gsub('-', '_')] = v
    i = i + 2
  elseif a == '-h' or a == '--help' then
    print('usage: ember scripts/quality.lua CLASSIFIER_RUN SOURCE... [--n 10000] [--seed 1] [--ref-n N]')
    os.exit(0)
  else
    positional[#positional + 1] = a
    i = i + 1
  end
end
if #positional < 2 then
  io.stderr:write('usage: ember scripts/quality.lua CLASSIFIER_RUN SOURCE... [--n 10000] [--seed 1] [--ref-n N]\n')
  os.exit(2)
end

local clf = quality.load_classifier(positional[1])
local data = require 'ember.data'
local function dataset(split)
  return clf.dataset == 'mnist' and data.mnist{split = split} or data.fashion_mnist{split = split}
end
local t0 = ember._clock()
local ref = quality.reference(clf, {n = opts.ref_n})
print(('judge: %s (%s, %d test images as the reference, %.1f s)'):format(positional[1], clf.dataset,
  ref.n, ember._clock() - t0))
print('')
print('| source | what | images | FD (lower is better) | classifier score (1-10) | seconds |')
print('|---|---|---:|---:|---:|---:|')

-- Images [n x 1 x 28 x 28] in [0, 1] and a description for one source.
local function images_of(source, n)
  if source == 'train' or source == 'test' then
    local x = dataset(source).x
    return x:narrow(1, 1, math.min(n, x:size(1))), source .. ' set (real images)'
  end
  local files = recipe.files
  if not files.exists(source .. '/config.lua') then
    error(('%s is not a run folder (no config.lua) nor train/test'):format(source), 0)
  end
  local r, params, state = recipe.load_run(source)
  if type(r.generate) ~= 'function' then
    error(('run %s: recipe %s has no generate(state, params, n) function'):format(source, r.name), 0)
  end
  for _, m in pairs(state) do
    if type(m) == 'table' and type(m.eval) == 'function' and type(m.parameters) == 'function' then m:eval() end
  end
  ember.manual_seed(opts.seed)
  local x = r.generate(state, params, n)
  local res = files.read_lua(source .. '/result.lua') or {}
  return x, ('%s, epoch %s'):format(r.name, tostring(res.epoch or '?'))
end

for k = 2, #positional do
  local source = positional[k]
  local t = ember._clock()
  local ok, x, what = pcall(images_of, source, opts.n)
  if not ok then
    print(('| %s | error: %s | | | | |'):format(source, tostring(x)))
  else
    local rep = quality.report(clf, x, {reference = ref})
    print(('| %s | %s | %d | %.3f | %.3f | %.1f |'):format(source, what, rep.n, rep.fd, rep.score, ember._clock() - t))
    if source ~= 'train' and source ~= 'test' then
      -- kept in the run folder (quality.lua) for the results scripts
      recipe.files.write_lua(source .. '/quality.lua', {fd = rep.fd, score = rep.score, n = rep.n,
        seed = opts.seed, judge = positional[1], class_fractions = rep.class_fractions})
    end
  end
end
