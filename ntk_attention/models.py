"""Model triples of the study, and which of their parameters train.

Every model is `serial(prefix, head)` on a dataset laid out as one sequence `(1, N, d)`
(see `layers.as_sequence`):

  relu_mlp(m, C):  prefix = Normalize;                     head = relu_head(m, C)
  mlp_attn(m, C):  prefix = Normalize → LinearizedAttention → Normalize; head = relu_head
  mlp_attn_qkv:    prefix = Normalize → QKVAttention(width m, trainable) → Normalize; head

`relu_head(m, C)` is the paper's `f(x) = (1/√m) Σ_r a_r σ(w_r·x)`: NT `Dense(m)` in NTK
parameterisation (no bias), ReLU, and a frozen ±1 readout (`layers.FrozenReadout`).

Parameterisation (docs/method.md §4). The head's first layer is `layers.ScaledDense`:
NT's `h = W_std · x W / √d` with `W ~ N(0, init_std²)`. On the RMS-1 inputs that
`Normalize` produces (the paper's unit-norm x̂, rescaled by √d) and `W_std = 1` this is
`h_r = w_r·x̂` with the trained weight `w_r = W[:, r] ~ N(0, init_std²)` — the study's
standard parameterisation, `init_std = 0.01` by default, so Adam moves `w_r` itself by
about lr per step, as in the study. The ReLU NTK ignores the init scale (it is
1-homogeneous in w); with only the first layer trained and `a² = 1`, NT's `ntk` is
`Θ∞(x, x') = W_std² ⟨x̂, x̂'⟩ (π − θ)/(2π)` for every `init_std` — the paper's kernel —
while f at initialisation, the NNGP and the training dynamics scale with `init_std`.
"""
import dataclasses
import functools
import importlib
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import compiles
from ntk_attention import _nt
from ntk_attention import layers
from ntk_attention import ntk_closed_form

stax = _nt.stax

MODELS = ('relu_mlp', 'mlp_attn', 'mlp_attn_qkv')


DEFAULT_INIT_STD = 0.01   # [choice] the study's N(0, 0.01²) first layer (docs/method.md §4)


def relu_head(width: int, out_dim: int = 1, W_std: float = 1.0,
              init_std: float = DEFAULT_INIT_STD):
  """`ScaledDense(width, init_std, W_std, no bias) → ReLU → FrozenReadout(out_dim)`, per
  token: `f(x) = (1/√m) Σ_r a_r ReLU(w_r·x̂)` with `w_r ~ N(0, init_std²)` (W_std = 1)."""
  _check_width(width)
  init_fn, apply_fn, kernel_fn = stax.serial(
      layers.ScaledDense(width, init_std=init_std, W_std=W_std),
      stax.Relu(),
      layers.FrozenReadout(out_dim))
  # Declared, so that the closed forms of kernels.py (and qkv_ntk) recognise it.
  layers._declare(apply_fn, kind='relu_head', W_std=float(W_std), width=int(width),
                  out_dim=int(out_dim), init_std=float(init_std))
  return init_fn, apply_fn, kernel_fn


def attention_prefix(depth: int = 1, shared: bool = True, rank: Optional[int] = None,
                     normalize: str = 'linear', temperature: Optional[float] = None):
  """Parameter-free `Normalize → LinearizedAttention → Normalize`; kernel: normalised `G³`.

  The pattern is averaged over context tokens (a global scale that the final
  normalisation removes) so deep stacks stay in float range.
  """
  return stax.serial(
      layers.Normalize(),
      layers.LinearizedAttention(depth=depth, shared=shared, rank=rank,
                                 normalize=normalize, temperature=temperature,
                                 average=normalize == 'linear'),
      layers.Normalize())


def qkv_prefix(width: int, n_heads: int = 1, mechanism: str = 'IDENTITY'):
  """`Normalize → QKVAttention(width) → Normalize`: trainable attention across samples."""
  return stax.serial(
      layers.Normalize(),
      layers.QKVAttention(width, n_heads=n_heads, mechanism=mechanism),
      layers.Normalize())


