"""Analytic (infinite-width) against empirical (finite-width) NTKs at initialisation
(docs/method.md §4, §7); `configs.Kernels`, scripts/kernels.py.

For each model, width and seed: the empirical NTK Θ_m at initialisation (float32, traced over
the outputs; params `models.init_params(model, PRNGKey(data.seed + s))`), over the one sequence
[x_train; x_test] with the training set as context, and its relative Frobenius distance
‖Θ_m − Θ∞‖_F / ‖Θ∞‖_F to the analytic NTK Θ∞ (float64), on the full (N, N) matrix and on the
train block. Seeds are vmapped for the closed form and looped for NT's generic methods (their
memory grows with the number of parameters). Each row of the summary also gives the distance
of the seed-averaged Θ_m (Monte Carlo mean), which separates the 1/√m fluctuation from any bias.

Writes kernels_records.csv (one row per model × width × seed), kernels.csv and kernels.json
(mean and std over seeds), kernels_distance.png; `save_kernels`=FILE.npz (relative to the
working directory) the train-block analytic NTK per model (key `analytic_<model>`) and the
seed-0 empirical train block per model × width (key `empirical_<model>_<width>`).
"""
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import kernels
from ntk_attention import models
from ntk_attention import stats
from ntk_attention.study import configs
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'kernels'


def check(config: configs.Kernels) -> dict:
  """Validates `config` before any data is loaded; returns {model: empirical NTK method}."""
  _base.check_data(config.data)
  names = _base.check_models(config.models)
  _base.check_ints(config.widths, 'widths')
  if config.seeds < 1:
    raise ValueError(f'--seeds must be >= 1, got {config.seeds}.')
  if config.method != 'auto' and config.method not in kernels.METHODS:
    raise ValueError(f"--method must be 'auto' or one of {kernels.METHODS}, "
                     f'got {config.method!r}.')
  if config.out_dim < 0:
    raise ValueError(f'--out_dim must be >= 0 (0 = number of classes), got {config.out_dim}.')
  methods = {}
  for name, factory in models.factories(names).items():
    model = models.instantiate(name, factory, 1, 1)
    methods[name] = kernels.default_method(model) if config.method == 'auto' else config.method
  save = config.save_kernels
  if save:
    if not save.endswith('.npz'):
      raise ValueError(f'--save_kernels must name a .npz file, got {save!r}.')
    if os.path.isdir(save):
      raise ValueError(f'--save_kernels is a folder: {save!r}.')
  _base.check_options(config.options)
  return methods


def data_needs(config: configs.Kernels) -> list:
  return _base.data_needs(config.data)


def _distance(a, b):
  """Relative Frobenius distance ‖a − b‖/‖b‖ as a float; a non-finite value raises."""
  v = float(kernels.relative_distance(a, b))
  if not np.isfinite(v):
    raise FloatingPointError(f'relative kernel distance is {v}.')
  return v


