"""Entry `startup`: `import ntk_attention` in a fresh interpreter, with the installed packages
and with other versions of some of them put first on PYTHONPATH (`--startup_shadow`).

Made for setup.cfg's pin `ml_dtypes<0.7` (BUILD.md, "Start-up"): with numpy 2.4, ml_dtypes
0.7.0's extension module takes ~0.8 s to initialise (it registers many more ufunc loops, and
numpy's `PyUFunc_AddLoop` compares each new loop with every one already there), 0.6.0's ~0.1 s.
Every script and every process the tests start pays it. To compare:

  .venv/bin/pip install --no-deps --target=/tmp/ml_dtypes_070 ml_dtypes==0.7.0
  .venv/bin/python scripts/benchmark.py --only=startup --startup_shadow=/tmp/ml_dtypes_070
"""
import os
import statistics
import subprocess
import sys
import time
from typing import List, Optional

from benchmarks import harness

CODE = 'import ntk_attention, ml_dtypes, numpy; print(ml_dtypes.__version__, numpy.__version__)'


def _start(shadow: Optional[str]):
  """(wall seconds, 'ml_dtypes numpy' versions) of one fresh interpreter importing the package;
  `shadow` (a folder) first on its PYTHONPATH."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  if shadow:
    env['PYTHONPATH'] = os.pathsep.join(p for p in (shadow, env.get('PYTHONPATH')) if p)
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, '-c', CODE], env=env, capture_output=True, text=True)
  seconds = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f'import failed (shadow {shadow!r}): {proc.stderr[-2000:]}')
  return seconds, proc.stdout.split()


def run(args: harness.Args) -> List[dict]:
  """Median wall time of `repeats` (quick: 3, full: at least 7) fresh interpreters per path,
  the two paths alternated so that a change in the machine's load falls on both; without
  `--startup_shadow`, the installed path alone (no baseline). No numbers to compare: the row
  names the versions each path imported."""
  repeats = max(args.repeats, 3 if args.quick else 7)
  paths = {'old': args.startup_shadow} if args.startup_shadow else {}
  paths['new'] = None
  times = {name: [] for name in paths}
  versions = {}
  _start(None)          # the first start reads the files from disk; not timed
  for _ in range(repeats):
    for name, shadow in paths.items():
      seconds, versions[name] = _start(shadow)
      times[name].append(seconds)
  timing = {name: harness.Timing(statistics.median(t), None, t, None)
            for name, t in times.items()}
  label = lambda name: 'ml_dtypes {} (numpy {})'.format(*versions[name])
  sizes = (f'{repeats} starts per path; ' + ' -> '.join(label(name) for name in timing))
  return [harness.make_row(
      'startup', 'import ntk_attention, fresh interpreter', sizes,
      label('old') if 'old' in timing else '-', timing.get('old'), label('new'),
      timing['new'], note='wall time of the whole interpreter, median; '
      + (f'old: --startup_shadow={args.startup_shadow}' if 'old' in timing
         else 'no --startup_shadow: the installed packages only'))]
