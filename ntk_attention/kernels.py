"""Analytic and empirical kernels of a model, their blocks, and distances.

A dataset with `n` training and `t` evaluation points is one sequence `[train; eval]` of
`N = n + t` tokens with the training points as context (docs/method.md §2), so every kernel here is
first an `(N, N)` matrix and then sliced into `Blocks(train (n, n), eval_train (t, n),
eval (t, t))`.

- `analytic_kernel`: NT's infinite-width `kernel_fn` (`'ntk'` or `'nngp'`); for the
  models of `models.py` the NTK is the first-layer-only NTK (the readout is frozen).
- `empirical_ntk`: the finite-width NTK `J Jᵀ` at given parameters, traced (averaged)
  over outputs. `method='closed_form'` (default where it applies) uses
  `Θ_m = (W_std²/d) (Z Zᵀ) ⊙ (S Sᵀ)/m`, `S = 1[h > 0]`, on the features `Z` of a
  parameter-free prefix, `O(N²(d + m))`; `'jacobian_contraction'` and
  `'ntk_vector_products'` use NT's generic `empirical_ntk_fn` for any composition.

Each takes the study's `models.Model`, a user's stax triple `(init_fn, apply_fn,
kernel_fn)`, or the one function it needs (`kernel_fn`, `apply_fn`); see `resolve`.
"""
import collections
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import _nt
from ntk_attention import layers
from ntk_attention import models as models_lib

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


def analytic_kernel(kernel_fn, x_train, x_eval=None, get='ntk'):
  """Infinite-width kernel `(N, N)` over the sequence `[x_train; x_eval]`.

  `kernel_fn`: a stax `kernel_fn`, a stax triple or a `models.Model`. `get`: `'ntk'`,
  `'nngp'`, a tuple of them (a namedtuple of `(N, N)` arrays) or None (both). Computed in
  the dtype of the inputs (float64 when x64 is enabled and the inputs are float64).
  """
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
                  trace_axes=(-1,)):
  """Finite-width NTK `(N, N)` over `[x_train; x_eval]` at `params`.

  `model`: a `models.Model`, a stax triple or an `apply_fn`. `method=None` picks
  `default_method(model)`. `closed_form` needs a `Model` with a parameter-free prefix
  (relu_mlp, mlp_attn) and `trace_axes=(-1,)`; the generic NT methods work for every
  composition (the frozen readout contributes nothing: its `apply_fn` stops its
  gradient). `trace_axes=()` keeps the output axes: `(N, N, C, C)`.
  """
  method = method or default_method(model, trace_axes)
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}.')
  seq, context = layers.as_sequence(x_train, x_eval)
  if method == 'closed_form':
    if not isinstance(model, models_lib.Model) or tuple(trace_axes) != (-1,):
      raise ValueError('closed_form needs a models.Model and trace_axes=(-1,); use '
                       'jacobian_contraction or ntk_vector_products for any composition.')
    if model.prefix_trainable:
      raise ValueError(f'closed_form needs a parameter-free prefix; {model.name} has '
                       'a trainable one: use jacobian_contraction or ntk_vector_products.')
    z = models_lib.features(model, params, seq, context)[0]
    w = params[1][0][0]
    return closed_form_ntk(z.astype(w.dtype), w, model.W_std)
  ntk_fn = _generic_ntk_fn(model, method, tuple(trace_axes))
  return token_block(ntk_fn(seq, None, params, context=(context, context)))


@functools.lru_cache(maxsize=None)
def _generic_ntk_fn(model, method: str, trace_axes=(-1,)):
  """NT's `empirical_ntk_fn` for `model` (a Model, triple or apply_fn), jitted once per
  (model, method, trace_axes)."""
  return jax.jit(_nt.empirical_ntk_fn_generic(
      resolve(model, 'apply_fn'), trace_axes=trace_axes,
      implementation=_nt.IMPLEMENTATIONS[method]))


def default_method(model, trace_axes=(-1,)) -> str:
  """The fastest exact method for `model`: the closed form for a `Model` with a
  parameter-free prefix (and outputs traced), else NT's Jacobian contraction (measured 2x
  faster than NTK-vector products on the QKV model at N=300; its memory grows as
  N·C·#params)."""
  closed = (isinstance(model, models_lib.Model) and not model.prefix_trainable
            and tuple(trace_axes) == (-1,))
  return 'closed_form' if closed else 'jacobian_contraction'


def monte_carlo_ntk(model, keys, x_train, x_eval=None,
                    method: Optional[str] = None, dtype=jnp.float32):
  """Mean and per-draw empirical NTKs over initialisations, vmapped over `keys (S, 2)`.

  `model`: a `models.Model` or a stax triple (its `init_fn` draws the parameters for
  inputs `(1, 1, d)`). Returns `(mean (N, N), draws (S, N, N))`.
  """
  method = method or default_method(model)
  d = jnp.shape(x_train)[-1]
  x_train = jnp.asarray(x_train, dtype)
  x_eval = None if x_eval is None else jnp.asarray(x_eval, dtype)
  init_fn = resolve(model, 'init_fn')

  def one(key):
    _, params = init_fn(key, (1, 1, d))
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype), params)
    return empirical_ntk(model, params, x_train, x_eval, method)

  draws = jax.vmap(one)(keys)
  return jnp.mean(draws, axis=0), draws


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
  """`‖a − b‖_F / ‖b‖_F` (b is the reference)."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  if a.shape != b.shape:
    raise ValueError(f'shape mismatch: {a.shape} vs {b.shape}.')
  return jnp.linalg.norm((a - b).ravel()) / jnp.linalg.norm(b.ravel())


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


def _check_finite(k, what: str):
  if not isinstance(k, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(k))):
    raise FloatingPointError(f'{what} has non-finite entries.')
  return k


__all__ = ['Blocks', 'METHODS', 'KernelPair', 'resolve', 'token_block', 'split_blocks',
           'analytic_kernel', 'closed_form_ntk', 'empirical_ntk', 'default_method', 'monte_carlo_ntk', 'ntk_predictor', 'relative_distance',
           'gram_power']
