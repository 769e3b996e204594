"""The width the kernel regime needs (ntk_attention.width_threshold, scripts/width_threshold.py):
the criterion, slope and threshold against a closed form, the exponent fit on kernels built
to need m* ∝ κ^p, the synthetic data's spectrum, and the script's output and flag checks."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import width_threshold as wt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'width_threshold.py')


def _readout_draws(x, seeds):
  """Empirical NTKs of the linear readout f(x; a) = a·(Wᵀx)/√m (W (d, m) ~ N(0, 1) fixed, a
  trained), from its Jacobian in a: Θ_m = X W Wᵀ Xᵀ/m, a Wishart average with mean X Xᵀ."""
  def draws(m):
    out = []
    for s in seeds:
      w = jax.random.normal(jax.random.PRNGKey(s), (x.shape[1], m), jnp.float64)
      f = lambda a: x @ w @ a / math.sqrt(m)
      j = jax.jacobian(f)(jnp.zeros(m, jnp.float64))            # (n, m)
      out.append(np.asarray(j @ j.T))
    return np.stack(out)
  return draws


def test_linear_readout_slope_and_threshold_match_the_marchenko_pastur_closed_form():
  """X with orthonormal rows (Θ = X Xᵀ = I, λ_min = 1): ‖Θ_m − I‖₂ is the Marchenko–Pastur
  edge 2√(n/m) + n/m (n ≪ m; finite-n corrections ≈ n^(−2/3)/2 ≈ 3 % at n = 64), so
  m*(ε) = n/(√(1 + ε) − 1)² and the slope of log c against log m is that of the closed form
  on the same widths (≈ −1/2)."""
  n = 64
  x = jnp.eye(n, dtype=jnp.float64)
  widths = [256, 512, 1024, 2048, 4096]
  errors = wt.init_errors(_readout_draws(x, range(8)), widths, np.eye(n))
  closed = np.array([2 * math.sqrt(n / m) + n / m for m in widths])
  np.testing.assert_allclose(errors.mean(0), closed, rtol=0.08)
  summary = wt.curve_summary(widths, errors, eps=0.5)
  closed_slope = np.polyfit(np.log(widths), np.log(closed), 1)[0]
  assert summary['slope'] == pytest.approx(closed_slope, abs=0.04)
  assert summary['slope_low'] <= summary['slope'] <= summary['slope_high']
  m_star = n / (math.sqrt(1.5) - 1) ** 2                   # 1,268: inside the grid
  assert summary['threshold_kind'] == wt.OBSERVED and summary['seeds_observed'] == 8
  assert 10 ** summary['log10_threshold'] == pytest.approx(m_star, rel=0.12)
  # ε = 0.1: m* ≈ 26,900 is beyond the grid, extrapolated along each seed's line.
  far = wt.curve_summary(widths, errors, eps=0.1)
  assert far['threshold_kind'] == wt.EXTRAPOLATED
  assert 10 ** far['log10_threshold'] == pytest.approx(n / (math.sqrt(1.1) - 1) ** 2, rel=0.3)


def test_threshold_kinds():
  line = wt.Line(intercept=0.0, slope=-0.5)                 # c = m^(−1/2)
  w, kind = wt.threshold([4, 16], [0.5, 0.25], 0.25, line)
  assert kind == wt.OBSERVED and w == pytest.approx(16.0)
  w, kind = wt.threshold([4, 16], [0.5, 0.25], 1 / math.sqrt(8), line)
  assert kind == wt.OBSERVED and w == pytest.approx(8.0)     # log–log interpolation
  assert wt.threshold([4, 16], [0.5, 0.25], 0.6, line) == (4.0, wt.BELOW_GRID)
  w, kind = wt.threshold([4, 16], [0.5, 0.25], 0.1, line)
  assert kind == wt.EXTRAPOLATED and w == pytest.approx(100.0)
  assert wt.threshold([4, 16], [0.5, 0.6], 0.1, wt.Line(0.0, 0.1)) == (None, wt.NEVER)


@pytest.mark.parametrize('p', [0.0, 3.0])
def test_exponent_fit_recovers_p_on_kernels_built_to_need_m_star_proportional_to_kappa_p(p):
  """Θ(κ) = diag spectrum with λ_min = κ^(−p/2), Θ_m = Θ + E/√m (E a seeded symmetric
  Gaussian matrix per seed and dataset): ‖Θ_m − Θ‖₂/λ_min = ‖E‖₂ κ^(p/2)/√m, so
  m*(ε) = (‖E‖₂/ε)² κ^p; ‖E‖₂ varies with the draw, so the fit carries seed noise."""
  n, widths, seeds, records = 12, [16, 64, 256], range(6), []
  for j, kappa in enumerate([1.0, 10.0, 100.0, 1000.0]):
    lam = np.geomspace(1.0, kappa ** (-p / 2), n) if p else np.ones(n)
    theta = np.diag(lam)

    def draws(m, j=j):
      out = []
      for s in seeds:
        e = np.random.default_rng(100 * j + s).standard_normal((n, n))
        out.append(theta + (e + e.T) / math.sqrt(2 * m))
      return np.stack(out)
    errors = wt.init_errors(draws, widths, theta) / lam.min()
    records.append(dict(family='synthetic', dataset=f'k{kappa}', model='m', criterion='init',
                        n=n, d=n, kappa=kappa, kappa_d=kappa, rank=n, widths=widths,
                        errors=errors.tolist(), resolved=True))
  summary = wt.summarize(records, eps=0.05)['m']
  assert summary['exponent'] == pytest.approx(p, abs=0.15)
  assert summary['exponent_low'] <= p <= summary['exponent_high']
  assert all(r['in_fit'] for r in summary['datasets'])


def test_exponent_fit_interval_needs_three_seeds():
  fit = wt.exponent_fit([0.0, 1.0], np.array([[1.0, 3.0], [1.2, 3.1]]))
  assert fit['exponent'] == pytest.approx(1.95) and fit['exponent_low'] is None


@pytest.mark.parametrize('kappa', [2.0, 1e4])
def test_synthetic_inputs_have_unit_rows_and_the_prescribed_condition_number(kappa):
  x = wt.synthetic_inputs(20, 30, kappa, seed=1)
  np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
  eigs = np.linalg.eigvalsh(x @ x.T)
  np.testing.assert_allclose(np.sort(eigs)[::-1], wt.geometric_spectrum(20, kappa), rtol=1e-6)
  with pytest.raises(ValueError, match='d >= n'):
    wt.synthetic_inputs(20, 10, kappa)


def _run(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_script_tiny_run_writes_the_json_fields(tmp_path):
  proc = _run(['--families=synthetic,real', '--dataset=digits', '--n_grid=8,16', '--kappas=2,50',
               '--synthetic_n=6', '--synthetic_d=8', '--widths=8,32', '--seeds=3',
               '--train_widths=none', f'--output_dir={tmp_path}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((tmp_path / 'width_threshold.json').read_text())
  assert set(res['models']) == {'relu_mlp', 'mlp_attn'}
  for name, m in res['models'].items():
    assert m['theorem_exponent'] == wt.THEOREM_EXPONENTS[name]
    assert m['exponent_family'] == 'synthetic' and m['exponent_x'] == 'kappa'
    assert m['exponent_low'] <= m['exponent'] <= m['exponent_high']
    assert set(m['families']) == {'synthetic', 'real'}
    assert {'fit', 'fit_v2', 'fit_n'} <= set(m['families']['real'])
    rows = m['datasets']
    assert len(rows) == 2 * 2 and {r['criterion'] for r in rows} == {'init'}
    for r in rows:
      assert r['threshold_kind'] in (wt.OBSERVED, wt.EXTRAPOLATED, wt.NEVER, wt.BELOW_GRID)
      assert isinstance(r['slope'], float) and len(r['slope_seeds']) == 3
      assert r['widths'] == [8, 32] and len(r['errors']) == 3
      assert (r['log10_threshold'] is None) == (r['threshold_kind'] == wt.NEVER)
  for f in ('width_threshold.csv', 'width_threshold.md', 'width_threshold.png',
            'width_threshold.jsonl'):
    assert (tmp_path / f).exists()


def test_after_training_distance_shrinks_with_width_and_records_accuracy():
  """SGD on the MSE (small lr) against Θ's gradient flow from the same f_m(0): the distance,
  relative to how far the kernel predictor moved, falls with width (≈ m^(−1/2))."""
  from ntk_attention import models
  from ntk_attention import training
  x = wt.synthetic_inputs(8, 8, 5.0, seed=0)
  y = np.sign(x @ np.random.default_rng(0).standard_normal(8))[:, None]
  fn = lambda m: models.build('relu_mlp', m, 1, init_std=1.0)
  theta = wt.analytic_train_ntk(fn(1), x)
  config = training.TrainConfig(optimizer='sgd', lr=0.5, epochs=50, batch_size=8,
                                weight_decay=0.0, loss='mse')
  err, acc = wt.after_training_errors(fn, x, y, [16, 1024], range(3), theta, config)
  assert err.shape == acc.shape == (3, 2) and np.all((acc >= 0) & (acc <= 1))
  assert err[:, 1].mean() < 0.5 * err[:, 0].mean()
  with pytest.raises(ValueError, match='sgd'):
    wt.after_training_errors(fn, x, y, [16], range(1), theta, config._replace(optimizer='adam'))


@pytest.mark.parametrize('args,flag', [
    (['--widths=16'], '--widths'),
    (['--kappas=0.5'], '--kappas'),
    (['--synthetic_n=40', '--synthetic_d=20'], '--synthetic_d'),
    (['--families=synthetic,toy'], '--families'),
    (['--optimizer=adam'], '--optimizer=sgd'),
    (['--n_grid=10,6000'], '--n_grid')])
def test_script_checks_flags_in_one_line_before_any_output(tmp_path, args, flag):
  proc = _run([*args, f'--output_dir={tmp_path / "out"}'])
  assert proc.returncode == 2 and flag in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert not (tmp_path / 'out').exists()


def _card(attn, relu):
  from ntk_attention.study import scorecard
  models = {name: {'exponent': (lo + hi) / 2, 'exponent_low': lo, 'exponent_high': hi,
                   'theorem_exponent': wt.THEOREM_EXPONENTS[name], 'exponent_family': 'synthetic',
                   'exponent_x': 'kappa', 'families': {'synthetic': {'fit': {'datasets': 5, 'seeds': 8}}}}
            for name, (lo, hi) in (('mlp_attn', attn), ('relu_mlp', relu))}
  rows = scorecard.scorecard({'width_threshold': {'models': models, 'eps': 0.1, 'widths': [16, 64]}},
                             'mnist_sample')
  return next(r for r in rows if r['key'] == 'kappa')


@pytest.mark.parametrize('attn,relu,verdict', [
    ((5.0, 7.0), (-0.5, 0.5), 'reproduced'),
    ((1.0, 2.0), (0.2, 0.6), 'partly'),          # attention's width grows faster, not as κ⁶
    ((0.1, 0.5), (0.2, 0.6), 'not reproduced')])
def test_scorecard_claim_2_uses_the_measured_exponent(attn, relu, verdict):
  row = _card(attn, relu)
  assert row['verdict'] == verdict
  assert 'measured exponent' in row['ours'] and 'width_threshold part' in row['conditions']
  assert row['section'] == 'Width threshold against κ'


def test_scorecard_claim_2_without_the_part_is_unchanged():
  from ntk_attention.study import scorecard
  row = next(r for r in scorecard.scorecard({}, 'mnist_sample') if r['key'] == 'kappa')
  assert row['verdict'] == 'not run' and row['section'] == 'Spectral amplification'


@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_padding_leaves_the_training_block_unchanged(name):
  """Evaluation tokens attend to the training points, never the reverse (the context mask),
  so the padded sequence's training block is the unpadded kernel (float32 products)."""
  from ntk_attention import models
  x = wt.synthetic_inputs(6, 8, 10.0, seed=0)
  pad = wt.synthetic_inputs(4, 8, 3.0, seed=1)
  fn = lambda m: models.build(name, m, 1)
  plain = wt.model_draws(fn, x, range(2))(16)
  padded = wt.model_draws(fn, x, range(2), x_pad=pad)(16)
  assert plain.shape == padded.shape == (2, 6, 6)
  np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-6)