def relu_mlp(width: int, out_dim: int = 1, W_std: float = 1.0,
             init_std: float = DEFAULT_INIT_STD):
  """2-layer ReLU net on unit-norm inputs; `(init_fn, apply_fn, kernel_fn)`."""
  return build('relu_mlp', width, out_dim, W_std=W_std, init_std=init_std).triple


def mlp_attn(width: int, out_dim: int = 1, W_std: float = 1.0,
             init_std: float = DEFAULT_INIT_STD, **attention):
  """The same net behind parameter-free linearized attention; a stax triple.

  `attention`: `depth`, `shared`, `rank`, `normalize`, `temperature` of `attention_prefix`.
  """
  return build('mlp_attn', width, out_dim, W_std=W_std, init_std=init_std, **attention).triple


def mlp_attn_qkv(width: int, out_dim: int = 1, W_std: float = 1.0,
                 init_std: float = DEFAULT_INIT_STD, **attention):
  """The same net behind trainable QKV attention across samples; a stax triple.

  `attention`: `n_heads`, `mechanism` ('IDENTITY' or 'SOFTMAX') of `qkv_prefix`.
  """
  return build('mlp_attn_qkv', width, out_dim, W_std=W_std, init_std=init_std,
               **attention).triple


# Probe sizes of `compose`'s checks: a sequence of PROBE_TOKENS tokens of PROBE_DIM channels.
PROBE_DIM, PROBE_TOKENS = 4, 3


@dataclasses.dataclass(frozen=True)
class Model:
  """A model `stax.serial(prefix, head)` on a dataset laid out as one sequence.

  Build it with `compose(prefix, head, ...)` (or `build(name, ...)` for the study's three);
  a `Model(...)` written by hand is analysed the same way when it is made. Its parameters
  are `[prefix_params, head_params]` (NT's serial makes lists).

  Declared: `name`, `width` (for records; None when not meaningful), `out_dim` (None: read
  from the head), `prefix`, `head` (stax triples), `prefix_trainable` (None: whether the
  prefix has parameters that train), `trainable` (None: declared by the layers; or a
  callable `params -> pytree of bools`, or such a pytree's leaves as a tuple), and the study
  head's `W_std`, `init_std` and attention `options` (None / () for other models; records
  and cache keys carry them).

  Derived when made (docs/method.md §17): `mask` (the trained flags of the flattened
  parameter leaves), `mask_is_declared` (whether that is what the layers declare, which is
  what their `kernel_fn`s assume), `prefix_kind` ('fixed': a function of the inputs, computed once;
  'qkv': the study's trainable QKV prefix; 'trainable': any other), `head_kind`
  ('relu_head': the study's head; 'layers': a Dense/elementwise stack of
  `ntk_closed_form`; 'opaque': anything else, served by NT's generic methods),
  `head_layers` (the recognised layers, or None) and `signature` (layer names and
  parameter shapes: what the training cache keys on besides the name).
  """
  name: str
  width: Optional[int]
  out_dim: Optional[int]
  W_std: Optional[float]
  prefix: Any
  head: Any
  prefix_trainable: Optional[bool] = None
  options: tuple = ()
  init_std: Optional[float] = None
  trainable: Any = None
  mask: Optional[tuple] = None
  mask_is_declared: bool = True
  prefix_kind: str = ''
  head_kind: str = ''
  head_layers: Optional[tuple] = None
  signature: str = ''

  def __post_init__(self):
    if self.mask is None:
      for field, value in _analyse(self).items():
        object.__setattr__(self, field, value)

  @property
  def triple(self):
    return stax.serial(self.prefix, self.head)

  @property
  def init_fn(self) -> Callable:
    return self.triple[0]

  @property
  def apply_fn(self) -> Callable:
    return self.triple[1]

  @property
  def kernel_fn(self) -> Callable:
    return self.triple[2]


