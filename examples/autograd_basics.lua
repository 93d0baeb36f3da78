-- autograd_basics.lua — a first script: tensors,
-- broadcasting, autograd and a tiny model fitted by gradient descent.
local ember = require 'ember'
ember.manual_seed(0)

print('A tensor and its transpose product:')
local x = ember.tensor{{1, 2, 3}, {4, 5, 6}}
print(x:matmul(x:t()))

print('\nFitting y = 3x - 1 with autograd and plain gradient descent:')
local xs = ember.linspace(-1, 1, 64):view(64, 1)
local ys = xs * 3 - 1 + ember.randn(64, 1) * 0.05
local w = ember.zeros(1, 1):requires_grad()
local b = ember.zeros(1):requires_grad()
for step = 1, 200 do
  local loss = ((ember.linear(xs, w, b) - ys) ^ 2):mean()
  w.grad, b.grad = nil, nil
  loss:backward()
  ember.no_grad(function()
    w:sub_(w.grad * 0.1)
    b:sub_(b.grad * 0.1)
  end)
  if step % 50 == 0 then print(('  step %3d  loss %.5f'):format(step, loss:item())) end
end
print(('  learned w = %.3f, b = %.3f'):format(w:item(), b:item()))
