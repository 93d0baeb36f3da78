-- ember.metrics — a CSV log of training numbers, and reading it back.
--
--   local log = metrics.csv('runs/vae/metrics.csv')
--   log:write{step = 1, loss = 0.52, kl = 3.1}      -- one row, flushed at once
--   print(log:summary())                            -- last / min / max / mean per column
--   local cols, names = metrics.read_csv('runs/vae/metrics.csv')   -- cols.loss = {...}
--
-- Columns come from the first row's keys (or opts.columns): 'epoch', 'step',
-- 'iter', 'batch', 'time' first when present, then the rest in alphabetical
-- order, so the header is the same on every run. A later row may leave a
-- column out (an empty cell) but may not add a new key: that is an error
-- naming the key, since a CSV cannot grow a column without rewriting what was
-- written (declare every column in the first row or with opts.columns).
-- Values: numbers, 0-dim/1-element tensors, booleans (1/0) and strings.
local ember = require 'ember'

local metrics = {}

local FIRST = { 'epoch', 'step', 'iter', 'batch', 'time' }

local function fail(fname, msg, level)
  error(fname .. ': ' .. msg, (level or 2) + 1)
end

-- io.open's message without the file name it starts with.
local function io_reason(path, err)
  err = tostring(err)
  if err:sub(1, #path + 2) == path .. ': ' then return err:sub(#path + 3) end
  return err
end

local function typename(v)
  return ember.is_tensor(v) and 'tensor' or type(v)
end

-- Stable column order for a set of keys.
local function order_columns(keys)
  local set, out = {}, {}
  for _, k in ipairs(keys) do set[k] = true end
  for _, k in ipairs(FIRST) do
    if set[k] then out[#out + 1] = k; set[k] = nil end
  end
  local rest = {}
  for k in pairs(set) do rest[#rest + 1] = k end
  table.sort(rest)
  for _, k in ipairs(rest) do out[#out + 1] = k end
  return out
end

local function csv_field(s)
  if s:find('[,"\r\n]') or s:match('^%s') or s:match('%s$') then
    return '"' .. s:gsub('"', '""') .. '"'
  end
  return s
end

-- One cell's text for a row value.
local function cell(fname, key, v)
  if v == nil then return '' end
  if ember.is_tensor(v) then
    if v:numel() ~= 1 then
      fail(fname, ("value of '%s' is a tensor of %d elements, expected one"):format(key, v:numel()), 4)
    end
    v = v:item()
  end
  local t = type(v)
  if t == 'number' then
    if math.type(v) == 'integer' then return tostring(v) end
    if v ~= v then return 'nan' end
    if v == math.huge then return 'inf' end
    if v == -math.huge then return '-inf' end
    return ('%.9g'):format(v)
  elseif t == 'boolean' then
    return v and '1' or '0'
  elseif t == 'string' then
    return csv_field(v)
  end
  fail(fname, ("value of '%s' must be a number, tensor, boolean or string, got %s"):format(key, t), 4)
end

-- Splits one CSV line into fields (quoted fields may hold commas and "").
local function split_csv(line)
  local fields, i, n = {}, 1, #line
  while true do
    if line:sub(i, i) == '"' then
      local buf, j = {}, i + 1
      while true do
        local q = line:find('"', j, true)
        if not q then return nil end
        buf[#buf + 1] = line:sub(j, q - 1)
        if line:sub(q + 1, q + 1) == '"' then
          buf[#buf + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      fields[#fields + 1] = table.concat(buf)
      if i > n then break end
      if line:sub(i, i) ~= ',' then return nil end
      i = i + 1
    else
      local c = line:find(',', i, true)
      if not c then
        fields[#fields + 1] = line:sub(i)
        break
      end
      fields[#fields + 1] = line:sub(i, c - 1)
      i = c + 1
    end
  end
  return fields
end

local files = require 'ember.files'
-- A cell as a number (nan and inf as ember.files writes them), or nil.
local to_number = files.to_number

--- metrics.read_csv(path) -> columns, names
-- columns[name] is a list (numbers; an empty cell is NaN) or, for a column
-- with any non-numeric cell, a list of strings; names lists the header order.
function metrics.read_csv(path)
  if type(path) ~= 'string' then fail('read_csv', ('expected a file name, got %s'):format(typename(path))) end
  local kind, what = files.kind(path)
  if kind and kind ~= 'file' then
    fail('read_csv', ("'%s' is %s, not a regular file"):format(path, what))
  end
  local f, err = io.open(path, 'rb')
  if not f then fail('read_csv', ("cannot open '%s': %s"):format(path, io_reason(path, err))) end
  local header = f:read('l')
  if not header or header:gsub('\r$', '') == '' then
    f:close()
    fail('read_csv', ("'%s' is empty (no header line)"):format(path))
  end
  local names = split_csv((header:gsub('\r$', '')))
  if not names then f:close() fail('read_csv', ("'%s' line 1: unbalanced quotes"):format(path)) end
  local raw = {}
  for j = 1, #names do raw[j] = {} end
  local lineno, rows = 1, 0
  for line in f:lines() do
    lineno = lineno + 1
    line = line:gsub('\r$', '')
    if line ~= '' then
      local fields = split_csv(line)
      if not fields then f:close() fail('read_csv', ("'%s' line %d: unbalanced quotes"):format(path, lineno)) end
      if #fields ~= #names then
        f:close()
        fail('read_csv', ("'%s' line %d has %d fields, the header has %d"):format(path, lineno, #fields, #names))
      end
      rows = rows + 1
      for j = 1, #names do raw[j][rows] = fields[j] end
    end
  end
  f:close()
  local cols = {}
  for j, name in ipairs(names) do
    local numeric = true
    for r = 1, rows do
      local s = raw[j][r]
      if s ~= '' and to_number(s) == nil then numeric = false break end
    end
    local col = {}
    for r = 1, rows do
      local s = raw[j][r]
      if numeric then col[r] = s == '' and 0 / 0 or to_number(s) else col[r] = s end
    end
    cols[name] = col
  end
  return cols, names
end

local Summary = {}
Summary.__index = Summary
function Summary.__tostring(s)
  local lines = { ('%-16s %12s %12s %12s %12s %7s'):format('column', 'last', 'min', 'max', 'mean', 'count') }
  for _, name in ipairs(s.names) do
    local c = s[name]
    lines[#lines + 1] = ('%-16s %12.6g %12.6g %12.6g %12.6g %7d'):format(name, c.last, c.min, c.max, c.mean, c.count)
  end
  return table.concat(lines, '\n')
end

--- metrics.summary(path_or_columns [, names]) -> {name = {last, min, max, mean, count}, names = {...}}
-- Over the numeric columns, ignoring NaN cells; prints as a table with print().
function metrics.summary(cols, names)
  if type(cols) == 'string' then cols, names = metrics.read_csv(cols) end
  if type(cols) ~= 'table' then fail('summary', ('expected a CSV path or columns, got %s'):format(typename(cols))) end
  if names == nil then
    names = {}
    for k in pairs(cols) do names[#names + 1] = k end
    names = order_columns(names)
  end
  local out = setmetatable({ names = {} }, Summary)
  for _, name in ipairs(names) do
    local col = cols[name]
    local count, sum, mn, mx, last = 0, 0, math.huge, -math.huge, 0 / 0
    local numeric = true
    for _, v in ipairs(col) do
      if type(v) ~= 'number' then numeric = false break end
      if v == v then
        count, sum, last = count + 1, sum + v, v
        if v < mn then mn = v end
        if v > mx then mx = v end
      end
    end
    if numeric and count > 0 then
      out[name] = { last = last, min = mn, max = mx, mean = sum / count, count = count }
      out.names[#out.names + 1] = name
    end
  end
  return out
end

local Log = {}
Log.__index = Log

--- metrics.csv(path [, {columns = {...}, append = false}]) -> log
-- append = true keeps an existing file's rows and header (resuming a run).
function metrics.csv(path, opts)
  if type(path) ~= 'string' or path == '' then
    fail('csv', ('bad argument #1 (expected a file name, got %s)'):format(typename(path)))
  end
  if opts ~= nil and type(opts) ~= 'table' then
    fail('csv', ('bad argument #2 (expected an options table, got %s)'):format(typename(opts)))
  end
  opts = opts or {}
  local columns
  if opts.columns ~= nil then
    if type(opts.columns) ~= 'table' or #opts.columns == 0 then
      fail('csv', 'columns must be a non-empty list of names')
    end
    columns = {}
    for i, c in ipairs(opts.columns) do
      if type(c) ~= 'string' or c == '' then fail('csv', ('columns[%d] must be a name'):format(i)) end
      columns[i] = c
    end
  end
  local mode = 'wb'
  local kind, what = files.kind(path)
  if kind and kind ~= 'file' then -- opening a named pipe to write waits for a reader
    fail('csv', ("'%s' is %s, not a regular file"):format(path, what))
  end
  if opts.append then
    local f = io.open(path, 'rb')
    local header = f and f:read('l')
    if f then f:close() end
    if header and header ~= '' then
      local existing = split_csv((header:gsub('\r$', '')))
      if not existing then fail('csv', ("'%s' has a malformed header"):format(path)) end
      if columns and table.concat(columns, ',') ~= table.concat(existing, ',') then
        fail('csv', ("'%s' has columns %s, not the %s asked for"):format(path,
          table.concat(existing, ', '), table.concat(columns, ', ')))
      end
      columns = existing
      mode = 'ab'
    end
  end
  local f, err = io.open(path, mode)
  if not f then fail('csv', ("cannot write '%s': %s"):format(path, io_reason(path, err))) end
  local log = setmetatable({ path = path, file = f, columns = columns, rows = 0,
    header_written = mode == 'ab' }, Log)
  if columns and not log.header_written then log:_header() end
  return log
end

function Log:_header()
  local names = {}
  for i, c in ipairs(self.columns) do names[i] = csv_field(c) end
  self.file:write(table.concat(names, ','), '\n')
  self.file:flush()
  self.header_written = true
end

--- log:write(row): appends one row (a table of column = value) and flushes.
function Log:write(row)
  if not self.file then fail('write', ("the log '%s' is closed"):format(self.path)) end
  if type(row) ~= 'table' then fail('write', ('expected a row table, got %s'):format(typename(row))) end
  if not self.columns then
    local keys = {}
    for k in pairs(row) do
      if type(k) ~= 'string' then fail('write', ('column names must be strings, got %s'):format(type(k))) end
      keys[#keys + 1] = k
    end
    if #keys == 0 then fail('write', 'the first row is empty') end
    self.columns = order_columns(keys)
  end
  if not self.known then
    self.known = {}
    for _, c in ipairs(self.columns) do self.known[c] = true end
  end
  if not self.header_written then self:_header() end
  for k in pairs(row) do
    if not self.known[k] then
      fail('write', ("row %d has key '%s', which is not a column of '%s' (columns: %s); declare every "
        .. 'column in the first row or with metrics.csv(path, {columns = ...})'):format(
        self.rows + 1, tostring(k), self.path, table.concat(self.columns, ', ')))
    end
  end
  local cells = {}
  for i, c in ipairs(self.columns) do cells[i] = cell('write', c, row[c]) end
  self.file:write(table.concat(cells, ','), '\n')
  self.file:flush()
  self.rows = self.rows + 1
end

--- log:summary() -> per-column last/min/max/mean/count (print() shows a table).
function Log:summary()
  if self.file then self.file:flush() end
  if not self.header_written then return metrics.summary({}, {}) end
  return metrics.summary(self.path)
end

--- log:close() (also <close> and garbage collection).
function Log:close()
  if self.file then
    self.file:close()
    self.file = nil
  end
end
Log.__close = function(self) self:close() end
Log.__gc = Log.close

return metrics
