"""One compiled program per cell shape (docs/method.md §6, §9): a cell with new values and
the same shapes compiles nothing, and what the traced values compute is checked against
independent references."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntk_attention import attacks
from ntk_attention import compiles
from ntk_attention import data
from ntk_attention import kernels
from ntk_attention import malleability
from ntk_attention import models
from ntk_attention import training
from ntk_attention.study import sensitivity


@pytest.fixture(scope='module')
def small():
  return data.load('digits', n_train=48, n_test=24, seed=0)


@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_new_training_values_compile_nothing(small, name):
  y = data.targets(small.y_train, small.num_classes)
  keys = training.seed_keys([0, 1])
  config = training.TrainConfig(epochs=20, batch_size=16)
  training.train(models.build(name, 16, small.num_classes), keys, small.x_train, y, config)
  other = models.build(name, 16, small.num_classes, init_std=0.5)   # built outside the count
  changed = config._replace(epochs=30, lr=3e-3, weight_decay=0.0)
  with compiles.count() as c:
    result = training.train(other, keys, small.x_train, y, changed)
  assert c.programs == 0, dict(c.by_name)
  # init_std: the weights `other` itself draws (ScaledDense scales them in float64).
  for s, key in enumerate(keys):
    direct = models.init_params(other, jax.random.split(key)[0], small.x_train.shape[1])
    for a, b in zip(jax.tree_util.tree_leaves(training.unstack(result.init_params, s)),
                    jax.tree_util.tree_leaves(direct)):
      np.testing.assert_array_equal(a, b)
  # Epochs in chunks: the first 20 epochs of 30 are a 20-epoch run, bit for bit.
  shorter = training.train(other, keys, small.x_train, y, changed._replace(epochs=20))
  np.testing.assert_array_equal(result.losses[:, :20], shorter.losses)
  assert result.losses.shape == (2, 30)


def test_traced_lr_and_weight_decay_match_a_plain_optax_loop(small):
  """Full-batch Adam with coupled L2 decay written out with optax and Python constants."""
  y = jnp.asarray(data.targets(small.y_train, small.num_classes), jnp.float32)
  x = jnp.asarray(small.x_train, jnp.float32)
  model = models.build('relu_mlp', 16, small.num_classes)
  key = training.seed_keys([3])
  config = training.TrainConfig(epochs=4, batch_size=len(x), lr=0.02, weight_decay=0.05)
  result = training.train(model, key, x, y, config)
  params = training.unstack(result.init_params, 0)
  mask = models.trainable_mask(model, params)
  opt = optax.multi_transform(
      {'t': optax.chain(optax.add_decayed_weights(0.05), optax.scale_by_adam(),
                        optax.scale(-0.02)), 'f': optax.set_to_zero()},
      jax.tree_util.tree_map(lambda m: 't' if m else 'f', mask))
  state = opt.init(params)

  def loss(p):      # full batch: the minibatch is every row (its order does not matter)
    out = model.apply_fn(p, x[None])[0]
    return jnp.mean(optax.softmax_cross_entropy(out, y))

  for _ in range(config.epochs):
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  for a, b in zip(jax.tree_util.tree_leaves(training.unstack(result.params, 0)),
                  jax.tree_util.tree_leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)   # float32, rows summed in another order
  w, w0 = (training.unstack(p, 0)[1][0][0] for p in (result.params, result.init_params))
  assert float(jnp.max(jnp.abs(w - w0))) > 0.01


def test_new_attack_budget_steps_and_rows_compile_nothing(small):
  """A new ε, PGD step count and attacked subset (another size: another τ) reuse the
  compiled attack; the result is PGD with all three as constants and the loss taken on
  the subset's rows by indexing (`loss_objective`)."""
  model = models.build('mlp_attn', 16, small.num_classes)
  y = jnp.asarray(data.targets(small.y_train, small.num_classes), jnp.float32)
  x = jnp.asarray(small.x_train, jnp.float32)
  params = models.init_params(model, jax.random.PRNGKey(0), x.shape[1])
  key = jax.random.PRNGKey(1)
  setup = malleability.Setup()
  malleability.perturb(model, params, 'pgd', x, y, np.arange(5), setup, key, 'xent')
  subset = np.array([3, 10, 17, 30, 41, 44, 47])
  changed = setup._replace(attack=setup.attack._replace(eps=0.1, pgd_steps=7))
  with compiles.count() as c:
    x_adv = malleability.perturb(model, params, 'pgd', x, y, subset, changed, key, 'xent')
  assert c.programs == 0, dict(c.by_name)
  # The reference: PGD with the step count, budget and rows as Python constants.
  loss_fn = malleability.loss_objective(model, params, y, subset, 'xent')
  mask = jnp.zeros(len(x), bool).at[subset].set(True)
  ref = jax.jit(lambda x: attacks.pgd(loss_fn, x, 0.1, key, steps=7, mask=mask))(x)
  np.testing.assert_allclose(x_adv, ref, atol=1e-6)
  assert float(jnp.max(jnp.abs(x_adv - x))) == pytest.approx(0.1, abs=1e-6)
  others = np.setdiff1d(np.arange(len(x)), subset)
  assert float(jnp.max(jnp.abs(x_adv[others] - x[others]))) == 0.0


