"""The scorecard: one row per claim of the study, with our verdict, computed from the results (floor 4).

`scorecard(results, dataset)` is a pure function from the parts' results (the dicts the scripts
write) to rows; `markdown(rows)` renders them. Each row is a dict:

  key         stable id of the claim ('kernel', 'kappa', 'ntk_distance', 'malleability:<task>',
              'approximation'), to join rows of runs on different datasets;
  claim       the study's claim in a few words;
  verdict     'reproduced' | 'partly' | 'not reproduced' | 'inconclusive' (a ratio's interval over
              seeds straddles a threshold, or there is none: fewer than 3 seeds) | 'not run' (the
              part's results are missing) | 'no study value' (nothing of the study's to compare with);
  ours        the deciding numbers of this run;
  study       the study's numbers (`paper.py`), or 'no study value';
  conditions  dataset, sizes, seeds, ε and its units;
  section     the report heading that holds the details (`page.anchor` of it links there).

The rules, with their thresholds, are the docstrings of the `_row_*` functions.
"""
import math
from typing import Optional

from ntk_attention import stats
from ntk_attention.study import paper

REPRODUCED, PARTLY, NOT, NOT_RUN, NO_STUDY = ('reproduced', 'partly', 'not reproduced', 'not run',
                                              'no study value')
INCONCLUSIVE = 'inconclusive'   # an interval straddles a threshold, or there is none
TOL_LOG10 = 0.05          # measured vs predicted log10 κ
FLAT = 1.05               # a distance "changes with width" when last/first leaves [1/FLAT, FLAT]
FACTOR = 2.0              # a ratio "agrees" with the study's within this factor


def _num(v) -> float:
  """JSON number -> float; None (a non-finite value written as null) -> inf."""
  return math.inf if v is None else float(v)


def _g(v, fmt='.3g') -> str:
  v = _num(v)
  return '∞' if math.isinf(v) else format(v, fmt)


def _flags(res) -> dict:
  """The run's settings: its `settings` (sizes as used, e.g. shrunk to a small pool) over the
  flags recorded in its provenance."""
  res = res or {}
  return {**res.get('provenance', {}).get('flags', {}), **(res.get('settings') or {})}


def _sizes(res, seeds_key='seeds') -> str:
  f = _flags(res)
  parts = [f'n_train {f["n_train"]}' if f.get('n_train') else 'default n_train']
  if f.get('epochs'):
    parts.append(f'{f["epochs"]} epochs')
  if f.get(seeds_key):
    parts.append(f'{f[seeds_key]} seeds')
  return ', '.join(parts)


def _row(key, claim, section, verdict, ours, study, conditions) -> dict:
  return dict(key=key, claim=claim, verdict=verdict, ours=ours, study=study, conditions=conditions,
              section=section)


def _row_kernel(spec, dataset, section) -> dict:
  """Claim 1, attention's kernel is G³ (G^{2k+1} for a depth-k shared pattern, G^{3^k} recomputed).
  Measured against predicted log10 κ of the attention features, where float64 can resolve it
  (`reliable`): reproduced when every resolvable check agrees within TOL_LOG10, not reproduced
  when one does not, 'not run' when none was resolvable."""
  claim = 'attention X ↦ X Xᵀ X induces the kernel G³'
  if spec is None:
    return _row('kernel', claim, section, NOT_RUN, '', 'K = G³ (exact)', '')
  checks = [dict(c, what=f"depth {c['depth']} {c['pattern']} (G^{c['power']})" if 'depth' in c
                 else f"rank {c['rank']}") for c in spec.get('variant_checks', [])]
  direct = spec.get('attn_direct')
  if direct:
    checks.insert(0, dict(what=f"G³ on all {spec['n']} points", reliable=direct['reliable'],
                          log10_kappa_measured=direct['log10_kappa'],
                          log10_kappa_predicted=direct['predicted_log10_kappa']))
  ok = [c for c in checks if c['reliable']]
  worst = max((abs(_num(c['log10_kappa_measured']) - _num(c['log10_kappa_predicted'])) for c in ok),
              default=None)
  verdict = NOT_RUN if worst is None else (REPRODUCED if worst <= TOL_LOG10 else NOT)
  ours = (f'{len(ok)} of {len(checks)} checks resolvable in float64; largest |Δ log10 κ| '
          f'{worst:.1g}' if ok else 'no check resolvable in float64')
  return _row('kernel', claim, section, verdict, ours, 'K = G³ (exact identity)',
              f"{dataset}, first {spec.get('variant_checks_n', spec['n'])} training points "
              f"(depth/rank checks), float64, tolerance {TOL_LOG10} in log10 κ")


