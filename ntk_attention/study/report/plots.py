"""Figure primitives (floor 4): lines, bars, scatter, tornado and spectra, drawn the same way everywhere.

Rules every figure follows (what a reviewer checks):
  * at most `MAX_SERIES` measured series per panel; more is a ValueError (use `plot_panels`, small multiples);
  * the legend sits below the axes, never over data;
  * measurements are coloured lines with markers (each series its own marker, size and dash, so a curve lying
    on another stays visible); the study's values are black-edged gold stars without a line, labelled
    "study …"; reference lines (∝ 1/√m, y = x) are grey dotted lines without markers;
  * a spread (± std over seeds) is a band; on a log axis it is drawn in log space, mean·exp(±std/mean) (the
    first-order std of ln y), so it never crosses zero; a series with one seed passes `spread=None` and gets
    no band;
  * log axes carry labelled major ticks only (decades, or 1-2-5 within a decade, or the data's own x values
    when there are few), so tick labels do not overlap;
  * PNGs are saved at `DPI` (2× their displayed size in the HTML report, see `page.py`).

`matplotlib.figure.Figure` is used directly (no pyplot): no global figure registry or backend switch.
"""
import io
import os
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib import ticker

from ntk_attention.study import paper
from ntk_attention.study import store

MAX_SERIES = 4
DPI = 200
PANEL_SIZE = (5.6, 3.6)   # inches per panel; the legend adds below.
_COLORS = ('tab:blue', 'tab:orange', 'tab:green', 'tab:red')
_MARKERS = ('o', 's', '^', 'D')
_SIZES = (8, 6, 5, 4)
_DASHES = ('-', '--', '-.', ':')
STUDY_STYLE = dict(marker='*', markersize=14, markerfacecolor='gold', markeredgecolor='k',
                   linestyle='none', zorder=6)
REFERENCE_STYLE = dict(color='0.4', linestyle=':', linewidth=1.6, zorder=1)


def _finite(name, values) -> np.ndarray:
  a = np.asarray(values, dtype=np.float64)
  if not np.all(np.isfinite(a)):
    raise ValueError(f'{name} contains non-finite values: {a}')
  return a


def colour(j: int) -> str:
  """The colour of the j-th series of a panel."""
  return _COLORS[j]


def _style(j: int) -> dict:
  return dict(color=_COLORS[j], marker=_MARKERS[j], markersize=_SIZES[j], linestyle=_DASHES[j],
              markerfacecolor='none' if j == 0 else _COLORS[j], linewidth=1.6)


def _check_count(series, where):
  if len(series) > MAX_SERIES:
    raise ValueError(f'{where}: {len(series)} series in one panel (at most {MAX_SERIES}); split into panels')


def _log_ticks(axis, values, few_values: bool):
  """Readable major ticks on a log axis, no minor labels."""
  v = np.asarray([x for x in values if x > 0], dtype=np.float64)
  axis.set_minor_formatter(ticker.NullFormatter())
  if v.size == 0:
    return
  lo, hi = v.min(), v.max()
  uniq = np.unique(v)
  if few_values and 1 < uniq.size <= 8 and np.all(uniq[1:] / uniq[:-1] >= 1.6):
    axis.set_major_locator(ticker.FixedLocator(uniq))
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f'{x:g}'))
    axis.set_minor_locator(ticker.NullLocator())
  elif hi / lo < 10:
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f'{x:g}'))
  else:
    axis.set_major_locator(ticker.LogLocator(base=10, numticks=7))
    axis.set_major_formatter(ticker.LogFormatterSciNotation())


def _band(mean, spread, log: bool):
  if log:
    if np.any(mean <= 0):
      raise ValueError('a log-axis series must be positive')
    f = np.exp(spread / mean)
    return mean / f, mean * f
  return mean - spread, mean + spread


def _legend(ax, ncol=2):
  handles, labels = ax.get_legend_handles_labels()
  if handles:
    ax.legend(handles, labels, loc='upper center', bbox_to_anchor=(0.5, -0.2), ncol=ncol,
              frameon=False, fontsize=8)


