"""The reproduction's settings (`Study`) and its presets, as values.

`Study` has one field per setting of scripts/reproduce.py, with the flag's name, default and
help (reproduce.py defines its flags from these fields: `--n_grid=25,50` sets `n_grid`).
A preset is a function returning a `Study`; its docstring says what it is sized for and
where it departs from the study. `study.pipeline.parts_of(study)` turns a `Study` into
each part's typed config (`study.configs`); `study.runner.run` runs them.

  from ntk_attention.study import presets, runner
  study = dataclasses.replace(presets.quick(), parts=('spectral',))
  runner.run(study, 'results/quick')
"""
import dataclasses
from typing import Mapping, Optional, Tuple

from ntk_attention import data
from ntk_attention.study import overrides

# The study's parts, in running order; OPTIONAL_PARTS run only when named in `parts`.
PARTS = ('spectral', 'ntk_distance', 'malleability', 'binary', 'interventions',
         'adversarial_training', 'sensitivity', 'beyond')
OPTIONAL_PARTS = ('scaling', 'width_threshold', 'joint_search')
# Beyond the study: attention variants (study.pipeline.VARIANTS), the influence-targeted
# attack, the approximation error.
VARIANT_NAMES = ('qkv_identity', 'qkv_softmax', 'softmax', 'depth2_shared', 'depth2_recomputed',
                 'rank5', 'rank20', 'baseline')
BEYOND_PARTS = ('variants', 'influence_attack', 'approximation')
MODELS_HELP = ("built-in names (relu_mlp, mlp_attn, mlp_attn_qkv) and/or 'module:function' "
               'entries: a factory(width, out_dim) returning a models.Model')


def _f(default, help_text: str, **meta):
  """A field with its flag's help; `choices` makes an enum flag, `sep` splits a tuple."""
  return dataclasses.field(default=default, metadata=dict(help=help_text, **meta))


