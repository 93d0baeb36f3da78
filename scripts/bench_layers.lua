-- bench_layers.lua — layer speed as a fraction of the machine's sgemm rate
-- measured in this same run: Linear forward+backward on [128 x 784] @ [784 x 400]
-- (target >= 0.7), Conv2d(64->128, k4, s2, p1) on [64 x 64 x 14 x 14] and
-- ConvTranspose2d(256->128, k4, s2, p1) on [64 x 256 x 7 x 7] (B2's generator layer)
-- forward+backward (targets >= 0.5); one fused elementwise chain (the Adam update:
-- reads parameter, gradient and both moments, writes three) in bytes per second
-- against the machine's memory bandwidth measured in the same run by a copy
-- (target >= 0.5); the masked conv against a weight * mask multiply. Medians of repeats.
local ember = require 'ember'
local clock = ember._clock

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

-- Median seconds of fn() over reps runs, after two warm-ups.
local function time(fn, reps)
  fn(); fn()
  local ts = {}
  for r = 1, reps do
    local t0 = clock()
    fn()
    ts[r] = clock() - t0
  end
  return median(ts)
end

ember.manual_seed(0)
local ceiling = ember._sgemm_gflops(1024, 1024, 1024, 7)
print(('sgemm ceiling (1024^3, this run): %.1f GFLOP/s'):format(ceiling))

-- Linear: y = x W^T + b, then dL/dx, dL/dW, dL/db: three gemms of 2*128*784*400 flops.
do
  local x = ember.randn(128, 784):requires_grad()
  local w = (ember.randn(400, 784) * 0.03):requires_grad()
  local b = ember.zeros(400):requires_grad()
  local g = ember.randn(128, 400)
  local flops = 3 * 2 * 128 * 784 * 400
  local t = time(function()
    x.grad, w.grad, b.grad = nil, nil, nil
    local y = ember.linear(x, w, b)
    y:backward(g)
  end, 51)
  local gf = flops / t / 1e9
  local same_shape = ember._sgemm_gflops(128, 400, 784, 51)
  print(('Linear [128 x 784] @ [784 x 400] fwd+bwd: %.3f ms, %.1f GFLOP/s = %.2f of the ceiling (target >= 0.7); sgemm at this shape: %.1f GFLOP/s')
    :format(t * 1e3, gf, gf / ceiling, same_shape))
end

-- Conv2d(64 -> 128, k4, s2, p1) on [64 x 64 x 14 x 14]: output [64 x 128 x 7 x 7].
if ember.conv2d then
  local x = ember.randn(64, 64, 14, 14):requires_grad()
  local w = (ember.randn(128, 64, 4, 4) * 0.02):requires_grad()
  local b = ember.zeros(128):requires_grad()
  local g = ember.randn(64, 128, 7, 7)
  local macs = 64 * 128 * 7 * 7 * 64 * 4 * 4
  local flops = 3 * 2 * macs
  local t = time(function()
    x.grad, w.grad, b.grad = nil, nil, nil
    local y = ember.conv2d(x, w, b, { stride = 2, padding = 1 })
    y:backward(g)
  end, 21)
  local gf = flops / t / 1e9
  print(('Conv2d(64->128, k4, s2, p1) on [64 x 64 x 14 x 14] fwd+bwd: %.2f ms, %.1f GFLOP/s = %.2f of the ceiling (target >= 0.5)')
    :format(t * 1e3, gf, gf / ceiling))
else
  print('Conv2d: not built yet')
end

-- ConvTranspose2d(256 -> 128, k4, s2, p1) on [64 x 256 x 7 x 7]: output [64 x 128 x 14 x 14];
-- forward, input gradient and weight gradient are one product of N*Cin*H*W*Cout*kh*kw MACs each.
do
  local x = ember.randn(64, 256, 7, 7):requires_grad()
  local w = (ember.randn(256, 128, 4, 4) * 0.02):requires_grad()
  local b = ember.zeros(128):requires_grad()
  local g = ember.randn(64, 128, 14, 14)
  local flops = 3 * 2 * 64 * 256 * 7 * 7 * 128 * 4 * 4
  local t = time(function()
    x.grad, w.grad, b.grad = nil, nil, nil
    ember.conv_transpose2d(x, w, b, { stride = 2, padding = 1 }):backward(g)
  end, 11)
  local gf = flops / t / 1e9
  print(('ConvTranspose2d(256->128, k4, s2, p1) on [64 x 256 x 7 x 7] fwd+bwd: %.2f ms, %.1f GFLOP/s = %.2f of the ceiling (target >= 0.5)')
    :format(t * 1e3, gf, gf / ceiling))
end

-- A fused elementwise chain: one Adam step on 8M parameters reads p, g, m, v and writes
-- p, m, v (28 bytes per parameter) in one C loop; the machine's bandwidth is a copy of
-- the same size (8 bytes per element: one read, one write), alternating the two.
do
  local n = 8 * 1024 * 1024
  local p = ember.randn(n):requires_grad()
  p.grad = ember.randn(n) * 1e-3
  local opt = ember.optim.Adam({ p }, { lr = 1e-3 })
  opt:step() -- the moments exist from here on
  local src, dst = ember.randn(n), ember.zeros(n)
  local ta, tc = {}, {}
  for r = 1, 7 do
    ta[r] = time(function() opt:step() end, 3)
    tc[r] = time(function() dst:copy_(src) end, 3)
  end
  local adam_bw, copy_bw = 28 * n / median(ta), 8 * n / median(tc)
  print(('fused Adam update on 8M parameters: %.1f GB/s against a copy\'s %.1f GB/s = %.2f of the memory bandwidth (target >= 0.5)')
    :format(adam_bw / 1e9, copy_bw / 1e9, adam_bw / copy_bw))
end

-- Masked conv (PixelCNN's mask B 3x3, 64 -> 64 on [32 x 64 x 28 x 28]) fwd+bwd:
-- the kept-taps op against the alternative, a weight * mask multiply before a
-- full conv, alternating the two sides; the ratio is masked / multiplied.
do
  local x = ember.randn(32, 64, 28, 28):requires_grad()
  local w = (ember.randn(64, 64, 3, 3) * 0.02):requires_grad()
  local b = ember.zeros(64):requires_grad()
  local g = ember.randn(32, 64, 28, 28)
  local keep = ember.conv_mask(64, 64, 3, { mask = 'B' })
  local function masked()
    x.grad, w.grad, b.grad = nil, nil, nil
    ember.conv2d(x, w, b, { padding = 1, mask = 'B' }):backward(g)
  end
  local function multiplied()
    x.grad, w.grad, b.grad = nil, nil, nil
    ember.conv2d(x, w * keep, b, { padding = 1 }):backward(g)
  end
  local tm, tp = {}, {}
  for r = 1, 5 do tm[r] = time(masked, 3); tp[r] = time(multiplied, 3) end
  local a, c = median(tm), median(tp)
  print(('MaskedConv2d(64->64, k3, mask B) on [32 x 64 x 28 x 28] fwd+bwd: %.1f ms kept taps, %.1f ms weight * mask + full conv: %.2f of it (5/9 of the taps kept)')
    :format(a * 1e3, c * 1e3, a / c))
end
