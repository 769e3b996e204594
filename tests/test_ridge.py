"""ntk_attention.ridge: the one kernel-ridge solve, against numpy's dense solve in float64."""
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest

from ntk_attention import ridge


def _spd(n, c=3, seed=0, rank=None):
  """A PSD kernel (rank-deficient when rank < n), one not exactly symmetric, and targets."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, rank or n + 5))
  k = x @ x.T / x.shape[1]
  noisy = k + 1e-13 * rng.standard_normal((n, n))       # asymmetric in the last bits
  return k, noisy, rng.standard_normal((n, c))


@pytest.mark.parametrize('n,rank,lam', [(5, None, 1e-3), (40, 10, 1e-3), (64, None, 0.1),
                                        (700, 50, 1e-3)])
def test_ridge_solve_matches_numpy_solve(n, rank, lam):
  k, noisy, y = _spd(n, rank=rank, seed=n)
  for kk in (k, noisy):
    k_low = np.tril(kk) + np.tril(kk, -1).T                   # the lower triangle, mirrored
    a = k_low + lam * np.mean(np.diag(kk)) * np.eye(n)
    ref = np.linalg.solve(a, y)
    got = np.asarray(ridge.ridge_solve(jnp.asarray(kk), jnp.asarray(y), lam))
    assert got.dtype == np.float64
    # Forward error: 1e-12 relative, times cond(A) (both solves are backward stable).
    np.testing.assert_allclose(got, ref, rtol=0,
                               atol=1e-12 * np.linalg.cond(a) * np.max(np.abs(ref)))
    # Backward error (the residual) to 1e-12 of ‖A‖·‖α‖, whatever cond(A).
    assert np.max(np.abs(a @ got - y)) <= 1e-12 * np.max(np.abs(a)) * np.max(np.abs(got))


def test_ridge_solve_against_numpy_well_conditioned_1e_12():
  k, _, y = _spd(30, seed=1)
  ref = np.linalg.solve(k + 1e-3 * np.mean(np.diag(k)) * np.eye(30), y)
  np.testing.assert_allclose(np.asarray(ridge.ridge_solve(k, y, 1e-3)), ref, rtol=1e-12, atol=0)
  vec = np.asarray(ridge.ridge_solve(k, y[:, 0], 1e-3))           # (n,) right-hand side
  np.testing.assert_allclose(vec, ref[:, 0], rtol=1e-12, atol=0)


def test_factor_lambda_inverse_diagonal_and_lower_triangle():
  k, noisy, y = _spd(50, rank=20, seed=2)
  f = ridge.factor(k, 1e-2)
  assert float(f.lam) == pytest.approx(1e-2 * np.trace(k) / 50, rel=1e-14)
  a = k + float(f.lam) * np.eye(50)
  l = np.asarray(f.chol)
  np.testing.assert_allclose(l, np.tril(l), atol=0)                      # lower-triangular
  np.testing.assert_allclose(l @ l.T, a, rtol=0, atol=1e-13 * np.max(np.abs(a)))
  np.testing.assert_allclose(np.asarray(ridge.inverse_diagonal(f)), np.diag(np.linalg.inv(a)),
                             rtol=1e-9)
  # Only the lower triangle is read: the strict upper one may hold anything.
  np.testing.assert_array_equal(np.asarray(ridge.ridge_solve(noisy, y, 1e-2)),
                                np.asarray(ridge.ridge_solve(np.tril(noisy), y, 1e-2)))


def test_ridge_solve_is_the_cholesky_solve_bit_for_bit():
  k, _, y = _spd(20, seed=3)
  a = jnp.asarray(k) + ridge.ridge_scale(k, 1e-3) * jnp.eye(20)
  direct = jsl.cho_solve(jsl.cho_factor(a, lower=True), jnp.asarray(y))
  np.testing.assert_array_equal(np.asarray(ridge.ridge_solve(k, y, 1e-3)), np.asarray(direct))


def test_ridge_scale():   # moved from test_influence.py
  k, _, _ = _spd(40, seed=4)
  np.testing.assert_allclose(ridge.ridge_scale(k, 1e-3), 1e-3 * np.trace(k) / len(k), rtol=1e-14)


def test_not_positive_definite_gives_nan():
  y = np.ones((3, 1))
  assert not np.all(np.isfinite(np.asarray(ridge.ridge_solve(-np.eye(3), y, 1e-3))))


def test_differentiable_under_jit():
  k, _, y = _spd(12, seed=5)
  loss = jax.jit(lambda kk: jnp.sum(ridge.ridge_solve(kk, y, 1e-2) ** 2))
  g = np.asarray(jax.grad(loss)(jnp.asarray(k)))
  eps = 1e-6
  # Along symmetric directions (a kernel stays symmetric): an off-diagonal pair, a diagonal
  # entry (which also moves λ).
  for i, j in ((5, 3), (4, 4)):
    e = np.zeros((12, 12))
    e[i, j] = e[j, i] = 1.0
    fd = (float(loss(k + eps * e)) - float(loss(k - eps * e))) / (2 * eps)
    assert np.sum(g * e) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize('n,block', [(23, 4), (64, 8), (9, 16)])
def test_blocked_triangular_inverse(n, block):   # moved from test_influence.py
  rng = np.random.default_rng(n)
  l = np.tril(rng.standard_normal((n, n))) + 3 * np.eye(n)
  np.testing.assert_allclose(ridge.tril_inverse(jnp.asarray(l), block), np.linalg.inv(l),
                             rtol=1e-10, atol=1e-12)


# --- in place, on the host (docs/method.md §13) -------------------------------------------------

def test_in_place_factor_solve_and_inverse_diagonal_against_numpy():
  k, noisy, y = _spd(300, rank=40, seed=3)
  sym = 0.5 * (noisy + noisy.T)
  a_ref = sym + 1e-3 * np.mean(np.diag(noisy)) * np.eye(300)
  # Tiles of 128 over n = 300: the last tile is partial.
  np.testing.assert_array_equal(ridge.symmetrize_in_place(noisy.copy(), tile=128), sym)
  a = noisy.copy()
  f = ridge.factor_in_place(a, 1e-3)
  assert np.shares_memory(f.chol, a)                       # no copy: L lives in K's memory
  low = np.tril(f.chol)
  np.testing.assert_allclose(low @ low.T, a_ref, rtol=0, atol=1e-12 * np.max(np.abs(a_ref)))
  x = ridge.solve_host(f, y)
  assert np.max(np.abs(a_ref @ x - y)) <= 1e-12 * np.max(np.abs(a_ref)) * np.max(np.abs(x))
  np.testing.assert_allclose(ridge.ridge_solve_host(noisy, y, 1e-3), x, rtol=0, atol=0)
  ref = np.diag(np.linalg.inv(a_ref))
  got = ridge.inverse_diagonal_in_place(f, block=64)
  np.testing.assert_allclose(got, ref, rtol=1e-12 * np.linalg.cond(a_ref), atol=0)
  # The jax path (symmetrised input) agrees.
  np.testing.assert_allclose(got, np.asarray(ridge.inverse_diagonal(ridge.factor(sym, 1e-3))),
                             rtol=1e-10, atol=0)


def test_in_place_factor_refuses_what_it_would_have_to_copy():
  k, _, _ = _spd(10)
  for bad in (k[:, :9], np.asfortranarray(k + 0 * np.eye(10)), k.astype(np.float32),
              jnp.asarray(k)):
    with pytest.raises(ValueError, match='C-contiguous float64 square'):
      ridge.factor_in_place(bad, 1e-3)
  with pytest.raises(ValueError, match='not positive definite'):
    ridge.factor_in_place(-np.eye(4), 0.0)
