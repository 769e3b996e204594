"""Speed benchmarks: each entry times an old path and a new one in the same run.

This is the only place speed is measured; tests check correctness, never time. Every entry
also reports how far the new result is from the old one (`max_rel_diff` or `agreement`), so
a speed-up never hides a wrong answer.

  python scripts/benchmark.py                        # every entry, full sizes
  python scripts/benchmark.py --quick --only=ntk     # small sizes (CI, tests)
  python scripts/benchmark.py --only=ntk_head        # a composed model's head vs NT

The entries live in scripts/benchmarks/, one module per concern (its `__init__` lists them);
how a call is timed (compile, warm-up, `--repeats`, `--max_case_s`) is
`benchmarks/harness.py`'s docstring.

Rows: {'entry', 'case', 'sizes', 'baseline', 'baseline_s', 'baseline_compile_s', 'new',
'new_s', 'new_compile_s', 'speedup' (baseline_s / new_s), 'max_rel_diff' or 'agreement',
'note', ...}. They go to `--output` (JSON with provenance) and a CSV next to it, and a
fixed-width table is printed at the end.

Adding an entry: a module `benchmarks/<name>.py` with `run(args) -> list[dict]`, named in
`benchmarks.REGISTRY`, e.g.

  def run(args):
    '''vmapped seeds vs a sequential loop over seeds.'''
    seeds = 2 if args.quick else 8
    ...                                        # build inputs outside the timed calls
    old = harness.measure(jax.jit(train_one), (params0, x, y), args, ...)  # per seed, a loop
    new = harness.measure(jax.jit(jax.vmap(train_one)), (params, x, y), args)
    return [harness.make_row('training', f'{seeds} seeds', sizes, 'sequential', old, 'vmap',
                             new, max_rel_diff=harness.max_rel_diff(new.result, old.result))]

Entry-specific flags go at the top with the others, and into `harness.Args`.
"""
import math
import os
import time
from typing import List

from absl import flags

import _common  # flags and provenance shared by the scripts (before numpy: thread settings)

import jax

from benchmarks import REGISTRY
from benchmarks import harness
from benchmarks import ntk
from benchmarks import table
from ntk_attention.study import progress as progress_lib
from ntk_attention.study import store as store_lib

FLAGS = _common.script_flags(__name__)
flags.DEFINE_string('only', '', "Comma list of entries to run ('' = all): see REGISTRY.",
                    flag_values=FLAGS)
flags.DEFINE_bool('quick', False, 'Small sizes (CI and tests); full sizes otherwise.',
                  flag_values=FLAGS)
flags.DEFINE_integer('repeats', 3, 'Timed calls per function after one warm-up; the median '
                     'is reported.', flag_values=FLAGS)
flags.DEFINE_float('max_case_s', 300.0, 'Time budget (s) for the timed calls of one function: '
                   'when the warm-up call shows the repeats would overrun it, fewer are timed '
                   '(at least one).', flag_values=FLAGS)
flags.DEFINE_string('output', 'results/benchmark.json',
                    'Results file, must end in .json; the same rows go to the .csv of the same '
                    'name beside it (its folder is created).', flag_values=FLAGS)
flags.DEFINE_integer('bench_seed', 0, 'Seed of the random inputs and parameters.',
                     flag_values=FLAGS)
_common.define_precision_flag(FLAGS)
# ntk entry
flags.DEFINE_integer('ntk_out_dim', 1, 'Outputs C of the ntk-entry models.', flag_values=FLAGS)
flags.DEFINE_string('ntk_models', 'relu_mlp,mlp_attn,mlp_attn_qkv', 'Models of the ntk '
                    'entry (closed forms: relu_mlp, mlp_attn on prefix features; mlp_attn_qkv '
                    'per parameter group, docs/method.md §14).', flag_values=FLAGS)
flags.DEFINE_integer('ntk_generic_max_n', 0, 'Cap on the points given to the generic NT '
                     'methods (0 = none); above it both methods run on the first points '
                     'and the row says so.', flag_values=FLAGS)
flags.DEFINE_float('ntk_max_memory_gb', 0.0, 'Memory (GB) the generic NT methods may use '
                   '(0 = 90% of physical memory). Their peak is estimated as '
                   f'{ntk.GENERIC_PEAK_OVER_JACOBIAN:g} x the float32 Jacobian; above the '
                   'limit they run on fewer points instead of meeting the out-of-memory '
                   'killer, and the row says so.', flag_values=FLAGS)
# ntk_head entry
flags.DEFINE_float('ntk_head_max_memory_gb', 4.0, 'Memory budget (GB, max_memory_gb of '
                   'kernels.empirical_ntk) of NT\'s generic methods in the ntk_head entry: they '
                   'run on the prefix features in blocks of tokens within it.',
                   flag_values=FLAGS)
