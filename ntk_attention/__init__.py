"""ntk_attention: attention across samples in the neural-tangent-kernel framework.

Attention and ReLU layers are neural-tangents `stax` combinators, so the infinite-width
kernel (`kernel_fn`) and the finite-width network (`apply_fn`, hence the empirical NTK)
come from one definition. This is the core; it imports neither the study pipeline
(`ntk_attention.study`: the reproduction of arXiv 2603.13085, its report and figures) nor
matplotlib or markdown-it. Modules, by concept:

  layers        stax layers: LinearizedAttention, QKVAttention, Normalize, FrozenReadout;
                `as_sequence` lays a dataset out as one sequence with its context mask
  models        `compose(prefix, head)`: any composition as a Model (declared trainable
                leaves); the study's relu_mlp, mlp_attn, mlp_attn_qkv are compose calls
  kernels       analytic / empirical (closed form or NT) NTKs, blocks, distances, f∞
  blocked       the same kernels at large n: float64 row blocks under a memory budget
  ridge         kernel ridge regression's one solve (K + λ·mean(diag K)·I)⁻¹ B, Cholesky
  devices       the machine: its memory budget, a 1-d mesh over its devices
  ntk_closed_form  layer-by-layer empirical NTK of Dense/elementwise per-token heads
  qkv_ntk       closed-form empirical NTK of the trainable QKV model, per parameter group
  transductive  NT's kernel_fn / empirical_ntk_fn / apply_fn signatures on (n, d) samples,
                the second argument the training set (for nt.predict, nt.batch)
  spectral      float64 κ, κ_d, spectra, width thresholds of the Gram matrix G
  data          mnist_sample / cifar10_sample / digits (bundled), tfds datasets, npz:PATH
  training      optax training, all seeds in one vmapped program
  influence     exact kernel-ridge leave-one-out influence; flip rate, Spearman, top-k
  attacks       FGSM, PGD, MIM under an l_inf budget on [0, 1] pixels
  malleability  the influence-malleability protocol, interventions, PGD-AT
  sweeps        width × seed sweeps of the distance to the NTK regime, any {name: factory}
  alignment     kernel-target alignment and KRR error: the approximation side
  stats         mean ± std (one ddof), the bootstrap of a ratio of means, group-by summaries
  width_threshold  the width m*(ε) at which the empirical NTK reaches its kernel, its slope in
                m and its exponent in κ (docs/method.md §18)
"""
# Modules.
from ntk_attention import alignment
from ntk_attention import attacks
from ntk_attention import blocked
from ntk_attention import data
from ntk_attention import devices
from ntk_attention import influence
from ntk_attention import kernels
from ntk_attention import layers
from ntk_attention import malleability
from ntk_attention import models
from ntk_attention import ntk_closed_form
from ntk_attention import qkv_ntk
from ntk_attention import ridge
from ntk_attention import spectral
from ntk_attention import stats
from ntk_attention import sweeps
from ntk_attention import training
from ntk_attention import transductive
from ntk_attention import width_threshold

# Layers (neural-tangents stax combinators) and the dataset-as-sequence helper.
from ntk_attention.layers import as_sequence
from ntk_attention.layers import FrozenReadout
from ntk_attention.layers import LinearizedAttention
from ntk_attention.layers import Normalize
from ntk_attention.layers import QKVAttention

# Models.
from ntk_attention.models import compose
from ntk_attention.models import mlp_attn
from ntk_attention.models import mlp_attn_qkv
from ntk_attention.models import relu_mlp

# Kernels.
from ntk_attention.kernels import analytic_kernel
from ntk_attention.kernels import empirical_ntk
from ntk_attention.kernels import monte_carlo_ntk

# NT's signatures on samples.
from ntk_attention.transductive import transductive_apply_fn
from ntk_attention.transductive import transductive_empirical_ntk_fn
from ntk_attention.transductive import transductive_kernel_fn

__version__ = '0.1.0'
