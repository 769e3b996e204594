"""The scorecard's verdicts on small hand-made results whose answer is known by construction."""
import math

import pytest

from ntk_attention.study import paper
from ntk_attention.study import scorecard


def _nd(relu, attn):
  """ntk_distance.json with function distances `relu` and `attn` at widths 16 and 4096."""
  return {'comparison': 'ridge_regression', 'summary': [
      {'model': m, 'width': w, 'function_distance_mean': v}
      for m, values in (('relu_mlp', relu), ('mlp_attn', attn)) for w, v in zip((16, 4096), values)]}


def _mall(rates, task='all', eps=0.3, spread=0.2, seeds=3):
  """malleability.json with flip rates (%) attack -> (2L-ReLU, MLP-Attn) and, per attack, the
  ratio MLP-Attn / 2L-ReLU with the interval [ratio·(1 − spread), ratio·(1 + spread)] over
  `seeds` seeds (None bounds for fewer than 3 seeds)."""
  summary = [{'task': task, 'model': m, 'setting': 'standard', 'attack': a, 'eps': eps,
              'flip_rate_mean': v[i] / 100, 'eps_units': 'pixel', 'test_accuracy_mean': 0.9,
              'flip_rate_count': seeds}
             for a, v in rates.items() for i, m in enumerate(('relu_mlp', 'mlp_attn'))]
  ratios = []
  for a, (relu, attn) in rates.items():
    r = attn / relu
    ratios.append({'task': task, 'setting': 'standard', 'attack': a, 'eps': eps,
                   'reference': 'relu_mlp', 'candidate': 'mlp_attn', 'ratio': r, 'seeds': seeds,
                   'ratio_low': r * (1 - spread) if seeds >= 3 else None,
                   'ratio_high': r * (1 + spread) if seeds >= 3 else None})
  return {'summary': summary, 'ratios': ratios}


def _rows(**results):
  return {r['key']: r for r in scorecard.scorecard(results, results.pop('dataset', 'mnist_sample'))}


@pytest.mark.parametrize('relu, attn, verdict', [
    ((45.0, 39.0), (10.0, 43.0), 'reproduced'),        # the study's trends
    ((45.0, 39.0), (10.0, 10.2), 'partly'),            # MLP-Attn flat (within 5 %)
    ((39.0, 45.0), (43.0, 10.0), 'not reproduced'),
])
def test_ntk_distance_verdict_follows_the_trends(relu, attn, verdict):
  row = _rows(ntk_distance=_nd(relu, attn))['ntk_distance']
  assert row['verdict'] == verdict
  assert f'2L-ReLU {relu[0]:.3g} → {relu[1]:.3g}' in row['ours']
  assert 'MNIST' in row['study'] and '45.1 → 39.2' in row['study']


def test_malleability_verdict_against_the_studys_ratio():
  study = paper.FLIP_RATE['mnist', 'all']
  same = {a: (v[0] * 2, v[1] * 2) for a, v in study.items()}            # same ratios, doubled rates
  assert _rows(malleability=_mall(same))['malleability:all']['verdict'] == 'reproduced'
  off = {a: (10.0, 10.0 * v[1] / v[0] / 3) for a, v in study.items()}   # a third of the ratio
  assert _rows(malleability=_mall(off))['malleability:all']['verdict'] == 'partly'   # still > 1
  equal = {a: (10.0, 10.0) for a in study}
  row = _rows(malleability=_mall(equal))['malleability:all']
  assert row['verdict'] == 'not reproduced'
  assert 'PGD 1× [0.8, 1.2] (10.0 / 10.0 %)' in row['ours'] and 'PGD 8.8×' in row['study']
  assert 'intervals over 3 seeds' in row['ours']
  # Only ε = 0.3 is compared with the study.
  assert _rows(malleability=_mall(same, eps=0.1))['malleability:all']['verdict'] == 'no study value'


