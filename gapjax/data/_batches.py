"""Batches as pure functions of (key, step): resumable and reproducible."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int,
                  *, drop_remainder: bool = True) -> jax.Array:
    """Index array (num_batches, batch_size) of one shuffled epoch.

    A pure function of ``key``: same key, same order. With
    ``drop_remainder=False`` and an uneven last batch a ValueError is raised
    (uneven batches would silently change BatchNorm statistics).
    """
    if batch_size < 1 or batch_size > num_examples:
        raise ValueError(f"batch_size must be in [1, {num_examples}], got {batch_size}")
    if not drop_remainder and num_examples % batch_size:
        raise ValueError(f"num_examples={num_examples} is not divisible by "
                         f"batch_size={batch_size}; pass drop_remainder=True")
    nb = num_examples // batch_size
    perm = jax.random.permutation(key, num_examples)
    return perm[: nb * batch_size].reshape(nb, batch_size)


def batch_at(key: jax.Array, step, arrays, batch_size: int):
    """The batch used at global ``step``: epoch ``step // nb``, batch ``step % nb``.

    ``arrays`` is a pytree of arrays with a common leading axis. Every epoch is
    reshuffled with ``fold_in(key, epoch)``; the result depends only on
    ``(key, step)``, so a resumed run sees exactly the batches of a straight run.
    Works under jit (``step`` may be traced).
    """
    leaves = jax.tree.leaves(arrays)
    n = leaves[0].shape[0]
    if any(x.shape[0] != n for x in leaves):
        raise ValueError("all arrays must share the leading (example) dimension")
    nb = n // batch_size
    if nb < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} examples")
    epoch, i = step // nb, step % nb
    idx = epoch_batches(jax.random.fold_in(key, epoch), n, batch_size)
    take = jax.lax.dynamic_index_in_dim(idx, i, keepdims=False)
    return jax.tree.map(lambda x: jnp.take(jnp.asarray(x), take, axis=0), arrays)
