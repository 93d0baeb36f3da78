-- image_spec.lua — ember.image: grids written as PNG and read back with
-- stb_image, pixel by pixel; ranges; errors.
local ember = require 'ember'
local image = require 'ember.image'

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute('mkdir -p ' .. tmpdir))
teardown(function() os.execute('rm -rf ' .. tmpdir) end)

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return e
end

describe('ember.image', function()
  -- 10 grey 4x5 images; image k has value (k-1)/9 everywhere except pixel
  -- (1,1) which is 1 and pixel (4,5) which is 0
  local n, h, w = 10, 4, 5
  local imgs = (ember.arange(n) / 9):view(n, 1, 1, 1):expand(n, 1, h, w):contiguous()
  for k = 1, n do
    imgs[k][1][1][1] = 1
    imgs[k][1][h][w] = 0
  end

  it('save_grid writes a PNG that reads back pixel for pixel', function()
    local path = tmpdir .. '/grid.png'
    assert.equal(path, image.save_grid(imgs, path, { nrow = 4, padding = 2, pad_value = 0.5 }))
    local g = image.load_png(path)
    -- 4 per row, 3 rows: H = 3 * (4 + 2) + 2, W = 4 * (5 + 2) + 2
    assert.same({ 1, 20, 30 }, g:shape())
    local function px(y, x) return math.floor(g[1][y][x] * 255 + 0.5) end
    assert.equal(128, px(1, 1))   -- padding (0.5 -> 128)
    assert.equal(128, px(7, 10))
    for k = 1, n do
      local y0 = 2 + ((k - 1) // 4) * 6 + 1
      local x0 = 2 + ((k - 1) % 4) * 7 + 1
      assert.equal(255, px(y0, x0))
      assert.equal(0, px(y0 + h - 1, x0 + w - 1))
      assert.equal(math.floor((k - 1) / 9 * 255 + 0.5), px(y0 + 1, x0 + 2))
    end
    -- the empty slots of the last row are padding
    assert.equal(128, px(2 + 2 * 6 + 2, 2 + 3 * 7 + 2))
  end)

  it('upscales with scale= (nearest neighbour)', function()
    local path = tmpdir .. '/grid3.png'
    image.save_grid(imgs, path, { nrow = 4, padding = 2, pad_value = 0.5, scale = 3 })
    local g = image.load_png(path)
    assert.same({ 1, 60, 90 }, g:shape())
    local small = image.make_grid(imgs, { nrow = 4, padding = 2, pad_value = 0.5 })
    for _, yx in ipairs { { 3, 3 }, { 4, 5 }, { 9, 14 }, { 20, 30 } } do
      local y, x = yx[1], yx[2]
      local want = math.floor(small[1][y][x] * 255 + 0.5) / 255
      for dy = 0, 2 do
        for dx = 0, 2 do assert.near(want, g[1][(y - 1) * 3 + 1 + dy][(x - 1) * 3 + 1 + dx], 1e-6) end
      end
    end
  end)

  it('maps range= and normalize= to black..white, and takes flat [N x 784] batches', function()
    local x = ember.linspace(-1, 1, 2 * 784):view(2, 784)
    local path = tmpdir .. '/flat.png'
    image.save_grid(x, path, { range = { -1, 1 }, nrow = 2, padding = 0 })
    local g = image.load_png(path)
    assert.same({ 1, 28, 56 }, g:shape())
    assert.near(0, g[1][1][1], 1e-6)
    assert.near(1, g[1][28][56], 1e-6)
    image.save_grid(x * 10 + 3, path, { normalize = true, nrow = 2, padding = 0 })
    local g2 = image.load_png(path)
    assert.near(0, (g - g2):abs():max():item(), 1.01 / 255)
  end)

  it('save_png writes RGB and grey images', function()
    local rgb = ember.zeros(3, 2, 2)
    rgb[1][1][1] = 1 -- red top-left
    rgb[3][2][2] = 1 -- blue bottom-right
    local path = tmpdir .. '/rgb.png'
    image.save_png(rgb, path)
    local back = image.load_png(path)
    assert.same(rgb:totable(), back:totable())
    image.save_png(ember.full({ 3, 3 }, 0.25), path, { range = { 0, 0.5 } })
    local grey = image.load_png(path)
    assert.same({ 1, 3, 3 }, grey:shape())
    assert.near(128 / 255, grey[1][2][2], 1e-6)
  end)

  it('rejects bad shapes, paths, ranges and NaN', function()
    assert.matches('save_png: image [2 x 3 x 4 x 5] must be [C x H x W] or [H x W]',
      err_of(image.save_png, ember.zeros(2, 3, 4, 5), tmpdir .. '/x.png'), 1, true)
    assert.matches('save_png: image [5 x 2 x 2] has 5 channels, expected 1 (grey), 3 (RGB) or 4 (RGBA)',
      err_of(image.save_png, ember.zeros(5, 2, 2), tmpdir .. '/x.png'), 1, true)
    assert.matches("save_png: cannot write '/nonexistent-dir/x.png': No such file or directory",
      err_of(image.save_png, ember.zeros(2, 2), '/nonexistent-dir/x.png'), 1, true)
    assert.matches("save_grid: cannot write '/nonexistent-dir/g.png'",
      err_of(image.save_grid, imgs, '/nonexistent-dir/g.png'), 1, true)
    assert.matches('save_grid: images [7 x 3] must be [N x C x H x W], [N x H x W] or [N x D] with D a square',
      err_of(image.save_grid, ember.zeros(7, 3), tmpdir .. '/x.png'), 1, true)
    assert.matches('make_grid: nrow must be an integer in 1..65536, got 0',
      err_of(image.make_grid, imgs, { nrow = 0 }), 1, true)
    assert.matches('save_png: range must be {lo, hi} with lo < hi, got {1, 0}',
      err_of(image.save_png, ember.zeros(2, 2), tmpdir .. '/x.png', { range = { 1, 0 } }), 1, true)
    assert.matches('save_png: the image holds NaN',
      err_of(image.save_png, ember.zeros(2, 2) / 0, tmpdir .. '/x.png'), 1, true)
    assert.matches('save_png: bad argument #2 (expected a file name, got nil)',
      err_of(image.save_png, ember.zeros(2, 2)), 1, true)
    assert.matches('make_grid: bad argument #1 (expected a tensor of images, got string)',
      err_of(image.make_grid, 'x'), 1, true)
    assert.matches("load_image: cannot open '" .. tmpdir .. "/none.png'",
      err_of(image.load_png, tmpdir .. '/none.png'), 1, true)
  end)
end)
