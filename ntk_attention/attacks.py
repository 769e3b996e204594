"""ℓ∞ attacks on [0, 1] pixels: FGSM, PGD and MIM (docs/method.md §9).

Every attack maximises a scalar ``loss_fn(x)`` of the whole pixel matrix ``x`` of shape
``(N, d)`` (the model is transductive: attacked points are also attention context), while
only the rows selected by ``mask`` (shape ``(N,)``, bool; ``None`` = all rows) move. The
feasible set is

    C(x) = {x' : |x'_ij - x_ij| <= eps and 0 <= x'_ij <= 1 for masked rows i; x'_i = x_i otherwise}.

The functions are plain JAX with ``lax.fori_loop`` loops, so they trace once; the caller jits
them with ``loss_fn`` closed over (``eps``, ``steps`` and ``step_size`` may be Python numbers or
traced scalars: a traced step count makes the loop a ``while_loop``, which is not
reverse-differentiable and need not be). A NaN in the gradient of an attacked row propagates
into the returned array (``sign``, ``clip`` and the ℓ1 normalisation all keep NaN); ``attack``
raises on it when called eagerly, and callers under ``jit`` can test ``jnp.isfinite`` on the
result.
"""
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

ATTACKS = ('fgsm', 'pgd', 'mim')

LossFn = Callable[[jax.Array], jax.Array]


class AttackConfig(NamedTuple):
  """Attack hyper-parameters; defaults are docs/method.md §9 [choice]."""
  eps: float = 0.3
  pgd_steps: int = 20
  pgd_step_size: Optional[float] = None  # None -> 2.5 * eps / pgd_steps
  pgd_random_start: bool = True
  mim_steps: int = 10
  mim_step_size: Optional[float] = None  # None -> eps / mim_steps
  mim_momentum: float = 1.0


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _positive_or_none(name: str, v) -> None:
  if v is not None and not v > 0:
    raise ValueError(f'{name} must be > 0 or None, got {v!r}.')


def validate(name: str, config: AttackConfig) -> None:
  """Raises ValueError unless ``name`` is in ATTACKS and ``config`` is meaningful.

  Checks: 0 <= eps <= 1 (pixels live in [0, 1], so eps > 1 adds nothing), step counts are
  positive ints, explicit step sizes are > 0, momentum >= 0.
  """
  if name not in ATTACKS:
    raise ValueError(f'Unknown attack {name!r}; expected one of {ATTACKS}.')
  # A traced eps (one compiled attack for every budget) is checked by the caller.
  if isinstance(config.eps, (int, float)) and not 0 <= config.eps <= 1:  # also rejects NaN
    raise ValueError(f'eps must lie in [0, 1] for [0, 1] pixels, got {config.eps!r}.')
  for field in ('pgd_steps', 'mim_steps'):
    v = getattr(config, field)
    if isinstance(v, jax.core.Tracer):   # traced (one compiled attack for every count)
      continue
    if not _is_int(v) or v <= 0:
      raise ValueError(f'{field} must be a positive int, got {v!r}.')
  _positive_or_none('pgd_step_size', config.pgd_step_size)
  _positive_or_none('mim_step_size', config.mim_step_size)
  if not config.mim_momentum >= 0:
    raise ValueError(f'mim_momentum must be >= 0, got {config.mim_momentum!r}.')


def _check_inputs(x: jax.Array, mask: Optional[jax.Array]) -> None:
  """Shape/dtype checks only (static, so valid under jit)."""
  if jnp.ndim(x) != 2:
    raise ValueError(f'x must have shape (N, d), got {jnp.shape(x)}.')
  if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
    raise ValueError(f'x must be floating point pixels in [0, 1], got {jnp.result_type(x)}.')
  if mask is not None:
    if jnp.shape(mask) != (jnp.shape(x)[0],):
      raise ValueError(f'mask must have shape ({jnp.shape(x)[0]},), got {jnp.shape(mask)}.')
    if jnp.result_type(mask) != jnp.bool_:
      raise ValueError(f'mask must be boolean, got {jnp.result_type(mask)}.')


def project(x_adv: jax.Array, x: jax.Array, eps, mask: Optional[jax.Array] = None) -> jax.Array:
  """Euclidean projection onto C(x): ``clip(x_adv, max(x - eps, 0), min(x + eps, 1))`` on
  masked rows; rows outside ``mask`` are reset to the clean ``x``. Shapes ``(N, d)``."""
  lo = jnp.maximum(x - eps, 0.)
  hi = jnp.minimum(x + eps, 1.)
  out = jnp.clip(x_adv, lo, hi)
  if mask is not None:
    out = jnp.where(mask[:, None], out, x)
  return out.astype(jnp.result_type(x))


