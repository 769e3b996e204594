"""Approximation power of the data-dependent kernel (docs/method.md §1 claim 5), in float64.

The "power" side of the study's duality: the same kernel `G³` whose conditioning keeps
MLP-Attn out of the kernel regime can fit targets that follow the data geometry better than
data-independent kernels. Measured two ways, both on kernel blocks over `[train; test]`:

- `centered_alignment`: centred kernel–target alignment (Cortes, Mohri, Rostamizadeh 2012),
  a cosine between the centred kernel and the centred target outer product;
- `krr_test_error`: test error of kernel ridge regression, ridge `λ·mean(diag K)`, solved by
  `ridge.ridge_solve` (the solve of `kernels.ntk_predictor` and `influence`).

`kernel_suite` builds the four kernels compared (linear / cosine Gram, normalised `G³`, the
ReLU NTK, the MLP-Attn NTK) and `synthetic_targets` the two synthetic tasks: targets in the
span of `G`'s top eigenvectors ('aligned') and random targets ('random').
"""
import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import kernels as kernels_lib
from ntk_attention import models as models_lib
from ntk_attention import ridge as ridge_lib
from ntk_attention import spectral

KERNELS = ('linear', 'gram_cubed', 'relu_ntk', 'mlp_attn_ntk')
_NTK_MODELS = {'relu_ntk': 'relu_mlp', 'mlp_attn_ntk': 'mlp_attn'}
SYNTHETIC_KINDS = ('aligned', 'random')


# ---------------------------------------------------------------------------------------------- checks

def _matrix(k, name, square=False):
  k = np.asarray(k, dtype=np.float64)
  if k.ndim != 2:
    raise ValueError(f'{name} must be a 2-d array, got shape {k.shape}.')
  if square and k.shape[0] != k.shape[1]:
    raise ValueError(f'{name} must be square, got shape {k.shape}.')
  if not np.all(np.isfinite(k)):
    raise ValueError(f'{name} contains NaN or inf.')
  return k


def _targets(y, n, name):
  """y (n,) or (n, C) -> float64 (n, C)."""
  y = np.asarray(y, dtype=np.float64)
  if y.ndim == 1:
    y = y[:, None]
  if y.ndim != 2 or y.shape[0] != n:
    raise ValueError(f'{name} must have shape ({n},) or ({n}, C), got {np.shape(y)}.')
  if not np.all(np.isfinite(y)):
    raise ValueError(f'{name} contains NaN or inf.')
  return y


# ---------------------------------------------------------------------------------------------- metrics

def center(k):
  """`Kc = H K H`, `H = I − 11ᵀ/n`: subtract row and column means, add back the grand mean. (n, n)."""
  k = _matrix(k, 'k', square=True)
  return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()


def centered_alignment(k, y) -> float:
  """Centred kernel–target alignment `A(K, YYᵀ) ∈ [−1, 1]` (Cortes et al. 2012).

  `A = ⟨Kc, Yc Ycᵀ⟩_F / (‖Kc‖_F ‖Yc Ycᵀ‖_F)` with `Kc = H K H`, `Yc = H Y`,
  `H = I − 11ᵀ/n`. Computed as `tr(Ycᵀ Kc Yc) / (‖Kc‖_F ‖Ycᵀ Yc‖_F)` (`‖Yc Ycᵀ‖_F =
  ‖Ycᵀ Yc‖_F`), O(n²C). Invariant to scaling K and to adding a constant to K or Y.

  Shapes: `k (n, n)`, `y (n,)` or `(n, C)`. A kernel or target that is constant after
  centring has no alignment: ValueError.
  """
  kc = center(k)
  y = _targets(y, kc.shape[0], 'y')
  yc = y - y.mean(0, keepdims=True)
  k_norm = np.linalg.norm(kc)
  y_norm = np.linalg.norm(yc.T @ yc)
  if k_norm == 0.0 or y_norm == 0.0:
    raise ValueError('centred alignment is undefined: the centred '
                     + ('kernel' if k_norm == 0.0 else 'target') + ' is zero.')
  return float(np.sum(yc * (kc @ yc)) / (k_norm * y_norm))