def compose(prefix, head, *, prefix_trainable: Optional[bool] = None, trainable=None,
            name: Optional[str] = None, width: Optional[int] = None,
            out_dim: Optional[int] = None) -> Model:
  """A `Model` from any stax prefix and any per-token stax head.

  Args:
    prefix: a stax triple acting on the sequence `(1, N, d)` with `context=` (the toolkit's
      attention layers, NT's layers; parameter-free or trainable), or None (identity).
    head: a stax triple applied to every token alone (checked on a probe: a head whose
      output at one token depends on another is refused).
    prefix_trainable: None: True when the prefix has parameters that train; False freezes
      them (the prefix is then a fixed function of the inputs, computed once).
    trainable: which parameters train. None: every leaf except those of layers that
      declare themselves frozen (`layers.FrozenReadout`) and those no output depends on;
      or a callable `params -> pytree of bools`, or such a pytree (the structure of
      `init_params(model, ...)`).
    name: the model's name in records (default 'model').
    width: recorded with the model (e.g. the width a factory was called with).
    out_dim: the number of outputs, checked against the head (default: read from it).

  Returns:
    `Model`; `kernels.empirical_ntk` takes its closed form when the structure is
    recognised (docs/method.md §17) and NT's generic methods otherwise.
  """
  prefix = stax.Identity() if prefix is None else prefix
  if trainable is not None and not callable(trainable):
    trainable = functools.partial(_given_mask, trainable)
  return Model(name or 'model', width, out_dim, None, prefix, head, prefix_trainable,
               trainable=trainable)


def _given_mask(mask, params):
  del params
  return mask


def _broadcast_mask(given, params):
  """A mask that is a prefix of the parameters' tree (a bool stands for its whole subtree,
  as in optax) -> one bool per parameter leaf."""
  return jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda m, sub: jax.tree_util.tree_map(lambda _: bool(m), sub), given, params))


def _check_triple(triple, what: str):
  if not (isinstance(triple, tuple) and len(triple) == 3 and all(map(callable, triple))):
    raise TypeError(f'compose: {what} must be a stax triple (init_fn, apply_fn, kernel_fn), '
                    f'got {type(triple).__name__}.')


def _declared_mask(layer, params):
  """Trained flags from the layers' declarations (`layers.declared(...)['frozen']`)."""
  parts = _nt.serial_parts(layer[0], layer[1])
  if parts is None or not isinstance(params, (list, tuple)) or len(parts) != len(params):
    frozen = bool(layers.declared(layer[1]).get('frozen'))
    return jax.tree_util.tree_map(lambda _: not frozen, params)
  return type(params)(_declared_mask(part, p) for part, p in zip(parts, params))


