"""Malleability against n: flip rate, Spearman, candidate / reference ratio (by default
MLP-Attn / 2L-ReLU, --models), κ_d(G) and the kernel distance over `--n_grid`
(docs/method.md §15; `study.parts.scaling`).

  python scripts/scaling.py --n_grid=250,500,1000,2000,4000 --seeds=3 \
      --output_dir=results/scaling

Training subsets are nested in n (one seeded permutation of a pool of max(n_grid) points,
so --n_train is not used); the test set (--n_test) is the same for every n. Writes
scaling.jsonl (one record per n × model × seed, appended as it is measured; `--resume` skips
those already there), scaling.json / .csv (one row per n), scaling.md and scaling.png (flip
rates and their ratio, log n axis). Trainings go through the run's training cache
(`--train_cache`, docs/method.md §16).
"""
import os

from absl import flags

import _common
from ntk_attention import devices
from ntk_attention.study import configs
from ntk_attention.study.parts import scaling

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_string('n_grid', '250,500,1000,2000,4000', 'Comma list of training-set sizes n.')
flags.DEFINE_integer('seeds', 3, 'Model seeds per n (trained together, vmapped).')
flags.DEFINE_integer('width', 1024, 'Hidden width m [choice].')
flags.DEFINE_string('models', 'relu_mlp,mlp_attn',
                    'The two models compared, reference then candidate (the ratio is candidate / '
                    'reference): ' + _common.MODELS_HELP + '.')
flags.DEFINE_enum('attack', 'pgd', ['fgsm', 'pgd', 'mim'], 'Attack on the top-τ set.')
flags.DEFINE_float('eps', 0.3, 'l_inf budget, in --eps_units [choice: the study, 0.3].')
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'], 'Units of ε (docs/method.md §9).')
flags.DEFINE_float('tau', 0.1, 'Fraction of most influential training points attacked.')
flags.DEFINE_float('max_memory_gb', 0.0, 'Memory budget (GB) of kernels and exact influence; '
                   '0 = 80% of physical memory (docs/method.md §13).')
flags.DEFINE_bool('resume', False, 'Skip records already in scaling.jsonl.')
_common.define_training_flags()
_common.define_model_flags()
_common.define_dry_run_flag()
_common.define_process_flags()


def config() -> configs.Scaling:
  return configs.Scaling(
      data=_common.data_config(), train=_common.train_config(),
      n_grid=_common.ints(FLAGS.n_grid, 'n_grid'), seeds=FLAGS.seeds, width=FLAGS.width,
      models=_common.names(FLAGS.models), attack=FLAGS.attack, eps=FLAGS.eps,
      eps_units=FLAGS.eps_units, tau=FLAGS.tau, max_memory_gb=FLAGS.max_memory_gb,
      options=_common.model_options())


def main(argv):
  del argv
  c = config()
  if FLAGS.dry_run:
    print(_common.dry_run(scaling.NAME, c, max(c.n_grid, default=0), c.data.n_test,
                          FLAGS.max_memory_gb,
                          checks=_common.checks(scaling, c, '--n_grid: ')))
    return
  _common.check(scaling, c, '--n_grid: ')
  cleanup = _common.start_processes()
  _common.setup()
  try:
    scaling.run(c, FLAGS.output_dir, _common.context(), FLAGS.resume)
    if devices.is_writer():
      with open(os.path.join(FLAGS.output_dir, scaling.NAME + '.md')) as f:
        print(f.read())
  finally:
    cleanup()


if __name__ == '__main__':
  _common.run(main)
