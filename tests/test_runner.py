"""study.runner: checks before work, markers keyed on the config, resume, --set, dry run.

The parts are stand-ins registered as `ntk_attention.study.parts.<kind>` (the contract of
study/parts/__init__.py: run, check, data_needs): each records its calls and writes one file,
so that what is tested is the runner's loop, not the science (tests/test_reproduce*.py run
the real parts end to end).
"""
import dataclasses
import os
import sys
import types
from typing import Callable, NamedTuple, Optional

import pytest

from ntk_attention.study import configs
from ntk_attention.study import layout
from ntk_attention.study import presets
from ntk_attention.study import runner
from ntk_attention.study import store as store_lib

KINDS = ('spectral', 'ntk_distance', 'malleability', 'approximation', 'sensitivity', 'scaling')
UNLUCKY = 13      # a stand-in part's check refuses this n_train


class Context(NamedTuple):
  train_fn: Callable
  on_progress: Optional[Callable] = None


@pytest.fixture
def calls(monkeypatch):
  """Stand-in part modules; the list of (kind, out_dir, resume) of every run call."""
  import ntk_attention.study.parts as parts_pkg
  made = []
  monkeypatch.setattr(parts_pkg, 'Context', Context, raising=False)
  for kind in KINDS:
    module = types.ModuleType(f'ntk_attention.study.parts.{kind}')

    def run(config, out_dir, context=None, resume=False, kind=kind):
      assert isinstance(context, Context) and callable(context.train_fn)
      made.append((kind, out_dir, resume))
      print(f'stand-in {kind} ran')
      store_lib.write_json(os.path.join(out_dir, 'stand_in.json'),
                           {'n_train': config.data.n_train})

    def check(config):
      if config.data.n_train == UNLUCKY:
        raise ValueError(f'n_train = {UNLUCKY} is unlucky.')

    def data_needs(config):
      d = config.data
      return [(d.dataset, d.classes, d.n_train, d.n_test, d.fit_to_pool)]

    module.run, module.check, module.data_needs = run, check, data_needs
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(parts_pkg, kind, module, raising=False)
  return made


def _study(**changes):
  tiny = dict(parts=('spectral', 'malleability', 'binary'), n_train=60, n_test=30,
              binary_n_train=40, binary_n_test=20)
  return dataclasses.replace(presets.quick_digits(), **dict(tiny, **changes))


SUBS = ['spectral', 'malleability', 'binary_digits_3_8']


def _run(d, study=None, **kw):
  return runner.run(study or _study(), str(d), compilation_cache='', **kw)


def test_parts_run_once_then_are_cached_and_the_report_lists_their_configs(calls, tmp_path):
  d = tmp_path / 'D'
  text = _run(d)
  assert [(k, os.path.relpath(o, d), r) for k, o, r in calls] == [
      ('spectral', 'spectral', False), ('malleability', 'malleability', False),
      ('malleability', 'binary_digits_3_8', False)]
  for sub in SUBS:
    marker = store_lib.read_json(layout.marker(str(d), sub))
    assert set(marker) == {'kind', 'config', 'call', 'seconds', 'finished', 'compilations'}
    # the stand-in parts compute nothing with JAX: no program counted
    assert marker['compilations'] == {'programs': 0, 'cached': 0, 'compile_seconds': 0.0}
    assert 'stand-in' in open(layout.log(str(d), sub)).read()
  binary = store_lib.read_json(layout.marker(str(d), 'binary_digits_3_8'))
  assert binary['config']['data'] == {'dataset': 'digits', 'classes': [3, 8], 'n_train': 40,
                                      'n_test': 20, 'seed': 0, 'data_dir': None,
                                      'fit_to_pool': False}
  assert binary['call'].startswith("Malleability(data=Data(dataset='digits', classes=(3, 8), "
                                   'n_train=40, n_test=20, fit_to_pool=False)')
  assert f'The configuration of each part (3)\n{"spectral"}: Spectral(' in text
  assert f"binary_digits_3_8: {binary['call']}" in text
  # (no cache/ nor figures/: the stand-ins train nothing and write no results the report reads)
  assert sorted(os.listdir(d)) == sorted(SUBS + ['report.md', 'report.html'])
  assert open(layout.report_md(str(d))).read() == text
  calls.clear()
  again = _run(d)
  assert calls == []
  assert again.count('| cached |') == 3


