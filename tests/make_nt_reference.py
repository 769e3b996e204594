"""Reference values of the study's kernels, empirical NTKs and predictions (tests/nt_reference.npz).

Computed once on the pinned stack (JAX 0.5.3, neural-tangents 0.6.5 importing tensorflow,
commit 567ca0a) and committed; `tests/test_nt_compat.py` recomputes every array with
`compute` on whatever JAX is installed and requires agreement to 1e-8 (relative to each
array's largest entry). Regenerate only on purpose:

    python tests/make_nt_reference.py [OUT.npz]

Everything that could move under other changes is pinned in the file: the inputs (12 train
+ 6 test digits, float64), the parameters at which empirical NTKs are evaluated (drawn once,
rounded to float32 so they are exact in either precision), and every option of the models
(linear attention of depth 1, QKV with the IDENTITY mechanism, W_std = 1, init_std = 1 (the
parameterisation of 567ca0a, before `--init_std` existed)): no default initialisation
scale or softmax temperature enters.
"""
import collections
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update('jax_enable_x64', True)

from ntk_attention import _nt  # noqa: E402
from ntk_attention import kernels  # noqa: E402
from ntk_attention import models  # noqa: E402

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'nt_reference.npz')
WIDTH, OUT_DIM = 64, 10
N_TRAIN, N_TEST = 12, 6
RIDGE = 1e-3                      # the study's ridge (diag_reg, × mean diagonal)
E2E_RIDGE = 1e-1                  # ridge of the end-to-end predictions (see `compute`)
TIMES = (1.0, 100.0)              # finite training times of the ensemble predictions
# name -> (model name, options): every option given, none left to a default.
MODELS = {
    'relu_mlp': ('relu_mlp', {}),
    'mlp_attn': ('mlp_attn', dict(depth=1, shared=True, normalize='linear')),
    'mlp_attn_qkv': ('mlp_attn_qkv', dict(n_heads=1, mechanism='IDENTITY')),
}


def build(name):
  model_name, options = MODELS[name]
  return models.build(model_name, WIDTH, OUT_DIM, W_std=1.0, init_std=1.0, **options)


def methods(model):
  generic = ['jacobian_contraction', 'ntk_vector_products']
  return generic if model.prefix_trainable else ['closed_form'] + generic


def treedef(model, d):
  """Structure of the model's parameters (shapes only; no values are used)."""
  return jax.tree_util.tree_structure(model.init_fn(jax.random.PRNGKey(0), (1, 1, d))[1])


def params_from(ref, name, model, d):
  """The stored parameters of `name` as a float64 pytree."""
  leaves = [jnp.asarray(ref[f'{name}/params/{i}'], jnp.float64)
            for i in range(int(ref[f'{name}/n_params']))]
  return jax.tree_util.tree_unflatten(treedef(model, d), leaves)


def block_kernel_fn(full):
  """A `kernel_fn(x1, x2, get)` for NT's predict, from kernels over the whole sequence.

  A sequence model's kernel between two points depends on the whole dataset, so the
  "inputs" NT passes around are positions in `[train; test]` and the kernel is read off
  the full `(N, N)` matrices.
  """
  pair = collections.namedtuple('Kernel', ('nngp', 'ntk'))

  def kernel_fn(i1, i2=None, get=None, **kwargs):
    del kwargs
    i1 = np.asarray(i1)
    i2 = i1 if i2 is None else np.asarray(i2)
    blocks = {g: full[g][np.ix_(i1, i2)] for g in ('nngp', 'ntk')}
    if isinstance(get, str):
      return blocks[get]
    return pair(**blocks)

  return kernel_fn


