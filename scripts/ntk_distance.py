r"""Distance of trained 2L-ReLU and MLP-Attn networks to their infinite-width NTK
(the study's Table 1 / Figure 1, docs/method.md §6–7; `study.parts.ntk_distance`).

  python scripts/ntk_distance.py --dataset=digits --n_train=1000 \
      --widths=16,64,256,1024,4096 --seeds=3 --output_dir=results/ntk_distance

Writes ntk_distance.jsonl (one record per cell, appended as cells finish; --resume skips
them), ntk_distance.json / .csv (mean and std over seeds per model × width × metric) and
ntk_distance.png (four panels against width, the study's distances as stars).
"""
from absl import flags
from absl import logging

import _common
from ntk_attention.study import configs
from ntk_attention.study.parts import ntk_distance

FLAGS = flags.FLAGS
_common.define_data_flags()
flags.DEFINE_string('models', 'relu_mlp,mlp_attn', 'Comma list of models: '
                    + _common.MODELS_HELP + ', e.g. relu_mlp,my_package.nets:deep.')
flags.DEFINE_string('widths', '16,64,256,1024,4096', 'Comma list of hidden widths m.')
flags.DEFINE_integer('seeds', 3, 'Seeds per width (trained together, vmapped).')
_common.define_training_flags()
_common.define_model_flags()
flags.DEFINE_float('ridge', 1e-3, 'Ridge λ (× mean diag) of the NTK ridge-regression f∞.')
flags.DEFINE_bool('resume', False, 'Skip cells already in ntk_distance.jsonl.')


def config() -> configs.Distance:
  return configs.Distance(
      data=_common.data_config(), train=_common.train_config(),
      models=_common.names(FLAGS.models), widths=_common.ints(FLAGS.widths, 'widths'),
      seeds=FLAGS.seeds, ridge=FLAGS.ridge, options=_common.model_options())


def main(argv):
  del argv
  c = config()
  _common.check(ntk_distance, c)
  _common.setup()
  summary = ntk_distance.run(c, FLAGS.output_dir, _common.context(), FLAGS.resume)
  from ntk_attention.study.report import page
  print(page.markdown_table(summary, [
      'model', 'width', 'kernel_distance_init_mean', 'kernel_distance_final_mean',
      'kernel_movement_mean', 'function_distance_mean', 'test_accuracy_mean']))
  logging.info('results in %s', FLAGS.output_dir)


if __name__ == '__main__':
  _common.run(main)