def line_panel(ax, series: dict, xlabel='', ylabel='', title='', logx=False, logy=False,
               references: Optional[dict] = None, study: Optional[dict] = None,
               study_levels: Optional[dict] = None, xticks_from_data=True):
  """Draws one panel on `ax`.

  series: name -> (x, mean, spread) with `spread` (± std) None for no band; references: label ->
  (x, y) grey dotted lines; study: label -> (x, y) or (x, y, colour) the study's values as stars
  (gold, or the colour of the measured series they belong to); study_levels: label -> y, a study
  value whose x was not published, as a gold dashed horizontal line.
  """
  _check_count(series, title or ylabel)
  xs, ys = [], []
  for j, (name, (x, mean, spread)) in enumerate(series.items()):
    x, mean = _finite(f'{name} x', x), _finite(f'{name} mean', mean)
    spread = None if spread is None else _finite(f'{name} spread', spread)
    if x.shape != mean.shape or (spread is not None and spread.shape != mean.shape):
      raise ValueError(f'series {name!r}: x, mean, spread shapes differ')
    style = _style(j)
    ax.plot(x, mean, label=str(name), **style)
    if spread is not None and np.any(spread > 0):
      lo, hi = _band(mean, spread, logy)
      ax.fill_between(x, lo, hi, color=style['color'], alpha=0.15, linewidth=0)
      ys += [lo, hi]
    xs.append(x)
    ys.append(mean)
  for label, (x, y) in (references or {}).items():
    x, y = _finite(f'{label} x', x), _finite(f'{label} y', y)
    ax.plot(x, y, label=str(label), **REFERENCE_STYLE)
    ys.append(y)
  for label, point in (study or {}).items():
    x, y = _finite(f'{label} x', point[0]), _finite(f'{label} y', point[1])
    colour = {'markerfacecolor': point[2]} if len(point) > 2 else {}
    ax.plot(x, y, label=str(label), **{**STUDY_STYLE, **colour})
    xs.append(x)
    ys.append(y)
  for label, y in (study_levels or {}).items():
    ax.axhline(_finite(label, y), color='goldenrod', linestyle='--', linewidth=1.8, label=str(label),
               zorder=1)
    ys.append(np.atleast_1d(y))
  ax.set_title(title, fontsize=10)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  if logx:
    ax.set_xscale('log')
    _log_ticks(ax.xaxis, np.concatenate(xs) if xs else [], xticks_from_data)
  if logy:
    ax.set_yscale('log')
    _log_ticks(ax.yaxis, np.concatenate([np.ravel(y) for y in ys]) if ys else [], False)
  if not logx and xs and all(np.all(x == np.round(x)) for x in xs):
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  _legend(ax)


def _save(fig, path) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=DPI, bbox_inches='tight')
  store._atomic_write_bytes(path, buf.getvalue())
  return os.fspath(path)