def _analyse(model: Model) -> dict:
  """The derived fields of `Model` (its docstring), from probes of PROBE_DIM channels."""
  _check_triple(model.prefix, 'prefix')
  _check_triple(model.head, 'head')
  init_fn, _, _ = model.triple
  k_init, x, k_cot = _probe_inputs(jax.random.PRNGKey(0))
  out_shape, params = init_fn(k_init, x.shape)
  # float32 on the host (the same rounding): a cast would be a program per leaf shape.
  params = jax.tree_util.tree_map(lambda p: jnp.asarray(np.asarray(p, np.float32)), params)
  _check_out_dim(model, out_shape)
  cot = jax.random.normal(k_cot, out_shape, jnp.float32)
  feats, jac, grads = _probe(model, params, x, cot)
  _check_token_jacobian(model, jac)

  treedef = jax.tree_util.tree_structure(params)
  declared = [_declared_mask(model.prefix, params[0]), _declared_mask(model.head, params[1])]
  declared = [d and g for d, g in
              zip(jax.tree_util.tree_leaves(declared), _nonzero_leaves(grads))]
  if model.trainable is None:
    mask = list(declared)
  else:
    try:
      mask = _broadcast_mask(model.trainable(params), params)
    except (ValueError, TypeError) as e:
      raise ValueError(f'model {model.name!r}: trainable must be a tree of bools with the '
                       f'structure of the parameters, or a prefix of it ({treedef}); {e}') from None
  n_prefix = len(jax.tree_util.tree_leaves(params[0]))
  if model.prefix_trainable is False:
    mask[:n_prefix] = [False] * n_prefix
  elif model.prefix_trainable and not any(mask[:n_prefix]):
    raise ValueError(f'model {model.name!r}: prefix_trainable=True but the prefix has no '
                     'parameters that train.')
  prefix_trainable = any(mask[:n_prefix])

  head_layers, head_kind = None, 'opaque'
  head_spec = layers.declared(model.head[1])
  if head_spec.get('kind') == 'relu_head' and mask[n_prefix:] == [True, False]:
    head_kind = 'relu_head'
  else:
    head_layers = ntk_closed_form.plan(model.head, feats.shape[-1])
    head_kind = 'opaque' if head_layers is None else 'layers'
  prefix_kind = 'fixed'
  if prefix_trainable:
    specs = [layers.declared(a) for _, a, _ in ntk_closed_form.leaf_layers(model.prefix)]
    qkv = ([s.get('kind') for s in specs] == ['normalize', 'qkv_attention', 'normalize']
           and specs[0]['eps'] == specs[2]['eps'] == 0.0 and all(mask[:n_prefix]))
    prefix_kind = 'qkv' if qkv else 'trainable'
  names = [getattr(a, '__name__', '?') for part in (model.prefix, model.head)
           for _, a, _ in ntk_closed_form.leaf_layers(part)]
  shapes = [tuple(jnp.shape(p)) for p in jax.tree_util.tree_leaves(params)]
  study = {k: head_spec[k] for k in ('W_std', 'init_std')
           if head_spec.get('kind') == 'relu_head' and getattr(model, k) is None}
  return dict(study, mask=tuple(mask), mask_is_declared=mask == declared,
              out_dim=int(out_shape[-1]), prefix_trainable=prefix_trainable,
              prefix_kind=prefix_kind, head_kind=head_kind, head_layers=head_layers,
              signature=repr((names, shapes, tuple(mask))))


def _nonzero_leaves(tree) -> list:
  """`[any(leaf != 0)]` per leaf, read on the host: a jnp test would be two more programs per
  leaf shape."""
  return [bool(np.any(np.asarray(g) != 0)) for g in jax.tree_util.tree_leaves(tree)]


def _probe_inputs(key):
  """`(k_init, x, k_cot)`: the probe's keys for `init_fn` and the cotangent, and its input
  `x (1, PROBE_TOKENS, PROBE_DIM)`, standard normal."""
  k_init, k_x, k_cot = jax.random.split(key, 3)
  return k_init, jax.random.normal(k_x, (1, PROBE_TOKENS, PROBE_DIM), jnp.float32), k_cot


def _probe(model: Model, params, x, cot):
  """`(feats, jac, grads)` of the probe, in one compiled program: `feats = prefix(params[0],
  x)` `(1, T, d')`, `jac = ∂ head(feats[0]) / ∂ feats[0]` `(T, C, T, d')` and `grads =
  ∇_params Σ apply(params, x) ⊙ cot` (the tree of `params`). Op by op, the same numbers
  took about a dozen programs per head width (~0.4 s apiece to compile on a GPU). A model
  whose layers cannot be traced runs op by op (`_probe_eager`), which names what fails."""
  return compiled_or_eager(_probe_program, _probe_eager, model, params, x, cot)


def compiled_or_eager(program, eager, model, *args):
  """`program(model, *args)`, where `program` is `eager` jitted with the model static: one
  compiled program per (model, shapes); or `eager(model, *args)` op by op when tracing fails
  (a user's layer with Python control flow on values), which then runs it or names what
  fails. Either way the same computation: `program` traces `eager` itself."""
  try:
    return program(model, *args)
  except Exception:  # pylint: disable=broad-except
    return eager(model, *args)


def _probe_eager(model: Model, params, x, cot):
  """`_probe`'s numbers op by op; ValueError naming the head when it cannot run on tokens
  alone."""
  feats = model.prefix[1](params[0], x)
  jac = _per_token_jacobian(model, params[1], feats[0])
  grads = jax.grad(lambda p: jnp.sum(model.apply_fn(p, x) * cot))(params)
  return feats, jac, grads


