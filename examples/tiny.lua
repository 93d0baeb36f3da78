-- examples/tiny.lua — the smallest complete recipe: a 2-hidden-1 MLP learns a bumpy
-- surface z = sin(3x)·cos(2y) from 256 noisy points. It trains in well under a second,
-- so the tests and the README walk-through use it.
--
--   ember run examples/tiny.lua --set hidden=32 --out runs/tiny
--   ember sample runs/tiny --out surface.png
--   ember sweep examples/tiny.lua --grid lr=0.003,0.01,0.03 --seeds 2
local ember = require 'ember'
local nn = require 'ember.nn'
local optim = require 'ember.optim'
local image = require 'ember.image'

local recipe = {
  name = 'tiny',
  description = 'a small MLP fits a bumpy surface from 256 points',
  params = {
    epochs = {default = 10, type = 'integer', min = 1, help = 'passes over the training points'},
    batch = {default = 32, type = 'integer', min = 1, help = 'points per step'},
    hidden = {default = 32, type = 'integer', min = 1, help = 'hidden units'},
    lr = {default = 0.03, type = 'number', min = 0, min_exclusive = true, help = 'Adam learning rate'},
    act = {default = 'tanh', type = 'string', choices = {'tanh', 'relu'}, help = 'hidden activation'},
    checkpoint_every = {default = 0, type = 'integer', min = 0, help = 'steps between extra checkpoints (0: only at epoch ends)'},
    n_samples = {default = 32, type = 'integer', min = 1, help = 'pixels per side of the sample picture'},
    fail_if = {default = 0, type = 'integer', help = 'for tests: build() fails when hidden equals this'},
    slow = {default = 0, type = 'number', min = 0, help = 'for tests: seconds of busy work per step'},
  },
  main_metric = {name = 'test_loss', goal = 'min'},
}

-- The surface to learn, for points x [N x 2] -> [N x 1].
local function surface(x)
  local a = (x:select(2, 1) * 3):sin()
  local b = (x:select(2, 2) * 2):cos()
  return (a * b):unsqueeze(2)
end

-- The model's prediction for points x [N x 2] -> [N x 1].
local function predict(state, x) return state.model:forward(x) end

-- The model and its optimizer. Everything in state with a state_dict() is checkpointed.
function recipe.build(p)
  if p.hidden == p.fail_if then
    error(string.format('tiny: failing on purpose (hidden = fail_if = %d)', p.hidden), 0)
  end
  local model = nn.Sequential(nn.Linear(2, p.hidden), p.act == 'relu' and nn.ReLU() or nn.Tanh(),
                              nn.Linear(p.hidden, 1))
  return {model = model, opt = optim.Adam(model:parameters(), {lr = p.lr}),
          slow = p.slow > 0 and p.slow or nil}
end

-- 256 training and 128 test points in [-1, 1]^2 with a little noise on the targets.
-- data.train(epoch) returns an iterator over shuffled batches {x, z}.
function recipe.data(p)
  local x = ember.rand(256, 2) * 2 - 1
  local z = surface(x) + ember.randn(256, 1) * 0.05
  local test_x = ember.rand(128, 2) * 2 - 1
  local data = {test_x = test_x, test_z = surface(test_x)}
  function data.train(epoch)
    local keys, order = ember.rand(256):totable(), {}
    for i = 1, 256 do order[i] = i end
    table.sort(order, function(a, b) return keys[a] < keys[b] end)
    local first = 1
    return function()
      if first > 256 then return nil end
      local idx = ember.tensor(table.move(order, first, math.min(first + p.batch - 1, 256), 1, {}))
      first = first + p.batch
      return {x = x:index_select(1, idx), z = z:index_select(1, idx)}
    end
  end
  return data
end

-- One Adam step on one batch; logs the batch's mean squared error.
function recipe.train_step(state, batch, step, log)
  state.opt:zero_grad()
  local loss = (predict(state, batch.x) - batch.z):square():mean()
  loss:backward()
  state.opt:step()
  log{train_loss = loss}
  if state.slow then
    local stop = os.clock() + state.slow
    while os.clock() < stop do end
  end
end

-- Mean squared error on the test points.
function recipe.evaluate(state, data)
  return ember.no_grad(function()
    local err = predict(state, data.test_x) - data.test_z
    return {test_loss = err:square():mean():item(), test_mae = err:abs():mean():item()}
  end)
end

-- Writes the learned surface over [-1, 1]^2 as an n x n greyscale picture (surface.png).
function recipe.sample(state, p, out_dir, n)
  local xs = ember.linspace(-1, 1, n)
  local grid = ember.stack({xs:unsqueeze(2):expand{n, n}, xs:unsqueeze(1):expand{n, n}}, 3)
  local z = ember.no_grad(function() return predict(state, grid:reshape{n * n, 2}) end)
  image.save_png(z:reshape{n, n}, out_dir .. '/surface.png', {range = {-1, 1}, scale = 4})
end

return recipe
