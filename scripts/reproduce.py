r"""One command reproduces the study: every part, then one self-contained report.

  python scripts/reproduce.py --preset=quick --output_dir=results/quick

Presets are absl flagfiles in scripts/presets/ (quick, quick_cifar10, paper_mnist,
paper_cifar10, paper_binary); read and copy them. Flags given on the command line override
the preset.

Each part runs the matching script (spectral.py, ntk_distance.py, malleability.py) as a
subprocess into D/<part>/ and leaves a marker D/<part>/part.json when it finishes. Running
the same command again skips finished parts (no retraining; an interrupted part resumes
from its JSONL) and re-renders D/report.md and D/report.html (figures inlined). --force
recomputes everything.

Parts: spectral, ntk_distance, malleability (10-class or --classes, ε sweep), binary
(--binary_tasks), interventions, adversarial_training, beyond (attention variants, the
influence-targeted attack, approximation error). Any flag of an underlying script can be
added with --spectral_flags, --ntk_distance_flags, --malleability_flags,
--approximation_flags (e.g. --malleability_flags="--pgd_steps=40").
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import _common  # noqa: E402

PARTS = ('spectral', 'ntk_distance', 'malleability', 'binary', 'interventions',
         'adversarial_training', 'sensitivity', 'beyond')

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

flags.DEFINE_string('preset', None, 'Name of a flagfile in scripts/presets/ (quick, quick_cifar10, '
                    'paper_mnist, paper_cifar10, paper_binary); later flags override it.')
flags.DEFINE_string('parts', ','.join(PARTS), 'Comma list of parts to run.')
flags.DEFINE_bool('force', False, 'Recompute every part, ignoring cached results.')
# spectral
flags.DEFINE_string('n_grid', '25,50,100,200,500,1000', 'spectral: subset sizes of the κ(n) curve.')
# ntk_distance
flags.DEFINE_string('widths', '16,64,256,1024,4096', 'ntk_distance: widths.')
flags.DEFINE_integer('ntk_seeds', 3, 'ntk_distance: seeds per width.')
flags.DEFINE_string('ntk_models', 'relu_mlp,mlp_attn', 'ntk_distance: models.')
# malleability
flags.DEFINE_string('mall_models', 'relu_mlp,mlp_attn', 'malleability parts: models.')
flags.DEFINE_integer('mall_width', 1024, 'malleability parts: width [choice].')
flags.DEFINE_integer('mall_seeds', 3, 'malleability parts: seeds.')
flags.DEFINE_string('attacks', 'fgsm,pgd,mim', 'malleability parts: attacks.')
flags.DEFINE_string('epsilons', '0.1,0.2,0.3,0.5', 'malleability part: the ε sweep.')
flags.DEFINE_float('tau', 0.1, 'malleability parts: top-τ fraction [choice].')
flags.DEFINE_string('kernel', 'empirical', 'malleability parts: influence kernel.')
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'],
                  "malleability parts: units of ε, [0, 1] pixels or the training pixels' std "
                  '[choice, docs/method.md §9].')
flags.DEFINE_string('binary_tasks', 'same',
                    "binary part: '+'-separated DATASET[:CLASSES] tasks; 'same' = --dataset; "
                    "without CLASSES the study's pair for the dataset (MNIST 3,8, CIFAR-10 1,0), "
                    "e.g. 'mnist:3,8+cifar10:1,0'.")
flags.DEFINE_integer('binary_n_train', 0, 'binary part: n_train (0 = 1000, shrunk to fit the pool).')
flags.DEFINE_integer('binary_n_test', 0, 'binary part: n_test (0 = 500, shrunk to fit the pool).')
flags.DEFINE_string('interventions', 'curated,transformed,adversarial', 'interventions part.')
flags.DEFINE_string('intervention_attacks', 'pgd',
                    'interventions part: attacks measured after each retrained intervention.')
flags.DEFINE_integer('at_epochs', 0, 'adversarial_training part: epochs (0 = --epochs).')
flags.DEFINE_integer('at_n_train', 0, 'adversarial_training part: n_train (0 = --n_train).')
flags.DEFINE_string('beyond_variants', ','.join(VARIANTS),
                    f'beyond part: model variants, from {tuple(VARIANTS)}.')
flags.DEFINE_integer('beyond_n_train', 300, 'beyond part: n_train (QKV NTKs cost N·C·#params).')
flags.DEFINE_integer('beyond_n_test', 100, 'beyond part: n_test.')
flags.DEFINE_integer('beyond_epochs', 0, 'beyond part: epochs (0 = --epochs).')
flags.DEFINE_string('beyond_widths', '16,64,256', 'beyond part: widths of the NTK-distance runs.')
flags.DEFINE_integer('beyond_width', 64, 'beyond part: width of the malleability runs.')
flags.DEFINE_integer('beyond_seeds', 2, 'beyond part: seeds.')
flags.DEFINE_string('beyond_parts', 'variants,influence_attack,approximation',
                    "beyond part: which of 'variants' (--beyond_variants, each with "
                    "ntk_distance and malleability), 'influence_attack', 'approximation'.")
# sensitivity
flags.DEFINE_integer('sens_n_train', 0, 'sensitivity part: baseline n_train (0 = --n_train).')
flags.DEFINE_integer('sens_n_test', 0, 'sensitivity part: n_test (0 = --n_test).')
flags.DEFINE_integer('sens_width', 0, 'sensitivity part: baseline width (0 = --mall_width).')
flags.DEFINE_integer('sens_epochs', 0, 'sensitivity part: baseline epochs (0 = --epochs).')
flags.DEFINE_integer('sens_seeds', 3, 'sensitivity part: seeds (>= 2, for the bootstrap).')
flags.DEFINE_string('sens_tasks', 'all+binary',
                    "sensitivity part: '+'-separated tasks ('binary' = the study's pair).")
flags.DEFINE_string('sens_attacks', 'fgsm,pgd,mim', 'sensitivity part: attacks.')
flags.DEFINE_string('sens_variations', '',
                    "sensitivity part: 'CHOICE=V1,V2;...' ('' = the default grid).")
for _script in ('spectral', 'ntk_distance', 'malleability', 'approximation', 'sensitivity'):
  flags.DEFINE_string(f'{_script}_flags', '',
                      f'Extra flags for every {_script}.py run, e.g. "--pgd_steps=40 --ridge=1e-2": '
                      'any flag of the underlying script overrides the preset this way.')
_common.define_training_flags()
_common.define_model_flags()

FLAGS = flags.FLAGS
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
  return args


def _train_args(epochs=None):
  return [_arg('epochs', epochs or FLAGS.epochs), _arg('batch_size', FLAGS.batch_size),
          _arg('lr', FLAGS.lr), _arg('weight_decay', FLAGS.weight_decay),
          _arg('optimizer', FLAGS.optimizer), _arg('loss', FLAGS.loss),
          _arg('init_std', FLAGS.init_std)]


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
  from ntk_attention import paper
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


def run_part(name, sub, script, args):
  """Runs one part unless its marker says it finished with the same command."""
  from ntk_attention import reporting
  out = os.path.join(FLAGS.output_dir, sub)
  marker = os.path.join(out, 'part.json')
  args = args + shlex.split(FLAGS[os.path.basename(script)[:-3] + '_flags'].value)
  cmd = [sys.executable, script] + args + [_arg('output_dir', out)]
  shown = ' '.join(['python', os.path.relpath(script, os.path.dirname(HERE))] + args
                   + [_arg('output_dir', out)])
  if FLAGS.force and os.path.isdir(out):
    shutil.rmtree(out)
  if os.path.exists(marker):
    info = reporting.read_json(marker)
    if info.get('command') == shown:
      logging.info('[%s] cached (%s)', sub, marker)
      return dict(info, status='cached')
    logging.info('[%s] settings changed: recomputing', sub)
    shutil.rmtree(out)
  # An unfinished part resumes from its JSONL where the script supports it; the others rerun.
  resume = os.path.isdir(out) and os.path.basename(script) in ('ntk_distance.py', 'malleability.py')
  logging.info('[%s] %s%s', sub, shown, ' --resume' if resume else '')
  t0 = time.time()
  proc = subprocess.run(cmd + (['--resume'] if resume else []))
  if proc.returncode != 0:
    raise RuntimeError(f'part {sub} failed (exit {proc.returncode}): {shown}')
  info = {'command': shown, 'seconds': time.time() - t0, 'finished': time.strftime('%F %T')}
  reporting.write_json(marker, info)
  return dict(info, status='computed')


def build_report(parts_info, wall):
  """Writes D/report.md and D/report.html from the parts' results on disk."""
  from ntk_attention import paper
  from ntk_attention import report
  from ntk_attention import reporting
  d = FLAGS.output_dir

  def load(sub, name):
    path = os.path.join(d, sub, name)
    return reporting.read_json(path) if os.path.exists(path) else None

  def figs(sub, names):
    return [os.path.join(sub, n) for n in names if os.path.exists(os.path.join(d, sub, n))]

  sections = [f'# ntk_attention: reproduction of arXiv 2603.13085 on `{FLAGS.dataset}`', '',
              f'Paper: {paper.CITATION}. Numbers labelled *paper* are the study\'s; every other '
              f'number is computed by this run (total wall time {reporting.format_duration(wall)}).',
              '']
  flag_values = {n: FLAGS[n].value for n in sorted(FLAGS) if FLAGS[n].present or n in (
      'preset', 'dataset', 'n_train', 'n_test', 'seed', 'epochs')}
  flag_values = {k: v for k, v in flag_values.items() if k not in ('flagfile', 'output_dir')}
  sections.append(report.provenance_section(parts_info, flag_values, _common.provenance()))
  spec = load('spectral', 'spectral.json')
  if spec:
    sections.append(report.spectral_section(
        spec, figs('spectral', ['spectral_spectra.png', 'spectral_kappa_vs_n.png'])))
  nd = load('ntk_distance', 'ntk_distance.json')
  if nd:
    sections.append(report.ntk_distance_section(nd, FLAGS.dataset, figs('ntk_distance', [
        'ntk_distance_function_distance.png', 'ntk_distance_kernel_distance_final.png',
        'ntk_distance_kernel_movement.png', 'ntk_distance_test_accuracy.png'])))
  task = FLAGS.classes or 'all'
  mall = load('malleability', 'malleability.json')
  if mall:
    sections.append(report.malleability_section(
        mall, 'Influence malleability', FLAGS.dataset, task,
        figs('malleability', ['malleability_flip_rates.png', 'malleability_eps.png',
                              'malleability_influence_relu_mlp.png',
                              'malleability_influence_mlp_attn.png'])))
    sections.append(report.trainability_section(mall, figs('malleability',
                                                           ['malleability_loss.png'])))
  for ds, cls in binary_tasks():
    sub = f'binary_{ds}_{cls.replace(",", "_")}'
    res = load(sub, 'malleability.json')
    if res:
      sections.append(report.malleability_section(
          res, f'Binary task {ds} {cls}', ds, cls, figs(sub, ['malleability_flip_rates.png'])))
  res = load('interventions', 'malleability.json')
  if res:
    sections.append(report.malleability_section(
        res, 'Interventions (each retrained)', FLAGS.dataset, task,
        figs('interventions', ['malleability_flip_rates.png'])))
  res = load('adversarial_training', 'malleability.json')
  if res:
    sections.append(report.malleability_section(
        res, 'PGD adversarial training', FLAGS.dataset, task))
  res = load('sensitivity', 'sensitivity.json')
  if res:
    figures = [os.path.join('sensitivity', f) for f in sorted(os.listdir(os.path.join(d, 'sensitivity')))
               if f.startswith('sensitivity_tornado') and f.endswith('.png')]
    sections.append(report.sensitivity_section(res, figures))
  sections.append(beyond_section(load, figs, spec))
  text = '\n'.join(s for s in sections if s)
  reporting.write_text(os.path.join(d, 'report.md'), text)
  reporting.write_text(os.path.join(d, 'report.html'), reporting.html_report(text, d))
  return text


