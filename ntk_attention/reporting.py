"""Floor 4 in one namespace, for scripts: the results store, progress lines, figures and pages.

Each concept lives in its own module; this one only re-exports their public names:
  * `store`    — atomic JSON/CSV/npz/text files, the append-only JSONL store, `summarize`;
  * `progress` — `Progress` lines and `format_duration`;
  * `figures`  — `plot_lines`, `plot_panels`, `plot_bars`, `plot_scatter`, `plot_tornado`, `plot_spectra`;
  * `page`     — `markdown_table` and `html_report` (Markdown → one self-contained HTML file).
"""
from ntk_attention.figures import plot_bars, plot_lines, plot_panels, plot_scatter, plot_spectra, plot_tornado
from ntk_attention.page import html_report, markdown_table
from ntk_attention.progress import Progress, format_duration
from ntk_attention.store import JsonlStore, cell_key, read_json, summarize, write_csv, write_json, write_npz, write_text

__all__ = ['JsonlStore', 'Progress', 'cell_key', 'format_duration', 'html_report', 'markdown_table', 'plot_bars',
           'plot_lines', 'plot_panels', 'plot_scatter', 'plot_spectra', 'plot_tornado', 'read_json', 'summarize',
           'write_csv', 'write_json', 'write_npz', 'write_text']
