r"""One command reproduces the study: every part, then one self-contained report.

  python scripts/reproduce.py --preset=quick --output_dir=results/quick

Presets are absl flagfiles in scripts/presets/ (quick, quick_cifar10, paper_mnist,
paper_cifar10, paper_binary); read and copy them. Flags given on the command line override
the preset.

Every part runs in this one process through the same library calls as its script
(spectral.py, ntk_distance.py, malleability.py, approximation.py, sensitivity.py; each part's
JSON/CSV/figures are what the script writes), into D/<part>/, with its log in
D/<part>/log.txt and a marker D/<part>/part.json when it finishes. Trained parameters are
shared between parts and kept in D/cache/train (a part that needs a model another part
trained loads it), and JAX's persistent compilation cache is on (--compilation_cache). One
line shows the whole run's progress. Running the same command again skips finished parts
(an interrupted part resumes from its JSONL) and re-renders D/report.md and D/report.html
(figures inlined); --force recomputes every part (trained parameters still come from the
cache). --isolate_parts runs each part as a subprocess instead (for debugging); --dry_run
prints every part's cells and an estimate of its time on this machine, and exits.

Parts: spectral, ntk_distance, malleability (10-class or --classes, ε sweep), binary
(--binary_tasks), interventions, adversarial_training, sensitivity, beyond (attention
variants, the influence-targeted attack, approximation error); and, only when named in
--parts, scaling (malleability against n, scripts/scaling.py). Any flag of an underlying script can be
added with --spectral_flags, --ntk_distance_flags, --malleability_flags,
--approximation_flags, --sensitivity_flags, --scaling_flags (e.g.
--malleability_flags="--pgd_steps=40"). docs/method.md §16 explains the in-process parts,
the training cache and the estimate.
"""
import contextlib
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import _common  # noqa: E402

PARTS = ('spectral', 'ntk_distance', 'malleability', 'binary', 'interventions',
         'adversarial_training', 'sensitivity', 'beyond')
# Run only when named in --parts (or a preset): beyond the study and costly at large n.
OPTIONAL_PARTS = ('scaling',)

# Beyond the study: model variants, each measured with ntk_distance and malleability.
VARIANTS = {
    'qkv_identity': ['--models=mlp_attn_qkv', '--qkv_mechanism=IDENTITY'],
    'qkv_softmax': ['--models=mlp_attn_qkv', '--qkv_mechanism=SOFTMAX'],
    'softmax': ['--models=mlp_attn', '--attn_normalize=softmax'],
    'depth2_shared': ['--models=mlp_attn', '--attn_depth=2', '--attn_shared=true'],
    'depth2_recomputed': ['--models=mlp_attn', '--attn_depth=2', '--attn_shared=false'],
    'rank5': ['--models=mlp_attn', '--attn_rank=5'],
    'rank20': ['--models=mlp_attn', '--attn_rank=20'],
    'baseline': ['--models=relu_mlp,mlp_attn'],
}

FLAGS = _common.script_flags(__name__)
_common.define_data_flags(FLAGS)
flags.DEFINE_string('preset', None, 'Name of a flagfile in scripts/presets/ (quick, quick_cifar10, '
                    'paper_mnist, paper_cifar10, paper_binary); later flags override it.',
                    flag_values=FLAGS)
flags.DEFINE_string('parts', ','.join(PARTS),
                    f'Comma list of parts to run, from {PARTS + OPTIONAL_PARTS} (the default: '
                    f'all but {", ".join(OPTIONAL_PARTS)}).', flag_values=FLAGS)
flags.DEFINE_bool('force', False, 'Recompute every part, ignoring finished parts (trained '
                  'parameters still come from the training cache).', flag_values=FLAGS)
flags.DEFINE_bool('isolate_parts', False, 'Run each part as a subprocess (the old way; for '
                  'debugging a part alone).', flag_values=FLAGS)
flags.DEFINE_bool('dry_run', False, "Print every part's cells and estimated time on this machine "
                  '(from a short measured calibration), then exit without computing.',
                  flag_values=FLAGS)
flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'ntk_attention', 'jax'),
                    "JAX's persistent compilation cache folder ('' = off): a later run, or "
                    'another process, loads compiled programs instead of compiling them again.',
                    flag_values=FLAGS)
# spectral
flags.DEFINE_string('n_grid', '25,50,100,200,500,1000', 'spectral: subset sizes of the κ(n) curve.',
                    flag_values=FLAGS)
# ntk_distance
flags.DEFINE_string('widths', '16,64,256,1024,4096', 'ntk_distance: widths.', flag_values=FLAGS)
flags.DEFINE_integer('ntk_seeds', 3, 'ntk_distance: seeds per width.', flag_values=FLAGS)
flags.DEFINE_string('ntk_models', 'relu_mlp,mlp_attn',
                    'ntk_distance: models, as its --models: ' + _common.MODELS_HELP + '.',
                    flag_values=FLAGS)
# malleability
flags.DEFINE_string('mall_models', 'relu_mlp,mlp_attn',
                    'malleability parts (malleability, binary, interventions, '
                    'adversarial_training, the influence attack): models, as --ntk_models.',
                    flag_values=FLAGS)
flags.DEFINE_integer('mall_width', 1024, 'malleability parts: width [choice].', flag_values=FLAGS)
flags.DEFINE_integer('mall_seeds', 3, 'malleability parts: seeds.', flag_values=FLAGS)
flags.DEFINE_string('attacks', 'fgsm,pgd,mim', 'malleability parts: attacks.', flag_values=FLAGS)
flags.DEFINE_string('epsilons', '0.1,0.2,0.3,0.5', 'malleability part: the ε sweep.',
                    flag_values=FLAGS)
flags.DEFINE_float('tau', 0.1, 'malleability parts: top-τ fraction [choice].', flag_values=FLAGS)
flags.DEFINE_string('kernel', 'empirical', 'malleability parts: influence kernel.',
                    flag_values=FLAGS)
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'],
                  "malleability parts: units of ε, [0, 1] pixels or the training pixels' std "
                  '[choice, docs/method.md §9].', flag_values=FLAGS)
flags.DEFINE_string('binary_tasks', 'same',
                    "binary part: '+'-separated DATASET[:CLASSES] tasks; 'same' = --dataset; "
                    "without CLASSES the study's pair for the dataset (MNIST 3,8, CIFAR-10 1,0), "
                    "e.g. 'mnist:3,8+cifar10:1,0'.", flag_values=FLAGS)
flags.DEFINE_integer('binary_n_train', 0, 'binary part: n_train (0 = 1000, shrunk to fit the pool).',
                     flag_values=FLAGS)
flags.DEFINE_integer('binary_n_test', 0, 'binary part: n_test (0 = 500, shrunk to fit the pool).',
                     flag_values=FLAGS)
flags.DEFINE_string('interventions', 'curated,transformed,adversarial', 'interventions part.',
                    flag_values=FLAGS)
flags.DEFINE_string('intervention_attacks', 'pgd',
                    'interventions part: attacks measured after each retrained intervention.',
                    flag_values=FLAGS)
flags.DEFINE_integer('at_epochs', 0, 'adversarial_training part: epochs (0 = --epochs).',
                     flag_values=FLAGS)
flags.DEFINE_integer('at_n_train', 0, 'adversarial_training part: n_train (0 = --n_train).',
                     flag_values=FLAGS)
flags.DEFINE_string('beyond_variants', ','.join(VARIANTS),
                    f'beyond part: model variants, from {tuple(VARIANTS)}.', flag_values=FLAGS)
flags.DEFINE_integer('beyond_n_train', 300, 'beyond part: n_train (QKV NTKs cost N·C·#params).',
                     flag_values=FLAGS)
flags.DEFINE_integer('beyond_n_test', 100, 'beyond part: n_test.', flag_values=FLAGS)
flags.DEFINE_integer('beyond_epochs', 0, 'beyond part: epochs (0 = --epochs).', flag_values=FLAGS)
flags.DEFINE_string('beyond_widths', '16,64,256', 'beyond part: widths of the NTK-distance runs.',
                    flag_values=FLAGS)
