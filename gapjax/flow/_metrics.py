"""Distribution metrics: RBF-MMD, sliced Wasserstein, Frechet distance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gapjax._checks import (as_float64_numpy, as_float_array, check_finite, check_int,
                            check_positive)


def _flat(x, name):
    x = as_float_array(name, x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be (N, ...) samples, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


def mmd_rbf(x: jax.Array, y: jax.Array, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> jax.Array:
    """Unbiased squared MMD with a sum of RBF kernels ``exp(-||a-b||^2 / (2 h^2))``.

    ``x`` (N, ...), ``y`` (M, ...); returns a scalar (can be slightly < 0).
    """
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape} {y.shape}")
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("mmd_rbf needs at least 2 samples on each side")
    h = jnp.asarray(check_positive("bandwidths", as_float_array("bandwidths", bandwidths,
                                                                 ndim=(0, 1))), x.dtype)

    def k(a, b):
        d2 = jnp.sum((a[:, None] - b[None]) ** 2, -1)
        return jnp.sum(jnp.exp(-d2[..., None] / (2 * h**2)[None, None]), -1)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    sxx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    syy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return sxx + syy - 2 * jnp.mean(kxy)


def sliced_wasserstein(key: jax.Array, x: jax.Array, y: jax.Array,
                       num_projections: int = 256) -> jax.Array:
    """Sliced 2-Wasserstein distance between equal-size samples (N, ...).

    ``sqrt(mean_theta W_2^2(theta^T x, theta^T y))`` over random unit directions.
    """
    num_projections = check_int("num_projections", num_projections, min=1)
    x, y = _flat(x, "x"), _flat(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} {y.shape}")
    theta = jax.random.normal(key, (num_projections, x.shape[1]), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    px = jnp.sort(x @ theta.T, axis=0)
    py = jnp.sort(y @ theta.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def frechet_distance(feat_a, feat_b) -> float:
    """Frechet distance of Gaussians fitted to two feature sets (N, F) (as FID).

    ``||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})``, in
    float64 NumPy (evaluated once per model; not traced).
    """
    a = as_float64_numpy("feat_a", feat_a, ndim=2)
    b = as_float64_numpy("feat_b", feat_b, ndim=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feat_a and feat_b must have the same number of features F, "
                         f"got {a.shape} {b.shape}")
    for name, f in (("feat_a", a), ("feat_b", b)):
        if f.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 samples for a covariance, got "
                             f"shape {f.shape}")
        check_finite(name, f)
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    ra = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = np.linalg.eigvalsh(ra @ sb @ ra)
    return float(np.sum((ma - mb) ** 2) + np.trace(sa) + np.trace(sb)
                 - 2 * np.sum(np.sqrt(np.clip(mid, 0, None))))
