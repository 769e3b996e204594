"""Analytic and empirical kernels of a model, their blocks, and distances.

A dataset with `n` training and `t` evaluation points is one sequence `[train; eval]` of
`N = n + t` tokens with the training points as context (docs/method.md §2), so every kernel here is
first an `(N, N)` matrix and then sliced into `Blocks(train (n, n), eval_train (t, n),
eval (t, t))`.

- `analytic_kernel`: NT's infinite-width `kernel_fn` (`'ntk'` or `'nngp'`); for the
  models of `models.py` the NTK is the first-layer-only NTK (the readout is frozen).
- `empirical_ntk`: the finite-width NTK `J Jᵀ` at given parameters, traced (averaged)
  over outputs. `method='closed_form'` (the default) uses
  `Θ_m = (W_std²/d) (Z Zᵀ) ⊙ (S Sᵀ)/m`, `S = 1[h > 0]`, on the features `Z` of a
  parameter-free prefix, `O(N²(d + m))`, and the per-parameter-group closed form of
  `qkv_ntk` for the trainable QKV prefix, `O(N²(d + m)·C)`; `'jacobian_contraction'` and
  `'ntk_vector_products'` use NT's generic `empirical_ntk_fn` for any composition.

Each takes the study's `models.Model`, a user's stax triple `(init_fn, apply_fn,
kernel_fn)`, or the one function it needs (`kernel_fn`, `apply_fn`); see `resolve`.
"""
import collections
import functools
import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import _nt
from ntk_attention import layers
from ntk_attention import models as models_lib
from ntk_attention import ntk_closed_form
from ntk_attention import qkv_ntk

METHODS = ('closed_form', 'jacobian_contraction', 'ntk_vector_products')


class Blocks(NamedTuple):
  """Kernel blocks: `train (n, n)`, `eval_train (t, n)`, `eval (t, t)`."""
  train: jnp.ndarray
  eval_train: jnp.ndarray
  eval: jnp.ndarray


def split_blocks(k, n_train: int) -> Blocks:
  """`(N, N)` kernel over `[train; eval]` -> `Blocks`."""
  return Blocks(k[:n_train, :n_train], k[n_train:, :n_train], k[n_train:, n_train:])


_PARTS = ('init_fn', 'apply_fn', 'kernel_fn')
KernelPair = collections.namedtuple('Kernel', ('nngp', 'ntk'))


def resolve(model, part: str):
  """The `part` (`'init_fn'`, `'apply_fn'` or `'kernel_fn'`) of `model`: a `models.Model`, a
  stax triple `(init_fn, apply_fn, kernel_fn)`, or that function itself."""
  if isinstance(model, models_lib.Model):
    return getattr(model, part)
  if isinstance(model, tuple):
    if len(model) != 3 or not all(callable(f) for f in model):
      raise TypeError('expected a stax triple (init_fn, apply_fn, kernel_fn), got a '
                      f'{type(model).__name__} of {len(model)}.')
    return model[_PARTS.index(part)]
  if callable(model):
    if part == 'init_fn':
      raise TypeError('drawing parameters needs an init_fn: pass a models.Model or a '
                      'stax triple (init_fn, apply_fn, kernel_fn), not a bare function.')
    return model
  raise TypeError(f'expected a models.Model, a stax triple or a {part}, got {model!r}.')


def token_block(k, rows=slice(None), cols=slice(None)):
  """An NT kernel over one sequence -> the token block `[rows, cols]` of its `(N1, N2)` axes.

  `k`: an array `(1, 1, N1, N2, ...)`, a namedtuple of such arrays (tuple `get`), or NT's
  `Kernel` (`get=None`, read as `KernelPair(nngp, ntk)`). `rows`, `cols`: slices. Returns
  the same kind with arrays `(n1, n2, ...)`.
  """
  if isinstance(k, _nt.Kernel):
    k = KernelPair(k.nngp, k.ntk)
  if isinstance(k, tuple):
    return type(k)(*(None if v is None else token_block(v, rows, cols) for v in k))
  return k[0, 0][rows][:, cols]


_GETS = ('nngp', 'ntk')


def _check_get(get):
  """ValueError (one line) unless `get` is None, `'nngp'`, `'ntk'` or a non-empty tuple of
  them: NT answers any other name with a bare `KeyError`, and `token_block` reads only
  these `(N1, N2)` kernels."""
  names = (get,) if isinstance(get, str) else get
  if get is not None and not (
      isinstance(names, (tuple, list)) and names and
      all(isinstance(g, str) and g.lower() in _GETS for g in names)):
    raise ValueError(f"get must be None, 'nngp', 'ntk' or a tuple of them, got {get!r}.")


