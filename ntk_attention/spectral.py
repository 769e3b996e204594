"""Spectral analysis of the sample Gram matrix G = U Uᵀ (docs/method.md §1 claim 2, §3, §5).

Pure numpy float64. Linearized attention turns G into the kernel G³ (G^{2k+1} or G^{3^k} with
depth, (U_r Λ_r U_rᵀ)³ with rank r), so its condition number is a power of G's:
κ(G³) = κ(G)³ exactly in exact arithmetic. Widths needed for the kernel regime,
m = Ω(κ⁶/ε²) (v1) and m = Ω(κ_d⁶ · n ln n) (v2), overflow floats, so they are reported in log10.

Conventions: eigenvalues are sorted descending; the numerical rank counts eigenvalues above
`rtol · max|λ|` (default rtol = 1e-10); κ_d = λ₁/λ_r with r = min(n, d, numerical rank).
"""
import math

import numpy as np

# float64 resolves a condition number up to about 1e12 (docs/method.md §5).
MAX_RELIABLE_LOG10_KAPPA = 12.0


def _finite_matrix(a, name):
  a = np.asarray(a, dtype=np.float64)
  if a.ndim != 2:
    raise ValueError(f'{name} must be a 2-d array, got shape {a.shape}.')
  if not np.all(np.isfinite(a)):
    raise ValueError(f'{name} contains NaN or inf.')
  return a


def _symmetric(k, rtol=1e-8):
  """Checks k is a finite square matrix with max|k - kᵀ| <= rtol·max|k|; returns it as float64."""
  k = _finite_matrix(k, 'matrix')
  if k.shape[0] != k.shape[1]:
    raise ValueError(f'matrix must be square, got shape {k.shape}.')
  scale = np.max(np.abs(k)) if k.size else 0.0
  if np.max(np.abs(k - k.T), initial=0.0) > rtol * scale:
    raise ValueError(f'matrix is not symmetric (rtol {rtol}).')
  return k


def _eigh(g):
  """Eigendecomposition (w, V) of symmetric g, g = V diag(w) Vᵀ, w descending."""
  w, v = np.linalg.eigh(_symmetric(g))
  return w[::-1], v[:, ::-1]


def _eigs(eigs):
  eigs = np.asarray(eigs, dtype=np.float64)
  if eigs.ndim != 1 or eigs.size == 0 or not np.all(np.isfinite(eigs)):
    raise ValueError('eigenvalues must be a non-empty finite 1-d array.')
  return eigs


def _log10(x):
  return math.inf if x == math.inf else math.log10(x)


def _cube(x):
  """x**3 as a float, inf instead of OverflowError."""
  return math.inf if x > 1e100 else x ** 3


def unit_rows(x):
  """U with U_i = x_i / ‖x_i‖₂ for x of shape (n, d); float64 (n, d). Zero rows or NaN -> ValueError."""
  x = _finite_matrix(x, 'x')
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  if np.any(norms == 0.0):
    raise ValueError(f'x has {int(np.sum(norms == 0.0))} zero row(s); they have no direction.')
  return x / norms


def gram(x):
  """G = U Uᵀ with U = unit_rows(x): cosine similarities, (n, n) float64, exactly symmetric."""
  u = unit_rows(x)
  g = u @ u.T
  return 0.5 * (g + g.T)


def eigenvalues(k):
  """Eigenvalues of symmetric k (float64), sorted descending. Non-square, asymmetric or NaN -> ValueError."""
  return np.linalg.eigvalsh(_symmetric(k))[::-1]


def numerical_rank(eigs, rtol=1e-10):
  """#{i : λ_i > rtol · max|λ|}."""
  eigs = _eigs(eigs)
  return int(np.sum(eigs > rtol * np.max(np.abs(eigs))))


def condition_number(eigs):
  """κ = λ_max / λ_min; inf when λ_min <= 0 (singular or indefinite)."""
  eigs = _eigs(eigs)
  lo, hi = float(np.min(eigs)), float(np.max(eigs))
  return math.inf if lo <= 0.0 else hi / lo


def effective_condition_number(eigs, n, d, rtol=1e-10):
  """(κ_d, r): κ_d = λ₁/λ_r with r = min(n, d, numerical_rank(eigs, rtol)) (v2's rank-min(n,d) truncation)."""
  eigs = np.sort(_eigs(eigs))[::-1]
  r = min(int(n), int(d), numerical_rank(eigs, rtol))
  if r < 1:
    raise ValueError('no eigenvalue above the rank tolerance; κ_d is undefined.')
  return float(eigs[0] / eigs[r - 1]), r


def log10_width_v1(kappa, eps):
  """log10 of m = κ⁶/ε² (study v1): 6 log10 κ − 2 log10 ε."""
  if not kappa >= 1.0 or not 0.0 < eps:
    raise ValueError(f'need kappa >= 1 and eps > 0, got kappa={kappa}, eps={eps}.')
  return 6.0 * _log10(kappa) - 2.0 * math.log10(eps)


def log10_width_v2(kappa_d, n):
  """log10 of m = κ_d⁶ · n ln n (study v2): 6 log10 κ_d + log10(n ln n)."""
  if not kappa_d >= 1.0 or not n >= 2:
    raise ValueError(f'need kappa_d >= 1 and n >= 2, got kappa_d={kappa_d}, n={n}.')
  return 6.0 * _log10(kappa_d) + math.log10(n * math.log(n))


