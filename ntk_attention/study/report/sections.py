"""The study report: our results beside the paper's, each table read out in words.

Every function takes results as the scripts write them (the dicts of `spectral.json`,
`ntk_distance.json`, `malleability.json`) and returns Markdown. Every number and every
sentence of a reading is computed from those results; nothing is hard-coded but the paper's
own numbers (`paper.py`), which are labelled as the paper's.
"""
import math
import os
from typing import Optional, Sequence

import numpy as np

from ntk_attention import stats
from ntk_attention.study import layout
from ntk_attention.study import paper
from ntk_attention.study import progress as progress_lib
from ntk_attention.study import scaling as scaling_lib
from ntk_attention.study import scorecard as scorecard_lib
from ntk_attention.study import store as store_lib
from ntk_attention.study.report import figures as report_figures
from ntk_attention.study.report import page
from ntk_attention.study.paper import model_name

NAMES = paper.MODEL_NAMES   # the display names, as `report.NAMES` (one source: paper.py)
_name = model_name


def _fmt(v, fmt='.3g') -> str:
  if v is None:
    return ''
  if isinstance(v, float) and math.isinf(v):
    return '∞'
  return format(v, fmt)


def _ratio_words(a: float, b: float, word: str = 'malleable') -> str:
  """'3.2× more malleable' / '1.5× less malleable' / 'about as malleable' for a against b."""
  if a <= 0 and b <= 0:
    return f'as {word} (neither flipped any)'
  if b <= 0:
    return f'more {word} (the other flipped none)'
  if a <= 0:
    return f'less {word} (it flipped none)'
  r = a / b
  if abs(math.log(r)) < math.log(1.1):
    return f'about as {word}'
  return f'{r:.1f}× more {word}' if r > 1 else f'{1 / r:.1f}× less {word}'


def spectral_section(res: dict, figures: Sequence[str] = ()) -> str:
  """κ, κ_d, κ(G³), width thresholds and the κ(n) curve, with the paper's κ beside."""
  rows = [
      {'quantity': 'n (training points), d (features)', 'ours': f"{res['n']}, {res['d']}",
       'paper': 'not published'},
      {'quantity': 'numerical rank of G (r used for κ_d)', 'ours': f"{res['rank']} ({res['r']})",
       'paper': ''},
      {'quantity': 'κ(G) = λ_max/λ_min', 'ours': _fmt(res['kappa']),
       'paper': f"{paper.KAPPA['mnist']:.2g} (MNIST), {paper.KAPPA['cifar10']:.2g} (CIFAR-10)"},
      {'quantity': 'κ_d(G) = λ₁/λ_r', 'ours': _fmt(res['kappa_eff']), 'paper': ''},
      {'quantity': 'κ(G³) from G’s eigenvalues (log10)',
       'ours': _fmt(res.get('log10_kappa_cubed', 3 * res['log10_kappa'])), 'paper': '3·log10 κ'},
      {'quantity': 'κ measured on the attention features',
       'ours': f"{_fmt(res['kappa_attn_direct'])} "
               f"({'reliable' if res['kappa_attn_direct_reliable'] else 'NOT numerically meaningful'})",
       'paper': ''},
      {'quantity': 'log10 width threshold v1 (κ⁶/ε²)', 'ours': _fmt(res['log10_width_v1']),
       'paper': ''},
      {'quantity': 'log10 width threshold v2 (κ_d⁶ n ln n)', 'ours': _fmt(res['log10_width_v2']),
       'paper': ''},
  ]
  curve = res.get('curve', [])
  curve_rows = [{'n': c['n'], 'rank': c['rank'], 'κ(G)': _fmt(c['kappa']),
                 'κ_d(G)': _fmt(c['kappa_eff'])} for c in curve]
  text = ['## Spectral amplification', '',
          page.markdown_table(rows, ['quantity', 'ours', 'paper']), '',
          page.markdown_table(curve_rows, ['n', 'rank', 'κ(G)', 'κ_d(G)']), '',
          spectral_reading(res), '']
  text += [f'![{f}]({f})' for f in figures]
  return '\n'.join(text) + '\n'


def spectral_reading(res: dict) -> str:
  curve = res.get('curve', [])
  parts = []
  if math.isinf(res['kappa']):
    parts.append(f"G is singular on the {res['n']} training points (numerical rank "
                 f"{res['rank']} < n), so κ(G) is infinite and the effective κ_d = "
                 f"{res['kappa_eff']:.3g} at rank {res['r']} is the meaningful number;")
  else:
    parts.append(f"κ(G) = {res['kappa']:.3g} on the {res['n']} training points;")
  parts.append(f"linearized attention cubes it: log10 κ(G³) = "
               f"{3 * (res['log10_kappa'] if math.isfinite(res['log10_kappa']) else res['log10_kappa_eff']):.1f}"
               f"{'' if math.isfinite(res['log10_kappa']) else ' (effective)'}, and the v2 width "
               f"threshold is 10^{res['log10_width_v2']:.0f}.")
  parts.append('The direct measurement on the attention features '
               + ('agrees within float64 precision.' if res['kappa_attn_direct_reliable'] else
                  'is beyond float64 resolution (κ³ > 10¹²) and is reported only as a flag.'))
  finite = [c for c in curve if math.isfinite(c['kappa'])]
  ref = paper.reference_dataset(res.get('provenance', {}).get('flags', {}).get('dataset', ''))
  near = [c for c in finite if c['kappa'] >= paper.KAPPA[ref]]
  if near:
    parts.append(f"κ grows with n; the paper's κ ≈ {paper.KAPPA[ref]:.2g} "
                 f"({paper.DATASET_NAMES[ref]}) is reached here at n ≈ {near[0]['n']}.")
  return ' '.join(parts)


