-- bench_dist.lua — data-parallel measurements, run under mpirun by scripts/bench_dist.sh
-- (or alone: one rank). Modes:
--   memory            one rank's memory bandwidth: copies of a 64 MB tensor (GB/s)
--   allreduce MB      the all-reduce of an MB gradient bucket (ember.dist's bucketed
--                     path): median seconds and the bus bandwidth 2 (n-1)/n bytes / s
--   b3 STEPS [off]    the B3 CNN (DESIGN.md), global batch 128 on synthetic images,
--                     data-parallel over the ranks: median ms per step, and (with off:
--                     buckets reduced at opt:step(), not during backward) the share of the
--                     step spent averaging gradients (communication)
-- Prints one line on rank 0: `MODE key value ...`.
local ember = require 'ember'
local dist = ember.dist
local nn, optim, losses = ember.nn, ember.optim, ember.losses
local rank, world = dist.init()
local mode = arg[1]

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) // 2] or (xs[n // 2] + xs[n // 2 + 1]) / 2
end

local function say(...) if rank == 0 then print(string.format(...)) end end

if mode == 'memory' then
  local n = 16 * 1024 * 1024 -- 64 MB of floats
  local a, b = ember.rand(n), ember.zeros(n)
  b:copy_(a)
  local t = {}
  for r = 1, 9 do
    local t0 = ember.clock()
    b:copy_(a)
    t[r] = ember.clock() - t0
  end
  say('memory copy_gbps %.2f', 2 * n * 4 / median(t) / 1e9) -- read + write
elseif mode == 'allreduce' then
  local mb = tonumber(arg[2] or 10)
  local n = math.floor(mb * 1024 * 1024 / 4)
  local g = ember.rand(n)
  local t = {}
  for r = 0, 15 do
    dist.barrier()
    local t0 = ember.clock()
    ember._dist.all_reduce_buckets_({ g }, 1 / world, n * 4)
    if r > 0 then t[r] = ember.clock() - t0 end
  end
  local s = median(t)
  say('allreduce ranks %d mb %g seconds %.6f bus_gbps %.2f', world, mb, s,
      2 * (world - 1) / world * n * 4 / s / 1e9)
elseif mode == 'b3' then
  local steps = tonumber(arg[2] or 100)
  ember.manual_seed(1)
  local net = nn.Sequential(
    nn.Conv2d(1, 32, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
  local overlap = arg[3] ~= 'off'
  dist.data_parallel(true, { overlap = overlap })
  dist.broadcast_module_(net)
  local opt = optim.Adam(net:parameters(), { lr = 1e-3 })
  local x = ember.rand(128, 1, 28, 28)
  local y = ember.randint(1, 11, { 128 })
  -- time spent averaging gradients, inside opt:step()
  local comm, average = 0, dist.average_gradients_
  dist.average_gradients_ = function(params)
    local t0 = ember.clock()
    average(params)
    comm = comm + ember.clock() - t0
  end
  local per_step, shares = {}, {}
  for s = 1, steps + 5 do
    local t0 = ember.clock()
    comm = 0
    local xs, ys = dist.shard(x, y)
    opt:zero_grad()
    losses.cross_entropy(net(xs), ys):backward()
    opt:step()
    dist.end_shard()
    local dt = ember.clock() - t0
    if s > 5 then per_step[#per_step + 1], shares[#shares + 1] = dt, comm / dt end
  end
  local ms = median(per_step) * 1000
  -- every rank's view, reduced: the slowest rank sets the pace
  local worst = ember.tensor{ ms }
  dist.all_reduce_(worst, { op = 'max' })
  say('b3 ranks %d threads %d ms_per_step %.2f %s epoch_s %.1f', world, ember.get_num_threads(),
      worst[1], overlap and 'overlap on' or string.format('comm_share %.3f', median(shares)),
      worst[1] * 469 / 1000)
else
  error('bench_dist.lua: mode must be memory, allreduce or b3', 0)
end
dist.finalize()