flags.DEFINE_integer('beyond_width', 64, 'beyond part: width of the malleability runs.',
                     flag_values=FLAGS)
flags.DEFINE_integer('beyond_seeds', 2, 'beyond part: seeds.', flag_values=FLAGS)
flags.DEFINE_string('beyond_parts', 'variants,influence_attack,approximation',
                    "beyond part: which of 'variants' (--beyond_variants, each with "
                    "ntk_distance and malleability), 'influence_attack', 'approximation'.",
                    flag_values=FLAGS)
# scaling (optional part)
flags.DEFINE_string('scaling_n_grid', '250,500,1000,2000',
                    'scaling part: training-set sizes n (nested subsets; PGD at ε = 0.3, '
                    '--mall_width, --mall_seeds).', flag_values=FLAGS)
# sensitivity
flags.DEFINE_integer('sens_n_train', 0, 'sensitivity part: baseline n_train (0 = --n_train).',
                     flag_values=FLAGS)
flags.DEFINE_integer('sens_n_test', 0, 'sensitivity part: n_test (0 = --n_test).',
                     flag_values=FLAGS)
flags.DEFINE_integer('sens_width', 0, 'sensitivity part: baseline width (0 = --mall_width).',
                     flag_values=FLAGS)
flags.DEFINE_integer('sens_epochs', 0, 'sensitivity part: baseline epochs (0 = --epochs).',
                     flag_values=FLAGS)
flags.DEFINE_integer('sens_seeds', 3, 'sensitivity part: seeds (>= 2, for the bootstrap).',
                     flag_values=FLAGS)
flags.DEFINE_string('sens_tasks', 'all+binary',
                    "sensitivity part: '+'-separated tasks ('binary' = the study's pair).",
                    flag_values=FLAGS)
flags.DEFINE_string('sens_attacks', 'fgsm,pgd,mim', 'sensitivity part: attacks.', flag_values=FLAGS)
flags.DEFINE_string('sens_variations', '',
                    "sensitivity part: 'CHOICE=V1,V2;...' ('' = the default grid).",
                    flag_values=FLAGS)
for _script, _example in (('spectral', '--rtol=1e-8'), ('ntk_distance', '--widths=64,1024'),
                          ('malleability', '--pgd_steps=40 --ridge=1e-2'),
                          ('approximation', '--k_top=10 --noise=0.1'),
                          ('sensitivity', '--width=256'), ('scaling', '--attack=mim')):
  flags.DEFINE_string(f'{_script}_flags', '',
                      f'Extra flags for every {_script}.py run, e.g. "{_example}": '
                      'any flag of the underlying script overrides the preset this way.',
                      flag_values=FLAGS)
_common.define_training_flags(FLAGS)
_common.define_model_flags(FLAGS)

PRESETS = os.path.join(HERE, 'presets')


def _arg(name, value):
  return f'--{name}={value}'


def _data_args(dataset=None, classes=None, n_train=None, n_test=None):
  """Data flags of a part; `n_train=0`/`n_test=0` leave the script's default (which shrinks
  to fit small pools, e.g. digits 3 vs 8)."""
  n_train = FLAGS.n_train if n_train is None else n_train
  n_test = FLAGS.n_test if n_test is None else n_test
  args = [_arg('dataset', dataset or FLAGS.dataset),
          _arg('classes', FLAGS.classes if classes is None else classes), _arg('seed', FLAGS.seed)]
  args += [_arg('n_train', n_train)] if n_train else []
  args += [_arg('n_test', n_test)] if n_test else []
  if FLAGS.data_dir:
    args.append(_arg('data_dir', FLAGS.data_dir))
  if FLAGS['matmul_precision'].present:
    args.append(_arg('matmul_precision', FLAGS.matmul_precision))
  return args


