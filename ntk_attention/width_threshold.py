"""How wide a network must be to behave like its kernel, measured, and how that width grows
with the condition number κ of the data's Gram matrix (docs/method.md §18).

Per dataset (n training points, unit-norm rows, `G = X̂ X̂ᵀ`) and model:

- `init_errors` (of `model_draws`): at initialisation, the criterion

    c(m) = ‖Θ_m − Θ‖₂ / λ_min(Θ)     (training block, n × n; operator norm)

  for every width m and seed, where Θ_m is the empirical NTK (`kernels.monte_carlo_ntk`:
  the closed form where the toolkit has it, NT's generic methods for any other composition)
  and Θ the analytic NTK (float64). By Weyl, |λ_i(Θ_m) − λ_i(Θ)| ≤ ‖Θ_m − Θ‖₂, so c < 1
  keeps Θ_m positive definite and c ≤ ε keeps its ridge-free predictor within O(ε) of Θ's.
- `after_training_errors`: the function distance after SGD on the MSE relative to how far the
  kernel predictor moved, ‖f_m(T) − f∞(T)‖/‖f∞(T) − f_m(0)‖ on the training points, f∞ = Θ's
  gradient flow for the same time from the network's own f_m(0) (docs/method.md §7,
  'gradient_flow'). Both start at f_m(0), so dividing by ‖f∞(T)‖ instead would call any
  network that barely trained "in the kernel regime".
- `slope_fit`: per seed, the least-squares line `log c = a + b log m` (b ≈ −1/2 in the kernel
  regime's Monte Carlo picture).
- `threshold`: m*(ε), the width where c reaches ε: *observed* when c ≤ ε at a width of the
  grid (log–log interpolation between the two grid widths around the first crossing),
  *extrapolated* along the seed's fitted line otherwise (`m* = exp((log ε − a)/b)`), and
  *never* (None) when the fitted slope is not negative, and *below_grid* (the smallest width,
  an upper bound only) when c ≤ ε already there.
- `exponent_fit`: the least-squares slope p of `log m*` (mean over seeds) against `log x`
  (x = κ(G), κ_d(G), n, ...) over datasets, with a 95 % percentile bootstrap interval over
  seeds (`scipy.stats.bootstrap`; ≥ 3 seeds, else no interval). The theorem says p = 6 for
  MLP-Attn against κ (`m = Ω(κ⁶/ε²)`) and p = 0 for 2L-ReLU (`Ω(1/ε²)`).

Data with a prescribed condition number (`synthetic_inputs`): a random correlation matrix with
a geometric spectrum of ratio κ (`scipy.stats.random_correlation`: unit diagonal, so the rows
of its square root are unit vectors), embedded in d ≥ n dimensions by a random isometry.

numpy float64 for spectra and fits; no I/O.
"""
import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from ntk_attention import kernels
from ntk_attention import models as models_lib
from ntk_attention import spectral
from ntk_attention import training

THEOREM_EXPONENTS = {'relu_mlp': 0.0, 'mlp_attn': 6.0}   # v1: m = Ω(κ⁶/ε²), 2L-ReLU Ω(1/ε²)
OBSERVED, EXTRAPOLATED, NEVER, BELOW_GRID = 'observed', 'extrapolated', 'never', 'below_grid'
UNDEFINED = 'undefined'       # λ_min(Θ) <= 0: no criterion (a record with errors None)
# λ_min(Θ) is trusted to this condition number of Θ: the analytic kernel's arccos is exact
# only to √ulp ≈ 1e-8 near cos θ = 1, and float64 eigenvalues to ~1e-16·λ_max·n.
MAX_LOG10_KAPPA_THETA = 10.0
CONFIDENCE = 0.95
N_RESAMPLES = 2000


# ------------------------------------------------------------------------------------ data

