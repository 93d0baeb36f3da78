-- Specs for ember.quality and the linear algebra beneath it (ember.eigh, ember.mean_cov,
-- ember.frechet_distance): eigen-decompositions checked against their definition and a
-- closed form, covariances against a naive loop, Fréchet distances against analytic
-- values, the classifier score's range, confusion matrices, and bad arguments.
local ember = require 'ember'
local quality = require 'ember.quality'
local h = require 'tests.lua.helpers.common'
local raises = h.raises

local function max_abs(t) return t:abs():max():item() end

-- A random symmetric positive definite matrix [n x n] (A A^T + n I) / n.
local function spd(n)
  local a = ember.randn(n, n)
  return (a:matmul(a:t()) + ember.eye(n) * n) / n
end

describe('ember.eigh', function()
  it('decomposes symmetric matrices: A V = V diag(w), V orthonormal, w ascending', function()
    ember.manual_seed(1)
    for _, n in ipairs({1, 2, 3, 7, 16}) do
      local b = ember.randn(n, n)
      local a = (b + b:t()) / 2
      local w, v = ember.eigh(a)
      assert.are.same({n}, w:shape())
      assert.are.same({n, n}, v:shape())
      assert.is_true(max_abs(a:matmul(v) - v * w:view(1, n)) < 1e-4, 'A V = V diag(w), n = ' .. n)
      assert.is_true(max_abs(v:t():matmul(v) - ember.eye(n)) < 1e-4, 'V^T V = I, n = ' .. n)
      local ws = w:totable()
      if type(ws) == 'number' then ws = {ws} end
      for i = 2, n do assert.is_true(ws[i - 1] <= ws[i]) end
      assert.is_true(math.abs(w:sum():item() - ember.eye(n):mul(a):sum():item()) < 1e-3, 'sum of eigenvalues = trace')
    end
  end)

  it('matches the closed form of a 2 x 2 symmetric matrix', function()
    local a, b, c = 3.0, 1.5, -2.0
    local w = ember.eigh(ember.tensor{{a, b}, {b, c}})
    local mid, rad = (a + c) / 2, math.sqrt(((a - c) / 2) ^ 2 + b * b)
    assert.is_true(math.abs(w[1] - (mid - rad)) < 1e-5)
    assert.is_true(math.abs(w[2] - (mid + rad)) < 1e-5)
  end)

  it('reads non-contiguous views (a narrowed corner of a larger matrix)', function()
    ember.manual_seed(2)
    local big = spd(9)
    local corner = big:narrow(1, 2, 5):narrow(2, 2, 5)
    local w1 = ember.eigh(corner)
    local w2 = ember.eigh(corner:contiguous())
    assert.are.same(w1:totable(), w2:totable())
  end)

  it('rejects non-square, empty and non-finite input', function()
    raises('eigh: matrix [2 x 3] must be a non-empty square matrix [n x n]', ember.eigh, ember.zeros(2, 3))
    raises('eigh: matrix [4] must be a non-empty square matrix', ember.eigh, ember.zeros(4))
    raises('eigh: the matrix holds NaN at element 2', ember.eigh, ember.tensor{{1, 0 / 0}, {0 / 0, 1}})
    raises('eigh: the matrix holds infinity at element 1', ember.eigh, ember.tensor{{1 / 0}})
    raises('eigh: bad argument #1', ember.eigh, 'x')
  end)
end)

describe('ember.mean_cov', function()
  -- The mean and unbiased covariance by plain loops over a Lua table.
  local function naive(rows)
    local n, d = #rows, #rows[1]
    local mu = {}
    for j = 1, d do
      local s = 0
      for i = 1, n do s = s + rows[i][j] end
      mu[j] = s / n
    end
    local cov = {}
    for a = 1, d do
      cov[a] = {}
      for b = 1, d do
        local s = 0
        for i = 1, n do s = s + (rows[i][a] - mu[a]) * (rows[i][b] - mu[b]) end
        cov[a][b] = s / (n - 1)
      end
    end
    return mu, cov
  end

  it('matches a naive loop on odd shapes and on a transposed (non-contiguous) input', function()
    ember.manual_seed(3)
    for _, shape in ipairs({{2, 1}, {5, 3}, {17, 6}}) do
      local x = ember.randn(shape[1], shape[2]) * 2 + 1
      local mu, cov = ember.mean_cov(x)
      local nmu, ncov = naive(x:totable())
      for j = 1, shape[2] do
        assert.is_true(math.abs(mu[j] - nmu[j]) < 1e-5)
        for k = 1, shape[2] do assert.is_true(math.abs(cov[j][k] - ncov[j][k]) < 1e-4) end
      end
    end
    local xt = ember.randn(4, 9):t()  -- [9 x 4], transposed view
    local mu1, cov1 = ember.mean_cov(xt)
    local mu2, cov2 = ember.mean_cov(xt:contiguous())
    assert.is_true(max_abs(mu1 - mu2) == 0 and max_abs(cov1 - cov2) == 0)
  end)

  it('correction 0 divides by n', function()
    local x = ember.tensor{{0}, {2}}
    local _, c0 = ember.mean_cov(x, 0)
    local _, c1 = ember.mean_cov(x)
    assert.are.equal(1, c0[1][1])
    assert.are.equal(2, c1[1][1])
  end)

  it('rejects bad arguments', function()
    raises('mean_cov: x [5] must be 2-D [n x d]', ember.mean_cov, ember.zeros(5))
    raises('mean_cov: x [1 x 3] has 1 rows; a covariance with correction 1 needs at least 2', ember.mean_cov, ember.zeros(1, 3))
    raises('mean_cov: bad argument #2 (expected correction 0 or 1', ember.mean_cov, ember.zeros(3, 3), 2)
    raises('mean_cov: x holds NaN', ember.mean_cov, ember.tensor{{0 / 0}, {1}})
  end)
end)