def analytic_kernel(kernel_fn, x_train, x_eval=None, get='ntk'):
  """Infinite-width kernel `(N, N)` over the sequence `[x_train; x_eval]`.

  `kernel_fn`: a stax `kernel_fn`, a stax triple or a `models.Model`. `get`: `'ntk'`,
  `'nngp'`, a tuple of them (a namedtuple of `(N, N)` arrays) or None (both). Computed in
  the dtype of the inputs (float64 when x64 is enabled and the inputs are float64).
  """
  _check_get(get)
  _check_declared_mask(kernel_fn)
  kernel_fn = resolve(kernel_fn, 'kernel_fn')
  seq, context = layers.as_sequence(x_train, x_eval)
  k = token_block(kernel_fn(seq, None, get, context=(context, context)))
  if isinstance(k, tuple):
    return type(k)(*(_check_finite(v, f'analytic {g} kernel') for g, v in zip(k._fields, k)))
  return _check_finite(k, f'analytic {get} kernel')


def closed_form_ntk(z1, w, W_std: float = 1.0, z2=None):
  """Empirical NTK of `relu_head` w.r.t. its first layer, in closed form.

  `Θ(z, z') = (W_std²/d)(z·z') · (1/m) Σ_r 1[h_r(z) > 0] 1[h_r(z') > 0]`, with
  `h = W_std z W / √d` and the ±1 readout (`a² = 1`, so every output has this NTK and
  the trace over outputs, NT's `trace_axes=(-1,)` mean, is the same).

  Shapes: `z1 (N1, d)`, `w (d, m)`, `z2 (N2, d)` (default `z1`) -> `(N1, N2)`.
  """
  d, m = w.shape
  z2 = z1 if z2 is None else z2
  scale = W_std / jnp.sqrt(d).astype(w.dtype)
  s1 = (z1 @ w * scale > 0).astype(w.dtype)
  s2 = s1 if z2 is z1 else (z2 @ w * scale > 0).astype(w.dtype)
  return (z1 @ z2.T) * (s1 @ s2.T) * (W_std ** 2 / (d * m))


def empirical_ntk(model, params, x_train, x_eval=None, method: Optional[str] = None,
                  trace_axes=(-1,), max_memory_gb: Optional[float] = None):
  """Finite-width NTK `(N, N)` over `[x_train; x_eval]` at `params`.

  `model`: a `models.Model`, a stax triple or an `apply_fn`. `method=None` picks
  `default_method(model)`. `closed_form` (docs/method.md §14, §17) needs a `Model` whose
  structure it recognises (`closed_form_applies`) and `trace_axes=(-1,)`: the study's head
  through `closed_form_ntk`, any Dense/elementwise per-token head through
  `ntk_closed_form.head_ntk`, on the features of a parameter-free prefix, and the trainable
  QKV prefix through `qkv_ntk.qkv_closed_form_ntk`. The generic NT methods work for every
  composition; on a `Model` they differentiate only the leaves that train (the others are
  held fixed), and for a per-token head behind a parameter-free prefix they run on the
  features, in blocks of tokens when the Jacobian would not fit `max_memory_gb`; otherwise
  the size is checked against the budget first (`check_generic_fits`).
  `trace_axes=()` keeps the output axes: `(N, N, C, C)`.
  """
  method = method or default_method(model, trace_axes)
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}.')
  seq, context = layers.as_sequence(x_train, x_eval)
  if method == 'closed_form':
    if not closed_form_applies(model, trace_axes):
      raise ValueError('closed_form needs a models.Model whose structure it recognises '
                       '(docs/method.md §17) and trace_axes=(-1,); use jacobian_contraction '
                       'or ntk_vector_products for any composition.')
    return _closed_form(model, params, seq[0], context)
  if isinstance(model, models_lib.Model) and model.prefix_kind == 'fixed':
    z = models_lib.features(model, params, seq, context)[0]
    return _generic_head_ntk(model, method, tuple(trace_axes), params[1], z, max_memory_gb)
  if isinstance(model, models_lib.Model):
    check_generic_fits(model, seq.shape[1], seq.shape[2], seq.dtype, trace_axes,
                       max_memory_gb)
  ntk_fn = _generic_ntk_fn(model, method, tuple(trace_axes))
  return token_block(ntk_fn(seq, None, params, context=(context, context)))


