"""NT's idioms on samples: the transductive wrappers against the joint-sequence kernels."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_attention as na
from ntk_attention import _nt
from ntk_attention import kernels
from ntk_attention import layers
from ntk_attention import models

stax = _nt.stax
N_TRAIN, N_TEST, D = 12, 6, 6


def _data(dtype=np.float64):
  rng = np.random.default_rng(0)
  return (rng.standard_normal((N_TRAIN, D)).astype(dtype),
          rng.standard_normal((N_TEST, D)).astype(dtype),
          rng.standard_normal((N_TRAIN, 2)).astype(dtype))


def _user_triple():
  """A user's own composition of toolkit and NT layers."""
  return stax.serial(na.Normalize(), na.LinearizedAttention(normalize='softmax'),
                     na.Normalize(), stax.Dense(32, b_std=0.1), stax.Relu(), stax.Dense(2))


COMPOSITIONS = {
    'mlp_attn': lambda: models.build('mlp_attn', 32, 2),
    'user_triple': _user_triple,
    'qkv': lambda: models.build('mlp_attn_qkv', 16, 2, mechanism='SOFTMAX'),
}


def _joint(kernel_fn, x, xe, get):
  """The `(N, N)` kernel of the sequence `[x; xe]` with x as context, straight from NT."""
  seq, c = layers.as_sequence(x, xe)
  k = kernel_fn(seq, None, get, context=(c, c))
  return k[0, 0] if isinstance(get, str) else {g: getattr(k, g)[0, 0] for g in get}


@pytest.mark.parametrize('name', sorted(COMPOSITIONS))
def test_cross_kernel_is_the_joint_sequence_block(name):
  x, xe, _ = _data()
  comp = COMPOSITIONS[name]()
  kernel_fn = kernels.resolve(comp, 'kernel_fn')
  joint = _joint(kernel_fn, x, xe, ('nngp', 'ntk'))
  fn = na.transductive_kernel_fn(comp)
  cross = fn(xe, x, ('nngp', 'ntk'))
  for g in ('nngp', 'ntk'):
    assert getattr(cross, g).shape == (N_TEST, N_TRAIN)
    np.testing.assert_allclose(getattr(cross, g), joint[g][N_TRAIN:, :N_TRAIN],
                               rtol=0, atol=1e-10)
  np.testing.assert_allclose(fn(xe, x, 'ntk'), joint['ntk'][N_TRAIN:, :N_TRAIN], atol=1e-10)
  both = fn(x, None)        # get=None: both kernels; x attends to itself
  np.testing.assert_allclose(both.nngp, joint['nngp'][:N_TRAIN, :N_TRAIN], atol=1e-10)
  # The trap the wrapper avoids: two separate sequences give another (wrong) number.
  seq_e, c_e = layers.as_sequence(xe)
  seq_t, c_t = layers.as_sequence(x)
  naive = kernel_fn(seq_e, seq_t, 'ntk', context=(c_e, c_t))[0, 0]
  assert np.abs(naive - joint['ntk'][N_TRAIN:, :N_TRAIN]).max() > 1e-4


@pytest.mark.parametrize('name', ['mlp_attn', 'user_triple'])
def test_nt_predict_through_the_wrapper_is_the_toolkit_predictor(name):
  x, xe, y = _data()
  comp = COMPOSITIONS[name]()
  fn = na.transductive_kernel_fn(comp)
  predict_fn = _nt.predict.gradient_descent_mse_ensemble(fn, x, y, diag_reg=1e-3)
  # The same blocks NT reads: train = fn(x, None), eval_train = fn(xe, x). (The train
  # block equals the joint sequence's up to the ReLU kernel's rounding at θ = 0, ~1e-9.)
  train = fn(x, None, 'ntk')
  joint = _joint(kernels.resolve(comp, 'kernel_fn'), x, xe, 'ntk')
  np.testing.assert_allclose(train, joint[:N_TRAIN, :N_TRAIN], rtol=0, atol=1e-7)
  blocks = kernels.Blocks(train, fn(xe, x, 'ntk'), fn(xe, None, 'ntk'))
  np.testing.assert_allclose(predict_fn(None, xe, 'ntk'),
                             kernels.ntk_predictor(blocks, y, ridge=1e-3), rtol=0, atol=1e-8)
  np.testing.assert_allclose(predict_fn(3.0, xe, 'ntk'),
                             kernels.ntk_predictor(blocks, y, ridge=1e-3, t=3.0),
                             rtol=0, atol=1e-8)


