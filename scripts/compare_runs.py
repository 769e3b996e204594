"""Compares every number of two result folders (e.g. before and after a change).

Reads every .json / .jsonl result under --before and --after (configuration, provenance,
wall times and compile counts left out: `ntk_attention.study.compare`), prints one line per
file whose values are not all bit-equal, a total, the largest relative difference and the
keys only one side has; exits 1 when some difference exceeds --rtol.

  python scripts/compare_runs.py --before=results/quick_old --after=results/quick
"""
import os
import sys

from absl import flags

import _common

FLAGS = _common.script_flags(__name__)
flags.DEFINE_string('before', '', 'Result folder of the first run.', flag_values=FLAGS)
flags.DEFINE_string('after', '', 'Result folder of the second run.', flag_values=FLAGS)
flags.DEFINE_float('rtol', 0.0, 'Largest relative difference |a - b| / max(|a|, |b|) '
                   'accepted (0: every number bit-equal); kind changes (a number to null, a '
                   'flipped boolean) and keys on one side only always fail.', flag_values=FLAGS)
flags.DEFINE_string('output', '', 'Optional FILE.json for the whole summary.',
                    flag_values=FLAGS)


def main(argv):
  _common.no_arguments(argv)
  for name in ('before', 'after'):
    folder = getattr(FLAGS, name)
    if not folder or not os.path.isdir(folder):
      raise ValueError(f'--{name} must name a result folder, got {folder!r}.')
  if not FLAGS.rtol >= 0:
    raise ValueError(f'--rtol must be >= 0, got {FLAGS.rtol}.')
  _common.begin_work()
  from ntk_attention.study import compare
  summary = compare.compare(FLAGS.before, FLAGS.after)
  print(compare.table(summary))
  if FLAGS.output:
    from ntk_attention.study import store
    store.write_json(FLAGS.output, summary)
  t = summary['total']
  ok = (t['max_rel_diff'] <= FLAGS.rtol and not t['changed'] and not summary['only_before']
        and not summary['only_after'])
  sys.exit(0 if ok else 1)


if __name__ == '__main__':
  _common.run(main)
