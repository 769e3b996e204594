"""The one module that imports neural-tangents.

neural-tangents 0.6.5 (the newest release, unmaintained) is used through the names below
only; replacing it is a one-file change. Its STRUCTURED_DERIVATIVES / AUTO empirical-NTK
modes crash on JAX >= 0.4.26, so only JACOBIAN_CONTRACTION and NTK_VECTOR_PRODUCTS are
exposed.

Running it on current JAX. NT 0.6.5 was written against JAX <= 0.5 and, as released,
imports only there. Everything needed to run it from JAX 0.5.3 to the newest lives in this
module and nowhere else in the package (BUILD.md, "Supported versions, and why"):

1. Names NT imports that JAX has since removed, or serves only through a deprecation hook
   that warns on access, are lent to JAX while NT is imported and taken back right after
   (`_names_lent_for_import`). NT binds them at import time, so JAX is left exactly as it
   was: no other library sees a name JAX does not have.
   - `jax.core.{Jaxpr, JaxprEqn, Literal, Var, Primitive}`: warn on access in 0.5.3,
     removed in 0.6; the same classes live in `jax.extend.core`.
   - `jax.util.safe_map` / `safe_zip`: warn in 0.6, removed in 0.7; the module `jax.util`
     is gone from 0.8. NT uses them as a `map` / `zip` that check lengths.
   - `jax.interpreters.ad.zeros_like_p`: warns from 0.7.1, removed in 0.9. NT's `rules.py`
     only uses it as the dictionary key of a STRUCTURED_DERIVATIVES rule; JAX has not
     emitted that primitive since 0.4.24, so a fresh primitive that no jaxpr contains is an
     exact stand-in.
   Each is a no-op where JAX has the name as a plain attribute.
2. `neural_tangents.experimental` (`empirical_ntk_fn_tf`, the only part of NT that imports
   tensorflow, tf2jax and jax2tf) is not imported with NT: a placeholder stands in for it
   and imports the real subpackage only when one of its functions is asked for. So
   `import neural_tangents` does not import tensorflow (about 4 s per process).
3. NTK_VECTOR_PRODUCTS calls `jnp.size` on the `jax.ShapeDtypeStruct`s of `eval_shape`,
   which JAX deprecates (0.5.3 to 0.12 warn that it will become an error). Where JAX warns
   about or rejects that, NT's two helpers that do it are replaced by equivalents reading
   `.shape` (`_patch_shape_helpers`); they return the same arrays.
"""
import contextlib
import importlib
import importlib.util
import math
import sys
import types
import warnings

import jax
import jax.core
import jax.extend.core
import jax.interpreters.ad
import jax.numpy as jnp

# Names of `jax.core` that NT imports and JAX moved to `jax.extend.core`.
_CORE_NAMES = ('Jaxpr', 'JaxprEqn', 'Literal', 'Var', 'Primitive')
# What `neural_tangents.experimental` exports; only these load the real subpackage.
_EXPERIMENTAL_NAMES = ('empirical_ntk_fn_tf', 'get_apply_fn_and_params', 'empirical_tf')


def _has_plain(module, name: str) -> bool:
  """Whether `module.name` exists without going through a (warning) `__getattr__` hook."""
  return name in vars(module)


def _safe_map(f, *args):
  """`map` to a list, requiring equally long arguments (what `jax.util.safe_map` did)."""
  args = [list(a) for a in args]
  if any(len(a) != len(args[0]) for a in args[1:]):
    raise ValueError(f'safe_map: argument lengths differ: {[len(a) for a in args]}')
  return list(map(f, *args))


def _safe_zip(*args):
  """`zip` to a list, requiring equally long arguments (what `jax.util.safe_zip` did)."""
  args = [list(a) for a in args]
  if any(len(a) != len(args[0]) for a in args[1:]):
    raise ValueError(f'safe_zip: argument lengths differ: {[len(a) for a in args]}')
  return list(zip(*args))


