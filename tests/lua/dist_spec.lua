-- dist_spec.lua — ember.dist in one process (no mpirun: rank 0 of 1, no MPI calls):
-- the API and its bad-argument messages, the random draws of a shard (the rows one
-- process would draw for them), and the DataLoader's shard option. The multi-rank
-- behaviour is tests/dist/run_dist_test.sh's (under mpirun).
local ember = require 'ember'
local dist = ember.dist
local data = ember.data

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, 'expected an error')
  return tostring(e)
end

describe('ember.dist without a launcher', function()
  it('is rank 0 of 1, and the collectives are identities', function()
    assert.is_false(dist.launched())
    assert.are.same({0, 1}, {dist.init()})
    assert.is_true(dist.is_leader())
    local t = ember.tensor{1, 2, 3}
    assert.are.same({1, 2, 3}, dist.all_reduce_(t, {op = 'mean'}):totable())
    assert.are.same({1, 2, 3}, dist.broadcast_(t):totable())
    assert.are.same({{a = 1}}, dist.gather({a = 1}))
    assert.are.equal('x', dist.broadcast('x'))
    dist.barrier()
    assert.are.same({loss = 2}, dist.average_values({loss = 2}))
    assert.is_false(dist.is_data_parallel())
  end)

  it('shard gives the whole batch to the only rank', function()
    local x, y = ember.randn(4, 3), ember.tensor{1, 2, 3, 4}
    local a, b = dist.shard(x, y)
    assert.are.equal(x, a)
    assert.are.equal(y, b)
    local t = dist.shard({x = x, label = 'keep'})
    assert.are.equal(x, t.x)
    assert.are.equal('keep', t.label)
    assert.are.same({0, 4}, {dist.shard_rows(4)})
  end)

  it('refuses bad arguments, naming the function', function()
    assert.truthy(err_of(dist.all_reduce_, 3):find("all_reduce_: bad argument #1 'tensor' (expected tensor, got number)", 1, true))
    assert.truthy(err_of(dist.all_reduce_, ember.ones(2), 'sum'):find("all_reduce_: bad argument #2 'opts' (expected a table like {op = 'mean'}, got string)", 1, true))
    assert.truthy(err_of(dist.all_reduce_, ember.ones(2), {op = 'avg'}):find("all_reduce_: bad op 'avg' (expected 'sum', 'mean', 'max' or 'min')", 1, true))
    assert.truthy(err_of(dist.broadcast_, {}):find("broadcast_: bad argument #1 'tensor' (expected tensor, got table)", 1, true))
    assert.truthy(err_of(dist.broadcast_, ember.ones(2), 3):find('broadcast_: root 3 is not a rank of this job (0..0)', 1, true))
    assert.truthy(err_of(dist.all_reduce_, ember.ones(2, 3):t()):find('all_reduce_: bad argument #1 (expected a contiguous tensor', 1, true))
    assert.truthy(err_of(dist.shard, ember.ones(3), ember.ones(4)):find('shard: batch field 2 has 4 rows, another has 3', 1, true))
    assert.truthy(err_of(dist.shard, ember.ones(3), 5):find('shard: bad argument #2 (expected a tensor, got number)', 1, true))
    assert.truthy(err_of(dist.shard, {a = 1}):find('shard: bad argument #1 (expected tensors or a table holding them, got table)', 1, true))
    assert.truthy(err_of(dist.shard, ember.tensor(3)):find('shard: batch field 1 is a scalar, not rows', 1, true))
    assert.truthy(err_of(dist.data_parallel, 'yes'):find('data_parallel: bad argument #1 (expected a boolean, got string)', 1, true))
    assert.truthy(err_of(dist.data_parallel, {bucket_mb = 0}):find('data_parallel: bucket_mb must be a number > 0, got 0', 1, true))
    assert.truthy(err_of(dist.broadcast_module_, 5):find('broadcast_module_: bad argument #1 (expected a module, got number)', 1, true))
    assert.truthy(err_of(dist.gather, function() end):find('gather: cannot write a function', 1, true))
    assert.truthy(err_of(data.DataLoader, data.TensorDataset(ember.ones(4, 2)), {shard = 'yes'}):find('DataLoader: shard must be a boolean, got string', 1, true))
  end)
end)

describe('the differentiable all-reduce and sync BatchNorm in one process', function()
  it('all_reduce is the identity on one rank, a new tensor, and differentiable twice', function()
    local x = ember.randn(3, 2):requires_grad()
    local y = ember._dist.all_reduce(x)
    assert.are_not.equal(x, y)
    assert.are.same(x:detach():totable(), y:detach():totable())
    local ok, msg = ember.gradcheck(function(a) return ember._dist.all_reduce(a) * a end, { x })
    assert(ok, msg)
    ok, msg = ember.gradgradcheck(function(a) return ember._dist.all_reduce(a * a) end, { x })
    assert(ok, msg)
    assert.truthy(err_of(ember._dist.all_reduce, 3):find('all_reduce: bad argument #1', 1, true))
  end)

  it('BatchNorm sync = true is the ordinary one without data-parallel training', function()
    local nn = ember.nn
    ember.manual_seed(4)
    local a, b = nn.BatchNorm1d(5), nn.BatchNorm1d(5, { sync = true })
    local x = ember.randn(8, 5)
    assert.are.same(a(x):totable(), b(x):totable())
    assert.are.same(a.running_mean:totable(), b.running_mean:totable())
    assert.truthy(tostring(b):find('sync', 1, true))
    assert.truthy(err_of(nn.BatchNorm2d, 3, { sync = 'yes' }):find("sync", 1, true))
  end)
end)

describe('random draws of a shard', function()
  -- What one process draws for rows 4..6 of a global batch of 8 (the draws of rank 1
  -- of 3 with 3 + 3 + 2 rows): each random op, the shard set through ember._dist.
  local function as_rank(fn, global, first, rows)
    ember.manual_seed(9)
    ember._dist.set_rng_shard(global, first, rows)
    local ok, v = pcall(fn, rows)
    ember._dist.set_rng_shard(1, 0, 0)
    assert(ok, v)
    return v, ember.get_rng_state()
  end
  local cases = {
    randn = function(n) return ember.randn(n, 5) end,
    rand = function(n) return ember.rand(n, 3, 2) end,
    normal_ = function(n) return ember.zeros(n, 4):normal_(2, 3) end,
    uniform_ = function(n) return ember.zeros(n, 4):uniform_(-1, 1) end,
    randint = function(n) return ember.randint(0, 7, {n, 6}) end,
    bernoulli = function(n) return ember.bernoulli(ember.full({n, 5}, 0.4)) end,
    big_randn = function(n) return ember.randn(n, 2000) end, -- the parallel normal fill
  }
  for name, fn in pairs(cases) do
    it(name .. ': the rows one process draws, and the generator left where it would be', function()
      ember.manual_seed(9)
      local whole = fn(8)
      local after_whole = ember.get_rng_state()
      local part, after_part = as_rank(fn, 8, 3, 3)
      assert.are.same(whole:narrow(1, 4, 3):totable(), part:totable())
      assert.are.same(after_whole, after_part)
    end)
  end

  it('tensors of another first dim are drawn whole', function()
    ember.manual_seed(9)
    local whole = ember.randn(7, 2)
    local part = as_rank(function() return ember.randn(7, 2) end, 8, 3, 3)
    assert.are.same(whole:totable(), part:totable())
  end)

  it('refuses a shard outside its batch', function()
    assert.truthy(err_of(ember._dist.set_rng_shard, 8, 6, 3):find('rng shard: rows 7..9 are not within a batch of 8', 1, true))
  end)
end)