def _exponent_text(m: dict) -> str:
  lo, hi = m.get('exponent_low'), m.get('exponent_high')
  return (f"{_g(m['exponent'], '.2f')}" + (f' [{lo:.2f}, {hi:.2f}]' if lo is not None and hi is not None
                                           else ' (no interval)'))


def _row_width_threshold(wt, section) -> dict:
  """Claim 2 measured (the optional width_threshold part): the exponent p of m*(ε) ∝ κ^p, with
  its 95 % bootstrap interval over seeds, per model, on the first data family measured.
  Reproduced when MLP-Attn's interval holds the theorem's 6 and 2L-ReLU's holds 0; partly when
  MLP-Attn's interval lies entirely above 2L-ReLU's (its width grows faster with κ) or one of
  the two theorem values is inside its interval; not reproduced otherwise (also when a model's
  exponent or interval is missing)."""
  claim = 'κ(G³) = κ(G)³, so the NTK regime needs width Ω(κ⁶)'
  models = wt['models']
  attn, relu = models.get('mlp_attn'), models.get('relu_mlp')
  study = 'm = Ω(κ⁶/ε²) for MLP-Attn (exponent 6), Ω(1/ε²) for 2L-ReLU (exponent 0)'
  ours = '; '.join(f"{paper.model_name(k)}: measured exponent {_exponent_text(m)} "
                   f"(theorem {m['theorem_exponent'] if m['theorem_exponent'] is not None else '–'})"
                   for k, m in models.items() if m.get('exponent') is not None)

  def has_interval(m):
    return m is not None and m.get('exponent_low') is not None and m.get('exponent_high') is not None

  def inside(m, value):
    return m['exponent_low'] <= value <= m['exponent_high']

  if not (has_interval(attn) and has_interval(relu)):
    verdict = NOT
  elif inside(attn, 6.0) and inside(relu, 0.0):
    verdict = REPRODUCED
  elif attn['exponent_low'] > relu['exponent_high'] or inside(attn, 6.0) or inside(relu, 0.0):
    verdict = PARTLY
  else:
    verdict = NOT
  family = (attn or relu or {}).get('exponent_family')
  x = (attn or relu or {}).get('exponent_x')
  fits = (attn or relu or {}).get('families', {}).get(family, {}).get('fit', {})
  return _row('kappa', claim, section, verdict, ours or 'no exponent measured', study,
              f"width_threshold part: {family} data (x = {x}), {fits.get('datasets', '')} datasets, "
              f"{fits.get('seeds', '')} seeds, ε = {wt.get('eps')}, widths "
              f"{', '.join(map(str, wt.get('widths', [])))}; m* observed or extrapolated (docs/method.md §18)")


def _row_kappa(spec, dataset, section) -> dict:
  """Claim 2, κ(G³) = κ(G)³ and an impractical width threshold. Reproduced when the study's
  κ(G) lies within our κ_d(G) curve over n (its n was not published) and the v2 width threshold
  κ_d⁶ n ln n exceeds the study's widest net (4096); partly when one of the two holds. (When
  the width_threshold part ran, `_row_width_threshold` decides instead.)"""
  claim = 'κ(G³) = κ(G)³, so the NTK regime needs width Ω(κ⁶)'
  ref = paper.reference_dataset(dataset)
  kappa = paper.KAPPA.get(ref)
  study = f'κ(G) ≈ {kappa:.2g} ({paper.DATASET_NAMES[ref]}, n not published)' if kappa else NO_STUDY
  if spec is None:
    return _row('kappa', claim, section, NOT_RUN, '', study, '')
  curve = spec.get('curve', [])
  effs = [_num(c['kappa_eff']) for c in curve]
  width = _num(spec['log10_width_v2'])
  singular = math.isinf(_num(spec['kappa']))
  ours = (f"κ_d(G) = {_g(spec['kappa_eff'])} at n = {spec['n']} "
          f"({'G singular, rank ' + str(spec['rank']) if singular else 'κ(G) = ' + _g(spec['kappa'])}); "
          f"log10 κ_d(G³) = {3 * _num(spec['log10_kappa_eff']):.1f}; width threshold 10^{width:.0f}")
  crossed = None
  if kappa and effs:
    crossed = min(effs) <= kappa <= max(effs)
    reach = next((c['n'] for c in curve if _num(c['kappa_eff']) >= kappa), None)
    ours += f"; the study's κ is reached at n ≈ {reach}" if reach else "; the study's κ is not reached"
  huge = width > math.log10(max(paper.NTK_DISTANCE_WIDTHS))
  if crossed is None:
    verdict = NO_STUDY if not kappa else NOT_RUN
  else:
    verdict = REPRODUCED if crossed and huge else (PARTLY if crossed or huge else NOT)
  ns = [c['n'] for c in curve]
  return _row('kappa', claim, section, verdict, ours, study,
              f"{dataset}, n = {min(ns, default=spec['n'])}…{max(ns, default=spec['n'])}, "
              f"unit-norm inputs, rank cut rtol {spec.get('rtol', '')}")


