"""Neural-tangents signatures for attention across samples.

NT's functions take i.i.d. samples: `kernel_fn(x1, x2, get)` is an `(n1, n2)` block and
`apply_fn(params, x)` maps each row alone. Across samples, a point's features depend on the
set it attends to, so these wrappers take plain `(n, d)` sample arrays and read the answer
off one sequence (docs/method.md §2):

  x_context=None (default):  `fn(x1, x2)` lays out `[x2; x1]` with `x2` (the training set)
      as context and returns the `x1 × x2` block; `fn(x1, None)` is `x1` attending to itself.
  x_context=X (bound):       `fn(x1, x2)` lays out `[X; x1; x2]` with `X` as context and
      returns the `x1 × x2` block; `fn(x1, None)` the `x1 × x1` block.

The first matches `nt.predict.gradient_descent_mse_ensemble(fn, x_train, y_train)` and its
`predict_fn(t, x_test)`: NT calls `fn(x_train, None)` and `fn(x_test, x_train)`. NT calls
`fn(x_test, None, 'nngp')` for `compute_cov=True` and `nt.batch` cuts `x2` into pieces;
both need the context bound (`x_context=x_train`), since only then is every block the
joint sequence's block. Blocks are exact slices of the joint kernel, so an evaluation point
never changes a training point's features (evaluation tokens attend only to the context).

Misuse raises instead of returning wrong numbers. `nt.batch` on an unbound kernel wrapper
would make each piece of `x2` the context (wrong kernels). No call can tell a piece from a
whole `x2` (NT calls the function under `jit` on `(b, d)` blocks, shapes a user may pass
too), so the refusal is at `nt.batch(fn, ...)` itself: NT 0.6.5's `batch` first reads
`getattr(fn, 'input_req', {}).get('use_dropout', False)`, and an unbound wrapper's
`input_req` raises there (`_BatchNeedsContext`; `jax.jit` copies the attribute, so
`nt.batch(jax.jit(fn))` raises too). `nt.predict` and the calls themselves never read it.
Non-finite concrete inputs and a `get` other than `'nngp'`/`'ntk'` raise ValueError.
"""
import jax
import jax.numpy as jnp

from ntk_attention import kernels
from ntk_attention import layers


def _layout(x1, x2, x_context):
  """`(x_train, x_eval, rows, cols)`: the sequence `[x_train; x_eval]` whose `x1 × x2`
  block is `[rows, cols]` (slices), with `x_train` the context."""
  x1 = jnp.asarray(x1)
  n1 = x1.shape[0]
  if x_context is None:
    if x2 is None:
      return x1, None, slice(0, n1), slice(0, n1)
    n2 = jnp.shape(x2)[0]
    return x2, x1, slice(n2, n2 + n1), slice(0, n2)
  n_c = jnp.shape(x_context)[0]
  rows = slice(n_c, n_c + n1)
  if x2 is None:
    return x_context, x1, rows, rows
  x2 = jnp.asarray(x2, x1.dtype)
  return (x_context, jnp.concatenate([x1, x2]), rows,
          slice(n_c + n1, n_c + n1 + x2.shape[0]))


class _BatchNeedsContext:
  """The `input_req` of an unbound wrapper: any read (NT's `nt.batch` calls
  `.get('use_dropout', False)` on it) raises a one-line ValueError saying to bind
  `x_context`. The bound wrappers have no `input_req`, so `nt.batch` takes them as is."""

  def __init__(self, factory, fn_arg):
    self.message = (f'nt.batch cuts x2 into pieces, and an unbound {factory} would take each '
                    f'piece as the context (wrong kernels): bind it, na.{factory}({fn_arg}, '
                    'x_context=x_train).')

  def get(self, *args, **kwargs):
    raise ValueError(self.message)

  __getitem__ = get


def _check_finite_inputs(**arrays):
  """ValueError (one line) for NaN/inf in a concrete input; tracers (under `jit`, e.g.
  inside `nt.batch`) and None pass."""
  for name, x in arrays.items():
    if x is None or isinstance(x, jax.core.Tracer):
      continue
    if not bool(jnp.all(jnp.isfinite(jnp.asarray(x)))):
      raise ValueError(f'{name} has non-finite entries (NaN or inf): the kernel would be NaN.')


def _no_context(kwargs):
  if 'context' in kwargs:
    raise ValueError('transductive functions build the context themselves: pass the '
                     'training set as x2 (or x_context=...), not context=.')


