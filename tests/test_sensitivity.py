"""The sensitivity study (docs/method.md §12): calibration, and the script end to end (its bootstrap: test_stats.py)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ntk_attention.study import paper
from ntk_attention.study import sensitivity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'sensitivity.py')


def _row(task, attack, relu, attn, choice='baseline', value=''):
  return {'task': task, 'attack': attack, 'choice': choice, 'value': value,
          'relu_flip_rate_mean': relu, 'attn_flip_rate_mean': attn, 'n_subset': 100}


def test_calibration_is_mean_abs_log_ratio_to_the_study():
  exact = [_row('all', a, r / 100, m / 100) for a, (r, m) in
           paper.FLIP_RATE[('mnist', 'all')].items()]
  doubled = [_row(r['task'], r['attack'], 2 * r['relu_flip_rate_mean'],
                  2 * r['attn_flip_rate_mean'], 'eps', '0.5') for r in exact]
  zero = [_row('3,8', 'pgd', 0.0, 0.41, 'tau', '0.05')]
  rows = {(r['choice'], r['value']): r
          for r in sensitivity.calibration(exact + doubled + zero, 'mnist_sample')}
  assert rows[('baseline', '')]['distance'] == pytest.approx(0, abs=1e-12)
  assert rows[('baseline', '')]['cells'] == 6
  assert rows[('eps', '0.5')]['distance'] == pytest.approx(math.log(2))
  # A zero flip rate counts as half a flip of |S| = 100 points: 0.5 %.
  assert rows[('tau', '0.05')]['distance_relu'] == pytest.approx(abs(math.log(0.5 / 8.4)))
  assert rows[('tau', '0.05')]['distance_attn'] == pytest.approx(0, abs=1e-12)


def test_calibration_ranks_undertrained_settings_after_trained_ones():
  """Issue 25: init_std = 1 ranked "closest to the study" while both models sat at 6–7 %
  test accuracy. An undertrained setting now carries `undertrained` and ranks last, however
  close its flip rates are."""
  exact = [dict(_row('all', a, r / 100, m / 100, 'init_std', '1.0'), attn_undertrained=True)
           for a, (r, m) in paper.FLIP_RATE[('mnist', 'all')].items()]
  doubled = [_row(r['task'], r['attack'], 2 * r['relu_flip_rate_mean'],
                  2 * r['attn_flip_rate_mean']) for r in exact]
  rows = sensitivity.calibration(exact + doubled, 'mnist_sample')
  assert [(r['choice'], r['undertrained']) for r in rows] == [('baseline', False), ('init_std', True)]
  assert rows[1]['distance'] < rows[0]['distance']     # closer, yet ranked after


def test_summarize_marks_undertrained_models_and_gives_no_interval_below_three_seeds():
  """Records of 10 classes: twice chance is 20 %. MLP-Attn at 15 % mean test accuracy is
  undertrained, 2L-ReLU at 80 % is not; 2 seeds give a ratio but no interval."""
  recs = []
  for seed, (acc_attn, flip_attn, flip_relu) in enumerate([(0.1, 0.4, 0.2), (0.2, 0.6, 0.2)]):
    base = {'task': 'all', 'choice': 'baseline', 'value': '', 'attack': 'pgd', 'seed': seed,
            'eps_pixels': 0.3, 'n_subset': 100}
    recs.append(dict(base, model='relu_mlp', flip_rate=flip_relu, test_accuracy=0.8))
    recs.append(dict(base, model='mlp_attn', flip_rate=flip_attn, test_accuracy=acc_attn))
  (row,) = sensitivity.summarize(recs, num_classes={'all': 10})
  assert row['attn_undertrained'] and not row['relu_undertrained']
  assert row['ratio'] == pytest.approx(2.5)
  assert row['ratio_low'] is None and row['ratio_high'] is None
  assert row['interval_null_because'] == '2 seeds: an interval needs at least 3'
  # Without the class counts: the records' own per-seed flags, by majority.
  for r in recs:
    r['undertrained'] = r['model'] == 'mlp_attn'
  (row,) = sensitivity.summarize(recs)
  assert row['attn_undertrained'] and not row['relu_undertrained']


def test_parse_variations():
  base = sensitivity.Baseline()
  assert sensitivity.parse_variations('eps=0.1,0.5;retrain=true;width=64', base) == [
      ('eps', 0.1), ('eps', 0.5), ('retrain', True), ('width', 64)]
  grid = sensitivity.parse_variations('', base)
  assert {c for c, _ in grid} == set(sensitivity.CHOICES)
  for bad in ('foo=1', 'eps', 'width=wide', 'retrain=maybe'):
    with pytest.raises(ValueError, match='--variations'):
      sensitivity.parse_variations(bad, base)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('sens')
  cmd = [sys.executable, SCRIPT, '--dataset=digits', '--n_train=60', '--n_test=30', '--epochs=3',
         '--width=16', '--seeds=2', '--attacks=fgsm,pgd', '--tasks=all+binary',
         '--variations=eps=0.1;eps_units=std;init_std=1;retrain=true;n_train=40',
         f'--output_dir={out}']
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def test_script_writes_one_row_per_variation_with_both_models_and_ratio(tiny_run):
  res = json.load(open(tiny_run / 'sensitivity.json'))
  records = [json.loads(line) for line in open(tiny_run / 'sensitivity.jsonl')]
  expected = {('baseline', ''), ('eps', '0.1'), ('eps_units', 'std'), ('init_std', '1.0'),
              ('retrain', 'True'), ('n_train', '40')}
  for task in ('all', '3,8'):
    for attack in ('fgsm', 'pgd'):
      rows = {(r['choice'], r['value']): r for r in res['summary']
              if r['task'] == task and r['attack'] == attack}
      want = expected - ({('retrain', 'True')} if attack == 'fgsm' else set())
      assert set(rows) == want      # retrain is measured with PGD only
      for (choice, value), row in rows.items():
        recs = [r for r in records if (r['task'], r['choice'], r['value'], r['attack']) ==
                (task, choice, value, attack)]
        relu = [r['flip_rate'] for r in recs if r['model'] == 'relu_mlp']
        attn = [r['flip_rate'] for r in recs if r['model'] == 'mlp_attn']
        assert len(relu) == len(attn) == 2 and row['seeds'] == 2
        assert row['relu_flip_rate_mean'] == pytest.approx(np.mean(relu))
        assert row['attn_flip_rate_mean'] == pytest.approx(np.mean(attn))
        if np.mean(relu) > 0:
          assert row['ratio'] == pytest.approx(np.mean(attn) / np.mean(relu))
          if row['ratio_low'] is not None:
            assert row['ratio_low'] <= row['ratio'] + 1e-12
          if row['ratio_high'] is not None:
            assert row['ratio'] <= row['ratio_high'] + 1e-12
        else:
          assert row['ratio'] is None
  # The variations change what they say: budget, units, init, training-set size.
  by = {(r['choice'], r['value'], r['model']): r for r in records if r['task'] == 'all'}
  std = np.std(np.asarray(__import__('ntk_attention').data.load(
      'digits', n_train=60, n_test=30, seed=0).x_train, np.float64))
  assert by[('eps_units', 'std', 'relu_mlp')]['eps_pixels'] == pytest.approx(0.3 * std)
  assert by[('eps', '0.1', 'relu_mlp')]['eps_pixels'] == pytest.approx(0.1)
  assert by[('init_std', '1.0', 'mlp_attn')]['init_std'] == 1.0
  assert by[('baseline', '', 'mlp_attn')]['init_std'] == 0.01
  assert by[('n_train', '40', 'relu_mlp')]['n_train'] == 40
  assert by[('retrain', 'True', 'relu_mlp')]['setting'] == 'retrain'
  cal = {(r['choice'], r['value']) for r in res['calibration']}
  assert cal == expected
  for task in ('all', '3,8'):     # a tornado needs a finite, positive baseline ratio
    base = next(r for r in res['summary'] if (r['task'], r['choice'], r['attack']) ==
                (task, 'baseline', 'pgd'))
    path = tiny_run / f'sensitivity_tornado_{task.replace(",", "_")}.png'
    assert path.exists() == bool(base['ratio'])
    if path.exists():
      assert os.path.getsize(path) > 0
  assert 'How robust is the verdict' in open(tiny_run / 'sensitivity_table.md').read()


def test_script_json_numbers_are_numbers_or_null(tiny_run):
  def walk(v):
    if isinstance(v, dict):
      for k, x in v.items():
        if k.endswith(('_mean', '_std', 'ratio', '_low', '_high', 'distance')):
          assert x is None or isinstance(x, (int, float)), (k, x)
        walk(x)
    elif isinstance(v, list):
      for x in v:
        walk(x)
  walk(json.load(open(tiny_run / 'sensitivity.json')))


@pytest.mark.parametrize('flag, message', [
    ('--variations=colour=1', '--variations'),
    ('--tasks=3', '--tasks'),
    ('--seeds=1', '--seeds'),
    ('--init_std=-1', '--init_std'),
])
def test_bad_flags_fail_before_any_output(tmp_path, flag, message):
  out = tmp_path / 'never'
  proc = subprocess.run([sys.executable, SCRIPT, '--dataset=digits', flag,
                         f'--output_dir={out}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not out.exists()


def test_variations_reuse_the_baselines_clean_side_and_change_no_number(monkeypatch):
  """The memo (`malleability.sweep`'s, filled by the baseline) against the same run with
  every memo lookup recomputed: equal records, bit for bit; with the memo, each trained
  model's feature SVD (`trainability`) runs once across the variations that keep the
  trained model (ε, τ, ridge, kernel), instead of once per variation, and an attack runs
  once per distinct input (model, parameters, attack, ε, top-τ subset, key: counted in the
  run without the memo)."""
  from ntk_attention import data
  from ntk_attention import influence
  from ntk_attention import malleability
  from ntk_attention import memo
  from ntk_attention import training
  small = data.load('digits', n_train=40, n_test=20, seed=3)
  base = sensitivity.Baseline(eps=0.3, tau=0.25, width=16, n_train=40, epochs=5, pgd_steps=3)
  variations = [('eps', 0.1), ('tau', 0.5), ('ridge', 0.01), ('kernel', 'analytic')]
  calls, attacks = [], []
  real, real_attack = malleability.trainability, malleability.attack_one
  monkeypatch.setattr(malleability, 'trainability', lambda *a: calls.append(1) or real(*a))

  def attack_one(model, params, *args):
    before, name, eps, setup, key = args[4:9]
    subset = influence.top_fraction(np.asarray(before.scores), setup.tau)
    attacks.append((model.name, memo.tree_digest(params), name, eps, memo.digest(subset),
                    memo.digest(key)))
    return real_attack(model, params, *args)

  monkeypatch.setattr(malleability, 'attack_one', attack_one)

  def run():
    calls.clear()
    attacks.clear()
    recs = sensitivity.run(lambda task, n: small, ['all'], base, variations, ['fgsm', 'pgd'],
                           [0, 1], training.TrainConfig(batch_size=16))
    return ({tuple(r[k] for k in sensitivity.KEY_FIELDS): r for r in recs}, len(calls),
            list(attacks))

  with_memo, svds, attacked = run()
  monkeypatch.setattr(memo, 'get', lambda m, key, compute: compute())
  without, svds_without, attacked_without = run()
  assert svds == 2 * 2 and svds_without == 2 * 2 * (1 + len(variations))   # models × seeds
  assert len(attacked_without) == 2 * 2 * 2 * (1 + len(variations))   # models, seeds, attacks
  assert len(attacked) == len(set(attacked_without)) == len(set(attacked))
  assert len(attacked) >= 2 * 2 * 2 * 3      # the baseline's, and ε's and τ's are new
  assert len(with_memo) == (1 + len(variations)) * 2 * 2 * 2
  assert with_memo.keys() == without.keys()
  for k, rec in with_memo.items():
    assert rec == without[k], k
  # τ took effect (|S| = τn), and the ridge reached the KRR the memo keys by ridge.
  assert {r['n_subset'] for k, r in with_memo.items() if k[1] == 'tau'} == {20}
  assert {r['n_subset'] for k, r in with_memo.items() if k[1] == 'baseline'} == {10}
