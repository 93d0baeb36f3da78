-- ember.latent — tools for the latent space of autoencoders and VAEs: load a trained
-- model from a run folder, encode a data set, walk between codes (linear or spherical),
-- do arithmetic with attribute vectors, decode a 2-D grid over the inverse Gaussian
-- CDF, and estimate a VAE's log-likelihood with importance weighting (IWAE).
--
--   local latent = require 'ember.latent'                 -- or ember.latent
--   local vae = latent.load_run('runs/vae').model         -- vae:encode(x) -> mu, logvar
--   local mu = vae:encode(x)                              -- x [N x 784] in [0, 1]
--   local path = latent.interpolate(mu[1], mu[2], 10, {mode = 'slerp'})   -- [10 x 20]
--   image.save_grid(vae:decode_images(path), 'walk.png', {nrow = 10})
--   local codes = latent.codes(vae, test_x)               -- [N x 20] (the means)
--   local v = latent.attribute_vector(codes, test_y, 8, 1)  -- mean of class 8 minus class 1
--   local shifted = latent.apply(mu[1], v, {0, 0.5, 1})   -- [3 x 20]
--   local imgs, z = latent.manifold_grid(function(z) return vae:decode_images(z) end, 20)
--
-- Models: anything with encode(x [, y]) -> mu (, logvar) and decode(z [, y]) -> logits
-- (the recipes in examples/ also give decode_images(z) -> pictures in [0, 1]).
-- Functions that take an `encode` or `decode` accept either such a function or a model.
local ember = require 'ember'

local latent = {}

local LOG_2PI = math.log(2 * math.pi)
local SQRT_2PI = math.sqrt(2 * math.pi)

-- ---- argument checks ------------------------------------------------------------

local function typename(v)
  if ember.is_tensor(v) then return 'tensor' end
  return type(v)
end

local function shape_str(t) return '[' .. table.concat(t:shape(), ' x ') .. ']' end

-- Raises "latent.<fname>: msg" at the caller of the public function.
local function fail(fname, msg)
  error('latent.' .. fname .. ': ' .. msg, 3)
end

local function check_tensor(fname, v, what)
  if not ember.is_tensor(v) then fail(fname, ('%s must be a tensor, got %s'):format(what, typename(v))) end
  return v
end

local function check_opts(fname, opts, argn, allowed)
  if opts == nil then return {} end
  if type(opts) ~= 'table' or ember.is_tensor(opts) then
    fail(fname, ('bad argument #%d (expected an options table, got %s)'):format(argn, typename(opts)))
  end
  for k in pairs(opts) do
    local ok = false
    for _, a in ipairs(allowed) do ok = ok or k == a end
    if not ok then
      fail(fname, ("unknown option '%s' (expected %s)"):format(tostring(k), table.concat(allowed, ', ')))
    end
  end
  return opts
end

local function check_int(fname, v, what, min)
  if type(v) ~= 'number' or v ~= math.floor(v) or v < min then
    fail(fname, ('%s must be an integer >= %d, got %s'):format(what, min,
      type(v) == 'number' and tostring(v) or typename(v)))
  end
  return math.tointeger(v)
end

-- A function called like encode(x [, y]) from a function or a model with method `name`.
local function callable(fname, v, name, argn)
  if type(v) == 'function' then return v end
  if type(v) == 'table' and type(v[name]) == 'function' then
    return function(...) return v[name](v, ...) end
  end
  fail(fname, ('bad argument #%d (expected a %s function or a model with %s, got %s)'):format(
    argn, name, name, typename(v)))
end

-- ---- the standard normal distribution --------------------------------------------

-- phi(x): the standard normal density.
local function normal_pdf(x) return math.exp(-0.5 * x * x) / SQRT_2PI end

