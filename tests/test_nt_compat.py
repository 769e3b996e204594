"""neural-tangents on the installed JAX: same numbers as the pinned stack, no tensorflow.

- Kernels, empirical NTKs and predictions of the study's models equal the float64 values of
  tests/nt_reference.npz, computed once on JAX 0.5.3 with neural-tangents 0.6.5 as released
  (see tests/make_nt_reference.py), to 1e-8 (absolute, on quantities of order one); the
  end-to-end predictions from kernels computed here to κ(K + λI) times their kernel's error.
- tensorflow is not imported by `import ntk_attention`, nor by a kernel, an empirical NTK
  and a prediction, nor by a (tiny) malleability run on digits: each in a fresh interpreter.
- `ntk_attention` imports with `-W error::DeprecationWarning`.
- The fixes of `ntk_attention/_nt.py` leave JAX's namespace as they found it.
"""
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import make_nt_reference as reference
from ntk_attention import _nt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-8


@pytest.fixture(scope='module')
def ref():
  with np.load(reference.PATH) as f:
    return dict(f)


@pytest.mark.parametrize('name', list(reference.MODELS))
def test_matches_pinned_stack(ref, name):
  model = reference.build(name)
  d = ref['x_train'].shape[1]
  params = reference.params_from(ref, name, model, d)
  got = reference.compute(name, ref['x_train'], ref['x_test'], ref['y_train'], params,
                          reference.stored_kernels(ref, name))
  expected = {k: v for k, v in ref.items()
              if k.startswith(f'{name}/') and '/params' not in k and not k.endswith('n_params')}
  assert sorted(got) == sorted(expected)
  errors = {k: float(np.max(np.abs(got[k] - v))) / max(1.0, float(np.max(np.abs(v))))
            for k, v in expected.items()}
  tol = {k: _e2e_tolerance(ref, name, k, errors) for k in errors}
  assert all(errors[k] <= tol[k] for k in errors), {
      k: (e, tol[k]) for k, e in errors.items() if e > tol[k]}


def _e2e_tolerance(ref, name, key, errors):
  """TOL, or for an end-to-end prediction ('e2e/...': kernels computed here, then solved) the
  perturbation bound of its solve: a relative kernel error δ (measured on 'analytic/<g>',
  itself within TOL) moves the solution of (K + λI) x = y by at most κ(K + λI)·δ. (QKV's
  analytic NTK moves by ~8e-9 between JAX/numpy builds; κ ≈ 1e2 at E2E_RIDGE.)"""
  if '/e2e/' not in key:
    return TOL
  g = 'nngp' if '/nngp/' in key else 'ntk'
  k = ref[f'{name}/analytic/{g}']
  n = ref['x_train'].shape[0]
  k_train = k[:n, :n] + reference.E2E_RIDGE * np.mean(np.diag(k[:n, :n])) * np.eye(n)
  return max(TOL, float(np.linalg.cond(k_train)) * errors[f'{name}/analytic/{g}'])


