"""What a reproduction will cost before it runs, and how far it has got (docs/method.md §16).

A part's cost is counted in floating-point operations from its sizes alone (no data is loaded,
nothing compiled): float32 for training, attacks and empirical kernels, float64 for
analytic kernels, spectra, Cholesky solves and influence. Dividing by this machine's rates,
measured in a ~1 s calibration (`calibrate`), and by the fraction of those rates the real
programs reach (`EFFICIENCY`, per platform, fitted to measured runs; see the method
document), gives seconds. The estimate is meant to tell minutes from hours (a preset that
needs a GPU), not to be exact: expect a factor of 2 either way.

Counts, with n training points, t test points, N = n + t, d features, m the width, C outputs,
E epochs, S seeds:
  training, per seed:          6·E·n·m·(d + C)            (forward + backward of the head)
  empirical NTK (closed form): 2·N²·(d + m)
  analytic NTK:                2·N²·d   (float64)
  influence (Cholesky, L⁻¹ in place, solves): 2n³/3 + 2·n²·t   (float64)
  KRR with Θ∞ (Cholesky + solve): n³/3 + 2·n²·t   (float64, once per trained model)
  eigendecomposition:          10·n³    (float64)
  attack step (loss gradient): 6·n·m·d, plus 6·n²·d when attention mixes the rows
"""
import time
from typing import Callable, Dict, NamedTuple, Optional, Sequence

import numpy as np

# Fraction of the calibrated peak rate reached by each kind of work (float32, float64), per
# platform. CPU: fitted to the quick preset's parts on 2 cores (docs/method.md §16). GPU/TPU:
# small batched steps are bound by launch latency, not FLOPs; these values were still 2-3x
# optimistic on an H200, so a GPU estimate is a lower bound.
EFFICIENCY = {'cpu': (0.5, 0.5), 'gpu': (0.25, 0.5), 'tpu': (0.25, 0.5)}
# Seconds a part spends whatever its size (loading data, compiling, figures).
OVERHEAD_S = 5.0
DIMS = {'digits': 64, 'mnist': 784, 'mnist_sample': 784, 'mnist_real10k': 784, 'fashion_mnist': 784,
        'cifar10': 3072, 'cifar10_sample': 3072}
STEPS = {'fgsm': 1, 'pgd': 20, 'mim': 10, 'influence': 20}


class Rates(NamedTuple):
  """Measured FLOP/s of a large float32 matrix product and of a float64 one, and the JAX
  platform they were measured on ('cpu', 'gpu', 'tpu')."""
  f32: float
  f64: float
  platform: str = 'cpu'


class Cost(NamedTuple):
  """A part's cells and its operation counts."""
  cells: int
  flop32: float
  flop64: float


def calibrate(size: int = 1024, repeats: int = 3) -> Rates:
  """Times `size × size` matrix products (jitted, after a warm-up) in float32 and float64."""
  import jax
  import jax.numpy as jnp
  rates = []
  for dtype in (jnp.float32, jnp.float64):
    a = jnp.ones((size, size), dtype) / size
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
      f(a).block_until_ready()
    rates.append(2 * size ** 3 * repeats / (time.perf_counter() - t0))
  return Rates(*rates, platform=jax.default_backend())


def seconds(cost: Cost, rates: Rates) -> float:
  """Estimated wall time of a part: `5 s + flop32/(f32·e32) + flop64/(f64·e64)`, with
  `(e32, e64) = EFFICIENCY[rates.platform]` (an unknown platform takes the GPU values)."""
  e32, e64 = EFFICIENCY.get(rates.platform, EFFICIENCY['gpu'])
  return OVERHEAD_S + cost.flop32 / (rates.f32 * e32) + cost.flop64 / (rates.f64 * e64)


def n_features(dataset: str) -> int:
  """d of a dataset, without loading it (an `npz:` file is opened for its header only)."""
  if dataset.startswith('npz:'):
    with np.load(dataset[4:], mmap_mode='r') as f:
      return int(np.prod(f['x'].shape[1:]))
  return DIMS[dataset]


def _train(n, d, m, c, epochs, seeds):
  return 6.0 * epochs * n * m * (d + c) * seeds


def _attack(name, n, d, m, attention):
  return STEPS.get(name, 1) * 6.0 * n * d * (m + (n if attention else 0))


def _influence(n, t):
  return 2 * n ** 3 / 3 + 2.0 * n * n * t


def _krr(n, t):
  return n ** 3 / 3 + 2.0 * n * n * t


def _sizes(config):
  data = config.data
  n, t = data.n_train, data.n_test
  c = 1 if len(data.classes) == 2 else (len(data.classes) or 10)
  return n, t, n + t, n_features(data.dataset), c


