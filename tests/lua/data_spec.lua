-- data_spec.lua — ember.data: Fashion-MNIST and MNIST loading, IDX errors,
-- datasets, the DataLoader, transforms and the synthetic 2-D sets.
local ember = require 'ember'
local data = require 'ember.data'

local FASHION = '/usr/share/datasets/fashion-mnist'
local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute('mkdir -p ' .. tmpdir))
teardown(function() os.execute('rm -rf ' .. tmpdir) end)

local function write(path, bytes)
  local f = assert(io.open(path, 'wb'))
  f:write(bytes)
  f:close()
end

local function read(path)
  local f = assert(io.open(path, 'rb'))
  local s = f:read('a')
  f:close()
  return s
end

-- Counts per class of 1-based labels [N] as a Lua list.
local function class_counts(y, k)
  return data.one_hot(y, k):sum(1):totable()
end

describe('ember.data.fashion_mnist', function()
  local train, test
  setup(function()
    train = data.fashion_mnist { split = 'train' }
    test = data.fashion_mnist { split = 'test' }
  end)

  it('has 60000/10000 images of 1 x 28 x 28 with labels 1..10', function()
    assert.same({ 60000, 1, 28, 28 }, train.x:shape())
    assert.same({ 60000 }, train.y:shape())
    assert.same({ 10000, 1, 28, 28 }, test.x:shape())
    assert.same({ 10000 }, test.y:shape())
    assert.equal(60000, #train)
    assert.equal(10000, test:size())
    assert.equal('Ankle boot', train.classes[10])
  end)

  it('has 6000 / 1000 images of each class', function()
    for _, c in ipairs(class_counts(train.y, 10)) do assert.equal(6000, c) end
    for _, c in ipairs(class_counts(test.y, 10)) do assert.equal(1000, c) end
  end)

  it('has pixels in [0, 1] and the known first labels', function()
    assert.equal(0, train.x:min():item())
    assert.equal(1, train.x:max():item())
    -- the first ten training labels of Fashion-MNIST are 9 0 0 3 0 2 7 2 5 5 (0-based)
    assert.same({ 10, 1, 1, 4, 1, 3, 8, 3, 6, 6 }, train.y:narrow(1, 1, 10):totable())
    local x, y = train:get(1)
    assert.same({ 1, 28, 28 }, x:shape())
    assert.equal(10, y)
    local pair = train[2]
    assert.equal(1, pair[2])
  end)

  it('matches the bytes of the file (first 100 images, read independently)', function()
    local pipe = io.popen('gzip -dc ' .. FASHION .. '/train-images-idx3-ubyte.gz | head -c 78416')
    local bytes = pipe:read('a')
    pipe:close()
    assert.equal(78416, #bytes)
    local sum, weighted = 0, 0
    for i = 17, #bytes do
      local b = bytes:byte(i)
      sum = sum + b
      weighted = weighted + b * ((i - 17) % 97)
    end
    local first = train.x:narrow(1, 1, 100):contiguous():view(-1)
    local w = (ember.arange(78400) - ember.arange(78400):div(97):floor() * 97)
    assert.near(sum / 255, first:sum():item(), 1e-3 * sum / 255)
    assert.near(weighted / 255, (first * w):sum():item(), 1e-3 * weighted / 255)
  end)

  it('gives raw bytes and binarized images on request', function()
    local raw = data.fashion_mnist { split = 'test', raw = true }
    assert.equal(255, raw.x:max():item())
    local first = raw.x[1]:contiguous():view(-1)
    local scaled = test.x[1]:contiguous():view(-1)
    assert.near(0, (first / 255 - scaled):abs():max():item(), 1e-6)
    local bin = data.fashion_mnist { split = 'test', binarize = true }
    local ones = bin.x:eq(1):sum():item() + bin.x:eq(0):sum():item()
    assert.equal(bin.x:numel(), ones)
    assert.equal(test.x:ge(0.5):sum():item(), bin.x:sum():item())
  end)

  it('rejects a bad split or a folder without the files', function()
    local ok, err = pcall(data.fashion_mnist, { split = 'val' })
    assert.is_false(ok)
    assert.matches("fashion_mnist: split must be 'train' or 'test', got 'val'", err, 1, true)
    ok, err = pcall(data.fashion_mnist, { dir = tmpdir .. '/nothing-here' })
    assert.is_false(ok)
    assert.matches('fashion_mnist: no train-images-idx3-ubyte[.gz] with its labels in ' .. tmpdir .. '/nothing-here', err, 1, true)
    ok, err = pcall(data.fashion_mnist, 'train')
    assert.matches('fashion_mnist: bad argument #1 (expected an options table, got string)', err, 1, true)
  end)

  it('loads the same files through data.idx and dir=', function()
    local ds = data.idx(FASHION .. '/t10k-images-idx3-ubyte.gz', FASHION .. '/t10k-labels-idx1-ubyte.gz')
    assert.same({ 10000, 1, 28, 28 }, ds.x:shape())
    assert.equal(test.y[17], ds.y[17])
    local d2 = data.fashion_mnist { split = 'test', dir = FASHION }
    assert.equal(#test, #d2)
  end)
end)

describe('ember.data.mnist (prepared by make data)', function()
  local ok_train, train = pcall(data.mnist, { split = 'train' })
  if not ok_train then
    pending('MNIST digits are not prepared (run `make data`): ' .. tostring(train))
    return
  end
  local test = data.mnist { split = 'test' }

  it('has 8004 / 1996 digits of 1 x 28 x 28, interleaved by digit', function()
    assert.same({ 8004, 1, 28, 28 }, train.x:shape())
    assert.same({ 1996, 1, 28, 28 }, test.x:shape())
    assert.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, train.y:narrow(1, 1, 10):totable())
    local counts = class_counts(train.y, 10)
    local tcounts = class_counts(test.y, 10)
    for d = 1, 10 do
      -- the split sends every fifth sample of each digit to the test set
      local total = counts[d] + tcounts[d]
      assert.equal(total // 5, tcounts[d])
      assert.is_true(counts[d] > 600)
    end
    assert.equal(0, train.x:min():item())
    assert.equal(1, train.x:max():item())
  end)

  it('holds whole bytes (the JSON rounding is undone)', function()
    local raw = data.mnist { split = 'test', raw = true }
    assert.equal(0, raw.x:ne(raw.x:round()):sum():item())
    assert.equal(255, raw.x:max():item())
  end)
end)

describe('IDX errors name the file and the problem', function()
  local function load_err(path)
    local ok, err = pcall(data.read_idx, path)
    assert.is_false(ok)
    return err
  end
  local good = string.pack('>I4I4I4I4', 0x803, 2, 2, 3) .. ('\1\2\3\4\5\6'):rep(2)

  it('reads a valid file and its gzip form, and round-trips save_idx', function()
    write(tmpdir .. '/ok.idx', good)
    local t = data.read_idx(tmpdir .. '/ok.idx', { raw = true })
    assert.same({ { { 1, 2, 3 }, { 4, 5, 6 } }, { { 1, 2, 3 }, { 4, 5, 6 } } }, t:totable())
    data.save_idx(t, tmpdir .. '/ok2.idx.gz')
    assert.same(t:totable(), data.read_idx(tmpdir .. '/ok2.idx.gz', { raw = true }):totable())
    assert.near(6 / 255, data.read_idx(tmpdir .. '/ok.idx')[1][2][3], 1e-7)
  end)

  it('missing, empty, wrong magic, truncated, dims vs size', function()
    assert.matches("cannot open '" .. tmpdir .. "/missing.idx': No such file", load_err(tmpdir .. '/missing.idx'), 1, true)
    write(tmpdir .. '/empty.idx', '')
    assert.matches("'" .. tmpdir .. "/empty.idx' is empty", load_err(tmpdir .. '/empty.idx'), 1, true)
    write(tmpdir .. '/magic.idx', 'PK\3\4' .. good:sub(5))
    assert.matches('wrong magic 50 4b 03 04', load_err(tmpdir .. '/magic.idx'), 1, true)
    write(tmpdir .. '/short.idx', good:sub(1, -4))
    assert.matches('truncated: the header declares [2 x 2 x 3] = 12 data bytes, the file holds 9',
      load_err(tmpdir .. '/short.idx'), 1, true)
    write(tmpdir .. '/long.idx', good .. '\0\0\0')
    assert.matches('3 bytes after the 12 data bytes', load_err(tmpdir .. '/long.idx'), 1, true)
    write(tmpdir .. '/huge.idx', string.pack('>I4I4I4I4', 0x803, 0xffffffff, 0xffffffff, 0xffffffff))
    assert.matches('(a corrupt or hostile header)', load_err(tmpdir .. '/huge.idx'), 1, true)
  end)

  it('a corrupt gzip file', function()
    local path = tmpdir .. '/c.idx.gz'
    local big = string.pack('>I4I4', 0x801, 5000) .. ('abcdefghij'):rep(500)
    write(tmpdir .. '/c.idx', big)
    assert(os.execute('gzip -n -f ' .. tmpdir .. '/c.idx'))
    local z = read(path)
    write(path, z:sub(1, -9) .. 'XXXXXXXX') -- a broken CRC and length trailer
    local err = load_err(path)
    assert.matches("read_idx: '" .. path .. "': incorrect data check", err, 1, true)
    write(path, z:sub(1, #z // 2))
    assert.matches('truncated .gz file', load_err(path), 1, true)
  end)

  it('a labels file that does not match the images', function()
    write(tmpdir .. '/img.idx', good)
    write(tmpdir .. '/lab.idx', string.pack('>I4I4', 0x801, 3) .. '\0\1\2')
    local ok, err = pcall(data.idx, tmpdir .. '/img.idx', tmpdir .. '/lab.idx')
    assert.is_false(ok)
    assert.matches('idx: ' .. tmpdir .. '/lab.idx has [3] labels for the 2 images', err, 1, true)
    ok, err = pcall(data.idx, tmpdir .. '/img.idx', tmpdir .. '/missing.idx')
    assert.matches("idx: idx_load: cannot open '" .. tmpdir .. "/missing.idx'", err, 1, true)
    ok, err = pcall(data.save_idx, ember.tensor { 1, 300 }, tmpdir .. '/bad.idx')
    assert.matches('idx_save: element 2 is 300, expected a value in 0..255', err, 1, true)
  end)
end)

describe('ember.data.DataLoader', function()
  -- rows hold their own 1-based index, so batches show which rows they took
  local n = 103
  local x = ember.arange(1, n + 1):view(n, 1):expand(n, 3):contiguous()
  local y = ember.arange(1, n + 1)
  local ds = data.TensorDataset(x, y)

  local function epoch_rows(loader)
    local rows, sizes = {}, {}
    for bx, by, b in loader:iter() do
      sizes[#sizes + 1] = bx:size(1)
      assert.equal(#sizes, b)
      assert.same({ bx:size(1), 3 }, bx:shape())
      assert.same(bx:select(2, 2):totable(), by:totable()) -- x and y stay aligned
      for _, v in ipairs(by:totable()) do rows[#rows + 1] = v end
    end
    return rows, sizes
  end

  it('batches in order with a smaller last batch, or drops it', function()
    local loader = data.DataLoader(ds, { batch_size = 10 })
    assert.equal(11, #loader)
    local rows, sizes = epoch_rows(loader)
    assert.equal(3, sizes[11])
    for i = 1, n do assert.equal(i, rows[i]) end
    local dl = data.DataLoader(ds, { batch_size = 10, drop_last = true })
    assert.equal(10, #dl)
    rows, sizes = epoch_rows(dl)
    assert.equal(100, #rows)
    assert.equal(10, sizes[10])
  end)

  it('shuffles every row exactly once per epoch, reproducibly', function()
    ember.manual_seed(5)
    local loader = data.DataLoader(ds, { batch_size = 16, shuffle = true })
    local e1 = epoch_rows(loader)
    local e2 = epoch_rows(loader)
    for _, rows in ipairs { e1, e2 } do
      assert.equal(n, #rows)
      local seen = {}
      for _, r in ipairs(rows) do
        assert.is_nil(seen[r])
        seen[r] = true
      end
    end
    local same, inorder = true, true
    for i = 1, n do
      same = same and e1[i] == e2[i]
      inorder = inorder and e1[i] == i
    end
    assert.is_false(same)
    assert.is_false(inorder)
    ember.manual_seed(5)
    local again = epoch_rows(data.DataLoader(ds, { batch_size = 16, shuffle = true }))
    assert.same(e1, again)
    -- seed= gives an order of its own, independent of the shared generator
    local a = epoch_rows(data.DataLoader(ds, { batch_size = 7, shuffle = true, seed = 11 }))
    ember.manual_seed(999)
    local b = epoch_rows(data.DataLoader(ds, { batch_size = 7, shuffle = true, seed = 11 }))
    assert.same(a, b)
  end)

  it('batches Fashion-MNIST in C, [128 x 1 x 28 x 28]', function()
    local test = data.fashion_mnist { split = 'test' }
    local loader = data.DataLoader(test, { batch_size = 128, shuffle = true })
    assert.equal(79, #loader)
    local count, total = 0, 0
    for bx, by in loader:iter() do
      count = count + 1
      total = total + bx:size(1)
      if count == 1 then
        assert.same({ 128, 1, 28, 28 }, bx:shape())
        assert.same({ 128 }, by:shape())
      end
    end
    assert.equal(79, count)
    assert.equal(10000, total)
  end)

  it('applies transforms and collates plain Lua datasets', function()
    local loader = data.DataLoader(ds, { batch_size = 4, transform = function(b) return b * 2 end,
      target_transform = function(t) return t - 1 end })
    local bx, by = loader:iter()()
    assert.same({ 2, 2, 2 }, bx[1]:totable())
    assert.same({ 0, 1, 2, 3 }, by:totable())
    local plain = { size = function() return 5 end,
      get = function(_, i) return ember.full({ 2 }, i), i * 10 end }
    local l2 = data.DataLoader(plain, { batch_size = 2 })
    local batches = {}
    for b, t in l2:iter() do batches[#batches + 1] = { b:totable(), t:totable() } end
    assert.equal(3, #batches)
    assert.same({ { { 1, 1 }, { 2, 2 } }, { 10, 20 } }, batches[1])
    assert.same({ { { 5, 5 } }, { 50 } }, batches[3])
  end)

  it('splits a dataset into disjoint random subsets', function()
    local a, b = data.split(ds, { 0.9, 0.1 }, 3)
    assert.equal(93, #a)
    assert.equal(10, #b)
    local seen = {}
    for _, part in ipairs { a, b } do
      for _, r in ipairs(epoch_rows(data.DataLoader(part, { batch_size = 8, shuffle = true }))) do
        assert.is_nil(seen[r])
        seen[r] = true
      end
    end
    for i = 1, n do assert.is_true(seen[i]) end
    local a2 = data.split(ds, { 0.9, 0.1 }, 3)
    assert.same(a:get(1):totable(), a2:get(1):totable())
    local c1, c2, c3 = data.split(ds, { 50, 50, 3 })
    assert.equal(3, #c3)
    local _, yy = c1:get(1)
    assert.equal('number', type(yy))
    -- a subset of a subset gathers through both index lists
    local inner = data.Subset(b, { 2, 4 })
    local rows = epoch_rows(data.DataLoader(inner, { batch_size = 5 }))
    assert.same({ select(2, b:get(2)), select(2, b:get(4)) }, rows)
  end)

  it('rejects bad arguments with clear messages', function()
    local function err(f, ...)
      local ok, e = pcall(f, ...)
      assert.is_false(ok)
      return e
    end
    assert.matches('DataLoader: batch_size must be >= 1, got 0', err(data.DataLoader, ds, { batch_size = 0 }), 1, true)
    assert.matches('DataLoader: batch_size must be an integer, got 2.5', err(data.DataLoader, ds, { batch_size = 2.5 }), 1, true)
    assert.matches('DataLoader: expected a dataset', err(data.DataLoader, 42), 1, true)
    assert.matches('DataLoader: transform must be a function, got number', err(data.DataLoader, ds, { transform = 1 }), 1, true)
    assert.matches('TensorDataset: x [103 x 3] and y [5] must have the same number of rows',
      err(data.TensorDataset, x, ember.zeros(5)), 1, true)
    assert.matches('TensorDataset: x must be a tensor, got table', err(data.TensorDataset, {}), 1, true)
    assert.matches('TensorDataset:get: index 0 out of range (expected 1..103)', err(ds.get, ds, 0), 1, true)
    assert.matches('split: fractions must sum to 1, got 0.9', err(data.split, ds, { 0.5, 0.4 }), 1, true)
    assert.matches('split: counts must sum to the dataset size 103, got 100', err(data.split, ds, { 50, 50 }), 1, true)
    assert.matches('Subset: indices must lie in 1..103, got 1..104', err(data.Subset, ds, { 1, 104 }), 1, true)
  end)
end)

describe('ember.data.transforms', function()
  local T = data.transforms
  local x = ember.rand(64, 1, 8, 8)

  it('scale, normalize, flatten, binarize, compose', function()
    local s = T.scale(-1, 1)(x)
    assert.near(0, (s - (x * 2 - 1)):abs():max():item(), 1e-6)
    local nrm = T.normalize(0.5, 0.25)(x)
    assert.near(0, (nrm - (x - 0.5) / 0.25):abs():max():item(), 1e-5)
    assert.same({ 64, 64 }, T.flatten()(x):shape())
    local b = T.binarize(0.3)(x)
    assert.equal(x:ge(0.3):sum():item(), b:sum():item())
    local f = T.compose(T.scale(-1, 1), T.flatten())
    assert.same({ 64, 64 }, f(x):shape())
    assert.is_true(f(x):min():item() < -0.9)
  end)

  it('bernoulli (dynamic binarization) draws 0/1 with probability x', function()
    local p = ember.full({ 200, 100 }, 0.3)
    local b = T.bernoulli()(p)
    assert.equal(b:numel(), b:eq(0):sum():item() + b:eq(1):sum():item())
    assert.near(0.3, b:mean():item(), 0.02)
    local b2 = T.dynamic_binarize()(p)
    assert.is_true((b - b2):abs():sum():item() > 0) -- fresh draws per batch
  end)

  it('gaussian noise with clamp, salt and pepper at level p', function()
    local z = ember.full({ 100, 100 }, 0.5)
    local g = T.gaussian_noise(0.1)(z)
    assert.near(0.1, (g - 0.5):std():item(), 0.01)
    local gc = T.gaussian_noise(2, { clamp = { 0, 1 } })(z)
    assert.is_true(gc:min():item() >= 0 and gc:max():item() <= 1)
    local sp = T.salt_and_pepper(0.2)(z)
    local salt, pepper = sp:eq(1):sum():item(), sp:eq(0):sum():item()
    local kept = sp:eq(0.5):sum():item()
    assert.equal(10000, salt + pepper + kept)
    assert.near(0.1, salt / 10000, 0.015)
    assert.near(0.1, pepper / 10000, 0.015)
  end)

  it('hflip mirrors whole samples', function()
    local img = ember.arange(2 * 1 * 2 * 3):view(2, 1, 2, 3)
    assert.same({ { { 2, 1, 0 }, { 5, 4, 3 } } }, T.hflip(1)(img)[1]:totable())
    assert.same(img:totable(), T.hflip(0)(img):totable())
    ember.manual_seed(1)
    local many = T.hflip(0.5)(ember.arange(400):view(200, 2))
    local flipped = many:select(2, 1):gt(many:select(2, 2)):sum():item()
    assert.is_true(flipped > 70 and flipped < 130)
  end)

  it('one_hot', function()
    assert.same({ { 0, 1, 0 }, { 0, 0, 1 }, { 1, 0, 0 } }, data.one_hot(ember.tensor { 2, 3, 1 }, 3):totable())
    assert.same({ { 1, 0 } }, data.one_hot({ 1 }, 2):totable())
    local ok, err = pcall(data.one_hot, ember.tensor { 0, 2 }, 3)
    assert.matches('one_hot: labels must be integers in 1..3, got values in 0..2', err, 1, true)
    ok, err = pcall(data.one_hot, ember.tensor { 1.5 }, 3)
    assert.matches('one_hot: labels must be integers in 1..3', err, 1, true)
  end)

  it('reject bad parameters', function()
    local ok, err = pcall(T.salt_and_pepper, 1.5)
    assert.matches('salt_and_pepper: p must be in [0, 1], got 1.5', err, 1, true)
    ok, err = pcall(T.gaussian_noise, -1)
    assert.matches('gaussian_noise: std must be in [0, inf], got -1', err, 1, true)
    ok, err = pcall(T.scale(0, 1), 'x')
    assert.matches('scale: expected a batch tensor, got string', err, 1, true)
    ok, err = pcall(T.compose, T.flatten(), 3)
    assert.matches('compose: argument #2 must be a function, got number', err, 1, true)
  end)
end)

describe('ember.data synthetic 2-D sets', function()
  it('ring: 8 modes on radius 2, points within 5 std of their centre', function()
    ember.manual_seed(3)
    local p, mode, centers = data.ring(2000)
    assert.same({ 2000, 2 }, p:shape())
    assert.same({ 8, 2 }, centers:shape())
    assert.equal(1, mode:min():item())
    assert.equal(8, mode:max():item())
    local r = centers:square():sum(2):sqrt()
    assert.near(0, (r - 2):abs():max():item(), 1e-5)
    assert.near(0, centers[3][1], 1e-6) -- mode 3 at 90 degrees
    assert.near(2, centers[3][2], 1e-6)
    local own = ember._data.gather_rows(centers, mode - 1, 0, 2000)
    local d = (p - own):square():sum(2):sqrt()
    assert.is_true(d:max():item() < 5 * 0.02 * 1.5)
    for _, c in ipairs(class_counts(mode, 8)) do assert.is_true(c > 180) end
  end)

  it('grid: 25 centres on -4..4, reproducible with seed=', function()
    local p, mode, centers = data.grid(500, { seed = 9 })
    assert.same({ 25, 2 }, centers:shape())
    assert.equal(-4, centers:min():item())
    assert.equal(4, centers:max():item())
    assert.equal(25, mode:max():item())
    local p2 = data.grid(500, { seed = 9 })
    assert.same(p:totable(), p2:totable())
  end)

  it('moons, circles, swiss roll', function()
    local p, l = data.moons(400, { noise = 0 })
    assert.same({ 400, 2 }, p:shape())
    local upper = p:select(2, 1):square() + p:select(2, 2):square()
    -- upper moon points (label 1) lie on the unit circle
    local on_circle = upper:sub(1):abs():lt(1e-4):mul(l:eq(1)):sum():item()
    assert.equal(l:eq(1):sum():item(), on_circle)
    local c, cl = data.circles(300, { factor = 0.5 })
    local r = c:square():sum(2):sqrt()
    assert.near(0, (r - ember.where(cl:eq(1), 1, 0.5)):abs():max():item(), 1e-5)
    local s, t = data.swiss_roll(100)
    assert.same({ 100, 2 }, s:shape())
    assert.is_true(t:min():item() >= 1.5 * math.pi - 1e-5)
    local ok, err = pcall(data.ring, 0)
    assert.matches('ring: n must be >= 1, got 0', err, 1, true)
    ok, err = pcall(data.ring, 10, { std = -1 })
    assert.matches('ring: std must be in [0, inf], got -1', err, 1, true)
  end)
end)
