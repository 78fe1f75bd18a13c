"""Baselines, vmapped over tasks and context lengths.

Each takes prompts ``xs (N, T, d)``, ``ys (N, T)`` and returns, for every
position ``t``, the prediction of ``y_t`` at ``x_t`` from the first ``t`` pairs
(context length ``k = t``), as arrays of shape ``(N, T)``. The context sums
``X^T X``, ``X^T y``, ``y^T y`` of all positions come from prefix sums
(:func:`_context_sums`, ``O(T d^2)`` per task), then one ``d x d`` solve each.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy as jsp

from gapjax._checks import as_float_array, check_int, check_positive
from gapjax.icl._tasks import NormalGammaPrior


def _check_xy(xs, ys, window=None):
    """Floating ``xs (N, T, d)``, ``ys (N, T)`` of one dtype (integers are cast
    first, so a float hyper-parameter is never truncated); ``window`` None or >= 1."""
    xs, ys = as_float_array("xs", xs, ndim=3), as_float_array("ys", ys)
    dtype = jnp.promote_types(xs.dtype, ys.dtype)
    xs, ys = xs.astype(dtype), ys.astype(dtype)
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys must have shape {xs.shape[:2]} (N, T), got {ys.shape}")
    check_int("window", window, min=1, allow_none=True)
    return xs, ys


def _context_sums(xs, ys, window):
    """Sums over each position's context, from prefix sums: ``O(N T d^2)``.

    The context of position ``t`` is pairs ``[lo_t, t)``, ``lo_t = 0`` (full) or
    ``max(0, t - window)``. With exclusive prefix sums ``P_t = sum_{i<t} x_i x_i^T``
    (and likewise ``x_i y_i``, ``y_i^2``) the context sums are ``P_t - P_{lo_t}``:
    every position's ``X^T X`` in ``O(T d^2)`` per task, instead of a masked
    ``X^T X`` over the whole prompt per position (``O(T^2 d^2)``).

    Returns:
      ``(gram (N, T, d, d), xy (N, T, d), yy (N, T), lo (T,))``.
    """
    length = xs.shape[1]

    def exclusive(a):              # (N, T, ...) -> (N, T + 1, ...), P_0 = 0
        return jnp.concatenate([jnp.zeros_like(a[:, :1]), jnp.cumsum(a, axis=1)], axis=1)

    prefix = [exclusive(a) for a in (xs[..., :, None] * xs[..., None, :],
                                     xs * ys[..., None], ys * ys)]
    t = jnp.arange(length)
    if window is None:             # P_t - P_0 = P_t: no subtraction, no cancellation
        lo = jnp.zeros_like(t)
        sums = [p[:, :length] for p in prefix]
    else:
        lo = jnp.clip(t - window, 0, t)
        sums = [p[:, :length] - p[:, lo] for p in prefix]
    return (*sums, lo)


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
    Every ``Lambda_k`` comes from prefix sums of ``x x^T`` (``O(T d^2)`` per task).

    Returns:
      dict of ``(N, T)`` arrays: ``mean``, ``var`` (moment-matched),
      ``scale2``, ``dof``, ``a``, ``b``.
    """
    xs, ys = _check_xy(xs, ys, window)
    if not isinstance(prior, NormalGammaPrior):
        raise TypeError(f"prior must be a NormalGammaPrior, got {type(prior).__name__}")
    d = xs.shape[2]
    mu0 = jnp.full((d,), prior.mu0, xs.dtype)
    eye = jnp.eye(d, dtype=xs.dtype)
    gram, xy, yy, lo = _context_sums(xs, ys, window)
    n = (jnp.arange(xs.shape[1]) - lo).astype(xs.dtype)

    def one(g, xy_k, yy_k, n_k, xq):
        lam = eye + g
        rhs = mu0 + xy_k
        chol = jnp.linalg.cholesky(lam)
        mu_n = jsp.linalg.cho_solve((chol, True), rhs)
        a_n = prior.a0 + 0.5 * n_k
        b_n = prior.b0 + 0.5 * (yy_k + mu0 @ mu0 - mu_n @ rhs)
        q = xq @ jsp.linalg.cho_solve((chol, True), xq)
        var = jnp.where(a_n > 1, b_n / (a_n - 1) * (1 + q), jnp.inf)
        return dict(mean=xq @ mu_n, var=var, scale2=b_n / a_n * (1 + q),
                    dof=2 * a_n, a=a_n, b=b_n)

    return jax.vmap(jax.vmap(one), in_axes=(0, 0, 0, None, 0))(gram, xy, yy, n, xs)


