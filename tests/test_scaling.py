"""Malleability against n: per-n summaries, growth exponents, nested subsets, the script."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ntk_attention import data
from ntk_attention import training
from ntk_attention.study import cache
from ntk_attention.study import configs
from ntk_attention.study import parts
from ntk_attention.study import scaling
from ntk_attention.study import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'scaling.py')


def _rec(n, model, seed, flip, rho=0.5, dist=0.1, log_kappa=2.0):
  return {'n_train': n, 'model': model, 'seed': seed, 'flip_rate': flip, 'spearman': rho,
          'kernel_distance': dist, 'log10_kappa_d': log_kappa}


def test_summarize_means_ratio_and_exponent():
  recs = [_rec(100, 'relu_mlp', 0, 0.1), _rec(100, 'relu_mlp', 1, 0.3),
          _rec(100, 'mlp_attn', 0, 0.4), _rec(100, 'mlp_attn', 1, 0.4),
          _rec(400, 'relu_mlp', 0, 0.1, log_kappa=4.0), _rec(400, 'mlp_attn', 0, 0.8, log_kappa=4.0),
          _rec(800, 'relu_mlp', 0, 0.0), _rec(800, 'mlp_attn', 0, 0.5)]
  rows = scaling.summarize(recs)
  assert [r['n_train'] for r in rows] == [100, 400, 800]
  r0 = rows[0]
  # std is the sample std (ddof = 1, `stats`): √(((0.1 − 0.2)² + (0.3 − 0.2)²) / 1) = 0.1·√2.
  assert math.isclose(r0['relu_mlp_flip_rate_mean'], 0.2) and math.isclose(
      r0['relu_mlp_flip_rate_std'], 0.1 * math.sqrt(2))
  assert r0['mlp_attn_flip_rate_std'] == 0.0 and rows[1]['relu_mlp_flip_rate_std'] == 0.0
  assert math.isclose(r0['ratio'], 0.4 / 0.2) and r0['seeds'] == 2
  assert math.isclose(rows[1]['ratio'], 8.0)
  assert rows[2]['ratio'] is None          # 2L-ReLU never flips: no finite ratio
  # ratio 2 at n = 100 and 8 at n = 400: log-log slope exactly 1 (n = 800 has none).
  assert math.isclose(scaling.exponent(rows, 'ratio'), 1.0, rel_tol=1e-12)
  text = scaling.scaling_section(rows)
  assert '| 100 | 20.0 ± 14.1 | 40.0 ± 0.0 | 2.00 |' in text and '| 800 |' in text


def test_nested_subsets_share_the_test_set_and_nest():
  ds = data.load('digits', n_train=120, n_test=30, seed=0)
  subs = scaling.nested_subsets(ds, [20, 60, 120], seed=3)
  for n, sub in subs.items():
    assert len(sub.x_train) == n and sub.x_test is ds.x_test
  np.testing.assert_array_equal(subs[60].x_train[:20], subs[20].x_train)
  # The largest subset is a permutation of the whole pool.
  assert sorted(map(bytes, subs[120].x_train)) == sorted(map(bytes, ds.x_train))
  with pytest.raises(ValueError, match='n_grid'):
    scaling.nested_subsets(ds, [200], seed=0)


def _run(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


COMMON = ['--dataset=digits', '--n_test=30', '--epochs=1']
ARGS = [*COMMON, '--n_grid=40,80', '--seeds=2', '--width=8']


@pytest.fixture(scope='module')
def script_dir(tmp_path_factory):
  """One run of the script (two tests read it: run once, a module fixture); its trainings go
  to out/train_cache."""
  out = tmp_path_factory.mktemp('scaling')
  proc = _run([*ARGS, f'--output_dir={out}', f'--train_cache={out / "train_cache"}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def test_script_end_to_end_and_resume(script_dir):
  tmp_path = script_dir
  args = [*ARGS, f'--output_dir={tmp_path}']
  rows = store_lib.read_json(tmp_path / 'scaling.json')['rows']
  assert [r['n_train'] for r in rows] == [40, 80]
  records = store_lib.JsonlStore(str(tmp_path / 'scaling.jsonl')).records()
  assert len(records) == 2 * 2 * 2          # n × model × seed
  for r in rows:
    assert 0 <= r['relu_mlp_flip_rate_mean'] <= 1 and r['log10_kappa_d'] > 0
  assert (tmp_path / 'scaling.png').exists() and (tmp_path / 'scaling.md').exists()
  proc = _run(args + ['--resume'])          # nothing left to do: same records
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(store_lib.JsonlStore(str(tmp_path / 'scaling.jsonl')).records()) == 8
  # study.parts.scaling on the config the flags map to: the same rows and records. Its models
  # are the script's, read from the script's training cache: the config asks for the very
  # trainings the flags did (same model, training, data and keys), so nothing is trained.
  config = configs.Scaling(data=configs.Data(dataset='digits', n_test=30, fit_to_pool=False),
                           train=training.TrainConfig(epochs=1), n_grid=(40, 80), seeds=2,
                           width=8)
  context = parts.Context(train_fn=cache.cached_train(directory=str(tmp_path / 'train_cache')))
  # (Up to the summation order of OpenBLAS's threads: one in the script, more here.)
  part_rows = parts.part('scaling').run(config, str(tmp_path / 'part'), context=context)
  assert (context.train_fn.stats['trained'], context.train_fn.stats['loaded']) == (0, 8)
  assert store_lib.read_json(tmp_path / 'scaling.json')['provenance']['config'] == \
      configs.as_dict(config)
  for mine, theirs in ((part_rows, rows),
                       (store_lib.JsonlStore(str(tmp_path / 'part' / 'scaling.jsonl')).records(),
                        store_lib.JsonlStore(str(tmp_path / 'scaling.jsonl')).records())):
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
      assert a.keys() == b.keys()
      for k in a:
        assert a[k] == (pytest.approx(b[k], rel=1e-10, abs=1e-14, nan_ok=True)
                        if isinstance(b[k], float) else b[k]), k


@pytest.mark.parametrize('args,message', [
    (['--n_grid=5,100'], '--n_grid'),
    (['--n_grid=100,60000', '--max_memory_gb=2'], 'largest n_train that fits'),
    (['--tau=0'], 'tau')])
def test_script_fails_before_any_output(tmp_path, args, message):
  proc = _run([*args, f'--output_dir={tmp_path / "out"}'])
  assert proc.returncode != 0 and message in proc.stderr
  assert not (tmp_path / 'out').exists()


def test_reproduce_scaling_part_matches_the_script_and_reports_it(tmp_path, script_dir):
  """The optional `scaling` part of reproduce.py runs scaling.py in-process: the same
  records as the script alone (shared training cache or not), and its section in the report."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'reproduce.py'), *COMMON,
       '--parts=scaling', '--scaling_n_grid=40,80', '--mall_seeds=2', '--mall_width=8',
       '--compilation_cache=', f'--output_dir={tmp_path / "run"}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = store_lib.read_json(tmp_path / 'run' / 'scaling' / 'scaling.json')['rows']
  assert rows == store_lib.read_json(script_dir / 'scaling.json')['rows']
  md = (tmp_path / 'run' / 'report.md').read_text()
  assert scaling.scaling_section(rows) in md
  assert '![scaling/scaling.png](scaling/scaling.png)' in md