def ntk_distance_section(res: dict, dataset: str, figures: Sequence[str] = ()) -> str:
  """Table 1 layout: ‖f_m − f∞‖ per width, ours (mean ± std) beside the paper's."""
  summary = res['summary']
  models = list(dict.fromkeys(r['model'] for r in summary))
  widths = sorted({r['width'] for r in summary})
  paper_key = paper.reference_dataset(dataset)
  rows = []
  for m in models:
    row = {'model': _name(m)}
    for w in widths:
      r = next(r for r in summary if r['model'] == m and r['width'] == w)
      row[f'm={w}'] = f"{r['function_distance_mean']:.3g} ± {r['function_distance_std']:.2g}"
      ref = paper.ntk_distance(paper_key, m, w)
      if ref is not None:
        row[f'm={w}'] += f' (paper {ref:g})'
    rows.append(row)
  cols = ['model'] + [f'm={w}' for w in widths]
  metric_rows = []
  for r in summary:
    metric_rows.append({'model': _name(r['model']), 'width': r['width'],
                        'kernel dist. init': r['kernel_distance_init_mean'],
                        'kernel dist. final': r['kernel_distance_final_mean'],
                        'kernel movement': r['kernel_movement_mean'],
                        'rel. function dist.': r['function_distance_rel_mean'],
                        'train acc.': r.get('train_accuracy_mean'),
                        'test acc.': r['test_accuracy_mean'],
                        'KRR acc. (own NTK)': r.get('krr_test_accuracy_mean')})
  text = ['## Distance to the NTK regime', '',
          f"f∞ comparison: **{res.get('comparison')}** (see `sweeps.py`). "
          f"Paper numbers are its {paper_key.upper()} Table 1.", '',
          page.markdown_table(rows, cols), '',
          page.markdown_table(metric_rows, list(metric_rows[0]) if metric_rows else []), '',
          ntk_distance_reading(summary), '']
  text += [f'![{f}]({f})' for f in figures]
  return '\n'.join(text) + '\n'


# The reading's band: under 5 % of change either way (ratio last/first in [0.95, 1.05]) is flat.
READING_BAND = (0.95, 1.05)


def ntk_distance_reading(summary) -> str:
  out = []
  for m in dict.fromkeys(r['model'] for r in summary):
    mine = [r for r in summary if r['model'] == m]
    w0, w1, a, b, word = stats.trend(mine, 'function_distance_mean', *READING_BAND)
    verb = 'stays flat' if word == 'flat' else word
    _, _, k0, k1, _ = stats.trend(mine, 'kernel_distance_final_mean', *READING_BAND)
    out.append(f"{_name(m)}: the function distance {verb} from {a:.3g} (m={w0}) to {b:.3g} "
               f"(m={w1}); the trained kernel's distance to Θ∞ goes from {k0:.3g} to {k1:.3g}.")
  return ' '.join(out)


def malleability_section(res: dict, title: str, dataset: str, task: str,
                         figures: Sequence[str] = (), setting: Optional[str] = None) -> str:
  """Flip rates (%) per attack and model at each ε, ours ± std beside the paper's."""
  summary = [r for r in res['summary'] if setting is None or r['setting'] == setting]
  ref_name = paper.DATASET_NAMES[paper.reference_dataset(dataset)]
  text = [f'## {title}', '']
  for (sett, eps) in sorted({(r['setting'], r['eps']) for r in summary}, key=str):
    rows = [r for r in summary if (r['setting'], r['eps']) == (sett, eps)]
    models = list(dict.fromkeys(r['model'] for r in rows))
    table = []
    for attack in dict.fromkeys(r['attack'] for r in rows):
      line = {'attack': attack.upper()}
      for m in models:
        r = next((r for r in rows if r['model'] == m and r['attack'] == attack), None)
        if r is None:
          continue
        line[f'{_name(m)} flip %'] = rate_text(r)
        ref = r.get('paper_flip_rate_pct')
        line[f'{_name(m)} paper ({ref_name}) %'] = '' if ref is None else f'{ref:.1f}'
        line[f'{_name(m)} Spearman'] = f"{r['spearman_mean']:.2f}"
        line[f'{_name(m)} top-k'] = f"{r['topk_overlap_mean']:.2f}"
      rr = next((x for x in res.get('ratios') or [] if (x['setting'], x['attack']) == (sett, attack)
                 and abs(x['eps'] - eps) < 1e-9), None)
      if rr is not None:
        line[f"ratio {_name(rr['candidate'])} / {_name(rr['reference'])}"] = stats.format_ratio(
            rr['ratio'], rr['ratio_low'], rr['ratio_high'], rr['seeds'])
      table.append(line)
    cols = list(dict.fromkeys(k for line in table for k in line))
    units = rows[0].get('eps_units', 'pixel')
    eps_text = (f'ε = {eps:g}' if units == 'pixel' else
                f"ε = {eps:g} pixel std (= {rows[0].get('eps_pixels_mean', float('nan')):.3g} "
                'on [0, 1] pixels)')
    seeds = sorted({r.get('flip_rate_count') for r in rows} - {None})
    note = (f"Flip % is the mean over {'/'.join(map(str, seeds))} seeds with its 95 % bootstrap "
            'interval (none from fewer than 3 seeds); † marks a model whose mean test accuracy '
            'is below twice chance (undertrained).') if seeds else ''
    text += [f'### {dataset}, task {task}, setting {sett}, {eps_text}', '',
             page.markdown_table(table, cols), '', note, '',
             accuracy_sentence(rows, models) + ' ' + malleability_reading(rows), '']
  text += [f'![{f}]({f})' for f in figures]
  return '\n'.join(text) + '\n'


