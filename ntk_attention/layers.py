"""Attention across samples as neural-tangents `stax` layers.

A dataset of N points with d features is ONE sequence of shape `(1, N, d)`: tokens are
samples (docs/method.md §2). Every layer here is a `stax` triple `(init_fn, apply_fn, kernel_fn)`, so
the infinite-width kernel and the finite-width network come from one definition and
compose with NT's own layers in `stax.serial`.

Context mask. A boolean vector `c` of length N marks the context tokens (the training
set); every token attends only to context tokens, so training features never depend on
evaluation points. Pass it as a keyword argument, like NT's `Aggregate(pattern=...)`:

  apply_fn(params, seq, context=c)
  kernel_fn(seq, None, 'ntk', context=(c, c))   # one entry per kernel argument

`context=None` means every token is context. Kernels are the token x token covariances,
`kernel_fn(..., diagonal_spatial=False)` of shape `(1, 1, N, N)`; NT picks that layout
automatically because these layers require full spatial covariances.

What `x2` means. `kernel_fn(seq1, seq2, ...)` is the covariance between two independent
sequences, each token attending only to its own sequence's context; it is not the kernel
between test and training samples (test tokens must attend to the training set). Because
that reading is a silent trap, the attention layers refuse a second sequence unless
`context=(c1, c2)` names both contexts. For samples, lay them out as one sequence, or use
`ntk_attention.transductive_kernel_fn` / `transductive_empirical_ntk_fn` /
`transductive_apply_fn` (NT's signatures on `(n, d)` arrays, the second argument the
training set).

Conventions: NT averages covariances over channels, `Σ_ij = x_i·x_j / d`. The paper's
unit-norm inputs `‖x_i‖ = 1` are `Σ_ii = 1` in that convention, which is what `Normalize`
produces (`x·√d/‖x‖`, RMS 1).
"""
from typing import Optional

import jax
import jax.numpy as jnp

from ntk_attention import _nt

NORMALIZATIONS = ('linear', 'softmax')
Context = Optional[jnp.ndarray]


def as_sequence(x_context, x_eval=None):
  """Lays a dataset out as one sequence with its context mask.

  Args:
    x_context: `(n_c, d)` context (training) points.
    x_eval: optional `(n_e, d)` evaluation points, appended after the context.

  Returns:
    `(seq, context)`: `seq` of shape `(1, n_c + n_e, d)` (tokens = samples) and a
    boolean `context` of shape `(n_c + n_e,)`, True on the first `n_c` tokens.
  """
  x_context = jnp.asarray(x_context)
  if x_context.ndim != 2:
    raise ValueError(f'x_context must be (n, d), got shape {x_context.shape}.')
  parts = [x_context]
  if x_eval is not None:
    x_eval = jnp.asarray(x_eval, x_context.dtype)
    if x_eval.ndim != 2 or x_eval.shape[1] != x_context.shape[1]:
      raise ValueError(f'x_eval must be (n_e, {x_context.shape[1]}), '
                       f'got shape {x_eval.shape}.')
    parts.append(x_eval)
  seq = jnp.concatenate(parts, axis=0)[None]
  n_c = x_context.shape[0]
  context = jnp.arange(seq.shape[1]) < n_c
  return seq, context


def _split_context(context):
  """`context` kwarg of a kernel_fn -> `(c1, c2)`."""
  if isinstance(context, (tuple, list)):
    if len(context) != 2:
      raise ValueError('kernel_fn takes context=(context1, context2).')
    return tuple(context)
  return context, context


def _batched_context(c, batch: int, n: int, dtype):
  """Context mask `(n,)` or `(batch, n)` (or None) -> float `(batch, n)`."""
  if c is None:
    return jnp.ones((batch, n), dtype)
  c = jnp.asarray(c)
  if c.shape not in ((n,), (batch, n), (1, n)):
    raise ValueError(f'context must have shape ({n},) or ({batch}, {n}); '
                     f'got {c.shape}.')
  return jnp.broadcast_to(c.astype(dtype).reshape((-1, n)), (batch, n))


