"""The study's figures, drawn from the results the scripts write (floor 4).

Each function takes a part's results as written to disk (the dicts of `spectral.json`,
`ntk_distance.json`, `malleability.json`, `approximation.json`, `sensitivity.json`; the
eigenvalues of `spectral_spectra.npz`), draws with `figures`, and returns the paths written. The
scripts call them for their own output folders, and the report calls them again on the JSON on
disk, so a re-rendered report always shows figures of the current style. Names are the tables'
(`paper.model_name`: 2L-ReLU, MLP-Attn); the study's values are stars labelled "study".
"""
import math
import os
import re

import numpy as np

from ntk_attention.study import paper
from ntk_attention.study.report import plots as figures

from ntk_attention.study.paper import DATASET_NAMES, model_name


def file_label(model: str) -> str:
  """`model` as part of a file name: each character other than a letter, digit, '_', '-' or
  '.' becomes '_' ('my_pkg.nets:deep' -> 'my_pkg.nets_deep'; built-in names are unchanged)."""
  return re.sub(r'[^\w.-]', '_', model)


def _spread(rows, metric, scale=1.0):
  """± std per row, or None when any row has a single seed (no spread to draw)."""
  if any(r.get(f'{metric}_count', 2) < 2 for r in rows):
    return None
  return [scale * r[f'{metric}_std'] for r in rows]


def spectral_figures(spec: dict, spectra: dict, dataset: str, out_dir) -> list:
  """spectral_spectra.png (three panels: G and its odd powers; G³ from G's eigenvalues against
  G³ measured on the attention features; G³ of the rank-r truncated patterns) when `spectra`
  (name -> eigenvalues, as in spectral_spectra.npz) is given, and spectral_kappa_vs_n.png
  (κ(G) and κ_d(G) against n, the study's κ as a level: its n was not published)."""
  paths = []
  n, rank = int(spec['n']), int(spec['rank'])
  if spectra:
    shown = min(n, rank + 10)   # beyond G's numerical rank there is only round-off

    def top(names):
      return {k: np.asarray(spectra[k])[:shown] / np.asarray(spectra[k])[0]
              for k in names if k in spectra}
    powers = figures.spectrum_series(top(['G', 'G^3', 'G^5', 'G^7']))
    measured = figures.spectrum_series({
        'G³ from G’s eigenvalues': np.asarray(spectra['G^3'])[:shown] / spectra['G^3'][0],
        **({'G³ measured on attention features':
            np.asarray(spectra['G3_measured'])[:shown] / spectra['G3_measured'][0]}
           if 'G3_measured' in spectra else {})}) if 'G^3' in spectra else {}
    trunc_names = sorted((k for k in spectra if k.startswith('G_') and k.endswith('^3')),
                         key=lambda k: int(k[2:-2]))[:3]
    trunc = figures.spectrum_series({f'rank {k[2:-2]}': np.asarray(spectra[k])[:shown] / spectra[k][0]
                                     for k in trunc_names})
    common = dict(xlabel='index (descending)', ylabel='eigenvalue / largest', logy=True)
    panels = [dict(series=powers, title='G and its odd powers', **common)]
    if measured:
      panels.append(dict(series=measured, title='G³: predicted vs measured', **common))
    if trunc:
      panels.append(dict(series=trunc, title='G³ of rank-r truncated patterns', **common))
    paths.append(figures.plot_panels(
        os.path.join(out_dir, 'spectral_spectra.png'), panels, ncols=2,
        suptitle=f'{dataset}, n = {n}: top {shown} eigenvalues (numerical rank of G: {rank})'))
  curve = spec.get('curve', [])
  if curve:
    ns = np.array([c['n'] for c in curve], np.float64)
    kap = np.array([c['kappa'] if c['kappa'] is not None else math.inf for c in curve], np.float64)
    finite = np.isfinite(kap)
    series = {}
    if finite.any():
      series['κ(G)' if finite.all() else f'κ(G) (∞ from n = {int(ns[~finite][0])}: not drawn)'] = (
          ns[finite], kap[finite], None)
    series['κ_d(G), rank-r truncation'] = (ns, np.array([c['kappa_eff'] for c in curve]), None)
    ref = paper.reference_dataset(dataset)
    levels = {f'study: κ(G) = {paper.KAPPA[ref]:.2g} ({DATASET_NAMES[ref]}, n not published)':
              paper.KAPPA[ref]} if paper.KAPPA.get(ref) else {}
    paths.append(figures.plot_panels(os.path.join(out_dir, 'spectral_kappa_vs_n.png'), [dict(
        series=series, study_levels=levels, xlabel='n (training points)',
        ylabel='condition number', logx=True, logy=True)], ncols=1,
        suptitle=f'{dataset}: condition number of G against n'))
  return paths


