"""Runs a reproduction: every part's config through its module, then the report.

  runner.run(presets.quick(), 'results/quick')

Before any work each part's config is checked (`study.parts.<kind>.check`), its models
tried and every load it will make tried on the data (`data_needs`), so that a bad setting or
a pool too small is one line naming the part. Then each part runs in this process
(`parts.<kind>.run(config, D/<sub>, context)`), its log in D/<sub>/log.txt, with one
training cache shared by all parts (D/cache/train, `study.cache`) and JAX's persistent
compilation cache; one line shows the whole run's progress. A finished part leaves a marker
(D/<sub>/part.json: its kind, config and wall time); running again skips a part whose marker
holds the same config, resumes an unfinished one from its JSONL, and re-renders the report.
`isolate=True` runs each part in a fresh process (multiprocessing 'spawn') calling the same
function with the same config. docs/method.md §16.
"""
import contextlib
import importlib
import json
import logging as std_logging
import multiprocessing
import os
import shutil
import sys
import time
from typing import Callable, Optional, Sequence

from absl import logging

from ntk_attention.study import configs
from ntk_attention.study import layout
from ntk_attention.study import pipeline
from ntk_attention.study import presets
from ntk_attention.study.parts import _base

COMPILATION_CACHE = os.path.join('~', '.cache', 'ntk_attention', 'jax')


def part_module(kind: str):
  """`ntk_attention.study.parts.<kind>`: run(config, out_dir, context, resume), check(config),
  data_needs(config)."""
  return importlib.import_module(f'ntk_attention.study.parts.{kind}')


def preflight(todo: Sequence[pipeline.Part], strict: bool = True) -> list:
  """Every part's config (`check`), models (`parts._base.check_models`) and data (`data_needs`,
  each load tried), before anything is computed: a problem is a one-line ValueError naming
  the part ('part malleability: ...'); with `strict=False` (a dry run) the problems are
  returned instead."""
  checked, problems = set(), []
  for part in todo:
    module = part_module(part.kind)
    try:
      module.check(part.config)
      models = getattr(part.config, 'models', None)
      if models is not None:
        _base.check_models(models, 'models', count=2 if part.kind in pipeline.PAIRED else None)
      data = part.config.data
      _base.check_pools(module.data_needs(part.config), data.seed, data.data_dir, '', checked)
    except ValueError as e:
      if strict:
        raise ValueError(f'part {part.sub}: {e}') from None
      problems.append(f'part {part.sub}: {e}')
  return problems


def group_problems(problems) -> list:
  """'part A: why' lines with the same reason merged into 'parts A, B: why' (in order)."""
  by_reason = {}
  for p in problems:
    part, sep, reason = p.partition(': ')
    if not (sep and part.startswith('part ')):
      part, reason = '', p
    by_reason.setdefault(reason, []).append(part[len('part '):])
  out = []
  for reason, parts in by_reason.items():
    parts = [x for x in parts if x]
    head = f'part {parts[0]}' if len(parts) == 1 else f'parts {", ".join(parts)}'
    out.append(f'{head}: {reason}' if parts else reason)
  return out


def dry_run_text(costs, rates) -> str:
  """The dry run's table: each part's cells and estimated time on this machine."""
  import jax
  from ntk_attention.study import plan
  from ntk_attention.study import progress as progress_lib
  from ntk_attention.study.report import page
  rows = plan.dry_run_table(costs, rates)
  total = sum(r['estimate_s'] for r in rows)
  for r in rows:
    r['estimate'] = progress_lib.format_duration(r.pop('estimate_s'))
  return '\n'.join([
      f'dry run: {len(rows)} parts; this machine ({jax.default_backend()}, '
      f'{len(jax.devices())} device(s)) measured {rates.f32 / 1e9:.0f} GFLOP/s float32 and '
      f'{rates.f64 / 1e9:.0f} GFLOP/s float64 on matrix products.', '',
      page.markdown_table(rows, ['part', 'cells', 'gflop_f32', 'gflop_f64', 'estimate'],
                          floatfmt='.3g'), '',
      f'estimated total: {progress_lib.format_duration(total)} (a factor of 2 either way; '
      'nothing was computed)'])


# ---------------------------------------------------------------------------- JAX set-up

def configure_jax(matmul_precision: str, compilation_cache: str = '') -> None:
  """float64 on (every part needs it), the float32 product precision, and JAX's persistent
  compilation cache in `compilation_cache` ('' = off) for every program, however quick to
  compile, so that a second run compiles nothing."""
  import jax
  jax.config.update('jax_enable_x64', True)
  jax.config.update('jax_default_matmul_precision', matmul_precision)
  path = os.path.expanduser(compilation_cache or '')
  if path:
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


# ------------------------------------------------------------------------------ one part

