"""study.presets, study.pipeline, study.overrides, study.layout: a reproduction as typed configs.

The reference: tests/reproduce_argv_b0a3e14.json holds, for every preset (each with every
part, the optional scaling and every 'beyond' run), for the defaults and for a preset with
many flags overridden, the command line of each part that scripts/reproduce.py built before
configs were values (commit b0a3e14). Each part's config must be what that command line gave
its script: the flags given, the script's defaults for the others.
"""
import dataclasses
import json
import os

import pytest

from ntk_attention import malleability
from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import layout
from ntk_attention.study import overrides
from ntk_attention.study import pipeline
from ntk_attention.study import presets

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, 'reproduce_argv_b0a3e14.json'), encoding='utf-8') as _f:
  REFERENCE = json.load(_f)['cases']

# Deliberate changes since b0a3e14, applied to the reference's command lines: (case, part
# folder) -> {flag: value}. Issue 25 bundled all 4,660 CIFAR-10 images, so quick_cifar10's
# binary task grew from 140 / 60 to 600 / 300 of the pair's 958.
CHANGED = {('quick_cifar10', 'binary_cifar10_sample_1_0'): {'n_train': '600', 'n_test': '300'}}
# Presets added after b0a3e14 (no command line of theirs existed).
NEW_PRESETS = {'joint_search'}

DATA = ('dataset', 'classes', 'seed', 'n_train', 'n_test', 'data_dir')
TRAIN = training.TrainConfig._fields
OPTIONS = tuple(f.name for f in dataclasses.fields(configs.ModelOptions))
ATTACK = ('pgd_steps', 'pgd_step_size', 'pgd_random_start', 'mim_steps', 'mim_step_size',
          'mim_momentum')


def _path(script, flag):
  """Where a script's flag lives in its config."""
  if flag in DATA:
    return ('data', flag)
  if flag in TRAIN:
    return ('train', flag)
  if flag in OPTIONS:
    return ('options', flag)
  if script == 'malleability' and flag in ('tau', 'kernel', 'eps_units', 'ridge', 'score', 'topk',
                                           'max_memory_gb'):
    return ('setup', flag)
  if script == 'malleability' and flag in ATTACK:
    return ('setup', 'attack', flag)
  return (flag,)


def _split(argv):
  out = {}
  for a in argv:
    name, sep, value = a[2:].partition('=')
    out[name] = value if sep else 'true'
  return out


def expected_config(script, argv):
  """The config of `python scripts/<script>.py argv`: its defaults, then each flag given."""
  given = _split(argv)
  given.pop('matmul_precision', None)       # a setting of the run (checked on the Study)
  config = configs.PART_CONFIGS[script]()
  for flag, text in given.items():
    config = overrides.apply(config, _path(script, flag), text, flag)
  # The scripts' default sizes shrink to fit a small pool; sizes given are honoured.
  fit = not ({'n_train', 'n_test'} & set(given))
  return dataclasses.replace(config, data=dataclasses.replace(config.data, fit_to_pool=fit))


def study_of(argv):
  given = _split(argv)
  name = given.pop('preset', None)
  study = presets.preset(name) if name else presets.Study()
  return presets.override(study, given)


@pytest.mark.parametrize('case', sorted(REFERENCE))
def test_each_part_gets_the_config_its_old_command_line_gave(case):
  ref = REFERENCE[case]
  study = study_of(ref['argv'])
  pipeline.check(study)
  parts = pipeline.parts_of(study)
  assert [(p.sub, p.kind) for p in parts] == [(sub, script) for _, sub, script, _ in ref['parts']]
  for part, (_, sub, script, argv) in zip(parts, ref['parts']):
    changes = CHANGED.get((case, sub), {})
    argv = [a for a in argv if a.lstrip('-').split('=')[0] not in changes]
    argv += [f'--{k}={v}' for k, v in changes.items()]
    assert part.config == expected_config(script, argv), (case, sub)
    precision = _split(argv).get('matmul_precision', 'highest')
    assert study.matmul_precision == precision


