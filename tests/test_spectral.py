"""Tests for ntk_attention.spectral against independent computations (closed forms, SVD, numpy)."""
import json
import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ntk_attention import spectral


def _known_spectrum(lam, seed=0):
  """Q diag(lam) Qᵀ with a random orthogonal Q."""
  q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(lam), len(lam))))
  k = (q * lam) @ q.T
  return 0.5 * (k + k.T)


def _unit(x):
  return x / np.sqrt(np.sum(x * x, axis=1, keepdims=True))


@pytest.fixture(scope='module')
def digits():
  return load_digits().data / 16.0


# --- basics -----------------------------------------------------------------------------------

def test_unit_rows_and_gram():
  x = np.random.default_rng(1).standard_normal((7, 5)) * 3.0
  u = spectral.unit_rows(x)
  np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-14)
  np.testing.assert_allclose(u * np.linalg.norm(x, axis=1, keepdims=True), x, rtol=1e-14)
  g = spectral.gram(x)
  assert g.dtype == np.float64 and np.array_equal(g, g.T)
  # cosine similarity, entry by entry
  cos = np.array([[a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for b in x] for a in x])
  np.testing.assert_allclose(g, cos, rtol=1e-13, atol=1e-15)


def test_eigenvalues_sorted_and_match_known_spectrum():
  lam = np.array([5.0, -1.0, 0.25, 3.0, 2.0])
  eigs = spectral.eigenvalues(_known_spectrum(lam))
  np.testing.assert_allclose(eigs, np.sort(lam)[::-1], rtol=1e-12, atol=1e-14)


def test_numerical_rank_and_condition_number_closed_form():
  eigs = np.array([4.0, 2.0, 1e-3, 1e-12, -1e-14])
  assert spectral.numerical_rank(eigs, rtol=1e-10) == 3
  assert spectral.numerical_rank(eigs, rtol=1e-2) == 2
  assert spectral.condition_number(np.array([4.0, 2.0, 0.5])) == pytest.approx(8.0, rel=1e-15)
  assert spectral.condition_number(eigs) == math.inf          # λ_min < 0
  assert spectral.condition_number(np.array([1.0, 0.0])) == math.inf
  kd, r = spectral.effective_condition_number(eigs, n=5, d=2)
  assert (r, kd) == (2, 2.0)                                   # capped at d
  kd, r = spectral.effective_condition_number(eigs, n=5, d=5)
  assert r == 3 and kd == pytest.approx(4.0 / 1e-3, rel=1e-15)  # capped at numerical rank


# --- claim 2: κ(G³) = κ(G)³ ---------------------------------------------------------------------

def test_kappa_of_cube_is_cube_of_kappa_known_spectrum():
  lam = np.array([100.0, 31.0, 7.5, 4.0, 2.2, 1.3, 1.0])  # κ = 100, κ³ = 1e6
  g = _known_spectrum(lam, seed=3)
  want = (lam.max() / lam.min()) ** 3
  k_sym = spectral.condition_number(spectral.eigenvalues(spectral.matrix_power_sym(g, 3)))
  k_mat = spectral.condition_number(spectral.eigenvalues(g @ g @ g))
  assert k_sym == pytest.approx(want, rel=1e-8)
  assert k_mat == pytest.approx(want, rel=1e-8)
  assert spectral.condition_number(spectral.eigenvalues(g)) ** 3 == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize('p', [0, 1, 2, 3, 5])
def test_matrix_power_sym_matches_numpy(p):
  # indefinite symmetric matrix: odd powers keep signs
  a = np.random.default_rng(4).standard_normal((6, 6))
  s = (a + a.T) / 2.0
  np.testing.assert_allclose(spectral.matrix_power_sym(s, p), np.linalg.matrix_power(s, p),
                             rtol=1e-10, atol=1e-10 * np.abs(s).max() ** max(p, 1))


