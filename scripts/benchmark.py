"""Speed benchmarks: each entry times an old path and a new one in the same run.

This is the only place speed is measured; tests check correctness, never time. Every entry
also reports how far the new result is from the old one (`max_rel_diff` or `agreement`), so
a speed-up never hides a wrong answer.

  python scripts/benchmark.py                        # every entry, full sizes
  python scripts/benchmark.py --quick --only=ntk     # small sizes (CI, tests)
  python scripts/benchmark.py --only=ntk_head        # a composed model's head vs NT

Timing: a jitted function is lowered and compiled ahead of time (`compile_s`), called once
to warm up, then called `--repeats` times; the row reports the median, each call wrapped
in `jax.block_until_ready`. A function that is not a `jax.jit` object (numpy, or a public
function that jits inside) has its first call as the warm-up, and that call's overhead over
the median is reported as `compile_s` when it compiles. When the warm-up call shows that the
repeats would overrun `--max_case_s`, fewer are timed, never fewer than one (the row's
`timed_calls` says how many, baseline/new).

Rows: {'entry', 'case', 'sizes', 'baseline', 'baseline_s', 'baseline_compile_s', 'new',
'new_s', 'new_compile_s', 'speedup' (baseline_s / new_s), 'max_rel_diff' or 'agreement',
'note', ...}. They go to `--output` (JSON with provenance) and a CSV next to it, and a
fixed-width table is printed at the end.

Adding an entry: write `entry(args) -> list[dict]` and decorate it, e.g.

  @register('training')
  def bench_training(args):
    '''vmapped seeds vs a sequential loop over seeds.'''
    seeds = 2 if args.quick else 8
    ...                                        # build inputs outside the timed calls
    old = measure(jax.jit(train_one), (params0, x, y), args, ...)   # per seed, in a loop
    new = measure(jax.jit(jax.vmap(train_one)), (params, x, y), args)
    return [make_row('training', f'{seeds} seeds', sizes, 'sequential', old, 'vmap', new,
                     max_rel_diff=max_rel_diff(new.result, old.result))]

Entry-specific flags go at the top with the others, and into `Args` below.
"""
import dataclasses
import functools
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (flags and provenance shared by the scripts)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ntk_attention import influence  # noqa: E402
from ntk_attention import kernels  # noqa: E402
from ntk_attention import layers  # noqa: E402
from ntk_attention import models  # noqa: E402
from ntk_attention.study import progress as progress_lib
from ntk_attention.study import store as store_lib

FLAGS = _common.script_flags(__name__)
flags.DEFINE_string('only', '', "Comma list of entries to run ('' = all): see REGISTRY.",
                    flag_values=FLAGS)
flags.DEFINE_bool('quick', False, 'Small sizes (CI and tests); full sizes otherwise.',
                  flag_values=FLAGS)
flags.DEFINE_integer('repeats', 3, 'Timed calls per function after one warm-up; the median '
                     'is reported.', flag_values=FLAGS)
flags.DEFINE_float('max_case_s', 300.0, 'Time budget (s) for the timed calls of one function: '
                   'when the warm-up call shows the repeats would overrun it, fewer are timed '
                   '(at least one).', flag_values=FLAGS)
flags.DEFINE_string('output', 'results/benchmark.json',
                    'Results file, must end in .json; the same rows go to the .csv of the same '
                    'name beside it (its folder is created).', flag_values=FLAGS)
flags.DEFINE_integer('bench_seed', 0, 'Seed of the random inputs and parameters.',
                     flag_values=FLAGS)
_common.define_precision_flag(FLAGS)
# ntk entry
flags.DEFINE_integer('ntk_out_dim', 1, 'Outputs C of the ntk-entry models.', flag_values=FLAGS)
flags.DEFINE_string('ntk_models', 'relu_mlp,mlp_attn,mlp_attn_qkv', 'Models of the ntk '
                    'entry (closed forms: relu_mlp, mlp_attn on prefix features; mlp_attn_qkv '
                    'per parameter group, docs/method.md §14).', flag_values=FLAGS)