def _closed_form(model, params, x, context):
  """`empirical_ntk(..., 'closed_form')` on the raw sequence `x (N, d)`."""
  if model.prefix_kind == 'qkv':
    _, qkv_apply, _ = ntk_closed_form.leaf_layers(model.prefix)[1]   # Normalize, QKV, Normalize
    return qkv_ntk.qkv_closed_form_ntk(x, context, params[0], params[1],
                                       layers.declared(qkv_apply)['mechanism'], head=model)
  z = models_lib.features(model, params, x[None], context)[0]
  if model.head_kind == 'relu_head':
    w = params[1][0][0]
    return closed_form_ntk(z.astype(w.dtype), w, _relu_head_w_std(model))
  z = z.astype(jax.tree_util.tree_leaves(params[1])[0].dtype)
  return ntk_closed_form.head_ntk(model.head_layers, params[1],
                                  models_lib.head_trained(model, params[1]), z)


def _relu_head_w_std(model) -> float:
  return layers.declared(model.head[1])['W_std']


def closed_form_applies(model, trace_axes=(-1,)) -> bool:
  """Whether `empirical_ntk(model, ..., 'closed_form')` is exact for `model`: a `Model` with
  a parameter-free or the study's QKV prefix and a head of `relu_head` or Dense/elementwise
  layers (docs/method.md §17), outputs traced."""
  return (isinstance(model, models_lib.Model) and tuple(trace_axes) == (-1,)
          and model.prefix_kind in ('fixed', 'qkv') and model.head_kind in ('relu_head', 'layers'))


def _masked_apply(model):
  """`model.apply_fn` with the frozen leaves held fixed (`stop_gradient`), so that NT's
  Jacobians see only the leaves that train."""
  def apply_fn(params, x, **kwargs):
    mask = models_lib.trainable_mask(model, params)
    params = jax.tree_util.tree_map(lambda p, m: p if m else jax.lax.stop_gradient(p),
                                    params, mask)
    return model.apply_fn(params, x, **kwargs)
  return apply_fn


@functools.lru_cache(maxsize=None)
def _generic_ntk_fn(model, method: str, trace_axes=(-1,)):
  """NT's `empirical_ntk_fn` for `model` (a Model, triple or apply_fn), jitted once per
  (model, method, trace_axes)."""
  apply_fn = (_masked_apply(model) if isinstance(model, models_lib.Model)
              else resolve(model, 'apply_fn'))
  return jax.jit(_nt.empirical_ntk_fn_generic(
      apply_fn, trace_axes=trace_axes, implementation=_nt.IMPLEMENTATIONS[method]))


@functools.lru_cache(maxsize=None)
def _generic_head_fn(model, method: str, trace_axes=(-1,)):
  """NT's `empirical_ntk_fn` of the per-token head alone, on feature rows `(n, d)`, frozen
  head leaves held fixed."""
  def head_apply(head_params, z, **kwargs):
    n_prefix = len(model.mask) - len(jax.tree_util.tree_leaves(head_params))
    mask = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(head_params),
                                        list(model.mask[n_prefix:]))
    head_params = jax.tree_util.tree_map(lambda p, m: p if m else jax.lax.stop_gradient(p),
                                         head_params, mask)
    return models_lib.head_apply(model, head_params, z)
  return jax.jit(_nt.empirical_ntk_fn_generic(
      head_apply, trace_axes=trace_axes, implementation=_nt.IMPLEMENTATIONS[method]))


def _generic_head_ntk(model, method, trace_axes, head_params, z, max_memory_gb):
  """NT's eNTK of a per-token head on features `z (N, d)`; in blocks of `b` tokens (each
  block pair's Jacobians only) when the whole Jacobian would not fit the budget."""
  fn = _generic_head_fn(model, method, trace_axes)
  n = z.shape[0]
  per_token = _jacobian_gb(model, 1, z.dtype, head_only=True, n_features=z.shape[1])
  budget = memory_budget_gb(max_memory_gb)
  if isinstance(z, jax.core.Tracer) or 2 * n * per_token <= 0.5 * budget:
    return fn(z, None, head_params)
  b = max(int(0.25 * budget / per_token), 1)
  if 2 * per_token > 0.5 * budget:
    raise ValueError(f'model {model.name!r}: one token\'s Jacobian needs {per_token:.3g} GB, '
                     f'over the {budget:.3g} GB budget (--max_memory_gb).')
  rows = []
  for s in range(0, n, b):
    rows.append(np.concatenate([np.asarray(fn(z[s:s + b], z[t:t + b], head_params))
                                for t in range(0, n, b)], axis=1))
  return jnp.asarray(np.concatenate(rows, axis=0))


