-- bench_data.lua — the data path: loading all of Fashion-MNIST (60000 + 10000
-- images from the gzip IDX files) and one shuffled epoch of the training set
-- at batch 128 through ember.data.DataLoader (batches gathered in C).
-- Prints medians over several runs, wall-clock seconds.
local ember = require 'ember'
local data = ember.data
local clock = ember._clock

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local loads, train = {}, nil
for _ = 1, 3 do
  local t0 = clock()
  train = data.fashion_mnist { split = 'train' }
  local test = data.fashion_mnist { split = 'test' }
  loads[#loads + 1] = clock() - t0
  assert(#train == 60000 and #test == 10000)
  test = nil
  collectgarbage()
end
print(('data: load Fashion-MNIST train+test (70000 x 784, gzip IDX): %.3f s (median of %d; target < 1 s)')
  :format(median(loads), #loads))

local loader = data.DataLoader(train, { batch_size = 128, shuffle = true })
local epochs, batches = {}, 0
for e = 1, 7 do
  local t0 = clock()
  local n = 0
  for x, y in loader:iter() do n = n + x:size(1) end
  local dt = clock() - t0
  if e > 1 then epochs[#epochs + 1] = dt end -- the first epoch warms the buffer cache
  assert(n == 60000)
  batches = #loader
end
print(('data: one shuffled epoch of Fashion-MNIST train, batch 128 (%d batches): %.4f s (median of %d; target < 0.2 s)')
  :format(batches, median(epochs), #epochs))