def pool_bayes_predictive(xs, ys, pool_w, pool_sigma) -> dict:
    """Exact posterior predictive over a finite, uniform pool of tasks.

    Posterior weights ``pi_p ∝ prod_{i<t} N(y_i; w_p^T x_i, sigma_p^2)``; the
    predictive is the mixture ``sum_p pi_p N(w_p^T x_t, sigma_p^2)`` whose mean
    and variance are returned (``(N, T)`` each, keys ``mean`` and ``var``).
    Computed one task at a time (``lax.map``) to bound memory by ``P T``.
    """
    xs, ys = _check_xy(xs, ys)
    pool_w = as_float_array("pool_w", pool_w, dtype=xs.dtype)
    pool_sigma = as_float_array("pool_sigma", pool_sigma, dtype=xs.dtype)
    check_positive("pool_sigma", pool_sigma)
    if pool_w.ndim != 2 or pool_w.shape[1] != xs.shape[2] or pool_sigma.shape != pool_w.shape[:1]:
        raise ValueError(f"pool_w must have shape (P, {xs.shape[2]}) and pool_sigma (P,), "
                         f"got {pool_w.shape} and {pool_sigma.shape}")
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
    xs, ys = _check_xy(xs, ys, window)
    length, d = xs.shape[1:]
    eye = jnp.eye(d, dtype=xs.dtype)
    gram, xy, yy, lo = _context_sums(xs, ys, window)
    # OLS on fewer than ``2 d`` pairs (the min-norm regime and the k ~ d
    # interpolation peak, where cond(X) is large) is solved from the context
    # rows themselves: the normal equations lose eps cond(X)^2 there. From
    # ``2 d`` pairs on, Gaussian contexts have cond(X) <~ (sqrt 2 + 1)/(sqrt 2 - 1).
    few = min(2 * d, length)
    rtol = 10 * max(length, d) * jnp.finfo(xs.dtype).eps   # the pinv cut-off of (T, d)

    def one(x, y, g, xy_k, yy_k, lo_k, t):
        if alpha > 0:
            w = jsp.linalg.cho_solve((jnp.linalg.cholesky(g + alpha * eye), True), xy_k)
        else:
            w = jnp.linalg.pinv(g, hermitian=True) @ xy_k       # min-norm G^+ X^T y
        # RSS = |y - X w|^2 = y^T y - 2 w^T X^T y + w^T G w (>= 0 up to rounding).
        rss = jnp.maximum(yy_k - 2 * w @ xy_k + w @ g @ w, 0.0)
        if alpha == 0:             # rows [t - few, t) restricted to the context
            idx = t - few + jnp.arange(few)
            keep = (idx >= lo_k).astype(x.dtype)
            xr, yr = x[jnp.maximum(idx, 0)] * keep[:, None], y[jnp.maximum(idx, 0)] * keep
            w_r = jnp.linalg.pinv(xr, rtol=rtol) @ yr
            small = t - lo_k < few
            w = jnp.where(small, w_r, w)
            rss = jnp.where(small, jnp.sum(jnp.square(yr - xr @ w_r)), rss)
        return dict(mean=x[t] @ w, var=rss / jnp.maximum(1.0, (t - lo_k) - d - 1))

    per_task = jax.vmap(one, in_axes=(None, None, 0, 0, 0, 0, 0))
    return jax.vmap(per_task, in_axes=(0, 0, 0, 0, 0, None, None))(
        xs, ys, gram, xy, yy, lo, jnp.arange(length))


def ridge_predictive(xs, ys, alpha: float = 0.1, window: int | None = None) -> dict:
    """Prior-free ridge: ``w = (X^T X + alpha I)^{-1} X^T y`` on the first ``k`` pairs.

    ``var = RSS / max(1, k - d - 1)`` (0 at ``k = 0``; metrics floor it).
    Returns dict ``mean``, ``var`` of shape ``(N, T)``.
    """
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0 for ridge, got {alpha!r}")
    return _least_squares(xs, ys, float(alpha), window)


def ols_predictive(xs, ys, window: int | None = None) -> dict:
    """Least squares (minimum-norm via the pseudo-inverse when ``k < d``).

    ``var = RSS / max(1, k - d - 1)``. Returns dict ``mean``, ``var`` ``(N, T)``.
    """
    return _least_squares(xs, ys, 0.0, window)