@pytest.mark.parametrize('binary', [False, True])
def test_masked_loss_has_the_gradient_of_the_indexed_loss(small, binary):
  """The attacks see only the loss's gradient (sign steps, MIM's ℓ1-normalised steps): the
  masked loss (one program for every subset) has the indexed loss's gradient to float32
  rounding, cross-entropy and MSE alike, for subsets of several sizes, and the same sign
  wherever the gradient is above rounding. (Often bit for bit under XLA's default flags,
  docs/method.md §9; the tests' level 0 rounds more entries differently.)"""
  x = jnp.asarray(small.x_train, jnp.float32)
  labels = small.y_train if not binary else (small.y_train % 2)
  y = jnp.asarray(data.targets(labels, 2 if binary else small.num_classes), jnp.float32)
  kind = training.loss_kind(training.TrainConfig(), y.shape[1])
  assert kind == ('mse' if binary else 'xent')
  model = models.build('mlp_attn', 32, y.shape[1])
  params = models.init_params(model, jax.random.PRNGKey(2), x.shape[1])
  rng = np.random.default_rng(0)
  for size in (1, 5, 12, len(x)):
    subset = np.sort(rng.choice(len(x), size, replace=False))
    mask = np.zeros(len(x), bool)
    mask[subset] = True
    indexed = malleability.loss_objective(model, params, y, subset, kind)
    masked = malleability.masked_loss_objective(model, params, y, jnp.asarray(mask), kind)
    g_indexed = np.asarray(jax.jit(jax.grad(indexed))(x))
    g_masked = np.asarray(jax.jit(jax.grad(masked))(x))
    scale = float(np.max(np.abs(g_indexed)))
    assert scale > 0, size
    np.testing.assert_allclose(g_masked, g_indexed, rtol=1e-4, atol=1e-6 * scale,
                               err_msg=f'{kind}, {size} rows')
    clear = np.abs(g_indexed) > 1e-4 * scale
    np.testing.assert_array_equal(np.sign(g_masked[clear]), np.sign(g_indexed[clear]))
    np.testing.assert_allclose(float(masked(x)), float(indexed(x)), rtol=1e-6)


def test_sensitivity_variations_of_values_compile_nothing(small):
  """After the baseline cell, variations that change values and not shapes (ε, its units, τ,
  init_std, epochs, the ridge, PGD steps) compile no program: the run's count is the
  baseline's, bounded by its distinct shapes."""
  base = sensitivity.Baseline(eps=0.3, tau=0.25, width=16, n_train=len(small.x_train),
                              epochs=10, init_std=0.01)
  variations = [('eps', 0.1), ('eps_units', 'std'), ('tau', 0.5), ('init_std', 1.0),
                ('epochs', 20), ('ridge', 0.01), ('pgd_steps', 5)]
  load = lambda task, n: small
  config = training.TrainConfig(batch_size=16)
  with compiles.count() as first:
    sensitivity.run(load, ['all'], base, [], ['fgsm', 'pgd'], [0, 1, 2], config)
  with compiles.count() as rest:
    records = sensitivity.run(load, ['all'], base, variations, ['fgsm', 'pgd'], [0, 1, 2],
                              config)
  assert first.programs > 0
  assert rest.programs == 0, dict(rest.by_name)
  # Every variation ran, and the values took effect.
  by = {(r['choice'], r['value'], r['model'], r['attack'], r['seed']): r for r in records}
  assert len(records) == (1 + len(variations)) * 2 * 2 * 3   # the baseline again, too
  assert by[('eps', '0.1', 'mlp_attn', 'pgd', 0)]['linf'] == pytest.approx(0.1, abs=1e-6)
  assert by[('init_std', '1.0', 'relu_mlp', 'pgd', 0)]['init_std'] == 1.0
  assert by[('tau', '0.5', 'mlp_attn', 'fgsm', 0)]['n_subset'] == 2 * by[
      ('baseline', '', 'mlp_attn', 'fgsm', 0)]['n_subset'] == 24


