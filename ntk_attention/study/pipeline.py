"""A reproduction as a list of parts, each a typed config: `parts_of(study)`.

A `Study` (study.presets) names what to run and at which sizes; each part is one call of
`study.parts.<kind>.run(config, out_dir, ...)` on a `study.configs` value, in the run
folder's `sub` (study.layout). `study.runner.run` runs them. Which config each part gets:

  spectral              Spectral: the data, n_grid
  ntk_distance          Distance: ntk_models × widths × ntk_seeds
  malleability          Malleability: mall_models at mall_width × mall_seeds, attacks × epsilons
  binary                Malleability per binary task, ε = 0.3, binary_n_train / binary_n_test
  interventions         Malleability with the interventions, intervention_attacks, ε = 0.3
  adversarial_training  Malleability with PGD-AT (at_epochs, at_n_train), PGD at ε = 0.3
  sensitivity           Sensitivity on the sens_* sizes
  beyond                per variant (VARIANTS) Distance and Malleability (PGD, ε = 0.3), the
                        influence-targeted attack, Approximation; on the beyond_* sizes
  scaling               Scaling over scaling_n_grid (optional)
  width_threshold       WidthThreshold on the wt_* settings (optional)
  joint_search          JointSearch: its own CPU-sized factorial grid (optional)

A size of 0 means the part's default (`configs.Data()`: 1000 / 500), shrunk to fit a small
pool (`Data.fit_to_pool`); a size given is honoured or refused, as by the scripts.
"""
import dataclasses
from typing import Any, NamedTuple, Sequence

from ntk_attention import data as data_lib
from ntk_attention import malleability
from ntk_attention import stats
from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import layout
from ntk_attention.study import overrides
from ntk_attention.study import paper
from ntk_attention.study import presets
from ntk_attention.study.parts import _base

# Beyond the study: model variants, each measured with ntk_distance and malleability:
# name -> (models, ModelOptions changes).
VARIANTS = {
    'qkv_identity': (('mlp_attn_qkv',), dict(qkv_mechanism='IDENTITY')),
    'qkv_softmax': (('mlp_attn_qkv',), dict(qkv_mechanism='SOFTMAX')),
    'softmax': (('mlp_attn',), dict(attn_normalize='softmax')),
    'depth2_shared': (('mlp_attn',), dict(attn_depth=2, attn_shared=True)),
    'depth2_recomputed': (('mlp_attn',), dict(attn_depth=2, attn_shared=False)),
    'rank5': (('mlp_attn',), dict(attn_rank=5)),
    'rank20': (('mlp_attn',), dict(attn_rank=20)),
    'baseline': (('relu_mlp', 'mlp_attn'), {}),
}
assert tuple(VARIANTS) == presets.VARIANT_NAMES
# Parts that take (reference, candidate) models.
PAIRED = ('sensitivity', 'scaling', 'joint_search')


class Part(NamedTuple):
  """One part of a run: its folder under D (`layout`), its kind (the module
  `study.parts.<kind>`) and its config (a `study.configs` dataclass)."""
  sub: str
  kind: str
  config: Any


def binary_tasks(study: presets.Study) -> list:
  """[(dataset, '3,8')] of `study.binary_tasks`; 'same' is `study.dataset`, and a dataset
  without classes gets the study's pair for it (`paper.binary_classes`)."""
  tasks = []
  for item in study.binary_tasks:
    ds, _, classes = item.strip().partition(':')
    ds = study.dataset if ds == 'same' else ds
    tasks.append((ds, classes or paper.binary_classes(ds)))
  return tasks


def _data(study, dataset=None, classes=None, n_train=None, n_test=None) -> configs.Data:
  """The data of a part: the study's unless given; a size of 0 is the default, fit to the pool."""
  n_train = study.n_train if n_train is None else n_train
  n_test = study.n_test if n_test is None else n_test
  default = configs.Data()
  return configs.Data(dataset=dataset or study.dataset,
                      classes=study.classes if classes is None else classes,
                      n_train=n_train or default.n_train, n_test=n_test or default.n_test,
                      seed=study.seed, data_dir=study.data_dir or None,
                      fit_to_pool=not (n_train or n_test))


def _train(study, epochs=0) -> training.TrainConfig:
  return training.TrainConfig(optimizer=study.optimizer, lr=study.lr,
                              epochs=epochs or study.epochs, batch_size=study.batch_size,
                              weight_decay=study.weight_decay, loss=study.loss)


def _options(study, **changes) -> configs.ModelOptions:
  names = [f.name for f in dataclasses.fields(configs.ModelOptions)]
  return configs.ModelOptions(**dict({n: getattr(study, n) for n in names}, **changes))


