"""Exact GP regression in JAX (ARD RBF kernel, Gaussian noise), with the
hyper-parameters fitted by maximising the log marginal likelihood (Adam on
bounded log-parameters). Data may be padded: ``mask`` (N,) marks real points;
padded points are decoupled (unit diagonal, zero target) and contribute nothing.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gapjax._checks import check_int, check_ndim, check_positive, check_shape

# Bounds on the hyper-parameters (inputs in the unit cube, targets standardised),
# close to the box botorch's priors concentrate on; they keep the fit away from
# degenerate optima (zero length-scale / zero noise) with very few points.
LOG_LS_BOUNDS = (math.log(1e-2), math.log(10.0))
LOG_SF_BOUNDS = (math.log(0.05), math.log(20.0))
LOG_SN_BOUNDS = (math.log(1e-3), math.log(1.0))


@flax.struct.dataclass
class GPParams:
    """Log length-scales (D,), log signal std, log noise std (unconstrained;
    clipped to the bounds above when used)."""

    log_ls: jax.Array
    log_sf: jax.Array
    log_sn: jax.Array


def gp_init(dim: int, lengthscale: float = 0.2, signal_std: float = 1.0,
            noise_std: float = 0.1) -> GPParams:
    """Initial hyper-parameters (``dim >= 1``; the three scales > 0)."""
    dim = check_int("dim", dim, min=1)
    for name, v in (("lengthscale", lengthscale), ("signal_std", signal_std),
                    ("noise_std", noise_std)):
        check_positive(name, v)
    return GPParams(jnp.full((dim,), math.log(lengthscale), jnp.float32),
                    jnp.asarray(math.log(signal_std), jnp.float32),
                    jnp.asarray(math.log(noise_std), jnp.float32))


def _clip(p: GPParams):
    return (jnp.clip(p.log_ls, *LOG_LS_BOUNDS), jnp.clip(p.log_sf, *LOG_SF_BOUNDS),
            jnp.clip(p.log_sn, *LOG_SN_BOUNDS))


def rbf_kernel(x1: jax.Array, x2: jax.Array, log_ls: jax.Array, log_sf) -> jax.Array:
    """``sf^2 exp(-|(x1 - x2) / ls|^2 / 2)``, (N1, N2)."""
    check_ndim("x1", x1, ndim=2)
    check_shape("x2", x2, (None, jnp.shape(x1)[1]), "(N2, D) with x1's D")
    check_shape("log_ls", log_ls, (jnp.shape(x1)[1],), "(D,)")
    ls = jnp.exp(log_ls)
    a, b = x1 / ls[None, :], x2 / ls[None, :]
    diff = a[:, None, :] - b[None, :, :]
    return jnp.exp(2 * log_sf) * jnp.exp(-0.5 * jnp.sum(diff * diff, -1))


def _gram(p: GPParams, x, mask):
    log_ls, log_sf, log_sn = _clip(p)
    m = mask.astype(x.dtype)
    k = rbf_kernel(x, x, log_ls, log_sf) * (m[:, None] * m[None, :])
    diag = m * (jnp.exp(2 * log_sn) + 1e-6) + (1.0 - m)
    return k + jnp.diag(diag)


def _check_data(x, y, mask):
    check_ndim("x", x, ndim=2)
    n = jnp.shape(x)[0]
    check_shape("y", y, (n,), "(one target per row of x)")
    check_shape("mask", mask, (n,), "(one flag per row of x)")


def gp_neg_mll(p: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    """``-log N(y | 0, K + sn^2 I)`` over the masked points."""
    m = mask.astype(x.dtype)
    yy = y * m
    L = jnp.linalg.cholesky(_gram(p, x, mask))
    alpha = jax.scipy.linalg.cho_solve((L, True), yy)
    n = jnp.sum(m)
    return (0.5 * jnp.dot(yy, alpha) + jnp.sum(jnp.log(jnp.diag(L)))
            + 0.5 * n * math.log(2 * math.pi))


def fit_gp(x: jax.Array, y: jax.Array, mask: jax.Array, *, init: GPParams | None = None,
           steps: int = 100, lr: float = 0.05) -> GPParams:
    """Maximises the marginal likelihood with ``steps`` Adam steps (jit-able)."""
    _check_data(x, y, mask)
    steps = check_int("steps", steps, min=1)
    check_positive("lr", lr)
    p = gp_init(x.shape[1]) if init is None else init
    tx = optax.adam(lr)
    loss = lambda q: gp_neg_mll(q, x, y, mask)

    def body(carry, _):
        q, s = carry
        g = jax.grad(loss)(q)
        u, s = tx.update(g, s, q)
        return (optax.apply_updates(q, u), s), None

    (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), None, length=int(steps))
    # keep the stored parameters inside the bounds (clipping is a no-op after)
    log_ls, log_sf, log_sn = _clip(p)
    return GPParams(log_ls, log_sf, log_sn)


def gp_posterior(p: GPParams, x: jax.Array, y: jax.Array, mask: jax.Array,
                 xq: jax.Array):
    """Posterior mean and variance of the latent function at ``xq`` ``(Q,)``."""
    _check_data(x, y, mask)
    check_shape("xq", xq, (None, jnp.shape(x)[1]), "(Q, D) with x's D")
    log_ls, log_sf, _ = _clip(p)
    m = mask.astype(x.dtype)
    L = jnp.linalg.cholesky(_gram(p, x, mask))
    ks = rbf_kernel(xq, x, log_ls, log_sf) * m[None, :]
    alpha = jax.scipy.linalg.cho_solve((L, True), y * m)
    mean = ks @ alpha
    v = jax.scipy.linalg.solve_triangular(L, ks.T, lower=True)
    var = jnp.exp(2 * log_sf) - jnp.sum(v * v, 0)
    return mean, jnp.maximum(var, 1e-12)
