"""A joint reproduction search (docs/method.md §12): can any setting reproduce the study's
10-class and binary rows of Table 2 together? `configs.JointSearch`; optional part of
scripts/reproduce.py (`--parts=...,joint_search`, or `--preset=joint_search`).

Three pieces, each over the same seeds:

  grid         the factorial grid ε × ε units × init_std × n_train × epochs (2 levels each by
               default), both tasks, both models; per point and task the flip-rate ratio
               MLP-Attn / 2L-ReLU with its 95 % bootstrap interval (`study.sensitivity.
               summarize`), and per point the distance of its flip rates to the study's over
               both tasks' cells (`study.sensitivity.calibration`: mean |ln(ours/study)|).
               A point *reproduces* a task's row when the interval of every attack's ratio
               lies inside [study / 2, study · 2] (the scorecard's band) and neither model is
               below twice chance accuracy; `answer` says whether any point reproduces both.
  train_search MLP-Attn on the 10-class task at the largest n_train and init_std 0.01,
               trained with each (lr, batch size, epochs) of `train_search` (batch 0 = full
               batch): its test accuracy over seeds beside kernel regression with its own
               analytic NTK (the accuracy the NTK regime would give).
  rounding     the study-convention point (ε = 0.3 pixels, init_std 0.01, the largest n_train
               and epochs) rerun on training and test pixels nudged down by one float32 ulp
               (`nudge`): a rounding-level change, the size of the difference between two
               machines' float arithmetic. Its spread (|Δ flip rate| per seed, |Δ ratio|) is
               reported beside the seed spread (std over seeds, the ratio's interval).

Writes joint_search.jsonl (one record per cell, resumable), joint_search.json (grid summary,
points, answer, train search, rounding), joint_search.csv, joint_search_table.md and
joint_search.png (each point's PGD ratio with its interval on both tasks, against the
study's).
"""
import dataclasses
import functools
import itertools
import math
import os

from absl import logging
import numpy as np

from ntk_attention import attacks
from ntk_attention import data
from ntk_attention import kernels
from ntk_attention import malleability
from ntk_attention import models as models_lib
from ntk_attention import stats
from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import paper
from ntk_attention.study import sensitivity
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base
from ntk_attention.study.parts import sensitivity as sensitivity_part

NAME = 'joint_search'
FACTOR = 2.0                  # the scorecard's band: within a factor 2 of the study's ratio
GRID_FIELDS = ('eps', 'eps_units', 'init_std', 'n_train', 'epochs')
EPS_UNITS = ('pixel', 'std')


def points(config: configs.JointSearch) -> list:
  """The grid as `sensitivity.Baseline`s, in product order of `GRID_FIELDS`."""
  c = config
  out = []
  for eps, units, init_std, n, epochs in itertools.product(c.eps, c.eps_units, c.init_std,
                                                           c.n_trains, c.epochs):
    out.append(sensitivity.Baseline(eps=eps, eps_units=units, tau=c.tau, init_std=init_std,
                                    epochs=epochs, width=c.width, n_train=n, ridge=c.ridge,
                                    kernel=c.kernel))
  return out


def label(point: sensitivity.Baseline) -> str:
  """'ε 0.3 pixel, init 0.01, n 400, 100 ep.': a point's name in records and tables."""
  return (f'ε {point.eps:g} {point.eps_units}, init {point.init_std:g}, n {point.n_train}, '
          f'{point.epochs} ep.')


def headline(config: configs.JointSearch) -> sensitivity.Baseline:
  """The study-convention point the rounding check reruns: ε = 0.3 pixels, init_std 0.01, the
  largest n_train and epochs of the grid."""
  c = config
  return sensitivity.Baseline(eps=0.3, eps_units='pixel', tau=c.tau, init_std=0.01,
                              epochs=max(c.epochs), width=c.width, n_train=max(c.n_trains),
                              ridge=c.ridge, kernel=c.kernel)


