-- ember.plot — scatter plots and line plots as PNG, SVG or PDF files, drawn by
-- gnuplot (Debian's gnuplot-nox; cairo terminals) without Python.
--
--   plot.scatter(points, 'ring.png', {labels = modes, centers = centers, title = 'G samples'})
--   plot.lines({loss = losses, kl = kls}, 'loss.png', {xlabel = 'step', logy = true})
--   plot.lines('runs/vae/metrics.csv', 'loss.png', {columns = {'loss', 'kl'}, x = 'step'})
--
-- ember writes the data to a temporary file and a short gnuplot script next to
-- it, runs gnuplot once and removes both. gnuplot's own error message is part
-- of any failure. The program is plot.gnuplot (default $EMBER_GNUPLOT or
-- 'gnuplot'); the file type follows the extension (.png, .svg, .pdf).
local ember = require 'ember'

local plot = {}

plot.gnuplot = os.getenv('EMBER_GNUPLOT') or 'gnuplot'
plot.width, plot.height = 800, 600

-- Distinct colours (tab10, then the light tab20 partners) and point types.
plot.colors = { '#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
  '#7f7f7f', '#bcbd22', '#17becf', '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5',
  '#c49c94', '#f7b6d2', '#c7c7c7', '#dbdb8d', '#9edae5' }

local function fail(fname, msg, level)
  error(fname .. ': ' .. msg, (level or 2) + 1)
end

local function typename(v)
  return ember.is_tensor(v) and 'tensor' or type(v)
end

local function shape_str(t)
  return '[' .. table.concat(t:shape(), ' x ') .. ']'
end

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A gnuplot single-quoted string (no escapes inside; ' doubles).
local function gp_string(s)
  return "'" .. tostring(s):gsub('[\r\n]', ' '):gsub("'", "''") .. "'"
end

local function num(v)
  if v ~= v then return 'NaN' end
  if v == math.huge or v == -math.huge then return 'NaN' end
  return ('%.9g'):format(v)
end

-- Whether the gnuplot program can be found.
local function have_gnuplot()
  local g = plot.gnuplot
  if type(g) ~= 'string' or g == '' then return false end
  if g:find('/') then
    local f = io.open(g, 'rb')
    if f then f:close() return true end
    return false
  end
  return os.execute('command -v ' .. shell_quote(g) .. ' >/dev/null 2>&1') == true
end

local TERMINALS = {
  png = "pngcairo size %d,%d enhanced font 'Sans,11' background rgb 'white'",
  svg = "svg size %d,%d dynamic enhanced font 'Sans,11' background rgb 'white'",
  pdf = "pdfcairo size %gin,%gin enhanced font 'Sans,10'",
}

-- Checks the output path and options every plot shares; returns the terminal line.
local function prepare(fname, path, opts)
  if type(path) ~= 'string' or path == '' then
    fail(fname, ('bad argument #2 (expected an output file name, got %s)'):format(typename(path)), 3)
  end
  local ext = path:match('%.(%w+)$')
  ext = ext and ext:lower()
  if not TERMINALS[ext] then
    fail(fname, ("output '%s' must end in .png, .svg or .pdf"):format(path), 3)
  end
  local w, h = opts.width or plot.width, opts.height or plot.height
  if math.type(w) ~= 'integer' or math.type(h) ~= 'integer' or w < 100 or h < 100 or w > 10000 or h > 10000 then
    fail(fname, ('width and height must be integers in 100..10000, got %s x %s'):format(tostring(w), tostring(h)), 3)
  end
  local existed = io.open(path, 'rb')
  if existed then existed:close() end
  local probe = io.open(path, 'ab')
  if not probe then
    local _, err = io.open(path, 'wb')
    err = tostring(err or 'unknown error')
    if err:sub(1, #path + 2) == path .. ': ' then err = err:sub(#path + 3) end
    fail(fname, ("cannot write '%s': %s"):format(path, err), 3)
  end
  probe:close()
  if not existed then os.remove(path) end -- only a probe: gnuplot makes the file
  if not have_gnuplot() then
    fail(fname, ("gnuplot not found (plot.gnuplot = '%s'): install it with `apt-get install gnuplot-nox`, "
      .. 'or point EMBER_GNUPLOT / ember.plot.gnuplot at it'):format(tostring(plot.gnuplot)), 3)
  end
  if ext == 'pdf' then return TERMINALS.pdf:format(w / 100, h / 100) end
  return TERMINALS[ext]:format(w, h)
end

-- Common header lines: terminal, output, title, labels, grid, ranges.
local function header(terminal, path, opts)
  local s = {
    'set terminal ' .. terminal,
    'set output ' .. gp_string(path),
    'set encoding utf8',
    "set grid lc rgb '#d0d0d0' lw 1",
    'set border lw 1.2',
    'set tics nomirror out',
    'set key noenhanced',
  }
  if opts.title then s[#s + 1] = 'set title ' .. gp_string(opts.title) .. " noenhanced font 'Sans,13'" end
  if opts.xlabel then s[#s + 1] = 'set xlabel ' .. gp_string(opts.xlabel) .. ' noenhanced' end
  if opts.ylabel then s[#s + 1] = 'set ylabel ' .. gp_string(opts.ylabel) .. ' noenhanced' end
  for _, axis in ipairs { 'x', 'y' } do
    local r = opts[axis .. 'range']
    if r ~= nil then
      if type(r) ~= 'table' or type(r[1]) ~= 'number' or type(r[2]) ~= 'number' or not (r[1] < r[2]) then
        fail('plot', ('%srange must be {lo, hi} with lo < hi'):format(axis), 3)
      end
      s[#s + 1] = ('set %srange [%s:%s]'):format(axis, num(r[1]), num(r[2]))
    end
  end
  return s
end

-- Writes the data and script, runs gnuplot, checks the output, cleans up.
local function run(fname, path, script, blocks)
  local data_path = os.tmpname()
  local script_path = os.tmpname()
  local function cleanup()
    os.remove(data_path)
    os.remove(script_path)
  end
  local f = assert(io.open(data_path, 'wb'))
  f:write(table.concat(blocks, '\n\n\n'), '\n')
  f:close()
  local text = table.concat(script, '\n'):gsub('@DATA@', (gp_string(data_path):gsub('%%', '%%%%')))
  f = assert(io.open(script_path, 'wb'))
  f:write(text, '\nset output\n')
  f:close()
  local pipe = io.popen(shell_quote(plot.gnuplot) .. ' ' .. shell_quote(script_path) .. ' 2>&1', 'r')
  local out = pipe:read('a')
  local ok, _, code = pipe:close()
  cleanup()
  if not ok then
    local msg = out:gsub('%s+$', ''):gsub('\n%s*\n', '\n')
    fail(fname, ("gnuplot failed (exit %s) drawing '%s': %s"):format(tostring(code), path,
      msg ~= '' and msg or 'no message'), 3)
  end
  local r = io.open(path, 'rb')
  local size = r and r:seek('end') or 0
  if r then r:close() end
  if size == 0 then fail(fname, ("gnuplot wrote nothing to '%s': %s"):format(path, out), 3) end
  return path
end

-- A 1-D list of numbers from a tensor or a table.
local function numbers(fname, v, what)
  if ember.is_tensor(v) then
    local t = v:detach():contiguous():view(-1):totable()
    return type(t) == 'number' and { t } or t
  end
  if type(v) ~= 'table' then fail(fname, ('%s must be a tensor or a list of numbers, got %s'):format(what, typename(v)), 3) end
  for i = 1, #v do
    if type(v[i]) ~= 'number' then
      fail(fname, ('%s[%d] must be a number, got %s'):format(what, i, typename(v[i])), 3)
    end
  end
  return v
end

-- [n x 2] points from a tensor or a list of {x, y}.
local function points_xy(fname, pts, what)
  if ember.is_tensor(pts) then
    if pts:dim() ~= 2 or pts:size(2) ~= 2 then
      fail(fname, ('%s %s must be [n x 2]'):format(what, shape_str(pts)), 3)
    end
    return pts:detach():contiguous():totable()
  end
  if type(pts) ~= 'table' then fail(fname, ('%s must be an [n x 2] tensor, got %s'):format(what, typename(pts)), 3) end
  for i = 1, #pts do
    local p = pts[i]
    if type(p) ~= 'table' or type(p[1]) ~= 'number' or type(p[2]) ~= 'number' then
      fail(fname, ('%s[%d] must be {x, y}'):format(what, i), 3)
    end
  end
  return pts
end

--- plot.scatter(points [n x 2], path, opts) -> path
-- opts: labels ([n] classes 1..K, tensor or table: one colour and legend entry
-- each), names (legend names per class), centers ([k x 2] drawn as black
-- crosses), title, xlabel, ylabel, equal (same scale on both axes), xrange,
-- yrange ({lo, hi}), point_size (default 0.6), alpha (0..1, default 0.7),
-- width, height (pixels, default 800 x 600).
function plot.scatter(points, path, opts)
  if opts ~= nil and type(opts) ~= 'table' then
    fail('scatter', ('bad argument #3 (expected an options table, got %s)'):format(typename(opts)))
  end
  opts = opts or {}
  local pts = points_xy('scatter', points, 'points')
  local n = #pts
  if n == 0 then fail('scatter', 'points is empty') end
  local labels
  if opts.labels ~= nil then
    labels = numbers('scatter', opts.labels, 'labels')
    if #labels ~= n then fail('scatter', ('%d labels for %d points'):format(#labels, n)) end
  end
  local centers = opts.centers ~= nil and points_xy('scatter', opts.centers, 'centers') or nil
  local ps = opts.point_size or 0.6
  local alpha = opts.alpha or 0.7
  if type(ps) ~= 'number' or ps <= 0 then fail('scatter', 'point_size must be a number > 0') end
  if type(alpha) ~= 'number' or alpha < 0 or alpha > 1 then fail('scatter', 'alpha must be in [0, 1]') end
  local terminal = prepare('scatter', path, opts)

  -- one data block per class
  local classes, by_class = {}, {}
  for i = 1, n do
    local c = 1
    if labels then
      c = labels[i]
      if c ~= math.floor(c) or c < 1 then fail('scatter', ('labels[%d] = %g is not a class 1..K'):format(i, c)) end
      c = math.tointeger(c)
    end
    local b = by_class[c]
    if not b then
      b = {}
      by_class[c] = b
      classes[#classes + 1] = c
    end
    b[#b + 1] = num(pts[i][1]) .. ' ' .. num(pts[i][2])
  end
  table.sort(classes)
  local blocks, plots = {}, {}
  local a = ('%02x'):format(math.floor((1 - alpha) * 255 + 0.5))
  for k, c in ipairs(classes) do
    blocks[k] = table.concat(by_class[c], '\n')
    local color = plot.colors[(c - 1) % #plot.colors + 1]
    local pt = ({ 7, 5, 9, 11, 13 })[((c - 1) // #plot.colors) % 5 + 1]
    local title = 'notitle'
    if labels then
      local name = opts.names and opts.names[c] or ('class ' .. c)
      title = 'title ' .. gp_string(name)
    end
    plots[#plots + 1] = ("@DATA@ index %d using 1:2 with points pt %d ps %g lc rgb '#%s%s' %s")
      :format(k - 1, pt, ps, a, color:sub(2), title)
  end
  if centers and #centers > 0 then
    -- open black circles, drawn first so the samples show on top of them
    local c = {}
    for i, p in ipairs(centers) do c[i] = num(p[1]) .. ' ' .. num(p[2]) end
    blocks[#blocks + 1] = table.concat(c, '\n')
    table.insert(plots, 1, ("@DATA@ index %d using 1:2 with points pt 6 ps 2.5 lw 1.5 lc rgb 'black' title 'centres'")
      :format(#blocks - 1))
  end
  local script = header(terminal, path, opts)
  if opts.equal then script[#script + 1] = 'set size ratio -1' end
  if labels or centers then
    script[#script + 1] = 'set key outside right top box opaque samplen 1 spacing 1.1'
  else
    script[#script + 1] = 'set key off'
  end
  script[#script + 1] = 'plot ' .. table.concat(plots, ', \\\n     ')
  return run('scatter', path, script, blocks)
end

-- The series of plot.lines as a list of {name, xs, ys}.
local function collect_series(series, opts)
  local list = {}
  if type(series) == 'string' then
    local metrics = require 'ember.metrics'
    local ok, cols, names = pcall(metrics.read_csv, series)
    if not ok then fail('lines', (tostring(cols):gsub('^read_csv: ', '')), 3) end
    local xname = opts.x
    if xname == nil and cols.step then xname = 'step' end
    if xname ~= nil and not cols[xname] then
      fail('lines', ("'%s' has no column '%s' (columns: %s)"):format(series, xname, table.concat(names, ', ')), 3)
    end
    local wanted = opts.columns
    if wanted == nil then
      wanted = {}
      for _, c in ipairs(names) do
        if c ~= xname and type(cols[c][1]) == 'number' then wanted[#wanted + 1] = c end
      end
    elseif type(wanted) == 'string' then
      wanted = { wanted }
    end
    for _, c in ipairs(wanted) do
      if not cols[c] then
        fail('lines', ("'%s' has no column '%s' (columns: %s)"):format(series, c, table.concat(names, ', ')), 3)
      end
      local xs = xname and cols[xname] or nil
      list[#list + 1] = { c, xs, cols[c] }
    end
    if opts.xlabel == nil and xname then opts.xlabel = xname end
    return list
  end
  if type(series) ~= 'table' then
    fail('lines', ('bad argument #1 (expected a table of series or a CSV path, got %s)'):format(typename(series)), 3)
  end
  local names = {}
  for k in pairs(series) do
    if type(k) ~= 'string' then fail('lines', ('series names must be strings, got %s'):format(type(k)), 3) end
    names[#names + 1] = k
  end
  table.sort(names)
  if opts.order then names = opts.order end
  for _, name in ipairs(names) do
    local s = series[name]
    if s == nil then fail('lines', ("order names '%s', which is not a series"):format(name), 3) end
    if type(s) == 'table' and (s.y ~= nil or s.x ~= nil) then
      local ys = numbers('lines', s.y, name .. '.y')
      local xs = s.x ~= nil and numbers('lines', s.x, name .. '.x') or nil
      if xs and #xs ~= #ys then fail('lines', ("series '%s' has %d x and %d y values"):format(name, #xs, #ys), 3) end
      list[#list + 1] = { name, xs, ys }
    else
      list[#list + 1] = { name, nil, numbers('lines', s, name) }
    end
  end
  return list
end

--- plot.lines(series, path, opts) -> path
-- series: {name = ys, ...} or {name = {x = xs, y = ys}, ...} (tensors or
-- tables; x defaults to 1..n; names sorted unless opts.order lists them), or
-- the path of a metrics CSV with opts.columns = {'loss', ...} (default: every
-- numeric column) and opts.x = column name (default 'step' when present).
-- opts: title, xlabel, ylabel, logy, xrange, yrange, width, height.
function plot.lines(series, path, opts)
  if opts ~= nil and type(opts) ~= 'table' then
    fail('lines', ('bad argument #3 (expected an options table, got %s)'):format(typename(opts)))
  end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local list = collect_series(series, o)
  if #list == 0 then fail('lines', 'no series to plot') end
  local terminal = prepare('lines', path, o)
  local blocks, plots = {}, {}
  for k, s in ipairs(list) do
    local name, xs, ys = s[1], s[2], s[3]
    local rows, usable = {}, 0
    for i = 1, #ys do
      local y = ys[i]
      local x = xs and xs[i] or i
      if type(y) ~= 'number' or (o.logy and y <= 0) then y = 0 / 0 end
      if type(x) ~= 'number' then x = 0 / 0 end
      if y == y and x == x then usable = usable + 1 end
      rows[i] = num(x) .. ' ' .. num(y)
    end
    if usable == 0 then
      fail('lines', ("series '%s' has no plottable values%s"):format(name, o.logy and ' (logy needs values > 0)' or ''))
    end
    blocks[k] = table.concat(rows, '\n')
    local color = plot.colors[(k - 1) % #plot.colors + 1]
    local style = #ys > 40 and 'lines lw 2' or 'linespoints lw 2 pt 7 ps 0.7'
    plots[k] = ("@DATA@ index %d using 1:2 with %s lc rgb '%s' title %s"):format(k - 1, style, color, gp_string(name))
  end
  local script = header(terminal, path, o)
  if o.logy then script[#script + 1] = 'set logscale y' end
  script[#script + 1] = 'set key top right box opaque'
  script[#script + 1] = 'plot ' .. table.concat(plots, ', \\\n     ')
  return run('lines', path, script, blocks)
end

return plot