def _train_args(epochs=None):
  return [_arg('epochs', epochs or FLAGS.epochs), _arg('batch_size', FLAGS.batch_size),
          _arg('lr', FLAGS.lr), _arg('weight_decay', FLAGS.weight_decay),
          _arg('optimizer', FLAGS.optimizer), _arg('loss', FLAGS.loss),
          _arg('init_std', FLAGS.init_std), _arg('train_cache', train_cache_dir())]


def train_cache_dir():
  """--train_cache, by default D/cache/train."""
  return os.path.expanduser(FLAGS.train_cache) or os.path.join(FLAGS.output_dir, 'cache', 'train')


def _mall_args(epsilons, attacks=None):
  return [_arg('models', FLAGS.mall_models), _arg('width', FLAGS.mall_width),
          _arg('seeds', FLAGS.mall_seeds), _arg('attacks', attacks or FLAGS.attacks),
          _arg('epsilons', epsilons), _arg('tau', FLAGS.tau), _arg('kernel', FLAGS.kernel),
          _arg('eps_units', FLAGS.eps_units)]


def _sensitivity_args():
  n_train = FLAGS.sens_n_train or FLAGS.n_train
  n_test = FLAGS.sens_n_test or FLAGS.n_test
  return (_data_args(classes='', n_train=n_train, n_test=n_test)
          + _train_args(FLAGS.sens_epochs or None)
          + [_arg('width', FLAGS.sens_width or FLAGS.mall_width), _arg('seeds', FLAGS.sens_seeds),
             _arg('tasks', FLAGS.sens_tasks), _arg('attacks', FLAGS.sens_attacks),
             _arg('tau', FLAGS.tau), _arg('kernel', FLAGS.kernel),
             _arg('eps_units', FLAGS.eps_units)]
          + ([_arg('variations', FLAGS.sens_variations)] if FLAGS.sens_variations else []))


def binary_tasks():
  """[(dataset, classes)] from --binary_tasks; a DATASET without CLASSES gets the study's
  binary pair for it (`paper.binary_classes`: 3,8 on MNIST-like data, 1,0 on CIFAR-10)."""
  from ntk_attention.study import paper
  tasks = []
  for item in FLAGS.binary_tasks.split('+'):
    if not item.strip():
      continue
    ds, _, classes = item.strip().partition(':')
    ds = FLAGS.dataset if ds == 'same' else ds
    tasks.append((ds, classes or paper.binary_classes(ds)))
  return tasks


def commands() -> dict:
  """Part name -> list of (subfolder, script, args)."""
  mall = os.path.join(HERE, 'malleability.py')
  cmds = {
      'spectral': [('spectral', os.path.join(HERE, 'spectral.py'),
                    _data_args() + [_arg('n_grid', FLAGS.n_grid)])],
      'ntk_distance': [('ntk_distance', os.path.join(HERE, 'ntk_distance.py'),
                        _data_args() + _train_args() + [
                            _arg('models', FLAGS.ntk_models), _arg('widths', FLAGS.widths),
                            _arg('seeds', FLAGS.ntk_seeds)])],
      'malleability': [('malleability', mall,
                        _data_args() + _train_args() + _mall_args(FLAGS.epsilons))],
      'binary': [(f'binary_{ds}_{cls.replace(",", "_")}', mall,
                  _data_args(ds, cls, FLAGS.binary_n_train, FLAGS.binary_n_test)
                  + _train_args() + _mall_args('0.3'))
                 for ds, cls in binary_tasks()],
      'interventions': [('interventions', mall,
                         _data_args() + _train_args()
                         + _mall_args('0.3', FLAGS.intervention_attacks)
                         + [_arg('interventions', FLAGS.interventions)])],
      'adversarial_training': [('adversarial_training', mall,
                                _data_args(n_train=FLAGS.at_n_train or None)
                                + _train_args(FLAGS.at_epochs or None)
                                + _mall_args('0.3', 'pgd') + ['--adversarial_training'])],
      'sensitivity': [('sensitivity', os.path.join(HERE, 'sensitivity.py'),
                       _sensitivity_args())],
      'beyond': beyond_commands(),
      'scaling': [('scaling', os.path.join(HERE, 'scaling.py'),
                   _data_args(n_train=0) + _train_args() + [
                       _arg('n_grid', FLAGS.scaling_n_grid), _arg('width', FLAGS.mall_width),
                       _arg('seeds', FLAGS.mall_seeds), _arg('tau', FLAGS.tau),
                       _arg('eps_units', FLAGS.eps_units)])],
  }
  return cmds


