"""The study's facts, each stated once: its reported numbers (arXiv 2603.13085 v1), for
reports to print beside ours, and the display names of its models, datasets and kernels.

The numbers are labelled as the paper's wherever shown and never used in a computation; the
names are what every table, figure and reading calls a model, dataset or kernel (code
imports them from here, never repeats them).
"""

CITATION = ('Miñoza, Medina, Ibañez, "Influence Malleability in Linearized Attention: Dual '
            'Implications of Non-Convergent NTK Dynamics", arXiv 2603.13085 (v1, 2026)')

# Display names of the study's datasets (the keys of KAPPA, NTK_DISTANCE, FLIP_RATE, ...).
DATASET_NAMES = {'mnist': 'MNIST', 'cifar10': 'CIFAR-10'}

# Display names of the built-in models (`models.MODELS`); any other model shows its own name.
MODEL_NAMES = {'relu_mlp': '2L-ReLU', 'mlp_attn': 'MLP-Attn', 'mlp_attn_qkv': 'MLP-Attn (QKV)'}

# Display names of the approximation part's kernels (`alignment.KERNELS`).
KERNEL_NAMES = {'linear': 'linear G', 'gram_cubed': 'G³ (attention)',
                'relu_ntk': f"{MODEL_NAMES['relu_mlp']} NTK",
                'mlp_attn_ntk': f"{MODEL_NAMES['mlp_attn']} NTK"}


def model_name(model: str) -> str:
  """The display name of `model` in every table and figure ('2L-ReLU', 'MLP-Attn', ...);
  a model without one (a 'module:function' entry) keeps its own name."""
  return MODEL_NAMES.get(model, model)

# κ(G) quoted by the study; the sample count n was not published (docs/method.md §5: ~100 for MNIST).
KAPPA = {'mnist': 1.2e3, 'cifar10': 8.7e3}

# ‖f_m − f_NTK‖ at widths 16, 1024, 4096 (Table 1).
NTK_DISTANCE_WIDTHS = (16, 1024, 4096)
NTK_DISTANCE = {
    ('mnist', 'relu_mlp'): (45.1, 39.9, 39.2),
    ('mnist', 'mlp_attn'): (10.3, 33.3, 43.4),
    ('cifar10', 'relu_mlp'): (246.2, 101.7, 56.9),
    ('cifar10', 'mlp_attn'): (3.7, 10.4, 12.6),
}

# Flip rates (%) at ε = 0.3, τ = 0.1, attack -> (2L-ReLU, MLP-Attn) (Tables 2–3).
FLIP_RATE = {
    ('mnist', 'all'): {'fgsm': (4.1, 34.6), 'pgd': (3.3, 28.9), 'mim': (3.4, 21.9)},
    ('cifar10', 'all'): {'fgsm': (3.3, 26.4), 'pgd': (3.1, 19.1), 'mim': (3.2, 20.5)},
    ('mnist', '3,8'): {'fgsm': (8.4, 25.9), 'pgd': (8.4, 41.0), 'mim': (8.6, 40.5)},
    ('cifar10', '1,0'): {'fgsm': (15.2, 14.3), 'pgd': (15.5, 14.0), 'mim': (15.3, 14.8)},
}

# PGD flip rate (%) after PGD adversarial training (Table 4): dataset -> (2L-ReLU, MLP-Attn).
FLIP_RATE_AFTER_PGD_AT = {'mnist': (43.4, 42.2), 'cifar10': (36.5, 38.6)}

MODEL_INDEX = {'relu_mlp': 0, 'mlp_attn': 1}
# The study's pair (reference, candidate): its ratios are MLP-Attn / 2L-ReLU.
PAIR = tuple(MODEL_INDEX)

# The study's binary task on each dataset, as a --classes pair whose first class is the +1
# target: MNIST 3 vs 8, CIFAR-10 automobile (1) vs airplane (0) (docs/method.md §11).
BINARY_CLASSES = {'mnist': '3,8', 'cifar10': '1,0'}


def reference_dataset(dataset: str) -> str:
  """The study's dataset to compare with: CIFAR-10 for `cifar10` and the bundled
  `cifar10_sample`, else MNIST (`mnist`, `mnist_sample`, and digits and user data, which are
  closest to handwritten digits); reports label it."""
  return 'cifar10' if dataset in ('cifar10', 'cifar10_sample') else 'mnist'


def binary_classes(dataset: str) -> str:
  """The study's binary class pair for `dataset`'s reference, as --classes text: '3,8' for
  MNIST-like data, '1,0' (automobile vs airplane) for CIFAR-10."""
  return BINARY_CLASSES[reference_dataset(dataset)]


def flip_rate(dataset: str, classes: str, attack: str, model: str):
  """The paper's flip rate (%) for a setting, or None where it reported none."""
  table = FLIP_RATE.get((dataset, classes or 'all'), {})
  if attack not in table or model not in MODEL_INDEX:
    return None
  return table[attack][MODEL_INDEX[model]]


def ntk_distance(dataset: str, model: str, width: int):
  """The paper's ‖f_m − f_NTK‖ at a width it reported, else None."""
  row = NTK_DISTANCE.get((dataset, model))
  if row is None or width not in NTK_DISTANCE_WIDTHS:
    return None
  return row[NTK_DISTANCE_WIDTHS.index(width)]