def part_cost(kind: str, config) -> Cost:
  """Cost of the part `study.parts.<kind>` on `config` (a `study.configs` dataclass), from its
  sizes as asked (a pool too small shrinks them when the part loads: the estimate is then
  high)."""
  n, t, big_n, d, c = _sizes(config)
  if kind == 'spectral':
    grid = [k for k in config.n_grid if k <= n]
    return Cost(len(grid), 0.0, sum(10.0 * k ** 3 for k in grid) + 2.0 * n * n * d)
  if kind == 'approximation':
    return Cost(1, 0.0, 4 * (10.0 * big_n ** 3 + 2.0 * big_n ** 2 * d))
  if kind == 'ntk_distance':
    models, widths, seeds, epochs = config.models, config.widths, config.seeds, config.train.epochs
    f32 = sum(_train(n, d, m, c, epochs, seeds) + 2 * seeds * 2.0 * big_n ** 2 * (d + m)
              for m in widths) * len(models)
    f64 = len(models) * (2.0 * big_n ** 2 * d + _influence(n, t))
    return Cost(len(models) * len(widths) * seeds, f32, f64)
  if kind == 'malleability':
    models, attacks, eps = config.models, config.attacks, config.epsilons
    m, seeds, epochs = config.width, config.seeds, config.train.epochs
    interventions = config.interventions
    settings = 1 + len(interventions) + bool(config.adversarial_training)
    f32 = f64 = 0.0
    for model in models:
      attention = model != 'relu_mlp'
      train = _train(n, d, m, c, epochs, seeds)
      f32 += train * (1 + len(interventions))            # standard + each retrained set
      if config.adversarial_training:                      # PGD inside every step
        f32 += train * (1 + STEPS['pgd'])
      per_attack = sum(_attack(a, n, d, m, attention) for a in attacks) * len(eps) * seeds
      kernels = (1 + len(attacks) * len(eps)) * seeds * 2.0 * big_n ** 2 * (d + m)
      f32 += settings * (per_attack + kernels)
      if config.retrain:
        f32 += train * len(attacks) * len(eps)
      f64 += settings * seeds * ((1 + len(attacks) * len(eps)) * _influence(n, t) + _krr(n, t))
    cells = len(models) * settings * len(attacks) * len(eps) * seeds
    return Cost(cells, f32, f64)
  if kind == 'sensitivity':
    from ntk_attention.study import sensitivity
    tasks = [x for x in config.tasks.split('+') if x.strip()]
    epochs, m, seeds, attacks = config.train.epochs, config.width, config.seeds, config.attacks
    base = sensitivity.Baseline(width=m, n_train=n, epochs=epochs)
    variations = sensitivity.parse_variations(config.variations or '', base)
    runs = len(tasks) * 2 * (1 + len(variations))            # 2 models × (baseline + each)
    trainings = len(tasks) * 2 * (1 + sum(1 for k, _ in variations
                                          if k in ('init_std', 'epochs', 'width', 'n_train')))
    f32 = (trainings * _train(n, d, m, c, epochs, seeds)
           + runs * seeds * sum(_attack(a, n, d, m, True) for a in attacks)
           + runs * seeds * (1 + len(attacks)) * 2.0 * big_n ** 2 * (d + m))
    f64 = runs * seeds * (1 + len(attacks)) * _influence(n, t)
    cells = len(tasks) * 2 * seeds * (len(attacks) + len(variations) * len(attacks))
    return Cost(cells, f32, f64)
  if kind == 'scaling':    # per n: malleability of both models, one attack at one ε
    m, seeds, epochs = config.width, config.seeds, config.train.epochs
    f32 = f64 = 0.0
    for k in config.n_grid:
      kn = k + t
      for attention in (False, True):
        f32 += (_train(k, d, m, c, epochs, seeds)
                + seeds * (_attack(config.attack, k, d, m, attention) + 2 * 2.0 * kn ** 2 * (d + m)))
        f64 += seeds * (2 * _influence(k, t) + _krr(k, t) + 10.0 * k ** 3)
    return Cost(len(config.n_grid) * 2 * seeds, f32, f64)
  if kind == 'width_threshold':   # per dataset and model: S empirical NTKs per width, training
    sizes = ([config.synthetic_n] * len(config.kappas) if 'synthetic' in config.families else [])
    sizes += list(config.n_grid) if 'real' in config.families else []
    dims = ([config.synthetic_d] * len(config.kappas) if 'synthetic' in config.families else [])
    dims += [d] * len(config.n_grid) if 'real' in config.families else []
    k, s, epochs = len(config.models), config.seeds, config.train.epochs
    f32 = f64 = 0.0
    for n_k, d_k in zip(sizes, dims):
      f32 += k * s * sum(2.0 * n_k * m * d_k + 2.0 * n_k ** 2 * (d_k + m) for m in config.widths)
      f32 += k * sum(_train(n_k, d_k, m, 1, epochs, s) for m in config.train_widths)
      f64 += k * (2.0 * n_k ** 2 * d_k + 10.0 * n_k ** 3 * (1 + s * len(config.widths)))
    cells = len(sizes) * k * (len(config.widths) + len(config.train_widths))
    return Cost(cells, f32, f64)
  if kind == 'joint_search':   # every grid point (+ the rounding rerun) × tasks × both models
    tasks = [x for x in config.tasks.split('+') if x.strip()]
    m, seeds, attacks = config.width, config.seeds, config.attacks
    points = (len(config.eps) * len(config.eps_units) * len(config.init_std)
              * len(config.n_trains) * len(config.epochs) + bool(config.rounding))
    f32 = f64 = 0.0
    for k in config.n_trains:
      kn = k + t
      runs = len(tasks) * 2 * points / len(config.n_trains)
      # ε and its units do not change training: one training per init_std × epochs.
      f32 += len(tasks) * 2 * len(config.init_std) * sum(
          _train(k, d, m, c, e, seeds) for e in config.epochs)
      f32 += runs * seeds * (sum(_attack(a, k, d, m, True) for a in attacks)
                             + (1 + len(attacks)) * 2.0 * kn ** 2 * (d + m))
      f64 += runs * seeds * (1 + len(attacks)) * _influence(k, t)
    k = max(config.n_trains)
    f32 += sum(_train(k, d, m, c, e, seeds) for _, _, e in config.train_search)
    cells = len(tasks) * 2 * seeds * len(attacks) * points + len(config.train_search) * seeds
    return Cost(cells, f32, f64)
  raise ValueError(f'no cost model for {kind!r}')