def rate_text(r: dict, key: str = 'flip_rate') -> str:
  """A summary row's rate in %: 'mean [low, high]' over seeds (its 95 % bootstrap interval),
  'mean ± std (k seeds: no interval)' below 3 seeds, with '†' when the row's model is
  undertrained (below twice chance)."""
  mean, low = 100 * r[f'{key}_mean'], r.get(f'{key}_low')
  if low is not None:
    text = f"{mean:.1f} [{100 * low:.1f}, {100 * r[f'{key}_high']:.1f}]"
  else:
    text = f"{mean:.1f} ± {100 * r[f'{key}_std']:.1f}"
    if r.get(f'{key}_count') is not None and r[f'{key}_count'] < stats.MIN_SEEDS:
      text += f" ({r[f'{key}_count']} seeds: no interval)"
  return text + (' †' if r.get('undertrained') else '')


def accuracy_sentence(rows, models) -> str:
  """'Accuracy (train / test / kernel regression with its own NTK): ...' for each model."""
  parts = []
  for m in models:
    r = next(r for r in rows if r['model'] == m)
    text = f"{_name(m)} {100 * r.get('train_accuracy_mean', float('nan')):.1f} / " \
           f"{100 * r['test_accuracy_mean']:.1f}"
    if 'krr_test_accuracy_mean' in r:
      text += f" / {100 * r['krr_test_accuracy_mean']:.1f}"
    parts.append(text + ' %')
  return ('Accuracy (train / test / kernel regression with the model\'s own analytic NTK): '
          + ', '.join(parts) + '.')


def malleability_reading(rows) -> str:
  """Which model is more malleable, by what factor, per attack (and the paper's factor):
  MLP-Attn against 2L-ReLU when both ran, else the second model against the first when
  exactly two ran."""
  models = list(dict.fromkeys(r['model'] for r in rows))
  if 'relu_mlp' in models and 'mlp_attn' in models:
    reference, candidate = paper.PAIR
  elif len(models) == 2:
    reference, candidate = models
  else:
    return ''
  out = []
  for attack in dict.fromkeys(r['attack'] for r in rows):
    relu = next((r for r in rows if r['model'] == reference and r['attack'] == attack), None)
    attn = next((r for r in rows if r['model'] == candidate and r['attack'] == attack), None)
    if relu is None or attn is None:
      continue
    a, b = 100 * attn['flip_rate_mean'], 100 * relu['flip_rate_mean']
    s = (f"{attack.upper()}: {_name(candidate)} flips {a:.1f}% vs {_name(reference)} {b:.1f}% "
         f"({_ratio_words(a, b)}")
    pa, pb = attn.get('paper_flip_rate_pct'), relu.get('paper_flip_rate_pct')
    if pa is not None and pb:
      s += f'; paper: {pa / pb:.1f}×'
    out.append(s + ').')
  return ' '.join(out)


def _summary_row(summary, **match):
  rows = [r for r in summary if all(r.get(k) == v for k, v in match.items())]
  return rows[0] if rows else None


def variants_table(variants: dict) -> list:
  """One row per variant × model: NTK distance at the smallest and largest width, test
  accuracy, PGD flip rate. `variants`: name -> (ntk_distance.json, malleability.json)."""
  rows = []
  for name, (nd, mall) in variants.items():
    models = list(dict.fromkeys(r['model'] for r in (nd or {}).get('summary', [])))
    for m in models:
      s = sorted((r for r in nd['summary'] if r['model'] == m), key=lambda r: r['width'])
      row = {'variant': name, 'model': _name(m),
             'widths': f"{s[0]['width']}→{s[-1]['width']}",
             'kernel dist. (trained)': f"{s[0]['kernel_distance_final_mean']:.3g}→"
                                       f"{s[-1]['kernel_distance_final_mean']:.3g}",
             'kernel movement': f"{s[0]['kernel_movement_mean']:.3g}→{s[-1]['kernel_movement_mean']:.3g}",
             'rel. function dist.': f"{s[0]['function_distance_rel_mean']:.3g}→"
                                    f"{s[-1]['function_distance_rel_mean']:.3g}",
             'test acc.': f"{100 * s[-1]['test_accuracy_mean']:.1f}%"}
      r = _summary_row((mall or {}).get('summary', []), model=m, attack='pgd')
      if r:
        row['PGD flip % (ε=0.3)'] = rate_text(r)
        row['Spearman'] = f"{r['spearman_mean']:.2f}"
      rows.append(row)
  return rows


def variants_reading(variants: dict) -> str:
  """Per variant of MLP-Attn: does training leave its kernel closer to Θ∞ as width grows,
  and how does its PGD flip rate compare with the baseline MLP-Attn and 2L-ReLU."""
  base = variants.get('baseline', (None, None))[1]
  ref = {m: _summary_row(base['summary'], model=m, attack='pgd') for m in ('relu_mlp', 'mlp_attn')} \
      if base else {}
  out = []
  for name, (nd, mall) in variants.items():
    if name == 'baseline' or not nd:
      continue
    model = nd['summary'][0]['model']
    s = sorted((r for r in nd['summary'] if r['model'] == model), key=lambda r: r['width'])
    a, b = s[0]['kernel_distance_final_mean'], s[-1]['kernel_distance_final_mean']
    trend = 'approaches' if b < 0.8 * a else ('moves away from' if b > 1.25 * a else 'stays as far from')
    text = (f"{name}: with width {s[0]['width']}→{s[-1]['width']} the trained kernel {trend} "
            f"Θ∞ ({a:.3g}→{b:.3g}), test accuracy {100 * s[-1]['test_accuracy_mean']:.1f}%")
    r = _summary_row((mall or {}).get('summary', []), model=model, attack='pgd')
    if r:
      text += f"; PGD flips {100 * r['flip_rate_mean']:.1f}%"
      if ref.get('mlp_attn') and ref.get('relu_mlp'):
        text += (f" ({_name('mlp_attn')} {100 * ref['mlp_attn']['flip_rate_mean']:.1f}%, "
                 f"{_name('relu_mlp')} {100 * ref['relu_mlp']['flip_rate_mean']:.1f}%)")
    out.append(text + '.')
  return ' '.join(out)


