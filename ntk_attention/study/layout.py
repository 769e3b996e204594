"""The run folder of a reproduction, D: where each part, its marker and log, the training
cache, the report and its figures live. The runner (`study.pipeline`) writes this layout and
the report (`study.report.sections.build`) reads it; neither spells a path itself
(docs/method.md §16).

  D/<part>/                   a part's JSON, CSV, tables and figures (`part_dir`), named by
                              `CONDITIONING` (the spectral part) ... `SCALING`, `WIDTH_THRESHOLD`,
                              `JOINT_SEARCH`, `binary(dataset, classes)`, `variant(name, kind)`,
                              `INFLUENCE_ATTACK`, `APPROXIMATION`
  D/<part>/part.json          the marker of a finished part: its kind, config, wall time
  D/<part>/log.txt            the part's log and printed output
  D/<part>/<kind>.json        its results (`results`), <kind>_settings.json the sizes as used
  D/cache/train/              trained parameters shared by the parts (study.cache)
  D/report.md, report.html    the report; D/figures/ its figures, redrawn on every build
"""
import os
from typing import Sequence, Union

# Part folders, relative to D.
CONDITIONING = 'spectral'     # the spectral part: spectra and κ of G^k (docs/method.md §5)
NTK_DISTANCE = 'ntk_distance'
MALLEABILITY = 'malleability'
INTERVENTIONS = 'interventions'
ADVERSARIAL_TRAINING = 'adversarial_training'
SENSITIVITY = 'sensitivity'
SCALING = 'scaling'
WIDTH_THRESHOLD = 'width_threshold'
JOINT_SEARCH = 'joint_search'
BEYOND = 'beyond'
INFLUENCE_ATTACK = BEYOND + '/influence_attack'
APPROXIMATION = BEYOND + '/approximation'

# Files and folders.
MARKER = 'part.json'
LOG = 'log.txt'
CACHE = 'cache'
TRAIN_CACHE = CACHE + '/train'
REPORT_MD = 'report.md'
REPORT_HTML = 'report.html'
FIGURES = 'figures'


def binary(dataset: str, classes: Union[str, Sequence[int]]) -> str:
  """The folder of the binary task `dataset` with `classes` ('3,8' or (3, 8)):
  'binary_<dataset>_3_8'. Also the prefix of its figures in D/figures/."""
  if isinstance(classes, str):
    classes = [c.strip() for c in classes.split(',') if c.strip()]
  return f"binary_{dataset}_{'_'.join(str(c) for c in classes)}"


def variant(name: str, kind: str) -> str:
  """The folder of a 'beyond' attention variant's `kind` run ('ntk_distance' or
  'malleability'): 'beyond/<name>/<kind>'."""
  return f'{BEYOND}/{name}/{kind}'


def path(d: str, *names: str) -> str:
  """D/<names...> with the parts' '/'-separated names in the platform's form."""
  return os.path.join(d, *(p for n in names for p in n.split('/')))


def part_dir(d: str, sub: str) -> str:
  return path(d, sub)


def marker(d: str, sub: str) -> str:
  return path(d, sub, MARKER)


def log(d: str, sub: str) -> str:
  return path(d, sub, LOG)


def results(d: str, sub: str, kind: str, suffix: str = '.json') -> str:
  """D/<sub>/<kind><suffix>: a part's results ('.json'), its settings ('_settings.json'),
  its arrays ('_spectra.npz' for spectral)."""
  return path(d, sub, kind + suffix)


def train_cache(d: str) -> str:
  return path(d, TRAIN_CACHE)


def report_md(d: str) -> str:
  return path(d, REPORT_MD)


def report_html(d: str) -> str:
  return path(d, REPORT_HTML)


def figures(d: str) -> str:
  return path(d, FIGURES)


__all__ = ['CONDITIONING', 'NTK_DISTANCE', 'MALLEABILITY', 'INTERVENTIONS', 'ADVERSARIAL_TRAINING',
           'SENSITIVITY', 'SCALING', 'WIDTH_THRESHOLD', 'JOINT_SEARCH', 'BEYOND',
           'INFLUENCE_ATTACK', 'APPROXIMATION', 'MARKER',
           'LOG', 'CACHE', 'TRAIN_CACHE', 'REPORT_MD', 'REPORT_HTML', 'FIGURES', 'binary',
           'variant', 'path', 'part_dir', 'marker', 'log', 'results', 'train_cache',
           'report_md', 'report_html', 'figures']
