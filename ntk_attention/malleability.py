"""Influence malleability (docs/method.md §10): how much NTK influence moves under attack.

Protocol, per trained model and seed:
  1. influence scores `I` of every training point (exact KRR leave-one-out, `influence`),
     from the empirical NTK at the trained parameters (or the analytic NTK);
  2. `S` = the top-τ fraction of training points by |I|;
  3. perturb the pixels of `S` (FGSM / PGD / MIM, or the influence-targeted attack),
     recompute the kernel at the same parameters on the perturbed training set — the
     attention context included — and the scores `I'` (with `retrain`, the model is first
     retrained on the perturbed set from the same seed);
  4. `flip_rate` = fraction of S whose influence changes sign, `spearman` = rank
     correlation of I and I' over all training points, `topk_overlap` = |top-k(I) ∩
     top-k(I')|/k with k = |S|.

The attacks maximise the trained model's loss on the points of S, differentiating through
the whole transductive model (S's pixels also change every point's attention context).
The influence-targeted attack instead maximises `−Σ_{i∈S} sign(I_i) I'_i / Σ|I_i|` with
PGD: it pushes each score of S towards the other sign directly, through the kernel.

Interventions (each retrained from the same seed, then measured with the protocol):
  curated (S removed), transformed (S replaced by its PGD versions), adversarial (PGD on
  every training point); and PGD adversarial training, where each minibatch is replaced by
  its PGD examples against the current parameters.
"""
import functools
from typing import Callable, Collection, MutableMapping, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ntk_attention import compiles
from ntk_attention import attacks as attacks_lib
from ntk_attention import blocked
from ntk_attention import influence as influence_lib
from ntk_attention import kernels
from ntk_attention import memo as memo_lib
from ntk_attention import models as models_lib
from ntk_attention import ridge as ridge_lib
from ntk_attention import spectral
from ntk_attention import training

ATTACKS = attacks_lib.ATTACKS + ('influence',)
KERNELS = ('empirical', 'analytic')
INTERVENTIONS = ('curated', 'transformed', 'adversarial')
METRICS = ('flip_rate', 'spearman', 'topk_overlap')
# Per trained model: accuracies (and kernel regression with its own analytic NTK), distance
# to that NTK, final loss and how concentrated the head's input features are.
DIAGNOSTICS = ('test_accuracy', 'train_accuracy', 'krr_test_accuracy', 'kernel_distance',
               'final_loss', 'feature_top_share', 'feature_effective_rank', 'eps_pixels')


SCORES = ('mean', 'per_point')
EPS_UNITS = ('pixel', 'std')


class Setup(NamedTuple):
  """What the protocol needs besides the model: [choice] defaults of docs/method.md §8–10.

  `score`: 'mean' compares each training point's influence averaged over the evaluation
  set (default); 'per_point' compares the (evaluation, training) influence matrices —
  flips over every entry of the top-τ columns, Spearman over all entries. S is chosen by
  |mean score| either way.
  """
  tau: float = 0.1
  kernel: str = 'empirical'
  ridge: float = 1e-3
  attack: attacks_lib.AttackConfig = attacks_lib.AttackConfig()
  score: str = 'mean'
  topk: int = 0          # k of topk_overlap; 0 = |S|
  eps_units: str = 'pixel'   # ε in [0, 1] pixels, or in units of the training pixels' std
  pixel_std: float = 1.0     # std of the training pixels; used when eps_units == 'std'
  max_memory_gb: float = 0.0   # budget of the row-blocked kernels; 0 = from the machine


def eps_pixels(setup: Setup, eps: float) -> float:
  """The ℓ∞ budget on [0, 1] pixels of a budget `eps` given in `setup.eps_units`:
  `eps` ('pixel') or `eps · pixel_std` ('std', as in a mean/std-normalised pipeline)."""
  return float(eps) * (setup.pixel_std if setup.eps_units == 'std' else 1.0)


def with_pixel_std(setup: Setup, x_train) -> Setup:
  """`setup` with `pixel_std` = the std of every training pixel (float64) when ε is in
  std units; unchanged otherwise."""
  if setup.eps_units != 'std':
    return setup
  return setup._replace(pixel_std=float(np.std(np.asarray(x_train, np.float64))))


