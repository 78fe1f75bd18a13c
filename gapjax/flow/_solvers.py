"""ODE solvers for velocity fields, forward/inverse maps and log-likelihoods.

A *field* is a callable ``field(x, t) -> v`` on a batch ``x`` (B, ...) at a
scalar time ``t`` (close over parameters and conditioning, e.g. with
:func:`gapjax.flow.make_field`). Samples must not interact (no batch norm), so
per-sample Jacobians are obtained by jvp on the batched call.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import check_finite, check_int, check_positive

Field = Callable[[jax.Array, jax.Array], jax.Array]

METHODS = ("euler", "midpoint", "rk4")


def _euler(f, x, t, dt):
    return x + dt * f(x, t)


def _midpoint(f, x, t, dt):
    k1 = f(x, t)
    return x + dt * f(x + 0.5 * dt * k1, t + 0.5 * dt)


def _rk4(f, x, t, dt):
    k1 = f(x, t)
    k2 = f(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = f(x + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = f(x + dt * k3, t + dt)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


_STEPS = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}


def _check_state(x, name="x0"):
    if not hasattr(x, "dtype"):
        x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a leading batch axis, got shape {x.shape}")
    if not isinstance(x, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_steps(n_steps, method):
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a Python int >= 1, got {n_steps!r}")
    if method not in _STEPS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def odeint(field: Field, x0: jax.Array, n_steps: int, *, method: str = "euler",
           t0: float = 0.0, t1: float = 1.0, checkpoint: bool = False,
           return_path: bool = False):
    """Fixed-step solve of ``dx/dt = field(x, t)`` from ``t0`` to ``t1``.

    A ``lax.scan`` over ``n_steps`` uniform steps, differentiable w.r.t. ``x0``
    and everything ``field`` closes over. ``t1 < t0`` integrates backwards (the
    inverse map). With ``checkpoint=True`` every step is wrapped in
    ``jax.checkpoint`` so reverse-mode memory stays O(1) in the step internals
    (only the N step inputs are stored).

    Arguments:
      field: ``(x, t) -> dx/dt`` with ``x`` of shape (B, ...).
      x0: (B, ...) initial state.
      n_steps: number of steps N (Python int >= 1).
      method: ``"euler"``, ``"midpoint"`` or ``"rk4"``.
      t0, t1: start and end times.
      checkpoint: rematerialise each step in the backward pass.
      return_path: also return the states after each step, (N, B, ...).
    Returns:
      ``x(t1)`` (B, ...), and the path if ``return_path``.
    """
    check_finite("t0", t0)
    check_finite("t1", t1)
    _check_steps(n_steps, method)
    x0 = _check_state(x0)
    step_fn = _STEPS[method]
    dt = (t1 - t0) / n_steps

    def body(x, i):
        t = t0 + i.astype(x.dtype) * dt
        x_new = step_fn(field, x, t, jnp.asarray(dt, x.dtype))
        return x_new, (x_new if return_path else None)

    if checkpoint:
        body = jax.checkpoint(body)
    x, path = jax.lax.scan(body, x0, jnp.arange(n_steps))
    return (x, path) if return_path else x


def odeint_reference(field: Field, x0: jax.Array, *, t0: float = 0.0, t1: float = 1.0,
                     rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096):
    """Accurate adaptive solve (diffrax Dopri5 with a PID step-size controller).

    The reference map used for pairing (inverse ODE) and for measuring the
    few-step gap. Arguments as in :func:`odeint`; returns ``x(t1)``.
    """
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    check_int("max_steps", max_steps, min=1)
    check_finite("t0", t0)
    check_finite("t1", t1)
    import diffrax

    x0 = _check_state(x0)
    term = diffrax.ODETerm(lambda t, y, args: field(y, t))
    sol = diffrax.diffeqsolve(
        term, diffrax.Dopri5(), t0=t0, t1=t1, dt0=(t1 - t0) / 16, y0=x0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, saveat=diffrax.SaveAt(t1=True))
    return sol.ys[0]


def forward_map(field: Field, x0: jax.Array, n_steps: int | None = None, *,
                method: str = "euler", checkpoint: bool = False, **ref_kwargs):
    """Noise -> data map ``phi_N(x0)``: N fixed steps, or the adaptive reference
    solve when ``n_steps is None``. (B, ...) -> (B, ...)."""
    if n_steps is None:
        return odeint_reference(field, x0, t0=0.0, t1=1.0, **ref_kwargs)
    return odeint(field, x0, n_steps, method=method, checkpoint=checkpoint)


def inverse_map(field: Field, x1: jax.Array, n_steps: int | None = None, *,
                method: str = "euler", **ref_kwargs):
    """Data -> noise map ``phi^{-1}(x1)`` (integrates from t = 1 back to 0)."""
    if n_steps is None:
        return odeint_reference(field, x1, t0=1.0, t1=0.0, **ref_kwargs)
    return odeint(field, x1, n_steps, method=method, t0=1.0, t1=0.0)


def _flat_sum(a):
    return jnp.sum(a.reshape(a.shape[0], -1), axis=-1)


def divergence(field: Field, x: jax.Array, t, *, probes: jax.Array | None = None):
    """Per-sample divergence ``tr(d field / dx)`` of a batched field, (B,).

    Exact (one jvp per basis vector, i.e. the trace of the forward-mode Jacobian)
    when ``probes is None``; otherwise the Hutchinson estimate
    ``mean_k eps_k^T J eps_k`` with ``probes`` of shape (K, B, ...).
    """
    if probes is not None and jnp.shape(probes)[1:] != jnp.shape(x):
        raise ValueError(f"probes must have shape (P, *x.shape) = (P, {jnp.shape(x)}), got "
                         f"{jnp.shape(probes)}")
    f = lambda y: field(y, t)
    if probes is None:
        d = math.prod(x.shape[1:])
        eye = jnp.eye(d, dtype=x.dtype).reshape((d, 1) + x.shape[1:])

        def diag(e):
            _, jv = jax.jvp(f, (x,), (jnp.broadcast_to(e, x.shape),))
            return _flat_sum(jv * e)

        return jnp.sum(jax.lax.map(diag, eye), axis=0)

    def quad(eps):
        _, jv = jax.jvp(f, (x,), (eps,))
        return _flat_sum(jv * eps)

    return jnp.mean(jax.vmap(quad)(probes), axis=0)


def standard_normal_log_prob(x: jax.Array) -> jax.Array:
    """(B, ...) -> (B,) log density of the N(0, I) source."""
    d = math.prod(x.shape[1:])
    return -0.5 * _flat_sum(x**2) - 0.5 * d * math.log(2 * math.pi)


def logprob(field: Field, x1: jax.Array, *, n_steps: int | None = None,
            method: str = "rk4", estimator: str = "exact", key: jax.Array | None = None,
            num_probes: int = 1, rtol: float = 1e-5, atol: float = 1e-5):
    """``log p_1(x1)`` by the instantaneous change of variables.

    Integrates ``d/dt [x, a] = [v(x, t), div v(x, t)]`` from t = 1 back to 0, so
    ``a(0) = -int_0^1 div v dt`` and ``log p_1(x1) = log N(x(0); 0, I) + a(0)``
    (FFJORD / Chen et al. 2018, eq. 4).

    Arguments:
      field: batched velocity field.
      x1: (B, ...) data points.
      n_steps: fixed steps of ``method``; ``None`` uses adaptive Dopri5.
      estimator: ``"exact"`` (trace of the Jacobian, D jvps; small D) or
        ``"hutchinson"`` (``num_probes`` Rademacher probes drawn once from
        ``key`` and held fixed along the solve).
    Returns:
      (B,) log densities.
    """
    x1 = _check_state(x1, "x1")
    if estimator not in ("exact", "hutchinson"):
        raise ValueError(f"estimator must be 'exact' or 'hutchinson', got {estimator!r}")
    probes = None
    if estimator == "hutchinson":
        if key is None:
            raise ValueError("estimator='hutchinson' needs a PRNG key")
        if num_probes < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        probes = jax.random.rademacher(key, (num_probes,) + x1.shape, x1.dtype)

    def aug(state, t):
        x, _ = state
        return field(x, t), divergence(field, x, t, probes=probes)

    state = (x1, jnp.zeros(x1.shape[:1], x1.dtype))
    if n_steps is None:
        import diffrax

        term = diffrax.ODETerm(lambda t, y, args: aug(y, t))
        sol = diffrax.diffeqsolve(
            term, diffrax.Dopri5(), t0=1.0, t1=0.0, dt0=-1 / 16, y0=state,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=4096, saveat=diffrax.SaveAt(t1=True))
        x0, acc = jax.tree.map(lambda y: y[0], sol.ys)
    else:
        _check_steps(n_steps, method)
        step_fn = _STEPS[method]
        dt = -1.0 / n_steps

        def body(s, i):
            t = 1.0 + i.astype(x1.dtype) * dt
            k = lambda y, tt: aug(y, tt)
            # the step functions are written for arrays; apply them to the pair
            s_new = _tree_step(step_fn, k, s, t, jnp.asarray(dt, x1.dtype))
            return s_new, None

        (x0, acc), _ = jax.lax.scan(body, state, jnp.arange(n_steps))
    return standard_normal_log_prob(x0) + acc


def _tree_step(step_fn, f, s, t, dt):
    """Applies an array step rule to a pytree state by flattening it."""
    leaves, tree = jax.tree.flatten(s)
    sizes = [l.size for l in leaves]
    shapes = [l.shape for l in leaves]

    def unflat(v):
        parts = jnp.split(v, [int(i) for i in np.cumsum(sizes)[:-1]])
        return jax.tree.unflatten(tree, [p.reshape(sh) for p, sh in zip(parts, shapes)])

    def flat(tr):
        return jnp.concatenate([l.reshape(-1) for l in jax.tree.leaves(tr)])

    g = lambda v, tt: flat(f(unflat(v), tt))
    return unflat(step_fn(g, flat(s), t, dt))
