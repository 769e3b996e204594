"""Entry `preset`: the quick preset's programs, the previous code paths against the library's.

One process runs the preset twice (`study.runner.run`, every part in process), each path from
a cold JAX cache, without a persistent compilation cache and into a fresh folder: first with
the previous paths that `benchmarks.compiles` keeps (a training program per lr, epochs and
init_std; an attack program per ε, PGD step count and τ; a model's probe, its head plan, the
accuracies, their labels and each seed's parameters op by op; XLA's default LLVM level, as
`jax.jit` compiles), then with the library's (`compiles.jit`: level 1 on a CPU;
`compiles.op_by_op`: one program where the previous path ran op by op). It prints the
programs each path compiled, XLA's seconds compiling them, the wall time, and how many JSON
numbers of the two result folders are bit-equal (`study.compare.numbers`).

--quick: the quick preset's parts on the digits proxy at toy sizes (about a minute a path);
full: `presets.quick()` itself, as README's main job runs it (minutes a path).
"""
import dataclasses
import tempfile
import time
import warnings
from typing import List

import jax

from benchmarks import compiles as compiles_entry
from benchmarks import harness
from ntk_attention import compiles
from ntk_attention import models
from ntk_attention.study import compare
from ntk_attention.study import presets
from ntk_attention.study import runner

QUICK = dict(n_train=60, n_test=30, n_grid=(10, 20), widths=(16, 32), ntk_seeds=2,
             mall_seeds=2, mall_width=16, epochs=3, epsilons=(0.1, 0.3), binary_n_train=40,
             binary_n_test=20, at_n_train=40, at_epochs=2, sens_n_train=60, sens_n_test=30,
             sens_width=64, sens_epochs=4,
             parts=('spectral', 'ntk_distance', 'malleability', 'binary', 'interventions',
                    'adversarial_training', 'sensitivity'))


def run(args: harness.Args) -> List[dict]:
  """The preset old path then new (module docstring); one row."""
  study = (dataclasses.replace(presets.quick_digits(), **QUICK) if args.quick
           else presets.quick())
  paths = {**compiles_entry.protocol_paths(), **compiles_entry.analysis_paths()}
  timings, counts, numbers = {}, {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for path in ('old', 'new'):
      with compiles_entry.previous_paths(paths, active=path == 'old'):
        jax.clear_caches()
        models._build.cache_clear()   # pylint: disable=protected-access
        models._study_prefix.cache_clear()   # pylint: disable=protected-access
        t0 = time.perf_counter()
        with compiles.count() as count, warnings.catch_warnings():
          warnings.simplefilter('ignore', UserWarning)   # toy sizes train poorly
          runner.run(study, f'{tmp}/{path}', compilation_cache='')
        seconds = time.perf_counter() - t0
      counts[path] = count
      timings[path] = harness.Timing(seconds, count.seconds, [seconds], None)
      numbers[path] = compare.numbers(f'{tmp}/{path}')
  keys = sorted(set(numbers['old']) & set(numbers['new']))
  equal = sum(numbers['old'][k] == numbers['new'][k] for k in keys)
  sizes = (' '.join(f'{k}={v}' for k, v in QUICK.items() if k != 'parts') if args.quick
           else 'presets.quick() (README main job)')
  return [harness.make_row(
      'preset', f"{'quick_digits at toy sizes' if args.quick else 'quick preset'}: "
      f'{len(study.parts)} parts in one process', sizes,
      'previous paths', timings['old'], 'library', timings['new'],
      programs_old=counts['old'].programs, programs_new=counts['new'].programs,
      records_equal=f'{equal}/{len(keys)}',
      note=f"programs compiled {counts['old'].programs} -> {counts['new'].programs} "
           f"(XLA {counts['old'].seconds:.0f} s -> {counts['new'].seconds:.0f} s); {equal} of "
           f'{len(keys)} JSON numbers bit-equal; each path timed once from a cold cache, no '
           'persistent compilation cache')]
