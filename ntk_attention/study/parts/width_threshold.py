"""The width the kernel regime needs, against κ (docs/method.md §18); `configs.WidthThreshold`,
scripts/width_threshold.py, and reproduce's optional part `width_threshold`.

Per dataset (synthetic inputs with κ(G) on `kappas`; nested subsets of `data.dataset` of the
sizes `n_grid`) and model: the criterion ‖Θ_m − Θ‖₂/λ_min(Θ) at initialisation over `widths`
× `seeds`, the after-training relative function distance over `train_widths`, their slopes
in m and thresholds m*(ε) (`width_threshold.curve_summary`), and per model the exponent of
m* against κ (`width_threshold.summarize`). Writes width_threshold.jsonl (one record per
family × dataset × model × criterion, appended as measured; `resume` skips those already
there), width_threshold.json (`models` → per model `exponent`, `exponent_low`,
`exponent_high`, per-family fits, per-dataset thresholds and slopes), width_threshold.csv (one
row per dataset × model × criterion), width_threshold.md and width_threshold.png (m* against
κ on log–log axes, the theorem's slopes as dotted reference lines).
"""
import math
import os

from absl import logging
import numpy as np

from ntk_attention import data
from ntk_attention import models as models_lib
from ntk_attention import spectral
from ntk_attention import width_threshold as wt
from ntk_attention.study import configs
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'width_threshold'
FAMILIES = ('synthetic', 'real')


def _grid(values, field):
  return sorted(set(_base.check_ints(values, field)))


def check(config: configs.WidthThreshold) -> None:
  """Validates `config` before any data is loaded; a ValueError naming the flag."""
  c = config
  _base.check_data(c.data)
  _base.check_models(c.models)
  _base.check_names(c.families, 'families', FAMILIES)
  widths = _grid(c.widths, 'widths')
  if len(widths) < 2:
    raise ValueError(f'--widths needs at least 2 widths (a slope), got {widths}.')
  if c.train_widths:
    if len(_grid(c.train_widths, 'train_widths')) < 2:
      raise ValueError(f'--train_widths needs 0 or at least 2 widths, got {list(c.train_widths)}.')
    _base.check_train(c.train)
    if (c.train.optimizer, c.train.loss) != ('sgd', 'mse'):
      raise ValueError('--optimizer=sgd --loss=mse are needed for the after-training distance '
                       '(its kernel predictor is gradient flow); or --train_widths=none.')
  if c.seeds < 1:
    raise ValueError(f'--seeds must be >= 1, got {c.seeds}.')
  if not 0 < c.eps < 1e6:
    raise ValueError(f'--eps must be a positive number, got {c.eps}.')
  if 'synthetic' in c.families:
    if not c.kappas or min(c.kappas) < 1 or not all(math.isfinite(k) for k in c.kappas):
      raise ValueError(f'--kappas must be finite numbers >= 1, got {list(c.kappas)}.')
    if c.synthetic_n < 3:
      raise ValueError(f'--synthetic_n must be >= 3, got {c.synthetic_n}.')
    if c.synthetic_d < c.synthetic_n:
      raise ValueError(f'--synthetic_d must be >= --synthetic_n ({c.synthetic_n}) for a '
                       f'full-rank Gram matrix, got {c.synthetic_d}.')
  if 'real' in c.families and _grid(c.n_grid, 'n_grid')[0] < 3:
    raise ValueError(f'--n_grid: every n must be >= 3, got {list(c.n_grid)}.')
  _base.check_options(c.options)


def data_needs(config: configs.WidthThreshold) -> list:
  """One load when the real family runs: a pool of max(n_grid) training points."""
  if 'real' not in config.families:
    return []
  return [_base.Need(config.data.dataset, data.parse_classes(config.data.classes),
                     max(config.n_grid), 1, False)]