def validate(attack_names: Sequence[str], epsilons: Sequence[float], setup: Setup,
             n_train: int, interventions: Sequence[str] = ()) -> None:
  """ValueError before any training: τ ∉ (0, 1], ε < 0, unknown attack/kernel/intervention,
  or n_train too small for τ."""
  if not 0 < setup.tau <= 1:
    raise ValueError(f'tau must be in (0, 1], got {setup.tau}.')
  if setup.tau * n_train < 1:
    raise ValueError(f'n_train={n_train} is too small for tau={setup.tau}: '
                     'the top-tau set would be empty.')
  if isinstance(setup.topk, bool) or int(setup.topk) != setup.topk or not 0 <= setup.topk <= n_train:
    raise ValueError(f'topk must be an integer in [0, n_train={n_train}], got {setup.topk}.')
  if setup.eps_units not in EPS_UNITS:
    raise ValueError(f'eps_units must be one of {EPS_UNITS}, got {setup.eps_units!r}.')
  if setup.score not in SCORES:
    raise ValueError(f'score must be one of {SCORES}, got {setup.score!r}.')
  if setup.kernel not in KERNELS:
    raise ValueError(f'kernel must be one of {KERNELS}, got {setup.kernel!r}.')
  if not setup.ridge > 0:
    raise ValueError(f'ridge must be > 0, got {setup.ridge}.')
  if not attack_names:
    raise ValueError('no attacks given.')
  for name in attack_names:
    if name not in ATTACKS:
      raise ValueError(f'unknown attack {name!r}; choose from {ATTACKS}.')
  if not epsilons:
    raise ValueError('no epsilons given.')
  for eps in epsilons:
    attacks_lib.validate('pgd', setup.attack._replace(eps=eps_pixels(setup, eps)))
  for name in interventions:
    if name not in INTERVENTIONS:
      raise ValueError(f'unknown intervention {name!r}; choose from {INTERVENTIONS}.')


def kernel_blocks(model: models_lib.Model, params, x_train, x_eval, kernel: str = 'empirical',
                  max_memory_gb: float = 0.0):
  """NTK blocks over `[x_train; x_eval]` in float64: the empirical NTK at `params` (fastest
  exact method for the model) or the analytic NTK (`params` unused).

  Outside a trace, a parameter-free prefix's kernel is built in row blocks under the
  memory budget (`blocked.empirical_ntk_blocked`, `analytic_ntk_blocked`; docs/method.md §13)
  into three separate numpy arrays, so that the train block can be factored in place
  (`influence.loo_influence_lean`).
  """
  n = jnp.shape(x_train)[0]
  if not _traced(params, x_train, x_eval) and model.prefix_kind == 'fixed':
    if kernel == 'analytic':
      return blocked.analytic_ntk_blocked(model, x_train, x_eval, max_memory_gb or None,
                                          as_blocks=True)
    return blocked.empirical_ntk_blocked(model, params, x_train, x_eval, max_memory_gb or None,
                                         as_blocks=True)
  if kernel == 'analytic':
    k = kernels.analytic_kernel(model, jnp.asarray(x_train, jnp.float64),
                                jnp.asarray(x_eval, jnp.float64))
  else:
    k = kernels.empirical_ntk(model, params, x_train, x_eval, kernels.default_method(model))
  return kernels.split_blocks(k.astype(jnp.float64), n)


def _traced(*trees) -> bool:
  return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(trees))


def influence(model, params, x_train, y_train, x_eval, y_eval, setup: Setup, blocks=None):
  """`influence.Influence` of every training point on the evaluation set (docs/method.md §8).

  Outside a trace the kernel's train block is factored in place (`loo_influence_lean`: the
  kernel is built here and dropped, one n × n array); under a trace (the influence attack
  differentiates it) the jax `loo_influence`. `blocks`: the kernel, when already computed —
  its train block is then overwritten by the factor.
  """
  if _traced(params, x_train, y_train, x_eval, y_eval):
    blocks = kernel_blocks(model, params, x_train, x_eval, setup.kernel, setup.max_memory_gb)
    return influence_lib.loo_influence(blocks.train, blocks.eval_train, y_train, y_eval,
                                       ridge=setup.ridge)
  if blocks is None:
    blocks = kernel_blocks(model, params, x_train, x_eval, setup.kernel, setup.max_memory_gb)
  return influence_lib.loo_influence_lean(blocks.train, blocks.eval_train, y_train, y_eval,
                                          ridge=setup.ridge, overwrite=True)


