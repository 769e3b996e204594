"""Spectral analysis of the sample Gram matrix G and of linearized attention's kernel G³
(docs/method.md §5); `configs.Spectral`, scripts/spectral.py.

Everything is computed on the training subsample (`data.n_train` points), in float64:

- κ(G) = λ_max/λ_min and κ_d(G) = λ₁/λ_r, r = min(n, d, numerical rank at `rtol`);
  κ(G³) = κ(G)³ from G's eigenvalues; the width thresholds log10 m_v1 (ε = `eps`) and
  log10 m_v2 (`spectral.summarize`).
- κ measured directly on the attention features: the NNGP of `Normalize → LinearizedAttention`
  (parameter-free, no final normalisation) over the training set, from the stax `kernel_fn` in
  float64; this kernel is G³ up to a scale. When G is singular (κ = inf) the direct measurement is
  of the effective κ_d (λ₁/λ_r of the measured spectrum, r from G), and the JSON says so. The
  measurement is flagged reliable only when the predicted κ³ is within float64's reach (≲ 1e12).
- κ and κ_d as a curve over nested seeded subsets of size `n_grid` (`spectral.kappa_curve`).
- Spectra of G, G³, the shared depth-k kernels G^{2k+1} (`depths`) and the rank-r truncated
  kernels (U_r Λ_r U_rᵀ)³ (`ranks`). The powers are the exact powers of G's eigenvalues
  (λ_i^p for i < numerical rank, 0 beyond): forming G^7 and diagonalising it would bury every
  eigenvalue below 1e-16·λ₁^7 in round-off. G³ is also stored as measured on the attention
  features.

Writes spectral.json, spectral_curve.csv, spectral_spectra.npz, spectral_spectra.png and
spectral_kappa_vs_n.png. Nothing here trains.
"""
import math
import os

from absl import logging
import jax.numpy as jnp
import numpy as np

from ntk_attention import _nt
from ntk_attention import layers
from ntk_attention import spectral
from ntk_attention.study import configs
from ntk_attention.study import paper
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'spectral'
# The study's quoted κ(G) (v1); the number of samples behind them was not published.
PAPER_KAPPA = paper.KAPPA


def _grid(config: configs.Spectral):
  """(the κ(n) grid at or below data.n_train, sorted; the values dropped above it)."""
  grid = _base.check_ints(config.n_grid, 'n_grid')
  n_train = config.data.n_train
  return sorted(set(n for n in grid if n <= n_train)), [n for n in grid if n > n_train]


def check(config: configs.Spectral) -> None:
  """Validates `config` before any data is loaded."""
  _base.check_data(config.data)
  grid, dropped = _grid(config)
  if not grid:
    raise ValueError(f'--n_grid: every value {dropped} is above '
                     f'--n_train={config.data.n_train}.')
  if not 0.0 < config.rtol < 1.0:
    raise ValueError(f'--rtol must be in (0, 1), got {config.rtol}.')
  if not config.eps > 0.0:
    raise ValueError(f'--eps must be > 0, got {config.eps}.')
  _base.check_ints(config.depths, 'depths')
  ranks = _base.check_ints(config.ranks, 'ranks')
  if max(ranks) > config.data.n_train:
    raise ValueError(f'--ranks must be <= --n_train={config.data.n_train}, '
                     f'got {sorted(set(ranks))}.')


def data_needs(config: configs.Spectral) -> list:
  return _base.data_needs(config.data)


def run(config: configs.Spectral, out_dir: str, context=None, resume: bool = False) -> dict:
  """The spectral analysis of `config` into `out_dir`; returns the spectral.json dict.
  `context` and `resume` are unused: nothing here trains, and the part is one computation."""
  del context, resume
  check(config)
  grid, dropped = _grid(config)
  if dropped:
    logging.info('--n_grid: dropping %s (above --n_train=%d)', dropped, config.data.n_train)
  ds = _base.load_data(config.data)
  return _analyse(ds, config, out_dir, grid)


