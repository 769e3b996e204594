"""How robust is the study's 6–9×? One unpublished choice varied at a time (docs/method.md
§12); `configs.Sensitivity`, scripts/sensitivity.py.

Around a baseline (`baseline(config)`: the study's conventions by default), each variation
changes one choice — ε, its units, τ, init_std, epochs, width, n_train, ridge, score, kernel,
retrain, PGD steps — and reruns the malleability protocol for two models (`models`:
reference, candidate) on every task, with every attack, over the same seeds
(`study.sensitivity.run`). Models are trained once per distinct training setting and shared
between variations.

Writes sensitivity.jsonl (one record per task × variation × model × attack × seed, appended
as computed; `resume` skips them), sensitivity.json / .csv (per task × variation × attack:
both flip rates, the candidate / reference ratio with its 95% bootstrap interval, and the
calibration against the study), sensitivity_calibration.csv, sensitivity_table.md and
sensitivity_tornado_<task>.png.
"""
import os

from absl import logging

from ntk_attention import attacks
from ntk_attention import data
from ntk_attention import malleability
from ntk_attention.study import configs
from ntk_attention.study import paper
from ntk_attention.study import sensitivity
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'sensitivity'
MODEL_COUNT = 2     # models: (reference, candidate)


def baseline(config: configs.Sensitivity) -> sensitivity.Baseline:
  """The setting every variation departs from: `config`'s fields, with epochs from `train`,
  init_std from `options` and n_train from `data`."""
  c = config
  return sensitivity.Baseline(eps=c.eps, eps_units=c.eps_units, tau=c.tau,
                              init_std=c.options.init_std, epochs=c.train.epochs,
                              width=c.width, n_train=c.data.n_train, ridge=c.ridge,
                              score=c.score, kernel=c.kernel, retrain=c.retrain,
                              pgd_steps=c.pgd_steps)


def parse_tasks(text: str, dataset: str) -> list:
  """'+'-separated tasks -> list; 'binary' becomes `paper.binary_classes(dataset)`."""
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


def check(config: configs.Sensitivity) -> None:
  """Validates `config` (and every variation of it) before any data is loaded."""
  c = config
  if _base.check_data(c.data):
    raise ValueError('--classes does not apply here; use --tasks (e.g. "all+3,8").')
  tasks = parse_tasks(c.tasks, c.data.dataset)
  attack_names = _base.check_names(c.attacks, 'attacks', attacks.ATTACKS)
  models = _base.check_models(c.models, count=MODEL_COUNT)
  if c.seeds < 2:
    raise ValueError(f'--seeds must be >= 2 for a bootstrap interval, got {c.seeds}.')
  if c.width < 1:
    raise ValueError(f'--width must be >= 1, got {c.width}.')
  _base.check_train(c.train)
  _base.check_options(c.options)
  base = baseline(c)
  variations = sensitivity.parse_variations(c.variations, base)
  sensitivity.validate(base, variations, attack_names, tasks, models=models)


def data_needs(config: configs.Sensitivity) -> list:
  """Every (task, n_train) load of the run (`loader`): each task at the baseline n_train
  and at each n_train variation, n_test in proportion."""
  c, base = config, baseline(config)
  sizes = [base.n_train] + [v for k, v in sensitivity.parse_variations(c.variations, base)
                            if k == 'n_train']
  needs = []
  for task in parse_tasks(c.tasks, c.data.dataset):
    classes = None if task == 'all' else data.parse_classes(task)
    needs += [_base.Need(c.data.dataset, classes, n,
                         max(1, int(round(n * c.data.n_test / c.data.n_train))),
                         classes is not None) for n in sizes]
  return needs


def loader(config: configs.Data):
  """`load(task, n_train)`: the data of a task, cached; the binary tasks keep the
  train/test ratio and shrink to fit their class pool."""
  cache = {}
  ratio = config.n_test / config.n_train

  def load(task, n_train):
    key = (task, n_train)
    if key not in cache:
      classes = None if task == 'all' else data.parse_classes(task)
      cache[key] = data.load(config.dataset, classes=classes, n_train=n_train,
                             n_test=max(1, int(round(n_train * ratio))), seed=config.seed,
                             data_dir=config.data_dir, fit_to_pool=classes is not None)
      ds = cache[key]
      logging.info('data %s task %s: %d train, %d test', ds.name, task, len(ds.x_train),
                   len(ds.x_test))
    return cache[key]

  return load


def run(config: configs.Sensitivity, out_dir: str, context=None, resume: bool = False) -> dict:
  """The baseline and every variation of `config` into `out_dir`; returns the JSON dict.
  `context`: a `Context` when a reproduction runs this."""
  c = config
  check(c)
  tasks = parse_tasks(c.tasks, c.data.dataset)
  models = _base.check_models(c.models, count=MODEL_COUNT)
  base = baseline(c)
  variations = sensitivity.parse_variations(c.variations, base)
  attack_names, seeds = list(c.attacks), list(range(c.seeds))
  settings = dict(dataset=c.data.dataset, n_test=c.data.n_test, data_seed=c.data.seed,
                  tasks=tasks, baseline=base._asdict(), variations=variations,
                  attacks=attack_names, seeds=seeds, **c.train._asdict())
  store = _base.open_store(NAME, settings, resume, out_dir)
  done = store.done_keys(sensitivity.KEY_FIELDS)
  per_var = {v: (1 if v[0] == 'retrain' else len(attack_names)) for v in variations}
  total = len(tasks) * 2 * len(seeds) * (len(attack_names) + sum(per_var.values()))
  progress = _base.progress(NAME, total, context)
  if done:
    progress.skip(min(len(done), total))
  load = loader(c.data)
  sensitivity.run(load, tasks, base, variations, attack_names, seeds, c.train,
                  malleability.Hooks(done=done, on_record=store.append,
                                     on_progress=progress.update),
                  base_seed=c.data.seed, models=list(models), train_fn=_base.trainer(context))
  classes = {task: load(task, base.n_train).num_classes for task in tasks}
  summary = sensitivity.summarize(store.records(), models=models, num_classes=classes)
  calib = sensitivity.calibration(summary, c.data.dataset, models=models)
  result = {'summary': summary, 'calibration': calib, 'dataset': c.data.dataset,
            'models': list(models),
            'n_train': base.n_train, 'n_test': c.data.n_test, 'seeds': len(seeds),
            'baseline': base._asdict(), 'tasks': tasks, 'provenance': _base.provenance(c)}
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), result)
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), summary)
  store_lib.write_csv(_base.out_path(NAME + '_calibration.csv', out_dir), calib)
  from ntk_attention.study import report
  from ntk_attention.study.report import figures as report_figures
  figures = report_figures.sensitivity_figures(result, out_dir)
  text = report.sensitivity_section(result, [os.path.basename(f) for f in figures])
  store_lib.write_text(_base.out_path(NAME + '_table.md', out_dir), text)
  return result
