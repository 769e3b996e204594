"""Tests for the study's results files and pages (ntk_attention.study.store, progress, report.page, report.plots): atomic files, the JSONL store, progress, tables, figures, HTML (summaries: test_stats.py)."""
import base64
import csv
import json
import math
import os
import urllib.parse

import matplotlib.image
import numpy as np
import pytest

from ntk_attention.study import progress
from ntk_attention.study import progress as progress_lib
from ntk_attention.study import store
from ntk_attention.study import store as store_lib
from ntk_attention.study.report import page
from ntk_attention.study.report import plots


# --- atomic files and JSON ---------------------------------------------------------------------

def test_write_json_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
  p = tmp_path / 'r.json'
  store_lib.write_json(p, {'a': 1})
  before = p.read_bytes()
  with pytest.raises(TypeError):
    store_lib.write_json(p, {'b': object()})
  assert p.read_bytes() == before
  assert os.listdir(tmp_path) == ['r.json']


def test_atomic_write_failure_after_temp_created_cleans_up(tmp_path, monkeypatch):
  p = tmp_path / 'r.txt'
  store_lib.write_text(p, 'old')

  def broken_replace(src, dst):
    raise OSError('disk gone')

  monkeypatch.setattr(store.os, 'replace', broken_replace)
  with pytest.raises(OSError):
    store_lib.write_text(p, 'new')
  monkeypatch.undo()
  assert p.read_text() == 'old'
  assert os.listdir(tmp_path) == ['r.txt']


def test_json_round_trip_numpy_tuples_and_nonfinite(tmp_path):
  obj = {'i': np.int64(3), 'f': np.float32(0.5), 'b': np.bool_(True), 'arr': np.arange(3.0).reshape(3, 1),
         'tup': (1, 2), 'inf': math.inf, 'ninf': -np.inf, 'nan': float('nan'), 'nested': [{'x': np.float64(2.25)}]}
  p = tmp_path / 'o.json'
  store_lib.write_json(p, obj)
  raw = p.read_text()
  json.loads(raw, parse_constant=lambda c: pytest.fail(f'non-strict JSON token {c}'))
  back = store_lib.read_json(p)
  assert back['i'] == 3 and isinstance(back['i'], int)
  assert back['f'] == 0.5 and back['b'] is True
  assert back['arr'] == [[0.0], [1.0], [2.0]]
  assert back['tup'] == [1, 2]
  assert back['inf'] == math.inf and back['ninf'] == -math.inf and math.isnan(back['nan'])
  assert back['nested'] == [{'x': 2.25}]


def test_csv_round_trip(tmp_path):
  rows = [{'model': 'attn', 'width': 64, 'err': 0.125}, {'model': 'relu', 'err': np.float64(-1.5), 'extra': 'z'}]
  p = tmp_path / 't.csv'
  store_lib.write_csv(p, rows)
  with open(p, newline='') as f:
    reader = csv.DictReader(f)
    back = list(reader)
  assert reader.fieldnames == ['model', 'width', 'err', 'extra']
  assert back[0] == {'model': 'attn', 'width': '64', 'err': '0.125', 'extra': ''}
  assert back[1] == {'model': 'relu', 'width': '', 'err': '-1.5', 'extra': 'z'}
  store_lib.write_csv(p, rows, columns=['err'])
  with open(p, newline='') as f:
    assert [float(r['err']) for r in csv.DictReader(f)] == [0.125, -1.5]


# --- JSONL store -------------------------------------------------------------------------------

def _cells():
  return [{'model': m, 'width': w, 'seed': s, 'd': 0.1 * w + s} for m in ('a', 'b') for w in (8, 16) for s in (0, 1)]


def test_jsonl_store_append_records_done_keys_reset(tmp_path):
  store = store_lib.JsonlStore(tmp_path / 'sub' / 'res.jsonl')
  assert store.records() == []
  cells = _cells()
  for c in cells[:5]:
    store.append({**c, 'w64': np.int64(c['width']), 'big': math.inf})
  recs = store.records()
  assert [{k: r[k] for k in ('model', 'width', 'seed', 'd')} for r in recs] == cells[:5]
  assert all(r['big'] == math.inf and r['w64'] == r['width'] for r in recs)
  keys = store.done_keys(['model', 'width', 'seed'])
  assert keys == {(c['model'], c['width'], c['seed']) for c in cells[:5]}
  assert ('b', 16, 1) not in keys
  with pytest.raises(ValueError):
    store.done_keys(['model', 'missing'])
  store.reset()
  assert store.records() == [] and os.path.getsize(store.path) == 0


def test_jsonl_store_torn_last_line(tmp_path):
  store = store_lib.JsonlStore(tmp_path / 'res.jsonl')
  store.append({'k': 1})
  store.append({'k': 2})
  with open(store.path, 'a') as f:
    f.write('{"k": 3, "v"')  # Crash mid-write.
  with pytest.warns(UserWarning, match='torn'):
    assert [r['k'] for r in store.records()] == [1, 2]
  with pytest.warns(UserWarning, match='torn'):
    store.append({'k': 4})  # Must not glue onto the torn line.
  assert [r['k'] for r in store.records()] == [1, 2, 4]


