-- bench_ops.lua — the cost of calling a small op from Lua: add of two
-- 16-element tensors, in microseconds per call (median of many batches).
local ember = require 'ember'
local clock = os.clock

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local a, b = ember.randn(16), ember.randn(16)
local batch = 20000
local samples = {}
for _ = 1, 25 do
  local t0 = clock()
  for _ = 1, batch do
    local c = a + b
  end
  samples[#samples + 1] = (clock() - t0) / batch * 1e6
end
print(('small op from Lua: add of two 16-element tensors: %.3f us per call (median of %d x %d; target <= 1 us)')
  :format(median(samples), #samples, batch))