def plot_panels(path, panels: Sequence[dict], suptitle: str = '', ncols: int = 2) -> str:
  """Small multiples: each panel is the keyword arguments of `line_panel` (series, xlabel, ...)."""
  panels = list(panels)
  ncols = min(ncols, len(panels))
  nrows = -(-len(panels) // ncols)
  fig = Figure(figsize=(PANEL_SIZE[0] * ncols, (PANEL_SIZE[1] + 0.9) * nrows), layout='constrained')
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, p in zip(axes, panels):
    line_panel(ax, **p)
  for ax in axes[len(panels):]:
    ax.set_visible(False)
  if suptitle:
    fig.suptitle(suptitle, fontsize=11)
  return _save(fig, path)


def plot_lines(path, series: dict, xlabel, ylabel, title, logx=False, logy=False, references=None,
               study=None) -> str:
  """One panel: series name -> (x, mean, spread); see `line_panel`."""
  return plot_panels(path, [dict(series=series, xlabel=xlabel, ylabel=ylabel, title='', logx=logx,
                                 logy=logy, references=references, study=study)], suptitle=title)


def plot_bars(path, groups: Sequence[str], series: dict, ylabel, title, logy=False,
              study: Optional[dict] = None) -> str:
  """Grouped bars: one group per entry of `groups`, one bar per series name -> (means, spreads).

  spreads (± std) None: no error bar; on a log axis the bar is drawn in log space (see module
  docstring). study: series name -> per-group values (None where the study has none), drawn as
  stars on the matching bars and labelled "study".
  """
  _check_count(series, title)
  fig = Figure(figsize=(PANEL_SIZE[0] + 0.8, PANEL_SIZE[1] + 0.9), layout='constrained')
  ax = fig.add_subplot()
  idx = np.arange(len(groups))
  width = 0.8 / max(len(series), 1)
  starred = False
  values = []
  for j, (name, (means, spreads)) in enumerate(series.items()):
    means = _finite(f'{name} means', means)
    spreads = None if spreads is None else _finite(f'{name} spreads', spreads)
    if means.shape != (len(groups),) or (spreads is not None and spreads.shape != means.shape):
      raise ValueError(f'series {name!r}: needs {len(groups)} means (and spreads)')
    pos = idx + (j - (len(series) - 1) / 2) * width
    yerr = None
    if spreads is not None and np.any(spreads > 0):
      lo, hi = _band(means, spreads, logy)
      yerr = np.stack([means - lo, hi - means])
      values += [lo, hi]
    ax.bar(pos, means, width, yerr=yerr, capsize=3, label=str(name), color=_COLORS[j],
           hatch=(None, '//', '..', 'xx')[j], edgecolor='white')
    values.append(means)
    ref = (study or {}).get(name)
    if ref is not None:
      keep = [k for k, v in enumerate(ref) if v is not None]
      if keep:
        ax.plot(pos[keep], [ref[k] for k in keep], label=None if starred else 'study (its table)',
                **STUDY_STYLE)
        values.append(np.asarray([ref[k] for k in keep], np.float64))
        starred = True
  ax.set_xticks(idx)
  ax.set_xticklabels([str(g) for g in groups])
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(True, axis='y', alpha=0.3)
  if logy:
    ax.set_yscale('log')
    _log_ticks(ax.yaxis, np.concatenate([np.ravel(v) for v in values]), False)
  _legend(ax, ncol=3)
  return _save(fig, path)


def plot_scatter(path, x, y, xlabel, ylabel, title, diagonal=True) -> str:
  """Scatter of y against x, with the reference line y = x when `diagonal`."""
  x, y = _finite('x', x).ravel(), _finite('y', y).ravel()
  if x.shape != y.shape:
    raise ValueError(f'x and y differ in size: {x.size} vs {y.size}')
  fig = Figure(figsize=(PANEL_SIZE[0], PANEL_SIZE[1] + 1.2), layout='constrained')
  ax = fig.add_subplot()
  ax.scatter(x, y, s=12, alpha=0.7, color=_COLORS[0], label='training points')
  if diagonal and x.size:
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    ax.plot([lo, hi], [lo, hi], label='y = x (unchanged)', **REFERENCE_STYLE)
  # A common power of ten beside each axis: influence scores (~1e-4) written out in full
  # ran into each other along the x axis.
  ax.ticklabel_format(axis='both', style='sci', scilimits=(-2, 3))
  ax.set_title(title, fontsize=10)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  _legend(ax)
  return _save(fig, path)


def plot_tornado(path, baseline: float, rows: Sequence[dict], title, xlabel,
                 reference=None, reference_label='',
                 reference_model=paper.model_name('relu_mlp')) -> str:
  """Tornado chart: one horizontal line per row from `baseline` to the row's `value`, with
  its interval `[low, high]` as a bar (a None bound: the bar reaches the axis edge and ends in
  an arrow, 'interval unbounded').

  `rows`: dicts with 'label', 'value' (None: not drawn, labelled 'undefined'), 'low',
  'high'. `reference=(lo, hi)`: a shaded band (e.g. the study's range), drawn unlike data.
  `reference_model`: the display name of the ratio's denominator (an undefined ratio is one
  where it flips none).
  """
  rows = list(rows)
  fig = Figure(figsize=(7.2, 0.42 * len(rows) + 2.2), layout='constrained')
  ax = fig.add_subplot()
  ax.set_title(title, fontsize=10)
  ax.set_xlabel(xlabel)
  ax.grid(True, axis='x', alpha=0.3)
  values = [v for r in rows for v in (r['value'], r['low'], r['high']) if v is not None]
  values += [baseline] + (list(reference) if reference else [])
  lo_edge, hi_edge = min(values) - 0.15, max(values) + 0.15
  if reference:
    ax.axvspan(reference[0], reference[1], color='gold', alpha=0.3, lw=0, label=reference_label)
  ax.axvline(baseline, color='k', lw=1, ls='--', label='baseline (measured)')
  first, unbounded = True, False
  for i, r in enumerate(rows):
    if r['value'] is None:
      ax.text(baseline, i, f'  undefined (no {reference_model} flips)', va='center', fontsize=8)
      continue
    low = lo_edge if r['low'] is None else r['low']
    high = hi_edge if r['high'] is None else r['high']
    ax.plot([low, high], [i, i], color='tab:blue', lw=5, alpha=0.35, solid_capstyle='butt',
            label='95% interval' if first else None)
    for bound, edge, marker in ((r['low'], lo_edge, '<'), (r['high'], hi_edge, '>')):
      if bound is None:        # an open bound: an arrow at the axis edge, not a cut bar
        ax.plot([edge], [i], marker, color='tab:blue', ms=7, clip_on=False,
                label=None if unbounded else 'interval unbounded (arrow)')
        unbounded = True
    ax.plot([baseline, r['value']], [i, i], color='tab:blue', lw=1.5)
    ax.plot([r['value']], [i], 'o', color='tab:blue', ms=5,
            label='measured (mean over seeds)' if first else None)
    first = False
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels([r['label'] for r in rows], fontsize=8)
  ax.set_ylim(-0.7, len(rows) - 0.3)
  ax.invert_yaxis()
  ax.set_xlim(lo_edge, hi_edge)
  fig.legend(loc='outside lower center', ncol=2, frameon=False, fontsize=8)
  return _save(fig, path)


def spectrum_series(spectra: dict) -> dict:
  """name -> eigenvalues  ->  line series (index, positive eigenvalues sorted descending, None);
  non-positive eigenvalues cannot be drawn on a log axis: the label says how many were left out."""
  out = {}
  for name, ev in spectra.items():
    ev = np.sort(_finite(f'{name} eigenvalues', ev).ravel())[::-1]
    idx = np.arange(1, ev.size + 1)
    pos = ev > 0
    label = str(name) + (f' ({int((~pos).sum())} ≤ 0 left out)' if not pos.all() else '')
    out[label] = (idx[pos], ev[pos], None)
  return out


def plot_spectra(path, spectra: dict, title) -> str:
  """Eigenvalues sorted descending against their index (1-based) on a log y axis (one panel)."""
  series = spectrum_series(spectra)
  if not any(len(x) for x, _, _ in series.values()):
    raise ValueError(f'{title}: no positive eigenvalues to draw')
  return plot_panels(path, [dict(series=series, xlabel='index (descending)', ylabel='eigenvalue',
                                 logy=True)], suptitle=title, ncols=1)
