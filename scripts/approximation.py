r"""Approximation power of the data-dependent kernel (docs/method.md §1 claim 5, the "power" side).

For four kernels on one sequence [x_train; x_test] (training points as context): the linear
kernel G (cosine Gram), the normalised G³ of parameter-free linearized attention (its NNGP),
the ReLU NTK and the MLP-Attn NTK (analytic, first layer trained), all float64:

- real task: kernel ridge regression (ridge λ·mean(diag K)) on the dataset's targets (one-hot,
  or ±1 for two classes): test MSE, relative test error Σ(f − y)²/Σy² (1 = predicting zero),
  accuracy, and the centred kernel–target alignment on the training block;
- synthetic tasks, defined on train and test points together (`alignment.synthetic_targets`):
  'aligned' = a random combination of the top --k_top eigenvectors of G over all points,
  'random' = Gaussian targets of the same norm; relative test error and alignment, mean ± std
  over --synthetic_seeds draws (seeds 0..S−1 of the target draw; --noise adds N(0, noise²)).

  python scripts/approximation.py --dataset=digits --n_train=1000 --n_test=500 \
      --output_dir=results/approximation

Writes approximation.json (summary, per-seed records, provenance), approximation.csv (summary),
approximation.png (grouped bars: kernels × {real, aligned, random} relative test error) and
approximation_alignment.png (the same bars for the centred alignment).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402

FLAGS = _common.script_flags(__name__)
_common.define_data_flags(FLAGS)
flags.DEFINE_float('ridge', 1e-3, 'Ridge λ (× mean diag K) of kernel ridge regression [choice].',
                   flag_values=FLAGS)
flags.DEFINE_integer('k_top', 5, "Top eigenvectors of G spanned by the 'aligned' synthetic targets.",
                     flag_values=FLAGS)
flags.DEFINE_integer('synthetic_seeds', 3, 'Draws of each synthetic task (seeds 0..S-1).',
                     flag_values=FLAGS)
flags.DEFINE_float('noise', 0.0, 'Std of Gaussian noise added to the synthetic targets (RMS 1).',
                   flag_values=FLAGS)

NAME = 'approximation'
TASKS = ('real', 'aligned', 'random')
KERNEL_LABELS = {'linear': 'linear (G)', 'gram_cubed': 'G³ (attention NNGP)',
                 'relu_ntk': 'ReLU NTK', 'mlp_attn_ntk': 'MLP-Attn NTK'}
METRICS = ('relative_mse', 'mse', 'alignment')


def _evaluate(suite, y_train, y_test, ridge):
  """{kernel: {mse, relative_mse, accuracy, alignment}} for one task."""
  from ntk_attention import alignment
  out = {}
  for name, (k_train, k_test_train) in suite.items():
    res = alignment.krr_test_error(k_train, k_test_train, y_train, y_test, ridge)
    res['alignment'] = alignment.centered_alignment(k_train, y_train)
    out[name] = res
  return out


def run(ds, out_dir, ridge, k_top, seeds, noise=0.0) -> dict:
  """Runs every kernel on the real and synthetic tasks of `ds`; writes JSON, CSV and figure.

  `seeds`: the synthetic target seeds (an int S means 0..S−1). Returns the JSON dict.
  """
  from ntk_attention import alignment
  from ntk_attention import data
  from ntk_attention import stats
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  from ntk_attention.study.report import plots
  seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
  if not seeds:
    raise ValueError('need at least one synthetic seed.')
  if not ridge > 0:
    raise ValueError(f'ridge must be > 0, got {ridge}.')
  x_train = np.asarray(ds.x_train, np.float64)
  x_test = np.asarray(ds.x_test, np.float64)
  n = len(x_train)
  x_all = np.concatenate([x_train, x_test])
  # Synthetic targets first: they validate k_top against rank(G) before the kernels are built.
  synthetic = {(kind, s): alignment.synthetic_targets(x_all, kind, k_top, s, noise)
               for kind in alignment.SYNTHETIC_KINDS for s in seeds}

  t0 = time.time()
  suite = alignment.kernel_suite(x_train, x_test)
  logging.info('kernels %s on %d + %d points (%.1fs)', list(suite), n, len(x_test),
               time.time() - t0)

  records = []
  real = _evaluate(suite, data.targets(ds.y_train, ds.num_classes),
                   data.targets(ds.y_test, ds.num_classes), ridge)
  for name, res in real.items():
    records.append({'task': 'real', 'kernel': name, 'seed': None, **res})
  for (kind, s), y in synthetic.items():
    for name, res in _evaluate(suite, y[:n], y[n:], ridge).items():
      res.pop('accuracy')  # sign agreement of a continuous target is not a task metric
      records.append({'task': kind, 'kernel': name, 'seed': s, **res})

  summary = stats.summarize(records, ('task', 'kernel'), METRICS)
  for row in summary:
    if row['task'] == 'real':
      row['accuracy'] = real[row['kernel']]['accuracy']
  result = {
      'dataset': ds.name, 'classes': list(ds.classes), 'n_train': n, 'n_test': len(x_test),
      'target': 'one-hot' if ds.num_classes > 2 else '±1 (+1 = classes[0])',
      'kernels': list(alignment.KERNELS), 'tasks': list(TASKS),
      'settings': {'ridge': ridge, 'ridge_convention': 'λ·mean(diag K_train)', 'k_top': k_top,
                   'synthetic_seeds': seeds, 'noise': noise},
      'metrics': {'mse': 'mean over test points and outputs of (f − y)²',
                  'relative_mse': 'Σ(f − y)² / Σ y² on the test set (1 = predicting zero)',
                  'alignment': 'centred kernel–target alignment on the training block',
                  'accuracy': 'real task: argmax (one-hot) or sign (±1) agreement'},
      'summary': summary, 'records': records,
      'provenance': _common.provenance(FLAGS, ('ridge', 'k_top', 'synthetic_seeds', 'noise')),
  }
  store_lib.write_json(_common.out_path(NAME + '.json', out_dir), result)
  columns = ['task', 'kernel'] + [f'{m}_{s}' for m in METRICS for s in ('mean', 'std', 'count')]
  store_lib.write_csv(_common.out_path(NAME + '.csv', out_dir), summary,
                      columns=columns + ['accuracy'])
  plot(summary, ds, k_top, len(seeds), out_dir)
  return result


def plot(summary, ds, k_top, n_seeds, out_dir=None):
  """Grouped bars, one group per kernel and one bar per task (± std): relative test error
  (approximation.png) and centred alignment (approximation_alignment.png)."""
  from ntk_attention import alignment
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  from ntk_attention.study.report import plots
  rows = {(r['task'], r['kernel']): r for r in summary}
  task_labels = {'real': f'real task ({ds.num_classes} classes)',
                 'aligned': f'aligned (top-{k_top} eigvecs of G)',
                 'random': 'random targets'}
  groups = [KERNEL_LABELS[k] for k in alignment.KERNELS]
  sizes = f'{ds.name}, n_train={len(ds.x_train)}, n_test={len(ds.x_test)}'
  paths = []
  for metric, suffix, ylabel, what, logy in (
      ('relative_mse', '', 'relative test error Σ(f−y)²/Σy²  (1 = predict 0), log scale',
       'Kernel ridge regression', True),
      ('alignment', '_alignment', 'centred kernel–target alignment (train block)',
       'Kernel–target alignment', False)):
    series = {task_labels[task]: ([rows[task, k][metric + '_mean'] for k in alignment.KERNELS],
                                  [rows[task, k][metric + '_std'] for k in alignment.KERNELS])
              for task in TASKS}
    title = f'{what} on {sizes}\n(synthetic: mean ± std over {n_seeds} draws)'
    paths.append(plots.plot_bars(_common.out_path(f'{NAME}{suffix}.png', out_dir), groups,
                                     series, ylabel, title, logy=logy))
  return paths


def main(argv, context=None):
  """`context` (scripts/reproduce.py in-process) is unused: nothing here trains."""
  del context
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  classes = _common.check_data_flags(FLAGS)
  if not FLAGS.ridge > 0:
    raise app.UsageError(f'--ridge must be > 0, got {FLAGS.ridge}.')
  if FLAGS.k_top < 1:
    raise app.UsageError(f'--k_top must be >= 1, got {FLAGS.k_top}.')
  if FLAGS.synthetic_seeds < 1:
    raise app.UsageError(f'--synthetic_seeds must be >= 1, got {FLAGS.synthetic_seeds}.')
  if not FLAGS.noise >= 0:
    raise app.UsageError(f'--noise must be >= 0, got {FLAGS.noise}.')
  _common.setup(FLAGS)
  ds = _common.load_data(FLAGS, classes)
  result = run(ds, FLAGS.output_dir, FLAGS.ridge, FLAGS.k_top, FLAGS.synthetic_seeds,
               FLAGS.noise)
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  from ntk_attention.study.report import plots
  print(page.markdown_table(
      result['summary'],
      ['task', 'kernel', 'relative_mse_mean', 'relative_mse_std', 'accuracy', 'alignment_mean',
       'alignment_std'],
      ['task', 'kernel', 'rel. test error', '± std', 'accuracy', 'alignment', '± std']))
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