def test_malleability_verdict_reads_the_interval_not_the_point():
  """Issue 25: the same run on two machines gave PGD ratios 1.1 and 1.3 (study 8.8×). Points
  that move within their interval give the same verdict; an interval that straddles the
  band's edge (study / 2) is inconclusive, not 'reproduced' by luck; fewer than 3 seeds give
  no interval and no verdict."""
  study = paper.FLIP_RATE['mnist', 'all']
  for factor in (1.0, 1.3):     # the two machines' points, the same wide interval around each
    rates = {a: (10.0, 10.0 * factor) for a in study}
    assert _rows(malleability=_mall(rates, spread=0.3))['malleability:all']['verdict'] == 'not reproduced'
  # A point at 0.55 × the study's ratio is "within a factor 2"; with its interval at
  # [0.33, 0.77] × the study's (not wholly inside the band [0.5, 2] ×) it is 'partly' (every
  # interval lies above 1), and with [0.06, 1.05] × (reaching below 1) inconclusive.
  edge = {a: (10.0, 10.0 * 0.55 * v[1] / v[0]) for a, v in study.items()}
  assert _rows(malleability=_mall(edge, spread=0.4))['malleability:all']['verdict'] == 'partly'
  assert _rows(malleability=_mall(edge, spread=0.9))['malleability:all']['verdict'] == 'inconclusive'
  row = _rows(malleability=_mall(edge, seeds=2))['malleability:all']
  assert row['verdict'] == 'inconclusive' and '(no interval: 2 seeds)' in row['ours']
  # A model below twice chance is marked.
  weak = _mall(edge)
  weak['summary'][1].update(undertrained=True, test_accuracy_mean=0.07)
  assert '† undertrained' in _rows(malleability=weak)['malleability:all']['ours']


def test_binary_task_without_a_study_value_and_missing_parts():
  rows = _rows(dataset='cifar10_sample', binary={('cifar10_sample', '3,8'): _mall(
      {'pgd': (5.0, 20.0)}, task='3,8')})
  assert rows['malleability:3,8']['verdict'] == 'no study value'
  assert rows['malleability:3,8']['study'] == 'no study value'
  for key in ('kernel', 'kappa', 'ntk_distance', 'malleability:all', 'approximation'):
    assert rows[key]['verdict'] == 'not run', key
  assert 'CIFAR-10' in rows['ntk_distance']['study'] and '246.2' in rows['ntk_distance']['study']
  assert [r['key'] for r in scorecard.scorecard({}, 'mnist')] == [
      'kernel', 'kappa', 'ntk_distance', 'malleability:all', 'approximation']


def _spec(kappa_eff_curve, log10_width, checks):
  return {'n': 100, 'd': 64, 'rank': 64, 'r': 64, 'kappa': None, 'kappa_eff': kappa_eff_curve[-1],
          'log10_kappa_eff': math.log10(kappa_eff_curve[-1]), 'log10_width_v2': log10_width,
          'rtol': 1e-10, 'variant_checks': checks, 'variant_checks_n': 10,
          'curve': [{'n': 10 * (i + 1), 'kappa': k, 'kappa_eff': k} for i, k in enumerate(kappa_eff_curve)]}


def test_spectral_rows():
  good = [{'depth': 1, 'pattern': 'shared', 'power': 3, 'log10_kappa_measured': 4.01,
           'log10_kappa_predicted': 4.0, 'reliable': True},
          {'rank': 5, 'power': 3, 'log10_kappa_measured': None, 'log10_kappa_predicted': 30.0,
           'reliable': False}]
  rows = _rows(spectral=_spec([10.0, 1e4], 40.0, good))
  assert rows['kernel']['verdict'] == 'reproduced' and '1 of 2 checks' in rows['kernel']['ours']
  assert rows['kappa']['verdict'] == 'reproduced'            # 1.2e3 within [10, 1e4], 10^40 > 4096
  assert "reached at n ≈ 20" in rows['kappa']['ours'] and 'G singular' in rows['kappa']['ours']
  bad = [dict(good[0], log10_kappa_measured=4.2)]
  rows = _rows(spectral=_spec([10.0, 100.0], 3.0, bad))
  assert rows['kernel']['verdict'] == 'not reproduced'
  assert rows['kappa']['verdict'] == 'not reproduced'        # κ never reaches 1.2e3; threshold < 4096
  assert _rows(spectral=_spec([10.0, 100.0], 3.0, [dict(good[0], reliable=False)]))['kernel']['verdict'] == 'not run'
