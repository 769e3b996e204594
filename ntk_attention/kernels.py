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
"""
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import _nt
from ntk_attention import layers
from ntk_attention import models as models_lib
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


def analytic_kernel(kernel_fn, x_train, x_eval=None, get: str = 'ntk'):
  """Infinite-width kernel `(N, N)` over the sequence `[x_train; x_eval]`.

  `kernel_fn` is a stax `kernel_fn` (or a `models.Model`). Computed in the dtype of the
  inputs (float64 when x64 is enabled and the inputs are float64).
  """
  if isinstance(kernel_fn, models_lib.Model):
    kernel_fn = kernel_fn.kernel_fn
  seq, context = layers.as_sequence(x_train, x_eval)
  k = kernel_fn(seq, None, get, context=(context, context))
  return _check_finite(k[0, 0], f'analytic {get} kernel')


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


def empirical_ntk(model: models_lib.Model, params, x_train, x_eval=None,
                  method: str = 'closed_form'):
  """Finite-width NTK `(N, N)` over `[x_train; x_eval]` at `params`.

  `closed_form`: relu_mlp and mlp_attn through `closed_form_ntk` on the prefix features,
  mlp_attn_qkv through `qkv_ntk.qkv_closed_form_ntk` (docs/method.md §14); the generic NT
  methods work for every model (the frozen readout contributes nothing: its
  `apply_fn` stops its gradient).
  """
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}.')
  seq, context = layers.as_sequence(x_train, x_eval)
  if method == 'closed_form':
    if model.prefix_trainable:
      return qkv_ntk.qkv_closed_form_ntk(seq[0], context, params[0], params[1],
                                         dict(model.options).get('mechanism', 'IDENTITY'),
                                         model.W_std)
    z = models_lib.features(model, params, seq, context)[0]
    w = params[1][0][0]
    return closed_form_ntk(z.astype(w.dtype), w, model.W_std)
  return _generic_ntk_fn(model, method)(seq, None, params, context=(context, context))[0, 0]


@functools.lru_cache(maxsize=None)
def _generic_ntk_fn(model: models_lib.Model, method: str):
  """NT's `empirical_ntk_fn` for `model`, jitted once per (model, method)."""
  return jax.jit(_nt.empirical_ntk_fn_generic(
      model.apply_fn, trace_axes=(-1,), implementation=_nt.IMPLEMENTATIONS[method]))


def default_method(model: models_lib.Model) -> str:
  """The fastest exact method for `model`: the closed form, which every model of
  `models.MODELS` has (scripts/benchmark.py, entry `ntk`, times it against NT's)."""
  del model
  return 'closed_form'


def monte_carlo_ntk(model: models_lib.Model, keys, x_train, x_eval=None,
                    method: Optional[str] = None, dtype=jnp.float32):
  """Mean and per-draw empirical NTKs over initialisations, vmapped over `keys (S, 2)`.

  Returns `(mean (N, N), draws (S, N, N))`.
  """
  method = method or default_method(model)
  d = jnp.shape(x_train)[-1]
  x_train = jnp.asarray(x_train, dtype)
  x_eval = None if x_eval is None else jnp.asarray(x_eval, dtype)

  def one(key):
    params = models_lib.init_params(model, key, d, dtype)
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


__all__ = ['Blocks', 'METHODS', 'split_blocks', 'analytic_kernel', 'closed_form_ntk',
           'empirical_ntk', 'default_method', 'monte_carlo_ntk', 'ntk_predictor', 'relative_distance',
           'gram_power']
