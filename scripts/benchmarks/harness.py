"""What every benchmark entry shares: its arguments, the timing of a call, and a result row.

Timing: a jitted function is lowered and compiled ahead of time (`compile_s`), called once
to warm up, then called `Args.repeats` times; the row reports the median, each call wrapped
in `jax.block_until_ready`. A function that is not a `jax.jit` object (numpy, or a public
function that jits inside) has its first call as the warm-up, and that call's overhead over
the median is reported as `compile_s` when it compiles. When the warm-up call shows that the
repeats would overrun `Args.max_case_s`, fewer are timed, never fewer than one (the row's
`timed_calls` says how many, baseline/new).
"""
import dataclasses
import statistics
import time
from typing import Any, List, Optional

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Args:
  """What an entry may read; built from scripts/benchmark.py's flags (tests may build it
  directly)."""
  quick: bool = False
  repeats: int = 3
  max_case_s: float = 300.0
  seed: int = 0
  ntk_out_dim: int = 1
  ntk_models: tuple = ('relu_mlp', 'mlp_attn', 'mlp_attn_qkv')
  ntk_generic_max_n: int = 0
  ntk_max_memory_gb: float = 0.0
  ntk_head_max_memory_gb: float = 4.0
  startup_shadow: str = ''


@dataclasses.dataclass
class Timing:
  """`median_s` of the timed calls, `compile_s` (None: nothing compiled), the last result."""
  median_s: float
  compile_s: Optional[float]
  times: List[float]
  result: Any


def timed(call, args):
  """(seconds, result) of one call `call(*args)`, its result ready."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(call(*args))
  return time.perf_counter() - t0, out


def measure(fn, args: tuple, bench: Args, compiles: bool = True) -> Timing:
  """Times `fn(*args)` after compilation and one warm-up call (module docstring).

  `fn` with `.lower` (a `jax.jit` object) is compiled ahead of time and `compile_s` is the
  lower+compile time. Otherwise the first call is the warm-up, and when `compiles` its
  overhead over the median is `compile_s` (else None).
  """
  compile_s = None
  if hasattr(fn, 'lower'):
    t0 = time.perf_counter()
    call = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    warm_s, out = timed(call, args)
  else:
    call = fn
    warm_s, out = timed(call, args)
  # Fewer repeats (at least one) when they would overrun the budget.
  budget_n = int(max(bench.max_case_s - warm_s, 0.0) // max(warm_s, 1e-9))
  times = []
  for _ in range(max(1, min(bench.repeats, budget_n))):
    dt, out = timed(call, args)
    times.append(dt)
  median = statistics.median(times)
  if not hasattr(fn, 'lower') and compiles:
    compile_s = max(warm_s - median, 0.0)
  return Timing(median, compile_s, times, out)


def max_rel_diff(a, b) -> float:
  """`max|a − b| / max|b|` in float64 (b is the reference)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'shape mismatch: {a.shape} vs {b.shape}.')
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def make_row(entry: str, case: str, sizes: str, baseline: str, old: Optional[Timing],
             new_name: str, new: Timing, **extra) -> dict:
  """One result row; `old=None` for a case with no baseline timing."""
  row = {'entry': entry, 'case': case, 'sizes': sizes,
         'baseline': baseline,
         'baseline_s': None if old is None else old.median_s,
         'baseline_compile_s': None if old is None else old.compile_s,
         'new': new_name, 'new_s': new.median_s, 'new_compile_s': new.compile_s,
         'speedup': None if old is None else old.median_s / new.median_s,
         'timed_calls': f'{"-" if old is None else len(old.times)}/{len(new.times)}'}
  row.update(extra)
  return row


def against_generic(gen: dict):
  """The baselines an NTK row compares the closed form with: each of NT's generic methods
  that ran (`gen`: {method: Timing}), then the faster of them.

  Yields (method, label, timing, fastest): `method` is the method's name or 'fastest',
  `label` the row's baseline ('fastest generic (<method>)' for the last), `fastest` the
  name of the faster method.
  """
  fastest = min(gen, key=lambda k: gen[k].median_s)
  for method in gen:
    yield method, method, gen[method], fastest
  yield 'fastest', f'fastest generic ({fastest})', gen[fastest], fastest