def _diag_cov(cov, diagonal_batch: bool):
  """Per-sequence token covariance `(B, N, N)` from NT's `cov1`/`cov2`."""
  if diagonal_batch:
    return cov
  return jnp.moveaxis(jnp.diagonal(cov, axis1=0, axis2=1), -1, 0)


def _truncate(sigma, c, rank: int):
  """Top-`rank` eigen-truncation of the context block, extended to all rows.

  With `P_r = U_r U_rᵀ` the projector onto the top-r eigenvectors of the context block
  `Σ_cc = U Λ Uᵀ` (zero outside the context), returns `Σ P_r`: on the context block this
  is `U_r Λ_r U_rᵀ`; an evaluation row is projected onto the same eigenspace. Shapes:
  `sigma (B, N, N)`, `c (B, N)` -> `(B, N, N)`.
  """
  block = sigma * c[:, :, None] * c[:, None, :]
  _, vecs = jnp.linalg.eigh(block)            # ascending eigenvalues
  top = vecs[..., -rank:]                      # (B, N, r)
  proj = top @ jnp.swapaxes(top, -1, -2)
  return sigma @ proj


def softmax_temperature(temperature: Optional[float], d: int) -> float:
  """`temperature`, or the standard attention scaling where it is None: logits
  `x_i·x_j/√d` are `Σ_ij·√d` in NT's `Σ = x·x'/d`, i.e. `T = 1/√d` (docs/method.md §3)."""
  return 1.0 / float(d) ** 0.5 if temperature is None else float(temperature)


def attention_pattern(sigma, c, normalize: str = 'linear', rank: Optional[int] = None,
                      temperature: float = 1.0, average: bool = False):
  """The parameter-free attention pattern `A` from a token covariance.

  `linear`:  `A_ij = Σ_ij c_j` with `Σ_ij = x_i·x_j / d` (docs/method.md §3);
             `rank=r` replaces `Σ` on the context by its top-r eigen-truncation.
  `softmax`: `A_ij = exp(Σ_ij/T) c_j / Σ_k exp(Σ_ik/T) c_k` (Nadaraya–Watson); T must
             be a number here (see `softmax_temperature` for the default).
  `average=True` divides the linear pattern by the number of context tokens: a global
  scale that every later normalisation removes, but that keeps stacked layers
  (`G^{3^k}`) inside float range.

  Shapes: `sigma (B, N, N)`, `c (B, N)` float -> `A (B, N, N)`.
  """
  if normalize == 'linear':
    s = sigma if rank is None else _truncate(sigma, c, rank)
    a = s * c[:, None, :]
    if average:
      a = a / jnp.sum(c, axis=-1)[:, None, None]
    return a
  if normalize == 'softmax':
    logits = jnp.where(c[:, None, :] > 0, sigma / temperature, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)
  raise ValueError(f'normalize must be one of {NORMALIZATIONS}, got {normalize!r}.')


def _sandwich(a1, mat, a2, diagonal_batch_pair: bool):
  """`A₁ M A₂ᵀ` for NT kernels: `mat (B1, B2, N1, N2)` (pair) or `(B, N, N)`."""
  if mat is None or mat.ndim == 0:   # NT keeps a scalar 0 NTK before any parameter
    return mat
  if diagonal_batch_pair:
    return jnp.einsum('aij,abjk,blk->abil', a1, mat, a2)
  return jnp.einsum('aij,ajk,alk->ail', a1, mat, a2)


def _check_heads(normalize, rank, depth, temperature):
  if normalize not in NORMALIZATIONS:
    raise ValueError(f'normalize must be one of {NORMALIZATIONS}, got {normalize!r}.')
  if rank is not None and (int(rank) != rank or rank < 1):
    raise ValueError(f'rank must be a positive integer or None, got {rank!r}.')
  if rank is not None and normalize != 'linear':
    raise ValueError('rank truncation applies to linear attention only.')
  if int(depth) != depth or depth < 1:
    raise ValueError(f'depth must be a positive integer, got {depth!r}.')
  if temperature is not None and not temperature > 0:
    raise ValueError(f'temperature must be > 0 or None (1/√d), got {temperature!r}.')


