"""Entry `compiles`: cells of a sensitivity-style grid, one program per value vs per shape.

A cell trains a model (2 seeds) and attacks it with PGD; the cells vary what a sensitivity
study varies without changing a shape: lr, init_std, epochs, ε, the PGD steps and τ (the
size of the attacked subset). The baseline is the previous code path, kept here: every value
a compile-time constant (the whole training one scan of `epochs` steps with the optimiser's
constants and the model's init_std baked in; the attack with its step count static and its
subset gathered, a program per τ). The new path is the
library's (`training.train`, `malleability.perturb`): the values are arguments, the epochs
run in chunks of `training.CHUNK_EPOCHS`. Both count the programs compiled
(`ntk_attention.compiles`) and must give the same parameters and attacked pixels.

Row `model analysis` (`run_model_analysis`): making models (the study's two and a composed
Dense/ReLU head at several widths) with the previous analysis, kept here (`_old_plan`, which
initialises and runs every head layer on jax.random draws; `_old_probe`: the probe op by op,
its Jacobian and gradient tests in jnp), against the library's (the probe one compiled
program per model); every derived field must be equal.
"""
import contextlib
import functools
import itertools
import time
import warnings
from typing import List

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import harness
from ntk_attention import attacks
from ntk_attention import compiles
from ntk_attention import data
from ntk_attention import layers
from ntk_attention import malleability
from ntk_attention import models
from ntk_attention import ntk_closed_form
from ntk_attention import training
from ntk_attention._nt import stax

