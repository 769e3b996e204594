"""How many programs XLA compiles: the measure of "one program per cell shape".

JAX reports every program it needs (`/jax/core/compile/backend_compile_duration`, with
the function's name: compiled by XLA or loaded from the persistent compilation cache) and
every load from that cache (`/jax/compilation_cache/cache_hits`) through `jax.monitoring`.
`count()` adds them up while it is active:

  with compiles.count() as c:
    training.train(...)
  c.compiled, c.cached, c.programs, c.seconds, c.by_name

A program found in JAX's in-memory caches (the same jitted function called again with the
same static arguments and shapes) is neither: it costs nothing. One set of listeners is
registered once per process; counters nest.

`jit` is `jax.jit` whose programs XLA:CPU compiles at LLVM optimisation level 1 instead of
XLA's default 3: less compile time, the same bits for the programs that use it (every number
of the quick preset and of a toy run of it bit-equal, docs/method.md §16).
`fast_cpu_compile()` makes each program about a third cheaper again but changes float
rounding: the tests call it before JAX starts its backend; the
scripts do not (docs/method.md §16 measures why).
"""
import collections
import contextlib
import dataclasses
import functools
import importlib.metadata
import os
import re
import sys
from typing import Counter, List, Optional

BACKEND_COMPILE = '/jax/core/compile/backend_compile_duration'
CACHE_HIT = '/jax/compilation_cache/cache_hits'


@dataclasses.dataclass
class Count:
  """`programs`: programs the work needed that were not in memory (taking `seconds` to
  compile or load in all), `cached`: those loaded from the persistent cache, `by_name`:
  programs per function name (`jit(f)`; an eager operation is `jit(<primitive>)`)."""
  programs: int = 0
  cached: int = 0
  seconds: float = 0.0
  by_name: Counter = dataclasses.field(default_factory=collections.Counter)

  @property
  def compiled(self) -> int:
    """Programs XLA compiled: `programs - cached`."""
    return self.programs - self.cached


_ACTIVE: List[Count] = []
_REGISTERED = [False]


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event == CACHE_HIT:
    for c in _ACTIVE:
      c.cached += 1


def _on_duration(event: str, seconds: float, **kwargs) -> None:
  if event == BACKEND_COMPILE:
    name = str(kwargs.get('fun_name', '?'))
    for c in _ACTIVE:
      c.programs += 1
      c.seconds += seconds
      c.by_name[name] += 1


def _register() -> None:
  if not _REGISTERED[0]:
    import jax
    jax.monitoring.register_event_listener(_on_event)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    _REGISTERED[0] = True


@contextlib.contextmanager
def count():
  """A `Count` of the programs compiled or loaded while the block runs."""
  _register()
  c = Count()
  _ACTIVE.append(c)
  try:
    yield c
  finally:
    # By identity: nested counters that saw the same programs are equal dataclasses, and
    # list.remove would take the outer one.
    del _ACTIVE[next(i for i, a in enumerate(_ACTIVE) if a is c)]


# LLVM -O1 leaves out -O3's loop optimisations and vectorisers. XLA:CPU's large dots are
# library calls and XLA vectorises its reductions itself, so the programs run as fast.
# Measured, the stages that use it keep their bits (docs/method.md §16); -O0 does not, and
# neither does the training chunk at small widths, which keeps `jax.jit`.
QUICK_COMPILE_FLAG = 'xla_backend_optimization_level'
QUICK_COMPILE = {QUICK_COMPILE_FLAG: 1}
# jaxlib releases measured to give the default level's bits at level 1 (tests/test_compiles.py):
# the oldest and newest. With jaxlib 0.5.3 the training chunk rounded differently at level 1.
QUICK_COMPILE_JAXLIB = ((0, 10, 2), (0, 10, 2))
# False: `jit` compiles as `jax.jit` does (the benchmarks' previous paths).
quick_compile_enabled = [True]


def quick_compile() -> bool:
  """Whether `jit` passes `QUICK_COMPILE`: on the CPU backend only (GPU kernels keep
  XLA's level), with a jaxlib in `QUICK_COMPILE_JAXLIB`, unless XLA_FLAGS names the level
  (the user's, or the tests' 0, stands)."""
  if (not quick_compile_enabled[0] or QUICK_COMPILE_FLAG in os.environ.get('XLA_FLAGS', '')
      or not jaxlib_within(QUICK_COMPILE_JAXLIB)):
    return False
  import jax
  return jax.default_backend() == 'cpu'


def jit(fun=None, **kwargs):
  """`jax.jit(fun, **kwargs)`, compiled at LLVM level 1 on a CPU (`quick_compile`); usable
  as `@jit`, `jit(f, static_argnums=...)` and `functools.partial(jit, ...)`. `.lower` and
  the wrapped `jax.jit` objects (`.plain`, `.quick`) are kept for callers that need them."""
  if fun is None:
    return functools.partial(jit, **kwargs)
  import jax
  plain = jax.jit(fun, **kwargs)
  quick = jax.jit(fun, compiler_options=dict(QUICK_COMPILE), **kwargs)

  def pick(args, kw):   # compiler options only on a top-level call (JAX refuses them nested)
    return quick if quick_compile() and _top_level(args, kw) else plain

  @functools.wraps(fun)
  def call(*args, **kw):
    return pick(args, kw)(*args, **kw)

  call.lower = lambda *args, **kw: pick(args, kw).lower(*args, **kw)
  call.plain, call.quick = plain, quick
  return call