def feature_concentration(z):
  """How close the rows of `z (n, d)` are to one direction, from the spectrum of `Z Zᵀ`.

  Returns `(top_share, effective_rank)`: `top_share = λ₁ / Σλ` (1 when the features are
  collinear) and the participation ratio `(Σλ)² / Σλ²` (between 1 and rank), float64,
  computed from the singular values of `z` (λ = s²).
  """
  z = _finite_matrix(z, 'features')
  lam = np.linalg.svd(z, compute_uv=False) ** 2
  total = lam.sum()
  if not total > 0:
    raise ValueError('features are all zero.')
  return float(lam[0] / total), float(total ** 2 / np.sum(lam ** 2))


def truncate(g, rank):
  """Top-r eigen-truncation U_r diag(λ_1..λ_r) U_rᵀ of symmetric g (n, n) (docs/method.md §3 `rank=r`)."""
  w, v = _eigh(g)
  if not 0 <= rank <= len(w):
    raise ValueError(f'rank must be in [0, {len(w)}], got {rank}.')
  t = (v[:, :rank] * w[:rank]) @ v[:, :rank].T
  return 0.5 * (t + t.T)


def matrix_power_sym(g, p):
  """g^p = V diag(w^p) Vᵀ for symmetric g and integer p >= 0 (float64)."""
  if not isinstance(p, (int, np.integer)) or p < 0:
    raise ValueError(f'p must be an integer >= 0, got {p!r}.')
  w, v = _eigh(g)
  m = (v * w ** int(p)) @ v.T
  return 0.5 * (m + m.T)


def direct_kappa(k, predicted_log10_kappa, max_log10=MAX_RELIABLE_LOG10_KAPPA):
  """κ measured on k itself (e.g. the attention features' Gram matrix, predicted κ(G)³).

  reliable iff predicted_log10_kappa <= max_log10 (float64 resolves κ up to ~1e12) and the
  measured λ_min > 0. An unreliable κ is still returned, flagged.
  """
  if math.isnan(predicted_log10_kappa):
    raise ValueError('predicted_log10_kappa is NaN.')
  eigs = eigenvalues(k)
  kappa = condition_number(eigs)
  return {'kappa': kappa, 'log10_kappa': _log10(kappa),
          'lambda_max': float(eigs[0]), 'lambda_min': float(eigs[-1]),
          'predicted_log10_kappa': float(predicted_log10_kappa),
          'reliable': bool(predicted_log10_kappa <= max_log10 and eigs[-1] > 0.0)}


def _spectrum_stats(eigs, n, d, rtol):
  kappa = condition_number(eigs)
  kappa_eff, r = effective_condition_number(eigs, n, d, rtol)
  return {'rank': numerical_rank(eigs, rtol), 'kappa': kappa, 'kappa_eff': kappa_eff, 'r': r,
          'log10_kappa': _log10(kappa), 'log10_kappa_eff': _log10(kappa_eff)}


def subset_indices(n_total, n, seed=0):
  """First n entries of one seeded permutation of range(n_total): subsets are nested in n.

  seed=None keeps the data order (the first n rows).
  """
  if not 1 <= n <= n_total:
    raise ValueError(f'n must be in [1, {n_total}], got {n}.')
  if seed is None:
    return np.arange(n)
  return np.random.default_rng(seed).permutation(n_total)[:n]


def kappa_curve(x, n_grid, seed=0, rtol=1e-10):
  """κ(G) and κ_d(G) on nested seeded subsets of x (n_total, d), one dict per n in n_grid.

  Subsets are nested (`subset_indices`; seed=None: the first n rows), so by Cauchy interlacing
  κ is non-decreasing in n; it is inf once n exceeds the data's rank. κ_d need not be monotone.
  """
  unit_rows(x)  # validate x (2-d, finite, no zero rows) up front
  x = np.asarray(x, dtype=np.float64)
  for n in n_grid:
    subset_indices(len(x), n, seed)  # validate the whole grid before any eigensolve
  out = []
  for n in n_grid:
    eigs = eigenvalues(gram(x[subset_indices(len(x), n, seed)]))
    out.append({'n': int(n), **_spectrum_stats(eigs, n, x.shape[1], rtol)})
  return out


def summarize(x, eps=0.3, rtol=1e-10):
  """Spectral summary of G = gram(x) for x (n, d): κ, κ_d, κ³ = κ(G³), width thresholds (log10).

  κ(G³) is computed from G's eigenvalues (κ³); JSON-friendly Python floats, inf where singular.
  """
  g = gram(x)
  n, d = np.shape(x)
  if n < 2:
    raise ValueError(f'need at least 2 samples, got {n}.')
  s = _spectrum_stats(eigenvalues(g), n, d, rtol)
  return {'n': int(n), 'd': int(d), **s,
          'kappa_cubed': _cube(s['kappa']),
          'kappa_eff_cubed': _cube(s['kappa_eff']),
          'log10_kappa_cubed': 3.0 * s['log10_kappa'],
          'log10_kappa_eff_cubed': 3.0 * s['log10_kappa_eff'],
          'log10_width_v1': log10_width_v1(s['kappa'], eps),
          'log10_width_v2': log10_width_v2(s['kappa_eff'], n),
          'eps': float(eps), 'rtol': float(rtol)}