def _param_count(model, n_features: int, head_only: bool = False) -> int:
  """Parameters of `model` on inputs of `n_features` channels (of its head alone on
  features of `n_features` channels when `head_only`)."""
  if head_only:
    shapes = jax.eval_shape(lambda: model.head[0](jax.random.PRNGKey(0), (1, 1, n_features))[1])
  else:
    shapes = jax.eval_shape(lambda: models_lib.init_params(model, jax.random.PRNGKey(0),
                                                           n_features))
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(shapes))


def _jacobian_gb(model, n_tokens: int, dtype, head_only=False, n_features=None) -> float:
  """GB of NT's Jacobian `(n_tokens, C, P)` (P = every parameter of the model on inputs of
  `n_features` channels, or of its head on features of that many) in `dtype`: what the
  generic methods hold per argument."""
  p = _param_count(model, n_features, head_only)
  return n_tokens * model.out_dim * p * jnp.dtype(dtype).itemsize / 1e9


def generic_ntk_gb(model, n_tokens: int, n_features: int, dtype=jnp.float32,
                   trace_axes=(-1,)) -> float:
  """Estimated peak (GB) of NT's generic eNTK of `model` over one sequence of `n_tokens`:
  its two Jacobians `2·N·C·P` plus the result `N²` (`N² C²` untraced)."""
  jac = _jacobian_gb(model, n_tokens, dtype, n_features=n_features)
  out = n_tokens ** 2 * (1 if tuple(trace_axes) else model.out_dim ** 2)
  return 2 * jac + out * jnp.dtype(dtype).itemsize / 1e9


def check_generic_fits(model, n_tokens: int, n_features: int, dtype=jnp.float32,
                       trace_axes=(-1,), max_memory_gb: Optional[float] = None) -> None:
  """ValueError (one line, before allocating) when NT's generic eNTK of `model` over
  `n_tokens` would not fit the budget; it names the largest number of points that fits."""
  need, budget = generic_ntk_gb(model, n_tokens, n_features, dtype, trace_axes), \
      memory_budget_gb(max_memory_gb)
  if need <= budget:
    return
  n = n_tokens
  while n > 1 and generic_ntk_gb(model, n, n_features, dtype, trace_axes) > budget:
    n = int(n * 0.9)
  raise ValueError(f'model {model.name!r}: NT\'s generic empirical NTK over {n_tokens} points '
                   f'needs about {need:.3g} GB (its Jacobian), over the {budget:.3g} GB budget '
                   f'(max_memory_gb); the largest number of points that fits is about {n}.')


def default_method(model, trace_axes=(-1,)) -> str:
  """The fastest exact method for `model`: the closed form where `closed_form_applies`
  (scripts/benchmark.py, entries `ntk` and `ntk_head`, time it against NT's), else NT's
  Jacobian contraction (measured 2x faster than NTK-vector products on the QKV model at
  N=300; its memory grows as N·C·#params)."""
  return 'closed_form' if closed_form_applies(model, trace_axes) else 'jacobian_contraction'


def monte_carlo_ntk(model, keys, x_train, x_eval=None,
                    method: Optional[str] = None, dtype=jnp.float32,
                    max_memory_gb: Optional[float] = None):
  """Mean and per-draw empirical NTKs over initialisations `keys (S, 2)`.

  `model`: a `models.Model` or a stax triple (its `init_fn` draws the parameters for
  inputs `(1, 1, d)`). Draws are vmapped in chunks sized to the memory budget (the
  closed form's or NT's working memory per draw), so the working memory does not grow
  with S. Returns `(mean (N, N), draws (S, N, N))`.
  """
  method = method or default_method(model)
  d = jnp.shape(x_train)[-1]
  x_train = jnp.asarray(x_train, dtype)
  x_eval = None if x_eval is None else jnp.asarray(x_eval, dtype)
  init_fn = resolve(model, 'init_fn')
  n = x_train.shape[0] + (0 if x_eval is None else x_eval.shape[0])
  if method != 'closed_form' and isinstance(model, models_lib.Model):
    per_draw = generic_ntk_gb(model, n, d, dtype)
    check_generic_fits(model, n, d, dtype, max_memory_gb=max_memory_gb)
  elif method != 'closed_form':
    per_draw = 0.0     # a bare triple: NT's size is unknown here; one chunk
  else:
    per_draw = 8.0 * n * n * jnp.dtype(dtype).itemsize / 1e9
  chunk = len(keys) if per_draw <= 0 else max(1, min(len(keys), int(
      0.5 * memory_budget_gb(max_memory_gb) / per_draw)))
  draws = jnp.concatenate([_mc_chunk(model, method, d, dtype, jnp.asarray(keys[s:s + chunk]),
                                     x_train, x_eval)
                           for s in range(0, len(keys), chunk)])
  return jnp.mean(draws, axis=0), draws


