-- nn_spec.lua — the module system of ember.nn: parameter names and counts,
-- state dicts (round trip, strict and non-strict loading), train/eval,
-- Sequential (and its error naming the failing child), user-defined modules,
-- printing, nn.init, and every constructor's bad arguments by message.
local ember = require 'ember'
local nn = require 'ember.nn'

local function expect_error(fn, text)
  local ok, err = pcall(fn)
  assert.is_false(ok, 'expected an error containing: ' .. text)
  assert.truthy(tostring(err):find(text, 1, true),
    ('error "%s" does not contain "%s"'):format(tostring(err), text))
end

local function names_of(m, what)
  local out = {}
  for name in m[what or 'named_parameters'](m) do out[#out + 1] = name end
  return out
end

local function same_values(a, b)
  local d = (a - b):abs():max():item()
  return d == 0
end

local function shape_of(t) return table.concat(t:shape(), 'x') end

before_each(function() ember.manual_seed(1) end)

describe('nn modules', function()
  it('is reachable as ember.nn and require "ember.nn"', function()
    assert.are.equal(nn, ember.nn)
  end)

  it('names and counts parameters like PyTorch (dotted, children from 1)', function()
    local net = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 10))
    assert.are.same({ '1.weight', '1.bias', '3.weight', '3.bias' }, names_of(net))
    assert.are.equal(784 * 400 + 400 + 400 * 10 + 10, net:num_parameters())
    assert.are.equal(4, #net:parameters())
    assert.are.equal('400x784', shape_of(net[1].weight))
    local nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), nn.Flatten())
    assert.are.same({ '1.1.weight', '1.1.bias', '1.2.weight', '1.2.bias' }, names_of(nested))
    assert.are.same({ '1.2.running_mean', '1.2.running_var' }, names_of(nested, 'named_buffers'))
    assert.are.same({ '', '1', '1.1', '1.2', '2' }, names_of(nested, 'named_modules'))
    assert.are.equal(2, #nested:children())
    assert.are.equal(5, #nested:modules())
  end)

  it('counts a shared parameter once', function()
    local lin = nn.Linear(3, 3)
    local net = nn.Sequential(lin, nn.Tanh(), lin)
    assert.are.equal(2, #net:parameters())
    assert.are.equal(12, net:num_parameters())
  end)

  it('initialises like PyTorch, reproducibly from the shared generator', function()
    ember.manual_seed(5)
    local a = nn.Linear(50, 20)
    ember.manual_seed(5)
    local b = nn.Linear(50, 20)
    assert.is_true(same_values(a.weight, b.weight) and same_values(a.bias, b.bias))
    local bound = 1 / math.sqrt(50)
    assert.is_true(a.weight:abs():max():item() <= bound)
    assert.is_true(a.weight:abs():max():item() > 0.9 * bound)
    assert.is_true(a.bias:abs():max():item() <= bound)
    local c = nn.Conv2d(4, 8, 3)
    local cb = 1 / math.sqrt(4 * 9)
    assert.is_true(c.weight:abs():max():item() <= cb and c.weight:abs():max():item() > 0.8 * cb)
    local t = nn.ConvTranspose2d(8, 4, 4, { stride = 2 }) -- fan_in from dim 2: 4 * 16
    assert.is_true(t.weight:abs():max():item() <= 1 / 8 and t.bias:abs():max():item() <= 1 / 8)
    local bn = nn.BatchNorm1d(3)
    assert.is_true(same_values(bn.weight, ember.ones(3)) and same_values(bn.bias, ember.zeros(3)))
    assert.is_true(a.weight:needs_grad() and a.weight.is_leaf)
  end)

  it('round-trips a state dict, buffers included', function()
    local function make()
      return nn.Sequential(nn.Conv2d(1, 2, 3, { padding = 1 }), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    end
    local a, b = make(), make()
    a(ember.randn(4, 1, 4, 4)) -- moves a's running statistics
    local sd = a:state_dict()
    local keys = {}
    for k in pairs(sd) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.are.same({ '1.bias', '1.weight', '2.bias', '2.running_mean', '2.running_var', '2.weight',
      '5.bias', '5.weight' }, keys)
    assert.is_false(sd['1.weight']:needs_grad())
    local missing, unexpected = b:load_state_dict(sd)
    assert.are.same({}, missing)
    assert.are.same({}, unexpected)
    a:eval()
    b:eval()
    local x = ember.randn(2, 1, 4, 4)
    assert.is_true(same_values(a(x), b(x)))
    assert.is_true(same_values(a[2].running_var, b[2].running_var))
    -- the module's tensors keep their identity and their grad flag
    assert.is_true(b[1].weight:needs_grad())
  end)

  it('an optional buffer may be absent from the state dict and keeps its value', function()
    local Fitted = nn.Module:extend('FittedThing')
    function Fitted:init()
      self.lin = nn.Linear(2, 2)
      self:register_buffer('count', ember.zeros(1))
      self:register_buffer('fit', ember.full({3}, 7), {optional = true})
    end
    local a, b = Fitted(), Fitted()
    ember.no_grad(function() a.fit:fill_(1); a.count:fill_(5) end)
    local full = a:state_dict()
    assert.is_not_nil(full.fit) -- saved like any buffer
    b:load_state_dict(full)
    assert.are.same({1, 1, 1}, b.fit:totable())
    -- a state dict from before the buffer existed: loads strictly, the buffer unchanged
    local c = Fitted()
    local old = {}
    for k, v in pairs(full) do if k ~= 'fit' then old[k] = v end end
    local missing = c:load_state_dict(old)
    assert.are.same({}, missing)
    assert.are.same({7, 7, 7}, c.fit:totable())
    assert.are.same({5}, c.count:totable())
    -- required buffers are still required
    old.count = nil
    expect_error(function() Fitted():load_state_dict(old) end,
      'load_state_dict: missing keys: "count" (for FittedThing)')
    -- re-registering without the option makes it required again
    c:register_buffer('fit', ember.zeros(3))
    old.count = full.count
    expect_error(function() c:load_state_dict(old) end, 'load_state_dict: missing keys: "fit"')
    expect_error(function() c:register_buffer('x', ember.zeros(1), true) end,
      "register_buffer: bad argument #3 'opts' (expected a table like {optional = true}, got boolean)")
  end)

  it('reports missing, unexpected and mis-shaped keys', function()
    local net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    local sd = net:state_dict()
    sd['2.bias'] = nil
    sd['extra.weight'] = ember.zeros(1)
    expect_error(function() net:load_state_dict(sd) end,
      'load_state_dict: missing keys: "2.bias"; unexpected keys: "extra.weight" (for Sequential)')
    local before = net[1].weight:clone()
    sd['1.weight'] = ember.ones(2, 3)
    expect_error(function() net:load_state_dict(sd, false) end,
      'load_state_dict: size mismatch for "1.weight": the state dict has [2 x 3], the module [3 x 2]')
    assert.is_true(same_values(net[1].weight, before)) -- nothing copied
    sd['1.weight'] = ember.ones(3, 2)
    local missing, unexpected = net:load_state_dict(sd, false)
    assert.are.same({ '2.bias' }, missing)
    assert.are.same({ 'extra.weight' }, unexpected)
    assert.is_true(same_values(net[1].weight, ember.ones(3, 2)))
    sd['1.weight'] = 'weights'
    expect_error(function() net:load_state_dict(sd, false) end, 'load_state_dict: "1.weight" holds a string, expected a tensor')
    expect_error(function() net:load_state_dict(5) end,
      "load_state_dict: bad argument #1 'state_dict' (expected a table of tensors, got 5)")
  end)

  it('switches BatchNorm and Dropout between training and evaluation', function()
    local net = nn.Sequential(nn.BatchNorm1d(3), nn.Dropout(0.5))
    assert.is_true(net.training and net[1].training and net[2].training)
    local x = ember.randn(16, 3) * 2 + 1
    local rm0 = net[1].running_mean:clone()
    net(x)
    assert.is_false(same_values(net[1].running_mean, rm0))
    assert.is_true(net(x):eq(0):sum():item() > 0) -- dropout active
    assert.are.equal(net, net:eval())
    assert.is_false(net.training or net[1].training or net[2].training)
    local rm1 = net[1].running_mean:clone()
    local y1, y2 = net(x), net(x)
    assert.is_true(same_values(y1, y2)) -- deterministic in eval
    assert.is_true(same_values(net[1].running_mean, rm1))
    local expected = (x - net[1].running_mean) / (net[1].running_var + 1e-5):sqrt()
    assert.is_true((y1 - expected):abs():max():item() < 1e-5)
    net:train()
    assert.is_true(net[2].training)
  end)

  it('names the failing child of a Sequential', function()
    local net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(5, 2))
    expect_error(function() net(ember.randn(2, 4)) end,
      'Sequential[3] Linear: linear: input [2 x 3] does not fit weight [2 x 5]')
    local outer = nn.Sequential(nn.Identity(), net)
    expect_error(function() outer(ember.randn(2, 4)) end, 'Sequential[2] Sequential: Sequential[3] Linear: linear:')
    expect_error(function() nn.Sequential(nn.Conv2d(1, 1, 3))(ember.randn(2, 3, 3)) end,
      'Sequential[1] Conv2d: conv2d: input [2 x 3 x 3] must be 4-D [N x C x H x W]')
  end)

  it('lets users define modules that behave like the built-ins', function()
    local MyNet = nn.Module:extend('MyNet')
    function MyNet:init(opts)
      self.fc = nn.Linear(2, opts.hidden)
      self.scale = ember.ones(1):requires_grad()
      self.out = nn.Linear(opts.hidden, 1)
      self.drop = nn.Dropout(0.5)
      self.cache = ember.zeros(3) -- a plain tensor: not a parameter
      self.hidden = opts.hidden
    end
    function MyNet:forward(x) return self.out(self.drop(self.fc(x):relu())) * self.scale end
    local net = MyNet { hidden = 8 }
    assert.are.same({ 'fc.weight', 'fc.bias', 'scale', 'out.weight', 'out.bias' }, names_of(net))
    assert.are.equal(2 * 8 + 8 + 1 + 8 + 1, net:num_parameters())
    assert.is_true(net:is_a(MyNet) and net:is_a(nn.Module) and not net:is_a(nn.Linear))
    assert.are.equal('MyNet', net:class_name())
    -- in a Sequential, state dicts and train/eval like any module
    local seq = nn.Sequential(net, nn.Sigmoid())
    assert.are.same({ '1.fc.weight', '1.fc.bias', '1.scale', '1.out.weight', '1.out.bias' }, names_of(seq))
    seq:eval()
    assert.is_false(net.drop.training)
    local x = ember.randn(5, 2)
    local other = nn.Sequential(MyNet { hidden = 8 }, nn.Sigmoid()):eval()
    other:load_state_dict(seq:state_dict())
    assert.is_true(same_values(seq(x), other(x)))
    -- gradients reach every parameter
    seq:train()
    seq(x):sum():backward()
    for name, p in seq:named_parameters() do assert.is_not_nil(p.grad, name) end
    seq:zero_grad()
    for _, p in ipairs(seq:parameters()) do assert.is_nil(p.grad) end
    -- a subclass of a built-in
    local Scaled = nn.Linear:extend('Scaled')
    function Scaled:forward(x) return nn.Linear.forward(self, x) * 2 end
    local s = Scaled(3, 2)
    assert.are.same({ 'weight', 'bias' }, names_of(s))
    assert.is_true(s:is_a(nn.Linear))
    assert.is_true(same_values(s(ember.ones(1, 3)), ember.linear(ember.ones(1, 3), s.weight, s.bias) * 2))
    expect_error(function() nn.Module:extend('NoForward')()(ember.ones(1)) end,
      'NoForward: forward is not implemented')
  end)

  it('passes a Jacobian check for every parameterised layer', function()
    local cases = {
      { nn.Linear(3, 2), ember.randn(4, 3) },
      { nn.Conv2d(2, 3, 3, { stride = 2, padding = 1 }), ember.randn(2, 2, 5, 5) },
      { nn.ConvTranspose2d(2, 2, 4, { stride = 2, padding = 1 }), ember.randn(1, 2, 3, 3) },
      { nn.BatchNorm2d(2), ember.randn(3, 2, 2, 2) },
      { nn.BatchNorm1d(3), ember.randn(5, 3) },
    }
    for _, c in ipairs(cases) do
      local m, x = c[1], c[2]:requires_grad()
      local inputs = { x }
      for _, p in ipairs(m:parameters()) do inputs[#inputs + 1] = p end
      local ok, msg = ember.gradcheck(function(x) return m(x) end, inputs)
      assert.is_true(ok, m:class_name() .. ': ' .. tostring(msg))
    end
    local emb = nn.Embedding(5, 3)
    local ok, msg = ember.gradcheck(function() return emb({ 1, 5, 5 }) end, { emb.weight })
    assert.is_true(ok, msg)
  end)

  it('computes the activations and shape layers', function()
    local x = ember.tensor({ { -2, -0.5, 0.5, 2 } })
    local function close(a, b) return (a - b):abs():max():item() < 1e-6 end
    assert.is_true(close(nn.ReLU()(x), x:relu()))
    assert.is_true(close(nn.LeakyReLU(0.2)(x), x:leaky_relu(0.2)))
    assert.is_true(close(nn.ELU()(x), x:elu(1)))
    assert.is_true(close(nn.Tanh()(x), x:tanh()))
    assert.is_true(close(nn.Sigmoid()(x), x:sigmoid()))
    assert.is_true(close(nn.Softplus()(x), x:softplus()))
    assert.is_true(close(nn.Softplus(2)(x), (x * 2):softplus() / 2))
    assert.is_true(close(nn.Softmax(2)(x), x:softmax(2)))
    assert.is_true(close(nn.LogSoftmax()(x), x:log_softmax(-1)))
    assert.are.equal(x, nn.Identity()(x))
    local img = ember.randn(2, 3, 4, 4)
    assert.are.same({ 2, 48 }, nn.Flatten()(img):shape())
    assert.are.same({ 2, 3, 16 }, nn.Flatten(3)(img):shape())
    assert.are.same({ 2, 12, 4 }, nn.Reshape(12, 4)(img):shape())
    assert.are.same({ 2, 3, 16 }, nn.View(3, -1)(img):shape())
    assert.are.same({ 2, 3, 2, 2 }, nn.MaxPool2d(2)(img):shape())
    assert.are.same({ 2, 3, 2, 2 }, nn.AvgPool2d(3, { stride = 2, padding = 1 })(img):shape())
    assert.are.same({ 2, 3, 8, 12 }, nn.Upsample({ 2, 3 })(img):shape())
    assert.are.same({ 2, 3, 8, 8 }, nn.Upsample { scale_factor = 2, mode = 'nearest' }(img):shape())
    assert.are.same({ 2, 2, 3 }, nn.Embedding(10, 3)({ { 1, 2 }, { 9, 10 } }):shape())
  end)

  it('prints the tree like PyTorch, with the parameter count', function()
    local net = nn.Sequential(nn.Linear(784, 400), nn.ReLU())
    assert.are.equal('Sequential(\n  (1): Linear(784 -> 400)\n  (2): ReLU()\n)\nTotal parameters: 314,000', tostring(net))
    local D = nn.Sequential(
      nn.Conv2d(1, 64, 4, { stride = 2, padding = 1 }), nn.LeakyReLU(0.2),
      nn.Sequential(nn.Conv2d(64, 128, 4, { stride = 2, padding = 1, bias = false }), nn.BatchNorm2d(128)),
      nn.MaxPool2d(2), nn.Dropout(0.3), nn.Linear(3, 1, { bias = false }))
    assert.are.equal(table.concat({
      'Sequential(',
      '  (1): Conv2d(1 -> 64, kernel 4, stride 2, padding 1)',
      '  (2): LeakyReLU(negative_slope 0.2)',
      '  (3): Sequential(',
      '    (1): Conv2d(64 -> 128, kernel 4, stride 2, padding 1, bias=false)',
      '    (2): BatchNorm2d(128)',
      '  )',
      '  (4): MaxPool2d(kernel 2)',
      '  (5): Dropout(p 0.3)',
      '  (6): Linear(3 -> 1, bias=false)',
      ')',
      'Total parameters: 132,419' }, '\n'), tostring(D))
    assert.are.equal('nn.Linear', tostring(nn.Linear))
  end)

  it('applies functions to every module, children first', function()
    local net = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.Tanh()))
    local seen = {}
    assert.are.equal(net, net:apply(function(m) seen[#seen + 1] = m:class_name() end))
    assert.are.same({ 'Linear', 'Tanh', 'Sequential', 'Sequential' }, seen)
  end)

  it('rejects bad constructor arguments with clear messages', function()
    expect_error(function() nn.Linear(0, 3) end, "Linear: bad argument #1 'in_features' (expected a positive integer, got 0)")
    expect_error(function() nn.Linear(2, 1.5) end, "Linear: bad argument #2 'out_features' (expected a positive integer, got 1.5)")
    expect_error(function() nn.Linear(2, 3, { biass = true }) end, "Linear: unknown option 'biass' (expected one of: bias)")
    expect_error(function() nn.Linear(2, 3, { bias = 1 }) end, "Linear: option 'bias' must be a boolean, got 1")
    expect_error(function() nn.Conv2d(3, 4, 3, { groups = 2 }) end, 'Conv2d: in_channels 3 is not divisible by groups 2')
    expect_error(function() nn.Conv2d(4, 3, 3, { groups = 2 }) end, 'Conv2d: out_channels 3 is not divisible by groups 2')
    expect_error(function() nn.Conv2d(1, 4) end, "Conv2d: bad argument #3 'kernel_size' (expected an integer >= 1 or a table {h, w} of them, got nil)")
    expect_error(function() nn.Conv2d(1, 4, 3, { stride = 0 }) end, "Conv2d: bad argument #4 'stride'")
    expect_error(function() nn.Conv2d(1, 4, 3, { strides = 2 }) end, "Conv2d: unknown option 'strides'")
    expect_error(function() nn.ConvTranspose2d(2, 2, 4, { stride = 2, output_padding = 2 }) end,
      'ConvTranspose2d: output_padding 2 must be smaller than the stride 2')
    expect_error(function() nn.MaxPool2d(2, { padding = 2 }) end, 'MaxPool2d: padding 2 must be at most half the kernel size 2')
    expect_error(function() nn.AvgPool2d(0) end, "AvgPool2d: bad argument #1 'kernel_size'")
    expect_error(function() nn.Upsample(0) end, "Upsample: bad argument #1 'scale_factor'")
    expect_error(function() nn.Upsample { scale_factor = 2, mode = 'bilinear' } end,
      "Upsample: only mode 'nearest' is supported, got 'bilinear'")
    expect_error(function() nn.BatchNorm2d(0) end, "BatchNorm2d: bad argument #1 'num_features' (expected a positive integer, got 0)")
    expect_error(function() nn.BatchNorm1d(3, { momentum = 2 }) end, "BatchNorm1d: option 'momentum' must be a number in [0, 1], got 2")
    expect_error(function() nn.Dropout(1.5) end, "Dropout: bad argument #1 'p' (expected a probability in [0, 1], got 1.5)")
    expect_error(function() nn.Flatten(0) end, "Flatten: bad argument #1 'start_dim'")
    expect_error(function() nn.Reshape(2, -1, -1) end, 'Reshape: at most one size may be -1')
    expect_error(function() nn.Reshape(0) end, "Reshape: bad argument #1 'size' (expected a positive integer, got 0)")
    expect_error(function() nn.Embedding(0, 3) end, "Embedding: bad argument #1 'num_embeddings'")
    expect_error(function() nn.LeakyReLU('a') end, "LeakyReLU: bad argument #1 'negative_slope' (expected a number, got 'a')")
    expect_error(function() nn.Softmax(0) end, "Softmax: bad argument #1 'dim'")
    expect_error(function() nn.LogSoftmax(1.5) end, "LogSoftmax: bad argument #1 'dim' (expected a non-zero integer dim")
    expect_error(function() nn.ELU({}) end, "ELU: bad argument #1 'alpha' (expected a number, got table)")
    expect_error(function() nn.Softplus(0) end, "Softplus: bad argument #1 'beta' (expected a number > 0, got 0)")
    expect_error(function() nn.ConvTranspose2d(2, 3, 4, { groups = 2 }) end, 'ConvTranspose2d: out_channels 3 is not divisible by groups 2')
    expect_error(function() nn.Module:extend(5) end, "Module:extend: bad argument #1 'name' (expected a class name string, got 5)")
    expect_error(function() nn.Sequential(nn.ReLU(), 5) end, "Sequential: bad argument #2 'module' (expected a module, got 5)")
    expect_error(function() nn.Sequential():add({}) end, "Sequential:add: bad argument #1 'module' (expected a module, got table)")
    -- the error points at the caller's line, not into nn.lua
    local ok, err = pcall(function() nn.Linear(0, 1) end)
    assert.is_false(ok)
    assert.truthy(err:find('nn_spec.lua', 1, true), err)
  end)

  it('rejects inputs of the wrong rank or width', function()
    expect_error(function() nn.BatchNorm2d(3)(ember.randn(4, 3)) end, 'BatchNorm2d: input [4 x 3] must be 4-D [N x C x H x W]')
    expect_error(function() nn.BatchNorm1d(3)(ember.randn(4, 3, 2, 2)) end,
      'BatchNorm1d: input [4 x 3 x 2 x 2] must be 2-D [N x C] or 3-D [N x C x L]')
    expect_error(function() nn.BatchNorm1d(3)(ember.randn(4, 5)) end, 'BatchNorm1d: input [4 x 5] has 5 channels (dim 2), expected 3')
    expect_error(function() nn.Conv2d(3, 4, 3)(ember.randn(2, 3, 8)) end, 'conv2d: input [2 x 3 x 8] must be 4-D [N x C x H x W]')
    expect_error(function() nn.Conv2d(3, 4, 3)(ember.randn(2, 2, 8, 8)) end, 'has 2 channels, but weight [4 x 3 x 3 x 3] expects 3')
    expect_error(function() nn.Linear(3, 4)(ember.randn(2, 5)) end, 'linear: input [2 x 5] does not fit weight [4 x 3]')
  end)
end)

describe('nn.init', function()
  it('fills tensors in place with the documented statistics', function()
    local init = nn.init
    local t = ember.zeros(200, 100):requires_grad()
    assert.are.equal(t, init.kaiming_uniform_(t))
    local bound = math.sqrt(3) * math.sqrt(2 / (1 + 0)) / math.sqrt(100) -- a = 0: leaky_relu gain sqrt(2)
    assert.is_true(t:abs():max():item() <= bound and t:abs():max():item() > 0.95 * bound)
    init.kaiming_normal_(t, { mode = 'fan_out', nonlinearity = 'relu' })
    assert.is_true(math.abs(t:std():item() - math.sqrt(2) / math.sqrt(200)) < 0.005)
    init.xavier_uniform_(t, 2)
    local xb = 2 * math.sqrt(6 / 300)
    assert.is_true(t:abs():max():item() <= xb and t:abs():max():item() > 0.95 * xb)
    init.xavier_normal_(t)
    assert.is_true(math.abs(t:std():item() - math.sqrt(2 / 300)) < 0.005)
    init.normal_(t, 3, 0.5)
    assert.is_true(math.abs(t:mean():item() - 3) < 0.02 and math.abs(t:std():item() - 0.5) < 0.02)
    init.zeros_(t)
    assert.are.equal(0, t:abs():sum():item())
    init.ones_(t)
    assert.are.equal(20000, t:sum():item())
    init.constant_(t, 0.5)
    assert.are.equal(10000, t:sum():item())
    assert.is_true(t:needs_grad()) -- still a parameter
    assert.are.equal(5 / 3, init.calculate_gain('tanh'))
    assert.is_true(math.abs(init.calculate_gain('leaky_relu', 0.2) - math.sqrt(2 / 1.04)) < 1e-12)
  end)

  it('applies the DCGAN initialisation by module kind', function()
    local G = nn.Sequential(nn.ConvTranspose2d(100, 64, 4), nn.BatchNorm2d(64), nn.ReLU(),
      nn.Conv2d(64, 32, 3), nn.Linear(10, 10))
    local lin_before = G[5].weight:clone()
    assert.are.equal(G, nn.init.dcgan_(G))
    assert.is_true(math.abs(G[1].weight:std():item() - 0.02) < 0.002)
    assert.is_true(math.abs(G[1].weight:mean():item()) < 0.002)
    assert.are.equal(0, G[1].bias:abs():sum():item())
    assert.is_true(math.abs(G[2].weight:mean():item() - 1) < 0.01)
    assert.is_true(G[2].weight:std():item() > 0.01 and G[2].weight:std():item() < 0.03)
    assert.are.equal(0, G[2].bias:abs():sum():item())
    assert.is_true(math.abs(G[4].weight:std():item() - 0.02) < 0.002)
    assert.is_true(same_values(G[5].weight, lin_before)) -- Linear untouched
  end)

  it('rejects bad arguments with clear messages', function()
    expect_error(function() nn.init.kaiming_uniform_(ember.zeros(3)) end,
      'init.kaiming_uniform_: fan in and fan out need a tensor of at least 2 dims, got [3]')
    expect_error(function() nn.init.kaiming_uniform_(ember.zeros(3, 3), { mode = 'fan' }) end,
      "init.kaiming_uniform_: mode must be 'fan_in' or 'fan_out', got 'fan'")
    expect_error(function() nn.init.kaiming_normal_(ember.zeros(3, 3), { gain = 1 }) end,
      "init.kaiming_normal_: unknown option 'gain'")
    expect_error(function() nn.init.normal_('t') end, "init.normal_: bad argument #1 'tensor' (expected a tensor, got 't')")
    expect_error(function() nn.init.calculate_gain('swish') end, "calculate_gain: unknown nonlinearity 'swish'")
    expect_error(function() nn.init.dcgan_(5) end, "init.dcgan_: bad argument #1 'module' (expected a module, got 5)")
  end)
end)
