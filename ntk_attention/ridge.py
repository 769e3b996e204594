"""Kernel ridge regression's one linear solve (docs/method.md §8), used by the infinite-width
predictor (`kernels.ntk_predictor`), the approximation error (`alignment.krr_predict`) and
exact leave-one-out influence (`influence.loo_influence`).

With a symmetric training kernel `K (n, n)` and right-hand sides `B (n, C)`:

    λ = ridge · mean(diag K)        A = K + λ I = L Lᵀ        ridge_solve(K, B, ridge) = A⁻¹ B

- The ridge is relative, `λ = ridge · mean(diag K)` (`ridge_scale`), so one value of `ridge`
  means the same regularisation for kernels of any scale.
- The Cholesky factorisation reads the **lower triangle** of `K` only. A kernel computed in
  floating point (NT's `kernel_fn`) can differ from its transpose in the last bits; a caller
  that cares which triangle is read says so: `influence` passes `(K + Kᵀ)/2` (which also
  keeps its gradient w.r.t. `K` symmetric), `kernels.ntk_predictor` passes `Θᵀ` (the upper
  triangle, which its solve has always read).
- `factor`, `solve`, `inverse_diagonal`, `ridge_solve` are jax.numpy in the dtype of `K`
  (float64 when jax x64 is enabled and `K` is float64): differentiable w.r.t. `K` and `B`, and usable under `jit` / `grad` / `vmap`.

`factor` returns the Cholesky factor once, for callers that need more than one solve (the
influence needs `A⁻¹Y`, `A⁻¹K_etᵀ` and `diag(A⁻¹)` from one factorisation).

**Lean, in place, on the host** (docs/method.md §13): at large n the functions above hold
`K`, `A = K + λI`, `L` and `L⁻¹` at once (4 n² doubles). `factor_in_place` instead
symmetrises a float64 numpy `K` and overwrites it with `L` (LAPACK `dpotrf`), `solve_host`
runs the two triangular solves (`dpotrs`), and `inverse_diagonal_in_place` overwrites `L`
with `L⁻¹` (LAPACK's blocked `dtrtri`) and reads `diag(A⁻¹)_j = Σ_{i≥j} (L⁻¹)_ij²` a block
of rows at a time: no n × n array beyond `K` itself. Not differentiable (numpy).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import scipy.linalg.lapack as lapack


class Factor(NamedTuple):
  """The Cholesky factorisation of `A = K + λ I` (module docstring).

  chol: (n, n) lower-triangular `L` with `A = L Lᵀ`.
  lam: () the ridge `λ = ridge · mean(diag K)` that was added.
  """
  chol: jax.Array
  lam: jax.Array


def ridge_scale(k_train, ridge=1e-3):
  """`λ = ridge · mean(diag K)`: the ridge added to `K (n, n)`, scaled to the kernel's size."""
  k_train = jnp.asarray(k_train)
  return ridge * jnp.mean(jnp.diagonal(k_train))


def factor(k_train, ridge=1e-3) -> Factor:
  """Cholesky factor of `A = K + ridge · mean(diag K) · I`, from the lower triangle of `K`.

  Args:
    k_train: (n, n) symmetric positive semi-definite kernel `K`; its strict upper triangle
      is not read.
    ridge: the relative ridge (`ridge_scale`); 0 factors `K` itself.

  Returns:
    `Factor(chol (n, n), lam ())`. A matrix that is numerically not positive definite gives
    NaN entries (jax's Cholesky does not raise): callers check their results.
  """
  k_train = jnp.asarray(k_train)
  n = k_train.shape[0]
  lam = ridge_scale(k_train, ridge)
  chol, _ = jsl.cho_factor(k_train + lam * jnp.eye(n, dtype=k_train.dtype), lower=True)
  return Factor(chol, lam)


def solve(f: Factor, rhs):
  """`A⁻¹ B` from the factor: `rhs (n, ...)` -> `(n, ...)` (two triangular solves)."""
  return jsl.cho_solve((f.chol, True), rhs)


def inverse_diagonal(f: Factor):
  """`diag(A⁻¹) (n,)`: the column sums of `L⁻¹ ∘ L⁻¹`, since `A⁻¹ = L⁻ᵀ L⁻¹`."""
  l_inv = tril_inverse(f.chol)
  return jnp.sum(l_inv * l_inv, axis=0)


def ridge_solve(k_train, rhs, ridge=1e-3):
  """`(K + ridge · mean(diag K) · I)⁻¹ B`: kernel ridge regression's coefficients.

  Args:
    k_train: (n, n) symmetric training kernel `K` (its lower triangle is read).
    rhs: (n,) or (n, C) right-hand sides `B` (targets, or targets minus an initial function).
    ridge: the relative ridge; `λ = ridge · mean(diag K)`.

  Returns:
    `α = A⁻¹ B`, the shape of `rhs`, in the dtype of `K`; predictions at evaluation points
    are `K_et α`. NaN when `A` is numerically not positive definite.
  """
  return solve(factor(k_train, ridge), rhs)


def tril_inverse(l, block=512):
  """`L⁻¹` of a lower-triangular `L (n, n)` by recursive 2×2 blocking (~n³/3 flops, mostly
  matmuls).

  `[[L11, 0], [L21, L22]]⁻¹ = [[L11⁻¹, 0], [−L22⁻¹ L21 L11⁻¹, L22⁻¹]]`. A triangular solve
  against the identity costs n³ flops and runs at triangular-solve speed; this is ~3× faster
  on CPU and stays differentiable (matmuls and small triangular solves only).
  """
  n = l.shape[0]
  if n <= block:
    return jsl.solve_triangular(l, jnp.eye(n, dtype=l.dtype), lower=True)
  h = n // 2
  i11 = tril_inverse(l[:h, :h], block)
  i22 = tril_inverse(l[h:, h:], block)
  i21 = -(i22 @ (l[h:, :h] @ i11))
  return jnp.block([[i11, jnp.zeros((h, n - h), l.dtype)], [i21, i22]])


