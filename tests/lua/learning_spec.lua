-- learning_spec.lua — training that learns for real, in seconds: a tiny conv net
-- overfits 64 Fashion-MNIST images, and a run saved after 200 steps and resumed in a
-- new process continues exactly as an uninterrupted 400-step run.
local ember = require 'ember'
local nn, optim, losses, data = ember.nn, ember.optim, ember.losses, ember.data

local ROOT = os.getenv('PWD')
local EMBER = os.getenv('EMBER_BIN') or (ROOT .. '/build/ember')

local function run(args)
  local p = io.popen(EMBER .. ' ' .. args .. ' 2>&1')
  local out = p:read('a')
  local ok = p:close()
  assert(ok, 'ember ' .. args .. ' failed:\n' .. out)
  local lines = {}
  for line in out:gmatch('[^\n]+') do lines[#lines + 1] = line end
  return lines
end

describe('learning', function()
  it('a tiny conv net overfits 64 images (100% train accuracy)', function()
    ember.manual_seed(3)
    local train = data.fashion_mnist { split = 'train' }
    local x, y = train.x:narrow(1, 1, 64), train.y:narrow(1, 1, 64)
    local net = nn.Sequential(nn.Conv2d(1, 8, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(8, 16, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    local opt = optim.Adam(net:parameters(), { lr = 3e-3 })
    local first_loss, loss
    for step = 1, 150 do
      opt:zero_grad()
      loss = losses.cross_entropy(net(x), y)
      first_loss = first_loss or loss:item()
      loss:backward()
      opt:step()
    end
    local _, pred = ember.no_grad(function() return net(x) end):max(2)
    local acc = pred:eq(y):mean():item()
    assert.is_true(first_loss > 2.0, 'an untrained net starts near log 10')
    assert.are.equal(1.0, acc, ('train accuracy %.3f, final loss %.4f'):format(acc, loss:item()))
  end)

  it('resume is exact: 200 steps + save, then 200 more in a new process == 400 steps', function()
    local ckpt = os.tmpname()
    local full = run(ROOT .. '/tests/lua/helpers/resume_train.lua full')
    local first = run(ROOT .. '/tests/lua/helpers/resume_train.lua first ' .. ckpt)
    local second = run(ROOT .. '/tests/lua/helpers/resume_train.lua second ' .. ckpt)
    os.remove(ckpt)
    assert.are.equal(400, #full)
    assert.are.equal(200, #first)
    assert.are.equal(200, #second)
    for i = 1, 200 do assert.are.equal(full[i], first[i], 'step ' .. i) end
    for i = 1, 200 do assert.are.equal(full[200 + i], second[i], 'step ' .. (200 + i)) end
    assert.are_not.equal(full[1], full[400]) -- it trained
  end)
end)
