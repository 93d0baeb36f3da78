-- Specs for examples/classifier.lua (the B3 CNN and its tuned variant, run briefly on a
-- few hundred images) and for loading a trained classifier through ember.quality.
local ember = require 'ember'
local quality = require 'ember.quality'
local h = require 'tests.lua.helpers.common'
local q, sh, tmpdir, exists, raises = h.q, h.sh, h.tmpdir, h.exists, h.raises

local ROOT = h.ROOT
local EMBER = h.EMBER
local RECIPE = ROOT .. '/examples/classifier.lua'

describe('classifier recipe', function()
  local dir = tmpdir()
  local run = dir .. '/b3'

  teardown(function() os.execute('rm -rf ' .. q(dir)) end)

  it('random_shift moves each image by its own offset within +-2 pixels, filling zeros', function()
    local r = require('ember.recipe').load(RECIPE)
    ember.manual_seed(9)
    local x = ember.rand(12, 1, 5, 6) + 0.5   -- no zeros, so a fill is visible
    local y = r.random_shift(x, 2)
    local xs, ys = x:totable(), y:totable()
    local seen = {}
    for i = 1, 12 do
      local found
      for dy = -2, 2 do
        for dx = -2, 2 do
          local same = true
          for h = 1, 5 do
            for w = 1, 6 do
              local sh_, sw = h - dy, w - dx
              local want = (sh_ >= 1 and sh_ <= 5 and sw >= 1 and sw <= 6) and xs[i][1][sh_][sw] or 0
              if math.abs(ys[i][1][h][w] - want) > 1e-6 then same = false end
            end
          end
          if same then found = dy .. ',' .. dx end
        end
      end
      assert.is_truthy(found, 'image ' .. i .. ' is not a shift of its input')
      seen[found] = true
    end
    local kinds = 0
    for _ in pairs(seen) do kinds = kinds + 1 end
    assert.is_true(kinds > 1, 'every image got the same offset')
  end)

  it('init: b3 starts from He normal weights and zero biases, tuned from the default init', function()
    local r = require('ember.recipe').load(RECIPE)
    local defaults = require('ember.recipe').defaults(r)
    local function with(over)
      local p = {}
      for k, v in pairs(defaults) do p[k] = v end
      for k, v in pairs(over) do p[k] = v end
      ember.manual_seed(4)
      return r.build(p).net
    end
    -- He normal: std sqrt(2 / fan_in) (fan_in 288 for the second conv, 3136 for the Linear)
    local b3 = with{}
    local conv2, fc = b3.body[4], b3.body[8]
    assert.are.equal('Conv2d', conv2:class_name())
    assert.are.equal('Linear', fc:class_name())
    assert.is_true(math.abs(conv2.weight:std():item() / math.sqrt(2 / 288) - 1) < 0.05)
    assert.is_true(math.abs(fc.weight:std():item() / math.sqrt(2 / 3136) - 1) < 0.05)
    assert.are.equal(0, conv2.bias:abs():max():item())
    -- the default init (as PyTorch): uniform within 1/sqrt(fan_in), biases too
    local plain = with{init = 'default'}
    local w = plain.body[4].weight
    assert.is_true(w:abs():max():item() <= 1 / math.sqrt(288) + 1e-6)
    assert.is_true(plain.body[4].bias:abs():max():item() > 0)
    local tuned = with{variant = 'tuned'}
    assert.is_true(tuned.body[1].weight:abs():max():item() <= 1 / 3 + 1e-6)
  end)

  it('b3 evaluates and saves a weight average (ema 0.99) of the net Adam trains', function()
    local recipe = require('ember.recipe')
    local r = recipe.load(RECIPE)
    local p = recipe.defaults(r)
    local state = r.build(p)
    assert.are.equal(0.99, state.ema.decay)
    assert.are_not.equal(state.net, state.train_net)
    assert.are.equal(0, (state.net.head[1].weight - state.train_net.head[1].weight):abs():max():item())
    p.ema = 0
    local plain = r.build(p)
    assert.is_nil(plain.ema)
    assert.are.equal(plain.net, plain.train_net)
    p.ema, p.variant = -1, 'tuned'
    assert.is_nil(r.build(p).ema)
    for _, bad in ipairs {1, 1.5, -0.5} do
      p.ema = bad
      local ok, err = pcall(r.build, p)
      assert.is_false(ok)
      assert.are.equal(('classifier: ema must be in [0, 1), or -1 for the variant\'s choice, got %g'):format(bad), err)
    end
    -- a short run: the average is what the run folder holds as net, with its update count
    local dir = tmpdir()
    local text, code = sh(('%s run %s --set train_size=256 --set test_size=100 --set epochs=1 --threads 1 --out %s')
      :format(q(EMBER), q(RECIPE), q(dir .. '/r')))
    assert.are.equal(0, code, text)
    local _, _, loaded = recipe.load_run(dir .. '/r')
    assert.are.equal(2, loaded.ema.updates) -- 256 images in batches of 128
    local diff = (loaded.net.head[1].weight - loaded.train_net.head[1].weight):abs():max():item()
    assert.is_true(diff > 0, 'the average should lag the trained weights')
    local clf = quality.load_classifier(dir .. '/r')
    local x = ember.rand(3, 1, 28, 28)
    assert.is_true((clf.logits(x) - loaded.net(x)):abs():max():item() < 1e-5)
    os.execute('rm -rf ' .. q(dir))
  end)

  it('standardize=true feeds the net (x - mean) / std of the training pixels', function()
    local r = require('ember.recipe').load(RECIPE)
    local p = require('ember.recipe').defaults(r)
    p.standardize = true
    ember.manual_seed(5)
    local net = r.build(p).net
    local x = ember.rand(3, 1, 28, 28)
    local expected = net.body((x - 0.2860) / 0.3530)
    assert.is_true((net:features(x) - expected):abs():max():item() < 1e-5)
    p.standardize = false
    ember.manual_seed(5)
    local raw = r.build(p).net
    assert.is_true((raw:features(x) - raw.body(x)):abs():max():item() == 0)
  end)

  it('B3 trains briefly, reports test accuracy and writes the confusion matrix', function()
    local out, code = sh(('%s run %s --set train_size=512 --set test_size=300 --set log_every=2 --threads 1 --out %s')
      :format(q(EMBER), q(RECIPE), q(run)))
    assert.are.equal(0, code, out)
    local res = loadfile(run .. '/result.lua', 't', {})()
    assert.are.equal('finished', res.status)
    assert.are.equal(3, res.epoch)
    -- 512 images, 3 epochs: well above chance (10%) on the 300 test images
    assert.is_true(res.metrics.test_acc > 0.4, tostring(res.metrics.test_acc))
    assert.is_true(exists(run .. '/samples/confusion.png'))
    assert.is_true(exists(run .. '/samples/confusion.csv'))
    assert.is_truthy(out:find('epoch 3/3  test_acc', 1, true), out)
  end)

  it('loads as a judge: logits, probabilities, 128-d features, predictions, a report', function()
    local clf = quality.load_classifier(run)
    assert.are.equal('fashion', clf.dataset)
    assert.are.equal('Trouser', clf.classes[2])
    local x = ember.data.fashion_mnist{split = 'test'}.x:narrow(1, 1, 700)
    assert.are.same({700, 10}, clf.logits(x):shape())
    assert.are.same({700, 128}, clf.features(x):shape())
    local p = clf.probs(x)
    assert.is_true((p:sum(2) - 1):abs():max():item() < 1e-4)
    local pred = clf.predict(x)
    assert.is_true(pred:min():item() >= 1 and pred:max():item() <= 10)
    local ref = quality.reference(clf, {n = 300})
    local rep = quality.report(clf, x:narrow(1, 301, 400), {reference = ref})
    assert.are.equal(400, rep.n)
    assert.is_true(rep.fd >= 0 and rep.score >= 1 and rep.score <= 10)
    -- the test set against a pixel-noise set: much farther
    local noise = quality.report(clf, ember.rand(400, 1, 28, 28), {reference = ref})
    assert.is_true(noise.fd > 5 * rep.fd, ('noise %g, test %g'):format(noise.fd, rep.fd))
    raises('classifier features: x [3 x 28 x 28] must be 4-D', clf.features, ember.zeros(3, 28, 28))
    raises('classifier logits: x [2 x 3 x 28 x 28] must be [N x 1 x 28 x 28]', clf.logits, ember.zeros(2, 3, 28, 28))
    raises('report: images must be in [0, 1], got values in [-1, 1]', quality.report, clf, ember.tensor{-1, 1}:view(2, 1, 1, 1):expand{2, 1, 28, 28})
  end)

  it('the tuned variant (BatchNorm, dropout, flips and shifts, cosine rate) runs', function()
    local tuned = dir .. '/tuned'
    local out, code = sh(('%s run %s --set variant=tuned --set epochs=1 --set train_size=256 --set test_size=200 --threads 1 --out %s')
      :format(q(EMBER), q(RECIPE), q(tuned)))
    assert.are.equal(0, code, out)
    local clf = quality.load_classifier(tuned)
    assert.are.same({3, 128}, clf.features(ember.rand(3, 1, 28, 28)):shape())
  end)

  it('refuses unknown variants and loading a run of another recipe', function()
    local out, code = sh(('%s run %s --set variant=huge --out %s'):format(q(EMBER), q(RECIPE), q(dir .. '/bad')))
    assert.are_not.equal(0, code)
    assert.is_truthy(out:find("param 'variant' must be one of b3, tuned, got 'huge'", 1, true), out)
    local other = dir .. '/other'
    os.execute('mkdir -p ' .. q(other) .. ' && touch ' .. q(other .. '/checkpoint'))
    local f = assert(io.open(other .. '/config.lua', 'w'))
    f:write('return {name = "tiny", params = {}}\n')
    f:close()
    raises('is a run of recipe tiny, expected classifier', quality.load_classifier, other)
  end)
end)
