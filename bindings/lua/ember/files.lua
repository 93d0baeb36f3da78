-- ember.files — the file helpers of runs and sweeps: numbers that round-trip through
-- text, Lua tables as files, CSV, atomic writes, paths and shell quoting. Also reachable
-- as require('ember.recipe').files.
--
--   local files = require 'ember.files'
--   files.write_atomic('out.txt', 'text')        -- written to a temporary name, then renamed
--   files.write_lua('config.lua', {lr = 1e-3})   -- read back with files.read_lua
--   local header, rows = files.read_csv('metrics.csv')

local files = {}

--- files.number(v) -> the shortest decimal text that reads back as exactly v.
function files.number(v)
  if math.type(v) == 'integer' then return tostring(v) end
  if v ~= v then return 'nan' end
  if v == math.huge then return 'inf' end
  if v == -math.huge then return '-inf' end
  if v == math.floor(v) and math.abs(v) < 2^53 then return string.format('%.1f', v) end
  for digits = 15, 17 do
    local s = string.format('%.' .. digits .. 'g', v)
    if tonumber(s) == v then return s end
  end
  return string.format('%.17g', v)
end

--- files.to_number(text) -> the number written by files.number (nan and inf included), or nil.
function files.to_number(s)
  if s == 'nan' or s == '-nan' then return 0 / 0 end
  if s == 'inf' then return math.huge end
  if s == '-inf' then return -math.huge end
  return tonumber(s)
end

--- files.kind(path) -> 'file', 'directory', 'fifo', 'socket', 'device' or 'other',
--- and a description ("a named pipe (FIFO)"); or nil, message. It never opens path:
--- opening a named pipe waits for a writer, so every reader asks this first.
function files.kind(path)
  return require('ember')._file_kind(path)
end

--- files.list(dir) -> the sorted names in dir (no . and ..), or nil, message.
function files.list(dir)
  local names, err = require('ember')._list_dir(dir)
  if names then table.sort(names) end
  return names, err
end

--- files.check_regular(path) -> true, or nil and "<path>: is a named pipe (FIFO),
--- not a regular file" (or why it cannot be read).
function files.check_regular(path)
  local kind, what = files.kind(path)
  if kind == nil then return nil, what end
  if kind ~= 'file' then return nil, path .. ': is ' .. what .. ', not a regular file' end
  return true
end

--- files.exists(path) -> whether path exists (a regular file only if it can be
--- opened for reading); never blocks on a named pipe.
function files.exists(path)
  local kind = files.kind(path)
  if kind == nil then return false end
  if kind ~= 'file' then return true end
  local f = io.open(path, 'rb')
  if f then f:close() return true end
  return false
end

--- files.read(path) -> the whole file as a string, or nil, message.
function files.read(path)
  local ok, why = files.check_regular(path)
  if not ok then return nil, why end
  local f, err = io.open(path, 'rb')
  if not f then return nil, err end
  local s = f:read('a')
  f:close()
  return s
end

--- files.write_atomic(path, text): writes path.tmp then renames it over path, so a
--- reader (or a crash) never sees half a file.
function files.write_atomic(path, text)
  local tmp = path .. '.tmp'
  local f = assert(io.open(tmp, 'wb'))
  assert(f:write(text))
  assert(f:close())
  assert(os.rename(tmp, path))
end

--- files.cores() -> the number of CPU cores of this machine (1 when unknown).
function files.cores()
  return math.tointeger(tonumber(files.command_output('nproc') or '1')) or 1
end

--- files.quote(s) -> s quoted for the POSIX shell.
function files.quote(s)
  s = tostring(s)
  if s:match('^[%w%._/%-=:,+@]+$') then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- files.mkdir(path): creates path and its parents (mkdir -p); errors on failure.
function files.mkdir(path)
  local ok = os.execute('mkdir -p ' .. files.quote(path))
  if not ok then error('cannot create directory ' .. path, 0) end
end

--- files.is_dir(path) -> whether path is a directory.
function files.is_dir(path)
  return os.execute('test -d ' .. files.quote(path)) == true
end

