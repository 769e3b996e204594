"""ntk_attention.stats: mean ± std (ddof = 1), the bootstrap of a ratio of means, group-by
summaries, trends."""
import itertools
import math

import numpy as np
import pytest

from ntk_attention import stats


# --- mean, std: one ddof --------------------------------------------------------------------------

def test_std_is_the_sample_std_by_hand():
  v = [1.0, 2.0, 4.0]
  m = 7.0 / 3.0
  by_hand = math.sqrt(((1 - m) ** 2 + (2 - m) ** 2 + (4 - m) ** 2) / (3 - 1))
  assert stats.DDOF == 1
  assert stats.mean(v) == pytest.approx(m, rel=1e-15)
  assert stats.std(v) == pytest.approx(by_hand, rel=1e-15)
  assert stats.std(v) == float(np.std(v, ddof=1))
  assert stats.mean_std(v) == (stats.mean(v), stats.std(v))


def test_single_and_no_values():
  assert stats.std([3.5]) == 0.0 and stats.mean([3.5]) == 3.5     # not NaN for one seed
  assert stats.mean([]) is None and stats.std([]) is None
  assert stats.mean_std([]) == (None, None)


# --- bootstrap_ratio (moved from test_sensitivity.py, plus a hand computation) ------------------

def test_bootstrap_ratio_by_hand():
  """The resamples drawn as documented (numerator first, then denominator, from
  default_rng(seed)), the ratios of their means, and the order statistics at 2.5 % / 97.5 %."""
  num, den = np.array([0.3, 0.5, 0.4, 0.1]), np.array([0.1, 0.2, 0.15])
  n_boot, seed = 500, 3
  rng = np.random.default_rng(seed)
  i = rng.integers(0, 4, (n_boot, 4))
  j = rng.integers(0, 3, (n_boot, 3))
  ratios = sorted(num[i[b]].mean() / den[j[b]].mean() for b in range(n_boot))
  # 'lower' at 2.5 %: index floor(0.025 (B − 1)); 'higher' at 97.5 %: ceil(0.975 (B − 1)).
  low, high = ratios[math.floor(0.025 * (n_boot - 1))], ratios[math.ceil(0.975 * (n_boot - 1))]
  assert stats.bootstrap_ratio(num, den, n_boot, seed) == (num.mean() / den.mean(), low, high)


def test_bootstrap_ratio_matches_exact_resampling_distribution():
  """With 3 seeds per model every resample is one of 3³ × 3³ equally likely pairs: the
  bootstrap percentiles must match the exact distribution's quantiles."""
  attn, relu = np.array([0.3, 0.5, 0.4]), np.array([0.1, 0.2, 0.15])
  ratio, low, high = stats.bootstrap_ratio(attn, relu, n_boot=40000)
  assert ratio == pytest.approx(attn.mean() / relu.mean())
  exact = [np.mean(attn[list(i)]) / np.mean(relu[list(j)])
           for i in itertools.product(range(3), repeat=3)
           for j in itertools.product(range(3), repeat=3)]
  q_lo, q_hi = np.percentile(exact, [2.5, 97.5])
  assert low == pytest.approx(q_lo, rel=0.03) and high == pytest.approx(q_hi, rel=0.03)
  assert low <= ratio <= high


def test_bootstrap_ratio_degenerate_cases():
  assert stats.bootstrap_ratio([0.2, 0.2, 0.2], [0.1, 0.1, 0.1]) == (2.0, 2.0, 2.0)
  ratio, low, high = stats.bootstrap_ratio([0.2, 0.3, 0.3], [0.0, 0.0, 0.0])
  assert ratio is None and high is None          # 2L-ReLU never flips: unbounded
  # Three seeds, one 2L-ReLU seed at 0: P(resample all 0) = 1/27 > 2.5 %, so the upper bound
  # is unbounded; the lowest ratio is mean(attn's smallest) / mean(relu's largest) = 2.
  ratio, low, high = stats.bootstrap_ratio([0.2, 0.3, 0.25], [0.0, 0.1, 0.05], n_boot=20000)
  assert ratio == pytest.approx(5.0) and high is None and 2.0 <= low < 5.0
  # The mechanics on 2 values (min_count lowered): the same order statistics as before.
  ratio, low, high = stats.bootstrap_ratio([0.2, 0.3], [0.0, 0.1], min_count=1)
  assert ratio == pytest.approx(5.0) and high is None and low == pytest.approx(2.0)


def test_no_interval_from_fewer_than_three_seeds():
  """Issue 25: a 2-seed bootstrap printed "1 [0, ∞]"; now the bounds are None, with a reason,
  and the printed ratio says so."""
  ratio, low, high = stats.bootstrap_ratio([0.2, 0.3], [0.1, 0.2])
  assert ratio == pytest.approx(0.25 / 0.15) and (low, high) == (None, None)
  assert stats.no_interval_reason(2, 3) == '2 seeds: an interval needs at least 3'
  assert stats.no_interval_reason(3, 5) is None
  assert stats.mean_interval([0.1, 0.4]) == (None, None)
  assert stats.format_ratio(ratio, low, high, 2) == '1.7× (no interval: 2 seeds)'
  assert stats.format_ratio(1.31, 1.02, 1.66, 5) == '1.3× [1, 1.7]'
  assert stats.format_ratio(5.8, 3.7, None, 3) == '5.8× [3.7, ∞)'
  assert stats.format_ratio(None, None, None, 3).startswith('undefined')


