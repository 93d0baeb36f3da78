-- autoregressive.lua — the autoregressive image family: PixelCNN (van den Oord et al.
-- 2016, "Pixel Recurrent Neural Networks") and Gated PixelCNN ("Conditional Image
-- Generation with PixelCNN Decoders"), their per-pixel likelihood heads, the exact
-- negative log-likelihood, and pixel-by-pixel sampling two ways:
--
--   naive   the whole network on the whole image for every pixel (H W passes)
--   fast    row by row with cached activations: the output at row r depends on the
--           input's rows <= r only, so every layer keeps the rows it has seen and
--           recomputes only row r; Gated PixelCNN's vertical stack runs once per
--           finished row, its horizontal stack (1-row kernels) once per pixel
--
-- Both draw the same random numbers in the same order, so for a seed they give the
-- same pixels (the row pass computes the same products as the full one).
--
-- Images are [N x 1 x H x W]. Heads (`likelihood`):
--   bernoulli     binary pixels {0, 1}; one logit per pixel; the net reads x as is
--   categorical   8-bit pixels 0..255; 256 logits per pixel ([N x 256 x H x W]);
--                 the net reads 2 v / 255 - 1
--   logistic_mixture  8-bit pixels; PixelCNN++'s discretized mixture of `nr_mix`
--                 logistics ([N x 3 nr_mix x H x W]); the net reads 2 v / 255 - 1
-- Pixel values travel as the net reads them ("input space"): {0, 1} or [-1, 1].
local ember = require 'ember'
local nn = require 'ember.nn'
local losses = require 'ember.losses'

local M = {}

local LN2 = math.log(2)

local function typename(v)
  if ember.is_tensor(v) then return 'tensor' end
  return type(v)
end

local function check_positive_int(fn, name, v)
  if math.type(v) ~= 'integer' or v < 1 then
    error(('%s: %s must be a positive integer, got %s'):format(fn, name, tostring(v)), 3)
  end
  return v
end

local heads = { bernoulli = true, categorical = true, logistic_mixture = true }

--- M.head_channels(likelihood, nr_mix) -> output channels per image channel.
function M.head_channels(likelihood, nr_mix)
  if likelihood == 'bernoulli' then return 1 end
  if likelihood == 'categorical' then return 256 end
  if likelihood == 'logistic_mixture' then return 3 * (nr_mix or 5) end
  error(("autoregressive.head_channels: likelihood must be 'bernoulli', 'categorical' or 'logistic_mixture', got %s")
    :format(tostring(likelihood)), 2)
end

--- M.gate(x) -> tanh(a) * sigmoid(b) for x = [a, b] split in two along the channels
--- (dim 2): the gated activation unit, [N x 2C x ...] -> [N x C x ...] (one fused op,
--- ember.gated_tanh).
function M.gate(x)
  if not ember.is_tensor(x) then error(('gate: bad argument #1 (expected a tensor, got %s)'):format(typename(x)), 2) end
  return ember.gated_tanh(x)
end

--- M.shift_down(x) -> x moved one row down, a zero row on top ([N x C x H x W]).
function M.shift_down(x)
  local n, c, h, w = table.unpack(x:size())
  if h == 1 then return ember.zeros(n, c, 1, w) end
  return ember.cat({ ember.zeros(n, c, 1, w), x:narrow(3, 1, h - 1) }, 3)
end

-- ---- what the models share --------------------------------------------------------------

-- The options every model reads, checked (fn names the model in messages): sets
-- self.likelihood and self.nr_mix, returns channels, first_kernel, kernel, hidden.
local function common_options(self, fn, opts, default_channels)
  self.likelihood = opts.likelihood or 'bernoulli'
  if not heads[self.likelihood] then
    error(("%s: likelihood must be 'bernoulli', 'categorical' or 'logistic_mixture', got %s"):format(fn, tostring(self.likelihood)), 3)
  end
  self.nr_mix = check_positive_int(fn, 'nr_mix', opts.nr_mix or 5)
  return check_positive_int(fn, 'channels', opts.channels or default_channels),
    check_positive_int(fn, 'first_kernel', opts.first_kernel or 7),
    check_positive_int(fn, 'kernel', opts.kernel or 3),
    check_positive_int(fn, 'hidden', opts.hidden or 64)
end

-- The output layers: relu, 1x1 (hidden), relu, 1x1 (the head's channels).
local function add_head(self, ch, hidden)
  self.out1 = nn.Conv2d(ch, hidden, 1)
  self.out2 = nn.Conv2d(hidden, M.head_channels(self.likelihood, self.nr_mix), 1)
end

local function head(self, h) return self.out2(self.out1(h:relu()):relu()) end

-- ---- row-by-row evaluation of a convolution --------------------------------------------

-- The output row r [N x O x 1 x W] of a stride-1 convolution m (Conv2d or MaskedConv2d,
-- "same" padding) whose input arrives one row at a time: x_row [N x C x 1 x W] is kept in
-- a per-layer cache of the rows seen (zero rows above the image), and the kernel runs on
-- the rows r - pad .. r - pad + span - 1 of it. Rows below r are never read by a causal
-- mask (they are the zero rows the cache starts with, or older values of them).
local function row_conv(cache, m, x_row, r)
  local o = m.options
  local kh = m.kernel_size
  kh = type(kh) == 'table' and kh[1] or kh
  local pad = type(o.padding) == 'table' and o.padding or { o.padding, o.padding }
  local dil = type(o.dilation) == 'table' and o.dilation or { o.dilation, o.dilation }
  if kh == 1 and pad[1] == 0 then
    return ember.conv2d(x_row, m.weight, m.bias, o)
  end
  if not o.mask then -- an unmasked kernel taller than one row would read rows not seen yet
    error(('row sampler: %s with a %d-row kernel has no causal mask'):format(m:class_name(), kh), 0)
  end
  local span = (kh - 1) * dil[1] + 1
  local c = cache[m]
  if not c then
    local n, ch, _, w = table.unpack(x_row:size())
    c = ember.zeros(n, ch, cache.height + span, w)
    cache[m] = c
  end
  c:narrow(3, r + pad[1] + 1, 1):copy_(x_row)
  return ember.conv2d(c:narrow(3, r + 1, span), m.weight, m.bias,
    { padding = { 0, pad[2] }, dilation = o.dilation, mask = o.mask, mask_groups = o.mask_groups })
end

-- ---- PixelCNN -----------------------------------------------------------------------------

local PixelCNN = nn.Module:extend('PixelCNN')
M.PixelCNN = PixelCNN

--- PixelCNN{channels=64, blocks=6, first_kernel=7, kernel=3, hidden=64,
---          likelihood='bernoulli', nr_mix=5}: a mask-A first_kernel conv, `blocks`
--- residual blocks h + conv_B(relu(h)), then relu, 1x1 (hidden), relu, 1x1 (the head).
--- The defaults are benchmark B5 of DESIGN.md.
function PixelCNN:init(opts)
  opts = opts or {}
  local ch, k1, k, hidden = common_options(self, 'PixelCNN', opts, 64)
  local blocks = opts.blocks or 6
  if math.type(blocks) ~= 'integer' or blocks < 0 then error('PixelCNN: blocks must be an integer >= 0, got ' .. tostring(blocks), 2) end
  self.first = nn.MaskedConv2d(1, ch, k1, { mask = 'A' })
  self.blocks = nn.Sequential()
  for _ = 1, blocks do self.blocks:add(nn.MaskedConv2d(ch, ch, k, { mask = 'B' })) end
  add_head(self, ch, hidden)
end

-- the layers after the first conv, for a whole image or one row (conv(m, x) runs a
-- masked conv; the 1x1 head needs no rows but its own)
local function pixelcnn_body(self, h, conv)
  for i = 1, #self.blocks do h = h + conv(self.blocks[i], h:relu()) end
  return head(self, h)
end

--- model:forward(x) -> the head's parameters [N x K x H x W] for images x [N x 1 x H x W]
--- in input space.
function PixelCNN:forward(x)
  return pixelcnn_body(self, self.first(x), function(m, t) return m(t) end)
end

--- model:row_sampler(n, H, W) -> an object whose :row(x, r) gives the head's output
--- row r [N x K x 1 x W] from the rows <= r of x (row r as far as it is known), and whose
--- :finish_row(x, r) takes row r once it is complete.
function PixelCNN:row_sampler(n, height, width)
  local cache = { height = height }
  local model = self
  local function row(_, x, r)
    local x_row = x:narrow(3, r + 1, 1)
    local conv = function(m, t) return row_conv(cache, m, t, r) end
    return pixelcnn_body(model, conv(model.first, x_row), conv)
  end
  return { row = row, finish_row = row }
end

-- ---- Gated PixelCNN -----------------------------------------------------------------------

local GatedPixelCNN = nn.Module:extend('GatedPixelCNN')
M.GatedPixelCNN = GatedPixelCNN

--- GatedPixelCNN{channels=64, layers=8, first_kernel=7, kernel=3, hidden=64,
---               classes=0, likelihood='bernoulli', nr_mix=5}:
--- a vertical stack (k x k convs over the rows up to the current one, mask V) and a
--- horizontal stack (1 x k convs over the current row, mask A first, then B) joined by
--- the vertical stack's output shifted down one row, so there is no blind spot; gated
--- units tanh(a) sigmoid(b); residual 1x1 connections in the horizontal stack after the
--- first layer; with classes > 0 a learned per-class bias before every gate (class
--- conditioning). Then relu, 1x1 (hidden), relu, 1x1 (the head) on the horizontal stack.
function GatedPixelCNN:init(opts)
  opts = opts or {}
  local fn = 'GatedPixelCNN'
  local ch, k1, k, hidden = common_options(self, fn, opts, 64)
  local layers = check_positive_int(fn, 'layers', opts.layers or 8)
  local classes = opts.classes or 0
  if math.type(classes) ~= 'integer' or classes < 0 then error(fn .. ': classes must be an integer >= 0, got ' .. tostring(classes), 2) end
  self.classes = classes
  self.vconv, self.hconv, self.v2h, self.hout = nn.Sequential(), nn.Sequential(), nn.Sequential(), nn.Sequential()
  if classes > 0 then self.vcond, self.hcond = nn.Sequential(), nn.Sequential() end
  for l = 1, layers do
    local cin, kk = l == 1 and 1 or ch, l == 1 and k1 or k
    self.vconv:add(nn.MaskedConv2d(cin, 2 * ch, kk, { mask = 'V' }))
    self.hconv:add(nn.MaskedConv2d(cin, 2 * ch, { 1, kk }, { mask = l == 1 and 'A' or 'B' }))
    self.v2h:add(nn.Conv2d(2 * ch, 2 * ch, 1))
    self.hout:add(nn.Conv2d(ch, ch, 1))
    if classes > 0 then
      local ev, eh = nn.Embedding(classes, 2 * ch), nn.Embedding(classes, 2 * ch)
      ember.no_grad(function() ev.weight:mul_(0.1); eh.weight:mul_(0.1) end)
      self.vcond:add(ev)
      self.hcond:add(eh)
    end
  end
  add_head(self, ch, hidden)
end

-- the per-class biases of layer l for labels y [N] (1-based), as [N x 2C x 1 x 1] each
local function class_bias(self, l, y)
  if self.classes == 0 then return nil, nil end
  if y == nil then error('GatedPixelCNN: this model is class-conditional: give the labels y', 3) end
  local n = y:size(1)
  return self.vcond[l](y):view(n, -1, 1, 1), self.hcond[l](y):view(n, -1, 1, 1)
end

-- one horizontal-stack layer: its pre-activation from the row conv and the shifted
-- vertical pre-activation, gate, residual
local function horizontal(self, l, h, hconv_out, v_shifted, hb)
  local pre = hconv_out + self.v2h[l](v_shifted)
  if hb then pre = pre + hb end
  local out = self.hout[l](M.gate(pre))
  return l == 1 and out or h + out
end

--- model:forward(x [, y]) -> the head's parameters [N x K x H x W] for images x
--- [N x 1 x H x W] in input space (labels y [N], 1-based, for a conditional model).
function GatedPixelCNN:forward(x, y)
  local v, h = x, x
  for l = 1, #self.vconv do
    local vb, hb = class_bias(self, l, y)
    local vpre = self.vconv[l](v)
    h = horizontal(self, l, h, self.hconv[l](h), M.shift_down(vpre), hb)
    if vb then vpre = vpre + vb end
    v = M.gate(vpre)
  end
  return head(self, h)
end

--- model:row_sampler(n, H, W [, y]) -> as PixelCNN's: :row(x, r) runs the horizontal
--- stack on row r (the vertical stack's rows < r are cached), :finish_row(x, r) runs the
--- vertical stack on the completed row r.
function GatedPixelCNN:row_sampler(n, height, width, y)
  local cache = { height = height }
  local model, layers = self, #self.vconv
  local vprev = {} -- per layer: the vertical pre-activation of the row above [N x 2C x 1 x W]
  local biases = {}
  for l = 1, layers do
    vprev[l] = ember.zeros(n, self.vconv[l].out_channels, 1, width)
    biases[l] = { class_bias(self, l, y) }
  end
  local function row(_, x, r)
    local h = x:narrow(3, r + 1, 1)
    for l = 1, layers do
      h = horizontal(model, l, h, row_conv(cache, model.hconv[l], h, r), vprev[l], biases[l][2])
    end
    return head(model, h)
  end
  local function finish_row(_, x, r)
    local v = x:narrow(3, r + 1, 1)
    for l = 1, layers do
      local vpre = row_conv(cache, model.vconv[l], v, r)
      vprev[l] = vpre
      if biases[l][1] then vpre = vpre + biases[l][1] end
      v = M.gate(vpre)
    end
  end
  return { row = row, finish_row = finish_row }
end

-- ---- PixelRNN: Row LSTM -------------------------------------------------------------------

local RowLSTM = nn.Module:extend('RowLSTM')
M.RowLSTM = RowLSTM

--- RowLSTM{channels=32, layers=2, first_kernel=7, kernel=3, hidden=64, likelihood='bernoulli',
---         nr_mix=5}: PixelRNN's Row LSTM (van den Oord et al. 2016). A mask-A conv, then
--- `layers` Row LSTM layers, each an LSTM run down the rows: its gates at row r are the
--- input-to-state conv (1 x kernel, mask B, computed for the whole image at once) plus the
--- state-to-state conv (1 x kernel) of the hidden state of row r-1, stepped by the fused
--- cell (ember.lstm_pointwise) for every pixel of the row at once; a residual connection
--- around each layer; relu, 1x1 (hidden), relu, 1x1 (the head). Each row sees a triangle
--- of the rows above and, through the masks, the pixels to its left.
function RowLSTM:init(opts)
  opts = opts or {}
  local fn = 'RowLSTM'
  local ch, k1, k, hidden = common_options(self, fn, opts, 32)
  local layers = check_positive_int(fn, 'layers', opts.layers or 2)
  if k % 2 == 0 then error(fn .. ': kernel must be odd, got ' .. k, 2) end
  self.channels = ch
  self.first = nn.MaskedConv2d(1, ch, k1, { mask = 'A' })
  self.is, self.ss = nn.Sequential(), nn.Sequential()
  for _ = 1, layers do
    self.is:add(nn.MaskedConv2d(ch, 4 * ch, { 1, k }, { mask = 'B' }))
    self.ss:add(nn.Conv2d(ch, 4 * ch, { 1, k }, { padding = { 0, k // 2 }, bias = false }))
  end
  add_head(self, ch, hidden)
end

-- One LSTM step over a row: gates [N x 4C x 1 x W] and c [N W x C] -> h [N x C x 1 x W], c.
local function row_cell(gates, c)
  local n, g4, _, w = table.unpack(gates:size())
  local hc = ember.lstm_pointwise(gates:permute(1, 4, 2, 3):reshape(n * w, g4), c)
  local h = hc:select(1, 1):reshape(n, w, g4 // 4, 1):permute(1, 3, 4, 2)
  return h, hc:select(1, 2)
end

function RowLSTM:forward(x)
  local n, _, height, width = table.unpack(x:size())
  local ch = self.channels
  local inp = self.first(x)
  for l = 1, #self.is do
    local gates = self.is[l](inp) -- [N x 4C x H x W], every row at once
    local h, c = ember.zeros(n, ch, 1, width), ember.zeros(n * width, ch)
    local rows = {}
    for r = 1, height do
      h, c = row_cell(gates:narrow(3, r, 1) + self.ss[l](h), c)
      rows[r] = h
    end
    inp = inp + ember.cat(rows, 3)
  end
  return head(self, inp)
end

--- model:row_sampler(n, H, W) -> as PixelCNN's: the LSTM states of the finished rows are
--- kept, so :row(x, r) steps every layer once on row r, and :finish_row commits its states.
function RowLSTM:row_sampler(n, height, width)
  local cache = { height = height }
  local model, ch = self, self.channels
  local states = {}
  for l = 1, #self.is do states[l] = { h = ember.zeros(n, ch, 1, width), c = ember.zeros(n * width, ch) } end
  local function step(x, r, commit)
    local inp = row_conv(cache, model.first, x:narrow(3, r + 1, 1), r)
    for l = 1, #model.is do
      local st = states[l]
      local h, c = row_cell(model.is[l](inp) + model.ss[l](st.h), st.c)
      if commit then st.h, st.c = h, c end
      inp = inp + h
    end
    return head(model, inp)
  end
  return {
    row = function(_, x, r) return step(x, r, false) end,
    finish_row = function(_, x, r) step(x, r, true) end,
  }
end

-- ---- PixelRNN: Diagonal BiLSTM -----------------------------------------------------------

local DiagonalBiLSTM = nn.Module:extend('DiagonalBiLSTM')
M.DiagonalBiLSTM = DiagonalBiLSTM

--- DiagonalBiLSTM{channels=32, layers=2, first_kernel=7, hidden=64, likelihood='bernoulli',
---                nr_mix=5}: PixelRNN's Diagonal BiLSTM (van den Oord et al. 2016). A
--- mask-A conv, then `layers` layers of two diagonal LSTMs: each skews its input (row r
--- shifted right by r, so a diagonal of the image becomes a column) and runs the fused
--- cell along the columns, its gates the input-to-state 1x1 conv (mask B) plus a [2 x 1]
--- state-to-state conv of the previous column (the state of the pixel to the left and of
--- the one above), then unskews. The second LSTM scans the mirrored image (right to left)
--- and its output is shifted down one row, so that a pixel sees the whole rows above it;
--- a residual connection around each layer; relu, 1x1 (hidden), relu, 1x1 (the head).
--- Its row sampler steps one cell per layer per pixel (see row_sampler).
function DiagonalBiLSTM:init(opts)
  opts = opts or {}
  local fn = 'DiagonalBiLSTM'
  local ch, k1, _, hidden = common_options(self, fn, opts, 32)
  local layers = check_positive_int(fn, 'layers', opts.layers or 2)
  self.channels = ch
  self.first = nn.MaskedConv2d(1, ch, k1, { mask = 'A' })
  self.is, self.ss = nn.Sequential(), nn.Sequential() -- per layer: left-to-right, right-to-left
  for _ = 1, 2 * layers do
    self.is:add(nn.MaskedConv2d(ch, 4 * ch, 1, { mask = 'B' }))
    self.ss:add(nn.Conv2d(ch, 4 * ch, { 2, 1 }, { padding = { 1, 0 }, bias = false }))
  end
  add_head(self, ch, hidden)
end

-- skew [N x C x H x W] -> [N x C x H x (W + H - 1)]: out[r][r + c] = x[r][c], zeros
-- elsewhere (rows padded to W + H and read back with a stride one shorter)
local function skew(x)
  local n, c, h, w = table.unpack(x:size())
  local padded = ember.cat({ x, ember.zeros(n, c, h, h) }, 4):reshape(n, c, h * (w + h))
  return padded:narrow(3, 1, h * (w + h - 1)):reshape(n, c, h, w + h - 1)
end

-- unskew [N x C x H x L] -> [N x C x H x W], W = L - H + 1: out[r][c] = s[r][r + c]
-- (rows read with a stride one longer)
local function unskew(s)
  local n, c, h, l = table.unpack(s:size())
  local flat = ember.cat({ s:reshape(n, c, h * l), ember.zeros(n, c, h) }, 3)
  return flat:reshape(n, c, h, l + 1):narrow(4, 1, l - h + 1)
end

-- One cell of a diagonal LSTM at one pixel: gates gin [N x 4C x 1 x 1] (its input-to-state
-- conv there) plus the state-to-state conv of the states above and to the left [N x C x 1 x
-- 1] (row 2 of its padded output: the taps of rows r-1 and r, as in diagonal_lstm's column
-- conv), c_left [N x C] -> h [N x C x 1 x 1], c [N x C].
local function diagonal_cell(ss, gin, h_above, h_left, c_left)
  return row_cell(gin + ss(ember.cat({ h_above, h_left }, 3)):narrow(3, 2, 1), c_left)
end

-- One diagonal LSTM over x [N x C x H x W] (is, ss: its convolutions) -> h [N x C x H x W].
local function diagonal_lstm(x, is, ss, ch)
  local n, _, height = table.unpack(x:size())
  local gates = skew(is(x)) -- [N x 4C x H x L]
  local h, c = ember.zeros(n, ch, height, 1), ember.zeros(n * height, ch)
  local cols = {}
  for col = 1, gates:size(4) do
    local g = gates:narrow(4, col, 1) + ss(h):narrow(3, 1, height) -- rows r-1, r of the last column
    h, c = row_cell(g:transpose(3, 4), c) -- the column as a row: cells (n, r), as row_cell orders them
    h = h:transpose(3, 4)
    cols[col] = h
  end
  return unskew(ember.cat(cols, 4))
end

local function mirror(x)
  local w = x:size(4)
  local idx = {}
  for i = 1, w do idx[i] = w + 1 - i end
  return x:index_select(4, idx)
end

function DiagonalBiLSTM:forward(x)
  local inp = self.first(x)
  for l = 1, #self.is // 2 do
    local left = diagonal_lstm(inp, self.is[2 * l - 1], self.ss[2 * l - 1], self.channels)
    local right = mirror(diagonal_lstm(mirror(inp), self.is[2 * l], self.ss[2 * l], self.channels))
    inp = inp + left + M.shift_down(right)
  end
  return head(self, inp)
end

--- model:row_sampler(n, H, W) -> :pixel(x, r, c) steps each layer's left-to-right cell at
--- (r, c) alone: the states above (row r-1, kept by :finish_row) and to the left (the
--- previous call's, which the pixel just drawn cannot change: a state at (r, c) sees the
--- pixels before (r, c) only) with the right-to-left LSTM's output of row r-1;
--- :finish_row(x, r) runs both LSTMs along the finished row r and keeps their states.
function DiagonalBiLSTM:row_sampler(n, height, width)
  local cache = { height = height }
  local model, ch, layers = self, self.channels, #self.is // 2
  local zero_h, zero_c = ember.zeros(n, ch, 1, 1), ember.zeros(n, ch)
  local left_above, right_above, right_out, running = {}, {}, {}, {}
  for l = 1, layers do
    left_above[l], right_above[l] = {}, {}
    for j = 1, width do left_above[l][j], right_above[l][j] = zero_h, zero_h end
    right_out[l] = ember.zeros(n, ch, 1, width)
  end
  -- one LSTM along a row: gates [N x 4C x 1 x W], the row above's states -> the row's states
  local function along(ss, gates, above)
    local hs, h, c = {}, zero_h, zero_c
    for j = 1, width do
      h, c = diagonal_cell(ss, gates:narrow(4, j, 1), above[j], h, c)
      hs[j] = h
    end
    return hs
  end
  local function finish_row(_, x, r)
    local inp = row_conv(cache, model.first, x:narrow(3, r + 1, 1), r)
    for l = 1, layers do
      local hs = along(model.ss[2 * l - 1], model.is[2 * l - 1](inp), left_above[l])
      local rs = along(model.ss[2 * l], model.is[2 * l](mirror(inp)), right_above[l])
      local next_inp = inp + ember.cat(hs, 4) + right_out[l]
      left_above[l], right_above[l], right_out[l] = hs, rs, mirror(ember.cat(rs, 4))
      inp = next_inp
    end
  end
  local function pixel(_, x, r, c)
    if c == 0 then for l = 1, layers do running[l] = { zero_h, zero_c } end end
    local inp = row_conv(cache, model.first, x:narrow(3, r + 1, 1), r):narrow(4, c + 1, 1)
    for l = 1, layers do
      local h, cc = diagonal_cell(model.ss[2 * l - 1], model.is[2 * l - 1](inp), left_above[l][c + 1],
                                  running[l][1], running[l][2])
      running[l] = { h, cc }
      inp = inp + h + right_out[l]:narrow(4, c + 1, 1)
    end
    return head(model, inp)
  end
  return { pixel = pixel, finish_row = finish_row }
end

-- ---- PixelCNN++ ----------------------------------------------------------------------------
-- Salimans et al. 2017: two streams, u (sees the rows above) and ul (the rows above and
-- the pixels to the left), gated residual blocks on concat_elu, down-sampling by stride-2
-- shifted convolutions and up-sampling by their transposes, with short-cut connections
-- from every down-pass block to its up-pass twin; the discretized logistic mixture head.

local function concat_elu(x) return ember.cat({ x, -x }, 2):elu() end

-- A down-shifted conv: output (r, c) sees rows r-1, r and columns c-1..c+1 (a 3x3
-- kernel under mask V: 6 taps), stride 1 or 2.
local function down_conv(cin, cout, stride)
  return nn.MaskedConv2d(cin, cout, 3, { mask = 'V', stride = stride or 1 })
end

-- A down-right-shifted conv: output (r, c) sees rows r-1, r and columns c-1, c (a 2x2
-- kernel padded by one on every side, then the first rows / columns kept).
local DownRightConv = nn.Module:extend('DownRightConv')
function DownRightConv:init(cin, cout, stride)
  self.stride = stride or 1
  self.conv = nn.Conv2d(cin, cout, 2, { padding = 1, stride = self.stride })
end
function DownRightConv:forward(x)
  local h, w = x:size(3) // self.stride, x:size(4) // self.stride
  return self.conv(x):narrow(3, 1, h):narrow(4, 1, w)
end

-- The up-sampling transposes (stride 2): a [2 x 3] transposed conv cropped to columns
-- 1 .. 2W (down-shifted) and a [2 x 2] one (down-right-shifted): out [N x O x 2H x 2W].
local DownDeconv = nn.Module:extend('DownDeconv')
function DownDeconv:init(cin, cout) self.conv = nn.ConvTranspose2d(cin, cout, { 2, 3 }, { stride = 2 }) end
function DownDeconv:forward(x) return self.conv(x):narrow(4, 2, 2 * x:size(4)) end
local DownRightDeconv = nn.Module:extend('DownRightDeconv')
function DownRightDeconv:init(cin, cout) self.conv = nn.ConvTranspose2d(cin, cout, 2, { stride = 2 }) end
function DownRightDeconv:forward(x) return self.conv(x) end

local function shift_right(x)
  local n, c, h, w = table.unpack(x:size())
  if w == 1 then return ember.zeros(n, c, h, 1) end
  return ember.cat({ ember.zeros(n, c, h, 1), x:narrow(4, 1, w - 1) }, 4)
end

-- gated_resnet: x + a * sigmoid(b) with [a, b] = conv(concat_elu(conv(concat_elu(x)) +
-- nin(concat_elu(skip)))); `make_conv(cin, cout)` makes the stream's shifted conv.
local GatedResnet = nn.Module:extend('GatedResnet')
function GatedResnet:init(ch, make_conv, skip_channels, dropout)
  self.conv1 = make_conv(2 * ch, ch)
  if skip_channels > 0 then self.nin = nn.Conv2d(2 * skip_channels, ch, 1) end
  self.conv2 = make_conv(2 * ch, 2 * ch)
  self.p = dropout or 0
end
function GatedResnet:forward(x, skip)
  local c = self.conv1(concat_elu(x))
  if skip then c = c + self.nin(concat_elu(skip)) end
  c = concat_elu(c)
  if self.p > 0 then c = ember.dropout(c, self.p, self.training) end
  c = self.conv2(c)
  local half = c:size(2) // 2
  return x + c:narrow(2, 1, half) * c:narrow(2, half + 1, half):sigmoid()
end

local PixelCNNpp = nn.Module:extend('PixelCNNpp')
M.PixelCNNpp = PixelCNNpp

--- PixelCNNpp{channels=32, resnets=1, stages=3, nr_mix=5, dropout=0}: `stages`
--- resolutions (28, 14, 7 for MNIST-size images; H and W divisible by 2^(stages-1)), each
--- with `resnets` gated residual blocks per stream on the way down and as many on the way
--- up (one more at every up-sampled resolution: it takes the down-sampling's output as its
--- short-cut, as in the paper's code), the
--- discretized logistic mixture head (likelihood 'logistic_mixture').
function PixelCNNpp:init(opts)
  opts = opts or {}
  local fn = 'PixelCNNpp'
  local ch = check_positive_int(fn, 'channels', opts.channels or 32)
  local R = check_positive_int(fn, 'resnets', opts.resnets or 1)
  local S = check_positive_int(fn, 'stages', opts.stages or 3)
  self.nr_mix = check_positive_int(fn, 'nr_mix', opts.nr_mix or 5)
  self.likelihood = 'logistic_mixture'
  self.stages, self.resnets = S, R
  local p = opts.dropout or 0
  local function dconv(a, b) return down_conv(a, b) end
  local function drconv(a, b) return DownRightConv(a, b) end
  self.u_init = nn.MaskedConv2d(1, ch, { 3, 3 }, { mask = 'V' })   -- shifted down after
  self.ul_init_u = nn.MaskedConv2d(1, ch, { 3, 3 }, { mask = 'V' }) -- shifted down after
  self.ul_init_l = DownRightConv(1, ch)                            -- shifted right after (col c-1 at most)
  self.down_u, self.down_ul = nn.Sequential(), nn.Sequential()
  self.up_u, self.up_ul = nn.Sequential(), nn.Sequential()
  self.downsample_u, self.downsample_ul = nn.Sequential(), nn.Sequential()
  self.upsample_u, self.upsample_ul = nn.Sequential(), nn.Sequential()
  for s = 1, S do
    for _ = 1, R do
      self.down_u:add(GatedResnet(ch, dconv, 0, p))
      self.down_ul:add(GatedResnet(ch, drconv, ch, p))
    end
    if s < S then
      self.downsample_u:add(down_conv(ch, ch, 2))
      self.downsample_ul:add(DownRightConv(ch, ch, 2))
    end
  end
  for s = 1, S do
    for _ = 1, s == 1 and R or R + 1 do
      self.up_u:add(GatedResnet(ch, dconv, ch, p))
      self.up_ul:add(GatedResnet(ch, drconv, 2 * ch, p))
    end
    if s < S then
      self.upsample_u:add(DownDeconv(ch, ch))
      self.upsample_ul:add(DownRightDeconv(ch, ch))
    end
  end
  self.out = nn.Conv2d(ch, M.head_channels('logistic_mixture', self.nr_mix), 1)
end

--- model:forward(x) -> mixture parameters [N x 3 nr_mix x H x W] for x [N x 1 x H x W] in [-1, 1].
function PixelCNNpp:forward(x)
  local S, R = self.stages, self.resnets
  local div = 2 ^ (S - 1)
  if x:size(3) % div ~= 0 or x:size(4) % div ~= 0 then
    error(('PixelCNNpp: image size %d x %d must be divisible by %d (stages = %d)'):format(x:size(3), x:size(4), div, S), 2)
  end
  local u = M.shift_down(self.u_init(x))
  local ul = M.shift_down(self.ul_init_u(x)) + shift_right(self.ul_init_l(x))
  local us, uls = { u }, { ul }
  local k = 0
  for s = 1, S do
    for _ = 1, R do
      k = k + 1
      u = self.down_u[k](u)
      ul = self.down_ul[k](ul, u)
      us[#us + 1], uls[#uls + 1] = u, ul
    end
    if s < S then
      u, ul = self.downsample_u[s](u), self.downsample_ul[s](ul)
      us[#us + 1], uls[#uls + 1] = u, ul
    end
  end
  -- up pass: every block takes the matching down-pass output as its short-cut
  u, ul = table.remove(us), table.remove(uls)
  k = 0
  for s = 1, S do
    for _ = 1, s == 1 and R or R + 1 do
      k = k + 1
      u = self.up_u[k](u, table.remove(us))
      ul = self.up_ul[k](ul, ember.cat({ u, table.remove(uls) }, 2))
    end
    if s < S then u, ul = self.upsample_u[s](u), self.upsample_ul[s](ul) end
  end
  return self.out(ul:elu())
end

-- ---- likelihood ------------------------------------------------------------------------------

--- M.to_input(images, likelihood) -> images [N x 1 x H x W] in [0, 1] as the net reads
--- them: binary pixels as they are (bernoulli), 8-bit ones as 2 round(255 x) / 255 - 1.
function M.to_input(x, likelihood)
  if likelihood == 'bernoulli' then return x end
  return (x * 255):round() * (2 / 255) - 1
end

--- M.to_image(x, likelihood) -> input-space pixels back to [0, 1].
function M.to_image(x, likelihood)
  if likelihood == 'bernoulli' then return x end
  return (x + 1) * 0.5
end

--- M.nll(model, x [, y]) -> the exact negative log-likelihood of every image, nats [N]
--- (x in input space).
function M.nll(model, x, y)
  local out = model:forward(x, y)
  local n = x:size(1)
  local lik = model.likelihood
  if lik == 'bernoulli' then
    return losses.bce_with_logits(out, x, { reduction = 'none' }):reshape(n, -1):sum(2)
  elseif lik == 'categorical' then
    local k = out:size(2)
    local logits = out:permute(1, 3, 4, 2):reshape(-1, k)
    local labels = ((x + 1) * 127.5):round():reshape(-1) + 1
    return losses.cross_entropy(logits, labels, { reduction = 'none' }):reshape(n, -1):sum(2)
  else
    return losses.discretized_logistic_mixture(out, x, { nr_mix = model.nr_mix, reduction = 'none' }):reshape(n, -1):sum(2)
  end
end

--- M.bits_per_dim(nats, dims) -> nats per image as bits per dimension.
function M.bits_per_dim(nats, dims) return nats / (dims * LN2) end

-- One pixel's values [N] drawn from the head's output at that pixel, out [N x K].
local function draw(model, out)
  local lik = model.likelihood
  local n = out:size(1)
  if lik == 'bernoulli' then
    return ember.bernoulli(out:reshape(n):sigmoid())
  elseif lik == 'categorical' then
    -- Gumbel-max: argmax(logits - log(-log u)) is a draw from softmax(logits)
    local u = ember.rand(n, out:size(2)):clamp(1e-7, 1 - 1e-7)
    local k = (out - (-(u:log())):log()):argmax(2) -- 1..256
    return (k:view(n) - 1) * (2 / 255) - 1
  else
    local s = ember.sample_discretized_logistic_mixture(out:reshape(n, out:size(2), 1, 1),
      { nr_mix = model.nr_mix, channels = 1, quantize = true })
    return s:view(n)
  end
end

--- M.sample(model, n, opts) -> images [n x 1 x H x W] in input space, pixel by pixel in
--- raster order. opts: height=28, width=28, fast=true (row-cached; false: the whole net
--- per pixel), y (labels [n] for a conditional model), given (images [n x 1 x H x W]
--- whose rows < from_row are kept: completions), from_row (0-based first row sampled;
--- default 0). Runs without recording gradients; the model is put in eval mode. A model
--- without a row sampler (PixelCNNpp: its down/up-sampling mixes rows) is sampled naively.
--- A row sampler gives :finish_row(x, r) and either :row(x, r) (the head's output for row r)
--- or :pixel(x, r, c) (for pixel (r, c) alone, called for c = 0, 1, .. in turn).
function M.sample(model, n, opts)
  opts = opts or {}
  check_positive_int('autoregressive.sample', 'n', n)
  local H, W = opts.height or 28, opts.width or 28
  local from = opts.from_row or 0
  if math.type(from) ~= 'integer' or from < 0 or from >= H then
    error(('autoregressive.sample: from_row must be an integer in [0, %d), got %s'):format(H, tostring(from)), 2)
  end
  local y = opts.y
  return ember.no_grad(function()
    local was_training = model.training
    model:eval()
    local x = ember.zeros(n, 1, H, W)
    if opts.given then
      if not ember.is_tensor(opts.given) or opts.given:dim() ~= 4 or opts.given:size(1) ~= n then
        error(('autoregressive.sample: given must be a tensor [%d x 1 x %d x %d]'):format(n, H, W), 0)
      end
      if from > 0 then x:narrow(3, 1, from):copy_(opts.given:narrow(3, 1, from)) end
    end
    local sampler = opts.fast ~= false and model.row_sampler and model:row_sampler(n, H, W, y) or nil
    if sampler then for r = 0, from - 1 do sampler:finish_row(x, r) end end
    for r = from, H - 1 do
      for c = 0, W - 1 do
        local out
        if sampler then
          out = sampler.pixel and sampler:pixel(x, r, c) or sampler:row(x, r):narrow(4, c + 1, 1)
        else
          out = model:forward(x, y):narrow(3, r + 1, 1):narrow(4, c + 1, 1)
        end
        local v = draw(model, out:reshape(n, -1))
        x:narrow(3, r + 1, 1):narrow(4, c + 1, 1):copy_(v:view(n, 1, 1, 1))
      end
      if sampler then sampler:finish_row(x, r) end
    end
    if was_training then model:train() end
    return x
  end)
end

return M
