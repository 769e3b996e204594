"""Any composition, every measurement (docs/method.md §17): `models.compose`, the layer-by-
layer closed-form eNTK against NT's Jacobian contraction, declared trainable leaves, the
guarded fallback, and the measurements on a `{name: factory}` equal to the built-in names."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntk_attention as na
from ntk_attention import _nt
from ntk_attention import blocked
from ntk_attention import compiles
from ntk_attention import kernels
from ntk_attention import malleability
from ntk_attention import models
from ntk_attention import ntk_closed_form
from ntk_attention import sweeps
from ntk_attention import training

stax = _nt.stax
D = 7


def _x(n=10, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, D))


def _attention():
  return stax.serial(na.Normalize(), na.LinearizedAttention(normalize='softmax'), na.Normalize())


def _head(depth, activation, bias, parameterization, width=6, out_dim=3):
  b_std = 0.4 if bias else None
  hidden = []
  for _ in range(depth - 1):
    hidden += [stax.Dense(width, W_std=1.3, b_std=b_std, parameterization=parameterization),
               activation]
  return stax.serial(*hidden, stax.Dense(out_dim, W_std=0.9, b_std=b_std,
                                         parameterization=parameterization))


def _nt_ntk(model, params, x, x_eval):
  """NT's Jacobian contraction on the whole model over the joint sequence (independent of
  the toolkit's kernels: no features, no masks)."""
  seq, c = na.as_sequence(x, x_eval)
  ntk_fn = _nt.empirical_ntk_fn_generic(model.apply_fn, trace_axes=(-1,))
  return ntk_fn(seq, None, params, context=(c, c))[0, 0]


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


ACTIVATIONS = {'relu': stax.Relu, 'erf': stax.Erf, 'gelu': stax.Gelu}


@pytest.mark.parametrize('depth', [1, 2, 3])
@pytest.mark.parametrize('activation', sorted(ACTIVATIONS))
@pytest.mark.parametrize('bias,parameterization', [(False, 'ntk'), (True, 'ntk'),
                                                   (True, 'standard')])
@pytest.mark.parametrize('prefix', ['none', 'attention'])
def test_fast_entk_is_nt_jacobian_contraction(depth, activation, bias, parameterization,
                                             prefix):
  head = _head(depth, ACTIVATIONS[activation](), bias, parameterization)
  model = models.compose(_attention() if prefix == 'attention' else None, head)
  assert model.head_kind == 'layers' and kernels.default_method(model) == 'closed_form'
  params = models.init_params(model, jax.random.PRNGKey(depth), D, jnp.float64)
  x, x_eval = _x(9), _x(4, seed=1)
  fast = kernels.empirical_ntk(model, params, x, x_eval)
  assert _rel(fast, _nt_ntk(model, params, x, x_eval)) < 1e-10


@pytest.mark.parametrize('mechanism', ['IDENTITY', 'SOFTMAX'])
def test_qkv_prefix_with_a_deep_head_is_nt_jacobian_contraction(mechanism):
  head = _head(2, stax.Erf(), True, 'ntk')
  model = models.compose(models.qkv_prefix(5, mechanism=mechanism), head)
  assert (model.prefix_kind, model.head_kind) == ('qkv', 'layers')
  params = models.init_params(model, jax.random.PRNGKey(3), D, jnp.float64)
  x, x_eval = _x(8), _x(3, seed=1)
  assert _rel(kernels.empirical_ntk(model, params, x, x_eval),
              _nt_ntk(model, params, x, x_eval)) < 1e-10


def test_study_head_formula_equals_the_layer_by_layer_one():
  """relu_head keeps its registered formula; the general one (same layers, composed again)
  gives the same kernel."""
  study = models.build('mlp_attn', 16, 3, W_std=1.4)
  layered = models.compose(study.prefix, stax.serial(
      na.layers.ScaledDense(16, init_std=0.01, W_std=1.4), stax.Relu(),
      na.FrozenReadout(3)))
  assert study.head_kind == 'relu_head' and layered.head_kind == 'layers'
  params = models.init_params(study, jax.random.PRNGKey(0), D, jnp.float64)
  x = _x(10)
  np.testing.assert_allclose(kernels.empirical_ntk(layered, params, x),
                             kernels.empirical_ntk(study, params, x), rtol=1e-12, atol=1e-14)


class _Opaque:
  """A head the fast path cannot see into: one layer whose apply is a serial's apply."""

  @staticmethod
  def make(width=6, out_dim=3):
    init_fn, apply_fn, kernel_fn = _head(2, stax.Relu(), True, 'ntk', width, out_dim)
    return (lambda rng, shape: init_fn(rng, shape),
            lambda params, x, **kw: apply_fn(params, x, **kw), kernel_fn)