def _mc_chunk(model, method, d, dtype, keys, x_train, x_eval):
  init_fn = resolve(model, 'init_fn')

  def one(key):
    _, params = init_fn(key, (1, 1, d))
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype), params)
    return empirical_ntk(model, params, x_train, x_eval, method)

  return jax.vmap(one)(keys)


def ntk_predictor(blocks: Blocks, y_train, ridge: float = 1e-3, t=None,
                  learning_rate: float = 1.0, f0_train=None, f0_eval=None):
  """Infinite-width NTK predictions on the evaluation points, `(t, C)`.

  NT's `gradient_descent_mse` on the kernel blocks, loss `½·mean (f − y)²`:
    - `t=None`: kernel ridge regression `f = Θ_et (Θ_tt + λ·mean(diag Θ_tt) I)⁻¹ (Y − f0) + f0`;
    - `t` a number of steps: gradient flow for time `learning_rate·t` from `f0`
      (`ridge` then adds λ to the dynamics; pass 0 for plain gradient descent).
  `f0_train (n, C)`, `f0_eval (t, C)` default to zero (the mean infinite-width function).
  """
  y_train = jnp.asarray(y_train, blocks.train.dtype)
  f0_train = jnp.zeros_like(y_train) if f0_train is None else jnp.asarray(f0_train, y_train.dtype)
  n_eval = blocks.eval_train.shape[0]
  f0_eval = (jnp.zeros((n_eval, y_train.shape[1]), y_train.dtype) if f0_eval is None
             else jnp.asarray(f0_eval, y_train.dtype))
  predict_fn = _nt.predict.gradient_descent_mse(
      blocks.train, y_train, learning_rate=learning_rate, diag_reg=ridge)
  _, f_eval = predict_fn(t, f0_train, f0_eval, blocks.eval_train)
  return _check_finite(f_eval, 'NTK predictor')


def relative_distance(a, b) -> jnp.ndarray:
  """`‖a − b‖_F / ‖b‖_F` (b is the reference); a reference of zero norm raises (when `b`
  is concrete; under `jit` the result is then nan or inf)."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f'shape mismatch: {a.shape} vs {b.shape}.')
  norm_b = jnp.linalg.norm(b.ravel())
  if not isinstance(norm_b, jax.core.Tracer) and float(norm_b) == 0:
    raise ValueError(f'relative_distance: the reference b has zero norm (shape {b.shape}).')
  return jnp.linalg.norm((a - b).ravel()) / norm_b


def gram_power(x, power: int = 3, normalized: bool = True) -> np.ndarray:
  """The Gram-induced kernel `G^p` of unit-norm rows, float64 numpy.

  `G = X̂ X̂ᵀ` with `x̂_i = x_i/‖x_i‖`; `normalized=True` returns
  `K_ij / √(K_ii K_jj)` (what `Normalize` after attention produces). Shape `(n, n)`.
  """
  x = np.asarray(x, np.float64)
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  g = u @ u.T
  k = np.linalg.matrix_power(g, power)
  if normalized:
    dg = np.sqrt(np.diag(k))
    k = k / np.outer(dg, dg)
  return k


# ------------------------------------------------------------------ large n: row blocks, budget
#
# One place knows the memory budget (docs/method.md §13). Kernels of a parameter-free
# prefix are built row block by row block into one float64 numpy array, from the prefix
# features Z (N × d) computed once; only `block × N` temporaries exist at a time.

# Peak of a malleability cell in float64 N × N kernels (N = n_train + n_eval): the blocked
# empirical and analytic kernels, the train block handed to `influence.loo_influence`,
# and there A = K + λI, its Cholesky factor and the inverse factor; plus a fixed
# `INFLUENCE_BASE_GB` (JAX, data, training). Measured with /usr/bin/time -v on
# scripts/malleability.py (both models, PGD, width 1024): 3.4 GB at N = 6,500, i.e.
# 1 GB + 7.1 N² doubles (docs/method.md §13).
INFLUENCE_PEAK_KERNELS = 7.5
INFLUENCE_BASE_GB = 1.5


def memory_budget_gb(max_memory_gb: Optional[float] = None) -> float:
  """`max_memory_gb`, or 80 % of this machine's physical memory when it is None or 0."""
  if max_memory_gb:
    if not max_memory_gb > 0:
      raise ValueError(f'--max_memory_gb must be > 0, got {max_memory_gb}.')
    return float(max_memory_gb)
  try:
    return 0.8 * os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9
  except (ValueError, OSError, AttributeError):
    return 16.0


