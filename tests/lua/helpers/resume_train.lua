-- resume_train.lua MODE CKPT — the training run behind the "resume is exact" spec.
-- A small MLP with dropout (which draws from the generator) learns noisy labels with
-- Adam; each step draws its batch with ember.randint. Prints one loss per line as
-- %.17g, so two runs can be compared bit for bit.
--   MODE = full    train 400 steps from the start
--   MODE = first   train 200 steps, then save model + optimizer + RNG + step to CKPT
--   MODE = second  load CKPT in this new process and train steps 201..400
local ember = require 'ember'
local nn, optim, losses = ember.nn, ember.optim, ember.losses
local mode, ckpt = arg[1], arg[2]
ember.set_num_threads(1)
ember.manual_seed(7)
local x = ember.randn(256, 10)
local y = ((x:narrow(2, 1, 1) + x:narrow(2, 2, 1)):gt(0):view(256) + 1)
local net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
local opt = optim.Adam(net:parameters(), {lr = 1e-2})
local first_step, last_step = 1, 400
if mode == 'first' then last_step = 200 end
if mode == 'second' then
  local saved = ember.load(ckpt)
  net:load_state_dict(saved.model)
  opt:load_state_dict(saved.optim)
  ember.set_rng_state(saved.rng)
  first_step = saved.step + 1
end
for step = first_step, last_step do
  local idx = ember.randint(1, 257, {32})
  local loss = losses.cross_entropy(net(x:index_select(1, idx)), y:index_select(1, idx))
  opt:zero_grad()
  loss:backward()
  opt:step()
  io.write(('%.17g\n'):format(loss:item()))
end
if mode == 'first' then
  ember.save(ckpt, {model = net:state_dict(), optim = opt:state_dict(), rng = ember.get_rng_state(), step = last_step})
end
