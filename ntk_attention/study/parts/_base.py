"""What every part shares: the context of a run, checks of its config, data, stores, provenance.

A part validates its config with the checks here (a `ValueError` whose one line names the
flag of the field, `--field`, as the scripts and presets spell it), loads its data with
`load_data`, writes its records through `open_store` and records `provenance(config)` in its
JSON. Nothing here knows about command-line flags; scripts/_common.py maps flags onto configs.
"""
import json
import logging as std_logging
import os
import platform
import sys
import time
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

from absl import logging

from ntk_attention import data
from ntk_attention.study import configs


class _NoCudaProbeNoise(std_logging.Filter):
  """Drops JAX's reports of a CUDA backend it could not start: the run then is on the CPU,
  and `provenance()` records the backend it used."""
  NOISE = ("Unable to initialize backend 'cuda'", 'CUDA backend failed to initialize',
           'CUDA-enabled jaxlib is not installed', 'could not find drivers')

  def filter(self, record):
    message = record.getMessage()
    return not any(n in message for n in self.NOISE)


std_logging.getLogger('jax._src.xla_bridge').addFilter(_NoCudaProbeNoise())


class Context(NamedTuple):
  """What a reproduction shares between the parts it runs.

  train_fn: a `cache.cached_train` (one memory cache for the run, files in D/cache/train).
  on_progress: `fn(progress)` after every cell, with the part's `progress_lib.Progress`.
  """
  train_fn: Callable
  on_progress: Optional[Callable] = None


class Need(NamedTuple):
  """One `data.load` a part makes: `classes` None = every class; `fit_to_pool` shrinks the
  sizes to fit a small pool instead of refusing them."""
  dataset: str
  classes: Optional[Tuple[int, ...]]
  n_train: int
  n_test: int
  fit_to_pool: bool


# ------------------------------------------------------------------------------------ checks


def check_data(config: configs.Data) -> Optional[Tuple[int, ...]]:
  """Validates the data selection without loading anything; returns the classes (None =
  every class)."""
  try:
    data.validate_dataset_name(config.dataset)
  except ValueError as e:
    raise ValueError(f'--dataset: {e}') from None
  try:
    classes = data.parse_classes(config.classes)
  except ValueError as e:
    raise ValueError(f'--classes: {e}') from None
  if config.n_train < 2:
    raise ValueError(f'--n_train must be >= 2, got {config.n_train}.')
  if config.n_test < 1:
    raise ValueError(f'--n_test must be >= 1, got {config.n_test}.')
  return classes


def check_output_dir(path: str, flag: str = 'output_dir') -> None:
  """ValueError naming --flag unless `path` is a folder, or can be made one: the nearest
  existing folder above it must be a writable folder (not a file). Creates nothing."""
  if not path:
    raise ValueError(f'--{flag} is empty.')
  full = os.path.abspath(os.path.expanduser(path))
  here = full
  while not os.path.exists(here):
    here = os.path.dirname(here)
  if not os.path.isdir(here):
    what = 'is a file' if here == full else f'lies under the file {here}'
    raise ValueError(f'--{flag}={path} {what}; give a folder.')
  if not os.access(here, os.W_OK | os.X_OK):
    raise ValueError(f'--{flag}={path}: the folder {here} is not writable.')


def check_ints(values: Sequence[int], field: str, positive: bool = True) -> list:
  """`values` as a list; ValueError naming --field when empty (or, with `positive`, < 1)."""
  values = list(values)
  if not values:
    raise ValueError(f'--{field} is empty.')
  if positive and min(values) < 1:
    raise ValueError(f'--{field} values must be >= 1, got {values}.')
  return values


def check_names(values: Sequence[str], field: str, allowed: Sequence[str]) -> list:
  """`values` as a list; ValueError naming --field when empty or a name is not `allowed`."""
  values = list(values)
  if not values:
    raise ValueError(f'--{field} is empty.')
  unknown = [v for v in values if v not in allowed]
  if unknown:
    raise ValueError(f'--{field}: unknown {unknown}; choose from {tuple(allowed)}.')
  return values


