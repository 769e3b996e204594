r"""How robust is the study's 6–9×? Vary one unpublished choice at a time (docs/method.md §12;
`study.parts.sensitivity`).

Around a baseline (flags below, the study's conventions by default), each variation changes
one choice — ε, its units, τ, init_std, epochs, width, n_train, ridge, score, kernel,
retrain, PGD steps — and reruns the malleability protocol for two models (--models:
reference, candidate; by default 2L-ReLU and MLP-Attn) on every task (10 classes and a
binary pair by default), with every attack, over the same seeds.
Models are trained once per distinct training setting and shared between variations.

  python scripts/sensitivity.py --dataset=mnist_sample --output_dir=results/sensitivity
  python scripts/sensitivity.py --dataset=digits --n_train=200 --n_test=100 --epochs=20 \
      --width=128 --seeds=2 --variations="eps=0.1;init_std=1" --output_dir=/tmp/sens

Writes sensitivity.jsonl (one record per task × variation × model × attack × seed, appended
as computed; --resume skips them), sensitivity.json / .csv (per task × variation × attack:
both flip rates, the candidate / reference (MLP-Attn / 2L-ReLU) ratio with its 95%
bootstrap interval, and the calibration against the study), sensitivity_table.md and
sensitivity_tornado.png.
"""
import os

from absl import flags
from absl import logging

import _common
from ntk_attention.study import configs
from ntk_attention.study.parts import sensitivity

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_string('tasks', 'all+binary',
                    "'+'-separated tasks: 'all' (every class), a class pair like '3,8', or "
                    "'binary' (the study's pair for --dataset: 3,8 on MNIST, 1,0 on CIFAR-10).")
flags.DEFINE_string('variations', '',
                    "One-at-a-time variations 'CHOICE=V1,V2;CHOICE=V' (choices: eps, eps_units, "
                    "tau, init_std, epochs, width, n_train, ridge, score, kernel, retrain, "
                    "pgd_steps); '' = the default grid around the baseline.")
flags.DEFINE_string('attacks', 'fgsm,pgd,mim', "Comma list of 'fgsm', 'pgd', 'mim'.")
flags.DEFINE_string('models', 'relu_mlp,mlp_attn',
                    'The two models compared, reference then candidate (the ratio is candidate / '
                    'reference): ' + _common.MODELS_HELP + '.')
flags.DEFINE_integer('seeds', 3, 'Seeds (trained together, vmapped).')
flags.DEFINE_integer('width', 1024, 'Baseline width [choice].')
flags.DEFINE_float('eps', 0.3, 'Baseline ε, in --eps_units [choice].')
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'], 'Baseline units of ε [choice].')
flags.DEFINE_float('tau', 0.1, 'Baseline top-τ fraction [choice].')
flags.DEFINE_float('ridge', 1e-3, 'Baseline KRR ridge λ (× mean diag K) [choice].')
flags.DEFINE_enum('score', 'mean', ['mean', 'per_point'], 'Baseline influence score [choice].')
flags.DEFINE_enum('kernel', 'empirical', ['empirical', 'analytic'], 'Baseline kernel [choice].')
flags.DEFINE_bool('retrain', False, 'Baseline: retrain on the perturbed set [choice].')
flags.DEFINE_integer('pgd_steps', 20, 'Baseline PGD steps [choice].')
flags.DEFINE_bool('resume', False, 'Skip records already in sensitivity.jsonl.')
_common.define_training_flags()
_common.define_model_flags()


def config() -> configs.Sensitivity:
  return configs.Sensitivity(
      data=_common.data_config(), train=_common.train_config(), tasks=FLAGS.tasks,
      variations=FLAGS.variations, attacks=_common.names(FLAGS.attacks),
      models=_common.names(FLAGS.models), seeds=FLAGS.seeds, width=FLAGS.width,
      eps=FLAGS.eps, eps_units=FLAGS.eps_units, tau=FLAGS.tau, ridge=FLAGS.ridge,
      score=FLAGS.score, kernel=FLAGS.kernel, retrain=FLAGS.retrain, pgd_steps=FLAGS.pgd_steps,
      options=_common.model_options())


def main(argv):
  del argv
  c = config()
  _common.check(sensitivity, c)
  _common.setup()
  sensitivity.run(c, FLAGS.output_dir, _common.context(), FLAGS.resume)
  with open(os.path.join(FLAGS.output_dir, sensitivity.NAME + '_table.md')) as f:
    print(f.read())
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
