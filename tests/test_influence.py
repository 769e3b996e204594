"""Exact LOO influence (docs/method.md §8) against brute-force KRR retraining; metrics (docs/method.md §10)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from ntk_attention import influence as inf
from oracles import loo_predictions_bruteforce


def _problem(n=40, t=7, c=3, d=5, seed=0):
  """Random PSD kernel (rank-deficient linear + RBF part) over n train + t eval points."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n + t, d))
  sq = np.sum((x[:, None] - x[None]) ** 2, -1)
  g = x @ x.T / d + np.exp(-sq / (2 * d))
  y = rng.standard_normal((n + t, c))
  return g[:n, :n], g[n:, :n], y[:n], y[n:]


def _brute_influence(k, ke, y, ye, ridge):
  """I_ti and Delta_ti from explicit refits without each i (numpy)."""
  a = k + ridge * np.mean(np.diag(k)) * np.eye(len(k))
  f = ke @ np.linalg.solve(a, y)                                  # (t, C) full fit
  f_loo = loo_predictions_bruteforce(k, ke, y, ridge)         # (n, t, C)
  delta = np.transpose(f_loo, (1, 0, 2)) - f[:, None, :]          # (t, n, C)
  loss = lambda p: 0.5 * np.sum((p - ye[:, None, :]) ** 2, -1)
  matrix = loss(np.transpose(f_loo, (1, 0, 2))) - loss(f[:, None, :])
  return f, delta, matrix


