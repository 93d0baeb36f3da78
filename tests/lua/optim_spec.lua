-- optim_spec.lua — ember.optim: each optimizer's C update against a naive Lua
-- reference over several steps, state dicts (a resumed run equals an
-- uninterrupted one), independence of two optimizers, zero_grad, skipped
-- parameters, clipping, learning-rate schedules, and bad-argument messages.
local ember = require 'ember'
local optim = require 'ember.optim'

local function expect_error(text, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, 'expected an error containing: ' .. text)
  err = tostring(err)
  assert(err:find(text, 1, true), ('error "%s" does not contain "%s"'):format(err, text))
end

local function flat(t)
  local v = t:contiguous():view(-1):totable()
  if type(v) == 'number' then v = { v } end
  return v
end

local function close(a, b, tol)
  tol = tol or 1e-6
  assert(math.abs(a - b) <= tol * (1 + math.abs(b)), ('%.9g vs %.9g'):format(a, b))
end

local function same_values(a, b, tol)
  local x, y = flat(a), flat(b)
  assert.are.equal(#x, #y)
  for i = 1, #x do close(x[i], y[i], tol) end
end

-- ---- naive references: one step over flat Lua arrays, in double -------------------

local reference = {}

function reference.SGD(h, p, g, s)
  s.step = (s.step or 0) + 1
  for i = 1, #p do
    local d = g[i] + h.weight_decay * p[i]
    if h.momentum > 0 then
      s.buf = s.buf or {}
      s.buf[i] = s.step == 1 and d or h.momentum * s.buf[i] + (1 - h.dampening) * d
      d = h.nesterov and d + h.momentum * s.buf[i] or s.buf[i]
    end
    p[i] = p[i] - h.lr * d
  end
end

local function adam(h, p, g, s, decoupled)
  s.step = (s.step or 0) + 1
  s.m, s.v, s.vmax = s.m or {}, s.v or {}, s.vmax or {}
  local b1, b2 = h.betas[1], h.betas[2]
  for i = 1, #p do
    local gi = g[i]
    if decoupled then p[i] = p[i] * (1 - h.lr * h.weight_decay) else gi = gi + h.weight_decay * p[i] end
    s.m[i] = b1 * (s.m[i] or 0) + (1 - b1) * gi
    s.v[i] = b2 * (s.v[i] or 0) + (1 - b2) * gi * gi
    local v = s.v[i]
    if h.amsgrad then s.vmax[i] = math.max(s.vmax[i] or 0, v); v = s.vmax[i] end
    local mhat, vhat = s.m[i] / (1 - b1 ^ s.step), v / (1 - b2 ^ s.step)
    p[i] = p[i] - h.lr * mhat / (math.sqrt(vhat) + h.eps)
  end
end
function reference.Adam(h, p, g, s) adam(h, p, g, s, false) end
function reference.AdamW(h, p, g, s) adam(h, p, g, s, true) end

function reference.RMSprop(h, p, g, s)
  s.sq, s.buf, s.ga = s.sq or {}, s.buf or {}, s.ga or {}
  for i = 1, #p do
    local gi = g[i] + h.weight_decay * p[i]
    s.sq[i] = h.alpha * (s.sq[i] or 0) + (1 - h.alpha) * gi * gi
    local avg
    if h.centered then
      s.ga[i] = h.alpha * (s.ga[i] or 0) + (1 - h.alpha) * gi
      avg = math.sqrt(s.sq[i] - s.ga[i] ^ 2) + h.eps
    else
      avg = math.sqrt(s.sq[i]) + h.eps
    end
    if h.momentum > 0 then
      s.buf[i] = h.momentum * (s.buf[i] or 0) + gi / avg
      p[i] = p[i] - h.lr * s.buf[i]
    else
      p[i] = p[i] - h.lr * gi / avg
    end
  end
end

local function make_params()
  ember.manual_seed(42)
  return { ember.randn(3, 2):requires_grad(), ember.randn(5):requires_grad(), ember.randn(1):requires_grad() }
end

-- Runs `steps` steps of optimizer `name` with options `opts` against the
-- reference (fresh random gradients each step) and compares all values.
local function compare_with_reference(name, opts, steps)
  local params = make_params()
  local opt = optim[name](params, opts)
  local ref_p, ref_s = {}, {}
  for i, p in ipairs(params) do ref_p[i], ref_s[i] = flat(p), {} end
  for _ = 1, steps do
    for i, p in ipairs(params) do
      p.grad = ember.randn(p:shape())
      reference[name](opt, ref_p[i], flat(p.grad), ref_s[i])
    end
    opt:step()
    for i, p in ipairs(params) do
      local got = flat(p)
      for j = 1, #got do close(got[j], ref_p[i][j], 1e-6) end
      assert.are.equal(#got, #ref_p[i])
    end
  end
end

describe('optimizers against a naive Lua reference', function()
  local cases = {
    { 'SGD', { lr = 0.1 } },
    { 'SGD', { lr = 0.05, momentum = 0.9, dampening = 0.2, weight_decay = 0.01 } },
    { 'SGD', { lr = 0.05, momentum = 0.8, nesterov = true } },
    { 'Adam', {} },
    { 'Adam', { lr = 0.01, betas = { 0.5, 0.99 }, eps = 1e-6, weight_decay = 0.1, amsgrad = true } },
    { 'AdamW', { lr = 0.02, betas = { 0.8, 0.95 } } },
    { 'AdamW', { lr = 0.02, weight_decay = 0.3, amsgrad = true } },
    { 'RMSprop', {} },
    { 'RMSprop', { lr = 0.01, alpha = 0.9, eps = 1e-6, weight_decay = 0.05, momentum = 0.5, centered = true } },
  }
  for _, c in ipairs(cases) do
    local parts = {}
    for k, v in pairs(c[2]) do parts[#parts + 1] = k .. '=' .. (type(v) == 'table' and '{..}' or tostring(v)) end
    table.sort(parts)
    it(('%s {%s} equals the reference over 6 steps'):format(c[1], table.concat(parts, ', ')), function()
      compare_with_reference(c[1], c[2], 6)
    end)
  end

  it('a change of opt.lr (and other fields) takes effect at the next step', function()
    local params = make_params()
    local opt = optim.SGD(params, { lr = 0.1 })
    local before = flat(params[1])
    opt.lr = 0
    params[1].grad = ember.ones(3, 2)
    opt:step()
    assert.are.same(before, flat(params[1]))
    opt.lr = 0.5
    opt:step()
    close(flat(params[1])[1], before[1] - 0.5)
    opt.lr = -1
    expect_error('SGD: lr must be a finite number >= 0, got -1', opt.step, opt)
    opt.lr = 'fast'
    expect_error("SGD: option 'lr' must be a number, got string", opt.step, opt)
  end)
end)

describe('optimizer bookkeeping', function()
  it('skips parameters whose grad is nil', function()
    local params = make_params()
    local opt = optim.Adam(params, { lr = 0.1 })
    local untouched = flat(params[2])
    params[1].grad = ember.ones(3, 2)
    params[3].grad = ember.ones(1)
    opt:step()
    assert.are.same(untouched, flat(params[2]))
    assert.are.same({ 1, 0, 1 }, { opt.state[1].step, opt.state[2].step, opt.state[3].step })
  end)

  it('zero_grad drops the gradients, or zeros them with false', function()
    local params = make_params()
    local opt = optim.SGD(params, { lr = 0.1 })
    local loss = (params[1]:sum() + params[2]:sum()) * 2
    loss:backward()
    assert.is_not_nil(params[1].grad)
    opt:zero_grad(false)
    assert.are.same({ 0, 0, 0, 0, 0, 0 }, flat(params[1].grad))
    opt:zero_grad()
    assert.is_nil(params[1].grad)
    assert.is_nil(params[2].grad)
  end)

  it('two optimizers (a GAN\'s) share nothing', function()
    ember.manual_seed(3)
    local g_params, d_params = { ember.randn(4):requires_grad() }, { ember.randn(4):requires_grad() }
    local betas = { 0.5, 0.999 }
    local opt_g = optim.Adam(g_params, { lr = 2e-4, betas = betas })
    local opt_d = optim.Adam(d_params, { lr = 2e-4, betas = betas })
    betas[1] = 0.1 -- the caller's table was copied
    assert.are.equal(0.5, opt_g.betas[1])
    assert.are_not.equal(opt_g.betas, opt_d.betas)
    d_params[1].grad = ember.ones(4)
    opt_d:step()
    opt_d:step()
    assert.are.equal(0, opt_g.state[1].step)
    assert.are.same({ 0, 0, 0, 0 }, flat(opt_g.state[1].exp_avg))
    assert.are.equal(2, opt_d.state[1].step)
    opt_g.lr = 1
    assert.are.equal(2e-4, opt_d.lr)
  end)

  it('a resumed run from state_dict equals an uninterrupted one', function()
    for _, c in ipairs {
      { 'SGD', { lr = 0.05, momentum = 0.9 } }, { 'Adam', { lr = 0.01, amsgrad = true } },
      { 'AdamW', { lr = 0.01 } }, { 'RMSprop', { momentum = 0.3, centered = true } },
    } do
      local params = make_params()
      local opt = optim[c[1]](params, c[2])
      local grads = {}
      ember.manual_seed(9)
      for s = 1, 6 do
        grads[s] = {}
        for i, p in ipairs(params) do grads[s][i] = ember.randn(p:shape()) end
      end
      local function run(o, ps, from, to)
        for s = from, to do
          for i, p in ipairs(ps) do p.grad = grads[s][i] end
          o:step()
        end
      end
      run(opt, params, 1, 3)
      local sd = opt:state_dict()
      local snapshot = {}
      for i, p in ipairs(params) do snapshot[i] = p:detach():clone():requires_grad() end
      run(opt, params, 4, 6)
      -- the state dict was a snapshot: training on did not change it
      assert.are.equal(3, sd.state[1].step)
      local resumed = optim[c[1]](snapshot, { lr = 123 })
      resumed:load_state_dict(sd)
      assert.are.equal(opt.lr, resumed.lr)
      run(resumed, snapshot, 4, 6)
      for i = 1, #params do assert.are.same(flat(params[i]), flat(snapshot[i])) end
    end
  end)

  it('state_dict holds only tensors, numbers, booleans and tables', function()
    local opt = optim.Adam(make_params(), { amsgrad = true })
    local sd = opt:state_dict()
    assert.are.equal('Adam', sd.type)
    assert.are.same({ 0.9, 0.999 }, sd.hyper.betas)
    for _, s in ipairs(sd.state) do
      assert.are.equal(0, s.step)
      for _, name in ipairs { 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq' } do assert.is_true(ember.is_tensor(s[name])) end
    end
  end)

  it('state dicts of an optimizer and a schedule survive ember.save / ember.load', function()
    if not ember.save then return pending('ember.save is not available') end
    local params = make_params()
    local opt = optim.AdamW(params, { lr = 0.01, amsgrad = true })
    local sched = optim.StepLR(opt, { step_size = 2, gamma = 0.5 })
    for _, p in ipairs(params) do p.grad = ember.ones(p:shape()) end
    opt:step(); sched:step(); opt:step(); sched:step()
    local path = os.tmpname()
    ember.save(path, { optim = opt:state_dict(), sched = sched:state_dict() })
    local back = ember.load(path)
    os.remove(path)
    local params2 = make_params()
    local opt2 = optim.AdamW(params2)
    local sched2 = optim.StepLR(opt2, { step_size = 5 })
    opt2:load_state_dict(back.optim)
    sched2:load_state_dict(back.sched)
    assert.are.equal(2, opt2.state[1].step)
    assert.are.equal(opt.lr, opt2.lr)
    assert.are.equal(2, sched2.step_size)
    for i = 1, #params do
      for _, name in ipairs { 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq' } do
        assert.are.same(flat(opt.state[i][name]), flat(opt2.state[i][name]))
      end
    end
  end)

  it('load_state_dict rejects mismatches with clear messages and changes nothing', function()
    local opt = optim.Adam(make_params(), { lr = 0.5 })
    local sd = opt:state_dict()
    expect_error('Adam:load_state_dict: the state dict is for SGD, not Adam', opt.load_state_dict, opt,
      optim.SGD(make_params(), { lr = 1 }):state_dict())
    local fewer = optim.Adam({ ember.randn(3, 2) }):state_dict()
    expect_error('Adam:load_state_dict: the state dict holds state for 1 parameters, this optimizer has 3',
      opt.load_state_dict, opt, fewer)
    local bad = opt:state_dict()
    bad.state[2].exp_avg = ember.zeros(4)
    expect_error('Adam:load_state_dict: exp_avg of parameter 2 is [4], the parameter is [5]', opt.load_state_dict, opt, bad)
    bad = opt:state_dict()
    bad.state[1].step = 1.5
    expect_error('Adam:load_state_dict: the step count of parameter 1 must be an integer >= 0, got 1.5',
      opt.load_state_dict, opt, bad)
    bad = opt:state_dict()
    bad.hyper.betas = { 0.9, 1.0 }
    bad.hyper.lr = 0.25
    expect_error("Adam:load_state_dict: option 'betas' must be a table {beta1, beta2} with each in [0, 1), got {0.9, 1.0}",
      opt.load_state_dict, opt, bad)
    expect_error('Adam:load_state_dict: expected a state dict table, got nil', opt.load_state_dict, opt, nil)
    assert.are.equal(0.5, opt.lr) -- nothing was applied
    opt:load_state_dict(sd)
  end)
end)

describe('optimizer bad arguments', function()
  it('reject bad params', function()
    expect_error("Adam: bad argument #1 'params' (expected a list of tensors, got number)", optim.Adam, 3)
    expect_error("Adam: bad argument #1 'params' (item 2: expected tensor, got string)", optim.Adam, { ember.randn(2), 'w' })
    expect_error("SGD: bad argument #1 'params' (expected a non-empty list of tensors)", optim.SGD, {}, { lr = 1 })
    local w = ember.randn(2)
    expect_error("RMSprop: bad argument #1 'params' (item 2 is the same tensor as item 1)", optim.RMSprop, { w, w })
  end)

  it('accept a single tensor or anything with :parameters()', function()
    local w = ember.randn(2):requires_grad()
    assert.are.equal(1, #optim.Adam(w).params)
    local net = { parameters = function() return { w } end }
    assert.are.equal(w, optim.AdamW(net).params[1])
  end)

  it('reject bad options', function()
    local ps = { ember.randn(2) }
    expect_error("Adam: option 'lr' must be a finite number >= 0, got -0.001", optim.Adam, ps, { lr = -1e-3 })
    expect_error("Adam: option 'betas' must be a table {beta1, beta2} with each in [0, 1), got {0.9, 1}", optim.Adam, ps, { betas = { 0.9, 1 } })
    expect_error("AdamW: option 'betas' must be a table {beta1, beta2} with each in [0, 1), got {-0.1, 0.9}", optim.AdamW, ps, { betas = { -0.1, 0.9 } })
    expect_error("Adam: option 'betas' must be a table {beta1, beta2} with each in [0, 1), got 0.9", optim.Adam, ps, { betas = 0.9 })
    expect_error("Adam: unknown option 'learning_rate' (expected lr, betas, eps, weight_decay, amsgrad, on_nonfinite)", optim.Adam, ps, { learning_rate = 1 })
    expect_error("SGD: option 'lr' is required", optim.SGD, ps)
    expect_error("SGD: option 'momentum' must be a finite number >= 0, got -0.9", optim.SGD, ps, { lr = 1, momentum = -0.9 })
    expect_error('SGD: nesterov needs momentum > 0 and dampening 0, got momentum 0 and dampening 0', optim.SGD, ps, { lr = 1, nesterov = true })
    expect_error("RMSprop: option 'alpha' must be a number in [0, 1], got 1.5", optim.RMSprop, ps, { alpha = 1.5 })
    expect_error("RMSprop: option 'centered' must be a boolean, got yes", optim.RMSprop, ps, { centered = 'yes' })
    expect_error("Adam: bad argument #2 'opts' (expected an options table, got number)", optim.Adam, ps, 0.1)
  end)

  it('report a gradient whose shape differs from its parameter', function()
    local w = ember.randn(2, 2):requires_grad()
    local opt = optim.SGD({ w }, { lr = 1 })
    -- .grad refuses a wrong shape at assignment
    expect_error('grad: shape must match', function() w.grad = ember.randn(4) end)
    opt:step() -- no grad: nothing to do
  end)
end)

describe('gradient clipping', function()
  it('clip_grad_norm_ returns the total norm before clipping and scales all gradients', function()
    local a, b, c = ember.zeros(2):requires_grad(), ember.zeros(3):requires_grad(), ember.zeros(1):requires_grad()
    a.grad = ember.tensor { 3, 0 }
    b.grad = ember.tensor { 0, 4, 0 }
    close(optim.clip_grad_norm_({ a, b, c }, 10), 5)
    assert.are.same({ 3, 0 }, flat(a.grad)) -- under the limit: untouched
    close(optim.clip_grad_norm_({ a, b, c }, 1), 5)
    same_values(a.grad, ember.tensor { 0.6, 0 }, 1e-5)
    same_values(b.grad, ember.tensor { 0, 0.8, 0 }, 1e-5)
    close(optim.clip_grad_norm_({ a, b }, 1, math.huge), 0.8, 1e-5)
    close(optim.clip_grad_norm_(a, 100), 0.6, 1e-5) -- a single tensor
  end)

  it('clip_grad_norm_ matches a naive norm on a large gradient', function()
    ember.manual_seed(4)
    local w = ember.zeros(70001):requires_grad()
    w.grad = ember.randn(70001)
    local s = 0
    for _, v in ipairs(flat(w.grad)) do s = s + v * v end
    close(optim.clip_grad_norm_({ w }, 2), math.sqrt(s), 1e-9)
    local after = 0
    for _, v in ipairs(flat(w.grad)) do after = after + v * v end
    close(math.sqrt(after), 2, 1e-4)
  end)

  it('clip_grad_value_ and clip_weights_ clamp in place', function()
    local w = ember.tensor { -3, -0.5, 0.5, 3 }:requires_grad()
    w.grad = ember.tensor { -2, 0.1, 0.2, 5 }
    optim.clip_grad_value_({ w }, 1)
    same_values(w.grad, ember.tensor { -1, 0.1, 0.2, 1 })
    optim.clip_weights_({ w }, 0.25)
    same_values(w, ember.tensor { -0.25, -0.25, 0.25, 0.25 })
    assert.is_true(w:needs_grad())
  end)

  it('reject bad arguments', function()
    local w = ember.zeros(2):requires_grad()
    expect_error("clip_grad_norm_: bad argument #2 'max_norm' (expected a number, got nil)", optim.clip_grad_norm_, { w })
    expect_error('clip_grad_norm_: max_norm must be >= 0, got -1', optim.clip_grad_norm_, { w }, -1)
    expect_error('clip_grad_norm_: norm_type must be > 0 (or inf), got 0', optim.clip_grad_norm_, { w }, 1, 0)
    expect_error('clip_grad_norm_: bad argument #1 (item 2: expected tensor, got number)', optim.clip_grad_norm_, { w, 3 }, 1)
    expect_error("clip_grad_value_: bad argument #2 'clip_value' (expected a number, got string)", optim.clip_grad_value_, { w }, 'x')
    expect_error('clip_weights_: clip value must be >= 0, got -0.01', optim.clip_weights_, { w }, -0.01)
    expect_error('clip_weights_: bad argument #1 (expected a tensor or a list of tensors, got nil)', optim.clip_weights_, nil, 0.01)
  end)
end)

describe('learning-rate schedules', function()
  local function opt_with(lr) return optim.SGD({ ember.zeros(1):requires_grad() }, { lr = lr }) end

  -- Steps the schedule n times, returning opt.lr after each step.
  local function lrs(sched, opt, n)
    local out = {}
    for i = 1, n do sched:step(); out[i] = opt.lr end
    return out
  end

  it('StepLR multiplies by gamma every step_size steps', function()
    local opt = opt_with(1)
    local s = optim.StepLR(opt, { step_size = 2, gamma = 0.5 })
    local got = lrs(s, opt, 5)
    for i, want in ipairs { 1, 0.5, 0.5, 0.25, 0.25 } do close(got[i], want) end
    close(s:get_lr(), 0.25)
  end)

  it('ExponentialLR multiplies by gamma every step', function()
    local opt = opt_with(2)
    local got = lrs(optim.ExponentialLR(opt, { gamma = 0.9 }), opt, 3)
    for i, want in ipairs { 1.8, 1.62, 1.458 } do close(got[i], want) end
  end)

  it('CosineAnnealingLR follows the half cosine to eta_min and stays there', function()
    local opt = opt_with(1)
    local got = lrs(optim.CosineAnnealingLR(opt, { T_max = 4, eta_min = 0.2 }), opt, 6)
    for i = 1, 4 do close(got[i], 0.2 + 0.8 * (1 + math.cos(math.pi * i / 4)) / 2) end
    close(got[5], 0.2)
    close(got[6], 0.2)
  end)

  it('LinearWarmup ramps up, then hands over to the next schedule', function()
    local opt = opt_with(1)
    local w = optim.LinearWarmup(opt, { warmup_steps = 4 })
    close(opt.lr, 0.25) -- the first update already moves
    local got = lrs(w, opt, 5)
    for i, want in ipairs { 0.5, 0.75, 1, 1, 1 } do close(got[i], want) end

    local opt2 = opt_with(1)
    local after = optim.StepLR(opt2, { step_size = 1, gamma = 0.5 })
    local w2 = optim.LinearWarmup(opt2, { warmup_steps = 2, after = after })
    close(opt2.lr, 0.5)
    got = lrs(w2, opt2, 4)
    for i, want in ipairs { 1, 0.5, 0.25, 0.125 } do close(got[i], want) end
  end)

  it('state_dict / load_state_dict resume a schedule (nested too)', function()
    local opt = opt_with(1)
    local after = optim.CosineAnnealingLR(opt, { T_max = 10 })
    local s = optim.LinearWarmup(opt, { warmup_steps = 3, after = after })
    lrs(s, opt, 5)
    local sd = s:state_dict()
    local expected = lrs(s, opt, 3)
    local opt2 = opt_with(7)
    local s2 = optim.LinearWarmup(opt2, { warmup_steps = 1, after = optim.CosineAnnealingLR(opt2, { T_max = 2 }) })
    s2:load_state_dict(sd)
    assert.are.equal(5, s2.last_step)
    local got = lrs(s2, opt2, 3)
    for i = 1, 3 do close(got[i], expected[i]) end
    expect_error('StepLR:load_state_dict: the state dict is for LinearWarmup, not StepLR',
      optim.StepLR(opt, { step_size = 1 }).load_state_dict, optim.StepLR(opt, { step_size = 1 }), sd)
  end)

  it('reject bad arguments', function()
    local opt = opt_with(1)
    expect_error("StepLR: bad argument #1 'opt' (expected an optimizer, got table)", optim.StepLR, {}, { step_size = 1 })
    expect_error("StepLR: option 'step_size' is required", optim.StepLR, opt, {})
    expect_error("StepLR: option 'step_size' must be an integer > 0, got 0", optim.StepLR, opt, { step_size = 0 })
    expect_error("ExponentialLR: option 'gamma' must be a finite number > 0, got -1", optim.ExponentialLR, opt, { gamma = -1 })
    expect_error("CosineAnnealingLR: option 'T_max' must be an integer > 0, got 2.5", optim.CosineAnnealingLR, opt, { T_max = 2.5 })
    expect_error("CosineAnnealingLR: unknown option 'Tmax' (expected T_max, eta_min)", optim.CosineAnnealingLR, opt, { Tmax = 2 })
    expect_error("LinearWarmup: option 'after' must be a schedule, got 3", optim.LinearWarmup, opt, { warmup_steps = 2, after = 3 })
    expect_error("LinearWarmup: bad argument #2 'opts' (expected an options table, got nil)", optim.LinearWarmup, opt)
    local other = optim.StepLR(opt_with(1), { step_size = 1 })
    expect_error("LinearWarmup: option 'after' must be a schedule of the same optimizer", optim.LinearWarmup, opt, { warmup_steps = 2, after = other })
  end)
end)

describe('optim.EMA (weight averaging)', function()
  local nn = require 'ember.nn'

  local function net()
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
  end

  it('averages every parameter with the decay, copies buffers, and reset copies all', function()
    ember.manual_seed(2)
    local model, average = net(), net()
    local ema = optim.EMA(average, model, {decay = 0.9})
    ema:reset()
    for name, a in average:named_parameters() do
      assert.are.equal(0, (a - model:state_dict()[name]):abs():max():item(), name)
    end
    -- the first update after reset takes the model's weights whole (rate 0.1 / (1 - 0.9) = 1)
    ember.no_grad(function() for _, w in ipairs(model:parameters()) do w:add_(0.5) end end)
    ema:update()
    for name, a in average:named_parameters() do
      assert.is_true((a - model:state_dict()[name]):abs():max():item() < 1e-6, name)
    end
    -- the second: rate 0.1 / (1 - 0.81) = 0.1 / 0.19
    local before = {}
    for name, a in average:named_parameters() do before[name] = a:clone() end
    model:train()
    model(ember.randn(8, 3)) -- moves BatchNorm's running statistics
    ember.no_grad(function() for _, w in ipairs(model:parameters()) do w:add_(1) end end)
    local model_before = model[1].weight:clone()
    ema:update()
    local now = model:state_dict()
    for name, a in average:named_parameters() do
      local expected = before[name] + (now[name] - before[name]) * (0.1 / 0.19)
      assert.is_true((a - expected):abs():max():item() < 1e-5, name)
    end
    for name, b in average:named_buffers() do
      assert.are.equal(0, (b - now[name]):abs():max():item(), name)
    end
    -- the model itself is untouched by update
    assert.are.equal(0, (model[1].weight - model_before):abs():max():item())
  end)

  it('tends to the plain EMA after many updates, and saves its count', function()
    local model, average = nn.Linear(2, 2), nn.Linear(2, 2)
    local ema = optim.EMA(average, model, {decay = 0.5})
    for _ = 1, 60 do ema:update() end
    local a0 = average.weight:clone()
    ember.no_grad(function() model.weight:add_(2) end)
    ema:update() -- rate (1 - 0.5) / (1 - 0.5^61) = 0.5 to float precision
    assert.is_true((average.weight - (a0 + (model.weight - a0) * 0.5)):abs():max():item() < 1e-6)
    assert.are.same({decay = 0.5, updates = 61}, ema:state_dict())
    local other = optim.EMA(nn.Linear(2, 2), nn.Linear(2, 2), {decay = 0.9})
    other:load_state_dict(ema:state_dict())
    assert.are.equal(61, other.updates)
    assert.are.equal(0.5, other.decay)
    expect_error('optim.EMA:load_state_dict: expected {decay = number, updates = integer >= 0}', other.load_state_dict, other, {updates = -1, decay = 0.5})
    ema:reset()
    assert.are.equal(0, ema.updates)
  end)

  it('defaults to decay 0.999 and records no gradients', function()
    local model, average = net(), net()
    local ema = optim.EMA(average, model)
    assert.are.equal(0.999, ema.decay)
    ema:update()
    assert.is_nil(average[1].weight.grad)
    assert.is_nil(average[1].weight.grad_fn)
  end)

  it('refuses bad arguments and modules of different structure', function()
    local model = net()
    expect_error('optim.EMA: average (argument 1) must be a module, got 3', optim.EMA, 3, model)
    expect_error('optim.EMA: model (argument 2) must be a module, got nil', optim.EMA, net())
    expect_error('optim.EMA: average (argument 1) must be a module, got a plain table', optim.EMA, {}, model)
    expect_error('optim.EMA: decay must be a number in [0, 1), got 1', optim.EMA, net(), model, {decay = 1})
    expect_error('optim.EMA: opts (argument 3) must be a table, got number', optim.EMA, net(), model, 0.9)
    expect_error('optim.EMA: parameter "1.weight" is [5 x 3] in the average but [4 x 3] in the model',
      optim.EMA, nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(4), nn.Linear(4, 2)), model)
    expect_error('optim.EMA: the average has no parameter "3.weight"', optim.EMA,
      nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), model)
    expect_error('optim.EMA: the model has no parameter "3.bias"', optim.EMA,
      model, nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
  end)
end)