def variant_checks_table(spectral_res: dict) -> list:
  """Depth-k and rank-r kernels: measured against predicted log10 κ (spectral.json)."""
  rows = []
  for c in spectral_res.get('variant_checks', []):
    what = (f"depth {c['depth']}, {c['pattern']} pattern (G^{c['power']})" if 'depth' in c
            else f"rank {c['rank']} truncation ((λ₁/λ_r)³)")
    rows.append({'kernel': what, 'predicted log10 κ': _fmt(c['log10_kappa_predicted'], '.2f'),
                 'measured log10 κ': _fmt(c['log10_kappa_measured'], '.2f'),
                 'numerically meaningful': 'yes' if c['reliable'] else 'no (beyond float64)'})
  return rows


def influence_attack_reading(res: dict) -> str:
  out = []
  for eps in sorted({r['eps'] for r in res['summary']}):
    for m in dict.fromkeys(r['model'] for r in res['summary']):
      pgd = _summary_row(res['summary'], model=m, attack='pgd', eps=eps)
      inf = _summary_row(res['summary'], model=m, attack='influence', eps=eps)
      if pgd and inf:
        out.append(f"{_name(m)}, ε={eps:g}: the influence-targeted attack flips "
                   f"{100 * inf['flip_rate_mean']:.1f}% of the top-τ signs, PGD on the loss "
                   f"{100 * pgd['flip_rate_mean']:.1f}%.")
  return ' '.join(out)


KERNEL_NAMES = paper.KERNEL_NAMES


def approximation_section(res: dict) -> str:
  """Kernel-regression error and centred alignment per kernel on the real and synthetic
  tasks (approximation.json), with a reading of which kernel wins where."""
  summary = res['summary']
  rows = []
  for k in res['kernels']:
    row = {'kernel': KERNEL_NAMES.get(k, k)}
    for task in res['tasks']:
      r = _summary_row(summary, task=task, kernel=k)
      if r is None:
        continue
      row[f'{task}: rel. test MSE'] = (f"{r['relative_mse_mean']:.3f}" if r['relative_mse_count'] == 1
                                       else f"{r['relative_mse_mean']:.3f} ± {r['relative_mse_std']:.3f}")
      row[f'{task}: alignment'] = f"{r['alignment_mean']:.3f}"
      if 'accuracy' in r:
        row[f'{task}: accuracy'] = f"{100 * r['accuracy']:.1f}%"
    rows.append(row)
  cols = list(dict.fromkeys(c for r in rows for c in r))
  reading = []
  for task in res['tasks']:
    task_rows = [r for r in summary if r['task'] == task]
    best = min(task_rows, key=lambda r: r['relative_mse_mean'])
    reading.append(f"{task} targets: lowest test error with {KERNEL_NAMES.get(best['kernel'], best['kernel'])} "
                   f"({best['relative_mse_mean']:.3f})")
  g_al = _summary_row(summary, task='aligned', kernel='gram_cubed')
  g_rd = _summary_row(summary, task='random', kernel='gram_cubed')
  r_al = _summary_row(summary, task='aligned', kernel='relu_ntk')
  r_rd = _summary_row(summary, task='random', kernel='relu_ntk')
  text = '; '.join(reading) + '.'
  if g_al and g_rd and r_al and r_rd:
    text += (f" G³ reaches relative error {g_al['relative_mse_mean']:.3f} when the targets lie in "
             f"G's top-{res['settings'].get('k_top', '')} eigenvectors and {g_rd['relative_mse_mean']:.3f} "
             f"on random targets ({KERNEL_NAMES['relu_ntk']}: {r_al['relative_mse_mean']:.3f} and "
             f"{r_rd['relative_mse_mean']:.3f}).")
  return (f"{res['n_train']} training / {res['n_test']} test points; relative MSE = Σ(f − y)²/Σy² "
          f"on the test set (1 = predicting zero), centred kernel–target alignment on the "
          f"training block.\n\n" + page.markdown_table(rows, cols) + '\n\n' + text + '\n')


COMPILE_COLUMNS = ['programs', 'compiling']
COMPILE_NOTE = ("Programs: those a part needed that were not in memory, compiled by XLA or "
                "loaded from JAX's persistent compilation cache (how many loaded, in brackets); "
                "compiling: the seconds XLA took to compile or load them (JAX's tracing and "
                'lowering before it not counted; a part run with --isolate_parts: blank).')


def _compilations(info: dict) -> dict:
  """The provenance table's program columns of one part's marker ('' when not counted)."""
  c = info.get('compilations')
  if not c:
    return dict.fromkeys(COMPILE_COLUMNS, '')
  loaded = f" ({c['cached']:,} loaded)" if c['cached'] else ''
  return {'programs': f"{c['programs']:,}{loaded}",
          'compiling': progress_lib.format_duration(c['compile_seconds'])}