def datasets(config: configs.WidthThreshold):
  """[(family, label, x (n, d) float64, targets (n, 1), pad (p, d) or None)]: the synthetic
  grid, then the nested real subsets, each padded with the rest of the largest subset (one
  sequence length, one compiled program per width: `width_threshold.model_draws`). Targets
  (after-training only) are the signs of a seeded random projection of the unit-norm inputs,
  so every dataset has one task of the same kind."""
  c = config
  out = []
  if 'synthetic' in c.families:
    for i, kappa in enumerate(c.kappas):
      x = wt.synthetic_inputs(c.synthetic_n, c.synthetic_d, kappa, seed=c.data.seed + i)
      out.append(('synthetic', f'kappa={kappa:g}', x, None))
  if 'real' in c.families:
    grid = _grid(c.n_grid, 'n_grid')
    ds = data.load(c.data.dataset, classes=c.data.classes, n_train=grid[-1], n_test=1,
                   seed=c.data.seed, data_dir=c.data.data_dir, fit_to_pool=False)
    x_all = np.asarray(ds.x_train, np.float64)
    largest = x_all[spectral.subset_indices(len(x_all), grid[-1], c.data.seed)]
    for n in grid:     # nested: the first n of one seeded permutation
      out.append(('real', f'{ds.name} n={n}', largest[:n], largest[n:]))
  rng = np.random.default_rng(c.data.seed)
  with_targets = []
  for family, label, x, pad in out:
    u = spectral.unit_rows(x)
    y = np.sign(u @ rng.standard_normal(u.shape[1]))[:, None]
    with_targets.append((family, label, x, np.where(y == 0, 1.0, y), pad))
  return with_targets


def run(config: configs.WidthThreshold, out_dir: str, context=None, resume: bool = False) -> dict:
  """Measures every dataset × model × criterion of `config` into `out_dir`; returns the
  `models` summary. `context`: a `Context` when a reproduction runs this."""
  c = config
  check(c)
  names = _base.check_models(c.models)
  options = _base.model_options(c.options, names)
  factories = models_lib.factories(names, options)
  widths = _grid(c.widths, 'widths')
  train_widths = _grid(c.train_widths, 'train_widths') if c.train_widths else []
  all_data = datasets(c)
  settings = dict(configs.as_dict(c), dataset=c.data.dataset, data_seed=c.data.seed)
  store = _base.open_store(NAME, settings, resume, out_dir)
  done = store.done_keys(wt.KEY_FIELDS)
  seeds = list(range(c.seeds))
  per_dataset = len(widths) + len(train_widths)
  total = len(all_data) * len(names) * per_dataset
  progress = _base.progress(NAME, total, context)
  train_fn = _base.trainer(context)
  for family, label, x, y, pad in all_data:
    cond = wt.gram_conditioning(x)
    for name in names:
      def model_fn(m, name=name):
        return models_lib.instantiate(name, factories[name], m, 1)
      todo = [k for k in wt.CRITERIA if (family, label, name, k) not in done
              and (k == 'init' or train_widths)]
      if not todo:
        progress.skip(per_dataset)
        continue
      theta = wt.analytic_train_ntk(model_fn(1), x)
      spec = wt.kernel_spectrum(theta)
      base = dict(family=family, dataset=label, model=name, **cond,
                  log10_kappa_theta=spec.log10_kappa, lambda_min=spec.lambda_min,
                  lambda_max=spec.lambda_max, resolved=spec.resolved)
      if 'init' in todo and spec.lambda_min <= 0:
        logging.warning('%s %s: λ_min(Θ) = %.3g <= 0, the criterion is undefined; recorded as '
                        'such, outside every fit.', label, name, spec.lambda_min)
        store.append(dict(base, criterion='init', widths=widths, errors=None))
        progress.skip(len(widths))
      elif 'init' in todo:
        err = wt.init_errors(wt.model_draws(model_fn, x, seeds, c.data.seed, pad), widths, theta,
                             on_width=lambda m: progress.update())
        store.append(dict(base, criterion='init', widths=widths,
                          errors=(err / spec.lambda_min).tolist()))
      else:
        progress.skip(len(widths))
      if 'trained' in todo:
        err, acc = wt.after_training_errors(model_fn, x, y, train_widths, seeds, theta, c.train,
                                            c.data.seed, train_fn,
                                            on_width=lambda m: progress.update())
        store.append(dict(base, criterion='trained', widths=train_widths, errors=err.tolist(),
                          train_accuracy=acc.tolist(), num_classes=2))
      elif train_widths:
        progress.skip(len(train_widths))
  summary = wt.summarize(store.records(), c.eps)
  rows = csv_rows(summary)
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), {
      'models': summary, 'eps': c.eps, 'widths': widths, 'train_widths': train_widths,
      'seeds': c.seeds, 'provenance': _base.provenance(c)})
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), rows)
  store_lib.write_text(_base.out_path(NAME + '.md', out_dir), section(summary, c.eps))
  plot(_base.out_path(NAME + '.png', out_dir), summary, c.eps)
  return summary


