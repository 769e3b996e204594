r"""Distance of trained 2L-ReLU and MLP-Attn networks to their infinite-width NTK.

The study's Table 1 / Figure 1 (docs/method.md §6–7): for every model × width × seed, train with
optax (all seeds of a width in one vmapped program), then record kernel distance at
initialisation and after training, kernel movement, function distance to the
infinite-width NTK predictor, and train/test accuracy.

  python scripts/ntk_distance.py --dataset=digits --n_train=1000 \
      --widths=16,64,256,1024,4096 --seeds=3 --output_dir=results/ntk_distance

Writes ntk_distance.jsonl (one record per cell, appended as cells finish; --resume skips
them), ntk_distance.json / .csv (mean and std over seeds per model × width × metric) and
ntk_distance.png (four panels against width, the study's distances as stars).
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
flags.DEFINE_string('widths', '16,64,256,1024,4096', 'Comma list of hidden widths m.',
                    flag_values=FLAGS)
flags.DEFINE_integer('seeds', 3, 'Seeds per width (trained together, vmapped).', flag_values=FLAGS)
_common.define_training_flags(FLAGS)
_common.define_model_flags(FLAGS)
flags.DEFINE_float('ridge', 1e-3, 'Ridge λ (× mean diag) of the NTK ridge-regression f∞.',
                   flag_values=FLAGS)
flags.DEFINE_bool('resume', False, 'Skip cells already in ntk_distance.jsonl.', flag_values=FLAGS)

NAME = 'ntk_distance'


def run(ds, model_names, widths, seeds, config, resume, ridge, model_options=None, out_dir=None,
        name=NAME, context=None):
  """Runs the sweep into `out_dir` (default --output_dir); writes summary, CSV and figures.
  `context`: a `_common.PartContext` when scripts/reproduce.py runs this in-process."""
  out_dir = out_dir or FLAGS.output_dir
  from ntk_attention import stats
  from ntk_attention import sweeps
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  settings = dict(dataset=ds.name, classes=list(ds.classes), n_train=len(ds.x_train),
                  n_test=len(ds.x_test), data_seed=FLAGS.seed, ridge=ridge,
                  model_options=model_options or {}, **config._asdict())
  store = _common.open_store(name, settings, resume, out_dir)
  done = store.done_keys(sweeps.KEY_FIELDS)
  grid = [(m, w, s) for m in model_names for w in widths for s in seeds]
  progress = _common.progress(name, len(grid), context)
  finished = sum(1 for g in grid if g in done)
  if finished:
    progress.skip(finished)
  sweeps.ntk_distance_sweep(ds, model_names, widths, seeds, config, on_record=store.append,
                            done=done, on_progress=progress.update, ridge=ridge,
                            model_options=model_options, base_seed=FLAGS.seed,
                            train_fn=_common.trainer(FLAGS, context and context.train_fn))
  cells = set(grid)
  records = [r for r in store.records() if (r['model'], r['width'], r['seed']) in cells]
  summary = stats.summarize(records, ('model', 'width'), sweeps.METRICS)
  store_lib.write_json(_common.out_path(name + '.json', out_dir), {
      'comparison': records[0]['comparison'] if records else None,
      'summary': summary, 'provenance': _common.provenance(FLAGS,
          ('models', 'widths', 'seeds', 'epochs', 'batch_size', 'lr', 'weight_decay',
           'optimizer', 'loss', 'ridge'))})
  store_lib.write_csv(_common.out_path(name + '.csv', out_dir), summary)
  plot(summary, records[0]['comparison'] if records else '', ds.name, out_dir)
  return summary


def plot(summary, comparison, dataset, out_dir=None):
  """ntk_distance.png: distance, trained kernel distance, kernel movement and test accuracy
  against width, one line per model, the study's Table 1 distances as stars."""
  from ntk_attention.study.report import figures as report_figures
  return report_figures.ntk_distance_figures({'summary': summary, 'comparison': comparison}, dataset,
                                             out_dir or FLAGS.output_dir)


def main(argv, context=None):
  del argv
  from ntk_attention import sweeps
  classes = _common.check_data_flags(FLAGS)
  model_names = _common.parse_models(FLAGS.models)
  widths = _common.parse_int_list(FLAGS.widths, 'widths')
  if FLAGS.seeds < 1:
    raise app.UsageError(f'--seeds must be >= 1, got {FLAGS.seeds}.')
  config = _common.training_config(FLAGS)
  sweeps.validate_sweep(model_names, widths, list(range(FLAGS.seeds)), config)
  if not FLAGS.ridge > 0:
    raise app.UsageError(f'--ridge must be > 0, got {FLAGS.ridge}.')
  options = _common.model_options(FLAGS)
  _common.setup(FLAGS)
  ds = _common.load_data(FLAGS, classes)
  summary = run(ds, model_names, widths, list(range(FLAGS.seeds)), config, FLAGS.resume,
                FLAGS.ridge, {n: o for n, o in options.items() if n in model_names},
                context=context)
  from ntk_attention.study import store as store_lib
  from ntk_attention.study.report import page
  cols = ['model', 'width', 'kernel_distance_init_mean', 'kernel_distance_final_mean',
          'kernel_movement_mean', 'function_distance_mean', 'test_accuracy_mean']
  print(page.markdown_table(summary, cols))
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
