-- pretty_spec.lua — ember.pretty.format, the text the REPL prints for a plain table.
local ember = require 'ember'
local pretty = ember.pretty

describe('ember.pretty.format', function()
  it('writes a table as a Lua constructor, list first, then sorted keys', function()
    assert.are.equal('{}', pretty.format({}))
    assert.are.equal('{1, 2, 3}', pretty.format({ 1, 2, 3 }))
    assert.are.equal('{10, 20, [5] = 50, a = 1, b = true, ["end"] = 0, ["two words"] = "x"}',
      pretty.format({ 10, 20, [5] = 50, b = true, a = 1, ['two words'] = 'x', ['end'] = 0 }))
    assert.are.equal('{s = "a\\nb \\"q\\""}', pretty.format({ s = 'a\nb "q"' }))
    assert.are.equal('{inner = {x = 1}, list = {{1}, {2}}}', pretty.format({ list = { { 1 }, { 2 } }, inner = { x = 1 } }))
  end)

  it('numbers: integers exact, floats with 7 digits, 3.0 stays a float', function()
    assert.are.equal('{3, 3.0, 0.3333333, 1e-10, inf, -inf, nan, 123456789}',
      pretty.format({ 3, 3.0, 1 / 3, 1e-10, math.huge, -math.huge, 0 / 0, 123456789 }))
    assert.are.equal('{0.333333333333333}', pretty.format({ 1 / 3 }, { digits = 15 }))
  end)

  it("t:stats() prints every field on one line", function()
    local s = pretty.format(ember.tensor { 1, 2, 3, 4 }:stats())
    assert.are.equal('{inf = 0, max = 4.0, mean = 2.5, min = 1.0, nan = 0, numel = 4, std = 1.290994}', s)
  end)

  it('tensors by shape, objects by their first line, cycles and depth cut short', function()
    local lin = ember.nn.Linear(2, 3)
    local first = tostring(lin):match('^[^\n]*')
    local want_lin = first == tostring(lin) and first or first .. ' ...'
    assert.are.equal('{model = ' .. want_lin .. ', x = ember.Tensor [2 x 3]}',
      pretty.format({ x = ember.zeros(2, 3), model = lin }))
    local c = { name = 'c' }
    c.self = c
    assert.are.equal('{name = "c", self = <cycle>}', pretty.format(c))
    assert.are.equal('{a = {b = {...}}}', pretty.format({ a = { b = { c = { 1 } } } }, { depth = 2 }))
    -- the same table twice (not a cycle) is written twice
    local shared = { 1 }
    assert.are.equal('{{1}, {1}}', pretty.format({ shared, shared }))
  end)

  it('long tables are cut and wrapped one entry per line', function()
    local t = {}
    for i = 1, 50 do t[i] = i end
    local s = pretty.format(t, { max_items = 3 })
    assert.are.equal('{1, 2, 3, ... (47 more)}', s)
    local wide = pretty.format({ alpha = ('a'):rep(30), beta = ('b'):rep(30), gamma = ('c'):rep(30) })
    assert.are.equal('{\n  alpha = "' .. ('a'):rep(30) .. '",\n  beta = "' .. ('b'):rep(30)
      .. '",\n  gamma = "' .. ('c'):rep(30) .. '"\n}', wide)
    local nested = pretty.format({ inner = { alpha = ('a'):rep(60), beta = ('b'):rep(60) } })
    assert.are.equal('{\n  inner = {\n    alpha = "' .. ('a'):rep(60) .. '",\n    beta = "' .. ('b'):rep(60)
      .. '"\n  }\n}', nested)
  end)

  it('lists what __pairs lists (ember.nn.functional)', function()
    local s = pretty.format(ember.nn.functional, { max_items = 200, width = 100000 })
    assert.is_truthy(s:find('relu = function', 1, true), s)
    assert.is_truthy(s:find('mse_loss = function', 1, true), s)
  end)

  it('never asks __index (a table that raises there still prints)', function()
    local odd = setmetatable({ a = 1 }, { __index = function() error('asked __index') end })
    assert.are.equal('{a = 1}', pretty.format(odd))
    assert.are.equal('{{}, {...}}', pretty.format({ {}, { 1 } }, { depth = 1 }))
  end)

  it('bad options are named', function()
    assert.has_error(function() pretty.format({}, 5) end,
      "pretty.format: bad argument #2 'opts' (expected a table like {width = 80}, got number)")
    assert.has_error(function() pretty.format({}, { digits = 0 }) end,
      "pretty.format: option 'digits' must be an integer >= 1, got 0")
    assert.has_error(function() pretty.format({}, { colour = 1 }) end,
      "pretty.format: unknown option 'colour' (expected width, depth, max_items, digits)")
  end)
end)
