r"""Influence malleability of 2L-ReLU and MLP-Attn under FGSM / PGD / MIM (docs/method.md §8–10;
`study.parts.malleability`).

The study's Tables 2–4: train each model (all seeds vmapped), compute exact NTK
leave-one-out influence of every training point, attack the top-τ most influential
points within ε, recompute kernel and influence, and report how many influence signs
flip (plus Spearman and top-k overlap). Optional: --retrain, --interventions,
--adversarial_training, and the influence-targeted attack (--attacks=...,influence).

  python scripts/malleability.py --dataset=digits --output_dir=results/malleability
  python scripts/malleability.py --dataset=digits --classes=3,8 --output_dir=results/m38

Writes malleability.jsonl (one record per task × model × setting × attack × ε × seed,
appended as computed; --resume skips them), malleability.json / .csv (mean ± std over
seeds), malleability_table.md (laid out like the study, its numbers beside ours) and
figures: flip rates by attack and model, flip rate against ε, influence before vs after.
"""
import dataclasses
import os

from absl import flags
from absl import logging

import _common
from ntk_attention import attacks
from ntk_attention import devices
from ntk_attention import malleability as malleability_lib
from ntk_attention.study import configs
from ntk_attention.study.parts import malleability

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_string('models', 'relu_mlp,mlp_attn', 'Comma list of models: '
                    + _common.MODELS_HELP + ', e.g. relu_mlp,my_package.nets:deep.')
flags.DEFINE_integer('width', 1024, 'Hidden width m [choice].')
flags.DEFINE_integer('seeds', 3, 'Seeds (trained together, vmapped).')
flags.DEFINE_string('attacks', 'fgsm,pgd,mim',
                    "Comma list of 'fgsm', 'pgd', 'mim', 'influence' (influence-targeted PGD).")
flags.DEFINE_string('epsilons', '0.3', 'Comma list of l_inf budgets, in --eps_units [choice].')
flags.DEFINE_enum('eps_units', 'pixel', ['pixel', 'std'],
                  "Units of ε [choice, docs/method.md §9]: 'pixel' ([0, 1] pixels) or 'std' "
                  "(the training pixels' standard deviation, as in a mean/std-normalised "
                  "pipeline: MNIST ε = 0.3 -> ~0.092 pixels). Perturbations stay in [0, 1].")
flags.DEFINE_float('tau', 0.1, 'Fraction of most influential training points attacked [choice].')
flags.DEFINE_enum('kernel', 'empirical', ['empirical', 'analytic'],
                  'Influence from the empirical NTK at the trained parameters, or the analytic.')
flags.DEFINE_float('ridge', 1e-3, 'KRR ridge λ (× mean diag K) of the influence [choice].')
flags.DEFINE_integer('topk', 0, 'k of the top-k overlap; 0 = the size of the top-τ set [choice].')
flags.DEFINE_enum('score', 'mean', ['mean', 'per_point'],
                  "Influence compared: 'mean' over the test set per training point [choice], or "
                  "'per_point' (every test × training entry).")
flags.DEFINE_integer('pgd_steps', 20, 'PGD steps [choice].')
flags.DEFINE_float('pgd_step_size', None, 'PGD step size; default 2.5·ε/steps [choice].')
flags.DEFINE_bool('pgd_random_start', True, 'PGD uniform random start in the ε-ball [choice].')
flags.DEFINE_integer('mim_steps', 10, 'MIM steps [choice].')
flags.DEFINE_float('mim_step_size', None, 'MIM step size; default ε/steps [choice].')
flags.DEFINE_float('mim_momentum', 1.0, 'MIM momentum μ [choice].')
flags.DEFINE_bool('retrain', False, 'Retrain on the perturbed set before recomputing influence.')
flags.DEFINE_string('interventions', '',
                    "Comma list of 'curated', 'transformed', 'adversarial' (each retrained).")
flags.DEFINE_bool('adversarial_training', False, 'Also run PGD adversarial training (pgd_at).')
flags.DEFINE_string('save_arrays', '', 'FILE.npz: kernels, targets and influence vectors (seed 0).')
flags.DEFINE_bool('resume', False, 'Skip records already in malleability.jsonl.')
flags.DEFINE_float('max_memory_gb', 0.0, 'Memory budget (GB) of the float64 kernels and exact '
                   'influence: sizes that would not fit are refused before any work, naming '
                   'the largest n_train that fits; kernels are built in row blocks within it. '
                   '0 = 80% of physical memory (docs/method.md §13).')
_common.define_training_flags()
_common.define_model_flags()
_common.define_dry_run_flag()
_common.define_process_flags()


def config() -> configs.Malleability:
  attack = attacks.AttackConfig(
      pgd_steps=FLAGS.pgd_steps, pgd_step_size=FLAGS.pgd_step_size,
      pgd_random_start=FLAGS.pgd_random_start, mim_steps=FLAGS.mim_steps,
      mim_step_size=FLAGS.mim_step_size, mim_momentum=FLAGS.mim_momentum)
  setup = malleability_lib.Setup(
      tau=FLAGS.tau, kernel=FLAGS.kernel, ridge=FLAGS.ridge, attack=attack, score=FLAGS.score,
      topk=FLAGS.topk, eps_units=FLAGS.eps_units, max_memory_gb=FLAGS.max_memory_gb)
  return configs.Malleability(
      data=_common.data_config(), train=_common.train_config(),
      models=_common.names(FLAGS.models), width=FLAGS.width, seeds=FLAGS.seeds,
      attacks=_common.names(FLAGS.attacks),
      epsilons=_common.floats(FLAGS.epsilons, 'epsilons'), setup=setup, retrain=FLAGS.retrain,
      interventions=_common.names(FLAGS.interventions),
      adversarial_training=FLAGS.adversarial_training, save_arrays=FLAGS.save_arrays,
      options=_common.model_options())


def main(argv):
  del argv
  c = config()
  if FLAGS.dry_run:
    print(_common.dry_run(malleability.NAME, c, c.data.n_train, c.data.n_test,
                          FLAGS.max_memory_gb, checks=_common.checks(malleability, c)))
    return
  _common.check(malleability, c)
  cleanup = _common.start_processes()
  if not devices.is_writer() and c.save_arrays:     # process 0 alone writes
    c = dataclasses.replace(c, save_arrays=os.path.join(FLAGS.output_dir, 'arrays.npz'))
  _common.setup()
  try:
    malleability.run(c, FLAGS.output_dir, _common.context(), FLAGS.resume)
    if devices.is_writer():
      with open(os.path.join(FLAGS.output_dir, malleability.NAME + '_table.md')) as f:
        print(f.read())
      logging.info('results in %s', FLAGS.output_dir)
  finally:
    cleanup()


if __name__ == '__main__':
  _common.run(main)
