"""Entry `ntk_head`: the closed-form eNTK of a composed model's Dense/ReLU head vs NT."""
import functools
from typing import List

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import harness
from ntk_attention import data
from ntk_attention import kernels
from ntk_attention import layers
from ntk_attention import models

SIZES = {  # points of mnist_sample (train + test) and the head's width; quick for CI
    'full': dict(n_train=384, n_test=128, width=512),
    'quick': dict(n_train=48, n_test=16, width=64),
}
TARGET = {'speedup': 100.0, 'rel': 1e-4}


def ntk_head_model(width: int, out_dim: int = 10) -> models.Model:
  """The composition of the ntk_head entry (README's `deep_softmax`): parameter-free softmax
  attention between `Normalize`s, then NT's `Dense(m) → Relu → Dense(m) → Relu → Dense(C)`
  per token (recognised by `ntk_closed_form`: head_kind 'layers')."""
  stax = models.stax
  prefix = stax.serial(layers.Normalize(), layers.LinearizedAttention(normalize='softmax'),
                       layers.Normalize())
  head = stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(width), stax.Relu(),
                     stax.Dense(out_dim))
  return models.compose(prefix, head, name='deep_softmax', width=width)


def kernel_differences(new, ref) -> dict:
  """How far `new` is from the reference `ref`: `rel_fro` = ‖new − ref‖_F/‖ref‖_F,
  `max_rel_diff` = max|new − ref|/max|ref| and `max_elementwise_rel` = max |new − ref|/|ref|
  over the entries (float64)."""
  a, b = np.asarray(new, np.float64), np.asarray(ref, np.float64)
  err = np.abs(a - b)
  return {'rel_fro': float(np.linalg.norm(a - b) / np.linalg.norm(b)),
          'max_rel_diff': harness.max_rel_diff(a, b),
          # an exact zero in ref with a non-zero new entry is a real disagreement: inf
          'max_elementwise_rel': float(np.max(err / np.maximum(np.abs(b), 1e-300)))}


def run(args: harness.Args) -> List[dict]:
  """Closed-form eNTK of a composed model's Dense/ReLU head (`ntk_closed_form`, the default)
  vs NT's jacobian_contraction and ntk_vector_products through `kernels.empirical_ntk`.

  The model is `ntk_head_model` on `mnist_sample` laid out as one sequence `[train; test]`
  (float32 inputs and parameters). The closed form is one jitted function of `(params,
  x_train, x_test)`; NT's methods run as the library runs them for this model, on the prefix
  features in blocks of tokens within `--ntk_head_max_memory_gb` (not jittable as a whole:
  the first call is the warm-up that compiles the block programs). A method the budget
  refuses gets a row saying so. Rows: one per NT method that ran and one against the faster.
  """
  size = SIZES['quick' if args.quick else 'full']
  ds = data.load('mnist_sample', n_train=size['n_train'], n_test=size['n_test'],
                 seed=args.seed)
  x_tr = np.asarray(ds.x_train, np.float32)
  x_te = np.asarray(ds.x_test, np.float32)
  m, c = size['width'], ds.num_classes
  model = ntk_head_model(m, c)
  if model.head_kind != 'layers' or kernels.default_method(model) != 'closed_form':
    raise RuntimeError(f'ntk_head: the head is not recognised ({model.head_kind}).')
  params = models.init_params(model, jax.random.PRNGKey(args.seed), ds.d, dtype=jnp.float32)
  n_params = sum(int(p.size) for p in jax.tree_util.tree_leaves(params[1]))
  n = len(x_tr) + len(x_te)
  budget = args.ntk_head_max_memory_gb
  sizes = (f'n={n} ({len(x_tr)}+{len(x_te)}) d={ds.d} m={m} C={c} P={n_params} float32')
  # What NT would hold for the whole composition at once (why the library blocks it).
  whole_gb = kernels.generic_ntk_gb(model, n, ds.d, jnp.float32)

  closed = harness.measure(jax.jit(lambda p, a, b: kernels.empirical_ntk(model, p, a, b)),
                           (params, x_tr, x_te), args)
  if closed.result.dtype != jnp.float32:
    raise TypeError(f'closed form ran in {closed.result.dtype}, expected float32.')
  gen, refused = {}, {}
  for method in ('jacobian_contraction', 'ntk_vector_products'):
    fn = functools.partial(kernels.empirical_ntk, model, method=method, max_memory_gb=budget)
    try:
      gen[method] = harness.measure(fn, (params, x_tr, x_te), args)
    except ValueError as e:       # the budget refused it before allocating
      refused[method] = str(e)
  rows = []
  common = f'NT on prefix features in token blocks within {budget:g} GB (whole model at ' \
           f'once: {whole_gb:.3g} GB)'
  for method, why in refused.items():
    rows.append(harness.make_row('ntk_head', f'deep_softmax: closed_form vs {method}', sizes,
                                 method, None, 'closed_form', closed, model='deep_softmax',
                                 note=f'{method} did not run: {why}'))
  if not gen:
    return rows
  for method, label, old, fastest in harness.against_generic(gen):
    diffs = kernel_differences(closed.result, old.result)
    notes = [f"rel_fro={diffs['rel_fro']:.3g}",
             f"max_elementwise_rel={diffs['max_elementwise_rel']:.3g}", common]
    extra = dict(diffs, model='deep_softmax', max_memory_gb=budget,
                 whole_model_generic_gb=whole_gb)
    if method == 'fastest':
      notes.insert(0, f"NT's fastest = {fastest}" + (
          f" ({', '.join(refused)} refused by the budget)" if refused else ''))
      if not args.quick:
        extra['target'] = (f">={TARGET['speedup']:g}x, rel_fro and "
                           f"max_rel_diff<={TARGET['rel']:g}")
        extra['meets_target'] = bool(
            old.median_s / closed.median_s >= TARGET['speedup']
            and max(diffs['rel_fro'], diffs['max_rel_diff']) <= TARGET['rel'])
    case = 'deep_softmax: closed_form vs ' + ('faster generic' if method == 'fastest'
                                              else method)
    rows.append(harness.make_row('ntk_head', case, sizes, label, old, 'closed_form', closed,
                                 note='; '.join(notes), **extra))
  return rows
