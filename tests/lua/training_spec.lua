-- training_spec.lua — ember.optim and ember.losses learning for real, in a
-- fraction of a second each: Adam and SGD with momentum minimise a least
-- squares problem to below 1e-6, and a small MLP trained with Adam and
-- cross-entropy separates two moons. The data comes from the seeded generator.
local ember = require 'ember'
local optim = require 'ember.optim'
local losses = require 'ember.losses'

-- sum((A x - b)^2) for a fixed tall A and b = A x*, so the minimum is 0.
local function least_squares()
  ember.manual_seed(1)
  local A = ember.randn(8, 4)
  local b = A:matmul(ember.randn(4, 1))
  return function(x) return (A:matmul(x) - b):square():sum() end
end

local function minimise(make_opt, steps)
  local f = least_squares()
  local x = ember.zeros(4, 1):requires_grad()
  local opt = make_opt({ x })
  local first = f(x):item()
  for _ = 1, steps do
    opt:zero_grad()
    local loss = f(x)
    loss:backward()
    opt:step()
  end
  return first, f(x):item()
end

describe('training', function()
  it('Adam minimises a least-squares problem to below 1e-6', function()
    local first, last = minimise(function(p) return optim.Adam(p, { lr = 0.05 }) end, 600)
    assert.is_true(first > 1, 'the problem starts far from its minimum')
    assert.is_true(last < 1e-6, ('final loss %g'):format(last))
  end)

  it('SGD with momentum minimises a least-squares problem to below 1e-6', function()
    local first, last = minimise(function(p) return optim.SGD(p, { lr = 0.01, momentum = 0.9 }) end, 600)
    assert.is_true(first > 1)
    assert.is_true(last < 1e-6, ('final loss %g'):format(last))
  end)

  it('plain SGD without momentum is slower on the same budget (the test can tell them apart)', function()
    local _, momentum = minimise(function(p) return optim.SGD(p, { lr = 0.01, momentum = 0.9 }) end, 100)
    local _, plain = minimise(function(p) return optim.SGD(p, { lr = 0.01 }) end, 100)
    assert.is_true(plain > momentum, ('plain %g, momentum %g'):format(plain, momentum))
  end)

  -- Two interleaving half circles with Gaussian noise, labels 1 and 2.
  local function two_moons(n, noise)
    local t = ember.rand(n) * math.pi
    local upper = ember.stack({ t:cos(), t:sin() }, 2)
    local lower = ember.stack({ 1 - t:cos(), 0.5 - t:sin() }, 2)
    local x = ember.cat({ upper, lower }, 1) + ember.randn(2 * n, 2) * noise
    local labels = {}
    for i = 1, 2 * n do labels[i] = i <= n and 1 or 2 end
    return x, ember.tensor(labels)
  end

  -- A 2-32-32-2 ReLU MLP on raw tensors (He-initialised), as a function and its parameters.
  local function mlp()
    local function layer(fan_in, fan_out)
      return (ember.randn(fan_out, fan_in) * math.sqrt(2 / fan_in)):requires_grad(), ember.zeros(fan_out):requires_grad()
    end
    local w1, b1 = layer(2, 32)
    local w2, b2 = layer(32, 32)
    local w3, b3 = layer(32, 2)
    local function forward(x)
      local h = ember.linear(x, w1, b1):relu()
      h = ember.linear(h, w2, b2):relu()
      return ember.linear(h, w3, b3)
    end
    return forward, { w1, b1, w2, b2, w3, b3 }
  end

  local function accuracy(logits, y) return logits:argmax(2):eq(y):mean():item() end

  it('an MLP trained with Adam separates two moons (>= 97% train accuracy)', function()
    ember.manual_seed(7)
    local x, y = two_moons(100, 0.1)
    local forward, params = mlp()
    local opt = optim.Adam(params, { lr = 0.01 })
    local first = losses.cross_entropy(forward(x), y):item()
    for _ = 1, 300 do
      opt:zero_grad()
      local loss = losses.cross_entropy(forward(x), y)
      loss:backward()
      opt:step()
    end
    local logits = forward(x)
    local acc, last = accuracy(logits, y), losses.cross_entropy(logits, y):item()
    assert.is_true(first > 0.3, ('initial loss %g'):format(first))
    assert.is_true(last < 0.1, ('final loss %g'):format(last))
    assert.is_true(acc >= 0.97, ('train accuracy %g'):format(acc))
  end)
end)
