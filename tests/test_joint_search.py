"""The joint reproduction search (study.parts.joint_search): its grid, ratios and answer
against the records it wrote, the one-ulp nudge, and its place in a reproduction (optional)."""
import itertools

import numpy as np
import pytest

from ntk_attention import data
from ntk_attention.study import configs
from ntk_attention.study import pipeline
from ntk_attention.study import plan
from ntk_attention.study import presets
from ntk_attention.study import store as store_lib
from ntk_attention.study.parts import joint_search

TINY = configs.JointSearch(data=configs.Data(dataset='digits', n_test=30), eps=(0.1, 0.3),
                           eps_units=('pixel',), init_std=(0.01,), n_trains=(40,), epochs=(3,),
                           width=8, seeds=3, train_search=((1e-2, 0, 4),))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  import jax
  jax.config.update('jax_enable_x64', True)
  out = tmp_path_factory.mktemp('joint')
  with pytest.warns(UserWarning):      # 3 epochs: the models are undertrained, and say so
    res = joint_search.run(TINY, str(out))
  return res, store_lib.JsonlStore(str(out / 'joint_search.jsonl')).records(), out


def test_grid_ratios_are_those_of_the_records(tiny):
  res, records, out = tiny
  assert [p['point'] for p in res['points']] == [joint_search.label(p)
                                                 for p in joint_search.points(TINY)]
  assert len(res['points']) == 2 and res['tasks'] == ['all', '3,8']
  for p, task in itertools.product(res['points'], res['tasks']):
    flips = {m: [r['flip_rate'] for r in records if r['kind'] == 'grid' and r['value'] == p['point']
                 and r['task'] == task and r['model'] == m and r['attack'] == 'pgd']
             for m in ('relu_mlp', 'mlp_attn')}
    assert len(flips['relu_mlp']) == len(flips['mlp_attn']) == 3
    key = 'all' if task == 'all' else 'binary'
    if np.mean(flips['relu_mlp']) > 0:
      assert p[f'{key}_ratio'] == pytest.approx(np.mean(flips['mlp_attn']) / np.mean(flips['relu_mlp']))
    # 3 epochs: MLP-Attn is below twice chance, so nothing is "reproduced".
    assert p['undertrained'] and not p['reproduces_both']
  assert res['answer'].startswith('No: none of the 2 settings')
  assert (out / 'joint_search_table.md').read_text().count('\n| ε ') == 2


def test_train_search_and_rounding_rows(tiny):
  res, records, _ = tiny
  (row,) = res['train_search']
  accs = [r['test_accuracy'] for r in records if r['kind'] == 'train_search']
  assert len(accs) == 3 and row['test_accuracy'] == pytest.approx(np.mean(accs))
  assert row['batch_size'] == 'full' and 0 <= row['krr_test_accuracy'] <= 1
  assert {(r['task'], r['attack']) for r in res['rounding']} == {('all', 'pgd'), ('3,8', 'pgd')}
  head = joint_search.label(joint_search.headline(TINY))
  for r in res['rounding']:
    orig = [x['flip_rate'] for x in records if x['kind'] == 'grid' and x['value'] == head
            and x['task'] == r['task'] and x['model'] == 'mlp_attn']
    nudged = [x['flip_rate'] for x in records if x['kind'] == 'rounding'
              and x['task'] == r['task'] and x['model'] == 'mlp_attn']
    assert r['attn_flip_change'] == pytest.approx(np.mean(np.abs(np.subtract(nudged, orig))))


def test_nudge_moves_every_nonzero_pixel_by_one_ulp():
  ds = data.load('digits', n_train=20, n_test=10)
  moved = joint_search.nudge(ds)
  nz = ds.x_train > 0
  assert np.array_equal(ds.x_train[nz] - moved.x_train[nz],
                        np.spacing(moved.x_train[nz]))   # exactly one float32 ulp (below x)
  assert np.array_equal(moved.x_train[~nz], ds.x_train[~nz])
  assert np.array_equal(moved.y_train, ds.y_train) and moved.x_test.max() <= 1


def test_reproduces_needs_every_interval_inside_the_band_and_trained_models():
  row = dict(attack='pgd', ratio_low=5.0, ratio_high=12.0, relu_undertrained=False,
             attn_undertrained=False)
  assert joint_search._reproduces([row], {'pgd': 8.8})               # [4.4, 17.6] holds it
  assert not joint_search._reproduces([dict(row, ratio_low=4.0)], {'pgd': 8.8})
  assert not joint_search._reproduces([dict(row, ratio_high=None)], {'pgd': 8.8})
  assert not joint_search._reproduces([dict(row, attn_undertrained=True)], {'pgd': 8.8})


def test_joint_search_is_optional_and_costed():
  assert all(p.kind != 'joint_search' for p in pipeline.parts_of(presets.quick()))
  study = presets.override(presets.quick(), {'parts': 'spectral,joint_search'})
  part = pipeline.parts_of(study)[-1]
  assert part.kind == 'joint_search' and part.config.seeds >= 3
  assert presets.preset('joint_search').parts == ('joint_search',)
  cost = plan.part_cost('joint_search', configs.JointSearch())
  # 32 grid points + the rounding rerun, 2 tasks, 2 models, 3 seeds, PGD; 7 training settings.
  assert cost.cells == 33 * 2 * 2 * 3 + 7 * 3 and cost.flop32 > 0 and cost.flop64 > 0
