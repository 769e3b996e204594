"""The study's parts: one module per part, each the library call behind one script.

Contract (every module here, e.g. `study.parts.malleability`):

  run(config, out_dir, context=None, resume=False) -> summary
      Computes the part for `config` (a `study.configs` dataclass) and writes its JSON, CSV,
      tables and figures into `out_dir`; `context` is a `Context` (the shared trainer and a
      progress hook) when a reproduction runs it, None when a script does (then the part
      trains through a `cache.cached_train` of its own); `resume` skips records already in
      the part's JSONL. It checks `config` first (`check`).
  check(config) -> None
      Validates the config without loading data: a ValueError whose one line names the
      field as its flag, `--field`.
  data_needs(config) -> list of `Need`
      Every load the part makes, as `Need(dataset, classes, n_train, n_test, fit_to_pool)`,
      tried before any work (`check_pools`).

`NAMES` lists the parts (the keys of `configs.PART_CONFIGS`); `part(name)` imports one.
"""
import importlib

from ntk_attention.study.parts._base import check_pools
from ntk_attention.study.parts._base import Context
from ntk_attention.study.parts._base import Need
from ntk_attention.study.parts._base import provenance
from ntk_attention.study.parts._base import trainer

NAMES = ('spectral', 'kernels', 'ntk_distance', 'malleability', 'approximation', 'sensitivity',
         'scaling', 'width_threshold', 'joint_search')


def part(name: str):
  """The module `study.parts.<name>` (one of `NAMES`)."""
  if name not in NAMES:
    raise ValueError(f'unknown part {name!r}; choose from {NAMES}.')
  return importlib.import_module(f'{__name__}.{name}')


__all__ = ['Context', 'Need', 'NAMES', 'part', 'check_pools', 'provenance', 'trainer']