def test_part_contract_checks_and_data_needs():
  import dataclasses
  from ntk_attention.study import configs
  from ntk_attention.study import parts
  from ntk_attention.study import plan
  part = parts.part('width_threshold')
  default = configs.WidthThreshold()
  part.check(default)
  assert part.data_needs(default) == [('mnist_sample', None, 200, 1, False)]
  assert part.data_needs(dataclasses.replace(default, families=('synthetic',))) == []
  for change, flag in ((dict(widths=(16,)), '--widths'), (dict(seeds=0), '--seeds'),
                       (dict(eps=0.0), '--eps'), (dict(kappas=(0.5,)), '--kappas'),
                       (dict(train_widths=(64,)), '--train_widths'),
                       (dict(families=('toy',)), '--families')):
    with pytest.raises(ValueError, match=flag):
      part.check(dataclasses.replace(default, **change))
  cost = plan.part_cost('width_threshold', default)
  assert cost.cells == 9 * 2 * (6 + 3) and cost.flop32 > 0 and cost.flop64 > 0


def test_reproduce_runs_the_optional_part_and_reports_it(tmp_path):
  """`--parts=width_threshold` runs the part in reproduce.py (not in the default parts): its
  section and figure in the report, and the scorecard's claim-2 row from its exponents."""
  from ntk_attention.study import presets
  assert 'width_threshold' in presets.OPTIONAL_PARTS
  assert 'width_threshold' not in presets.Study().parts
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'reproduce.py'), '--dataset=digits',
       '--parts=width_threshold', '--wt_kappas=2,50', '--wt_n_grid=8,16', '--wt_widths=8,32',
       '--wt_seeds=3', '--wt_train_widths=', '--compilation_cache=',
       f'--output_dir={tmp_path}'], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads((tmp_path / 'width_threshold' / 'width_threshold.json').read_text())
  md = (tmp_path / 'report.md').read_text()
  assert '## Width threshold against κ' in md
  assert '![width_threshold/width_threshold.png](width_threshold/width_threshold.png)' in md
  attn = res['models']['mlp_attn']
  assert f"measured exponent {attn['exponent']:.2f}" in md