class RunProgress:
  """One progress line for a whole run: parts done, the current part's cells, elapsed time
  and time left (the current part from its measured time per cell, the parts to come from
  their estimates, scaled by how the finished parts compared with theirs).

  `write(line)` shows the line; on a terminal it overwrites itself, elsewhere a line is
  written at most every `every_s` seconds and when a part ends.
  """

  def __init__(self, estimates: Dict[str, float], write: Optional[Callable] = None,
               every_s: float = 15.0, tty: Optional[bool] = None):
    import sys
    self.estimates = dict(estimates)
    self.names = list(estimates)
    self.tty = sys.stderr.isatty() if tty is None else tty
    self.write = write or (lambda line: sys.stderr.write(line))
    self.every_s = every_s
    self.start = time.monotonic()
    self.finished: Dict[str, float] = {}
    self.current: Optional[str] = None
    self.cells = (0, 0)
    self._part_start = self.start
    self._shown = 0.0

  def begin(self, name: str) -> None:
    self.current, self.cells, self._part_start = name, (0, 0), time.monotonic()
    self.show(force=True)

  def cell(self, progress) -> None:
    """The listener of a part's `progress_lib.Progress`."""
    self.cells = (progress.done, progress.total)
    self._rate = progress.elapsed / max(progress.timed, 1) if progress.timed else None
    self.show()

  def end(self, name: str, cached: bool = False) -> None:
    self.finished[name] = None if cached else time.monotonic() - self._part_start
    self.current, self.cells = None, (0, 0)
    self.show(force=True)

  def left(self) -> float:
    pairs = [(s, self.estimates[k]) for k, s in self.finished.items() if s is not None]
    scale = (sum(s for s, _ in pairs) / max(sum(e for _, e in pairs), 1e-9)) if pairs else 1.0
    todo = [k for k in self.names if k not in self.finished and k != self.current]
    left = scale * sum(self.estimates[k] for k in todo)
    if self.current:
      done, total = self.cells
      rate = getattr(self, '_rate', None)
      if rate and total:
        left += rate * (total - done)
      else:
        left += max(scale * self.estimates[self.current]
                    - (time.monotonic() - self._part_start), 0.0)
    return left

  def line(self) -> str:
    from ntk_attention.study import progress as progress_lib
    elapsed = time.monotonic() - self.start
    text = f'[reproduce] parts {len(self.finished)}/{len(self.names)}'
    if self.current:
      done, total = self.cells
      text += f' · {self.current}' + (f' cells {done}/{total}' if total else '')
    return (text + f' · elapsed {progress_lib.format_duration(elapsed)}'
            f' · ~{progress_lib.format_duration(self.left())} left')

  def show(self, force: bool = False) -> None:
    now = time.monotonic()
    if self.tty:
      self.write('\r\033[K' + self.line())
    elif force or now - self._shown >= self.every_s:
      self.write(self.line() + '\n')
    else:
      return
    self._shown = now

  def close(self) -> None:
    if self.tty:
      self.write('\n')


def dry_run_table(costs: Sequence[tuple], rates: Rates) -> list:
  """Rows (part, cells, GFLOP float32/float64, estimated seconds) of `[(name, Cost)]`."""
  return [{'part': name, 'cells': cost.cells, 'gflop_f32': cost.flop32 / 1e9,
           'gflop_f64': cost.flop64 / 1e9, 'estimate_s': seconds(cost, rates)}
          for name, cost in costs]


__all__ = ['EFFICIENCY', 'Rates', 'Cost', 'calibrate', 'seconds', 'n_features', 'part_cost',
           'RunProgress', 'dry_run_table']