def test_matrix_power_sym_on_gram_equals_chained_products():
  g = spectral.gram(np.random.default_rng(5).standard_normal((9, 4)))
  np.testing.assert_allclose(spectral.matrix_power_sym(g, 3), g @ g @ g, atol=1e-12)
  np.testing.assert_allclose(spectral.matrix_power_sym(g, 5), g @ g @ g @ g @ g, atol=1e-11)


# --- κ_d when n > d -----------------------------------------------------------------------------

def test_kappa_d_when_n_exceeds_d_matches_svd():
  n, d = 50, 10
  x = np.random.default_rng(6).standard_normal((n, d))
  eigs = spectral.eigenvalues(spectral.gram(x))
  assert spectral.numerical_rank(eigs) == d
  kappa = spectral.condition_number(eigs)
  assert kappa == math.inf or kappa > 1e12
  kd, r = spectral.effective_condition_number(eigs, n, d)
  sv = np.linalg.svd(_unit(x), compute_uv=False)  # independent: σ² are G's nonzero eigenvalues
  assert r == d
  assert kd == pytest.approx(sv[0] ** 2 / sv[d - 1] ** 2, rel=1e-10)


# --- rank-r truncation --------------------------------------------------------------------------

def test_truncate_spectrum_and_eckart_young():
  n, d, r = 12, 30, 5
  x = np.random.default_rng(7).standard_normal((n, d))
  g = spectral.gram(x)
  eigs = spectral.eigenvalues(g)
  t = spectral.truncate(g, r)
  t_eigs = spectral.eigenvalues(t)
  want = np.concatenate([eigs[:r], np.zeros(n - r)])
  np.testing.assert_allclose(t_eigs, want, atol=1e-12 * eigs[0])
  # independent construction from the SVD of the unit rows: G_r = V_r Σ_r² V_rᵀ
  v, sv, _ = np.linalg.svd(_unit(x), full_matrices=False)
  np.testing.assert_allclose(t, (v[:, :r] * sv[:r] ** 2) @ v[:, :r].T, atol=1e-12)
  kd, rr = spectral.effective_condition_number(t_eigs, n, d)
  assert rr == r and kd == pytest.approx(sv[0] ** 2 / sv[r - 1] ** 2, rel=1e-10)
  # its cube's nonzero part has condition number (λ₁/λ_r)³ (docs/method.md §3)
  kd3, rr3 = spectral.effective_condition_number(
      spectral.eigenvalues(spectral.matrix_power_sym(t, 3)), n, d)
  assert rr3 == r and kd3 == pytest.approx((eigs[0] / eigs[r - 1]) ** 3, rel=1e-9)
  np.testing.assert_allclose(spectral.truncate(g, n), g, atol=1e-13)
  assert np.all(spectral.truncate(g, 0) == 0.0)


# --- width thresholds ---------------------------------------------------------------------------

def test_width_thresholds_closed_form():
  for kappa, eps in [(10.0, 0.3), (123.4, 0.1), (1.0, 0.5)]:
    assert 10 ** spectral.log10_width_v1(kappa, eps) == pytest.approx(kappa ** 6 / eps ** 2, rel=1e-12)
  for kd, n in [(7.0, 50), (42.0, 1000), (1.5, 2)]:
    assert 10 ** spectral.log10_width_v2(kd, n) == pytest.approx(kd ** 6 * n * math.log(n), rel=1e-12)
  assert spectral.log10_width_v1(math.inf, 0.3) == math.inf
  with pytest.raises(ValueError):
    spectral.log10_width_v1(10.0, 0.0)
  with pytest.raises(ValueError):
    spectral.log10_width_v2(10.0, 1)


# --- direct κ and its reliability flag ----------------------------------------------------------

