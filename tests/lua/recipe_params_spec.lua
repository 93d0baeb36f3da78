-- Specs for param ranges (min/max) and named presets of recipes: declaring them (checked
-- when the recipe loads), `ember run --set` / `--preset` / `--help`, `ember sweep --grid`
-- and --random, and the run's config.lua recording the preset for --resume and sample.
local ember = require 'ember'
local recipe = require 'ember.recipe'
local h = require 'tests.lua.helpers.common'
local q, sh, read, exists, tmpdir = h.q, h.sh, h.read, h.exists, h.tmpdir

local ROOT = h.ROOT
local EMBER = h.EMBER
local TINY = ROOT .. '/examples/tiny.lua'

-- Runs `ember ARGS` in directory dir.
local function ember_cmd(dir, args) return sh('cd ' .. q(dir) .. ' && ' .. q(EMBER) .. ' ' .. args) end

-- Writes text to dir/name; returns the path.
local function write(dir, name, text)
  local f = assert(io.open(dir .. '/' .. name, 'w'))
  f:write(text)
  f:close()
  return dir .. '/' .. name
end

-- A recipe with the given params table source and nothing else of note.
local function recipe_text(params, extra)
  return 'return {name = "ranged", build = function() return {} end, train_epoch = function() end, ' ..
         'params = {' .. params .. '}' .. (extra and (', ' .. extra) or '') .. '}'
end

-- tiny with presets added (a wrapper file: tiny itself stays as it is).
local PRESET_TINY = ([[
local r = dofile(%q)
r.presets = {big = {hidden = 8, epochs = 2}, quick = {epochs = 1, lr = 0.05}}
return r
]]):format(TINY)

