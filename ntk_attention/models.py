"""Model triples of the study, and which of their parameters train.

Every model is `serial(prefix, head)` on a dataset laid out as one sequence `(1, N, d)`
(see `layers.as_sequence`):

  relu_mlp(m, C):  prefix = Normalize;                     head = relu_head(m, C)
  mlp_attn(m, C):  prefix = Normalize → LinearizedAttention → Normalize; head = relu_head
  mlp_attn_qkv:    prefix = Normalize → QKVAttention(width m, trainable) → Normalize; head

`relu_head(m, C)` is the paper's `f(x) = (1/√m) Σ_r a_r σ(w_r·x)`: NT `Dense(m)` in NTK
parameterisation (no bias), ReLU, and a frozen ±1 readout (`layers.FrozenReadout`).

Parameterisation (docs/method.md §4). The head's first layer is `layers.ScaledDense`:
NT's `h = W_std · x W / √d` with `W ~ N(0, init_std²)`. On the RMS-1 inputs that
`Normalize` produces (the paper's unit-norm x̂, rescaled by √d) and `W_std = 1` this is
`h_r = w_r·x̂` with the trained weight `w_r = W[:, r] ~ N(0, init_std²)` — the study's
standard parameterisation, `init_std = 0.01` by default, so Adam moves `w_r` itself by
about lr per step, as in the study. The ReLU NTK ignores the init scale (it is
1-homogeneous in w); with only the first layer trained and `a² = 1`, NT's `ntk` is
`Θ∞(x, x') = W_std² ⟨x̂, x̂'⟩ (π − θ)/(2π)` for every `init_std` — the paper's kernel —
while f at initialisation, the NNGP and the training dynamics scale with `init_std`.
"""
import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from ntk_attention import _nt
from ntk_attention import layers

stax = _nt.stax

MODELS = ('relu_mlp', 'mlp_attn', 'mlp_attn_qkv')


DEFAULT_INIT_STD = 0.01   # [choice] the study's N(0, 0.01²) first layer (docs/method.md §4)


def relu_head(width: int, out_dim: int = 1, W_std: float = 1.0,
              init_std: float = DEFAULT_INIT_STD):
  """`ScaledDense(width, init_std, W_std, no bias) → ReLU → FrozenReadout(out_dim)`, per
  token: `f(x) = (1/√m) Σ_r a_r ReLU(w_r·x̂)` with `w_r ~ N(0, init_std²)` (W_std = 1)."""
  _check_width(width)
  return stax.serial(
      layers.ScaledDense(width, init_std=init_std, W_std=W_std),
      stax.Relu(),
      layers.FrozenReadout(out_dim))


def attention_prefix(depth: int = 1, shared: bool = True, rank: Optional[int] = None,
                     normalize: str = 'linear', temperature: Optional[float] = None):
  """Parameter-free `Normalize → LinearizedAttention → Normalize`; kernel: normalised `G³`.

  The pattern is averaged over context tokens (a global scale that the final
  normalisation removes) so deep stacks stay in float range.
  """
  return stax.serial(
      layers.Normalize(),
      layers.LinearizedAttention(depth=depth, shared=shared, rank=rank,
                                 normalize=normalize, temperature=temperature,
                                 average=normalize == 'linear'),
      layers.Normalize())


def qkv_prefix(width: int, n_heads: int = 1, mechanism: str = 'IDENTITY'):
  """`Normalize → QKVAttention(width) → Normalize`: trainable attention across samples."""
  return stax.serial(
      layers.Normalize(),
      layers.QKVAttention(width, n_heads=n_heads, mechanism=mechanism),
      layers.Normalize())


def relu_mlp(width: int, out_dim: int = 1, W_std: float = 1.0,
             init_std: float = DEFAULT_INIT_STD):
  """2-layer ReLU net on unit-norm inputs; `(init_fn, apply_fn, kernel_fn)`."""
  return build('relu_mlp', width, out_dim, W_std=W_std, init_std=init_std).triple


def mlp_attn(width: int, out_dim: int = 1, W_std: float = 1.0,
             init_std: float = DEFAULT_INIT_STD, **attention):
  """The same net behind parameter-free linearized attention; a stax triple.

  `attention`: `depth`, `shared`, `rank`, `normalize`, `temperature` of `attention_prefix`.
  """
  return build('mlp_attn', width, out_dim, W_std=W_std, init_std=init_std, **attention).triple


