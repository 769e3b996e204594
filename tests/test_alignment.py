"""ntk_attention.alignment and scripts/approximation.py, against hand and numpy computations.

The script runs as a subprocess started at module import of the fixture, so its jax start-up
overlaps the in-process tests.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ntk_attention import alignment
from ntk_attention import data
from ntk_attention.study import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'scripts', 'approximation.py')


@pytest.fixture(scope='module', autouse=True)
def script_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('approximation')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.Popen(
      [sys.executable, SCRIPT, '--dataset=digits', '--n_train=80', '--n_test=30',
       '--synthetic_seeds=2', '--k_top=3', f'--output_dir={out}'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  yield proc, out
  if proc.poll() is None:
    proc.kill()


@pytest.fixture(scope='module')
def digits_small():
  ds = data.load('digits', n_train=150, n_test=50, seed=0)
  x_tr, x_te = np.float64(ds.x_train), np.float64(ds.x_test)
  return ds, x_tr, x_te, alignment.kernel_suite(x_tr, x_te)


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------------------------ alignment

def test_centered_alignment_hand_computed():
  k = np.array([[2., 1., 0.], [1., 2., 1.], [0., 1., 2.]])
  y = np.array([1., 2., 6.])
  # By hand: Kc = (1/9)[[10,-2,-8],[-2,4,-2],[-8,-2,10]], yc = (-2,-1,3), ycᵀKc yc = 26,
  # ‖Kc‖_F = √360/9, ‖yc ycᵀ‖_F = ‖yc‖² = 14  ->  A = 39/(14√10).
  assert alignment.centered_alignment(k, y) == pytest.approx(39 / (14 * math.sqrt(10)), rel=1e-12)
  # The same as explicit sums.
  n = 3
  row = [sum(k[i, j] for j in range(n)) / n for i in range(n)]
  grand = sum(row) / n
  kc = [[k[i, j] - row[i] - row[j] + grand for j in range(n)] for i in range(n)]
  ym = sum(y) / n
  yc = [v - ym for v in y]
  num = sum(kc[i][j] * yc[i] * yc[j] for i in range(n) for j in range(n))
  k_norm = math.sqrt(sum(kc[i][j] ** 2 for i in range(n) for j in range(n)))
  y_norm = math.sqrt(sum((yc[i] * yc[j]) ** 2 for i in range(n) for j in range(n)))
  assert alignment.centered_alignment(k, y) == pytest.approx(num / (k_norm * y_norm), rel=1e-12)


def test_centered_alignment_multi_output_loops():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((6, 4))
  k, y = a @ a.T, rng.standard_normal((6, 3))
  n, c = y.shape
  kc = k - k.mean(0)[None] - k.mean(1)[:, None] + k.mean()
  yc = y - y.mean(0)
  yy = np.array([[sum(yc[i, m] * yc[j, m] for m in range(c)) for j in range(n)] for i in range(n)])
  expected = np.sum(kc * yy) / (np.sqrt(np.sum(kc ** 2)) * np.sqrt(np.sum(yy ** 2)))
  assert alignment.centered_alignment(k, y) == pytest.approx(expected, rel=1e-12)


def test_alignment_of_target_kernel_is_one_and_invariant():
  rng = np.random.default_rng(0)
  y = rng.standard_normal((12, 3))
  assert alignment.centered_alignment(y @ y.T, y) == pytest.approx(1.0, abs=1e-12)
  assert alignment.centered_alignment(7.5 * (y @ y.T), y) == pytest.approx(1.0, abs=1e-12)
  a = rng.standard_normal((12, 5))
  k = a @ a.T
  base = alignment.centered_alignment(k, y)
  assert abs(base) < 0.99
  assert alignment.centered_alignment(0.01 * k, y) == pytest.approx(base, rel=1e-12)
  assert alignment.centered_alignment(k + 3.0, y + 2.0) == pytest.approx(base, rel=1e-12)


def test_alignment_bad_input():
  with pytest.raises(ValueError, match='undefined'):
    alignment.centered_alignment(np.eye(3), np.ones(3))
  with pytest.raises(ValueError, match='NaN'):
    alignment.centered_alignment(np.array([[1., np.nan], [np.nan, 1.]]), np.array([1., 0.]))
  with pytest.raises(ValueError, match='shape'):
    alignment.centered_alignment(np.eye(3), np.ones(4))


# ------------------------------------------------------------------------------------ KRR

def test_krr_against_direct_solve():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((25, 4))
  k_all = 5.0 * np.exp(-0.5 * np.sum((x[:, None] - x[None]) ** 2, -1))   # mean diag 5
  k, kt = k_all[:20, :20], k_all[20:, :20]
  y = rng.standard_normal((20, 2))
  y_test = rng.standard_normal((5, 2))
  ridge = 1e-2
  pred = kt @ np.linalg.solve(k + ridge * np.trace(k) / 20 * np.eye(20), y)
  np.testing.assert_allclose(alignment.krr_predict(k, kt, y, ridge), pred, rtol=1e-10, atol=1e-12)
  res = alignment.krr_test_error(k, kt, y, y_test, ridge)
  assert res['mse'] == pytest.approx(np.mean((pred - y_test) ** 2), rel=1e-10)
  assert res['relative_mse'] == pytest.approx(np.sum((pred - y_test) ** 2) / np.sum(y_test ** 2),
                                              rel=1e-10)
  # 1-d targets are one output.
  one = alignment.krr_test_error(k, kt, y[:, 0], y_test[:, 0], ridge)
  assert one['mse'] == pytest.approx(np.mean((pred[:, 0] - y_test[:, 0]) ** 2), rel=1e-10)


def test_krr_accuracy_separable_toys():
  rng = np.random.default_rng(3)
  # Binary, ±1 targets: two clusters at x = ±3, linear kernel plus a constant.
  x = np.concatenate([rng.normal(3, 0.3, 30), rng.normal(-3, 0.3, 30)])
  labels = np.repeat([0, 1], 30)
  order = rng.permutation(60)
  x, labels = x[order], labels[order]
  k_all = np.outer(x, x) + 1.0
  y = np.where(labels == 0, 1.0, -1.0)
  res = alignment.krr_test_error(k_all[:40, :40], k_all[40:, :40], y[:40], y[40:])
  assert res['accuracy'] == 1.0
  # Flipping the test labels flips every prediction's correctness.
  assert alignment.krr_test_error(k_all[:40, :40], k_all[40:, :40], y[:40], -y[40:])['accuracy'] == 0.0
  # 3 classes, one-hot: Gaussian blobs, RBF kernel.
  centres = np.array([[0., 5.], [5., 0.], [-5., -5.]])
  lab = rng.integers(0, 3, 90)
  pts = centres[lab] + 0.5 * rng.standard_normal((90, 2))
  k_all = np.exp(-np.sum((pts[:, None] - pts[None]) ** 2, -1) / 8)
  onehot = np.eye(3)[lab]
  res = alignment.krr_test_error(k_all[:60, :60], k_all[60:, :60], onehot[:60], onehot[60:])
  assert res['accuracy'] == 1.0
  wrong = np.eye(3)[(lab + 1) % 3]
  assert alignment.krr_test_error(k_all[:60, :60], k_all[60:, :60], onehot[:60],
                                  wrong[60:])['accuracy'] == 0.0


def test_krr_bad_input():
  with pytest.raises(ValueError, match='columns'):
    alignment.krr_test_error(np.eye(3), np.ones((2, 4)), np.ones(3), np.ones(2))
  with pytest.raises(ValueError, match='positive definite'):
    alignment.krr_predict(-np.eye(3), np.ones((2, 3)), np.ones(3))
  with pytest.raises(ValueError, match='outputs'):
    alignment.krr_test_error(np.eye(3), np.ones((2, 3)), np.ones(3), np.ones((2, 2)))


# ------------------------------------------------------------------------------------ kernels

def test_kernel_suite_closed_forms(digits_small):
  _, x_tr, x_te, suite = digits_small
  assert set(suite) == set(alignment.KERNELS)
  n, t = len(x_tr), len(x_te)
  u_tr, u_te = _unit(x_tr), _unit(x_te)
  g_tr, g_te = u_tr @ u_tr.T, u_te @ u_tr.T
  for name, (k, kt) in suite.items():
    assert k.shape == (n, n) and kt.shape == (t, n) and k.dtype == kt.dtype == np.float64, name
  np.testing.assert_allclose(suite['linear'][0], g_tr, atol=1e-13)
  np.testing.assert_allclose(suite['linear'][1], g_te, atol=1e-13)
  # G³ with training context: train rows (G³)_tr, test rows G_te,tr G_tr G_tr, then normalised.
  c_tr = g_tr @ g_tr @ g_tr
  c_te = g_te @ g_tr @ g_tr
  d_tr = np.sqrt(np.diag(c_tr))
  d_te = np.sqrt(np.einsum('ij,jk,ik->i', g_te, g_tr, g_te))   # diag of G_te,tr G_tr G_tr,te
  np.testing.assert_allclose(suite['gram_cubed'][0], c_tr / np.outer(d_tr, d_tr), atol=1e-10)
  np.testing.assert_allclose(suite['gram_cubed'][1], c_te / np.outer(d_te, d_tr), atol=1e-10)
  # ReLU first-layer NTK: cos θ (π − θ)/(2π).
  for got, g in zip(suite['relu_ntk'], (g_tr, g_te)):
    theta = np.arccos(np.clip(g, -1, 1))
    np.testing.assert_allclose(got, g * (np.pi - theta) / (2 * np.pi), atol=1e-8)
  # MLP-Attn NTK: the same arc-cosine form on the attention features' cosines.
  for got, g in zip(suite['mlp_attn_ntk'], suite['gram_cubed']):
    theta = np.arccos(np.clip(g, -1, 1))
    np.testing.assert_allclose(got, g * (np.pi - theta) / (2 * np.pi), atol=1e-8)


# ------------------------------------------------------------------------------------ targets

def test_synthetic_targets_properties():
  rng = np.random.default_rng(4)
  x = np.abs(rng.standard_normal((40, 10)))
  u = _unit(x)
  w, v = np.linalg.eigh(u @ u.T)
  top = v[:, np.argsort(w)[::-1][:4]]
  y = alignment.synthetic_targets(x, 'aligned', k_top=4, seed=7)
  assert y.shape == (40,)
  assert np.linalg.norm(y) == pytest.approx(np.sqrt(40), rel=1e-12)
  np.testing.assert_allclose(top @ (top.T @ y), y, atol=1e-10)      # in the top-4 span
  assert np.linalg.norm(top.T @ y) ** 2 == pytest.approx(40, rel=1e-10)
  np.testing.assert_array_equal(y, alignment.synthetic_targets(x, 'aligned', 4, seed=7))
  assert not np.allclose(y, alignment.synthetic_targets(x, 'aligned', 4, seed=8))
  r = alignment.synthetic_targets(x, 'random', seed=7)
  assert np.linalg.norm(r) == pytest.approx(np.sqrt(40), rel=1e-12)
  assert np.linalg.norm(top.T @ r) ** 2 < 0.5 * 40                  # mostly outside the span
  noisy = alignment.synthetic_targets(x, 'aligned', 4, seed=7, noise=0.1)
  assert 0 < np.linalg.norm(noisy - y) < 0.3 * np.sqrt(40)
  with pytest.raises(ValueError, match='k_top'):
    alignment.synthetic_targets(x, 'aligned', k_top=11)
  with pytest.raises(ValueError, match='kind'):
    alignment.synthetic_targets(x, 'shuffled')


def test_aligned_targets_easier_for_gram_cubed(digits_small):
  _, x_tr, x_te, suite = digits_small
  n = len(x_tr)
  x_all = np.concatenate([x_tr, x_te])
  k, kt = suite['gram_cubed']
  err = {}
  for kind in alignment.SYNTHETIC_KINDS:
    err[kind] = [alignment.krr_test_error(
        k, kt, y[:n], y[n:])['relative_mse'] for y in
        (alignment.synthetic_targets(x_all, kind, 5, s) for s in range(3))]
  assert max(err['aligned']) < 0.1 < 0.8 < min(err['random'])


# ------------------------------------------------------------------------------------ script

def test_script_end_to_end(script_run):
  proc, out = script_run
  stdout, stderr = proc.communicate(timeout=240)
  assert proc.returncode == 0, (stdout + stderr)[-3000:]
  res = store_lib.read_json(out / 'approximation.json')
  rows = {(r['task'], r['kernel']): r for r in res['summary']}
  assert set(rows) == {(t, k) for t in ('real', 'aligned', 'random') for k in alignment.KERNELS}
  for (task, kernel), r in rows.items():
    assert r['relative_mse_count'] == (1 if task == 'real' else 2)
    assert math.isfinite(r['relative_mse_mean']) and -1 <= r['alignment_mean'] <= 1
  assert res['provenance']['flags']['k_top'] == 3
  for name in ('approximation.csv', 'approximation.png', 'approximation_alignment.png'):
    assert (out / name).stat().st_size > 0
  # The real-task numbers of the linear kernel, recomputed with numpy on the same subsample.
  ds = data.load('digits', n_train=80, n_test=30, seed=0)
  u_tr, u_te = _unit(np.float64(ds.x_train)), _unit(np.float64(ds.x_test))
  y_tr, y_te = np.eye(10)[ds.y_train], np.eye(10)[ds.y_test]
  k = u_tr @ u_tr.T
  pred = u_te @ u_tr.T @ np.linalg.solve(k + 1e-3 * np.mean(np.diag(k)) * np.eye(80), y_tr)
  lin = rows['real', 'linear']
  assert lin['relative_mse_mean'] == pytest.approx(np.sum((pred - y_te) ** 2) / 30, rel=1e-8)
  assert lin['accuracy'] == pytest.approx(np.mean(pred.argmax(1) == ds.y_test))


def test_part_writes_what_the_script_writes(script_run, tmp_path):
  # study.parts.approximation on the config the script's flags map to: the same file.
  from ntk_attention.study import configs  # pylint: disable=import-outside-toplevel
  from ntk_attention.study.parts import approximation  # pylint: disable=import-outside-toplevel
  proc, out = script_run
  if proc.returncode is None:      # this test alone: the script still runs
    proc.communicate(timeout=240)
  assert proc.returncode == 0
  config = configs.Approximation(
      data=configs.Data(dataset='digits', n_train=80, n_test=30, fit_to_pool=False),
      synthetic_seeds=2, k_top=3)
  approximation.run(config, str(tmp_path))
  part = store_lib.read_json(tmp_path / 'approximation.json')
  script = store_lib.read_json(out / 'approximation.json')
  part.pop('provenance')
  assert script.pop('provenance')['config'] == configs.as_dict(config)
  # The same computation: the same fields and numbers, up to the summation order of
  # OpenBLAS's threads (one in the script, _common; more here).
  def leaves(obj, path=''):
    if isinstance(obj, dict):
      return {k: v for key, val in obj.items() for k, v in leaves(val, f'{path}/{key}').items()}
    if isinstance(obj, list):
      return {k: v for i, val in enumerate(obj) for k, v in leaves(val, f'{path}[{i}]').items()}
    return {path: obj}
  a, b = leaves(part), leaves(script)
  assert a.keys() == b.keys()
  for k in a:
    if isinstance(a[k], float):
      assert a[k] == pytest.approx(b[k], rel=1e-10, abs=1e-14), k
    else:
      assert a[k] == b[k], k
