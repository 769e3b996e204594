"""Malleability against n: flip rate, Spearman, candidate / reference ratio (by default
MLP-Attn / 2L-ReLU, --models), κ_d(G) and the kernel distance over `--n_grid`
(docs/method.md §15).

  python scripts/scaling.py --n_grid=250,500,1000,2000,4000 --seeds=3 \
      --output_dir=results/scaling

Training subsets are nested in n (one seeded permutation of a pool of max(n_grid) points,
so --n_train is not used); the test set (--n_test) is the same for every n. Writes
scaling.jsonl (one record per n × model × seed, appended as it is measured; `--resume` skips
those already there), scaling.json / .csv (one row per n), scaling.md and scaling.png (flip
rates and their ratio, log n axis). Trainings go through the run's training cache
(`--train_cache`, docs/method.md §16).
"""
import os
import sys

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

FLAGS = _common.script_flags(__name__)
_common.define_data_flags(FLAGS)
flags.DEFINE_string('n_grid', '250,500,1000,2000,4000', 'Comma list of training-set sizes n.',
                    flag_values=FLAGS)
flags.DEFINE_integer('seeds', 3, 'Model seeds per n (trained together, vmapped).',
                     flag_values=FLAGS)
flags.DEFINE_integer('width', 1024, 'Hidden width m [choice].', flag_values=FLAGS)
flags.DEFINE_string('models', 'relu_mlp,mlp_attn',
                    'The two models compared, reference then candidate (the ratio is candidate / '
                    'reference): ' + _common.MODELS_HELP + '.', flag_values=FLAGS)
flags.DEFINE_enum('attack', 'pgd', ['fgsm', 'pgd', 'mim'], 'Attack on the top-τ set.',
                  flag_values=FLAGS)
flags.DEFINE_float('eps', 0.3, 'l_inf budget, in --eps_units [choice: the study, 0.3].',
                   flag_values=FLAGS)
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'], 'Units of ε (docs/method.md §9).',
                  flag_values=FLAGS)
flags.DEFINE_float('tau', 0.1, 'Fraction of most influential training points attacked.',
                   flag_values=FLAGS)
flags.DEFINE_float('max_memory_gb', 0.0, 'Memory budget (GB) of kernels and exact influence; '
                   '0 = 80% of physical memory (docs/method.md §13).', flag_values=FLAGS)
flags.DEFINE_bool('resume', False, 'Skip records already in scaling.jsonl.', flag_values=FLAGS)
_common.define_training_flags(FLAGS)
_common.define_model_flags(FLAGS)

NAME = 'scaling'
MODEL_COUNT = 2     # --models: (reference, candidate)


def plot(path, rows, models=('relu_mlp', 'mlp_attn')):
  """Two panels against n (log axis, ticks at the measured n): both models' flip rates
  (mean ± std over seeds) and the ratio of mean flip rates (candidate / reference, `models`),
  with ratio 1 (equally malleable) drawn as a dashed reference. Written atomically."""
  from matplotlib.figure import Figure
  from ntk_attention.study.report import figures as report_figures
  names = [report_figures.model_name(m) for m in models]
  ns = [r['n_train'] for r in rows]
  fig = Figure(figsize=(11, 4.2))
  ax1, ax2 = fig.subplots(1, 2)
  for model, label in zip(models, names):
    ax1.errorbar(ns, [100 * r[f'{model}_flip_rate_mean'] for r in rows],
                 yerr=[100 * r[f'{model}_flip_rate_std'] for r in rows], marker='o',
                 capsize=3, label=label)
  ax1.set_ylabel('flip rate of the top-τ set (%)')
  ax1.set_title(f'{FLAGS.attack.upper()}, ε = {FLAGS.eps:g} ({FLAGS.eps_units}), mean ± std '
                f'over {FLAGS.seeds} seeds')
  ax1.legend()
  pts = [(r['n_train'], r['ratio']) for r in rows if r['ratio'] is not None]
  ax2.plot([n for n, _ in pts], [v for _, v in pts], marker='o', label=f'{names[1]} / {names[0]}')
  ax2.axhline(1.0, color='grey', linestyle='--', linewidth=1, label='equally malleable')
  ax2.set_ylabel('ratio of mean flip rates')
  ax2.set_title('Malleability ratio against n')
  ax2.legend()
  for ax in (ax1, ax2):
    ax.set_xscale('log')
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel('n (training points, log scale)')
    ax.grid(True, alpha=0.3)
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=120, bbox_inches='tight')
  os.replace(tmp, path)


