"""Brute-force references the tests compare the library against, and the one way a test reads
every number of a results file (not part of the package).

tests/ is on sys.path under pytest's default (prepend) import mode, so a test imports these
as `from oracles import loo_predictions_bruteforce`.
"""
import os

import numpy as np


def loo_predictions_bruteforce(k_train, k_eval_train, y_train, ridge=1e-3):
  """Refit KRR without each training point, in numpy float64.

  For each i: f_{-i}(x_t) = K_{t,-i} (K_{-i,-i} + lam I)^-1 Y_{-i}, with K symmetrised,
  (K + K^T)/2, and lam = ridge * mean(diag K) of the FULL K, as in the closed form
  (`influence.loo_influence`). Returns (n_train, n_eval, C); a 1-D y_train is treated as
  (n, 1). Pass k_eval_train = k_train to get f_{-i}(x_i) at [i, i].
  """
  k = np.asarray(k_train, np.float64)
  k = 0.5 * (k + k.T)
  ke = np.asarray(k_eval_train, np.float64)
  y = np.asarray(y_train, np.float64)
  if y.ndim == 1:
    y = y[:, None]
  n = k.shape[0]
  lam = ridge * np.mean(np.diag(k))
  out = np.empty((n, ke.shape[0], y.shape[1]))
  for i in range(n):
    keep = np.arange(n) != i
    a = k[np.ix_(keep, keep)] + lam * np.eye(n - 1)
    out[i] = ke[:, keep] @ np.linalg.solve(a, y[keep])
  return out


def json_numbers(obj, skip=('provenance', 'seconds', 'wall_time_s'), path='') -> dict:
  """Every number of a JSON document by its path ('/summary[0]/flip_rate_mean': 0.3), the
  keys in `skip` (provenance, timings) left out."""
  if isinstance(obj, dict):
    return {k: v for key, val in obj.items() if key not in skip
            for k, v in json_numbers(val, skip, f'{path}/{key}').items()}
  if isinstance(obj, list):
    return {k: v for i, val in enumerate(obj)
            for k, v in json_numbers(val, skip, f'{path}[{i}]').items()}
  if isinstance(obj, (int, float)) and not isinstance(obj, bool):
    return {path: obj}
  return {}


def devices_env(n: int, **extra) -> dict:
  """This process's environment (the tests' XLA flags and compilation cache kept) with XLA:CPU
  showing `n` host devices. Replacing XLA_FLAGS instead made the subprocess compile at XLA's
  default optimisation level: test_sharding's run took 21 s from a cold cache, not 15 s."""
  env = dict(os.environ, **extra)
  flags = env.get('XLA_FLAGS', '')
  assert 'xla_force_host_platform_device_count' not in flags, flags
  env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={n}'.strip()
  return env


def user_env(**extra) -> dict:
  """The environment for a subprocess that must run as a user's would: the XLA flags and the
  JAX compilation cache settings the user had before tests/conftest.py set the tests' own
  (the peak memory of a real run: loading programs from the tests' cache instead of compiling
  them took 0.1 GB off a measured peak)."""
  env = dict(os.environ, **extra)
  env['XLA_FLAGS'] = os.environ.get('NTK_ATTENTION_USER_XLA_FLAGS', '')
  for name in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'):
    user = os.environ.get('NTK_ATTENTION_USER_' + name, '')
    if user:
      env[name] = user
    else:
      env.pop(name, None)
  return env
