"""Builders for jit-compiled train and eval steps.

A *loss function* has the signature

    loss_fn(params, collections, batch, key) -> (loss, (new_collections, aux))

``collections`` are the mutable linen collections (``{}`` if none), ``key`` a
typed PRNG key for this step (``fold_in(state.rng, state.step)``), ``aux`` a dict
of scalar measurements. :func:`make_train_step` turns it plus an optax optimizer
into ``step(state, batch) -> (state, metrics)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from gapjax.train._state import TrainState, step_key

LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def global_norm(tree) -> jax.Array:
    """L2 norm of all leaves of a pytree (float32 accumulation)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def train_step_fn(loss_fn: LossFn, tx: optax.GradientTransformation, *,
                  norms: bool | str = True):
    """The un-jitted step ``(state, batch) -> (state, metrics)``.

    Use this to ``jax.vmap`` over seeds (``in_axes=(0, None)``) or to compose
    inside your own jit; :func:`make_train_step` jits it. ``metrics`` holds
    ``loss``, the loss's ``aux`` and, with ``norms=True``, ``grad_norm``,
    ``param_norm``, ``update_norm``; with ``norms="grad"`` only ``grad_norm``.
    The three global norms are a reduction over every parameter each (about 9%
    of a small MLP step on CPU); a loop that logs every ``n`` steps can compile
    a second step with ``norms=False`` (or ``"grad"``, to keep watching the
    gradient) and use it between logging steps: the new state is the same
    either way.
    """
    if not (isinstance(norms, bool) or norms == "grad"):
        raise TypeError(f"norms must be True, False or 'grad', got {norms!r}")

    def step(state: TrainState, batch) -> tuple[TrainState, dict]:
        key = step_key(state)
        (loss, (new_coll, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.collections, batch, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **aux}
        if norms == "grad":
            metrics.update(grad_norm=global_norm(grads))
        elif norms:
            metrics.update(grad_norm=global_norm(grads), param_norm=global_norm(params),
                           update_norm=global_norm(updates))
        new_state = state.replace(step=state.step + 1, params=params,
                                  opt_state=opt_state, collections=new_coll)
        return new_state, metrics

    return step


def scan_train_steps(loss_fn: LossFn, tx: optax.GradientTransformation,
                     state: TrainState, batch_fn: Callable[[jax.Array], Any],
                     num_steps: int, *, norms: bool | str = True
                     ) -> tuple[TrainState, dict]:
    """``num_steps`` updates of :func:`train_step_fn` inside one ``lax.scan``.

    For small models trained in full inside a jit/vmap (fold models, ensembles,
    fine-tuning loops). ``batch_fn(step) -> batch`` receives the traced step
    counter (e.g. ``lambda t: batch_at(key, t, data, bs)``, or a constant batch
    for full-batch training). Returns the final state and the stacked
    measurements (leading axis ``num_steps``; ``norms`` as in
    :func:`train_step_fn`). Not jitted: wrap it or call it inside your own jit.
    """
    if int(num_steps) < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    step = train_step_fn(loss_fn, tx, norms=norms)

    def body(st, _):
        return step(st, batch_fn(st.step))

    return jax.lax.scan(body, state, None, length=int(num_steps))


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *,
                    mesh: jax.sharding.Mesh | None = None, num_seeds: int | None = None,
                    donate: bool = True, norms: bool | str = True):
    """One ``jax.jit``-compiled update with donated state.

    Arguments:
      loss_fn: see the module docstring.
      tx: optax optimizer (put clipping, weight decay, schedules in it).
      mesh: optional mesh with a ``"data"`` axis; the batch's leading axis is
        sharded on it and the state replicated (see :mod:`gapjax.parallel`). The
        same step then runs on 1 or N devices.
      num_seeds: if given, the state carries a leading seed axis of this size
        (from ``jax.vmap(init_train_state)``) and the step is vmapped over it,
        sharing the batch; metrics get the same leading axis.
      donate: donate the input state's buffers (default True).
      norms: also return ``grad_norm``, ``param_norm``, ``update_norm`` (default
        True; ``"grad"``: only ``grad_norm``; see :func:`train_step_fn`).
    Returns:
      ``step(state, batch) -> (new_state, metrics)``.
    """
    fn = train_step_fn(loss_fn, tx, norms=norms)
    if num_seeds is not None:
        fn = jax.vmap(fn, in_axes=(0, None))
    kwargs = {}
    if mesh is not None:
        from gapjax.parallel import batch_sharding, replicated

        kwargs = dict(in_shardings=(replicated(mesh), batch_sharding(mesh)),
                      out_shardings=(replicated(mesh), replicated(mesh)))
    return jax.jit(fn, donate_argnums=(0,) if donate else (), **kwargs)


def make_eval_step(eval_fn: Callable[[Any, Any, Any], dict], *,
                   mesh: jax.sharding.Mesh | None = None, num_seeds: int | None = None):
    """Jitted ``eval_fn(params, collections, batch) -> dict`` of measurements.

    With ``mesh`` the batch is sharded on the ``"data"`` axis as in training;
    with ``num_seeds`` params/collections carry a leading seed axis (vmapped).
    """
    if num_seeds is not None:
        eval_fn = jax.vmap(eval_fn, in_axes=(0, 0, None))
    kwargs = {}
    if mesh is not None:
        from gapjax.parallel import batch_sharding, replicated

        kwargs = dict(in_shardings=(replicated(mesh), replicated(mesh),
                                    batch_sharding(mesh)),
                      out_shardings=replicated(mesh))
    return jax.jit(eval_fn, **kwargs)