SIZES = {
    'quick': dict(n=64, width=16, lr=(1e-3, 3e-3), init_std=(0.01,), epochs=(10, 20),
                  eps=(0.3,), pgd_steps=(5, 10), tau=(0.1, 0.2)),
    'full': dict(n=400, width=512, lr=(1e-3, 3e-3), init_std=(0.01, 1.0), epochs=(50, 100),
                 eps=(0.1, 0.3), pgd_steps=(5, 20), tau=(0.05, 0.1, 0.2)),
}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _old_train(model, config, kind, keys, x_train, y_train):
  """The previous `training._train_seeds`: every setting a constant, one scan of all epochs."""
  n, d = x_train.shape
  seq, _ = layers.as_sequence(x_train)
  feats = None
  if not model.prefix_trainable:
    any_params = models.init_params(model, jax.random.PRNGKey(0), d, x_train.dtype)
    feats = models.features(model, any_params, seq)[0]

  def one_seed(key):
    k_init, k_shuffle = jax.random.split(key)
    params0 = models.init_params(model, k_init, d, x_train.dtype)
    opt = training.make_optimizer(config, models.trainable_mask(model, params0))

    def step(carry, idx):
      params, state = carry
      loss, grads = jax.value_and_grad(lambda p: training.loss_value(
          kind, models.head_apply(model, p[1], feats[idx]) if feats is not None
          else model.apply_fn(p, seq)[0][idx], y_train[idx]))(params)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss

    def epoch(carry, k):
      k_perm, _ = jax.random.split(k)
      idx = training._batches(k_perm, n, config.batch_size)   # pylint: disable=protected-access
      carry, losses = jax.lax.scan(step, carry, idx)
      return carry, jnp.mean(losses)

    (params, _), losses = jax.lax.scan(epoch, (params0, opt.init(params0)),
                                       jax.random.split(k_shuffle, config.epochs))
    return params, losses, params0

  return jax.vmap(one_seed)(keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _old_attack(model, name, kind, attack, params, x, y, subset, key):
  """The previous `malleability._loss_attack`: every setting of `attack` (ε, the step count)
  a constant, the subset gathered (its size a shape)."""
  loss_fn = malleability.loss_objective(model, params, y, subset, kind)
  mask = jnp.zeros(x.shape[0], bool).at[subset].set(True)
  return attacks.attack(name, loss_fn, x, attack, key=key, mask=mask)


def run(args: harness.Args) -> List[dict]:
  """Every cell of the grid, old path then new, each in a cold JAX cache; programs compiled,
  wall time (compilation included: it is what the change removes) and agreement."""
  size = SIZES['quick' if args.quick else 'full']
  ds = data.load('mnist_sample', n_train=size['n'], n_test=10, seed=args.seed)
  x = jnp.asarray(ds.x_train, jnp.float32)
  y = jnp.asarray(data.targets(ds.y_train, ds.num_classes), jnp.float32)
  keys = training.seed_keys([0, 1])
  grid = list(itertools.product(size['lr'], size['init_std'], size['epochs'], size['eps'],
                                size['pgd_steps'], size['tau']))
  rows = []
  for name in ('relu_mlp', 'mlp_attn'):
    # Built (and analysed: models.compose's probes) before the cold caches: both paths use
    # the same Model objects, and their eager probes are not what is compared.
    for init_std in size['init_std'] + (1.0,):
      models.unit_init(models.build(name, size['width'], ds.num_classes, init_std=init_std))
    results, timings, counts = {}, {}, {}
    for path in ('old', 'new'):
      jax.clear_caches()
      out = []
      t0 = time.perf_counter()
      with compiles.count() as count:
        for lr, init_std, epochs, eps, steps, tau in grid:
          subset = np.arange(round(tau * size['n']))
          model = models.build(name, size['width'], ds.num_classes, init_std=init_std)
          config = training.TrainConfig(epochs=epochs, lr=lr, batch_size=32)
          setup = malleability.Setup(attack=attacks.AttackConfig(eps=eps, pgd_steps=steps))
          if path == 'old':
            params = _old_train(model, config, 'xent', keys, x, y)[0]
          else:
            params = training.train(model, keys, x, y, config).params
          one = training.unstack(params, 0)
          if path == 'old':
            x_adv = _old_attack(model, 'pgd', 'xent', setup.attack, one, x, y,
                                jnp.asarray(subset), keys[0])
          else:
            x_adv = malleability.perturb(model, one, 'pgd', x, y, subset, setup, keys[0],
                                         'xent')
          out.append((np.asarray(one[1][0][0]), np.asarray(x_adv)))
      seconds = time.perf_counter() - t0
      results[path], counts[path] = out, count
      timings[path] = harness.Timing(seconds, count.seconds, [seconds], None)
    diff = max(max(harness.max_rel_diff(a[0], b[0]), harness.max_rel_diff(a[1], b[1]))
               for a, b in zip(results['new'], results['old']))
    rows.append(harness.make_row(
        'compiles', f'{name}: {len(grid)} cells (train 2 seeds + PGD), values varied',
        f"n={size['n']} m={size['width']} lr={size['lr']} init_std={size['init_std']} "
        f"epochs={size['epochs']} eps={size['eps']} pgd_steps={size['pgd_steps']} "
        f"tau={size['tau']}",
        'a program per value', timings['old'], 'a program per shape', timings['new'],
        max_rel_diff=diff, programs_old=counts['old'].programs,
        programs_new=counts['new'].programs,
        note=f"programs compiled {counts['old'].programs} -> {counts['new'].programs}; "
             'each path timed once from a cold cache, compilation included'))
  return rows + run_sensitivity_grid(args) + run_model_analysis(args)


def _old_loss_attack(model, name, kind, attack, params, x, y, mask, key, eps, pgd_steps):
  """`malleability._loss_attack`'s signature on the previous path (a program per value)."""
  attack = attack._replace(eps=float(eps), pgd_steps=int(pgd_steps) if name == 'pgd' else 1)
  return _old_attack(model, name, kind, attack, params, x, y,
                     jnp.asarray(np.flatnonzero(np.asarray(mask))), key)


_LIBRARY_TRAIN = training.train


def _old_train_fn(model, keys, x_train, y_train, config=training.TrainConfig(),
                  dtype=jnp.float32, perturb=None):
  """`training.train`'s signature on the previous path (`_old_train`); adversarial training
  (`perturb`) had no previous path and takes the library's."""
  if perturb is not None:
    return _LIBRARY_TRAIN(model, keys, x_train, y_train, config, dtype, perturb)
  x, y = jnp.asarray(x_train, dtype), jnp.asarray(y_train, dtype)
  params, losses, params0 = _old_train(model, config, training.loss_kind(config, y.shape[1]),
                                       jnp.asarray(keys), x, y)
  return training.TrainResult(params0, params, np.asarray(losses))


SENSITIVITY_SIZES = {'quick': dict(n_train=40, n_test=20, width=16, epochs=4, tasks=('all',)),
                     'full': dict(n_train=200, n_test=100, width=128, epochs=20,
                                  tasks=('all', '3,8'))}


def _old_unstack(tree, i):
  """`training.unstack` before: `a[i]` on the device, a program per leaf shape and index."""
  return jax.tree_util.tree_map(lambda a: a[i], tree)


def protocol_paths() -> dict:
  """`{(module, name): previous function}` of training, the loss attacks and the protocol's
  bookkeeping (accuracies, their labels, each seed's parameters)."""
  return {(training, 'train'): _old_train_fn, (malleability, '_loss_attack'): _old_loss_attack,
          (training, 'unstack'): _old_unstack,
          # op by op, as before they were jitted
          (malleability, '_accuracies'): malleability._accuracies_eager,  # pylint: disable=protected-access
          (training, 'accuracy'): training.accuracy.__wrapped__,
          (training, 'labels_from_targets'): training.labels_from_targets.__wrapped__}


def analysis_paths() -> dict:
  """`{(module, name): previous function}` of a model's analysis (`models.Model`)."""
  return {(ntk_closed_form, 'plan'): _old_plan, (models, '_probe'): _old_probe,
          (models, '_nonzero_leaves'): _old_nonzero_leaves}


@contextlib.contextmanager
def previous_paths(paths: dict, active: bool = True):
  """Within the block each `(module, name)` of `paths` is its previous function,
  `compiles.jit` compiles at XLA's default level, as `jax.jit` did, and `compiles.op_by_op`
  functions run op by op, as they did (when `active`; otherwise nothing changes); the
  library's are restored on the way out."""
  from ntk_attention import compiles as compiles_lib
  saved = {k: getattr(*k) for k in paths}
  switches = (compiles_lib.quick_compile_enabled, compiles_lib.op_by_op_enabled)
  before = [s[0] for s in switches]
  if active:
    for (module, name), fn in paths.items():
      setattr(module, name, fn)
    for s in switches:
      s[0] = False
  try:
    yield
  finally:
    for (module, name), fn in saved.items():
      setattr(module, name, fn)
    for s, value in zip(switches, before):
      s[0] = value


def run_sensitivity_grid(args: harness.Args) -> List[dict]:
  """The sensitivity part's grid as the quick preset runs it (the baseline and every default
  variation, FGSM and PGD, 3 seeds, both models) at small sizes: the programs the previous
  path compiles (a training program per lr, epochs and init_std; an attack program per ε,
  PGD step count and τ; the accuracies and each seed's parameters op by op) against the
  library's, each path in a cold JAX cache, and how many records agree."""
  from ntk_attention.study import cache
  from ntk_attention.study import sensitivity
  size = SENSITIVITY_SIZES['quick' if args.quick else 'full']
  base = sensitivity.Baseline(width=size['width'], n_train=size['n_train'],
                              epochs=size['epochs'])
  variations = sensitivity.default_variations(base)
  pools = {}

  def load(task, n_train):
    if (task, n_train) not in pools:
      classes = None if task == 'all' else tuple(int(c) for c in task.split(','))
      pools[task, n_train] = data.load('mnist_sample', n_train=n_train, n_test=size['n_test'],
                                       seed=args.seed, classes=classes)
    return pools[task, n_train]

  config = training.TrainConfig(batch_size=16)
  records, timings, counts = {}, {}, {}
  for path in ('old', 'new'):
    with previous_paths(protocol_paths(), active=path == 'old'):
      jax.clear_caches()
      t0 = time.perf_counter()
      # The models are too small to train (what is counted is programs): no warning per seed.
      with compiles.count() as count, warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        out = sensitivity.run(load, list(size['tasks']), base, variations, ['fgsm', 'pgd'],
                              [0, 1, 2], config, train_fn=cache.cached_train())
      seconds = time.perf_counter() - t0
    records[path] = {tuple(r[k] for k in sensitivity.KEY_FIELDS): r for r in out}
    counts[path], timings[path] = count, harness.Timing(seconds, count.seconds, [seconds], None)
  metrics = ('flip_rate', 'spearman', 'topk_overlap', 'test_accuracy')
  equal = sum(all(records['old'][k][m] == r[m] for m in metrics)
              for k, r in records['new'].items())
  return [harness.make_row(
      'compiles', f"sensitivity grid: baseline + {len(variations)} variations x "
      f"{len(size['tasks'])} task(s) x 2 models x 2 attacks x 3 seeds",
      f"n={size['n_train']} t={size['n_test']} m={size['width']} epochs={size['epochs']}",
      'a program per value, accuracies op by op', timings['old'], 'a program per shape',
      timings['new'],
      programs_old=counts['old'].programs, programs_new=counts['new'].programs,
      records_equal=f"{equal}/{len(records['new'])}",
      note=f"programs compiled {counts['old'].programs} -> {counts['new'].programs}; "
           f"{equal} of {len(records['new'])} records equal in flip rate, Spearman, top-k and "
           'accuracy; each path timed once from a cold cache')]


ANALYSIS_WIDTHS = {'quick': (16, 64, 256, 1024), 'full': (16, 64, 256, 1024, 4096)}
ANALYSIS_FIELDS = ('mask', 'mask_is_declared', 'out_dim', 'prefix_trainable', 'prefix_kind',
                   'head_kind', 'signature')


def _old_plan(head, n_in, probe_dtype=jnp.float32):
  """`ntk_closed_form.plan` before: every layer initialised and applied on jax.random draws."""
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, n_in), probe_dtype)
  key = jax.random.PRNGKey(2)
  out = []
  for init_fn, apply_fn, path in ntk_closed_form.leaf_layers(head):
    key, k1, k2 = jax.random.split(key, 3)
    shape, params = init_fn(k1, x.shape)
    name = getattr(apply_fn, '__name__', '')
    spec = layers.declared(apply_fn)
    if spec.get('frozen'):
      kind = 'frozen'
    elif name in ntk_closed_form.AFFINE and _old_is_affine(apply_fn, params, x, k2):
      kind = 'affine'
    elif (not jax.tree_util.tree_leaves(params)
          and (name in ntk_closed_form.POINTWISE or spec.get('per_token'))):
      kind = 'pointwise'
    else:
      return None
    out.append(ntk_closed_form.Layer(kind, apply_fn, path))
    x = apply_fn(jax.tree_util.tree_map(lambda p: jnp.asarray(p, probe_dtype), params), x)
    if tuple(x.shape) != tuple(shape) or x.ndim != 3:
      return None
  return tuple(out)