def predictions(full, n, y_train, ridge):
  """Predictions on the test points from kernels `full` over `[train; test]`, float64.

  NT's `gradient_descent_mse_ensemble` (mean and covariance of the infinite ensemble) at
  t = ∞ (Cholesky solve) and at finite times (eigendecomposition), from both kernels; and
  the package's own predictor (NT's `gradient_descent_mse` on the NTK blocks), as kernel
  ridge regression and as gradient flow for a finite time.
  """
  out = {}
  t = full['ntk'].shape[0] - n
  predict_fn = _nt.predict.gradient_descent_mse_ensemble(
      block_kernel_fn(full), np.arange(n), y_train, diag_reg=ridge)
  for label, time in (('inf', None), ('t', jnp.asarray(TIMES))):
    gaussians = predict_fn(time, np.arange(n, n + t), ('nngp', 'ntk'), compute_cov=True)
    for g in ('nngp', 'ntk'):
      out[f'ensemble_{label}/{g}/mean'] = getattr(gaussians, g).mean
      out[f'ensemble_{label}/{g}/cov'] = getattr(gaussians, g).covariance
  blocks = kernels.split_blocks(full['ntk'], n)
  out['krr'] = kernels.ntk_predictor(blocks, y_train, ridge=ridge)
  out['gd'] = kernels.ntk_predictor(blocks, y_train, ridge=0.0, t=100.0, learning_rate=1.0)
  return out


def compute(name, x_train, x_test, y_train, params, reference_kernels=None):
  """Every reference array of one model, as a dict of float64 numpy arrays.

  Predictions come twice: 'e2e/...' from the kernels computed here, with a ridge that keeps
  the solve well conditioned (mlp_attn's kernel is nearly singular, and its analytic NTK
  moves by a few 1e-9 between JAX versions: arccos(ρ) near ρ = 1 on the diagonal turns an
  ulp into √ulp), and 'study/...' with the study's ridge from `reference_kernels` (the
  stored analytic kernels; default: those computed here), which isolates NT's predict.
  """
  model = build(name)
  out = {}
  full = {g: kernels.analytic_kernel(model, x_train, x_test, g) for g in ('nngp', 'ntk')}
  for g, k in full.items():
    out[f'analytic/{g}'] = k
  for method in methods(model):
    out[f'empirical/{method}'] = kernels.empirical_ntk(model, params, x_train, x_test, method)
  n = len(x_train)
  for k, v in predictions(full, n, y_train, E2E_RIDGE).items():
    out[f'e2e/{k}'] = v
  reference_kernels = full if reference_kernels is None else reference_kernels
  for k, v in predictions(reference_kernels, n, y_train, RIDGE).items():
    out[f'study/{k}'] = v
  return {f'{name}/{k}': np.asarray(v, np.float64) for k, v in out.items()}


def stored_kernels(ref, name):
  """The stored analytic kernels of `name`."""
  return {g: jnp.asarray(ref[f'{name}/analytic/{g}']) for g in ('nngp', 'ntk')}


def make(path=PATH):
  from ntk_attention import data  # pylint: disable=g-import-not-at-top
  ds = data.load('digits', n_train=N_TRAIN, n_test=N_TEST, seed=0)
  x_train = np.asarray(ds.x_train, np.float64)
  x_test = np.asarray(ds.x_test, np.float64)
  y_train = np.eye(OUT_DIM)[ds.y_train]
  ref = dict(x_train=x_train, x_test=x_test, y_train=y_train,
             versions=np.array([f'jax {jax.__version__}', f'neural-tangents {_nt.nt_version()}']))
  for i, name in enumerate(MODELS):
    model = build(name)
    params = models.init_params(model, jax.random.PRNGKey(100 + i), ds.d, jnp.float32)
    leaves = [np.asarray(leaf, np.float32) for leaf in jax.tree_util.tree_leaves(params)]
    ref[f'{name}/n_params'] = np.array(len(leaves))
    for j, leaf in enumerate(leaves):
      ref[f'{name}/params/{j}'] = leaf
    ref.update(compute(name, x_train, x_test, y_train, params_from(ref, name, model, ds.d)))
  np.savez_compressed(path, **ref)
  print(f'wrote {path} ({os.path.getsize(path) / 1024:.0f} KB, {len(ref)} arrays) with '
        f'{ref["versions"]}')


if __name__ == '__main__':
  make(*sys.argv[1:])