describe('param ranges (min, max)', function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('refuses --set epochs=-3 with the rule, before making a run folder', function()
    local out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=-3 --out r')
    assert.equal(2, code, out)
    assert.matches("ember run: --set epochs=-3: epochs must be >= 1 (the recipe's min)", out, 1, true)
    assert.is_false(exists(dir .. '/r/config.lua'))
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set lr=0 --out r')
    assert.equal(2, code, out)
    assert.matches("--set lr=0: lr must be > 0 (the recipe's min)", out, 1, true)
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set batch=0 --out r')
    assert.equal(2, code, out)
    assert.matches("--set batch=0: batch must be >= 1 (the recipe's min)", out, 1, true)
    -- in range: accepted
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --set epochs=1 --set lr=0.05 --out r')
    assert.equal(0, code, out)
  end)

  it("holds the runner's own params to its minimums when a recipe declares no range", function()
    local path = write(dir, 'bare.lua', recipe_text(
      'epochs = {default = 2, type = "integer"}, log_every = {default = 1, type = "integer"}, ' ..
      'checkpoint_every = {default = 0, type = "integer"}, n_samples = {default = 4, type = "integer"}, ' ..
      'other = {default = -5, type = "integer"}'))
    local out, code = ember_cmd(dir, 'run bare.lua --set epochs=0')
    assert.equal(2, code, out)
    assert.matches("--set epochs=0: epochs must be >= 1 (ember run's minimum)", out, 1, true)
    out = ember_cmd(dir, 'run bare.lua --set log_every=0')
    assert.matches("--set log_every=0: log_every must be >= 1 (ember run's minimum)", out, 1, true)
    out = ember_cmd(dir, 'run bare.lua --set checkpoint_every=-1')
    assert.matches("--set checkpoint_every=-1: checkpoint_every must be >= 0 (ember run's minimum)", out, 1, true)
    out = ember_cmd(dir, 'run bare.lua --set n_samples=0')
    assert.matches("--set n_samples=0: n_samples must be >= 1 (ember run's minimum)", out, 1, true)
    -- a param the runner does not use has no rule of its own
    local _, p = recipe.load(path, {'other=-9'})
    assert.equal(-9, p.other)
    -- a default below the runner's minimum is a broken recipe
    write(dir, 'zero.lua', recipe_text('epochs = {default = 0, type = "integer"}'))
    h.raises("recipe " .. dir .. "/zero.lua: params.epochs.default is 0, but epochs must be >= 1 (ember run's minimum)",
             recipe.load, dir .. '/zero.lua')
  end)

  it('checks max, strict bounds and values given as a table (ember.load_recipe)', function()
    local path = write(dir, 'r.lua', recipe_text(
      'rate = {default = 0.5, type = "number", min = 0, max = 1, max_exclusive = true}, ' ..
      'k = {default = 3, type = "integer", min = 1, max = 10}'))
    h.raises("--set k=11: k must be <= 10 (the recipe's max)", recipe.load, path, {'k=11'})
    h.raises("--set rate=1: rate must be < 1 (the recipe's max)", recipe.load, path, {'rate=1'})
    h.raises("k=0: k must be >= 1 (the recipe's min)", recipe.load, path, {k = 0})
    h.raises("rate=-0.5: rate must be >= 0 (the recipe's min)", recipe.load, path, {rate = -0.5})
    local _, p = recipe.load(path, {'k=10', rate = 0})
    assert.equal(10, p.k)
    assert.equal(0.0, p.rate)
  end)

  it('names what is wrong with a declared range when the recipe loads', function()
    local function fails(params, message)
      local path = write(dir, 'bad.lua', recipe_text(params))
      local ok, err = pcall(recipe.load, path)
      assert.is_false(ok, params)
      assert.matches('recipe ' .. path .. ': ' .. message, tostring(err), 1, true)
    end
    fails('n = {default = 1, type = "integer", min = "one"}', 'params.n.min must be a number, got one')
    fails('n = {default = 1, type = "integer", max = {}}', 'params.n.max must be a number, got table')
    fails('n = {default = 1, type = "integer", min = 0/0}', 'params.n.min must be a number, got')
    fails('s = {default = "a", type = "string", min = 1}',
          'params.s.min applies to number and integer params only (this one is a string)')
    fails('n = {default = 5, type = "integer", min = 8, max = 2}', 'params.n: min (8) must be <= max (2)')
    fails('n = {default = 2, type = "number", min = 2, max = 2, min_exclusive = true}',
          'params.n: min (2) must be < max (2)')
    fails('n = {default = 1, type = "integer", max_exclusive = true}', 'params.n.max_exclusive needs a max')
    fails('n = {default = 1, type = "integer", min = 0, min_exclusive = "yes"}',
          'params.n.min_exclusive must be true or false, got yes')
    fails('n = {default = 12, type = "integer", min = 1, max = 10}',
          "params.n.default is 12, but n must be <= 10 (the recipe's max)")
    fails('lr = {default = 0, type = "number", min = 0, min_exclusive = true}',
          "params.lr.default is 0, but lr must be > 0 (the recipe's min)")
    fails('n = {default = 2, type = "integer", min = 1, max = 4, choices = {2, 8}}',
          "params.n.choices: 8 is outside the range: n must be <= 4 (the recipe's max)")
  end)

  it('shows each range in `ember run --help RECIPE`', function()
    local out, code = ember_cmd(dir, 'run --help ' .. q(TINY))
    assert.equal(0, code, out)
    assert.matches('epochs%s+integer%s+default 10%s+passes over the training points %(>= 1%)', out)
    assert.matches('lr%s+number%s+default 0%.03%s+Adam learning rate %(> 0%)', out)
    assert.matches('checkpoint_every%s+integer%s+default 0%s+[^\n]*%(>= 0%)', out)
    -- no range, nothing shown
    assert.matches('act%s+string%s+default tanh%s+hidden activation %(one of tanh, relu%)\n', out)
    local path = write(dir, 'r.lua', recipe_text('rate = {default = 0.5, type = "number", min = 0, max = 1, ' ..
                                           'max_exclusive = true, help = "a rate"}'))
    out = ember_cmd(dir, 'run --help r.lua')
    assert.matches('rate%s+number%s+default 0%.5%s+a rate %(>= 0 and < 1%)', out)
  end)

  it('refuses out-of-range sweep values: --grid, --random choice() and uniform() ends', function()
    local cases = {
      {'--grid epochs=2,-3', "--grid epochs=2,-3: epochs must be >= 1 (the recipe's min)"},
      {"--random 2 'lr=uniform(0,0.1)'", "lr=uniform(0,0.1): lr must be > 0 (the recipe's min)"},
      {"--random 2 'batch=choice(8,0)'", "batch=choice(8,0): batch must be >= 1 (the recipe's min)"},
      {'--set hidden=0', "--set hidden=0: hidden must be >= 1 (the recipe's min)"},
    }
    for _, case in ipairs(cases) do
      local out, code = ember_cmd(dir, 'sweep ' .. q(TINY) .. ' ' .. case[1] .. ' --out s --dry-run')
      assert.equal(2, code, case[1] .. ': ' .. out)
      assert.matches(case[2], out, 1, true)
    end
    local out, code = ember_cmd(dir, 'sweep ' .. q(TINY) .. " --random 2 'lr=uniform(0.001,0.1)' --out s --dry-run")
    assert.equal(0, code, out)
  end)

  it('gives every example recipe a valid range for its epochs, batch and learning rates', function()
    for _, name in ipairs{'autoencoder', 'denoising_autoencoder', 'vae', 'cvae', 'classifier', 'dcgan', 'cgan',
                          'gan_2d', 'tiny'} do
      local r = recipe.load(ROOT .. '/examples/' .. name .. '.lua')
      assert.equal(1, recipe.bounds(r, 'epochs').min, name)
      assert.equal("the recipe's min", recipe.bounds(r, 'epochs').min_by, name)
      if r.params.batch then assert.equal(1, r.params.batch.min, name) end
      for _, lr in ipairs{'lr', 'lr_g'} do
        if r.params[lr] then
          assert.equal(0, r.params[lr].min, name .. ' ' .. lr)
          assert.is_true(r.params[lr].min_exclusive, name .. ' ' .. lr)
        end
      end
    end
  end)
end)