_probe_program = compiles.jit(_probe_eager, static_argnums=0)


def _check_out_dim(model: Model, out_shape) -> None:
  if model.out_dim is not None and out_shape[-1] != model.out_dim:
    raise ValueError(f'model {model.name!r}: out_dim={model.out_dim} but the head has '
                     f'{out_shape[-1]} outputs.')


def _per_token_jacobian(model: Model, head_params, z):
  """`∂ head(z) / ∂ z` `(N, C, N, d)`; ValueError when the head cannot run on tokens alone."""
  try:
    return jax.jacfwd(lambda v: head_apply(model, head_params, v))(z)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'model {model.name!r}: the head cannot be applied to tokens alone, '
                     f'as a per-token head must ({type(e).__name__}: {e}); put '
                     'token-mixing layers in the prefix.') from None


def _check_token_jacobian(model: Model, jac) -> None:
  """ValueError when the head's output at one token depends on another token's input:
  an off-diagonal block of `jac (N, C, N, d)` above 1e-6 of its largest entry."""
  # On the host, in the Jacobian's dtype as jnp would compute it (weak-typed constants): a
  # jnp test would be six more programs per head width.
  jac = np.asarray(jac)
  n, t = jac.shape[0], jac.dtype.type
  off = np.abs(jac) * (1 - np.eye(n))[:, None, :, None]
  if np.any(off > t(1e-6) * (np.max(np.abs(jac)) + t(1e-30))):
    raise ValueError(f'model {model.name!r}: the head mixes tokens (its output at one token '
                     'depends on another); put token-mixing layers in the prefix.')


def build(name: str, width: int, out_dim: int = 1, W_std: float = 1.0,
          init_std: float = DEFAULT_INIT_STD, **options) -> Model:
  """`Model` by name: one of `MODELS`; `options` go to the attention prefix; `init_std`
  is the std of the head's first-layer weights (the analytic NTK does not depend on it).

  Each is `compose(prefix, relu_head(width, out_dim, W_std, init_std))` with the prefix of
  the module docstring. The same arguments return the same `Model` object, so that programs
  compiled with a model as a static argument (training, attacks, kernels) are reused, not
  recompiled.
  """
  _check_width(width)
  return _memoised(_build, name, int(width), int(out_dim), float(W_std), float(init_std),
                   tuple(sorted(options.items())))


def _memoised(fn, *args):
  """`fn(*args)` through its `functools.lru_cache`, or without the memo when an argument
  (an option value) is unhashable."""
  try:
    return fn(*args)
  except TypeError as e:
    if 'unhashable' not in str(e):
      raise
    return fn.__wrapped__(*args)


@functools.lru_cache(maxsize=256)
def _build(name, width, out_dim, W_std, init_std, options) -> Model:
  prefix = _memoised(_study_prefix, name, width if name == 'mlp_attn_qkv' else None, options)
  return Model(name, width, out_dim, W_std, prefix, relu_head(width, out_dim, W_std, init_std),
               options=options, init_std=init_std)


@functools.lru_cache(maxsize=64)
def _study_prefix(name, width, options):
  """The prefix of a study model: one object per (name, options) (and width, for the QKV
  prefix, whose parameters have the width's shapes), so that programs keyed by the prefix
  (the blocked kernels' features) serve every width and init_std."""
  options = dict(options)
  if name == 'relu_mlp':
    if options:
      raise ValueError(f'relu_mlp takes no attention options, got {sorted(options)}.')
    return layers.Normalize()
  if name == 'mlp_attn':
    return attention_prefix(**options)
  if name == 'mlp_attn_qkv':
    return qkv_prefix(width, **options)
  raise ValueError(f'unknown model {name!r}; choose from {MODELS}.')


