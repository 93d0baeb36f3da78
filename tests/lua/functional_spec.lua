-- functional_spec.lua — ember.nn.functional, the torch.nn.functional namespace: it
-- loads on first use, every member is the existing function (the same value, not a
-- copy) or, for PyTorch's loss names, a call of it; results equal the underlying op;
-- bad arguments name the function the user called; tracebacks keep naming the
-- implementation (ember.softmax), never the functional alias.
local ember = require 'ember'
local h = require 'tests.lua.helpers.common'

local losses = ember.losses

local function close(a, b)
  assert.are.same(a:shape(), b:shape())
  assert.is_true(((a - b):abs():max():item()) < 1e-6)
end

local function error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, 'expected an error')
  return tostring(err)
end

describe('ember.nn.functional', function()
  it('loads on first use, through ember.nn and through require', function()
    local out, code = h.sh(h.q(h.EMBER) .. [[ -e "
      print(package.loaded['ember.nn.functional'] == nil)
      local F = ember.nn.functional
      print(package.loaded['ember.nn.functional'] == F, require('ember.nn.functional') == F, ember.nn.functional == F)"]])
    assert.are.equal(0, code, out)
    assert.are.equal('true\ntrue\ttrue\ttrue\n', out)
  end)

  it('holds the ember ops themselves (same function values), incl. the README forms', function()
    local F = ember.nn.functional
    for _, name in ipairs({ 'relu', 'relu_', 'leaky_relu', 'elu', 'sigmoid', 'tanh', 'softplus',
      'softmax', 'log_softmax', 'linear', 'conv2d', 'conv_transpose2d', 'max_pool2d',
      'avg_pool2d', 'upsample_nearest', 'dropout', 'embedding', 'batch_norm' }) do
      assert.are.equal('function', type(ember[name]), name)
      assert.is_true(rawequal(F[name], ember[name]), name)
    end
  end)

  it('holds every function of ember.losses under its ember name', function()
    local F, n = ember.nn.functional, 0
    for name, fn in pairs(losses) do
      if type(fn) == 'function' then
        assert.is_true(rawequal(F[name], fn), name)
        n = n + 1
      end
    end
    assert.is_true(n >= 11, 'only ' .. n .. ' losses')
    for _, name in ipairs({ 'mse', 'l1', 'bce', 'bce_with_logits', 'cross_entropy', 'nll',
      'kl_normal', 'gaussian_nll', 'log_bernoulli', 'reparameterize', 'adversarial' }) do
      assert.is_true(rawequal(F[name], losses[name]), name)
    end
  end)

  it('pairs() lists every member', function()
    local seen = {}
    for k, v in pairs(ember.nn.functional) do
      assert.are.equal('function', type(v), k)
      seen[k] = true
    end
    for _, k in ipairs({ 'relu', 'conv2d', 'mse', 'mse_loss', 'binary_cross_entropy_with_logits' }) do
      assert.is_true(seen[k], k)
    end
  end)

  it('activations, layers and pooling equal the underlying op', function()
    local F = ember.nn.functional
    ember.manual_seed(3)
    local x = ember.randn(2, 3, 6, 6)
    local w, b = ember.randn(4, 3, 3, 3), ember.randn(4)
    close(F.relu(x), x:relu())
    close(F.leaky_relu(x, 0.2), x:leaky_relu(0.2))
    close(F.elu(x, 0.5), x:elu(0.5))
    close(F.sigmoid(x), x:sigmoid())
    close(F.tanh(x), x:tanh())
    close(F.softplus(x), x:softplus())
    close(F.softmax(x, 2), x:softmax(2))
    close(F.log_softmax(x, -1), ember.log_softmax(x, -1))
    close(F.conv2d(x, w, b, { padding = 1 }), ember.conv2d(x, w, b, { padding = 1 }))
    local wt = ember.randn(3, 2, 2, 2)
    close(F.conv_transpose2d(x, wt, nil, { stride = 2 }), ember.conv_transpose2d(x, wt, nil, { stride = 2 }))
    close(F.max_pool2d(x, 2), x:max_pool2d(2))
    close(F.avg_pool2d(x, 3, { stride = 1 }), ember.avg_pool2d(x, 3, { stride = 1 }))
    close(F.upsample_nearest(x, 2), ember.upsample_nearest(x, 2))
    local m, v = ember.zeros(3), ember.ones(3)
    close(F.batch_norm(x, m, v, nil, nil, { training = false }),
      ember.batch_norm(x, m, v, nil, nil, { training = false }))
    close(F.dropout(x, 0.5, false), x)
    ember.manual_seed(9)
    local d1 = F.dropout(x, 0.5, true)
    ember.manual_seed(9)
    close(d1, ember.dropout(x, 0.5, true))
    local flat, W, c = x:flatten(2), ember.randn(5, 108), ember.randn(5)
    close(F.linear(flat, W, c), ember.linear(flat, W, c))
    local E = ember.randn(10, 4)
    close(F.embedding(ember.tensor { 1, 10, 3 }, E), ember.embedding(ember.tensor { 1, 10, 3 }, E))
    local y = x:clone()
    F.relu_(y)
    close(y, x:relu())
  end)

  it("PyTorch's loss names equal ember's losses, options included", function()
    local F = ember.nn.functional
    ember.manual_seed(4)
    local pred, target = ember.randn(4, 3), ember.randn(4, 3)
    local p, t01 = ember.rand(4, 3) * 0.9 + 0.05, ember.rand(4, 3)
    local logits, labels = ember.randn(4, 5), ember.tensor { 1, 5, 2, 2 }
    local cases = {
      { 'mse_loss', 'mse', pred, target }, { 'l1_loss', 'l1', pred, target },
      { 'binary_cross_entropy', 'bce', p, t01 },
      { 'binary_cross_entropy_with_logits', 'bce_with_logits', pred, t01 },
      { 'nll_loss', 'nll', ember.log_softmax(logits, -1), labels },
    }
    for _, c in ipairs(cases) do
      local torch_name, name, a, b = c[1], c[2], c[3], c[4]
      close(F[torch_name](a, b), losses[name](a, b))
      close(F[torch_name](a, b, { reduction = 'sum' }), losses[name](a, b, { reduction = 'sum' }))
      close(F[torch_name](a, b, { reduction = 'none' }), losses[name](a, b, { reduction = 'none' }))
      -- the value differs from another reduction's, so the options did reach the loss
      assert.is_true(math.abs(F[torch_name](a, b, { reduction = 'sum' }):item()
        - F[torch_name](a, b):item()) > 1e-3, torch_name)
    end
    close(F.cross_entropy(logits, labels, { label_smoothing = 0.1 }),
      losses.cross_entropy(logits, labels, { label_smoothing = 0.1 }))
    -- gradients flow through the alias as through the loss
    local q = ember.randn(4, 3):requires_grad()
    F.mse_loss(q, target):backward()
    close(q.grad, (q:detach() - target) * (2 / 12))
  end)

  it('bad arguments name the function called and the argument', function()
    local F = ember.nn.functional
    assert.are.equal('relu: bad argument #1 (expected tensor, got number)', error_of(F.relu, 5))
    assert.are.equal('conv2d: bad argument #1 (expected tensor, got number)', error_of(F.conv2d, 5))
    assert.are.equal("mse: bad argument #1 'pred' (expected tensor, got number)", error_of(F.mse, 5))
    assert.are.equal("mse_loss: bad argument #1 'pred' (expected tensor, got number)", error_of(F.mse_loss, 5))
    assert.are.equal("l1_loss: bad argument #2 'target' (expected tensor, got string)",
      error_of(F.l1_loss, ember.zeros(2), 'x'))
    assert.are.equal('mse_loss: pred [2] and target [3] must have the same shape',
      error_of(F.mse_loss, ember.zeros(2), ember.zeros(3)))
    local err = error_of(F.binary_cross_entropy_with_logits, ember.zeros(2), 5)
    assert.is_truthy(err:find('^binary_cross_entropy_with_logits: bad argument #2'), err)
    err = error_of(F.nll_loss, ember.zeros(2, 3), ember.tensor { 1, 2 }, { reduction = 'avg' })
    assert.is_truthy(err:find("^nll_loss: bad reduction 'avg'"), err)
    -- called from Lua code, the message points at the caller's line
    err = error_of(function() local loss = F.mse_loss(5); return loss end)
    assert.is_truthy(err:find("functional_spec%.lua:%d+: mse_loss: bad argument #1 'pred'"), err)
  end)

  it("tracebacks name the implementation, not the functional alias", function()
    local script = os.tmpname()
    local f = assert(io.open(script, 'w'))
    f:write("local F = ember.nn.functional\nlocal x = ember.zeros(2, 3)\nx:softmax('a')\n")
    f:close()
    local out, code = h.sh(h.q(h.EMBER) .. ' ' .. h.q(script))
    os.remove(script)
    assert.are.equal(1, code, out)
    assert.is_truthy(out:find("in function 'ember.softmax'", 1, true), out)
    assert.is_falsy(out:find('functional', 1, true), out)
  end)
end)
