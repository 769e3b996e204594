"""scripts/benchmark.py --quick end to end: rows, finite times, agreement. Never speed."""
import csv
import math
import os
import subprocess
import sys

import pytest

from ntk_attention.study import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'benchmark.py')
GENERIC = ('jacobian_contraction', 'ntk_vector_products')


def _start(args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen([sys.executable, SCRIPT, *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The quick benchmark, a bad --only and the startup entry, run concurrently to share
  start-up time."""
  out = tmp_path_factory.mktemp('bench') / 'b.json'
  shadow = tmp_path_factory.mktemp('shadow')    # empty: both paths import the same packages
  procs = {'quick': _start(['--quick', '--repeats=1', '--only=ntk,ntk_head,influence,training',
                            f'--output={out}']),
           'bad': _start(['--quick', '--only=ntk,nope', f'--output={out}.bad.json']),
           'startup': _start(['--quick', '--repeats=1', '--only=startup',
                              f'--startup_shadow={shadow}', f'--output={out}.startup.json'])}
  logs = {k: (p.communicate(timeout=300)[0], p.returncode) for k, p in procs.items()}
  return out, logs


def test_quick_rows(runs):
  out, logs = runs
  log, rc = logs['quick']
  assert rc == 0, log[-3000:]
  rows = store_lib.read_json(out)['rows']
  ntk = [r for r in rows if r['entry'] == 'ntk']
  inf = [r for r in rows if r['entry'] == 'influence']
  # Per model: one row per generic method and one against the faster of them.
  for model in ('relu_mlp', 'mlp_attn', 'mlp_attn_qkv'):
    mine = [r for r in ntk if r['model'] == model]
    assert sorted(r['baseline'] for r in mine[:2]) == sorted(GENERIC)
    assert len(mine) == 3 and mine[2]['baseline'].startswith('fastest generic')
    fastest = min(mine[:2], key=lambda r: r['baseline_s'])
    assert mine[2]['baseline_s'] == fastest['baseline_s']
  assert len(inf) == 2
  for r in rows:
    for key in ('new_s', 'baseline_s'):
      assert math.isfinite(r[key]) and r[key] > 0, (r['case'], key, r[key])
    assert math.isclose(r['speedup'], r['baseline_s'] / r['new_s'], rel_tol=1e-12)
  for r in ntk:
    assert 'float32' in r['sizes']
    assert 0 <= r['max_rel_diff'] <= 1e-4, r
  for r in inf:
    assert 0 <= r['agreement'] <= 1e-8, r
  # ntk_head: the closed form of a composed Dense/ReLU head against both NT methods.
  head = [r for r in rows if r['entry'] == 'ntk_head']
  assert [r['baseline'] for r in head[:2]] == list(GENERIC), head
  assert len(head) == 3 and head[2]['baseline'] == (
      f"fastest generic ({min(head[:2], key=lambda r: r['baseline_s'])['baseline']})")
  for r in head:
    assert r['model'] == 'deep_softmax' and 'n=64 (48+16) d=784 m=64 C=10' in r['sizes'], r
    for key in ('rel_fro', 'max_rel_diff', 'max_elementwise_rel'):
      assert 0 <= r[key] < 1e-4, (r['case'], key, r[key])
  train = [r for r in rows if r['entry'] == 'training']
  assert len(train) == 4        # 2 models x 2 widths
  for r in train:               # vmapped and sequential seeds train to the same weights
    assert 0 <= r['max_rel_diff'] <= 1e-5, r
    assert r['throughput_vmapped'] > 0 and r['throughput_sequential'] > 0
  # The LOO changes compared are not trivially small (else agreement would mean nothing).
  assert float(inf[0]['note'].split('=')[-1]) > 1e-2
  # The CSV next to the JSON has the same rows, and the table was printed.
  with open(str(out)[:-len('.json')] + '.csv', newline='') as f:
    assert [r['case'] for r in csv.DictReader(f)] == [r['case'] for r in rows]
  assert 'speedup' in log and rows[0]['case'] in log


def test_unknown_entry_is_refused(runs):
  out, logs = runs
  log, rc = logs['bad']
  assert rc != 0 and 'nope' in log and 'unknown' in log
  assert not os.path.exists(f'{out}.bad.json')


def test_startup_row_times_both_paths_and_names_the_versions_they_imported(runs):
  out, logs = runs
  log, rc = logs['startup']
  assert rc == 0, log[-3000:]
  [row] = store_lib.read_json(f'{out}.startup.json')['rows']
  assert row['timed_calls'] == '3/3', row      # quick: 3 starts per path
  for key in ('baseline_s', 'new_s'):
    assert math.isfinite(row[key]) and row[key] > 0, row
  assert math.isclose(row['speedup'], row['baseline_s'] / row['new_s'], rel_tol=1e-12)
  # The shadow folder is empty, so both paths import the installed ml_dtypes and numpy.
  import importlib.metadata as metadata  # pylint: disable=g-import-not-at-top
  want = f"ml_dtypes {metadata.version('ml_dtypes')} (numpy {metadata.version('numpy')})"
  assert row['baseline'] == row['new'] == want, row