def _in_process(part, out, resume, context, log_path) -> None:
  """The part's `run` in this process; its log and printed output go to `log_path`."""
  handler = std_logging.FileHandler(log_path, mode='w')
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
  absl_handler = logging.get_absl_handler()
  level = absl_handler.level
  logging.get_absl_logger().addHandler(handler)
  absl_handler.setLevel(std_logging.WARNING)     # the run's progress line is on the terminal
  try:
    with open(log_path, 'a') as log, contextlib.redirect_stdout(log):
      part_module(part.kind).run(part.config, out, context=context, resume=resume)
  finally:
    absl_handler.setLevel(level)
    logging.get_absl_logger().removeHandler(handler)
    handler.close()


def _isolated_main(kind, config, out, resume, log_path, train_cache, matmul_precision,
                   compilation_cache) -> None:
  """A spawned process's part: everything it prints or logs goes to `log_path`."""
  fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  handler = std_logging.StreamHandler(sys.stderr)
  handler.setFormatter(std_logging.Formatter('%(asctime)s %(levelname)s %(message)s'))
  logging.get_absl_logger().addHandler(handler)
  logging.get_absl_logger().propagate = False     # one line per record in the log
  logging.set_verbosity(logging.INFO)
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  configure_jax(matmul_precision, compilation_cache)
  from ntk_attention.study import cache
  parts = importlib.import_module('ntk_attention.study.parts')
  context = parts.Context(train_fn=cache.cached_train(directory=train_cache))
  part_module(kind).run(config, out, context=context, resume=resume)


def _isolated(part, out, resume, log_path, train_cache, study, compilation_cache) -> None:
  process = multiprocessing.get_context('spawn').Process(
      target=_isolated_main, args=(part.kind, part.config, out, resume, log_path, train_cache,
                                   study.matmul_precision, compilation_cache))
  process.start()
  process.join()
  if process.exitcode != 0:
    raise RuntimeError(f'exit {process.exitcode}')


def _plain(config) -> dict:
  return json.loads(json.dumps(configs.as_dict(config)))


def run_part(part: pipeline.Part, output_dir: str, context=None, force: bool = False,
             isolate: Optional[dict] = None) -> dict:
  """Runs one part unless its marker holds the same kind and config; returns its marker
  with 'status' ('computed' or 'cached'). The marker holds its wall time and, for a part run
  in this process, the programs it needed (`compiles.count`: how many, how many of them
  loaded from the persistent cache, and the seconds compiling or loading them). `isolate`:
  the keyword arguments of a spawned run (train_cache, study, compilation_cache), or None to
  run in this process."""
  from ntk_attention.study import store as store_lib
  out = layout.part_dir(output_dir, part.sub)
  marker = layout.marker(output_dir, part.sub)
  config, call = _plain(part.config), pipeline.describe(part.config)
  if force and os.path.isdir(out):
    shutil.rmtree(out)
  if os.path.exists(marker):
    info = store_lib.read_json(marker)
    if (info.get('kind'), info.get('config')) == (part.kind, config):
      logging.info('[%s] cached (%s)', part.sub, marker)
      return dict(info, status='cached')
    logging.info('[%s] settings changed: recomputing', part.sub)
    shutil.rmtree(out)
  resume = os.path.isdir(out)    # an unfinished part resumes from its JSONL, if it has one
  logging.info('[%s] running %s%s', part.sub, call, ' (resuming)' if resume else '')
  os.makedirs(out, exist_ok=True)
  log_path = layout.log(output_dir, part.sub)
  t0 = time.time()
  from ntk_attention import compiles
  try:
    with compiles.count() as compiled:
      if isolate is not None:
        _isolated(part, out, resume, log_path, **isolate)
      else:
        _in_process(part, out, resume, context, log_path)
  except Exception as e:
    raise RuntimeError(f'part {part.sub} failed ({type(e).__name__}: {e}; log: {log_path}): '
                       f'{call}') from e
  info = {'kind': part.kind, 'config': config, 'call': call, 'seconds': time.time() - t0,
          'finished': time.strftime('%F %T')}
  if isolate is None:         # a spawned part's programs are counted in its own process
    info['compilations'] = {'programs': compiled.programs, 'cached': compiled.cached,
                            'compile_seconds': round(compiled.seconds, 3)}
  store_lib.write_json(marker, info)
  return dict(info, status='computed')


# ------------------------------------------------------------------------------- the run

def study_flags(study: presets.Study, always: Sequence[str] = ()) -> dict:
  """{flag: value} of the settings that differ from `Study()`, of the data sizes, seed and
  epochs, and of the fields named in `always` (tuples as the flags' text: the report's
  'Flags' line)."""
  from ntk_attention.study import overrides
  default, out = presets.Study(), {}
  always = set(always) | {'dataset', 'n_train', 'n_test', 'seed', 'epochs'}
  for f in overrides.fields(presets.Study):
    value = getattr(study, f)
    if value != getattr(default, f) or f in always:
      sep = presets.Study.__dataclass_fields__[f].metadata.get('sep', ',')
      out[f] = sep.join(map(str, value)) if isinstance(value, tuple) else value
  return out


