"""Progress lines for long sweeps and human-readable durations (floor 4)."""
import math
import time


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


