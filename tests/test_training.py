"""Training (vmapped seeds), the kernel-regime check, sweeps and their resume."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import compiles
from ntk_attention import data
from ntk_attention import models
from ntk_attention import stats
from ntk_attention import sweeps
from ntk_attention import training
from ntk_attention.study import cache
from ntk_attention.study import store as store_lib
from oracles import devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def small():
  return data.load('digits', n_train=60, n_test=30, seed=0)


def test_unstack_takes_one_seed_on_the_host_without_a_program():
  """`unstack(tree, i)` is `a[i]` of every leaf (bit for bit), as device arrays, and compiles
  nothing (an eager slice would be a program per leaf shape and index)."""
  tree = (jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4)),
          [jnp.arange(6.0).reshape(3, 2), jnp.ones((3,), jnp.int32)])
  jax.block_until_ready(tree)
  for i in range(3):
    with compiles.count() as count:
      one = training.unstack(tree, i)
    assert count.programs == 0, dict(count.by_name)
    for got, leaf in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(tree)):
      assert isinstance(got, jax.Array) and got.dtype == leaf.dtype
      np.testing.assert_array_equal(np.asarray(got), np.asarray(leaf)[i])


@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_vmapped_training_equals_each_seed_alone(small, name):
  y = data.targets(small.y_train, small.num_classes)
  model = models.build(name, 32, small.num_classes)
  config = training.TrainConfig(epochs=5, batch_size=16)
  together = training.train(model, training.seed_keys([0, 1, 2]), small.x_train, y, config)
  alone = training.train(model, training.seed_keys([1]), small.x_train, y, config)
  for a, b in zip(jax.tree_util.tree_leaves(training.unstack(together.params, 1)),
                  jax.tree_util.tree_leaves(training.unstack(alone.params, 0))):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  # Different seeds really differ, and training moved the weights.
  w = together.params[1][0][0]
  assert float(jnp.abs(w[0] - w[2]).max()) > 1e-2
  assert float(jnp.abs(w[0] - together.init_params[1][0][0][0]).max()) > 1e-4


def test_readout_stays_frozen_and_loss_decreases(small):
  y = data.targets(small.y_train, small.num_classes)
  model = models.build('relu_mlp', 64, small.num_classes)
  res = training.train(model, training.seed_keys([0]), small.x_train, y,
                       training.TrainConfig(epochs=30, batch_size=20, lr=1e-2))
  np.testing.assert_array_equal(res.params[1][-1], res.init_params[1][-1])
  assert float(res.losses[0, -1]) < float(res.losses[0, 0])


def test_qkv_model_trains(small):
  y = data.targets(small.y_train, small.num_classes)
  model = models.build('mlp_attn_qkv', 8, small.num_classes)
  res = training.train(model, training.seed_keys([0]), small.x_train, y,
                       training.TrainConfig(epochs=3, batch_size=30, lr=1e-2))
  assert float(jnp.abs(res.params[0][1][0] - res.init_params[0][1][0]).max()) > 0


def test_sgd_mse_kernel_regime_wide_is_closer_than_narrow():
  # Textbook NTK theory: under gradient descent on MSE with a small learning rate, a wide
  # ReLU net moves its kernel less and tracks the NTK gradient-flow predictor better.
  ds = data.load('digits', classes=(3, 8), n_train=40, n_test=20, seed=0)
  config = training.TrainConfig(optimizer='sgd', loss='mse', lr=0.5, epochs=40,
                                batch_size=40, weight_decay=0.0)
  recs = sweeps.ntk_distance_sweep(ds, ['relu_mlp'], [64, 4096], [0, 1], config)
  assert {r['comparison'] for r in recs} == {'gradient_flow'}
  by_width = {w: [r for r in recs if r['width'] == w] for w in (64, 4096)}
  for metric in ('kernel_movement', 'function_distance'):
    narrow = np.mean([r[metric] for r in by_width[64]])
    wide = np.mean([r[metric] for r in by_width[4096]])
    assert wide < narrow, (metric, narrow, wide)


def _sweep_summary(ds, store, done_after=None):
  config = training.TrainConfig(epochs=2, batch_size=16)
  recs = []

  class Stop(Exception):
    pass

  def on_record(r):
    store.append(r)
    recs.append(r)
    if done_after is not None and len(recs) >= done_after:
      raise Stop()

  try:
    sweeps.ntk_distance_sweep(ds, ['relu_mlp', 'mlp_attn'], [8, 16], [0, 1], config,
                              on_record=on_record, done=store.done_keys(sweeps.KEY_FIELDS))
  except Stop:
    return None
  records = store.records()
  return stats.summarize(records, ('model', 'width'), sweeps.METRICS), len(records)


def test_resume_gives_the_same_summary(small, tmp_path):
  full = store_lib.JsonlStore(str(tmp_path / 'full.jsonl'))
  summary_full, n_full = _sweep_summary(small, full)
  part = store_lib.JsonlStore(str(tmp_path / 'part.jsonl'))
  assert _sweep_summary(small, part, done_after=3) is None      # interrupted mid-sweep
  kept = len(part.records())
  assert 0 < kept < n_full
  summary_resumed, n_resumed = _sweep_summary(small, part)
  assert n_resumed == n_full == 8
  for a, b in zip(summary_full, summary_resumed):
    assert a.keys() == b.keys()
    for k in a:
      if isinstance(a[k], float):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)
      else:
        assert a[k] == b[k]


@pytest.mark.parametrize('flag,message', [
    ('--widths=', 'widths'), ('--widths=16,0', 'widths'), ('--models=relu_mlp,cnn', 'models'),
    ('--epochs=0', 'epochs'), ('--seeds=0', 'seeds'), ('--dataset=imagenet', 'imagenet')])
def test_bad_flags_fail_before_training(tmp_path, flag, message):
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'ntk_distance.py'), flag,
       f'--output_dir={out}'], capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not (out / 'ntk_distance.jsonl').exists()


SHARDED = r'''
import jax, numpy as np
jax.config.update('jax_enable_x64', True)
from ntk_attention import data, models, training
assert len(jax.devices()) == 2, jax.devices()
ds = data.load('digits', n_train=40, n_test=10)
y = data.targets(ds.y_train, ds.num_classes)
model = models.build('relu_mlp', 16, ds.num_classes)
res = training.train(model, training.seed_keys([0, 1]), ds.x_train, y,
                     training.TrainConfig(epochs=3, batch_size=20))
w = res.params[1][0][0]
print('DEVICES', len(w.sharding.device_set))
np.save(OUT, np.asarray(w))
'''


def test_seeds_are_sharded_across_devices(tmp_path, small):
  out = tmp_path / 'w.npy'
  env = devices_env(2)
  proc = subprocess.run([sys.executable, '-c', f'OUT = {str(out)!r}\n' + SHARDED], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'DEVICES 2' in proc.stdout
  ds = data.load('digits', n_train=40, n_test=10)
  y = data.targets(ds.y_train, ds.num_classes)
  model = models.build('relu_mlp', 16, ds.num_classes)
  res = training.train(model, training.seed_keys([0, 1]), ds.x_train, y,
                       training.TrainConfig(epochs=3, batch_size=20))
  np.testing.assert_allclose(np.load(out), res.params[1][0][0], rtol=1e-5, atol=1e-6)


def test_cached_train_trains_each_seed_once_and_reloads_it_from_disk(small, tmp_path):
  """Per-seed entries: a later call with a subset of the seeds trains nothing; a fresh
  trainer on the same folder loads (trains nothing) and returns the same arrays; a seed
  trained alone equals the same seed trained with others (to float32 rounding)."""
  x, y = small.x_train, data.targets(small.y_train, small.num_classes)
  model = models.build('relu_mlp', 8, small.num_classes)
  config = training.TrainConfig(epochs=2, batch_size=16)
  fn = cache.cached_train(directory=str(tmp_path))
  three = fn(model, training.seed_keys([0, 1, 2]), x, y, config)
  # Seeds are sliced and stacked on the host: a hit compiles nothing, for any seed count.
  with compiles.count() as hit:
    two = fn(model, training.seed_keys([2, 0]), x, y, config)
  assert fn.stats == {'trained': 3, 'loaded': 0, 'hits': 2} and hit.programs == 0
  np.testing.assert_array_equal(two.losses, three.losses[jnp.array([2, 0])])
  for a, b in zip(jax.tree_util.tree_leaves(two.params), jax.tree_util.tree_leaves(three.params)):
    np.testing.assert_array_equal(a, np.asarray(b)[[2, 0]])
  again = cache.cached_train(directory=str(tmp_path))
  with compiles.count() as load:
    loaded = again(model, training.seed_keys([0, 1, 2]), x, y, config)
  assert again.stats == {'trained': 0, 'loaded': 3, 'hits': 0} and load.programs == 0
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(three)):
    np.testing.assert_array_equal(a, b)
  alone = training.train(model, training.seed_keys([1]), x, y, config)
  for a, b in zip(jax.tree_util.tree_leaves(alone.params),
                  jax.tree_util.tree_leaves(training.unstack(three.params, 1))):
    np.testing.assert_allclose(a[0], b, rtol=2e-5, atol=2e-6)
  # Another configuration is another entry.
  fn(model, training.seed_keys([0]), x, y, config._replace(lr=2e-3))
  assert fn.stats['trained'] == 4