describe('quality.frechet_distance', function()
  it('is ~0 for a set against itself', function()
    ember.manual_seed(4)
    local f = ember.randn(500, 16) * 3 + 1
    assert.is_true(quality.frechet_distance(f, f) < 1e-6)
    local s = quality.stats(f)
    assert.is_true(quality.frechet_distance(s, s) < 1e-6)
  end)

  it('of two Gaussians with the same covariance is |mu1 - mu2|^2', function()
    ember.manual_seed(5)
    local f = ember.randn(400, 8)
    local shift = ember.tensor{1, -2, 0, 0.5, 0, 0, 3, 0}
    local want = shift:square():sum():item()           -- 15.25
    assert.is_true(math.abs(quality.frechet_distance(f, f + shift) - want) < 1e-3)
  end)

  it('of diagonal Gaussians is |dmu|^2 + sum (sqrt(s1) - sqrt(s2))^2', function()
    local a = {mu = ember.tensor{0, 0, 0}, sigma = ember.tensor{{1, 0, 0}, {0, 4, 0}, {0, 0, 9}}}
    local b = {mu = ember.tensor{1, 0, 0}, sigma = ember.tensor{{4, 0, 0}, {0, 4, 0}, {0, 0, 1}}}
    local want = 1 + (1 - 2) ^ 2 + 0 + (3 - 1) ^ 2       -- 6
    assert.is_true(math.abs(quality.frechet_distance(a, b) - want) < 1e-5)
  end)

  it('matches the closed form of 2 x 2 covariances that do not commute', function()
    -- tr((S1^1/2 S2 S1^1/2)^1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)) for 2 x 2
    local s1 = ember.tensor{{2, 0.7}, {0.7, 1}}
    local s2 = ember.tensor{{1, -0.4}, {-0.4, 3}}
    local mu1, mu2 = ember.tensor{0.5, -1}, ember.tensor{0, 1}
    local function det(s) return s[1][1] * s[2][2] - s[1][2] * s[2][1] end
    local tr12 = s1:matmul(s2):mul(ember.eye(2)):sum():item()
    local want = (0.5 ^ 2 + 2 ^ 2) + (2 + 1) + (1 + 3) - 2 * math.sqrt(tr12 + 2 * math.sqrt(det(s1) * det(s2)))
    local got = quality.frechet_distance({mu = mu1, sigma = s1}, {mu = mu2, sigma = s2})
    assert.is_true(math.abs(got - want) < 1e-5, ('got %.8f want %.8f'):format(got, want))
    -- and it is symmetric in its arguments
    local back = quality.frechet_distance({mu = mu2, sigma = s2}, {mu = mu1, sigma = s1})
    assert.is_true(math.abs(got - back) < 1e-5)
  end)

  it('of sampled shifted Gaussians approaches the analytic value', function()
    ember.manual_seed(6)
    -- N(0, I) against N(m, 4 I) in 4-D: |m|^2 + 4 (1 - 2)^2
    local a = ember.randn(20000, 4)
    local b = ember.randn(20000, 4) * 2 + 1
    local want = 4 + 4
    -- sampling error of 20,000 draws: about 0.1 (means) + 0.1 (variances)
    local got = quality.frechet_distance(a, b)
    assert.is_true(math.abs(got - want) < 0.3, tostring(got))
  end)

  it('rejects bad arguments', function()
    raises('frechet_distance: a has 3 features and b has 4', quality.frechet_distance, ember.randn(5, 3), ember.randn(5, 4))
    raises('frechet_distance: a [5] must be features [N x D] or a stats table', quality.frechet_distance, ember.randn(5), ember.randn(5, 4))
    raises('frechet_distance: b must be features [N x D] or a table {mu =, sigma =}', quality.frechet_distance, ember.randn(5, 4), 'x')
    raises('frechet_distance: a [1 x 4] needs at least 2 rows', quality.frechet_distance, ember.randn(1, 4), ember.randn(5, 4))
    raises('frechet_distance: expected means [d] and covariances [d x d] of one size d', ember.frechet_distance,
      ember.zeros(2), ember.zeros(3, 3), ember.zeros(2), ember.eye(2))
    raises('frechet_distance: sigma2 holds NaN', ember.frechet_distance, ember.zeros(1), ember.ones(1, 1), ember.zeros(1), ember.tensor{{0 / 0}})
    raises('stats: features [1 x 3] needs at least 2 rows', quality.stats, ember.zeros(1, 3))
    raises('stats: features must be a tensor, got nil', quality.stats)
  end)