def load_factory(spec: str) -> Callable:
  """`'package.module:function'` -> that function, imported (ValueError naming `spec` when
  the module or the function cannot be had)."""
  module_name, _, attr = spec.partition(':')
  if not module_name or not attr:
    raise ValueError(f'model {spec!r}: expected a built-in name {MODELS} or module:function.')
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ValueError(f'model {spec!r}: cannot import {module_name!r} ({e}).') from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ValueError(f'model {spec!r}: {module_name} has no function {attr!r}.')
  return fn


def factories(models, model_options: Optional[dict] = None) -> dict:
  """`{name: factory}` with `factory(width, out_dim, **options) -> Model`, from

  - a sequence of names: built-in `MODELS` (their `build` options from `model_options[name]`)
    or `'module:function'` entries (imported; recorded under that string);
  - a mapping `{name: factory or built-in name}`.

  Raises ValueError (one line, before any work) for an unknown name or a bad entry.
  """
  model_options = model_options or {}
  items = (list(models.items()) if isinstance(models, dict)
           else [(m, m) for m in models])
  if not items:
    raise ValueError('no models given.')
  out = {}
  for name, spec in items:
    if isinstance(spec, str) and spec in MODELS:
      out[name] = functools.partial(_builtin, spec, dict(model_options.get(name, {})))
    elif isinstance(spec, str) and ':' in spec:
      out[name] = load_factory(spec)
    elif callable(spec) and not isinstance(spec, str):
      out[name] = spec
    else:
      raise ValueError(f'unknown model {spec!r}; choose from {MODELS} or give '
                       'module:function (a factory(width, out_dim) returning a Model).')
  return out


def _builtin(name, options, width, out_dim, **overrides):
  return build(name, width, out_dim, **dict(options, **overrides))


def instantiate(name: str, factory: Callable, width: int, out_dim: int, **options) -> Model:
  """`factory(width, out_dim, **options)` as a `Model` named `name` with that width
  (a stax triple is composed: `compose(None, triple)` when it acts per token, else
  `compose(triple, None-head)`); ValueError (one line) when it is neither or has another
  number of outputs, or the factory does not take `options`."""
  _check_width(width)
  try:
    model = factory(int(width), int(out_dim), **options)
  except TypeError as e:
    if options and 'argument' in str(e):
      raise ValueError(f'model {name!r}: its factory does not take {sorted(options)} '
                       f'({e}).') from None
    raise
  if isinstance(model, tuple) and len(model) == 3:
    try:
      model = compose(None, model, name=name)
    except ValueError:        # mixes tokens: the whole triple is the prefix
      model = compose(model, stax.Identity(), name=name)
  if not isinstance(model, Model):
    raise ValueError(f'model {name!r}: its factory returned a {type(model).__name__}, not a '
                     'models.Model (use models.compose(prefix, head)).')
  if model.out_dim != out_dim:
    raise ValueError(f'model {name!r}: its factory made {model.out_dim} outputs, the task has '
                     f'{out_dim}.')
  if model.name == name and model.width == width:
    return model
  return dataclasses.replace(model, name=name, width=int(width))


def init_params(model: Model, key, n_features: int, dtype=jnp.float32, init_std=None):
  """Parameters for sequences of `n_features` channels, cast to `dtype`.

  Shapes do not depend on the sequence length. Returns `(prefix_params, head_params)`.
  `init_std` (a number or a traced scalar, with a `unit_init` model): the head's first-layer
  weights are multiplied by it before the cast, as `layers.ScaledDense` does.
  """
  _, params = model.init_fn(key, (1, 1, n_features))
  if init_std is not None:
    prefix, head = params
    (w, b), rest = head[0], list(head[1:])
    params = type(params)([prefix, type(head)([(w * init_std, b)] + rest)])
  return jax.tree_util.tree_map(lambda p: jnp.asarray(p, dtype), params)


def unit_init(model: Model):
  """`(model', init_std)`: for a study model built by `build`, the same model with
  `init_std = 1` and its `init_std`, so that one compiled program serves every init_std
  (`init_params(model', ..., init_std=init_std)` draws the same weights as the model);
  `(model, None)` for any other model."""
  if model.name not in MODELS or model.init_std is None or model.head_kind != 'relu_head':
    return model, None
  args = (model.name, model.width, model.out_dim, model.W_std)
  options = dict(model.options)
  try:
    if model is not build(*args, init_std=model.init_std, **options):
      return model, None
  except (TypeError, ValueError):
    return model, None
  return build(*args, init_std=1.0, **options), model.init_std