def _malleability(study, data, train, epsilons, attacks=None, **fields) -> configs.Malleability:
  setup = malleability.Setup(tau=study.tau, kernel=study.kernel, eps_units=study.eps_units)
  return configs.Malleability(
      data=data, train=train, models=study.mall_models, width=study.mall_width,
      seeds=study.mall_seeds, attacks=attacks or study.attacks, epsilons=epsilons,
      setup=setup, options=_options(study), **fields)


def _beyond(study) -> list:
  """Variants × (ntk_distance, malleability), the influence-targeted attack and the
  approximation error, on the smaller beyond_* sizes."""
  data = _data(study, n_train=study.beyond_n_train, n_test=study.beyond_n_test)
  train = _train(study, study.beyond_epochs)
  out = []
  for name in (study.beyond_variants if 'variants' in study.beyond_parts else ()):
    models, changes = VARIANTS[name]
    options = _options(study, **changes)
    out.append(Part(layout.variant(name, 'ntk_distance'), 'ntk_distance', configs.Distance(
        data=data, train=train, models=models, widths=study.beyond_widths,
        seeds=study.beyond_seeds, options=options)))
    # As before the redesign, the variants' malleability keeps ε in pixels.
    out.append(Part(layout.variant(name, 'malleability'), 'malleability', configs.Malleability(
        data=data, train=train, models=models, width=study.beyond_width,
        seeds=study.beyond_seeds, attacks=('pgd',), epsilons=(0.3,),
        setup=malleability.Setup(tau=study.tau, kernel=study.kernel), options=options)))
  if 'influence_attack' in study.beyond_parts:
    out.append(Part(layout.INFLUENCE_ATTACK, 'malleability', dataclasses.replace(
        _malleability(study, data, train, (0.1, 0.3), ('pgd', 'influence')),
        width=study.beyond_width, seeds=study.beyond_seeds)))
  if 'approximation' in study.beyond_parts:
    out.append(Part(layout.APPROXIMATION, 'approximation',
                    configs.Approximation(data=_data(study))))
  return out


def _part(study, name) -> list:
  """The parts of the study's part `name`."""
  data, train = _data(study), _train(study)
  if name == 'spectral':
    return [Part(layout.CONDITIONING, 'spectral', configs.Spectral(data=data, n_grid=study.n_grid))]
  if name == 'ntk_distance':
    return [Part(layout.NTK_DISTANCE, 'ntk_distance', configs.Distance(
        data=data, train=train, models=study.ntk_models, widths=study.widths,
        seeds=study.ntk_seeds, options=_options(study)))]
  if name == 'malleability':
    return [Part(layout.MALLEABILITY, 'malleability',
                 _malleability(study, data, train, study.epsilons))]
  if name == 'binary':
    return [Part(layout.binary(ds, cls), 'malleability', _malleability(
        study, _data(study, ds, data_lib.parse_classes(cls), study.binary_n_train,
                     study.binary_n_test), train, (0.3,)))
            for ds, cls in binary_tasks(study)]
  if name == 'interventions':
    return [Part(layout.INTERVENTIONS, 'malleability', _malleability(
        study, data, train, (0.3,), study.intervention_attacks,
        interventions=study.interventions))]
  if name == 'adversarial_training':
    return [Part(layout.ADVERSARIAL_TRAINING, 'malleability', _malleability(
        study, _data(study, n_train=study.at_n_train or None), _train(study, study.at_epochs),
        (0.3,), ('pgd',), adversarial_training=True))]
  if name == 'sensitivity':
    return [Part(layout.SENSITIVITY, 'sensitivity', configs.Sensitivity(
        data=_data(study, classes=(), n_train=study.sens_n_train or study.n_train,
                   n_test=study.sens_n_test or study.n_test),
        train=_train(study, study.sens_epochs), tasks=study.sens_tasks,
        variations=study.sens_variations, attacks=study.sens_attacks, seeds=study.sens_seeds,
        width=study.sens_width or study.mall_width, eps_units=study.eps_units, tau=study.tau,
        kernel=study.kernel, options=_options(study)))]
  if name == 'beyond':
    return _beyond(study)
  if name == 'scaling':
    return [Part(layout.SCALING, 'scaling', configs.Scaling(
        data=_data(study, n_train=0), train=train, n_grid=study.scaling_n_grid,
        seeds=study.mall_seeds, width=study.mall_width, eps_units=study.eps_units,
        tau=study.tau, options=_options(study)))]
  if name == 'width_threshold':
    return [Part(layout.WIDTH_THRESHOLD, 'width_threshold', configs.WidthThreshold(
        data=configs.Data(dataset=study.dataset, classes=study.classes, n_test=1,
                          seed=study.seed, data_dir=study.data_dir or None, fit_to_pool=False),
        n_grid=study.wt_n_grid, kappas=study.wt_kappas, widths=study.wt_widths,
        seeds=study.wt_seeds, eps=study.wt_eps, train_widths=study.wt_train_widths,
        # init_std 1: the after-training check's lazy regime (docs/method.md §18); the
        # criterion at initialisation does not depend on it (§4).
        options=dataclasses.replace(_options(study), init_std=1.0)))]
  if name == 'joint_search':
    # Its own CPU-sized grid (configs.JointSearch); the study's dataset, seed and training.
    return [Part(layout.JOINT_SEARCH, 'joint_search', configs.JointSearch(
        data=dataclasses.replace(configs.JointSearch().data, dataset=study.dataset,
                                 seed=study.seed, data_dir=study.data_dir or None),
        train=_train(study),
        seeds=max(stats.MIN_SEEDS, study.mall_seeds), tau=study.tau, kernel=study.kernel))]
  raise ValueError(f'--parts: unknown part {name!r}; choose from '
                   f'{presets.PARTS + presets.OPTIONAL_PARTS}.')