def compare(before, after, subset, score: str = 'mean', topk: int = 0) -> dict:
  """`flip_rate` over `subset`, `spearman` over all points, `topk_overlap` with k = `topk`
  (0: k = |S|).

  `before`, `after`: `influence.Influence`. `score='mean'` compares the mean scores `(n,)`;
  'per_point' compares the matrices `(t, n)`: flips over the entries of the columns in S,
  Spearman over all entries (top-k still by mean score).
  """
  mean_b, mean_a = np.asarray(before.scores), np.asarray(after.scores)
  if score == 'per_point':
    mat_b, mat_a = np.asarray(before.matrix), np.asarray(after.matrix)
    flip = influence_lib.flip_rate(mat_b[:, subset].ravel(), mat_a[:, subset].ravel())
    rho = influence_lib.spearman(mat_b.ravel(), mat_a.ravel())
  else:
    flip = influence_lib.flip_rate(mean_b, mean_a, subset)
    rho = influence_lib.spearman(mean_b, mean_a)
  return {
      'flip_rate': flip,
      'spearman': rho,
      'topk_overlap': influence_lib.topk_overlap(mean_b, mean_a, topk or len(subset)),
      'n_subset': int(len(subset)),
      'n_flipped': int(round(influence_lib.flip_rate(mean_b, mean_a, subset) * len(subset))),
  }


def loss_objective(model, params, y_train, subset, kind: str):
  """`x ↦` the model's mean loss on the rows `subset` of the transductive training sequence."""
  subset = jnp.asarray(subset)

  def loss_fn(x):
    out = model.apply_fn(params, x[None])[0]
    return training.loss_value(kind, out[subset], y_train[subset])

  return loss_fn


def masked_loss_objective(model, params, y_train, mask, kind: str):
  """`x ↦` the model's mean loss on the rows `mask (n,)` (bool) of the transductive training
  sequence (`training.masked_loss_value`): `loss_objective` with the subset as a mask, so
  that one compiled attack serves every τ, with the same gradient to float rounding (often
  bit for bit; docs/method.md §9)."""

  def loss_fn(x):
    out = model.apply_fn(params, x[None])[0]
    return training.masked_loss_value(kind, out, y_train, mask)

  return loss_fn


def influence_objective(model, params, y_train, x_eval, y_eval, subset, scores, setup: Setup):
  """`x ↦ −Σ_{i∈S} sign(I_i) I'_i(x) / Σ_{i∈S} |I_i|`: large when S's scores change sign.

  `I'(x)` is the influence recomputed from the kernel at `params` on training pixels `x`;
  differentiable through the kernel (float64 when x64 is enabled).
  """
  subset = jnp.asarray(subset)
  ref = jnp.asarray(scores)[subset]
  sign, norm = jnp.sign(ref), jnp.sum(jnp.abs(ref))

  def loss_fn(x):
    after = influence(model, params, x, y_train, x_eval, y_eval, setup).scores[subset]
    return -jnp.sum(sign * after) / norm

  return loss_fn


def _mask(n: int, subset):
  return jnp.zeros(n, bool).at[jnp.asarray(subset)].set(True)


@functools.partial(compiles.jit, static_argnums=(0, 1, 2, 3))
def _loss_attack(model, name, kind, attack, params, x, y, mask, key, eps, pgd_steps):
  """Attack `name` maximising the model's loss on the rows `mask (n,)`. The rows, `eps` and
  PGD's step count are traced: one compilation serves every subset (every τ), budget and
  count; `attack`'s step sizes, random start, MIM's steps and momentum are static (MIM's
  loop with a traced count rounded differently in XLA: docs/method.md §9)."""
  loss_fn = masked_loss_objective(model, params, y, mask, kind)
  return attacks_lib.attack(name, loss_fn, x, attack._replace(eps=eps, pgd_steps=pgd_steps),
                            key=key, mask=mask)


@functools.partial(compiles.jit, static_argnums=(0, 1))
def _influence_attack(model, setup, params, x, y, x_eval, y_eval, subset, scores, key):
  """PGD on `influence_objective` (rows `subset`)."""
  loss_fn = influence_objective(model, params, y, x_eval, y_eval, subset, scores, setup)
  return attacks_lib.attack('pgd', loss_fn, x, setup.attack, key=key,
                            mask=_mask(x.shape[0], subset))


