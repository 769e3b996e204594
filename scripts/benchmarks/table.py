"""The fixed-width table scripts/benchmark.py prints at the end of a run."""
from typing import List

COLUMNS = (('case', 'case', 46), ('sizes', 'sizes', 38), ('baseline_s', 'old s', 9),
           ('new_s', 'new s', 9), ('speedup', 'speedup', 9),
           ('new_compile_s', 'compile', 8), ('diff', 'max diff', 9),
           ('timed_calls', 'timed', 6))


def _cell(v) -> str:
  if v is None:
    return '-'
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, float):
    return f'{v:.3g}' if abs(v) < 1e4 else f'{v:.3e}'
  return str(v)


def format_table(rows: List[dict]) -> str:
  """Fixed-width text table; `max diff` is max_rel_diff or agreement, and notes follow."""
  lines = ['  '.join(h.ljust(w) for _, h, w in COLUMNS)]
  lines.append('  '.join('-' * w for _, _, w in COLUMNS))
  for row in rows:
    r = dict(row, diff=row.get('max_rel_diff', row.get('agreement')))
    lines.append('  '.join(_cell(r.get(k)).ljust(w) for k, _, w in COLUMNS))
    extra = [f"{k}={_cell(row[k])}" for k in ('target', 'meets_target', 'note')
             if row.get(k) not in (None, '')]
    if extra:
      lines.append('    ' + '; '.join(extra))
  return '\n'.join(lines)