flags.DEFINE_integer('ntk_generic_max_n', 0, 'Cap on the points given to the generic NT '
                     'methods (0 = none); above it both methods run on the first points '
                     'and the row says so.', flag_values=FLAGS)
# Peak memory of the generic methods over their float32 Jacobian (N*C*P): measured 3.0x for
# jacobian_contraction (20 GB at n=512 d=784 m=4096 C=1) and 1.7x for ntk_vector_products.
GENERIC_PEAK_OVER_JACOBIAN = 3.0
flags.DEFINE_float('ntk_max_memory_gb', 0.0, 'Memory (GB) the generic NT methods may use '
                   '(0 = 90% of physical memory). Their peak is estimated as '
                   f'{GENERIC_PEAK_OVER_JACOBIAN:g} x the float32 Jacobian; above the limit '
                   'they run on fewer points instead of meeting the out-of-memory killer, and '
                   'the row says so.', flag_values=FLAGS)
# ntk_head entry
flags.DEFINE_float('ntk_head_max_memory_gb', 4.0, 'Memory budget (GB, max_memory_gb of '
                   'kernels.empirical_ntk) of NT\'s generic methods in the ntk_head entry: they '
                   'run on the prefix features in blocks of tokens within it.',
                   flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class Args:
  """What an entry may read; built from the flags (tests may build it directly)."""
  quick: bool = False
  repeats: int = 3
  max_case_s: float = 300.0
  seed: int = 0
  ntk_out_dim: int = 1
  ntk_models: tuple = ('relu_mlp', 'mlp_attn', 'mlp_attn_qkv')
  ntk_generic_max_n: int = 0
  ntk_max_memory_gb: float = 0.0
  ntk_head_max_memory_gb: float = 4.0


REGISTRY: Dict[str, Callable[[Args], List[dict]]] = {}


def register(name: str):
  """Decorator: adds `entry(args) -> list[dict]` to REGISTRY under `name`."""
  def wrap(fn):
    if name in REGISTRY:
      raise ValueError(f'benchmark entry {name!r} registered twice.')
    REGISTRY[name] = fn
    return fn
  return wrap


# ------------------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Timing:
  """`median_s` of the timed calls, `compile_s` (None: nothing compiled), the last result."""
  median_s: float
  compile_s: Optional[float]
  times: List[float]
  result: Any


def _timed(call, args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(call(*args))
  return time.perf_counter() - t0, out


def measure(fn, args: tuple, bench: Args, compiles: bool = True) -> Timing:
  """Times `fn(*args)` after compilation and one warm-up call (module docstring).

  `fn` with `.lower` (a `jax.jit` object) is compiled ahead of time and `compile_s` is the
  lower+compile time. Otherwise the first call is the warm-up, and when `compiles` its
  overhead over the median is `compile_s` (else None).
  """
  compile_s = None
  if hasattr(fn, 'lower'):
    t0 = time.perf_counter()
    call = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    warm_s, out = _timed(call, args)
  else:
    call = fn
    warm_s, out = _timed(call, args)
  # Fewer repeats (at least one) when they would overrun the budget.
  budget_n = int(max(bench.max_case_s - warm_s, 0.0) // max(warm_s, 1e-9))
  times = []
  for _ in range(max(1, min(bench.repeats, budget_n))):
    dt, out = _timed(call, args)
    times.append(dt)
  median = statistics.median(times)
  if not hasattr(fn, 'lower') and compiles:
    compile_s = max(warm_s - median, 0.0)
  return Timing(median, compile_s, times, out)


def max_rel_diff(a, b) -> float:
  """`max|a − b| / max|b|` in float64 (b is the reference)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'shape mismatch: {a.shape} vs {b.shape}.')
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def make_row(entry: str, case: str, sizes: str, baseline: str, old: Optional[Timing],
             new_name: str, new: Timing, **extra) -> dict:
  """One result row; `old=None` for a case with no baseline timing."""
  row = {'entry': entry, 'case': case, 'sizes': sizes,
         'baseline': baseline,
         'baseline_s': None if old is None else old.median_s,
         'baseline_compile_s': None if old is None else old.compile_s,
         'new': new_name, 'new_s': new.median_s, 'new_compile_s': new.compile_s,
         'speedup': None if old is None else old.median_s / new.median_s,
         'timed_calls': f'{"-" if old is None else len(old.times)}/{len(new.times)}'}
  row.update(extra)
  return row


# ---------------------------------------------------------------------------------- entry: ntk

NTK_SIZES = {  # (n, d, m) per model; quick for CI
    'full': {'relu_mlp': (512, 784, 4096), 'mlp_attn': (256, 784, 2048),
             'mlp_attn_qkv': (500, 784, 1024)},
    'quick': {'relu_mlp': (64, 64, 256), 'mlp_attn': (48, 64, 256),
              'mlp_attn_qkv': (48, 64, 64)},
}
NTK_TARGETS = {  # per model: the sizes at which the closed form must beat NT's faster method
    'relu_mlp': {'sizes': (512, 784, 4096), 'speedup': 100.0, 'rel': 1e-4},
    'mlp_attn_qkv': {'sizes': (500, 784, 1024), 'speedup': 100.0, 'rel': 1e-4},
}


def _memory_limit_gb(bench: Args) -> float:
  if bench.ntk_max_memory_gb > 0:
    return bench.ntk_max_memory_gb
  try:
    return 0.9 * os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9
  except (ValueError, OSError, AttributeError):
    return 16.0


def _generic_n(n: int, n_params: int, c: int, bench: Args):
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


@register('ntk')
def bench_ntk(args: Args) -> List[dict]:
  """Closed-form empirical NTK vs NT's generic jacobian_contraction / ntk_vector_products.

  Same float32 inputs (uniform [0, 1]) and parameters for all three; each is a jitted
  function of `(params, x)` closed over the model. Per model: one row per generic method
  and one against the faster of the two.
  """
  rows = []
  sizes_table = NTK_SIZES['quick' if args.quick else 'full']
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

    closed = measure(fn('closed_form'), (params, x), args)
    if closed.result.dtype != jnp.float32:
      raise TypeError(f'closed form ran in {closed.result.dtype}, expected float32.')
    if n_gen < n:   # time the closed form on the same points as the generic methods
      closed_sub = measure(fn('closed_form'), (params, x[:n_gen]), args)
    else:
      closed_sub = closed
    gen = {}
    for method in ('jacobian_contraction', 'ntk_vector_products'):
      gen[method] = measure(fn(method), (params, x[:n_gen]), args)
    gen_sizes = sizes if n_gen == n else f'n={n_gen} d={d} m={m} C={c} float32'
    spec = NTK_TARGETS.get(name)
    target = spec is not None and (n, d, m) == spec['sizes'] and n_gen == n
    fastest = min(gen, key=lambda k: gen[k].median_s)
    for method in list(gen) + ['fastest']:
      old = gen[fastest if method == 'fastest' else method]
      label = f'fastest generic ({fastest})' if method == 'fastest' else method
      rel = max_rel_diff(closed_sub.result, old.result)
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
      rows.append(make_row('ntk', case, gen_sizes, label, old,
                           'closed_form', closed_sub, **extra))
  return rows


# ----------------------------------------------------------------------------- entry: ntk_head

NTK_HEAD_SIZES = {  # points of mnist_sample (train + test) and the head's width; quick for CI
    'full': dict(n_train=384, n_test=128, width=512),
    'quick': dict(n_train=48, n_test=16, width=64),
}
NTK_HEAD_TARGET = {'speedup': 100.0, 'rel': 1e-4}


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
          'max_rel_diff': max_rel_diff(a, b),
          # an exact zero in ref with a non-zero new entry is a real disagreement: inf
          'max_elementwise_rel': float(np.max(err / np.maximum(np.abs(b), 1e-300)))}


@register('ntk_head')
def bench_ntk_head(args: Args) -> List[dict]:
  """Closed-form eNTK of a composed model's Dense/ReLU head (`ntk_closed_form`, the default)
  vs NT's jacobian_contraction and ntk_vector_products through `kernels.empirical_ntk`.

  The model is `ntk_head_model` on `mnist_sample` laid out as one sequence `[train; test]`
  (float32 inputs and parameters). The closed form is one jitted function of `(params,
  x_train, x_test)`; NT's methods run as the library runs them for this model, on the prefix
  features in blocks of tokens within `--ntk_head_max_memory_gb` (not jittable as a whole:
  the first call is the warm-up that compiles the block programs). A method the budget
  refuses gets a row saying so. Rows: one per NT method that ran and one against the faster.
  """
  from ntk_attention import data
  size = NTK_HEAD_SIZES['quick' if args.quick else 'full']
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

  closed = measure(jax.jit(lambda p, a, b: kernels.empirical_ntk(model, p, a, b)),
                   (params, x_tr, x_te), args)
  if closed.result.dtype != jnp.float32:
    raise TypeError(f'closed form ran in {closed.result.dtype}, expected float32.')
  gen, refused = {}, {}
  for method in ('jacobian_contraction', 'ntk_vector_products'):
    fn = functools.partial(kernels.empirical_ntk, model, method=method, max_memory_gb=budget)
    try:
      gen[method] = measure(fn, (params, x_tr, x_te), args)
    except ValueError as e:       # the budget refused it before allocating
      refused[method] = str(e)
  rows = []
  common = f'NT on prefix features in token blocks within {budget:g} GB (whole model at ' \
           f'once: {whole_gb:.3g} GB)'
  for method, why in refused.items():
    rows.append(make_row('ntk_head', f'deep_softmax: closed_form vs {method}', sizes, method,
                         None, 'closed_form', closed, model='deep_softmax',
                         note=f'{method} did not run: {why}'))
  if not gen:
    return rows
  fastest = min(gen, key=lambda k: gen[k].median_s)
  for method in list(gen) + ['fastest']:
    old = gen[fastest if method == 'fastest' else method]
    diffs = kernel_differences(closed.result, old.result)
    label = f'fastest generic ({fastest})' if method == 'fastest' else method
    notes = [f"rel_fro={diffs['rel_fro']:.3g}",
             f"max_elementwise_rel={diffs['max_elementwise_rel']:.3g}", common]
    extra = dict(diffs, model='deep_softmax', max_memory_gb=budget,
                 whole_model_generic_gb=whole_gb)
    if method == 'fastest':
      notes.insert(0, f"NT's fastest = {fastest}" + (
          f" ({', '.join(refused)} refused by the budget)" if refused else ''))
      if not args.quick:
        extra['target'] = (f">={NTK_HEAD_TARGET['speedup']:g}x, rel_fro and "
                           f"max_rel_diff<={NTK_HEAD_TARGET['rel']:g}")
        extra['meets_target'] = bool(
            old.median_s / closed.median_s >= NTK_HEAD_TARGET['speedup']
            and max(diffs['rel_fro'], diffs['max_rel_diff']) <= NTK_HEAD_TARGET['rel'])
    case = 'deep_softmax: closed_form vs ' + ('faster generic' if method == 'fastest'
                                              else method)
    rows.append(make_row('ntk_head', case, sizes, label, old, 'closed_form', closed,
                         note='; '.join(notes), **extra))
  return rows


# ---------------------------------------------------------------------------- entry: influence

INFLUENCE_SIZES = {  # (n_train, n_eval, C): exact-vs-bruteforce case, then the large case
    'full': {'small': (200, 50, 10), 'large': (5000, 1000, 10)},
    'quick': {'small': (40, 10, 3), 'large': (400, 100, 10)},
}
INFLUENCE_TARGET_S = 10.0
RIDGE = 1e-3


def _psd_problem(n_train: int, n_eval: int, c: int, seed: int):
  """Kernel `F Fᵀ/p + 1e-6 I` of random features (p = n_train/2: low rank, like real
  kernels) over train + eval points, and Gaussian targets; float64 numpy."""
  rng = np.random.default_rng(seed)
  p = max(n_train // 2, 1)
  f = rng.standard_normal((n_train + n_eval, p))
  k = f @ f.T / p + 1e-6 * np.eye(n_train + n_eval)
  y = rng.standard_normal((n_train + n_eval, c))
  return k[:n_train, :n_train], k[n_train:, :n_train], y[:n_train], y[n_train:]


def _full_fit(k, ke, y, ridge):
  """KRR predictions at the evaluation points with every training point, numpy float64."""
  a = k + ridge * np.mean(np.diag(k)) * np.eye(len(k))
  return ke @ np.linalg.solve(a, y)


@register('influence')
def bench_influence(args: Args) -> List[dict]:
  """Exact LOO influence (one Cholesky) vs brute-force leave-one-out refits (float64).

  Small case: both in full; agreement = max |Δ_closed − Δ_brute| over the (n_eval,
  n_train, C) predicted leave-one-out changes Δ_ti = f_{−i}(x_t) − f(x_t). Large case:
  the exact path alone (target < 10 s); its brute-force time is extrapolated from a few
  refits (n_train × the median refit), and those refits spot-check its influence columns
  I_{:,i} and LOO residuals r_i.
  """
  if not jax.config.jax_enable_x64:
    raise ValueError('the influence benchmark needs jax_enable_x64 (the script enables it).')
  sizes_table = INFLUENCE_SIZES['quick' if args.quick else 'full']
  rows = []

  n, t, c = sizes_table['small']
  k, ke, y, ye = _psd_problem(n, t, c, args.seed)

  def brute(k, ke, y):       # refit without each point i (the oracle of tests/oracles.py)
    k_sym, m = 0.5 * (k + k.T), len(k)
    lam = RIDGE * np.mean(np.diag(k_sym))
    f_loo = np.stack([ke[:, keep] @ np.linalg.solve(k_sym[np.ix_(keep, keep)]
                                                    + lam * np.eye(m - 1), y[keep])
                      for keep in (np.arange(m) != i for i in range(m))])   # (n, t, C)
    return np.transpose(f_loo, (1, 0, 2)) - _full_fit(k, ke, y, RIDGE)[:, None, :]

  def exact(k, ke, y, ye):
    return influence.loo_influence(k, ke, y, ye, ridge=RIDGE, return_delta=True).delta

  old = measure(brute, (k, ke, y), args, compiles=False)
  new = measure(exact, (k, ke, y, ye), args)
  diff = float(np.max(np.abs(np.asarray(new.result) - old.result)))
  rows.append(make_row(
      'influence', 'loo_influence vs brute-force LOO refits', f'n_train={n} n_eval={t} '
      f'C={c} float64', 'brute-force LOO refits', old, 'loo_influence', new,
      agreement=diff, agreement_what='max abs diff of LOO changes Delta (t, n, C)',
      note=f'max |Delta| = {float(np.max(np.abs(old.result))):.3g}'))

  n, t, c = sizes_table['large']
  k, ke, y, ye = _psd_problem(n, t, c, args.seed + 1)
  new = measure(lambda *a: influence.loo_influence(*a, ridge=RIDGE), (k, ke, y, ye), args)
  out = new.result
  # Brute-force spot check and extrapolation: refit without a few points (after one
  # untimed warm-up refit), exactly as `brute` above does for every point.
  spots = np.random.default_rng(args.seed).choice(n, size=4, replace=False)
  k_sym = 0.5 * (k + k.T)
  lam = RIDGE * np.mean(np.diag(k_sym))

  def refit(i):
    keep = np.arange(n) != i
    alpha = np.linalg.solve(k_sym[np.ix_(keep, keep)] + lam * np.eye(n - 1), y[keep])
    return ke[:, keep] @ alpha, k_sym[i, keep] @ alpha       # f_{-i}(x_eval), f_{-i}(x_i)

  f_full = np.asarray(out.predictions)
  loss = lambda p: 0.5 * np.sum((p - ye) ** 2, axis=-1)
  refit(spots[0])                                              # warm-up
  spots = spots[1:]
  refit_s, diffs = [], []
  for i in spots:
    dt, (f_eval, f_self) = _timed(refit, (i,))
    refit_s.append(dt)
    diffs.append(np.max(np.abs(np.asarray(out.matrix)[:, i] - (loss(f_eval) - loss(f_full)))))
    diffs.append(np.max(np.abs(np.asarray(out.loo_residuals)[i] - (y[i] - f_self))))
  brute_est = Timing(n * statistics.median(refit_s), None, refit_s, None)
  rows.append(make_row(
      'influence', 'loo_influence (large)', f'n_train={n} n_eval={t} C={c} float64',
      f'brute force (extrapolated: {n} x median of {len(spots)} refits)', brute_est,
      'loo_influence', new, agreement=float(max(diffs)),
      agreement_what=f'max abs diff of I[:, i] and r_i vs {len(spots)} brute-force refits',
      target=f'< {INFLUENCE_TARGET_S:g} s', meets_target=bool(new.median_s < INFLUENCE_TARGET_S),
      note='baseline_s is an estimate, not a measurement'))
  return rows


# ---------------------------------------------------------------------------------- reporting

TABLE_COLUMNS = (('case', 'case', 46), ('sizes', 'sizes', 38), ('baseline_s', 'old s', 9),
                 ('new_s', 'new s', 9), ('speedup', 'speedup', 9),
                 ('new_compile_s', 'compile', 8), ('diff', 'max diff', 9),
                 ('timed_calls', 'timed', 6))


# ----------------------------------------------------------------------------- entry: training

TRAINING_SIZES = {'full': dict(n=1000, epochs=50, seeds=4, widths=(64, 1024, 4096)),
                  'quick': dict(n=100, epochs=3, seeds=2, widths=(16, 64))}


@register('training')
def bench_training(args: Args) -> List[dict]:
  """All seeds of a width in one vmapped program vs a sequential loop over the same seeds
  (per-seed parameters must agree), and training throughput (samples·epochs/s) per width."""
  from ntk_attention import data
  from ntk_attention import training
  size = TRAINING_SIZES['quick' if args.quick else 'full']
  ds = data.load('digits', n_train=size['n'], n_test=10, seed=args.seed)
  y = data.targets(ds.y_train, ds.num_classes)
  config = training.TrainConfig(epochs=size['epochs'])
  seeds = list(range(size['seeds']))
  rows = []
  for name in ('relu_mlp', 'mlp_attn'):
    for width in size['widths']:
      model = models.build(name, width, ds.num_classes)

      def vmapped():
        return training.train(model, training.seed_keys(seeds), ds.x_train, y, config).params

      def sequential():
        return [training.train(model, training.seed_keys([s]), ds.x_train, y, config).params
                for s in seeds]

      new = measure(vmapped, (), args)
      old = measure(sequential, (), args)
      w_new = np.asarray(new.result[1][0][0])
      w_old = np.stack([np.asarray(p[1][0][0][0]) for p in old.result])
      samples = len(seeds) * size['n'] * size['epochs']
      rows.append(make_row(
          'training', f'{name}: vmapped seeds vs sequential loop',
          f"n={size['n']} d={ds.d} m={width} C={ds.num_classes} seeds={len(seeds)} "
          f"epochs={size['epochs']} float32", 'sequential', old, 'vmap', new,
          max_rel_diff=max_rel_diff(w_new, w_old),
          note=f'throughput {samples / new.median_s:.3g} samples·epochs/s (vmapped), '
               f'{samples / old.median_s:.3g} (sequential)',
          throughput_vmapped=samples / new.median_s,
          throughput_sequential=samples / old.median_s))
  return rows


# ----------------------------------------------------------------------------- entry: reproduce

REPRODUCE_SIZES = {   # reproduce.py flags on the digits proxy (quick: seconds; full: minutes)
    'quick': ['--preset=quick_digits', '--n_train=60', '--n_test=30', '--n_grid=10,20',
              '--widths=16,32', '--ntk_seeds=2', '--mall_seeds=2', '--mall_width=16',
              '--epochs=3', '--epsilons=0.1,0.3', '--binary_n_train=40', '--binary_n_test=20',
              '--parts=spectral,ntk_distance,malleability,binary'],
    'full': ['--preset=quick_digits', '--parts=spectral,ntk_distance,malleability,binary,'
             'interventions'],
}


def _part_results(d: str) -> dict:
  """{part/file: JSON without provenance} of a reproduction folder's results."""
  out = {}
  for root, _, files in os.walk(d):
    for f in files:
      if f.endswith('.json') and f != 'part.json' and not f.endswith('_settings.json'):
        obj = store_lib.read_json(os.path.join(root, f))
        if isinstance(obj, dict):
          obj.pop('provenance', None)
        out[os.path.relpath(os.path.join(root, f), d)] = obj
  return out


def _numbers(obj, path=''):
  """{path: float} of every number in a JSON tree (None/strings skipped)."""
  if isinstance(obj, dict):
    return {p: v for k, x in obj.items() for p, v in _numbers(x, f'{path}.{k}').items()}
  if isinstance(obj, list):
    return {p: v for i, x in enumerate(obj) for p, v in _numbers(x, f'{path}[{i}]').items()}
  if isinstance(obj, (int, float)) and not isinstance(obj, bool):
    return {path: float(obj)}
  return {}


@register('reproduce')
def bench_reproduce(args: Args) -> List[dict]:
  """scripts/reproduce.py the old way (every part a subprocess that trains its own models,
  no compilation cache: `--isolate_parts`, `--train_cache=` per part) against the new one
  (one process, one training cache, a cold persistent compilation cache), each in a fresh
  folder and timed once (a run is minutes, not a kernel call); `max_rel_diff` over every
  number of every part's results (wall-time fields excluded)."""
  import subprocess
  import tempfile
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'reproduce.py')
  flags_ = REPRODUCE_SIZES['quick' if args.quick else 'full']
  no_cache = '--train_cache='
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  with tempfile.TemporaryDirectory() as tmp:
    runs = {
        'old': [*flags_, '--isolate_parts', '--compilation_cache=',
                *[f'--{p}_flags={no_cache}' for p in ('ntk_distance', 'malleability')],
                f'--output_dir={tmp}/old'],
        'new': [*flags_, f'--compilation_cache={tmp}/jax', f'--output_dir={tmp}/new'],
    }
    timings, results = {}, {}
    for name, argv in runs.items():
      t0 = time.perf_counter()
      proc = subprocess.run([sys.executable, script, *argv], env=env, capture_output=True,
                            text=True)
      seconds = time.perf_counter() - t0
      if proc.returncode != 0:
        raise RuntimeError(f'reproduce.py ({name}) failed: {proc.stderr[-2000:]}')
      timings[name] = Timing(seconds, None, [seconds], None)
      results[name] = _numbers(_part_results(f'{tmp}/{name}'))
  old, new = results['old'], results['new']
  def is_timing(key):     # wall times differ between runs; everything else must not
    last = key.rsplit('.', 1)[-1]
    return last.endswith(('_s', 'seconds')) or last in ('wall', 'time', 'elapsed')

  keys = [k for k in old if not is_timing(k)]
  if set(keys) - set(new):
    raise RuntimeError(f'new run lacks results: {sorted(set(keys) - set(new))[:5]}')
  scale = max(max(abs(old[k]) for k in keys), 1e-300)
  diff = max(abs(new[k] - old[k]) for k in keys) / scale
  parts = [a for a in flags_ if a.startswith('--parts=')][0][len('--parts='):]
  return [make_row('reproduce', 'reproduce.py: isolated parts vs one process + caches',
                   f'quick_digits {" ".join(flags_[1:4]) if args.quick else ""} parts={parts}',
                   'subprocess per part', timings['old'], 'in-process', timings['new'],
                   max_rel_diff=diff, numbers_compared=len(keys),
                   note=f'{len(keys)} numbers compared; each run timed once, start-up included')]


def _cell(v) -> str:
  if v is None:
    return '-'
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, float):
    return f'{v:.3g}' if abs(v) < 1e4 else f'{v:.3e}'
  return str(v)


def format_table(rows: List[dict]) -> str:
  """Fixed-width text table; `max diff` is max_rel_diff or agreement, and notes follow."""
  lines = ['  '.join(h.ljust(w) for _, h, w in TABLE_COLUMNS)]
  lines.append('  '.join('-' * w for _, _, w in TABLE_COLUMNS))
  for row in rows:
    r = dict(row, diff=row.get('max_rel_diff', row.get('agreement')))
    lines.append('  '.join(_cell(r.get(k)).ljust(w) for k, _, w in TABLE_COLUMNS))
    extra = [f"{k}={_cell(row[k])}" for k in ('target', 'meets_target', 'note')
             if row.get(k) not in (None, '')]
    if extra:
      lines.append('    ' + '; '.join(extra))
  return '\n'.join(lines)


def _loadavg():
  """1, 5 and 15-minute load averages (None where the OS has none): a shared machine's
  other work shows up in the timings, so the results record it."""
  try:
    return list(os.getloadavg())
  except (OSError, AttributeError):
    return None


def run(names: List[str], args: Args, log=print) -> List[dict]:
  rows = []
  for name in names:
    t0 = time.perf_counter()
    log(f'[benchmark] {name} ...')
    rows.extend(REGISTRY[name](args))
    log(f'[benchmark] {name} done in {progress_lib.format_duration(time.perf_counter() - t0)}')
  return rows


def main(argv):
  del argv
  jax.config.update('jax_enable_x64', True)
  jax.config.update('jax_default_matmul_precision', FLAGS.matmul_precision)
  names = (list(REGISTRY) if not FLAGS.only.strip()
           else _common.parse_names(FLAGS.only, 'only', REGISTRY))
  if FLAGS.repeats < 1:
    raise ValueError(f'--repeats must be >= 1, got {FLAGS.repeats}.')
  if not FLAGS.max_case_s > 0:
    raise ValueError(f'--max_case_s must be > 0, got {FLAGS.max_case_s}.')
  if FLAGS.ntk_out_dim < 1 or FLAGS.ntk_generic_max_n < 0:
    raise ValueError('--ntk_out_dim must be >= 1 and --ntk_generic_max_n >= 0.')
  if not FLAGS.ntk_head_max_memory_gb > 0:
    raise ValueError('--ntk_head_max_memory_gb must be > 0, got '
                     f'{FLAGS.ntk_head_max_memory_gb}.')
  ntk_models = tuple(_common.parse_names(FLAGS.ntk_models, 'ntk_models',
                                         NTK_SIZES['full']))
  if not FLAGS.output.endswith('.json'):
    raise ValueError(f'--output must end in .json, got {FLAGS.output!r}.')
  args = Args(quick=FLAGS.quick, repeats=FLAGS.repeats, max_case_s=FLAGS.max_case_s,
              seed=FLAGS.bench_seed, ntk_out_dim=FLAGS.ntk_out_dim, ntk_models=ntk_models,
              ntk_generic_max_n=FLAGS.ntk_generic_max_n,
              ntk_max_memory_gb=FLAGS.ntk_max_memory_gb,
              ntk_head_max_memory_gb=FLAGS.ntk_head_max_memory_gb)
  _common.begin_work()
  load_start = _loadavg()
  if load_start and load_start[0] > (os.cpu_count() or 1) - 0.5:
    print(f'[benchmark] warning: load average {load_start[0]:.1f} on {os.cpu_count()} cores '
          'before starting; other processes will slow the timings (ratios suffer least).')
  rows = run(names, args)
  for row in rows:
    for key in ('baseline_s', 'new_s', 'max_rel_diff', 'agreement'):
      if isinstance(row.get(key), float) and not math.isfinite(row[key]):
        raise FloatingPointError(f'{row["case"]}: {key} is {row[key]}.')
  flag_names = ('only', 'quick', 'repeats', 'max_case_s', 'bench_seed', 'ntk_out_dim',
                'ntk_models', 'ntk_generic_max_n', 'ntk_max_memory_gb',
                'ntk_head_max_memory_gb')
  store_lib.write_json(FLAGS.output, {'provenance': _common.provenance(FLAGS, flag_names),
                                      'cpu_count': os.cpu_count(), 'loadavg_start':
                                      load_start, 'loadavg_end': _loadavg(), 'rows': rows})
  store_lib.write_csv(FLAGS.output[:-len('.json')] + '.csv', rows)
  print(format_table(rows))
  print(f'[benchmark] wrote {FLAGS.output} and .csv')


if __name__ == '__main__':
  _common.run(main)