# Programs per model at a new width (the two models: 23 measured; 33 at 22d5bea, before the
# accuracies were one program and the seeds sliced on the host).
PER_SHAPE = 15


def test_a_new_shape_compiles_one_program_per_stage_and_model(small):
  """The compile budget of a shape: a width variation (new parameter shapes, same data)
  compiles one training chunk, one accuracy program and one attack program per model (and
  attack), and at most PER_SHAPE programs per model in all (23 for the two models when
  measured: the probes of the model and its init_std = 1 twin, initialisation, the kernel
  rows, the draws of a new parameter shape); the same width again, or with another ε and
  τ, compiles nothing. (Widths no other test of this module uses.)"""
  base = sensitivity.Baseline(eps=0.3, tau=0.25, width=20, n_train=len(small.x_train),
                              epochs=10, init_std=0.01)
  load = lambda task, n: small
  config = training.TrainConfig(batch_size=16)
  run = lambda variations: sensitivity.run(load, ['all'], base, variations, ['fgsm', 'pgd'],
                                           [0, 1, 2], config)
  with compiles.count() as first:
    run([])
  with compiles.count() as width:
    run([('width', 12)])
  with compiles.count() as again:
    run([('width', 12)])
    sensitivity.run(load, ['all'], base._replace(width=12), [('eps', 0.1), ('tau', 0.5)],
                    ['fgsm', 'pgd'], [0, 1, 2], config)
  per_model = {'jit(_train_chunk)': 1, 'jit(_accuracies_eager)': 1, 'jit(_loss_attack)': 2}
  for name, count in per_model.items():
    assert width.by_name[name] == 2 * count, dict(width.by_name)
  assert first.programs > 0
  assert 0 < width.programs <= 2 * PER_SHAPE, dict(width.by_name)
  assert again.programs == 0, dict(again.by_name)



def _run_probe(code: str, tmp_path, releases, why: str) -> dict:
  """Runs `code` (which saves an npz to its argument) in a child with the scripts' XLA flags
  (none) and no compilation cache; its arrays. Skips with `why` when jaxlib is outside
  `releases`."""
  if not compiles.jaxlib_within(releases):
    pytest.skip(f'jaxlib {compiles._jaxlib_release()} is {why}')
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR', 'XLA_FLAGS')}
  path = tmp_path / 'probe.npz'
  proc = subprocess.run([sys.executable, '-c', code, str(path)], capture_output=True,
                        text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(path))