def krr_predict(k_train, k_test_train, y_train, ridge: float = 1e-3):
  """Kernel ridge regression `f = K_tn α`, `α = (K + λ·mean(diag K) I)⁻¹ Y`, float64.

  `α` by Cholesky from the lower triangle of `K` (`ridge.ridge_solve`; needs jax x64).
  Shapes: `k_train (n, n)`, `k_test_train (t, n)`, `y_train (n,)` or `(n, C)` -> `(t, C)`.
  """
  k = _matrix(k_train, 'k_train', square=True)
  n = k.shape[0]
  kt = _matrix(k_test_train, 'k_test_train')
  if kt.shape[1] != n:
    raise ValueError(f'k_test_train must have {n} columns, got shape {kt.shape}.')
  y = _targets(y_train, n, 'y_train')
  if not ridge >= 0:
    raise ValueError(f'ridge must be >= 0, got {ridge}.')
  if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
    raise ValueError('krr_predict solves in float64: enable it first '
                     "(jax.config.update('jax_enable_x64', True)).")
  alpha = np.asarray(ridge_lib.ridge_solve(jnp.asarray(k), jnp.asarray(y), ridge))
  if not np.all(np.isfinite(alpha)):
    raise ValueError(f'K + λ·mean(diag K)·I is not positive definite (ridge {ridge}); '
                     'raise the ridge.')
  pred = kt @ alpha
  if not np.all(np.isfinite(pred)):
    raise FloatingPointError('kernel ridge regression gave non-finite predictions.')
  return pred


def accuracy(pred, y) -> float:
  """Classification accuracy of predictions `(t, C)` against targets `(t, C)` (or `(t,)`).

  C > 1: `argmax pred == argmax y` (one-hot targets). C = 1: `sign pred == sign y` (±1
  targets, +1 for label 0, as in `data.targets`; a prediction of exactly 0 counts as −1).
  """
  y = _targets(y, np.shape(pred)[0], 'y')
  pred = _targets(pred, y.shape[0], 'pred')
  if pred.shape != y.shape:
    raise ValueError(f'pred {pred.shape} and y {y.shape} differ.')
  if y.shape[1] == 1:
    return float(np.mean((pred[:, 0] > 0) == (y[:, 0] > 0)))
  return float(np.mean(np.argmax(pred, 1) == np.argmax(y, 1)))


def krr_test_error(k_train, k_test_train, y_train, y_test, ridge: float = 1e-3) -> dict:
  """Test error of kernel ridge regression (`krr_predict`).

  Returns `mse = mean_{t,c} (f_tc − y_tc)²`, `relative_mse = Σ (f − y)² / Σ y²` (1.0 =
  predicting zero) and `accuracy` (see `accuracy`). Shapes as `krr_predict`, `y_test (t,)`
  or `(t, C)` with the same C as `y_train`.
  """
  pred = krr_predict(k_train, k_test_train, y_train, ridge)
  y = _targets(y_test, pred.shape[0], 'y_test')
  if y.shape != pred.shape:
    raise ValueError(f'y_test has {y.shape[1]} outputs, y_train {pred.shape[1]}.')
  err = np.sum((pred - y) ** 2)
  y_sq = np.sum(y ** 2)
  return {'mse': float(err / y.size),
          'relative_mse': float(err / y_sq) if y_sq > 0 else float('nan'),
          'accuracy': accuracy(pred, y)}


# ---------------------------------------------------------------------------------------------- kernels

def _require_float64(k, name):
  k = np.asarray(k)
  if k.dtype != np.float64:
    raise ValueError(f'{name} came out as {k.dtype}: enable float64 first '
                     "(jax.config.update('jax_enable_x64', True)).")
  return k


