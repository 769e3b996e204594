"""Every number of two result folders, compared: what a change did to the results.

`numbers(folder)` reads every `.json` and `.jsonl` file under `folder` (not `part.json` or
`*_settings.json`, which hold configuration) into `{'file:path': value}`, one entry per
number, boolean or null of the JSON trees (a `.jsonl` file's records are `[i]` in file
order). Provenance, wall times and compile counts are left out: they differ between runs
of the same code (`is_run_specific`).

`flatten(obj)` does the same for one JSON-like tree (e.g. records in memory).
`compare(before, after)` pairs the entries of two folders by key (`compare_numbers`: of two
such dicts). Per number, the relative difference is
`|a − b| / max(|a|, |b|)` (0 when both are 0); a key whose value changes kind (a number
becomes null, a boolean flips) counts as `changed`. The summary gives, overall and per
file: how many values, how many bit-equal, the largest relative and absolute difference
and where, and the keys only one side has.
"""
import json
import math
import os
from typing import Dict, Optional

CONFIG_FILES = ('part.json',)
PER_RUN_FIELDS = ('provenance', 'compilations', 'compiled', 'hostname', 'started', 'finished')


def is_run_specific(key: str) -> bool:
  """True for a field that differs between two runs of the same code: wall times
  (`*_s`, `*seconds`, 'wall', 'time', 'elapsed'), provenance and compile counts."""
  last = key.rsplit('.', 1)[-1].split('[', 1)[0]
  if any(f'.{name}' in key or key.startswith(name) for name in PER_RUN_FIELDS):
    return True
  return last.endswith(('_s', 'seconds', '_time')) or last in ('wall', 'time', 'elapsed')


def flatten(obj, prefix: str = '') -> Dict[str, object]:
  """`{prefix + '.path': value}` of every number, boolean and null of a JSON-like tree,
  run-specific fields left out (`is_run_specific`)."""
  out = {}
  _flatten(obj, prefix, out)
  return out


def _flatten(obj, path: str, out: dict) -> None:
  if isinstance(obj, dict):
    for k, v in obj.items():
      _flatten(v, f'{path}.{k}', out)
  elif isinstance(obj, list):
    for i, v in enumerate(obj):
      _flatten(v, f'{path}[{i}]', out)
  elif obj is None or isinstance(obj, (bool, int, float)):
    if not is_run_specific(path):
      out[path] = obj


def numbers(folder: str) -> Dict[str, object]:
  """`{'relative/file.json:.path': value}` of every number, boolean and null of the result
  files under `folder` (module docstring)."""
  out = {}
  for root, _, files in sorted(os.walk(folder)):
    for name in sorted(files):
      if name in CONFIG_FILES or name.endswith('_settings.json'):
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder)
      if name.endswith('.json'):
        with open(path) as f:
          out.update(flatten(json.load(f), f'{rel}:'))
      elif name.endswith('.jsonl'):
        with open(path) as f:
          out.update(flatten([json.loads(line) for line in f if line.strip()], f'{rel}:'))
  return out


def _rel(a: float, b: float) -> float:
  if a == b or (math.isnan(a) and math.isnan(b)):
    return 0.0
  scale = max(abs(a), abs(b))
  return abs(a - b) / scale if scale else 0.0


def compare(before: str, after: str) -> dict:
  """The summary of module docstring, for the result folders `before` and `after`."""
  return dict(before=before, after=after, **compare_numbers(numbers(before), numbers(after)))


def compare_numbers(a: Dict[str, object], b: Dict[str, object]) -> dict:
  """The summary of module docstring (`total`, per-file `files`, `only_before`,
  `only_after`) of two `{key: value}` dicts as `numbers` or `flatten` make them; a key's
  file is the part before its first ':'."""
  files: Dict[str, dict] = {}
  total = {'values': 0, 'equal': 0, 'changed': 0, 'max_rel_diff': 0.0, 'max_abs_diff': 0.0,
           'worst': None}
  for key in sorted(set(a) & set(b)):
    file = key.split(':', 1)[0]
    row = files.setdefault(file, {'values': 0, 'equal': 0, 'changed': 0, 'max_rel_diff': 0.0,
                                  'max_abs_diff': 0.0, 'worst': None})
    u, v = a[key], b[key]
    for acc in (row, total):
      acc['values'] += 1
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (u, v))
    if u == v or (numeric and math.isnan(u) and math.isnan(v)):
      for acc in (row, total):
        acc['equal'] += 1
      continue
    if not numeric:
      for acc in (row, total):
        acc['changed'] += 1
        shown = acc.setdefault('changed_keys', [])
        if len(shown) < 5:
          shown.append(key)
      continue
    rel, diff = _rel(float(u), float(v)), abs(float(u) - float(v))
    for acc in (row, total):
      acc['max_abs_diff'] = max(acc['max_abs_diff'], diff)
      if rel >= acc['max_rel_diff']:
        acc['max_rel_diff'], acc['worst'] = rel, {'key': key, 'before': u, 'after': v}
  return {'total': total, 'files': files, 'only_before': sorted(set(a) - set(b)),
          'only_after': sorted(set(b) - set(a))}


def table(summary: dict, limit: Optional[int] = None) -> str:
  """The summary as a fixed-width table: one line per file whose values are not all equal
  (then a total line), and the keys only one side has."""
  lines = [f'{"file":48s} {"values":>7s} {"equal":>7s} {"changed":>7s} {"max rel":>9s}']
  rows = [(f, r) for f, r in summary['files'].items() if r['equal'] != r['values']]
  for f, r in rows[:limit]:
    lines.append(f'{f[-48:]:48s} {r["values"]:7d} {r["equal"]:7d} {r["changed"]:7d} '
                 f'{r["max_rel_diff"]:9.2e}')
  t = summary['total']
  lines.append(f'{"all " + str(len(summary["files"])) + " files":48s} {t["values"]:7d} '
               f'{t["equal"]:7d} {t["changed"]:7d} {t["max_rel_diff"]:9.2e}')
  if t['worst']:
    lines.append(f'largest relative difference: {t["worst"]["key"]} '
                 f'({t["worst"]["before"]!r} -> {t["worst"]["after"]!r})')
  for side in ('only_before', 'only_after'):
    if summary[side]:
      lines.append(f'{side}: {len(summary[side])} keys, e.g. {summary[side][:3]}')
  return '\n'.join(lines)


__all__ = ['flatten', 'numbers', 'compare', 'compare_numbers', 'table',
           'is_run_specific']