def provenance_section(parts: dict, flags: dict, provenance: dict) -> str:
  """Versions, device, flags, wall time per part, and each part's config folded away (as
  the call that makes it, its `call`: only the fields that differ from the defaults)."""
  rows = [dict({'part': name, 'status': info.get('status', ''),
                'wall time': (progress_lib.format_duration(info['seconds'])
                              if 'seconds' in info else '')}, **_compilations(info))
          for name, info in parts.items()]
  prov = [f"- {k}: {v}" for k, v in provenance.items() if k not in ('argv', 'flags')]
  flag_lines = [f'`--{k}={x}`' for k, v in sorted(flags.items())
                for x in (v if isinstance(v, (list, tuple)) else [v])]
  calls = [f"{name}: {info.get('call', '')}" for name, info in parts.items()]
  return '\n'.join(['## Setup and provenance', '', *prov, '',
                    'Flags: ' + ' '.join(flag_lines), '',
                    page.markdown_table(rows, ['part', 'status', 'wall time'] + COMPILE_COLUMNS),
                    '', COMPILE_NOTE, '',
                    f'```details The configuration of each part ({len(calls)})', *calls, '```',
                    '']) + '\n'


def _link(heading: str, text: str) -> str:
  return f'[{text}](#{page.anchor(heading)})'


def scorecard_section(rows: Sequence[dict], headings: Optional[Sequence[str]] = None) -> str:
  """The scorecard rows (`scorecard.scorecard`) as a table, each claim linked to its section
  when that section is among `headings` (default: always)."""
  table = [{'claim': _link(r['section'], r['claim'])
            if headings is None or r['section'] in headings else r['claim'], 'verdict': f"**{r['verdict']}**",
            'ours': r['ours'], 'study': r['study'], 'conditions': r['conditions']} for r in rows]
  return '\n'.join(['## Scorecard', '',
                    'One row per claim of the study; the verdict is computed from this run\'s '
                    'numbers by the rules in `ntk_attention/study/scorecard.py`.', '',
                    page.markdown_table(table, ['claim', 'verdict', 'ours', 'study', 'conditions']),
                    '']) + '\n'


__all__ = ['NAMES', 'model_name', 'build', 'scorecard_section', 'accuracy_sentence', 'trainability_section', 'sensitivity_rows', 'sensitivity_section',
           'sensitivity_reading', 'approximation_section', 'variants_table', 'variants_reading', 'variant_checks_table',
           'influence_attack_reading', 'spectral_section', 'ntk_distance_section', 'malleability_section',
           'provenance_section', 'spectral_reading', 'ntk_distance_reading',
           'malleability_reading']


def _variation(row) -> str:
  return 'baseline' if row['choice'] == 'baseline' else f"{row['choice']} = {row['value']}"


def _pair(res: dict):
  """The (reference, candidate) names of a sensitivity result (the study's pair when the
  result predates --models)."""
  return tuple(res.get('models') or paper.PAIR)


def _ratio_text(row, reference: str = 'relu_mlp') -> str:
  if row['ratio'] is None:
    return f'undefined ({_name(reference)} flips none)'
  return stats.format_ratio(row['ratio'], row['ratio_low'], row['ratio_high'], row.get('seeds'))


def _rate(row, key: str) -> dict:
  """A sensitivity row's `relu_*` / `attn_*` flip-rate fields as a summary row's
  (`flip_rate_mean`, `_std`, `_low`, `_high`), for `rate_text`."""
  return {f'flip_rate_{s}': row.get(f'{key}_flip_rate_{s}') for s in ('mean', 'std', 'low', 'high')}


def _weak(row, key: str) -> str:
  return ' †' if row.get(f'{key}_undertrained') else ''


def sensitivity_rows(summary, task: str, attack: str, models=paper.PAIR) -> list:
  """Table rows of one task and attack: both flip rates, the ratio [95% CI], accuracies.
  `models`: the (reference, candidate) names of the summary's `relu_*` / `attn_*` fields."""
  ref, cand = (_name(m) for m in models)
  out = []
  for r in summary:
    if r['task'] != task or r['attack'] != attack:
      continue
    out.append({'variation': _variation(r), 'ε (pixels)': f"{r['eps_pixels']:.3g}",
                f'{ref} flip %': rate_text({**_rate(r, 'relu'), 'flip_rate_count': r.get('seeds')}),
                f'{cand} flip %': rate_text({**_rate(r, 'attn'), 'flip_rate_count': r.get('seeds')}),
                'ratio [95% CI]': _ratio_text(r, models[0]),
                f'test acc. {ref} / {cand}': f"{100 * r['relu_test_accuracy']:.0f}{_weak(r, 'relu')} / "
                                              f"{100 * r['attn_test_accuracy']:.0f}{_weak(r, 'attn')} %"})
  return out


