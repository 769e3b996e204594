"""The machine a computation runs on: its memory budget and a 1-d mesh over its devices.

- `memory_budget_gb`: the one place that knows how much memory the large-n kernels may use
  (docs/method.md §13); `blocked` sizes its row blocks and `kernels` its NT Jacobians by it.
- `mesh_1d`: the one 1-d `jax.sharding.Mesh` over the local devices, used to shard the rows
  of a blocked kernel (`blocked.row_placement`) and the seeds of a vmapped training run
  (`training.train`).
"""
import os
from typing import Optional, Sequence

import jax
import numpy as np


def memory_budget_gb(max_memory_gb: Optional[float] = None) -> float:
  """`max_memory_gb`, or 80 % of this machine's physical memory when it is None or 0."""
  if max_memory_gb:
    if not max_memory_gb > 0:
      raise ValueError(f'--max_memory_gb must be > 0, got {max_memory_gb}.')
    return float(max_memory_gb)
  try:
    return 0.8 * os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9
  except (ValueError, OSError, AttributeError):
    return 16.0


def mesh_1d(axis_name: str, devices: Optional[Sequence] = None) -> jax.sharding.Mesh:
  """A 1-d `Mesh` named `(axis_name,)` over `devices` (default `jax.devices()`, in order).

  Args:
    axis_name: the mesh axis, e.g. `'rows'` or `'seeds'`; a `PartitionSpec(axis_name)`
      then splits an array's first axis into `len(devices)` equal parts.
    devices: the devices to span; at least one.

  Returns:
    `jax.sharding.Mesh(np.array(devices), (axis_name,))`.
  """
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError('mesh_1d: no devices given.')
  return jax.sharding.Mesh(np.array(devices), (axis_name,))


__all__ = ['memory_budget_gb', 'mesh_1d']