def _attention_kernel(k, context, pattern, depth: int = 1, shared: bool = True):
  """Propagates an NT `Kernel` through `depth` attention layers `X ↦ A X`.

  `nngp' = A₁ Σ A₂ᵀ`, `ntk' = A₁ Θ A₂ᵀ`, `cov' = A Σ Aᵀ`, with `A = pattern(cov, c, d)`
  recomputed per layer unless `shared`.
  """
  if len(k.shape1) != 3:
    raise ValueError(f'attention expects inputs of shape (B, N, d); got {k.shape1}.')
  if k.cov2 is not None and not isinstance(context, (tuple, list)):
    raise ValueError(
        'attention kernel_fn(x1, x2) with a second sequence x2 attends within each sequence, '
        'not to a training set: for samples use ntk_attention.transductive_kernel_fn '
        '(or transductive_empirical_ntk_fn), or pass context=(c1, c2) for two sequences.')
  c1, c2 = _split_context(context)
  c1 = _batched_context(c1, k.shape1[0], k.shape1[1], k.nngp.dtype)
  c2 = _batched_context(c2, k.shape2[0], k.shape2[1], k.nngp.dtype)
  nngp, ntk, cov1, cov2 = k.nngp, k.ntk, k.cov1, k.cov2
  a1 = a2 = None
  for _ in range(depth):
    if a1 is None or not shared:
      a1 = pattern(_diag_cov(cov1, k.diagonal_batch), c1, k.shape1[-1])
      a2 = a1 if cov2 is None else pattern(_diag_cov(cov2, k.diagonal_batch), c2, k.shape1[-1])
    nngp = _sandwich(a1, nngp, a2, True)
    ntk = _sandwich(a1, ntk, a2, True)
    cov1 = _sandwich(a1, cov1, a1, not k.diagonal_batch)
    cov2 = None if cov2 is None else _sandwich(a2, cov2, a2, not k.diagonal_batch)
  return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)


@_nt.layer
def LinearizedAttention(depth: int = 1,
                        shared: bool = True,
                        rank: Optional[int] = None,
                        normalize: str = 'linear',
                        temperature: Optional[float] = None,
                        average: bool = False):
  """Parameter-free attention across samples, `X ↦ A X` with `A` from `X` itself.

  One layer: `A_ij = (x_i·x_j / d) c_j`, output `A X` (see `attention_pattern` for the
  `rank`, `softmax` and `average` variants). In kernel space, for an input covariance
  `Σ` (and NTK `Θ`): `nngp' = A₁ Σ A₂ᵀ`, `ntk' = A₁ Θ A₂ᵀ`, `cov' = A Σ Aᵀ`; on a
  full-context block of unit-norm data, `A = G/d` and the output kernel is `G³/d³`.
  The pattern is a fixed function of the inputs, so this is exact when no trainable
  layer precedes it (otherwise, like NT's linear-scaling attention, the pattern's own
  gradient is dropped in the NTK).

  Stacking `depth=k` layers:
    - `shared=True`: the pattern of the input is reused, `X ↦ A^k X`, kernel `G^{2k+1}`;
    - `shared=False`: each layer recomputes its pattern from its own input, kernel
      `G^{3^k}` (layer 2 attends with `G³`, and so on).

  `normalize='softmax'`: `temperature=None` (default) is the standard attention scaling,
  logits `x_i·x_j/√d` (T = 1/√d on NT's `Σ = x·x'/d`); T = 1 would make every row of a
  unit-norm dataset nearly uniform and the normalised kernel nearly constant.

  Input `(B, N, d)` (B sequences of N tokens); output the same shape.
  """
  _check_heads(normalize, rank, depth, temperature)

  def pattern(sigma, c, d):
    return attention_pattern(sigma, c, normalize, rank, softmax_temperature(temperature, d),
                             average)

  def init_fn(rng, input_shape):
    return input_shape, ()

  def apply_fn(params, inputs, *, context=None, **kwargs):
    del params, kwargs
    b, n, d = inputs.shape
    c = _batched_context(context, b, n, inputs.dtype)
    x = inputs
    a = None
    for _ in range(depth):
      if a is None or not shared:
        a = pattern(x @ jnp.swapaxes(x, -1, -2) / d, c, d)
      x = a @ x
    return x

  @_nt.requires(batch_axis=0, channel_axis=-1,
                diagonal_spatial=_nt.Diagonal(input=_nt.Bool.NO))
  def kernel_fn(k, *, context=None, **kwargs):
    del kwargs
    return _attention_kernel(k, context, pattern, depth, shared)

  _declare(apply_fn, kind='linearized_attention', depth=depth, shared=shared, rank=rank,
           normalize=normalize, temperature=temperature, average=average)
  return init_fn, apply_fn, kernel_fn