--- latent.norm_cdf(x) -> P(Z <= x) for a standard normal Z (a Lua number), accurate to
-- about 1e-15 relative: Marsaglia's series 1/2 + phi(x) (x + x^3/3 + x^5/(3*5) + ...)
-- for |x| < 3, the continued fraction of the Mills ratio in the tails.
function latent.norm_cdf(x)
  if type(x) ~= 'number' then fail('norm_cdf', ('x must be a number, got %s'):format(typename(x))) end
  if x ~= x then return x end
  local ax = math.abs(x)
  if ax < 3 then
    local term, sum, x2 = x, x, x * x
    local k = 1
    repeat
      term = term * x2 / (2 * k + 1)
      local old = sum
      sum = sum + term
      k = k + 1
    until sum == old or k > 500
    return 0.5 + sum * normal_pdf(x)
  end
  if ax > 40 then return x > 0 and 1.0 or 0.0 end
  -- Upper tail Q(ax) = phi(ax) / (ax + 1/(ax + 2/(ax + 3/(ax + ...)))), by Lentz's method.
  local tiny = 1e-300
  local f = ax
  local c, d = ax, 0
  for k = 1, 500 do
    d = ax + k * d
    if d == 0 then d = tiny end
    c = ax + k / c
    if c == 0 then c = tiny end
    d = 1 / d
    local delta = c * d
    f = f * delta
    if math.abs(delta - 1) < 1e-16 then break end
  end
  local q = normal_pdf(ax) / f
  if x > 0 then return 1 - q end
  return q
end

-- Coefficients of Acklam's rational approximations to the inverse normal CDF
-- (relative error below 1.15e-9 before refinement).
local ACKLAM_A = { -3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                   1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00 }
local ACKLAM_B = { -5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                   6.680131188771972e+01, -1.328068155288572e+01 }
local ACKLAM_C = { -7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                   -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00 }
local ACKLAM_D = { 7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                   3.754408661907416e+00 }
local P_LOW = 0.02425

