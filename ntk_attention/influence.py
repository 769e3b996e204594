"""Exact leave-one-out influence of training points under kernel ridge regression (docs/method.md §8),
and the malleability metrics that compare two score vectors (docs/method.md §10, step 4).

Kernel ridge regression (KRR) on a training kernel ``K`` (n, n) with targets ``Y`` (n, C):

    lam = ridge * mean(diag K)            A = K + lam I            alpha = A^-1 Y
    f(x_t) = K_t. A^-1 Y = K_t. alpha     (prediction at evaluation point t)

Leave-one-out identity. Let f_{-i} be the KRR fit without point i (same ``lam``). Giving point
i the target f_{-i}(x_i) leaves f_{-i} optimal for the full problem (its loss term is zero), so
f_{-i} = K A^-1 (Y - e_i r_i) with r_i = y_i - f_{-i}(x_i). Evaluating this at x_i and
solving for r_i gives the exact LOO residual r_i = alpha_i / (A^-1)_ii, and at any x_t

    f_{-i}(x_t) = f(x_t) + Delta_ti,      Delta_ti = -(K_t. A^-1)_i r_i      (vector over C).

Influence of i on t is the change of t's squared loss 1/2 ||f - y_t||^2 when i is removed,

    I_ti = (f(x_t) - y_t) . Delta_ti + 1/2 ||Delta_ti||^2               (positive: i helps t),

computed without materialising Delta as I_ti = -B_ti (e_t . r_i) + 1/2 B_ti^2 ||r_i||^2,
with B = K_eval A^-1 and e_t = f(x_t) - y_t. One Cholesky factorisation of A serves all of it
(`ridge.factor`, the solve shared with `kernels.ntk_predictor` and `alignment.krr_predict`).

Everything kernel-side in `loo_influence` is jax.numpy, so scores are differentiable w.r.t.
both kernels (an attack differentiates them through the kernel w.r.t. training inputs).
`loo_influence_lean` computes the same quantities in numpy float64 with the factor written
over the kernel (`ridge.factor_in_place`; docs/method.md §13): one n × n array instead of
four, for large n outside a trace. The metrics are numpy.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import compiles
from ntk_attention import ridge as ridge_lib

__all__ = [
    'Influence', 'loo_influence', 'loo_influence_lean', 'influence_scores', 'flip_rate', 'spearman', 'topk_overlap',
    'top_fraction',
]


class Influence(NamedTuple):
  """Exact LOO influence of every training point on every evaluation point.

  matrix: (n_eval, n_train) I_ti.
  scores: (n_train,) mean of ``matrix`` over evaluation points (docs/method.md §8 default [choice]).
  loo_residuals: (n_train, C) r_i = alpha_i / (A^-1)_ii = y_i - f_{-i}(x_i).
  delta: (n_eval, n_train, C) Delta_ti = f_{-i}(x_t) - f(x_t), or None unless requested.
  predictions: (n_eval, C) f(x_t) = K_t. A^-1 Y.
  """
  matrix: jnp.ndarray
  scores: jnp.ndarray
  loo_residuals: jnp.ndarray
  delta: Optional[jnp.ndarray]
  predictions: jnp.ndarray


def _is_traced(*xs):
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def _float_dtype(allow_float32):
  """float64 if jax can represent it; else float32 when allowed, else a clear error."""
  dtype = jax.dtypes.canonicalize_dtype(np.float64)
  if dtype != np.float64 and not allow_float32:
    raise ValueError(
        'loo_influence computes in float64, but jax x64 is disabled so float64 arrays would be '
        "silently cast to float32. Enable it with jax.config.update('jax_enable_x64', True), "
        'or pass allow_float32=True to accept float32 influence scores.')
  return dtype


def _as_2d_targets(y, name, rows):
  if y.ndim == 1:
    y = y[:, None]
  if y.ndim != 2 or y.shape[0] != rows:
    raise ValueError(f'{name} must have shape ({rows}, C) or ({rows},), got {tuple(y.shape)}.')
  return y


@functools.partial(compiles.jit, static_argnames=('return_delta',))
def _loo_influence(k_train, k_eval_train, y_train, y_eval, ridge, return_delta):
  # Symmetrise: the Cholesky reads one triangle only; this keeps the gradient symmetric.
  k_sym = 0.5 * (k_train + k_train.T)
  f = ridge_lib.factor(k_sym, ridge)                                     # A = K + λI = L Lᵀ
  alpha = ridge_lib.solve(f, y_train)                                    # (n, C)
  r = alpha / ridge_lib.inverse_diagonal(f)[:, None]                     # (n, C)
  b = ridge_lib.solve(f, k_eval_train.T).T                               # (t, n) = K_eval A^-1
  f_eval = k_eval_train @ alpha                                          # (t, C)
  e = f_eval - y_eval                                                    # (t, C)
  matrix = -b * (e @ r.T) + 0.5 * (b * b) * jnp.sum(r * r, axis=1)[None, :]
  scores = jnp.mean(matrix, axis=0)
  delta = -b[:, :, None] * r[None, :, :] if return_delta else None
  return Influence(matrix=matrix, scores=scores, loo_residuals=r, delta=delta,
                   predictions=f_eval)


def loo_influence(k_train, k_eval_train, y_train, y_eval, ridge=1e-3, allow_float32=False,
                  return_delta=False):
  """Exact leave-one-out influence of KRR (module docstring, docs/method.md §8), one Cholesky of A.

  Args:
    k_train: (n, n) symmetric PSD training kernel K. It is symmetrised, (K + K^T)/2.
    k_eval_train: (t, n) kernel between evaluation and training points.
    y_train: (n, C) targets, or (n,) treated as (n, 1).
    y_eval: (t, C) evaluation targets, or (t,) treated as (t, 1).
    ridge: lambda > 0; A = K + lambda * mean(diag K) * I.
    allow_float32: when jax x64 is disabled the computation cannot be float64 and a ValueError
      is raised, unless this is True, in which case it runs in float32. With x64 enabled,
      inputs of any float dtype are cast to float64 and this flag has no effect.
    return_delta: also return Delta (t, n, C) — memory t*n*C floats; None otherwise.

  Returns:
    ``Influence`` (matrix (t, n), scores (n,), loo_residuals (n, C), delta, predictions (t, C)).

  Raises:
    ValueError on bad shapes, non-positive ridge or mean(diag K), non-finite inputs, or when A
    is numerically not positive definite (Cholesky gives NaN). Value checks run only on concrete
    arrays; under jax transformations (grad/jit/vmap) only the shape checks run.
  """
  dtype = _float_dtype(allow_float32)
  k_train = jnp.asarray(k_train, dtype)
  k_eval_train = jnp.asarray(k_eval_train, dtype)
  y_train = jnp.asarray(y_train, dtype)
  y_eval = jnp.asarray(y_eval, dtype)
  k_train, k_eval_train, y_train, y_eval = _check_inputs(k_train, k_eval_train, y_train, y_eval)
  concrete = not _is_traced(k_train, k_eval_train, y_train, y_eval, ridge)
  if concrete:
    _check_values(k_train, k_eval_train, y_train, y_eval, ridge, jnp)
  out = _loo_influence(k_train, k_eval_train, y_train, y_eval, jnp.asarray(ridge, dtype),
                       return_delta=bool(return_delta))
  if concrete and not (bool(jnp.all(jnp.isfinite(out.matrix)))
                       and bool(jnp.all(jnp.isfinite(out.loo_residuals)))):
    raise ValueError('Influence is not finite: K + lambda*mean(diag K)*I is numerically not '
                     'positive definite (Cholesky failed). Check that k_train is PSD or raise '
                     'ridge.')
  return out


def _check_inputs(k_train, k_eval_train, y_train, y_eval):
  """Shapes: `(n, n)`, `(t, n)`, `(n, C)`, `(t, C)` (1-D targets become one column)."""
  if k_train.ndim != 2 or k_train.shape[0] != k_train.shape[1] or k_train.shape[0] < 1:
    raise ValueError(f'k_train must be a non-empty square (n, n) matrix, got {k_train.shape}.')
  n = k_train.shape[0]
  if k_eval_train.ndim != 2 or k_eval_train.shape[1] != n or k_eval_train.shape[0] < 1:
    raise ValueError(f'k_eval_train must have shape (t, {n}) with t >= 1, '
                     f'got {k_eval_train.shape}.')
  t = k_eval_train.shape[0]
  y_train = _as_2d_targets(y_train, 'y_train', n)
  y_eval = _as_2d_targets(y_eval, 'y_eval', t)
  if y_train.shape[1] != y_eval.shape[1]:
    raise ValueError(f'y_train and y_eval must have the same number of outputs C, got '
                     f'{y_train.shape[1]} and {y_eval.shape[1]}.')
  return k_train, k_eval_train, y_train, y_eval


def _check_values(k_train, k_eval_train, y_train, y_eval, ridge, xp):
  """Ridge > 0, finite inputs, mean(diag K) > 0 (`xp`: jax.numpy or numpy)."""
  if not float(ridge) > 0:
    raise ValueError(f'ridge must be > 0, got {ridge}.')
  for name, x in (('k_train', k_train), ('k_eval_train', k_eval_train),
                  ('y_train', y_train), ('y_eval', y_eval)):
    if not bool(xp.all(xp.isfinite(x))):
      raise ValueError(f'{name} contains NaN or inf.')
  if not float(xp.mean(xp.diagonal(k_train))) > 0:
    raise ValueError('mean(diag k_train) must be > 0 for the ridge lambda*mean(diag K).')


def loo_influence_lean(k_train, k_eval_train, y_train, y_eval, ridge=1e-3,
                       overwrite: bool = False) -> Influence:
  """`loo_influence` (same formulas, same `Influence` without `delta`) in numpy float64, with
  one n × n array: `K` is symmetrised and factored in place, `A⁻¹Y` and `A⁻¹K_etᵀ` come from
  two triangular solves, and `diag(A⁻¹)` from `L⁻¹` written over `L`
  (`ridge.factor_in_place`, `solve_host`, `inverse_diagonal_in_place`; docs/method.md §13).

  Args:
    k_train: (n, n) symmetric PSD training kernel K (read as (K + Kᵀ)/2).
    k_eval_train: (t, n); y_train: (n, C) or (n,); y_eval: (t, C) or (t,).
    ridge: λ > 0 relative to mean(diag K), as in `loo_influence`.
    overwrite: True lets the function destroy `k_train` when it is a C-contiguous float64
      numpy array (no copy: the caller must not read it afterwards); otherwise it is copied
      (n² more doubles).

  Returns:
    `Influence(matrix (t, n), scores (n,), loo_residuals (n, C), None, predictions (t, C))`
    as numpy float64; equal to `loo_influence` to rounding (tested to 1e-12).

  Raises:
    ValueError as `loo_influence` does: shapes, ridge and non-finite inputs before `k_train`
    is touched; A not positive definite once the factorisation fails (with `overwrite`,
    `k_train` is then partly overwritten).
  """
  k_train = k_train if isinstance(k_train, np.ndarray) else np.asarray(k_train, np.float64)
  k_eval_train = np.asarray(k_eval_train, np.float64)
  y_train, y_eval = np.asarray(y_train, np.float64), np.asarray(y_eval, np.float64)
  k_train, k_eval_train, y_train, y_eval = _check_inputs(k_train, k_eval_train, y_train, y_eval)
  _check_values(k_train, k_eval_train, y_train, y_eval, ridge, np)
  a = (k_train if overwrite and ridge_lib._writable_f64(k_train)
       else np.array(k_train, np.float64, order='C'))
  f = ridge_lib.factor_in_place(a, ridge)                               # A = L Lᵀ, over K
  alpha = ridge_lib.solve_host(f, y_train)                              # (n, C)
  b = ridge_lib.solve_host(f, k_eval_train.T).T                         # (t, n) = K_eval A⁻¹
  f_eval = k_eval_train @ alpha                                         # (t, C)
  e = f_eval - y_eval                                                   # (t, C)
  r = alpha / ridge_lib.inverse_diagonal_in_place(f)[:, None]          # L is gone after this
  matrix = -b * (e @ r.T) + 0.5 * (b * b) * np.sum(r * r, axis=1)[None, :]
  if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(r))):
    raise ValueError('Influence is not finite: K + lambda*mean(diag K)*I is numerically not '
                     'positive definite. Check that k_train is PSD or raise ridge.')
  return Influence(matrix=matrix, scores=np.mean(matrix, axis=0), loo_residuals=r, delta=None,
                   predictions=f_eval)


def influence_scores(k_train, k_eval_train, y_train, y_eval, ridge=1e-3, allow_float32=False):
  """(n_train,) mean over evaluation points of I_ti: ``loo_influence(...).scores``."""
  return loo_influence(k_train, k_eval_train, y_train, y_eval, ridge=ridge,
                       allow_float32=allow_float32).scores


# --- malleability metrics (docs/method.md §10 step 4), numpy -------------------------------------------

def _finite_1d(x, name):
  x = np.asarray(x, np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ValueError(f'{name} must be a non-empty 1-D array, got shape {x.shape}.')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{name} contains NaN or inf.')
  return x


def _pair(a, b):
  a, b = _finite_1d(a, 'a'), _finite_1d(b, 'b')
  if a.shape != b.shape:
    raise ValueError(f'score vectors must have the same shape, got {a.shape} and {b.shape}.')
  return a, b


def flip_rate(before, after, subset=None):
  """Fraction of ``subset`` with sign(after) != sign(before).

  sign takes values -1, 0, +1 and 0 counts as its own sign: 0 -> +x or -x -> 0 is a flip,
  0 -> 0 is not. ``subset``: integer indices or a boolean mask (default: all points);
  duplicate indices count once each as given.
  """
  before, after = _pair(before, after)
  idx = np.arange(before.size) if subset is None else np.asarray(subset)
  if idx.dtype == bool:
    if idx.shape != before.shape:
      raise ValueError(f'boolean subset must have shape {before.shape}, got {idx.shape}.')
    idx = np.flatnonzero(idx)
  if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError('subset must be a non-empty 1-D array of integer indices or a bool mask.')
  if idx.min() < -before.size or idx.max() >= before.size:
    raise ValueError(f'subset indices out of range for {before.size} scores.')
  return float(np.mean(np.sign(before[idx]) != np.sign(after[idx])))


def _average_ranks(x):
  """Ranks 1..n, tied values getting the average of the ranks they span."""
  order = np.argsort(x, kind='mergesort')
  xs = x[order]
  new_group = np.concatenate([[True], xs[1:] != xs[:-1]])
  group = np.cumsum(new_group) - 1                       # group id of each sorted entry
  starts = np.concatenate([np.flatnonzero(new_group), [x.size]])
  avg = 0.5 * (starts[:-1] + 1 + starts[1:])             # mean of ranks start+1 .. end
  ranks = np.empty(x.size)
  ranks[order] = avg[group]
  return ranks


def spearman(a, b):
  """Spearman rank correlation: Pearson correlation of average ranks (ties -> mean rank).

  Raises ValueError when it is undefined (fewer than 2 points or a constant vector) instead
  of returning NaN.
  """
  a, b = _pair(a, b)
  ra, rb = _average_ranks(a), _average_ranks(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  den = math.sqrt(float(ra @ ra) * float(rb @ rb))
  if a.size < 2 or den == 0.0:
    raise ValueError('spearman is undefined for fewer than 2 points or a constant vector.')
  return float(ra @ rb) / den


def _top_by_abs(x, k):
  # Decreasing |x|; stable sort, so ties go to the lower index.
  return np.argsort(-np.abs(x), kind='stable')[:k]


def topk_overlap(a, b, k):
  """|top-k(a) ∩ top-k(b)| / k, top-k by absolute value |I| (ties: lower index first)."""
  a, b = _pair(a, b)
  if int(k) != k or not 1 <= k <= a.size:
    raise ValueError(f'k must be an integer in [1, {a.size}], got {k}.')
  k = int(k)
  return len(np.intersect1d(_top_by_abs(a, k), _top_by_abs(b, k))) / k


def top_fraction(scores, tau):
  """Indices of the top-tau fraction of points by |score|, in decreasing |score| order.

  k = round(tau * n) with halves rounded up (nearest count to the fraction; ceil would turn
  0.1 * 30 = 3.0000000000000004 into 4). Ties: lower index first.
  Raises ValueError if tau is not in (0, 1] or tau * n < 1 (n too small for tau).
  """
  scores = _finite_1d(scores, 'scores')
  n = scores.size
  if not 0 < tau <= 1:
    raise ValueError(f'tau must be in (0, 1], got {tau}.')
  if tau * n < 1 - 1e-9:
    raise ValueError(f'tau * n = {tau * n:g} < 1: {n} points are too few for tau={tau}.')
  k = max(1, min(n, int(math.floor(tau * n + 0.5))))
  return _top_by_abs(scores, k)
