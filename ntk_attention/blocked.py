"""Kernels at large n: row-blocked float64 kernels under a memory budget (docs/method.md §13).

For a model with a parameter-free prefix (relu_mlp, mlp_attn and its variants), the features
`Z (N × d)` of the prefix are computed once; the empirical and analytic NTKs of the per-token
head are then built row block by row block into one float64 numpy array `(N, N)`, so only
`block × N` temporaries exist at a time (`empirical_ntk_blocked`, `analytic_ntk_blocked`).
With several devices each block's rows are sharded over a 1-d mesh (`row_placement`).

The budget: `devices.memory_budget_gb` (80 % of physical memory, or `--max_memory_gb`) sizes
the blocks (`block_rows`), and `influence_peak_gb` / `check_fits` / `largest_n_train` say,
before any work, whether a malleability cell's kernels and exact influence fit it.
"""
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import compiles
from ntk_attention import devices as devices_lib
from ntk_attention import kernels
from ntk_attention import models as models_lib
from ntk_attention import ntk_closed_form

# Peak of a malleability cell in float64 N × N arrays (N = n_train + n_eval): the kernel
# (whose train block `influence.loo_influence_lean` factors in place), Θ∞, one work block
# — Θ∞'s train block copied for its KRR, or a kernel row block, capped at one N × N array
# (`block_rows`) — and one more measured with an attention model (its closed-form eNTK's
# float64 Gram products; 2L-ReLU alone peaks near three); plus a fixed `INFLUENCE_BASE_GB`
# (Python, JAX, data, training, attacks). docs/method.md §13 has the measurements.
INFLUENCE_PEAK_KERNELS = 4.0
INFLUENCE_BASE_GB = 0.58


def influence_peak_gb(n_train: int, n_eval: int) -> float:
  """Estimated peak (GB) of kernels + exact influence at these sizes:
  `INFLUENCE_BASE_GB + INFLUENCE_PEAK_KERNELS · 8 (n + t)²` bytes (float64)."""
  return INFLUENCE_BASE_GB + INFLUENCE_PEAK_KERNELS * 8.0 * (n_train + n_eval) ** 2 / 1e9


def largest_n_train(n_eval: int, max_memory_gb: Optional[float] = None) -> int:
  """The largest `n_train` whose `influence_peak_gb(n_train, n_eval)` fits the budget."""
  room = max(devices_lib.memory_budget_gb(max_memory_gb) - INFLUENCE_BASE_GB, 0.0)
  n = max(int((room * 1e9 / (8.0 * INFLUENCE_PEAK_KERNELS)) ** 0.5) - int(n_eval), 0)
  while n > 0 and influence_peak_gb(n, n_eval) > devices_lib.memory_budget_gb(max_memory_gb):
    n -= 1            # float rounding of the square root
  return n


def check_fits(n_train: int, n_eval: int, max_memory_gb: Optional[float] = None,
               flag: str = '--n_train') -> None:
  """ValueError (one line, before any work) when kernels and exact influence at
  `n_train + n_eval` points would not fit the budget; it names the largest n_train that does."""
  need, budget = influence_peak_gb(n_train, n_eval), devices_lib.memory_budget_gb(max_memory_gb)
  if need > budget:
    raise ValueError(
        f'{flag}={n_train} (with {n_eval} evaluation points) needs about {need:.3g} GB for '
        f'its float64 kernels and exact influence, over the {budget:.3g} GB budget '
        f'(--max_memory_gb): the largest n_train that fits is '
        f'{largest_n_train(n_eval, max_memory_gb)}.')


def block_rows(n: int, row_bytes: float, max_memory_gb: Optional[float] = None,
               share: float = 0.1) -> int:
  """Rows per block so that a block's temporaries (`row_bytes` each) use at most `share`
  of the budget and at most one float64 n × n array (the work block of the memory model,
  `influence_peak_gb`); between 1 and n."""
  room = min(share * devices_lib.memory_budget_gb(max_memory_gb) * 1e9, 8.0 * n * n)
  rows = int(room // max(row_bytes, 1.0))
  return int(min(max(rows, 1), n))


def row_placement(devices=None):
  """`(put_rows, put_all)` for row-blocked kernels on several devices (docs/method.md §13).

  With one device both are identities. With k > 1 (`jax.devices()` by default: GPUs, a TPU
  slice, `XLA_FLAGS=--xla_force_host_platform_device_count=k` on a CPU, or the devices of
  every process of a multi-process run, `devices.initialize`),
  `put_rows(a)` pads `a`'s rows to a multiple of k (repeating the last row) and shards them
  over a 1-d mesh `('rows',)`, and `put_all(a)` replicates `a`; a jitted row function then
  computes each device's rows where they live. Callers slice the padding off.
  """
  devices = list(jax.devices() if devices is None else devices)
  if len(devices) < 2:
    return (lambda a: a), (lambda a: a)
  mesh = devices_lib.mesh_1d('rows', devices)
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('rows'))
  everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def put_rows(a):
    pad = -a.shape[0] % len(devices)
    if pad:
      a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
    return jax.device_put(a, rows)

  return put_rows, lambda a: jax.device_put(a, everywhere)


