"""Distance of trained networks to their infinite-width NTK (the study's Table 1 / Figure 1,
docs/method.md §6–7); `configs.Distance`, scripts/ntk_distance.py.

For every model × width × seed: train with optax (all seeds of a width in one vmapped
program), then record the kernel distance at initialisation and after training, the kernel
movement, the function distance to the infinite-width NTK predictor (ridge `ridge` × mean
diag), and train / test accuracy (`sweeps.ntk_distance_sweep`).

Writes ntk_distance.jsonl (one record per cell, appended as cells finish; `resume` skips
them), ntk_distance.json / .csv (mean and std over seeds per model × width × metric) and
ntk_distance.png (four panels against width, the study's distances as stars).
"""
from ntk_attention import stats
from ntk_attention import sweeps
from ntk_attention.study import configs
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'ntk_distance'


def check(config: configs.Distance) -> None:
  """Validates `config` before any data is loaded."""
  _base.check_data(config.data)
  names = _base.check_models(config.models)
  widths = _base.check_ints(config.widths, 'widths')
  if config.seeds < 1:
    raise ValueError(f'--seeds must be >= 1, got {config.seeds}.')
  _base.check_train(config.train)
  sweeps.validate_sweep(names, widths, list(range(config.seeds)), config.train)
  if not config.ridge > 0:
    raise ValueError(f'--ridge must be > 0, got {config.ridge}.')
  _base.check_options(config.options)


def data_needs(config: configs.Distance) -> list:
  return _base.data_needs(config.data)


def run(config: configs.Distance, out_dir: str, context=None, resume: bool = False) -> list:
  """The sweep of `config` into `out_dir`; returns the summary rows (mean and std over seeds
  per model × width). `context`: a `Context` when a reproduction runs this."""
  check(config)
  names = _base.check_models(config.models)
  widths, seeds = list(config.widths), list(range(config.seeds))
  options = _base.model_options(config.options, names)
  ds = _base.load_data(config.data)
  settings = dict(dataset=ds.name, classes=list(ds.classes), n_train=len(ds.x_train),
                  n_test=len(ds.x_test), data_seed=config.data.seed, ridge=config.ridge,
                  model_options=options, **config.train._asdict())
  store = _base.open_store(NAME, settings, resume, out_dir)
  done = store.done_keys(sweeps.KEY_FIELDS)
  grid = [(m, w, s) for m in names for w in widths for s in seeds]
  progress = _base.progress(NAME, len(grid), context)
  finished = sum(1 for g in grid if g in done)
  if finished:
    progress.skip(finished)
  sweeps.ntk_distance_sweep(ds, names, widths, seeds, config.train, on_record=store.append,
                            done=done, on_progress=progress.update, ridge=config.ridge,
                            model_options=options, base_seed=config.data.seed,
                            train_fn=_base.trainer(context))
  cells = set(grid)
  records = [r for r in store.records() if (r['model'], r['width'], r['seed']) in cells]
  summary = stats.summarize(records, ('model', 'width'), sweeps.METRICS)
  comparison = records[0]['comparison'] if records else None
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), {
      'comparison': comparison, 'summary': summary, 'provenance': _base.provenance(config)})
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), summary)
  plot(summary, comparison or '', ds.name, out_dir)
  return summary


def plot(summary, comparison, dataset, out_dir):
  """ntk_distance.png: distance, trained kernel distance, kernel movement and test accuracy
  against width, one line per model, the study's Table 1 distances as stars."""
  from ntk_attention.study.report import figures as report_figures
  return report_figures.ntk_distance_figures({'summary': summary, 'comparison': comparison},
                                             dataset, out_dir)
