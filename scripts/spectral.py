"""Spectral analysis of the sample Gram matrix G and of linearized attention's kernel G³ (docs/method.md §5).

Everything is computed on the training subsample (`--n_train` points of `--dataset`), in float64:

- κ(G) = λ_max/λ_min and κ_d(G) = λ₁/λ_r, r = min(n, d, numerical rank at `--rtol`);
  κ(G³) = κ(G)³ from G's eigenvalues; the width thresholds log10 m_v1 (ε = `--eps`) and
  log10 m_v2 (`spectral.summarize`).
- κ measured directly on the attention features: the NNGP of `Normalize → LinearizedAttention`
  (parameter-free, no final normalisation) over the training set, from the stax `kernel_fn` in
  float64; this kernel is G³ up to a scale. When G is singular (κ = inf) the direct measurement is
  of the effective κ_d (λ₁/λ_r of the measured spectrum, r from G), and the JSON says so. The
  measurement is flagged reliable only when the predicted κ³ is within float64's reach (≲ 1e12).
- κ and κ_d as a curve over nested seeded subsets of size `--n_grid` (`spectral.kappa_curve`).
- Spectra of G, G³, the shared depth-k kernels G^{2k+1} (`--depths`) and the rank-r truncated
  kernels (U_r Λ_r U_rᵀ)³ (`--ranks`). The powers are the exact powers of G's eigenvalues
  (λ_i^p for i < numerical rank, 0 beyond): forming G^7 and diagonalising it would bury every
  eigenvalue below 1e-16·λ₁^7 in round-off. G³ is also stored as measured on the attention features.

Outputs in --output_dir: spectral.json, spectral_curve.csv, spectral_spectra.npz,
spectral_spectra.png, spectral_kappa_vs_n.png.

  python scripts/spectral.py --dataset=digits --n_train=1000 --output_dir=results
"""
import math
import os

from absl import app
from absl import flags
from absl import logging
import jax.numpy as jnp
import numpy as np

import _common
from ntk_attention import _nt
from ntk_attention import layers
from ntk_attention import spectral
from ntk_attention.study import paper
from ntk_attention.study import store as store_lib

FLAGS = _common.script_flags(__name__)
_common.define_data_flags(FLAGS)
flags.DEFINE_string('n_grid', '25,50,100,200,500,1000',
                    'Subset sizes n of the κ(n) curve; values above --n_train are dropped.',
                    flag_values=FLAGS)
flags.DEFINE_float('rtol', 1e-10, 'Relative tolerance of the numerical rank (λ > rtol·λ_max).',
                   flag_values=FLAGS)
flags.DEFINE_float('eps', 0.3, 'ε of the v1 width threshold m = κ⁶/ε².', flag_values=FLAGS)
flags.DEFINE_string('depths', '1,2,3', 'Depths k of shared linearized attention: spectra of G^{2k+1}.',
                    flag_values=FLAGS)
flags.DEFINE_integer('variant_n', 10, 'Points (the first n of the training set) on which the '
                     'depth-k and rank-r attention kernels are measured against their predicted κ; '
                     'small so that the predictions stay within float64 (κ^p <= 1e12).',
                     flag_values=FLAGS)
flags.DEFINE_string('ranks', '5,10,20', 'Ranks r of the truncated pattern: spectra of (U_r Λ_r U_rᵀ)³.',
                    flag_values=FLAGS)


# The study's quoted κ(G) (v1); the number of samples behind them was not published.
PAPER_KAPPA = paper.KAPPA


def _check_flags():
  """Validates every flag before any data is loaded; returns (classes, n_grid, depths, ranks)."""
  classes = _common.check_data_flags(FLAGS)
  grid = _common.parse_int_list(FLAGS.n_grid, 'n_grid')
  dropped = [n for n in grid if n > FLAGS.n_train]
  grid = sorted(set(n for n in grid if n <= FLAGS.n_train))
  if dropped:
    logging.info('--n_grid: dropping %s (above --n_train=%d)', dropped, FLAGS.n_train)
  if not grid:
    raise ValueError(f'--n_grid: every value {dropped} is above --n_train={FLAGS.n_train}.')
  if not 0.0 < FLAGS.rtol < 1.0:
    raise ValueError(f'--rtol must be in (0, 1), got {FLAGS.rtol}.')
  if not FLAGS.eps > 0.0:
    raise ValueError(f'--eps must be > 0, got {FLAGS.eps}.')
  depths = sorted(set(_common.parse_int_list(FLAGS.depths, 'depths')))
  ranks = sorted(set(_common.parse_int_list(FLAGS.ranks, 'ranks')))
  if max(ranks) > FLAGS.n_train:
    raise ValueError(f'--ranks must be <= --n_train={FLAGS.n_train}, got {ranks}.')
  return classes, grid, depths, ranks


def main(argv, context=None):
  """`context` (scripts/reproduce.py in-process) is unused: nothing here trains."""
  del context
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  classes, grid, depths, ranks = _check_flags()
  _common.setup(FLAGS)
  ds = _common.load_data(FLAGS, classes)
  run(ds, FLAGS.output_dir, grid, depths, ranks, FLAGS.rtol, FLAGS.eps, FLAGS.seed,
      FLAGS.variant_n)


