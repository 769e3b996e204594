"""The memory model of a malleability cell (`blocked.influence_peak_gb`, docs/method.md §13)
against the measured peak RSS of scripts/malleability.py at two sizes, and `--dry_run`
(prints the estimate, lists problems, writes nothing, exits 0)."""
import os
import re
import resource
import subprocess
import sys

import pytest

from ntk_attention import blocked
from oracles import user_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'malleability.py')
FLAGS = ['--dataset=mnist_sample', '--n_test=500', '--width=64', '--seeds=1', '--attacks=fgsm',
         '--epochs=1']


def _run(args):
  env = user_env(TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, SCRIPT, *FLAGS, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=1800)


def _peak_rss_gb(args) -> float:
  """Peak RSS (GB) of one run in a child of a fresh interpreter: RUSAGE_CHILDREN is the
  maximum over this process's waited-for children, so each run gets its own parent."""
  code = ('import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); '
          'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)')
  env = user_env(TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-c', code, sys.executable, SCRIPT, *FLAGS, *args],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return int(proc.stdout.strip().splitlines()[-1]) * 1024 / 1e9       # ru_maxrss is in KiB


@pytest.mark.parametrize('n_train', [1000, 4000])
def test_estimate_within_ten_percent_of_measured_peak(n_train, tmp_path):
  measured = _peak_rss_gb([f'--n_train={n_train}', f'--output_dir={tmp_path}'])
  estimate = blocked.influence_peak_gb(n_train, 500)
  assert abs(estimate - measured) <= 0.1 * measured, (n_train, estimate, measured)


def test_dry_run_prints_the_estimate_and_problems_and_writes_nothing(tmp_path):
  out = tmp_path / 'never'
  proc = _run(['--n_train=20000', '--max_memory_gb=4', f'--output_dir={out}', '--dry_run'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  want = blocked.influence_peak_gb(20000, 500)
  assert re.fullmatch(rf'estimated peak memory: {want:.3g} GB \(4 GB budget; .*\)', lines[0])
  assert lines[1].startswith('estimated time: ')
  fails = [l for l in lines if l.startswith('would fail: ')]
  # Over the budget (naming the largest n_train that fits) and larger than the dataset.
  n_max = blocked.largest_n_train(500, 4.0)
  assert any(f'largest n_train that fits is {n_max}' in l for l in fails), lines
  assert any('mnist_sample has 5000 usable samples' in l for l in fails), lines
  assert not out.exists()
  # scripts/scaling.py: the estimate at the largest n of the grid.
  env = user_env(TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'scaling.py'),
                         '--n_grid=500,9000', '--n_test=500', f'--output_dir={out}', '--dry_run'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0].startswith(f'estimated peak memory: {blocked.influence_peak_gb(9000, 500):.3g} GB')
  assert any(l.startswith('would fail: --n_grid: mnist_sample has 5000') for l in lines), lines
  assert not out.exists()
