"""scripts/reproduce.py runs its parts in one process and trains nothing twice (issue 12).

A tiny preset (digits, 60 training points, 3 epochs) is run in-process and with
--isolate_parts (each part in a fresh spawned process, trained parameters shared only through
D/cache/train) into two folders: every number of the
two runs' results must agree. A second in-process run with --force recomputes every part but
trains nothing (its trained parameters come from D/cache/train) and compiles nothing new (its
programs come from the persistent compilation cache), and the interventions part
reuses the malleability part's trainings within the first run.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from oracles import json_numbers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'reproduce.py')
TINY = ['--preset=quick_digits', '--n_train=60', '--n_test=30', '--n_grid=10,20',
        '--mall_seeds=2', '--mall_width=16', '--epochs=3', '--epsilons=0.3', '--attacks=fgsm',
        '--interventions=curated', '--intervention_attacks=fgsm',
        '--parts=spectral,malleability,interventions']
TRAINED = re.compile(r'trainings: (\d+) seeds trained, (\d+) loaded from .*, (\d+) reused')
COMPILED = re.compile(r'compilations: (\d+) new, (\d+) loaded from')


def _run(out, *extra):
  # One compilation cache for the three runs: the isolated run's spawned parts load the
  # in-process run's programs instead of compiling them again (what is compared is the
  # numbers and the trainings, not where a program came from).
  cmd = [sys.executable, SCRIPT, *TINY, f'--output_dir={out}',
         f'--compilation_cache={out.parent / "xla"}', *extra]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc



@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp('inprocess')
  inproc = _run(base / 'in')
  isolated = _run(base / 'iso', '--isolate_parts')
  forced = _run(base / 'in', '--force')
  return base, inproc, isolated, forced


def test_in_process_and_isolated_runs_give_the_same_numbers(runs):
  base, *_ = runs
  for sub, name in (('spectral', 'spectral.json'), ('malleability', 'malleability.json'),
                    ('interventions', 'malleability.json')):
    a = json_numbers(json.load(open(base / 'in' / sub / name)))
    b = json_numbers(json.load(open(base / 'iso' / sub / name)))
    assert a.keys() == b.keys() and a, sub
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-9, err_msg=f'{sub}{k}')


def test_a_model_trained_by_one_part_is_not_trained_again(runs):
  _, inproc, _, _ = runs
  trained, loaded, reused = map(int, TRAINED.search(inproc.stderr).groups())
  # malleability trains 2 models × 2 seeds; interventions reuses them (its standard setting)
  # and trains only the curated sets (2 models × 2 seeds, one seed at a time).
  assert (trained, loaded) == (8, 0)
  assert reused >= 4           # (the sweep itself also asks again for models it has)


def test_a_second_run_trains_nothing_and_compiles_nothing_new(runs):
  base, inproc, _, forced = runs
  trained, loaded, _ = map(int, TRAINED.search(forced.stderr).groups())
  assert trained == 0
  assert loaded == 8           # the standard models and the curated retrainings
  assert os.listdir(base / 'in' / 'cache' / 'train')
  # Counted from JAX's persistent-cache events: the first run compiles, the forced rerun of
  # every part loads each of its programs from the cache.
  new_first, _ = map(int, COMPILED.search(inproc.stderr).groups())
  new_again, cached_again = map(int, COMPILED.search(forced.stderr).groups())
  assert new_first > 0
  assert (new_again, cached_again > 0) == (0, True)


def test_every_part_logs_to_its_folder_and_the_terminal_gets_one_progress_line(runs):
  base, inproc, _, _ = runs
  for sub in ('spectral', 'malleability', 'interventions'):
    log = (base / 'in' / sub / 'log.txt').read_text()
    assert log.strip(), sub
  lines = [l for l in inproc.stderr.splitlines() if l.startswith('[reproduce]')]
  assert lines and 'parts 3/3' in lines[-1]
  assert '[malleability] 1/' not in inproc.stderr      # per-cell lines stay in the part logs
