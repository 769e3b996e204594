"""Flags and start-up shared by every script: data selection, seed, output folder.

Each script does `import _common` (the scripts folder is on sys.path when a script runs),
takes its flag registry from `script_flags(__name__)`, defines its flags into it at the top,
and calls `setup(FLAGS)` first in `main(argv, context=None)`. `context` is what
scripts/reproduce.py shares between the parts it runs in-process (`PartContext`). It runs `main` through `run`,
which answers a bad flag value with one line; flags are checked before `setup` (which makes
the output folder).
"""
import json
import logging as std_logging
import os
import platform
import sys
import time
from typing import Callable, NamedTuple, Optional

from absl import app
from absl import flags
from absl import logging

# tensorflow (imported only by tfds, for mnist / cifar10) logs from C++ ("Could not find
# cuda drivers ..."); keep it quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# numpy's eigensolvers with 2 OpenBLAS threads slow down 100x when another process holds a
# core (measured: eigvalsh of 1000x1000, 0.06 s vs 6.5 s); JAX has its own thread pool.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')


class _NoCudaProbeNoise(std_logging.Filter):
  """Drops JAX's reports of a CUDA backend it could not start: the run then is on the CPU,
  and `provenance()` records the backend it used."""
  NOISE = ("Unable to initialize backend 'cuda'", 'CUDA backend failed to initialize',
           'CUDA-enabled jaxlib is not installed', 'could not find drivers')

  def filter(self, record):
    message = record.getMessage()
    return not any(n in message for n in self.NOISE)


std_logging.getLogger('jax._src.xla_bridge').addFilter(_NoCudaProbeNoise())


def script_flags(module_name: str) -> flags.FlagValues:
  """The flag registry of a script: absl's global `flags.FLAGS` when the script runs as a
  program, a private `FlagValues` when it is imported (scripts/reproduce.py runs the parts
  in-process; absl allows one definition of a name per registry, and the scripts share names
  such as --models and --width)."""
  return flags.FLAGS if module_name == '__main__' else flags.FlagValues()


class PartContext(NamedTuple):
  """What an in-process reproduction shares between its parts.

  train_fn: a `cache.cached_train` (one memory cache for the run, files in D/cache/train).
  on_progress: `fn(progress)` after every cell, with the part's `progress_lib.Progress`.
  """
  train_fn: Callable
  on_progress: Optional[Callable] = None


def progress(label: str, total: int, context: Optional[PartContext]):
  """A `progress_lib.Progress` for a part's cells: logged, and reported to the reproduction."""
  from ntk_attention.study import progress as progress_lib
  from ntk_attention.study import store as store_lib
  return progress_lib.Progress(total, label, log_fn=logging.info,
                            on_update=context.on_progress if context else None)


def define_data_flags(fv: flags.FlagValues):
  """Data selection, seed and output folder, in every script."""
  flags.DEFINE_string('dataset', 'mnist_sample',
                      "'mnist_sample' (5,000 real MNIST images, bundled, offline), "
                      "'cifar10_sample' (1,000 real CIFAR-10 images, bundled), 'digits' "
                      "(scikit-learn 8x8, a fast proxy), 'mnist', 'fashion_mnist', 'cifar10' "
                      "(tensorflow-datasets), or 'npz:PATH' (arrays x (N,H,W[,C]), y (N,)).",
                      flag_values=fv)
  flags.DEFINE_string('classes', '', "Class ids to keep, e.g. '3,8' (binary task); '' = all.",
                      flag_values=fv)
  flags.DEFINE_integer('n_train', 1000, 'Training points (stratified, seeded subsample).',
                       flag_values=fv)
  flags.DEFINE_integer('n_test', 500, 'Test / evaluation points (stratified, seeded subsample).',
                       flag_values=fv)
  flags.DEFINE_integer('seed', 0, 'Seed of the data subsample (and the base of model seeds).',
                       flag_values=fv)
  flags.DEFINE_string('data_dir', None, 'tensorflow-datasets data folder.', flag_values=fv)
  flags.DEFINE_string('output_dir', 'results', 'Folder for JSON, CSV and figures.',
                      flag_values=fv)
  define_precision_flag(fv)


def define_precision_flag(fv: flags.FlagValues):
  flags.DEFINE_enum('matmul_precision', 'highest', ['highest', 'high', 'default'],
                    "Precision of float32 matrix products ('jax_default_matmul_precision'): "
                    "'highest' is true float32 everywhere; 'default' lets GPUs use TF32 "
                    '(about 1e-3 relative error in kernels) and TPUs bfloat16 passes.',
                    flag_values=fv)