def beyond_commands():
  """Variants × (ntk_distance, malleability), the influence-targeted attack and the
  approximation-error study, on the smaller `--beyond_*` sizes."""
  data = _data_args(n_train=FLAGS.beyond_n_train, n_test=FLAGS.beyond_n_test)
  train = _train_args(FLAGS.beyond_epochs or None)
  cmds = []
  parts = FLAGS.beyond_parts.split(',')
  for name in (FLAGS.beyond_variants.split(',') if 'variants' in parts else []):
    flags_ = VARIANTS[name]
    cmds.append((f'beyond/{name}/ntk_distance', os.path.join(HERE, 'ntk_distance.py'),
                 data + train + flags_ + [_arg('widths', FLAGS.beyond_widths),
                                          _arg('seeds', FLAGS.beyond_seeds)]))
    cmds.append((f'beyond/{name}/malleability', os.path.join(HERE, 'malleability.py'),
                 data + train + flags_ + [_arg('width', FLAGS.beyond_width),
                                          _arg('seeds', FLAGS.beyond_seeds),
                                          _arg('attacks', 'pgd'), _arg('epsilons', '0.3'),
                                          _arg('tau', FLAGS.tau), _arg('kernel', FLAGS.kernel)]))
  if 'influence_attack' in parts:
    cmds.append(('beyond/influence_attack', os.path.join(HERE, 'malleability.py'),
                 data + train + [_arg('models', FLAGS.mall_models),
                                 _arg('width', FLAGS.beyond_width),
                                 _arg('seeds', FLAGS.beyond_seeds),
                                 _arg('attacks', 'pgd,influence'), _arg('epsilons', '0.1,0.3'),
                                 _arg('tau', FLAGS.tau), _arg('kernel', FLAGS.kernel),
                                 _arg('eps_units', FLAGS.eps_units)]))
  if 'approximation' in parts:
    cmds.append(('beyond/approximation', os.path.join(HERE, 'approximation.py'), _data_args()))
  return cmds


def run_part(sub, script, args, context):
  """Runs one part unless its marker says it finished with the same command: in-process
  (`context`, the shared trainer) or, with --isolate_parts, as a subprocess. Its log goes to
  D/<sub>/log.txt."""
  from ntk_attention.study import progress as progress_lib
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  out = os.path.join(FLAGS.output_dir, sub)
  marker = os.path.join(out, 'part.json')
  args = args + _extra_args(script) + [_arg('output_dir', out)]
  shown = ' '.join(['python', os.path.relpath(script, os.path.dirname(HERE))] + args)
  if FLAGS.force and os.path.isdir(out):
    shutil.rmtree(out)
  if os.path.exists(marker):
    info = store_lib.read_json(marker)
    if info.get('command') == shown:
      logging.info('[%s] cached (%s)', sub, marker)
      return dict(info, status='cached')
    logging.info('[%s] settings changed: recomputing', sub)
    shutil.rmtree(out)
  # An unfinished part resumes from its JSONL where the script supports it; the others rerun.
  resume = os.path.isdir(out) and os.path.basename(script) in (
      'ntk_distance.py', 'malleability.py', 'sensitivity.py', 'scaling.py')
  args = args + (['--resume'] if resume else [])
  logging.info('[%s] %s%s', sub, shown, ' --resume' if resume else '')
  os.makedirs(out, exist_ok=True)
  log_path = os.path.join(out, 'log.txt')
  t0 = time.time()
  if FLAGS.isolate_parts:
    with open(log_path, 'w') as log:
      env = dict(os.environ, **_compilation_cache_env())
      proc = subprocess.run([sys.executable, script] + args, stdout=log, stderr=log, env=env)
    if proc.returncode != 0:
      raise RuntimeError(f'part {sub} failed (exit {proc.returncode}; log: {log_path}): {shown}')
  else:
    try:
      _run_in_process(script, args, log_path, context)
    except Exception as e:
      raise RuntimeError(f'part {sub} failed ({type(e).__name__}: {e}; log: {log_path}): '
                         f'{shown}') from e
  info = {'command': shown, 'seconds': time.time() - t0, 'finished': time.strftime('%F %T')}
  store_lib.write_json(marker, info)
  return dict(info, status='computed')