CSV_FIELDS = ('model', 'family', 'dataset', 'criterion', 'n', 'd', 'kappa', 'kappa_d', 'rank',
              'log10_kappa_theta', 'resolved', 'slope', 'slope_low', 'slope_high',
              'log10_threshold', 'log10_threshold_low', 'log10_threshold_high',
              'threshold_kind', 'seeds_observed', 'in_fit', 'undertrained')


def csv_rows(summary: dict) -> list:
  return [{k: r.get(k) for k in CSV_FIELDS} for m in summary.values() for r in m['datasets']]


def _num(v, fmt='.2f'):
  return '–' if v is None else format(v, fmt)


def _interval(lo, hi, fmt='.2f'):
  return '' if lo is None or hi is None else f' [{lo:{fmt}}, {hi:{fmt}}]'


def section(summary: dict, eps: float) -> str:
  """Markdown: the exponents beside the theorem's, then per model the per-dataset slopes and
  thresholds (observed / extrapolated marked)."""
  from ntk_attention.study import paper
  out = ['## Width threshold against κ', '',
         f'The width m*(ε = {eps:g}) at which ‖Θ_m − Θ‖₂/λ_min(Θ) at initialisation falls to ε, '
         'per dataset (geometric mean over seeds; *extrapolated* along the fitted slope when '
         'the widths measured do not reach it), and the exponent p of m* ∝ κ^p fitted over '
         'the datasets (95 % bootstrap interval over seeds). The theorem: p = 6 for MLP-Attn '
         '(v1, m = Ω(κ⁶/ε²)), p = 0 for 2L-ReLU (docs/method.md §18).', '',
         '| model | data | x | p measured | theorem | datasets in fit | after training: p |',
         '|---|---|---|---|---|---|---|']
  for model, m in summary.items():
    for family, f in m['families'].items():
      fit, tr = f.get('fit', {}), f.get('fit_trained', {})
      theorem = m['theorem_exponent']
      out.append(f"| {paper.model_name(model)} | {family} | {f['x']} | "
                 f"{_num(fit.get('exponent'))}{_interval(fit.get('exponent_low'), fit.get('exponent_high'))} | "
                 f"{'–' if theorem is None else format(theorem, 'g')} | {fit.get('datasets', 0)} | "
                 f"{_num(tr.get('exponent'))}{_interval(tr.get('exponent_low'), tr.get('exponent_high'))} |")
      if 'fit_v2' in f:
        v2, fn = f['fit_v2'], f['fit_n']
        out.append(f"| {paper.model_name(model)} | {family} | κ_d, v2 (m*/(n ln n)) | "
                   f"{_num(v2.get('exponent'))}{_interval(v2.get('exponent_low'), v2.get('exponent_high'))} | "
                   f"{'–' if theorem is None else format(theorem, 'g')} | {v2.get('datasets', 0)} | |")
        out.append(f"| {paper.model_name(model)} | {family} | n | "
                   f"{_num(fn.get('exponent'))}{_interval(fn.get('exponent_low'), fn.get('exponent_high'))} | "
                   f"| {fn.get('datasets', 0)} | |")
  out += ['', 'Per dataset: the slope of log c against log m and log10 m* (mean over seeds, 95 % '
          'bootstrap interval), how m* was found; after training, *undertrained* marks nets whose '
          'training accuracy at the widest width is below twice chance.', '',
          '| model | dataset | criterion | κ(G) | κ_d(G) | log10 κ(Θ) | slope in m | '
          'log10 m* | m* found |', '|---|---|---|---|---|---|---|---|---|']
  for model, m in summary.items():
    for r in m['datasets']:
      kind = (r['threshold_kind'] + ('' if r['in_fit'] else ', not fitted')
              + (', undertrained' if r.get('undertrained') else ''))
      out.append(f"| {paper.model_name(model)} | {r['dataset']} | {r['criterion']} | "
                 f"{_num(r['kappa'], '.3g')} | {_num(r['kappa_d'], '.3g')} | "
                 f"{_num(r.get('log10_kappa_theta'))} | "
                 f"{_num(r['slope'], '.3f')}{_interval(r['slope_low'], r['slope_high'], '.3f')} | "
                 f"{_num(r['log10_threshold'])}{_interval(r['log10_threshold_low'], r['log10_threshold_high'])} | "
                 f"{kind} |")
  return '\n'.join(out) + '\n'


