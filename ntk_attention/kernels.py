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
The same kernels at large n, in float64 row blocks under a memory budget, are in `blocked`.
"""
import collections
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import _nt
from ntk_attention import compiles
from ntk_attention import devices as devices_lib
from ntk_attention import layers
from ntk_attention import models as models_lib
from ntk_attention import ntk_closed_form
from ntk_attention import qkv_ntk
from ntk_attention import ridge as ridge_lib

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
  resolve(kernel_fn, 'kernel_fn')
  get = tuple(get) if isinstance(get, list) else get   # a static argument: hashable
  # The model itself is the static argument: `Model.kernel_fn` is a new function per access.
  k = models_lib.compiled_or_eager(_analytic_program, _analytic_eager, kernel_fn, x_train,
                                   x_eval, get)
  if isinstance(k, tuple):
    return type(k)(*(_check_finite(v, f'analytic {g} kernel') for g, v in zip(k._fields, k)))
  return _check_finite(k, f'analytic {get} kernel')


def _analytic_eager(model, x_train, x_eval, get):
  """`analytic_kernel`'s kernel op by op: the `kernel_fn` of `model` (`resolve`) on the
  sequence `[x_train; x_eval]`."""
  seq, context = layers.as_sequence(x_train, x_eval)
  kernel_fn = resolve(model, 'kernel_fn')
  return token_block(kernel_fn(seq, None, get, context=(context, context)))


# One program per (model, get, shapes) with the bits of the op-by-op run.
_analytic_program = compiles.op_by_op(_analytic_eager, static_argnums=(0, 3))


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
  budget = devices_lib.memory_budget_gb(max_memory_gb)
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
      devices_lib.memory_budget_gb(max_memory_gb)
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
      0.5 * devices_lib.memory_budget_gb(max_memory_gb) / per_draw)))
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
  """Infinite-width NTK predictions on the evaluation points, `(t, C)`, loss `½·mean (f − y)²`:

  - `t=None`: kernel ridge regression `f = f0 + Θ_et α`, `α = (Θ_tt + λ·mean(diag Θ_tt) I)⁻¹
    (Y − f0)` (`ridge.ridge_solve`);
  - `t` a number of steps: NT's `gradient_descent_mse`, gradient flow for time
    `learning_rate·t` from `f0` (`ridge` then adds `λ·mean(diag Θ_tt)` to the dynamics;
    pass 0 for plain gradient descent).
  `f0_train (n, C)`, `f0_eval (t, C)` default to zero (the mean infinite-width function).
  Computed in the dtype of `blocks`.
  """
  y_train = jnp.asarray(y_train, blocks.train.dtype)
  f0_train = jnp.zeros_like(y_train) if f0_train is None else jnp.asarray(f0_train, y_train.dtype)
  n_eval = blocks.eval_train.shape[0]
  f0_eval = (jnp.zeros((n_eval, y_train.shape[1]), y_train.dtype) if f0_eval is None
             else jnp.asarray(f0_eval, y_train.dtype))
  if t is None:
    # Θ_ttᵀ: the solve reads the lower triangle, and this predictor has always read the upper
    # one (NT's solver); Θ∞ from NT's kernel_fn is symmetric only to rounding.
    alpha = ridge_lib.ridge_solve(blocks.train.T, y_train - f0_train, ridge)
    f_eval = f0_eval + blocks.eval_train @ alpha
  else:
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
           'monte_carlo_ntk', 'ntk_predictor', 'relative_distance', 'gram_power']
