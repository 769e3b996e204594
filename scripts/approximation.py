r"""Approximation power of the data-dependent kernel (docs/method.md §1 claim 5, the "power"
side; `study.parts.approximation`): kernel ridge regression and kernel–target alignment of the
linear kernel G, the attention NNGP G³, the ReLU NTK and the MLP-Attn NTK on the real task
and on synthetic targets aligned with G's top --k_top eigenvectors or random.

  python scripts/approximation.py --dataset=digits --n_train=1000 --n_test=500 \
      --output_dir=results/approximation

Writes approximation.json (summary, per-seed records, provenance), approximation.csv (summary),
approximation.png (grouped bars: kernels × {real, aligned, random} relative test error) and
approximation_alignment.png (the same bars for the centred alignment).
"""
from absl import flags
from absl import logging

import _common
from ntk_attention.study import configs
from ntk_attention.study.parts import approximation

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_float('ridge', 1e-3, 'Ridge λ (× mean diag K) of kernel ridge regression [choice].')
flags.DEFINE_integer('k_top', 5, "Top eigenvectors of G spanned by the 'aligned' synthetic targets.")
flags.DEFINE_integer('synthetic_seeds', 3, 'Draws of each synthetic task (seeds 0..S-1).')
flags.DEFINE_float('noise', 0.0, 'Std of Gaussian noise added to the synthetic targets (RMS 1).')


def config() -> configs.Approximation:
  return configs.Approximation(data=_common.data_config(), ridge=FLAGS.ridge, k_top=FLAGS.k_top,
                               synthetic_seeds=FLAGS.synthetic_seeds, noise=FLAGS.noise)


def main(argv):
  _common.no_arguments(argv)
  c = config()
  _common.check(approximation, c)
  _common.setup()
  result = approximation.run(c, FLAGS.output_dir)
  from ntk_attention.study.report import page
  print(page.markdown_table(
      result['summary'],
      ['task', 'kernel', 'relative_mse_mean', 'relative_mse_std', 'accuracy', 'alignment_mean',
       'alignment_std'],
      ['task', 'kernel', 'rel. test error', '± std', 'accuracy', 'alignment', '± std']))
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
