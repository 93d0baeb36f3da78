-- Specs for ember.files: the file helpers under runs and sweeps (numbers that round-trip,
-- Lua tables as files, CSV, atomic writes).
require 'ember' -- installs the embedded modules
local files = require 'ember.files'

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

describe('ember.files', function()
  it('is the same table as ember.recipe.files', function()
    assert.are.equal(files, require('ember.recipe').files)
  end)

  it('writes numbers as the shortest text that reads back exactly', function()
    for _, v in ipairs {0.1, 1 / 3, 2.5e-8, 1e300, -7.0, 3} do
      assert.are.equal(v, tonumber(files.number(v)), files.number(v))
    end
    assert.are.equal('3', files.number(3))
    assert.are.equal('-7.0', files.number(-7.0))
    assert.are.equal('nan', files.number(0 / 0))
    assert.are.equal('inf', files.number(math.huge))
  end)

  it('round-trips CSV with quoted fields and numbers', function()
    assert.are.equal('"a,b"', files.csv_field('a,b'))
    assert.are.equal('"say ""hi"""', files.csv_field('say "hi"'))
    assert.are.equal('', files.csv_field(nil))
    local path = tmpname()
    local text = files.csv_text({'name', 'x'}, {{name = 'a,b', x = 0.1}, {name = 'plain', x = 2}})
    files.write_atomic(path, text)
    local header, rows = files.read_csv(path)
    os.remove(path)
    assert.are.same({'name', 'x'}, header)
    assert.are.equal('a,b', rows[1].name)
    assert.are.equal(0.1, rows[1].x)
    assert.are.equal(2, rows[2].x)
  end)

  it('writes Lua tables that read back equal, atomically', function()
    local path = tmpname()
    local value = {lr = 1e-3, name = 'x "quoted"\n', list = {1, 2, 3}, nested = {on = true}}
    files.write_lua(path, value)
    assert.are.same(value, files.read_lua(path))
    assert.is_true(files.exists(path))
    assert.is_nil(files.read(path .. '.tmp'))
    os.remove(path)
    assert.is_nil(files.read_lua(path))
  end)
end)