def transductive_kernel_fn(kernel_fn, x_context=None):
  """NT's `kernel_fn(x1, x2=None, get=None, *args, **kwargs)` on `(n, d)` samples.

  `kernel_fn`: a stax `kernel_fn` (or triple, or `models.Model`), or any function with its
  signature over sequences, e.g. `nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, n)` or
  `nt.empirical_kernel_fn(apply_fn)` (then `params` is the 4th argument). It is called
  once on the joint sequence with `context=(c, c)`; see the module docstring for the
  layout. Returns `(n1, n2)` arrays: one for a string `get`, a namedtuple for a tuple
  `get` and `KernelPair(nngp, ntk)` for `get=None`.

  Raises ValueError (one line): `nt.batch` on the unbound form (`x_context=None`; NT reads
  its `input_req`, see the module docstring), a `get` other than None, `'nngp'`, `'ntk'` or
  a tuple of them, and NaN/inf in `x_context` (here) or in concrete `x1`, `x2` (per call).
  """
  fn = kernels.resolve(kernel_fn, 'kernel_fn')
  _check_finite_inputs(x_context=x_context)

  def wrapped(x1, x2=None, get=None, *args, **kwargs):
    _no_context(kwargs)
    kernels._check_get(get)
    _check_finite_inputs(x1=x1, x2=x2)
    x_train, x_eval, rows, cols = _layout(x1, x2, x_context)
    seq, context = layers.as_sequence(x_train, x_eval)
    k = fn(seq, None, get, *args, context=(context, context), **kwargs)
    return kernels.token_block(k, rows, cols)

  if x_context is None:
    wrapped.input_req = _BatchNeedsContext('transductive_kernel_fn', 'kernel_fn')
  return wrapped


def transductive_empirical_ntk_fn(apply_fn, trace_axes=(-1,), method=None, x_context=None):
  """NT's `empirical_ntk_fn(...)(x1, x2, params)` on `(n, d)` samples.

  `apply_fn`: an `apply_fn`, a stax triple or a `models.Model`. `method=None` uses the
  closed form `kernels.closed_form_ntk` where the composition allows it (a `Model` with a
  parameter-free prefix, outputs traced) and NT's Jacobian contraction otherwise; or one
  of `kernels.METHODS`. Returns `(n1, n2)` (`(n1, n2, C, C)` for `trace_axes=()`).

  Like `transductive_kernel_fn`, `nt.batch` needs the bound form (`x_context=x_train`) and
  NaN/inf in concrete inputs raise ValueError.
  """
  if method is not None and method not in kernels.METHODS:
    raise ValueError(f'method must be one of {kernels.METHODS}, got {method!r}.')
  _check_finite_inputs(x_context=x_context)

  def wrapped(x1, x2, params):
    _check_finite_inputs(x1=x1, x2=x2)
    x_train, x_eval, rows, cols = _layout(x1, x2, x_context)
    k = kernels.empirical_ntk(apply_fn, params, x_train, x_eval, method, trace_axes)
    return k[rows][:, cols]

  if x_context is None:
    wrapped.input_req = _BatchNeedsContext('transductive_empirical_ntk_fn', 'apply_fn')
  return wrapped


def transductive_apply_fn(apply_fn, x_context=None):
  """`f(params, x1, x2=None, **kwargs) -> (n1, ...)`: the outputs at `x1` when the network
  attends to `x2` (the training set; `None`: `x1` itself, or the bound `x_context`).

  `apply_fn`: an `apply_fn`, a stax triple or a `models.Model`.
  """
  fn = kernels.resolve(apply_fn, 'apply_fn')

  def wrapped(params, x1, x2=None, **kwargs):
    _no_context(kwargs)
    if x_context is not None and x2 is not None:
      raise ValueError('this apply_fn has its context bound (x_context); call it as f(params, x1).')
    context_x = x2 if x_context is None else x_context
    if context_x is None:
      return fn(params, jnp.asarray(x1)[None], **kwargs)[0]
    seq, context = layers.as_sequence(context_x, x1)
    return fn(params, seq, context=context, **kwargs)[0, jnp.shape(context_x)[0]:]

  return wrapped


__all__ = ['transductive_kernel_fn', 'transductive_empirical_ntk_fn', 'transductive_apply_fn']