def geometric_spectrum(n: int, kappa: float) -> np.ndarray:
  """n eigenvalues λ_i ∝ κ^(−i/(n−1)), i = 0…n−1, scaled to sum to n (a correlation
  matrix's trace): λ_max/λ_min = κ exactly. float64 (n,)."""
  if n < 2 or not kappa >= 1.0 or not math.isfinite(kappa):
    raise ValueError(f'need n >= 2 and a finite kappa >= 1, got n={n}, kappa={kappa}.')
  lam = kappa ** (-np.arange(n) / (n - 1.0))
  return lam * (n / lam.sum())


def synthetic_inputs(n: int, d: int, kappa: float, seed: int = 0) -> np.ndarray:
  """Unit-norm rows `X (n, d)`, float64, whose Gram matrix `G = X Xᵀ` has the spectrum
  `geometric_spectrum(n, kappa)` (κ(G) = kappa up to rounding) and a random eigenbasis.

  `G` is `scipy.stats.random_correlation` of that spectrum (Bendel–Mickey rotations: unit
  diagonal); `X = V diag(√λ) Qᵀ` with `G = V diag(λ) Vᵀ` and Q (d × n) a random isometry, so
  d ≥ n is needed (refused otherwise)."""
  if d < n:
    raise ValueError(f'synthetic inputs need d >= n (a full-rank Gram matrix), got n={n}, d={d}.')
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top  (1 s to import)
  rng = np.random.default_rng(seed)
  g = scipy_stats.random_correlation.rvs(geometric_spectrum(n, kappa), random_state=rng,
                                         tol=1e-8)
  g = 0.5 * (g + g.T)
  lam, v = np.linalg.eigh(g)
  root = v * np.sqrt(np.clip(lam, 0.0, None))                  # (n, n), root rootᵀ = G
  q, _ = np.linalg.qr(rng.standard_normal((d, n)))             # (d, n), qᵀq = I
  x = root @ q.T
  return x / np.linalg.norm(x, axis=1, keepdims=True)           # rows are unit to ~1e-15


def gram_conditioning(x, rtol: float = 1e-10) -> dict:
  """κ(G), κ_d(G), its rank r and n of the unit-norm rows of `x (n, d)` (`spectral`)."""
  eigs = spectral.eigenvalues(spectral.gram(x))
  n, d = np.shape(x)
  kappa_d, r = spectral.effective_condition_number(eigs, n, d, rtol)
  return {'n': int(n), 'd': int(d), 'kappa': spectral.condition_number(eigs),
          'kappa_d': kappa_d, 'rank': r}


# ----------------------------------------------------------------------------- the criterion

def analytic_train_ntk(model: models_lib.Model, x) -> np.ndarray:
  """Θ on the training block `(n, n)`, float64: the blocked arc-cosine form for a
  parameter-free prefix (θ_ii = 0 exactly), NT's `kernel_fn` otherwise."""
  from ntk_attention import blocked
  x64 = jnp.asarray(x, jnp.float64)
  if model.prefix_kind == 'fixed':
    k = blocked.analytic_ntk_blocked(model, x64)
  else:
    k = np.asarray(kernels.analytic_kernel(model, x64), np.float64)
  return 0.5 * (k + k.T)


def operator_error(theta_m, theta) -> float:
  """‖Θ_m − Θ‖₂ of two symmetric `(n, n)` matrices (largest |eigenvalue| of the difference,
  float64)."""
  diff = np.asarray(theta_m, np.float64) - np.asarray(theta, np.float64)
  diff = 0.5 * (diff + diff.T)
  return float(np.max(np.abs(np.linalg.eigvalsh(diff))))


class KernelSpectrum(NamedTuple):
  lambda_min: float
  lambda_max: float
  log10_kappa: float         # log10 λ_max/λ_min (inf when λ_min <= 0)
  resolved: bool             # log10_kappa <= MAX_LOG10_KAPPA_THETA


