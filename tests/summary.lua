-- summary.lua — a busted output handler: "ok - name" / "not ok - name" per
-- test (with the failure message), then one line "N passed, M failed".
-- Errors outside a test (a spec file that fails to load) count as failures.
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.base'()
  local passed, failed = 0, 0

  local function show_failure(t)
    io.write('not ok - ', t.name or '?', '\n')
    local trace = t.element and t.element.trace
    if trace and trace.short_src then
      io.write('    ', trace.short_src, ':', tostring(trace.currentline), '\n')
    end
    io.write('    ', (tostring(t.message):gsub('\n', '\n    ')), '\n')
    if t.trace and t.trace.traceback then
      io.write('    ', (t.trace.traceback:gsub('\n', '\n    ')), '\n')
    end
  end

  handler.testEnd = function(element, parent, status)
    if status == 'success' then
      passed = passed + 1
      io.write('ok - ', handler.successes[#handler.successes].name, '\n')
    elseif status == 'pending' then
      passed = passed + 1
      io.write('ok - ', handler.pendings[#handler.pendings].name, ' # SKIP\n')
    elseif status == 'failure' then
      failed = failed + 1
      show_failure(handler.failures[#handler.failures])
    elseif status == 'error' then
      failed = failed + 1
      show_failure(handler.errors[#handler.errors])
    end
    io.flush()
    return nil, true
  end

  handler.error = function(element, parent, message, debug)
    if element.descriptor ~= 'it' then
      failed = failed + 1
      show_failure(handler.errors[#handler.errors])
      io.flush()
    end
    return nil, true
  end

  handler.suiteEnd = function()
    io.write(('%d passed, %d failed\n'):format(passed, failed))
    io.flush()
    return nil, true
  end

  busted.subscribe({ 'test', 'end' }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ 'error' }, handler.error)
  busted.subscribe({ 'suite', 'end' }, handler.suiteEnd)
  return handler
end