def beyond_section(load, figs, spec):
  """Markdown of the 'beyond' part from whatever of it is on disk."""
  from ntk_attention import report
  from ntk_attention import reporting
  out = []
  variants = {}
  for name in FLAGS.beyond_variants.split(','):
    nd = load(f'beyond/{name}/ntk_distance', 'ntk_distance.json')
    mall = load(f'beyond/{name}/malleability', 'malleability.json')
    if nd or mall:
      variants[name] = (nd, mall)
  if variants:
    rows = report.variants_table(variants)
    out += ['### Attention variants: distance to the NTK and malleability', '',
            f'{FLAGS.beyond_n_train} training / {FLAGS.beyond_n_test} test points; trained '
            f'kernel distance and function distance at the smallest → largest width; flip rate '
            f'at width {FLAGS.beyond_width}.', '',
            reporting.markdown_table(rows, list(dict.fromkeys(k for r in rows for k in r))), '',
            report.variants_reading(variants), '']
  if spec and spec.get('variant_checks'):
    rows = report.variant_checks_table(spec)
    out += ['### Depth and truncation: measured against predicted condition numbers', '',
            f"On the first {spec.get('variant_checks_n')} training points (float64).", '',
            reporting.markdown_table(rows, list(rows[0])), '']
  res = load('beyond/influence_attack', 'malleability.json')
  if res:
    out += ['### Influence-targeted attack', '',
            report.malleability_section(res, 'Influence-targeted attack vs PGD', FLAGS.dataset,
                                        FLAGS.classes or 'all').split('\n', 2)[2],
            report.influence_attack_reading(res), '']
  approx = load('beyond/approximation', 'approximation.json')
  if approx:
    out += ['### Approximation error: the "power" side', '', report.approximation_section(approx),
            *[f'![{f}]({f})' for f in figs('beyond/approximation', ['approximation.png'])], '']
  return '## Beyond the study\n\n' + '\n'.join(out) + '\n' if out else ''