def influence_peak_gb(n_train: int, n_eval: int) -> float:
  """Estimated peak (GB) of kernels + exact influence at these sizes:
  `INFLUENCE_BASE_GB + INFLUENCE_PEAK_KERNELS · 8 (n + t)²` bytes (float64)."""
  return INFLUENCE_BASE_GB + INFLUENCE_PEAK_KERNELS * 8.0 * (n_train + n_eval) ** 2 / 1e9


def largest_n_train(n_eval: int, max_memory_gb: Optional[float] = None) -> int:
  """The largest `n_train` whose `influence_peak_gb(n_train, n_eval)` fits the budget."""
  room = max(memory_budget_gb(max_memory_gb) - INFLUENCE_BASE_GB, 0.0)
  n = max(int((room * 1e9 / (8.0 * INFLUENCE_PEAK_KERNELS)) ** 0.5) - int(n_eval), 0)
  while n > 0 and influence_peak_gb(n, n_eval) > memory_budget_gb(max_memory_gb):
    n -= 1            # float rounding of the square root
  return n


def check_fits(n_train: int, n_eval: int, max_memory_gb: Optional[float] = None,
               flag: str = '--n_train') -> None:
  """ValueError (one line, before any work) when kernels and exact influence at
  `n_train + n_eval` points would not fit the budget; it names the largest n_train that does."""
  need, budget = influence_peak_gb(n_train, n_eval), memory_budget_gb(max_memory_gb)
  if need > budget:
    raise ValueError(
        f'{flag}={n_train} (with {n_eval} evaluation points) needs about {need:.3g} GB for '
        f'its float64 kernels and exact influence, over the {budget:.3g} GB budget '
        f'(--max_memory_gb): the largest n_train that fits is '
        f'{largest_n_train(n_eval, max_memory_gb)}.')


def block_rows(n: int, row_bytes: float, max_memory_gb: Optional[float] = None,
               share: float = 0.1) -> int:
  """Rows per block so that a block's temporaries (`row_bytes` each) use at most `share`
  of the budget; between 1 and n."""
  rows = int(share * memory_budget_gb(max_memory_gb) * 1e9 // max(row_bytes, 1.0))
  return int(min(max(rows, 1), n))


def row_placement(devices=None):
  """`(put_rows, put_all)` for row-blocked kernels on several devices (docs/method.md §13).

  With one device both are identities. With k > 1 (`jax.devices()` by default: GPUs, a TPU
  slice, or `XLA_FLAGS=--xla_force_host_platform_device_count=k` on a CPU),
  `put_rows(a)` pads `a`'s rows to a multiple of k (repeating the last row) and shards them
  over a 1-d mesh `('rows',)`, and `put_all(a)` replicates `a`; a jitted row function then
  computes each device's rows where they live. Callers slice the padding off.
  """
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) < 2:
    return (lambda a: a), (lambda a: a)
  mesh = jax.sharding.Mesh(np.array(devices), ('rows',))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('rows'))
  everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def put_rows(a):
    pad = -a.shape[0] % len(devices)
    if pad:
      a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
    return jax.device_put(a, rows)

  return put_rows, lambda a: jax.device_put(a, everywhere)


def build_by_rows(row_fn, n: int, block: int) -> np.ndarray:
  """`(n, n)` float64 numpy array whose rows `[s, e)` are `row_fn(s, e)[:e − s]`,
  filled `block` rows at a time (the last block may be shorter; `row_fn` may return
  padding rows after the first `e − s`, see `row_placement`)."""
  out = np.empty((n, n), np.float64)
  for start in range(0, n, block):
    stop = min(start + block, n)
    rows = np.asarray(row_fn(start, stop), np.float64)[:stop - start]
    if not np.all(np.isfinite(rows)):
      raise FloatingPointError(f'blocked kernel has non-finite entries in rows {start}:{stop}.')
    out[start:stop] = rows
  return out


@jax.jit
def _closed_form_rows(z_rows, z, w, W_std):
  d, m = w.shape
  scale = W_std / jnp.sqrt(d).astype(w.dtype)
  s_rows = (z_rows @ w * scale > 0).astype(w.dtype)
  s = (z @ w * scale > 0).astype(w.dtype)
  return (z_rows @ z.T) * (s_rows @ s.T) * (W_std ** 2 / (d * m))