def kernel_spectrum(theta, max_log10_kappa: float = MAX_LOG10_KAPPA_THETA) -> KernelSpectrum:
  eigs = np.linalg.eigvalsh(0.5 * (theta + theta.T))
  lo, hi = float(eigs[0]), float(eigs[-1])
  log10_kappa = math.log10(hi / lo) if lo > 0 else math.inf
  return KernelSpectrum(lo, hi, log10_kappa, log10_kappa <= max_log10_kappa)


def model_draws(model_fn: Callable[[int], models_lib.Model], x, seeds: Sequence[int],
                base_seed: int = 0, x_pad=None) -> Callable[[int], np.ndarray]:
  """`draws(width) -> (S, n, n)`: the empirical NTKs on the training block `x (n, d)` of
  `model_fn(width)` (a `models.Model`) at the initialisations `PRNGKey(base_seed + s)`, from
  `kernels.monte_carlo_ntk` in float32 (the closed form where it applies, NT's generic
  methods for any other composition), returned as float64.

  `x_pad (p, d)`: evaluation tokens appended to the sequence and sliced off again. They attend
  to the training points but no training point attends to them (the context mask, §2), so
  the training block is unchanged; padding datasets of several n to one length compiles one
  program per width instead of one per width and n."""
  keys = training.seed_keys(list(seeds), base_seed)
  x32 = jnp.asarray(x, jnp.float32)
  pad = None if x_pad is None or len(x_pad) == 0 else jnp.asarray(x_pad, jnp.float32)
  n = len(x32)

  def draws(width):
    k = kernels.monte_carlo_ntk(model_fn(int(width)), keys, x32, pad)[1]
    return np.asarray(k[:, :n, :n], np.float64)
  return draws


def init_errors(draws: Callable[[int], np.ndarray], widths: Sequence[int], theta,
                on_width: Callable[[int], None] = lambda m: None) -> np.ndarray:
  """`(S, W)` operator-norm errors ‖Θ_m − Θ‖₂ (float64) of the empirical NTKs
  `draws(width) (S, n, n)` (e.g. `model_draws`) against `theta (n, n)`."""
  out = []
  for m in widths:
    out.append([operator_error(k, theta) for k in draws(int(m))])
    on_width(int(m))
  out = np.asarray(out, np.float64).T
  if not np.all(np.isfinite(out)):
    raise FloatingPointError('non-finite empirical-NTK error; see the model and its widths.')
  return out


def after_training_errors(model_fn: Callable[[int], models_lib.Model], x, y, widths,
                          seeds, theta, config: training.TrainConfig, base_seed: int = 0,
                          train_fn: Callable = training.train,
                          on_width: Callable[[int], None] = lambda m: None):
  """`(errors (S, W), train_accuracy (S, W))`: the relative function distances
  ‖f_m(T) − f∞(T)‖_F / ‖f∞(T) − f_m(0)‖_F on the training points `x (n, d)`, targets
  `y (n, C)`, after `config` (SGD on the MSE: checked), f∞ the gradient flow of Θ `(n, n)`
  for time lr·steps from the network's own f_m(0); and the trained networks' accuracy on
  those points (`training.accuracy`), so that a network that did not learn is marked."""
  from ntk_attention import sweeps
  if sweeps.comparison(config, y.shape[1]) != 'gradient_flow':
    raise ValueError('the after-training distance needs --optimizer=sgd --loss=mse (the '
                     'kernel predictor is then gradient flow, docs/method.md §7).')
  n = len(x)
  blocks = kernels.Blocks(jnp.asarray(theta), jnp.asarray(theta), jnp.asarray(theta))
  steps = sweeps.steps_per_run(config, n)
  keys = training.seed_keys(list(seeds), base_seed)
  x32 = jnp.asarray(x, jnp.float32)
  out = np.zeros((len(seeds), len(widths)))
  acc = np.zeros_like(out)
  labels = training.labels_from_targets(y)
  for j, m in enumerate(widths):
    model = model_fn(int(m))
    result = train_fn(model, keys, x32, jnp.asarray(y, jnp.float32), config)
    for i in range(len(seeds)):
      f0, _ = training.outputs(model, training.unstack(result.init_params, i), x32)
      ft, _ = training.outputs(model, training.unstack(result.params, i), x32)
      f0 = jnp.asarray(f0, jnp.float64)
      f_inf = kernels.ntk_predictor(blocks, y, ridge=0.0, t=steps, learning_rate=config.lr,
                                    f0_train=f0, f0_eval=f0)
      out[i, j] = float(kernels.relative_distance(jnp.asarray(ft, jnp.float64) - f0, f_inf - f0))
      acc[i, j] = float(training.accuracy(ft, labels))
    on_width(int(m))
  if not np.all(np.isfinite(out)):
    raise FloatingPointError('non-finite function distance; lower --lr.')
  return out, acc


