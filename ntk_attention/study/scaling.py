"""Malleability against the number of training points n (docs/method.md §15).

The study's sensitivity argument says malleability should grow with the data: a point's
influence moves with its coupling to the rest, ‖G x_j‖₁, and with κ(G), and both grow
with n. Per n of a grid, on nested seeded training subsets of one pool (the same test
set for every n), this runs the protocol of docs/method.md §10 for 2L-ReLU and MLP-Attn
(`malleability.sweep`, one attack, one ε, several seeds) and measures κ_d(G) of the
training set (`spectral.summarize`). Per n it reports both models' flip rate, Spearman
and kernel distance (mean ± std over seeds, `stats.mean_std`: std with ddof = 1), the
ratio of mean flip rates MLP-Attn / 2L-ReLU, and log10 κ_d(G).
"""
import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np

from ntk_attention import data as data_lib
from ntk_attention import malleability
from ntk_attention import spectral
from ntk_attention import stats
from ntk_attention.study import paper

MODELS = ('relu_mlp', 'mlp_attn')
METRICS = ('flip_rate', 'spearman', 'kernel_distance')
DEFAULT_GRID = (250, 500, 1000, 2000, 4000)


def nested_subsets(ds: data_lib.Dataset, grid: Sequence[int], seed: int = 0):
  """`{n: Dataset}` with the first n points of one seeded permutation of `ds`'s training
  set (nested in n) and `ds`'s test set; ValueError when n is not in [10, n_train]."""
  n_pool = len(ds.x_train)
  for n in grid:
    if not 10 <= n <= n_pool:
      raise ValueError(f'--n_grid: n={n} must be in [10, {n_pool}] (the training pool).')
  order = spectral.subset_indices(n_pool, n_pool, seed)
  return {int(n): dataclasses.replace(ds, x_train=ds.x_train[order[:n]],
                                      y_train=ds.y_train[order[:n]])
          for n in grid}


def run_n(ds, width: int, seeds: Sequence[int], attack: str, eps: float,
          setup: malleability.Setup, config, hooks: malleability.Hooks = malleability.Hooks(),
          base_seed: int = 0, train_fn: Optional[Callable] = None, models=MODELS) -> list:
  """The malleability records of both models at one n (`malleability.sweep`), each with
  `n_train`, plus κ_d of the training set under 'kappa_d' / 'log10_kappa_d'.
  `models`: the pair (reference, candidate) — names, `'module:function'` entries or a
  two-entry `{name: factory}` (`models.factories`; built-in names with `models.build`
  options: `models.factories(names, options)`). `hooks`: `done`, `on_record`,
  `on_progress` as in `sweep` (its `task` is set to 'n=<n>')."""
  spec = spectral.summarize(np.asarray(ds.x_train, np.float64))
  extra = {'kappa_d': spec['kappa_eff'], 'log10_kappa_d': spec['log10_kappa_eff']}

  def record(rec):
    rec.update(extra)
    hooks.on_record(rec)

  kwargs = {} if train_fn is None else {'train_fn': train_fn}
  return malleability.sweep(ds, models, width, seeds, [attack], [eps], setup, config,
                            hooks=hooks._replace(task=f'n={len(ds.x_train)}', on_record=record),
                            base_seed=base_seed, **kwargs)


def _mean_std(values):
  """`stats.mean_std` of the finite values (None and non-finite ones dropped)."""
  return stats.mean_std([x for x in values if x is not None and math.isfinite(x)])


