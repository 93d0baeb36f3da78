-- tests/lua/helpers/common.lua — what the specs share: paths, shell commands, files,
-- waiting, and the error-message check. Specs run from the repository root:
--   local h = require 'tests.lua.helpers.common'
local h = {}

--- The repository root and the ember program under test.
h.ROOT = os.getenv('PWD')
h.EMBER = os.getenv('EMBER_BIN') or (h.ROOT .. '/build/ember')

--- q(s) -> s quoted for the shell.
function h.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- sh(cmd) -> its output (stdout and stderr together), exit status.
function h.sh(cmd)
  local p = io.popen(cmd .. ' 2>&1; echo "__exit=$?"')
  local out = p:read('a')
  p:close()
  local code = tonumber(out:match('__exit=(%d+)%s*$'))
  return out:gsub('__exit=%d+%s*$', ''), code
end

--- read(path) -> the file's bytes, or nil when it cannot be opened.
function h.read(path)
  local f = io.open(path, 'rb')
  if not f then return nil end
  local s = f:read('a')
  f:close()
  return s
end

--- exists(path) -> whether path can be opened for reading.
function h.exists(path)
  local f = io.open(path, 'rb')
  if f then f:close() return true end
  return false
end

--- read_lua(path) -> the value a Lua data file returns (no globals visible to it).
function h.read_lua(path) return loadfile(path, 't', {})() end

--- tmpdir() -> a fresh empty directory.
function h.tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute('mkdir -p ' .. h.q(path)))
  return path
end

--- wait_until(fn [, seconds=30]) -> true once fn() is true, false after `seconds` (bounded wait).
function h.wait_until(fn, seconds)
  local deadline = os.time() + (seconds or 30)
  while os.time() <= deadline do
    if fn() then return true end
    os.execute('sleep 0.05')
  end
  return false
end

--- raises(text, fn, ...): fn(...) must fail with a message containing text.
function h.raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then error('expected an error containing: ' .. text, 2) end
  err = tostring(err)
  if not err:find(text, 1, true) then
    error(('error "%s" does not contain "%s"'):format(err, text), 2)
  end
end

return h