def _old_is_affine(apply_fn, params, x, key):
  if not (isinstance(params, tuple) and len(params) == 2):
    return False
  w, b = params
  if getattr(w, 'ndim', 0) != 2 or w.shape[0] != x.shape[-1]:
    return False
  if b is not None and (jnp.size(b) != w.shape[1] or jnp.shape(b)[-1] != w.shape[1]):
    return False
  s = ntk_closed_form.scales(apply_fn, w)
  if s is None or (b is None) != (s[1] is None):
    return False
  a, c = s
  w = jax.random.normal(key, w.shape, x.dtype)
  b = None if b is None else jax.random.normal(jax.random.fold_in(key, 1), b.shape, x.dtype)
  got = np.asarray(apply_fn((w, b), x), np.float64)
  want = a * np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  if b is not None:
    want = want + c * np.asarray(b, np.float64).reshape(-1)
  return bool(np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max()))


def _old_probe(model, params, x, cot):
  """`models._probe` before: op by op (`models._probe_eager`, a program per operation and
  shape), the Jacobian's test in jnp (its refusals are not exercised here: every model of
  the row is per token)."""
  feats, jac, grads = models._probe_eager(model, params, x, cot)  # pylint: disable=protected-access
  n = feats.shape[1]
  off = jnp.abs(jac) * (1 - jnp.eye(n))[:, None, :, None]
  if bool(jnp.any(off > 1e-6 * (jnp.max(jnp.abs(jac)) + 1e-30))):
    raise ValueError(f'model {model.name!r}: the head mixes tokens.')
  return feats, jac, grads


