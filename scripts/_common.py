"""Flags shared by the scripts and their mapping onto the study's configs; start-up.

A script defines its flags into absl's `flags.FLAGS` (the shared ones with `define_*_flags`),
maps them onto its `study.configs` dataclass (`data_config`, `train_config`,
`model_options`, and the list parsers `ints` / `floats` / `names`), validates it with
`check(part, config)` (the part's own check, its data pools tried, the output folder),
calls `setup(FLAGS)` and its part's `run`. It runs `main` through `run`,
which answers a bad flag value (a ValueError raised before `setup`) with one line.
"""
import json
import logging as std_logging
import os
import sys

from absl import app
from absl import flags

# tensorflow (imported only by tfds, for mnist / cifar10) logs from C++ ("Could not find
# cuda drivers ..."); keep it quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# numpy's eigensolvers with 2 OpenBLAS threads slow down 100x when another process holds a
# core (measured: eigvalsh of 1000x1000, 0.06 s vs 6.5 s); JAX has its own thread pool.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

from ntk_attention import data  # noqa: E402  (after the environment above)
from ntk_attention.study import configs  # noqa: E402
from ntk_attention.study import parts  # noqa: E402
from ntk_attention.study.parts import _base  # noqa: E402

FLAGS = flags.FLAGS

MODELS_HELP = ("built-in names (relu_mlp, mlp_attn, mlp_attn_qkv) and/or 'module:function' "
               'entries: a factory(width, out_dim) returning a models.Model (models.compose), '
               'imported from a module on the Python path (installed, or on PYTHONPATH); '
               'records name such a model by the entry')


def script_flags(module_name: str) -> flags.FlagValues:
  """absl's `flags.FLAGS` when the script runs as a program, a private registry when it is
  imported (scripts/benchmark.py and scripts/reproduce.py use it)."""
  return flags.FLAGS if module_name == '__main__' else flags.FlagValues()


# ------------------------------------------------------------------------------------ flags


def define_data_flags(fv: flags.FlagValues = FLAGS):
  """Data selection, seed and output folder, in every script."""
  flags.DEFINE_string('dataset', 'mnist_sample', data.DATASET_HELP, flag_values=fv)
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


def define_precision_flag(fv: flags.FlagValues = FLAGS):
  flags.DEFINE_enum('matmul_precision', 'highest', ['highest', 'high', 'default'],
                    "Precision of float32 matrix products ('jax_default_matmul_precision'): "
                    "'highest' is true float32 everywhere; 'default' lets GPUs use TF32 "
                    '(about 1e-3 relative error in kernels) and TPUs bfloat16 passes.',
                    flag_values=fv)


def define_training_flags(fv: flags.FlagValues = FLAGS, epochs: int = 500):
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


def define_model_flags(fv: flags.FlagValues = FLAGS):
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


# ------------------------------------------------------------------------------------ flags -> configs


def ints(text: str, name: str) -> tuple:
  """'16,64,256' -> (16, 64, 256); ValueError naming --name when it does not parse."""
  try:
    return tuple(int(v) for v in str(text).split(',') if v.strip())
  except ValueError:
    raise ValueError(f'--{name} must be comma-separated integers, got {text!r}.') from None


def floats(text: str, name: str) -> tuple:
  """'0.1,0.3' -> (0.1, 0.3); ValueError naming --name when it does not parse."""
  try:
    return tuple(float(v) for v in str(text).split(',') if v.strip())
  except ValueError:
    raise ValueError(f'--{name} must be comma-separated numbers, got {text!r}.') from None


def names(text: str) -> tuple:
  """'a, b,' -> ('a', 'b')."""
  return tuple(v.strip() for v in str(text).split(',') if v.strip())


def parse_names(text: str, name: str, allowed) -> list:
  """`names(text)`, each in `allowed`; ValueError naming --name otherwise."""
  return _base.check_names(names(text), name, allowed)


def data_config(fv: flags.FlagValues = FLAGS) -> configs.Data:
  """The data flags as a `configs.Data`; sizes not given on the command line shrink to fit
  a small pool (`fit_to_pool`), sizes given are honoured or refused."""
  from ntk_attention import data
  try:
    classes = data.parse_classes(fv.classes)
  except ValueError as e:
    raise ValueError(f'--classes: {e}') from None
  return configs.Data(dataset=fv.dataset, classes=tuple(classes or ()), n_train=fv.n_train,
                      n_test=fv.n_test, seed=fv.seed, data_dir=fv.data_dir,
                      fit_to_pool=not (fv['n_train'].present or fv['n_test'].present))


def train_config(fv: flags.FlagValues = FLAGS):
  """The training flags as a `training.TrainConfig`."""
  from ntk_attention import training
  return training.TrainConfig(optimizer=fv.optimizer, lr=fv.lr, epochs=fv.epochs,
                              batch_size=fv.batch_size, weight_decay=fv.weight_decay,
                              loss=fv.loss)


def model_options(fv: flags.FlagValues = FLAGS) -> configs.ModelOptions:
  """The model flags as a `configs.ModelOptions`."""
  return configs.ModelOptions(
      attn_depth=fv.attn_depth, attn_shared=fv.attn_shared, attn_rank=fv.attn_rank,
      attn_normalize=fv.attn_normalize, attn_temperature=fv.attn_temperature,
      init_std=fv.init_std, qkv_mechanism=fv.qkv_mechanism, qkv_heads=fv.qkv_heads)


def context(fv: flags.FlagValues = FLAGS) -> parts.Context:
  """A script's part context: training through a cache on --train_cache ('' = memory)."""
  return parts.Context(train_fn=parts.trainer(None, fv.train_cache))