def nudge(ds: data.Dataset) -> data.Dataset:
  """`ds` with every nonzero pixel moved down by one float32 ulp (`np.nextafter` toward 0,
  so that pixels stay in [0, 1]): x' = x (1 − O(2⁻²⁴)); zeros stay zero. The labels and the
  subsample are the same."""
  def down(x):
    x = np.asarray(x, np.float32)
    return np.where(x > 0, np.nextafter(x, np.float32(0)), x).astype(np.float32)
  return dataclasses.replace(ds, x_train=down(ds.x_train), x_test=down(ds.x_test))


# ------------------------------------------------------------------------------------ checks


def check(config: configs.JointSearch) -> None:
  """Validates `config` before any data is loaded."""
  c = config
  if _base.check_data(c.data):
    raise ValueError('--classes does not apply to joint_search; use its tasks field.')
  tasks = sensitivity_part.parse_tasks(c.tasks, c.data.dataset)
  _base.check_names(c.attacks, 'attacks', attacks.ATTACKS)
  _base.check_names(c.eps_units, 'eps_units', EPS_UNITS)
  models = _base.check_models(c.models, count=2)
  for field in ('n_trains', 'epochs'):
    _base.check_ints(getattr(c, field), field)
  if not c.eps or not c.init_std:
    raise ValueError('joint_search: eps and init_std need at least one value each.')
  if c.seeds < stats.MIN_SEEDS:
    raise ValueError(f'--seeds must be >= {stats.MIN_SEEDS} (an interval needs 3), got {c.seeds}.')
  if c.width < 1:
    raise ValueError(f'--width must be >= 1, got {c.width}.')
  for lr, batch, epochs in c.train_search:
    if not (lr > 0 and batch >= 0 and epochs >= 1):
      raise ValueError(f'joint_search train_search: (lr, batch_size, epochs) = {(lr, batch, epochs)} '
                       'needs lr > 0, batch_size >= 0 (0 = full batch), epochs >= 1.')
  _base.check_train(c.train)
  _base.check_options(c.options)
  for p in points(c) + [headline(c)]:
    sensitivity.validate(p, [], list(c.attacks), tasks, models=models)


def data_needs(config: configs.JointSearch) -> list:
  """Each task at each n_train of the grid (n_test as given; binary tasks fit their pool)."""
  c = config
  needs = []
  for task in sensitivity_part.parse_tasks(c.tasks, c.data.dataset):
    classes = None if task == 'all' else data.parse_classes(task)
    needs += [_base.Need(c.data.dataset, classes, n, c.data.n_test, classes is not None)
              for n in sorted(set(c.n_trains))]
  return needs


def _loader(config: configs.JointSearch):
  """`load(task, n_train)`: the data of a task at a size, cached, n_test fixed."""
  cache = {}

  def load(task, n_train):
    if (task, n_train) not in cache:
      classes = None if task == 'all' else data.parse_classes(task)
      cache[task, n_train] = data.load(
          config.data.dataset, classes=classes, n_train=n_train, n_test=config.data.n_test,
          seed=config.data.seed, data_dir=config.data.data_dir, fit_to_pool=classes is not None)
    return cache[task, n_train]

  return load


# ------------------------------------------------------------------------------------ running


