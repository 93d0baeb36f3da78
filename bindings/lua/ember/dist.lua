-- ember.dist — data-parallel training over MPI (Open MPI), as PyTorch's
-- DistributedDataParallel does it: every rank holds the whole model, takes its
-- shard of each global batch, and the gradients are averaged before each
-- optimizer step, so every rank applies the same update.
--
--   local dist = ember.dist
--   dist.init()                       -- rank 0 of 1 without mpirun: everything still works
--   dist.data_parallel()              -- optimizers average gradients from now on
--   dist.broadcast_module_(net)       -- everyone starts from rank 0's weights
--   for batch in loader:iter() do
--     local x, y = dist.shard(x, y)   -- this rank's rows of the global batch
--     ...; loss:backward(); opt:step() -- opt:step() averages the gradients first
--   end
--
-- `ember run recipe.lua --nproc N` (or `mpirun -n N ember run recipe.lua`) does all
-- of this for a recipe, which needs no change. Ranks are numbered from 0 (rank 0,
-- the leader, writes files), as in MPI and PyTorch.
local ember = require 'ember'
local files = require 'ember.files'
local C = ember._dist

local dist = {}

local st = {
  initialized = false, rank = 0, size = 1, mpi = false,
  data_parallel = false,
  share = nil,        -- this rank's fraction of the current global batch (nil: 1 / size)
  bucket_mb = 25,     -- gradient bucket size (PyTorch DDP's default)
  overlap = true,     -- reduce buckets while backward runs
}
-- optimizer parameter list -> its bucket group in C (false: not watched)
local groups = setmetatable({}, { __mode = 'k' })

local function typename(v)
  if ember.is_tensor(v) then return 'tensor' end
  return type(v)
end

local function check_tensor(fname, v, what)
  if not ember.is_tensor(v) then
    error(('%s: bad argument #1 \'%s\' (expected tensor, got %s)'):format(fname, what, typename(v)), 3)
  end
end

--- dist.launched() -> whether an MPI launcher (mpirun, srun) started this process.
function dist.launched()
  return os.getenv('OMPI_COMM_WORLD_SIZE') ~= nil or os.getenv('PMIX_RANK') ~= nil
    or os.getenv('PMI_RANK') ~= nil
end

--- dist.init() -> rank, world size. Starts MPI when a launcher started this
--- process; otherwise the world is this process alone (rank 0 of 1). Idempotent.
function dist.init()
  if not st.initialized then
    st.rank, st.size, st.mpi = C.init()
    st.initialized = true
  end
  return st.rank, st.size
end

--- dist.rank() -> this process's rank, 0 .. world_size() - 1.
function dist.rank() dist.init() return st.rank end
--- dist.world_size() -> the number of ranks.
function dist.world_size() dist.init() return st.size end
--- dist.is_leader() -> whether this is rank 0 (the one that writes files).
function dist.is_leader() return dist.rank() == 0 end

--- dist.barrier(): waits until every rank gets here.
function dist.barrier() dist.init() C.barrier() end

--- dist.broadcast_(t [, root = 0]) -> t, now root's values on every rank (in place).
function dist.broadcast_(t, root)
  check_tensor('broadcast_', t, 'tensor')
  dist.init()
  return C.broadcast_(t, root or 0)
end

--- dist.all_reduce_(t [, {op = 'sum'|'mean'|'max'|'min'}]) -> t, reduced over the ranks in place.
function dist.all_reduce_(t, opts)
  check_tensor('all_reduce_', t, 'tensor')
  if opts ~= nil and type(opts) ~= 'table' then
    error(("all_reduce_: bad argument #2 'opts' (expected a table like {op = 'mean'}, got %s)"):format(typename(opts)), 2)
  end
  dist.init()
  return C.all_reduce_(t, opts and opts.op or 'sum')
end

local function decode(text, fname)
  local chunk, err = load(text, 'value', 't', {})
  if not chunk then error(fname .. ': ' .. tostring(err), 3) end
  return chunk()
end

--- dist.gather(value) -> {value of rank 0, value of rank 1, ...} on every rank.
--- value: numbers, strings, booleans and tables of them (small things: metrics).
function dist.gather(value)
  dist.init()
  local ok, text = pcall(files.lua_text, value)
  if not ok then error('gather: ' .. tostring(text) .. ' (numbers, strings, booleans and tables of them)', 2) end
  local out = {}
  for i, s in ipairs(C.all_gather_strings(text)) do out[i] = decode(s, 'gather') end
  return out
end

--- dist.broadcast(value [, root = 0]) -> root's value on every rank (as gather's values).
function dist.broadcast(value, root)
  dist.init()
  local text = ''
  if dist.rank() == (root or 0) then
    local ok, t = pcall(files.lua_text, value)
    if not ok then error('broadcast: ' .. tostring(t), 2) end
    text = t
  end
  return decode(C.broadcast_string(text, root or 0), 'broadcast')
