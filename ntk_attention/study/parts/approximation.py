"""Approximation power of the data-dependent kernel (docs/method.md §1 claim 5, the "power"
side); `configs.Approximation`, scripts/approximation.py.

For four kernels on one sequence [x_train; x_test] (training points as context): the linear
kernel G (cosine Gram), the normalised G³ of parameter-free linearized attention (its NNGP),
the ReLU NTK and the MLP-Attn NTK (analytic, first layer trained), all float64:

- real task: kernel ridge regression (ridge λ·mean(diag K)) on the dataset's targets (one-hot,
  or ±1 for two classes): test MSE, relative test error Σ(f − y)²/Σy² (1 = predicting zero),
  accuracy, and the centred kernel–target alignment on the training block;
- synthetic tasks, defined on train and test points together (`alignment.synthetic_targets`):
  'aligned' = a random combination of the top `k_top` eigenvectors of G over all points,
  'random' = Gaussian targets of the same norm; relative test error and alignment, mean ± std
  over `synthetic_seeds` draws (seeds 0..S−1 of the target draw; `noise` adds N(0, noise²)).

Writes approximation.json (summary, per-seed records, provenance), approximation.csv (summary),
approximation.png (grouped bars: kernels × {real, aligned, random} relative test error) and
approximation_alignment.png (the same bars for the centred alignment). Nothing here trains.
"""
import time

from absl import logging
import numpy as np

from ntk_attention import alignment
from ntk_attention import data
from ntk_attention import stats
from ntk_attention.study import configs
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'approximation'
TASKS = ('real', 'aligned', 'random')
KERNEL_LABELS = {'linear': 'linear (G)', 'gram_cubed': 'G³ (attention NNGP)',
                 'relu_ntk': 'ReLU NTK', 'mlp_attn_ntk': 'MLP-Attn NTK'}
METRICS = ('relative_mse', 'mse', 'alignment')


def check(config: configs.Approximation) -> None:
  """Validates `config` before any data is loaded."""
  _base.check_data(config.data)
  if not config.ridge > 0:
    raise ValueError(f'--ridge must be > 0, got {config.ridge}.')
  if config.k_top < 1:
    raise ValueError(f'--k_top must be >= 1, got {config.k_top}.')
  if config.synthetic_seeds < 1:
    raise ValueError(f'--synthetic_seeds must be >= 1, got {config.synthetic_seeds}.')
  if not config.noise >= 0:
    raise ValueError(f'--noise must be >= 0, got {config.noise}.')


def data_needs(config: configs.Approximation) -> list:
  return _base.data_needs(config.data)


def _evaluate(suite, y_train, y_test, ridge):
  """{kernel: {mse, relative_mse, accuracy, alignment}} for one task."""
  out = {}
  for name, (k_train, k_test_train) in suite.items():
    res = alignment.krr_test_error(k_train, k_test_train, y_train, y_test, ridge)
    res['alignment'] = alignment.centered_alignment(k_train, y_train)
    out[name] = res
  return out


def run(config: configs.Approximation, out_dir: str, context=None, resume: bool = False) -> dict:
  """Every kernel on the real and synthetic tasks of `config` into `out_dir`; returns the JSON
  dict. `context` and `resume` are unused: nothing here trains, and the part is one
  computation."""
  del context, resume
  check(config)
  ds = _base.load_data(config.data)
  ridge, k_top, noise = config.ridge, config.k_top, config.noise
  seeds = list(range(config.synthetic_seeds))
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
      'summary': summary, 'records': records, 'provenance': _base.provenance(config),
  }
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), result)
  columns = ['task', 'kernel'] + [f'{m}_{s}' for m in METRICS for s in ('mean', 'std', 'count')]
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), summary,
                      columns=columns + ['accuracy'])
  plot(summary, ds, k_top, len(seeds), out_dir)
  return result


def plot(summary, ds, k_top, n_seeds, out_dir):
  """Grouped bars, one group per kernel and one bar per task (± std): relative test error
  (approximation.png) and centred alignment (approximation_alignment.png)."""
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
    paths.append(plots.plot_bars(_base.out_path(f'{NAME}{suffix}.png', out_dir), groups,
                                 series, ylabel, title, logy=logy))
  return paths