def run(config: configs.JointSearch, out_dir: str, context=None, resume: bool = False) -> dict:
  """The grid, the training search and the rounding check of `config` into `out_dir`;
  returns the JSON dict."""
  c = config
  check(c)
  tasks = sensitivity_part.parse_tasks(c.tasks, c.data.dataset)
  models = _base.check_models(c.models, count=2)
  seeds, grid = list(range(c.seeds)), points(c)
  settings = {'config': configs.as_dict(c), 'points': [label(p) for p in grid]}
  store = _base.open_store(NAME, settings, resume, out_dir)
  done = store.done_keys(('kind',) + sensitivity.KEY_FIELDS)
  load = _loader(c)
  train_fn = _base.trainer(context)
  runs = [('grid', p, load) for p in grid]
  if c.rounding:
    runs.append(('rounding', headline(c), lambda task, n: nudge(load(task, n))))
  total = (len(runs) * len(tasks) * 2 * len(seeds) * len(c.attacks)
           + len(c.train_search) * len(seeds))
  progress = _base.progress(NAME, total, context)
  if done:
    progress.skip(min(len(done), total))
  for kind, point, loader in runs:
    name = label(point)
    mine = {k[1:] for k in done if k[0] == kind and k[3] == name}
    mine = {(t, 'baseline', '', m, a, s) for t, _, _, m, a, s in mine}

    def on_record(rec, kind=kind, name=name):
      rec.update(kind=kind, choice='joint', value=name,
                 **{f: getattr(point, f) for f in GRID_FIELDS})
      store.append(rec)

    sensitivity.run(loader, tasks, point, [], list(c.attacks), seeds, c.train,
                    malleability.Hooks(done=mine, on_record=on_record,
                                       on_progress=progress.update),
                    base_seed=c.data.seed, train_fn=train_fn, models=list(models))
  _train_search(c, load, store, done, progress, train_fn)
  result = summarize(store.records(), c, {t: load(t, max(c.n_trains)).num_classes for t in tasks},
                     models)
  result['provenance'] = _base.provenance(c)
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), result)
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), result['points'])
  figure = plot(result, out_dir)
  store_lib.write_text(_base.out_path(NAME + '_table.md', out_dir),
                       section(result, [os.path.basename(figure)] if figure else []))
  return result


def _train_search(c, load, store, done, progress, train_fn) -> None:
  """MLP-Attn on the 10-class task ('all', else the first task) at the largest n_train,
  init_std 0.01, under each (lr, batch size, epochs): one record per seed with its test
  accuracy and the accuracy of kernel regression with the model's analytic NTK."""
  import jax.numpy as jnp
  tasks = sensitivity_part.parse_tasks(c.tasks, c.data.dataset)
  task = 'all' if 'all' in tasks else tasks[0]
  candidate = list(c.models)[1]
  ds = load(task, max(c.n_trains))
  y = jnp.asarray(data.targets(ds.y_train, ds.num_classes))
  factory = models_lib.factories([candidate])[candidate]
  kernel_model = models_lib.instantiate(candidate, factory, 1, y.shape[1])
  krr = None
  for lr, batch, epochs in c.train_search:
    todo = [s for s in range(c.seeds) if ('train_search', task, 'train', f'{lr:g}/{batch}/{epochs}',
                                          candidate, '', s) not in done]
    if not todo:
      continue
    if krr is None:
      x_tr, x_te = (jnp.asarray(x, jnp.float64) for x in (ds.x_train, ds.x_test))
      theta = kernels.analytic_kernel(kernel_model, x_tr, x_te)
      f = kernels.ntk_predictor(kernels.split_blocks(theta, len(ds.x_train)), y, ridge=c.ridge)
      krr = float(training.accuracy(f, ds.y_test))
    config = c.train._replace(lr=lr, epochs=epochs, batch_size=batch or len(ds.x_train))
    model = models_lib.instantiate(candidate, functools.partial(factory, init_std=0.01),
                                   c.width, y.shape[1])
    try:
      result = train_fn(model, training.seed_keys(todo, c.data.seed), ds.x_train, y, config)
      accs = []
      for i in range(len(todo)):
        params = training.unstack(result.params, i)
        _, f_test = training.outputs(model, params, ds.x_train, ds.x_test)
        accs.append(float(training.accuracy(f_test, ds.y_test)))
      losses = [float(result.losses[i][-1]) for i in range(len(todo))]
    except FloatingPointError:     # the loss diverged at this lr
      accs, losses = [None] * len(todo), [None] * len(todo)
    for s, acc, loss in zip(todo, accs, losses):
      store.append({'kind': 'train_search', 'task': task, 'choice': 'train',
                    'value': f'{lr:g}/{batch}/{epochs}', 'model': candidate, 'attack': '',
                    'seed': int(s), 'lr': lr, 'batch_size': batch, 'epochs': epochs,
                    'n_train': len(ds.x_train), 'test_accuracy': acc, 'final_loss': loss,
                    'krr_test_accuracy': krr, 'diverged': acc is None})
    progress.update(len(todo))
    logging.info('train search %s lr %g batch %s epochs %d: test accuracy %s (NTK regression %.3f)',
                 candidate, lr, batch or 'full', epochs, accs, krr)