def sensitivity_section(res: dict, figures: Sequence[str] = ()) -> str:
  """The sensitivity study (sensitivity.json): ratio per variation, calibration, reading."""
  summary, calib = res['summary'], res['calibration']
  models = _pair(res)
  ref, cand = (_name(m) for m in models)
  attack = 'pgd' if any(r['attack'] == 'pgd' for r in summary) else summary[0]['attack']
  text = ['## How robust is the verdict? One choice at a time', '',
          f"{res['dataset']}, {res['n_train']} training / {res['n_test']} test points, width "
          f"{res['baseline']['width']}, {res['baseline']['epochs']} epochs, "
          f"{res['seeds']} seeds; the baseline is the study's convention where it published one "
          f"(init_std {res['baseline']['init_std']}, ε = {res['baseline']['eps']} in "
          f"{res['baseline']['eps_units']} units, τ = {res['baseline']['tau']}). Ratio = mean "
          f'{cand} flip rate / mean {ref} flip rate, with a 95% bootstrap interval over '
          'seeds (none from fewer than 3 seeds). † marks a model whose mean test accuracy is '
          'below twice chance: its flip rates are those of an undertrained network.', '']
  for task in dict.fromkeys(r['task'] for r in summary):
    rows = sensitivity_rows(summary, task, attack, models)
    text += [f'### Task {task}, {attack.upper()}', '',
             page.markdown_table(rows, list(rows[0]) if rows else []), '']
  text += [f'![{f}]({f})' for f in figures] + ['']
  best = calib[:5] + [r for r in calib[5:] if r['choice'] == 'baseline']
  crow = [{'variation': _variation(r) + (' (undertrained †)' if r.get('undertrained') else ''),
           'cells': r['cells'],
           'mean |ln(ours/study)|': f"{r['distance']:.2f}",
           f'{ref} only': _fmt(r['distance_relu'], '.2f'),
           f'{cand} only': _fmt(r['distance_attn'], '.2f')} for r in best]
  text += ['### Calibration against the study\'s flip rates', '',
           'Mean over the study\'s Table 2 cells (task × attack × model) of |ln(ours/study)|: '
           '0 is a perfect match, ln 2 ≈ 0.69 is "a factor of 2 off". The five closest '
           'settings and the baseline; undertrained settings rank after every trained one:',
           '',
           page.markdown_table(crow, list(crow[0])) if crow else
           'The study published no flip rates for these models.', '',
           sensitivity_reading(res, attack), '']
  return '\n'.join(text) + '\n'


def _study_relu_rates(ref: str) -> str:
  """The study's 2L-ReLU flip rates per task, min–max over FGSM, PGD, MIM, rounded:
  e.g. '3–4 % on 10 classes, 8–9 % on 3,8'."""
  out = []
  for (dataset, task), table in paper.FLIP_RATE.items():
    if dataset == ref:
      lo, hi = (round(f(r[0] for r in table.values())) for f in (min, max))
      out.append(f"{lo}{'' if lo == hi else f'–{hi}'} % on "
                 f"{'10 classes' if task == 'all' else task}")
  return ', '.join(out)


def sensitivity_reading(res: dict, attack: str = 'pgd') -> str:
  """Numbers that answer 'how robust is 6–9×?' and 'which choice gives 2L-ReLU's 3–4 %?'."""
  summary, calib = res['summary'], res['calibration']
  ref = paper.reference_dataset(res['dataset'])
  models = _pair(res)
  out = []
  for task in dict.fromkeys(r['task'] for r in summary):
    rows = [r for r in summary if r['task'] == task and r['attack'] == attack]
    # The study's ratio is MLP-Attn / 2L-ReLU: a comparison for that pair only.
    study = paper.FLIP_RATE.get((ref, task), {}).get(attack) if models == paper.PAIR else None
    finite = [r for r in rows if r['ratio'] is not None]
    if not finite:
      continue
    lo = min(finite, key=lambda r: r['ratio'])
    hi = max(finite, key=lambda r: r['ratio'])
    base = next((r for r in rows if r['choice'] == 'baseline'), None)
    s = (f"Task {task}, {attack.upper()}: across {len(rows)} settings the ratio ranges from "
         f"{lo['ratio']:.2g} ({_variation(lo)}) to {hi['ratio']:.2g} ({_variation(hi)})")
    if base is not None:
      s += f"; baseline {_ratio_text(base, models[0])}"
    if study and study[0] > 0:
      target = study[1] / study[0]
      inside = [r for r in rows if r['ratio_low'] is not None and r['ratio_low'] <= target
                and (r['ratio_high'] is None or target <= r['ratio_high'])]
      s += (f". The study's {target:.1f}× lies inside the 95% interval of {len(inside)} of "
            f"{len(rows)} settings" + (f" ({', '.join(_variation(r) + _weak(r, 'attn') + _weak(r, 'relu') for r in inside)})"
                                        if inside else ''))
    out.append(s + '.')
  if calib:
    top = calib[0]
    base = next((r for r in calib if r['choice'] == 'baseline'), None)
    s = (f"Closest to the study overall: {_variation(top)} (mean |ln| {top['distance']:.2f}, "
         f"typically a factor {math.exp(top['distance']):.1f} off"
         + ('; but every setting is undertrained †' if top.get('undertrained') else '') + ')')
    if base is not None:
      s += f"; the baseline is {base['distance']:.2f} (factor {math.exp(base['distance']):.1f})"
    out.append(s + '.')
    relu = [r for r in calib if r['distance_relu'] is not None]
    if relu and models[0] == 'relu_mlp':
      best = min(relu, key=lambda r: (bool(r.get('undertrained')), r['distance_relu']))
      rows = [r for r in summary if (r['choice'], r['value']) == (best['choice'], best['value'])
              and r['attack'] == attack]
      rates = ', '.join(f"{100 * r['relu_flip_rate_mean']:.1f}% ({r['task']})" for r in rows)
      out.append(f"2L-ReLU's low flip rates (study: {_study_relu_rates(ref)}) are "
                 f"matched best by {_variation(best)}: 2L-ReLU flips {rates} with "
                 f"{attack.upper()} there (mean |ln| over its 2L-ReLU cells "
                 f"{best['distance_relu']:.2f}).")
  return ' '.join(out)


