"""The documentation stays true to the tree: every section of docs/method.md that code or docs
cite exists, and README's Layout names exactly the files there are.

Citations. In this repository a section sign always means a section of docs/method.md (the
paper is cited by Table and Figure): `docs/method.md \u00a7N`, a bare `\u00a7N` (in method.md
itself and in docstrings), ranges `\u00a7N–M` and `\u00a7N–\u00a7M`, lists after a double sign
(`\u00a7\u00a7 N, M`), and the cells of a Markdown table's `\u00a7` column. method.md heads its
sections `## N. Title`. A citation of an item, `\u00a7N claim K` or `\u00a7N step K`, names a
numbered item `K. ` of that section.

Layout. README's `## Layout` holds one fenced block: one entry a line (its first word), two
spaces of indent a level, a folder ends in `/`. Every entry must exist, and every Python file
and every folder holding one under `ntk_attention/` and `scripts/` must be an entry.
"""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = os.path.join('docs', 'method.md')
SECTION = '\u00a7'
# Where citations are looked for: these folders (recursively) and files.
CITING_DIRS = ('ntk_attention', 'scripts', 'tests', 'docs')
CITING_FILES = ('README.md', 'BUILD.md')
CITING_SUFFIXES = ('.py', '.md', '.cfg', '.txt', '.toml')
# The folders README's Layout must list completely (every .py file and every package).
COMPLETE_DIRS = ('ntk_attention', 'scripts')
SKIP_DIRS = ('__pycache__',)

_NUMBER = r'\d+(?:\s*[–-]\s*' + SECTION + r'?\s*\d+)?'       # N, or a range N–M / N–§M
# A double sign opens a list ('§§ 8, 10'); after a single one, ', 5' is not a section.
_CITATION = re.compile(SECTION * 2 + r'\s*(?P<list>' + _NUMBER + r'(?:\s*(?:,|and)\s*' + SECTION
                       + r'?\s*' + _NUMBER + r')*)|' + SECTION + r'\s*(?P<one>' + _NUMBER + ')')
_ITEM = re.compile(r' (?:claim|step) (\d+)')      # '§1 claim 5', '§10 step 4'


def _read(rel):
  with open(os.path.join(ROOT, rel), encoding='utf-8') as f:
    return f.read()


def method_sections() -> dict:
  """{N: the numbers K of the section's numbered items `K. ...`} of docs/method.md's
  `## N. Title` sections."""
  parts = re.split(r'^## (\d+)\. ', _read(METHOD), flags=re.M)
  return {int(n): {int(k) for k in re.findall(r'^(\d+)\. ', body.split('\n## ')[0], re.M)}
          for n, body in zip(parts[1::2], parts[2::2])}


def _citing_files() -> list:
  files = [f for f in CITING_FILES if os.path.exists(os.path.join(ROOT, f))]
  for top in CITING_DIRS:
    for folder, dirs, names in os.walk(os.path.join(ROOT, top)):
      dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith('.'))
      files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in sorted(names)
                if n.endswith(CITING_SUFFIXES)]
  return files


def _expand(text: str, is_list: bool) -> list:
  """Section numbers of one citation's text: '8–10' -> [8, 9, 10]; '4, 9' (after a double
  sign) -> [4, 9]. A range must rise (an empty one is a typo: it cites nothing)."""
  items = re.split(r'\s*(?:,|and)\s*', text) if is_list else [text]
  out = []
  for item in items:
    ends = [int(n) for n in re.findall(r'\d+', item)]
    if len(ends) == 2 and ends[0] >= ends[1]:
      return [None]
    out += list(range(ends[0], ends[-1] + 1))
  return out


def _numbers(match) -> list:
  """The section numbers of one `_CITATION` match."""
  if match.group('list') is not None:
    return _expand(match.group('list'), is_list=True)
  return _expand(match.group('one'), is_list=False)


def _table_citations(text: str):
  """(line, number) of the cells of each Markdown table column headed by the section sign."""
  column = None
  for no, line in enumerate(text.splitlines(), 1):
    cells = [c.strip() for c in line.strip().strip('|').split('|')] if '|' in line else None
    if cells is None:
      column = None
    elif column is None:
      column = cells.index(SECTION) if SECTION in cells else None
    elif column < len(cells) and not set(cells[column]) <= set('-: '):
      for number in re.findall(r'\d+', cells[column]):
        yield no, int(number)