_SCRIPTS = {}


def _script_module(script):
  """The script imported once as a module; its flags live in its own registry (`FLAGS`)."""
  name = os.path.basename(script)[:-3]
  if name not in _SCRIPTS:
    _SCRIPTS[name] = importlib.import_module(name)
  return _SCRIPTS[name]


def _run_in_process(script, args, log_path, context):
  """`python script args` in this process: parse `args` into the script's own flags and call
  its `main` with the shared `context`; its log and printed output go to `log_path`."""
  import logging as std_logging
  module = _parse_script_flags(script, args)
  handler = std_logging.FileHandler(log_path, mode='w')
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
  absl_handler = logging.get_absl_handler()
  level = absl_handler.level
  logging.get_absl_logger().addHandler(handler)
  absl_handler.setLevel(std_logging.WARNING)     # the run's progress line is on the terminal
  try:
    with open(log_path, 'a') as log, contextlib.redirect_stdout(log):
      module.main([script], context=context)
  finally:
    absl_handler.setLevel(level)
    logging.get_absl_logger().removeHandler(handler)
    handler.close()


def _compilation_cache_env():
  path = os.path.expanduser(FLAGS.compilation_cache)
  return {'JAX_COMPILATION_CACHE_DIR': path,
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'} if path else {}


def count_compilations() -> dict:
  """{'new': programs compiled, 'cached': programs loaded from the persistent compilation
  cache}, counted from JAX's monitoring events for the rest of this process."""
  import jax
  counts = {'new': 0, 'cached': 0}
  names = {'/jax/compilation_cache/cache_misses': 'new',
           '/jax/compilation_cache/cache_hits': 'cached'}

  def listener(event, **kwargs):
    del kwargs
    if event in names:
      counts[names[event]] += 1

  jax.monitoring.register_event_listener(listener)
  return counts


def enable_compilation_cache():
  """JAX's persistent compilation cache in --compilation_cache (every program, however quick
  to compile, so that a second run compiles nothing)."""
  import jax
  path = os.path.expanduser(FLAGS.compilation_cache)
  if path:
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def build_report(parts_info, wall):
  """Writes D/report.md, D/report.html and D/figures/ from the parts' results on disk."""
  from ntk_attention.study import report
  flag_values = {n: FLAGS[n].value for n in sorted(FLAGS) if FLAGS[n].present or n in (
      'preset', 'dataset', 'n_train', 'n_test', 'seed', 'epochs')}
  flag_values = {k: v for k, v in flag_values.items() if k not in ('flagfile', 'output_dir')}
  return report.build(
      FLAGS.output_dir, dataset=FLAGS.dataset, task=FLAGS.classes or 'all',
      binary_tasks=binary_tasks(), beyond_variants=FLAGS.beyond_variants.split(','),
      beyond_sizes={'n_train': FLAGS.beyond_n_train, 'n_test': FLAGS.beyond_n_test,
                    'width': FLAGS.beyond_width},
      scaling='scaling' in parts_info, parts_info=parts_info, flags=flag_values, provenance=_common.provenance(FLAGS), wall=wall)


def main(argv):
  del argv
  parts = _common.parse_names(FLAGS.parts, 'parts', PARTS + OPTIONAL_PARTS)
  _common.parse_names(FLAGS.beyond_variants, 'beyond_variants', VARIANTS)
  from ntk_attention import malleability
  _common.check_data_flags(FLAGS)
  _common.parse_int_list(FLAGS.widths, 'widths')
  _common.parse_models(FLAGS.ntk_models, 'ntk_models')
  _common.parse_models(FLAGS.mall_models, 'mall_models')
  _common.parse_names(FLAGS.attacks, 'attacks', malleability.ATTACKS)
  _common.parse_names(FLAGS.intervention_attacks, 'intervention_attacks', malleability.ATTACKS)
  _common.parse_names(FLAGS.sens_attacks, 'sens_attacks', ('fgsm', 'pgd', 'mim'))
  for eps in _common.parse_float_list(FLAGS.epsilons, 'epsilons'):
    if not 0 <= eps <= 1:
      raise ValueError(f'--epsilons must lie in [0, 1], got {eps}.')
  if not 0 < FLAGS.tau <= 1:
    raise ValueError(f'--tau must be in (0, 1], got {FLAGS.tau}.')
  _common.training_config(FLAGS)
  _common.parse_int_list(FLAGS.beyond_widths, 'beyond_widths')
  _common.parse_int_list(FLAGS.scaling_n_grid, 'scaling_n_grid')
  _common.parse_names(FLAGS.beyond_parts, 'beyond_parts',
                      ('variants', 'influence_attack', 'approximation'))
  _common.model_options(FLAGS)
  if FLAGS.sens_seeds < 2:
    raise ValueError(f'--sens_seeds must be >= 2, got {FLAGS.sens_seeds}.')
  for ds, cls in binary_tasks():
    from ntk_attention import data
    data.validate_dataset_name(ds)
    try:
      n_classes = len(data.parse_classes(cls) or ())
    except ValueError as e:
      raise ValueError(f'--binary_tasks: {ds}:{cls}: {e}') from None
    if n_classes != 2:
      raise ValueError(f'--binary_tasks: {ds}:{cls} is not a pair of classes.')
  from ntk_attention.study import cache
  from ntk_attention.study import plan
  todo = [(sub, script, args) for part in parts for sub, script, args in commands()[part]]
  problems = check_parts_data(todo, strict=not FLAGS.dry_run)
  costs = [(sub, plan.part_cost(os.path.basename(script)[:-3], part_values(script, args)))
           for sub, script, args in todo]
  import jax
  jax.config.update('jax_enable_x64', True)     # float64 rates; every part runs with x64
  jax.config.update('jax_default_matmul_precision', FLAGS.matmul_precision)   # as the parts
  rates = plan.calibrate()
  if FLAGS.dry_run:
    print(dry_run_text(costs, rates))
    for problem in group_problems(problems):
      print(f'would fail: {problem}')
    return
  _common.setup(FLAGS)
  enable_compilation_cache()
  compilations = count_compilations()
  t0 = time.time()
  progress = plan.RunProgress({sub: plan.seconds(cost, rates) for sub, cost in costs})
  context = _common.PartContext(train_fn=cache.cached_train(directory=train_cache_dir()),
                                on_progress=progress.cell)
  info = {}
  for sub, script, args in todo:
    progress.begin(sub)
    info[sub] = run_part(sub, script, args, context)
    progress.end(sub, cached=info[sub]['status'] == 'cached')
  progress.close()
  stats = context.train_fn.stats
  logging.info('trainings: %d seeds trained, %d loaded from %s, %d reused in memory',
               stats['trained'], stats['loaded'], train_cache_dir(), stats['hits'])
  if FLAGS.compilation_cache:
    logging.info('compilations: %d new, %d loaded from %s', compilations['new'],
                 compilations['cached'], os.path.expanduser(FLAGS.compilation_cache))
  text = build_report(info, time.time() - t0)
  logging.info('report: %s (and report.html)', os.path.join(FLAGS.output_dir, 'report.md'))
  print(text)


def check_parts_data(todo, strict: bool = True) -> list:
  """Every part's data loads (the script's `data_needs`) and its --models are models
  (`_common.parse_models`, e.g. a 'module:function' given in --sensitivity_flags), tried
  before anything is computed: a pool too small for a part's sizes (or a dataset not
  available offline) or a bad model is a one-line error naming the part; with
  `strict=False` (--dry_run) the problems are returned."""
  checked, problems = set(), []
  for sub, script, args in todo:
    module = _parse_script_flags(script, args + _extra_args(script))
    if 'models' in module.FLAGS:
      try:
        _common.parse_models(module.FLAGS.models, count=getattr(module, 'MODEL_COUNT', None))
      except ValueError as e:
        if strict:
          raise ValueError(f'part {sub}: {e}') from None
        problems.append(f'part {sub}: {e}')
    needs = getattr(module, 'data_needs', _common.data_needs)(module.FLAGS)
    try:
      _common.check_pools(needs, module.FLAGS.seed, module.FLAGS.data_dir, f'part {sub}: ',
                          checked)
    except ValueError as e:
      if strict:
        raise
      problems.append(str(e))
  return problems


def group_problems(problems) -> list:
  """'part A: why' lines with the same reason merged into 'parts A, B: why' (in order)."""
  by_reason = {}
  for p in problems:
    part, sep, reason = p.partition(': ')
    if not (sep and part.startswith('part ')):
      part, reason = '', p
    by_reason.setdefault(reason, []).append(part[len('part '):])
  out = []
  for reason, parts in by_reason.items():
    parts = [x for x in parts if x]
    head = f'part {parts[0]}' if len(parts) == 1 else f'parts {", ".join(parts)}'
    out.append(f'{head}: {reason}' if parts else reason)
  return out


def _extra_args(script):
  """--<script>_flags of this run, split."""
  return shlex.split(FLAGS[os.path.basename(script)[:-3] + '_flags'].value)


def part_values(script, args) -> dict:
  """Every flag value of `python script args` (the script's defaults filled in), parsed
  into the script's own flag registry and reset again."""
  module = _parse_script_flags(script, args + _extra_args(script))
  return module.FLAGS.flag_values_dict()


def _parse_script_flags(script, args):
  """The script's module with `args` parsed into its flags (from their defaults)."""
  module = _script_module(script)
  if module.FLAGS.is_parsed():
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)     # absl logs every unparse at INFO
    module.FLAGS.unparse_flags()
    logging.set_verbosity(verbosity)
  module.FLAGS([script] + args)
  return module


