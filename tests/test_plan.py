"""study.plan: cost counts, the time estimate, the run's progress line, --dry_run."""
import dataclasses
import os
import subprocess
import sys

import jax
import pytest

from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import plan
from ntk_attention.study import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mall_config(epochs=10, classes=(), **kw):
  config = configs.Malleability(
      data=configs.Data(dataset='mnist_sample', classes=classes, n_train=100, n_test=50),
      train=training.TrainConfig(epochs=epochs), models=('relu_mlp', 'mlp_attn'),
      attacks=('fgsm', 'pgd'), epsilons=(0.1, 0.3), width=64, seeds=3)
  return dataclasses.replace(config, **kw)


def test_training_term_is_six_epochs_n_m_d_plus_c_per_seed_and_model():
  # Doubling the epochs adds exactly the training FLOPs: 2 models x S x 6·E·n·m·(d + C).
  a = plan.part_cost('malleability', _mall_config(epochs=10))
  b = plan.part_cost('malleability', _mall_config(epochs=20))
  assert b.flop32 - a.flop32 == pytest.approx(2 * 3 * 6 * 10 * 100 * 64 * (784 + 10), rel=1e-12)
  assert b.flop64 == a.flop64          # training is float32 only
  # A pair of classes has one (±1) output: C = 1.
  c = plan.part_cost('malleability', _mall_config(epochs=10, classes=(3, 8)))
  d = plan.part_cost('malleability', _mall_config(epochs=20, classes=(3, 8)))
  assert d.flop32 - c.flop32 == pytest.approx(2 * 3 * 6 * 10 * 100 * 64 * (784 + 1), rel=1e-12)


def test_malleability_cells_and_influence_count():
  cost = plan.part_cost('malleability', _mall_config())
  assert cost.cells == 2 * 2 * 2 * 3            # models × attacks × ε × seeds
  # Influence (float64): per model and seed, the clean one and one per attack × ε, each
  # 2n³/3 + 2·n²·t (Cholesky and L⁻¹ in place), and one KRR with Θ∞, n³/3 + 2·n²·t.
  n, t = 100, 50
  assert cost.flop64 == pytest.approx(
      2 * 3 * ((1 + 4) * (2 * n ** 3 / 3 + 2 * n * n * t) + n ** 3 / 3 + 2 * n * n * t),
      rel=1e-12)


def test_unknown_kind_is_refused():
  with pytest.raises(ValueError, match='no cost model'):
    plan.part_cost('nonexistent', _mall_config())


@pytest.mark.parametrize('platform', ['cpu', 'gpu', 'metal'])
def test_seconds_is_overhead_plus_flops_over_effective_rates(platform):
  rates = plan.Rates(f32=2e9, f64=1e9, platform=platform)
  e32, e64 = plan.EFFICIENCY.get(platform, plan.EFFICIENCY['gpu'])
  cost = plan.Cost(cells=1, flop32=4e9, flop64=3e9)
  assert plan.seconds(cost, rates) == pytest.approx(
      plan.OVERHEAD_S + 4e9 / (2e9 * e32) + 3e9 / (1e9 * e64))


def test_calibrate_measures_positive_rates_on_this_platform():
  rates = plan.calibrate(size=128, repeats=2)
  assert rates.f32 > 0 and rates.f64 > 0
  assert rates.platform == jax.default_backend()


def test_time_left_rescales_parts_to_come_by_the_finished_ones(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(plan.time, 'monotonic', lambda: clock[0])
  lines = []
  p = plan.RunProgress({'a': 10.0, 'b': 20.0, 'c': 30.0}, write=lines.append, tty=False)
  assert p.left() == pytest.approx(60.0)
  p.begin('a')
  clock[0] += 5.0                       # 'a' took half its estimate
  p.end('a')
  assert p.left() == pytest.approx(0.5 * (20 + 30))
  p.begin('b')
  clock[0] += 4.0                       # no cells yet: b's scaled estimate minus time spent
  assert p.left() == pytest.approx(0.5 * 20 - 4 + 0.5 * 30)
  p.end('b', cached=True)               # a cached part does not rescale anything
  assert p.left() == pytest.approx(0.5 * 30)
  assert lines and all(line.startswith('[reproduce] parts') for line in lines)


def _reproduce(tmp_path, *flags):
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'reproduce.py'),
                         '--preset=quick', f'--output_dir={out}', '--dry_run', *flags],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  return proc, out


def test_dry_run_lists_every_part_and_writes_nothing(tmp_path):
  proc, out = _reproduce(tmp_path)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for part in ('spectral', 'ntk_distance', 'malleability', 'binary_mnist_sample_3_8',
               'interventions', 'adversarial_training', 'sensitivity', 'beyond/approximation'):
    assert f'| {part} |' in proc.stdout
  assert 'estimated total:' in proc.stdout
  assert 'would fail' not in proc.stdout
  assert not out.exists()


def test_dry_run_names_a_part_whose_data_would_not_fit(tmp_path):
  # The sensitivity part's n_train × 2 variation needs 6,000 training points: more than
  # mnist_sample's pool. A real run stops before any work; the dry run lists it.
  proc, out = _reproduce(tmp_path, '--sens_n_train=3000')
  assert proc.returncode == 0, proc.stderr[-2000:]
  problems = [l for l in proc.stdout.splitlines() if l.startswith('would fail')]
  assert problems and all('sensitivity' in l for l in problems)
  assert not out.exists()


def test_dry_run_problems_with_one_reason_are_one_line():
  lines = runner.group_problems(['part a: no data', 'part b: too small', 'part c: no data',
                                 'unlabelled: x'])
  assert lines == ['parts a, c: no data', 'part b: too small', 'unlabelled: x']
