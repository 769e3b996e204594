"""Training with optax, every seed of a width vmapped in one compiled program per shape.

Defaults follow the study (docs/method.md §6): Adam, lr 1e-3, batch 128, 500 epochs, L2 weight
decay 1e-3 on the trained weights (added to the gradient, as PyTorch's Adam does), the ±1
readout frozen; cross-entropy for C > 2 classes and MSE on ±1 targets for binary tasks.

The model is transductive: the training set is one sequence and every token attends to
it. When the prefix is parameter-free (relu_mlp, mlp_attn) its features are computed once
and each step trains the per-token head on a minibatch of rows; a trainable prefix
(mlp_attn_qkv) is re-applied to the whole training sequence every step, and the loss is
taken on the minibatch rows.

Seeds: seed `s` owns one PRNG key, split into an initialisation key and a shuffling key,
so a seed trains to the same parameters alone or vmapped with others. With several JAX
devices the seed axis is sharded across them.

Losses (per step, over the B minibatch rows and C outputs):
  mse:  ½ · mean_{b,c} (f_bc − y_bc)²      (NT's `gradient_descent_mse` normalisation)
  xent: mean_b −log softmax(f_b)[y_b]
"""
import functools
import warnings
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ntk_attention import compiles
from ntk_attention import devices as devices_lib
from ntk_attention import layers
from ntk_attention import models as models_lib

OPTIMIZERS = ('adam', 'sgd')
LOSSES = ('auto', 'mse', 'xent')


class TrainConfig(NamedTuple):
  """[choice] defaults of docs/method.md §6; every field is a script flag."""
  optimizer: str = 'adam'
  lr: float = 1e-3
  epochs: int = 500
  batch_size: int = 128
  weight_decay: float = 1e-3
  loss: str = 'auto'


class TrainResult(NamedTuple):
  """Stacked over seeds `S`: `params` and `init_params` pytrees with a leading S axis;
  `losses (S, epochs)` (a numpy array), the mean training loss of each epoch."""
  init_params: object
  params: object
  losses: jnp.ndarray


def validate(config: TrainConfig, n_train: Optional[int] = None) -> None:
  """ValueError for settings that cannot train."""
  if config.optimizer not in OPTIMIZERS:
    raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}.')
  if config.loss not in LOSSES:
    raise ValueError(f'loss must be one of {LOSSES}, got {config.loss!r}.')
  if not (config.lr > 0 and np.isfinite(config.lr)):
    raise ValueError(f'lr must be > 0, got {config.lr}.')
  if int(config.epochs) != config.epochs or config.epochs < 1:
    raise ValueError(f'epochs must be a positive integer, got {config.epochs}.')
  if int(config.batch_size) != config.batch_size or config.batch_size < 1:
    raise ValueError(f'batch_size must be a positive integer, got {config.batch_size}.')
  if not config.weight_decay >= 0:
    raise ValueError(f'weight_decay must be >= 0, got {config.weight_decay}.')
  if n_train is not None and n_train < 1:
    raise ValueError('no training points.')


def loss_kind(config: TrainConfig, num_outputs: int) -> str:
  """'auto' -> cross-entropy for C > 2 outputs, MSE for one (±1 binary) output."""
  if config.loss != 'auto':
    return config.loss
  return 'xent' if num_outputs > 2 else 'mse'


def loss_value(kind: str, outputs, targets):
  """Mean loss of `outputs (B, C)` against `targets (B, C)` (one-hot or ±1)."""
  if kind == 'mse':
    return 0.5 * jnp.mean((outputs - targets) ** 2)
  if kind == 'xent':
    return jnp.mean(optax.softmax_cross_entropy(outputs, targets))
  raise ValueError(f'unknown loss {kind!r}.')