end)

describe('quality.classifier_score', function()
  it('is K for confident predictions spread evenly over K classes', function()
    local p = ember.eye(5)
    assert.is_true(math.abs(quality.classifier_score(p) - 5) < 1e-4)
  end)

  it('is 1 when every sample gets the same prediction, or every prediction is uniform', function()
    local same = ember.tensor{{0.7, 0.2, 0.1}, {0.7, 0.2, 0.1}}
    assert.is_true(math.abs(quality.classifier_score(same) - 1) < 1e-6)
    assert.is_true(math.abs(quality.classifier_score(ember.full({4, 10}, 0.1)) - 1) < 1e-6)
  end)

  it('lies in [1, K] for random softmax rows', function()
    ember.manual_seed(7)
    for _ = 1, 5 do
      local s = quality.classifier_score(ember.softmax(ember.randn(50, 10) * 3, 2))
      assert.is_true(s >= 1 - 1e-6 and s <= 10 + 1e-6, tostring(s))
    end
  end)

  it('rejects rows that are not probabilities', function()
    raises('classifier_score: probs [2 x 2] must hold probability rows', quality.classifier_score, ember.tensor{{0.5, 0.6}, {1, 0}})
    raises('classifier_score: probs [2] must be 2-D', quality.classifier_score, ember.tensor{0.5, 0.5})
    raises('classifier_score: probs must be a tensor, got table', quality.classifier_score, {{1}})
  end)
end)

describe('quality.confusion_matrix', function()
  it('counts true class (rows) against predicted class (columns)', function()
    local pred = ember.tensor{1, 2, 2, 3, 1}
    local labels = ember.tensor{1, 2, 3, 3, 2}
    assert.are.same({{1, 0, 0}, {1, 1, 0}, {0, 1, 1}}, quality.confusion_matrix(pred, labels, 3):totable())
  end)

  it('writes a heat map picture', function()
    local path = os.tmpname() .. '.png'
    local cm = ember.tensor{{5, 1}, {2, 7}}
    quality.save_confusion(cm, path, {names = {'cat', "dog's"}, title = 'test'})
    local f = assert(io.open(path, 'rb'))
    assert.are.equal('\137PNG', f:read(4))
    f:close()
    os.remove(path)
  end)

  it('rejects bad arguments', function()
    raises('confusion_matrix: pred [2] and labels [3] differ in length', quality.confusion_matrix, ember.ones(2), ember.ones(3), 2)
    raises('confusion_matrix: labels must hold classes 1..2, got values in [1, 3]', quality.confusion_matrix, ember.ones(2), ember.tensor{1, 3}, 2)
    raises('confusion_matrix: K must be a positive integer, got 0', quality.confusion_matrix, ember.ones(2), ember.ones(2), 0)
    raises('save_confusion: cm [2 x 3] must be square', quality.save_confusion, ember.zeros(2, 3), '/tmp/x.png')
    raises('save_confusion: path must be a .png file name, got x.jpg', quality.save_confusion, ember.zeros(2, 2), 'x.jpg')
  end)
end)

describe('quality.load_classifier and report', function()
  it('rejects folders that are not classifier runs', function()
    raises('load_classifier: /nonexistent is not a run folder (no config.lua)', quality.load_classifier, '/nonexistent')
    raises('load_classifier: run_dir must be a run folder path, got number', quality.load_classifier, 3)
    raises('reference: clf must be a classifier from quality.load_classifier, got string', quality.reference, 'runs/x')
    raises('report: clf must be a classifier from quality.load_classifier, got nil', quality.report, nil, ember.zeros(2, 1, 28, 28))
  end)
  -- the end-to-end use (a real classifier run, features, report) is in classifier_spec.lua
end)