def test_a_changed_config_or_force_recomputes_and_an_unfinished_part_resumes(calls, tmp_path):
  d = tmp_path / 'D'
  _run(d)
  calls.clear()
  # --set changes every malleability config (both malleability parts), nothing else.
  _run(d, sets=['malleability.setup.attack.pgd_steps=40'])
  assert [os.path.relpath(o, d) for _, o, _ in calls] == ['malleability', 'binary_digits_3_8']
  marker = store_lib.read_json(layout.marker(str(d), 'malleability'))
  assert marker['config']['setup']['attack']['pgd_steps'] == 40
  assert 'pgd_steps=40' in marker['call']
  calls.clear()
  _run(d, sets=['malleability.setup.attack.pgd_steps=40'], force=True)
  assert [os.path.relpath(o, d) for _, o, r in calls if not r] == SUBS
  calls.clear()
  os.remove(layout.marker(str(d), 'spectral'))           # as a run killed in that part leaves it
  _run(d, sets=['malleability.setup.attack.pgd_steps=40'])
  assert [(os.path.relpath(o, d), r) for _, o, r in calls] == [('spectral', True)]


@pytest.mark.parametrize('changes, words', [
    (dict(n_train=UNLUCKY), ('part spectral:', 'unlucky')),
    (dict(binary_n_train=300, binary_n_test=100), ('part binary_digits_3_8:', '357')),
    (dict(parts=('spectral', 'nonsense')), ('--parts', 'nonsense')),
])
def test_a_bad_part_stops_the_run_before_any_work(calls, tmp_path, changes, words):
  d = tmp_path / 'D'
  with pytest.raises(ValueError) as e:
    _run(d, _study(**changes))
  assert all(w in str(e.value) for w in words), str(e.value)
  assert calls == [] and not d.exists()


def test_a_bad_set_stops_the_run_before_any_work(calls, tmp_path):
  with pytest.raises(ValueError, match=r'--set=malleability\.setup\.ridgee=1'):
    _run(tmp_path / 'D', sets=['malleability.setup.ridgee=1'])
  assert calls == [] and not (tmp_path / 'D').exists()


def test_dry_run_lists_every_part_and_what_would_fail_and_writes_nothing(calls, tmp_path):
  d = tmp_path / 'D'
  text = _run(d, _study(n_train=UNLUCKY, parts=('spectral', 'malleability', 'binary')),
              dry_run=True)
  for sub in SUBS:
    assert f'| {sub} |' in text
  assert 'estimated total:' in text
  assert 'would fail: parts spectral, malleability: n_train = 13 is unlucky.' in text
  assert calls == [] and not d.exists()


def test_study_flags_lists_what_differs_and_the_data():
  flags = runner.study_flags(presets.quick(), always=['tau'])
  assert flags['widths'] == '16,1024,4096' and flags['epochs'] == 100 and 'n_grid' not in flags
  assert flags['binary_tasks'] == 'same:3,8' and flags['tau'] == 0.1
  assert flags['seed'] == 0 and 'ntk_models' not in flags
  assert set(configs.PART_CONFIGS) >= set(KINDS)


def test_the_report_reads_every_folder_the_runner_writes(monkeypatch, tmp_path):
  """Both sides take their paths from study.layout: for a study with every part, each part
  folder the runner fills is one the report looks in (for that kind's results)."""
  from ntk_attention.study import pipeline
  from ntk_attention.study.report import sections
  study = dataclasses.replace(presets.quick_digits(), parts=presets.PARTS + presets.OPTIONAL_PARTS,
                              beyond_parts=presets.BEYOND_PARTS,
                              binary_tasks=('same', 'mnist:1,7'))
  read = set()

  def load(d, sub, kind, suffix='.json'):
    read.add((sub, kind))
    return None

  monkeypatch.setattr(sections, '_load', load)
  runner.build_report(study, str(tmp_path), {layout.SCALING: {}, layout.WIDTH_THRESHOLD: {}}, 0.0,
                      flags={}, prov={})
  written = {(p.sub, p.kind) for p in pipeline.parts_of(study)}
  assert written == read
  assert ('binary_mnist_1_7', 'malleability') in read

