"""Several devices (4 simulated CPU devices in a subprocess) give the single-device results:
row-blocked kernels (rows sharded), the influence computed from them, and trained
parameters (seed axis sharded)."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import blocked
from ntk_attention import data
from ntk_attention import devices
from ntk_attention import influence
from ntk_attention import kernels
from ntk_attention import models
from ntk_attention import training
from oracles import devices_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compute(out_path=None):
  """Kernels, influence and trained weights on a tiny digits task; the same code runs in
  this process (1 device) and in the subprocess (4 devices)."""
  ds = data.load('digits', n_train=30, n_test=9, seed=0)
  y = data.targets(ds.y_train, ds.num_classes)
  y_test = data.targets(ds.y_test, ds.num_classes)
  model = models.build('mlp_attn', 16, ds.num_classes)
  params = models.init_params(model, jax.random.PRNGKey(1), ds.d, jnp.float32)
  x, xe = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.x_test, jnp.float32)
  emp = blocked.empirical_ntk_blocked(model, params, x, xe, block=7)
  ana = blocked.analytic_ntk_blocked(model, ds.x_train.astype(np.float64),
                                     ds.x_test.astype(np.float64), block=7)
  # Influence from the float64 kernel: the float32 one's ulps are amplified by κ.
  blocks = kernels.split_blocks(ana, 30)
  infl = influence.loo_influence(blocks.train, blocks.eval_train, y, y_test).scores
  result = training.train(model, training.seed_keys([0, 1, 2, 3]), ds.x_train, y,
                          training.TrainConfig(epochs=2, batch_size=8))
  return {'emp': emp, 'ana': ana, 'influence': np.asarray(infl),
          'w': np.asarray(result.params[1][0][0])}


# Run from tests/ (`python -c` puts the working folder first on the path: `import test_sharding`).
SCRIPT = """
import sys
import jax
jax.config.update('jax_enable_x64', True)
import numpy as np
assert jax.device_count() == 4, jax.devices()
from ntk_attention import blocked
from ntk_attention import devices
import test_sharding
put_rows, _ = blocked.row_placement()
assert put_rows(np.ones((7, 3))).sharding.num_devices == 4   # the rows really are sharded
assert devices.mesh_1d('seeds').shape == {'seeds': 4}      # the one mesh, over every device
np.savez(sys.argv[1], **test_sharding._compute())
"""


def test_mesh_1d():
  mesh = devices.mesh_1d('rows')
  assert mesh.axis_names == ('rows',) and mesh.devices.tolist() == jax.devices()
  assert devices.mesh_1d('seeds', jax.devices()[:1]).shape == {'seeds': 1}
  with pytest.raises(ValueError, match='no devices'):
    devices.mesh_1d('rows', [])


def test_four_devices_equal_one(tmp_path):
  assert jax.device_count() == 1
  out = tmp_path / 'sharded.npz'
  env = devices_env(4, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(SCRIPT), str(out)],
                        cwd=os.path.join(ROOT, 'tests'),
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  sharded = dict(np.load(out))
  single = _compute()
  np.testing.assert_allclose(sharded['ana'], single['ana'], rtol=0, atol=1e-12)
  # float32 kernel entries and training: float32 ulps apart (measured 6e-8 and 3e-9).
  np.testing.assert_allclose(sharded['emp'], single['emp'], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(sharded['influence'], single['influence'], rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(sharded['w'], single['w'], rtol=1e-5, atol=1e-6)
  assert sharded['w'].shape[0] == 4