def _python(code, *flags, timeout=600):
  """Runs `code` in a fresh interpreter from the repository root; its stdout."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
  proc = subprocess.run([sys.executable, *flags, '-c', textwrap.dedent(code)], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stdout


# tensorflow or tf2jax in sys.modules, by top-level name.
_TF_LOADED = ("sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'tf2jax'})")


def test_no_tensorflow_for_kernels_empirical_ntks_and_predictions():
  out = _python(f"""
      import sys
      import jax
      jax.config.update('jax_enable_x64', True)
      import ntk_attention as na
      print('import', {_TF_LOADED})
      from ntk_attention import _nt
      x = na.data.load('digits', n_train=10, n_test=5).x_train.astype('float64')
      model = na.models.build('mlp_attn', 32, 2, normalize='linear')
      k = na.analytic_kernel(model, x[:6], x[6:])
      params = na.models.init_params(model, jax.random.PRNGKey(0), x.shape[1])
      for method in ('closed_form', 'jacobian_contraction', 'ntk_vector_products'):
        na.empirical_ntk(model, params, x[:6], x[6:], method)
      blocks = na.kernels.split_blocks(k, 6)
      na.kernels.ntk_predictor(blocks, jax.numpy.ones((6, 2)))
      na.kernels.ntk_predictor(blocks, jax.numpy.ones((6, 2)), t=10.0)
      print('after', {_TF_LOADED})
  """)
  assert 'import []' in out and 'after []' in out, out


def test_no_tensorflow_in_a_malleability_run(tmp_path):
  args = ['--dataset=digits', '--n_train=40', '--n_test=20', '--models=relu_mlp,mlp_attn',
          '--width=16', '--seeds=1', '--epochs=2', '--attacks=fgsm,pgd,mim',
          '--epsilons=0.1', '--pgd_steps=2', '--mim_steps=2', f'--output_dir={tmp_path}']
  # The script as a program; -X importtime logs every module imported, whenever it is.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
  proc = subprocess.run([sys.executable, '-X', 'importtime',
                         os.path.join(ROOT, 'scripts', 'malleability.py'), *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert (tmp_path / 'malleability.json').exists()
  imported = {line.rsplit('|', 1)[-1].strip().split('.')[0]
              for line in proc.stderr.splitlines() if line.startswith('import time:')}
  assert {'ntk_attention', 'matplotlib'} <= imported     # the figures' lazy imports are seen
  assert not imported & {'tensorflow', 'tf2jax'}, sorted(imported & {'tensorflow', 'tf2jax'})


def test_imports_with_deprecation_warnings_as_errors():
  out = _python("""
      import ntk_attention, jax
      print('ok', jax.__version__)
  """, '-W', 'error::DeprecationWarning')
  assert out.startswith('ok'), out


def test_jax_namespace_left_as_found():
  import jax.core  # pylint: disable=g-import-not-at-top
  import jax.interpreters.ad  # pylint: disable=g-import-not-at-top
  # Names lent to neural-tangents during its import were taken back.
  for name in _nt._CORE_NAMES:  # pylint: disable=protected-access
    assert name not in vars(jax.core)
  assert 'zeros_like_p' not in vars(jax.interpreters.ad) or (
      jax.__version_info__ < (0, 7, 1))
  if jax.__version_info__ >= (0, 8):
    assert 'jax.util' not in sys.modules


def test_experimental_is_loaded_on_demand():
  import neural_tangents as nt  # pylint: disable=g-import-not-at-top
  with pytest.raises(AttributeError):
    nt.experimental.no_such_name  # pylint: disable=pointless-statement
  out = _python(f"""
      import sys
      import ntk_attention
      import neural_tangents as nt
      try:
        f = nt.experimental.empirical_ntk_fn_tf
      except AttributeError as e:
        print('missing', 'tensorflow' in str(e))
      else:
        print('loaded', callable(f), {_TF_LOADED})
  """)
  assert out.strip() in ("loaded True ['tensorflow', 'tf2jax']", 'missing True'), out


def test_ntk_vector_products_shape_helpers():
  """NT's basis / unravel helpers (patched where JAX deprecates jnp.size on shapes) agree
  with a direct computation, on arrays and on `ShapeDtypeStruct`s."""
  from neural_tangents._src import empirical  # pylint: disable=g-import-not-at-top
  tree = {'a': jax.ShapeDtypeStruct((2, 3), np.float32), 'b': jax.ShapeDtypeStruct((4,),
                                                                                   np.float32)}
  basis = empirical._std_basis(tree)  # pylint: disable=protected-access
  assert basis['a'].shape == (10, 2, 3) and basis['b'].shape == (10, 4)
  flat = np.concatenate([np.asarray(basis['a']).reshape(10, -1), np.asarray(basis['b'])], 1)
  np.testing.assert_array_equal(flat, np.eye(10))
  arr = np.arange(30.).reshape(3, 10)
  parts = empirical._unravel_array_into_pytree(tree, 1, arr)  # pylint: disable=protected-access
  np.testing.assert_array_equal(parts['a'], arr[:, :6].reshape(3, 2, 3))
  np.testing.assert_array_equal(parts['b'], arr[:, 6:])