def _row_ntk_distance(nd, dataset, section) -> dict:
  """Claim 3, ‖f_m − f∞‖ shrinks with width for 2L-ReLU and grows for MLP-Attn. A model's trend
  is first vs last width (FLAT band); reproduced when both models' trends match the study's Table
  1 trends, partly when one does, not reproduced when neither does."""
  claim = 'with width, 2L-ReLU approaches its NTK, MLP-Attn moves away'
  ref = paper.reference_dataset(dataset)
  study_trend, study_text = {}, []
  for m in ('relu_mlp', 'mlp_attn'):
    row = paper.NTK_DISTANCE.get((ref, m))
    if row:
      a, b = row[0], row[-1]
      study_trend[m] = stats.change(a, b, 1 / FLAT, FLAT)
      study_text.append(f'{paper.model_name(m)} {a:g} → {b:g}')
  study = (f"‖f_m − f∞‖ at m = {paper.NTK_DISTANCE_WIDTHS[0]} → {paper.NTK_DISTANCE_WIDTHS[-1]} "
           f"({paper.DATASET_NAMES[ref]}): " + ', '.join(study_text)) if study_text else NO_STUDY
  if nd is None:
    return _row('ntk_distance', claim, section, NOT_RUN, '', study, '')
  ours, matches = [], []
  for m in ('relu_mlp', 'mlp_attn'):
    rows = [r for r in nd['summary'] if r['model'] == m]
    if not rows:
      continue
    w0, w1, a, b, word = stats.trend(rows, 'function_distance_mean', 1 / FLAT, FLAT)
    ours.append(f'{paper.model_name(m)} {a:.3g} → {b:.3g} ({word})')
    if m in study_trend:
      matches.append(word == study_trend[m])
  if not matches:
    verdict = NO_STUDY
  else:
    verdict = REPRODUCED if all(matches) else (PARTLY if any(matches) else NOT)
  widths = sorted({r['width'] for r in nd['summary']})
  return _row('ntk_distance', claim, section, verdict,
              f"m = {widths[0]} → {widths[-1]}: " + ', '.join(ours), study,
              f"{dataset}, widths {', '.join(map(str, widths))}, {_sizes(nd)}, f∞: {nd.get('comparison')}")


def _ratio_rows(res, rows) -> dict:
  """{attack: ratio row} of MLP-Attn / 2L-ReLU at the summary rows' ε and setting: the part's
  `ratios` (with intervals over seeds) when it wrote them, else the point ratio of the means
  with no interval (a result from before intervals)."""
  setting, eps = rows[0]['setting'], rows[0]['eps']
  out = {r['attack']: r for r in res.get('ratios') or []
         if r['setting'] == setting and abs(r['eps'] - eps) < 1e-9
         and (r.get('reference'), r.get('candidate')) == paper.PAIR}
  if out:
    return out
  by = {(r['model'], r['attack']): r for r in rows}
  for a in dict.fromkeys(r['attack'] for r in rows):
    relu, attn = by.get(('relu_mlp', a)), by.get(('mlp_attn', a))
    if relu is None or attn is None:
      continue
    fr, fa = relu['flip_rate_mean'], attn['flip_rate_mean']
    out[a] = {'attack': a, 'ratio': fa / fr if fr > 0 else None, 'ratio_low': None,
              'ratio_high': None, 'seeds': relu.get('flip_rate_count'),
              'interval_null_because': 'the result has no per-seed ratios'}
  return out