def data_needs(fv=FLAGS) -> list:
  """One load: a pool of max(--n_grid) training points and --n_test test points."""
  from ntk_attention import data
  grid = _common.parse_int_list(fv.n_grid, 'n_grid')
  return [(fv.dataset, data.parse_classes(fv.classes), max(grid), fv.n_test, False)]


def main(argv, context=None):
  del argv
  from ntk_attention import blocked
  from ntk_attention import malleability
  from ntk_attention import models as models_lib
  from ntk_attention.study import scaling
  classes = _common.check_data_flags(FLAGS)
  models = _common.parse_models(FLAGS.models, count=MODEL_COUNT)
  grid = sorted(set(_common.parse_int_list(FLAGS.n_grid, 'n_grid')))
  if grid[0] < 10:
    raise ValueError(f'--n_grid: every n must be >= 10, got {grid[0]}.')
  if FLAGS.seeds < 1 or FLAGS.width < 1:
    raise ValueError('--seeds and --width must be >= 1.')
  config = _common.training_config(FLAGS)
  options = {n: o for n, o in _common.model_options(FLAGS).items() if n in models}
  setup = malleability.Setup(tau=FLAGS.tau, eps_units=FLAGS.eps_units,
                             max_memory_gb=FLAGS.max_memory_gb)
  malleability.validate([FLAGS.attack], [FLAGS.eps], setup, grid[0])
  blocked.check_fits(grid[-1], FLAGS.n_test, FLAGS.max_memory_gb or None, '--n_grid')
  _common.check_pools(data_needs(FLAGS), FLAGS.seed, FLAGS.data_dir, '--n_grid: ')
  _common.setup(FLAGS)
  from ntk_attention import data
  from ntk_attention.study import store as store_lib
  ds = data.load(FLAGS.dataset, classes=classes, n_train=grid[-1], n_test=FLAGS.n_test,
                 seed=FLAGS.seed, data_dir=FLAGS.data_dir)
  subsets = scaling.nested_subsets(ds, grid, FLAGS.seed)
  settings = dict(dataset=ds.name, classes=list(ds.classes), n_grid=grid, n_test=FLAGS.n_test,
                  data_seed=FLAGS.seed, seeds=FLAGS.seeds, width=FLAGS.width,
                  attack=FLAGS.attack, eps=FLAGS.eps, eps_units=FLAGS.eps_units, tau=FLAGS.tau,
                  model_options=options, **config._asdict())
  store = _common.open_store(NAME, settings, FLAGS.resume, FLAGS.output_dir)
  done = store.done_keys(malleability.KEY_FIELDS)
  total = len(grid) * len(models) * FLAGS.seeds
  progress = _common.progress(NAME, total, context)
  train_fn = _common.trainer(FLAGS, context.train_fn if context else None)
  if done:
    progress.skip(min(len(done), total))
  seeds = list(range(FLAGS.seeds))
  for n in grid:
    scaling.run_n(subsets[n], FLAGS.width, seeds, FLAGS.attack, FLAGS.eps, setup, config,
                  malleability.Hooks(done=done, on_record=store.append,
                                     on_progress=progress.update),
                  base_seed=FLAGS.seed, train_fn=train_fn,
                  models=models_lib.factories(models, options))
  rows = scaling.summarize(store.records(), models=models)
  store_lib.write_json(_common.out_path(NAME + '.json', FLAGS.output_dir), {
      'rows': rows, 'models': models, 'provenance': _common.provenance(
          FLAGS, ('n_grid', 'seeds', 'width', 'models', 'attack', 'eps', 'eps_units', 'tau',
                  'epochs', 'init_std'))})
  store_lib.write_csv(_common.out_path(NAME + '.csv', FLAGS.output_dir), rows)
  text = scaling.scaling_section(rows, models=models)
  store_lib.write_text(_common.out_path(NAME + '.md', FLAGS.output_dir), text)
  plot(_common.out_path(NAME + '.png', FLAGS.output_dir), rows, models)
  print(text)


if __name__ == '__main__':
  _common.run(main)
