"""Scripts' output hygiene: one-line answers to bad input, strict JSON numbers, quiet logs."""
import json
import logging
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ntk_attention.study import store as store_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, 'scripts')


def _start(script, args, cwd):
  return subprocess.Popen([sys.executable, os.path.join(SCRIPTS, script), *args], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_bad_inputs_get_one_line_and_no_output_folder(tmp_path):
  text_npz = tmp_path / 'notes.npz'
  text_npz.write_text('these are my notes, not arrays\n')
  cases = {   # name: (script, flags, what the line must name)
      'unknown dataset': ('spectral.py', ['--dataset=mnist_tiny'], '--dataset'),
      'negative width': ('malleability.py', ['--width=-4'], '--width'),
      'negative widths': ('kernels.py', ['--widths=16,-4'], '--widths'),
      'eps > 1': ('malleability.py', ['--epsilons=0.1,1.5'], '--epsilons'),
      'missing npz': ('spectral.py', [f'--dataset=npz:{tmp_path / "nope.npz"}'], 'nope.npz'),
      'text file named .npz': ('spectral.py', [f'--dataset=npz:{text_npz}'], 'notes.npz'),
      'unparsable number': ('spectral.py', ['--eps=abc'], '--eps'),
      'unparsable list': ('spectral.py', ['--ranks=5,x'], '--ranks'),
      'unparsable numbers': ('malleability.py', ['--epsilons=0.1,x'], '--epsilons'),
      'benchmark output': ('benchmark.py', ['--output=bench.txt'], '--output'),
      # A part whose pool is too small fails before any part runs, naming the part.
      'part pool too small': ('reproduce.py', ['--dataset=digits', '--classes=3,8',
                                               '--parts=spectral,malleability',
                                               '--set=spectral.data.n_train=50',
                                               '--set=spectral.data.n_test=20',
                                               '--n_train=300', '--n_test=100'],
                              'part malleability: digits has 357 usable samples'),
      'sensitivity variation pool': ('sensitivity.py', ['--dataset=digits', '--n_train=1000',
                                                        '--n_test=200', '--tasks=all'],
                                     'n_train + n_test = 2400'),
  }
  # Issue 25's cases, each for reproduce.py and a part script: a class the dataset lacks, an
  # npz with other arrays, more points than the bundled sample holds, an output folder under
  # a file, and a tfds dataset that is neither prepared nor downloadable here.
  other_keys = tmp_path / 'other_keys.npz'
  np.savez(other_keys, images=np.zeros((4, 2, 2)), labels=np.arange(4))
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder\n')
  issue_25 = {'class 11': (['--classes=3,11'], 'classes [11] not in mnist_sample'),
              'npz keys': ([f'--dataset=npz:{other_keys}'], "lacks arrays ['x', 'y']"),
              'n_train > pool': (['--n_train=6000'], 'mnist_sample has 5000 usable samples'),
              'output under a file': ([], '--output_dir='),
              'mnist offline': (['--dataset=mnist'], "'mnist'")}
  from ntk_attention import data
  if data._network_available():   # pylint: disable=protected-access
    del issue_25['mnist offline']   # it would download MNIST
  for script, base in (('reproduce.py', ['--preset=quick']), ('malleability.py', ['--epochs=1'])):
    for name, (args, words) in issue_25.items():
      cases[f'{script} {name}'] = (script, base + args, words)
  procs = {}
  for name, (script, args, _) in cases.items():
    out = tmp_path / re.sub(r'\W', '_', name)
    # benchmark.py writes one file (--output), the other scripts a folder (--output_dir).
    extra = [] if script == 'benchmark.py' else [f'--output_dir={out}']
    if name.endswith('output under a file'):
      out = a_file / 'results'
      extra = [f'--output_dir={out}']
    procs[name] = (_start(script, [*args, *extra], tmp_path), out)
  answers = {}
  for name, (proc, out) in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    lines = (stdout + stderr).strip().splitlines()
    assert proc.returncode == 2, (name, stdout + stderr)
    assert len(lines) == 1, (name, lines)
    assert cases[name][2] in lines[0], (name, lines[0])
    assert not out.exists(), name
    answers[name] = lines[0]
  assert 'not an npz file' in answers['text file named .npz']
  assert 'allow_pickle' not in answers['text file named .npz']
  assert 'not found' in answers['missing npz']
  assert not (tmp_path / 'bench.txt').exists()


def _numeric_strings(obj, path=''):
  """Paths of string values that parse as a number ('inf', 'nan', '1e3', ...), except the
  command line in the provenance (string flags are recorded as typed, e.g. --depths=1)."""
  if path in ('.provenance.flags', '.provenance.argv'):
    return []
  if isinstance(obj, dict):
    return [p for k, v in obj.items() for p in _numeric_strings(v, f'{path}.{k}')]
  if isinstance(obj, list):
    return [p for i, v in enumerate(obj) for p in _numeric_strings(v, f'{path}[{i}]')]
  if isinstance(obj, str):
    try:
      float(obj)
    except ValueError:
      return []
    return [path]
  return []


def test_json_numbers_are_numbers_or_null(tmp_path):
  obj = {'kappa': math.inf, 'low': -np.inf, 'ratio': np.float64('nan'), 'ok': 1.5,
         'curve': [{'n': 10, 'kappa': np.float32('inf')}], 'spectrum': np.array([1.0, np.inf]),
         'name': 'inf is a word here'}
  store_lib.write_json(tmp_path / 'r.json', obj)
  raw = json.loads((tmp_path / 'r.json').read_text(),
                   parse_constant=lambda c: pytest.fail(f'non-strict JSON token {c}'))
  assert _numeric_strings(raw) == []
  assert raw['kappa'] is None and raw['kappa_null_because'] == 'infinite'
  assert raw['low_null_because'] == 'negative infinite'
  assert raw['ratio_null_because'] == 'not a number'
  assert raw['curve'][0]['kappa'] is None and raw['spectrum'] == [1.0, None]
  back = store_lib.read_json(tmp_path / 'r.json')
  assert back['kappa'] == math.inf and back['low'] == -math.inf and math.isnan(back['ratio'])
  assert back['curve'][0]['kappa'] == math.inf and 'kappa_null_because' not in back
  assert back['name'] == 'inf is a word here' and back['ok'] == 1.5
  store = store_lib.JsonlStore(tmp_path / 'r.jsonl')
  store.append({'ratio_high': math.inf})
  line = json.loads((tmp_path / 'r.jsonl').read_text().splitlines()[0])
  assert line == {'ratio_high': None, 'ratio_high_null_because': 'infinite'}
  assert store.records()[0]['ratio_high'] == math.inf


def test_scripts_write_json_only_through_the_writer():
  # Every JSON file the scripts write goes through study.store (tested above): no json.dump
  # anywhere in the scripts or the package (its subpackages included).
  offenders = []
  for folder in ('scripts', 'ntk_attention'):
    for root, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if name.endswith('.py'):
          with open(os.path.join(root, name), encoding='utf-8') as f:
            if re.search(r'json\.dump\(', f.read()):
              offenders.append(os.path.relpath(os.path.join(root, name), ROOT))
  assert offenders == []


def test_spectral_json_of_a_singular_gram_has_null_kappa(tmp_path):
  # n = 100 > rank of the digits subsample: κ(G) is infinite; the file says so with null.
  out = tmp_path / 'out'
  proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, 'spectral.py'), '--dataset=digits',
                         '--n_train=100', '--n_test=10', '--n_grid=50,100', '--depths=1',
                         '--ranks=5', f'--output_dir={out}'], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'cuda' not in proc.stderr.lower()
  for name in os.listdir(out):
    if name.endswith('.json'):
      raw = json.loads((out / name).read_text(), parse_constant=lambda c: pytest.fail(c))
      assert _numeric_strings(raw) == [], name
  raw = json.loads((out / 'spectral.json').read_text())
  assert raw['kappa'] is None and raw['kappa_null_because'] == 'infinite'


