"""Writes an `npz:` dataset of pixel-shifted copies of a bundled sample, for scale tests.

Real MNIST beyond the 5,000 bundled images cannot be downloaded everywhere; to measure
time and memory at n = 20,000 and more, this makes copies of every image of
`--source` translated by each of `--shifts` (dx, dy) pixels (zeros shifted in), labels
unchanged. The copies are NOT new data: near-duplicates make the Gram matrix worse
conditioned than real MNIST at the same n. Use it for wall time and memory, say so.

  python scripts/shifted_copies.py --output=/tmp/mnist_shift25k.npz   # 5 x 5,000 images
  python scripts/malleability.py --dataset=npz:/tmp/mnist_shift25k.npz --n_train=20000 ...
"""
import os

from absl import app
from absl import flags
import numpy as np

import _common

FLAGS = _common.script_flags(__name__)
flags.DEFINE_enum('source', 'mnist_sample', ['mnist_sample', 'cifar10_sample'],
                  'Bundled sample to copy.', flag_values=FLAGS)
flags.DEFINE_string('shifts', '0,0;1,0;-1,0;0,1;0,-1',
                    'Semicolon list of dx,dy pixel translations; one copy per shift.',
                    flag_values=FLAGS)
flags.DEFINE_string('output', '', 'FILE.npz to write (x uint8 (N, H, W[, C]), y (N,)).',
                    flag_values=FLAGS)


def parse_shifts(text: str):
  try:
    shifts = [tuple(int(v) for v in part.split(',')) for part in text.split(';') if part.strip()]
  except ValueError:
    shifts = []
  if not shifts or any(len(s) != 2 for s in shifts):
    raise app.UsageError(f'--shifts must be a semicolon list of dx,dy pairs, got {text!r}.')
  return shifts


def shift(x, dx: int, dy: int):
  """Translate images `(N, H, W[, C])` by (dx, dy) pixels, filling with zeros."""
  out = np.zeros_like(x)
  h, w = x.shape[1:3]
  out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
  return out


def main(argv, context=None):
  del argv, context
  from ntk_attention import data
  shifts = parse_shifts(FLAGS.shifts)
  if not FLAGS.output.endswith('.npz'):
    raise app.UsageError(f'--output must name a .npz file, got {FLAGS.output!r}.')
  _common.begin_work()
  with np.load(data.bundled_path(FLAGS.source)) as f:
    x, y = f['x'], f['y']
  xs = np.concatenate([shift(x, dx, dy) for dx, dy in shifts])
  tmp = FLAGS.output[:-len('.npz')] + '.tmp.npz'
  np.savez(tmp, x=xs, y=np.tile(y, len(shifts)))
  os.replace(tmp, FLAGS.output)   # atomically: a half-written file is never read as data
  print(f'wrote {FLAGS.output}: {len(xs)} images ({len(shifts)} shifts of {len(x)} '
        f'{FLAGS.source} images)')


if __name__ == '__main__':
  _common.run(main)
