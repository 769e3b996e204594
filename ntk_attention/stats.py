"""Summary statistics over seeds and records, one convention each.

- Spread: the **sample** standard deviation, `ddof = 1` (`DDOF`), `s = √(Σ (x − x̄)² / (k − 1))`
  over k values; a single value has spread 0.0 (not NaN). Every mean ± std the study reports
  uses it (`mean_std`, `summarize`).
- A rate (a mean over seeds) gets a 95 % percentile bootstrap interval from
  `scipy.stats.bootstrap` (`mean_interval`); a ratio of two means over seeds,
  `mean(a) / mean(b)`, gets a 95 % percentile bootstrap interval (`bootstrap_ratio`). No
  interval comes from fewer than `MIN_SEEDS` = 3 values: its bounds are None and
  `no_interval_reason` says why. `format_ratio` prints a ratio as `1.3× [1.0, 1.7]`.
- `summarize` groups records (dicts) by some fields and gives each metric's mean, std and
  count per group; `group_by` / `group_key` are its grouping.
- `change` / `trend`: whether a quantity grows, shrinks or stays flat between two points,
  with the tolerance band a parameter.

numpy, float64.
"""
import math
from typing import NamedTuple, Optional, Sequence

import numpy as np

DDOF = 1          # the sample standard deviation, everywhere
BOOTSTRAP = 2000  # resamples of `bootstrap_ratio` and `mean_interval`
MIN_SEEDS = 3     # no interval from fewer values (a 2-value bootstrap has 4 resamples)
CONFIDENCE = 0.95


def mean(values: Sequence[float]) -> Optional[float]:
  """`x̄ = Σ x / k` of k ≥ 1 values as a float (float64); None for no values."""
  if len(values) == 0:
    return None
  return float(np.asarray(values, np.float64).mean())


def std(values: Sequence[float]) -> Optional[float]:
  """The sample standard deviation (`DDOF` = 1) of k ≥ 2 values; 0.0 for one value; None
  for none."""
  if len(values) == 0:
    return None
  a = np.asarray(values, np.float64)
  return float(a.std(ddof=DDOF)) if a.size > 1 else 0.0


def mean_std(values: Sequence[float]):
  """`(mean(values), std(values))`: `(None, None)` for no values."""
  return mean(values), std(values)


def no_interval_reason(*counts: int, min_count: int = MIN_SEEDS) -> Optional[str]:
  """Why no interval is given for samples of these sizes ('2 seeds: an interval needs at
  least 3'), or None when every sample has `min_count` values or more."""
  low = min(counts) if counts else 0
  if low >= min_count:
    return None
  return f'{low} seed{"" if low == 1 else "s"}: an interval needs at least {min_count}'


def mean_interval(values: Sequence[float], n_boot: int = BOOTSTRAP, seed: int = 0,
                  min_count: int = MIN_SEEDS):
  """`(low, high)`: the 95 % percentile bootstrap interval of `mean(values)`
  (`scipy.stats.bootstrap`, `n_boot` resamples, `np.random.default_rng(seed)`);
  `(None, None)` for fewer than `min_count` values (`no_interval_reason`). Values all equal:
  `(v, v)` (scipy would warn of a degenerate distribution)."""
  a = np.asarray(values, np.float64)
  if a.size < min_count:
    return None, None
  if not np.all(np.isfinite(a)):
    raise ValueError(f'mean_interval: non-finite values {a.tolist()}')
  if np.all(a == a[0]):
    return float(a[0]), float(a[0])
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  res = scipy_stats.bootstrap((a,), np.mean, n_resamples=n_boot, confidence_level=CONFIDENCE,
                              method='percentile', vectorized=True,
                              random_state=np.random.default_rng(seed))
  return float(res.confidence_interval.low), float(res.confidence_interval.high)


def format_ratio(ratio: Optional[float], low: Optional[float], high: Optional[float],
                 seeds: Optional[int] = None, digits: int = 2) -> str:
  """'1.3× [1.0, 1.7]'; an upper bound None with a lower one: '5.8× [3.7, ∞)' (a resample
  of the reference flipped nothing); no bounds: '1.3× (no interval: 2 seeds)'; ratio None:
  'undefined'."""
  if ratio is None:
    return 'undefined (the reference never flipped)'
  g = lambda v: format(v, f'.{digits}g')
  if low is None:
    why = f'{seeds} seeds' if seeds is not None and seeds < MIN_SEEDS else 'unbounded'
    return f'{g(ratio)}× (no interval: {why})'
  return f'{g(ratio)}× [{g(low)}, ' + (f'{g(high)}]' if high is not None else '∞)')