MECHANISMS = {'IDENTITY': 'linear', 'SOFTMAX': 'softmax'}


@_nt.layer
def QKVAttention(width: int, n_heads: int = 1, mechanism: str = 'IDENTITY'):
  """Trainable self-attention across samples with a context (key) mask.

  NT's `GlobalSelfAttention(width, width, width, n_heads, linear_scaling=True,
  attention_mechanism=mechanism)` — tied queries and keys `K`, values `V`, output `O`,
  all `N(0, 1)` in NTK parameterisation — plus the context mask of this module, which
  NT's layer lacks:

    `P_h = φ((X K_h)(X K_h)ᵀ / (d·width))` masked to context keys,
    `out = concat_h(P_h X V_h) O / √(width · n_heads · d)`,

  φ = identity or row-softmax. Infinite width: the pattern concentrates on
  `A = φ(Σ)` (masked), `nngp' = A₁ Σ A₂ᵀ` and `ntk' = A₁ Θ A₂ᵀ + 2·nngp'` (V and O's share)
  — NT's kernel, which it equals when every token is context (tested).
  Input `(B, N, d)` -> `(B, N, width)`.
  """
  if mechanism not in MECHANISMS:
    raise ValueError(f'mechanism must be one of {tuple(MECHANISMS)}, got {mechanism!r}.')
  if isinstance(width, bool) or int(width) != width or width < 1:
    raise ValueError(f'width must be a positive integer, got {width!r}.')
  normalize = MECHANISMS[mechanism]

  def pattern(sigma, c, d=None):
    del d   # NT's convention: logits Σ of the query/key features, temperature 1
    return attention_pattern(sigma, c, normalize)

  def init_fn(rng, input_shape):
    d = input_shape[-1]
    rk, rv, ro = jax.random.split(rng, 3)
    params = (jax.random.normal(rk, (n_heads, d, width)),
              jax.random.normal(rv, (n_heads, d, width)),
              jax.random.normal(ro, (n_heads * width, width)))
    return input_shape[:-1] + (width,), params

  def apply_fn(params, inputs, *, context=None, **kwargs):
    del kwargs
    w_k, w_v, w_o = params
    b, n, d = inputs.shape
    c = _batched_context(context, b, n, inputs.dtype)
    keys = jnp.einsum('bnd,hdk->bhnk', inputs, w_k)
    sigma = keys @ jnp.swapaxes(keys, -1, -2) / (d * width)      # (B, H, N, N)
    p = jax.vmap(pattern, in_axes=(1, None), out_axes=1)(sigma, c)
    heads = p @ jnp.einsum('bnd,hdv->bhnv', inputs, w_v)         # (B, H, N, V)
    heads = jnp.moveaxis(heads, 1, -2).reshape((b, n, n_heads * width))
    return heads @ w_o / jnp.sqrt(width * n_heads * d).astype(inputs.dtype)

  @_nt.requires(batch_axis=0, channel_axis=-1,
                diagonal_spatial=_nt.Diagonal(input=_nt.Bool.NO))
  def kernel_fn(k, *, context=None, **kwargs):
    del kwargs
    k = _attention_kernel(k, context, pattern)
    ntk = None if k.ntk is None else k.ntk + 2 * k.nngp
    return k.replace(ntk=ntk, is_gaussian=True)

  _declare(apply_fn, kind='qkv_attention', mechanism=mechanism, n_heads=n_heads, width=width)
  return init_fn, apply_fn, kernel_fn


