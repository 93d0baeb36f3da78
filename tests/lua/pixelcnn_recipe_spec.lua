-- Specs for examples/pixelcnn.lua: every model (PixelCNN, Gated PixelCNN, conditional,
-- Row LSTM, PixelCNN++) and every likelihood trains one short epoch on a small subset
-- through `ember run` (EMBER_BIN), leaves a complete run folder whose test NLL is finite
-- and below the untrained model's, writes its pictures and the samplers' report (the
-- fast and the naive sampler agreeing on every pixel), and `ember sample` works on the
-- run. Bad params fail with messages.
local ember = require 'ember'
local recipe = require 'ember.recipe'
local h = require 'tests.lua.helpers.common'
local q, sh, exists = h.q, h.sh, h.exists

local ROOT, EMBER = h.ROOT, h.EMBER
local RECIPE = ROOT .. '/examples/pixelcnn.lua'

local function finite(v) return type(v) == 'number' and v == v and v > -math.huge and v < math.huge end

local base = os.tmpname()
os.remove(base)
os.execute('mkdir -p ' .. q(base))

local SMALL = {'train_subset=192', 'test_subset=48', 'epochs=1', 'channels=8', 'hidden=8', 'n_samples=4',
               'n_completions=2', 'speed_check=2'}

local RUNS = {
  pixelcnn = {'blocks=2'},
  gated = {'model=gated', 'layers=3'},
  conditional = {'model=gated', 'layers=2', 'conditional=true', 'n_samples=10'},
  rowlstm = {'model=rowlstm', 'layers=1'},
  diagbilstm = {'model=diagbilstm', 'layers=1', 'speed_check=1'},
  categorical = {'dataset=fashion', 'likelihood=categorical', 'blocks=1'},
  mixture = {'dataset=fashion', 'likelihood=logistic_mixture', 'blocks=1', 'nr_mix=2'},
  pixelcnnpp = {'model=pixelcnnpp', 'dataset=fashion', 'likelihood=logistic_mixture', 'stages=2', 'nr_mix=2',
                'n_samples=1', 'n_completions=0'},
}