def bootstrap_ratio(numerator, denominator, n_boot: int = BOOTSTRAP, seed: int = 0,
                    min_count: int = MIN_SEEDS):
  """`(ratio, low, high)`: `mean(numerator) / mean(denominator)` and its 95 % percentile
  bootstrap interval.

  Each sample is resampled with replacement independently (they are separate sets of seeds,
  e.g. two models), `n_boot` times, from `np.random.default_rng(seed)`: first every
  numerator resample `(n_boot, len(numerator))`, then every denominator one. A resample
  with a denominator mean of 0 has an infinite ratio (0/0 carries no information and is
  dropped); `low`, `high` are the order statistics at 2.5 % ('lower') and 97.5 % ('higher'),
  so a bound that lands on an infinite resample is None. `ratio` is None when
  `mean(denominator)` is 0.

  With fewer than `min_count` values in either sample the bounds are None
  (`no_interval_reason`): a 2-seed bootstrap has 4 resamples and its "interval" is noise.

  (Not `scipy.stats.bootstrap`: it interpolates between order statistics, so a bound next
  to an infinite resample is NaN or infinite rather than the finite order statistic; it
  does not drop 0/0 resamples, and it needs two or more values per sample.)
  """
  num = np.asarray(numerator, np.float64)
  den = np.asarray(denominator, np.float64)
  ratio = float(num.mean() / den.mean()) if den.mean() > 0 else None
  if no_interval_reason(num.size, den.size, min_count=min_count):
    return ratio, None, None
  rng = np.random.default_rng(seed)
  a = num[rng.integers(0, len(num), (n_boot, len(num)))].mean(1)
  r = den[rng.integers(0, len(den), (n_boot, len(den)))].mean(1)
  with np.errstate(divide='ignore', invalid='ignore'):
    samples = np.where(r > 0, a / np.where(r > 0, r, 1.0), np.inf)
  samples = np.where((a == 0) & (r == 0), np.nan, samples)   # 0/0: no information
  samples = samples[~np.isnan(samples)]
  if samples.size == 0:
    return ratio, None, None
  # Order statistics, not interpolation: an infinite resample then gives an infinite bound.
  low = np.percentile(samples, 2.5, method='lower')
  high = np.percentile(samples, 97.5, method='higher')
  return ratio, (float(low) if np.isfinite(low) else None), (float(high) if np.isfinite(high) else None)


def _hashable(v):
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, (list, tuple, np.ndarray)):
    return tuple(_hashable(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v))
  return v


def group_key(record: dict, fields: Sequence[str]) -> tuple:
  """The tuple of `record[f]` for f in `fields` (numpy scalars -> Python, lists -> tuples);
  ValueError naming the missing fields."""
  missing = [f for f in fields if f not in record]
  if missing:
    raise ValueError(f'record has no key field(s) {missing}: {record!r}')
  return tuple(_hashable(record[f]) for f in fields)


def group_by(records: Sequence[dict], fields: Sequence[str]) -> dict:
  """`{group_key(r, fields): [records]}`, groups in order of first appearance, records in
  their order."""
  groups = {}
  for r in records:
    groups.setdefault(group_key(r, fields), []).append(r)
  return groups


def summarize(records: Sequence[dict], group_fields: Sequence[str],
              metric_fields: Sequence[str]) -> list:
  """Mean/std/count of each metric per group, groups in order of first appearance.

  Each output row holds the group fields (values of the group's first record, numbers kept
  numbers) and, for each metric m: m_mean, m_std (`std`: ddof = 1, 0.0 for a single value)
  and m_count. A record lacking a metric, or holding a non-numeric or non-finite (NaN or
  ±inf) value, raises ValueError naming the record: inf would turn the std into NaN, and a
  NaN must never pass silently.
  """
  groups = {}
  for idx, rec in enumerate(records):
    key = group_key(rec, group_fields)
    values = groups.setdefault(key, {m: [] for m in metric_fields})
    for m in metric_fields:
      where = f'record {idx} ({dict(zip(group_fields, key))})'
      if m not in rec:
        raise ValueError(f'{where} has no metric {m!r}')
      v = rec[m]
      if isinstance(v, np.generic):
        v = v.item()
      if not isinstance(v, (int, float)):
        raise ValueError(f'{where}: metric {m!r} is not a number: {v!r}')
      if not math.isfinite(v):
        raise ValueError(f'{where}: metric {m!r} is {v}')
      values[m].append(float(v))
  rows = []
  for key, values in groups.items():
    row = dict(zip(group_fields, key))
    for m in metric_fields:
      row[f'{m}_mean'], row[f'{m}_std'] = mean_std(values[m])
      row[f'{m}_count'] = len(values[m])
    rows.append(row)
  return rows


def change(first: float, last: float, low: float, high: float) -> str:
  """'grows' when `last > first · high`, 'shrinks' when `last < first · low`, else 'flat'.

  `low ≤ 1 ≤ high` is the tolerance band of the ratio last/first (for `first ≥ 0`, e.g. a
  distance): `(0.95, 1.05)` calls a change of under 5 % either way flat; `(1/1.05, 1.05)`
  is the same band symmetric in log scale.
  """
  if last > first * high:
    return 'grows'
  if last < first * low:
    return 'shrinks'
  return 'flat'


class Trend(NamedTuple):
  """`first` at the smallest `x`, `last` at the largest, and `change(first, last, ...)`."""
  x_first: float
  x_last: float
  first: float
  last: float
  word: str


def trend(rows: Sequence[dict], key: str, low: float, high: float, x: str = 'width') -> Trend:
  """How `row[key]` changes from the row with the smallest `row[x]` to the one with the
  largest (first of equals kept), with the tolerance band `(low, high)` of `change`."""
  rows = sorted(rows, key=lambda r: r[x])
  a, b = rows[0][key], rows[-1][key]
  return Trend(rows[0][x], rows[-1][x], a, b, change(a, b, low, high))


__all__ = ['DDOF', 'BOOTSTRAP', 'MIN_SEEDS', 'CONFIDENCE', 'mean', 'std', 'mean_std',
           'no_interval_reason', 'mean_interval', 'format_ratio', 'bootstrap_ratio', 'group_key',
           'group_by', 'summarize', 'change', 'Trend', 'trend']
