"""Closed-form empirical NTK of a per-token head, layer by layer (docs/method.md §17).

A head applied to every token alone, `f = φ_L ∘ … ∘ φ_1`, whose parameterised layers are
affine, `h_l = a_l · H_{l−1} W_l + c_l · b_l` (NT's `Dense`, either parameterisation, and
`layers.ScaledDense`), and whose other layers have no parameters and act on each token alone
(NT's elementwise activations, `layers.Normalize`, `stax.Identity`, nested `stax.serial`),
has the empirical NTK, traced (averaged) over its C outputs,

  Θ(i, j) = Σ_{l trained} [a_l² (H_{l−1} H_{l−1}ᵀ)_ij·[W_l trained] + c_l²·[b_l trained]]
                          · mean_c (Δ_{l,c} Δ_{l,c}ᵀ)_ij,

with `H_{l−1} (N, n_{l−1})` the layer's inputs and `Δ_{l,c} = ∂f_c/∂h_l (N, n_l)` the
backward sensitivities of output c, both per token (`∂f_c/∂W_l = a_l H_{l−1,i} ⊗ Δ_{l,c,i}`
is rank one per token). The sensitivities are pulled back through each layer's own
`apply_fn` with `jax.vjp`, so every elementwise activation (and its derivative) is the
layer's own. Memory `O(N·C·Σ_l n_l)` instead of the Jacobian's `O(N·C·P)`.

`plan(head)` recognises such a head: each layer by what it is (its name, and for an affine
layer its scales `a`, `c` read from NT's `Dense` and checked on a probe), or None — the
caller then uses NT's generic methods. The study's `relu_head` keeps its own registered
formula (`kernels.closed_form_ntk`), which this one equals (tests).
"""
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import _nt
from ntk_attention import layers

# NT's parameter-free layers that act on each channel of each token alone (their `@layer`
# names), and this package's per-token ones.
POINTWISE = frozenset({
    'Identity', 'ABRelu', 'Relu', 'LeakyRelu', 'Abs', 'Erf', 'Sigmoid_like', 'Gelu', 'Sin',
    'Cos', 'Rbf', 'Sign', 'Exp', 'Gaussian', 'Hermite', 'Monomial', 'RectifiedMonomial',
    'Polynomial', 'Elementwise', 'ElementwiseNumerical', 'Gabor'})
AFFINE = frozenset({'Dense', 'ScaledDense'})


class Layer(NamedTuple):
  """One layer of a recognised head: `kind` 'affine', 'pointwise' or 'frozen' (parameters
  that never train, e.g. `layers.FrozenReadout`); `path` indexes its parameters inside the
  head's (nested-list) parameters."""
  kind: str
  apply_fn: Callable
  path: tuple


def _flatten(init_fn, apply_fn, path=()):
  """Leaf layers of nested `stax.serial`s as `(init_fn, apply_fn, path)`."""
  parts = _nt.serial_parts(init_fn, apply_fn)
  if parts is None:
    return [(init_fn, apply_fn, path)]
  out = []
  for i, (ii, aa) in enumerate(parts):
    out += _flatten(ii, aa, path + (i,))
  return out


def leaf_layers(triple):
  """`[(init_fn, apply_fn, path)]` of a stax triple, nested serials flattened."""
  return _flatten(triple[0], triple[1])


def get_params(params, path):
  for i in path:
    params = params[i]
  return params


def scales(apply_fn, w):
  """`(a, c)` of an affine layer with weights `w (n_in, n_out)` (see `_nt.dense_scales`)."""
  return _nt.dense_scales(apply_fn, int(w.shape[0]))


def plan(head, n_in: int, probe_dtype=jnp.float32) -> Optional[tuple]:
  """The head's `Layer`s when the closed form applies (module docstring), else None.

  Checked on a probe of `n_in` input channels: every affine layer's output equals
  `a·x W + c·b` with the scales read from the layer (relative 1e-5), on random `x (1, 3,
  n_in')`, `W`, `b` (numpy draws). Parameter and output shapes are followed abstractly
  (`jax.eval_shape`), so only that check runs: about 3 small programs per affine layer.
  """
  rng = np.random.default_rng(1)
  x = jax.ShapeDtypeStruct((1, 3, n_in), probe_dtype)   # one sequence
  key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
  out = []
  for init_fn, apply_fn, path in leaf_layers(head):
    shape, params = _init_shapes(init_fn, key, x.shape)
    name = getattr(apply_fn, '__name__', '')
    spec = layers.declared(apply_fn)
    leaves = jax.tree_util.tree_leaves(params)
    if spec.get('frozen'):
      kind = 'frozen'
    elif name in AFFINE and _is_affine(apply_fn, params, x, rng):
      kind = 'affine'
    elif not leaves and (name in POINTWISE or spec.get('per_token')):
      kind = 'pointwise'
    else:
      return None
    out.append(Layer(kind, apply_fn, path))
    x = jax.eval_shape(apply_fn, jax.tree_util.tree_map(
        lambda p: jax.ShapeDtypeStruct(p.shape, probe_dtype), params), x)
    if tuple(x.shape) != tuple(shape) or x.ndim != 3:
      return None
  return tuple(out)


