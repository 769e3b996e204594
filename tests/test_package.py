"""The package's two layers: the core never imports the study pipeline, matplotlib or
markdown-it, and `import ntk_attention` loads none of them (README, Layout)."""
import ast
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = sorted(glob.glob(os.path.join(ROOT, 'ntk_attention', '*.py')))
HEAVY = ('matplotlib', 'markdown_it')


def _imported(path):
  """Every module name a file imports, at any depth (lazy imports inside functions too)."""
  names = []
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.append(node.module)
      names += [f'{node.module}.{a.name}' for a in node.names]
  return names


def test_core_modules_import_neither_the_study_nor_the_report_libraries():
  assert len(CORE) >= 15, CORE        # the glob found the core
  bad = {os.path.relpath(p, ROOT): n for p in CORE for n in _imported(p)
         if n.startswith('ntk_attention.study') or n.split('.')[0] in HEAVY}
  assert not bad, f'core modules importing the study layer or report libraries: {bad}'


def test_import_ntk_attention_loads_no_study_module_and_no_report_library():
  code = ('import sys, ntk_attention; '
          "print(' '.join(m for m in sys.modules if m.startswith('ntk_attention.study') "
          f"or m.split('.')[0] in {HEAVY!r}))")
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == [], proc.stdout