# --- lean, in place, numpy float64 (module docstring) -----------------------------------------

class HostFactor(NamedTuple):
  """The Cholesky factorisation of `A = K + λ I` held in the memory of `K` (`factor_in_place`).

  chol: (n, n) Fortran-ordered view whose lower triangle is `L` (`A = L Lᵀ`); its strict upper
    triangle is left over from `K` and never read.
  lam: the ridge `λ` that was added.
  """
  chol: np.ndarray
  lam: float


def symmetrize_in_place(a: np.ndarray, tile: int = 2048) -> np.ndarray:
  """`a ← (a + aᵀ)/2` for a square numpy `a`, one `tile × tile` pair of blocks at a time
  (work memory 2·tile² doubles, not n²). Returns `a`."""
  n = a.shape[0]
  for i in range(0, n, tile):
    for j in range(0, i + 1, tile):
      upper = a[j:j + tile, i:i + tile]
      mean = 0.5 * (a[i:i + tile, j:j + tile] + upper.T)
      a[i:i + tile, j:j + tile] = mean
      upper[...] = mean.T
  return a


def factor_in_place(a: np.ndarray, ridge=1e-3) -> HostFactor:
  """Cholesky factor of `A = (K + Kᵀ)/2 + ridge · mean(diag K) · I`, written over `K`.

  Args:
    a: (n, n) C-contiguous float64 numpy `K`; it is overwritten (symmetrised, ridge added,
      then `L`) — the caller must not use it as `K` afterwards.
    ridge: the relative ridge (`ridge_scale`), > 0 or 0.

  Returns:
    `HostFactor(chol = aᵀ viewed Fortran-ordered with L in its lower triangle, lam)`.

  Raises:
    ValueError when `a` is not a C-contiguous float64 square numpy array (a copy would double
    the memory this exists to save) or when `A` is numerically not positive definite.
  """
  if (not isinstance(a, np.ndarray) or a.dtype != np.float64 or a.ndim != 2
      or a.shape[0] != a.shape[1] or not a.flags.c_contiguous):
    raise ValueError('factor_in_place needs a C-contiguous float64 square numpy array, got '
                     f'{type(a).__name__} {getattr(a, "dtype", "")} {getattr(a, "shape", "")}.')
  symmetrize_in_place(a)
  lam = float(ridge) * float(np.mean(np.diagonal(a)))
  a[np.diag_indices_from(a)] += lam
  # aᵀ is Fortran-contiguous and equal to A (symmetric): LAPACK factors it without a copy.
  chol, info = lapack.dpotrf(a.T, lower=1, clean=0, overwrite_a=1)
  if info != 0 or not np.shares_memory(chol, a):
    raise ValueError(f'K + λI (λ = {lam:.3g}) is numerically not positive definite (LAPACK '
                     f'dpotrf info={info}): check that the kernel is PSD or raise the ridge.')
  return HostFactor(chol, lam)


def solve_host(f: HostFactor, rhs) -> np.ndarray:
  """`A⁻¹ B` (numpy float64) for `rhs (n,)` or `(n, C)`, from a `HostFactor`."""
  rhs = np.asarray(rhs, np.float64)
  x, info = lapack.dpotrs(f.chol, rhs.reshape(rhs.shape[0], -1), lower=1)
  if info != 0:
    raise ValueError(f'LAPACK dpotrs failed (info={info}).')
  return x.reshape(rhs.shape)


def inverse_diagonal_in_place(f: HostFactor, block: int = 1024) -> np.ndarray:
  """`diag(A⁻¹) (n,)` = the column sums of `L⁻¹ ∘ L⁻¹`; overwrites `L` with `L⁻¹` (LAPACK's
  blocked `dtrtri`), so it comes last: the factor is gone afterwards. Column j of `L⁻¹` is row
  j of the C-ordered array under `f.chol`, read `block` rows at a time."""
  inv, info = lapack.dtrtri(f.chol, lower=1, overwrite_c=1)
  if info != 0 or not np.shares_memory(inv, f.chol):
    raise ValueError(f'LAPACK dtrtri failed (info={info}): L is singular.')
  rows = inv.T                                  # C-ordered: rows[j, i] = (L⁻¹)_ij
  n = rows.shape[0]
  out = np.empty(n)
  for s in range(0, n, block):
    e = min(s + block, n)
    # Columns from s on: triu keeps rows[j, i] with i ≥ j, the lower triangle of L⁻¹.
    out[s:e] = np.sum(np.square(np.triu(rows[s:e, s:], k=0)), axis=1)
  return out


def ridge_solve_host(k_train, rhs, ridge=1e-3, overwrite: bool = False) -> np.ndarray:
  """`ridge_solve` on the host in float64 from `(K + Kᵀ)/2`: copies `K` (n² doubles) unless
  `overwrite` is True and `K` is a C-contiguous float64 numpy array, which is then destroyed."""
  a = k_train if overwrite and _writable_f64(k_train) else np.array(k_train, np.float64, order='C')
  return solve_host(factor_in_place(a, ridge), rhs)


def _writable_f64(a) -> bool:
  return (isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.c_contiguous
          and a.flags.writeable)


__all__ = ['Factor', 'ridge_scale', 'factor', 'solve', 'inverse_diagonal', 'ridge_solve',
           'tril_inverse', 'HostFactor', 'symmetrize_in_place', 'factor_in_place', 'solve_host',
           'inverse_diagonal_in_place', 'ridge_solve_host']