# ------------------------------------------------------------------------- slopes, thresholds

class Line(NamedTuple):
  intercept: float     # a of log c = a + b log m (natural logs)
  slope: float         # b


def slope_fit(widths: Sequence[int], errors) -> list:
  """Per row of `errors (S, W)`: the least-squares `Line` of log c against log m."""
  lm = np.log(np.asarray(widths, np.float64))
  out = []
  for row in np.atleast_2d(np.asarray(errors, np.float64)):
    b, a = np.polyfit(lm, np.log(row), 1)
    out.append(Line(float(a), float(b)))
  return out


class Threshold(NamedTuple):
  width: Optional[float]   # m*(ε); None when never reached (slope >= 0)
  kind: str                # OBSERVED | EXTRAPOLATED | NEVER | BELOW_GRID (an upper bound)


def threshold(widths: Sequence[int], errors_row, eps: float, line: Line) -> Threshold:
  """m*(ε) of one seed (see the module docstring): the first grid width with c ≤ ε, log–log
  interpolated with the width before it (the first grid width itself when c ≤ ε there);
  else along `line`."""
  w = np.asarray(widths, np.float64)
  c = np.asarray(errors_row, np.float64)
  below = np.nonzero(c <= eps)[0]
  if below.size:
    j = int(below[0])
    if j == 0:
      return Threshold(float(w[0]), BELOW_GRID)
    t = (math.log(eps) - math.log(c[j - 1])) / (math.log(c[j]) - math.log(c[j - 1]))
    return Threshold(float(math.exp(math.log(w[j - 1]) + t * (math.log(w[j]) - math.log(w[j - 1])))),
                     OBSERVED)
  if line.slope >= 0:
    return Threshold(None, NEVER)
  return Threshold(float(math.exp((math.log(eps) - line.intercept) / line.slope)), EXTRAPOLATED)


def _interval(values, statistic, seed=0):
  """95 % percentile bootstrap interval of `statistic(indices)` over the seeds (rows)."""
  k = len(values)
  if k < 3:
    return None, None
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  res = scipy_stats.bootstrap((np.arange(k, dtype=np.float64),), statistic, vectorized=False,
                              n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                              method='percentile', random_state=np.random.default_rng(seed))
  lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
  return (lo if math.isfinite(lo) else None), (hi if math.isfinite(hi) else None)


