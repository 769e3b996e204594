"""Layers against closed forms, NT's oracle layers and their own apply_fn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import _nt
from ntk_attention import layers

stax = _nt.stax


def _data(n=9, d=6, seed=0):
  return np.random.default_rng(seed).random((n, d))


def _gram(x):
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  return u @ u.T


def _normalise(k):
  dg = np.sqrt(np.diag(k))
  return k / np.outer(dg, dg)


def test_linearized_attention_kernel_is_normalised_g_cubed():
  x = _data()
  g = _gram(x)
  seq, _ = layers.as_sequence(x)
  _, _, kernel_fn = stax.serial(layers.Normalize(), layers.LinearizedAttention(),
                                layers.Normalize())
  k = kernel_fn(seq, None, 'nngp')
  assert k.shape == (1, 1, 9, 9)
  np.testing.assert_allclose(k[0, 0], _normalise(g @ g @ g), atol=1e-10, rtol=0)


def test_unit_norm_attention_is_g_cubed_over_d_cubed():
  x = _data()
  d = x.shape[1]
  u = x / np.linalg.norm(x, axis=1, keepdims=True)
  seq, _ = layers.as_sequence(u)
  _, _, kernel_fn = layers.LinearizedAttention()
  g = u @ u.T
  np.testing.assert_allclose(kernel_fn(seq, None, 'nngp')[0, 0], g @ g @ g / d ** 3,
                             rtol=1e-10)


@pytest.mark.parametrize('mechanism', ['IDENTITY', 'SOFTMAX'])
def test_attention_against_nt_global_self_attention(mechanism):
  x = _data()
  seq, _ = layers.as_sequence(x)
  oracle = stax.GlobalSelfAttention(4, 4, 4, 1, linear_scaling=True,
                                    attention_mechanism=mechanism)
  _, _, k_oracle = stax.serial(layers.Normalize(), oracle)
  ko = k_oracle(seq, None, ('nngp', 'ntk'))
  if mechanism == 'IDENTITY':
    # Parameter-free attention: same NNGP; NT's NTK adds its value/output weights' 2·NNGP.
    _, _, k_ours = stax.serial(layers.Normalize(), layers.LinearizedAttention())
    ours = k_ours(seq, None, ('nngp', 'ntk'))
    np.testing.assert_allclose(ours.nngp, ko.nngp, rtol=1e-12)
    np.testing.assert_allclose(ours.ntk + 2 * ours.nngp, ko.ntk, rtol=1e-12)
  _, _, k_qkv = stax.serial(layers.Normalize(), layers.QKVAttention(4, mechanism=mechanism))
  qkv = k_qkv(seq, None, ('nngp', 'ntk'))
  np.testing.assert_allclose(qkv.nngp, ko.nngp, rtol=1e-12)
  np.testing.assert_allclose(qkv.ntk, ko.ntk, rtol=1e-12)


def test_apply_fn_matches_kernel_for_parameter_free_layers():
  # Parameter-free layers on deterministic inputs: the empirical covariance of the
  # output channels IS the kernel.
  x = _data()
  xe = _data(3, seed=1)
  seq, c = layers.as_sequence(x, xe)
  for layer in [layers.LinearizedAttention(),
                layers.LinearizedAttention(depth=2, shared=False),
                layers.LinearizedAttention(depth=3, shared=True),
                layers.LinearizedAttention(rank=3),
                layers.LinearizedAttention(normalize='softmax', temperature=0.3)]:
    init_fn, apply_fn, kernel_fn = stax.serial(layers.Normalize(), layer, layers.Normalize())
    _, params = init_fn(jax.random.PRNGKey(0), seq.shape)
    out = apply_fn(params, seq, context=c)[0]
    k = kernel_fn(seq, None, 'nngp', context=(c, c))[0, 0]
    np.testing.assert_allclose(out @ out.T / out.shape[1], k, atol=1e-10)


def test_context_mask_train_block_ignores_eval_points():
  x = _data()
  xe = _data(4, seed=3)
  seq_train, c_train = layers.as_sequence(x)
  seq_all, c_all = layers.as_sequence(x, xe)
  for layer in [layers.LinearizedAttention(), layers.LinearizedAttention(rank=4),
                layers.LinearizedAttention(normalize='softmax')]:
    init_fn, apply_fn, kernel_fn = stax.serial(layers.Normalize(), layer, layers.Normalize(),
                                               stax.Dense(7), stax.Relu(), stax.Dense(2))
    k_train = kernel_fn(seq_train, None, 'ntk', context=(c_train, c_train))[0, 0]
    k_all = kernel_fn(seq_all, None, 'ntk', context=(c_all, c_all))[0, 0]
    # atol: the ReLU NTK's arccos(ρ) turns a one-ulp change of ρ = 1 on the diagonal into
    # ~1e-8 (√ulp); the two sequence lengths can round ρ differently (seen from JAX 0.9).
    np.testing.assert_allclose(k_all[:9, :9], k_train, rtol=1e-10, atol=1e-8)
    _, params = init_fn(jax.random.PRNGKey(0), seq_all.shape)
    np.testing.assert_allclose(apply_fn(params, seq_all, context=c_all)[0, :9],
                               apply_fn(params, seq_train, context=c_train)[0], rtol=1e-10)
    # Without the mask, the evaluation points do leak into the training block.
    k_leak = kernel_fn(seq_all, None, 'ntk')[0, 0]
    assert np.abs(k_leak[:9, :9] - k_train).max() > 1e-6


def test_cross_kernel_x1_x2_matches_joint_sequence():
  x = _data()
  xe = _data(4, seed=3)
  seq_train, c_train = layers.as_sequence(x)
  seq_all, c_all = layers.as_sequence(x, xe)
  _, _, kernel_fn = stax.serial(layers.Normalize(), layers.LinearizedAttention(),
                                layers.Normalize())
  k12 = kernel_fn(seq_all, seq_train, 'nngp', context=(c_all, c_train))[0, 0]
  k_all = kernel_fn(seq_all, None, 'nngp', context=(c_all, c_all))[0, 0]
  np.testing.assert_allclose(k12, k_all[:, :9], rtol=1e-10)


@pytest.mark.parametrize('depth', [1, 2, 3])
def test_depth_kernels_against_numpy_powers(depth):
  x = _data(7, 5)
  g = _gram(x)
  seq, _ = layers.as_sequence(x)
  shared = stax.serial(layers.Normalize(), layers.LinearizedAttention(depth=depth),
                       layers.Normalize())[2]
  recomputed = stax.serial(layers.Normalize(),
                           layers.LinearizedAttention(depth=depth, shared=False),
                           layers.Normalize())[2]
  np.testing.assert_allclose(shared(seq, None, 'nngp')[0, 0],
                             _normalise(np.linalg.matrix_power(g, 2 * depth + 1)), atol=1e-10)
  np.testing.assert_allclose(recomputed(seq, None, 'nngp')[0, 0],
                             _normalise(np.linalg.matrix_power(g, 3 ** depth)), atol=1e-10)


def test_rank_truncation_spectrum():
  x = _data(10, 8)
  g = _gram(x)
  lam = np.sort(np.linalg.eigvalsh(g))[::-1]
  seq, _ = layers.as_sequence(x)
  _, _, kernel_fn = stax.serial(layers.Normalize(), layers.LinearizedAttention(rank=3))
  k = np.asarray(kernel_fn(seq, None, 'nngp')[0, 0])
  spec = np.sort(np.linalg.eigvalsh(k))[::-1]
  np.testing.assert_allclose(spec[:3], lam[:3] ** 3, rtol=1e-9)
  np.testing.assert_allclose(spec[3:], 0, atol=1e-9 * lam[0] ** 3)


def test_softmax_attention_is_nadaraya_watson():
  x = _data(8, 5)
  xe = _data(3, 5, seed=2)
  seq, c = layers.as_sequence(x, xe)
  temperature = 0.2
  init_fn, apply_fn, kernel_fn = stax.serial(
      layers.Normalize(), layers.LinearizedAttention(normalize='softmax',
                                                     temperature=temperature))
  _, params = init_fn(jax.random.PRNGKey(0), seq.shape)
  xs = np.concatenate([x, xe])
  u = xs / np.linalg.norm(xs, axis=1, keepdims=True)
  z = u * np.sqrt(5)                       # RMS-1 tokens
  logits = (z @ z.T / 5) / temperature
  logits[:, 8:] = -np.inf                  # only training points are keys
  w = np.exp(logits - logits.max(axis=1, keepdims=True))
  w /= w.sum(axis=1, keepdims=True)
  out = w @ z                              # Nadaraya-Watson average of the context
  np.testing.assert_allclose(apply_fn(params, seq, context=c)[0], out, rtol=1e-10)
  np.testing.assert_allclose(kernel_fn(seq, None, 'nngp', context=(c, c))[0, 0],
                             out @ out.T / 5, rtol=1e-10)


def test_normalize_kernel_and_apply():
  x = _data(6, 4) * np.arange(1, 7)[:, None]
  seq, _ = layers.as_sequence(x)
  init_fn, apply_fn, kernel_fn = layers.Normalize()
  out = apply_fn((), seq)[0]
  np.testing.assert_allclose(np.mean(out ** 2, axis=1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(kernel_fn(seq, None, 'nngp')[0, 0], _gram(x), rtol=1e-12)


def test_frozen_readout_has_no_gradient_and_is_pm_one():
  init_fn, apply_fn, _ = layers.FrozenReadout(3)
  _, a = init_fn(jax.random.PRNGKey(0), (1, 5, 16))
  assert set(np.unique(np.asarray(a))) == {-1.0, 1.0}
  h = jnp.ones((1, 5, 16))
  grad = jax.grad(lambda p: jnp.sum(apply_fn(p, h) ** 2))(a)
  assert np.all(np.asarray(grad) == 0)
  np.testing.assert_allclose(apply_fn(a, h)[0, 0], np.asarray(a).sum(0) / 4, rtol=1e-12)


def test_bad_arguments_fail_early():
  with pytest.raises(ValueError, match='normalize'):
    layers.LinearizedAttention(normalize='cosine')
  with pytest.raises(ValueError, match='rank'):
    layers.LinearizedAttention(rank=0)
  with pytest.raises(ValueError, match='depth'):
    layers.LinearizedAttention(depth=0)
  with pytest.raises(ValueError, match='mechanism'):
    layers.QKVAttention(8, mechanism='RELU')
  with pytest.raises(ValueError, match='x_eval'):
    layers.as_sequence(np.ones((3, 4)), np.ones((2, 5)))