@contextlib.contextmanager
def _names_lent_for_import():
  """Lends JAX the names NT 0.6.5 imports (see the module docstring, 1.), then takes
  back exactly what was lent."""
  lent = []  # (module, name) pairs to delete afterwards
  added_modules = []

  def lend(module, name, value):
    if not _has_plain(module, name):
      setattr(module, name, value)
      lent.append((module, name))

  try:
    for name in _CORE_NAMES:
      lend(jax.core, name, getattr(jax.extend.core, name))
    if importlib.util.find_spec('jax.util') is not None:
      util = importlib.import_module('jax.util')
    else:
      util = types.ModuleType('jax.util', 'Stand-in lent to neural-tangents by ntk_attention.')
      sys.modules['jax.util'] = util
      added_modules.append('jax.util')
    lend(util, 'safe_map', _safe_map)
    lend(util, 'safe_zip', _safe_zip)
    lend(jax.interpreters.ad, 'zeros_like_p', jax.extend.core.Primitive('zeros_like'))
    yield
  finally:
    for module, name in lent:
      delattr(module, name)
    for name in added_modules:
      del sys.modules[name]


class _LazyExperimental(types.ModuleType):
  """Placeholder for `neural_tangents.experimental` (see the module docstring, 2.)."""

  def __getattr__(self, name):
    if name not in _EXPERIMENTAL_NAMES:
      raise AttributeError(f'module {self.__name__!r} has no attribute {name!r}')
    # Replace the placeholder by the real subpackage (it needs tensorflow and tf2jax).
    if sys.modules.get(self.__name__) is self:
      del sys.modules[self.__name__]
    try:
      real = importlib.import_module(self.__name__)
    except ImportError as e:
      sys.modules[self.__name__] = self
      raise AttributeError(f'{self.__name__}.{name} needs tensorflow and tf2jax '
                           f'(pip install tensorflow tf2jax): {e}') from e
    return getattr(real, name)


def _import_neural_tangents():
  if 'neural_tangents' in sys.modules:
    return sys.modules['neural_tangents']
  name = 'neural_tangents.experimental'
  placeholder = _LazyExperimental(name, 'Loaded on first use; needs tensorflow and tf2jax.')
  sys.modules.setdefault(name, placeholder)
  try:
    with _names_lent_for_import():
      return importlib.import_module('neural_tangents')
  except BaseException:
    if sys.modules.get(name) is placeholder:
      del sys.modules[name]
    raise


def _jnp_rejects_shape_dtype_struct() -> bool:
  """Whether `jnp.shape` / `jnp.size` warn about or reject a `jax.ShapeDtypeStruct`."""
  s = jax.ShapeDtypeStruct((2, 3), jnp.float32)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    try:
      return jnp.shape(s) != (2, 3) or jnp.size(s) != 6
    except Exception:  # pylint: disable=broad-except
      return True


def _patch_shape_helpers(empirical):
  """NT's `_std_basis` and `_unravel_array_into_pytree` (NTK_VECTOR_PRODUCTS), reading
  the shapes of arrays and `ShapeDtypeStruct`s alike from `.shape`."""

  def shape(leaf):
    return tuple(leaf.shape) if hasattr(leaf, 'shape') else jnp.shape(leaf)

  def unravel_array_into_pytree(pytree, axis, arr):
    leaves, treedef = jax.tree_util.tree_flatten(pytree)
    if arr.ndim > 0:
      axis %= arr.ndim
    shapes = [arr.shape[:axis] + shape(leaf) + arr.shape[axis + 1:] for leaf in leaves]
    sizes = [math.prod(shape(leaf)) for leaf in leaves]
    splits = [sum(sizes[:i + 1]) for i in range(len(sizes) - 1)]
    parts = jnp.split(arr, splits, axis)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.reshape(p, s) for p, s in zip(parts, shapes)])

  def std_basis(pytree):
    leaves = jax.tree_util.tree_leaves(pytree)
    n = sum(math.prod(shape(leaf)) for leaf in leaves)
    dtype = jax.dtypes.result_type(*[leaf.dtype if hasattr(leaf, 'dtype') else leaf
                                     for leaf in leaves])
    return unravel_array_into_pytree(pytree, 1, jnp.eye(n, dtype=dtype))

  # pylint: disable=protected-access
  empirical._unravel_array_into_pytree = unravel_array_into_pytree
  empirical._std_basis = std_basis


