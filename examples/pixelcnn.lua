-- examples/pixelcnn.lua — autoregressive image models with an exact likelihood:
-- PixelCNN and PixelRNN's Row LSTM (van den Oord et al. 2016, "Pixel Recurrent Neural
-- Networks"), Gated PixelCNN ("Conditional Image Generation with PixelCNN Decoders") and
-- PixelCNN++ (Salimans et al. 2017), on binarized MNIST digits or 8-bit Fashion-MNIST.
--
-- p(x) = prod_i p(x_i | x_1 .. x_{i-1}) over the pixels in raster order: masked
-- convolutions let pixel i's output see only the pixels before it, so one pass gives
-- every conditional at once and the test NLL is exact (nats per image; bits per
-- dimension for 8-bit data), not a bound like the VAE's ELBO and IWAE figures.
--
-- The defaults are benchmark B5 of DESIGN.md: binarized MNIST digits (8004 / 1996, the
-- VAE rows' split; training images binarized afresh every batch, the test images once
-- with the VAE's fixed seed), a 7x7 mask-A conv of 64 channels, 6 residual blocks of 3x3
-- mask-B convs (64) with ReLU, 1x1 (64) ReLU, 1x1 (1 logit); Bernoulli NLL; batch 64;
-- Adam 1e-3.
--
--   ember run examples/pixelcnn.lua --out runs/pixelcnn                        # B5
--   ember run examples/pixelcnn.lua --set model=gated --out runs/gated-pixelcnn
--   ember run examples/pixelcnn.lua --set model=gated --set conditional=true   # class rows
--   ember run examples/pixelcnn.lua --set model=rowlstm --set channels=32 --set layers=2
--   ember run examples/pixelcnn.lua --set model=diagbilstm --set channels=32 --set layers=1
--   ember run examples/pixelcnn.lua --set dataset=fashion --set likelihood=categorical
--   ember run examples/pixelcnn.lua --set model=pixelcnnpp --set likelihood=logistic_mixture \
--       --set dataset=fashion --set channels=32
--   ember sample runs/pixelcnn
--
-- likelihood: bernoulli (binary pixels, 1 logit), categorical (256-way softmax per pixel)
-- or logistic_mixture (PixelCNN++'s discretized mixture of nr_mix logistics).
-- Pictures in RUN/samples/: samples.png (class-conditional: one row per class),
-- completions.png (test images' top halves given, bottom halves sampled; each given image
-- above its completion), and sampling.lua with the seconds of the fast (row-cached) and
-- naive (whole net per pixel) samplers on the same seed, and how many pixels they agree on.
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
local data = require 'ember.data'
local image = require 'ember.image'
local files = require 'ember.files'
local ar = require 'ember.autoregressive'
local ae = require 'ember.autoencoders'

local recipe = {
  name = 'pixelcnn',
  description = 'PixelCNN / Gated PixelCNN: exact NLL, samples, completions, naive vs fast sampling',
  params = {
    model = {default = 'pixelcnn', type = 'string', choices = {'pixelcnn', 'gated', 'rowlstm', 'diagbilstm', 'pixelcnnpp'},
             help = 'PixelCNN (masked residual stack), Gated PixelCNN (vertical + horizontal stacks), PixelRNN\'s Row LSTM or Diagonal BiLSTM (naive sampling), or PixelCNN++ (two shifted streams, down/up-sampling, short-cuts; likelihood=logistic_mixture)'},
    dataset = {default = 'mnist', type = 'string', choices = {'mnist', 'fashion'},
               help = 'MNIST digits (8004/1996) or Fashion-MNIST (60000/10000)'},
    likelihood = {default = 'bernoulli', type = 'string', choices = {'bernoulli', 'categorical', 'logistic_mixture'},
                  help = 'bernoulli: dynamically binarized pixels; categorical: 256-way softmax on 8-bit pixels; logistic_mixture: PixelCNN++ likelihood'},
    nr_mix = {default = 5, type = 'integer', min = 1, help = 'logistics in the mixture (likelihood=logistic_mixture)'},
    channels = {default = 64, type = 'integer', min = 1, help = 'feature maps per layer'},
    blocks = {default = 6, type = 'integer', min = 0, help = 'pixelcnn: residual mask-B blocks'},
    layers = {default = 8, type = 'integer', min = 1, help = 'gated: gated layers (the first one included); rowlstm, diagbilstm: LSTM layers'},
    first_kernel = {default = 7, type = 'integer', min = 1, help = 'size of the first (mask-A) kernel'},
    kernel = {default = 3, type = 'integer', min = 1, help = 'size of the later kernels'},
    hidden = {default = 64, type = 'integer', min = 1, help = 'channels of the 1x1 layer before the head'},
    resnets = {default = 1, type = 'integer', min = 1, help = 'pixelcnnpp: gated residual blocks per stream and resolution'},
    stages = {default = 3, type = 'integer', min = 1, max = 3, help = 'pixelcnnpp: resolutions (28, 14, 7)'},
    dropout = {default = 0, type = 'number', min = 0, max = 1, max_exclusive = true, help = 'pixelcnnpp: dropout inside the residual blocks'},
    conditional = {default = false, type = 'boolean', help = 'gated: condition on the class label (samples.png: one row per class)'},
    epochs = {default = 10, type = 'integer', min = 1, help = 'passes over the training set'},
    batch = {default = 64, type = 'integer', min = 1, help = 'images per step'},
    lr = {default = 1e-3, type = 'number', min = 0, min_exclusive = true, help = 'Adam learning rate'},
    lr_decay = {default = 1.0, type = 'number', min = 0, min_exclusive = true, max = 1, help = 'learning rate factor per epoch'},
    train_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N training images (0: all)'},
    test_subset = {default = 0, type = 'integer', min = 0, help = 'use only the first N test images (0: all)'},
    n_samples = {default = 64, type = 'integer', min = 1, help = 'images in samples.png'},
    n_completions = {default = 16, type = 'integer', min = 0, help = 'test images completed from their top halves (0: none)'},
    speed_check = {default = 16, type = 'integer', min = 0, help = 'images sampled by both samplers to time them (0: skip the naive one)'},
  },
  main_metric = {name = 'test_nll', goal = 'min'},
}

local SIDE = 28
local DIMS = SIDE * SIDE

-- Images [N x 1 x 28 x 28] in input space and labels of one split. Binary: the training
-- images stay in [0, 1] (binarized per batch), the test images are binarized once with the
-- VAE recipes' fixed seed (ember.autoencoders.load_split), so the NLLs compare.
local function load_split(p, split)
  local x, y, classes = ae.load_split({dataset = p.dataset, likelihood = p.likelihood == 'bernoulli' and 'bernoulli' or 'bce',
                                       train_subset = p.train_subset, test_subset = p.test_subset}, split)
  x = x:reshape(x:size(1), 1, SIDE, SIDE)
  if p.likelihood ~= 'bernoulli' then x = ar.to_input(x, p.likelihood) end
  return x, y, classes
end

local function build_model(p)
  if p.model == 'pixelcnnpp' then
    if p.likelihood ~= 'logistic_mixture' or p.conditional then
      error('pixelcnn: model=pixelcnnpp needs likelihood=logistic_mixture and conditional=false', 0)
    end
    return ar.PixelCNNpp{channels = p.channels, resnets = p.resnets, stages = p.stages, nr_mix = p.nr_mix, dropout = p.dropout}
  end
  local opts = {channels = p.channels, first_kernel = p.first_kernel, kernel = p.kernel, hidden = p.hidden,
                likelihood = p.likelihood, nr_mix = p.nr_mix}
  if p.model == 'gated' then
    opts.layers = p.layers
    opts.classes = p.conditional and 10 or 0
    return ar.GatedPixelCNN(opts)
  end
  if p.conditional then error('pixelcnn: conditional=true needs model=gated', 0) end
  if p.model == 'rowlstm' then
    opts.layers = p.layers
    return ar.RowLSTM(opts)
  end
  if p.model == 'diagbilstm' then
    opts.layers = p.layers
    return ar.DiagonalBiLSTM(opts)
  end
  opts.blocks = p.blocks
  return ar.PixelCNN(opts)
end

function recipe.build(p)
  local model = build_model(p)
  return {model = model, opt = optim.Adam(model:parameters(), {lr = p.lr}), params = p}
end

function recipe.data(p)
  local train_x, train_y = load_split(p, 'train')
  local test_x, test_y, classes = load_split(p, 'test')
  print(string.format('%s: %d training images, %d test images, %s pixels', p.dataset, train_x:size(1),
                      test_x:size(1), p.likelihood == 'bernoulli' and 'binary' or '8-bit'))
  return {train = data.DataLoader(data.TensorDataset(train_x, train_y), {batch_size = p.batch, shuffle = true}),
          test_x = test_x, test_y = test_y, classes = classes}
end

local function labels_for(p, y) return p.conditional and y or nil end

-- One pass over the training set; logs the mean training NLL (nats per image), the mean
-- step time and the seconds the pass took.
function recipe.train_epoch(state, d, epoch, log)
  local p, model, opt = state.params, state.model, state.opt
  opt.lr = p.lr * p.lr_decay ^ (epoch - 1)
  local t0 = ember._clock()
  for x, y in d.train:iter() do
    local ts = ember._clock()
    if p.likelihood == 'bernoulli' then x = ember.bernoulli(x) end
    local nll = ar.nll(model, x, labels_for(p, y)):mean()
    opt:zero_grad()
    nll:backward()
    opt:step()
    log{train_nll = nll, step_ms = (ember._clock() - ts) * 1e3}
  end
  log{train_seconds = ember._clock() - t0, lr = opt.lr}
end

-- Test NLL in nats per image (exact), with bits per dimension, and the seconds it took.
function recipe.evaluate(state, d)
  local p, model = state.params, state.model
  return ember.no_grad(function()
    local t0 = ember._clock()
    local total, n = 0, d.test_x:size(1)
    for first = 1, n, 250 do
      local k = math.min(250, n - first + 1)
      local y = p.conditional and d.test_y:narrow(1, first, k) or nil
      total = total + ar.nll(model, d.test_x:narrow(1, first, k), y):sum():item()
    end
    local nll = total / n
    return {test_nll = nll, test_bits_per_dim = ar.bits_per_dim(nll, DIMS), eval_seconds = ember._clock() - t0}
  end)
end

-- ---- pictures --------------------------------------------------------------------------------

local function images(x, p) return ar.to_image(x, p.likelihood) end

function recipe.sample(state, p, out_dir, n)
  local model = state.model
  local test_x, test_y = load_split(p, 'test')
  local report = {}
  -- samples: class-conditional models get one row per class
  local y
  local nrow = math.max(1, math.ceil(math.sqrt(n)))
  if p.conditional then
    nrow = math.max(1, n // 10)
    n = nrow * 10
    local labels = {}
    for c = 1, 10 do for _ = 1, nrow do labels[#labels + 1] = c end end
    y = ember.tensor(labels)
  end
  local t0 = ember._clock()
  local x = ar.sample(model, n, {y = y})
  report.fast_seconds, report.fast_images = ember._clock() - t0, n
  image.save_grid(images(x, p), out_dir .. '/samples.png', {nrow = nrow, scale = 2})
  print(string.format('samples.png: %d images in %.1f s (%s)', n, report.fast_seconds,
                      model.row_sampler and 'row-cached sampler' or 'naive sampler: this model has no row sampler'))

  -- completions: the top half given, the bottom half sampled (given image above its completion)
  local m = math.min(p.n_completions, test_x:size(1))
  if m > 0 then
    local given = test_x:narrow(1, 1, m)
    local cy = p.conditional and test_y:narrow(1, 1, m) or nil
    local done = ar.sample(model, m, {given = given, from_row = SIDE // 2, y = cy})
    image.save_grid(images(ae.pairs_of_rows(given, done, 8), p), out_dir .. '/completions.png', {nrow = 8, scale = 2})
  end

  -- the two samplers on the same seed: seconds and agreement
  local k = model.row_sampler and p.speed_check or 0 -- PixelCNN++ has only the naive sampler
  if k > 0 then
    local ky = y and y:narrow(1, 1, math.min(k, y:size(1))) or nil
    if ky then k = ky:size(1) end
    local rng = ember.get_rng_state()
    local t1 = ember._clock()
    local fast = ar.sample(model, k, {y = ky})
    local fast_s = ember._clock() - t1
    ember.set_rng_state(rng)
    local t2 = ember._clock()
    local naive = ar.sample(model, k, {y = ky, fast = false})
    local naive_s = ember._clock() - t2
    local same = (fast - naive):abs():lt(1e-6):sum():item()
    report.check_images, report.check_fast_seconds, report.check_naive_seconds = k, fast_s, naive_s
    report.speedup = naive_s / fast_s
    report.same_pixels, report.pixels = same, k * DIMS
    print(string.format('sampling %d images: fast %.2f s, naive %.2f s (%.1fx); %d of %d pixels the same',
                        k, fast_s, naive_s, naive_s / fast_s, same, k * DIMS))
  end
  files.write_lua(out_dir .. '/sampling.lua', report)
end

return recipe