def curve_summary(widths, errors, eps: float) -> dict:
  """The per-dataset summary of one criterion `errors (S, W)`: the mean slope with its seed
  interval, m*(ε) per seed and their geometric mean with its interval, and how they were
  found (`kind`: never when any seed's is, below_grid when any seed's is, observed when every
  seed's is, else extrapolated)."""
  errors = np.asarray(errors, np.float64)
  lines = slope_fit(widths, errors)
  ths = [threshold(widths, row, eps, line) for row, line in zip(errors, lines)]
  slopes = np.array([l.slope for l in lines])
  kinds = [t.kind for t in ths]
  kind = (NEVER if NEVER in kinds else BELOW_GRID if BELOW_GRID in kinds
          else OBSERVED if all(k == OBSERVED for k in kinds) else EXTRAPOLATED)
  out = {'slope': float(slopes.mean()), 'slope_seeds': slopes.tolist(),
         'error_mean': errors.mean(0).tolist(), 'errors': errors.tolist(),
         'threshold_kind': kind, 'seeds_observed': kinds.count(OBSERVED),
         'threshold_seeds': [t.width for t in ths]}
  out['slope_low'], out['slope_high'] = _interval(slopes, lambda i: slopes[i.astype(int)].mean())
  if kind == NEVER:
    out.update(log10_threshold=None, threshold=None, log10_threshold_low=None,
               log10_threshold_high=None)
    return out
  logs = np.log10([t.width for t in ths])
  out['log10_threshold'] = float(logs.mean())
  out['threshold'] = float(10 ** logs.mean()) if logs.mean() < 300 else None
  out['log10_threshold_low'], out['log10_threshold_high'] = _interval(
      logs, lambda i: logs[i.astype(int)].mean())
  return out


# ------------------------------------------------------------------------------- the exponent

def exponent_fit(log10_x: Sequence[float], log10_thresholds, offset=None) -> dict:
  """The exponent p of `m* ∝ x^p`: the least-squares slope of mean-over-seeds log10 m*
  (minus `offset`, one per dataset, e.g. log10(n ln n) for the v2 form) against log10 x.

  `log10_thresholds (S, D)`: per seed and dataset. Returns exponent, its 95 % percentile
  bootstrap interval over seeds (`exponent_low`, `exponent_high`; None with < 3 seeds), the
  intercept, the number of datasets and seeds. Needs ≥ 2 datasets with distinct x."""
  x = np.asarray(log10_x, np.float64)
  y = np.asarray(log10_thresholds, np.float64)
  if y.ndim != 2 or y.shape[1] != x.size:
    raise ValueError(f'log10_thresholds must be (seeds, {x.size}), got {y.shape}.')
  if offset is not None:
    y = y - np.asarray(offset, np.float64)[None, :]
  if x.size < 2 or np.ptp(x) == 0 or not np.all(np.isfinite(y)) or not np.all(np.isfinite(x)):
    return {'exponent': None, 'exponent_low': None, 'exponent_high': None, 'intercept': None,
            'datasets': int(x.size), 'seeds': int(y.shape[0])}

  def fit(rows):
    p, c = np.polyfit(x, y[rows].mean(0), 1)
    return p, c

  p, c = fit(np.arange(y.shape[0]))
  low, high = _interval(y, lambda i: fit(i.astype(int))[0])
  return {'exponent': float(p), 'exponent_low': low, 'exponent_high': high,
          'intercept': float(c), 'datasets': int(x.size), 'seeds': int(y.shape[0])}


# ------------------------------------------------------------------------------ the summary

KEY_FIELDS = ('family', 'dataset', 'model', 'criterion')
CRITERIA = ('init', 'trained')
FAMILY_X = {'synthetic': 'kappa', 'real': 'kappa_d'}   # the condition number each is fitted on


def _fit_over(datasets, x_field, offset_fn=None) -> dict:
  """`exponent_fit` over the datasets that enter a fit (Θ resolved, threshold observed or
  extrapolated: not never, not below the grid)."""
  use = [d for d in datasets if d['in_fit']]
  if not use:
    return exponent_fit([], np.zeros((0, 0)))
  x = [math.log10(d[x_field]) for d in use]
  y = np.log10(np.array([d['threshold_seeds'] for d in use], np.float64)).T
  offset = None if offset_fn is None else [offset_fn(d) for d in use]
  return exponent_fit(x, y, offset)