# ------------------------------------------------------------------------------------ summary


def _reproduces(rows, study_ratios) -> bool:
  """Every attack's ratio interval inside [study / FACTOR, study · FACTOR], models trained."""
  if not rows:
    return False
  for r in rows:
    s = study_ratios.get(r['attack'])
    if (s is None or r['ratio_low'] is None or r['ratio_high'] is None
        or r['relu_undertrained'] or r['attn_undertrained']):
      return False
    if not (s / FACTOR <= r['ratio_low'] and r['ratio_high'] <= s * FACTOR):
      return False
  return True


def summarize(records, config: configs.JointSearch, num_classes: dict, models) -> dict:
  """The JSON of the search: `summary` (per kind, task, point, attack: rates, ratio and
  interval, undertrained flags), `points` (one row per grid point: its fields, both tasks'
  PGD ratios with intervals, its calibration distance to the study, `reproduces` per task),
  `closest` (the trained point with the smallest distance), `answer` (a sentence),
  `train_search` and `rounding`."""
  ref = paper.reference_dataset(config.data.dataset)
  tasks = list(num_classes)
  attack_rows = [r for r in records if r['kind'] in ('grid', 'rounding')]
  summary = []
  for kind in ('grid', 'rounding'):
    rows = sensitivity.summarize([r for r in attack_rows if r['kind'] == kind], models,
                                 num_classes)
    summary += [dict(r, kind=kind) for r in rows]
  grid = [r for r in summary if r['kind'] == 'grid']
  calib = {r['value']: r for r in sensitivity.calibration(grid, config.data.dataset, models)}
  by_point = stats.group_by([r for r in attack_rows if r['kind'] == 'grid'], ('value',))
  main_attack = 'pgd' if 'pgd' in config.attacks else config.attacks[0]
  point_rows = []
  for (name,), recs in by_point.items():
    row = {'point': name, **{f: recs[0][f] for f in GRID_FIELDS}}
    cal = calib.get(name)
    row['distance'] = cal['distance'] if cal else None
    row['undertrained'] = bool(cal and cal['undertrained'])
    for task in tasks:
      cells = [r for r in grid if r['value'] == name and r['task'] == task]
      study = {a: v[1] / v[0] for a, v in paper.FLIP_RATE.get((ref, task), {}).items() if v[0] > 0}
      main = next((r for r in cells if r['attack'] == main_attack), None)
      key = 'all' if task == 'all' else 'binary'
      if main:
        row[f'{key}_ratio'] = main['ratio']
        row[f'{key}_ratio_low'] = main['ratio_low']
        row[f'{key}_ratio_high'] = main['ratio_high']
        row[f'{key}_relu_flip'] = main['relu_flip_rate_mean']
        row[f'{key}_attn_flip'] = main['attn_flip_rate_mean']
        row[f'{key}_attn_accuracy'] = main['attn_test_accuracy']
      row[f'{key}_reproduces'] = _reproduces(cells, study)
    row['reproduces_both'] = all(row.get(f"{'all' if t == 'all' else 'binary'}_reproduces")
                                 for t in tasks)
    point_rows.append(row)
  ranked = sorted((r for r in point_rows if r['distance'] is not None),
                  key=lambda r: (r['undertrained'], r['distance']))
  closest = ranked[0] if ranked else None
  both = [r['point'] for r in point_rows if r['reproduces_both']]
  if both:
    answer = (f"Yes: {len(both)} of {len(point_rows)} settings reproduce both rows (every "
              f"attack's ratio interval within a factor {FACTOR:g} of the study's, models "
              f"trained): {'; '.join(both)}.")
  else:
    per_task = {t: sum(r.get(f"{'all' if t == 'all' else 'binary'}_reproduces") for r in point_rows)
                for t in tasks}
    answer = (f'No: none of the {len(point_rows)} settings reproduces both rows (the 10-class '
              f"row alone: {per_task.get('all', 0)}, the binary row alone: "
              f"{sum(v for t, v in per_task.items() if t != 'all')})"
              + (f'; the closest to the study overall is {closest["point"]} (mean |ln(ours/study)| '
                 f'{closest["distance"]:.2f}, a factor {math.exp(closest["distance"]):.1f} off).'
                 if closest else '.'))
  return {'dataset': config.data.dataset, 'tasks': tasks, 'models': list(models),
          'seeds': config.seeds, 'attack': main_attack, 'width': config.width,
          'summary': summary, 'points': point_rows, 'closest': closest and closest['point'],
          'answer': answer, 'train_search': _train_search_rows(records),
          'rounding': _rounding_rows(records, summary, config)}