_OP_BY_OP_PROBE = '''
import sys, jax, jax.numpy as jnp, numpy as np
jax.config.update('jax_enable_x64', True)
from ntk_attention import blocked, compiles, data, kernels, malleability, models


def normalize(x):
  # jitted plainly, XLA rewrites this division and rounds differently from the op-by-op run
  return x * jnp.sqrt(x.shape[-1]) / jnp.sqrt(jnp.sum(x ** 2, axis=-1, keepdims=True))


def toy(x, w):
  # a product, a difference (a fused multiply-add when fused), a custom-JVP ReLU, a mean
  h = jax.nn.relu(normalize(x) @ w)
  return jnp.sqrt(jnp.mean(h ** 2, axis=0)), h * h - jnp.abs(h)


out, counts = {}, {}
def check(name, program, eager, *args):
  with compiles.count() as c:
    got = program(*args)
  counts[name] = c.programs
  for i, (a, b) in enumerate(zip(jax.tree_util.tree_leaves(got),
                                 jax.tree_util.tree_leaves(eager(*args)))):
    out[f'{name}/{i}/program'], out[f'{name}/{i}/eager'] = np.asarray(a), np.asarray(b)

assert compiles.op_by_op_compiles()
rng = np.random.RandomState(0)
for dtype in (np.float32, np.float64):
  x, w = rng.randn(61, 37).astype(dtype), rng.randn(37, 29).astype(dtype)
  program = compiles.op_by_op(toy)
  check(f'toy/{dtype.__name__}', program, toy, x, w)
  check(f'toy/{dtype.__name__}/new values', program, toy, x + 1, w)
digits = data.load('digits', n_train=40, n_test=20, seed=0)
odd = rng.rand(50, 37)      # 37 channels: not a square, not a multiple of a vector width
for name in ('mlp_attn', 'relu_mlp'):
  model = models.build(name, 16, 10)
  for label, x_train, x_test in (('digits', digits.x_train, digits.x_test),
                                 ('odd', odd[:30], odd[30:])):
    for dtype in (jnp.float32, jnp.float64):
      check(f'{name}/{label}/features/{dtype.__name__}', blocked._prefix_features,
            lambda m, *a: models._prefix_features_eager(m.prefix, *a), model, None, x_train,
            x_test, dtype)
    if label == 'odd':   # the features' reductions over channels are what 37 is for
      continue
    x64, e64 = jnp.asarray(x_train, jnp.float64), jnp.asarray(x_test, jnp.float64)
    check(f'{name}/{label}/analytic', lambda m, a, b: kernels._analytic_program(m, a, b, 'ntk'),
          lambda m, a, b: kernels._analytic_eager(m, a, b, 'ntk'), model, x64, e64)
    params = models.init_params(model, jax.random.PRNGKey(1), x_train.shape[1])
    check(f'{name}/{label}/train features', models._prefix_features_program,
          models._prefix_features_eager, model.prefix, params[0], x_train, x_test,
          np.dtype(jnp.result_type(x_train)))
np.savez(sys.argv[1], **out, **{f'count/{k}': v for k, v in counts.items()})
'''


def test_op_by_op_gives_the_op_by_op_bits_in_one_program(tmp_path):
  """`compiles.op_by_op`, in a child with the scripts' XLA flags (where it compiles): a toy
  function (a division XLA rewrites when jitted plainly, a fused-multiply-add pattern, a
  custom-JVP ReLU, a mean) and the library's stages that use it (the blocked kernels' prefix
  features, float32 and float64; the analytic kernel; the trained features of
  `malleability.trainability`), on digits (the features also on 37 channels), equal the
  op-by-op run bit for bit, each in one program; new values compile nothing."""
  got = _run_probe(_OP_BY_OP_PROBE, tmp_path, compiles.OP_BY_OP_JAXLIB,
                   'outside the releases op_by_op is measured on: it runs op by op there')
  counts = {k[len('count/'):]: int(v) for k, v in got.items() if k.startswith('count/')}
  assert counts.pop('toy/float32/new values') == counts.pop('toy/float64/new values') == 0
  assert len(counts) == 2 + 2 * (2 * 2 + 2) and all(c == 1 for c in counts.values()), counts
  pairs = sorted(k[:-len('/program')] for k in got if k.endswith('/program'))
  assert len(pairs) >= 2 * 2 * 2 + 2 * (2 * 2 + 2)
  for key in pairs:
    np.testing.assert_array_equal(got[key + '/program'], got[key + '/eager'], err_msg=key)


def test_op_by_op_runs_op_by_op_where_it_is_not_measured(monkeypatch):
  """`op_by_op` compiles only with a jaxlib in `OP_BY_OP_JAXLIB` and XLA flags that name none
  of `OP_BY_OP_UNMEASURED_FLAGS` (the tests' own flags name two), unless told to compile
  anyway (`OP_BY_OP_ENV`, as the tests do): elsewhere it runs its function op by op, the same
  numbers, and inside a trace it is traced inline."""
  monkeypatch.delenv(compiles.OP_BY_OP_ENV, raising=False)
  assert not compiles.op_by_op_compiles()        # this process: level 0, elemental emitters
  double = compiles.op_by_op(lambda a: a * 2.0 - 1.0)
  x = np.arange(5.0)
  with compiles.count() as eager:
    np.testing.assert_array_equal(np.asarray(double(x)), 2.0 * x - 1.0)
  assert 'jit(<lambda>)' not in eager.by_name, dict(eager.by_name)   # no program of its own
  traced = jax.jit(lambda a: double(a) + 1.0)
  np.testing.assert_array_equal(np.asarray(traced(x)), 2.0 * x)
  monkeypatch.setenv('XLA_FLAGS', '')
  for release, compiles_one in (((0, 10, 2), True), ((0, 5, 3), False), (None, False)):
    monkeypatch.setattr(compiles, '_jaxlib_release', lambda r=release: r)
    assert compiles.op_by_op_compiles() == compiles_one, release
  for flag in compiles.OP_BY_OP_UNMEASURED_FLAGS:
    monkeypatch.setenv('XLA_FLAGS', f'--{flag}=1')
    assert not compiles.op_by_op_compiles(), flag


