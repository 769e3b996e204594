"""Malleability protocol: kernel structure under perturbation, attacks, errors."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import attacks
from ntk_attention import compiles
from ntk_attention import data
from ntk_attention import layers
from ntk_attention import malleability
from ntk_attention import models
from ntk_attention import training
from ntk_attention._nt import stax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def small():
  return data.load('digits', n_train=50, n_test=20, seed=1)


@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_perturbing_one_point_changes_kernel_rows(small, name):
  model = models.build(name, 128, small.num_classes)
  params = models.init_params(model, jax.random.PRNGKey(0), small.d)
  x = jnp.asarray(small.x_train)
  x_pert = x.at[7].set(jnp.clip(x[7] + 0.3, 0, 1))
  for kernel in ('empirical', 'analytic'):
    a = malleability.kernel_blocks(model, params, x, small.x_test, kernel)
    b = malleability.kernel_blocks(model, params, x_pert, small.x_test, kernel)
    diff = np.abs(np.asarray(a.train - b.train))
    others = np.delete(np.delete(diff, 7, 0), 7, 1)
    assert diff[7].max() > 1e-4
    if name == 'relu_mlp':     # per-token model: only row and column 7 move
      assert others.max() == 0.0
      assert np.abs(np.asarray(a.eval - b.eval)).max() == 0.0
    else:                      # attention: point 7 is everyone's context
      assert np.all(diff.max(axis=1) > 1e-7)
      assert np.abs(np.asarray(a.eval - b.eval)).max() > 1e-7


@pytest.fixture(scope='module')
def trained(small):
  """A small trained MLP-Attn: (model, params, y_train, y_test)."""
  y = jnp.asarray(data.targets(small.y_train, small.num_classes))
  ye = jnp.asarray(data.targets(small.y_test, small.num_classes))
  model = models.build('mlp_attn', 64, small.num_classes)
  res = training.train(model, training.seed_keys([0]), small.x_train, y,
                       training.TrainConfig(epochs=20, batch_size=25, lr=1e-2))
  return model, training.unstack(res.params, 0), y, ye


def test_protocol_metrics_and_budget(small, trained):
  model, params, y, ye = trained
  setup = malleability.Setup(tau=0.2)
  records, arrays = malleability.protocol(
      model, params, malleability.Points(small.x_train, y, small.x_test, ye), ['fgsm', 'pgd'],
      [0.0, 0.2], setup, jax.random.PRNGKey(0), 'xent')
  by = {(r['attack'], r['eps']): r for r in records}
  assert set(by) == {('fgsm', 0.0), ('fgsm', 0.2), ('pgd', 0.0), ('pgd', 0.2)}
  for (attack, eps), r in by.items():
    assert r['n_subset'] == 10
    assert r['linf'] <= eps + 1e-6
    if eps == 0.0:             # no budget: nothing moves
      assert r['flip_rate'] == 0.0 and r['topk_overlap'] == 1.0
      assert r['spearman'] == pytest.approx(1.0)
  assert by[('pgd', 0.2)]['spearman'] < 1.0
  np.testing.assert_allclose(arrays['influence_after/pgd/0'], arrays['influence_before'])


def test_accuracies_are_one_program_and_equal_the_op_by_op_ones(small, trained):
  """The protocol's accuracies run as one compiled program per (model, shapes), with the
  numbers of the op-by-op computation (independently: argmax of `apply_fn` on the whole
  sequence against the labels, in numpy); a second init_std compiles nothing."""
  _, _, y, ye = trained
  model = models.build('mlp_attn', 40, small.num_classes)    # a width no other test compiles
  params = models.init_params(model, jax.random.PRNGKey(3), small.d)
  other = models.build('mlp_attn', 40, small.num_classes, init_std=1.0)  # the shared twin
  x, xe = jnp.asarray(small.x_train), jnp.asarray(small.x_test)
  with compiles.count() as count:
    compiled = malleability._accuracies(model, params, x, xe, y, ye)  # pylint: disable=protected-access
  eager = malleability._accuracies_eager(model, params, x, xe, y, ye)  # pylint: disable=protected-access
  assert [float(a) for a in compiled] == [float(a) for a in eager]
  out = np.asarray(model.apply_fn(params, jnp.concatenate([x, xe])[None])[0])
  n = len(x)
  assert float(compiled[0]) == pytest.approx(np.mean(out[n:].argmax(1) == small.y_test))
  assert float(compiled[1]) == pytest.approx(np.mean(out[:n].argmax(1) == small.y_train))
  assert count.programs == 1, dict(count.by_name)    # (JAX 0.5.3 reports no names)
  with compiles.count() as again:
    malleability._accuracies(other, params, x, xe, y, ye)  # pylint: disable=protected-access
  assert again.programs == 0, dict(again.by_name)


def test_compiled_or_eager_runs_an_untraceable_model_op_by_op():
  """A head with a Python branch on a value cannot be traced: `compiled_or_eager` runs it
  op by op and gives the same accuracies as a traceable twin (same weights, plain ReLU)."""
  def checked_relu():
    def apply_fn(params, inputs, **kwargs):
      del params, kwargs
      if not bool(jnp.all(jnp.isfinite(inputs))):
        raise ValueError('non-finite input')
      return jnp.maximum(inputs, 0)
    return (lambda rng, shape: (shape, ())), apply_fn, stax.Relu()[2]

  prefix = stax.serial(layers.Normalize(), layers.LinearizedAttention(), layers.Normalize())
  make = lambda relu: models.compose(prefix, stax.serial(stax.Dense(8), relu, stax.Dense(3)),
                                     name='checked')
  checked, plain = make(checked_relu()), make(stax.Relu())
  x = jax.random.uniform(jax.random.PRNGKey(1), (12, 5))
  y = jax.nn.one_hot(jnp.arange(12) % 3, 3)
  params = models.init_params(plain, jax.random.PRNGKey(2), 5)
  got = malleability._accuracies(checked, params, x[:8], x[8:], y[:8], y[8:])  # pylint: disable=protected-access
  want = malleability._accuracies(plain, params, x[:8], x[8:], y[:8], y[8:])  # pylint: disable=protected-access
  assert [float(a) for a in got] == [float(a) for a in want]


def test_influence_attack_flips_at_least_as_many_signs_as_pgd(small, trained):
  model, params, y, ye = trained
  records, _ = malleability.protocol(
      model, params, malleability.Points(small.x_train, y, small.x_test, ye),
      ['pgd', 'influence'], [0.1], malleability.Setup(tau=0.2), jax.random.PRNGKey(0), 'xent')
  by = {r['attack']: r for r in records}
  assert by['influence']['n_flipped'] >= by['pgd']['n_flipped']
  assert by['influence']['n_flipped'] > 0


def test_interventions_build_the_right_training_sets(small):
  y = jnp.asarray(data.targets(small.y_train, small.num_classes))
  model = models.build('relu_mlp', 32, small.num_classes)
  params = models.init_params(model, jax.random.PRNGKey(0), small.d)
  subset = np.array([3, 9, 21])
  x = jnp.asarray(small.x_train)
  setup = malleability.Setup(attack=attacks.AttackConfig(eps=0.1))
  key = jax.random.PRNGKey(0)
  xc, yc = malleability.intervention_set('curated', model, params, x, y, subset, setup, key, 'xent')
  keep = np.setdiff1d(np.arange(50), subset)
  assert xc.shape[0] == 47
  np.testing.assert_array_equal(xc, x[keep])
  np.testing.assert_array_equal(yc, y[keep])
  xt, _ = malleability.intervention_set('transformed', model, params, x, y, subset, setup, key,
                                        'xent')
  moved = np.abs(np.asarray(xt - x)).max(axis=1)
  assert set(np.nonzero(moved)[0]) <= set(subset) and moved.max() <= 0.1 + 1e-6
  xa, _ = malleability.intervention_set('adversarial', model, params, x, y, subset, setup, key,
                                        'xent')
  assert (np.abs(np.asarray(xa - x)).max(axis=1) > 0).sum() > 40


def test_compare_mean_and_per_point_scores():
  from ntk_attention import influence
  before = influence.Influence(matrix=np.array([[1., -2., 3.], [1., 2., -1.]]),
                               scores=np.array([1., 0., 1.]), loo_residuals=None, delta=None,
                               predictions=None)
  after = influence.Influence(matrix=np.array([[-1., -2., 3.], [1., 2., 1.]]),
                              scores=np.array([0., 0., 2.]), loo_residuals=None, delta=None,
                              predictions=None)
  mean = malleability.compare(before, after, np.array([0, 2]), 'mean')
  assert mean['flip_rate'] == 0.5 and mean['n_flipped'] == 1     # point 0: + -> 0
  per = malleability.compare(before, after, np.array([0, 2]), 'per_point')
  assert per['flip_rate'] == 0.5                                  # entries (0,0), (1,2) flip of 4
  assert per['topk_overlap'] == mean['topk_overlap'] == 1.0
  # k = 1: the top point by |I| is 0 (tie with 2, lower index) before, 2 after.
  assert malleability.compare(before, after, np.array([0, 2]), 'mean', topk=1)['topk_overlap'] == 0.0


@pytest.mark.parametrize('kwargs,match', [
    (dict(tau=0.0), 'tau'), (dict(tau=1.5), 'tau'), (dict(eps=-0.1), 'eps'),
    (dict(attack='cw'), 'attack'), (dict(n_train=5), 'too small'),
    (dict(kernel='nngp'), 'kernel'), (dict(topk=-1), 'topk'), (dict(topk=500), 'topk')])
def test_validate_rejects_bad_input(kwargs, match):
  setup = malleability.Setup(tau=kwargs.get('tau', 0.1), kernel=kwargs.get('kernel', 'empirical'),
                             topk=kwargs.get('topk', 0))
  with pytest.raises(ValueError, match=match):
    malleability.validate([kwargs.get('attack', 'pgd')], [kwargs.get('eps', 0.3)], setup,
                          kwargs.get('n_train', 100))


@pytest.mark.parametrize('flag,message', [
    ('--tau=0', 'tau'), ('--tau=1.2', 'tau'), ('--epsilons=-0.1', 'eps'),
    ('--attacks=fgsm,deepfool', 'attacks'), ('--n_train=5', 'too small'),
    ('--interventions=pruned', 'interventions'),
    ('--n_train=60000 --n_test=10000 --max_memory_gb=20', 'the largest n_train that fits is'),
    ('--max_memory_gb=-1', 'max_memory_gb')])
def test_script_fails_before_training(tmp_path, flag, message):
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', 'malleability.py'),
                         *flag.split(), f'--output_dir={out}'], capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not (out / 'malleability.jsonl').exists()


def test_settings_names_and_hooks_defaults():
  assert malleability.Settings().names() == ['standard']
  s = malleability.Settings(retrain=True, interventions=('curated', 'adversarial'),
                            adversarial_training=True)
  assert s.names() == ['retrain', 'curated', 'adversarial', 'pgd_at']
  hooks = malleability.Hooks()
  assert hooks.task == 'all' and tuple(hooks.done) == ()
  assert hooks.on_record({}) is None and hooks.on_arrays('k', {}) is None
  assert hooks.on_progress(3) is None
