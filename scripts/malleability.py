r"""Influence malleability of 2L-ReLU and MLP-Attn under FGSM / PGD / MIM (docs/method.md §8–10).

The study's Tables 2–4: train each model (all seeds vmapped), compute exact NTK
leave-one-out influence of every training point, attack the top-τ most influential
points within ε, recompute kernel and influence, and report how many influence signs
flip (plus Spearman and top-k overlap). Optional: --retrain, --interventions,
--adversarial_training, and the influence-targeted attack (--attacks=...,influence).

  python scripts/malleability.py --dataset=digits --output_dir=results/malleability
  python scripts/malleability.py --dataset=digits --classes=3,8 --output_dir=results/m38

Writes malleability.jsonl (one record per task × model × setting × attack × ε × seed,
appended as computed; --resume skips them), malleability.json / .csv (mean ± std over
seeds), malleability_table.md (laid out like the study, its numbers beside ours) and
figures: flip rates by attack and model, flip rate against ε, influence before vs after.
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
flags.DEFINE_string('models', 'relu_mlp,mlp_attn', 'Comma list of models: '
                    + _common.MODELS_HELP + ', e.g. relu_mlp,my_package.nets:deep.',
                    flag_values=FLAGS)
flags.DEFINE_integer('width', 1024, 'Hidden width m [choice].', flag_values=FLAGS)
flags.DEFINE_integer('seeds', 3, 'Seeds (trained together, vmapped).', flag_values=FLAGS)
flags.DEFINE_string('attacks', 'fgsm,pgd,mim',
                    "Comma list of 'fgsm', 'pgd', 'mim', 'influence' (influence-targeted PGD).",
                    flag_values=FLAGS)
flags.DEFINE_string('epsilons', '0.3', 'Comma list of l_inf budgets, in --eps_units [choice].',
                    flag_values=FLAGS)
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'],
                  "Units of ε [choice, docs/method.md §9]: 'pixel' ([0, 1] pixels) or 'std' "
                  "(the training pixels' standard deviation, as in a mean/std-normalised "
                  "pipeline: MNIST ε = 0.3 -> ~0.092 pixels). Perturbations stay in [0, 1].",
                  flag_values=FLAGS)
flags.DEFINE_float('tau', 0.1, 'Fraction of most influential training points attacked [choice].',
                   flag_values=FLAGS)
flags.DEFINE_enum('kernel', 'empirical', ['empirical', 'analytic'],
                  'Influence from the empirical NTK at the trained parameters, or the analytic.',
                  flag_values=FLAGS)
flags.DEFINE_float('ridge', 1e-3, 'KRR ridge λ (× mean diag K) of the influence [choice].',
                   flag_values=FLAGS)
flags.DEFINE_integer('topk', 0, 'k of the top-k overlap; 0 = the size of the top-τ set [choice].',
                     flag_values=FLAGS)
flags.DEFINE_enum('score', 'mean', ['mean', 'per_point'],
                  "Influence compared: 'mean' over the test set per training point [choice], or "
                  "'per_point' (every test × training entry).", flag_values=FLAGS)
flags.DEFINE_integer('pgd_steps', 20, 'PGD steps [choice].', flag_values=FLAGS)
flags.DEFINE_float('pgd_step_size', None, 'PGD step size; default 2.5·ε/steps [choice].',
                   flag_values=FLAGS)
flags.DEFINE_bool('pgd_random_start', True, 'PGD uniform random start in the ε-ball [choice].',
                  flag_values=FLAGS)
flags.DEFINE_integer('mim_steps', 10, 'MIM steps [choice].', flag_values=FLAGS)
flags.DEFINE_float('mim_step_size', None, 'MIM step size; default ε/steps [choice].',
                   flag_values=FLAGS)
flags.DEFINE_float('mim_momentum', 1.0, 'MIM momentum μ [choice].', flag_values=FLAGS)
flags.DEFINE_bool('retrain', False, 'Retrain on the perturbed set before recomputing influence.',
                  flag_values=FLAGS)
flags.DEFINE_string('interventions', '',
                    "Comma list of 'curated', 'transformed', 'adversarial' (each retrained).",
                    flag_values=FLAGS)
flags.DEFINE_bool('adversarial_training', False, 'Also run PGD adversarial training (pgd_at).',
                  flag_values=FLAGS)
flags.DEFINE_string('save_arrays', '', 'FILE.npz: kernels, targets and influence vectors (seed 0).',
                    flag_values=FLAGS)
flags.DEFINE_bool('resume', False, 'Skip records already in malleability.jsonl.', flag_values=FLAGS)
flags.DEFINE_float('max_memory_gb', 0.0, 'Memory budget (GB) of the float64 kernels and exact '
                   'influence: sizes that would not fit are refused before any work, naming '
                   'the largest n_train that fits; kernels are built in row blocks within it. '
                   '0 = 80% of physical memory (docs/method.md §13).', flag_values=FLAGS)
_common.define_training_flags(FLAGS)
_common.define_model_flags(FLAGS)

NAME = 'malleability'
GROUP = ('task', 'model', 'setting', 'attack', 'eps')


def task_name(classes) -> str:
  return 'all' if not classes else ','.join(str(c) for c in classes)


def attack_config():
  from ntk_attention import attacks
  return attacks.AttackConfig(pgd_steps=FLAGS.pgd_steps, pgd_step_size=FLAGS.pgd_step_size,
                              pgd_random_start=FLAGS.pgd_random_start,
                              mim_steps=FLAGS.mim_steps, mim_step_size=FLAGS.mim_step_size,
                              mim_momentum=FLAGS.mim_momentum)


def run(ds, model_names, width, seeds, attack_names, epsilons, setup, config, retrain,
        interventions, adversarial_training, resume, task='all', save_arrays='', prefix=NAME,
        out_dir=None, model_options=None, context=None):
  """Runs the sweep into `out_dir` (default --output_dir); writes summary, table, figures.

  `task`: 'all' (every class) or the --classes text, e.g. '3,8'. `context`: a
  `_common.PartContext` when scripts/reproduce.py runs this in-process.
  """
  out_dir = out_dir or FLAGS.output_dir
  import numpy as np
  from ntk_attention import malleability
  from ntk_attention import models as models_lib
  from ntk_attention import stats
  from ntk_attention.study import report
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import plots
  settings = dict(dataset=ds.name, classes=list(ds.classes), n_train=len(ds.x_train),
                  n_test=len(ds.x_test), data_seed=FLAGS.seed, width=width,
                  tau=setup.tau, kernel=setup.kernel, ridge=setup.ridge, score=setup.score,
                  topk=setup.topk, eps_units=setup.eps_units,
                  attack=setup.attack._asdict(), model_options=model_options or {},
                  **config._asdict())
  store = _common.open_store(prefix, settings, resume, out_dir)
  sweep_settings = malleability.Settings(retrain, tuple(interventions), adversarial_training)
  total = (len(model_names) * len(sweep_settings.names()) * len(attack_names) * len(epsilons)
           * len(seeds))
  done = store.done_keys(malleability.KEY_FIELDS)
  progress = _common.progress(prefix, total, context)
  if done:
    progress.skip(min(len(done), total))
  arrays = {}

  def on_arrays(key, arrs):
    for k, v in arrs.items():
      arrays[f'{key}/{k}'] = np.asarray(v)

  malleability.sweep(ds, models_lib.factories(model_names, model_options), width, seeds,
                     attack_names, epsilons, setup, config, sweep_settings,
                     malleability.Hooks(task=task, done=done, on_record=store.append,
                                        on_arrays=on_arrays, on_progress=progress.update),
                     base_seed=FLAGS.seed,
                     train_fn=_common.trainer(FLAGS, context and context.train_fn))
  if save_arrays and arrays:
    store_lib.write_npz(save_arrays, **arrays)
    logging.info('arrays in %s', save_arrays)
  records = store.records()
  metrics = malleability.METRICS + malleability.DIAGNOSTICS
  summary = stats.summarize(records, GROUP, metrics)
  for row in summary:
    # The study compared mean scores; per-point flips have no published counterpart.
    row['paper_flip_rate_pct'] = paper_value(ds.name, task, row) if setup.score == 'mean' else None
  store_lib.write_json(_common.out_path(prefix + '.json', out_dir), {
      'summary': summary, 'provenance': _common.provenance(FLAGS,
          ('models', 'width', 'seeds', 'attacks', 'epsilons', 'eps_units', 'tau', 'kernel',
           'ridge', 'retrain', 'interventions', 'adversarial_training', 'epochs', 'lr',
           'init_std'))})
  store_lib.write_csv(_common.out_path(prefix + '.csv', out_dir), summary)
  store_lib.write_text(_common.out_path(prefix + '_table.md', out_dir),
                       report.malleability_section({'summary': summary}, 'Influence malleability',
                                                   ds.name, task))
  plot(summary, records, arrays, model_names, prefix, out_dir)
  return summary


def paper_value(dataset, task, row):
  """The study's flip rate (%) for this row's setting; digits/npz compare with MNIST."""
  from ntk_attention.study import paper
  dataset = paper.reference_dataset(dataset)
  if row['setting'] == 'pgd_at':
    ref = paper.FLIP_RATE_AFTER_PGD_AT.get(dataset)
    return ref[paper.MODEL_INDEX[row['model']]] if ref and row['attack'] == 'pgd' and \
        row['model'] in paper.MODEL_INDEX and abs(row['eps'] - 0.3) < 1e-9 else None
  if row['setting'] != 'standard' or abs(row['eps'] - 0.3) > 1e-9:
    return None
  return paper.flip_rate(dataset, task, row['attack'], row['model'])


def plot(summary, records, arrays, model_names, prefix, out_dir):
  """Flip rates per attack (study's rates as stars) and against ε (report_figures), the training
  loss of seed 0, and each model's influence before vs after the attack."""
  import numpy as np
  from ntk_attention.study import report
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import figures as report_figures
  from ntk_attention.study.report import plots
  base = [r for r in summary if r['setting'] in ('standard', 'retrain')]
  if not base:
    return
  eps_main = 0.3 if any(abs(r['eps'] - 0.3) < 1e-9 for r in base) else min(r['eps'] for r in base)
  task = base[0].get('task', 'all')
  title = f"{FLAGS.dataset}, {'all classes' if task == 'all' else 'classes ' + task}"
  report_figures.malleability_figures({'summary': summary}, out_dir or FLAGS.output_dir, title, prefix)
  curves = {m: np.asarray(arrays[f'{m}/{base[0]["setting"]}/loss_curve'])
            for m in model_names if f'{m}/{base[0]["setting"]}/loss_curve' in arrays}
  if curves:
    plots.plot_lines(
        _common.out_path(prefix + '_loss.png', out_dir),
        {report.model_name(m): (list(range(1, len(c) + 1)), list(c), None)
         for m, c in curves.items()},
        'epoch', 'mean training loss', 'Training loss per epoch (seed 0)')
  for m in model_names:
    setting = base[0]['setting']
    key = f'{m}/{setting}/influence_before'
    after = [k for k in arrays if k.startswith(f'{m}/{setting}/influence_after/')]
    if key in arrays and after:
      pick = next((k for k in after if k.endswith(f'/pgd/{eps_main:g}')),
                  next((k for k in after if '/pgd/' in k), after[0]))
      path = _common.out_path(f'{prefix}_influence_{report_figures.file_label(m)}.png', out_dir)
      plots.plot_scatter(path, np.asarray(arrays[key]), np.asarray(arrays[pick]),
                             'influence I before attack (mean over test set)',
                             'influence I′ after attack',
                             f'{report.model_name(m)}: influence before vs after ({pick.split("/", 3)[-1]}, seed 0)')


def main(argv, context=None):
  del argv
  from ntk_attention import blocked
  from ntk_attention import malleability
  classes = _common.check_data_flags(FLAGS)
  model_names = _common.parse_models(FLAGS.models)
  attack_names = _common.parse_names(FLAGS.attacks, 'attacks', malleability.ATTACKS)
  epsilons = _common.parse_float_list(FLAGS.epsilons, 'epsilons')
  if FLAGS.eps_units == 'pixel' and not all(0 <= e <= 1 for e in epsilons):
    raise app.UsageError(f'--epsilons must lie in [0, 1] (pixels on [0, 1]), got {epsilons}.')
  interventions = ([] if not FLAGS.interventions else
                   _common.parse_names(FLAGS.interventions, 'interventions',
                                       malleability.INTERVENTIONS))
  if FLAGS.width < 1:
    raise app.UsageError(f'--width must be >= 1, got {FLAGS.width}.')
  if FLAGS.seeds < 1:
    raise app.UsageError(f'--seeds must be >= 1, got {FLAGS.seeds}.')
  if FLAGS.save_arrays and not FLAGS.save_arrays.endswith('.npz'):
    raise app.UsageError('--save_arrays must name a .npz file.')
  config = _common.training_config(FLAGS)
  options = {n: o for n, o in _common.model_options(FLAGS).items() if n in model_names}
  setup = malleability.Setup(tau=FLAGS.tau, kernel=FLAGS.kernel, ridge=FLAGS.ridge,
                             attack=attack_config(), score=FLAGS.score, topk=FLAGS.topk,
                             eps_units=FLAGS.eps_units, max_memory_gb=FLAGS.max_memory_gb)
  # n_train is only known after loading; check τ and memory against the sizes asked for first.
  malleability.validate(attack_names, epsilons, setup, FLAGS.n_train, interventions)
  blocked.check_fits(FLAGS.n_train, FLAGS.n_test, FLAGS.max_memory_gb or None)
  _common.setup(FLAGS)
  ds = _common.load_data(FLAGS, classes)
  malleability.validate(attack_names, epsilons, setup, len(ds.x_train), interventions)
  run(ds, model_names, FLAGS.width, list(range(FLAGS.seeds)), attack_names, epsilons, setup,
      config, FLAGS.retrain, interventions, FLAGS.adversarial_training, FLAGS.resume,
      task_name(classes), FLAGS.save_arrays, model_options=options, context=context)
  print(open(_common.out_path(NAME + '_table.md', FLAGS.output_dir)).read())
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
