"""Entry `training`: all seeds of a width in one vmapped program vs a loop over seeds."""
from typing import List

import numpy as np

from benchmarks import harness
from ntk_attention import data
from ntk_attention import models
from ntk_attention import training

SIZES = {'full': dict(n=1000, epochs=50, seeds=4, widths=(64, 1024, 4096)),
         'quick': dict(n=100, epochs=3, seeds=2, widths=(16, 64))}


def run(args: harness.Args) -> List[dict]:
  """All seeds of a width in one vmapped program vs a sequential loop over the same seeds
  (per-seed parameters must agree), and training throughput (samples·epochs/s) per width."""
  size = SIZES['quick' if args.quick else 'full']
  ds = data.load('digits', n_train=size['n'], n_test=10, seed=args.seed)
  y = data.targets(ds.y_train, ds.num_classes)
  config = training.TrainConfig(epochs=size['epochs'])
  seeds = list(range(size['seeds']))
  rows = []
  for name in ('relu_mlp', 'mlp_attn'):
    for width in size['widths']:
      model = models.build(name, width, ds.num_classes)

      def vmapped():
        return training.train(model, training.seed_keys(seeds), ds.x_train, y, config).params

      def sequential():
        return [training.train(model, training.seed_keys([s]), ds.x_train, y, config).params
                for s in seeds]

      new = harness.measure(vmapped, (), args)
      old = harness.measure(sequential, (), args)
      w_new = np.asarray(new.result[1][0][0])
      w_old = np.stack([np.asarray(p[1][0][0][0]) for p in old.result])
      samples = len(seeds) * size['n'] * size['epochs']
      rows.append(harness.make_row(
          'training', f'{name}: vmapped seeds vs sequential loop',
          f"n={size['n']} d={ds.d} m={width} C={ds.num_classes} seeds={len(seeds)} "
          f"epochs={size['epochs']} float32", 'sequential', old, 'vmap', new,
          max_rel_diff=harness.max_rel_diff(w_new, w_old),
          note=f'throughput {samples / new.median_s:.3g} samples·epochs/s (vmapped), '
               f'{samples / old.median_s:.3g} (sequential)',
          throughput_vmapped=samples / new.median_s,
          throughput_sequential=samples / old.median_s))
  return rows