def test_unrecognised_head_gets_nts_answer_in_token_blocks_under_a_budget():
  model = models.compose(_attention(), _Opaque.make())
  assert model.head_kind == 'opaque'
  assert kernels.default_method(model) == 'jacobian_contraction'
  params = models.init_params(model, jax.random.PRNGKey(0), D, jnp.float64)
  x, x_eval = _x(9), _x(4, seed=1)
  whole = kernels.empirical_ntk(model, params, x, x_eval)
  per_token = kernels._jacobian_gb(model, 1, jnp.float64, head_only=True, n_features=D)
  # a budget that holds about 6 tokens' Jacobians: blocks of 1 token
  tiny = kernels.empirical_ntk(model, params, x, x_eval, max_memory_gb=6 * per_token)
  recognised = models.compose(_attention(), _head(2, stax.Relu(), True, 'ntk'))
  np.testing.assert_allclose(tiny, whole, rtol=1e-12)
  np.testing.assert_allclose(whole, kernels.empirical_ntk(recognised, params, x, x_eval),
                             rtol=1e-10)
  # and the blocked float64 form used by malleability
  np.testing.assert_allclose(blocked.empirical_ntk_blocked(model, params, x, x_eval), whole,
                             rtol=1e-12)


def test_plan_checks_every_affine_layer_and_refuses_a_dense_that_is_not_affine():
  """`ntk_closed_form.plan` reads an affine layer's scales from NT's Dense and checks
  `a·xW + c·b` on random draws: a layer that calls itself Dense but applies tanh after NT's
  Dense is refused (the head goes to NT's methods, whose eNTK it then gets). Shapes are
  followed with `jax.eval_shape`, so a head at a new width compiles only those checks: at
  most 4 small programs per affine layer (measured: 11 and 7 programs for this head's 3
  affine layers at widths 43 and 47; the previous plan, which drew with jax.random and ran
  every layer, compiled 30 at width 43)."""
  init_fn, apply_fn, kernel_fn = stax.Dense(6)

  def apply_tanh(params, x, **kw):
    return jnp.tanh(apply_fn(params, x, **kw))

  apply_tanh.__name__ = 'Dense'
  fake = stax.serial((init_fn, apply_tanh, kernel_fn), stax.Relu(), stax.Dense(3))
  assert ntk_closed_form.plan(fake, D) is None
  model = models.compose(_attention(), fake)
  assert model.head_kind == 'opaque'
  params = models.init_params(model, jax.random.PRNGKey(0), D, jnp.float64)
  np.testing.assert_allclose(kernels.empirical_ntk(model, params, _x(5), _x(3, seed=1)),
                             _nt_ntk(model, params, _x(5), _x(3, seed=1)), rtol=1e-10)
  for width in (43, 47):   # widths no other test uses: every check compiles anew
    head = _head(3, stax.Erf(), True, 'ntk', width=width)
    with compiles.count() as c:
      kinds = [layer.kind for layer in ntk_closed_form.plan(head, D)]
    assert kinds == ['affine', 'pointwise'] * 2 + ['affine']
    assert c.programs <= 4 * 3, (width, c.programs)


def test_generic_method_over_budget_is_refused_naming_the_largest_n():
  model = models.compose(models.qkv_prefix(4), _Opaque.make())
  assert model.prefix_kind == 'qkv' and model.head_kind == 'opaque'
  params = models.init_params(model, jax.random.PRNGKey(0), D)
  need = kernels.generic_ntk_gb(model, 14, D)
  with pytest.raises(ValueError, match='largest number of points that fits is about'):
    kernels.empirical_ntk(model, params, _x(10), _x(4, seed=1), max_memory_gb=need / 3)


def test_monte_carlo_draws_are_chunked_to_the_budget():
  model = models.compose(_attention(), _Opaque.make())
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  x = _x(6)
  mean, draws = kernels.monte_carlo_ntk(model, keys, x, dtype=jnp.float64)
  per_draw = kernels.generic_ntk_gb(model, 6, D, jnp.float64)
  mean2, draws2 = kernels.monte_carlo_ntk(model, keys, x, dtype=jnp.float64,
                                          max_memory_gb=2.5 * per_draw)   # chunks of 1
  np.testing.assert_allclose(draws2, draws, rtol=1e-12)
  np.testing.assert_allclose(mean, np.mean(np.asarray(draws), 0), rtol=1e-12)


