"""Entry `reproduce`: scripts/reproduce.py with isolated parts vs one process and caches."""
import os
import subprocess
import sys
import tempfile
import time
from typing import List

from benchmarks import harness
from ntk_attention.study import compare

SIZES = {   # reproduce.py flags on the digits proxy (quick: seconds; full: minutes)
    'quick': ['--preset=quick_digits', '--n_train=60', '--n_test=30', '--n_grid=10,20',
              '--widths=16,32', '--ntk_seeds=2', '--mall_seeds=2', '--mall_width=16',
              '--epochs=3', '--epsilons=0.1,0.3', '--binary_n_train=40', '--binary_n_test=20',
              '--parts=spectral,ntk_distance,malleability,binary'],
    'full': ['--preset=quick_digits', '--parts=spectral,ntk_distance,malleability,binary,'
             'interventions'],
}
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'reproduce.py')


def run(args: harness.Args) -> List[dict]:
  """scripts/reproduce.py the old way (every part a subprocess that trains its own models,
  no compilation cache: `--isolate_parts --train_cache=none`) against the new one
  (one process, one training cache, a cold persistent compilation cache), each in a fresh
  folder and timed once (a run is minutes, not a kernel call); `max_rel_diff` over every
  number of every part's results (`study.compare.numbers`: wall times excluded)."""
  flags_ = SIZES['quick' if args.quick else 'full']
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  with tempfile.TemporaryDirectory() as tmp:
    runs = {
        'old': [*flags_, '--isolate_parts', '--compilation_cache=', '--train_cache=none',
                f'--output_dir={tmp}/old'],
        'new': [*flags_, f'--compilation_cache={tmp}/jax', f'--output_dir={tmp}/new'],
    }
    timings, results = {}, {}
    for name, argv in runs.items():
      t0 = time.perf_counter()
      proc = subprocess.run([sys.executable, SCRIPT, *argv], env=env, capture_output=True,
                            text=True)
      seconds = time.perf_counter() - t0
      if proc.returncode != 0:
        raise RuntimeError(f'reproduce.py ({name}) failed: {proc.stderr[-2000:]}')
      timings[name] = harness.Timing(seconds, None, [seconds], None)
      # Every number of the results (wall times, provenance, configuration left out).
      results[name] = {k: v for k, v in compare.numbers(f'{tmp}/{name}').items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
  old, new = results['old'], results['new']
  keys = list(old)
  if set(keys) - set(new):
    raise RuntimeError(f'new run lacks results: {sorted(set(keys) - set(new))[:5]}')
  scale = max(max(abs(old[k]) for k in keys), 1e-300)
  diff = max(abs(new[k] - old[k]) for k in keys) / scale
  parts = [a for a in flags_ if a.startswith('--parts=')][0][len('--parts='):]
  return [harness.make_row(
      'reproduce', 'reproduce.py: isolated parts vs one process + caches',
      f'quick_digits {" ".join(flags_[1:4]) if args.quick else ""} parts={parts}',
      'subprocess per part', timings['old'], 'in-process', timings['new'],
      max_rel_diff=diff, numbers_compared=len(keys),
      note=f'{len(keys)} numbers compared; each run timed once, start-up included')]