def trainability_section(res: dict, figures: Sequence[str] = ()) -> str:
  """Why a model does or does not train (malleability.json of the main part): accuracies
  beside kernel regression with the model's own NTK, final loss, and how concentrated the
  features entering the ReLU head are."""
  summary = res['summary']
  rows, by_model = [], {}
  for r in summary:
    if r['setting'] not in ('standard', 'retrain') or r['model'] in by_model:
      continue
    if 'feature_top_share_mean' not in r:
      return ''
    by_model[r['model']] = r
    rows.append({'model': _name(r['model']),
                 'train acc. %': f"{100 * r['train_accuracy_mean']:.1f}",
                 'test acc. %': f"{100 * r['test_accuracy_mean']:.1f}",
                 'KRR with own NTK, test acc. %': f"{100 * r['krr_test_accuracy_mean']:.1f}",
                 'final training loss': f"{r['final_loss_mean']:.3g}",
                 'λ₁/Σλ of head-input Gram': f"{r['feature_top_share_mean']:.3f}",
                 'effective rank': f"{r['feature_effective_rank_mean']:.3g}"})
  if not rows:
    return ''
  text = ['## Why MLP-Attn barely trains', '',
          'Per trained model (mean over seeds): accuracy of the network, of kernel ridge '
          'regression with its own analytic NTK on the same data, the final training loss, and '
          'the spectrum of the Gram matrix of the features that enter the ReLU head (after '
          'attention and normalisation for MLP-Attn; the unit-norm pixels for 2L-ReLU). '
          'λ₁/Σλ = 1 and effective rank 1 mean every training point is the same vector.', '',
          page.markdown_table(rows, list(rows[0])), '']
  relu, attn = by_model.get('relu_mlp'), by_model.get('mlp_attn')
  if relu and attn:
    gap = attn['krr_test_accuracy_mean'] - attn['test_accuracy_mean']
    text.append(
        f"MLP-Attn's head sees features with λ₁/Σλ = {attn['feature_top_share_mean']:.3f} "
        f"(effective rank {attn['feature_effective_rank_mean']:.3g}) against "
        f"{relu['feature_top_share_mean']:.3f} ({relu['feature_effective_rank_mean']:.3g}) for "
        f"2L-ReLU. The class information is still in them — kernel regression with the same "
        f"model's NTK reaches {100 * attn['krr_test_accuracy_mean']:.1f}% — but it lives in "
        f"directions whose eigenvalues are tiny next to the first one, which an exact solve "
        f"uses and a finite run of Adam does not: the trained network reaches "
        f"{100 * attn['test_accuracy_mean']:.1f}% ({100 * gap:+.1f} points behind its kernel; "
        f"2L-ReLU: {100 * relu['test_accuracy_mean']:.1f}% vs "
        f"{100 * relu['krr_test_accuracy_mean']:.1f}%), with a final training loss of "
        f"{attn['final_loss_mean']:.3g} against {relu['final_loss_mean']:.3g}.")
    text.append('')
  text += [f'![{f}]({f})' for f in figures]
  return '\n'.join(text) + '\n'


def _load(d, sub, kind, suffix='.json'):
  """The part `sub`'s results file (`layout.results`), or None when it is not there."""
  path = layout.results(d, sub, kind, suffix)
  return store_lib.read_json(path) if os.path.exists(path) else None


def _with_settings(d, sub, kind, res):
  """`res` with the part's <kind>_settings.json (the sizes as used) under 'settings'."""
  settings = _load(d, sub, kind, '_settings.json')
  return dict(res, settings=settings) if res and settings else res


def _beyond_section(d, dataset, task, variants_names, sizes, spectral_res) -> str:
  """'Beyond the study': attention variants, depth / truncation checks, the influence-targeted
  attack, from whatever of the 'beyond' part is on disk."""
  out, variants = [], {}
  for name in variants_names:
    nd = _load(d, layout.variant(name, 'ntk_distance'), 'ntk_distance')
    mall = _load(d, layout.variant(name, 'malleability'), 'malleability')
    if nd or mall:
      variants[name] = (nd, mall)
  if variants:
    rows = variants_table(variants)
    out += ['### Attention variants: distance to the NTK and malleability', '',
            f"{sizes.get('n_train')} training / {sizes.get('n_test')} test points; trained "
            f'kernel distance and function distance at the smallest → largest width; flip rate '
            f"at width {sizes.get('width')}.", '',
            page.markdown_table(rows, list(dict.fromkeys(k for r in rows for k in r))), '',
            variants_reading(variants), '']
  if spectral_res and spectral_res.get('variant_checks'):
    rows = variant_checks_table(spectral_res)
    out += ['### Depth and truncation: measured against predicted condition numbers', '',
            f"On the first {spectral_res.get('variant_checks_n')} training points (float64).", '',
            page.markdown_table(rows, list(rows[0])), '']
  res = _load(d, layout.INFLUENCE_ATTACK, 'malleability')
  if res:
    out += ['### Influence-targeted attack', '',
            malleability_section(res, 'Influence-targeted attack vs PGD', dataset, task).split('\n', 2)[2],
            influence_attack_reading(res), '']
  return '## Beyond the study\n\n' + '\n'.join(out) + '\n' if out else ''


