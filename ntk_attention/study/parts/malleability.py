"""Influence malleability under FGSM / PGD / MIM (the study's Tables 2–4, docs/method.md §8–10);
`configs.Malleability`, scripts/malleability.py.

Train each model (all seeds vmapped), compute the exact NTK leave-one-out influence of every
training point, attack the top-τ most influential points within ε, recompute kernel and
influence, and report how many influence signs flip (plus Spearman and top-k overlap), per
task × model × setting × attack × ε × seed (`malleability.sweep`). Optional: `retrain`,
`interventions`, `adversarial_training`, and the influence-targeted attack ('influence').

Writes malleability.jsonl (one record per cell, appended as computed; `resume` skips them),
malleability.json / .csv (mean ± std over seeds, each flip rate's interval, undertrained
flags; the JSON's `ratios` and malleability_ratios.csv: MLP-Attn / 2L-ReLU per cell with its
bootstrap interval), malleability_table.md (laid out like the
study, its numbers beside ours) and figures: flip rates by attack and model, flip rate
against ε, the training loss, influence before vs after.
"""
from absl import logging
import numpy as np

from ntk_attention import blocked
from ntk_attention import malleability
from ntk_attention import models as models_lib
from ntk_attention import stats
from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'malleability'
GROUP = ('task', 'model', 'setting', 'attack', 'eps')


def task_name(classes) -> str:
  """'all' (every class) or the classes as text, e.g. '3,8'."""
  return 'all' if not classes else ','.join(str(c) for c in classes)


def check(config: configs.Malleability) -> None:
  """Validates `config` before any data is loaded (τ and memory against data.n_train as
  asked: `run` checks τ again against the size loaded)."""
  c = config
  _base.check_data(c.data)
  _base.check_models(c.models)
  attack_names = _base.check_names(c.attacks, 'attacks', malleability.ATTACKS)
  epsilons = list(c.epsilons)
  if not epsilons:
    raise ValueError('--epsilons is empty.')
  if c.setup.eps_units == 'pixel' and not all(0 <= e <= 1 for e in epsilons):
    raise ValueError(f'--epsilons must lie in [0, 1] (pixels on [0, 1]), got {epsilons}.')
  if c.interventions:
    _base.check_names(c.interventions, 'interventions', malleability.INTERVENTIONS)
  if c.width < 1:
    raise ValueError(f'--width must be >= 1, got {c.width}.')
  if c.seeds < 1:
    raise ValueError(f'--seeds must be >= 1, got {c.seeds}.')
  if c.save_arrays and not c.save_arrays.endswith('.npz'):
    raise ValueError('--save_arrays must name a .npz file.')
  _base.check_train(c.train)
  _base.check_options(c.options)
  malleability.validate(attack_names, epsilons, c.setup, c.data.n_train, c.interventions)
  blocked.check_fits(c.data.n_train, c.data.n_test, c.setup.max_memory_gb or None)


def data_needs(config: configs.Malleability) -> list:
  return _base.data_needs(config.data)


def run(config: configs.Malleability, out_dir: str, context=None, resume: bool = False) -> list:
  """The malleability sweep of `config` into `out_dir`; returns the summary rows (mean ± std
  over seeds per task × model × setting × attack × ε). `context`: a `Context` when a
  reproduction runs this."""
  c = config
  check(c)
  classes = _base.check_data(c.data)
  names = _base.check_models(c.models)
  options = _base.model_options(c.options, names)
  ds = _base.load_data(c.data)
  malleability.validate(list(c.attacks), list(c.epsilons), c.setup, len(ds.x_train),
                        c.interventions)
  task = task_name(classes)
  setup, seeds = c.setup, list(range(c.seeds))
  settings = dict(dataset=ds.name, classes=list(ds.classes), n_train=len(ds.x_train),
                  n_test=len(ds.x_test), data_seed=c.data.seed, width=c.width,
                  tau=setup.tau, kernel=setup.kernel, ridge=setup.ridge, score=setup.score,
                  topk=setup.topk, eps_units=setup.eps_units,
                  attack=setup.attack._asdict(), model_options=options,
                  **c.train._asdict())
  store = _base.open_store(NAME, settings, resume, out_dir)
  sweep_settings = malleability.Settings(c.retrain, tuple(c.interventions), c.adversarial_training)
  total = len(names) * len(sweep_settings.names()) * len(c.attacks) * len(c.epsilons) * len(seeds)
  done = store.done_keys(malleability.KEY_FIELDS)
  progress = _base.progress(NAME, total, context)
  if done:
    progress.skip(min(len(done), total))
  arrays = {}

  def on_arrays(key, arrs):
    for k, v in arrs.items():
      arrays[f'{key}/{k}'] = np.asarray(v)

  malleability.sweep(ds, models_lib.factories(names, options), c.width, seeds, list(c.attacks),
                     list(c.epsilons), setup, c.train, sweep_settings,
                     malleability.Hooks(task=task, done=done, on_record=store.append,
                                        on_arrays=on_arrays, on_progress=progress.update,
                                        kernels=bool(c.save_arrays)),
                     base_seed=c.data.seed, train_fn=_base.trainer(context))
  if c.save_arrays and arrays:
    store_lib.write_npz(c.save_arrays, **arrays)
    logging.info('arrays in %s', c.save_arrays)
  records = store.records()
  summary = summarize(records, ds.num_classes)
  for row in summary:
    # The study compared mean scores; per-point flips have no published counterpart.
    row['paper_flip_rate_pct'] = paper_value(ds.name, task, row) if setup.score == 'mean' else None
  ratio_rows = ratios(records, ds.num_classes)
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), {
      'summary': summary, 'ratios': ratio_rows,
      'accuracy_floor': training.accuracy_floor(ds.num_classes),
      'provenance': _base.provenance(c)})
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), summary)
  if ratio_rows:
    store_lib.write_csv(_base.out_path(NAME + '_ratios.csv', out_dir), ratio_rows)
  from ntk_attention.study import report
  store_lib.write_text(_base.out_path(NAME + '_table.md', out_dir),
                       report.malleability_section({'summary': summary, 'ratios': ratio_rows},
                                                   'Influence malleability',
                                                   ds.name, task))
  plot(summary, arrays, names, c.data.dataset, out_dir)
  return summary


