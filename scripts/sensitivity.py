r"""How robust is the study's 6–9×? Vary one unpublished choice at a time (docs/method.md §12).

Around a baseline (flags below, the study's conventions by default), each variation changes
one choice — ε, its units, τ, init_std, epochs, width, n_train, ridge, score, kernel,
retrain, PGD steps — and reruns the malleability protocol for two models (--models:
reference, candidate; by default 2L-ReLU and MLP-Attn) on every task (10 classes and a
binary pair by default), with every attack, over the same seeds.
Models are trained once per distinct training setting and shared between variations.

  python scripts/sensitivity.py --dataset=mnist_sample --output_dir=results/sensitivity
  python scripts/sensitivity.py --dataset=digits --n_train=200 --n_test=100 --epochs=20 \
      --width=128 --seeds=2 --variations="eps=0.1;init_std=1" --output_dir=/tmp/sens

Writes sensitivity.jsonl (one record per task × variation × model × attack × seed, appended
as computed; --resume skips them), sensitivity.json / .csv (per task × variation × attack:
both flip rates, the candidate / reference (MLP-Attn / 2L-ReLU) ratio with its 95%
bootstrap interval, and the calibration against the study), sensitivity_table.md and
sensitivity_tornado.png.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import _common  # noqa: E402

FLAGS = _common.script_flags(__name__)
_common.define_data_flags(FLAGS)
flags.DEFINE_string('tasks', 'all+binary',
                    "'+'-separated tasks: 'all' (every class), a class pair like '3,8', or "
                    "'binary' (the study's pair for --dataset: 3,8 on MNIST, 1,0 on CIFAR-10).",
                    flag_values=FLAGS)
flags.DEFINE_string('variations', '',
                    "One-at-a-time variations 'CHOICE=V1,V2;CHOICE=V' (choices: eps, eps_units, "
                    "tau, init_std, epochs, width, n_train, ridge, score, kernel, retrain, "
                    "pgd_steps); '' = the default grid around the baseline.", flag_values=FLAGS)
flags.DEFINE_string('attacks', 'fgsm,pgd,mim', "Comma list of 'fgsm', 'pgd', 'mim'.",
                    flag_values=FLAGS)
flags.DEFINE_string('models', 'relu_mlp,mlp_attn',
                    'The two models compared, reference then candidate (the ratio is candidate / '
                    'reference): ' + _common.MODELS_HELP + '.', flag_values=FLAGS)
flags.DEFINE_integer('seeds', 3, 'Seeds (trained together, vmapped).', flag_values=FLAGS)
flags.DEFINE_integer('width', 1024, 'Baseline width [choice].', flag_values=FLAGS)
flags.DEFINE_float('eps', 0.3, 'Baseline ε, in --eps_units [choice].', flag_values=FLAGS)
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'], 'Baseline units of ε [choice].',
                  flag_values=FLAGS)
flags.DEFINE_float('tau', 0.1, 'Baseline top-τ fraction [choice].', flag_values=FLAGS)
flags.DEFINE_float('ridge', 1e-3, 'Baseline KRR ridge λ (× mean diag K) [choice].',
                   flag_values=FLAGS)
flags.DEFINE_enum('score', 'mean', ['mean', 'per_point'], 'Baseline influence score [choice].',
                  flag_values=FLAGS)
flags.DEFINE_enum('kernel', 'empirical', ['empirical', 'analytic'], 'Baseline kernel [choice].',
                  flag_values=FLAGS)
flags.DEFINE_bool('retrain', False, 'Baseline: retrain on the perturbed set [choice].',
                  flag_values=FLAGS)
flags.DEFINE_integer('pgd_steps', 20, 'Baseline PGD steps [choice].', flag_values=FLAGS)
flags.DEFINE_bool('resume', False, 'Skip records already in sensitivity.jsonl.', flag_values=FLAGS)
_common.define_training_flags(FLAGS)
_common.define_model_flags(FLAGS)

NAME = 'sensitivity'
MODEL_COUNT = 2     # --models: (reference, candidate)


def baseline(fv=FLAGS):
  from ntk_attention.study import sensitivity
  return sensitivity.Baseline(eps=fv.eps, eps_units=fv.eps_units, tau=fv.tau,
                              init_std=fv.init_std, epochs=fv.epochs, width=fv.width,
                              n_train=fv.n_train, ridge=fv.ridge, score=fv.score,
                              kernel=fv.kernel, retrain=fv.retrain, pgd_steps=fv.pgd_steps)


def data_needs(fv=FLAGS) -> list:
  """Every (task, n_train) load of the run (`loader`): each task at the baseline n_train
  and at each n_train variation, n_test in proportion."""
  from ntk_attention import data
  from ntk_attention.study import sensitivity
  base = baseline(fv)
  sizes = [base.n_train] + [v for k, v in sensitivity.parse_variations(fv.variations, base)
                            if k == 'n_train']
  needs = []
  for task in parse_tasks(fv.tasks, fv.dataset):
    classes = None if task == 'all' else data.parse_classes(task)
    needs += [(fv.dataset, classes, n, max(1, int(round(n * fv.n_test / fv.n_train))),
               classes is not None) for n in sizes]
  return needs


def parse_tasks(text, dataset):
  """'+'-separated tasks -> list; 'binary' becomes `paper.binary_classes(dataset)`."""
  from ntk_attention import data
  from ntk_attention.study import paper
  tasks = [t.strip() for t in text.split('+') if t.strip()]
  tasks = [paper.binary_classes(dataset) if t == 'binary' else t for t in tasks]
  if not tasks:
    raise ValueError('--tasks is empty.')
  for t in tasks:
    if t != 'all':
      try:
        pair = data.parse_classes(t)
      except ValueError as e:
        raise ValueError(f'--tasks: {t!r}: {e}') from None
      if len(pair) != 2:
        raise ValueError(f'--tasks: {t!r} is not a pair of classes.')
  return tasks


def loader():
  """`load(task, n_train)`: the data of a task, cached; the binary tasks keep the
  train/test ratio and shrink to fit their class pool."""
  from ntk_attention import data
  cache = {}
  ratio = FLAGS.n_test / FLAGS.n_train

  def load(task, n_train):
    key = (task, n_train)
    if key not in cache:
      classes = None if task == 'all' else data.parse_classes(task)
      cache[key] = data.load(FLAGS.dataset, classes=classes, n_train=n_train,
                             n_test=max(1, int(round(n_train * ratio))), seed=FLAGS.seed,
                             data_dir=FLAGS.data_dir, fit_to_pool=classes is not None)
      ds = cache[key]
      logging.info('data %s task %s: %d train, %d test', ds.name, task, len(ds.x_train),
                   len(ds.x_test))
    return cache[key]

  return load


def run(tasks, base, variations, attack_names, seeds, config, resume, out_dir=None,
        dataset_name=None, context=None, models=('relu_mlp', 'mlp_attn')):
  """Runs the study into `out_dir` (default --output_dir); writes summary, table, figure.
  `context`: a `_common.PartContext` when scripts/reproduce.py runs this in-process;
  `models`: the names (reference, candidate)."""
  out_dir = out_dir or FLAGS.output_dir
  from ntk_attention import malleability
  from ntk_attention.study import sensitivity
  from ntk_attention.study import store as store_lib
  settings = dict(dataset=FLAGS.dataset, n_test=FLAGS.n_test, data_seed=FLAGS.seed,
                  tasks=tasks, baseline=base._asdict(), variations=variations,
                  attacks=attack_names, seeds=list(seeds), **config._asdict())
  store = _common.open_store(NAME, settings, resume, out_dir)
  done = store.done_keys(sensitivity.KEY_FIELDS)
  per_var = {v: (1 if v[0] == 'retrain' else len(attack_names)) for v in variations}
  total = len(tasks) * 2 * len(seeds) * (len(attack_names) + sum(per_var.values()))
  progress = _common.progress(NAME, total, context)
  if done:
    progress.skip(min(len(done), total))
  sensitivity.run(loader(), tasks, base, variations, attack_names, seeds, config,
                  malleability.Hooks(done=done, on_record=store.append,
                                     on_progress=progress.update),
                  base_seed=FLAGS.seed, models=list(models),
                  train_fn=_common.trainer(FLAGS, context and context.train_fn))
  records = store.records()
  summary = sensitivity.summarize(records, models=models)
  calib = sensitivity.calibration(summary, dataset_name or FLAGS.dataset, models=models)
  result = {'summary': summary, 'calibration': calib, 'dataset': FLAGS.dataset,
            'models': list(models),
            'n_train': base.n_train, 'n_test': FLAGS.n_test, 'seeds': len(seeds),
            'baseline': base._asdict(), 'tasks': tasks,
            'provenance': _common.provenance(FLAGS, (
                'tasks', 'variations', 'attacks', 'models', 'seeds', 'width', 'eps', 'eps_units',
                'tau', 'ridge', 'score', 'kernel', 'pgd_steps', 'epochs', 'init_std'))}
  store_lib.write_json(_common.out_path(NAME + '.json', out_dir), result)
  store_lib.write_csv(_common.out_path(NAME + '.csv', out_dir), summary)
  store_lib.write_csv(_common.out_path(NAME + '_calibration.csv', out_dir), calib)
  from ntk_attention.study.report import figures as report_figures
  figures = report_figures.sensitivity_figures(result, out_dir or FLAGS.output_dir)
  from ntk_attention.study import report
  text = report.sensitivity_section(result, [os.path.basename(f) for f in figures])
  store_lib.write_text(_common.out_path(NAME + '_table.md', out_dir), text)
  return result


def main(argv, context=None):
  del argv
  from ntk_attention import attacks
  from ntk_attention.study import sensitivity
  classes = _common.check_data_flags(FLAGS)
  if classes:
    raise app.UsageError('--classes does not apply here; use --tasks (e.g. "all+3,8").')
  tasks = parse_tasks(FLAGS.tasks, FLAGS.dataset)
  attack_names = _common.parse_names(FLAGS.attacks, 'attacks', attacks.ATTACKS)
  models = _common.parse_models(FLAGS.models, count=MODEL_COUNT)
  if FLAGS.seeds < 2:
    raise app.UsageError(f'--seeds must be >= 2 for a bootstrap interval, got {FLAGS.seeds}.')
  if FLAGS.width < 1:
    raise app.UsageError(f'--width must be >= 1, got {FLAGS.width}.')
  config = _common.training_config(FLAGS)
  _common.model_options(FLAGS)    # validates --init_std and the attention flags
  base = baseline()
  variations = sensitivity.parse_variations(FLAGS.variations, base)
  sensitivity.validate(base, variations, attack_names, tasks, models=models)
  _common.check_pools(data_needs(FLAGS), FLAGS.seed, FLAGS.data_dir)
  _common.setup(FLAGS)
  run(tasks, base, variations, attack_names, list(range(FLAGS.seeds)), config, FLAGS.resume,
      context=context, models=models)
  print(open(_common.out_path(NAME + '_table.md', FLAGS.output_dir)).read())
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
