"""--models=...,module:function (issue 21, item 4): a user's factory, imported from a module on
PYTHONPATH, runs in the scripts beside the built-in models and is reported by its name; a bad
entry is one line on stderr naming it, exit 2, before any output folder exists."""
import math
import os
import subprocess
import sys

import pytest

from ntk_attention.study import report
from ntk_attention.study import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'scripts')
ENTRY = 'mynets:deep'

MYNETS = '''
import ntk_attention as na
from neural_tangents import stax


def deep(width, out_dim):
  return na.models.compose(stax.serial(na.Normalize(), na.LinearizedAttention(), na.Normalize()),
                           stax.serial(stax.Dense(width), stax.Relu(), stax.Dense(out_dim)),
                           name='deep')


def not_a_model(width, out_dim):
  return 3
'''
TINY = ['--dataset=digits', '--n_train=40', '--n_test=20', '--seeds=1', '--epochs=2']


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The environment of a script run with `mynets.py` importable (on PYTHONPATH, beside this
  checkout: scripts put their own folder on sys.path, not the working directory)."""
  folder = tmp_path_factory.mktemp('user_module')
  (folder / 'mynets.py').write_text(MYNETS)
  path = [str(folder), ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
  return dict(os.environ, PYTHONPATH=os.pathsep.join(path), TF_CPP_MIN_LOG_LEVEL='3')


def _start(script, args, env, cwd):
  return subprocess.Popen([sys.executable, os.path.join(SCRIPTS, script), *args], cwd=cwd,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_users_model_runs_beside_the_builtin_ones_and_is_reported_by_name(env, tmp_path):
  d = tmp_path / 'D'
  models = f'--models=relu_mlp,{ENTRY}'
  procs = {
      'ntk_distance': _start('ntk_distance.py', [*TINY, models, '--widths=8',
                                                 f'--output_dir={d / "ntk_distance"}'],
                             env, tmp_path),
      'malleability': _start('malleability.py', [*TINY, models, '--width=8', '--attacks=fgsm',
                                                 '--epsilons=0.3',
                                                 f'--output_dir={d / "malleability"}'],
                             env, tmp_path),
  }
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, (name, stderr[-3000:])

  records = store_lib.JsonlStore(str(d / 'ntk_distance' / 'ntk_distance.jsonl')).records()
  assert sorted(r['model'] for r in records) == sorted(['relu_mlp', ENTRY])
  for r in records:
    for key in ('kernel_distance_init', 'kernel_distance_final', 'kernel_movement'):
      assert math.isfinite(r[key]) and r[key] > 0, (r['model'], key, r[key])
  mine = next(r for r in records if r['model'] == ENTRY)
  assert mine['width'] == 8
  summary = store_lib.read_json(str(d / 'ntk_distance' / 'ntk_distance.json'))['summary']
  assert {r['model'] for r in summary} == {'relu_mlp', ENTRY}

  records = store_lib.JsonlStore(str(d / 'malleability' / 'malleability.jsonl')).records()
  assert {r['model'] for r in records} == {'relu_mlp', ENTRY}
  for r in records:
    assert math.isfinite(r['kernel_distance']) and 0 <= r['flip_rate'] <= 1, r
  # The figure of a model is named from a file-safe form of its name (no ':').
  assert (d / 'malleability' / 'malleability_influence_mynets_deep.png').exists()

  # The report names the user's model as given; the study's keep their display names.
  md = report.build(str(d), dataset='digits')
  assert f'| {ENTRY} |' in md and '| 2L-ReLU |' in md
  assert f'{ENTRY} flip %' in md
  assert 'malleability/malleability_influence_mynets_deep.png' in md


BAD = {   # name: (script, flags, the flag and the entry the line must name)
    'missing function': ('ntk_distance.py', ['--models=relu_mlp,mynets:nope'],
                         ('--models', 'mynets:nope', 'no function')),
    'missing module': ('ntk_distance.py', ['--models=nosuchmodule:f'],
                       ('--models', 'nosuchmodule:f', 'cannot import')),
    'not a Model': ('ntk_distance.py', ['--models=mynets:not_a_model'],
                    ('--models', 'mynets:not_a_model', 'not a models.Model')),
    'malleability': ('malleability.py', ['--models=relu_mlp,mynets:not_a_model'],
                     ('--models', 'mynets:not_a_model')),
    'kernels': ('kernels.py', ['--models=mynets:nope'], ('--models', 'mynets:nope')),
    'sensitivity takes a pair': ('sensitivity.py', [f'--models=relu_mlp,mlp_attn,{ENTRY}'],
                                 ('--models', 'exactly 2', ENTRY)),
    'scaling': ('scaling.py', ['--models=relu_mlp,nosuchmodule:f'], ('--models', 'nosuchmodule:f')),
    'reproduce': ('reproduce.py', ['--ntk_models=relu_mlp,mynets:nope'],
                  ('--ntk_models', 'mynets:nope')),
    'reproduce part flags': ('reproduce.py', [
        '--n_train=100', '--n_test=50', '--parts=sensitivity',
        '--set=sensitivity.models=mynets:not_a_model,mlp_attn'],
        ('part sensitivity', 'models', 'mynets:not_a_model')),
}


def test_a_bad_entry_is_one_line_naming_it_and_no_output_folder(env, tmp_path):
  procs = {}
  for name, (script, args, _) in BAD.items():
    out = tmp_path / name.replace(' ', '_')
    procs[name] = (_start(script, ['--dataset=digits', *args, f'--output_dir={out}'], env,
                          tmp_path), out)
  for name, (proc, out) in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    lines = (stdout + stderr).strip().splitlines()
    assert proc.returncode == 2, (name, stdout + stderr)
    assert len(lines) == 1, (name, lines)
    assert all(w in lines[0] for w in BAD[name][2]), (name, lines[0])
    assert not out.exists(), name
