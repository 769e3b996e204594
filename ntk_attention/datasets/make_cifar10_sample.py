"""Regenerates cifar10_sample.npz from the 4,660-image partial CIFAR-10 file (see README.md).

  python -m ntk_attention.datasets.make_cifar10_sample PATH/cifar10_train_partial.npz OUT.npz

100 images per class, drawn without replacement by np.random.default_rng(0) (classes in
order 0..9), kept in their original order. The arrays are identical on every run; the
compressed bytes may differ under another numpy or zlib version.
"""
import sys

import numpy as np


def make(src: str, dst: str) -> None:
  with np.load(src) as f:
    x, y = f['x'], f['y']
  rng = np.random.default_rng(0)
  idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 100, replace=False)
                                for c in range(10)]))
  np.savez_compressed(dst, x=x[idx], y=y[idx])


if __name__ == '__main__':
  make(sys.argv[1], sys.argv[2])