def test_bound_context_gives_nt_the_posterior_covariance_and_batches():
  # compute_cov makes NT call fn(x_test, None); nt.batch cuts x2: with the training set
  # bound, both are blocks of the joint sequence. Reference: the Gaussian posterior.
  x, xe, y = _data()
  comp = _user_triple()
  fn = na.transductive_kernel_fn(comp, x_context=x)
  k = _joint(comp[2], x, xe, 'nngp')
  a = k[:N_TRAIN, :N_TRAIN] + 1e-3 * np.trace(k[:N_TRAIN, :N_TRAIN]) / N_TRAIN * np.eye(N_TRAIN)
  mean = k[N_TRAIN:, :N_TRAIN] @ np.linalg.solve(a, y)
  cov = k[N_TRAIN:, N_TRAIN:] - k[N_TRAIN:, :N_TRAIN] @ np.linalg.solve(a, k[:N_TRAIN, N_TRAIN:])
  out = _nt.predict.gradient_descent_mse_ensemble(fn, x, y, diag_reg=1e-3)(
      None, xe, 'nngp', compute_cov=True)
  np.testing.assert_allclose(out.mean, mean, atol=1e-8)
  np.testing.assert_allclose(out.covariance, cov, atol=1e-8)
  batched = _nt.nt.batch(fn, batch_size=3)(x, xe, 'nngp')
  np.testing.assert_allclose(batched, k[:N_TRAIN, N_TRAIN:], atol=1e-10)


@pytest.mark.parametrize('name', sorted(COMPOSITIONS))
def test_wrapped_empirical_ntk_is_nt_empirical_ntk_on_the_joint_sequence(name):
  x, xe, _ = _data(np.float32)
  comp = COMPOSITIONS[name]()
  apply_fn = kernels.resolve(comp, 'apply_fn')
  _, params = kernels.resolve(comp, 'init_fn')(jax.random.PRNGKey(1), (1, 1, D))
  params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
  seq, c = layers.as_sequence(x, xe)
  ref = _nt.empirical_ntk_fn_generic(apply_fn, trace_axes=(-1,))(
      seq, None, params, context=(c, c))[0, 0]
  fn = na.transductive_empirical_ntk_fn(comp)
  cross = fn(xe, x, params)
  assert cross.shape == (N_TEST, N_TRAIN) and cross.dtype == jnp.float32
  scale = float(jnp.abs(ref).max())
  np.testing.assert_allclose(cross, ref[N_TRAIN:, :N_TRAIN], rtol=0, atol=1e-5 * scale)
  np.testing.assert_allclose(fn(x, None, params), ref[:N_TRAIN, :N_TRAIN], atol=1e-5 * scale)


def test_wrapped_apply_fn_is_the_joint_sequence_output():
  x, xe, _ = _data()
  comp = models.build('mlp_attn_qkv', 8, 2)
  params = models.init_params(comp, jax.random.PRNGKey(0), D, jnp.float64)
  seq, c = layers.as_sequence(x, xe)
  joint = comp.apply_fn(params, seq, context=c)[0]
  f = na.transductive_apply_fn(comp)
  np.testing.assert_allclose(f(params, xe, x), joint[N_TRAIN:], rtol=1e-12)
  np.testing.assert_allclose(f(params, x), joint[:N_TRAIN], rtol=1e-12)
  np.testing.assert_allclose(na.transductive_apply_fn(comp, x_context=x)(params, xe),
                             joint[N_TRAIN:], rtol=1e-12)


def test_monte_carlo_kernel_fn_through_the_wrapper():
  # NT's Monte Carlo estimator dies on a bare context; through the wrapper it runs and
  # approaches the analytic cross kernel: 16 draws at width 1024 (relative error ~0.03
  # measured; tolerance 0.1).
  x, xe, _ = _data()
  init_fn, apply_fn, kernel_fn = stax.serial(
      na.Normalize(), na.LinearizedAttention(), na.Normalize(), stax.Dense(1024), stax.Relu(),
      stax.Dense(1))
  mc = _nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(0), 16)
  est = na.transductive_kernel_fn(mc)(xe, x, 'ntk')
  exact = na.transductive_kernel_fn(kernel_fn)(xe, x, 'ntk')
  assert float(kernels.relative_distance(est, exact)) < 0.1


