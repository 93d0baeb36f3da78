-- traceback_spec.lua — a traceback names the function the user called. Lua names a
-- C function in a traceback by the first loaded module's field that holds the same
-- value, so no two names of the ember table (or of the tensor methods, apart from a
-- method and the module function of the same name) may share one function value.
local ember = require 'ember'
local h = require 'tests.lua.helpers.common'

-- run(code) -> stderr and stdout of ember running code as a script file, exit status
local function run(code)
  local script = os.tmpname()
  local f = assert(io.open(script, 'w'))
  f:write(code)
  f:close()
  local out, status = h.sh(h.q(h.EMBER) .. ' ' .. h.q(script))
  os.remove(script)
  return out, status
end

describe('traceback names', function()
  it('no two names of ember or its tensor methods share a function value', function()
    local owner = {}
    for _, tbl in ipairs({ ember, ember.Tensor }) do
      for k, v in pairs(tbl) do
        if type(v) == 'function' then
          assert.is_true(owner[v] == nil or owner[v] == k,
            ("'%s' and '%s' are one function value"):format(tostring(owner[v]), k))
          owner[v] = k
        end
      end
    end
  end)

  it('x:matmul in a traceback is matmul, x:mm is mm', function()
    local out, status = run('local x = ember.zeros(2, 3)\nlocal y = x:matmul(ember.zeros(4, 5))\n')
    assert.are.equal(1, status, out)
    assert.is_truthy(out:find("in function 'ember.matmul'", 1, true), out)
    assert.is_falsy(out:find('ember.mm', 1, true), out)
    out, status = run('local x = ember.zeros(2, 3)\nlocal y = x:mm(5)\n')
    assert.are.equal(1, status, out)
    assert.is_truthy(out:find('mm: bad argument #2 (expected tensor, got number)', 1, true), out)
    assert.is_truthy(out:find("in function 'ember.mm'", 1, true), out)
  end)

  it('mm computes matmul', function()
    local a, b = ember.randn(3, 4), ember.randn(4, 2)
    assert.is_true((a:mm(b) - a:matmul(b)):abs():max():item() == 0)
  end)
end)