def define_training_flags(fv: flags.FlagValues, epochs: int = 500):
  """Training flags (docs/method.md §6 [choice] defaults), for scripts that train."""
  flags.DEFINE_integer('epochs', epochs, 'Training epochs [choice: the study, 500].',
                       flag_values=fv)
  flags.DEFINE_integer('batch_size', 128, 'Minibatch size [choice: the study].', flag_values=fv)
  flags.DEFINE_float('lr', 1e-3, 'Learning rate [choice: the study].', flag_values=fv)
  flags.DEFINE_float('weight_decay', 1e-3, 'L2 weight decay on trained weights [choice].',
                     flag_values=fv)
  flags.DEFINE_enum('optimizer', 'adam', ['adam', 'sgd'],
                    "'adam' (the study) or 'sgd' (with --loss=mse: the kernel-regime check).",
                    flag_values=fv)
  flags.DEFINE_enum('loss', 'auto', ['auto', 'mse', 'xent'],
                    "'auto': cross-entropy for > 2 classes, MSE on ±1 targets for binary.",
                    flag_values=fv)
  flags.DEFINE_string('train_cache', '',
                      'Folder of trained parameters, one file per model, options, data, training '
                      'configuration and seed: a run that needs the same training loads it '
                      "instead (docs/method.md §16). '' = keep them in memory only.",
                      flag_values=fv)


def trainer(fv: flags.FlagValues, shared=None):
  """The `train_fn` of a script: `shared` (the one cache of an in-process reproduction) or a
  `cache.cached_train` on --train_cache."""
  from ntk_attention.study import cache
  if shared is not None:
    return shared
  return cache.cached_train(directory=fv.train_cache or None)


def define_model_flags(fv: flags.FlagValues):
  """Attention options of the models (docs/method.md §3 variants; issue 'beyond the study')."""
  flags.DEFINE_integer('attn_depth', 1, 'mlp_attn: stacked linearized-attention layers k.',
                       flag_values=fv)
  flags.DEFINE_bool('attn_shared', True, 'mlp_attn: share the pattern across layers (G^{2k+1}); '
                    'false recomputes it from each output (G^{3^k}).', flag_values=fv)
  flags.DEFINE_integer('attn_rank', 0, 'mlp_attn: top-r eigen-truncation of the pattern (0 = none).',
                       flag_values=fv)
  flags.DEFINE_enum('attn_normalize', 'linear', ['linear', 'softmax'],
                    "mlp_attn: 'linear' (X Xᵀ X) or 'softmax' (Nadaraya–Watson) pattern.",
                    flag_values=fv)
  flags.DEFINE_float('attn_temperature', None,
                    'mlp_attn softmax temperature T (logits Σ/T, Σ = x·x\'/d); default: the '
                    'standard 1/√d scaling, logits x_i·x_j/√d [choice, docs/method.md §3].',
                    flag_values=fv)
  flags.DEFINE_float('init_std', 0.01,
                     'Std of the first-layer weights w_r on unit-norm inputs, h_r = w_r·x̂ '
                     '(the study: 0.01) [choice, docs/method.md §4]. The analytic NTK does '
                     'not depend on it; training does. 1.0 is NT\'s default initialisation.',
                     flag_values=fv)
  flags.DEFINE_enum('qkv_mechanism', 'IDENTITY', ['IDENTITY', 'SOFTMAX'],
                    'mlp_attn_qkv: attention mechanism (linear scaling, as NT).', flag_values=fv)
  flags.DEFINE_integer('qkv_heads', 1, 'mlp_attn_qkv: heads.', flag_values=fv)


def model_options(fv: flags.FlagValues) -> dict:
  """Per-model `models.build` options from the model flags."""
  from ntk_attention import layers
  if fv.attn_depth < 1:
    raise ValueError(f'--attn_depth must be >= 1, got {fv.attn_depth}.')
  if fv.attn_rank < 0:
    raise ValueError(f'--attn_rank must be >= 0, got {fv.attn_rank}.')
  if fv.attn_rank and fv.attn_normalize != 'linear':
    raise ValueError('--attn_rank applies to --attn_normalize=linear only.')
  if not 0 < fv.init_std < float('inf'):
    raise ValueError(f'--init_std must be a positive number, got {fv.init_std}.')
  if fv.attn_temperature is not None and not fv.attn_temperature > 0:
    raise ValueError(f'--attn_temperature must be > 0, got {fv.attn_temperature}.')
  if fv.qkv_heads < 1:
    raise ValueError(f'--qkv_heads must be >= 1, got {fv.qkv_heads}.')
  attn = dict(depth=fv.attn_depth, shared=fv.attn_shared,
              rank=fv.attn_rank or None, normalize=fv.attn_normalize,
              temperature=fv.attn_temperature)
  layers.LinearizedAttention(**{k: v for k, v in attn.items()})   # validates
  init = {'init_std': fv.init_std}
  return {'relu_mlp': init, 'mlp_attn': dict(attn, **init),
          'mlp_attn_qkv': dict(mechanism=fv.qkv_mechanism, n_heads=fv.qkv_heads, **init)}


