"""The width at which a network enters its kernel regime, against the condition number κ of
the Gram matrix (docs/method.md §18; `study.parts.width_threshold`).

  python scripts/width_threshold.py --output_dir=results/width_threshold

Per dataset — synthetic unit-norm inputs with κ(G) on --kappas, nested subsets of --dataset
of the sizes --n_grid — and model: ‖Θ_m − Θ‖₂/λ_min(Θ) at initialisation over --widths ×
--seeds, the relative function distance after SGD on the MSE over --train_widths, their
slopes in m, the widths m*(--eps) where they reach ε (observed or extrapolated, marked), and
the exponent p of m* ∝ κ^p with its bootstrap interval over seeds, beside the theorem's
(6 for MLP-Attn, 0 for 2L-ReLU). Writes width_threshold.jsonl (one record per dataset ×
model × criterion, appended as measured; --resume skips those already there),
width_threshold.json, .csv, .md and .png.
"""
import os

from absl import flags

import _common
from ntk_attention import data
from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import parts
from ntk_attention.study.parts import width_threshold

FLAGS = flags.FLAGS
_DEFAULT = configs.WidthThreshold()
flags.DEFINE_string('dataset', 'mnist_sample', 'The real family\'s data: ' + data.DATASET_HELP)
flags.DEFINE_string('classes', '', "Class ids to keep, e.g. '3,8'; '' = all.")
flags.DEFINE_integer('seed', 0, 'Seed of the data: the real subsets, the synthetic inputs, the '
                     'targets, and the base of the model seeds.')
flags.DEFINE_string('data_dir', None, 'tensorflow-datasets data folder.')
flags.DEFINE_string('output_dir', 'results', 'Folder for JSON, CSV and figures.')
_common.define_precision_flag()
flags.DEFINE_string('models', 'relu_mlp,mlp_attn', 'Models: ' + _common.MODELS_HELP + '.')
flags.DEFINE_string('families', 'synthetic,real',
                    "'synthetic' (κ(G) on --kappas) and/or 'real' (subsets of --dataset).")
flags.DEFINE_string('kappas', ','.join(f'{k:g}' for k in _DEFAULT.kappas),
                    'Condition numbers κ(G) of the synthetic inputs.')
flags.DEFINE_integer('synthetic_n', _DEFAULT.synthetic_n, 'Points of each synthetic dataset.')
flags.DEFINE_integer('synthetic_d', _DEFAULT.synthetic_d, 'Dimension of the synthetic inputs (>= n).')
flags.DEFINE_string('n_grid', ','.join(map(str, _DEFAULT.n_grid)),
                    'Sizes n of the nested real subsets (their κ_d(G) grows with n).')
flags.DEFINE_string('widths', ','.join(map(str, _DEFAULT.widths)),
                    'Widths m of the criterion at initialisation.')
flags.DEFINE_integer('seeds', _DEFAULT.seeds, 'Initialisations per width (>= 3 for intervals).')
flags.DEFINE_float('eps', _DEFAULT.eps, 'ε of the threshold m*(ε) [choice].')
flags.DEFINE_string('train_widths', ','.join(map(str, _DEFAULT.train_widths)),
                    "Widths of the after-training distance; 'none' = skip training.")
flags.DEFINE_bool('resume', False, 'Skip records already in width_threshold.jsonl.')
_DEFAULT_TRAIN = _DEFAULT.train
flags.DEFINE_integer('epochs', _DEFAULT_TRAIN.epochs, 'Training epochs (after-training distance).')
flags.DEFINE_integer('batch_size', _DEFAULT_TRAIN.batch_size,
                     'Minibatch size (a batch larger than n trains full-batch).')
flags.DEFINE_float('lr', _DEFAULT_TRAIN.lr, 'SGD learning rate (small: the kernel-regime check).')
flags.DEFINE_float('weight_decay', _DEFAULT_TRAIN.weight_decay,
                   'L2 weight decay (the gradient-flow predictor ignores it; keep 0).')
flags.DEFINE_enum('optimizer', _DEFAULT_TRAIN.optimizer, ['adam', 'sgd'],
                  "'sgd' (required with --train_widths: the gradient-flow comparison).")
flags.DEFINE_enum('loss', _DEFAULT_TRAIN.loss, ['auto', 'mse', 'xent'], "'mse' (required with "
                  '--train_widths).')
flags.DEFINE_string('train_cache', '', 'Folder of trained parameters (docs/method.md §16); '
                    "'' = memory only.")
_common.define_model_flags()
FLAGS.set_default('init_std', _DEFAULT.options.init_std)


def config() -> configs.WidthThreshold:
  train_widths = ('' if FLAGS.train_widths.strip().lower() == 'none' else FLAGS.train_widths)
  try:
    classes = data.parse_classes(FLAGS.classes)
  except ValueError as e:
    raise ValueError(f'--classes: {e}') from None
  return configs.WidthThreshold(
      data=configs.Data(dataset=FLAGS.dataset, classes=tuple(classes or ()), n_test=1,
                        seed=FLAGS.seed, data_dir=FLAGS.data_dir, fit_to_pool=False),
      train=training.TrainConfig(optimizer=FLAGS.optimizer, lr=FLAGS.lr, epochs=FLAGS.epochs,
                                 batch_size=FLAGS.batch_size, weight_decay=FLAGS.weight_decay,
                                 loss=FLAGS.loss),
      models=_common.names(FLAGS.models), families=_common.names(FLAGS.families),
      kappas=_common.floats(FLAGS.kappas, 'kappas'), synthetic_n=FLAGS.synthetic_n,
      synthetic_d=FLAGS.synthetic_d, n_grid=_common.ints(FLAGS.n_grid, 'n_grid'),
      widths=_common.ints(FLAGS.widths, 'widths'), seeds=FLAGS.seeds, eps=FLAGS.eps,
      train_widths=_common.ints(train_widths, 'train_widths'), options=_common.model_options())


def main(argv):
  _common.no_arguments(argv)
  c = config()
  width_threshold.check(c)
  parts.check_pools(width_threshold.data_needs(c), c.data.seed, c.data.data_dir, '--n_grid: ')
  _common.setup()
  width_threshold.run(c, FLAGS.output_dir, _common.context(), FLAGS.resume)
  with open(os.path.join(FLAGS.output_dir, width_threshold.NAME + '.md')) as f:
    print(f.read())


if __name__ == '__main__':
  _common.run(main)
