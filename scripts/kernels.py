"""Compare analytic (infinite-width) and empirical (finite-width) NTKs at initialisation
(docs/method.md §4, §7): the relative Frobenius distance per model × width × seed
(`study.parts.kernels`).

Outputs in --output_dir: kernels_records.csv (one row per model x width x seed), kernels.csv and
kernels.json (mean and std over seeds), kernels_distance.png; --save_kernels=FILE.npz writes the
train-block analytic NTK per model (key `analytic_<model>`) and the seed-0 empirical train block
per model x width (key `empirical_<model>_<width>`).

  python scripts/kernels.py --dataset=digits --models=relu_mlp,mlp_attn --widths=16,64,256,1024,4096
"""
from absl import flags

import _common
from ntk_attention import kernels as kernels_lib
from ntk_attention.study import configs
from ntk_attention.study.parts import kernels

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_string('models', 'relu_mlp,mlp_attn',
                    'Comma-separated models: ' + _common.MODELS_HELP + '.')
flags.DEFINE_string('widths', '16,64,256,1024,4096', 'Comma-separated hidden widths m.')
flags.DEFINE_integer('seeds', 4, 'Initialisations per width (PRNGKey(--seed + s)).')
flags.DEFINE_string('method', 'auto',
                    "Empirical NTK: 'auto' (closed_form: every model has one) or one of "
                    f"{', '.join(kernels_lib.METHODS)}.")
flags.DEFINE_string('save_kernels', '',
                    "'' or FILE.npz (path as given, relative to the working directory): train-block "
                    'analytic NTK per model and seed-0 empirical train block per model x width.')
flags.DEFINE_integer('out_dim', 0, 'Outputs C of the readout; 0 = number of classes (binary: 1).')
_common.define_model_flags()


def config() -> configs.Kernels:
  return configs.Kernels(
      data=_common.data_config(), models=_common.names(FLAGS.models),
      widths=_common.ints(FLAGS.widths, 'widths'), seeds=FLAGS.seeds, method=FLAGS.method,
      save_kernels=FLAGS.save_kernels, out_dim=FLAGS.out_dim,
      options=_common.model_options())


def main(argv):
  _common.no_arguments(argv)
  c = config()
  _common.check(kernels, c)
  _common.setup()
  kernels.run(c, FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