def main(argv):
  del argv
  parts = _common.parse_names(FLAGS.parts, 'parts', PARTS)
  _common.parse_names(FLAGS.beyond_variants, 'beyond_variants', VARIANTS)
  from ntk_attention import malleability
  from ntk_attention import models
  _common.check_data_flags()
  _common.parse_int_list(FLAGS.widths, 'widths')
  _common.parse_names(FLAGS.ntk_models, 'ntk_models', models.MODELS)
  _common.parse_names(FLAGS.mall_models, 'mall_models', models.MODELS)
  _common.parse_names(FLAGS.attacks, 'attacks', malleability.ATTACKS)
  _common.parse_names(FLAGS.intervention_attacks, 'intervention_attacks', malleability.ATTACKS)
  _common.parse_names(FLAGS.sens_attacks, 'sens_attacks', ('fgsm', 'pgd', 'mim'))
  for eps in _common.parse_float_list(FLAGS.epsilons, 'epsilons'):
    if not 0 <= eps <= 1:
      raise ValueError(f'--epsilons must lie in [0, 1], got {eps}.')
  if not 0 < FLAGS.tau <= 1:
    raise ValueError(f'--tau must be in (0, 1], got {FLAGS.tau}.')
  _common.training_config()
  _common.parse_int_list(FLAGS.beyond_widths, 'beyond_widths')
  _common.parse_names(FLAGS.beyond_parts, 'beyond_parts',
                      ('variants', 'influence_attack', 'approximation'))
  _common.model_options()
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
  _common.setup()
  t0 = time.time()
  cmds = commands()
  info = {}
  for part in parts:
    for sub, script, args in cmds[part]:
      info[sub] = run_part(part, sub, script, args)
  text = build_report(info, time.time() - t0)
  logging.info('report: %s (and report.html)', os.path.join(FLAGS.output_dir, 'report.md'))
  print(text)


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
  app.run(main, argv=expand_preset(sys.argv))
