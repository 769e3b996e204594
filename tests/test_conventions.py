"""The study's conventions as choices: init_std, ε units, softmax temperature, and the
diagnostics that go with them (docs/method.md §3, §4, §9, §6).

Each test compares with an independent computation: numpy statistics of the drawn weights,
the kernel of NT's own Dense layer, Monte Carlo over initialisations, the budget arithmetic
of the ℓ∞ ball, and closed forms of small spectra.
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import _nt
from ntk_attention import data
from ntk_attention import kernels
from ntk_attention import layers
from ntk_attention import malleability
from ntk_attention import models
from ntk_attention import spectral
from ntk_attention import training
from ntk_attention.study import cache


@pytest.fixture(scope='module')
def digits():
  return data.load('digits', n_train=40, n_test=10, seed=0)


# ---------------------------------------------------------------------------- init_std


@pytest.mark.parametrize('init_std', [0.01, 0.3, 1.0])
def test_init_std_sets_first_layer_std(init_std):
  model = models.build('relu_mlp', 2048, 10, init_std=init_std)
  params = models.init_params(model, jax.random.PRNGKey(3), 64)
  w = np.asarray(params[1][0][0])                       # (d, m) first-layer weights
  assert w.shape == (64, 2048)
  assert abs(w.std() / init_std - 1) < 0.05             # 131k draws: sampling error ~0.2 %
  a = np.asarray(params[1][-1])                         # the frozen ±1 readout is untouched
  assert set(np.unique(a)) == {-1.0, 1.0}


def test_analytic_ntk_does_not_depend_on_init_std(digits):
  x = jnp.asarray(digits.x_train, jnp.float64)
  for name in ('relu_mlp', 'mlp_attn'):
    k = [kernels.analytic_kernel(models.build(name, 1, 10, init_std=s), x) for s in (0.01, 1.0)]
    # atol: arccos near ρ = 1 on the diagonal rounds differently on JAX >= 0.6 (test_layers).
    np.testing.assert_allclose(k[0], k[1], rtol=1e-12, atol=1e-8)
    # The NNGP does: it scales with init_std² (ReLU is 1-homogeneous).
    g = [kernels.analytic_kernel(models.build(name, 1, 10, init_std=s), x, get='nngp')
         for s in (0.01, 1.0)]
    np.testing.assert_allclose(g[0], 1e-4 * g[1], rtol=1e-10)


def test_scaled_dense_kernel_equals_nt_dense_at_unit_scale_and_scales_otherwise(digits):
  x = jnp.asarray(digits.x_train[:12], jnp.float64)
  ours = _nt.stax.serial(_nt.stax.Dense(7), _nt.stax.Relu(), layers.ScaledDense(5, 1.0, 1.3))
  nt = _nt.stax.serial(_nt.stax.Dense(7), _nt.stax.Relu(),
                       _nt.stax.Dense(5, W_std=1.3, b_std=None, parameterization='ntk'))
  k1, k2 = ours[2](x, None, ('nngp', 'ntk')), nt[2](x, None, ('nngp', 'ntk'))
  np.testing.assert_allclose(k1.nngp, k2.nngp, rtol=1e-12)
  np.testing.assert_allclose(k1.ntk, k2.ntk, rtol=1e-12)
  # Scale s: nngp' = W²s²Σ, ntk' = W²(s²Θ + Σ), with Σ, Θ the kernels before the layer.
  s = 0.2
  before = _nt.stax.serial(_nt.stax.Dense(7), _nt.stax.Relu())[2](x, None, ('nngp', 'ntk'))
  scaled = _nt.stax.serial(_nt.stax.Dense(7), _nt.stax.Relu(), layers.ScaledDense(5, s, 1.3))
  k3 = scaled[2](x, None, ('nngp', 'ntk'))
  np.testing.assert_allclose(k3.nngp, 1.3 ** 2 * s ** 2 * before.nngp, rtol=1e-12)
  np.testing.assert_allclose(k3.ntk, 1.3 ** 2 * (s ** 2 * before.ntk + before.nngp), rtol=1e-12)


def test_empirical_ntk_and_nngp_match_analytic_at_small_init(digits):
  """Monte Carlo over initialisations at init_std = 0.01, width 512: the mean of 64
  empirical NTKs is within 0.02 (relative Frobenius) of the analytic NTK, and the output
  covariance over 1024 draws within 0.15 of the analytic NNGP, which is 1e-4 of its value at
  init_std = 1 (its diagonal mean within 10 %)."""
  x = jnp.asarray(digits.x_train[:10], jnp.float32)
  model = models.build('relu_mlp', 512, 1, init_std=0.01)
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  mean, _ = kernels.monte_carlo_ntk(model, keys, x)
  theta = kernels.analytic_kernel(model, jnp.asarray(x, jnp.float64))
  assert float(kernels.relative_distance(mean.astype(jnp.float64), theta)) < 0.02

  def outputs(key):
    params = models.init_params(model, key, x.shape[1])
    return training.outputs(model, params, x)[0][:, 0]

  draws = jax.random.split(jax.random.PRNGKey(1), 1024)
  f = jax.vmap(outputs)(draws).astype(jnp.float64)         # (draws, n), f ~ N(0, NNGP)
  cov = f.T @ f / f.shape[0]
  nngp = kernels.analytic_kernel(model, jnp.asarray(x, jnp.float64), get='nngp')
  # Entry-wise sampling error of a covariance from D Gaussian draws: ~√(2/D) ≈ 0.044.
  assert float(kernels.relative_distance(cov, nngp)) < 0.15
  assert float(jnp.mean(jnp.diag(cov)) / jnp.mean(jnp.diag(nngp))) == pytest.approx(1, abs=0.1)


# --------------------------------------------------------------------------- ε units


def test_eps_in_std_units_scales_the_budget_and_stays_in_the_box(digits):
  x = jnp.asarray(digits.x_train, jnp.float32)
  y = jnp.asarray(data.targets(digits.y_train, 10))
  y_eval = jnp.asarray(data.targets(digits.y_test, 10))
  setup = malleability.with_pixel_std(malleability.Setup(eps_units='std'), x)
  std = float(np.std(np.asarray(digits.x_train, np.float64)))
  assert setup.pixel_std == pytest.approx(std, rel=1e-12)
  assert malleability.eps_pixels(setup, 0.3) == pytest.approx(0.3 * std, rel=1e-12)
  assert malleability.eps_pixels(malleability.Setup(), 0.3) == 0.3
  model = models.build('relu_mlp', 64, 10)
  params = models.init_params(model, jax.random.PRNGKey(0), x.shape[1])
  before = malleability.influence(model, params, x, y, digits.x_test, y_eval, setup)
  for attack in ('fgsm', 'pgd', 'mim'):
    subset, x_adv = malleability.attack_one(model, params, x, y, digits.x_test, y_eval, before,
                                            attack, 0.3, setup, jax.random.PRNGKey(1), 'xent')
    delta = np.abs(np.asarray(x_adv) - np.asarray(x))
    assert delta.max() <= 0.3 * std + 1e-6                  # inside the scaled ball
    assert delta.max() > 0.3 * std * 0.9                    # and the budget is used
    assert np.asarray(x_adv).min() >= 0 and np.asarray(x_adv).max() <= 1
    rows = np.setdiff1d(np.arange(len(x)), subset)
    assert delta[rows].max() == 0                           # only S moves
    # the caller's top-τ subset (as `protocol` passes it) gives the same attack
    given, again = malleability.attack_one(model, params, x, y, digits.x_test, y_eval, before,
                                           attack, 0.3, setup, jax.random.PRNGKey(1), 'xent',
                                           subset)
    assert given is subset
    np.testing.assert_array_equal(np.asarray(again), np.asarray(x_adv))


def test_eps_units_is_validated():
  with pytest.raises(ValueError, match='eps_units'):
    malleability.validate(['pgd'], [0.3], malleability.Setup(eps_units='sigma'), 100)


# ----------------------------------------------------------------- softmax temperature


def test_softmax_default_temperature_keeps_the_kernel_informative():
  """Normalised kernel of the softmax prefix on 50 digits: at the default T = 1/√d the
  off-diagonal entries average below 0.95 and reach below 0.85; at T = 1 every one is
  above 0.99 (the collapse the default avoids)."""
  ds = data.load('digits', n_train=50, n_test=10, seed=0)
  seq, c = layers.as_sequence(jnp.asarray(ds.x_train, jnp.float64))
  off = ~np.eye(50, dtype=bool)

  def kernel(temperature):
    prefix = models.attention_prefix(normalize='softmax', temperature=temperature)
    return np.asarray(prefix[2](seq, None, 'nngp', context=(c, c))[0, 0])[off]

  default = kernel(None)
  assert default.mean() < 0.95 and default.min() < 0.85
  np.testing.assert_allclose(default, kernel(1 / np.sqrt(64)), rtol=1e-12)
  assert kernel(1.0).min() > 0.99
  assert layers.softmax_temperature(None, 784) == pytest.approx(1 / 28)


def test_softmax_default_temperature_in_apply_fn_matches_numpy():
  x = np.random.default_rng(0).normal(size=(6, 9))
  seq, c = layers.as_sequence(jnp.asarray(x))
  out = layers.LinearizedAttention(normalize='softmax')[1]((), seq, context=c)[0]
  logits = x @ x.T / np.sqrt(9)                             # x_i·x_j/√d
  a = np.exp(logits - logits.max(1, keepdims=True))
  a /= a.sum(1, keepdims=True)
  np.testing.assert_allclose(out, a @ x, rtol=1e-10)


# ------------------------------------------------------------------------- diagnostics


def test_accuracy_floor_and_warning():
  assert training.accuracy_floor(10) == pytest.approx(0.2)
  assert training.accuracy_floor(2) == pytest.approx(0.75)
  with pytest.warns(UserWarning, match='barely trained'):
    assert training.warn_if_undertrained(0.15, 10, 'm')
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert not training.warn_if_undertrained(0.25, 10, 'm')


def test_labels_from_targets_inverts_targets():
  y = np.array([0, 3, 9, 3])
  np.testing.assert_array_equal(training.labels_from_targets(data.targets(y, 10)), y)
  b = np.array([0, 1, 1, 0])
  np.testing.assert_array_equal(training.labels_from_targets(data.targets(b, 2)), b)


def test_feature_concentration_closed_forms():
  collinear = np.outer(np.arange(1, 6), np.array([1.0, 2.0, -1.0]))
  top, eff = spectral.feature_concentration(collinear)
  assert top == pytest.approx(1.0) and eff == pytest.approx(1.0)
  top, eff = spectral.feature_concentration(np.eye(4))
  assert top == pytest.approx(0.25) and eff == pytest.approx(4.0)
  z = np.diag([2.0, 1.0])                                   # λ = 4, 1
  top, eff = spectral.feature_concentration(z)
  assert top == pytest.approx(0.8) and eff == pytest.approx(25 / 17)


def test_cached_train_trains_each_setting_once(digits):
  calls = []
  real = training.train

  def counting(*a, **k):
    calls.append(1)
    return real(*a, **k)

  training.train, trainer = counting, cache.cached_train()
  try:
    y = data.targets(digits.y_train, 10)
    cfg = training.TrainConfig(epochs=2)
    keys = training.seed_keys([0, 1])
    r1 = trainer(models.build('relu_mlp', 16, 10), keys, digits.x_train, y, cfg)
    r2 = trainer(models.build('relu_mlp', 16, 10), keys, digits.x_train, y, cfg)
    assert len(calls) == 1 and trainer.stats == {'trained': 2, 'loaded': 0, 'hits': 2}
    for a, b in zip(jax.tree_util.tree_leaves(r1), jax.tree_util.tree_leaves(r2)):
      np.testing.assert_array_equal(a, b)
    trainer(models.build('relu_mlp', 16, 10, init_std=1.0), keys, digits.x_train, y, cfg)
    trainer(models.build('relu_mlp', 16, 10), keys, digits.x_train, y, cfg._replace(epochs=3))
    assert len(calls) == 3
  finally:
    training.train = real


def test_protocol_reports_accuracies_and_krr_of_own_ntk(digits):
  """`krr_test_accuracy` is kernel ridge regression with the model's analytic NTK, checked
  against a numpy solve of the same system."""
  x = jnp.asarray(digits.x_train, jnp.float32)
  y = jnp.asarray(data.targets(digits.y_train, 10))
  y_eval = jnp.asarray(data.targets(digits.y_test, 10))
  model = models.build('mlp_attn', 32, 10)
  params = models.init_params(model, jax.random.PRNGKey(0), x.shape[1])
  theta = kernels.analytic_kernel(model, jnp.asarray(x, jnp.float64),
                                  jnp.asarray(digits.x_test, jnp.float64))
  records, _ = malleability.protocol(model, params,
                                     malleability.Points(x, y, digits.x_test, y_eval),
                                     ['fgsm'], [0.1], malleability.Setup(),
                                     jax.random.PRNGKey(0), 'xent', theta_inf=theta)
  k = np.asarray(theta)
  n = len(x)
  a = k[:n, :n] + 1e-3 * np.mean(np.diag(k[:n, :n])) * np.eye(n)
  pred = k[n:, :n] @ np.linalg.solve(a, np.asarray(y, np.float64))
  expected = np.mean(pred.argmax(1) == digits.y_test)
  rec = records[0]
  assert rec['krr_test_accuracy'] == pytest.approx(expected)
  assert 0 <= rec['train_accuracy'] <= 1 and rec['eps_units'] == 'pixel'
  assert 0 < rec['feature_top_share'] <= 1 and rec['feature_effective_rank'] >= 1