end

--- dist.broadcast_module_(m [, root = 0]) -> m with root's parameters and buffers.
function dist.broadcast_module_(m, root)
  if type(m) ~= 'table' or type(m.parameters) ~= 'function' then
    error(('broadcast_module_: bad argument #1 (expected a module, got %s)'):format(typename(m)), 2)
  end
  dist.init()
  if st.size == 1 then return m end
  ember.no_grad(function()
    for _, p in ipairs(m:parameters()) do C.broadcast_(p, root or 0) end
    for _, b in ipairs(m.buffers and m:buffers() or {}) do C.broadcast_(b, root or 0) end
  end)
  return m
end

--- dist.data_parallel([on = true] [, {bucket_mb = 25}]): from now on every optimizer's
--- step() first averages the gradients of its parameters over the ranks (weighted by
--- each rank's share of the global batch, see shard).
function dist.data_parallel(on, opts)
  if type(on) == 'table' then on, opts = true, on end
  if on == nil then on = true end
  if type(on) ~= 'boolean' then
    error(('data_parallel: bad argument #1 (expected a boolean, got %s)'):format(typename(on)), 2)
  end
  if opts and opts.bucket_mb ~= nil then
    if type(opts.bucket_mb) ~= 'number' or not (opts.bucket_mb > 0) then
      error(('data_parallel: bucket_mb must be a number > 0, got %s'):format(tostring(opts.bucket_mb)), 2)
    end
    st.bucket_mb = opts.bucket_mb
  end
  if opts and opts.overlap ~= nil then
    if type(opts.overlap) ~= 'boolean' then
      error(('data_parallel: overlap must be a boolean, got %s'):format(typename(opts.overlap)), 2)
    end
    st.overlap = opts.overlap
  end
  dist.init()
  st.data_parallel = on
  C.set_share(1 / st.size)
  C.set_overlap(on and st.overlap)
end

--- dist.is_data_parallel() -> whether optimizers average gradients (and more than one rank runs).
function dist.is_data_parallel() return st.data_parallel and st.size > 1 end

-- This rank's rows of n: near-equal shards, the first n % size ranks one row more.
local function shard_range(n, rank, size)
  local base, extra = n // size, n % size
  local first = rank * base + math.min(rank, extra)
  return first, base + (rank < extra and 1 or 0)
end

--- dist.shard_rows(n) -> first (0-based), count: this rank's rows of a global batch of n.
function dist.shard_rows(n)
  dist.init()
  return shard_range(n, st.rank, st.size)
end

--- dist.shard(x [, y, ...]) -> this rank's rows of each tensor of a global batch;
--- dist.shard(batch_table) -> a copy of the table with each tensor field (list or named,
--- e.g. {x = ..., z = ...}) cut to this rank's rows. All the tensors must share their
--- first dim (the batch). The rows are split into near-equal shards; the rank's share
--- weighs its gradients in the average, so a mean loss gives the gradient of the global
--- batch's mean exactly. Random draws of the rank's rows during the step are the ones one
--- process would make for them (see em_rng_set_shard). A batch of fewer rows than ranks
--- is an error.
function dist.shard(...)
  dist.init()
  local args = table.pack(...)
  local as_table = args.n == 1 and type(args[1]) == 'table' and not ember.is_tensor(args[1])
  local fields = as_table and args[1] or args
  local n
  for k, t in pairs(fields) do
    if ember.is_tensor(t) then
      if t:dim() == 0 then error(('shard: batch field %s is a scalar, not rows'):format(tostring(k)), 2) end
      n = n or t:size(1)
      if t:size(1) ~= n then
        error(('shard: batch field %s has %d rows, another has %d: the tensors of a batch must share their first dim'):format(
          tostring(k), t:size(1), n), 2)
      end
    elseif not as_table and k ~= 'n' then
      error(('shard: bad argument #%s (expected a tensor, got %s)'):format(tostring(k), typename(t)), 2)
    end
  end
  if n == nil then
    error(('shard: bad argument #1 (expected tensors or a table holding them, got %s)'):format(typename(args[1])), 2)
  end
  local first, count = 0, n
  if st.size > 1 then
    if n < st.size then
      error(('shard: a batch of %d rows cannot be split over %d ranks (each needs at least one row)'):format(
        n, st.size), 2)
    end
    first, count = shard_range(n, st.rank, st.size)
    st.share = count / n
    C.set_share(st.share)
    C.set_rng_shard(n, first, count)
  else
    st.share = nil
  end
  local out = {}
  for k, t in pairs(fields) do
    if ember.is_tensor(t) then out[k] = count == n and t or t:narrow(1, first + 1, count)
    else out[k] = t end
  end
  if as_table then return out end
  return table.unpack(out, 1, args.n)
end

--- dist.end_shard(): the step is over; random draws are whole again.
function dist.end_shard()
  if st.initialized then C.set_rng_shard(1, 0, 0) end
end

--- dist.share() -> this rank's weight in gradient and metric averages (its fraction
--- of the current global batch; 1 / world_size before any shard).
function dist.share() return st.share or 1 / dist.world_size() end