def build(d, *, dataset: str, task: str = 'all', binary_tasks=(), beyond_variants=(),
          beyond_sizes: Optional[dict] = None, scaling: bool = True, width_threshold: bool = True,
          parts_info: Optional[dict] = None, flags: Optional[dict] = None,
          provenance: Optional[dict] = None, wall: float = 0.0) -> str:
  """Writes d/report.md, d/report.html and the report's figures (d/figures/) from the parts'
  results on disk (d/<part>/*.json, laid out as `study.layout` says); returns the Markdown.

  Order: the scorecard, then one section per claim (spectral, distance to the NTK, malleability
  with its binary tasks, interventions, adversarial training, sensitivity and trainability,
  approximation), what goes beyond the study, and provenance last. `binary_tasks`: [(dataset,
  classes)] of the binary part; `beyond_variants`: names of the 'beyond' variants;
  `beyond_sizes`: their n_train, n_test, width (for the text); `scaling`: include the
  malleability-against-n section when d/scaling/scaling.json exists; `width_threshold`: the
  width-threshold section (and the scorecard's claim-2 row from it) when
  d/width_threshold/width_threshold.json exists."""
  parts_info, flags, provenance = parts_info or {}, flags or {}, provenance or {}
  fig_dir = layout.figures(d)

  def rel(paths):
    return [os.path.relpath(p, d) for p in paths if p]

  def part_figs(sub, names):
    return [f'{sub}/{n}' for n in names if os.path.exists(layout.path(d, sub, n))]

  spectral_res = _load(d, layout.CONDITIONING, 'spectral')
  nd = _load(d, layout.NTK_DISTANCE, 'ntk_distance')
  mall = _load(d, layout.MALLEABILITY, 'malleability')
  binaries = {}      # (dataset, classes) -> (folder, results)
  for ds, cls in binary_tasks:
    res = _load(d, layout.binary(ds, cls), 'malleability')
    if res:
      binaries[ds, cls] = (layout.binary(ds, cls), res)
  approx = _load(d, layout.APPROXIMATION, 'approximation')
  card = {'spectral': spectral_res, 'ntk_distance': _with_settings(d, layout.NTK_DISTANCE, 'ntk_distance', nd),
          'malleability': _with_settings(d, layout.MALLEABILITY, 'malleability', mall),
          'binary': {task: _with_settings(d, sub, 'malleability', res)
                     for task, (sub, res) in binaries.items()}}
  wt_res = _load(d, layout.WIDTH_THRESHOLD, 'width_threshold') if width_threshold else None
  rows = scorecard_lib.scorecard({**card, 'approximation': approx, 'task': task,
                                  'width_threshold': wt_res}, dataset,
                                 {f'binary:{ds}:{cls}': f'Binary task {ds} {cls}' for ds, cls in binaries})
  sections = [f'# ntk_attention: reproduction of arXiv 2603.13085 on `{dataset}`\n\n'
              f'Paper: {paper.CITATION}. Numbers labelled *paper* or *study* are the study\'s; every '
              f'other number is computed by this run (total wall time {progress_lib.format_duration(wall)}).\n']
  if spectral_res:
    npz = layout.results(d, layout.CONDITIONING, 'spectral', '_spectra.npz')
    spectra = dict(np.load(npz)) if os.path.exists(npz) else {}
    sections.append(spectral_section(spectral_res, rel(report_figures.spectral_figures(spectral_res, spectra, dataset, fig_dir))))
  if nd:
    sections.append(ntk_distance_section(nd, dataset, rel(report_figures.ntk_distance_figures(nd, dataset, fig_dir))))
  if mall:
    label = 'all classes' if task == 'all' else f'classes {task}'
    sections.append(malleability_section(
        mall, 'Influence malleability', dataset, task,
        rel(report_figures.malleability_figures(mall, fig_dir, f'{dataset}, {label}'))
        + part_figs(layout.MALLEABILITY, [
            f'malleability_influence_{report_figures.file_label(m)}.png'
            for m in dict.fromkeys(r['model'] for r in mall['summary'])])))
  for (ds, cls), (sub, res) in binaries.items():
    sections.append(malleability_section(
        res, f'Binary task {ds} {cls}', ds, cls,
        rel(report_figures.malleability_figures(res, fig_dir, f'{ds}, classes {cls}', sub))))
  res = _load(d, layout.INTERVENTIONS, 'malleability')
  if res:
    sections.append(malleability_section(res, 'Interventions (each retrained)', dataset, task))
  res = _load(d, layout.ADVERSARIAL_TRAINING, 'malleability')
  if res:
    sections.append(malleability_section(res, 'PGD adversarial training', dataset, task))
  res = _load(d, layout.SENSITIVITY, 'sensitivity')
  if res:
    sections.append(sensitivity_section(res, rel(report_figures.sensitivity_figures(res, fig_dir))))
  if mall:
    sections.append(trainability_section(mall, part_figs(layout.MALLEABILITY, ['malleability_loss.png'])))
  if approx:
    sections.append('\n'.join(['## Approximation error', '', approximation_section(approx),
                               *[f'![{f}]({f})' for f in rel(report_figures.approximation_figure(approx, fig_dir))],
                               '']) + '\n')
  sections.append(_beyond_section(d, dataset, task, beyond_variants, beyond_sizes or {}, spectral_res))
  res = _load(d, layout.SCALING, 'scaling') if scaling else None
  if res:
    sections.append('\n'.join([scaling_lib.scaling_section(
        res['rows'], models=res.get('models') or scaling_lib.MODELS), '',
                               *[f'![{f}]({f})' for f in part_figs(layout.SCALING, ['scaling.png'])],
                               '']))
  if wt_res:
    from ntk_attention.study.parts import width_threshold as wt_part
    sections.append('\n'.join([wt_part.section(wt_res['models'], wt_res['eps']), *[
        f'![{f}]({f})' for f in part_figs(layout.WIDTH_THRESHOLD, ['width_threshold.png'])], '']))
  res = _load(d, layout.JOINT_SEARCH, 'joint_search')
  if res:
    from ntk_attention.study.parts import joint_search
    sections.append(joint_search.section(res, part_figs(layout.JOINT_SEARCH, ['joint_search.png'])))
  sections.append(provenance_section(parts_info, flags, provenance))
  headings = [line[3:].strip() for s in sections for line in s.splitlines() if line.startswith('## ')]
  sections.insert(1, scorecard_section(rows, headings))
  text = '\n'.join(s for s in sections if s)
  store_lib.write_text(layout.report_md(d), text)
  store_lib.write_text(layout.report_html(d), page.html_report(text, d))
  return text