def perturb(model, params, name: str, x_train, y_train, subset, setup: Setup, key, kind: str,
            x_eval=None, y_eval=None, scores=None):
  """Pixels `(n, d)` with the rows `subset` attacked by `name` within `setup.attack.eps`.

  Loss attacks maximise the trained model's loss on `subset`; 'influence' maximises
  `influence_objective` (needs `x_eval`, `y_eval` and the clean `scores`).
  """
  if name == 'influence':
    x_adv = _influence_attack(model, setup, params, x_train, y_train, x_eval, y_eval,
                              jnp.asarray(subset), jnp.asarray(scores), key)
  else:
    attacks_lib.validate(name, setup.attack)
    mask = np.zeros(x_train.shape[0], bool)   # numpy: no program (a jnp array of a new
    mask[np.asarray(subset)] = True           # subset's size would be one)
    # The study head's apply does not depend on init_std: one program for every init_std.
    x_adv = _loss_attack(models_lib.unit_init(model)[0], name, kind,
                         setup.attack._replace(eps=0.0, pgd_steps=1), params, x_train, y_train,
                         mask, key,
                         np.asarray(setup.attack.eps, x_train.dtype),   # numpy: no program
                         np.asarray(setup.attack.pgd_steps if name == 'pgd' else 0, np.int32))
  if not np.all(np.isfinite(np.asarray(x_adv))):
    raise FloatingPointError(f'{name} attack produced non-finite pixels.')
  return x_adv


def pgd_training_perturbation(model, y_train, kind: str, attack: attacks_lib.AttackConfig):
  """`perturb` hook for `training.train`: the minibatch rows replaced by their PGD examples
  against the current parameters (PGD adversarial training)."""

  def fn(params, x, idx, key):
    mask = jnp.zeros(x.shape[0], bool).at[idx].set(True)
    loss_fn = loss_objective(model, params, y_train, idx, kind)
    return attacks_lib.pgd(loss_fn, x, attack.eps, key, steps=attack.pgd_steps,
                           step_size=attack.pgd_step_size,
                           random_start=attack.pgd_random_start, mask=mask)

  return fn


def attack_one(model, params, x_train, y_train, x_eval, y_eval, before, attack_name, eps,
               setup: Setup, key, kind: str, subset=None):
  """Steps 2–3 of the protocol for one attack and ε (in `setup.eps_units`):
  `(subset, x_adv)`; `subset`: the top-τ rows of `before.scores` when the caller has them
  (`influence.top_fraction`), computed here otherwise."""
  if subset is None:
    subset = influence_lib.top_fraction(np.asarray(before.scores), setup.tau)
  setup = setup._replace(attack=setup.attack._replace(eps=eps_pixels(setup, eps)))
  return subset, perturb(model, params, attack_name, x_train, y_train, subset, setup, key, kind,
                         x_eval, y_eval, before.scores)


KEY_FIELDS = ('task', 'model', 'setting', 'attack', 'eps', 'seed')


class Points(NamedTuple):
  """The data of one run of the protocol: training pixels `x_train (n, d)` and targets
  `y_train (n, C)`, evaluation pixels `x_eval (t, d)` and targets `y_eval (t, C)`
  (`data.targets`: one-hot, or ±1 for two classes; the labels are read back from them with
  `training.labels_from_targets`)."""
  x_train: jnp.ndarray
  y_train: jnp.ndarray
  x_eval: jnp.ndarray
  y_eval: jnp.ndarray