def variant_checks(x, depths, ranks, rtol=1e-10):
  """Measured κ of the depth-k (shared / recomputed) and rank-r attention kernels against
  the predictions κ(G)^{2k+1}, κ(G)^{3^k} and (λ₁/λ_r)³, on the rows of `x`.

  Each kernel is the float64 NNGP of `Normalize → LinearizedAttention(...)` (no final
  normalisation); a measurement counts as reliable when its prediction is within float64's
  reach (log10 κ <= 12) and the measured eigenvalues are positive on the range.
  """
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


def run(ds, out, grid, depths, ranks, rtol=1e-10, eps=0.3, seed=0, variant_n=10):
  """Spectral analysis of `ds.x_train` into folder `out`; returns the spectral.json dict."""
  x = np.asarray(ds.x_train, np.float64)
  n, d = x.shape
  os.makedirs(out, exist_ok=True)
  # Default sizes may shrink to fit a small pool (_common.load_data): refit the grid and ranks.
  if any(v > n for v in grid + ranks):
    logging.info('only %d training points: dropping --n_grid %s and --ranks %s', n,
                 [v for v in grid if v > n], [v for v in ranks if v > n])
    grid, ranks = [v for v in grid if v <= n], [v for v in ranks if v <= n]
    if not grid:
      raise ValueError(f'--n_grid: every value is above the {n} training points available.')

  summary = spectral.summarize(x, eps=eps, rtol=rtol)
  eigs = spectral.eigenvalues(spectral.gram(x))
  rank, r = summary['rank'], summary['r']
  logging.info('G: n=%d d=%d rank=%d r=%d kappa=%.4g kappa_eff=%.4g', n, d, rank, r,
               summary['kappa'], summary['kappa_eff'])

  # κ measured on the attention features: NNGP of Normalize -> LinearizedAttention (= G³ up to scale).
  seq, _ = layers.as_sequence(jnp.asarray(x, jnp.float64))
  kernel_fn = _nt.stax.serial(layers.Normalize(), layers.LinearizedAttention())[2]
  k_attn = np.asarray(kernel_fn(seq, None, 'nngp')[0, 0])
  if k_attn.dtype != np.float64:
    raise RuntimeError(f'attention kernel came out as {k_attn.dtype}; float64 is required.')
  eigs_attn = spectral.eigenvalues(k_attn)
  direct_full = spectral.direct_kappa(k_attn, summary['log10_kappa_cubed'])
  if math.isfinite(summary['kappa']):
    kind, direct = 'full: lambda_max/lambda_min, compared with kappa(G)^3', direct_full
  else:
    # G is singular: compare the effective κ_d(G³) = λ₁/λ_r (r from G) with κ_d(G)³.
    pred = summary['log10_kappa_eff_cubed']
    lam_r = float(eigs_attn[r - 1])
    kappa_d = float(eigs_attn[0]) / lam_r if lam_r > 0 else math.inf
    direct = {'kappa': kappa_d, 'log10_kappa': math.log10(kappa_d) if lam_r > 0 else math.inf,
              'lambda_max': float(eigs_attn[0]), 'lambda_r': lam_r, 'predicted_log10_kappa': pred,
              'reliable': bool(pred <= spectral.MAX_RELIABLE_LOG10_KAPPA and lam_r > 0)}
    kind = f'effective: lambda_1/lambda_r with r={r} (kappa(G) is inf), compared with kappa_d(G)^3'
  logging.info('attention features: measured kappa %.4g, predicted 10^%.3f, reliable=%s [%s]',
               direct['kappa'], direct['predicted_log10_kappa'], direct['reliable'], kind)

  # Spectra: exact powers of G's eigenvalues on its numerical range.
  on_range = np.arange(n) < rank
  lam = np.where(on_range, eigs, 0.0)
  spectra = {'G': eigs}
  variants = []
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

  curve = spectral.kappa_curve(x, grid, seed=seed, rtol=rtol)
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
      'curve_subsets': f'nested: first n of one permutation of the training set, seed={seed}',
      'paper_reference': {'kappa_mnist': PAPER_KAPPA['mnist'],
                          'kappa_cifar10': PAPER_KAPPA['cifar10'],
                          'note': "the paper's quoted kappa(G) (v1); its sample count n was not "
                                  'published'},
      'provenance': _common.provenance(FLAGS, ('n_grid', 'rtol', 'eps', 'depths', 'ranks', 'variant_n')),
  }
  paths = [os.path.join(out, f) for f in ('spectral.json', 'spectral_curve.csv',
                                           'spectral_spectra.npz', 'spectral_spectra.png',
                                           'spectral_kappa_vs_n.png')]
  store_lib.write_json(paths[0], result)
  store_lib.write_csv(paths[1], curve)
  eigenvalues = {name.split(' ')[0]: v for name, v in spectra.items() if 'measured' not in name}
  store_lib.write_npz(paths[2], n=n, d=d, rank=rank, r=r, **eigenvalues, G3_measured=eigs_attn)

  from ntk_attention.study.report import figures as report_figures
  report_figures.spectral_figures(result, dict(eigenvalues, G3_measured=eigs_attn), ds.name, out)
  for p in paths:
    logging.info('wrote %s', p)
  return result


if __name__ == '__main__':
  _common.run(main)