def build_by_rows(row_fn, n: int, block: int, n_train: Optional[int] = None):
  """`(n, n)` float64 numpy array whose rows `[s, e)` are `row_fn(s, e)[:e − s]`,
  filled `block` rows at a time (the last block may be shorter; `row_fn` may return
  padding rows after the first `e − s`, see `row_placement`).

  With `n_train`, the same kernel as `kernels.Blocks` of three separate C-contiguous arrays
  (train (n_train, n_train), eval_train (t, n_train), eval (t, t)): the train block can then
  be factored in place (`ridge.factor_in_place`) without copying it out of the N × N array.
  """
  if n_train is None:
    out = np.empty((n, n), np.float64)
    put = lambda s, e, rows: out.__setitem__(slice(s, e), rows)
  else:
    if not 1 <= n_train <= n:
      raise ValueError(f'n_train must be in [1, {n}], got {n_train}.')
    train = np.empty((n_train, n_train), np.float64)
    eval_train = np.empty((n - n_train, n_train), np.float64)
    evals = np.empty((n - n_train, n - n_train), np.float64)

    def put(s, e, rows):
      if s < n_train:        # the rows of [s, min(e, n_train)) go to the train blocks
        m = min(e, n_train)
        train[s:m] = rows[:m - s, :n_train]
        rows, s = rows[m - s:], m
      if e > s:
        eval_train[s - n_train:e - n_train] = rows[:, :n_train]
        evals[s - n_train:e - n_train] = rows[:, n_train:]
  for start in range(0, n, block):
    stop = min(start + block, n)
    rows = np.asarray(devices_lib.to_host(row_fn(start, stop)), np.float64)[:stop - start]
    if not np.all(np.isfinite(rows)):
      raise FloatingPointError(f'blocked kernel has non-finite entries in rows {start}:{stop}.')
    put(start, stop, rows)
  return out if n_train is None else kernels.Blocks(train, eval_train, evals)


@compiles.jit
def _closed_form_rows(z_rows, z, w, W_std):
  d, m = w.shape
  scale = W_std / jnp.sqrt(d).astype(w.dtype)
  s_rows = (z_rows @ w * scale > 0).astype(w.dtype)
  s = (z @ w * scale > 0).astype(w.dtype)
  return (z_rows @ z.T) * (s_rows @ s.T) * (W_std ** 2 / (d * m))


@compiles.jit
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
  """The prefix's features `(N, d')` of `[x_train; x_eval]` in `dtype`, with `params[0]`
  (None: drawn from `PRNGKey(0)`): `models.prefix_features`, one program per (prefix, dtype,
  shapes) with the bits of the op-by-op run."""
  if model.prefix_kind != 'fixed':
    raise ValueError(f'blocked kernels need a parameter-free prefix; {model.name} has a '
                     'trainable one: use empirical_ntk.')
  return models_lib.prefix_features(model.prefix, None if params is None else params[0],
                                    x_train, x_eval, dtype)


@functools.partial(compiles.jit, static_argnums=(0,))
def _layer_terms(model, head_params, z):
  """`ntk_closed_form.forward_backward` terms as arrays: `[(H (N, n_in), Δ (C, N, n_out))]`."""
  terms, _ = ntk_closed_form.forward_backward(model.head_layers, head_params, z)
  return [(h, d) for _, _, h, d in terms]