@dataclasses.dataclass(frozen=True)
class Study:
  """Every setting of a reproduction (fields = reproduce.py's flags, same names, defaults).

  Tuples are the flags' comma lists ('+'-separated for `binary_tasks`). A size of 0 means
  "the part's default" as each help says.
  """
  # data
  dataset: str = _f('mnist_sample', data.DATASET_HELP)
  classes: Tuple[int, ...] = _f((), "Class ids to keep, e.g. '3,8' (binary task); '' = all.")
  n_train: int = _f(1000, 'Training points (stratified, seeded subsample).')
  n_test: int = _f(500, 'Test / evaluation points (stratified, seeded subsample).')
  seed: int = _f(0, 'Seed of the data subsample (and the base of model seeds).')
  data_dir: Optional[str] = _f(None, 'tensorflow-datasets data folder.')
  matmul_precision: str = _f('highest', "Precision of float32 matrix products "
                             "('jax_default_matmul_precision'): 'highest' is true float32; "
                             "'default' lets GPUs use TF32 and TPUs bfloat16 passes.",
                             choices=('highest', 'high', 'default'))
  parts: Tuple[str, ...] = _f(PARTS, f'Parts to run, from {PARTS + OPTIONAL_PARTS} (the '
                              f'default: all but {", ".join(OPTIONAL_PARTS)}).')
  # spectral
  n_grid: Tuple[int, ...] = _f((25, 50, 100, 200, 500, 1000),
                               'spectral: subset sizes of the κ(n) curve.')
  # ntk_distance
  widths: Tuple[int, ...] = _f((16, 64, 256, 1024, 4096), 'ntk_distance: widths.')
  ntk_seeds: int = _f(3, 'ntk_distance: seeds per width.')
  ntk_models: Tuple[str, ...] = _f(('relu_mlp', 'mlp_attn'), 'ntk_distance: models, '
                                   + MODELS_HELP + '.')
  # malleability
  mall_models: Tuple[str, ...] = _f(('relu_mlp', 'mlp_attn'),
                                    'malleability parts (malleability, binary, interventions, '
                                    'adversarial_training, the influence attack): models, as '
                                    '--ntk_models.')
  mall_width: int = _f(1024, 'malleability parts: width [choice].')
  mall_seeds: int = _f(3, 'malleability parts: seeds.')
  attacks: Tuple[str, ...] = _f(('fgsm', 'pgd', 'mim'), 'malleability parts: attacks.')
  epsilons: Tuple[float, ...] = _f((0.1, 0.2, 0.3, 0.5), 'malleability part: the ε sweep.')
  tau: float = _f(0.1, 'malleability parts: top-τ fraction [choice].')
  kernel: str = _f('empirical', 'malleability parts: influence kernel.',
                   choices=('empirical', 'analytic'))
  eps_units: str = _f('pixel', "malleability parts: units of ε, [0, 1] pixels or the training "
                      "pixels' std [choice, docs/method.md §9].", choices=('pixel', 'std'))
  binary_tasks: Tuple[str, ...] = _f(('same',), "binary part: '+'-separated DATASET[:CLASSES] "
                                     "tasks; 'same' = --dataset; without CLASSES the study's "
                                     'pair for the dataset (MNIST 3,8, CIFAR-10 1,0), e.g. '
                                     "'mnist:3,8+cifar10:1,0'.", sep='+')
  binary_n_train: int = _f(0, 'binary part: n_train (0 = 1000, shrunk to fit the pool).')
  binary_n_test: int = _f(0, 'binary part: n_test (0 = 500, shrunk to fit the pool).')
  interventions: Tuple[str, ...] = _f(('curated', 'transformed', 'adversarial'),
                                      'interventions part.')
  intervention_attacks: Tuple[str, ...] = _f(('pgd',), 'interventions part: attacks measured '
                                             'after each retrained intervention.')
  at_epochs: int = _f(0, 'adversarial_training part: epochs (0 = --epochs).')
  at_n_train: int = _f(0, 'adversarial_training part: n_train (0 = --n_train).')
  # beyond
  beyond_variants: Tuple[str, ...] = _f(VARIANT_NAMES, f'beyond part: model variants, from '
                                        f'{VARIANT_NAMES}.')
  beyond_n_train: int = _f(300, 'beyond part: n_train (QKV NTKs cost N·C·#params).')
  beyond_n_test: int = _f(100, 'beyond part: n_test.')
  beyond_epochs: int = _f(0, 'beyond part: epochs (0 = --epochs).')
  beyond_widths: Tuple[int, ...] = _f((16, 64, 256), 'beyond part: widths of the NTK-distance '
                                      'runs.')
  beyond_width: int = _f(64, 'beyond part: width of the malleability runs.')
  beyond_seeds: int = _f(2, 'beyond part: seeds.')
  beyond_parts: Tuple[str, ...] = _f(BEYOND_PARTS, "beyond part: which of 'variants' "
                                     "(--beyond_variants, each with ntk_distance and "
                                     "malleability), 'influence_attack', 'approximation'.")
  # scaling (optional part)
  scaling_n_grid: Tuple[int, ...] = _f((250, 500, 1000, 2000), 'scaling part: training-set '
                                       'sizes n (nested subsets; PGD at ε = 0.3, --mall_width, '
                                       '--mall_seeds).')
  # width_threshold (optional part)
  wt_kappas: Tuple[float, ...] = _f((2.0, 10.0, 100.0, 1000.0, 10000.0), 'width_threshold part: '
                                    'κ(G) of the synthetic inputs.')
  wt_n_grid: Tuple[int, ...] = _f((25, 50, 100, 200), 'width_threshold part: sizes n of the '
                                  'nested real subsets of --dataset.')
  wt_widths: Tuple[int, ...] = _f((16, 64, 256, 1024, 4096, 16384), 'width_threshold part: '
                                  'widths of the criterion at initialisation.')
  wt_seeds: int = _f(8, 'width_threshold part: seeds (>= 3 for intervals).')
  wt_eps: float = _f(0.1, 'width_threshold part: ε of the threshold m*(ε).')
  wt_train_widths: Tuple[int, ...] = _f((8, 32, 128), 'width_threshold part: widths of the '
                                        'after-training distance (SGD, MSE); empty = none.')
  # sensitivity
  sens_n_train: int = _f(0, 'sensitivity part: baseline n_train (0 = --n_train).')
  sens_n_test: int = _f(0, 'sensitivity part: n_test (0 = --n_test).')
  sens_width: int = _f(0, 'sensitivity part: baseline width (0 = --mall_width).')
  sens_epochs: int = _f(0, 'sensitivity part: baseline epochs (0 = --epochs).')
  sens_seeds: int = _f(3, 'sensitivity part: seeds (>= 2, for the bootstrap).')
  sens_tasks: str = _f('all+binary', "sensitivity part: '+'-separated tasks ('binary' = the "
                       "study's pair).")
  sens_attacks: Tuple[str, ...] = _f(('fgsm', 'pgd', 'mim'), 'sensitivity part: attacks.')
  sens_variations: str = _f('', "sensitivity part: 'CHOICE=V1,V2;...' ('' = the default grid).")
  # training (docs/method.md §6)
  epochs: int = _f(500, 'Training epochs [choice: the study, 500].')
  batch_size: int = _f(128, 'Minibatch size [choice: the study].')
  lr: float = _f(1e-3, 'Learning rate [choice: the study].')
  weight_decay: float = _f(1e-3, 'L2 weight decay on trained weights [choice].')
  optimizer: str = _f('adam', "'adam' (the study) or 'sgd' (with --loss=mse: the kernel-regime "
                      'check).', choices=('adam', 'sgd'))
  loss: str = _f('auto', "'auto': cross-entropy for > 2 classes, MSE on ±1 targets for binary.",
                 choices=('auto', 'mse', 'xent'))
  # model options (docs/method.md §3, §4)
  attn_depth: int = _f(1, 'mlp_attn: stacked linearized-attention layers k.')
  attn_shared: bool = _f(True, 'mlp_attn: share the pattern across layers (G^{2k+1}); false '
                         'recomputes it from each output (G^{3^k}).')
  attn_rank: int = _f(0, 'mlp_attn: top-r eigen-truncation of the pattern (0 = none).')
  attn_normalize: str = _f('linear', "mlp_attn: 'linear' (X Xᵀ X) or 'softmax' "
                           '(Nadaraya–Watson) pattern.', choices=('linear', 'softmax'))
  attn_temperature: Optional[float] = _f(None, 'mlp_attn softmax temperature T (logits Σ/T); '
                                         'default: the standard 1/√d scaling [choice, '
                                         'docs/method.md §3].')
  init_std: float = _f(0.01, 'Std of the first-layer weights on unit-norm inputs (the study: '
                       '0.01) [choice, docs/method.md §4].')
  qkv_mechanism: str = _f('IDENTITY', 'mlp_attn_qkv: attention mechanism (linear scaling, as '
                          'NT).', choices=('IDENTITY', 'SOFTMAX'))
  qkv_heads: int = _f(1, 'mlp_attn_qkv: heads.')