@jax.jit
def _arccos_rows(z_rows, z, W_std, start):
  d = z.shape[1]
  sigma = z_rows @ z.T / d
  norms = jnp.sqrt(jnp.sum(z_rows ** 2, 1) / d)[:, None] * jnp.sqrt(jnp.sum(z ** 2, 1) / d)
  theta = jnp.arccos(jnp.clip(sigma / norms, -1.0, 1.0))
  # θ_ii = 0 exactly: arccos turns a one-ulp error of cos θ near 1 into √ulp ≈ 1e-8,
  # which would make the result depend on how the rows were blocked.
  rows = start + jnp.arange(z_rows.shape[0])[:, None]
  theta = jnp.where(rows == jnp.arange(z.shape[0])[None, :], 0.0, theta)
  return W_std ** 2 * sigma * (jnp.pi - theta) / (2 * jnp.pi)


def _prefix_features(model, params, x_train, x_eval, dtype):
  if model.prefix_kind != 'fixed':
    raise ValueError(f'blocked kernels need a parameter-free prefix; {model.name} has a '
                     'trainable one: use empirical_ntk.')
  x_train = jnp.asarray(x_train, dtype)
  x_eval = None if x_eval is None else jnp.asarray(x_eval, dtype)
  seq, context = layers.as_sequence(x_train, x_eval)
  prefix_params = (model.prefix[0](jax.random.PRNGKey(0), seq.shape)[1] if params is None
                   else params[0])     # a fixed prefix: its parameters (if any) do not train
  return models_lib.features(model, (prefix_params,), seq, context)[0]


@functools.partial(jax.jit, static_argnums=(0,))
def _layer_terms(model, head_params, z):
  """`ntk_closed_form.forward_backward` terms as arrays: `[(H (N, n_in), Δ (C, N, n_out))]`."""
  terms, _ = ntk_closed_form.forward_backward(model.head_layers, head_params, z)
  return [(h, d) for _, _, h, d in terms]


@functools.partial(jax.jit, static_argnums=(0,))
def _layer_rows(coefs, h_rows, d_rows, h_all, d_all):
  """Rows of `ntk_closed_form.layer_terms_ntk` from precomputed terms; `coefs` per layer
  `(a² or 0, c² or 0)`."""
  theta = 0.0
  for (wa, bc), h1, d1, h2, d2 in zip(coefs, h_rows, d_rows, h_all, d_all):
    front = (wa * (h1 @ h2.T) if wa else 0.0) + bc
    theta = theta + front * jnp.einsum('cik,cjk->ij', d1, d2) / d1.shape[0]
  return theta


def _layer_coefs(model, head_params, terms_layers):
  trained = models_lib.head_trained(model, head_params)
  out = []
  for layer in terms_layers:
    p = ntk_closed_form.get_params(head_params, layer.path)
    a, c = ntk_closed_form.scales(layer.apply_fn, p[0])
    w_on, b_on = trained(layer.path)
    out.append((float(a ** 2) if w_on else 0.0,
                float(c ** 2) if (b_on and p[1] is not None) else 0.0))
  return tuple(out)


def empirical_ntk_blocked(model: models_lib.Model, params, x_train, x_eval=None,
                          max_memory_gb: Optional[float] = None,
                          block: Optional[int] = None) -> np.ndarray:
  """`empirical_ntk(model, ...)` of a parameter-free prefix, row block by row block, as a
  float64 numpy `(N, N)` (entries computed in the dtype of the head's parameters).

  The study's head: `closed_form_ntk` rows; a Dense/elementwise head: the layer sums of
  `ntk_closed_form` from its per-token terms, computed once (`O(N·C·Σ widths)`); any other
  per-token head: NT's generic method in blocks of tokens (`empirical_ntk`).
  `block` rows at a time (default: 10 % of the budget of `memory_budget_gb`); with several
  devices each block's rows are sharded across them (`row_placement`).
  """
  dtype = jax.tree_util.tree_leaves(params[1])[0].dtype
  z = _prefix_features(model, params, x_train, x_eval, dtype)
  n = z.shape[0]
  if model.head_kind == 'opaque':
    return _check_finite(np.asarray(_generic_head_ntk(
        model, 'jacobian_contraction', (-1,), params[1], z, max_memory_gb), np.float64),
        'blocked empirical NTK')
  put_rows, put_all = row_placement()
  if model.head_kind == 'relu_head':
    w = params[1][0][0]
    block = block or block_rows(n, 6.0 * n * jnp.dtype(w.dtype).itemsize, max_memory_gb)
    z_all, w_all = put_all(z), put_all(w)
    return build_by_rows(lambda s, e: _closed_form_rows(put_rows(z[s:e]), z_all, w_all,
                                                        _relu_head_w_std(model)), n, block)
  terms = _layer_terms(model, params[1], z)
  affine = [l for l in model.head_layers if l.kind == 'affine'][::-1]
  coefs = _layer_coefs(model, params[1], affine)
  c = model.out_dim
  row_bytes = (3.0 * n + c * sum(d.shape[-1] for _, d in terms)) * jnp.dtype(dtype).itemsize
  block = block or block_rows(n, row_bytes, max_memory_gb)
  h_all = [put_all(h) for h, _ in terms]
  d_all = [put_all(d) for _, d in terms]

  def rows(s, e):
    return _layer_rows(coefs, [put_rows(h[s:e]) for h, _ in terms],
                       [jnp.swapaxes(put_rows(jnp.swapaxes(d[:, s:e], 0, 1)), 0, 1)
                        for _, d in terms], h_all, d_all)

  return build_by_rows(rows, n, block)