def masked_loss_value(kind: str, outputs, targets, mask):
  """`loss_value` of the rows `mask (N,)` (bool) of `outputs (N, C)` against `targets (N,
  C)`, with `k = Σ mask` rows: mse `½ Σ_{i∈mask, c} (f_ic − y_ic)² / (k C)`, xent
  `Σ_{i∈mask} −log softmax(f_i)[y_i] / k`. One program serves every subset of N rows. Its
  gradient is `loss_value`'s on `outputs[mask]` (each masked row's cotangent is the same
  quotient, every other row's zero) to float rounding, often bit for bit; its value agrees
  to float rounding (the sum runs over N rows). docs/method.md §9 measures both."""
  k = jnp.sum(mask).astype(outputs.dtype)
  if kind == 'mse':
    sq = jnp.where(mask[:, None], (outputs - targets) ** 2, 0)
    return 0.5 * (jnp.sum(sq) / (k * outputs.shape[1]))
  if kind == 'xent':
    return jnp.sum(jnp.where(mask, optax.softmax_cross_entropy(outputs, targets), 0)) / k
  raise ValueError(f'unknown loss {kind!r}.')


def make_optimizer(config: TrainConfig, mask) -> optax.GradientTransformation:
  """Coupled L2 weight decay on the trained leaves (`mask`), then Adam or SGD;
  frozen leaves get zero updates."""
  scale = (optax.scale_by_adam() if config.optimizer == 'adam' else optax.identity())
  trained = optax.chain(optax.add_decayed_weights(config.weight_decay), scale,
                        optax.scale(-config.lr))
  labels = jax.tree_util.tree_map(lambda m: 'trained' if m else 'frozen', mask)
  return optax.multi_transform({'trained': trained, 'frozen': optax.set_to_zero()}, labels)


def outputs(model: models_lib.Model, params, x_train, x_eval=None):
  """Transductive predictions: `(f_train (n, C), f_eval (t, C) or None)`."""
  seq, context = layers.as_sequence(x_train, x_eval)
  out = model.apply_fn(params, seq, context=context)[0]
  n = jnp.shape(x_train)[0]
  return out[:n], (None if x_eval is None else out[n:])


@compiles.jit   # one program per shape (op by op: four); counts and one division, the same bits
def accuracy(out, labels) -> jnp.ndarray:
  """Fraction correct: argmax for C > 1 outputs, sign (+1 ↔ label 0) for one output."""
  out = jnp.asarray(out)
  pred = jnp.argmax(out, -1) if out.shape[-1] > 1 else (out[:, 0] < 0).astype(jnp.int32)
  return jnp.mean(pred == jnp.asarray(labels))


@compiles.jit
def labels_from_targets(targets) -> jnp.ndarray:
  """Labels `(n,)` of targets `(n, C)`: argmax of one-hot rows, or 0 for +1 / 1 for −1
  (the ±1 binary targets of `data.targets`)."""
  targets = jnp.asarray(targets)
  if targets.shape[-1] > 1:
    return jnp.argmax(targets, -1)
  return (targets[:, 0] < 0).astype(jnp.int32)


def accuracy_floor(num_classes: int) -> float:
  """Accuracy below which a trained model is reported as not trained: twice chance,
  `2/C`, capped at halfway between chance and perfect, `(1 + 1/C)/2` (0.75 for binary)."""
  return min(2.0 / num_classes, (1.0 + 1.0 / num_classes) / 2)


def warn_if_undertrained(accuracy: float, num_classes: int, what: str) -> bool:
  """Warns (UserWarning) and returns True when `accuracy < accuracy_floor(num_classes)`."""
  floor = accuracy_floor(num_classes)
  if accuracy < floor:
    warnings.warn(f'{what}: test accuracy {100 * accuracy:.1f}% is below '
                  f'{100 * floor:.0f}% (twice chance, capped); the model barely trained, so '
                  'its malleability and distance numbers describe an untrained network.')
    return True
  return False


def _batches(key, n: int, batch_size: int):
  """Shuffled minibatch indices `(n_batches, B)`; the remainder `n mod B` is dropped
  (different points each epoch); a batch larger than n trains full-batch."""
  b = min(batch_size, n)
  perm = jax.random.permutation(key, n)
  n_batches = n // b
  return perm[:n_batches * b].reshape(n_batches, b)