def trainable_mask(model: Model, params):
  """Pytree of bools over `params`: True for the leaves that train (`model.mask`: declared
  by the layers or by `compose(..., trainable=...)`, never by a leaf's position)."""
  treedef = jax.tree_util.tree_structure(params)
  if treedef.num_leaves != len(model.mask):
    raise ValueError(f'model {model.name!r} has {len(model.mask)} parameter leaves, the '
                     f'parameters given {treedef.num_leaves}.')
  return jax.tree_util.tree_unflatten(treedef, list(model.mask))


def head_trained(model: Model, head_params) -> Callable:
  """`fn(path) -> (W trained, b trained)` for the head layer at `path` (`ntk_closed_form`)."""
  n_prefix = len(model.mask) - len(jax.tree_util.tree_leaves(head_params))
  mask = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(head_params),
                                      list(model.mask[n_prefix:]))

  def fn(path):
    w, b = ntk_closed_form.get_params(mask, path)
    return bool(w), bool(b)

  return fn


def features(model: Model, params, seq, context=None):
  """Prefix output `(1, N, d')`: the input of the ReLU head."""
  return model.prefix[1](params[0], seq, context=context)


def prefix_features(prefix, prefix_params, x_train, x_eval, dtype):
  """The features `(N, d')` of the sequence `[x_train; x_eval]` in `dtype` under the stax
  triple `prefix` with its parameters (None: drawn from `PRNGKey(0)`; a fixed prefix's
  parameters, if any, do not train), the evaluation rows in their context. One program per
  (prefix, dtype, shapes) with the bits of the op-by-op run (`compiles.op_by_op`; plainly
  jitted, XLA's fused normalisation rounds the features differently in the last bit, and the
  influence's top-τ set follows such bits: docs/method.md §16). The prefix is the static
  argument: the study's models of every width and init_std share one (`build`)."""
  return compiled_or_eager(_prefix_features_program, _prefix_features_eager, prefix,
                           prefix_params, x_train, x_eval, np.dtype(dtype))


def _prefix_features_eager(prefix, prefix_params, x_train, x_eval, dtype):
  """`prefix_features` op by op."""
  x_train = jnp.asarray(x_train, dtype)
  x_eval = None if x_eval is None else jnp.asarray(x_eval, dtype)
  seq, context = layers.as_sequence(x_train, x_eval)
  if prefix_params is None:
    prefix_params = prefix[0](jax.random.PRNGKey(0), seq.shape)[1]
  return prefix[1](prefix_params, seq, context=context)[0]


_prefix_features_program = compiles.op_by_op(_prefix_features_eager, static_argnums=(0, 4))


def head_apply(model: Model, head_params, feats):
  """Head output `(n, C)` on prefix features `(n, d')` (per token). Parameters made for
  sequences `(1, n, d')` may broadcast a leading axis (NT's Dense shapes its bias by the
  input's rank); it is dropped. The rows are not reshaped into a sequence, so that the
  study's head computes exactly what it always has (XLA's float32 products can round
  differently for another operand shape)."""
  out = model.head[1](head_params, feats)
  return out.reshape(out.shape[out.ndim - feats.ndim:]) if out.ndim > feats.ndim else out


def _check_width(width):
  if isinstance(width, bool) or int(width) != width or width < 1:
    raise ValueError(f'width must be a positive integer, got {width!r}.')


__all__ = ['MODELS', 'DEFAULT_INIT_STD', 'Model', 'compose', 'head_trained', 'load_factory',
           'factories', 'instantiate', 'build', 'relu_head', 'attention_prefix', 'qkv_prefix',
           'relu_mlp', 'mlp_attn', 'mlp_attn_qkv', 'init_params', 'unit_init',
           'trainable_mask',
           'features', 'head_apply']