def help_text(field: dataclasses.Field) -> str:
  return field.metadata['help']


def override(study: Study, values: Mapping[str, object]) -> Study:
  """`study` with fields set from `values` {name: value or its flag text}, each converted by
  the field's type ('16,64' -> (16, 64)); ValueError naming --name for a bad one."""
  types = overrides.fields(Study)
  changes = {}
  for name, value in values.items():
    if name not in types:
      raise ValueError(f'--{name} is not a setting of the study.')
    sep = Study.__dataclass_fields__[name].metadata.get('sep', ',')
    changes[name] = overrides.convert(types[name], value, f'--{name}', sep)
    choices = Study.__dataclass_fields__[name].metadata.get('choices')
    if choices and changes[name] not in choices:
      raise ValueError(f'--{name} must be one of {choices}, got {changes[name]!r}.')
  return dataclasses.replace(study, **changes)


# ------------------------------------------------------------------------------------ presets

def quick() -> Study:
  """quick: the study reproduced on real MNIST (`mnist_sample`: 5,000 images of the official
  test set, bundled), sized for a 2-core laptop CPU (about 10 minutes). Every convention is
  the study's (Adam lr 1e-3, batch 128, L2 1e-3, first layer N(0, 0.01²), τ = 0.1,
  ε ∈ {0.1, 0.2, 0.3, 0.5} on [0, 1] pixels). Smaller than the study:

    - 100 epochs instead of 500 (both models' training loss has flattened by then: see the
      report's loss curves);
    - widths 16, 1024, 4096 (the study's Table 1 columns) and 2 seeds for the distance to
      the NTK (study: 4…4096, seeds not published);
    - 3 seeds for malleability (study: not published);
    - the 'curated' intervention only, measured with PGD (study: also 'transformed' and
      'adversarial': add --interventions=curated,transformed,adversarial);
    - PGD adversarial training on 300 points for 10 epochs (study: the whole set, 500);
    - the sensitivity study on 400 training / 200 test points at width 512, with FGSM and
      PGD (calibration over those cells);
    - 'beyond' limited to the approximation-error side (the attention variants and the
      influence-targeted attack: add --beyond_parts=variants,influence_attack,approximation).

  The study did not publish its sample counts; 1000 train / 500 test is our choice.
  """
  return Study(dataset='mnist_sample', n_train=1000, n_test=500,
               n_grid=(25, 50, 100, 200, 500, 1000), epochs=100, widths=(16, 1024, 4096),
               ntk_seeds=2, mall_width=1024, mall_seeds=3, attacks=('fgsm', 'pgd', 'mim'),
               epsilons=(0.1, 0.2, 0.3, 0.5), binary_tasks=('same:3,8',),
               interventions=('curated',), intervention_attacks=('pgd',), at_epochs=10,
               at_n_train=300, sens_n_train=400, sens_n_test=200, sens_width=512, sens_seeds=3,
               sens_attacks=('fgsm', 'pgd'), beyond_parts=('approximation',))