# Primitives whose inner operations run one at a time when called outside a trace: they are
# evaluated operation by operation inside too. Any other call (`pjit`) is bound as it is.
_OP_BY_OP_CALLS = ('custom_jvp_call', 'custom_vjp_call', 'custom_vjp_call_jaxpr')


def _eval_op_by_op(jaxpr, consts, args):
  """Evaluates `jaxpr` (its `consts`, its flat `args`) with every operation's outputs behind
  `lax.optimization_barrier`, so that XLA keeps them apart (e.g. does not rewrite
  `a / sqrt(b)` into `a * rsqrt(b)`); a custom-JVP/VJP call is evaluated the same way inside,
  as it runs op by op. Returns the flat outputs. With XLA's fusion pass off (`op_by_op`)."""
  import jax
  from jax.extend import core as jcore
  env = {}
  read = lambda v: v.val if isinstance(v, jcore.Literal) else env[v]
  for v, x in zip(jaxpr.constvars, consts):
    env[v] = x
  for v, x in zip(jaxpr.invars, args):
    env[v] = x
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    inner = eqn.params.get('call_jaxpr', eqn.params.get('fun_jaxpr'))
    if eqn.primitive.name in _OP_BY_OP_CALLS and inner is not None:
      closed = getattr(inner, 'jaxpr', inner)
      outs = _eval_op_by_op(closed, getattr(inner, 'consts', ()), invals)
    else:
      bind = eqn.primitive.get_bind_params(eqn.params)   # JAX < 0.7: (subfuns, params)
      subfuns, params = bind if isinstance(bind, tuple) else ((), bind)
      outs = eqn.primitive.bind(*subfuns, *invals, **params)
      outs = list(outs) if eqn.primitive.multiple_results else [outs]
      outs = list(jax.lax.optimization_barrier(outs))
    for v, x in zip(eqn.outvars, outs):
      env[v] = x
  return [read(v) for v in jaxpr.outvars]


# XLA:CPU contracts a product and a sum in one fused loop into a fused multiply-add
# (`AllowFPOpFusion::Fast`, always): with its fusion pass off, each operation is its own loop.
# Its fusion emitters stay on whatever XLA_FLAGS say: with the elemental emitters and the
# fusion pass off, jaxlib 0.10.2 computed an analytic 2L-ReLU NTK wrong by 0.44 (measured).
OP_BY_OP = {'xla_disable_hlo_passes': 'fusion', 'xla_cpu_use_fusion_emitters': True}
# Where `op_by_op` was measured to give the op-by-op bits: these jaxlib releases (0.5.3
# refuses a list-valued compiler option), with XLA_FLAGS naming none of these (the tests'
# level 0 and elemental emitters change which rewrites XLA makes of a lone operation).
OP_BY_OP_JAXLIB = ((0, 10, 2), (0, 10, 2))
OP_BY_OP_UNMEASURED_FLAGS = (QUICK_COMPILE_FLAG, 'xla_cpu_use_fusion_emitters',
                             'xla_disable_hlo_passes')
# 'compile' in this environment variable: `op_by_op` compiles under any XLA_FLAGS (XLA's
# rounding there, not op by op's bits). The tests set it (tests/conftest.py): their stages
# then take one program each, not one per operation and shape.
OP_BY_OP_ENV = 'NTK_ATTENTION_OP_BY_OP'
# False: `op_by_op` functions run op by op, as they did (the benchmarks' previous paths).
op_by_op_enabled = [True]


def op_by_op(fun=None, *, static_argnums=()):
  """`fun` (outputs: a pytree of arrays) as one compiled program per (static arguments,
  shapes) with the bits of running it op by op, which compiles a program per operation and
  shape. Each operation's outputs pass an optimisation barrier (`_eval_op_by_op`) and XLA's
  fusion pass is off (`OP_BY_OP`), so that no pair of operations is rewritten or fused (a
  fused `a·b − c` is a fused multiply-add). This is measured, not proven: bit-equal on the
  library's stages that use it (tests/test_compiles.py, the quick preset; docs/method.md
  §16) where the scripts run (`op_by_op_compiles`: a CPU, jaxlib in `OP_BY_OP_JAXLIB`, XLA's
  default flags). Elsewhere on a CPU `fun` runs op by op; called inside another trace it is
  traced inline; on a GPU or TPU it is one `jit` program (XLA's bits: fused)."""
  if fun is None:
    return functools.partial(op_by_op, static_argnums=static_argnums)
  import jax
  static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

  @functools.wraps(fun)
  def body(*args):
    dynamic = [i for i in range(len(args)) if i not in static]

    def flat_fun(*dyn):
      full = list(args)
      for i, a in zip(dynamic, dyn):
        full[i] = a
      return fun(*full)

    dyn = [args[i] for i in dynamic]
    closed, shape = jax.make_jaxpr(flat_fun, return_shape=True)(*dyn)
    outs = _eval_op_by_op(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(dyn))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)

  separate = jax.jit(body, static_argnums=static, compiler_options=dict(OP_BY_OP))
  fused = jit(fun, static_argnums=static)

  @functools.wraps(fun)
  def call(*args):
    if not _top_level(args, {}):
      return fun(*args)
    if jax.default_backend() != 'cpu':
      return fused(*args)
    return separate(*args) if op_by_op_compiles() else fun(*args)

  return call


