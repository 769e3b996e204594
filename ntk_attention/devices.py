"""The machine a computation runs on: its memory budget and a 1-d mesh over its devices.

- `memory_budget_gb`: the one place that knows how much memory the large-n kernels may use
  (docs/method.md §13); `blocked` sizes its row blocks and `kernels` its NT Jacobians by it.
- `mesh_1d`: the one 1-d `jax.sharding.Mesh` over the devices, used to shard the rows
  of a blocked kernel (`blocked.row_placement`) and the seeds of a vmapped training run
  (`training.train`).
- Several processes (docs/method.md §13): `initialize` starts JAX's multi-controller runtime
  (`jax.distributed.initialize`; gloo collectives between CPU processes); `jax.devices()`,
  and so every mesh, then spans all processes' devices. Every process runs the same program
  on the same data; `to_host` gathers a sharded result onto every process
  (`multihost_utils.process_allgather`), and `is_writer` (process 0) alone writes files.
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


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> int:
  """Joins this process to a multi-process JAX run; returns the number of processes.

  With `coordinator_address` ('host:port' of process 0), `num_processes` and `process_id`
  given, or JAX's environment variables (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`) or a cluster JAX detects (Slurm, Open MPI, TPU) when
  `coordinator_address` is 'auto': `jax.distributed.initialize` (before any JAX computation),
  with gloo as the CPU collectives. Nothing given: a one-process run, returns 1.
  """
  env = os.environ.get('JAX_COORDINATOR_ADDRESS')
  if not coordinator_address and not env:
    if num_processes > 1 or process_id >= 0:
      raise ValueError('--num_processes / --process_id need --coordinator_address (or '
                       'JAX_COORDINATOR_ADDRESS).')
    return 1
  if coordinator_address and coordinator_address != 'auto':
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f'--coordinator_address needs --num_processes >= 1 and --process_id in '
                       f'[0, num_processes), got {num_processes} and {process_id}.')
  import jax
  # Cross-process collectives of CPU devices (GPUs use NCCL); must precede the backends.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address and coordinator_address != 'auto':
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    jax.distributed.initialize()
  return jax.process_count()


def is_writer() -> bool:
  """True in process 0 (and in a one-process run): the one process that writes files."""
  return jax.process_index() == 0


def to_host(x) -> np.ndarray:
  """`x` as a numpy array on this process: `np.asarray` when every shard is local, else the
  shards of all processes gathered (`multihost_utils.process_allgather`, tiled)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def gather_tree(tree):
  """`to_host` on every leaf of a pytree whose leaves are not all local; else unchanged."""
  leaves = jax.tree_util.tree_leaves(tree)
  if all(not isinstance(v, jax.Array) or v.is_fully_addressable for v in leaves):
    return tree
  return jax.tree_util.tree_map(lambda v: jax.numpy.asarray(to_host(v)), tree)


__all__ = ['memory_budget_gb', 'mesh_1d', 'initialize', 'is_writer', 'to_host', 'gather_tree']