def plot(path, summary: dict, eps: float):
  """m*(ε) against κ on log–log axes, one panel per family (x = κ(G) synthetic, κ_d(G) real):
  each model's datasets (filled: observed, open: extrapolated; bars: bootstrap interval over
  seeds) and its fitted line; the theorem's slope (6 for MLP-Attn, 0 for 2L-ReLU) as a dotted
  grey line through the model's first point; the widest width measured as a dashed line.
  Written atomically."""
  from matplotlib.figure import Figure
  from ntk_attention.study import paper
  families = list(dict.fromkeys(f for m in summary.values() for f in m['families']))
  fig = Figure(figsize=(6 * max(1, len(families)), 4.6))
  axes = np.atleast_1d(fig.subplots(1, max(1, len(families))))
  colors = ['tab:blue', 'tab:red', 'tab:green', 'tab:purple']
  for ax, family in zip(axes, families):
    data_y = []
    for (model, m), color in zip(summary.items(), colors):
      f = m['families'].get(family)
      if not f:
        continue
      rows = [r for r in m['datasets'] if r['family'] == family and r['criterion'] == 'init'
              and r['log10_threshold'] is not None]
      if not rows:
        continue
      label = paper.model_name(model)
      for r in rows:
        x, y = r[f['x']], 10 ** r['log10_threshold']
        lo, hi = r['log10_threshold_low'], r['log10_threshold_high']
        data_y += [y, 10 ** (r['log10_threshold'] if hi is None else hi)]
        yerr = None if lo is None else [[y - 10 ** lo], [10 ** hi - y]]
        ax.errorbar([x], [y], yerr=yerr, marker='o', color=color, capsize=3,
                    markerfacecolor=color if r['threshold_kind'] == wt.OBSERVED else 'white',
                    alpha=1.0 if r['in_fit'] else 0.35, linestyle='none')
      xs = np.array([r[f['x']] for r in rows])
      fit = f.get('fit', {})
      grid = np.geomspace(xs.min(), xs.max(), 50)
      if fit.get('exponent') is not None:
        ax.plot(grid, 10 ** (fit['intercept'] + fit['exponent'] * np.log10(grid)), color=color,
                label=f"{label}: measured p = {fit['exponent']:.2f}"
                      f"{_interval(fit['exponent_low'], fit['exponent_high'])}")
      theorem = m['theorem_exponent']
      if theorem is not None:
        r0 = min(rows, key=lambda r: r[f['x']])
        y0 = 10 ** r0['log10_threshold']
        ax.plot(grid, y0 * (grid / r0[f['x']]) ** theorem, color='grey', linestyle=':',
                linewidth=2, label=f'theorem for {label}: slope {theorem:g} (through its first point)')
    widest = max((max(r['widths']) for m in summary.values() for r in m['datasets']
                  if r['family'] == family and r['criterion'] == 'init'), default=None)
    if widest:
      ax.axhline(widest, color='black', linewidth=0.8, linestyle='--',
                 label=f'widest network measured (m = {widest}); above it: extrapolated')
    ax.set_xscale('log')
    ax.set_yscale('log')
    if data_y:     # the data decide the axis; a steeper theorem line leaves through the top
      ax.set_ylim(min(data_y + [widest or data_y[0]]) / 10, max(data_y) * 1e3)
    ax.set_xlabel('κ(G)' if family == 'synthetic' else 'κ_d(G) (real subsets, n grows with κ_d)')
    ax.set_ylabel(f'width m*(ε = {eps:g})')
    ax.set_title(f'{family}: m* against κ (filled: observed, open: extrapolated)')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=120, bbox_inches='tight')
  os.replace(tmp, path)