def protocol(model, params, points: Points, attack_names, epsilons, setup: Setup, key,
             kind: str, retrain_fn=None, theta_inf=None, skip=lambda attack, eps: False,
             keep_kernels: bool = True, memo: Optional[MutableMapping] = None):
  """The whole protocol on one trained model: `(records, arrays)`, one record per attack × ε.

  `points`: the training and evaluation data (`Points`); `kind`: the loss the attacks
  maximise (`training.loss_kind`); `key`: the attacks' PRNG key; `skip(attack, eps)`: True
  for a cell already done. Each record holds the metrics of `compare`, the clean test
  accuracy and (when `theta_inf`, the analytic NTK over `[x_train; x_eval]`, is given) the
  kernel distance `‖Θ_m − Θ∞‖/‖Θ∞‖` at `params` (`theta_inf`: an `(N, N)` array or
  `kernels.Blocks`). `retrain_fn(x_adv) -> params'` retrains on the perturbed
  set first (`--retrain`). `arrays` holds the targets, `I`, `I'` per attack × ε and, with
  `keep_kernels`, copies of the clean kernel blocks (n² more doubles), for `--save_arrays`.
  `memo` (`ntk_attention.memo`): what depends only on the trained model and its clean data
  — accuracies, `trainability`, the kernel distance, the KRR accuracy (per ridge), the
  clean influence `I` (per kernel and ridge) and each attack's pixels (per attack, ε in
  pixels, attack settings, top-τ subset and key) — is taken from it when a call with the
  same inputs (by content) stored it, and stored there otherwise; the numbers are the same.
  """
  x_train = jnp.asarray(points.x_train, jnp.float32)
  x_eval = jnp.asarray(points.x_eval, jnp.float32)
  y_train, y_eval = points.y_train, points.y_eval
  n = x_train.shape[0]
  inputs = None if memo is None else (
      model, memo_lib.tree_digest(params), memo_lib.digest(x_train), memo_lib.digest(x_eval),
      memo_lib.digest(y_train), memo_lib.digest(y_eval), setup.max_memory_gb)

  def memo_key(*what):      # what is computed, from these inputs
    return None if memo is None else what + inputs

  # Memory (docs/method.md §13): at most three N × N arrays at once — the kernel, Θ∞ and
  # Θ∞'s train block while its KRR is solved; the influence factors the kernel in place.
  clean = {}

  def clean_kernel():   # the clean kernel, built at most once per call
    if 'k' not in clean:
      clean['k'] = kernel_blocks(model, params, x_train, x_eval, setup.kernel,
                                 setup.max_memory_gb)
    return clean['k']

  def diagnostics():
    test_acc, train_acc = _accuracies(model, params, x_train, x_eval, y_train, y_eval)
    return ({'test_accuracy': float(test_acc), 'train_accuracy': float(train_acc)},
            trainability(model, params, x_train, x_eval))

  accuracies, features = memo_lib.get(memo, memo_key('diagnostics'), diagnostics)
  common = dict(accuracies, eps_units=setup.eps_units, **features)
  if theta_inf is not None:
    theta = theta_inf if isinstance(theta_inf, kernels.Blocks) else kernels.split_blocks(
        theta_inf, n)
    theta_key = None if memo is None else memo_lib.tree_digest(theta)

    def distance():
      k = (clean_kernel() if setup.kernel == 'empirical' else
           kernel_blocks(model, params, x_train, x_eval, 'empirical', setup.max_memory_gb))
      return _blocks_distance(k, theta)

    def krr():   # KRR with Θ∞ (`kernels.ntk_predictor`'s formula), on a copy of its train block
      alpha = ridge_lib.ridge_solve_host(theta.train, np.asarray(y_train, np.float64),
                                         setup.ridge)
      return float(training.accuracy(np.asarray(theta.eval_train) @ alpha,
                                     training.labels_from_targets(y_eval)))

    common['kernel_distance'] = memo_lib.get(memo, memo_key('distance', theta_key), distance)
    common['krr_test_accuracy'] = memo_lib.get(memo, memo_key('krr', theta_key, setup.ridge),
                                               krr)
  arrays = {'y_train': y_train, 'y_eval': y_eval}
  if keep_kernels:                     # a copy: the influence overwrites the train block
    k = clean_kernel()
    arrays.update(k_train=np.array(k.train), k_eval_train=np.array(k.eval_train))
  before = memo_lib.get(
      memo, memo_key('influence', setup.kernel, setup.ridge),
      lambda: influence(model, params, x_train, y_train, x_eval, y_eval, setup, clean_kernel()))
  clean.clear()
  arrays['influence_before'] = before.scores
  records = []
  for a_i, name in enumerate(attack_names):
    for e_i, eps in enumerate(epsilons):
      if skip(name, eps):
        continue
      k_attack = jax.random.fold_in(jax.random.fold_in(key, a_i), e_i)
      # A loss attack depends on the scores only through the top-τ subset: a variation that
      # keeps the subset (a ridge, the score, the kernel) reuses the attack.
      subset = influence_lib.top_fraction(np.asarray(before.scores), setup.tau)
      attack_key = None if memo is None else memo_key(
          'attack', name, kind, eps_pixels(setup, eps), setup.attack._replace(eps=0.0),
          memo_lib.digest(subset), memo_lib.digest(k_attack),
          # the influence attack also reads the clean scores and the influence's settings
          (memo_lib.digest(before.scores), setup) if name == 'influence' else None)
      subset, x_adv = memo_lib.get(
          memo, attack_key,
          lambda: attack_one(model, params, x_train, y_train, x_eval, y_eval, before, name,
                             eps, setup, k_attack, kind, subset))
      p_after = params if retrain_fn is None else retrain_fn(x_adv)
      after = influence(model, p_after, x_adv, y_train, x_eval, y_eval, setup)
      rec = dict(common, attack=name, eps=float(eps), eps_pixels=eps_pixels(setup, eps),
                 # on the host: exact in any order, and no program per shape
                 linf=float(np.max(np.abs(np.asarray(x_adv) - np.asarray(x_train)))),
                 **compare(before, after, subset, setup.score, setup.topk))
      records.append(rec)
      arrays[f'influence_after/{name}/{eps:g}'] = after.scores
  return records, arrays


