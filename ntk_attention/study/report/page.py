"""Markdown tables and the self-contained HTML page of a report (floor 4).

The Markdown → HTML conversion is markdown-it-py's CommonMark with GitHub pipe tables; raw HTML in
the Markdown is escaped, never passed through. What is ours:
  * images are inlined as base64 data URIs (one file to send around), PNGs with `width`/`height`
    set to half their pixel size, so figures saved at 2× stay sharp on high-density screens;
  * headings get GitHub-style ids (`anchor`), so `[text](#anchor)` links work in both the
    Markdown and the HTML;
  * a fenced block whose info string is `details SUMMARY` becomes a folded
    `<details><summary>SUMMARY</summary><pre>…</pre></details>` (a plain code block in Markdown);
  * wide tables scroll inside their own box, so the page never grows wider than the window.
"""
import base64
import html
import os
import re
import struct
from typing import Sequence

import markdown_it
import numpy as np

_MIME = {'.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif',
         '.svg': 'image/svg+xml'}
_CSS = ('body{font-family:sans-serif;max-width:60em;margin:1.5em auto;padding:0 1em;line-height:1.45}'
        'table{border-collapse:collapse;margin:1em 0;display:block;max-width:100%;overflow-x:auto}'
        'th,td{border:1px solid #bbb;padding:.25em .6em;vertical-align:top}th{background:#f0f0f0}'
        'code{background:#f4f4f4;padding:0 .2em}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;'
        'overflow-wrap:anywhere}img{max-width:100%;height:auto;display:block;margin:.5em 0}'
        'details{margin:1em 0}summary{cursor:pointer}')


def _fmt_cell(v, floatfmt: str) -> str:
  if isinstance(v, np.generic):
    v = v.item()
  if v is None:
    return ''
  if isinstance(v, float):
    s = format(v, floatfmt)
  else:
    s = str(v)
  return s.replace('|', '\\|').replace('\n', ' ')


def markdown_table(rows: Sequence[dict], columns: Sequence[str], headers=None, floatfmt: str = '.3g') -> str:
  """A GitHub pipe table (no trailing newline); floats use `floatfmt`, None/missing -> empty, '|' -> '\\|'."""
  headers = list(columns) if headers is None else list(headers)
  if len(headers) != len(columns):
    raise ValueError(f'{len(headers)} headers for {len(columns)} columns')
  lines = ['| ' + ' | '.join(_fmt_cell(h, floatfmt) for h in headers) + ' |',
           '|' + '---|' * len(columns)]
  for row in rows:
    lines.append('| ' + ' | '.join(_fmt_cell(row.get(c), floatfmt) for c in columns) + ' |')
  return '\n'.join(lines)


def anchor(heading: str) -> str:
  """GitHub's heading id: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
  return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def _png_size(data: bytes):
  if data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR':
    return struct.unpack('>II', data[16:24])
  return None


def _image_tag(image_dir, src: str, alt: str) -> str:
  path = src if os.path.isabs(src) else os.path.join(os.fspath(image_dir), src)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'report image not found: {path}')
  with open(path, 'rb') as f:
    data = f.read()
  mime = _MIME.get(os.path.splitext(src)[1].lower(), 'application/octet-stream')
  size = _png_size(data)
  dims = f' width="{size[0] // 2}" height="{size[1] // 2}"' if size else ''
  uri = f'data:{mime};base64,' + base64.b64encode(data).decode('ascii')
  return f'<img alt="{html.escape(alt)}" src="{uri}"{dims}>'


def _renderer(image_dir):
  md = markdown_it.MarkdownIt('commonmark', {'html': False}).enable('table')
  fence = md.renderer.rules['fence']

  def image(self, tokens, idx, options, env):
    token = tokens[idx]
    alt = ''.join(c.content for c in (token.children or []))
    return _image_tag(image_dir, token.attrGet('src'), alt)

  def heading_open(self, tokens, idx, options, env):
    tokens[idx].attrSet('id', anchor(tokens[idx + 1].content))
    return self.renderToken(tokens, idx, options, env)

  def folded_fence(self, tokens, idx, options, env):
    info = tokens[idx].info.strip()
    if not info.startswith('details'):
      return fence(tokens, idx, options, env)
    summary = info[len('details'):].strip() or 'Details'
    return (f'<details><summary>{html.escape(summary)}</summary>\n<pre><code>'
            f'{html.escape(tokens[idx].content)}</code></pre></details>\n')

  md.add_render_rule('image', image)
  md.add_render_rule('heading_open', heading_open)
  md.add_render_rule('fence', folded_fence)
  return md


def html_report(markdown_text: str, image_dir) -> str:
  """Converts report Markdown into one self-contained HTML page (CommonMark + pipe tables).

  Images `![alt](file)` are read relative to `image_dir` and inlined (a missing one raises
  FileNotFoundError); the page title is the first level-1 heading. All text is HTML-escaped.
  """
  md = _renderer(image_dir)
  tokens = md.parse(markdown_text)
  title = next((tokens[i + 1].content for i, t in enumerate(tokens)
                if t.type == 'heading_open' and t.tag == 'h1'), 'Report')
  body = md.renderer.render(tokens, md.options, {})
  return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
          '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
          f'<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n'
          + body + '</body>\n</html>\n')
