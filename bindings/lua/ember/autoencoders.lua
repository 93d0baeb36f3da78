-- ember.autoencoders — the building blocks the autoencoder-family recipes share
-- (examples/autoencoder.lua, denoising_autoencoder.lua, vae.lua, cvae.lua), for your own
-- recipes too: hidden-size parsing, the MLP and convolutional encoder/decoder stacks on
-- 28 x 28 images, the data splits as flat pixels, and picture helpers.
--
--   local ae = require 'ember.autoencoders'              -- or ember.autoencoders
--   local sizes = ae.parse_sizes('512,256', 'myrecipe')  -- {512, 256}
--   local enc = nn.Sequential()
--   local feat = ae.add_encoder_body(enc, 'conv', sizes) -- [N x 784] -> [N x feat]
--   enc:add(nn.Linear(feat, 20))                         -- the code
--   local dec = ae.decoder('conv', 20, sizes)            -- [N x 20] -> [N x 784] logits
--
-- The layers go straight into the Sequential they are given (no nesting), so a model's
-- parameter names (encoder.1.weight, ...) are the same as if it had added them itself.
local ember = require 'ember'
local nn = require 'ember.nn'
local data = require 'ember.data'

local M = {}

--- The number of pixels of one flat image.
M.PIXELS = 784

-- The Lua type of v for messages (tensors by name).
local function typename(v)
  if ember.is_tensor(v) then return 'tensor' end
  return type(v)
end

local function check_seq(fname, seq)
  if type(seq) ~= 'table' or type(seq.add) ~= 'function' then
    error(('autoencoders.%s: seq must be an nn.Sequential, got %s'):format(fname, typename(seq)), 3)
  end
end

local function check_sizes(fname, sizes)
  if type(sizes) ~= 'table' then
    error(('autoencoders.%s: sizes must be a list of positive integers, got %s'):format(fname, typename(sizes)), 3)
  end
  for i, n in ipairs(sizes) do
    if math.type(n) ~= 'integer' or n < 1 then
      error(('autoencoders.%s: sizes[%d] must be a positive integer, got %s'):format(fname, i, tostring(n)), 3)
    end
  end
end

local function check_arch(fname, arch)
  if arch ~= 'mlp' and arch ~= 'conv' then
    error(("autoencoders.%s: arch must be 'mlp' or 'conv', got %s"):format(fname, tostring(arch)), 3)
  end
end