@functools.partial(compiles.jit, static_argnums=(0,))
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
                          block: Optional[int] = None, as_blocks: bool = False):
  """`kernels.empirical_ntk(model, ...)` of a parameter-free prefix, row block by row block, as a
  float64 numpy `(N, N)` (entries computed in the dtype of the head's parameters).

  The study's head: `kernels.closed_form_ntk` rows; a Dense/elementwise head: the layer sums of
  `ntk_closed_form` from its per-token terms, computed once (`O(N·C·Σ widths)`); any other
  per-token head: NT's generic method in blocks of tokens (`kernels.empirical_ntk`).
  `block` rows at a time (default: 10 % of `devices.memory_budget_gb`); with several
  devices each block's rows are sharded across them (`row_placement`). `as_blocks`: return
  `kernels.Blocks` of separate contiguous arrays instead (`build_by_rows`).
  """
  dtype = jax.tree_util.tree_leaves(params[1])[0].dtype
  z = _prefix_features(model, params, x_train, x_eval, dtype)
  n = z.shape[0]
  n_train = int(jnp.shape(x_train)[0]) if as_blocks else None
  if model.head_kind == 'opaque':
    return _maybe_blocks(kernels._check_finite(np.asarray(kernels._generic_head_ntk(
        model, 'jacobian_contraction', (-1,), params[1], z, max_memory_gb), np.float64),
        'blocked empirical NTK'), n_train)
  put_rows, put_all = row_placement()
  if model.head_kind == 'relu_head':
    w = params[1][0][0]
    block = block or block_rows(n, 6.0 * n * jnp.dtype(w.dtype).itemsize, max_memory_gb)
    z_all, w_all = put_all(z), put_all(w)
    return build_by_rows(lambda s, e: _closed_form_rows(put_rows(z[s:e]), z_all, w_all,
                                                        kernels._relu_head_w_std(model)), n, block,
                         n_train)
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

  return build_by_rows(rows, n, block, n_train)


def _maybe_blocks(k: np.ndarray, n_train: Optional[int]):
  """`k`, or its `kernels.Blocks` as separate contiguous arrays when `n_train` is given."""
  if n_train is None:
    return k
  return kernels.Blocks(*(np.ascontiguousarray(b) for b in kernels.split_blocks(k, n_train)))


def analytic_ntk_blocked(model: models_lib.Model, x_train, x_eval=None,
                         max_memory_gb: Optional[float] = None,
                         block: Optional[int] = None, as_blocks: bool = False):
  """`kernels.analytic_kernel(model, ...)` ('ntk') of a parameter-free prefix, in float64 row blocks.

  The prefix maps inputs deterministically to features Z, so its output covariance is
  `Σ = Z Zᵀ/d` exactly and the model's NTK is its head's NTK on the features as i.i.d.
  points: for the study's head the arc-cosine `Θ∞ = W_std² Σ (π − θ)/(2π)`, `cos θ =
  Σ_ij/√(Σ_ii Σ_jj)` (docs/method.md §4); for a recognised Dense/elementwise head its own
  `kernel_fn` on feature rows (docs/method.md §17). Any other head: the whole model's
  `analytic_kernel` (not blocked). `as_blocks`: `kernels.Blocks` as in `empirical_ntk_blocked`.
  """
  kernels._check_declared_mask(model)
  n_train = int(jnp.shape(x_train)[0]) if as_blocks else None
  if model.head_kind == 'opaque':
    x_eval64 = None if x_eval is None else jnp.asarray(x_eval, jnp.float64)
    return _maybe_blocks(np.asarray(kernels.analytic_kernel(
        model, jnp.asarray(x_train, jnp.float64), x_eval64), np.float64), n_train)
  z = _prefix_features(model, None, x_train, x_eval, jnp.float64)
  n = z.shape[0]
  block = block or block_rows(n, 6.0 * n * 8, max_memory_gb)
  put_rows, put_all = row_placement()
  z_all = put_all(z)
  if model.head_kind == 'relu_head':
    return build_by_rows(lambda s, e: _arccos_rows(put_rows(z[s:e]), z_all,
                                                   kernels._relu_head_w_std(model), s), n, block,
                         n_train)
  head_kernel = _head_kernel_rows(model)
  return build_by_rows(lambda s, e: head_kernel(put_rows(z[s:e]), z_all), n, block, n_train)


@functools.lru_cache(maxsize=None)
def _head_kernel_rows(model):
  """`(z_rows (b, d), z (N, d)) -> (b, N)`: the head's analytic NTK between feature rows
  (each a sequence of one token, as the per-token head sees it)."""
  @compiles.jit
  def rows(z_rows, z):
    return model.head[2](z_rows[:, None, :], z[:, None, :], 'ntk')[:, :, 0, 0]
  return rows


__all__ = ['INFLUENCE_PEAK_KERNELS', 'INFLUENCE_BASE_GB', 'influence_peak_gb', 'largest_n_train',
           'check_fits', 'block_rows', 'row_placement', 'build_by_rows', 'empirical_ntk_blocked',
           'analytic_ntk_blocked']