@pytest.mark.parametrize('c', [3, 1])
@pytest.mark.parametrize('ridge', [1e-3, 1e-1])
def test_matches_bruteforce_retraining(c, ridge):
  k, ke, y, ye = _problem(c=c, seed=c)
  f, delta, matrix = _brute_influence(k, ke, y, ye, ridge)
  out = inf.loo_influence(k, ke, y, ye, ridge=ridge, return_delta=True)
  assert out.matrix.dtype == jnp.float64
  np.testing.assert_allclose(out.predictions, f, rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(out.delta, delta, rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(out.matrix, matrix, rtol=1e-8, atol=1e-8)
  # The influence is not trivially small: removing points changes the losses.
  assert np.max(np.abs(matrix)) > 1e-3
  # The delta-free path gives the same matrix.
  np.testing.assert_allclose(inf.loo_influence(k, ke, y, ye, ridge=ridge).matrix, out.matrix,
                             rtol=1e-12, atol=1e-14)


def test_one_dimensional_targets_are_one_column():
  k, ke, y, ye = _problem(c=1)
  a = inf.loo_influence(k, ke, y[:, 0], ye[:, 0])
  b = inf.loo_influence(k, ke, y, ye)
  assert a.loo_residuals.shape == (40, 1) and a.predictions.shape == (7, 1)
  np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-12, atol=1e-14)


def test_delta_optional():
  k, ke, y, ye = _problem()
  assert inf.loo_influence(k, ke, y, ye).delta is None


def test_loo_residual_identity():
  k, ke, y, ye = _problem(seed=3)
  ridge = 1e-2
  out = inf.loo_influence(k, ke, y, ye, ridge=ridge)
  f_loo_at_train = loo_predictions_bruteforce(k, k, y, ridge)  # (n, n, C)
  n = len(k)
  brute = y - f_loo_at_train[np.arange(n), np.arange(n)]           # y_i - f_{-i}(x_i)
  np.testing.assert_allclose(out.loo_residuals, brute, rtol=1e-8, atol=1e-8)


def test_scores_are_mean_over_eval():
  k, ke, y, ye = _problem(seed=4)
  out = inf.loo_influence(k, ke, y, ye)
  np.testing.assert_allclose(out.scores, np.mean(np.asarray(out.matrix), axis=0),
                             rtol=1e-13, atol=1e-15)
  np.testing.assert_allclose(inf.influence_scores(k, ke, y, ye), out.scores,
                             rtol=1e-13, atol=1e-15)
  _, _, matrix = _brute_influence(k, ke, y, ye, 1e-3)
  np.testing.assert_allclose(out.scores, matrix.mean(0), rtol=1e-8, atol=1e-8)


def test_float32_guard():
  k, ke, y, ye = _problem(n=10, t=3)
  try:
    jax.config.update('jax_enable_x64', False)
    with pytest.raises(ValueError, match='x64'):
      inf.loo_influence(k, ke, y, ye)
    with pytest.raises(ValueError, match='x64'):
      inf.influence_scores(k, ke, y, ye)
    out = inf.loo_influence(k, ke, y, ye, allow_float32=True)
    assert out.matrix.dtype == jnp.float32
  finally:
    jax.config.update('jax_enable_x64', True)
  out64 = inf.loo_influence(k, ke, y, ye)
  assert out64.matrix.dtype == jnp.float64
  np.testing.assert_allclose(out.matrix, out64.matrix, rtol=1e-2, atol=1e-4)


def test_float32_inputs_are_promoted_when_x64_enabled():
  k, ke, y, ye = _problem()
  out = inf.loo_influence(*(np.asarray(v, np.float32) for v in (k, ke, y, ye)))
  assert out.matrix.dtype == jnp.float64


def test_gradient_matches_finite_difference():
  k, ke, y, ye = _problem(n=20, t=5, seed=5)
  ridge = 1e-2
  f = lambda kk: jnp.sum(inf.loo_influence(kk, ke, y, ye, ridge=ridge).scores)
  g = np.asarray(jax.grad(f)(jnp.asarray(k)))
  assert np.all(np.isfinite(g))
  for i, j in [(2, 7), (4, 4)]:
    e = np.zeros_like(k)
    e[i, j] += 1.0
    e[j, i] += 1.0 if i != j else 0.0
    h = 1e-5
    fd = (float(f(k + h * e)) - float(f(k - h * e))) / (2 * h)
    analytic = float(np.sum(g * e))
    assert abs(fd) > 1e-6
    np.testing.assert_allclose(analytic, fd, rtol=1e-5)


def test_gradient_through_jit():
  k, ke, y, ye = _problem(n=15, t=4, seed=6)
  g = jax.jit(jax.grad(lambda kk, kt: jnp.sum(inf.influence_scores(kk, kt, y, ye)),
                       argnums=(0, 1)))(jnp.asarray(k), jnp.asarray(ke))
  assert all(np.all(np.isfinite(np.asarray(x))) for x in g)


def test_bad_inputs():
  k, ke, y, ye = _problem(n=10, t=3)
  with pytest.raises(ValueError, match='square'):
    inf.loo_influence(k[:, :9], ke, y, ye)
  with pytest.raises(ValueError, match='k_eval_train'):
    inf.loo_influence(k, ke[:, :9], y, ye)
  with pytest.raises(ValueError, match='same number of outputs'):
    inf.loo_influence(k, ke, y, ye[:, :2])
  with pytest.raises(ValueError, match='ridge'):
    inf.loo_influence(k, ke, y, ye, ridge=0.0)
  bad = k.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    inf.loo_influence(bad, ke, y, ye)
  indefinite = k.copy()
  indefinite[0, 1] = indefinite[1, 0] = 100 * np.max(np.diag(k))
  with pytest.raises(ValueError, match='positive definite'):
    inf.loo_influence(indefinite, ke, y, ye)


# --- metrics ------------------------------------------------------------------------------------

def test_flip_rate():
  before = np.array([1.0, -2.0, 3.0, 0.0, -0.5, 0.0])
  after = np.array([2.0, 1.0, -3.0, 0.0, -0.1, 4.0])
  # flips at 1, 2 and 5 (0 -> positive counts); 3 stays 0 -> 0.
  assert inf.flip_rate(before, after) == pytest.approx(3 / 6)
  assert inf.flip_rate(before, after, subset=[0, 1, 2]) == pytest.approx(2 / 3)
  assert inf.flip_rate(before, after, subset=np.array([3, 4])) == 0.0
  mask = np.array([False, True, False, False, False, True])
  assert inf.flip_rate(before, after, subset=mask) == 1.0
  with pytest.raises(ValueError):
    inf.flip_rate(before, after, subset=[])
  with pytest.raises(ValueError):
    inf.flip_rate(before, after, subset=[6])
  with pytest.raises(ValueError):
    inf.flip_rate(before, after[:5])


@pytest.mark.parametrize('seed', range(4))
def test_spearman_matches_scipy_with_ties(seed):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 5, 30).astype(float)      # many ties
  b = a + rng.integers(-2, 3, 30)
  assert inf.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
  c = rng.standard_normal(30)
  assert inf.spearman(a, c) == pytest.approx(scipy.stats.spearmanr(a, c).statistic, abs=1e-12)


def test_spearman_hand_values():
  assert inf.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert inf.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # ranks a = (1, 2.5, 2.5, 4), b = (1, 2, 3, 4): Pearson = 4.5 / sqrt(4.5 * 5)
  assert inf.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5))
  with pytest.raises(ValueError, match='constant'):
    inf.spearman([1, 1, 1], [1, 2, 3])


def test_topk_overlap_by_absolute_value():
  a = np.array([5.0, -4.0, 0.1, 3.0, 0.2])
  b = np.array([-6.0, 0.0, 0.3, 3.5, -2.0])
  # top-2 |a| = {0, 1}; top-2 |b| = {0, 3}
  assert inf.topk_overlap(a, b, 2) == pytest.approx(0.5)
  # top-3 |a| = {0, 1, 3}; top-3 |b| = {0, 3, 4}
  assert inf.topk_overlap(a, b, 3) == pytest.approx(2 / 3)
  assert inf.topk_overlap(a, b, 5) == 1.0
  assert inf.topk_overlap(a, -a, 2) == 1.0
  for k in (0, 6, 1.5):
    with pytest.raises(ValueError):
      inf.topk_overlap(a, b, k)


