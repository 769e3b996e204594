"""Typed configurations of the study's parts: values, not flags.

Every part (`study.parts.<name>.run(config, out_dir, context)`) takes one of these; a script
maps its flags onto the same dataclass (scripts/<name>.py), and a preset
(`study.presets`) builds them for a whole reproduction. Nothing between the parts is a
command-line string. The fields mirror the scripts' flags (same names, same defaults; the
flags' help texts say what each means, docs/method.md the [choice]s).

The building blocks already in the core are reused as they are: `training.TrainConfig`,
`malleability.Setup` (with `attacks.AttackConfig`) and, for sensitivity,
`study.sensitivity.Baseline`.
"""
import dataclasses
from typing import Optional, Tuple

from ntk_attention import malleability
from ntk_attention import training

MODELS = ('relu_mlp', 'mlp_attn')


@dataclasses.dataclass(frozen=True)
class Data:
  """Which points a part loads (`data.load`).

  `classes`: () = every class. `fit_to_pool`: True shrinks n_train / n_test to fit a small
  pool (the scripts' default sizes); False honours the sizes or refuses them.
  """
  dataset: str = 'mnist_sample'
  classes: Tuple[int, ...] = ()
  n_train: int = 1000
  n_test: int = 500
  seed: int = 0
  data_dir: Optional[str] = None
  fit_to_pool: bool = True


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """Attention options of the built-in models (docs/method.md §3 variants) and the first
  layer's init std (§4). `per_model()` is what `models.build` takes per model name."""
  attn_depth: int = 1
  attn_shared: bool = True
  attn_rank: int = 0
  attn_normalize: str = 'linear'
  attn_temperature: Optional[float] = None
  init_std: float = 0.01
  qkv_mechanism: str = 'IDENTITY'
  qkv_heads: int = 1

  def per_model(self) -> dict:
    """{'relu_mlp': {...}, 'mlp_attn': {...}, 'mlp_attn_qkv': {...}} `models.build` options."""
    attn = dict(depth=self.attn_depth, shared=self.attn_shared, rank=self.attn_rank or None,
                normalize=self.attn_normalize, temperature=self.attn_temperature)
    init = {'init_std': self.init_std}
    return {'relu_mlp': init, 'mlp_attn': dict(attn, **init),
            'mlp_attn_qkv': dict(mechanism=self.qkv_mechanism, n_heads=self.qkv_heads, **init)}


@dataclasses.dataclass(frozen=True)
class Spectral:
  """scripts/spectral.py: κ(G), κ_d, κ(G³) on the training points, over `n_grid`, variants."""
  data: Data = Data()
  n_grid: Tuple[int, ...] = (25, 50, 100, 200, 500, 1000)
  rtol: float = 1e-10
  eps: float = 0.3
  depths: Tuple[int, ...] = (1, 2, 3)
  ranks: Tuple[int, ...] = (5, 10, 20)
  variant_n: int = 10


@dataclasses.dataclass(frozen=True)
class Kernels:
  """scripts/kernels.py: empirical vs analytic NTK at initialisation over widths × seeds."""
  data: Data = Data()
  models: Tuple[str, ...] = MODELS
  widths: Tuple[int, ...] = (16, 64, 256, 1024, 4096)
  seeds: int = 4
  method: str = 'auto'
  save_kernels: str = ''
  out_dim: int = 0
  options: ModelOptions = ModelOptions()


@dataclasses.dataclass(frozen=True)
class Distance:
  """scripts/ntk_distance.py: trained models' distance to the NTK regime over widths."""
  data: Data = Data()
  train: training.TrainConfig = training.TrainConfig()
  models: Tuple[str, ...] = MODELS
  widths: Tuple[int, ...] = (16, 64, 256, 1024, 4096)
  seeds: int = 3
  ridge: float = 1e-3
  options: ModelOptions = ModelOptions()


@dataclasses.dataclass(frozen=True)
class Malleability:
  """scripts/malleability.py: the influence-malleability protocol (docs/method.md §8–10)."""
  data: Data = Data()
  train: training.TrainConfig = training.TrainConfig()
  models: Tuple[str, ...] = MODELS
  width: int = 1024
  seeds: int = 3
  attacks: Tuple[str, ...] = ('fgsm', 'pgd', 'mim')
  epsilons: Tuple[float, ...] = (0.3,)
  setup: malleability.Setup = malleability.Setup()
  retrain: bool = False
  interventions: Tuple[str, ...] = ()
  adversarial_training: bool = False
  save_arrays: str = ''
  options: ModelOptions = ModelOptions()


@dataclasses.dataclass(frozen=True)
class Approximation:
  """scripts/approximation.py: kernel-regression error and kernel-target alignment."""
  data: Data = Data()
  ridge: float = 1e-3
  k_top: int = 5
  synthetic_seeds: int = 3
  noise: float = 0.0


@dataclasses.dataclass(frozen=True)
class Sensitivity:
  """scripts/sensitivity.py: one unpublished choice varied at a time (docs/method.md §12).

  The baseline setting (`study.parts.sensitivity.baseline`) is these fields, with `epochs`
  from `train`, `init_std` from `options` and `n_train` from `data`; `variations`: the
  'CHOICE=V1,V2;…' text ('' = the default grid). `models`: (reference, candidate).
  """
  data: Data = Data()
  train: training.TrainConfig = training.TrainConfig()
  tasks: str = 'all+binary'
  variations: str = ''
  attacks: Tuple[str, ...] = ('fgsm', 'pgd', 'mim')
  models: Tuple[str, ...] = MODELS
  seeds: int = 3
  width: int = 1024
  eps: float = 0.3
  eps_units: str = 'pixel'
  tau: float = 0.1
  ridge: float = 1e-3
  score: str = 'mean'
  kernel: str = 'empirical'
  retrain: bool = False
  pgd_steps: int = 20
  options: ModelOptions = ModelOptions()


