-- reference_spec.lua — docs/reference.md's checked code blocks run as written: the
-- recipe block trains with `ember run` (and samples), the losses and mixture-of-logistics
-- blocks run with `ember`. Also the documented reduction rule, loss by loss.
local ember = require 'ember'
local losses = require 'ember.losses'
local h = require 'tests.lua.helpers.common'
local q, sh, read, tmpdir = h.q, h.sh, h.read, h.tmpdir

-- The ```lua block after the line "<!-- checked: NAME -->".
local function checked_block(name)
  local doc = assert(read(h.ROOT .. '/docs/reference.md'), 'docs/reference.md is missing')
  local after = doc:match('<!%-%- checked: ' .. name .. ' %-%->%s*```lua\n(.-)\n```')
  assert(after, 'no checked block "' .. name .. '" in docs/reference.md')
  return after
end

describe('docs/reference.md', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('the recipe block trains, evaluates and samples under ember run', function()
    local f = assert(io.open(dir .. '/xor.lua', 'w'))
    f:write(checked_block('recipe'))
    f:close()
    local out, code = sh('cd ' .. q(dir) .. ' && ' .. q(h.EMBER) .. ' run xor.lua --threads 1 --out r')
    assert.are.equal(0, code, out)
    local res = h.read_lua(dir .. '/r/result.lua')
    assert.are.equal('finished', res.status)
    assert.is_number(res.metrics.test_acc)
    assert.is_true(h.exists(dir .. '/r/samples/decision.png'))
    local _, rows = require('ember.files').read_csv(dir .. '/r/metrics.csv')
    -- 512 points in batches of 64: 8 steps per epoch, a row per step (log_every 1) and an
    -- evaluation row per epoch; steps count globally, not from 1 in each epoch
    assert.are.equal(8 + 1 + 8 + 1, #rows)
    assert.are.same({1, 1}, {rows[1].epoch, rows[1].step})
    assert.are.same({2, 9}, {rows[10].epoch, rows[10].step})
    assert.are.same({2, 16}, {rows[#rows].epoch, rows[#rows].step})
    assert.is_number(rows[#rows].test_acc)
  end)

  it('the losses block runs', function()
    local f = assert(io.open(dir .. '/losses.lua', 'w'))
    f:write(checked_block('losses'))
    f:close()
    local out, code = sh(q(h.EMBER) .. ' ' .. q(dir .. '/losses.lua'))
    assert.are.equal(0, code, out)
    assert.truthy(out:match('^rec %S+  kl %S+  d %S+  g %S+'), out)
  end)

  it('the mixture-of-logistics block runs', function()
    local f = assert(io.open(dir .. '/dmol.lua', 'w'))
    f:write(checked_block('dmol'))
    f:close()
    local out, code = sh(q(h.EMBER) .. ' ' .. q(dir .. '/dmol.lua'))
    assert.are.equal(0, code, out)
    assert.truthy(out:match('^nll %S+ nats/image  %S+ bits/dim'), out)
  end)
end)

describe('reduction means the same for every loss', function()
  ember.manual_seed(5)
  local a, b = ember.randn(4, 6), ember.rand(4, 6)
  local logvar = ember.randn(4, 6) * 0.3
  local cases = {
    mse = function(o) return losses.mse(a, b, o) end,
    l1 = function(o) return losses.l1(a, b, o) end,
    bce = function(o) return losses.bce(b, b:gt(0.5), o) end,
    bce_with_logits = function(o) return losses.bce_with_logits(a, b, o) end,
    kl_normal = function(o) return losses.kl_normal(a, logvar, o) end,
    kl_normal_two = function(o) return losses.kl_normal(a, logvar, b, logvar * 0.5, o) end,
    gaussian_nll = function(o) return losses.gaussian_nll(b, a, logvar, o) end,
    log_bernoulli = function(o) return losses.log_bernoulli(b, a, o) end,
  }
  for name, f in pairs(cases) do
    it(name .. ": 'none' is elementwise, 'mean' over all, 'sum', 'batchmean' = sum / N", function()
      local terms = f({reduction = 'none'})
      assert.are.same({4, 6}, terms:shape())
      local sum = terms:sum():item()
      assert.is_true(math.abs(f({reduction = 'sum'}):item() - sum) <= 1e-4 * (1 + math.abs(sum)))
      assert.is_true(math.abs(f():item() - sum / 24) <= 1e-5 * (1 + math.abs(sum)))
      assert.is_true(math.abs(f({reduction = 'mean'}):item() - sum / 24) <= 1e-5 * (1 + math.abs(sum)))
      assert.is_true(math.abs(f({reduction = 'batchmean'}):item() - sum / 4) <= 1e-5 * (1 + math.abs(sum)))
    end)
  end

  it("cross_entropy and nll: one term per sample; 'batchmean' is the sum over N, weights too", function()
    local labels = {1, 3, 2, 6}
    local ce = losses.cross_entropy(a, labels, {reduction = 'none'})
    assert.are.same({4}, ce:shape())
    assert.is_true(math.abs(losses.cross_entropy(a, labels, {reduction = 'batchmean'}):item() - ce:sum():item() / 4) < 1e-5)
    local w = ember.tensor{1, 2, 3, 1, 1, 4}
    local wsum = losses.cross_entropy(a, labels, {reduction = 'sum', weight = w}):item()
    assert.is_true(math.abs(losses.cross_entropy(a, labels, {reduction = 'batchmean', weight = w}):item() - wsum / 4) < 1e-5)
    assert.is_true(math.abs(losses.cross_entropy(a, labels, {weight = w}):item() - wsum / (1 + 3 + 2 + 4)) < 1e-5)
    local lp = a:log_softmax(2)
    assert.is_true(math.abs(losses.nll(lp, labels, {reduction = 'batchmean'}):item() - losses.nll(lp, labels, {reduction = 'sum'}):item() / 4) < 1e-5)
  end)

  it("discretized_logistic_mixture: one term per position [N x H x W]; 'mean' over N*H*W", function()
    local params, x = ember.randn(4, 20, 2, 3), ember.rand(4, 3, 2, 3) * 2 - 1
    local function f(o) return losses.discretized_logistic_mixture(params, x, o) end
    local terms = f({reduction = 'none'})
    assert.are.same({4, 2, 3}, terms:shape())
    local sum = terms:sum():item()
    assert.is_true(math.abs(f({reduction = 'sum'}):item() - sum) <= 1e-4 * (1 + math.abs(sum)))
    assert.is_true(math.abs(f():item() - sum / 24) <= 1e-5 * (1 + math.abs(sum)))
    assert.is_true(math.abs(f({reduction = 'batchmean'}):item() - sum / 4) <= 1e-5 * (1 + math.abs(sum)))
  end)

  it("the adversarial losses take 'batchmean' and refuse 'none'", function()
    local gan = losses.adversarial('non_saturating', {reduction = 'batchmean'})
    local r, f = ember.randn(8, 1), ember.randn(8, 1)
    local sum = losses.adversarial('non_saturating', {reduction = 'sum'})
    assert.is_true(math.abs(gan.d_loss(r, f):item() - sum.d_loss(r, f):item() / 8) < 1e-5)
    local ok, err = pcall(losses.adversarial, 'hinge', {reduction = 'none'})
    assert.is_false(ok)
    assert.truthy(tostring(err):find("adversarial: reduction 'none' is not supported", 1, true), err)
  end)

  it('a bad reduction names the loss and lists the four', function()
    for _, call in ipairs{
      function() return losses.mse(a, b, {reduction = 'avg'}) end,
      function() return losses.bce_with_logits(a, b, {reduction = 'avg'}) end,
      function() return losses.kl_normal(a, logvar, {reduction = 'avg'}) end,
    } do
      local ok, err = pcall(call)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("bad reduction 'avg' (expected 'mean', 'sum', 'batchmean' or 'none')", 1, true), err)
    end
  end)
end)