def test_mean_interval_matches_the_exact_resampling_distribution():
  """Four values: every resample is one of 4⁴ equally likely index tuples; scipy's percentile
  interval must match the exact distribution's 2.5 % / 97.5 % quantiles (Monte Carlo, 20,000
  resamples: within 2 % of the range)."""
  v = np.array([0.1, 0.35, 0.2, 0.6])
  low, high = stats.mean_interval(v, n_boot=20000)
  exact = [v[list(i)].mean() for i in itertools.product(range(4), repeat=4)]
  q_lo, q_hi = np.percentile(exact, [2.5, 97.5])
  span = v.max() - v.min()
  assert abs(low - q_lo) < 0.02 * span and abs(high - q_hi) < 0.02 * span
  assert low <= v.mean() <= high
  assert stats.mean_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)


# --- summarize (moved from test_reporting.py) -------------------------------------------------

def test_summarize_against_numpy():
  rng = np.random.default_rng(0)
  recs = [{'model': m, 'width': w, 'seed': s, 'd': float(rng.standard_normal()), 'acc': float(rng.uniform())}
          for w in (np.int64(16), 8) for m in ('b', 'a') for s in range(4)]
  recs.append({'model': 'c', 'width': 4, 'seed': 0, 'd': 2.5, 'acc': 1.0})
  rows = stats.summarize(recs, ['model', 'width'], ['d', 'acc'])
  assert [(r['model'], r['width']) for r in rows] == [('b', 16), ('a', 16), ('b', 8), ('a', 8), ('c', 4)]
  assert type(rows[0]['width']) is int
  for row in rows[:4]:
    for m in ('d', 'acc'):
      vals = np.array([r[m] for r in recs if r['model'] == row['model'] and r['width'] == row['width']])
      assert row[f'{m}_mean'] == pytest.approx(np.mean(vals), rel=1e-12)
      assert row[f'{m}_std'] == pytest.approx(np.std(vals, ddof=1), rel=1e-12)
      assert row[f'{m}_count'] == 4
  assert rows[4]['d_mean'] == 2.5 and rows[4]['d_std'] == 0.0 and rows[4]['d_count'] == 1


@pytest.mark.parametrize('bad', [float('nan'), np.float64('nan'), math.inf, 'oops'])
def test_summarize_rejects_bad_values(bad):
  recs = [{'g': 1, 'm': 1.0}, {'g': 1, 'm': 2.0}, {'g': 2, 'm': bad}]
  with pytest.raises(ValueError, match='record 2'):
    stats.summarize(recs, ['g'], ['m'])
  with pytest.raises(ValueError, match='no metric'):
    stats.summarize([{'g': 1}], ['g'], ['m'])


# --- change, trend -------------------------------------------------------------------------------

@pytest.mark.parametrize('first,last,band,word', [
    (1.0, 1.06, (0.95, 1.05), 'grows'), (1.0, 1.04, (0.95, 1.05), 'flat'),
    (1.0, 0.96, (0.95, 1.05), 'flat'), (1.0, 0.94, (0.95, 1.05), 'shrinks'),
    (1.0, 0.96, (1 / 1.05, 1.05), 'flat'), (1.0, 0.95, (1 / 1.05, 1.05), 'shrinks'),
    (0.0, 0.0, (0.95, 1.05), 'flat'), (0.0, 0.1, (0.95, 1.05), 'grows')])
def test_change(first, last, band, word):
  assert stats.change(first, last, *band) == word


def test_trend_compares_the_smallest_and_largest_x():
  rows = [{'width': 64, 'd_mean': 2.0}, {'width': 16, 'd_mean': 1.0}, {'width': 256, 'd_mean': 3.0}]
  t = stats.trend(rows, 'd_mean', 0.95, 1.05)
  assert t == stats.Trend(16, 256, 1.0, 3.0, 'grows')
  assert stats.trend(rows, 'd_mean', 0.95, 1.05, x='d_mean').x_first == 1.0


def test_group_by_keeps_first_appearance_order():
  recs = [{'a': np.int64(2), 'b': [1, 2]}, {'a': 1, 'b': (1, 2)}, {'a': 2, 'b': (1, 2)}]
  groups = stats.group_by(recs, ('a', 'b'))
  assert list(groups) == [(2, (1, 2)), (1, (1, 2))]
  assert groups[(2, (1, 2))] == [recs[0], recs[2]]
  with pytest.raises(ValueError, match='no key field'):
    stats.group_key({'a': 1}, ('a', 'c'))
