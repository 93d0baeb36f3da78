-- bn_steps.lua — an MLP classifier with BatchNorm1d on Fashion-MNIST in step mode, logging
-- every step's loss, for the synchronized-BatchNorm test (tests/dist/run_dist_test.sh):
-- with sync=true, 2 ranks must give one process's loss curve and running statistics.
local ember = require 'ember'
local nn, optim, losses, data = ember.nn, ember.optim, ember.losses, ember.data
return {
  name = 'bn-steps',
  params = {
    steps = {default = 40, type = 'integer', min = 1, help = 'batches of 64'},
    sync = {default = true, type = 'boolean', help = 'synchronized batch statistics'},
  },
  build = function(p)
    local net = nn.Sequential(nn.Linear(784, 64), nn.BatchNorm1d(64, {sync = p.sync}), nn.ReLU(),
                              nn.Linear(64, 10))
    return {net = net, opt = optim.SGD(net:parameters(), {lr = 0.1})}
  end,
  data = function(p)
    local ds = data.fashion_mnist{split = 'train'}
    local n = p.steps * 64
    local x = ds.x:narrow(1, 1, n):reshape(n, 784)
    return {train = data.DataLoader(data.TensorDataset(x, ds.y:narrow(1, 1, n)), {batch_size = 64, shuffle = true})}
  end,
  train_step = function(state, batch, step, log)
    local loss = losses.cross_entropy(state.net(batch[1]), batch[2])
    state.opt:zero_grad()
    loss:backward()
    state.opt:step()
    log{loss = loss}
  end,
}