def summarize(records: Sequence[dict], models=MODELS) -> list:
  """One row per n: `<model>_<metric>_mean/_std`, `ratio` = mean flip of `models[1]` (MLP-Attn)
  / mean flip of `models[0]` (2L-ReLU) (None when the latter never flips), `log10_kappa_d`,
  `seeds`. `models`: the names of the pair (reference, candidate)."""
  reference, candidate = list(models)
  rows = []
  for n in sorted({int(r['n_train']) for r in records}):
    at_n = [r for r in records if int(r['n_train']) == n]
    row = {'n_train': n, 'seeds': len({r['seed'] for r in at_n}),
           'log10_kappa_d': at_n[0].get('log10_kappa_d')}
    for model in (reference, candidate):
      mine = [r for r in at_n if r['model'] == model]
      for metric in METRICS:
        row[f'{model}_{metric}_mean'], row[f'{model}_{metric}_std'] = _mean_std(
            [r.get(metric) for r in mine])
    relu, attn = row[f'{reference}_flip_rate_mean'], row[f'{candidate}_flip_rate_mean']
    row['ratio'] = attn / relu if relu and attn is not None else None
    rows.append(row)
  return rows


def exponent(rows: Sequence[dict], key: str):
  """Least-squares slope of log(value) against log(n) over rows with a positive value
  (None with fewer than two): how `key` grows with n."""
  pts = [(math.log(r['n_train']), math.log(r[key])) for r in rows
         if r.get(key) is not None and r[key] > 0]
  if len(pts) < 2:
    return None
  x, y = np.array(pts).T
  return float(np.polyfit(x, y, 1)[0])


def _fmt(mean, std=None, scale=1.0, digits=1):
  if mean is None:
    return '–'
  s = f'{mean * scale:.{digits}f}'
  return s if std is None else f'{s} ± {std * scale:.{digits}f}'


def scaling_section(rows: Sequence[dict], title: str = 'Malleability against n',
                    models=MODELS) -> str:
  """Markdown: the per-n table (flip %, Spearman, kernel distance, ratio, log10 κ_d) and
  the fitted growth exponents of the ratio and of κ_d. `models`: the names (reference,
  candidate) of the rows' `<model>_<metric>` fields, shown by their display names."""
  ref, cand = models
  a, b = paper.model_name(ref), paper.model_name(cand)
  lines = [f'## {title}', '',
           f'| n | {a} flip % | {b} flip % | ratio | {a} Spearman | '
           f'{b} Spearman | {a} ‖Θ_m − Θ∞‖/‖Θ∞‖ | {b} ‖Θ_m − Θ∞‖/‖Θ∞‖ | '
           'log10 κ_d(G) | seeds |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    cells = [str(r['n_train']),
             _fmt(r[f'{ref}_flip_rate_mean'], r[f'{ref}_flip_rate_std'], 100),
             _fmt(r[f'{cand}_flip_rate_mean'], r[f'{cand}_flip_rate_std'], 100),
             _fmt(r['ratio'], digits=2),
             _fmt(r[f'{ref}_spearman_mean'], r[f'{ref}_spearman_std'], digits=2),
             _fmt(r[f'{cand}_spearman_mean'], r[f'{cand}_spearman_std'], digits=2),
             _fmt(r[f'{ref}_kernel_distance_mean'], r[f'{ref}_kernel_distance_std'], digits=2),
             _fmt(r[f'{cand}_kernel_distance_mean'], r[f'{cand}_kernel_distance_std'], digits=2),
             _fmt(r['log10_kappa_d'], digits=1), str(r['seeds'])]
    lines.append('| ' + ' | '.join(cells) + ' |')
  slope_ratio, slope_kappa = exponent(rows, 'ratio'), exponent(
      [dict(r, kappa=10 ** r['log10_kappa_d']) for r in rows if r['log10_kappa_d'] is not None],
      'kappa')
  lines += ['', 'Flip rates are % of the top-τ set whose influence changes sign (mean ± std '
            f'over seeds); ratio = mean {b} flip rate / mean {a} flip rate. '
            f'Fitted growth with n (log–log slope): ratio {_fmt(slope_ratio, digits=2)}, '
            f'κ_d(G) {_fmt(slope_kappa, digits=2)}.', '']
  return '\n'.join(lines)


__all__ = ['MODELS', 'METRICS', 'DEFAULT_GRID', 'nested_subsets', 'run_n', 'summarize',
           'exponent', 'scaling_section']