--- latent.norm_ppf(p) -> x with P(Z <= x) = p for a standard normal Z, p in (0, 1):
-- Acklam's rational approximation, then one Halley step on norm_cdf (about 1e-15).
function latent.norm_ppf(p)
  if type(p) ~= 'number' or p ~= p or p <= 0 or p >= 1 then
    fail('norm_ppf', ('p must be a number in (0, 1), got %s'):format(
      type(p) == 'number' and tostring(p) or typename(p)))
  end
  local a, b, c, d = ACKLAM_A, ACKLAM_B, ACKLAM_C, ACKLAM_D
  local x
  if p < P_LOW then
    local q = math.sqrt(-2 * math.log(p))
    x = (((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6]) /
        ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
  elseif p <= 1 - P_LOW then
    local q = p - 0.5
    local r = q * q
    x = (((((a[1] * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * r + a[6]) * q /
        (((((b[1] * r + b[2]) * r + b[3]) * r + b[4]) * r + b[5]) * r + 1)
  else
    local q = math.sqrt(-2 * math.log(1 - p))
    x = -(((((c[1] * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) * q + c[6]) /
         ((((d[1] * q + d[2]) * q + d[3]) * q + d[4]) * q + 1)
  end
  -- Halley's step on f(x) = cdf(x) - p: u = f / f', x -= u / (1 + x u / 2).
  local e = latent.norm_cdf(x) - p
  local u = e * SQRT_2PI * math.exp(0.5 * x * x)
  return x - u / (1 + 0.5 * x * u)
end

-- ---- walking in latent space ------------------------------------------------------

-- Weights (a, b) of z1 and z2 at fraction t of the spherical path between two codes
-- whose directions make the angle omega. Within 1e-3 rad of 0 (where the two paths agree)
-- and of pi (where the great circle is undefined) it falls back to the straight line;
-- the angle itself comes from float32 dot products, good to about 1e-3 rad there.
local function slerp_weights(omega, t)
  local s = math.sin(omega)
  if s < 1e-3 then return 1 - t, t end
  return math.sin((1 - t) * omega) / s, math.sin(t * omega) / s
end

-- The angle between the directions of rows z1 [N x D] and z2 [N x D], one per row
-- (a Lua list); a zero row gives angle 0 (the straight line).
local function row_angles(z1, z2)
  local dot = (z1 * z2):sum(2):totable()
  local n1 = z1:square():sum(2):sqrt():totable()
  local n2 = z2:square():sum(2):sqrt():totable()
  local out = {}
  for i = 1, #dot do
    if n1[i] == 0 or n2[i] == 0 then out[i] = 0
    else out[i] = math.acos(math.max(-1, math.min(1, dot[i] / (n1[i] * n2[i])))) end
  end
  return out
end

--- latent.interpolate(z1, z2, steps [, {mode = 'linear' | 'slerp'}]) -> the path from
-- z1 to z2 in `steps` points, both ends included. z1, z2 [D] -> [steps x D];
-- z1, z2 [N x D] (N pairs) -> [N x steps x D]. 'slerp' walks the great circle
-- between the two directions (White 2016): for codes of equal length every point
-- keeps that length, which suits Gaussian latents where linear midpoints are too
-- short to be typical; parallel or opposite codes fall back to the straight line.
function latent.interpolate(z1, z2, steps, opts)
  check_tensor('interpolate', z1, 'z1')
  check_tensor('interpolate', z2, 'z2')
  if z1:dim() ~= 1 and z1:dim() ~= 2 then
    fail('interpolate', ('z1 %s must be a code [D] or a batch of codes [N x D]'):format(shape_str(z1)))
  end
  if shape_str(z1) ~= shape_str(z2) then
    fail('interpolate', ('z1 %s and z2 %s must have the same shape'):format(shape_str(z1), shape_str(z2)))
  end
  steps = check_int('interpolate', steps, 'steps', 2)
  opts = check_opts('interpolate', opts, 4, { 'mode' })
  local mode = opts.mode or 'linear'
  if mode ~= 'linear' and mode ~= 'slerp' then
    fail('interpolate', ("mode must be 'linear' or 'slerp', got %s"):format(
      type(mode) == 'string' and "'" .. mode .. "'" or typename(mode)))
  end
  return ember.no_grad(function()
    local single = z1:dim() == 1
    local a1 = single and z1:unsqueeze(1) or z1
    local a2 = single and z2:unsqueeze(1) or z2
    local n = a1:size(1)
    local wa, wb = {}, {}
    local omegas = mode == 'slerp' and row_angles(a1, a2) or nil
    for i = 1, n do
      wa[i], wb[i] = {}, {}
      for s = 1, steps do
        local t = (s - 1) / (steps - 1)
        local u, v
        if omegas then u, v = slerp_weights(omegas[i], t) else u, v = 1 - t, t end
        wa[i][s], wb[i][s] = { u }, { v }
      end
    end
    -- [N x steps x 1] weights times [N x 1 x D] codes.
    local path = ember.tensor(wa) * a1:unsqueeze(2) + ember.tensor(wb) * a2:unsqueeze(2)
    if single then return path:select(1, 1) end
    return path
  end)
end

--- latent.slerp(z1, z2, t) -> the point at fraction t in [0, 1] of the spherical path
-- between codes z1 and z2 (same shape [D] or [N x D]; see interpolate).
function latent.slerp(z1, z2, t)
  check_tensor('slerp', z1, 'z1')
  check_tensor('slerp', z2, 'z2')
  if z1:dim() ~= 1 and z1:dim() ~= 2 then
    fail('slerp', ('z1 %s must be a code [D] or a batch of codes [N x D]'):format(shape_str(z1)))
  end
  if shape_str(z1) ~= shape_str(z2) then
    fail('slerp', ('z1 %s and z2 %s must have the same shape'):format(shape_str(z1), shape_str(z2)))
  end
  if type(t) ~= 'number' or t ~= t or t < 0 or t > 1 then
    fail('slerp', ('t must be a number in [0, 1], got %s'):format(type(t) == 'number' and tostring(t) or typename(t)))
  end
  return ember.no_grad(function()
    local single = z1:dim() == 1
    local a1 = single and z1:unsqueeze(1) or z1
    local a2 = single and z2:unsqueeze(1) or z2
    local omegas = row_angles(a1, a2)
    local wa, wb = {}, {}
    for i, om in ipairs(omegas) do
      local u, v = slerp_weights(om, t)
      wa[i], wb[i] = { u }, { v }
    end
    local out = ember.tensor(wa) * a1 + ember.tensor(wb) * a2
    if single then return out:select(1, 1) end
    return out
  end)
end

-- ---- attribute arithmetic ----------------------------------------------------------------

-- labels as a 1-D tensor of N class numbers.
local function check_labels(fname, labels, n)
  if type(labels) == 'table' and not ember.is_tensor(labels) then
    for i, v in ipairs(labels) do
      if math.type(v) ~= 'integer' and not (type(v) == 'number' and v == math.floor(v)) then
        fail(fname, ('labels[%d] must be a class number, got %s'):format(i, tostring(v)))
      end
    end
    labels = ember.tensor(labels)
  end
  if not ember.is_tensor(labels) then
    fail(fname, ('labels must be a tensor or a list of class numbers, got %s'):format(typename(labels)))
  end
  if labels:dim() ~= 1 or labels:size(1) ~= n then
    fail(fname, ('labels %s must be [%d], one per code'):format(shape_str(labels), n))
  end
  return labels
end

--- latent.attribute_vector(codes [N x D], labels [N], a, b) -> [D]: the mean code of
-- the samples labelled a minus the mean code of those labelled b. Adding it to a code
-- of class b (latent.apply) moves it towards class a ("smile vector" arithmetic).
function latent.attribute_vector(codes, labels, a, b)
  check_tensor('attribute_vector', codes, 'codes')
  if codes:dim() ~= 2 then
    fail('attribute_vector', ('codes %s must be [N x D]'):format(shape_str(codes)))
  end
  labels = check_labels('attribute_vector', labels, codes:size(1))
  for _, pair in ipairs { { 'a', a }, { 'b', b } } do
    local v = pair[2]
    if type(v) ~= 'number' or v ~= math.floor(v) then
      fail('attribute_vector', ('class %s must be a class number, got %s'):format(pair[1],
        type(v) == 'number' and tostring(v) or typename(v)))
    end
  end
  return ember.no_grad(function()
    local function class_mean(k)
      local mask = labels:eq(k)
      local count = mask:sum():item()
      if count == 0 then fail('attribute_vector', ('no codes have label %d'):format(k)) end
      return (codes:detach() * mask:unsqueeze(2)):sum(1) / count
    end
    return class_mean(a) - class_mean(b)
  end)
end

--- latent.apply(z, v, alpha=1) -> z + alpha v. z [D] or [N x D], v [D]. alpha a number,
-- or a list of m numbers: then the result is [m x D] for z [D] and [N x m x D] for
-- z [N x D] (one row per strength: a strip that adds more and more of v).
function latent.apply(z, v, alpha)
  check_tensor('apply', z, 'z')
  check_tensor('apply', v, 'v')
  if z:dim() ~= 1 and z:dim() ~= 2 then
    fail('apply', ('z %s must be a code [D] or a batch of codes [N x D]'):format(shape_str(z)))
  end
  local d = z:size(z:dim())
  if v:dim() ~= 1 or v:size(1) ~= d then
    fail('apply', ('v %s must be one code [%d] like the rows of z %s'):format(shape_str(v), d, shape_str(z)))
  end
  if alpha == nil then alpha = 1 end
  if type(alpha) == 'number' then
    if alpha ~= alpha then fail('apply', 'alpha must be a number, got nan') end
    return ember.no_grad(function() return z + v * alpha end)
  end
  if type(alpha) ~= 'table' or #alpha == 0 then
    fail('apply', ('alpha must be a number or a list of numbers, got %s'):format(typename(alpha)))
  end
  local col = {}
  for i, x in ipairs(alpha) do
    if type(x) ~= 'number' or x ~= x then
      fail('apply', ('alpha[%d] must be a number, got %s'):format(i, tostring(x)))
    end
    col[i] = { x }
  end
  return ember.no_grad(function()
    return z:unsqueeze(-2) + ember.tensor(col) * v
  end)
end

-- ---- encoding data sets -------------------------------------------------------------

-- Runs fn(first, count) over rows 1..n in chunks of `batch` and concatenates the
-- first results along dim 1.
local function in_chunks(n, batch, fn)
  local parts = {}
  for first = 1, n, batch do
    parts[#parts + 1] = fn(first, math.min(batch, n - first + 1))
  end
  if #parts == 1 then return parts[1] end
  return ember.cat(parts, 1)
end

--- latent.codes(encode, x [, y] [, {batch = 1000}]) -> [N x D]: the codes of the rows
-- of x (the first value encode returns: a VAE's means), computed without gradients in
-- batches. encode is a function encode(x [, y]) or a model with :encode; y (labels
-- [N], for conditional models) is passed along in the same batches.
function latent.codes(encode, x, y, opts)
  if type(y) == 'table' and not ember.is_tensor(y) and opts == nil then y, opts = nil, y end
  encode = callable('codes', encode, 'encode', 1)
  check_tensor('codes', x, 'x')
  if x:dim() < 1 or x:size(1) == 0 then
    fail('codes', ('x %s must hold at least one sample (dim 1 is the batch)'):format(shape_str(x)))
  end
  if y ~= nil then
    check_tensor('codes', y, 'y')
    if y:size(1) ~= x:size(1) then
      fail('codes', ('y %s must have one row per sample of x %s'):format(shape_str(y), shape_str(x)))
    end
  end
  opts = check_opts('codes', opts, y and 4 or 3, { 'batch' })
  local batch = check_int('codes', opts.batch or 1000, 'batch', 1)
  return ember.no_grad(function()
    return in_chunks(x:size(1), batch, function(first, count)
      local code
      if y ~= nil then code = encode(x:narrow(1, first, count), y:narrow(1, first, count))
      else code = encode(x:narrow(1, first, count)) end
      if not ember.is_tensor(code) then
        fail('codes', ('encode must return a tensor of codes, got %s'):format(typename(code)))
      end
      return code:detach()
    end)
  end)
end

--- latent.code_stats(codes [N x D]) -> mean [D], std [D]: per-dimension statistics of a
-- set of codes, e.g. to draw random codes "on the scale of" a plain autoencoder's codes:
-- ember.randn(n, D) * std + mean.
function latent.code_stats(codes)
  check_tensor('code_stats', codes, 'codes')
  if codes:dim() ~= 2 or codes:size(1) < 2 then
    fail('code_stats', ('codes %s must be [N x D] with N >= 2'):format(shape_str(codes)))
  end
  return ember.no_grad(function()
    local c = codes:detach()
    local mean = c:mean(1)
    local std = (c - mean):square():sum(1):div(c:size(1) - 1):sqrt()
    return mean, std
  end)
end

-- ---- the 2-D manifold ------------------------------------------------------------------

--- latent.manifold_grid(decode, n [, {range = {0.05, 0.95}}]) -> images, z: decodes an
-- n x n grid of 2-D codes placed at the standard normal quantiles of n evenly spaced
-- probabilities in range, so that each cell covers an equal share of the prior's mass
-- (Kingma & Welling 2014, fig. 4). decode: a function of z [n*n x 2] (or a model with
-- :decode). z is row-major with z[.,1] growing left to right and z[.,2] growing bottom
-- to top, so image.save_grid(images, path, {nrow = n}) draws the map.
function latent.manifold_grid(decode, n, opts)
  decode = callable('manifold_grid', decode, 'decode', 1)
  n = check_int('manifold_grid', n, 'n', 2)
  opts = check_opts('manifold_grid', opts, 3, { 'range' })
  local range = opts.range or { 0.05, 0.95 }
  if type(range) ~= 'table' or type(range[1]) ~= 'number' or type(range[2]) ~= 'number'
      or not (range[1] > 0 and range[1] < range[2] and range[2] < 1) then
    fail('manifold_grid', ('range must be {lo, hi} with 0 < lo < hi < 1 (probabilities), got %s'):format(
      type(range) == 'table' and ('{' .. tostring(range[1]) .. ', ' .. tostring(range[2]) .. '}') or typename(range)))
  end
  local q = {}
  for i = 1, n do q[i] = latent.norm_ppf(range[1] + (range[2] - range[1]) * (i - 1) / (n - 1)) end
  local rows = {}
  for r = 1, n do
    for c = 1, n do rows[#rows + 1] = { q[c], q[n + 1 - r] } end
  end
  local z = ember.tensor(rows)
  local images = ember.no_grad(function() return decode(z) end)
  if not ember.is_tensor(images) or images:size(1) ~= n * n then
    fail('manifold_grid', ('decode must return one image per code (%d), got %s'):format(n * n,
      ember.is_tensor(images) and shape_str(images) or typename(images)))
  end
  return images, z
end

-- ---- importance-weighted log-likelihood ----------------------------------------------------

-- log p(x | z) of each row under independent Bernoulli(sigmoid(logits)) pixels (for x in
-- [0, 1] this is minus the summed BCE, as in the VAE's training loss): [M x P] -> [M].
local function bernoulli_log_likelihood(x, logits)
  return -ember.losses.bce_with_logits(logits, x, { reduction = 'none' }):sum(2)
end

--- latent.iwae_nll(encode, decode, x [, {k = 100, y =, batch =, log_likelihood =, log_prior =}])
-- -> nll [N], mean: an importance-weighted estimate of -log p(x) for each row of x
-- (Burda et al. 2016): with k codes z_j ~ q(z | x) = N(mu, exp(logvar)) per sample,
--   -log p(x) ~= -(logsumexp_j [log p(x | z_j) + log p(z_j) - log q(z_j | x)] - log k),
-- an upper bound on the true NLL that tightens as k grows (k = 1 is the ELBO).
-- encode(x [, y]) -> mu, logvar; decode(z [, y]) -> logits (any shape with N rows);
-- log_likelihood(x_rows [M x P], out_rows [M x P]) -> [M] defaults to Bernoulli pixels
-- (minus the summed BCE-with-logits); log_prior(z [M x D] [, y_rows]) -> [M] defaults to
-- the standard normal N(0, I). y: labels [N] for conditional models. The k codes of
-- `batch` samples (default 10000 / k) are decoded at once.
function latent.iwae_nll(encode, decode, x, opts)
  encode = callable('iwae_nll', encode, 'encode', 1)
  decode = callable('iwae_nll', decode, 'decode', 2)
  check_tensor('iwae_nll', x, 'x')
  if x:dim() < 2 or x:size(1) == 0 then
    fail('iwae_nll', ('x %s must be [N x ...] with N >= 1'):format(shape_str(x)))
  end
  opts = check_opts('iwae_nll', opts, 4, { 'k', 'y', 'batch', 'log_likelihood', 'log_prior' })
  local k = check_int('iwae_nll', opts.k or 100, 'k', 1)
  local batch = check_int('iwae_nll', opts.batch or math.max(1, 10000 // k), 'batch', 1)
  local y = opts.y
  if y ~= nil then
    check_tensor('iwae_nll', y, 'y')
    if y:size(1) ~= x:size(1) then
      fail('iwae_nll', ('y %s must have one row per sample of x %s'):format(shape_str(y), shape_str(x)))
    end
  end
  local log_lik = opts.log_likelihood or bernoulli_log_likelihood
  if type(log_lik) ~= 'function' then
    fail('iwae_nll', ('log_likelihood must be a function, got %s'):format(typename(log_lik)))
  end
  local log_prior = opts.log_prior
  if log_prior ~= nil and type(log_prior) ~= 'function' then
    fail('iwae_nll', ('log_prior must be a function, got %s'):format(typename(log_prior)))
  end
  local n = x:size(1)
  local p = x:numel() // n
  local log_k = math.log(k)
  local nll = ember.no_grad(function()
    return in_chunks(n, batch, function(first, count)
      local xb = x:narrow(1, first, count)
      local yb = y and y:narrow(1, first, count)
      local mu, logvar
      if yb then mu, logvar = encode(xb, yb) else mu, logvar = encode(xb) end
      if not (ember.is_tensor(mu) and ember.is_tensor(logvar)) then
        fail('iwae_nll', 'encode must return two tensors: mu and logvar')
      end
      local d = mu:size(2)
      local function repeat_rows(t) -- [B x ...] -> [B*k x ...], each row k times in a row
        local shape = t:shape()
        local big = { count, k }
        for i = 2, #shape do big[#big + 1] = shape[i] end
        local flat = { count * k }
        for i = 2, #shape do flat[#flat + 1] = shape[i] end
        return t:unsqueeze(2):expand(big):reshape(flat)
      end
      local mu_r, logvar_r = repeat_rows(mu), repeat_rows(logvar)
      local eps = ember.randn(count * k, d)
      local z = mu_r + (logvar_r * 0.5):exp() * eps
      local y_r = yb and repeat_rows(yb)
      local out = yb and decode(z, y_r) or decode(z)
      if not ember.is_tensor(out) or out:size(1) ~= count * k then
        fail('iwae_nll', ('decode must return one row per code (%d), got %s'):format(count * k,
          ember.is_tensor(out) and shape_str(out) or typename(out)))
      end
      local x_r = repeat_rows(xb:reshape(count, p))
      local log_px = log_lik(x_r, out:reshape(count * k, p))
      local log_pz
      if log_prior then
        log_pz = log_prior(z, y_r)
        if not ember.is_tensor(log_pz) or log_pz:dim() ~= 1 or log_pz:size(1) ~= count * k then
          fail('iwae_nll', ('log_prior must return one log-density per code [%d], got %s'):format(count * k,
            ember.is_tensor(log_pz) and shape_str(log_pz) or typename(log_pz)))
        end
      else
        log_pz = (z:square() + LOG_2PI):sum(2) * -0.5
      end
      local log_qz = (eps:square() + logvar_r + LOG_2PI):sum(2) * -0.5
      local log_w = (log_px + log_pz - log_qz):reshape(count, k)
      return -(ember.logsumexp(log_w, 2) - log_k)
    end)
  end)
  return nll, nll:mean():item()
end

-- ---- trained models from run folders --------------------------------------------------------

--- latent.load_run(dir) -> state, params, recipe: the state a recipe's build(params)
-- makes (state.model is the autoencoder), restored from the run folder's checkpoint,
-- with its models in evaluation mode. The run's own recipe file rebuilds it, with the
-- params saved in DIR/config.lua, so any run of examples/{autoencoder, denoising_autoencoder,
-- vae, cvae}.lua loads the same way.
function latent.load_run(dir)
  if type(dir) ~= 'string' or dir == '' then
    fail('load_run', ('dir must be the path of a run folder, got %s'):format(typename(dir)))
  end
  dir = dir:gsub('/+$', '')
  local files = require('ember.recipe').files
  if not files.exists(dir .. '/config.lua') then
    fail('load_run', ('%s is not a run folder (no config.lua)'):format(dir))
  end
  if not files.exists(dir .. '/checkpoint') then
    fail('load_run', ('%s has no checkpoint yet (the run stopped before its first save)'):format(dir))
  end
  local ok, r, params, state = pcall(require('ember.recipe').load_run, dir)
  if not ok then
    local msg = type(r) == 'table' and r.msg or tostring(r)
    fail('load_run', ('cannot load %s: %s'):format(dir, msg))
  end
  local model = type(state) == 'table' and state.model
  if type(model) ~= 'table' or type(model.encode) ~= 'function' or type(model.decode) ~= 'function' then
    fail('load_run', ('run %s (recipe %s) has no state.model with encode and decode'):format(dir, r.name))
  end
  for _, v in pairs(state) do
    if type(v) == 'table' and type(v.eval) == 'function' and type(v.state_dict) == 'function' then v:eval() end
  end
  return state, params, r
end

return latent
