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
"""
import collections
import contextlib
import dataclasses
from typing import Counter, List

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
    _ACTIVE.remove(c)


__all__ = ['Count', 'count', 'BACKEND_COMPILE', 'CACHE_HIT']