def _token_diag(cov, diagonal_batch: bool):
  """Token variances `(B, N)` from NT's `cov1`/`cov2`."""
  return jnp.diagonal(_diag_cov(cov, diagonal_batch), axis1=-2, axis2=-1)


@_nt.layer
def Normalize(eps: float = 0.0):
  """Per-token RMS normalisation, `x ↦ x·√d / ‖x‖` (RMS 1 over the d channels).

  Kernel: `Σ'_ij = Σ_ij / √(Σ_ii Σ_jj)` (and `Θ'_ij = Θ_ij / √(Σ_ii Σ_jj)`), exact for
  deterministic inputs and in the infinite-width limit, where `‖x_i‖²/d → Σ_ii`. This is
  the paper's `‖x_i‖ = 1` in NT's channel-averaged convention. Any rank >= 2 input with
  channels last; `eps` (default 0) guards all-zero tokens, which the data loaders reject.
  """

  def init_fn(rng, input_shape):
    return input_shape, ()

  def apply_fn(params, inputs, **kwargs):
    del params, kwargs
    d = inputs.shape[-1]
    norm = jnp.sqrt(jnp.sum(inputs ** 2, axis=-1, keepdims=True) + eps)
    return inputs * jnp.sqrt(d) / norm

  @_nt.requires(batch_axis=0, channel_axis=-1,
                diagonal_spatial=_nt.Diagonal(input=_nt.Bool.NO))
  def kernel_fn(k, **kwargs):
    del kwargs
    if len(k.shape1) != 3:
      raise ValueError(f'Normalize kernel expects (B, N, d) inputs; got {k.shape1}.')
    d1 = _token_diag(k.cov1, k.diagonal_batch) + eps / k.shape1[-1]
    d2 = d1 if k.cov2 is None else _token_diag(k.cov2, k.diagonal_batch) + eps / k.shape1[-1]
    s1, s2 = jax.lax.rsqrt(d1), jax.lax.rsqrt(d2)

    def scale_pair(mat):          # (B1, B2, N1, N2)
      if mat is None or mat.ndim == 0:
        return mat
      return mat * s1[:, None, :, None] * s2[None, :, None, :]

    def scale_cov(cov, s):        # (B, N, N) or (B, B, N, N)
      if cov is None:
        return None
      if k.diagonal_batch:
        return cov * s[:, :, None] * s[:, None, :]
      return cov * s[:, None, :, None] * s[None, :, None, :]

    return k.replace(nngp=scale_pair(k.nngp), ntk=scale_pair(k.ntk),
                     cov1=scale_cov(k.cov1, s1), cov2=scale_cov(k.cov2, s2))

  _declare(apply_fn, kind='normalize', eps=float(eps), per_token=True)
  return init_fn, apply_fn, kernel_fn