def provenance(fv: flags.FlagValues, flag_names=()) -> dict:
  """Versions, device and the flags that matter, for a flag-driven script's results file."""
  names_ = ('dataset', 'classes', 'n_train', 'n_test', 'seed') + tuple(flag_names)
  return {**_base.environment(),
          'flags': {n: _jsonable(fv[n].value) for n in names_ if n in fv}}


def _jsonable(v):
  try:
    json.dumps(v)
    return v
  except TypeError:
    return str(v)


# ------------------------------------------------------------------------------------ dry run


def define_dry_run_flag(fv: flags.FlagValues = FLAGS):
  flags.DEFINE_bool('dry_run', False, 'Check the flags and data, print the estimated peak '
                    'memory and time on this machine (docs/method.md §13, §16) and any problem '
                    'the run would stop at; write nothing, exit 0.', flag_values=fv)


def dry_run(kind: str, config, n_train: int, n_eval: int, max_memory_gb: float,
            checks=()) -> str:
  """The `--dry_run` text of a part `kind` (`study.parts.<kind>`): `estimated peak memory: X GB`
  (`blocked.influence_peak_gb` at `n_train + n_eval` points, against the budget), the time
  (`study.plan`, after a ~1 s calibration) and one `would fail: ...` line per failing check
  (`checks`: functions that raise ValueError). Nothing is written."""
  from ntk_attention import blocked
  from ntk_attention import devices
  from ntk_attention.study import plan
  from ntk_attention.study import progress as progress_lib
  problems = []
  for check in checks:
    try:
      check()
    except (ValueError, app.UsageError, OSError, KeyError) as e:
      problems.append(' '.join(str(e).split()))
  try:
    budget = f'{devices.memory_budget_gb(max_memory_gb or None):.3g} GB budget'
  except ValueError as e:
    budget = str(e)
  lines = [f'estimated peak memory: {blocked.influence_peak_gb(n_train, n_eval):.3g} GB '
           f'({budget}; n_train = {n_train} + {n_eval} evaluation points)']
  try:
    import jax
    std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
    jax.config.update('jax_enable_x64', True)
    cost = plan.part_cost(kind, config)
    seconds = plan.seconds(cost, plan.calibrate())
    lines.append(f'estimated time: {progress_lib.format_duration(seconds)} on this machine '
                 f'({cost.cells} cells; a factor of 2 either way)')
  except (ValueError, OSError, KeyError) as e:
    lines.append(f'estimated time: unknown ({" ".join(str(e).split())})')
  return '\n'.join(lines + [f'would fail: {p}' for p in problems])


# ------------------------------------------------------------------------------- processes


def define_process_flags(fv: flags.FlagValues = FLAGS):
  flags.DEFINE_string('coordinator_address', '', "Several processes (docs/method.md §13): "
                      "'host:port' of process 0, the same in every process; 'auto' lets JAX "
                      "detect the cluster (Slurm, Open MPI, TPU) or read JAX_COORDINATOR_ADDRESS, "
                      "JAX_NUM_PROCESSES, JAX_PROCESS_ID; '' = one process.", flag_values=fv)
  flags.DEFINE_integer('num_processes', 0, 'Number of processes (with --coordinator_address).',
                       flag_values=fv)
  flags.DEFINE_integer('process_id', -1, "This process's rank in [0, --num_processes).",
                       flag_values=fv)


def start_processes(fv: flags.FlagValues = FLAGS):
  """Joins the multi-process run the flags describe (`devices.initialize`) and returns a
  cleanup function. Every process computes; process 0 alone writes into --output_dir (the
  others write into a temporary folder, deleted by the cleanup)."""
  import tempfile
  from ntk_attention import devices
  several = fv.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  for name in ('resume', 'train_cache'):
    # Every process must do the same work in the same order (their collectives meet): state
    # on disk that only process 0 sees (a cache hit, a record done) would desynchronise them.
    if several and name in fv and fv[name].value:
      raise ValueError(f'--{name} cannot be used with several processes (--coordinator_address): '
                       'every process must compute every cell.')
  if devices.initialize(fv.coordinator_address, fv.num_processes, fv.process_id) == 1:
    return lambda: None
  if devices.is_writer():
    return lambda: None
  scratch = tempfile.TemporaryDirectory(prefix='ntk_attention_process_')
  fv.output_dir = scratch.name
  return scratch.cleanup


# ------------------------------------------------------------------------------------ start-up


def no_arguments(argv):
  """UsageError when the command line has positional arguments."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')


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


def checks(module, config, where: str = '', fv: flags.FlagValues = FLAGS) -> tuple:
  """The checks `check` runs, one function each (each raises ValueError in one line): the
  part's `check(config)`, the output folder (`--output_dir` under a file), and every load of
  its `data_needs` tried on the data (a class the dataset lacks, an npz without x and y, sizes
  larger than the pool, a tfds dataset offline; prefixed by `where`). `--dry_run` runs them
  all and lists every failure."""
  return (lambda: module.check(config),
          lambda: _base.check_output_dir(fv.output_dir),
          lambda: parts.check_pools(module.data_needs(config), config.data.seed,
                                    config.data.data_dir, where))


def check(module, config, where: str = '', fv: flags.FlagValues = FLAGS) -> None:
  """Before any work and before anything is written: every one of `checks(...)`; the first
  failure raises."""
  for one in checks(module, config, where, fv):
    one()


def setup(fv: flags.FlagValues = FLAGS, x64: bool = True):
  """Enables float64 (spectra, influence and analytic kernels need it), the matmul precision,
  the output folder and INFO logging."""
  from absl import logging
  _base.check_output_dir(fv.output_dir)   # still a bad flag value: one line
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