def dry_run_text(costs, rates) -> str:
  """The --dry_run table: each part's cells and estimated time on this machine."""
  import jax
  from ntk_attention.study import plan
  from ntk_attention.study import progress as progress_lib
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  rows = plan.dry_run_table(costs, rates)
  total = sum(r['estimate_s'] for r in rows)
  for r in rows:
    r['estimate'] = progress_lib.format_duration(r.pop('estimate_s'))
  return '\n'.join([
      f'dry run: {len(rows)} parts; this machine ({jax.default_backend()}, '
      f'{len(jax.devices())} device(s)) measured {rates.f32 / 1e9:.0f} GFLOP/s float32 and '
      f'{rates.f64 / 1e9:.0f} GFLOP/s float64 on matrix products.', '',
      page.markdown_table(rows, ['part', 'cells', 'gflop_f32', 'gflop_f64', 'estimate'],
                               floatfmt='.3g'), '',
      f'estimated total: {progress_lib.format_duration(total)} (a factor of 2 either way; '
      'nothing was computed)'])


def expand_preset(argv):
  """`--preset=NAME` -> `--flagfile=presets/NAME.cfg` placed first, so later flags win."""
  out, preset = [argv[0]], None
  for a in argv[1:]:
    if a.startswith('--preset='):
      preset = a.split('=', 1)[1]
  if preset:
    path = os.path.join(PRESETS, preset + '.cfg')
    if not os.path.exists(path):
      names = sorted(f[:-4] for f in os.listdir(PRESETS) if f.endswith('.cfg'))
      sys.exit(f'unknown --preset={preset}; available: {", ".join(names)}')
    out.append('--flagfile=' + path)
  return out + argv[1:]


if __name__ == '__main__':
  _common.run(main, argv=expand_preset(sys.argv))