@_nt.layer
def ScaledDense(width: int, init_std: float = 1.0, W_std: float = 1.0):
  """NT's `Dense(width, W_std, b_std=None, parameterization='ntk')` with weights that start
  at `W ~ N(0, init_std²)` instead of `N(0, 1)` (docs/method.md §4).

  `apply_fn` is NT's: `h = W_std · x W / √d`. On RMS-1 inputs (`Normalize`), `x/√d` is the
  unit-norm `x̂`, so with `W_std = 1` this is `h_r = w_r·x̂` with the trained weight `w_r`
  itself drawn from `N(0, init_std²)`: the study's standard parameterisation, in which an
  optimiser step moves `w_r` directly.

  Kernel, for an input covariance `Σ` and NTK `Θ` (`s = init_std`):
    `nngp' = W_std² s² Σ`,  `ntk' = W_std² (s² Θ + Σ)`;
  the `Σ` term (the gradient w.r.t. `W`) does not depend on `s`, so after a ReLU the
  first-layer NTK `Θ∞ = W_std² ⟨x̂, x̂'⟩ (π − θ)/(2π)` is the same for every `s` (ReLU is
  1-homogeneous and its derivative is scale-free). `init_std = 1` is NT's `Dense`.
  Input `(..., d)` -> `(..., width)`.
  """
  if not (init_std > 0 and init_std < float('inf')):
    raise ValueError(f'init_std must be a positive finite number, got {init_std!r}.')
  init_dense, apply_fn, _ = _nt.stax.Dense(width, W_std=W_std, b_std=None,
                                           parameterization='ntk')

  def init_fn(rng, input_shape):
    out_shape, (w, b) = init_dense(rng, input_shape)
    return out_shape, (w * init_std, b)

  @_nt.requires(batch_axis=0, channel_axis=-1)
  def kernel_fn(k, **kwargs):
    del kwargs
    var = W_std ** 2 * init_std ** 2

    def scale(mat):
      return None if mat is None else var * mat

    ntk = None if k.ntk is None else W_std ** 2 * (init_std ** 2 * k.ntk + k.nngp)
    return k.replace(nngp=scale(k.nngp), ntk=ntk, cov1=scale(k.cov1), cov2=scale(k.cov2),
                     is_gaussian=True, is_input=False)

  return init_fn, apply_fn, kernel_fn


@_nt.layer
def FrozenReadout(out_dim: int):
  """Readout `f = h a / √m` with `a ∈ {−1, +1}^{m×C}` drawn once and frozen.

  `apply_fn` wraps `a` in `stop_gradient`, so NT's `empirical_ntk_fn` and any optimiser
  see no gradient for it. Kernel: `E[a²] = 1`, so `nngp' = nngp` and, the weights being
  frozen, `ntk' = ntk` (no readout share). Input `(..., m)` -> `(..., C)`.
  """
  if int(out_dim) != out_dim or out_dim < 1:
    raise ValueError(f'out_dim must be a positive integer, got {out_dim!r}.')

  def init_fn(rng, input_shape):
    m = input_shape[-1]
    a = jax.random.rademacher(rng, (m, out_dim)).astype(jnp.float32)
    return input_shape[:-1] + (out_dim,), a

  def apply_fn(params, inputs, **kwargs):
    del kwargs
    a = jax.lax.stop_gradient(params).astype(inputs.dtype)
    return inputs @ a / jnp.sqrt(inputs.shape[-1]).astype(inputs.dtype)

  @_nt.requires(batch_axis=0, channel_axis=-1)
  def kernel_fn(k, **kwargs):
    del kwargs
    return k.replace(is_gaussian=True)

  _declare(apply_fn, kind='frozen_readout', frozen=True, out_dim=int(out_dim))
  return init_fn, apply_fn, kernel_fn


# What a layer of this module says about itself, read by `models.compose` and the closed-form
# empirical NTKs (`ntk_closed_form`): kept on its apply_fn, which NT's `serial` keeps.
_DECLARED_ATTRIBUTE = 'ntk_attention_declared'


def _declare(apply_fn, **spec):
  setattr(apply_fn, _DECLARED_ATTRIBUTE, dict(spec))


def declared(apply_fn) -> dict:
  """What a layer declares about itself (`{}` for a layer that declares nothing):
  `kind` ('normalize', 'linearized_attention', 'qkv_attention', 'frozen_readout'), its
  arguments, and `frozen=True` for a layer whose parameters never train."""
  return dict(getattr(apply_fn, _DECLARED_ATTRIBUTE, {}))


__all__ = ['declared', 'as_sequence', 'attention_pattern', 'softmax_temperature', 'LinearizedAttention', 'Normalize',
           'ScaledDense', 'FrozenReadout', 'QKVAttention', 'NORMALIZATIONS', 'MECHANISMS']