def summarize(records, num_classes: int) -> list:
  """Mean ± std over seeds per `GROUP` (`stats.summarize`), plus the flip rate's 95 %
  bootstrap interval over seeds (`flip_rate_low`, `flip_rate_high`: `stats.mean_interval`,
  None from fewer than 3 seeds with `interval_null_because`) and `undertrained`: the model's
  mean test accuracy below `training.accuracy_floor(num_classes)` (twice chance, capped)."""
  summary = stats.summarize(records, GROUP, malleability.METRICS + malleability.DIAGNOSTICS)
  floor = training.accuracy_floor(num_classes)
  groups = stats.group_by(records, GROUP)
  for row in summary:
    flips = [r['flip_rate'] for r in groups[stats.group_key(row, GROUP)]]
    row['flip_rate_low'], row['flip_rate_high'] = stats.mean_interval(flips)
    why = stats.no_interval_reason(len(flips))
    if why:
      row['interval_null_because'] = why
    row['undertrained'] = bool(row['test_accuracy_mean'] < floor)
  return summary


def ratios(records, num_classes: int, pair=('relu_mlp', 'mlp_attn')) -> list:
  """One row per (task, setting, attack, ε) where both models of `pair` (reference,
  candidate) ran: `ratio = mean_s flip(candidate) / mean_s flip(reference)` over the seeds s
  with its 95 % percentile bootstrap interval (`stats.bootstrap_ratio`, each model's seeds
  resampled independently; `ratio_low`/`ratio_high` None from fewer than 3 seeds, with
  `interval_null_because`, and `ratio_high` None when a resample of the reference flips
  nothing), `seeds`, both models' mean test accuracy and `undertrained` (either model below
  `training.accuracy_floor(num_classes)`)."""
  reference, candidate = pair
  floor = training.accuracy_floor(num_classes)
  out = []
  from ntk_attention.study import sensitivity
  for (task, setting, attack, eps), ref, cand in sensitivity.pair_cells(
      records, ('task', 'setting', 'attack', 'eps'), pair):
    ratio, low, high = stats.bootstrap_ratio([r['flip_rate'] for r in cand],
                                             [r['flip_rate'] for r in ref])
    acc = {m: stats.mean([r['test_accuracy'] for r in rows])
           for m, rows in ((reference, ref), (candidate, cand))}
    row = {'task': task, 'setting': setting, 'attack': attack, 'eps': eps,
           'reference': reference, 'candidate': candidate, 'ratio': ratio,
           'ratio_low': low, 'ratio_high': high, 'seeds': min(len(ref), len(cand)),
           'reference_test_accuracy': acc[reference],
           'candidate_test_accuracy': acc[candidate],
           'undertrained': bool(min(acc.values()) < floor)}
    why = stats.no_interval_reason(len(ref), len(cand))
    if why:
      row['interval_null_because'] = why
    out.append(row)
  return out


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


def plot(summary, arrays, model_names, dataset, out_dir, prefix=NAME):
  """Flip rates per attack (study's rates as stars) and against ε (report figures), the
  training loss of seed 0, and each model's influence before vs after the attack."""
  from ntk_attention.study import report
  from ntk_attention.study.report import figures as report_figures
  from ntk_attention.study.report import plots
  base = [r for r in summary if r['setting'] in ('standard', 'retrain')]
  if not base:
    return
  eps_main = 0.3 if any(abs(r['eps'] - 0.3) < 1e-9 for r in base) else min(r['eps'] for r in base)
  task = base[0].get('task', 'all')
  title = f"{dataset}, {'all classes' if task == 'all' else 'classes ' + task}"
  report_figures.malleability_figures({'summary': summary}, out_dir, title, prefix)
  setting = base[0]['setting']
  curves = {m: np.asarray(arrays[f'{m}/{setting}/loss_curve'])
            for m in model_names if f'{m}/{setting}/loss_curve' in arrays}
  if curves:
    plots.plot_lines(
        _base.out_path(prefix + '_loss.png', out_dir),
        {report.model_name(m): (list(range(1, len(c) + 1)), list(c), None)
         for m, c in curves.items()},
        'epoch', 'mean training loss', 'Training loss per epoch (seed 0)')
  for m in model_names:
    key = f'{m}/{setting}/influence_before'
    after = [k for k in arrays if k.startswith(f'{m}/{setting}/influence_after/')]
    if key in arrays and after:
      pick = next((k for k in after if k.endswith(f'/pgd/{eps_main:g}')),
                  next((k for k in after if '/pgd/' in k), after[0]))
      path = _base.out_path(f'{prefix}_influence_{report_figures.file_label(m)}.png', out_dir)
      plots.plot_scatter(path, np.asarray(arrays[key]), np.asarray(arrays[pick]),
                         'influence I before attack (mean over test set)',
                         'influence I′ after attack',
                         f'{report.model_name(m)}: influence before vs after '
                         f'({pick.split("/", 3)[-1]}, seed 0)')
