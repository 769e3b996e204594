"""How robust is the study's verdict? One unpublished choice varied at a time (docs/method.md §12).

Around a baseline (the study's conventions where it published them, our [choice]s where it
did not), each *variation* changes one choice — ε, its units, τ, init_std, epochs, width,
n_train, ridge, score, kernel, retrain, PGD steps — and reruns the malleability protocol
(`malleability.sweep`) for both models, every task and attack, over the same seeds.
Trained models are shared between variations that do not change training (`train_fn`, e.g.
`cache.cached_train`), and so is what the protocol computes from a trained model and its
clean data (Θ∞, accuracies, feature concentration, kernel distance, the clean influence:
`malleability.sweep`'s memo, filled by the baseline), so a variation of ε, τ or the PGD
steps costs only the attacks and the perturbed influence.

Per (task, variation, attack):
  `ratio = mean_s flip(MLP-Attn) / mean_s flip(2L-ReLU)` over the seeds s, with a 95%
  percentile bootstrap interval (`stats.bootstrap_ratio`): each model's seeds are resampled
  with replacement (independently: the two models are separate networks), B = 2000
  resamples. A resample whose 2L-ReLU mean is 0 has an infinite ratio; the bound it lands
  on is then null. No interval from fewer than 3 seeds (null, with the reason). Means and stds over seeds: `stats` (std with ddof = 1).
Per variation, the calibration against the study's flip rates (its Tables 2–3):
  `distance = mean over cells |ln(ours/study)|`, cells = (task, attack, model) with a
  published value; a zero flip rate counts as half a flip of the top-τ set (ln 0 is
  undefined). `distance_relu` / `distance_attn` restrict the cells to one model. A variation
  whose model is below twice chance accuracy in some cell is `undertrained` and ranks after
  every trained one (its closeness to the study is that of an untrained network).

The library does no I/O: records go to `on_record`, finished cells are named by `done`.
"""
import collections
import functools
import inspect
import math
from typing import Callable, NamedTuple, Optional, Sequence

from ntk_attention import malleability
from ntk_attention import models as models_lib
from ntk_attention import stats
from ntk_attention import training
from ntk_attention.study import cache
from ntk_attention.study import paper

CHOICES = ('eps', 'eps_units', 'tau', 'init_std', 'epochs', 'width', 'n_train', 'ridge',
           'score', 'kernel', 'retrain', 'pgd_steps')
KEY_FIELDS = ('task', 'choice', 'value', 'model', 'attack', 'seed')
BASELINE = ('baseline', '')
BOOTSTRAP = stats.BOOTSTRAP   # resamples of each ratio's interval


class Baseline(NamedTuple):
  """The setting every variation departs from; defaults are the study's / our [choice]s."""
  eps: float = 0.3
  eps_units: str = 'pixel'
  tau: float = 0.1
  init_std: float = 0.01
  epochs: int = 500
  width: int = 1024
  n_train: int = 1000
  ridge: float = 1e-3
  score: str = 'mean'
  kernel: str = 'empirical'
  retrain: bool = False
  pgd_steps: int = 20