def test_cuda_probe_noise_is_dropped(caplog):
  # The parts (and so every script) install the filter when they are imported.
  from ntk_attention.study import parts  # pylint: disable=import-outside-toplevel,unused-import
  log = logging.getLogger('jax._src.xla_bridge')
  with caplog.at_level(logging.INFO):
    log.info("Unable to initialize backend 'cuda': could not find drivers")
    log.warning('CUDA backend failed to initialize: no driver.')
    log.warning('An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is '
                'not installed. Falling back to cpu.')
    log.warning('Platform tpu is experimental')
  assert [r.getMessage() for r in caplog.records] == ['Platform tpu is experimental']


def test_help_texts_match_the_code():
  helps = {}
  procs = {s: _start(f'{s}.py', ['--helpfull'], ROOT)
           for s in ('reproduce', 'spectral', 'ntk_distance', 'malleability', 'approximation',
                     'sensitivity', 'kernels')}
  for s, p in procs.items():
    helps[s] = p.communicate(timeout=300)[0]
    assert p.returncode in (0, 1), s
  # reproduce.py's --set example (help may wrap it) names a field of a part config.
  from ntk_attention.study import configs, overrides  # pylint: disable=import-outside-toplevel
  example = re.search(r'e\.g\.\s+"([^"]*)"', helps['reproduce'].split('--set:')[1])
  assert example
  overrides.parse_set([''.join(example.group(1).split())], configs.PART_CONFIGS)
  # kernels.py --method auto: what kernels.default_method picks.
  from ntk_attention import kernels, models  # pylint: disable=import-outside-toplevel
  fallback = kernels.default_method(models.build('mlp_attn_qkv', 4))
  method_help = helps['kernels'].split('--method:')[1].split('\n  --')[0]
  assert fallback in ' '.join(method_help.split())