def parts_of(study: presets.Study, sets: Sequence[tuple] = ()) -> list:
  """[Part] of `study.parts`, in that order, each config with the `sets` overrides of its
  kind applied (`overrides.parse_set`: [(kind, path, value text)])."""
  out = []
  for name in study.parts:
    for part in _part(study, name):
      config = part.config
      for kind, path, text in sets:
        if kind == part.kind:
          config = overrides.apply(config, path, text, f"--set={kind}.{'.'.join(path)}={text}")
      out.append(part._replace(config=config))
  return out


# ------------------------------------------------------------------------------------- checks

def check(study: presets.Study) -> None:
  """The study's own settings, without loading anything: a ValueError naming the flag
  (= field) of the first bad one. Each part's config is checked by its module."""
  from ntk_attention import attacks
  _base.check_names(study.parts, 'parts', presets.PARTS + presets.OPTIONAL_PARTS)
  _base.check_names(study.beyond_variants, 'beyond_variants', VARIANTS)
  _base.check_names(study.beyond_parts, 'beyond_parts', presets.BEYOND_PARTS)
  _base.check_data(configs.Data(dataset=study.dataset, classes=study.classes,
                                n_train=study.n_train, n_test=study.n_test))
  for field in ('n_grid', 'widths', 'beyond_widths', 'scaling_n_grid', 'wt_n_grid', 'wt_widths'):
    _base.check_ints(getattr(study, field), field)
  _base.check_models(study.ntk_models, 'ntk_models')
  _base.check_models(study.mall_models, 'mall_models')
  _base.check_names(study.attacks, 'attacks', malleability.ATTACKS)
  _base.check_names(study.intervention_attacks, 'intervention_attacks', malleability.ATTACKS)
  if study.interventions:          # none: the part measures the standard setting only
    _base.check_names(study.interventions, 'interventions', malleability.INTERVENTIONS)
  _base.check_names(study.sens_attacks, 'sens_attacks', attacks.ATTACKS)
  if not study.epsilons:
    raise ValueError('--epsilons is empty.')
  for eps in study.epsilons:
    if not 0 <= eps <= 1:
      raise ValueError(f'--epsilons must lie in [0, 1], got {eps}.')
  if not 0 < study.tau <= 1:
    raise ValueError(f'--tau must be in (0, 1], got {study.tau}.')
  try:
    training.validate(_train(study))
  except ValueError as e:        # its messages start with the field's name
    raise ValueError(f'--{e}') from None
  if study.sens_seeds < 2:
    raise ValueError(f'--sens_seeds must be >= 2, got {study.sens_seeds}.')
  for ds, cls in binary_tasks(study):
    try:
      data_lib.validate_dataset_name(ds)
      n_classes = len(data_lib.parse_classes(cls) or ())
    except ValueError as e:
      raise ValueError(f'--binary_tasks: {ds}:{cls}: {e}') from None
    if n_classes != 2:
      raise ValueError(f'--binary_tasks: {ds}:{cls} is not a pair of classes.')


# ------------------------------------------------------------------------------------ display

def _changes(value, default) -> list:
  """'name=value' of the fields of `value` that differ from `default` (nested: recursively)."""
  out = []
  for name in overrides.fields(type(value)):
    v, d = getattr(value, name), getattr(default, name)
    if v == d:
      continue
    if overrides.is_group(type(v)) and type(v) is type(d):
      v = f'{type(v).__name__}({", ".join(_changes(v, d))})'
    else:
      v = repr(v)
    out.append(f'{name}={v}')
  return out


def describe(config) -> str:
  """`config` as the call that makes it, naming only the fields that differ from the
  defaults: "Malleability(data=Data(dataset='digits', classes=(3, 8)), epsilons=(0.3,))"."""
  return f'{type(config).__name__}({", ".join(_changes(config, type(config)()))})'


__all__ = ['VARIANTS', 'PAIRED', 'Part', 'binary_tasks', 'parts_of', 'check',
           'describe']