def _grad(loss_fn: LossFn, x_adv: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """∇ loss_fn at x_adv, zeroed on rows outside ``mask`` (those never move)."""
  g = jax.grad(loss_fn)(x_adv)
  if mask is not None:
    g = jnp.where(mask[:, None], g, 0.)
  return g


def fgsm(loss_fn: LossFn, x: jax.Array, eps, mask: Optional[jax.Array] = None) -> jax.Array:
  """Fast gradient sign method: ``proj(x + eps * sign(∇loss(x)))``, shape ``(N, d)``."""
  _check_inputs(x, mask)
  return project(x + eps * jnp.sign(_grad(loss_fn, x, mask)), x, eps, mask)


def pgd(loss_fn: LossFn, x: jax.Array, eps, key: Optional[jax.Array], steps: int = 20,
        step_size=None, random_start: bool = True,
        mask: Optional[jax.Array] = None) -> jax.Array:
  """Projected gradient ascent with sign steps (Madry et al. 2018).

  x_0 = proj(x + U(-eps, eps)) if ``random_start`` else x (``key`` is then unused);
  x_{k+1} = proj(x_k + step_size * sign(∇loss(x_k))), k < steps;
  step_size defaults to 2.5 * eps / steps. Returns x_steps, shape ``(N, d)``.
  """
  _check_inputs(x, mask)
  if step_size is None:
    step_size = 2.5 * eps / steps
  x0 = x
  if random_start:
    if key is None:
      raise ValueError('pgd with random_start=True needs a PRNG key.')
    delta = jax.random.uniform(key, jnp.shape(x), jnp.result_type(x), -eps, eps)
    x0 = project(x + delta, x, eps, mask)

  def body(_, x_adv):
    g = _grad(loss_fn, x_adv, mask)
    return project(x_adv + step_size * jnp.sign(g), x, eps, mask)

  return jax.lax.fori_loop(0, steps, body, x0)


def mim(loss_fn: LossFn, x: jax.Array, eps, steps: int = 10, step_size=None,
        momentum=1.0, mask: Optional[jax.Array] = None) -> jax.Array:
  """Momentum iterative method (Dong et al. 2018), from x_0 = x, m_0 = 0:

  g_k = ∇loss(x_k);  m_{k+1} = momentum * m_k + g_k / ||g_k[i]||_1 (per row i);
  x_{k+1} = proj(x_k + step_size * sign(m_{k+1})).

  The ℓ1 norm is taken per row, i.e. per attacked example as in Dong et al.'s per-image
  normalisation (a row with zero gradient contributes 0). step_size defaults to eps / steps.
  Returns x_steps, shape ``(N, d)``.
  """
  _check_inputs(x, mask)
  if step_size is None:
    step_size = eps / steps

  def body(_, carry):
    x_adv, m = carry
    g = _grad(loss_fn, x_adv, mask)
    norm = jnp.sum(jnp.abs(g), axis=1, keepdims=True)
    # `norm == 0` (not `norm > 0`) so that a NaN norm propagates instead of becoming 0.
    g = jnp.where(norm == 0, 0., g / jnp.where(norm == 0, 1., norm))
    m = momentum * m + g
    return project(x_adv + step_size * jnp.sign(m), x, eps, mask), m

  x_adv, _ = jax.lax.fori_loop(0, steps, body, (x, jnp.zeros_like(x)))
  return x_adv


def attack(name: str, loss_fn: LossFn, x: jax.Array, config: AttackConfig,
           key: Optional[jax.Array] = None, mask: Optional[jax.Array] = None) -> jax.Array:
  """Runs attack ``name`` (one of ATTACKS) with ``config``; returns x_adv of shape ``(N, d)``.

  ``name`` and ``config`` must be Python values (close over them when jitting). Called
  eagerly, raises FloatingPointError if x_adv is not finite (NaN/inf gradient); under jit the
  non-finite array is returned and the caller must check it.
  """
  validate(name, config)
  _check_inputs(x, mask)
  if name == 'fgsm':
    x_adv = fgsm(loss_fn, x, config.eps, mask=mask)
  elif name == 'pgd':
    x_adv = pgd(loss_fn, x, config.eps, key, steps=config.pgd_steps,
                step_size=config.pgd_step_size, random_start=config.pgd_random_start, mask=mask)
  else:
    x_adv = mim(loss_fn, x, config.eps, steps=config.mim_steps,
                step_size=config.mim_step_size, momentum=config.mim_momentum, mask=mask)
  if not isinstance(x_adv, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x_adv))):
    raise FloatingPointError(
        f'{name} attack produced non-finite pixels: the loss gradient is NaN or inf on an '
        'attacked row.')
  return x_adv
