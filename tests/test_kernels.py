"""Models' kernels: arc-cosine closed form, Monte Carlo over inits, NT's empirical NTK."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk_attention import blocked
from ntk_attention import devices
from ntk_attention import kernels
from ntk_attention import models


def _data(n=10, d=6, seed=0):
  return np.random.default_rng(seed).random((n, d))


def _arccos_ntk(k):
  """First-layer-only ReLU NTK for unit-diagonal input kernel k: k (π − θ)/(2π)."""
  theta = np.arccos(np.clip(k, -1.0, 1.0))
  return k * (np.pi - theta) / (2 * np.pi)


@pytest.mark.parametrize('name,power', [('relu_mlp', 1), ('mlp_attn', 3)])
def test_analytic_ntk_is_arccos_closed_form(name, power):
  x = _data()
  k = kernels.analytic_kernel(models.build(name, 16, 3), x)
  np.testing.assert_allclose(k, _arccos_ntk(kernels.gram_power(x, power)), atol=1e-8)


def test_w_std_scales_the_ntk_quadratically():
  x = _data()
  k1 = kernels.analytic_kernel(models.build('relu_mlp', 16, 1), x)
  k2 = kernels.analytic_kernel(models.build('relu_mlp', 16, 1, W_std=2.0), x)
  np.testing.assert_allclose(k2, 4 * k1, rtol=1e-12)


@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_monte_carlo_average_of_empirical_ntk_at_width_1024(name):
  # Each entry of Θ_m averages m i.i.d. terms: std ~ 1/√m per draw. With 8 draws at
  # m = 1024 the relative Frobenius error is ~0.006 (measured); tolerance 0.02 (~3σ).
  x, xe = _data(12), _data(4, seed=1)
  model = models.build(name, 1024, 2)
  mean, draws = kernels.monte_carlo_ntk(model, jax.random.split(jax.random.PRNGKey(0), 8),
                                        x, xe, dtype=jnp.float64)
  analytic = kernels.analytic_kernel(model, x, xe)
  assert draws.shape == (8, 16, 16)
  assert float(kernels.relative_distance(mean, analytic)) < 0.02
  # A single draw is further away: the average is doing the work.
  single = float(kernels.relative_distance(draws[0], analytic))
  assert single > float(kernels.relative_distance(mean, analytic))


@pytest.mark.parametrize('out_dim', [1, 10])
@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_closed_form_equals_nt_empirical_ntk_float32(name, out_dim):
  x, xe = _data(14, 8).astype(np.float32), _data(5, 8, seed=2).astype(np.float32)
  model = models.build(name, 64, out_dim)
  params = models.init_params(model, jax.random.PRNGKey(3), 8, jnp.float32)
  fast = kernels.empirical_ntk(model, params, x, xe, 'closed_form')
  assert fast.dtype == jnp.float32
  for method in ('jacobian_contraction', 'ntk_vector_products'):
    ref = kernels.empirical_ntk(model, params, x, xe, method)
    assert float(kernels.relative_distance(fast, ref)) < 1e-5


def test_qkv_model_generic_methods_agree():
  x = _data(8, 5)
  model = models.build('mlp_attn_qkv', 16, 2, mechanism='SOFTMAX')
  params = models.init_params(model, jax.random.PRNGKey(0), 5, jnp.float64)
  a = kernels.empirical_ntk(model, params, x, None, 'jacobian_contraction')
  b = kernels.empirical_ntk(model, params, x, None, 'ntk_vector_products')
  np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.parametrize('out_dim', [1, 10])
@pytest.mark.parametrize('mechanism', ['IDENTITY', 'SOFTMAX'])
def test_qkv_closed_form_equals_nt_empirical_ntk(mechanism, out_dim):
  # float64: agreement to rounding (measured ~2e-15); float32 to NT's 1e-5 of the closed
  # forms above. Evaluation tokens outside the context exercise the mask.
  x, xe = _data(11, 7), _data(4, 7, seed=5)
  model = models.build('mlp_attn_qkv', 24, out_dim, mechanism=mechanism)
  assert kernels.default_method(model) == 'closed_form'
  for dtype, tol in ((jnp.float64, 1e-12), (jnp.float32, 1e-5)):
    params = models.init_params(model, jax.random.PRNGKey(4), 7, dtype)
    xx, xxe = x.astype(dtype), xe.astype(dtype)
    fast = kernels.empirical_ntk(model, params, xx, xxe, 'closed_form')
    assert fast.dtype == dtype
    ref = kernels.empirical_ntk(model, params, xx, xxe, 'jacobian_contraction')
    assert float(kernels.relative_distance(fast, ref)) < tol, (dtype, mechanism)


def test_qkv_closed_form_with_two_heads_and_w_std():
  x = _data(9, 5)
  model = models.build('mlp_attn_qkv', 8, 3, W_std=1.7, n_heads=2, mechanism='SOFTMAX')
  params = models.init_params(model, jax.random.PRNGKey(2), 5, jnp.float64)
  fast = kernels.empirical_ntk(model, params, x, None, 'closed_form')
  ref = kernels.empirical_ntk(model, params, x, None, 'ntk_vector_products')
  assert float(kernels.relative_distance(fast, ref)) < 1e-12


@pytest.mark.parametrize('name', ['relu_mlp', 'mlp_attn'])
def test_blocked_kernels_equal_one_piece(name):
  # 29 tokens in blocks of 7 (the last block has 1 row) against one block of all 29, in
  # float64; and both against the unblocked empirical NTK and NT's analytic kernel (whose
  # arccos at θ = 0 rounds to √ulp ≈ 1e-8 on the diagonal, hence its looser tolerance).
  x, xe = _data(23, 6), _data(6, 6, seed=7)
  model = models.build(name, 32, 3, W_std=1.3)
  params = models.init_params(model, jax.random.PRNGKey(1), 6, jnp.float64)
  emp = blocked.empirical_ntk_blocked(model, params, x, xe, block=7)
  ana = blocked.analytic_ntk_blocked(model, x, xe, block=7)
  assert emp.shape == ana.shape == (29, 29) and emp.dtype == ana.dtype == np.float64
  np.testing.assert_allclose(emp, blocked.empirical_ntk_blocked(model, params, x, xe, block=29),
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(ana, blocked.analytic_ntk_blocked(model, x, xe, block=29),
                             rtol=0, atol=1e-12)
  np.testing.assert_allclose(emp, kernels.empirical_ntk(model, params, x, xe), rtol=0, atol=1e-12)
  np.testing.assert_allclose(ana, kernels.analytic_kernel(model, x, xe), rtol=0, atol=1e-8)
  # As separate contiguous blocks (the boundary at row 23 falls inside a block of 7).
  for got, ref in ((blocked.empirical_ntk_blocked(model, params, x, xe, block=7, as_blocks=True),
                    emp), (blocked.analytic_ntk_blocked(model, x, xe, block=7, as_blocks=True),
                           ana)):
    assert all(b.flags.c_contiguous for b in got)
    for b, r in zip(got, kernels.split_blocks(ref, 23)):
      np.testing.assert_array_equal(b, r)
  # The budget picks the block: a tiny budget gives one-row blocks, same numbers.
  tiny = blocked.empirical_ntk_blocked(model, params, x, xe, max_memory_gb=1e-9)
  np.testing.assert_allclose(emp, tiny, rtol=0, atol=1e-12)
  assert blocked.block_rows(29, 4 * 29 * 8, 1e-9) == 1


def test_memory_check_names_the_largest_n_that_fits():
  budget = 2.0
  n_max = blocked.largest_n_train(500, budget)
  assert blocked.influence_peak_gb(n_max, 500) <= budget < blocked.influence_peak_gb(n_max + 1, 500)
  blocked.check_fits(n_max, 500, budget)
  with pytest.raises(ValueError, match=f'largest n_train that fits is {n_max}'):
    blocked.check_fits(n_max + 1, 500, budget)
  with pytest.raises(ValueError, match='max_memory_gb'):
    devices.memory_budget_gb(-1.0)
  with pytest.raises(ValueError, match='parameter-free'):
    blocked.analytic_ntk_blocked(models.build('mlp_attn_qkv', 8), _data())


def test_trainable_mask_freezes_only_the_readout():
  model = models.build('mlp_attn', 8, 3)
  params = models.init_params(model, jax.random.PRNGKey(0), 5)
  mask = models.trainable_mask(model, params)
  leaves = jax.tree_util.tree_leaves(mask)
  assert leaves.count(False) == 1 and leaves[-1] is False
  assert all(leaves[:-1])


def test_bad_model_arguments():
  with pytest.raises(ValueError, match='width'):
    models.build('relu_mlp', 0)
  with pytest.raises(ValueError, match='unknown model'):
    models.build('transformer', 8)
  with pytest.raises(ValueError, match='method'):
    kernels.empirical_ntk(models.build('relu_mlp', 4), None, _data(), None, 'autodiff')


@pytest.mark.parametrize('name', ['mlp_attn', 'mlp_attn_qkv'])
def test_a_stax_triple_or_bare_function_gives_the_model_results(name):
  # The triple goes through NT's generic Jacobian contraction; the Model (mlp_attn)
  # through the closed form: the same draws must give the same kernels.
  x, xe = _data(7, 5), _data(3, 5, seed=1)
  model = models.build(name, 16, 2)
  triple = model.triple
  np.testing.assert_allclose(kernels.analytic_kernel(triple[2], x, xe),
                             kernels.analytic_kernel(model, x, xe), rtol=0, atol=0)
  np.testing.assert_allclose(kernels.analytic_kernel(triple, x, xe, get='nngp'),
                             kernels.analytic_kernel(model, x, xe, get='nngp'), atol=0)
  params = models.init_params(model, jax.random.PRNGKey(2), 5, jnp.float64)
  ref = kernels.empirical_ntk(model, params, x, xe)
  for fn in (triple, triple[1]):
    np.testing.assert_allclose(kernels.empirical_ntk(fn, params, x, xe), ref, atol=1e-12)
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  mean_m, draws_m = kernels.monte_carlo_ntk(model, keys, x, xe, dtype=jnp.float64)
  mean_t, draws_t = kernels.monte_carlo_ntk(triple, keys, x, xe, dtype=jnp.float64)
  np.testing.assert_allclose(draws_t, draws_m, atol=1e-12)
  np.testing.assert_allclose(mean_t, mean_m, atol=1e-12)
  with pytest.raises(TypeError, match='init_fn'):
    kernels.monte_carlo_ntk(triple[1], keys, x, xe)


def test_tuple_and_none_get():
  x = _data(6, 4)
  model = models.build('mlp_attn', 8, 1)
  both = kernels.analytic_kernel(model, x, get=('nngp', 'ntk'))
  np.testing.assert_allclose(both.ntk, kernels.analytic_kernel(model, x), atol=0)
  np.testing.assert_allclose(both.nngp, kernels.analytic_kernel(model, x, get='nngp'), atol=0)
  everything = kernels.analytic_kernel(model, x, get=None)
  np.testing.assert_allclose(everything.ntk, both.ntk, atol=0)
  assert everything.nngp.shape == (6, 6)


def test_analytic_kernel_refuses_an_unknown_get():
  model = models.build('relu_mlp', 16, 1)
  for get in ('foo', ('nngp', 'foo'), ()):
    with pytest.raises(ValueError, match=r"get must be None, 'nngp', 'ntk' or a tuple") as err:
      kernels.analytic_kernel(model, _data(), get=get)
    assert '\n' not in str(err.value)
  assert kernels.analytic_kernel(model, _data(), get='nngp').shape == (10, 10)


def test_relative_distance_refuses_a_zero_reference():
  for a, b in ((0, 0), (np.ones(3), np.zeros(3))):
    with pytest.raises(ValueError, match='reference b has zero norm'):
      kernels.relative_distance(a, b)
  assert float(kernels.relative_distance([1.0, 1.0], [1.0, 0.0])) == 1.0