def run(config: configs.Kernels, out_dir: str, context=None, resume: bool = False) -> list:
  """The width sweep of `config` into `out_dir`; returns the summary rows (kernels.csv).
  `resume` is unused (nothing is stored per cell); `context` only reports progress."""
  del resume
  methods = check(config)
  names = _base.check_models(config.models)
  widths = sorted(set(config.widths))
  options = config.options.per_model()
  factories = models.factories(names, {n: options.get(n, {}) for n in names})
  ds = _base.load_data(config.data)
  n, d = ds.x_train.shape
  seeds, base_seed = config.seeds, config.data.seed
  out_dim = config.out_dim or (1 if ds.is_binary else ds.num_classes)
  x_tr32, x_te32 = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.x_test, jnp.float32)
  x_tr64, x_te64 = jnp.asarray(ds.x_train, jnp.float64), jnp.asarray(ds.x_test, jnp.float64)
  keys = jnp.stack([jax.random.PRNGKey(base_seed + s) for s in range(seeds)])
  logging.info('models %s, widths %s, %d seeds, out_dim %d, N = %d + %d tokens', names, widths,
               seeds, out_dim, n, len(ds.x_test))

  progress = _base.progress(NAME, len(names) * len(widths), context)
  records, mc_rows, saved = [], {}, {}
  t_start = time.time()
  for name in names:
    method = methods[name]
    # Θ∞ does not depend on the width (nor on out_dim: the readout is frozen with a² = 1).
    theta = np.asarray(kernels.analytic_kernel(
        models.instantiate(name, factories[name], widths[0], out_dim), x_tr64, x_te64, 'ntk'),
        np.float64)
    saved[f'analytic_{name}'] = theta[:n, :n]
    for width in widths:
      t0 = time.time()
      model = models.instantiate(name, factories[name], width, out_dim)
      if method == 'closed_form':
        _, draws = kernels.monte_carlo_ntk(model, keys, x_tr32, x_te32, method, jnp.float32)
      else:  # Jacobian-based: one seed at a time, their memory grows with the parameter count.
        draws = jnp.stack([
            kernels.empirical_ntk(model, models.init_params(model, key, d, jnp.float32),
                                  x_tr32, x_te32, method) for key in keys])
      draws = np.asarray(draws, np.float64)
      for s in range(seeds):
        records.append({'model': name, 'width': width, 'seed': base_seed + s, 'method': method,
                        'distance_full': _distance(draws[s], theta),
                        'distance_train': _distance(draws[s][:n, :n], theta[:n, :n])})
      mean = draws.mean(axis=0)
      mc_rows[name, width] = {'mc_mean_distance_full': _distance(mean, theta),
                              'mc_mean_distance_train': _distance(mean[:n, :n], theta[:n, :n]),
                              'seconds': time.time() - t0}
      saved[f'empirical_{name}_{width}'] = draws[0][:n, :n].astype(np.float32)
      progress.update()
  elapsed = time.time() - t_start

  summary = stats.summarize(records, ['model', 'width', 'method'],
                                ['distance_full', 'distance_train'])
  for row in summary:
    row.update(mc_rows[row['model'], row['width']])
  paths = [os.path.join(out_dir, f) for f in ('kernels_records.csv', 'kernels.csv',
                                               'kernels.json', 'kernels_distance.png')]
  store_lib.write_csv(paths[0], records)
  store_lib.write_csv(paths[1], summary)
  store_lib.write_json(paths[2], {
      'comparison': 'empirical NTK at initialisation (float32, traced over outputs) vs analytic '
                    'NTK (float64); relative Frobenius distance ||emp - analytic|| / ||analytic||, '
                    'on the full [train; test] matrix and on the train block',
      'n_train': n, 'n_test': len(ds.x_test), 'd': d, 'out_dim': out_dim,
      'seeds': seeds, 'methods': methods, 'seconds': elapsed,
      'summary': summary, 'records': records, 'provenance': _base.provenance(config)})
  plot(paths[3], summary, names, widths, seeds, ds.name, n + len(ds.x_test))
  if config.save_kernels:
    store_lib.write_npz(config.save_kernels, widths=np.array(widths), **saved)
    paths.append(config.save_kernels)
  for row in summary:
    logging.info('%-12s m=%-6d full %.4g ± %.2g   train %.4g ± %.2g', row['model'], row['width'],
                 row['distance_full_mean'], row['distance_full_std'],
                 row['distance_train_mean'], row['distance_train_std'])
  for p in paths:
    logging.info('wrote %s', p)
  return summary


def plot(path, summary, names, widths, seeds, dataset, n_total):
  """kernels_distance.png: the full-matrix distance against width (log-log), one line per
  model (band ± std over seeds), and a 1/√m reference through the first model's first width."""
  from ntk_attention.study import report
  from ntk_attention.study.report import plots
  series = {}
  for name in names:
    rows = [r for r in summary if r['model'] == name]
    series[report.model_name(name)] = (
        np.array([r['width'] for r in rows], np.float64),
        np.array([r['distance_full_mean'] for r in rows]),
        np.array([r['distance_full_std'] for r in rows]) if seeds > 1 else None)
  w = np.array(widths, np.float64)
  first = series[report.model_name(names[0])][1][0]
  plots.plot_lines(path, series, 'width m',
                   r'$\Vert\Theta_m - \Theta_\infty\Vert_F \,/\, \Vert\Theta_\infty\Vert_F$',
                   f'{dataset}: empirical NTK at init vs analytic, [train; test] '
                   f'(N={n_total}), {seeds} seed(s), band ± std',
                   logx=True, logy=True,
                   references={f'reference ∝ 1/√m (through {report.model_name(names[0])} '
                               f'at m={widths[0]})': (w, first * np.sqrt(w[0] / w))})