def quick_cifar10() -> Study:
  """quick_cifar10: the study's second dataset, real CIFAR-10 (`cifar10_sample`: 4,660
  training images, 435–489 per class, bundled), sized like `quick` for a 2-core laptop CPU. Every
  convention is the study's (Adam lr 1e-3, batch 128, L2 1e-3, first layer N(0, 0.01²),
  τ = 0.1, ε ∈ {0.1, 0.2, 0.3, 0.5} on [0, 1] pixels); images are flattened to 3,072
  features and scaled to unit norm (docs/method.md §3, §11). Smaller than the study, as
  `quick` (100 epochs, widths 16/1024/4096 with 2 seeds, 3 malleability seeds, the curated
  intervention with PGD, PGD-AT on 300 points for 10 epochs, 'beyond' = approximation only),
  and:

    - 600 training / 400 test points (the sample has no test split; the two are disjoint);
    - the binary task is the study's automobile (1) vs airplane (0) ('same' without classes
      takes the dataset's pair), on 600 / 300 of the 958 images of those classes;
    - the sensitivity study on 300 training / 200 test points at width 512, FGSM and PGD.

  The study did not publish its sample counts.
  """
  return Study(dataset='cifar10_sample', n_train=600, n_test=400,
               n_grid=(25, 50, 100, 200, 400, 600), epochs=100, widths=(16, 1024, 4096),
               ntk_seeds=2, mall_width=1024, mall_seeds=3, attacks=('fgsm', 'pgd', 'mim'),
               epsilons=(0.1, 0.2, 0.3, 0.5), binary_tasks=('same',), binary_n_train=600,
               binary_n_test=300, interventions=('curated',), intervention_attacks=('pgd',),
               at_epochs=10, at_n_train=300, sens_n_train=300, sens_n_test=200, sens_width=512,
               sens_seeds=3, sens_tasks='all+binary', sens_attacks=('fgsm', 'pgd'),
               beyond_parts=('approximation',))


def quick_digits() -> Study:
  """quick_digits: the whole study on scikit-learn's 8×8 `digits`, a fast PROXY (on it the
  malleability gap and the approximation ranking differ from real MNIST: use `quick` for
  the study's data). Sized for a 2-core laptop CPU. Shorter training than the study (200
  epochs, PGD-AT 30 epochs on 500 points); every other setting is the study's.
  """
  return Study(dataset='digits', n_train=1000, n_test=500,
               n_grid=(25, 50, 100, 200, 500, 1000), epochs=200,
               widths=(16, 64, 256, 1024, 4096), ntk_seeds=3, mall_width=1024, mall_seeds=3,
               attacks=('fgsm', 'pgd', 'mim'), epsilons=(0.1, 0.2, 0.3, 0.5),
               binary_tasks=('same:3,8',),
               interventions=('curated', 'transformed', 'adversarial'), at_epochs=30,
               at_n_train=500, beyond_n_train=200, beyond_n_test=50, beyond_widths=(16, 128),
               beyond_width=64, beyond_seeds=2, beyond_epochs=300, sens_n_train=500,
               sens_n_test=250, sens_width=512, sens_seeds=3)