def train(model: models_lib.Model, keys, x_train, y_train, config: TrainConfig = TrainConfig(),
          dtype=jnp.float32, perturb: Optional[Callable] = None) -> TrainResult:
  """Trains one network per key, all seeds vmapped: one compiled initialisation, then the
  epochs in calls of CHUNK_EPOCHS to one compiled chunk program, in which lr and weight decay
  are arguments (a new value compiles nothing; docs/method.md §6).

  Args:
    model: a `models.Model`.
    keys: `(S, 2)` PRNG keys, one per seed.
    x_train: `(n, d)` pixels; y_train: `(n, C)` targets (one-hot or ±1).
    config: `TrainConfig`.
    perturb: optional `perturb(params, x_train, idx, key) -> x_train'`, applied before
      every step (adversarial training: the minibatch rows `idx` replaced by attacks
      against the current parameters). The whole model, prefix included, is then
      re-applied to the perturbed training sequence each step.

  Returns:
    `TrainResult` with parameters stacked over the S seeds.
  """
  validate(config, len(x_train))
  x_train = jnp.asarray(x_train, dtype)
  y_train = jnp.asarray(y_train, dtype)
  if y_train.ndim != 2 or y_train.shape[0] != x_train.shape[0]:
    raise ValueError(f'y_train must be (n, C) with n={x_train.shape[0]}; got {y_train.shape}.')
  if y_train.shape[1] != model.out_dim:
    raise ValueError(f'model has {model.out_dim} outputs but targets have {y_train.shape[1]}.')
  kind = loss_kind(config, y_train.shape[1])
  keys, replicate = _shard_seeds(jnp.asarray(keys))
  x_train, y_train = replicate(x_train), replicate(y_train)
  # One program per shape: lr, weight decay and the study head's init_std are arguments,
  # the epochs run in chunks of CHUNK_EPOCHS (docs/method.md §6).
  program_model, init_std = models_lib.unit_init(model)
  static = config._replace(lr=0.0, weight_decay=0.0, epochs=0)
  # numpy values, not jnp: a jnp conversion is one more eager program.
  hyper = np.asarray([config.lr, config.weight_decay], dtype)
  # init_std multiplies the weights in the precision they are drawn in, before the cast.
  scale = np.asarray(1.0 if init_std is None else init_std, jnp.result_type(float))
  feats = None if model.prefix_trainable else _features(program_model, x_train)
  params0, carry, shuffle_keys = _init_seeds(program_model, static, init_std is not None,
                                             keys, x_train.shape[1], hyper, scale)
  chunks = []
  for start in range(0, config.epochs, CHUNK_EPOCHS):   # the last chunk may be shorter
    carry, losses = _train_chunk(program_model, static, kind, perturb,
                                 min(CHUNK_EPOCHS, config.epochs - start), carry, shuffle_keys,
                                 np.asarray(start, np.int32), x_train, y_train, feats, hyper)
    chunks.append(losses)
  # Several processes: every process gets every seed's parameters (docs/method.md §13).
  params0, params, chunks = devices_lib.gather_tree((params0, carry[0], chunks))
  losses = np.concatenate([np.asarray(c) for c in chunks], axis=1)   # (S, epochs), on the host
  if not np.all(np.isfinite(losses)):
    raise FloatingPointError('training loss became non-finite; lower --lr.')
  return TrainResult(params0, params, losses)


# Epochs per call of the compiled chunk (`_train_chunk`): one program serves every epoch
# count that is a multiple of it, and one more every other remainder. Not a masked fixed
# length: the select it needs changes XLA's fusion and the float32 rounding of a step.
CHUNK_EPOCHS = 10


def _optimizer(model, config, hyper, params):
  """`make_optimizer` with the traced lr and weight decay of `hyper = [lr, wd]`."""
  config = config._replace(lr=hyper[0], weight_decay=hyper[1])
  return make_optimizer(config, models_lib.trainable_mask(model, params))


@functools.partial(compiles.jit, static_argnums=(0, 1, 2, 4))
def _init_seeds(model, config, scaled, keys, d, hyper, init_std):
  """Per seed (vmapped): the initial parameters (the study head's first layer scaled by the
  traced `init_std` when `scaled`: `models.unit_init`), the optimiser state and the
  shuffling key: seed key -> (init key, shuffle key)."""
  dtype = hyper.dtype

  def one_seed(key):
    k_init, k_shuffle = jax.random.split(key)
    params0 = models_lib.init_params(model, k_init, d, dtype, init_std if scaled else None)
    opt = _optimizer(model, config, hyper, params0)
    return params0, (params0, opt.init(params0)), k_shuffle

  return jax.vmap(one_seed)(keys)