nt = _import_neural_tangents()

from neural_tangents import stax  # noqa: E402
from neural_tangents._src import empirical as _empirical  # noqa: E402
from neural_tangents._src.stax.requirements import Bool  # noqa: E402
from neural_tangents._src.stax.requirements import Diagonal  # noqa: E402
from neural_tangents._src.stax.requirements import layer  # noqa: E402
from neural_tangents._src.stax.requirements import requires  # noqa: E402
from neural_tangents._src.utils.kernel import Kernel  # noqa: E402

if _jnp_rejects_shape_dtype_struct():
  _patch_shape_helpers(_empirical)

predict = nt.predict
empirical_ntk_fn_generic = nt.empirical_ntk_fn
monte_carlo_kernel_fn = nt.monte_carlo_kernel_fn

JACOBIAN_CONTRACTION = nt.NtkImplementation.JACOBIAN_CONTRACTION
NTK_VECTOR_PRODUCTS = nt.NtkImplementation.NTK_VECTOR_PRODUCTS
IMPLEMENTATIONS = {
    'jacobian_contraction': JACOBIAN_CONTRACTION,
    'ntk_vector_products': NTK_VECTOR_PRODUCTS,
}

__all__ = [
    'Bool', 'Diagonal', 'Kernel', 'layer', 'requires', 'stax', 'predict',
    'empirical_ntk_fn_generic', 'monte_carlo_kernel_fn', 'JACOBIAN_CONTRACTION',
    'NTK_VECTOR_PRODUCTS', 'IMPLEMENTATIONS', 'nt_version', 'serial_parts', 'dense_scales',
]


def nt_version() -> str:
  return getattr(nt, '__version__', 'unknown')


def _closure_value(fn, name: str):
  """The free variable `name` of `fn` (after unwrapping `__wrapped__`), or None."""
  while hasattr(fn, '__wrapped__'):
    fn = fn.__wrapped__
  code, cells = getattr(fn, '__code__', None), getattr(fn, '__closure__', None) or ()
  if code is None or name not in code.co_freevars:
    return None
  try:
    return cells[code.co_freevars.index(name)].cell_contents
  except (IndexError, ValueError):
    return None


def serial_parts(init_fn, apply_fn):
  """The `(init_fn, apply_fn)` pairs of the layers of a `stax.serial(...)`, or None.

  NT's `serial` builds its `init_fn` / `apply_fn` with `jax.example_libraries.stax.serial`,
  which keeps the layers' functions as the free variables `init_funs` / `apply_funs`; NT
  names both functions 'serial'. Anything else (another combinator, another NT or JAX
  version) gives None, and callers then treat the layer as one opaque function.
  """
  if getattr(apply_fn, '__name__', None) != 'serial':
    return None
  inits, applies = _closure_value(init_fn, 'init_funs'), _closure_value(apply_fn, 'apply_funs')
  if (not isinstance(inits, tuple) or not isinstance(applies, tuple)
      or len(inits) != len(applies) or not all(map(callable, inits + applies))):
    return None
  return list(zip(inits, applies))


def dense_scales(apply_fn, n_in: int):
  """`(a, c)` of an NT `Dense` layer, `h = a · x W + c · b`, for `n_in` input channels, or
  None when `apply_fn` is not NT's Dense (read from its free variables; callers verify the
  identity on a probe).

  NTK parameterisation: `a = W_std/√n_in`, `c = b_std`; standard: `a = 1/√s[0]`, `c = 1`.
  """
  inner = apply_fn
  while _closure_value(inner, 'apply_fn') is not None:    # NT's masking wrapper
    inner = _closure_value(inner, 'apply_fn')
  values = {n: _closure_value(inner, n) for n in ('W_std', 'b_std', 'parameterization', 's')}
  if values['parameterization'] == 'ntk' and values['W_std'] is not None:
    return values['W_std'] / n_in ** 0.5, values['b_std']
  if values['parameterization'] == 'standard' and values['s'] is not None:
    return 1.0 / values['s'][0] ** 0.5, (None if values['b_std'] is None else 1.0)
  return None
