"""scripts/spectral.py and scripts/kernels.py end to end, on tiny digits subsamples.

The scripts run as subprocesses (their real command line, absl flag parsing included), all three
at once to share the jax/NT start-up; their parts (`study.parts.spectral` / `.kernels`) run
in-process on the configs the flags map to, and must write the same numbers; bad values are
checked in-process on those configs, where each costs nothing. Every number read back is checked
against an independent numpy computation on the same data subsample, loaded with `data.load`
and the scripts' flags.
"""
import dataclasses
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import data
from ntk_attention import models
from ntk_attention.study import configs
from ntk_attention.study import parts
from ntk_attention.study import store as store_lib
from oracles import json_numbers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'scripts')
N_TRAIN, N_TEST = 30, 20       # n = 30 < rank(digits) = 61: κ(G) is finite and κ³ < 1e12.
DATA_FLAGS = ['--dataset=digits', f'--n_train={N_TRAIN}', f'--n_test={N_TEST}', '--seed=0']
SPECTRAL_FLAGS = ['--n_grid=10,20,5000', '--depths=1,2', '--ranks=5,10']
KERNEL_FLAGS = ['--models=relu_mlp,mlp_attn', '--widths=8,2048', '--seeds=2']
# The same runs as configs (`study.parts`): sizes given, so they are honoured.
DATA = configs.Data(dataset='digits', n_train=N_TRAIN, n_test=N_TEST, seed=0, fit_to_pool=False)
SPECTRAL = configs.Spectral(data=DATA, n_grid=(10, 20, 5000), depths=(1, 2), ranks=(5, 10))
KERNELS = configs.Kernels(data=DATA, models=('relu_mlp', 'mlp_attn'), widths=(8, 2048), seeds=2)