@functools.partial(compiles.jit, static_argnums=0)
def _features(model, x_train):
  """A fixed prefix's features of the training sequence, `(n, d')`; its parameters from any
  key (it has none that train)."""
  seq, _ = layers.as_sequence(x_train)
  any_params = models_lib.init_params(model, jax.random.PRNGKey(0), x_train.shape[1],
                                      x_train.dtype)
  return models_lib.features(model, any_params, seq)[0]


# `jax.jit`, not `compiles.jit`: at LLVM level 1 this program rounds differently in float32
# at small widths (an MSE-trained width-16 model's final loss by 1.2e-7; docs/method.md §16).
@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _train_chunk(model, config, kind, perturb, length, carry, shuffle_keys, start, x_train,
                 y_train, feats, hyper):
  """Epochs `start … start + length − 1` of every seed, vmapped over the leading axis of
  `carry` and `shuffle_keys (S, 2)`; returns the carry and each epoch's mean loss
  `(S, length)`. Epoch e shuffles with `fold_in(shuffle key, e)` (= `split(shuffle key,
  epochs)[e]` under JAX's default partitionable threefry). One program per (model, static
  config, loss, perturb, length, shapes): `start`, lr and weight decay (`hyper = [lr, wd]`)
  are traced."""
  n = x_train.shape[0]
  seq, _ = layers.as_sequence(x_train)

  def batch_outputs(params, idx, x=None):
    if x is not None:
      return model.apply_fn(params, x[None])[0][idx]
    if feats is not None:
      return models_lib.head_apply(model, params[1], feats[idx])
    return model.apply_fn(params, seq)[0][idx]

  def one_seed(carry, k_shuffle):
    opt = _optimizer(model, config, hyper, carry[0])
    keys = jax.vmap(lambda e: jax.random.fold_in(k_shuffle, e))(
        start + jnp.arange(length, dtype=jnp.int32))

    def step(carry, batch):
      params, state = carry
      idx, k = batch
      x = None if perturb is None else jax.lax.stop_gradient(perturb(params, x_train, idx, k))
      loss, grads = jax.value_and_grad(
          lambda p: loss_value(kind, batch_outputs(p, idx, x), y_train[idx]))(params)
      updates, state = opt.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), loss

    def epoch(carry, k):
      k_perm, k_steps = jax.random.split(k)
      idx = _batches(k_perm, n, config.batch_size)
      step_keys = jax.random.split(k_steps, idx.shape[0])
      carry, losses = jax.lax.scan(step, carry, (idx, step_keys))
      return carry, jnp.mean(losses)

    return jax.lax.scan(epoch, carry, keys)

  return jax.vmap(one_seed)(carry, shuffle_keys)


def seed_keys(seeds, base_seed: int = 0):
  """`(S, 2)` keys for integer seeds: `PRNGKey(base_seed + s)` (stacked on the host: a jnp
  stack would be a program per seed count)."""
  return jax.device_put(np.stack([np.asarray(jax.random.PRNGKey(base_seed + int(s)))
                                  for s in seeds]))


def unstack(tree, i: int):
  """The i-th seed of a pytree stacked over seeds, on the default device (sliced on the
  host: an eager slice is one program per leaf shape and index)."""
  return jax.tree_util.tree_map(lambda a: jax.device_put(np.asarray(a)[i]), tree)


def _shard_seeds(keys):
  """`(keys, replicate)`: the seed axis sharded over the devices (of every process) when it
  divides evenly, and a function that places the data on the same mesh, replicated."""
  devices = jax.devices()
  if len(devices) < 2 or keys.shape[0] % len(devices):
    return keys, lambda a: a
  mesh = devices_lib.mesh_1d('seeds', devices)
  spec = jax.sharding.PartitionSpec('seeds')
  everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return (jax.device_put(keys, jax.sharding.NamedSharding(mesh, spec)),
          lambda a: jax.device_put(a, everywhere))


__all__ = ['OPTIMIZERS', 'LOSSES', 'TrainConfig', 'TrainResult', 'validate', 'loss_kind',
           'loss_value', 'masked_loss_value', 'make_optimizer', 'outputs', 'accuracy',
           'labels_from_targets', 'accuracy_floor', 'warn_if_undertrained', 'train', 'seed_keys',
           'unstack']
