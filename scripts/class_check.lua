-- scripts/class_check.lua — does an independent classifier agree that a class-conditional
-- generator draws the class it was asked for?
--
--   ember scripts/class_check.lua RUN CLASSIFIER_RUN [N_PER_CLASS=100] [SEED=1] [TEMPERATURE=1]
--   ember scripts/class_check.lua runs/cvae runs/classifier-tuned
--   ember scripts/class_check.lua runs/gated-fashion-cond-dmol-l12 runs/classifier-b3 50
--
-- RUN is a run of examples/cvae.lua, or of examples/pixelcnn.lua with conditional=true;
-- CLASSIFIER_RUN one of examples/classifier.lua on the same dataset. For each class k it
-- draws N_PER_CLASS images with label k -- the CVAE decodes codes z ~ N(0, I) (the Bernoulli
-- means, images in [0, 1]; TEMPERATURE < 1 draws z ~ N(0, T^2 I) instead, the
-- reduced-temperature sampling that trades variety for typical images), the PixelCNN
-- samples pixel by pixel with its row-cached sampler (TEMPERATURE must be 1) -- lets the
-- classifier label them, and prints the share labelled k, per class and overall, next to
-- the classifier's accuracy on the real test images for scale. The overall figure is also
-- written to RUN/cvae_check.lua (CVAE runs; RUN/cvae_check_t<T>.lua at other
-- temperatures) or RUN/class_check.lua (PixelCNN runs).
local ember = require 'ember'
local latent = require 'ember.latent'
local ar = require 'ember.autoregressive'
local recipe = require 'ember.recipe'
local data = require 'ember.data'

local USAGE = 'usage: ember scripts/class_check.lua RUN CLASSIFIER_RUN [N_PER_CLASS=100] [SEED=1] [TEMPERATURE=1]'

local function die(msg)
  io.stderr:write('class_check: ', msg, '\n')
  os.exit(2)
end

local args = {...}
if #args < 2 or args[1] == '--help' then die(USAGE) end
local run_dir, cls_dir = args[1]:gsub('/+$', ''), args[2]
local per_class = math.tointeger(tonumber(args[3] or '100'))
local seed = math.tointeger(tonumber(args[4] or '1'))
if not per_class or per_class < 1 then die('N_PER_CLASS must be a whole number >= 1, got ' .. tostring(args[3])) end
if not seed then die('SEED must be a whole number, got ' .. tostring(args[4])) end
local temperature = tonumber(args[5] or '1')
if not temperature or temperature <= 0 then die('TEMPERATURE must be a number > 0, got ' .. tostring(args[5])) end

-- The generator: generate(n, k) -> n images [n x 1 x 28 x 28] in [0, 1] drawn with label k.
if not recipe.files.exists(run_dir .. '/config.lua') then die(run_dir .. ' is not a run folder (no config.lua)') end
if not recipe.files.exists(run_dir .. '/checkpoint') then die(run_dir .. ' has no checkpoint yet (the run stopped before its first save)') end
local generate, classes, params, label
local kind = (recipe.files.read_lua(run_dir .. '/config.lua') or {}).name -- the run's recipe
if kind == 'cvae' then
  local ok, state, cparams = pcall(latent.load_run, run_dir)
  if not ok then die(tostring(state)) end
  local cvae = state.model
  params, classes, label = cparams, cvae.classes, 'CVAE'
  generate = function(n, k) return cvae:generate(n, k, temperature) end
elseif kind == 'pixelcnn' then
  local okr, rr, rparams, rstate = pcall(recipe.load_run, run_dir)
  if not okr then die('cannot load ' .. run_dir .. ': ' .. tostring(type(rr) == 'table' and rr.msg or rr)) end
  if not rparams.conditional then
    die(('%s is a PixelCNN run without class conditioning (conditional=false): nothing to ask for'):format(run_dir))
  end
  if temperature ~= 1 then die('TEMPERATURE must be 1 for a PixelCNN run (it samples its own likelihood), got ' .. tostring(args[5])) end
  local model = rstate.model
  params, classes, label = rparams, model.classes, 'PixelCNN'
  generate = function(n, k)
    return ar.to_image(ar.sample(model, n, {y = ember.full({n}, k)}), rparams.likelihood)
  end
else
  die(('%s is a run of recipe %s, expected cvae or a conditional pixelcnn'):format(run_dir, tostring(kind)))
end

if not recipe.files.exists(cls_dir .. '/checkpoint') then die(cls_dir .. ' has no checkpoint (no trained classifier)') end
local okc, cr, cparams, cstate = pcall(recipe.load_run, cls_dir)
if not okc then die('cannot load the classifier run ' .. cls_dir .. ': ' .. tostring(type(cr) == 'table' and cr.msg or cr)) end
local net = cstate.net
if not net then die(cls_dir .. ' has no state.net (expected a run of examples/classifier.lua)') end
net:eval()
if cparams.dataset ~= params.dataset then
  die(('the classifier was trained on %s, the %s on %s'):format(tostring(cparams.dataset), label, params.dataset))
end

-- Predicted classes (1..K) of images [N x 1 x 28 x 28], in chunks.
local function predict(x)
  return ember.no_grad(function()
    local parts = {}
    for first = 1, x:size(1), 250 do
      local count = math.min(250, x:size(1) - first + 1)
      local _, idx = net(x:narrow(1, first, count)):max(2)
      parts[#parts + 1] = idx
    end
    return ember.cat(parts, 1)
  end)
end

ember.manual_seed(seed)
local test = params.dataset == 'mnist' and data.mnist{split = 'test'} or data.fashion_mnist{split = 'test'}
local real_pred = predict(test.x)
local real_acc = real_pred:eq(test.y):mean():item()
-- The classifier's accuracy on the real test images of class k.
local function real_class_acc(k)
  local of_k = test.y:eq(k)
  return (real_pred:eq(test.y) * of_k):sum():item() / math.max(1, of_k:sum():item())
end
local names = test.classes
local hits, total = 0, 0
print(('%s %s (%s, %d epochs) judged by classifier %s'):format(label, run_dir, params.dataset, params.epochs, cls_dir))
for k = 1, classes do
  local images = ember.no_grad(function() return generate(per_class, k) end)
  local correct = predict(images):eq(k):sum():item()
  hits, total = hits + correct, total + per_class
  print(('  class %2d %-12s %5.1f%%   (real test images of the class: %5.1f%%)'):format(k, names[k] or '',
        100 * correct / per_class, 100 * real_class_acc(k)))
end
local share = hits / total
print(('%s samples labelled as the class asked for: %.1f%% of %d (%d per class, temperature %g); the ' ..
       'classifier\'s accuracy on the %d real test images: %.1f%%'):format(label, 100 * share, total, per_class,
       temperature, test.x:size(1), 100 * real_acc))
-- CVAE runs: cvae_check.lua keeps the figure at temperature 1, other temperatures go to their
-- own file; PixelCNN runs: class_check.lua.
local file = label == 'PixelCNN' and '/class_check.lua'
  or (temperature == 1 and '/cvae_check.lua' or ('/cvae_check_t%g.lua'):format(temperature))
recipe.files.write_lua(run_dir .. file, {
  classifier = cls_dir, per_class = per_class, seed = seed, temperature = temperature, agreement = share,
  classifier_test_acc = real_acc,
})