def _train_search_rows(records) -> list:
  rows = []
  for (value,), recs in stats.group_by([r for r in records if r['kind'] == 'train_search'],
                                       ('value',)).items():
    accs = [r['test_accuracy'] for r in recs if r['test_accuracy'] is not None]
    low, high = stats.mean_interval(accs)
    rows.append({'lr': recs[0]['lr'], 'batch_size': recs[0]['batch_size'] or 'full',
                 'epochs': recs[0]['epochs'], 'n_train': recs[0]['n_train'],
                 'seeds': len(recs), 'diverged': sum(r['diverged'] for r in recs),
                 'test_accuracy': stats.mean(accs), 'test_accuracy_low': low,
                 'test_accuracy_high': high, 'krr_test_accuracy': recs[0]['krr_test_accuracy']})
  return rows


def _rounding_rows(records, summary, config) -> list:
  """Per task × attack at the headline point: each model's mean |Δ flip rate| between the
  nudged and the original inputs (seed by seed) beside its std over seeds, and the ratio on
  both with the original's interval."""
  name = label(headline(config))
  rows = []
  original = {(r['task'], r['model'], r['attack'], r['seed']): r['flip_rate'] for r in records
              if r['kind'] == 'grid' and r['value'] == name}
  nudged = {(r['task'], r['model'], r['attack'], r['seed']): r['flip_rate'] for r in records
            if r['kind'] == 'rounding'}
  for s in summary:
    if s['kind'] != 'rounding':
      continue
    base = next((r for r in summary if r['kind'] == 'grid' and r['value'] == name
                 and (r['task'], r['attack']) == (s['task'], s['attack'])), None)
    if base is None:
      continue
    row = {'task': s['task'], 'attack': s['attack'], 'ratio': base['ratio'],
           'ratio_low': base['ratio_low'], 'ratio_high': base['ratio_high'],
           'ratio_nudged': s['ratio'],
           'ratio_change': (None if base['ratio'] is None or s['ratio'] is None
                            else abs(s['ratio'] - base['ratio']))}
    for key, model in zip(('relu', 'attn'), (s.get('reference', None) or config.models[0],
                                            config.models[1])):
      deltas = [abs(nudged[k] - original[k]) for k in nudged
                if k[:3] == (s['task'], model, s['attack']) and k in original]
      row[f'{key}_flip_change'] = stats.mean(deltas)
      row[f'{key}_flip_seed_std'] = base[f'{key}_flip_rate_std']
    rows.append(row)
  return rows


# ------------------------------------------------------------------------------------ report


def _ratio(row, key) -> str:
  if f'{key}_ratio' not in row:
    return ''
  return stats.format_ratio(row[f'{key}_ratio'], row[f'{key}_ratio_low'], row[f'{key}_ratio_high'])


