"""Data model, exact Bayesian-linear-regression posterior, judge and sampler.

Spec "Model": ``x ~ N(0, S^2 I_d / d)``, ``y = w_T . x + sigma eps``, prior
``w ~ N(0, gamma^2 I)``; posterior precision ``Lambda = I/gamma^2 + X^T X/sigma^2``,
mean ``wbar = Lambda^{-1} X^T y / sigma^2``; predictive ``N(m, s^2)`` with
``m = wbar . x`` and ``s^2 = sigma^2 + x^T Lambda^{-1} x``. Judge
``mu_R = mu_T - c (m - mu_T)``. Sampler: ``k`` iid draws from the predictive,
softmax weights ``p_i ∝ exp(-(y_i - mu_R)^2 / T)`` (``T = 0``: best-of-k).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import (as_float_array, check_broadcastable, check_finite, check_positive,
                            check_temps)


class Posterior(NamedTuple):
    """Exact BLR posterior ``N(mean, cov)`` and the noise std.

    Attributes:
      mean: ``[d]`` posterior mean ``wbar``.
      cov: ``[d, d]`` posterior covariance ``Lambda^{-1}``.
      sigma: scalar noise std (enters the predictive variance).
    """

    mean: jax.Array
    cov: jax.Array
    sigma: jax.Array


def sample_teacher(key, d: int, w_std: float = 2.0, dtype=None):
    """Teacher weights ``w_T ~ N(0, w_std^2 I_d)`` (official code: ``w_std = 2``).

    Returns ``[d]``.
    """
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    check_positive("w_std", w_std)
    return w_std * jax.random.normal(key, (int(d),), dtype or jnp.result_type(float))


def sample_inputs(key, num: int, d: int, S: float = 1.0, dtype=None):
    """Inputs ``x ~ N(0, S^2 I_d / d)``; returns ``[num, d]``."""
    if int(num) != num or num < 1:
        raise ValueError(f"num must be a positive integer, got {num}")
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    check_positive("S", S)
    dtype = dtype or jnp.result_type(float)
    return jax.random.normal(key, (int(num), int(d)), dtype) * (S / np.sqrt(d))


def sample_training_data(key, w_T, n: int, S: float, sigma: float):
    """Training set ``X [n, d]``, ``y = X w_T + sigma eps`` ``[n]``."""
    w_T = as_float_array("w_T", w_T, ndim=1)
    check_finite("w_T", w_T)
    check_positive("sigma", sigma)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    check_positive("S", S)
    return _sample_xy(key, w_T, int(n), jnp.asarray(S, w_T.dtype),
                      jnp.asarray(sigma, w_T.dtype))


@functools.partial(jax.jit, static_argnums=(2,))
def _sample_xy(key, w_T, n, S, sigma):
    kx, ke = jax.random.split(key)
    d = w_T.shape[0]
    X = jax.random.normal(kx, (n, d), w_T.dtype) * (S / np.sqrt(d))
    y = X @ w_T + sigma * jax.random.normal(ke, (n,), w_T.dtype)
    return X, y


def fit_posterior(X, y, sigma, gamma) -> Posterior:
    """Exact BLR posterior by Cholesky of ``Lambda = I/gamma^2 + X^T X / sigma^2``.

    Arguments:
      X: ``[n, d]`` training inputs; y: ``[n]`` targets.
      sigma: noise std > 0; gamma: prior std > 0.
    Returns:
      :class:`Posterior` with ``mean = Lambda^{-1} X^T y / sigma^2`` and
      ``cov = Lambda^{-1}``. Fit in float64 at the paper's scale (see the
      package docstring: float32 round-off in ``X^T X`` is as large as the
      shrinkage being studied).
    """
    X = as_float_array("X", X, ndim=2, min_size=1)   # integer X: cast, never sigma
    y = as_float_array("y", y)
    X = X.astype(jnp.promote_types(X.dtype, y.dtype))
    y = y.astype(X.dtype)
    if y.shape != X.shape[:1]:
        raise ValueError(f"y must have shape [n] = {X.shape[:1]}, got {y.shape}")
    check_finite("X", X)
    check_finite("y", y)
    check_positive("sigma", sigma)
    check_positive("gamma", gamma)
    return _fit(X, y, jnp.asarray(sigma, X.dtype), jnp.asarray(gamma, X.dtype))


@jax.jit
def _fit(X, y, sigma, gamma):
    d = X.shape[1]
    lam = jnp.eye(d, dtype=X.dtype) / gamma**2 + (X.T @ X) / sigma**2
    chol = jnp.linalg.cholesky(lam)
    cov = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(d, dtype=X.dtype))
    mean = jax.scipy.linalg.cho_solve((chol, True), X.T @ y / sigma**2)
    return Posterior(mean, 0.5 * (cov + cov.T), sigma)


def predictive(post: Posterior, x):
    """Posterior predictive ``N(m, s^2)`` at test inputs.

    Arguments:
      post: :class:`Posterior`; x: ``[..., d]``.
    Returns:
      ``(m, s2)`` each ``[...]``: ``m = wbar . x``, ``s2 = sigma^2 + x^T Lambda^{-1} x``.
    """
    if not isinstance(post, Posterior):
        raise TypeError(f"post must be a Posterior (from fit_posterior), got "
                        f"{type(post).__name__}")
    x = as_float_array("x", x, min_ndim=1, dtype=post.mean.dtype)
    if x.shape[-1:] != post.mean.shape:
        raise ValueError(f"x must have shape [..., d={post.mean.shape[0]}], got {x.shape}")
    return _predictive(post, x)


@jax.jit
def _predictive(post, x):
    m = x @ post.mean
    s2 = post.sigma**2 + jnp.sum((x @ post.cov) * x, axis=-1)
    return m, s2


def judge_mean(mu_T, m, c):
    """Misspecified judge ``mu_R = mu_T - c (m - mu_T)`` (``Delta_R = (1+c) Delta_T``)."""
    check_finite("c", c)
    return mu_T - c * (m - mu_T)


def draw_predictive(key, m, s2, k: int):
    """``k`` iid draws ``y_i ~ N(m, s2)``; returns ``[..., k]`` for ``m, s2 [...]``."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    check_positive("s2", s2, allow_zero=True)
    m = as_float_array("m", m)
    s2 = as_float_array("s2", s2)
    check_broadcastable("s2", s2, m.shape, "(the shape of m)")
    eps = jax.random.normal(key, m.shape + (int(k),), m.dtype)
    return m[..., None] + jnp.sqrt(s2)[..., None] * eps