def check_models(names: Sequence[str], field: str = 'models',
                 count: Optional[int] = None) -> list:
  """The model names, in order, duplicates dropped: built-in `models.MODELS` and
  'module:function' entries. Each entry is imported (`models.factories`) and called once at a
  tiny size (width 2, 2 outputs) to check that it makes a `models.Model`; a bad entry, or not
  `count` entries when `count` is given, is a ValueError naming --field and the entry."""
  from ntk_attention import models
  names = list(dict.fromkeys(str(v).strip() for v in names if str(v).strip()))
  if not names:
    raise ValueError(f'--{field} is empty.')
  for name in names:
    if name in models.MODELS:
      continue
    if ':' not in name:
      raise ValueError(f'--{field}: unknown model {name!r}; choose from {models.MODELS} or give '
                       'module:function.')
    # Calling the factory starts JAX, whose backend probing logs at INFO.
    std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
    try:
      factory = models.factories([name])[name]
      models.instantiate(name, factory, 2, 2)
    except Exception as e:  # pylint: disable=broad-except
      # The user's code may fail in any way (an import-time error, a TypeError of the call):
      # every failure is a bad value, named.
      message = str(e) if isinstance(e, ValueError) else (
          f'model {name!r}: importing or calling it at width 2, 2 outputs failed '
          f'({type(e).__name__}: {e}).')
      raise ValueError(f'--{field}: {message}') from None
  if count is not None and len(names) != count:
    raise ValueError(f'--{field} takes exactly {count} models (reference, candidate: the ratio '
                     f'is candidate / reference), got {names}.')
  return names


def check_options(options: configs.ModelOptions) -> None:
  """Validates the attention options and the first layer's init std (docs/method.md §3, §4)."""
  from ntk_attention import layers
  o = options
  if o.attn_depth < 1:
    raise ValueError(f'--attn_depth must be >= 1, got {o.attn_depth}.')
  if o.attn_rank < 0:
    raise ValueError(f'--attn_rank must be >= 0, got {o.attn_rank}.')
  if o.attn_rank and o.attn_normalize != 'linear':
    raise ValueError('--attn_rank applies to --attn_normalize=linear only.')
  if not 0 < o.init_std < float('inf'):
    raise ValueError(f'--init_std must be a positive number, got {o.init_std}.')
  if o.attn_temperature is not None and not o.attn_temperature > 0:
    raise ValueError(f'--attn_temperature must be > 0, got {o.attn_temperature}.')
  if o.qkv_heads < 1:
    raise ValueError(f'--qkv_heads must be >= 1, got {o.qkv_heads}.')
  attn = {k: v for k, v in o.per_model()['mlp_attn'].items() if k != 'init_std'}
  layers.LinearizedAttention(**attn)   # validates the combination


def model_options(options: configs.ModelOptions, names: Sequence[str]) -> dict:
  """`{name: models.build options}` of the built-in models among `names`."""
  return {n: o for n, o in options.per_model().items() if n in names}


def check_train(config) -> None:
  """Validates a `training.TrainConfig`; the message names the flag (--epochs, --lr, ...)."""
  from ntk_attention import training
  try:
    training.validate(config)
  except ValueError as e:
    raise ValueError(f'--{e}') from None


# ------------------------------------------------------------------------------------ data


def load_data(config: configs.Data):
  """`data.load` of `config`, logged; `fit_to_pool` shrinks the sizes to a small pool
  (digits 3 vs 8: 357 images), else the sizes are honoured or refused."""
  t0 = time.time()
  ds = data.load(config.dataset, classes=config.classes, n_train=config.n_train,
                 n_test=config.n_test, seed=config.seed, data_dir=config.data_dir,
                 fit_to_pool=config.fit_to_pool)
  logging.info('data %s: %d train, %d test, d=%d, %d classes (%.1fs)', ds.name,
               len(ds.x_train), len(ds.x_test), ds.d, ds.num_classes, time.time() - t0)
  return ds


def data_needs(config: configs.Data) -> list:
  """The one load of a part that loads `config` as it is (`load_data`)."""
  return [Need(config.dataset, data.parse_classes(config.classes), config.n_train,
               config.n_test, config.fit_to_pool)]


