"""Content-keyed memos: a pure computation's result kept under a digest of its inputs.

A memo is any mutable mapping the caller owns (a dict; `collections.ChainMap({}, shared)`
to read a shared memo without adding to it). `get(memo, key, compute)` returns
`memo[key]`, or computes, stores and returns it; with `memo=None` it only computes. Keys
hold digests of the input arrays (`digest`, `tree_digest`: shape, dtype and SHA-1 of the
bytes), so equal inputs hit whichever arrays carry them and different inputs never do.
"""
import hashlib
from typing import Callable, MutableMapping, Optional

import jax
import numpy as np


def digest(a) -> tuple:
  """`(shape, dtype, sha1 of the C-ordered bytes)` of an array (copied to the host)."""
  a = np.ascontiguousarray(np.asarray(a))
  return a.shape, a.dtype.str, hashlib.sha1(a.tobytes()).hexdigest()


def tree_digest(tree) -> tuple:
  """`digest` of every leaf of a pytree, with the tree's structure."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  return (str(treedef),) + tuple(digest(leaf) for leaf in leaves)


def get(memo: Optional[MutableMapping], key, compute: Callable):
  """`memo[key]`, computed by `compute()` and stored on a miss; `compute()` without a memo."""
  if memo is None:
    return compute()
  if key not in memo:
    memo[key] = compute()
  return memo[key]


__all__ = ['digest', 'tree_digest', 'get']