def softmax_weights(y, mu_R, T):
    """Sampler weights over the last axis of ``y [..., k]``.

    ``p_i ∝ exp(-(y_i - mu_R)^2 / T)`` computed with a log-sum-exp shift; for
    ``T = 0`` the one-hot weight of the sample closest to ``mu_R`` (best-of-k).
    ``mu_R [...]``, ``T`` scalar. Returns ``[..., k]``.
    """
    check_temps(T)
    if np.ndim(T) != 0:
        raise ValueError(f"T must be a scalar, got shape {np.shape(T)}")
    y = as_float_array("y", y, min_ndim=1)
    check_broadcastable("mu_R", mu_R, y.shape[:-1], "(y's shape without the k axis)")
    mu_R = jnp.asarray(mu_R)[..., None]
    sq = (y - mu_R) ** 2
    T = jnp.asarray(T, y.dtype)
    soft = jax.nn.softmax(-sq / jnp.where(T > 0, T, 1.0), axis=-1)
    hard = jax.nn.one_hot(jnp.argmin(sq, axis=-1), y.shape[-1], dtype=y.dtype)
    return jnp.where(T > 0, soft, hard)


def sampler_error(y, mu_T, mu_R, T):
    """Per-draw error ``sum_i p_i (y_i - mu_T)^2`` of the sampler; ``[...]``.

    ``delta(x, k, T)`` of the spec is its expectation over the draws ``y``.
    """
    p = softmax_weights(y, mu_R, T)
    check_broadcastable("mu_T", mu_T, p.shape[:-1], "(y's shape without the k axis)")
    return jnp.sum(p * (as_float_array("y", y) - jnp.asarray(mu_T)[..., None]) ** 2, axis=-1)
