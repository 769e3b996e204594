"""The training cache of a reproduction: `training.train` with a memo per seed, in memory and on
disk (docs/method.md §16). A part that needs a model another part trained loads it."""
import hashlib
import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import memo
from ntk_attention import models as models_lib
from ntk_attention import training
from ntk_attention.study import store


def cached_train(cache: Optional[dict] = None, directory: Optional[str] = None) -> Callable:
  """`train` with a memo, one entry per seed (docs/method.md §16).

  A seed's training is determined by the model (name, width, outputs, parameterisation,
  options, and its `signature`: layer names, parameter shapes, trained leaves), the
  configuration, the dtype, the data (`x_train`, `y_train`, hashed) and its
  PRNG key; a call looks each of its seeds up under that key, trains only the missing ones
  (vmapped together: a seed trains to the same parameters alone or with others) and returns
  the stacked `TrainResult` in the order of `keys`. Runs with `perturb` (adversarial
  training) are not cached.

  Args:
    cache: a plain dict the caller owns (pass one to share it between several trainers).
    directory: also keep every entry as `directory/<sha1 of the key>.npz` (written atomically)
      and look there on a miss, so that another process or a later run loads instead of
      training.

  Returns:
    `fn(model, keys, x_train, y_train, config, dtype, perturb)` with `train`'s signature;
    `fn.cache` is the dict and `fn.stats` counts `trained` and `loaded` seeds and `hits`.
  """
  cache = {} if cache is None else cache
  stats = {'trained': 0, 'loaded': 0, 'hits': 0}

  def fn(model, keys, x_train, y_train, config=training.TrainConfig(), dtype=jnp.float32, perturb=None):
    if perturb is not None:
      stats['trained'] += len(keys)
      return training.train(model, keys, x_train, y_train, config, dtype, perturb)
    base = (model.name, model.width, model.out_dim, model.W_std, model.init_std, model.options,
            model.signature, tuple(config), np.dtype(dtype).str, memo.digest(x_train),
            memo.digest(y_train))
    entries = [base + (memo.digest(k),) for k in np.asarray(keys)]
    missing = []
    for i, key in enumerate(entries):
      if key in cache:
        stats['hits'] += 1
      elif directory and os.path.exists(_entry_path(directory, key)):
        cache[key] = _load_entry(_entry_path(directory, key), model, np.shape(x_train)[1], dtype)
        stats['loaded'] += 1
      else:
        missing.append(i)
    if missing:
      result = training.train(model, np.asarray(keys)[missing], x_train, y_train, config, dtype)
      stats['trained'] += len(missing)
      # Seeds sliced on the host (and stacked there by `_stack`): data movement, where slicing
      # device arrays is a program per leaf shape.
      host = jax.device_get(result)
      for j, i in enumerate(missing):
        cache[entries[i]] = jax.tree_util.tree_map(lambda a, j=j: a[j], host)
        if directory:
          _save_entry(_entry_path(directory, entries[i]), cache[entries[i]])
    return _stack([cache[k] for k in entries])

  fn.cache = cache
  fn.stats = stats
  return fn


def _stack(results) -> training.TrainResult:
  """Seeds' `TrainResult`s (numpy leaves) stacked: parameters stacked on the host and put on
  the device (no program to compile), the loss curves (numpy, as `training.train` returns
  them) on the host, so that a new number of epochs compiles nothing."""
  params = jax.tree_util.tree_map(lambda *a: jax.device_put(np.stack(a)),
                                  *[(r.init_params, r.params) for r in results])
  return training.TrainResult(*params, np.stack([np.asarray(r.losses) for r in results]))


def _entry_path(directory: str, key: tuple) -> str:
  return os.path.join(directory, hashlib.sha1(repr(key).encode()).hexdigest() + '.npz')


def _save_entry(path: str, result: training.TrainResult) -> None:
  """One seed's `TrainResult` as flat leaves `arr_0 …` (`store.write_npz`: atomic)."""
  leaves = jax.tree_util.tree_leaves((result.init_params, result.params, result.losses))
  store.write_npz(path, *leaves, compress=False)


def _load_entry(path: str, model: models_lib.Model, d: int, dtype) -> training.TrainResult:
  """Inverse of `_save_entry`; the tree structure is that of the model's parameters."""
  shapes = jax.eval_shape(lambda: models_lib.init_params(model, jax.random.PRNGKey(0), d, dtype))
  params_def = jax.tree_util.tree_structure(shapes)
  with np.load(path) as f:
    leaves = [f[f'arr_{i}'] for i in range(len(f.files))]     # numpy: `_stack` puts them
  k = params_def.num_leaves
  if len(leaves) != 2 * k + 1:
    raise ValueError(f'{path}: {len(leaves)} arrays, expected {2 * k + 1} for {model.name}; '
                     'delete the file (a stale training cache).')
  return training.TrainResult(jax.tree_util.tree_unflatten(params_def, leaves[:k]),
                     jax.tree_util.tree_unflatten(params_def, leaves[k:2 * k]),
                     np.asarray(leaves[-1]))


__all__ = ['cached_train']
