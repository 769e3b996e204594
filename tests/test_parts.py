"""The parts' contract (`study.parts`): run / check / data_needs on typed configs.

Checks cost nothing (no data is loaded): every default config passes, a bad value is a
ValueError naming its flag, before any output folder exists. The parts' numbers against the
scripts' are tested beside each script's end-to-end run (test_scripts_foundation,
test_alignment, test_scaling).
"""
import dataclasses
import inspect

import pytest

from ntk_attention import training
from ntk_attention.study import configs
from ntk_attention.study import parts

DEFAULTS = {name: cls() for name, cls in configs.PART_CONFIGS.items()}


def test_every_part_implements_the_contract():
  assert parts.NAMES == tuple(configs.PART_CONFIGS)
  for name in parts.NAMES:
    module = parts.part(name)
    assert list(inspect.signature(module.run).parameters) == [
        'config', 'out_dir', 'context', 'resume'], name
    assert list(inspect.signature(module.check).parameters) == ['config'], name
    assert list(inspect.signature(module.data_needs).parameters) == ['config'], name
  with pytest.raises(ValueError, match='unknown part'):
    parts.part('report')


@pytest.mark.parametrize('name', parts.NAMES)
def test_default_configs_pass_their_check(name):
  parts.part(name).check(DEFAULTS[name])


def test_data_needs():
  need = parts.Need('mnist_sample', None, 1000, 500, True)
  for name in ('spectral', 'kernels', 'ntk_distance', 'malleability', 'approximation'):
    assert parts.part(name).data_needs(DEFAULTS[name]) == [need], name
  # Sensitivity: every task at the baseline n_train and at each n_train variation, n_test in
  # proportion; the binary task shrinks to fit its pool.
  sens = dataclasses.replace(DEFAULTS['sensitivity'], variations='n_train=200;eps=0.1')
  assert parts.part('sensitivity').data_needs(sens) == [
      ('mnist_sample', None, 1000, 500, False), ('mnist_sample', None, 200, 100, False),
      ('mnist_sample', (3, 8), 1000, 500, True), ('mnist_sample', (3, 8), 200, 100, True)]
  # Scaling: one pool of max(n_grid) training points, sizes honoured.
  scaling = dataclasses.replace(DEFAULTS['scaling'], n_grid=(60, 120),
                                data=configs.Data(dataset='digits', classes=(3, 8)))
  assert parts.part('scaling').data_needs(scaling) == [('digits', (3, 8), 120, 500, False)]


@pytest.mark.parametrize('name,change,message', [
    ('ntk_distance', dict(widths=()), '--widths'),
    ('ntk_distance', dict(seeds=0), '--seeds'),
    ('ntk_distance', dict(ridge=0.0), '--ridge'),
    ('ntk_distance', dict(train=training.TrainConfig(epochs=0)), '--epochs'),
    ('ntk_distance', dict(models=('relu_mlp', 'cnn')), '--models'),
    ('malleability', dict(width=0), '--width'),
    ('malleability', dict(attacks=('fgsm', 'cw')), '--attacks'),
    ('malleability', dict(epsilons=(0.1, 1.5)), '--epsilons'),
    ('malleability', dict(epsilons=()), '--epsilons'),
    ('malleability', dict(interventions=('pruned',)), '--interventions'),
    ('malleability', dict(save_arrays='a.txt'), '--save_arrays'),
    ('malleability', dict(train=training.TrainConfig(lr=0.0)), '--lr'),
    ('malleability', dict(options=configs.ModelOptions(attn_rank=3, attn_normalize='softmax')),
     '--attn_rank'),
    ('malleability', dict(options=configs.ModelOptions(qkv_heads=0)), '--qkv_heads'),
    ('approximation', dict(ridge=0.0), '--ridge'),
    ('approximation', dict(k_top=0), '--k_top'),
    ('approximation', dict(synthetic_seeds=0), '--synthetic_seeds'),
    ('approximation', dict(noise=-1.0), '--noise'),
    ('approximation', dict(data=configs.Data(n_train=1)), '--n_train'),
    ('sensitivity', dict(seeds=1), '--seeds'),
    ('sensitivity', dict(tasks='3'), '--tasks'),
    ('sensitivity', dict(variations='colour=1'), '--variations'),
    ('sensitivity', dict(models=('relu_mlp',)), '--models'),
    ('sensitivity', dict(data=configs.Data(classes=(3, 8))), '--classes'),
    ('sensitivity', dict(options=configs.ModelOptions(init_std=-1.0)), '--init_std'),
    ('scaling', dict(n_grid=(5, 100)), '--n_grid'),
    ('scaling', dict(width=0), '--width'),
    ('scaling', dict(models=('relu_mlp', 'mlp_attn', 'mlp_attn_qkv')), '--models'),
    ('scaling', dict(n_grid=(100, 60000), max_memory_gb=2.0), 'largest n_train that fits'),
])
def test_a_bad_value_names_its_flag_before_any_output(tmp_path, name, change, message):
  config = dataclasses.replace(DEFAULTS[name], **change)
  module = parts.part(name)
  with pytest.raises(ValueError, match=message):
    module.check(config)
  with pytest.raises(ValueError, match=message):
    module.run(config, str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_provenance_records_the_config_and_its_leaves_by_flag_name():
  config = dataclasses.replace(DEFAULTS['malleability'], width=64,
                               train=training.TrainConfig(epochs=7))
  prov = parts.provenance(config)
  assert prov['config'] == configs.as_dict(config)
  assert prov['config']['setup']['attack']['pgd_steps'] == 20
  flags = prov['flags']     # what the report and the scorecard read
  assert (flags['dataset'], flags['n_train'], flags['width'], flags['epochs'], flags['tau'],
          flags['pgd_steps'], flags['init_std']) == ('mnist_sample', 1000, 64, 7, 0.1, 20, 0.01)
  for key in ('python', 'jax', 'backend', 'devices', 'time'):
    assert key in prov


def test_trainer_is_the_contexts_or_a_cache_of_its_own():
  def train_fn(*args, **kwargs):
    del args, kwargs
  assert parts.trainer(parts.Context(train_fn=train_fn)) is train_fn
  assert callable(parts.trainer(None))