--- dist.average_gradients_(params): every parameter's .grad becomes the weighted mean
--- over the ranks (one all-reduce per bucket of flattened gradients). Parameters
--- without a gradient are skipped, the same on every rank. Called by opt:step() in
--- data-parallel training; from its second call on a list's buckets are reduced
--- during backward itself (overlap, unless data_parallel{overlap = false}), and then
--- there is nothing left to do here.
function dist.average_gradients_(params)
  dist.init()
  if st.size == 1 then return end
  local id = groups[params]
  if id == nil then
    id = st.overlap and C.watch_(params, math.floor(st.bucket_mb * 1024 * 1024)) or false
    groups[params] = id
  end
  if id and C.take_averaged(id) then return end
  local grads = {}
  for _, p in ipairs(params) do
    local g = p.grad
    if g ~= nil then
      if not g:is_contiguous() then g = g:contiguous(); p.grad = g end
      grads[#grads + 1] = g
    end
  end
  C.all_reduce_buckets_(grads, dist.share(), math.floor(st.bucket_mb * 1024 * 1024))
end

--- dist.average_values(values) -> {name = mean over the ranks} of a table of numbers,
--- each rank weighted by its share of the batch (the metrics of a step).
function dist.average_values(values)
  dist.init()
  if st.size == 1 then return values end
  local keys, weighted = {}, {}
  for k in pairs(values) do keys[#keys + 1] = k end
  table.sort(keys)
  if #keys == 0 then return {} end
  local share = dist.share()
  for i, k in ipairs(keys) do weighted[i] = values[k] * share end
  local sums = C.all_reduce_(ember.tensor(weighted), 'sum'):totable()
  local out = {}
  for i, k in ipairs(keys) do out[k] = sums[i] end
  return out
end

--- dist.defer_interrupts(): from now on a Ctrl-C or SIGTERM on any rank only flags it
--- (under the ember program), and poll_interrupt stops every rank at the same point.
function dist.defer_interrupts()
  local ok, host = pcall(require, 'ember.host')
  if ok and type(host) == 'table' then
    st.host = host
    host.defer_interrupts(true)
  end
end

--- dist.poll_interrupt(): raises "interrupted" on every rank when any of them got a
--- Ctrl-C or SIGTERM since the last poll (one tiny all-reduce); else returns.
function dist.poll_interrupt()
  if not st.host then return end
  local t = ember.tensor{st.host.take_interrupt() and 1 or 0}
  if st.size > 1 then C.all_reduce_(t, 'max') end
  if t[1] > 0 then error('interrupted', 0) end
end

--- dist.abort([code = 1]): ends every rank of the job now (after a fatal error on one).
function dist.abort(code) if st.initialized then C.abort(code or 1) end end

--- dist.finalize(): ends MPI (at exit; nothing can be communicated afterwards).
function dist.finalize()
  if st.initialized then C.finalize() end
end

return dist