def section(res: dict, figures=()) -> str:
  """The report's section: the answer, the grid table (closest first), the training search,
  the rounding spread."""
  from ntk_attention.study.report import page
  ref = paper.reference_dataset(res['dataset'])
  study = {t: paper.FLIP_RATE.get((ref, t), {}).get(res['attack']) for t in res['tasks']}
  study_text = ', '.join(f"{'10 classes' if t == 'all' else t} {v[1] / v[0]:.1f}×"
                         for t, v in study.items() if v and v[0] > 0)
  rows = sorted(res['points'], key=lambda r: (r['undertrained'], r['distance'] is None,
                                              r['distance'] or 0))
  table = []
  for r in rows:
    line = {'setting': r['point'] + (' †' if r['undertrained'] else ''),
            f"10-class {res['attack'].upper()} ratio": _ratio(r, 'all'),
            f"binary {res['attack'].upper()} ratio": _ratio(r, 'binary'),
            'flip % 2L-ReLU / MLP-Attn (10-class)':
                (f"{100 * r['all_relu_flip']:.1f} / {100 * r['all_attn_flip']:.1f}"
                 if 'all_relu_flip' in r else ''),
            'MLP-Attn test acc. (10-class)': (f"{100 * r['all_attn_accuracy']:.0f} %"
                                              if 'all_attn_accuracy' in r else ''),
            'mean |ln(ours/study)|': '' if r['distance'] is None else f"{r['distance']:.2f}",
            'reproduces': ('both' if r['reproduces_both'] else
                           ', '.join(k for k, key in (('10-class', 'all'), ('binary', 'binary'))
                                     if r.get(f'{key}_reproduces')) or 'neither')}
    table.append(line)
  text = ['## Joint reproduction search', '',
          f"{res['dataset']}, width {res['width']}, {res['seeds']} seeds per point, "
          f"{res['attack'].upper()}; every combination of ε × units × init_std × n_train × "
          f"epochs, both tasks. Ratio = mean MLP-Attn flip rate / mean 2L-ReLU flip rate with "
          f"its 95 % bootstrap interval over seeds; the study: {study_text}. A row is "
          f"reproduced when every attack's interval lies within a factor {FACTOR:g} of the "
          "study's and both models are above twice chance accuracy († marks a setting with an "
          'undertrained model; such settings rank last).', '',
          f"**{res['answer']}**", '',
          page.markdown_table(table, list(table[0]) if table else []), '']
  text += [f'![{f}]({f})' for f in figures] + ['']
  ts = res.get('train_search') or []
  if ts:
    krr = ts[0]['krr_test_accuracy']
    best = max((r for r in ts if r['test_accuracy'] is not None),
               key=lambda r: r['test_accuracy'], default=None)
    trows = [{'lr': f"{r['lr']:g}", 'batch': r['batch_size'], 'epochs': r['epochs'],
              'test accuracy [95% CI]': ('diverged' if r['test_accuracy'] is None else
                                         _acc_text(r)),
              'NTK regression': f'{100 * krr:.1f} %'} for r in ts]
    text += ['### Can MLP-Attn be trained to its NTK\'s accuracy?', '',
             f"MLP-Attn on the 10-class task, {ts[0]['n_train']} training points, width "
             f"{res['width']}, init_std 0.01, each training setting over {ts[0]['seeds']} "
             'seeds, beside kernel regression with its own analytic NTK.', '',
             page.markdown_table(trows, list(trows[0])), '',
             (f"The best setting (lr {best['lr']:g}, batch {best['batch_size']}, "
              f"{best['epochs']} epochs) reaches {100 * best['test_accuracy']:.1f} % test "
              f"accuracy; its NTK regression reaches {100 * krr:.1f} %." if best else
              'Every setting diverged.'), '']
  rd = res.get('rounding') or []
  if rd:
    rrows = [{'task': r['task'], 'attack': r['attack'].upper(),
              'ratio [95% CI over seeds]': stats.format_ratio(r['ratio'], r['ratio_low'], r['ratio_high']),
              'ratio, inputs −1 ulp': '' if r['ratio_nudged'] is None else f"{r['ratio_nudged']:.2g}×",
              '|Δ ratio|': '' if r['ratio_change'] is None else f"{r['ratio_change']:.2g}",
              '2L-ReLU |Δ flip| / seed std (pp)': _pp(r, 'relu'),
              'MLP-Attn |Δ flip| / seed std (pp)': _pp(r, 'attn')} for r in rd]
    text += ['### Rounding sensitivity', '',
             'The study-convention point rerun with every nonzero pixel moved down by one '
             'float32 ulp (a rounding-level change, as between two machines): the change of '
             'each flip rate, seed by seed, beside its spread over seeds.', '',
             page.markdown_table(rrows, list(rrows[0])), '']
  return '\n'.join(text) + '\n'