def op_by_op_compiles() -> bool:
  """Whether `op_by_op` functions called at the top level on a CPU compile one program
  each (jaxlib in `OP_BY_OP_JAXLIB`, XLA_FLAGS naming none of `OP_BY_OP_UNMEASURED_FLAGS`
  or `OP_BY_OP_ENV` set to 'compile', `op_by_op_enabled`) rather than run op by op."""
  flags = os.environ.get('XLA_FLAGS', '')
  anyway = os.environ.get(OP_BY_OP_ENV, '') == 'compile'
  return (op_by_op_enabled[0] and jaxlib_within(OP_BY_OP_JAXLIB)
          and (anyway or not any(name in flags for name in OP_BY_OP_UNMEASURED_FLAGS)))


def _top_level(args, kw) -> bool:
  """Whether a call is outside any JAX trace: JAX's own test where it has one (0.5.3 to
  0.10.2 at least), otherwise no tracer among the arguments."""
  import jax
  from jax._src import core
  clean = getattr(core, 'trace_state_clean', None)
  if clean is not None:
    return clean()
  return not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves((args, kw)))


# XLA:CPU emits fused loops with its MLIR fusion emitters by default; this flag keeps its
# LLVM-IR elemental emitters, which compile the same HLO about a third faster.
FUSION_EMITTERS_OFF = '--xla_cpu_use_fusion_emitters=false'
# jaxlib releases tested to know the flag (XLA aborts on an unknown one, and XLA is retiring
# the elemental emitters, openxla/xla#48001): the oldest supported and the newest tested.
FUSION_EMITTERS_FLAG_JAXLIB = ((0, 5, 3), (0, 10, 2))


def _release(version: str) -> tuple:
  return tuple(int(p) for p in re.findall(r'\d+', version)[:3])


@functools.lru_cache(maxsize=1)   # `quick_compile` asks on every call of a `jit` function
def _jaxlib_release() -> Optional[tuple]:
  """jaxlib's (major, minor, patch), read without importing it; None if not installed."""
  try:
    return _release(importlib.metadata.version('jaxlib'))
  except importlib.metadata.PackageNotFoundError:
    return None


def jaxlib_within(releases) -> bool:
  """Whether the installed jaxlib is within `releases = (oldest, newest)`, both included
  (False when jaxlib is not installed)."""
  release, (low, high) = _jaxlib_release(), releases
  return release is not None and low <= release <= high


def _backend_started() -> bool:
  """Whether JAX has created a backend in this process (then XLA_FLAGS was already read)."""
  bridge = sys.modules.get('jax._src.xla_bridge')
  started = getattr(bridge, 'backends_are_initialized', None)
  return bool(started and started())


def fast_cpu_compile(environ: Optional[dict] = None) -> bool:
  """Adds `FUSION_EMITTERS_OFF` to `XLA_FLAGS` in `environ` (default `os.environ`, which
  processes started later inherit) and returns True, or changes nothing and returns False
  when XLA would not see it or might not know it: the flags already name
  `xla_cpu_use_fusion_emitters` (the user's choice stands), jaxlib is outside
  `FUSION_EMITTERS_FLAG_JAXLIB`, or JAX's backend has already started (XLA reads XLA_FLAGS
  once, when it starts). Call it before the first computation.

  Measured (docs/method.md §16, JAX 0.10.2, 2 CPU cores): 560 small eager programs compile in
  24.0 s → 15.9 s, 20 jitted MLP gradients in 4.1 s → 3.2 s. The HLO and its operation order
  are XLA's in both; only the machine code of fused loops differs, so results agree to float
  rounding (tests/test_compiles.py), which chaotic steps can amplify: the quick preset's flip
  rates moved by up to 3.7 points (docs/method.md §16). GPU and TPU backends ignore the flag."""
  environ = os.environ if environ is None else environ
  flags = environ.get('XLA_FLAGS', '')
  if ('xla_cpu_use_fusion_emitters' in flags or not jaxlib_within(FUSION_EMITTERS_FLAG_JAXLIB)
      or _backend_started()):
    return False
  environ['XLA_FLAGS'] = f'{flags} {FUSION_EMITTERS_OFF}'.strip()
  return True


__all__ = ['Count', 'count', 'BACKEND_COMPILE', 'CACHE_HIT', 'QUICK_COMPILE', 'quick_compile',
           'jit', 'op_by_op', 'op_by_op_compiles', 'jaxlib_within', 'FUSION_EMITTERS_OFF',
           'fast_cpu_compile']