@pytest.mark.skipif(not compiles.jaxlib_within(compiles.OP_BY_OP_JAXLIB),
                    reason='op_by_op compiles only with a jaxlib in OP_BY_OP_JAXLIB')
def test_op_by_op_compiled_under_the_tests_flags_gives_the_numbers_to_rounding(monkeypatch):
  """The tests compile `op_by_op` stages under their own flags (`OP_BY_OP_ENV`,
  tests/conftest.py): XLA's rounding there, not op by op's bits, but the same numbers to
  float64 rounding. The program keeps XLA's fusion emitters (`compiles.OP_BY_OP`): with the
  elemental emitters of the tests' flags and the fusion pass off, XLA:CPU (jaxlib 0.10.2)
  returned the analytic 2L-ReLU NTK below wrong by 0.44 (measured)."""
  monkeypatch.setenv(compiles.OP_BY_OP_ENV, 'compile')
  assert compiles.op_by_op_compiles()
  assert compiles.FUSION_EMITTERS_OFF in os.environ['XLA_FLAGS']     # the flags it must survive
  x = np.asarray(data.load('digits', n_train=12, n_test=4).x_train, np.float64)
  for name in ('relu_mlp', 'mlp_attn'):
    model = models.build(name, 17, 3)     # a width no other test builds: a program not in memory
    with compiles.count() as one:
      compiled = np.asarray(kernels.analytic_kernel(model, x[:8], x[8:]))
    assert one.by_name['jit(_analytic_eager)'] == 1, dict(one.by_name)    # one program
    monkeypatch.setattr(compiles, 'op_by_op_enabled', [False])
    eager = np.asarray(kernels.analytic_kernel(model, x[:8], x[8:]))
    monkeypatch.setattr(compiles, 'op_by_op_enabled', [True])
    np.testing.assert_allclose(compiled, eager, rtol=1e-12, atol=1e-14, err_msg=name)


def test_nested_counts_see_the_same_programs_and_unwind_in_order():
  """Counters nest: an inner count that saw exactly the outer's programs (equal fields) ends
  without ending the outer, which then counts on."""
  square = lambda a: a * a    # a new function: a program of its own
  with compiles.count() as outer:
    with compiles.count() as inner:
      jax.jit(square)(np.arange(3.0)).block_until_ready()
    assert inner == outer and inner.programs == 1
    jax.jit(lambda a: a + 1)(np.arange(3.0)).block_until_ready()
  assert (inner.programs, outer.programs) == (1, 2)


def test_fast_cpu_compile_adds_its_flag_once_and_leaves_a_users_choice(monkeypatch):
  monkeypatch.setattr(compiles, '_jaxlib_release', lambda: (0, 7, 0))
  monkeypatch.setattr(compiles, '_backend_started', lambda: False)
  env = {'XLA_FLAGS': '--xla_backend_optimization_level=0'}
  assert compiles.fast_cpu_compile(env)
  assert env['XLA_FLAGS'] == '--xla_backend_optimization_level=0 ' + compiles.FUSION_EMITTERS_OFF
  assert not compiles.fast_cpu_compile(env)            # named already: unchanged
  assert env['XLA_FLAGS'].count('fusion_emitters') == 1
  mine = {'XLA_FLAGS': '--xla_cpu_use_fusion_emitters=true'}
  assert not compiles.fast_cpu_compile(mine) and mine['XLA_FLAGS'].endswith('=true')
  empty = {}
  assert compiles.fast_cpu_compile(empty) and empty['XLA_FLAGS'] == compiles.FUSION_EMITTERS_OFF
  # An untested jaxlib (XLA aborts on a flag it does not know), or a started backend
  # (XLA has read its flags): nothing changes.
  for release, started in (((0, 11, 0), False), ((0, 5, 2), False), (None, False),
                           ((0, 7, 0), True)):
    monkeypatch.setattr(compiles, '_jaxlib_release', lambda r=release: r)
    monkeypatch.setattr(compiles, '_backend_started', lambda s=started: s)
    env = {}
    assert not compiles.fast_cpu_compile(env) and env == {}, (release, started)
  monkeypatch.undo()
  jax.devices()                                        # this process's backend has started
  assert compiles._backend_started() and not compiles.fast_cpu_compile({})


