-- summary.lua — a busted output handler: "ok - name" / "not ok - name" per
-- test with the failure message, then one line "N passed, M failed".
return function(options)
  local busted = require 'busted'
  local handler = require 'busted.outputHandlers.base'()
  local function name_of(element)
    return handler.getFullName(element)
  end
  busted.subscribe({ 'test', 'end' }, function(element, parent, status)
    if status == 'success' then
      io.write('ok - ', name_of(element), '\n')
    elseif status == 'pending' then
      io.write('ok - ', name_of(element), ' # SKIP\n')
    end
    io.flush()
    return nil, true
  end)
  local function report(element, parent, message, trace)
    io.write('not ok - ', element and name_of(element) or '?', '\n')
    io.write('    ', tostring(message):gsub('\n', '\n    '), '\n')
    if trace and trace.traceback then io.write('    ', trace.traceback:gsub('\n', '\n    '), '\n') end
    io.flush()
    return nil, true
  end
  busted.subscribe({ 'failure', 'it' }, report)
  busted.subscribe({ 'error', 'it' }, report)
  busted.subscribe({ 'failure' }, report)
  busted.subscribe({ 'error' }, report)
  busted.subscribe({ 'suite', 'end' }, function()
    local passed = #handler.successes + #handler.pendings
    local failed = #handler.failures + #handler.errors
    io.write(('%d passed, %d failed\n'):format(passed, failed))
    io.flush()
    return nil, true
  end)
  handler:subscribe(options)
  return handler
end