def summarize(records: Sequence[dict], eps: float) -> dict:
  """`{model: {...}}` from per-dataset records (one per `KEY_FIELDS`: `errors (S, W)` of
  the criterion at `widths`, the data's κ, κ_d, n, and for 'init' Θ's `resolved`).

  Per model: `theorem_exponent` (None for a model the theorem does not name); `exponent`,
  `exponent_low`, `exponent_high`, `exponent_x` of the first family measured (its
  `FAMILY_X`); `families` → per family the fit against its x (the real family also against
  κ_d with the v2 offset log10(n ln n) and against n), and the after-training fit; `datasets`
  → one row per dataset and criterion (`curve_summary` plus the data's numbers and whether it
  entered the fit)."""
  out = {}
  for model in dict.fromkeys(r['model'] for r in records):
    rows, families = [], {}
    for family in dict.fromkeys(r['family'] for r in records if r['model'] == model):
      fam = {'x': FAMILY_X[family]}
      for criterion in CRITERIA:
        recs = [r for r in records if (r['model'], r['family'], r['criterion']) ==
                (model, family, criterion)]
        ds_rows = []
        for r in recs:
          row = {k: r[k] for k in ('family', 'dataset', 'model', 'criterion', 'n', 'd', 'kappa',
                                   'kappa_d', 'rank', 'widths')}
          row.update({k: r.get(k) for k in ('log10_kappa_theta', 'lambda_min', 'resolved')})
          if r.get('train_accuracy') is not None:    # after training: mark a net that did not learn
            acc = np.asarray(r['train_accuracy'], np.float64).mean(0)
            row['train_accuracy_mean'] = acc.tolist()
            row['undertrained'] = bool(acc[-1] < training.accuracy_floor(r.get('num_classes', 2)))
          if r['errors'] is None:      # λ_min(Θ) <= 0: the criterion is undefined
            row.update(threshold_kind=UNDEFINED, slope=None, slope_low=None, slope_high=None,
                       log10_threshold=None, log10_threshold_low=None,
                       log10_threshold_high=None, threshold=None, seeds_observed=0)
          else:
            row.update(curve_summary(r['widths'], r['errors'], eps))
          # λ_min(Θ) matters only to the criterion at initialisation.
          row['in_fit'] = ((criterion == 'trained' or bool(r.get('resolved', True)))
                           and row['threshold_kind'] not in (NEVER, BELOW_GRID, UNDEFINED))
          ds_rows.append(row)
        rows += ds_rows
        if not ds_rows:
          continue
        key = 'fit' if criterion == 'init' else 'fit_trained'
        fam[key] = _fit_over(ds_rows, fam['x'])
        if family == 'real' and criterion == 'init':
          fam['fit_v2'] = _fit_over(ds_rows, 'kappa_d',
                                    lambda d: math.log10(d['n'] * math.log(d['n'])))
          fam['fit_n'] = _fit_over(ds_rows, 'n')
      families[family] = fam
    first = next((f for f in families.values() if 'fit' in f), None)
    head = first['fit'] if first else exponent_fit([], np.zeros((0, 0)))
    out[model] = {'theorem_exponent': THEOREM_EXPONENTS.get(model),
                  'exponent': head['exponent'], 'exponent_low': head['exponent_low'],
                  'exponent_high': head['exponent_high'],
                  'exponent_x': first['x'] if first else None,
                  'exponent_family': next((k for k, f in families.items() if f is first), None),
                  'families': families, 'datasets': rows}
  return out


__all__ = ['THEOREM_EXPONENTS', 'OBSERVED', 'EXTRAPOLATED', 'NEVER', 'BELOW_GRID', 'UNDEFINED',
           'MAX_LOG10_KAPPA_THETA', 'geometric_spectrum', 'synthetic_inputs', 'gram_conditioning', 'analytic_train_ntk',
           'operator_error', 'KernelSpectrum', 'kernel_spectrum', 'model_draws', 'init_errors',
           'after_training_errors', 'Line', 'slope_fit', 'Threshold', 'threshold',
           'curve_summary', 'exponent_fit', 'KEY_FIELDS', 'CRITERIA', 'FAMILY_X', 'summarize']