def paper_mnist() -> Study:
  """paper_mnist: the study's MNIST settings (docs/method.md §1): Adam lr 1e-3, batch 128,
  500 epochs, L2 1e-3, widths 4..4096, τ = 0.1, ε ∈ {0.1, 0.2, 0.3, 0.5}. Meant for a GPU.
  The study did not publish its sample counts; 2000/1000 is our choice.
  """
  return Study(dataset='mnist', n_train=2000, n_test=1000,
               n_grid=(25, 50, 100, 200, 500, 1000, 2000), epochs=500,
               widths=(4, 16, 64, 256, 1024, 4096), ntk_seeds=5, mall_width=1024, mall_seeds=5,
               attacks=('fgsm', 'pgd', 'mim'), epsilons=(0.1, 0.2, 0.3, 0.5),
               binary_tasks=('mnist:3,8',), binary_n_train=2000, binary_n_test=1000,
               interventions=('curated', 'transformed', 'adversarial'), at_epochs=500)


def paper_cifar10() -> Study:
  """paper_cifar10: the study's CIFAR-10 settings (docs/method.md §1): Adam lr 1e-3, batch
  128, 500 epochs, L2 1e-3, widths 4..4096, τ = 0.1, ε ∈ {0.1, 0.2, 0.3, 0.5}. Meant for a
  GPU. The study did not publish its sample counts; 2000/1000 is our choice.
  """
  return dataclasses.replace(paper_mnist(), dataset='cifar10', binary_tasks=('cifar10:1,0',))


def paper_binary() -> Study:
  """paper_binary: the study's binary tasks, MNIST 3 vs 8 and CIFAR-10 automobile (1) vs
  airplane (0), MSE on ±1 targets, at its settings (docs/method.md §1). Meant for a GPU.
  """
  return Study(dataset='mnist', parts=('binary',), n_train=2000, n_test=1000, epochs=500,
               mall_width=1024, mall_seeds=5, attacks=('fgsm', 'pgd', 'mim'),
               binary_tasks=('mnist:3,8', 'cifar10:1,0'), binary_n_train=2000,
               binary_n_test=1000)


def joint_search() -> Study:
  """joint_search: only the joint reproduction search (`study.parts.joint_search`) on real
  MNIST (`mnist_sample`), at its own CPU sizes (`configs.JointSearch`: width 256, 200 test
  points, n_train 200 and 400, 30 and 100 epochs, ε 0.1 and 0.3 in pixels and pixel-std
  units, init_std 0.01 and 1, PGD, 3 seeds, the 10-class and the 3 vs 8 task: 32 settings),
  with the MLP-Attn training search and the rounding check. Its time is its own: the main
  job (`quick`) does not run it; add it to a run with `--parts=...,joint_search`."""
  return Study(dataset='mnist_sample', parts=('joint_search',), mall_seeds=3)


PRESETS = {f.__name__: f for f in (quick, quick_cifar10, quick_digits, paper_mnist,
                                   paper_cifar10, paper_binary, joint_search)}


def preset(name: str) -> Study:
  """The `Study` of preset `name`; ValueError naming --preset for an unknown one."""
  if name not in PRESETS:
    raise ValueError(f'--preset: unknown preset {name!r}; available: {", ".join(PRESETS)}.')
  return PRESETS[name]()


__all__ = ['PARTS', 'OPTIONAL_PARTS', 'VARIANT_NAMES', 'BEYOND_PARTS', 'Study', 'help_text',
           'override',
           'quick', 'quick_cifar10', 'quick_digits', 'paper_mnist', 'paper_cifar10',
           'paper_binary', 'joint_search', 'PRESETS', 'preset']