def variant_checks(x, depths, ranks, rtol=1e-10):
  """Measured κ of the depth-k (shared / recomputed) and rank-r attention kernels against
  the predictions κ(G)^{2k+1}, κ(G)^{3^k} and (λ₁/λ_r)³, on the rows of `x`.

  Each kernel is the float64 NNGP of `Normalize → LinearizedAttention(...)` (no final
  normalisation); a measurement counts as reliable when its prediction is within float64's
  reach (log10 κ <= 12) and the measured eigenvalues are positive on the range.
  """
  del rtol   # κ(G) is λ_max/λ_min: no rank cut
  lam = spectral.eigenvalues(spectral.gram(x))
  log_k = math.log10(spectral.condition_number(lam))
  seq, _ = layers.as_sequence(jnp.asarray(x, jnp.float64))
  rows = []

  def measure(layer, predicted, r=None, **label):
    k = np.asarray(_nt.stax.serial(layers.Normalize(), layer)[2](seq, None, 'nngp')[0, 0])
    eig = spectral.eigenvalues(k)
    low = eig[-1] if r is None else eig[r - 1]
    measured = math.log10(eig[0] / low) if low > 0 else math.inf
    rows.append(dict(label, log10_kappa_measured=measured, log10_kappa_predicted=predicted,
                     reliable=bool(predicted <= spectral.MAX_RELIABLE_LOG10_KAPPA and low > 0)))

  for k in depths:
    measure(layers.LinearizedAttention(depth=k, shared=True), (2 * k + 1) * log_k,
            depth=k, pattern='shared', power=2 * k + 1)
    measure(layers.LinearizedAttention(depth=k, shared=False, average=True), 3 ** k * log_k,
            depth=k, pattern='recomputed', power=3 ** k)
  for r in ranks:
    if r <= len(x):
      measure(layers.LinearizedAttention(rank=r), 3 * math.log10(lam[0] / lam[r - 1]), r=r,
              rank=r, power=3)
  return rows


def _direct(k_attn, eigs_attn, summary):
  """κ measured on the attention features against the prediction: (kind, direct, full)."""
  direct_full = spectral.direct_kappa(k_attn, summary['log10_kappa_cubed'])
  if math.isfinite(summary['kappa']):
    return 'full: lambda_max/lambda_min, compared with kappa(G)^3', direct_full, direct_full
  # G is singular: compare the effective κ_d(G³) = λ₁/λ_r (r from G) with κ_d(G)³.
  r, pred = summary['r'], summary['log10_kappa_eff_cubed']
  lam_r = float(eigs_attn[r - 1])
  kappa_d = float(eigs_attn[0]) / lam_r if lam_r > 0 else math.inf
  direct = {'kappa': kappa_d, 'log10_kappa': math.log10(kappa_d) if lam_r > 0 else math.inf,
            'lambda_max': float(eigs_attn[0]), 'lambda_r': lam_r, 'predicted_log10_kappa': pred,
            'reliable': bool(pred <= spectral.MAX_RELIABLE_LOG10_KAPPA and lam_r > 0)}
  kind = f'effective: lambda_1/lambda_r with r={r} (kappa(G) is inf), compared with kappa_d(G)^3'
  return kind, direct, direct_full


def _spectra(eigs, eigs_attn, summary, depths, ranks):
  """({name: eigenvalues} of G, its odd powers and rank-r cubes; the variants' κ rows)."""
  n, rank = len(eigs), summary['rank']
  lam = np.where(np.arange(n) < rank, eigs, 0.0)    # exact powers on G's numerical range
  spectra, variants = {'G': eigs}, []
  for p in sorted({3} | {2 * k + 1 for k in depths}):
    spectra[f'G^{p}'] = lam ** p
    if p == 3:
      spectra['G^3 (attention features, measured)'] = eigs_attn
    variants.append({'name': f'G^{p}', 'power': p,
                     'depths': [k for k in depths if 2 * k + 1 == p],
                     'log10_kappa': p * summary['log10_kappa'],
                     'log10_kappa_eff': p * summary['log10_kappa_eff']})
  for rk in ranks:
    spectra[f'G_{rk}^3 (rank {rk})'] = np.where(np.arange(n) < rk, eigs, 0.0) ** 3
    beyond = rk > rank
    if beyond:
      logging.warning('--ranks: rank %d exceeds the numerical rank %d of G; its kappa is noise.',
                      rk, rank)
    lam_rk = float(eigs[rk - 1])
    variants.append({'name': f'G_{rk}^3', 'power': 3, 'rank': rk, 'beyond_numerical_rank': beyond,
                     'log10_kappa_on_range': (3 * math.log10(eigs[0] / lam_rk)
                                              if lam_rk > 0 else math.inf)})
  return spectra, variants


