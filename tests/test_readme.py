"""README's marked examples run as written, each in a fresh interpreter, and show what they
say they show.

They run under the tests' XLA flags (tests/conftest.py: optimisation level 0, the elemental
emitters, the tests' compilation cache), not the user's: what they print is checked against
bounds that hold under either (a converging table, rates within [0, 100] %), and compiling
is most of their time (measured alone: the own-model example, 137 s under XLA's defaults, 96 s
under the tests' flags)."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = '<!-- readme-example:'


def _examples() -> list:
  """The python block after each readme-example marker, in README order."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  blocks = []
  for part in text.split(MARKER)[1:]:
    match = re.match(r'[^\n]*-->\n```python\n(.*?)```', part, re.S)
    assert match, 'no python block right after a readme-example marker'
    blocks.append(match.group(1))
  assert len(blocks) == 2, f'expected 2 marked examples, found {len(blocks)}'
  return blocks


def _run(code, tmp_path):
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_readme_example_prints_a_converging_table_and_an_accuracy(tmp_path):
  out = _run(_examples()[0], tmp_path)
  rows = [line.split('|') for line in out.stdout.splitlines() if re.match(r'\s*\d+ \|', line)]
  assert 'width m' in out.stdout and len(rows) == 3
  widths = [int(r[0]) for r in rows]
  errors = [float(r[1]) for r in rows]
  scaled = [float(r[2]) for r in rows]
  assert errors == sorted(errors, reverse=True), errors
  # ~1/√m: the error falls by about √(ratio of widths) at each step, err·√m stays put
  # (each err is an RMS over 16 draws, a few tens of per cent noisy).
  for (m1, e1), (m2, e2) in zip(zip(widths, errors), zip(widths[1:], errors[1:])):
    assert 0.4 < (e1 / e2) / (m2 / m1) ** 0.5 < 2.5, (m1, e1, m2, e2)
  assert max(scaled) / min(scaled) < 2.5
  accuracy = re.search(r'test accuracy \(NTK regression\): (\d+)%', out.stdout)
  assert accuracy and int(accuracy.group(1)) >= 80, out.stdout


def test_readme_own_model_prints_distances_and_malleability(tmp_path):
  out = _run(_examples()[1], tmp_path)
  models, widths = ('relu_mlp', 'deep_softmax'), (64, 256, 1024)
  rows = [[c.strip() for c in line.split('|')] for line in out.stdout.splitlines()
          if re.match(r'\w+\s+\|\s+\d+ \|', line)]
  assert 'width m' in out.stdout and len(rows) == 6, out.stdout
  assert [(r[0], int(r[1])) for r in rows] == [(n, m) for n in models for m in widths]
  for r in rows:        # mean relative distances over the seeds: finite, positive
    assert all(0 < float(v) < 1e3 for v in r[2:4]), r
  line = re.search(r'^flip rate .*$', out.stdout, re.M)
  assert line, out.stdout
  rates = dict(re.findall(r'(\w+) (\d+\.\d) %', line.group(0)))
  assert sorted(rates) == sorted(models), out.stdout
  assert all(0 <= float(v) <= 100 for v in rates.values()), rates
  ratio = re.search(r'malleability ratio deep_softmax / relu_mlp: (\S+)', out.stdout)
  assert ratio, out.stdout
  if float(rates['relu_mlp']) >= 1:     # the printed ratio is that of the printed rates
    want = float(rates['deep_softmax']) / float(rates['relu_mlp'])
    assert abs(float(ratio.group(1)) - want) <= 0.02 * want + 0.01, (ratio.group(1), rates)


def test_readme_commands_use_the_virtualenv_of_its_install():
  """README installs into .venv and never activates it: every command it shows that runs a
  script or pytest calls .venv/bin/python (a bare `python scripts/...` has no jax)."""
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  commands = [line.strip() for line in text.splitlines()
              if re.match(r'\s{4}\S', line) and re.search(r'\bpython3?\b', line)]
  assert len(commands) >= 10, commands
  for command in commands:
    for call in re.findall(r'(\S*python3?) (?:scripts/|-m pytest|-c)', command):
      assert call == '.venv/bin/python', command
  assert re.search(r'python3 -m venv \.venv && \.venv/bin/pip install', text)
