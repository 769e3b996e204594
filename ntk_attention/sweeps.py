"""Width sweeps: distance of trained finite-width models to their infinite-width NTK.

A cell is one (model, width, seed). All seeds of a (model, width) train together in one
vmapped program (`training.train`); each seed then yields one record (docs/method.md §7), on the
fixed evaluation set laid out with the training set as one sequence `[train; eval]`:

  kernel_distance_init  = ‖Θ_m(0) − Θ∞‖_F / ‖Θ∞‖_F     (full (n+t)×(n+t) kernel)
  kernel_distance_final = ‖Θ_m(T) − Θ∞‖_F / ‖Θ∞‖_F
  kernel_movement       = ‖Θ_m(T) − Θ_m(0)‖_F / ‖Θ_m(0)‖_F
  function_distance     = ‖f_m(X_eval) − f∞(X_eval)‖_F,   function_distance_rel = … / ‖f∞‖_F

`comparison` says which f∞ was used:
  'ridge_regression': the paper's setting (Adam, and/or cross-entropy) has no exact
      infinite-width counterpart; f∞ is NTK kernel ridge regression on the same targets,
      ridge λ·mean(diag Θ∞), from zero initial function.
  'gradient_flow': `optimizer='sgd'` with MSE: f∞ is `gradient_descent_mse` at time
      lr·steps from the network's own f_m(0), the textbook kernel-regime check (exact
      when `weight_decay=0`; otherwise the decay is ignored by f∞, and the record says so).

The library does no I/O: records go to `on_record` as they are computed, finished cells
are named by `done` (for resume), and `on_progress(n_cells)` reports work done.
"""
import time
from typing import Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import compiles
from ntk_attention import data as data_lib
from ntk_attention import kernels
from ntk_attention import models as models_lib
from ntk_attention import training

KEY_FIELDS = ('model', 'width', 'seed')
METRICS = ('kernel_distance_init', 'kernel_distance_final', 'kernel_movement',
           'function_distance', 'function_distance_rel', 'train_accuracy', 'test_accuracy',
           'krr_test_accuracy')


def comparison(config: training.TrainConfig, num_outputs: int) -> str:
  """Which infinite-width predictor a run is compared with (see module docstring)."""
  if config.optimizer == 'sgd' and training.loss_kind(config, num_outputs) == 'mse':
    return 'gradient_flow'
  return 'ridge_regression'


def steps_per_run(config: training.TrainConfig, n_train: int) -> int:
  """Optimizer steps of a run: epochs × ⌊n / B⌋ (remainder dropped, see training)."""
  return config.epochs * (n_train // min(config.batch_size, n_train))


def validate_sweep(model_names, widths: Sequence[int], seeds: Sequence[int],
                   config: training.TrainConfig) -> None:
  """ValueError before any work: unknown model, bad width, no seeds, bad training config.
  `model_names`: names or a `{name: factory}` mapping (`models.factories`)."""
  models_lib.factories(model_names)
  if not widths:
    raise ValueError('no widths given.')
  for w in widths:
    if isinstance(w, bool) or int(w) != w or w < 1:
      raise ValueError(f'widths must be positive integers, got {w!r}.')
  if not seeds:
    raise ValueError('no seeds given.')
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'seeds must be distinct, got {list(seeds)}.')
  training.validate(config)


def ntk_distance_sweep(ds: data_lib.Dataset,
                       model_names,
                       widths: Sequence[int],
                       seeds: Sequence[int],
                       config: training.TrainConfig = training.TrainConfig(),
                       on_record: Callable[[dict], None] = lambda r: None,
                       done: Iterable[tuple] = (),
                       on_progress: Callable[[int], None] = lambda n: None,
                       ridge: float = 1e-3,
                       model_options: Optional[dict] = None,
                       base_seed: int = 0,
                       train_fn: Callable = training.train) -> list:
  """Runs every unfinished (model, width, seed) cell; returns the new records.

  Args:
    ds: the dataset; the evaluation set is `ds.x_test`.
    model_names, widths, seeds: the grid; seed s uses `PRNGKey(base_seed + s)`. Models are
      built-in names, `'module:function'` entries or a mapping `{name: factory}` with
      `factory(width, out_dim) -> models.Model` (`models.factories`); records carry the name.
    config: training settings.
    on_record: called with each record as soon as it exists.
    done: keys `(model, width, seed)` already finished (skipped).
    on_progress: called with the number of cells just finished.
    ridge: λ of the ridge-regression comparison.
    model_options: per-model-name dict of `models.build` options (built-in names).
    train_fn: `training.train` or any function with its signature (e.g. the study's `study.cache.cached_train`, shared between sweeps).
  """
  validate_sweep(model_names, widths, seeds, config)
  model_options = model_options or {}
  factories = models_lib.factories(model_names, model_options)
  done = set(done)
  y_train = jnp.asarray(data_lib.targets(ds.y_train, ds.num_classes))
  out_dim = y_train.shape[1]
  mode = comparison(config, out_dim)
  x_train64 = jnp.asarray(ds.x_train, jnp.float64)
  x_test64 = jnp.asarray(ds.x_test, jnp.float64)
  n = len(ds.x_train)
  new = []
  for name, factory in factories.items():
    todo_by_width = {w: [s for s in seeds if (name, int(w), int(s)) not in done] for w in widths}
    if not any(todo_by_width.values()):
      continue
    options = dict(model_options.get(name, {}))
    # The model's own kernel_fn (NT's kernels do not depend on the width).
    theta_inf = kernels.analytic_kernel(models_lib.instantiate(name, factory, 1, out_dim),
                                        x_train64, x_test64)
    blocks_inf = kernels.split_blocks(theta_inf, n)
    f_ridge = kernels.ntk_predictor(blocks_inf, y_train, ridge=ridge)
    krr_accuracy = float(training.accuracy(f_ridge, ds.y_test))
    for width in widths:
      todo = todo_by_width[width]
      if not todo:
        continue
      t0 = time.time()
      model = models_lib.instantiate(name, factory, int(width), out_dim)
      result = train_fn(model, training.seed_keys(todo, base_seed), ds.x_train, y_train, config)
      records = _evaluate(model, result, ds, y_train, theta_inf, blocks_inf, f_ridge,
                          config, mode, ridge)
      seconds = (time.time() - t0) / len(todo)
      for seed, rec in zip(todo, records):
        undertrained = training.warn_if_undertrained(
            rec['test_accuracy'], ds.num_classes, f'{name} width {width} seed {seed}')
        rec.update(model=name, width=int(width), seed=int(seed), wall_time_s=seconds,
                   krr_test_accuracy=krr_accuracy, undertrained=undertrained,
                   init_std=model.init_std,
                   comparison=mode, dataset=ds.name, n_train=n, n_test=len(ds.x_test),
                   optimizer=config.optimizer, loss=training.loss_kind(config, out_dim),
                   lr=config.lr, epochs=config.epochs, batch_size=config.batch_size,
                   weight_decay=config.weight_decay, options=options)
        on_record(rec)
        new.append(rec)
      on_progress(len(todo))
  return new


