-- ember.nn.functional — the one functional namespace, as torch.nn.functional:
-- activations, convolution, pooling, dropout, normalisation and the losses,
-- under ember's names and PyTorch's. Nothing here is implemented again: each
-- name is the existing function (ember.relu, ember.conv2d, ember.losses.mse, ...).
--
--   local F = ember.nn.functional          -- loaded on first use, like ember.nn
--   local h = F.relu(F.conv2d(x, w, b, {padding = 1}))
--   local loss = F.cross_entropy(F.linear(h:flatten(2), W, c), labels)
--   F.mse_loss(pred, target)               -- PyTorch's name for ember.losses.mse
--
-- Arguments are ember's, not PyTorch's where the two differ: options come as one
-- table ({reduction = 'sum'}, {stride = 2}), dims and labels are 1-based, and
-- F.batch_norm is ember.batch_norm(x, running_mean, running_var, weight, bias, opts).
-- PyTorch's kl_div (log-probabilities against a target distribution) and
-- gaussian_nll_loss (a variance, not a log-variance) are other functions than ember's
-- kl_normal and gaussian_nll, so those keep their ember names only.
--
-- The members are kept behind the table's __index (pairs() still lists them):
-- Lua names a function in a traceback by the first loaded module that holds it
-- as a field, and the same function held here too would make `x:relu()`'s
-- traceback read 'ember.nn.functional.relu' or 'ember.relu' by hash order.
local ember = require 'ember'
local losses = require 'ember.losses'

local members = {}

-- Ops of the ember table, under the same name in torch.nn.functional.
local OPS = {
  'relu', 'relu_', 'leaky_relu', 'elu', 'sigmoid', 'tanh', 'softplus', 'softmax', 'log_softmax',
  'linear', 'conv2d', 'conv_transpose2d', 'max_pool2d', 'avg_pool2d', 'upsample_nearest',
  'dropout', 'embedding', 'batch_norm',
}
for _, name in ipairs(OPS) do
  members[name] = assert(rawget(ember, name), name)
end

-- Every function of ember.losses under its own name (mse, bce, kl_normal, ...).
for name, fn in pairs(losses) do
  if type(fn) == 'function' then members[name] = fn end
end

-- PyTorch's names for ember's losses. The loss's own checks name the function by
-- its ember name ("mse: bad argument #1 ..."); called through an alias, the
-- message names the alias the user wrote instead ("mse_loss: bad argument #1 ...").
local function alias(name, target)
  local fn = assert(losses[target], target)
  local prefix = '^' .. target .. ': '
  local function finish(ok, ...)
    if ok then return ... end
    local msg = ...
    if type(msg) == 'string' and msg:find(prefix) then
      error(name .. ': ' .. msg:sub(#target + 3), 2)  -- at the caller's line (finish is a tail call)
    end
    error(msg, 0)  -- anything else (an inner op's error, "interrupted") unchanged
  end
  return function(...) return finish(pcall(fn, ...)) end
end
local TORCH_NAMES = {
  mse_loss = 'mse',
  l1_loss = 'l1',
  binary_cross_entropy = 'bce',
  binary_cross_entropy_with_logits = 'bce_with_logits',
  nll_loss = 'nll',
}
for name, target in pairs(TORCH_NAMES) do members[name] = alias(name, target) end

return setmetatable({}, {
  __index = members,
  __pairs = function() return next, members, nil end,
})