def _start(script, args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen([sys.executable, os.path.join(SCRIPTS, script), *args], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Runs spectral, kernels and one bad-flag kernels command concurrently; their output dirs."""
  base = tmp_path_factory.mktemp('scripts')
  dirs = {k: base / k for k in ('spectral', 'kernels', 'bad')}
  procs = {
      'spectral': _start('spectral.py', DATA_FLAGS + SPECTRAL_FLAGS +
                         [f'--output_dir={dirs["spectral"]}']),
      'kernels': _start('kernels.py', DATA_FLAGS + KERNEL_FLAGS +
                        [f'--output_dir={dirs["kernels"]}',
                         f'--save_kernels={dirs["kernels"] / "k.npz"}']),
      'bad': _start('kernels.py', DATA_FLAGS + ['--widths=16,0', f'--output_dir={dirs["bad"]}']),
  }
  results = {}
  for name, p in procs.items():
    out, err = p.communicate(timeout=300)
    results[name] = (p.returncode, out + err, dirs[name])
  return results


def _ok(runs, name):
  rc, log, folder = runs[name]
  assert rc == 0, log[-3000:]
  return folder


def _dataset():
  return data.load('digits', n_train=N_TRAIN, n_test=N_TEST, seed=0)


def _gram(x):
  u = np.asarray(x, np.float64)
  u = u / np.linalg.norm(u, axis=1, keepdims=True)
  return u @ u.T


def _kappa(k):
  w = np.linalg.eigvalsh(k)
  return math.inf if w[0] <= 0 else w[-1] / w[0]


# ------------------------------------------------------------------------------------ spectral


def test_spectral_kappa_and_direct_attention_kappa(runs):
  out = store_lib.read_json(_ok(runs, 'spectral') / 'spectral.json')
  g = _gram(_dataset().x_train)
  kappa = _kappa(g)
  assert out['n'] == N_TRAIN and out['d'] == 64
  assert math.isfinite(kappa)
  np.testing.assert_allclose(out['kappa'], kappa, rtol=1e-8)
  np.testing.assert_allclose(out['log10_width_v1'], 6 * np.log10(kappa) - 2 * np.log10(0.3),
                             rtol=1e-10)
  # κ(G³) = κ³ is within float64's reach here, so the direct measurement must be flagged reliable
  # and agree with κ of numpy's G @ G @ G.
  assert 3 * np.log10(kappa) < 12
  assert out['kappa_attn_direct_reliable'] is True
  assert out['kappa_attn_direct_kind'].startswith('full')
  np.testing.assert_allclose(out['kappa_attn_direct'], _kappa(g @ g @ g), rtol=1e-4)
  np.testing.assert_allclose(out['kappa_attn_direct'], kappa ** 3, rtol=1e-4)
  assert out['paper_reference']['kappa_mnist'] == 1.2e3
  assert out['paper_reference']['kappa_cifar10'] == 8.7e3
  assert out['provenance']['flags']['n_train'] == N_TRAIN


def test_spectral_curve_drops_large_n_and_matches_nested_subsets(runs):
  folder = _ok(runs, 'spectral')
  out = store_lib.read_json(folder / 'spectral.json')
  assert [c['n'] for c in out['curve']] == [10, 20]          # 5000 > n_train was dropped
  x = _dataset().x_train
  perm = np.random.default_rng(0).permutation(N_TRAIN)
  for c in out['curve']:
    np.testing.assert_allclose(c['kappa'], _kappa(_gram(x[perm[:c['n']]])), rtol=1e-8)
  with open(folder / 'spectral_curve.csv') as f:
    lines = f.read().splitlines()
  assert len(lines) == 3 and lines[0].startswith('n,')
  assert 'dropping [5000]' in runs['spectral'][1]


def test_spectral_spectra_npz_and_figures(runs):
  folder = _ok(runs, 'spectral')
  spectra = np.load(folder / 'spectral_spectra.npz')
  lam = np.linalg.eigvalsh(_gram(_dataset().x_train))[::-1]
  np.testing.assert_allclose(spectra['G'], lam, atol=1e-10)
  rank = int(spectra['rank'])
  for p in (3, 5):                                           # depths 1, 2 -> G^3, G^5
    np.testing.assert_allclose(spectra[f'G^{p}'][:rank], lam[:rank] ** p, rtol=1e-8)
  np.testing.assert_allclose(spectra['G_5^3'], np.where(np.arange(N_TRAIN) < 5, lam, 0) ** 3,
                             rtol=1e-8, atol=1e-12)
  # The measured attention kernel is G³ (up to NT's 1/d³ scale): same spectrum shape.
  measured = spectra['G3_measured']
  np.testing.assert_allclose(measured / measured[0], lam ** 3 / lam[0] ** 3, atol=1e-10)
  for png in ('spectral_spectra.png', 'spectral_kappa_vs_n.png'):
    with open(folder / png, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


# ------------------------------------------------------------------------------------ kernels


def test_kernels_distance_shrinks_with_width(runs):
  folder = _ok(runs, 'kernels')
  summary = store_lib.read_json(folder / 'kernels.json')['summary']
  assert {(r['model'], r['width']) for r in summary} == {
      (m, w) for m in ('relu_mlp', 'mlp_attn') for w in (8, 2048)}
  for model in ('relu_mlp', 'mlp_attn'):
    d = {r['width']: r for r in summary if r['model'] == model}
    # Entries average m i.i.d. terms: the distance scales like 1/√m, 16x over 8 -> 2048.
    assert d[2048]['distance_full_mean'] < d[8]['distance_full_mean'] / 4
    assert d[2048]['distance_train_mean'] < d[8]['distance_train_mean'] / 4
    assert d[8]['distance_full_count'] == 2
  with open(folder / 'kernels_records.csv') as f:
    assert len(f.read().splitlines()) == 1 + 2 * 2 * 2       # header + models x widths x seeds
  with open(folder / 'kernels_distance.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_kernels_saved_blocks_match_closed_forms(runs):
  folder = _ok(runs, 'kernels')
  saved = np.load(folder / 'k.npz')
  x = _dataset().x_train
  g = _gram(x)
  # Analytic first-layer ReLU NTK of unit-norm inputs: ⟨x, x'⟩ (π − θ)/(2π).
  arccos = g * (np.pi - np.arccos(np.clip(g, -1, 1))) / (2 * np.pi)
  np.testing.assert_allclose(saved['analytic_relu_mlp'], arccos, atol=1e-8)
  # Empirical NTK of seed 0 at width 8, from its first-layer weights W (d, m):
  # Θ = ⟨x̂, x̂'⟩ · (1/m) Σ_r 1[x̂·W_r > 0] 1[x̂'·W_r > 0].
  model = models.build('relu_mlp', 8, 10)
  w = np.asarray(models.init_params(model, jax.random.PRNGKey(0), 64, jnp.float32)[1][0][0],
                 np.float64)
  u = np.asarray(x, np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
  s = (u @ w > 0).astype(np.float64)
  np.testing.assert_allclose(saved['empirical_relu_mlp_8'], g * (s @ s.T) / 8, atol=1e-5)
  # The recorded train-block distance of seed 0 is that of the saved blocks.
  records = store_lib.read_json(folder / 'kernels.json')['records']
  rec = next(r for r in records if (r['model'], r['width'], r['seed']) == ('relu_mlp', 8, 0))
  a, e = saved['analytic_relu_mlp'], saved['empirical_relu_mlp_8'].astype(np.float64)
  np.testing.assert_allclose(rec['distance_train'], np.linalg.norm(e - a) / np.linalg.norm(a),
                             rtol=1e-5)


def test_bad_flag_exits_nonzero_without_results(runs):
  rc, log, folder = runs['bad']
  assert rc != 0
  assert '--widths' in log
  assert not folder.exists()


# ------------------------------------------------------------------------------------ the parts



def _same_numbers(a, b):
  """The same numbers, up to the summation order of OpenBLAS's threads (one in a script,
  scripts/_common.py; more in this process)."""
  a, b = json_numbers(a), json_numbers(b)
  assert a and a.keys() == b.keys()
  for k in a:
    assert a[k] == pytest.approx(b[k], rel=1e-10, abs=1e-14, nan_ok=True), (k, a[k], b[k])


def test_spectral_part_writes_what_the_script_writes(runs, tmp_path):
  script = store_lib.read_json(_ok(runs, 'spectral') / 'spectral.json')
  part = parts.part('spectral').run(SPECTRAL, str(tmp_path))
  _same_numbers(store_lib.read_json(tmp_path / 'spectral.json'), script)
  _same_numbers(part, script)
  assert script['provenance']['config'] == configs.as_dict(SPECTRAL)


def test_kernels_part_writes_what_the_script_writes(runs, tmp_path):
  folder = _ok(runs, 'kernels')
  script = store_lib.read_json(folder / 'kernels.json')
  parts.part('kernels').run(KERNELS, str(tmp_path))
  _same_numbers(store_lib.read_json(tmp_path / 'kernels.json'), script)
  assert script['provenance']['config'] == configs.as_dict(
      dataclasses.replace(KERNELS, save_kernels=str(folder / 'k.npz')))


def test_spectral_singular_gram_uses_effective_kappa(tmp_path):
  # n = 100 > rank(digits subsample) = 56: κ(G) = inf, so the direct check is on κ_d, and
  # κ_d³ ~ 1e17 is beyond float64: the measurement must be flagged unreliable.
  parts.part('spectral').run(configs.Spectral(data=dataclasses.replace(DATA, n_train=100, n_test=10),
                                      n_grid=(50, 100)), str(tmp_path))
  out = store_lib.read_json(tmp_path / 'spectral.json')
  x = data.load('digits', n_train=100, n_test=10, seed=0).x_train
  lam = np.linalg.eigvalsh(_gram(x))[::-1]
  r = min(100, 64, int(np.sum(lam > 1e-10 * lam[0])))
  assert r < 100 and out['r'] == r and out['rank'] == r
  assert out['kappa'] == math.inf and out['log10_width_v1'] == math.inf
  np.testing.assert_allclose(out['kappa_eff'], lam[0] / lam[r - 1], rtol=1e-6)
  np.testing.assert_allclose(out['log10_width_v2'],
                             6 * np.log10(lam[0] / lam[r - 1]) + np.log10(100 * np.log(100)),
                             rtol=1e-6)
  assert out['kappa_attn_direct_kind'].startswith('effective')
  assert 3 * np.log10(lam[0] / lam[r - 1]) > 12
  assert out['kappa_attn_direct_reliable'] is False
  assert out['curve'][-1]['kappa'] == math.inf


# Bad values of the scripts' flags, as config fields: the part refuses them (naming the flag)
# before it loads data or writes anything. A flag that does not parse at all (--ranks=5,x) is
# tests/test_script_hygiene.py's.
@pytest.mark.parametrize('part,change,message', [
    ('spectral', dict(n_grid=(100, 200)), '--n_grid'),
    ('spectral', dict(rtol=0.0), '--rtol'),
    ('spectral', dict(eps=-1.0), '--eps'),
    ('spectral', dict(depths=(0,)), '--depths'),
    ('spectral', dict(ranks=()), '--ranks'),
    ('spectral', dict(ranks=(31,)), '--ranks'),
    ('spectral', dict(data=dataclasses.replace(DATA, dataset='nope')), 'dataset'),
    ('kernels', dict(widths=(16, -4)), '--widths'),
    ('kernels', dict(models=('relu_mlp', 'transformer')), '--models'),
    ('kernels', dict(seeds=0), '--seeds'),
    ('kernels', dict(method='exact'), '--method'),
    ('kernels', dict(save_kernels='k.txt'), '--save_kernels'),
    ('kernels', dict(out_dim=-1), '--out_dim'),
    ('kernels', dict(data=dataclasses.replace(DATA, classes=(3,))), 'classes'),
    ('kernels', dict(options=configs.ModelOptions(attn_depth=0)), '--attn_depth'),
])
def test_bad_configs_raise_before_any_output(tmp_path, part, change, message):
  config = dataclasses.replace({'spectral': SPECTRAL, 'kernels': KERNELS}[part], **change)
  out = tmp_path / 'out'
  module = parts.part(part)
  with pytest.raises(ValueError, match=message):
    module.check(config)
  with pytest.raises(ValueError, match=message):
    module.run(config, str(out))
  assert not out.exists()
