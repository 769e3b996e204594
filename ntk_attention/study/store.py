"""The results store (floor 4): atomic files, strict JSON, CSV, npz, and the append-only JSONL
store of finished cells (per-group summaries of their metrics: `ntk_attention.stats.summarize`).

Conventions:
  * Every file write is atomic: the bytes go to a temp file in the same folder, which is flushed, fsynced and then
    `os.replace`d over the target, so a crash leaves either the old file or the new one, never half of one.
  * JSON is strict and numeric fields hold numbers or null: a non-finite float is written as null, and in an
    object a field `<key>_null_because` ('infinite', 'negative infinite', 'not a number') says why;
    `read_json` / `JsonlStore.records` turn exactly those pairs back into floats. numpy scalars and
    arrays (and anything with `__array__`, e.g. jax arrays) become Python numbers and lists; tuples become lists.
"""
import csv
import io
import json
import math
import os
import tempfile
import warnings
from typing import Sequence

import numpy as np

from ntk_attention import stats

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


def write_npz(path, *arrays, compress: bool = True, **named) -> None:
  """Atomically writes numpy arrays to an `.npz` file: positional ones as `arr_0, arr_1, …`
  (numpy's names), keyword ones by name; compressed unless `compress=False`."""
  buf = io.BytesIO()
  save = np.savez_compressed if compress else np.savez
  save(buf, *[np.asarray(a) for a in arrays], **{k: np.asarray(v) for k, v in named.items()})
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
    """Keys (`stats.group_key`) of every stored record, to skip finished cells on --resume."""
    return {stats.group_key(r, key_fields) for r in self.records()}

  def reset(self) -> None:
    """Truncates the store to empty (a fresh sweep, not resuming)."""
    _atomic_write_bytes(self.path, b'')