_LEVEL_PROBE = '''
import sys, jax, numpy as np
jax.config.update('jax_enable_x64', True)
from ntk_attention import compiles, data, malleability, models, training

def probe(quick):
  compiles.quick_compile_enabled[0] = quick
  jax.clear_caches()
  ds = data.load('digits', n_train=40, n_test=20, seed=0)
  y, y_eval = data.targets(ds.y_train, 10), data.targets(ds.y_test, 10)
  out = {'quick': np.asarray(compiles.quick_compile())}
  for name in ('mlp_attn',):   # attention across samples and the study's ReLU head
    model = models.build(name, 32, 10)
    result = training.train(model, training.seed_keys([0, 1]), ds.x_train, y,
                            training.TrainConfig(epochs=3, batch_size=20))
    params = training.unstack(result.params, 1)
    setup = malleability.Setup()
    x_adv = malleability.perturb(model, params, 'pgd', ds.x_train.astype(np.float32), y,
                                 np.arange(6), setup, jax.random.PRNGKey(1), 'xent')
    infl = malleability.influence(model, params, x_adv, y, ds.x_test, y_eval, setup)
    acc = malleability._accuracies(model, params, ds.x_train, ds.x_test, y, y_eval)
    out.update({f'{name}/init': np.asarray(jax.tree_util.tree_leaves(result.init_params)[0]),
                f'{name}/params': np.asarray(jax.tree_util.tree_leaves(result.params)[0]),
                f'{name}/losses': np.asarray(result.losses), f'{name}/x_adv': np.asarray(x_adv),
                f'{name}/influence': np.asarray(infl.scores), f'{name}/acc': np.asarray(acc)})
  return out

if __name__ == '__main__':
  np.savez(sys.argv[1], **{f'{k}/{q}': v for q in (False, True) for k, v in probe(q).items()})
'''


def test_quick_compile_gives_the_bits_of_xlas_default_level(tmp_path):
  """`compiles.jit` at LLVM level 1 against `jax.jit` at XLA's default (3), in a child with
  the scripts' XLA flags: initialisation, training (its chunks keep `jax.jit`), a PGD attack,
  the float64 influence and the accuracies of MLP-Attn, bit for bit (docs/method.md §16;
  level 0 fails this)."""
  got = _run_probe(_LEVEL_PROBE, tmp_path, compiles.QUICK_COMPILE_JAXLIB,
                   "outside the releases measured to keep the bits at level 1: compiles.jit "
                   "compiles at XLA's level there")
  assert not got.pop('quick/False') and got.pop('quick/True')   # the child ran both levels
  keys = sorted({k.rsplit('/', 1)[0] for k in got})
  assert len(keys) == 6
  for k in keys:
    np.testing.assert_array_equal(got[f'{k}/True'], got[f'{k}/False'], err_msg=k)


def test_quick_compile_only_where_no_level_is_named(monkeypatch):
  """The tests' XLA_FLAGS name level 0: `compiles.jit` leaves it; without it, level 1 on a
  CPU with a jaxlib measured to keep the bits; otherwise, or switched off, XLA's default."""
  assert compiles.QUICK_COMPILE_FLAG in os.environ.get('XLA_FLAGS', '')
  assert not compiles.quick_compile()
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_use_fusion_emitters=false')
  monkeypatch.setattr(compiles, '_jaxlib_release', lambda: compiles.QUICK_COMPILE_JAXLIB[0])
  assert compiles.quick_compile() == (jax.default_backend() == 'cpu')
  # Nested: JAX takes compiler options only at the top level, so the inner call runs plain,
  # inside the outer program.
  inner = compiles.jit(lambda a: a * 2)
  outer = compiles.jit(lambda a: inner(a) + 1)
  with compiles.count() as c:
    assert outer(np.arange(4.0)).tolist() == [1.0, 3.0, 5.0, 7.0]
  assert c.programs == 1
  for release in ((0, 5, 3), None):   # a jaxlib not measured, or none: XLA's level
    monkeypatch.setattr(compiles, '_jaxlib_release', lambda r=release: r)
    assert not compiles.quick_compile()
  monkeypatch.setattr(compiles, '_jaxlib_release', lambda: compiles.QUICK_COMPILE_JAXLIB[0])
  monkeypatch.setattr(compiles, 'quick_compile_enabled', [False])
  assert not compiles.quick_compile()
  f = compiles.jit(lambda a, n: a * n, static_argnums=1)
  assert f(np.arange(3.0), 2).tolist() == [0.0, 2.0, 4.0]
  assert f.lower(np.arange(3.0), 2).as_text() == f.plain.lower(np.arange(3.0), 2).as_text()


