"""Malleability against n: flip rate, Spearman, candidate / reference ratio, κ_d(G) and the
kernel distance over `n_grid` (docs/method.md §15); `configs.Scaling`, scripts/scaling.py.

Training subsets are nested in n (one seeded permutation of a pool of max(n_grid) points,
so `data.n_train` is not used); the test set (`data.n_test`) is the same for every n. Writes
scaling.jsonl (one record per n × model × seed, appended as it is measured; `resume` skips
those already there), scaling.json / .csv (one row per n), scaling.md and scaling.png (flip
rates and their ratio, log n axis).
"""
import os

from ntk_attention import blocked
from ntk_attention import data
from ntk_attention import malleability
from ntk_attention import models as models_lib
from ntk_attention.study import configs
from ntk_attention.study import scaling
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import _base

NAME = 'scaling'
MODEL_COUNT = 2     # models: (reference, candidate)


def _grid(config: configs.Scaling) -> list:
  return sorted(set(_base.check_ints(config.n_grid, 'n_grid')))


def _setup(config: configs.Scaling) -> malleability.Setup:
  return malleability.Setup(tau=config.tau, eps_units=config.eps_units,
                            max_memory_gb=config.max_memory_gb)


def check(config: configs.Scaling) -> None:
  """Validates `config` before any data is loaded (τ at the smallest n, memory at the
  largest)."""
  c = config
  _base.check_data(c.data)
  _base.check_models(c.models, count=MODEL_COUNT)
  grid = _grid(c)
  if grid[0] < 10:
    raise ValueError(f'--n_grid: every n must be >= 10, got {grid[0]}.')
  if c.seeds < 1 or c.width < 1:
    raise ValueError('--seeds and --width must be >= 1.')
  _base.check_train(c.train)
  _base.check_options(c.options)
  malleability.validate([c.attack], [c.eps], _setup(c), grid[0])
  blocked.check_fits(grid[-1], c.data.n_test, c.max_memory_gb or None, '--n_grid')


def data_needs(config: configs.Scaling) -> list:
  """One load: a pool of max(n_grid) training points and data.n_test test points."""
  return [_base.Need(config.data.dataset, data.parse_classes(config.data.classes),
                     max(config.n_grid), config.data.n_test, False)]


def run(config: configs.Scaling, out_dir: str, context=None, resume: bool = False) -> list:
  """Malleability at every n of `config` into `out_dir`; returns the rows (one per n).
  `context`: a `Context` when a reproduction runs this."""
  c = config
  check(c)
  models = _base.check_models(c.models, count=MODEL_COUNT)
  grid = _grid(c)
  options = _base.model_options(c.options, models)
  ds = data.load(c.data.dataset, classes=c.data.classes, n_train=grid[-1], n_test=c.data.n_test,
                 seed=c.data.seed, data_dir=c.data.data_dir)
  subsets = scaling.nested_subsets(ds, grid, c.data.seed)
  settings = dict(dataset=ds.name, classes=list(ds.classes), n_grid=grid, n_test=c.data.n_test,
                  data_seed=c.data.seed, seeds=c.seeds, width=c.width,
                  attack=c.attack, eps=c.eps, eps_units=c.eps_units, tau=c.tau,
                  model_options=options, **c.train._asdict())
  store = _base.open_store(NAME, settings, resume, out_dir)
  done = store.done_keys(malleability.KEY_FIELDS)
  total = len(grid) * len(models) * c.seeds
  progress = _base.progress(NAME, total, context)
  train_fn = _base.trainer(context)
  if done:
    progress.skip(min(len(done), total))
  seeds = list(range(c.seeds))
  for n in grid:
    scaling.run_n(subsets[n], c.width, seeds, c.attack, c.eps, _setup(c), c.train,
                  malleability.Hooks(done=done, on_record=store.append,
                                     on_progress=progress.update),
                  base_seed=c.data.seed, train_fn=train_fn,
                  models=models_lib.factories(models, options))
  rows = scaling.summarize(store.records(), models=models)
  store_lib.write_json(_base.out_path(NAME + '.json', out_dir), {
      'rows': rows, 'models': models, 'provenance': _base.provenance(c)})
  store_lib.write_csv(_base.out_path(NAME + '.csv', out_dir), rows)
  store_lib.write_text(_base.out_path(NAME + '.md', out_dir),
                       scaling.scaling_section(rows, models=models))
  plot(_base.out_path(NAME + '.png', out_dir), rows, c)
  return rows


def plot(path, rows, config: configs.Scaling):
  """Two panels against n (log axis, ticks at the measured n): both models' flip rates
  (mean ± std over seeds) and the ratio of mean flip rates (candidate / reference,
  `config.models`), with ratio 1 (equally malleable) drawn as a dashed reference. Written
  atomically."""
  from matplotlib.figure import Figure
  from ntk_attention.study.report import figures as report_figures
  models = list(dict.fromkeys(config.models))
  names = [report_figures.model_name(m) for m in models]
  ns = [r['n_train'] for r in rows]
  fig = Figure(figsize=(11, 4.2))
  ax1, ax2 = fig.subplots(1, 2)
  for model, label in zip(models, names):
    ax1.errorbar(ns, [100 * r[f'{model}_flip_rate_mean'] for r in rows],
                 yerr=[100 * r[f'{model}_flip_rate_std'] for r in rows], marker='o',
                 capsize=3, label=label)
  ax1.set_ylabel('flip rate of the top-τ set (%)')
  ax1.set_title(f'{config.attack.upper()}, ε = {config.eps:g} ({config.eps_units}), mean ± std '
                f'over {config.seeds} seeds')
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