NTK_PANELS = (('function_distance', '‖f_m − f∞‖ on the test set', '‖f_m − f∞‖', True),
              ('kernel_distance_final', 'trained kernel vs Θ∞: ‖Θ_m(T) − Θ∞‖ / ‖Θ∞‖', 'relative distance', True),
              ('kernel_movement', 'kernel movement ‖Θ_m(T) − Θ_m(0)‖ / ‖Θ_m(0)‖', 'relative movement', True),
              ('test_accuracy', 'test accuracy of the trained network', 'test accuracy', False))


def ntk_distance_figures(res: dict, dataset: str, out_dir) -> list:
  """ntk_distance.png: four panels against width (log x), one line per model (mean, band ± std
  over seeds), the study's Table 1 distances as stars in the model's colour."""
  summary = res['summary']
  models = list(dict.fromkeys(r['model'] for r in summary))
  ref = paper.reference_dataset(dataset)
  panels = []
  for metric, label, ylabel, logy in NTK_PANELS:
    if not all(f'{metric}_mean' in r for r in summary):
      continue
    series, study = {}, {}
    for j, m in enumerate(models):
      rows = sorted((r for r in summary if r['model'] == m), key=lambda r: r['width'])
      series[model_name(m)] = ([r['width'] for r in rows], [r[f'{metric}_mean'] for r in rows],
                               _spread(rows, metric))
      if metric == 'function_distance':
        pts = [(w, paper.ntk_distance(ref, m, w)) for w in paper.NTK_DISTANCE_WIDTHS]
        pts = [(w, v) for w, v in pts if v is not None]
        if pts:
          study[f'study: {model_name(m)} ({DATASET_NAMES[ref]} Table 1)'] = (
              [w for w, _ in pts], [v for _, v in pts], figures.colour(j))
    panels.append(dict(series=series, study=study, title=label, xlabel='hidden width m',
                       ylabel=ylabel, logx=True, logy=logy))
  seeds = max(r.get('function_distance_count', 1) for r in summary)
  path = figures.plot_panels(
      os.path.join(out_dir, 'ntk_distance.png'), panels,
      suptitle=f'{dataset}: distance to the NTK regime against width '
               f'({seeds} seed{"s" if seeds > 1 else ""}; band: ± std; f∞: {res.get("comparison")})')
  return [path]


def _base_rows(res):
  return [r for r in res['summary'] if r['setting'] in ('standard', 'retrain')]


def _main_eps(rows):
  return 0.3 if any(abs(r['eps'] - 0.3) < 1e-9 for r in rows) else min(r['eps'] for r in rows)


def flip_rate_figure(res: dict, path, title: str, setting=None) -> str:
  """Bars: flip rate (%) per attack (groups) and model (bars), ± std; the study's rate (the
  `paper_flip_rate_pct` of each summary row) as a star on the matching bar. `setting`: which
  setting's rows (default: the standard / retrain ones, at ε = 0.3 where run)."""
  rows = [r for r in res['summary'] if r['setting'] == setting] if setting else _base_rows(res)
  eps = _main_eps(rows)
  rows = [r for r in rows if abs(r['eps'] - eps) < 1e-9]
  attacks = list(dict.fromkeys(r['attack'] for r in rows))
  models = list(dict.fromkeys(r['model'] for r in rows))
  series, study = {}, {}
  for m in models:
    by = {r['attack']: r for r in rows if r['model'] == m}
    cells = [by[a] for a in attacks if a in by]
    if len(cells) != len(attacks):
      continue
    series[model_name(m)] = ([100 * r['flip_rate_mean'] for r in cells], _spread(cells, 'flip_rate', 100))
    study[model_name(m)] = [r.get('paper_flip_rate_pct') for r in cells]
  units = rows[0].get('eps_units', 'pixel') if rows else 'pixel'
  return figures.plot_bars(path, [a.upper() for a in attacks], series,
                           'top-τ influence signs flipped (%)',
                           f'{title}, ε = {eps:g} ({"[0, 1] pixels" if units == "pixel" else "pixel std"})',
                           study=study)