local cwd -- the current directory, asked once (PWD can be stale after a parent's chdir)

--- files.absolute(path) -> path made absolute against the current directory.
function files.absolute(path)
  if path:sub(1, 1) == '/' then return path end
  cwd = cwd or files.command_output('pwd') or os.getenv('PWD') or '.'
  return cwd .. '/' .. path:gsub('^%./', '')
end

--- files.dirname(path) -> the folder part of path ('.' when there is none).
function files.dirname(path)
  return path:match('^(.*)/[^/]*$') or '.'
end

--- files.command_output(cmd) -> the first line cmd prints, or nil.
function files.command_output(cmd)
  local p = io.popen(cmd .. ' 2>/dev/null')
  if not p then return nil end
  local line = p:read('l')
  p:close()
  if line == nil or line == '' then return nil end
  return line
end

-- Serializes a value as Lua source (sorted keys, numbers that round-trip).
local function serialize(v, indent, out)
  local t = type(v)
  if t == 'number' then
    local s = files.number(v)
    if s == 'nan' then s = '0/0' elseif s == 'inf' then s = '1/0' elseif s == '-inf' then s = '-1/0' end
    out[#out + 1] = s
  elseif t == 'string' then
    out[#out + 1] = string.format('%q', v)
  elseif t == 'boolean' then
    out[#out + 1] = tostring(v)
  elseif t == 'table' then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) == 'number'
    end)
    if #keys == 0 then out[#out + 1] = '{}' return end
    out[#out + 1] = '{\n'
    local pad = indent .. '  '
    for _, k in ipairs(keys) do
      out[#out + 1] = pad
      if type(k) == 'string' and k:match('^[%a_][%w_]*$') then
        out[#out + 1] = k
      else
        out[#out + 1] = '['
        serialize(k, pad, out)
        out[#out + 1] = ']'
      end
      out[#out + 1] = ' = '
      serialize(v[k], pad, out)
      out[#out + 1] = ',\n'
    end
    out[#out + 1] = indent .. '}'
  elseif v == nil then
    out[#out + 1] = 'nil'
  else
    error('cannot write a ' .. t .. ' into a Lua data file', 0)
  end
end

--- files.lua_text(value) -> the text write_lua writes ("return {...}"): load it with
--- load(text, 'value', 't', {}).
function files.lua_text(value)
  local out = {'return '}
  serialize(value, '', out)
  return table.concat(out)
end

--- files.write_lua(path, value): writes `return <value>` atomically (tables of numbers,
--- strings, booleans).
function files.write_lua(path, value)
  local out = {'return '}
  serialize(value, '', out)
  out[#out + 1] = '\n'
  files.write_atomic(path, table.concat(out))
end

--- files.read_lua(path) -> the value a file written by write_lua returns, or nil, message.
function files.read_lua(path)
  local ok, why = files.check_regular(path)
  if not ok then return nil, why end
  local chunk, err = loadfile(path, 't', {})
  if not chunk then return nil, err end
  local ok, v = pcall(chunk)
  if not ok then return nil, path .. ': ' .. tostring(v) end
  return v
end

--- files.csv_field(v) -> one CSV field: numbers round-trip, text quoted when it needs to be.
local function csv_field(v)
  if v == nil then return '' end
  if type(v) == 'number' then return files.number(v) end
  local s = tostring(v)
  if s:find('[,"\n\r]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end
files.csv_field = csv_field

-- Splits one CSV line into its fields (quoted fields may hold commas and quotes).
local function csv_split(line)
  local fields, i, n = {}, 1, #line
  while i <= n + 1 do
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while j <= n do
        local c = line:sub(j, j)
        if c == '"' then
          if line:sub(j + 1, j + 1) == '"' then buf[#buf + 1] = '"'; j = j + 2
          else j = j + 1 break end
        else buf[#buf + 1] = c; j = j + 1 end
      end
      fields[#fields + 1] = table.concat(buf)
      i = j + 1
    else
      local j = line:find(',', i, true) or (n + 1)
      fields[#fields + 1] = line:sub(i, j - 1)
      i = j + 1
    end
  end
  return fields
end

--- files.read_csv(path) -> header (list of names), rows (list of {name = value}); values
--- that look like numbers come back as numbers, empty fields as nil. nil when no file.
function files.read_csv(path)
  local text = files.read(path)
  if not text then return nil end
  local header, rows = nil, {}
  for line in text:gmatch('[^\n]+') do
    line = line:gsub('\r$', '')
    local fields = csv_split(line)
    if not header then
      header = fields
    else
      local row = {}
      for i, name in ipairs(header) do
        local s = fields[i]
        if s ~= nil and s ~= '' then row[name] = files.to_number(s) or s end
      end
      rows[#rows + 1] = row
    end
  end
  return header or {}, rows
end

--- files.csv_text(header, rows) -> CSV text with that header and those rows.
function files.csv_text(header, rows)
  local lines = {table.concat(header, ',')}
  for _, row in ipairs(rows) do
    local f = {}
    for i, name in ipairs(header) do f[i] = csv_field(row[name]) end
    lines[#lines + 1] = table.concat(f, ',')
  end
  return table.concat(lines, '\n') .. '\n'
end

return files
