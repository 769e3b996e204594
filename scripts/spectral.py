"""Spectral analysis of the sample Gram matrix G and of linearized attention's kernel G³
(docs/method.md §5): κ(G), κ_d, κ(G³) measured on the attention features, κ(n) over
--n_grid, spectra of the depth-k and rank-r variants (`study.parts.spectral`).

Outputs in --output_dir: spectral.json, spectral_curve.csv, spectral_spectra.npz,
spectral_spectra.png, spectral_kappa_vs_n.png.

  python scripts/spectral.py --dataset=digits --n_train=1000 --output_dir=results
"""
from absl import flags

import _common
from ntk_attention.study import configs
from ntk_attention.study.parts import spectral

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_string('n_grid', '25,50,100,200,500,1000',
                    'Subset sizes n of the κ(n) curve; values above --n_train are dropped.')
flags.DEFINE_float('rtol', 1e-10, 'Relative tolerance of the numerical rank (λ > rtol·λ_max).')
flags.DEFINE_float('eps', 0.3, 'ε of the v1 width threshold m = κ⁶/ε².')
flags.DEFINE_string('depths', '1,2,3', 'Depths k of shared linearized attention: spectra of G^{2k+1}.')
flags.DEFINE_integer('variant_n', 10, 'Points (the first n of the training set) on which the '
                     'depth-k and rank-r attention kernels are measured against their predicted κ; '
                     'small so that the predictions stay within float64 (κ^p <= 1e12).')
flags.DEFINE_string('ranks', '5,10,20', 'Ranks r of the truncated pattern: spectra of (U_r Λ_r U_rᵀ)³.')


def config() -> configs.Spectral:
  return configs.Spectral(
      data=_common.data_config(), n_grid=_common.ints(FLAGS.n_grid, 'n_grid'), rtol=FLAGS.rtol,
      eps=FLAGS.eps, depths=_common.ints(FLAGS.depths, 'depths'),
      ranks=_common.ints(FLAGS.ranks, 'ranks'), variant_n=FLAGS.variant_n)


def main(argv):
  _common.no_arguments(argv)
  c = config()
  _common.check(spectral, c)
  _common.setup()
  spectral.run(c, FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
