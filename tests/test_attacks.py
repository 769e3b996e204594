"""Attacks against closed forms (linear and separable quadratic losses) and invariants."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import attacks

EPS = 0.3


def _pixels(seed, n=6, d=5, lo=0.35, hi=0.65):
  return np.random.default_rng(seed).uniform(lo, hi, (n, d))


def _signs(seed, shape):
  return np.where(np.random.default_rng(seed).random(shape) < 0.5, -1., 1.)


def _quadratic(c):
  """loss(x) = -sum((x - c)^2): maximised at c, gradient sign = sign(c - x)."""
  return lambda x: -jnp.sum((x - c) ** 2)


def _net_loss(n, d, seed=0):
  """Squared loss of a tiny fixed tanh net with a mean-over-rows context term (transductive)."""
  r = np.random.default_rng(seed)
  w1, w2 = r.normal(size=(d, 8)), r.normal(size=(8,))
  y = r.normal(size=(n,))

  def loss(x):
    h = jnp.tanh(x @ w1)
    h = h + jnp.mean(h, axis=0)
    return jnp.sum((h @ w2 - y) ** 2)
  return loss


def _assert_feasible(x_adv, x, eps, mask):
  x_adv, x = np.asarray(x_adv), np.asarray(x)
  assert np.all(np.abs(x_adv - x) <= eps + 1e-12)
  assert np.all((x_adv >= 0) & (x_adv <= 1))
  np.testing.assert_array_equal(x_adv[~mask], x[~mask])


def _oscillation(x0, c, alpha, steps):
  """Closed form of sign steps of size alpha from x0 toward c (never at the ball's edge).

  After m = ceil(|c - x0| / alpha) steps the iterate passes c, then alternates between
  x0 + s*m*alpha and x0 + s*(m - 1)*alpha, s = sign(c - x0).
  """
  delta = np.abs(c - x0)
  s = np.sign(c - x0)
  m = np.ceil(delta / alpha)
  k = np.where(steps <= m, steps, np.where((steps - m) % 2 == 0, m, m - 1))
  return x0 + s * k * alpha


# ---------------------------------------------------------------- FGSM closed forms

def test_fgsm_linear_closed_form():
  x = _pixels(0)
  w = _signs(1, x.shape) * np.random.default_rng(2).uniform(0.5, 2., x.shape)
  out = attacks.fgsm(lambda z: jnp.sum(w * z), jnp.asarray(x), EPS)
  np.testing.assert_allclose(out, np.clip(x + EPS * np.sign(w), 0, 1), atol=1e-15)


def test_fgsm_mask_leaves_other_rows():
  x = _pixels(3)
  w = _signs(4, x.shape)
  mask = np.array([True, False, True, False, False, True])
  out = np.asarray(attacks.fgsm(lambda z: jnp.sum(w * z), jnp.asarray(x), EPS, jnp.asarray(mask)))
  np.testing.assert_array_equal(out[~mask], x[~mask])
  np.testing.assert_allclose(out[mask], x[mask] + EPS * w[mask], atol=1e-15)


def test_fgsm_clips_at_pixel_range():
  x = np.array([[0.1, 0.9, 0.5, 0.0, 1.0]])
  w = np.array([[-1., 1., 1., 1., -1.]])
  out = attacks.fgsm(lambda z: jnp.sum(w * z), jnp.asarray(x), EPS)
  np.testing.assert_allclose(out, [[0.0, 1.0, 0.8, 0.3, 0.7]], atol=1e-15)


# ---------------------------------------------------------------- iterative attacks

@pytest.mark.parametrize('name', ['pgd', 'mim'])
def test_iterative_feasible_and_increase_loss(name):
  n, d = 8, 5
  x = np.random.default_rng(5).uniform(0., 1., (n, d))
  x[0, :2] = [0., 1.]  # pixels on the boundary must stay in [0, 1]
  mask = np.zeros(n, bool)
  mask[[0, 2, 3, 6]] = True
  loss = _net_loss(n, d)
  cfg = attacks.AttackConfig(eps=0.1)
  x_adv = attacks.attack(name, loss, jnp.asarray(x), cfg, key=jax.random.PRNGKey(0),
                         mask=jnp.asarray(mask))
  _assert_feasible(x_adv, x, cfg.eps, mask)
  assert float(loss(x_adv)) > float(loss(jnp.asarray(x))) + 1e-3


def test_attack_jits_with_loss_closed_over():
  x = jnp.asarray(_pixels(6))
  loss = _net_loss(*x.shape)
  cfg = attacks.AttackConfig()
  key = jax.random.PRNGKey(1)
  for name in attacks.ATTACKS:
    eager = attacks.attack(name, loss, x, cfg, key=key)
    jitted = jax.jit(lambda z, k, name=name: attacks.attack(name, loss, z, cfg, key=k))(x, key)
    np.testing.assert_allclose(jitted, eager, atol=1e-12)


def test_pgd_beats_fgsm_when_fgsm_overshoots():
  # c inside the ball: FGSM jumps to the corner x + eps*sign(c - x); PGD settles within a
  # step of c, so per pixel (eps - |delta|)^2 >= 0.06^2 > alpha^2 = 0.0375^2.
  x = _pixels(7)
  delta = _signs(8, x.shape) * np.random.default_rng(9).uniform(0.2 * EPS, 0.8 * EPS, x.shape)
  loss = _quadratic(x + delta)
  x_fgsm = attacks.fgsm(loss, jnp.asarray(x), EPS)
  x_pgd = attacks.pgd(loss, jnp.asarray(x), EPS, jax.random.PRNGKey(2))
  np.testing.assert_allclose(loss(x_fgsm), -np.sum((EPS - np.abs(delta)) ** 2), rtol=1e-12)
  assert float(loss(x_pgd)) > float(loss(x_fgsm))


def test_pgd_random_start_uses_key():
  x = jnp.asarray(_pixels(10))
  loss = _quadratic(x + 0.1)
  # Zero steps of movement (step_size tiny) exposes the start: inside the ball, not x itself.
  a = attacks.pgd(loss, x, EPS, jax.random.PRNGKey(0), steps=1, step_size=1e-9)
  b = attacks.pgd(loss, x, EPS, jax.random.PRNGKey(1), steps=1, step_size=1e-9)
  assert np.max(np.abs(np.asarray(a - x))) > EPS / 2
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match='key'):
    attacks.pgd(loss, x, EPS, None)


# ---------------------------------------------------------------- step-size defaults

def test_pgd_default_step_size_is_2p5_eps_over_steps():
  x = _pixels(11)
  delta = _signs(12, x.shape) * 0.1  # 0.1 / alpha is not an integer for either alpha below
  loss = _quadratic(x + delta)
  steps = 20
  out = attacks.pgd(loss, jnp.asarray(x), EPS, None, steps=steps, random_start=False)
  np.testing.assert_allclose(out, _oscillation(x, x + delta, 2.5 * EPS / steps, steps), atol=1e-12)
  # The check can fail: another step size ends elsewhere.
  assert not np.allclose(out, _oscillation(x, x + delta, EPS / steps, steps), atol=1e-3)


def test_mim_default_step_size_is_eps_over_steps():
  # With momentum 0, sign(m) = sign(grad), so MIM follows the same sign-step closed form.
  x = _pixels(13)
  delta = _signs(14, x.shape) * 0.1
  loss = _quadratic(x + delta)
  steps = 10
  out = attacks.mim(loss, jnp.asarray(x), EPS, steps=steps, momentum=0.)
  np.testing.assert_allclose(out, _oscillation(x, x + delta, EPS / steps, steps), atol=1e-12)
  assert not np.allclose(out, _oscillation(x, x + delta, 2.5 * EPS / steps, steps), atol=1e-3)


def _mim_reference(x, c, w, eps, steps, momentum, per_row=True):
  """Plain numpy MIM on loss = -sum(w * (x - c)^2) (gradient -2 w (x - c))."""
  alpha = eps / steps
  xa, m = x.copy(), np.zeros_like(x)
  for _ in range(steps):
    g = -2 * w * (xa - c)
    norm = np.sum(np.abs(g), axis=1, keepdims=True) if per_row else np.sum(np.abs(g))
    m = momentum * m + g / norm
    xa = np.clip(xa + alpha * np.sign(m), np.maximum(x - eps, 0), np.minimum(x + eps, 1))
  return xa


def test_mim_momentum_matches_reference_per_row_l1():
  x = _pixels(15)
  c = x + _signs(16, x.shape) * np.random.default_rng(17).uniform(0.05, 0.25, x.shape)
  # Row scales spanning decades make per-row and global l1 normalisation differ.
  w = np.random.default_rng(18).uniform(0.5, 2., x.shape) * np.logspace(-3, 3, x.shape[0])[:, None]
  loss = lambda z: -jnp.sum(w * (z - c) ** 2)  # noqa: E731
  out = np.asarray(attacks.mim(loss, jnp.asarray(x), EPS, steps=10, momentum=1.))
  ref = _mim_reference(x, c, w, EPS, 10, 1.)
  np.testing.assert_allclose(out, ref, atol=1e-12)
  assert not np.allclose(out, _mim_reference(x, c, w, EPS, 10, 0.), atol=1e-3)
  assert not np.allclose(out, _mim_reference(x, c, w, EPS, 10, 1., per_row=False), atol=1e-3)


# ---------------------------------------------------------------- guards

def test_nan_gradient_raises_eagerly_and_propagates_under_jit():
  x = jnp.asarray(_pixels(19))
  loss = lambda z: jnp.sum(jnp.sqrt(z - 2.))  # noqa: E731  (NaN everywhere on [0, 1])
  cfg = attacks.AttackConfig()
  for name in attacks.ATTACKS:
    with pytest.raises(FloatingPointError, match=name):
      attacks.attack(name, loss, x, cfg, key=jax.random.PRNGKey(0))
    out = jax.jit(lambda z, name=name: attacks.attack(name, loss, z, cfg,
                                                      key=jax.random.PRNGKey(0)))(x)
    assert np.all(np.isnan(out))


def test_nan_gradient_on_unattacked_rows_is_ignored():
  x = jnp.asarray(_pixels(22))
  m = np.array([True, False, True, False, True, True])
  w = _signs(23, x.shape)
  # Static row indexing (not jnp.where, whose gradient would leak the NaN into attacked rows).
  loss = lambda z: jnp.sum(w[m] * z[m]) + jnp.sum(jnp.sqrt(z[~m] - 2.))  # noqa: E731
  for name in attacks.ATTACKS:
    out = np.asarray(attacks.attack(name, loss, x, attacks.AttackConfig(),
                                    key=jax.random.PRNGKey(0), mask=jnp.asarray(m)))
    _assert_feasible(out, x, EPS, m)
    # Linear on attacked rows: every attack ends at the corner x + eps*sign(w).
    np.testing.assert_allclose(out[m], (np.asarray(x) + EPS * w)[m], atol=1e-12)


@pytest.mark.parametrize('name, cfg, match', [
    ('cw', attacks.AttackConfig(), 'Unknown attack'),
    ('fgsm', attacks.AttackConfig(eps=-0.1), 'eps'),
    ('fgsm', attacks.AttackConfig(eps=1.5), 'eps'),
    ('fgsm', attacks.AttackConfig(eps=math.nan), 'eps'),
    ('pgd', attacks.AttackConfig(pgd_steps=0), 'pgd_steps'),
    ('pgd', attacks.AttackConfig(pgd_steps=2.5), 'pgd_steps'),
    ('pgd', attacks.AttackConfig(pgd_step_size=0.), 'pgd_step_size'),
    ('mim', attacks.AttackConfig(mim_steps=-1), 'mim_steps'),
    ('mim', attacks.AttackConfig(mim_step_size=-0.1), 'mim_step_size'),
    ('mim', attacks.AttackConfig(mim_momentum=-0.5), 'mim_momentum'),
])
def test_validate_errors(name, cfg, match):
  with pytest.raises(ValueError, match=match):
    attacks.validate(name, cfg)


def test_validate_accepts_defaults_and_bad_shapes_rejected():
  for name in attacks.ATTACKS:
    attacks.validate(name, attacks.AttackConfig())
  attacks.validate('fgsm', attacks.AttackConfig(eps=0.))
  loss = lambda z: jnp.sum(z)  # noqa: E731
  with pytest.raises(ValueError, match='shape'):
    attacks.fgsm(loss, jnp.ones(4) * 0.5, EPS)
  with pytest.raises(ValueError, match='mask'):
    attacks.fgsm(loss, jnp.full((4, 2), 0.5), EPS, mask=jnp.ones(3, bool))
  with pytest.raises(ValueError, match='boolean'):
    attacks.fgsm(loss, jnp.full((4, 2), 0.5), EPS, mask=jnp.ones(4))


def test_project_is_projection_onto_feasible_set():
  x = jnp.asarray(_pixels(20, lo=0., hi=1.))
  mask = jnp.asarray([True, True, False, True, False, True])
  z = x + jnp.asarray(np.random.default_rng(21).normal(scale=0.5, size=x.shape))
  p = np.asarray(attacks.project(z, x, EPS, mask))
  _assert_feasible(p, x, EPS, np.asarray(mask))
  # Feasible points are fixed; masked coordinates inside the box are untouched.
  np.testing.assert_array_equal(attacks.project(p, x, EPS, mask), p)
  inside = (np.abs(np.asarray(z - x)) <= EPS) & (np.asarray(z) >= 0) & (np.asarray(z) <= 1)
  inside &= np.asarray(mask)[:, None]
  np.testing.assert_array_equal(p[inside], np.asarray(z)[inside])
