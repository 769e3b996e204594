r"""One command reproduces the study: every part, then one self-contained report.

  python scripts/reproduce.py --preset=quick --output_dir=results/quick

A preset is a typed `Study` (ntk_attention/study/presets.py: quick, quick_cifar10,
quick_digits, paper_mnist, paper_cifar10, paper_binary; read its docstring); every other flag
given on the command line overrides the preset's field of the same name. The flags are the
`Study`'s fields; `--set=KIND.FIELD=VALUE` (repeatable) sets any field of every part config of
that kind, e.g. --set=malleability.setup.attack.pgd_steps=40 --set=malleability.setup.ridge=1e-2
(kinds and fields: ntk_attention/study/configs.py).

Parts: spectral, ntk_distance, malleability (10-class or --classes, ε sweep), binary
(--binary_tasks), interventions, adversarial_training, sensitivity, beyond (attention variants,
the influence-targeted attack, approximation error); and, only when named in --parts, scaling
(malleability against n). Each part is a function called with its config
(`study.pipeline.parts_of`, `study.runner.run`), in this process, into D/<part>/ with its log
in D/<part>/log.txt and a marker D/<part>/part.json when it finishes. Trained parameters are
shared between parts in D/cache/train, and JAX's persistent compilation cache is on
(--compilation_cache). Running the same command again skips finished parts (an interrupted
part resumes from its JSONL) and re-renders D/report.md and D/report.html; --force recomputes
every part (trained parameters still come from the cache); --isolate_parts runs each part in a
fresh process; --dry_run prints every part's cells and an estimate of its time on this
machine, and exits. docs/method.md §16.
"""
import dataclasses
import typing

from absl import flags

import _common
from ntk_attention.study import presets
from ntk_attention.study import runner

FLAGS = flags.FLAGS
FIELDS = {f.name: f for f in dataclasses.fields(presets.Study)}
HINTS = typing.get_type_hints(presets.Study)


def _define_study_flags():
  """One flag per `Study` field: its name, default and help; a tuple is a comma list."""
  for name, field in FIELDS.items():
    hint, help_text = HINTS[name], presets.help_text(field)
    if 'choices' in field.metadata:
      flags.DEFINE_enum(name, field.default, field.metadata['choices'], help_text)
    elif hint is bool:
      flags.DEFINE_bool(name, field.default, help_text)
    elif hint is int:
      flags.DEFINE_integer(name, field.default, help_text)
    elif hint in (float, typing.Optional[float]):
      flags.DEFINE_float(name, field.default, help_text)
    elif isinstance(field.default, tuple):
      sep = field.metadata.get('sep', ',')
      flags.DEFINE_string(name, sep.join(map(str, field.default)), help_text)
    else:
      flags.DEFINE_string(name, field.default, help_text)


flags.DEFINE_string('preset', None, f'A preset of study/presets.py ({", ".join(presets.PRESETS)}); '
                    'the other flags given override its fields.')
flags.DEFINE_string('output_dir', 'results', 'The run folder D.')
flags.DEFINE_multi_string('set', [], "KIND.FIELD=VALUE: a field of every part config of that "
                          'kind (spectral, ntk_distance, malleability, approximation, '
                          'sensitivity, scaling; FIELD may name nested fields), e.g. '
                          '"malleability.setup.attack.pgd_steps=40". Repeatable.')
flags.DEFINE_bool('force', False, 'Recompute every part, ignoring finished parts (trained '
                  'parameters still come from the training cache).')
flags.DEFINE_bool('isolate_parts', False, 'Run each part in a fresh process (for debugging a '
                  'part alone; the same function with the same config).')
flags.DEFINE_bool('dry_run', False, "Print every part's cells and estimated time on this machine "
                  '(from a short measured calibration), then exit without computing.')
flags.DEFINE_string('compilation_cache', runner.COMPILATION_CACHE,
                    "JAX's persistent compilation cache folder ('' = off): a later run, or "
                    'another process, loads compiled programs instead of compiling them again.')
flags.DEFINE_string('train_cache', '', "Folder of trained parameters shared by the parts ('' = "
                    "D/cache/train; 'none' = none: each process keeps its trainings in memory "
                    'only) (docs/method.md §16).')
_define_study_flags()

RUN_FLAGS = ('preset', 'set', 'force', 'isolate_parts', 'dry_run', 'compilation_cache',
             'train_cache')


def study_from_flags() -> presets.Study:
  """The preset's `Study` (or the defaults) with every Study flag given on the command line."""
  study = presets.preset(FLAGS.preset) if FLAGS.preset else presets.Study()
  return presets.override(study, {n: FLAGS[n].value for n in FIELDS if FLAGS[n].present})


def main(argv):
  del argv
  study = study_from_flags()
  # The report lists the settings that differ from the defaults, and every flag given.
  shown = runner.study_flags(study, always=[n for n in FIELDS if FLAGS[n].present])
  shown.update({n: FLAGS[n].value for n in RUN_FLAGS if FLAGS[n].present})
  train_cache = None if FLAGS.train_cache == 'none' else FLAGS.train_cache
  text = runner.run(study, FLAGS.output_dir, sets=FLAGS.set, force=FLAGS.force,
                    isolate=FLAGS.isolate_parts, dry_run=FLAGS.dry_run,
                    train_cache=train_cache, compilation_cache=FLAGS.compilation_cache,
                    flags=shown, on_checked=_common.begin_work)
  print(text)


if __name__ == '__main__':
  _common.run(main)