def _blocks_distance(k: kernels.Blocks, theta: kernels.Blocks, rows: int = 1024) -> float:
  """`‖K − Θ‖_F/‖Θ‖_F` of the full `[train; eval]` kernel K given as blocks, without
  assembling it (at large n a second N × N array would not fit) and `rows` rows at a time
  (no n × n temporary)."""
  def sq(a, b=None):
    a = np.asarray(a)
    b = None if b is None else np.asarray(b)
    return sum(float(np.sum(np.square(np.asarray(a[s:s + rows], np.float64) - (
        0.0 if b is None else np.asarray(b[s:s + rows], np.float64)))))
               for s in range(0, a.shape[0], rows))
  diff = (sq(k.train, theta.train) + 2 * sq(k.eval_train, theta.eval_train)
          + sq(k.eval, theta.eval))
  ref = sq(theta.train) + 2 * sq(theta.eval_train) + sq(theta.eval)
  return (diff / ref) ** 0.5


def trainability(model, params, x_train, x_eval) -> dict:
  """Why a model does or does not train: how concentrated the training features that the
  ReLU head sees are (`spectral.feature_concentration` of the prefix output)."""
  # Not in `_accuracies`' program: XLA's fused prefix rounds the features differently in
  # the last bit (docs/method.md §16); `models.prefix_features` keeps the op-by-op bits (and
  # shares its program with the blocked kernels' features).
  z = models_lib.prefix_features(model.prefix, params[0], x_train, x_eval,
                                 jnp.result_type(x_train))
  z = np.asarray(z, np.float64)[:np.shape(x_train)[0]]    # the training rows
  top, eff = spectral.feature_concentration(z)
  return {'feature_top_share': top, 'feature_effective_rank': eff}


def _accuracies_eager(model, params, x_train, x_eval, y_train, y_eval):
  """`(test accuracy, train accuracy)` of the trained model (`training.accuracy` of
  `training.outputs` against the labels of the targets)."""
  f_train, f_eval = training.outputs(model, params, x_train, x_eval)
  return (training.accuracy(f_eval, training.labels_from_targets(y_eval)),
          training.accuracy(f_train, training.labels_from_targets(y_train)))


def _accuracies(model, params, x_train, x_eval, y_train, y_eval):
  """`_accuracies_eager` as one compiled program per (model, shapes) — op by op it was
  about twenty programs — or op by op when the model cannot be traced
  (`models.compiled_or_eager`). The study head's apply does not depend on init_std: one
  program for every init_std."""
  return models_lib.compiled_or_eager(_accuracies_program, _accuracies_eager,
                                      models_lib.unit_init(model)[0], params, x_train, x_eval,
                                      y_train, y_eval)


_accuracies_program = compiles.jit(_accuracies_eager, static_argnums=0)


def intervention_set(name, model, params, x_train, y_train, subset, setup: Setup, key, kind):
  """Training set `(x, y)` of an intervention (see module docstring); PGD at `setup.attack`."""
  n = x_train.shape[0]
  if name == 'curated':
    keep = np.setdiff1d(np.arange(n), np.asarray(subset))   # rows taken on the host
    return (jax.device_put(np.asarray(x_train)[keep]),      # (no program per subset size)
            jax.device_put(np.asarray(y_train)[keep]))
  rows = np.asarray(subset) if name == 'transformed' else np.arange(n)
  return perturb(model, params, 'pgd', x_train, y_train, rows, setup, key, kind), y_train


