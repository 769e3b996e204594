"""README's composition example runs as written and shows what it says it shows."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = '<!-- readme-example:'


def _example() -> str:
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  after = text[text.index(MARKER):]
  match = re.search(r'```python\n(.*?)```', after, re.S)
  assert match, 'no python block after the readme-example marker'
  return match.group(1)


def test_readme_example_prints_a_converging_table_and_an_accuracy(tmp_path):
  out = subprocess.run([sys.executable, '-c', _example()], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
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