def _acc_text(r) -> str:
  text = f"{100 * r['test_accuracy']:.1f} %"
  if r['test_accuracy_low'] is not None:
    text += f" [{100 * r['test_accuracy_low']:.1f}, {100 * r['test_accuracy_high']:.1f}]"
  return text + (f" ({r['diverged']} diverged)" if r['diverged'] else '')


def _pp(r, key) -> str:
  a, b = r.get(f'{key}_flip_change'), r.get(f'{key}_flip_seed_std')
  return '' if a is None or b is None else f'{100 * a:.1f} / {100 * b:.1f}'


def plot(res: dict, out_dir: str):
  """joint_search.png: each point's 10-class ratio (x) against its binary ratio (y), log
  scales, with their 95 % intervals as error bars (an unbounded upper bound drawn to 10× the
  ratio), and the study's pair of ratios as a star inside its factor-2 box. Points whose
  ratio is undefined or 0 on a task cannot be placed on log axes; the title counts them out.
  None when a task is missing."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  pts = [r for r in res['points'] if r.get('all_ratio') and r.get('binary_ratio')]
  ref = paper.reference_dataset(res['dataset'])
  binary = next((t for t in res['tasks'] if t != 'all'), None)
  study = [paper.FLIP_RATE.get((ref, t), {}).get(res['attack']) for t in ('all', binary)]
  if not pts or binary is None:
    return None
  fig, ax = plt.subplots(figsize=(7.5, 5.5))
  for r in pts:
    x, y = r['all_ratio'], r['binary_ratio']

    def err(v, lo, hi):
      top = hi if hi is not None else v * 10
      return [[v - (lo if lo is not None else v)], [top - v]]
    color = 'tab:gray' if r['undertrained'] else (
        'tab:red' if r['eps_units'] == 'std' else 'tab:blue')
    ax.errorbar([x], [y], xerr=err(x, r['all_ratio_low'], r['all_ratio_high']),
                yerr=err(y, r['binary_ratio_low'], r['binary_ratio_high']), fmt='o',
                color=color, alpha=0.7, markersize=4, capsize=2)
  if all(s and s[0] > 0 for s in study):
    sx, sy = (s[1] / s[0] for s in study)
    ax.add_patch(plt.Rectangle((sx / FACTOR, sy / FACTOR), sx * (FACTOR - 1 / FACTOR),
                               sy * (FACTOR - 1 / FACTOR), fill=False, ls='--', color='goldenrod'))
    ax.plot([sx], [sy], marker='*', color='gold', markeredgecolor='k', markersize=16, ls='',
            label=f'study ({paper.DATASET_NAMES[ref]}), ×/÷ {FACTOR:g} box')
  ax.plot([], [], 'o', color='tab:blue', label='ε in pixels')
  ax.plot([], [], 'o', color='tab:red', label='ε in pixel std')
  ax.plot([], [], 'o', color='tab:gray', label='† a model below twice chance')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.axhline(1, color='k', lw=0.5)
  ax.axvline(1, color='k', lw=0.5)
  ax.set_xlabel(f"10-class {res['attack'].upper()} ratio MLP-Attn / 2L-ReLU (95% CI)")
  ax.set_ylabel(f"binary {binary} {res['attack'].upper()} ratio (95% CI)")
  ax.set_title(f"Joint search on {res['dataset']}: the {len(pts)} of {len(res['points'])} settings "
               f"with both ratios > 0, {res['seeds']} seeds", fontsize=10)
  ax.legend(fontsize=8, loc='best')
  fig.tight_layout()
  path = _base.out_path(NAME + '.png', out_dir)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