def test_summarize_keeps_an_undefined_criterion_out_of_the_fit():
  """λ_min(Θ) <= 0 is recorded with errors None: marked 'undefined', never fitted; an
  unresolved Θ stays out of the init fit, not of the after-training one."""
  base = dict(family='synthetic', model='m', n=4, d=4, rank=4, widths=[16, 64])
  errs = lambda k: [[k / 4.0, k / 8.0]] * 3                  # slope −1/2, m* = (k/(4ε))²·16
  recs = [dict(base, dataset=f'k{k}', kappa=k, kappa_d=k, criterion=c, errors=errs(k),
               resolved=k != 100) for k in (1, 10, 100) for c in ('init', 'trained')]
  recs.append(dict(base, dataset='k1000', kappa=1000, kappa_d=1000, criterion='init',
                   errors=None, resolved=False))
  m = wt.summarize(recs, eps=0.01)['m']
  kinds = {(r['dataset'], r['criterion']): (r['threshold_kind'], r['in_fit']) for r in m['datasets']}
  assert kinds['k1000', 'init'] == (wt.UNDEFINED, False)
  assert kinds['k100', 'init'] == (wt.EXTRAPOLATED, False) and kinds['k100', 'trained'][1]
  fam = m['families']['synthetic']
  assert fam['fit']['datasets'] == 2 and fam['fit_trained']['datasets'] == 3
  assert fam['fit']['exponent'] == pytest.approx(2.0) and fam['fit_trained']['exponent'] == pytest.approx(2.0)
