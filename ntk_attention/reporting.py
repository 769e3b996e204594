"""Results store, tables, figures and the Markdown/HTML report (floor 4).

Conventions:
  * Every file write is atomic: the bytes go to a temp file in the same folder, which is flushed, fsynced and then
    `os.replace`d over the target, so a crash leaves either the old file or the new one, never half of one.
  * JSON is strict and numeric fields hold numbers or null: a non-finite float is written as null, and in an
    object a field `<key>_null_because` ('infinite', 'negative infinite', 'not a number') says why;
    `read_json` / `JsonlStore.records` turn exactly those pairs back into floats. numpy scalars and
    arrays (and anything with `__array__`, e.g. jax arrays) become Python numbers and lists; tuples become lists.
  * Figures use `matplotlib.figure.Figure` directly (no pyplot), so there is no global figure registry or backend
    switch; PNGs are saved at 120 dpi.
"""
import base64
import csv
import html
import io
import json
import math
import os
import re
import tempfile
import time
import warnings
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_NONFINITE = {'infinite': math.inf, 'negative infinite': -math.inf, 'not a number': math.nan}
_WHY = '_null_because'


def _nonfinite_reason(v):
  """'infinite' / 'negative infinite' / 'not a number' for a non-finite float, else None."""
  v = v.item() if isinstance(v, np.generic) else v
  if not isinstance(v, float) or math.isfinite(v):
    return None
  return 'not a number' if math.isnan(v) else ('infinite' if v > 0 else 'negative infinite')


# ---------------------------------------------------------------------------------------------------------- files

