"""The entries of scripts/benchmark.py, one module per concern.

  harness     Args, timing (`measure`), result rows (`make_row`), shared by every entry
  ntk         closed-form empirical NTK of the study's models vs NT's generic methods
  ntk_head    closed-form eNTK of a composed Dense/ReLU head vs NT's generic methods
  influence   exact leave-one-out influence vs brute-force KRR refits
  training    vmapped seeds vs a sequential loop over seeds
  reproduce   scripts/reproduce.py with isolated parts vs one process and caches
  compiles    cells that vary values: a program per value vs one per shape
  preset      the quick preset's programs: the previous code paths vs the library's
  sensitivity variations that keep the trained model: the clean side recomputed vs memoised
  startup     import ntk_attention in a fresh interpreter: installed packages vs others first
  table       the printed table

Importable as `benchmarks.<name>` because Python puts a script's folder (scripts/) on
sys.path. Each entry is `run(args: harness.Args) -> list[dict]`; REGISTRY names them in the
order `--only=` (all) runs them.
"""
from typing import Callable, Dict, List

from benchmarks import compiles
from benchmarks import harness
from benchmarks import influence
from benchmarks import ntk
from benchmarks import ntk_head
from benchmarks import preset
from benchmarks import reproduce
from benchmarks import sensitivity
from benchmarks import startup
from benchmarks import training

REGISTRY: Dict[str, Callable[[harness.Args], List[dict]]] = {
    'ntk': ntk.run,
    'ntk_head': ntk_head.run,
    'influence': influence.run,
    'training': training.run,
    'reproduce': reproduce.run,
    'compiles': compiles.run,
    'preset': preset.run,
    'sensitivity': sensitivity.run,
    'startup': startup.run,
}