def test_direct_kappa_reliable_when_predicted_small():
  lam = np.array([1e3, 50.0, 3.0, 1.0])
  out = spectral.direct_kappa(_known_spectrum(lam, seed=8), predicted_log10_kappa=3.0)
  assert out['reliable'] is True
  assert out['kappa'] == pytest.approx(1e3, rel=1e-10)
  assert out['log10_kappa'] == pytest.approx(3.0, rel=1e-12)


def test_direct_kappa_unreliable_when_predicted_beyond_float64():
  lam = np.array([1e3, 50.0, 3.0, 1.0])
  out = spectral.direct_kappa(_known_spectrum(lam, seed=8), predicted_log10_kappa=13.0)
  assert out['reliable'] is False
  assert out['kappa'] == pytest.approx(1e3, rel=1e-10)  # the measurement is still returned
  assert spectral.direct_kappa(np.eye(3), 12.0, max_log10=12.0)['reliable'] is True


def test_direct_kappa_unreliable_when_measured_singular():
  out = spectral.direct_kappa(np.diag([1.0, 0.5, 0.0]), predicted_log10_kappa=1.0)
  assert out['reliable'] is False and out['kappa'] == math.inf


def test_direct_kappa_on_attention_features(digits):
  # G³ of 100 digits: κ(G)³ beyond 1e12 must be flagged; 20 digits: direct value matches κ(G)³
  for n, expect in [(20, True), (100, False)]:
    g = spectral.gram(digits[:n])
    log10_k = math.log10(spectral.condition_number(spectral.eigenvalues(g)))
    out = spectral.direct_kappa(g @ g @ g, 3 * log10_k)
    assert out['reliable'] is expect
    if expect:
      assert out['log10_kappa'] == pytest.approx(3 * log10_k, rel=1e-6)


# --- κ curve ------------------------------------------------------------------------------------

def test_subset_indices_nested_and_seeded():
  a = spectral.subset_indices(100, 30, seed=2)
  b = spectral.subset_indices(100, 60, seed=2)
  assert np.array_equal(b[:30], a) and len(set(b)) == 60
  assert np.array_equal(spectral.subset_indices(100, 60, seed=2), b)
  assert not np.array_equal(spectral.subset_indices(100, 60, seed=3), b)
  assert np.array_equal(spectral.subset_indices(100, 7, seed=None), np.arange(7))


def test_kappa_curve_matches_independent_and_grows(digits):
  grid = (10, 20, 30, 40, 50, 100, 200, 500, 1000)
  curve = spectral.kappa_curve(digits, grid, seed=0)
  assert [c['n'] for c in curve] == list(grid)
  for c in curve:
    xs = digits[spectral.subset_indices(len(digits), c['n'], seed=0)]
    u = _unit(xs)
    lam = np.linalg.eigvalsh(u @ u.T)
    if lam.min() > 0:
      assert c['kappa'] == pytest.approx(lam.max() / lam.min(), rel=1e-6)
    assert c['rank'] == c['r'] == np.linalg.matrix_rank(xs)  # independent SVD rank of the pixels
  kappas = [c['kappa'] for c in curve]
  # nested subsets: interlacing makes κ non-decreasing; below the rank (n <= 50) it strictly grows
  assert all(a <= b for a, b in zip(kappas, kappas[1:]))
  assert all(a < b for a, b in zip(kappas[:5], kappas[1:5]))
  # n = 1000 > d: G singular, κ_d is the meaningful number; a random subset can miss rare pixels
  assert (kappas[-1] == math.inf or kappas[-1] > 1e12) and 55 <= curve[-1]['r'] <= 61
  assert curve[0]['kappa_eff'] == pytest.approx(curve[0]['kappa'], rel=1e-12)  # n < rank: same
  assert spectral.kappa_curve(digits, (50, 200), seed=0)[1] == curve[6]
  assert spectral.kappa_curve(digits, (200,), seed=1)[0]['kappa_eff'] != curve[6]['kappa_eff']
  first = spectral.kappa_curve(digits, (1000,), seed=None)[0]
  assert first['r'] == 61 and first == {'n': 1000, **{k: v for k, v in spectral.summarize(
      digits[:1000]).items() if k in first}}