def _place(low, high, band_low, band_high) -> str:
  """Where the interval [low, high] (high None: unbounded) lies against the band:
  'inside', 'outside' (wholly below or above it), 'straddles' or 'unknown' (no interval)."""
  if low is None:
    return 'unknown'
  high = math.inf if high is None else high
  if band_low <= low and high <= band_high:
    return 'inside'
  if high < band_low or low > band_high:
    return 'outside'
  return 'straddles'


def _row_malleability(res, dataset, task, section) -> dict:
  """Claim 4 on one task, MLP-Attn's top-τ influence signs flip 6–9× more often than 2L-ReLU's
  (the study's ratio per attack at ε = 0.3). Each attack's ratio comes with its 95 % bootstrap
  interval over seeds (`parts.malleability.ratios`), and the rules read the interval, not the
  point, so that rounding noise between machines (which moves the point within the interval)
  does not flip a verdict. Per attack the interval lies `inside` the band [study / FACTOR,
  study · FACTOR], `outside` it, or `straddles` an edge (no interval, from fewer than 3 seeds:
  `unknown`). Reproduced when every attack's interval is inside; partly when some is inside,
  or every interval lies above 1 (MLP-Attn more malleable beyond the seed noise, though not by
  the study's factor); not reproduced when every interval is outside; else inconclusive
  (more seeds would decide). A model whose mean test accuracy is below twice chance
  (`training.accuracy_floor`) is marked in `ours`."""
  label = 'all 10 classes' if task == 'all' else f'classes {task}'
  claim = f"MLP-Attn's influence signs flip several times more often than 2L-ReLU's ({label})"
  key = f'malleability:{task}'
  ref = paper.reference_dataset(dataset)
  table = paper.FLIP_RATE.get((ref, task), {})
  study_ratio = {a: v[1] / v[0] for a, v in table.items() if v[0] > 0}
  study = (f"{paper.DATASET_NAMES[ref]}: " + ' / '.join(f'{a.upper()} {r:.1f}×' for a, r in study_ratio.items())
           if study_ratio else NO_STUDY)
  if res is None:
    return _row(key, claim, section, NOT_RUN, '', study, '')
  rows = [r for r in res['summary'] if r['setting'] in ('standard', 'retrain')]
  eps = 0.3 if any(abs(r['eps'] - 0.3) < 1e-9 for r in rows) else min(r['eps'] for r in rows)
  rows = [r for r in rows if abs(r['eps'] - eps) < 1e-9]
  by = {(r['model'], r['attack']): r for r in rows}
  ratio_rows = _ratio_rows(res, rows) if rows else {}
  parts, places, above, seeds, weak = [], [], [], set(), set()
  for a in dict.fromkeys(r['attack'] for r in rows):
    relu, attn, rr = by.get(('relu_mlp', a)), by.get(('mlp_attn', a)), ratio_rows.get(a)
    if relu is None or attn is None or rr is None:
      continue
    fr, fa = 100 * relu['flip_rate_mean'], 100 * attn['flip_rate_mean']
    seeds.add(rr.get('seeds'))
    for m, r in (('relu_mlp', relu), ('mlp_attn', attn)):
      if r.get('undertrained'):
        weak.add(f"{paper.model_name(m)} {100 * r['test_accuracy_mean']:.0f} %")
    if rr['ratio'] is None:
      parts.append(f'{a.upper()} undefined ({fa:.1f} / {fr:.1f} %)')
      above.append(False)
      places.append('unknown')
      continue
    parts.append(f"{a.upper()} {stats.format_ratio(rr['ratio'], rr['ratio_low'], rr['ratio_high'], rr.get('seeds'))}"
                 f' ({fa:.1f} / {fr:.1f} %)')
    above.append(rr['ratio_low'] is not None and rr['ratio_low'] > 1)
    if a in study_ratio and abs(eps - 0.3) < 1e-9:
      s = study_ratio[a]
      places.append(_place(rr['ratio_low'], rr['ratio_high'], s / FACTOR, s * FACTOR))
  if not parts:
    verdict = NOT_RUN
  elif not places:
    verdict = NO_STUDY
  elif all(p == 'inside' for p in places):
    verdict = REPRODUCED
  elif 'inside' in places or (above and all(above)):
    verdict = PARTLY
  elif all(p == 'outside' for p in places):
    verdict = NOT
  else:
    verdict = INCONCLUSIVE
  units = rows[0].get('eps_units', 'pixel') if rows else 'pixel'
  eps_text = (f'ε = {eps:g} on [0, 1] pixels' if units == 'pixel' else
              f"ε = {eps:g} pixel std (= {rows[0].get('eps_pixels_mean', float('nan')):.3g} pixels)")
  f = _flags(res)
  pair = f"{paper.model_name('mlp_attn')} / {paper.model_name('relu_mlp')}: "
  ours = pair + ', '.join(parts)
  seeds.discard(None)
  if seeds:
    ours += f"; 95 % bootstrap intervals over {'/'.join(map(str, sorted(seeds)))} seeds"
  if weak:
    ours += f"; † undertrained (test accuracy below twice chance): {', '.join(sorted(weak))}"
  return _row(key, claim, section, verdict, ours, study,
              f"{dataset} {label}, {eps_text}, τ = {f.get('tau', 0.1)}, width {f.get('width', '')}, "
              f"{_sizes(res)}")


