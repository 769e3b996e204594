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
- Everything is jax.numpy in the dtype of `K` (float64 when jax x64 is enabled and `K` is
  float64): differentiable w.r.t. `K` and `B`, and usable under `jit` / `grad` / `vmap`.

`factor` returns the Cholesky factor once, for callers that need more than one solve (the
influence needs `A⁻¹Y`, `A⁻¹K_etᵀ` and `diag(A⁻¹)` from one factorisation).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl


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


__all__ = ['Factor', 'ridge_scale', 'factor', 'solve', 'inverse_diagonal', 'ridge_solve',
           'tril_inverse']