def _old_nonzero_leaves(tree):
  return [bool(jnp.any(g != 0)) for g in jax.tree_util.tree_leaves(tree)]


def run_model_analysis(args: harness.Args) -> List[dict]:
  """Making models (`Model`'s probe, docs/method.md §17): the study's two at each width and a
  user's composition (softmax attention, then Dense/ReLU/Dense/ReLU/Dense) at each, the
  previous analysis (the head recognised by initialising and running every layer on
  jax.random draws; the probe run op by op, its Jacobian and gradients tested with jnp)
  against the library's (the probe one compiled program), each from a cold JAX cache; every
  derived field must be equal."""
  widths = ANALYSIS_WIDTHS['quick' if args.quick else 'full']
  prefix = stax.serial(layers.Normalize(), layers.LinearizedAttention(normalize='softmax'),
                       layers.Normalize())

  def make_all():
    made = []
    for width in widths:
      head = stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(width), stax.Relu(),
                         stax.Dense(10))
      made += [models.build('relu_mlp', width, 10), models.build('mlp_attn', width, 10),
               models.compose(prefix, head, name='deep')]
    return [(tuple(getattr(m, f) for f in ANALYSIS_FIELDS),
             None if m.head_layers is None else tuple((l.kind, l.path) for l in m.head_layers))
            for m in made]

  fields, timings, counts = {}, {}, {}
  for path in ('old', 'new'):
    with previous_paths(analysis_paths(), active=path == 'old'):
      jax.clear_caches()
      models._build.cache_clear()   # pylint: disable=protected-access
      models._study_prefix.cache_clear()   # pylint: disable=protected-access
      t0 = time.perf_counter()
      with compiles.count() as count:
        fields[path] = make_all()
      seconds = time.perf_counter() - t0
    counts[path], timings[path] = count, harness.Timing(seconds, count.seconds, [seconds], None)
  equal = sum(a == b for a, b in zip(fields['old'], fields['new']))
  return [harness.make_row(
      'compiles', f'model analysis: 2 built-in models + a composed Dense/ReLU head, '
      f'{len(widths)} widths', f'widths={widths} probe 3 tokens x 4 channels',
      'probe op by op, head run on jax.random draws', timings['old'],
      'probe one program, shapes abstract, numpy reads',
      timings['new'], programs_old=counts['old'].programs, programs_new=counts['new'].programs,
      records_equal=f"{equal}/{len(fields['new'])}",
      note=f"programs compiled {counts['old'].programs} -> {counts['new'].programs}; "
           f"{equal} of {len(fields['new'])} models equal in every derived field; each path "
           'timed once from a cold cache')]