def training_config(fv: flags.FlagValues):
  from ntk_attention import training
  config = training.TrainConfig(optimizer=fv.optimizer, lr=fv.lr, epochs=fv.epochs,
                                batch_size=fv.batch_size,
                                weight_decay=fv.weight_decay, loss=fv.loss)
  training.validate(config)
  return config


def parse_int_list(text: str, name: str, positive: bool = True):
  """'16,64,256' -> [16, 64, 256]; ValueError naming the flag otherwise."""
  try:
    values = [int(v) for v in str(text).split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{name} must be comma-separated integers, got {text!r}.') from None
  if not values:
    raise ValueError(f'--{name} is empty.')
  if positive and min(values) < 1:
    raise ValueError(f'--{name} values must be >= 1, got {values}.')
  return values


def parse_float_list(text: str, name: str):
  try:
    values = [float(v) for v in str(text).split(',') if v.strip()]
  except ValueError:
    raise ValueError(f'--{name} must be comma-separated numbers, got {text!r}.') from None
  if not values:
    raise ValueError(f'--{name} is empty.')
  return values


def parse_names(text: str, name: str, allowed):
  values = [v.strip() for v in str(text).split(',') if v.strip()]
  if not values:
    raise ValueError(f'--{name} is empty.')
  unknown = [v for v in values if v not in allowed]
  if unknown:
    raise ValueError(f'--{name}: unknown {unknown}; choose from {tuple(allowed)}.')
  return values


MODELS_HELP = ("built-in names (relu_mlp, mlp_attn, mlp_attn_qkv) and/or 'module:function' "
               'entries: a factory(width, out_dim) returning a models.Model (models.compose), '
               'imported from a module on the Python path (installed, or on PYTHONPATH); '
               'records name such a model by the entry')


def parse_models(text: str, flag: str = 'models', count: Optional[int] = None) -> list:
  """The model names of a --models value: built-in `models.MODELS` and 'module:function'
  entries, in order, duplicates dropped. Each 'module:function' entry is imported
  (`models.factories`) and called once at a tiny size (width 2, 2 outputs) to check that it
  makes a `models.Model`; a bad entry, or not `count` entries when `count` is given, is a
  ValueError naming --flag and the entry (before any work: `run` prints it as one line)."""
  from ntk_attention import models
  names = list(dict.fromkeys(v.strip() for v in str(text).split(',') if v.strip()))
  if not names:
    raise ValueError(f'--{flag} is empty.')
  for name in names:
    if name in models.MODELS:
      continue
    if ':' not in name:
      raise ValueError(f'--{flag}: unknown model {name!r}; choose from {models.MODELS} or give '
                       'module:function.')
    # Calling the factory starts JAX, whose backend probing logs at INFO (as in `setup`).
    std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
    try:
      factory = models.factories([name])[name]
      models.instantiate(name, factory, 2, 2)
    except Exception as e:  # pylint: disable=broad-except
      # The user's code may fail in any way (an import-time error, a TypeError of the call):
      # every failure is a bad flag value, named.
      message = str(e) if isinstance(e, ValueError) else (
          f'model {name!r}: importing or calling it at width 2, 2 outputs failed '
          f'({type(e).__name__}: {e}).')
      raise ValueError(f'--{flag}: {message}') from None
  if count is not None and len(names) != count:
    raise ValueError(f'--{flag} takes exactly {count} models (reference, candidate: the ratio is '
                     f'candidate / reference), got {names}.')
  return names


def check_data_flags(fv: flags.FlagValues):
  """Validates the shared data flags without loading anything."""
  from ntk_attention import data
  try:
    data.validate_dataset_name(fv.dataset)
  except ValueError as e:
    raise ValueError(f'--dataset: {e}') from None
  try:
    classes = data.parse_classes(fv.classes)
  except ValueError as e:
    raise ValueError(f'--classes: {e}') from None
  if fv.n_train < 2:
    raise ValueError(f'--n_train must be >= 2, got {fv.n_train}.')
  if fv.n_test < 1:
    raise ValueError(f'--n_test must be >= 1, got {fv.n_test}.')
  return classes


_checking_flags = [True]   # until setup() / begin_work(): errors are bad flag values


def begin_work():
  """Ends flag checking: from here on an error is a failure with its traceback."""
  _checking_flags[0] = False


def _one_line_error(message) -> None:
  sys.stderr.write(f'{os.path.basename(sys.argv[0])}: error: {" ".join(str(message).split())}\n')
  sys.exit(2)


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _one_line_error(e)


def run(main, argv=None):
  """`app.run(main, argv)`, answering a bad flag value (a flags parsing error, or a ValueError /
  UsageError raised before `setup()` or `begin_work()`) with one line on stderr, exit 2."""

  def checked_main(argv):
    try:
      return main(argv)
    except (ValueError, app.UsageError) as e:
      if not _checking_flags[0]:
        raise
      _one_line_error(e)

  app.run(checked_main, argv=argv, flags_parser=_parse_flags)


def setup(fv: flags.FlagValues, x64: bool = True):
  """Enables float64 (spectra, influence and analytic kernels need it) and the output dir."""
  begin_work()
  import jax
  if x64:
    jax.config.update('jax_enable_x64', True)
  # GPUs default to TF32 products (measured 1e-3 relative error in an H200's empirical NTKs).
  jax.config.update('jax_default_matmul_precision', fv.matmul_precision)
  os.makedirs(fv.output_dir, exist_ok=True)
  logging.set_verbosity(logging.INFO)
  # JAX logs its backend probing (rocm, tpu) at INFO; it is noise on CPU machines.
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)