describe('presets', function()
  local dir
  before_each(function()
    dir = tmpdir()
    write(dir, 'ptiny.lua', PRESET_TINY)
  end)
  after_each(function() os.execute('rm -rf ' .. q(dir)) end)

  it('applies a preset over the defaults and under --set, and records it in config.lua', function()
    local out, code = ember_cmd(dir, 'run ptiny.lua --preset big --set epochs=1 --threads 1 --out r')
    assert.equal(0, code, out)
    local cfg = assert(recipe.files.read_lua(dir .. '/r/config.lua'))
    assert.equal('big', cfg.preset)
    assert.equal(8, cfg.params.hidden)   -- from the preset
    assert.equal(1, cfg.params.epochs)   -- --set wins over the preset
    assert.equal(0.03, cfg.params.lr)    -- the default
    assert.matches('run r: recipe tiny, preset big, seed 1, 1 threads', out, 1, true)
    assert.matches('preset big: epochs=2 hidden=8', read(dir .. '/r/log'), 1, true)
    local ck = ember.load(dir .. '/r/checkpoint')
    assert.same({8, 2}, ck.state.model['1.weight']:shape()) -- the model was built with the preset's hidden
    -- resume and sample take the params (and the preset's name) from config.lua
    os.remove(dir .. '/r/result.lua')
    out, code = ember_cmd(dir, 'run --resume r')
    assert.equal(0, code, out)
    assert.matches('resuming r (recipe tiny, preset big, seed 1, 1 threads)', out, 1, true)
    out, code = ember_cmd(dir, 'sample r --out pic.png')
    assert.equal(0, code, out)
    assert.is_true(exists(dir .. '/pic.png'))
    os.remove(dir .. '/r/result.lua')
    out, code = ember_cmd(dir, 'run --resume r --preset quick')
    assert.equal(2, code, out)
    assert.matches('--resume takes the params from r/config.lua (preset big); drop --preset', out, 1, true)
    -- a run without a preset records none
    out, code = ember_cmd(dir, 'run ptiny.lua --set epochs=1 --out plain')
    assert.equal(0, code, out)
    assert.is_nil(recipe.files.read_lua(dir .. '/plain/config.lua').preset)
  end)

  it('refuses an unknown preset, listing the known ones', function()
    local out, code = ember_cmd(dir, 'run ptiny.lua --preset huge --out r')
    assert.equal(2, code, out)
    assert.matches("ember run: unknown preset 'huge' for recipe tiny (known: big, quick)", out, 1, true)
    assert.is_false(exists(dir .. '/r/config.lua'))
    out, code = ember_cmd(dir, 'run ' .. q(TINY) .. ' --preset big --out r')
    assert.equal(2, code, out)
    assert.matches('recipe tiny has no presets (--preset big)', out, 1, true)
    -- gan_2d has a param called preset: say how that one is set
    out, code = ember_cmd(dir, 'run ' .. q(ROOT .. '/examples/gan_2d.lua') .. ' --preset best --out r')
    assert.equal(2, code, out)
    assert.matches("recipe gan_2d has no presets (--preset); its param 'preset' is set with --set preset=best", out, 1, true)
    out, code = ember_cmd(dir, 'run ptiny.lua --preset')
    assert.equal(2, code, out)
    assert.matches('--preset needs a value', out, 1, true)
  end)

  it('lists the presets with their values first in `ember run --help RECIPE`', function()
    local out, code = ember_cmd(dir, 'run --help ptiny.lua')
    assert.equal(0, code, out)
    local presets = out:find('presets (--preset name; applied over the defaults, before --set):', 1, true)
    local params = out:find('params (--set name=value):', 1, true)
    assert.truthy(presets, out)
    assert.truthy(params, out)
    assert.is_true(presets < params)
    assert.matches('\n  big    epochs=2 hidden=8\n  quick  epochs=1 lr=0.05\n', out, 1, true)
    assert.matches('usage: ember run RECIPE.lua [--preset NAME]', out, 1, true)
    out = ember_cmd(dir, 'run --help ' .. q(TINY))
    assert.is_nil(out:find('presets (--preset', 1, true))
  end)

  it("gives the CVAE the README's headline settings as --preset readme", function()
    local out, code = ember_cmd(dir, 'run --help ' .. q(ROOT .. '/examples/cvae.lua'))
    assert.equal(0, code, out)
    assert.matches('\n  readme  beta=0.25 epochs=60 hidden=1024,512 iw_k=0\n', out, 1, true)
    local _, p = recipe.load(ROOT .. '/examples/cvae.lua', {}, 'readme')
    assert.equal('1024,512', p.hidden)
    assert.equal(0.25, p.beta)
    assert.equal(60, p.epochs)
    assert.equal(0, p.iw_k)
    assert.equal('mixture', p.sample_from)
    -- the README's 86.5% row is made by that command
    local readme = read(ROOT .. '/README.md')
    local row = readme:match('\n(| conditional VAE[^\n]*%*%*86%.5%%%*%*[^\n]*)\n')
    assert.truthy(row, 'the README has no 86.5% row')
    assert.truthy(row:find('`ember run examples/cvae.lua --preset readme --out runs/cvae-mix-e60 --threads 2`', 1, true), row)
    assert.truthy(readme:find('ember run examples/cvae.lua --preset readme --out runs/cvae-mix-e60\n', 1, true),
                  "the README's CVAE example command does not use --preset readme")
  end)

  it('names what is wrong with a preset when the recipe loads', function()
    local function fails(presets, message)
      local path = write(dir, 'bad.lua', recipe_text('n = {default = 1, type = "integer", min = 1}, ' ..
                                                     's = {default = "a", type = "string", choices = {"a", "b"}}',
                                                     'presets = ' .. presets))
      local ok, err = pcall(recipe.load, path)
      assert.is_false(ok, presets)
      assert.matches('recipe ' .. path .. ': ' .. message, tostring(err), 1, true)
    end
    fails('{big = {m = 3}}', "presets.big sets 'm', which is not a param (params: n, s)")
    fails('{big = {n = "x"}}', 'presets.big.n must be an integer, got x')
    fails('{big = {s = "c"}}', 'presets.big.s must be one of a, b, got c')
    fails('{big = {n = 0}}', "presets.big: n must be >= 1 (the recipe's min)")
    fails('{big = 3}', 'presets.big must be a table {param = value}, got number')
    fails('{[1] = {n = 2}}', 'preset names must be strings of letters, digits, _ - . (got 1)')
    fails('3', 'field presets must be a table, got number')
  end)

  it('starts every run of a sweep from --preset, and refuses an unknown one', function()
    local out, code = ember_cmd(dir, 'sweep ptiny.lua --preset big --grid lr=0.01,0.05 --set epochs=1 --threads 1 --out s')
    assert.equal(0, code, out)
    for _, id in ipairs{'c1-lr=0.01-seed1', 'c2-lr=0.05-seed1'} do
      local cfg = recipe.files.read_lua(dir .. '/s/runs/' .. id .. '/config.lua')
      assert.equal('big', cfg.preset, id)
      assert.equal(8, cfg.params.hidden, id)
      assert.equal(1, cfg.params.epochs, id)
    end
    assert.matches('Fixed: --preset big epochs=1.', read(dir .. '/s/summary.md'), 1, true)
    -- another preset is another sweep
    out, code = ember_cmd(dir, 'sweep ptiny.lua --preset quick --grid lr=0.01,0.05 --set epochs=1 --out s')
    assert.equal(2, code, out)
    assert.matches('holds a different sweep', out, 1, true)
    out, code = ember_cmd(dir, 'sweep ptiny.lua --preset huge --grid lr=0.01,0.05 --dry-run')
    assert.equal(2, code, out)
    assert.matches("ember sweep: unknown preset 'huge' for recipe tiny (known: big, quick)", out, 1, true)
  end)

  it('takes a preset in ember.load_recipe(path, overrides, preset)', function()
    local r, p = ember.load_recipe(dir .. '/ptiny.lua', {'epochs=3'}, 'quick')
    assert.equal('tiny', r.name)
    assert.equal(3, p.epochs)
    assert.equal(0.05, p.lr)
    h.raises("unknown preset 'nope' for recipe tiny (known: big, quick)", ember.load_recipe, dir .. '/ptiny.lua', nil, 'nope')
  end)

  it("writes --preset into the results table's command for a run made with the preset's values", function()
    -- a run folder from before presets existed (no preset recorded), with the readme values
    local cvae = ROOT .. '/examples/cvae.lua'
    local _, p = recipe.load(cvae, {'sample_from=fitted'}, 'readme')
    local runs = dir .. '/runs'
    for name, params in pairs{['cvae-mix-e60'] = select(2, recipe.load(cvae, {}, 'readme')), ['cvae-big-e60'] = p,
                              cvae = select(2, recipe.load(cvae))} do
      os.execute('mkdir -p ' .. q(runs .. '/' .. name))
      recipe.files.write_lua(runs .. '/' .. name .. '/config.lua', {recipe = cvae, name = 'cvae', params = params,
                                                                  threads = 2, seed = 1})
      recipe.files.write_lua(runs .. '/' .. name .. '/result.lua', {status = 'finished', epoch = params.epochs,
                                                                  seconds = 1, metrics = {}})
    end
    local out, code = sh(q(EMBER) .. ' ' .. q(ROOT .. '/scripts/results_autoencoders.lua') .. ' ' .. q(runs))
    assert.equal(0, code, out)
    assert.matches('`ember run examples/cvae.lua --preset readme --out ' .. runs .. '/cvae-mix-e60 --threads 2`', out, 1, true)
    assert.matches('`ember run examples/cvae.lua --preset readme --set sample_from=fitted --out ' .. runs ..
                   '/cvae-big-e60 --threads 2`', out, 1, true)
    assert.matches('`ember run examples/cvae.lua --out ' .. runs .. '/cvae --threads 2`', out, 1, true)
  end)
end)

describe('scripts/update_results.sh', function()
  -- a copy of the script in a tree of its own: a results script printing one finished row
  -- and one run that is missing here, under a README holding that run's earlier rows
  local function tree()
    local dir = tmpdir()
    os.execute('mkdir -p ' .. q(dir .. '/scripts') .. ' && cp ' .. q(ROOT .. '/scripts/update_results.sh') .. ' ' ..
               q(dir .. '/scripts/'))
    write(dir, 'scripts/results_fake.lua', table.concat({
      "print('| run | figures | command |')",
      "print('|---|---|---|')",
      "print('| new | 1.0 | `ember run x.lua --out runs/new` |')",
      "print('| gone | | not run yet (runs/gone) |')",
      "print('| swept | (no sweep yet) | `ember sweep x.lua --out runs/sweep` |')",
    }, '\n'))
    write(dir, 'README.md', table.concat({
      'before', '<!-- results:fake -->',
      '| run | figures | command |', '|---|---|---|',
      '| new | 0.5 | `ember run x.lua --out runs/new` |',
      '| gone | 7.0 | `ember run x.lua --set a=1 --out runs/gone --threads 2` |',
      '| swept | ring 8 | `ember sweep x.lua --out runs/sweep` |',
      '| swept | grid 25 | `ember sweep x.lua --out runs/sweep` |',
      '<!-- /results:fake -->', 'after', ''}, '\n'))
    return dir
  end
  local build = EMBER:match('^(.*)/[^/]+$')

  it('keeps the rows of runs missing from this checkout and replaces the others', function()
    local dir = tree()
    local out, code = sh('sh ' .. q(dir .. '/scripts/update_results.sh') .. ' ' .. q(build) .. ' fake')
    assert.equal(0, code, out)
    assert.equal(table.concat({
      'before', '<!-- results:fake -->',
      '| run | figures | command |', '|---|---|---|',
      '| new | 1.0 | `ember run x.lua --out runs/new` |',
      '| gone | 7.0 | `ember run x.lua --set a=1 --out runs/gone --threads 2` |',
      '| swept | ring 8 | `ember sweep x.lua --out runs/sweep` |',
      '| swept | grid 25 | `ember sweep x.lua --out runs/sweep` |',
      '<!-- /results:fake -->', 'after', ''}, '\n'), read(dir .. '/README.md'))
  end)

  it('prints missing runs as such with --drop-missing', function()
    local dir = tree()
    local out, code = sh('sh ' .. q(dir .. '/scripts/update_results.sh') .. ' --drop-missing ' .. q(build) .. ' fake')
    assert.equal(0, code, out)
    local readme = read(dir .. '/README.md')
    assert.matches('| gone | | not run yet (runs/gone) |', readme, 1, true)
    assert.matches('| swept | (no sweep yet) |', readme, 1, true)
    assert.is_nil(readme:find('7.0', 1, true))
  end)
end)
