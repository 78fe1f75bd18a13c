"""The train-state pytree."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a training run needs to continue, as one pytree.

    Attributes:
      step: int32 scalar, number of updates applied.
      params: model parameters.
      opt_state: optax state.
      collections: mutable linen collections (e.g. ``{"batch_stats": ...}``);
        ``{}`` when the model has none.
      rng: uint32 key data (``jax.random.key_data``) of the run's base key;
        the step key is ``fold_in(rng, step)`` (see :func:`step_key`).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    collections: Any
    rng: jax.Array


def init_train_state(rng: jax.Array, init_fn: Callable[[jax.Array], Any],
                     tx: optax.GradientTransformation) -> TrainState:
    """Builds a :class:`TrainState`.

    Arguments:
      rng: a typed PRNG key (``jax.random.key``) or raw uint32 key data.
      init_fn: ``key -> variables``; ``variables["params"]`` are the parameters,
        every other top-level collection is kept in ``collections``. Typically
        ``functools.partial(model.init, x=dummy)`` or ``lambda k: model.init(k, x)``.
      tx: optax optimizer.
    Returns:
      the state with ``step = 0``. vmap this function over keys to get a stacked
      state for several seeds.
    """
    key = _as_key(rng)
    k_init, k_run = jax.random.split(key)
    variables = dict(init_fn(k_init))
    if "params" not in variables:
        raise ValueError(f"init_fn must return variables with a 'params' "
                         f"collection; got collections {sorted(variables)}")
    params = variables.pop("params")
    return unalias(TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params), collections=variables,
                              rng=jax.random.key_data(k_run)))


def unalias(tree):
    """Copies leaves that are the same array object as an earlier leaf.

    A state whose collections hold e.g. the initial params (``{"w0": params}``)
    would otherwise pass one buffer twice to a step that donates its state.
    Tracers are left alone (call this again on the concrete result of a vmap).
    """
    seen = set()

    def fix(x):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
            if id(x) in seen:
                return jnp.copy(x)
            seen.add(id(x))
        return x

    return jax.tree.map(fix, tree)


def step_key(state: TrainState) -> jax.Array:
    """The typed PRNG key for the current step: ``fold_in(rng, step)``."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def _as_key(rng) -> jax.Array:
    if isinstance(rng, int):
        raise TypeError("rng must be a PRNG key (jax.random.key(seed)), not an int")
    rng = jnp.asarray(rng) if not hasattr(rng, "dtype") else rng
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return rng
    if rng.dtype == jnp.uint32 and rng.shape[-1:] == (2,):
        return jax.random.wrap_key_data(rng)
    raise TypeError(f"rng must be a typed PRNG key or uint32 key data of shape (2,), "
                    f"got dtype {rng.dtype} shape {rng.shape}")