def check_pools(needs, seed: int, data_dir: Optional[str], where: str = '', checked=None):
  """Loads each of `needs` (`Need`s) once, before any work, so that a pool too small for the
  sizes asked is a one-line error naming them (prefixed by `where`) and not a failure minutes
  into a run. `checked`: a set of needs already loaded (skipped, updated)."""
  import warnings
  checked = set() if checked is None else checked
  for dataset, classes, n_train, n_test, fit in needs:
    key = (dataset, classes, n_train, n_test, fit, seed)
    if key in checked:
      continue
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')     # a shrink to fit is reported when the part loads
      try:
        data.load(dataset, classes=classes, n_train=n_train, n_test=n_test, seed=seed,
                  data_dir=data_dir, fit_to_pool=fit)
      except (ValueError, RuntimeError) as e:   # RuntimeError: a tfds dataset not prepared
        raise ValueError(f'{where}{e}') from None
    checked.add(key)


# ------------------------------------------------------------------------------------ running


def trainer(context: Optional[Context], train_cache_dir: Optional[str] = None) -> Callable:
  """The `train_fn` of a part: the context's (one cache for a reproduction) or a
  `cache.cached_train` on `train_cache_dir` ('' or None: in memory only)."""
  if context is not None:
    return context.train_fn
  from ntk_attention.study import cache
  return cache.cached_train(directory=train_cache_dir or None)


def progress(label: str, total: int, context: Optional[Context]):
  """A `progress_lib.Progress` for a part's cells: logged, and reported to the reproduction."""
  from ntk_attention.study import progress as progress_lib
  return progress_lib.Progress(total, label, log_fn=logging.info,
                               on_update=context.on_progress if context else None)


def out_path(name: str, out_dir: str) -> str:
  """`out_dir/name`, creating the folder."""
  os.makedirs(out_dir, exist_ok=True)
  return os.path.join(out_dir, name)


def open_store(basename: str, settings: dict, resume: bool, out_dir: str):
  """The JSONL results store `D/basename.jsonl`, emptied unless `resume`.

  `settings` (everything that changes the numbers) is kept beside it in
  `D/basename_settings.json`; resuming with different settings is an error rather than a
  silently mixed table.
  """
  from ntk_attention.study import store as store_lib
  store = store_lib.JsonlStore(out_path(basename + '.jsonl', out_dir))
  settings_file = out_path(basename + '_settings.json', out_dir)
  settings = json.loads(json.dumps(settings, default=str))
  if resume and os.path.exists(settings_file):
    old = store_lib.read_json(settings_file)
    if old != settings:
      changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
      raise ValueError(f'--resume: {settings_file} was written with different settings '
                       f'({", ".join(changed)}); use another --output_dir or drop --resume.')
  if not resume:
    store.reset()
  store_lib.write_json(settings_file, settings)
  return store


def environment() -> dict:
  """Versions, backend, devices and time of this run."""
  import jax
  from ntk_attention import _nt
  return {
      'argv': list(sys.argv),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'neural_tangents': _nt.nt_version(),
      'backend': jax.default_backend(),
      'devices': [str(d) for d in jax.devices()],
      'x64': bool(jax.config.jax_enable_x64),
      'time': time.strftime('%Y-%m-%d %H:%M:%S'),
  }


def flat(config) -> dict:
  """A config's leaves by their flag names ({'dataset': .., 'epochs': .., 'tau': ..}): the
  nested configs (data, train, options, setup and its attack) flattened, JSON values; a
  field of the part itself wins over a nested one of the same name."""
  def leaves(d):
    out = {}
    for key, value in d.items():
      if isinstance(value, dict):
        for k, v in leaves(value).items():
          out.setdefault(k, v)
      else:
        out[key] = value
    return out
  return leaves(configs.as_dict(config))


def provenance(config) -> dict:
  """`environment()`, the config (`configs.as_dict`) and its leaves by flag name (`flags`,
  what the report and the scorecard read), for a part's JSON."""
  return {**environment(), 'config': configs.as_dict(config), 'flags': flat(config)}
