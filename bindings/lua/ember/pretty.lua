-- ember.pretty — a readable text for any Lua value, as the REPL prints a table that
-- a statement returns (t:stats(), ember.memory(), a config):
--
--   > ember.randn(100):stats()
--   {inf = 0, max = 2.722509, mean = -0.05909128, min = -2.8637, nan = 0, numel = 100, std = 0.9783319}
--
-- Tables are written as Lua constructors: the list part first, then the other keys
-- sorted (numbers, then strings, then the rest). Floats show `digits` significant
-- digits, strings are quoted, tensors shown by their shape, values with a __tostring
-- by (the first line of) it. The text is one line when it fits in
-- `width`, else one entry per line. Nesting deeper than `depth`, tables longer than
-- `max_items` and cycles are cut short, so any table prints in bounded space.
local ember = require 'ember'

local pretty = {}

local DEFAULTS = { width = 100, depth = 3, max_items = 40, digits = 7 }

local IDENT = '^[%a_][%w_]*$'
local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch('%a+') do KEYWORDS[w] = true end

-- A number: integers as they are, floats with `digits` significant digits (7 by
-- default: all that a float32 tensor's values hold) but never so that a float looks
-- like an integer (3.0 stays 3.0).
local function number_text(v, digits)
  if math.type(v) == 'integer' then return tostring(v) end
  if v ~= v then return 'nan' end
  if v == math.huge then return 'inf' end
  if v == -math.huge then return '-inf' end
  local s = ('%.' .. digits .. 'g'):format(v)
  if not s:find('[%.eEn]') then s = s .. '.0' end
  return s
end

local function string_text(s)
  return (('%q'):format(s):gsub('\\\n', '\\n'))
end

-- The order of keys: numbers, then strings, then anything else (by its text).
local RANK = { number = 1, string = 2 }
local function key_less(a, b)
  local ra, rb = RANK[type(a)] or 3, RANK[type(b)] or 3
  if ra ~= rb then return ra < rb end
  if ra == 3 then return tostring(a) < tostring(b) end
  return a < b
end

local format

-- A value that is not a plain table, as text on one line.
local function scalar_text(v, opts)
  local t = type(v)
  if t == 'string' then return string_text(v) end
  if t == 'number' then return number_text(v, opts.digits) end
  if ember.is_tensor(v) then return 'ember.Tensor [' .. table.concat(v:shape(), ' x ') .. ']' end
  local s = tostring(v)
  local first = s:match('^[^\n]*')
  return first == s and s or first .. ' ...'
end

-- Whether the table prints itself (a class, an object, a shape).
local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == 'table' and rawget(mt, '__tostring') ~= nil
end

-- The entries of table v as a list of {key text or nil, value}, and how many were left
-- out. Only pairs() is asked (so __pairs is honoured), never __index.
local function entries(v, opts)
  local values, keys = {}, {}
  for k, x in pairs(v) do
    values[k] = x
    keys[#keys + 1] = k
  end
  local len = 0
  while values[len + 1] ~= nil do len = len + 1 end
  local rest = {}
  for _, k in ipairs(keys) do
    if not (math.type(k) == 'integer' and k >= 1 and k <= len) then rest[#rest + 1] = k end
  end
  table.sort(rest, key_less)
  local out = {}
  for i = 1, math.min(len, opts.max_items) do out[#out + 1] = { nil, values[i] } end
  for _, k in ipairs(rest) do
    if #out >= opts.max_items then break end
    local kt
    if type(k) == 'string' and k:match(IDENT) and not KEYWORDS[k] then kt = k
    elseif type(k) == 'string' then kt = '[' .. string_text(k) .. ']'
    else kt = '[' .. scalar_text(k, opts) .. ']' end
    out[#out + 1] = { kt, values[k] }
  end
  return out, len + #rest - #out
end

-- format(v, opts, indent, seen) -> text (may span lines when v is a table)
format = function(v, opts, indent, seen, level)
  if type(v) ~= 'table' or has_tostring(v) then return scalar_text(v, opts) end
  if seen[v] then return '<cycle>' end
  if level >= opts.depth then return next(v) == nil and '{}' or '{...}' end
  seen[v] = true
  local items, more = entries(v, opts)
  local inner = indent .. '  '
  local parts, multiline = {}, false
  for i, e in ipairs(items) do
    local text = format(e[2], opts, inner, seen, level + 1)
    if text:find('\n', 1, true) then multiline = true end
    parts[i] = e[1] and (e[1] .. ' = ' .. text) or text
  end
  if more > 0 then parts[#parts + 1] = ('... (%d more)'):format(more) end
  seen[v] = nil
  if #parts == 0 then return '{}' end
  local one = '{' .. table.concat(parts, ', ') .. '}'
  if not multiline and #indent + #one <= opts.width then return one end
  return '{\n' .. inner .. table.concat(parts, ',\n' .. inner) .. '\n' .. indent .. '}'
end

--- pretty.format(v [, {width = 100, depth = 3, max_items = 40, digits = 7}]) -> string
function pretty.format(v, opts)
  if opts ~= nil and type(opts) ~= 'table' then
    error(('pretty.format: bad argument #2 \'opts\' (expected a table like {width = 80}, got %s)'):format(type(opts)), 2)
  end
  local o = {}
  for k, d in pairs(DEFAULTS) do
    local x = opts and opts[k]
    if x == nil then x = d end
    if math.type(x) ~= 'integer' or x < 1 then
      error(("pretty.format: option '%s' must be an integer >= 1, got %s"):format(k, tostring(x)), 2)
    end
    o[k] = x
  end
  if opts then
    for k in pairs(opts) do
      if DEFAULTS[k] == nil then
        error(("pretty.format: unknown option '%s' (expected width, depth, max_items, digits)"):format(tostring(k)), 2)
      end
    end
  end
  return format(v, o, '', {}, 0)
end

return pretty
