"""ntk_attention.paper: every dataset of the study has the same tables, and every name a run
can use finds them (the numbers themselves are the study's and are not tested here)."""
import pytest

from ntk_attention import data
from ntk_attention.study import paper

STUDY = ('mnist', 'cifar10')
ATTACKS = ('fgsm', 'pgd', 'mim')


@pytest.mark.parametrize('name, ref', [
    ('mnist', 'mnist'), ('mnist_sample', 'mnist'), ('digits', 'mnist'),
    ('fashion_mnist', 'mnist'),
    ('npz:/tmp/x.npz', 'mnist'), ('cifar10', 'cifar10'), ('cifar10_sample', 'cifar10')])
def test_reference_dataset_and_its_binary_pair(name, ref):
  assert paper.reference_dataset(name) == ref
  pair = paper.binary_classes(name)
  assert len(data.parse_classes(pair)) == 2
  # The pair is the one the study's binary table is keyed by, so reports find its numbers.
  for attack in ATTACKS:
    for model in paper.MODEL_INDEX:
      assert paper.flip_rate(ref, pair, attack, model) is not None


def test_cifar10_binary_task_is_automobile_vs_airplane():
  # CIFAR-10 labels: 0 airplane, 1 automobile.
  assert paper.binary_classes('cifar10_sample') == '1,0'
  assert paper.binary_classes('mnist_sample') == '3,8'


@pytest.mark.parametrize('ref', STUDY)
def test_every_study_dataset_has_every_table(ref):
  assert paper.KAPPA[ref] > 1 and ref in paper.DATASET_NAMES
  for model in paper.MODEL_INDEX:
    row = [paper.ntk_distance(ref, model, w) for w in paper.NTK_DISTANCE_WIDTHS]
    assert all(v is not None and v > 0 for v in row)
    assert paper.FLIP_RATE_AFTER_PGD_AT[ref][paper.MODEL_INDEX[model]] > 0
  tasks = {task for (ds, task) in paper.FLIP_RATE if ds == ref}
  assert tasks == {'all', paper.BINARY_CLASSES[ref]}
  for task in tasks:
    assert set(paper.FLIP_RATE[(ref, task)]) == set(ATTACKS)
  # A width or task the study did not report has no number.
  assert paper.ntk_distance(ref, 'relu_mlp', 64) is None
  assert paper.flip_rate(ref, '2,7', 'pgd', 'relu_mlp') is None


@pytest.mark.parametrize('dataset, kappa, n', [('mnist_sample', '1.2e+03 (MNIST)', 50),
                                               ('cifar10_sample', '8.7e+03 (CIFAR-10)', 100)])
def test_spectral_reading_compares_with_the_runs_dataset(dataset, kappa, n):
  from ntk_attention.study.report import sections as report
  curve = [{'n': 25, 'kappa': 500.0}, {'n': 50, 'kappa': 2e3}, {'n': 100, 'kappa': 9e3}]
  res = {'n': 100, 'kappa': 9e3, 'log10_kappa': 3.95, 'rank': 100, 'r': 100, 'kappa_eff': 9e3,
         'log10_width_v2': 26.0, 'kappa_attn_direct_reliable': True, 'curve': curve,
         'provenance': {'flags': {'dataset': dataset}}}
  assert f"the paper's κ ≈ {kappa} is reached here at n ≈ {n}." in report.spectral_reading(res)


def test_sensitivity_reading_quotes_the_runs_dataset():
  from ntk_attention.study.report import sections as report
  # 2L-ReLU's FGSM/PGD/MIM flip rates per task, rounded: CIFAR-10 3.1–3.3 and 15.2–15.5.
  assert report._study_relu_rates('cifar10') == '3 % on 10 classes, 15–16 % on 1,0'
  assert report._study_relu_rates('mnist') == '3–4 % on 10 classes, 8–9 % on 3,8'
