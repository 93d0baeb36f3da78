-- ember.image — pictures of tensors: PNG files and image grids (the C side
-- uses Debian's libstb: stb_image_write / stb_image).
--
--   image.save_grid(samples, 'runs/x/samples.png', {nrow = 8, range = {-1, 1}, scale = 3})
--   image.save_png(img, 'a.png')            -- img [C x H x W] or [H x W], values in [0, 1]
--   local img = image.load_png('a.png')     -- [C x H x W] in [0, 1], C = 1 or 3
--
-- Ranges: a picture maps `range` {lo, hi} to black..white (default {0, 1});
-- normalize = true takes the tensor's own min and max instead. Values outside
-- are clamped; NaN is an error (a diverged model should not look fine).
local ember = require 'ember'
local C = ember._data

local image = {}

local function fail(fname, msg)
  error(fname .. ': ' .. msg, 3)
end

local function typename(v)
  return ember.is_tensor(v) and 'tensor' or type(v)
end

-- Calls a C function; its error is raised again at the caller of the public
-- function (3 frames up), without a position inside this file.
local function ccall(f, ...)
  local ok, a = pcall(f, ...)
  if not ok then error((tostring(a):gsub('^[^\n]-:%d+: ', '')), 3) end
  return a
end

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

local function check_opts(fname, opts, argn)
  if opts == nil then return {} end
  if type(opts) ~= 'table' then
    fail(fname, ('bad argument #%d (expected an options table, got %s)'):format(argn, typename(opts)))
  end
  return opts
end

local function check_path(fname, path, argn)
  if type(path) ~= 'string' or path == '' then
    fail(fname, ('bad argument #%d (expected a file name, got %s)'):format(argn, typename(path)))
  end
end

local function check_int(fname, v, what, lo, hi)
  if math.type(v) ~= 'integer' then
    if type(v) == 'number' and v == math.floor(v) then v = math.tointeger(v) end
  end
  if math.type(v) ~= 'integer' or v < lo or v > hi then
    fail(fname, ('%s must be an integer in %d..%d, got %s'):format(what, lo, hi, tostring(v)))
  end
  return v
end

-- The {lo, hi} a tensor's values are shown in: opts.range, its min/max when
-- opts.normalize, else {0, 1}.
local function value_range(fname, t, opts)
  if opts.normalize then
    local s = t:stats()
    if s.nan > 0 then fail(fname, ('the tensor holds %d NaN values'):format(s.nan)) end
    local lo, hi = s.min, s.max
    if hi <= lo then hi = lo + 1 end -- a constant image shows as black
    return lo, hi
  end
  local r = opts.range
  if r == nil then return 0, 1 end
  if type(r) ~= 'table' or type(r[1]) ~= 'number' or type(r[2]) ~= 'number' or not (r[1] < r[2]) then
    fail(fname, ('range must be {lo, hi} with lo < hi, got %s'):format(
      type(r) == 'table' and ('{%s, %s}'):format(tostring(r[1]), tostring(r[2])) or typename(r)))
  end
  return r[1], r[2]
end

-- images as [N x C x H x W]: accepts 4-D, 3-D [N x H x W] and 2-D [N x D]
-- with D a square (flat grey images, e.g. an MLP's 784 outputs).
local function as_batch(fname, t)
  local d = t:dim()
  if d == 4 then return t end
  if d == 3 then return t:reshape(t:size(1), 1, t:size(2), t:size(3)) end
  if d == 2 then
    local side = math.floor(math.sqrt(t:size(2)) + 0.5)
    if side * side == t:size(2) then return t:reshape(t:size(1), 1, side, side) end
  end
  fail(fname, ('images %s must be [N x C x H x W], [N x H x W] or [N x D] with D a square'):format(shape_str(t)))
end

--- image.make_grid(images, {nrow=8, padding=2, pad_value=0, range=, normalize=false, scale=1})
-- -> [C x H' x W'] tiled picture. With range or normalize the values are first
-- mapped to [0, 1] (and clamped) so pad_value is in [0, 1] units; without, the
-- values are kept as they are. scale: integer nearest-neighbour upscaling.
function image.make_grid(images, opts)
  if not ember.is_tensor(images) then
    fail('make_grid', ('bad argument #1 (expected a tensor of images, got %s)'):format(typename(images)))
  end
  opts = check_opts('make_grid', opts, 2)
  local nrow = check_int('make_grid', opts.nrow or 8, 'nrow', 1, 1 << 16)
  local padding = check_int('make_grid', opts.padding or 2, 'padding', 0, 4096)
  local scale = check_int('make_grid', opts.scale or 1, 'scale', 1, 64)
  local pad_value = opts.pad_value or 0
  if type(pad_value) ~= 'number' then
    fail('make_grid', ('pad_value must be a number, got %s'):format(typename(pad_value)))
  end
  local batch = ember.no_grad(function() return as_batch('make_grid', images):detach() end)
  if opts.range ~= nil or opts.normalize then
    local lo, hi = value_range('make_grid', batch, opts)
    batch = ((batch - lo) / (hi - lo)):clamp(0, 1)
  end
  local grid = ccall(C.make_grid, batch, nrow, padding, pad_value)
  if scale > 1 then grid = ccall(C.upscale, grid, scale) end
  return grid
end

--- image.save_png(img, path, {range={0,1}, normalize=false, scale=1})
-- img [C x H x W] (C = 1, 3 or 4) or [H x W].
function image.save_png(img, path, opts)
  if not ember.is_tensor(img) then
    fail('save_png', ('bad argument #1 (expected an image tensor, got %s)'):format(typename(img)))
  end
  check_path('save_png', path, 2)
  opts = check_opts('save_png', opts, 3)
  if img:dim() ~= 2 and img:dim() ~= 3 then
    fail('save_png', ('image %s must be [C x H x W] or [H x W] (use save_grid for a batch)'):format(shape_str(img)))
  end
  local scale = check_int('save_png', opts.scale or 1, 'scale', 1, 64)
  local lo, hi = value_range('save_png', img, opts)
  if scale > 1 then img = ccall(C.upscale, img:detach(), scale) end
  ccall(C.save_png, img:detach(), path, lo, hi)
  return path
end

--- image.save_grid(images, path, opts): make_grid then save_png; opts as make_grid's.
-- Returns the path.
function image.save_grid(images, path, opts)
  check_path('save_grid', path, 2)
  opts = check_opts('save_grid', opts, 3)
  if not ember.is_tensor(images) then
    fail('save_grid', ('bad argument #1 (expected a tensor of images, got %s)'):format(typename(images)))
  end
  -- NaN is checked here, on the caller's images: after make_grid the message
  -- would name save_png and a position in the grid.
  local nan = images:stats().nan
  if nan > 0 then
    fail('save_grid', ('the images hold %d NaN value%s (a diverged model?); not writing %q')
      :format(nan, nan == 1 and '' or 's', path))
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.range == nil and not o.normalize then o.range = { 0, 1 } end
  -- make_grid's and save_png's errors are reported as save_grid's, the function called.
  local function as_save_grid(msg)
    msg = tostring(msg):gsub('^[^\n]-:%d+: ', '')
    return (msg:gsub('^make_grid: ', 'save_grid: '):gsub('^save_png: ', 'save_grid: '))
  end
  local ok, grid = pcall(image.make_grid, images, o)
  if not ok then error(as_save_grid(grid), 2) end
  local saved, err = pcall(C.save_png, grid, path, 0, 1)
  if not saved then error(as_save_grid(err), 2) end
  return path
end

--- image.load_png(path) -> [C x H x W] in [0, 1] (C = 1 grey or 3 colour; alpha dropped).
-- Reads PNG, JPEG, BMP, GIF, TGA, PNM as stb_image knows them.
function image.load_png(path)
  check_path('load_png', path, 1)
  return ccall(C.load_image, path)
end
image.load = image.load_png

return image