def _atomic_write_bytes(path, data: bytes) -> None:
  """Writes `data` to `path` via temp file + fsync + os.replace; the temp file is removed on any failure."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
  try:
    os.fchmod(fd, 0o666 & ~_umask())   # mkstemp makes 0600; results are for sharing
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  if hasattr(os, 'O_DIRECTORY'):  # Make the rename itself durable (POSIX).
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
      os.fsync(dir_fd)
    finally:
      os.close(dir_fd)


def write_npz(path, **arrays) -> None:
  """Atomically writes numpy arrays to a compressed `.npz` file."""
  buf = io.BytesIO()
  np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
  _atomic_write_bytes(path, buf.getvalue())


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_text(path, text: str) -> None:
  """Atomically writes `text` (UTF-8) to `path`."""
  _atomic_write_bytes(path, text.encode('utf-8'))


def _to_jsonable(obj):
  """numpy/jax/tuple/non-finite-float -> strict-JSON-safe Python objects; TypeError for anything else."""
  if isinstance(obj, dict):
    out = {}
    for k, v in obj.items():
      k = k.item() if isinstance(k, np.generic) else k
      if not (k is None or isinstance(k, (str, int, float))):
        raise TypeError(f'JSON object keys must be str or numbers, got {type(k).__name__}: {k!r}')
      out[k] = _to_jsonable(v)
      if _nonfinite_reason(v):
        out[f'{k}{_WHY}'] = _nonfinite_reason(v)
    return out
  if isinstance(obj, (list, tuple)):
    return [_to_jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return _to_jsonable(obj.tolist())
  if isinstance(obj, np.generic):
    return _to_jsonable(obj.item())
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if obj is None or isinstance(obj, (str, int, bool)):
    return obj
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if hasattr(obj, '__array__'):
    return _to_jsonable(np.asarray(obj))
  raise TypeError(f'cannot serialise object of type {type(obj).__name__} to JSON: {obj!r}')


def _from_jsonable(obj):
  """Inverse of the non-finite encoding: a null with its `<key>_null_because` becomes the float."""
  if isinstance(obj, dict):
    out = {}
    for k, v in obj.items():
      why = obj.get(f'{k}{_WHY}') if isinstance(k, str) else None
      if v is None and why in _NONFINITE:
        out[k] = _NONFINITE[why]
      elif not (isinstance(k, str) and k.endswith(_WHY) and obj.get(k[:-len(_WHY)], 0) is None
                and isinstance(v, str) and v in _NONFINITE):
        out[k] = _from_jsonable(v)
    return out
  if isinstance(obj, list):
    return [_from_jsonable(v) for v in obj]
  return obj


def _dumps(obj, **kwargs) -> str:
  return json.dumps(_to_jsonable(obj), allow_nan=False, **kwargs)


def write_json(path, obj) -> None:
  """Atomically writes `obj` as indented strict JSON (see module docstring for the type conversions)."""
  _atomic_write_bytes(path, (_dumps(obj, indent=2) + '\n').encode('utf-8'))


def read_json(path):
  """Reads JSON written by `write_json`, restoring non-finite floats (module docstring)."""
  with open(path, encoding='utf-8') as f:
    return _from_jsonable(json.load(f))


def _csv_cell(v):
  if isinstance(v, np.generic):
    v = v.item()
  if v is None:
    return ''
  if isinstance(v, (dict, list, tuple, np.ndarray)):
    return _dumps(v)
  return str(v)  # floats: repr-precision, 'inf'/'nan' for non-finite.


def write_csv(path, rows: Sequence[dict], columns=None) -> None:
  """Atomically writes `rows` as CSV with a header line.

  columns: default = union of the rows' keys in first-seen order; when given explicitly, other keys are left out.
  Missing values and None become empty cells; lists/arrays/dicts are written as JSON text.
  """
  if columns is None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(columns)
  for row in rows:
    writer.writerow([_csv_cell(row.get(c)) for c in columns])
  _atomic_write_bytes(path, buf.getvalue().encode('utf-8'))


# ---------------------------------------------------------------------------------------------------------- store

def _hashable(v):
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, (list, tuple, np.ndarray)):
    return tuple(_hashable(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v))
  return v


def cell_key(record: dict, key_fields: Sequence[str]) -> tuple:
  """The tuple of `record[f]` for f in key_fields (numpy scalars -> Python, lists -> tuples)."""
  missing = [f for f in key_fields if f not in record]
  if missing:
    raise ValueError(f'record has no key field(s) {missing}: {record!r}')
  return tuple(_hashable(record[f]) for f in key_fields)


class JsonlStore:
  """Append-only results file: one JSON record per line, each append flushed and fsynced.

  A torn last line (crash mid-write) is ignored by `records` with a warning, and cut off by the next `append` so
  new records never glue onto it. An undecodable line anywhere else is corruption and raises ValueError.
  """

  def __init__(self, path):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

  def append(self, record: dict) -> None:
    if not isinstance(record, dict):
      raise ValueError(f'a record must be a dict, got {type(record).__name__}')
    line = (_dumps(record) + '\n').encode('utf-8')  # Serialise before touching the file.
    with open(self.path, 'a+b') as f:
      f.seek(0, os.SEEK_END)
      size = f.tell()
      f.seek(max(size - 1, 0))
      if size and f.read(1) != b'\n':  # Only read the whole file in the rare torn case.
        f.seek(0)
        data = f.read()
        keep = data.rfind(b'\n') + 1
        warnings.warn(f'{self.path}: dropping torn last line {data[keep:][:80]!r}')
        f.truncate(keep)
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  def records(self) -> list:
    if not os.path.exists(self.path):
      return []
    with open(self.path, encoding='utf-8') as f:
      lines = f.read().split('\n')
    out = []
    for i, l in enumerate(lines):
      if not l.strip():
        continue
      try:
        rec = json.loads(l)
      except json.JSONDecodeError as e:
        if i == len(lines) - 1:  # Unterminated final line: a crash mid-write.
          warnings.warn(f'{self.path}: ignoring torn last line {l[:80]!r}')
          continue
        raise ValueError(f'{self.path}:{i + 1}: corrupt record ({e}): {l[:80]!r}') from e
      if not isinstance(rec, dict):
        raise ValueError(f'{self.path}:{i + 1}: record is not a JSON object: {l[:80]!r}')
      out.append(_from_jsonable(rec))
    return out

  def done_keys(self, key_fields: Sequence[str]) -> set:
    """Keys (see `cell_key`) of every stored record, to skip finished cells on --resume."""
    return {cell_key(r, key_fields) for r in self.records()}

  def reset(self) -> None:
    """Truncates the store to empty (a fresh sweep, not resuming)."""
    _atomic_write_bytes(self.path, b'')


# ---------------------------------------------------------------------------------------------------------- stats

def summarize(records: Sequence[dict], group_fields: Sequence[str], metric_fields: Sequence[str]) -> list:
  """Mean/std/count of each metric per group, groups in order of first appearance.

  Each output row holds the group fields (values of the group's first record, numbers kept numbers) and, for each
  metric m: m_mean, m_std (sample std, ddof=1, when count > 1; 0.0 for a single value) and m_count.
  A record lacking a metric, or holding a non-numeric or non-finite (NaN or +-inf) value, raises ValueError
  naming the record: inf would turn the std into NaN, and a NaN must never pass silently.
  """
  groups = {}
  for idx, rec in enumerate(records):
    key = cell_key(rec, group_fields)
    values = groups.setdefault(key, {m: [] for m in metric_fields})
    for m in metric_fields:
      where = f'record {idx} ({dict(zip(group_fields, key))})'
      if m not in rec:
        raise ValueError(f'{where} has no metric {m!r}')
      v = rec[m]
      if isinstance(v, np.generic):
        v = v.item()
      if not isinstance(v, (int, float)):
        raise ValueError(f'{where}: metric {m!r} is not a number: {v!r}')
      if not math.isfinite(v):
        raise ValueError(f'{where}: metric {m!r} is {v}')
      values[m].append(float(v))
  rows = []
  for key, values in groups.items():
    row = dict(zip(group_fields, key))
    for m in metric_fields:
      a = np.asarray(values[m], dtype=np.float64)
      row[f'{m}_mean'] = float(a.mean())
      row[f'{m}_std'] = float(a.std(ddof=1)) if a.size > 1 else 0.0
      row[f'{m}_count'] = int(a.size)
    rows.append(row)
  return rows


# ---------------------------------------------------------------------------------------------------------- progress

def format_duration(seconds) -> str:
  """'4.2s', '42s', '1m26s', '2h05m', '3d04h'. Negative or non-finite input raises ValueError."""
  s = float(seconds)
  if not math.isfinite(s) or s < 0:
    raise ValueError(f'duration must be finite and >= 0, got {seconds!r}')
  if s < 9.95:
    return f'{s:.1f}s'
  r = int(round(s))
  if r < 60:
    return f'{r}s'
  if r < 3600:
    return f'{r // 60}m{r % 60:02d}s'
  if r < 86400:
    return f'{r // 3600}h{r % 3600 // 60:02d}m'
  return f'{r // 86400}d{r % 86400 // 3600:02d}h'


class Progress:
  """Progress lines for long sweeps: '[label] 3/10 cells, 12.3 s/cell, ~1m26s left'.

  The rate is wall time since construction (time.monotonic) over the cells passed to `update`; cells passed to
  `skip` (already done on resume) count towards done but not towards the rate. Both methods return the line
  and then call `on_update(self)` if given (a run-wide progress line listens there).
  """

  def __init__(self, total: int, label: str, log_fn=print, on_update=None):
    if total < 0:
      raise ValueError(f'total must be >= 0, got {total}')
    self.total, self.label, self.log_fn = int(total), label, log_fn
    self.on_update = on_update
    self.done = self.timed = 0
    self._start = time.monotonic()

  @property
  def elapsed(self) -> float:
    return time.monotonic() - self._start

  def skip(self, n: int = 1) -> str:
    self.done += n
    msg = f'[{self.label}] {self.done}/{self.total} cells already done (resumed)'
    self.log_fn(msg)
    if self.on_update:
      self.on_update(self)
    return msg

  def update(self, n: int = 1) -> str:
    self.done += n
    self.timed += n
    elapsed = time.monotonic() - self._start
    rate = elapsed / max(self.timed, 1)
    rate_s = f'{rate:.3g} s/cell' if rate < 60 else f'{format_duration(rate)}/cell'
    left = max(self.total - self.done, 0)
    tail = f'~{format_duration(rate * left)} left' if left else f'done in {format_duration(elapsed)}'
    msg = f'[{self.label}] {self.done}/{self.total} cells, {rate_s}, {tail}'
    self.log_fn(msg)
    if self.on_update:
      self.on_update(self)
    return msg


# ---------------------------------------------------------------------------------------------------------- tables

def _fmt_cell(v, floatfmt: str) -> str:
  if isinstance(v, np.generic):
    v = v.item()
  if v is None:
    return ''
  if isinstance(v, float):
    s = format(v, floatfmt)
  else:
    s = str(v)
  return s.replace('|', '\\|').replace('\n', ' ')


def markdown_table(rows: Sequence[dict], columns: Sequence[str], headers=None, floatfmt: str = '.3g') -> str:
  """A GitHub pipe table (no trailing newline); floats use `floatfmt`, None/missing -> empty, '|' -> '\\|'."""
  headers = list(columns) if headers is None else list(headers)
  if len(headers) != len(columns):
    raise ValueError(f'{len(headers)} headers for {len(columns)} columns')
  lines = ['| ' + ' | '.join(_fmt_cell(h, floatfmt) for h in headers) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(_fmt_cell(row.get(c), floatfmt) for c in columns) + ' |')
  return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------------- figures

def _finite(name, values) -> np.ndarray:
  a = np.asarray(values, dtype=np.float64)
  if not np.all(np.isfinite(a)):
    raise ValueError(f'{name} contains non-finite values: {a}')
  return a


def _axes(title, xlabel, ylabel):
  fig = Figure(figsize=(6.4, 4.4))
  ax = fig.add_subplot()
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  return fig, ax


def _save(fig, path) -> str:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=120, bbox_inches='tight')
  _atomic_write_bytes(path, buf.getvalue())
  return os.fspath(path)


def plot_lines(path, series: dict, xlabel, ylabel, title, logx=False, logy=False) -> str:
  """One line per series name -> (x, mean, std) with mean +- std error bars (std may be None)."""
  fig, ax = _axes(title, xlabel, ylabel)
  for name, (x, mean, std) in series.items():
    x, mean = _finite(f'{name} x', x), _finite(f'{name} mean', mean)
    std = None if std is None else _finite(f'{name} std', std)
    if x.shape != mean.shape or (std is not None and std.shape != mean.shape):
      raise ValueError(f'series {name!r}: x, mean, std shapes differ')
    ax.errorbar(x, mean, yerr=std, marker='o', capsize=3, label=str(name))
  if logx:
    ax.set_xscale('log')
  if logy:
    ax.set_yscale('log')
  ax.legend()
  return _save(fig, path)


def plot_bars(path, groups: Sequence[str], series: dict, ylabel, title, logy=False) -> str:
  """Grouped bars: one group per entry of `groups`, one bar per series name -> (means, stds) with error bars.

  `logy`: log y axis (values spanning decades); the legend then sits outside the axes."""
  fig, ax = _axes(title, '', ylabel)
  idx = np.arange(len(groups))
  width = 0.8 / max(len(series), 1)
  for j, (name, (means, stds)) in enumerate(series.items()):
    means = _finite(f'{name} means', means)
    stds = None if stds is None else _finite(f'{name} stds', stds)
    if means.shape != (len(groups),) or (stds is not None and stds.shape != means.shape):
      raise ValueError(f'series {name!r}: needs {len(groups)} means (and stds)')
    ax.bar(idx + (j - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=str(name))
  ax.set_xticks(idx)
  ax.set_xticklabels([str(g) for g in groups])
  if logy:
    ax.set_yscale('log')
    ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0))
  else:
    ax.legend()
  return _save(fig, path)


def plot_scatter(path, x, y, xlabel, ylabel, title, diagonal=True) -> str:
  """Scatter of y against x, with the y = x line when `diagonal`."""
  x, y = _finite('x', x).ravel(), _finite('y', y).ravel()
  if x.shape != y.shape:
    raise ValueError(f'x and y differ in size: {x.size} vs {y.size}')
  fig, ax = _axes(title, xlabel, ylabel)
  ax.scatter(x, y, s=12, alpha=0.7)
  if diagonal and x.size:
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    ax.plot([lo, hi], [lo, hi], 'k--', lw=1, label='y = x')
    ax.legend()
  return _save(fig, path)


def plot_tornado(path, baseline: float, rows: Sequence[dict], title, xlabel,
                 reference=None, reference_label='') -> str:
  """Tornado chart: one horizontal line per row from `baseline` to the row's `value`, with
  its interval `[low, high]` as a bar (a None bound is drawn to the axis edge as an arrow).

  `rows`: dicts with 'label', 'value' (None: not drawn, labelled 'undefined'), 'low',
  'high'. `reference=(lo, hi)`: a shaded band (e.g. the study's range), drawn unlike data.
  """
  rows = list(rows)
  fig = Figure(figsize=(7.2, 0.42 * len(rows) + 1.6))
  ax = fig.add_subplot()
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.grid(True, axis='x', alpha=0.3)
  values = [v for r in rows for v in (r['value'], r['low'], r['high']) if v is not None]
  values += [baseline] + (list(reference) if reference else [])
  lo_edge, hi_edge = min(values) - 0.15, max(values) + 0.15
  if reference:
    ax.axvspan(reference[0], reference[1], color='tab:orange', alpha=0.18, lw=0,
               label=reference_label)
  ax.axvline(baseline, color='k', lw=1, ls='--', label='baseline')
  for i, r in enumerate(rows):
    if r['value'] is None:
      ax.text(baseline, i, '  undefined (no 2L-ReLU flips)', va='center', fontsize=8)
      continue
    low = lo_edge if r['low'] is None else r['low']
    high = hi_edge if r['high'] is None else r['high']
    first = i == next(j for j, q in enumerate(rows) if q['value'] is not None)
    ax.plot([low, high], [i, i], color='tab:blue', lw=5, alpha=0.35, solid_capstyle='butt',
            label='95% interval' if first else None)
    ax.plot([baseline, r['value']], [i, i], color='tab:blue', lw=1.5)
    ax.plot([r['value']], [i], 'o', color='tab:blue', ms=5,
            label='measured (mean over seeds)' if first else None)
  ax.set_yticks(range(len(rows)))
  ax.set_yticklabels([r['label'] for r in rows], fontsize=8)
  ax.set_ylim(-0.7, len(rows) - 0.3)
  ax.invert_yaxis()
  ax.set_xlim(lo_edge, hi_edge)
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8)
  return _save(fig, path)


def plot_spectra(path, spectra: dict, title) -> str:
  """Eigenvalues sorted descending against their index (1-based) on a log y axis.

  Non-positive eigenvalues cannot be drawn on a log axis: they are left out and the legend says how many.
  """
  fig, ax = _axes(title, 'index (descending)', 'eigenvalue')
  drawn = False
  for name, ev in spectra.items():
    ev = np.sort(_finite(f'{name} eigenvalues', ev).ravel())[::-1]
    idx = np.arange(1, ev.size + 1)
    pos = ev > 0
    label = str(name) + (f' ({int((~pos).sum())} non-positive skipped)' if not pos.all() else '')
    if pos.any():
      ax.plot(idx[pos], ev[pos], marker='.', label=label)
      drawn = True
    else:
      ax.plot([], [], label=label)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  if drawn:
    ax.set_yscale('log')
  else:
    ax.text(0.5, 0.5, 'no positive eigenvalues', ha='center', transform=ax.transAxes)
  ax.legend()
  return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------- HTML

_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*$')
_TABLE_SEP = re.compile(r'^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?$')
_BULLET = re.compile(r'^[-*+]\s+(.*)$')
_ORDERED = re.compile(r'^\d+[.)]\s+(.*)$')
_INLINE = re.compile(r'`([^`]+)`|!\[([^\]]*)\]\(([^)\s]+)\)|\[([^\]]+)\]\(([^)\s]+)\)|\*\*(.+?)\*\*')
_MIME = {'.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif',
         '.svg': 'image/svg+xml'}
_CSS = ('body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45}'
        'table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.25em .6em}'
        'th{background:#f0f0f0}code{background:#f4f4f4;padding:0 .2em}pre{background:#f4f4f4;padding:.6em;'
        'overflow-x:auto}img{max-width:100%}')


def _data_uri(image_dir, src) -> str:
  path = src if os.path.isabs(src) else os.path.join(os.fspath(image_dir), src)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'report image not found: {path}')
  mime = _MIME.get(os.path.splitext(src)[1].lower(), 'application/octet-stream')
  with open(path, 'rb') as f:
    return f'data:{mime};base64,' + base64.b64encode(f.read()).decode('ascii')


def _inline(text: str, image_dir) -> str:
  """Escapes text and converts `code`, ![alt](img) (inlined), [text](url) and **bold**."""
  out, pos = [], 0
  for m in _INLINE.finditer(text):
    out.append(html.escape(text[pos:m.start()]))
    if m[1] is not None:
      out.append(f'<code>{html.escape(m[1])}</code>')
    elif m[3] is not None:
      out.append(f'<img alt="{html.escape(m[2])}" src="{_data_uri(image_dir, m[3])}">')
    elif m[5] is not None:
      out.append(f'<a href="{html.escape(m[5])}">{_inline(m[4], image_dir)}</a>')
    else:
      out.append(f'<strong>{_inline(m[6], image_dir)}</strong>')
    pos = m.end()
  out.append(html.escape(text[pos:]))
  return ''.join(out)


def _split_row(line: str) -> list:
  line = line.strip()
  line = line[1:] if line.startswith('|') else line
  line = line[:-1] if line.endswith('|') and not line.endswith('\\|') else line
  return [c.strip().replace('\\|', '|') for c in re.split(r'(?<!\\)\|', line)]


def _table(lines: list, image_dir) -> str:
  def row(line, tag):
    return '<tr>' + ''.join(f'<{tag}>{_inline(c, image_dir)}</{tag}>' for c in _split_row(line)) + '</tr>'
  body = ''.join(row(l, 'td') + '\n' for l in lines[2:])
  return f'<table>\n<thead>{row(lines[0], "th")}</thead>\n<tbody>\n{body}</tbody>\n</table>'


def _starts_block(lines, i) -> bool:
  s = lines[i].strip()
  return bool(s.startswith('```') or _HEADING.match(s) or _BULLET.match(s) or _ORDERED.match(s) or (
      s.startswith('|') and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1].strip())))


def html_report(markdown_text: str, image_dir) -> str:
  """Converts our report Markdown into one self-contained HTML page, images inlined as base64 data URIs.

  Supported: ATX headings, paragraphs, pipe tables (alignment markers ignored), flat bullet / numbered lists, fenced
  code, inline `code`, **bold**, [links](url) and ![images](file.png) (relative to `image_dir`; a missing image
  raises FileNotFoundError). All other text is HTML-escaped.
  """
  lines, out, i = markdown_text.splitlines(), [], 0
  title = 'Report'
  while i < len(lines):
    s = lines[i].strip()
    if not s:
      i += 1
    elif s.startswith('```'):
      j = i + 1
      while j < len(lines) and not lines[j].strip().startswith('```'):
        j += 1
      out.append('<pre><code>' + html.escape('\n'.join(lines[i + 1:j])) + '</code></pre>')
      i = j + 1
    elif m := _HEADING.match(s):
      n = len(m[1])
      if n == 1 and title == 'Report':
        title = m[2]
      out.append(f'<h{n}>{_inline(m[2], image_dir)}</h{n}>')
      i += 1
    elif _starts_block(lines, i) and s.startswith('|'):
      j = i
      while j < len(lines) and lines[j].strip().startswith('|'):
        j += 1
      out.append(_table(lines[i:j], image_dir))
      i = j
    elif _BULLET.match(s) or _ORDERED.match(s):
      pattern, tag = (_BULLET, 'ul') if _BULLET.match(s) else (_ORDERED, 'ol')
      items = []
      while i < len(lines) and lines[i].strip():
        m = pattern.match(lines[i].strip())
        if m:
          items.append(m[1])
        elif lines[i].startswith((' ', '\t')) and not _starts_block(lines, i):
          items[-1] += ' ' + lines[i].strip()  # Continuation of the previous item.
        else:
          break
        i += 1
      out.append(f'<{tag}>\n' + ''.join(f'<li>{_inline(t, image_dir)}</li>\n' for t in items) + f'</{tag}>')
    else:
      para = [s]
      i += 1
      while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
        para.append(lines[i].strip())
        i += 1
      out.append('<p>' + _inline(' '.join(para), image_dir) + '</p>')
  return ('<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
          f'<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n'
          + '\n'.join(out) + '\n</body>\n</html>\n')