def test_top_fraction():
  s = np.array([0.1, -5.0, 2.0, 0.0, -3.0, 1.0, 0.5, -0.2, 4.0, 0.3])
  np.testing.assert_array_equal(inf.top_fraction(s, 0.1), [1])
  np.testing.assert_array_equal(inf.top_fraction(s, 0.3), [1, 8, 4])
  assert len(inf.top_fraction(s, 1.0)) == 10
  assert len(inf.top_fraction(s, 0.25)) == 3        # round(2.5) with halves up
  assert len(inf.top_fraction(s, 0.24)) == 2        # round(2.4)
  assert len(inf.top_fraction(np.arange(1.0, 31.0), 0.1)) == 3  # 0.1*30 is 3.0000000000000004
  for tau in (0.0, -0.1, 1.1):
    with pytest.raises(ValueError, match='tau'):
      inf.top_fraction(s, tau)
  with pytest.raises(ValueError, match='too few'):
    inf.top_fraction(s, 0.05)


def test_large_n_uses_blocked_path_and_matches_dense_closed_form():
  # n > the 512 block size, checked against the closed form with numpy's dense inverse.
  k, ke, y, ye = _problem(n=700, t=6, c=2, d=8, seed=7)
  ridge = 1e-3
  a_inv = np.linalg.inv(k + ridge * np.mean(np.diag(k)) * np.eye(700))
  r = (a_inv @ y) / np.diag(a_inv)[:, None]
  b = ke @ a_inv
  delta = -b[:, :, None] * r[None]
  e = ke @ a_inv @ y - ye
  matrix = np.einsum('tc,tic->ti', e, delta) + 0.5 * np.sum(delta ** 2, -1)
  out = inf.loo_influence(k, ke, y, ye, ridge=ridge)
  np.testing.assert_allclose(out.loo_residuals, r, rtol=1e-7, atol=1e-9)
  np.testing.assert_allclose(out.matrix, matrix, rtol=1e-7, atol=1e-9)


# --- the lean, in-place influence (docs/method.md §13) ----------------------------------------------

@pytest.mark.parametrize('c', [3, 1])
@pytest.mark.parametrize('ridge', [1e-3, 1e-1])
def test_lean_equals_jax_influence_and_bruteforce(c, ridge):
  k, ke, y, ye = _problem(n=45, c=c, seed=10 + c)
  k = k + 1e-13 * np.random.default_rng(c).standard_normal(k.shape)   # asymmetric last bits
  ref = inf.loo_influence(k, ke, y, ye, ridge=ridge)
  kk = k.copy()
  lean = inf.loo_influence_lean(kk, ke, y, ye, ridge=ridge, overwrite=True)
  assert lean.delta is None and lean.matrix.dtype == np.float64
  scale = np.max(np.abs(ref.matrix))
  for name in ('matrix', 'scores', 'loo_residuals', 'predictions'):
    a, b = np.asarray(getattr(ref, name)), getattr(lean, name)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12 * max(np.max(np.abs(a)), 1.0))
  assert scale > 1e-3
  _, _, matrix = _brute_influence(0.5 * (k + k.T), ke, y, ye, ridge)
  np.testing.assert_allclose(lean.matrix, matrix, rtol=1e-8, atol=1e-8)
  # overwrite=True consumed the kernel (in place); overwrite=False leaves it untouched.
  assert not np.allclose(kk, k)
  kk = k.copy()
  again = inf.loo_influence_lean(kk, ke, y, ye, ridge=ridge)
  np.testing.assert_array_equal(kk, k)
  np.testing.assert_array_equal(again.matrix, lean.matrix)


def test_lean_refuses_bad_input_before_touching_the_kernel():
  k, ke, y, ye = _problem(n=20)
  kk = k.copy()
  with pytest.raises(ValueError, match='ridge must be > 0'):
    inf.loo_influence_lean(kk, ke, y, ye, ridge=0.0, overwrite=True)
  bad = ke.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match='k_eval_train contains NaN'):
    inf.loo_influence_lean(kk, bad, y, ye, overwrite=True)
  np.testing.assert_array_equal(kk, k)
  with pytest.raises(ValueError, match=r'shape \(t, 20\)'):
    inf.loo_influence_lean(k, ke[:, :5], y, ye)
  indefinite = -np.eye(20)
  indefinite[0, 0] = 40.0          # mean(diag) > 0 but K + λI is not positive definite
  with pytest.raises(ValueError, match='not positive definite'):
    inf.loo_influence_lean(indefinite, ke, y, ye)
