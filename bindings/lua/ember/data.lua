-- ember.data — datasets, loaders, transforms and synthetic 2-D sets.
--
--   local data = require 'ember.data'      (or ember.data)
--   local train = data.fashion_mnist{split = 'train'}     -- x [60000 x 1 x 28 x 28] in [0,1], y [60000] in 1..10
--   local loader = data.DataLoader(train, {batch_size = 128, shuffle = true})
--   for x, y in loader:iter() do ... end                  -- x [128 x 1 x 28 x 28], y [128]
--
-- Datasets: ds:size() (also #ds), ds:get(i) -> x, y (1-based i), ds[i] -> {x, y}.
-- Tensor-backed datasets (TensorDataset, the IDX loaders, split's subsets)
-- are batched in C: each batch is one row gather over a slice of the epoch's
-- permutation, with no per-row or per-pixel Lua work. Any other table with
-- get(self, i) and size(self) (or __len) works too, collated in Lua.
-- Shuffling draws from the shared generator (ember.manual_seed makes it
-- reproducible); a loader's seed= option gives it an order of its own.
local ember = require 'ember'
local C = ember._data

local data = {}

-- ---- argument checks ----------------------------------------------------

local function fail(fname, msg, level)
  error(fname .. ': ' .. msg, (level or 2) + 1)
end

local function typename(v)
  if ember.is_tensor(v) then return 'tensor' end
  return type(v)
end

local function check_opts(fname, opts, argn)
  if opts == nil then return {} end
  if type(opts) ~= 'table' then
    fail(fname, ('bad argument #%d (expected an options table, got %s)'):format(argn, typename(opts)), 3)
  end
  return opts
end

local function check_tensor(fname, v, what)
  if not ember.is_tensor(v) then
    fail(fname, ('%s must be a tensor, got %s'):format(what, typename(v)), 3)
  end
  return v
end

local function check_int(fname, v, what, min)
  if math.type(v) ~= 'integer' and not (type(v) == 'number' and v == math.floor(v) and v == v) then
    fail(fname, ('%s must be an integer, got %s'):format(what, type(v) == 'number' and tostring(v) or type(v)), 3)
  end
  v = math.tointeger(v)
  if min and v < min then fail(fname, ('%s must be >= %d, got %d'):format(what, min, v), 3) end
  return v
end

local function check_number(fname, v, what, min, max)
  if type(v) ~= 'number' or v ~= v then
    fail(fname, ('%s must be a number, got %s'):format(what, type(v) == 'number' and 'nan' or typename(v)), 3)
  end
  if (min and v < min) or (max and v > max) then
    fail(fname, ('%s must be in [%s, %s], got %s'):format(what, min or '-inf', max or 'inf', v), 3)
  end
  return v
end

-- Calls a C function; its error is raised again `level` frames up (level 2 =
-- the caller of the function calling ccall), without a position inside this file.
local function ccall(level, f, ...)
  local ok, a, b = pcall(f, ...)
  if not ok then error((tostring(a):gsub('^[^\n]-:%d+: ', '')), level + 1) end
  return a, b
end

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

-- Runs fn with the shared generator seeded by `seed` (restored afterwards),
-- or as it is when seed is nil.
local function with_seed(seed, fn)
  if seed == nil then return fn() end
  local saved = ember.get_rng_state()
  ember.manual_seed(seed)
  local ok, a, b, c = pcall(fn)
  ember.set_rng_state(saved)
  if not ok then error(a, 0) end
  return a, b, c
end

-- ---- datasets -----------------------------------------------------------

-- Makes a dataset class: ds:size(), #ds, ds[i] -> {x, y}, methods from `methods`.
local function dataset_class(name, methods)
  local class = { __name = name }
  for k, v in pairs(methods) do class[k] = v end
  class.__index = function(self, k)
    if math.type(k) == 'integer' then return { self:get(k) } end
    return class[k]
  end
  class.__len = function(self) return self:size() end
  class.__tostring = function(self)
    return ('%s(%d samples)'):format(name, self:size())
  end
  return class
end

local function check_index(fname, i, n)
  if math.type(i) ~= 'integer' then
    fail(fname, ('index must be an integer, got %s'):format(type(i) == 'number' and tostring(i) or type(i)), 3)
  end
  if i < 1 or i > n then fail(fname, ('index %d out of range (expected 1..%d)'):format(i, n), 3) end
end

local TensorDataset = dataset_class('TensorDataset', {
  size = function(self) return self.n end,
  --- ds:get(i) -> x[i], y[i] (views; numbers for 1-D tensors)
  get = function(self, i)
    check_index('TensorDataset:get', i, self.n)
    if self.y == nil then return self.x[i] end
    return self.x[i], self.y[i]
  end,
  _source = function(self) return self.x, self.y, nil end,
})

--- data.TensorDataset(x [, y]): samples are the rows of x (and of y); ds.x, ds.y
-- hold them (a contiguous copy when the given tensor was not contiguous).
function data.TensorDataset(x, y)
  check_tensor('TensorDataset', x, 'x')
  if x:dim() < 1 then fail('TensorDataset', 'x must have at least 1 dim (samples first), got a 0-dim tensor') end
  local n = x:size(1)
  if y ~= nil then
    check_tensor('TensorDataset', y, 'y')
    if y:dim() < 1 or y:size(1) ~= n then
      fail('TensorDataset', ('x %s and y %s must have the same number of rows (dim 1)'):format(shape_str(x), shape_str(y)))
    end
  end
  -- batches gather rows of contiguous tensors (a no-op for the usual case)
  return setmetatable({ x = x:contiguous(), y = y and y:contiguous(), n = n }, TensorDataset)
end

local Subset = dataset_class('Subset', {
  size = function(self) return self.n end,
  get = function(self, i)
    check_index('Subset:get', i, self.n)
    return self.dataset:get(math.tointeger(self.index[i]) + 1)
  end,
  _source = function(self)
    if not self.dataset._source then return nil end
    local x, y, base = self.dataset:_source()
    if base == nil then return x, y, self.index end
    if not self._rows then self._rows = C.gather_rows(base, self.index, 0, self.n) end
    return x, y, self._rows
  end,
})

--- data.Subset(ds, indices): the samples of ds at indices (a 1-based tensor or table).
function data.Subset(ds, indices)
  local n_ds = data.size(ds, 'Subset')
  local idx
  if ember.is_tensor(indices) then idx = indices:contiguous():view(-1) - 1
  elseif type(indices) == 'table' then idx = ember.tensor(#indices > 0 and indices or { 1 }) - 1
    if #indices == 0 then idx = idx:narrow(1, 1, 0) end
  else fail('Subset', ('indices must be a tensor or a table, got %s'):format(typename(indices))) end
  if idx:numel() > 0 then
    local lo, hi = idx:min():item(), idx:max():item()
    if lo < 0 or hi > n_ds - 1 then
      fail('Subset', ('indices must lie in 1..%d, got %g..%g'):format(n_ds, lo + 1, hi + 1))
    end
  end
  return setmetatable({ dataset = ds, index = idx, n = idx:numel() }, Subset)
end

--- data.size(ds) -> number of samples (ds:size() or #ds).
function data.size(ds, fname)
  fname = fname or 'size'
  if type(ds) ~= 'table' then fail(fname, ('expected a dataset, got %s'):format(typename(ds)), 2) end
  local n
  if type(ds.size) == 'function' then n = ds:size()
  else
    local mt = getmetatable(ds)
    if mt and mt.__len then n = #ds end
  end
  if math.type(n) ~= 'integer' then
    fail(fname, 'expected a dataset (a table with size() or __len, and get(i))', 2)
  end
  return n
end

--- data.split(ds, sizes [, seed]) -> subset1, subset2, ...: a random split.
-- sizes: fractions summing to 1 ({0.9, 0.1}) or counts summing to #ds.
function data.split(ds, sizes, seed)
  local n = data.size(ds, 'split')
  if type(sizes) ~= 'table' or #sizes == 0 then
    fail('split', ('sizes must be a list of fractions or counts, got %s'):format(typename(sizes)))
  end
  if seed ~= nil then check_int('split', seed, 'seed') end
  local counts, total = {}, 0
  local fractions = false
  for i, s in ipairs(sizes) do
    check_number('split', s, ('sizes[%d]'):format(i), 0)
    if math.type(s) ~= 'integer' then fractions = true end
    total = total + s
  end
  if fractions then
    if math.abs(total - 1) > 1e-6 then
      fail('split', ('fractions must sum to 1, got %g'):format(total))
    end
    local used = 0
    for i, s in ipairs(sizes) do counts[i] = math.floor(s * n); used = used + counts[i] end
    local k = 1
    while used < n do counts[k] = counts[k] + 1; used = used + 1; k = k % #counts + 1 end
  else
    if total ~= n then fail('split', ('counts must sum to the dataset size %d, got %d'):format(n, total)) end
    for i, s in ipairs(sizes) do counts[i] = s end
  end
  local perm = with_seed(seed, function() return C.randperm(n) end)
  local parts, start = {}, 0
  for i, c in ipairs(counts) do
    local idx = perm:narrow(1, start + 1, c):contiguous()
    parts[i] = setmetatable({ dataset = ds, index = idx, n = c }, Subset)
    start = start + c
  end
  return table.unpack(parts)
end

-- ---- IDX files ------------------------------------------------------------

--- data.read_idx(path [, {raw=false}]) -> tensor shaped like the file, in [0,1] (raw: 0..255).
function data.read_idx(path, opts)
  if type(path) ~= 'string' then fail('read_idx', ('path must be a string, got %s'):format(typename(path))) end
  opts = check_opts('read_idx', opts, 2)
  local ok, t = pcall(C.idx_load, path, opts.raw and 1 or 1 / 255, 0)
  if not ok then -- the core's message, named after the function the user called
    fail('read_idx', (tostring(t):gsub('^[^\n]-:%d+: ', ''):gsub('^idx_load: ', '')))
  end
  return t
end

--- data.save_idx(tensor, path): values 0..255 as an unsigned-byte IDX file (gzip for *.gz).
function data.save_idx(t, path)
  check_tensor('save_idx', t, 'argument #1')
  if type(path) ~= 'string' then fail('save_idx', ('path must be a string, got %s'):format(typename(path))) end
  ccall(2, C.idx_save, t, path)
end

-- Whether path exists (files.exists never opens anything but a regular file, so a
-- named pipe cannot block; read_idx then refuses it).
local file_exists = require('ember.files').exists

-- The IDX file `stem` in dir: stem.gz, stem, or the stem.idx3-ubyte spelling.
local function find_idx(dir, stem)
  local dotted = stem:gsub('%-idx', '.idx')
  for _, name in ipairs { stem .. '.gz', stem, dotted .. '.gz', dotted } do
    local p = dir .. '/' .. name
    if file_exists(p) then return p end
  end
  return nil
end

-- Loads images (and labels) into a TensorDataset: 3-D images become [N x 1 x H x W].
-- num_classes (when the dataset knows it): every label must be 0..num_classes-1
-- in the file (1..num_classes loaded).
-- depth: how many ember functions lie between the user's call and this one
-- (1 for data.idx, 2 through mnist_like), so errors point at the user's line.
local function idx_dataset(fname, images_path, labels_path, opts, num_classes, depth)
  local level = depth + 1
  local ok, x = pcall(C.idx_load, images_path, opts.raw and 1 or 1 / 255, 0)
  if not ok then error(fname .. ': ' .. tostring(x):gsub('^[^\n]-:%d+: ', ''), level + 1) end
  if x:dim() == 3 then x = x:view(x:size(1), 1, x:size(2), x:size(3)) end
  local y
  if labels_path then
    local okl, yl = pcall(C.idx_load, labels_path, 1, 1)
    if not okl then error(fname .. ': ' .. tostring(yl):gsub('^[^\n]-:%d+: ', ''), level + 1) end
    y = yl
    if y:dim() ~= 1 or y:size(1) ~= x:size(1) then
      fail(fname, ('%s has %s labels for the %d images of %s'):format(labels_path, shape_str(y), x:size(1), images_path), level)
    end
    if num_classes and y:numel() > 0 then
      local bad = y:gt(num_classes)
      if bad:sum():item() > 0 then
        local first = math.tointeger(bad:argmax():item())
        fail(fname, ('%s: label %d at row %d is outside the %d classes (the file must hold 0..%d): '
          .. 'a damaged or foreign label file'):format(labels_path, math.tointeger(y[first] - 1), first,
          num_classes, num_classes - 1), level)
      end
    end
  end
  if opts.binarize then
    local threshold = opts.binarize == true and 0.5 or opts.binarize
    check_number(fname, threshold, 'binarize', 0, 255)
    if opts.raw and opts.binarize == true then threshold = 127.5 end
    x = x:ge(threshold)
  end
  local ds = data.TensorDataset(x, y)
  ds.images_path, ds.labels_path = images_path, labels_path
  return ds
end

--- data.idx(images_path [, labels_path] [, opts]) -> dataset; labels 0..K-1 in the file become 1..K.
-- opts: raw (0..255 instead of [0,1]), binarize (true = 0.5 threshold, or a threshold).
function data.idx(images_path, labels_path, opts)
  if type(labels_path) == 'table' then labels_path, opts = nil, labels_path end
  if type(images_path) ~= 'string' then
    fail('idx', ('images_path must be a string, got %s'):format(typename(images_path)))
  end
  if labels_path ~= nil and type(labels_path) ~= 'string' then
    fail('idx', ('labels_path must be a string, got %s'):format(typename(labels_path)))
  end
  return idx_dataset('idx', images_path, labels_path, check_opts('idx', opts, 3), nil, 1)
end

data.FASHION_MNIST_CLASSES = { 'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
  'Shirt', 'Sneaker', 'Bag', 'Ankle boot' }
data.MNIST_CLASSES = { '0', '1', '2', '3', '4', '5', '6', '7', '8', '9' }
data.FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'

--- data.data_dirs(sub) -> the directories searched for dataset `sub`, in order:
-- $EMBER_DATA/sub, <dir of ember.so or the ember program>/data/sub (a build tree),
-- PREFIX/share/ember/data/sub for an installed ember (PREFIX/bin/ember or
-- PREFIX/lib/lua/5.4/ember.so: where `make install` puts the prepared datasets),
-- /usr/local/share/ember/data/sub, and build/data/sub of the working directory.
function data.data_dirs(sub)
  local dirs, seen = {}, {}
  local function add(d)
    if not seen[d] then dirs[#dirs + 1], seen[d] = d, true end
  end
  local env = os.getenv('EMBER_DATA')
  if env and env ~= '' then add(env .. '/' .. sub) end
  local lib = C.library_dir()
  if lib then
    add(lib .. '/data/' .. sub)
    local prefix = lib:match('^(.*)/bin$') or lib:match('^(.*)/lib/lua/5%.4$')
    if prefix then add(prefix .. '/share/ember/data/' .. sub) end
  end
  add('/usr/local/share/ember/data/' .. sub)
  add('build/data/' .. sub)
  return dirs
end

-- Loads split 'train'/'test' of an MNIST-format dataset from the first dir
-- that holds its files.
local function mnist_like(fname, sub, default_dirs, opts, hint, num_classes)
  opts = check_opts(fname, opts, 1)
  local split = opts.split or 'train'
  if split ~= 'train' and split ~= 'test' then
    fail(fname, ("split must be 'train' or 'test', got %s"):format(type(split) == 'string' and "'" .. split .. "'" or typename(split)), 3)
  end
  local prefix = split == 'train' and 'train' or 't10k'
  local dirs = {}
  if opts.dir ~= nil then
    if type(opts.dir) ~= 'string' then fail(fname, ('dir must be a string, got %s'):format(typename(opts.dir)), 3) end
    dirs = { opts.dir }
  else
    for _, d in ipairs(data.data_dirs(sub)) do dirs[#dirs + 1] = d end
    for _, d in ipairs(default_dirs) do dirs[#dirs + 1] = d end
  end
  for _, dir in ipairs(dirs) do
    local images = find_idx(dir, prefix .. '-images-idx3-ubyte')
    local labels = find_idx(dir, prefix .. '-labels-idx1-ubyte')
    if images and labels then
      local ds = idx_dataset(fname, images, labels, opts, num_classes, 2)
      ds.split, ds.dir = split, dir
      return ds
    end
  end
  fail(fname, ('no %s-images-idx3-ubyte[.gz] with its labels in %s; %s'):format(prefix, table.concat(dirs, ', '), hint), 3)
end

--- data.fashion_mnist{split='train'|'test', dir=, raw=, binarize=} -> dataset
-- x [N x 1 x 28 x 28] in [0,1], y [N] in 1..10 (data.FASHION_MNIST_CLASSES names them).
function data.fashion_mnist(opts)
  local ds = mnist_like('fashion_mnist', 'fashion-mnist', { data.FASHION_MNIST_DIR }, opts,
    'install the Debian package dataset-fashion-mnist, or pass dir= / set EMBER_DATA',
    #data.FASHION_MNIST_CLASSES)
  ds.classes, ds.name = data.FASHION_MNIST_CLASSES, 'fashion-mnist'
  return ds
end

--- data.mnist{split='train'|'test', dir=, raw=, binarize=} -> dataset (digit d has label d+1).
-- The prepared set (make data) has 8004 train / 1996 test digits; a dir= with
-- the original MNIST (or KMNIST, same file names) files works the same way.
function data.mnist(opts)
  local ds = mnist_like('mnist', 'mnist', {}, opts,
    'run `make data` (datasets/prepare.sh) to prepare it, or pass dir= / set EMBER_DATA',
    #data.MNIST_CLASSES)
  ds.classes, ds.name = data.MNIST_CLASSES, 'mnist'
  return ds
end

-- ---- the loader -----------------------------------------------------------

local DataLoader = { __name = 'DataLoader' }
DataLoader.__index = DataLoader

--- data.DataLoader(ds, {batch_size=1, shuffle=false, drop_last=false, seed=nil,
---   transform=fn(x) -> x, target_transform=fn(y) -> y, shard=shuffle})
-- In a data-parallel run (ember.dist.data_parallel), a loader with shard (by default:
-- one that shuffles, a training loader) gives each rank its rows of every global
-- batch: the same permutation on every rank, disjoint near-equal slices (the batch
-- index and count stay the global ones). A loader that does not shuffle gives every
-- rank whole batches (evaluation).
function data.DataLoader(ds, opts)
  local n = data.size(ds, 'DataLoader')
  opts = check_opts('DataLoader', opts, 2)
  local bs = opts.batch_size == nil and 1 or check_int('DataLoader', opts.batch_size, 'batch_size', 1)
  if opts.seed ~= nil then check_int('DataLoader', opts.seed, 'seed') end
  for _, k in ipairs { 'transform', 'target_transform' } do
    if opts[k] ~= nil and type(opts[k]) ~= 'function' then
      fail('DataLoader', ('%s must be a function, got %s'):format(k, typename(opts[k])))
    end
  end
  if type(ds.get) ~= 'function' and not ds._source then
    fail('DataLoader', 'the dataset must have a get(self, i) method')
  end
  if opts.shard ~= nil and type(opts.shard) ~= 'boolean' then
    fail('DataLoader', ('shard must be a boolean, got %s'):format(typename(opts.shard)))
  end
  local shard = opts.shard
  if shard == nil then shard = opts.shuffle and true or false end
  return setmetatable({
    dataset = ds, n = n, batch_size = bs, shuffle = opts.shuffle and true or false, shard = shard,
    drop_last = opts.drop_last and true or false, seed = opts.seed, epoch = 0,
    transform = opts.transform, target_transform = opts.target_transform,
  }, DataLoader)
end

--- #loader: batches per epoch.
function DataLoader:__len()
  if self.drop_last then return self.n // self.batch_size end
  return (self.n + self.batch_size - 1) // self.batch_size
end

function DataLoader:__tostring()
  return ('DataLoader(%d samples, batch_size %d, %d batches%s%s)'):format(self.n, self.batch_size,
    #self, self.shuffle and ', shuffled' or '', self.drop_last and ', drop_last' or '')
end

-- The epoch's order as 0-based dataset rows (a tensor), or nil for 0..n-1.
function DataLoader:_order()
  if not self.shuffle then return nil end
  local seed = self.seed and self.seed + self.epoch - 1 or nil
  return with_seed(seed, function() return C.randperm(self.n) end)
end

-- Stacks the samples of a generic dataset at 0-based positions order[first..last].
local function collate(ds, order, first, count)
  local xs, ys = {}, {}
  for k = 1, count do
    local i = order and math.tointeger(order[first + k]) + 1 or first + k
    local x, y = ds:get(i)
    if type(x) == 'number' then x = ember.tensor(x) end
    xs[k], ys[k] = x, y
  end
  local x = ember.stack(xs, 1)
  local y
  if ys[1] ~= nil then
    if type(ys[1]) == 'number' then y = ember.tensor(ys) else y = ember.stack(ys, 1) end
  end
  return x, y
end

--- for x, y, i in loader:iter() do ... end: one epoch (a fresh order each call when shuffling).
function DataLoader:iter()
  self.epoch = self.epoch + 1
  local order = self:_order()
  local ds, n, bs = self.dataset, self.n, self.batch_size
  local batches = #self
  local x_src, y_src, rows
  if ds._source then x_src, y_src, rows = ds:_source() end
  if x_src then
    if order and rows then rows = C.gather_rows(rows, order, 0, n)
    elseif order then rows = order
    elseif not rows then rows = ember.arange(n) end
  end
  local transform, target_transform = self.transform, self.target_transform
  local dist = self.shard and package.loaded['ember.dist']
  if dist and not dist.is_data_parallel() then dist = nil end
  local b = 0
  return function()
    b = b + 1
    if dist then
      dist.end_shard()
      dist.poll_interrupt() -- a Ctrl-C on any rank stops all of them at this batch
    end
    if b > batches then return nil end
    local first = (b - 1) * bs
    local count = math.min(bs, n - first)
    local x, y
    if x_src then
      x = C.gather_rows(x_src, rows, first, count)
      if y_src then y = C.gather_rows(y_src, rows, first, count) end
    else
      x, y = collate(ds, order, first, count)
    end
    if transform then x = transform(x) end
    if target_transform and y ~= nil then y = target_transform(y) end
    if dist then
      if y ~= nil then x, y = dist.shard(x, y) else x = dist.shard(x) end
    end
    return x, y, b
  end
end

--- data.randperm(n) -> a random permutation of 1..n (tensor), from the shared generator.
function data.randperm(n)
  n = check_int('randperm', n, 'n', 0)
  return C.randperm(n) + 1
end

-- ---- transforms -------------------------------------------------------------
-- Each transforms.X(params) returns a function on a batch tensor; compose chains them.

local T = {}
data.transforms = T

local function transform_input(fname, x)
  if not ember.is_tensor(x) then fail(fname, ('expected a batch tensor, got %s'):format(typename(x)), 3) end
  return x
end

--- transforms.compose(f1, f2, ...) -> x -> fn(...f2(f1(x)))
function T.compose(...)
  local fs = { ... }
  for i, f in ipairs(fs) do
    if type(f) ~= 'function' then fail('compose', ('argument #%d must be a function, got %s'):format(i, typename(f))) end
  end
  return function(x)
    for _, f in ipairs(fs) do x = f(x) end
    return x
  end
end

--- transforms.scale(lo, hi): [0,1] -> [lo,hi] (scale(-1, 1) for tanh GANs).
function T.scale(lo, hi)
  lo, hi = check_number('scale', lo, 'lo'), check_number('scale', hi, 'hi')
  return function(x) return transform_input('scale', x) * (hi - lo) + lo end
end

--- transforms.normalize(mean, std): (x - mean) / std.
function T.normalize(mean, std)
  mean = check_number('normalize', mean, 'mean')
  std = check_number('normalize', std, 'std')
  if std <= 0 then fail('normalize', ('std must be > 0, got %g'):format(std)) end
  return function(x) return (transform_input('normalize', x) - mean) / std end
end

--- transforms.flatten(): [N x ...] -> [N x D].
function T.flatten()
  return function(x)
    transform_input('flatten', x)
    return x:reshape(x:size(1), -1)
  end
end

--- transforms.binarize(threshold=0.5): static binarization, x >= threshold -> 1 else 0.
function T.binarize(threshold)
  threshold = threshold == nil and 0.5 or check_number('binarize', threshold, 'threshold')
  return function(x) return transform_input('binarize', x):ge(threshold) end
end

--- transforms.bernoulli(): dynamic binarization, each pixel 1 with probability x (fresh per batch).
function T.bernoulli()
  return function(x) return ember.bernoulli(transform_input('bernoulli', x)) end
end
T.dynamic_binarize = T.bernoulli

--- transforms.gaussian_noise(std [, {clamp={lo,hi}}]): x + N(0, std^2) noise.
function T.gaussian_noise(std, opts)
  std = check_number('gaussian_noise', std, 'std', 0)
  opts = check_opts('gaussian_noise', opts, 2)
  local c = opts.clamp
  if c ~= nil and (type(c) ~= 'table' or type(c[1]) ~= 'number' or type(c[2]) ~= 'number') then
    fail('gaussian_noise', ('clamp must be {lo, hi}, got %s'):format(typename(c)))
  end
  return function(x)
    transform_input('gaussian_noise', x)
    local y = x + ember.randn_like(x) * std
    if c then y = y:clamp(c[1], c[2]) end
    return y
  end
end

--- transforms.salt_and_pepper(p [, {low=0, high=1}]): each pixel, with probability p,
-- becomes low or high (half each).
function T.salt_and_pepper(p, opts)
  p = check_number('salt_and_pepper', p, 'p', 0, 1)
  opts = check_opts('salt_and_pepper', opts, 2)
  local low = opts.low == nil and 0 or check_number('salt_and_pepper', opts.low, 'low')
  local high = opts.high == nil and 1 or check_number('salt_and_pepper', opts.high, 'high')
  return function(x)
    transform_input('salt_and_pepper', x)
    local u = ember.rand_like(x)
    local salt = u:lt(p / 2)
    local pepper = u:ge(p / 2):mul(u:lt(p))
    return x:masked_fill(pepper, low):masked_fill(salt, high)
  end
end

--- transforms.hflip(p=0.5): mirror each sample left-right with probability p.
function T.hflip(p)
  p = p == nil and 0.5 or check_number('hflip', p, 'p', 0, 1)
  return function(x) return (ccall(2, C.random_hflip, transform_input('hflip', x), p)) end
end

--- data.one_hot(labels, K) -> [N x K]: labels a tensor [N] (or table) of classes 1..K.
function data.one_hot(labels, k)
  if type(labels) == 'table' then labels = ember.tensor(labels) end
  check_tensor('one_hot', labels, 'labels')
  k = check_int('one_hot', k, 'K', 1)
  if labels:dim() ~= 1 then fail('one_hot', ('labels %s must be 1-D'):format(shape_str(labels))) end
  local n = labels:size(1)
  if n > 0 then
    local lo, hi = labels:min():item(), labels:max():item()
    local fractional = labels:ne(labels:round()):sum():item()
    if lo < 1 or hi > k or fractional > 0 then
      fail('one_hot', ('labels must be integers in 1..%d, got values in %g..%g'):format(k, lo, hi))
    end
  end
  return labels:view(n, 1):eq(ember.arange(1, k + 1):view(1, k))
end

-- ---- synthetic 2-D sets -----------------------------------------------------
-- Each returns points [n x 2] and labels [n] (1-based), plus the centres [k x 2]
-- for the mixtures; draws come from the shared generator (opts.seed: a private one).

local function mixture(fname, n, centers, std)
  local k = centers:size(1)
  local modes = ember.randint(0, k, { n })
  local points = C.gather_rows(centers, modes, 0, n) + ember.randn(n, 2) * std
  return points, modes + 1, centers
end

local function synthetic_args(fname, n, opts)
  n = check_int(fname, n, 'n', 1)
  return n, check_opts(fname, opts, 2)
end

--- data.ring(n, {modes=8, radius=2, std=0.02, seed=}) -> points, mode (1..modes), centers
-- Mode k sits at angle (k-1) * 2pi / modes.
function data.ring(n, opts)
  n, opts = synthetic_args('ring', n, opts)
  local modes = check_int('ring', opts.modes or 8, 'modes', 1)
  local radius = check_number('ring', opts.radius or 2, 'radius', 0)
  local std = check_number('ring', opts.std or 0.02, 'std', 0)
  local c = {}
  for k = 0, modes - 1 do
    local a = 2 * math.pi * k / modes
    c[k + 1] = { radius * math.cos(a), radius * math.sin(a) }
  end
  return with_seed(opts.seed, function() return mixture('ring', n, ember.tensor(c), std) end)
end

--- data.grid(n, {side=5, spacing=2, std=0.02, seed=}) -> points, mode (1..side^2), centers
-- Centres on a side x side lattice centred at 0 (side 5, spacing 2: -4, -2, 0, 2, 4).
function data.grid(n, opts)
  n, opts = synthetic_args('grid', n, opts)
  local side = check_int('grid', opts.side or 5, 'side', 1)
  local spacing = check_number('grid', opts.spacing or 2, 'spacing', 0)
  local std = check_number('grid', opts.std or 0.02, 'std', 0)
  local c, mid = {}, (side - 1) / 2
  for i = 0, side - 1 do
    for j = 0, side - 1 do c[#c + 1] = { (i - mid) * spacing, (j - mid) * spacing } end
  end
  return with_seed(opts.seed, function() return mixture('grid', n, ember.tensor(c), std) end)
end

--- data.moons(n, {noise=0, seed=}) -> points, label (1 = upper moon, 2 = lower moon)
function data.moons(n, opts)
  n, opts = synthetic_args('moons', n, opts)
  local noise = check_number('moons', opts.noise or 0, 'noise', 0)
  return with_seed(opts.seed, function()
    local lower = ember.randint(0, 2, { n })
    local t = ember.rand(n) * math.pi
    local is_upper = lower:eq(0)
    local x = ember.where(is_upper, t:cos(), 1 - t:cos())
    local y = ember.where(is_upper, t:sin(), 0.5 - t:sin())
    local points = ember.stack({ x, y }, 2) + ember.randn(n, 2) * noise
    return points, lower + 1
  end)
end

--- data.circles(n, {noise=0, factor=0.5, seed=}) -> points, label (1 = outer radius 1, 2 = inner radius factor)
function data.circles(n, opts)
  n, opts = synthetic_args('circles', n, opts)
  local noise = check_number('circles', opts.noise or 0, 'noise', 0)
  local factor = check_number('circles', opts.factor or 0.5, 'factor', 0, 1)
  return with_seed(opts.seed, function()
    local inner = ember.randint(0, 2, { n })
    local t = ember.rand(n) * (2 * math.pi)
    local r = inner * (factor - 1) + 1
    local points = ember.stack({ r * t:cos(), r * t:sin() }, 2) + ember.randn(n, 2) * noise
    return points, inner + 1
  end)
end

--- data.swiss_roll(n, {noise=0, seed=}) -> points, t: the 2-D roll (t cos t, t sin t) for
-- t uniform in [1.5pi, 4.5pi]; t (a position along the roll, not a class) colours it.
function data.swiss_roll(n, opts)
  n, opts = synthetic_args('swiss_roll', n, opts)
  local noise = check_number('swiss_roll', opts.noise or 0, 'noise', 0)
  return with_seed(opts.seed, function()
    local t = (ember.rand(n) * 2 + 1) * (1.5 * math.pi)
    local points = ember.stack({ t * t:cos(), t * t:sin() }, 2) + ember.randn(n, 2) * noise
    return points, t
  end)
end

return data
