"""Entry `influence`: exact leave-one-out influence vs brute-force KRR refits (float64)."""
import statistics
from typing import List

import jax
import numpy as np

from benchmarks import harness
from ntk_attention import influence

SIZES = {  # (n_train, n_eval, C): exact-vs-bruteforce case, then the large case
    'full': {'small': (200, 50, 10), 'large': (5000, 1000, 10)},
    'quick': {'small': (40, 10, 3), 'large': (400, 100, 10)},
}
TARGET_S = 10.0
RIDGE = 1e-3


def _psd_problem(n_train: int, n_eval: int, c: int, seed: int):
  """Kernel `F Fᵀ/p + 1e-6 I` of random features (p = n_train/2: low rank, like real
  kernels) over train + eval points, and Gaussian targets; float64 numpy."""
  rng = np.random.default_rng(seed)
  p = max(n_train // 2, 1)
  f = rng.standard_normal((n_train + n_eval, p))
  k = f @ f.T / p + 1e-6 * np.eye(n_train + n_eval)
  y = rng.standard_normal((n_train + n_eval, c))
  return k[:n_train, :n_train], k[n_train:, :n_train], y[:n_train], y[n_train:]


def _full_fit(k, ke, y, ridge):
  """KRR predictions at the evaluation points with every training point, numpy float64."""
  a = k + ridge * np.mean(np.diag(k)) * np.eye(len(k))
  return ke @ np.linalg.solve(a, y)


def _refit_without(k_sym, y, lam, i):
  """(keep, α): the KRR weights α = (K_{-i,-i} + lam I)⁻¹ Y_{-i}, (n−1, C), of the fit
  without training point i; `keep` (n,) bool masks the other points."""
  n = len(k_sym)
  keep = np.arange(n) != i
  return keep, np.linalg.solve(k_sym[np.ix_(keep, keep)] + lam * np.eye(n - 1), y[keep])


def _symmetric_and_lam(k, ridge):
  """(K + Kᵀ)/2 and lam = ridge · mean(diag K), as `influence.loo_influence` takes them."""
  k_sym = 0.5 * (k + k.T)
  return k_sym, ridge * np.mean(np.diag(k_sym))


def loo_predictions_bruteforce(k, ke, y, ridge):
  """The baseline: refit KRR without each training point, numpy float64.

  f_{-i}(x_t) = K_{t,-i} (K_{-i,-i} + lam I)⁻¹ Y_{-i} with lam = ridge · mean(diag K) of
  the full K. k (n, n), ke (t, n), y (n, C) -> (n, t, C).
  """
  k_sym, lam = _symmetric_and_lam(k, ridge)
  out = np.empty((len(k), ke.shape[0], y.shape[1]))
  for i in range(len(k)):
    keep, alpha = _refit_without(k_sym, y, lam, i)
    out[i] = ke[:, keep] @ alpha
  return out


def run(args: harness.Args) -> List[dict]:
  """Exact LOO influence (one Cholesky) vs brute-force leave-one-out refits (float64).

  Small case: both in full; agreement = max |Δ_closed − Δ_brute| over the (n_eval,
  n_train, C) predicted leave-one-out changes Δ_ti = f_{−i}(x_t) − f(x_t). Large case:
  the exact path alone (target < 10 s); its brute-force time is extrapolated from a few
  refits (n_train × the median refit), and those refits spot-check its influence columns
  I_{:,i} and LOO residuals r_i.
  """
  if not jax.config.jax_enable_x64:
    raise ValueError('the influence benchmark needs jax_enable_x64 (the script enables it).')
  sizes_table = SIZES['quick' if args.quick else 'full']
  rows = []

  n, t, c = sizes_table['small']
  k, ke, y, ye = _psd_problem(n, t, c, args.seed)

  def brute(k, ke, y):
    f_loo = loo_predictions_bruteforce(k, ke, y, RIDGE)                  # (n, t, C)
    return np.transpose(f_loo, (1, 0, 2)) - _full_fit(k, ke, y, RIDGE)[:, None, :]

  def exact(k, ke, y, ye):
    return influence.loo_influence(k, ke, y, ye, ridge=RIDGE, return_delta=True).delta

  old = harness.measure(brute, (k, ke, y), args, compiles=False)
  new = harness.measure(exact, (k, ke, y, ye), args)
  diff = float(np.max(np.abs(np.asarray(new.result) - old.result)))
  rows.append(harness.make_row(
      'influence', 'loo_influence vs brute-force LOO refits', f'n_train={n} n_eval={t} '
      f'C={c} float64', 'loo_predictions_bruteforce', old, 'loo_influence', new,
      agreement=diff, agreement_what='max abs diff of LOO changes Delta (t, n, C)',
      note=f'max |Delta| = {float(np.max(np.abs(old.result))):.3g}'))

  n, t, c = sizes_table['large']
  k, ke, y, ye = _psd_problem(n, t, c, args.seed + 1)
  new = harness.measure(lambda *a: influence.loo_influence(*a, ridge=RIDGE), (k, ke, y, ye),
                        args)
  out = new.result
  # Brute-force spot check and extrapolation: refit without a few points (after one
  # untimed warm-up refit), exactly as loo_predictions_bruteforce does for every point.
  spots = np.random.default_rng(args.seed).choice(n, size=4, replace=False)
  k_sym, lam = _symmetric_and_lam(k, RIDGE)

  def refit(i):
    keep, alpha = _refit_without(k_sym, y, lam, i)
    return ke[:, keep] @ alpha, k_sym[i, keep] @ alpha       # f_{-i}(x_eval), f_{-i}(x_i)

  f_full = np.asarray(out.predictions)
  loss = lambda p: 0.5 * np.sum((p - ye) ** 2, axis=-1)
  refit(spots[0])                                              # warm-up
  spots = spots[1:]
  refit_s, diffs = [], []
  for i in spots:
    dt, (f_eval, f_self) = harness.timed(refit, (i,))
    refit_s.append(dt)
    diffs.append(np.max(np.abs(np.asarray(out.matrix)[:, i] - (loss(f_eval) - loss(f_full)))))
    diffs.append(np.max(np.abs(np.asarray(out.loo_residuals)[i] - (y[i] - f_self))))
  brute_est = harness.Timing(n * statistics.median(refit_s), None, refit_s, None)
  rows.append(harness.make_row(
      'influence', 'loo_influence (large)', f'n_train={n} n_eval={t} C={c} float64',
      f'brute force (extrapolated: {n} x median of {len(spots)} refits)', brute_est,
      'loo_influence', new, agreement=float(max(diffs)),
      agreement_what=f'max abs diff of I[:, i] and r_i vs {len(spots)} brute-force refits',
      target=f'< {TARGET_S:g} s', meets_target=bool(new.median_s < TARGET_S),
      note='baseline_s is an estimate, not a measurement'))
  return rows
