-- ember._extend — Lua-level additions to the ember module table, run once
-- when the module opens. Returns a function that receives the module table.
return function(ember)
  --- ember.gradcheck(fn, inputs [, opts]) -> ok, message (see ember.check)
  function ember.gradcheck(...) return require('ember.check').gradcheck(...) end
  function ember.gradgradcheck(...) return require('ember.check').gradgradcheck(...) end

  --- ember.load_recipe(path [, overrides [, preset]]) -> recipe, params (see ember.recipe)
  function ember.load_recipe(...) return require('ember.recipe').load(...) end

  --- ember.help(): a short guide to what is where.
  function ember.help()
    print([[
ember — tensors, autograd, layers and generative models from Lua.
  ember.tensor{{1,2},{3,4}}   ember.zeros{2,3}   ember.randn(4, 5)   ember.arange(10)
  t:shape()  t:size(1)  t[1]  t:sum(2)  t:matmul(u)  a + b  a * 2  t:t()
  x:requires_grad()  loss:backward()  x.grad  ember.no_grad(function() ... end)
  ember.manual_seed(1)  ember.set_num_threads(2)  ember.memory()  ember.clock()
Modules load on first use: ember.nn, ember.optim, ember.data, ember.image, ember.plot;
  ember.nn.functional is torch.nn.functional (F.relu, F.conv2d, F.mse_loss, ...).]])
  end
end