def default_variations(base: Baseline) -> list:
  """`[(choice, value)]`: two values on either side of the baseline for numeric choices
  (×⅓ and ×5/3 for ε; ×½ and ×2 for τ, epochs, n_train; ×¼ and ×4 for the width and the
  PGD steps; ×0.1 and ×10 for the ridge), the other value for binary ones, and init_std 1
  (NT's default initialisation) against the study's 0.01."""
  out = [('eps', round(base.eps / 3, 6)), ('eps', min(1.0, round(base.eps * 5 / 3, 6))),
         ('eps_units', 'std' if base.eps_units == 'pixel' else 'pixel'),
         ('tau', base.tau / 2), ('tau', min(1.0, base.tau * 2)),
         ('init_std', 1.0 if base.init_std != 1.0 else 0.01),
         ('epochs', max(1, base.epochs // 2)), ('epochs', base.epochs * 2),
         ('width', max(1, base.width // 4)), ('width', base.width * 4),
         ('n_train', max(2, base.n_train // 2)), ('n_train', base.n_train * 2),
         ('ridge', base.ridge / 10), ('ridge', base.ridge * 10),
         ('score', 'per_point' if base.score == 'mean' else 'mean'),
         ('kernel', 'analytic' if base.kernel == 'empirical' else 'empirical'),
         ('retrain', not base.retrain),
         ('pgd_steps', max(1, base.pgd_steps // 4)), ('pgd_steps', base.pgd_steps * 4)]
  return out


def parse_variations(text: str, base: Baseline) -> list:
  """'eps=0.1,0.5;init_std=1' -> [('eps', 0.1), ('eps', 0.5), ('init_std', 1.0)], each value
  converted to the type of the baseline's field; '' -> `default_variations(base)`."""
  if not text.strip():
    return default_variations(base)
  out = []
  for item in text.split(';'):
    if not item.strip():
      continue
    if '=' not in item:
      raise ValueError(f'--variations: expected CHOICE=V1,V2 items separated by ";", got {item!r}.')
    choice, values = (p.strip() for p in item.split('=', 1))
    if choice not in CHOICES:
      raise ValueError(f'--variations: unknown choice {choice!r}; choose from {CHOICES}.')
    for v in values.split(','):
      out.append((choice, _convert(choice, v.strip(), base)))
  if not out:
    raise ValueError('--variations is empty.')
  return out


def _convert(choice, text, base):
  kind = type(getattr(base, choice))
  if kind is bool:
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'--variations: {choice} takes true/false, got {text!r}.')
    return text.lower() in ('true', '1')
  try:
    return kind(text)
  except ValueError:
    raise ValueError(f'--variations: {choice}={text!r} is not a {kind.__name__}.') from None


def apply(base: Baseline, choice: str, value) -> Baseline:
  """The baseline with one choice changed (`BASELINE` changes nothing)."""
  return base if choice == 'baseline' else base._replace(**{choice: value})


def value_label(value) -> str:
  """A variation's value as recorded: `str(value)` ('' for the baseline)."""
  return '' if value == '' else str(value)


PAIR = ('relu_mlp', 'mlp_attn')   # (reference, candidate): ratio = candidate / reference


def _pair(models) -> dict:
  """`{name: factory}` of the (reference, candidate) pair (`models.factories`)."""
  out = models_lib.factories(models)
  if len(out) != 2:
    raise ValueError(f'sensitivity compares two models (reference, candidate); got {list(out)}.')
  return out


def validate(base: Baseline, variations, attack_names, tasks, models=PAIR) -> None:
  """ValueError before any work for a setting that cannot run."""
  if not tasks:
    raise ValueError('no tasks given.')
  pair = _pair(models)
  if any(c == 'init_std' for c, _ in variations):
    for name, factory in pair.items():
      if name not in models_lib.MODELS and not _takes(factory, 'init_std'):
        raise ValueError(f'variation init_std: the factory of model {name!r} takes no '
                         'init_std argument.')
  for choice, value in [BASELINE] + list(variations):
    b = apply(base, choice, value)
    setup = malleability.Setup(tau=b.tau, kernel=b.kernel, ridge=b.ridge, score=b.score,
                               eps_units=b.eps_units)
    setup = setup._replace(attack=setup.attack._replace(pgd_steps=b.pgd_steps))
    malleability.validate(attack_names, [b.eps], setup, b.n_train)
    if not (b.init_std > 0 and b.width >= 1 and b.epochs >= 1):
      raise ValueError(f'variation {choice}={value}: init_std, width and epochs must be > 0.')


def _takes(fn, argument: str) -> bool:
  try:
    params = inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
  return argument in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _with_init_std(pair: dict, init_std: float, varied: bool) -> dict:
  """The pair's factories at `init_std`: built-in models always (their baseline is the
  study's init_std), a user's factory only when init_std is the choice varied."""
  out = {}
  for name, factory in pair.items():
    if name in models_lib.MODELS or varied:
      factory = functools.partial(factory, init_std=init_std)
    out[name] = factory
  return out


def run(load: Callable, tasks: Sequence[str], base: Baseline, variations, attack_names,
        seeds: Sequence[int], train_config: training.TrainConfig,
        hooks: malleability.Hooks = malleability.Hooks(), base_seed: int = 0,
        train_fn: Optional[Callable] = None, models=PAIR) -> list:
  """Runs the baseline and every variation on every task; returns the new records.

  `load(task, n_train) -> data.Dataset` gives the data of a task ('all' or e.g. '3,8') at a
  training-set size. A 'retrain' variation attacks with PGD only (it retrains once per
  attack and seed). `hooks`: `done` holds `KEY_FIELDS` tuples to skip, records go to
  `on_record`, progress to `on_progress` (`hooks.task` is unused: the tasks are `tasks`).
  `models`: the (reference, candidate) pair — names, `'module:function'` entries or
  `{name: factory}`; the ratio is candidate / reference. Records: the fields of
  `malleability.protocol` plus `choice` and `value` (the baseline is `choice='baseline'`,
  `value=''`).
  """
  pair = _pair(models)
  done = set(hooks.done)
  train_fn = train_fn or cache.cached_train()
  new = []
  for task in tasks:
    shared = {}   # the baseline's Θ∞, diagnostics, clean influence: `malleability.sweep`'s memo
    for choice, value in [BASELINE] + list(variations):
      b = apply(base, choice, value)
      label = value_label(value)
      attacks = ['pgd'] if (choice == 'retrain' and b.retrain) else list(attack_names)
      todo = [s for s in seeds if any((task, choice, label, m, a, int(s)) not in done
                                      for m in pair for a in attacks)]
      if not todo:
        continue
      ds = load(task, b.n_train)
      setup = malleability.Setup(tau=b.tau, kernel=b.kernel, ridge=b.ridge, score=b.score,
                                 eps_units=b.eps_units)
      setup = setup._replace(attack=setup.attack._replace(pgd_steps=b.pgd_steps))
      config = train_config._replace(epochs=b.epochs)

      def record(rec, choice=choice, label=label):
        rec.update(choice=choice, value=label)
        if tuple(rec[k] for k in KEY_FIELDS) in done:   # resumed seed: already stored
          return
        hooks.on_record(rec)
        new.append(rec)

      malleability.sweep(ds, _with_init_std(pair, b.init_std, choice == 'init_std'), b.width,
                         todo, attacks, [b.eps], setup, config,
                         malleability.Settings(retrain=b.retrain),
                         malleability.Hooks(task=task, on_record=record,
                                            on_progress=hooks.on_progress),
                         base_seed=base_seed, train_fn=train_fn,
                         # a variation reads the baseline's entries and keeps none of its own
                         memo=shared if choice == 'baseline' else collections.ChainMap({}, shared))
  return new


def pair_cells(records, fields, models=PAIR):
  """`(key, reference records, candidate records)` per group of `fields` (first appearance
  order) where both models of `models` = (reference, candidate) have records, each side
  sorted by seed."""
  reference, candidate = list(models)
  for key, cell in stats.group_by(records, fields).items():
    by_model = stats.group_by(cell, ('model',))
    ref = sorted(by_model.get((reference,), []), key=lambda r: r['seed'])
    cand = sorted(by_model.get((candidate,), []), key=lambda r: r['seed'])
    if ref and cand:
      yield key, ref, cand


def summarize(records, models=PAIR, num_classes: Optional[dict] = None) -> list:
  """One row per (task, choice, value, attack): both models' mean ± std flip rates (`relu_*`
  the reference `models[0]`, `attn_*` the candidate `models[1]`), the ratio candidate /
  reference with its bootstrap interval and each flip rate's (`stats.mean_interval`; none
  from fewer than 3 seeds: `interval_null_because`), log10 ratio, seeds, test accuracies,
  and `relu_undertrained` / `attn_undertrained`: the model's mean test accuracy below `training.accuracy_floor` of the
  task's `num_classes[task]` (twice chance, capped); without `num_classes`, the records' own
  per-seed `undertrained` flags, a majority of the seeds."""

  def weak(rows, task):
    if num_classes and task in num_classes:
      floor = training.accuracy_floor(num_classes[task])
      return bool(stats.mean([r['test_accuracy'] for r in rows]) < floor)
    return 2 * sum(bool(r.get('undertrained')) for r in rows) > len(rows)

  rows = []
  for (task, choice, value, attack), relu, attn in pair_cells(
      records, ('task', 'choice', 'value', 'attack'), models):
    fr, fa = [r['flip_rate'] for r in relu], [r['flip_rate'] for r in attn]
    ratio, low, high = stats.bootstrap_ratio(fa, fr, BOOTSTRAP)
    rows.append({
        'task': task, 'choice': choice, 'value': value, 'attack': attack,
        'eps_pixels': relu[0]['eps_pixels'], 'seeds': len(relu),
        'relu_flip_rate_mean': stats.mean(fr), 'relu_flip_rate_std': stats.std(fr),
        'attn_flip_rate_mean': stats.mean(fa), 'attn_flip_rate_std': stats.std(fa),
        'ratio': ratio, 'ratio_low': low, 'ratio_high': high,
        'log10_ratio': None if not ratio else math.log10(ratio),
        'relu_test_accuracy': stats.mean([r['test_accuracy'] for r in relu]),
        'attn_test_accuracy': stats.mean([r['test_accuracy'] for r in attn]),
        'n_subset': relu[0]['n_subset'],
        'relu_undertrained': weak(relu, task), 'attn_undertrained': weak(attn, task),
    })
    for key, values in (('relu', fr), ('attn', fa)):
      rows[-1][f'{key}_flip_rate_low'], rows[-1][f'{key}_flip_rate_high'] = stats.mean_interval(values)
    why = stats.no_interval_reason(len(fr), len(fa))
    if why:
      rows[-1]['interval_null_because'] = why
  return rows


def calibration(summary, dataset: str, models=PAIR) -> list:
  """One row per variation: distance of its flip rates to the study's (module docstring),
  over all cells and per model, and `undertrained` (a model of the variation below twice
  chance in some cell: its flip rates describe an untrained network); sorted trained rows
  first, then closest first. `models`: the names of the summary's (reference, candidate)
  pair; only the study's own models have published rates (a user's model has no cells)."""
  ref = paper.reference_dataset(dataset)
  by_var, weak = {}, {}
  reference, candidate = list(models)
  for row in summary:
    key = (row['choice'], row['value'])
    weak[key] = weak.get(key, False) or bool(row.get('relu_undertrained')
                                             or row.get('attn_undertrained'))
    for model, key in ((reference, 'relu'), (candidate, 'attn')):
      study = paper.flip_rate(ref, row['task'], row['attack'], model)
      if study is None:
        continue
      ours = 100 * max(row[f'{key}_flip_rate_mean'], 0.5 / row['n_subset'])
      by_var.setdefault((row['choice'], row['value']), []).append(
          (key, abs(math.log(ours / study))))
  rows = []
  for (choice, value), cells in by_var.items():
    d = [c for _, c in cells]
    rows.append({'choice': choice, 'value': value, 'cells': len(d),
                 'distance': stats.mean(d),
                 'distance_relu': stats.mean([c for k, c in cells if k == 'relu']),
                 'distance_attn': stats.mean([c for k, c in cells if k == 'attn']),
                 'undertrained': weak.get((choice, value), False)})
  return sorted(rows, key=lambda r: (r['undertrained'], r['distance']))


__all__ = ['PAIR', 'pair_cells', 'CHOICES', 'KEY_FIELDS', 'BASELINE', 'Baseline', 'default_variations',
           'parse_variations', 'apply', 'value_label', 'validate', 'run', 'summarize',
           'calibration']
