-- scripts/cgan_check.lua — does a conditional GAN draw the class it was asked for?
--
--   build/ember scripts/cgan_check.lua CGAN_RUN CLASSIFIER_RUN [N=2000] [SEED=1]
--
-- Generates N images from the cgan run (classes 1..10 in turn, N/10 each), lets the
-- trained classifier (examples/classifier.lua run) label them, and prints the fraction
-- labelled as the class requested, overall and per class, plus the classifier's own
-- accuracy on the real test set for scale (a generator can hardly beat the judge).
local ember = require 'ember'
local quality = require 'ember.quality'
local recipe = require 'ember.recipe'

local cgan_dir, clf_dir = ...
local n = math.tointeger(tonumber(select(3, ...) or '2000'))
local seed = math.tointeger(tonumber(select(4, ...) or '1'))
if not cgan_dir or not clf_dir or not n or n < 10 or not seed then
  io.stderr:write('usage: ember scripts/cgan_check.lua CGAN_RUN CLASSIFIER_RUN [N=2000 (>= 10)] [SEED=1]\n')
  os.exit(2)
end

local clf = quality.load_classifier(clf_dir)
local r, params, state = recipe.load_run(cgan_dir)
if r.name ~= 'cgan' or type(r.generate) ~= 'function' then
  io.stderr:write(('cgan_check: %s is a run of recipe %s, expected cgan\n'):format(cgan_dir, r.name))
  os.exit(2)
end
if params.dataset ~= clf.dataset then
  io.stderr:write(('cgan_check: the cgan run is on %s but the classifier on %s\n'):format(params.dataset, clf.dataset))
  os.exit(2)
end
ember.manual_seed(seed)
local images, labels = r.generate(state, params, n)
local pred = clf.predict(images)
local hits = pred:eq(labels)
local cm = quality.confusion_matrix(pred, labels, 10):totable()

-- The classifier on real test images, for scale.
local data = require 'ember.data'
local test = clf.dataset == 'mnist' and data.mnist{split = 'test'} or data.fashion_mnist{split = 'test'}
local real_acc = clf.predict(test.x):eq(test.y):mean():item()

local res = recipe.files.read_lua(cgan_dir .. '/result.lua') or {}
print(('cgan run %s (epoch %s), judged by %s'):format(cgan_dir, tostring(res.epoch or '?'), clf_dir))
print(('%d samples, %d per class, seed %d'):format(n, n // 10, seed))
print('')
print('| class | labelled as requested |')
print('|---|---:|')
for c = 1, 10 do
  local row, total = cm[c], 0
  for _, v in ipairs(row) do total = total + v end
  print(('| %s | %.1f%% |'):format(clf.classes[c], total > 0 and 100 * row[c] / total or 0))
end
print(('| **all** | **%.1f%%** |'):format(100 * hits:mean():item()))
print('')
print(('classifier accuracy on the real test set: %.2f%%'):format(100 * real_acc))
print(('class agreement: %.2f%%'):format(100 * hits:mean():item()))

-- kept in the run folder for scripts/results_gans.lua
local per_class = {}
for c = 1, 10 do
  local total = 0
  for _, v in ipairs(cm[c]) do total = total + v end
  per_class[c] = total > 0 and cm[c][c] / total or 0
end
recipe.files.write_lua(cgan_dir .. '/cgan_check.lua', {
  agreement = hits:mean():item(), per_class = per_class, n = n, seed = seed, judge = clf_dir,
  judge_test_acc = real_acc, epoch = res.epoch,
})
