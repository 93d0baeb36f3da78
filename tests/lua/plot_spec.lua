-- plot_spec.lua — ember.plot: scatter and line plots drawn by gnuplot, read
-- back as pictures and checked for size and content; errors.
local ember = require 'ember'
local plot = require 'ember.plot'
local image = require 'ember.image'
local data = require 'ember.data'
local metrics = require 'ember.metrics'

local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute('mkdir -p ' .. tmpdir))
teardown(function() os.execute('rm -rf ' .. tmpdir) end)

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok)
  return e
end

-- Pixels of an RGB picture [3 x H x W] within tol of colour '#rrggbb' (or
-- of that colour blended with white at `alpha`).
local function count_colour(img, hex, tol, alpha)
  alpha = alpha or 1
  local mask
  for ch = 1, 3 do
    local c = tonumber(hex:sub(2 * ch, 2 * ch + 1), 16) / 255
    c = c * alpha + (1 - alpha)
    local m = (img[ch] - c):abs():lt(tol)
    mask = mask and mask:mul(m) or m
  end
  return mask:sum():item()
end

local function dark_pixels(img)
  return img[1]:lt(0.3):mul(img[2]:lt(0.3)):mul(img[3]:lt(0.3)):sum():item()
end

describe('ember.plot.scatter', function()
  it('draws a ring coloured by mode, with centres, axes and a legend', function()
    ember.manual_seed(2)
    local p, mode, centers = data.ring(2000, { std = 0.05 })
    local path = tmpdir .. '/ring.png'
    assert.equal(path, plot.scatter(p, path, { labels = mode, centers = centers, title = 'ring',
      xlabel = 'x', ylabel = 'y', equal = true }))
    local img = image.load_png(path)
    assert.same({ 3, 600, 800 }, img:shape())
    -- every mode's colour shows up (points are drawn at alpha 0.7, overlaps darker)
    for k = 1, 8 do
      local c = plot.colors[k]
      local n = count_colour(img, c, 0.12) + count_colour(img, c, 0.06, 0.7)
      assert.is_true(n > 10, ('colour %s of mode %d: %d pixels'):format(c, k, n))
    end
    -- axes, ticks, labels, legend text and the centre circles are dark
    assert.is_true(dark_pixels(img) > 2000)
    -- mostly white background: not a blank or a black image
    local white = img[1]:gt(0.95):mul(img[2]:gt(0.95)):mul(img[3]:gt(0.95)):sum():item()
    assert.is_true(white > 0.5 * 600 * 800 and white < 0.99 * 600 * 800)
  end)

  it('draws unlabelled points and writes SVG by extension', function()
    local p = data.moons(300, { noise = 0.05, seed = 1 })
    local path = tmpdir .. '/moons.svg'
    plot.scatter(p, path, { title = 'two moons', width = 640, height = 480 })
    local f = assert(io.open(path))
    local svg = f:read('a')
    f:close()
    assert.truthy(svg:find('<svg', 1, true))
    assert.truthy(svg:find('width="640"', 1, true))
    assert.truthy(svg:find('two moons', 1, true))
    local png = tmpdir .. '/moons.png'
    plot.scatter({ { 0, 0 }, { 1, 1 }, { 2, 0.5 } }, png, { point_size = 3 })
    local img = image.load_png(png)
    assert.is_true(count_colour(img, plot.colors[1], 0.08, 0.7) > 20)
  end)

  it('rejects bad input with clear messages', function()
    local p = ember.zeros(5, 2)
    assert.matches('scatter: points [5 x 3] must be [n x 2]', err_of(plot.scatter, ember.zeros(5, 3), tmpdir .. '/a.png'), 1, true)
    assert.matches('scatter: 4 labels for 5 points', err_of(plot.scatter, p, tmpdir .. '/a.png', { labels = { 1, 2, 1, 2 } }), 1, true)
    assert.matches('scatter: labels[2] = 1.5 is not a class 1..K',
      err_of(plot.scatter, p, tmpdir .. '/a.png', { labels = { 1, 1.5, 1, 1, 1 } }), 1, true)
    assert.matches("scatter: output '" .. tmpdir .. "/a.jpg' must end in .png, .svg or .pdf",
      err_of(plot.scatter, p, tmpdir .. '/a.jpg'), 1, true)
    assert.matches("scatter: cannot write '/nonexistent-dir/a.png': No such file or directory", err_of(plot.scatter, p, '/nonexistent-dir/a.png'), 1, true)
    assert.matches('scatter: centers [3] must be [n x 2]', err_of(plot.scatter, p, tmpdir .. '/a.png', { centers = ember.zeros(3) }), 1, true)
  end)

  it('says how to get gnuplot when it is missing', function()
    local saved = plot.gnuplot
    plot.gnuplot = '/nonexistent/bin/gnuplot'
    local ok, e = pcall(plot.scatter, ember.zeros(3, 2), tmpdir .. '/b.png')
    plot.gnuplot = saved
    assert.is_false(ok)
    assert.matches("scatter: gnuplot not found (plot.gnuplot = '/nonexistent/bin/gnuplot'): install it with `apt-get install gnuplot-nox`", e, 1, true)
    plot.gnuplot = 'no-such-gnuplot-program'
    ok, e = pcall(plot.lines, { a = { 1, 2 } }, tmpdir .. '/b.png')
    plot.gnuplot = saved
    assert.matches('lines: gnuplot not found', e, 1, true)
    -- a gnuplot that fails: its exit status is reported
    plot.gnuplot = 'false'
    ok, e = pcall(plot.lines, { a = { 1, 2 } }, tmpdir .. '/c.png')
    plot.gnuplot = saved
    assert.matches("lines: gnuplot failed (exit 1) drawing '" .. tmpdir .. "/c.png'", e, 1, true)
  end)
end)

