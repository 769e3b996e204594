"""Entry `ntk`: the closed-form empirical NTK of the study's models vs NT's generic methods."""
import os
from typing import List

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from ntk_attention import kernels
from ntk_attention import models

SIZES = {  # (n, d, m) per model; quick for CI
    'full': {'relu_mlp': (512, 784, 4096), 'mlp_attn': (256, 784, 2048),
             'mlp_attn_qkv': (500, 784, 1024)},
    'quick': {'relu_mlp': (64, 64, 256), 'mlp_attn': (48, 64, 256),
              'mlp_attn_qkv': (48, 64, 64)},
}
TARGETS = {  # per model: the sizes at which the closed form must beat NT's faster method
    'relu_mlp': {'sizes': (512, 784, 4096), 'speedup': 100.0, 'rel': 1e-4},
    'mlp_attn_qkv': {'sizes': (500, 784, 1024), 'speedup': 100.0, 'rel': 1e-4},
}
# Peak memory of the generic methods over their float32 Jacobian (N*C*P): measured 3.0x for
# jacobian_contraction (20 GB at n=512 d=784 m=4096 C=1) and 1.7x for ntk_vector_products.
GENERIC_PEAK_OVER_JACOBIAN = 3.0


def _memory_limit_gb(bench: harness.Args) -> float:
  if bench.ntk_max_memory_gb > 0:
    return bench.ntk_max_memory_gb
  try:
    return 0.9 * os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9
  except (ValueError, OSError, AttributeError):
    return 16.0


def _generic_n(n: int, n_params: int, c: int, bench: harness.Args):
  """Points the generic methods get, and why they get fewer than n (or None)."""
  cap = min(n, bench.ntk_generic_max_n) if bench.ntk_generic_max_n else n
  limit = _memory_limit_gb(bench)
  per_point_gb = GENERIC_PEAK_OVER_JACOBIAN * c * n_params * 4 / 1e9
  if cap * per_point_gb > limit:
    cap = max(1, int(limit / per_point_gb))
  if cap >= n:
    return n, None
  return cap, (f'generic methods on the first {cap} of {n} points: estimated peak '
               f'{n * per_point_gb:.3g} GB at full n, limit {limit:.3g} GB '
               '(--ntk_max_memory_gb, --ntk_generic_max_n)')


def run(args: harness.Args) -> List[dict]:
  """Closed-form empirical NTK vs NT's generic jacobian_contraction / ntk_vector_products.

  Same float32 inputs (uniform [0, 1]) and parameters for all three; each is a jitted
  function of `(params, x)` closed over the model. Per model: one row per generic method
  and one against the faster of the two.
  """
  rows = []
  sizes_table = SIZES['quick' if args.quick else 'full']
  for name in args.ntk_models:
    n, d, m = sizes_table[name]
    c = args.ntk_out_dim
    model = models.build(name, m, c)
    key = jax.random.PRNGKey(args.seed)
    params = models.init_params(model, key, d, dtype=jnp.float32)
    x = np.random.default_rng(args.seed).uniform(size=(n, d)).astype(np.float32)
    mask = jax.tree_util.tree_leaves(models.trainable_mask(model, params))
    n_params = sum(int(p.size) for p, trained in zip(jax.tree_util.tree_leaves(params), mask)
                   if trained)
    n_gen, note = _generic_n(n, n_params, c, args)
    sizes = f'n={n} d={d} m={m} C={c} float32'

    def fn(method):
      return jax.jit(lambda p, xx: kernels.empirical_ntk(model, p, xx, None, method))

    closed = harness.measure(fn('closed_form'), (params, x), args)
    if closed.result.dtype != jnp.float32:
      raise TypeError(f'closed form ran in {closed.result.dtype}, expected float32.')
    if n_gen < n:   # time the closed form on the same points as the generic methods
      closed_sub = harness.measure(fn('closed_form'), (params, x[:n_gen]), args)
    else:
      closed_sub = closed
    gen = {}
    for method in ('jacobian_contraction', 'ntk_vector_products'):
      gen[method] = harness.measure(fn(method), (params, x[:n_gen]), args)
    gen_sizes = sizes if n_gen == n else f'n={n_gen} d={d} m={m} C={c} float32'
    spec = TARGETS.get(name)
    target = spec is not None and (n, d, m) == spec['sizes'] and n_gen == n
    for method, label, old, fastest in harness.against_generic(gen):
      rel = harness.max_rel_diff(closed_sub.result, old.result)
      notes = ([f'faster generic = {fastest}'] if method == 'fastest' else []) + (
          [note] if note else [])
      extra = {'model': name, 'max_rel_diff': rel, 'note': '; '.join(notes)}
      if n_gen < n:
        extra['closed_form_full_n_s'] = closed.median_s
      if method == 'fastest' and target:
        extra['target'] = f">={spec['speedup']:g}x, max_rel_diff<={spec['rel']:g}"
        extra['meets_target'] = bool(old.median_s / closed_sub.median_s >= spec['speedup']
                                     and rel <= spec['rel'])
      case = f'{name}: closed_form vs ' + ('faster generic' if method == 'fastest' else method)
      rows.append(harness.make_row('ntk', case, gen_sizes, label, old,
                                   'closed_form', closed_sub, **extra))
  return rows