def _init_shapes(init_fn, key, input_shape):
  """`init_fn(key, input_shape)` abstractly: `(output shape, parameters as
  ShapeDtypeStructs)`, with nothing drawn or compiled."""
  box = []

  def params_of(k):
    out_shape, params = init_fn(k, input_shape)
    box.append(out_shape)
    return params

  params = jax.eval_shape(params_of, key)
  return box[0], params


def _is_affine(apply_fn, params, x, rng) -> bool:
  """`apply_fn((W, b), x) == a·x W + c·b` on draws of `rng` shaped as `params` and `x`
  (ShapeDtypeStructs), relative 1e-5."""
  if not (isinstance(params, tuple) and len(params) == 2):
    return False
  w, b = params
  if getattr(w, 'ndim', 0) != 2 or w.shape[0] != x.shape[-1]:
    return False
  if b is not None and (int(np.prod(b.shape)) != w.shape[1] or b.shape[-1:] != (w.shape[1],)):
    return False
  s = scales(apply_fn, w)
  if s is None or (b is None) != (s[1] is None):
    return False
  a, c = s
  draw = lambda v: rng.standard_normal(v.shape).astype(x.dtype)
  x, w, b = draw(x), draw(w), None if b is None else draw(b)
  # device_put, not jnp.asarray: JAX 0.10 compiles an identity program per shape for that.
  got = np.asarray(apply_fn(jax.device_put((w, b)), jax.device_put(x)), np.float64)
  want = a * x.astype(np.float64) @ w.astype(np.float64)
  if b is not None:
    want = want + c * b.astype(np.float64).reshape(-1)
  return bool(np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max()))


def forward_backward(head_layers, head_params, z, input_grad: bool = False):
  """Per affine layer `(Layer, params, H_{l−1} (N, n_in), Δ (C, N, n_out))`, last layer first,
  and `∂f_c/∂z (C, N, d)` when `input_grad` (else None). `z (N, d)`: the head's inputs."""
  inputs, x = [], z
  for layer in head_layers:
    inputs.append(x)
    x = _apply(layer, get_params(head_params, layer.path), x)
  n_out = x.shape[-1]
  delta = jnp.broadcast_to(jnp.eye(n_out, dtype=x.dtype)[:, None, :], (n_out,) + x.shape)
  terms = []
  first_needed = 0 if input_grad else _first_affine(head_layers)
  for i in range(len(head_layers) - 1, first_needed - 1, -1):
    layer, x_in = head_layers[i], inputs[i]
    p = get_params(head_params, layer.path)
    if layer.kind == 'affine':
      terms.append((layer, p, x_in, delta))
    if i > first_needed or input_grad:
      _, vjp = jax.vjp(lambda v, p=p, layer=layer: _apply(layer, p, v), x_in)
      delta = jax.vmap(lambda d, vjp=vjp: vjp(d)[0])(delta)
  return terms, (delta if input_grad else None)


def _apply(layer, params, x):
  """A layer on token rows `(N, n)`, as the one sequence `(1, N, n)` its parameters were
  made for."""
  return layer.apply_fn(params, x[None])[0]


def _first_affine(head_layers) -> int:
  kinds = [layer.kind for layer in head_layers]
  return kinds.index('affine') if 'affine' in kinds else len(kinds)


def _outer_mean(d1, d2):
  """`mean_c D1_c D2_cᵀ` for `(C, N1, k)`, `(C, N2, k)` -> `(N1, N2)`."""
  return jnp.einsum('cik,cjk->ij', d1, d2) / d1.shape[0]


def layer_terms_ntk(terms1, terms2, trained) -> jnp.ndarray:
  """Σ over affine layers of `[a² H1 H2ᵀ·[W trained] + c²·[b trained]] ⊙ mean_c Δ1 Δ2ᵀ`.

  `terms1`, `terms2`: `forward_backward` terms of the rows and the columns; `trained(path)`
  -> `(W trained, b trained)` of the layer at `path`.
  """
  theta = 0.0
  for (layer, p, h1, d1), (_, _, h2, d2) in zip(terms1, terms2):
    w_on, b_on = trained(layer.path)
    if not (w_on or b_on):
      continue
    a, c = scales(layer.apply_fn, p[0])
    front = 0.0
    if w_on:
      front = a ** 2 * (h1 @ h2.T)
    if b_on and p[1] is not None:
      front = front + c ** 2
    theta = theta + front * _outer_mean(d1, d2)
  return theta


def head_ntk(head_layers, head_params, trained, z1, z2=None) -> jnp.ndarray:
  """Empirical NTK `(N1, N2)` of a recognised head (module docstring) on inputs `z1 (N1, d)`,
  `z2 (N2, d)` (default `z1`), traced over outputs; `trained(path)` as in `layer_terms_ntk`."""
  t1, _ = forward_backward(head_layers, head_params, z1)
  t2 = t1 if z2 is None else forward_backward(head_layers, head_params, z2)[0]
  theta = layer_terms_ntk(t1, t2, trained)
  if isinstance(theta, float):      # nothing trains
    n2 = z1.shape[0] if z2 is None else z2.shape[0]
    return jnp.zeros((z1.shape[0], n2), z1.dtype)
  return theta


__all__ = ['POINTWISE', 'AFFINE', 'Layer', 'leaf_layers', 'get_params', 'scales', 'plan',
           'forward_backward', 'layer_terms_ntk', 'head_ntk']