local function sets_of(key)
  local all = {}
  for _, s in ipairs(SMALL) do all[#all + 1] = s end
  for _, s in ipairs(RUNS[key]) do all[#all + 1] = s end
  return all
end

local outputs = {}
local function ensure_run(key)
  local dir = base .. '/' .. key
  if not outputs[key] then
    local args = {'run', q(RECIPE), '--out', q(dir), '--threads', '1'}
    for _, s in ipairs(sets_of(key)) do args[#args + 1] = '--set ' .. q(s) end
    local out, code = sh(q(EMBER) .. ' ' .. table.concat(args, ' '))
    outputs[key] = {out = out, code = code}
  end
  return outputs[key], dir
end

-- the test NLL of the untrained model of a run's params (same seed, same subset)
local function untrained_nll(key)
  local r, p = ember.load_recipe(RECIPE, sets_of(key))
  ember.manual_seed(1)
  local state = r.build(p)
  local saved_print = _G.print
  _G.print = function() end
  local ok, d = pcall(r.data, p)
  _G.print = saved_print
  assert(ok, d)
  return r.evaluate(state, d).test_nll
end

describe('examples/pixelcnn.lua', function()
  teardown(function() os.execute('rm -rf ' .. q(base)) end)

  for _, key in ipairs {'pixelcnn', 'gated', 'conditional', 'rowlstm', 'diagbilstm', 'categorical', 'mixture',
                        'pixelcnnpp'} do
    it(key .. ': one epoch into a complete run folder, a test NLL below the untrained one, pictures', function()
      local res, dir = ensure_run(key)
      assert.are.equal(0, res.code, res.out)
      local result = recipe.files.read_lua(dir .. '/result.lua')
      assert.are.equal('finished', result.status)
      local m = result.metrics
      assert.is_true(finite(m.test_nll) and finite(m.test_bits_per_dim))
      assert.is_true(math.abs(m.test_bits_per_dim - m.test_nll / (784 * math.log(2))) < 1e-9)
      local before = untrained_nll(key)
      assert.is_true(m.test_nll < before, ('trained %g vs untrained %g'):format(m.test_nll, before))
      assert.is_true(exists(dir .. '/samples/samples.png'))
      local report = recipe.files.read_lua(dir .. '/samples/sampling.lua')
      assert.is_true(report.fast_seconds > 0)
      if key ~= 'pixelcnnpp' then
        assert.is_true(exists(dir .. '/samples/completions.png'))
        assert.are.equal(report.pixels, report.same_pixels, 'the fast and the naive sampler differ')
        assert.is_true(report.check_naive_seconds > 0 and report.speedup > 0)
      else
        assert.is_nil(report.check_images) -- only the naive sampler exists
      end
    end)
  end

  it('ember sample works on a run and writes the pictures again', function()
    local res, dir = ensure_run('gated')
    assert.are.equal(0, res.code, res.out)
    local out, code = sh(q(EMBER) .. ' sample ' .. q(dir) .. ' --n 4')
    assert.are.equal(0, code, out)
    local folder = out:match('wrote %d+ file%(s%) in (%S+)')
    assert.truthy(folder, out)
    for _, f in ipairs {'samples.png', 'completions.png', 'sampling.lua'} do
      assert.is_true(exists(folder .. '/' .. f), 'missing ' .. f .. ' in ' .. folder)
    end
  end)

  it('scripts/class_check.lua lets a classifier judge a conditional run\'s class rows', function()
    local res, dir = ensure_run('conditional')
    assert.are.equal(0, res.code, res.out)
    local cls_dir = base .. '/classifier'
    local out, code = sh(q(EMBER) .. ' run ' .. q(ROOT .. '/examples/classifier.lua') .. ' --out ' .. q(cls_dir) ..
                         ' --threads 1 --set dataset=mnist --set train_size=512 --set test_size=128 --set epochs=1')
    assert.are.equal(0, code, out)
    local script = q(ROOT .. '/scripts/class_check.lua')
    out, code = sh(q(EMBER) .. ' ' .. script .. ' ' .. q(dir) .. ' ' .. q(cls_dir) .. ' 2')
    assert.are.equal(0, code, out)
    local _, lines = out:gsub('\n  class %s*%d+ ', '')
    assert.are.equal(10, lines, out)
    local share = tonumber(out:match('PixelCNN samples labelled as the class asked for: ([%d.]+)%% of 20 %(2 per class'))
    assert.is_truthy(share, out)
    local saved = recipe.files.read_lua(dir .. '/class_check.lua')
    assert.is_true(math.abs(saved.agreement * 100 - share) < 0.051)
    assert.are.equal(cls_dir, saved.classifier)
    -- the results table shows the judgement in the run's row
    local runs = base .. '/runs'
    os.execute('mkdir -p ' .. q(runs) .. ' && ln -sfn ' .. q(dir) .. ' ' .. q(runs .. '/gated-pixelcnn-cond'))
    local table_out, table_code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/results_autoregressive.lua') .. ' ' .. q(runs))
    assert.are.equal(0, table_code, table_out)
    local row = table_out:match('\n(| Gated PixelCNN, class%-conditional %(NLL of x given its label%) [^\n]*)')
    assert.truthy(row, table_out)
    assert.truthy(row:find(('the classifier run `classifier` labels **%.1f%%** of 20 samples as the class asked for')
                           :format(share), 1, true), row)
    -- an unconditional run has no class to ask for; a temperature does not apply
    local gres, gdir = ensure_run('gated')
    assert.are.equal(0, gres.code, gres.out)
    local bad, bad_code = sh(q(EMBER) .. ' ' .. script .. ' ' .. q(gdir) .. ' ' .. q(cls_dir))
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('is a PixelCNN run without class conditioning (conditional=false)', 1, true), bad)
    bad, bad_code = sh(q(EMBER) .. ' ' .. script .. ' ' .. q(dir) .. ' ' .. q(cls_dir) .. ' 2 1 0.5')
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('TEMPERATURE must be 1 for a PixelCNN run', 1, true), bad)
    bad, bad_code = sh(q(EMBER) .. ' ' .. script .. ' ' .. q(base .. '/nowhere') .. ' ' .. q(cls_dir))
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('is not a run folder (no config.lua)', 1, true), bad)
    bad, bad_code = sh(q(EMBER) .. ' ' .. script .. ' ' .. q(cls_dir) .. ' ' .. q(cls_dir))
    assert.are.equal(2, bad_code)
    assert.truthy(bad:find('is a run of recipe classifier, expected cvae or a conditional pixelcnn', 1, true), bad)
  end)

  it('refuses params that do not fit together, by name', function()
    local count = 0
    local function fails(sets, text)
      count = count + 1
      local args = {'run', q(RECIPE), '--out', q(base .. '/bad' .. count), '--threads', '1'}
      for _, s in ipairs(sets) do args[#args + 1] = '--set ' .. q(s) end
      local out, code = sh(q(EMBER) .. ' ' .. table.concat(args, ' '))
      assert.are_not.equal(0, code)
      assert.truthy(out:find(text, 1, true), out)
    end
    fails({'model=pixelcnnpp'}, 'pixelcnn: model=pixelcnnpp needs likelihood=logistic_mixture and conditional=false')
    fails({'conditional=true'}, 'pixelcnn: conditional=true needs model=gated')
    fails({'model=lstm'}, 'model')
  end)
end)