def kernel_suite(x_train, x_test, names=KERNELS) -> dict:
  """The compared kernels on `[x_train; x_test]`, each as `(K_train (n, n), K_test_train (t, n))`.

  - `linear`: `G_ij = x̂_i·x̂_j`, cosine similarities of unit-norm rows (also test × train);
  - `gram_cubed`: the NNGP of `models.attention_prefix()` (Normalize → linearized attention →
    Normalize): on the training block the normalised `G³`, `K_ij = (G³)_ij/√((G³)_ii (G³)_jj)`;
    a test point attends only to training points, so its row is the normalised
    `G_te,tr G_tr,tr G_tr,tr`;
  - `relu_ntk`: analytic first-layer NTK of `relu_mlp`, `⟨x̂, x̂'⟩ (π − θ)/(2π)`;
  - `mlp_attn_ntk`: analytic first-layer NTK of `mlp_attn` (the same NTK on the attention features).

  Float64: needs jax x64 enabled (ValueError otherwise). Shapes: `x_train (n, d)`, `x_test (t, d)`.
  """
  x_train = _matrix(x_train, 'x_train')
  x_test = _matrix(x_test, 'x_test')
  if x_test.shape[1] != x_train.shape[1]:
    raise ValueError(f'x_test has {x_test.shape[1]} features, x_train {x_train.shape[1]}.')
  unknown = [k for k in names if k not in KERNELS]
  if unknown:
    raise ValueError(f'unknown kernels {unknown}; choose from {KERNELS}.')
  n = x_train.shape[0]
  out = {}
  for name in names:
    if name == 'linear':
      u = spectral.unit_rows(np.concatenate([x_train, x_test]))
      k = u @ u[:n].T                                     # (N, n)
      out[name] = (0.5 * (k[:n] + k[:n].T), k[n:])
      continue
    if name == 'gram_cubed':
      fn, get = models_lib.build('mlp_attn', 1, 1).prefix[2], 'nngp'
    else:
      fn, get = models_lib.build(_NTK_MODELS[name], 1, 1).kernel_fn, 'ntk'
    k = _require_float64(kernels_lib.analytic_kernel(fn, x_train, x_test, get=get), name)
    out[name] = (np.asarray(k[:n, :n]), np.asarray(k[n:, :n]))
  return out


# ---------------------------------------------------------------------------------------------- targets

def top_eigenvectors(x, k_top: int):
  """The top-`k_top` eigenvectors `(N, k_top)` of `G = X̂ X̂ᵀ` (also those of `G³`, eigenvalues cubed)."""
  g = spectral.gram(x)
  rank = spectral.numerical_rank(spectral.eigenvalues(g))
  if not 1 <= k_top <= rank:
    raise ValueError(f'k_top must be in [1, rank(G) = {rank}], got {k_top}.')
  _, v = np.linalg.eigh(g)
  return v[:, ::-1][:, :k_top]


def synthetic_targets(x, kind: str, k_top: int = 5, seed: int = 0, noise: float = 0.0):
  """Synthetic regression targets `y (N,)` on ALL points `x (N, d)` = `[x_train; x_test]`.

  - `aligned`: `y = V_k c`, `V_k` the top-`k_top` eigenvectors of `G = X̂ X̂ᵀ` over all N
    points (those of the attention kernel `G³` with every point as context: same
    eigenvectors, eigenvalues cubed), `c ~ N(0, I_k)`;
  - `random`: `y ~ N(0, I_N)`.
  Both are scaled to `‖y‖ = √N` (mean square 1); `noise > 0` then adds `N(0, noise²)` per point.

  The task is one function on train and test points together (so test error measures how well
  a kernel fitted on the training rows extends it); split `y` as `y[:n_train], y[n_train:]`.
  The aligned task uses the test points' geometry, as transductive attention does. Seeded by
  `np.random.default_rng(seed)`.
  """
  if kind not in SYNTHETIC_KINDS:
    raise ValueError(f'kind must be one of {SYNTHETIC_KINDS}, got {kind!r}.')
  if not noise >= 0:
    raise ValueError(f'noise must be >= 0, got {noise}.')
  x = _matrix(x, 'x')
  rng = np.random.default_rng(seed)
  if kind == 'aligned':
    y = top_eigenvectors(x, k_top) @ rng.standard_normal(k_top)
  else:
    y = rng.standard_normal(x.shape[0])
  y = y * np.sqrt(y.size) / np.linalg.norm(y)
  if noise > 0:
    y = y + noise * rng.standard_normal(y.size)
  return y


__all__ = ['KERNELS', 'SYNTHETIC_KINDS', 'center', 'centered_alignment', 'krr_predict', 'accuracy',
           'krr_test_error', 'kernel_suite', 'top_eigenvectors', 'synthetic_targets']