describe('ember.plot.lines', function()
  it('draws named series with a log axis', function()
    local loss, kl = {}, {}
    for i = 1, 200 do
      loss[i] = 100 * math.exp(-i / 40) + 1
      kl[i] = 5 + math.sin(i / 10)
    end
    local path = tmpdir .. '/loss.png'
    plot.lines({ loss = loss, kl = ember.tensor(kl) }, path, { title = 'VAE loss', xlabel = 'step', logy = true })
    local img = image.load_png(path)
    assert.same({ 3, 600, 800 }, img:shape())
    -- names sort: kl gets colour 1, loss colour 2; both curves are drawn (lw 2)
    assert.is_true(count_colour(img, plot.colors[1], 0.1) > 300)
    assert.is_true(count_colour(img, plot.colors[2], 0.1) > 300)
    assert.is_true(dark_pixels(img) > 1000)
  end)

  it('plots columns of a metrics CSV against step', function()
    local csv = tmpdir .. '/metrics.csv'
    local log = metrics.csv(csv)
    for step = 1, 50 do log:write { step = step * 10, loss = 1 / step, acc = step / 50 } end
    log:close()
    local path = tmpdir .. '/csv.png'
    plot.lines(csv, path, { columns = { 'loss' } })
    local img = image.load_png(path)
    assert.is_true(count_colour(img, plot.colors[1], 0.1) > 200)
    assert.is_true(count_colour(img, plot.colors[2], 0.1) < 20) -- only one series
    -- every numeric column by default, x = step
    plot.lines(csv, path, {})
    img = image.load_png(path)
    assert.is_true(count_colour(img, plot.colors[2], 0.1) > 200)
  end)

  it('rejects bad series with clear messages', function()
    assert.matches("lines: cannot open '" .. tmpdir .. "/nothing.csv': No such file or directory", err_of(plot.lines, tmpdir .. '/nothing.csv', tmpdir .. '/a.png'), 1, true)
    local csv = tmpdir .. '/m2.csv'
    local log = metrics.csv(csv)
    log:write { step = 1, loss = 2 }
    log:close()
    assert.matches("lines: '" .. csv .. "' has no column 'kl' (columns: step, loss)",
      err_of(plot.lines, csv, tmpdir .. '/a.png', { columns = { 'kl' } }), 1, true)
    assert.matches("lines: series 'a' has no plottable values (logy needs values > 0)",
      err_of(plot.lines, { a = { -1, 0 } }, tmpdir .. '/a.png', { logy = true }), 1, true)
    assert.matches('lines: a[2] must be a number, got string', err_of(plot.lines, { a = { 1, 'x' } }, tmpdir .. '/a.png'), 1, true)
    assert.matches("lines: series 'a' has 2 x and 3 y values",
      err_of(plot.lines, { a = { x = { 1, 2 }, y = { 1, 2, 3 } } }, tmpdir .. '/a.png'), 1, true)
    assert.matches('lines: bad argument #1 (expected a table of series or a CSV path, got number)',
      err_of(plot.lines, 3, tmpdir .. '/a.png'), 1, true)
  end)
end)