def load_data(fv: flags.FlagValues, classes):
  from ntk_attention import data
  t0 = time.time()
  # Default sizes shrink to fit small pools (digits 3 vs 8: 357 images); sizes the user
  # asked for are honoured or refused.
  defaults = not (fv['n_train'].present or fv['n_test'].present)
  ds = data.load(fv.dataset, classes=classes, n_train=fv.n_train,
                 n_test=fv.n_test, seed=fv.seed, data_dir=fv.data_dir,
                 fit_to_pool=defaults)
  logging.info('data %s: %d train, %d test, d=%d, %d classes (%.1fs)', ds.name,
               len(ds.x_train), len(ds.x_test), ds.d, ds.num_classes, time.time() - t0)
  return ds


def data_needs(fv: flags.FlagValues) -> list:
  """The loads a script makes, as `(dataset, classes, n_train, n_test, fit_to_pool)`: by
  default its --dataset / --classes / --n_train / --n_test, default sizes shrinking to fit
  (as `load_data`). A script that loads more defines its own `data_needs(fv)`."""
  from ntk_attention import data
  return [(fv.dataset, data.parse_classes(fv.classes), fv.n_train, fv.n_test,
           not (fv['n_train'].present or fv['n_test'].present))]


def check_pools(needs, seed: int, data_dir: Optional[str], where: str = '', checked=None):
  """Loads each of `needs` (see `data_needs`) once, before any work, so that a pool too
  small for the sizes asked is a one-line error naming them (prefixed by `where`) and not a
  failure minutes into a run. `checked`: a set of needs already loaded (skipped, updated)."""
  import warnings
  from ntk_attention import data
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


def provenance(fv: flags.FlagValues, flag_names=()):
  """Versions, device and the flags that matter, for results files."""
  import jax
  from ntk_attention import _nt
  out = {
      'argv': sys.argv,
      'python': platform.python_version(),
      'jax': jax.__version__,
      'neural_tangents': _nt.nt_version(),
      'backend': jax.default_backend(),
      'devices': [str(d) for d in jax.devices()],
      'x64': bool(jax.config.jax_enable_x64),
      'time': time.strftime('%Y-%m-%d %H:%M:%S'),
  }
  names = ('dataset', 'classes', 'n_train', 'n_test', 'seed') + tuple(flag_names)
  out['flags'] = {n: _jsonable(fv[n].value) for n in names if n in fv}
  return out


def _jsonable(v):
  try:
    json.dumps(v)
    return v
  except TypeError:
    return str(v)


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
  from ntk_attention.study import progress as progress_lib
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
