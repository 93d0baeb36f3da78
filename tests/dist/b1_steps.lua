-- b1_steps.lua — the B1 VAE (DESIGN.md) as a step-mode recipe that logs every step's
-- loss, for the data-parallel equivalence test (tests/dist/run_dist_test.sh): the same
-- run on 1 and on 2 ranks must give the same loss curve.
local ember = require 'ember'
local nn, optim, losses, data = ember.nn, ember.optim, ember.losses, ember.data

local VAE = nn.Module:extend('B1VAE')
function VAE:init()
  self.enc = nn.Linear(784, 400)
  self.mu, self.logvar = nn.Linear(400, 20), nn.Linear(400, 20)
  self.dec1, self.dec2 = nn.Linear(20, 400), nn.Linear(400, 784)
end
function VAE:forward(x)
  local h = self.enc(x):relu()
  local mu, logvar = self.mu(h), self.logvar(h)
  local z = losses.reparameterize(mu, logvar)
  return self.dec2(self.dec1(z):relu()), mu, logvar
end

return {
  name = 'b1-steps',
  params = {
    epochs = {default = 1, type = 'integer', min = 1, help = 'passes'},
    steps = {default = 200, type = 'integer', min = 1, help = 'batches of 128 per epoch'},
    batch = {default = 128, type = 'integer', min = 1, help = 'global batch'},
    checkpoint_every = {default = 0, type = 'integer', min = 0, help = 'steps between checkpoints (0: each epoch)'},
    slow = {default = 0, type = 'number', min = 0, help = 'seconds of extra wall time per step (for the kill test)'},
  },
  build = function(p)
    local model = VAE()
    return {model = model, opt = optim.Adam(model:parameters(), {lr = 1e-3}), slow = p.slow}
  end,
  data = function(p)
    local ds = data.fashion_mnist{split = 'train'}
    local n = p.steps * p.batch
    local x = ds.x:narrow(1, 1, n):reshape(n, 784)
    return {train = data.DataLoader(data.TensorDataset(x), {batch_size = p.batch, shuffle = true})}
  end,
  train_step = function(state, batch, step, log)
    local x = batch[1]
    local logits, mu, logvar = state.model(x)
    local loss = losses.bce_with_logits(logits, x, {reduction = 'batchmean'})
      + losses.kl_normal(mu, logvar, {reduction = 'batchmean'})
    state.opt:zero_grad()
    loss:backward()
    state.opt:step()
    log{loss = loss}
    if state.slow > 0 then -- waits without the CPU: os.clock would count other threads' time
      local t0 = ember.clock()
      while ember.clock() - t0 < state.slow do end
    end
  end,
}