def eps_figure(res: dict, path, title: str):
  """Small multiples, one panel per attack: flip rate (%) against ε, one line per model, band
  ± std; the study's ε = 0.3 rate as a star. None when a single ε was run."""
  rows = _base_rows(res)
  eps_values = sorted({r['eps'] for r in rows})
  if len(eps_values) < 2:
    return None
  units = rows[0].get('eps_units', 'pixel')
  panels = []
  for attack in dict.fromkeys(r['attack'] for r in rows):
    series, study = {}, {}
    for j, m in enumerate(dict.fromkeys(r['model'] for r in rows)):
      cells = sorted((r for r in rows if r['model'] == m and r['attack'] == attack), key=lambda r: r['eps'])
      series[model_name(m)] = ([r['eps'] for r in cells], [100 * r['flip_rate_mean'] for r in cells],
                               _spread(cells, 'flip_rate', 100))
      ref = [r for r in cells if r.get('paper_flip_rate_pct') is not None]
      if ref:
        study[f'study: {model_name(m)}'] = ([r['eps'] for r in ref], [r['paper_flip_rate_pct'] for r in ref],
                                            figures.colour(j))
    panels.append(dict(series=series, study=study, title=attack.upper(),
                       xlabel='ε (' + ('[0, 1] pixels)' if units == 'pixel' else 'pixel std)'),
                       ylabel='flip rate (%)'))
  return figures.plot_panels(path, panels, ncols=2, suptitle=f'{title}: flip rate against ε (band: ± std over seeds)')


def malleability_figures(res: dict, out_dir, title: str, prefix='malleability') -> list:
  """<prefix>_flip_rates.png and, with several ε, <prefix>_eps.png."""
  paths = [flip_rate_figure(res, os.path.join(out_dir, f'{prefix}_flip_rates.png'), title)]
  eps = eps_figure(res, os.path.join(out_dir, f'{prefix}_eps.png'), title)
  return paths + ([eps] if eps else [])


APPROX_TASKS = {'real': 'real labels', 'aligned': 'aligned with G (top eigvecs)', 'random': 'random targets'}


def approximation_figure(res: dict, out_dir) -> list:
  """approximation.png: relative test error of kernel regression (log y) per kernel (groups) and
  target (bars), ± std over the synthetic draws (the real task has one draw: no error bar)."""
  rows = {(r['task'], r['kernel']): r for r in res['summary']}
  kernels = [k for k in res['kernels'] if all((t, k) in rows for t in res['tasks'])]
  series = {}
  for t in res['tasks']:
    cells = [rows[t, k] for k in kernels]
    series[APPROX_TASKS.get(t, t)] = ([r['relative_mse_mean'] for r in cells], _spread(cells, 'relative_mse'))
  path = figures.plot_bars(os.path.join(out_dir, 'approximation.png'),
                           [paper.KERNEL_NAMES.get(k, k) for k in kernels], series,
                           'relative test error Σ(f−y)²/Σy² (log)',
                           f"{res['dataset']}, {res['n_train']} train / {res['n_test']} test: "
                           'kernel ridge regression', logy=True)
  return [path]


def sensitivity_figures(res: dict, out_dir) -> list:
  """sensitivity_tornado_<task>.png: log10 of the candidate / reference (by default MLP-Attn /
  2L-ReLU) flip-rate ratio per variation with its 95% interval (none from fewer than 3 seeds),
  a variation whose model is below twice chance labelled '† undertrained', and, for the
  study's pair, the study's range of ratios as a band."""
  summary = res['summary']
  models = tuple(res.get('models') or paper.PAIR)
  ratio_name = f'{model_name(models[1])} / {model_name(models[0])}'
  attack = 'pgd' if any(r['attack'] == 'pgd' for r in summary) else summary[0]['attack']
  ref = paper.reference_dataset(res['dataset'])
  out = []

  def log(v):
    return None if v is None or v <= 0 else math.log10(v)

  for task in dict.fromkeys(r['task'] for r in summary):
    rows = [r for r in summary if r['task'] == task and r['attack'] == attack]
    base = next((r for r in rows if r['choice'] == 'baseline'), None)
    if base is None or not base['ratio']:
      continue
    bars = [{'label': f"{r['choice']} = {r['value']}"
                      + (' † undertrained' if r.get('relu_undertrained') or r.get('attn_undertrained')
                         else ''),
             'value': log(r['ratio']),
             'low': log(r['ratio_low']), 'high': log(r['ratio_high'])}
            for r in rows if r['choice'] != 'baseline']
    ratios = ([a / b for b, a in paper.FLIP_RATE.get((ref, task), {}).values() if b > 0]
              if models == paper.PAIR else [])
    band = (math.log10(min(ratios)), math.log10(max(ratios))) if ratios else None
    out.append(figures.plot_tornado(
        os.path.join(out_dir, f'sensitivity_tornado_{task.replace(",", "_")}.png'), log(base['ratio']), bars,
        f'{ratio_name} flip-rate ratio, task {task}, {attack.upper()} (95% bootstrap CI)',
        'log10(ratio)   (0 = equally malleable)', reference=band,
        reference_label=f"study's ratios ({DATASET_NAMES[ref]}, FGSM/PGD/MIM)",
        reference_model=model_name(models[0])))
  return out