class Settings(NamedTuple):
  """Which settings a sweep runs (module docstring): 'standard', or 'retrain' with `retrain`
  (each attack's perturbed set retrained from the same seed); each of `interventions`
  (`INTERVENTIONS`); and 'pgd_at' with `adversarial_training`."""
  retrain: bool = False
  interventions: Tuple[str, ...] = ()
  adversarial_training: bool = False

  def names(self) -> list:
    """The settings' names, in the order a sweep runs them."""
    return (['retrain' if self.retrain else 'standard'] + list(self.interventions)
            + (['pgd_at'] if self.adversarial_training else []))


def _ignore(*args):
  return None


class Hooks(NamedTuple):
  """Where a sweep's results go and what it skips (the library does no I/O).

  task: the label of the records ('all', '3,8', 'n=500'), part of their key.
  done: the keys of records already stored (`KEY_FIELDS` tuples for `sweep`), skipped.
  on_record(record): each record as it exists.
  on_arrays(key, arrays): seed `seeds[0]`'s kernels and influence vectors, per model and
    setting (`key` = 'model/setting').
  kernels: False leaves the kernel blocks out of `on_arrays` (they are copies: n² doubles
    each, kept until the callback).
  on_progress(n): n more records done.
  """
  task: str = 'all'
  done: Collection[tuple] = ()
  on_record: Callable = _ignore
  on_arrays: Callable = _ignore
  on_progress: Callable = _ignore
  kernels: bool = True