# --- digits: rank 61 (three pixels always zero) -------------------------------------------------

def test_digits_rank_61_at_1000_points(digits):
  x = digits[:1000]
  assert int(np.sum(np.all(x == 0.0, axis=0))) == 3      # hence rank <= 61
  s = spectral.summarize(x)
  assert (s['n'], s['d'], s['rank'], s['r']) == (1000, 64, 61, 61)
  # the rank is not a tolerance artefact: a wide gap around the threshold
  eigs = spectral.eigenvalues(spectral.gram(x))
  thr = 1e-10 * eigs[0]
  assert eigs[60] > 1e3 * thr and eigs[61] < 1e-3 * thr
  assert s['kappa_eff'] == pytest.approx(eigs[0] / eigs[60], rel=1e-12)
  assert s['log10_width_v2'] == pytest.approx(
      6 * math.log10(eigs[0] / eigs[60]) + math.log10(1000 * math.log(1000)), rel=1e-12)


def test_summarize_independent_and_json():
  x = np.random.default_rng(9).standard_normal((10, 30))
  s = spectral.summarize(x, eps=0.2)
  u = _unit(x)
  lam = np.linalg.eigvalsh(u @ u.T)
  kappa = lam.max() / lam.min()
  assert (s['rank'], s['r']) == (10, 10)
  assert s['kappa'] == pytest.approx(kappa, rel=1e-10)
  assert s['kappa_eff'] == pytest.approx(kappa, rel=1e-10)
  g3 = (u @ u.T) @ (u @ u.T) @ (u @ u.T)
  lam3 = np.linalg.eigvalsh(g3)
  assert s['kappa_cubed'] == pytest.approx(lam3.max() / lam3.min(), rel=1e-8)
  assert s['log10_width_v1'] == pytest.approx(6 * math.log10(kappa) - 2 * math.log10(0.2), rel=1e-12)
  assert s['log10_kappa_cubed'] == pytest.approx(3 * math.log10(kappa), rel=1e-12)
  back = json.loads(json.dumps(s))
  assert back == s


def test_summarize_singular_is_inf_not_nan():
  x = np.random.default_rng(10).standard_normal((40, 3))
  s = spectral.summarize(x)
  json.dumps(s)
  assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())
  assert s['r'] == 3 and math.isfinite(s['log10_width_v2'])
  if s['kappa'] == math.inf:
    assert s['kappa_cubed'] == math.inf and s['log10_width_v1'] == math.inf


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize('fn', [spectral.unit_rows, spectral.gram, spectral.summarize])
def test_bad_data_raises(fn):
  x = np.ones((4, 3))
  x_zero = x.copy(); x_zero[2] = 0.0
  x_nan = x.copy(); x_nan[1, 1] = np.nan
  for bad in (x_zero, x_nan, np.ones(3), np.ones((2, 2, 2))):
    with pytest.raises(ValueError):
      fn(bad)


def test_bad_matrix_raises():
  with pytest.raises(ValueError, match='square'):
    spectral.eigenvalues(np.ones((3, 4)))
  with pytest.raises(ValueError, match='symmetric'):
    spectral.eigenvalues(np.array([[1.0, 2.0], [0.0, 1.0]]))
  with pytest.raises(ValueError, match='NaN'):
    spectral.eigenvalues(np.array([[1.0, np.nan], [np.nan, 1.0]]))
  with pytest.raises(ValueError):
    spectral.truncate(np.eye(3), 4)
  with pytest.raises(ValueError):
    spectral.matrix_power_sym(np.eye(3), 1.5)
  with pytest.raises(ValueError):
    spectral.condition_number(np.array([1.0, np.nan]))
  with pytest.raises(ValueError):
    spectral.kappa_curve(np.eye(5), (3, 6))