# startup entry
flags.DEFINE_string('startup_shadow', '', 'Folder put first on PYTHONPATH for the startup '
                    "entry's old path, e.g. another ml_dtypes installed there with pip install "
                    "--target ('' = time the installed packages only).", flag_values=FLAGS)
FLAG_NAMES = ('only', 'quick', 'repeats', 'max_case_s', 'bench_seed', 'ntk_out_dim',
              'ntk_models', 'ntk_generic_max_n', 'ntk_max_memory_gb', 'ntk_head_max_memory_gb',
              'startup_shadow')


def args_from_flags() -> harness.Args:
  """The entries' `Args` from the flags; a bad value is a ValueError naming its flag."""
  if FLAGS.repeats < 1:
    raise ValueError(f'--repeats must be >= 1, got {FLAGS.repeats}.')
  if not FLAGS.max_case_s > 0:
    raise ValueError(f'--max_case_s must be > 0, got {FLAGS.max_case_s}.')
  if FLAGS.ntk_out_dim < 1 or FLAGS.ntk_generic_max_n < 0:
    raise ValueError('--ntk_out_dim must be >= 1 and --ntk_generic_max_n >= 0.')
  if not FLAGS.ntk_head_max_memory_gb > 0:
    raise ValueError('--ntk_head_max_memory_gb must be > 0, got '
                     f'{FLAGS.ntk_head_max_memory_gb}.')
  if FLAGS.startup_shadow and not os.path.isdir(FLAGS.startup_shadow):
    raise ValueError(f'--startup_shadow is not a folder: {FLAGS.startup_shadow!r}.')
  ntk_models = tuple(_common.parse_names(FLAGS.ntk_models, 'ntk_models', ntk.SIZES['full']))
  return harness.Args(quick=FLAGS.quick, repeats=FLAGS.repeats, max_case_s=FLAGS.max_case_s,
                      seed=FLAGS.bench_seed, ntk_out_dim=FLAGS.ntk_out_dim,
                      ntk_models=ntk_models, ntk_generic_max_n=FLAGS.ntk_generic_max_n,
                      ntk_max_memory_gb=FLAGS.ntk_max_memory_gb,
                      ntk_head_max_memory_gb=FLAGS.ntk_head_max_memory_gb,
                      startup_shadow=FLAGS.startup_shadow)


def _loadavg():
  """1, 5 and 15-minute load averages (None where the OS has none): a shared machine's
  other work shows up in the timings, so the results record it."""
  try:
    return list(os.getloadavg())
  except (OSError, AttributeError):
    return None


def run(names: List[str], args: harness.Args, log=print) -> List[dict]:
  """The rows of the entries `names`, in order, each entry's duration logged."""
  rows = []
  for name in names:
    t0 = time.perf_counter()
    log(f'[benchmark] {name} ...')
    rows.extend(REGISTRY[name](args))
    log(f'[benchmark] {name} done in {progress_lib.format_duration(time.perf_counter() - t0)}')
  return rows


def main(argv):
  del argv
  jax.config.update('jax_enable_x64', True)
  jax.config.update('jax_default_matmul_precision', FLAGS.matmul_precision)
  names = (list(REGISTRY) if not FLAGS.only.strip()
           else _common.parse_names(FLAGS.only, 'only', REGISTRY))
  args = args_from_flags()
  if not FLAGS.output.endswith('.json'):
    raise ValueError(f'--output must end in .json, got {FLAGS.output!r}.')
  _common.begin_work()
  load_start = _loadavg()
  if load_start and load_start[0] > (os.cpu_count() or 1) - 0.5:
    print(f'[benchmark] warning: load average {load_start[0]:.1f} on {os.cpu_count()} cores '
          'before starting; other processes will slow the timings (ratios suffer least).')
  rows = run(names, args)
  for row in rows:
    for key in ('baseline_s', 'new_s', 'max_rel_diff', 'agreement'):
      if isinstance(row.get(key), float) and not math.isfinite(row[key]):
        raise FloatingPointError(f'{row["case"]}: {key} is {row[key]}.')
  store_lib.write_json(FLAGS.output, {'provenance': _common.provenance(FLAGS, FLAG_NAMES),
                                      'cpu_count': os.cpu_count(), 'loadavg_start':
                                      load_start, 'loadavg_end': _loadavg(), 'rows': rows})
  store_lib.write_csv(FLAGS.output[:-len('.json')] + '.csv', rows)
  print(table.format_table(rows))
  print(f'[benchmark] wrote {FLAGS.output} and .csv')


if __name__ == '__main__':
  _common.run(main)