def sweep(ds, models, width: int, seeds: Sequence[int],
          attack_names: Sequence[str], epsilons: Sequence[float], setup: Setup = Setup(),
          train_config: training.TrainConfig = training.TrainConfig(),
          settings: Settings = Settings(), hooks: Hooks = Hooks(), base_seed: int = 0,
          train_fn=training.train, memo: Optional[MutableMapping] = None) -> list:
  """Malleability of every model × setting × attack × ε × seed; returns the new records.

  Args:
    ds: a `data.Dataset` (training and test points, labels, classes).
    models: built-in names, `'module:function'` entries or `{name: factory}`
      (`models.factories`; for built-in names with `models.build` options, pass
      `models.factories(names, options)`).
    width: the models' width m.
    seeds: training seeds (the PRNG key of seed s is `base_seed + s`).
    attack_names, epsilons: the grid of attacks (`ATTACKS`) and budgets (in `setup.eps_units`).
    setup: the protocol's choices (`Setup`).
    train_config: how each model trains (`training.TrainConfig`).
    settings: which settings run (`Settings`).
    hooks: the task label, the records to skip, and the callbacks (`Hooks`).
    train_fn: `training.train` or any function with its signature (e.g. the study's
      `study.cache.cached_train`).
    memo: a mapping shared between sweeps (`ntk_attention.memo`): each model's Θ∞ on the
      clean data and what `protocol` memoises per trained model are computed once per
      distinct inputs (by content), e.g. across sweeps that vary only ε, τ or the attack.
  """
  from ntk_attention import data as data_lib
  validate(attack_names, epsilons, setup, len(ds.x_train), settings.interventions)
  training.validate(train_config)
  factories = models_lib.factories(models)
  task = hooks.task
  setup = with_pixel_std(setup, ds.x_train)
  # PGD of the interventions and of adversarial training, at setup.attack.eps in eps_units.
  train_setup = setup._replace(attack=setup.attack._replace(
      eps=eps_pixels(setup, setup.attack.eps)))
  done = set(hooks.done)
  y_train = jnp.asarray(data_lib.targets(ds.y_train, ds.num_classes))
  y_eval = jnp.asarray(data_lib.targets(ds.y_test, ds.num_classes))
  x_train = jnp.asarray(ds.x_train, jnp.float32)
  x_eval = jnp.asarray(ds.x_test, jnp.float32)
  kind = training.loss_kind(train_config, y_train.shape[1])
  new = []

  def todo(name, setting, seed):
    return [(a, e) for a in attack_names for e in epsilons
            if (task, name, setting, a, float(e), int(seed)) not in done]

  for name, factory in factories.items():
    model = models_lib.instantiate(name, factory, int(width), y_train.shape[1])

    def theta_inf(x):     # analytic NTK over [x; x_eval], from the model's own kernel_fn
      if model.prefix_kind == 'fixed':
        return blocked.analytic_ntk_blocked(model, x, x_eval, setup.max_memory_gb or None,
                                            as_blocks=True)
      return kernels.analytic_kernel(model, jnp.asarray(x, jnp.float64),
                                     jnp.asarray(x_eval, jnp.float64))

    # Shared by every setting that keeps the data (and by every sweep with the memo).
    theta_clean = memo_lib.get(memo, None if memo is None else (
        'theta', model, memo_lib.digest(x_train), memo_lib.digest(x_eval), setup.max_memory_gb),
        lambda: theta_inf(x_train))

    def train(x, y, keys, perturb_fn=None):
      return train_fn(model, keys, x, y, train_config, perturb=perturb_fn)

    for setting in settings.names():
      seeds_left = [s for s in seeds if todo(name, setting, s)]
      if not seeds_left:
        continue
      keys = training.seed_keys(seeds_left, base_seed)
      one_key = lambda i: training.seed_keys([seeds_left[i]], base_seed)   # keys[i:i + 1]
      if setting == 'pgd_at':
        at = pgd_training_perturbation(model, y_train, kind, train_setup.attack)
        result = train(x_train, y_train, keys, at)
      else:
        result = train(x_train, y_train, keys)
      for i, seed in enumerate(seeds_left):
        params = training.unstack(result.params, i)
        x_s, y_s = x_train, y_train
        key = jax.random.fold_in(jax.random.PRNGKey(base_seed + int(seed)), 7919)
        if setting in INTERVENTIONS:
          clean = influence(model, params, x_train, y_train, x_eval, y_eval, setup)
          subset = influence_lib.top_fraction(np.asarray(clean.scores), setup.tau)
          x_s, y_s = intervention_set(setting, model, params, x_train, y_train, subset,
                                      train_setup, jax.random.fold_in(key, 1), kind)
          retrained = train(x_s, y_s, one_key(i))
          params, losses = training.unstack(retrained.params, 0), retrained.losses[0]
        else:
          losses = result.losses[i]
        retrain_fn = None
        if setting == 'retrain':
          retrain_fn = lambda x_adv, k=one_key(i), y=y_s: training.unstack(
              train(x_adv, y, k).params, 0)
        skip = lambda a, e, s=setting, sd=seed: (task, name, s, a, float(e), int(sd)) in done
        records, arrays = protocol(model, params, Points(x_s, y_s, x_eval, y_eval),
                                   attack_names, epsilons, setup, key, kind, retrain_fn,
                                   theta_clean if x_s is x_train else theta_inf(x_s), skip,
                                   keep_kernels=(hooks.kernels and hooks.on_arrays is not _ignore
                                                 and seed == seeds[0]), memo=memo)
        if records:
          rec0 = records[0]
          training.warn_if_undertrained(rec0['test_accuracy'], ds.num_classes,
                                        f'{name} ({setting}, seed {seed})')
        for rec in records:
          rec.update(task=task, model=name, setting=setting, seed=int(seed), width=int(width),
                     dataset=ds.name, n_train=int(x_s.shape[0]), tau=setup.tau,
                     kernel=setup.kernel, init_std=model.init_std,
                     final_loss=float(losses[-1]),
                     undertrained=rec0['test_accuracy'] < training.accuracy_floor(ds.num_classes))
          hooks.on_record(rec)
          new.append(rec)
        if seed == seeds[0]:
          hooks.on_arrays(f'{name}/{setting}', dict(arrays, loss_curve=losses))
        hooks.on_progress(len(records))
  return new


__all__ = ['ATTACKS', 'KERNELS', 'INTERVENTIONS', 'METRICS', 'DIAGNOSTICS', 'SCORES', 'EPS_UNITS',
           'KEY_FIELDS', 'Setup', 'Points', 'Settings', 'Hooks', 'eps_pixels', 'with_pixel_std',
           'validate', 'kernel_blocks', 'influence', 'compare', 'loss_objective',
           'masked_loss_objective', 'influence_objective', 'perturb', 'pgd_training_perturbation',
           'attack_one', 'trainability', 'intervention_set', 'protocol', 'sweep']
