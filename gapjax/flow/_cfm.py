"""Conditional flow matching (pre-training) and couplings."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import (as_float_array, check_choice, check_int, check_positive,
                            check_shape)

COUPLINGS = ("independent", "sinkhorn", "exact_ot")


def make_field(apply_fn: Callable, params, c=None, collections=None):
    """``(x, t) -> v`` closure of a linen ``apply_fn(variables, x, t, c)``."""
    variables = {"params": params, **(collections or {})}

    def field(x, t):
        return apply_fn(variables, x, t, c)

    return field


def sinkhorn_plan(x0: jax.Array, x1: jax.Array, *, eps: float = 0.05,
                  num_iters: int = 100) -> jax.Array:
    """Entropic OT plan between two equal-size minibatches (log-domain Sinkhorn).

    Squared-Euclidean cost normalised by its standard deviation over the
    batch (the plan is invariant to adding a constant, so only the spread matters); uniform marginals ``1/B``.
    Returns the (B, B) plan (rows: x0, columns: x1), which tends to a
    permutation matrix (exact OT) as ``eps -> 0``. ``eps > 0``, ``num_iters >= 1``.
    """
    check_positive("eps", eps)
    num_iters = check_int("num_iters", num_iters, min=1)
    x0 = as_float_array("x0", x0, min_ndim=1, min_size=1)
    x1 = as_float_array("x1", x1, dtype=x0.dtype)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {x0.shape} and {x1.shape}")
    a = x0.reshape(x0.shape[0], -1)
    b = x1.reshape(x1.shape[0], -1)
    cost = jnp.sum((a[:, None] - b[None]) ** 2, -1)
    cost = cost / jnp.maximum(jnp.std(cost), 1e-12)
    n = a.shape[0]
    log_mu = -math.log(n) * jnp.ones((n,), a.dtype)
    kmat = -cost / eps
    f = jnp.zeros((n,), a.dtype)
    g = jnp.zeros((n,), a.dtype)

    def body(_, fg):
        f, g = fg
        f = eps * (log_mu - jax.scipy.special.logsumexp(kmat + g[None] / eps, axis=1))
        g = eps * (log_mu - jax.scipy.special.logsumexp(kmat + f[:, None] / eps, axis=0))
        return f, g

    f, g = jax.lax.fori_loop(0, num_iters, body, (f, g))
    return jnp.exp(kmat + f[:, None] / eps + g[None] / eps)


def _hungarian_host(cost):
    from scipy.optimize import linear_sum_assignment

    _, col = linear_sum_assignment(np.asarray(cost))
    inv = np.empty_like(col)
    inv[col] = np.arange(len(col))
    return inv.astype(np.int32)


def ot_pair(key: jax.Array, x0: jax.Array, x1: jax.Array, *, method: str = "sinkhorn",
            eps: float = 0.05, num_iters: int = 100) -> jax.Array:
    """Re-orders the noise ``x0`` to be minibatch-OT-coupled with ``x1``.

    ``"sinkhorn"``: for every ``x1[j]`` a source index is drawn from the plan's
    column ``j`` (as torchcfm's OT sampler does; with replacement).
    ``"exact_ot"``: exact assignment (Hungarian, scipy on the host through
    ``jax.pure_callback``; a permutation). Returns (B, ...) paired with ``x1``.
    """
    check_choice("method", method, ("sinkhorn", "exact_ot"))
    x0 = as_float_array("x0", x0, min_ndim=1, min_size=1)
    x1 = as_float_array("x1", x1, dtype=x0.dtype)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {x0.shape} and {x1.shape}")
    if method == "sinkhorn":
        plan = sinkhorn_plan(x0, x1, eps=eps, num_iters=num_iters)
        idx = jax.random.categorical(key, jnp.log(plan.T + 1e-30), axis=-1)
    elif method == "exact_ot":
        a = x0.reshape(x0.shape[0], -1)
        b = x1.reshape(x1.shape[0], -1)
        cost = jnp.sum((a[:, None] - b[None]) ** 2, -1)
        idx = jax.pure_callback(_hungarian_host,
                                jax.ShapeDtypeStruct((x0.shape[0],), jnp.int32), cost,
                                vmap_method="sequential")
    else:
        raise ValueError(f"method must be 'sinkhorn' or 'exact_ot', got {method!r}")
    return x0[idx]


def cfm_objective(field: Callable, x0, x1, t):
    """CFM loss ``mean_b ||v(x_t, t) - (x1 - x0)||^2`` (summed over dims) for
    per-sample times ``t`` (B,); ``field(x, t)`` accepts (B,) times."""
    x0 = as_float_array("x0", x0, min_ndim=1)
    if jnp.shape(x1) != x0.shape:
        raise ValueError(f"x1 must have x0's shape {x0.shape}, got {jnp.shape(x1)}")
    check_shape("t", t, (x0.shape[0],), "(one time per sample)")
    tb = t.reshape((-1,) + (1,) * (x0.ndim - 1))
    xt = (1 - tb) * x0 + tb * x1
    err = field(xt, t) - (x1 - x0)
    return jnp.mean(jnp.sum(err.reshape(err.shape[0], -1) ** 2, -1))


def _check_batch(batch, conditional):
    if not isinstance(batch, dict) or "x1" not in batch:
        raise ValueError("batch must be a dict with key 'x1' (and 'c' if conditional)")
    if conditional and "c" not in batch:
        raise ValueError("conditional=True but the batch has no 'c'")


def cfm_loss(apply_fn: Callable, *, coupling: str = "independent",
             conditional: bool = False, ot_eps: float = 0.05):
    """Flow-matching loss function in the ``gapjax.train`` signature.

    ``loss_fn(params, collections, batch, key) -> (loss, (collections, aux))``
    with ``batch = {"x1": (B, ...), "c": optional}``; draws ``x0 ~ N(0, I)`` and
    ``t ~ U[0, 1]`` from ``key``; ``coupling`` is ``"independent"``,
    ``"sinkhorn"`` or ``"exact_ot"`` (minibatch OT; conditioning stays attached to
    ``x1``). Loss: ``E ||v_theta(x_t, t[, c]) - (x1 - x0)||^2`` (Lipman et al. 2023,
    eq. 23; Tong et al. 2024 for the OT coupling).
    """
    check_choice("coupling", coupling, COUPLINGS)
    check_positive("ot_eps", ot_eps)

    def loss_fn(params, collections, batch, key):
        _check_batch(batch, conditional)
        x1 = batch["x1"]
        c = batch.get("c") if conditional else None
        k0, kt, kp = jax.random.split(key, 3)
        x0 = jax.random.normal(k0, x1.shape, x1.dtype)
        if coupling != "independent":
            x0 = ot_pair(kp, x0, x1, method=coupling, eps=ot_eps)
        t = jax.random.uniform(kt, (x1.shape[0],), x1.dtype)
        field = make_field(apply_fn, params, c, collections)
        loss = cfm_objective(field, x0, x1, t)
        return loss, (collections, {"cfm": loss})

    return loss_fn