def test_every_preset_is_in_the_reference_and_documented():
  assert set(presets.PRESETS) - NEW_PRESETS <= set(REFERENCE)
  for name, fn in presets.PRESETS.items():
    assert fn.__doc__.startswith(f'{name}: '), name
    assert isinstance(fn(), presets.Study)
  with pytest.raises(ValueError, match=r'--preset.*nonsense.*quick'):
    presets.preset('nonsense')


def test_flags_given_override_the_preset_and_keep_the_rest():
  base = presets.quick()
  study = presets.override(base, {'n_grid': '10,20', 'mall_seeds': 2, 'tau': '0.2',
                                  'attn_shared': 'false', 'binary_tasks': 'digits+mnist:1,7',
                                  'classes': '3,8', 'attn_temperature': 'none'})
  assert study.n_grid == (10, 20) and study.mall_seeds == 2 and study.tau == 0.2
  assert study.attn_shared is False and study.classes == (3, 8)
  assert study.binary_tasks == ('digits', 'mnist:1,7')
  assert pipeline.binary_tasks(study) == [('digits', '3,8'), ('mnist', '1,7')]
  changed = {'n_grid', 'mall_seeds', 'tau', 'attn_shared', 'binary_tasks', 'classes'}
  for f in dataclasses.fields(presets.Study):
    if f.name not in changed:
      assert getattr(study, f.name) == getattr(base, f.name), f.name


@pytest.mark.parametrize('values, words', [
    ({'n_grid': '10,x'}, ('--n_grid', "'x'")),
    ({'mall_seeds': 'two'}, ('--mall_seeds', 'integer')),
    ({'eps_units': 'furlong'}, ('--eps_units', 'furlong')),
    ({'nonsense': '1'}, ('--nonsense',)),
])
def test_a_bad_setting_is_one_line_naming_it(values, words):
  with pytest.raises(ValueError) as e:
    presets.override(presets.Study(), values)
  assert '\n' not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize('changes, words', [
    (dict(parts=('spectral', 'nonsense')), ('--parts', 'nonsense')),
    (dict(binary_tasks=('digits:3',)), ('--binary_tasks', 'digits:3')),
    (dict(epsilons=(0.1, 1.5)), ('--epsilons', '1.5')),
    (dict(tau=0.0), ('--tau',)),
    (dict(lr=-1.0), ('--lr',)),
    (dict(widths=(16, 0)), ('--widths',)),
    (dict(attacks=('fgsm', 'cw')), ('--attacks', 'cw')),
    (dict(ntk_models=('relu_mlp', 'nosuchmodule:f')), ('--ntk_models', 'nosuchmodule:f')),
    (dict(sens_seeds=1), ('--sens_seeds',)),
])
def test_check_names_the_flag(changes, words):
  with pytest.raises(ValueError) as e:
    pipeline.check(dataclasses.replace(presets.quick(), **changes))
  assert all(w in str(e.value) for w in words), str(e.value)


def test_set_overrides_every_part_of_its_kind_through_nested_configs():
  study = dataclasses.replace(presets.quick(), parts=('malleability', 'binary', 'ntk_distance'))
  sets = overrides.parse_set(['malleability.setup.attack.pgd_steps=40',
                              'malleability.setup.ridge=1e-2', 'malleability.retrain=true',
                              'malleability.data.classes=1,7',
                              'ntk_distance.train.epochs=7'], configs.PART_CONFIGS)
  parts = pipeline.parts_of(study, sets)
  mall = [p.config for p in parts if p.kind == 'malleability']
  assert len(mall) == 2
  for c in mall:
    assert c.setup.attack.pgd_steps == 40 and c.setup.ridge == 0.01 and c.retrain is True
    assert c.data.classes == (1, 7)
    assert c.setup.tau == study.tau and c.setup.attack.mim_steps == 10   # the rest kept
  nd, = [p.config for p in parts if p.kind == 'ntk_distance']
  assert nd.train.epochs == 7 and nd.train.lr == study.lr