def test_blocked_kernels_of_a_deep_head_equal_the_whole_ones():
  model = models.compose(_attention(), _head(3, stax.Erf(), True, 'ntk', out_dim=2))
  params = models.init_params(model, jax.random.PRNGKey(0), D, jnp.float64)
  x, x_eval = _x(11), _x(5, seed=1)
  np.testing.assert_allclose(blocked.empirical_ntk_blocked(model, params, x, x_eval, block=4),
                             kernels.empirical_ntk(model, params, x, x_eval), rtol=1e-12)
  x64, xe64 = jnp.asarray(x, jnp.float64), jnp.asarray(x_eval, jnp.float64)
  np.testing.assert_allclose(blocked.analytic_ntk_blocked(model, x, x_eval, block=4),
                             kernels.analytic_kernel(model, x64, xe64), rtol=1e-10, atol=1e-12)


def test_training_changes_every_declared_trainable_leaf_and_no_frozen_one():
  ds = na.data.load('digits', classes=(3, 8), n_train=40, n_test=10)
  y = na.data.targets(ds.y_train, 2)
  deep = models.compose(_attention(), stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(),
                                                  stax.Dense(1, b_std=0.1)), name='deep')
  study = models.build('mlp_attn', 8, 1)
  frozen_last = models.compose(_attention(), stax.serial(
      stax.Dense(8), stax.Relu(), stax.Dense(1)),
      trainable=lambda p: [p[0], [True, (), False]])
  qkv = models.build('mlp_attn_qkv', 4, 1)
  config = training.TrainConfig(epochs=3, batch_size=16)
  for model, expect in [(deep, [True] * 4), (study, [True, False]),
                        (frozen_last, [True, False]), (qkv, [True] * 4 + [False])]:
    assert list(model.mask) == expect, model.name
    r = training.train(model, training.seed_keys([0]), ds.x_train, y, config)
    before = jax.tree_util.tree_leaves(training.unstack(r.init_params, 0))
    after = jax.tree_util.tree_leaves(training.unstack(r.params, 0))
    moved = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert moved == expect, model.name
  # the study's readout stays ±1
  a = training.unstack(training.train(study, training.seed_keys([0]), ds.x_train, y,
                                      config).params, 0)[1][-1]
  assert set(np.unique(np.asarray(a))) <= {-1.0, 1.0}


def test_an_explicit_mask_has_no_analytic_kernel_and_a_mixing_head_is_refused():
  m = models.compose(None, stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(2)),
                     trainable=lambda p: [p[0], [False, (), True]])
  with pytest.raises(ValueError, match='kernel_fn does not know'):
    kernels.analytic_kernel(m, _x(5))
  with pytest.raises(ValueError, match='mixes tokens|tokens alone'):
    models.compose(None, _attention())
  with pytest.raises(ValueError, match='no parameters that train'):
    models.compose(_attention(), _head(1, stax.Relu(), False, 'ntk'), prefix_trainable=True)
  with pytest.raises(ValueError, match='out_dim=4'):
    models.compose(None, _head(1, stax.Relu(), False, 'ntk'), out_dim=4)
  # a hand-built Model is analysed the same way (no silent readout guess)
  hand = models.Model('hand', 6, 3, 1.0, _attention(), _head(2, stax.Relu(), True, 'ntk'))
  assert hand.head_kind == 'layers' and all(hand.mask)


FIELDS = ('mask', 'mask_is_declared', 'out_dim', 'prefix_trainable', 'prefix_kind', 'head_kind',
          'head_layers', 'signature')     # a Model's derived fields


def _checked_relu():
  """A per-token ReLU that checks its input on the host (a Python branch on a value): it
  runs op by op and under autodiff, but cannot be traced by `jax.jit`."""
  def init_fn(rng, input_shape):
    del rng
    return input_shape, ()

  def apply_fn(params, inputs, **kwargs):
    del params, kwargs
    if not bool(jnp.all(jnp.isfinite(inputs))):
      raise ValueError('non-finite input')
    return jnp.maximum(inputs, 0)

  return init_fn, apply_fn, stax.Relu()[2]


def test_a_models_probe_is_one_program_and_equals_the_op_by_op_probe(monkeypatch):
  """A new composition's probe (prefix output, head Jacobian, parameter gradients) is one
  compiled program, and the model's derived fields equal those of the op-by-op probe
  (`models._probe_eager`); a layer that cannot be traced is probed op by op and made."""
  def make(head):
    return models.compose(_attention(), head(), name='probed')

  heads = [lambda: _head(3, stax.Gelu(), True, 'standard'),
           lambda: stax.serial(stax.Dense(5), _checked_relu(), stax.Dense(2))]
  with compiles.count() as count:
    compiled = [make(h) for h in heads]
  assert count.by_name['jit(_probe_eager)'] == 1   # the traceable head; the other fell back
  with monkeypatch.context() as m:
    m.setattr(models, '_probe', models._probe_eager)  # pylint: disable=protected-access
    eager = [make(h) for h in heads]
  def layout(layers_):     # the recognised layers' kinds and paths (their functions are new)
    return None if layers_ is None else [(l.kind, l.path) for l in layers_]

  for a, b in zip(compiled, eager):
    assert [getattr(a, f) for f in FIELDS if f != 'head_layers'] == [
        getattr(b, f) for f in FIELDS if f != 'head_layers']
    assert layout(a.head_layers) == layout(b.head_layers)
  assert compiled[0].head_kind == 'layers' and compiled[1].head_kind == 'opaque'
  # refusals come from either path in one line
  with pytest.raises(ValueError, match='mixes tokens|tokens alone'):
    models.compose(None, _attention())


