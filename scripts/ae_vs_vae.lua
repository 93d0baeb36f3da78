-- scripts/ae_vs_vae.lua — one picture that shows why VAEs exist: decoded random latent
-- codes of a plain autoencoder (left) and of a VAE (right).
--
--   ember scripts/ae_vs_vae.lua AE_RUN VAE_RUN OUT.png [N=64] [SEED=1] [CLASSIFIER_RUN]
--   ember scripts/ae_vs_vae.lua runs/ae runs/vae ae_vs_vae.png 64 1 runs/classifier-b3
--
-- AE_RUN is a run of examples/autoencoder.lua (its codes are drawn from a Gaussian with
-- the per-dimension mean and std of its training codes: the fairest random codes a
-- plain AE offers); VAE_RUN a run of examples/vae.lua (codes from its prior N(0, I)).
-- The picture: the AE's N decoded codes in a square grid, a white bar, the VAE's.
-- With a classifier run (examples/classifier.lua, same dataset) it also prints how
-- confident that classifier is on each set (mean top softmax probability) next to its
-- confidence on real test images: a rough number for "looks like the data".
local ember = require 'ember'
local image = require 'ember.image'
local latent = require 'ember.latent'

local USAGE = 'usage: ember scripts/ae_vs_vae.lua AE_RUN VAE_RUN OUT.png [N=64] [SEED=1] [CLASSIFIER_RUN]'

-- Stops with a message on stderr and status 2.
local function die(msg)
  io.stderr:write('ae_vs_vae: ', msg, '\n')
  os.exit(2)
end

local args = {...}
if #args < 3 or args[1] == '--help' then die(USAGE) end
local ae_dir, vae_dir, out = args[1], args[2], args[3]
local n = math.tointeger(tonumber(args[4] or '64'))
local seed = math.tointeger(tonumber(args[5] or '1'))
local classifier_dir = args[6]
if not n or n < 1 then die('N must be a whole number >= 1, got ' .. tostring(args[4])) end
if not seed then die('SEED must be a whole number, got ' .. tostring(args[5])) end
if not out:match('%.png$') then die('OUT must be a .png file, got ' .. out) end

-- Loads a run with latent.load_run; any error becomes a message.
local function load(dir, what)
  local ok, state, params, r = pcall(latent.load_run, dir)
  if not ok then die(tostring(state)) end
  if r.name ~= what then die(('%s is a run of recipe %s, expected %s'):format(dir, r.name, what)) end
  return state.model, params
end

local ae, ae_params = load(ae_dir, 'autoencoder')
local vae, vae_params = load(vae_dir, 'vae')
if ae_params.dataset ~= vae_params.dataset then
  io.stderr:write(('ae_vs_vae: note: the AE was trained on %s, the VAE on %s\n'):format(ae_params.dataset, vae_params.dataset))
end

ember.manual_seed(seed)
local ae_images, vae_images = ember.no_grad(function()
  return ae:decode_images(ae:random_codes(n)), vae:decode_images(ember.randn(n, vae.latent_size))
end)

local nrow = math.max(1, math.ceil(math.sqrt(n)))
local left = image.make_grid(ae_images, {nrow = nrow, pad_value = 0})
local right = image.make_grid(vae_images, {nrow = nrow, pad_value = 0})
local bar = ember.ones(1, left:size(2), 8)
image.save_png(ember.cat({left, bar, right}, 3), out, {scale = 3})
print(('wrote %s: left %d decoded random codes of the autoencoder %s (latent %d, codes ~ N(mean, std^2) ' ..
       'of its training codes), right %d of the VAE %s (latent %d, codes ~ N(0, I)); seed %d')
      :format(out, n, ae_dir, ae.latent_size, n, vae_dir, vae.latent_size, seed))

if classifier_dir then
  local ok, r, _, state = pcall(require('ember.recipe').load_run, classifier_dir)
  if not ok then die('cannot load the classifier run ' .. classifier_dir .. ': ' .. tostring(type(r) == 'table' and r.msg or r)) end
  local net = state.net
  if not net then die(classifier_dir .. ' has no state.net (expected a run of examples/classifier.lua)') end
  net:eval()
  -- Mean over images of the classifier's top softmax probability.
  local function confidence(x)
    return ember.no_grad(function()
      return ember.softmax(net(x:reshape(x:size(1), 1, 28, 28)), 2):max(2):mean():item()
    end)
  end
  local data = require 'ember.data'
  local test = ae_params.dataset == 'mnist' and data.mnist{split = 'test'} or data.fashion_mnist{split = 'test'}
  print(('classifier %s, mean top-class probability: real test images %.3f, AE random codes %.3f, ' ..
         'VAE prior samples %.3f'):format(classifier_dir, confidence(test.x:narrow(1, 1, n)),
         confidence(ae_images), confidence(vae_images)))
end
