"""Entry `sensitivity`: variations that keep the trained model, with and without the memo.

`study.sensitivity.run` over the variations that change neither the model nor its training
(ε ×⅓ and ×5/3, ε's units, τ ×½ and ×2, the score, the kernel, the ridge ×0.1 and ×10,
the PGD steps ×¼ and ×4). The baseline is the previous path: every variation recomputes the
clean side of the protocol (Θ∞, accuracies, the feature SVD, kernel distance, KRR accuracy, clean
kernel and influence), here by making every `ntk_attention.memo.get` compute. The new path
is the library's: the baseline fills the memo, the variations read it. Both share one
training cache, filled (and every program compiled) by a warm-up run before either is timed,
so the times are those of the protocol; the records must be equal, bit for bit.
"""
import contextlib
import time
from typing import List
from unittest import mock

from benchmarks import harness
from ntk_attention import data
from ntk_attention import memo
from ntk_attention import training
from ntk_attention.study import cache
from ntk_attention.study import compare
from ntk_attention.study import sensitivity

SIZES = {   # 'full' is the quick preset's sensitivity part
    'quick': dict(n_train=100, n_test=50, width=64, epochs=10, seeds=3),
    'full': dict(n_train=400, n_test=200, width=512, epochs=100, seeds=3),
}
VARIATIONS = ('eps', 'eps_units', 'tau', 'score', 'kernel', 'ridge', 'pgd_steps')


def _numbers(records) -> dict:
  """Every number, flag and null of the records (`study.compare.flatten`), keyed by the
  record's `KEY_FIELDS`, whatever the order the records came in."""
  return compare.flatten({'/'.join(map(str, (r[k] for k in sensitivity.KEY_FIELDS))): r
                          for r in records}, 'records:')


def run(args: harness.Args) -> List[dict]:
  """One warm-up run, then the sensitivity run without and with the memo, each timed once."""
  size = SIZES['quick' if args.quick else 'full']
  ds = data.load('mnist_sample', n_train=size['n_train'], n_test=size['n_test'], seed=args.seed)
  base = sensitivity.Baseline(width=size['width'], n_train=size['n_train'],
                              epochs=size['epochs'])
  variations = [v for v in sensitivity.default_variations(base) if v[0] in VARIATIONS]
  config = training.TrainConfig(epochs=size['epochs'])
  train_fn = cache.cached_train()
  seeds = list(range(size['seeds']))

  def go():
    return sensitivity.run(lambda task, n: ds, ['all'], base, variations, ['fgsm', 'pgd'],
                           seeds, config, base_seed=args.seed, train_fn=train_fn)

  go()    # trains every model and compiles every program: neither is what is compared
  timings, numbers = {}, {}
  for path in ('recompute', 'memo'):
    recompute = mock.patch.object(memo, 'get', lambda m, key, compute: compute())
    t0 = time.perf_counter()
    with recompute if path == 'recompute' else contextlib.nullcontext():
      records = go()
    seconds = time.perf_counter() - t0
    timings[path] = harness.Timing(seconds, None, [seconds], None)
    numbers[path] = _numbers(records)
  summary = compare.compare_numbers(numbers['recompute'], numbers['memo'])
  if summary['only_before'] or summary['only_after']:
    raise RuntimeError('the memo run has other records than the recomputing one.')
  total = summary['total']
  unequal = total['values'] - total['equal']
  return [harness.make_row(
      'sensitivity', f'{len(variations)} variations that keep the trained model, 2 models',
      f"n={size['n_train']} t={size['n_test']} m={size['width']} seeds={size['seeds']} "
      f'attacks=fgsm,pgd variations={",".join(dict.fromkeys(c for c, _ in variations))}',
      'every variation recomputes the clean side', timings['recompute'],
      "the baseline's clean side, memoised", timings['memo'],
      max_rel_diff=total['max_rel_diff'], values_unequal=unequal,
      note=f"{total['values']} record values, {unequal} unequal; trained and compiled "
           'beforehand, each path timed once')]
