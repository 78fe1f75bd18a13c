"""Baselines, vmapped over tasks and context lengths.

Each takes prompts ``xs (N, T, d)``, ``ys (N, T)`` and returns, for every
position ``t``, the prediction of ``y_t`` at ``x_t`` from the first ``t`` pairs
(context length ``k = t``), as arrays of shape ``(N, T)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy as jsp

from gapjax.icl._tasks import NormalGammaPrior


def _check_xy(xs, ys):
    xs, ys = jnp.asarray(xs), jnp.asarray(ys)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape (N, T, d), got {xs.shape}")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape {xs.shape[:2]} (N, T), got {ys.shape}")
    return xs, ys


def _context_mask(t, length, window):
    i = jnp.arange(length)
    m = i < t
    if window is not None:
        m = m & (i >= t - window)
    return m.astype(jnp.result_type(float))


def normal_gamma_predictive(xs, ys, prior: NormalGammaPrior = NormalGammaPrior(),
                            window: int | None = None) -> dict:
    """Bayes-optimal predictive under the Normal-Gamma prior (spec equations).

    ``Lambda_k = I + X^T X``, ``mu_k = Lambda_k^{-1}(mu0 + X^T y)``,
    ``a_k = a0 + k/2``, ``b_k = b0 + (y^T y + mu0^T mu0 - mu_k^T Lambda_k mu_k)/2``
    over the first ``k`` pairs (the last ``window`` of them if given: Bayes with
    a context window). The predictive is Student-t with ``2 a_k`` d.o.f.,
    location ``x^T mu_k`` and scale^2 ``(b_k/a_k)(1 + x^T Lambda_k^{-1} x)``; its
    moment-matched Gaussian has variance ``b_k/(a_k - 1)(1 + x^T Lambda_k^{-1} x)``.
    Applied with the training prior to shifted data it is the "false-prior" Bayes.

    Returns:
      dict of ``(N, T)`` arrays: ``mean``, ``var`` (moment-matched),
      ``scale2``, ``dof``, ``a``, ``b``.
    """
    xs, ys = _check_xy(xs, ys)
    if not isinstance(prior, NormalGammaPrior):
        raise TypeError(f"prior must be a NormalGammaPrior, got {type(prior).__name__}")
    _, length, d = xs.shape
    mu0 = jnp.full((d,), prior.mu0, xs.dtype)
    eye = jnp.eye(d, dtype=xs.dtype)

    def one(x, y, t):
        m = _context_mask(t, length, window).astype(x.dtype)
        xm = x * m[:, None]
        lam = eye + xm.T @ x
        rhs = mu0 + xm.T @ y
        chol = jnp.linalg.cholesky(lam)
        mu_n = jsp.linalg.cho_solve((chol, True), rhs)
        n = m.sum()
        a_n = prior.a0 + 0.5 * n
        b_n = prior.b0 + 0.5 * (jnp.sum(m * y * y) + mu0 @ mu0 - mu_n @ rhs)
        xq = x[t]
        q = xq @ jsp.linalg.cho_solve((chol, True), xq)
        var = jnp.where(a_n > 1, b_n / (a_n - 1) * (1 + q), jnp.inf)
        return dict(mean=xq @ mu_n, var=var, scale2=b_n / a_n * (1 + q),
                    dof=2 * a_n, a=a_n, b=b_n)

    per_task = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(per_task, in_axes=(0, 0, None))(xs, ys, jnp.arange(length))


def pool_bayes_predictive(xs, ys, pool_w, pool_sigma) -> dict:
    """Exact posterior predictive over a finite, uniform pool of tasks.

    Posterior weights ``pi_p ∝ prod_{i<t} N(y_i; w_p^T x_i, sigma_p^2)``; the
    predictive is the mixture ``sum_p pi_p N(w_p^T x_t, sigma_p^2)`` whose mean
    and variance are returned (``(N, T)`` each, keys ``mean`` and ``var``).
    Computed one task at a time (``lax.map``) to bound memory by ``P T``.
    """
    xs, ys = _check_xy(xs, ys)
    pool_w, pool_sigma = jnp.asarray(pool_w, xs.dtype), jnp.asarray(pool_sigma, xs.dtype)
    if pool_w.ndim != 2 or pool_w.shape[1] != xs.shape[2] or pool_sigma.shape != pool_w.shape[:1]:
        raise ValueError(f"pool must be w (P, {xs.shape[2]}) and sigma (P,), got "
                         f"{pool_w.shape} and {pool_sigma.shape}")
    s2 = jnp.square(pool_sigma)

    def one(args):
        x, y = args
        f = pool_w @ x.T                                     # (P, T)
        ll = (-0.5 * jnp.square(y[None] - f) / s2[:, None] - jnp.log(pool_sigma)[:, None]
              - 0.5 * math.log(2 * math.pi))
        cum = jnp.cumsum(ll, axis=1) - ll                    # exclusive: pairs < t
        logp = cum - jax.scipy.special.logsumexp(cum, axis=0, keepdims=True)
        p = jnp.exp(logp)
        mean = jnp.sum(p * f, axis=0)
        second = jnp.sum(p * (s2[:, None] + jnp.square(f)), axis=0)
        return mean, jnp.maximum(second - jnp.square(mean), 0.0)

    mean, var = jax.lax.map(one, (xs, ys))
    return {"mean": mean, "var": var}


def _least_squares(xs, ys, alpha, window):
    xs, ys = _check_xy(xs, ys)
    _, length, d = xs.shape
    eye = jnp.eye(d, dtype=xs.dtype)

    def one(x, y, t):
        m = _context_mask(t, length, window).astype(x.dtype)
        xm = x * m[:, None]
        if alpha > 0:
            w = jnp.linalg.solve(xm.T @ x + alpha * eye, xm.T @ y)
        else:
            w = jnp.linalg.pinv(xm) @ (m * y)
        rss = jnp.sum(m * jnp.square(y - x @ w))
        n = m.sum()
        return dict(mean=x[t] @ w, var=rss / jnp.maximum(1.0, n - d - 1))

    per_task = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(per_task, in_axes=(0, 0, None))(xs, ys, jnp.arange(length))


def ridge_predictive(xs, ys, alpha: float = 0.1, window: int | None = None) -> dict:
    """Prior-free ridge: ``w = (X^T X + alpha I)^{-1} X^T y`` on the first ``k`` pairs.

    ``var = RSS / max(1, k - d - 1)`` (0 at ``k = 0``; metrics floor it).
    Returns dict ``mean``, ``var`` of shape ``(N, T)``.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0 for ridge, got {alpha}")
    return _least_squares(xs, ys, float(alpha), window)


def ols_predictive(xs, ys, window: int | None = None) -> dict:
    """Least squares (minimum-norm via the pseudo-inverse when ``k < d``).

    ``var = RSS / max(1, k - d - 1)``. Returns dict ``mean``, ``var`` ``(N, T)``.
    """
    return _least_squares(xs, ys, 0.0, window)