def citations() -> list:
  """(file:line, cited text, section number or None for a falling range, item number or
  None) of every citation."""
  found = []
  for rel in _citing_files():
    text = _read(rel)
    for match in _CITATION.finditer(text):
      line = text.count('\n', 0, match.start()) + 1
      item = _ITEM.match(text, match.end())
      for number in _numbers(match):
        found.append((f'{rel}:{line}', match.group(0).strip() + (item.group(0) if item else ''),
                      number, int(item.group(1)) if item else None))
    found += [(f'{rel}:{no}', f'| {n} | ({SECTION} column)', n, None)
              for no, n in _table_citations(text)]
  return found


def test_every_cited_method_section_exists():
  sections = method_sections()
  assert set(sections) == set(range(1, max(sections) + 1)), sorted(sections)
  # The items parse: the study's five claims, the protocol's four steps.
  assert {1, 2, 3, 4, 5} <= sections[1] and {1, 2, 3, 4} <= sections[10], sections
  found = citations()
  # Sanity floor: the code and docs cite method.md well over a hundred times; far fewer means
  # the pattern stopped matching, not that the citations went away.
  assert len(found) > 100, f'only {len(found)} citations found: has the citation form changed?'
  broken = [f'{where}: {cited!r}' for where, cited, n, item in found
            if n not in sections or (item is not None and item not in sections[n])]
  assert not broken, ('citations of docs/method.md sections that do not exist (sections: '
                      f'1–{max(sections)}):\n' + '\n'.join(broken))


def test_citation_forms_are_read():
  # The forms the module docstring promises, read as documented.
  def numbers(text):
    return [n for m in _CITATION.finditer(text) for n in _numbers(m)]
  s = SECTION
  assert numbers(f'docs/method.md {s}8') == [8]
  assert numbers(f'({s}6–7) and {s}8–{s}10') == [6, 7, 8, 9, 10]
  assert numbers(f'{s}4, {s}14; {s}1 claim 5') == [4, 14, 1]
  assert numbers(f'{s}3, 5 widths') == [3]
  assert numbers(f'{s}{s} 8, 10 and 12–13') == [8, 10, 12, 13]
  assert numbers(f'{s}7–5') == [None] and numbers(f'{s}n') == []
  assert _ITEM.match(f'{s}1 claim 5', 2).group(1) == '5'
  table = f'| choice | {s} | flag |\n|---|---|---|\n| ridge | 8 | --ridge |\n| eps | 9, 10 | x |'
  assert [n for _, n in _table_citations(table)] == [8, 9, 10]


# ------------------------------------------------------------------------------ README Layout

def layout_entries() -> list:
  """The paths README's Layout names ('ntk_attention/', 'ntk_attention/kernels.py', ...)."""
  readme = _read('README.md')
  section = re.search(r'^## Layout\n(.*?)(?=^## |\Z)', readme, re.M | re.S)
  assert section, "README.md has no '## Layout' section"
  block = re.search(r'^```[a-z]*\n(.*?)^```', section.group(1), re.M | re.S)
  assert block, "README's Layout has no fenced block"
  entries, parents = [], []
  for line in block.group(1).splitlines():
    if not line.strip():
      continue
    indent = len(line) - len(line.lstrip(' '))
    depth, odd = divmod(indent, 2)
    assert not odd and depth <= len(parents), f'Layout: bad indent on {line!r}'
    del parents[depth:]
    path = ''.join(parents) + line.split()[0]
    entries.append(path)
    if path.endswith('/'):
      parents.append(line.split()[0])
  return entries


def _tree_paths() -> set:
  """Every .py file, and every folder holding one, under COMPLETE_DIRS ('x/' for a folder)."""
  out = set()
  for top in COMPLETE_DIRS:
    for folder, dirs, names in os.walk(os.path.join(ROOT, top)):
      dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith('.')]
      rel = os.path.relpath(folder, ROOT).replace(os.sep, '/')
      py = [f'{rel}/{n}' for n in names if n.endswith('.py')]
      out.update(py)
      if py:
        out.add(rel + '/')
  return out


def test_readme_layout_matches_the_tree():
  entries = layout_entries()
  repeated = sorted({e for e in entries if entries.count(e) > 1})
  missing = sorted(e for e in entries
                   if not (os.path.isdir if e.endswith('/') else os.path.isfile)(
                       os.path.join(ROOT, e.rstrip('/'))))
  unnamed = sorted(_tree_paths() - set(entries))
  problems = []
  if repeated:
    problems.append('named twice: ' + ', '.join(repeated))
  if missing:
    problems.append("named but not in the tree (remove them from README's Layout, or add "
                    'the files):\n  ' + '\n  '.join(missing))
  if unnamed:
    problems.append("in the tree but not in README's Layout (add a line for each):\n  "
                    + '\n  '.join(unnamed))
  assert not problems, "README's Layout and the tree differ:\n" + '\n'.join(problems)