def test_empirical_ntk_with_a_frozen_dense_matches_nt_on_the_masked_parameters():
  m = models.compose(_attention(), stax.serial(stax.Dense(5, b_std=0.3), stax.Erf(),
                                               stax.Dense(2, b_std=0.3)),
                     trainable=lambda p: [p[0], [(False, True), (), (True, False)]])
  params = models.init_params(m, jax.random.PRNGKey(0), D, jnp.float64)
  x = _x(8)
  # NT over only the trained leaves: a model whose frozen leaves are constants
  def apply_trained(trained, seq, **kw):
    full = [params[0], [(params[1][0][0], trained[0]), (), (trained[1], params[1][2][1])]]
    return m.apply_fn(full, seq, **kw)
  ntk_fn = _nt.empirical_ntk_fn_generic(apply_trained, trace_axes=(-1,))
  seq, c = na.as_sequence(x)
  want = ntk_fn(seq, None, (params[1][0][1], params[1][2][0]), context=(c, c))[0, 0]
  np.testing.assert_allclose(kernels.empirical_ntk(m, params, x), want, rtol=1e-10)
  np.testing.assert_allclose(kernels.empirical_ntk(m, params, x, method='jacobian_contraction'),
                             want, rtol=1e-10)


def _study_factory(width, out_dim):
  return models.compose(models.attention_prefix(),
                        models.relu_head(width, out_dim, 1.0, models.DEFAULT_INIT_STD),
                        name='mlp_attn')


@pytest.fixture(scope='module')
def small():
  return na.data.load('digits', n_train=60, n_test=30)


def _strip(records):
  return [{k: v for k, v in r.items() if k != 'wall_time_s'} for r in records]


def test_mlp_attn_as_compose_gives_the_built_in_records(small):
  """The composed study model (a new object: new programs, the same arithmetic) gives the
  built-in name's records, number for number."""
  config = training.TrainConfig(epochs=3)
  built = sweeps.ntk_distance_sweep(small, ['mlp_attn'], [8, 16], [0, 1], config)
  composed = sweeps.ntk_distance_sweep(small, {'mlp_attn': _study_factory}, [8, 16], [0, 1],
                                       config)
  for a, b in zip(_strip(built), _strip(composed)):
    assert a.keys() == b.keys()
    for k in a:
      if isinstance(a[k], float):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, err_msg=k)
      elif k != 'options':
        assert a[k] == b[k], k
  setup = malleability.Setup()
  m_built = malleability.sweep(small, ['mlp_attn'], 8, [0], ['fgsm'], [0.1], setup, config)
  m_comp = malleability.sweep(small, {'mlp_attn': _study_factory}, 8, [0], ['fgsm'], [0.1],
                              setup, config)
  for a, b in zip(m_built, m_comp):
    for k in ('flip_rate', 'spearman', 'topk_overlap', 'test_accuracy', 'kernel_distance'):
      np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_factories_and_instantiate_refuse_bad_entries():
  with pytest.raises(ValueError, match='unknown model'):
    models.factories(['relu_mlp', 'nope'])
  with pytest.raises(ValueError, match='cannot import'):
    models.factories(['no_such_module_xyz:f'])
  with pytest.raises(ValueError, match='not a models.Model'):
    models.instantiate('bad', lambda w, c: 3, 4, 2)
  with pytest.raises(ValueError, match='outputs'):
    models.instantiate('bad', lambda w, c: models.build('relu_mlp', w, 5), 4, 2)
  # a stax triple is composed: per-token as a head, otherwise as a prefix
  m = models.instantiate('mlp', lambda w, c: stax.serial(stax.Dense(w), stax.Relu(),
                                                         stax.Dense(c)), 4, 2)
  assert (m.name, m.width, m.prefix_kind, m.head_kind) == ('mlp', 4, 'fixed', 'layers')
  m = models.instantiate('att', lambda w, c: stax.serial(_attention(), stax.Dense(c)), 4, 2)
  assert m.prefix_kind == 'trainable' and m.head_kind == 'layers'