def test_jsonl_store_corrupt_middle_line_raises(tmp_path):
  p = tmp_path / 'res.jsonl'
  p.write_text('{"k": 1}\nnot json\n{"k": 2}\n')
  with pytest.raises(ValueError, match=':2:'):
    store_lib.JsonlStore(p).records()


def test_jsonl_store_unserialisable_record_writes_nothing(tmp_path):
  store = store_lib.JsonlStore(tmp_path / 'res.jsonl')
  store.append({'k': 1})
  with pytest.raises(TypeError):
    store.append({'k': object()})
  assert store.records() == [{'k': 1}]


# --- progress ----------------------------------------------------------------------------------

def test_progress_lines_with_fake_clock(monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(progress.time, 'monotonic', lambda: now[0])
  lines = []
  prog = progress_lib.Progress(10, 'ntk_distance', log_fn=lines.append)
  prog.skip(2)
  now[0] += 12.3
  prog.update()
  assert lines == ['[ntk_distance] 2/10 cells already done (resumed)',
                   '[ntk_distance] 3/10 cells, 12.3 s/cell, ~1m26s left']  # 7 * 12.3 s = 86.1 s.
  now[0] += 12.3 * 7
  prog.update(7)
  assert lines[-1] == f'[ntk_distance] 10/10 cells, 12.3 s/cell, done in {progress_lib.format_duration(12.3 * 8)}'


def test_format_duration():
  assert progress_lib.format_duration(4.21) == '4.2s'
  assert progress_lib.format_duration(42.4) == '42s'
  assert progress_lib.format_duration(86.1) == '1m26s'
  assert progress_lib.format_duration(2 * 3600 + 5 * 60 + 7) == '2h05m'
  assert progress_lib.format_duration(3 * 86400 + 4 * 3600) == '3d04h'
  with pytest.raises(ValueError):
    progress_lib.format_duration(-1)


# --- markdown table ----------------------------------------------------------------------------

def test_markdown_table_exact():
  rows = [{'a': 1, 'b': 0.123456, 'c': 'x|y'}, {'a': np.int64(2), 'b': math.inf}]
  got = page.markdown_table(rows, ['a', 'b', 'c'], headers=['A', 'B', 'C'])
  assert got == ('| A | B | C |\n'
                 '|---|---|---|\n'
                 '| 1 | 0.123 | x\\|y |\n'
                 '| 2 | inf |  |')
  with pytest.raises(ValueError):
    page.markdown_table(rows, ['a', 'b'], headers=['A'])


# --- figures -----------------------------------------------------------------------------------

def _assert_png(path, returned):
  assert returned == str(path)
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
  assert img.std() > 0  # Something was drawn.


def test_plots_write_readable_pngs(tmp_path):
  x = np.array([8, 16, 32, 64])
  p = tmp_path / 'lines.png'
  _assert_png(p, plots.plot_lines(p, {'attn': (x, 1 / x, 0.1 / x), 'relu': (x, 2 / x, None)},
                                      'width', 'distance', 'd vs width', logx=True, logy=True))
  p = tmp_path / 'bars.png'
  _assert_png(p, plots.plot_bars(p, ['fgsm', 'pgd'], {'a': ([1.0, 2.0], [0.1, 0.2]), 'b': ([1.5, 0.5], None)},
                                     'influence change', 'attacks'))
  p = tmp_path / 'scatter.png'
  rng = np.random.default_rng(1)
  _assert_png(p, plots.plot_scatter(p, rng.standard_normal(50), rng.standard_normal(50), 'before', 'after', 's'))
  p = tmp_path / 'spectra.png'
  _assert_png(p, plots.plot_spectra(p, {'ntk': np.array([1e-3, 3.0, 0.2, -1e-12]), 'nngp': [2.0, 1.0]}, 'sp'))
  assert sorted(os.listdir(tmp_path)) == ['bars.png', 'lines.png', 'scatter.png', 'spectra.png']


def test_tornado_marks_an_open_interval_bound_with_an_arrow_at_the_axis_edge(tmp_path, monkeypatch):
  """A None bound (a bootstrap resample with an infinite ratio) runs to the axis edge and
  ends in an arrow there; a finite interval gets no arrow."""
  figs = []
  real_save = plots._save   # pylint: disable=protected-access
  monkeypatch.setattr(plots, '_save', lambda fig, path: figs.append(fig) or real_save(fig, path))
  rows = [{'label': 'eps = 0.1', 'value': 0.5, 'low': 0.2, 'high': None},
          {'label': 'tau = 0.2', 'value': 0.3, 'low': 0.1, 'high': 0.4},
          {'label': 'width = 4', 'value': -0.2, 'low': None, 'high': 0.0}]
  _assert_png(tmp_path / 't.png', plots.plot_tornado(tmp_path / 't.png', 0.4, rows, 't', 'x'))
  ax = figs[0].axes[0]
  arrows = [(l.get_marker(), l.get_xdata()[0], l.get_ydata()[0]) for l in ax.get_lines()
            if l.get_marker() in ('<', '>')]
  lo, hi = ax.get_xlim()
  assert sorted(arrows) == sorted([('>', hi, 0), ('<', lo, 2)])
  assert 'interval unbounded (arrow)' in [t.get_text() for t in figs[0].legends[0].get_texts()]


def test_plots_reject_nan(tmp_path):
  with pytest.raises(ValueError):
    plots.plot_lines(tmp_path / 'x.png', {'a': ([1, 2], [1.0, np.nan], None)}, 'x', 'y', 't')
  with pytest.raises(ValueError):
    plots.plot_spectra(tmp_path / 'x.png', {'a': [1.0, np.nan]}, 't')
  assert not (tmp_path / 'x.png').exists()


# --- HTML --------------------------------------------------------------------------------------

def test_html_report_self_contained(tmp_path):
  img = plots.plot_scatter(tmp_path / 'fig.png', [0, 1, 2], [0, 1, 3], 'x', 'y', 't')
  table = page.markdown_table([{'n': 1, 'v': 0.5}, {'n': 2, 'v': 1.5}], ['n', 'v'])
  md = (f'# Report <script>\n\nWe check that a < b & **bold** and `k<2>` hold.\n\n'
        f'## Table, ε and κ³\n\n{table}\n\n- first item\n- second with **bold**\n\n'
        f'See [the table](#{page.anchor("Table, ε and κ³")}).\n\n![influence](fig.png)\n\n'
        '```details Commands (2)\npython a.py --x=<1>\npython b.py\n```\n\n<b>raw</b>\n')
  out = page.html_report(md, tmp_path)
  assert isinstance(out, str)
  assert out.count('<table>') == 1 and out.count('<tr>') == 3 and '<td>1.5</td>' in out
  assert '<h1 id="report-script">Report &lt;script&gt;</h1>' in out and '<script>' not in out
  assert '<title>Report &lt;script&gt;</title>' in out
  assert '<h2 id="table-ε-and-κ³">' in out    # the link is percent-encoded; browsers decode it
  assert f'<a href="#{urllib.parse.quote("table-ε-and-κ³")}">the table</a>' in out
  assert 'a &lt; b &amp; <strong>bold</strong>' in out and '<code>k&lt;2&gt;</code>' in out
  assert out.count('<li>') == 2
  assert '&lt;b&gt;raw&lt;/b&gt;' in out      # raw HTML in the Markdown is text, not markup
  assert ('<details><summary>Commands (2)</summary>\n<pre><code>python a.py --x=&lt;1&gt;\npython b.py\n'
          '</code></pre></details>') in out
  data = base64.b64encode(open(img, 'rb').read()).decode('ascii')
  h, w = matplotlib.image.imread(img).shape[:2]
  assert f'<img alt="influence" src="data:image/png;base64,{data}" width="{w // 2}" height="{h // 2}">' in out
  assert 'src="fig.png"' not in out


def test_html_report_missing_image_raises(tmp_path):
  with pytest.raises(FileNotFoundError):
    page.html_report('![x](nope.png)', tmp_path)


def test_compare_numbers_pairs_keys_and_measures_each_difference():
  """`study.compare`: NaN equals NaN, a boolean flip or number-to-null is `changed`, the
  relative difference is |a − b| / max(|a|, |b|) (hand-computed), run-specific fields
  (wall times) are left out, keys only one side has are listed."""
  from ntk_attention.study import compare
  before = compare.flatten({'r': [{'x': 1.0, 'y': float('nan'), 'ok': True, 'wall_s': 3.0},
                                  {'x': 4.0, 'z': 2.0}], 'gone': 1}, 'f.json:')
  after = compare.flatten({'r': [{'x': 1.0, 'y': float('nan'), 'ok': False, 'wall_s': 9.0},
                                 {'x': 5.0, 'z': None}], 'new': 1}, 'f.json:')
  assert 'f.json:.r[0].wall_s' not in before
  s = compare.compare_numbers(before, after)
  t = s['total']
  assert (t['values'], t['equal'], t['changed']) == (5, 2, 2)
  assert t['max_rel_diff'] == pytest.approx(1 / 5) and t['max_abs_diff'] == pytest.approx(1.0)
  assert t['worst'] == {'key': 'f.json:.r[1].x', 'before': 4.0, 'after': 5.0}
  assert s['only_before'] == ['f.json:.gone'] and s['only_after'] == ['f.json:.new']
  assert list(s['files']) == ['f.json']