_EMITTER_PROBE = '''
import sys, jax, numpy as np
jax.config.update('jax_enable_x64', True)
from ntk_attention import data, kernels, models, training

def probe():
  ds = data.load('digits', n_train=40, n_test=20, seed=0)
  y = data.targets(ds.y_train, ds.num_classes)
  model = models.build('mlp_attn', 32, ds.num_classes)  # attention across samples, a ReLU MLP
  result = training.train(model, training.seed_keys([0]), ds.x_train, y,
                          training.TrainConfig(epochs=3, batch_size=20))
  params = training.unstack(result.params, 0)
  return {'losses': np.asarray(result.losses),                                # float32
          'entk': np.asarray(kernels.empirical_ntk(model, params, ds.x_train)),
          'ntk': np.asarray(kernels.analytic_kernel(model, ds.x_train.astype(np.float64)))}

if __name__ == '__main__':
  np.savez(sys.argv[1], **probe())
'''


def test_fusion_emitters_off_gives_the_same_numbers_to_rounding(tmp_path):
  """The same training, empirical and analytic kernels with XLA's fusion emitters (a child
  process) and without (this process: the tests run with `fast_cpu_compile`): float32 values
  agree to float32 rounding of a few hundred operations, float64 ones to 1e-12 except the
  analytic kernel's ill-conditioned diagonal (measured: bit-identical at this size on one
  host, 8 diagonal entries 4e-9 apart on another; the quick preset's attacks and influences
  differ at rounding, docs/method.md §16)."""
  if not compiles.jaxlib_within(compiles.FUSION_EMITTERS_FLAG_JAXLIB):
    pytest.skip(f'jaxlib {compiles._jaxlib_release()} is outside the releases tested to know '
                'the flag')
  import os
  import subprocess
  import sys
  if compiles.FUSION_EMITTERS_OFF not in os.environ.get('XLA_FLAGS', ''):
    pytest.skip('XLA_FLAGS names the fusion emitters: this process runs with the user\'s choice')
  flags = os.environ['XLA_FLAGS'].replace(compiles.FUSION_EMITTERS_OFF, '').strip()
  # The child compiles its own programs (no persistent cache) under XLA's default emitters.
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  path = tmp_path / 'fused.npz'
  proc = subprocess.run([sys.executable, '-c', _EMITTER_PROBE, str(path)], capture_output=True,
                        text=True, timeout=300, env=dict(env, XLA_FLAGS=flags))
  assert proc.returncode == 0, proc.stderr[-3000:]
  fused = dict(np.load(path))
  namespace = {'__name__': 'emitter_probe'}
  exec(_EMITTER_PROBE, namespace)   # pylint: disable=exec-used
  elemental = namespace['probe']()
  assert fused.keys() == elemental.keys() and len(fused) == 3
  for k in fused:
    assert elemental[k].dtype == fused[k].dtype, k
    if fused[k].dtype == np.float32:
      np.testing.assert_allclose(elemental[k], fused[k], rtol=1e-5, atol=1e-6, err_msg=k)
    elif k == 'ntk':
      # The analytic kernel's diagonal is ill-conditioned: there the cosine is 1 up to
      # rounding, and one ulp (1.1e-16) below 1 moves arccos by sqrt(2.2e-16) = 1.5e-8 and
      # the ReLU kernels by θ/π ≈ 4.7e-9 (seen on an AMD EPYC host, 8 of 40 diagonal
      # entries); every entry off it must agree to 1e-12.
      off = ~np.eye(len(fused[k]), dtype=bool)
      np.testing.assert_allclose(elemental[k][off], fused[k][off], rtol=1e-12, atol=1e-14,
                                 err_msg=k)
      np.testing.assert_allclose(np.diag(elemental[k]), np.diag(fused[k]), rtol=0, atol=1e-8,
                                 err_msg=k)
    else:
      np.testing.assert_allclose(elemental[k], fused[k], rtol=1e-12, atol=1e-14, err_msg=k)