def test_layer_kernel_fn_refuses_two_sequences_without_both_contexts():
  x, xe, _ = _data()
  _, _, kernel_fn = COMPOSITIONS['user_triple']()
  seq_e, c_e = layers.as_sequence(xe)
  seq_t, _ = layers.as_sequence(x)
  for kwargs in ({}, {'context': c_e}):
    with pytest.raises(ValueError, match='transductive_kernel_fn') as err:
      kernel_fn(seq_e, seq_t, 'ntk', **kwargs)
    assert '\n' not in str(err.value)
  with pytest.raises(ValueError, match='transductive_kernel_fn'):
    layers.QKVAttention(4)[2](seq_e, seq_t, 'ntk')
  with pytest.raises(ValueError, match='context'):
    na.transductive_kernel_fn(kernel_fn)(xe, x, 'ntk', context=c_e)


def _digits():
  d = na.data.load('digits', classes=(3, 8), n_train=24, n_test=8)
  return jnp.asarray(d.x_train, jnp.float64), jnp.asarray(d.x_test, jnp.float64)


def test_nt_batch_refuses_the_unbound_wrapper_and_the_bound_one_is_the_joint_kernel():
  x, xe = _digits()
  comp = COMPOSITIONS['mlp_attn']()
  fn = na.transductive_kernel_fn(comp)
  for f in (fn, jax.jit(fn)):     # jax.jit copies the attribute nt.batch reads
    with pytest.raises(ValueError, match=r'x_context=x_train') as err:
      _nt.nt.batch(f, batch_size=4)
    assert '\n' not in str(err.value)
  # What the refusal prevents: batched without the guard, each piece of x2 is the context.
  unguarded = _nt.nt.batch(lambda *a: fn(*a), batch_size=4)(xe, x, 'ntk')
  assert float(kernels.relative_distance(unguarded, fn(xe, x, 'ntk'))) > 1e-3
  joint = _joint(comp.kernel_fn, x, xe, ('nngp', 'ntk'))
  batched = _nt.nt.batch(na.transductive_kernel_fn(comp, x_context=x), batch_size=4)
  cross = batched(xe, x, ('nngp', 'ntk'))
  for g in ('nngp', 'ntk'):
    np.testing.assert_allclose(getattr(cross, g), joint[g][24:, :24], rtol=0, atol=1e-10)
  # x2=None: NT pairs pieces of x1 with themselves, so the diagonal entries pair two copies
  # of a token (the ReLU kernel's rounding at θ = 0, ~1e-9).
  np.testing.assert_allclose(batched(xe, None, 'ntk'), joint['ntk'][24:, 24:], rtol=0,
                             atol=1e-8)


def test_nt_batch_refuses_the_unbound_empirical_ntk_and_batches_the_bound_one():
  x, xe = _digits()
  comp = models.build('mlp_attn', 32, 2)
  params = models.init_params(comp, jax.random.PRNGKey(0), x.shape[1], jnp.float64)
  with pytest.raises(ValueError, match=r'transductive_empirical_ntk_fn\(apply_fn, x_context'):
    _nt.nt.batch(na.transductive_empirical_ntk_fn(comp), batch_size=4)
  fn = na.transductive_empirical_ntk_fn(comp, x_context=x)
  np.testing.assert_allclose(_nt.nt.batch(fn, batch_size=4)(xe, x, params), fn(xe, x, params),
                             rtol=0, atol=1e-10)


def test_transductive_wrappers_refuse_non_finite_inputs():
  x, xe, _ = _data()
  bad = xe.copy()
  bad[0, 0] = np.nan
  inf = x.copy()
  inf[1, 2] = np.inf
  fn = na.transductive_kernel_fn(_user_triple())
  for call, name in ((lambda: fn(bad, x, 'ntk'), 'x1'), (lambda: fn(xe, inf, 'ntk'), 'x2'),
                     (lambda: fn(bad), 'x1'),
                     (lambda: na.transductive_kernel_fn(_user_triple(), x_context=inf), 'x_context'),
                     (lambda: na.transductive_empirical_ntk_fn(_user_triple())(bad, x, None), 'x1')):
    with pytest.raises(ValueError, match=rf'^{name} has non-finite entries') as err:
      call()
    assert '\n' not in str(err.value)
  assert np.all(np.isfinite(fn(xe, x, 'ntk')))    # finite inputs still pass


def test_transductive_kernel_fn_refuses_an_unknown_get():
  x, xe, _ = _data()
  fn = na.transductive_kernel_fn(_user_triple())
  for get in ('foo', ('ntk', 'foo'), (), 'cov1'):
    with pytest.raises(ValueError, match=r"get must be None, 'nngp', 'ntk' or a tuple"):
      fn(xe, x, get)
  assert fn(xe, x, ('ntk',)).ntk.shape == (N_TEST, N_TRAIN)