def mlp_attn_qkv(width: int, out_dim: int = 1, W_std: float = 1.0,
                 init_std: float = DEFAULT_INIT_STD, **attention):
  """The same net behind trainable QKV attention across samples; a stax triple.

  `attention`: `n_heads`, `mechanism` ('IDENTITY' or 'SOFTMAX') of `qkv_prefix`.
  """
  return build('mlp_attn_qkv', width, out_dim, W_std=W_std, init_std=init_std,
               **attention).triple


@dataclasses.dataclass(frozen=True)
class Model:
  """A model split into its prefix and its ReLU head.

  `triple` is `stax.serial(prefix, head)`; its parameters are `(prefix_params,
  head_params)` with `head_params = [(W, b), (), a]` (NT's serial makes lists). When `prefix_trainable` is False the
  prefix is a fixed function of the inputs: training and the closed-form empirical NTK
  then work on its features, computed once.
  """
  name: str
  width: int
  out_dim: int
  W_std: float
  prefix: Any
  head: Any
  prefix_trainable: bool
  options: tuple = ()
  init_std: float = DEFAULT_INIT_STD

  @property
  def triple(self):
    return stax.serial(self.prefix, self.head)

  @property
  def init_fn(self) -> Callable:
    return self.triple[0]

  @property
  def apply_fn(self) -> Callable:
    return self.triple[1]

  @property
  def kernel_fn(self) -> Callable:
    return self.triple[2]


def build(name: str, width: int, out_dim: int = 1, W_std: float = 1.0,
          init_std: float = DEFAULT_INIT_STD, **options) -> Model:
  """`Model` by name: one of `MODELS`; `options` go to the attention prefix; `init_std`
  is the std of the head's first-layer weights (the analytic NTK does not depend on it).

  The same arguments return the same `Model` object, so that programs compiled with a
  model as a static argument (training, attacks, kernels) are reused, not recompiled.
  """
  _check_width(width)
  try:
    return _build(name, int(width), int(out_dim), float(W_std), float(init_std),
                  tuple(sorted(options.items())))
  except TypeError as e:      # an unhashable option value: build without the memo
    if 'unhashable' not in str(e):
      raise
    return _build.__wrapped__(name, int(width), int(out_dim), float(W_std), float(init_std),
                              tuple(sorted(options.items())))


@functools.lru_cache(maxsize=256)
def _build(name, width, out_dim, W_std, init_std, options) -> Model:
  options = dict(options)
  if name == 'relu_mlp':
    if options:
      raise ValueError(f'relu_mlp takes no attention options, got {sorted(options)}.')
    prefix, trainable = layers.Normalize(), False
  elif name == 'mlp_attn':
    prefix, trainable = attention_prefix(**options), False
  elif name == 'mlp_attn_qkv':
    prefix, trainable = qkv_prefix(width, **options), True
  else:
    raise ValueError(f'unknown model {name!r}; choose from {MODELS}.')
  return Model(name, width, out_dim, W_std, prefix, relu_head(width, out_dim, W_std, init_std),
               trainable, tuple(sorted(options.items())), init_std)


def init_params(model: Model, key, n_features: int, dtype=jnp.float32):
  """Parameters for sequences of `n_features` channels, cast to `dtype`.

  Shapes do not depend on the sequence length. Returns `(prefix_params, head_params)`.
  """
  _, params = model.init_fn(key, (1, 1, n_features))
  return jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype), params)


def trainable_mask(params):
  """Pytree of bools: True for trained leaves; the readout `a` (last head leaf) is frozen."""
  prefix_params, head_params = params
  mask_prefix = jax.tree_util.tree_map(lambda _: True, prefix_params)
  mask_head = [jax.tree_util.tree_map(lambda _: True, p) for p in head_params[:-1]]
  mask_head.append(jax.tree_util.tree_map(lambda _: False, head_params[-1]))
  return type(params)([mask_prefix, type(head_params)(mask_head)])


def features(model: Model, params, seq, context=None):
  """Prefix output `(1, N, d')`: the input of the ReLU head."""
  return model.prefix[1](params[0], seq, context=context)


def head_apply(model: Model, head_params, feats):
  """Head output `(..., C)` on prefix features `(..., d')`."""
  return model.head[1](head_params, feats)


def _check_width(width):
  if isinstance(width, bool) or int(width) != width or width < 1:
    raise ValueError(f'width must be a positive integer, got {width!r}.')


__all__ = ['MODELS', 'DEFAULT_INIT_STD', 'Model', 'build', 'relu_head', 'attention_prefix', 'qkv_prefix',
           'relu_mlp', 'mlp_attn', 'mlp_attn_qkv', 'init_params', 'trainable_mask',
           'features', 'head_apply']
