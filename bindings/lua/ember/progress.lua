-- ember.progress — progress for long loops.
--
--   local bar = progress.new(#loader, {desc = 'epoch 1'})
--   for x, y in loader:iter() do ...; bar:update(1, {loss = l}) end
--   bar:close()
--
-- On a terminal: one line redrawn in place (\r), at most every 0.1 s:
--   epoch 1  45% [=========>           ] 211/469 00:04<00:05 48.2 it/s loss=0.3121
-- Otherwise (a log file, CI, a pipe): plain lines, one each time another 10%
-- is done or 30 s have passed, and one at the end:
--   epoch 1: 211/469 (45%) elapsed 00:04, eta 00:05, 48.2 it/s, loss=0.3121
-- The rate is the average since the start. Metrics are shown sorted by name,
-- numbers with 4 significant digits (one-element tensors are read with item()).
local ember = require 'ember'

local progress = {}

local Bar = {}
Bar.__index = Bar

local function fail(fname, msg)
  error(fname .. ': ' .. msg, 3)
end

-- The file descriptor of a Lua file, when it is stdout or stderr.
local function fd_of(file)
  if file == io.stdout then return 1 end
  if file == io.stderr then return 2 end
  return nil
end

--- progress.format_time(seconds) -> "mm:ss" or "h:mm:ss"
function progress.format_time(s)
  if s == nil or s ~= s or s == math.huge or s < 0 then return '--:--' end
  s = math.floor(s + 1e-6) -- whole seconds, like a clock (1e-6 absorbs float sums)
  local h, m, sec = s // 3600, (s // 60) % 60, s % 60
  if h > 0 then return ('%d:%02d:%02d'):format(h, m, sec) end
  return ('%02d:%02d'):format(m, sec)
end

local function format_value(v)
  if ember.is_tensor(v) and v:numel() == 1 then v = v:item() end
  if math.type(v) == 'integer' then return tostring(v) end
  if type(v) == 'number' then return ('%.4g'):format(v) end
  return tostring(v)
end

local function format_metrics(m)
  if not m then return '' end
  local keys = {}
  for k in pairs(m) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = k .. '=' .. format_value(m[k]) end
  return table.concat(parts, ' ')
end

local function format_rate(r)
  if r >= 99.95 then return ('%.0f it/s'):format(r) end
  if r >= 1 then return ('%.1f it/s'):format(r) end
  if r > 0 then return ('%.2f s/it'):format(1 / r) end
  return '? it/s'
end

--- progress.new([total] [, opts]) -> bar
-- total: the number of steps (nil when unknown). opts: desc (a label), file
-- (default io.stdout), tty (force the terminal or plain form; default: whether
-- file is a terminal), width (bar characters, default 30), interval (seconds
-- between terminal redraws, 0.1), every (fraction of total between plain
-- lines, 0.1), plain_interval (seconds between plain lines, 30), clock
-- (a function returning seconds; default a monotonic clock).
function progress.new(total, opts)
  if type(total) == 'table' and opts == nil then total, opts = nil, total end
  if total ~= nil and (type(total) ~= 'number' or total < 0 or total ~= math.floor(total)) then
    fail('progress.new', ('total must be an integer >= 0 or nil, got %s'):format(tostring(total)))
  end
  if opts ~= nil and type(opts) ~= 'table' then
    fail('progress.new', ('bad argument #2 (expected an options table, got %s)'):format(type(opts)))
  end
  opts = opts or {}
  local file = opts.file or io.stdout
  if io.type(file) ~= 'file' then fail('progress.new', 'file must be an open Lua file') end
  local tty = opts.tty
  if tty == nil then
    local fd = fd_of(file)
    tty = fd ~= nil and ember._isatty(fd)
  end
  local clock = opts.clock or ember._clock
  if type(clock) ~= 'function' then fail('progress.new', 'clock must be a function') end
  local self = setmetatable({
    total = total and math.tointeger(total), desc = opts.desc and tostring(opts.desc) or nil,
    file = file, tty = tty and true or false, width = opts.width or 30,
    interval = opts.interval or 0.1, every = opts.every or 0.1,
    plain_interval = opts.plain_interval or 30, clock = clock,
    n = 0, metrics = nil, closed = false, lines = 0,
  }, Bar)
  self.start = clock()
  self.last_draw = -math.huge
  self.last_plain = self.start
  self.next_mark = self.total and self.total > 0 and self.every * self.total or nil
  if self.tty then self:_draw() end
  return self
end

function Bar:_rate(now)
  local elapsed = now - self.start
  return elapsed > 0 and self.n / elapsed or 0, elapsed
end

-- The terminal line.
function Bar:_line(now)
  local rate, elapsed = self:_rate(now)
  local parts = {}
  if self.desc then parts[#parts + 1] = self.desc end
  if self.total and self.total > 0 then
    local frac = math.min(self.n / self.total, 1)
    local filled = math.floor(frac * self.width)
    local bar = ('='):rep(filled)
    if filled < self.width then bar = bar .. (self.n > 0 and '>' or ' ') .. (' '):rep(self.width - filled - 1) end
    parts[#parts + 1] = ('%3d%% [%s] %d/%d'):format(math.floor(frac * 100), bar, self.n, self.total)
    local eta = rate > 0 and (self.total - self.n) / rate or nil
    parts[#parts + 1] = progress.format_time(elapsed) .. '<' .. progress.format_time(eta)
  else
    parts[#parts + 1] = ('%d it'):format(self.n)
    parts[#parts + 1] = progress.format_time(elapsed)
  end
  parts[#parts + 1] = format_rate(rate)
  local m = format_metrics(self.metrics)
  if m ~= '' then parts[#parts + 1] = m end
  return table.concat(parts, ' ')
end

-- A plain log line.
function Bar:_plain_line(now)
  local rate, elapsed = self:_rate(now)
  local s = (self.desc and self.desc .. ': ' or '')
  if self.total then
    local pct = self.total > 0 and math.floor(100 * self.n / self.total) or 100
    s = s .. ('%d/%d (%d%%)'):format(self.n, self.total, pct)
  else
    s = s .. ('%d it'):format(self.n)
  end
  s = s .. ', elapsed ' .. progress.format_time(elapsed)
  if self.total and self.n < self.total then
    s = s .. ', eta ' .. progress.format_time(rate > 0 and (self.total - self.n) / rate or nil)
  end
  s = s .. ', ' .. format_rate(rate)
  local m = format_metrics(self.metrics)
  if m ~= '' then s = s .. ', ' .. m end
  return s
end

function Bar:_draw(now)
  now = now or self.clock()
  self.file:write('\r', self:_line(now), '\27[K')
  self.file:flush()
  self.last_draw = now
end

function Bar:_plain(now)
  self.file:write(self:_plain_line(now), '\n')
  self.file:flush()
  self.last_plain = now
  self.lines = self.lines + 1
  self.printed_at = self.n
end

--- bar:update([n=1] [, metrics]): n more steps done; metrics (a table) replaces the shown ones.
function Bar:update(n, metrics)
  if type(n) == 'table' and metrics == nil then n, metrics = 1, n end
  n = n or 1
  if type(n) ~= 'number' then fail('update', ('n must be a number, got %s'):format(type(n))) end
  if metrics ~= nil and type(metrics) ~= 'table' then
    fail('update', ('metrics must be a table, got %s'):format(type(metrics)))
  end
  if self.closed then return end
  self.n = self.n + n
  if metrics then self.metrics = metrics end
  local now = self.clock()
  if self.tty then
    if now - self.last_draw >= self.interval or (self.total and self.n >= self.total) then self:_draw(now) end
    return
  end
  local due = now - self.last_plain >= self.plain_interval
  if self.next_mark and self.n >= self.next_mark then
    due = true
    while self.next_mark <= self.n do self.next_mark = self.next_mark + self.every * self.total end
  end
  if due then self:_plain(now) end
end

--- bar:set_metrics(metrics): change the shown metrics without a step.
function Bar:set_metrics(metrics)
  if type(metrics) ~= 'table' then fail('set_metrics', ('expected a table, got %s'):format(type(metrics))) end
  self.metrics = metrics
end

--- bar:close([metrics]): the final line (and newline on a terminal); in plain mode
-- only when something changed since the last line. Safe to call twice.
function Bar:close(metrics)
  if self.closed then return end
  if metrics then self.metrics = metrics end
  local now = self.clock()
  if self.tty then
    self:_draw(now)
    self.file:write('\n')
    self.file:flush()
  elseif metrics or self.printed_at ~= self.n or self.lines == 0 then
    self:_plain(now)
  end
  self.closed = true
  self.elapsed = now - self.start
end
Bar.__close = function(self) self:close() end

return progress