def analytic_ntk_blocked(model: models_lib.Model, x_train, x_eval=None,
                         max_memory_gb: Optional[float] = None,
                         block: Optional[int] = None) -> np.ndarray:
  """`analytic_kernel(model, ...)` ('ntk') of a parameter-free prefix, in float64 row blocks.

  The prefix maps inputs deterministically to features Z, so its output covariance is
  `Σ = Z Zᵀ/d` exactly and the model's NTK is its head's NTK on the features as i.i.d.
  points: for the study's head the arc-cosine `Θ∞ = W_std² Σ (π − θ)/(2π)`, `cos θ =
  Σ_ij/√(Σ_ii Σ_jj)` (docs/method.md §4); for a recognised Dense/elementwise head its own
  `kernel_fn` on feature rows (docs/method.md §17). Any other head: the whole model's
  `analytic_kernel` (not blocked).
  """
  _check_declared_mask(model)
  if model.head_kind == 'opaque':
    x_eval64 = None if x_eval is None else jnp.asarray(x_eval, jnp.float64)
    return np.asarray(analytic_kernel(model, jnp.asarray(x_train, jnp.float64), x_eval64),
                      np.float64)
  z = _prefix_features(model, None, x_train, x_eval, jnp.float64)
  n = z.shape[0]
  block = block or block_rows(n, 6.0 * n * 8, max_memory_gb)
  put_rows, put_all = row_placement()
  z_all = put_all(z)
  if model.head_kind == 'relu_head':
    return build_by_rows(lambda s, e: _arccos_rows(put_rows(z[s:e]), z_all,
                                                   _relu_head_w_std(model), s), n, block)
  head_kernel = _head_kernel_rows(model)
  return build_by_rows(lambda s, e: head_kernel(put_rows(z[s:e]), z_all), n, block)


@functools.lru_cache(maxsize=None)
def _head_kernel_rows(model):
  """`(z_rows (b, d), z (N, d)) -> (b, N)`: the head's analytic NTK between feature rows
  (each a sequence of one token, as the per-token head sees it)."""
  @jax.jit
  def rows(z_rows, z):
    return model.head[2](z_rows[:, None, :], z[:, None, :], 'ntk')[:, :, 0, 0]
  return rows


def _check_declared_mask(model):
  """An analytic kernel comes from `kernel_fn`, which knows only what the layers declare:
  refuse a model whose `trainable` mask says otherwise."""
  if isinstance(model, models_lib.Model) and not model.mask_is_declared:
    raise ValueError(f'model {model.name!r} trains other parameters than its layers declare '
                     '(trainable= or prefix_trainable=False): its kernel_fn does not know that, '
                     'so it has no analytic NTK here (declare frozen layers instead, e.g. '
                     'layers.FrozenReadout).')


def _check_finite(k, what: str):
  if not isinstance(k, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(k))):
    raise FloatingPointError(f'{what} has non-finite entries.')
  return k


__all__ = ['Blocks', 'METHODS', 'KernelPair', 'resolve', 'token_block', 'split_blocks',
           'analytic_kernel', 'closed_form_ntk', 'empirical_ntk', 'default_method',
           'closed_form_applies', 'generic_ntk_gb', 'check_generic_fits',
           'monte_carlo_ntk', 'ntk_predictor', 'relative_distance', 'gram_power',
           'memory_budget_gb', 'influence_peak_gb', 'largest_n_train', 'check_fits',
           'block_rows', 'row_placement', 'build_by_rows', 'empirical_ntk_blocked',
           'analytic_ntk_blocked']