def _analyse(ds, config: configs.Spectral, out: str, grid) -> dict:
  """Spectral analysis of `ds.x_train` into folder `out`; returns the spectral.json dict."""
  x = np.asarray(ds.x_train, np.float64)
  n, d = x.shape
  depths, ranks = sorted(set(config.depths)), sorted(set(config.ranks))
  rtol, variant_n = config.rtol, config.variant_n
  os.makedirs(out, exist_ok=True)
  # Sizes that fit a small pool (`Data.fit_to_pool`) may be below the grid and ranks: refit.
  if any(v > n for v in grid + ranks):
    logging.info('only %d training points: dropping --n_grid %s and --ranks %s', n,
                 [v for v in grid if v > n], [v for v in ranks if v > n])
    grid, ranks = [v for v in grid if v <= n], [v for v in ranks if v <= n]
    if not grid:
      raise ValueError(f'--n_grid: every value is above the {n} training points available.')

  summary = spectral.summarize(x, eps=config.eps, rtol=rtol)
  eigs = spectral.eigenvalues(spectral.gram(x))
  logging.info('G: n=%d d=%d rank=%d r=%d kappa=%.4g kappa_eff=%.4g', n, d, summary['rank'],
               summary['r'], summary['kappa'], summary['kappa_eff'])

  # κ measured on the attention features: NNGP of Normalize -> LinearizedAttention (= G³ up to scale).
  seq, _ = layers.as_sequence(jnp.asarray(x, jnp.float64))
  kernel_fn = _nt.stax.serial(layers.Normalize(), layers.LinearizedAttention())[2]
  k_attn = np.asarray(kernel_fn(seq, None, 'nngp')[0, 0])
  if k_attn.dtype != np.float64:
    raise RuntimeError(f'attention kernel came out as {k_attn.dtype}; float64 is required.')
  eigs_attn = spectral.eigenvalues(k_attn)
  kind, direct, direct_full = _direct(k_attn, eigs_attn, summary)
  logging.info('attention features: measured kappa %.4g, predicted 10^%.3f, reliable=%s [%s]',
               direct['kappa'], direct['predicted_log10_kappa'], direct['reliable'], kind)

  spectra, variants = _spectra(eigs, eigs_attn, summary, depths, ranks)
  curve = spectral.kappa_curve(x, grid, seed=config.data.seed, rtol=rtol)
  checks = variant_checks(x[:min(variant_n, n)], depths, ranks, rtol)

  result = {
      **summary,
      'kappa_attn_direct': direct['kappa'],
      'kappa_attn_direct_reliable': direct['reliable'],
      'kappa_attn_direct_kind': kind,
      'attn_direct': direct,
      'attn_direct_full': direct_full,
      'variants': variants,
      'variant_checks': checks,
      'variant_checks_n': min(variant_n, n),
      'curve': curve,
      'curve_subsets': ('nested: first n of one permutation of the training set, '
                        f'seed={config.data.seed}'),
      'paper_reference': {'kappa_mnist': PAPER_KAPPA['mnist'],
                          'kappa_cifar10': PAPER_KAPPA['cifar10'],
                          'note': "the paper's quoted kappa(G) (v1); its sample count n was not "
                                  'published'},
      'provenance': _base.provenance(config),
  }
  paths = [os.path.join(out, f) for f in ('spectral.json', 'spectral_curve.csv',
                                           'spectral_spectra.npz', 'spectral_spectra.png',
                                           'spectral_kappa_vs_n.png')]
  store_lib.write_json(paths[0], result)
  store_lib.write_csv(paths[1], curve)
  eigenvalues = {name.split(' ')[0]: v for name, v in spectra.items() if 'measured' not in name}
  store_lib.write_npz(paths[2], n=n, d=d, rank=summary['rank'], r=summary['r'], **eigenvalues,
                      G3_measured=eigs_attn)

  from ntk_attention.study.report import figures as report_figures
  report_figures.spectral_figures(result, dict(eigenvalues, G3_measured=eigs_attn), ds.name, out)
  for p in paths:
    logging.info('wrote %s', p)
  return result
