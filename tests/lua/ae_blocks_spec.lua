-- Specs for ember.autoencoders: the building blocks of the autoencoder-family recipes.
local ember = require 'ember'
local nn = require 'ember.nn'
local ae = require 'ember.autoencoders'

local function raises(expected, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, 'expected an error: ' .. expected)
  assert.matches(expected, tostring(err), 1, true)
end

-- The class names of a Sequential's children, in order.
local function layer_names(seq)
  local out = {}
  for i = 1, #seq do out[i] = seq[i]:class_name() end
  return out
end

describe('ember.autoencoders', function()
  it('is reachable as ember.autoencoders', function()
    assert.are.equal(ae, ember.autoencoders)
  end)

  it('parse_sizes reads a hidden-size list and names the recipe when it cannot', function()
    assert.are.same({400}, ae.parse_sizes('400', 'vae'))
    assert.are.same({512, 256}, ae.parse_sizes('512,256', 'vae'))
    assert.are.same({64}, ae.parse_sizes(64, 'vae'))
    raises("vae: hidden must be comma-separated positive integers like '400' or '512,256', got '4x'",
      ae.parse_sizes, '4x', 'vae')
    raises("cvae: hidden must be comma-separated positive integers like '400' or '512,256', got '0'",
      ae.parse_sizes, '0', 'cvae')
    raises("got '1.5'", ae.parse_sizes, '1.5', 'cvae')
  end)

  it('add_mlp appends Linear + ReLU pairs and returns the last size', function()
    local seq = nn.Sequential()
    assert.are.equal(32, ae.add_mlp(seq, 10, {64, 32}))
    assert.are.same({'Linear', 'ReLU', 'Linear', 'ReLU'}, layer_names(seq))
    assert.are.same({64, 10}, seq[1].weight:shape())
    assert.are.same({32, 64}, seq[3].weight:shape())
    assert.are.equal(10, ae.add_mlp(nn.Sequential(), 10, {}))
    raises('autoencoders.add_mlp: seq must be an nn.Sequential, got number', ae.add_mlp, 3, 10, {4})
    raises('autoencoders.add_mlp: sizes[2] must be a positive integer, got 0', ae.add_mlp, nn.Sequential(), 10, {4, 0})
    raises('autoencoders.add_mlp: sizes must be a list of positive integers, got string', ae.add_mlp, nn.Sequential(), 10, '4')
    raises('autoencoders.add_mlp: from must be a positive integer, got 2.5', ae.add_mlp, nn.Sequential(), 2.5, {4})
  end)

  it('the encoder bodies and decoders map 784 pixels to features and codes back to 784 logits', function()
    local x = ember.rand(3, 784)
    for _, arch in ipairs {'mlp', 'conv'} do
      local enc = nn.Sequential()
      local feat = ae.add_encoder_body(enc, arch, {50, 30})
      assert.are.equal(30, feat)
      assert.are.same({3, 30}, enc(x):shape())
      local dec = ae.decoder(arch, 7, {50, 30})
      assert.are.same({3, 784}, dec(ember.randn(3, 7)):shape())
      -- the decoder mirrors the hidden sizes: 7 -> 30 -> 50 -> ...
      assert.are.same({30, 7}, dec[1].weight:shape())
      assert.are.same({50, 30}, dec[3].weight:shape())
    end
    local conv = nn.Sequential()
    assert.are.equal(3136, ae.add_conv_features(conv))
    assert.are.same({'Reshape', 'Conv2d', 'ReLU', 'Conv2d', 'ReLU', 'Flatten'}, layer_names(conv))
    assert.are.same({3, 3136}, conv(x):shape())
    -- no hidden layers: the body is the identity for mlp, the front end for conv
    assert.are.equal(784, ae.add_encoder_body(nn.Sequential(), 'mlp', {}))
    raises("autoencoders.add_encoder_body: arch must be 'mlp' or 'conv', got dense",
      ae.add_encoder_body, nn.Sequential(), 'dense', {4})
    raises("autoencoders.decoder: arch must be 'mlp' or 'conv', got nil", ae.decoder, nil, 4, {4})
    raises('autoencoders.add_conv_features: seq must be an nn.Sequential, got nil', ae.add_conv_features)
  end)

  it('load_split gives flat pixels, labels and class names, cut to the subset asked for', function()
    local x, y, classes = ae.load_split({dataset = 'fashion', train_subset = 0, test_subset = 50}, 'test')
    assert.are.same({50, 784}, x:shape())
    assert.are.same({50}, y:shape())
    assert.are.equal('Ankle boot', classes[10])
    assert.is_true(x:min():item() >= 0 and x:max():item() <= 1)
    -- bernoulli: the same binary test images every time, and the caller's stream untouched
    ember.manual_seed(9)
    local p = {dataset = 'mnist', test_subset = 20, likelihood = 'bernoulli'}
    local b1 = ae.load_split(p, 'test')
    local after = ember.rand(1):item()
    ember.manual_seed(9)
    local b2 = ae.load_split(p, 'test')
    assert.are.equal(after, ember.rand(1):item())
    assert.are.equal(0, (b1 - b2):abs():max():item())
    assert.are.equal(0, (b1 * (1 - b1)):abs():max():item()) -- only 0s and 1s
    raises("autoencoders.load_split: split must be 'train' or 'test', got valid", ae.load_split, p, 'valid')
    raises('autoencoders.load_split: p must be a params table, got string', ae.load_split, 'fashion', 'test')
  end)

  it('pairs_of_rows interleaves originals and reconstructions row by row', function()
    local a = ember.arange(5):view(5, 1, 1, 1)
    local b = ember.arange(5):view(5, 1, 1, 1) + 10
    local out = ae.pairs_of_rows(a, b, 2):view(-1):totable()
    assert.are.same({0, 1, 10, 11, 2, 3, 12, 13, 4, 14}, out)
  end)

  it('in_chunks calls fn with counts of at most chunk and joins the results, without gradients', function()
    local seen = {}
    local w = ember.ones(1):requires_grad()
    local out = ae.in_chunks(7, 3, function(k, first)
      seen[#seen + 1] = k .. '@' .. first
      return ember.full({k, 1}, first) * w
    end)
    assert.are.same({'3@1', '3@4', '1@7'}, seen)
    assert.are.same({1, 1, 1, 4, 4, 4, 7}, out:view(-1):totable())
    assert.is_false(out:needs_grad())
    raises('autoencoders.in_chunks: n must be a positive integer, got 0', ae.in_chunks, 0, 3, function() end)
  end)
end)