def _row_approximation(approx, dataset, section) -> dict:
  """Claim 5, the data-dependent kernel lowers approximation error when targets align with the
  data geometry (no number published). Reproduced when G³'s relative test error on targets in G's
  top eigenvectors is below both its own on random targets and the 2L-ReLU NTK's on the aligned
  ones; partly when only the first holds."""
  claim = 'G³ approximates better when targets align with the data (the "power" side)'
  study = 'qualitative: lower error on aligned targets (no number)'
  if approx is None:
    return _row('approximation', claim, section, NOT_RUN, '', study, '')
  rows = {(r['task'], r['kernel']): r['relative_mse_mean'] for r in approx['summary']}
  need = [('aligned', 'gram_cubed'), ('random', 'gram_cubed'), ('aligned', 'relu_ntk')]
  if any(k not in rows for k in need):
    return _row('approximation', claim, section, NOT_RUN, 'aligned/random tasks not run', study, '')
  g_al, g_rd, r_al = (rows[k] for k in need)
  first, second = g_al < g_rd, g_al < r_al
  verdict = REPRODUCED if first and second else (PARTLY if first else NOT)
  name = paper.KERNEL_NAMES
  ours = (f"relative test error of G³: {g_al:.3g} aligned vs {g_rd:.3g} random; "
          f"{name['relu_ntk']} on aligned {r_al:.3g}")
  if ('real', 'mlp_attn_ntk') in rows and ('real', 'relu_ntk') in rows:
    ours += (f"; real labels: {name['mlp_attn_ntk']} {rows['real', 'mlp_attn_ntk']:.3g}, "
             f"{name['relu_ntk']} {rows['real', 'relu_ntk']:.3g}")
  return _row('approximation', claim, section, verdict, ours, study,
              f"{dataset}, {approx['n_train']} train / {approx['n_test']} test, ridge "
              f"{approx['settings'].get('ridge', '')}, top-{approx['settings'].get('k_top', '')} "
              'eigenvectors')


def scorecard(results: dict, dataset: str, sections: Optional[dict] = None) -> list:
  """One row per claim (see the module docstring) from `results`: a dict with any of 'spectral',
  'ntk_distance', 'malleability' (the main task's), 'binary' ({(dataset, classes): malleability
  result}), each optionally with a 'settings' dict (the sizes actually used),
  'approximation', 'width_threshold' (its claim-2 row then replaces the computed one); `task`
  (the main malleability task, default 'all'). `sections`: claim key -> report heading
  (default: the report's own)."""
  sec = dict(SECTIONS, **(sections or {}))
  task = results.get('task', 'all')
  measured = results.get('width_threshold')
  rows = [_row_kernel(results.get('spectral'), dataset, sec['kernel']),
          (_row_width_threshold(measured, sec['width_threshold']) if measured
           else _row_kappa(results.get('spectral'), dataset, sec['kappa'])),
          _row_ntk_distance(results.get('ntk_distance'), dataset, sec['ntk_distance']),
          _row_malleability(results.get('malleability'), dataset, task, sec['malleability'])]
  for (ds, cls), res in (results.get('binary') or {}).items():
    rows.append(_row_malleability(res, ds, cls, sec.get(f'binary:{ds}:{cls}', sec['malleability'])))
  rows.append(_row_approximation(results.get('approximation'), dataset, sec['approximation']))
  return rows


SECTIONS = {'kernel': 'Spectral amplification', 'kappa': 'Spectral amplification',
            'ntk_distance': 'Distance to the NTK regime', 'malleability': 'Influence malleability',
            'approximation': 'Approximation error', 'width_threshold': 'Width threshold against κ'}