@dataclasses.dataclass(frozen=True)
class Scaling:
  """scripts/scaling.py: malleability against n (docs/method.md §15). `models`: (reference,
  candidate)."""
  data: Data = Data()
  train: training.TrainConfig = training.TrainConfig()
  n_grid: Tuple[int, ...] = (250, 500, 1000, 2000, 4000)
  seeds: int = 3
  width: int = 1024
  models: Tuple[str, ...] = MODELS
  attack: str = 'pgd'
  eps: float = 0.3
  eps_units: str = 'pixel'
  tau: float = 0.1
  max_memory_gb: float = 0.0
  options: ModelOptions = ModelOptions()


@dataclasses.dataclass(frozen=True)
class WidthThreshold:
  """scripts/width_threshold.py: the width m*(ε) at which a model's empirical NTK reaches its
  kernel, against the Gram matrix's condition number (docs/method.md §18).

  `families`: 'synthetic' (inputs with κ(G) on `kappas`, `synthetic_n` points in
  `synthetic_d` dimensions) and/or 'real' (nested subsets of `data.dataset` of the sizes
  `n_grid`; `data.n_train` is not used). `train_widths`: the widths of the after-training
  distance, () = none; `train`: SGD on the MSE (the gradient-flow comparison).
  """
  data: Data = Data(n_test=1)
  train: training.TrainConfig = training.TrainConfig(
      optimizer='sgd', lr=0.1, epochs=100, batch_size=1024, weight_decay=0.0, loss='mse')
  models: Tuple[str, ...] = MODELS
  families: Tuple[str, ...] = ('synthetic', 'real')
  kappas: Tuple[float, ...] = (2.0, 10.0, 100.0, 1000.0, 10000.0)
  synthetic_n: int = 32
  synthetic_d: int = 64
  n_grid: Tuple[int, ...] = (25, 50, 100, 200)
  widths: Tuple[int, ...] = (16, 64, 256, 1024, 4096, 16384)
  seeds: int = 8
  eps: float = 0.1
  train_widths: Tuple[int, ...] = (8, 32, 128)
  options: ModelOptions = ModelOptions(init_std=1.0)


@dataclasses.dataclass(frozen=True)
class JointSearch:
  """study.parts.joint_search: a factorial grid over the choices that moved the ratio (ε and
  its units, init_std, n_train, epochs), both tasks, every point over `seeds`; the MLP-Attn
  training search (`train_search`: (lr, batch_size, epochs), batch_size 0 = full batch); and
  the rounding check (`rounding`: the study-convention point rerun on inputs nudged by one
  float32 ulp). `data.n_train` is unused (the grid's `n_trains` are the sizes); `data.n_test`
  is the evaluation set. Sized for a CPU by default (docs/method.md §12)."""
  data: Data = Data(n_test=200)
  train: training.TrainConfig = training.TrainConfig()
  tasks: str = 'all+binary'
  eps: Tuple[float, ...] = (0.1, 0.3)
  eps_units: Tuple[str, ...] = ('pixel', 'std')
  init_std: Tuple[float, ...] = (0.01, 1.0)
  n_trains: Tuple[int, ...] = (200, 400)
  epochs: Tuple[int, ...] = (30, 100)
  attacks: Tuple[str, ...] = ('pgd',)
  seeds: int = 3
  width: int = 256
  tau: float = 0.1
  ridge: float = 1e-3
  kernel: str = 'empirical'
  train_search: Tuple[Tuple[float, int, int], ...] = (
      (1e-3, 128, 100), (1e-3, 128, 500), (1e-2, 128, 500), (3e-3, 32, 200),
      (1e-3, 0, 500), (1e-2, 0, 500), (1e-1, 0, 500))
  rounding: bool = True
  models: Tuple[str, ...] = MODELS
  options: ModelOptions = ModelOptions()


PART_CONFIGS = {'spectral': Spectral, 'kernels': Kernels, 'ntk_distance': Distance,
                'malleability': Malleability, 'approximation': Approximation,
                'sensitivity': Sensitivity, 'scaling': Scaling,
                'width_threshold': WidthThreshold, 'joint_search': JointSearch}


def as_dict(config) -> dict:
  """A config as plain JSON values (NamedTuples as dicts, tuples as lists): what a part's
  marker and the report record, and what decides whether a finished part is reused."""
  def plain(v):
    if dataclasses.is_dataclass(v):
      return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if hasattr(v, '_asdict'):
      return {k: plain(x) for k, x in v._asdict().items()}
    if isinstance(v, (tuple, list)):
      return [plain(x) for x in v]
    return v
  return plain(config)


__all__ = ['Data', 'ModelOptions', 'Spectral', 'Kernels', 'Distance', 'Malleability',
           'Approximation', 'Sensitivity', 'Scaling', 'WidthThreshold', 'JointSearch',
           'PART_CONFIGS', 'as_dict']