--- ae.parse_sizes(text, who) -> {n1, n2, ...}: "400" or "512,256" (a recipe's `hidden`
--- param) as a list of sizes; a bad text raises "<who>: hidden must be ...".
function M.parse_sizes(text, who)
  who = who or 'autoencoders.parse_sizes'
  local sizes = {}
  for item in tostring(text):gmatch('[^,]+') do
    local n = math.tointeger(tonumber(item))
    if not n or n < 1 then
      error(("%s: hidden must be comma-separated positive integers like '400' or '512,256', got '%s'")
        :format(who, tostring(text)), 0)
    end
    sizes[#sizes + 1] = n
  end
  return sizes
end

--- ae.add_mlp(seq, from, sizes) -> the last size: appends Linear + ReLU from size `from`
--- through each of `sizes` to seq.
function M.add_mlp(seq, from, sizes)
  check_seq('add_mlp', seq)
  check_sizes('add_mlp', sizes)
  if math.type(from) ~= 'integer' or from < 1 then
    error(('autoencoders.add_mlp: from must be a positive integer, got %s'):format(tostring(from)), 2)
  end
  for _, h in ipairs(sizes) do
    seq:add(nn.Linear(from, h)):add(nn.ReLU())
    from = h
  end
  return from
end

--- ae.add_conv_features(seq) -> 3136: appends the convolutional front end
--- [N x 784] -> [N x 1 x 28 x 28] -> [N x 32 x 14 x 14] -> [N x 64 x 7 x 7] -> [N x 3136]
--- (two stride-2 4x4 convolutions with ReLUs).
function M.add_conv_features(seq)
  check_seq('add_conv_features', seq)
  seq:add(nn.Reshape(1, 28, 28))
    :add(nn.Conv2d(1, 32, 4, {stride = 2, padding = 1})):add(nn.ReLU())
    :add(nn.Conv2d(32, 64, 4, {stride = 2, padding = 1})):add(nn.ReLU())
    :add(nn.Flatten())
  return 64 * 7 * 7
end

--- ae.add_encoder_body(seq, arch, hidden) -> feature size: appends, for arch 'mlp', the
--- hidden layers on the 784 pixels, for 'conv' the convolutional front end and then the
--- hidden layers: [N x 784] -> [N x feat] (feat = the last hidden size, or the input's).
function M.add_encoder_body(seq, arch, hidden)
  check_seq('add_encoder_body', seq)
  check_arch('add_encoder_body', arch)
  check_sizes('add_encoder_body', hidden)
  local from = arch == 'conv' and M.add_conv_features(seq) or M.PIXELS
  return M.add_mlp(seq, from, hidden)
end

--- ae.decoder(arch, from, hidden) -> nn.Sequential [N x from] -> pixel logits [N x 784]:
--- the mirror of the encoder body with hidden sizes in encoder order (used reversed), then
--- for 'mlp' a Linear to the pixels, for 'conv' a Linear to 64 x 7 x 7 and two stride-2
--- transposed convolutions back to 28 x 28.
function M.decoder(arch, from, hidden)
  check_arch('decoder', arch)
  check_sizes('decoder', hidden)
  local rev = {}
  for i = #hidden, 1, -1 do rev[#rev + 1] = hidden[i] end
  local seq = nn.Sequential()
  local last = M.add_mlp(seq, from, rev)
  if arch == 'conv' then
    seq:add(nn.Linear(last, 64 * 7 * 7)):add(nn.ReLU()):add(nn.Reshape(64, 7, 7))
      :add(nn.ConvTranspose2d(64, 32, 4, {stride = 2, padding = 1})):add(nn.ReLU())
      :add(nn.ConvTranspose2d(32, 1, 4, {stride = 2, padding = 1}))
      :add(nn.Flatten())
  else
    seq:add(nn.Linear(last, M.PIXELS))
  end
  return seq
end

--- ae.load_split(p, split) -> x [N x 784] in [0, 1], labels y [N] (1..10), class names:
--- one split ('train' or 'test') of p.dataset ('fashion' or 'mnist'), cut to the first
--- p.train_subset / p.test_subset images when those are > 0. With p.likelihood ==
--- 'bernoulli' the test images are binarized once with a fixed seed (the caller's random
--- stream is left as it was), so every epoch and every run is scored on the same digits.
function M.load_split(p, split)
  if type(p) ~= 'table' then
    error(('autoencoders.load_split: p must be a params table, got %s'):format(typename(p)), 2)
  end
  if split ~= 'train' and split ~= 'test' then
    error(("autoencoders.load_split: split must be 'train' or 'test', got %s"):format(tostring(split)), 2)
  end
  local ds = p.dataset == 'mnist' and data.mnist{split = split} or data.fashion_mnist{split = split}
  local x, y = ds.x, ds.y
  local limit = (split == 'train' and p.train_subset or p.test_subset) or 0
  if limit > 0 and limit < x:size(1) then x, y = x:narrow(1, 1, limit), y:narrow(1, 1, limit) end
  x = x:reshape(x:size(1), M.PIXELS)
  if split == 'test' and p.likelihood == 'bernoulli' then
    local rng = ember.get_rng_state()
    ember.manual_seed(20240601)
    x = ember.bernoulli(x)
    ember.set_rng_state(rng)
  end
  return x, y, ds.classes
end

--- ae.pairs_of_rows(originals, recons, cols) -> one batch of images: `cols` originals,
--- then their `cols` reconstructions, and so on (for a grid of cols columns).
function M.pairs_of_rows(originals, recons, cols)
  local parts = {}
  for first = 1, originals:size(1), cols do
    local count = math.min(cols, originals:size(1) - first + 1)
    parts[#parts + 1] = originals:narrow(1, first, count)
    parts[#parts + 1] = recons:narrow(1, first, count)
  end
  return ember.cat(parts, 1)
end

--- ae.in_chunks(n, chunk, fn) -> fn(k1), fn(k2), ... joined along dim 1, where the counts
--- k1 + k2 + ... = n are at most `chunk` each (no gradients recorded): generating or
--- encoding many images without holding every intermediate at once.
function M.in_chunks(n, chunk, fn)
  if math.type(n) ~= 'integer' or n < 1 then
    error(('autoencoders.in_chunks: n must be a positive integer, got %s'):format(tostring(n)), 2)
  end
  return ember.no_grad(function()
    local parts = {}
    for first = 1, n, chunk do parts[#parts + 1] = fn(math.min(chunk, n - first + 1), first) end
    return #parts == 1 and parts[1] or ember.cat(parts, 1)
  end)
end

return M