@pytest.mark.parametrize('item, words', [
    ('malleability.setup.ridgee=1', ('--set=malleability.setup.ridgee=1', 'ridgee', 'ridge')),
    ('malleability.setup.ridge=abc', ('--set=malleability.setup.ridge=abc', 'number')),
    ('malleability.setup=1', ('--set=malleability.setup=1', 'group')),
    ('malleability.width.x=1', ('width', 'not a group')),
    ('nonsense.width=1', ('nonsense', 'malleability')),
    ('malleability.width', ('KIND.FIELD=VALUE',)),
    ('malleability.retrain=maybe', ('retrain', 'true or false')),
])
def test_a_bad_set_is_one_line_naming_it(item, words):
  with pytest.raises(ValueError) as e:
    overrides.parse_set([item], configs.PART_CONFIGS)
  assert '\n' not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_convert_by_type():
  assert overrides.convert(bool, 'True', 'x') is True
  assert overrides.convert(float, '1e-2', 'x') == 0.01
  assert overrides.convert(presets.Study.__annotations__['attn_temperature'], '', 'x') is None
  assert overrides.convert(presets.Study.__annotations__['attn_temperature'], '2', 'x') == 2.0
  assert overrides.convert(presets.Study.__annotations__['epsilons'], '0.1, 0.3', 'x') == (0.1, 0.3)
  assert overrides.convert(presets.Study.__annotations__['classes'], '', 'x') == ()


def test_describe_names_only_what_differs_and_rebuilds_the_config():
  config = configs.Malleability(data=configs.Data(dataset='digits', classes=(3, 8)),
                                setup=malleability.Setup(tau=0.2), epsilons=(0.1,))
  text = pipeline.describe(config)
  assert text == ("Malleability(data=Data(dataset='digits', classes=(3, 8)), epsilons=(0.1,), "
                  'setup=Setup(tau=0.2))')
  names = dict(vars(configs), Setup=malleability.Setup)
  assert eval(text, names) == config   # pylint: disable=eval-used
  assert pipeline.describe(configs.Spectral()) == 'Spectral()'


def test_layout_names_each_part_folder_once():
  assert layout.binary('digits', '3,8') == layout.binary('digits', (3, 8)) == 'binary_digits_3_8'
  assert layout.variant('rank5', 'ntk_distance') == 'beyond/rank5/ntk_distance'
  d = os.path.join('D')
  assert layout.marker(d, 'beyond/rank5/malleability') == os.path.join(
      'D', 'beyond', 'rank5', 'malleability', 'part.json')
  assert layout.log(d, 'spectral') == os.path.join('D', 'spectral', 'log.txt')
  assert layout.train_cache(d) == os.path.join('D', 'cache', 'train')
  assert layout.results(d, 'binary_digits_3_8', 'malleability', '_settings.json') == os.path.join(
      'D', 'binary_digits_3_8', 'malleability_settings.json')
  assert (layout.report_md(d), layout.report_html(d), layout.figures(d)) == (
      os.path.join('D', 'report.md'), os.path.join('D', 'report.html'), os.path.join('D', 'figures'))
  # Every part of every preset has its own folder.
  for name, fn in presets.PRESETS.items():
    study = dataclasses.replace(fn(), parts=presets.PARTS + presets.OPTIONAL_PARTS,
                                beyond_parts=presets.BEYOND_PARTS)
    subs = [p.sub for p in pipeline.parts_of(study)]
    assert len(subs) == len(set(subs)), name


def test_configs_are_picklable_values():
  import pickle
  for part in pipeline.parts_of(presets.quick_digits()):
    assert pickle.loads(pickle.dumps(part)) == part
