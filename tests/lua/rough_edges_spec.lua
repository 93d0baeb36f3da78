-- rough_edges_spec.lua — small things a new user tripped over (issue 14, item 7): a
-- wall-clock timer in the library, a run that ends by naming its folder and pictures,
-- a one-seed sweep that shows no spread as "n/a" (not "± 0").
local ember = require 'ember'
local recipe = require 'ember.recipe'
local h = require 'tests.lua.helpers.common'
local q, sh, read, tmpdir = h.q, h.sh, h.read, h.tmpdir

local TINY = h.ROOT .. '/examples/tiny.lua'

describe('ember.clock', function()
  it('is wall time, not the CPU time of os.clock', function()
    assert.are.equal('function', type(ember.clock))
    local t0, c0 = ember.clock(), os.clock()
    os.execute('sleep 0.3') -- a child sleeping: wall time passes, this process's CPU does not
    local wall, cpu = ember.clock() - t0, os.clock() - c0
    assert.is_true(wall >= 0.29 and wall < 5, 'wall ' .. wall)
    assert.is_true(cpu < 0.2, 'cpu ' .. cpu)
  end)
end)

describe('the end of a run', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('names the run folder and the pictures, last', function()
    local out, code = sh('cd ' .. q(dir) .. ' && ' .. q(h.EMBER) .. ' run ' .. q(TINY)
      .. ' --set epochs=1 --threads 1 --out r')
    assert.are.equal(0, code, out)
    local last = out:gsub('%s+$', ''):match('[^\n]*$')
    assert.are.equal('run folder: r; pictures in r/samples: surface.png', last)
  end)
end)

describe('a sweep with one seed', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('shows the spread as n/a, not ± 0, and leaves the std cell empty', function()
    local out, code = sh('cd ' .. q(dir) .. ' && ' .. q(h.EMBER) .. ' sweep ' .. q(TINY)
      .. ' --grid hidden=4,5 --set epochs=1 --jobs 1 --threads 1 --out s')
    assert.are.equal(0, code, out)
    assert.truthy(out:find('test_loss %S+ ± n/a'), out)
    assert.falsy(out:find('± 0\n', 1, true), out)
    local md = read(dir .. '/s/summary.md')
    assert.truthy(md:find('| %S+ ± n/a |'), md)
    local _, rows = recipe.files.read_csv(dir .. '/s/summary.csv')
    assert.is_number(rows[1].test_loss_mean)
    assert.is_nil(rows[1].test_loss_std)
  end)
end)