def build_report(study, output_dir, parts_info, wall, flags=None, prov=None) -> str:
  """D/report.md, D/report.html and D/figures/ from the parts' results on disk."""
  from ntk_attention.study import report
  return report.build(
      output_dir, dataset=study.dataset, task=','.join(map(str, study.classes)) or 'all',
      binary_tasks=pipeline.binary_tasks(study), beyond_variants=list(study.beyond_variants),
      beyond_sizes={'n_train': study.beyond_n_train, 'n_test': study.beyond_n_test,
                    'width': study.beyond_width},
      scaling=layout.SCALING in parts_info,
      width_threshold=layout.WIDTH_THRESHOLD in parts_info, parts_info=parts_info,
      flags=study_flags(study) if flags is None else flags,
      provenance=_base.environment() if prov is None else prov, wall=wall)


def run(study: presets.Study, output_dir: str, *, sets: Sequence[str] = (), force: bool = False,
        isolate: bool = False, dry_run: bool = False, train_cache: Optional[str] = '',
        compilation_cache: str = COMPILATION_CACHE, flags: Optional[dict] = None,
        on_checked: Optional[Callable] = None) -> str:
  """Runs `study` into `output_dir` and returns the report's Markdown (with `dry_run`: the
  table of estimated times and any problem the run would stop at; nothing is written).

  sets: '--set' items 'KIND.FIELD=VALUE' applied to every part of that kind.
  force: recompute every part (trained parameters still come from the training cache).
  isolate: each part in its own spawned process.
  train_cache: the training cache's folder ('' = D/cache/train; None = memory only, per
    process).
  compilation_cache: JAX's persistent compilation cache folder ('' = off).
  flags: {flag: value} the report lists (default: the settings that differ from `Study()`).
  on_checked: called once every setting has been checked, before any work.
  """
  from ntk_attention.study import overrides
  from ntk_attention.study import plan
  # JAX logs its backend probing (rocm, tpu) at INFO; it is noise on CPU machines.
  std_logging.getLogger('jax._src.xla_bridge').setLevel(std_logging.WARNING)
  pipeline.check(study)
  _base.check_output_dir(output_dir)
  todo = pipeline.parts_of(study, overrides.parse_set(sets, configs.PART_CONFIGS))
  problems = preflight(todo, strict=not dry_run)
  costs = [(p.sub, plan.part_cost(p.kind, p.config)) for p in todo]
  if on_checked:
    on_checked()
  configure_jax(study.matmul_precision)
  rates = plan.calibrate()
  if dry_run:
    return '\n'.join([dry_run_text(costs, rates)]
                     + [f'would fail: {p}' for p in group_problems(problems)])
  logging.set_verbosity(logging.INFO)
  os.makedirs(output_dir, exist_ok=True)
  train_cache = (layout.train_cache(output_dir) if train_cache == ''
                 else train_cache and os.path.expanduser(train_cache))
  configure_jax(study.matmul_precision, compilation_cache)
  from ntk_attention import compiles
  with compiles.count() as compilations:   # programs compiled / loaded by this run
    t0 = time.time()
    from ntk_attention.study import cache
    progress = plan.RunProgress({p.sub: plan.seconds(cost, rates)
                                 for p, (_, cost) in zip(todo, costs)})
    parts = importlib.import_module('ntk_attention.study.parts')
    context = parts.Context(train_fn=cache.cached_train(directory=train_cache),
                            on_progress=progress.cell)
    isolated = (dict(train_cache=train_cache, study=study, compilation_cache=compilation_cache)
                if isolate else None)
    info = {}
    for part in todo:
      progress.begin(part.sub)
      info[part.sub] = run_part(part, output_dir, context, force, isolated)
      progress.end(part.sub, cached=info[part.sub]['status'] == 'cached')
  progress.close()
  stats = context.train_fn.stats
  logging.info('trainings: %d seeds trained, %d loaded from %s, %d reused in memory',
               stats['trained'], stats['loaded'], train_cache or 'nowhere', stats['hits'])
  if compilation_cache:
    logging.info('compilations: %d new, %d loaded from %s', compilations.compiled,
                 compilations.cached, os.path.expanduser(compilation_cache))
  text = build_report(study, output_dir, info, time.time() - t0, flags)
  logging.info('report: %s (and %s)', layout.report_md(output_dir), layout.REPORT_HTML)
  return text


__all__ = ['COMPILATION_CACHE', 'part_module', 'preflight', 'group_problems',
           'dry_run_text', 'configure_jax', 'run_part',
           'study_flags', 'build_report', 'run']