def _kernels_and_outputs(model, method, p0, p, x_train, x_test):
  """`(Θ₀, Θ_T, f₀(x_train), f₀(x_test), f_T(x_train), f_T(x_test))` of one seed: empirical
  NTKs `(N, N)` over `[x_train; x_test]` at initial and trained parameters, and outputs."""
  k0 = kernels.empirical_ntk(model, p0, x_train, x_test, method)
  kt = kernels.empirical_ntk(model, p, x_train, x_test, method)
  f0_train, f0_test = training.outputs(model, p0, x_train, x_test)
  f_train, f_test = training.outputs(model, p, x_train, x_test)
  return k0, kt, f0_train, f0_test, f_train, f_test


# The data are arguments, not closed-over constants: XLA would otherwise constant-fold the
# data-only products (the Gram matrix x xᵀ of relu_mlp) at compile time, single-threaded, ~20 s
# at N = 1500, and recompile for every call.
_kernels_and_outputs_seeds = compiles.jit(
    jax.vmap(_kernels_and_outputs, (None, None, 0, 0, None, None)), static_argnums=(0, 1))


def _evaluate(model, result, ds, y_train, theta_inf, blocks_inf, f_ridge, config, mode, ridge):
  """Per-seed metrics of a vmapped training result."""
  x_train = jnp.asarray(ds.x_train, jnp.float32)
  x_test = jnp.asarray(ds.x_test, jnp.float32)
  method = kernels.default_method(model)
  n = len(ds.x_train)

  if method == 'closed_form':
    outs = _kernels_and_outputs_seeds(model, method, result.init_params, result.params,
                                      x_train, x_test)
  else:   # generic NT methods are memory-heavy: one seed at a time
    seeds = range(result.losses.shape[0])
    outs = [_kernels_and_outputs(model, method, training.unstack(result.init_params, i),
                                 training.unstack(result.params, i), x_train, x_test)
            for i in seeds]
    outs = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)
  k0s, kts, f0_trains, f0_tests, f_trains, f_tests = outs
  records = []
  for i in range(k0s.shape[0]):
    k0, kt = k0s[i].astype(jnp.float64), kts[i].astype(jnp.float64)
    if mode == 'gradient_flow':
      f_inf = kernels.ntk_predictor(blocks_inf, y_train, ridge=0.0,
                                    t=steps_per_run(config, n), learning_rate=config.lr,
                                    f0_train=f0_trains[i], f0_eval=f0_tests[i])
    else:
      f_inf = f_ridge
    f_test = f_tests[i].astype(jnp.float64)
    rec = {
        'kernel_distance_init': kernels.relative_distance(k0, theta_inf),
        'kernel_distance_final': kernels.relative_distance(kt, theta_inf),
        'kernel_movement': kernels.relative_distance(kt, k0),
        'function_distance': jnp.linalg.norm((f_test - f_inf).ravel()),
        'function_distance_rel': kernels.relative_distance(f_test, f_inf),
        'train_accuracy': training.accuracy(f_trains[i], ds.y_train),
        'test_accuracy': training.accuracy(f_tests[i], ds.y_test),
        'final_loss': result.losses[i, -1],
    }
    rec = {k: float(v) for k, v in rec.items()}
    bad = [k for k, v in rec.items() if not np.isfinite(v)]
    if bad:
      raise FloatingPointError(f'non-finite metrics {bad} for {model.name} width {model.width}.')
    if mode == 'gradient_flow' and config.weight_decay > 0:
      rec['note'] = 'weight_decay > 0 is not modelled by the gradient-flow predictor'
    records.append(rec)
  return records


__all__ = ['KEY_FIELDS', 'METRICS', 'comparison', 'steps_per_run', 'validate_sweep',
           'ntk_distance_sweep']
