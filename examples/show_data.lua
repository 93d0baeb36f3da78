-- show_data.lua [OUT_DIR] — a first look at the data ember trains on:
--   fashion_grid.png  64 Fashion-MNIST training images (8 x 8, upscaled 3x)
--   mnist_grid.png    64 MNIST digits, when `make data` has prepared them
--   ring.png          the 8-Gaussian ring (GAN mode coverage), coloured by mode
--   grid.png          the 25-Gaussian grid with its centres
--   moons.png         two moons with noise, coloured by moon
-- Run: build/ember examples/show_data.lua [runs/show_data]
local ember = require 'ember'
local data, image, plot = ember.data, ember.image, ember.plot

local out = arg and arg[1] or 'runs/show_data'
assert(os.execute('mkdir -p ' .. out), 'cannot create ' .. out)
ember.manual_seed(0)

-- 64 training images, taken through a DataLoader like a training loop does
local train = data.fashion_mnist { split = 'train' }
print(('fashion-mnist: %d training images %s, pixels in [%g, %g]'):format(#train,
  table.concat(train.x:shape(), ' x '), train.x:min():item(), train.x:max():item()))
local loader = data.DataLoader(train, { batch_size = 64, shuffle = true })
local x, y = loader:iter()()
local names = {}
for i = 1, 8 do names[i] = train.classes[math.tointeger(y[i])] end
print('first row: ' .. table.concat(names, ', '))
print(image.save_grid(x, out .. '/fashion_grid.png', { nrow = 8, padding = 2, scale = 3 }))

local ok, mnist = pcall(data.mnist, { split = 'train' })
if ok then
  local first = data.DataLoader(mnist, { batch_size = 64 }):iter()()
  print(image.save_grid(first, out .. '/mnist_grid.png', { nrow = 8, scale = 3 }))
else
  print('mnist: skipped (' .. tostring(mnist):gsub('^.-mnist: ', '') .. ')')
end

local points, mode, centers = data.ring(2500)
print(plot.scatter(points, out .. '/ring.png', { labels = mode, centers = centers, equal = true,
  names = { 'mode 1', 'mode 2', 'mode 3', 'mode 4', 'mode 5', 'mode 6', 'mode 7', 'mode 8' },
  title = '8 Gaussians on a ring (radius 2, std 0.02), 2500 samples', xlabel = 'x', ylabel = 'y' }))

points, mode, centers = data.grid(2500)
print(plot.scatter(points, out .. '/grid.png', { centers = centers, equal = true,
  title = '25 Gaussians on a 5 x 5 grid (spacing 2, std 0.02), 2500 samples', xlabel = 'x', ylabel = 'y' }))

local moons, which = data.moons(1000, { noise = 0.08 })
print(plot.scatter(moons, out .. '/moons.png', { labels = which, names = { 'upper', 'lower' },
  equal = true, title = 'two moons (noise 0.08)', xlabel = 'x', ylabel = 'y' }))
